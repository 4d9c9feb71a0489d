/* fuzz_ckpt.c - libFuzzer harness for the .ckpt reader (zip directory + restricted pickle machine): any input
 * is refused or gives a table whose tensors lie inside the input. Build with -DSD_FUZZ=ON (clang) or replay a
 * corpus with the gcc-built fuzz_ckpt_replay. */
#include "io/ckpt.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    char err[512];
    memset(&f, 0, sizeof f);
    if (ckpt_parse(&f, data, size, "fuzz", err, sizeof err) == 0) {
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            const uint8_t *p = t->data;
            if (st_find(&f, t->name) != t) __builtin_trap();
            if (t->nbytes && (p < data || p + t->nbytes > data + size)) __builtin_trap(); /* never outside the input */
        }
    }
    st_close(&f);
    return 0;
}
