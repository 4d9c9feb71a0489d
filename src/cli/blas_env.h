/* blas_env.h - picks OpenBLAS's fast kernels on CPUs it does not know.
 *
 * Debian's OpenBLAS 0.3.21 detects newer AVX-512 CPUs (e.g. AMD Zen 5) as Haswell and runs its
 * AVX2 kernels (about 210 GFLOP/s on 2 cores here) although its SkylakeX kernels run there
 * (about 390). The core type is read once when the library loads, so a program that wants it sets
 * OPENBLAS_CORETYPE and re-executes itself before doing anything else. A value the user set is kept. */
#ifndef SD_BLAS_ENV_H
#define SD_BLAS_ENV_H

#include <stdlib.h>
#include <unistd.h>

static inline void blas_prefer_avx512(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("SD_NO_REEXEC")) return;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
        return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then carry on with the default kernels */
#else
    (void)argv;
#endif
}

#endif
