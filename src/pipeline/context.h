/* context.h - the library context behind the opaque sd_ctx (internal to sd.c and pipeline.c). */
#ifndef SD_CONTEXT_H
#define SD_CONTEXT_H

#include "sd.h"

#include "text/conditioner.h"
#include "nn/kernels.h"
#include "model/model.h"
#include "sampling/schedule.h"
#include "nets/text_encoder.h"
#include "text/tokenizer.h"
#include "nets/taesd.h"
#include "nets/unet.h"
#include "nets/vae.h"

struct sd_ctx {
    sd_model model;     /* the file and its description (model.d) */
    tokenizer *tok;
    text_encoder te;
    unet un;
    vae va;
    taesd *tae;         /* TAESD in place of the VAE, or NULL */
    noise_schedule sched;
    arena arena;        /* activations of the stage that runs */
    float *scratch;     /* [model.max_half_matrix] conversion buffer for F16/BF16 matrices */
    int n_threads;
    int keep_weights;   /* sd_load_params.keep_weights: stages keep their mapped pages (batches) */
    int low_memory;     /* sd_load_params.low_memory: weights' pages dropped after each use, small VAE tiles */
    int bf16;           /* sd_load_params.precision is BF16 and the CPU has AVX512-BF16 */
    cond_cache prompts; /* encodings of the prompts used so far */
    sd_timings timings;
};

/* Time in seconds (monotonic). */
double sd_now(void);

/* Frees the activation arena and drops the mapped pages of the tensors under prefix: after a stage,
 * so that the peak is the largest stage rather than the sum of them. */
void sd_release_stage(sd_ctx *c, const char *prefix);

#endif
