/* upscaling.c - see upscaling.h. */
#include "upscaling.h"

#include "job_output.h"
#include "output.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define FAIL(code, ...) (snprintf(err, errlen, __VA_ARGS__), (code))

static int is_kind(const char *h, const char *kind) { return h && !strcasecmp(h, kind); }

int upscalers_load(const cli_args *a, sd_upscaler **post, sd_upscaler **hires, char *err, size_t errlen) {
    char e[SD_ERR_LEN];
    *post = *hires = NULL;
    sd_status st = a->upscale_model ? sd_upscaler_load(post, a->upscale_model, a->threads, e) : SD_OK;
    if (st != SD_OK) return FAIL(cli_exit_code(st), "--upscale-model: %s", e);
    const char *h = a->hires_upscaler;
    if (!h || is_kind(h, "latent") || is_kind(h, "lanczos")) return 0;
    if (a->upscale_model && !strcmp(h, a->upscale_model)) {
        *hires = *post;
        return 0;
    }
    if (access(h, F_OK) != 0)
        return FAIL(CLI_BAD_INPUT, "--hires-upscaler: '%s' is not latent, lanczos or an upscale model file (%s)", h,
                    strerror(errno));
    st = sd_upscaler_load(hires, h, a->threads, e);
    return st == SD_OK ? 0 : FAIL(cli_exit_code(st), "--hires-upscaler: %s", e);
}

int upscalers_set_hires(const cli_args *a, job_list *L, sd_upscaler *model) {
    const char *h = a->hires_upscaler;
    const sd_hires_upscaler kind = !h || is_kind(h, "latent") ? SD_HIRES_LATENT
                                   : is_kind(h, "lanczos")    ? SD_HIRES_LANCZOS
                                                              : SD_HIRES_MODEL;
    int used = 0;
    for (int i = 0; i < L->n; i++) {
        L->jobs[i].s.gen.hires_upscaler = kind;
        L->jobs[i].s.gen.hires_model = model;
        used |= L->jobs[i].s.gen.hires_scale > 1;
    }
    return h && !used;
}

/* Each of `repeats` passes of u over a width x height image fits in memory. */
static sd_status check_passes(const sd_upscaler *u, int width, int height, int repeats, char *err) {
    sd_status st = SD_OK;
    for (int r = 0; r < repeats && st == SD_OK; r++, width *= sd_upscaler_scale(u), height *= sd_upscaler_scale(u))
        st = sd_upscaler_check(u, width, height, err);
    return st;
}

int upscalers_check_jobs(const cli_args *a, const job_list *L, const sd_ctx *ctx, const sd_upscaler *post, char *err,
                         size_t errlen) {
    char e[SD_ERR_LEN];
    sd_model_info mi;
    sd_get_model_info(ctx, &mi);
    for (int i = 0; post && i < L->n; i++) {
        int w, h;
        jobs_generated_size(&L->jobs[i], mi.default_width, mi.default_height, &w, &h);
        sd_status st = check_passes(post, w, h, a->upscale_repeats, e);
        if (st != SD_OK) return FAIL(cli_exit_code(st), "--upscale-model: job %d: %s", L->jobs[i].number, e);
    }
    return 0;
}

sd_status upscale_repeated(sd_upscaler *u, const sd_pixels *in, int repeats, sd_cancel_fn cancel, sd_image *out,
                           int *scale, char *err) {
    sd_image cur = {0};
    *scale = 1;
    memset(out, 0, sizeof *out);
    for (int r = 0; r < repeats; r++) {
        sd_image next;
        const sd_pixels px = r ? (sd_pixels){cur.width, cur.height, 3, cur.rgb} : *in;
        sd_status st = sd_upscale(u, &px, cancel, NULL, &next, err);
        sd_image_free(&cur);
        if (st != SD_OK) return st;
        cur = next;
        *scale *= sd_upscaler_scale(u);
    }
    *out = cur;
    return SD_OK;
}

/* Writes up (scale times the input) to a->job.output with the input's parameters text and the postprocessing keys. */
static int write_upscaled(const cli_args *a, const sd_image *up, int scale, char *err, size_t errlen) {
    char *old = output_read_png_text(a->job.init_path, "parameters");
    size_t len = (old ? strlen(old) : 0) + strlen(a->upscale_model) + 128;
    char *text = malloc(len);
    int rc = text ? 0 : FAIL(CLI_RUNTIME, "out of memory");
    if (!rc) {
        snprintf(text, len, "%s", old ? old : "");
        job_postprocess_parameters(text, len, a->upscale_model, scale);
        if (output_write_png(a->job.output, up->rgb, up->width, up->height, "parameters", text, err, errlen))
            rc = CLI_RUNTIME;
    }
    free(old);
    free(text);
    return rc;
}

int upscale_file(const cli_args *a, sd_cancel_fn cancel, char *err, size_t errlen) {
    char e[SD_ERR_LEN];
    if (output_check_path(a->job.output, err, errlen)) return CLI_BAD_INPUT;
    sd_pixels px;
    sd_status st = sd_pixels_read(a->job.init_path, &px, e);
    if (st != SD_OK) return FAIL(cli_exit_code(st), "-i: %s", e);
    sd_upscaler *u = NULL, *unused = NULL;
    sd_image up = {0};
    int scale = 1, rc = upscalers_load(a, &u, &unused, err, errlen);
    if (!rc && (st = check_passes(u, px.width, px.height, a->upscale_repeats, e)) != SD_OK)
        rc = FAIL(cli_exit_code(st), "--upscale-model: %s", e);
    if (!rc && (st = upscale_repeated(u, &px, a->upscale_repeats, cancel, &up, &scale, e)) != SD_OK)
        rc = FAIL(cli_exit_code(st), "%s", e);
    if (!rc) rc = write_upscaled(a, &up, scale, err, errlen);
    sd_image_free(&up);
    sd_pixels_free(&px);
    sd_upscaler_free(u);
    return rc;
}
