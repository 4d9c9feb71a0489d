/* conditioner.h - prompt text -> the UNet's conditioning: tokenize, frame each 75-token chunk as
 * BOS + tokens + EOS + padding (77 ids), run the text encoder with the family's layer choice
 * (SD 2.x: penultimate layer) and clip skip. */
#ifndef SD_CONDITIONER_H
#define SD_CONDITIONER_H

#include "kernels.h"
#include "model.h"
#include "text_encoder.h"
#include "tokenizer.h"

typedef struct {
    const tokenizer *tok;
    const text_encoder *te;
    const model_desc *d;
    arena *a;
    float *scratch;
} conditioner;

/* A prompt's conditioning: ctx[len, width], len = 77 · chunks. */
typedef struct {
    float *ctx;
    int len, width;
} conditioning;

/* Encodes `text` (named `what` in messages: "prompt", "negative prompt"). clip_skip >= 1 (1 = the family's
 * default layer). Returns 0, or -1 with err set (bad text: SD_ERR_ARG) or -2 (no memory). */
int conditioner_encode(const conditioner *c, const char *text, int clip_skip, const char *what, conditioning *out,
                       char *err, size_t errlen);
void conditioning_free(conditioning *cd);

#endif
