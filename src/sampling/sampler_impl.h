/* sampler_impl.h - what the sampler families share (internal to sampler*.c). */
#ifndef SD_SAMPLER_IMPL_H
#define SD_SAMPLER_IMPL_H

#include "sampling/sampler.h"

#define SAMPLER_HISTORY 4

struct sampler {
    sampler_opts o;
    const noise_schedule *sched;
    size_t n; /* latent values */
    int evals, begin;
    double *timesteps;  /* [evals] */
    float *sigmas;      /* [evals + 1] sigma-space samplers, DPM++ and UniPC (0 at the end) */
    float *input_scale; /* [evals] */
    float *alpha_bar;   /* [evals] */
    float init_sigma;
    const sampler_row *row;
    /* state carried between steps */
    float *hist[SAMPLER_HISTORY]; /* [n] each: derivatives / model outputs, newest last */
    int n_hist;
    float *saved; /* [n] Heun's / PNDM's / UniPC's sample from the previous step */
    float *noise; /* [n] */
    float *tmp;   /* [n] */
    int counter, lower_order_nums, this_order;
    float heun_dt;
    int heun_first; /* 1 while the next Heun call is a first-order one */
};

/* Pushes a copy of v into the history (dropping the oldest when full). */
void sampler_push_history(sampler *s, const float *v, int max_len);
/* ᾱ_t of an integer timestep (alphas_cumprod), or `fallback` when t < 0. */
float alpha_cumprod_at(const sampler *s, double t, float fallback);

/* Family setup: fill timesteps/sigmas/scales/init_sigma. 0 ok, -1 no memory. */
int sigma_sampler_setup(sampler *s);     /* lms, euler, euler_a, heun */
int alpha_sampler_setup(sampler *s);     /* ddim, ddpm, pndm, lcm */
int multistep_sampler_setup(sampler *s); /* dpm++2m, unipc */

/* Step functions, one per sampler (named in sampler_table). */
void lms_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void euler_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void euler_a_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void heun_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void ddim_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void ddpm_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void pndm_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void lcm_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void dpmpp_2m_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);
void unipc_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng);

#endif
