/* sd.h - Stable Diffusion inference on the CPU (public API).
 *
 * Usage:
 *   char err[SD_ERR_LEN];
 *   sd_ctx *ctx = NULL;
 *   if (sd_load(&ctx, "v1-5-pruned-emaonly.safetensors", 0, err) != SD_OK) { puts(err); ... }
 *   sd_gen_params p; sd_gen_params_default(&p);
 *   p.prompt = "a dog wearing hat";
 *   sd_image img;
 *   if (sd_txt2img(ctx, &p, &img, err) == SD_OK) { ... sd_image_free(&img); }
 *   sd_free(ctx);
 *
 * Every function that can fail returns an sd_status and, on failure, writes a one-line
 * message (naming the file, tensor or option and the problem) into `err`.
 * Nothing in the library calls exit().
 */
#ifndef SD_H
#define SD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SD_ERR_LEN 512

typedef enum {
    SD_OK = 0,
    SD_ERR_ARG,       /* invalid parameter value */
    SD_ERR_IO,        /* file cannot be opened, read or written */
    SD_ERR_FORMAT,    /* file is not valid safetensors */
    SD_ERR_MODEL,     /* valid file, but not a usable Stable Diffusion checkpoint */
    SD_ERR_NOMEM,     /* allocation failed or request too large for memory */
    SD_ERR_CANCELLED, /* stopped by the cancel flag (e.g. SIGINT) */
    SD_ERR_RUNTIME    /* anything else that went wrong while computing */
} sd_status;

/* Short description of a status code ("invalid argument", ...). */
const char *sd_status_str(sd_status s);

/* Exit code a command-line tool should use for a status: 0 ok, 2 bad input, 1 otherwise. */
int sd_status_exit_code(sd_status s);

typedef enum {
    SD_SAMPLER_LMS = 0, /* LMSDiscrete, order 4 (default) */
    SD_SAMPLER_DDPM,
    SD_SAMPLER_DDIM,
    SD_SAMPLER_PNDM,    /* PLMS, skip_prk_steps */
    SD_SAMPLER_EULER,
    SD_SAMPLER_EULER_A,
    SD_SAMPLER_HEUN,
    SD_SAMPLER_DPMPP_2M,
    SD_SAMPLER_UNIPC,
    SD_SAMPLER_LCM,
    SD_SAMPLER_COUNT
} sd_sampler;

typedef enum { SD_SCHEDULE_DEFAULT = 0, SD_SCHEDULE_KARRAS } sd_schedule;

typedef enum {
    SD_SPACING_DEFAULT = 0, /* the sampler's diffusers default */
    SD_SPACING_LEADING,
    SD_SPACING_LINSPACE,
    SD_SPACING_TRAILING
} sd_spacing;

typedef enum { SD_RNG_CPU = 0, SD_RNG_CUDA } sd_rng_kind;

typedef enum { SD_PREDICTION_DEFAULT = 0, SD_PREDICTION_EPSILON, SD_PREDICTION_V } sd_prediction;

/* Name <-> enum for the command line ("lms", "dpm++2m", ...). Returns -1 when unknown. */
const char *sd_sampler_name(sd_sampler s);
int sd_sampler_from_name(const char *name);

typedef struct sd_ctx sd_ctx;

/* Loads a single-file checkpoint (safetensors). n_threads <= 0 picks the number of cores. */
sd_status sd_load(sd_ctx **out, const char *model_path, int n_threads, char err[SD_ERR_LEN]);
void sd_free(sd_ctx *ctx);

/* Writes a human-readable summary of the model (family, sizes, parameter counts, dtypes, metadata). */
void sd_print_info(const sd_ctx *ctx, void *file /* FILE* */);

typedef struct {
    int step, steps;      /* 1-based step just finished, total */
    double seconds;       /* seconds spent in this step */
} sd_progress;

typedef void (*sd_progress_fn)(const sd_progress *p, void *user);

typedef struct {
    const char *prompt;
    const char *negative_prompt; /* "" = unconditional (empty prompt) */
    int width, height;           /* multiples of 64 (default 512) */
    int steps;                   /* 1..1000 (default 20) */
    float cfg_scale;             /* >= 0 (default 7.5); <= 1 runs a single unguided pass */
    uint64_t seed;
    sd_sampler sampler;
    sd_schedule schedule;
    sd_spacing spacing;
    float eta;                   /* DDIM eta (default 0) */
    sd_rng_kind rng;
    sd_prediction prediction;    /* DEFAULT = from the model's metadata / family */
    sd_progress_fn progress;     /* optional */
    void *progress_user;
    volatile int *cancel;        /* optional: when *cancel != 0 the run stops after the current step */
} sd_gen_params;

void sd_gen_params_default(sd_gen_params *p);

/* Checks a parameter set without running it. */
sd_status sd_gen_params_check(const sd_gen_params *p, char err[SD_ERR_LEN]);

typedef struct {
    int width, height;      /* pixels */
    uint8_t *rgb;           /* [height, width, 3] */
    float *latent;          /* [4, height/8, width/8]: the final latent (unscaled sampler output) */
    int latent_channels;
} sd_image;

sd_status sd_txt2img(sd_ctx *ctx, const sd_gen_params *p, sd_image *out, char err[SD_ERR_LEN]);
void sd_image_free(sd_image *img);

/* Stage timings and memory of the last sd_txt2img call, in seconds / bytes. */
typedef struct {
    double text_s, sampling_s, decode_s, step_median_s;
    size_t peak_rss_bytes;
} sd_timings;
void sd_get_timings(const sd_ctx *ctx, sd_timings *t);

#ifdef __cplusplus
}
#endif
#endif /* SD_H */
