/* sd.c - the library's context: loading a checkpoint, describing it, parameters, status strings.
 * The generation pipeline is in pipeline.c. */
#include "pipeline/context.h"

#include "nn/gemm.h"
#include "model/lora.h"
#include "text/prompt.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stb_image.h>

#define MIN_SIZE 64
#define MAX_SIZE 4096
#define STR2(x)  #x
#define STR(x)   STR2(x)

const char *sd_version(void) { return STR(SD_VERSION_MAJOR) "." STR(SD_VERSION_MINOR) "." STR(SD_VERSION_PATCH); }

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

double sd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sd_release_stage(sd_ctx *c, const char *prefix) {
    if (!c->keep_weights) store_release(&c->model.store, prefix);
    compute_end_stage(&c->cc);
}

/* ---------------- loading ---------------- */

/* SD 2.x files carry no prediction type. AUTOMATIC1111's rule (sd_models_config.py,
 * is_using_v_parameterization_for_sd2): run the UNet once on x = 0.5 (1x4x8x8), t = 999, a 0.5 context of
 * two tokens; mean(out − x) < −1 means v-prediction (768 models), otherwise epsilon (512 base, Turbo). The test
 * runs in float32 whatever the context's precision, so that the answer does not depend on it. */
static sd_status detect_prediction(sd_ctx *c, char *err, size_t errlen) {
    model_desc *d = &c->model.d;
    const int h = 8, w = 8, in = c->un.c.in_ch, out_ch = c->un.c.out_ch, D = c->un.c.ctx_dim, A = c->un.c.added_dim;
    float *x = malloc((size_t)in * h * w * sizeof(float));     /* [1, in, 8, 8] */
    float *y = malloc((size_t)out_ch * h * w * sizeof(float)); /* [1, out, 8, 8] */
    float *ctx = malloc((size_t)2 * D * sizeof(float));        /* [1, 2, D] */
    float *added = calloc((size_t)A + 1, sizeof(float));       /* [1, A] */
    const float t = 999.0f;
    sd_status st = SD_ERR_NOMEM;
    if (x && y && ctx && added) {
        for (int i = 0; i < in * h * w; i++) x[i] = 0.5f;
        for (int i = 0; i < 2 * D; i++) ctx[i] = 0.5f;
        const int bf16 = c->cc.bf16;
        c->cc.bf16 = 0;
        compute_begin(&c->cc, NULL, NULL);
        const unet_input ui = {x, &t, ctx, 2, A ? added : NULL, NULL, 1, h, w};
        st = unet_forward(&c->cc, &c->un, &ui, y);
        c->cc.bf16 = bf16;
    }
    if (st == SD_OK) {
        double mean = 0;
        for (int i = 0; i < out_ch * h * w; i++) mean += y[i] - 0.5;
        d->prediction = mean / (out_ch * h * w) < -1.0 ? PRED_V : PRED_EPSILON;
    }
    free(x);
    free(y);
    free(ctx);
    free(added);
    sd_release_stage(c, UNET_PREFIX);
    if (st != SD_OK) snprintf(err, errlen, "out of memory detecting the prediction type");
    return st;
}

/* The description's facts that need the loaded networks. */
static sd_status complete_description(sd_ctx *c, const char *path, char *err, size_t errlen) {
    model_desc *d = &c->model.d;
    if (d->context_width != c->un.c.ctx_dim) {
        snprintf(err, errlen, "%s: text encoder width %d does not match the UNet's context width %d", path,
                 d->context_width, c->un.c.ctx_dim);
        return SD_ERR_MODEL;
    }
    if (c->un.c.added_dim != d->added_width) {
        snprintf(err, errlen, "%s: tensor '" UNET_PREFIX "label_emb.0.0.weight' %s, but the %s family %s", path,
                 c->un.c.added_dim ? "takes added conditioning" : "is missing", d->family_name,
                 d->added_width ? "has added conditioning" : "has none");
        return SD_ERR_MODEL;
    }
    for (int i = 0; i < d->n_text; i++)
        if (d->text[i].pooled && c->te[i].c.projection != d->pooled_width) {
            snprintf(err, errlen, "%s: text encoder %d's projection gives %d values, the UNet takes %d", path, i + 1,
                     c->te[i].c.projection, d->pooled_width);
            return SD_ERR_MODEL;
        }
    if (c->un.c.out_ch != d->latent_ch) {
        snprintf(err, errlen, "%s: tensor '" UNET_PREFIX "out.2.weight' gives %d channels, the VAE's latent has %d",
                 path, c->un.c.out_ch, d->latent_ch);
        return SD_ERR_MODEL;
    }
    /* SD 2.x uses OpenCLIP ViT-H/14's penultimate layer: 23 of its 24. Files that were saved without the
     * unused 24th block (23 present) use all of them; other sizes: all but the last present. */
    text_encoder_desc *t0 = &d->text[0];
    if (d->family == FAMILY_SD2 && c->te[0].c.hidden == 1024 && c->te[0].c.layers == 23) t0->skip = 0;
    if (d->prediction == PRED_UNKNOWN) {
        sd_status st = detect_prediction(c, err, errlen);
        if (st != SD_OK) return st;
    }
    if (d->family == FAMILY_SD2 && d->prediction == PRED_V) d->default_size = 768;
    size_t n = 0;
    for (int i = 0; i < d->n_text; i++)
        n += (size_t)snprintf(c->text_names + n, sizeof c->text_names - n, "%s%s", i ? " + " : "", d->text[i].name);
    return SD_OK;
}

int sd_bf16_supported(void) { return gemm_bf16_supported(); }

void sd_load_params_default(sd_load_params *p) { memset(p, 0, sizeof *p); }

/* The LoRA set for the requested files, hung on the store so that the weight loader merges the deltas. */
static sd_status open_loras(sd_ctx *c, const sd_load_params *p, char *err, size_t errlen) {
    if (p->n_loras <= 0) return SD_OK;
    if (!(c->model.store.lora = lora_set_create(&c->model.store, &c->model.d))) {
        snprintf(err, errlen, "out of memory for the LoRA table");
        return SD_ERR_NOMEM;
    }
    for (int i = 0; i < p->n_loras; i++) {
        const sd_lora *l = &p->loras[i];
        if (!l->path || !isfinite(l->multiplier)) {
            snprintf(err, errlen, "lora %d: no path or a non-finite multiplier", i + 1);
            return SD_ERR_ARG;
        }
        if (lora_set_add(c->model.store.lora, l->path, l->multiplier, p->log, p->verbose, err, errlen) != 0)
            return SD_ERR_MODEL;
    }
    return SD_OK;
}

/* TAESD in place of the VAE: its latent must be the model's. */
static sd_status load_taesd(sd_ctx *c, const char *path, char *err, size_t errlen) {
    if (!(c->tae = calloc(1, sizeof *c->tae))) {
        snprintf(err, errlen, "out of memory");
        return SD_ERR_NOMEM;
    }
    sd_status st = taesd_load(c->tae, path, err, errlen);
    if (st != SD_OK) {
        free(c->tae);
        c->tae = NULL;
        return st == SD_ERR_NOMEM ? st : SD_ERR_MODEL;
    }
    if (!c->tae->has_decoder || c->tae->latent_ch != c->model.d.latent_ch) {
        snprintf(err, errlen, "%s: %s", path,
                 !c->tae->has_decoder ? "a TAESD encoder only; images need its decoder"
                                      : "its latent channels differ from the model's");
        return SD_ERR_MODEL;
    }
    return SD_OK;
}

/* The embeddings of dir, for this model's encoders. */
static sd_status load_embeddings(sd_ctx *c, const char *dir, FILE *log, char *err, size_t errlen) {
    int widths[MAX_TEXT_ENCODERS];
    for (int i = 0; i < c->model.d.n_text; i++) widths[i] = c->model.d.text[i].width;
    return embeddings_load_dir(&c->emb, dir, c->tok, &c->model.d, widths, log, err, errlen);
}

/* A ControlNet for the loaded UNet. */
static sd_status load_controlnet(sd_ctx *c, const char *path, char *err, size_t errlen) {
    if (!(c->cn = calloc(1, sizeof *c->cn))) {
        snprintf(err, errlen, "out of memory");
        return SD_ERR_NOMEM;
    }
    sd_status st = controlnet_load(c->cn, path, &c->model.d, &c->un, err, errlen);
    return st == SD_OK || st == SD_ERR_NOMEM ? st : SD_ERR_MODEL;
}

/* The networks of the checkpoint: every text encoder, the UNet, the VAE (LoRAs merge as they load). */
static sd_status load_networks(sd_ctx *c, char *err, size_t errlen) {
    sd_model *m = &c->model;
    sd_status st = SD_OK;
    for (int i = 0; i < m->d.n_text && st == SD_OK; i++)
        st = text_encoder_load(&c->te[i], &m->store, &m->d.text[i], err, errlen);
    if (st == SD_OK) st = unet_load(&c->un, &m->store, &m->d, err, errlen);
    if (st == SD_OK) st = vae_load(&c->va, &m->store, err, errlen);
    return st;
}

sd_status sd_load_with(sd_ctx **out, const sd_load_params *p, char err[SD_ERR_LEN]) {
    *out = NULL;
    sd_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, SD_ERR_LEN, "out of memory");
        return SD_ERR_NOMEM;
    }
    const char *path = p->model_path ? p->model_path : "";
    compute_init(&c->cc, p->n_threads, p->precision == SD_PRECISION_BF16, p->low_memory);
    c->keep_weights = p->keep_weights && !p->low_memory;
    c->low_memory = p->low_memory;
    schedule_init(&c->sched);
    sd_status st = model_open(&c->model, path, p->vae_path, err, SD_ERR_LEN);
    if (st != SD_OK) {
        compute_free(&c->cc);
        free(c);
        return st;
    }
    st = open_loras(c, p, err, SD_ERR_LEN);
    if (st == SD_OK) st = load_networks(c, err, SD_ERR_LEN);
    if (st == SD_OK && c->model.store.lora) lora_set_report(c->model.store.lora, p->log);
    lora_set_free(c->model.store.lora); /* merged: the adapters are not needed any more */
    c->model.store.lora = NULL;
    if (st == SD_OK && p->taesd_path) st = load_taesd(c, p->taesd_path, err, SD_ERR_LEN);
    if (st == SD_OK && p->controlnet_path) st = load_controlnet(c, p->controlnet_path, err, SD_ERR_LEN);
    if (st == SD_OK && !(c->tok = tokenizer_create(err, SD_ERR_LEN))) st = SD_ERR_RUNTIME;
    if (st == SD_OK && p->embeddings_dir) st = load_embeddings(c, p->embeddings_dir, p->log, err, SD_ERR_LEN);
    int64_t half = c->model.store.max_half_matrix;
    if (c->tae && taesd_max_half(c->tae) > half) half = taesd_max_half(c->tae);
    if (c->cn && c->cn->store.max_half_matrix > half) half = c->cn->store.max_half_matrix;
    if (st == SD_OK && compute_reserve_scratch(&c->cc, (size_t)half) != SD_OK) {
        snprintf(err, SD_ERR_LEN, "out of memory for the weight conversion buffer");
        st = SD_ERR_NOMEM;
    }
    if (st == SD_OK) st = complete_description(c, path, err, SD_ERR_LEN);
    if (st != SD_OK) {
        sd_free(c);
        return st;
    }
    *out = c;
    return SD_OK;
}

sd_status sd_load(sd_ctx **out, const char *path, int n_threads, char err[SD_ERR_LEN]) {
    sd_load_params p;
    sd_load_params_default(&p);
    p.model_path = path;
    p.n_threads = n_threads;
    return sd_load_with(out, &p, err);
}

void sd_free(sd_ctx *c) {
    if (!c) return;
    for (int i = 0; i < MAX_TEXT_ENCODERS; i++) text_encoder_free(&c->te[i]);
    unet_free(&c->un);
    vae_free(&c->va);
    if (c->tae) taesd_free(c->tae);
    free(c->tae);
    if (c->cn) controlnet_free(c->cn);
    free(c->cn);
    tokenizer_free(c->tok);
    cond_cache_free(&c->prompts);
    embeddings_free(&c->emb);
    compute_free(&c->cc);
    model_close(&c->model);
    free(c);
}

/* ---------------- description ---------------- */

void sd_get_model_info(const sd_ctx *c, sd_model_info *info) {
    const model_desc *d = &c->model.d;
    info->family = d->family_name;
    info->text_encoder = c->text_names;
    info->prediction = d->prediction == PRED_V ? SD_PREDICTION_V : SD_PREDICTION_EPSILON;
    info->default_width = info->default_height = d->default_size;
    info->unet_in_channels = d->unet_in_ch;
    info->latent_channels = d->latent_ch;
    info->default_spacing = d->default_spacing;
    info->size_conditioning = d->time_ids > 0;
}

static void print_dtypes(const tensor_store *s, const char *prefix, FILE *f) {
    int counts[ST_DTYPE_COUNT] = {0};
    size_t len = strlen(prefix);
    for (int i = 0; i < s->file.n_tensors; i++)
        if (strncmp(s->file.tensors[i].name, prefix, len) == 0) counts[s->file.tensors[i].dtype]++;
    const char *sep = "";
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (counts[d]) {
            fprintf(f, "%s%s x%d", sep, st_dtype_name((st_dtype)d), counts[d]);
            sep = ", ";
        }
    fprintf(f, "\n");
}

/* Where the prediction type came from, for --info. */
static const char *prediction_source(const sd_model *m) {
    if (st_meta_get(&m->store.file, "sd.prediction")) return "metadata sd.prediction";
    if (m->d.family == FAMILY_SD2) return "UNet test as AUTOMATIC1111 (mean(unet(0.5) - 0.5) < -1: v)";
    return "the family's default";
}

/* One line per text encoder: which output the UNet takes, then sizes and dtypes. */
static void print_encoders(const sd_ctx *c, FILE *f) {
    const model_desc *d = &c->model.d;
    for (int i = 0; i < d->n_text; i++) {
        const text_encoder_desc *e = &d->text[i];
        const text_config *tc = &c->te[i].c;
        fprintf(f, "text encoder%s %s, output after %d of its %d layers%s%s%s\n",
                d->n_text > 1 ? (i ? " 2:" : " 1:") : ": ", e->name, tc->layers - e->skip, tc->layers,
                e->final_norm ? "" : " (no final LayerNorm)",
                e->pooled ? ", pooled output through text_projection" : "",
                d->family == FAMILY_SD2 ? " (SD 2.x: the penultimate layer of ViT-H/14's 24)" : "");
    }
    for (int i = 0; i < d->n_text; i++) {
        const text_config *tc = &c->te[i].c;
        fprintf(f, "text encoder%s %lld parameters; hidden %d, layers %d, heads %d, mlp %d, vocab %d; dtypes ",
                d->n_text > 1 ? (i ? " 2:" : " 1:") : ": ",
                (long long)store_param_count(&c->model.store, d->text[i].prefix), tc->hidden, tc->layers, tc->heads,
                tc->mlp, tc->vocab);
        print_dtypes(&c->model.store, d->text[i].prefix, f);
    }
}

void sd_print_info(const sd_ctx *c, FILE *f) {
    const sd_model *m = &c->model;
    const model_desc *d = &m->d;
    const unet_config *u = &c->un.c;
    fprintf(f, "file:          %s\n", m->store.file.path);
    fprintf(f, "format:        %s\n", formats_describe(m->store.format));
    fprintf(f, "family:        %s%s\n", d->family_name, d->unet_in_ch != d->latent_ch ? " (inpainting UNet)" : "");
    fprintf(f, "prediction:    %s (%s)\n", d->prediction == PRED_V ? "v_prediction" : "epsilon", prediction_source(m));
    fprintf(f, "default size:  %dx%d\n", d->default_size, d->default_size);
    fprintf(f, "tensors:       %d\n", m->store.file.n_tensors);
    print_encoders(c, f);
    fprintf(f, "conditioning:  context %d per token", d->context_width);
    if (u->added_dim)
        fprintf(f, ", added vector %d (pooled %d + %d size ids x %d)", u->added_dim, d->pooled_width, d->time_ids,
                d->time_id_dim);
    fprintf(f, "\n");
    fprintf(f,
            "unet:          %lld parameters; channels %d, in %d, time %d, context %d, heads %s%d, blocks %d in / %d "
            "out; dtypes ",
            (long long)store_param_count(&m->store, UNET_PREFIX), u->model_ch, u->in_ch, u->time_dim, u->ctx_dim,
            u->head_dim ? "of width " : "", u->head_dim ? u->head_dim : u->heads, u->n_input, u->n_output);
    print_dtypes(&m->store, UNET_PREFIX, f);
    fprintf(f, "vae:           %lld parameters; latent channels %d (scale %g), levels %d, encoder %s; dtypes ",
            (long long)store_param_count(&m->store, VAE_PREFIX), c->va.z_ch, d->vae_scale, c->va.dec.n_levels,
            c->va.has_encoder ? "yes" : "no");
    print_dtypes(&m->store, VAE_PREFIX, f);
    if (c->cn) {
        fprintf(f, "controlnet:    %s: %lld parameters, hint encoder to %d channels, %d zero convolutions; dtypes ",
                c->cn->store.file.path, (long long)store_param_count(&c->cn->store, ""), c->cn->enc.c.model_ch,
                c->cn->enc.c.n_input);
        print_dtypes(&c->cn->store, "", f);
    }
    fprintf(f, "metadata:      %d keys\n", m->store.file.n_meta);
    for (int i = 0; i < m->store.file.n_meta; i++)
        fprintf(f, "  %s = %s\n", m->store.file.meta[i].key, m->store.file.meta[i].value);
}

void sd_get_timings(const sd_ctx *c, sd_timings *t) { *t = c->timings; }

/* ---------------- parameters ---------------- */

void sd_gen_params_default(sd_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->prompt = "";
    p->negative_prompt = "";
    p->steps = 20;
    p->cfg_scale = 7.5f;
    p->seed = 42;
    p->sampler = SD_SAMPLER_LMS;
    p->strength = 0.75;
    p->control_strength = 1.0f;
    p->control_start = 0.0;
    p->control_end = 1.0;
    p->hires_strength = 0.7;
}

static sd_status check_size(const char *what, int v, char *err) {
    if (v == 0) return SD_OK; /* the default */
    if (v < MIN_SIZE || v > MAX_SIZE || v % 8) {
        snprintf(err, SD_ERR_LEN, "%s: %d is not a multiple of 8 in %d..%d", what, v, MIN_SIZE, MAX_SIZE);
        return SD_ERR_ARG;
    }
    return SD_OK;
}

/* A size-conditioning value: 0 (the default) or a pixel count. */
static sd_status check_condition_size(const char *what, int v, char *err) {
    if (v >= 0 && v <= 65536) return SD_OK;
    snprintf(err, SD_ERR_LEN, "%s: %d is outside 0..65536 pixels", what, v);
    return SD_ERR_ARG;
}

static sd_status check_pixels(const char *what, const sd_pixels *px, char *err) {
    if (!px) return SD_OK;
    if (!px->data || px->width < 1 || px->height < 1 || px->channels < 1 || px->channels > 4) {
        snprintf(err, SD_ERR_LEN, "%s: not a valid image", what);
        return SD_ERR_ARG;
    }
    if (px->width < 8 || px->height < 8 || px->width > MAX_SIZE || px->height > MAX_SIZE) {
        snprintf(err, SD_ERR_LEN, "%s: %dx%d is outside %dx%d..%dx%d pixels", what, px->width, px->height, 8, 8,
                 MAX_SIZE, MAX_SIZE);
        return SD_ERR_ARG;
    }
    return SD_OK;
}

/* The ControlNet settings: a strength in 0..10, a window 0 <= start < end <= 1, a valid control image. */
static sd_status check_control(const sd_gen_params *p, char *err) {
    if (!(p->control_strength >= 0.0f && p->control_strength <= 10.0f)) {
        snprintf(err, SD_ERR_LEN, "control-strength: %g is outside 0..10", p->control_strength);
        return SD_ERR_ARG;
    }
    if (!(p->control_start >= 0.0 && p->control_start <= 1.0) || !(p->control_end >= 0.0 && p->control_end <= 1.0)) {
        snprintf(err, SD_ERR_LEN, "control-start / control-end: %g / %g must be fractions of the steps in 0..1",
                 p->control_start, p->control_end);
        return SD_ERR_ARG;
    }
    if (!(p->control_start < p->control_end)) {
        snprintf(err, SD_ERR_LEN, "control-start: %g must be below control-end %g", p->control_start, p->control_end);
        return SD_ERR_ARG;
    }
    return check_pixels("control image", p->control_image, err);
}

sd_status sd_gen_params_check(const sd_gen_params *p, char err[SD_ERR_LEN]) {
    sd_status st;
    if (!p->prompt) {
        snprintf(err, SD_ERR_LEN, "prompt: missing");
        return SD_ERR_ARG;
    }
    if ((st = check_size("width", p->width, err)) != SD_OK || (st = check_size("height", p->height, err)) != SD_OK)
        return st;
    if (p->steps < 1 || p->steps > 1000) {
        snprintf(err, SD_ERR_LEN, "steps: %d is outside 1..1000", p->steps);
        return SD_ERR_ARG;
    }
    if (!(p->cfg_scale >= 0) || !isfinite(p->cfg_scale)) {
        snprintf(err, SD_ERR_LEN, "cfg-scale: %g must be a number >= 0", p->cfg_scale);
        return SD_ERR_ARG;
    }
    if (!(p->eta >= 0) || !isfinite(p->eta)) {
        snprintf(err, SD_ERR_LEN, "eta: %g must be a number >= 0", p->eta);
        return SD_ERR_ARG;
    }
    if (!sd_sampler_get_info(p->sampler)) {
        snprintf(err, SD_ERR_LEN, "sampling-method: unknown sampler %d", (int)p->sampler);
        return SD_ERR_ARG;
    }
    if ((unsigned)p->schedule > SD_SCHEDULE_KARRAS || (unsigned)p->spacing > SD_SPACING_TRAILING ||
        (unsigned)p->rng > SD_RNG_CUDA || (unsigned)p->prediction > SD_PREDICTION_V) {
        snprintf(err, SD_ERR_LEN, "invalid scheduler, spacing, rng or prediction value");
        return SD_ERR_ARG;
    }
    if (p->init_image && !(p->strength > 0.0 && p->strength <= 1.0)) {
        snprintf(err, SD_ERR_LEN, "strength: %g is outside (0, 1]", p->strength);
        return SD_ERR_ARG;
    }
    if (p->clip_skip < 0 || p->clip_skip > 100) {
        snprintf(err, SD_ERR_LEN, "clip-skip: %d is outside 1..100", p->clip_skip);
        return SD_ERR_ARG;
    }
    if (p->mask && !p->init_image) {
        snprintf(err, SD_ERR_LEN, "mask: needs an init image (-i)");
        return SD_ERR_ARG;
    }
    if ((st = check_pixels("init image", p->init_image, err)) != SD_OK ||
        (st = check_pixels("mask", p->mask, err)) != SD_OK)
        return st;
    if ((st = check_control(p, err)) != SD_OK) return st;
    const int sizes[6] = {p->original_width, p->original_height, p->crop_top,
                          p->crop_left,      p->target_width,    p->target_height};
    static const char *const names[6] = {"original width", "original height", "crop top",
                                         "crop left",      "target width",    "target height"};
    for (int i = 0; i < 6; i++)
        if ((st = check_condition_size(names[i], sizes[i], err)) != SD_OK) return st;
    return SD_OK;
}

/* ---------------- pixels ---------------- */

sd_status sd_pixels_read(const char *path, sd_pixels *out, char err[SD_ERR_LEN]) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, SD_ERR_LEN, "%s: cannot open: %s", path, strerror(errno));
        return SD_ERR_IO;
    }
    int w, h, ch;
    uint8_t *data = stbi_load_from_file(f, &w, &h, &ch, 0);
    fclose(f);
    if (!data) {
        snprintf(err, SD_ERR_LEN, "%s: not a readable PNG, JPEG or BMP image (%s)", path, stbi_failure_reason());
        return SD_ERR_FORMAT;
    }
    out->width = w;
    out->height = h;
    out->channels = ch;
    out->data = data;
    return SD_OK;
}

void sd_pixels_free(sd_pixels *p) {
    stbi_image_free((void *)p->data);
    memset(p, 0, sizeof *p);
}

/* ---------------- LoRA tags in prompts ---------------- */

int sd_prompt_lora_tags(const char *prompt, sd_lora_tag *tags, int max_tags, char err[SD_ERR_LEN]) {
    const char *kind, *args;
    size_t kl, al, tl;
    int n = 0;
    for (const char *s = prompt, *tag; (tag = prompt_next_tag(s, &kind, &kl, &args, &al, &tl)); s = tag + tl) {
        if (!((kl == 4 && !strncmp(kind, "lora", 4)) || (kl == 4 && !strncmp(kind, "lyco", 4)))) continue;
        const char *colon = memchr(args, ':', al);
        size_t name_len = colon ? (size_t)(colon - args) : al;
        double mult = 1.0;
        if (colon) {
            char num[64], *end;
            size_t nl = al - name_len - 1;
            snprintf(num, sizeof num, "%.*s", (int)(nl < sizeof num ? nl : sizeof num - 1), colon + 1);
            mult = strtod(num, &end);
            if (nl == 0 || nl >= sizeof num || *end || end == num || !isfinite(mult)) {
                snprintf(err, SD_ERR_LEN, "prompt: %.*s: '%.*s' is not a multiplier (write <lora:NAME:0.8>)", (int)tl,
                         tag, (int)(nl > 60 ? 60 : nl), colon + 1);
                return -1;
            }
        }
        if (name_len == 0 || name_len >= sizeof tags->name || memchr(args, '/', name_len)) {
            snprintf(err, SD_ERR_LEN, "prompt: %.*s: the LoRA name must be a file name without '/' (1..255 bytes)",
                     (int)(tl > 300 ? 300 : tl), tag);
            return -1;
        }
        if (n < max_tags) {
            memcpy(tags[n].name, args, name_len);
            tags[n].name[name_len] = 0;
            tags[n].multiplier = (float)mult;
        }
        n++;
    }
    return n;
}
