/* store.c - see store.h. */
#include "model/store.h"

#include "model/lora.h"

#include <stdlib.h>
#include <string.h>

sd_status store_open(tensor_store *s, const char *path, const char *vae_path, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    int rc = formats_open(&s->file, path, &s->format, err, errlen);
    if (rc != 0) return rc == -1 ? SD_ERR_IO : SD_ERR_FORMAT;
    if (vae_path && formats_replace_vae(&s->file, vae_path, err, errlen) != 0) {
        store_close(s);
        return SD_ERR_MODEL;
    }
    return SD_OK;
}

void store_close(tensor_store *s) {
    for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
    free(s->owned);
    st_close(&s->file);
    memset(s, 0, sizeof *s);
}

const st_tensor *store_find(const tensor_store *s, const char *name) { return st_find(&s->file, name); }

int store_has_prefix(const tensor_store *s, const char *prefix) {
    size_t len = strlen(prefix);
    for (int i = 0; i < s->file.n_tensors; i++)
        if (strncmp(s->file.tensors[i].name, prefix, len) == 0) return 1;
    return 0;
}

int64_t store_param_count(const tensor_store *s, const char *prefix) {
    int64_t n = 0;
    size_t len = strlen(prefix);
    for (int i = 0; i < s->file.n_tensors; i++) {
        const st_tensor *t = &s->file.tensors[i];
        if (st_dtype_is_float(t->dtype) && strncmp(t->name, prefix, len) == 0) n += t->numel;
    }
    return n;
}

void store_release(const tensor_store *s, const char *prefix) {
    size_t len = strlen(prefix);
    for (int i = 0; i < s->file.n_tensors; i++)
        if (strncmp(s->file.tensors[i].name, prefix, len) == 0) st_release(&s->file, &s->file.tensors[i]);
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
    int n = snprintf(L->err, L->errlen, "%s: ", L->s->file.path);
    if (n < 0 || (size_t)n >= L->errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->err + n, L->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

const st_tensor *wl_find(const wloader *L, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    return st_find(&L->s->file, full);
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

/* A float32 copy of w that the store owns (freed with it), or NULL without memory. */
static float *own_f32_copy(tensor_store *s, const weight *w) {
    if (s->n_owned == s->cap_owned) {
        int cap = s->cap_owned ? s->cap_owned * 2 : 256;
        float **p = realloc(s->owned, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        s->owned = p;
        s->cap_owned = cap;
    }
    float *f = malloc((size_t)w->numel * sizeof(float) + 1);
    if (!f) return NULL;
    weight_rows_f32(w, 0, w->numel, f, 1);
    s->owned[s->n_owned++] = f;
    return f;
}

weight wl_get(wloader *L, const char *name, int ndim, const int64_t *dims) {
    weight w = {0};
    if (L->failed) return w;
    const st_tensor *t = wl_find(L, name);
    if (!t) {
        wl_fail(L, "missing tensor '%s%s'", L->prefix, name);
        return w;
    }
    if (!shape_matches(t, ndim, dims)) {
        char want[128], got[128];
        format_shape(want, sizeof want, ndim, dims);
        format_shape(got, sizeof got, t->ndim, t->shape);
        wl_fail(L, "tensor '%s%s' has shape %s, expected %s", L->prefix, name, got, want);
        return w;
    }
    if (!st_dtype_is_float(t->dtype)) {
        wl_fail(L, "tensor '%s%s' has dtype %s, expected a float type", L->prefix, name, st_dtype_name(t->dtype));
        return w;
    }
    w.dtype = t->dtype;
    w.numel = t->numel;
    w.mapped = st_is_mapped(&L->s->file);
    int aligned = ((uintptr_t)t->data % st_dtype_size(t->dtype)) == 0;
    if (L->s->lora && lora_set_targets(L->s->lora, t)) { /* a float32 copy with the LoRA deltas added */
        w.half = t->data;
        float *f = own_f32_copy(L->s, &w);
        w.half = NULL;
        if (!f || lora_set_merge(L->s->lora, t, f) != 0)
            wl_fail(L, "out of memory merging LoRAs into '%s%s'", L->prefix, name);
        w.f32 = f;
        st_release(&L->s->file, t); /* the mapped original is not read again */
    } else if (t->dtype == ST_F32 && aligned) {
        w.f32 = t->data;
    } else {
        w.half = t->data;
        if (ndim == 1 || !aligned) { /* vectors, and data a crafted file misaligned, get a float32 copy */
            w.f32 = own_f32_copy(L->s, &w);
            if (!w.f32) wl_fail(L, "out of memory converting '%s%s'", L->prefix, name);
        } else if (t->numel > L->s->max_half_matrix) {
            L->s->max_half_matrix = t->numel;
        }
    }
    return w;
}

weight wl_vec(wloader *L, const char *name, int64_t n) { return wl_get(L, name, 1, (int64_t[]){n}); }
weight wl_mat(wloader *L, const char *name, int64_t rows, int64_t cols) {
    return wl_get(L, name, 2, (int64_t[]){rows, cols});
}
weight wl_conv(wloader *L, const char *name, int64_t o, int64_t i, int64_t kh, int64_t kw) {
    return wl_get(L, name, 4, (int64_t[]){o, i, kh, kw});
}
