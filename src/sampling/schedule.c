/* schedule.c - see schedule.h. References: diffusers schedulers (scaled_linear betas,
 * set_timesteps spacings, _sigma_to_t, _convert_to_karras); numpy linspace/interp semantics. */
#include "sampling/schedule.h"

#include <math.h>

#define BETA_START 0.00085
#define BETA_END   0.012

/* torch.linspace in float32: start + i·step for the first half, end - (n-1-i)·step for the rest. */
static void linspace_f32(float start, float end, int n, float *out) {
    float step = (end - start) / (float)(n - 1);
    int half = n / 2;
    for (int i = 0; i < n; i++) out[i] = i < half ? start + step * (float)i : end - step * (float)(n - 1 - i);
}

void schedule_init(noise_schedule *s) {
    float root[TRAIN_STEPS];
    linspace_f32((float)sqrt(BETA_START), (float)sqrt(BETA_END), TRAIN_STEPS, root);
    float acc = 1.0f;
    for (int i = 0; i < TRAIN_STEPS; i++) {
        float beta = root[i] * root[i];
        acc *= 1.0f - beta;
        s->alphas_cumprod[i] = acc;
        s->sigmas[i] = sqrtf((1.0f - acc) / acc);
        s->log_sigmas[i] = logf(s->sigmas[i]);
    }
}

/* numpy.linspace(start, stop, n) in float64: start + i·step, last value exactly stop. */
static double np_linspace(double start, double stop, int n, int i) {
    if (n == 1) return start;
    double step = (stop - start) / (double)(n - 1);
    return i == n - 1 ? stop : start + (double)i * step;
}

void timesteps_linspace(int n, double *t) {
    for (int i = 0; i < n; i++) t[i] = np_linspace(0.0, TRAIN_STEPS - 1, n, n - 1 - i);
}

void timesteps_leading(int n, int offset, double *t) {
    int ratio = TRAIN_STEPS / n;
    for (int i = 0; i < n; i++) t[i] = (double)((n - 1 - i) * ratio + offset);
}

void timesteps_trailing(int n, double *t) {
    double ratio = (double)TRAIN_STEPS / n;
    for (int i = 0; i < n; i++) t[i] = nearbyint(TRAIN_STEPS - (double)i * ratio) - 1.0;
}

void timesteps_spaced(sd_spacing k, int n, int offset, double *t) {
    if (k == SD_SPACING_LEADING)
        timesteps_leading(n, offset, t);
    else if (k == SD_SPACING_TRAILING)
        timesteps_trailing(n, t);
    else
        timesteps_linspace(n, t);
}

double sigma_at(const noise_schedule *s, double t) {
    if (t <= 0) return s->sigmas[0];
    if (t >= TRAIN_STEPS - 1) return s->sigmas[TRAIN_STEPS - 1];
    int lo = (int)floor(t);
    double w = t - lo, a = s->sigmas[lo], b = s->sigmas[lo + 1];
    /* numpy.interp: slope·(x - xp[j]) + fp[j] */
    return (b - a) * w + a;
}

double sigma_to_t(const noise_schedule *s, double sigma) {
    double log_sigma = log(sigma > 1e-10 ? sigma : 1e-10);
    int low = 0;
    for (int i = 0; i < TRAIN_STEPS; i++)
        if (log_sigma - s->log_sigmas[i] >= 0) low = i; /* last index at or below */
    if (low > TRAIN_STEPS - 2) low = TRAIN_STEPS - 2;
    double lo = s->log_sigmas[low], hi = s->log_sigmas[low + 1];
    double w = (lo - log_sigma) / (lo - hi);
    w = w < 0 ? 0 : w > 1 ? 1 : w;
    return (1.0 - w) * low + w * (low + 1);
}

void karras_sigmas(double sigma_min, double sigma_max, int n, double *out) {
    const double rho = 7.0;
    double min_inv = pow(sigma_min, 1.0 / rho), max_inv = pow(sigma_max, 1.0 / rho);
    for (int i = 0; i < n; i++) {
        double ramp = np_linspace(0.0, 1.0, n, i);
        out[i] = pow(max_inv + ramp * (min_inv - max_inv), rho);
    }
}
