/* attention.c - scaled dot-product attention (Vaswani et al. 2017), see kernels.h.
 * Short heads without a mask use a fused kernel (FlashAttention-style online softmax, Dao et al.
 * 2022); the rest goes through OpenBLAS with bounded score blocks. */
#include "nn/kernels.h"
#include "nn/gemm.h"
#include "nn/weight.h"
#include "nn/vecmath.h"

#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#define ATTN_SCORE_FLOATS ((size_t)1 << 19) /* score block per thread: 2 MB */

/* The fused kernel's tiles (below). */
#define FA_LANES  16 /* query rows per block (one vector) and keys per tile */
#define FA_BLOCKS 2  /* blocks per task */
#define FA_KEYS   8  /* keys of a tile scored at a time (FA_BLOCKS x FA_KEYS accumulators) */
#define FA_DCHUNK 8  /* output dimensions accumulated in registers at a time */

/* Query rows the fused kernel packs: n rounded up to whole tasks (FA_BLOCKS x 16 rows). */
static size_t fa_padded_rows(int n) {
    const size_t task_rows = FA_BLOCKS * FA_LANES;
    return ((size_t)n + task_rows - 1) / task_rows * task_rows;
}

static int attention_block_rows(int n, int m) {
    size_t r = ATTN_SCORE_FLOATS / (size_t)m;
    if (r < 1) r = 1;
    return r < (size_t)n ? (int)r : n;
}

size_t attention_work_size(compute *cc, int n, int m, int heads, int dh) {
    size_t blas = (size_t)cc->threads * attention_block_rows(n, m) * (m + 1);
    size_t fused = (size_t)heads * (fa_padded_rows(n) + 2 * (size_t)m) * dh; /* Qᵀ blocks, packed keys and values */
    return blas > fused ? blas : fused;
}

/* ---- fused attention for short heads (FlashAttention-style online softmax, Dao et al. 2022) ----
 * A block is 16 query rows of one head, held as one vector per head dimension (Qᵀ, pre-scaled).
 * Keys come in tiles of 16: Sᵀ[j] (16 rows) = Σ_d K[j, d] · Qᵀ[d], the running max and sum are
 * updated for all 16 rows at once, and Oᵀ[d] += Σ_j V[j, d] · Pᵀ[j]. Scores never leave registers;
 * Qᵀ, the keys and the values are packed once per call. A task takes FA_BLOCKS blocks of the same
 * head through the keys together: every key and value loaded serves each of them (loads, not
 * multiply-adds, were the limit with one block), and each block's arithmetic is that of a block alone. */
/* The online softmax for one tile of one block: S[16 keys] scores in, P[16 keys] = exp(S - new max) out
 * (may alias S); returns the factor exp(old max - new max) that rescales the block's earlier outputs. */
static inline v16 fa_tile_softmax(const v16 S[FA_LANES], v16 *run_max, v16 *run_sum, v16 P[FA_LANES]) {
    v16 tile_max = S[0];
    for (int j = 1; j < FA_LANES; j++) tile_max = v16_max(tile_max, S[j]);
    v16 new_max = v16_max(*run_max, tile_max), corr = v16_exp_nonpos(*run_max - new_max), tile_sum = v16_splat(0.0f);
    for (int j = 0; j < FA_LANES; j++) {
        P[j] = v16_exp_nonpos(S[j] - new_max);
        tile_sum += P[j];
    }
    *run_sum = *run_sum * corr + tile_sum;
    *run_max = new_max;
    return corr;
}

/* out[r, 0:dh] = Oᵀ[d][r] / sum[r] for the block's first `rows` rows. Shared with the bf16 kernel, so its
 * vectors come by pointer (see exp16_inplace). */
static void fa_store(const v16 *OT, const v16 *run_sum, int dh, int rows, float *out, int ldo) {
    float inv[FA_LANES], od[FA_LANES];
    v16 inv_v = 1.0f / *run_sum;
    memcpy(inv, &inv_v, sizeof inv);
    for (int d = 0; d < dh; d++) {
        memcpy(od, &OT[d], sizeof od);
        for (int r = 0; r < rows; r++) out[(size_t)r * ldo + d] = od[r] * inv[r];
    }
}

/* Rows r0.. (FA_BLOCKS x 16, `rows` of them real) of one head: out[r, 0:dh] = softmax(Q[r]·Kᵀ/√dh) · V, with
 * QT[FA_BLOCKS][dh, 16] pre-scaled, the head's keys packed by tile, KP[m/16, dh, 16], and its values VP[m, dh]. */
static void fa_task(const float *QT, const float *KP, const float *VP, int m, int dh, int rows, float *out, int ldo) {
    v16 OT[FA_BLOCKS][64];      /* [block][dh] output accumulators, one vector of 16 rows each */
    v16 S[FA_BLOCKS][FA_LANES]; /* [block][16 keys] the tile's scores, then its probabilities */
    v16 run_max[FA_BLOCKS], run_sum[FA_BLOCKS], corr[FA_BLOCKS];
    for (int b = 0; b < FA_BLOCKS; b++) {
        run_max[b] = v16_splat(-INFINITY), run_sum[b] = v16_splat(0.0f);
        for (int d = 0; d < dh; d++) OT[b][d] = v16_splat(0.0f);
    }
    for (int j0 = 0; j0 < m; j0 += FA_LANES) {
        const float *kp = KP + (size_t)j0 * dh;          /* [dh, 16] */
        for (int k0 = 0; k0 < FA_LANES; k0 += FA_KEYS) { /* Sᵀ[j] = Σ_d K[j, d] · Qᵀ[d] */
            v16 s[FA_BLOCKS][FA_KEYS];
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int j = 0; j < FA_KEYS; j++) s[b][j] = v16_splat(0.0f);
            for (int d = 0; d < dh; d++) {
                v16 q[FA_BLOCKS];
                for (int b = 0; b < FA_BLOCKS; b++) q[b] = v16_load(QT + ((size_t)b * dh + d) * FA_LANES);
                for (int j = 0; j < FA_KEYS; j++) {
                    v16 k = v16_splat(kp[d * FA_LANES + k0 + j]);
                    for (int b = 0; b < FA_BLOCKS; b++) s[b][j] += k * q[b];
                }
            }
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int j = 0; j < FA_KEYS; j++) S[b][k0 + j] = s[b][j];
        }
        for (int b = 0; b < FA_BLOCKS; b++) corr[b] = fa_tile_softmax(S[b], &run_max[b], &run_sum[b], S[b]);
        for (int d0 = 0; d0 < dh; d0 += FA_DCHUNK) { /* Oᵀ[d] = Oᵀ[d]·corr + Σ_j V[j0 + j, d] · Pᵀ[j] */
            v16 acc[FA_BLOCKS][FA_DCHUNK];
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int i = 0; i < FA_DCHUNK; i++) acc[b][i] = OT[b][d0 + i] * corr[b];
            for (int j = 0; j < FA_LANES; j++) {
                const float *vj = VP + (size_t)(j0 + j) * dh + d0;
                v16 p[FA_BLOCKS];
                for (int b = 0; b < FA_BLOCKS; b++) p[b] = S[b][j];
                for (int i = 0; i < FA_DCHUNK; i++) {
                    v16 v = v16_splat(vj[i]);
                    for (int b = 0; b < FA_BLOCKS; b++) acc[b][i] += v * p[b];
                }
            }
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int i = 0; i < FA_DCHUNK; i++) OT[b][d0 + i] = acc[b][i];
        }
    }
    for (int b = 0; b < FA_BLOCKS && b * FA_LANES < rows; b++)
        fa_store(OT[b], &run_sum[b], dh, rows - b * FA_LANES < FA_LANES ? rows - b * FA_LANES : FA_LANES,
                 out + (size_t)b * FA_LANES * ldo, ldo);
}

static int fa_usable(int m, int dh, int causal) {
    return !causal && dh <= 64 && dh % FA_DCHUNK == 0 && m % FA_LANES == 0;
}

/* QT[h][block][dh, 16] (scaled, zero rows past n), KP[h][tile][dh, 16] and VP[h][m, dh], then one task per
 * (head, FA_BLOCKS blocks). */
static void fa_attention(compute *cc, const float *Q, int ldq, const float *K, int ldk, const float *V, int ldv, int n,
                         int m, int heads, int dh, float *out, float *work) {
    const int tasks = (n + FA_BLOCKS * FA_LANES - 1) / (FA_BLOCKS * FA_LANES),
              blocks = FA_BLOCKS * tasks; /* per head */
    const int ldo = heads * dh;
    const float scale = 1.0f / sqrtf((float)dh);
    float *QT = work,
          *KP = work + (size_t)heads * blocks * dh * FA_LANES; /* [heads, blocks, dh, 16], [heads, m/16, dh, 16] */
    float *VP = KP + (size_t)heads * m * dh;                   /* [heads, m, dh] */
#pragma omp parallel for schedule(static) num_threads(cc->threads)
    for (int hb = 0; hb < heads * blocks; hb++) { /* (head, block) */
        const int h = hb / blocks, r0 = hb % blocks * FA_LANES;
        float *qt = QT + (size_t)hb * dh * FA_LANES;
        for (int d = 0; d < dh; d++)
            for (int r = 0; r < FA_LANES; r++)
                qt[d * FA_LANES + r] = r0 + r < n ? Q[(size_t)(r0 + r) * ldq + h * dh + d] * scale : 0.0f;
    }
#pragma omp parallel for schedule(static) num_threads(cc->threads)
    for (int ht = 0; ht < heads * (m / FA_LANES); ht++) { /* (head, key tile) */
        const int h = ht / (m / FA_LANES), j0 = ht % (m / FA_LANES) * FA_LANES;
        float *kp = KP + (size_t)ht * dh * FA_LANES;
        for (int d = 0; d < dh; d++)
            for (int j = 0; j < FA_LANES; j++) kp[d * FA_LANES + j] = K[(size_t)(j0 + j) * ldk + h * dh + d];
        for (int j = 0; j < FA_LANES; j++)
            memcpy(VP + ((size_t)h * m + j0 + j) * dh, V + (size_t)(j0 + j) * ldv + h * dh, (size_t)dh * sizeof(float));
    }
#pragma omp parallel for schedule(dynamic, 2) num_threads(cc->threads)
    for (int task = 0; task < heads * tasks; task++) {
        if (compute_poll(cc)) continue; /* stopping: the rest is skipped */
        const int h = task / tasks, b0 = task % tasks * FA_BLOCKS, r0 = b0 * FA_LANES;
        const int rows = n - r0 < FA_BLOCKS * FA_LANES ? n - r0 : FA_BLOCKS * FA_LANES;
        fa_task(QT + ((size_t)h * blocks + b0) * dh * FA_LANES, KP + (size_t)h * m * dh, VP + (size_t)h * m * dh, m, dh,
                rows, out + (size_t)r0 * ldo + h * dh, ldo);
    }
}

/* ---- the same fused kernel in bfloat16 (gemm.h's precision): scores and P·V by VDPBF16PS ----
 * Q (pre-scaled), K, V and P are rounded to bf16, two values per 32-bit word along the summed dimension:
 * Sᵀ[j] += bcast(K[j, d:d+2]) · Qᵀ[d:d+2] over head-dimension pairs, Oᵀ[d] += bcast(V[j:j+2, d]) · Pᵀ[j:j+2]
 * over key pairs. Maxima, exponentials and sums stay float32. */
#if GEMM_HAVE_BF16
#include <immintrin.h>

/* Word j of the result = (bf16(lo[j]), bf16(hi[j])). */
GEMM_BF16_TARGET static inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                                6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* x[16] = exp(x[16]) for x <= 0, by vecmath's v16_exp_nonpos. Through memory, not by value: the kernel below is
 * compiled for AVX-512 whatever the build's target, and a 64-byte vector passed by value between the two would change
 * the ABI (clang refuses it). Inlined in the usual -march=native build. */
static inline void exp16_inplace(float x[16]) {
    v16 v = v16_exp_nonpos(v16_load(x)); /* every input is a difference from a running maximum */
    memcpy(x, &v, sizeof v);
}

/* exp of 16 lanes, for the AVX-512 kernel. */
GEMM_BF16_TARGET static inline __m512 exp16(__m512 x) {
    float lanes[16];
    _mm512_storeu_ps(lanes, x);
    exp16_inplace(lanes);
    return _mm512_loadu_ps(lanes);
}

/* One 32-bit word of two bf16 values: lo in the low half. */
static inline uint32_t bf16_pair(float lo, float hi) { return float_to_bf16(lo) | (uint32_t)float_to_bf16(hi) << 16; }

/* The online softmax of one tile of one block, as fa_tile_softmax: S[16 keys] in, the probabilities of key
 * pairs (j, j + 1) out as bf16 pairs PP[8], and the rescaling factor returned. Its own copy, not fa_tile_softmax
 * through pointers then a conversion to pairs: that measured 0.050 -> 0.058 s on the 4096x4096, 8-head case. */
GEMM_BF16_TARGET static inline __m512 fa_tile_softmax_bf16(const __m512 S[FA_LANES], __m512 *run_max, __m512 *run_sum,
                                                           __m512i PP[FA_LANES / 2]) {
    __m512 tile_max = S[0];
    for (int j = 1; j < FA_LANES; j++) tile_max = _mm512_max_ps(tile_max, S[j]);
    __m512 new_max = _mm512_max_ps(*run_max, tile_max);
    __m512 corr = exp16(_mm512_sub_ps(*run_max, new_max)), tile_sum = _mm512_setzero_ps();
    for (int j = 0; j < FA_LANES; j += 2) {
        __m512 p0 = exp16(_mm512_sub_ps(S[j], new_max));
        __m512 p1 = exp16(_mm512_sub_ps(S[j + 1], new_max));
        tile_sum = _mm512_add_ps(tile_sum, _mm512_add_ps(p0, p1));
        PP[j / 2] = bf16_pairs(p0, p1);
    }
    *run_sum = _mm512_fmadd_ps(*run_sum, corr, tile_sum);
    *run_max = new_max;
    return corr;
}

/* Rows r0.. (FA_BLOCKS x 16, `rows` real) of one head, as fa_task: QT[FA_BLOCKS][dh/2][16] pairs of scaled Q,
 * KB[m][dh/2] pairs of K, VP[m/2][dh] pairs (V[j, d], V[j + 1, d]). */
GEMM_BF16_TARGET static void fa_task_bf16(const uint32_t *QT, const uint32_t *KB, const uint32_t *VP, int m, int dh,
                                          int rows, float *out, int ldo) {
    __m512 OT[FA_BLOCKS][64];            /* [block][dh] output accumulators */
    __m512 S[FA_BLOCKS][FA_LANES];       /* [block][16 keys] the tile's scores */
    __m512i PP[FA_BLOCKS][FA_LANES / 2]; /* [block][8 key pairs] its probabilities */
    __m512 run_max[FA_BLOCKS], run_sum[FA_BLOCKS], corr[FA_BLOCKS];
    const int dp = dh / 2;
    for (int b = 0; b < FA_BLOCKS; b++) {
        run_max[b] = _mm512_set1_ps(-INFINITY), run_sum[b] = _mm512_setzero_ps();
        for (int d = 0; d < dh; d++) OT[b][d] = _mm512_setzero_ps();
    }
    for (int j0 = 0; j0 < m; j0 += FA_LANES) {
        const uint32_t *kb = KB + (size_t)j0 * dp;
        for (int k0 = 0; k0 < FA_LANES; k0 += FA_KEYS) {
            __m512 s[FA_BLOCKS][FA_KEYS];
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int j = 0; j < FA_KEYS; j++) s[b][j] = _mm512_setzero_ps();
            for (int p = 0; p < dp; p++) {
                __m512bh q[FA_BLOCKS];
                for (int b = 0; b < FA_BLOCKS; b++)
                    q[b] = (__m512bh)_mm512_loadu_si512(QT + ((size_t)b * dp + p) * FA_LANES);
                for (int j = 0; j < FA_KEYS; j++) {
                    __m512bh k = (__m512bh)_mm512_set1_epi32((int)kb[(size_t)(k0 + j) * dp + p]);
                    for (int b = 0; b < FA_BLOCKS; b++) s[b][j] = _mm512_dpbf16_ps(s[b][j], k, q[b]);
                }
            }
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int j = 0; j < FA_KEYS; j++) S[b][k0 + j] = s[b][j];
        }
        for (int b = 0; b < FA_BLOCKS; b++) corr[b] = fa_tile_softmax_bf16(S[b], &run_max[b], &run_sum[b], PP[b]);
        const uint32_t *vp = VP + (size_t)(j0 / 2) * dh;
        for (int d0 = 0; d0 < dh; d0 += FA_DCHUNK) {
            __m512 acc[FA_BLOCKS][FA_DCHUNK];
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int i = 0; i < FA_DCHUNK; i++) acc[b][i] = _mm512_mul_ps(OT[b][d0 + i], corr[b]);
            for (int jp = 0; jp < FA_LANES / 2; jp++)
                for (int i = 0; i < FA_DCHUNK; i++) {
                    __m512bh v = (__m512bh)_mm512_set1_epi32((int)vp[(size_t)jp * dh + d0 + i]);
                    for (int b = 0; b < FA_BLOCKS; b++) acc[b][i] = _mm512_dpbf16_ps(acc[b][i], v, (__m512bh)PP[b][jp]);
                }
            for (int b = 0; b < FA_BLOCKS; b++)
                for (int i = 0; i < FA_DCHUNK; i++) OT[b][d0 + i] = acc[b][i];
        }
    }
    for (int b = 0; b < FA_BLOCKS && b * FA_LANES < rows; b++)
        fa_store((const v16 *)OT[b], (const v16 *)&run_sum[b], dh,
                 rows - b * FA_LANES < FA_LANES ? rows - b * FA_LANES : FA_LANES, out + (size_t)b * FA_LANES * ldo,
                 ldo);
}

/* fa_attention in bfloat16: QT[h][block][dh/2, 16], KB[h][m, dh/2], VP[h][m/2, dh] packed once, then one task per
 * (head, FA_BLOCKS blocks). */
static void fa_attention_bf16(compute *cc, const float *Q, int ldq, const float *K, int ldk, const float *V, int ldv,
                              int n, int m, int heads, int dh, float *out, float *work) {
    const int tasks = (n + FA_BLOCKS * FA_LANES - 1) / (FA_BLOCKS * FA_LANES),
              blocks = FA_BLOCKS * tasks; /* per head */
    const int ldo = heads * dh, dp = dh / 2;
    const float scale = 1.0f / sqrtf((float)dh);
    uint32_t *QT = (uint32_t *)work;                            /* [heads, blocks, dh/2, 16] */
    uint32_t *KB = QT + (size_t)heads * blocks * dp * FA_LANES; /* [heads, m, dh/2] */
    uint32_t *VP = KB + (size_t)heads * m * dp;                 /* [heads, m/2, dh] */
#pragma omp parallel for schedule(static) num_threads(cc->threads)
    for (int hb = 0; hb < heads * blocks; hb++) { /* (head, block) */
        const int h = hb / blocks, r0 = hb % blocks * FA_LANES;
        uint32_t *qt = QT + (size_t)hb * dp * FA_LANES;
        for (int p = 0; p < dp; p++)
            for (int r = 0; r < FA_LANES; r++) {
                const float *q = Q + (size_t)(r0 + r) * ldq + h * dh + 2 * p;
                qt[p * FA_LANES + r] = r0 + r < n ? bf16_pair(q[0] * scale, q[1] * scale) : 0;
            }
    }
#pragma omp parallel for schedule(static) num_threads(cc->threads)
    for (int hk = 0; hk < heads * (m / 2); hk++) { /* (head, key pair) */
        const int h = hk / (m / 2), j = hk % (m / 2) * 2;
        uint32_t *kb = KB + ((size_t)h * m + j) * dp, *vp = VP + ((size_t)h * (m / 2) + j / 2) * dh;
        for (int r = 0; r < 2; r++)
            for (int p = 0; p < dp; p++) {
                const float *k = K + (size_t)(j + r) * ldk + h * dh + 2 * p;
                kb[(size_t)r * dp + p] = bf16_pair(k[0], k[1]);
            }
        const float *v0 = V + (size_t)j * ldv + h * dh, *v1 = v0 + ldv;
        for (int d = 0; d < dh; d++) vp[d] = bf16_pair(v0[d], v1[d]);
    }
#pragma omp parallel for schedule(dynamic, 2) num_threads(cc->threads)
    for (int task = 0; task < heads * tasks; task++) {
        if (compute_poll(cc)) continue; /* stopping: the rest is skipped */
        const int h = task / tasks, b0 = task % tasks * FA_BLOCKS, r0 = b0 * FA_LANES;
        const int rows = n - r0 < FA_BLOCKS * FA_LANES ? n - r0 : FA_BLOCKS * FA_LANES;
        fa_task_bf16(QT + ((size_t)h * blocks + b0) * dp * FA_LANES, KB + (size_t)h * m * dp,
                     VP + (size_t)h * (m / 2) * dh, m, dh, rows, out + (size_t)r0 * ldo + h * dh, ldo);
    }
}
#endif

/* The fused kernel when it applies; otherwise each thread takes (head, query block) tasks with its
 * own score buffer and single-threaded GEMMs. There the softmax is left unnormalised
 * (P = exp(S - max)) and each output row is divided by its row sum after P·V: one pass less over P. */
void attention(compute *cc, const float *Q, int ldq, const float *K, int ldk, const float *V, int ldv, int n, int m,
               int heads, int dh, int causal, float *out, float *work) {
    if (compute_poll(cc)) return;
    if (fa_usable(m, dh, causal)) {
        compute_count(cc, 4.0 * n * m * dh * heads); /* S = Q·Kᵀ and P·V */
#if GEMM_HAVE_BF16
        if (cc->bf16) { /* set only on CPUs with AVX512-BF16 */
            fa_attention_bf16(cc, Q, ldq, K, ldk, V, ldv, n, m, heads, dh, out, work);
            return;
        }
#endif
        fa_attention(cc, Q, ldq, K, ldk, V, ldv, n, m, heads, dh, out, work);
        return;
    }
    const float scale = 1.0f / sqrtf((float)dh);
    const int R = attention_block_rows(n, m), blocks = (n + R - 1) / R, ldo = heads * dh;
    const gemm_precision prec = cc->bf16 ? GEMM_BF16 : GEMM_F32;
    compute_count(cc, 4.0 * n * m * dh * heads); /* S = Q·Kᵀ and P·V */
#pragma omp parallel for schedule(dynamic, 1) num_threads(cc->threads) if (heads * blocks > 1)
    for (int task = 0; task < heads * blocks; task++) {
        if (compute_poll(cc)) continue;
        const int h = task / blocks, r0 = (task % blocks) * R, rows = r0 + R <= n ? R : n - r0;
        float *S = work + (size_t)thread_index() * R * (m + 1); /* [rows, m] scores */
        float *inv_sum = S + (size_t)R * m;                     /* [rows] */
        gemm_1t(prec, 1, rows, m, dh, scale, Q + (size_t)r0 * ldq + h * dh, ldq, K + h * dh, ldk, 0.0f, S, m);
        if (causal)
            for (int i = 0; i < rows; i++)
                for (int j = r0 + i + 1; j < m; j++) S[(size_t)i * m + j] = -INFINITY;
        for (int i = 0; i < rows; i++) {
            float *Si = S + (size_t)i * m;
            inv_sum[i] = 1.0f / exp_row_sum(Si, m, row_max(Si, m));
        }
        float *O = out + (size_t)r0 * ldo + h * dh; /* [rows, dh] with row stride ldo */
        gemm_1t(prec, 0, rows, dh, m, 1.0f, S, m, V + h * dh, ldv, 0.0f, O, ldo);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < dh; j++) O[(size_t)i * ldo + j] *= inv_sum[i];
    }
}
