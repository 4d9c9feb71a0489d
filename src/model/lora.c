/* lora.c - see lora.h. */
#include "model/lora.h"
#include "io/naming.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* A weight a LoRA module can change: key is the module's path with '.' as '_' and a "unet_" or "te_" root
 * ("unet_down_blocks_0_attentions_0_proj_in"), the rows [row0, row0 + rows) of tensor t. */
typedef struct {
    char *key;
    const st_tensor *t;
    int row0, rows;
} target;

/* One module of one file, mapped: W[row0 + o, :] += scale · Σ_r up[o, r] · down[r, :]. */
typedef struct {
    const st_tensor *down, *up; /* [r, K] (or [r, in, kh, kw]), [rows, r] (or [rows, r, 1, 1]) */
    const target *to;
    float scale; /* multiplier · alpha / rank */
    int file;
    int merged;
} delta;

typedef struct {
    st_file st;
    float multiplier;
    int modules, matched, unsupported; /* modules with down+up, of them mapped; tensors of other kinds */
} lora_file;

struct lora_set {
    int n_text;      /* the model's text encoders (their roots: "te", or "te1", "te2") */
    target *targets; /* [n_targets] sorted by key */
    int n_targets, cap_targets;
    lora_file *files; /* [n_files] */
    int n_files;
    delta *deltas; /* [n_deltas] */
    int n_deltas, cap_deltas;
};

/* ---------------- the name table ---------------- */

static int add_target(lora_set *s, const char *root, const char *path, const st_tensor *t, int row0, int rows) {
    if (s->n_targets == s->cap_targets) {
        int cap = s->cap_targets ? 2 * s->cap_targets : 512;
        target *p = realloc(s->targets, (size_t)cap * sizeof *p);
        if (!p) return -1;
        s->targets = p;
        s->cap_targets = cap;
    }
    size_t len = strlen(root) + strlen(path) + 2;
    char *key = malloc(len);
    if (!key) return -1;
    snprintf(key, len, "%s_%s", root, path);
    for (char *c = key; *c; c++)
        if (*c == '.') *c = '_';
    s->targets[s->n_targets++] = (target){key, t, row0, rows};
    return 0;
}

/* Resnets per UNet level: input_blocks.(L+1).0.op is the first downsampler. */
static int unet_levels_resnets(const tensor_store *st) {
    char name[128];
    for (int n = 1; n < 16; n++) {
        snprintf(name, sizeof name, UNET_PREFIX "input_blocks.%d.0.op.weight", n);
        if (store_find(st, name)) return n - 1;
    }
    return 2;
}

/* A text-encoder tensor's transformers module path(s) under the root ("te", or "te1" / "te2" for a model with two
 * encoders): CLIP names are transformers' already; OpenCLIP's fused attention in_proj [3C, C] is q_proj, k_proj,
 * v_proj as row ranges. */
static int add_text_targets(lora_set *s, const text_encoder_desc *e, const char *root, const st_tensor *t) {
    const char *name = t->name;
    size_t plen = strlen(e->prefix), nlen = strlen(name);
    if (e->naming == TEXT_CLIP) {
        if (nlen < 7 || strcmp(name + nlen - 7, ".weight")) return 0;
        char path[256];
        snprintf(path, sizeof path, "text_model.%.*s", (int)(nlen - plen - 7), name + plen);
        return add_target(s, root, path, t, 0, (int)t->shape[0]);
    }
    int layer;
    char rest[128], path[256];
    if (sscanf(name + plen, "transformer.resblocks.%d.%127s", &layer, rest) != 2) return 0;
    static const char *const map[][2] = {{"attn.out_proj.weight", "self_attn.out_proj"},
                                         {"mlp.c_fc.weight", "mlp.fc1"},
                                         {"mlp.c_proj.weight", "mlp.fc2"}};
    if (!strcmp(rest, "attn.in_proj_weight")) {
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        int C = (int)(t->shape[0] / 3);
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "text_model.encoder.layers.%d.self_attn.%s", layer, qkv[i]);
            if (add_target(s, root, path, t, i * C, C) != 0) return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(rest, map[i][0])) {
            snprintf(path, sizeof path, "text_model.encoder.layers.%d.%s", layer, map[i][1]);
            return add_target(s, root, path, t, 0, (int)t->shape[0]);
        }
    return 0;
}

static int compare_targets(const void *a, const void *b) {
    return strcmp(((const target *)a)->key, ((const target *)b)->key);
}

/* The root of encoder i's modules: "te" when the model has one encoder, else "te1", "te2" (kohya's names). */
static void text_root(const model_desc *d, int i, char *root, size_t len) {
    if (d->n_text == 1)
        snprintf(root, len, "te");
    else
        snprintf(root, len, "te%d", i + 1);
}

lora_set *lora_set_create(const tensor_store *st, const model_desc *d) {
    lora_set *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_text = d->n_text;
    const int L = unet_levels_resnets(st);
    const size_t ulen = strlen(UNET_PREFIX);
    for (int i = 0; i < st->file.n_tensors; i++) {
        const st_tensor *t = &st->file.tensors[i];
        size_t nlen = strlen(t->name);
        int rc = 0;
        if (t->ndim != 2 && t->ndim != 4) continue; /* only matrices and convolutions carry LoRAs */
        if (!strncmp(t->name, UNET_PREFIX, ulen) && nlen > ulen + 7 && !strcmp(t->name + nlen - 7, ".weight")) {
            char orig[256], path[256];
            snprintf(orig, sizeof orig, "%.*s", (int)(nlen - ulen - 7), t->name + ulen);
            /* kohya names SD 1.x / 2.x modules after diffusers' layout, SDXL ones after the single file's (sgm) */
            if (naming_unet_to_diffusers(orig, L, path, sizeof path) == 0)
                rc = add_target(s, "unet", path, t, 0, (int)t->shape[0]);
            if (rc == 0) rc = add_target(s, "unet", orig, t, 0, (int)t->shape[0]);
        } else {
            for (int e = 0; e < d->n_text && rc == 0; e++) {
                char root[16]; /* "te" or "te<i>" */
                text_root(d, e, root, sizeof root);
                if (!strncmp(t->name, d->text[e].prefix, strlen(d->text[e].prefix)))
                    rc = add_text_targets(s, &d->text[e], root, t);
            }
        }
        if (rc != 0) {
            lora_set_free(s);
            return NULL;
        }
    }
    qsort(s->targets, (size_t)s->n_targets, sizeof *s->targets, compare_targets);
    return s;
}

void lora_set_free(lora_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_targets; i++) free(s->targets[i].key);
    for (int i = 0; i < s->n_files; i++) st_close(&s->files[i].st);
    free(s->targets);
    free(s->files);
    free(s->deltas);
    free(s);
}

/* ---------------- reading a LoRA file ---------------- */

/* Module key of a LoRA tensor name, in the table's form ("unet_…" / "te_…"), and what the tensor is:
 * 'd' down, 'u' up, 'a' alpha, 0 another kind. Returns 0, or -1 when the name has no known root. */
static int module_key(const lora_set *s, const char *name, char *key, size_t len, char *kind) {
    static const struct {
        const char *suffix;
        char kind;
    } suffixes[] = {{".lora_down.weight", 'd'},
                    {".lora_up.weight", 'u'},
                    {".alpha", 'a'},
                    {".lora_A.weight", 'd'},
                    {".lora_B.weight", 'u'}};
    /* kohya's lora_te_ (one encoder), lora_te1_ / lora_te2_ (SDXL); PEFT's text_encoder. is the first encoder */
    const char *const roots[][2] = {{"lora_unet_", "unet_"},
                                    {"lora_te_", "te_"},
                                    {"lora_te1_", "te1_"},
                                    {"lora_te2_", "te2_"},
                                    {"unet.", "unet_"},
                                    {"text_encoder_2.", "te2_"},
                                    {"text_encoder.", s->n_text > 1 ? "te1_" : "te_"}};
    if (!strncmp(name, "base_model.model.", 17)) name += 17; /* PEFT's wrapper prefix */
    size_t nlen = strlen(name), cut = nlen;
    *kind = 0;
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t sl = strlen(suffixes[i].suffix);
        if (nlen > sl && !strcmp(name + nlen - sl, suffixes[i].suffix)) {
            cut = nlen - sl;
            *kind = suffixes[i].kind;
            break;
        }
    }
    if (!*kind) { /* another adapter kind (LoHa, DoRA, ...): its module is the name up to the last '.' part */
        const char *dot = strrchr(name, '.');
        cut = dot ? (size_t)(dot - name) : nlen;
    }
    for (size_t i = 0; i < sizeof roots / sizeof *roots; i++) {
        size_t rl = strlen(roots[i][0]);
        if (strncmp(name, roots[i][0], rl) || cut <= rl) continue;
        snprintf(key, len, "%s%.*s", roots[i][1], (int)(cut - rl), name + rl);
        for (char *c = key; *c; c++)
            if (*c == '.') *c = '_';
        return 0;
    }
    snprintf(key, len, "%.*s", (int)cut, name);
    return -1;
}

const st_tensor *lora_set_lookup(const lora_set *s, const char *module, int *row0) {
    target probe = {(char *)module, NULL, 0, 0};
    const target *t = bsearch(&probe, s->targets, (size_t)s->n_targets, sizeof *s->targets, compare_targets);
    if (t && row0) *row0 = t->row0;
    return t ? t->t : NULL;
}

int lora_set_target_at(const lora_set *s, int i, const char **key, const st_tensor **t, int *row0, int *rows) {
    if (i < 0 || i >= s->n_targets) return 0;
    const target *g = &s->targets[i];
    *key = g->key;
    *t = g->t;
    *row0 = g->row0;
    *rows = g->rows;
    return 1;
}

static float scalar_value(const st_tensor *t) {
    float v = 0;
    weight w = {.half = t->data, .dtype = t->dtype, .numel = 1};
    weight_rows_f32(&w, 0, 1, &v, 1);
    return v;
}

static int add_delta(lora_set *s, delta d) {
    if (s->n_deltas == s->cap_deltas) {
        int cap = s->cap_deltas ? 2 * s->cap_deltas : 256;
        delta *p = realloc(s->deltas, (size_t)cap * sizeof *p);
        if (!p) return -1;
        s->deltas = p;
        s->cap_deltas = cap;
    }
    s->deltas[s->n_deltas++] = d;
    return 0;
}

/* Does module (down, up) fit target `to`? Returns 0, or -1 with err naming the tensors. */
static int check_module(const char *path, const char *module, const st_tensor *down, const st_tensor *up,
                        const target *to, char *err, size_t errlen) {
    const st_tensor *W = to->t;
    if (!st_dtype_is_float(down->dtype) || !st_dtype_is_float(up->dtype) || (down->ndim != 2 && down->ndim != 4) ||
        (up->ndim != 2 && up->ndim != 4) || (up->ndim == 4 && up->shape[2] * up->shape[3] != 1) || down->shape[0] < 1) {
        snprintf(err, errlen, "%s: module '%s': lora_down / lora_up are not float matrices of the usual shapes", path,
                 module);
        return -1;
    }
    if (up->shape[1] != down->shape[0]) {
        snprintf(err, errlen, "%s: module '%s': lora_up has rank %lld but lora_down has rank %lld", path, module,
                 (long long)up->shape[1], (long long)down->shape[0]);
        return -1;
    }
    int64_t K = W->numel / W->shape[0];
    int kernel_ok = down->ndim == 2 || W->ndim == 2 ? down->numel / down->shape[0] == K
                                                    : down->shape[1] == W->shape[1] && down->shape[2] == W->shape[2] &&
                                                          down->shape[3] == W->shape[3];
    if (up->shape[0] != to->rows || down->numel / down->shape[0] != K || !kernel_ok) {
        snprintf(err, errlen,
                 "%s: module '%s' (%lld x %lld) does not fit tensor '%s' (%lld x %lld): a LoRA for another model?",
                 path, module, (long long)up->shape[0], (long long)(down->numel / down->shape[0]), W->name,
                 (long long)to->rows, (long long)K);
        return -1;
    }
    return 0;
}

/* A tensor of a LoRA file with its module key and kind (module_key), for grouping. */
typedef struct {
    char key[512];
    char kind;
    int known, index;
} keyed_tensor;

static int compare_keyed(const void *a, const void *b) {
    const keyed_tensor *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Maps one module: down, up (both required) and an optional alpha of the same key. */
static int map_module(lora_set *s, lora_file *f, int file_index, const char *path, const keyed_tensor *k,
                      const st_tensor *down, const st_tensor *up, const st_tensor *alpha, FILE *log, int verbose,
                      char *err, size_t errlen) {
    if (!down || !up) {
        snprintf(err, errlen, "%s: module '%s' has %s weight but no %s weight", path, k->key, down ? "a down" : "an up",
                 down ? "up" : "down");
        return -1;
    }
    f->modules++;
    const target *to = k->known ? bsearch(&(target){(char *)k->key, NULL, 0, 0}, s->targets, (size_t)s->n_targets,
                                          sizeof *s->targets, compare_targets)
                                : NULL;
    if (!to) {
        if (log && verbose) fprintf(log, "sd: lora %s: no layer for module '%s'\n", path, k->key);
        return 0;
    }
    if (check_module(path, k->key, down, up, to, err, errlen) != 0) return -1;
    float rank = (float)down->shape[0];
    float alpha_v = alpha && alpha->numel == 1 && st_dtype_is_float(alpha->dtype) ? scalar_value(alpha) : rank;
    if (add_delta(s, (delta){down, up, to, f->multiplier * alpha_v / rank, file_index, 0}) != 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    f->matched++;
    return 0;
}

/* Groups the file's tensors into modules (sorted by module key) and maps each; counts go to f. */
static int map_modules(lora_set *s, lora_file *f, int file_index, const char *path, FILE *log, int verbose, char *err,
                       size_t errlen) {
    const st_file *st = &f->st;
    keyed_tensor *k = malloc(((size_t)st->n_tensors + 1) * sizeof *k); /* [n_tensors] */
    if (!k) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < st->n_tensors; i++) {
        k[i].known = module_key(s, st->tensors[i].name, k[i].key, sizeof k[i].key, &k[i].kind) == 0;
        k[i].index = i;
        if (!k[i].kind) {
            f->unsupported++;
            if (log && verbose) fprintf(log, "sd: lora %s: unsupported tensor '%s'\n", path, st->tensors[i].name);
        }
    }
    qsort(k, (size_t)st->n_tensors, sizeof *k, compare_keyed);
    int rc = 0;
    for (int g = 0, e; g < st->n_tensors && !rc; g = e) { /* the group [g, e) shares one key */
        const st_tensor *part[3] = {NULL, NULL, NULL};    /* down, up, alpha */
        for (e = g; e < st->n_tensors && !strcmp(k[e].key, k[g].key); e++) {
            const char *kinds = "dua", *at = k[e].kind ? strchr(kinds, k[e].kind) : NULL;
            if (at) part[at - kinds] = &st->tensors[k[e].index];
        }
        if (part[0] || part[1])
            rc = map_module(s, f, file_index, path, &k[g], part[0], part[1], part[2], log, verbose, err, errlen);
    }
    free(k);
    return rc;
}

int lora_set_add(lora_set *s, const char *path, float multiplier, FILE *log, int verbose, char *err, size_t errlen) {
    lora_file *files = realloc(s->files, (size_t)(s->n_files + 1) * sizeof *files);
    if (!files) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    s->files = files;
    lora_file *f = &files[s->n_files];
    memset(f, 0, sizeof *f);
    f->multiplier = multiplier;
    if (st_open(&f->st, path, err, errlen) != 0) return -1;
    s->n_files++;
    if (map_modules(s, f, s->n_files - 1, path, log, verbose, err, errlen) != 0) return -1;
    if (f->matched == 0) {
        snprintf(err, errlen,
                 "%s: none of its %d LoRA modules matches a layer of this model (a LoRA for another model family?)",
                 path, f->modules);
        return -1;
    }
    return 0;
}

/* ---------------- merging ---------------- */

int lora_set_targets(const lora_set *s, const st_tensor *t) {
    for (int i = 0; s && i < s->n_deltas; i++)
        if (s->deltas[i].to->t == t) return 1;
    return 0;
}

/* float32 copy of a LoRA tensor. */
static float *tensor_f32(const st_tensor *t) {
    float *f = malloc((size_t)t->numel * sizeof(float));
    weight w = {.half = t->data, .dtype = t->dtype, .numel = t->numel};
    if (f) weight_rows_f32(&w, 0, t->numel, f, 1);
    return f;
}

int lora_set_merge(lora_set *s, const st_tensor *t, float *w) {
    const int64_t K = t->numel / t->shape[0];
    for (int i = 0; i < s->n_deltas; i++) {
        delta *d = &s->deltas[i];
        if (d->to->t != t) continue;
        const int r = (int)d->down->shape[0], rows = d->to->rows;
        float *down = tensor_f32(d->down), *up = tensor_f32(d->up); /* [r, K], [rows, r] */
        if (down && up) {                                           /* W[row0:row0+rows, :] += scale · up · down */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, (int)K, r, d->scale, up, r, down, (int)K, 1.0f,
                        w + (size_t)d->to->row0 * K, (int)K);
            d->merged = 1;
        }
        free(down);
        free(up);
        if (!d->merged) return -1;
    }
    return 0;
}

void lora_set_report(const lora_set *s, FILE *log) {
    if (!log) return;
    for (int f = 0; f < s->n_files; f++) {
        int merged = 0;
        for (int i = 0; i < s->n_deltas; i++) merged += s->deltas[i].file == f && s->deltas[i].merged;
        const lora_file *lf = &s->files[f];
        fprintf(log, "sd: lora %s (x%g): %d of %d modules applied", lf->st.path, lf->multiplier, merged, lf->modules);
        if (lf->unsupported) fprintf(log, ", %d tensors of unsupported kinds ignored", lf->unsupported);
        fprintf(log, "%s\n", merged < lf->modules || lf->unsupported ? " (-v lists the others)" : "");
    }
}
