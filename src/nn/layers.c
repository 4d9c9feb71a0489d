/* layers.c - see layers.h. */
#include "nn/layers.h"

#include <string.h>

conv_layer conv_layer_load(wloader *L, const char *name, int in_ch, int out_ch, int k, int stride, int pad) {
    conv_layer cl;
    char n[160];
    snprintf(n, sizeof n, "%s.weight", name);
    cl.w = wl_conv(L, n, out_ch, in_ch, k, k);
    snprintf(n, sizeof n, "%s.bias", name);
    cl.b = wl_vec(L, n, out_ch);
    cl.d = (conv_desc){in_ch, out_ch, k, k, stride, pad, pad, pad, pad};
    return cl;
}

/* y = conv(x read as `in` says; NULL: as it is). Winograd reads through `in` itself; for the other
 * convolutions the input is written out first (conv_input_apply). */
static void conv_forward_read(compute *cc, const conv_layer *cl, const float *x, const conv_input *in, int B, int H,
                              int W, float *y) {
    const conv_desc *d = &cl->d;
    if (compute_stopped(cc)) return;
    arena_mark mark = compute_mark(cc);
    if (conv_uses_winograd(d, H, W, B)) { /* whole batch at once */
        float *work = compute_alloc(cc, conv_winograd_work_size(cc, d, B, H, W));
        if (!work) return;
        conv2d_winograd(cc, d, x, in, B, H, W, compute_weight(cc, &cl->w), cl->b.f32, y, work);
    } else {
        float *xin = NULL; /* [B, in, H, W]: x as `in` reads it */
        if (in && !(xin = compute_alloc(cc, (size_t)B * d->in_ch * H * W))) return;
        if (in) conv_input_apply(cc, in, x, B, d->in_ch, H, W, xin);
        float *work = compute_alloc(cc, conv_work_size(d, B, H, W) + 1); /* im2col tile or batch */
        if (!work) return;
        conv2d(cc, d, in ? xin : x, B, H, W, compute_weight(cc, &cl->w), cl->b.f32, y, work);
    }
    compute_reset(cc, mark);
}

void conv_layer_forward(compute *cc, const conv_layer *cl, const float *x, int B, int H, int W, float *y) {
    conv_forward_read(cc, cl, x, NULL, B, H, W, y);
}

void conv_layer_forward_normed(compute *cc, const conv_layer *cl, const norm_spec *norm, const float *x, int B, int H,
                               int W, float *y) {
    const int C = cl->d.in_ch;
    const size_t HW = (size_t)H * W;
    arena_mark mark = compute_mark(cc);
    float *scale = compute_alloc(cc, (size_t)B * C); /* [B, C] */
    float *shift = compute_alloc(cc, (size_t)B * C); /* [B, C] */
    if (!scale || !shift) return;
    for (int i = 0; i < B; i++)
        group_norm_coeffs(cc, x + (size_t)i * C * HW, C, (int)HW, norm->groups, norm->eps, norm->gamma->f32,
                          norm->beta->f32, scale + (size_t)i * C, shift + (size_t)i * C);
    const conv_input in = {scale, shift, norm->silu, 0};
    conv_forward_read(cc, cl, x, &in, B, H, W, y);
    compute_reset(cc, mark);
}

void conv_layer_forward_up2(compute *cc, const conv_layer *cl, const float *x, int B, int h, int w, float *y) {
    const conv_input in = {NULL, NULL, 0, 1};
    conv_forward_read(cc, cl, x, &in, B, 2 * h, 2 * w, y);
}

void group_norm_batch(compute *cc, const float *x, int B, int C, int HW, int G, float eps, const weight *g,
                      const weight *b, int silu, float *y) {
    for (int i = 0; i < B; i++)
        group_norm(cc, x + (size_t)i * C * HW, C, HW, G, eps, g->f32, b->f32, silu, y + (size_t)i * C * HW);
}

/* h[b, c] += (W · SiLU(emb[b]) + bias)[c]: the time embedding's projection, added per channel. h[B, out, HW]. */
static void add_time_embedding(compute *cc, const resnet_block *r, const float *emb, int emb_dim, int B, size_t HW,
                               float *h) {
    arena_mark mark = compute_mark(cc);
    float *e = compute_alloc(cc, (size_t)B * emb_dim);   /* [B, emb_dim] */
    float *p = compute_alloc(cc, (size_t)B * r->out_ch); /* [B, out] */
    if (!e || !p) return;
    memcpy(e, emb, (size_t)B * emb_dim * sizeof(float));
    silu_inplace(cc, e, (size_t)B * emb_dim);
    linear(cc, e, B, emb_dim, compute_weight(cc, &r->emb_w), r->emb_b.f32, r->out_ch, p);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < r->out_ch; c++) {
            float *hc = h + ((size_t)b * r->out_ch + c) * HW;
            float v = p[b * r->out_ch + c];
            for (size_t i = 0; i < HW; i++) hc[i] += v;
        }
    compute_reset(cc, mark);
}

void resnet_block_forward(compute *cc, const resnet_block *r, const float *x, const float *emb, int emb_dim, int B,
                          int H, int W, float *y) {
    const size_t HW = (size_t)H * W;
    const norm_spec norm1 = {&r->norm1_w, &r->norm1_b, r->groups, r->eps, 1};
    const norm_spec norm2 = {&r->norm2_w, &r->norm2_b, r->groups, r->eps, 1};
    arena_mark mark = compute_mark(cc);
    float *h = compute_alloc(cc, (size_t)B * r->out_ch * HW); /* [B, out, H, W] after conv1 */
    if (!h) return;
    conv_layer_forward_normed(cc, &r->conv1, &norm1, x, B, H, W, h);
    if (emb) add_time_embedding(cc, r, emb, emb_dim, B, HW, h);
    conv_layer_forward_normed(cc, &r->conv2, &norm2, h, B, H, W, y);
    if (r->skip.w.numel) { /* y += skip(x), computed into h (conv2 has read it) */
        conv_layer_forward(cc, &r->skip, x, B, H, W, h);
        add_inplace(cc, y, h, (size_t)B * r->out_ch * HW);
    } else {
        add_inplace(cc, y, x, (size_t)B * r->out_ch * HW);
    }
    compute_reset(cc, mark);
}
