/* weight.c - see weight.h. */
#include "nn/weight.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif
#include <string.h>

/* IEEE 754 binary16 -> binary32, exact (normals, subnormals, inf, NaN). */
float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        exp = 113;
        while (!(mant & 0x400)) {
            mant <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> IEEE half, round to nearest even (finite inputs of moderate size). */
uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { /* subnormal half */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* bfloat16 is the top half of a float32. */
uint16_t float_to_bf16(float f) { /* round to nearest even (finite inputs) */
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* dst[n] = float(src[n]) for binary16 values: F16C when compiled for it, exact either way. */
static void halves_to_floats(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = half_to_float(src[i]);
}

void weight_rows_f32(const weight *w, int64_t offset, int64_t n, float *dst, int threads) {
    if (w->f32) {
        memcpy(dst, w->f32 + offset, (size_t)n * sizeof(float));
        return;
    }
    if (w->dtype == ST_F32) {
        memcpy(dst, (const char *)w->half + offset * 4, (size_t)n * sizeof(float));
        return;
    }
    const uint16_t *src = (const uint16_t *)w->half + offset;
    const int64_t chunk = 1 << 16;
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 4 * chunk)
    for (int64_t c = 0; c < n; c += chunk) {
        int64_t m = n - c < chunk ? n - c : chunk;
        if (w->dtype == ST_F16)
            halves_to_floats(src + c, dst + c, (size_t)m);
        else
            for (int64_t i = 0; i < m; i++) dst[c + i] = bf16_to_float(src[c + i]);
    }
}

const float *weight_f32(const weight *w, float *scratch, int threads, int drop_after_use) {
    if (w->f32) return w->f32;
    weight_rows_f32(w, 0, w->numel, scratch, threads);
    if (drop_after_use && w->mapped) st_drop_pages(w->half, (size_t)w->numel * st_dtype_size(w->dtype));
    return scratch;
}
