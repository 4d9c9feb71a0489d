/* text_encoder.c - see text_encoder.h. Follows transformers' CLIPTextTransformer. */
#include "text_encoder.h"

#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define CLIP_LN_EPS 1e-5f

static void load_layer(wloader *L, text_layer *l, int d, int mlp) {
    l->ln1_w = wl_vec(L, "layer_norm1.weight", d);
    l->ln1_b = wl_vec(L, "layer_norm1.bias", d);
    l->q_w = wl_mat(L, "self_attn.q_proj.weight", d, d);
    l->q_b = wl_vec(L, "self_attn.q_proj.bias", d);
    l->k_w = wl_mat(L, "self_attn.k_proj.weight", d, d);
    l->k_b = wl_vec(L, "self_attn.k_proj.bias", d);
    l->v_w = wl_mat(L, "self_attn.v_proj.weight", d, d);
    l->v_b = wl_vec(L, "self_attn.v_proj.bias", d);
    l->out_w = wl_mat(L, "self_attn.out_proj.weight", d, d);
    l->out_b = wl_vec(L, "self_attn.out_proj.bias", d);
    l->ln2_w = wl_vec(L, "layer_norm2.weight", d);
    l->ln2_b = wl_vec(L, "layer_norm2.bias", d);
    l->fc1_w = wl_mat(L, "mlp.fc1.weight", mlp, d);
    l->fc1_b = wl_vec(L, "mlp.fc1.bias", mlp);
    l->fc2_w = wl_mat(L, "mlp.fc2.weight", d, mlp);
    l->fc2_b = wl_vec(L, "mlp.fc2.bias", d);
}

int text_encoder_load(text_encoder *te, sd_model *m, char *err, size_t errlen) {
    memset(te, 0, sizeof *te);
    wloader L = {m, err, errlen, 0, ""};
    wl_prefix(&L, SD1_TEXT_PREFIX);
    const st_tensor *tok = wl_find(&L, "embeddings.token_embedding.weight");
    const st_tensor *pos = wl_find(&L, "embeddings.position_embedding.weight");
    const st_tensor *fc1 = wl_find(&L, "encoder.layers.0.mlp.fc1.weight");
    if (!tok || tok->ndim != 2) { wl_fail(&L, "missing or malformed tensor '" SD1_TEXT_PREFIX "embeddings.token_embedding.weight'"); return -1; }
    if (!pos || pos->ndim != 2) { wl_fail(&L, "missing or malformed tensor '" SD1_TEXT_PREFIX "embeddings.position_embedding.weight'"); return -1; }
    if (!fc1 || fc1->ndim != 2) { wl_fail(&L, "missing or malformed tensor '" SD1_TEXT_PREFIX "encoder.layers.0.mlp.fc1.weight'"); return -1; }
    text_config *c = &te->c;
    c->vocab = (int)tok->shape[0];
    c->hidden = (int)tok->shape[1];
    c->positions = (int)pos->shape[0];
    c->mlp = (int)fc1->shape[0];
    c->heads = m->text_heads;
    while (c->layers < 1000) {
        char name[96];
        snprintf(name, sizeof name, "encoder.layers.%d.layer_norm1.weight", c->layers);
        if (!wl_has(&L, name)) break;
        c->layers++;
    }
    if (c->vocab < 49408) { wl_fail(&L, "text encoder vocabulary %d is smaller than CLIP's 49408", c->vocab); return -1; }
    if (c->positions != 77) { wl_fail(&L, "text encoder has %d positions, expected 77", c->positions); return -1; }
    if (c->hidden % c->heads) { wl_fail(&L, "text hidden size %d is not divisible by %d heads", c->hidden, c->heads); return -1; }
    te->tok_emb = wl_mat(&L, "embeddings.token_embedding.weight", c->vocab, c->hidden);
    te->pos_emb = wl_mat(&L, "embeddings.position_embedding.weight", c->positions, c->hidden);
    te->final_w = wl_vec(&L, "final_layer_norm.weight", c->hidden);
    te->final_b = wl_vec(&L, "final_layer_norm.bias", c->hidden);
    te->layers = calloc((size_t)c->layers + 1, sizeof *te->layers);
    if (!te->layers) { wl_fail(&L, "out of memory"); return -1; }
    for (int i = 0; i < c->layers; i++) {
        wl_prefix(&L, SD1_TEXT_PREFIX "encoder.layers.%d.", i);
        load_layer(&L, &te->layers[i], c->hidden, c->mlp);
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
    float *h = arena_alloc(a, (size_t)n * d);   /* [n, d] */
    float *q = arena_alloc(a, (size_t)n * d);   /* [n, d] */
    float *k = arena_alloc(a, (size_t)n * d);   /* [n, d] */
    float *v = arena_alloc(a, (size_t)n * d);   /* [n, d] */
    float *o = arena_alloc(a, (size_t)n * d);   /* [n, d] */
    float *work = arena_alloc(a, attention_work_size(n, n, H, d / H));
    if (a->failed) return;
    layer_norm(x, n, d, CLIP_LN_EPS, l->ln1_w.f32, l->ln1_b.f32, h);
    linear(h, n, d, weight_f32(&l->q_w, scratch), l->q_b.f32, d, q);
    linear(h, n, d, weight_f32(&l->k_w, scratch), l->k_b.f32, d, k);
    linear(h, n, d, weight_f32(&l->v_w, scratch), l->v_b.f32, d, v);
    attention(q, d, k, d, v, d, n, n, H, d / H, 1, o, work);
    linear(o, n, d, weight_f32(&l->out_w, scratch), l->out_b.f32, d, h);
    add_inplace(x, h, (size_t)n * d);
    arena_reset(a, mark);
}

/* x[n, d] += fc2(quick_gelu(fc1(LN2(x)))). */
static void mlp_block(const text_encoder *te, const text_layer *l, float *x, arena *a, float *scratch) {
    const int n = te->c.positions, d = te->c.hidden, f = te->c.mlp;
    arena_mark mark = arena_get_mark(a);
    float *h = arena_alloc(a, (size_t)n * d);   /* [n, d] */
    float *u = arena_alloc(a, (size_t)n * f);   /* [n, mlp] */
    if (a->failed) return;
    layer_norm(x, n, d, CLIP_LN_EPS, l->ln2_w.f32, l->ln2_b.f32, h);
    linear(h, n, d, weight_f32(&l->fc1_w, scratch), l->fc1_b.f32, f, u);
    quick_gelu_inplace(u, (size_t)n * f);
    linear(u, n, f, weight_f32(&l->fc2_w, scratch), l->fc2_b.f32, d, h);
    add_inplace(x, h, (size_t)n * d);
    arena_reset(a, mark);
}

int text_encoder_forward(const text_encoder *te, const int *ids, float *hidden, arena *a, float *scratch) {
    const int n = te->c.positions, d = te->c.hidden;
    arena_mark mark = arena_get_mark(a);
    float *pos = arena_alloc(a, (size_t)d);  /* [d] one position row */
    if (!pos) return -1;
    for (int i = 0; i < n; i++) { /* x = token_embedding[id] + position_embedding[i] */
        int id = ids[i] >= 0 && ids[i] < te->c.vocab ? ids[i] : CLIP_EOS; /* out-of-range ids read as <|endoftext|> */
        weight_rows_f32(&te->tok_emb, (int64_t)id * d, d, hidden + (size_t)i * d);
        weight_rows_f32(&te->pos_emb, (int64_t)i * d, d, pos);
        add_inplace(hidden + (size_t)i * d, pos, (size_t)d);
    }
    for (int l = 0; l < te->c.layers; l++) {
        attention_block(te, &te->layers[l], hidden, a, scratch);
        mlp_block(te, &te->layers[l], hidden, a, scratch);
        if (a->failed) return -1;
    }
    layer_norm(hidden, n, d, CLIP_LN_EPS, te->final_w.f32, te->final_b.f32, hidden);
    arena_reset(a, mark);
    return 0;
}
