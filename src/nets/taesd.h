/* taesd.h - TAESD, the tiny autoencoder for SD 1.x latents (madebyollin/taesd; diffusers AutoencoderTiny with
 * its default config): 64-channel 3x3 convolutions, ReLU, residual Blocks relu(conv4(relu(conv2(relu(conv0(x)))))
 * + x), nearest x2 upsampling / stride-2 convolutions.
 *   decode: image = 2·layers(tanh(z/3)·3) − 1   (diffusers vae.py; z is the sampler's latent as it is:
 *                                                scaling_factor 1, no post_quant_conv)
 *   encode: latent = layers((image + 1) / 2)     (no sampling, no quant_conv)
 * Files: diffusers naming (`decoder.layers.i.`, `encoder.layers.i.`, the file stable-diffusion.cpp's --taesd
 * loads) or the original separate files (`taesd_decoder`: index i + 1, `taesd_encoder`: index i, no prefix). */
#ifndef SD_TAESD_H
#define SD_TAESD_H

#include "nn/layers.h"

#define TAESD_CH     64
#define TAESD_BLOCKS 10 /* per coder: decoder 3+3+3+1, encoder 1+3+3+3 */

typedef struct {
    conv_layer c0, c2, c4;
} taesd_block;

typedef struct {
    conv_layer in, scale[3], out; /* first conv, the three convs after upsampling / with stride 2, last conv */
    taesd_block blocks[TAESD_BLOCKS];
} taesd_coder;

typedef struct {
    tensor_store store; /* the TAESD file's tensors (weights stay in its mapping) */
    int has_decoder, has_encoder;
    int latent_ch;
    taesd_coder dec, enc;
} taesd;

/* Loads path; at least a decoder or an encoder must be there. Returns SD_OK, or a failure with err set. */
sd_status taesd_load(taesd *t, const char *path, char *err, size_t errlen);
void taesd_free(taesd *t);

/* image[3, 8h, 8w] in diffusers' [-1, 1] convention (unclamped) from latent[4, h, w]. */
sd_status taesd_decode(compute *cc, const taesd *t, const float *z, int h, int w, float *image);
/* latent[4, H/8, W/8] from image[3, H, W] in [-1, 1]. */
sd_status taesd_encode(compute *cc, const taesd *t, const float *image, int H, int W, float *latent);

/* Largest F16/BF16 matrix of the file, in elements (scratch the caller provides). */
int64_t taesd_max_half(const taesd *t);

#endif
