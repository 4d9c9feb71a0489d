/* vae_tiled.c - tiled VAE decode and encode, following diffusers' AutoencoderKL.tiled_decode / _tiled_encode
 * (diffusers 0.31, overlap factor 1/4):
 *   tiles of T input pixels start every int(T·3/4) pixels (the last ones smaller) and run through the network
 *   on their own; visited row by row, left to right, each output tile is blended IN PLACE with the tile above,
 *   then with the tile to its left: b[y] = a[rows(a) − e' + y]·(1 − y/e') + b[y]·(y/e') for y < e' =
 *   min(e, rows(a), rows(b)), e = int(U/4) with U the output tile size; then its top-left U − e rows and
 *   columns are kept and the pieces concatenated. Encoding blends the moments [mean; logvar] before the
 *   logvar clamp, as diffusers does. */
#include "nets/vae.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    float *data; /* [C, h, w] */
    int h, w;
} tile;

/* b's first e' rows blended with a's last e' rows (same width). */
static void blend_v(const tile *a, tile *b, int C, int e) {
    e = e < a->h ? e : a->h;
    e = e < b->h ? e : b->h;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < e; y++) {
            const float wb = (float)((double)y / e), wa = (float)(1.0 - (double)y / e);
            const float *ar = a->data + ((size_t)c * a->h + (a->h - e + y)) * a->w;
            float *br = b->data + ((size_t)c * b->h + y) * b->w;
            for (int x = 0; x < b->w; x++) br[x] = ar[x] * wa + br[x] * wb;
        }
}

/* b's first e' columns blended with a's last e' columns (same height). */
static void blend_h(const tile *a, tile *b, int C, int e) {
    e = e < a->w ? e : a->w;
    e = e < b->w ? e : b->w;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < b->h; y++) {
            const float *ar = a->data + ((size_t)c * a->h + y) * a->w + (a->w - e);
            float *br = b->data + ((size_t)c * b->h + y) * b->w;
            for (int x = 0; x < e; x++) br[x] = ar[x] * (float)(1.0 - (double)x / e) + br[x] * (float)((double)x / e);
        }
}

/* Runs `fn` on every input tile (in_tile × in_tile, stepping int(in_tile·3/4)), blends the outputs (scale `up`
 * output pixels per input pixel, C channels) and writes the [C, H·up, W·up] result. */
typedef sd_status (*tile_fn)(compute *cc, const vae *v, const float *in, int h, int w, float *out);

static sd_status run_tiled(compute *cc, const vae *v, const float *in, int Cin, int H, int W, int in_tile, double up,
                           int C, tile_fn fn, float *out) {
    const int step = (int)(in_tile * 0.75), out_tile = (int)(in_tile * up), e = (int)(out_tile * 0.25),
              keep = out_tile - e;
    const int rows = (H + step - 1) / step, cols = (W + step - 1) / step;
    tile *t = calloc((size_t)rows * cols, sizeof *t);
    float *crop = malloc((size_t)Cin * in_tile * in_tile * sizeof(float));
    sd_status rc = t && crop ? SD_OK : SD_ERR_NOMEM;
    for (int r = 0; r < rows && !rc; r++)
        for (int c = 0; c < cols && !rc; c++) {
            const int i = r * step, j = c * step, th = H - i < in_tile ? H - i : in_tile,
                      tw = W - j < in_tile ? W - j : in_tile;
            for (int ch = 0; ch < Cin; ch++) /* crop[ch, th, tw] = in[ch, i:i+th, j:j+tw] */
                for (int y = 0; y < th; y++)
                    memcpy(crop + ((size_t)ch * th + y) * tw, in + ((size_t)ch * H + i + y) * W + j,
                           (size_t)tw * sizeof(float));
            tile *o = &t[r * cols + c];
            o->h = (int)(th * up);
            o->w = (int)(tw * up);
            o->data = malloc((size_t)C * o->h * o->w * sizeof(float));
            rc = o->data ? fn(cc, v, crop, th, tw, o->data) : SD_ERR_NOMEM;
        }
    const int OH = (int)(H * up), OW = (int)(W * up);
    for (int r = 0, y0 = 0; r < rows && !rc; r++) {
        int kh = 0;
        for (int c = 0, x0 = 0; c < cols; c++) {
            tile *b = &t[r * cols + c];
            if (r > 0) blend_v(&t[(r - 1) * cols + c], b, C, e);
            if (c > 0) blend_h(&t[r * cols + c - 1], b, C, e);
            kh = b->h < keep ? b->h : keep;
            const int kw = b->w < keep ? b->w : keep;
            for (int ch = 0; ch < C; ch++)
                for (int y = 0; y < kh && y0 + y < OH; y++)
                    memcpy(out + ((size_t)ch * OH + y0 + y) * OW + x0, b->data + ((size_t)ch * b->h + y) * b->w,
                           (size_t)(x0 + kw <= OW ? kw : OW - x0) * sizeof(float));
            x0 += kw;
        }
        y0 += kh;
    }
    for (int k = 0; t && k < rows * cols; k++) free(t[k].data);
    free(t);
    free(crop);
    return rc;
}

static sd_status decode_tile(compute *cc, const vae *v, const float *z, int h, int w, float *image) {
    return vae_decode(cc, v, z, 1, h, w, image);
}

static sd_status encode_tile(compute *cc, const vae *v, const float *image, int H, int W, float *moments) {
    return vae_encode_moments(cc, v, image, 1, H, W, moments);
}

sd_status vae_decode_tiled(compute *cc, const vae *v, const float *z, int h, int w, int tile_px, float *image) {
    return run_tiled(cc, v, z, v->z_ch, h, w, tile_px / 8, 8.0, v->img_ch, decode_tile, image);
}

sd_status vae_encode_tiled(compute *cc, const vae *v, const float *image, int H, int W, int tile_px, float *mean,
                           float *logvar) {
    if (!v->has_encoder) return SD_ERR_MODEL;
    float *moments = malloc((size_t)2 * v->z_ch * (H / 8) * (W / 8) * sizeof(float)); /* [2·z, H/8, W/8] */
    sd_status rc = moments
                       ? run_tiled(cc, v, image, v->img_ch, H, W, tile_px, 1.0 / 8, 2 * v->z_ch, encode_tile, moments)
                       : SD_ERR_NOMEM;
    if (rc == SD_OK) vae_split_moments(v, moments, 1, H / 8, W / 8, mean, logvar);
    free(moments);
    return rc;
}
