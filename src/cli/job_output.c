/* job_output.c - a job's PNG, parameters text, latent and JSON line (see job_output.h). */
#include "job_output.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *base_name(const char *path) { return strrchr(path, '/') ? strrchr(path, '/') + 1 : path; }

/* The length of a file name without its extension ("x.safetensors": 1; ".hidden" and "noext" whole), as
 * AUTOMATIC1111 names models, LoRAs and upscalers. */
static int stem_len(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && dot != name ? (int)(dot - name) : (int)strlen(name);
}

/* SDXL's size conditioning, where it is not the default (the output size, no crop). */
static void append_size_conditioning(char *t, size_t len, int *n, const sd_gen_params *g) {
    if (g->original_width || g->original_height)
        *n += snprintf(t + *n, len - (size_t)*n, ", Original size: %dx%d", g->original_width, g->original_height);
    if (g->crop_top || g->crop_left)
        *n += snprintf(t + *n, len - (size_t)*n, ", Crop coords: %dx%d", g->crop_top, g->crop_left);
    if (g->target_width || g->target_height)
        *n += snprintf(t + *n, len - (size_t)*n, ", Target size: %dx%d", g->target_width, g->target_height);
}

/* AUTOMATIC1111's TI hashes: "name: hash, ..." of the embeddings the prompt and the negative prompt use. */
static void append_ti_hashes(char *t, size_t len, int *n, const sd_ctx *ctx, const sd_gen_params *g) {
    sd_embedding_use used[32];
    int k = sd_prompt_embeddings(ctx, g->prompt, used, 16);
    k = k < 0 ? 0 : k > 16 ? 16 : k;
    int m = sd_prompt_embeddings(ctx, g->negative_prompt, used + k, 16);
    m = m < 0 ? 0 : m > 16 ? 16 : m;
    int written = 0;
    for (int i = 0; i < k + m; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= !strcmp(used[j].name, used[i].name);
        if (dup) continue;
        *n += snprintf(t + *n, len - (size_t)*n, "%s%s: %s", written++ ? ", " : ", TI hashes: \"", used[i].name,
                       used[i].hash);
    }
    if (written) *n += snprintf(t + *n, len - (size_t)*n, "\"");
}

/* The first pass's size (what AUTOMATIC1111 records as Size with the hires fix): -W/-H, else the model's. */
static void first_pass_size(const sd_gen_params *g, const sd_model_info *mi, const sd_image *img, int *w, int *h) {
    *w = img->width;
    *h = img->height;
    if (!(g->hires_scale > 1)) return;
    *w = g->width ? g->width : mi->default_width;
    *h = g->height ? g->height : mi->default_height;
}

/* The hires fix's second pass, by AUTOMATIC1111's names. */
static void append_hires(char *t, size_t len, int *n, const cli_args *a, const sd_gen_params *g) {
    const char *name = g->hires_upscaler == SD_HIRES_LATENT    ? "Latent"
                       : g->hires_upscaler == SD_HIRES_LANCZOS ? "Lanczos"
                                                               : NULL;
    int name_len = name ? (int)strlen(name) : 0;
    if (!name) {
        name = base_name(a->hires_upscaler);
        name_len = stem_len(name);
    }
    *n += snprintf(t + *n, len - (size_t)*n,
                   ", Hires upscale: %g, Hires steps: %d, Hires upscaler: %.*s, Denoising "
                   "strength: %g",
                   g->hires_scale, g->hires_steps ? g->hires_steps : g->steps, name_len, name, g->hires_strength);
}

char *job_parameters(const cli_args *a, const job_settings *s, const sd_ctx *ctx, const sd_image *img, int post_scale) {
    const sd_gen_params *g = &s->gen;
    const sd_sampler_info *si = sd_sampler_get_info(g->sampler);
    sd_model_info mi;
    sd_get_model_info(ctx, &mi);
    const char *model = base_name(a->model);
    const int model_len = stem_len(model);
    size_t len =
        strlen(g->prompt) + strlen(g->negative_prompt) + strlen(model) + 1024 + 32 * 300; /* TI hashes: 32 names */
    for (int i = 0; i < a->n_loras; i++) len += strlen(a->loras[i].path) + 32;
    if (a->vae) len += strlen(a->vae);
    if (a->taesd) len += strlen(a->taesd);
    if (a->control_net) len += strlen(a->control_net) + 256;
    if (a->hires_upscaler) len += strlen(a->hires_upscaler) + 128;
    if (a->upscale_model) len += strlen(a->upscale_model) + 128;
    char *t = malloc(len);
    if (!t) return NULL;
    int n = snprintf(t, len, "%s\n", g->prompt);
#define APPEND(...) n += snprintf(t + n, len - (size_t)n, __VA_ARGS__)
    if (g->negative_prompt[0]) APPEND("Negative prompt: %s\n", g->negative_prompt);
    APPEND("Steps: %d, Sampler: %s, ", g->steps, si->a1111_name);
    if (g->schedule == SD_SCHEDULE_KARRAS && si->uses_karras) APPEND("Schedule type: Karras, ");
    int w, h;
    first_pass_size(g, &mi, img, &w, &h);
    APPEND("CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %.*s", g->cfg_scale, (unsigned long long)g->seed, w, h,
           model_len, model);
    if (a->vae) APPEND(", VAE: %s", base_name(a->vae)); /* AUTOMATIC1111: "VAE: name.safetensors" */
    sd_timings tm;
    sd_get_timings(ctx, &tm);
    if (tm.vae_tiled) APPEND(", VAE tiles: %d", tm.vae_tiled);
    if (a->taesd) APPEND(", TAESD: %s", base_name(a->taesd));
    if (tm.bf16) APPEND(", Precision: bf16");
    if (g->clip_skip > 1) APPEND(", Clip skip: %d", g->clip_skip);
    if (g->init_image) APPEND(", Denoising strength: %g", g->strength);
    if (g->hires_scale > 1) append_hires(t, len, &n, a, g);
    if (g->mask) APPEND(", Mask blur: 0");
    for (int i = 0; i < a->n_loras; i++) { /* LoRA: "name: 1, other: 0.5", quoted as AUTOMATIC1111 quotes values */
        const char *name = base_name(a->loras[i].path);
        APPEND("%s%.*s: %g", i ? ", " : ", LoRA: \"", stem_len(name), name, a->loras[i].multiplier);
        if (i == a->n_loras - 1) APPEND("\"");
    }
    append_ti_hashes(t, len, &n, ctx, g);
    if (a->control_net) { /* as AUTOMATIC1111's ControlNet extension writes it */
        const char *name = base_name(a->control_net);
        APPEND(", ControlNet 0: \"Module: none, Model: %.*s, Weight: %g, Resize Mode: Just Resize, Low Vram: False, "
               "Guidance Start: %g, Guidance End: %g, Pixel Perfect: False, Control Mode: Balanced\"",
               stem_len(name), name, g->control_strength, g->control_start, g->control_end);
    }
    if (g->eta > 0 && si->uses_eta) APPEND(", Eta DDIM: %g", g->eta);
    const sd_spacing spacing = mi.default_spacing ? mi.default_spacing : si->default_spacing; /* the run's default */
    if (g->spacing && g->spacing != spacing) APPEND(", Timestep spacing: %s", sd_spacing_name(g->spacing));
    if (mi.size_conditioning) append_size_conditioning(t, len, &n, g);
    if (g->prediction && g->prediction != mi.prediction)
        APPEND(", Prediction: %s", g->prediction == SD_PREDICTION_V ? "v_prediction" : "epsilon");
    APPEND(", RNG: %s", g->rng == SD_RNG_CUDA ? "GPU" : "CPU");
#undef APPEND
    if (post_scale > 1) job_postprocess_parameters(t, len, a->upscale_model, post_scale);
    return t;
}

void job_postprocess_parameters(char *t, size_t len, const char *model, int scale) {
    const char *name = base_name(model);
    size_t n = strlen(t);
    snprintf(t + n, len - n, "%sPostprocess upscaler: %.*s, Postprocess upscale by: %d", n ? ", " : "", stem_len(name),
             name, scale);
}

int job_write(const cli_args *a, const job *j, const sd_ctx *ctx, const sd_image *img, const sd_image *post,
              int post_scale, char *err, size_t errlen) {
    char *text = job_parameters(a, &j->s, ctx, img, post ? post_scale : 1);
    const sd_image *png = post ? post : img;
    int rc = text ? output_write_png(j->png, png->rgb, png->width, png->height, "parameters", text, err, errlen)
                  : (snprintf(err, errlen, "out of memory"), -1);
    if (!rc && j->latent) {
        int64_t shape[4] = {1, img->latent_channels, img->height / 8, img->width / 8};
        rc = output_write_tensor(j->latent, "latent", shape, 4, img->latent, err, errlen);
    }
    free(text);
    return rc;
}

void job_json_line(FILE *f, const job *j, int jobs, int w, int h, double seconds, int skipped) {
    const sd_gen_params *g = &j->s.gen;
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    cJSON_AddNumberToObject(o, "job", j->number);
    cJSON_AddNumberToObject(o, "jobs", jobs);
    cJSON_AddStringToObject(o, "path", j->png);
    if (j->latent) cJSON_AddStringToObject(o, "latent", j->latent);
    if (skipped) cJSON_AddTrueToObject(o, "skipped");
    char seed[24]; /* as text too: a double cannot hold every 64-bit seed */
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->seed);
    cJSON_AddRawToObject(o, "seed", seed);
    cJSON_AddStringToObject(o, "prompt", g->prompt);
    cJSON_AddStringToObject(o, "negative_prompt", g->negative_prompt);
    cJSON_AddNumberToObject(o, "steps", g->steps);
    char cfg[32]; /* the float as typed (7.5, 6.1), not its binary expansion */
    snprintf(cfg, sizeof cfg, "%g", g->cfg_scale);
    cJSON_AddRawToObject(o, "cfg_scale", cfg);
    cJSON_AddStringToObject(o, "sampler", sd_sampler_name(g->sampler));
    cJSON_AddStringToObject(o, "scheduler", g->schedule == SD_SCHEDULE_KARRAS ? "karras" : "default");
    cJSON_AddNumberToObject(o, "width", w);
    cJSON_AddNumberToObject(o, "height", h);
    if (g->init_image) cJSON_AddNumberToObject(o, "strength", g->strength);
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", seconds);
    if (!skipped) cJSON_AddRawToObject(o, "seconds", secs);
    char *text = cJSON_PrintUnformatted(o);
    if (text) {
        fprintf(f, "%s\n", text);
        fflush(f);
    }
    free(text);
    cJSON_Delete(o);
}
