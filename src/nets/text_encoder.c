/* text_encoder.c - see text_encoder.h. Follows transformers' CLIPTextTransformer and open_clip's
 * TextTransformer (they compute the same function; the names and the q/k/v layout differ). */
#include "nets/text_encoder.h"

#include "text/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define CLIP_LN_EPS 1e-5f

/* Tensor names of the two namings, relative to the text prefix (layer names relative to the layer). */
typedef struct {
    const char *tok, *pos, *layer, *final_ln;
    const char *ln1, *out, *ln2, *fc1, *fc2; /* weight/bias pairs: NAME.weight, NAME.bias */
} text_names;

static const text_names CLIP_NAMES = {"embeddings.token_embedding.weight",
                                      "embeddings.position_embedding.weight",
                                      "encoder.layers.%d.",
                                      "final_layer_norm",
                                      "layer_norm1",
                                      "self_attn.out_proj",
                                      "layer_norm2",
                                      "mlp.fc1",
                                      "mlp.fc2"};
static const text_names OPENCLIP_NAMES = {"token_embedding.weight",
                                          "positional_embedding",
                                          "transformer.resblocks.%d.",
                                          "ln_final",
                                          "ln_1",
                                          "attn.out_proj",
                                          "ln_2",
                                          "mlp.c_fc",
                                          "mlp.c_proj"};

/* NAME.weight [rows, cols] (cols 0: a vector [rows]) into *w and NAME.bias [rows] into *b. */
static void load_pair(wloader *L, const char *name, int rows, int cols, weight *w, weight *b) {
    char n[128];
    snprintf(n, sizeof n, "%.100s.weight", name);
    *w = cols ? wl_mat(L, n, rows, cols) : wl_vec(L, n, rows);
    snprintf(n, sizeof n, "%.100s.bias", name);
    *b = wl_vec(L, n, rows);
}

static void load_layer(wloader *L, const text_names *nm, text_naming kind, text_layer *l, int d, int mlp) {
    load_pair(L, nm->ln1, d, 0, &l->ln1_w, &l->ln1_b);
    if (kind == TEXT_OPENCLIP) {
        l->qkv_w = wl_mat(L, "attn.in_proj_weight", 3 * d, d);
        l->qkv_b = wl_vec(L, "attn.in_proj_bias", 3 * d);
    } else {
        load_pair(L, "self_attn.q_proj", d, d, &l->q_w, &l->q_b);
        load_pair(L, "self_attn.k_proj", d, d, &l->k_w, &l->k_b);
        load_pair(L, "self_attn.v_proj", d, d, &l->v_w, &l->v_b);
    }
    load_pair(L, nm->out, d, d, &l->out_w, &l->out_b);
    load_pair(L, nm->ln2, d, 0, &l->ln2_w, &l->ln2_b);
    load_pair(L, nm->fc1, mlp, d, &l->fc1_w, &l->fc1_b);
    load_pair(L, nm->fc2, d, mlp, &l->fc2_w, &l->fc2_b);
}

/* A required 2-D tensor that sizes the encoder; fails naming it. */
static const st_tensor *sizing_tensor(wloader *L, const char *name) {
    const st_tensor *t = wl_find(L, name);
    if (!t || t->ndim != 2) wl_fail(L, "missing or malformed tensor '%s%s'", L->prefix, name);
    return t && t->ndim == 2 ? t : NULL;
}

/* 1 + the largest layer index named by any tensor of the text encoder (layers are numbered from 0). */
static int named_layers(const wloader *L, const text_names *nm) {
    char stem[256];
    snprintf(stem, sizeof stem, "%s%s", L->prefix, nm->layer);
    *strstr(stem, "%d") = 0; /* "...encoder.layers." */
    size_t len = strlen(stem);
    int most = 0;
    for (int k = 0; k < L->s->file.n_tensors; k++) {
        const char *name = L->s->file.tensors[k].name;
        if (strncmp(name, stem, len) == 0) {
            int i = atoi(name + len);
            if (i >= 0 && i < 1000 && i + 1 > most) most = i + 1;
        }
    }
    return most;
}

/* The optional text projection [hidden, projection] of an OpenCLIP tower (the pooled output's). */
static void load_projection(wloader *L, text_encoder *te, const text_encoder_desc *e) {
    const st_tensor *p = wl_find(L, "text_projection");
    if (!e->pooled) return;
    if (!p || p->ndim != 2) {
        wl_fail(L, "missing tensor '%stext_projection' (the pooled output's projection)", L->prefix);
        return;
    }
    te->c.projection = (int)p->shape[1];
    te->projection = wl_mat(L, "text_projection", te->c.hidden, te->c.projection);
}

sd_status text_encoder_load(text_encoder *te, tensor_store *s, const text_encoder_desc *e, char *err, size_t errlen) {
    memset(te, 0, sizeof *te);
    const text_names *nm = e->naming == TEXT_OPENCLIP ? &OPENCLIP_NAMES : &CLIP_NAMES;
    wloader L = {s, err, errlen, 0, ""};
    wl_prefix(&L, "%s", e->prefix);
    char fc1_name[96];
    snprintf(fc1_name, sizeof fc1_name, nm->layer, 0);
    snprintf(fc1_name + strlen(fc1_name), sizeof fc1_name - strlen(fc1_name), "%s.weight", nm->fc1);
    const st_tensor *tok = sizing_tensor(&L, nm->tok), *pos = tok ? sizing_tensor(&L, nm->pos) : NULL;
    const st_tensor *fc1 = pos ? sizing_tensor(&L, fc1_name) : NULL;
    if (!fc1) return SD_ERR_MODEL;
    text_config *c = &te->c;
    c->vocab = (int)tok->shape[0];
    c->hidden = (int)tok->shape[1];
    c->positions = (int)pos->shape[0];
    c->mlp = (int)fc1->shape[0];
    c->heads = e->heads;
    c->exact_gelu = e->naming == TEXT_OPENCLIP;
    for (; c->layers < 1000; c->layers++) { /* layers present: those with a first LayerNorm */
        char name[96];
        snprintf(name, sizeof name, nm->layer, c->layers);
        snprintf(name + strlen(name), sizeof name - strlen(name), "%s.weight", nm->ln1);
        if (!wl_has(&L, name)) break;
    }
    if (named_layers(&L, nm) != c->layers) {
        char name[96];
        snprintf(name, sizeof name, nm->layer, c->layers);
        wl_fail(&L, "missing tensor '%s%s%s.weight' (text encoder layer %d of %d)", L.prefix, name, nm->ln1, c->layers,
                named_layers(&L, nm));
        return SD_ERR_MODEL;
    }
    if (c->vocab < 49408)
        wl_fail(&L, "text encoder vocabulary %d is smaller than CLIP's 49408", c->vocab);
    else if (c->positions != 77)
        wl_fail(&L, "text encoder has %d positions, expected 77", c->positions);
    else if (c->hidden % c->heads)
        wl_fail(&L,
                "text hidden size %d is not divisible by %d heads (set the count: sd-convert IN OUT --metadata %s=N)",
                c->hidden, c->heads, e->heads_key ? e->heads_key : "sd.text.heads");
    else if (c->layers <= e->skip)
        wl_fail(&L, "text encoder has %d layers, the model uses %d more than that", c->layers, e->skip + 1 - c->layers);
    if (L.failed) return SD_ERR_MODEL;
    te->tok_emb = wl_mat(&L, nm->tok, c->vocab, c->hidden);
    te->pos_emb = wl_mat(&L, nm->pos, c->positions, c->hidden);
    load_pair(&L, nm->final_ln, c->hidden, 0, &te->final_w, &te->final_b);
    load_projection(&L, te, e);
    te->layers = calloc((size_t)c->layers + 1, sizeof *te->layers);
    if (!te->layers) {
        snprintf(err, errlen, "out of memory loading the text encoder");
        return SD_ERR_NOMEM;
    }
    for (int i = 0; i < c->layers && !L.failed; i++) {
        char layer[64];
        snprintf(layer, sizeof layer, nm->layer, i);
        wl_prefix(&L, "%s%s", e->prefix, layer);
        load_layer(&L, nm, e->naming, &te->layers[i], c->hidden, c->mlp);
    }
    return L.failed ? SD_ERR_MODEL : SD_OK;
}

void text_encoder_free(text_encoder *te) {
    free(te->layers);
    memset(te, 0, sizeof *te);
}

/* x[n, d] += out_proj(attention(LN1(x))) with a causal mask. */
static void attention_block(compute *cc, const text_encoder *te, const text_layer *l, float *x) {
    const int n = te->c.positions, d = te->c.hidden, H = te->c.heads;
    arena_mark mark = compute_mark(cc);
    float *h = compute_alloc(cc, (size_t)n * d);       /* [n, d] */
    float *qkv = compute_alloc(cc, (size_t)n * 3 * d); /* [n, 3d]: q | k | v side by side */
    float *o = compute_alloc(cc, (size_t)n * d);       /* [n, d] */
    float *work = compute_alloc(cc, attention_work_size(cc, n, n, H, d / H));
    if (!h || !qkv || !o || !work) return;
    layer_norm(cc, x, n, d, CLIP_LN_EPS, l->ln1_w.f32, l->ln1_b.f32, h);
    const float *q = qkv, *k = qkv + d, *v = qkv + 2 * d;
    int ld = 3 * d;
    if (l->qkv_w.numel) {
        linear(cc, h, n, d, compute_weight(cc, &l->qkv_w), l->qkv_b.f32, 3 * d, qkv);
    } else { /* separate projections into [n, d] blocks */
        float *qs = qkv, *ks = qkv + (size_t)n * d, *vs = qkv + 2 * (size_t)n * d;
        linear(cc, h, n, d, compute_weight(cc, &l->q_w), l->q_b.f32, d, qs);
        linear(cc, h, n, d, compute_weight(cc, &l->k_w), l->k_b.f32, d, ks);
        linear(cc, h, n, d, compute_weight(cc, &l->v_w), l->v_b.f32, d, vs);
        q = qs;
        k = ks;
        v = vs;
        ld = d;
    }
    attention(cc, q, ld, k, ld, v, ld, n, n, H, d / H, 1, o, work);
    linear(cc, o, n, d, compute_weight(cc, &l->out_w), l->out_b.f32, d, h);
    add_inplace(cc, x, h, (size_t)n * d);
    compute_reset(cc, mark);
}

/* x[n, d] += fc2(act(fc1(LN2(x)))), act = quick_gelu (CLIP) or GELU (OpenCLIP). */
static void mlp_block(compute *cc, const text_encoder *te, const text_layer *l, float *x) {
    const int n = te->c.positions, d = te->c.hidden, f = te->c.mlp;
    arena_mark mark = compute_mark(cc);
    float *h = compute_alloc(cc, (size_t)n * d); /* [n, d] */
    float *u = compute_alloc(cc, (size_t)n * f); /* [n, mlp] */
    if (!h || !u) return;
    layer_norm(cc, x, n, d, CLIP_LN_EPS, l->ln2_w.f32, l->ln2_b.f32, h);
    linear(cc, h, n, d, compute_weight(cc, &l->fc1_w), l->fc1_b.f32, f, u);
    if (te->c.exact_gelu)
        gelu_inplace(cc, u, (size_t)n * f);
    else
        quick_gelu_inplace(cc, u, (size_t)n * f);
    linear(cc, u, n, f, compute_weight(cc, &l->fc2_w), l->fc2_b.f32, d, h);
    add_inplace(cc, x, h, (size_t)n * d);
    compute_reset(cc, mark);
}

/* x[i] = token_embedding[ids[i]] (or the given vector) + position_embedding[i]. x[positions, hidden]. */
static void embed(compute *cc, const text_encoder *te, const text_input *in, float *x) {
    const int d = te->c.hidden;
    float *pos = compute_alloc(cc, (size_t)d); /* [d] one position row */
    if (!pos) return;
    for (int i = 0; i < te->c.positions; i++) {
        const float *vec = in->vectors ? in->vectors[i] : NULL;
        int id = in->ids[i] >= 0 && in->ids[i] < te->c.vocab ? in->ids[i] : CLIP_EOS; /* out of range: <|endoftext|> */
        if (vec)
            memcpy(x + (size_t)i * d, vec, (size_t)d * sizeof(float));
        else
            weight_rows_f32(&te->tok_emb, (int64_t)id * d, d, x + (size_t)i * d, 1);
        weight_rows_f32(&te->pos_emb, (int64_t)i * d, d, pos, 1);
        add_inplace(cc, x + (size_t)i * d, pos, (size_t)d);
    }
}

/* pooled[P] = LN_final(x[eos]) · projection, eos = the first <|endoftext|> of ids (x: the last layer's output). */
static void pool(compute *cc, const text_encoder *te, const int *ids, const float *x, float *pooled) {
    const int d = te->c.hidden;
    int eos = 0;
    while (eos < te->c.positions - 1 && ids[eos] != CLIP_EOS) eos++;
    float *row = compute_alloc(cc, (size_t)d); /* [1, d] */
    if (!row) return;
    layer_norm(cc, x + (size_t)eos * d, 1, d, CLIP_LN_EPS, te->final_w.f32, te->final_b.f32, row);
    matmul(cc, row, compute_weight(cc, &te->projection), pooled, 1, te->c.projection, d, 1.0f, 0.0f);
}

sd_status text_encoder_forward(compute *cc, const text_encoder *te, const text_input *in, const text_output *out) {
    const int n = te->c.positions, d = te->c.hidden;
    const int run = out->pooled ? te->c.layers : out->layers; /* layers to run */
    if (out->layers < 1 || out->layers > te->c.layers || (out->pooled && !te->c.projection)) return SD_ERR_RUNTIME;
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    float *x = out->pooled ? compute_alloc(cc, (size_t)n * d) : out->context; /* [n, d] the running hidden state */
    if (!x) return cc->status;
    embed(cc, te, in, x);
    for (int l = 0; l < run && !compute_stopped(cc); l++) {
        attention_block(cc, te, &te->layers[l], x);
        mlp_block(cc, te, &te->layers[l], x);
        if (l + 1 == out->layers && x != out->context) memcpy(out->context, x, (size_t)n * d * sizeof(float));
    }
    if (out->pooled && !compute_stopped(cc)) pool(cc, te, in->ids, x, out->pooled);
    if (out->final_norm)
        layer_norm(cc, out->context, n, d, CLIP_LN_EPS, te->final_w.f32, te->final_b.f32, out->context);
    compute_reset(cc, mark);
    return cc->status;
}
