/* store.h - a tensor store: one model file's tensors (any format of io/formats.h, in the original single-file
 * naming), and the loader that turns them into the networks' weights with shape checks. Every network loader
 * reads from a store: the checkpoint's text encoders, UNet and VAE, and a TAESD, ControlNet or upscaler file alike.
 * What the tensors mean as a Stable Diffusion model is the description's business (desc.h), not the store's. */
#ifndef SD_STORE_H
#define SD_STORE_H

#include "sd.h"

#include "io/formats.h"
#include "io/safetensors.h"
#include "nn/weight.h"

#include <stdarg.h>
#include <stdio.h>

struct lora_set;

typedef struct {
    st_file file;          /* every tensor, in the original single-file naming (formats.h) */
    model_format format;   /* what the file was */
    struct lora_set *lora; /* LoRAs merged into the weights as they are loaded (lora.h), or NULL */
    float **owned;         /* [n_owned] float32 copies made at load (vectors of half files, LoRA-merged layers) */
    int n_owned, cap_owned;
    int64_t max_half_matrix; /* largest F16/BF16 matrix loaded, in elements (the compute context's scratch) */
} tensor_store;

/* Opens path (any format of formats.h), with the VAE replaced by a standalone one when vae_path is not NULL.
 * Returns SD_OK, or SD_ERR_IO (unreadable) / SD_ERR_FORMAT (not a model format) / SD_ERR_MODEL (a VAE file that is
 * not one) with err set. */
sd_status store_open(tensor_store *s, const char *path, const char *vae_path, char *err, size_t errlen);
void store_close(tensor_store *s);

const st_tensor *store_find(const tensor_store *s, const char *name);
/* Whether any tensor's name starts with prefix. */
int store_has_prefix(const tensor_store *s, const char *prefix);

/* Drops the mapped pages of the tensors under prefix from memory (a finished stage); they are read back from the
 * page cache if used again. */
void store_release(const tensor_store *s, const char *prefix);

/* Parameter count (floating-point elements) of the tensors whose names start with prefix. */
int64_t store_param_count(const tensor_store *s, const char *prefix);

/* Loader for a component's weights: lookups by name relative to a prefix, with shape checks. The first failure
 * is kept in err; later lookups return an empty weight, so a component's load function can run to the end and
 * check `failed` once. */
typedef struct {
    tensor_store *s;
    char *err;
    size_t errlen;
    int failed;
    char prefix[200];
} wloader;

#define W_ANY (-1) /* a dimension that is not checked */

/* Required tensor `prefix + name` with exactly `ndim` dims; dims[i] == W_ANY skips a check. */
weight wl_get(wloader *L, const char *name, int ndim, const int64_t *dims);
/* Convenience wrappers for 1-, 2- and 4-dimensional weights. */
weight wl_vec(wloader *L, const char *name, int64_t n);
weight wl_mat(wloader *L, const char *name, int64_t rows, int64_t cols);
weight wl_conv(wloader *L, const char *name, int64_t out_ch, int64_t in_ch, int64_t kh, int64_t kw);
/* Is `prefix + name` present? (for layouts detected from the weights) */
int wl_has(const wloader *L, const char *name);
/* Shape of a present tensor, or NULL. */
const st_tensor *wl_find(const wloader *L, const char *name);
/* Sets the prefix with printf formatting. */
void wl_prefix(wloader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records a failure with printf formatting (first one wins), prefixed by the file's path. */
void wl_fail(wloader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
