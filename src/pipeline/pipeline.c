/* pipeline.c - one generation. txt2img, img2img and inpainting are one sampling loop that differs only
 * in its start latent, the UNet's extra input channels and a per-step hook (diffusers'
 * StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline):
 *
 *   context  = text encoders(prompt), text encoders(negative prompt)     (conditioner.c)
 *   added    = [pooled text; size embeddings]          models with added conditioning (SDXL)
 *   x        = noise · init_sigma                         txt2img, inpainting at strength 1
 *            = add_noise(vae_encode(image), noise, begin)  img2img, inpainting below strength 1
 *   for i in begin .. evals-1:
 *       eps = guided UNet(x · scale_i [| mask | masked-image latent], t_i, context, added)
 *       x   = sampler step(x, eps)
 *       x   = (1 − mask)·add_noise(image latent, noise, i+1) + mask·x   (4-channel inpainting)
 *   image    = vae_decode(x / scale)
 * Every network runs in the context's compute context, which polls the caller's cancel callback between layers.
 */
#include "pipeline/context.h"

#include "io/image.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"
#include "text/conditioner.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

typedef struct {
    int H, W, h, w; /* image and latent size */
    int C;          /* latent channels */
    size_t n;       /* C·h·w latent values */
    int guided, v_pred;
    conditioning uncond, cond;
    float *pair;          /* [2, len, width]: uncond then cond, when one batched UNet pass serves both */
    float *added;         /* [2, added_dim]: uncond's then cond's added conditioning, or NULL */
    float *image_latent;  /* [C, h, w] scaled latent of the init image, or NULL */
    float *noise;         /* [C, h, w] the start noise (the 4-channel inpainting blend reuses it) */
    float *mask;          /* [h, w] latent-resolution mask, 1 = repaint, or NULL */
    float *masked_latent; /* [C, h, w] scaled latent of the masked image (9-channel UNet), or NULL */
    int vae_tiled;        /* tile size of the VAE in pixels, 0 = untiled (plan_vae) */
    const float
        *init_latent; /* [C, h, w] a latent to start img2img from instead of an init image (hires fix), or NULL */
    float *hint;      /* [model_ch, h, w] the ControlNet's hint encoder on the control image, or NULL */
    float *control_x; /* [2, C, h, w] the ControlNet's input when the UNet takes more channels, or NULL */
    float *residuals[UNET_MAX_BLOCKS + 1]; /* [2, ch_i, h_i, w_i] the ControlNet's residuals of one evaluation */
} generation;

static size_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

static void generation_free(generation *g) {
    conditioning_free(&g->uncond);
    conditioning_free(&g->cond);
    free(g->pair);
    free(g->added);
    free(g->image_latent);
    free(g->noise);
    free(g->mask);
    free(g->masked_latent);
    free(g->hint);
    free(g->control_x);
    for (int i = 0; i <= UNET_MAX_BLOCKS; i++) free(g->residuals[i]);
}

/* Writes the message and returns st. */
static sd_status fail(char *err, size_t errlen, sd_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

/* What stopped a network: out of memory, or the caller's cancel callback. */
static sd_status stage_failure(const generation *g, sd_status st, const char *stage, char *err, size_t errlen) {
    if (st == SD_ERR_CANCELLED) return fail(err, errlen, st, "cancelled in %s", stage);
    return fail(err, errlen, st, "out of memory in %s at %dx%d", stage, g->W, g->H);
}

/* ---------------- memory ---------------- */

/* Memory to plan with, in bytes: SD_MEMORY_LIMIT (a whole number of MB) when set, else MemAvailable from
 * /proc/meminfo (0 when unknown). Returns -1 with err set when SD_MEMORY_LIMIT is set but not a number. */
int sd_available_memory(size_t *bytes, char *err, size_t errlen) {
    const char *limit = getenv("SD_MEMORY_LIMIT");
    if (limit) {
        char *end;
        errno = 0;
        unsigned long long mb = strtoull(limit, &end, 10);
        if (errno || end == limit || *end || limit[0] == '-' || mb == 0 || mb > (SIZE_MAX >> 20)) {
            snprintf(err, errlen, "SD_MEMORY_LIMIT: '%s' is not a positive whole number of megabytes", limit);
            return -1;
        }
        *bytes = (size_t)mb << 20;
        return 0;
    }
    *bytes = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    *bytes = kb * 1024;
    return 0;
}

const char *sd_memory_text(size_t have, char *buf, size_t len) {
    if (getenv("SD_MEMORY_LIMIT"))
        snprintf(buf, len, "SD_MEMORY_LIMIT allows %zu MB", have >> 20);
    else
        snprintf(buf, len, "only %.1f GB of memory is available", (double)have / 1e9);
    return buf;
}

#define LOW_MEMORY_TILE_PX 256 /* --low-memory: a quarter of the activations of a 512 tile */

/* Whether the VAE runs in tiles, and their size (*tile_px, 0 = untiled): asked for (and the image is larger than a
 * tile), low-memory mode, or needed because the untiled decoder would not fit; sizes whose tiled decode cannot
 * fit either are refused, before any compute. */
static sd_status plan_vae(const sd_ctx *c, const sd_gen_params *p, int H, int W, int *tile_px, char *err,
                          size_t errlen) {
    size_t have, need;
    if (sd_available_memory(&have, err, errlen) != 0) return SD_ERR_ARG;
    const char *what = "the VAE decoder";
    const int tile = c->low_memory ? LOW_MEMORY_TILE_PX : c->model.d.vae_tile_px;
    *tile_px = 0;
    if (c->tae) { /* TAESD: three 64-channel activations at full size and a convolution's work */
        need = (size_t)4 * TAESD_CH * H * W * sizeof(float);
        what = "TAESD";
    } else {
        need = vae_decode_memory(&c->va, H / 8, W / 8);
        if ((H > tile || W > tile) && (p->vae_tiling || c->low_memory || (have && need > have))) {
            *tile_px = tile; /* one tile's activations and the whole image */
            need = vae_decode_memory(&c->va, tile / 8, tile / 8) + (size_t)H * W * 3 * sizeof(float);
            what = "the VAE decoder in tiles";
        }
    }
    char avail[96];
    if (have && need > have)
        return fail(err, errlen, SD_ERR_NOMEM, "size %dx%d needs about %.1f GB for %s but %s", W, H, (double)need / 1e9,
                    what, sd_memory_text(have, avail, sizeof avail));
    return SD_OK;
}

/* ---------------- size ---------------- */

/* Output size: -W/-H when given; else the init image's size rounded down to a multiple of 8 (diffusers);
 * else the model's default. */
static sd_status resolve_size(const sd_ctx *c, const sd_gen_params *p, int *W, int *H, char *err, size_t errlen) {
    const sd_pixels *im = p->init_image;
    *W = p->width ? p->width : im ? im->width - im->width % 8 : c->model.d.default_size;
    *H = p->height ? p->height : im ? im->height - im->height % 8 : c->model.d.default_size;
    if (*W < 64 || *H < 64)
        return fail(err, errlen, SD_ERR_ARG,
                    "init image: %dx%d is smaller than 64x64 pixels (-W / -H of at least 64 resize it)", im->width,
                    im->height);
    return SD_OK;
}

/* ---------------- conditioning ---------------- */

/* Gives the text encoders' pages back: their stage is over. */
static void release_text(sd_ctx *c) {
    for (int i = 0; i < c->model.d.n_text; i++) sd_release_stage(c, c->model.d.text[i].prefix);
}

/* The negative prompt's conditioning: zeros shaped like the prompt's where the family says so (SDXL's
 * force_zeros_for_empty_prompt), else the encoded text. */
static sd_status encode_negative(sd_ctx *c, const conditioner *cd, const sd_gen_params *p, int skip, generation *g,
                                 char *err, size_t errlen) {
    const char *neg = p->negative_prompt ? p->negative_prompt : "";
    if (c->model.d.zero_empty_negative && !neg[0]) {
        if (conditioning_zeros(&g->cond, &g->uncond) == SD_OK) return SD_OK;
        return fail(err, errlen, SD_ERR_NOMEM, "out of memory");
    }
    return conditioner_encode_cached(cd, &c->prompts, neg, skip, "negative prompt", &g->uncond, err, errlen);
}

/* The added conditioning of one conditioning: its pooled text and the size ids (original height, width, crop top,
 * left, target height, width; by default (H, W, 0, 0, H, W), diffusers' StableDiffusionXLPipeline). */
static void added_vector(const sd_ctx *c, const sd_gen_params *p, const generation *g, const conditioning *cd,
                         float *added) {
    const model_desc *d = &c->model.d;
    const float ids[6] = {(float)(p->original_height ? p->original_height : g->H),
                          (float)(p->original_width ? p->original_width : g->W),
                          (float)p->crop_top,
                          (float)p->crop_left,
                          (float)(p->target_height ? p->target_height : g->H),
                          (float)(p->target_width ? p->target_width : g->W)};
    unet_added_vector(cd->pooled, d->pooled_width, ids, d->time_ids, d->time_id_dim, added);
}

static sd_status encode_prompts(sd_ctx *c, const sd_gen_params *p, generation *g, char *err, size_t errlen) {
    const conditioner cd = {c->tok, c->te, &c->model.d, &c->cc, &c->emb};
    const int skip = p->clip_skip > 1 ? p->clip_skip : 1;
    sd_status st = conditioner_encode_cached(&cd, &c->prompts, p->prompt, skip, "prompt", &g->cond, err, errlen);
    if (st == SD_OK && g->guided) st = encode_negative(c, &cd, p, skip, g, err, errlen);
    release_text(c);
    if (st != SD_OK) return st;
    if (g->guided && g->uncond.len == g->cond.len) { /* equal lengths: one batch [uncond; cond] */
        const size_t len = (size_t)g->cond.len * g->cond.width;
        if (!(g->pair = malloc(2 * len * sizeof(float)))) return fail(err, errlen, SD_ERR_NOMEM, "out of memory");
        memcpy(g->pair, g->uncond.ctx, len * sizeof(float));
        memcpy(g->pair + len, g->cond.ctx, len * sizeof(float));
    }
    const int A = c->un.c.added_dim;
    if (A) {
        if (!(g->added = malloc((size_t)2 * A * sizeof(float))))
            return fail(err, errlen, SD_ERR_NOMEM, "out of memory");
        added_vector(c, p, g, g->guided ? &g->uncond : &g->cond, g->added);
        added_vector(c, p, g, &g->cond, g->added + A);
    }
    return SD_OK;
}

/* ---------------- start latent ---------------- */

/* latent[C, h, w] = scale · (mean + exp(logvar/2)·draw − shift) of image[3, H, W], with the draw from rng
 * (diffusers: vae.encode(x).latent_dist.sample(generator) · scaling_factor). */
static sd_status encode_image(sd_ctx *c, const generation *g, const float *image, sd_rng *rng, float *latent, char *err,
                              size_t errlen) {
    const model_desc *d = &c->model.d;
    if (c->tae) { /* TAESD: the encoder's output is the latent (scaling factor 1, no sampling, no draw) */
        if (!c->tae->has_encoder)
            return fail(err, errlen, SD_ERR_MODEL, "the TAESD file has no encoder; an init image needs one");
        sd_status st = taesd_encode(&c->cc, c->tae, image, g->H, g->W, latent);
        return st == SD_OK ? st : stage_failure(g, st, "the TAESD encoder", err, errlen);
    }
    float *mean = malloc(g->n * sizeof(float)), *logvar = malloc(g->n * sizeof(float)); /* [C, h, w] each */
    sd_status st = !mean || !logvar ? SD_ERR_NOMEM
                   : g->vae_tiled   ? vae_encode_tiled(&c->cc, &c->va, image, g->H, g->W, g->vae_tiled, mean, logvar)
                                    : vae_encode(&c->cc, &c->va, image, 1, g->H, g->W, mean, logvar);
    if (st != SD_OK) {
        stage_failure(g, st, "the VAE encoder", err, errlen);
    } else {
        rng_randn(rng, latent, g->n);
        for (size_t j = 0; j < g->n; j++)
            latent[j] = d->vae_scale * (mean[j] + expf(0.5f * logvar[j]) * latent[j] - d->vae_shift);
    }
    free(mean);
    free(logvar);
    return st;
}

/* image[3, H, W] (model input) and mask[H, W] (1 = repaint) of the init image and mask. */
static sd_status load_images(const sd_gen_params *p, const generation *g, int inpaint, float *image, float *mask) {
    const size_t P = (size_t)g->H * g->W;
    if (p->init_image && image_to_model_input(p->init_image, g->W, g->H, image) != 0) return SD_ERR_NOMEM;
    if (!p->init_image) memset(image, 0, 3 * P * sizeof(float)); /* mid grey */
    if (inpaint && p->mask && image_binary_mask(p->mask, g->W, g->H, mask) != 0) return SD_ERR_NOMEM;
    if (inpaint && !p->mask)
        for (size_t i = 0; i < P; i++) mask[i] = 1.0f; /* repaint all */
    return SD_OK;
}

/* The masked image's latent and the latent-resolution mask (inpainting). image[3, H, W] is masked in place. */
static sd_status prepare_mask(sd_ctx *c, generation *g, float *image, const float *mask, sd_rng *rng, char *err,
                              size_t errlen) {
    const size_t P = (size_t)g->H * g->W;
    for (int ch = 0; ch < 3; ch++) /* masked image = image · (mask < 0.5): repainted pixels become 0 (grey) */
        for (size_t i = 0; i < P; i++) image[ch * P + i] *= mask[i] < 0.5f ? 1.0f : 0.0f;
    g->masked_latent = malloc(g->n * sizeof(float));
    g->mask = malloc((size_t)g->h * g->w * sizeof(float));
    if (!g->masked_latent || !g->mask) return fail(err, errlen, SD_ERR_NOMEM, "out of memory preparing the init image");
    sd_status st = encode_image(c, g, image, rng, g->masked_latent, err, errlen);
    for (int i = 0; i < g->h; i++) /* nearest: latent cell (i, j) takes pixel (8i, 8j) */
        for (int j = 0; j < g->w; j++) g->mask[i * g->w + j] = mask[(size_t)8 * i * g->W + 8 * j];
    return st;
}

/* The init image (and masked image) as latents, the start noise and the latent mask, drawn in diffusers'
 * order: image sample, start noise, masked-image sample (inpainting), then the sampler's own noise. */
static sd_status prepare_inputs(sd_ctx *c, const sd_gen_params *p, generation *g, sd_rng *rng, char *err,
                                size_t errlen) {
    const model_desc *d = &c->model.d;
    const int inpaint9 = d->unet_in_ch != d->latent_ch, inpaint = p->mask || inpaint9;
    const size_t P = (size_t)g->H * g->W;
    if (!(g->noise = malloc(g->n * sizeof(float)))) return fail(err, errlen, SD_ERR_NOMEM, "out of memory");
    if (g->init_latent) { /* img2img from a latent: nothing to encode, no draw for it */
        if (!(g->image_latent = malloc(g->n * sizeof(float)))) return fail(err, errlen, SD_ERR_NOMEM, "out of memory");
        memcpy(g->image_latent, g->init_latent, g->n * sizeof(float));
    }
    if (g->init_latent || (!p->init_image && !inpaint9)) { /* only the start noise */
        rng_randn(rng, g->noise, g->n);
        return SD_OK;
    }
    float *image = malloc(3 * P * sizeof(float)); /* [3, H, W] */
    float *mask = malloc(P * sizeof(float));      /* [H, W] */
    sd_status st = !image || !mask ? SD_ERR_NOMEM : load_images(p, g, inpaint, image, mask);
    if (st != SD_OK) fail(err, errlen, st, "out of memory preparing the init image");
    /* diffusers encodes the init image unless a 9-channel inpainting run starts from pure noise */
    if (st == SD_OK && p->init_image && (!inpaint9 || p->strength < 1.0)) {
        if (!(g->image_latent = malloc(g->n * sizeof(float))))
            st = fail(err, errlen, SD_ERR_NOMEM, "out of memory");
        else
            st = encode_image(c, g, image, rng, g->image_latent, err, errlen);
    }
    if (st == SD_OK) rng_randn(rng, g->noise, g->n);
    if (st == SD_OK && inpaint) st = prepare_mask(c, g, image, mask, rng, err, errlen);
    free(image);
    free(mask);
    sd_release_stage(c, VAE_PREFIX "encoder.");
    return st;
}

/* The ControlNet's hint (once per image: the control image at the output size, RGB in [0, 1], through the hint
 * encoder) and its buffers: the residuals for a batch of two, the input when the UNet takes more channels. */
static sd_status prepare_control(sd_ctx *c, const sd_gen_params *p, generation *g, char *err, size_t errlen) {
    const controlnet *cn = c->cn;
    if (!cn) return SD_OK;
    float *image = malloc((size_t)3 * g->H * g->W * sizeof(float)); /* [3, H, W] */
    g->hint = malloc((size_t)cn->enc.c.model_ch * g->h * g->w * sizeof(float));
    int ok = image && g->hint && image_to_unit_rgb(p->control_image, g->W, g->H, image) == 0;
    for (int i = 0; ok && i <= cn->enc.c.n_input; i++)
        ok = (g->residuals[i] = malloc(unet_block_floats(&cn->enc, i, 2, g->h, g->w) * sizeof(float))) != NULL;
    if (ok && cn->enc.c.in_ch != c->un.c.in_ch) ok = (g->control_x = malloc(2 * g->n * sizeof(float))) != NULL;
    sd_status st = ok ? controlnet_hint(&c->cc, cn, image, g->H, g->W, g->hint) : SD_ERR_NOMEM;
    free(image);
    return st == SD_OK ? st : stage_failure(g, st, "the ControlNet's hint encoder", err, errlen);
}

/* x[n] = the latent the loop starts from. */
static void start_latent(const sd_gen_params *p, const generation *g, const sampler *smp, float *x) {
    if (g->image_latent && !(g->mask && p->strength >= 1.0)) {
        sampler_add_noise(smp, sampler_begin(smp), g->image_latent, g->noise, x);
        return;
    }
    const float init_sigma = sampler_init_sigma(smp);
    for (size_t j = 0; j < g->n; j++) x[j] = g->noise[j] * init_sigma;
}

/* ---------------- the loop ---------------- */

/* in[B, in_ch, h, w]: the scaled latent, and for a 9-channel UNet the mask and the masked-image latent,
 * repeated for each batch item. */
static void scaled_input(const sd_ctx *c, const generation *g, const float *x, float scale, int B, float *in) {
    const size_t hw = (size_t)g->h * g->w, per = (size_t)c->un.c.in_ch * hw;
    for (size_t j = 0; j < g->n; j++) in[j] = x[j] * scale;
    if (c->un.c.in_ch != g->C) {
        memcpy(in + g->n, g->mask, hw * sizeof(float));
        memcpy(in + g->n + hw, g->masked_latent, g->n * sizeof(float));
    }
    for (int b = 1; b < B; b++) memcpy(in + b * per, in, per * sizeof(float));
}

/* Whether the ControlNet guides evaluation i (diffusers' controlnet_keep: i/n >= start and (i+1)/n <= end over
 * the n evaluations the run makes). */
static int control_active(const sd_ctx *c, const sd_gen_params *p, const sampler *smp, int i) {
    const double k = i - sampler_begin(smp), n = sampler_evals(smp) - sampler_begin(smp);
    return c->cn && k / n >= p->control_start && (k + 1) / n <= p->control_end;
}

/* One UNet pass on ui, with the ControlNet's residuals when it guides this evaluation. */
static sd_status unet_pass(sd_ctx *c, const sd_gen_params *p, const generation *g, int active, unet_input ui,
                           float *out) {
    if (!active) return unet_forward(&c->cc, &c->un, &ui, out);
    unet_input ci = ui; /* the ControlNet takes the latent alone where the UNet takes more channels (inpainting) */
    if (g->control_x) {
        const size_t per = (size_t)c->un.c.in_ch * g->h * g->w;
        for (int b = 0; b < ui.B; b++) memcpy(g->control_x + b * g->n, ui.x + b * per, g->n * sizeof(float));
        ci.x = g->control_x;
    }
    sd_status st = controlnet_forward(&c->cc, c->cn, &ci, g->hint, p->control_strength, g->residuals);
    ui.residuals = (const float *const *)g->residuals;
    return st == SD_OK ? unet_forward(&c->cc, &c->un, &ui, out) : st;
}

/* out[k, C, h, w] = UNet outputs of evaluation i for each conditioning (as epsilon); one batched call when
 * the conditionings have the same length, else one call each. */
static sd_status run_unet(sd_ctx *c, const sd_gen_params *p, const generation *g, const sampler *smp, int i,
                          const float *x, float *in, float *out) {
    const conditioning *conds[2] = {g->guided ? &g->uncond : &g->cond, &g->cond};
    const int k = g->guided ? 2 : 1, batched = g->pair != NULL, A = c->un.c.added_dim;
    const size_t per = (size_t)c->un.c.in_ch * g->h * g->w;
    const float scale = sampler_input_scale(smp, i);
    const float t[2] = {(float)sampler_timestep(smp, i), (float)sampler_timestep(smp, i)};
    scaled_input(c, g, x, scale, batched ? 2 : 1, in);
    const int active = control_active(c, p, smp, i);
    sd_status st = SD_OK;
    if (batched) {
        const unet_input ui = {in, t, g->pair, g->cond.len, g->added, NULL, 2, g->h, g->w};
        st = unet_pass(c, p, g, active, ui, out);
    } else {
        for (int b = 0; b < k && st == SD_OK; b++) {
            const float *added = !g->added ? NULL : g->added + (size_t)(k == 2 ? b : 1) * A;
            const unet_input ui = {in, t, conds[b]->ctx, conds[b]->len, added, NULL, 1, g->h, g->w};
            st = unet_pass(c, p, g, active, ui, out + b * g->n);
        }
    }
    if (st == SD_OK && g->v_pred) { /* v -> epsilon: eps = sqrt(ᾱ)·v + sqrt(1-ᾱ)·x_in (Salimans & Ho 2022) */
        float ab = sampler_alpha_bar(smp, i), ra = sqrtf(ab), rb = sqrtf(1.0f - ab);
        for (int b = 0; b < k; b++)
            for (size_t j = 0; j < g->n; j++)
                out[b * g->n + j] = ra * out[b * g->n + j] + rb * in[(batched ? b * per : 0) + j];
    }
    return st;
}

/* After step i, 4-channel inpainting resets the kept region to the init latent noised to the next level. */
static void inpaint_blend(const sd_ctx *c, const generation *g, const sampler *smp, int i, float *x, float *tmp) {
    if (!g->mask || c->un.c.in_ch != g->C) return;
    sampler_add_noise(smp, i + 1, g->image_latent, g->noise, tmp);
    const size_t hw = (size_t)g->h * g->w;
    for (size_t j = 0; j < g->n; j++) {
        float m = g->mask[j % hw];
        x[j] = (1.0f - m) * tmp[j] + m * x[j];
    }
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* eps[n] = the guided prediction from out[k, n] (classifier-free guidance, Ho & Salimans 2022: u + s·(c − u)). */
static void guide(const generation *g, float cfg_scale, const float *out, float *eps) {
    if (!g->guided) {
        memcpy(eps, out, g->n * sizeof(float));
        return;
    }
    for (size_t j = 0; j < g->n; j++) eps[j] = out[j] + cfg_scale * (out[g->n + j] - out[j]);
}

/* The median step time and the products' FLOPs per evaluation, into the timings. */
static void record_steps(sd_ctx *c, double *times, int n, double flops) {
    qsort(times, (size_t)n, sizeof(double), compare_doubles);
    c->timings.step_median_s = times[n / 2];
    c->timings.step_gemm_flops = flops / n;
}

static sd_status denoise(sd_ctx *c, const sd_gen_params *p, const generation *g, sampler *smp, sd_rng *rng, float *x,
                         char *err, size_t errlen) {
    const int evals = sampler_evals(smp), begin = sampler_begin(smp);
    const size_t per = (size_t)c->un.c.in_ch * g->h * g->w;
    float *in = malloc(2 * per * sizeof(float));   /* [2, in_ch, h, w] */
    float *out = malloc(2 * g->n * sizeof(float)); /* [2, C, h, w] */
    float *eps = malloc(g->n * sizeof(float));     /* [C, h, w] */
    double *times = malloc((size_t)evals * sizeof(double));
    sd_status st = !in || !out || !eps || !times ? fail(err, errlen, SD_ERR_NOMEM, "out of memory") : SD_OK;
    const double flops0 = c->cc.flops;
    for (int i = begin; i < evals && st == SD_OK; i++) {
        double t0 = sd_now();
        if ((st = run_unet(c, p, g, smp, i, x, in, out)) == SD_ERR_CANCELLED) {
            fail(err, errlen, st, "cancelled during step %d of %d", i - begin + 1, evals - begin);
            break;
        }
        if (st != SD_OK) {
            stage_failure(g, st, "the UNet", err, errlen);
            break;
        }
        guide(g, p->cfg_scale, out, eps);
        sampler_step(smp, i, eps, x, rng);
        inpaint_blend(c, g, smp, i, x, eps);
        times[i - begin] = sd_now() - t0;
        if (p->progress) {
            sd_progress pr = {i - begin + 1, evals - begin, times[i - begin]};
            p->progress(&pr, p->progress_user);
        }
        if (p->cancel && p->cancel(p->cancel_user))
            st = fail(err, errlen, SD_ERR_CANCELLED, "cancelled after step %d of %d", i - begin + 1, evals - begin);
    }
    if (st == SD_OK) record_steps(c, times, evals - begin, c->cc.flops - flops0);
    free(in);
    free(out);
    free(eps);
    free(times);
    return st;
}

/* ---------------- decoding ---------------- */

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

static sd_status decode(sd_ctx *c, const generation *g, const float *latent, sd_image *img, char *err, size_t errlen) {
    const model_desc *d = &c->model.d;
    const size_t P = (size_t)g->H * g->W;
    float *z = malloc(g->n * sizeof(float));      /* [C, h, w] */
    float *image = malloc(3 * P * sizeof(float)); /* [3, H, W] */
    img->rgb = malloc(3 * P);                     /* [H, W, 3] */
    sd_status st = !z || !image || !img->rgb ? SD_ERR_NOMEM : SD_OK;
    for (size_t j = 0; st == SD_OK && j < g->n; j++) /* TAESD takes the latent as it is */
        z[j] = c->tae ? latent[j] : latent[j] / d->vae_scale + d->vae_shift;
    if (st == SD_OK)
        st = c->tae         ? taesd_decode(&c->cc, c->tae, z, g->h, g->w, image)
             : g->vae_tiled ? vae_decode_tiled(&c->cc, &c->va, z, g->h, g->w, g->vae_tiled, image)
                            : vae_decode(&c->cc, &c->va, z, 1, g->h, g->w, image);
    if (st == SD_OK)
        to_rgb8(image, g->H, g->W, img->rgb);
    else
        stage_failure(g, st, "the VAE decoder", err, errlen);
    free(z);
    free(image);
    return st;
}

/* ---------------- the whole run ---------------- */

static int v_prediction(const sd_ctx *c, const sd_gen_params *p) {
    return p->prediction == SD_PREDICTION_V ||
           (p->prediction == SD_PREDICTION_DEFAULT && c->model.d.prediction == PRED_V);
}

/* The generation's sizes and switches, after the parameters are checked. */
static sd_status plan(sd_ctx *c, const sd_gen_params *p, generation *g, char *err, size_t errlen) {
    sd_status st = sd_gen_params_check(p, err);
    if (st == SD_OK && c->cn && !p->control_image)
        st = fail(err, errlen, SD_ERR_ARG, "control image: the ControlNet needs one (--control-image FILE)");
    if (st == SD_OK && !c->cn && p->control_image)
        st = fail(err, errlen, SD_ERR_ARG, "control image: no ControlNet is loaded (--control-net FILE)");
    const int inpaint9 = c->model.d.unet_in_ch != c->model.d.latent_ch;
    if (st == SD_OK && (p->init_image || inpaint9) && !g->init_latent && !c->va.has_encoder)
        st = fail(err, errlen, SD_ERR_MODEL,
                  "%s: has no VAE encoder (" VAE_PREFIX "encoder.*), which img2img and inpainting need",
                  c->model.store.file.path);
    if (st == SD_OK) st = resolve_size(c, p, &g->W, &g->H, err, errlen);
    if (st == SD_OK) st = plan_vae(c, p, g->H, g->W, &g->vae_tiled, err, errlen);
    c->timings.vae_tiled = g->vae_tiled;
    c->timings.taesd = c->tae != NULL;
    c->timings.bf16 = c->cc.bf16;
    g->h = g->H / 8;
    g->w = g->W / 8;
    g->C = c->model.d.latent_ch;
    g->n = (size_t)g->C * g->h * g->w;
    g->guided = p->cfg_scale > 1.0f;
    g->v_pred = v_prediction(c, p);
    return st;
}

/* The sampler: the family's default spacing where the caller leaves it to the sampler. */
static sampler *make_sampler(const sd_ctx *c, const sd_gen_params *p, const generation *g, char *err, size_t errlen) {
    const sd_spacing spacing = p->spacing ? p->spacing : c->model.d.default_spacing;
    sampler_opts so = {p->sampler, p->steps,
                       spacing,    p->schedule == SD_SCHEDULE_KARRAS,
                       p->eta,     p->init_image || g->init_latent ? p->strength : 1.0};
    return sampler_create(&so, &c->sched, g->n, err, errlen);
}

/* Text, start latent, the loop and the decoder, timing each stage. */
static sd_status run_stages(sd_ctx *c, const sd_gen_params *p, generation *g, sampler *smp, float *latent,
                            sd_image *img, char *err, size_t errlen) {
    double t0 = sd_now();
    sd_status st = encode_prompts(c, p, g, err, errlen);
    if (st != SD_OK) return st;
    c->timings.text_s = sd_now() - t0;
    sd_rng rng;
    rng_init(&rng, p->rng == SD_RNG_CUDA ? RNG_CUDA : RNG_CPU, p->seed);
    t0 = sd_now();
    if ((st = prepare_inputs(c, p, g, &rng, err, errlen)) != SD_OK) return st;
    if ((st = prepare_control(c, p, g, err, errlen)) != SD_OK) return st;
    c->timings.encode_s = sd_now() - t0;
    start_latent(p, g, smp, latent);
    t0 = sd_now();
    st = denoise(c, p, g, smp, &rng, latent, err, errlen);
    sd_release_stage(c, UNET_PREFIX);
    if (c->cn && !c->keep_weights) store_release(&c->cn->store, ""); /* the ControlNet's stage is over too */
    if (st != SD_OK) return st;
    c->timings.sampling_s = sd_now() - t0;
    t0 = sd_now();
    st = decode(c, g, latent, img, err, errlen);
    sd_release_stage(c, VAE_PREFIX);
    c->timings.decode_s = sd_now() - t0;
    return st;
}

sd_status sd_pipeline_run(sd_ctx *c, const sd_gen_params *p, const float *init_latent, sd_image *img,
                          char err[SD_ERR_LEN]) {
    memset(img, 0, sizeof *img);
    memset(&c->timings, 0, sizeof c->timings);
    err[0] = 0;
    compute_begin(&c->cc, p->cancel, p->cancel_user);
    generation g = {0};
    g.init_latent = init_latent;
    sd_status st = plan(c, p, &g, err, SD_ERR_LEN);
    if (st != SD_OK) return st;
    float *latent = malloc(g.n * sizeof(float)); /* [C, h, w] */
    sampler *smp = NULL;
    if (!latent)
        st = fail(err, SD_ERR_LEN, SD_ERR_NOMEM, "out of memory");
    else if (!(smp = make_sampler(c, p, &g, err, SD_ERR_LEN)))
        st = SD_ERR_ARG;
    if (st == SD_OK) st = run_stages(c, p, &g, smp, latent, img, err, SD_ERR_LEN);
    sampler_free(smp);
    generation_free(&g);
    compute_begin(&c->cc, NULL, NULL); /* the callback belongs to this call only */
    if (st != SD_OK) {
        free(latent);
        free(img->rgb);
        img->rgb = NULL;
        return st;
    }
    c->timings.peak_rss_bytes = peak_rss_bytes();
    img->width = g.W;
    img->height = g.H;
    img->latent = latent;
    img->latent_channels = g.C;
    return SD_OK;
}

sd_status sd_pipeline_check(sd_ctx *c, const sd_gen_params *p, const float *init_latent, int *W, int *H,
                            char err[SD_ERR_LEN]) {
    generation g = {0};
    g.init_latent = init_latent;
    sd_status st = plan(c, p, &g, err, SD_ERR_LEN);
    *W = g.W;
    *H = g.H;
    sampler *smp = st == SD_OK ? make_sampler(c, p, &g, err, SD_ERR_LEN) : NULL;
    if (st == SD_OK && !smp) st = SD_ERR_ARG;
    sampler_free(smp);
    generation_free(&g);
    return st;
}

int sd_describe_prompt(const sd_ctx *c, const char *prompt, const char *what, FILE *f) {
    const conditioner cd = {c->tok, c->te, &c->model.d, NULL, &c->emb};
    return conditioner_describe(&cd, prompt, what, f);
}

sd_status sd_check_prompt(const sd_ctx *c, const char *prompt, const char *what, char err[SD_ERR_LEN]) {
    const conditioner cd = {c->tok, c->te, &c->model.d, NULL, &c->emb};
    prompt_chunk *chunks;
    int n, rc = conditioner_prepare(&cd, prompt, what, &chunks, &n, err, SD_ERR_LEN);
    free(chunks);
    if (rc == -2) snprintf(err, SD_ERR_LEN, "out of memory");
    return rc == 0 ? SD_OK : rc == -1 ? SD_ERR_ARG : SD_ERR_NOMEM;
}

int sd_prompt_embeddings(const sd_ctx *c, const char *prompt, sd_embedding_use *out, int max) {
    const conditioner cd = {c->tok, c->te, &c->model.d, NULL, &c->emb};
    prompt_chunk *chunks;
    char err[SD_ERR_LEN];
    int n, found = 0;
    if (conditioner_prepare(&cd, prompt, "prompt", &chunks, &n, err, sizeof err) != 0) return -1;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < CLIP_CONTEXT; i++) {
            const embedding *e = chunks[k].emb[i];
            int seen = !e || chunks[k].emb_row[i] != 0; /* each use starts at row 0 */
            for (int j = 0; !seen && j < found && j < max; j++) seen = !strcmp(out[j].name, e->name);
            if (seen) continue;
            if (found < max) out[found] = (sd_embedding_use){e->name, e->hash, e->n_vectors};
            found++;
        }
    free(chunks);
    return found;
}

void sd_image_free(sd_image *img) {
    free(img->rgb);
    free(img->latent);
    memset(img, 0, sizeof *img);
}
