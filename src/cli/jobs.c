/* jobs.c - prompt file, sweeps, batches and output names -> the list of images a run makes (see jobs.h). */
#include "jobs.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return CLI_BAD_INPUT;
}

#define BAD(...) fail(err, errlen, __VA_ARGS__)
#define NOMEM()  (snprintf(err, errlen, "out of memory"), CLI_RUNTIME)

/* ---------------- owned strings ---------------- */

/* Keeps p (malloc'd) until jobs_free; returns p, or NULL (and frees p) without memory. */
static char *keep(job_list *L, char *p) {
    if (!p) return NULL;
    if (L->n_strings == L->cap_strings) {
        int cap = L->cap_strings ? 2 * L->cap_strings : 64;
        char **s = realloc(L->strings, (size_t)cap * sizeof *s);
        if (!s) {
            free(p);
            return NULL;
        }
        L->strings = s;
        L->cap_strings = cap;
    }
    return L->strings[L->n_strings++] = p;
}

/* ---------------- shell-like words ---------------- */

int jobs_split_line(const char *line, char ***words, char **storage, char *err, size_t errlen) {
    size_t len = strlen(line);
    char *out = malloc(len + 1), **w = malloc((len / 2 + 2) * sizeof *w); /* at most len/2+1 words */
    if (!out || !w) {
        free(out);
        free(w);
        return -2;
    }
    int n = 0;
    char *o = out;
    const char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        w[n++] = o;
        while (*p && *p != ' ' && *p != '\t') {
            if (*p == '\'') { /* '...': everything literal */
                const char *close = strchr(p + 1, '\'');
                if (!close) {
                    snprintf(err, errlen, "unbalanced ' quote");
                    goto bad;
                }
                memcpy(o, p + 1, (size_t)(close - p - 1));
                o += close - p - 1;
                p = close + 1;
            } else if (*p == '"') { /* "...": \" and \\ are escapes, other backslashes literal */
                for (p++; *p && *p != '"'; p++) {
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) p++;
                    *o++ = *p;
                }
                if (!*p) {
                    snprintf(err, errlen, "unbalanced \" quote");
                    goto bad;
                }
                p++;
            } else if (*p == '\\') { /* \x outside quotes: x */
                if (!p[1]) {
                    snprintf(err, errlen, "backslash at the end of the line");
                    goto bad;
                }
                *o++ = p[1];
                p += 2;
            } else
                *o++ = *p++;
        }
        *o++ = 0;
    }
    w[n] = NULL;
    *words = w;
    *storage = out;
    return n;
bad:
    free(out);
    free(w);
    return -1;
}

/* ---------------- sweep values ---------------- */

typedef enum { V_INT, V_FLOAT, V_TEXT, V_SEED } value_kind; /* V_SEED: whole numbers in 0..2^64-1, exactly */

typedef struct {
    const char *key, *alias, *option, *label;
    value_kind kind;
} sweep_key; /* alias: also the short name in grid labels */

/* clang-format off */
static const sweep_key KEYS[] = {
    {"seed", NULL, "--seed", "Seed", V_SEED},
    {"steps", NULL, "--steps", "Steps", V_INT},
    {"cfg-scale", "cfg", "--cfg-scale", "CFG Scale", V_FLOAT},
    {"sampling-method", "sampler", "--sampling-method", "Sampler", V_TEXT},
    {"scheduler", "schedule", "--scheduler", "Schedule type", V_TEXT},
    {"width", NULL, "--width", "Width", V_INT},
    {"height", NULL, "--height", "Height", V_INT},
    {"strength", NULL, "--strength", "Denoising", V_FLOAT},
    {"control-strength", NULL, "--control-strength", "ControlNet Weight", V_FLOAT},
    {"prompt", NULL, NULL, "Prompt S/R", V_TEXT},
};
/* clang-format on */
#define N_KEYS (int)(sizeof KEYS / sizeof *KEYS)

typedef struct {
    char **v;
    int n, cap;
} value_list;

static int push_value(value_list *l, const char *s, size_t len) {
    if (l->n == JOBS_MAX) return -1;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = 0;
    l->v[l->n++] = c;
    return 0;
}

static int push_number(value_list *l, value_kind kind, double x) {
    char buf[64];
    if (kind == V_INT)
        snprintf(buf, sizeof buf, "%lld", (long long)x); /* truncation, as AUTOMATIC1111's int(x) */
    else
        snprintf(buf, sizeof buf, "%g", x);
    return push_value(l, buf, strlen(buf));
}

/* A whole number for an integer key, any finite number otherwise; the whole text must be used. */
static int read_number(const char *s, value_kind kind, double *x, const char **end) {
    char *e;
    errno = 0;
    *end = s;
    if (!cli_number_start(s)) return -1; /* no leading space */
    *x = kind == V_INT ? (double)strtoll(s, &e, 10) : strtod(s, &e);
    *end = e;
    return errno || e == s || !isfinite(*x) ? -1 : 0;
}

/* A seed: a whole number in 0..2^64-1 (digits only). */
static int read_seed(const char *s, unsigned long long *x, const char **end) {
    char *e;
    errno = 0;
    *x = strtoull(s, &e, 10);
    *end = e;
    return errno || !(*s >= '0' && *s <= '9') ? -1 : 0;
}

/* One item of a seed list, exactly (no floating point): X, A-B, A-B:STEP, A-B[COUNT] or A:B[COUNT]. */
static int expand_seed_item(const char *item, value_list *l, const char *spec, char *err, size_t errlen) {
    unsigned long long a, b, step = 1, count = 0;
    const char *p;
    int bad = read_seed(item, &a, &p);
    b = a;
    if (!bad && (*p == '-' || *p == ':')) {
        const char sep = *p;
        bad = read_seed(p + 1, &b, &p);
        if (!bad && *p == '[')
            bad = read_seed(p + 1, &count, &p) || *p++ != ']' || count == 0;
        else if (!bad && *p == ':' && sep == '-')
            bad = read_seed(p + 1, &step, &p) || step == 0;
        else
            bad = bad || sep == ':';
    }
    if (bad || *p)
        return BAD("--sweep %s: '%s' is not a seed (0..18446744073709551615) or a range of them (A-B, A-B:STEP, "
                   "A-B[COUNT])",
                   spec, item);
    if (b < a) return BAD("--sweep %s: '%s' is an empty range (the end is below the start)", spec, item);
    if ((count ? count - 1 : (b - a) / step) >= JOBS_MAX)
        return BAD("--sweep %s: '%s': more than %d values", spec, item, JOBS_MAX);
    if (!count) count = (b - a) / step + 1;
    for (unsigned long long k = 0; k < count; k++) {
        const unsigned long long d = b - a, m = count - 1; /* [COUNT]: floor(d·k/m) without overflow */
        const unsigned long long v = count > 1 && step == 1 && m ? a + d / m * k + d % m * k / m : a + k * step;
        char buf[32];
        snprintf(buf, sizeof buf, "%llu", v);
        if (push_value(l, buf, strlen(buf))) return NOMEM();
    }
    return 0;
}

/* One item of a number list: X, A-B, A-B:S, A-B[N] or A:B[N]. */
static int expand_item(const char *item, value_kind kind, value_list *l, const char *spec, char *err, size_t errlen) {
    double a, b, step = 1;
    const char *p;
    long long count = -1;
    if (read_number(item, kind, &a, &p)) return BAD("--sweep %s: '%s' is not a number or a range", spec, item);
    if (!*p) return push_number(l, kind, a) ? NOMEM() : 0;
    char sep = *p;
    if ((sep != '-' && sep != ':') || read_number(p + 1, kind, &b, &p))
        return BAD("--sweep %s: '%s' is not a number or a range (A-B, A-B:STEP, A-B[COUNT])", spec, item);
    if (*p == '[') {
        char *e;
        count = strtoll(p + 1, &e, 10);
        if (e == p + 1 || strcmp(e, "]") || count < 0)
            return BAD("--sweep %s: '%s': the count must be [N]", spec, item);
    } else if (*p == ':' && sep == '-') {
        if (read_number(p + 1, V_FLOAT, &step, &p) || *p)
            return BAD("--sweep %s: '%s': the step after ':' is not a number", spec, item);
        if (!(step > 0)) return BAD("--sweep %s: '%s': the step must be positive", spec, item);
    } else if (*p || sep == ':')
        return BAD("--sweep %s: '%s' is not a number or a range (A-B, A-B:STEP, A-B[COUNT])", spec, item);
    if (count >= 0) { /* evenly spaced, both ends included */
        if (count == 0) return BAD("--sweep %s: '%s' is an empty range", spec, item);
        if (count > JOBS_MAX) return BAD("--sweep %s: '%s': more than %d values", spec, item, JOBS_MAX);
        for (long long k = 0; k < count; k++)
            if (push_number(l, kind, count == 1 ? a : a + (b - a) * (double)k / (double)(count - 1))) return NOMEM();
        return 0;
    }
    if (b < a) return BAD("--sweep %s: '%s' is an empty range (the end is below the start)", spec, item);
    if ((b - a) / step >= JOBS_MAX) return BAD("--sweep %s: '%s': more than %d values", spec, item, JOBS_MAX);
    for (long long k = 0; a + (double)k * step <= b + 1e-9 * step; k++)
        if (push_number(l, kind, a + (double)k * step)) return NOMEM();
    return 0;
}

/* Splits VALUES at commas outside double quotes; items are trimmed, quotes removed. */
static int split_values(const char *values, value_kind kind, value_list *l, const char *spec, char *err,
                        size_t errlen) {
    const char *p = values;
    for (;;) {
        while (*p == ' ') p++;
        char item[1024];
        size_t n = 0;
        int quoted = *p == '"';
        if (quoted) {
            for (p++; *p && *p != '"'; p++)
                if (n + 1 < sizeof item) item[n++] = *p;
            if (*p != '"') return BAD("--sweep %s: unbalanced \" quote", spec);
            p++;
            while (*p == ' ') p++;
        } else {
            for (; *p && *p != ','; p++)
                if (n + 1 < sizeof item) item[n++] = *p;
            while (n && item[n - 1] == ' ') n--;
        }
        item[n] = 0;
        if (*p && *p != ',') return BAD("--sweep %s: text after a quoted value", spec);
        if (!n && !quoted) return BAD("--sweep %s: an empty value", spec);
        int rc = kind == V_TEXT   ? (push_value(l, item, n) ? NOMEM() : 0)
                 : kind == V_SEED ? expand_seed_item(item, l, spec, err, errlen)
                                  : expand_item(item, kind, l, spec, err, errlen);
        if (rc) return rc;
        if (!*p) return 0;
        p++;
    }
}

void jobs_free_axis(sweep_axis *ax) {
    for (int i = 0; i < ax->n; i++) free(ax->values[i]);
    free(ax->values);
    ax->values = NULL;
    ax->n = 0;
}

int jobs_parse_sweep(const char *spec, sweep_axis *ax, char *err, size_t errlen) {
    memset(ax, 0, sizeof *ax);
    const char *eq = strchr(spec, '=');
    const sweep_key *k = NULL;
    size_t klen = eq ? (size_t)(eq - spec) : strlen(spec);
    for (int i = 0; i < N_KEYS && !k; i++)
        if ((strlen(KEYS[i].key) == klen && !strncmp(spec, KEYS[i].key, klen)) ||
            (KEYS[i].alias && strlen(KEYS[i].alias) == klen && !strncmp(spec, KEYS[i].alias, klen)))
            k = &KEYS[i];
    if (!eq) return BAD("--sweep %s: not KEY=VALUES (e.g. seed=1-8)", spec);
    if (!k)
        return BAD("--sweep %s: unknown key '%.*s' (one of: seed, steps, cfg-scale, sampling-method, scheduler, width, "
                   "height, strength, control-strength, prompt)",
                   spec, (int)klen, spec);
    value_list l = {0};
    int rc = split_values(eq + 1, k->kind, &l, spec, err, errlen);
    *ax = (sweep_axis){k->key, k->alias ? k->alias : k->key, k->option, k->label, spec, l.v, l.n};
    if (!rc && !k->option && l.n < 2)
        rc = BAD("--sweep %s: prompt S/R needs the text to search for and at least one replacement", spec);
    for (int i = 0; !rc && k->option && i < l.n; i++) { /* each value as its option would take it */
        job_settings scratch;
        memset(&scratch, 0, sizeof scratch);
        char why[400];
        if (cli_job_option(&scratch, k->option, l.v[i], why, sizeof why)) rc = BAD("--sweep %s: %s", spec, why);
    }
    if (rc) jobs_free_axis(ax);
    return rc;
}

/* ---------------- input images, once per path ---------------- */

static int load_image(job_list *L, const char *opt, const char *path, const sd_pixels **out, char *err, size_t errlen) {
    for (int i = 0; i < L->n_images; i++)
        if (!strcmp(L->image_paths[i], path)) {
            *out = L->images[i];
            return 0;
        }
    char **paths = realloc(L->image_paths, (size_t)(L->n_images + 1) * sizeof *paths);
    if (paths) L->image_paths = paths;
    sd_pixels **images = paths ? realloc(L->images, (size_t)(L->n_images + 1) * sizeof *images) : NULL;
    if (images) L->images = images;
    sd_pixels *im = images ? calloc(1, sizeof *im) : NULL; /* its own allocation: jobs keep pointers to it */
    char *name = im ? strdup(path) : NULL;
    if (!name) {
        free(im);
        return NOMEM();
    }
    char why[SD_ERR_LEN];
    if (sd_pixels_read(path, im, why) != SD_OK) {
        free(im);
        free(name);
        return BAD("%s: %s", opt, why);
    }
    L->image_paths[L->n_images] = name;
    *out = L->images[L->n_images++] = im;
    return 0;
}

/* The image the job's path names (read once per path), attached to gen. */
static int attach_images(job_list *L, job_settings *s, char *err, size_t errlen) {
    const sd_pixels *init = NULL, *mask = NULL, *control = NULL;
    if (s->mask_path && !s->init_path) return BAD("--mask: needs an init image (-i FILE)");
    int rc = s->init_path ? load_image(L, "--init-img", s->init_path, &init, err, errlen) : 0;
    if (!rc && s->mask_path) rc = load_image(L, "--mask", s->mask_path, &mask, err, errlen);
    if (!rc && s->control_path) rc = load_image(L, "--control-image", s->control_path, &control, err, errlen);
    s->gen.init_image = init;
    s->gen.mask = mask;
    s->gen.control_image = control;
    return rc;
}

/* ---------------- base jobs ---------------- */

/* A seed for a job that was given none: different per call, printed with the image. */
static uint64_t random_seed(void) {
    static uint64_t calls;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 7) ^
                 (++calls * 0x9e3779b97f4a7c15ULL);
    x ^= x >> 29; /* splitmix-style finish so that consecutive calls differ in every bit */
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 32;
    return x & 0xffffffffu;
}

typedef struct {
    job_settings *v;
    int *line;
    int n, cap;
} base_list;

static int push_base(base_list *b, const job_settings *s, int line) {
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 16;
        job_settings *v = realloc(b->v, (size_t)cap * sizeof *v);
        if (v) b->v = v;
        int *ln = v ? realloc(b->line, (size_t)cap * sizeof *ln) : NULL;
        if (!ln) return -1;
        b->line = ln;
        b->cap = cap;
    }
    b->v[b->n] = *s;
    b->line[b->n++] = line;
    return 0;
}

static char *read_all(FILE *f) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
        }
    }
    if (buf) buf[n] = 0;
    return buf;
}

/* One prompt-file line onto a copy of the command line's job. */
static int parse_line(job_list *L, const cli_args *a, char *line, int number, job_settings *s, char *err,
                      size_t errlen) {
    *s = a->job;
    char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p != '-') {
        s->gen.prompt = p;
        return 0;
    } /* a plain prompt */
    char **words, *storage, why[SD_ERR_LEN];
    int n = jobs_split_line(p, &words, &storage, why, sizeof why);
    if (n == -2) return NOMEM();
    if (n < 0) return BAD("%s line %d: %s", L->source, number, why);
    if (!keep(L, storage) || !keep(L, (char *)words)) return NOMEM();
    int rc = cli_parse(n, words, NULL, s, why, sizeof why);
    if (rc) return rc == CLI_RUNTIME ? NOMEM() : BAD("%s line %d: %s", L->source, number, why);
    return 0;
}

/* The prompt file's jobs, or the command line's. */
static int read_base_jobs(job_list *L, const cli_args *a, base_list *b, char *err, size_t errlen) {
    if (!a->prompt_file) return push_base(b, &a->job, 0) ? NOMEM() : 0;
    int is_stdin = !strcmp(a->prompt_file, "-");
    FILE *f = is_stdin ? stdin : fopen(a->prompt_file, "rb");
    if (!f) return BAD("--prompt-file: cannot open '%s': %s", a->prompt_file, strerror(errno));
    char *text = keep(L, read_all(f));
    int read_error = ferror(f);
    if (!is_stdin) fclose(f);
    if (!text) return NOMEM();
    if (read_error) return BAD("--prompt-file: cannot read '%s'", a->prompt_file);
    int number = 0;
    for (char *line = text, *next; line; line = next) {
        number++;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) line[--len] = 0;
        const char *first = line + strspn(line, " \t");
        if (!*first || *first == '#') continue;
        job_settings s;
        int rc = parse_line(L, a, line, number, &s, err, errlen);
        if (rc) return rc;
        if (push_base(b, &s, number)) return NOMEM();
    }
    if (b->n == 0) return BAD("--prompt-file: '%s' has no jobs (only blank lines and # comments)", a->prompt_file);
    return 0;
}

/* A base job's own checks (as a separate `sd` run would make them). */
static int check_base(job_list *L, job_settings *s, int line, char *err, size_t errlen) {
    char why[SD_ERR_LEN], where[64] = "";
    if (line) snprintf(where, sizeof where, " line %d", line);
    if (!s->gen.prompt)
        return line ? BAD("%s%s: no prompt (--prompt TEXT)", L->source, where) : BAD("no prompt given (-p TEXT)");
    int rc = attach_images(L, s, why, sizeof why);
    if (rc == CLI_RUNTIME) return NOMEM();
    if (rc) return line ? BAD("%s%s: %s", L->source, where, why) : BAD("%s", why);
    if (!s->seed_given) s->gen.seed = random_seed();
    return 0;
}

/* ---------------- expansion ---------------- */

/* text with every `from` replaced by `to` (owned by L). */
static const char *replace_all(job_list *L, const char *text, const char *from, const char *to) {
    size_t n = 0, lf = strlen(from), lt = strlen(to), len = strlen(text);
    for (const char *p = text; lf && (p = strstr(p, from)); p += lf) n++;
    char *out = malloc(len + n * (lt > lf ? lt - lf : 0) + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = text, *hit;; p = hit + lf) {
        hit = lf ? strstr(p, from) : NULL;
        if (!hit) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, lt);
        o += lt;
    }
    return keep(L, out);
}

/* Applies value v of axis ax to s. */
static int apply_axis(job_list *L, const sweep_axis *ax, int v, job_settings *s, char *err, size_t errlen) {
    if (ax->option) return cli_job_option(s, ax->option, ax->values[v], err, errlen); /* checked when parsed */
    if (v == 0) return 0;                                                             /* prompt S/R: the original */
    const char *p = replace_all(L, s->gen.prompt, ax->values[0], ax->values[v]);
    const char *np = replace_all(L, s->gen.negative_prompt, ax->values[0], ax->values[v]);
    if (!p || !np) return NOMEM();
    s->gen.prompt = p;
    s->gen.negative_prompt = np;
    return 0;
}

/* Axes that cannot apply to a base job: strength without an init image, S/R text that is not in the prompt. */
static int check_axes(const job_list *L, const job_settings *s, int line, char *err, size_t errlen) {
    char where[64] = "";
    if (line) snprintf(where, sizeof where, " (%s line %d)", L->source, line);
    for (int x = 0; x < L->n_axes; x++) {
        const sweep_axis *ax = &L->axes[x];
        if (ax->option && !strcmp(ax->option, "--strength") && !s->gen.init_image)
            return BAD("--sweep %s: strength needs an init image (-i FILE)%s", ax->spec, where);
        if (!ax->option && !strstr(s->gen.prompt, ax->values[0]) && !strstr(s->gen.negative_prompt, ax->values[0]))
            return BAD("--sweep %s: '%s' is not in the prompt%s", ax->spec, ax->values[0], where);
    }
    return 0;
}

static int count_jobs(const base_list *b, const job_list *L, long long *total) {
    long long per = 1;
    for (int x = 0; x < L->n_axes; x++) per *= L->axes[x].n;
    *total = 0;
    for (int i = 0; i < b->n && *total <= JOBS_MAX; i++) *total += per * b->v[i].batch;
    return *total > JOBS_MAX ? -1 : 0;
}

/* Every base job x every sweep combination (first axis fastest) x its batch, numbered 1..n. */
static int expand(job_list *L, const base_list *b, char *err, size_t errlen) {
    long long total;
    if (count_jobs(b, L, &total)) return BAD("the sweep and batch make more than %d images", JOBS_MAX);
    if (!(L->jobs = calloc((size_t)total, sizeof *L->jobs))) return NOMEM();
    int sizes[CLI_MAX_AXES] = {1, 1, 1}, combos = 1;
    for (int x = 0; x < L->n_axes; x++) combos *= sizes[x] = L->axes[x].n;
    for (int i = 0; i < b->n; i++) {
        for (int c = 0; c < combos; c++) {
            job_settings s = b->v[i];
            int coord[CLI_MAX_AXES] = {c % sizes[0], c / sizes[0] % sizes[1], c / (sizes[0] * sizes[1])};
            for (int x = 0; x < L->n_axes; x++) {
                int rc = apply_axis(L, &L->axes[x], coord[x], &s, err, errlen);
                if (rc) return rc;
            }
            char why[SD_ERR_LEN];
            if (sd_gen_params_check(&s.gen, why) != SD_OK)
                return b->line[i] ? BAD("%s line %d: %s", L->source, b->line[i], why) : BAD("%s", why);
            if (s.gen.seed > UINT64_MAX - (uint64_t)(s.batch - 1))
                return BAD("-b %d from seed %llu: the seeds would pass 18446744073709551615, the largest", s.batch,
                           (unsigned long long)s.gen.seed);
            for (int k = 0; k < s.batch; k++) {
                job *j = &L->jobs[L->n];
                j->s = s;
                j->s.batch = 1;
                j->s.gen.seed = s.gen.seed + (uint64_t)k;
                j->line = b->line[i];
                j->number = ++L->n;
                memcpy(j->coord, coord, sizeof coord);
            }
        }
    }
    return 0;
}

int jobs_build(job_list *L, const cli_args *a, char *err, size_t errlen) {
    memset(L, 0, sizeof *L);
    static char source[300];
    if (a->prompt_file) snprintf(source, sizeof source, "prompt file '%s'", a->prompt_file);
    L->source = a->prompt_file ? source : "command line";
    for (int x = 0; x < a->n_sweeps; x++) {
        int rc = jobs_parse_sweep(a->sweeps[x], &L->axes[x], err, errlen);
        if (rc) return rc;
        L->n_axes++;
        for (int y = 0; y < x; y++)
            if (!strcmp(L->axes[y].key, L->axes[x].key))
                return BAD("--sweep %s: %s is already an axis", a->sweeps[x], L->axes[x].key);
    }
    base_list b = {0};
    int rc = read_base_jobs(L, a, &b, err, errlen);
    for (int i = 0; !rc && i < b.n; i++) rc = check_base(L, &b.v[i], b.line[i], err, errlen);
    for (int i = 0; !rc && i < b.n; i++) rc = check_axes(L, &b.v[i], b.line[i], err, errlen);
    L->n_base = b.n;
    if (!rc) rc = expand(L, &b, err, errlen);
    free(b.v);
    free(b.line);
    return rc;
}

/* ---------------- output names ---------------- */

void jobs_slug(const char *prompt, char *out, size_t max) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)prompt; *p && n + 1 < max; p++) {
        if (isalnum(*p) && *p < 128)
            out[n++] = (char)tolower(*p);
        else if (n && out[n - 1] != '_')
            out[n++] = '_';
    }
    while (n && out[n - 1] == '_') n--;
    out[n] = 0;
    if (!n) snprintf(out, max, "prompt");
}

void jobs_size(const job *j, int default_w, int default_h, int *w, int *h) {
    const sd_pixels *im = j->s.gen.init_image;
    *w = j->s.gen.width ? j->s.gen.width : im ? im->width - im->width % 8 : default_w;
    *h = j->s.gen.height ? j->s.gen.height : im ? im->height - im->height % 8 : default_h;
}

void jobs_generated_size(const job *j, int default_w, int default_h, int *w, int *h) {
    jobs_size(j, default_w, default_h, w, h);
    if (j->s.gen.hires_scale > 1) {
        *w = (int)(*w * j->s.gen.hires_scale) / 8 * 8;
        *h = (int)(*h * j->s.gen.hires_scale) / 8 * 8;
    }
}

/* "dir/name.png" -> "dir/name_<i>.png" for i > 0. */
static char *numbered(const char *path, int i) {
    size_t len = strlen(path) + 24;
    char *p = malloc(len);
    if (!p) return NULL;
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (i == 0)
        snprintf(p, len, "%s", path);
    else if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : path))
        snprintf(p, len, "%s_%d", path, i);
    else
        snprintf(p, len, "%.*s_%d%s", (int)(dot - path), path, i, dot);
    return p;
}

/* The template with its placeholders filled for job j. */
static int fill_template(const job_list *L, const job *j, const char *t, int dw, int dh, char **out, char *err,
                         size_t errlen) {
    size_t cap = strlen(t) + 256, n = 0;
    char *o = malloc(cap);
    if (!o) return NOMEM();
    int digits = snprintf(NULL, 0, "%d", L->n), w, h;
    jobs_size(j, dw, dh, &w, &h);
    for (const char *p = t; *p;) {
        char value[160];
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        size_t name_len = close ? (size_t)(close - p - 1) : 0;
#define NAMED(s) (name_len == strlen(s) && !strncmp(p + 1, s, name_len))
        if (!close) {
            value[0] = *p;
            value[1] = 0;
            p++;
        } else {
            if (NAMED("seed"))
                snprintf(value, sizeof value, "%llu", (unsigned long long)j->s.gen.seed);
            else if (NAMED("steps"))
                snprintf(value, sizeof value, "%d", j->s.gen.steps);
            else if (NAMED("cfg"))
                snprintf(value, sizeof value, "%g", j->s.gen.cfg_scale);
            else if (NAMED("sampler"))
                snprintf(value, sizeof value, "%s", sd_sampler_name(j->s.gen.sampler));
            else if (NAMED("w"))
                snprintf(value, sizeof value, "%d", w);
            else if (NAMED("h"))
                snprintf(value, sizeof value, "%d", h);
            else if (NAMED("index"))
                snprintf(value, sizeof value, "%0*d", digits, j->number);
            else if (NAMED("prompt"))
                jobs_slug(j->s.gen.prompt, value, 49);
            else {
                free(o);
                return BAD("'%s': unknown placeholder {%.*s} (one of: {seed} {steps} {cfg} {sampler} {w} {h} {index} "
                           "{prompt})",
                           t, (int)name_len, p + 1);
            }
            p = close + 1;
        }
#undef NAMED
        size_t vl = strlen(value);
        if (n + vl + 1 > cap) {
            char *b = realloc(o, cap = 2 * (n + vl + 1));
            if (!b) {
                free(o);
                return NOMEM();
            }
            o = b;
        }
        memcpy(o + n, value, vl);
        n += vl;
    }
    o[n] = 0;
    *out = o;
    return 0;
}

/* How often each template without placeholders has been used so far: the k-th use is numbered(t, k). */
typedef struct {
    const char **t;
    int *uses, n, last;
} use_table;

static int next_use(use_table *u, const char *t) {
    if (u->n && !strcmp(u->t[u->last], t)) return u->uses[u->last]++; /* jobs of one line come together */
    for (int i = 0; i < u->n; i++)
        if (!strcmp(u->t[i], t)) return u->uses[u->last = i]++;
    const char **nt = realloc(u->t, (size_t)(u->n + 1) * sizeof *nt);
    if (nt) u->t = nt;
    int *nu = nt ? realloc(u->uses, (size_t)(u->n + 1) * sizeof *nu) : NULL;
    if (!nu) return -1;
    u->uses = nu;
    u->t[u->n] = t;
    u->uses[u->last = u->n++] = 1;
    return 0;
}

typedef struct {
    const char *path;
    int job, latent;
    dev_t dev;
    ino_t ino;
} named_output;

/* By path, then job, then PNG before latent (so that messages name the outputs in the order the jobs write them). */
static int by_path(const void *a, const void *b) {
    const named_output *x = a, *y = b;
    int c = strcmp(x->path, y->path);
    return c ? c : x->job != y->job ? (x->job < y->job ? -1 : 1) : x->latent - y->latent;
}
static int by_inode(const void *a, const void *b) {
    const named_output *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static int collision(const named_output *x, const named_output *y, char *err, size_t errlen) {
    const char *kind[2] = {"-o", "--latent-out"}, *link = strcmp(x->path, y->path) ? " (through a link)" : "";
    if (x->latent == y->latent)
        return BAD("%s: jobs %d and %d both write it%s (use {index} or {seed} in %s)", y->path, x->job, y->job, link,
                   kind[x->latent]);
    if (x->job == y->job)
        return BAD("%s: named by two outputs (%s and %s)%s", y->path, kind[x->latent], kind[y->latent], link);
    return BAD("%s: named by two outputs (%s and %s) of jobs %d and %d%s", y->path, kind[x->latent], kind[y->latent],
               x->job, y->job, link);
}

/* Two outputs naming one file: the same text, or the same existing file. */
static int check_collisions(const job_list *L, char *err, size_t errlen) {
    named_output *o = malloc(2 * (size_t)L->n * sizeof *o);
    if (!o) return NOMEM();
    int n = 0, rc = 0, to_stdout = 0;
    for (int i = 0; i < L->n; i++) {
        o[n++] = (named_output){L->jobs[i].png, L->jobs[i].number, 0, 0, 0};
        if (L->jobs[i].latent) o[n++] = (named_output){L->jobs[i].latent, L->jobs[i].number, 1, 0, 0};
    }
    for (int i = 0; i < n; i++) to_stdout += !strcmp(o[i].path, "-");
    if (to_stdout > 1) rc = BAD("-o -: standard output takes one file, not a batch of %d", to_stdout);
    qsort(o, (size_t)n, sizeof *o, by_path);
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(o[i - 1].path, o[i].path)) rc = collision(&o[i - 1], &o[i], err, errlen);
    int m = 0; /* the outputs that exist already, by inode */
    for (int i = 0; i < n && !rc; i++) {
        struct stat st;
        if (strcmp(o[i].path, "-") && stat(o[i].path, &st) == 0 && !S_ISCHR(st.st_mode) && !S_ISFIFO(st.st_mode)) {
            o[m] = o[i];
            o[m].dev = st.st_dev;
            o[m++].ino = st.st_ino;
        }
    }
    qsort(o, (size_t)m, sizeof *o, by_inode);
    for (int i = 1; i < m && !rc; i++)
        if (o[i - 1].dev == o[i].dev && o[i - 1].ino == o[i].ino) rc = collision(&o[i - 1], &o[i], err, errlen);
    free(o);
    return rc;
}

int jobs_name_outputs(job_list *L, int dw, int dh, char *err, size_t errlen) {
    use_table uses[2] = {{0}, {0}}; /* PNG, latent */
    int rc = 0;
    for (int i = 0; i < L->n && !rc; i++) {
        job *j = &L->jobs[i];
        for (int latent = 0; latent < 2 && !rc; latent++) {
            const char *t = latent ? j->s.latent_out : j->s.output;
            char **out = latent ? &j->latent : &j->png, why[SD_ERR_LEN];
            if (!t) continue;
            if (strchr(t, '{')) {
                if ((rc = fill_template(L, j, t, dw, dh, out, why, sizeof why)))
                    rc = rc == CLI_RUNTIME ? NOMEM() : BAD("%s %s", latent ? "--latent-out" : "-o", why);
                continue;
            }
            int k = next_use(&uses[latent], t); /* "-" is never numbered: a second use is refused as a collision */
            if (k < 0 || !(*out = numbered(t, strcmp(t, "-") ? k : 0))) rc = NOMEM();
        }
    }
    for (int i = 0; i < 2; i++) {
        free(uses[i].t);
        free(uses[i].uses);
    }
    return rc ? rc : check_collisions(L, err, errlen);
}

void jobs_free(job_list *L) {
    for (int i = 0; i < L->n; i++) {
        free(L->jobs[i].png);
        free(L->jobs[i].latent);
    }
    free(L->jobs);
    for (int x = 0; x < L->n_axes; x++) jobs_free_axis(&L->axes[x]);
    for (int i = 0; i < L->n_strings; i++) free(L->strings[i]);
    free(L->strings);
    for (int i = 0; i < L->n_images; i++) {
        sd_pixels_free(L->images[i]);
        free(L->images[i]);
        free(L->image_paths[i]);
    }
    free(L->images);
    free(L->image_paths);
    memset(L, 0, sizeof *L);
}
