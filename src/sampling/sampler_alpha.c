/* sampler_alpha.c - samplers on integer timesteps and ᾱ_t (unscaled model input):
 *   ddim  DDIMScheduler (Song et al. 2020, eq. 12; eta > 0 adds noise)
 *   ddpm  DDPMScheduler (Ho et al. 2020, eq. 7, fixed_small variance)
 *   pndm  PNDMScheduler with skip_prk_steps (PLMS, Liu et al. 2022)
 *   lcm   LCMScheduler (Luo et al. 2023, consistency boundary conditions)
 */
#include "sampling/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Distance between consecutive timesteps as diffusers uses it: 1000 // steps. */
static int step_ratio(const sampler *s) { return TRAIN_STEPS / s->o.steps; }

/* x0 = (x - sqrt(1 - ᾱ)·eps) / sqrt(ᾱ) */
static inline float predict_x0(float x, float eps, float ab) { return (x - sqrtf(1.0f - ab) * eps) / sqrtf(ab); }

/* ---------------- DDIM ---------------- */

void ddim_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    double t = s->timesteps[i], prev_t = t - step_ratio(s);
    float ab = alpha_cumprod_at(s, t, 1.0f), ab_prev = alpha_cumprod_at(s, prev_t, s->sched->alphas_cumprod[0]);
    float beta = 1.0f - ab, beta_prev = 1.0f - ab_prev;
    float variance = (beta_prev / beta) * (1.0f - ab / ab_prev);
    float std_dev = s->o.eta * sqrtf(variance);
    float dir = sqrtf(1.0f - ab_prev - std_dev * std_dev), root_prev = sqrtf(ab_prev);
    if (s->o.eta > 0) rng_randn(rng, s->noise, s->n);
    for (size_t j = 0; j < s->n; j++) {
        float x0 = predict_x0(x[j], eps[j], ab);
        float prev = root_prev * x0 + dir * eps[j];
        x[j] = s->o.eta > 0 ? prev + std_dev * s->noise[j] : prev;
    }
}

/* ---------------- DDPM ---------------- */

void ddpm_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    double t = s->timesteps[i], prev_t = t - step_ratio(s);
    float ab = alpha_cumprod_at(s, t, 1.0f), ab_prev = alpha_cumprod_at(s, prev_t, 1.0f);
    float beta = 1.0f - ab, beta_prev = 1.0f - ab_prev;
    float alpha = ab / ab_prev, cur_beta = 1.0f - alpha;
    float x0_coeff = (sqrtf(ab_prev) * cur_beta) / beta, x_coeff = sqrtf(alpha) * beta_prev / beta;
    float variance = (1.0f - ab_prev) / (1.0f - ab) * cur_beta; /* fixed_small, clamped at 1e-20 */
    float sd = sqrtf(variance > 1e-20f ? variance : 1e-20f);
    int noisy = t > 0;
    if (noisy) rng_randn(rng, s->noise, s->n);
    for (size_t j = 0; j < s->n; j++) {
        float x0 = predict_x0(x[j], eps[j], ab);
        float prev = x0_coeff * x0 + x_coeff * x[j];
        x[j] = noisy ? prev + sd * s->noise[j] : prev;
    }
}

/* ---------------- PNDM (PLMS) ---------------- */

/* diffusers PNDMScheduler._get_prev_sample (Liu et al. 2022, eq. 9). */
static void pndm_prev_sample(const sampler *s, const float *x, const float *eps, double t, double prev_t, float *out) {
    float ab = alpha_cumprod_at(s, t, 1.0f), ab_prev = alpha_cumprod_at(s, prev_t, s->sched->alphas_cumprod[0]);
    float beta = 1.0f - ab, beta_prev = 1.0f - ab_prev;
    float sample_coeff = sqrtf(ab_prev / ab);
    float denom = ab * sqrtf(beta_prev) + sqrtf(ab * beta * ab_prev);
    for (size_t j = 0; j < s->n; j++) out[j] = sample_coeff * x[j] - (ab_prev - ab) * eps[j] / denom;
}

void pndm_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    const size_t n = s->n;
    double t = s->timesteps[i], prev_t = t - step_ratio(s);
    float *e = s->tmp; /* the combined model output */
    if (s->counter != 1)
        sampler_push_history(s, eps, SAMPLER_HISTORY);
    else {
        prev_t = t;
        t = t + step_ratio(s);
    }
    float **h = s->hist;
    int m = s->n_hist;
    if (m == 1 && s->counter == 0) {
        memcpy(e, eps, n * sizeof(float));
        memcpy(s->saved, x, n * sizeof(float));
    } else if (m == 1 && s->counter == 1) {
        for (size_t j = 0; j < n; j++) e[j] = (eps[j] + h[0][j]) / 2.0f;
        memcpy(x, s->saved, n * sizeof(float));
    } else if (m == 2) {
        for (size_t j = 0; j < n; j++) e[j] = (3.0f * h[1][j] - h[0][j]) / 2.0f;
    } else if (m == 3) {
        for (size_t j = 0; j < n; j++) e[j] = (23.0f * h[2][j] - 16.0f * h[1][j] + 5.0f * h[0][j]) / 12.0f;
    } else {
        for (size_t j = 0; j < n; j++)
            e[j] = (1.0f / 24.0f) * (55.0f * h[3][j] - 59.0f * h[2][j] + 37.0f * h[1][j] - 9.0f * h[0][j]);
    }
    pndm_prev_sample(s, x, e, t, prev_t, x);
    s->counter++;
}

/* ---------------- LCM ---------------- */

void lcm_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    double t = s->timesteps[i], prev_t = i + 1 < s->evals ? s->timesteps[i + 1] : t;
    float ab = alpha_cumprod_at(s, t, 1.0f), ab_prev = alpha_cumprod_at(s, prev_t, s->sched->alphas_cumprod[0]);
    const float sigma_data = 0.5f, scaled = (float)t * 10.0f; /* timestep_scaling = 10 */
    float c_skip = sigma_data * sigma_data / (scaled * scaled + sigma_data * sigma_data);
    float c_out = scaled / sqrtf(scaled * scaled + sigma_data * sigma_data);
    int last = i == s->evals - 1;
    if (!last) rng_randn(rng, s->noise, s->n);
    for (size_t j = 0; j < s->n; j++) {
        float x0 = predict_x0(x[j], eps[j], ab);
        float denoised = c_out * x0 + c_skip * x[j];
        x[j] = last ? denoised : sqrtf(ab_prev) * denoised + sqrtf(1.0f - ab_prev) * s->noise[j];
    }
}

/* ---------------- setup ---------------- */

/* PLMS timesteps: the spaced steps ascending, the second-to-last repeated, then reversed. */
static int pndm_timesteps(const sampler *s, double *out) {
    const int N = s->o.steps;
    double asc[TRAIN_STEPS], desc[TRAIN_STEPS];
    timesteps_spaced(s->o.spacing, N, 1, desc);
    for (int i = 0; i < N; i++) asc[i] = nearbyint(desc[N - 1 - i]);
    int m = 0;
    double plms[TRAIN_STEPS + 1];
    for (int i = 0; i < N - 1; i++) plms[m++] = asc[i];
    if (N >= 2) plms[m++] = asc[N - 2];
    plms[m++] = asc[N - 1];
    for (int i = 0; i < m; i++) out[i] = plms[m - 1 - i];
    return m;
}

/* LCM: every 20th training step (original 50 steps), N of them picked at floor(linspace) indices. */
static void lcm_timesteps(int N, double *out) {
    const int original = 50, k = TRAIN_STEPS / original;
    for (int i = 0; i < N; i++) {
        int idx = (int)floor((double)i * original / N); /* np.linspace(0, 50, N, endpoint=False) */
        out[i] = (double)((original - idx) * k - 1);
    }
}

int alpha_sampler_setup(sampler *s) {
    const int N = s->o.steps;
    const sd_sampler k = s->o.kind;
    if (k == SD_SAMPLER_PNDM) {
        s->evals = pndm_timesteps(s, s->timesteps);
    } else if (k == SD_SAMPLER_LCM) {
        s->evals = N;
        lcm_timesteps(N, s->timesteps);
    } else {
        s->evals = N;
        timesteps_spaced(s->o.spacing, N, 1, s->timesteps);
        for (int i = 0; i < N; i++) s->timesteps[i] = nearbyint(s->timesteps[i]);
    }
    for (int i = 0; i < s->evals; i++) {
        s->input_scale[i] = 1.0f;
        s->alpha_bar[i] = alpha_cumprod_at(s, s->timesteps[i], 1.0f);
    }
    s->init_sigma = 1.0f;
    return 0;
}
