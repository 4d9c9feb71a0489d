/* tokenizer.c - see tokenizer.h.
 *
 * Vocabulary (OpenAI CLIP, simple_tokenizer.py): ids 0..255 are the bytes in byte-to-unicode
 * order, 256..511 the same with "</w>", 512 + r the result of merge r, then BOS and EOS.
 */
#include "text/tokenizer.h"

#include "text/unicode.h"

#include <stb_image.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const unsigned char sd_vocab_gz[];
extern const size_t sd_vocab_gz_size;

#define N_MERGES        48894 /* lines 2..48895 of bpe_simple_vocab_16e6.txt */
#define STR_TABLE_BITS  17
#define PAIR_TABLE_BITS 17

typedef struct {
    const char *key;
    int id;
} str_slot; /* token text -> id */
typedef struct {
    uint64_t key;
    int rank;
} pair_slot; /* (left id, right id) -> merge rank */

struct tokenizer {
    int byte_id[256]; /* byte -> id of its single-byte token */
    str_slot strs[1 << STR_TABLE_BITS];
    pair_slot pairs[1 << PAIR_TABLE_BITS]; /* key 0 = empty (ids are never both 0 in a merge) */
    char *text;                            /* decompressed merges file (keys point into it) */
    char *pool;                            /* storage of merged token strings */
};

/* ---------- hash tables ---------- */

static uint32_t hash_str(const char *s, size_t n) { /* FNV-1a */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_u64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static int str_lookup(const tokenizer *t, const char *s, size_t n) {
    uint32_t mask = (1u << STR_TABLE_BITS) - 1;
    for (uint32_t i = hash_str(s, n) & mask;; i = (i + 1) & mask) {
        const str_slot *e = &t->strs[i];
        if (!e->key) return -1;
        if (strncmp(e->key, s, n) == 0 && e->key[n] == 0) return e->id;
    }
}

static void str_insert(tokenizer *t, const char *key, int id) {
    uint32_t mask = (1u << STR_TABLE_BITS) - 1;
    uint32_t i = hash_str(key, strlen(key)) & mask;
    while (t->strs[i].key) i = (i + 1) & mask;
    t->strs[i].key = key;
    t->strs[i].id = id;
}

static uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b | (1ULL << 63); }

static int pair_rank(const tokenizer *t, int a, int b) {
    uint32_t mask = (1u << PAIR_TABLE_BITS) - 1;
    uint64_t k = pair_key(a, b);
    for (uint32_t i = hash_u64(k) & mask;; i = (i + 1) & mask) {
        if (t->pairs[i].key == 0) return -1;
        if (t->pairs[i].key == k) return t->pairs[i].rank;
    }
}

static void pair_insert(tokenizer *t, int a, int b, int rank) {
    uint32_t mask = (1u << PAIR_TABLE_BITS) - 1;
    uint64_t k = pair_key(a, b);
    uint32_t i = hash_u64(k) & mask;
    while (t->pairs[i].key && t->pairs[i].key != k) i = (i + 1) & mask;
    if (t->pairs[i].key == 0) {
        t->pairs[i].key = k;
        t->pairs[i].rank = rank;
    }
}

/* ---------- vocabulary ---------- */

/* CLIP's bytes_to_unicode(): printable bytes map to themselves, the rest to 256, 257, ... in byte order.
 * Fills byte -> code point and byte -> vocabulary position. */
static void byte_alphabet(uint32_t byte_cp[256], int byte_id[256]) {
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable) {
            byte_cp[b] = (uint32_t)b;
            byte_id[b] = n++;
        }
    }
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (!printable) {
            byte_cp[b] = 256u + (uint32_t)extra++;
            byte_id[b] = n++;
        }
    }
}

/* gzip (RFC 1952) -> raw deflate payload -> text. */
static char *gunzip(const unsigned char *gz, size_t n, int *out_len) {
    if (n < 18 || gz[0] != 0x1f || gz[1] != 0x8b || gz[2] != 8) return NULL;
    int flags = gz[3];
    size_t p = 10;
    if (flags & 4) p += 2 + (size_t)(gz[p] | (gz[p + 1] << 8));
    if (flags & 8)
        while (p < n && gz[p++]) {
        }
    if (flags & 16)
        while (p < n && gz[p++]) {
        }
    if (flags & 2) p += 2;
    if (p >= n) return NULL;
    return stbi_zlib_decode_noheader_malloc((const char *)gz + p, (int)(n - p - 8), out_len);
}

tokenizer *tokenizer_create(char *err, size_t errlen) {
    tokenizer *t = calloc(1, sizeof *t);
    int len = 0;
    if (!t || !(t->text = gunzip(sd_vocab_gz, sd_vocab_gz_size, &len))) {
        snprintf(err, errlen, "tokenizer: cannot unpack the embedded CLIP vocabulary");
        tokenizer_free(t);
        return NULL;
    }
    uint32_t byte_cp[256];
    byte_alphabet(byte_cp, t->byte_id);
    /* Single-byte tokens, as UTF-8 text with and without "</w>". */
    t->pool = malloc(512 * 12 + (size_t)len * 2);
    char *pool = t->pool;
    for (int b = 0; b < 256; b++) {
        unsigned char u[4];
        int k = utf8_encode(byte_cp[b], u);
        memcpy(pool, u, (size_t)k);
        pool[k] = 0;
        str_insert(t, pool, t->byte_id[b]);
        pool += k + 1;
        memcpy(pool, u, (size_t)k);
        memcpy(pool + k, "</w>", 5);
        str_insert(t, pool, t->byte_id[b] + 256);
        pool += k + 5;
    }
    /* Merges: line r+1 is "left right"; the merged token gets id 512 + r. */
    char *line = strchr(t->text, '\n');
    for (int r = 0; r < N_MERGES; r++) {
        if (!line) break;
        char *a = line + 1, *nl = strchr(a, '\n'), *sp = strchr(a, ' ');
        if (!nl) nl = t->text + len;
        if (!sp || sp > nl) break;
        int ia = str_lookup(t, a, (size_t)(sp - a)), ib = str_lookup(t, sp + 1, (size_t)(nl - sp - 1));
        if (ia < 0 || ib < 0) break;
        pair_insert(t, ia, ib, r);
        memcpy(pool, a, (size_t)(sp - a));
        memcpy(pool + (sp - a), sp + 1, (size_t)(nl - sp - 1));
        pool[(nl - a) - 1] = 0;
        if (str_lookup(t, pool, strlen(pool)) < 0) str_insert(t, pool, 512 + r);
        pool += (nl - a);
        line = nl;
        if (r == N_MERGES - 1) return t;
    }
    snprintf(err, errlen, "tokenizer: embedded CLIP merges file is malformed");
    tokenizer_free(t);
    return NULL;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->pool);
    free(t);
}

/* ---------- normalisation (NFC, whitespace runs -> " ", lowercase) ---------- */

/* Returns the normalised code points count; out needs 2·n entries (lowercase can grow). */
static size_t normalise(const uint32_t *in, size_t n, uint32_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) { /* NFC: compose a starter with the following marks */
        uint32_t c;
        if (m > 0 && (c = uni_compose_pair(out[m - 1], in[i])))
            out[m - 1] = c;
        else
            out[m++] = in[i];
    }
    size_t k = 0;
    for (size_t i = 0; i < m; i++) { /* \s+ -> " " */
        if (uni_is_space(out[i])) {
            if (k == 0 || out[k - 1] != ' ' || !uni_is_space(out[i - 1])) out[k++] = ' ';
        } else {
            out[k++] = out[i];
        }
    }
    /* lowercase, back to front so a two-code-point result has room */
    size_t grow = 0;
    uint32_t tmp[2];
    for (size_t i = 0; i < k; i++) grow += (size_t)uni_lower(out[i], tmp) - 1;
    size_t w = k + grow;
    for (size_t i = k; i-- > 0;) {
        int c = uni_lower(out[i], tmp);
        for (int j = c; j-- > 0;) out[--w] = tmp[j];
    }
    return k + grow;
}

/* ---------- BPE ---------- */

typedef struct {
    int rank, pos;
} heap_item;

static void heap_push(heap_item *h, int *n, heap_item it) {
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h[p].rank < it.rank || (h[p].rank == it.rank && h[p].pos < it.pos)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static heap_item heap_pop(heap_item *h, int *n) {
    heap_item top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && (h[c + 1].rank < h[c].rank || (h[c + 1].rank == h[c].rank && h[c + 1].pos < h[c].pos))) c++;
        if (last.rank < h[c].rank || (last.rank == h[c].rank && last.pos < h[c].pos)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* Applies the merges to one pre-token (bytes) in rank order, leftmost first - the same result as
 * simple_tokenizer.bpe(), in O(n log n). Appends ids; returns the new count (stops at max_ids). */
static long bpe_word(const tokenizer *t, const unsigned char *bytes, int n, int *sym, int *next, int *prev,
                     heap_item *heap, int *ids, long count, long max_ids) {
    for (int i = 0; i < n; i++) {
        sym[i] = t->byte_id[bytes[i]] + (i == n - 1 ? 256 : 0);
        next[i] = i + 1 < n ? i + 1 : -1;
        prev[i] = i - 1;
    }
    int hn = 0;
    for (int i = 0; i + 1 < n; i++) {
        int r = pair_rank(t, sym[i], sym[i + 1]);
        if (r >= 0) heap_push(heap, &hn, (heap_item){r, i});
    }
    while (hn > 0) {
        heap_item it = heap_pop(heap, &hn);
        int i = it.pos, j = next[i];
        if (sym[i] < 0 || j < 0 || pair_rank(t, sym[i], sym[j]) != it.rank) continue; /* stale */
        sym[i] = 512 + it.rank;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        int r;
        if (prev[i] >= 0 && (r = pair_rank(t, sym[prev[i]], sym[i])) >= 0)
            heap_push(heap, &hn, (heap_item){r, prev[i]});
        if (next[i] >= 0 && (r = pair_rank(t, sym[i], sym[next[i]])) >= 0) heap_push(heap, &hn, (heap_item){r, i});
    }
    for (int i = 0; i >= 0 && count < max_ids; i = next[i]) ids[count++] = sym[i];
    return count;
}

/* ---------- pre-tokenisation ---------- */

static const uint32_t special_bos[] = {'<', '|', 's', 't', 'a', 'r', 't', 'o', 'f', 't', 'e', 'x', 't', '|', '>'};
static const uint32_t special_eos[] = {'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|', '>'};

static int match_at(const uint32_t *s, size_t n, size_t i, const uint32_t *pat, size_t plen) {
    if (i + plen > n) return 0;
    for (size_t k = 0; k < plen; k++)
        if (s[i + k] != pat[k]) return 0;
    return 1;
}

/* Length of the match of CLIP's pattern at s[i] (0 = no match):
 *   's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+  */
static size_t pattern_match(const uint32_t *s, size_t n, size_t i) {
    uint32_t c = s[i];
    if (c == '\'' && i + 1 < n) {
        uint32_t d = s[i + 1], e = i + 2 < n ? s[i + 2] : 0;
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return 2;
        if ((d == 'r' || d == 'v') && e == 'e') return 3;
        if (d == 'l' && e == 'l') return 3;
    }
    if (uni_is_letter(c)) {
        size_t j = i;
        while (j < n && uni_is_letter(s[j])) j++;
        return j - i;
    }
    if (uni_is_number(c)) return 1;
    if (uni_is_space(c)) return 0;
    size_t j = i;
    while (j < n && !uni_is_space(s[j]) && !uni_is_letter(s[j]) && !uni_is_number(s[j])) j++;
    return j - i;
}

typedef struct {
    int *sym, *next, *prev;
    heap_item *heap;
    unsigned char *bytes;
} bpe_work;

long tokenizer_encode(const tokenizer *t, const char *text, int *ids, long max_ids, char *err, size_t errlen) {
    size_t len = strlen(text), bad = 0;
    uint32_t *cps = malloc((len + 1) * sizeof *cps), *norm = malloc((2 * len + 1) * sizeof *norm);
    size_t max_bytes = 8 * len + 8; /* UTF-8 bytes of the normalised text, with room for lowercase growth */
    bpe_work w = {malloc(max_bytes * sizeof(int)), malloc(max_bytes * sizeof(int)), malloc(max_bytes * sizeof(int)),
                  malloc(3 * max_bytes * sizeof(heap_item)), malloc(max_bytes)};
    long count = -1;
    if (!cps || !norm || !w.sym || !w.next || !w.prev || !w.heap || !w.bytes) {
        snprintf(err, errlen, "prompt: out of memory tokenizing %zu bytes", len);
        goto done;
    }
    long ncp = utf8_decode(text, len, cps, &bad);
    if (ncp < 0) {
        snprintf(err, errlen, "prompt: invalid UTF-8 at byte %zu", bad);
        goto done;
    }
    size_t n = normalise(cps, (size_t)ncp, norm);
    count = 0;
    for (size_t i = 0; i < n && count < max_ids;) {
        if (match_at(norm, n, i, special_bos, 15)) {
            ids[count++] = CLIP_BOS;
            i += 15;
            continue;
        }
        if (match_at(norm, n, i, special_eos, 13)) {
            ids[count++] = CLIP_EOS;
            i += 13;
            continue;
        }
        size_t m = pattern_match(norm, n, i);
        if (m == 0) {
            i++;
            continue;
        }
        /* a pre-token never runs into a special token's text */
        for (size_t k = 1; k < m; k++)
            if (match_at(norm, n, i + k, special_bos, 15) || match_at(norm, n, i + k, special_eos, 13)) {
                m = k;
                break;
            }
        int nb = 0;
        for (size_t k = 0; k < m; k++) nb += utf8_encode(norm[i + k], w.bytes + nb);
        count = bpe_word(t, w.bytes, nb, w.sym, w.next, w.prev, w.heap, ids, count, max_ids);
        i += m;
    }
done:
    free(cps);
    free(norm);
    free(w.sym);
    free(w.next);
    free(w.prev);
    free(w.heap);
    free(w.bytes);
    return count;
}

int tokenizer_encode_padded(const tokenizer *t, const char *text, int *ids, int ctx_len, int pad_id, char *err,
                            size_t errlen) {
    long n = tokenizer_encode(t, text, ids + 1, ctx_len - 2, err, errlen);
    if (n < 0) return -1;
    ids[0] = CLIP_BOS;
    ids[n + 1] = CLIP_EOS;
    for (long i = n + 2; i < ctx_len; i++) ids[i] = pad_id;
    return 0;
}
