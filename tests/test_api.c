/* test_api.c - the library as a caller sees it: the version, and contexts that own their settings: two contexts
 * with different thread counts, precisions and memory modes, used in turn in one thread or at the same time from two
 * threads, give the same bytes as each context alone. */
#include "sd.h"
#include "test_util.h"

#include <pthread.h>

static sd_status generate(sd_ctx *ctx, sd_image *img) {
    char err[SD_ERR_LEN];
    sd_gen_params p;
    sd_gen_params_default(&p);
    p.prompt = "a dog wearing hat";
    p.width = p.height = 64;
    p.steps = 3;
    p.seed = 11;
    sd_status st = sd_generate(ctx, &p, img, err);
    CHECK(st == SD_OK, "generate: %s", err);
    return st;
}

static int same_image(const sd_image *a, const sd_image *b) {
    return a->width == b->width && a->height == b->height &&
           !memcmp(a->rgb, b->rgb, (size_t)a->width * a->height * 3) &&
           !memcmp(a->latent, b->latent, (size_t)a->latent_channels * (a->width / 8) * (a->height / 8) * sizeof(float));
}

/* A context with these settings (threads, bf16, low memory). */
static sd_ctx *load(const char *model, int threads, int bf16, int low_memory) {
    char err[SD_ERR_LEN];
    sd_load_params lp;
    sd_load_params_default(&lp);
    lp.model_path = model;
    lp.n_threads = threads;
    lp.precision = bf16 ? SD_PRECISION_BF16 : SD_PRECISION_F32;
    lp.low_memory = low_memory;
    sd_ctx *ctx = NULL;
    CHECK(sd_load_with(&ctx, &lp, err) == SD_OK, "load (%d threads, bf16 %d, low memory %d): %s", threads, bf16,
          low_memory, err);
    return ctx;
}

typedef struct {
    sd_ctx *ctx;
    sd_image img;
    sd_status st;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    j->st = generate(j->ctx, &j->img);
    return NULL;
}

/* A float32 context and a bfloat16 low-memory one: alone, then in turn, then at the same time. */
static void test_settings_apart(const char *model) {
    sd_ctx *f = load(model, 2, 0, 0), *b = load(model, 1, 1, 1);
    sd_image ref_f, ref_b;
    if (!f || !b || generate(f, &ref_f) != SD_OK) return;
    sd_free(f);
    if (generate(b, &ref_b) != SD_OK) return;
    sd_free(b);
    CHECK(sd_bf16_supported() ? !same_image(&ref_f, &ref_b) : same_image(&ref_f, &ref_b),
          "bf16 changes the bytes exactly where the CPU has AVX512-BF16");
    f = load(model, 2, 0, 0);
    b = load(model, 1, 1, 1);
    job jf = {f, {0}, SD_ERR_RUNTIME}, jb = {b, {0}, SD_ERR_RUNTIME};
    run_job(&jb); /* in turn, the bf16 one first */
    run_job(&jf);
    CHECK(jf.st == SD_OK && jb.st == SD_OK && same_image(&jf.img, &ref_f) && same_image(&jb.img, &ref_b),
          "two contexts used in turn give each one's own bytes");
    sd_image_free(&jf.img);
    sd_image_free(&jb.img);
    pthread_t tf, tb; /* at the same time, from two threads */
    CHECK(pthread_create(&tf, NULL, run_job, &jf) == 0 && pthread_create(&tb, NULL, run_job, &jb) == 0, "threads");
    pthread_join(tf, NULL);
    pthread_join(tb, NULL);
    CHECK(jf.st == SD_OK && jb.st == SD_OK && same_image(&jf.img, &ref_f) && same_image(&jb.img, &ref_b),
          "two contexts running at the same time give each one's own bytes");
    sd_image_free(&jf.img);
    sd_image_free(&jb.img);
    sd_image_free(&ref_f);
    sd_image_free(&ref_b);
    sd_free(f);
    sd_free(b);
}

int main(void) {
    char want[32], err[SD_ERR_LEN], model[1024];
    snprintf(want, sizeof want, "%d.%d.%d", SD_VERSION_MAJOR, SD_VERSION_MINOR, SD_VERSION_PATCH);
    CHECK(!strcmp(sd_version(), want), "sd_version() '%s' equals the header's %s", sd_version(), want);
    snprintf(model, sizeof model, "%s/model_f32.safetensors", SD_FIXTURES);

    sd_ctx *single = NULL, *one = NULL, *two = NULL;
    sd_image ref, a, b;
    CHECK(sd_load(&single, model, 2, err) == SD_OK, "load: %s", err);
    if (!single || generate(single, &ref) != SD_OK) return test_finish();
    sd_free(single);
    CHECK(sd_load(&one, model, 1, err) == SD_OK && sd_load(&two, model, 2, err) == SD_OK, "load two contexts: %s", err);
    if (one && two && generate(two, &b) == SD_OK && generate(one, &a) == SD_OK) { /* interleaved on purpose */
        CHECK(same_image(&a, &ref), "context with 1 thread gives the single context's bytes");
        CHECK(same_image(&b, &ref), "context with 2 threads gives the single context's bytes");
        sd_image_free(&a);
        sd_image_free(&b);
    }
    sd_image_free(&ref);
    sd_free(one);
    sd_free(two);

    sd_model_info mi;
    CHECK(sd_load(&one, model, 0, err) == SD_OK, "load: %s", err);
    sd_get_model_info(one, &mi);
    CHECK(!strcmp(mi.family, "SD 1.x") && mi.prediction == SD_PREDICTION_EPSILON && mi.default_width == 512 &&
              mi.unet_in_channels == 4 && mi.latent_channels == 4,
          "model info of sd1-tiny");
    sd_free(one);
    test_settings_apart(model);
    return test_finish();
}
