/* attention.c - scaled dot-product attention (Vaswani et al. 2017), see kernels.h.
 * Short heads without a mask use a fused kernel (FlashAttention-style online softmax, Dao et al.
 * 2022); the rest goes through OpenBLAS with bounded score blocks. */
#include "kernels.h"
#include "vecmath.h"

#include <cblas.h>
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

static int attention_block_rows(int n, int m) {
    size_t r = ATTN_SCORE_FLOATS / (size_t)m;
    if (r < 1) r = 1;
    return r < (size_t)n ? (int)r : n;
}

size_t attention_work_size(int n, int m, int heads, int dh) {
    size_t blas = (size_t)kernels_threads() * attention_block_rows(n, m) * (m + 1);
    size_t fused = (size_t)heads * ((n + 15) / 16 * 16 + m) * dh; /* Qᵀ blocks, packed keys */
    return blas > fused ? blas : fused;
}

/* ---- fused attention for short heads (FlashAttention-style online softmax, Dao et al. 2022) ----
 * A task is 16 query rows of one head, held as one vector per head dimension (Qᵀ, pre-scaled).
 * Keys come in tiles of 16: Sᵀ[j] (16 rows) = Σ_d K[j, d] · Qᵀ[d], the running max and sum are
 * updated for all 16 rows at once, and Oᵀ[d] += Σ_j V[j, d] · Pᵀ[j]. Scores never leave registers;
 * Qᵀ and the keys are packed once per call, V is read in place by broadcasts. */

#define FA_LANES 16 /* query rows per task (one vector) and keys per tile */
#define FA_DCHUNK 8 /* output dimensions accumulated in registers at a time */

/* Rows r0.. (16) of one head: out[r, 0:dh] = softmax(Q[r]·Kᵀ/√dh) · V, with QT[dh, 16] pre-scaled and
 * the head's keys packed by tile, KP[m/16, dh, 16]. */
static void fa_task(const float *QT, const float *KP, const float *V, int ldv, int m, int dh, int rows, float *out,
                    int ldo) {
    v16 OT[64];       /* [dh] output accumulators, one vector of 16 rows each */
    v16 PT[FA_LANES]; /* [16 keys] probabilities of this tile */
    v16 run_max = v16_splat(-INFINITY), run_sum = v16_splat(0.0f);
    for (int d = 0; d < dh; d++) OT[d] = v16_splat(0.0f);
    for (int j0 = 0; j0 < m; j0 += FA_LANES) {
        v16 S[FA_LANES]; /* Sᵀ[j] = scores of key j0 + j for the 16 rows */
        for (int j = 0; j < FA_LANES; j++) S[j] = v16_splat(0.0f);
        const float *kp = KP + (size_t)j0 * dh; /* [dh, 16] */
        for (int d = 0; d < dh; d++) {
            v16 q = v16_load(QT + (size_t)d * FA_LANES);
            for (int j = 0; j < FA_LANES; j++) S[j] += v16_splat(kp[d * FA_LANES + j]) * q;
        }
        v16 tile_max = S[0];
        for (int j = 1; j < FA_LANES; j++) tile_max = v16_max(tile_max, S[j]);
        v16 new_max = v16_max(run_max, tile_max), corr = v16_exp(run_max - new_max), tile_sum = v16_splat(0.0f);
        for (int j = 0; j < FA_LANES; j++) {
            PT[j] = v16_exp(S[j] - new_max);
            tile_sum += PT[j];
        }
        run_sum = run_sum * corr + tile_sum;
        run_max = new_max;
        for (int d0 = 0; d0 < dh; d0 += FA_DCHUNK) { /* Oᵀ[d] = Oᵀ[d]·corr + Σ_j V[j0 + j, d] · Pᵀ[j] */
            v16 acc[FA_DCHUNK];
            for (int i = 0; i < FA_DCHUNK; i++) acc[i] = OT[d0 + i] * corr;
            for (int j = 0; j < FA_LANES; j++) {
                const float *vj = V + (size_t)(j0 + j) * ldv + d0;
                for (int i = 0; i < FA_DCHUNK; i++) acc[i] += v16_splat(vj[i]) * PT[j];
            }
            for (int i = 0; i < FA_DCHUNK; i++) OT[d0 + i] = acc[i];
        }
    }
    float inv[FA_LANES], od[FA_LANES];
    v16 inv_v = 1.0f / run_sum;
    memcpy(inv, &inv_v, sizeof inv);
    for (int d = 0; d < dh; d++) {
        memcpy(od, &OT[d], sizeof od);
        for (int r = 0; r < rows; r++) out[(size_t)r * ldo + d] = od[r] * inv[r];
    }
}

static int fa_usable(int m, int dh, int causal) { return !causal && dh <= 64 && dh % FA_DCHUNK == 0 && m % FA_LANES == 0; }

/* QT[h][block][dh, 16] (scaled, zero rows past n) and KP[h][tile][dh, 16], then one task per
 * (head, 16-row block). */
static void fa_attention(const float *Q, int ldq, const float *K, int ldk, const float *V, int ldv, int n, int m,
                         int heads, int dh, float *out, float *work) {
    const int blocks = (n + FA_LANES - 1) / FA_LANES, ldo = heads * dh;
    const float scale = 1.0f / sqrtf((float)dh);
    float *QT = work, *KP = work + (size_t)heads * blocks * dh * FA_LANES; /* [heads, blocks, dh, 16], [heads, m/16, dh, 16] */
    #pragma omp parallel for schedule(static) num_threads(kernels_threads())
    for (int task = 0; task < heads * blocks; task++) {
        const int h = task / blocks, r0 = task % blocks * FA_LANES;
        float *qt = QT + (size_t)task * dh * FA_LANES;
        for (int d = 0; d < dh; d++)
            for (int r = 0; r < FA_LANES; r++)
                qt[d * FA_LANES + r] = r0 + r < n ? Q[(size_t)(r0 + r) * ldq + h * dh + d] * scale : 0.0f;
    }
    #pragma omp parallel for schedule(static) num_threads(kernels_threads())
    for (int task = 0; task < heads * (m / FA_LANES); task++) {
        const int h = task / (m / FA_LANES), j0 = task % (m / FA_LANES) * FA_LANES;
        float *kp = KP + (size_t)task * dh * FA_LANES;
        for (int d = 0; d < dh; d++)
            for (int j = 0; j < FA_LANES; j++) kp[d * FA_LANES + j] = K[(size_t)(j0 + j) * ldk + h * dh + d];
    }
    #pragma omp parallel for schedule(dynamic, 4) num_threads(kernels_threads())
    for (int task = 0; task < heads * blocks; task++) {
        const int h = task / blocks, r0 = task % blocks * FA_LANES, rows = n - r0 < FA_LANES ? n - r0 : FA_LANES;
        fa_task(QT + (size_t)task * dh * FA_LANES, KP + (size_t)h * m * dh, V + h * dh, ldv, m, dh, rows,
                out + (size_t)r0 * ldo + h * dh, ldo);
    }
}

/* The fused kernel when it applies; otherwise each thread takes (head, query block) tasks with its
 * own score buffer and single-threaded GEMMs. There the softmax is left unnormalised
 * (P = exp(S - max)) and each output row is divided by its row sum after P·V: one pass less over P. */
void attention(const float *Q, int ldq, const float *K, int ldk, const float *V, int ldv, int n, int m,
               int heads, int dh, int causal, float *out, float *work) {
    if (fa_usable(m, dh, causal)) {
        fa_attention(Q, ldq, K, ldk, V, ldv, n, m, heads, dh, out, work);
        return;
    }
    const float scale = 1.0f / sqrtf((float)dh);
    const int R = attention_block_rows(n, m), blocks = (n + R - 1) / R, ldo = heads * dh;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(kernels_threads()) if (heads * blocks > 1)
    for (int task = 0; task < heads * blocks; task++) {
        const int h = task / blocks, r0 = (task % blocks) * R, rows = r0 + R <= n ? R : n - r0;
        float *S = work + (size_t)thread_index() * R * (m + 1); /* [rows, m] scores */
        float *inv_sum = S + (size_t)R * m;                         /* [rows] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, m, dh, scale, Q + (size_t)r0 * ldq + h * dh, ldq,
                    K + h * dh, ldk, 0.0f, S, m);
        if (causal)
            for (int i = 0; i < rows; i++)
                for (int j = r0 + i + 1; j < m; j++) S[(size_t)i * m + j] = -INFINITY;
        for (int i = 0; i < rows; i++) {
            float *Si = S + (size_t)i * m;
            inv_sum[i] = 1.0f / exp_row_sum(Si, m, row_max(Si, m));
        }
        float *O = out + (size_t)r0 * ldo + h * dh; /* [rows, dh] with row stride ldo */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, m, 1.0f, S, m, V + h * dh, ldv, 0.0f, O, ldo);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < dh; j++) O[(size_t)i * ldo + j] *= inv_sum[i];
    }
}
