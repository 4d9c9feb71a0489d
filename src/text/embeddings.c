/* embeddings.c - see embeddings.h. Reference: AUTOMATIC1111 modules/textual_inversion/textual_inversion.py
 * (EmbeddingDatabase: load_from_file, create_embedding_from_data, find_embedding_at_position). */
#include "text/embeddings.h"

#include "io/sha256.h"
#include "model/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The file's tensors that hold the vectors for this model: clip_l / clip_g for a two-encoder model (SDXL), else the
 * one float tensor of the file (string_to_param.*, emb_params, a learned_embeds key). */
static int pick_tensors(const tensor_store *st, const model_desc *d, const st_tensor **t, char *why, size_t wl) {
    const st_file *f = &st->file;
    if (d->n_text == 2) {
        t[0] = st_find(f, "clip_l");
        t[1] = st_find(f, "clip_g");
        if (t[0] && t[1]) return 0;
        snprintf(why, wl, "not an SDXL embedding (no clip_l and clip_g tensors)");
        return -1;
    }
    if (st_find(f, "clip_l") || st_find(f, "clip_g")) {
        snprintf(why, wl, "an SDXL embedding (clip_l / clip_g), for SDXL models only");
        return -1;
    }
    int floats = 0;
    for (int i = 0; i < f->n_tensors; i++)
        if (st_dtype_is_float(f->tensors[i].dtype)) {
            t[0] = &f->tensors[i];
            floats++;
        }
    if (floats == 1) return 0;
    snprintf(why, wl, "holds %d float tensors, an embedding has one", floats);
    return -1;
}

/* e->vectors[i] = float32 copies of t[i] ([N, width_i] or [width_i]). Returns 0, -1 with why set, -2 no memory. */
static int take_vectors(embedding *e, const st_tensor *const *t, int n_text, const int *widths, char *why, size_t wl) {
    for (int i = 0; i < n_text; i++) {
        const st_tensor *v = t[i];
        const int64_t cols = v->ndim >= 1 ? v->shape[v->ndim - 1] : 0, rows = cols ? v->numel / cols : 0;
        if (v->ndim < 1 || v->ndim > 2 || cols != widths[i] || rows < 1 || rows > 75) {
            snprintf(why, wl,
                     "its vectors (tensor '%s', %lld x %lld) do not fit this model's text encoder%s of width %d",
                     v->name, (long long)rows, (long long)cols, n_text > 1 ? (i ? " 2" : " 1") : "", widths[i]);
            return -1;
        }
        if (i > 0 && rows != e->n_vectors) {
            snprintf(why, wl, "clip_l and clip_g hold different numbers of vectors");
            return -1;
        }
        e->n_vectors = (int)rows;
        if (!(e->vectors[i] = malloc((size_t)v->numel * sizeof(float)))) return -2;
        weight w = {.half = v->data, .dtype = v->dtype, .numel = v->numel};
        weight_rows_f32(&w, 0, v->numel, e->vectors[i], 1);
    }
    return 0;
}

/* The vectors of the file at e->path for this model, or e->unusable with the reason. Returns 0 or -2 (no memory). */
static int read_vectors(embedding *e, const model_desc *d, const int *widths) {
    tensor_store st;
    char err[512], why[600] = "";
    const st_tensor *t[MAX_TEXT_ENCODERS] = {NULL};
    int rc = -1;
    if (store_open(&st, e->path, NULL, err, sizeof err) != SD_OK) {
        const char *msg = strncmp(err, e->path, strlen(e->path)) ? err : err + strlen(e->path) + 2;
        snprintf(why, sizeof why, "%s", msg); /* "<path>: <problem>" without the path */
    } else {
        rc = pick_tensors(&st, d, t, why, sizeof why);
        if (rc == 0) rc = take_vectors(e, t, d->n_text, widths, why, sizeof why);
        store_close(&st);
    }
    if (rc == -2) return -2;
    if (rc != 0 && !(e->unusable = strdup(why))) return -2;
    return 0;
}

/* Whether name ends with one of the embedding extensions; *stem_len is the name without it. */
static int embedding_file(const char *name, size_t *stem_len) {
    static const char *const exts[] = {".pt", ".bin", ".safetensors"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        size_t el = strlen(exts[i]);
        if (n > el && !strcmp(name + n - el, exts[i])) {
            *stem_len = n - el;
            return 1;
        }
    }
    return 0;
}

/* A new entry for dir/file (name, path, the name's tokens, the hash), its vectors read. Returns 0, -2 no memory. */
static int add_file(embedding_set *s, const char *dir, const char *file, size_t stem, const tokenizer *tok,
                    const model_desc *d, const int *widths) {
    embedding *grown = realloc(s->e, (size_t)(s->n + 1) * sizeof *grown);
    if (!grown) return -2;
    s->e = grown;
    embedding *e = &s->e[s->n++];
    memset(e, 0, sizeof *e);
    size_t plen = strlen(dir) + strlen(file) + 2;
    e->name = strndup(file, stem);
    e->path = malloc(plen);
    if (!e->name || !e->path) return -2;
    snprintf(e->path, plen, "%s/%s", dir, file);
    char err[256], hex[65];
    long n = tokenizer_encode(tok, e->name, e->ids, EMB_MAX_NAME_IDS, err, sizeof err);
    e->n_ids = n > 0 && n <= EMB_MAX_NAME_IDS ? (int)n : 0;
    if (sha256_file_hex(e->path, hex) == 0) snprintf(e->hash, sizeof e->hash, "%.12s", hex);
    if (!e->n_ids) return (e->unusable = strdup("its name has no tokens (or too many)")) ? 0 : -2;
    return read_vectors(e, d, widths);
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The embedding files of dir, sorted (malloc'd names; *n of them). Returns 0, or -1 with errno (dir unreadable). */
static int list_dir(const char *dir, char ***names, int *n) {
    DIR *dp = opendir(dir);
    *names = NULL;
    *n = 0;
    if (!dp) return -1;
    int cap = 0, rc = 0;
    for (struct dirent *de; rc == 0 && (de = readdir(dp));) {
        size_t stem;
        if (de->d_name[0] == '.' || !embedding_file(de->d_name, &stem)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **p = realloc(*names, (size_t)cap * sizeof *p);
            if (!p)
                rc = -2;
            else
                *names = p;
        }
        if (rc == 0 && !((*names)[(*n)++] = strdup(de->d_name))) rc = -2;
    }
    closedir(dp);
    if (rc == 0 && *n) qsort(*names, (size_t)*n, sizeof **names, compare_names);
    return rc;
}

sd_status embeddings_load_dir(embedding_set *s, const char *dir, const tokenizer *tok, const model_desc *d,
                              const int *widths, FILE *log, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    char **names;
    int n, rc = list_dir(dir, &names, &n);
    if (rc == -1) {
        snprintf(err, errlen, "--embd-dir: %s: %s", dir, strerror(errno));
        return SD_ERR_IO;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        size_t stem = 0;
        embedding_file(names[i], &stem);
        rc = add_file(s, dir, names[i], stem, tok, d, widths);
        const embedding *e = rc == 0 ? &s->e[s->n - 1] : NULL;
        if (e && e->unusable && log)
            fprintf(log, "sd: note: embedding %s (%s) skipped: %s\n", e->name, e->path, e->unusable);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc == 0) return SD_OK;
    embeddings_free(s);
    snprintf(err, errlen, "out of memory reading the embeddings of %s", dir);
    return SD_ERR_NOMEM;
}

void embeddings_free(embedding_set *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->e[i].name);
        free(s->e[i].path);
        free(s->e[i].unusable);
        for (int k = 0; k < MAX_TEXT_ENCODERS; k++) free(s->e[i].vectors[k]);
    }
    free(s->e);
    memset(s, 0, sizeof *s);
}

const embedding *embeddings_match(const embedding_set *s, const int *ids, int n) {
    const embedding *best = NULL;
    for (int i = 0; s && i < s->n; i++) {
        const embedding *e = &s->e[i];
        if (e->n_ids <= n && (!best || e->n_ids > best->n_ids) && !memcmp(ids, e->ids, (size_t)e->n_ids * sizeof *ids))
            best = e;
    }
    return best;
}
