/* schedule.h - the noise schedule and the timestep/sigma tables every sampler shares,
 * computed as diffusers computes them for SD's scheduler config (scaled_linear betas
 * 0.00085 -> 0.012, 1000 training steps, steps_offset 1). */
#ifndef SD_SCHEDULE_H
#define SD_SCHEDULE_H

#include "sd.h"

#define TRAIN_STEPS 1000

typedef struct {
    float alphas_cumprod[TRAIN_STEPS]; /* float32 cumprod of 1 - beta, as torch computes it */
    float sigmas[TRAIN_STEPS];         /* sqrt((1 - ac) / ac), float32 */
    float log_sigmas[TRAIN_STEPS];
} noise_schedule;

void schedule_init(noise_schedule *s);

/* Timesteps (descending, float64) for n steps with the given spacing; `offset` is steps_offset. */
void timesteps_linspace(int n, double *t);            /* linspace(0, 999, n)[::-1] */
void timesteps_leading(int n, int offset, double *t); /* arange(n)·(1000//n) + offset, reversed */
void timesteps_trailing(int n, double *t);            /* round(arange(1000, 0, -1000/n)) - 1 */
void timesteps_spaced(sd_spacing k, int n, int offset, double *t);

/* sigma at fractional timestep t: np.interp over the 1000-entry table. */
double sigma_at(const noise_schedule *s, double t);
/* Inverse: fractional timestep of a sigma by interpolating log-sigmas (diffusers _sigma_to_t). */
double sigma_to_t(const noise_schedule *s, double sigma);
/* Karras et al. 2022 (eq. 5) sigmas, rho = 7, from sigma_max down to sigma_min, n values. */
void karras_sigmas(double sigma_min, double sigma_max, int n, double *out);

#endif
