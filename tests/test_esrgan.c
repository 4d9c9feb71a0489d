/* test_esrgan.c - the RRDBNet upscalers of esrgan/: every case's raw output within 1e-4 of the reference (HWC float32),
 * the 8-bit image within 1/255 everywhere, the three namings and F16 giving the same numbers, and tiles changing the
 * 8-bit image by at most 1/255. */
#include "io/image.h"
#include "nets/esrgan.h"
#include "test_util.h"

#include <cJSON.h>
#include <unistd.h>

static st_file ex;

/* out[3, H, W] = the PNG at tests/fixtures/esrgan/<rel> as RGB in [0, 1]. */
static float *read_input(const char *rel, int *W, int *H) {
    char path[1024], err[SD_ERR_LEN];
    snprintf(path, sizeof path, "%s/esrgan/%s", SD_FIXTURES, rel);
    sd_pixels px;
    if (sd_pixels_read(path, &px, err) != SD_OK) {
        CHECK(0, "%s", err);
        return NULL;
    }
    *W = px.width;
    *H = px.height;
    float *x = malloc((size_t)3 * px.width * px.height * sizeof(float));
    CHECK(x && image_to_unit_rgb(&px, px.width, px.height, x) == 0, "%s: to RGB", rel);
    sd_pixels_free(&px);
    return x;
}

/* The largest 8-bit difference between two float images [3, H, W] after round(clip(v, 0, 1)·255). */
static int worst_u8(const float *a, const float *b, size_t n) {
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        float va = a[i] < 0 ? 0 : a[i] > 1 ? 1 : a[i], vb = b[i] < 0 ? 0 : b[i] > 1 ? 1 : b[i];
        int d = abs((int)nearbyintf(va * 255.0f) - (int)nearbyintf(vb * 255.0f));
        if (d > worst) worst = d;
    }
    return worst;
}

static void run_case(compute *cc, const cJSON *c) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring,
               *model = cJSON_GetObjectItem(c, "model")->valuestring;
    const int scale = cJSON_GetObjectItem(c, "scale")->valueint;
    char path[1024], err[SD_ERR_LEN];
    snprintf(path, sizeof path, "%s/esrgan/%s", SD_FIXTURES, model);
    esrgan e;
    if (esrgan_load(&e, path, err, sizeof err) != SD_OK) {
        CHECK(0, "%s: load %s: %s", name, model, err);
        return;
    }
    compute_reserve_scratch(cc, (size_t)e.store.max_half_matrix + 1);
    int W = 0, H = 0;
    float *x = read_input(cJSON_GetObjectItem(c, "input")->valuestring, &W, &H);
    const size_t n = (size_t)3 * scale * W * scale * H;
    float *y = malloc(n * sizeof(float)), *tiled = malloc(n * sizeof(float)), *hwc = malloc(n * sizeof(float));
    CHECK(e.scale == scale && e.nf == 16 && e.nb == 2 && e.gc == 8, "%s: %s naming, nf %d nb %d gc %d scale %d", name,
          e.naming, e.nf, e.nb, e.gc, e.scale);
    CHECK(x && esrgan_upscale(cc, &e, x, H, W, 0, 0, y) == SD_OK, "%s: upscale", name);
    size_t cnt;
    const float *want = fixture_f32(&ex, cJSON_GetObjectItem(c, "expected_key")->valuestring, &cnt);
    const size_t P = (size_t)scale * W * scale * H;
    for (size_t p = 0; p < P; p++)
        for (int ch = 0; ch < 3; ch++) hwc[p * 3 + ch] = y[ch * P + p];
    double d = cnt == n ? max_abs_diff(hwc, want, n) : INFINITY;
    int u8 = cnt == n ? worst_u8(hwc, want, n) : 255;
    printf("%-20s %s: max abs error %.3g, 8-bit worst %d\n", name, e.naming, d, u8);
    CHECK(d <= 1e-4 && u8 <= 1, "%s: max abs error %.3g (limit 1e-4), 8-bit worst %d (limit 1)", name, d, u8);
    /* tiles of 16 input pixels with 8 of context: at most 1/255 away from the whole image at once */
    CHECK(esrgan_upscale(cc, &e, x, H, W, 16, 8, tiled) == SD_OK, "%s: tiled", name);
    int tw = worst_u8(tiled, y, n);
    CHECK(tw <= 1, "%s: tiles change the 8-bit image by %d/255", name, tw);
    free(x);
    free(y);
    free(tiled);
    free(hwc);
    esrgan_free(&e);
}

/* basicsr name -> the 2019 ESRGAN "new arch" name (RRDB_trunk., trunk_conv, upconv1/2, HRconv). */
static void name_2019(const char *n, char *out, size_t len) {
    static const char *const pairs[][2] = {
        {"conv_body", "trunk_conv"}, {"conv_up1", "upconv1"}, {"conv_up2", "upconv2"}, {"conv_hr", "HRconv"}};
    int b, r, m;
    char rest[64];
    if (sscanf(n, "body.%d.rdb%d.conv%d.%63s", &b, &r, &m, rest) == 4) {
        snprintf(out, len, "RRDB_trunk.%d.RDB%d.conv%d.%s", b, r, m, rest);
        return;
    }
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        if (!strncmp(n, pairs[i][0], strlen(pairs[i][0]))) {
            snprintf(out, len, "%s%s", pairs[i][1], n + strlen(pairs[i][0]));
            return;
        }
    snprintf(out, len, "%s", n);
}

/* The F16 safetensors rewritten with the 2019 names gives the same output as the basicsr names. */
static void test_naming_2019(compute *cc) {
    char src[1024], dst[] = "/tmp/sd-test-esrgan2019-XXXXXX", err[SD_ERR_LEN];
    snprintf(src, sizeof src, "%s/esrgan/realesrgan_tiny_x4.safetensors", SD_FIXTURES);
    st_file f;
    int fd = mkstemp(dst);
    if (fd < 0 || st_open(&f, src, err, sizeof err) != 0) {
        CHECK(0, "2019 naming: %s", err);
        return;
    }
    cJSON *h = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        char name[128];
        name_2019(f.tensors[i].name, name, sizeof name);
        cJSON *t = cJSON_AddObjectToObject(h, name), *shape = cJSON_AddArrayToObject(t, "shape");
        cJSON_AddStringToObject(t, "dtype", st_dtype_name(f.tensors[i].dtype));
        for (int d = 0; d < f.tensors[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)f.tensors[i].shape[d]));
        cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        off += f.tensors[i].nbytes;
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
    }
    char *text = cJSON_PrintUnformatted(h);
    const uint64_t len = strlen(text), hl = (len + 7) / 8 * 8; /* padded with spaces: the data stays aligned */
    FILE *out = fdopen(fd, "wb");
    fwrite(&hl, 8, 1, out); /* little-endian hosts */
    fwrite(text, 1, len, out);
    for (uint64_t i = len; i < hl; i++) fputc(' ', out);
    for (int i = 0; i < f.n_tensors; i++) fwrite(f.tensors[i].data, 1, f.tensors[i].nbytes, out);
    fclose(out);
    free(text);
    cJSON_Delete(h);
    st_close(&f);
    esrgan a, b;
    int W = 0, H = 0;
    float *x = read_input("inputs/rgb_37x29.png", &W, &H);
    const size_t n = (size_t)3 * 16 * W * H;
    float *ya = malloc(n * sizeof(float)), *yb = malloc(n * sizeof(float));
    int ok = x && ya && yb && esrgan_load(&a, src, err, sizeof err) == SD_OK;
    ok = ok && esrgan_load(&b, dst, err, sizeof err) == SD_OK;
    CHECK(ok && !strcmp(b.naming, "ESRGAN 2019") && b.nb == 2 && b.nf == 16, "2019 names load: %s",
          ok ? b.naming : err);
    if (ok) {
        compute_reserve_scratch(cc, (size_t)a.store.max_half_matrix + 1);
        CHECK(esrgan_upscale(cc, &a, x, H, W, 0, 0, ya) == SD_OK &&
                  esrgan_upscale(cc, &b, x, H, W, 0, 0, yb) == SD_OK && !memcmp(ya, yb, n * sizeof(float)),
              "2019 names: not the basicsr output");
        esrgan_free(&a);
        esrgan_free(&b);
    }
    free(x);
    free(ya);
    free(yb);
    unlink(dst);
}

int main(void) {
    open_fixture(&ex, "esrgan/expected.safetensors");
    cJSON *root = fixture_json("esrgan/cases.json");
    compute cc;
    compute_init(&cc, 0, 0, 0);
    int n = 0;
    for (const cJSON *c = cJSON_GetObjectItem(root, "cases") ? cJSON_GetObjectItem(root, "cases")->child : NULL; c;
         c = c->next, n++)
        run_case(&cc, c);
    CHECK(n == 8, "ran %d cases", n);
    test_naming_2019(&cc);
    char path[1024], err[SD_ERR_LEN];
    esrgan e;
    snprintf(path, sizeof path, "%s/model_f32.safetensors", SD_FIXTURES);
    CHECK(esrgan_load(&e, path, err, sizeof err) == SD_ERR_MODEL && strstr(err, "not an RRDBNet"), "a checkpoint: %s",
          err);
    esrgan_free(&e);
    compute_free(&cc);
    cJSON_Delete(root);
    st_close(&ex);
    return test_finish();
}
