/* kernels.h - the numeric building blocks: BLAS-backed linear/conv/attention, norms, activations. Tensors are
 * plain float arrays; shapes are given in comments and arguments. Images are [C, H, W] (one batch item), token
 * sequences are [N, D] row-major. Every kernel runs in a compute context (compute.h): its threads, its precision
 * of the products, its FLOP counter. Once the context's pass must stop (cancelled or failed), every kernel returns
 * at once without writing its output, so a network that is stopping reaches its next check in no time. */
#ifndef SD_KERNELS_H
#define SD_KERNELS_H

#include "nn/compute.h"

#include <stddef.h>
#include <stdint.h>

/* ---- dense layers ---- */
/* y[n, out] = x[n, in] · W[out, in]^T + b[out] (b may be NULL). */
void linear(compute *cc, const float *x, int n, int in, const float *W, const float *b, int out, float *y);
/* C[M, N] = alpha · A[M, K] · B[K, N] + beta · C (row-major, leading dims = widths). */
void matmul(compute *cc, const float *A, const float *B, float *C, int M, int N, int K, float alpha, float beta);

/* ---- convolution ---- */
typedef struct {
    int in_ch, out_ch, kh, kw, stride;
    int pad_top, pad_left, pad_bottom, pad_right;
} conv_desc;

/* Output size of a convolution along one axis. */
int conv_out_size(int in, int k, int stride, int pad_a, int pad_b);
/* y[B, out_ch, Ho, Wo] = conv(x[B, in_ch, H, W], W[out_ch, in_ch, kh, kw]) + b. `work` needs conv_work_size floats. */
void conv2d(compute *cc, const conv_desc *d, const float *x, int B, int H, int W, const float *w, const float *b,
            float *y, float *work);
size_t conv_work_size(const conv_desc *d, int B, int H, int W);
/* Whether a 3x3 stride-1 pad-1 convolution of B items at H x W goes through Winograd F(4x4, 3x3). */
int conv_uses_winograd(const conv_desc *d, int H, int W, int B);
/* The same convolution for a whole batch y[B, out, H, W] from x[B, in, H, W] and w[out, in, 3, 3]
 * (winograd.c), x read as `in` says when not NULL (conv_input: GroupNorm + SiLU, nearest 2x upsampling, without
 * writing them out); work needs conv_winograd_work_size floats (at cc's thread count). */
typedef struct conv_input conv_input;
void conv2d_winograd(compute *cc, const conv_desc *d, const float *x, const conv_input *in, int B, int H, int W,
                     const float *w, const float *b, float *y, float *work);
size_t conv_winograd_work_size(compute *cc, const conv_desc *d, int B, int H, int W);

/* ---- normalisation ---- */
/* GroupNorm over x[C, HW] with G groups; y may equal x; optional fused SiLU (PyTorch GroupNorm). */
void group_norm(compute *cc, const float *x, int C, int HW, int G, float eps, const float *gamma, const float *beta,
                int silu, float *y);
/* GroupNorm's per-channel map of x[C, HW] (y = x·scale[c] + shift[c], then SiLU, is group_norm), for consumers
 * that apply it as they read x (conv_input) instead of writing the normalised tensor. */
void group_norm_coeffs(compute *cc, const float *x, int C, int HW, int G, float eps, const float *gamma,
                       const float *beta, float *scale, float *shift);
/* How conv2d_winograd reads its input x: as x nearest-upsampled 2x when upsample2x (x is then [B, C, H/2, W/2]
 * for an H x W convolution: torch's 'nearest', pixel (i, j) reads (i/2, j/2)), and through a per-channel affine
 * map then SiLU when scale is not NULL: value = silu(x·scale[c] + shift[c]) (GroupNorm's, group_norm_coeffs).
 * The zero padding around the image is neither. */
struct conv_input {
    const float *scale, *shift; /* [B·C]: item b's channel c at b·C + c; NULL: no map */
    int silu;
    int upsample2x;
};
/* y[B, C, H, W] = x as `in` reads it (upsampled, mapped): what conv2d_winograd sees, written out for the
 * convolutions that cannot read through `in`. */
void conv_input_apply(compute *cc, const conv_input *in, const float *x, int B, int C, int H, int W, float *y);
/* LayerNorm over each row of x[n, d]; y may equal x. */
void layer_norm(compute *cc, const float *x, int n, int d, float eps, const float *gamma, const float *beta, float *y);

/* ---- activations and element-wise ---- */
void silu_inplace(compute *cc, float *x, size_t n);       /* x·sigmoid(x) */
void quick_gelu_inplace(compute *cc, float *x, size_t n); /* x·sigmoid(1.702x) (CLIP) */
void gelu_inplace(compute *cc, float *x, size_t n);       /* x/2·(1 + erf(x/√2)) (OpenCLIP) */
/* y[n, d] = a · gelu(g) with [a | g] = x[n, 2d] (GEGLU, exact erf GELU). */
void geglu(compute *cc, const float *x, int n, int d, float *y);
void add_inplace(compute *cc, float *y, const float *x, size_t n); /* y += x */
/* [C, H, W] -> [C, 2H, 2W], nearest neighbour. */
void upsample_nearest2x(compute *cc, const float *x, int C, int H, int W, float *y);
/* [C, H, W] -> [C, OH, OW], torch's F.interpolate(mode="nearest"): index i reads floor(i · in / out). */
void upsample_nearest(compute *cc, const float *x, int C, int H, int W, float *y, int OH, int OW);
/* [C, N] <-> [N, C] */
void transpose(compute *cc, const float *x, int rows, int cols, float *y);

/* ---- attention (attention.c) ---- */
/* out[n, heads·dh] = softmax(Q·Kᵀ/√dh (+ causal mask)) · V per head, with
 * Q[n, ldq], K[m, ldk], V[m, ldv] holding the heads side by side. Query rows are processed in
 * blocks so the scores stay bounded; `work` needs attention_work_size floats. */
void attention(compute *cc, const float *Q, int ldq, const float *K, int ldk, const float *V, int ldv, int n, int m,
               int heads, int dh, int causal, float *out, float *work);
size_t attention_work_size(compute *cc, int n, int m, int heads, int dh);

#endif
