/* bench.c - speed and memory of `sd` on a checkpoint (made with sd-genmodel for SD 1.5 shapes):
 * the machine's sgemm peak, load time, text-encoder time per prompt, median guided UNet step,
 * VAE decode, whole image, peak RSS, and GFLOP/s per stage against models/flops.json.
 *
 *   sd-bench -m MODEL [-W 512] [-H 512] [--steps 20] [--runs 1] [-t THREADS] [--lora FILE[:MULT]]...
 *            [--vae-tiling] [--low-memory] [--taesd FILE] [--precision f32|bf16] [--turbo]
 *   sd-bench --upscale-model FILE [-W 512] [-H 512] [--runs 1] [-t THREADS]
 *       the upscale of a W x H image by an ESRGAN / Real-ESRGAN model: median time, GFLOP/s, peak RSS
 */
#include "blas_env.h"
#include "model/desc.h"
#include "nets/esrgan.h"
#include "nn/kernels.h"
#include "sd.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* FLOPs of SD 1.5 stages at 512x512 (models/flops.json, PyTorch's FLOP counter). */
#define FLOPS_UNET_STEP_512  1606546882560.0
#define FLOPS_VAE_DECODE_512 2514518933504.0
#define FLOPS_TEXT_77        13298503680.0
#define SD15_UNET_PARAMS     859520964 /* models/sd15_manifest.json */

/* Whether the checkpoint has SD 1.5's shapes, so that flops.json applies to it. */
static int is_sd15(const char *path) {
    tensor_store s;
    char err[256];
    if (store_open(&s, path, NULL, err, sizeof err) != SD_OK) return 0;
    int yes = store_param_count(&s, UNET_PREFIX) == SD15_UNET_PARAMS;
    store_close(&s);
    return yes;
}

/* The step's matrix products as they ran (after Winograd, attention included) at the sgemm peak: the time the
 * step would take if it were nothing but GEMMs at the peak. */
static void print_floor(double step_flops, double peak_gflops, double step_s) {
    const double floor_s = step_flops / (peak_gflops * 1e9);
    printf("step GEMM floor:        %.3f s  (%.3f TFLOP of products at the sgemm peak; step / floor = %.2f)\n", floor_s,
           step_flops / 1e12, step_s / floor_s);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

/* The sgemm peak on `threads` threads (< 1: all). */
static double sgemm_peak(int threads) {
    const int n = 2048;
    compute cc;
    compute_init(&cc, threads, 0, 0); /* OpenBLAS's float32 product */
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    double best = 0;
    for (int r = 0; r < 4; r++) {
        double t0 = now_s();
        matmul(&cc, a, b, c, n, n, n, 1.0f, 0.0f); /* the same threaded GEMM path the networks use */
        double g = 2.0 * n * n * n / (now_s() - t0) / 1e9;
        if (r > 0 && g > best) best = g; /* first run warms up */
    }
    free(a);
    free(b);
    free(c);
    compute_free(&cc);
    return best;
}

/* The thread count a context asked for `threads` runs with. */
static int threads_used(int threads) {
    compute cc;
    compute_init(&cc, threads, 0, 0);
    int n = cc.threads;
    compute_free(&cc);
    return n;
}

/* What one benchmark measures: the options, and the medians it found. */
typedef struct {
    const char *model, *taesd;
    int width, height, steps, runs, threads, n_loras, vae_tiling, low_memory;
    int turbo;               /* one unguided step as SD-Turbo / SDXL-Turbo run: euler_a, trailing spacing, cfg 0 */
    const char *control_net; /* a ControlNet: every step runs it on a generated control image */
    const sd_lora *loras;
} bench_opts;

typedef struct {
    double step, decode;
} bench_result;

/* Loads the model at one precision, makes `runs` images and prints each stage. Returns an exit status. */
static int bench_precision(const bench_opts *o, sd_precision precision, bench_result *res) {
    char err[SD_ERR_LEN];
    sd_ctx *ctx = NULL;
    double t0 = now_s();
    sd_load_params lp;
    sd_load_params_default(&lp);
    lp.model_path = o->model;
    lp.taesd_path = o->taesd;
    lp.n_threads = o->threads;
    lp.loras = o->loras;
    lp.n_loras = o->n_loras;
    lp.low_memory = o->low_memory;
    lp.precision = precision;
    lp.controlnet_path = o->control_net;
    lp.log = stderr;
    sd_status st = sd_load_with(&ctx, &lp, err);
    double load_s = now_s() - t0;
    if (st != SD_OK) {
        fprintf(stderr, "sd-bench: error: %s\n", err);
        return st == SD_ERR_NOMEM || st == SD_ERR_RUNTIME ? 1 : 2;
    }
    /* the peak: the best of measurements before and after every run (a noisy neighbour during one of them
     * would otherwise lower the floor and flatter the step / floor ratio) */
    double peak = sgemm_peak(o->threads);
    uint8_t *edges = calloc((size_t)3 * o->width * o->height, 1); /* a control image: a white grid on black */
    for (int y = 0; edges && y < o->height; y++)
        for (int x = 0; x < o->width; x++)
            if (x % 64 == 0 || y % 64 == 0) memset(edges + 3 * ((size_t)y * o->width + x), 255, 3);
    const sd_pixels control = {o->width, o->height, 3, edges};
    double text[50], step[50], decode[50], total[50], step_flops = 0;
    size_t rss = 0;
    int bf16 = 0;
    for (int r = 0; r < o->runs; r++) {
        sd_gen_params p;
        sd_gen_params_default(&p);
        char prompt[80]; /* one per run: the context would reuse an encoded prompt and the text encoder go untimed */
        snprintf(prompt, sizeof prompt, "a photograph of an astronaut riding a horse, take %d", r + 1);
        p.prompt = prompt;
        p.width = o->width;
        p.height = o->height;
        p.steps = o->steps;
        p.seed = 42 + (uint64_t)r;
        p.vae_tiling = o->vae_tiling;
        p.control_image = o->control_net ? &control : NULL;
        if (o->turbo) {
            p.sampler = SD_SAMPLER_EULER_A;
            p.spacing = SD_SPACING_TRAILING;
            p.cfg_scale = 0.0f;
        }
        sd_image img;
        t0 = now_s();
        st = sd_generate(ctx, &p, &img, err);
        total[r] = now_s() - t0;
        if (st != SD_OK) {
            fprintf(stderr, "sd-bench: error: %s\n", err);
            sd_free(ctx);
            free(edges);
            return st == SD_ERR_NOMEM || st == SD_ERR_RUNTIME ? 1 : 2;
        }
        sd_image_free(&img);
        sd_timings t;
        sd_get_timings(ctx, &t);
        text[r] = t.text_s / (p.cfg_scale > 1.0f ? 2 : 1); /* guided: two prompts, negative and positive */
        step[r] = t.step_median_s;
        decode[r] = t.decode_s;
        rss = t.peak_rss_bytes;
        step_flops = t.step_gemm_flops;
        bf16 = t.bf16;
        fprintf(stderr, "run %d: text %.3f s, step %.3f s, decode %.3f s, total %.1f s\n", r + 1, text[r], step[r],
                decode[r], total[r]);
        const double again = sgemm_peak(o->threads);
        if (again > peak) peak = again;
    }
    printf("sgemm 2048^3 peak:      %.1f GFLOP/s (OpenBLAS %s kernels, %d threads; best of %d measurements around the "
           "runs)\n",
           peak, openblas_get_corename(), threads_used(o->threads), o->runs + 1);
    printf("load:                   %.3f s%s\n", load_s, o->n_loras ? " (LoRAs merged)" : "");
    double scale = (double)o->width * o->height / (512.0 * 512.0);
    double mt = median(text, o->runs), ms = median(step, o->runs), md = median(decode, o->runs),
           mtot = median(total, o->runs);
    if (is_sd15(o->model)) {
        const char *scaled = scale == 1 ? "" : ", FLOPs scaled from 512";
        printf("text encoder / prompt:  %.3f s  (%.1f GFLOP/s)\n", mt, FLOPS_TEXT_77 / mt / 1e9);
        if (o->turbo) /* flops.json counts the guided step */
            printf("unguided UNet step:     %.3f s\n", ms);
        else
            printf("guided UNet step:       %.3f s  (%.1f GFLOP/s%s)\n", ms, FLOPS_UNET_STEP_512 * scale / ms / 1e9,
                   scaled);
        print_floor(step_flops, peak, ms);
        if (o->taesd)
            printf("TAESD decode:           %.3f s\n", md); /* flops.json counts the full VAE */
        else
            printf("VAE decode:             %.3f s  (%.1f GFLOP/s%s)\n", md, FLOPS_VAE_DECODE_512 * scale / md / 1e9,
                   scaled);
    } else { /* flops.json counts SD 1.5 */
        printf("text encoder / prompt:  %.3f s\n", mt);
        printf("%s UNet step:     %s%.3f s\n", o->turbo ? "unguided" : "guided", o->turbo ? "" : "  ", ms);
        print_floor(step_flops, peak, ms);
        printf("VAE decode:             %.3f s\n", md);
        printf("(GFLOP/s are given for SD 1.5 shapes only)\n");
    }
    printf("whole image (%d steps): %.1f s\n", o->steps, mtot);
    printf("peak RSS:               %.2f GB\n", (double)rss / 1e9);
    printf("(%dx%d, medians of %d run%s, %d threads, %s products)\n", o->width, o->height, o->runs,
           o->runs > 1 ? "s" : "", threads_used(o->threads), bf16 ? "bfloat16" : "float32");
    sd_free(ctx);
    free(edges);
    res->step = ms;
    res->decode = md;
    return 0;
}

/* The process's peak resident memory in bytes (as the pipeline's sd_timings.peak_rss_bytes: getrusage). */
static double peak_rss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024;
}

/* FLOPs of an RRDBNet on an H x W image (2 per multiply-add; 3x3 convolutions; the body at the unshuffled size). */
static double esrgan_flops(const esrgan *e, int H, int W) {
    const double conv = 2.0 * 9, px = (double)H * W / (e->unshuffle * e->unshuffle), nf = e->nf, gc = e->gc;
    double rdb = conv * (nf + 4 * gc) * nf;
    for (int m = 0; m < 4; m++) rdb += conv * (nf + m * gc) * gc;
    const double body = conv * 3 * e->unshuffle * e->unshuffle * nf + e->nb * 3 * rdb + conv * nf * nf;
    return px * (body + conv * nf * nf * (4 + 16 + 16) + 16 * conv * nf * 3);
}

/* sd-bench --upscale-model: a W x H image (a smooth gradient with a fine pattern) upscaled `runs` times. */
static int bench_upscale(const char *path, int W, int H, int runs, int threads) {
    char err[SD_ERR_LEN];
    double t0 = now_s();
    sd_upscaler *u = NULL;
    esrgan e; /* its shapes, for the FLOPs */
    if (sd_upscaler_load(&u, path, threads, err) != SD_OK || esrgan_load(&e, path, err, sizeof err) != SD_OK) {
        fprintf(stderr, "sd-bench: error: %s\n", err);
        sd_upscaler_free(u);
        return 2;
    }
    const double load_s = now_s() - t0, flops = esrgan_flops(&e, H, W), peak = sgemm_peak(threads);
    uint8_t *rgb = malloc((size_t)3 * W * H); /* [H, W, 3] */
    for (int y = 0; rgb && y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                rgb[3 * ((size_t)y * W + x) + c] = (uint8_t)((x * 255 / W + y * (c + 1) + (x ^ y) % 7) & 255);
    const sd_pixels in = {W, H, 3, rgb};
    double t[50];
    sd_status st = rgb ? SD_OK : SD_ERR_NOMEM;
    for (int r = 0; r < runs && st == SD_OK; r++) {
        sd_image out;
        t0 = now_s();
        st = sd_upscale(u, &in, NULL, NULL, &out, err);
        t[r] = now_s() - t0;
        sd_image_free(&out);
        fprintf(stderr, "run %d: %.3f s\n", r + 1, t[r]);
    }
    if (st == SD_OK) {
        const double m = median(t, runs);
        printf("sgemm 2048^3 peak:      %.1f GFLOP/s (OpenBLAS %s kernels, %d threads)\n", peak,
               openblas_get_corename(), threads_used(threads));
        printf("upscaler:               %s, nf %d, nb %d, gc %d, x%d (%s names)\n", path, e.nf, e.nb, e.gc, e.scale,
               e.naming);
        printf("load:                   %.3f s\n", load_s);
        printf("upscale %dx%d -> %dx%d: %.3f s  (%.1f GFLOP/s, %.2f TFLOP without the tiles' overlap)\n", W, H,
               W * e.scale, H * e.scale, m, flops / m / 1e9, flops / 1e12);
        printf("peak RSS:               %.2f GB\n", peak_rss() / 1e9);
        printf("(median of %d run%s, tiles of %d pixels with %d of context)\n", runs, runs > 1 ? "s" : "",
               SD_UPSCALE_TILE, SD_UPSCALE_PAD);
    } else
        fprintf(stderr, "sd-bench: error: %s\n", err);
    free(rgb);
    esrgan_free(&e);
    sd_upscaler_free(u);
    return st == SD_OK ? 0 : 1;
}

static void usage(FILE *f) {
    fprintf(
        f, "usage: sd-bench -m MODEL [-W 512] [-H 512] [--steps 20] [--runs 1] [-t N] [--precision f32|bf16|f32,bf16]\n"
           "                [--lora FILE[:MULT]] [--taesd FILE] [--vae-tiling] [--low-memory] [--turbo]\n"
           "                [--control-net FILE]\n"
           "       sd-bench --upscale-model FILE [-W 512] [-H 512] [--runs 1] [-t N]\n"
           "  --turbo: one unguided step as SD-Turbo / SDXL-Turbo run (euler_a, trailing spacing, cfg 0)\n");
}

int main(int argc, char **argv) {
    blas_prefer_avx512(argv);
    bench_opts o = {.width = 512, .height = 512, .steps = 20, .runs = 1};
    sd_lora loras[8];
    char lora_paths[8][1024];
    sd_precision precisions[2] = {SD_PRECISION_F32};
    int n_precisions = 1;
    const char *upscale_model = NULL;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--vae-tiling")) {
            o.vae_tiling = 1;
            i--;
            continue;
        }
        if (!strcmp(argv[i], "--low-memory")) {
            o.low_memory = 1;
            i--;
            continue;
        }
        if (!strcmp(argv[i], "--turbo")) {
            o.turbo = 1;
            o.steps = 1;
            i--;
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sd-bench: error: option '%s' needs a value\n", argv[i]);
            return 2;
        }
        const char *v = argv[i + 1];
        if (!strcmp(argv[i], "-m"))
            o.model = v;
        else if (!strcmp(argv[i], "-W"))
            o.width = atoi(v);
        else if (!strcmp(argv[i], "-H"))
            o.height = atoi(v);
        else if (!strcmp(argv[i], "--steps"))
            o.steps = atoi(v);
        else if (!strcmp(argv[i], "--runs"))
            o.runs = atoi(v);
        else if (!strcmp(argv[i], "-t"))
            o.threads = atoi(v);
        else if (!strcmp(argv[i], "--taesd"))
            o.taesd = v;
        else if (!strcmp(argv[i], "--control-net"))
            o.control_net = v;
        else if (!strcmp(argv[i], "--upscale-model"))
            upscale_model = v;
        else if (!strcmp(argv[i], "--precision")) { /* f32, bf16, or f32,bf16: both, one after the other, compared */
            if (!strcmp(v, "f32") || !strcmp(v, "bf16")) {
                precisions[0] = v[0] == 'b' ? SD_PRECISION_BF16 : SD_PRECISION_F32;
                n_precisions = 1;
            } else if (!strcmp(v, "f32,bf16")) {
                precisions[0] = SD_PRECISION_F32;
                precisions[1] = SD_PRECISION_BF16;
                n_precisions = 2;
            } else {
                fprintf(stderr, "sd-bench: error: --precision: '%s' is not f32, bf16 or f32,bf16\n", v);
                return 2;
            }
        } else if (!strcmp(argv[i], "--lora") && o.n_loras < 8) { /* FILE[:MULT] */
            char *path = lora_paths[o.n_loras];
            snprintf(path, sizeof lora_paths[0], "%s", v);
            char *colon = strrchr(path, ':');
            float mult = colon && !strchr(colon, '/') ? (float)atof(colon + 1) : 1.0f;
            if (colon && !strchr(colon, '/')) *colon = 0;
            loras[o.n_loras++] = (sd_lora){path, mult};
        } else {
            fprintf(stderr, "sd-bench: error: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    o.loras = loras;
    if (upscale_model && o.runs >= 1 && o.runs <= 50 && o.width > 0 && o.height > 0)
        return bench_upscale(upscale_model, o.width, o.height, o.runs, o.threads);
    if (!o.model || o.runs < 1 || o.runs > 50) {
        usage(stderr);
        return 2;
    }
    bench_result r[2];
    for (int k = 0; k < n_precisions; k++) {
        if (n_precisions > 1) printf("== %s ==\n", precisions[k] == SD_PRECISION_BF16 ? "bf16" : "f32");
        int rc = bench_precision(&o, precisions[k], &r[k]);
        if (rc) return rc;
    }
    if (n_precisions == 2)
        printf("bf16 / f32:             step %.2f, decode %.2f\n", r[1].step / r[0].step, r[1].decode / r[0].decode);
    return 0;
}
