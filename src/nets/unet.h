/* unet.h - the SD 1.x UNet in the LDM layout (model.diffusion_model.*).
 *
 * The block structure is read from the tensor names: input_blocks.i is conv_in (i = 0), a
 * ResBlock with an optional SpatialTransformer, or a stride-2 downsampling conv; the middle block
 * is ResBlock, SpatialTransformer, ResBlock; output_blocks.i concatenate a skip and run a ResBlock,
 * an optional SpatialTransformer and an optional nearest-2x upsampling conv. */
#ifndef SD_UNET_H
#define SD_UNET_H

#include "nn/layers.h"

typedef struct {
    weight norm1_w, norm1_b, norm2_w, norm2_b, norm3_w, norm3_b;
    weight q1, k1, v1, o1_w, o1_b;     /* self-attention */
    weight q2, k2, v2, o2_w, o2_b;     /* cross-attention on the text context */
    weight ff1_w, ff1_b, ff2_w, ff2_b; /* GEGLU feed-forward */
} transformer_block;

typedef struct {
    int ch, heads, head_dim, depth, ff_inner;
    weight norm_w, norm_b, proj_in_w, proj_in_b, proj_out_w, proj_out_b;
    transformer_block *blocks; /* [depth] */
} spatial_transformer;

typedef struct {
    int has_res, has_attn, has_down, has_up;
    int in_ch, out_ch;          /* channels in (after skip concat for output blocks) and out */
    resnet_block res;
    spatial_transformer attn;
    conv_layer sample;          /* downsampling (stride 2) or upsampling conv */
} unet_block;

typedef struct {
    int in_ch, out_ch, model_ch, time_dim, ctx_dim, heads, head_dim;
    int n_input, n_output;
} unet_config;

typedef struct {
    unet_config c;
    conv_layer conv_in;
    weight time1_w, time1_b, time2_w, time2_b;
    unet_block *input, *output; /* [n_input] (0 = conv_in, unused), [n_output] */
    unet_block mid_res1, mid_attn, mid_res2;
    weight out_norm_w, out_norm_b;
    conv_layer conv_out;
} unet;

int unet_load(unet *u, sd_model *m, char *err, size_t errlen);
void unet_free(unet *u);

/* out[B, out_ch, h, w] = unet(x[B, in_ch, h, w], t[B], ctx[B, ctx_len, ctx_dim]). h, w multiples of 8. */
int unet_forward(const unet *u, const float *x, const float *t, const float *ctx, int ctx_len, int B, int h, int w,
                 float *out, arena *a, float *scratch);

/* Sinusoidal timestep embedding (DDPM / LDM): [cos(t·f_i), sin(t·f_i)], f_i = 10000^(-i/half). */
void timestep_embedding(float t, int dim, float *out);

#endif
