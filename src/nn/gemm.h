/* gemm.h - the one single-threaded matrix product under every network layer, in float32 (OpenBLAS)
 * or bfloat16 (bf16 inputs, float32 products and sums: an own AVX512-BF16 kernel, gemm.c).
 *
 * Callers split large products into panels and share them over the thread pool (kernels.c,
 * winograd.c, attention.c); the precision is read once per call of theirs, outside the
 * parallel region, and handed down.
 */
#ifndef SD_GEMM_H
#define SD_GEMM_H

#include <stddef.h>

typedef enum { GEMM_F32 = 0, GEMM_BF16 } gemm_precision;

/* Whether the AVX512-BF16 kernels are compiled in (x86-64, GCC or clang), and the attribute that compiles one
 * function for them whatever the build's target; they run only where gemm_bf16_supported(). */
#if defined(__x86_64__) && defined(__GNUC__)
#define GEMM_HAVE_BF16   1
#define GEMM_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))
#else
#define GEMM_HAVE_BF16 0
#endif

/* Whether this CPU has AVX512-BF16 (checked once, at run time); without it GEMM_BF16 computes in float32. */
int gemm_bf16_supported(void);

/* C[M, N] = alpha·A[M, K]·op(B) + beta·C, row-major, op(B) = B[K, N], or Bᵀ for B[N, K] when trans_b.
 * GEMM_BF16 rounds A and B to bfloat16 (nearest even) and sums their products in float32 (C, alpha, beta
 * stay float32). beta == 0 never reads C. One thread; the summation order depends only on the shape. */
void gemm_1t(gemm_precision prec, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);

/* A[M, K] in the bfloat16 form the kernel reads: rows of (K + 1) / 2 words, each two bf16 values (k even in
 * the low half, zero past K). For an A used by several products, converted once (by the caller's threads). */
size_t gemm_bf16_rows_bytes(int M, int K);
void gemm_bf16_rows(const float *A, int lda, int M, int K, void *dst);

/* gemm_1t(GEMM_BF16, ...) with A already converted: Ab = gemm_bf16_rows(A). A itself is read only when the
 * kernel's packing buffer cannot be had (then the product is float32). The CPU must have AVX512-BF16. */
void gemm_1t_bf16a(int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const void *Ab,
                   const float *B, int ldb, float beta, float *C, int ldc);

/* op(B) (as in gemm_1t, N columns, K deep) in the packed bfloat16 form the kernel reads, for a B shared by several
 * products (the row panels of one product): gemm_bf16_b_bytes of memory, filled by calling gemm_bf16_pack_b for
 * every panel < gemm_bf16_b_panels (in any order, on any threads). */
int gemm_bf16_b_panels(int N, int K);
size_t gemm_bf16_b_bytes(int N, int K);
void gemm_bf16_pack_b(int trans_b, int N, int K, const float *B, int ldb, int panel, void *dst);

/* gemm_1t(GEMM_BF16, ...) with both operands converted: Ab = gemm_bf16_rows(A), Bp = gemm_bf16_pack_b(B) for
 * this N and K (K > 0). Same sums as gemm_1t_bf16a. The CPU must have AVX512-BF16. */
void gemm_1t_bf16ab(int M, int N, int K, float alpha, const void *Ab, const void *Bp, float beta, float *C, int ldc);

#endif
