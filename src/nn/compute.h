/* compute.h - the compute context: everything a network's forward pass runs with, in one explicit struct that
 * the library context (sd_ctx) owns and hands to every network and kernel. Nothing about how to compute lives in
 * per-thread or process-wide state, so two contexts with different settings in one process never see each
 * other's settings.
 *
 *   threads          the team size of every parallel loop (OpenMP num_threads); OpenBLAS itself runs on one
 *   bf16             matrix products with bfloat16 inputs (only where the CPU has AVX512-BF16)
 *   drop_after_use   low memory: a mapped F16/BF16 weight's pages are given back once converted
 *   arena            activations of the stage that runs
 *   scratch          the float32 conversion of one F16/BF16 matrix
 *   bf16_a, bf16_b   the bf16 copies of a product's A and packed B, kept between products
 *   cancel           polled between layers (compute_stopped) and between the work items of long kernels
 *                    (compute_poll): a caller's Ctrl-C stops a pass within milliseconds of work
 *   status           SD_OK, or the first failure (SD_ERR_NOMEM from the arena, SD_ERR_CANCELLED): once set, every
 *                    layer returns at once and the network reports it
 *   flops            multiply-add FLOPs of the matrix products run (2·M·N·K each), for the benchmark's floor
 */
#ifndef SD_COMPUTE_H
#define SD_COMPUTE_H

#include "sd.h"

#include "nn/arena.h"
#include "nn/weight.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t *words;
    size_t bytes;
} bf16_buffer;

typedef struct compute {
    int threads;
    int bf16;
    int drop_after_use;
    arena arena;
    float *scratch; /* [scratch_floats] */
    size_t scratch_floats;
    bf16_buffer bf16_a; /* [M][(K + 1) / 2]: A's rows (gemm_bf16_rows) */
    bf16_buffer bf16_b; /* op(B) packed whole (gemm_bf16_pack_b) */
    sd_cancel_fn cancel;
    void *cancel_user;
    sd_status status;
    double flops;
} compute;

/* A context with `threads` threads (< 1: OpenMP's default, OMP_NUM_THREADS or the cores), bfloat16 products when
 * asked and supported, and low-memory weight handling. No scratch yet (compute_reserve_scratch). */
void compute_init(compute *cc, int threads, int bf16, int drop_after_use);
void compute_free(compute *cc);

/* Makes the scratch hold at least `floats` floats. Returns SD_OK or SD_ERR_NOMEM. */
sd_status compute_reserve_scratch(compute *cc, size_t floats);

/* The end of a stage: the arena and the bf16 buffers are given back. */
void compute_end_stage(compute *cc);

/* Starts a pass: status SD_OK, and `cancel` (may be NULL) polled from now on. */
void compute_begin(compute *cc, sd_cancel_fn cancel, void *cancel_user);

/* Whether the pass must stop: a failure recorded, or the cancel callback asks for it (then status becomes
 * SD_ERR_CANCELLED). Networks call it between layers. */
int compute_stopped(compute *cc);

/* At the start of every kernel, and inside a parallel loop of a long one: whether the work (or its remaining
 * items) is to be skipped because the pass must stop. The team's master thread (the caller's) polls the cancel
 * callback; every thread reads the outcome. */
int compute_poll(compute *cc);

/* n floats from the arena; NULL once the pass must stop (compute_poll), or NULL with status SD_ERR_NOMEM. */
float *compute_alloc(compute *cc, size_t n);
arena_mark compute_mark(const compute *cc);
void compute_reset(compute *cc, arena_mark m);

/* The float32 view of a weight (weight_f32 into the scratch, with this context's threads and low-memory rule). */
const float *compute_weight(compute *cc, const weight *w);

/* Adds a product's multiply-add FLOPs to the counter (called once per product, outside parallel loops). */
void compute_count(compute *cc, double flops);

#endif
