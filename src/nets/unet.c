/* unet.c - see unet.h. Follows the LDM openaimodel.py / attention.py structure. */
#include "nets/unet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define UNET_GROUPS   32
#define UNET_RES_EPS  1e-5f /* ResBlock GroupNorm */
#define UNET_ATTN_EPS 1e-6f /* SpatialTransformer GroupNorm */
#define UNET_LN_EPS   1e-5f /* BasicTransformerBlock LayerNorm */

/* ---------------- loading ---------------- */

/* ResBlock at prefix (ends with '.'): in_layers = GN, SiLU, conv; emb_layers = SiLU, linear;
 * out_layers = GN, SiLU, dropout, conv; skip_connection = 1x1 conv when channels change. */
static void load_resblock(wloader *L, resnet_block *r, int in_ch, int time_dim) {
    const st_tensor *conv = wl_find(L, "in_layers.2.weight");
    if (!conv || conv->ndim != 4) {
        wl_fail(L, "missing tensor '%sin_layers.2.weight'", L->prefix);
        return;
    }
    int out_ch = (int)conv->shape[0];
    r->in_ch = in_ch;
    r->out_ch = out_ch;
    r->groups = UNET_GROUPS;
    r->eps = UNET_RES_EPS;
    r->norm1_w = wl_vec(L, "in_layers.0.weight", in_ch);
    r->norm1_b = wl_vec(L, "in_layers.0.bias", in_ch);
    r->conv1 = conv_layer_load(L, "in_layers.2", in_ch, out_ch, 3, 1, 1);
    r->emb_w = wl_mat(L, "emb_layers.1.weight", out_ch, time_dim);
    r->emb_b = wl_vec(L, "emb_layers.1.bias", out_ch);
    r->norm2_w = wl_vec(L, "out_layers.0.weight", out_ch);
    r->norm2_b = wl_vec(L, "out_layers.0.bias", out_ch);
    r->conv2 = conv_layer_load(L, "out_layers.3", out_ch, out_ch, 3, 1, 1);
    if (in_ch != out_ch)
        r->skip = conv_layer_load(L, "skip_connection", in_ch, out_ch, 1, 1, 0);
    else
        memset(&r->skip, 0, sizeof r->skip);
    if (in_ch % UNET_GROUPS || out_ch % UNET_GROUPS)
        wl_fail(L, "ResBlock %s has %d/%d channels, not divisible into %d groups", L->prefix, in_ch, out_ch,
                UNET_GROUPS);
}

/* proj_in / proj_out are 1x1 convs (SD 1.x) or linears (SD 2.x): both are [out, in] matrices. */
static weight load_proj(wloader *L, const char *name, int out, int in) {
    const st_tensor *t = wl_find(L, name);
    if (t && t->ndim == 4) return wl_conv(L, name, out, in, 1, 1);
    return wl_mat(L, name, out, in);
}

static void load_transformer_block(wloader *L, transformer_block *b, int inner, int ctx_dim, int ff) {
    b->norm1_w = wl_vec(L, "norm1.weight", inner);
    b->norm1_b = wl_vec(L, "norm1.bias", inner);
    b->q1 = wl_mat(L, "attn1.to_q.weight", inner, inner);
    b->k1 = wl_mat(L, "attn1.to_k.weight", inner, inner);
    b->v1 = wl_mat(L, "attn1.to_v.weight", inner, inner);
    b->o1_w = wl_mat(L, "attn1.to_out.0.weight", inner, inner);
    b->o1_b = wl_vec(L, "attn1.to_out.0.bias", inner);
    b->norm2_w = wl_vec(L, "norm2.weight", inner);
    b->norm2_b = wl_vec(L, "norm2.bias", inner);
    b->q2 = wl_mat(L, "attn2.to_q.weight", inner, inner);
    b->k2 = wl_mat(L, "attn2.to_k.weight", inner, ctx_dim);
    b->v2 = wl_mat(L, "attn2.to_v.weight", inner, ctx_dim);
    b->o2_w = wl_mat(L, "attn2.to_out.0.weight", inner, inner);
    b->o2_b = wl_vec(L, "attn2.to_out.0.bias", inner);
    b->norm3_w = wl_vec(L, "norm3.weight", inner);
    b->norm3_b = wl_vec(L, "norm3.bias", inner);
    b->ff1_w = wl_mat(L, "ff.net.0.proj.weight", 2 * ff, inner);
    b->ff1_b = wl_vec(L, "ff.net.0.proj.bias", 2 * ff);
    b->ff2_w = wl_mat(L, "ff.net.2.weight", inner, ff);
    b->ff2_b = wl_vec(L, "ff.net.2.bias", inner);
}

/* SpatialTransformer at prefix (ends with '.'). */
static void load_transformer(wloader *L, spatial_transformer *st, int ch, const unet_config *c) {
    const st_tensor *pin = wl_find(L, "proj_in.weight"), *ff = wl_find(L, "transformer_blocks.0.ff.net.2.weight");
    if (!pin || !ff || ff->ndim != 2) {
        wl_fail(L, "missing tensor '%sproj_in.weight' or its feed-forward", L->prefix);
        return;
    }
    int inner = (int)pin->shape[0];
    st->ch = ch;
    st->ff_inner = (int)ff->shape[1];
    st->head_dim = c->head_dim > 0 ? c->head_dim : inner / c->heads;
    st->heads = c->head_dim > 0 ? inner / c->head_dim : c->heads;
    if (st->heads * st->head_dim != inner) {
        wl_fail(
            L,
            "%s: width %d does not split into %d heads (set the count: sd-convert IN OUT --metadata sd.unet.heads=N)",
            L->prefix, inner, st->heads);
        return;
    }
    st->norm_w = wl_vec(L, "norm.weight", ch);
    st->norm_b = wl_vec(L, "norm.bias", ch);
    st->proj_in_w = load_proj(L, "proj_in.weight", inner, ch);
    st->proj_in_b = wl_vec(L, "proj_in.bias", inner);
    st->proj_out_w = load_proj(L, "proj_out.weight", ch, inner);
    st->proj_out_b = wl_vec(L, "proj_out.bias", ch);
    st->depth = 0;
    while (st->depth < 64) {
        char n[64];
        snprintf(n, sizeof n, "transformer_blocks.%d.norm1.weight", st->depth);
        if (!wl_has(L, n)) break;
        st->depth++;
    }
    st->blocks = calloc((size_t)st->depth + 1, sizeof *st->blocks);
    if (!st->blocks) {
        wl_fail(L, "out of memory");
        return;
    }
    char base[200];
    snprintf(base, sizeof base, "%s", L->prefix);
    for (int i = 0; i < st->depth; i++) {
        wl_prefix(L, "%stransformer_blocks.%d.", base, i);
        load_transformer_block(L, &st->blocks[i], inner, c->ctx_dim, st->ff_inner);
    }
    wl_prefix(L, "%s", base);
}

static int block_exists(wloader *L, const char *kind, int i) {
    char n[64];
    snprintf(n, sizeof n, "%s.%d.0.", kind, i);
    size_t len = strlen(L->prefix), nl = strlen(n);
    const st_file *f = &L->s->file;
    for (int k = 0; k < f->n_tensors; k++) /* any tensor under "<prefix><kind>.<i>.0." */
        if (strncmp(f->tensors[k].name, L->prefix, len) == 0 && strncmp(f->tensors[k].name + len, n, nl) == 0) return 1;
    return 0;
}

static void load_input_block(wloader *L, const char *root, unet_block *b, int i, int ch, const unet_config *c) {
    b->in_ch = ch;
    wl_prefix(L, "%sinput_blocks.%d.", root, i);
    if (wl_has(L, "0.op.weight")) {
        b->has_down = 1;
        b->sample = conv_layer_load(L, "0.op", ch, ch, 3, 2, 1);
        b->out_ch = ch;
        return;
    }
    b->has_res = 1;
    wl_prefix(L, "%sinput_blocks.%d.0.", root, i);
    load_resblock(L, &b->res, ch, c->time_dim);
    b->out_ch = b->res.out_ch;
    wl_prefix(L, "%sinput_blocks.%d.1.", root, i);
    if (wl_has(L, "proj_in.weight")) {
        b->has_attn = 1;
        load_transformer(L, &b->attn, b->out_ch, c);
    }
}

static void load_output_block(wloader *L, const char *root, unet_block *b, int i, int in_ch, const unet_config *c) {
    b->in_ch = in_ch;
    b->has_res = 1;
    wl_prefix(L, "%soutput_blocks.%d.0.", root, i);
    load_resblock(L, &b->res, in_ch, c->time_dim);
    b->out_ch = b->res.out_ch;
    wl_prefix(L, "%soutput_blocks.%d.1.", root, i);
    if (wl_has(L, "proj_in.weight")) {
        b->has_attn = 1;
        load_transformer(L, &b->attn, b->out_ch, c);
    }
    for (int j = 1; j <= 2; j++) {
        wl_prefix(L, "%soutput_blocks.%d.%d.", root, i, j);
        if (wl_has(L, "conv.weight")) {
            b->has_up = 1;
            b->sample = conv_layer_load(L, "conv", b->out_ch, b->out_ch, 3, 1, 1);
        }
    }
}

/* Sizes under root: channels, time and context widths, block counts (the output blocks only with the decoder). */
static int read_config(wloader *L, unet_config *c, const model_desc *d, const char *root, int decoder) {
    wl_prefix(L, "%s", root);
    const st_tensor *cin = wl_find(L, "input_blocks.0.0.weight"), *t0 = wl_find(L, "time_embed.0.weight");
    const st_tensor *out = wl_find(L, "out.2.weight");
    if (!cin || cin->ndim != 4) {
        wl_fail(L, "missing or malformed tensor '%sinput_blocks.0.0.weight'", root);
        return -1;
    }
    if (!t0 || t0->ndim != 2) {
        wl_fail(L, "missing or malformed tensor '%stime_embed.0.weight'", root);
        return -1;
    }
    if (decoder && (!out || out->ndim != 4)) {
        wl_fail(L, "missing or malformed tensor '%sout.2.weight'", root);
        return -1;
    }
    c->model_ch = (int)cin->shape[0];
    c->in_ch = (int)cin->shape[1];
    c->time_dim = (int)t0->shape[0];
    c->out_ch = decoder ? (int)out->shape[0] : 0;
    c->heads = d->unet_heads;
    c->head_dim = d->unet_head_dim;
    c->ctx_dim = 0;
    const st_tensor *label = wl_find(L, "label_emb.0.0.weight");
    c->added_dim = label && label->ndim == 2 ? (int)label->shape[1] : 0;
    const st_file *f = &L->s->file;
    for (int k = 0; k < f->n_tensors; k++) { /* the projections' kind from any proj_in */
        const char *n = f->tensors[k].name, *key = ".proj_in.weight";
        size_t len = strlen(n), klen = strlen(key);
        if (strncmp(n, root, strlen(root)) == 0 && len > klen && strcmp(n + len - klen, key) == 0)
            c->linear_proj = f->tensors[k].ndim == 2;
    }
    for (int k = 0; k < f->n_tensors && !c->ctx_dim; k++) { /* context width from any cross-attention key */
        const char *n = f->tensors[k].name, *key = "attn2.to_k.weight";
        size_t len = strlen(n), klen = strlen(key);
        if (strncmp(n, root, strlen(root)) == 0 && len > klen && strcmp(n + len - klen, key) == 0 &&
            f->tensors[k].ndim == 2)
            c->ctx_dim = (int)f->tensors[k].shape[1];
    }
    while (c->n_input < UNET_MAX_BLOCKS && block_exists(L, "input_blocks", c->n_input)) c->n_input++;
    while (decoder && c->n_output < UNET_MAX_BLOCKS && block_exists(L, "output_blocks", c->n_output)) c->n_output++;
    if (c->n_input < 2 || (decoder && c->n_output < 1)) {
        wl_fail(L, "UNet has no input/output blocks");
        return -1;
    }
    if (c->model_ch % 2) {
        wl_fail(L, "UNet width %d is odd", c->model_ch);
        return -1;
    }
    return 0;
}

/* conv_in, the time embedding and label_emb under root. */
static void load_stem(wloader *L, unet *u, const char *root) {
    const unet_config *c = &u->c;
    wl_prefix(L, "%s", root);
    u->conv_in = conv_layer_load(L, "input_blocks.0.0", c->in_ch, c->model_ch, 3, 1, 1);
    u->time1_w = wl_mat(L, "time_embed.0.weight", c->time_dim, c->model_ch);
    u->time1_b = wl_vec(L, "time_embed.0.bias", c->time_dim);
    u->time2_w = wl_mat(L, "time_embed.2.weight", c->time_dim, c->time_dim);
    u->time2_b = wl_vec(L, "time_embed.2.bias", c->time_dim);
    if (c->added_dim) {
        u->label1_w = wl_mat(L, "label_emb.0.0.weight", c->time_dim, c->added_dim);
        u->label1_b = wl_vec(L, "label_emb.0.0.bias", c->time_dim);
        u->label2_w = wl_mat(L, "label_emb.0.2.weight", c->time_dim, c->time_dim);
        u->label2_b = wl_vec(L, "label_emb.0.2.bias", c->time_dim);
    }
}

/* The middle block under root, on ch channels. */
static void load_middle(wloader *L, unet *u, const char *root, int ch) {
    const unet_config *c = &u->c;
    wl_prefix(L, "%smiddle_block.0.", root);
    u->mid_res1.has_res = 1;
    load_resblock(L, &u->mid_res1.res, ch, c->time_dim);
    wl_prefix(L, "%smiddle_block.1.", root);
    u->mid_attn.has_attn = 1;
    load_transformer(L, &u->mid_attn.attn, ch, c);
    wl_prefix(L, "%smiddle_block.2.", root);
    u->mid_res2.has_res = 1;
    load_resblock(L, &u->mid_res2.res, ch, c->time_dim);
}

/* The encoder half under root (stem, input blocks, middle block): skips[i] the channels of input block i's output.
 * Returns the channels at the middle block. */
static int load_encoder(wloader *L, unet *u, const char *root, int *skips) {
    const unet_config *c = &u->c;
    int ch = c->model_ch;
    load_stem(L, u, root);
    skips[0] = ch;
    for (int i = 1; i < c->n_input && !L->failed; i++) {
        load_input_block(L, root, &u->input[i], i, ch, c);
        ch = u->input[i].out_ch;
        skips[i] = ch;
    }
    load_middle(L, u, root, ch);
    return ch;
}

/* The output blocks and the output layers (UNET_PREFIX), from ch channels at the middle block. */
static void load_decoder(wloader *L, unet *u, const int *skips, int ch) {
    const unet_config *c = &u->c;
    int n_skips = c->n_input;
    if (c->n_output != n_skips && !L->failed)
        wl_fail(L, "UNet has %d output blocks for %d skip connections", c->n_output, n_skips);
    for (int i = 0; i < c->n_output && !L->failed; i++) {
        load_output_block(L, UNET_PREFIX, &u->output[i], i, ch + skips[--n_skips], c);
        ch = u->output[i].out_ch;
    }
    wl_prefix(L, UNET_PREFIX);
    u->out_norm_w = wl_vec(L, "out.0.weight", ch);
    u->out_norm_b = wl_vec(L, "out.0.bias", ch);
    u->conv_out = conv_layer_load(L, "out.2", ch, c->out_ch, 3, 1, 1);
}

/* The UNet under root: the whole of it, or its encoder half (a ControlNet's copy). */
static sd_status load(unet *u, tensor_store *s, const model_desc *d, const char *root, int decoder, char *err,
                      size_t errlen) {
    memset(u, 0, sizeof *u);
    wloader L = {s, err, errlen, 0, ""};
    unet_config *c = &u->c;
    if (read_config(&L, c, d, root, decoder) != 0) return SD_ERR_MODEL;
    u->input = calloc((size_t)c->n_input, sizeof *u->input);
    u->output = calloc((size_t)c->n_output + 1, sizeof *u->output);
    if (!u->input || !u->output) {
        snprintf(err, errlen, "out of memory loading the UNet");
        return SD_ERR_NOMEM;
    }
    int skips[UNET_MAX_BLOCKS];
    int ch = load_encoder(&L, u, root, skips);
    if (decoder) load_decoder(&L, u, skips, ch);
    if (c->ctx_dim == 0 && !L.failed) wl_fail(&L, "UNet has no cross-attention (attn2.to_k) weights");
    return L.failed ? SD_ERR_MODEL : SD_OK;
}

sd_status unet_load(unet *u, tensor_store *s, const model_desc *d, char *err, size_t errlen) {
    return load(u, s, d, UNET_PREFIX, 1, err, errlen);
}

sd_status unet_load_encoder(unet *u, tensor_store *s, const model_desc *d, const char *root, char *err, size_t errlen) {
    return load(u, s, d, root, 0, err, errlen);
}

static void free_block(unet_block *b) { free(b->attn.blocks); }

void unet_free(unet *u) {
    for (int i = 0; u->input && i < u->c.n_input; i++) free_block(&u->input[i]);
    for (int i = 0; u->output && i < u->c.n_output; i++) free_block(&u->output[i]);
    free_block(&u->mid_attn);
    free(u->input);
    free(u->output);
    memset(u, 0, sizeof *u);
}

/* ---------------- forward ---------------- */

void timestep_embedding(float t, int dim, float *out) {
    int half = dim / 2;
    for (int i = 0; i < half; i++) {
        float freq = expf(-logf(10000.0f) * (float)i / (float)half);
        out[i] = cosf(t * freq);
        out[half + i] = sinf(t * freq);
    }
}

void unet_added_vector(const float *pooled, int pooled_width, const float *ids, int n_ids, int time_id_dim,
                       float *added) {
    memcpy(added, pooled, (size_t)pooled_width * sizeof(float));
    for (int i = 0; i < n_ids; i++)
        timestep_embedding(ids[i], time_id_dim, added + pooled_width + (size_t)i * time_id_dim);
}

/* What every block of one UNet evaluation shares. */
typedef struct {
    compute *cc;
    const float *emb; /* [B, time_dim] */
    const float *ctx; /* [B, ctx_len, ctx_dim] */
    int ctx_len, B;
} unet_pass;

/* y[B·N, inner] = multi-head attention of x[B·N, inner] over ctx[B·M, ctx_dim]; ctx = NULL: self-attention. */
static void attention_layer(compute *cc, const spatial_transformer *st, const weight *wq, const weight *wk,
                            const weight *wv, const weight *wo, const weight *bo, const float *x, int B, int N,
                            const float *ctx, int M, int ctx_dim, float *y) {
    const int inner = st->heads * st->head_dim;
    const float *kv_src = ctx ? ctx : x;
    const int kv_dim = ctx ? ctx_dim : inner, kv_len = ctx ? M : N;
    arena_mark mark = compute_mark(cc);
    float *q = compute_alloc(cc, (size_t)B * N * inner);      /* [B·N, inner] */
    float *k = compute_alloc(cc, (size_t)B * kv_len * inner); /* [B·M, inner] */
    float *v = compute_alloc(cc, (size_t)B * kv_len * inner); /* [B·M, inner] */
    float *o = compute_alloc(cc, (size_t)B * N * inner);      /* [B·N, inner] */
    float *work = compute_alloc(cc, attention_work_size(cc, N, kv_len, st->heads, st->head_dim));
    if (!q || !k || !v || !o || !work) return;
    linear(cc, x, B * N, inner, compute_weight(cc, wq), NULL, inner, q);
    linear(cc, kv_src, B * kv_len, kv_dim, compute_weight(cc, wk), NULL, inner, k);
    linear(cc, kv_src, B * kv_len, kv_dim, compute_weight(cc, wv), NULL, inner, v);
    for (int b = 0; b < B && !compute_stopped(cc); b++)
        attention(cc, q + (size_t)b * N * inner, inner, k + (size_t)b * kv_len * inner, inner,
                  v + (size_t)b * kv_len * inner, inner, N, kv_len, st->heads, st->head_dim, 0,
                  o + (size_t)b * N * inner, work);
    linear(cc, o, B * N, inner, compute_weight(cc, wo), bo->f32, inner, y);
    compute_reset(cc, mark);
}

/* BasicTransformerBlock: h += attn1(LN1 h); h += attn2(LN2 h, ctx); h += ff(LN3 h). h[B·N, inner]. */
static void transformer_block_forward(const unet_pass *ps, const spatial_transformer *st, const transformer_block *tb,
                                      float *h, int N, int ctx_dim) {
    compute *cc = ps->cc;
    const int inner = st->heads * st->head_dim, ff = st->ff_inner, B = ps->B;
    const size_t n = (size_t)B * N;
    if (compute_stopped(cc)) return;
    arena_mark mark = compute_mark(cc);
    float *t = compute_alloc(cc, n * inner); /* [B·N, inner] normalised */
    float *u = compute_alloc(cc, n * inner); /* [B·N, inner] sub-layer output */
    if (!t || !u) return;
    layer_norm(cc, h, (int)n, inner, UNET_LN_EPS, tb->norm1_w.f32, tb->norm1_b.f32, t);
    attention_layer(cc, st, &tb->q1, &tb->k1, &tb->v1, &tb->o1_w, &tb->o1_b, t, B, N, NULL, 0, 0, u);
    add_inplace(cc, h, u, n * inner);
    layer_norm(cc, h, (int)n, inner, UNET_LN_EPS, tb->norm2_w.f32, tb->norm2_b.f32, t);
    attention_layer(cc, st, &tb->q2, &tb->k2, &tb->v2, &tb->o2_w, &tb->o2_b, t, B, N, ps->ctx, ps->ctx_len, ctx_dim, u);
    add_inplace(cc, h, u, n * inner);
    layer_norm(cc, h, (int)n, inner, UNET_LN_EPS, tb->norm3_w.f32, tb->norm3_b.f32, t);
    float *p = compute_alloc(cc, n * 2 * ff); /* [B·N, 2·ff] GEGLU projection */
    float *g = compute_alloc(cc, n * ff);     /* [B·N, ff] */
    if (!p || !g) return;
    linear(cc, t, (int)n, inner, compute_weight(cc, &tb->ff1_w), tb->ff1_b.f32, 2 * ff, p);
    geglu(cc, p, (int)n, ff, g);
    linear(cc, g, (int)n, ff, compute_weight(cc, &tb->ff2_w), tb->ff2_b.f32, inner, u);
    add_inplace(cc, h, u, n * inner);
    compute_reset(cc, mark);
}

/* SpatialTransformer, in place on x[B, C, H, W]: x += proj_out(blocks(proj_in(GN(x)))). */
static void spatial_transformer_forward(const unet_pass *ps, const spatial_transformer *st, float *x, int H, int W,
                                        int ctx_dim) {
    compute *cc = ps->cc;
    const int C = st->ch, N = H * W, inner = st->heads * st->head_dim, B = ps->B;
    arena_mark mark = compute_mark(cc);
    float *norm = compute_alloc(cc, (size_t)C * N);      /* [C, N] one batch item */
    float *tok = compute_alloc(cc, (size_t)B * N * C);   /* [B·N, C] */
    float *h = compute_alloc(cc, (size_t)B * N * inner); /* [B·N, inner] */
    if (!norm || !tok || !h) return;
    for (int b = 0; b < B; b++) {
        group_norm(cc, x + (size_t)b * C * N, C, N, UNET_GROUPS, UNET_ATTN_EPS, st->norm_w.f32, st->norm_b.f32, 0,
                   norm);
        transpose(cc, norm, C, N, tok + (size_t)b * N * C);
    }
    linear(cc, tok, B * N, C, compute_weight(cc, &st->proj_in_w), st->proj_in_b.f32, inner, h);
    for (int i = 0; i < st->depth; i++) transformer_block_forward(ps, st, &st->blocks[i], h, N, ctx_dim);
    linear(cc, h, B * N, inner, compute_weight(cc, &st->proj_out_w), st->proj_out_b.f32, C, tok);
    for (int b = 0; b < B; b++) {
        transpose(cc, tok + (size_t)b * N * C, N, C, norm);
        add_inplace(cc, x + (size_t)b * C * N, norm, (size_t)C * N);
    }
    compute_reset(cc, mark);
}

/* Largest activation (floats) a block sequence needs at latent size h x w, for the ping-pong buffers. */
static size_t max_activation(const unet *u, int B, int h, int w) {
    size_t best = (size_t)u->c.model_ch * h * w;
    int H = h, W = w;
    for (int i = 1; i < u->c.n_input; i++) {
        if (u->input[i].has_down) {
            H = (H + 1) / 2;
            W = (W + 1) / 2;
        }
        size_t s = (size_t)u->input[i].out_ch * H * W;
        if (s > best) best = s;
    }
    for (int i = 0; i < u->c.n_output; i++) {
        const unet_block *b = &u->output[i];
        size_t s = (size_t)b->in_ch * H * W;
        if (s > best) best = s;
        if (b->has_up) {
            H *= 2;
            W *= 2;
            s = (size_t)b->out_ch * H * W;
            if (s > best) best = s;
        }
    }
    return best * B;
}

/* One block: optional ResBlock (x -> y), transformer (in place), down/up sampling. The upsampling goes to
 * up_h x up_w, the size of the skip connection that comes next (2x, unless a side was odd on the way down:
 * diffusers' upsample_size). Returns the output buffer; *H, *W become its size. */
static float *run_block(const unet *u, const unet_block *blk, float *x, float *y, float *spare, const unet_pass *ps,
                        int *H, int *W, int up_h, int up_w) {
    compute *cc = ps->cc;
    const int B = ps->B;
    float *cur = x;
    if (compute_stopped(cc)) return cur;
    if (blk->has_res) {
        resnet_block_forward(cc, &blk->res, cur, ps->emb, u->c.time_dim, B, *H, *W, y);
        cur = y;
    }
    if (blk->has_attn) spatial_transformer_forward(ps, &blk->attn, cur, *H, *W, u->c.ctx_dim);
    if (blk->has_down) {
        float *dst = cur == y ? spare : y;
        conv_layer_forward(cc, &blk->sample, cur, B, *H, *W, dst);
        *H = (*H + 1) / 2;
        *W = (*W + 1) / 2;
        cur = dst;
    }
    if (blk->has_up) {
        float *other = cur == y ? spare : y;    /* a buffer that is not cur */
        if (up_h == 2 * *H && up_w == 2 * *W) { /* the convolution reads cur upsampled */
            conv_layer_forward_up2(cc, &blk->sample, cur, B, *H, *W, other);
            cur = other;
        } else { /* an odd side on the way down (diffusers' upsample_size): upsample into other, convolve back */
            const size_t in_size = (size_t)blk->out_ch * *H * *W, out_size = (size_t)blk->out_ch * up_h * up_w;
            for (int b = 0; b < B; b++)
                upsample_nearest(cc, cur + b * in_size, blk->out_ch, *H, *W, other + b * out_size, up_h, up_w);
            conv_layer_forward(cc, &blk->sample, other, B, up_h, up_w, cur);
        }
        *H = up_h;
        *W = up_w;
    }
    return cur;
}

/* cat[b] = [x[b] (cx channels); s[b] (+ r[b]) (cs channels)] for every batch item; r (a residual for the skip
 * connection) may be NULL. */
static void concat_channels(compute *cc, const float *x, int cx, const float *s, const float *r, int cs, int B,
                            size_t HW, float *cat) {
    for (int b = 0; b < B; b++) {
        float *skip = cat + ((size_t)b * (cx + cs) + cx) * HW;
        memcpy(cat + (size_t)b * (cx + cs) * HW, x + (size_t)b * cx * HW, (size_t)cx * HW * sizeof(float));
        memcpy(skip, s + (size_t)b * cs * HW, (size_t)cs * HW * sizeof(float));
        if (r) add_inplace(cc, skip, r + (size_t)b * cs * HW, (size_t)cs * HW);
    }
}

/* emb[B, time_dim] = time_embed(sinusoid(t)) (+ label_emb(added) when the UNet has added conditioning). */
static void time_embed(compute *cc, const unet *u, const float *t, const float *added, int B, float *emb) {
    const int mc = u->c.model_ch, td = u->c.time_dim, ad = u->c.added_dim;
    arena_mark mark = compute_mark(cc);
    float *sin_emb = compute_alloc(cc, (size_t)B * mc); /* [B, model_ch] */
    float *hid = compute_alloc(cc, (size_t)B * td);     /* [B, time_dim] */
    if (!sin_emb || !hid) return;
    for (int b = 0; b < B; b++) timestep_embedding(t[b], mc, sin_emb + (size_t)b * mc);
    linear(cc, sin_emb, B, mc, compute_weight(cc, &u->time1_w), u->time1_b.f32, td, hid);
    silu_inplace(cc, hid, (size_t)B * td);
    linear(cc, hid, B, td, compute_weight(cc, &u->time2_w), u->time2_b.f32, td, emb);
    if (ad && added) { /* emb += label_emb(added): linear, SiLU, linear (sgm's label_emb.0) */
        float *lab = compute_alloc(cc, (size_t)B * td); /* [B, time_dim] */
        if (!lab) return;
        linear(cc, added, B, ad, compute_weight(cc, &u->label1_w), u->label1_b.f32, td, hid);
        silu_inplace(cc, hid, (size_t)B * td);
        linear(cc, hid, B, td, compute_weight(cc, &u->label2_w), u->label2_b.f32, td, lab);
        add_inplace(cc, emb, lab, (size_t)B * td);
    }
    compute_reset(cc, mark);
}

/* The skip connections: what each input block leaves for its output block. */
typedef struct {
    float *x[UNET_MAX_BLOCKS]; /* [B, ch_i, H_i, W_i] */
    int ch[UNET_MAX_BLOCKS], h[UNET_MAX_BLOCKS], w[UNET_MAX_BLOCKS];
} unet_skips;

void unet_block_shape(const unet *u, int i, int h, int w, int *ch, int *H, int *W) {
    *ch = u->c.model_ch;
    *H = h;
    *W = w;
    for (int k = 1; k <= i && k < u->c.n_input; k++) {
        if (u->input[k].has_down) {
            *H = (*H + 1) / 2;
            *W = (*W + 1) / 2;
        }
        *ch = u->input[k].out_ch;
    }
}

size_t unet_block_floats(const unet *u, int i, int B, int h, int w) {
    int ch, H, W;
    unet_block_shape(u, i, h, w, &ch, &H, &W);
    return (size_t)B * ch * H * W;
}

/* The encoder half of an evaluation: conv_in (+ add [model_ch, h, w] for every item), the input blocks (their outputs
 * into skips[i], given or from the arena), the middle block. Returns the middle block's output (one of pp), its size
 * in *H, *W; NULL when the pass stopped. */
static float *encode(const unet_pass *ps, const unet *u, const unet_input *in, const float *add, float *const *given,
                     unet_skips *sk, float **pp, int *H, int *W) {
    compute *cc = ps->cc;
    const unet_config *c = &u->c;
    const int B = in->B;
    for (int i = 0; i < c->n_input; i++) {
        unet_block_shape(u, i, in->h, in->w, &sk->ch[i], &sk->h[i], &sk->w[i]);
        sk->x[i] = given ? given[i] : compute_alloc(cc, unet_block_floats(u, i, B, in->h, in->w));
        if (!sk->x[i]) return NULL;
    }
    *H = in->h;
    *W = in->w;
    conv_layer_forward(cc, &u->conv_in, in->x, B, *H, *W, sk->x[0]);
    for (int b = 0; add && b < B; b++)
        add_inplace(cc, sk->x[0] + (size_t)b * c->model_ch * *H * *W, add, (size_t)c->model_ch * *H * *W);
    for (int i = 1; i < c->n_input && !compute_stopped(cc); i++) {
        const unet_block *blk = &u->input[i];
        float *cur = run_block(u, blk, sk->x[i - 1], pp[0], pp[1], ps, H, W, 0, 0);
        memcpy(sk->x[i], cur, (size_t)B * blk->out_ch * *H * *W * sizeof(float));
    }
    if (compute_stopped(cc)) return NULL;
    float *cur = run_block(u, &u->mid_res1, sk->x[c->n_input - 1], pp[0], pp[1], ps, H, W, 0, 0);
    cur = run_block(u, &u->mid_attn, cur, pp[0], pp[1], ps, H, W, 0, 0);
    return run_block(u, &u->mid_res2, cur, pp[1], pp[2], ps, H, W, 0, 0);
}

/* The decoder half: the output blocks on the middle block's output cur (+ its residual) and the skips (+ theirs),
 * then the output layers into out. */
static void decode(const unet_pass *ps, const unet *u, const unet_input *in, const unet_skips *sk, float *cur,
                   float **pp, int H, int W, float *out) {
    compute *cc = ps->cc;
    const int B = in->B;
    int ch = u->mid_res2.res.out_ch, n_skip = u->c.n_input;
    if (in->residuals) add_inplace(cc, cur, in->residuals[u->c.n_input], (size_t)B * ch * H * W);
    for (int i = 0; i < u->c.n_output && !compute_stopped(cc); i++) {
        const unet_block *blk = &u->output[i];
        int s = --n_skip;
        float *cat = cur == pp[0] ? pp[1] : pp[0];
        float *others[2];
        int k = 0;
        for (int j = 0; j < 3; j++)
            if (pp[j] != cat) others[k++] = pp[j];
        concat_channels(cc, cur, ch, sk->x[s], in->residuals ? in->residuals[s] : NULL, sk->ch[s], B, (size_t)H * W,
                        cat);
        int next = s > 0 ? s - 1 : 0;
        cur = run_block(u, blk, cat, others[0], others[1], ps, &H, &W, sk->h[next], sk->w[next]);
        ch = blk->out_ch;
    }
    const norm_spec norm_out = {&u->out_norm_w, &u->out_norm_b, UNET_GROUPS, UNET_RES_EPS, 1};
    conv_layer_forward_normed(cc, &u->conv_out, &norm_out, cur, B, H, W, out);
}

/* The time embedding and the ping-pong buffers of one evaluation (from the arena); 0, or -1 (status set). */
static int begin_pass(compute *cc, const unet *u, const unet_input *in, unet_pass *ps, float **pp) {
    const int B = in->B;
    size_t big = max_activation(u, B, in->h, in->w);
    float *emb = compute_alloc(cc, (size_t)B * u->c.time_dim);  /* [B, time_dim] */
    for (int i = 0; i < 3; i++) pp[i] = compute_alloc(cc, big); /* ping-pong activations */
    if (!emb || !pp[0] || !pp[1] || !pp[2]) return -1;
    time_embed(cc, u, in->t, in->added, B, emb);
    *ps = (unet_pass){cc, emb, in->ctx, in->ctx_len, B};
    return 0;
}

/* One evaluation: the encoder half (conv_in + add, the input blocks' outputs into given when not NULL), then the
 * decoder half into out, or, when out is NULL, the middle block's output into given[n_input]. */
static sd_status run_pass(compute *cc, const unet *u, const unet_input *in, const float *add, float *const *given,
                          float *out) {
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    unet_pass ps;
    unet_skips sk;
    float *pp[3];
    int H, W;
    float *mid = begin_pass(cc, u, in, &ps, pp) ? NULL : encode(&ps, u, in, add, given, &sk, pp, &H, &W);
    if (mid && out)
        decode(&ps, u, in, &sk, mid, pp, H, W, out);
    else if (mid)
        memcpy(given[u->c.n_input], mid, unet_block_floats(u, u->c.n_input, in->B, in->h, in->w) * sizeof(float));
    compute_reset(cc, mark);
    return compute_stopped(cc) ? cc->status : SD_OK;
}

sd_status unet_forward(compute *cc, const unet *u, const unet_input *in, float *out) {
    return run_pass(cc, u, in, NULL, NULL, out);
}

sd_status unet_encoder_forward(compute *cc, const unet *u, const unet_input *in, const float *add, float *const *outs) {
    return run_pass(cc, u, in, add, outs, NULL);
}

/* ---------------- estimates ---------------- */

/* FLOPs (2 per multiply-add) of block b on one item of hw latent pixels; the self-attention's scores and P·V grow
 * with hw². ctx_len: the text context's tokens. */
static double block_flops(const unet_block *b, double hw, int ctx_len) {
    double f = 0;
    if (b->has_res) {
        const double i = b->res.in_ch, o = b->res.out_ch;
        f += 18.0 * hw * o * (i + o) + (i != o ? 2.0 * hw * i * o : 0.0);
    }
    if (b->has_attn) { /* per transformer block: q k v o + cross q o (12·c²), GEGLU (6·c·F), scores and P·V */
        const double c = b->attn.ch, F = b->attn.ff_inner;
        f += 4.0 * hw * c * c +
             b->attn.depth * (12.0 * hw * c * c + 6.0 * hw * c * F + 4.0 * hw * hw * c + 4.0 * hw * ctx_len * c);
    }
    if (b->has_down) f += 18.0 * (hw / 4) * b->out_ch * b->out_ch;
    if (b->has_up) f += 18.0 * (4 * hw) * b->out_ch * b->out_ch;
    return f;
}

double unet_flops(const unet *u, int B, int h, int w, int ctx_len) {
    double hw = (double)h * w, f = 18.0 * hw * u->c.in_ch * u->c.model_ch; /* conv_in */
    for (int i = 1; i < u->c.n_input; i++) {
        f += block_flops(&u->input[i], hw, ctx_len);
        if (u->input[i].has_down) hw /= 4;
    }
    f += block_flops(&u->mid_res1, hw, ctx_len) + block_flops(&u->mid_attn, hw, ctx_len) +
         block_flops(&u->mid_res2, hw, ctx_len);
    for (int i = 0; i < u->c.n_output; i++) {
        f += block_flops(&u->output[i], hw, ctx_len);
        if (u->output[i].has_up) hw *= 4;
    }
    return B * (f + 18.0 * hw * u->c.model_ch * u->c.out_ch); /* conv_out */
}
