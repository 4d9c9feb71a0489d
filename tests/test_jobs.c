/* test_jobs.c - the job list without a model: shell-like splitting of prompt-file lines, sweep values (lists,
 * ranges, steps, counts), the expansion order, output names (placeholders, numbering, collisions), and the
 * messages for bad lines and values. */
#include "cli_options.h"
#include "jobs.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/sd-test-jobs-XXXXXX";

static void test_split(void) {
    char **w, *storage, err[256];
    int n = jobs_split_line("--prompt \"a \\\"wet\\\" dog, c:\\\\x\" -n 'no \"quotes\" here' a\\ b   --seed=5", &w,
                            &storage, err, sizeof err);
    CHECK(n == 6, "split: %d words", n);
    if (n == 6) {
        CHECK(!strcmp(w[0], "--prompt") && !strcmp(w[1], "a \"wet\" dog, c:\\x"), "double quotes: '%s'", w[1]);
        CHECK(!strcmp(w[2], "-n") && !strcmp(w[3], "no \"quotes\" here"), "single quotes: '%s'", w[3]);
        CHECK(!strcmp(w[4], "a b") && !strcmp(w[5], "--seed=5"), "backslash-space: '%s'", w[4]);
    }
    if (n > 0) {
        free(w);
        free(storage);
    }
    n = jobs_split_line("x\"y z\"w 'p'q \"\\n\"", &w, &storage, err, sizeof err);
    CHECK(n == 3 && !strcmp(w[0], "xy zw") && !strcmp(w[1], "pq") && !strcmp(w[2], "\\n"), "adjacent quotes join: %d",
          n);
    if (n > 0) {
        free(w);
        free(storage);
    }
    CHECK(jobs_split_line("--prompt \"a cat", &w, &storage, err, sizeof err) == -1 &&
              strstr(err, "unbalanced \" quote"),
          "unbalanced \": %s", err);
    CHECK(jobs_split_line("-n 'a", &w, &storage, err, sizeof err) == -1 && strstr(err, "unbalanced ' quote"),
          "unbalanced ': %s", err);
    CHECK(jobs_split_line("-p a\\", &w, &storage, err, sizeof err) == -1 && strstr(err, "backslash"),
          "trailing backslash: %s", err);
}

/* The values a sweep spec expands to, joined with '|'. */
static const char *values(const char *spec, char *buf, size_t len) {
    sweep_axis ax;
    char err[400];
    if (jobs_parse_sweep(spec, &ax, err, sizeof err)) {
        snprintf(buf, len, "ERROR %s", err);
        return buf;
    }
    buf[0] = 0;
    for (int i = 0; i < ax.n; i++) {
        strncat(buf, i ? "|" : "", len - strlen(buf) - 1);
        strncat(buf, ax.values[i], len - strlen(buf) - 1);
    }
    jobs_free_axis(&ax);
    return buf;
}

static void expect_values(const char *spec, const char *want) {
    char buf[1024];
    CHECK(!strcmp(values(spec, buf, sizeof buf), want), "--sweep %s: got '%s', want '%s'", spec, buf, want);
}

static void expect_sweep_error(const char *spec, const char *want) {
    char buf[1024];
    values(spec, buf, sizeof buf);
    CHECK(!strncmp(buf, "ERROR --sweep ", 14) && strstr(buf, want), "--sweep %s: got '%s', want error '%s'", spec, buf,
          want);
}

static void test_sweep_values(void) {
    expect_values("seed=1-8", "1|2|3|4|5|6|7|8");
    expect_values("steps=10-30:5", "10|15|20|25|30");
    expect_values("steps=10-28:5", "10|15|20|25");
    expect_values("cfg-scale=3:9[4]", "3|5|7|9");
    expect_values("seed=3-9[4]", "3|5|7|9");
    expect_values("steps=1-10[4]", "1|4|7|10"); /* int(linspace): 1, 4, 7, 10 */
    expect_values("steps=1-9[4]", "1|3|6|9");   /* 1, 3.67, 6.33, 9 truncated */
    expect_values("cfg=5-6:0.5", "5|5.5|6");
    expect_values("cfg=1-2:0.1", "1|1.1|1.2|1.3|1.4|1.5|1.6|1.7|1.8|1.9|2"); /* no drift past the end */
    expect_values("cfg=7.5", "7.5");
    expect_values("seed=1,5-6, 9", "1|5|6|9");
    expect_values("sampler=euler, dpm++2m,lms", "euler|dpm++2m|lms");
    expect_values("scheduler=default,karras", "default|karras");
    expect_values("width=64-128:32", "64|96|128");
    expect_values("prompt=dog,\"cat, black\",fox", "dog|cat, black|fox");
    expect_values("steps=5:5[1]", "5");
    expect_sweep_error("seed=8-1", "empty range");
    expect_sweep_error("steps=3:9[0]", "empty range");
    expect_sweep_error("steps=1-5:0", "step must be positive");
    expect_sweep_error("steps=1-5:x", "step after ':'");
    expect_sweep_error("steps=1:5", "not a number or a range");
    expect_sweep_error("steps=a-b", "not a number or a range");
    expect_sweep_error("steps=0-2", "--steps: 0 is outside 1..1000");
    expect_sweep_error("width=60,64", "--width: '60' is not a multiple of 8");
    expect_sweep_error("sampler=euler,bogus", "unknown sampler 'bogus'");
    expect_sweep_error("scheduler=exponential", "unknown value 'exponential'");
    expect_sweep_error("foo=1,2", "unknown key 'foo' (one of: seed, steps");
    expect_sweep_error("seed", "not KEY=VALUES");
    expect_sweep_error("seed=1,,2", "an empty value");
    expect_sweep_error("prompt=dog", "at least one replacement");
    expect_sweep_error("prompt=\"dog,cat", "unbalanced \" quote");
    expect_sweep_error("seed=1-200000", "more than 100000 values");
}

/* ---- job lists from command-line tokens ---- */

static int build(job_list *L, cli_args *a, char *err, const char *const *tok) {
    int n = 0;
    while (tok[n]) n++;
    cli_defaults(a);
    int rc = cli_parse(n, (char *const *)tok, a, &a->job, err, 512);
    if (!rc) rc = jobs_build(L, a, err, 512);
    if (!rc) rc = jobs_name_outputs(L, 512, 512, err, 512);
    return rc;
}

#define TOKENS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_build_error(const char *what, const char *want, const char *const *tok) {
    job_list L;
    cli_args a;
    char err[512] = "";
    memset(&L, 0, sizeof L);
    int rc = build(&L, &a, err, tok);
    CHECK(rc == CLI_BAD_INPUT && strstr(err, want), "%s: want '%s', got %d '%s'", what, want, rc, err);
    jobs_free(&L);
    cli_free(&a);
}

static void test_expansion(void) {
    job_list L;
    cli_args a;
    char err[512] = "";
    int rc =
        build(&L, &a, err,
              TOKENS("-p", "a dog in snow", "-n", "dog hair", "-s", "10", "-b", "2", "--sweep", "cfg=5,7", "--sweep",
                     "prompt=dog,cat", "-o", "x/{index}_{seed}_{cfg}_{sampler}_{w}x{h}_{steps}_{prompt}.png"));
    CHECK(rc == 0 && L.n == 8, "2 x 2 x batch 2 = 8 jobs: %d %s", L.n, err);
    if (rc == 0 && L.n == 8) {
        /* first axis fastest, batch innermost */
        CHECK(L.jobs[0].s.gen.cfg_scale == 5 && L.jobs[0].s.gen.seed == 10 && L.jobs[1].s.gen.seed == 11 &&
                  L.jobs[2].s.gen.cfg_scale == 7,
              "order: cfg %g seed %llu", L.jobs[2].s.gen.cfg_scale, (unsigned long long)L.jobs[1].s.gen.seed);
        CHECK(!strcmp(L.jobs[3].s.gen.prompt, "a dog in snow") && !strcmp(L.jobs[4].s.gen.prompt, "a cat in snow") &&
                  !strcmp(L.jobs[4].s.gen.negative_prompt, "cat hair"),
              "prompt S/R: '%s' / '%s'", L.jobs[4].s.gen.prompt, L.jobs[4].s.gen.negative_prompt);
        CHECK(!strcmp(L.jobs[0].png, "x/1_10_5_lms_512x512_20_a_dog_in_snow.png"), "placeholders: %s", L.jobs[0].png);
        CHECK(!strcmp(L.jobs[7].png, "x/8_11_7_lms_512x512_20_a_cat_in_snow.png"), "placeholders: %s", L.jobs[7].png);
        CHECK(L.jobs[5].coord[0] == 0 && L.jobs[5].coord[1] == 1 && L.jobs[7].number == 8, "coordinates");
    }
    jobs_free(&L);
    cli_free(&a);

    rc = build(&L, &a, err,
               TOKENS("-p", "x", "--sweep", "seed=1-12", "-o", "{index}.png", "-W", "64", "-H", "128", "--latent-out",
                      "l.st"));
    CHECK(rc == 0 && L.n == 12 && !strcmp(L.jobs[0].png, "01.png") && !strcmp(L.jobs[11].png, "12.png"),
          "{index} padded: %s", rc ? err : L.jobs[0].png);
    CHECK(rc == 0 && !strcmp(L.jobs[0].latent, "l.st") && !strcmp(L.jobs[1].latent, "l_1.st") &&
              !strcmp(L.jobs[11].latent, "l_11.st"),
          "numbered latents: %s", rc ? err : L.jobs[1].latent);
    jobs_free(&L);
    cli_free(&a);

    rc = build(&L, &a, err, TOKENS("-p", "x", "-b", "3", "-o", "dir/out"));
    CHECK(rc == 0 && !strcmp(L.jobs[0].png, "dir/out") && !strcmp(L.jobs[2].png, "dir/out_2"),
          "numbering without extension");
    jobs_free(&L);
    cli_free(&a);

    char slug[49];
    jobs_slug("  A photo of <lora:x:0.5> (Cats:1.2), Ünïcode!! ", slug, sizeof slug);
    CHECK(!strcmp(slug, "a_photo_of_lora_x_0_5_cats_1_2_n_code"), "slug: %s", slug);
    jobs_slug("!!!", slug, sizeof slug);
    CHECK(!strcmp(slug, "prompt"), "empty slug: %s", slug);
    jobs_slug("a very long prompt that goes on and on and on past the limit of the slug", slug, sizeof slug);
    CHECK(strlen(slug) == 48, "slug length %zu", strlen(slug));
}

static void test_bad_input(void) {
    expect_build_error("axes", "more than 3 axes",
                       TOKENS("-p", "x", "--sweep", "seed=1,2", "--sweep", "steps=1,2", "--sweep", "cfg=1,2", "--sweep",
                              "width=64,128"));
    expect_build_error("same axis twice", "seed is already an axis",
                       TOKENS("-p", "x", "--sweep", "seed=1,2", "--sweep", "seed=3"));
    expect_build_error("collision placeholder", "20.png: jobs 1 and 2 both write it (use {index} or {seed} in -o)",
                       TOKENS("-p", "x", "--sweep", "seed=1,2", "-o", "{steps}.png"));
    expect_build_error("png vs latent", "a_1.png: named by two outputs (--latent-out and -o) of jobs 1 and 2",
                       TOKENS("-p", "x", "-b", "2", "-o", "a.png", "--latent-out", "a_1.png"));
    expect_build_error("placeholder", "unknown placeholder {sede}", TOKENS("-p", "x", "-o", "{sede}.png"));
    expect_build_error("stdout batch", "standard output takes one file, not a batch of 2",
                       TOKENS("-p", "x", "-b", "2", "-o", "-"));
    expect_build_error("strength without image", "strength needs an init image",
                       TOKENS("-p", "x", "--sweep", "strength=0.5,0.7"));
    expect_build_error("S/R not in prompt", "'cat' is not in the prompt",
                       TOKENS("-p", "a dog", "--sweep", "prompt=cat,fox"));
    expect_build_error("no prompt", "no prompt given", TOKENS("--sweep", "seed=1,2"));
    expect_build_error("shard 3/2", "--shard: '3/2' is not i/n", TOKENS("-p", "x", "--shard", "3/2"));
    expect_build_error("shard 0/0", "--shard: '0/0' is not i/n", TOKENS("-p", "x", "--shard", "0/0"));
    expect_build_error("shard text", "--shard: '1/x' is not i/n", TOKENS("-p", "x", "--shard", "1/x"));
    expect_build_error("too many jobs", "more than 100000 images",
                       TOKENS("-p", "x", "--sweep", "seed=1-1000", "--sweep", "steps=1-200"));

    /* prompt-file lines: the line number and the problem */
    char path[700];
    snprintf(path, sizeof path, "%s/jobs.txt", tmpdir);
    static const struct {
        const char *text, *want;
    } lines[] = {
        {"a cat\n\n# comment\n--prompt x --bogus 1\n", "prompt file '%s' line 4: unknown option '--bogus'"},
        {"a cat\n--prompt \"x\n", "prompt file '%s' line 2: unbalanced \" quote"},
        {"-p x --steps 0\n", "prompt file '%s' line 1: --steps: 0 is outside 1..1000"},
        {"-p x --model m.safetensors\n", "prompt file '%s' line 1: --model applies to the whole run"},
        {"-p x --lora a.safetensors\n", "prompt file '%s' line 1: --lora applies to the whole run"},
        {"-p x --low-memory\n", "prompt file '%s' line 1: --low-memory applies to the whole run"},
        {"-p x --precision bf16\n", "prompt file '%s' line 1: --precision applies to the whole run"},
        {"-n 'only a negative'\n", "prompt file '%s' line 1: no prompt (--prompt TEXT)"},
        {"-p x --mask m.png\n", "prompt file '%s' line 1: --mask: needs an init image"},
        {"-p x -i /nonexistent/a.png\n", "prompt file '%s' line 1: --init-img: "},
        {"# nothing\n\n", "--prompt-file: '%s' has no jobs"},
        {"a\n-p b -o same.png -b 2\n-p c -o same_1.png\n", "same_1.png: jobs 3 and 4 both write it"},
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        FILE *f = fopen(path, "w");
        fputs(lines[i].text, f);
        fclose(f);
        char want[900];
        snprintf(want, sizeof want, lines[i].want, path);
        expect_build_error(lines[i].text, want, TOKENS("--prompt-file", path));
    }
    expect_build_error("missing prompt file", "--prompt-file: cannot open '/nonexistent/jobs.txt'",
                       TOKENS("--prompt-file", "/nonexistent/jobs.txt"));
}

static void test_prompt_file(void) {
    char path[700], err[512] = "";
    snprintf(path, sizeof path, "%s/jobs.txt", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("  a red cat  \r\n# skipped\n\n--prompt 'a dog' -n \"blurry, dark\" --seed 5 -W 64 --sampling-method euler_a "
          "-b 2 -o d.png\n"
          "-s -1 --prompt=x\n",
          f);
    fclose(f);
    job_list L;
    cli_args a;
    int rc = build(&L, &a, err, TOKENS("--prompt-file", path, "-s", "7", "--steps", "3", "-n", "ugly"));
    CHECK(rc == 0 && L.n == 4 && L.n_base == 3, "3 lines, 4 images: %d %s", L.n, err);
    if (rc == 0 && L.n == 4) {
        const job *j = L.jobs;
        CHECK(!strcmp(j[0].s.gen.prompt, "a red cat") && j[0].line == 1 && j[0].s.gen.seed == 7 &&
                  j[0].s.gen.steps == 3 && !strcmp(j[0].s.gen.negative_prompt, "ugly") &&
                  !strcmp(j[0].png, "output.png"),
              "plain line: '%s' seed %llu", j[0].s.gen.prompt, (unsigned long long)j[0].s.gen.seed);
        CHECK(!strcmp(j[1].s.gen.prompt, "a dog") && !strcmp(j[1].s.gen.negative_prompt, "blurry, dark") &&
                  j[1].s.gen.seed == 5 && j[2].s.gen.seed == 6 && j[1].s.gen.width == 64 &&
                  j[1].s.gen.sampler == SD_SAMPLER_EULER_A && j[1].line == 4 && j[1].s.gen.steps == 3 &&
                  !strcmp(j[1].png, "d.png") && !strcmp(j[2].png, "d_1.png"),
              "option line");
        CHECK(!strcmp(j[3].s.gen.prompt, "x") && !strcmp(j[3].png, "output_1.png"), "third line: %s", j[3].png);
    }
    jobs_free(&L);
    cli_free(&a);
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 1;
    test_split();
    test_sweep_values();
    test_expansion();
    test_bad_input();
    test_prompt_file();
    remove_test_dir(tmpdir);
    return test_finish();
}
