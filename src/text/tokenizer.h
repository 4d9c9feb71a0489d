/* tokenizer.h - CLIP's byte-level BPE tokenizer (as transformers' CLIPTokenizer computes it:
 * NFC, whitespace runs -> " ", lowercase, CLIP's pre-tokenization pattern, byte-to-unicode,
 * merges by rank with "</w>" word ends). The merges file is compiled into the binary. */
#ifndef SD_TOKENIZER_H
#define SD_TOKENIZER_H

#include <stddef.h>

#define CLIP_BOS     49406 /* <|startoftext|> */
#define CLIP_EOS     49407 /* <|endoftext|> */
#define CLIP_VOCAB   49408
#define CLIP_CONTEXT 77

typedef struct tokenizer tokenizer;

/* Builds the tokenizer from the embedded merges. Returns NULL (err set) on failure. */
tokenizer *tokenizer_create(char *err, size_t errlen);
void tokenizer_free(tokenizer *t);

/* Token ids of `text` without BOS/EOS, at most max_ids of them (the rest is not computed).
 * Returns the count, or -1 with err set (invalid UTF-8 names the byte offset). */
long tokenizer_encode(const tokenizer *t, const char *text, int *ids, long max_ids, char *err, size_t errlen);

/* The padded form the text encoder takes: BOS, at most ctx_len-2 tokens, EOS, then pad_id (CLIP_EOS for
 * SD 1.x, 0 for SD 2.x's OpenCLIP tokenizer). */
int tokenizer_encode_padded(const tokenizer *t, const char *text, int *ids, int ctx_len, int pad_id, char *err,
                            size_t errlen);

#endif
