/* weight.h - one weight tensor as the kernels see it, and the half-precision conversions.
 *
 * Weights stay where the tensor store put them (the file mapping, usually). An F32 tensor is used in place; an
 * F16/BF16 vector (bias, norm) is converted once at load (they are tiny); an F16/BF16 matrix is converted into the
 * compute context's scratch right before the layer that uses it (compute_weight), so a model is never expanded
 * into a full float32 copy. */
#ifndef SD_WEIGHT_H
#define SD_WEIGHT_H

#include "io/safetensors.h"

#include <stdint.h>

typedef struct {
    const float *f32; /* non-NULL when usable as float32 in place (or converted at load) */
    const void *half; /* F16/BF16 data, when f32 is NULL */
    st_dtype dtype;
    int64_t numel;
    int mapped; /* half points into a file mapping (its pages may be given back) */
} weight;

/* Converts `n` values of w starting at element `offset` into dst, on up to `threads` threads. */
void weight_rows_f32(const weight *w, int64_t offset, int64_t n, float *dst, int threads);

/* Float32 view of a weight: in place, or converted into scratch (>= numel floats). With drop_after_use a mapped
 * half weight's pages are given back right after the conversion (low-memory mode: about one layer resident). */
const float *weight_f32(const weight *w, float *scratch, int threads, int drop_after_use);

float half_to_float(uint16_t h);
float bf16_to_float(uint16_t h);
uint16_t float_to_half(float f); /* round to nearest even (finite inputs) */
uint16_t float_to_bf16(float f);

#endif
