/* test_sampling.c - random streams against torch (rng.safetensors) and every sampler's
 * timesteps / sigmas / init_noise_sigma against diffusers (scheduler_tables.json). */
#include "sampling/rng.h"
#include "sampling/sampler.h"
#include "sampling/schedule.h"
#include "test_util.h"

#include <cJSON.h>

static void test_rng(void) {
    st_file f;
    open_fixture(&f, "rng.safetensors");
    int n_checked = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        char kind[8];
        unsigned long long seed;
        char shape[32];
        if (sscanf(t->name, "%7[a-z].%llu.%31s", kind, &seed, shape) != 3) continue;
        if (!strncmp(shape, "seq", 3) || strcmp(kind, "cpu") != 0) continue; /* cuda: see test_rng_cuda.c */
        sd_rng r;
        rng_init(&r, !strcmp(kind, "cuda") ? RNG_CUDA : RNG_CPU, seed);
        float *out = malloc((size_t)t->numel * sizeof(float));
        rng_randn(&r, out, (size_t)t->numel);
        double e = max_abs_diff(out, t->data, (size_t)t->numel);
        CHECK(e <= 1e-6, "%s: max abs error %.3g", t->name, e);
        free(out);
        n_checked++;
    }
    CHECK(n_checked >= 40, "checked %d draws", n_checked);
    /* two successive draws continue one stream */
    sd_rng r;
    rng_init(&r, RNG_CPU, 42);
    float a[1024], b[1024];
    rng_randn(&r, a, 1024);
    rng_randn(&r, b, 1024);
    CHECK(max_abs_diff(a, fixture_f32(&f, "cpu.42.seq0", NULL), 1024) <= 1e-6, "cpu.42.seq0");
    CHECK(max_abs_diff(b, fixture_f32(&f, "cpu.42.seq1", NULL), 1024) <= 1e-6, "cpu.42.seq1");
    st_close(&f);
}

/* fixture table name -> sampler options */
static int options_for(const char *name, sampler_opts *o) {
    char base[64];
    snprintf(base, sizeof base, "%s", name);
    char *slash = strchr(base, '/');
    if (!slash) return -1;
    *slash = 0;
    o->steps = atoi(slash + 1);
    o->spacing = 0;
    o->karras = 0;
    o->eta = 0;
    o->strength = 1.0;
    if (!strcmp(base, "dpmpp_2m"))
        o->kind = SD_SAMPLER_DPMPP_2M;
    else if (!strcmp(base, "dpmpp_2m_karras")) {
        o->kind = SD_SAMPLER_DPMPP_2M;
        o->karras = 1;
    } else if (!strcmp(base, "euler_trailing")) {
        o->kind = SD_SAMPLER_EULER_A;
        o->spacing = SD_SPACING_TRAILING;
    } else {
        int k = sd_sampler_from_name(base);
        if (k < 0) return -1;
        o->kind = (sd_sampler)k;
    }
    return 0;
}

static noise_schedule sched; /* SD's schedule, set up once in main */

static void test_tables(void) {
    char err[256];
    cJSON *root = fixture_json("scheduler_tables.json");
    int tables = 0;
    for (const cJSON *c = root ? root->child : NULL; c; c = c->next) {
        sampler_opts o;
        CHECK(options_for(c->string, &o) == 0, "unknown table %s", c->string);
        sampler *s = sampler_create(&o, &sched, 16, err, sizeof err);
        if (!s) {
            CHECK(0, "%s: %s", c->string, err);
            continue;
        }
        const cJSON *ts = cJSON_GetObjectItem(c, "timesteps"), *sg = cJSON_GetObjectItem(c, "sigmas");
        int n = cJSON_GetArraySize(ts), ok = n == sampler_evals(s), i = 0;
        for (const cJSON *v = ts->child; v && ok; v = v->next, i++)
            if (fabs(v->valuedouble - sampler_timestep(s, i)) > 1e-3 * fmax(1, fabs(v->valuedouble))) ok = 0;
        CHECK(ok, "%s: timesteps differ (%d evals, want %d)", c->string, sampler_evals(s), n);
        if (sg) {
            const float *sig = NULL;
            ok = cJSON_GetArraySize(sg) == n + 1;
            i = 0;
            for (const cJSON *v = sg->child; v && ok; v = v->next, i++) {
                float scale = i < n ? sampler_input_scale(s, i) : 1.0f;
                (void)sig;
                if (i < n && o.kind != SD_SAMPLER_DPMPP_2M && o.kind != SD_SAMPLER_UNIPC) {
                    float want_scale = 1.0f / sqrtf((float)v->valuedouble * (float)v->valuedouble + 1.0f);
                    if (fabsf(scale - want_scale) > 1e-6f * want_scale) ok = 0;
                }
                float ab = i < n ? sampler_alpha_bar(s, i) : 0;
                if (i < n && fabsf(ab - 1.0f / ((float)v->valuedouble * (float)v->valuedouble + 1.0f)) > 1e-6f) ok = 0;
            }
            CHECK(ok, "%s: sigmas differ", c->string);
        }
        const cJSON *init = cJSON_GetObjectItem(c, "init_noise_sigma");
        double want_init = cJSON_IsNumber(init) ? init->valuedouble : sampler_init_sigma(s); /* null in some tables */
        CHECK(fabs(sampler_init_sigma(s) - want_init) <= 1e-6 * fmax(1, want_init), "%s: init_noise_sigma %g, want %g",
              c->string, sampler_init_sigma(s), want_init);
        sampler_free(s);
        tables++;
    }
    CHECK(tables == 47, "checked %d tables", tables);
    cJSON_Delete(root);
}

static void test_schedule(void) {
    noise_schedule s;
    schedule_init(&s);
    st_file f;
    open_fixture(&f, "model_f32.safetensors");
    const float *ac = fixture_f32(&f, "alphas_cumprod", NULL);
    double e = 0;
    for (int i = 0; i < TRAIN_STEPS; i++) e = fmax(e, fabs(ac[i] - s.alphas_cumprod[i]));
    CHECK(e < 1e-6, "alphas_cumprod matches the checkpoint's: %.3g", e);
    st_close(&f);
}

/* img2img timestep selection (diffusers get_timesteps) and the noise level of the start latent, for every
 * (sampler, steps, strength) of sd1-img2img/strength_tables.json. */
static void test_strength_tables(void) {
    char err[256];
    cJSON *root = fixture_json("sd1-img2img/strength_tables.json");
    int tables = 0;
    for (const cJSON *c = root ? root->child : NULL; c; c = c->next) {
        if (c->string[0] == '_') continue;
        const char *name = cJSON_GetObjectItem(c, "sampler")->valuestring;
        sampler_opts o = {0};
        o.kind = (sd_sampler)sd_sampler_from_name(!strcmp(name, "dpmpp_2m") ? "dpm++2m" : name);
        o.steps = cJSON_GetObjectItem(c, "steps")->valueint;
        o.strength = cJSON_GetObjectItem(c, "strength")->valuedouble;
        sampler *s = sampler_create(&o, &sched, 1, err, sizeof err);
        tables++;
        if (cJSON_GetObjectItem(c, "steps_run")->valueint == 0) { /* diffusers fails too: refused with a message */
            CHECK(!s && strstr(err, "runs no step"), "%s: a strength that runs no step is refused", c->string);
            sampler_free(s);
            continue;
        }
        if (!s) {
            CHECK(0, "%s: %s", c->string, err);
            continue;
        }
        const cJSON *run = cJSON_GetObjectItem(c, "timesteps_run");
        int begin = sampler_begin(s), n = cJSON_GetArraySize(run), ok = n == sampler_evals(s) - begin, i = begin;
        CHECK(begin == cJSON_GetObjectItem(c, "begin_index")->valueint, "%s: begin %d", c->string, begin);
        for (const cJSON *v = run->child; v && ok; v = v->next, i++)
            if (fabs(v->valuedouble - sampler_timestep(s, i)) > 1e-4 * fmax(1, fabs(v->valuedouble))) ok = 0;
        CHECK(ok, "%s: timesteps run differ (%d from %d)", c->string, sampler_evals(s) - begin, begin);
        const cJSON *start = cJSON_GetObjectItem(c, "start");
        if (start) { /* start = a·x0 + b·noise: sigma = b/a (sigma forms), alpha_bar = a² (DDPM forms) */
            float one = 1.0f, zero = 0.0f, a, b;
            sampler_add_noise(s, begin, &one, &zero, &a);
            sampler_add_noise(s, begin, &zero, &one, &b);
            const cJSON *sg = cJSON_GetObjectItem(start, "sigma"), *ab = cJSON_GetObjectItem(start, "alpha_bar");
            double got = sg ? b / a : (double)a * a, want = sg ? sg->valuedouble : ab->valuedouble;
            CHECK(fabs(got - want) <= 1e-5 * fmax(1, want), "%s: start level %.7g, want %.7g", c->string, got, want);
        }
        sampler_free(s);
    }
    CHECK(tables == 98, "checked %d strength tables", tables);
    cJSON_Delete(root);
}

/* Every row of the sampler table is complete: names, setup and step function, its own enum value. */
static void test_sampler_table(void) {
    for (int k = 0; k < SD_SAMPLER_COUNT; k++) {
        const sampler_row *r = &sampler_table[k];
        CHECK(r->kind == (sd_sampler)k && r->info.name && r->info.a1111_name && r->setup && r->step &&
                  r->info.default_spacing >= SD_SPACING_LEADING && r->info.evals_per_step >= 1,
              "sampler table row %d is incomplete", k);
        CHECK(sd_sampler_from_name(r->info.name) == k, "name '%s' maps back to %d", r->info.name, k);
        /* the table's evaluation counts are what the sampler runs: 1 + (N - 1)·per step + warm-up */
        sampler_opts o = {.kind = (sd_sampler)k, .steps = 10, .strength = 1.0};
        char err[256];
        sampler *s = sampler_create(&o, &sched, 4, err, sizeof err);
        int want = 1 + 9 * r->info.evals_per_step + r->info.warmup_evals;
        CHECK(s && sampler_evals(s) == want, "%s: %d evaluations for 10 steps, the table says %d", r->info.name,
              s ? sampler_evals(s) : -1, want);
        sampler_free(s);
    }
    CHECK(sd_sampler_get_info(SD_SAMPLER_COUNT) == NULL && sd_sampler_from_name("nope") == -1,
          "unknown samplers are refused");
}

int main(void) {
    schedule_init(&sched);
    test_sampler_table();
    test_strength_tables();
    test_rng();
    test_schedule();
    test_tables();
    return test_finish();
}
