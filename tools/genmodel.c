/* genmodel.c - writes a full-size random-weight checkpoint with exactly the names, shapes and
 * dtypes of a manifest (models/sd15_manifest.json: the v1-5-pruned-emaonly.safetensors layout),
 * for speed and memory measurements. Values are deterministic (xorshift) at scales that keep
 * activations finite through the whole network: weights ~ U(-1, 1)/sqrt(fan_in), norm gains
 * near 1, biases near 0, embeddings ~ 0.02.
 *
 *   sd-genmodel models/sd15_manifest.json OUT.safetensors [f16|f32]
 *   sd-genmodel --lora RANK MODEL.safetensors OUT.safetensors
 *       a random kohya-format LoRA of that rank for MODEL: every layer inside the UNet's attention blocks
 *       and every text-encoder matrix (what kohya's trainer targets by default), float16, alpha = rank / 2.
 */
#include "model/lora.h"
#include "model/model.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float lora_alpha = 1.0f; /* the value of every .alpha of a generated LoRA */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static float uniform_pm1(void) { /* xorshift64*, U(-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545F4914F6CDD1DULL;
    return (float)((double)(r >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Value i of tensor `name` (shape dims[ndim]). */
static float value_for(const char *name, const int64_t *dims, int ndim, int64_t i) {
    if (strstr(name, "alphas_cumprod") || strstr(name, "betas")) { /* the real SD schedule */
        double b0 = sqrt(0.00085), b1 = sqrt(0.012), ac = 1.0;
        for (int64_t k = 0; k <= i; k++) {
            double b = b0 + (b1 - b0) * k / 999.0;
            ac *= 1.0 - b * b;
        }
        double beta = b0 + (b1 - b0) * i / 999.0;
        return strstr(name, "betas") ? (float)(beta * beta) : (float)ac;
    }
    if (ndim == 0) return ends_with(name, ".alpha") ? lora_alpha : 0.9999f;
    if (strstr(name, "embedding")) return 0.02f * uniform_pm1();
    int is_norm = strstr(name, "norm") != NULL;
    if (ndim == 1) return ends_with(name, ".weight") && is_norm ? 1.0f + 0.05f * uniform_pm1() : 0.01f * uniform_pm1();
    int64_t fan_in = 1;
    for (int d = 1; d < ndim; d++) fan_in *= dims[d];
    return uniform_pm1() / sqrtf((float)fan_in);
}

/* A manifest's "tensors" array ([[name, shape, dtype], ...]) for a random kohya LoRA of `rank` for the model. */
static cJSON *lora_manifest(const char *model_path, int rank) {
    sd_model m;
    char err[512];
    if (model_open(&m, model_path, NULL, err, sizeof err) != SD_OK) {
        fprintf(stderr, "sd-genmodel: error: %s\n", err);
        return NULL;
    }
    lora_set *s = lora_set_create(&m.store, &m.d);
    cJSON *tensors = cJSON_CreateArray();
    const char *key;
    const st_tensor *t;
    int row0, rows;
    for (int i = 0; s && lora_set_target_at(s, i, &key, &t, &row0, &rows); i++) {
        if (!strstr(key, "_attentions_") && strncmp(key, "te_", 3)) continue;
        char name[600];
        int64_t K = t->numel / t->shape[0];
        const char *kinds[3] = {"lora_down.weight", "lora_up.weight", "alpha"};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "lora_%s.%s", key, kinds[k]);
            cJSON *e = cJSON_CreateArray(), *shape = cJSON_CreateArray();
            cJSON_AddItemToArray(e, cJSON_CreateString(name));
            if (k == 0) {
                cJSON_AddItemToArray(shape, cJSON_CreateNumber(rank));
                cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)K));
            }
            if (k == 1) {
                cJSON_AddItemToArray(shape, cJSON_CreateNumber(rows));
                cJSON_AddItemToArray(shape, cJSON_CreateNumber(rank));
            }
            cJSON_AddItemToArray(e, shape);
            cJSON_AddItemToArray(e, cJSON_CreateString("float16"));
            cJSON_AddItemToArray(tensors, e);
        }
    }
    lora_set_free(s);
    model_close(&m);
    return tensors;
}

static cJSON *read_manifest(const char *path, cJSON **root) {
    FILE *mf = fopen(path, "rb");
    if (!mf) {
        fprintf(stderr, "sd-genmodel: error: %s: cannot open\n", path);
        return NULL;
    }
    fseek(mf, 0, SEEK_END);
    long len = ftell(mf);
    fseek(mf, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    size_t got = fread(text, 1, (size_t)len, mf);
    fclose(mf);
    text[got] = 0;
    *root = cJSON_Parse(text);
    free(text);
    cJSON *tensors = cJSON_GetObjectItem(*root, "tensors");
    if (!cJSON_IsArray(tensors)) {
        fprintf(stderr, "sd-genmodel: error: %s: no tensors array\n", path);
        return NULL;
    }
    return tensors;
}

int main(int argc, char **argv) {
    cJSON *root = NULL, *tensors;
    const char *out_path;
    int f16 = 1;
    if (argc == 5 && !strcmp(argv[1], "--lora")) {
        int rank = atoi(argv[2]);
        if (rank < 1) {
            fprintf(stderr, "sd-genmodel: error: --lora: rank '%s' is not a positive integer\n", argv[2]);
            return 2;
        }
        lora_alpha = rank / 2.0f;
        root = tensors = lora_manifest(argv[3], rank);
        out_path = argv[4];
    } else if (argc == 3 || argc == 4) {
        tensors = read_manifest(argv[1], &root);
        f16 = argc < 4 || strcmp(argv[3], "f32") != 0;
        out_path = argv[2];
    } else {
        fprintf(stderr, "usage: sd-genmodel MANIFEST.json OUT.safetensors [f16|f32]\n"
                        "       sd-genmodel --lora RANK MODEL.safetensors OUT.safetensors\n");
        return 2;
    }
    if (!tensors) return 2;
    /* header */
    cJSON *header = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(header, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t offset = 0;
    for (cJSON *t = tensors->child; t; t = t->next) {
        const char *name = cJSON_GetArrayItem(t, 0)->valuestring, *dtype = cJSON_GetArrayItem(t, 2)->valuestring;
        cJSON *shape = cJSON_GetArrayItem(t, 1), *e = cJSON_AddObjectToObject(header, name);
        int is_float = !strcmp(dtype, "float32") || !strcmp(dtype, "float16");
        const char *st = is_float ? (f16 ? "F16" : "F32") : !strcmp(dtype, "int64") ? "I64" : "I32";
        size_t esize = is_float ? (f16 ? 2 : 4) : !strcmp(dtype, "int64") ? 8 : 4;
        uint64_t n = 1;
        for (cJSON *d = shape->child; d; d = d->next) n *= (uint64_t)d->valuedouble;
        cJSON_AddStringToObject(e, "dtype", st);
        cJSON_AddItemToObject(e, "shape", cJSON_Duplicate(shape, 1));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        offset += n * esize;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
    }
    char *h = cJSON_PrintUnformatted(header);
    size_t hl = strlen(h), padded = (hl + 7) & ~(size_t)7;
    FILE *out = fopen(out_path, "wb");
    if (!out) {
        fprintf(stderr, "sd-genmodel: error: %s: cannot create\n", out_path);
        return 2;
    }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    fwrite(lenbuf, 1, 8, out);
    fwrite(h, 1, hl, out);
    for (size_t i = hl; i < padded; i++) fputc(' ', out);
    /* data, in header order */
    size_t cap = 1 << 20;
    uint8_t *buf = malloc(cap * 8);
    for (cJSON *t = tensors->child; t; t = t->next) {
        const char *name = cJSON_GetArrayItem(t, 0)->valuestring, *dtype = cJSON_GetArrayItem(t, 2)->valuestring;
        cJSON *shape = cJSON_GetArrayItem(t, 1);
        int64_t dims[8] = {0};
        int ndim = 0;
        int64_t n = 1;
        for (cJSON *d = shape->child; d && ndim < 8; d = d->next) {
            dims[ndim++] = (int64_t)d->valuedouble;
            n *= dims[ndim - 1];
        }
        int is_float = !strcmp(dtype, "float32") || !strcmp(dtype, "float16"), is_i64 = !strcmp(dtype, "int64");
        for (int64_t i0 = 0; i0 < n; i0 += (int64_t)cap) {
            int64_t m = n - i0 < (int64_t)cap ? n - i0 : (int64_t)cap;
            size_t bytes = 0;
            for (int64_t i = 0; i < m; i++) {
                if (!is_float) {
                    int64_t v = strstr(name, "position_ids") ? (i0 + i) % dims[ndim - 1] : 0;
                    memcpy(buf + bytes, &v, is_i64 ? 8 : 4);
                    bytes += is_i64 ? 8 : 4;
                } else if (f16) {
                    uint16_t v = float_to_half(value_for(name, dims, ndim, i0 + i));
                    memcpy(buf + bytes, &v, 2);
                    bytes += 2;
                } else {
                    float v = value_for(name, dims, ndim, i0 + i);
                    memcpy(buf + bytes, &v, 4);
                    bytes += 4;
                }
            }
            if (fwrite(buf, 1, bytes, out) != bytes) {
                fprintf(stderr, "sd-genmodel: error: %s: write failed\n", out_path);
                return 1;
            }
        }
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "sd-genmodel: error: %s: write failed\n", out_path);
        return 1;
    }
    fprintf(stderr, "sd-genmodel: wrote %s (%d tensors, %s, %.2f GB)\n", out_path, cJSON_GetArraySize(tensors),
            f16 ? "F16" : "F32", (double)(8 + padded + offset) / 1e9);
    free(buf);
    free(h);
    cJSON_Delete(header);
    cJSON_Delete(root);
    return 0;
}
