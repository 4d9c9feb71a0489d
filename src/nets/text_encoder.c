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

static const text_names CLIP_NAMES = {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
                                      "encoder.layers.%d.", "final_layer_norm",
                                      "layer_norm1", "self_attn.out_proj", "layer_norm2", "mlp.fc1", "mlp.fc2"};
static const text_names OPENCLIP_NAMES = {"token_embedding.weight", "positional_embedding", "transformer.resblocks.%d.",
                                          "ln_final", "ln_1", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"};

/* NAME.weight [rows, cols] (cols 0: a vector [rows]) into *w and NAME.bias [rows] into *b. */
static void load_pair(wloader *L, const char *name, int rows, int cols, weight *w, weight *b) {
    char n[128];
    snprintf(n, sizeof n, "%.100s.weight", name);
    *w = cols ? wl_mat(L, n, rows, cols) : wl_vec(L, n, rows);
    snprintf(n, sizeof n, "%.100s.bias", name);
    *b = wl_vec(L, n, rows);
}

static void load_layer(wloader *L, const text_names *nm, text_kind kind, text_layer *l, int d, int mlp) {
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
    for (int k = 0; k < L->m->file.n_tensors; k++) {
        const char *name = L->m->file.tensors[k].name;
        if (strncmp(name, stem, len) == 0) {
            int i = atoi(name + len);
            if (i >= 0 && i < 1000 && i + 1 > most) most = i + 1;
        }
    }
    return most;
}

int text_encoder_load(text_encoder *te, sd_model *m, char *err, size_t errlen) {
    memset(te, 0, sizeof *te);
    const model_desc *md = &m->d;
    const text_names *nm = md->text == TEXT_OPENCLIP ? &OPENCLIP_NAMES : &CLIP_NAMES;
    wloader L = {m, err, errlen, 0, ""};
    wl_prefix(&L, "%s", md->text_prefix);
    char fc1_name[96];
    snprintf(fc1_name, sizeof fc1_name, nm->layer, 0);
    snprintf(fc1_name + strlen(fc1_name), sizeof fc1_name - strlen(fc1_name), "%s.weight", nm->fc1);
    const st_tensor *tok = sizing_tensor(&L, nm->tok), *pos = tok ? sizing_tensor(&L, nm->pos) : NULL;
    const st_tensor *fc1 = pos ? sizing_tensor(&L, fc1_name) : NULL;
    if (!fc1) return -1;
    text_config *c = &te->c;
    c->vocab = (int)tok->shape[0];
    c->hidden = (int)tok->shape[1];
    c->positions = (int)pos->shape[0];
    c->mlp = (int)fc1->shape[0];
    c->heads = md->text_heads;
    c->exact_gelu = md->text == TEXT_OPENCLIP;
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
        return -1;
    }
    if (c->vocab < 49408) { wl_fail(&L, "text encoder vocabulary %d is smaller than CLIP's 49408", c->vocab); return -1; }
    if (c->positions != 77) { wl_fail(&L, "text encoder has %d positions, expected 77", c->positions); return -1; }
    if (c->hidden % c->heads) { wl_fail(&L, "text hidden size %d is not divisible by %d heads", c->hidden, c->heads); return -1; }
    if (c->layers <= md->text_skip) { wl_fail(&L, "text encoder has %d layers, the model uses %d more than that", c->layers, md->text_skip + 1 - c->layers); return -1; }
    te->tok_emb = wl_mat(&L, nm->tok, c->vocab, c->hidden);
    te->pos_emb = wl_mat(&L, nm->pos, c->positions, c->hidden);
    load_pair(&L, nm->final_ln, c->hidden, 0, &te->final_w, &te->final_b);
    te->layers = calloc((size_t)c->layers + 1, sizeof *te->layers);
    if (!te->layers) { wl_fail(&L, "out of memory"); return -1; }
    for (int i = 0; i < c->layers && !L.failed; i++) {
        char layer[64];
        snprintf(layer, sizeof layer, nm->layer, i);
        wl_prefix(&L, "%s%s", md->text_prefix, layer);
        load_layer(&L, nm, md->text, &te->layers[i], c->hidden, c->mlp);
    }
    return L.failed ? -1 : 0;
}

void text_encoder_free(text_encoder *te) {
    free(te->layers);
    memset(te, 0, sizeof *te);
}

/* x[n, d] += out_proj(attention(LN1(x))) with a causal mask. */
static void attention_block(const text_encoder *te, const text_layer *l, float *x, arena *a, float *scratch) {
    const int n = te->c.positions, d = te->c.hidden, H = te->c.heads;
    arena_mark mark = arena_get_mark(a);
    float *h = arena_alloc(a, (size_t)n * d);       /* [n, d] */
    float *qkv = arena_alloc(a, (size_t)n * 3 * d); /* [n, 3d]: q | k | v side by side */
    float *o = arena_alloc(a, (size_t)n * d);       /* [n, d] */
    float *work = arena_alloc(a, attention_work_size(n, n, H, d / H));
    if (a->failed) return;
    layer_norm(x, n, d, CLIP_LN_EPS, l->ln1_w.f32, l->ln1_b.f32, h);
    const float *q = qkv, *k = qkv + d, *v = qkv + 2 * d;
    int ld = 3 * d;
    if (l->qkv_w.numel) {
        linear(h, n, d, weight_f32(&l->qkv_w, scratch), l->qkv_b.f32, 3 * d, qkv);
    } else { /* separate projections into [n, d] blocks */
        float *qs = qkv, *ks = qkv + (size_t)n * d, *vs = qkv + 2 * (size_t)n * d;
        linear(h, n, d, weight_f32(&l->q_w, scratch), l->q_b.f32, d, qs);
        linear(h, n, d, weight_f32(&l->k_w, scratch), l->k_b.f32, d, ks);
        linear(h, n, d, weight_f32(&l->v_w, scratch), l->v_b.f32, d, vs);
        q = qs; k = ks; v = vs; ld = d;
    }
    attention(q, ld, k, ld, v, ld, n, n, H, d / H, 1, o, work);
    linear(o, n, d, weight_f32(&l->out_w, scratch), l->out_b.f32, d, h);
    add_inplace(x, h, (size_t)n * d);
    arena_reset(a, mark);
}

/* x[n, d] += fc2(act(fc1(LN2(x)))), act = quick_gelu (CLIP) or GELU (OpenCLIP). */
static void mlp_block(const text_encoder *te, const text_layer *l, float *x, arena *a, float *scratch) {
    const int n = te->c.positions, d = te->c.hidden, f = te->c.mlp;
    arena_mark mark = arena_get_mark(a);
    float *h = arena_alloc(a, (size_t)n * d);   /* [n, d] */
    float *u = arena_alloc(a, (size_t)n * f);   /* [n, mlp] */
    if (a->failed) return;
    layer_norm(x, n, d, CLIP_LN_EPS, l->ln2_w.f32, l->ln2_b.f32, h);
    linear(h, n, d, weight_f32(&l->fc1_w, scratch), l->fc1_b.f32, f, u);
    if (te->c.exact_gelu) gelu_inplace(u, (size_t)n * f);
    else quick_gelu_inplace(u, (size_t)n * f);
    linear(u, n, f, weight_f32(&l->fc2_w, scratch), l->fc2_b.f32, d, h);
    add_inplace(x, h, (size_t)n * d);
    arena_reset(a, mark);
}

int text_encoder_forward(const text_encoder *te, const int *ids, int n_layers, float *hidden, arena *a, float *scratch) {
    const int n = te->c.positions, d = te->c.hidden;
    if (n_layers < 1 || n_layers > te->c.layers) return -1;
    arena_mark mark = arena_get_mark(a);
    float *pos = arena_alloc(a, (size_t)d);  /* [d] one position row */
    if (!pos) return -1;
    for (int i = 0; i < n; i++) { /* x = token_embedding[id] + position_embedding[i] */
        int id = ids[i] >= 0 && ids[i] < te->c.vocab ? ids[i] : CLIP_EOS; /* out-of-range ids read as <|endoftext|> */
        weight_rows_f32(&te->tok_emb, (int64_t)id * d, d, hidden + (size_t)i * d);
        weight_rows_f32(&te->pos_emb, (int64_t)i * d, d, pos);
        add_inplace(hidden + (size_t)i * d, pos, (size_t)d);
    }
    for (int l = 0; l < n_layers; l++) {
        attention_block(te, &te->layers[l], hidden, a, scratch);
        mlp_block(te, &te->layers[l], hidden, a, scratch);
        if (a->failed) return -1;
    }
    layer_norm(hidden, n, d, CLIP_LN_EPS, te->final_w.f32, te->final_b.f32, hidden);
    arena_reset(a, mark);
    return 0;
}
