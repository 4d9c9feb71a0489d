/* layers.h - network pieces shared by the UNet and the VAE: convolution layers with their
 * weights, and the ResNet block (GroupNorm -> SiLU -> conv, twice, plus a skip). */
#ifndef SD_LAYERS_H
#define SD_LAYERS_H

#include "model/store.h"
#include "nn/kernels.h"

typedef struct {
    weight w, b; /* [out, in, kh, kw], [out] */
    conv_desc d;
} conv_layer;

/* Loads `name.weight` / `name.bias` as a k×k convolution with the given stride and padding. */
conv_layer conv_layer_load(wloader *L, const char *name, int in_ch, int out_ch, int k, int stride, int pad);
/* y[B, out, Ho, Wo] = conv(x[B, in, H, W]); the weight is converted once for the whole batch. */
void conv_layer_forward(compute *cc, const conv_layer *cl, const float *x, int B, int H, int W, float *y);

/* GroupNorm with its affine weights, then SiLU when silu: the normalisation in front of a convolution. */
typedef struct {
    const weight *gamma, *beta; /* [C] each */
    int groups;
    float eps;
    int silu;
} norm_spec;

/* y = conv(norm(x)) without writing norm(x) out where the convolution can apply it as it reads x (Winograd:
 * conv_input); otherwise through a normalised temporary. Same values either way (the map is group_norm's). */
void conv_layer_forward_normed(compute *cc, const conv_layer *cl, const norm_spec *norm, const float *x, int B, int H,
                               int W, float *y);

/* y[B, out, 2h, 2w] = conv(nearest 2x upsampling of x[B, in, h, w]), without writing the upsampled tensor out
 * where the convolution can read through it (Winograd: conv_input); otherwise through a temporary. */
void conv_layer_forward_up2(compute *cc, const conv_layer *cl, const float *x, int B, int h, int w, float *y);

typedef struct {
    int in_ch, out_ch, groups;
    float eps;
    weight norm1_w, norm1_b, norm2_w, norm2_b;
    conv_layer conv1, conv2, skip; /* skip.w.numel == 0 when in_ch == out_ch (identity) */
    weight emb_w, emb_b;           /* [out, emb_dim] time-embedding projection (UNet only) */
} resnet_block;

/* y[B, out, H, W] = skip(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + emb_proj(SiLU(emb))))).
 * emb[B, emb_dim] may be NULL (VAE). */
void resnet_block_forward(compute *cc, const resnet_block *r, const float *x, const float *emb, int emb_dim, int B,
                          int H, int W, float *y);

/* y[B, C, H, W] = GroupNorm(x) (+ SiLU) per batch item. */
void group_norm_batch(compute *cc, const float *x, int B, int C, int HW, int G, float eps, const weight *g,
                      const weight *b, int silu, float *y);

#endif
