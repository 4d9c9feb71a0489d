/* formats.h - every model source people have, as one tensor table in the original single-file naming
 * (what model.c and the networks read):
 *   a safetensors file                    read as it is
 *   a PyTorch .ckpt (torch zip)           ckpt.c: tensors in place, the pickle read safely
 *   a diffusers pipeline folder           unet/, vae/, text_encoder/ (*.safetensors or *.fp16.safetensors),
 *                                         renamed through naming.c; head counts and prediction type from
 *                                         the folder's config.json files become the sd.* metadata keys
 * and a standalone VAE (original naming with or without "first_stage_model.", or diffusers naming) that
 * replaces a table's VAE tensors. */
#ifndef SD_FORMATS_H
#define SD_FORMATS_H

#include "io/safetensors.h"

typedef enum { FORMAT_SAFETENSORS = 1, FORMAT_CKPT, FORMAT_DIFFUSERS } model_format;

/* Opens path (file or folder) into f. Returns 0, or with "<path>: <problem>" in err: -1 cannot be read,
 * -2 not a readable model format. */
int formats_open(st_file *f, const char *path, model_format *format, char *err, size_t errlen);

/* "safetensors", "PyTorch checkpoint (.ckpt, read without executing it)", "diffusers folder" */
const char *formats_describe(model_format format);

/* Replaces every first_stage_model.* tensor of f by the standalone VAE at path (.safetensors or .ckpt).
 * Returns 0, or -1 with err set (the table is then unchanged). */
int formats_replace_vae(st_file *f, const char *path, char *err, size_t errlen);

#endif
