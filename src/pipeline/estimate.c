/* estimate.c - sd_estimate_step: what one sampling step would cost at a size, before running it: the UNet's FLOPs
 * there (unet_flops: convolutions and linear layers grow with the pixel count, self-attention with its square)
 * over this machine's matrix-product rate, measured once by a few short products in the context's own threads. */
#include "pipeline/context.h"

#include "nn/kernels.h"

#include <stdlib.h>

#define PROBE_N    1024 /* the probe: [1024, 1024] x [1024, 4096] products, 8.6 GFLOP each (about 50 ms) */
#define PROBE_RUNS 3    /* the best of them */

/* The context's matrix-product rate in FLOP/s, or 0 when the probe cannot run. */
static double measure_product_rate(sd_ctx *c) {
    const size_t n = (size_t)PROBE_N * PROBE_N;
    float *a = malloc(9 * n * sizeof(float)); /* A [PROBE_N, PROBE_N], B and C [PROBE_N, 4·PROBE_N] */
    if (!a) return 0;
    for (size_t i = 0; i < 5 * n; i++) a[i] = (float)(i % 7) * 0.125f;
    double best = 0;
    matmul(&c->cc, a, a + n, a + 5 * n, PROBE_N, 4 * PROBE_N, PROBE_N, 1.0f, 0.0f); /* warm-up: threads, pages */
    for (int r = 0; r < PROBE_RUNS; r++) {
        const double t0 = sd_now();
        matmul(&c->cc, a, a + n, a + 5 * n, PROBE_N, 4 * PROBE_N, PROBE_N, 1.0f, 0.0f);
        const double s = sd_now() - t0;
        if (s > 0 && (best == 0 || s < best)) best = s;
    }
    free(a);
    return best > 0 ? 8.0 * PROBE_N * n / best : 0;
}

double sd_estimate_step(sd_ctx *c, int width, int height, int guided, double *tflop) {
    const int W = width ? width : c->model.d.default_size, H = height ? height : c->model.d.default_size;
    const double flops = unet_flops(&c->un, guided ? 2 : 1, H / 8, W / 8, 77);
    if (tflop) *tflop = flops / 1e12;
    if (c->product_rate == 0) c->product_rate = measure_product_rate(c);
    return c->product_rate > 0 ? flops / c->product_rate : 0;
}
