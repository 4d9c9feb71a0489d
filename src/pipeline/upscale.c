/* upscale.c - the public upscaler (sd_upscaler_*, sd_upscale): an RRDBNet (nets/esrgan.c) in its own compute context,
 * on 8-bit images: RGB in [0, 1] in, round(clip(y, 0, 1)·255) out (Real-ESRGAN's and stable-diffusion.cpp's rounding,
 * RGB order). */
#include "pipeline/context.h"

#include "io/image.h"
#include "nets/esrgan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sd_upscaler {
    esrgan net;
    compute cc;
};

sd_status sd_upscaler_load(sd_upscaler **out, const char *path, int n_threads, char err[SD_ERR_LEN]) {
    *out = NULL;
    sd_upscaler *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, SD_ERR_LEN, "out of memory");
        return SD_ERR_NOMEM;
    }
    compute_init(&u->cc, n_threads, 0, 0);
    sd_status st = esrgan_load(&u->net, path ? path : "", err, SD_ERR_LEN);
    if (st == SD_OK && compute_reserve_scratch(&u->cc, (size_t)u->net.store.max_half_matrix) != SD_OK) {
        snprintf(err, SD_ERR_LEN, "out of memory for the weight conversion buffer");
        st = SD_ERR_NOMEM;
    }
    if (st != SD_OK) {
        sd_upscaler_free(u);
        return st;
    }
    *out = u;
    return SD_OK;
}

void sd_upscaler_free(sd_upscaler *u) {
    if (!u) return;
    esrgan_free(&u->net);
    compute_free(&u->cc);
    free(u);
}

int sd_upscaler_scale(const sd_upscaler *u) { return u->net.scale; }

/* Refuses an output that would not fit: the input and output as floats (twice: padded and cropped), the 8-bit result,
 * and one tile's work: its input and output, and about 56 nf-channel planes at the model's input resolution (the
 * 4x4-larger planes of the upsampling stages and the body's buffers, esrgan_forward). */
sd_status sd_upscaler_check(const sd_upscaler *u, int W, int H, char err[SD_ERR_LEN]) {
    const esrgan *e = &u->net;
    const double s = e->scale, pixels = (double)W * H;
    const double th = H < SD_UPSCALE_TILE + 2 * SD_UPSCALE_PAD ? H : SD_UPSCALE_TILE + 2 * SD_UPSCALE_PAD;
    const double tw = W < SD_UPSCALE_TILE + 2 * SD_UPSCALE_PAD ? W : SD_UPSCALE_TILE + 2 * SD_UPSCALE_PAD;
    const double tile = 4.0 * (56.0 * e->nf * th * tw / (e->unshuffle * e->unshuffle) + 3.0 * th * tw * (1 + s * s));
    const double need = 4.0 * (6.0 * pixels + 6.0 * s * s * pixels) + 3.0 * s * s * pixels + tile;
    size_t have = 0;
    if (sd_available_memory(&have, err, SD_ERR_LEN) != 0) return SD_ERR_ARG;
    if (W * s <= 65535 && H * s <= 65535 && !(have && need > (double)have)) return SD_OK;
    const int gb = need >= 1e9;
    char avail[96];
    snprintf(err, SD_ERR_LEN, "upscaling %dx%d by %d (to %.0fx%.0f) needs about %.*f %s but %s", W, H, e->scale, W * s,
             H * s, gb, need / (gb ? 1e9 : 1e6), gb ? "GB" : "MB",
             W * s > 65535 || H * s > 65535 ? "the output side would pass 65535 pixels"
                                            : sd_memory_text(have, avail, sizeof avail));
    return SD_ERR_ARG;
}

sd_status sd_upscale(sd_upscaler *u, const sd_pixels *in, sd_cancel_fn cancel, void *cancel_user, sd_image *out,
                     char err[SD_ERR_LEN]) {
    memset(out, 0, sizeof *out);
    if (!in || !in->data || in->width < 1 || in->height < 1 || in->channels < 1 || in->channels > 4) {
        snprintf(err, SD_ERR_LEN, "upscale: not a valid image");
        return SD_ERR_ARG;
    }
    const int W = in->width, H = in->height, s = u->net.scale;
    sd_status st = sd_upscaler_check(u, W, H, err);
    if (st != SD_OK) return st;
    const size_t P = (size_t)s * W * s * H;
    float *x = malloc((size_t)3 * W * H * sizeof(float)),
          *y = malloc(3 * P * sizeof(float)); /* [3, H, W], [3, sH, sW] */
    out->rgb = malloc(3 * P);                 /* [sH, sW, 3] */
    st = x && y && out->rgb && image_to_unit_rgb(in, W, H, x) == 0 ? SD_OK : SD_ERR_NOMEM;
    compute_begin(&u->cc, cancel, cancel_user);
    if (st == SD_OK) st = esrgan_upscale(&u->cc, &u->net, x, H, W, SD_UPSCALE_TILE, SD_UPSCALE_PAD, y);
    for (size_t p = 0; st == SD_OK && p < P; p++)
        for (int c = 0; c < 3; c++) {
            float v = y[c * P + p];
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            out->rgb[p * 3 + c] = (uint8_t)nearbyintf(v * 255.0f); /* np.round: half to even */
        }
    compute_begin(&u->cc, NULL, NULL);
    compute_end_stage(&u->cc);
    free(x);
    free(y);
    if (st != SD_OK) {
        free(out->rgb);
        memset(out, 0, sizeof *out);
        if (st == SD_ERR_CANCELLED)
            snprintf(err, SD_ERR_LEN, "cancelled in the upscaler");
        else
            snprintf(err, SD_ERR_LEN, "out of memory upscaling %dx%d", W, H);
        return st;
    }
    out->width = s * W;
    out->height = s * H;
    return SD_OK;
}
