/* sampler_multistep.c - multistep solvers in the data-prediction (x0) form, unscaled input:
 *   dpm++2m  DPMSolverMultistepScheduler, dpmsolver++, midpoint, order 2 (Lu et al. 2022b, Alg. 2)
 *   unipc    UniPCMultistepScheduler, bh2, order 2 (Zhao et al. 2023)
 * With alpha_t = 1/sqrt(sigma^2 + 1), sigma_t = sigma·alpha_t and lambda = log(alpha_t) - log(sigma_t).
 */
#include "sampling/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SOLVER_ORDER 2

typedef struct {
    float alpha, sigma, lambda;
} noise_level;

static noise_level level_at(float sigma) {
    noise_level l;
    l.alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    l.sigma = sigma * l.alpha;
    l.lambda = logf(l.alpha) - logf(l.sigma);
    return l;
}

/* x0 = (x - sigma_t·eps) / alpha_t into out. */
static void data_prediction(const float *x, const float *eps, float sigma, size_t n, float *out) {
    noise_level l = level_at(sigma);
    for (size_t j = 0; j < n; j++) out[j] = (x[j] - l.sigma * eps[j]) / l.alpha;
}

/* ---------------- DPM-Solver++ (2M) ---------------- */

void dpmpp_2m_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    const size_t n = s->n;
    data_prediction(x, eps, s->sigmas[i], n, s->tmp);
    sampler_push_history(s, s->tmp, SOLVER_ORDER);
    int final = i == s->evals - 1;
    noise_level t = level_at(s->sigmas[i + 1]), s0 = level_at(s->sigmas[i]);
    float h = t.lambda - s0.lambda, ratio = t.sigma / s0.sigma, phi = t.alpha * (expf(-h) - 1.0f);
    const float *m0 = s->hist[s->n_hist - 1];
    if (s->lower_order_nums < 1 || final) { /* first order (DDIM-like) */
        for (size_t j = 0; j < n; j++) x[j] = ratio * x[j] - phi * m0[j];
    } else {
        noise_level s1 = level_at(s->sigmas[i - 1]);
        float r0 = (s0.lambda - s1.lambda) / h;
        const float *m1 = s->hist[s->n_hist - 2];
        for (size_t j = 0; j < n; j++) {
            float d1 = (1.0f / r0) * (m0[j] - m1[j]);
            x[j] = ratio * x[j] - phi * m0[j] - 0.5f * phi * d1;
        }
    }
    if (s->lower_order_nums < SOLVER_ORDER) s->lower_order_nums++;
}

/* ---------------- UniPC (bh2) ---------------- */

/* UniP predictor from sample x (step i -> i+1) using the model outputs in the history. */
static void unipc_predict(sampler *s, int i, int order, float *x) {
    noise_level t = level_at(s->sigmas[i + 1]), s0 = level_at(s->sigmas[i]);
    float h = t.lambda - s0.lambda, hh = -h, h_phi_1 = expm1f(hh), B_h = expm1f(hh);
    const float *m0 = s->hist[s->n_hist - 1];
    float rk = 1.0f;
    if (order == 2) rk = (level_at(s->sigmas[i - 1]).lambda - s0.lambda) / h;
    const float *m1 = order == 2 ? s->hist[s->n_hist - 2] : NULL;
    for (size_t j = 0; j < s->n; j++) {
        float xt = t.sigma / s0.sigma * x[j] - t.alpha * h_phi_1 * m0[j];
        float pred_res = m1 ? 0.5f * ((m1[j] - m0[j]) / rk) : 0.0f; /* rhos_p = [0.5] for order 2 */
        x[j] = xt - t.alpha * B_h * pred_res;
    }
}

/* UniC corrector: refines this_sample (x at step i) from last_sample (x at i-1) with the new model output. */
static void unipc_correct(sampler *s, int i, int order, const float *model_t, const float *last, float *x) {
    noise_level t = level_at(s->sigmas[i]), s0 = level_at(s->sigmas[i - 1]);
    float h = t.lambda - s0.lambda, hh = -h, h_phi_1 = expm1f(hh), B_h = expm1f(hh);
    const float *m0 = s->hist[s->n_hist - 1];
    const float *m1 = order == 2 ? s->hist[s->n_hist - 2] : NULL;
    float rho_d = 0.0f, rho_t = 0.5f, rk = 1.0f;
    if (order == 2) { /* solve R·rho = b with R = [[1, 1], [rk, 1]] (rows rk^0, rk^1) */
        rk = (level_at(s->sigmas[i - 2]).lambda - s0.lambda) / h;
        float h_phi_k = h_phi_1 / hh - 1.0f, b[2];
        float factorial = 1.0f;
        for (int q = 1; q <= 2; q++) {
            b[q - 1] = h_phi_k * factorial / B_h;
            factorial *= (float)(q + 1);
            h_phi_k = h_phi_k / hh - 1.0f / factorial;
        }
        float det = 1.0f * 1.0f - 1.0f * rk;
        rho_d = (b[0] * 1.0f - 1.0f * b[1]) / det;
        rho_t = (1.0f * b[1] - rk * b[0]) / det;
    }
    for (size_t j = 0; j < s->n; j++) {
        float xt = t.sigma / s0.sigma * last[j] - t.alpha * h_phi_1 * m0[j];
        float corr = m1 ? rho_d * ((m1[j] - m0[j]) / rk) : 0.0f;
        float d1_t = model_t[j] - m0[j];
        x[j] = xt - t.alpha * B_h * (corr + rho_t * d1_t);
    }
}

void unipc_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    const size_t n = s->n;
    data_prediction(x, eps, s->sigmas[i], n, s->tmp);
    if (s->n_hist > 0)
        unipc_correct(s, i, s->this_order, s->tmp, s->saved, x); /* after a first step (diffusers: last_sample) */
    sampler_push_history(s, s->tmp, SOLVER_ORDER);
    int order = s->evals - i < SOLVER_ORDER ? s->evals - i : SOLVER_ORDER; /* lower_order_final */
    if (order > s->lower_order_nums + 1) order = s->lower_order_nums + 1;
    s->this_order = order;
    memcpy(s->saved, x, n * sizeof(float));
    unipc_predict(s, i, order, x);
    if (s->lower_order_nums < SOLVER_ORDER) s->lower_order_nums++;
}

/* ---------------- setup ---------------- */

/* diffusers' multistep spacing: N of N+1 points, the last (t = 0) dropped. */
static void multistep_timesteps(sd_spacing k, int N, double *t) {
    if (k == SD_SPACING_LEADING) {
        int ratio = TRAIN_STEPS / (N + 1);
        for (int i = 0; i < N; i++) t[i] = (double)((N - i) * ratio + 1);
    } else if (k == SD_SPACING_TRAILING) {
        timesteps_trailing(N, t);
    } else {
        double step = (TRAIN_STEPS - 1.0) / N;
        for (int i = 0; i < N; i++) t[i] = nearbyint(i == 0 ? TRAIN_STEPS - 1.0 : (N - i) * step);
    }
}

int multistep_sampler_setup(sampler *s) {
    const int N = s->o.steps;
    s->evals = N;
    double sig[TRAIN_STEPS];
    multistep_timesteps(s->o.spacing, N, s->timesteps);
    for (int i = 0; i < N; i++) sig[i] = sigma_at(s->sched, s->timesteps[i]);
    if (s->o.karras) {
        karras_sigmas(s->sched->sigmas[0], s->sched->sigmas[TRAIN_STEPS - 1], N, sig);
        for (int i = 0; i < N; i++) s->timesteps[i] = nearbyint(sigma_to_t(s->sched, sig[i]));
    }
    for (int i = 0; i < N; i++) {
        s->sigmas[i] = (float)sig[i];
        s->input_scale[i] = 1.0f;
        s->alpha_bar[i] = 1.0f / (s->sigmas[i] * s->sigmas[i] + 1.0f);
    }
    s->sigmas[N] = 0.0f;
    s->init_sigma = 1.0f;
    return 0;
}
