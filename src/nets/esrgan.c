/* esrgan.c - see esrgan.h. Follows basicsr's rrdbnet_arch.py (RRDBNet, RRDB, ResidualDenseBlock). */
#include "nets/esrgan.h"

#include <stdlib.h>
#include <string.h>

#define LRELU_SLOPE    0.2f /* nn.LeakyReLU(negative_slope=0.2) */
#define RESIDUAL_SCALE 0.2f /* x + 0.2·f(x) in every RDB and RRDB */

/* Tensor names of a naming (module paths without .weight / .bias). */
typedef struct {
    const char *name;
    const char *first, *rdb, *body, *up1, *up2, *hr, *last; /* rdb: block (from 0), RDB (1..3), conv (1..5) */
} esrgan_names;

static const esrgan_names NAMINGS[] = {
    {"basicsr", "conv_first", "body.%d.rdb%d.conv%d", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"},
    {"old ESRGAN", "model.0", "model.1.sub.%d.RDB%d.conv%d.0", "model.1.sub.%d", "model.3", "model.6", "model.8",
     "model.10"},
    {"ESRGAN 2019", "conv_first", "RRDB_trunk.%d.RDB%d.conv%d", "trunk_conv", "upconv1", "upconv2", "HRconv",
     "conv_last"},
};

/* Whether `prefix` + the module path + ".weight" is a tensor of s. */
static const st_tensor *find_weight(const tensor_store *s, const char *prefix, const char *module) {
    char name[256];
    snprintf(name, sizeof name, "%s%s.weight", prefix, module);
    return store_find(s, name);
}

static void rdb_name(const esrgan_names *n, int block, int rdb, int conv, char *out, size_t len) {
    snprintf(out, len, n->rdb, block, rdb, conv);
}

/* The naming whose first layer and first RDB convolution are present under prefix, or NULL. */
static const esrgan_names *find_naming(const tensor_store *s, const char *prefix) {
    for (size_t i = 0; i < sizeof NAMINGS / sizeof *NAMINGS; i++) {
        char rdb[128];
        rdb_name(&NAMINGS[i], 0, 1, 1, rdb, sizeof rdb);
        if (find_weight(s, prefix, NAMINGS[i].first) && find_weight(s, prefix, rdb)) return &NAMINGS[i];
    }
    return NULL;
}

/* Real-ESRGAN's .pth releases hold the weights under params_ema (preferred) or params. */
static const char *find_prefix(const tensor_store *s) {
    static const char *const prefixes[] = {"params_ema.", "params.", ""};
    for (int i = 0; i < 3; i++)
        if (find_naming(s, prefixes[i])) return prefixes[i];
    return NULL;
}

static void load_blocks(wloader *L, esrgan *e, const esrgan_names *n) {
    for (int b = 0; b < e->nb && !L->failed; b++)
        for (int r = 0; r < 3; r++)
            for (int m = 0; m < 5; m++) {
                char name[128];
                rdb_name(n, b, r + 1, m + 1, name, sizeof name);
                const int in = e->nf + m * e->gc, out = m < 4 ? e->gc : e->nf;
                e->blocks[b].rdb[r].conv[m] = conv_layer_load(L, name, in, out, 3, 1, 1);
            }
}

sd_status esrgan_load(esrgan *e, const char *path, char *err, size_t errlen) {
    memset(e, 0, sizeof *e);
    sd_status st = store_open(&e->store, path, NULL, err, errlen);
    if (st != SD_OK) return st;
    const char *prefix = find_prefix(&e->store);
    const esrgan_names *n = prefix ? find_naming(&e->store, prefix) : NULL;
    if (!n) {
        snprintf(err, errlen,
                 "%s: not an RRDBNet (ESRGAN / Real-ESRGAN) upscaler: no conv_first.weight and "
                 "body.0.rdb1.conv1.weight (nor model.0.weight and model.1.sub.0.RDB1.conv1.0.weight)",
                 path);
        return SD_ERR_MODEL;
    }
    char rdb[128], body[64];
    const st_tensor *first = find_weight(&e->store, prefix, n->first);
    rdb_name(n, 0, 1, 1, rdb, sizeof rdb);
    const st_tensor *c1 = find_weight(&e->store, prefix, rdb);
    e->naming = n->name;
    e->nf = first->ndim == 4 ? (int)first->shape[0] : 0;
    e->gc = c1->ndim == 4 ? (int)c1->shape[0] : 0;
    const int in = first->ndim == 4 ? (int)first->shape[1] : 0;
    e->unshuffle = in == 3 ? 1 : in == 12 ? 2 : in == 48 ? 4 : 0;
    e->scale = e->unshuffle ? 4 / e->unshuffle : 0;
    if (!e->nf || !e->gc || !e->unshuffle) {
        snprintf(err, errlen, "%s: tensor '%s%s.weight' takes %d channels: not an RRDBNet's 3, 12 or 48", path, prefix,
                 n->first, in);
        return SD_ERR_MODEL;
    }
    while (e->nb < 1000 && (rdb_name(n, e->nb, 1, 1, rdb, sizeof rdb), find_weight(&e->store, prefix, rdb))) e->nb++;
    if (!(e->blocks = calloc((size_t)e->nb, sizeof *e->blocks))) {
        snprintf(err, errlen, "out of memory loading %s", path);
        return SD_ERR_NOMEM;
    }
    wloader L = {&e->store, err, errlen, 0, ""};
    wl_prefix(&L, "%s", prefix);
    snprintf(body, sizeof body, n->body, e->nb); /* the old naming numbers it after the blocks */
    e->first = conv_layer_load(&L, n->first, in, e->nf, 3, 1, 1);
    load_blocks(&L, e, n);
    e->body = conv_layer_load(&L, body, e->nf, e->nf, 3, 1, 1);
    e->up1 = conv_layer_load(&L, n->up1, e->nf, e->nf, 3, 1, 1);
    e->up2 = conv_layer_load(&L, n->up2, e->nf, e->nf, 3, 1, 1);
    e->hr = conv_layer_load(&L, n->hr, e->nf, e->nf, 3, 1, 1);
    e->last = conv_layer_load(&L, n->last, e->nf, 3, 3, 1, 1);
    return L.failed ? SD_ERR_MODEL : SD_OK;
}

void esrgan_free(esrgan *e) {
    free(e->blocks);
    store_close(&e->store);
    memset(e, 0, sizeof *e);
}

/* ---------------- forward ---------------- */

static void lrelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] >= 0.0f ? x[i] : LRELU_SLOPE * x[i];
}

/* y[c·u² + sy·u + sx, Y, X] = x[c, u·Y + sy, u·X + sx]: x[3, H, W] to y[3u², H/u, W/u]. */
static void pixel_unshuffle(const float *x, int H, int W, int u, float *y) {
    const int h = H / u, w = W / u;
    for (int c = 0; c < 3; c++)
        for (int sy = 0; sy < u; sy++)
            for (int sx = 0; sx < u; sx++) {
                float *plane = y + (size_t)((c * u + sy) * u + sx) * h * w;
                for (int Y = 0; Y < h; Y++)
                    for (int X = 0; X < w; X++)
                        plane[(size_t)Y * w + X] = x[((size_t)c * H + u * Y + sy) * W + u * X + sx];
            }
}

/* x[nf, h, w] = x + 0.2·conv5(cat(x, x1..x4)) with x_m = lrelu(conv_m(cat(x, x1..x_{m-1}))); cat[nf + 4gc, h, w] and
 * x5[nf, h, w] are work buffers. */
static void rdb_forward(compute *cc, const esrgan *e, const esrgan_rdb *r, float *x, int h, int w, float *cat,
                        float *x5) {
    const size_t hw = (size_t)h * w, nf = (size_t)e->nf * hw;
    memcpy(cat, x, nf * sizeof(float));
    for (int m = 0; m < 4; m++) { /* the channels of cat are contiguous: conv_m reads its first nf + m·gc */
        float *out = cat + nf + (size_t)m * e->gc * hw;
        conv_layer_forward(cc, &r->conv[m], cat, 1, h, w, out);
        lrelu(out, (size_t)e->gc * hw);
    }
    conv_layer_forward(cc, &r->conv[4], cat, 1, h, w, x5);
    for (size_t i = 0; i < nf; i++) x[i] += RESIDUAL_SCALE * x5[i];
}

/* t[nf, h, w] = t + 0.2·RDB3(RDB2(RDB1(t))); keep[nf, h, w] a work buffer. */
static void rrdb_forward(compute *cc, const esrgan *e, const esrgan_rrdb *b, float *t, int h, int w, float *keep,
                         float *cat, float *x5) {
    const size_t nf = (size_t)e->nf * h * w;
    memcpy(keep, t, nf * sizeof(float));
    for (int r = 0; r < 3 && !compute_stopped(cc); r++) rdb_forward(cc, e, &b->rdb[r], t, h, w, cat, x5);
    for (size_t i = 0; i < nf; i++) t[i] = keep[i] + RESIDUAL_SCALE * t[i];
}

/* feat[nf, h, w] = conv_first(in) + conv_body(RRDB^nb(conv_first(in))): the body at the input's resolution. */
static sd_status body_forward(compute *cc, const esrgan *e, const float *in, int h, int w, float *feat) {
    const size_t hw = (size_t)h * w, nf = (size_t)e->nf * hw;
    arena_mark mark = compute_mark(cc);
    float *t = compute_alloc(cc, nf), *keep = compute_alloc(cc, nf), *x5 = compute_alloc(cc, nf); /* [nf, h, w] */
    float *cat = compute_alloc(cc, (size_t)(e->nf + 4 * e->gc) * hw);                             /* [nf + 4gc, h, w] */
    if (!t || !keep || !x5 || !cat) return cc->status;
    conv_layer_forward(cc, &e->first, in, 1, h, w, feat);
    memcpy(t, feat, nf * sizeof(float));
    for (int b = 0; b < e->nb && !compute_stopped(cc); b++) rrdb_forward(cc, e, &e->blocks[b], t, h, w, keep, cat, x5);
    conv_layer_forward(cc, &e->body, t, 1, h, w, x5);
    for (size_t i = 0; i < nf; i++) feat[i] += x5[i];
    compute_reset(cc, mark);
    return compute_stopped(cc) ? cc->status : SD_OK;
}

sd_status esrgan_forward(compute *cc, const esrgan *e, const float *x, int H, int W, float *y) {
    const int u = e->unshuffle, h = H / u, w = W / u;
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    float *in = u > 1 ? compute_alloc(cc, (size_t)3 * H * W) : (float *)x; /* [3u², h, w] */
    float *feat = compute_alloc(cc, (size_t)e->nf * h * w);                /* [nf, h, w] */
    float *up = compute_alloc(cc, (size_t)e->nf * 4 * h * w);              /* [nf, 2h, 2w] */
    float *a = compute_alloc(cc, (size_t)e->nf * 16 * h * w), *b = compute_alloc(cc, (size_t)e->nf * 16 * h * w);
    if (!in || !feat || !up || !a || !b) return cc->status; /* a, b: [nf, 4h, 4w] */
    if (u > 1) pixel_unshuffle(x, H, W, u, in);
    sd_status st = body_forward(cc, e, in, h, w, feat);
    if (st == SD_OK) {
        conv_layer_forward_up2(cc, &e->up1, feat, 1, h, w, up); /* nearest 2x, then conv */
        lrelu(up, (size_t)e->nf * 4 * h * w);
        conv_layer_forward_up2(cc, &e->up2, up, 1, 2 * h, 2 * w, a);
        lrelu(a, (size_t)e->nf * 16 * h * w);
        conv_layer_forward(cc, &e->hr, a, 1, 4 * h, 4 * w, b);
        lrelu(b, (size_t)e->nf * 16 * h * w);
        conv_layer_forward(cc, &e->last, b, 1, 4 * h, 4 * w, y);
    }
    compute_reset(cc, mark);
    return st != SD_OK ? st : compute_stopped(cc) ? cc->status : SD_OK;
}

/* ---------------- whole images ---------------- */

/* out[3, Hp, Wp] = x[3, H, W] reflect-padded on the right and bottom (PyTorch's 'reflect': index H + k reads H − 2 −
 * k). */
static void reflect_pad(const float *x, int H, int W, int Hp, int Wp, float *out) {
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < Hp; i++) {
            const int si = i < H ? i : 2 * H - 2 - i;
            for (int j = 0; j < Wp; j++) {
                const int sj = j < W ? j : 2 * W - 2 - j;
                out[((size_t)c * Hp + i) * Wp + j] = x[((size_t)c * H + si) * W + sj];
            }
        }
}

/* One tile: input rows [y0, y1) x columns [x0, x1) of x[3, H, W] with pad pixels of context (clamped to the image),
 * its output's part for the tile into y[3, s·H, s·W]. */
static sd_status run_tile(compute *cc, const esrgan *e, const float *x, int H, int W, int y0, int y1, int x0, int x1,
                          int pad, float *y) {
    const int s = e->scale, u = e->unshuffle;
    const int ty0 = y0 - pad > 0 ? y0 - pad : 0, ty1 = y1 + pad < H ? y1 + pad : H;
    const int tx0 = x0 - pad > 0 ? x0 - pad : 0, tx1 = x1 + pad < W ? x1 + pad : W;
    const int th = ty1 - ty0, tw = tx1 - tx0;
    float *in = malloc((size_t)3 * th * tw * sizeof(float)), *out = malloc((size_t)3 * s * th * s * tw * sizeof(float));
    sd_status st = in && out && th % u == 0 && tw % u == 0 ? SD_OK : SD_ERR_NOMEM;
    for (int c = 0; st == SD_OK && c < 3; c++)
        for (int i = 0; i < th; i++)
            memcpy(in + ((size_t)c * th + i) * tw, x + ((size_t)c * H + ty0 + i) * W + tx0, (size_t)tw * sizeof(float));
    if (st == SD_OK) st = esrgan_forward(cc, e, in, th, tw, out);
    for (int c = 0; st == SD_OK && c < 3; c++)
        for (int i = s * y0; i < s * y1; i++)
            memcpy(y + ((size_t)c * s * H + i) * s * W + s * x0,
                   out + ((size_t)c * s * th + i - s * ty0) * s * tw + s * (x0 - tx0),
                   (size_t)s * (x1 - x0) * sizeof(float));
    free(in);
    free(out);
    return st;
}

sd_status esrgan_upscale(compute *cc, const esrgan *e, const float *x, int H, int W, int tile, int pad, float *y) {
    const int u = e->unshuffle, s = e->scale;
    const int Hp = (H + u - 1) / u * u, Wp = (W + u - 1) / u * u; /* Real-ESRGAN's mod_pad */
    if (tile <= 0 || (tile >= Hp && tile >= Wp)) tile = Hp > Wp ? Hp : Wp;
    tile = (tile + u - 1) / u * u;
    pad = (pad + u - 1) / u * u;
    float *xp = malloc((size_t)3 * Hp * Wp * sizeof(float));         /* [3, Hp, Wp] */
    float *yp = malloc((size_t)3 * s * Hp * s * Wp * sizeof(float)); /* [3, s·Hp, s·Wp] */
    sd_status st = xp && yp ? SD_OK : SD_ERR_NOMEM;
    if (st == SD_OK) reflect_pad(x, H, W, Hp, Wp, xp);
    for (int y0 = 0; st == SD_OK && y0 < Hp; y0 += tile)
        for (int x0 = 0; st == SD_OK && x0 < Wp; x0 += tile)
            st = run_tile(cc, e, xp, Hp, Wp, y0, y0 + tile < Hp ? y0 + tile : Hp, x0, x0 + tile < Wp ? x0 + tile : Wp,
                          pad, yp);
    for (int c = 0; st == SD_OK && c < 3; c++) /* crop the padding's output */
        for (int i = 0; i < s * H; i++)
            memcpy(y + ((size_t)c * s * H + i) * s * W, yp + ((size_t)c * s * Hp + i) * s * Wp,
                   (size_t)s * W * sizeof(float));
    free(xp);
    free(yp);
    return st;
}
