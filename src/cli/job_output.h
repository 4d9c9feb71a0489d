/* job_output.h - what a job leaves behind: the PNG with AUTOMATIC1111's `parameters` text (the one place that
 * decides which settings are recorded), the latent, and the --json line. */
#ifndef SD_JOB_OUTPUT_H
#define SD_JOB_OUTPUT_H

#include "jobs.h"

#include <stdio.h>

/* AUTOMATIC1111's `parameters` text for job settings s and the image made: every setting that changes the image,
 * with its key names where it has one; options the sampler ignores and defaults are not recorded (malloc'd). */
char *job_parameters(const cli_args *a, const job_settings *s, const sd_ctx *ctx, const sd_image *img, int post_scale);

/* Appends AUTOMATIC1111's postprocessing keys (Postprocess upscaler: NAME, Postprocess upscale by: S) to the text t of
 * a buffer of len bytes. */
void job_postprocess_parameters(char *t, size_t len, const char *model, int scale);

/* Writes the job's PNG: img, or post (img upscaled post_scale times) when not NULL; and the latent when asked. Returns
 * 0, or -1 with err set. */
int job_write(const cli_args *a, const job *j, const sd_ctx *ctx, const sd_image *img, const sd_image *post,
              int post_scale, char *err, size_t errlen);

/* One JSON object on one line: job, jobs, path, latent, seed, the settings, seconds (skipped: true when
 * --skip-existing left it). */
void job_json_line(FILE *f, const job *j, int jobs, int w, int h, double seconds, int skipped);

#endif
