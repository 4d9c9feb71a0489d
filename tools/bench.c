/* bench.c - speed and memory of `sd` on a checkpoint (made with sd-genmodel for SD 1.5 shapes):
 * the machine's sgemm peak, load time, text-encoder time per prompt, median guided UNet step,
 * VAE decode, whole image, peak RSS, and GFLOP/s per stage against models/flops.json.
 *
 *   sd-bench -m MODEL [-W 512] [-H 512] [--steps 20] [--runs 1] [-t THREADS] [--lora FILE[:MULT]]... [--vae-tiling] [--low-memory] [--taesd FILE]
 */
#include "blas_env.h"
#include "kernels.h"
#include "model.h"
#include "sd.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* FLOPs of SD 1.5 stages at 512x512 (models/flops.json, PyTorch's FLOP counter). */
#define FLOPS_UNET_STEP_512 1606546882560.0
#define FLOPS_VAE_DECODE_512 2514518933504.0
#define FLOPS_TEXT_77 13298503680.0
#define SD15_UNET_PARAMS 859520964 /* models/sd15_manifest.json */

/* Whether the checkpoint has SD 1.5's shapes, so that flops.json applies to it. */
static int is_sd15(const char *path) {
    sd_model m;
    char err[256];
    if (model_open(&m, path, err, sizeof err) != 0) return 0;
    int yes = model_param_count(&m, UNET_PREFIX) == SD15_UNET_PARAMS;
    model_close(&m);
    return yes;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static double median(double *v, int n) { qsort(v, (size_t)n, sizeof *v, cmp); return v[n / 2]; }

static double sgemm_peak(void) {
    const int n = 2048;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    double best = 0;
    for (int r = 0; r < 4; r++) {
        double t0 = now_s();
        matmul(a, b, c, n, n, n, 1.0f, 0.0f); /* the same threaded GEMM path the networks use */
        double g = 2.0 * n * n * n / (now_s() - t0) / 1e9;
        if (r > 0 && g > best) best = g; /* first run warms up */
    }
    free(a); free(b); free(c);
    return best;
}

int main(int argc, char **argv) {
    blas_prefer_avx512(argv);
    const char *model = NULL;
    int width = 512, height = 512, steps = 20, runs = 1, threads = 0, n_loras = 0;
    sd_lora loras[8];
    char lora_paths[8][1024];
    int vae_tiling = 0, low_memory = 0;
    const char *taesd = NULL;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--vae-tiling")) { vae_tiling = 1; i--; continue; }
        if (!strcmp(argv[i], "--low-memory")) { low_memory = 1; i--; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "sd-bench: error: option '%s' needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "-m")) model = argv[i + 1];
        else if (!strcmp(argv[i], "-W")) width = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-H")) height = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--taesd")) taesd = argv[i + 1];
        else if (!strcmp(argv[i], "--lora") && n_loras < 8) { /* FILE[:MULT] */
            snprintf(lora_paths[n_loras], sizeof lora_paths[n_loras], "%s", argv[i + 1]);
            char *colon = strrchr(lora_paths[n_loras], ':');
            float mult = colon && !strchr(colon, '/') ? (float)atof(colon + 1) : 1.0f;
            if (colon && !strchr(colon, '/')) *colon = 0;
            loras[n_loras] = (sd_lora){lora_paths[n_loras], mult};
            n_loras++;
        }
        else { fprintf(stderr, "sd-bench: error: unknown option '%s'\n", argv[i]); return 2; }
    }
    if (!model || runs < 1 || runs > 50) { fprintf(stderr, "usage: sd-bench -m MODEL [-W 512] [-H 512] [--steps 20] [--runs 1] [-t N]\n"); return 2; }
    char err[SD_ERR_LEN];
    sd_ctx *ctx = NULL;
    double t0 = now_s();
    sd_load_params lp;
    sd_load_params_default(&lp);
    lp.model_path = model;
    lp.taesd_path = taesd;
    lp.n_threads = threads;
    lp.loras = loras;
    lp.n_loras = n_loras;
    lp.low_memory = low_memory;
    lp.log = stderr;
    sd_status st = sd_load_with(&ctx, &lp, err);
    double load_s = now_s() - t0;
    if (st != SD_OK) { fprintf(stderr, "sd-bench: error: %s\n", err); return st == SD_ERR_NOMEM || st == SD_ERR_RUNTIME ? 1 : 2; }
    printf("sgemm 2048^3 peak:      %.1f GFLOP/s (OpenBLAS %s kernels, %d threads)\n", sgemm_peak(), openblas_get_corename(),
           kernels_threads());
    printf("load:                   %.3f s%s\n", load_s, n_loras ? " (LoRAs merged)" : "");
    double text[50], step[50], decode[50], total[50];
    size_t rss = 0;
    for (int r = 0; r < runs; r++) {
        sd_gen_params p;
        sd_gen_params_default(&p);
        p.prompt = "a photograph of an astronaut riding a horse";
        p.width = width;
        p.height = height;
        p.steps = steps;
        p.seed = 42 + (uint64_t)r;
        p.vae_tiling = vae_tiling;
        sd_image img;
        t0 = now_s();
        st = sd_generate(ctx, &p, &img, err);
        total[r] = now_s() - t0;
        if (st != SD_OK) { fprintf(stderr, "sd-bench: error: %s\n", err); return st == SD_ERR_NOMEM || st == SD_ERR_RUNTIME ? 1 : 2; }
        sd_image_free(&img);
        sd_timings t;
        sd_get_timings(ctx, &t);
        text[r] = t.text_s / 2; /* two prompts: negative and positive */
        step[r] = t.step_median_s;
        decode[r] = t.decode_s;
        rss = t.peak_rss_bytes;
        fprintf(stderr, "run %d: text %.3f s, step %.3f s, decode %.3f s, total %.1f s\n", r + 1, text[r], step[r], decode[r], total[r]);
    }
    double scale = (double)width * height / (512.0 * 512.0);
    double mt = median(text, runs), ms = median(step, runs), md = median(decode, runs), mtot = median(total, runs);
    if (is_sd15(model)) {
        const char *scaled = scale == 1 ? "" : ", FLOPs scaled from 512";
        printf("text encoder / prompt:  %.3f s  (%.1f GFLOP/s)\n", mt, FLOPS_TEXT_77 / mt / 1e9);
        printf("guided UNet step:       %.3f s  (%.1f GFLOP/s%s)\n", ms, FLOPS_UNET_STEP_512 * scale / ms / 1e9, scaled);
        if (taesd) printf("TAESD decode:           %.3f s\n", md); /* flops.json counts the full VAE */
        else printf("VAE decode:             %.3f s  (%.1f GFLOP/s%s)\n", md, FLOPS_VAE_DECODE_512 * scale / md / 1e9, scaled);
    } else { /* flops.json counts SD 1.5 */
        printf("text encoder / prompt:  %.3f s\n", mt);
        printf("guided UNet step:       %.3f s\n", ms);
        printf("VAE decode:             %.3f s\n", md);
        printf("(GFLOP/s are given for SD 1.5 shapes only)\n");
    }
    printf("whole image (%d steps): %.1f s\n", steps, mtot);
    printf("peak RSS:               %.2f GB\n", (double)rss / 1e9);
    printf("(%dx%d, medians of %d run%s, %d threads)\n", width, height, runs, runs > 1 ? "s" : "", kernels_threads());
    sd_free(ctx);
    return 0;
}
