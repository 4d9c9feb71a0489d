/* test_batch.c - batch jobs through the real `sd` binary on the sd1-tiny model: every job of a prompt file and of a
 * 2-axis sweep gives the bytes a separate run with the same settings gives; the grid holds the images and labels;
 * --skip-existing, --json, --shard, standard input, Ctrl-C in a batch; bad input refused before any image. */
#include "grid.h"
#include "output.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

static char tmpdir[] = "/tmp/sd-test-batch-XXXXXX";
static char model[1024];

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *in_dir(const char *name) {
    static char paths[16][800];
    static int next;
    char *p = paths[next++ % 16];
    snprintf(p, 800, "%s/%s", tmpdir, name);
    return p;
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    if (b && fread(b, 1, *n, f) != *n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static int same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = read_bytes(a, &na), *y = read_bytes(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static int files_in(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* Runs sd and expects success. */
static void run_ok(const char *what, const char *const *args) {
    char *err = NULL;
    int rc = run_sd(args, &err);
    CHECK(rc == 0, "%s: exit %d: %s", what, rc, err ? err : "");
    free(err);
}

/* ---- byte identity ---- */

/* A prompt file with mixed samplers, sizes, negative prompts and seeds: each PNG equals the separate run's. */
static void test_prompt_file(void) {
    const char *jobs = in_dir("jobs.txt");
    write_text(jobs,
               "# mixed jobs\n"
               "a red cat\n"
               "\n"
               "--prompt \"a dog, \\\"wet\\\"\" -n 'blurry, dark' --seed 5 --steps 3 --cfg-scale 6 --sampling-method "
               "euler_a -W 64 -H 96 -o "
               "BATCH/dog_{seed}.png\n"
               "-p 'a (house:1.3) on a hill' --sampling-method dpm++2m --scheduler karras -W 96 -H 64 -s 11 -b 2\n"
               "-p 'a tree' --sampling-method heun -n 'ugly' --cfg-scale 1 -o BATCH/tree.png\n");
    char text[1024];
    size_t n = 0;
    unsigned char *raw = read_bytes(jobs, &n);
    char *fixed = malloc(n + 512), *o = fixed; /* BATCH -> the test directory */
    for (size_t i = 0; i < n; i++) {
        if (!strncmp((char *)raw + i, "BATCH", 5)) {
            o += sprintf(o, "%s", tmpdir);
            i += 4;
        } else
            *o++ = (char)raw[i];
    }
    *o = 0;
    write_text(jobs, fixed);
    free(raw);
    free(fixed);
    const char *out = in_dir("p.png");
    run_ok("prompt file",
           ARGS("-m", model, "--prompt-file", jobs, "-W", "64", "-H", "64", "--steps", "2", "-s", "7", "-o", out));
    struct {
        const char *png;
        const char *const *args;
    } separate[] = {
        {"p.png", ARGS("-m", model, "-p", "a red cat", "-W", "64", "-H", "64", "--steps", "2", "-s", "7", "-o",
                       in_dir("s1.png"))},
        {"dog_5.png",
         ARGS("-m", model, "-p", "a dog, \"wet\"", "-n", "blurry, dark", "--seed", "5", "--steps", "3", "--cfg-scale",
              "6", "--sampling-method", "euler_a", "-W", "64", "-H", "96", "-o", in_dir("s2.png"))},
        {"p_1.png", ARGS("-m", model, "-p", "a (house:1.3) on a hill", "--sampling-method", "dpm++2m", "--scheduler",
                         "karras", "-W", "96", "-H", "64", "-s", "11", "--steps", "2", "-o", in_dir("s3.png"))},
        {"p_2.png", ARGS("-m", model, "-p", "a (house:1.3) on a hill", "--sampling-method", "dpm++2m", "--scheduler",
                         "karras", "-W", "96", "-H", "64", "-s", "12", "--steps", "2", "-o", in_dir("s4.png"))},
        {"tree.png", ARGS("-m", model, "-p", "a tree", "--sampling-method", "heun", "-n", "ugly", "--cfg-scale", "1",
                          "-W", "64", "-H", "64", "--steps", "2", "-s", "7", "-o", in_dir("s5.png"))},
    };
    for (int i = 0; i < 5; i++) {
        run_ok(separate[i].png, separate[i].args);
        snprintf(text, sizeof text, "s%d.png", i + 1);
        CHECK(same_bytes(in_dir(separate[i].png), in_dir(text)),
              "prompt file job %s: not the bytes of the separate run", separate[i].png);
    }
}

/* A 2-axis sweep (sampler x cfg) with {placeholders}: each PNG equals the separate run's. */
static void test_sweep(void) {
    run_ok("sweep",
           ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "3", "--sweep",
                "sampler=euler,ddim,lms", "--sweep", "cfg=1,7.5", "-o", in_dir("sw_{sampler}_{cfg}_{index}.png")));
    const char *samplers[] = {"euler", "ddim", "lms"}, *cfgs[] = {"1", "7.5"};
    int k = 0;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++) {
            char name[64], sep[64];
            snprintf(name, sizeof name, "sw_%s_%s_%d.png", samplers[x], cfgs[y], ++k);
            snprintf(sep, sizeof sep, "sep_%d.png", k);
            run_ok("separate", ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "3",
                                    "--sampling-method", samplers[x], "--cfg-scale", cfgs[y], "-o", in_dir(sep)));
            CHECK(same_bytes(in_dir(name), in_dir(sep)), "sweep job %s: not the bytes of the separate run", name);
        }
}

/* ---- the grid ---- */

static int ink(const sd_pixels *p, int x0, int y0, int x1, int y1) { /* dark pixels in [x0,x1) x [y0,y1) */
    int n = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) n += p->data[3 * ((size_t)y * p->width + x)] < 128;
    return n;
}

static void test_grid(void) {
    const char *grid = in_dir("grid.png");
    char *err = NULL;
    int rc = run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "1", "--sweep",
                         "seed=1-3", "--sweep", "steps=1,2", "-o", in_dir("g_{index}.png"), "--grid", grid),
                    &err);
    CHECK(rc == 0 && err && strstr(err, "wrote "), "grid run: %d %s", rc, err ? err : "");
    free(err);
    sd_pixels g = {0};
    char e[SD_ERR_LEN];
    CHECK(sd_pixels_read(grid, &g, e) == SD_OK && g.channels == 3, "grid readable: %s", e);
    if (!g.data) return;
    /* layout: a left margin for the steps labels, a top margin for the seed labels, 3 x 2 cells of 64 */
    const int top = 12 * GRID_FONT_SCALE + 2 * GRID_PAD, left = g.width - 3 * 64;
    CHECK(g.height == top + 2 * 64 && left >= 2 * GRID_PAD + 40 && left < 200, "grid size %dx%d (left margin %d)",
          g.width, g.height, left);
    int k = 0;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++) {
            char name[32];
            snprintf(name, sizeof name, "g_%d.png", ++k);
            sd_pixels im = {0};
            int same = sd_pixels_read(in_dir(name), &im, e) == SD_OK && im.width == 64 && im.height == 64;
            for (int r = 0; same && r < 64; r++)
                same = !memcmp(im.data + 3 * 64 * r,
                               g.data + 3 * ((size_t)(top + 64 * y + r) * g.width + left + 64 * x), 3 * 64);
            CHECK(same, "grid cell (%d, %d) is not image %s", x, y, name);
            sd_pixels_free(&im);
            /* a label above each column and left of each row; nothing in the corner */
            CHECK(ink(&g, left + 64 * x, 0, left + 64 * x + 64, top) > 20, "no label above column %d", x);
            if (x == 0) CHECK(ink(&g, 0, top + 64 * y, left, top + 64 * y + 64) > 20, "no label left of row %d", y);
        }
    CHECK(ink(&g, 0, 0, left, top) == 0, "ink in the empty corner");
    /* the labels differ: column 1 ("seed: 1") and column 2 ("seed: 2") are different drawings */
    int differ = 0;
    for (int y = 0; y < top; y++)
        differ |= memcmp(g.data + 3 * ((size_t)y * g.width + left), g.data + 3 * ((size_t)y * g.width + left + 64),
                         3 * 64) != 0;
    CHECK(differ, "the seed labels are all the same drawing");
    sd_pixels_free(&g);
    char *params = output_read_png_text(grid, "parameters");
    CHECK(params && strstr(params, "a dog\nSteps: 1, Sampler: LMS") &&
              strstr(params, "Script: X/Y/Z plot, X Type: Seed, X Values: 1-3, Y Type: Steps, Y Values: \"1,2\""),
          "grid parameters: %s", params ? params : "(none)");
    free(params);

    /* three axes: sub-grids stacked, each under a title */
    rc = run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "1", "--sweep", "seed=1,2",
                     "--sweep", "cfg=1,2", "--sweep", "prompt=dog,cat", "-o", in_dir("z_{index}.png"), "--grid",
                     in_dir("grid3.png")),
                &err);
    free(err);
    CHECK(rc == 0 && sd_pixels_read(in_dir("grid3.png"), &g, e) == SD_OK, "3-axis grid");
    if (g.data) {
        const int band = 12 * GRID_FONT_SCALE + 2 * GRID_PAD; /* title and top margin */
        CHECK(g.width > 128 && g.height == 2 * (2 * band + 128), "3-axis grid %dx%d", g.width, g.height);
        sd_pixels im = {0};
        int left = g.width - 128, same = sd_pixels_read(in_dir("z_8.png"), &im, e) == SD_OK;
        for (int r = 0; same && r < 64; r++) /* image 8: x 1, y 1, z 1 */
            same = !memcmp(im.data + 3 * 64 * r,
                           g.data + 3 * ((size_t)(2 * band + 128 + 2 * band + 64 + r) * g.width + left + 64), 3 * 64);
        CHECK(same, "3-axis grid: the last cell is not the last image");
        sd_pixels_free(&im);
        sd_pixels_free(&g);
    }
}

/* The value of `key` in an infotext line as AUTOMATIC1111's reader takes it: a JSON string when it starts with '"'
 * (json.loads), else the text up to the next comma (malloc'd; NULL when absent). */
static char *infotext_value(const char *text, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "%s: ", key);
    const char *v = text ? strstr(text, k) : NULL;
    if (!v) return NULL;
    v += strlen(k);
    if (*v != '"') return strndup(v, strcspn(v, ",\n"));
    const char *e = v + 1;
    while (*e && *e != '"') e += *e == '\\' && e[1] ? 2 : 1;
    char *json = strndup(v, (size_t)(e - v + 1));
    cJSON *s = cJSON_Parse(json);
    char *out = cJSON_IsString(s) ? strdup(s->valuestring) : NULL;
    cJSON_Delete(s);
    free(json);
    return out;
}

/* The grid's sweep values read back as AUTOMATIC1111 reads them: commas, colons and quotes survive. */
static void test_grid_infotext(void) {
    const char *values = "dog,cat \"x\": big";
    char spec[64];
    snprintf(spec, sizeof spec, "prompt=%s", values);
    char *err = NULL;
    int rc = run_sd(ARGS("-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "1", "-s", "1", "--sweep", spec,
                         "--sweep", "seed=7", "-o", in_dir("q_{index}.png"), "--grid", in_dir("quoted.png")),
                    &err);
    CHECK(rc == 0, "quoted sweep grid: %s", err ? err : "");
    free(err);
    char *params = output_read_png_text(in_dir("quoted.png"), "parameters");
    char *x = infotext_value(params, "X Values"), *y = infotext_value(params, "Y Values");
    CHECK(x && !strcmp(x, values) && y && !strcmp(y, "7"), "grid values read back: X '%s', Y '%s' from %s",
          x ? x : "(none)", y ? y : "(none)", params ? params : "(none)");
    free(x);
    free(y);
    free(params);
}

/* ---- scripting ---- */

static void test_scripting(void) {
    /* --json: one line per image, parseable, naming path and seed */
    const char *json = in_dir("out.jsonl");
    char *err = NULL;
    int rc = run_sd_io(ARGS("-m", model, "-p", "a cat", "-W", "64", "-H", "64", "--steps", "1", "--sweep", "seed=4-6",
                            "-o", in_dir("j_{seed}.png"), "--json"),
                       NULL, json, &err);
    free(err);
    char *lines = read_text_file(json);
    int n = 0, good = 0;
    for (char *l = lines ? strtok(lines, "\n") : NULL; l; l = strtok(NULL, "\n"), n++) {
        cJSON *o = cJSON_Parse(l);
        char want[800];
        snprintf(want, sizeof want, "%s/j_%d.png", tmpdir, 4 + n);
        good += o && cJSON_GetObjectItem(o, "seed") && cJSON_GetObjectItem(o, "seed")->valuedouble == 4 + n &&
                !strcmp(cJSON_GetObjectItem(o, "path")->valuestring, want) && cJSON_GetObjectItem(o, "seconds") &&
                cJSON_GetObjectItem(o, "job")->valueint == n + 1 && cJSON_GetObjectItem(o, "jobs")->valueint == 3;
        cJSON_Delete(o);
    }
    CHECK(rc == 0 && n == 3 && good == 3, "--json: %d lines, %d as expected", n, good);
    free(lines);

    /* --skip-existing: only the missing job runs again, the others are reported as skipped */
    unlink(in_dir("j_5.png"));
    struct stat before, after;
    stat(in_dir("j_4.png"), &before);
    rc = run_sd_io(ARGS("-m", model, "-p", "a cat", "-W", "64", "-H", "64", "--steps", "1", "--sweep", "seed=4-6", "-o",
                        in_dir("j_{seed}.png"), "--json", "--skip-existing"),
                   NULL, json, &err);
    stat(in_dir("j_4.png"), &after);
    lines = read_text_file(json);
    CHECK(rc == 0 && exists(in_dir("j_5.png")) && before.st_ino == after.st_ino && lines &&
              strstr(lines, "\"skipped\":true") && err && strstr(err, "2 jobs left out") && strstr(err, "j_5.png"),
          "--skip-existing: %d %s", rc, err ? err : "");
    free(lines);
    free(err);

    /* --skip-existing with a file that is not the job's image (text; an image of another size): made again */
    char e[SD_ERR_LEN];
    write_text(in_dir("j_4.png"), "not a png\n");
    CHECK(output_write_png(in_dir("j_6.png"), (const uint8_t *)"\x80\x80\x80", 1, 1, "x", "", e, sizeof e) == 0,
          "a 1x1 PNG");
    rc = run_sd(ARGS("-m", model, "-p", "a cat", "-W", "64", "-H", "64", "--steps", "1", "--sweep", "seed=4-6", "-o",
                     in_dir("j_{seed}.png"), "--skip-existing"),
                &err);
    sd_pixels px4 = {0}, px6 = {0};
    CHECK(rc == 0 && err && strstr(err, "j_4.png exists but is not this job's 64x64 RGB PNG: making it again") &&
              strstr(err, "j_6.png exists but is not") && strstr(err, "1 job left out") &&
              sd_pixels_read(in_dir("j_4.png"), &px4, e) == SD_OK && px4.width == 64 &&
              sd_pixels_read(in_dir("j_6.png"), &px6, e) == SD_OK && px6.width == 64,
          "--skip-existing with foreign files: %d %s", rc, err ? err : "");
    sd_pixels_free(&px4);
    sd_pixels_free(&px6);
    free(err);

    /* --shard 2/3 of 5 jobs: jobs 2 and 5 */
    run_ok("shard", ARGS("-m", model, "-p", "a cat", "-W", "64", "-H", "64", "--steps", "1", "--sweep", "seed=1-5",
                         "-o", in_dir("sh_{index}.png"), "--shard", "2/3"));
    CHECK(!exists(in_dir("sh_1.png")) && exists(in_dir("sh_2.png")) && !exists(in_dir("sh_3.png")) &&
              !exists(in_dir("sh_4.png")) && exists(in_dir("sh_5.png")),
          "--shard 2/3 made the wrong jobs");

    /* prompt file on standard input */
    const char *jobs = in_dir("stdin.txt");
    write_text(jobs, "a fish\n-p 'a bird' -s 2\n");
    rc = run_sd_io(ARGS("-m", model, "--prompt-file", "-", "-W", "64", "-H", "64", "--steps", "1", "-s", "1", "-o",
                        in_dir("in.png")),
                   jobs, NULL, &err);
    CHECK(rc == 0 && exists(in_dir("in.png")) && exists(in_dir("in_1.png")), "--prompt-file -: %d %s", rc,
          err ? err : "");
    free(err);
    run_ok("separate bird", ARGS("-m", model, "-p", "a bird", "-W", "64", "-H", "64", "--steps", "1", "-s", "2", "-o",
                                 in_dir("bird.png")));
    CHECK(same_bytes(in_dir("in_1.png"), in_dir("bird.png")), "stdin job 2: not the bytes of the separate run");
}

/* Ctrl-C during the second job of two: the first file stays, the second is never half-written, one line says how
 * many jobs were done. */
static void test_interrupt(void) {
    char jobs[800], err_path[800], first[800]; /* own copies: in_dir's 16-slot ring wraps in the polling loop */
    snprintf(jobs, sizeof jobs, "%s", in_dir("int.txt"));
    snprintf(err_path, sizeof err_path, "%s", in_dir("int.err"));
    snprintf(first, sizeof first, "%s", in_dir("i1.png"));
    char text[1200];
    snprintf(text, sizeof text,
             "-p 'quick' -W 64 -H 64 --steps 1 -o %s/i1.png\n-p 'slow' -W 512 -H 512 --steps 1000 -o %s/i2.png\n",
             tmpdir, tmpdir);
    write_text(jobs, text);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        execl(SD_BIN, SD_BIN, "-m", model, "--prompt-file", jobs, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && !exists(first); i++) usleep(50 * 1000);
    usleep(800 * 1000);
    kill(pid, SIGINT);
    int status = 0;
    waitpid(pid, &status, 0);
    char *err = read_text_file(err_path);
    const char *last = err ? strstr(err, "sd: error:") : NULL;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1 && last && strstr(last, "cancelled") &&
              strstr(last, "1 of 2 jobs done, every file written is complete") &&
              strchr(last, '\n') == last + strlen(last) - 1,
          "interrupted batch: status %d, stderr '%s'", status, err ? err : "");
    CHECK(exists(in_dir("i1.png")) && !exists(in_dir("i2.png")), "interrupted batch: files");
    free(err);
}

/* ---- bad input: one line naming the line or option, exit 2, no image ---- */

static void expect_refused(const char *what, const char *want, const char *const *args) {
    char dir[800], *err = NULL;
    snprintf(dir, sizeof dir, "%s/bad", tmpdir);
    mkdir(dir, 0755);
    int rc = run_sd(args, &err);
    CHECK(rc == 2 && err && !strncmp(err, "sd: error: ", 11) && strstr(err, want) &&
              strchr(err, '\n') == err + strlen(err) - 1,
          "%s: want exit 2 and '%s', got %d: %s", what, want, rc, err ? err : "(no stderr)");
    CHECK(files_in(dir) == 0, "%s: an image was written", what);
    free(err);
}

static void test_bad_input(void) {
    const char *o = in_dir("bad/{index}.png"), *file = in_dir("bad.txt");
    char want[900];
    write_text(file, "a cat\n-p dog --bogus 3\n");
    snprintf(want, sizeof want, "prompt file '%s' line 2: unknown option '--bogus'", file);
    expect_refused("unknown option in a line", want, ARGS("-m", model, "--prompt-file", file, "-o", o));
    write_text(file, "a cat\n\n-p 'a dog\n");
    snprintf(want, sizeof want, "prompt file '%s' line 3: unbalanced ' quote", file);
    expect_refused("unbalanced quote", want, ARGS("-m", model, "--prompt-file", file, "-o", o));
    write_text(file, "a cat\n-p 'bad \xff text'\n");
    snprintf(want, sizeof want, "prompt file '%s' line 2: prompt: invalid UTF-8", file);
    expect_refused("bad text in a line", want,
                   ARGS("-m", model, "--prompt-file", file, "-o", o, "-W", "64", "-H", "64", "--steps", "1"));
    expect_refused("empty range", "--sweep seed=9-2: '9-2' is an empty range",
                   ARGS("-m", model, "-p", "x", "--sweep", "seed=9-2", "-o", o));
    expect_refused("4 axes", "more than 3 axes",
                   ARGS("-m", model, "-p", "x", "--sweep", "seed=1,2", "--sweep", "steps=1,2", "--sweep", "cfg=1,2",
                        "--sweep", "width=64,128", "-o", o));
    expect_refused("unknown key", "--sweep eta=0,1: unknown key 'eta'",
                   ARGS("-m", model, "-p", "x", "--sweep", "eta=0,1", "-o", o));
    expect_refused("shard 3/2", "--shard: '3/2' is not i/n", ARGS("-m", model, "-p", "x", "--shard", "3/2", "-o", o));
    expect_refused("shard 0/0", "--shard: '0/0' is not i/n", ARGS("-m", model, "-p", "x", "--shard", "0/0", "-o", o));
    expect_refused(
        "colliding names", "jobs 1 and 2 both write it",
        ARGS("-m", model, "-p", "x", "--sweep", "seed=1,2", "-o", in_dir("bad/{steps}.png"), "-W", "64", "-H", "64"));
    expect_refused("unknown placeholder", "-o '", ARGS("-m", model, "-p", "x", "-o", in_dir("bad/{size}.png")));
    expect_refused("unknown placeholder name", "unknown placeholder {size}",
                   ARGS("-m", model, "-p", "x", "-o", in_dir("bad/{size}.png")));
    expect_refused("grid without sweep", "--grid: needs a sweep",
                   ARGS("-m", model, "-p", "x", "-o", o, "--grid", in_dir("bad/g.png")));
    expect_refused(
        "grid with batch", "--grid: needs one sweep of one job",
        ARGS("-m", model, "-p", "x", "-b", "2", "--sweep", "seed=1,2", "-o", o, "--grid", in_dir("bad/g.png")));
    expect_refused(
        "grid and shard", "--grid: a shard makes only part",
        ARGS("-m", model, "-p", "x", "--sweep", "seed=1,2", "--shard", "1/2", "-o", o, "--grid", in_dir("bad/g.png")));
    expect_refused("grid is an output", "named by --grid and by job 1's -o",
                   ARGS("-m", model, "-p", "x", "--sweep", "seed=1,2", "-o", in_dir("bad/g_{seed}.png"), "--grid",
                        in_dir("bad/g_1.png")));
    expect_refused("json and stdout", "--json: writes to standard output",
                   ARGS("-m", model, "-p", "x", "--json", "-o", "-"));
    write_text(file, "-p 'a <lora:one>'\n-p 'a <lora:two>'\n");
    expect_refused("different loras", "line 2: its <lora:...> tags differ",
                   ARGS("-m", model, "--prompt-file", file, "-o", o));
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 1;
    snprintf(model, sizeof model, "%s/model_f32.safetensors", SD_FIXTURES);
    test_prompt_file();
    test_sweep();
    test_grid();
    test_grid_infotext();
    test_scripting();
    test_interrupt();
    test_bad_input();
    remove_test_dir(tmpdir);
    return test_finish();
}
