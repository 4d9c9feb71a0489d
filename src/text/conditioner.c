/* conditioner.c - see conditioner.h. References: AUTOMATIC1111 modules/sd_hijack_clip.py (tokenize_line,
 * process_tokens). */
#include "text/conditioner.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    prompt_chunk *chunks;
    int n, cap;
    int ids[CHUNK_TOKENS];  /* the chunk being filled */
    float w[CHUNK_TOKENS];
    int len, last_comma;    /* tokens in it; position of its last comma (-1: none) */
    int pad_id;
} chunker;

/* Closes the current chunk: EOS padding to 75 (the pad id after the first EOS), framed as BOS + 75 + EOS. */
static int next_chunk(chunker *k) {
    if (k->n == k->cap) {
        int cap = k->cap ? 2 * k->cap : 4;
        prompt_chunk *c = realloc(k->chunks, (size_t)cap * sizeof *c);
        if (!c) return -1;
        k->chunks = c;
        k->cap = cap;
    }
    prompt_chunk *c = &k->chunks[k->n++];
    c->ids[0] = CLIP_BOS;
    c->weights[0] = 1.0f;
    for (int i = 0; i < CHUNK_TOKENS + 1; i++) {
        c->ids[i + 1] = i < k->len ? k->ids[i] : i == k->len ? CLIP_EOS : k->pad_id;
        c->weights[i + 1] = i < k->len ? k->w[i] : 1.0f;
    }
    k->len = 0;
    k->last_comma = -1;
    return 0;
}

/* Adds one token (AUTOMATIC1111's loop body: comma bookkeeping, back-tracking, a full chunk closes). */
static int add_token(chunker *k, int id, float w) {
    if (id == CLIP_COMMA) {
        k->last_comma = k->len;
    } else if (k->len == CHUNK_TOKENS && k->last_comma != -1 && k->len - k->last_comma <= COMMA_BACKTRACK) {
        int at = k->last_comma + 1, moved = k->len - at, ids[CHUNK_TOKENS];
        float ws[CHUNK_TOKENS];
        memcpy(ids, k->ids + at, (size_t)moved * sizeof(int));
        memcpy(ws, k->w + at, (size_t)moved * sizeof(float));
        k->len = at;
        if (next_chunk(k) != 0) return -1;
        memcpy(k->ids, ids, (size_t)moved * sizeof(int));
        memcpy(k->w, ws, (size_t)moved * sizeof(float));
        k->len = moved;
    }
    if (k->len == CHUNK_TOKENS && next_chunk(k) != 0) return -1;
    k->ids[k->len] = id;
    k->w[k->len++] = w;
    return 0;
}

int conditioner_parse(const tokenizer *tok, const char *text, prompt_parse *pp, char *err, size_t errlen) {
    int none;
    memset(pp, 0, sizeof *pp);
    if (tokenizer_encode(tok, text, &none, 0, err, errlen) < 0) return -1; /* decodes the whole text, keeps no id */
    if (prompt_parse_text(text, pp) != 0) { snprintf(err, errlen, "prompt: out of memory parsing"); return -2; }
    return 0;
}

int conditioner_chunks(const tokenizer *tok, const prompt_parse *pp, int pad_id, prompt_chunk **out, int *n,
                       char *err, size_t errlen) {
    chunker k = {NULL, 0, 0, {0}, {0}, 0, -1, pad_id};
    int rc = 0;
    for (int s = 0; s < pp->n && rc == 0; s++) {
        const prompt_span *sp = &pp->spans[s];
        if (prompt_span_is_break(sp)) { rc = next_chunk(&k) ? -2 : 0; continue; }
        size_t cap = strlen(sp->text) + 1; /* every token takes at least one byte */
        int *ids = malloc(cap * sizeof(int));
        long m = ids ? tokenizer_encode(tok, sp->text, ids, (long)cap, err, errlen) : -2;
        if (m < 0) rc = (int)(m == -2 ? -2 : -1);
        for (long i = 0; i < m && rc == 0; i++)
            if (add_token(&k, ids[i], (float)sp->weight) != 0) rc = -2;
        free(ids);
    }
    if (rc == 0 && (k.len > 0 || k.n == 0) && next_chunk(&k) != 0) rc = -2;
    if (rc != 0) { free(k.chunks); return rc; }
    *out = k.chunks;
    *n = k.n;
    return 0;
}

/* AUTOMATIC1111's emphasis: z *= weight per token, then z *= mean(z before) / mean(z after). z[77, D]. */
static void apply_weights(float *z, const float *w, int D) {
    int weighted = 0;
    for (int i = 0; i < CLIP_CONTEXT; i++) weighted |= w[i] != 1.0f;
    if (!weighted) return; /* a no-op in exact arithmetic: skipped so that plain prompts stay bit-exact */
    double before = 0, after = 0;
    for (size_t j = 0; j < (size_t)CLIP_CONTEXT * D; j++) before += z[j];
    for (int i = 0; i < CLIP_CONTEXT; i++)
        for (int j = 0; j < D; j++) {
            z[(size_t)i * D + j] *= w[i];
            after += z[(size_t)i * D + j];
        }
    float restore = (float)(before / after);
    for (size_t j = 0; j < (size_t)CLIP_CONTEXT * D; j++) z[j] *= restore;
}

int conditioner_prepare(const conditioner *c, const char *text, const char *what, prompt_chunk **chunks, int *n, char *err,
                        size_t errlen) {
    prompt_parse pp;
    char terr[256];
    *chunks = NULL;
    *n = 0;
    int rc = conditioner_parse(c->tok, text, &pp, terr, sizeof terr);
    if (rc == 0) rc = conditioner_chunks(c->tok, &pp, c->d->pad_id, chunks, n, terr, sizeof terr);
    prompt_parse_free(&pp);
    if (rc == -1) snprintf(err, errlen, "%s: %s", what, strchr(terr, ':') ? strchr(terr, ':') + 2 : terr);
    return rc;
}

int conditioner_encode(const conditioner *c, const char *text, int clip_skip, const char *what, conditioning *out,
                       char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const int width = c->te->c.hidden, layers = c->te->c.layers - c->d->text_skip - (clip_skip - 1);
    if (clip_skip < 1 || layers < 1) {
        snprintf(err, errlen, "clip-skip: %d leaves no text-encoder layer (the model uses %d)", clip_skip,
                 c->te->c.layers - c->d->text_skip);
        return -1;
    }
    prompt_chunk *chunks = NULL;
    int n = 0;
    int rc = conditioner_prepare(c, text, what, &chunks, &n, err, errlen);
    if (rc != 0) return rc;
    out->len = CLIP_CONTEXT * n;
    out->width = width;
    out->ctx = malloc((size_t)out->len * width * sizeof(float)); /* [77·n, width] */
    for (int i = 0; i < n && out->ctx && rc == 0; i++) {
        float *z = out->ctx + (size_t)i * CLIP_CONTEXT * width;
        if (text_encoder_forward(c->te, chunks[i].ids, layers, z, c->a, c->scratch) != 0) rc = -2;
        else apply_weights(z, chunks[i].weights, width);
    }
    free(chunks);
    if (!out->ctx || rc != 0) {
        conditioning_free(out);
        snprintf(err, errlen, "out of memory in the text encoder");
        return -2;
    }
    return 0;
}

void conditioning_free(conditioning *cd) {
    free(cd->ctx);
    memset(cd, 0, sizeof *cd);
}

/* A malloc'd copy of cd (ctx NULL without memory). */
static conditioning copy_conditioning(const conditioning *cd) {
    conditioning out = *cd;
    size_t bytes = (size_t)cd->len * cd->width * sizeof(float);
    if ((out.ctx = malloc(bytes))) memcpy(out.ctx, cd->ctx, bytes);
    return out;
}

int conditioner_encode_cached(const conditioner *c, cond_cache *cache, const char *text, int clip_skip, const char *what,
                              conditioning *out, char *err, size_t errlen) {
    for (int i = 0; i < cache->n; i++)
        if (cache->clip_skip[i] == clip_skip && !strcmp(cache->text[i], text)) {
            *out = copy_conditioning(&cache->cd[i]);
            if (out->ctx) return 0;
            snprintf(err, errlen, "out of memory");
            return -2;
        }
    int rc = conditioner_encode(c, text, clip_skip, what, out, err, errlen);
    if (rc != 0) return rc;
    char *copy = strdup(text);
    conditioning kept = copy_conditioning(out);
    if (!copy || !kept.ctx) { free(copy); free(kept.ctx); return 0; } /* not kept: the next use encodes again */
    int slot = cache->n < COND_CACHE_SIZE ? cache->n++ : cache->next++ % COND_CACHE_SIZE;
    free(cache->text[slot]);
    conditioning_free(&cache->cd[slot]);
    cache->text[slot] = copy;
    cache->clip_skip[slot] = clip_skip;
    cache->cd[slot] = kept;
    return 0;
}

void cond_cache_free(cond_cache *cache) {
    for (int i = 0; i < cache->n; i++) { free(cache->text[i]); conditioning_free(&cache->cd[i]); }
    memset(cache, 0, sizeof *cache);
}

int conditioner_describe(const conditioner *c, const char *text, const char *what, FILE *f) {
    prompt_parse pp;
    prompt_chunk *chunks = NULL;
    int n = 0;
    char err[256];
    if (conditioner_parse(c->tok, text, &pp, err, sizeof err) != 0) return -1;
    int rc = conditioner_chunks(c->tok, &pp, c->d->pad_id, &chunks, &n, err, sizeof err);
    if (rc == 0 && f) {
        fprintf(f, "sd: %s: %d chunk%s of 75 tokens;", what, n, n == 1 ? "" : "s");
        for (int i = 0; i < pp.n; i++) {
            if (prompt_span_is_break(&pp.spans[i])) fprintf(f, " BREAK");
            else fprintf(f, " \"%s\" x%.4g", pp.spans[i].text, pp.spans[i].weight);
        }
        fprintf(f, "\n");
        for (int i = 0; i < n; i++) {
            int tokens = 0;
            while (tokens < CHUNK_TOKENS && chunks[i].ids[tokens + 1] != CLIP_EOS) tokens++;
            fprintf(f, "sd: %s: chunk %d: %d tokens\n", what, i + 1, tokens);
        }
    }
    int unclosed = pp.unclosed;
    free(chunks);
    prompt_parse_free(&pp);
    return rc == 0 ? unclosed : -1;
}
