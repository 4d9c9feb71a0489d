/* test_networks.c - text encoder, UNet and VAE against the diffusers/transformers reference
 * outputs (expected.safetensors), with model_f32 and model_f16 (the f16 references are computed
 * from the float16-rounded weights). Tolerances are those of the fixture README. */
#include "model/model.h"
#include "test_util.h"

#include <cJSON.h>
#include "nets/text_encoder.h"
#include "text/tokenizer.h"
#include "nets/unet.h"
#include "nets/vae.h"

typedef struct {
    sd_model m;
    text_encoder te;
    unet un;
    vae va;
    compute cc;
} net;

static int net_load(net *n, const char *file) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, file);
    memset(n, 0, sizeof *n);
    int ok = model_open(&n->m, path, NULL, err, sizeof err) == SD_OK &&
             text_encoder_load(&n->te, &n->m.store, &n->m.d.text[0], err, sizeof err) == SD_OK &&
             unet_load(&n->un, &n->m.store, &n->m.d, err, sizeof err) == SD_OK &&
             vae_load(&n->va, &n->m.store, err, sizeof err) == SD_OK;
    CHECK(ok, "load %s: %s", file, err);
    compute_init(&n->cc, 0, 0, 0);
    compute_reserve_scratch(&n->cc, (size_t)n->m.store.max_half_matrix + 1);
    return ok;
}

static void net_free(net *n) {
    text_encoder_free(&n->te);
    unet_free(&n->un);
    vae_free(&n->va);
    compute_free(&n->cc);
    model_close(&n->m);
}

/* The prompt of a text case from cases.json (NULL when the fixture has no cases.json). */
static const char *case_prompt(const cJSON *cases, const char *name) {
    const cJSON *c = cJSON_GetObjectItem(cases, name);
    const cJSON *p = c ? cJSON_GetObjectItem(c, "prompt") : NULL;
    return cJSON_IsString(p) ? p->valuestring : NULL;
}

/* Token ids (the model's padding) equal the reference's, and the hidden state after the layers the family
 * uses (SD 2.x: the penultimate) matches within 1e-4. */
static void test_text(net *n, const st_file *ex, const char *ref_prefix, tokenizer *tok, const cJSON *cases) {
    static const char *names[] = {"dog", "empty", "astronaut", "long", "cjk"};
    for (size_t c = 0; c < 5; c++) {
        char name[128], err[256];
        snprintf(name, sizeof name, "text.%s.ids", names[c]);
        const st_tensor *ids_t = st_find(ex, name);
        int ids[77], mine[77];
        for (int i = 0; i < 77; i++) ids[i] = ((const int32_t *)ids_t->data)[i];
        snprintf(name, sizeof name, "text.%s", names[c]);
        const char *prompt = case_prompt(cases, name);
        if (prompt) {
            CHECK(tokenizer_encode_padded(tok, prompt, mine, 77, n->m.d.text[0].pad_id, err, sizeof err) == 0 &&
                      !memcmp(ids, mine, sizeof ids),
                  "%s%s: token ids differ from the reference", ref_prefix, name);
        }
        float hidden[77 * 32];
        const text_input in = {ids, NULL};
        const text_output out = {n->te.c.layers - n->m.d.text[0].skip, 1, hidden, NULL};
        CHECK(n->te.c.hidden == 32 && text_encoder_forward(&n->cc, &n->te, &in, &out) == SD_OK, "text forward");
        snprintf(name, sizeof name, "%stext.%s.hidden", ref_prefix, names[c]);
        size_t cnt;
        const float *want = fixture_f32(ex, name, &cnt);
        double d = max_abs_diff(hidden, want, cnt);
        printf("%-28s max abs error %.3g\n", name, d);
        CHECK(cnt == 77 * 32 && d <= 1e-4, "%s: max abs error %.3g (limit 1e-4)", name, d);
    }
}

static void test_unet(net *n, const st_file *ex, const char *ref_prefix) {
    static const char *cases[] = {"t981", "t1", "t500"};
    for (size_t c = 0; c < 3; c++) {
        char name[128];
        size_t nx, nctx, nout;
        snprintf(name, sizeof name, "unet.%s.x", cases[c]);
        const float *x = fixture_f32(ex, name, &nx);
        snprintf(name, sizeof name, "unet.%s.ctx", cases[c]);
        const float *ctx = fixture_f32(ex, name, &nctx);
        snprintf(name, sizeof name, "unet.%s.t", cases[c]);
        const st_tensor *tt = st_find(ex, name);
        float t = tt->dtype == ST_F32 ? ((const float *)tt->data)[0] : (float)((const int64_t *)tt->data)[0];
        float ts[2] = {t, t};
        snprintf(name, sizeof name, "%sunet.%s.out", ref_prefix, cases[c]);
        const float *want = fixture_f32(ex, name, &nout);
        float *out = malloc(nout * sizeof(float));
        const unet_input in = {x, ts, ctx, 77, NULL, NULL, 2, 16, 16};
        CHECK(unet_forward(&n->cc, &n->un, &in, out) == SD_OK, "unet forward");
        double d = max_abs_diff(out, want, nout);
        printf("%-28s max abs error %.3g (max |ref| %.3g)\n", name, d, max_abs(want, nout));
        CHECK(nx == 2 * 4 * 16 * 16 && d <= 1e-3, "%s: max abs error %.3g (limit 1e-3)", name, d);
        free(out);
    }
}

static void test_vae(net *n, const st_file *ex, const char *ref_prefix) {
    char name[128];
    size_t nz, nimg;
    const float *z = fixture_f32(ex, "vae.decode.z", &nz);
    snprintf(name, sizeof name, "%svae.decode.image", ref_prefix);
    const float *want = fixture_f32(ex, name, &nimg);
    float *img = malloc(nimg * sizeof(float));
    CHECK(vae_decode(&n->cc, &n->va, z, 1, 16, 16, img) == SD_OK, "vae decode");
    double d = max_abs_diff(img, want, nimg);
    printf("%-28s max abs error %.3g\n", name, d);
    CHECK(nimg == 3 * 128 * 128 && d <= 2e-3, "%s: max abs error %.3g (limit 2e-3)", name, d);
    free(img);

    const float *image = fixture_f32(ex, "vae.encode.image", &nimg);
    size_t nmean;
    snprintf(name, sizeof name, "%svae.encode.mean", ref_prefix);
    const float *want_mean = fixture_f32(ex, name, &nmean);
    snprintf(name, sizeof name, "%svae.encode.logvar", ref_prefix);
    const float *want_logvar = fixture_f32(ex, name, NULL);
    float *mean = malloc(nmean * sizeof(float)), *logvar = malloc(nmean * sizeof(float));
    CHECK(vae_encode(&n->cc, &n->va, image, 1, 128, 128, mean, logvar) == SD_OK, "vae encode");
    double dm = max_abs_diff(mean, want_mean, nmean), dl = max_abs_diff(logvar, want_logvar, nmean);
    printf("%svae.encode mean/logvar     max abs error %.3g / %.3g\n", ref_prefix, dm, dl);
    CHECK(nmean == 4 * 16 * 16 && dm <= 1e-3 && dl <= 1e-3, "%svae.encode: mean %.3g, logvar %.3g (limit 1e-3)",
          ref_prefix, dm, dl);
    free(mean);
    free(logvar);
}

/* One fixture set: dir/expected.safetensors against the given model files (ref prefixes "" and "f16."). */
static void test_fixture(const char *dir, const char *const *files, int n_files, tokenizer *tok) {
    static const char *const prefixes[2] = {"", "f16."};
    char path[1024];
    st_file ex;
    snprintf(path, sizeof path, "%s%sexpected.safetensors", dir, dir[0] ? "/" : "");
    open_fixture(&ex, path);
    snprintf(path, sizeof path, "%s/%s%scases.json", SD_FIXTURES, dir, dir[0] ? "/" : "");
    char *text = read_text_file(path);
    for (char *p = text; p && (p = strstr(p, "-Infinity"));) memcpy(p, "null     ", 9); /* Python's JSON extension */
    cJSON *cases = text ? cJSON_Parse(text) : NULL;
    for (int f = 0; f < n_files; f++) {
        net n;
        snprintf(path, sizeof path, "%s%s%s", dir, dir[0] ? "/" : "", files[f]);
        if (!net_load(&n, path)) continue;
        printf("-- %s\n", path);
        test_text(&n, &ex, prefixes[f], tok, cases);
        test_unet(&n, &ex, prefixes[f]);
        test_vae(&n, &ex, prefixes[f]);
        net_free(&n);
    }
    cJSON_Delete(cases);
    free(text);
    st_close(&ex);
}

/* Tiled decode and encode (sd1-vae-tiling, 64-pixel tiles) against diffusers' enable_tiling(). */
static void test_vae_tiling(void) {
    net n;
    if (!net_load(&n, "model_f32.safetensors")) return;
    st_file ex;
    open_fixture(&ex, "sd1-vae-tiling/expected.safetensors");
    static const struct {
        const char *name;
        int h, w;
    } dec[] = {{"tiled_decode.a", 24, 40}, {"tiled_decode.b", 20, 13}};
    for (int c = 0; c < 2; c++) {
        char key[64];
        size_t nz, nimg;
        snprintf(key, sizeof key, "%s.z", dec[c].name);
        const float *z = fixture_f32(&ex, key, &nz);
        snprintf(key, sizeof key, "%s.image", dec[c].name);
        const float *want = fixture_f32(&ex, key, &nimg);
        float *img = malloc(nimg * sizeof(float));
        CHECK(nz == (size_t)4 * dec[c].h * dec[c].w && nimg == (size_t)3 * 64 * dec[c].h * dec[c].w, "%s: sizes",
              dec[c].name);
        CHECK(vae_decode_tiled(&n.cc, &n.va, z, dec[c].h, dec[c].w, 64, img) == SD_OK, "%s: tiled decode", dec[c].name);
        double d = max_abs_diff(img, want, nimg);
        printf("%-28s max abs error %.3g\n", dec[c].name, d);
        CHECK(d <= 2e-3, "%s: max abs error %.3g (limit 2e-3)", dec[c].name, d);
        free(img);
    }
    size_t nimg, nm;
    const float *image = fixture_f32(&ex, "tiled_encode.image", &nimg);
    const float *want_mean = fixture_f32(&ex, "tiled_encode.mean", &nm),
                *want_logvar = fixture_f32(&ex, "tiled_encode.logvar", NULL);
    float *mean = malloc(nm * sizeof(float)), *logvar = malloc(nm * sizeof(float));
    CHECK(vae_encode_tiled(&n.cc, &n.va, image, 192, 320, 64, mean, logvar) == SD_OK, "tiled encode");
    double dm = max_abs_diff(mean, want_mean, nm), dl = max_abs_diff(logvar, want_logvar, nm);
    printf("tiled_encode mean/logvar     max abs error %.3g / %.3g\n", dm, dl);
    CHECK(nm == 4 * 24 * 40 && dm <= 1e-3 && dl <= 1e-3, "tiled encode: mean %.3g, logvar %.3g (limit 1e-3)", dm, dl);
    free(mean);
    free(logvar);
    st_close(&ex);
    net_free(&n);
}

/* ---------------- SDXL (sdxl-tiny) ---------------- */

typedef struct {
    sd_model m;
    text_encoder te[2];
    unet un;
    vae va;
    compute cc;
} xl_net;

static int xl_load(xl_net *n) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/sdxl-tiny/model_f16.safetensors", SD_FIXTURES);
    memset(n, 0, sizeof *n);
    int ok =
        model_open(&n->m, path, NULL, err, sizeof err) == SD_OK && n->m.d.family == FAMILY_SDXL && n->m.d.n_text == 2;
    for (int i = 0; ok && i < 2; i++)
        ok = text_encoder_load(&n->te[i], &n->m.store, &n->m.d.text[i], err, sizeof err) == SD_OK;
    ok = ok && unet_load(&n->un, &n->m.store, &n->m.d, err, sizeof err) == SD_OK &&
         vae_load(&n->va, &n->m.store, err, sizeof err) == SD_OK;
    CHECK(ok, "load sdxl-tiny: %s", err);
    compute_init(&n->cc, 0, 0, 0);
    compute_reserve_scratch(&n->cc, (size_t)n->m.store.max_half_matrix + 1);
    return ok;
}

static void xl_free(xl_net *n) {
    for (int i = 0; i < 2; i++) text_encoder_free(&n->te[i]);
    unet_free(&n->un);
    vae_free(&n->va);
    compute_free(&n->cc);
    model_close(&n->m);
}

/* Token ids of both tokenizers (exact), the context [77, 256] = both encoders' penultimate hidden states side by side
 * and the pooled output (each <= 1e-4), for the plain prompts of the text cases (diffusers reads no emphasis). */
static void test_xl_text(xl_net *n, const st_file *ex, tokenizer *tok, const cJSON *cases) {
    static const char *names[] = {"dog", "empty", "astronaut"};
    for (size_t c = 0; c < 3; c++) {
        char key[128], err[256];
        snprintf(key, sizeof key, "text.%s", names[c]);
        const char *prompt = case_prompt(cases, key);
        float ctx[77 * 256], pooled[128];
        int ids[2][77];
        for (int e = 0; e < 2; e++) {
            size_t cnt;
            snprintf(key, sizeof key, "text.%s.ids%d", names[c], e + 1);
            const float *want = fixture_f32(ex, key, &cnt); /* stored as float32 */
            int ok =
                prompt && tokenizer_encode_padded(tok, prompt, ids[e], 77, n->m.d.text[e].pad_id, err, sizeof err) == 0;
            for (int i = 0; ok && i < 77; i++) ok = ids[e][i] == (int)want[i];
            CHECK(ok && cnt == 77, "%s: token ids differ from the reference", key);
            float hidden[77 * 128];
            const text_input in = {ids[e], NULL};
            const text_output out = {n->te[e].c.layers - n->m.d.text[e].skip, n->m.d.text[e].final_norm, hidden,
                                     n->m.d.text[e].pooled ? pooled : NULL};
            CHECK(text_encoder_forward(&n->cc, &n->te[e], &in, &out) == SD_OK, "%s: encoder %d", key, e + 1);
            for (int i = 0; i < 77; i++) memcpy(ctx + i * 256 + e * 128, hidden + i * 128, 128 * sizeof(float));
        }
        size_t cnt;
        snprintf(key, sizeof key, "text.%s.context", names[c]);
        const float *want = fixture_f32(ex, key, &cnt);
        double d = max_abs_diff(ctx, want, cnt);
        printf("%-28s max abs error %.3g\n", key, d);
        CHECK(cnt == 77 * 256 && d <= 1e-4, "%s: max abs error %.3g (limit 1e-4)", key, d);
        snprintf(key, sizeof key, "text.%s.pooled", names[c]);
        want = fixture_f32(ex, key, &cnt);
        d = max_abs_diff(pooled, want, cnt);
        printf("%-28s max abs error %.3g\n", key, d);
        CHECK(cnt == 128 && d <= 1e-4, "%s: max abs error %.3g (limit 1e-4)", key, d);
    }
}

/* The UNet with its added conditioning (pooled text + size ids), batch 2 at 16x24, <= 1e-3. */
static void test_xl_unet(xl_net *n, const st_file *ex) {
    static const char *cases[] = {"t981", "t500"};
    const model_desc *d = &n->m.d;
    for (size_t c = 0; c < 2; c++) {
        char key[128];
        size_t nout;
#define XL(field) (snprintf(key, sizeof key, "unet.%s." field, cases[c]), fixture_f32(ex, key, NULL))
        const float *x = XL("x"), *t = XL("t"), *ctx = XL("ctx"), *pooled = XL("text_embeds"), *ids = XL("time_ids");
#undef XL
        float added[2 * 224];
        CHECK(n->un.c.added_dim == 224 && d->pooled_width == 128 && d->time_ids == 6 && d->time_id_dim == 16,
              "added conditioning: %d = %d + %d x %d", n->un.c.added_dim, d->pooled_width, d->time_ids, d->time_id_dim);
        for (int b = 0; b < 2; b++) unet_added_vector(pooled + b * 128, 128, ids + b * 6, 6, 16, added + b * 224);
        snprintf(key, sizeof key, "unet.%s.out", cases[c]);
        const float *want = fixture_f32(ex, key, &nout);
        float *out = malloc(nout * sizeof(float));
        const unet_input in = {x, t, ctx, 77, added, NULL, 2, 16, 24};
        CHECK(unet_forward(&n->cc, &n->un, &in, out) == SD_OK, "sdxl unet forward");
        double e = max_abs_diff(out, want, nout);
        printf("%-28s max abs error %.3g (max |ref| %.3g)\n", key, e, max_abs(want, nout));
        CHECK(nout == 2 * 4 * 16 * 24 && e <= 1e-3, "%s: max abs error %.3g (limit 1e-3)", key, e);
        free(out);
    }
}

static void test_sdxl(tokenizer *tok) {
    xl_net n;
    if (!xl_load(&n)) return;
    st_file ex;
    open_fixture(&ex, "sdxl-tiny/expected.safetensors");
    cJSON *cases = fixture_json("sdxl-tiny/cases.json");
    printf("-- sdxl-tiny/model_f16.safetensors\n");
    test_xl_text(&n, &ex, tok, cases);
    test_xl_unet(&n, &ex);
    size_t nz, nimg;
    const float *z = fixture_f32(&ex, "vae.decode.z", &nz), *want = fixture_f32(&ex, "vae.decode.image", &nimg);
    float *img = malloc(nimg * sizeof(float));
    CHECK(vae_decode(&n.cc, &n.va, z, 1, 16, 16, img) == SD_OK, "sdxl vae decode");
    double d = max_abs_diff(img, want, nimg);
    printf("%-28s max abs error %.3g\n", "vae.decode.image", d);
    CHECK(nimg == 3 * 128 * 128 && d <= 2e-3, "sdxl vae.decode.image: max abs error %.3g (limit 2e-3)", d);
    free(img);
    cJSON_Delete(cases);
    st_close(&ex);
    xl_free(&n);
}

int main(void) {
    char err[256];
    tokenizer *tok = tokenizer_create(err, sizeof err);
    const char *sd1[2] = {"model_f32.safetensors", "model_f16.safetensors"}, *sd2[1] = {"model_f32.safetensors"};
    test_fixture("", sd1, 2, tok);         /* sd1-tiny */
    test_fixture("sd2-tiny", sd2, 1, tok); /* OpenCLIP text encoder, linear projections, head width 16 */
    test_vae_tiling();
    test_sdxl(tok);
    tokenizer_free(tok);
    return test_finish();
}
