/* test_taesd.c - TAESD against diffusers' AutoencoderTiny (taesd fixtures): decode and encode of the square
 * and the tall inputs within 1e-3, with the F32 file and the F16 file (against the f16. references), and with
 * the original separate decoder / encoder files (F16). */
#include "nets/taesd.h"
#include "test_util.h"

static void check(const char *label, const float *got, const float *want, size_t n) {
    double d = max_abs_diff(got, want, n);
    printf("%-34s max abs error %.3g\n", label, d);
    CHECK(d <= 1e-3, "%s: max abs error %.3g (limit 1e-3)", label, d);
}

/* The four module cases with decoder file dec and encoder file enc (ref prefix "" or "f16."). */
static void run_cases(const char *dec, const char *enc, const char *ref) {
    char path[1024], err[512] = "", key[96];
    taesd td, te;
    snprintf(path, sizeof path, "%s/taesd/%s", SD_FIXTURES, dec);
    CHECK(taesd_load(&td, path, err, sizeof err) == 0 && td.has_decoder, "load %s: %s", dec, err);
    snprintf(path, sizeof path, "%s/taesd/%s", SD_FIXTURES, enc);
    CHECK(taesd_load(&te, path, err, sizeof err) == 0 && te.has_encoder, "load %s: %s", enc, err);
    st_file ex;
    open_fixture(&ex, "taesd/expected.safetensors");
    compute cc;
    compute_init(&cc, 0, 0, 0);
    int64_t half = taesd_max_half(&td) > taesd_max_half(&te) ? taesd_max_half(&td) : taesd_max_half(&te);
    compute_reserve_scratch(&cc, (size_t)half + 1);
    static const struct {
        const char *name;
        int h, w;
    } cases[] = {{"decode", 16, 16}, {"decode_tall", 24, 16}};
    for (int c = 0; c < 2; c++) {
        size_t nz, ni;
        snprintf(key, sizeof key, "%s.z", cases[c].name);
        const float *z = fixture_f32(&ex, key, &nz);
        snprintf(key, sizeof key, "%s%s.image", ref, cases[c].name);
        const float *want = fixture_f32(&ex, key, &ni);
        float *img = malloc(ni * sizeof(float));
        CHECK(ni == (size_t)3 * 64 * cases[c].h * cases[c].w &&
                  taesd_decode(&cc, &td, z, cases[c].h, cases[c].w, img) == SD_OK,
              "%s: decode", key);
        char label[160];
        snprintf(label, sizeof label, "%s (%s)", key, dec);
        check(label, img, want, ni);
        free(img);
        const char *enc_name = c == 0 ? "encode" : "encode_tall";
        snprintf(key, sizeof key, "%s.image", enc_name);
        const float *image = fixture_f32(&ex, key, &ni);
        snprintf(key, sizeof key, "%s%s.latent", ref, enc_name);
        want = fixture_f32(&ex, key, &nz);
        float *lat = malloc(nz * sizeof(float));
        CHECK(taesd_encode(&cc, &te, image, 8 * cases[c].h, 8 * cases[c].w, lat) == SD_OK, "%s: encode", key);
        snprintf(label, sizeof label, "%s (%s)", key, enc);
        check(label, lat, want, nz);
        free(lat);
    }
    compute_free(&cc);
    st_close(&ex);
    taesd_free(&td);
    taesd_free(&te);
}

int main(void) {
    run_cases("taesd.safetensors", "taesd.safetensors", "");
    run_cases("taesd_f16.safetensors", "taesd_f16.safetensors", "f16.");
    run_cases("taesd_decoder_f16.safetensors", "taesd_encoder_f16.safetensors", "f16.");
    char err[512], path[1024];
    taesd t;
    snprintf(path, sizeof path, "%s/model_f32.safetensors", SD_FIXTURES);
    CHECK(taesd_load(&t, path, err, sizeof err) != 0 && strstr(err, "not a TAESD file"),
          "a checkpoint is not a TAESD: %s", err);
    return test_finish();
}
