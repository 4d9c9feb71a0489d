/* fuzz_jobs.c - libFuzzer harness for what a prompt file and --sweep read: every line of the input is split with
 * the shell-like quoting and parsed as a job line, read as a sweep spec, slugged, and used as an output name
 * template. */
#include "cli_options.h"
#include "jobs.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_line(char *line) {
    char err[512], **words, *storage;
    int n = jobs_split_line(line, &words, &storage, err, sizeof err);
    if (n >= 0) {
        cli_args a;
        cli_defaults(&a);
        (void)cli_parse(n, words, NULL, &a.job, err, sizeof err); /* a line: job options only */
        free(words);
        free(storage);
    }
    sweep_axis ax;
    if (jobs_parse_sweep(line, &ax, err, sizeof err) == 0) {
        if (ax.n < 1 || ax.n > JOBS_MAX) __builtin_trap();
        jobs_free_axis(&ax);
    }
    char slug[49];
    jobs_slug(line, slug, sizeof slug);
    for (const char *p = slug; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_')) __builtin_trap();
    cli_args a; /* the line as an output name */
    job_list L;
    cli_defaults(&a);
    a.job.gen.prompt = line;
    a.job.output = line;
    a.job.batch = 2;
    if (jobs_build(&L, &a, err, sizeof err) == 0 && jobs_name_outputs(&L, 512, 512, err, sizeof err) == 0)
        if (!L.jobs[0].png || !L.jobs[1].png) __builtin_trap();
    jobs_free(&L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        check_line(line);
    }
    free(text);
    return 0;
}
