/* esrgan.h - RRDBNet, the super-resolution network of ESRGAN and Real-ESRGAN (Wang et al. 2018, 2021; basicsr's
 * rrdbnet_arch.py), x4, and x2 / x1 with a pixel-unshuffled input:
 *     feat = conv_first(unshuffle(x)); t = RRDB^nb(feat); feat += conv_body(t)
 *     feat = lrelu(conv_up1(nearest2x(feat))); feat = lrelu(conv_up2(nearest2x(feat)))
 *     y    = conv_last(lrelu(conv_hr(feat)))
 *     RRDB(x) = x + 0.2·RDB3(RDB2(RDB1(x)));  RDB: five 3x3 convolutions on the concatenation of x and the outputs
 *     before them (lrelu after the first four), x + 0.2·conv5
 * nf, nb, gc and the scale (3 input channels: x4, 12: x2, 48: x1) come from the shapes. Names: basicsr's
 * (Real-ESRGAN releases, under params_ema or params in the .pth), the old ESRGAN sequential (model.0 ... model.10) that
 * AUTOMATIC1111 also loads, and the 2019 ESRGAN names (RRDB_trunk, trunk_conv, upconv1, ...). */
#ifndef SD_ESRGAN_H
#define SD_ESRGAN_H

#include "model/store.h"
#include "nn/layers.h"

typedef struct {
    conv_layer conv[5];
} esrgan_rdb;

typedef struct {
    esrgan_rdb rdb[3];
} esrgan_rrdb;

typedef struct {
    tensor_store store;
    const char *naming; /* "basicsr", "old ESRGAN", "ESRGAN 2019" */
    int nf, nb, gc;
    int unshuffle; /* 1, 2 or 4: the input's pixel-unshuffle factor (3·unshuffle² input channels) */
    int scale;     /* output pixels per input pixel: 4 / unshuffle */
    conv_layer first, body, up1, up2, hr, last;
    esrgan_rrdb *blocks; /* [nb] */
} esrgan;

/* Loads an RRDBNet. Returns SD_OK, or SD_ERR_MODEL (not an RRDBNet, inconsistent shapes) / another failure with err. */
sd_status esrgan_load(esrgan *e, const char *path, char *err, size_t errlen);
void esrgan_free(esrgan *e);

/* y[3, scale·H, scale·W] = the network on x[3, H, W] (RGB in [0, 1]; H and W multiples of the unshuffle factor), the
 * raw output (not clamped). */
sd_status esrgan_forward(compute *cc, const esrgan *e, const float *x, int H, int W, float *y);

/* The whole image in overlapping tiles of `tile` input pixels (0: in one piece), each run with `pad` more pixels of
 * context on every side and cropped: x[3, H, W] of any size (reflect-padded to the unshuffle factor, as Real-ESRGAN's
 * mod_pad) to y[3, scale·H, scale·W]. */
sd_status esrgan_upscale(compute *cc, const esrgan *e, const float *x, int H, int W, int tile, int pad, float *y);

#endif
