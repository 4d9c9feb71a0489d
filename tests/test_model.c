#define _GNU_SOURCE
/* test_model.c - the safetensors reader and model detection on the tiny fixtures, and every
 * malformed-file case through the library (the CLI cases are in test_cli.c). */
#include "model/model.h"
#include "sd.h"
#include "test_util.h"

#include <cJSON.h>

#include <unistd.h>

static void test_tiny_f32(void) {
    sd_model m;
    char err[512] = "";
    char path[1024];
    snprintf(path, sizeof path, "%s/model_f32.safetensors", SD_FIXTURES);
    CHECK(model_open(&m, path, NULL, err, sizeof err) == SD_OK, "open f32: %s", err);
    CHECK(m.store.file.n_tensors == 985, "985 tensors, got %d", m.store.file.n_tensors);
    CHECK(m.d.family == FAMILY_SD1, "family SD1");
    CHECK(m.d.text[0].heads == 4 && m.d.unet_heads == 8 && m.d.prediction == PRED_EPSILON, "metadata heads/prediction");
    CHECK(!strcmp(st_meta_get(&m.store.file, "format"), "pt"), "metadata format=pt");
    const st_tensor *t =
        st_find(&m.store.file, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 32 && t->shape[1] == 32, "attn2.to_k shape");
    t = st_find(&m.store.file, "model_ema.num_updates");
    CHECK(t && t->dtype == ST_I32 && t->ndim == 0 && t->numel == 1, "0-dim I32 tensor");
    t = st_find(&m.store.file, "cond_stage_model.transformer.text_model.embeddings.position_ids");
    CHECK(t && t->dtype == ST_I64 && t->shape[1] == 77 && ((const int64_t *)t->data)[76] == 76, "I64 position_ids");
    t = st_find(&m.store.file, "alphas_cumprod");
    CHECK(t && t->numel == 1000 && fabsf(((const float *)t->data)[0] - 0.99915f) < 1e-6f, "alphas_cumprod[0]");
    CHECK(store_param_count(&m.store, "cond_stage_model.") > 49408 * 32, "text params");
    model_close(&m);
}

/* F16 values decode exactly: each equals the float32 value rounded to half precision. */
static void test_tiny_f16(void) {
    sd_model m16, m32;
    char err[512] = "", p16[1024], p32[1024];
    snprintf(p16, sizeof p16, "%s/model_f16.safetensors", SD_FIXTURES);
    snprintf(p32, sizeof p32, "%s/model_f32.safetensors", SD_FIXTURES);
    CHECK(model_open(&m16, p16, NULL, err, sizeof err) == SD_OK, "open f16: %s", err);
    CHECK(model_open(&m32, p32, NULL, err, sizeof err) == SD_OK, "open f32: %s", err);
    CHECK(m16.store.file.n_tensors == 985, "f16: 985 tensors");
    const char *name = "model.diffusion_model.input_blocks.0.0.weight";
    const st_tensor *a = st_find(&m16.store.file, name), *b = st_find(&m32.store.file, name);
    CHECK(a && a->dtype == ST_F16 && b && a->numel == b->numel, "f16 conv_in");
    int exact = 1;
    for (int64_t i = 0; a && b && i < a->numel; i++) {
        float h = half_to_float(((const uint16_t *)a->data)[i]), f = ((const float *)b->data)[i];
        /* round-to-nearest half of f lies within half an ulp (2^-11 relative) */
        if (fabsf(h - f) > fabsf(f) * (1.0f / 2048.0f) + 6e-8f) exact = 0;
    }
    CHECK(exact, "f16 values are the f32 values rounded to half");
    CHECK(half_to_float(0x3C00) == 1.0f && half_to_float(0xC000) == -2.0f && half_to_float(0x7BFF) == 65504.0f,
          "half normals");
    CHECK(half_to_float(0x0001) == ldexpf(1.0f, -24) && half_to_float(0x03FF) == ldexpf(1023.0f, -24),
          "half subnormals");
    CHECK(isinf(half_to_float(0x7C00)) && isnan(half_to_float(0x7E00)) && signbit(half_to_float(0x8000)),
          "half inf/nan/-0");
    CHECK(bf16_to_float(0x3F80) == 1.0f && bf16_to_float(0xC040) == -3.0f, "bf16");
    model_close(&m16);
    model_close(&m32);
}

static void test_load_context(void) {
    char path[1024], err[SD_ERR_LEN];
    snprintf(path, sizeof path, "%s/model_f16.safetensors", SD_FIXTURES);
    sd_ctx *ctx = NULL;
    CHECK(sd_load(&ctx, path, 1, err) == SD_OK, "sd_load f16: %s", err);
    sd_free(ctx);
}

/* ---------- malformed files ---------- */

static char tmpdir[256];

static const char *write_file(const char *name, const void *data, size_t len) {
    return write_test_file(tmpdir, name, data, len);
}
static const char *write_st(const char *name, const char *header, size_t data_len) {
    return write_test_safetensors(tmpdir, name, header, data_len);
}

static void expect_st_error(const char *path, int want_rc, const char *want) {
    st_file f;
    char err[512] = "";
    int rc = st_open(&f, path, err, sizeof err);
    CHECK(rc == want_rc && (rc == 0 || (strstr(err, want) && strstr(err, path))), "%s: want rc %d '%s', got %d '%s'",
          path, want_rc, want, rc, err);
    if (rc == 0) st_close(&f);
}

static void test_bad_files(void) {
    expect_st_error("/nonexistent/model.safetensors", -1, "cannot open");
    expect_st_error(tmpdir, -1, "is a directory");
    expect_st_error(write_file("empty", "", 0), -1, "empty file");
    expect_st_error(write_file("short", "abc", 3), -2, "too short");
    unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, '{'};
    expect_st_error(write_file("absurd", big, 16), -2, "absurd");
    unsigned char past[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_st_error(write_file("past", past, 10), -2, "past the end");
    expect_st_error(write_st("notjson", "{not json", 0), -2, "not valid JSON");
    expect_st_error(write_st("array", "[1,2]", 0), -2, "not a JSON object");
    expect_st_error(write_st("nodtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4), -2, "missing dtype");
    expect_st_error(write_st("noshape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4), -2, "missing shape");
    expect_st_error(write_st("nooffs", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), -2, "missing data_offsets");
    expect_st_error(write_st("dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), -2,
                    "unsupported dtype 'F8_E4M3'");
    expect_st_error(write_st("negdim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), -2,
                    "dimension 0");
    expect_st_error(write_st("fracdim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4), -2,
                    "dimension 0");
    expect_st_error(
        write_st("overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4),
        -2, "overflows");
    expect_st_error(write_st("range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), -2,
                    "past the end of the data");
    expect_st_error(write_st("reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4), -2,
                    "reversed");
    expect_st_error(write_st("mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8), -2,
                    "shape x dtype");
    expect_st_error(write_st("meta", "{\"__metadata__\":{\"k\":1}}", 0), -2, "not a string");
    expect_st_error(
        write_st("ok", "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}",
                 8),
        0, "");

    /* valid safetensors, but not a Stable Diffusion checkpoint */
    sd_model m;
    char err[512] = "";
    const char *llm = write_st(
        "llm", "{\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        4);
    CHECK(model_open(&m, llm, NULL, err, sizeof err) == SD_ERR_MODEL &&
              strstr(err, "not a Stable Diffusion checkpoint"),
          "llm: %s", err);
}

/* A copy of the tiny model with one tensor renamed or reshaped in its header. */
static const char *patched_model(const char *name, const char *find, const char *replace) {
    char src[1024];
    snprintf(src, sizeof src, "%s/model_f32.safetensors", SD_FIXTURES);
    FILE *f = fopen(src, "rb");
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n);
    if (fread(buf, 1, n, f) != n) exit(2);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)buf[i];
    char *hit = memmem(buf + 8, hl, find, strlen(find));
    if (!hit || strlen(find) != strlen(replace)) {
        fprintf(stderr, "bad patch %s\n", find);
        exit(2);
    }
    memcpy(hit, replace, strlen(replace));
    const char *p = write_file(name, buf, n);
    free(buf);
    return p;
}

/* `sd --info -m path` exits 2 with one "sd: error:" line naming the file and the problem. */
static void expect_cli_error(const char *path, const char *want) {
    char *err = NULL;
    int rc = run_sd((const char *const[]){"--info", "-m", path, NULL}, &err);
    CHECK(rc == 2 && err && !strncmp(err, "sd: error: ", 11) && strstr(err, path) && strstr(err, want) &&
              strchr(err, '\n') == err + strlen(err) - 1,
          "cli %s: %d %s", path, rc, err ? err : "");
    free(err);
}

static void test_bad_models(void) {
    char err[SD_ERR_LEN];
    sd_ctx *ctx = NULL;
    const char *p = patched_model("missing.safetensors", "\"model.diffusion_model.out.2.weight\"",
                                  "\"model.diffusion_model.out.2.weighX\"");
    CHECK(sd_load(&ctx, p, 1, err) == SD_ERR_MODEL && strstr(err, "out.2.weight") && strstr(err, p),
          "missing tensor: %s", err);
    expect_cli_error(p, "missing or malformed tensor 'model.diffusion_model.out.2.weight'");
    p = patched_model("shape.safetensors", "\"shape\":[32,4,3,3]", "\"shape\":[32,4,1,9]");
    sd_status st = sd_load(&ctx, p, 1, err);
    CHECK(st != SD_OK && strstr(err, "input_blocks.0.0.weight"), "wrong shape: %s", err);
    expect_cli_error(p, "has shape [32, 4, 1, 9], expected [32, 4, 3, 3]");
    if (st == SD_OK) sd_free(ctx);
}

/* A copy of fixture src without the metadata keys not in `keep` (NULL-terminated), and with every value of the F32
 * tensor `bias` (if not NULL) set to bias_value: the header is rewritten, the data section is the same. */
static const char *without_metadata(const char *src, const char *name, const char *const *keep, const char *bias,
                                    float bias_value) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, src);
    char *raw = NULL;
    FILE *f = fopen(path, "rb");
    long size = f && !fseek(f, 0, SEEK_END) ? ftell(f) : -1;
    if (size > 8 && (raw = malloc((size_t)size)) && !fseek(f, 0, SEEK_SET) &&
        fread(raw, 1, (size_t)size, f) != (size_t)size)
        size = -1;
    if (f) fclose(f);
    if (size <= 8 || !raw) exit(2);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)raw[i];
    cJSON *h = cJSON_ParseWithLength(raw + 8, (size_t)hl), *meta = cJSON_GetObjectItem(h, "__metadata__");
    for (cJSON *m = meta ? meta->child : NULL, *next; m; m = next) {
        next = m->next;
        int kept = 0;
        for (int k = 0; keep && keep[k]; k++) kept |= !strcmp(keep[k], m->string);
        if (!kept) cJSON_DeleteItemFromObject(meta, m->string);
    }
    char *data = raw + 8 + hl;
    const cJSON *b = bias ? cJSON_GetObjectItem(h, bias) : NULL;
    if (b) {
        int64_t begin = (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(b, "data_offsets"), 0)->valuedouble;
        int64_t end = (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(b, "data_offsets"), 1)->valuedouble;
        for (int64_t o = begin; o < end; o += 4) memcpy(data + o, &bias_value, 4);
    }
    char *text = cJSON_PrintUnformatted(h);
    size_t tl = strlen(text), padded = (tl + 7) / 8 * 8, data_len = (size_t)size - 8 - hl;
    char *out = malloc(8 + padded + data_len);
    for (int i = 0; i < 8; i++) out[i] = (char)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, text, tl);
    memset(out + 8 + tl, ' ', padded - tl);
    memcpy(out + 8 + padded, data, data_len);
    const char *p = write_file(name, out, 8 + padded + data_len);
    free(out);
    free(text);
    cJSON_Delete(h);
    free(raw);
    return p;
}

/* What a file without metadata gets: the families' default head counts, and for SD 2.x the prediction type from
 * AUTOMATIC1111's UNet test (out.2's bias pushed far below or above zero decides it either way). */
static void test_defaults_without_metadata(void) {
    sd_model m;
    char err[SD_ERR_LEN] = "";
    const char *sd1 = without_metadata("model_f32.safetensors", "sd1_nometa.safetensors", NULL, NULL, 0);
    CHECK(model_open(&m, sd1, NULL, err, sizeof err) == SD_OK && m.store.file.n_meta == 0,
          "open sd1 without metadata: %s", err);
    CHECK(m.d.text[0].heads == 12 && m.d.unet_heads == 8 && m.d.unet_head_dim == 0 && m.d.prediction == PRED_EPSILON &&
              m.d.default_size == 512,
          "SD 1.x defaults: text heads %d, UNet heads %d / width %d", m.d.text[0].heads, m.d.unet_heads,
          m.d.unet_head_dim);
    model_close(&m);
    const char *sd2 = without_metadata("sd2-tiny/model_f32.safetensors", "sd2_nometa.safetensors", NULL, NULL, 0);
    CHECK(model_open(&m, sd2, NULL, err, sizeof err) == SD_OK, "open sd2 without metadata: %s", err);
    CHECK(m.d.text[0].heads == 1 && m.d.unet_head_dim == 64 && m.d.prediction == PRED_UNKNOWN,
          "SD 2.x defaults: text heads %d (width 32 < 64), UNet heads of %d, prediction left to the UNet test",
          m.d.text[0].heads, m.d.unet_head_dim);
    model_close(&m);
    static const char *const heads[] = {"sd.text.heads", "sd.unet.head_dim", NULL}; /* the tiny sizes' heads */
    static const struct {
        float bias;
        sd_prediction want;
        int size;
    } cases[] = {{-100.0f, SD_PREDICTION_V, 768}, {100.0f, SD_PREDICTION_EPSILON, 512}};
    for (int c = 0; c < 2; c++) {
        const char *p =
            without_metadata("sd2-tiny/model_f32.safetensors", c ? "sd2_eps.safetensors" : "sd2_v.safetensors", heads,
                             "model.diffusion_model.out.2.bias", cases[c].bias);
        sd_ctx *ctx = NULL;
        sd_model_info mi;
        CHECK(sd_load(&ctx, p, 1, err) == SD_OK, "load %s: %s", p, err);
        if (!ctx) continue;
        sd_get_model_info(ctx, &mi);
        CHECK(mi.prediction == cases[c].want && mi.default_width == cases[c].size,
              "UNet test with out.2 bias %g: prediction %d, default size %d", cases[c].bias, (int)mi.prediction,
              mi.default_width);
        sd_free(ctx);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-model-XXXXXX");
    if (!mkdtemp(tmpdir)) return 2;
    test_tiny_f32();
    test_tiny_f16();
    test_load_context();
    test_bad_files();
    test_bad_models();
    test_defaults_without_metadata();
    remove_test_dir(tmpdir);
    return test_finish();
}
