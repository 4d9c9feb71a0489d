/* test_cli_output.c - what the `sd` binary writes and says: the output-path rules of output.h
 * (standard output, devices, FIFOs, symbolic links, read-only and writable files, colliding and
 * impossible outputs refused before any compute), the progress line (terminal width, job i/N,
 * evaluations), invalid environment variables, and the PNG `parameters` chunk listing exactly the
 * settings that change the image, for every sampler and option. */
#define _GNU_SOURCE
#include "output.h"
#include "sd.h"
#include "test_util.h"

#include <pty.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

static char tmpdir[] = "/tmp/sd-test-out-XXXXXX";
static char model[1024];

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define SMALL     "-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "2", "-s", "7"

static char *tmp_path(const char *name) {
    static char paths[8][700];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 700, "%s/%s", tmpdir, name);
    return p;
}

static int one_line(const char *s) { return s && strchr(s, '\n') == s + strlen(s) - 1; }

/* The image a path holds (0x0 when it is not a readable image). */
static void image_size(const char *path, int *w, int *h) {
    sd_pixels px;
    char err[SD_ERR_LEN];
    *w = *h = 0;
    if (sd_pixels_read(path, &px, err) == SD_OK) {
        *w = px.width;
        *h = px.height;
        sd_pixels_free(&px);
    }
}

static int is_png_64(const char *path) {
    int w, h;
    image_size(path, &w, &h);
    return w == 64 && h == 64;
}

/* Exit 2, one error line containing `want`, and no progress line: refused before any compute. */
static void expect_refused(const char *what, const char *want, const char *const *args) {
    char *err = NULL;
    int rc = run_sd(args, &err);
    CHECK(rc == 2 && err && !strncmp(err, "sd: error: ", 11) && strstr(err, want) && one_line(err),
          "%s: want exit 2 and '%s', got %d: %s", what, want, rc, err ? err : "");
    free(err);
}

/* -o - writes the PNG to standard output, piped here into a file and decoded. */
static void test_stdout(void) {
    char cmd[2000];
    const char *png = tmp_path("stdout.png");
    snprintf(cmd, sizeof cmd, "%s -m %s -p 'a dog' -W 64 -H 64 --steps 2 -s 7 -o - 2>/dev/null | cat > %s", SD_BIN,
             model, png);
    CHECK(system(cmd) == 0 && is_png_64(png), "-o - piped into a PNG decoder");
    CHECK(access("-", F_OK) != 0, "-o - writes no file named '-'");
    const char *ref = tmp_path("ref.png");
    CHECK(run_sd(ARGS(SMALL, "-o", ref), NULL) == 0, "reference run");
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", png, ref);
    CHECK(system(cmd) == 0, "standard output carries the same bytes as a file");
    expect_refused("-o - with a batch", "standard output takes one file, not a batch of 2",
                   ARGS(SMALL, "-b", "2", "-o", "-"));
}

/* Character devices are written in place and never replaced. */
static void test_device(void) {
    struct stat before, after;
    stat("/dev/null", &before);
    CHECK(run_sd(ARGS(SMALL, "-o", "/dev/null"), NULL) == 0, "-o /dev/null");
    CHECK(stat("/dev/null", &after) == 0 && S_ISCHR(after.st_mode) && after.st_rdev == before.st_rdev,
          "/dev/null is still the character device");
}

/* A FIFO with a reader: the PNG goes through it, and it stays a FIFO. */
static void test_fifo(void) {
    const char *fifo = tmp_path("fifo"), *got = tmp_path("from_fifo.png");
    CHECK(mkfifo(fifo, 0644) == 0, "mkfifo");
    pid_t reader = fork();
    if (reader == 0) {
        char cmd[1500];
        snprintf(cmd, sizeof cmd, "cat %s > %s", fifo, got);
        _exit(system(cmd) == 0 ? 0 : 1);
    }
    int rc = run_sd(ARGS(SMALL, "-o", fifo), NULL), status = 0;
    waitpid(reader, &status, 0);
    struct stat sb;
    CHECK(rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && is_png_64(got), "the PNG went through the FIFO");
    CHECK(stat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO is still a FIFO");
}

/* A symbolic link is followed (the link stays, its target gets the PNG and keeps its mode); a dangling
 * one is refused; a writable file keeps its mode; a read-only one is refused and left alone. */
static void test_links_and_modes(void) {
    const char *target = tmp_path("target.png"), *link = tmp_path("link.png");
    write_test_file(tmpdir, "target.png", "old", 3);
    chmod(target, 0640);
    CHECK(symlink("target.png", link) == 0, "symlink");
    CHECK(run_sd(ARGS(SMALL, "-o", link), NULL) == 0, "-o through a symbolic link");
    struct stat lb, tb;
    CHECK(lstat(link, &lb) == 0 && S_ISLNK(lb.st_mode), "the link is still a link");
    CHECK(stat(target, &tb) == 0 && (tb.st_mode & 07777) == 0640 && is_png_64(target),
          "the target holds the PNG, mode 0640 kept");
    const char *dangling = tmp_path("dangling.png");
    CHECK(symlink("nowhere/x.png", dangling) == 0, "dangling symlink");
    expect_refused("dangling symlink", "is a symbolic link to a missing file", ARGS(SMALL, "-o", dangling));

    const char *rw = tmp_path("rw.png");
    write_test_file(tmpdir, "rw.png", "old", 3);
    chmod(rw, 0600);
    CHECK(run_sd(ARGS(SMALL, "-o", rw), NULL) == 0 && stat(rw, &tb) == 0 && (tb.st_mode & 07777) == 0600 &&
              is_png_64(rw),
          "an existing writable file keeps its mode 0600");
    const char *ro = tmp_path("ro.png");
    write_test_file(tmpdir, "ro.png", "old", 3);
    chmod(ro, 0444);
    expect_refused("read-only file", "ro.png: cannot write: the file is read-only", ARGS(SMALL, "-o", ro));
    char *kept = read_text_file(ro);
    CHECK(kept && !strcmp(kept, "old"), "the read-only file is untouched");
    free(kept);
}

/* Impossible or colliding outputs: refused before any compute, nothing written. */
static void test_refused_outputs(void) {
    const char *dir = tmp_path("newdir/"), *same = tmp_path("same.png"), *b = tmp_path("b.png"),
               *b1 = tmp_path("b_1.png");
    expect_refused("-o newdir/", "newdir/: names a directory, not a file", ARGS(SMALL, "-o", dir));
    expect_refused("-o and --latent-out the same", "same.png: named by two outputs (-o and --latent-out)",
                   ARGS(SMALL, "-o", same, "--latent-out", same));
    expect_refused("batch outputs collide", "b_1.png: named by two outputs (--latent-out and -o)",
                   ARGS(SMALL, "-b", "2", "-o", b, "--latent-out", b1));
    const char *link = tmp_path("same_link.png");
    write_test_file(tmpdir, "same.png", "x", 1);
    CHECK(symlink("same.png", link) == 0, "symlink");
    expect_refused("outputs collide through a link", "named by two outputs",
                   ARGS(SMALL, "-o", same, "--latent-out", link));
    struct stat sb;
    CHECK(stat(tmp_path("newdir"), &sb) != 0 && stat(b, &sb) != 0 && stat(b1, &sb) != 0, "nothing written");
}

/* Set but invalid environment variables are errors naming them. */
static void test_environment(void) {
    const char *bad[] = {"abc", "1e3", "-5", "0", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("SD_MEMORY_LIMIT", bad[i], 1);
        char want[128];
        snprintf(want, sizeof want, "SD_MEMORY_LIMIT: '%s' is not a positive whole number of megabytes", bad[i]);
        expect_refused("SD_MEMORY_LIMIT", want, ARGS(SMALL, "-o", tmp_path("env.png")));
    }
    setenv("SD_MEMORY_LIMIT", "4096", 1);
    CHECK(run_sd(ARGS(SMALL, "-o", tmp_path("env.png")), NULL) == 0, "SD_MEMORY_LIMIT=4096 runs");
    unsetenv("SD_MEMORY_LIMIT");
}

/* Progress without a terminal: one line per evaluation with job i/N; Heun counts evaluations and says so. */
static void test_progress_lines(void) {
    char *err = NULL;
    CHECK(run_sd(ARGS(SMALL, "-b", "2", "-o", tmp_path("p.png")), &err) == 0, "batch run");
    CHECK(err && strstr(err, "job 1/2 step 2/2 ") && strstr(err, "job 2/2 step 1/2 "), "job i/N in progress: %s",
          err ? err : "");
    free(err);
    CHECK(run_sd(ARGS(SMALL, "--sampling-method", "heun", "-o", tmp_path("p.png")), &err) == 0, "heun run");
    CHECK(err && strstr(err, "heun evaluates the UNet 2 times per step after the first") && strstr(err, "eval 3/3 "),
          "heun evaluations: %s", err ? err : "");
    free(err);
}

/* Runs a 2-image batch on a pty `cols` wide; counts the progress segments (between carriage returns),
 * those with a bar, and the longest one in columns. */
static void progress_on_tty(int cols, int *segments, int *with_bar, int *longest) {
    struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    if (pid == 0) {
        execl(SD_BIN, SD_BIN, "-m", model, "-p", "a dog", "-W", "64", "-H", "64", "--steps", "12", "-b", "2", "-o",
              tmp_path("tty.png"), (char *)NULL);
        _exit(127);
    }
    static char buf[32768];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(master, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    buf[n] = 0;
    int status = 0;
    waitpid(pid, &status, 0);
    close(master);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run on a %d-column pty", cols);
    *segments = *with_bar = *longest = 0;
    for (char *seg = strtok(buf, "\r\n"); seg; seg = strtok(NULL, "\r\n")) {
        if (!strstr(seg, "step ")) continue;
        char *esc = strstr(seg, "\033[K");
        int len = esc ? (int)(esc - seg) : (int)strlen(seg);
        (*segments)++;
        *with_bar += strchr(seg, '|') != NULL;
        if (len > *longest) *longest = len;
    }
}

/* On a terminal the line is redrawn in place and never wider than the terminal: a bar when it fits. */
static void test_progress_width(void) {
    int segments, bars, longest;
    progress_on_tty(40, &segments, &bars, &longest);
    CHECK(segments == 24 && longest <= 39, "40 columns: %d segments, longest %d columns", segments, longest);
    progress_on_tty(100, &segments, &bars, &longest);
    CHECK(segments == 24 && bars == 24 && longest <= 99 && longest > 60,
          "100 columns: %d segments, %d bars, longest %d", segments, bars, longest);
}

/* ---------------- the parameters chunk ---------------- */

/* Appends "Key|" to a key list unless it is there already. */
static void add_key(char *keys, size_t len, const char *key) {
    char item[64];
    snprintf(item, sizeof item, "|%s|", key);
    if (!strstr(keys, item)) snprintf(keys + strlen(keys), len - strlen(keys), "%s|", key);
}

/* The keys of a "|A|B|...|" list, sorted, in the same form. */
static void sort_keys(char *keys) {
    char *items[32], copy[512];
    int n = 0;
    snprintf(copy, sizeof copy, "%s", keys);
    for (char *t = strtok(copy, "|"); t && n < 32; t = strtok(NULL, "|")) items[n++] = t;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            char *x = items[j];
            items[j] = items[j - 1];
            items[j - 1] = x;
        }
    char out[512] = "|";
    for (int i = 0; i < n; i++) {
        strcat(out, items[i]);
        strcat(out, "|");
    }
    strcpy(keys, out);
}

/* The keys of the settings line (the last line) of a parameters text, sorted. */
static void settings_keys(const char *text, char *keys, size_t len) {
    const char *p = strrchr(text, '\n') ? strrchr(text, '\n') + 1 : text;
    snprintf(keys, len, "|");
    for (const char *colon; (colon = strstr(p, ": ")) != NULL;) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(colon - p), p);
        add_key(keys, len, key);
        const char *value = colon + 2, *comma = *value == '"' ? strchr(value + 1, '"') : value; /* "quoted, values" */
        comma = comma ? strstr(comma, ", ") : NULL;
        if (!comma) break;
        p = comma + 2;
    }
    sort_keys(keys);
}

/* For each sampler and each option, exactly the settings that change the image are recorded. */
static void test_parameters_table(void) {
    char init[1024], mask[1024], lora[1024];
    snprintf(init, sizeof init, "%s/sd1-img2img/init.png", SD_FIXTURES);
    snprintf(mask, sizeof mask, "%s/sd1-img2img/mask.png", SD_FIXTURES);
    snprintf(lora, sizeof lora, "%s/sd1-lora/lora_kohya_b.safetensors:0.5", SD_FIXTURES);
    /* option, value, the key it adds, and when the sampler uses it: a always, e eta samplers, k Karras
     * samplers, s when trailing is not the sampler's default spacing */
    const struct {
        const char *opt, *val, *key;
        char when;
    } rows[] = {
        {NULL, NULL, NULL, 'a'},
        {"--eta", "0.5", "Eta DDIM", 'e'},
        {"--scheduler", "karras", "Schedule type", 'k'},
        {"--timestep-spacing", "trailing", "Timestep spacing", 's'},
        {"--prediction", "v_prediction", "Prediction", 'a'},
        {"--prediction", "epsilon", NULL, 'a'},
        {"--clip-skip", "2", "Clip skip", 'a'},
        {"--clip-skip", "1", NULL, 'a'},
        {"-i", init, "Denoising strength", 'a'},
        {"--mask", mask, "Mask blur", 'a'},
        {"--lora", lora, "LoRA", 'a'},
        {"--vae-tiling", NULL, NULL, 'a'}, /* 64x64: no tile to cut, nothing changes, nothing recorded */
    };
    const char *png = tmp_path("meta.png");
    for (int k = 0; k < SD_SAMPLER_COUNT; k++) {
        const sd_sampler_info *si = sd_sampler_get_info((sd_sampler)k);
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
            unlink(png);
            int is_mask = rows[r].opt && !strcmp(rows[r].opt, "--mask");
            const char *args[] = {"-m",
                                  model,
                                  "-p",
                                  "a dog",
                                  "-W",
                                  "64",
                                  "-H",
                                  "64",
                                  "--steps",
                                  "4",
                                  "-s",
                                  "7",
                                  "--sampling-method",
                                  si->name,
                                  "-o",
                                  png,
                                  rows[r].opt,
                                  rows[r].val,
                                  is_mask ? "-i" : NULL,
                                  init,
                                  NULL};
            char label[200], keys[512], want[512] = "|Steps|Sampler|CFG scale|Seed|Size|Model|RNG|";
            snprintf(label, sizeof label, "%s %s %s", si->name, rows[r].opt ? rows[r].opt : "",
                     rows[r].val ? rows[r].val : "");
            CHECK(run_sd(args, NULL) == 0, "%s: runs", label);
            char w = rows[r].when;
            int used = w == 'a' || (w == 'e' && si->uses_eta) || (w == 'k' && si->uses_karras) ||
                       (w == 's' && si->default_spacing != SD_SPACING_TRAILING);
            if (rows[r].key && used) add_key(want, sizeof want, rows[r].key);
            if (is_mask) add_key(want, sizeof want, "Denoising strength");
            sort_keys(want);
            char *text = output_read_png_text(png, "parameters");
            settings_keys(text ? text : "", keys, sizeof keys);
            CHECK(!strcmp(keys, want), "%s: keys %s, want %s", label, keys, want);
            free(text);
        }
    }
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 2;
    snprintf(model, sizeof model, "%s/model_f32.safetensors", SD_FIXTURES);
    test_stdout();
    test_device();
    test_fifo();
    test_links_and_modes();
    test_refused_outputs();
    test_environment();
    test_progress_lines();
    test_progress_width();
    test_parameters_table();
    remove_test_dir(tmpdir);
    return test_finish();
}
