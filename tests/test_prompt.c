/* test_prompt.c - AUTOMATIC1111 prompt handling against sd1-prompts: the parse (spans and weights, exact /
 * 1e-12), the chunks' token ids (exact) and multipliers (1e-7), and the conditioning tensors of the prompt
 * and the negative prompt (<= 1e-4), for every text case and every pipe case; plus the parser's own
 * documented examples. */
#include "text/conditioner.h"
#include "model/model.h"
#include "text/prompt.h"
#include "sd.h"
#include "test_util.h"

static st_file ex;
static tokenizer *tok;
static conditioner cond;

/* The parse of `text` equals the reference [[text, weight], ...] (BREAK as ["BREAK", -1]). */
static void check_parse(const char *name, const char *text, const cJSON *want) {
    prompt_parse pp;
    CHECK(prompt_parse_text(text, &pp) == 0, "%s: parse", name);
    int ok = pp.n == cJSON_GetArraySize(want), i = 0;
    for (const cJSON *w = want->child; w && ok; w = w->next, i++) {
        const char *t = cJSON_GetArrayItem(w, 0)->valuestring;
        double weight = cJSON_GetArrayItem(w, 1)->valuedouble;
        ok = !strcmp(pp.spans[i].text, t) && fabs(pp.spans[i].weight - weight) <= 1e-12;
    }
    CHECK(ok, "%s: parse of '%s' differs (%d spans, want %d)", name, text, pp.n, cJSON_GetArraySize(want));
    prompt_parse_free(&pp);
}

/* Chunks of `text` equal key.ids / key.multipliers, and its encoding equals key_cond. */
static void check_conditioning(const char *name, const char *text, const char *key, const char *cond_key,
                               int clip_skip) {
    char k[160], err[256];
    prompt_parse pp;
    prompt_chunk *chunks = NULL;
    int n = 0;
    CHECK(prompt_parse_text(text, &pp) == 0 &&
              conditioner_chunks(tok, &pp, CLIP_EOS, NULL, &chunks, &n, err, sizeof err) == 0,
          "%s: chunks: %s", name, err);
    prompt_parse_free(&pp);
    snprintf(k, sizeof k, "%s.ids", key);
    const st_tensor *ids = st_find(&ex, k);
    snprintf(k, sizeof k, "%s.multipliers", key);
    size_t nm;
    const float *mult = fixture_f32(&ex, k, &nm);
    int ok_ids = ids && ids->numel == (int64_t)n * 77, ok_mult = nm == (size_t)n * 77;
    for (int c = 0; c < n && ok_ids && ok_mult; c++)
        for (int i = 0; i < 77; i++) {
            ok_ids &= chunks[c].ids[i] == ((const int32_t *)ids->data)[c * 77 + i];
            ok_mult &= fabsf(chunks[c].weights[i] - mult[c * 77 + i]) <= 1e-7f;
        }
    CHECK(ok_ids, "%s: token ids of the %d chunks differ", name, n);
    CHECK(ok_mult, "%s: multipliers differ", name);
    free(chunks);
    conditioning cd;
    size_t nc;
    const float *want = fixture_f32(&ex, cond_key, &nc);
    CHECK(conditioner_encode(&cond, text, clip_skip, "prompt", &cd, err, sizeof err) == SD_OK, "%s: encode: %s", name,
          err);
    double d = cd.ctx && (size_t)cd.len * cd.width == nc ? max_abs_diff(cd.ctx, want, nc) : INFINITY;
    printf("%-28s %d chunk(s), conditioning max abs error %.3g\n", cond_key, n, d);
    CHECK(d <= 1e-4, "%s: conditioning max abs error %.3g (limit 1e-4)", cond_key, d);
    conditioning_free(&cd);
}

/* The published parser's own examples (from its documentation). */
static void test_documented_examples(void) {
    cJSON *cases = cJSON_Parse("{\"an (important) word\": [[\"an \", 1], [\"important\", 1.1], [\" word\", 1]],"
                               " \"(unbalanced\": [[\"unbalanced\", 1.1]],"
                               " \"\\\\(literal\\\\]\": [[\"(literal]\", 1]],"
                               " \"(unnecessary)(parens)\": [[\"unnecessaryparens\", 1.1]],"
                               " \"a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).\": [[\"a \", 1], [\"house\", "
                               "1.5730000000000004], [\" \", 1.1],"
                               "  [\"on\", 1], [\" a \", 1.1], [\"hill\", 0.55], [\", sun, \", 1.1], [\"sky\", "
                               "1.4641000000000006], [\".\", 1.1]]}");
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next) check_parse("documented", c->string, c);
    CHECK(cases != NULL, "documented examples parse as JSON");
    cJSON_Delete(cases);
}

/* The parsed text of a prompt with extra-network tags, as one string (weights all 1 here). */
static void check_stripped(const char *text, const char *want) {
    prompt_parse pp;
    CHECK(prompt_parse_text(text, &pp) == 0 && pp.n == 1 && !strcmp(pp.spans[0].text, want),
          "'%s' parses as '%s', got '%s'", text, want, pp.n ? pp.spans[0].text : "");
    prompt_parse_free(&pp);
}

/* AUTOMATIC1111's <(\w+):([^>]+)> tags: removed from the text; <lora:...> and <lyco:...> are LoRAs. */
static void test_extra_network_tags(void) {
    check_stripped("a dog <lora:style:0.8> wearing hat", "a dog  wearing hat");
    check_stripped("<lora:a><hypernet:b:1>x", "x");
    check_stripped("i <3 you, a<b, c:d>e", "i <3 you, a<b, c:d>e"); /* "<b, c:d>": "b, c" is not \w+ */
    check_stripped("x <a:> <:b> <a b:c>", "x <a:> <:b> <a b:c>");
    check_stripped("x <a:b<c:d> y", "x  y");
    sd_lora_tag tags[4];
    char err[SD_ERR_LEN];
    int n = sd_prompt_lora_tags("a <lora:one> b <hypernet:h:1> <lyco:two:-0.5> <lora:three:1.25>", tags, 4, err);
    CHECK(n == 3 && !strcmp(tags[0].name, "one") && tags[0].multiplier == 1.0f && !strcmp(tags[1].name, "two") &&
              tags[1].multiplier == -0.5f && !strcmp(tags[2].name, "three") && tags[2].multiplier == 1.25f,
          "lora tags: %d", n);
    CHECK(sd_prompt_lora_tags("plain prompt", tags, 4, err) == 0, "no tags");
    CHECK(sd_prompt_lora_tags("<lora:x:1:0.5>", tags, 4, err) == -1 && strstr(err, "'1:0.5' is not a multiplier"),
          "two multipliers: %s", err);
    CHECK(sd_prompt_lora_tags("<lora:../x:1>", tags, 4, err) == -1 && strstr(err, "without '/'"), "a path: %s", err);
    CHECK(sd_prompt_lora_tags("<lora:x:>", tags, 4, err) == -1 && strstr(err, "'' is not a multiplier"),
          "empty multiplier: %s", err);
}

int main(void) {
    char err[256], path[1024];
    open_fixture(&ex, "sd1-prompts/expected.safetensors");
    tok = tokenizer_create(err, sizeof err);
    sd_model m;
    text_encoder te;
    compute cc;
    compute_init(&cc, 0, 0, 0);
    snprintf(path, sizeof path, "%s/model_f32.safetensors", SD_FIXTURES);
    if (model_open(&m, path, NULL, err, sizeof err) != SD_OK ||
        text_encoder_load(&te, &m.store, &m.d.text[0], err, sizeof err) != SD_OK) {
        CHECK(0, "load: %s", err);
        return test_finish();
    }
    cond = (conditioner){tok, &te, &m.d, &cc, NULL};
    test_documented_examples();
    test_extra_network_tags();
    cJSON *cases = fixture_json("sd1-prompts/cases.json");
    int text_cases = 0, pipe_cases = 0;
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next) {
        const char *name = c->string, *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        char key[160];
        check_parse(name, prompt, cJSON_GetObjectItem(c, "parsed"));
        snprintf(key, sizeof key, "%s.cond", name);
        if (!strncmp(name, "text.", 5)) {
            check_conditioning(name, prompt, name, key, 1);
            text_cases++;
        } else {
            int skip = cJSON_GetObjectItem(c, "clip_skip")->valueint;
            const char *neg = cJSON_GetObjectItem(c, "negative_prompt")->valuestring;
            char neg_key[160], uncond_key[160];
            check_conditioning(name, prompt, name, key, skip);
            check_parse(name, neg, cJSON_GetObjectItem(c, "parsed_negative"));
            snprintf(neg_key, sizeof neg_key, "%s.neg", name);
            snprintf(uncond_key, sizeof uncond_key, "%s.uncond", name);
            check_conditioning(name, neg, neg_key, uncond_key, skip);
            pipe_cases++;
        }
    }
    CHECK(text_cases == 12 && pipe_cases == 10, "ran %d text and %d pipe cases", text_cases, pipe_cases);
    cJSON_Delete(cases);
    text_encoder_free(&te);
    model_close(&m);
    compute_free(&cc);
    tokenizer_free(tok);
    st_close(&ex);
    return test_finish();
}
