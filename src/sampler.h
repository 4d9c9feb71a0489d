/* sampler.h - denoising samplers, each computing what the diffusers scheduler of the same
 * name computes with SD 1.5's scheduler config. The pipeline drives every sampler with one loop:
 *
 *   x *= init_sigma
 *   for i in 0 .. evals-1:
 *       eps = model(x · input_scale(i), timestep(i))
 *       step(i, eps, x)          (may draw noise from the generator)
 */
#ifndef SD_SAMPLER_H
#define SD_SAMPLER_H

#include "rng.h"
#include "schedule.h"
#include "sd.h"

#include <stddef.h>

typedef struct sampler sampler;

typedef struct {
    sd_sampler kind;
    int steps;
    spacing_kind spacing; /* 0 = the sampler's diffusers default */
    int karras;           /* use_karras_sigmas (sigma-based samplers and DPM++) */
    float eta;            /* DDIM */
} sampler_opts;

/* Builds the timestep/sigma tables for `n` latent values. NULL (err set) on bad options or no memory. */
sampler *sampler_create(const sampler_opts *o, const noise_schedule *s, size_t n, char *err, size_t errlen);
void sampler_free(sampler *s);

int sampler_evals(const sampler *s);              /* model evaluations (PNDM, Heun: more than steps) */
float sampler_init_sigma(const sampler *s);       /* init_noise_sigma */
double sampler_timestep(const sampler *s, int i); /* UNet timestep of evaluation i */
float sampler_input_scale(const sampler *s, int i);
float sampler_alpha_bar(const sampler *s, int i); /* ᾱ of the model input (v-prediction -> epsilon) */
/* x[n] <- the sampler's update with model output eps[n] (epsilon). */
void sampler_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);

/* Default timestep spacing of a sampler (what its diffusers class uses for SD 1.5). */
spacing_kind sampler_default_spacing(sd_sampler k);

#endif
