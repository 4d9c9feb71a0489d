/* main.c - the `sd` command line: parses arguments, calls the library, writes the files.
 * Option names follow stable-diffusion.cpp. Exit status: 0 success, 1 runtime failure, 2 bad input. */
#include "output.h"
#include "blas_env.h"
#include "sd.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_RUNTIME 1
#define EXIT_BAD_INPUT 2
#define MAX_LORAS 32

typedef struct {
    const char *model, *output, *latent_out, *init_path, *mask_path, *lora_dir, *vae, *taesd;
    sd_gen_params gen;
    sd_pixels init, mask;
    sd_lora loras[MAX_LORAS]; /* --lora files, then the prompt's <lora:NAME:MULT> tags */
    char *lora_paths[MAX_LORAS]; /* [n_loras] the paths, malloc'd */
    int n_loras;
    int seed_given, batch, threads, verbose, info;
} cli_args;

static volatile sig_atomic_t g_cancel = 0;

static void on_signal(int sig) { (void)sig; g_cancel = 1; }
static int cancel_requested(void *user) { (void)user; return g_cancel != 0; }

/* Exit status for a library status: 0 ok, 2 bad input, 1 otherwise. */
static int exit_code(sd_status s) {
    switch (s) {
    case SD_OK: return 0;
    case SD_ERR_ARG: case SD_ERR_IO: case SD_ERR_FORMAT: case SD_ERR_MODEL: return EXIT_BAD_INPUT;
    default: return EXIT_RUNTIME;
    }
}

static int error(int code, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "sd: error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

/* "lms, ddpm, ..." from the sampler table. */
static const char *sampler_list(void) {
    static char list[256];
    if (!list[0])
        for (int i = 0; i < SD_SAMPLER_COUNT; i++) {
            strcat(list, i ? ", " : "");
            strcat(list, sd_sampler_name((sd_sampler)i));
        }
    return list;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: sd -m MODEL.safetensors -p PROMPT [options]\n"
            "       sd --info -m MODEL.safetensors\n"
            "\n"
            "Generates an image from a text prompt (and optionally an init image and a mask) with a Stable\n"
            "Diffusion 1.x or 2.x checkpoint, on the CPU.\n"
            "\n"
            "options:\n"
            "  -m, --model PATH           .safetensors or .ckpt checkpoint, or diffusers folder [required]\n"
            "      --vae FILE             standalone VAE (.safetensors / .ckpt) replacing the model's\n"
            "      --taesd FILE           decode (and encode) with TAESD, the tiny autoencoder, instead of the VAE\n"
            "      --vae-tiling           decode/encode in 512-pixel tiles (diffusers' enable_tiling); automatic\n"
            "                             when the untiled VAE would not fit in memory\n"
            "  -p, --prompt TEXT          what to draw (UTF-8)                                  [required]\n"
            "  -n, --negative-prompt TEXT what to steer away from                               [default: \"\"]\n"
            "  -o, --output FILE          PNG to write; with -b N, FILE, FILE_1, FILE_2, ...    [default: output.png]\n"
            "  -W, --width N              image width, multiple of 8 in 64..4096                [default: the model's]\n"
            "  -H, --height N             image height, multiple of 8 in 64..4096               [default: the model's]\n"
            "  -i, --init-img FILE        img2img: start from this PNG/JPEG/BMP (size: its own, rounded down to 8)\n"
            "      --mask FILE            inpainting: white = repaint, black = keep (needs -i)\n"
            "      --strength X           img2img/inpainting: how much to change, 0 < X <= 1    [default: 0.75]\n"
            "      --steps N              sampling steps, 1..1000                               [default: 20]\n"
            "      --cfg-scale X          classifier-free guidance scale, >= 0 (<= 1: off)      [default: 7.5]\n"
            "  -s, --seed N               random seed; -1 = random (printed)                    [default: random]\n"
            "      --sampling-method NAME %s\n"
            "                             heun evaluates the UNet twice per step after the first, pndm (PLMS)\n"
            "                             adds one warm-up evaluation; the progress bar counts evaluations  [default: lms]\n"
            "      --scheduler NAME       default | karras (sigma samplers and dpm++2m)        [default: default]\n"
            "      --timestep-spacing S   leading | linspace | trailing                         [default: the sampler's]\n"
            "      --eta X                DDIM eta (0 = deterministic)                          [default: 0]\n"
            "      --rng NAME             cpu (torch CPU generator) | cuda (torch CUDA Philox)  [default: cpu]\n"
            "      --prediction NAME      epsilon | v_prediction                                [default: from the model]\n"
            "      --clip-skip N          use the text encoder's hidden state N-1 layers early  [default: 1]\n"
            "  -b, --batch-count N        images to make, seeds seed, seed+1, ...               [default: 1]\n"
            "  -t, --threads N            CPU threads (0 = all cores)                           [default: 0]\n"
            "      --latent-out FILE      also write the final latent as safetensors            [default: none]\n"
            "      --lora FILE[:MULT]     merge a LoRA (kohya or PEFT naming) at load; repeatable [default MULT: 1]\n"
            "      --lora-model-dir DIR   where the prompt's <lora:NAME:MULT> tags find NAME.safetensors [default: .]\n"
            "  -v, --verbose              per-stage timings and peak memory on stderr\n"
            "      --info                 describe the model file and exit\n"
            "  -h, --help                 show this help\n"
            "      --version              print the version\n"
            "\n"
            "exit status: 0 success, 1 runtime failure (out of memory, interrupted), 2 bad input or arguments.\n"
            "Errors are one line on stderr starting with 'sd: error:'.\n",
            sampler_list());
}

/* ---------------- strict number parsing ---------------- */

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return error(EXIT_BAD_INPUT, "%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi) return error(EXIT_BAD_INPUT, "%s: %ld is outside %ld..%ld", opt, v, lo, hi);
    *out = v;
    return 0;
}

/* Image sides: a multiple of 8 in 64..4096 (memory is checked later, per model). */
static int parse_size(const char *opt, const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 64 || v > 4096 || v % 8)
        return error(EXIT_BAD_INPUT, "%s: '%s' is not a multiple of 8 in 64..4096", opt, s);
    *out = v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return error(EXIT_BAD_INPUT, "%s: '%s' is not a number", opt, s);
    *out = v;
    return 0;
}

static int parse_float(const char *opt, const char *s, float *out) {
    double v;
    int rc = parse_double(opt, s, &v);
    if (!rc) *out = (float)v;
    return rc;
}

static int parse_seed(const char *s, cli_args *a) {
    char *end;
    errno = 0;
    if (strcmp(s, "-1") == 0) return 0; /* random */
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') return error(EXIT_BAD_INPUT, "--seed: '%s' is not a non-negative integer (or -1)", s);
    a->gen.seed = v;
    a->seed_given = 1;
    return 0;
}

static int parse_choice(const char *opt, const char *s, const char *const *names, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) { *out = i; return 0; }
    char list[256] = "";
    for (int i = 0; i < n; i++) { strcat(list, i ? ", " : ""); strcat(list, names[i]); }
    return error(EXIT_BAD_INPUT, "%s: unknown value '%s' (one of: %s)", opt, s, list);
}

/* ---------------- LoRAs ---------------- */

static int add_lora(cli_args *a, const char *what, const char *path, size_t len, double multiplier) {
    if (a->n_loras == MAX_LORAS) return error(EXIT_BAD_INPUT, "%s: more than %d LoRAs", what, MAX_LORAS);
    char *p = malloc(len + 1);
    if (!p) return error(EXIT_RUNTIME, "out of memory");
    memcpy(p, path, len);
    p[len] = 0;
    a->lora_paths[a->n_loras] = p;
    a->loras[a->n_loras++] = (sd_lora){p, (float)multiplier};
    return 0;
}

/* --lora FILE[:MULT]: a ':' after the last '/' starts the multiplier. */
static int parse_lora(cli_args *a, const char *val) {
    const char *colon = strrchr(val, ':'), *slash = strrchr(val, '/');
    size_t len = strlen(val);
    double mult = 1.0;
    if (colon && (!slash || colon > slash)) {
        char *end;
        errno = 0;
        mult = strtod(colon + 1, &end);
        if (errno || end == colon + 1 || *end || !isfinite(mult))
            return error(EXIT_BAD_INPUT, "--lora: '%s': '%s' is not a multiplier (use FILE:MULT, e.g. style.safetensors:0.8)", val, colon + 1);
        len = (size_t)(colon - val);
    }
    if (len == 0) return error(EXIT_BAD_INPUT, "--lora: '%s' names no file", val);
    return add_lora(a, "--lora", val, len, mult);
}

/* The prompt's <lora:NAME:MULT> tags: NAME.safetensors in --lora-model-dir (default: the current directory). */
static int add_prompt_loras(cli_args *a) {
    sd_lora_tag tags[MAX_LORAS];
    char err[SD_ERR_LEN];
    int n = sd_prompt_lora_tags(a->gen.prompt, tags, MAX_LORAS, err);
    if (n < 0) return error(EXIT_BAD_INPUT, "%s", err);
    if (n == 0) return 0;
    const char *dir = a->lora_dir ? a->lora_dir : ".";
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return error(EXIT_BAD_INPUT, "--lora-model-dir: '%s' is not a directory (the prompt names <lora:%s>)", dir, tags[0].name);
    for (int i = 0; i < n && i < MAX_LORAS; i++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, tags[i].name);
        if (access(path, R_OK) != 0)
            return error(EXIT_BAD_INPUT, "prompt: <lora:%s>: no readable '%s.safetensors' in '%s' (--lora-model-dir)", tags[i].name,
                         tags[i].name, dir);
        int rc = add_lora(a, "prompt", path, strlen(path), tags[i].multiplier);
        if (rc) return rc;
    }
    return 0;
}

/* ---------------- arguments ---------------- */

static int parse_option(cli_args *a, const char *opt, const char *val) {
    long v;
    int choice, rc = 0;
    static const char *const schedules[] = {"default", "karras"};
    static const char *const spacings[] = {"default", "leading", "linspace", "trailing"};
    static const char *const rngs[] = {"cpu", "cuda"};
    static const char *const predictions[] = {"default", "epsilon", "v_prediction"};
    if (!strcmp(opt, "-m") || !strcmp(opt, "--model")) a->model = val;
    else if (!strcmp(opt, "-p") || !strcmp(opt, "--prompt")) a->gen.prompt = val;
    else if (!strcmp(opt, "-n") || !strcmp(opt, "--negative-prompt")) a->gen.negative_prompt = val;
    else if (!strcmp(opt, "-o") || !strcmp(opt, "--output")) a->output = val;
    else if (!strcmp(opt, "--latent-out")) a->latent_out = val;
    else if (!strcmp(opt, "--lora")) rc = parse_lora(a, val);
    else if (!strcmp(opt, "--lora-model-dir")) a->lora_dir = val;
    else if (!strcmp(opt, "--vae")) a->vae = val;
    else if (!strcmp(opt, "--taesd")) a->taesd = val;
    else if (!strcmp(opt, "-i") || !strcmp(opt, "--init-img")) a->init_path = val;
    else if (!strcmp(opt, "--mask")) a->mask_path = val;
    else if (!strcmp(opt, "--strength")) {
        double s; /* a double, as diffusers multiplies steps · strength in double precision */
        if (!(rc = parse_double(opt, val, &s)) && !(s > 0 && s <= 1)) rc = error(EXIT_BAD_INPUT, "--strength: %s is outside (0, 1]", val);
        else if (!rc) a->gen.strength = s;
    }
    else if (!strcmp(opt, "-W") || !strcmp(opt, "--width")) { if (!(rc = parse_size(opt, val, &v))) a->gen.width = (int)v; }
    else if (!strcmp(opt, "-H") || !strcmp(opt, "--height")) { if (!(rc = parse_size(opt, val, &v))) a->gen.height = (int)v; }
    else if (!strcmp(opt, "--clip-skip")) { if (!(rc = parse_int(opt, val, 1, 100, &v))) a->gen.clip_skip = (int)v; }
    else if (!strcmp(opt, "--steps")) { if (!(rc = parse_int(opt, val, 1, 1000, &v))) a->gen.steps = (int)v; }
    else if (!strcmp(opt, "-b") || !strcmp(opt, "--batch-count")) { if (!(rc = parse_int(opt, val, 1, 10000, &v))) a->batch = (int)v; }
    else if (!strcmp(opt, "-t") || !strcmp(opt, "--threads")) { if (!(rc = parse_int(opt, val, 0, 1024, &v))) a->threads = (int)v; }
    else if (!strcmp(opt, "--cfg-scale")) {
        if (!(rc = parse_float(opt, val, &a->gen.cfg_scale)) && a->gen.cfg_scale < 0)
            rc = error(EXIT_BAD_INPUT, "--cfg-scale: %s must be >= 0", val);
    } else if (!strcmp(opt, "--eta")) {
        if (!(rc = parse_float(opt, val, &a->gen.eta)) && a->gen.eta < 0) rc = error(EXIT_BAD_INPUT, "--eta: %s must be >= 0", val);
    } else if (!strcmp(opt, "-s") || !strcmp(opt, "--seed")) rc = parse_seed(val, a);
    else if (!strcmp(opt, "--sampling-method")) {
        int s = sd_sampler_from_name(val);
        if (s < 0) rc = error(EXIT_BAD_INPUT, "--sampling-method: unknown sampler '%s' (%s)", val, sampler_list());
        else a->gen.sampler = (sd_sampler)s;
    } else if (!strcmp(opt, "--scheduler")) { if (!(rc = parse_choice(opt, val, schedules, 2, &choice))) a->gen.schedule = (sd_schedule)choice; }
    else if (!strcmp(opt, "--timestep-spacing")) { if (!(rc = parse_choice(opt, val, spacings + 1, 3, &choice))) a->gen.spacing = (sd_spacing)(choice + 1); }
    else if (!strcmp(opt, "--rng")) { if (!(rc = parse_choice(opt, val, rngs, 2, &choice))) a->gen.rng = (sd_rng_kind)choice; }
    else if (!strcmp(opt, "--prediction")) { if (!(rc = parse_choice(opt, val, predictions + 1, 2, &choice))) a->gen.prediction = (sd_prediction)(choice + 1); }
    else rc = error(EXIT_BAD_INPUT, "unknown option '%s' (see sd --help)", opt);
    return rc;
}

/* Options that take a value (every other known option is a flag). */
static int takes_value(const char *opt) {
    static const char *const names[] = {"-m", "--model", "-p", "--prompt", "-n", "--negative-prompt", "-o", "--output",
                                        "--latent-out", "-i", "--init-img", "--mask", "--strength", "-W", "--width",
                                        "-H", "--height", "--steps", "-b", "--batch-count", "-t", "--threads",
                                        "--cfg-scale", "--eta", "-s", "--seed", "--sampling-method", "--scheduler",
                                        "--timestep-spacing", "--rng", "--prediction", "--clip-skip", "--lora",
                                        "--lora-model-dir", "--vae", "--taesd"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) if (!strcmp(opt, names[i])) return 1;
    return 0;
}

/* Reads an input image named by an option; returns 0 or an exit status. */
static int read_pixels(const char *opt, const char *path, sd_pixels *out) {
    char err[SD_ERR_LEN];
    sd_status st = sd_pixels_read(path, out, err);
    return st == SD_OK ? 0 : error(EXIT_BAD_INPUT, "%s: %s", opt, err);
}

/* Options the chosen sampler does not use: one warning line each; they are not recorded either. */
static void warn_ignored_options(const sd_gen_params *g) {
    const sd_sampler_info *si = sd_sampler_get_info(g->sampler);
    if (g->eta > 0 && !si->uses_eta) fprintf(stderr, "sd: warning: --eta is ignored by %s (only ddim uses it)\n", si->name);
    if (g->schedule == SD_SCHEDULE_KARRAS && !si->uses_karras)
        fprintf(stderr, "sd: warning: --scheduler karras is ignored by %s (it has no sigma schedule)\n", si->name);
}

/* Returns -1 to continue, or an exit status. */
static int parse_args(int argc, char **argv, cli_args *a) {
    memset(a, 0, sizeof *a);
    sd_gen_params_default(&a->gen);
    a->gen.prompt = NULL;
    a->output = "output.png";
    a->batch = 1;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (opt[0] != '-' || !opt[1]) return error(EXIT_BAD_INPUT, "unexpected argument '%s' (see sd --help)", opt);
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) { usage(stdout); return 0; }
        if (!strcmp(opt, "--version")) { printf("sd %s\n", sd_version()); return 0; }
        if (!strcmp(opt, "-v") || !strcmp(opt, "--verbose")) { a->verbose = 1; continue; }
        if (!strcmp(opt, "--info")) { a->info = 1; continue; }
        if (!strcmp(opt, "--vae-tiling")) { a->gen.vae_tiling = 1; continue; }
        char name[64];
        const char *eq = opt[1] == '-' ? strchr(opt, '=') : NULL, *val = NULL; /* --opt=value */
        if (eq && (size_t)(eq - opt) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - opt), opt);
            opt = name;
            val = eq + 1;
        }
        if (!takes_value(opt)) return error(EXIT_BAD_INPUT, "unknown option '%s' (see sd --help)", opt);
        if (!eq) {
            if (i + 1 >= argc) return error(EXIT_BAD_INPUT, "option '%s' needs a value", opt);
            val = argv[++i];
        }
        int rc = parse_option(a, opt, val);
        if (rc) return rc;
    }
    if (!a->model) return error(EXIT_BAD_INPUT, "no model given (-m FILE)");
    if (a->info) return -1;
    if (!a->gen.prompt) return error(EXIT_BAD_INPUT, "no prompt given (-p TEXT)");
    int rc = add_prompt_loras(a);
    if (rc) return rc;
    if (a->mask_path && !a->init_path) return error(EXIT_BAD_INPUT, "--mask: needs an init image (-i FILE)");
    if (a->vae && a->taesd) return error(EXIT_BAD_INPUT, "--taesd: replaces the VAE; --vae cannot be given with it");
    if (a->init_path && (rc = read_pixels("--init-img", a->init_path, &a->init))) return rc;
    if (a->mask_path && (rc = read_pixels("--mask", a->mask_path, &a->mask))) return rc;
    a->gen.init_image = a->init_path ? &a->init : NULL;
    a->gen.mask = a->mask_path ? &a->mask : NULL;
    char err[SD_ERR_LEN];
    if (sd_gen_params_check(&a->gen, err) != SD_OK) return error(EXIT_BAD_INPUT, "%s", err);
    warn_ignored_options(&a->gen);
    if (!a->seed_given) { /* random seed, printed so the image can be reproduced */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        a->gen.seed = ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid()) & 0xffffffffu;
    }
    return -1;
}

/* ---------------- outputs ---------------- */

/* "dir/name.png" -> "dir/name_<i>.png" for i > 0. */
static char *numbered_path(const char *path, int i) {
    size_t len = strlen(path) + 16;
    char *p = malloc(len);
    if (!p) return NULL;
    if (i == 0) { snprintf(p, len, "%s", path); return p; }
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : path)) snprintf(p, len, "%s_%d", path, i);
    else snprintf(p, len, "%.*s_%d%s", (int)(dot - path), path, i, dot);
    return p;
}

static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int check_output(const cli_args *a, const char *path) {
    char err[SD_ERR_LEN];
    if (same_file(path, a->model)) return error(EXIT_BAD_INPUT, "%s: is the model file; refusing to overwrite it", path);
    if (output_check_path(path, err, sizeof err) != 0) return error(EXIT_BAD_INPUT, "%s", err);
    return 0;
}

/* Every file this run will write: the PNG and (optionally) latent of each batch image. path[2b] is
 * image b's PNG, path[2b+1] its latent or NULL. Returns NULL when out of memory. */
static char **output_paths(const cli_args *a) {
    char **paths = calloc(2 * (size_t)a->batch, sizeof *paths);
    for (int b = 0; paths && b < a->batch; b++) {
        int ok = (paths[2 * b] = numbered_path(a->output, b)) != NULL;
        if (ok && a->latent_out) ok = (paths[2 * b + 1] = numbered_path(a->latent_out, b)) != NULL;
        if (!ok) { for (int i = 0; i < 2 * a->batch; i++) free(paths[i]); free(paths); paths = NULL; }
    }
    return paths;
}

/* Before any compute: every output can be written, standard output gets at most one file, and no two
 * outputs name the same file (same string, or the same existing file through a link). */
static int check_outputs(const cli_args *a) {
    if (a->batch > 1 && (!strcmp(a->output, "-") || (a->latent_out && !strcmp(a->latent_out, "-"))))
        return error(EXIT_BAD_INPUT, "-o -: standard output takes one file, not a batch of %d", a->batch);
    char **paths = output_paths(a);
    if (!paths) return error(EXIT_RUNTIME, "out of memory");
    int rc = 0, n = 2 * a->batch;
    for (int i = 0; i < n && !rc; i++) {
        if (!paths[i]) continue;
        rc = check_output(a, paths[i]);
        for (int j = i + 1; j < n && !rc; j++)
            if (paths[j] && (!strcmp(paths[i], paths[j]) || same_file(paths[i], paths[j])))
                rc = error(EXIT_BAD_INPUT, "%s: named by two outputs (%s and %s)", paths[j], i % 2 ? "--latent-out" : "-o",
                           j % 2 ? "--latent-out" : "-o");
    }
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    return rc;
}

/* AUTOMATIC1111's `parameters` text: every setting that changes the image, with its key names where it
 * has one. Options the sampler ignores (eta, Karras sigmas) and defaults are not recorded. */
static char *parameters_text(const cli_args *a, const sd_ctx *ctx, uint64_t seed, const sd_image *img) {
    const sd_gen_params *g = &a->gen;
    const sd_sampler_info *si = sd_sampler_get_info(g->sampler);
    sd_model_info mi;
    sd_get_model_info(ctx, &mi);
    const char *base = strrchr(a->model, '/') ? strrchr(a->model, '/') + 1 : a->model;
    int base_len = strrchr(base, '.') ? (int)(strrchr(base, '.') - base) : (int)strlen(base);
    size_t len = strlen(g->prompt) + strlen(g->negative_prompt) + strlen(base) + 1024;
    for (int i = 0; i < a->n_loras; i++) len += strlen(a->loras[i].path) + 32;
    if (a->vae) len += strlen(a->vae);
    if (a->taesd) len += strlen(a->taesd);
    char *t = malloc(len);
    if (!t) return NULL;
    int n = snprintf(t, len, "%s\n", g->prompt);
#define APPEND(...) n += snprintf(t + n, len - (size_t)n, __VA_ARGS__)
    if (g->negative_prompt[0]) APPEND("Negative prompt: %s\n", g->negative_prompt);
    APPEND("Steps: %d, Sampler: %s, ", g->steps, si->a1111_name);
    if (g->schedule == SD_SCHEDULE_KARRAS && si->uses_karras) APPEND("Schedule type: Karras, ");
    APPEND("CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %.*s", g->cfg_scale, (unsigned long long)seed, img->width,
           img->height, base_len, base);
    if (a->vae) { /* AUTOMATIC1111: "VAE: name.safetensors" */
        const char *v = strrchr(a->vae, '/') ? strrchr(a->vae, '/') + 1 : a->vae;
        APPEND(", VAE: %s", v);
    }
    sd_timings tm;
    sd_get_timings(ctx, &tm);
    if (tm.vae_tiled) APPEND(", VAE tiles: 512");
    if (a->taesd) APPEND(", TAESD: %s", strrchr(a->taesd, '/') ? strrchr(a->taesd, '/') + 1 : a->taesd);
    if (g->clip_skip > 1) APPEND(", Clip skip: %d", g->clip_skip);
    if (g->init_image) APPEND(", Denoising strength: %g", g->strength);
    if (g->mask) APPEND(", Mask blur: 0");
    for (int i = 0; i < a->n_loras; i++) { /* LoRA: "name: 1, other: 0.5", quoted as AUTOMATIC1111 quotes values */
        const char *p = a->loras[i].path, *name = strrchr(p, '/') ? strrchr(p, '/') + 1 : p, *dot = strrchr(name, '.');
        APPEND("%s%.*s: %g", i ? ", " : ", LoRA: \"", dot && dot != name ? (int)(dot - name) : (int)strlen(name), name,
               a->loras[i].multiplier);
        if (i == a->n_loras - 1) APPEND("\"");
    }
    if (g->eta > 0 && si->uses_eta) APPEND(", Eta DDIM: %g", g->eta);
    if (g->spacing && g->spacing != si->default_spacing) APPEND(", Timestep spacing: %s", sd_spacing_name(g->spacing));
    if (g->prediction && g->prediction != mi.prediction)
        APPEND(", Prediction: %s", g->prediction == SD_PREDICTION_V ? "v_prediction" : "epsilon");
    APPEND(", RNG: %s", g->rng == SD_RNG_CUDA ? "GPU" : "CPU");
#undef APPEND
    return t;
}

static int write_outputs(const cli_args *a, const sd_ctx *ctx, int index, uint64_t seed, const sd_image *img) {
    char err[SD_ERR_LEN];
    char *png = numbered_path(a->output, index), *text = parameters_text(a, ctx, seed, img);
    int rc = 0;
    if (!png || !text) rc = error(EXIT_RUNTIME, "out of memory");
    else if (output_write_png(png, img->rgb, img->width, img->height, "parameters", text, err, sizeof err) != 0)
        rc = error(EXIT_RUNTIME, "%s", err);
    if (!rc && a->latent_out) {
        char *lat = numbered_path(a->latent_out, index);
        int64_t shape[4] = {1, img->latent_channels, img->height / 8, img->width / 8};
        if (!lat) rc = error(EXIT_RUNTIME, "out of memory");
        else if (output_write_tensor(lat, "latent", shape, 4, img->latent, err, sizeof err) != 0) rc = error(EXIT_RUNTIME, "%s", err);
        free(lat);
    }
    if (!rc) fprintf(stderr, "sd: wrote %s (seed %llu)\n", strcmp(png, "-") ? png : "the PNG to standard output",
                     (unsigned long long)seed);
    free(png);
    free(text);
    return rc;
}

/* ---------------- progress ---------------- */

typedef struct {
    int tty, image, images; /* image i of images (1-based) */
    const char *unit;       /* "step", or "eval" where a step evaluates the UNet more than once */
    double total;           /* seconds so far in this image */
} progress_state;

/* Columns of the terminal on stderr (80 when unknown). */
static int terminal_width(void) {
    struct winsize ws;
    return ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
}

/* One line per UNet evaluation: "[image i/N ]step s/S 1.23 s/it ETA 12s", with a bar before the counts on a terminal,
 * redrawn in place and cut to the terminal's width. */
static void on_progress(const sd_progress *p, void *user) {
    progress_state *s = user;
    s->total += p->seconds;
    double per = s->total / p->step, eta = per * (p->steps - p->step);
    char image[48] = "", text[96];
    if (s->images > 1) snprintf(image, sizeof image, "image %d/%d ", s->image, s->images);
    snprintf(text, sizeof text, "%s %d/%d %.2f s/it ETA %.0fs", s->unit, p->step, p->steps, per, eta);
    if (!s->tty) { fprintf(stderr, "%s%s\n", image, text); return; }
    int cols = terminal_width() - 1, fixed = (int)(strlen(image) + strlen(text)) + 3;
    int bar = cols - fixed > 40 ? 40 : cols - fixed, done = bar > 0 ? p->step * bar / p->steps : 0;
    char line[512];
    if (bar >= 5)
        snprintf(line, sizeof line, "%s|%.*s%*s| %s", image, done, "########################################", bar - done, "", text);
    else
        snprintf(line, sizeof line, "%s%s", image, text);
    fprintf(stderr, "\r%.*s\033[K", cols > 0 ? cols : 1, line);
    if (p->step == p->steps) fputc('\n', stderr);
}

/* Samplers that evaluate the UNet more often than --steps (the table's evals_per_step and warmup_evals, Heun and
 * PNDM): said once, and the progress counts evaluations ("eval"), not steps. */
static const char *progress_unit(const sd_gen_params *g) {
    const sd_sampler_info *si = sd_sampler_get_info(g->sampler);
    if (si->evals_per_step > 1)
        fprintf(stderr, "sd: %s evaluates the UNet %d times per step after the first; progress counts evaluations\n", si->name,
                si->evals_per_step);
    if (si->warmup_evals > 0)
        fprintf(stderr, "sd: %s adds %d warm-up evaluation%s of the UNet; progress counts evaluations\n", si->name, si->warmup_evals,
                si->warmup_evals > 1 ? "s" : "");
    return si->evals_per_step > 1 || si->warmup_evals > 0 ? "eval" : "step";
}

/* ---------------- main ---------------- */

static int generate(cli_args *a, sd_ctx *ctx) {
    int rc = check_outputs(a); /* fail before any compute if an output cannot be written */
    if (rc) return rc;
    const char *texts[2] = {a->gen.prompt, a->gen.negative_prompt}, *names[2] = {"prompt", "negative prompt"};
    for (int i = 0; i < 2; i++) { /* what the prompt syntax did; a repaired one is always reported */
        int unclosed = sd_describe_prompt(ctx, texts[i], names[i], a->verbose ? stderr : NULL);
        if (unclosed > 0)
            fprintf(stderr, "sd: note: %s: %d bracket%s never closed; closed at the end, as AUTOMATIC1111 does\n", names[i],
                    unclosed, unclosed == 1 ? " was" : "s were");
    }
    progress_state ps = {isatty(2), 0, a->batch, progress_unit(&a->gen), 0};
    a->gen.progress = on_progress;
    a->gen.progress_user = &ps;
    a->gen.cancel = cancel_requested;
    uint64_t seed0 = a->gen.seed;
    for (int b = 0; b < a->batch; b++) {
        char err[SD_ERR_LEN];
        sd_image img;
        a->gen.seed = seed0 + (uint64_t)b;
        ps.total = 0;
        ps.image = b + 1;
        sd_status st = sd_generate(ctx, &a->gen, &img, err);
        if (st != SD_OK) return error(exit_code(st), "%s", err);
        sd_timings tm;
        sd_get_timings(ctx, &tm);
        if (tm.vae_tiled && !a->gen.vae_tiling)
            fprintf(stderr, "sd: note: the VAE ran in 512-pixel tiles: the untiled decoder would not fit in memory\n");
        rc = write_outputs(a, ctx, b, a->gen.seed, &img);
        sd_image_free(&img);
        if (rc) return rc;
        if (a->verbose) {
            sd_timings t;
            sd_get_timings(ctx, &t);
            fprintf(stderr, "sd: text %.3f s, sampling %.3f s (median step %.3f s), decode %.3f s, peak RSS %.1f MB\n",
                    t.text_s, t.sampling_s, t.step_median_s, t.decode_s, (double)t.peak_rss_bytes / 1e6);
        }
        if (g_cancel) return error(EXIT_RUNTIME, "interrupted");
    }
    return 0;
}

/* Loads the model and runs what the arguments ask for. */
static int run(cli_args *a) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char err[SD_ERR_LEN];
    sd_ctx *ctx = NULL;
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    sd_load_params lp;
    sd_load_params_default(&lp);
    lp.model_path = a->model;
    lp.vae_path = a->vae;
    lp.taesd_path = a->taesd;
    lp.n_threads = a->threads;
    lp.loras = a->loras;
    lp.n_loras = a->n_loras;
    lp.log = stderr;
    lp.verbose = a->verbose;
    sd_status st = sd_load_with(&ctx, &lp, err);
    if (st != SD_OK) return error(exit_code(st), "%s", err);
    if (a->verbose) fprintf(stderr, "sd: loaded %s (%.3f s cpu)\n", a->model, (double)clock() / CLOCKS_PER_SEC - t0);
    int rc = 0;
    if (a->info) sd_print_info(ctx, stdout);
    else rc = generate(a, ctx);
    sd_free(ctx);
    return rc;
}

int main(int argc, char **argv) {
    blas_prefer_avx512(argv);
    cli_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc < 0) rc = run(&a);
    sd_pixels_free(&a.init);
    sd_pixels_free(&a.mask);
    for (int i = 0; i < a.n_loras; i++) free(a.lora_paths[i]);
    return rc;
}
