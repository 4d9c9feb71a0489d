/* fuzz_tokenizer.c - libFuzzer harness for the CLIP tokenizer and the prompt parser + chunker: any bytes as
 * a prompt, raw, padded, and parsed with AUTOMATIC1111's syntax into 77-token chunks. */
#include "text/conditioner.h"
#include "text/prompt.h"
#include "text/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tokenizer *tok;
    char err[256];
    if (!tok && !(tok = tokenizer_create(err, sizeof err))) __builtin_trap();
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    int *ids = malloc((4 * size + 8) * sizeof(int)), padded[CLIP_CONTEXT];
    long n = tokenizer_encode(tok, text, ids, (long)(4 * size + 8), err, sizeof err);
    for (long i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= CLIP_VOCAB) __builtin_trap();
    if (tokenizer_encode_padded(tok, text, padded, CLIP_CONTEXT, CLIP_EOS, err, sizeof err) == 0) {
        if (padded[0] != CLIP_BOS || padded[CLIP_CONTEXT - 1] != CLIP_EOS) __builtin_trap();
    } else if (n >= 0) {
        __builtin_trap(); /* the two entry points must agree on validity */
    }
    prompt_parse pp;
    int parsed = conditioner_parse(tok, text, &pp, err, sizeof err);
    if ((parsed == 0) != (n >= 0)) __builtin_trap(); /* the parser takes exactly the texts the tokenizer takes */
    if (parsed == 0) {
        prompt_chunk *chunks = NULL;
        int k = 0;
        int rc = conditioner_chunks(tok, &pp, CLIP_EOS, NULL, &chunks, &k, err, sizeof err);
        if (rc == 0 && k < 1) __builtin_trap();
        for (int c = 0; rc == 0 && c < k; c++) {
            if (chunks[c].ids[0] != CLIP_BOS || chunks[c].ids[CLIP_CONTEXT - 1] != CLIP_EOS) __builtin_trap();
            for (int i = 0; i < CLIP_CONTEXT; i++)
                if (chunks[c].ids[i] < 0 || chunks[c].ids[i] >= CLIP_VOCAB ||
                    chunks[c].weights[i] != chunks[c].weights[i])
                    __builtin_trap();
        }
        free(chunks);
        prompt_parse_free(&pp);
    }
    free(ids);
    free(text);
    return 0;
}
