/* safetensors.h - read-only, mmap-backed reader of the safetensors format.
 *
 * Layout (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
 * N bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "value"}}, then the tensor bytes (offsets relative to the data start).
 */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS   8
#define ST_MAX_HEADER (100u * 1024u * 1024u) /* header lengths above this are refused */

typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_I64, ST_I32, ST_DTYPE_COUNT } st_dtype;

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data; /* points into the mapping */
} st_tensor;

typedef struct {
    char *key, *value;
} st_meta;

typedef struct st_file {
    char *path;
    void *map; /* whole file, read-only */
    size_t map_size;
    st_tensor *tensors; /* [n_tensors], sorted by name */
    int n_tensors;
    st_meta *meta; /* [n_meta] the __metadata__ string map */
    int n_meta;
    struct st_file *parts; /* [n_parts] files a combined table's tensors point into (a diffusers folder), owned */
    int n_parts;
} st_file;

/* Opens and validates a file. On failure writes "<path>: <problem>" to err and returns
 * -1 when the file cannot be read, -2 when it is not valid safetensors. */
int st_open(st_file *f, const char *path, char *err, size_t errlen);

/* Same, over a buffer that the caller keeps alive (used by the fuzzer); `path` names it in errors. */
int st_parse(st_file *f, const void *buf, size_t size, const char *path, char *err, size_t errlen);

void st_close(st_file *f);

/* Maps path and fills f with `parse` (st_parse, ckpt_parse): st_open's steps for any format. */
typedef int (*st_parser)(st_file *f, const void *buf, size_t size, const char *path, char *err, size_t errlen);
int st_open_with(st_file *f, const char *path, st_parser parse, char *err, size_t errlen);

/* Writes "<path>: <message>" into err; returns -1 (the readers' one error format). */
int st_fail(char *err, size_t errlen, const char *path, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Maps a whole regular file read-only. Returns 0, or -1 with "<path>: <problem>" in err. */
int st_map(const char *path, void **map, size_t *size, char *err, size_t errlen);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta_get(const st_file *f, const char *key);

const char *st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t);
int st_dtype_is_float(st_dtype t);

/* Whether the tensors' data lies in file mappings (the only memory whose pages may be given back). */
int st_is_mapped(const st_file *f);
/* Gives back the whole pages inside [data, data + nbytes) of a read-only file mapping (never heap memory). */
void st_drop_pages(const void *data, size_t nbytes);
/* Tells the kernel the mapped bytes of a tensor are no longer needed (drops them from RSS). */
void st_release(const st_file *f, const st_tensor *t);

#endif
