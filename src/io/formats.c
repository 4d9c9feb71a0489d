/* formats.c - see formats.h. */
#include "io/formats.h"

#include "io/ckpt.h"
#include "model/model.h"
#include "io/naming.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *formats_describe(model_format f) {
    switch (f) {
    case FORMAT_SAFETENSORS: return "safetensors";
    case FORMAT_CKPT: return "PyTorch checkpoint (.ckpt zip, read without executing its pickle)";
    case FORMAT_DIFFUSERS: return "diffusers folder";
    default: return "?";
    }
}

/* A safetensors or .ckpt file, by its first bytes. */
static int open_file(st_file *f, const char *path, model_format *format, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    unsigned char head[4] = {0};
    size_t got = fp ? fread(head, 1, 4, fp) : 0;
    if (fp) fclose(fp);
    if (got == 4 && ckpt_is_zip(head, 4)) {
        *format = FORMAT_CKPT;
        return ckpt_open(f, path, err, errlen);
    }
    *format = FORMAT_SAFETENSORS;
    return st_open(f, path, err, errlen);
}

/* ---------------- combined tables ---------------- */

static int add_tensor(st_file *f, int *cap, const st_tensor *src, const char *name) {
    if (f->n_tensors == *cap) {
        int c = *cap ? 2 * *cap : 1024;
        st_tensor *t = realloc(f->tensors, (size_t)c * sizeof *t);
        if (!t) return -1;
        f->tensors = t;
        *cap = c;
    }
    st_tensor *t = &f->tensors[f->n_tensors];
    *t = *src;
    if (!(t->name = strdup(name))) return -1;
    f->n_tensors++;
    return 0;
}

static int add_part(st_file *f, st_file *part) {
    st_file *p = realloc(f->parts, (size_t)(f->n_parts + 1) * sizeof *p);
    if (!p) return -1;
    f->parts = p;
    f->parts[f->n_parts++] = *part;
    memset(part, 0, sizeof *part);
    return 0;
}

static int add_meta(st_file *f, const char *key, const char *value) {
    st_meta *m = realloc(f->meta, (size_t)(f->n_meta + 1) * sizeof *m);
    if (!m) return -1;
    f->meta = m;
    f->meta[f->n_meta].key = strdup(key);
    f->meta[f->n_meta].value = strdup(value);
    return f->meta[f->n_meta++].key && f->meta[f->n_meta - 1].value ? 0 : -1;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int finish_table(st_file *f, char *err, size_t errlen) {
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, compare_names);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name))
            return st_fail(err, errlen, f->path, "tensor '%s' appears twice", f->tensors[i].name);
    return 0;
}

/* "name.weight" → module "name" and suffix ".weight" (the last dot). */
static void split_suffix(const char *name, char *module, size_t len, const char **suffix) {
    const char *dot = strrchr(name, '.');
    *suffix = dot ? dot : "";
    snprintf(module, len, "%.*s", (int)(dot ? dot - name : (long)strlen(name)), name);
}

/* ---------------- diffusers folders ---------------- */

static cJSON *read_json(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return cJSON_Parse(buf);
}

/* dir/sub/base.safetensors, else dir/sub/base.fp16.safetensors. */
static int open_component(st_file *part, const char *dir, const char *sub, const char *base, char *err, size_t errlen) {
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s/%s.safetensors", dir, sub, base);
    if (stat(path, &sb) != 0) snprintf(path, sizeof path, "%s/%s/%s.fp16.safetensors", dir, sub, base);
    if (stat(path, &sb) != 0)
        return st_fail(err, errlen, dir,
                       "diffusers folder without %s/%s.safetensors (or .fp16.safetensors; .bin weights are not read)",
                       sub, base);
    return st_open(part, path, err, errlen);
}

/* The folder's config files: unet/ and text_encoder/ must have one, scheduler/ may. */
typedef struct {
    cJSON *unet, *text, *sched;
} folder_configs;

static int read_config(const char *dir, const char *file, int required, cJSON **out, char *err, size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat sb;
    if (stat(path, &sb) != 0) return required ? st_fail(err, errlen, dir, "diffusers folder without %s", file) : 0;
    if (!(*out = read_json(path))) return st_fail(err, errlen, path, "not valid JSON (or larger than 64 KB)");
    return 0;
}

static int config_int(const cJSON *c, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItem(c, key);
    return cJSON_IsNumber(v) ? v->valueint : dflt;
}

static int up_has_attention(int i, void *user) {
    char name[128];
    snprintf(name, sizeof name, "up_blocks.%d.attentions.0.norm.weight", i);
    return st_find(user, name) != NULL;
}

/* Renames one component's tensors into f; kind 'u' UNet, 'v' VAE, 't' text encoder. */
static int add_component(st_file *f, int *cap, const st_file *part, char kind, int L, char *err, size_t errlen) {
    int n_up = 0;
    char probe[64];
    while (snprintf(probe, sizeof probe, "decoder.up_blocks.%d.resnets.0.conv1.weight", n_up), st_find(part, probe))
        n_up++;
    for (int i = 0; i < part->n_tensors; i++) {
        const st_tensor *t = &part->tensors[i];
        char module[512], orig[600], name[700];
        const char *suffix;
        split_suffix(t->name, module, sizeof module, &suffix);
        int ok = 0;
        if (kind == 'u')
            ok = naming_unet_from_diffusers(module, L, up_has_attention, (void *)part, orig, sizeof orig) == 0;
        if (kind == 'v') ok = naming_vae_from_diffusers(module, n_up, orig, sizeof orig) == 0;
        if (kind == 't') ok = !strncmp(module, "text_model.", 11) && snprintf(orig, sizeof orig, "%s", module) > 0;
        if (kind == 't' && strstr(t->name, "position_ids")) continue; /* a buffer, not a weight */
        if (!ok)
            return st_fail(err, errlen, part->path, "tensor '%s' has no place in a Stable Diffusion model", t->name);
        snprintf(name, sizeof name, "%s%s%s",
                 kind == 'u'   ? UNET_PREFIX
                 : kind == 'v' ? VAE_PREFIX
                               : "cond_stage_model.transformer.",
                 orig, suffix);
        if (add_tensor(f, cap, t, name) != 0) return st_fail(err, errlen, part->path, "out of memory");
    }
    return 0;
}

/* The sd.* metadata keys from the folder's configs (what a single file would carry in __metadata__). */
static int folder_metadata(st_file *f, const folder_configs *c, const char *dir, char *err, size_t errlen) {
    char v[32];
    int text_heads = config_int(c->text, "num_attention_heads", 0);
    int unet_heads = config_int(c->unet, "attention_head_dim", 0); /* the head count, in SD 1.x */
    int ok = 1;
    if (text_heads > 0) ok &= snprintf(v, sizeof v, "%d", text_heads) > 0 && add_meta(f, "sd.text.heads", v) == 0;
    if (unet_heads > 0) ok &= snprintf(v, sizeof v, "%d", unet_heads) > 0 && add_meta(f, "sd.unet.heads", v) == 0;
    const cJSON *pred = cJSON_GetObjectItem(c->sched, "prediction_type");
    if (cJSON_IsString(pred)) ok &= add_meta(f, "sd.prediction", pred->valuestring) == 0;
    return ok ? 0 : st_fail(err, errlen, dir, "out of memory");
}

static int open_folder(st_file *f, const char *dir, const folder_configs *c, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(dir))) return st_fail(err, errlen, dir, "out of memory");
    if (cJSON_IsString(cJSON_GetObjectItem(c->unet, "addition_embed_type")))
        return st_fail(err, errlen, dir,
                       "an SDXL diffusers folder: not supported yet (use its single-file checkpoint)");
    if (config_int(c->unet, "cross_attention_dim", 768) != 768 && config_int(c->text, "hidden_size", 768) == 1024)
        return st_fail(err, errlen, dir,
                       "an SD 2.x diffusers folder: not supported yet (use its single-file checkpoint)");
    static const struct {
        const char *sub, *base;
        char kind;
    } parts[] = {{"unet", "diffusion_pytorch_model", 'u'},
                 {"vae", "diffusion_pytorch_model", 'v'},
                 {"text_encoder", "model", 't'}};
    const int L = config_int(c->unet, "layers_per_block", 2);
    int cap = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        st_file part;
        if (open_component(&part, dir, parts[i].sub, parts[i].base, err, errlen) != 0) return -1;
        if (add_part(f, &part) != 0) {
            st_close(&part);
            return st_fail(err, errlen, dir, "out of memory");
        }
        if (add_component(f, &cap, &f->parts[f->n_parts - 1], parts[i].kind, L, err, errlen) != 0) return -1;
    }
    if (folder_metadata(f, c, dir, err, errlen) != 0) return -1;
    return finish_table(f, err, errlen);
}

int formats_open(st_file *f, const char *path, model_format *format, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char unet_dir[4200];
        snprintf(unet_dir, sizeof unet_dir, "%s/unet", path);
        if (stat(unet_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return memset(f, 0, sizeof *f),
                   st_fail(err, errlen, path, "is a directory, not a model file (nor a diffusers folder with unet/)");
        *format = FORMAT_DIFFUSERS;
        memset(f, 0, sizeof *f);
        folder_configs c = {0};
        int rc = read_config(path, "unet/config.json", 1, &c.unet, err, errlen) ||
                 read_config(path, "text_encoder/config.json", 1, &c.text, err, errlen) ||
                 read_config(path, "scheduler/scheduler_config.json", 0, &c.sched, err, errlen) ||
                 open_folder(f, path, &c, err, errlen);
        cJSON_Delete(c.unet);
        cJSON_Delete(c.text);
        cJSON_Delete(c.sched);
        if (rc) {
            st_close(f);
            memset(f, 0, sizeof *f);
            return -2;
        }
        return 0;
    }
    return open_file(f, path, format, err, errlen);
}

/* ---------------- standalone VAEs ---------------- */

int formats_replace_vae(st_file *f, const char *path, char *err, size_t errlen) {
    st_file vae;
    model_format fmt;
    if (open_file(&vae, path, &fmt, err, errlen) != 0) return -1;
    int diffusers = 0, original = 0, prefixed = 0;
    for (int i = 0; i < vae.n_tensors; i++) {
        const char *n = vae.tensors[i].name;
        prefixed += !strncmp(n, VAE_PREFIX, strlen(VAE_PREFIX));
        diffusers += strstr(n, "decoder.up_blocks.") != NULL;
        original += !strncmp(n, "decoder.up.", 11) || !strncmp(n, VAE_PREFIX "decoder.up.", strlen(VAE_PREFIX) + 11);
    }
    if (!diffusers && !original) {
        st_close(&vae);
        return st_fail(err, errlen, path, "not a VAE (no decoder.up.* or decoder.up_blocks.* tensors)");
    }
    /* the new table: f's tensors without its VAE, then the VAE's under first_stage_model. */
    st_file t = *f;
    t.tensors = NULL;
    t.n_tensors = 0;
    int cap = 0, rc = 0;
    for (int i = 0; i < f->n_tensors && !rc; i++)
        if (strncmp(f->tensors[i].name, VAE_PREFIX, strlen(VAE_PREFIX)))
            rc = add_tensor(&t, &cap, &f->tensors[i], f->tensors[i].name);
    int n_up = 0;
    char probe[96];
    while (snprintf(probe, sizeof probe, "decoder.up_blocks.%d.resnets.0.conv1.weight", n_up), st_find(&vae, probe))
        n_up++;
    for (int i = 0; i < vae.n_tensors && !rc; i++) {
        const char *n = vae.tensors[i].name;
        if (prefixed && strncmp(n, VAE_PREFIX, strlen(VAE_PREFIX))) continue; /* a whole checkpoint: only its VAE */
        if (prefixed) n += strlen(VAE_PREFIX);
        if (!strncmp(n, "loss.", 5) || strstr(n, "position_ids"))
            continue; /* training-only tensors of some VAE files */
        char module[512], orig[600], name[700];
        const char *suffix;
        split_suffix(n, module, sizeof module, &suffix);
        if (diffusers)
            naming_vae_from_diffusers(module, n_up, orig, sizeof orig);
        else
            snprintf(orig, sizeof orig, "%s", module);
        snprintf(name, sizeof name, VAE_PREFIX "%s%s", orig, suffix);
        rc = add_tensor(&t, &cap, &vae.tensors[i], name);
    }
    if (!rc) rc = add_part(&t, &vae);
    if (rc) { /* undo: the original table is kept */
        for (int i = 0; i < t.n_tensors; i++) free(t.tensors[i].name);
        free(t.tensors);
        st_close(&vae);
        return st_fail(err, errlen, path, "out of memory");
    }
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    *f = t;
    return finish_table(f, err, errlen);
}
