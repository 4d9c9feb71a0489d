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
static void conv_forward_read(const conv_layer *cl, const float *x, const conv_input *in, int B, int H, int W, float *y,
                              arena *a, float *scratch) {
    const conv_desc *d = &cl->d;
    arena_mark mark = arena_get_mark(a);
    if (conv_uses_winograd(d, H, W, B)) { /* whole batch at once */
        float *work = arena_alloc(a, conv_winograd_work_size(d, B, H, W));
        if (!work) return;
        conv2d_winograd(d, x, in, B, H, W, weight_f32(&cl->w, scratch), cl->b.f32, y, work);
    } else {
        float *xin = NULL; /* [B, in, H, W]: x as `in` reads it */
        if (in && !(xin = arena_alloc(a, (size_t)B * d->in_ch * H * W))) return;
        if (in) conv_input_apply(in, x, B, d->in_ch, H, W, xin);
        float *work = arena_alloc(a, conv_work_size(d, B, H, W) + 1); /* im2col tile or batch */
        if (!work) return;
        conv2d(d, in ? xin : x, B, H, W, weight_f32(&cl->w, scratch), cl->b.f32, y, work);
    }
    arena_reset(a, mark);
}

void conv_layer_forward(const conv_layer *cl, const float *x, int B, int H, int W, float *y, arena *a, float *scratch) {
    conv_forward_read(cl, x, NULL, B, H, W, y, a, scratch);
}

void conv_layer_forward_normed(const conv_layer *cl, const norm_spec *norm, const float *x, int B, int H, int W, float *y,
                               arena *a, float *scratch) {
    const int C = cl->d.in_ch;
    const size_t HW = (size_t)H * W;
    arena_mark mark = arena_get_mark(a);
    float *scale = arena_alloc(a, (size_t)B * C), *shift = arena_alloc(a, (size_t)B * C); /* [B, C] each */
    if (a->failed) return;
    for (int i = 0; i < B; i++)
        group_norm_coeffs(x + (size_t)i * C * HW, C, (int)HW, norm->groups, norm->eps, norm->gamma->f32, norm->beta->f32,
                          scale + (size_t)i * C, shift + (size_t)i * C);
    const conv_input in = {scale, shift, norm->silu, 0};
    conv_forward_read(cl, x, &in, B, H, W, y, a, scratch);
    arena_reset(a, mark);
}

void conv_layer_forward_up2(const conv_layer *cl, const float *x, int B, int h, int w, float *y, arena *a, float *scratch) {
    const conv_input in = {NULL, NULL, 0, 1};
    conv_forward_read(cl, x, &in, B, 2 * h, 2 * w, y, a, scratch);
}

void group_norm_batch(const float *x, int B, int C, int HW, int G, float eps, const weight *g, const weight *b,
                      int silu, float *y) {
    for (int i = 0; i < B; i++)
        group_norm(x + (size_t)i * C * HW, C, HW, G, eps, g->f32, b->f32, silu, y + (size_t)i * C * HW);
}

void resnet_block_forward(const resnet_block *r, const float *x, const float *emb, int emb_dim, int B, int H, int W,
                          float *y, arena *a, float *scratch) {
    const size_t HW = (size_t)H * W;
    const norm_spec norm1 = {&r->norm1_w, &r->norm1_b, r->groups, r->eps, 1}, norm2 = {&r->norm2_w, &r->norm2_b, r->groups, r->eps, 1};
    arena_mark mark = arena_get_mark(a);
    float *h = arena_alloc(a, (size_t)B * r->out_ch * HW); /* [B, out, H, W] after conv1 */
    if (a->failed) return;
    conv_layer_forward_normed(&r->conv1, &norm1, x, B, H, W, h, a, scratch);
    if (emb) { /* h[b, c] += (W · SiLU(emb[b]) + bias)[c] */
        float *e = arena_alloc(a, (size_t)B * emb_dim);     /* [B, emb_dim] */
        float *p = arena_alloc(a, (size_t)B * r->out_ch);   /* [B, out] */
        if (a->failed) return;
        memcpy(e, emb, (size_t)B * emb_dim * sizeof(float));
        silu_inplace(e, (size_t)B * emb_dim);
        linear(e, B, emb_dim, weight_f32(&r->emb_w, scratch), r->emb_b.f32, r->out_ch, p);
        for (int b = 0; b < B; b++)
            for (int c = 0; c < r->out_ch; c++) {
                float *hc = h + ((size_t)b * r->out_ch + c) * HW, v = p[b * r->out_ch + c];
                for (size_t i = 0; i < HW; i++) hc[i] += v;
            }
    }
    conv_layer_forward_normed(&r->conv2, &norm2, h, B, H, W, y, a, scratch);
    if (r->skip.w.numel) { /* y += skip(x), computed into h (conv2 has read it) */
        conv_layer_forward(&r->skip, x, B, H, W, h, a, scratch);
        add_inplace(y, h, (size_t)B * r->out_ch * HW);
    } else {
        add_inplace(y, x, (size_t)B * r->out_ch * HW);
    }
    arena_reset(a, mark);
}
