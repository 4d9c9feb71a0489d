/* hires.c - sd_generate: one pass, or AUTOMATIC1111's two-pass "hires fix": the first pass at the requested size,
 * then the img2img of its result upscaled by hires_scale, with the same prompt, seed and sampler, at the second pass's
 * denoising strength. The upscaling is a bilinear resize of the latent ("Latent"), or of the 8-bit image: Lanczos
 * (the img2img's own resize of its init image), or an upscale model first (then that resize). So the second pass is
 * exactly `sd -i FIRST.png -W W·S -H H·S --strength D` on the (model-upscaled) first image. */
#include "pipeline/context.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* z[C, oh, ow] = x[C, h, w] resized as torch's F.interpolate(mode="bilinear", align_corners=False): output index i
 * reads source position (i + 0.5)·in/out − 0.5 (clamped at 0), linearly between its two neighbours. */
static void resize_bilinear(const float *x, int C, int h, int w, float *z, int oh, int ow) {
    const float sy = (float)h / oh, sx = (float)w / ow;
    for (int i = 0; i < oh; i++) {
        float fy = (i + 0.5f) * sy - 0.5f;
        fy = fy < 0 ? 0 : fy;
        const int y0 = (int)fy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        const float ly = fy - (float)y0;
        for (int j = 0; j < ow; j++) {
            float fx = (j + 0.5f) * sx - 0.5f;
            fx = fx < 0 ? 0 : fx;
            const int x0 = (int)fx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            const float lx = fx - (float)x0;
            for (int c = 0; c < C; c++) {
                const float *p = x + (size_t)c * h * w;
                const float top = (1 - lx) * p[y0 * w + x0] + lx * p[y0 * w + x1];
                const float bottom = (1 - lx) * p[y1 * w + x0] + lx * p[y1 * w + x1];
                z[((size_t)c * oh + i) * ow + j] = (1 - ly) * top + ly * bottom;
            }
        }
    }
}

/* The hires settings: scale in (1, 8], a known upscaler (with its model), steps 0..1000, strength in (0, 1],
 * text-to-image only, and no latent upscale for an inpainting UNet (its second pass needs an image). */
static sd_status check_hires(const sd_ctx *c, const sd_gen_params *p, char *err) {
    const int inpaint9 = c->model.d.unet_in_ch != c->model.d.latent_ch;
    const char *why = !(p->hires_scale > 1.0 && p->hires_scale <= 8.0) ? "hires-scale: must be above 1 and at most 8"
                      : (unsigned)p->hires_upscaler > SD_HIRES_MODEL   ? "hires-upscaler: unknown kind"
                      : p->hires_upscaler == SD_HIRES_MODEL && !p->hires_model
                          ? "hires-upscaler: no upscale model given"
                      : p->hires_steps < 0 || p->hires_steps > 1000            ? "hires-steps: outside 1..1000"
                      : !(p->hires_strength > 0.0 && p->hires_strength <= 1.0) ? "hires-strength: outside (0, 1]"
                      : p->init_image ? "hires fix: for text to image (with -i, img2img runs at the size you ask for)"
                      : p->hires_upscaler == SD_HIRES_LATENT && inpaint9
                          ? "hires-upscaler: latent: an inpainting model's second pass needs an image (lanczos or FILE)"
                          : NULL;
    if (!why) return SD_OK;
    snprintf(err, SD_ERR_LEN, "%s", why);
    return SD_ERR_ARG;
}

/* q = the second pass's settings after a first image of W x H: that size times hires_scale rounded down to 8,
 * hires_steps (else steps), hires_strength, init (the upscaled image's pixels, or only its size for a check). */
static sd_status second_pass_params(const sd_gen_params *p, int W, int H, const sd_pixels *init, sd_gen_params *q,
                                    char *err) {
    *q = *p;
    q->hires_scale = 0;
    q->width = (int)(W * p->hires_scale) / 8 * 8;
    q->height = (int)(H * p->hires_scale) / 8 * 8;
    q->steps = p->hires_steps ? p->hires_steps : p->steps;
    q->strength = p->hires_strength;
    q->init_image = p->hires_upscaler == SD_HIRES_LATENT ? NULL : init;
    if (q->width <= 4096 && q->height <= 4096) return SD_OK;
    snprintf(err, SD_ERR_LEN, "hires-scale: %g makes %dx%d, larger than 4096x4096", p->hires_scale, q->width,
             q->height);
    return SD_ERR_ARG;
}

/* Both passes checked before the first runs: a second pass that cannot run (its size, memory, steps at that
 * strength) is refused at once. *W x *H: the first pass's size. */
static sd_status check_passes(sd_ctx *c, const sd_gen_params *first, const sd_gen_params *p, int *W, int *H,
                              char *err) {
    static const uint8_t unread; /* the check reads the init image's size only */
    sd_status st = sd_pipeline_check(c, first, NULL, W, H, err);
    if (st != SD_OK) return st;
    sd_gen_params q;
    const sd_pixels shape = {(int)(*W * p->hires_scale), (int)(*H * p->hires_scale), 3, &unread};
    if ((st = second_pass_params(p, *W, *H, &shape, &q, err)) != SD_OK) return st;
    int w2, h2;
    st = sd_pipeline_check(c, &q, p->hires_upscaler == SD_HIRES_LATENT ? &(float){0} : NULL, &w2, &h2, err);
    if (st == SD_ERR_ARG) { /* name the pass */
        char inner[SD_ERR_LEN];
        snprintf(inner, sizeof inner, "%s", err);
        snprintf(err, SD_ERR_LEN, "hires fix second pass (%dx%d): %.440s", q.width, q.height, inner);
    }
    return st;
}

/* The second pass from the first one's result a, by the upscaler p asks for. */
static sd_status second_pass(sd_ctx *c, const sd_gen_params *p, const sd_image *a, sd_image *img, char *err) {
    const sd_pixels first = {a->width, a->height, 3, a->rgb};
    sd_image up = {0};
    sd_gen_params q;
    sd_status st = SD_OK;
    if (p->hires_upscaler == SD_HIRES_MODEL) /* the model's output, resized by the img2img as an init image is */
        st = sd_upscale(p->hires_model, &first, p->cancel, p->cancel_user, &up, err);
    const sd_pixels upscaled = {up.width, up.height, 3, up.rgb};
    if (st == SD_OK) st = second_pass_params(p, a->width, a->height, up.rgb ? &upscaled : &first, &q, err);
    float *z = NULL; /* [C, h, w] the latent, resized */
    if (st == SD_OK && p->hires_upscaler == SD_HIRES_LATENT) {
        const int C = a->latent_channels;
        if (!(z = malloc((size_t)C * (q.height / 8) * (q.width / 8) * sizeof(float)))) {
            snprintf(err, SD_ERR_LEN, "out of memory");
            st = SD_ERR_NOMEM;
        } else
            resize_bilinear(a->latent, C, a->height / 8, a->width / 8, z, q.height / 8, q.width / 8);
    }
    if (st == SD_OK) st = sd_pipeline_run(c, &q, z, img, err);
    free(z);
    sd_image_free(&up);
    return st;
}

sd_status sd_generate(sd_ctx *c, const sd_gen_params *p, sd_image *img, char err[SD_ERR_LEN]) {
    if (!(p->hires_scale > 1.0) && p->hires_scale >= 0) return sd_pipeline_run(c, p, NULL, img, err);
    memset(img, 0, sizeof *img);
    sd_gen_params first = *p;
    first.hires_scale = 0;
    int W, H;
    sd_status st = check_hires(c, p, err);
    if (st == SD_OK) st = check_passes(c, &first, p, &W, &H, err);
    if (st != SD_OK) return st;
    sd_image a;
    if ((st = sd_pipeline_run(c, &first, NULL, &a, err)) != SD_OK) return st;
    st = second_pass(c, p, &a, img, err);
    sd_image_free(&a);
    return st;
}

sd_status sd_txt2img(sd_ctx *c, const sd_gen_params *p, sd_image *img, char err[SD_ERR_LEN]) {
    return sd_generate(c, p, img, err);
}
