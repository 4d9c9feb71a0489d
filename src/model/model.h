/* model.h - a loaded checkpoint: the safetensors file, its family, and typed access to weights.
 *
 * Weights stay in the mapping. An F32 tensor is used in place; an F16/BF16 vector (bias, norm)
 * is converted once at load (they are tiny); an F16/BF16 matrix is converted into a scratch
 * buffer right before the layer that uses it (weight_f32), so the model is never expanded
 * into a full float32 copy.
 */
#ifndef SD_MODEL_H
#define SD_MODEL_H

#include "io/formats.h"
#include "io/safetensors.h"

#include <stdarg.h>
#include <stdio.h>

/* Prefixes of the original single-file layout (v1-5-pruned-emaonly.safetensors). */
#define SD1_TEXT_PREFIX "cond_stage_model.transformer.text_model."
#define SD2_TEXT_PREFIX "cond_stage_model.model."
#define UNET_PREFIX "model.diffusion_model."
#define VAE_PREFIX "first_stage_model."

typedef enum { FAMILY_SD1 = 1, FAMILY_SD2 } model_family;
typedef enum { PRED_UNKNOWN = 0, PRED_EPSILON, PRED_V } model_prediction;
typedef enum { TEXT_CLIP = 1, TEXT_OPENCLIP } text_kind;

/* What a checkpoint is, read from its tensor names and shapes (and metadata) at load: the pipeline
 * takes every model-dependent fact from here, never from constants. */
typedef struct {
    model_family family;
    text_kind text;            /* CLIP (transformers naming) or OpenCLIP (open_clip naming) */
    const char *text_prefix;   /* where the text encoder's tensors live */
    int text_skip;             /* last text layers the family does not use (SD 2.x: 1, the penultimate layer) */
    int pad_id;                /* token after <|endoftext|>: 49407 (SD 1.x) or 0, "!" (SD 2.x) */
    int text_heads, unet_heads, unet_head_dim; /* head_dim 0 = use unet_heads */
    model_prediction prediction; /* from metadata; PRED_UNKNOWN: decided by the pipeline (see sd.c) */
    int unet_in_ch;            /* UNet input channels: latent_ch, or 2·latent_ch + 1 for inpainting models */
    int latent_ch;             /* VAE latent channels */
    float vae_scale, vae_shift; /* latent = (z − shift)·scale */
    int default_size;          /* pixels, for the known models of the family (prediction v: 768) */
} model_desc;

/* One weight tensor as the kernels see it. */
typedef struct {
    const float *f32;  /* non-NULL when usable as float32 in place (or converted at load) */
    const void *half;  /* F16/BF16 data in the mapping, when f32 is NULL */
    st_dtype dtype;
    int64_t numel;
    const st_tensor *src;
    int mapped;        /* half points into a file mapping (its pages may be given back) */
} weight;

struct lora_set;

typedef struct {
    st_file file;           /* every tensor, in the original single-file naming (formats.h) */
    model_format format;    /* what the file was */
    model_desc d;
    struct lora_set *lora;  /* LoRAs merged into the weights as they are loaded (lora.h), or NULL */
    float **owned;        /* float32 copies made at load (vectors of half files) */
    int n_owned, cap_owned;
    int64_t max_half_matrix; /* largest F16/BF16 matrix, in elements (size of the scratch) */
} sd_model;

/* Opens the model (any format of formats.h), detects the family and reads the metadata keys. Returns 0, or
 * with err set: -1 unreadable file, -2 not a model format, -3 not a usable Stable Diffusion checkpoint. */
int model_open(sd_model *m, const char *path, char *err, size_t errlen);
/* Same, with the VAE replaced by a standalone one (vae_path NULL: the model's own). */
int model_open_with_vae(sd_model *m, const char *path, const char *vae_path, char *err, size_t errlen);
void model_close(sd_model *m);

/* Drops the mapped pages of the tensors under prefix from memory (a finished stage); they are read
 * back from the page cache if used again. */
void model_release(const sd_model *m, const char *prefix);

/* Parameter count (floating-point elements) of the tensors whose names start with prefix. */
int64_t model_param_count(const sd_model *m, const char *prefix);

/* Loader for a component's weights: lookups by name relative to a prefix, with shape checks.
 * The first failure is kept in err; later lookups return an empty weight, so a component's
 * load function can run to the end and check `failed` once. */
typedef struct {
    sd_model *m;
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
void wl_prefix(wloader *L, const char *fmt, ...);
/* Records a failure with printf formatting (first one wins). */
void wl_fail(wloader *L, const char *fmt, ...);

/* Float32 view of a weight: in place, or converted into scratch (>= numel floats). */
const float *weight_f32(const weight *w, float *scratch);

/* Low-memory mode for weight_f32 on the calling thread: a mapped half weight's pages are given back right after it
 * is converted, so that about one layer's weights are resident at a time (read again from the page cache on the
 * next use). */
void weight_set_drop_after_use(int on);
/* Converts `n` half values starting at element `offset` into dst. */
void weight_rows_f32(const weight *w, int64_t offset, int64_t n, float *dst);

float half_to_float(uint16_t h);
float bf16_to_float(uint16_t h);
uint16_t float_to_half(float f); /* round to nearest even (finite inputs) */
uint16_t float_to_bf16(float f);

#endif
