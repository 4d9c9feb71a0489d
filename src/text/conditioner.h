/* conditioner.h - prompt text -> the UNet's conditioning, as AUTOMATIC1111 builds it (emphasis "Original",
 * comma back-tracking 20): parse the prompt's syntax (prompt.c), tokenize each span, place the tokens
 * into chunks of 75 (BREAK and comma back-tracking), frame each chunk as BOS + 75 + EOS with padding,
 * encode each chunk with every text encoder of the model (each with its own padding, layer choice and clip skip,
 * as the description says), scale each token's vector by its weight and restore the chunk's mean per encoder,
 * put the encoders' outputs side by side per token, and concatenate the chunks. An encoder with a pooled output
 * gives it for the first chunk (AUTOMATIC1111's rule).
 * A plain prompt (no syntax, <= 75 tokens) gives exactly diffusers' encoding. */
#ifndef SD_CONDITIONER_H
#define SD_CONDITIONER_H

#include "model/desc.h"
#include "nn/compute.h"
#include "text/prompt.h"
#include "nets/text_encoder.h"
#include "text/embeddings.h"
#include "text/tokenizer.h"

#include <stdio.h>

#define CHUNK_TOKENS    75
#define COMMA_BACKTRACK 20
#define CLIP_COMMA      267 /* ",</w>" */

typedef struct {
    const tokenizer *tok;
    const text_encoder *te; /* [d->n_text] */
    const model_desc *d;
    compute *cc;              /* NULL where nothing is encoded (checks, descriptions) */
    const embedding_set *emb; /* textual-inversion embeddings the prompts may name, or NULL */
} conditioner;

#define EMB_SLOT (-1) /* the id of a position that holds an embedding's vector */

/* One chunk as the text encoder takes it. */
typedef struct {
    int ids[CLIP_CONTEXT];              /* BOS, the tokens, EOS, then the padding id given to conditioner_chunks */
    float weights[CLIP_CONTEXT];        /* per-token multipliers (1 for BOS, EOS, padding) */
    int tokens;                         /* the prompt's tokens in it (positions 1..tokens) */
    const embedding *emb[CLIP_CONTEXT]; /* the embedding whose vector position i holds (its id is EMB_SLOT), or NULL */
    int emb_row[CLIP_CONTEXT];          /* ... and which of its vectors */
    int embedded;                       /* any position holds an embedding's vector */
} prompt_chunk;

/* A prompt's conditioning: ctx[len, width], len = 77 · chunks; pooled[pooled_width] or NULL. */
typedef struct {
    float *ctx;
    int len, width;
    float *pooled;
    int pooled_width;
} conditioning;

/* Checks that text is UTF-8 (the syntax works on characters: removing a backslash must not make invalid
 * bytes valid), then parses it. Returns 0, -1 with err set (invalid UTF-8), -2 without memory. */
int conditioner_parse(const tokenizer *tok, const char *text, prompt_parse *pp, char *err, size_t errlen);

/* The chunks of a parsed prompt (malloc'd *out, *n >= 1), with the embeddings of emb (may be NULL) spliced in.
 * pad_id follows the first EOS. Returns 0, -1 with err set (bad text, an embedding this model cannot use), -2 without
 * memory. */
int conditioner_chunks(const tokenizer *tok, const prompt_parse *pp, int pad_id, const embedding_set *emb,
                       prompt_chunk **out, int *n, char *err, size_t errlen);

/* The chunks of `text` (named `what` in messages), as conditioner_encode makes them (malloc'd *chunks). Returns 0,
 * -1 with err set (bad text), -2 without memory. */
int conditioner_prepare(const conditioner *c, const char *text, const char *what, prompt_chunk **chunks, int *n,
                        char *err, size_t errlen);

/* Encodes `text` (named `what` in messages: "prompt", "negative prompt"). clip_skip >= 1 (1 = the family's
 * default layer). Returns SD_OK, or SD_ERR_ARG with err set (bad text, clip skip past the first layer), or the compute
 * context's failure (SD_ERR_NOMEM, SD_ERR_CANCELLED). */
sd_status conditioner_encode(const conditioner *c, const char *text, int clip_skip, const char *what, conditioning *out,
                             char *err, size_t errlen);
/* The conditioning of nothing: zeros shaped like `like` (SDXL's empty negative prompt). */
sd_status conditioning_zeros(const conditioning *like, conditioning *out);
void conditioning_free(conditioning *cd);

/* Encodings already made, by (text, clip skip): a batch of jobs encodes each distinct prompt once. The entries
 * are copies of what conditioner_encode returned; the oldest is replaced when full. */
#define COND_CACHE_SIZE 16
typedef struct {
    char *text[COND_CACHE_SIZE];
    int clip_skip[COND_CACHE_SIZE];
    conditioning cd[COND_CACHE_SIZE];
    int n, next;
} cond_cache;

/* conditioner_encode through the cache: a hit copies the stored encoding into *out. */
sd_status conditioner_encode_cached(const conditioner *c, cond_cache *cache, const char *text, int clip_skip,
                                    const char *what, conditioning *out, char *err, size_t errlen);
void cond_cache_free(cond_cache *cache);

/* Writes what the parser and the chunker made of `text` (spans with weights, chunks with token counts) to f
 * (nothing when f is NULL).
 * Returns the number of brackets left open (repaired), or -1 on bad text. */
int conditioner_describe(const conditioner *c, const char *text, const char *what, FILE *f);

#endif
