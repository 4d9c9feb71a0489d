/* winograd.c - 3x3 stride-1 "same" convolution with Winograd's minimal filtering F(4x4, 3x3)
 * (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks").
 *
 * Every 4x4 block of output pixels ("tile") is computed from a 6x6 input patch:
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
 * so the 36 products of the 6x6 transformed domain replace the 144 multiply-adds of direct
 * convolution. Summing over input channels turns the ⊙ into 36 independent GEMMs:
 *     M[p][o, t] = Σ_c U[p][o, c] · V[p][c, t]     (p = position in the 6x6 domain, t = tile)
 * with U = G g Gᵀ per (o, c) and V = Bᵀ d B per (c, t). Interpolation points 0, ±1, ±2, ∞.
 *
 * Work is split into output-channel chunks (bounding the transformed-weight buffer) and, inside
 * a chunk, into blocks of tiles whose transformed inputs stay in cache. Each step of a block is
 * shared among the threads: input transform by channel, the 36 single-threaded GEMMs by position,
 * output transform by channel. Every value is computed the same way whatever the thread count.
 */
#include "nn/kernels.h"
#include "nn/gemm.h"
#include "nn/vecmath.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include <string.h>

/* Buffer sizes, measured on the UNet's and the VAE's shapes (2-core Zen 5): large enough that most layers
 * transform every input tile and every weight once (64 MB each), but transformed weights in 32 MB chunks when a
 * block has few tiles (the 16x16 latent level): each weight is then used by few tiles and the smaller chunk stays
 * in cache between its transform and its GEMMs. */
#define BLOCK_FLOATS             ((size_t)16 << 20) /* transformed inputs per tile block */
#define U_CHUNK_FLOATS           ((size_t)16 << 20) /* transformed weights per output chunk */
#define U_CHUNK_FLOATS_FEW_TILES ((size_t)8 << 20)  /* the same for blocks of under FEW_TILES tiles */
#define FEW_TILES                128

/* Tiles are 4x4 output blocks; tile rows of all batch items are numbered item · tiles_y + ty, and
 * a block is `block_rows` whole tile rows (`block` tiles, tile k = row offset · tiles_x + tx). */
typedef struct {
    int B, C, O, H, W, tiles_y, tiles_x, rows, block_rows, block;
} wino_shape;

static wino_shape wino_shape_of(int B, int C, int O, int H, int W) {
    wino_shape s = {B, C, O, H, W, (H + 3) / 4, (W + 3) / 4, 0, 0, 0};
    s.rows = B * s.tiles_y;
    /* blocks of equal size, each at most 512 tiles and V[36, C, block] within BLOCK_FLOATS (but one row at least) */
    size_t fit = BLOCK_FLOATS / ((size_t)36 * C * s.tiles_x), cap = (512 + s.tiles_x - 1) / s.tiles_x;
    int most = fit < 1 ? 1 : fit > cap ? (int)cap : (int)fit, blocks = (s.rows + most - 1) / most;
    s.block_rows = (s.rows + blocks - 1) / blocks;
    s.block = s.block_rows * s.tiles_x;
    return s;
}

/* Output channels per chunk so that U[36, chunk, C] stays within its bound for blocks of `block` tiles (multiple of
 * 16). */
static int wino_out_chunk(int C, int O, int block) {
    size_t fit = (block < FEW_TILES ? U_CHUNK_FLOATS_FEW_TILES : U_CHUNK_FLOATS) / ((size_t)36 * C);
    int chunks = (int)(((size_t)O + fit - 1) / (fit ? fit : 1));
    if (chunks < 1) chunks = 1;
    int ob = (O + chunks - 1) / chunks;
    ob = (ob + 15) / 16 * 16;
    return ob < O ? ob : O;
}

int conv_uses_winograd(const conv_desc *d, int H, int W, int B) {
    int same3x3 = d->kh == 3 && d->kw == 3 && d->stride == 1 && d->pad_top == 1 && d->pad_left == 1 &&
                  d->pad_bottom == 1 && d->pad_right == 1;
    /* enough tiles per call to keep the 36 GEMMs wide (measured at 1280-2560 channels: 32 tiles win, 16 lose) */
    return same3x3 && (size_t)B * ((H + 3) / 4) * ((W + 3) / 4) >= 32;
}

size_t conv_winograd_work_size(compute *cc, const conv_desc *d, int B, int H, int W) {
    const wino_shape s = wino_shape_of(B, d->in_ch, d->out_ch, H, W);
    size_t ob = (size_t)wino_out_chunk(s.C, s.O, s.block);
    return (size_t)36 * (ob * s.C + (size_t)s.block * (s.C + ob)) +
           (size_t)27 * s.C * cc->threads; /* U, V, M, weight temp */
}

/* out[k·os] = (G·a)[k], a[k·is] for k < 3, along one axis, for n lanes (vectorised over them):
 * G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]. */
static void wino_g_1d(const float *a, size_t is, float *out, size_t os, int n) {
#pragma omp simd
    for (int c = 0; c < n; c++) {
        float a0 = a[c], a1 = a[is + c], a2 = a[2 * is + c];
        float e = a0 + a2, f = a0 * (1.0f / 24) + a2 * (1.0f / 6);
        out[c] = a0 * 0.25f;
        out[os + c] = -(e + a1) * (1.0f / 6);
        out[2 * os + c] = -(e - a1) * (1.0f / 6);
        out[3 * os + c] = f + a1 * (1.0f / 12);
        out[4 * os + c] = f - a1 * (1.0f / 12);
        out[5 * os + c] = a2;
    }
}

/* U[p][o, c] = (G g Gᵀ)[p] for o in [o0, o0 + n), g = w[o0 + o, c] (3x3). */
static void wino_weights(compute *cc, const float *w, int C, int o0, int n, float *U,
                         float *tmp /* [threads, 27, C] */) {
    const size_t plane = (size_t)n * C;                            /* one p of U */
#pragma omp parallel for schedule(static) num_threads(cc->threads) /* one tmp slice per thread */
    for (int o = 0; o < n; o++) {
#ifdef _OPENMP
        float *g = tmp + (size_t)omp_get_thread_num() * 27 * C; /* [3, 3, C]: tap-major copy of w[o0 + o] */
#else
        float *g = tmp;
#endif
        float *gg = g + (size_t)9 * C; /* [6, 3, C]: G · g */
        const float *wo = w + (size_t)(o0 + o) * C * 9;
        for (int c = 0; c < C; c++)
            for (int k = 0; k < 9; k++) g[(size_t)k * C + c] = wo[(size_t)c * 9 + k];
        for (int j = 0; j < 3; j++) wino_g_1d(g + (size_t)j * C, 3 * (size_t)C, gg + (size_t)j * C, 3 * (size_t)C, C);
        for (int i = 0; i < 6; i++)
            wino_g_1d(gg + (size_t)i * 3 * C, C, U + (size_t)i * 6 * plane + (size_t)o * C, plane, C);
    }
}

#define ROW_CHUNK 64 /* tiles of one tile row transformed together (vectorised over them) */

/* One channel plane as a convolution reads it (conv_input): the plane xc (H x W, or H/2 x W/2 when up) and its map. */
typedef struct {
    const float *xc;
    int up;        /* nearest 2x upsampling */
    int map, silu; /* affine map s, t (then SiLU) */
    float s, t;
} plane_reader;

/* seg[q] = input pixel (yy, xs + q) for q < len, zero outside the image (H x W, the convolution's size). */
static void read_segment(const plane_reader *r, int H, int W, int yy, int xs, int len, float *seg) {
    const int lo = xs < 0 ? -xs : 0, hi = W - xs < len ? W - xs : len; /* valid part: [lo, hi) */
    if (yy < 0 || yy >= H || hi <= lo) {
        memset(seg, 0, (size_t)len * sizeof(float));
        return;
    }
    memset(seg, 0, (size_t)lo * sizeof(float));
    const float *src = seg + lo; /* the valid part, before the map */
    if (r->up) {                 /* torch 'nearest' at exactly 2x: (i, j) reads (i/2, j/2) */
        const float *row = r->xc + (size_t)(yy / 2) * (W / 2);
        for (int q = lo; q < hi; q++) seg[q] = row[(xs + q) / 2];
    } else if (r->map) {
        src = r->xc + (size_t)yy * W + xs + lo; /* mapped straight from x */
    } else {
        memcpy(seg + lo, r->xc + (size_t)yy * W + xs + lo, (size_t)(hi - lo) * sizeof(float));
    }
    if (r->map) channel_map_row(src, (size_t)(hi - lo), r->s, r->t, r->silu, seg + lo);
    memset(seg + hi, 0, (size_t)(len - hi) * sizeof(float));
}

/* V[p][k] = (Bᵀ d B)[p] for the tiles tx0 + k, k < ntx, of the tile row whose 6x6 patches start at
 * input row y0 of the plane r reads (H x W); d is zero outside the image. V rows are `plane` apart.
 * Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]. */
static void wino_input_row(const plane_reader *r, int H, int W, int y0, int tx0, int ntx, float *V, size_t plane) {
    float seg[4 * ROW_CHUNK + 4]; /* seg[q] = x[y0 + i, 4·tx0 - 1 + q]: one patch row of the chunk, zero outside */
    float h[6][6][ROW_CHUNK];     /* h[i][j][k] = (d B)[i, j] of tile k */
    for (int i = 0; i < 6; i++) {
        read_segment(r, H, W, y0 + i, 4 * tx0 - 1, 4 * ntx + 2, seg);
        for (int k = 0; k < ntx; k++) {
            const float *d = seg + 4 * k;
            float d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3], d4 = d[4], d5 = d[5];
            h[i][0][k] = 4.0f * d0 - 5.0f * d2 + d4;
            h[i][1][k] = -4.0f * (d1 + d2) + d3 + d4;
            h[i][2][k] = 4.0f * (d1 - d2) - d3 + d4;
            h[i][3][k] = 2.0f * (d3 - d1) - d2 + d4;
            h[i][4][k] = 2.0f * (d1 - d3) - d2 + d4;
            h[i][5][k] = 4.0f * d1 - 5.0f * d3 + d5;
        }
    }
    for (int j = 0; j < 6; j++) {
        float *v0 = V + (size_t)j * plane, *v1 = v0 + 6 * plane, *v2 = v0 + 12 * plane, *v3 = v0 + 18 * plane,
              *v4 = v0 + 24 * plane, *v5 = v0 + 30 * plane;
#pragma omp simd
        for (int k = 0; k < ntx; k++) {
            float e0 = h[0][j][k], e1 = h[1][j][k], e2 = h[2][j][k], e3 = h[3][j][k], e4 = h[4][j][k], e5 = h[5][j][k];
            v0[k] = 4.0f * e0 - 5.0f * e2 + e4;
            v1[k] = -4.0f * (e1 + e2) + e3 + e4;
            v2[k] = 4.0f * (e1 - e2) - e3 + e4;
            v3[k] = 2.0f * (e3 - e1) - e2 + e4;
            v4[k] = 2.0f * (e1 - e3) - e2 + e4;
            v5[k] = 4.0f * e1 - 5.0f * e3 + e5;
        }
    }
}

/* Output rows 4·ty.. of channel plane yc[H, W] from M[p][k] (rows `plane` apart) for the tiles
 * tx0 + k, k < ntx: Y = Aᵀ m A + bias, pixels outside the image dropped.
 * Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. */
static void wino_output_row(const float *M, size_t plane, int tx0, int ntx, int ty, int H, int W, float bias,
                            float *yc) {
    float r[4][6][ROW_CHUNK]; /* r[i][j][k] = (Aᵀ m)[i, j] of tile k */
    float row[4 * ROW_CHUNK]; /* one output row of the chunk */
    for (int j = 0; j < 6; j++) {
        const float *m0 = M + (size_t)j * plane, *m1 = m0 + 6 * plane, *m2 = m0 + 12 * plane, *m3 = m0 + 18 * plane,
                    *m4 = m0 + 24 * plane, *m5 = m0 + 30 * plane;
        for (int k = 0; k < ntx; k++) {
            float a = m1[k] + m2[k], b = m1[k] - m2[k], c = m3[k] + m4[k], d = m3[k] - m4[k];
            r[0][j][k] = m0[k] + a + c;
            r[1][j][k] = b + 2.0f * d;
            r[2][j][k] = a + 4.0f * c;
            r[3][j][k] = b + 8.0f * d + m5[k];
        }
    }
    const int rows = H - 4 * ty < 4 ? H - 4 * ty : 4, x0 = 4 * tx0;
    const int cols = W - x0 < 4 * ntx ? W - x0 : 4 * ntx;
    for (int i = 0; i < rows; i++) {
        for (int k = 0; k < ntx; k++) {
            const float *e0 = &r[i][0][k];
            float a = e0[ROW_CHUNK] + e0[2 * ROW_CHUNK], b = e0[ROW_CHUNK] - e0[2 * ROW_CHUNK];
            float c = e0[3 * ROW_CHUNK] + e0[4 * ROW_CHUNK], d = e0[3 * ROW_CHUNK] - e0[4 * ROW_CHUNK];
            row[4 * k] = e0[0] + a + c + bias;
            row[4 * k + 1] = b + 2.0f * d + bias;
            row[4 * k + 2] = a + 4.0f * c + bias;
            row[4 * k + 3] = b + 8.0f * d + e0[5 * ROW_CHUNK] + bias;
        }
        memcpy(yc + (size_t)(4 * ty + i) * W + x0, row, (size_t)cols * sizeof(float));
    }
}

/* Tile rows [r0, r0 + nr) of the batch (row index = item · tiles_y + ty) into V[p][c, k], x read as `in` says
 * (NULL: as it is). */
static void wino_inputs(compute *cc, const wino_shape *s, const float *x, const conv_input *in, int r0, int nr,
                        float *V) {
    const size_t plane = (size_t)s->C * s->block;
    const int chunks = (s->tiles_x + ROW_CHUNK - 1) / ROW_CHUNK;
    const int up = in && in->upsample2x, map = in && in->scale;
    const size_t x_plane = up ? (size_t)(s->H / 2) * (s->W / 2) : (size_t)s->H * s->W; /* floats per plane of x */
#pragma omp parallel for schedule(static) num_threads(cc->threads) collapse(2)
    for (int c = 0; c < s->C; c++)
        for (int task = 0; task < nr * chunks; task++) {
            int rr = r0 + task / chunks, b = rr / s->tiles_y, ty = rr % s->tiles_y, tx0 = task % chunks * ROW_CHUNK;
            int ntx = s->tiles_x - tx0 < ROW_CHUNK ? s->tiles_x - tx0 : ROW_CHUNK;
            size_t k0 = (size_t)(task / chunks) * s->tiles_x + tx0;
            const size_t bc = (size_t)b * s->C + c; /* item b's channel c */
            const plane_reader r = {x + bc * x_plane,          up, map, map && in->silu, map ? in->scale[bc] : 1.0f,
                                    map ? in->shift[bc] : 0.0f};
            wino_input_row(&r, s->H, s->W, 4 * ty - 1, tx0, ntx, V + (size_t)c * s->block + k0, plane);
        }
}

/* Output channels [o0, o0 + n) of tile rows [r0, r0 + nr) from M[p][o, k]. */
static void wino_outputs(compute *cc, const wino_shape *s, const float *M, int o0, int n, int r0, int nr,
                         const float *bias, float *y) {
    const size_t plane = (size_t)n * s->block;
    const int chunks = (s->tiles_x + ROW_CHUNK - 1) / ROW_CHUNK;
#pragma omp parallel for schedule(static) num_threads(cc->threads) collapse(2)
    for (int o = 0; o < n; o++)
        for (int task = 0; task < nr * chunks; task++) {
            int rr = r0 + task / chunks, b = rr / s->tiles_y, ty = rr % s->tiles_y, tx0 = task % chunks * ROW_CHUNK;
            int ntx = s->tiles_x - tx0 < ROW_CHUNK ? s->tiles_x - tx0 : ROW_CHUNK;
            size_t k0 = (size_t)(task / chunks) * s->tiles_x + tx0;
            wino_output_row(M + (size_t)o * s->block + k0, plane, tx0, ntx, ty, s->H, s->W, bias ? bias[o0 + o] : 0.0f,
                            y + ((size_t)b * s->O + o0 + o) * s->H * s->W);
        }
}

void conv2d_winograd(compute *cc, const conv_desc *d, const float *x, const conv_input *in, int B, int H, int W,
                     const float *w, const float *b, float *y, float *work) {
    if (compute_poll(cc)) return;
    const wino_shape s = wino_shape_of(B, d->in_ch, d->out_ch, H, W);
    const int ob = wino_out_chunk(s.C, s.O, s.block);
    float *U = work;                           /* [36, ob, C] */
    float *V = U + (size_t)36 * ob * s.C;      /* [36, C, block] */
    float *M = V + (size_t)36 * s.C * s.block; /* [36, ob, block] */
    float *g = M + (size_t)36 * ob * s.block;  /* [threads, 27, C] */
    const int chunks = (s.O + ob - 1) / ob, blocks = (s.rows + s.block_rows - 1) / s.block_rows;
    /* loop order: redo whichever transform is cheaper to redo (V per chunk, or U per block) */
    const int chunk_outer = (double)(chunks - 1) * s.C * s.rows * s.tiles_x <= (double)(blocks - 1) * s.O * s.C;
    int have_chunk = -1, have_block = -1;
    for (int outer = 0; outer < (chunk_outer ? chunks : blocks); outer++)
        for (int inner = 0; inner < (chunk_outer ? blocks : chunks); inner++) {
            if (compute_stopped(cc)) return; /* a block is milliseconds to a second of work */
            const int ci = chunk_outer ? outer : inner, bi = chunk_outer ? inner : outer;
            const int o0 = ci * ob, n = s.O - o0 < ob ? s.O - o0 : ob;
            const int r0 = bi * s.block_rows, nr = s.rows - r0 < s.block_rows ? s.rows - r0 : s.block_rows;
            const int nt = nr * s.tiles_x;
            if (ci != have_chunk) wino_weights(cc, w, s.C, o0, n, U, g);
            if (bi != have_block) wino_inputs(cc, &s, x, in, r0, nr, V);
            have_chunk = ci;
            have_block = bi;
            compute_count(cc, 72.0 * n * nt * s.C);
#pragma omp parallel for schedule(static) num_threads(cc->threads)
            for (int p = 0; p < 36; p++) /* M[p][n, nt] = U[p][n, C] · V[p][C, nt] */
                gemm_1t(GEMM_F32, 0, n, nt, s.C, 1.0f, U + (size_t)p * n * s.C, s.C, V + (size_t)p * s.C * s.block,
                        s.block, 0.0f, M + (size_t)p * n * s.block, s.block);
            wino_outputs(cc, &s, M, o0, n, r0, nr, b, y);
        }
}
