/* gemm.c - see gemm.h.
 *
 * The bfloat16 product is a packed GEMM in the usual layout (Goto & van de Geijn 2008, "Anatomy of
 * high-performance matrix multiplication") around VDPBF16PS, whose 32-bit lanes hold two bf16 values
 * along k: acc[i] += a[2i]·b[2i] + a[2i+1]·b[2i+1] (products exact, float32 sums, round to nearest even).
 *     Ab[m][k/2]           A rounded to bf16, row-major: word (A[m, k], A[m, k+1]) (once per call, or given)
 *     Bp[panel][k/2][64]   one KC x NC block of B: word (B[k, n], B[k+1, n]) for 64 columns n
 * The micro-kernel keeps a 6 x 64 tile of C in 24 vector registers; per k pair it loads 4 vectors of Bp
 * and broadcasts one word of each of 6 rows of Ab. K is cut into equal blocks of at most KC_MAX (a 64-column
 * Bp panel of up to 48 KB stays near the core while MC rows sweep it); N into blocks of NC columns (the block stays in
 * L2). Partial panels are zero-padded; rows past M repeat a valid row and are not stored; stores are masked.
 */
#include "nn/gemm.h"

#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if GEMM_HAVE_BF16
#include <immintrin.h>
#endif

int gemm_bf16_supported(void) {
#if GEMM_HAVE_BF16
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

#if GEMM_HAVE_BF16

#define MR     6         /* rows of the C tile */
#define NV     4         /* vectors of 16 columns in the C tile */
#define NR     (16 * NV) /* columns of the C tile */
#define KC_MAX 384 /* k per block at most: a 64-column Bp panel is KC_MAX/2 x 64 x 4 bytes = 48 KB (an L1 on Zen 5) */
#define NC     512 /* columns per packed B block (multiple of NR) */
#define MC     192 /* rows swept per B panel before moving to the next (multiple of MR) */

/* The first n of 16 lanes. */
static inline __mmask16 first_lanes(int n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* dst[r][p] = pair (src[r, 2p], src[r, 2p + 1]) for r < rows, p < (K + 1) / 2 (zero past K): bf16 rows
 * of src[rows, ld], two values per 32-bit word. */
GEMM_BF16_TARGET static void rows_to_bf16_pairs(const float *src, int ld, int rows, int K, uint32_t *dst) {
    const int kp = (K + 1) / 2;
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * ld;
        uint32_t *d = dst + (size_t)r * kp;
        for (int k = 0; k < K; k += 32) {
            __m512 lo = _mm512_maskz_loadu_ps(first_lanes(K - k), s + k);
            __m512 hi = _mm512_maskz_loadu_ps(first_lanes(K - k - 16), s + k + 16);
            _mm512_mask_storeu_epi32(d + k / 2, first_lanes(kp - k / 2), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

/* dst[p·stride + r] = pair (src[r, k0 + 2p], src[r, k0 + 2p + 1]) for r < rows, p < kc/2 rounded up
 * (zero past kc), and zero rows for rows <= r < rows_padded. src rows are ld apart. */
GEMM_BF16_TARGET static void pack_row_pairs(const float *src, int ld, int rows, int rows_padded, int k0, int kc,
                                            uint32_t *dst, int stride) {
    const int kp = (kc + 1) / 2;
    const __m512i lane_offsets = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(stride));
    for (int r = 0; r < rows_padded; r++) {
        if (r >= rows) {
            for (int p = 0; p < kp; p++) dst[(size_t)p * stride + r] = 0;
            continue;
        }
        const float *s = src + (size_t)r * ld + k0;
        for (int k = 0; k < kc; k += 32) {
            __m512 lo = _mm512_maskz_loadu_ps(first_lanes(kc - k), s + k);
            __m512 hi = _mm512_maskz_loadu_ps(first_lanes(kc - k - 16), s + k + 16);
            __m512i pairs = (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* bf16 of s[k .. k + 31], in order */
            _mm512_mask_i32scatter_epi32(dst + (size_t)(k / 2) * stride + r, first_lanes(kp - k / 2), lane_offsets,
                                         pairs, 4);
        }
    }
}

/* Bp[p][j] = pair (B[k0 + 2p, j], B[k0 + 2p + 1, j]) for the columns [0, cols) of B[K, ld] (zero past cols,
 * cols <= NR, and past K): one panel. */
GEMM_BF16_TARGET static void pack_col_pairs(const float *B, int ld, int K, int k0, int kc, int cols, uint32_t *Bp) {
    const int kp = (kc + 1) / 2;
    /* word j of the result takes halves j and 16 + j of [bf16(r0[0..15]), bf16(r1[0..15])] */
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                                6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int p = 0; p < kp; p++) {
        const int k = k0 + 2 * p;
        const float *r0 = B + (size_t)k * ld, *r1 = r0 + ld;
        uint32_t *d = Bp + (size_t)p * NR;
        for (int v = 0; v < NV; v++) {
            const int n = 16 * v;
            const __mmask16 m = first_lanes(cols - n), m1 = k + 1 < K ? m : 0;
            __m512i both =
                (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, r1 + n), _mm512_maskz_loadu_ps(m, r0 + n));
            _mm512_store_si512(d + 16 * v, _mm512_permutexvar_epi16(interleave, both)); /* r0[j], r1[j] pairs */
        }
    }
}

/* C[rows, cols] = alpha·(a·b) + beta·C for one tile (rows <= MR, cols <= NR): a = MR rows of bf16 pairs
 * [kp] (rows past `rows` repeat a valid one), b = Bp panel [kp][NR]. */
GEMM_BF16_TARGET static void micro_kernel(int kp, const uint32_t *const a[MR], const uint32_t *b, float *C, int ldc,
                                          int rows, int cols, float alpha, float beta) {
    __m512 acc[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int i = 0; i < rows; i++) /* C's tile is read at the end: start fetching it now */
        for (int v = 0; v < NV && 16 * v < cols; v++)
            _mm_prefetch((const char *)(C + (size_t)i * ldc + 16 * v), _MM_HINT_T0);
    const uint32_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    for (int p = 0; p < kp; p++, b += NR) {
        __m512bh bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = (__m512bh)_mm512_load_si512(b + 16 * v);
        const uint32_t ap[MR] = {a0[p], a1[p], a2[p], a3[p], a4[p], a5[p]};
        for (int i = 0; i < MR; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ap[i]);
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, bv[v]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int i = 0; i < rows; i++)
        for (int v = 0; v < NV; v++) {
            const __mmask16 m = first_lanes(cols - 16 * v);
            if (!m) break;
            float *c = C + (size_t)i * ldc + 16 * v;
            __m512 r = _mm512_mul_ps(acc[i][v], va);
            if (beta != 0.0f) r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, c), vb, r);
            _mm512_mask_storeu_ps(c, m, r);
        }
}

/* K is cut into equal even blocks of at most KC_MAX: the block length (2 for K <= 0, which has no blocks). */
static int k_block(int K) {
    if (K <= 0) return 2;
    const int k_blocks = (K + KC_MAX - 1) / KC_MAX;
    return ((K + k_blocks - 1) / k_blocks + 1) / 2 * 2;
}

/* Packed op(B) whole (gemm_bf16_pack_b): NC x KC blocks, n block j and k block l at index j · k_blocks + l, each
 * NC · KC/2 words (panels [kp][NR], the last ones of a narrow block unused). */
static int b_k_blocks(int K) { return (K + k_block(K) - 1) / k_block(K); }
static int b_blocks(int N, int K) { return (N + NC - 1) / NC * b_k_blocks(K); }
static size_t b_block_offset(int K, int block) { return (size_t)block * NC * (k_block(K) / 2); }

/* Panel q of the NC x KC block of op(B) at columns n0 and depth k0 (nc columns, kc deep): Bp[kp][NR]. */
GEMM_BF16_TARGET static void pack_b_panel(int trans_b, const float *B, int ldb, int K, int n0, int nc, int k0, int kc,
                                          int q, uint32_t *Bp) {
    const int cols = nc - q * NR < NR ? nc - q * NR : NR;
    if (trans_b)
        pack_row_pairs(B + (size_t)(n0 + q * NR) * ldb, ldb, cols, NR, k0, kc, Bp, NR);
    else
        pack_col_pairs(B + n0 + q * NR, ldb, K, k0, kc, cols, Bp);
}

/* C[M, n0 .. n0 + nc) = alpha·(A·Bblock) + beta·C over the k block at k0 (kc deep): A as bf16 rows Ab[M][k_pairs],
 * the block packed as panels Bp[panels][kp][NR]. */
GEMM_BF16_TARGET static void multiply_block(int M, int nc, int k_pairs, int k0, int kc, float alpha, const uint32_t *Ab,
                                            const uint32_t *Bp, float beta, float *C, int ldc) {
    const int kp = (kc + 1) / 2, panels = (nc + NR - 1) / NR;
    for (int m0 = 0; m0 < M; m0 += MC)
        for (int q = 0; q < panels; q++)
            for (int i = m0; i < M && i < m0 + MC; i += MR) {
                const int rows = M - i < MR ? M - i : MR;
                const uint32_t *a[MR];
                for (int r = 0; r < MR; r++) a[r] = Ab + (size_t)(i + (r < rows ? r : 0)) * k_pairs + k0 / 2;
                micro_kernel(kp, a, Bp + (size_t)q * kp * NR, C + (size_t)i * ldc + q * NR, ldc, rows,
                             nc - q * NR < NR ? nc - q * NR : NR, alpha, beta);
            }
}

/* C = alpha·A·op(B) + beta·C with A given as bf16 rows Ab[M][(K + 1) / 2] (rows_to_bf16_pairs), and op(B) either
 * packed block by block here (Bpacked NULL) or given whole (gemm_bf16_pack_b). */
GEMM_BF16_TARGET static int gemm_bf16(int trans_b, int M, int N, int K, float alpha, const uint32_t *Ab, const float *B,
                                      int ldb, const uint32_t *Bpacked, float beta, float *C, int ldc) {
    const int k_pairs = (K + 1) / 2, KC = k_block(K), k_blocks = b_k_blocks(K);
    uint32_t *Bp = NULL; /* [NC/NR][kp][NR]: the current block, when not given */
    if (!Bpacked && !(Bp = aligned_alloc(64, (size_t)NC * (KC / 2) * 4))) return -1;
    for (int n0 = 0; n0 < N; n0 += NC) {
        const int nc = N - n0 < NC ? N - n0 : NC, panels = (nc + NR - 1) / NR;
        for (int k0 = 0; k0 < K; k0 += KC) {
            const int kc = K - k0 < KC ? K - k0 : KC, kp = (kc + 1) / 2;
            const uint32_t *block = Bp;
            if (Bpacked)
                block = Bpacked + b_block_offset(K, n0 / NC * k_blocks + k0 / KC);
            else
                for (int q = 0; q < panels; q++)
                    pack_b_panel(trans_b, B, ldb, K, n0, nc, k0, kc, q, Bp + (size_t)q * kp * NR);
            multiply_block(M, nc, k_pairs, k0, kc, alpha, Ab, block,
                           k0 == 0 ? beta : 1.0f /* later k blocks add to C */, C + n0, ldc);
        }
    }
    free(Bp);
    return 0;
}
#endif

size_t gemm_bf16_rows_bytes(int M, int K) { return (size_t)M * ((K + 1) / 2) * 4; }

void gemm_bf16_rows(const float *A, int lda, int M, int K, void *dst) {
#if GEMM_HAVE_BF16
    rows_to_bf16_pairs(A, lda, M, K, dst);
#else
    (void)A;
    (void)lda;
    (void)M;
    (void)K;
    (void)dst;
#endif
}

void gemm_1t_bf16a(int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const void *Ab,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#if GEMM_HAVE_BF16
    if (K > 0 && gemm_bf16(trans_b, M, N, K, alpha, Ab, B, ldb, NULL, beta, C, ldc) == 0) return;
#else
    (void)Ab;
#endif
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta,
                C, ldc);
}

int gemm_bf16_b_panels(int N, int K) {
#if GEMM_HAVE_BF16
    return b_blocks(N, K) * (NC / NR);
#else
    (void)N;
    (void)K;
    return 0;
#endif
}

size_t gemm_bf16_b_bytes(int N, int K) {
#if GEMM_HAVE_BF16
    return b_block_offset(K, b_blocks(N, K)) * 4;
#else
    (void)N;
    (void)K;
    return 0;
#endif
}

void gemm_bf16_pack_b(int trans_b, int N, int K, const float *B, int ldb, int panel, void *dst) {
#if GEMM_HAVE_BF16
    const int KC = k_block(K), k_blocks = b_k_blocks(K), per_block = NC / NR;
    const int block = panel / per_block, q = panel % per_block, j = block / k_blocks, l = block % k_blocks;
    const int n0 = j * NC, nc = N - n0 < NC ? N - n0 : NC, k0 = l * KC, kc = K - k0 < KC ? K - k0 : KC;
    if (q * NR >= nc) return; /* past the last block's columns */
    uint32_t *panel_dst = (uint32_t *)dst + b_block_offset(K, block) + (size_t)q * ((kc + 1) / 2) * NR;
    pack_b_panel(trans_b, B, ldb, K, n0, nc, k0, kc, q, panel_dst);
#else
    (void)trans_b;
    (void)N;
    (void)K;
    (void)B;
    (void)ldb;
    (void)panel;
    (void)dst;
#endif
}

void gemm_1t_bf16ab(int M, int N, int K, float alpha, const void *Ab, const void *Bp, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return; /* K > 0: kernels.c shares B only for large products */
#if GEMM_HAVE_BF16
    gemm_bf16(0, M, N, K, alpha, Ab, NULL, 0, Bp, beta, C, ldc);
#else
    (void)alpha;
    (void)Ab;
    (void)Bp;
    (void)beta;
    (void)C;
    (void)ldc;
#endif
}

void gemm_1t(gemm_precision prec, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#if GEMM_HAVE_BF16
    if (prec == GEMM_BF16 && K > 0 && gemm_bf16_supported()) {
        uint32_t *Ab = malloc(gemm_bf16_rows_bytes(M, K)); /* [M][K/2] */
        if (Ab) {
            rows_to_bf16_pairs(A, lda, M, K, Ab);
            int rc = gemm_bf16(trans_b, M, N, K, alpha, Ab, B, ldb, NULL, beta, C, ldc);
            free(Ab);
            if (rc == 0) return;
        }
    }
#else
    (void)prec;
#endif
    /* float32, and the fallback when the packing buffers cannot be had */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta,
                C, ldc);
}
