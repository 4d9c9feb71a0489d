/* cli_options.c - option names, strict value parsing, job vs run options (see cli_options.h). */
#include "cli_options.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes the message and returns the status. */
static int fail(int code, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

#define BAD(...) fail(CLI_BAD_INPUT, err, errlen, __VA_ARGS__)

const char *cli_sampler_list(void) {
    static char list[256];
    if (!list[0])
        for (int i = 0; i < SD_SAMPLER_COUNT; i++) {
            strcat(list, i ? ", " : "");
            strcat(list, sd_sampler_name((sd_sampler)i));
        }
    return list;
}

int cli_exit_code(sd_status s) {
    switch (s) {
    case SD_OK: return CLI_OK;
    case SD_ERR_ARG:
    case SD_ERR_IO:
    case SD_ERR_FORMAT:
    case SD_ERR_MODEL: return CLI_BAD_INPUT;
    default: return CLI_RUNTIME;
    }
}

void cli_defaults(cli_args *a) {
    memset(a, 0, sizeof *a);
    a->upscale_repeats = 1;
    sd_gen_params_default(&a->job.gen);
    a->job.gen.prompt = NULL;
    a->job.output = "output.png";
    a->job.batch = 1;
}

void cli_free(cli_args *a) {
    for (int i = 0; i < a->n_loras; i++) free(a->lora_paths[i]);
    a->n_loras = 0;
}

/* ---------------- strict number parsing ---------------- */

int cli_number_start(const char *s) { return (*s >= '0' && *s <= '9') || *s == '-' || *s == '+' || *s == '.'; }

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || !cli_number_start(s)) return BAD("%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi) return BAD("%s: %ld is outside %ld..%ld", opt, v, lo, hi);
    *out = v;
    return CLI_OK;
}

/* Image sides: a multiple of 8 in 64..4096 (memory is checked later, per model). */
static int parse_size(const char *opt, const char *s, long *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || !cli_number_start(s) || v < 64 || v > 4096 || v % 8)
        return BAD("%s: '%s' is not a multiple of 8 in 64..4096", opt, s);
    *out = v;
    return CLI_OK;
}

static int parse_double(const char *opt, const char *s, double *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE && end != s && !*end && cli_number_start(s)) return BAD("%s: '%s' is out of range", opt, s);
    if (errno || end == s || *end || !isfinite(v) || !cli_number_start(s))
        return BAD("%s: '%s' is not a number", opt, s);
    *out = v;
    return CLI_OK;
}

static int parse_float(const char *opt, const char *s, float *out, char *err, size_t errlen) {
    double v = 0;
    int rc = parse_double(opt, s, &v, err, errlen);
    if (!rc && fabs(v) > FLT_MAX) rc = BAD("%s: '%s' is out of range", opt, s); /* not inf */
    if (!rc) *out = (float)v;
    return rc;
}

static int parse_seed(const char *s, job_settings *j, char *err, size_t errlen) {
    char *end;
    errno = 0;
    if (strcmp(s, "-1") == 0) {
        j->seed_given = 0;
        return CLI_OK;
    } /* random */
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || !(s[0] >= '0' && s[0] <= '9'))
        return BAD("--seed: '%s' is not an integer in 0..18446744073709551615 (or -1)", s);
    j->gen.seed = v;
    j->seed_given = 1;
    return CLI_OK;
}

/* "AxB": two whole numbers in 0..65536 (a size WxH, or a crop TOPxLEFT). */
static int parse_pair(const char *opt, const char *s, const char *form, int *a, int *b, char *err, size_t errlen) {
    char *end, *end2;
    errno = 0;
    long x = strtol(s, &end, 10), y = *end == 'x' ? strtol(end + 1, &end2, 10) : -1;
    if (errno || end == s || *end != 'x' || end2 == end + 1 || *end2 || !(s[0] >= '0' && s[0] <= '9') ||
        !(end[1] >= '0' && end[1] <= '9') || x > 65536 || y < 0 || y > 65536)
        return BAD("%s: '%s' is not %s (two whole numbers in 0..65536, e.g. 1024x1024)", opt, s, form);
    *a = (int)x;
    *b = (int)y;
    return CLI_OK;
}

static int parse_choice(const char *opt, const char *s, const char *const *names, int n, int *out, char *err,
                        size_t errlen) {
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return CLI_OK;
        }
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        strcat(list, i ? ", " : "");
        strcat(list, names[i]);
    }
    return BAD("%s: unknown value '%s' (one of: %s)", opt, s, list);
}

/* ---------------- job options ---------------- */

static int is(const char *opt, const char *short_name, const char *long_name) {
    return (short_name && !strcmp(opt, short_name)) || !strcmp(opt, long_name);
}

int cli_job_option(job_settings *j, const char *opt, const char *val, char *err, size_t errlen) {
    static const char *const schedules[] = {"default", "karras"};
    static const char *const spacings[] = {"leading", "linspace", "trailing"};
    static const char *const rngs[] = {"cpu", "cuda"};
    static const char *const predictions[] = {"epsilon", "v_prediction"};
    sd_gen_params *g = &j->gen;
    long v;
    int choice, rc = CLI_OK;
    if (is(opt, "-p", "--prompt"))
        g->prompt = val;
    else if (is(opt, "-n", "--negative-prompt"))
        g->negative_prompt = val;
    else if (is(opt, "-o", "--output"))
        j->output = val;
    else if (is(opt, NULL, "--latent-out"))
        j->latent_out = val;
    else if (is(opt, "-i", "--init-img"))
        j->init_path = val;
    else if (is(opt, NULL, "--mask"))
        j->mask_path = val;
    else if (is(opt, NULL, "--control-image"))
        j->control_path = val;
    else if (is(opt, NULL, "--control-strength")) {
        if (!(rc = parse_float(opt, val, &g->control_strength, err, errlen)) &&
            !(g->control_strength >= 0 && g->control_strength <= 10))
            rc = BAD("--control-strength: %s is outside 0..10", val);
    } else if (is(opt, NULL, "--hires-scale")) {
        if (!(rc = parse_double(opt, val, &g->hires_scale, err, errlen)) &&
            !(g->hires_scale > 1 && g->hires_scale <= 8))
            rc = BAD("--hires-scale: %s is not above 1 and at most 8", val);
    } else if (is(opt, NULL, "--hires-steps")) {
        if (!(rc = parse_int(opt, val, 1, 1000, &v, err, errlen))) g->hires_steps = (int)v;
    } else if (is(opt, NULL, "--hires-strength") || is(opt, NULL, "--hires-denoising-strength")) {
        if (!(rc = parse_double(opt, val, &g->hires_strength, err, errlen)) &&
            !(g->hires_strength > 0 && g->hires_strength <= 1))
            rc = BAD("%s: %s is outside (0, 1]", opt, val);
    } else if (is(opt, NULL, "--control-start") || is(opt, NULL, "--control-end")) {
        double f = 0; /* a double: diffusers compares the step fraction with it in double precision */
        if (!(rc = parse_double(opt, val, &f, err, errlen)) && !(f >= 0 && f <= 1))
            rc = BAD("%s: %s is outside 0..1 (a fraction of the steps)", opt, val);
        else if (!rc && opt[10] == 's')
            g->control_start = f;
        else if (!rc)
            g->control_end = f;
    } else if (is(opt, NULL, "--strength")) {
        double s = 0; /* a double, as diffusers multiplies steps · strength in double precision */
        if (!(rc = parse_double(opt, val, &s, err, errlen)) && !(s > 0 && s <= 1))
            rc = BAD("--strength: %s is outside (0, 1]", val);
        else if (!rc) {
            g->strength = s;
            j->strength_given = 1;
        }
    } else if (is(opt, "-W", "--width")) {
        if (!(rc = parse_size(opt, val, &v, err, errlen))) g->width = (int)v;
    } else if (is(opt, "-H", "--height")) {
        if (!(rc = parse_size(opt, val, &v, err, errlen))) g->height = (int)v;
    } else if (is(opt, NULL, "--clip-skip")) {
        if (!(rc = parse_int(opt, val, 1, 100, &v, err, errlen))) g->clip_skip = (int)v;
    } else if (is(opt, NULL, "--steps")) {
        if (!(rc = parse_int(opt, val, 1, 1000, &v, err, errlen))) g->steps = (int)v;
    } else if (is(opt, "-b", "--batch-count")) {
        if (!(rc = parse_int(opt, val, 1, 10000, &v, err, errlen))) j->batch = (int)v;
    } else if (is(opt, NULL, "--cfg-scale")) {
        if (!(rc = parse_float(opt, val, &g->cfg_scale, err, errlen)) && g->cfg_scale < 0)
            rc = BAD("--cfg-scale: %s must be >= 0", val);
    } else if (is(opt, NULL, "--eta")) {
        if (!(rc = parse_float(opt, val, &g->eta, err, errlen)) && g->eta < 0) rc = BAD("--eta: %s must be >= 0", val);
    } else if (is(opt, "-s", "--seed"))
        rc = parse_seed(val, j, err, errlen);
    else if (is(opt, NULL, "--sampling-method")) {
        int s = sd_sampler_from_name(val);
        if (s < 0)
            rc = BAD("--sampling-method: unknown sampler '%s' (%s)", val, cli_sampler_list());
        else
            g->sampler = (sd_sampler)s;
    } else if (is(opt, NULL, "--scheduler")) {
        if (!(rc = parse_choice(opt, val, schedules, 2, &choice, err, errlen))) g->schedule = (sd_schedule)choice;
    } else if (is(opt, NULL, "--timestep-spacing")) {
        if (!(rc = parse_choice(opt, val, spacings, 3, &choice, err, errlen))) g->spacing = (sd_spacing)(choice + 1);
    } else if (is(opt, NULL, "--rng")) {
        if (!(rc = parse_choice(opt, val, rngs, 2, &choice, err, errlen))) g->rng = (sd_rng_kind)choice;
    } else if (is(opt, NULL, "--original-size")) {
        rc = parse_pair(opt, val, "WxH", &g->original_width, &g->original_height, err, errlen);
    } else if (is(opt, NULL, "--target-size")) {
        rc = parse_pair(opt, val, "WxH", &g->target_width, &g->target_height, err, errlen);
    } else if (is(opt, NULL, "--crop-coords")) {
        rc = parse_pair(opt, val, "TOPxLEFT", &g->crop_top, &g->crop_left, err, errlen);
    } else if (is(opt, NULL, "--prediction")) {
        if (!(rc = parse_choice(opt, val, predictions, 2, &choice, err, errlen)))
            g->prediction = (sd_prediction)(choice + 1);
    } else
        rc = BAD("unknown option '%s' (see sd --help)", opt);
    return rc;
}

/* ---------------- run options ---------------- */

int cli_add_lora(cli_args *a, const char *what, const char *path, size_t len, double multiplier, char *err,
                 size_t errlen) {
    if (a->n_loras == CLI_MAX_LORAS) return BAD("%s: more than %d LoRAs", what, CLI_MAX_LORAS);
    char *p = malloc(len + 1);
    if (!p) return fail(CLI_RUNTIME, err, errlen, "out of memory");
    memcpy(p, path, len);
    p[len] = 0;
    a->lora_paths[a->n_loras] = p;
    a->loras[a->n_loras++] = (sd_lora){p, (float)multiplier};
    return CLI_OK;
}

/* --lora FILE[:MULT]: a ':' after the last '/' starts the multiplier. */
static int parse_lora(cli_args *a, const char *val, char *err, size_t errlen) {
    const char *colon = strrchr(val, ':'), *slash = strrchr(val, '/');
    size_t len = strlen(val);
    double mult = 1.0;
    if (colon && (!slash || colon > slash)) {
        char *end;
        errno = 0;
        mult = strtod(colon + 1, &end);
        if (errno || end == colon + 1 || *end || !isfinite(mult) || !cli_number_start(colon + 1))
            return BAD("--lora: '%s': '%s' is not a multiplier (use FILE:MULT, e.g. style.safetensors:0.8)", val,
                       colon + 1);
        len = (size_t)(colon - val);
    }
    if (len == 0) return BAD("--lora: '%s' names no file", val);
    return cli_add_lora(a, "--lora", val, len, mult, err, errlen);
}

/* --shard i/n: 1 <= i <= n. */
static int parse_shard(cli_args *a, const char *val, char *err, size_t errlen) {
    char *end, *end2;
    errno = 0;
    long i = strtol(val, &end, 10), n = *end == '/' ? strtol(end + 1, &end2, 10) : 0;
    if (errno || end == val || *end != '/' || end2 == end + 1 || *end2 || n < 1 || i < 1 || i > n || n > 1000000 ||
        !cli_number_start(val) || !cli_number_start(end + 1))
        return BAD("--shard: '%s' is not i/n with 1 <= i <= n (e.g. 1/4: jobs 1, 5, 9, ...)", val);
    a->shard_index = (int)i;
    a->shard_count = (int)n;
    return CLI_OK;
}

/* Options of the whole run. Returns 1 when opt is not one of them. */
static int run_option(cli_args *a, const char *opt, const char *val, char *err, size_t errlen) {
    long v;
    if (is(opt, "-m", "--model"))
        a->model = val;
    else if (is(opt, NULL, "--lora"))
        return parse_lora(a, val, err, errlen);
    else if (is(opt, NULL, "--lora-model-dir"))
        a->lora_dir = val;
    else if (is(opt, NULL, "--embd-dir"))
        a->embd_dir = val;
    else if (is(opt, NULL, "--control-net"))
        a->control_net = val;
    else if (is(opt, NULL, "--upscale-model"))
        a->upscale_model = val;
    else if (is(opt, NULL, "--hires-upscaler"))
        a->hires_upscaler = val;
    else if (is(opt, NULL, "--upscale-repeats")) {
        int rc = parse_int(opt, val, 1, 4, &v, err, errlen);
        if (rc) return rc;
        a->upscale_repeats = (int)v;
    } else if (is(opt, NULL, "--vae"))
        a->vae = val;
    else if (is(opt, NULL, "--taesd"))
        a->taesd = val;
    else if (is(opt, NULL, "--prompt-file"))
        a->prompt_file = val;
    else if (is(opt, NULL, "--grid"))
        a->grid = val;
    else if (is(opt, NULL, "--shard"))
        return parse_shard(a, val, err, errlen);
    else if (is(opt, NULL, "--sweep")) {
        if (a->n_sweeps == CLI_MAX_AXES) return BAD("--sweep %s: more than %d axes", val, CLI_MAX_AXES);
        a->sweeps[a->n_sweeps++] = val;
    } else if (is(opt, NULL, "--precision")) {
        static const char *const precisions[] = {"f32", "bf16"};
        int choice = 0, rc = parse_choice(opt, val, precisions, 2, &choice, err, errlen);
        if (rc) return rc;
        a->precision = (sd_precision)choice;
    } else if (is(opt, "-t", "--threads")) {
        int rc = parse_int(opt, val, 0, 1024, &v, err, errlen);
        if (rc) return rc;
        a->threads = (int)v;
    } else
        return 1;
    return CLI_OK;
}

/* ---------------- the token loop ---------------- */

typedef struct {
    const char *name;
    int takes_value;
    int run_wide; /* refused in a prompt-file line */
} option_name;

/* clang-format off */
static const option_name OPTIONS[] = {
    {"-m", 1, 1}, {"--model", 1, 1}, {"--lora", 1, 1}, {"--lora-model-dir", 1, 1}, {"--vae", 1, 1}, {"--taesd", 1, 1},
    {"--embd-dir", 1, 1}, {"--control-net", 1, 1}, {"--upscale-model", 1, 1}, {"--upscale-repeats", 1, 1},
    {"--hires-upscaler", 1, 1}, {"--hires-scale", 1, 0}, {"--hires-steps", 1, 0}, {"--hires-strength", 1, 0},
    {"--hires-denoising-strength", 1, 0},
    {"-t", 1, 1}, {"--threads", 1, 1}, {"--precision", 1, 1}, {"--prompt-file", 1, 1}, {"--sweep", 1, 1},
    {"--grid", 1, 1}, {"--shard", 1, 1}, {"-v", 0, 1}, {"--verbose", 0, 1}, {"--low-memory", 0, 1}, {"--info", 0, 1},
    {"--json", 0, 1}, {"--skip-existing", 0, 1},
    {"-h", 0, 1}, {"--help", 0, 1}, {"--version", 0, 1},
    {"-p", 1, 0}, {"--prompt", 1, 0}, {"-n", 1, 0}, {"--negative-prompt", 1, 0}, {"-o", 1, 0}, {"--output", 1, 0},
    {"--latent-out", 1, 0}, {"-i", 1, 0}, {"--init-img", 1, 0}, {"--mask", 1, 0}, {"--strength", 1, 0},
    {"--control-image", 1, 0}, {"--control-strength", 1, 0}, {"--control-start", 1, 0}, {"--control-end", 1, 0},
    {"-W", 1, 0}, {"--width", 1, 0}, {"-H", 1, 0}, {"--height", 1, 0}, {"--steps", 1, 0}, {"-b", 1, 0},
    {"--batch-count", 1, 0}, {"--cfg-scale", 1, 0}, {"--eta", 1, 0}, {"-s", 1, 0}, {"--seed", 1, 0},
    {"--sampling-method", 1, 0}, {"--scheduler", 1, 0}, {"--timestep-spacing", 1, 0}, {"--rng", 1, 0},
    {"--prediction", 1, 0}, {"--clip-skip", 1, 0}, {"--vae-tiling", 0, 0}, {"--original-size", 1, 0},
    {"--target-size", 1, 0}, {"--crop-coords", 1, 0},
};
/* clang-format on */

static const option_name *find_option(const char *opt) {
    for (size_t i = 0; i < sizeof OPTIONS / sizeof *OPTIONS; i++)
        if (!strcmp(opt, OPTIONS[i].name)) return &OPTIONS[i];
    return NULL;
}

/* A flag (an option without a value). */
static int set_flag(cli_args *a, job_settings *j, const char *opt) {
    if (is(opt, "-h", "--help")) return CLI_HELP;
    if (is(opt, NULL, "--version")) return CLI_VERSION;
    if (is(opt, "-v", "--verbose"))
        a->verbose = 1;
    else if (is(opt, NULL, "--info"))
        a->info = 1;
    else if (is(opt, NULL, "--json"))
        a->json = 1;
    else if (is(opt, NULL, "--skip-existing"))
        a->skip_existing = 1;
    else if (is(opt, NULL, "--low-memory"))
        a->low_memory = 1;
    else if (is(opt, NULL, "--vae-tiling"))
        j->gen.vae_tiling = 1;
    return CLI_OK;
}

int cli_parse(int n, char *const *tok, cli_args *a, job_settings *j, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        const char *opt = tok[i], *val = NULL;
        if (opt[0] != '-' || !opt[1]) return BAD("unexpected argument '%s' (see sd --help)", opt);
        char name[64];
        const char *eq = opt[1] == '-' ? strchr(opt, '=') : NULL; /* --opt=value */
        if (eq && (size_t)(eq - opt) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - opt), opt);
            opt = name;
            val = eq + 1;
        }
        const option_name *o = find_option(opt);
        if (!o) return BAD("unknown option '%s' (see sd --help)", opt);
        if (eq && !o->takes_value) return BAD("option '%s' takes no value (given '%s')", opt, tok[i]);
        if (o->run_wide && !a)
            return BAD("%s applies to the whole run (the model is loaded once); give it on the command line", opt);
        if (!o->takes_value) {
            int rc = set_flag(a, j, opt);
            if (rc) return rc;
            continue;
        }
        if (!eq) {
            if (i + 1 >= n) return BAD("option '%s' needs a value", opt);
            val = tok[++i];
        }
        int rc = o->run_wide ? run_option(a, opt, val, err, errlen) : cli_job_option(j, opt, val, err, errlen);
        if (rc) return rc;
    }
    return CLI_OK;
}
