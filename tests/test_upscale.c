/* test_upscale.c - upscaling through the `sd` binary: every esrgan/ fixture case by `sd --upscale-model M -i IN -o OUT`
 * within 1/255 of the expected PNG, the PNG's parameters (carried over, AUTOMATIC1111's postprocessing keys),
 * --upscale-repeats, a generation's image upscaled before it is written; the hires fix's second pass byte for byte
 * the img2img of the upscaled first image (lanczos and an upscale model), each --hires-upscaler kind; bad input. */
#define _GNU_SOURCE
#include "output.h"
#include "sd.h"
#include "test_util.h"

#include <cJSON.h>

static char tmpdir[] = "/tmp/sd-test-upscale-XXXXXX";
static char model[1024], out[600], x2[1024], x4[1024];

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
/* A 64x64, 4-step, seed-5 run of the sd1-tiny model, plus the given arguments. */
#define GEN(...) ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "4", "-s", "5", __VA_ARGS__)

static const char *tmp(const char *name) {
    static char path[4][700];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", tmpdir, name);
    return p;
}

static void expect_error(const char *what, const char *want, const char *const *args) {
    expect_sd_error(out, what, 2, want, args);
}

/* Runs sd, expecting success. */
static void run_ok(const char *what, const char *const *args) {
    char *err = NULL;
    int rc = run_sd(args, &err);
    CHECK(rc == 0, "%s: exit %d: %s", what, rc, err ? err : "");
    free(err);
}

/* The largest difference between two images' RGB values (256 when they cannot be read or differ in size). */
static int image_difference(const char *a, const char *b, int *w, int *h) {
    char err[SD_ERR_LEN];
    sd_pixels pa, pb;
    if (sd_pixels_read(a, &pa, err) != SD_OK) return 256;
    if (sd_pixels_read(b, &pb, err) != SD_OK) {
        sd_pixels_free(&pa);
        return 256;
    }
    int worst = pa.width == pb.width && pa.height == pb.height && pa.channels == 3 && pb.channels == 3 ? 0 : 256;
    for (size_t i = 0; worst < 256 && i < (size_t)3 * pa.width * pa.height; i++) {
        int d = abs((int)pa.data[i] - (int)pb.data[i]);
        worst = d > worst ? d : worst;
    }
    if (w) *w = pa.width;
    if (h) *h = pa.height;
    sd_pixels_free(&pa);
    sd_pixels_free(&pb);
    return worst;
}

static void expect_text(const char *png, const char *want, const char *what) {
    char *text = output_read_png_text(png, "parameters");
    CHECK(text && strstr(text, want), "%s: want '%s' in %s", what, want, text ? text : "(no parameters)");
    free(text);
}

/* Every shared case through the binary: within 1/255 of the expected PNG, the parameters naming model and scale. */
static void test_fixture_cases(void) {
    cJSON *root = fixture_json("esrgan/cases.json");
    int n = 0;
    for (const cJSON *c = cJSON_GetObjectItem(root, "cases")->child; c; c = c->next, n++) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        const char *m = cJSON_GetObjectItem(c, "model")->valuestring;
        char mpath[1024], in[1024], want[1024], label[200];
        snprintf(mpath, sizeof mpath, "%s/esrgan/%s", SD_FIXTURES, m);
        snprintf(in, sizeof in, "%s/esrgan/%s", SD_FIXTURES, cJSON_GetObjectItem(c, "input")->valuestring);
        snprintf(want, sizeof want, "%s/esrgan/%s", SD_FIXTURES, cJSON_GetObjectItem(c, "output")->valuestring);
        const char *png = tmp("case.png");
        unlink(png);
        run_ok(name, ARGS("--upscale-model", mpath, "-i", in, "-o", png));
        int w = 0, h = 0, d = image_difference(png, want, &w, &h);
        printf("%-20s %dx%d worst %d/255\n", name, w, h, d);
        CHECK(d <= 1, "%s: the binary's PNG is %d/255 away from the expected one (limit 1)", name, d);
        snprintf(label, sizeof label, "Postprocess upscaler: %.*s, Postprocess upscale by: %d",
                 (int)(strrchr(m, '.') - m), m, cJSON_GetObjectItem(c, "scale")->valueint);
        expect_text(png, label, name);
    }
    CHECK(n == 8, "ran %d cases", n);
    cJSON_Delete(root);
}

/* The input's parameters are carried over; --upscale-repeats N is N passes (the same pixels as N runs). */
static void test_parameters_and_repeats(void) {
    char in[1024], err[SD_ERR_LEN];
    snprintf(in, sizeof in, "%s/esrgan/inputs/rgb_37x29.png", SD_FIXTURES);
    sd_pixels px;
    CHECK(sd_pixels_read(in, &px, err) == SD_OK, "read input");
    const char *with_text = tmp("with_text.png");
    CHECK(output_write_png(with_text, px.data, px.width, px.height, "parameters", "a cat\nSteps: 2, Seed: 7", err,
                           sizeof err) == 0,
          "write an input with parameters");
    sd_pixels_free(&px);
    const char *once = tmp("once.png"), *twice = tmp("twice.png"), *repeated = tmp("repeated.png");
    run_ok("carry", ARGS("--upscale-model", x2, "-i", with_text, "-o", once));
    char *text = output_read_png_text(once, "parameters");
    CHECK(text && !strcmp(text, "a cat\nSteps: 2, Seed: 7, Postprocess upscaler: realesrgan_tiny_x2, Postprocess "
                                "upscale by: 2"),
          "carried parameters: %s", text ? text : "(none)");
    free(text);
    run_ok("second pass", ARGS("--upscale-model", x2, "-i", once, "-o", twice));
    run_ok("repeats", ARGS("--upscale-model", x2, "-i", with_text, "--upscale-repeats", "2", "-o", repeated));
    int w = 0, h = 0, d = image_difference(repeated, twice, &w, &h);
    CHECK(d == 0 && w == 148 && h == 116, "--upscale-repeats 2: %dx%d, %d/255 from two runs", w, h, d);
    expect_text(repeated, "Seed: 7, Postprocess upscaler: realesrgan_tiny_x2, Postprocess upscale by: 4", "repeats");
}

/* With -m, the generated image is upscaled before it is written: the same pixels as upscaling it afterwards. */
static void test_generation_upscaled(void) {
    const char *direct = tmp("gen_up.png"), *plain = tmp("gen.png"), *after = tmp("gen_after.png");
    run_ok("generate and upscale", GEN("--upscale-model", x2, "-o", direct));
    run_ok("generate", GEN("-o", plain));
    run_ok("upscale afterwards", ARGS("--upscale-model", x2, "-i", plain, "-o", after));
    int w = 0, h = 0, d = image_difference(direct, after, &w, &h);
    CHECK(d == 0 && w == 128 && h == 128, "generation + --upscale-model: %dx%d, %d/255 from two runs", w, h, d);
    expect_text(direct, "Size: 64x64, Model: model_f32", "generation size");
    expect_text(direct, "RNG: CPU, Postprocess upscaler: realesrgan_tiny_x2, Postprocess upscale by: 2",
                "generation postprocess keys");
}

/* The hires fix's second pass is the img2img of the upscaled first image at W·S x H·S, byte for byte: Lanczos (with
 * --hires-steps / --hires-denoising-strength, stable-diffusion.cpp's names) and an upscale model; the latent kind runs
 * and records its name. */
static void test_hires(void) {
    const char *first = tmp("first.png"), *hires = tmp("hires.png"), *separate = tmp("separate.png");
    run_ok("first pass", GEN("-o", first));
    run_ok("hires lanczos", GEN("--hires-scale", "2", "--hires-upscaler", "Lanczos", "--hires-steps", "6",
                                "--hires-denoising-strength", "0.5", "-o", hires));
    run_ok("separate img2img", ARGS("-m", model, "-p", "a dog", "-s", "5", "-i", first, "-W", "128", "-H", "128",
                                    "--steps", "6", "--strength", "0.5", "-o", separate));
    int w = 0, h = 0, d = image_difference(hires, separate, &w, &h);
    CHECK(d == 0 && w == 128 && h == 128, "hires lanczos: %dx%d, %d/255 from the separate img2img", w, h, d);
    expect_text(hires, "Size: 64x64", "hires records the first pass's size");
    expect_text(hires, "Hires upscale: 2, Hires steps: 6, Hires upscaler: Lanczos, Denoising strength: 0.5", "lanczos");

    const char *up = tmp("first_up.png");
    run_ok("hires model", GEN("--hires-scale", "1.5", "--hires-upscaler", x4, "-o", hires));
    run_ok("first pass upscaled", ARGS("--upscale-model", x4, "-i", first, "-o", up));
    run_ok("separate img2img of the model's output",
           ARGS("-m", model, "-p", "a dog", "-s", "5", "-i", up, "-W", "96", "-H", "96", "--steps", "4", "--strength",
                "0.7", "-o", separate));
    d = image_difference(hires, separate, &w, &h);
    CHECK(d == 0 && w == 96 && h == 96, "hires model: %dx%d, %d/255 from the separate img2img", w, h, d);
    expect_text(hires,
                "Hires upscale: 1.5, Hires steps: 4, Hires upscaler: realesrgan_tiny_x4, Denoising strength: 0.7",
                "model");

    run_ok("hires latent", GEN("--hires-scale", "2", "-o", hires));
    image_difference(hires, hires, &w, &h);
    CHECK(w == 128 && h == 128, "hires latent: %dx%d", w, h);
    expect_text(hires, "Hires upscale: 2, Hires steps: 4, Hires upscaler: Latent, Denoising strength: 0.7", "latent");
    char *err = NULL;
    CHECK(run_sd(GEN("--hires-upscaler", "lanczos", "-o", hires), &err) == 0 && err &&
              strstr(err, "sd: warning: --hires-upscaler does nothing without --hires-scale"),
          "upscaler without a scale warns: %s", err ? err : "");
    free(err);
}

static void test_bad_input(void) {
    char in[1024], mal[1024], inpaint[1024], cmd[3000];
    snprintf(in, sizeof in, "%s/esrgan/inputs/rgb_37x29.png", SD_FIXTURES);
    snprintf(mal, sizeof mal, "%s/sd1-formats/malicious.ckpt", SD_FIXTURES);
    snprintf(inpaint, sizeof inpaint, "%s/sd1-img2img/model_inpaint_f32.safetensors", SD_FIXTURES);
    const char *trunc = tmp("trunc.pth");
    snprintf(cmd, sizeof cmd, "head -c 20000 %s > %s", x4, trunc);
    CHECK(system(cmd) == 0, "truncated copy");
#define UP(m, ...) ARGS("--upscale-model", m, "-i", in, "-o", out, __VA_ARGS__)
    expect_error("a checkpoint as upscaler", "not an RRDBNet (ESRGAN / Real-ESRGAN) upscaler", UP(model, "-v"));
    expect_error("hostile .pth", "pickle global 'posix.system' is not allowed", UP(mal, "-v"));
    expect_error("truncated .pth", "--upscale-model: ", UP(trunc, "-v"));
    expect_error("missing model", "--upscale-model: /nonexistent.pth: cannot open", UP("/nonexistent.pth", "-v"));
    expect_error("missing input", "-i: /nonexistent.png: cannot open",
                 ARGS("--upscale-model", x4, "-i", "/nonexistent.png", "-o", out));
    expect_error("no input", "--upscale-model without -m upscales an image: give it with -i",
                 ARGS("--upscale-model", x4, "-o", out));
    expect_error("repeats 0", "--upscale-repeats: 0 is outside 1..4", UP(x4, "--upscale-repeats", "0"));
    expect_error("repeats 5", "--upscale-repeats: 5 is outside 1..4", UP(x4, "--upscale-repeats", "5"));
    const char *wide = tmp("wide.png");
    unsigned char *grey = calloc(300 * 8, 3);
    char err[SD_ERR_LEN];
    CHECK(grey && output_write_png(wide, grey, 300, 8, "x", "", err, sizeof err) == 0, "write a 300x8 image");
    free(grey);
    expect_error("output side", "upscaling 19200x512 by 4 (to 76800x2048) needs about",
                 ARGS("--upscale-model", x4, "-i", wide, "-o", out, "--upscale-repeats", "4"));
    expect_error("output side", "the output side would pass 65535 pixels",
                 ARGS("--upscale-model", x4, "-i", wide, "-o", out, "--upscale-repeats", "4"));
    setenv("SD_MEMORY_LIMIT", "100", 1); /* MB: the first pass fits, not the next */
    expect_error("memory", "upscaling 592x464 by 4 (to 2368x1856) needs about", UP(x4, "--upscale-repeats", "3"));
    expect_error("memory", "but SD_MEMORY_LIMIT allows 100 MB", UP(x4, "--upscale-repeats", "3"));
    expect_error("memory, generation", "--upscale-model: job 1: upscaling 256x256 by 4 (to 1024x1024) needs about",
                 GEN("--upscale-model", x4, "--upscale-repeats", "3", "-o", out));
    unsetenv("SD_MEMORY_LIMIT");
    expect_error("hires without -m", "--hires-scale: re-denoises a generation; it needs a model",
                 UP(x4, "--hires-scale", "2"));
    expect_error("hires scale 1", "--hires-scale: 1 is not above 1 and at most 8", GEN("--hires-scale", "1"));
    expect_error("hires scale 9", "--hires-scale: 9 is not above 1 and at most 8", GEN("--hires-scale", "9"));
    expect_error("hires scale text", "--hires-scale: 'two' is not a number", GEN("--hires-scale", "two"));
    expect_error("hires strength", "--hires-strength: 0 is outside (0, 1]", GEN("--hires-strength", "0"));
    expect_error("hires steps", "--hires-steps: 0 is outside 1..1000", GEN("--hires-steps", "0"));
    expect_error("hires upscaler typo", "--hires-upscaler: 'lanczoz' is not latent, lanczos or an upscale model file",
                 GEN("--hires-scale", "2", "--hires-upscaler", "lanczoz"));
    expect_error("hires upscaler not RRDBNet",
                 "--hires-upscaler: ", GEN("--hires-scale", "2", "--hires-upscaler", model));
    expect_error("hires upscaler hostile", "pickle global 'posix.system' is not allowed",
                 GEN("--hires-scale", "2", "--hires-upscaler", mal));
    expect_error("hires with -i", "hires fix: for text to image", GEN("--hires-scale", "2", "-i", in));
    expect_error("hires too large", "hires-scale: 8 makes 8192x512, larger than 4096x4096",
                 ARGS("-m", model, "-p", "x", "-W", "1024", "-H", "64", "--hires-scale", "8", "-o", out));
    expect_error("second pass runs no step", "hires fix second pass (128x128): strength: 0.1 with 4 steps runs no step",
                 GEN("--hires-scale", "2", "--hires-strength", "0.1"));
    expect_error("latent hires on an inpainting model", "an inpainting model's second pass needs an image",
                 ARGS("-m", inpaint, "-p", "x", "--steps", "2", "--hires-scale", "2", "-o", out));
#undef UP
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 2;
    snprintf(model, sizeof model, "%s/model_f32.safetensors", SD_FIXTURES);
    snprintf(x2, sizeof x2, "%s/esrgan/realesrgan_tiny_x2.pth", SD_FIXTURES);
    snprintf(x4, sizeof x4, "%s/esrgan/realesrgan_tiny_x4.pth", SD_FIXTURES);
    snprintf(out, sizeof out, "%s/out.png", tmpdir);
    test_fixture_cases();
    test_parameters_and_repeats();
    test_generation_upscaled();
    test_hires();
    test_bad_input();
    remove_test_dir(tmpdir);
    return test_finish();
}
