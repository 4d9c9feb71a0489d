/* conditioner.c - see conditioner.h. References: AUTOMATIC1111 modules/sd_hijack_clip.py (tokenize_line,
 * process_tokens). */
#include "text/conditioner.h"

#include <stdlib.h>
#include <string.h>

/* One position of a chunk: a token, or row `row` of an embedding's vectors (id EMB_SLOT). */
typedef struct {
    int id;
    float w;
    const embedding *emb;
    int row;
} slot;

typedef struct {
    prompt_chunk *chunks;
    int n, cap;
    slot at[CHUNK_TOKENS]; /* the chunk being filled */
    int len, last_comma;   /* positions in it; position of its last comma (-1: none) */
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
    memset(c, 0, sizeof *c);
    c->tokens = k->len;
    c->ids[0] = CLIP_BOS;
    c->weights[0] = 1.0f;
    for (int i = 0; i < CHUNK_TOKENS + 1; i++) {
        const slot *t = i < k->len ? &k->at[i] : NULL;
        c->ids[i + 1] = t ? t->id : i == k->len ? CLIP_EOS : k->pad_id;
        c->weights[i + 1] = t ? t->w : 1.0f;
        c->emb[i + 1] = t ? t->emb : NULL;
        c->emb_row[i + 1] = t ? t->row : 0;
        c->embedded |= t && t->emb;
    }
    k->len = 0;
    k->last_comma = -1;
    return 0;
}

/* Before a token or an embedding starting with token id: AUTOMATIC1111's loop head (comma bookkeeping, moving
 * the words after a comma of the last 20 positions to the next chunk, a full chunk closes). */
static int make_room(chunker *k, int id) {
    if (id == CLIP_COMMA) {
        k->last_comma = k->len;
    } else if (k->len == CHUNK_TOKENS && k->last_comma != -1 && k->len - k->last_comma <= COMMA_BACKTRACK) {
        int at = k->last_comma + 1, moved = k->len - at;
        slot keep[CHUNK_TOKENS];
        memcpy(keep, k->at + at, (size_t)moved * sizeof *keep);
        k->len = at;
        if (next_chunk(k) != 0) return -1;
        memcpy(k->at, keep, (size_t)moved * sizeof *keep);
        k->len = moved;
    }
    if (k->len == CHUNK_TOKENS && next_chunk(k) != 0) return -1;
    return 0;
}

static int add_token(chunker *k, int id, float w) {
    if (make_room(k, id) != 0) return -1;
    k->at[k->len++] = (slot){id, w, NULL, 0};
    return 0;
}

/* An embedding's N vectors, all in one chunk: a new chunk when they do not fit in this one. */
static int add_embedding(chunker *k, const embedding *e, float w) {
    if (make_room(k, e->ids[0]) != 0) return -1;
    if (k->len + e->n_vectors > CHUNK_TOKENS && next_chunk(k) != 0) return -1;
    for (int r = 0; r < e->n_vectors; r++) k->at[k->len++] = (slot){EMB_SLOT, w, e, r};
    return 0;
}

/* The tokens of one span, embeddings spliced in. Returns 0, -1 with err set (an unusable embedding), -2. */
static int add_span(chunker *k, const int *ids, long m, float w, const embedding_set *emb, char *err, size_t errlen) {
    for (long i = 0; i < m;) {
        const embedding *e = embeddings_match(emb, ids + i, (int)(m - i));
        if (e && e->unusable) {
            snprintf(err, errlen, "prompt: embedding '%s' (%s) cannot be used with this model: %s", e->name, e->path,
                     e->unusable);
            return -1;
        }
        if (e ? add_embedding(k, e, w) : add_token(k, ids[i], w)) return -2;
        i += e ? e->n_ids : 1;
    }
    return 0;
}

int conditioner_parse(const tokenizer *tok, const char *text, prompt_parse *pp, char *err, size_t errlen) {
    int none;
    memset(pp, 0, sizeof *pp);
    if (tokenizer_encode(tok, text, &none, 0, err, errlen) < 0) return -1; /* decodes the whole text, keeps no id */
    if (prompt_parse_text(text, pp) != 0) {
        snprintf(err, errlen, "prompt: out of memory parsing");
        return -2;
    }
    return 0;
}

int conditioner_chunks(const tokenizer *tok, const prompt_parse *pp, int pad_id, const embedding_set *emb,
                       prompt_chunk **out, int *n, char *err, size_t errlen) {
    chunker k = {NULL, 0, 0, {{0}}, 0, -1, pad_id};
    int rc = 0;
    for (int s = 0; s < pp->n && rc == 0; s++) {
        const prompt_span *sp = &pp->spans[s];
        if (prompt_span_is_break(sp)) {
            rc = next_chunk(&k) ? -2 : 0;
            continue;
        }
        size_t cap = strlen(sp->text) + 1; /* every token takes at least one byte */
        int *ids = malloc(cap * sizeof(int));
        long m = ids ? tokenizer_encode(tok, sp->text, ids, (long)cap, err, errlen) : -2;
        if (m < 0) rc = (int)(m == -2 ? -2 : -1);
        if (rc == 0) rc = add_span(&k, ids, m, (float)sp->weight, emb, err, errlen);
        free(ids);
    }
    if (rc == 0 && (k.len > 0 || k.n == 0) && next_chunk(&k) != 0) rc = -2;
    if (rc != 0) {
        free(k.chunks);
        return rc;
    }
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

int conditioner_prepare(const conditioner *c, const char *text, const char *what, prompt_chunk **chunks, int *n,
                        char *err, size_t errlen) {
    prompt_parse pp;
    char terr[256];
    *chunks = NULL;
    *n = 0;
    int rc = conditioner_parse(c->tok, text, &pp, terr, sizeof terr);
    if (rc == 0) rc = conditioner_chunks(c->tok, &pp, c->d->text[0].pad_id, c->emb, chunks, n, terr, sizeof terr);
    prompt_parse_free(&pp);
    if (rc == -1) snprintf(err, errlen, "%s: %s", what, strchr(terr, ':') ? strchr(terr, ':') + 2 : terr);
    return rc;
}

/* The chunk's ids with the encoder's padding after the first EOS. ids[77]. */
static void chunk_ids(const prompt_chunk *k, int pad_id, int *ids) {
    memcpy(ids, k->ids, sizeof k->ids);
    for (int i = k->tokens + 2; i < CLIP_CONTEXT; i++) ids[i] = pad_id;
}

/* Layers of encoder e the context takes with this clip skip (< 1: none left). */
static int context_layers(const conditioner *c, int e, int clip_skip) {
    return c->te[e].c.layers - c->d->text[e].skip - (clip_skip - 1);
}

/* z[77, width_e] (rows ld floats apart in ctx) = encoder e's output for chunk k, weighted; pooled when not NULL. */
static sd_status encode_chunk(const conditioner *c, int e, const prompt_chunk *k, int clip_skip, float *ctx, int ld,
                              float *pooled) {
    const text_encoder *te = &c->te[e];
    const int w = te->c.hidden;
    int ids[CLIP_CONTEXT];
    const float *vectors[CLIP_CONTEXT]; /* the embeddings' rows for this encoder, or NULL: the token's own */
    chunk_ids(k, c->d->text[e].pad_id, ids);
    for (int i = 0; i < CLIP_CONTEXT; i++)
        vectors[i] = k->emb[i] ? k->emb[i]->vectors[e] + (size_t)k->emb_row[i] * w : NULL;
    const text_input in = {ids, k->embedded ? vectors : NULL};
    float *z = ld == w ? ctx : malloc((size_t)CLIP_CONTEXT * w * sizeof(float)); /* [77, w] */
    if (!z) return SD_ERR_NOMEM;
    const text_output out = {context_layers(c, e, clip_skip), c->d->text[e].final_norm, z, pooled};
    sd_status st = text_encoder_forward(c->cc, te, &in, &out);
    if (st == SD_OK) apply_weights(z, k->weights, w);
    if (z != ctx) {
        for (int i = 0; st == SD_OK && i < CLIP_CONTEXT; i++)
            memcpy(ctx + (size_t)i * ld, z + (size_t)i * w, (size_t)w * sizeof(float));
        free(z);
    }
    return st;
}

/* The pooled output's width: that of the encoder that has one (0: none). */
static int pooled_width(const conditioner *c) {
    for (int e = 0; e < c->d->n_text; e++)
        if (c->d->text[e].pooled) return c->te[e].c.projection;
    return 0;
}

sd_status conditioner_encode(const conditioner *c, const char *text, int clip_skip, const char *what, conditioning *out,
                             char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (clip_skip < 1 || context_layers(c, 0, clip_skip) < 1) {
        snprintf(err, errlen, "clip-skip: %d leaves no text-encoder layer (the model uses %d)", clip_skip,
                 c->te[0].c.layers - c->d->text[0].skip);
        return SD_ERR_ARG;
    }
    prompt_chunk *chunks = NULL;
    int n = 0;
    int rc = conditioner_prepare(c, text, what, &chunks, &n, err, errlen);
    if (rc != 0) return rc == -1 ? SD_ERR_ARG : SD_ERR_NOMEM;
    out->len = CLIP_CONTEXT * n;
    out->width = c->d->context_width;
    out->pooled_width = pooled_width(c);
    out->ctx = malloc((size_t)out->len * out->width * sizeof(float));                           /* [77·n, width] */
    out->pooled = out->pooled_width ? malloc((size_t)out->pooled_width * sizeof(float)) : NULL; /* [pooled_width] */
    sd_status st = !out->ctx || (out->pooled_width && !out->pooled) ? SD_ERR_NOMEM : SD_OK;
    for (int i = 0; i < n && st == SD_OK; i++)
        for (int e = 0, col = 0; e < c->d->n_text && st == SD_OK; col += c->te[e++].c.hidden) {
            float *z = out->ctx + (size_t)i * CLIP_CONTEXT * out->width + col;
            st = encode_chunk(c, e, &chunks[i], clip_skip, z, out->width,
                              i == 0 && c->d->text[e].pooled ? out->pooled : NULL);
        }
    free(chunks);
    if (st != SD_OK) {
        conditioning_free(out);
        snprintf(err, errlen, "%s",
                 st == SD_ERR_CANCELLED ? "cancelled in the text encoder" : "out of memory in the text encoder");
    }
    return st;
}

sd_status conditioning_zeros(const conditioning *like, conditioning *out) {
    *out = *like;
    out->ctx = calloc((size_t)like->len * like->width, sizeof(float));
    out->pooled = like->pooled ? calloc((size_t)like->pooled_width, sizeof(float)) : NULL;
    if (out->ctx && (!like->pooled || out->pooled)) return SD_OK;
    conditioning_free(out);
    return SD_ERR_NOMEM;
}

void conditioning_free(conditioning *cd) {
    free(cd->ctx);
    free(cd->pooled);
    memset(cd, 0, sizeof *cd);
}

/* A malloc'd copy of cd (ctx NULL without memory). */
static conditioning copy_conditioning(const conditioning *cd) {
    conditioning out = *cd;
    size_t bytes = (size_t)cd->len * cd->width * sizeof(float), pooled = (size_t)cd->pooled_width * sizeof(float);
    out.pooled = cd->pooled ? malloc(pooled) : NULL;
    if (out.pooled) memcpy(out.pooled, cd->pooled, pooled);
    if ((out.ctx = malloc(bytes))) memcpy(out.ctx, cd->ctx, bytes);
    if (cd->pooled && !out.pooled) {
        free(out.ctx);
        out.ctx = NULL;
    }
    return out;
}

sd_status conditioner_encode_cached(const conditioner *c, cond_cache *cache, const char *text, int clip_skip,
                                    const char *what, conditioning *out, char *err, size_t errlen) {
    for (int i = 0; i < cache->n; i++)
        if (cache->clip_skip[i] == clip_skip && !strcmp(cache->text[i], text)) {
            *out = copy_conditioning(&cache->cd[i]);
            if (out->ctx) return SD_OK;
            snprintf(err, errlen, "out of memory");
            return SD_ERR_NOMEM;
        }
    sd_status st = conditioner_encode(c, text, clip_skip, what, out, err, errlen);
    if (st != SD_OK) return st;
    char *copy = strdup(text);
    conditioning kept = copy_conditioning(out);
    if (!copy || !kept.ctx) { /* not kept: the next use encodes again */
        free(copy);
        conditioning_free(&kept);
        return SD_OK;
    }
    int slot = cache->n < COND_CACHE_SIZE ? cache->n++ : cache->next++ % COND_CACHE_SIZE;
    free(cache->text[slot]);
    conditioning_free(&cache->cd[slot]);
    cache->text[slot] = copy;
    cache->clip_skip[slot] = clip_skip;
    cache->cd[slot] = kept;
    return SD_OK;
}

void cond_cache_free(cond_cache *cache) {
    for (int i = 0; i < cache->n; i++) {
        free(cache->text[i]);
        conditioning_free(&cache->cd[i]);
    }
    memset(cache, 0, sizeof *cache);
}

int conditioner_describe(const conditioner *c, const char *text, const char *what, FILE *f) {
    prompt_parse pp;
    prompt_chunk *chunks = NULL;
    int n = 0;
    char err[256];
    if (conditioner_parse(c->tok, text, &pp, err, sizeof err) != 0) return -1;
    int rc = conditioner_chunks(c->tok, &pp, c->d->text[0].pad_id, c->emb, &chunks, &n, err, sizeof err);
    if (rc == 0 && f) {
        fprintf(f, "sd: %s: %d chunk%s of 75 tokens;", what, n, n == 1 ? "" : "s");
        for (int i = 0; i < pp.n; i++) {
            if (prompt_span_is_break(&pp.spans[i]))
                fprintf(f, " BREAK");
            else
                fprintf(f, " \"%s\" x%.4g", pp.spans[i].text, pp.spans[i].weight);
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
