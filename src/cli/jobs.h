/* jobs.h - the list of images a run makes: the command line's job, or one job per prompt-file line, times the
 * product of the sweep axes, times the batch count; each with its resolved settings, seed and output paths.
 * Everything here is checked before the model is used, so a bad line or value stops the run before any image.
 *
 * Prompt file: one job per line; a line starting with '-' holds options in the command line's syntax, read with
 * shell-like quoting ('single', "double" with \" and \\, backslash outside quotes); any other line is a plain
 * prompt. Blank lines and lines starting with # are skipped. Options a line does not give come from the command
 * line.
 *
 * Sweep: KEY=VALUES with KEY one of seed, steps, cfg-scale, sampling-method, scheduler, width, height, strength,
 * prompt. VALUES is a comma list ("quoted" items may hold commas); a number item may be a range: 1-8 (integers
 * 1..8), 10-30:5 (step 5), 3:9[4] or 3-9[4] (4 evenly spaced values; whole numbers truncated as AUTOMATIC1111
 * does). prompt=S/R: the first value is searched for in the prompt (and negative prompt) and replaced by each
 * value in turn. The first axis varies fastest (the grid's columns), then the second (rows), then the third.
 *
 * Output names: -o and --latent-out may hold {seed} {steps} {cfg} {sampler} {w} {h} {index} {prompt}; {index}
 * is the job's 1-based number in the whole list, zero-padded to the width of the job count; {prompt} a short
 * slug of the prompt. A name without placeholders is numbered per use: name.png, name_1.png, name_2.png, ...
 * No two jobs may write the same file. */
#ifndef SD_JOBS_H
#define SD_JOBS_H

#include "cli_options.h"

#define JOBS_MAX 100000

typedef struct {
    const char *key;       /* "seed", "cfg-scale", ... */
    const char *short_key; /* for labels: "seed", "cfg", "sampler", ... */
    const char *option;    /* its command-line option ("--seed"), NULL for prompt S/R */
    const char *label;     /* AUTOMATIC1111's X/Y/Z plot type ("Seed", "CFG Scale", "Prompt S/R") */
    const char *spec;      /* the VALUES text as given */
    char **values;         /* [n] expanded values; prompt S/R: values[0] is the text searched for */
    int n;
} sweep_axis;

typedef struct {
    job_settings s;          /* batch 1, seed resolved, prompts after S/R */
    char *png, *latent;      /* output paths (latent NULL when not asked) */
    int line;                /* prompt-file line, 0 for the command line */
    int number;              /* 1-based position in the whole list ({index}, "job i/N", --shard) */
    int coord[CLI_MAX_AXES]; /* value index on each sweep axis */
} job;

typedef struct {
    job *jobs;     /* [n] */
    int n, n_base; /* images; base jobs (prompt-file lines, or 1) */
    sweep_axis axes[CLI_MAX_AXES];
    int n_axes;
    const char *source; /* "prompt file 'x.txt'" or "command line", for messages */
    /* owned memory: strings (tokens, replaced prompts), input images by path */
    char **strings;
    int n_strings, cap_strings;
    char **image_paths;
    sd_pixels **images; /* [n_images] each its own allocation */
    int n_images;
} job_list;

/* Builds the list from the parsed command line: reads the prompt file and the init images and masks, expands
 * sweeps and batches, draws random seeds, checks every job's settings. Returns 0 or an exit status with err set
 * (naming the line or option). */
int jobs_build(job_list *L, const cli_args *a, char *err, size_t errlen);

/* Resolves every job's output names (default_w/h: the model's size, for {w} {h}) and refuses two jobs writing
 * the same file (same name, or the same existing file through a link), or more than one writing to "-". */
int jobs_name_outputs(job_list *L, int default_w, int default_h, char *err, size_t errlen);

/* Output size of a job: -W/-H, else the init image's size rounded down to 8, else the default. */
void jobs_size(const job *j, int default_w, int default_h, int *w, int *h);
/* The size of the image a job generates: jobs_size, or with a hires fix its second pass's (sd_generate's rule: scaled,
 * rounded down to 8). */
void jobs_generated_size(const job *j, int default_w, int default_h, int *w, int *h);

/* Splits a line into words with shell-like quoting. *words (malloc'd, NULL-terminated) point into *storage
 * (malloc'd). Returns the word count, or -1 with err set (unbalanced quote, trailing backslash), -2 no memory. */
int jobs_split_line(const char *line, char ***words, char **storage, char *err, size_t errlen);

/* Expands a sweep spec "KEY=VALUES" into ax (values malloc'd; free with jobs_free_axis). Returns 0 or
 * CLI_BAD_INPUT with err set. */
int jobs_parse_sweep(const char *spec, sweep_axis *ax, char *err, size_t errlen);
void jobs_free_axis(sweep_axis *ax);

/* A filesystem-safe slug of a prompt: lowercase letters and digits, runs of anything else as one '_', at most
 * max-1 bytes, "prompt" when nothing is left. */
void jobs_slug(const char *prompt, char *out, size_t max);

void jobs_free(job_list *L);

#endif
