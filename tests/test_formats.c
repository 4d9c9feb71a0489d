/* test_formats.c - model file formats (sd1-formats fixtures): every tensor of model_f16.ckpt equals the one of
 * model_f16.safetensors bit for bit; the diffusers folder gives the same names, shapes and bits; the naming
 * table maps every UNet module to diffusers and back; the malicious .ckpt is refused naming its global, with
 * nothing run; broken archives and unsupported opcodes are refused; sd-convert round-trips. */
#define _GNU_SOURCE
#include "io/ckpt.h"
#include "io/formats.h"
#include "model/model.h"
#include "io/naming.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/sd-test-formats-XXXXXX";

static void fixture(char *out, size_t len, const char *name) { snprintf(out, len, "%s/%s", SD_FIXTURES, name); }

/* Trailing dimensions of 1 dropped (diffusers stores the VAE's attention 1x1 convolutions as matrices). */
static int same_shape(const st_tensor *a, const st_tensor *b) {
    int na = a->ndim, nb = b->ndim;
    while (na > 1 && a->shape[na - 1] == 1) na--;
    while (nb > 1 && b->shape[nb - 1] == 1) nb--;
    return na == nb && !memcmp(a->shape, b->shape, (size_t)na * sizeof *a->shape);
}

/* Every network tensor of `want` (or every tensor, when all) equals the same-named tensor of `got`: dtype,
 * shape, bytes. */
static void expect_same_tensors(const char *label, const st_file *got, const st_file *want, int all) {
    int same = 0, n = 0;
    for (int i = 0; i < want->n_tensors; i++) {
        const st_tensor *w = &want->tensors[i], *g = st_find(got, w->name);
        int network = !strncmp(w->name, UNET_PREFIX, strlen(UNET_PREFIX)) ||
                      !strncmp(w->name, VAE_PREFIX, strlen(VAE_PREFIX)) ||
                      (!strncmp(w->name, "cond_stage_model.", 17) && !strstr(w->name, "position_ids"));
        if (!all && !network) continue;
        n++;
        int ok = g && g->dtype == w->dtype && same_shape(g, w) && g->nbytes == w->nbytes &&
                 !memcmp(g->data, w->data, w->nbytes);
        if (!ok) CHECK(0, "%s: tensor '%s' differs or is missing", label, w->name);
        same += ok;
    }
    printf("%-14s %d of %d tensors bit-identical (%d in the file)\n", label, same, n, got->n_tensors);
    CHECK(same == n && n > 900, "%s: %d of %d tensors identical", label, same, n);
}

static void test_ckpt_tensors(void) {
    char a[1024], b[1024], err[512];
    fixture(a, sizeof a, "sd1-formats/model_f16.ckpt");
    fixture(b, sizeof b, "model_f16.safetensors");
    st_file ck, st;
    CHECK(ckpt_open(&ck, a, err, sizeof err) == 0, "open the .ckpt: %s", err);
    CHECK(st_open(&st, b, err, sizeof err) == 0, "open the safetensors: %s", err);
    CHECK(ck.n_tensors == st.n_tensors, ".ckpt holds %d tensors, the safetensors %d", ck.n_tensors, st.n_tensors);
    expect_same_tensors(".ckpt", &ck, &st, 1);
    st_close(&ck);
    st_close(&st);
}

/* The diffusers folder, renamed, holds the single file's weights (position_ids aside, which it drops). */
static void test_diffusers_folder(void) {
    char a[1024], b[1024], err[512];
    fixture(a, sizeof a, "sd1-formats/sd1-tiny-diffusers");
    fixture(b, sizeof b, "model_f16.safetensors");
    st_file df, st;
    model_format fmt;
    CHECK(formats_open(&df, a, &fmt, err, sizeof err) == 0 && fmt == FORMAT_DIFFUSERS, "open the folder: %s", err);
    CHECK(st_open(&st, b, err, sizeof err) == 0, "open the safetensors: %s", err);
    expect_same_tensors("diffusers", &df, &st, 0);
    const char *heads = st_meta_get(&df, "sd.text.heads"), *uheads = st_meta_get(&df, "sd.unet.heads"),
               *pred = st_meta_get(&df, "sd.prediction");
    CHECK(heads && !strcmp(heads, "4") && uheads && !strcmp(uheads, "8") && pred && !strcmp(pred, "epsilon"),
          "folder metadata from the configs");
    st_close(&df);
    st_close(&st);
}

/* naming.c in both directions: every UNet module of the single file goes to diffusers and back. */
static int up_attention(int i, void *user) {
    char name[128];
    snprintf(name, sizeof name, UNET_PREFIX "output_blocks.%d.1.norm.weight", 3 * i);
    return st_find(user, name) != NULL;
}

static void test_naming_round_trip(void) {
    char path[1024], err[512];
    fixture(path, sizeof path, "model_f32.safetensors");
    st_file st;
    CHECK(st_open(&st, path, err, sizeof err) == 0, "open: %s", err);
    int n = 0, ok = 0;
    size_t pl = strlen(UNET_PREFIX);
    for (int i = 0; i < st.n_tensors; i++) {
        const char *name = st.tensors[i].name;
        if (strncmp(name, UNET_PREFIX, pl)) continue;
        char module[300], diff[300], back[300];
        const char *dot = strrchr(name, '.');
        snprintf(module, sizeof module, "%.*s", (int)(dot - name - pl), name + pl);
        n++;
        if (naming_unet_to_diffusers(module, 2, diff, sizeof diff) == 0 &&
            naming_unet_from_diffusers(diff, 2, up_attention, &st, back, sizeof back) == 0 && !strcmp(back, module))
            ok++;
        else
            CHECK(0, "%s -> %s -> %s", module, diff, back);
    }
    CHECK(n > 600 && ok == n, "naming round trip: %d of %d UNet tensors", ok, n);
    st_close(&st);
}

static void expect_ckpt_error(const char *label, const char *path, const char *want) {
    st_file f;
    char err[512] = "";
    int rc = ckpt_open(&f, path, err, sizeof err);
    CHECK(rc != 0 && strstr(err, want), "%s: want '%s', got %d '%s'", label, want, rc, err);
    if (rc == 0) st_close(&f);
}

static const char *edited(const char *src, const char *name, const void *from, size_t flen, const void *to,
                          size_t tlen) {
    return write_edited_fixture(tmpdir, src, name, from, flen, to, tlen);
}

static void test_refused(void) {
    char path[1024];
    fixture(path, sizeof path, "sd1-formats/malicious.ckpt");
    expect_ckpt_error("malicious", path, "pickle global 'posix.system' is not allowed");
    /* the same kind of attack through the other global opcode and through builtins */
    const char *evil = edited("sd1-formats/vae_alt.ckpt", "evil.ckpt", "collections\nOrderedDict\n", 24,
                              "builtins\nexec\n\n\n\n\n\n\n\n\n\n", 24);
    expect_ckpt_error("builtins.exec", evil, "pickle global 'builtins.exec");
    const char *trunc = write_test_file(tmpdir, "trunc.ckpt", "PK\x03\x04 not really a zip", 22);
    expect_ckpt_error("not a zip", trunc, "no zip end-of-directory record");
    const char *opcode = edited("sd1-formats/vae_alt.ckpt", "opcode.ckpt", "\x80\x02", 2, "\x80\x02\x69", 3); /* INST */
    expect_ckpt_error("opcode", opcode, "pickle opcode 0x69");
    /* the binary: one line, exit 2, and the payload never ran */
    char *err = NULL;
    int rc = run_sd((const char *const[]){"--info", "-m", path, NULL}, &err);
    CHECK(rc == 2 && err && strstr(err, "posix.system") && !strstr(err, "this-line-must-never-run"),
          "sd --info malicious.ckpt: %d %s", rc, err ? err : "");
    free(err);
}

/* sd-convert: refuses an existing output, converts f16 → f32 exactly (and back to the same bits). */
static void test_convert(void) {
    char in[1024], out32[700], out16[700], cmd[3000];
    fixture(in, sizeof in, "model_f16.safetensors");
    snprintf(out32, sizeof out32, "%s/m32.safetensors", tmpdir);
    snprintf(out16, sizeof out16, "%s/m16.safetensors", tmpdir);
    snprintf(cmd, sizeof cmd, "%s %s %s --type f32 2>/dev/null && %s %s %s --type f16 2>/dev/null", SD_CONVERT_BIN, in,
             out32, SD_CONVERT_BIN, out32, out16);
    CHECK(system(cmd) == 0, "sd-convert f16 -> f32 -> f16");
    st_file a, b;
    char err[512];
    CHECK(st_open(&a, in, err, sizeof err) == 0 && st_open(&b, out16, err, sizeof err) == 0, "open: %s", err);
    expect_same_tensors("f16->f32->f16", &b, &a, 1);
    const char *h = st_meta_get(&b, "sd.unet.heads");
    CHECK(h && !strcmp(h, "8"), "metadata carried over");
    st_close(&a);
    st_close(&b);
    snprintf(cmd, sizeof cmd, "%s %s %s 2>%s/conv.err", SD_CONVERT_BIN, in, out16, tmpdir);
    CHECK(WEXITSTATUS(system(cmd)) == 2, "sd-convert refuses an existing output");
    snprintf(cmd, sizeof cmd, "%s/conv.err", tmpdir);
    char *text = read_text_file(cmd);
    CHECK(text && strstr(text, "exists (use --force"), "message: %s", text ? text : "");
    free(text);
    /* the output is checked before the input is read: an unusable directory is named even for a missing input */
    snprintf(cmd, sizeof cmd, "%s /nonexistent.ckpt /proc/x.safetensors 2>%s/conv.err", SD_CONVERT_BIN, tmpdir);
    CHECK(WEXITSTATUS(system(cmd)) == 2, "sd-convert refuses an output in /proc");
    snprintf(cmd, sizeof cmd, "%s/conv.err", tmpdir);
    text = read_text_file(cmd);
    CHECK(text && strstr(text, "sd-convert: error: /proc/x.safetensors: cannot create a file in its directory"),
          "output checked first: %s", text ? text : "");
    free(text);
    snprintf(cmd, sizeof cmd, "%s --version > %s/conv.out", SD_CONVERT_BIN, tmpdir);
    CHECK(system(cmd) == 0, "sd-convert --version");
    snprintf(cmd, sizeof cmd, "%s/conv.out", tmpdir);
    text = read_text_file(cmd);
    CHECK(text && !strncmp(text, "sd-convert ", 11) && strstr(text, sd_version()), "--version: %s", text ? text : "");
    free(text);
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 2;
    test_ckpt_tensors();
    test_diffusers_folder();
    test_naming_round_trip();
    test_refused();
    test_convert();
    remove_test_dir(tmpdir);
    return test_finish();
}
