/* fuzz_safetensors.c - libFuzzer harness for the safetensors reader and the weight lookups on
 * what it accepts. Build with -DSD_FUZZ=ON (clang) or replay a corpus with the gcc-built
 * fuzz_safetensors_replay. */
#include "model/model.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    char err[512];
    memset(&f, 0, sizeof f);
    if (st_parse(&f, data, size, "fuzz", err, sizeof err) == 0) {
        volatile double sum = 0;
        (void)sum;
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            if (st_find(&f, t->name) != t) __builtin_trap();
            if (t->nbytes && st_dtype_is_float(t->dtype)) { /* touch the first and last byte */
                sum += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
            }
        }
        (void)st_meta_get(&f, "sd.prediction");
    }
    st_close(&f);
    return 0;
}
