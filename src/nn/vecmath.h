/* vecmath.h - vectorisable float math shared by the kernels: exp/erf approximations, 16-lane
 * vector helpers (GCC/Clang vector extensions) and row reductions. Internal to the library. */
#ifndef SD_VECMATH_H
#define SD_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* e^r for |r| <= ln2/2 (Cephes expf polynomial), for a float or a v16 r. */
#define EXPF_POLY(r)                                                                                                   \
    (((((((r)*1.9875691500e-4f + 1.3981999507e-3f) * (r) + 8.3334519073e-3f) * (r) + 4.1665795894e-2f) * (r) +         \
       1.6666665459e-1f) *                                                                                             \
          (r) +                                                                                                        \
      5.0000001201e-1f) *                                                                                              \
         (r) * (r) +                                                                                                   \
     (r) + 1.0f)

/* exp(x) for float, vectorisable: 2^n · p(r) with x = n·ln2 + r, |r| <= ln2/2, and a degree-6
 * polynomial for e^r (Cephes expf coefficients; about 1 ulp). Inputs below -87.3 give 0. */
static inline float fast_expf(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365478515625f;
    float xc = x > hi ? hi : (x < lo ? lo : x);
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest (1.5·2^23 trick) */
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = EXPF_POLY(r);
    union {
        int32_t i;
        float f;
    } scale = {((int32_t)n + 127) << 23}; /* 2^n */
    return x < lo ? 0.0f : p * scale.f;
}

/* erf(x), Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), vectorisable. */
static inline float fast_erff(float x) {
    float ax = x < 0 ? -x : x, t = 1.0f / (1.0f + 0.3275911f * ax);
    float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
    float y = 1.0f - poly * fast_expf(-ax * ax);
    return x < 0 ? -y : y;
}

static inline float silu1(float v) { return v / (1.0f + fast_expf(-v)); }

/* y[i] = x[i]·s + t, then SiLU when silu, for i < n (conv_input's map, kernels.h): the one place the map is
 * computed, so that a convolution reading x through it sees exactly what group_norm writes. y may equal x. */
static inline void channel_map_row(const float *x, size_t n, float s, float t, int silu, float *y) {
    if (silu)
        for (size_t i = 0; i < n; i++) y[i] = silu1(x[i] * s + t);
    else
        for (size_t i = 0; i < n; i++) y[i] = x[i] * s + t;
}

/* 16 float lanes (one AVX-512 register; two AVX2 ones elsewhere) and lane masks. */
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

static inline v16 v16_load(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline v16 v16_splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline v16 v16_select(vi16 mask, v16 a, v16 b) { return (v16)((mask & (vi16)a) | (~mask & (vi16)b)); }
static inline v16 v16_max(v16 a, v16 b) { return v16_select(a > b, a, b); }

/* fast_expf on 16 lanes (the same formula). */
static inline v16 v16_exp(v16 x) {
    const v16 hi = v16_splat(88.3762626647949f), lo = v16_splat(-87.3365478515625f);
    v16 xc = v16_select(x > hi, hi, v16_select(x < lo, lo, x));
    v16 n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    v16 r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    v16 p = EXPF_POLY(r);
    vi16 e = (__builtin_convertvector(n, vi16) + 127) << 23; /* 2^n */
    return v16_select(x < lo, v16_splat(0.0f), p * (v16)e);
}

/* v16_exp for x <= 0 (softmax's exponentials), the same values: no upper clamp, and where the build has
 * AVX-512, p·2^n by one VSCALEFPS instead of forming 2^n's bits and multiplying (n >= -126 here, so 2^n is
 * normal and both round the product alike). */
static inline v16 v16_exp_nonpos(v16 x) {
#ifdef __AVX512F__
    const v16 lo = v16_splat(-87.3365478515625f);
    v16 xc = v16_select(x < lo, lo, x);
    v16 n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    v16 r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    v16 p = EXPF_POLY(r);
    return v16_select(x < lo, v16_splat(0.0f), (v16)_mm512_scalef_ps((__m512)p, (__m512)n));
#else
    return v16_exp(x);
#endif
}

/* Row reductions with 16 independent lanes (vectorised; the same result on any thread count). */
static inline float row_max(const float *x, int n) {
    v16 acc = v16_splat(-INFINITY);
    int j = 0;
    for (; j + 16 <= n; j += 16) acc = v16_max(acc, v16_load(x + j));
    float m = -INFINITY;
    for (int k = 0; k < 16; k++) m = acc[k] > m ? acc[k] : m;
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* x[j] = exp(x[j] - shift) in place; returns the sum of the new values. */
static inline float exp_row_sum(float *x, int n, float shift) {
    float acc[16] = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; k++) {
            x[j + k] = fast_expf(x[j + k] - shift);
            acc[k] += x[j + k];
        }
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += acc[k];
    for (; j < n; j++) {
        x[j] = fast_expf(x[j] - shift);
        s += x[j];
    }
    return s;
}

#endif
