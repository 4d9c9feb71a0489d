/* cli_options.h - the command line's options: names (stable-diffusion.cpp's), strict value parsing, and which
 * options belong to one image job (a prompt-file line or a sweep may set them) and which to the whole run
 * (the model is loaded once per run). Parsing never prints: errors come back as one line of text. */
#ifndef SD_CLI_OPTIONS_H
#define SD_CLI_OPTIONS_H

#include "sd.h"

#include <stddef.h>

#define CLI_MAX_LORAS 32
#define CLI_MAX_AXES  3

/* Result of parsing: 0 ok, or an exit status. */
enum { CLI_OK = 0, CLI_RUNTIME = 1, CLI_BAD_INPUT = 2, CLI_HELP = -2, CLI_VERSION = -3 };

/* The exit status for a library status: 0 ok, 2 bad input (arguments, files, formats, models), 1 otherwise. */
int cli_exit_code(sd_status s);

/* Whether s starts as a number may: a digit, sign or point (no leading space, which strtol and strtod would skip). */
int cli_number_start(const char *s);

/* One job's settings: everything a prompt-file line or a sweep axis may change. Strings are borrowed (argv, the
 * prompt file's tokens, or a sweep's replacements), never owned here. */
typedef struct {
    sd_gen_params gen;
    const char *output, *latent_out; /* templates: may hold {seed}-style placeholders */
    const char *init_path, *mask_path;
    const char *control_path; /* --control-image FILE */
    int batch;                /* images from this job: seeds seed, seed+1, ... */
    int seed_given;           /* 0: a random seed is drawn for the job */
    int strength_given;       /* --strength was given (it does nothing without an init image) */
} job_settings;

/* The run: the model and what is loaded with it, and how the jobs are made and reported. */
typedef struct {
    const char *model, *lora_dir, *vae, *taesd;
    const char *embd_dir;             /* --embd-dir DIR: textual-inversion embeddings */
    const char *control_net;          /* --control-net FILE: a ControlNet */
    const char *upscale_model;        /* --upscale-model FILE: upscale every image (or -i alone) with it */
    int upscale_repeats;              /* --upscale-repeats N (default 1) */
    const char *hires_upscaler;       /* --hires-upscaler latent|lanczos|FILE */
    const char *prompt_file;          /* --prompt-file FILE ("-" = standard input) */
    const char *sweeps[CLI_MAX_AXES]; /* --sweep KEY=VALUES, in order (a fourth is refused while parsing) */
    int n_sweeps;
    const char *grid;                /* --grid FILE.png */
    int shard_index, shard_count;    /* --shard i/n (1-based); 0/0 = all jobs */
    sd_lora loras[CLI_MAX_LORAS];    /* --lora files, then the prompts' <lora:NAME:MULT> tags */
    char *lora_paths[CLI_MAX_LORAS]; /* [n_loras] the paths, malloc'd */
    int n_loras;
    int threads, verbose, info, json, skip_existing, low_memory;
    sd_precision precision; /* --precision f32|bf16 */
    job_settings job;       /* the command line's job: defaults for every prompt-file line */
} cli_args;

/* Resets a to the defaults (no prompt, output.png, one image, random seed). */
void cli_defaults(cli_args *a);

/* Parses tokens tok[0..n) as options. With a == NULL (a prompt-file line) only job options are accepted and
 * run-wide ones are refused by name. Returns CLI_OK, CLI_HELP / CLI_VERSION (-h, --version), or an exit status
 * with err set. */
int cli_parse(int n, char *const *tok, cli_args *a, job_settings *j, char *err, size_t errlen);

/* Sets one job option (long or short name) from text, as the command line would. Returns CLI_OK or
 * CLI_BAD_INPUT with err set. */
int cli_job_option(job_settings *j, const char *opt, const char *val, char *err, size_t errlen);

/* Adds a LoRA (path copied). Returns CLI_OK or an exit status with err set. */
int cli_add_lora(cli_args *a, const char *what, const char *path, size_t len, double multiplier, char *err,
                 size_t errlen);

/* Frees what cli_add_lora copied. */
void cli_free(cli_args *a);

/* "lms, ddpm, ..." from the library's sampler table. */
const char *cli_sampler_list(void);

#endif
