/* dnnl_compare.c - the measurement behind choosing an own bf16 kernel over oneDNN (README, "bfloat16"):
 * GFLOP/s of one thread on the UNet's product shapes for oneDNN's bf16 matmul with bf16 inputs and
 * prepacked weights (its best case), oneDNN including the f32 -> bf16 reorders of both inputs (what `sd`
 * would have to do: its activations are float32), and gemm_1t(GEMM_BF16) from float32.
 * Not part of the build (oneDNN is no dependency). With libdnnl-dev installed:
 *   cc -O3 -march=native -Isrc tools/dnnl_compare.c src/gemm.c -ldnnl -lopenblas -o dnnl_compare
 *   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ./dnnl_compare
 */
#include <oneapi/dnnl/dnnl.h>
#include "nn/gemm.h"
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
static double now() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
#define CK(x)                                                                                                          \
    do {                                                                                                               \
        if ((x) != dnnl_success) {                                                                                     \
            fprintf(stderr, "dnnl fail %s\n", #x);                                                                     \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)
static double bench_dnnl(dnnl_engine_t eng, dnnl_stream_t st, int M, int N, int K, int any_weights, int with_reorders) {
    dnnl_dims_t sd = {M, K}, wd = {K, N}, dd = {M, N};
    dnnl_memory_desc_t smd, wmd, dmd, wmd_plain;
    CK(dnnl_memory_desc_init_by_tag(&smd, 2, sd, dnnl_bf16, dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(&wmd, 2, wd, dnnl_bf16, any_weights ? dnnl_format_tag_any : dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(&wmd_plain, 2, wd, dnnl_bf16, dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    CK(dnnl_matmul_desc_init(&md, &smd, &wmd, NULL, &dmd));
    dnnl_primitive_desc_t pd;
    CK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
    dnnl_primitive_t prim;
    CK(dnnl_primitive_create(&prim, pd));
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t ms, mw, mdst;
    CK(dnnl_memory_create(&ms, &smd, eng, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&mw, wq, eng, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&mdst, &dmd, eng, DNNL_MEMORY_ALLOCATE));
    void *p;
    dnnl_memory_get_data_handle(ms, &p);
    memset(p, 0x3f, (size_t)M * K * 2);
    dnnl_memory_get_data_handle(mw, &p);
    memset(p, 0x3f, dnnl_memory_desc_get_size(wq));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mdst}};
    dnnl_memory_desc_t sf, wf;
    CK(dnnl_memory_desc_init_by_tag(&sf, 2, sd, dnnl_f32, dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(&wf, 2, wd, dnnl_f32, dnnl_ab));
    dnnl_memory_t msf, mwf;
    CK(dnnl_memory_create(&msf, &sf, eng, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&mwf, &wf, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t r1pd, r2pd;
    CK(dnnl_reorder_primitive_desc_create(&r1pd, &sf, eng, &smd, eng, NULL));
    CK(dnnl_reorder_primitive_desc_create(&r2pd, &wf, eng, wq, eng, NULL));
    dnnl_primitive_t r1, r2;
    CK(dnnl_primitive_create(&r1, r1pd));
    CK(dnnl_primitive_create(&r2, r2pd));
    dnnl_exec_arg_t a1[2] = {{DNNL_ARG_FROM, msf}, {DNNL_ARG_TO, ms}},
                    a2[2] = {{DNNL_ARG_FROM, mwf}, {DNNL_ARG_TO, mw}};
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        if (with_reorders) {
            CK(dnnl_primitive_execute(r1, st, 2, a1));
            CK(dnnl_primitive_execute(r2, st, 2, a2));
        }
        CK(dnnl_primitive_execute(prim, st, 3, args));
        CK(dnnl_stream_wait(st));
        double t = now() - t0;
        if (r && t < best) best = t;
    }
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mdst);
    return 2.0 * M * N * K / best / 1e9;
}
static double bench_sd(int M, int N, int K) {
    float *A = malloc(4L * M * K), *B = malloc(4L * K * N), *C = malloc(4L * M * N);
    for (long i = 0; i < (long)M * K; i++) A[i] = (i % 7) * 0.1f;
    for (long i = 0; i < (long)K * N; i++) B[i] = (i % 5) * 0.1f;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        gemm_1t(GEMM_BF16, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        double t = now() - t0;
        if (r && t < best) best = t;
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * M * N * K / best / 1e9;
}
int main() {
    dnnl_engine_t eng;
    CK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    dnnl_stream_t st;
    CK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    int shapes[][3] = {{320, 512, 320},   {320, 128, 640},   {2048, 320, 320},  {2048, 2560, 320},
                       {2048, 320, 1280}, {320, 512, 11520}, {320, 2048, 2880}, {1280, 128, 11520}};
    printf("shape M x N x K       oneDNN bf16 in  oneDNN from f32 (reorders)  sd from f32   GFLOP/s, 1 thread\n");
    for (unsigned i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        printf("%5d x %5d x %5d     %8.1f     %8.1f        %8.1f\n", M, N, K, bench_dnnl(eng, st, M, N, K, 1, 0),
               bench_dnnl(eng, st, M, N, K, 1, 1), bench_sd(M, N, K));
    }
}
