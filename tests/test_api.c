/* test_api.c - the library as a caller sees it: the version, and contexts that own their thread count:
 * two contexts with different thread counts, used in turn, give the same bytes as one context alone. */
#include "sd.h"
#include "test_util.h"

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
    return a->width == b->width && a->height == b->height && !memcmp(a->rgb, b->rgb, (size_t)a->width * a->height * 3) &&
           !memcmp(a->latent, b->latent, (size_t)a->latent_channels * (a->width / 8) * (a->height / 8) * sizeof(float));
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
          mi.unet_in_channels == 4 && mi.latent_channels == 4, "model info of sd1-tiny");
    sd_free(one);
    return test_finish();
}
