/* compute.c - see compute.h. */
#include "nn/compute.h"

#include "nn/gemm.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void compute_init(compute *cc, int threads, int bf16, int drop_after_use) {
    memset(cc, 0, sizeof *cc);
#ifdef _OPENMP
    if (threads < 1) threads = omp_get_max_threads();
#else
    if (threads < 1) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
#endif
    cc->threads = threads < 1 ? 1 : threads;
    cc->bf16 = bf16 && gemm_bf16_supported();
    cc->drop_after_use = drop_after_use;
    arena_init(&cc->arena);
    openblas_set_num_threads(1); /* one thread pool: the kernels split every product over OpenMP's team */
}

void compute_free(compute *cc) {
    compute_end_stage(cc);
    free(cc->scratch);
    memset(cc, 0, sizeof *cc);
}

sd_status compute_reserve_scratch(compute *cc, size_t floats) {
    if (floats <= cc->scratch_floats) return SD_OK;
    float *s = malloc(floats * sizeof(float));
    if (!s) return SD_ERR_NOMEM;
    free(cc->scratch);
    cc->scratch = s;
    cc->scratch_floats = floats;
    return SD_OK;
}

void compute_end_stage(compute *cc) {
    arena_free(&cc->arena);
    arena_init(&cc->arena);
    free(cc->bf16_a.words);
    free(cc->bf16_b.words);
    cc->bf16_a = cc->bf16_b = (bf16_buffer){0};
}

void compute_begin(compute *cc, sd_cancel_fn cancel, void *cancel_user) {
    cc->cancel = cancel;
    cc->cancel_user = cancel_user;
    cc->status = SD_OK;
}

/* status is read by every thread of a team while the master may set it: atomic loads and stores */
static sd_status status_get(const compute *cc) { return __atomic_load_n(&cc->status, __ATOMIC_RELAXED); }

int compute_stopped(compute *cc) {
    if (status_get(cc) == SD_OK && cc->cancel && cc->cancel(cc->cancel_user))
        __atomic_store_n(&cc->status, SD_ERR_CANCELLED, __ATOMIC_RELAXED);
    return status_get(cc) != SD_OK;
}

/* Only the team's master calls the caller's callback; the others read the status it stores. */
static int is_team_master(void) {
#ifdef _OPENMP
    return omp_get_thread_num() == 0;
#else
    return 1;
#endif
}

int compute_poll(compute *cc) {
    if (is_team_master()) return compute_stopped(cc);
    return status_get(cc) != SD_OK;
}

float *compute_alloc(compute *cc, size_t n) {
    if (compute_poll(cc)) return NULL; /* after a stop no new buffer: the caller returns */
    float *p = arena_alloc(&cc->arena, n);
    if (!p && cc->status == SD_OK) cc->status = SD_ERR_NOMEM;
    return p;
}

arena_mark compute_mark(const compute *cc) { return arena_get_mark(&cc->arena); }

void compute_reset(compute *cc, arena_mark m) { arena_reset(&cc->arena, m); }

const float *compute_weight(compute *cc, const weight *w) {
    return weight_f32(w, cc->scratch, cc->threads, cc->drop_after_use);
}

void compute_count(compute *cc, double flops) { cc->flops += flops; }
