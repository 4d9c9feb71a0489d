/* taesd.c - see taesd.h. Layer lists (taesd.py Encoder() / Decoder(); diffusers indices):
 *   decoder: 0 conv 4→64 (bias), ReLU, 2-4 Blocks, up, 6 conv (no bias), 7-9 Blocks, up, 11 conv, 12-14 Blocks,
 *            up, 16 conv, 17 Block, 18 conv 64→3 (bias)
 *   encoder: 0 conv 3→64 (bias), 1 Block, 2 conv s2 (no bias), 3-5 Blocks, 6 conv s2, 7-9 Blocks, 10 conv s2,
 *            11-13 Blocks, 14 conv 64→4 (bias) */
#include "nets/taesd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int dec_blocks[TAESD_BLOCKS] = {2, 3, 4, 7, 8, 9, 12, 13, 14, 17}, dec_scale[3] = {6, 11, 16};
static const int enc_blocks[TAESD_BLOCKS] = {1, 3, 4, 5, 7, 8, 9, 11, 12, 13}, enc_scale[3] = {2, 6, 10};
static const int dec_per_stage[4] = {3, 3, 3, 1}, enc_per_stage[4] = {1, 3, 3, 3};

/* Layer `idx` (+ the naming's offset) as a 3x3 convolution. */
static conv_layer load_conv(wloader *L, int idx, int in, int out, int stride, int bias) {
    char n[64];
    conv_layer cl;
    snprintf(n, sizeof n, "%d.weight", idx);
    cl.w = wl_conv(L, n, out, in, 3, 3);
    snprintf(n, sizeof n, "%d.bias", idx);
    cl.b = bias ? wl_vec(L, n, out) : (weight){0};
    cl.d = (conv_desc){in, out, 3, 3, stride, 1, 1, 1, 1};
    return cl;
}

static taesd_block load_block(wloader *L, int idx) {
    char n[32];
    taesd_block b;
    conv_layer *c[3] = {&b.c0, &b.c2, &b.c4};
    for (int k = 0; k < 3; k++) {
        snprintf(n, sizeof n, "%d.conv", idx);
        size_t at = strlen(L->prefix);
        snprintf(L->prefix + at, sizeof L->prefix - at, "%s.", n);
        *c[k] = load_conv(L, 2 * k, TAESD_CH, TAESD_CH, 1, 1);
        L->prefix[at] = 0;
    }
    return b;
}

/* One coder under prefix, layer indices shifted by offset (the original decoder file counts its Clamp). */
static void load_coder(wloader *L, taesd_coder *c, int decoder, int offset, int latent_ch) {
    const int *blocks = decoder ? dec_blocks : enc_blocks, *scale = decoder ? dec_scale : enc_scale;
    c->in = load_conv(L, offset, decoder ? latent_ch : 3, TAESD_CH, 1, 1);
    for (int i = 0; i < TAESD_BLOCKS; i++) c->blocks[i] = load_block(L, blocks[i] + offset);
    for (int i = 0; i < 3; i++) c->scale[i] = load_conv(L, scale[i] + offset, TAESD_CH, TAESD_CH, decoder ? 1 : 2, 0);
    c->out = load_conv(L, (decoder ? 18 : 14) + offset, TAESD_CH, decoder ? 3 : latent_ch, 1, 1);
}

sd_status taesd_load(taesd *t, const char *path, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    sd_status st = store_open(&t->store, path, NULL, err, errlen);
    if (st != SD_OK) return st;
    const st_file *f = &t->store.file;
    const st_tensor *d = st_find(f, "decoder.layers.0.weight"), *e = st_find(f, "encoder.layers.0.weight");
    const char *dp = "decoder.layers.", *ep = "encoder.layers.";
    int doff = 0;
    if (!d && !e) { /* the original separate files */
        const st_tensor *d1 = st_find(f, "1.weight"), *e0 = st_find(f, "0.weight");
        if (d1 && d1->ndim == 4 && d1->shape[0] == TAESD_CH) {
            d = d1;
            dp = "";
            doff = 1;
        }
        if (e0 && e0->ndim == 4 && e0->shape[1] == 3) {
            e = e0;
            ep = "";
        }
    }
    if (!d && !e) {
        snprintf(err, errlen, "%s: not a TAESD file (no decoder.layers.0.weight / encoder.layers.0.weight)", path);
        taesd_free(t);
        return SD_ERR_MODEL;
    }
    t->latent_ch = d ? (int)d->shape[1] : 4; /* an encoder-only file: SD 1.x's 4 (the last conv's shape is checked) */
    wloader L = {&t->store, err, errlen, 0, ""};
    if (d) {
        wl_prefix(&L, "%s", dp);
        load_coder(&L, &t->dec, 1, doff, t->latent_ch);
        t->has_decoder = 1;
    }
    if (e) {
        wl_prefix(&L, "%s", ep);
        load_coder(&L, &t->enc, 0, 0, t->latent_ch);
        t->has_encoder = 1;
    }
    if (L.failed) {
        taesd_free(t);
        return SD_ERR_MODEL;
    }
    return SD_OK;
}

void taesd_free(taesd *t) { store_close(&t->store); }

int64_t taesd_max_half(const taesd *t) { return t->store.max_half_matrix; }

/* ---------------- forward ---------------- */

static void relu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
}

/* x[64, H, W] = relu(conv4(relu(conv2(relu(conv0(x))))) + x), with t1, t2 as temporaries. */
static void block_forward(compute *cc, const taesd_block *b, float *x, int H, int W, float *t1, float *t2) {
    const size_t n = (size_t)TAESD_CH * H * W;
    conv_layer_forward(cc, &b->c0, x, 1, H, W, t1);
    relu(t1, n);
    conv_layer_forward(cc, &b->c2, t1, 1, H, W, t2);
    relu(t2, n);
    conv_layer_forward(cc, &b->c4, t2, 1, H, W, t1);
    for (size_t i = 0; i < n; i++) x[i] = t1[i] + x[i] > 0 ? t1[i] + x[i] : 0;
}

sd_status taesd_decode(compute *cc, const taesd *t, const float *z, int h, int w, float *image) {
    if (!t->has_decoder) return SD_ERR_MODEL;
    const taesd_coder *c = &t->dec;
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    const size_t big = (size_t)TAESD_CH * 64 * h * w; /* 64 channels at the output size */
    float *x = compute_alloc(cc, big), *t1 = compute_alloc(cc, big), *t2 = compute_alloc(cc, big);
    float *zc = compute_alloc(cc, (size_t)t->latent_ch * h * w); /* [latent, h, w] */
    if (!x || !t1 || !t2 || !zc) return cc->status;
    for (size_t i = 0; i < (size_t)t->latent_ch * h * w; i++) zc[i] = tanhf(z[i] / 3.0f) * 3.0f; /* the Clamp module */
    conv_layer_forward(cc, &c->in, zc, 1, h, w, x);
    relu(x, (size_t)TAESD_CH * h * w);
    int H = h, W = w, k = 0;
    for (int s = 0; s < 4 && !compute_stopped(cc); s++) {
        for (int i = 0; i < dec_per_stage[s]; i++, k++) block_forward(cc, &c->blocks[k], x, H, W, t1, t2);
        if (s == 3) break;
        conv_layer_forward_up2(cc, &c->scale[s], x, 1, H, W, t1); /* nearest 2x, then conv */
        H *= 2;
        W *= 2;
        float *tmp = x;
        x = t1;
        t1 = tmp;
    }
    conv_layer_forward(cc, &c->out, x, 1, H, W, image);
    for (size_t i = 0; i < (size_t)3 * H * W; i++) image[i] = image[i] * 2.0f - 1.0f; /* [0, 1] → [-1, 1] */
    compute_reset(cc, mark);
    return compute_stopped(cc) ? cc->status : SD_OK;
}

sd_status taesd_encode(compute *cc, const taesd *t, const float *image, int H, int W, float *latent) {
    if (!t->has_encoder) return SD_ERR_MODEL;
    const taesd_coder *c = &t->enc;
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    const size_t big = (size_t)TAESD_CH * H * W;
    float *x = compute_alloc(cc, big), *t1 = compute_alloc(cc, big), *t2 = compute_alloc(cc, big);
    float *in = compute_alloc(cc, (size_t)3 * H * W); /* [3, H, W] */
    if (!x || !t1 || !t2 || !in) return cc->status;
    for (size_t i = 0; i < (size_t)3 * H * W; i++) in[i] = (image[i] + 1.0f) / 2.0f; /* [-1, 1] → [0, 1] */
    conv_layer_forward(cc, &c->in, in, 1, H, W, x);
    int k = 0;
    for (int s = 0; s < 4 && !compute_stopped(cc); s++) {
        if (s > 0) { /* stride-2 convolution: ceil(H / 2) */
            conv_layer_forward(cc, &c->scale[s - 1], x, 1, H, W, t1);
            H = conv_out_size(H, 3, 2, 1, 1);
            W = conv_out_size(W, 3, 2, 1, 1);
            memcpy(x, t1, (size_t)TAESD_CH * H * W * sizeof(float));
        }
        for (int i = 0; i < enc_per_stage[s]; i++, k++) block_forward(cc, &c->blocks[k], x, H, W, t1, t2);
    }
    conv_layer_forward(cc, &c->out, x, 1, H, W, latent);
    compute_reset(cc, mark);
    return compute_stopped(cc) ? cc->status : SD_OK;
}
