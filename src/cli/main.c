/* main.c - the `sd` command line: parses the arguments into a list of jobs (jobs.c), loads the model once, runs
 * the jobs and writes their files (job_output.c), and a sweep's contact sheet (grid.c).
 * Option names follow stable-diffusion.cpp. Exit status: 0 success, 1 runtime failure, 2 bad input. */
#include "blas_env.h"
#include "cli_options.h"
#include "grid.h"
#include "job_output.h"
#include "jobs.h"
#include "output.h"
#include "upscaling.h"
#include "sd.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_RUNTIME   CLI_RUNTIME
#define EXIT_BAD_INPUT CLI_BAD_INPUT

static volatile sig_atomic_t g_cancel = 0;
static int g_stderr_tty; /* whether a progress line may be open on stderr (set before the handler is installed) */

/* SIGINT / SIGTERM: the first asks the run to stop (the library polls it within milliseconds of work) and says so;
 * a second exits at once, removing a temporary output file being written. Only async-signal-safe calls. */
static void on_signal(int sig) {
    (void)sig;
    static const char first[] = "sd: stopping… (again to quit at once)\n", second[] = "sd: quit\n";
    if (g_cancel) {
        output_discard_pending();
        (void)!write(2, second, sizeof second - 1);
        _exit(EXIT_RUNTIME);
    }
    g_cancel = 1;
    if (g_stderr_tty) (void)!write(2, "\n", 1);
    (void)!write(2, first, sizeof first - 1);
}
static int cancel_requested(void *user) {
    (void)user;
    return g_cancel != 0;
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

static const char USAGE_HEAD[] =
    "usage: sd -m MODEL.safetensors -p PROMPT [options]\n"
    "       sd -m MODEL.safetensors --prompt-file FILE [options]\n"
    "       sd -m MODEL.safetensors -p PROMPT --sweep KEY=VALUES [--sweep ...] [--grid FILE.png] [options]\n"
    "       sd --info -m MODEL.safetensors\n"
    "       sd --upscale-model ESRGAN.pth -i IN.png -o OUT.png\n";

static void usage(FILE *f) {
    fputs(USAGE_HEAD, f);
    fprintf(
        f,
        "\n"
        "Generates images from text prompts (and optionally an init image and a mask) with a Stable Diffusion\n"
        "1.x, 2.x or SDXL checkpoint, on the CPU. The model is loaded once for all the images of a run.\n"
        "\n"
        "options:\n"
        "  -m, --model PATH           .safetensors or .ckpt checkpoint, or diffusers folder [required]\n"
        "      --vae FILE             standalone VAE (.safetensors / .ckpt) replacing the model's\n"
        "      --taesd FILE           decode (and encode) with TAESD, the tiny autoencoder, instead of the VAE\n"
        "      --vae-tiling           decode/encode in 512-pixel tiles (diffusers' enable_tiling); automatic\n"
        "                             when the untiled VAE would not fit in memory\n"
        "      --low-memory           keep one layer's weights resident at a time and run the VAE in 256-pixel\n"
        "                             tiles: a small peak memory, somewhat slower\n"
        "      --precision f32|bf16   arithmetic of the matrix products; bf16 (AVX512-BF16 CPUs) is faster and\n"
        "                             rounds their inputs to bfloat16                        [default: f32]\n"
        "  -p, --prompt TEXT          what to draw (UTF-8)                                  [required]\n"
        "  -n, --negative-prompt TEXT what to steer away from                               [default: \"\"]\n"
        "  -o, --output FILE          PNG to write; FILE, FILE_1, FILE_2, ... for several images, or a name with\n"
        "                             {seed} {steps} {cfg} {sampler} {w} {h} {index} {prompt}  [default: output.png]\n"
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
        "                             adds one warm-up evaluation; the progress bar counts evaluations  [default: "
        "lms]\n"
        "      --scheduler NAME       default | karras (sigma samplers and dpm++2m)        [default: default]\n"
        "      --timestep-spacing S   leading | linspace | trailing                         [default: the sampler's]\n"
        "      --eta X                DDIM eta (0 = deterministic)                          [default: 0]\n"
        "      --rng NAME             cpu (torch CPU generator) | cuda (torch CUDA Philox)  [default: cpu]\n"
        "      --prediction NAME      epsilon | v_prediction                                [default: from the model]\n"
        "      --clip-skip N          use the text encoder's hidden state N-1 layers early  [default: 1]\n"
        "      --original-size WxH    SDXL size conditioning: the original size             [default: -W x -H]\n"
        "      --crop-coords TOPxLEFT SDXL size conditioning: the crop's top-left corner     [default: 0x0]\n"
        "      --target-size WxH      SDXL size conditioning: the target size               [default: -W x -H]\n"
        "  -b, --batch-count N        images to make, seeds seed, seed+1, ...               [default: 1]\n"
        "  -t, --threads N            CPU threads (0 = all cores)                           [default: 0]\n"
        "      --latent-out FILE      also write the final latent as safetensors            [default: none]\n"
        "      --lora FILE[:MULT]     merge a LoRA (kohya or PEFT naming) at load; repeatable [default MULT: 1]\n"
        "      --lora-model-dir DIR   where the prompt's <lora:NAME:MULT> tags find NAME.safetensors [default: .]\n"
        "      --embd-dir DIR         textual-inversion embeddings (*.pt, *.bin, *.safetensors), each used where a\n"
        "                             prompt names it by its file name without the extension [default: none]\n"
        "      --control-net FILE     a ControlNet (.pth / .safetensors) guiding every image by its control image\n"
        "      --control-image FILE   the ControlNet's image (edges, depth, pose, ...), resized to the output size\n"
        "      --control-strength S   the ControlNet residuals' weight, 0..10                [default: 1]\n"
        "      --control-start F      the fraction of the steps where the ControlNet starts  [default: 0]\n"
        "      --control-end F        ... and where it ends                                  [default: 1]\n"
        "\n"
        "upscaling:\n"
        "      --upscale-model FILE   an ESRGAN / Real-ESRGAN model (.pth / .safetensors): every image is upscaled\n"
        "                             by it before it is written; without -m, -i IN.png is upscaled into -o\n"
        "      --upscale-repeats N    apply it N times, 1..4                                 [default: 1]\n"
        "      --hires-scale S        hires fix: generate at -W x -H, upscale by S (1 < S <= 8), then re-denoise\n"
        "                             at the large size (img2img of the upscaled image)     [default: off]\n"
        "      --hires-upscaler U     latent (bilinear, of the latent) | lanczos (of the image), in any case |\n"
        "                             FILE (an upscale model; then resized to the size)     [default: latent]\n"
        "      --hires-steps N        the second pass's steps                               [default: --steps]\n"
        "      --hires-strength D     the second pass's denoising strength, 0 < D <= 1      [default: 0.7]\n"
        "                             (also --hires-denoising-strength, stable-diffusion.cpp's name)\n"
        "\n"
        "batches and sweeps:\n"
        "      --prompt-file FILE     one job per line (- = standard input): a plain prompt, or options as above\n"
        "                             with shell quoting (--prompt \"a cat\" --seed 5 -o cats/{seed}.png); lines\n"
        "                             override the command line's options; blank lines and # comments skipped\n"
        "      --sweep KEY=VALUES     an axis of values (at most 3; the product is run): KEY is seed, steps,\n"
        "                             cfg-scale, sampling-method, scheduler, width, height, strength,\n"
        "                             control-strength or prompt;\n"
        "                             VALUES a, b, c | 1-8 | 10-30:5 (step) | 3:9[4] (count); prompt=S/R\n"
        "                             replaces the first value's text in the prompt by each value\n"
        "      --grid FILE.png        after a sweep, a contact sheet of the images with the values as labels\n"
        "      --skip-existing        leave out the jobs whose PNG exists already (resume a batch)\n"
        "      --json                 one JSON line per image on standard output (path, seed, settings, seconds)\n"
        "      --shard i/n            run only jobs i, i+n, i+2n, ... of the list (spread one list over machines)\n"
        "\n"
        "  -v, --verbose              per-stage timings and peak memory on stderr\n"
        "      --info                 describe the model file and exit\n"
        "  -h, --help                 show this help\n"
        "      --version              print the version\n"
        "\n"
        "exit status: 0 success, 1 runtime failure (out of memory, interrupted), 2 bad input or arguments.\n"
        "Errors are one line on stderr starting with 'sd: error:'.\n",
        cli_sampler_list());
}

/* ---------------- arguments ---------------- */

/* Returns -1 to continue, or an exit status. */
static int parse_command_line(int argc, char **argv, cli_args *a) {
    char err[SD_ERR_LEN];
    if (argc < 2) { /* nothing asked: the short usage */
        fprintf(stderr, "%sEvery option: sd --help\n", USAGE_HEAD);
        return EXIT_BAD_INPUT;
    }
    cli_defaults(a);
    int rc = cli_parse(argc - 1, argv + 1, a, &a->job, err, sizeof err);
    if (rc == CLI_HELP) {
        usage(stdout);
        return 0;
    }
    if (rc == CLI_VERSION) {
        printf("sd %s\n", sd_version());
        return 0;
    }
    if (rc) return error(rc, "%s", err);
    if (!a->model && !a->upscale_model) return error(EXIT_BAD_INPUT, "no model given (-m FILE)");
    if (!a->model && !a->job.init_path)
        return error(EXIT_BAD_INPUT, "--upscale-model without -m upscales an image: give it with -i IN.png (and -o)");
    if (!a->model && (a->hires_upscaler || a->job.gen.hires_scale > 1))
        return error(EXIT_BAD_INPUT, "--hires-%s: re-denoises a generation; it needs a model (-m FILE)",
                     a->hires_upscaler ? "upscaler" : "scale");
    if (a->info) return -1;
    if (a->vae && a->taesd) return error(EXIT_BAD_INPUT, "--taesd: replaces the VAE; --vae cannot be given with it");
    if (a->grid && a->n_sweeps == 0) return error(EXIT_BAD_INPUT, "--grid: needs a sweep (--sweep KEY=VALUES)");
    if (a->grid && a->shard_count > 1)
        return error(EXIT_BAD_INPUT, "--grid: a shard makes only part of the sweep; draw the grid without --shard");
    if (a->json && (!strcmp(a->job.output, "-") || (a->job.latent_out && !strcmp(a->job.latent_out, "-"))))
        return error(EXIT_BAD_INPUT, "--json: writes to standard output; -o - cannot be used with it");
    return -1;
}

/* The prompts' <lora:NAME:MULT> tags, NAME.safetensors in --lora-model-dir: the model is loaded once, so every job
 * must name the same LoRAs; they are added to the command line's. */
static int add_prompt_loras(cli_args *a, const job_list *L) {
    sd_lora_tag first[CLI_MAX_LORAS], tags[CLI_MAX_LORAS];
    char err[SD_ERR_LEN];
    int n_first = 0;
    for (int i = 0; i < L->n; i++) {
        if (i && L->jobs[i].s.gen.prompt == L->jobs[i - 1].s.gen.prompt) continue;
        int n = sd_prompt_lora_tags(L->jobs[i].s.gen.prompt, i ? tags : first, CLI_MAX_LORAS, err);
        if (n < 0)
            return L->jobs[i].line ? error(EXIT_BAD_INPUT, "%s line %d: %s", L->source, L->jobs[i].line, err)
                                   : error(EXIT_BAD_INPUT, "%s", err);
        if (i == 0) {
            n_first = n < CLI_MAX_LORAS ? n : CLI_MAX_LORAS;
            continue;
        }
        int same = n == n_first;
        for (int t = 0; same && t < n && t < CLI_MAX_LORAS; t++)
            same = !strcmp(tags[t].name, first[t].name) && tags[t].multiplier == first[t].multiplier;
        if (!same)
            return error(
                EXIT_BAD_INPUT,
                "%s line %d: its <lora:...> tags differ from the first job's; the model is loaded once, so all jobs "
                "must use the same LoRAs (run them separately)",
                L->source, L->jobs[i].line);
    }
    if (n_first == 0) return 0;
    const char *dir = a->lora_dir ? a->lora_dir : ".";
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return error(EXIT_BAD_INPUT, "--lora-model-dir: '%s' is not a directory (the prompt names <lora:%s>)", dir,
                     first[0].name);
    for (int i = 0; i < n_first; i++) {
        size_t len = strlen(dir) + strlen(first[i].name) + 16;
        char *path = malloc(len);
        if (!path) return error(EXIT_RUNTIME, "out of memory");
        snprintf(path, len, "%s/%s.safetensors", dir, first[i].name);
        int readable = access(path, R_OK) == 0,
            rc = readable ? cli_add_lora(a, "prompt", path, strlen(path), first[i].multiplier, err, sizeof err) : 0;
        free(path);
        if (!readable)
            return error(EXIT_BAD_INPUT, "prompt: <lora:%s>: no readable '%s.safetensors' in '%s' (--lora-model-dir)",
                         first[i].name, first[i].name, dir);
        if (rc) return error(rc, "%s", err);
    }
    return 0;
}

/* Options the chosen sampler does not use: one warning line per sampler and option; they are not recorded either. */
static void warn_ignored_options(const cli_args *a, const job_list *L) {
    unsigned warned = 0; /* bit 2s: eta for sampler s, bit 2s+1: karras */
    int strength = 0, tiling = 0;
    for (int i = 0; i < L->n; i++) {
        const sd_gen_params *g = &L->jobs[i].s.gen;
        if (L->jobs[i].s.strength_given && !g->init_image && !strength++)
            fprintf(stderr, "sd: warning: --strength does nothing without an init image (-i FILE)\n");
        if (g->vae_tiling && a->taesd && !tiling++)
            fprintf(stderr, "sd: warning: --vae-tiling does nothing with --taesd (TAESD runs whole)\n");

        const sd_sampler_info *si = sd_sampler_get_info(g->sampler);
        unsigned eta = 1u << (2 * g->sampler), karras = eta << 1;
        if (g->eta > 0 && !si->uses_eta && !(warned & eta))
            fprintf(stderr, "sd: warning: --eta is ignored by %s (only ddim uses it)\n", si->name);
        if (g->schedule == SD_SCHEDULE_KARRAS && !si->uses_karras && !(warned & karras))
            fprintf(stderr, "sd: warning: --scheduler karras is ignored by %s (it has no sigma schedule)\n", si->name);
        warned |= (g->eta > 0 ? eta : 0) | (g->schedule == SD_SCHEDULE_KARRAS ? karras : 0);
    }
}

/* -v: the embeddings a prompt uses, and how many positions each takes. */
static void describe_embeddings(const sd_ctx *ctx, const char *text, const char *what) {
    sd_embedding_use used[16];
    int n = sd_prompt_embeddings(ctx, text, used, 16);
    for (int i = 0; i < n && i < 16; i++)
        fprintf(stderr, "sd: %s: embedding %s (%d vector%s, hash %s)\n", what, used[i].name, used[i].vectors,
                used[i].vectors == 1 ? "" : "s", used[i].hash);
}

/* Every job's prompts are valid text (checked before any image); unclosed brackets are noted once per text. */
static int check_prompts(const sd_ctx *ctx, const job_list *L, int verbose) {
    for (int i = 0; i < L->n; i++) {
        const job *j = &L->jobs[i];
        if (i && j->s.gen.prompt == L->jobs[i - 1].s.gen.prompt &&
            j->s.gen.negative_prompt == L->jobs[i - 1].s.gen.negative_prompt)
            continue;
        const char *texts[2] = {j->s.gen.prompt, j->s.gen.negative_prompt}, *names[2] = {"prompt", "negative prompt"};
        for (int k = 0; k < 2; k++) {
            char err[SD_ERR_LEN];
            sd_status st = sd_check_prompt(ctx, texts[k], names[k], err);
            if (st != SD_OK && j->line) return error(cli_exit_code(st), "%s line %d: %s", L->source, j->line, err);
            if (st != SD_OK) return error(cli_exit_code(st), "%s", err);
            int unclosed = sd_describe_prompt(ctx, texts[k], names[k], verbose && L->n == 1 ? stderr : NULL);
            if (verbose) describe_embeddings(ctx, texts[k], names[k]);
            if (unclosed > 0)
                fprintf(stderr, "sd: note: %s: %d bracket%s never closed; closed at the end, as AUTOMATIC1111 does\n",
                        names[k], unclosed, unclosed == 1 ? " was" : "s were");
        }
    }
    return 0;
}

/* One output path: writable by output.h's rules, and not the model file. */
static int check_output(const char *path, const struct stat *model) {
    char err[SD_ERR_LEN];
    struct stat st;
    if (model && stat(path, &st) == 0 && st.st_dev == model->st_dev && st.st_ino == model->st_ino)
        return error(EXIT_BAD_INPUT, "%s: is the model file; refusing to overwrite it", path);
    return output_check_path(path, err, sizeof err) != 0 ? error(EXIT_BAD_INPUT, "%s", err) : 0;
}

/* --latent-out NAME.png: a warning once the outputs are known to be usable (it writes safetensors). */
static void warn_latent_png(const job_list *L) {
    for (int i = 0; i < L->n; i++) {
        const char *latent = L->jobs[i].latent, *dot = latent ? strrchr(latent, '.') : NULL;
        if (dot && !strcasecmp(dot, ".png")) {
            fprintf(stderr, "sd: warning: --latent-out %s: writes a safetensors file, not a PNG\n", latent);
            return;
        }
    }
}

/* Before any compute: every output can be written, none is the model, no two jobs (or the grid) write one file. */
static int check_outputs(const cli_args *a, job_list *L, const sd_ctx *ctx) {
    char err[SD_ERR_LEN];
    sd_model_info mi;
    sd_get_model_info(ctx, &mi);
    if (jobs_name_outputs(L, mi.default_width, mi.default_height, err, sizeof err))
        return error(EXIT_BAD_INPUT, "%s", err);
    struct stat model_st;
    const struct stat *model = stat(a->model, &model_st) == 0 ? &model_st : NULL;
    int rc = 0;
    for (int i = 0; i < L->n && !rc; i++) {
        rc = check_output(L->jobs[i].png, model);
        if (!rc && L->jobs[i].latent) rc = check_output(L->jobs[i].latent, model);
        if (!rc && a->grid && !strcmp(a->grid, L->jobs[i].png))
            rc = error(EXIT_BAD_INPUT, "%s: named by --grid and by job %d's -o", a->grid, L->jobs[i].number);
    }
    if (!rc && a->grid) rc = check_output(a->grid, model);
    if (!rc) warn_latent_png(L);
    return rc;
}

/* "42 s", "12 min", "3.5 h". */
static void format_duration(double s, char *out, size_t len) {
    if (s < 90)
        snprintf(out, len, "%.0f s", s);
    else if (s < 5400)
        snprintf(out, len, "%.0f min", s / 60);
    else
        snprintf(out, len, "%.1f h", s / 3600);
}

/* A note for each job size of 4 times the model's pixels or more whose UNet evaluation would take a minute or more
 * here: not refused, but said up front with the estimate. */
static void note_large_sizes(sd_ctx *ctx, const job_list *L) {
    sd_model_info mi;
    sd_get_model_info(ctx, &mi);
    const double native = (double)mi.default_width * mi.default_height;
    int said_w = 0, said_h = 0;
    for (int i = 0; i < L->n; i++) {
        const sd_gen_params *g = &L->jobs[i].s.gen;
        int w, h;
        jobs_generated_size(&L->jobs[i], mi.default_width, mi.default_height, &w, &h);
        if ((double)w * h < 4 * native || (w == said_w && h == said_h)) continue;
        double tflop, s = sd_estimate_step(ctx, w, h, g->cfg_scale > 1.0f, &tflop);
        if (s < 60) continue;
        char took[32] = "";
        format_duration(s, took, sizeof took);
        fprintf(stderr,
                "sd: note: %dx%d is %.0fx the pixels of this model's %dx%d: about %.0f TFLOP per UNet evaluation, "
                "roughly %s each here (self-attention grows with the square of the pixel count)\n",
                w, h, (double)w * h / native, mi.default_width, mi.default_height, tflop, took);
        said_w = w;
        said_h = h;
    }
}

/* ---------------- progress ---------------- */

typedef struct {
    int tty, job, jobs; /* job i of jobs (1-based) */
    const char *unit;   /* "step", or "eval" where a step evaluates the UNet more than once */
    double total;       /* seconds so far in this image */
} progress_state;

/* Columns of the terminal on stderr (80 when unknown). */
static int terminal_width(void) {
    struct winsize ws;
    return ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
}

/* One line per UNet evaluation: "[job i/N ]step s/S 1.23 s/it ETA 12s", with a bar before the counts on a terminal,
 * redrawn in place and cut to the terminal's width. */
static void on_progress(const sd_progress *p, void *user) {
    progress_state *s = user;
    s->total += p->seconds;
    double per = s->total / p->step, eta = per * (p->steps - p->step);
    char job[48] = "", text[96];
    if (s->jobs > 1) snprintf(job, sizeof job, "job %d/%d ", s->job, s->jobs);
    snprintf(text, sizeof text, "%s %d/%d %.2f s/it ETA %.0fs", s->unit, p->step, p->steps, per, eta);
    if (!s->tty) {
        fprintf(stderr, "%s%s\n", job, text);
        return;
    }
    int cols = terminal_width() - 1, fixed = (int)(strlen(job) + strlen(text)) + 3;
    int bar = cols - fixed > 40 ? 40 : cols - fixed, done = bar > 0 ? p->step * bar / p->steps : 0;
    char line[512];
    if (bar >= 5)
        snprintf(line, sizeof line, "%s|%.*s%*s| %s", job, done, "########################################", bar - done,
                 "", text);
    else
        snprintf(line, sizeof line, "%s%s", job, text);
    fprintf(stderr, "\r%.*s\033[K", cols > 0 ? cols : 1, line);
    if (p->step == p->steps) fputc('\n', stderr);
}

/* Samplers that evaluate the UNet more often than --steps (the table's evals_per_step and warmup_evals, Heun and
 * PNDM): said once per run, and the progress counts evaluations ("eval"), not steps. */
static const char *progress_unit(const sd_gen_params *g, unsigned *said) {
    const sd_sampler_info *si = sd_sampler_get_info(g->sampler);
    int first = !(*said & (1u << g->sampler));
    *said |= 1u << g->sampler;
    if (first && si->evals_per_step > 1)
        fprintf(stderr, "sd: %s evaluates the UNet %d times per step after the first; progress counts evaluations\n",
                si->name, si->evals_per_step);
    if (first && si->warmup_evals > 0)
        fprintf(stderr, "sd: %s adds %d warm-up evaluation%s of the UNet; progress counts evaluations\n", si->name,
                si->warmup_evals, si->warmup_evals > 1 ? "s" : "");
    return si->evals_per_step > 1 || si->warmup_evals > 0 ? "eval" : "step";
}

/* ---------------- running the jobs ---------------- */

typedef struct {
    sd_upscaler *post;  /* --upscale-model: applied to every image before it is written, or NULL */
    grid_image *images; /* [L->n] kept for --grid (rgb malloc'd), else NULL */
    int done, to_run;   /* images written, images this run makes */
} run_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The size of job j's PNG: the generated size times the post upscaler's factor. */
static void png_size(const cli_args *a, const sd_ctx *ctx, const sd_upscaler *post, const job *j, int *w, int *h) {
    sd_model_info mi;
    sd_get_model_info(ctx, &mi);
    jobs_generated_size(j, mi.default_width, mi.default_height, w, h);
    for (int r = 0; post && r < a->upscale_repeats; r++) {
        *w *= sd_upscaler_scale(post);
        *h *= sd_upscaler_scale(post);
    }
}

/* --skip-existing: job j is left out when its PNG exists and is one this run could have written (a readable RGB PNG
 * of the job's size, *w x *h); any other file there is made again, with a note. */
static int skipped(const cli_args *a, const sd_ctx *ctx, const sd_upscaler *post, const job *j, int *w, int *h) {
    struct stat st;
    if (!a->skip_existing || !strcmp(j->png, "-") || stat(j->png, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    png_size(a, ctx, post, j, w, h);
    sd_pixels px;
    char err[SD_ERR_LEN];
    const int readable = sd_pixels_read(j->png, &px, err) == SD_OK;
    const int same = readable && px.channels == 3 && px.width == *w && px.height == *h;
    if (readable) sd_pixels_free(&px);
    if (!same)
        fprintf(stderr, "sd: note: %s exists but is not this job's %dx%d RGB PNG: making it again\n", j->png, *w, *h);
    return same;
}
static int in_shard(const cli_args *a, const job *j) {
    return a->shard_count == 0 || (j->number - 1) % a->shard_count == a->shard_index - 1;
}

/* Jobs of this shard (the images this run makes, unless left out as existing). */
static int jobs_to_run(const cli_args *a, const job_list *L) {
    int n = 0;
    for (int i = 0; i < L->n; i++) n += in_shard(a, &L->jobs[i]);
    return n;
}

/* An image --skip-existing left, read back for the grid. */
static int keep_existing(const job *j, grid_image *g) {
    sd_pixels px;
    char err[SD_ERR_LEN];
    if (sd_pixels_read(j->png, &px, err) != SD_OK) return error(EXIT_RUNTIME, "--grid: %s", err);
    if (px.channels != 3) {
        sd_pixels_free(&px);
        return error(EXIT_RUNTIME, "--grid: %s: not an RGB image", j->png);
    }
    *g = (grid_image){px.width, px.height, px.data}; /* the data moves to the grid */
    return 0;
}

/* Makes and writes job j. Returns 0, or an exit status with err set. */
static int run_job(const cli_args *a, sd_ctx *ctx, job *j, int jobs, run_state *rs, char *err, size_t errlen) {
    sd_image img, post = {0};
    double t0 = now_s();
    sd_status st = sd_generate(ctx, &j->s.gen, &img, err);
    if (st != SD_OK) return cli_exit_code(st);
    int scale = 1;
    const sd_pixels generated = {img.width, img.height, 3, img.rgb};
    if (rs->post && (st = upscale_repeated(rs->post, &generated, a->upscale_repeats, cancel_requested, &post, &scale,
                                           err)) != SD_OK) {
        sd_image_free(&img);
        return cli_exit_code(st);
    }
    const sd_image *shown = rs->post ? &post : &img; /* what the PNG and the grid hold */
    sd_timings tm;
    sd_get_timings(ctx, &tm);
    if (tm.vae_tiled && !j->s.gen.vae_tiling && !a->low_memory)
        fprintf(stderr, "sd: note: the VAE ran in %d-pixel tiles: the untiled decoder would not fit in memory\n",
                tm.vae_tiled);
    int rc = job_write(a, j, ctx, &img, rs->post ? &post : NULL, scale, err, errlen) ? EXIT_RUNTIME : 0;
    if (!rc) {
        fprintf(stderr, "sd: wrote %s (seed %llu)\n", strcmp(j->png, "-") ? j->png : "the PNG to standard output",
                (unsigned long long)j->s.gen.seed);
        if (a->json) job_json_line(stdout, j, jobs, shown->width, shown->height, now_s() - t0, 0);
        if (a->verbose)
            fprintf(stderr, "sd: text %.3f s, sampling %.3f s (median step %.3f s), decode %.3f s, peak RSS %.1f MB\n",
                    tm.text_s, tm.sampling_s, tm.step_median_s, tm.decode_s, (double)tm.peak_rss_bytes / 1e6);
        if (rs->images) { /* the grid takes the pixels */
            rs->images[j->number - 1] = (grid_image){shown->width, shown->height, shown->rgb};
            if (shown == &img)
                img.rgb = NULL;
            else
                post.rgb = NULL;
        }
    }
    sd_image_free(&img);
    sd_image_free(&post);
    return rc;
}

static int write_grid(const cli_args *a, const job_list *L, const sd_ctx *ctx, grid_image *images) {
    grid_layout g;
    uint8_t *rgb = NULL;
    char err[SD_ERR_LEN];
    grid_plan(L->axes, L->n_axes, images, &g);
    sd_image first = {images[0].w, images[0].h, (uint8_t *)images[0].rgb, NULL, 4};
    char *params = job_parameters(a, &L->jobs[0].s, ctx, &first, 1), *sweep = grid_description(L->axes, L->n_axes);
    char *text = params && sweep ? malloc(strlen(params) + strlen(sweep) + 3) : NULL;
    int rc = !text || grid_render(L->axes, L->n_axes, images, &g, &rgb) ? error(EXIT_RUNTIME, "out of memory") : 0;
    if (!rc) {
        sprintf(text, "%s, %s", params, sweep);
        if (output_write_png(a->grid, rgb, g.width, g.height, "parameters", text, err, sizeof err))
            rc = error(EXIT_RUNTIME, "%s", err);
        else if (g.nz > 1)
            fprintf(stderr, "sd: wrote %s (%dx%dx%d grid of %d images)\n", a->grid, g.nx, g.ny, g.nz, L->n);
        else
            fprintf(stderr, "sd: wrote %s (%dx%d grid of %d images)\n", a->grid, g.nx, g.ny, L->n);
    }
    free(rgb);
    free(params);
    free(sweep);
    free(text);
    return rc;
}

static int run_jobs(const cli_args *a, sd_ctx *ctx, job_list *L, sd_upscaler *post) {
    run_state rs = {post, NULL, 0, 0};
    if (a->grid && !(rs.images = calloc((size_t)L->n, sizeof *rs.images))) return error(EXIT_RUNTIME, "out of memory");
    rs.to_run = jobs_to_run(a, L);
    progress_state ps = {isatty(2), 0, L->n, "step", 0};
    char err[SD_ERR_LEN] = "";
    unsigned said = 0;
    int rc = 0, left = 0;
    for (int i = 0; i < L->n && !rc; i++) {
        job *j = &L->jobs[i];
        if (!in_shard(a, j)) continue;
        int w, h;
        if (skipped(a, ctx, post, j, &w, &h)) {
            left++;
            if (a->json) job_json_line(stdout, j, L->n, w, h, 0, 1);
            if (rs.images) rc = keep_existing(j, &rs.images[i]);
            continue;
        }
        ps.unit = progress_unit(&j->s.gen, &said);
        ps.job = j->number;
        ps.total = 0;
        j->s.gen.progress = on_progress;
        j->s.gen.progress_user = &ps;
        j->s.gen.cancel = cancel_requested;
        rc = run_job(a, ctx, j, L->n, &rs, err, sizeof err);
        if (!rc)
            rs.done++;
        else if (!g_cancel)
            error(rc, "%s", err);
        if (g_cancel && !rc) snprintf(err, sizeof err, "interrupted");
        if (g_cancel) rc = EXIT_RUNTIME;
    }
    if (g_cancel) /* one line: what stopped, and what is on disk */
        error(EXIT_RUNTIME, "%s; %d of %d job%s done, every file written is complete", err, rs.done, rs.to_run - left,
              rs.to_run - left == 1 ? "" : "s");
    if (left) fprintf(stderr, "sd: %d job%s left out: the PNG exists (--skip-existing)\n", left, left == 1 ? "" : "s");
    if (!rc && rs.images) rc = write_grid(a, L, ctx, rs.images);
    for (int i = 0; rs.images && i < L->n; i++) free((void *)rs.images[i].rgb);
    free(rs.images);
    return rc;
}

/* The list is one job's sweep: one image per combination of values (what a grid can show). */
static int one_sweep(const job_list *L) {
    int combos = 1;
    for (int x = 0; x < L->n_axes; x++) combos *= L->axes[x].n;
    return L->n_base == 1 && L->n == combos;
}

/* Loads the model and runs what the arguments ask for. */
static int run(cli_args *a) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    g_stderr_tty = isatty(2);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask); /* neither signal interrupts the handler of the other: the second one sees the first */
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char err[SD_ERR_LEN];
    job_list L;
    memset(&L, 0, sizeof L);
    int rc = 0;
    if (!a->model) {
        rc = upscale_file(a, cancel_requested, err, sizeof err);
        if (rc) return error(rc, "%s", err);
        fprintf(stderr, "sd: wrote %s\n", a->job.output);
        return 0;
    }
    if (!a->info) {
        if ((rc = jobs_build(&L, a, err, sizeof err))) {
            jobs_free(&L);
            return error(rc, "%s", err);
        }
        if (a->grid && !one_sweep(&L))
            rc = error(EXIT_BAD_INPUT, "--grid: needs one sweep of one job (no prompt file with several lines, no -b)");
        if (!rc && a->shard_count > 1 && jobs_to_run(a, &L) == 0) { /* nothing to do: not an error */
            fprintf(stderr, "sd: note: --shard %d/%d: no job falls to this shard (the list has %d)\n", a->shard_index,
                    a->shard_count, L.n);
            jobs_free(&L);
            return 0;
        }
        if (!rc) rc = add_prompt_loras(a, &L);
        if (!rc) warn_ignored_options(a, &L);
        if (rc) {
            jobs_free(&L);
            return rc;
        }
    }
    sd_upscaler *post = NULL, *hires = NULL; /* loaded before the model: a bad file is refused at once */
    if (!a->info && (rc = upscalers_load(a, &post, &hires, err, sizeof err))) {
        jobs_free(&L);
        return error(rc, "%s", err);
    }
    sd_ctx *ctx = NULL;
    double t0 = now_s();
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
    lp.low_memory = a->low_memory;
    lp.precision = a->precision;
    lp.embeddings_dir = a->embd_dir;
    lp.controlnet_path = a->control_net;
    if (a->precision == SD_PRECISION_BF16 && !sd_bf16_supported())
        fprintf(stderr, "sd: warning: --precision bf16: this CPU has no AVX512-BF16; computing in float32\n");
    lp.keep_weights = jobs_to_run(a, &L) > 1; /* a batch: each image reuses the pages the previous one read */
    sd_status st = sd_load_with(&ctx, &lp, err);
    if (st != SD_OK)
        rc = error(cli_exit_code(st), "%s", err);
    else if (a->verbose)
        fprintf(stderr, "sd: loaded %s (%.3f s)\n", a->model, now_s() - t0);
    if (!rc && a->info)
        sd_print_info(ctx, stdout);
    else if (!rc && !(rc = check_prompts(ctx, &L, a->verbose)) && !(rc = check_outputs(a, &L, ctx))) {
        if (upscalers_set_hires(a, &L, hires))
            fprintf(stderr, "sd: warning: --hires-upscaler does nothing without --hires-scale\n");
        if ((rc = upscalers_check_jobs(a, &L, ctx, post, err, sizeof err)))
            error(rc, "%s", err);
        else {
            note_large_sizes(ctx, &L);
            rc = run_jobs(a, ctx, &L, post);
        }
    }
    if (hires != post) sd_upscaler_free(hires);
    sd_upscaler_free(post);
    sd_free(ctx);
    jobs_free(&L);
    return rc;
}

int main(int argc, char **argv) {
    blas_prefer_avx512(argv);
    cli_args a;
    int rc = parse_command_line(argc, argv, &a);
    if (rc < 0) rc = run(&a);
    cli_free(&a);
    return rc;
}
