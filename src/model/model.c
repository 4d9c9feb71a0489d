/* model.c - see model.h. */
#include "model/model.h"

#include "io/formats.h"
#include "model/lora.h"

#include <errno.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

/* IEEE 754 binary16 -> binary32, exact (normals, subnormals, inf, NaN). */
float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        exp = 113;
        while (!(mant & 0x400)) { mant <<= 1; exp--; }
        bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> IEEE half, round to nearest even (finite inputs of moderate size). */
uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { /* subnormal half */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* bfloat16 is the top half of a float32. */
uint16_t float_to_bf16(float f) { /* round to nearest even (finite inputs) */
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* dst[n] = float(src[n]) for binary16 values: F16C when compiled for it, exact either way. */
static void halves_to_floats(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = half_to_float(src[i]);
}

void weight_rows_f32(const weight *w, int64_t offset, int64_t n, float *dst) {
    if (w->f32) { memcpy(dst, w->f32 + offset, (size_t)n * sizeof(float)); return; }
    if (w->dtype == ST_F32) { memcpy(dst, (const char *)w->half + offset * 4, (size_t)n * sizeof(float)); return; }
    const uint16_t *src = (const uint16_t *)w->half + offset;
    const int64_t chunk = 1 << 16;
    #pragma omp parallel for schedule(static) if (n > 4 * chunk)
    for (int64_t c = 0; c < n; c += chunk) {
        int64_t m = n - c < chunk ? n - c : chunk;
        if (w->dtype == ST_F16) halves_to_floats(src + c, dst + c, (size_t)m);
        else for (int64_t i = 0; i < m; i++) dst[c + i] = bf16_to_float(src[c + i]);
    }
}

static _Thread_local int drop_after_use;

void weight_set_drop_after_use(int on) { drop_after_use = on; }

const float *weight_f32(const weight *w, float *scratch) {
    if (w->f32) return w->f32;
    weight_rows_f32(w, 0, w->numel, scratch);
    if (drop_after_use && w->mapped) st_drop_pages(w->half, (size_t)w->numel * st_dtype_size(w->dtype));
    return scratch;
}

static const char *meta_or(const sd_model *m, const char *key, const char *dflt) {
    const char *v = st_meta_get(&m->file, key);
    return v ? v : dflt;
}

static int parse_positive(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0 || v > 4096) return -1;
    *out = (int)v;
    return 0;
}

/* Head counts and prediction type: the family's defaults, overridden by metadata keys. */
static int read_metadata(sd_model *m, char *err, size_t errlen) {
    const char *path = m->file.path;
    model_desc *d = &m->d;
    const st_tensor *tok = st_find(&m->file, d->family == FAMILY_SD1 ? SD1_TEXT_PREFIX "embeddings.token_embedding.weight"
                                                                      : SD2_TEXT_PREFIX "token_embedding.weight");
    int width = tok && tok->ndim == 2 ? (int)tok->shape[1] : 0;
    /* CLIP ViT-L/14: 12 heads of 64; OpenCLIP ViT-H/14: heads of 64 (16 at width 1024). */
    d->text_heads = d->family == FAMILY_SD1 ? 12 : (width >= 64 ? width / 64 : 1);
    d->unet_heads = 8;
    d->unet_head_dim = d->family == FAMILY_SD2 ? 64 : 0;
    const char *v;
    if ((v = st_meta_get(&m->file, "sd.text.heads")) && parse_positive(v, &d->text_heads))
        { snprintf(err, errlen, "%s: metadata sd.text.heads='%s' is not a positive integer", path, v); return -1; }
    if ((v = st_meta_get(&m->file, "sd.unet.heads")) && parse_positive(v, &d->unet_heads))
        { snprintf(err, errlen, "%s: metadata sd.unet.heads='%s' is not a positive integer", path, v); return -1; }
    if ((v = st_meta_get(&m->file, "sd.unet.head_dim")) && parse_positive(v, &d->unet_head_dim))
        { snprintf(err, errlen, "%s: metadata sd.unet.head_dim='%s' is not a positive integer", path, v); return -1; }
    /* SD 1.x is always epsilon; an SD 2.x file without the key is decided from its UNet (sd.c). */
    v = meta_or(m, "sd.prediction", d->family == FAMILY_SD1 ? "epsilon" : NULL);
    if (!v) d->prediction = PRED_UNKNOWN;
    else if (strcmp(v, "epsilon") == 0) d->prediction = PRED_EPSILON;
    else if (strcmp(v, "v_prediction") == 0) d->prediction = PRED_V;
    else { snprintf(err, errlen, "%s: metadata sd.prediction='%s' is not epsilon or v_prediction", path, v); return -1; }
    return 0;
}

/* Channels of a 4-D tensor's dimension `dim`, or 0 when absent / not 4-D. */
static int conv_channels(const sd_model *m, const char *name, int dim) {
    const st_tensor *t = st_find(&m->file, name);
    return t && t->ndim == 4 ? (int)t->shape[dim] : 0;
}

static int detect_family(sd_model *m, char *err, size_t errlen) {
    const char *path = m->file.path;
    model_desc *d = &m->d;
    int has_unet = st_find(&m->file, UNET_PREFIX "input_blocks.0.0.weight") != NULL;
    int has_vae = st_find(&m->file, VAE_PREFIX "decoder.conv_in.weight") != NULL;
    int has_sd1_text = st_find(&m->file, SD1_TEXT_PREFIX "embeddings.token_embedding.weight") != NULL;
    int has_sd2_text = st_find(&m->file, SD2_TEXT_PREFIX "token_embedding.weight") != NULL;
    if (!has_unet && !has_vae && !has_sd1_text && !has_sd2_text) {
        snprintf(err, errlen, "%s: not a Stable Diffusion checkpoint (no model.diffusion_model.*, first_stage_model.* "
                 "or cond_stage_model.* tensors among its %d)", path, m->file.n_tensors);
        return -1;
    }
    if (has_sd1_text && has_sd2_text) {
        snprintf(err, errlen, "%s: mixes model families: both '" SD1_TEXT_PREFIX "embeddings.token_embedding.weight' (SD 1.x) "
                 "and '" SD2_TEXT_PREFIX "token_embedding.weight' (SD 2.x)", path);
        return -1;
    }
    if (!has_sd1_text && !has_sd2_text) { snprintf(err, errlen, "%s: missing tensor '" SD1_TEXT_PREFIX "embeddings.token_embedding.weight' (text encoder)", path); return -1; }
    if (!has_unet) { snprintf(err, errlen, "%s: missing tensor '" UNET_PREFIX "input_blocks.0.0.weight' (UNet)", path); return -1; }
    if (!has_vae) { snprintf(err, errlen, "%s: missing tensor '" VAE_PREFIX "decoder.conv_in.weight' (VAE)", path); return -1; }
    if (has_sd1_text) {
        d->family = FAMILY_SD1;
        d->text = TEXT_CLIP;
        d->text_prefix = SD1_TEXT_PREFIX;
        d->text_skip = 0;
        d->pad_id = 49407;
    } else {
        d->family = FAMILY_SD2;
        d->text = TEXT_OPENCLIP;
        d->text_prefix = SD2_TEXT_PREFIX;
        d->text_skip = 1;
        d->pad_id = 0;
    }
    d->unet_in_ch = conv_channels(m, UNET_PREFIX "input_blocks.0.0.weight", 1);
    d->latent_ch = conv_channels(m, VAE_PREFIX "decoder.conv_in.weight", 1);
    if (d->unet_in_ch && d->latent_ch && d->unet_in_ch != d->latent_ch && d->unet_in_ch != 2 * d->latent_ch + 1) {
        snprintf(err, errlen, "%s: tensor '" UNET_PREFIX "input_blocks.0.0.weight' takes %d channels; expected %d (the VAE's "
                 "latent) or %d (an inpainting model)", path, d->unet_in_ch, d->latent_ch, 2 * d->latent_ch + 1);
        return -1;
    }
    d->vae_scale = 0.18215f; /* SD 1.x and 2.x (ldm scale_factor) */
    d->vae_shift = 0.0f;
    return 0;
}

int model_open_with_vae(sd_model *m, const char *path, const char *vae_path, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    int rc = formats_open(&m->file, path, &m->format, err, errlen);
    if (rc != 0) return rc;
    if (vae_path && formats_replace_vae(&m->file, vae_path, err, errlen) != 0) { model_close(m); return -3; }
    if (detect_family(m, err, errlen) != 0 || read_metadata(m, err, errlen) != 0) { model_close(m); return -3; }
    return 0;
}

int model_open(sd_model *m, const char *path, char *err, size_t errlen) { return model_open_with_vae(m, path, NULL, err, errlen); }

void model_close(sd_model *m) {
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    st_close(&m->file);
    memset(m, 0, sizeof *m);
}

int64_t model_param_count(const sd_model *m, const char *prefix) {
    int64_t n = 0;
    size_t len = strlen(prefix);
    for (int i = 0; i < m->file.n_tensors; i++) {
        const st_tensor *t = &m->file.tensors[i];
        if (st_dtype_is_float(t->dtype) && strncmp(t->name, prefix, len) == 0) n += t->numel;
    }
    return n;
}

void model_release(const sd_model *m, const char *prefix) {
    size_t len = strlen(prefix);
    for (int i = 0; i < m->file.n_tensors; i++)
        if (strncmp(m->file.tensors[i].name, prefix, len) == 0) st_release(&m->file, &m->file.tensors[i]);
}

/* ---- weight loader ---- */

void wl_prefix(wloader *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->prefix, sizeof L->prefix, fmt, ap);
    va_end(ap);
}

void wl_fail(wloader *L, const char *fmt, ...) {
    if (L->failed) return;
    L->failed = 1;
    int n = snprintf(L->err, L->errlen, "%s: ", L->m->file.path);
    if (n < 0 || (size_t)n >= L->errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->err + n, L->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

const st_tensor *wl_find(const wloader *L, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    return st_find(&L->m->file, full);
}

int wl_has(const wloader *L, const char *name) { return wl_find(L, name) != NULL; }

static void format_shape(char *buf, size_t len, int ndim, const int64_t *dims) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, dims[i] == W_ANY ? "%s*" : "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

static int shape_matches(const st_tensor *t, int ndim, const int64_t *dims) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (dims[i] != W_ANY && dims[i] != t->shape[i]) return 0;
    return 1;
}

static float *own_f32_copy(sd_model *m, const weight *w) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 256;
        float **p = realloc(m->owned, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        m->owned = p;
        m->cap_owned = cap;
    }
    float *f = malloc((size_t)w->numel * sizeof(float) + 1);
    if (!f) return NULL;
    weight_rows_f32(w, 0, w->numel, f);
    m->owned[m->n_owned++] = f;
    return f;
}

weight wl_get(wloader *L, const char *name, int ndim, const int64_t *dims) {
    weight w = {0};
    if (L->failed) return w;
    const st_tensor *t = wl_find(L, name);
    if (!t) { wl_fail(L, "missing tensor '%s%s'", L->prefix, name); return w; }
    if (!shape_matches(t, ndim, dims)) {
        char want[128], got[128];
        format_shape(want, sizeof want, ndim, dims);
        format_shape(got, sizeof got, t->ndim, t->shape);
        wl_fail(L, "tensor '%s%s' has shape %s, expected %s", L->prefix, name, got, want);
        return w;
    }
    if (!st_dtype_is_float(t->dtype)) { wl_fail(L, "tensor '%s%s' has dtype %s, expected a float type", L->prefix, name, st_dtype_name(t->dtype)); return w; }
    w.dtype = t->dtype;
    w.numel = t->numel;
    w.src = t;
    w.mapped = st_is_mapped(&L->m->file);
    int aligned = ((uintptr_t)t->data % st_dtype_size(t->dtype)) == 0;
    if (L->m->lora && lora_set_targets(L->m->lora, t)) { /* a float32 copy with the LoRA deltas added */
        w.half = t->data;
        float *f = own_f32_copy(L->m, &w);
        w.half = NULL;
        if (!f || lora_set_merge(L->m->lora, t, f) != 0) wl_fail(L, "out of memory merging LoRAs into '%s%s'", L->prefix, name);
        w.f32 = f;
        st_release(&L->m->file, t); /* the mapped original is not read again */
    } else if (t->dtype == ST_F32 && aligned) {
        w.f32 = t->data;
    } else {
        w.half = t->data;
        if (ndim == 1 || !aligned) { /* vectors, and data a crafted file misaligned, get a float32 copy */
            w.f32 = own_f32_copy(L->m, &w);
            if (!w.f32) wl_fail(L, "out of memory converting '%s%s'", L->prefix, name);
        } else if (t->numel > L->m->max_half_matrix) {
            L->m->max_half_matrix = t->numel;
        }
    }
    return w;
}

weight wl_vec(wloader *L, const char *name, int64_t n) { return wl_get(L, name, 1, (int64_t[]){n}); }
weight wl_mat(wloader *L, const char *name, int64_t rows, int64_t cols) { return wl_get(L, name, 2, (int64_t[]){rows, cols}); }
weight wl_conv(wloader *L, const char *name, int64_t o, int64_t i, int64_t kh, int64_t kw) {
    return wl_get(L, name, 4, (int64_t[]){o, i, kh, kw});
}
