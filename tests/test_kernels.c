/* test_kernels.c - each kernel against a naive reference implementation, on odd sizes
 * (non-square, channels not a multiple of the vector width, 1x1 spatial, strides, asymmetric padding). */
#include "kernels.h"
#include "vecmath.h"
#include "test_util.h"

static uint32_t lcg = 12345;
static float frand(void) { lcg = lcg * 1664525u + 1013904223u; return (float)((lcg >> 8) & 0xffff) / 32768.0f - 1.0f; }
static void fill(float *x, size_t n) { for (size_t i = 0; i < n; i++) x[i] = frand(); }

/* Softmax of one row with the reductions the attention kernels use. */
static void softmax_row(float *x, int n) {
    float inv = 1.0f / exp_row_sum(x, n, row_max(x, n));
    for (int j = 0; j < n; j++) x[j] *= inv;
}

static void naive_conv(const conv_desc *d, const float *x, int H, int W, const float *w, const float *b, float *y) {
    int Ho = conv_out_size(H, d->kh, d->stride, d->pad_top, d->pad_bottom), Wo = conv_out_size(W, d->kw, d->stride, d->pad_left, d->pad_right);
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
    struct { conv_desc d; int H, W; } cases[] = {
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
            int Ho = conv_out_size(H, d->kh, d->stride, d->pad_top, d->pad_bottom), Wo = conv_out_size(W, d->kw, d->stride, d->pad_left, d->pad_right);
            size_t nx = (size_t)d->in_ch * H * W, nw = (size_t)d->out_ch * d->in_ch * d->kh * d->kw, ny = (size_t)d->out_ch * Ho * Wo;
            float *x = malloc(B * nx * 4), *w = malloc(nw * 4), *b = malloc(d->out_ch * 4), *y = malloc(B * ny * 4), *r = malloc(B * ny * 4);
            float *work = malloc((conv_work_size(d, B, H, W) + 1) * 4);
            fill(x, B * nx); fill(w, nw); fill(b, d->out_ch);
            conv2d(d, x, B, H, W, w, b, y, work);
            for (int i = 0; i < B; i++) naive_conv(d, x + i * nx, H, W, w, b, r + i * ny);
            double e = max_abs_diff(y, r, B * ny);
            CHECK(e < 1e-4, "conv case %zu, batch %d: max abs error %.3g", c, B, e);
            free(x); free(w); free(b); free(y); free(r); free(work);
        }
}

/* One output value of a 3x3 stride-1 pad-1 convolution of x[C, H, W], in double, and in *l1 the
 * sum of the magnitudes of its terms (the scale that floating-point error grows with). */
static double naive_conv3x3_at(const float *x, int C, int H, int W, const float *w, const float *b, int o, int oy, int ox,
                               double *l1) {
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

/* Winograd F(4x4, 3x3) on a batch against direct convolution (every output, or an evenly spread
 * sample of them for the large cases): partial edge tiles, odd channels, tile rows wider than one
 * transform chunk, several tile blocks, several output-channel chunks, both loop orders. */
static void test_conv_winograd(void) {
    struct { int B, C, O, H, W; } cases[] = {
        {3, 5, 7, 13, 10},     /* odd everything, partial tiles on both edges */
        {2, 32, 8, 50, 300},   /* 75 tiles per row, four tile blocks */
        {1, 2048, 120, 8, 300}, /* two output chunks x two tile blocks, blocks outside */
        {2, 2048, 120, 240, 3}, /* two output chunks x two tile blocks, chunks outside */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int B = cases[c].B, C = cases[c].C, O = cases[c].O, H = cases[c].H, W = cases[c].W;
        conv_desc d = {C, O, 3, 3, 1, 1, 1, 1, 1};
        size_t nx = (size_t)C * H * W, ny = (size_t)O * H * W, nw = (size_t)O * C * 9;
        float *x = malloc(B * nx * 4), *w = malloc(nw * 4), *b = malloc(O * 4), *y = malloc(B * ny * 4);
        float *work = malloc(conv_winograd_work_size(&d, B, H, W) * 4);
        fill(x, B * nx); fill(w, nw); fill(b, O);
        conv2d_winograd(&d, x, B, H, W, w, b, y, work);
        size_t step = B * ny / 20000 + 1; /* step and ny share no factor for these sizes: samples cover all channels */
        double worst = 0; /* largest error relative to the magnitude of the summed terms */
        for (size_t i = 0; i < B * ny; i += step) {
            int item = (int)(i / ny), o = (int)(i % ny / ((size_t)H * W)), oy = (int)(i % ((size_t)H * W) / W), ox = (int)(i % W);
            double l1, r = naive_conv3x3_at(x + item * nx, C, H, W, w, b, o, oy, ox, &l1);
            worst = fabs(y[i] - r) / l1 > worst ? fabs(y[i] - r) / l1 : worst;
        }
        /* float32 F(4x4, 3x3): the transforms (entries up to 8 and 1/24) cost about 30 ulp of the terms'
         * magnitude (measured 1.6e-6 here); direct convolution stays within a few ulp */
        CHECK(worst < 4e-6, "winograd case %zu: error %.3g of the terms' magnitude", c, worst);
        free(x); free(w); free(b); free(y); free(work);
    }
    conv_desc unet0 = {320, 320, 3, 3, 1, 1, 1, 1, 1}, deep = {1280, 1280, 3, 3, 1, 1, 1, 1, 1};
    CHECK(conv_uses_winograd(&unet0, 64, 64, 2) && conv_uses_winograd(&deep, 16, 16, 2) && !conv_uses_winograd(&deep, 16, 16, 1) &&
              !conv_uses_winograd(&deep, 8, 8, 2),
          "Winograd chosen where it has enough tiles");
}

static void naive_attention(const float *Q, const float *K, const float *V, int n, int m, int heads, int dh, int causal, float *out) {
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
            for (int j = 0; j < m; j++) { s[j] = (causal && j > i) ? 0 : exp(s[j] - mx); sum += s[j]; }
            for (int k = 0; k < dh; k++) {
                double v = 0;
                for (int j = 0; j < m; j++) v += s[j] / sum * V[j * D + h * dh + k];
                out[i * D + h * dh + k] = (float)v;
            }
        }
    free(s);
}

static void test_attention(void) {
    struct { int n, m, heads, dh, causal; } cases[] = {
        {77, 77, 4, 8, 1}, {37, 11, 3, 5, 0}, {1, 1, 1, 3, 0}, {5000, 900, 2, 4, 0}, /* BLAS path */
        {130, 128, 3, 40, 0}, {64, 64, 2, 64, 0}, {9, 192, 1, 16, 0}, {33, 256, 2, 24, 0}, /* fused path (m % 16 == 0) */
        {256, 154, 8, 40, 0}, {100, 231, 5, 64, 0}, {77, 154, 4, 8, 1},  /* long prompts: 2 and 3 chunks of context */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int n = cases[c].n, m = cases[c].m, H = cases[c].heads, dh = cases[c].dh, D = H * dh;
        float *Q = malloc((size_t)n * D * 4), *K = malloc((size_t)m * D * 4), *V = malloc((size_t)m * D * 4);
        float *o = malloc((size_t)n * D * 4), *r = malloc((size_t)n * D * 4), *work = malloc(attention_work_size(n, m, H, dh) * 4);
        fill(Q, (size_t)n * D); fill(K, (size_t)m * D); fill(V, (size_t)m * D);
        attention(Q, D, K, D, V, D, n, m, H, dh, cases[c].causal, o, work);
        naive_attention(Q, K, V, n, m, H, dh, cases[c].causal, r);
        double e = max_abs_diff(o, r, (size_t)n * D);
        CHECK(e < 1e-5, "attention case %zu: max abs error %.3g", c, e);
        free(Q); free(K); free(V); free(o); free(r); free(work);
    }
}

static void test_norms(void) {
    const int C = 12, HW = 7 * 3, G = 4;
    float x[12 * 21], y[12 * 21], g[12], b[12];
    fill(x, C * HW); fill(g, C); fill(b, C);
    for (int silu = 0; silu < 2; silu++) {
        group_norm(x, C, HW, G, 1e-5f, g, b, silu, y);
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
    fill(lx, rows * d); fill(lg, d); fill(lb, d);
    layer_norm(lx, rows, d, 1e-5f, lg, lb, ly);
    double e = 0;
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int j = 0; j < d; j++) mean += lx[r * d + j];
        mean /= d;
        for (int j = 0; j < d; j++) var += (lx[r * d + j] - mean) * (lx[r * d + j] - mean);
        var /= d;
        for (int j = 0; j < d; j++) e = fmax(e, fabs((lx[r * d + j] - mean) / sqrt(var + 1e-5) * lg[j] + lb[j] - ly[r * d + j]));
    }
    CHECK(e < 1e-5, "layer_norm: max abs error %.3g", e);
}

static void test_elementwise(void) {
    float x[6] = {-3, -1, 0, 0.5f, 2, 7}, y[3];
    float s[6];
    memcpy(s, x, sizeof s);
    silu_inplace(s, 6);
    CHECK(fabsf(s[4] - 2.0f / (1.0f + expf(-2.0f))) < 1e-6f && s[2] == 0.0f, "silu");
    float q[6];
    memcpy(q, x, sizeof q);
    quick_gelu_inplace(q, 6);
    CHECK(fabsf(q[4] - 2.0f / (1.0f + expf(-3.404f))) < 1e-6f, "quick_gelu");
    geglu(x, 1, 3, y); /* a = [-3, -1, 0], g = [0.5, 2, 7] */
    CHECK(fabsf(y[0] - (-3.0f * 0.5f * 0.5f * (1 + erff(0.5f / sqrtf(2))))) < 1e-6f && y[2] == 0.0f, "geglu");
    float e = 0; /* exp and erf approximations over the range the networks use */
    for (float v = -9.0f; v <= 9.0f; v += 0.01f) {
        float g_in[2] = {1.0f, v}, g_out;
        geglu(g_in, 1, 1, &g_out);
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
    upsample_nearest2x(up_in, 2, 1, 3, up);
    CHECK(up[0] == 1 && up[1] == 1 && up[6] == 1 && up[11] == 3 && up[12] == 4 && up[23] == 6, "upsample");
    float t_in[6] = {1, 2, 3, 4, 5, 6}, t_out[6];
    transpose(t_in, 2, 3, t_out);
    CHECK(t_out[1] == 4 && t_out[2] == 2 && t_out[5] == 6, "transpose");
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

int main(void) {
    kernels_set_threads(2);
    test_conv();
    test_conv_winograd();
    test_attention();
    test_norms();
    test_elementwise();
    test_arena();
    return test_finish();
}
