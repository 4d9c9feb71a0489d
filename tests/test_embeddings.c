/* test_embeddings.c - textual-inversion embeddings (sd1-embeddings): the four file layouts read for the model they
 * fit and refused for the others, SHA-256, and the text-level references: spliced ids (exact), token-embedding rows
 * with the vectors in (exact), hidden states and conditionings (<= 1e-4), on sd1-tiny and sdxl-tiny. */
#include "io/sha256.h"
#include "model/model.h"
#include "nets/text_encoder.h"
#include "test_util.h"
#include "text/conditioner.h"
#include "text/embeddings.h"

#include <cJSON.h>

static st_file ex;
static tokenizer *tok;

typedef struct {
    sd_model m;
    text_encoder te[2];
    compute cc;
    embedding_set emb;
    conditioner cond;
} model;

static int load(model *x, const char *file) {
    char path[1024], dir[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", SD_FIXTURES, file);
    snprintf(dir, sizeof dir, "%s/sd1-embeddings", SD_FIXTURES);
    memset(x, 0, sizeof *x);
    int ok = model_open(&x->m, path, NULL, err, sizeof err) == SD_OK, widths[2];
    for (int i = 0; ok && i < x->m.d.n_text; i++) {
        ok = text_encoder_load(&x->te[i], &x->m.store, &x->m.d.text[i], err, sizeof err) == SD_OK;
        widths[i] = x->m.d.text[i].width;
    }
    ok = ok && embeddings_load_dir(&x->emb, dir, tok, &x->m.d, widths, NULL, err, sizeof err) == SD_OK;
    CHECK(ok, "load %s with the embeddings: %s", file, err);
    compute_init(&x->cc, 0, 0, 0);
    compute_reserve_scratch(&x->cc, (size_t)x->m.store.max_half_matrix + 1);
    x->cond = (conditioner){tok, x->te, &x->m.d, &x->cc, &x->emb};
    return ok;
}

static void unload(model *x) {
    for (int i = 0; i < x->m.d.n_text; i++) text_encoder_free(&x->te[i]);
    embeddings_free(&x->emb);
    compute_free(&x->cc);
    model_close(&x->m);
}

static const embedding *find(const model *x, const char *name) {
    for (int i = 0; i < x->emb.n; i++)
        if (!strcmp(x->emb.e[i].name, name)) return &x->emb.e[i];
    return NULL;
}

/* Which files serve which model, with how many vectors. */
static void test_files(const model *sd1, const model *xl) {
    static const struct {
        const char *name;
        int sd1, xl;
    } want[] = {{"emb_pt", 3, 0}, {"emb_st", 2, 0}, {"emb_one", 1, 0}, {"emb_xl", 0, 2}};
    /* the folder's fifth .safetensors file, the references, is read too and is not an embedding */
    CHECK(sd1->emb.n == 5 && xl->emb.n == 5, "5 files read for each model (%d, %d)", sd1->emb.n, xl->emb.n);
    const embedding *refs = find(sd1, "expected");
    CHECK(refs && refs->unusable && strstr(refs->unusable, "float tensors, an embedding has one"), "expected: %s",
          refs && refs->unusable ? refs->unusable : "usable");
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const embedding *a = find(sd1, want[i].name), *b = find(xl, want[i].name);
        CHECK(a && (want[i].sd1 ? !a->unusable && a->n_vectors == want[i].sd1 : a->unusable != NULL),
              "%s on SD 1.x: %s", want[i].name, a && a->unusable ? a->unusable : "usable");
        CHECK(b && (want[i].xl ? !b->unusable && b->n_vectors == want[i].xl : b->unusable != NULL), "%s on SDXL: %s",
              want[i].name, b && b->unusable ? b->unusable : "usable");
    }
    const embedding *pt = find(sd1, "emb_pt");
    static const int pt_ids[4] = {908, 321, 318, 1459}; /* em, b</w>, _</w>, pt</w> (the fixture's README) */
    CHECK(pt && pt->n_ids == 4 && !memcmp(pt->ids, pt_ids, sizeof pt_ids), "emb_pt's name tokens");
    const embedding *xe = find(sd1, "emb_xl");
    CHECK(xe && xe->unusable && strstr(xe->unusable, "an SDXL embedding"), "emb_xl on SD 1.x: %s",
          xe && xe->unusable ? xe->unusable : "");
    xe = find(xl, "emb_st");
    CHECK(xe && xe->unusable && strstr(xe->unusable, "not an SDXL embedding"), "emb_st on SDXL: %s",
          xe && xe->unusable ? xe->unusable : "");
}

/* SHA-256 of the empty message and of "abc" (FIPS 180-2 examples), and the short hash of an embedding file. */
static void test_sha256(const model *sd1) {
    sha256_ctx c;
    uint8_t d[32];
    char hex[65];
    sha256_init(&c);
    sha256_final(&c, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "sha256(''): %s", hex);
    sha256_init(&c);
    sha256_update(&c, "abc", 3);
    sha256_final(&c, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "sha256('abc'): %s", hex);
    const embedding *e = find(sd1, "emb_one");
    char full[65];
    CHECK(e && sha256_file_hex(e->path, full) == 0 && strlen(e->hash) == 12 && !strncmp(full, e->hash, 12),
          "an embedding's hash is the first 12 hex digits of its file's SHA-256");
}

/* The chunks of text (one expected), spliced. */
static int chunk_of(const model *x, const char *text, prompt_chunk *out) {
    prompt_chunk *chunks = NULL;
    int n = 0;
    char err[512];
    int rc = conditioner_prepare(&x->cond, text, "prompt", &chunks, &n, err, sizeof err);
    CHECK(rc == 0 && n == 1, "%s: one chunk (%d, %s)", text, n, rc ? err : "");
    if (rc == 0 && n >= 1) *out = chunks[0];
    free(chunks);
    return rc == 0 && n >= 1;
}

/* One SD 1.x text case: ids (-1 at the vectors) exact, inputs_embeds exact, last_hidden_state <= 1e-4. */
static void check_sd1_text(model *x, const char *key, const char *prompt) {
    prompt_chunk k;
    if (!chunk_of(x, prompt, &k)) return;
    char name[160];
    size_t n;
    snprintf(name, sizeof name, "text.%s.ids", key);
    const st_tensor *ids = st_find(&ex, name);
    int same = ids && ids->numel == 77;
    for (int i = 0; same && i < 77; i++) same = k.ids[i] == ((const int32_t *)ids->data)[i];
    CHECK(same, "%s: spliced ids differ", name);
    const int w = x->te[0].c.hidden;
    float rows[77 * 32], hidden[77 * 32];
    const float *vectors[77];
    for (int i = 0; i < 77; i++) { /* the token-embedding stage: the vectors, or the tokens' rows */
        vectors[i] = k.emb[i] ? k.emb[i]->vectors[0] + (size_t)k.emb_row[i] * w : NULL;
        if (vectors[i])
            memcpy(rows + i * w, vectors[i], (size_t)w * sizeof(float));
        else
            weight_rows_f32(&x->te[0].tok_emb, (int64_t)k.ids[i] * w, w, rows + i * w, 1);
    }
    snprintf(name, sizeof name, "text.%s.inputs_embeds", key);
    const float *want = fixture_f32(&ex, name, &n);
    CHECK(n == 77 * 32 && max_abs_diff(rows, want, n) == 0, "%s: differ by %.3g", name, max_abs_diff(rows, want, n));
    const text_input in = {k.ids, vectors};
    const text_output out = {x->te[0].c.layers, 1, hidden, NULL};
    CHECK(text_encoder_forward(&x->cc, &x->te[0], &in, &out) == SD_OK, "%s: forward", key);
    snprintf(name, sizeof name, "text.%s.hidden", key);
    want = fixture_f32(&ex, name, &n);
    double d = max_abs_diff(hidden, want, n);
    printf("%-32s max abs error %.3g\n", name, d);
    CHECK(n == 77 * 32 && d <= 1e-4, "%s: max abs error %.3g (limit 1e-4)", name, d);
}

/* A conditioning through the conditioner (emphasis on the vectors' positions included) against cond_key. */
static void check_conditioning(model *x, const char *text, const char *cond_key) {
    conditioning cd;
    char err[512];
    size_t n;
    const float *want = fixture_f32(&ex, cond_key, &n);
    CHECK(conditioner_encode(&x->cond, text, 1, "prompt", &cd, err, sizeof err) == SD_OK, "%s: %s", cond_key, err);
    double d = cd.ctx && (size_t)cd.len * cd.width == n ? max_abs_diff(cd.ctx, want, n) : INFINITY;
    printf("%-32s max abs error %.3g\n", cond_key, d);
    CHECK(d <= 1e-4, "%s: max abs error %.3g (limit 1e-4)", cond_key, d);
    conditioning_free(&cd);
}

/* The emphasis case: ids and multipliers (the span's weight at every vector position). */
static void check_emphasis(model *x) {
    prompt_chunk k;
    if (!chunk_of(x, "a (emb_one:1.3) cat", &k)) return;
    const st_tensor *ids = st_find(&ex, "pipe.lms_emb_emph.ids");
    size_t n;
    const float *mult = fixture_f32(&ex, "pipe.lms_emb_emph.multipliers", &n);
    int same = ids && ids->numel == 77 && n == 77;
    for (int i = 0; same && i < 77; i++)
        same = k.ids[i] == ((const int32_t *)ids->data)[i] && fabsf(k.weights[i] - mult[i]) <= 1e-7f;
    CHECK(same, "pipe.lms_emb_emph: ids and multipliers");
    check_conditioning(x, "a (emb_one:1.3) cat", "pipe.lms_emb_emph.cond");
    check_conditioning(x, "", "pipe.lms_emb_emph.uncond");
}

/* SDXL: both encoders' ids (-1 at the vectors), the context (clip_l rows into encoder 1, clip_g into encoder 2) and
 * the pooled output at the first <|endoftext|>. */
static void check_xl_text(model *x) {
    const char *prompt = "emb_xl, a dog wearing hat";
    prompt_chunk k;
    if (!chunk_of(x, prompt, &k)) return;
    for (int e = 0; e < 2; e++) {
        char key[64];
        snprintf(key, sizeof key, "text.xl_euler_emb.ids%d", e + 1);
        const st_tensor *want = st_find(&ex, key);
        int same = want && want->dtype == ST_I32 && want->numel == 77;
        for (int i = 0; same && i < 77; i++)
            same = (i <= k.tokens + 1 ? k.ids[i] : x->m.d.text[e].pad_id) == ((const int32_t *)want->data)[i];
        CHECK(same, "%s: spliced ids differ", key);
    }
    conditioning cd;
    char err[512];
    size_t n, np;
    const float *want = fixture_f32(&ex, "text.xl_euler_emb.context", &n);
    const float *want_pooled = fixture_f32(&ex, "text.xl_euler_emb.pooled", &np);
    CHECK(conditioner_encode(&x->cond, prompt, 1, "prompt", &cd, err, sizeof err) == SD_OK, "sdxl encode: %s", err);
    double d = cd.ctx && (size_t)cd.len * cd.width == n ? max_abs_diff(cd.ctx, want, n) : INFINITY;
    double dp = cd.pooled && (size_t)cd.pooled_width == np ? max_abs_diff(cd.pooled, want_pooled, np) : INFINITY;
    printf("%-32s max abs error %.3g, pooled %.3g\n", "text.xl_euler_emb.context", d, dp);
    CHECK(d <= 1e-4 && dp <= 1e-4, "text.xl_euler_emb: context %.3g, pooled %.3g (limit 1e-4)", d, dp);
    conditioning_free(&cd);
}

/* A prompt that names an embedding this model cannot use is refused naming it; others run. */
static void check_refusals(model *sd1) {
    prompt_chunk *chunks = NULL;
    int n;
    char err[512] = "";
    int rc = conditioner_prepare(&sd1->cond, "a photo of emb_xl", "prompt", &chunks, &n, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "embedding 'emb_xl'") && strstr(err, "cannot be used with this model"), "emb_xl: %s",
          err);
    free(chunks);
    chunks = NULL;
    CHECK(conditioner_prepare(&sd1->cond, "emb_ptx is not a name", "prompt", &chunks, &n, err, sizeof err) == 0 &&
              !chunks[0].embedded,
          "a longer word is not the embedding");
    free(chunks);
}

/* The vectors never split across chunks: 73 words then a 3-vector embedding start a second chunk. */
static void check_no_split(model *sd1) {
    char text[1024] = "";
    for (int i = 0; i < 73; i++) strcat(text, "cat ");
    strcat(text, "emb_pt");
    prompt_chunk *chunks = NULL;
    int n = 0;
    char err[256];
    CHECK(conditioner_prepare(&sd1->cond, text, "prompt", &chunks, &n, err, sizeof err) == 0 && n == 2 &&
              chunks[0].tokens == 73 && chunks[1].tokens == 3 && chunks[1].emb[1] && chunks[1].emb_row[3] == 2,
          "73 tokens + 3 vectors: the vectors open chunk 2 (%d chunks)", n);
    free(chunks);
}

int main(void) {
    char err[256];
    tok = tokenizer_create(err, sizeof err);
    open_fixture(&ex, "sd1-embeddings/expected.safetensors");
    model sd1, xl;
    int ok = load(&sd1, "model_f32.safetensors") && load(&xl, "sdxl-tiny/model_f16.safetensors");
    if (ok) {
        test_files(&sd1, &xl);
        test_sha256(&sd1);
        cJSON *cases = fixture_json("sd1-embeddings/cases.json");
        int text_cases = 0;
        for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next)
            if (!strncmp(c->string, "text.", 5) && strncmp(c->string, "text.xl_", 8)) {
                check_sd1_text(&sd1, c->string + 5, cJSON_GetObjectItem(c, "prompt")->valuestring);
                text_cases++;
            }
        CHECK(text_cases == 5, "ran %d SD 1.x text cases", text_cases);
        cJSON_Delete(cases);
        check_conditioning(&sd1, "emb_st, a dog wearing hat", "pipe.lms_emb_neg.cond");
        check_conditioning(&sd1, "emb_one", "pipe.lms_emb_neg.uncond");
        check_emphasis(&sd1);
        check_xl_text(&xl);
        check_refusals(&sd1);
        check_no_split(&sd1);
        unload(&sd1);
        unload(&xl);
    }
    st_close(&ex);
    tokenizer_free(tok);
    return test_finish();
}
