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
    double product_rate; /* FLOP/s of a matrix product in cc, measured once for estimates (0: not yet) */
};

/* One generation (pipeline.c): txt2img, img2img or inpainting as p says, or img2img from init_latent ([C, h, w]
 * scaled, at p's size) when it is not NULL. */
sd_status sd_pipeline_run(sd_ctx *c, const sd_gen_params *p, const float *init_latent, sd_image *img,
                          char err[SD_ERR_LEN]);

/* Whether p (with init_latent, as sd_pipeline_run) would run: its settings, size (*W x *H), memory plan and sampler,
 * checked without computing anything. The pixels of p's init image are not read. */
sd_status sd_pipeline_check(sd_ctx *c, const sd_gen_params *p, const float *init_latent, int *W, int *H,
                            char err[SD_ERR_LEN]);

/* Memory to plan with, in bytes: SD_MEMORY_LIMIT (a whole number of MB) when set, else MemAvailable (0 when
 * unknown). Returns -1 with err set when SD_MEMORY_LIMIT is set but not a number. */
int sd_available_memory(size_t *bytes, char *err, size_t errlen);

/* "SD_MEMORY_LIMIT allows N MB" when that variable set the `have` bytes, else "only X GB of memory is available"
 * (in buf, returned). */
const char *sd_memory_text(size_t have, char *buf, size_t len);

/* Time in seconds (monotonic). */
double sd_now(void);

/* Frees the activation arena and drops the mapped pages of the tensors under prefix: after a stage,
 * so that the peak is the largest stage rather than the sum of them. */
void sd_release_stage(sd_ctx *c, const char *prefix);

#endif
