/* test_image.c - img2img / inpainting inputs against sd1-img2img's preprocessing references: the init
 * images in [-1, 1] (exact; the Lanczos-resized odd size within one 8-bit level), binarised masks (exact;
 * the resized odd mask on >= 99.5 % of pixels), masked images, the VAE encoding of the init images
 * (<= 1e-3) and the 9-channel inpainting UNet (<= 1e-3). */
#include "io/image.h"
#include "model/model.h"
#include "test_util.h"
#include "nets/unet.h"
#include "nets/vae.h"

static st_file ex;

static sd_pixels read_input(const char *name) {
    char path[1024], err[SD_ERR_LEN];
    sd_pixels p;
    snprintf(path, sizeof path, "%s/sd1-img2img/%s.png", SD_FIXTURES, name);
    CHECK(sd_pixels_read(path, &p, err) == SD_OK, "read %s: %s", name, err);
    return p;
}

static void test_init(const char *name, int W, int H, double limit, float *out) {
    sd_pixels p = read_input(name);
    char key[128];
    snprintf(key, sizeof key, "input.%s", name);
    size_t n;
    const float *want = fixture_f32(&ex, key, &n);
    CHECK(n == (size_t)3 * W * H && image_to_model_input(&p, W, H, out) == 0, "%s: preprocess", name);
    double d = max_abs_diff(out, want, n);
    printf("%-22s max abs error %.3g (limit %.3g)\n", key, d, limit);
    CHECK(d <= limit, "%s: max abs error %.3g > %.3g", key, d, limit);
    sd_pixels_free(&p);
}

static void test_mask(const char *name, int W, int H, double min_equal, float *out) {
    sd_pixels p = read_input(name);
    char key[128];
    snprintf(key, sizeof key, "input.%s", name);
    size_t n, same = 0;
    const float *want = fixture_f32(&ex, key, &n);
    CHECK(n == (size_t)W * H && image_binary_mask(&p, W, H, out) == 0, "%s: binarise", name);
    for (size_t i = 0; i < n; i++) same += out[i] == want[i];
    printf("%-22s %.3f%% equal\n", key, 100.0 * same / n);
    CHECK((double)same / n >= min_equal, "%s: %.3f%% equal", key, 100.0 * same / n);
    sd_pixels_free(&p);
}

/* masked = init · (mask < 0.5), as the pipeline builds it. */
static void test_masked(const float *init, const float *mask, const char *mask_name) {
    char key[128];
    snprintf(key, sizeof key, "input.init.%s.masked", mask_name);
    size_t n;
    const float *want = fixture_f32(&ex, key, &n);
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs(init[i] * (mask[i % (n / 3)] < 0.5f ? 1.0f : 0.0f) - want[i]));
    CHECK(d <= 1e-7, "%s: max abs error %.3g", key, d);
}

static void test_encode(compute *cc, const vae *va, const char *name, const float *image, int W, int H) {
    char key[128];
    size_t n;
    snprintf(key, sizeof key, "input.%s.mean", name);
    const float *want_mean = fixture_f32(&ex, key, &n);
    snprintf(key, sizeof key, "input.%s.logvar", name);
    const float *want_logvar = fixture_f32(&ex, key, NULL);
    float *mean = malloc(n * sizeof(float)), *logvar = malloc(n * sizeof(float));
    CHECK(vae_encode(cc, va, image, 1, H, W, mean, logvar) == SD_OK, "%s: encode", name);
    double dm = max_abs_diff(mean, want_mean, n), dl = max_abs_diff(logvar, want_logvar, n);
    printf("input.%-16s mean/logvar max abs error %.3g / %.3g\n", name, dm, dl);
    CHECK(dm <= 1e-3 && dl <= 1e-3, "input.%s: mean %.3g, logvar %.3g (limit 1e-3)", name, dm, dl);
    free(mean);
    free(logvar);
}

/* Opens tests/fixtures/<name>. */
static int open_model(const char *name, sd_model *m, char *err, size_t errlen) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, name);
    return model_open(m, path, NULL, err, errlen);
}

static void test_unet9(void) {
    char err[512] = "";
    sd_model m;
    unet un;
    compute cc;
    compute_init(&cc, 0, 0, 0);
    int ok = open_model("sd1-img2img/model_inpaint_f32.safetensors", &m, err, sizeof err) == SD_OK &&
             unet_load(&un, &m.store, &m.d, err, sizeof err) == SD_OK;
    CHECK(ok && m.d.unet_in_ch == 9 && m.d.latent_ch == 4, "9-channel model: %s", err);
    if (!ok) return;
    size_t n;
    const float *x = fixture_f32(&ex, "unet9.t500.x", NULL), *ctx = fixture_f32(&ex, "unet9.t500.ctx", NULL);
    const float *want = fixture_f32(&ex, "unet9.t500.out", &n), *tt = fixture_f32(&ex, "unet9.t500.t", NULL);
    float *out = malloc(n * sizeof(float)), t[2] = {tt[0], tt[1]};
    const unet_input in = {x, t, ctx, 77, NULL, NULL, 2, 16, 16};
    CHECK(unet_forward(&cc, &un, &in, out) == SD_OK, "unet9 forward");
    double d = max_abs_diff(out, want, n);
    printf("%-22s max abs error %.3g\n", "unet9.t500.out", d);
    CHECK(d <= 1e-3, "unet9.t500.out: max abs error %.3g (limit 1e-3)", d);
    free(out);
    unet_free(&un);
    model_close(&m);
    compute_free(&cc);
}

int main(void) {
    open_fixture(&ex, "sd1-img2img/expected.safetensors");
    float *init = malloc(3 * 128 * 192 * sizeof(float)), *wide = malloc(3 * 128 * 192 * sizeof(float));
    float *mask = malloc(128 * 128 * sizeof(float)), *scratch_img = malloc(3 * 128 * 192 * sizeof(float));
    test_init("init", 128, 128, 1e-7, init);
    test_init("init_wide", 192, 128, 1e-7, wide);
    test_init("init_odd", 128, 96, 2.0 / 255 + 1e-6, scratch_img); /* 131x101 -> 128x96 (Lanczos) */
    test_mask("mask", 128, 128, 1.0, mask);
    test_masked(init, mask, "mask");
    test_mask("mask_soft", 128, 128, 1.0, mask);
    test_masked(init, mask, "mask_soft");
    test_mask("mask_odd", 128, 96, 0.995, scratch_img);

    char err[512] = "";
    sd_model m;
    vae va;
    compute cc;
    compute_init(&cc, 0, 0, 0);
    if (open_model("model_f32.safetensors", &m, err, sizeof err) == SD_OK &&
        vae_load(&va, &m.store, err, sizeof err) == SD_OK) {
        test_encode(&cc, &va, "init", init, 128, 128);
        test_encode(&cc, &va, "init_wide", wide, 192, 128);
        vae_free(&va);
        model_close(&m);
    } else {
        CHECK(0, "load sd1-tiny: %s", err);
    }
    compute_free(&cc);
    test_unet9();
    free(init);
    free(wide);
    free(mask);
    free(scratch_img);
    st_close(&ex);
    return test_finish();
}
