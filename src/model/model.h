/* model.h - a checkpoint: its tensor store (store.h) and what the tensors are (desc.h), opened together. */
#ifndef SD_MODEL_H
#define SD_MODEL_H

#include "model/desc.h"
#include "model/store.h"

typedef struct {
    tensor_store store; /* every tensor, weights stay in the mapping */
    model_desc d;       /* the family, its encoders, channels and defaults */
} sd_model;

/* Opens the model (any format of formats.h; vae_path: a standalone VAE replacing its own, or NULL) and reads its
 * description. Returns SD_OK, or with err set SD_ERR_IO (unreadable), SD_ERR_FORMAT (not a model format),
 * SD_ERR_MODEL (not a usable Stable Diffusion checkpoint). */
sd_status model_open(sd_model *m, const char *path, const char *vae_path, char *err, size_t errlen);
void model_close(sd_model *m);

#endif
