/* sd.h - Stable Diffusion inference on the CPU (public API).
 *
 * Usage:
 *   char err[SD_ERR_LEN];
 *   sd_ctx *ctx = NULL;
 *   if (sd_load(&ctx, "v1-5-pruned-emaonly.safetensors", 0, err) != SD_OK) { puts(err); ... }
 *   sd_gen_params p; sd_gen_params_default(&p);
 *   p.prompt = "a dog wearing hat";
 *   sd_image img;
 *   if (sd_generate(ctx, &p, &img, err) == SD_OK) { ... sd_image_free(&img); }
 *   sd_free(ctx);
 *
 * Every function that can fail returns an sd_status and, on failure, writes a one-line
 * message (naming the file, tensor or option and the problem) into `err`.
 * Nothing in the library calls exit().
 *
 * Threads: a context owns its thread count and its work buffers. Use one context from one thread
 * at a time; different contexts may run in different threads (they share only read-only tables).
 */
#ifndef SD_H
#define SD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SD_BUILD) && defined(__GNUC__)
#define SD_API __attribute__((visibility("default")))
#else
#define SD_API
#endif

#define SD_VERSION_MAJOR 0
#define SD_VERSION_MINOR 2
#define SD_VERSION_PATCH 0
#define SD_ERR_LEN       512

/* "0.2.0": the version of the library actually linked. */
SD_API const char *sd_version(void);

typedef enum {
    SD_OK = 0,
    SD_ERR_ARG,       /* invalid parameter value */
    SD_ERR_IO,        /* file cannot be opened, read or written */
    SD_ERR_FORMAT,    /* file is not valid safetensors / not a readable image */
    SD_ERR_MODEL,     /* valid file, but not a usable Stable Diffusion checkpoint */
    SD_ERR_NOMEM,     /* allocation failed or request too large for memory */
    SD_ERR_CANCELLED, /* stopped by the cancel callback (e.g. SIGINT) */
    SD_ERR_RUNTIME    /* anything else that went wrong while computing */
} sd_status;

/* Short description of a status code ("invalid argument", ...). */
SD_API const char *sd_status_str(sd_status s);

typedef enum {
    SD_SAMPLER_LMS = 0, /* LMSDiscrete, order 4 (default) */
    SD_SAMPLER_DDPM,
    SD_SAMPLER_DDIM,
    SD_SAMPLER_PNDM, /* PLMS, skip_prk_steps */
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

/* What a sampler is and which options change its result (one table inside the library). */
typedef struct {
    const char *name;       /* command-line name: "lms", "dpm++2m", ... */
    const char *a1111_name; /* AUTOMATIC1111's name for the PNG parameters: "LMS", "DPM++ 2M", ... */
    sd_spacing default_spacing;
    int uses_eta;       /* --eta changes the result */
    int uses_karras;    /* --scheduler karras changes the result */
    int evals_per_step; /* UNet evaluations per step after the first (2 for Heun) */
    int warmup_evals;   /* extra UNet evaluations before the steps (1 for PNDM's warm-up) */
} sd_sampler_info;

/* NULL when s is not a sampler. */
SD_API const sd_sampler_info *sd_sampler_get_info(sd_sampler s);
/* Name <-> enum for the command line ("lms", "dpm++2m", ...). */
SD_API const char *sd_sampler_name(sd_sampler s);
SD_API int sd_sampler_from_name(const char *name); /* -1 when unknown */
SD_API const char *sd_spacing_name(sd_spacing s);  /* "leading", ... ("default" for 0) */

typedef struct sd_ctx sd_ctx;
typedef struct sd_upscaler sd_upscaler; /* an ESRGAN / Real-ESRGAN super-resolution model (sd_upscaler_load) */

/* The upscaler of the hires fix's second pass (AUTOMATIC1111's "Hires upscaler"). */
typedef enum {
    SD_HIRES_LATENT = 0, /* bilinear resize of the first pass's latent ("Latent") */
    SD_HIRES_LANCZOS,    /* Lanczos resize of the first pass's image */
    SD_HIRES_MODEL       /* an upscale model on the first pass's image (sd_gen_params.hires_model), then Lanczos */
} sd_hires_upscaler;

/* Arithmetic of the networks' matrix products (linear layers, convolutions, attention). */
typedef enum {
    SD_PRECISION_F32 = 0, /* float32 (default) */
    SD_PRECISION_BF16 /* inputs rounded to bfloat16, products summed in float32 (AVX512-BF16 CPUs; float32 elsewhere);
                         norms, softmax and the sampler stay float32 */
} sd_precision;

/* Whether this CPU computes SD_PRECISION_BF16 in bfloat16 (AVX512-BF16, checked at run time). */
SD_API int sd_bf16_supported(void);

/* Loads a model: a single-file checkpoint (.safetensors, or .ckpt read without executing its pickle) or a
 * diffusers folder. n_threads <= 0 picks the number of cores. */
SD_API sd_status sd_load(sd_ctx **out, const char *model_path, int n_threads, char err[SD_ERR_LEN]);

/* A LoRA file (kohya / AUTOMATIC1111 or diffusers / PEFT naming) and its multiplier (may be negative). */
typedef struct {
    const char *path;
    float multiplier;
} sd_lora;

typedef struct {
    const char *model_path; /* .safetensors, .ckpt (read without executing it) or a diffusers folder */
    const char *vae_path;   /* optional: a standalone VAE (.safetensors / .ckpt) replacing the model's */
    const char *taesd_path; /* optional: TAESD (tiny autoencoder) decoding and encoding instead of the VAE */
    int n_threads;          /* <= 0: the number of cores */
    const sd_lora *loras;   /* merged into the weights at load, in float32: sampling speed is unchanged */
    int n_loras;
    FILE *log;              /* optional: one line per LoRA (modules applied); NULL for silence */
    int verbose;            /* with log: also the LoRA keys that matched no layer */
    int keep_weights;       /* 1: the weights' mapped pages stay resident between stages and images (batches: nothing
                               is read again per image; the peak memory then holds every network's weights). 0: each
                               stage gives its pages back when done, so the peak is the largest stage */
    int low_memory;         /* 1: each F16/BF16 weight's mapped pages are given back as soon as the layer has converted
                               them (about one layer resident), and the VAE runs in 256-pixel tiles */
    sd_precision precision; /* of the matrix products, for every image of this context */
    const char *controlnet_path; /* optional: a ControlNet for the model (.pth / .safetensors); the images then need a
                                    control image (sd_gen_params.control_image) */
    const char *embeddings_dir;  /* optional: a folder of textual-inversion embeddings (*.pt, *.bin, *.safetensors),
                                    each usable in prompts by its file name without the extension; files this model
                                    cannot use are noted on `log` and refused only when a prompt names them */
} sd_load_params;

SD_API void sd_load_params_default(sd_load_params *p);
/* sd_load with LoRAs and a log. */
SD_API sd_status sd_load_with(sd_ctx **out, const sd_load_params *p, char err[SD_ERR_LEN]);

/* AUTOMATIC1111's LoRA tags in a prompt, `<lora:NAME>` or `<lora:NAME:MULT>` (MULT default 1). The prompt
 * encoder removes every `<word:...>` tag from the text, as AUTOMATIC1111 does; applying the LoRAs they name is
 * up to the caller (the CLI resolves NAME against --lora-model-dir). Returns how many tags were found (the
 * first max_tags are stored), or -1 with err set for a tag that cannot be read. */
typedef struct {
    char name[256];
    float multiplier;
} sd_lora_tag;
SD_API int sd_prompt_lora_tags(const char *prompt, sd_lora_tag *tags, int max_tags, char err[SD_ERR_LEN]);
SD_API void sd_free(sd_ctx *ctx);

/* Writes a human-readable summary of the model (family, sizes, parameter counts, dtypes, metadata). */
SD_API void sd_print_info(const sd_ctx *ctx, FILE *f);

/* What the loaded model is. */
typedef struct {
    const char *family;       /* "SD 1.x", "SD 2.x", "SDXL" */
    const char *text_encoder; /* "CLIP ViT-L/14", "OpenCLIP ViT-H/14", "CLIP ViT-L/14 + OpenCLIP ViT-bigG/14" (by
                                 naming; sizes may differ) */
    sd_prediction prediction; /* the model's default (never DEFAULT) */
    int default_width, default_height;
    int unet_in_channels; /* 4, or 9 for inpainting models */
    int latent_channels;
    sd_spacing default_spacing; /* the family's timestep spacing for every sampler, or SD_SPACING_DEFAULT: each
                                   sampler's own (sd_sampler_info.default_spacing) */
    int size_conditioning;      /* the UNet takes SDXL's size conditioning (original_width, ... of sd_gen_params) */
} sd_model_info;
SD_API void sd_get_model_info(const sd_ctx *ctx, sd_model_info *info);

typedef struct {
    int step, steps; /* 1-based UNet evaluation just finished, total */
    double seconds;  /* seconds spent in this evaluation */
} sd_progress;

typedef void (*sd_progress_fn)(const sd_progress *p, void *user);
/* Returns non-zero to stop the run: polled between the networks' layers and inside long kernels (attention, large
 * convolutions, tiles) at least every few milliseconds of work, always on the thread that called the library; the
 * call then returns SD_ERR_CANCELLED. */
typedef int (*sd_cancel_fn)(void *user);

/* An 8-bit image in memory: rows top to bottom, channels interleaved (1 grey, 3 RGB, 4 RGBA). */
typedef struct {
    int width, height, channels;
    const uint8_t *data; /* [height, width, channels] */
} sd_pixels;

typedef struct {
    const char *prompt;
    const char *negative_prompt; /* "" = unconditional (empty prompt) */
    int width, height;           /* multiples of 8 in 64..4096; 0 = the model's default (img2img: the image's) */
    int steps;                   /* 1..1000 (default 20) */
    float cfg_scale;             /* >= 0 (default 7.5); <= 1 runs a single unguided pass */
    uint64_t seed;
    sd_sampler sampler;
    sd_schedule schedule;
    sd_spacing spacing;
    float eta; /* DDIM eta (default 0) */
    sd_rng_kind rng;
    sd_prediction prediction; /* DEFAULT = from the model's metadata / family */
    int clip_skip;            /* 0 or 1 = the family's layer; N > 1 uses the hidden state N-1 layers earlier */
    int vae_tiling;           /* 1: decode (and encode) in 512-pixel tiles as diffusers' enable_tiling() does,
                                 for images over 512 pixels; 0: only when the untiled VAE would not fit in memory */
    /* img2img / inpainting: an init image (and a mask, white = repaint) make the run start from the
     * image noised to where `strength` (0 < s <= 1, default 0.75) puts it, as diffusers does. */
    const sd_pixels *init_image; /* NULL = txt2img */
    const sd_pixels *mask;       /* NULL = no inpainting; needs init_image */
    double strength;
    sd_progress_fn progress; /* optional */
    void *progress_user;
    sd_cancel_fn cancel; /* optional (see sd_cancel_fn): a non-zero answer stops the run */
    void *cancel_user;
    /* SDXL's size conditioning (the UNet's added input; other families ignore it). 0 = the default: the original and
     * the target size are the output size, the crop (top, left) is 0, 0 (diffusers' original_size,
     * crops_coords_top_left, target_size) */
    int original_width, original_height;
    int crop_top, crop_left;
    int target_width, target_height;
    /* ControlNet (a context loaded with sd_load_params.controlnet_path): the control image (resized to the output size
     * with the Lanczos filter, RGB in [0, 1]), the residuals' strength (>= 0, default 1) and the fraction of the steps
     * it guides: step i of n when i/n >= control_start and (i+1)/n <= control_end (defaults 0 and 1) */
    const sd_pixels *control_image;
    float control_strength;
    double control_start, control_end; /* doubles: diffusers compares i/n with them in double precision */
    /* Hires fix (AUTOMATIC1111's): hires_scale > 1 runs a second pass, the img2img of the first pass's result
     * upscaled to (W·scale, H·scale) rounded down to 8, with the same prompt, seed and sampler, hires_steps steps
     * (0: steps) at denoising strength hires_strength (default 0.7) */
    double hires_scale;
    sd_hires_upscaler hires_upscaler;
    sd_upscaler *hires_model; /* SD_HIRES_MODEL: the upscaler */
    int hires_steps;
    double hires_strength;
} sd_gen_params;

SD_API void sd_gen_params_default(sd_gen_params *p);

/* Checks a parameter set without running it (model-independent checks). */
SD_API sd_status sd_gen_params_check(const sd_gen_params *p, char err[SD_ERR_LEN]);

typedef struct {
    int width, height; /* pixels */
    uint8_t *rgb;      /* [height, width, 3] */
    float *latent;     /* [latent_channels, height/8, width/8]: the final latent (unscaled sampler output) */
    int latent_channels;
} sd_image;

/* txt2img, img2img or inpainting, by what p holds. */
SD_API sd_status sd_generate(sd_ctx *ctx, const sd_gen_params *p, sd_image *out, char err[SD_ERR_LEN]);
/* Same as sd_generate (kept for callers of the first API). */
SD_API sd_status sd_txt2img(sd_ctx *ctx, const sd_gen_params *p, sd_image *out, char err[SD_ERR_LEN]);
SD_API void sd_image_free(sd_image *img);

/* A rough time in seconds for one sampling step at width x height (0: the model's size): the UNet's FLOPs there (a
 * batch of two when guided; self-attention grows with the square of the pixel count) over this machine's
 * matrix-product rate, measured by a short probe (about 0.2 s, on the first call only). *tflop (may be NULL): the
 * TFLOP of that step. 0 when the probe could not run. */
SD_API double sd_estimate_step(sd_ctx *ctx, int width, int height, int guided, double *tflop);

/* ---- upscaling: ESRGAN / Real-ESRGAN (RRDBNet) models ---- */

/* Loads an RRDBNet upscaler: Real-ESRGAN .pth (params_ema, else params; basicsr names), old ESRGAN and 2019 ESRGAN
 * names, .safetensors; nf, nb, gc and the scale from the shapes. n_threads <= 0: all cores. */
SD_API sd_status sd_upscaler_load(sd_upscaler **out, const char *path, int n_threads, char err[SD_ERR_LEN]);
SD_API void sd_upscaler_free(sd_upscaler *u);
/* Output pixels per input pixel: 4, 2 or 1. */
SD_API int sd_upscaler_scale(const sd_upscaler *u);
/* SD_OK when an image of width x height can be upscaled by u in the memory available (SD_MEMORY_LIMIT or
 * MemAvailable), else SD_ERR_ARG with err naming the sizes and the memory needed. */
SD_API sd_status sd_upscaler_check(const sd_upscaler *u, int width, int height, char err[SD_ERR_LEN]);

/* out->rgb = in upscaled (RGB; alpha dropped, grey replicated; width·scale x height·scale), in tiles of
 * SD_UPSCALE_TILE input pixels with SD_UPSCALE_PAD more of context on every side; cancel (may be NULL) is polled
 * between tiles and layers. A size whose output would not fit in memory is refused before any compute. */
#define SD_UPSCALE_TILE 256
#define SD_UPSCALE_PAD  16
SD_API sd_status sd_upscale(sd_upscaler *u, const sd_pixels *in, sd_cancel_fn cancel, void *cancel_user, sd_image *out,
                            char err[SD_ERR_LEN]);

/* Reads a PNG, JPEG or BMP file into 8-bit pixels (malloc'd data, free with sd_pixels_free). */
SD_API sd_status sd_pixels_read(const char *path, sd_pixels *out, char err[SD_ERR_LEN]);
SD_API void sd_pixels_free(sd_pixels *p);

/* Writes what the prompt parser and the chunker made of `prompt` (weighted spans, chunks of 75 tokens) to f,
 * one line each, prefixed "sd: <what>: " (f may be NULL). Returns the number of brackets the parser had to close (0
 * when the syntax was balanced), or -1 when the text is not valid UTF-8. */
SD_API int sd_describe_prompt(const sd_ctx *ctx, const char *prompt, const char *what, FILE *f);

/* Checks that `prompt` (named `what` in the message: "prompt", "negative prompt") can be encoded, without encoding
 * it: SD_OK, or SD_ERR_ARG with err set (not UTF-8). For checking a batch of prompts before making any image. */
SD_API sd_status sd_check_prompt(const sd_ctx *ctx, const char *prompt, const char *what, char err[SD_ERR_LEN]);

/* A textual-inversion embedding a prompt uses. */
typedef struct {
    const char *name; /* the file name without the extension */
    const char *hash; /* the first 12 hex digits of the file's SHA-256 (AUTOMATIC1111's "TI hashes") */
    int vectors;      /* how many token positions it takes */
} sd_embedding_use;

/* The embeddings `prompt` names (each once, in the order of first use): returns how many (the first `max` stored in
 * out; the strings belong to the context), or -1 when the prompt cannot be encoded (sd_check_prompt says why). */
SD_API int sd_prompt_embeddings(const sd_ctx *ctx, const char *prompt, sd_embedding_use *out, int max);

/* Stage timings and memory of the last sd_generate call, in seconds / bytes. */
typedef struct {
    double text_s, encode_s, sampling_s, decode_s, step_median_s;
    double step_gemm_flops; /* multiply-add FLOPs of the matrix products per UNet evaluation, as run (after Winograd;
                               counted process-wide, so only meaningful while one generation runs at a time) */
    int vae_tiled;          /* tile size in pixels when the VAE ran in tiles (asked, low memory, or because the untiled
                               one would not fit), else 0 */
    int taesd;              /* TAESD ran instead of the VAE */
    int bf16;               /* the matrix products ran in bfloat16 */
    size_t peak_rss_bytes;
} sd_timings;
SD_API void sd_get_timings(const sd_ctx *ctx, sd_timings *t);

#ifdef __cplusplus
}
#endif
#endif /* SD_H */
