/* test_lora.c - LoRA (sd1-lora fixtures): the name table maps each of lora_kohya's 216 modules onto the
 * single-file tensor diffusers' conversion gives (lora_kohya_names.json); with lora_kohya merged at 1.0 the
 * text encoder (1e-4) and the UNet (1e-3) match the references; bad LoRA files are refused naming the tensor. */
#include "model/lora.h"
#include "model/model.h"
#include "test_util.h"
#include "nets/text_encoder.h"
#include "nets/unet.h"

#include <cJSON.h>

static char tmpdir[] = "/tmp/sd-test-lora-XXXXXX";

static void open_model(sd_model *m, const char *file) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, file);
    CHECK(model_open(m, path, NULL, err, sizeof err) == SD_OK, "open %s: %s", file, err);
}

static void lora_path(char *out, size_t len, const char *file) {
    snprintf(out, len, "%s/sd1-lora/%s", SD_FIXTURES, file);
}

/* Every kohya module name resolves to the tensor of lora_kohya_names.json. */
static void test_name_table(void) {
    sd_model m;
    open_model(&m, "model_f32.safetensors");
    lora_set *s = lora_set_create(&m.store, &m.d);
    char path[1024];
    lora_path(path, sizeof path, "lora_kohya_names.json");
    char *text = read_text_file(path);
    cJSON *names = text ? cJSON_Parse(text) : NULL;
    int n = 0, ok = 0;
    for (const cJSON *e = names ? names->child : NULL; e; e = e->next, n++) {
        int row0 = -1;
        const st_tensor *t = lora_set_lookup(s, e->string + 5, &row0); /* without "lora_" */
        if (t && !strcmp(t->name, e->valuestring) && row0 == 0)
            ok++;
        else
            CHECK(0, "%s -> %s, want %s", e->string, t ? t->name : "(none)", e->valuestring);
    }
    CHECK(n == 216 && ok == 216, "name table: %d of %d modules map as diffusers maps them", ok, n);
    cJSON_Delete(names);
    free(text);
    lora_set_free(s);
    model_close(&m);
}

/* OpenCLIP's fused in_proj: q, k, v are row ranges of one tensor (SD 2.x). */
static void test_openclip_rows(void) {
    sd_model m;
    open_model(&m, "sd2-tiny/model_f32.safetensors");
    lora_set *s = lora_set_create(&m.store, &m.d);
    static const char *const qkv[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        char key[200];
        snprintf(key, sizeof key, "te_text_model_encoder_layers_1_self_attn_%s_proj", qkv[i]);
        int row0 = -1;
        const st_tensor *t = lora_set_lookup(s, key, &row0);
        CHECK(t && strstr(t->name, "resblocks.1.attn.in_proj_weight") && row0 == i * (int)t->shape[0] / 3,
              "%s -> %s row %d", key, t ? t->name : "(none)", row0);
    }
    const st_tensor *t = lora_set_lookup(s, "unet_mid_block_attentions_0_proj_in", NULL);
    CHECK(t && !strcmp(t->name, "model.diffusion_model.middle_block.1.proj_in.weight"), "SD 2.x mid-block proj_in");
    lora_set_free(s);
    model_close(&m);
}

/* With lora_kohya at 1.0: text.dog hidden within 1e-4, unet.t500 within 1e-3. */
static void test_merged_networks(void) {
    sd_model m;
    open_model(&m, "model_f32.safetensors");
    char path[1024], err[512] = "";
    lora_path(path, sizeof path, "lora_kohya.safetensors");
    m.store.lora = lora_set_create(&m.store, &m.d);
    CHECK(lora_set_add(m.store.lora, path, 1.0f, NULL, 0, err, sizeof err) == 0, "add lora_kohya: %s", err);
    text_encoder te;
    unet un;
    int ok = text_encoder_load(&te, &m.store, &m.d.text[0], err, sizeof err) == SD_OK &&
             unet_load(&un, &m.store, &m.d, err, sizeof err) == SD_OK;
    CHECK(ok, "load with the LoRA: %s", err);
    lora_set_free(m.store.lora);
    m.store.lora = NULL;
    if (!ok) {
        model_close(&m);
        return;
    }
    st_file ex;
    open_fixture(&ex, "sd1-lora/expected.safetensors");
    compute cc;
    compute_init(&cc, 0, 0, 0);
    compute_reserve_scratch(&cc, (size_t)m.store.max_half_matrix + 1);

    const st_tensor *ids_t = st_find(&ex, "text.dog.ids");
    int ids[77]; /* stored as float32 */
    for (int i = 0; i < 77; i++) ids[i] = (int)((const float *)ids_t->data)[i];
    float hidden[77 * 32];
    size_t n;
    const text_input in = {ids, NULL};
    const text_output to = {te.c.layers, 1, hidden, NULL};
    CHECK(text_encoder_forward(&cc, &te, &in, &to) == SD_OK, "text forward");
    const float *want = fixture_f32(&ex, "text.dog.hidden", &n);
    double d = max_abs_diff(hidden, want, n);
    printf("lora text.dog.hidden  max abs error %.3g\n", d);
    CHECK(n == 77 * 32 && d <= 1e-4, "text.dog.hidden with the LoRA: max abs error %.3g (limit 1e-4)", d);

    size_t nx, nout;
    const float *x = fixture_f32(&ex, "unet.t500.x", &nx), *ctx = fixture_f32(&ex, "unet.t500.ctx", NULL);
    const st_tensor *tt = st_find(&ex, "unet.t500.t");
    float t = tt->dtype == ST_F32 ? ((const float *)tt->data)[0] : (float)((const int64_t *)tt->data)[0],
          ts[2] = {t, t};
    want = fixture_f32(&ex, "unet.t500.out", &nout);
    float *out = malloc(nout * sizeof(float));
    const unet_input ui = {x, ts, ctx, 77, NULL, NULL, 2, 16, 16};
    CHECK(unet_forward(&cc, &un, &ui, out) == SD_OK, "unet forward");
    d = max_abs_diff(out, want, nout);
    printf("lora unet.t500.out    max abs error %.3g (max |ref| %.3g)\n", d, max_abs(want, nout));
    CHECK(nx == nout && d <= 1e-3, "unet.t500 with the LoRA: max abs error %.3g (limit 1e-3)", d);
    free(out);
    compute_free(&cc);
    st_close(&ex);
    text_encoder_free(&te);
    unet_free(&un);
    model_close(&m);
}

/* Files that must be refused, each naming the problem. */
static void expect_refused(const char *model_file, const char *lora_file, const char *want) {
    sd_model m;
    open_model(&m, model_file);
    lora_set *s = lora_set_create(&m.store, &m.d);
    char err[512] = "";
    int rc = lora_set_add(s, lora_file, 1.0f, NULL, 0, err, sizeof err);
    CHECK(rc != 0 && strstr(err, want), "%s on %s: want '%s', got %d '%s'", lora_file, model_file, want, rc, err);
    lora_set_free(s);
    model_close(&m);
}

static void test_bad_files(void) {
    const char *rank = write_test_safetensors(tmpdir, "rank.safetensors",
                                              "{\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight\":{"
                                              "\"dtype\":\"F32\",\"shape\":[4,32],\"data_offsets\":[0,512]},"
                                              "\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight\":{"
                                              "\"dtype\":\"F32\",\"shape\":[32,2],\"data_offsets\":[512,768]}}",
                                              768);
    expect_refused("model_f32.safetensors", rank, "lora_up has rank 2 but lora_down has rank 4");
    const char *noup = write_test_safetensors(tmpdir, "noup.safetensors",
                                              "{\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight\":{"
                                              "\"dtype\":\"F32\",\"shape\":[4,32],\"data_offsets\":[0,512]}}",
                                              512);
    expect_refused("model_f32.safetensors", noup, "has a down weight but no up weight");
    const char *nodown = write_test_safetensors(tmpdir, "nodown.safetensors",
                                                "{\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight\":{"
                                                "\"dtype\":\"F32\",\"shape\":[32,4],\"data_offsets\":[0,512]}}",
                                                512);
    expect_refused("model_f32.safetensors", nodown, "has an up weight but no down weight");
    char other[1024]; /* an SDXL LoRA on SD 1.x, an SD 1.x LoRA on SDXL: refused naming a tensor that does not fit */
    snprintf(other, sizeof other, "%s/sdxl-tiny/lora_kohya_sdxl.safetensors", SD_FIXTURES);
    expect_refused("model_f32.safetensors", other,
                   "module 'unet_input_blocks_4_1_proj_in' (128 x 128) does not fit tensor "
                   "'model.diffusion_model.input_blocks.4.1.proj_in.weight' (64 x 64): a LoRA for another model?");
    lora_path(other, sizeof other, "lora_kohya.safetensors");
    expect_refused("sdxl-tiny/model_f16.safetensors", other, "does not fit tensor 'model.diffusion_model.");
    const char *wide = write_test_safetensors(tmpdir, "wide.safetensors", /* a LoRA for a 64-channel UNet */
                                              "{\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight\":{"
                                              "\"dtype\":\"F32\",\"shape\":[4,64],\"data_offsets\":[0,1024]},"
                                              "\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight\":{"
                                              "\"dtype\":\"F32\",\"shape\":[64,4],\"data_offsets\":[1024,2048]}}",
                                              2048);
    expect_refused("model_f32.safetensors", wide,
                   "module 'unet_down_blocks_0_attentions_0_proj_in' (64 x 64) does not fit tensor "
                   "'model.diffusion_model.input_blocks.1.1.proj_in.weight' (32 x 32)");
    expect_refused("model_f32.safetensors", "/nonexistent/x.safetensors", "/nonexistent/x.safetensors: cannot open");
}

/* SDXL: every kohya module of lora_kohya_sdxl (UNet in single-file names, lora_te1_ in transformers names, lora_te2_
 * in transformers names onto OpenCLIP's tensors, q/k/v as row ranges of in_proj) resolves to the tensor and rows of
 * lora_kohya_sdxl_names.json ("name[row0:row1]" for a row range). */
static void test_sdxl_name_table(void) {
    sd_model m;
    open_model(&m, "sdxl-tiny/model_f16.safetensors");
    lora_set *s = lora_set_create(&m.store, &m.d);
    char path[1024];
    snprintf(path, sizeof path, "%s/sdxl-tiny/lora_kohya_sdxl_names.json", SD_FIXTURES);
    char *text = read_text_file(path);
    cJSON *names = text ? cJSON_Parse(text) : NULL;
    int n = 0, ok = 0;
    for (const cJSON *e = names ? names->child : NULL; e; e = e->next, n++) {
        char want[512];
        int want_row0 = 0;
        snprintf(want, sizeof want, "%s", e->valuestring);
        char *bracket = strchr(want, '[');
        if (bracket) { /* "tensor[row0:row1]" */
            want_row0 = atoi(bracket + 1);
            *bracket = 0;
        }
        int row0 = -1;
        const st_tensor *t = s ? lora_set_lookup(s, e->string + 5, &row0) : NULL; /* without "lora_" */
        if (t && !strcmp(t->name, want) && row0 == want_row0)
            ok++;
        else
            CHECK(0, "%s -> %s row %d, want %s", e->string, t ? t->name : "(none)", row0, e->valuestring);
    }
    CHECK(n == 213 && ok == 213, "SDXL name table: %d of %d modules map to their tensors", ok, n);
    cJSON_Delete(names);
    free(text);
    lora_set_free(s);
    model_close(&m);
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 2;
    test_name_table();
    test_sdxl_name_table();
    test_openclip_rows();
    test_merged_networks();
    test_bad_files();
    remove_test_dir(tmpdir);
    return test_finish();
}
