/* rng.c - see rng.h. References: PyTorch aten/src/ATen/core/MT19937RNGEngine.h,
 * aten/src/ATen/native/cpu/DistributionTemplates.h (normal_fill), core/DistributionsHelper.h
 * (normal_distribution<double>), aten/src/ATen/native/cuda/DistributionTemplates.h and
 * cuRAND's Philox4x32-10 / curand_normal4 (Salmon et al. 2011, "Parallel random numbers"). */
#include "sampling/rng.h"

#include <math.h>
#include <string.h>

#define PI_D 3.14159265358979323846

/* ---------------- mt19937 (Matsumoto & Nishimura 1998) ---------------- */

static void mt_seed(sd_rng *r, uint32_t seed) {
    r->mt[0] = seed;
    for (int i = 1; i < 624; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = 624;
}

static void mt_twist(sd_rng *r) {
    for (int i = 0; i < 624; i++) {
        uint32_t y = (r->mt[i] & 0x80000000u) | (r->mt[(i + 1) % 624] & 0x7fffffffu);
        r->mt[i] = r->mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    r->mti = 0;
}

uint32_t rng_mt_next(sd_rng *r) {
    if (r->mti >= 624) mt_twist(r);
    uint32_t y = r->mt[r->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* at::uniform_real_distribution<float>(0, 1): 24 random bits. */
static float uniform_f32(sd_rng *r) { return (float)(rng_mt_next(r) & 0xffffffu) * (1.0f / 16777216.0f); }

/* at::uniform_real_distribution<double>(0, 1): 53 bits of random64() = (first << 32) | second. */
static double uniform_f64(sd_rng *r) {
    uint64_t hi = rng_mt_next(r), lo = rng_mt_next(r);
    uint64_t x = (hi << 32) | lo;
    return (double)(x & ((1ULL << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* Box-Muller over 16 uniforms in place: the first 8 give radii, the last 8 angles. */
static void normal_fill_16(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j], u2 = d[j + 8];
        float radius = sqrtf(-2.0f * logf(u1));
        float theta = 2.0f * (float)PI_D * u2;
        d[j] = radius * cosf(theta);
        d[j + 8] = radius * sinf(theta);
    }
}

static void randn_cpu_float(sd_rng *r, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
    if (n % 16) { /* torch recomputes the last 16 values from fresh uniforms */
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(r);
        normal_fill_16(tail);
    }
}

/* at::normal_distribution<double>: Box-Muller, caching the sine half for the next call. */
static double normal_f64(sd_rng *r) {
    if (r->has_cached_normal) {
        r->has_cached_normal = 0;
        return r->cached_normal;
    }
    double u1 = uniform_f64(r), u2 = uniform_f64(r);
    double radius = sqrt(-2.0 * log1p(-u2)), theta = 2.0 * PI_D * u1;
    r->cached_normal = radius * sin(theta);
    r->has_cached_normal = 1;
    return radius * cos(theta);
}

/* ---------------- Philox4x32-10 + curand_normal4 ---------------- */

static void philox_round(uint32_t ctr[4], const uint32_t key[2]) {
    uint64_t p0 = (uint64_t)0xD2511F53u * ctr[0], p1 = (uint64_t)0xCD9E8D57u * ctr[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0, hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t c0 = hi1 ^ ctr[1] ^ key[0], c2 = hi0 ^ ctr[3] ^ key[1];
    ctr[0] = c0;
    ctr[1] = lo1;
    ctr[2] = c2;
    ctr[3] = lo0;
}

static void philox4x32_10(const uint32_t counter[4], uint64_t seed, uint32_t out[4]) {
    uint32_t ctr[4] = {counter[0], counter[1], counter[2], counter[3]};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (int i = 0; i < 10; i++) {
        philox_round(ctr, key);
        key[0] += 0x9E3779B9u;
        key[1] += 0xBB67AE85u;
    }
    memcpy(out, ctr, sizeof ctr);
}

/* float(a·b) rounded toward zero (the product is exact in double: 24 + 24 bits). */
static float mul_round_to_zero(float a, float b) {
    double exact = (double)a * (double)b;
    float r = (float)exact;
    if (fabs((double)r) > fabs(exact)) r = nextafterf(r, 0.0f);
    return r;
}

/* The GPU's __sincosf: the angle is scaled to turns with a round-toward-zero multiply, then the
 * special-function unit evaluates sin(2π·turns). Modelled here with an exact sine of those turns;
 * the unit's own approximation error (about 2^-22) is not reproduced. */
static float gpu_fast_sin(float v) {
    float turns = mul_round_to_zero(v, 0.15915494f);
    return (float)sin(2.0 * PI_D * (double)turns);
}

/* Value of element `idx`: thread idx runs curand_init(seed, idx, offset) and keeps .x of curand_normal4
 * (cuRAND _curand_box_muller: u, v from the first two 32-bit outputs, x = sqrt(-2 log u)·sin v). */
static float philox_normal(uint64_t seed, uint64_t idx, uint64_t offset) {
    uint64_t lo = offset / 4; /* offset is a multiple of 4: whole Philox blocks */
    uint32_t counter[4] = {(uint32_t)lo, (uint32_t)(lo >> 32), (uint32_t)idx, (uint32_t)(idx >> 32)};
    uint32_t x[4];
    philox4x32_10(counter, seed, x);
    const float inv32 = 2.3283064e-10f, inv32_2pi = 2.3283064e-10f * 6.2831855f;
    float u = (float)x[0] * inv32 + inv32 / 2.0f;
    float v = (float)x[1] * inv32_2pi + inv32_2pi / 2.0f;
    return sqrtf(-2.0f * logf(u)) * gpu_fast_sin(v);
}

/* ---------------- public ---------------- */

void rng_init(sd_rng *r, rng_kind kind, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->seed = seed;
    mt_seed(r, (uint32_t)seed); /* torch keeps the low 32 bits */
}

void rng_randn(sd_rng *r, float *out, size_t n) {
    if (r->kind == RNG_CUDA) {
        for (size_t i = 0; i < n; i++) out[i] = philox_normal(r->seed, i, r->offset);
        /* torch advances the offset by 4 per value a thread produces (grid-stride rounds of 4) */
        r->offset += 4;
        return;
    }
    if (n >= 16)
        randn_cpu_float(r, out, n);
    else
        for (size_t i = 0; i < n; i++) out[i] = (float)normal_f64(r);
}
