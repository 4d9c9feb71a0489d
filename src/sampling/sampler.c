/* sampler.c - the sampler table, creation and the interface the pipeline uses; the families live in
 * sampler_sigma.c (LMS, Euler, Euler a, Heun), sampler_alpha.c (DDIM, DDPM, PNDM, LCM)
 * and sampler_multistep.c (DPM++ 2M, UniPC). */
#include "sampling/sampler_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEADING  SD_SPACING_LEADING
#define LINSPACE SD_SPACING_LINSPACE

/* kind, {CLI name, AUTOMATIC1111 name, default spacing (diffusers, SD 1.5 config), uses eta, uses karras,
 * evaluations per step, warm-up evaluations}, setup, step, add-noise form */
/* clang-format off */
const sampler_row sampler_table[SD_SAMPLER_COUNT] = {
    {SD_SAMPLER_LMS, {"lms", "LMS", LINSPACE, 0, 1, 1, 0}, sigma_sampler_setup, lms_step, NOISE_SIGMA},
    {SD_SAMPLER_DDPM, {"ddpm", "DDPM", LEADING, 0, 0, 1, 0}, alpha_sampler_setup, ddpm_step, NOISE_ALPHA_BAR},
    {SD_SAMPLER_DDIM, {"ddim", "DDIM", LEADING, 1, 0, 1, 0}, alpha_sampler_setup, ddim_step, NOISE_ALPHA_BAR},
    {SD_SAMPLER_PNDM, {"pndm", "PLMS", LEADING, 0, 0, 1, 1}, alpha_sampler_setup, pndm_step, NOISE_ALPHA_BAR},
    {SD_SAMPLER_EULER, {"euler", "Euler", LINSPACE, 0, 1, 1, 0}, sigma_sampler_setup, euler_step, NOISE_SIGMA},
    {SD_SAMPLER_EULER_A, {"euler_a", "Euler a", LINSPACE, 0, 1, 1, 0}, sigma_sampler_setup, euler_a_step, NOISE_SIGMA},
    {SD_SAMPLER_HEUN, {"heun", "Heun", LINSPACE, 0, 1, 2, 0}, sigma_sampler_setup, heun_step, NOISE_SIGMA},
    {SD_SAMPLER_DPMPP_2M, {"dpm++2m", "DPM++ 2M", LINSPACE, 0, 1, 1, 0}, multistep_sampler_setup, dpmpp_2m_step,
     NOISE_ALPHA_SIGMA},
    {SD_SAMPLER_UNIPC, {"unipc", "UniPC", LINSPACE, 0, 1, 1, 0}, multistep_sampler_setup, unipc_step,
     NOISE_ALPHA_SIGMA},
    {SD_SAMPLER_LCM, {"lcm", "LCM", LEADING, 0, 0, 1, 0}, alpha_sampler_setup, lcm_step, NOISE_ALPHA_BAR},
};
/* clang-format on */

const sampler_row *sampler_row_of(sd_sampler k) {
    return (unsigned)k < SD_SAMPLER_COUNT && sampler_table[k].kind == k ? &sampler_table[k] : NULL;
}

/* diffusers get_timesteps: init_timestep = min(int(steps·strength), steps) steps run, starting at
 * t_start·order with t_start = steps − init_timestep. */
static int begin_index(const sampler *s, char *err, size_t errlen) {
    const int N = s->o.steps;
    int run = (int)((double)N * s->o.strength);
    if (run > N) run = N;
    if (run < 1) {
        snprintf(err, errlen, "strength: %g with %d steps runs no step (needs strength >= %g)", s->o.strength, N,
                 1.0 / N);
        return -1;
    }
    return (N - run) * s->row->info.evals_per_step;
}

sampler *sampler_create(const sampler_opts *o, const noise_schedule *sched, size_t n, char *err, size_t errlen) {
    const sampler_row *row = sampler_row_of(o->kind);
    if (!row || !row->setup || !row->step) {
        snprintf(err, errlen, "sampler: unknown sampler %d", (int)o->kind);
        return NULL;
    }
    if (o->steps < 1 || o->steps > TRAIN_STEPS) {
        snprintf(err, errlen, "steps: %d is outside 1..%d", o->steps, TRAIN_STEPS);
        return NULL;
    }
    if (!(o->strength > 0 && o->strength <= 1)) {
        snprintf(err, errlen, "strength: %g is outside (0, 1]", o->strength);
        return NULL;
    }
    sampler *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->o = *o;
    s->row = row;
    if (!s->o.spacing) s->o.spacing = row->info.default_spacing;
    s->sched = sched;
    s->n = n;
    int cap = 2 * o->steps + 2; /* Heun and PNDM evaluate more often than steps */
    s->timesteps = calloc((size_t)cap, sizeof(double));
    s->sigmas = calloc((size_t)cap + 1, sizeof(float));
    s->input_scale = calloc((size_t)cap, sizeof(float));
    s->alpha_bar = calloc((size_t)cap, sizeof(float));
    s->saved = calloc(n, sizeof(float));
    s->noise = calloc(n, sizeof(float));
    s->tmp = calloc(n, sizeof(float));
    if (!s->timesteps || !s->sigmas || !s->input_scale || !s->alpha_bar || !s->saved || !s->noise || !s->tmp)
        goto nomem;
    for (int i = 0; i < SAMPLER_HISTORY; i++)
        if (!(s->hist[i] = calloc(n, sizeof(float)))) goto nomem;
    if (row->setup(s) != 0) goto nomem;
    if ((s->begin = begin_index(s, err, errlen)) < 0) {
        sampler_free(s);
        return NULL;
    }
    return s;
nomem:
    snprintf(err, errlen, "sampler: out of memory for %zu latent values", n);
    sampler_free(s);
    return NULL;
}

void sampler_free(sampler *s) {
    if (!s) return;
    for (int i = 0; i < SAMPLER_HISTORY; i++) free(s->hist[i]);
    free(s->timesteps);
    free(s->sigmas);
    free(s->input_scale);
    free(s->alpha_bar);
    free(s->saved);
    free(s->noise);
    free(s->tmp);
    free(s);
}

int sampler_evals(const sampler *s) { return s->evals; }
int sampler_begin(const sampler *s) { return s->begin; }
float sampler_init_sigma(const sampler *s) { return s->init_sigma; }
double sampler_timestep(const sampler *s, int i) { return s->timesteps[i]; }
float sampler_input_scale(const sampler *s, int i) { return s->input_scale[i]; }
float sampler_alpha_bar(const sampler *s, int i) { return s->alpha_bar[i]; }

void sampler_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) { s->row->step(s, i, eps, x, rng); }

void sampler_add_noise(const sampler *s, int i, const float *x0, const float *noise, float *out) {
    float a = 1.0f, b = 0.0f; /* out = a·x0 + b·noise */
    if (i < s->evals) {
        float sigma = s->sigmas[i];
        switch (s->row->noise) {
        case NOISE_SIGMA:
            b = sigma;
            break;
        case NOISE_ALPHA_SIGMA:
            a = 1.0f / sqrtf(sigma * sigma + 1.0f);
            b = a * sigma;
            break;
        case NOISE_ALPHA_BAR: {
            float ab = alpha_cumprod_at(s, s->timesteps[i], 1.0f);
            a = sqrtf(ab);
            b = sqrtf(1.0f - ab);
            break;
        }
        }
    }
    for (size_t j = 0; j < s->n; j++) out[j] = a * x0[j] + b * noise[j];
}

void sampler_push_history(sampler *s, const float *v, int max_len) {
    if (s->n_hist == max_len) { /* rotate: drop the oldest buffer, reuse it for the newest */
        float *oldest = s->hist[0];
        memmove(s->hist, s->hist + 1, (size_t)(max_len - 1) * sizeof(float *));
        s->hist[max_len - 1] = oldest;
        s->n_hist--;
    }
    memcpy(s->hist[s->n_hist++], v, s->n * sizeof(float));
}

float alpha_cumprod_at(const sampler *s, double t, float fallback) {
    if (t < 0) return fallback;
    int i = (int)t;
    return s->sched->alphas_cumprod[i < TRAIN_STEPS ? i : TRAIN_STEPS - 1];
}

/* ---- the public face of the table ---- */

const sd_sampler_info *sd_sampler_get_info(sd_sampler s) {
    const sampler_row *r = sampler_row_of(s);
    return r ? &r->info : NULL;
}

const char *sd_sampler_name(sd_sampler s) {
    const sampler_row *r = sampler_row_of(s);
    return r ? r->info.name : "?";
}

int sd_sampler_from_name(const char *name) {
    for (int i = 0; i < SD_SAMPLER_COUNT; i++)
        if (strcmp(name, sampler_table[i].info.name) == 0) return i;
    return -1;
}

const char *sd_spacing_name(sd_spacing s) {
    static const char *const names[] = {"default", "leading", "linspace", "trailing"};
    return (unsigned)s <= SD_SPACING_TRAILING ? names[s] : "?";
}
