/* sampler.c - sampler creation and the interface the pipeline uses; the families live in
 * sampler_sigma.c (LMS, Euler, Euler a, Heun), sampler_alpha.c (DDIM, DDPM, PNDM, LCM)
 * and sampler_multistep.c (DPM++ 2M, UniPC). */
#include "sampler_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

spacing_kind sampler_default_spacing(sd_sampler k) {
    switch (k) {
    case SD_SAMPLER_DDPM: case SD_SAMPLER_DDIM: case SD_SAMPLER_PNDM: case SD_SAMPLER_LCM: return SPACING_LEADING;
    default: return SPACING_LINSPACE;
    }
}

sampler *sampler_create(const sampler_opts *o, const noise_schedule *sched, size_t n, char *err, size_t errlen) {
    if ((unsigned)o->kind >= SD_SAMPLER_COUNT) { snprintf(err, errlen, "sampler: unknown sampler %d", (int)o->kind); return NULL; }
    if (o->steps < 1 || o->steps > TRAIN_STEPS) { snprintf(err, errlen, "steps: %d is outside 1..%d", o->steps, TRAIN_STEPS); return NULL; }
    sampler *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->o = *o;
    if (!s->o.spacing) s->o.spacing = sampler_default_spacing(o->kind);
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
    if (!s->timesteps || !s->sigmas || !s->input_scale || !s->alpha_bar || !s->saved || !s->noise || !s->tmp) goto nomem;
    for (int i = 0; i < SAMPLER_HISTORY; i++)
        if (!(s->hist[i] = calloc(n, sizeof(float)))) goto nomem;
    int rc;
    switch (o->kind) {
    case SD_SAMPLER_LMS: case SD_SAMPLER_EULER: case SD_SAMPLER_EULER_A: case SD_SAMPLER_HEUN:
        rc = sigma_sampler_setup(s); break;
    case SD_SAMPLER_DDIM: case SD_SAMPLER_DDPM: case SD_SAMPLER_PNDM: case SD_SAMPLER_LCM:
        rc = alpha_sampler_setup(s); break;
    default:
        rc = multistep_sampler_setup(s); break;
    }
    if (rc != 0) goto nomem;
    return s;
nomem:
    snprintf(err, errlen, "sampler: out of memory for %zu latent values", n);
    sampler_free(s);
    return NULL;
}

void sampler_free(sampler *s) {
    if (!s) return;
    for (int i = 0; i < SAMPLER_HISTORY; i++) free(s->hist[i]);
    free(s->timesteps); free(s->sigmas); free(s->input_scale); free(s->alpha_bar);
    free(s->saved); free(s->noise); free(s->tmp);
    free(s);
}

int sampler_evals(const sampler *s) { return s->evals; }
float sampler_init_sigma(const sampler *s) { return s->init_sigma; }
double sampler_timestep(const sampler *s, int i) { return s->timesteps[i]; }
float sampler_input_scale(const sampler *s, int i) { return s->input_scale[i]; }
float sampler_alpha_bar(const sampler *s, int i) { return s->alpha_bar[i]; }

void sampler_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) { s->step(s, i, eps, x, rng); }

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
