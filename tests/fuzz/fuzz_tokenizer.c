/* fuzz_tokenizer.c - libFuzzer harness for the CLIP tokenizer: any bytes as a prompt, raw and padded. */
#include "tokenizer.h"

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
    for (long i = 0; i < n; i++) if (ids[i] < 0 || ids[i] >= CLIP_VOCAB) __builtin_trap();
    if (tokenizer_encode_padded(tok, text, padded, CLIP_CONTEXT, CLIP_EOS, err, sizeof err) == 0) {
        if (padded[0] != CLIP_BOS || padded[CLIP_CONTEXT - 1] != CLIP_EOS) __builtin_trap();
    } else if (n >= 0) {
        __builtin_trap(); /* the two entry points must agree on validity */
    }
    free(ids);
    free(text);
    return 0;
}
