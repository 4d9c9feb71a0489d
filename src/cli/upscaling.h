/* upscaling.h - the command line's upscale models: --upscale-model (every image upscaled before it is written, or
 * `sd --upscale-model FILE -i IN -o OUT` without a diffusion model) and --hires-upscaler (the hires fix's kind and
 * model). Nothing here prints: failures come back as an exit status and one line of text. */
#ifndef SD_CLI_UPSCALING_H
#define SD_CLI_UPSCALING_H

#include "cli_options.h"
#include "jobs.h"
#include "sd.h"

/* Loads --upscale-model into *post and --hires-upscaler FILE into *hires (one object when they name the same
 * file; NULL for what is not asked). Returns 0 or an exit status with err set. */
int upscalers_load(const cli_args *a, sd_upscaler **post, sd_upscaler **hires, char *err, size_t errlen);

/* Every job's hires upscaler: --hires-upscaler's kind (latent by default, AUTOMATIC1111's) and model. Returns 1 when
 * --hires-upscaler was given but no job has a hires scale (it does nothing), else 0. */
int upscalers_set_hires(const cli_args *a, job_list *L, sd_upscaler *model);

/* That every job's image (at its size after the hires fix) can be upscaled upscale_repeats times by post in the
 * memory available: checked before the first image is made. Returns 0 or an exit status with err set. */
int upscalers_check_jobs(const cli_args *a, const job_list *L, const sd_ctx *ctx, const sd_upscaler *post, char *err,
                         size_t errlen);

/* out = in upscaled `repeats` times by u (the first pass takes in as it is: grey, RGBA); *scale the total factor. */
sd_status upscale_repeated(sd_upscaler *u, const sd_pixels *in, int repeats, sd_cancel_fn cancel, sd_image *out,
                           int *scale, char *err);

/* sd --upscale-model FILE -i IN -o OUT: the image upscaled --upscale-repeats times and written with IN's parameters
 * text (when it has one) and AUTOMATIC1111's postprocessing keys. Returns 0 or an exit status with err set. */
int upscale_file(const cli_args *a, sd_cancel_fn cancel, char *err, size_t errlen);

#endif
