/* context.h - the library context behind the opaque sd_ctx (internal to sd.c and pipeline.c). */
#ifndef SD_CONTEXT_H
#define SD_CONTEXT_H

#include "sd.h"

#include "model/model.h"
#include "nets/controlnet.h"
#include "nets/taesd.h"
#include "nets/text_encoder.h"
#include "nets/unet.h"
#include "nets/vae.h"
#include "nn/compute.h"
#include "sampling/schedule.h"
#include "text/conditioner.h"
#include "text/tokenizer.h"

struct sd_ctx {
    sd_model model; /* the checkpoint's tensors and what they are (model.d) */
    tokenizer *tok;
    text_encoder te[MAX_TEXT_ENCODERS]; /* [model.d.n_text] */
    unet un;
    vae va;
    taesd *tae;     /* TAESD in place of the VAE, or NULL */
    controlnet *cn; /* a ControlNet guiding the UNet, or NULL */
    noise_schedule sched;
    compute cc;           /* threads, precision, low memory, arena, scratch: every network runs in it */
    int keep_weights;     /* sd_load_params.keep_weights: stages keep their mapped pages (batches) */
    int low_memory;       /* sd_load_params.low_memory: weights' pages dropped after each use, small VAE tiles */
    cond_cache prompts;   /* encodings of the prompts used so far */
    embedding_set emb;    /* textual-inversion embeddings of sd_load_params.embeddings_dir (none without one) */
    char text_names[160]; /* the encoders' names joined with " + " (sd_model_info.text_encoder) */
    sd_timings timings;
};

/* Time in seconds (monotonic). */
double sd_now(void);

/* Frees the activation arena and drops the mapped pages of the tensors under prefix: after a stage,
 * so that the peak is the largest stage rather than the sum of them. */
void sd_release_stage(sd_ctx *c, const char *prefix);

#endif
