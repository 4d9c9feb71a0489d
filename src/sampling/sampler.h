/* sampler.h - denoising samplers, each computing what the diffusers scheduler of the same
 * name computes with SD 1.5's scheduler config. The pipeline drives every sampler with one loop:
 *
 *   x = txt2img: noise · init_sigma;  img2img: add_noise(x0, noise, begin)
 *   for i in begin .. evals-1:
 *       eps = model(x · input_scale(i), timestep(i))
 *       step(i, eps, x)          (may draw noise from the generator)
 *
 * Adding a sampler: one row in sampler_table (sampler.c) and its step function.
 */
#ifndef SD_SAMPLER_H
#define SD_SAMPLER_H

#include "sampling/rng.h"
#include "sampling/schedule.h"
#include "sd.h"

#include <stddef.h>

typedef struct sampler sampler;

typedef struct {
    sd_sampler kind;
    int steps;
    sd_spacing spacing; /* SD_SPACING_DEFAULT = the sampler's diffusers default */
    int karras;         /* use_karras_sigmas (sigma-based samplers and DPM++) */
    float eta;          /* DDIM */
    double strength;    /* img2img: the part of the schedule that runs (1 = all; 0 < strength <= 1) */
} sampler_opts;

typedef void (*sampler_step_fn)(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
typedef int (*sampler_setup_fn)(sampler *s);

/* How a clean latent x0 is noised to the level of evaluation i (diffusers' add_noise). */
typedef enum {
    NOISE_SIGMA,       /* x0 + σ·noise (sigma-space samplers) */
    NOISE_ALPHA_SIGMA, /* α·x0 + α·σ·noise, α = 1/√(σ²+1) (DPM-Solver, UniPC) */
    NOISE_ALPHA_BAR    /* √ᾱ_t·x0 + √(1−ᾱ_t)·noise (DDPM-family) */
} noise_form;

/* One row per sampler: everything that differs between them. */
typedef struct {
    sd_sampler kind;
    sd_sampler_info info;   /* public: names, default spacing, options that matter */
    sampler_setup_fn setup; /* timestep / sigma tables (the family's) */
    sampler_step_fn step;
    noise_form noise;
} sampler_row;

extern const sampler_row sampler_table[SD_SAMPLER_COUNT];
const sampler_row *sampler_row_of(sd_sampler k); /* NULL when unknown */

/* Builds the timestep/sigma tables for `n` latent values. NULL (err set) on bad options or no memory. */
sampler *sampler_create(const sampler_opts *o, const noise_schedule *s, size_t n, char *err, size_t errlen);
void sampler_free(sampler *s);

int sampler_evals(const sampler *s);        /* model evaluations of the whole schedule (PNDM, Heun: more than steps) */
int sampler_begin(const sampler *s);        /* first evaluation that runs (img2img strength), 0 for txt2img */
float sampler_init_sigma(const sampler *s); /* init_noise_sigma */
double sampler_timestep(const sampler *s, int i); /* UNet timestep of evaluation i */
float sampler_input_scale(const sampler *s, int i);
float sampler_alpha_bar(const sampler *s, int i); /* ᾱ of the model input (v-prediction -> epsilon) */
/* out[n] = x0 noised with `noise` to the level of evaluation i (i == evals: clean, out = x0). */
void sampler_add_noise(const sampler *s, int i, const float *x0, const float *noise, float *out);
/* x[n] <- the sampler's update with model output eps[n] (epsilon). */
void sampler_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);

#endif
