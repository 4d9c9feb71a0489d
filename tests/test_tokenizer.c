/* test_tokenizer.c - CLIP tokenizer against transformers' ids for the 16 fixture prompts,
 * speed on a 100 kB prompt, and invalid UTF-8. */
#include "test_util.h"
#include "text/tokenizer.h"

#include <cJSON.h>
#include <time.h>

static int ids_equal(const cJSON *want, const int *got, long n) {
    if (cJSON_GetArraySize(want) != n) return 0;
    long i = 0;
    for (const cJSON *it = want->child; it; it = it->next, i++)
        if (it->valueint != got[i]) return 0;
    return 1;
}

static void test_cases(const tokenizer *tok) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/tokenizer_cases.json", SD_FIXTURES);
    char *text = read_text_file(path);
    cJSON *root = cJSON_Parse(text);
    CHECK(root && cJSON_GetArraySize(root) == 16, "16 tokenizer cases");
    for (const cJSON *c = root ? root->child : NULL; c; c = c->next) {
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        int raw[4096], ids[CLIP_CONTEXT];
        long n = tokenizer_encode(tok, prompt, raw, 4096, err, sizeof err);
        CHECK(ids_equal(cJSON_GetObjectItem(c, "raw_ids"), raw, n), "case %s: raw_ids differ (%ld tokens)", c->string,
              n);
        CHECK(tokenizer_encode_padded(tok, prompt, ids, CLIP_CONTEXT, CLIP_EOS, err, sizeof err) == 0, "case %s padded",
              c->string);
        CHECK(ids_equal(cJSON_GetObjectItem(c, "ids"), ids, CLIP_CONTEXT), "case %s: ids differ", c->string);
    }
    cJSON_Delete(root);
    free(text);
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void test_speed(const tokenizer *tok) {
    const size_t n = 100 * 1024;
    char *words = malloc(n + 1), *one_word = malloc(n + 1);
    const char *phrase = "a photograph of an astronaut riding a horse, 4k, trending on artstation; ";
    for (size_t i = 0; i < n; i++) {
        words[i] = phrase[i % strlen(phrase)];
        one_word[i] = (char)('a' + (i * 7) % 26);
    }
    words[n] = one_word[n] = 0;
    int *ids = malloc(sizeof(int) * n * 2), padded[CLIP_CONTEXT];
    char err[256];
    double t0 = seconds();
    long count = tokenizer_encode(tok, words, ids, (long)n * 2, err, sizeof err);
    double t_words = seconds() - t0;
    t0 = seconds();
    long count1 = tokenizer_encode(tok, one_word, ids, (long)n * 2, err, sizeof err);
    double t_one = seconds() - t0;
    t0 = seconds();
    tokenizer_encode_padded(tok, words, padded, CLIP_CONTEXT, CLIP_EOS, err, sizeof err);
    double t_pad = seconds() - t0;
    CHECK(count > 10000 && t_words < 0.1, "100 kB of words: %ld tokens in %.3f s", count, t_words);
    CHECK(count1 > 1000 && t_one < 0.1, "100 kB single word: %ld tokens in %.3f s", count1, t_one);
    CHECK(padded[0] == CLIP_BOS && padded[76] == CLIP_EOS && padded[75] != CLIP_EOS && t_pad < 0.1,
          "100 kB prompt truncated to 75 tokens in %.3f s", t_pad);
    free(words);
    free(one_word);
    free(ids);
}

static void test_invalid_utf8(const tokenizer *tok) {
    const char *bad[] = {"abc\xff", "caf\xc3", "\xc0\xaf", "\xed\xa0\x80", "ok \xf4\x90\x80\x80", "\x80"};
    int ids[CLIP_CONTEXT];
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        CHECK(tokenizer_encode_padded(tok, bad[i], ids, CLIP_CONTEXT, CLIP_EOS, err, sizeof err) == -1 &&
                  strstr(err, "invalid UTF-8 at byte"),
              "invalid UTF-8 case %zu: '%s'", i, err);
    }
    CHECK(tokenizer_encode_padded(tok, "\xf0\x9f\x90\xb6", ids, CLIP_CONTEXT, CLIP_EOS, err, sizeof err) == 0,
          "4-byte UTF-8 accepted");
}

int main(void) {
    char err[256];
    tokenizer *tok = tokenizer_create(err, sizeof err);
    CHECK(tok != NULL, "tokenizer_create: %s", err);
    if (!tok) return test_finish();
    test_cases(tok);
    test_speed(tok);
    test_invalid_utf8(tok);
    tokenizer_free(tok);
    return test_finish();
}
