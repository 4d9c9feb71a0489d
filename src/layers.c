/* layers.c - see layers.h. */
#include "layers.h"

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

void conv_layer_forward(const conv_layer *cl, const float *x, int B, int H, int W, float *y, arena *a, float *scratch) {
    const conv_desc *d = &cl->d;
    arena_mark mark = arena_get_mark(a);
    if (conv_uses_winograd(d, H, W, B)) { /* whole batch at once */
        float *work = arena_alloc(a, conv_winograd_work_size(d, B, H, W));
        if (!work) return;
        conv2d_winograd(d, x, B, H, W, weight_f32(&cl->w, scratch), cl->b.f32, y, work);
    } else {
        float *work = arena_alloc(a, conv_work_size(d, B, H, W) + 1); /* im2col tile or batch */
        if (!work) return;
        conv2d(d, x, B, H, W, weight_f32(&cl->w, scratch), cl->b.f32, y, work);
    }
    arena_reset(a, mark);
}

void group_norm_batch(const float *x, int B, int C, int HW, int G, float eps, const weight *g, const weight *b,
                      int silu, float *y) {
    for (int i = 0; i < B; i++)
        group_norm(x + (size_t)i * C * HW, C, HW, G, eps, g->f32, b->f32, silu, y + (size_t)i * C * HW);
}

void resnet_block_forward(const resnet_block *r, const float *x, const float *emb, int emb_dim, int B, int H, int W,
                          float *y, arena *a, float *scratch) {
    const size_t HW = (size_t)H * W;
    arena_mark mark = arena_get_mark(a);
    float *h = arena_alloc(a, (size_t)B * r->in_ch * HW);   /* [B, in, H, W] normalised input */
    float *h2 = arena_alloc(a, (size_t)B * r->out_ch * HW); /* [B, out, H, W] after conv1 */
    if (a->failed) return;
    group_norm_batch(x, B, r->in_ch, (int)HW, r->groups, r->eps, &r->norm1_w, &r->norm1_b, 1, h);
    conv_layer_forward(&r->conv1, h, B, H, W, h2, a, scratch);
    if (emb) { /* h2[b, c] += (W · SiLU(emb[b]) + bias)[c] */
        float *e = arena_alloc(a, (size_t)B * emb_dim);     /* [B, emb_dim] */
        float *p = arena_alloc(a, (size_t)B * r->out_ch);   /* [B, out] */
        if (a->failed) return;
        memcpy(e, emb, (size_t)B * emb_dim * sizeof(float));
        silu_inplace(e, (size_t)B * emb_dim);
        linear(e, B, emb_dim, weight_f32(&r->emb_w, scratch), r->emb_b.f32, r->out_ch, p);
        for (int b = 0; b < B; b++)
            for (int c = 0; c < r->out_ch; c++) {
                float *hc = h2 + ((size_t)b * r->out_ch + c) * HW, v = p[b * r->out_ch + c];
                for (size_t i = 0; i < HW; i++) hc[i] += v;
            }
    }
    group_norm_batch(h2, B, r->out_ch, (int)HW, r->groups, r->eps, &r->norm2_w, &r->norm2_b, 1, h2);
    conv_layer_forward(&r->conv2, h2, B, H, W, y, a, scratch);
    if (r->skip.w.numel) { /* y += skip(x) */
        /* [B, out, H, W]: h is free again (conv1 has read it) and large enough unless the block widens */
        float *s = r->in_ch >= r->out_ch ? h : arena_alloc(a, (size_t)B * r->out_ch * HW);
        if (a->failed) return;
        conv_layer_forward(&r->skip, x, B, H, W, s, a, scratch);
        add_inplace(y, s, (size_t)B * r->out_ch * HW);
    } else {
        add_inplace(y, x, (size_t)B * r->out_ch * HW);
    }
    arena_reset(a, mark);
}
