/* rng.h - the random streams diffusers draws from, reproduced bit for bit:
 *   cpu:  torch.randn on a CPU torch.Generator after manual_seed(seed): mt19937, float path
 *         (Box-Muller over blocks of 16 uniforms) for >= 16 values, double path below.
 *   cuda: torch.randn on a CUDA generator: Philox4x32-10 (curand_normal4), one thread per value.
 * Successive draws continue the stream, as successive randn calls on one generator do. */
#ifndef SD_RNG_H
#define SD_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { RNG_CPU = 0, RNG_CUDA } rng_kind;

typedef struct {
    rng_kind kind;
    uint32_t mt[624]; /* mt19937 state */
    int mti;
    int has_cached_normal; /* torch's cached second Box-Muller value (double path) */
    double cached_normal;
    uint64_t seed;   /* Philox key */
    uint64_t offset; /* Philox offset (32-bit values), advanced per draw */
} sd_rng;

void rng_init(sd_rng *r, rng_kind kind, uint64_t seed);
/* out[n] = the next torch.randn(n) of this generator. */
void rng_randn(sd_rng *r, float *out, size_t n);
/* Raw mt19937 output (exposed for tests). */
uint32_t rng_mt_next(sd_rng *r);

#endif
