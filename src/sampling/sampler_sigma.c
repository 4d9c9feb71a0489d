/* sampler_sigma.c - samplers that work in sigma space with a scaled model input
 * x / sqrt(sigma^2 + 1) (Karras et al. 2022 formulation, k-diffusion):
 *   lms     diffusers LMSDiscreteScheduler (linear multistep, order 4)
 *   euler   EulerDiscreteScheduler (Karras et al. 2022, Algorithm 2 with s_churn = 0)
 *   euler_a EulerAncestralDiscreteScheduler (ancestral step, k-diffusion)
 *   heun    HeunDiscreteScheduler (2nd order, Karras et al. 2022 Algorithm 1)
 */
#include "sampling/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x0 = x - sigma·eps and d = (x - x0) / sigma, as diffusers computes them (epsilon prediction). */
static void derivative(const float *x, const float *eps, float sigma, size_t n, float *d) {
    for (size_t j = 0; j < n; j++) {
        float pred = x[j] - sigma * eps[j];
        d[j] = (x[j] - pred) / sigma;
    }
}

/* ---------------- LMS ---------------- */

/* ∫ over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial of node i - cur through the last
 * `order` sigmas (diffusers get_lms_coefficient). Gauss-Legendre with 4 nodes is exact here. */
static double lms_coefficient(const float *sigmas, int order, int i, int cur) {
    static const double gx[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
    static const double gw[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
    double a = sigmas[i], b = sigmas[i + 1], sum = 0.0;
    for (int q = 0; q < 4; q++) {
        double tau = 0.5 * (b - a) * gx[q] + 0.5 * (a + b), prod = 1.0;
        for (int k = 0; k < order; k++) {
            if (k == cur) continue;
            prod *= (tau - sigmas[i - k]) / ((double)sigmas[i - cur] - sigmas[i - k]);
        }
        sum += gw[q] * prod;
    }
    return 0.5 * (b - a) * sum;
}

void lms_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    const size_t n = s->n;
    derivative(x, eps, s->sigmas[i], n, s->tmp);
    sampler_push_history(s, s->tmp, SAMPLER_HISTORY);
    /* diffusers: order = min(step_index + 1, 4) for the coefficients, summed over the derivatives it has
     * (fewer than `order` when img2img starts part-way through the schedule). */
    int order = i + 1 < SAMPLER_HISTORY ? i + 1 : SAMPLER_HISTORY, terms = order < s->n_hist ? order : s->n_hist;
    float coeff[SAMPLER_HISTORY];
    for (int k = 0; k < terms; k++) coeff[k] = (float)lms_coefficient(s->sigmas, order, i, k);
    for (size_t j = 0; j < n; j++) { /* x += Σ_k coeff_k · d_{i-k} (newest first) */
        float acc = coeff[0] * s->hist[s->n_hist - 1][j];
        for (int k = 1; k < terms; k++) acc += coeff[k] * s->hist[s->n_hist - 1 - k][j];
        x[j] += acc;
    }
}

/* ---------------- Euler ---------------- */

void euler_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    float sigma = s->sigmas[i], dt = s->sigmas[i + 1] - sigma;
    derivative(x, eps, sigma, s->n, s->tmp);
    for (size_t j = 0; j < s->n; j++) x[j] = x[j] + s->tmp[j] * dt;
}

/* ---------------- Euler ancestral ---------------- */

void euler_a_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    float from = s->sigmas[i], to = s->sigmas[i + 1];
    float up = sqrtf(to * to * (from * from - to * to) / (from * from));
    float down = sqrtf(to * to - up * up), dt = down - from;
    derivative(x, eps, from, s->n, s->tmp);
    rng_randn(rng, s->noise, s->n);
    for (size_t j = 0; j < s->n; j++) {
        float prev = x[j] + s->tmp[j] * dt;
        x[j] = prev + s->noise[j] * up;
    }
}

/* ---------------- Heun ---------------- */

/* Evaluations alternate: a first-order (Euler) predictor, then the trapezoidal corrector. */
void heun_step(sampler *s, int i, const float *eps, float *x, sd_rng *rng) {
    const size_t n = s->n;
    float *d_prev = s->hist[0];
    if (s->heun_first) {
        float sigma = s->sigmas[i];
        s->heun_dt = s->sigmas[i + 1] - sigma;
        derivative(x, eps, sigma, n, d_prev);
        memcpy(s->saved, x, n * sizeof(float));
        for (size_t j = 0; j < n; j++) x[j] = x[j] + d_prev[j] * s->heun_dt;
        s->heun_first = 0;
    } else {
        float sigma_next = s->sigmas[i];
        derivative(x, eps, sigma_next, n, s->tmp);
        for (size_t j = 0; j < n; j++) {
            float d = (d_prev[j] + s->tmp[j]) / 2.0f;
            x[j] = s->saved[j] + d * s->heun_dt;
        }
        s->heun_first = 1;
    }
}

/* ---------------- setup ---------------- */

int sigma_sampler_setup(sampler *s) {
    const int N = s->o.steps;
    const sd_sampler k = s->o.kind;
    double *t = malloc((size_t)N * sizeof(double)), *sig = malloc((size_t)N * sizeof(double));
    if (!t || !sig) {
        free(t);
        free(sig);
        return -1;
    }
    timesteps_spaced(s->o.spacing, N, 1, t);
    if (k == SD_SAMPLER_EULER_A || k == SD_SAMPLER_HEUN) /* these classes build timesteps in float32 */
        for (int i = 0; i < N; i++) t[i] = (float)t[i];
    for (int i = 0; i < N; i++) sig[i] = sigma_at(s->sched, t[i]);
    if (s->o.karras) {
        karras_sigmas(sig[N - 1], sig[0], N, sig);
        for (int i = 0; i < N; i++) t[i] = sigma_to_t(s->sched, sig[i]);
    }
    if (k == SD_SAMPLER_HEUN) { /* [s0, s1, s1, ..., s_{N-1}, s_{N-1}, 0] */
        s->evals = 2 * N - 1;
        for (int e = 0; e < s->evals; e++) {
            int src = (e + 1) / 2;
            s->sigmas[e] = (float)sig[src];
            s->timesteps[e] = (float)t[src];
        }
        s->heun_first = 1;
    } else {
        s->evals = N;
        for (int i = 0; i < N; i++) {
            s->sigmas[i] = (float)sig[i];
            s->timesteps[i] = (float)t[i];
        }
    }
    s->sigmas[s->evals] = 0.0f;
    float max = 0.0f;
    for (int e = 0; e < s->evals; e++) {
        float sg = s->sigmas[e];
        if (sg > max) max = sg;
        s->input_scale[e] = 1.0f / sqrtf(sg * sg + 1.0f);
        s->alpha_bar[e] = 1.0f / (sg * sg + 1.0f);
    }
    s->init_sigma = s->o.spacing == SD_SPACING_LEADING ? sqrtf(max * max + 1.0f) : max;
    free(t);
    free(sig);
    return 0;
}
