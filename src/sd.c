/* sd.c - the library: loading a checkpoint and the txt2img pipeline
 * (diffusers StableDiffusionPipeline: encode prompts, draw the latent, denoise with
 * classifier-free guidance, decode with the VAE). */
#include "sd.h"

#include "kernels.h"
#include "model.h"
#include "rng.h"
#include "sampler.h"
#include "text_encoder.h"
#include "tokenizer.h"
#include "unet.h"
#include "vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define VAE_SCALE 0.18215f /* SD 1.x latent scaling factor */
#define MAX_SIZE 2048

struct sd_ctx {
    sd_model model;
    tokenizer *tok;
    text_encoder te;
    unet un;
    vae va;
    noise_schedule sched;
    arena arena;
    float *scratch;   /* [model.max_half_matrix] conversion buffer for F16/BF16 matrices */
    int n_threads;
    sd_timings timings;
};

static const char *const sampler_names[SD_SAMPLER_COUNT] = {
    "lms", "ddpm", "ddim", "pndm", "euler", "euler_a", "heun", "dpm++2m", "unipc", "lcm"};

const char *sd_sampler_name(sd_sampler s) { return (unsigned)s < SD_SAMPLER_COUNT ? sampler_names[s] : "?"; }

int sd_sampler_from_name(const char *name) {
    for (int i = 0; i < SD_SAMPLER_COUNT; i++)
        if (strcmp(name, sampler_names[i]) == 0) return i;
    return -1;
}

const char *sd_status_str(sd_status s) {
    switch (s) {
    case SD_OK: return "ok";
    case SD_ERR_ARG: return "invalid argument";
    case SD_ERR_IO: return "input/output error";
    case SD_ERR_FORMAT: return "invalid file format";
    case SD_ERR_MODEL: return "unusable model";
    case SD_ERR_NOMEM: return "out of memory";
    case SD_ERR_CANCELLED: return "cancelled";
    default: return "runtime error";
    }
}

int sd_status_exit_code(sd_status s) {
    switch (s) {
    case SD_OK: return 0;
    case SD_ERR_ARG: case SD_ERR_IO: case SD_ERR_FORMAT: case SD_ERR_MODEL: return 2;
    default: return 1;
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

/* ---------------- loading ---------------- */

sd_status sd_load(sd_ctx **out, const char *path, int n_threads, char err[SD_ERR_LEN]) {
    *out = NULL;
    sd_ctx *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, SD_ERR_LEN, "out of memory"); return SD_ERR_NOMEM; }
    kernels_set_threads(n_threads);
    c->n_threads = kernels_threads();
    arena_init(&c->arena);
    schedule_init(&c->sched);
    int rc = model_open(&c->model, path, err, SD_ERR_LEN);
    if (rc != 0) { free(c); return rc == -1 ? SD_ERR_IO : rc == -2 ? SD_ERR_FORMAT : SD_ERR_MODEL; }
    if (text_encoder_load(&c->te, &c->model, err, SD_ERR_LEN) != 0 || unet_load(&c->un, &c->model, err, SD_ERR_LEN) != 0 ||
        vae_load(&c->va, &c->model, err, SD_ERR_LEN) != 0) {
        sd_free(c);
        return SD_ERR_MODEL;
    }
    if (c->te.c.hidden != c->un.c.ctx_dim) {
        snprintf(err, SD_ERR_LEN, "%s: text encoder width %d does not match the UNet's context width %d", path,
                 c->te.c.hidden, c->un.c.ctx_dim);
        sd_free(c);
        return SD_ERR_MODEL;
    }
    if (!(c->tok = tokenizer_create(err, SD_ERR_LEN))) { sd_free(c); return SD_ERR_RUNTIME; }
    if (c->model.max_half_matrix > 0 && !(c->scratch = malloc((size_t)c->model.max_half_matrix * sizeof(float)))) {
        snprintf(err, SD_ERR_LEN, "out of memory for the weight conversion buffer");
        sd_free(c);
        return SD_ERR_NOMEM;
    }
    *out = c;
    return SD_OK;
}

void sd_free(sd_ctx *c) {
    if (!c) return;
    text_encoder_free(&c->te);
    unet_free(&c->un);
    vae_free(&c->va);
    tokenizer_free(c->tok);
    arena_free(&c->arena);
    free(c->scratch);
    model_close(&c->model);
    free(c);
}

static void print_dtypes(const sd_model *m, const char *prefix, FILE *f) {
    int counts[ST_DTYPE_COUNT] = {0};
    size_t len = strlen(prefix);
    for (int i = 0; i < m->file.n_tensors; i++)
        if (strncmp(m->file.tensors[i].name, prefix, len) == 0) counts[m->file.tensors[i].dtype]++;
    const char *sep = "";
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (counts[d]) { fprintf(f, "%s%s x%d", sep, st_dtype_name((st_dtype)d), counts[d]); sep = ", "; }
    fprintf(f, "\n");
}

void sd_print_info(const sd_ctx *c, void *file) {
    FILE *f = file;
    const sd_model *m = &c->model;
    const unet_config *u = &c->un.c;
    fprintf(f, "file:          %s\n", m->file.path);
    fprintf(f, "family:        %s\n", m->family == FAMILY_SD1 ? "SD 1.x" : "SD 2.x");
    fprintf(f, "prediction:    %s\n", m->prediction == PRED_V ? "v_prediction" : "epsilon");
    fprintf(f, "tensors:       %d\n", m->file.n_tensors);
    fprintf(f, "text encoder:  %lld parameters; hidden %d, layers %d, heads %d, mlp %d, vocab %d; dtypes ",
            (long long)model_param_count(m, "cond_stage_model."), c->te.c.hidden, c->te.c.layers, c->te.c.heads,
            c->te.c.mlp, c->te.c.vocab);
    print_dtypes(m, "cond_stage_model.", f);
    fprintf(f, "unet:          %lld parameters; channels %d, time %d, context %d, heads %d, blocks %d in / %d out; dtypes ",
            (long long)model_param_count(m, UNET_PREFIX), u->model_ch, u->time_dim, u->ctx_dim,
            u->head_dim ? 0 : u->heads, u->n_input, u->n_output);
    print_dtypes(m, UNET_PREFIX, f);
    fprintf(f, "vae:           %lld parameters; latent channels %d, levels %d, encoder %s; dtypes ",
            (long long)model_param_count(m, VAE_PREFIX), c->va.z_ch, c->va.dec.n_levels, c->va.has_encoder ? "yes" : "no");
    print_dtypes(m, VAE_PREFIX, f);
    fprintf(f, "metadata:      %d keys\n", m->file.n_meta);
    for (int i = 0; i < m->file.n_meta; i++) fprintf(f, "  %s = %s\n", m->file.meta[i].key, m->file.meta[i].value);
}

/* ---------------- parameters ---------------- */

void sd_gen_params_default(sd_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->prompt = "";
    p->negative_prompt = "";
    p->width = p->height = 512;
    p->steps = 20;
    p->cfg_scale = 7.5f;
    p->seed = 42;
    p->sampler = SD_SAMPLER_LMS;
}

sd_status sd_gen_params_check(const sd_gen_params *p, char err[SD_ERR_LEN]) {
    if (!p->prompt) { snprintf(err, SD_ERR_LEN, "prompt: missing"); return SD_ERR_ARG; }
    if (p->width < 64 || p->width > MAX_SIZE || p->width % 64)
        { snprintf(err, SD_ERR_LEN, "width: %d is not a multiple of 64 in 64..%d", p->width, MAX_SIZE); return SD_ERR_ARG; }
    if (p->height < 64 || p->height > MAX_SIZE || p->height % 64)
        { snprintf(err, SD_ERR_LEN, "height: %d is not a multiple of 64 in 64..%d", p->height, MAX_SIZE); return SD_ERR_ARG; }
    if (p->steps < 1 || p->steps > 1000) { snprintf(err, SD_ERR_LEN, "steps: %d is outside 1..1000", p->steps); return SD_ERR_ARG; }
    if (!(p->cfg_scale >= 0) || !isfinite(p->cfg_scale)) { snprintf(err, SD_ERR_LEN, "cfg-scale: %g must be a number >= 0", p->cfg_scale); return SD_ERR_ARG; }
    if (!(p->eta >= 0) || !isfinite(p->eta)) { snprintf(err, SD_ERR_LEN, "eta: %g must be a number >= 0", p->eta); return SD_ERR_ARG; }
    if ((unsigned)p->sampler >= SD_SAMPLER_COUNT) { snprintf(err, SD_ERR_LEN, "sampling-method: unknown sampler %d", (int)p->sampler); return SD_ERR_ARG; }
    if ((unsigned)p->schedule > SD_SCHEDULE_KARRAS || (unsigned)p->spacing > SD_SPACING_TRAILING ||
        (unsigned)p->rng > SD_RNG_CUDA || (unsigned)p->prediction > SD_PREDICTION_V)
        { snprintf(err, SD_ERR_LEN, "invalid scheduler, spacing, rng or prediction value"); return SD_ERR_ARG; }
    return SD_OK;
}

/* ---------------- pipeline ---------------- */

/* MemAvailable from /proc/meminfo in bytes (0 when unknown); SD_MEMORY_LIMIT (MB) caps it. */
static size_t available_memory(void) {
    const char *limit = getenv("SD_MEMORY_LIMIT");
    if (limit && atol(limit) > 0) return (size_t)atol(limit) << 20;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

/* Refuses sizes whose activations cannot fit, before any compute. */
static sd_status check_memory(const sd_ctx *c, const sd_gen_params *p, char *err) {
    size_t need = vae_decode_memory(&c->va, p->height / 8, p->width / 8), have = available_memory();
    if (have && need > have) {
        snprintf(err, SD_ERR_LEN, "size %dx%d needs about %.1f GB for the VAE decoder but only %.1f GB of memory is available",
                 p->width, p->height, (double)need / 1e9, (double)have / 1e9);
        return SD_ERR_NOMEM;
    }
    return SD_OK;
}

/* hidden[77, D] of a prompt. */
static sd_status encode_prompt(sd_ctx *c, const char *text, const char *what, float *hidden, char *err) {
    int ids[CLIP_CONTEXT];
    char terr[256];
    if (tokenizer_encode_padded(c->tok, text, ids, CLIP_CONTEXT, terr, sizeof terr) != 0) {
        snprintf(err, SD_ERR_LEN, "%s: %s", what, strchr(terr, ':') ? strchr(terr, ':') + 2 : terr);
        return SD_ERR_ARG;
    }
    if (text_encoder_forward(&c->te, ids, hidden, &c->arena, c->scratch) != 0) {
        snprintf(err, SD_ERR_LEN, "out of memory in the text encoder");
        return SD_ERR_NOMEM;
    }
    return SD_OK;
}

/* eps[n] = the guided model output for latent x at evaluation i of the sampler. */
static sd_status predict_noise(sd_ctx *c, const sampler *smp, int i, const float *x, const float *ctx, int guided,
                               float cfg, int v_pred, int h, int w, float *in, float *out, float *eps) {
    const size_t n = (size_t)c->un.c.in_ch * h * w;
    const int B = guided ? 2 : 1;
    const float scale = sampler_input_scale(smp, i), t = (float)sampler_timestep(smp, i);
    for (int b = 0; b < B; b++)
        for (size_t j = 0; j < n; j++) in[b * n + j] = x[j] * scale;
    const float ts[2] = {t, t};
    if (unet_forward(&c->un, in, ts, ctx, CLIP_CONTEXT, B, h, w, out, &c->arena, c->scratch) != 0) return SD_ERR_NOMEM;
    float ab = sampler_alpha_bar(smp, i), ra = sqrtf(ab), rb = sqrtf(1.0f - ab);
    for (int b = 0; b < B && v_pred; b++) /* v -> epsilon: eps = sqrt(ᾱ)·v + sqrt(1-ᾱ)·x_in */
        for (size_t j = 0; j < n; j++) out[b * n + j] = ra * out[b * n + j] + rb * in[b * n + j];
    if (guided) /* classifier-free guidance (Ho & Salimans 2022): eps_u + s·(eps_c - eps_u) */
        for (size_t j = 0; j < n; j++) eps[j] = out[j] + cfg * (out[n + j] - out[j]);
    else
        memcpy(eps, out, n * sizeof(float));
    return SD_OK;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs the sampler loop on x[n] (already drawn); ctx[B, 77, D]. */
static sd_status denoise(sd_ctx *c, const sd_gen_params *p, sampler *smp, sd_rng *rng, const float *ctx, int guided,
                         int h, int w, float *x, char *err) {
    const size_t n = (size_t)c->un.c.in_ch * h * w;
    const int evals = sampler_evals(smp);
    int v_pred = p->prediction == SD_PREDICTION_V || (p->prediction == SD_PREDICTION_DEFAULT && c->model.prediction == PRED_V);
    float *in = malloc(2 * n * sizeof(float)), *out = malloc(2 * n * sizeof(float)), *eps = malloc(n * sizeof(float));
    double *times = malloc((size_t)evals * sizeof(double));
    sd_status st = SD_OK;
    if (!in || !out || !eps || !times) { st = SD_ERR_NOMEM; snprintf(err, SD_ERR_LEN, "out of memory"); goto done; }
    for (int i = 0; i < evals; i++) {
        double t0 = now_s();
        st = predict_noise(c, smp, i, x, ctx, guided, p->cfg_scale, v_pred, h, w, in, out, eps);
        if (st != SD_OK) { snprintf(err, SD_ERR_LEN, "out of memory in the UNet at %dx%d", w * 8, h * 8); goto done; }
        sampler_step(smp, i, eps, x, rng);
        times[i] = now_s() - t0;
        if (p->progress) {
            sd_progress pr = {i + 1, evals, times[i]};
            p->progress(&pr, p->progress_user);
        }
        if (p->cancel && *p->cancel) { st = SD_ERR_CANCELLED; snprintf(err, SD_ERR_LEN, "cancelled after step %d of %d", i + 1, evals); goto done; }
    }
    qsort(times, (size_t)evals, sizeof(double), compare_doubles);
    c->timings.step_median_s = times[evals / 2];
done:
    free(in); free(out); free(eps); free(times);
    return st;
}

/* rgb[H, W, 3] = round(255 · clamp(image / 2 + 0.5, 0, 1)) from image[3, H, W]. */
static void to_rgb8(const float *image, int H, int W, uint8_t *rgb) {
    const size_t P = (size_t)H * W;
    for (size_t p = 0; p < P; p++)
        for (int ch = 0; ch < 3; ch++) {
            float v = image[ch * P + p] / 2.0f + 0.5f;
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            rgb[p * 3 + ch] = (uint8_t)nearbyintf(v * 255.0f);
        }
}

static sd_status decode(sd_ctx *c, const float *latent, int h, int w, sd_image *img, char *err) {
    const size_t n = (size_t)c->va.z_ch * h * w, P = (size_t)64 * h * w;
    float *z = malloc(n * sizeof(float)), *image = malloc(3 * P * sizeof(float));
    img->rgb = malloc(3 * P);
    sd_status st = SD_OK;
    if (!z || !image || !img->rgb) { st = SD_ERR_NOMEM; goto done; }
    for (size_t j = 0; j < n; j++) z[j] = latent[j] / VAE_SCALE;
    if (vae_decode(&c->va, z, 1, h, w, image, &c->arena, c->scratch) != 0) { st = SD_ERR_NOMEM; goto done; }
    to_rgb8(image, 8 * h, 8 * w, img->rgb);
done:
    if (st != SD_OK) snprintf(err, SD_ERR_LEN, "out of memory in the VAE decoder at %dx%d", 8 * w, 8 * h);
    free(z);
    free(image);
    return st;
}

/* After a stage: its weight pages and the activation memory go back, so the peak is the largest
 * stage rather than the sum of them. */
static void release_stage(sd_ctx *c, const char *prefix) {
    model_release(&c->model, prefix);
    arena_free(&c->arena);
    arena_init(&c->arena);
}

sd_status sd_txt2img(sd_ctx *c, const sd_gen_params *p, sd_image *img, char err[SD_ERR_LEN]) {
    memset(img, 0, sizeof *img);
    memset(&c->timings, 0, sizeof c->timings);
    sd_status st = sd_gen_params_check(p, err);
    if (st == SD_OK) st = check_memory(c, p, err);
    if (st != SD_OK) return st;
    const int h = p->height / 8, w = p->width / 8, D = c->te.c.hidden, guided = p->cfg_scale > 1.0f;
    const size_t n = (size_t)c->un.c.in_ch * h * w, ctx_size = (size_t)CLIP_CONTEXT * D;
    float *ctx = malloc(2 * ctx_size * sizeof(float)); /* [uncond; cond] or [cond] */
    float *latent = malloc(n * sizeof(float));
    sampler *smp = NULL;
    if (!ctx || !latent) { st = SD_ERR_NOMEM; snprintf(err, SD_ERR_LEN, "out of memory"); goto fail; }
    double t0 = now_s();
    if (guided) st = encode_prompt(c, p->negative_prompt ? p->negative_prompt : "", "negative prompt", ctx, err);
    if (st == SD_OK) st = encode_prompt(c, p->prompt, "prompt", ctx + (guided ? ctx_size : 0), err);
    if (st != SD_OK) goto fail;
    c->timings.text_s = now_s() - t0;
    model_release(&c->model, SD1_TEXT_PREFIX); /* the text encoder is done: give its pages back */
    sampler_opts so = {p->sampler, p->steps, (spacing_kind)p->spacing, p->schedule == SD_SCHEDULE_KARRAS, p->eta};
    if (!(smp = sampler_create(&so, &c->sched, n, err, SD_ERR_LEN))) { st = SD_ERR_ARG; goto fail; }
    sd_rng rng;
    rng_init(&rng, p->rng == SD_RNG_CUDA ? RNG_CUDA : RNG_CPU, p->seed);
    rng_randn(&rng, latent, n);
    const float init_sigma = sampler_init_sigma(smp);
    for (size_t j = 0; j < n; j++) latent[j] *= init_sigma;
    t0 = now_s();
    st = denoise(c, p, smp, &rng, ctx, guided, h, w, latent, err);
    release_stage(c, UNET_PREFIX);
    if (st != SD_OK) goto fail;
    c->timings.sampling_s = now_s() - t0;
    t0 = now_s();
    st = decode(c, latent, h, w, img, err);
    release_stage(c, VAE_PREFIX);
    if (st != SD_OK) goto fail;
    c->timings.decode_s = now_s() - t0;
    c->timings.peak_rss_bytes = peak_rss_bytes();
    img->width = p->width;
    img->height = p->height;
    img->latent = latent;
    img->latent_channels = c->un.c.in_ch;
    sampler_free(smp);
    free(ctx);
    return SD_OK;
fail:
    sampler_free(smp);
    free(ctx);
    free(latent);
    free(img->rgb);
    img->rgb = NULL;
    return st;
}

void sd_image_free(sd_image *img) {
    free(img->rgb);
    free(img->latent);
    memset(img, 0, sizeof *img);
}

void sd_get_timings(const sd_ctx *c, sd_timings *t) { *t = c->timings; }
