/* model.c - see model.h. */
#include "model/model.h"

#include <string.h>

sd_status model_open(sd_model *m, const char *path, const char *vae_path, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    sd_status st = store_open(&m->store, path, vae_path, err, errlen);
    if (st == SD_OK && (st = desc_read(&m->d, &m->store, err, errlen)) != SD_OK) store_close(&m->store);
    return st;
}

void model_close(sd_model *m) {
    store_close(&m->store);
    memset(m, 0, sizeof *m);
}
