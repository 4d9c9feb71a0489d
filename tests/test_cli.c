/* test_cli.c - the `sd` command line: --help, --info, and every kind of bad input giving one
 * line on stderr starting with "sd: error:", naming the thing and the problem, exit status 2,
 * and no output file. */
#define _GNU_SOURCE
#include "output.h"
#include "sd.h"
#include "io/sha256.h"
#include "test_util.h"

#include <signal.h>
#include <sys/stat.h>
#include <time.h>

static char tmpdir[] = "/tmp/sd-test-cli-XXXXXX";
static const char *write_file(const char *name, const void *data, size_t len) {
    return write_test_file(tmpdir, name, data, len);
}
static const char *write_st(const char *name, const char *header, size_t data_len) {
    return write_test_safetensors(tmpdir, name, header, data_len);
}
static char model[1024], out[600];

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static int one_line(const char *s) { return s && strchr(s, '\n') == s + strlen(s) - 1; }

/* The PNG's parameters text contains `want`. */
static void expect_parameters(const char *png, const char *want, const char *what) {
    char *text = output_read_png_text(png, "parameters");
    CHECK(text && strstr(text, want), "%s: %s", what, text ? text : "(no parameters)");
    free(text);
}

/* Runs sd and expects exit `code`, a single "sd: error:" line containing `want`, and no output file. */
static void expect_error(const char *what, int code, const char *want, const char *const *args) {
    expect_sd_error(out, what, code, want, args);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
/* A 64x64, 2-step run of the sd1-tiny model into `out`, plus the given arguments. */
#define SMALL_RUN(...) ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-o", out, __VA_ARGS__)

static void test_arguments(void) {
    expect_error("unknown option", 2, "unknown option '--bogus'", ARGS("-m", model, "-p", "x", "--bogus", "1"));
    expect_error("unknown option last", 2, "unknown option '--bogus'", ARGS("-m", model, "-p", "x", "--bogus"));
    expect_error("unknown --opt=value", 2, "unknown option '--bogus'", ARGS("-m", model, "-p", "x", "--bogus=3"));
    expect_error("--steps=value checked", 2, "--steps: 0 is outside 1..1000",
                 ARGS("-m", model, "-p", "x", "--steps=0"));
    expect_error("unknown sampler", 2, "unknown sampler 'dpm3'",
                 ARGS("-m", model, "-p", "x", "--sampling-method", "dpm3"));
    expect_error("steps 0", 2, "--steps: 0 is outside 1..1000", ARGS("-m", model, "-p", "x", "--steps", "0"));
    expect_error("steps 1001", 2, "--steps: 1001 is outside 1..1000", ARGS("-m", model, "-p", "x", "--steps", "1001"));
    expect_error("width not /8", 2, "-W: '100' is not a multiple of 8 in 64..4096",
                 ARGS("-m", model, "-p", "x", "-W", "100", "-o", out));
    expect_error("height too big", 2, "--height: '4104' is not a multiple of 8 in 64..4096",
                 ARGS("-m", model, "-p", "x", "--height", "4104"));
    expect_error("width too small", 2, "--width: '56' is not a multiple of 8 in 64..4096",
                 ARGS("-m", model, "-p", "x", "--width=56"));
    expect_error("cfg < 0", 2, "--cfg-scale: -1 must be >= 0", ARGS("-m", model, "-p", "x", "--cfg-scale", "-1"));
    expect_error("steps not a number", 2, "--steps: 'abc' is not an integer",
                 ARGS("-m", model, "-p", "x", "--steps", "abc"));
    expect_error("cfg not a number", 2, "--cfg-scale: '7.5x' is not a number",
                 ARGS("-m", model, "-p", "x", "--cfg-scale", "7.5x"));
    expect_error("seed not a number", 2, "--seed: 'abc'", ARGS("-m", model, "-p", "x", "-s", "abc"));
    expect_error("width not a number", 2, "-W: '' is not a multiple of 8 in 64..4096",
                 ARGS("-m", model, "-p", "x", "-W", ""));
    expect_error("eta negative", 2, "--eta: -0.5 must be >= 0", ARGS("-m", model, "-p", "x", "--eta", "-0.5"));
    expect_error("bad scheduler", 2, "--scheduler: unknown value 'exp'",
                 ARGS("-m", model, "-p", "x", "--scheduler", "exp"));
    expect_error("bad spacing", 2, "--timestep-spacing: unknown value 'x'",
                 ARGS("-m", model, "-p", "x", "--timestep-spacing", "x"));
    expect_error("bad rng", 2, "--rng: unknown value 'gpu'", ARGS("-m", model, "-p", "x", "--rng", "gpu"));
    expect_error("missing value", 2, "option '--steps' needs a value", ARGS("-m", model, "-p", "x", "--steps"));
    expect_error("no model", 2, "no model given", ARGS("-p", "x"));
    expect_error("no prompt", 2, "no prompt given", ARGS("-m", model));
    expect_error("stray argument", 2, "unexpected argument 'extra'", ARGS("-m", model, "-p", "x", "extra"));
    expect_error("missing model", 2, "/nonexistent.safetensors: cannot open",
                 ARGS("-m", "/nonexistent.safetensors", "-p", "x", "-o", out));
    char missing_dir[700];
    snprintf(missing_dir, sizeof missing_dir, "%s/no/such/dir/out.png", tmpdir);
    expect_error("output dir missing", 2, "does not exist",
                 ARGS("-m", model, "-p", "x", "--steps", "1", "-o", missing_dir));
    CHECK(!exists(missing_dir), "nothing written in a missing directory");
    expect_error("output is a directory", 2, "is a directory",
                 ARGS("-m", model, "-p", "x", "--steps", "1", "-o", tmpdir));
    expect_error("output is the model", 2, "is the model file",
                 ARGS("-m", model, "-p", "x", "--steps", "1", "-o", model));
    expect_error("invalid UTF-8 prompt", 2, "prompt: invalid UTF-8 at byte 3",
                 ARGS("-m", model, "-p", "abc\xff", "--steps", "1", "-W", "64", "-H", "64", "-o", out));
    expect_error("invalid UTF-8 negative prompt", 2, "negative prompt: invalid UTF-8",
                 ARGS("-m", model, "-p", "a", "-n", "\xc3", "--steps", "1", "-W", "64", "-H", "64", "-o", out));
}

static void expect_model_error(const char *path, const char *want) {
    char label[900], p[800];
    snprintf(p, sizeof p, "%s", path);
    snprintf(label, sizeof label, "model %s", p);
    expect_error(label, 2, want, ARGS("-m", p, "-p", "x", "-o", out));
    char *err = NULL;
    int rc = run_sd(ARGS("--info", "-m", p), &err);
    CHECK(rc == 2 && err && strstr(err, p) && strstr(err, want) && one_line(err), "--info %s: %d %s", p, rc,
          err ? err : "");
    free(err);
}

static void test_bad_models(void) {
    expect_model_error(tmpdir, "is a directory");
    expect_model_error(write_file("empty", "", 0), "empty file");
    expect_model_error(write_file("short", "abc", 3), "too short");
    unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, '{'};
    expect_model_error(write_file("absurd", big, 16), "absurd");
    unsigned char past[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_model_error(write_file("past", past, 10), "past the end of the file");
    char png[1024];
    snprintf(png, sizeof png, "%s/sd1-img2img/init.png", SD_FIXTURES);
    expect_model_error(png, "not a model file (neither safetensors nor a PyTorch .ckpt / .pth zip)");
    /* safetensors headers that are valid JSON but not a usable checkpoint: {file, header, data bytes, error} */
    static const struct {
        const char *name, *header;
        size_t data;
        const char *want;
    } bad[] = {
        {"notjson", "{not json", 0, "not valid JSON"},
        {"array", "[1]", 0, "not a JSON object"},
        {"nodtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing dtype"},
        {"noshape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing shape"},
        {"nooffs", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing data_offsets"},
        {"dtype", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "unsupported dtype 'U8'"},
        {"neg", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,4]}}", 4, "not a non-negative integer"},
        {"frac", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0.5],\"data_offsets\":[0,4]}}", 4, "not a non-negative integer"},
        {"ovf", "{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,9007199254740992],\"data_offsets\":[0,4]}}", 4,
         "overflows"},
        {"range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 4, "past the end of the data"},
        {"rev", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "reversed"},
        {"size", "{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4, "shape x dtype"},
        {"llm", "{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "not a Stable Diffusion checkpoint"},
        {"sd2",
         "{\"cond_stage_model.model.token_embedding.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         4, "missing tensor 'model.diffusion_model.input_blocks.0.0.weight' (UNet)"},
        {"mixed",
         "{\"cond_stage_model.model.token_embedding.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight\":{\"dtype\":\"F32\",\"shape\":["
         "1],\"data_offsets\":[4,8]}}",
         8, "mixes model families"},
        {"notext",
         "{\"model.diffusion_model.input_blocks.0.0.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"first_stage_model.decoder.conv_in.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "missing tensor 'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_model_error(write_st(bad[i].name, bad[i].header, bad[i].data), bad[i].want);
}

static void test_help_and_info(void) {
    char *err = NULL;
    CHECK(run_sd(ARGS("--help"), &err) == 0, "--help exits 0");
    free(err);
    char cmd0[1200];
    snprintf(cmd0, sizeof cmd0, "%s --version | grep -qx 'sd %s'", SD_BIN, sd_version());
    CHECK(system(cmd0) == 0, "--version prints 'sd %s'", sd_version());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s --help > %s/help.txt; %s --info -m %s > %s/info.txt", SD_BIN, tmpdir, SD_BIN, model,
             tmpdir);
    CHECK(system(cmd) == 0, "--help / --info run");
    snprintf(cmd, sizeof cmd, "%s/help.txt", tmpdir);
    char *help = read_text_file(cmd);
    const char *opts[] = {"--model",
                          "--prompt",
                          "--negative-prompt",
                          "--output",
                          "--width",
                          "--height",
                          "--steps",
                          "--cfg-scale",
                          "--seed",
                          "--sampling-method",
                          "--scheduler",
                          "--timestep-spacing",
                          "--eta",
                          "--rng",
                          "--batch-count",
                          "--threads",
                          "--verbose",
                          "--latent-out",
                          "--help",
                          "exit status"};
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        CHECK(help && strstr(help, opts[i]), "--help lists %s", opts[i]);
    free(help);
    snprintf(cmd, sizeof cmd, "%s/info.txt", tmpdir);
    char *info = read_text_file(cmd);
    CHECK(info && strstr(info, "tensors:       985"), "--info: 985 tensors");
    CHECK(info && strstr(info, "text encoder:  1621696 parameters"), "--info: text encoder parameters");
    CHECK(info && strstr(info, "unet:          3222692 parameters"), "--info: unet parameters");
    CHECK(info && strstr(info, "vae:           1399879 parameters"), "--info: vae parameters");
    CHECK(info && strstr(info, "family:        SD 1.x") && strstr(info, "sd.unet.heads = 8"),
          "--info: family and metadata");
    free(info);
}

/* -b 2 writes out.png and out_1.png with seeds s and s+1; the second equals a single run with seed s+1. */
static void test_batch(void) {
    char o[700], o1[700], single[700];
    snprintf(o, sizeof o, "%s/batch.png", tmpdir);
    snprintf(o1, sizeof o1, "%s/batch_1.png", tmpdir);
    snprintf(single, sizeof single, "%s/single.png", tmpdir);
    CHECK(
        run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "10", "-b", "2", "-o", o),
               NULL) == 0,
        "batch run");
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "11", "-o", single),
                 NULL) == 0,
          "single run");
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", o1, single);
    CHECK(exists(o) && system(cmd) == 0, "batch_1.png is byte-identical to a single run with seed + 1");
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", o, single);
    CHECK(system(cmd) != 0, "batch.png (seed 10) differs from seed 11");
}

/* Same arguments: byte-identical PNGs, across runs and across -t 1 / -t 2. */
static void test_determinism(void) {
    char a[700], b[700], c[700], cmd[3000];
    snprintf(a, sizeof a, "%s/det_a.png", tmpdir);
    snprintf(b, sizeof b, "%s/det_b.png", tmpdir);
    snprintf(c, sizeof c, "%s/det_c.png", tmpdir);
    CHECK(
        run_sd(ARGS("-m", model, "-p", "a dog", "-W", "128", "-H", "64", "--steps", "3", "-s", "5", "-t", "2", "-o", a),
               NULL) == 0,
        "run a");
    CHECK(
        run_sd(ARGS("-m", model, "-p", "a dog", "-W", "128", "-H", "64", "--steps", "3", "-s", "5", "-t", "2", "-o", b),
               NULL) == 0,
        "run b");
    CHECK(
        run_sd(ARGS("-m", model, "-p", "a dog", "-W", "128", "-H", "64", "--steps", "3", "-s", "5", "-t", "1", "-o", c),
               NULL) == 0,
        "run c");
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s' && cmp -s '%s' '%s'", a, b, a, c);
    CHECK(system(cmd) == 0, "same arguments give byte-identical PNGs (runs and -t 1 / -t 2)");
}

/* Starts sd in the background with its stderr into err_path: the tiny model, "a dog", size x size pixels, `steps`
 * steps, the PNG to o. */
static pid_t start_sd(const char *err_path, const char *size, const char *steps, const char *o) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        execl(SD_BIN, SD_BIN, "-m", model, "-p", "a dog", "-W", size, "-H", size, "--steps", steps, "-o", o,
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* SIGINT stops within the current step: exit 1, one error line, no output and no temporary file. */
static void test_signal(void) {
    char o[700], err_path[700];
    snprintf(o, sizeof o, "%s/sig.png", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/sig.err", tmpdir);
    pid_t pid = start_sd(err_path, "512", "1000", o);
    usleep(1500 * 1000);
    kill(pid, SIGINT);
    int status = 0;
    waitpid(pid, &status, 0);
    char *err = read_text_file(err_path), cmd[900];
    const char *last = err ? strstr(err, "sd: error:") : NULL;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1 && last && strstr(last, "cancelled") && one_line(last),
          "SIGINT: status %d, stderr '%s'", status, err ? err : "");
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q sd-tmp", tmpdir);
    CHECK(!exists(o) && system(cmd) != 0, "SIGINT leaves no image and no temporary file");
    free(err);
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Starts sd on a 4096x4096 image of the tiny model (one UNet evaluation: minutes of attention over 262144 tokens),
 * sends a SIGINT `first_s` seconds later, and when `signals` is 2 a SIGTERM right after it (the stop takes
 * milliseconds, so a second signal must follow at once; two SIGINTs sent together may merge into one pending
 * signal), and returns the seconds from the first signal to the exit; *status the wait status, *err its stderr. */
static double interrupt_large(int signals, double first_s, int *status, char **err) {
    char o[700], err_path[700];
    snprintf(o, sizeof o, "%s/large.png", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/large.err", tmpdir);
    pid_t pid = start_sd(err_path, "4096", "2", o);
    usleep((useconds_t)(first_s * 1e6));
    double t0 = seconds_now();
    kill(pid, SIGINT);
    if (signals > 1) kill(pid, SIGTERM);
    waitpid(pid, status, 0);
    double waited = seconds_now() - t0;
    *err = read_text_file(err_path);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q sd-tmp", tmpdir);
    CHECK(!exists(o) && system(cmd) != 0, "SIGINT at 4096x4096 leaves no image and no temporary file");
    return waited;
}

/* A size far beyond the model's: a note with the estimated time of an evaluation. Ctrl-C inside that long UNet
 * evaluation: "stopping…" at once, the exit within 2 s (the kernels poll the flag); a second signal quits at once. */
static void test_signal_large(void) {
    int status = 0;
    char *err = NULL;
    double s = interrupt_large(1, 3.0, &status, &err);
    const char *last = err ? strstr(err, "sd: error:") : NULL;
    printf("SIGINT at 4096x4096: exit %.2f s after the signal\n", s);
    CHECK(err && strstr(err, "sd: note: 4096x4096 is 64x the pixels of this model's 512x512: about ") &&
              strstr(err, "TFLOP per UNet evaluation, roughly ") && strstr(err, "square of the pixel count"),
          "the note on the size: %s", err ? err : "");
    CHECK(s < 2.0 && WIFEXITED(status) && WEXITSTATUS(status) == 1 && err && strstr(err, "sd: stopping…") && last &&
              strstr(last, "cancelled") && one_line(last),
          "SIGINT at 4096x4096: %.2f s (limit 2), status %d, stderr '%s'", s, status, err ? err : "");
    free(err);
    s = interrupt_large(2, 3.0, &status, &err);
    CHECK(s < 1.0 && WIFEXITED(status) && WEXITSTATUS(status) == 1 && err && strstr(err, "sd: quit"),
          "SIGINT then SIGTERM: %.2f s, status %d, stderr '%s'", s, status, err ? err : "");
    free(err);
}

/* Sizes whose activations cannot fit are refused before any compute. */
static void test_memory_limit(void) {
    setenv("SD_MEMORY_LIMIT", "16", 1);
    char *err = NULL;
    unlink(out);
    int rc = run_sd(ARGS("-m", model, "-p", "x", "-W", "1024", "-H", "1024", "-o", out), &err);
    CHECK(rc == 1 && err && strstr(err, "sd: error: size 1024x1024 needs about") &&
              strstr(err, "but SD_MEMORY_LIMIT allows 16 MB") && one_line(err) && !exists(out),
          "memory refusal: %d %s", rc, err ? err : "");
    free(err);
    unsetenv("SD_MEMORY_LIMIT");
}

/* --vae-tiling: tiles above 512 pixels; the same tiles are chosen on their own, with a note, when the untiled
 * decoder would not fit SD_MEMORY_LIMIT; both record "VAE tiles: 512". */
static void test_vae_tiling(void) {
    char a[700], b[700], cmd[1600];
    snprintf(a, sizeof a, "%s/tiled_a.png", tmpdir);
    snprintf(b, sizeof b, "%s/tiled_b.png", tmpdir);
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "576", "-H", "520", "--steps", "1", "-s", "1", "--vae-tiling",
                      "-o", a),
                 NULL) == 0,
          "--vae-tiling run");
    setenv("SD_MEMORY_LIMIT", "200", 1);
    char *err = NULL;
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "576", "-H", "520", "--steps", "1", "-s", "1", "-o", b),
                 &err) == 0 &&
              err && strstr(err, "sd: note: the VAE ran in 512-pixel tiles"),
          "automatic tiling: %s", err ? err : "");
    unsetenv("SD_MEMORY_LIMIT");
    free(err);
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    CHECK(system(cmd) == 0, "automatic tiling gives the bytes of --vae-tiling");
    expect_parameters(a, ", VAE tiles: 512", "parameters record the tiling");
}

/* --low-memory: the weights' pages given back after each layer change nothing in the numbers (same bytes as the
 * default at a size without tiles, F16 file: the weights converted per layer are the ones dropped); above 256
 * pixels the VAE runs in 256-pixel tiles and the PNG records it. */
static void test_low_memory(void) {
    char a[700], b[700], f16[1024], cmd[1600];
    snprintf(a, sizeof a, "%s/lm_a.png", tmpdir);
    snprintf(b, sizeof b, "%s/lm_b.png", tmpdir);
    snprintf(f16, sizeof f16, "%s/model_f16.safetensors", SD_FIXTURES);
    CHECK(run_sd(ARGS("-m", f16, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "3", "-s", "4", "-o", a), NULL) == 0,
          "default run");
    CHECK(run_sd(ARGS("-m", f16, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "3", "-s", "4", "-o", b,
                      "--low-memory"),
                 NULL) == 0,
          "--low-memory run");
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    CHECK(system(cmd) == 0, "--low-memory gives the bytes of the default run at 64x64");
    char *err = NULL;
    CHECK(run_sd(ARGS("-m", f16, "-p", "a dog", "-W", "320", "-H", "264", "--steps", "1", "-s", "4", "-o", b,
                      "--low-memory"),
                 &err) == 0 &&
              err && !strstr(err, "note: the VAE ran"),
          "--low-memory at 320x264: %s", err ? err : "");
    free(err);
    expect_parameters(b, ", VAE tiles: 256", "parameters record the 256-pixel tiles");
}

/* --precision: bf16 changes the numbers (on CPUs with AVX512-BF16) and the PNG says so; a bad value is refused. */
static void test_precision(void) {
    char a[700], b[700], cmd[1600];
    snprintf(a, sizeof a, "%s/prec_f32.png", tmpdir);
    snprintf(b, sizeof b, "%s/prec_bf16.png", tmpdir);
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "3", "-o", a,
                      "--precision", "f32"),
                 NULL) == 0,
          "--precision f32 run");
    char *err = NULL;
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "3", "-o", b,
                      "--precision=bf16"),
                 &err) == 0,
          "--precision bf16 run: %s", err ? err : "");
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    if (sd_bf16_supported()) {
        CHECK(!err || !strstr(err, "warning"), "bf16 on an AVX512-BF16 CPU: no warning: %s", err ? err : "");
        CHECK(system(cmd) != 0, "bf16 gives other bytes than f32");
        expect_parameters(b, ", Precision: bf16", "parameters record bf16");
    } else {
        CHECK(err && strstr(err, "sd: warning: --precision bf16: this CPU has no AVX512-BF16; computing in float32"),
              "bf16 without AVX512-BF16 warns: %s", err ? err : "");
        CHECK(system(cmd) == 0, "bf16 without AVX512-BF16 computes float32");
    }
    free(err);
    char *text = output_read_png_text(a, "parameters");
    CHECK(text && !strstr(text, "Precision"), "f32 is not recorded (the default): %s", text ? text : "(none)");
    free(text);
    expect_error("bad precision", 2, "--precision: unknown value 'fp8' (one of: f32, bf16)",
                 SMALL_RUN("--precision", "fp8"));
    expect_error("precision without value", 2, "option '--precision' needs a value",
                 ARGS("-m", model, "-p", "x", "--precision"));
}

/* A grey w x h PNG in the temp dir. */
static const char *write_png(const char *name, int w, int h) {
    static char path[700];
    char err[512];
    unsigned char *rgb = calloc((size_t)w * h, 3);
    memset(rgb, 128, (size_t)w * h * 3);
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    CHECK(output_write_png(path, rgb, w, h, "x", "", err, sizeof err) == 0, "write %s", name);
    free(rgb);
    return path;
}

/* A copy of a fixture model whose header is edited in place (same length), e.g. a tensor's shape. */
static const char *edited_model(const char *src_name, const char *name, const char *from, const char *to) {
    CHECK(strlen(from) == strlen(to), "edit %s: same length", name);
    return write_edited_fixture(tmpdir, src_name, name, from, strlen(from), to, strlen(to));
}

/* img2img and inpainting inputs: each bad one refused before any compute, exit 2, no output. */
static void test_image_inputs(void) {
    char init[1024], mask[1024], small[700], big[700], corrupt[700], truncated[700];
    snprintf(init, sizeof init, "%s/sd1-img2img/init.png", SD_FIXTURES);
    snprintf(mask, sizeof mask, "%s/sd1-img2img/mask.png", SD_FIXTURES);
    snprintf(small, sizeof small, "%s", write_png("small.png", 16, 16));
    snprintf(big, sizeof big, "%s", write_png("big.png", 4104, 8));
    snprintf(corrupt, sizeof corrupt, "%s", write_file("corrupt.png", "\x89PNG\r\n\x1a\nnot really", 18));
    char *png = read_text_file(init);
    snprintf(truncated, sizeof truncated, "%s", write_file("truncated.png", png, 200));
    free(png);
    const char *base[] = {"-m", model, "-p", "x", "--steps", "2", "-o", out};
#define IMG(...) ARGS(base[0], base[1], base[2], base[3], base[4], base[5], base[6], base[7], __VA_ARGS__)
    expect_error("init missing", 2, "--init-img: /nonexistent.png: cannot open", IMG("-i", "/nonexistent.png"));
    expect_error("init corrupt", 2, "corrupt.png: not a readable PNG, JPEG or BMP image", IMG("-i", corrupt));
    expect_error("init truncated", 2, "truncated.png: not a readable PNG, JPEG or BMP image", IMG("-i", truncated));
    expect_error("init too small", 2,
                 "init image: 16x16 is smaller than 64x64 pixels (-W / -H of at least 64 resize it)", IMG("-i", small));
    expect_error("init too large", 2, "init image: 4104x8 is outside 8x8..4096x4096 pixels", IMG("-i", big));
    expect_error("strength 0", 2, "--strength: 0 is outside (0, 1]", IMG("-i", init, "--strength", "0"));
    expect_error("strength > 1", 2, "--strength: 1.5 is outside (0, 1]", IMG("-i", init, "--strength", "1.5"));
    expect_error("strength text", 2, "--strength: 'abc' is not a number", IMG("-i", init, "--strength", "abc"));
    expect_error("strength runs no step", 2, "strength: 0.2 with 2 steps runs no step",
                 IMG("-i", init, "--strength", "0.2"));
    expect_error("mask without init", 2, "--mask: needs an init image", IMG("--mask", mask));
    expect_error("mask unreadable", 2, "--mask: /nonexistent.png: cannot open",
                 IMG("-i", init, "--mask", "/nonexistent.png"));
    const char *odd = edited_model("model_f32.safetensors", "unet8.safetensors", "[32,4,3,3]", "[16,8,3,3]");
    expect_error("UNet neither 4 nor 9 channels", 2, "input_blocks.0.0.weight' takes 8 channels; expected 4",
                 ARGS("-m", odd, "-p", "x", "-i", init, "--mask", mask, "-o", out));
    /* A mask of another size is resized to the image (as diffusers does); a 9-channel model without a mask
     * repaints everything (mask all white). Both run. */
    char *err = NULL;
    CHECK(run_sd(IMG("-i", init, "--mask", small), &err) == 0 && exists(out), "mask of another size is resized: %s",
          err ? err : "");
    free(err);
    char inpaint[1024];
    snprintf(inpaint, sizeof inpaint, "%s/sd1-img2img/model_inpaint_f32.safetensors", SD_FIXTURES);
    unlink(out);
    CHECK(run_sd(ARGS("-m", inpaint, "-p", "x", "--steps", "2", "-i", init, "-o", out), NULL) == 0 && exists(out),
          "9-channel model without a mask runs");
    expect_parameters(out, "Size: 128x128", "img2img parameters: size");
    expect_parameters(out, "Denoising strength: 0.75", "img2img parameters: strength");
#undef IMG
}

/* SD 2.x: --info describes the family; broken SD 2.x files are refused naming the tensor. */
static void test_sd2(void) {
    char sd2[1024], cmd[1600];
    snprintf(sd2, sizeof sd2, "%s/sd2-tiny/model_f32.safetensors", SD_FIXTURES);
    snprintf(cmd, sizeof cmd, "%s --info -m %s > %s/info2.txt", SD_BIN, sd2, tmpdir);
    CHECK(system(cmd) == 0, "--info on SD 2.x");
    snprintf(cmd, sizeof cmd, "%s/info2.txt", tmpdir);
    char *info = read_text_file(cmd);
    CHECK(info && strstr(info, "family:        SD 2.x") && strstr(info, "OpenCLIP ViT-H/14") &&
              strstr(info, "output after 3 of its 4 layers") &&
              strstr(info, "prediction:    v_prediction (metadata sd.prediction)") &&
              strstr(info, "default size:  768x768"),
          "--info on SD 2.x: %s", info ? info : "");
    free(info);
    expect_model_error(
        edited_model("sd2-tiny/model_f32.safetensors", "sd2_noblock.safetensors", "resblocks.1.ln_1.weight",
                     "resblocks.1.ln_X.weight"),
        "missing tensor 'cond_stage_model.model.transformer.resblocks.1.ln_1.weight' (text encoder layer 1 of 4)");
    expect_model_error(
        edited_model("sd2-tiny/model_f32.safetensors", "sd2_proj.safetensors",
                     "proj_in.weight\":{\"dtype\":\"F32\",\"shape\":[32,32]",
                     "proj_in.weight\":{\"dtype\":\"F32\",\"shape\":[16,64]"),
        "tensor 'model.diffusion_model.input_blocks.1.1.proj_in.weight' has shape [16, 64], expected [16, 32]");
}

/* An explicit --timestep-spacing equal to a sampler's default gives the same bytes as no flag. */
static void test_default_spacing(void) {
    for (int k = 0; k < SD_SAMPLER_COUNT; k++) {
        const sd_sampler_info *si = sd_sampler_get_info((sd_sampler)k);
        char a[700], b[700], cmd[1600];
        snprintf(a, sizeof a, "%s/sp_a.png", tmpdir);
        snprintf(b, sizeof b, "%s/sp_b.png", tmpdir);
        const char *common[] = {
            "-m",    model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "3", "-s", "3", "--sampling-method",
            si->name};
#define SP(...)                                                                                                        \
    ARGS(common[0], common[1], common[2], common[3], common[4], common[5], common[6], common[7], common[8], common[9], \
         common[10], common[11], common[12], common[13], __VA_ARGS__)
        CHECK(run_sd(SP("-o", a), NULL) == 0, "%s: no flag", si->name);
        CHECK(run_sd(SP("--timestep-spacing", sd_spacing_name(si->default_spacing), "-o", b), NULL) == 0,
              "%s: explicit", si->name);
#undef SP
        snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
        CHECK(system(cmd) == 0, "%s: --timestep-spacing %s gives the same bytes as no flag", si->name,
              sd_spacing_name(si->default_spacing));
    }
}

/* LoRA inputs: each bad one refused before any compute (exit 2, one line); a prompt tag resolved against
 * --lora-model-dir gives the bytes --lora gives, and the parameters chunk names it. */
static void test_lora_inputs(void) {
    char kohya[1024], dir[1024], a[700], b[700], cmd[2000];
    snprintf(dir, sizeof dir, "%s/sd1-lora", SD_FIXTURES);
    snprintf(kohya, sizeof kohya, "%s/lora_kohya.safetensors", dir);
    const char *rank = write_st("rank.safetensors",
                                "{\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight\":{\"dtype\":\"F32\","
                                "\"shape\":[4,32],\"data_offsets\":[0,512]},"
                                "\"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight\":{\"dtype\":\"F32\","
                                "\"shape\":[32,2],\"data_offsets\":[512,768]}}",
                                768);
    char rank_path[700];
    snprintf(rank_path, sizeof rank_path, "%s", rank);
    const char *sdxl = write_st("sdxl.safetensors",
                                "{\"lora_unet_input_blocks_4_1_proj_in.lora_down.weight\":{\"dtype\":\"F32\",\"shape\":"
                                "[4,32],\"data_offsets\":[0,512]},"
                                "\"lora_unet_input_blocks_4_1_proj_in.lora_up.weight\":{\"dtype\":\"F32\",\"shape\":["
                                "32,4],\"data_offsets\":[512,1024]}}",
                                1024);
    char sdxl_path[700], bad_mult[1100];
    snprintf(sdxl_path, sizeof sdxl_path, "%s", sdxl);
    snprintf(bad_mult, sizeof bad_mult, "%s:abc", kohya);
    expect_error("lora missing", 2, "/nonexistent/style.safetensors: cannot open",
                 SMALL_RUN("--lora", "/nonexistent/style.safetensors"));
    expect_error("lora multiplier", 2, "--lora: '", SMALL_RUN("--lora", bad_mult));
    expect_error("lora multiplier text", 2, "'abc' is not a multiplier", SMALL_RUN("--lora", bad_mult));
    expect_error("lora ranks", 2, "lora_up has rank 2 but lora_down has rank 4", SMALL_RUN("--lora", rank_path));
    expect_error("lora other family", 2, "a LoRA for another model", SMALL_RUN("--lora", sdxl_path));
    expect_error("lora tag not in dir", 2, "prompt: <lora:missing>: no readable 'missing.safetensors' in",
                 ARGS("-m", model, "-p", "a dog <lora:missing:0.5>", "--lora-model-dir", dir, "-o", out));
    expect_error(
        "lora dir missing", 2, "--lora-model-dir: '/nonexistent/loras' is not a directory",
        ARGS("-m", model, "-p", "a dog <lora:lora_kohya>", "--lora-model-dir", "/nonexistent/loras", "-o", out));
    expect_error("lora tag multiplier", 2, "prompt: <lora:lora_kohya:x>: 'x' is not a multiplier",
                 ARGS("-m", model, "-p", "a dog <lora:lora_kohya:x>", "--lora-model-dir", dir, "-o", out));
    snprintf(a, sizeof a, "%s/lora_flag.png", tmpdir);
    snprintf(b, sizeof b, "%s/lora_tag.png", tmpdir);
    char flag[1100];
    snprintf(flag, sizeof flag, "%s:0.6", kohya);
    char *err = NULL;
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "1", "--lora", flag,
                      "-o", a),
                 &err) == 0 &&
              err && strstr(err, "216 of 216 modules applied"),
          "--lora run: %s", err ? err : "");
    free(err);
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog<lora:lora_kohya:0.6>", "-W", "64", "-H", "64", "--steps", "2", "-s",
                      "1", "--lora-model-dir", dir, "-o", b),
                 NULL) == 0,
          "<lora:...> run");
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    CHECK(system(cmd) != 0, "the PNGs differ (their parameters name the prompt)");
    sd_pixels pa, pb;
    char e1[SD_ERR_LEN];
    CHECK(sd_pixels_read(a, &pa, e1) == SD_OK && sd_pixels_read(b, &pb, e1) == SD_OK &&
              !memcmp(pa.data, pb.data, (size_t)pa.width * pa.height * pa.channels),
          "<lora:lora_kohya:0.6> in the prompt gives the pixels of --lora FILE:0.6");
    sd_pixels_free(&pa);
    sd_pixels_free(&pb);
    expect_parameters(a, ", LoRA: \"lora_kohya: 0.6\"", "parameters name the LoRA");
}

/* Other formats: bad standalone VAEs and incomplete diffusers folders are refused (exit 2, one line); --info
 * says which format it read; the PNG names the VAE. */
static void test_formats_cli(void) {
    char lora[1024], folder[700], vae[1024], cmd[2000];
    snprintf(lora, sizeof lora, "%s/sd1-lora/lora_kohya_b.safetensors", SD_FIXTURES);
    snprintf(vae, sizeof vae, "%s/sd1-formats/vae_alt.safetensors", SD_FIXTURES);
    expect_error("vae missing", 2, "/nonexistent/vae.safetensors: cannot open",
                 SMALL_RUN("--vae", "/nonexistent/vae.safetensors"));
    expect_error("vae not a VAE", 2, "lora_kohya_b.safetensors: not a VAE", SMALL_RUN("--vae", lora));
    char taesd[1024];
    snprintf(taesd, sizeof taesd, "%s/taesd/taesd.safetensors", SD_FIXTURES);
    expect_error("taesd not a TAESD", 2, "lora_kohya_b.safetensors: not a TAESD file", SMALL_RUN("--taesd", lora));
    expect_error("taesd missing", 2, "/nonexistent/taesd.safetensors: cannot open",
                 SMALL_RUN("--taesd", "/nonexistent/taesd.safetensors"));
    expect_error("taesd with vae", 2, "--taesd: replaces the VAE; --vae cannot be given with it",
                 SMALL_RUN("--taesd", taesd, "--vae", vae));
    snprintf(folder, sizeof folder, "%s/folder", tmpdir);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/unet %s/vae %s/text_encoder && echo '{}' > %s/unet/config.json && echo '{}' > "
             "%s/text_encoder/config.json",
             folder, folder, folder, folder, folder);
    CHECK(system(cmd) == 0, "mkdir");
    expect_error("folder without weights", 2, "diffusers folder without unet/diffusion_pytorch_model.safetensors",
                 ARGS("-m", folder, "-p", "x", "-o", out));
    char dir_only[700];
    snprintf(dir_only, sizeof dir_only, "%s/folder/vae", tmpdir);
    expect_error("plain directory", 2, "is a directory, not a model file", ARGS("-m", dir_only, "-p", "x", "-o", out));
    /* broken checkpoints (tests/fixtures/bad-ckpt/README.md) */
    static const char *const bad_ckpt[][2] = {
        {"missing_key.ckpt", "storage '0' is missing from the archive"},
        {"short_storage.ckpt", "storage '0' claims 4 elements but holds 8 bytes"},
        {"past_storage.ckpt", "a tensor reaches past its storage"},
        {"compressed.ckpt", "storage '0' is compressed"},
        {"truncated.ckpt", "no zip end-of-directory record"},
    };
    for (size_t i = 0; i < sizeof bad_ckpt / sizeof *bad_ckpt; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/bad-ckpt/%s", SD_FIXTURES, bad_ckpt[i][0]);
        expect_model_error(p, bad_ckpt[i][1]);
    }
    /* a diffusers folder without unet/, and one whose config is not JSON */
    char nounet[700], badjson[700];
    snprintf(nounet, sizeof nounet, "%s/nounet", tmpdir);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/vae %s/text_encoder && cp -r %s/sd1-formats/sd1-tiny-diffusers %s/badjson && "
             "chmod -R u+w %s/badjson && echo '{not json' > %s/badjson/unet/config.json",
             nounet, nounet, SD_FIXTURES, tmpdir, tmpdir, tmpdir);
    CHECK(system(cmd) == 0, "make folders");
    snprintf(badjson, sizeof badjson, "%s/badjson", tmpdir);
    expect_error("folder without unet/", 2, "nor a diffusers folder with unet/",
                 ARGS("-m", nounet, "-p", "x", "-o", out));
    expect_error("config not JSON", 2, "unet/config.json: not valid JSON", ARGS("-m", badjson, "-p", "x", "-o", out));
    /* a VAE whose shapes do not fit: decoder.conv_in as [32, 8, 3, 3] (same size as [64, 4, 3, 3]) */
    const char *wide =
        edited_model("sd1-formats/vae_alt.safetensors", "vae_wide.safetensors",
                     "\"shape\":[64,4,3,3],\"data_offsets\":[256,", "\"shape\":[32,8,3,3],\"data_offsets\":[256,");
    char wide_path[700];
    snprintf(wide_path, sizeof wide_path, "%s", wide);
    expect_error("VAE of another shape", 2, "takes 4 channels; expected 8 (the VAE's latent)",
                 ARGS("-m", model, "-p", "x", "--vae", wide_path, "-o", out));
    /* malicious.ckpt: refused naming the global, and its command never ran (its output would be on stdout) */
    char mal[1024], mal_out[700];
    snprintf(mal, sizeof mal, "%s/sd1-formats/malicious.ckpt", SD_FIXTURES);
    snprintf(mal_out, sizeof mal_out, "%s/malicious.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "%s -m %s -p x -o %s > %s 2>&1", SD_BIN, mal, out, mal_out);
    int status = system(cmd);
    char *said = read_text_file(mal_out);
    CHECK(WEXITSTATUS(status) == 2 && said && strstr(said, "pickle global 'posix.system' is not allowed") &&
              !strstr(said, "this-line-must-never-run") && one_line(said),
          "malicious.ckpt: status %d, output '%s'", WEXITSTATUS(status), said ? said : "");
    free(said);
    char info_path[700];
    snprintf(info_path, sizeof info_path, "%s/info_fmt.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "%s --info -m %s/sd1-formats/sd1-tiny-diffusers > %s", SD_BIN, SD_FIXTURES, info_path);
    CHECK(system(cmd) == 0, "--info on a diffusers folder");
    char *info = read_text_file(info_path);
    CHECK(info && strstr(info, "format:        diffusers folder") && strstr(info, "sd.text.heads = 4"), "--info: %s",
          info ? info : "");
    free(info);
    unlink(out);
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "--vae", vae, "-o", out),
                 NULL) == 0,
          "--vae run");
    expect_parameters(out, ", VAE: vae_alt.safetensors", "parameters name the VAE");
}

/* SDXL: --info describes both encoders and the added conditioning; the size-conditioning options reach the PNG;
 * bad input (mixed families, a refiner, an SD 1.x LoRA, a VAE of other shapes, bad sizes) is refused naming it. */
static void test_sdxl(void) {
    char xl[1024], cmd[1600], lora[1024], vae[800], o2[700];
    snprintf(xl, sizeof xl, "%s/sdxl-tiny/model_f16.safetensors", SD_FIXTURES);
    snprintf(cmd, sizeof cmd, "%s --info -m %s > %s/infoxl.txt", SD_BIN, xl, tmpdir);
    CHECK(system(cmd) == 0, "--info on SDXL");
    snprintf(cmd, sizeof cmd, "%s/infoxl.txt", tmpdir);
    char *info = read_text_file(cmd);
    CHECK(info && strstr(info, "family:        SDXL") && strstr(info, "text encoder 1: CLIP ViT-L/14") &&
              strstr(info, "text encoder 2: OpenCLIP ViT-bigG/14") &&
              strstr(info, "pooled output through text_projection") &&
              strstr(info, "added vector 224 (pooled 128 + 6 size ids x 16)") &&
              strstr(info, "default size:  1024x1024") && strstr(info, "scale 0.13025"),
          "--info on SDXL: %s", info ? info : "");
    free(info);
    snprintf(o2, sizeof o2, "%s/xl.png", tmpdir);
    char *err = NULL;
    int rc = run_sd(ARGS("-m", xl, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "1", "--original-size",
                         "2048x1536", "--crop-coords", "0x32", "--timestep-spacing", "leading", "-o", o2),
                    &err);
    CHECK(rc == 0, "SDXL with size conditioning: %d %s", rc, err ? err : "");
    free(err);
    expect_parameters(o2, "Original size: 2048x1536, Crop coords: 0x32, RNG", "SDXL size conditioning recorded");
    char *text = output_read_png_text(o2, "parameters");
    CHECK(text && !strstr(text, "Timestep spacing") && !strstr(text, "Target size"),
          "leading is SDXL's default spacing, the target size the default: neither recorded: %s", text ? text : "");
    free(text);
    expect_error("bad --original-size", 2, "--original-size: '2048x' is not WxH",
                 ARGS("-m", xl, "-p", "x", "--original-size", "2048x", "-o", out));
    expect_error("bad --crop-coords", 2, "--crop-coords: '-1x0' is not TOPxLEFT",
                 ARGS("-m", xl, "-p", "x", "--crop-coords", "-1x0", "-o", out));
    snprintf(lora, sizeof lora, "%s/sd1-lora/lora_kohya.safetensors", SD_FIXTURES);
    expect_error("SD 1.x LoRA on SDXL", 2, "does not fit tensor 'model.diffusion_model.",
                 ARGS("-m", xl, "-p", "x", "--lora", lora, "-o", out));
    snprintf(vae, sizeof vae, "%s",
             edited_model("sd1-formats/vae_alt.safetensors", "vae_xl_wide.safetensors",
                          "\"shape\":[64,4,3,3],\"data_offsets\":[256,",
                          "\"shape\":[32,8,3,3],\"data_offsets\":[256,"));
    expect_error("VAE of other shapes", 2, "takes 4 channels; expected 8 (the VAE's latent)",
                 ARGS("-m", xl, "-p", "x", "--vae", vae, "-o", out));
    char folder[800]; /* an SDXL diffusers folder: refused with what to do instead */
    snprintf(folder, sizeof folder, "%s/xl_folder", tmpdir);
    snprintf(
        cmd, sizeof cmd,
        "mkdir -p %s/unet %s/text_encoder && echo '{\"addition_embed_type\": \"text_time\"}' > %s/unet/config.json && "
        "echo '{}' > %s/text_encoder/config.json",
        folder, folder, folder, folder);
    CHECK(system(cmd) == 0, "SDXL folder");
    expect_model_error(folder, "an SDXL diffusers folder: not supported yet (use its single-file checkpoint)");
    expect_model_error(
        write_st("xl_mixed.safetensors",
                 "{\"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight\":{\"dtype\":"
                 "\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"conditioner.embedders.0.transformer."
                 "text_model.embeddings.token_embedding.weight\":{\"dtype\":\"F32\",\"shape\":[1],"
                 "\"data_offsets\":[4,8]}}",
                 8),
        "mixes model families");
    expect_model_error(
        write_st("xl_refiner.safetensors",
                 "{\"conditioner.embedders.0.model.token_embedding.weight\":{\"dtype\":\"F32\",\"shape\":[1],"
                 "\"data_offsets\":[0,4]}}",
                 4),
        "an SDXL refiner (sd_xl_refiner_1.0");
    expect_model_error(edited_model("sdxl-tiny/model_f16.safetensors", "xl_no_te2.safetensors",
                                    "conditioner.embedders.1.model.token_embedding.weight",
                                    "conditioner.embedders.1.model.token_embedding.weighX"),
                       "missing tensor 'conditioner.embedders.1.model.token_embedding.weight' (text encoder 2)");
    expect_model_error(edited_model("sdxl-tiny/model_f16.safetensors", "xl_no_label.safetensors",
                                    "model.diffusion_model.label_emb.0.0.weight",
                                    "model.diffusion_model.label_emb.0.0.weighX"),
                       "missing tensor 'model.diffusion_model.label_emb.0.0.weight'");
}

/* --embd-dir: a usable embedding is listed by -v and recorded as TI hashes; a hostile .pt beside it is skipped with a
 * note naming the refused global, refused by name when a prompt uses it, and nothing of it ever runs. */
static void test_embeddings(void) {
    char dir[700], src[1024], cmd[3000], err_path[800], png[800], hex[65];
    snprintf(dir, sizeof dir, "%s/embd", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/embd.err", tmpdir);
    snprintf(png, sizeof png, "%s/embd.png", tmpdir);
    snprintf(src, sizeof src, "%s/sd1-embeddings/emb_one.safetensors", SD_FIXTURES);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s %s/ && cp %s/sd1-formats/malicious.ckpt %s/evil.pt", dir, src, dir,
             SD_FIXTURES, dir);
    CHECK(system(cmd) == 0, "embedding folder");
    CHECK(sha256_file_hex(src, hex) == 0, "sha256 of emb_one");
    snprintf(cmd, sizeof cmd,
             "%s -m %s -p 'a (emb_one:1.2) cat' -n emb_one -W 64 -H 64 --steps 1 --embd-dir %s -v -o %s > %s 2>&1",
             SD_BIN, model, dir, png, err_path);
    int status = system(cmd);
    char *said = read_text_file(err_path), want[200];
    snprintf(want, sizeof want, "TI hashes: \"emb_one: %.12s\"", hex);
    CHECK(WEXITSTATUS(status) == 0 && said && strstr(said, "embedding evil (") &&
              strstr(said, "skipped: pickle global 'posix.system' is not allowed") &&
              strstr(said, "sd: prompt: embedding emb_one (1 vector, hash") &&
              !strstr(said, "this-line-must-never-run"),
          "--embd-dir with a hostile file: status %d, '%s'", WEXITSTATUS(status), said ? said : "");
    free(said);
    expect_parameters(png, want, "TI hashes (the prompt's and the negative prompt's embedding, once)");
    snprintf(cmd, sizeof cmd, "%s -m %s -p 'a evil cat' --embd-dir %s -o %s > %s 2>&1", SD_BIN, model, dir, png,
             err_path);
    unlink(png);
    status = system(cmd);
    said = read_text_file(err_path);
    const char *line = said ? strstr(said, "sd: error:") : NULL;
    CHECK(WEXITSTATUS(status) == 2 && line && strstr(line, "embedding 'evil'") &&
              strstr(line, "pickle global 'posix.system' is not allowed") && one_line(line) && !exists(png) &&
              !strstr(said, "this-line-must-never-run"),
          "a prompt naming the hostile file: status %d, '%s'", WEXITSTATUS(status), said ? said : "");
    free(said);
    expect_error("--embd-dir missing", 2, "--embd-dir: /nonexistent/embeddings: No such file or directory",
                 SMALL_RUN("--embd-dir", "/nonexistent/embeddings"));
}

/* --control-net: the PNG records it as AUTOMATIC1111's extension does; ControlNets of another family, truncated or
 * hostile files, missing or unreadable control images, out-of-range settings are refused in one line, exit 2. */
static void test_controlnet(void) {
    char cn[1024], f16[1024], hint[1024], sd2[1024], mal[1024], trunc[800], png[800], cmd[3000];
    snprintf(cn, sizeof cn, "%s/sd1-controlnet/control_tiny.pth", SD_FIXTURES);
    snprintf(f16, sizeof f16, "%s/sd1-controlnet/control_tiny_f16.safetensors", SD_FIXTURES);
    snprintf(hint, sizeof hint, "%s/sd1-controlnet/control/edges_128x128.png", SD_FIXTURES);
    snprintf(sd2, sizeof sd2, "%s/sd2-tiny/model_f32.safetensors", SD_FIXTURES);
    snprintf(mal, sizeof mal, "%s/sd1-formats/malicious.ckpt", SD_FIXTURES);
    snprintf(png, sizeof png, "%s/cn.png", tmpdir);
    CHECK(run_sd(SMALL_RUN("--control-net", cn, "--control-image", hint, "--control-strength", "0.5", "--control-start",
                           "0.25", "-o", png),
                 NULL) == 0,
          "a ControlNet run");
    expect_parameters(png,
                      "ControlNet 0: \"Module: none, Model: control_tiny, Weight: 0.5, Resize Mode: Just Resize, "
                      "Low Vram: False, Guidance Start: 0.25, Guidance End: 1,",
                      "ControlNet parameters");
    expect_error("ControlNet of another family", 2,
                 "a ControlNet for another model: the transformers' projections (linear or 1x1 convolutions) differ",
                 ARGS("-m", sd2, "-p", "x", "--control-net", cn, "--control-image", hint, "-o", out));
    expect_error("a checkpoint as ControlNet", 2, "not a ControlNet (no tensor 'input_hint_block.0.weight'",
                 SMALL_RUN("--control-net", model, "--control-image", hint));
    expect_error("hostile ControlNet", 2, "pickle global 'posix.system' is not allowed",
                 SMALL_RUN("--control-net", mal, "--control-image", hint));
    snprintf(trunc, sizeof trunc, "%s/cn_trunc.pth", tmpdir);
    snprintf(cmd, sizeof cmd, "head -c 100000 %s > %s", cn, trunc);
    CHECK(system(cmd) == 0, "truncated copy");
    expect_error("truncated ControlNet", 2, trunc, SMALL_RUN("--control-net", trunc, "--control-image", hint));
    expect_error("no control image", 2, "control image: the ControlNet needs one (--control-image FILE)",
                 SMALL_RUN("--control-net", f16));
    expect_error("control image without a ControlNet", 2, "control image: no ControlNet is loaded (--control-net FILE)",
                 SMALL_RUN("--control-image", hint));
    expect_error("missing control image", 2, "--control-image: /nonexistent/edges.png: cannot open",
                 SMALL_RUN("--control-net", f16, "--control-image", "/nonexistent/edges.png"));
    expect_error("unreadable control image", 2,
                 "--control-image: ", SMALL_RUN("--control-net", f16, "--control-image", cn));
    expect_error("strength", 2, "--control-strength: 11 is outside 0..10",
                 SMALL_RUN("--control-net", f16, "--control-image", hint, "--control-strength", "11"));
    expect_error("start", 2, "--control-start: 1.5 is outside 0..1",
                 SMALL_RUN("--control-net", f16, "--control-image", hint, "--control-start", "1.5"));
    expect_error(
        "window", 2, "control-start: 0.6 must be below control-end 0.4",
        SMALL_RUN("--control-net", f16, "--control-image", hint, "--control-start", "0.6", "--control-end", "0.4"));
}

/* CLI round 3: outputs checked up front, messages naming the option and value as typed, warnings for options that do
 * nothing, seeds at the end of their range, the short usage. */
static void test_round3(void) {
    char taesd[1024], ckpt[1024];
    snprintf(taesd, sizeof taesd, "%s/taesd/taesd.safetensors", SD_FIXTURES);
    snprintf(ckpt, sizeof ckpt, "%s/sd1-formats/model_f16.ckpt", SD_FIXTURES);
    expect_error("-o in /proc", 2, "/proc/foo.png: cannot create a file in '/proc'",
                 ARGS("-m", model, "-p", "x", "-o", "/proc/foo.png"));
    expect_error("1e308", 2, "--cfg-scale: '1e308' is out of range", SMALL_RUN("--cfg-scale", "1e308"));
    expect_error("leading space", 2, "--steps: ' 5' is not an integer", ARGS("-m", model, "-p", "x", "--steps", " 5"));
    expect_error("leading space, number", 2, "--cfg-scale: ' 7' is not a number", SMALL_RUN("--cfg-scale", " 7"));
    expect_error("flag=value", 2, "option '--vae-tiling' takes no value (given '--vae-tiling=1')",
                 SMALL_RUN("--vae-tiling=1"));
    expect_error(".ckpt heads", 2,
                 "text hidden size 32 is not divisible by 12 heads (set the count: sd-convert IN OUT --metadata "
                 "sd.text.heads=N)",
                 ARGS("-m", ckpt, "-p", "x", "-o", out));
    expect_error("seed past the end", 2,
                 "-b 2 from seed 18446744073709551615: the seeds would pass 18446744073709551615, the largest",
                 SMALL_RUN("-s", "18446744073709551615", "-b", "2"));
    expect_error("seed too large", 2, "--seed: '18446744073709551616' is not an integer in 0..18446744073709551615",
                 SMALL_RUN("-s", "18446744073709551616"));
    expect_error("sweep seed too large", 2, "--sweep seed=18446744073709551616: '18446744073709551616' is not a seed",
                 SMALL_RUN("--sweep", "seed=18446744073709551616"));
    /* the last two seeds, exactly, through a sweep */
    char o[700];
    snprintf(o, sizeof o, "%s/s_{index}.png", tmpdir);
    char *err = NULL;
    CHECK(run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "1", "--sweep",
                      "seed=18446744073709551614-18446744073709551615", "-o", o),
                 &err) == 0,
          "sweep of the last seeds: %s", err ? err : "");
    free(err);
    snprintf(o, sizeof o, "%s/s_2.png", tmpdir);
    expect_parameters(o, "Seed: 18446744073709551615,", "the largest seed, exactly");
    /* warnings: the run goes on */
    char latent[700];
    snprintf(latent, sizeof latent, "%s/latent.png", tmpdir);
    err = NULL;
    CHECK(run_sd(SMALL_RUN("--strength", "0.5", "--vae-tiling", "--taesd", taesd, "--latent-out", latent), &err) == 0 &&
              err && strstr(err, "sd: warning: --strength does nothing without an init image (-i FILE)") &&
              strstr(err, "sd: warning: --vae-tiling does nothing with --taesd") &&
              strstr(err, "sd: warning: --latent-out ") && strstr(err, "writes a safetensors file, not a PNG"),
          "warnings: %s", err ? err : "");
    free(err);
    err = NULL;
    CHECK(run_sd(SMALL_RUN("--sweep", "seed=1,2", "--shard", "3/4"), &err) == 0 && err &&
              strstr(err, "sd: note: --shard 3/4: no job falls to this shard (the list has 2)"),
          "empty shard: %s", err ? err : "");
    free(err);
    /* no arguments: the short usage, exit 2 */
    const char *none[] = {NULL};
    err = NULL;
    CHECK(run_sd(none, &err) == 2 && err && !strncmp(err, "usage: sd -m MODEL.safetensors -p PROMPT", 40) &&
              strstr(err, "sd --help"),
          "no arguments: %s", err ? err : "");
    free(err);
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 2;
    snprintf(model, sizeof model, "%s/model_f32.safetensors", SD_FIXTURES);
    snprintf(out, sizeof out, "%s/out.png", tmpdir);
    test_arguments();
    test_bad_models();
    test_help_and_info();
    test_sdxl();
    test_embeddings();
    test_controlnet();
    test_batch();
    test_determinism();
    test_signal();
    test_signal_large();
    test_memory_limit();
    test_vae_tiling();
    test_low_memory();
    test_precision();
    test_image_inputs();
    test_sd2();
    test_default_spacing();
    test_lora_inputs();
    test_formats_cli();
    test_round3();
    remove_test_dir(tmpdir);
    return test_finish();
}
