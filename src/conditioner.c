/* conditioner.c - see conditioner.h. */
#include "conditioner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int conditioner_encode(const conditioner *c, const char *text, int clip_skip, const char *what, conditioning *out,
                       char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const int width = c->te->c.hidden, layers = c->te->c.layers - c->d->text_skip - (clip_skip - 1);
    if (clip_skip < 1 || layers < 1) {
        snprintf(err, errlen, "clip-skip: %d leaves no text-encoder layer (the model uses %d)", clip_skip,
                 c->te->c.layers - c->d->text_skip);
        return -1;
    }
    int ids[CLIP_CONTEXT];
    char terr[256];
    if (tokenizer_encode_padded(c->tok, text, ids, CLIP_CONTEXT, c->d->pad_id, terr, sizeof terr) != 0) {
        snprintf(err, errlen, "%s: %s", what, strchr(terr, ':') ? strchr(terr, ':') + 2 : terr);
        return -1;
    }
    out->len = CLIP_CONTEXT;
    out->width = width;
    out->ctx = malloc((size_t)out->len * width * sizeof(float)); /* [77, width] */
    if (!out->ctx || text_encoder_forward(c->te, ids, layers, out->ctx, c->a, c->scratch) != 0) {
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
