/* vae.h - the SD autoencoder (AutoencoderKL) in the LDM layout (first_stage_model.*).
 * Levels, blocks per level and channels are read from the tensor names and shapes. */
#ifndef SD_VAE_H
#define SD_VAE_H

#include "model/desc.h"
#include "nn/layers.h"

typedef struct {
    weight norm_w, norm_b, q_w, q_b, k_w, k_b, v_w, v_b, proj_w, proj_b;
    int ch;
} vae_attention;

typedef struct {
    int n_res;
    resnet_block *res; /* [n_res] */
    int has_sample;    /* downsample (encoder) or upsample (decoder) after the blocks */
    conv_layer sample;
} vae_level;

typedef struct {
    conv_layer conv_in;
    resnet_block mid1, mid2;
    vae_attention attn;
    int n_levels;
    vae_level *levels; /* [n_levels], in execution order */
    weight norm_out_w, norm_out_b;
    conv_layer conv_out;
} vae_coder;

typedef struct {
    int z_ch, img_ch;
    int has_encoder;
    conv_layer post_quant, quant;
    vae_coder dec, enc;
} vae;

/* Loads the VAE under VAE_PREFIX. Returns SD_OK or SD_ERR_MODEL with err set. */
sd_status vae_load(vae *v, tensor_store *s, char *err, size_t errlen);
void vae_free(vae *v);

/* image[B, 3, 8h, 8w] = decoder(post_quant_conv(z[B, z_ch, h, w])) (z unscaled); image in about [-1, 1]. */
sd_status vae_decode(compute *cc, const vae *v, const float *z, int B, int h, int w, float *image);
/* [mean; logvar] = quant_conv(encoder(image[B, 3, H, W])): mean, logvar [B, z_ch, H/8, W/8], logvar clamped to [-30,
 * 20]. */
sd_status vae_encode(compute *cc, const vae *v, const float *image, int B, int H, int W, float *mean, float *logvar);

/* moments[B, 2·z_ch, H/8, W/8] = quant_conv(encoder(image)): [mean; logvar] before the clamp. */
sd_status vae_encode_moments(compute *cc, const vae *v, const float *image, int B, int H, int W, float *moments);
/* mean, logvar [B, z_ch, h, w] from moments, logvar clamped to [-30, 20]. */
void vae_split_moments(const vae *v, const float *moments, int B, int h, int w, float *mean, float *logvar);

/* Tiled decode and encode, as diffusers' AutoencoderKL.tiled_decode / _tiled_encode (vae_tiled.c): tiles of
 * tile_px pixels (tile_px / 8 latent), overlap 1/4, neighbours blended linearly; batch 1. Memory is that of one
 * tile plus the output. */
sd_status vae_decode_tiled(compute *cc, const vae *v, const float *z, int h, int w, int tile_px, float *image);
sd_status vae_encode_tiled(compute *cc, const vae *v, const float *image, int H, int W, int tile_px, float *mean,
                           float *logvar);

/* Rough peak activation memory of vae_decode for a latent h x w (bytes). */
size_t vae_decode_memory(const vae *v, int h, int w);

#endif
