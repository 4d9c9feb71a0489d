/* vae.c - see vae.h. Follows LDM's diffusionmodules/model.py Encoder/Decoder. */
#include "nets/vae.h"

#include <stdlib.h>
#include <string.h>

#define VAE_GROUPS     32
#define VAE_EPS        1e-6f
#define VAE_MAX_LEVELS 8

/* ---------------- loading ---------------- */

static int count_prefixed(const tensor_store *s, const char *fmt, int limit) {
    int n = 0;
    for (; n < limit; n++) {
        char name[200];
        snprintf(name, sizeof name, fmt, n);
        size_t len = strlen(name);
        int found = 0;
        for (int k = 0; k < s->file.n_tensors && !found; k++) found = strncmp(s->file.tensors[k].name, name, len) == 0;
        if (!found) break;
    }
    return n;
}

/* ResnetBlock at prefix: norm1, conv1, norm2, conv2, nin_shortcut (1x1) when channels change. */
static void load_res(wloader *L, resnet_block *r, int in_ch) {
    const st_tensor *c1 = wl_find(L, "conv1.weight");
    if (!c1 || c1->ndim != 4) {
        wl_fail(L, "missing tensor '%sconv1.weight'", L->prefix);
        return;
    }
    int out_ch = (int)c1->shape[0];
    memset(r, 0, sizeof *r);
    r->in_ch = in_ch;
    r->out_ch = out_ch;
    r->groups = VAE_GROUPS;
    r->eps = VAE_EPS;
    r->norm1_w = wl_vec(L, "norm1.weight", in_ch);
    r->norm1_b = wl_vec(L, "norm1.bias", in_ch);
    r->conv1 = conv_layer_load(L, "conv1", in_ch, out_ch, 3, 1, 1);
    r->norm2_w = wl_vec(L, "norm2.weight", out_ch);
    r->norm2_b = wl_vec(L, "norm2.bias", out_ch);
    r->conv2 = conv_layer_load(L, "conv2", out_ch, out_ch, 3, 1, 1);
    if (in_ch != out_ch) r->skip = conv_layer_load(L, "nin_shortcut", in_ch, out_ch, 1, 1, 0);
    if (in_ch % VAE_GROUPS || out_ch % VAE_GROUPS)
        wl_fail(L, "VAE block %s has %d/%d channels, not divisible into %d groups", L->prefix, in_ch, out_ch,
                VAE_GROUPS);
}

/* q/k/v/proj_out are 1x1 convs in LDM files, linears in converted ones: both [C, C]. */
static weight load_square(wloader *L, const char *name, int ch) {
    const st_tensor *t = wl_find(L, name);
    if (t && t->ndim == 4) return wl_conv(L, name, ch, ch, 1, 1);
    return wl_mat(L, name, ch, ch);
}

static void load_attn(wloader *L, vae_attention *at, int ch) {
    at->ch = ch;
    at->norm_w = wl_vec(L, "norm.weight", ch);
    at->norm_b = wl_vec(L, "norm.bias", ch);
    at->q_w = load_square(L, "q.weight", ch);
    at->q_b = wl_vec(L, "q.bias", ch);
    at->k_w = load_square(L, "k.weight", ch);
    at->k_b = wl_vec(L, "k.bias", ch);
    at->v_w = load_square(L, "v.weight", ch);
    at->v_b = wl_vec(L, "v.bias", ch);
    at->proj_w = load_square(L, "proj_out.weight", ch);
    at->proj_b = wl_vec(L, "proj_out.bias", ch);
}

static void load_mid(wloader *L, vae_coder *c, const char *coder, int ch) {
    wl_prefix(L, VAE_PREFIX "%s.mid.block_1.", coder);
    load_res(L, &c->mid1, ch);
    wl_prefix(L, VAE_PREFIX "%s.mid.attn_1.", coder);
    load_attn(L, &c->attn, ch);
    wl_prefix(L, VAE_PREFIX "%s.mid.block_2.", coder);
    load_res(L, &c->mid2, ch);
}

/* Loads the blocks of one level ("decoder.up.3" / "encoder.down.0"); returns the channels after it. */
static int load_level(wloader *L, vae_level *lv, const char *level, int ch, int is_decoder) {
    char fmt[160];
    snprintf(fmt, sizeof fmt, VAE_PREFIX "%s.block.%%d.", level);
    lv->n_res = count_prefixed(L->s, fmt, 16);
    lv->res = calloc((size_t)lv->n_res + 1, sizeof *lv->res);
    if (!lv->res) {
        wl_fail(L, "out of memory");
        return ch;
    }
    for (int j = 0; j < lv->n_res; j++) {
        wl_prefix(L, VAE_PREFIX "%s.block.%d.", level, j);
        load_res(L, &lv->res[j], ch);
        ch = lv->res[j].out_ch;
    }
    wl_prefix(L, VAE_PREFIX "%s.", level);
    if (is_decoder && wl_has(L, "upsample.conv.weight")) {
        lv->has_sample = 1;
        lv->sample = conv_layer_load(L, "upsample.conv", ch, ch, 3, 1, 1);
    } else if (!is_decoder && wl_has(L, "downsample.conv.weight")) {
        lv->has_sample = 1;
        lv->sample = conv_layer_load(L, "downsample.conv", ch, ch, 3, 2, 0);
        lv->sample.d.pad_bottom = lv->sample.d.pad_right = 1; /* LDM pads (0, 1, 0, 1) */
    }
    return ch;
}

static void load_decoder(wloader *L, vae *v) {
    vae_coder *d = &v->dec;
    d->n_levels = count_prefixed(L->s, VAE_PREFIX "decoder.up.%d.", VAE_MAX_LEVELS);
    wl_prefix(L, VAE_PREFIX "decoder.");
    const st_tensor *cin = wl_find(L, "conv_in.weight");
    if (!cin || cin->ndim != 4 || d->n_levels == 0) {
        wl_fail(L, "missing VAE decoder (decoder.conv_in / decoder.up.*)");
        return;
    }
    int ch = (int)cin->shape[0];
    d->conv_in = conv_layer_load(L, "conv_in", v->z_ch, ch, 3, 1, 1);
    load_mid(L, d, "decoder", ch);
    d->levels = calloc((size_t)d->n_levels, sizeof *d->levels);
    if (!d->levels) {
        wl_fail(L, "out of memory");
        return;
    }
    for (int i = 0; i < d->n_levels; i++) { /* up.(n-1) runs first */
        char level[32];
        snprintf(level, sizeof level, "decoder.up.%d", d->n_levels - 1 - i);
        ch = load_level(L, &d->levels[i], level, ch, 1);
    }
    wl_prefix(L, VAE_PREFIX "decoder.");
    d->norm_out_w = wl_vec(L, "norm_out.weight", ch);
    d->norm_out_b = wl_vec(L, "norm_out.bias", ch);
    d->conv_out = conv_layer_load(L, "conv_out", ch, v->img_ch, 3, 1, 1);
}

static void load_encoder(wloader *L, vae *v) {
    vae_coder *e = &v->enc;
    e->n_levels = count_prefixed(L->s, VAE_PREFIX "encoder.down.%d.", VAE_MAX_LEVELS);
    wl_prefix(L, VAE_PREFIX "encoder.");
    const st_tensor *cin = wl_find(L, "conv_in.weight");
    if (!cin || cin->ndim != 4 || e->n_levels == 0) {
        wl_fail(L, "missing VAE encoder (encoder.conv_in / encoder.down.*)");
        return;
    }
    int ch = (int)cin->shape[0];
    e->conv_in = conv_layer_load(L, "conv_in", v->img_ch, ch, 3, 1, 1);
    e->levels = calloc((size_t)e->n_levels, sizeof *e->levels);
    if (!e->levels) {
        wl_fail(L, "out of memory");
        return;
    }
    for (int i = 0; i < e->n_levels; i++) {
        char level[32];
        snprintf(level, sizeof level, "encoder.down.%d", i);
        ch = load_level(L, &e->levels[i], level, ch, 0);
    }
    load_mid(L, e, "encoder", ch);
    wl_prefix(L, VAE_PREFIX "encoder.");
    e->norm_out_w = wl_vec(L, "norm_out.weight", ch);
    e->norm_out_b = wl_vec(L, "norm_out.bias", ch);
    e->conv_out = conv_layer_load(L, "conv_out", ch, 2 * v->z_ch, 3, 1, 1);
}

sd_status vae_load(vae *v, tensor_store *s, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    wloader L = {s, err, errlen, 0, VAE_PREFIX};
    const st_tensor *pq = wl_find(&L, "post_quant_conv.weight");
    if (!pq || pq->ndim != 4) {
        wl_fail(&L, "missing or malformed tensor '" VAE_PREFIX "post_quant_conv.weight'");
        return SD_ERR_MODEL;
    }
    v->z_ch = (int)pq->shape[0];
    v->img_ch = 3;
    v->post_quant = conv_layer_load(&L, "post_quant_conv", v->z_ch, v->z_ch, 1, 1, 0);
    load_decoder(&L, v);
    wl_prefix(&L, VAE_PREFIX);
    v->has_encoder = wl_has(&L, "encoder.conv_in.weight");
    if (v->has_encoder) {
        v->quant = conv_layer_load(&L, "quant_conv", 2 * v->z_ch, 2 * v->z_ch, 1, 1, 0);
        load_encoder(&L, v);
    }
    return L.failed ? SD_ERR_MODEL : SD_OK;
}

static void free_coder(vae_coder *c) {
    for (int i = 0; c->levels && i < c->n_levels; i++) free(c->levels[i].res);
    free(c->levels);
}

void vae_free(vae *v) {
    free_coder(&v->dec);
    free_coder(&v->enc);
    memset(v, 0, sizeof *v);
}

/* ---------------- forward ---------------- */

/* Single-head self-attention over the pixels, in place on x[B, C, H, W] (LDM AttnBlock). */
static void attention_forward(compute *cc, const vae_attention *at, float *x, int B, int HW) {
    const int C = at->ch;
    if (compute_stopped(cc)) return;
    arena_mark mark = compute_mark(cc);
    float *norm = compute_alloc(cc, (size_t)C * HW); /* [C, HW] */
    float *tok = compute_alloc(cc, (size_t)HW * C);  /* [HW, C] */
    float *q = compute_alloc(cc, (size_t)HW * C);    /* [HW, C] */
    float *k = compute_alloc(cc, (size_t)HW * C);    /* [HW, C] */
    float *v = compute_alloc(cc, (size_t)HW * C);    /* [HW, C] */
    float *work = compute_alloc(cc, attention_work_size(cc, HW, HW, 1, C));
    if (!norm || !tok || !q || !k || !v || !work) return;
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * C * HW;
        group_norm(cc, xb, C, HW, VAE_GROUPS, VAE_EPS, at->norm_w.f32, at->norm_b.f32, 0, norm);
        transpose(cc, norm, C, HW, tok);
        linear(cc, tok, HW, C, compute_weight(cc, &at->q_w), at->q_b.f32, C, q);
        linear(cc, tok, HW, C, compute_weight(cc, &at->k_w), at->k_b.f32, C, k);
        linear(cc, tok, HW, C, compute_weight(cc, &at->v_w), at->v_b.f32, C, v);
        attention(cc, q, C, k, C, v, C, HW, HW, 1, C, 0, tok, work);
        linear(cc, tok, HW, C, compute_weight(cc, &at->proj_w), at->proj_b.f32, C, q);
        transpose(cc, q, HW, C, norm);
        add_inplace(cc, xb, norm, (size_t)C * HW);
    }
    compute_reset(cc, mark);
}

static void mid_forward(compute *cc, const vae_coder *c, float **cur, float **other, int B, int H, int W) {
    resnet_block_forward(cc, &c->mid1, *cur, NULL, 0, B, H, W, *other);
    attention_forward(cc, &c->attn, *other, B, H * W);
    resnet_block_forward(cc, &c->mid2, *other, NULL, 0, B, H, W, *cur);
}

static void swap(float **a, float **b) {
    float *t = *a;
    *a = *b;
    *b = t;
}

/* Runs the levels of a coder on *cur (ping-pong with *other); updates H, W and the channel count. */
static void levels_forward(compute *cc, const vae_coder *c, int is_decoder, float **cur, float **other, int B, int *H,
                           int *W, int *ch) {
    for (int i = 0; i < c->n_levels && !compute_stopped(cc); i++) {
        const vae_level *lv = &c->levels[i];
        for (int j = 0; j < lv->n_res; j++) {
            resnet_block_forward(cc, &lv->res[j], *cur, NULL, 0, B, *H, *W, *other);
            swap(cur, other);
            *ch = lv->res[j].out_ch;
        }
        if (!lv->has_sample) continue;
        if (is_decoder) { /* nearest 2x, then conv */
            conv_layer_forward_up2(cc, &lv->sample, *cur, B, *H, *W, *other);
            *H *= 2;
            *W *= 2;
        } else {
            conv_layer_forward(cc, &lv->sample, *cur, B, *H, *W, *other);
            *H = conv_out_size(*H, 3, 2, 0, 1);
            *W = conv_out_size(*W, 3, 2, 0, 1);
        }
        swap(cur, other);
    }
}

/* Largest activation a coder needs (floats), tracking channels and size through its levels. */
static size_t coder_max_activation(const vae_coder *c, int is_decoder, int ch, int H, int W) {
    size_t best = (size_t)ch * H * W;
    for (int i = 0; i < c->n_levels; i++) {
        const vae_level *lv = &c->levels[i];
        for (int j = 0; j < lv->n_res; j++) {
            ch = lv->res[j].out_ch;
            if ((size_t)ch * H * W > best) best = (size_t)ch * H * W;
        }
        if (lv->has_sample) {
            if (is_decoder) {
                H *= 2;
                W *= 2;
            } else {
                H = conv_out_size(H, 3, 2, 0, 1);
                W = conv_out_size(W, 3, 2, 0, 1);
            }
            if ((size_t)ch * H * W > best) best = (size_t)ch * H * W;
        }
    }
    return best;
}

sd_status vae_decode(compute *cc, const vae *v, const float *z, int B, int h, int w, float *image) {
    const vae_coder *d = &v->dec;
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    int ch = d->conv_in.d.out_ch, H = h, W = w;
    size_t big = (size_t)B * coder_max_activation(d, 1, ch, h, w);
    float *zq = compute_alloc(cc, (size_t)B * v->z_ch * h * w); /* [B, z, h, w] */
    float *cur = compute_alloc(cc, big), *other = compute_alloc(cc, big);
    if (!zq || !cur || !other) return cc->status;
    conv_layer_forward(cc, &v->post_quant, z, B, h, w, zq);
    conv_layer_forward(cc, &d->conv_in, zq, B, h, w, cur);
    mid_forward(cc, d, &cur, &other, B, H, W);
    levels_forward(cc, d, 1, &cur, &other, B, &H, &W, &ch);
    const norm_spec norm_out = {&d->norm_out_w, &d->norm_out_b, VAE_GROUPS, VAE_EPS, 1};
    conv_layer_forward_normed(cc, &d->conv_out, &norm_out, cur, B, H, W, image);
    compute_reset(cc, mark);
    return compute_stopped(cc) ? cc->status : SD_OK;
}

sd_status vae_encode_moments(compute *cc, const vae *v, const float *image, int B, int H, int W, float *moments) {
    if (!v->has_encoder) return SD_ERR_MODEL;
    const vae_coder *e = &v->enc;
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    int ch = e->conv_in.d.out_ch;
    size_t big = (size_t)B * coder_max_activation(e, 0, ch, H, W);
    float *cur = compute_alloc(cc, big), *other = compute_alloc(cc, big);
    if (!cur || !other) return cc->status;
    conv_layer_forward(cc, &e->conv_in, image, B, H, W, cur);
    levels_forward(cc, e, 0, &cur, &other, B, &H, &W, &ch);
    mid_forward(cc, e, &cur, &other, B, H, W);
    const norm_spec norm_out = {&e->norm_out_w, &e->norm_out_b, VAE_GROUPS, VAE_EPS, 1};
    conv_layer_forward_normed(cc, &e->conv_out, &norm_out, cur, B, H, W, other);
    swap(&cur, &other);
    conv_layer_forward(cc, &v->quant, cur, B, H, W, moments);
    compute_reset(cc, mark);
    return compute_stopped(cc) ? cc->status : SD_OK;
}

void vae_split_moments(const vae *v, const float *moments, int B, int h, int w, float *mean, float *logvar) {
    const size_t n = (size_t)v->z_ch * h * w;
    for (int b = 0; b < B; b++) {
        memcpy(mean + b * n, moments + (size_t)b * 2 * n, n * sizeof(float));
        for (size_t i = 0; i < n; i++) { /* DiagonalGaussianDistribution: logvar clamped to [-30, 20] */
            float lv = moments[(size_t)b * 2 * n + n + i];
            logvar[b * n + i] = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
        }
    }
}

sd_status vae_encode(compute *cc, const vae *v, const float *image, int B, int H, int W, float *mean, float *logvar) {
    arena_mark mark = compute_mark(cc);
    float *moments = compute_alloc(cc, (size_t)B * 2 * v->z_ch * (H / 8) * (W / 8)); /* [B, 2·z, H/8, W/8] */
    sd_status st = !moments ? cc->status : vae_encode_moments(cc, v, image, B, H, W, moments);
    if (st == SD_OK) vae_split_moments(v, moments, B, H / 8, W / 8, mean, logvar);
    compute_reset(cc, mark);
    return st;
}

size_t vae_decode_memory(const vae *v, int h, int w) {
    const vae_coder *d = &v->dec;
    size_t big = coder_max_activation(d, 1, d->conv_in.d.out_ch, h, w);
    /* two ping-pong buffers, the ResNet block's temporaries and the convolution's padded copies */
    return big * 6 * sizeof(float);
}
