/* test_util.h - a minimal check harness for the per-module test programs. Each program
 * prints one line per failed check and a closing "N passed, N failed" line; exit status 1 on failure. */
#ifndef SD_TEST_UTIL_H
#define SD_TEST_UTIL_H

#include "io/safetensors.h"

#include <cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_passed, t_failed;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (cond)                                                                                                      \
            t_passed++;                                                                                                \
        else {                                                                                                         \
            t_failed++;                                                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

#define TEST_SKIPPED 77 /* exit status ctest reads as "skipped" (SKIP_RETURN_CODE) */

/* The closing line and the exit status: 1 when a check failed, and also when none ran (a test that checks nothing
 * cannot fail, so it is a defect of its own). */
static inline int test_finish(void) {
    printf("%d passed, %d failed\n", t_passed, t_failed);
    if (t_passed + t_failed == 0) fprintf(stderr, "FAIL: no check ran\n");
    return t_failed || t_passed + t_failed == 0 ? 1 : 0;
}

static inline double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as the maximum */
    }
    return m;
}

static inline double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}

/* Opens a fixture file from tests/fixtures or aborts the test program. */
static inline void open_fixture(st_file *f, const char *name) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, name);
    if (st_open(f, path, err, sizeof err) != 0) {
        fprintf(stderr, "cannot open fixture: %s\n", err);
        exit(2);
    }
}

/* A float32 tensor of a fixture, which must exist. */
static inline const float *fixture_f32(const st_file *f, const char *name, size_t *numel) {
    const st_tensor *t = st_find(f, name);
    if (!t || t->dtype != ST_F32) {
        fprintf(stderr, "fixture tensor %s missing or not F32\n", name);
        exit(2);
    }
    if (numel) *numel = (size_t)t->numel;
    return t->data;
}

/* Reads a whole text file (malloc'd, NUL-terminated). */
static inline char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* A fixture's JSON file (tests/fixtures/<name>), with Python's -Infinity read as null. NULL when unreadable. */
static inline cJSON *fixture_json(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, name);
    char *text = read_text_file(path);
    for (char *p = text; p && (p = strstr(p, "-Infinity"));) memcpy(p, "null     ", 9);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    return root;
}

/* ---- files for the bad-input tests ---- */

/* Writes data to dir/name; returns the path (static buffer, valid until the next call). */
static inline const char *write_test_file(const char *dir, const char *name, const void *data, size_t len) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (len) fwrite(data, 1, len, f);
    fclose(f);
    return path;
}

/* A safetensors file with the given JSON header and data_len zero bytes of data. */
static inline const char *write_test_safetensors(const char *dir, const char *name, const char *header,
                                                 size_t data_len) {
    size_t hl = strlen(header);
    unsigned char *buf = calloc(1, 8 + hl + data_len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    const char *p = write_test_file(dir, name, buf, 8 + hl + data_len);
    free(buf);
    return p;
}

/* A copy in dir of fixture src (relative to tests/fixtures) with the first `flen` bytes equal to `from`
 * replaced by `to` (tlen bytes, written over them); returns the copy's path (static storage). */
static inline const char *write_edited_fixture(const char *dir, const char *src, const char *name, const void *from,
                                               size_t flen, const void *to, size_t tlen) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, src);
    FILE *f = fopen(path, "rb");
    long n = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *buf = n > 0 ? malloc((size_t)n) : NULL;
    int ok = buf && fseek(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)n, f) == (size_t)n;
    if (f) fclose(f);
    char *at = NULL;
    for (long i = 0; ok && !at && i + (long)flen <= n; i++)
        if (!memcmp(buf + i, from, flen)) at = buf + i;
    CHECK(at != NULL, "edit %s into %s", src, name);
    if (at) memcpy(at, to, tlen);
    const char *p = write_test_file(dir, name, buf ? buf : "", buf ? (size_t)n : 0);
    free(buf);
    return p;
}

/* Removes a test's temporary directory tree. */
static inline void remove_test_dir(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", dir);
}

/* ---- running the real `sd` binary ---- */
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs SD_BIN with argv (NULL-terminated, without argv[0]), standard input from in_path and standard output to
 * out_path (/dev/null when NULL); its stderr is returned in *err_text (malloc'd, may be NULL). Returns the exit
 * status, or 128 + signal when it crashed. */
static inline int run_sd_io(const char *const *args, const char *in_path, const char *out_path, char **err_text) {
    char errpath[] = "/tmp/sd-test-stderr-XXXXXX";
    int efd = mkstemp(errpath);
    pid_t pid = fork();
    if (pid == 0) {
        const char *argv[64] = {SD_BIN};
        int n = 1;
        for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
        argv[n] = NULL;
        dup2(efd, 2);
        int in = open(in_path ? in_path : "/dev/null", O_RDONLY);
        int out = out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : open("/dev/null", O_WRONLY);
        dup2(in, 0);
        dup2(out, 1);
        execv(SD_BIN, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    close(efd);
    if (err_text) *err_text = read_text_file(errpath);
    unlink(errpath);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static inline int run_sd(const char *const *args, char **err_text) { return run_sd_io(args, NULL, NULL, err_text); }

/* Runs sd and expects exit `code`, a single "sd: error:" line containing `want`, and no file at out_path. */
static inline void expect_sd_error(const char *out_path, const char *what, int code, const char *want,
                                   const char *const *args) {
    char *err = NULL;
    unlink(out_path);
    int rc = run_sd(args, &err);
    const char *nl = err ? strchr(err, '\n') : NULL;
    CHECK(rc == code && err && !strncmp(err, "sd: error: ", 11) && strstr(err, want) && nl && !nl[1],
          "%s: want exit %d and '%s', got %d: %s", what, code, want, rc, err ? err : "(no stderr)");
    CHECK(access(out_path, F_OK) != 0, "%s: an output file was written", what);
    free(err);
}

#endif /* SD_TEST_UTIL_H */
