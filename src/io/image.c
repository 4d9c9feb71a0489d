/* image.c - see image.h. References: Pillow's Resample.c (precompute_coeffs, normalize_coeffs_8bpc,
 * ImagingResampleHorizontal/Vertical_8bpc) and Convert.c (L24); diffusers image_processor.py. */
#include "io/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS  (32 - 8 - 2)
#define LANCZOS_SUPPORT 3.0

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos(double x) {
    return x > -LANCZOS_SUPPORT && x < LANCZOS_SUPPORT ? sinc(x) * sinc(x / LANCZOS_SUPPORT) : 0.0;
}

/* Fixed-point weights of every output position: bounds[2·o] = first input, bounds[2·o+1] = count;
 * k[o·ksize + i]. Returns ksize, or 0 without memory. */
static int lanczos_coeffs(int in_size, int out_size, int **bounds_out, int32_t **k_out) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = LANCZOS_SUPPORT * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *bounds = malloc((size_t)out_size * 2 * sizeof(int));
    int32_t *k = calloc((size_t)out_size * ksize, sizeof(int32_t));
    double *pre = malloc((size_t)ksize * sizeof(double));
    if (!bounds || !k || !pre) {
        free(bounds);
        free(k);
        free(pre);
        return 0;
    }
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            pre[x] = lanczos((x + xmin - center + 0.5) * ss);
            ww += pre[x];
        }
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? pre[x] / ww : pre[x];
            k[(size_t)o * ksize + x] =
                (int32_t)(v < 0 ? trunc(-0.5 + v * (1 << PRECISION_BITS)) : trunc(0.5 + v * (1 << PRECISION_BITS)));
        }
        bounds[2 * o] = xmin;
        bounds[2 * o + 1] = xmax;
    }
    free(pre);
    *bounds_out = bounds;
    *k_out = k;
    return ksize;
}

static uint8_t clip8(int64_t ss) {
    int64_t v = ss >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One pass along an axis: `n` lines of `len` samples each; sample j of line l sits at
 * base(l) + j·step (in pixels of ch channels). */
static int resample_pass(const uint8_t *src, int w, int h, int ch, uint8_t *dst, int ow, int oh, int horizontal) {
    int *bounds;
    int32_t *k;
    int in_size = horizontal ? w : h, out_size = horizontal ? ow : oh;
    int ksize = lanczos_coeffs(in_size, out_size, &bounds, &k);
    if (!ksize) return -1;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int o = horizontal ? x : y, first = bounds[2 * o], count = bounds[2 * o + 1];
            const int32_t *kk = k + (size_t)o * ksize;
            for (int c = 0; c < ch; c++) {
                int64_t ss = 1 << (PRECISION_BITS - 1);
                for (int i = 0; i < count; i++) {
                    size_t at = horizontal ? ((size_t)y * w + first + i) : ((size_t)(first + i) * w + x);
                    ss += (int64_t)src[at * ch + c] * kk[i];
                }
                dst[((size_t)y * ow + x) * ch + c] = clip8(ss);
            }
        }
    free(bounds);
    free(k);
    return 0;
}

int image_resize_lanczos(const uint8_t *src, int w, int h, int ch, uint8_t *dst, int ow, int oh) {
    if (w == ow && h == oh) {
        memcpy(dst, src, (size_t)w * h * ch);
        return 0;
    }
    if (h == oh) return resample_pass(src, w, h, ch, dst, ow, oh, 1);
    if (w == ow) return resample_pass(src, w, h, ch, dst, ow, oh, 0);
    uint8_t *mid = malloc((size_t)ow * h * ch); /* [h, ow, ch] after the horizontal pass */
    if (!mid) return -1;
    int rc = resample_pass(src, w, h, ch, mid, ow, h, 1);
    if (rc == 0) rc = resample_pass(mid, ow, h, ch, dst, ow, oh, 0);
    free(mid);
    return rc;
}

/* The image resized to W x H in its own channels (malloc'd [H, W, channels]). */
static uint8_t *resized(const sd_pixels *p, int W, int H) {
    uint8_t *out = malloc((size_t)W * H * p->channels);
    if (out && image_resize_lanczos(p->data, p->width, p->height, p->channels, out, W, H) != 0) {
        free(out);
        out = NULL;
    }
    return out;
}

/* out[3, H, W] from the image as RGB (alpha dropped, grey replicated) resized to W x H: v/255, then 2x − 1 when
 * normalize (diffusers' VaeImageProcessor, do_normalize). */
static int to_rgb(const sd_pixels *p, int W, int H, int normalize, float *out) {
    uint8_t *px = resized(p, W, H);
    if (!px) return -1;
    const size_t P = (size_t)W * H;
    const int ch = p->channels;
    for (size_t i = 0; i < P; i++)
        for (int c = 0; c < 3; c++) {
            float v = (float)px[i * ch + (ch >= 3 ? c : 0)] / 255.0f; /* RGB(A): drop alpha; grey (+alpha): replicate */
            out[c * P + i] = normalize ? 2.0f * v - 1.0f : v;
        }
    free(px);
    return 0;
}

int image_to_model_input(const sd_pixels *p, int W, int H, float *out) { return to_rgb(p, W, H, 1, out); }

int image_to_unit_rgb(const sd_pixels *p, int W, int H, float *out) { return to_rgb(p, W, H, 0, out); }

int image_binary_mask(const sd_pixels *p, int W, int H, float *mask) {
    uint8_t *px = resized(p, W, H);
    if (!px) return -1;
    const size_t P = (size_t)W * H;
    const int ch = p->channels;
    for (size_t i = 0; i < P; i++) {
        const uint8_t *v = px + i * ch;
        int grey = ch >= 3
                       ? (int)(((uint32_t)v[0] * 19595 + (uint32_t)v[1] * 38470 + (uint32_t)v[2] * 7471 + 0x8000) >> 16)
                       : v[0];
        mask[i] = (float)grey / 255.0f >= 0.5f ? 1.0f : 0.0f; /* binarize: m < 0.5 -> 0, else 1 */
    }
    free(px);
    return 0;
}
