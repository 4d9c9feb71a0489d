/* convert.c - sd-convert: any model `sd` reads (safetensors, .ckpt, diffusers folder) → one single-file
 * safetensors checkpoint in the original layout.
 *
 *   sd-convert INPUT OUTPUT.safetensors [--type f32|f16|bf16] [--vae FILE] [--metadata KEY=VALUE]... [--force]
 *
 * --type converts every float tensor (default: keep each tensor's dtype); --vae bakes a standalone VAE in;
 * --metadata records what the weights cannot show (sd.text.heads, sd.unet.heads, sd.prediction, ...) in
 * __metadata__, over what the input carried. The output is written to a temporary file beside it and renamed
 * (never a partial file); an existing output is refused unless --force. Exit status: 0, 1 write failure,
 * 2 bad input. */
#include "model/model.h"

#include <cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_META 32

static int error(int code, const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "sd-convert: error: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return code;
}

/* The dtype a tensor is written as: `type` for float tensors when given, else its own. */
static st_dtype out_dtype(const st_tensor *t, int type) {
    return st_dtype_is_float(t->dtype) && type >= 0 ? (st_dtype)type : t->dtype;
}

/* Writes t's values as dtype `to` (float tensors through float32, exact for widening). */
static int write_tensor(FILE *out, const st_tensor *t, st_dtype to) {
    if (to == t->dtype) return fwrite(t->data, 1, t->nbytes, out) == t->nbytes ? 0 : -1;
    const int64_t chunk = 1 << 16;
    float *f = malloc((size_t)chunk * sizeof(float));
    uint8_t *b = malloc((size_t)chunk * 4);
    weight w = {.half = t->data, .dtype = t->dtype, .numel = t->numel};
    int rc = f && b ? 0 : -1;
    for (int64_t i = 0; i < t->numel && !rc; i += chunk) {
        int64_t n = t->numel - i < chunk ? t->numel - i : chunk;
        weight_rows_f32(&w, i, n, f, 1);
        for (int64_t k = 0; k < n; k++) {
            uint16_t h = to == ST_F16 ? float_to_half(f[k]) : float_to_bf16(f[k]);
            if (to == ST_F32)
                memcpy(b + 4 * k, &f[k], 4);
            else
                memcpy(b + 2 * k, &h, 2);
        }
        size_t bytes = (size_t)n * st_dtype_size(to);
        if (fwrite(b, 1, bytes, out) != bytes) rc = -1;
    }
    free(f);
    free(b);
    return rc;
}

/* Tensor order in the file: widest dtypes first so every tensor stays aligned to its element size. */
static const st_file *g_file;
static int g_type;
static int by_width(const void *a, const void *b) {
    const st_tensor *x = &g_file->tensors[*(const int *)a], *y = &g_file->tensors[*(const int *)b];
    size_t wx = st_dtype_size(out_dtype(x, g_type)), wy = st_dtype_size(out_dtype(y, g_type));
    return wx != wy ? (wx < wy) - (wx > wy) : strcmp(x->name, y->name);
}

static char *build_header(const st_file *f, const int *order, int type, char **meta, int n_meta, size_t *data_len) {
    cJSON *h = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(md, "format", "pt");
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, "format")) cJSON_AddStringToObject(md, f->meta[i].key, f->meta[i].value);
    for (int i = 0; i < n_meta; i++) { /* KEY=VALUE, over the input's */
        char *eq = strchr(meta[i], '=');
        *eq = 0;
        cJSON_DeleteItemFromObject(md, meta[i]);
        cJSON_AddStringToObject(md, meta[i], eq + 1);
        *eq = '=';
    }
    uint64_t off = 0;
    for (int k = 0; k < f->n_tensors; k++) {
        const st_tensor *t = &f->tensors[order[k]];
        st_dtype to = out_dtype(t, type);
        cJSON *e = cJSON_AddObjectToObject(h, t->name), *shape = cJSON_AddArrayToObject(e, "shape"), *offs;
        cJSON_AddStringToObject(e, "dtype", st_dtype_name(to));
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += (uint64_t)t->numel * st_dtype_size(to);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    }
    char *text = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    *data_len = off;
    return text;
}

/* Header (padded to 8 bytes) and data into a temporary file beside `path`, then renamed onto it. */
static int write_checkpoint(const st_file *f, int type, char **meta, int n_meta, const char *path) {
    int *order = malloc(((size_t)f->n_tensors + 1) * sizeof(int));
    if (!order) return error(1, "%s%s", "out of memory", "");
    for (int i = 0; i < f->n_tensors; i++) order[i] = i;
    g_file = f;
    g_type = type;
    qsort(order, (size_t)f->n_tensors, sizeof(int), by_width);
    size_t data_len;
    char *header = build_header(f, order, type, meta, n_meta, &data_len);
    char *copy = strdup(path), tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/.sd-convert-XXXXXX", dirname(copy));
    free(copy);
    int fd = mkstemp(tmp);
    FILE *out = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!header || !out) {
        free(order);
        free(header);
        return error(1, "%s: cannot create a temporary file: %s", path, strerror(errno));
    }
    size_t hl = strlen(header), padded = (hl + 7) & ~(size_t)7;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int rc = fwrite(len8, 1, 8, out) == 8 && fwrite(header, 1, hl, out) == hl ? 0 : -1;
    for (size_t i = hl; i < padded && !rc; i++) rc = fputc(' ', out) == EOF;
    for (int k = 0; k < f->n_tensors && !rc; k++)
        rc = write_tensor(out, &f->tensors[order[k]], out_dtype(&f->tensors[order[k]], type));
    rc |= fflush(out) != 0 || fsync(fd) != 0;
    rc |= fclose(out) != 0;
    if (!rc) {
        mode_t m = umask(0);
        umask(m);
        chmod(tmp, 0666 & ~m);
    }
    if (rc || rename(tmp, path) != 0) {
        unlink(tmp);
        free(order);
        free(header);
        return error(1, "%s: cannot write: %s", path, strerror(errno));
    }
    fprintf(stderr, "sd-convert: wrote %s (%d tensors, %.1f MB)\n", path, f->n_tensors,
            (double)(8 + padded + data_len) / 1e6);
    free(order);
    free(header);
    return 0;
}

/* Whether no file can be created beside path (checked before the input is read): 0, or 1 with errno set. */
static int output_dir_unusable(const char *path) {
    char *copy = strdup(path), probe[4200];
    if (!copy) return 1;
    int n = snprintf(probe, sizeof probe, "%s/.sd-convert-XXXXXX", dirname(copy));
    free(copy);
    int fd = n < (int)sizeof probe ? mkstemp(probe) : -1;
    if (fd < 0) return 1;
    close(fd);
    unlink(probe);
    return 0;
}

int main(int argc, char **argv) {
    const char *in = NULL, *outp = NULL, *vae = NULL;
    char *meta[MAX_META];
    int n_meta = 0, force = 0, type = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--force")) {
            force = 1;
            continue;
        }
        if (!strcmp(a, "--version")) {
            printf("sd-convert %s\n", sd_version());
            return 0;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: sd-convert INPUT OUTPUT.safetensors [--type f32|f16|bf16] [--vae FILE] [--metadata "
                   "KEY=VALUE]... [--force]\n       sd-convert --version\n");
            return 0;
        }
        if (a[0] == '-' && a[1]) {
            if (i + 1 >= argc) return error(2, "option '%s' needs a value%s", a, "");
            const char *v = argv[++i];
            if (!strcmp(a, "--type")) {
                type = !strcmp(v, "f32") ? ST_F32 : !strcmp(v, "f16") ? ST_F16 : !strcmp(v, "bf16") ? ST_BF16 : -2;
                if (type == -2) return error(2, "--type: unknown value '%s'%s (one of: f32, f16, bf16)", v, "");
            } else if (!strcmp(a, "--vae"))
                vae = v;
            else if (!strcmp(a, "--metadata")) {
                if (!strchr(v, '=') || v[0] == '=') return error(2, "--metadata: '%s' is not KEY=VALUE%s", v, "");
                if (n_meta == MAX_META) return error(2, "--metadata: more than %s keys%s", "32", "");
                meta[n_meta++] = argv[i];
            } else
                return error(2, "unknown option '%s'%s (see sd-convert --help)", a, "");
        } else if (!in)
            in = a;
        else if (!outp)
            outp = a;
        else
            return error(2, "unexpected argument '%s'%s", a, "");
    }
    if (!in || !outp) return error(2, "usage: sd-convert INPUT OUTPUT.safetensors [options]%s%s", "", "");
    struct stat si, so;
    if (!force && stat(outp, &so) == 0) return error(2, "%s: exists (use --force to replace it)%s", outp, "");
    if (stat(in, &si) == 0 && stat(outp, &so) == 0 && si.st_ino == so.st_ino && si.st_dev == so.st_dev)
        return error(2, "%s: is the input%s", outp, "");
    if (output_dir_unusable(outp))
        return error(2, "%s: cannot create a file in its directory: %s", outp, strerror(errno));
    sd_model m;
    char err[1024];
    if (model_open(&m, in, vae, err, sizeof err) != SD_OK) return error(2, "%s%s", err, "");
    fprintf(stderr, "sd-convert: read %s (%s, %d tensors)\n", in, formats_describe(m.store.format),
            m.store.file.n_tensors);
    int rc = write_checkpoint(&m.store.file, type, meta, n_meta, outp);
    model_close(&m);
    return rc;
}
