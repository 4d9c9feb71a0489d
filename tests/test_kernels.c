/* test_kernels.c - each kernel against a naive reference implementation, on odd sizes
 * (non-square, channels not a multiple of the vector width, 1x1 spatial, strides, asymmetric padding). */
#include "nn/gemm.h"
#include "nn/kernels.h"
#include "model/model.h"
#include "nn/vecmath.h"

static compute cc_f32, cc_bf16; /* float32 products, and bfloat16 ones where the CPU has them */
static compute *g_cc = &cc_f32; /* the context the kernels under test run in */
#include "test_util.h"

static uint32_t lcg = 12345;
static float frand(void) {
    lcg = lcg * 1664525u + 1013904223u;
    return (float)((lcg >> 8) & 0xffff) / 32768.0f - 1.0f;
}
static void fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = frand();
}

/* Softmax of one row with the reductions the attention kernels use. */
static void softmax_row(float *x, int n) {
    float inv = 1.0f / exp_row_sum(x, n, row_max(x, n));
    for (int j = 0; j < n; j++) x[j] *= inv;
}

static void naive_conv(const conv_desc *d, const float *x, int H, int W, const float *w, const float *b, float *y) {
    int Ho = conv_out_size(H, d->kh, d->stride, d->pad_top, d->pad_bottom),
        Wo = conv_out_size(W, d->kw, d->stride, d->pad_left, d->pad_right);
    for (int o = 0; o < d->out_ch; o++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                double s = b ? b[o] : 0;
                for (int c = 0; c < d->in_ch; c++)
                    for (int ky = 0; ky < d->kh; ky++)
                        for (int kx = 0; kx < d->kw; kx++) {
                            int iy = oy * d->stride - d->pad_top + ky, ix = ox * d->stride - d->pad_left + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            s += (double)w[((o * d->in_ch + c) * d->kh + ky) * d->kw + kx] * x[(c * H + iy) * W + ix];
                        }
                y[(o * Ho + oy) * Wo + ox] = (float)s;
            }
}

static void test_conv(void) {
    struct {
        conv_desc d;
        int H, W;
    } cases[] = {
        {{3, 5, 3, 3, 1, 1, 1, 1, 1}, 7, 5},    /* odd channels, non-square */
        {{17, 9, 3, 3, 2, 1, 1, 1, 1}, 9, 6},   /* stride 2 */
        {{6, 4, 3, 3, 2, 0, 0, 1, 1}, 8, 10},   /* VAE downsample padding (0,1,0,1) */
        {{13, 7, 1, 1, 1, 0, 0, 0, 0}, 5, 3},   /* pointwise */
        {{8, 3, 3, 3, 1, 1, 1, 1, 1}, 1, 1},    /* 1x1 spatial */
        {{4, 2, 3, 3, 1, 1, 1, 1, 1}, 64, 300}, /* more pixels than one im2col tile of small K */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int B = 1; B <= 3; B += 2) { /* B = 3: small images share one im2col matrix, large ones go item by item */
            conv_desc *d = &cases[c].d;
            int H = cases[c].H, W = cases[c].W;
            int Ho = conv_out_size(H, d->kh, d->stride, d->pad_top, d->pad_bottom),
                Wo = conv_out_size(W, d->kw, d->stride, d->pad_left, d->pad_right);
            size_t nx = (size_t)d->in_ch * H * W, nw = (size_t)d->out_ch * d->in_ch * d->kh * d->kw,
                   ny = (size_t)d->out_ch * Ho * Wo;
            float *x = malloc(B * nx * 4), *w = malloc(nw * 4), *b = malloc(d->out_ch * 4), *y = malloc(B * ny * 4),
                  *r = malloc(B * ny * 4);
            float *work = malloc((conv_work_size(d, B, H, W) + 1) * 4);
            fill(x, B * nx);
            fill(w, nw);
            fill(b, d->out_ch);
            conv2d(g_cc, d, x, B, H, W, w, b, y, work);
            for (int i = 0; i < B; i++) naive_conv(d, x + i * nx, H, W, w, b, r + i * ny);
            double e = max_abs_diff(y, r, B * ny);
            CHECK(e < 1e-4, "conv case %zu, batch %d: max abs error %.3g", c, B, e);
            free(x);
            free(w);
            free(b);
            free(y);
            free(r);
            free(work);
        }
}

/* One output value of a 3x3 stride-1 pad-1 convolution of x[C, H, W], in double, and in *l1 the
 * sum of the magnitudes of its terms (the scale that floating-point error grows with). */
static double naive_conv3x3_at(const float *x, int C, int H, int W, const float *w, const float *b, int o, int oy,
                               int ox, double *l1) {
    double s = b[o];
    *l1 = fabs(b[o]);
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                int iy = oy - 1 + ky, ix = ox - 1 + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                double t = (double)w[((size_t)o * C + c) * 9 + ky * 3 + kx] * x[((size_t)c * H + iy) * W + ix];
                s += t;
                *l1 += fabs(t);
            }
    return s;
}

/* Reading x through `in` gives exactly `want` (x as `in` reads it, written out by the caller's reference): both
 * conv_input_apply's written-out form (the other convolutions) and a Winograd convolution reading through `in`
 * against the same convolution of `want`. x and want hold B items of d->in_ch planes (want's are H x W). */
static void check_conv_input(const conv_desc *d, const conv_input *in, const float *x, const float *want, int B, int H,
                             int W, const float *w, const float *bias, const char *what, int variant) {
    const size_t n_in = (size_t)B * d->in_ch * H * W, n_out = (size_t)B * d->out_ch * H * W;
    float *written = malloc(n_in * 4), *y_ref = malloc(n_out * 4), *y = malloc(n_out * 4);
    float *work = malloc(conv_winograd_work_size(g_cc, d, B, H, W) * 4);
    conv_input_apply(g_cc, in, x, B, d->in_ch, H, W, written);
    CHECK(max_abs_diff(written, want, n_in) == 0, "conv_input_apply differs from %s (%d)", what, variant);
    conv2d_winograd(g_cc, d, want, NULL, B, H, W, w, bias, y_ref, work);
    conv2d_winograd(g_cc, d, x, in, B, H, W, w, bias, y, work);
    CHECK(max_abs_diff(y, y_ref, n_out) == 0, "winograd through %s (%d) differs by %.3g", what, variant,
          max_abs_diff(y, y_ref, n_out));
    free(written);
    free(y_ref);
    free(y);
    free(work);
}

/* Winograd reading its input through a conv_input map (GroupNorm + SiLU applied as the tiles are gathered) gives
 * exactly the values of group_norm written out then convolved: the padding stays zero, batch items use their
 * own coefficients, and the map is group_norm's own arithmetic. */
static void test_conv_winograd_map(void) {
    const int B = 2, C = 64, O = 16, H = 13, W = 37, G = 32;
    conv_desc d = {C, O, 3, 3, 1, 1, 1, 1, 1};
    const size_t nx = (size_t)C * H * W;
    float *x = malloc(B * nx * 4), *w = malloc((size_t)O * C * 9 * 4), *bias = malloc(O * 4), *gamma = malloc(C * 4);
    float *beta = malloc(C * 4), *normed = malloc(B * nx * 4), *scale = malloc(B * C * 4), *shift = malloc(B * C * 4);
    fill(x, B * nx);
    fill(w, (size_t)O * C * 9);
    fill(bias, O);
    fill(gamma, C);
    fill(beta, C);
    for (size_t i = nx; i < B * nx; i++) x[i] = 3.0f * x[i] + 1.0f; /* item 1: other statistics */
    for (int silu = 0; silu <= 1; silu++) {
        for (int b = 0; b < B; b++) {
            group_norm(g_cc, x + b * nx, C, H * W, G, 1e-6f, gamma, beta, silu, normed + b * nx);
            group_norm_coeffs(g_cc, x + b * nx, C, H * W, G, 1e-6f, gamma, beta, scale + b * C, shift + b * C);
        }
        const conv_input in = {scale, shift, silu, 0};
        check_conv_input(&d, &in, x, normed, B, H, W, w, bias, "group_norm with silu", silu);
    }
    free(x);
    free(w);
    free(bias);
    free(gamma);
    free(beta);
    free(normed);
    free(scale);
    free(shift);
}

/* Winograd reading its input nearest-upsampled 2x (conv_input.upsample2x) gives exactly upsample_nearest2x then
 * the convolution, for batch items of odd sizes (partial tiles at both edges), alone and with a map. */
static void test_conv_winograd_upsample(void) {
    const int B = 2, C = 8, O = 5, h = 9, w = 13, H = 2 * h, W = 2 * w;
    conv_desc d = {C, O, 3, 3, 1, 1, 1, 1, 1};
    const size_t nx = (size_t)C * h * w, nu = (size_t)C * H * W;
    float *x = malloc(B * nx * 4), *up = malloc(B * nu * 4), *w3 = malloc((size_t)O * C * 9 * 4), *bias = malloc(O * 4);
    float *scale = malloc(B * C * 4), *shift = malloc(B * C * 4);
    fill(x, B * nx);
    fill(w3, (size_t)O * C * 9);
    fill(bias, O);
    fill(scale, B * C);
    fill(shift, B * C);
    CHECK(conv_uses_winograd(&d, H, W, B), "the upsampling case runs through Winograd");
    for (int mapped = 0; mapped <= 1; mapped++) {
        for (int b = 0; b < B; b++) {
            upsample_nearest2x(g_cc, x + b * nx, C, h, w, up + b * nu);
            for (int c = 0; mapped && c < C; c++) /* the map on the upsampled tensor, as group_norm would write it */
                for (size_t i = 0; i < (size_t)H * W; i++) {
                    float *v = up + b * nu + (size_t)c * H * W + i;
                    *v = silu1(*v * scale[b * C + c] + shift[b * C + c]);
                }
        }
        const conv_input in = {mapped ? scale : NULL, mapped ? shift : NULL, mapped, 1};
        check_conv_input(&d, &in, x, up, B, H, W, w3, bias, "2x upsampling, then the map when 1", mapped);
    }
    free(x);
    free(up);
    free(w3);
    free(bias);
    free(scale);
    free(shift);
}

/* Winograd F(4x4, 3x3) on a batch against direct convolution (every output, or an evenly spread
 * sample of them for the large cases): partial edge tiles, odd channels, tile rows wider than one
 * transform chunk, several tile blocks, several output-channel chunks, both loop orders. */
static void test_conv_winograd(void) {
    struct {
        int B, C, O, H, W;
    } cases[] = {
        {3, 5, 7, 13, 10},   /* odd everything, partial tiles on both edges */
        {2, 32, 8, 50, 300}, /* 75 tiles per row, four tile blocks */
        /* at winograd.c's buffer sizes: */
        {2, 4096, 64, 240, 3}, /* two output chunks x two tile blocks, blocks outside */
        {1, 8192, 64, 240, 3}, /* two output chunks x two tile blocks, chunks outside */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int B = cases[c].B, C = cases[c].C, O = cases[c].O, H = cases[c].H, W = cases[c].W;
        conv_desc d = {C, O, 3, 3, 1, 1, 1, 1, 1};
        size_t nx = (size_t)C * H * W, ny = (size_t)O * H * W, nw = (size_t)O * C * 9;
        float *x = malloc(B * nx * 4), *w = malloc(nw * 4), *b = malloc(O * 4), *y = malloc(B * ny * 4);
        float *work = malloc(conv_winograd_work_size(g_cc, &d, B, H, W) * 4);
        fill(x, B * nx);
        fill(w, nw);
        fill(b, O);
        conv2d_winograd(g_cc, &d, x, NULL, B, H, W, w, b, y, work);
        size_t step = B * ny / 20000 + 1; /* step and ny share no factor for these sizes: samples cover all channels */
        double worst = 0;                 /* largest error relative to the magnitude of the summed terms */
        for (size_t i = 0; i < B * ny; i += step) {
            int item = (int)(i / ny), o = (int)(i % ny / ((size_t)H * W)), oy = (int)(i % ((size_t)H * W) / W),
                ox = (int)(i % W);
            double l1, r = naive_conv3x3_at(x + item * nx, C, H, W, w, b, o, oy, ox, &l1);
            worst = fabs(y[i] - r) / l1 > worst ? fabs(y[i] - r) / l1 : worst;
        }
        /* float32 F(4x4, 3x3): the transforms (entries up to 8 and 1/24) cost about 30 ulp of the terms'
         * magnitude (measured 1.6e-6 here); direct convolution stays within a few ulp */
        CHECK(worst < 4e-6, "winograd case %zu: error %.3g of the terms' magnitude", c, worst);
        free(x);
        free(w);
        free(b);
        free(y);
        free(work);
    }
    conv_desc unet0 = {320, 320, 3, 3, 1, 1, 1, 1, 1}, deep = {1280, 1280, 3, 3, 1, 1, 1, 1, 1};
    CHECK(conv_uses_winograd(&unet0, 64, 64, 2) && conv_uses_winograd(&deep, 16, 16, 2) &&
              !conv_uses_winograd(&deep, 16, 16, 1) && !conv_uses_winograd(&deep, 8, 8, 2),
          "Winograd chosen where it has enough tiles");
}

static void naive_attention(const float *Q, const float *K, const float *V, int n, int m, int heads, int dh, int causal,
                            float *out) {
    int D = heads * dh;
    double *s = malloc(sizeof(double) * m);
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < n; i++) {
            double mx = -1e300, sum = 0;
            for (int j = 0; j < m; j++) {
                double v = 0;
                for (int k = 0; k < dh; k++) v += (double)Q[i * D + h * dh + k] * K[j * D + h * dh + k];
                s[j] = (causal && j > i) ? -1e300 : v / sqrt(dh);
                if (s[j] > mx) mx = s[j];
            }
            for (int j = 0; j < m; j++) {
                s[j] = (causal && j > i) ? 0 : exp(s[j] - mx);
                sum += s[j];
            }
            for (int k = 0; k < dh; k++) {
                double v = 0;
                for (int j = 0; j < m; j++) v += s[j] / sum * V[j * D + h * dh + k];
                out[i * D + h * dh + k] = (float)v;
            }
        }
    free(s);
}

static void test_attention(void) {
    struct {
        int n, m, heads, dh, causal;
    } cases[] = {
        {77, 77, 4, 8, 1},     {37, 11, 3, 5, 0},    {1, 1, 1, 3, 0},
        {5000, 900, 2, 4, 0}, /* BLAS path */
        {130, 128, 3, 40, 0},  {64, 64, 2, 64, 0},   {9, 192, 1, 16, 0},
        {33, 256, 2, 24, 0},                                             /* fused path (m % 16 == 0) */
        {256, 154, 8, 40, 0},  {100, 231, 5, 64, 0}, {77, 154, 4, 8, 1}, /* long prompts: 2 and 3 chunks of context */
        {300, 2064, 2, 40, 0}, /* fused, many key tiles and a partial row block: the UNet's first level in small */
        {50, 64, 2, 40, 0},    /* fused: a task (2 blocks of 16 rows) whose first block is full, its second partial */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int n = cases[c].n, m = cases[c].m, H = cases[c].heads, dh = cases[c].dh, D = H * dh;
        float *Q = malloc((size_t)n * D * 4), *K = malloc((size_t)m * D * 4), *V = malloc((size_t)m * D * 4);
        float *o = malloc((size_t)n * D * 4), *r = malloc((size_t)n * D * 4),
              *work = malloc(attention_work_size(g_cc, n, m, H, dh) * 4);
        fill(Q, (size_t)n * D);
        fill(K, (size_t)m * D);
        fill(V, (size_t)m * D);
        attention(g_cc, Q, D, K, D, V, D, n, m, H, dh, cases[c].causal, o, work);
        naive_attention(Q, K, V, n, m, H, dh, cases[c].causal, r);
        double e = max_abs_diff(o, r, (size_t)n * D);
        CHECK(e < 1e-5, "attention case %zu: max abs error %.3g", c, e);
        free(Q);
        free(K);
        free(V);
        free(o);
        free(r);
        free(work);
    }
}

/* ---- bfloat16 products (gemm.h) ---- */

static float bf16_round(float x) { return bf16_to_float(float_to_bf16(x)); }

/* gemm_1t(GEMM_BF16) against a double-precision product of the bf16-rounded inputs: only the float32
 * summation may differ (relative to the sum of |terms|), on shapes with every kind of tail. */
static void test_gemm_bf16(void) {
    struct {
        int trans_b, M, N, K;
        float alpha, beta;
    } cases[] = {
        {0, 1, 1, 1, 1, 0},      {0, 7, 100, 33, 1, 0},    {1, 13, 70, 65, 0.5f, 1},    {0, 6, 64, 256, 1, 0.25f},
        {1, 37, 129, 513, 1, 0}, {0, 100, 600, 300, 2, 0}, {1, 300, 77, 1025, 1, 0.5f},
    };
    const int have = gemm_bf16_supported();
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int tb = cases[c].trans_b, M = cases[c].M, N = cases[c].N, K = cases[c].K, ldb = tb ? K : N;
        const float alpha = cases[c].alpha, beta = cases[c].beta;
        float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *C = malloc((size_t)M * N * 4);
        float *C0 = malloc((size_t)M * N * 4), *Cf = malloc((size_t)M * N * 4), *Ca = malloc((size_t)M * N * 4);
        void *Ab = malloc(gemm_bf16_rows_bytes(M, K));
        fill(A, (size_t)M * K);
        fill(B, (size_t)K * N);
        fill(C0, (size_t)M * N);
        for (size_t i = 0; i < (size_t)M * N; i++)
            C[i] = Ca[i] = Cf[i] = beta != 0 ? C0[i] : NAN; /* beta 0 never reads C */
        gemm_1t(GEMM_BF16, tb, M, N, K, alpha, A, K, B, ldb, beta, C, N);
        gemm_1t(GEMM_F32, tb, M, N, K, alpha, A, K, B, ldb, beta, Cf, N);
        double worst = 0, bf16_vs_f32 = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double ref = 0, l1 = 0;
                for (int k = 0; k < K; k++) {
                    float b = tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                    double t = have ? (double)bf16_round(A[(size_t)i * K + k]) * bf16_round(b)
                                    : (double)A[(size_t)i * K + k] * b;
                    ref += t;
                    l1 += fabs(t);
                }
                ref = alpha * ref + (beta != 0 ? beta * C0[(size_t)i * N + j] : 0);
                l1 = fabs(alpha) * l1 + fabs(beta * C0[(size_t)i * N + j]) + 1e-30;
                double e = fabs(C[(size_t)i * N + j] - ref) / l1,
                       d = fabs(C[(size_t)i * N + j] - Cf[(size_t)i * N + j]) / l1;
                if (!(e <= worst)) worst = e;
                if (d > bf16_vs_f32) bf16_vs_f32 = d;
            }
        CHECK(worst < 1e-6, "bf16 gemm case %zu (%dx%dx%d): error %.3g of the terms' magnitude", c, M, N, K, worst);
        /* bf16 really ran: rounding the inputs moves the result by ~2^-9 of the terms (float32: exactly nothing) */
        CHECK(have ? bf16_vs_f32 > 1e-4 || K == 1 : bf16_vs_f32 == 0, "bf16 gemm case %zu differs from float32 by %.3g",
              c, bf16_vs_f32);
        if (have) {
            gemm_bf16_rows(A, K, M, K, Ab);
            gemm_1t_bf16a(tb, M, N, K, alpha, A, K, Ab, B, ldb, beta, Ca, N);
            CHECK(max_abs_diff(C, Ca, (size_t)M * N) == 0,
                  "bf16 gemm case %zu: A converted beforehand gives the same values", c);
        }
        free(A);
        free(B);
        free(C);
        free(C0);
        free(Cf);
        free(Ca);
        free(Ab);
    }
}

/* The layers in a bfloat16 compute context: linear (shared A conversion), im2col and Winograd convolutions and
 * the fused attention, against the float64 references, within the error bf16 inputs allow. */
static void test_layers_bf16(void) {
    g_cc = &cc_bf16;
    CHECK(cc_bf16.bf16 == 1, "a bf16 compute context uses bfloat16 on a bf16 CPU");
    { /* linear, large enough for the threaded panels: y[n, out] = x · Wᵀ + b */
        const int n = 700, in = 333, out = 260;
        float *x = malloc((size_t)n * in * 4), *w = malloc((size_t)out * in * 4), *b = malloc(out * 4),
              *y = malloc((size_t)n * out * 4);
        fill(x, (size_t)n * in);
        fill(w, (size_t)out * in);
        fill(b, out);
        linear(g_cc, x, n, in, w, b, out, y);
        double worst = 0;
        for (int i = 0; i < n; i += 7)
            for (int o = 0; o < out; o++) {
                double ref = b[o], l1 = fabs(b[o]);
                for (int k = 0; k < in; k++) {
                    double t = (double)bf16_round(x[(size_t)i * in + k]) * bf16_round(w[(size_t)o * in + k]);
                    ref += t;
                    l1 += fabs(t);
                }
                double e = fabs(y[(size_t)i * out + o] - ref) / l1;
                if (!(e <= worst)) worst = e;
            }
        CHECK(worst < 1e-6, "bf16 linear: error %.3g of the terms' magnitude", worst);
        /* the panels (rows of x) share one packed Wᵀ: the same sums as one product */
        float *y1 = malloc((size_t)n * out * 4);
        for (int i = 0; i < n; i++) memcpy(y1 + (size_t)i * out, b, (size_t)out * 4);
        gemm_1t(GEMM_BF16, 1, n, out, in, 1.0f, x, in, w, in, 1.0f, y1, out);
        CHECK(max_abs_diff(y, y1, (size_t)n * out) == 0, "bf16 linear in panels differs from one product by %.3g",
              max_abs_diff(y, y1, (size_t)n * out));
        free(x);
        free(w);
        free(b);
        free(y);
        free(y1);
    }
    { /* matmul in row panels sharing a packed B[K, N] of several column and depth blocks (N > 512, K > 384) */
        const int M = 1000, N = 600, K = 800;
        float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *C = malloc((size_t)M * N * 4),
              *C1 = malloc((size_t)M * N * 4);
        fill(A, (size_t)M * K);
        fill(B, (size_t)K * N);
        matmul(g_cc, A, B, C, M, N, K, 0.5f, 0.0f);
        gemm_1t(GEMM_BF16, 0, M, N, K, 0.5f, A, K, B, N, 0.0f, C1, N);
        double bf16_vs_f32 = 0;
        for (int j = 0; j < N; j += 37) { /* row 0 against float32 sums: bf16 really ran */
            double f = 0, l1 = 0;
            for (int k = 0; k < K; k++)
                f += (double)A[k] * B[(size_t)k * N + j], l1 += fabs((double)A[k] * B[(size_t)k * N + j]);
            if (fabs(C[j] - 0.5 * f) / (0.5 * l1) > bf16_vs_f32) bf16_vs_f32 = fabs(C[j] - 0.5 * f) / (0.5 * l1);
        }
        CHECK(max_abs_diff(C, C1, (size_t)M * N) == 0 && bf16_vs_f32 > 1e-4,
              "bf16 matmul in panels: differs from one product by %.3g (from float32 by %.3g)",
              max_abs_diff(C, C1, (size_t)M * N), bf16_vs_f32);
        free(A);
        free(B);
        free(C);
        free(C1);
    }
    struct {
        int B, C, O, H, W, stride;
    } convs[] = {{2, 40, 24, 30, 26, 1}, {1, 17, 9, 9, 6, 2}, {2, 64, 32, 6, 6, 1}};
    for (size_t c = 0; c < sizeof convs / sizeof *convs; c++) {
        const int B = convs[c].B, C = convs[c].C, O = convs[c].O, H = convs[c].H, W = convs[c].W;
        conv_desc d = {C, O, 3, 3, convs[c].stride, 1, 1, 1, 1};
        const int Ho = conv_out_size(H, 3, d.stride, 1, 1), Wo = conv_out_size(W, 3, d.stride, 1, 1);
        const int wino = conv_uses_winograd(&d, H, W, B);
        size_t nx = (size_t)C * H * W, ny = (size_t)O * Ho * Wo;
        float *x = malloc(B * nx * 4), *w = malloc((size_t)O * C * 9 * 4), *b = malloc(O * 4), *y = malloc(B * ny * 4);
        float *work = malloc((wino ? conv_winograd_work_size(g_cc, &d, B, H, W) : conv_work_size(&d, B, H, W) + 1) * 4);
        fill(x, B * nx);
        fill(w, (size_t)O * C * 9);
        fill(b, O);
        if (wino)
            conv2d_winograd(g_cc, &d, x, NULL, B, H, W, w, b, y, work);
        else
            conv2d(g_cc, &d, x, B, H, W, w, b, y, work);
        double worst = 0;
        for (int item = 0; item < B; item++)
            for (int o = 0; o < O; o++)
                for (int oy = 0; oy < Ho; oy++)
                    for (int ox = 0; ox < Wo; ox++) {
                        double ref = b[o], l1 = fabs(b[o]);
                        for (int ci = 0; ci < C; ci++)
                            for (int k = 0; k < 9; k++) {
                                int iy = oy * d.stride - 1 + k / 3, ix = ox * d.stride - 1 + k % 3;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                double t = (double)w[((size_t)o * C + ci) * 9 + k] *
                                           x[item * nx + ((size_t)ci * H + iy) * W + ix];
                                ref += t;
                                l1 += fabs(t);
                            }
                        double e = fabs(y[item * ny + ((size_t)o * Ho + oy) * Wo + ox] - ref) / l1;
                        if (!(e <= worst)) worst = e;
                    }
        /* im2col: bf16 inputs, each product within 2^-8 of its value. Winograd stays float32 (its transformed
         * tiles mix up to 36 terms with factors up to 25: rounding them to bf16 measured 1.8e-2 here) */
        if (wino)
            CHECK(worst < 4e-6, "bf16 mode, Winograd conv case %zu: error %.3g (float32 expected)", c, worst);
        else
            CHECK(worst < 4e-3 && worst > 1e-5, "bf16 conv case %zu (im2col): error %.3g of the terms' magnitude", c,
                  worst);
        free(x);
        free(w);
        free(b);
        free(y);
        free(work);
    }
    for (int n = 130; n <= 146; n += 16) { /* fused attention: bf16 scores and P·V, float32 softmax; the last task's
                                            * first block partial (130 rows), then full with its second partial (146) */
        const int m = 160, H = 3, dh = 40, D = H * dh;
        float *Q = malloc((size_t)n * D * 4), *K = malloc((size_t)m * D * 4), *V = malloc((size_t)m * D * 4);
        float *o = malloc((size_t)n * D * 4), *r = malloc((size_t)n * D * 4),
              *work = malloc(attention_work_size(g_cc, n, m, H, dh) * 4);
        fill(Q, (size_t)n * D);
        fill(K, (size_t)m * D);
        fill(V, (size_t)m * D);
        attention(g_cc, Q, D, K, D, V, D, n, m, H, dh, 0, o, work);
        naive_attention(Q, K, V, n, m, H, dh, 0, r);
        double e = max_abs_diff(o, r, (size_t)n * D);
        CHECK(e < 1e-2 && e > 1e-5,
              "bf16 attention, %d rows: max abs error %.3g (outputs are averages of values in [-1, 1])", n, e);
        free(Q);
        free(K);
        free(V);
        free(o);
        free(r);
        free(work);
    }
    g_cc = &cc_f32;
}

/* g_cc->flops counts 2·M·N·K per product as it runs: a linear layer (cut into panels), Winograd's 36 products
 * per tile (72·O·C per 4x4 output tile), attention (fused and BLAS paths: 4·n·m·dh per head). */
static void test_flop_count(void) {
    const int n = 300, in = 200, out = 150;
    float *x = malloc((size_t)n * in * 4), *W = malloc((size_t)out * in * 4), *y = malloc((size_t)n * out * 4);
    fill(x, (size_t)n * in);
    fill(W, (size_t)out * in);
    double f0 = g_cc->flops;
    linear(g_cc, x, n, in, W, NULL, out, y);
    CHECK(g_cc->flops - f0 == 2.0 * n * out * in, "linear counted %.0f FLOPs, expected %.0f", g_cc->flops - f0,
          2.0 * n * out * in);
    free(x);
    free(W);
    free(y);

    const int B = 3, C = 5, O = 7, H = 13, Wd = 10; /* 4 x 3 tiles of 4x4 per image */
    conv_desc d = {C, O, 3, 3, 1, 1, 1, 1, 1};
    float *cx = calloc((size_t)B * C * H * Wd, 4), *cw = calloc((size_t)O * C * 9, 4),
          *cy = malloc((size_t)B * O * H * Wd * 4);
    float *work = malloc(conv_winograd_work_size(g_cc, &d, B, H, Wd) * 4);
    f0 = g_cc->flops;
    conv2d_winograd(g_cc, &d, cx, NULL, B, H, Wd, cw, NULL, cy, work);
    CHECK(g_cc->flops - f0 == 72.0 * O * C * B * 4 * 3, "Winograd counted %.0f FLOPs, expected %.0f", g_cc->flops - f0,
          72.0 * O * C * B * 12);
    free(cx);
    free(cw);
    free(cy);
    free(work);

    struct {
        int n, m, heads, dh;
    } att[] = {{130, 128, 3, 40}, {37, 11, 3, 5}}; /* fused, BLAS */
    for (int c = 0; c < 2; c++) {
        const int an = att[c].n, am = att[c].m, ah = att[c].heads, adh = att[c].dh, D = ah * adh;
        float *Q = calloc((size_t)an * D, 4), *K = calloc((size_t)am * D, 4), *V = calloc((size_t)am * D, 4);
        float *o = malloc((size_t)an * D * 4), *aw = malloc(attention_work_size(g_cc, an, am, ah, adh) * 4);
        f0 = g_cc->flops;
        attention(g_cc, Q, D, K, D, V, D, an, am, ah, adh, 0, o, aw);
        const double want = 4.0 * an * am * adh * ah;
        CHECK(g_cc->flops - f0 == want, "attention case %d counted %.0f FLOPs, expected %.0f", c, g_cc->flops - f0,
              want);
        free(Q);
        free(K);
        free(V);
        free(o);
        free(aw);
    }
}

static void test_norms(void) {
    const int C = 12, HW = 7 * 3, G = 4;
    float x[12 * 21], y[12 * 21], g[12], b[12];
    fill(x, C * HW);
    fill(g, C);
    fill(b, C);
    for (int silu = 0; silu < 2; silu++) {
        group_norm(g_cc, x, C, HW, G, 1e-5f, g, b, silu, y);
        double e = 0;
        for (int gi = 0; gi < G; gi++) {
            double mean = 0, var = 0;
            int n = C / G * HW;
            for (int i = 0; i < n; i++) mean += x[gi * n + i];
            mean /= n;
            for (int i = 0; i < n; i++) var += (x[gi * n + i] - mean) * (x[gi * n + i] - mean);
            var /= n;
            for (int i = 0; i < n; i++) {
                int c = (gi * n + i) / HW;
                double v = (x[gi * n + i] - mean) / sqrt(var + 1e-5) * g[c] + b[c];
                if (silu) v = v / (1 + exp(-v));
                e = fmax(e, fabs(v - y[gi * n + i]));
            }
        }
        CHECK(e < 1e-5, "group_norm (silu=%d): max abs error %.3g", silu, e);
    }
    const int rows = 5, d = 19;
    float lx[5 * 19], ly[5 * 19], lg[19], lb[19];
    fill(lx, rows * d);
    fill(lg, d);
    fill(lb, d);
    layer_norm(g_cc, lx, rows, d, 1e-5f, lg, lb, ly);
    double e = 0;
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int j = 0; j < d; j++) mean += lx[r * d + j];
        mean /= d;
        for (int j = 0; j < d; j++) var += (lx[r * d + j] - mean) * (lx[r * d + j] - mean);
        var /= d;
        for (int j = 0; j < d; j++)
            e = fmax(e, fabs((lx[r * d + j] - mean) / sqrt(var + 1e-5) * lg[j] + lb[j] - ly[r * d + j]));
    }
    CHECK(e < 1e-5, "layer_norm: max abs error %.3g", e);
}

static void test_elementwise(void) {
    float x[6] = {-3, -1, 0, 0.5f, 2, 7}, y[3];
    float s[6];
    memcpy(s, x, sizeof s);
    silu_inplace(g_cc, s, 6);
    CHECK(fabsf(s[4] - 2.0f / (1.0f + expf(-2.0f))) < 1e-6f && s[2] == 0.0f, "silu");
    float q[6];
    memcpy(q, x, sizeof q);
    quick_gelu_inplace(g_cc, q, 6);
    CHECK(fabsf(q[4] - 2.0f / (1.0f + expf(-3.404f))) < 1e-6f, "quick_gelu");
    geglu(g_cc, x, 1, 3, y); /* a = [-3, -1, 0], g = [0.5, 2, 7] */
    CHECK(fabsf(y[0] - (-3.0f * 0.5f * 0.5f * (1 + erff(0.5f / sqrtf(2))))) < 1e-6f && y[2] == 0.0f, "geglu");
    float e = 0; /* exp and erf approximations over the range the networks use */
    for (float v = -9.0f; v <= 9.0f; v += 0.01f) {
        float g_in[2] = {1.0f, v}, g_out;
        geglu(g_cc, g_in, 1, 1, &g_out);
        e = fmaxf(e, fabsf(g_out - 0.5f * v * (1 + erff(v / sqrtf(2)))));
    }
    CHECK(e < 1e-6f, "gelu max abs error %.3g", e);
    float sm2[3] = {-100.0f, 0.0f, -INFINITY};
    softmax_row(sm2, 3);
    CHECK(sm2[1] == 1.0f && sm2[2] == 0.0f && sm2[0] < 1e-40f, "softmax extremes");
    float sm[4] = {1, 2, 3, 4};
    softmax_row(sm, 4);
    CHECK(fabsf(sm[3] - expf(4) / (expf(1) + expf(2) + expf(3) + expf(4))) < 1e-6f, "softmax");
    float up_in[2 * 1 * 3] = {1, 2, 3, 4, 5, 6}, up[2 * 2 * 6];
    upsample_nearest2x(g_cc, up_in, 2, 1, 3, up);
    CHECK(up[0] == 1 && up[1] == 1 && up[6] == 1 && up[11] == 3 && up[12] == 4 && up[23] == 6, "upsample");
    float t_in[6] = {1, 2, 3, 4, 5, 6}, t_out[6];
    transpose(g_cc, t_in, 2, 3, t_out);
    CHECK(t_out[1] == 4 && t_out[2] == 2 && t_out[5] == 6, "transpose");
    const int shapes[][2] = {{37, 19}, {16, 48}, {333, 517} /* threaded, partial tiles both ways */, {4096, 320}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const int rows = shapes[c][0], cols = shapes[c][1];
        float *x = malloc((size_t)rows * cols * 4), *y = malloc((size_t)rows * cols * 4);
        for (size_t i = 0; i < (size_t)rows * cols; i++) x[i] = (float)i;
        transpose(g_cc, x, rows, cols, y);
        size_t wrong = 0;
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) wrong += y[(size_t)k * rows + r] != x[(size_t)r * cols + k];
        CHECK(wrong == 0, "transpose %dx%d: %zu values misplaced", rows, cols, wrong);
        free(x);
        free(y);
    }
}

static void test_arena(void) {
    arena a;
    arena_init(&a);
    float *p = arena_alloc(&a, 10);
    arena_mark m = arena_get_mark(&a);
    float *q = arena_alloc(&a, 100);
    float *big = arena_alloc(&a, (size_t)40 << 20); /* larger than a block */
    CHECK(p && q && big && ((uintptr_t)q % 64) == 0, "arena allocations aligned");
    big[((size_t)40 << 20) - 1] = 1.0f;
    arena_reset(&a, m);
    float *q2 = arena_alloc(&a, 100);
    CHECK(q2 == q, "arena reuses memory after reset");
    arena_free(&a);
}

/* `test_kernels` checks the float32 kernels; `test_kernels bf16` the bfloat16 ones, and exits with 77 (ctest's
 * skip) on a CPU without AVX512-BF16, where they would compute float32 and check nothing of their own. */
int main(int argc, char **argv) {
    const int bf16 = argc > 1 && !strcmp(argv[1], "bf16");
    if (bf16 && !gemm_bf16_supported()) {
        printf("skipped: this CPU has no AVX512-BF16\n");
        return TEST_SKIPPED;
    }
    compute_init(&cc_f32, 2, 0, 0);
    compute_init(&cc_bf16, 2, 1, 0);
    if (bf16) {
        test_gemm_bf16();
        test_layers_bf16();
    } else {
        test_conv();
        test_conv_winograd();
        test_conv_winograd_map();
        test_conv_winograd_upsample();
        test_attention();
        test_flop_count();
        test_norms();
        test_elementwise();
        test_arena();
    }
    compute_free(&cc_f32);
    compute_free(&cc_bf16);
    return test_finish();
}
