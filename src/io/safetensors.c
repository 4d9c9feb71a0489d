/* safetensors.c - see safetensors.h. Every check names the file and the tensor it failed on. */
#include "io/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const dtype_names[ST_DTYPE_COUNT] = {"F32", "F16", "BF16", "I64", "I32"};
static const size_t dtype_sizes[ST_DTYPE_COUNT] = {4, 2, 2, 8, 4};

const char *st_dtype_name(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtype_names[t] : "?"; }
size_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtype_sizes[t] : 0; }
int st_dtype_is_float(st_dtype t) { return t == ST_F32 || t == ST_F16 || t == ST_BF16; }

int st_fail(char *err, size_t errlen, const char *path, const char *fmt, ...) {
    va_list ap;
    int n = snprintf(err, errlen, "%s: ", path);
    if (n < 0 || (size_t)n >= errlen) return -1;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int compare_tensor_names(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Reads a JSON number that must be a non-negative integer below 2^53 (exact in a double). */
static int json_to_u64(const cJSON *n, uint64_t *out) {
    if (!cJSON_IsNumber(n)) return -1;
    double v = n->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || floor(v) != v) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_dtype(const char *s, st_dtype *out) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, dtype_names[i]) == 0) {
            *out = (st_dtype)i;
            return 0;
        }
    return -1;
}

static int parse_metadata(st_file *f, const cJSON *meta, char *err, size_t errlen) {
    if (!cJSON_IsObject(meta)) return st_fail(err, errlen, f->path, "__metadata__ is not an object");
    if (f->meta) return st_fail(err, errlen, f->path, "__metadata__ appears twice");
    int n = cJSON_GetArraySize(meta);
    f->meta = calloc((size_t)n + 1, sizeof(st_meta));
    if (!f->meta) return st_fail(err, errlen, f->path, "out of memory");
    for (const cJSON *it = meta->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            return st_fail(err, errlen, f->path, "__metadata__ value of '%s' is not a string", it->string);
        st_meta *m = &f->meta[f->n_meta++];
        m->key = strdup(it->string);
        m->value = strdup(it->valuestring);
        if (!m->key || !m->value) return st_fail(err, errlen, f->path, "out of memory");
    }
    return 0;
}

/* Validates one header entry and fills `t`. data_size is the byte count after the header. */
static int parse_tensor(st_file *f, const cJSON *e, st_tensor *t, const uint8_t *data, size_t data_size, char *err,
                        size_t errlen) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return st_fail(err, errlen, f->path, "tensor '%s': entry is not an object", name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dtype) return st_fail(err, errlen, f->path, "tensor '%s': missing dtype", name);
    if (!shape) return st_fail(err, errlen, f->path, "tensor '%s': missing shape", name);
    if (!offs) return st_fail(err, errlen, f->path, "tensor '%s': missing data_offsets", name);
    if (!cJSON_IsString(dtype)) return st_fail(err, errlen, f->path, "tensor '%s': dtype is not a string", name);
    if (parse_dtype(dtype->valuestring, &t->dtype) != 0)
        return st_fail(err, errlen, f->path, "tensor '%s': unsupported dtype '%.32s' (F32, F16, BF16, I64, I32 are)",
                       name, dtype->valuestring);
    if (!cJSON_IsArray(shape)) return st_fail(err, errlen, f->path, "tensor '%s': shape is not an array", name);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > ST_MAX_DIMS)
        return st_fail(err, errlen, f->path, "tensor '%s': %d dimensions (at most %d)", name, t->ndim, ST_MAX_DIMS);
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *it = shape->child; it; it = it->next, d++) {
        uint64_t v;
        if (json_to_u64(it, &v) != 0)
            return st_fail(err, errlen, f->path, "tensor '%s': dimension %d is not a non-negative integer", name, d);
        if (v != 0 && numel > (UINT64_MAX / 16) / v)
            return st_fail(err, errlen, f->path, "tensor '%s': shape overflows", name);
        numel *= v;
        t->shape[d] = (int64_t)v;
    }
    uint64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || json_to_u64(offs->child, &begin) != 0 ||
        json_to_u64(offs->child->next, &end) != 0)
        return st_fail(err, errlen, f->path, "tensor '%s': data_offsets is not a pair of non-negative integers", name);
    if (end < begin)
        return st_fail(err, errlen, f->path, "tensor '%s': data_offsets reversed (%llu > %llu)", name,
                       (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return st_fail(err, errlen, f->path,
                       "tensor '%s': data_offsets end %llu is past the end of the data (%zu bytes)", name,
                       (unsigned long long)end, data_size);
    uint64_t nbytes = numel * st_dtype_size(t->dtype);
    if (end - begin != nbytes)
        return st_fail(err, errlen, f->path, "tensor '%s': data_offsets span %llu bytes but shape x dtype is %llu",
                       name, (unsigned long long)(end - begin), (unsigned long long)nbytes);
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)nbytes;
    t->data = data + begin;
    t->name = strdup(name);
    if (!t->name) return st_fail(err, errlen, f->path, "out of memory");
    return 0;
}

static int parse_header(st_file *f, const cJSON *root, const uint8_t *data, size_t data_size, char *err,
                        size_t errlen) {
    if (!cJSON_IsObject(root)) return st_fail(err, errlen, f->path, "header is not a JSON object");
    int n = cJSON_GetArraySize(root);
    f->tensors = calloc((size_t)n + 1, sizeof(st_tensor));
    if (!f->tensors) return st_fail(err, errlen, f->path, "out of memory");
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (parse_metadata(f, e, err, errlen) != 0) return -1;
            continue;
        }
        if (parse_tensor(f, e, &f->tensors[f->n_tensors], data, data_size, err, errlen) != 0) return -1;
        f->n_tensors++;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof(st_tensor), compare_tensor_names);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return st_fail(err, errlen, f->path, "tensor '%s' appears twice", f->tensors[i].name);
    return 0;
}

int st_parse(st_file *f, const void *buf, size_t size, const char *path, char *err, size_t errlen) {
    const uint8_t *bytes = buf;
    if (!f->path) f->path = strdup(path);
    if (!f->path) return st_fail(err, errlen, path, "out of memory");
    if (size == 0) return st_fail(err, errlen, path, "empty file");
    if (size < 8) return st_fail(err, errlen, path, "too short for a safetensors file (%zu bytes)", size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | bytes[i];
    if (size > 8 && bytes[8] != '{' && (hlen > ST_MAX_HEADER || hlen > size - 8)) /* a header is a JSON object */
        return st_fail(err, errlen, path, "not a model file (neither safetensors nor a PyTorch .ckpt / .pth zip)");
    if (hlen > ST_MAX_HEADER)
        return st_fail(err, errlen, path, "header length %llu is absurd (limit %u)", (unsigned long long)hlen,
                       ST_MAX_HEADER);
    if (hlen > size - 8)
        return st_fail(err, errlen, path, "header length %llu runs past the end of the file (%zu bytes)",
                       (unsigned long long)hlen, size);
    cJSON *root = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)hlen);
    if (!root) return st_fail(err, errlen, path, "header is not valid JSON");
    int rc = parse_header(f, root, bytes + 8 + hlen, size - 8 - (size_t)hlen, err, errlen);
    cJSON_Delete(root);
    return rc;
}

int st_map(const char *path, void **map, size_t *size, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return st_fail(err, errlen, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return st_fail(err, errlen, path, "cannot stat: %s", strerror(errno));
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return st_fail(err, errlen, path, "is a directory, not a model file");
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(err, errlen, path, "not a regular file");
    }
    *size = (size_t)sb.st_size;
    if (*size == 0) {
        close(fd);
        return st_fail(err, errlen, path, "empty file");
    }
    *map = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (*map == MAP_FAILED) {
        *map = NULL;
        return st_fail(err, errlen, path, "cannot map: %s", strerror(errno));
    }
    return 0;
}

int st_open_with(st_file *f, const char *path, st_parser parse, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    void *map;
    size_t size;
    if (st_map(path, &map, &size, err, errlen) != 0) return -1;
    f->map = map;
    f->map_size = size;
    if (parse(f, map, size, path, err, errlen) != 0) {
        st_close(f);
        return -2;
    }
    return 0;
}

int st_open(st_file *f, const char *path, char *err, size_t errlen) {
    return st_open_with(f, path, st_parse, err, errlen);
}

void st_close(st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->path);
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->n_parts; i++) st_close(&f->parts[i]);
    free(f->parts);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    st_tensor key = {.name = (char *)name};
    if (f->n_tensors == 0) return NULL;
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof(st_tensor), compare_tensor_names);
}

const char *st_meta_get(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

void st_drop_pages(const void *data, size_t nbytes) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)data + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t end = ((uintptr_t)data + nbytes) & ~((uintptr_t)page - 1);
    if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
}

int st_is_mapped(const st_file *f) { return f->map != NULL || f->n_parts > 0; }

void st_release(const st_file *f, const st_tensor *t) {
    if (!st_is_mapped(f) || t->nbytes == 0) return; /* only mapped files: never heap memory */
    st_drop_pages(t->data, t->nbytes);
}
