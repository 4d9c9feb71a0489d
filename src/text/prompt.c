/* prompt.c - see prompt.h. The scanner takes, at each position, the first of these that matches (the
 * published parser's regular expression, in order):
 *   \(  \)  \[  \]  \\      a literal bracket or backslash
 *   \                       a lone backslash: empty text
 *   (  [                    open a bracket
 *   :<ws>*NUMBER<ws>*)      NUMBER = [+-]?[.0-9]+ : close a round bracket with that weight
 *   )  ]                    close a bracket
 *   a run of characters other than \ ( ) [ ] :      text (split at the word BREAK)
 *   :                       text
 */
#include "text/prompt.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_MULTIPLIER  1.1
#define SQUARE_MULTIPLIER (1 / 1.1)

typedef struct {
    prompt_parse *p;
    int cap, failed;
    int *round, n_round, *square, n_square; /* stacks of span indices */
} parser;

static int push_span(parser *ps, const char *text, size_t len, double weight) {
    prompt_parse *p = ps->p;
    if (p->n == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 16;
        prompt_span *s = realloc(p->spans, (size_t)cap * sizeof *s);
        if (!s) return ps->failed = -1;
        p->spans = s;
        ps->cap = cap;
    }
    char *t = malloc(len + 1);
    if (!t) return ps->failed = -1;
    memcpy(t, text, len);
    t[len] = 0;
    p->spans[p->n].text = t;
    p->spans[p->n].weight = weight;
    p->n++;
    return 0;
}

static void multiply_from(parser *ps, int start, double m) {
    for (int i = start; i < ps->p->n; i++) ps->p->spans[i].weight *= m;
}

/* Python's \w for the word boundary of BREAK: ASCII letters, digits, underscore, and non-ASCII (letters). */
static int word_char(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }

/* Text run: split at \s*\bBREAK\b\s* (re_break), a ("BREAK", -1) span between the pieces. */
static void push_text(parser *ps, const char *s, size_t len) {
    size_t start = 0;
    for (size_t i = 0; i + 5 <= len; i++) {
        if (memcmp(s + i, "BREAK", 5) != 0) continue;
        if ((i > 0 && word_char((unsigned char)s[i - 1])) || (i + 5 < len && word_char((unsigned char)s[i + 5])))
            continue;
        size_t a = i, b = i + 5;
        while (a > start && isspace((unsigned char)s[a - 1])) a--;
        while (b < len && isspace((unsigned char)s[b])) b++;
        push_span(ps, s + start, a - start, 1.0);
        push_span(ps, "BREAK", 5, -1.0);
        start = b;
        i = b - 1;
    }
    push_span(ps, s + start, len - start, 1.0);
}

/* ":<ws>*NUMBER<ws>*)" at s: its length and the number, or 0. */
static size_t weight_token(const char *s, double *w) {
    const char *p = s + 1;
    while (isspace((unsigned char)*p)) p++;
    const char *num = p;
    if (*p == '+' || *p == '-') p++;
    const char *digits = p;
    while (isdigit((unsigned char)*p) || *p == '.') p++;
    if (p == digits) return 0;
    const char *num_end = p;
    while (isspace((unsigned char)*p)) p++;
    if (*p != ')') return 0;
    char *end;
    *w = strtod(num, &end);
    if (end != num_end) return 0; /* "1.2.3" is no number: the ':' is plain text */
    return (size_t)(p + 1 - s);
}

static int is_special(char c) { return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':'; }

/* Neighbouring spans of exactly equal weight merge (texts concatenated). */
static int merge_equal(prompt_parse *p) {
    int out = 0;
    for (int i = 0; i < p->n; i++) {
        if (out > 0 && p->spans[out - 1].weight == p->spans[i].weight) {
            prompt_span *a = &p->spans[out - 1];
            size_t la = strlen(a->text), lb = strlen(p->spans[i].text);
            char *t = realloc(a->text, la + lb + 1);
            if (!t) return -1;
            memcpy(t + la, p->spans[i].text, lb + 1);
            a->text = t;
            free(p->spans[i].text);
        } else {
            p->spans[out++] = p->spans[i];
        }
    }
    p->n = out;
    return 0;
}

const char *prompt_next_tag(const char *s, const char **kind, size_t *kind_len, const char **args, size_t *args_len,
                            size_t *tag_len) {
    for (const char *lt = strchr(s, '<'); lt; lt = strchr(lt + 1, '<')) {
        const char *p = lt + 1;
        while (word_char((unsigned char)*p)) p++;
        if (p == lt + 1 || *p != ':' || !p[1] || p[1] == '>') continue;
        const char *gt = strchr(p + 1, '>');
        if (!gt) return NULL; /* no '>' after this '<', nor after any later one */
        *kind = lt + 1;
        *kind_len = (size_t)(p - lt - 1);
        *args = p + 1;
        *args_len = (size_t)(gt - p - 1);
        *tag_len = (size_t)(gt + 1 - lt);
        return lt;
    }
    return NULL;
}

/* A malloc'd copy of text without its extra-network tags. */
static char *strip_tags(const char *text) {
    char *out = malloc(strlen(text) + 1), *o = out;
    const char *kind, *args;
    size_t kl, al, tl;
    if (!out) return NULL;
    for (const char *s = text, *tag; *s; s = tag + tl) {
        if (!(tag = prompt_next_tag(s, &kind, &kl, &args, &al, &tl))) {
            strcpy(o, s);
            return out;
        }
        memcpy(o, s, (size_t)(tag - s));
        o += tag - s;
    }
    *o = 0;
    return out;
}

int prompt_parse_text(const char *raw, prompt_parse *out) {
    memset(out, 0, sizeof *out);
    char *text = strip_tags(raw);
    if (!text) return -1;
    size_t len = strlen(text);
    parser ps = {out, 0, 0, malloc((len + 1) * sizeof(int)), 0, malloc((len + 1) * sizeof(int)), 0};
    if (!ps.round || !ps.square) ps.failed = -1;
    for (size_t i = 0; i < len && !ps.failed;) {
        const char *s = text + i;
        double w;
        size_t n;
        if (s[0] == '\\' && s[1] && strchr("()[]\\", s[1])) {
            push_span(&ps, s + 1, 1, 1.0);
            i += 2;
        } else if (s[0] == '\\') {
            push_span(&ps, "", 0, 1.0);
            i += 1;
        } else if (s[0] == '(') {
            ps.round[ps.n_round++] = out->n;
            i++;
        } else if (s[0] == '[') {
            ps.square[ps.n_square++] = out->n;
            i++;
        } else if (s[0] == ':' && (n = weight_token(s, &w)) && ps.n_round) {
            multiply_from(&ps, ps.round[--ps.n_round], w);
            i += n;
        } else if (s[0] == ')' && ps.n_round) {
            multiply_from(&ps, ps.round[--ps.n_round], ROUND_MULTIPLIER);
            i++;
        } else if (s[0] == ']' && ps.n_square) {
            multiply_from(&ps, ps.square[--ps.n_square], SQUARE_MULTIPLIER);
            i++;
        } else if (s[0] == ':' && (n = weight_token(s, &w))) {
            push_text(&ps, s, n);
            i += n;
        } /* no open '(': text */
        else if (s[0] == ':' || s[0] == ')' || s[0] == ']') {
            push_text(&ps, s, 1);
            i++;
        } else {
            size_t j = i;
            while (j < len && !is_special(text[j])) j++;
            push_text(&ps, s, j - i);
            i = j;
        }
    }
    out->unclosed = ps.n_round + ps.n_square;
    for (int k = 0; k < ps.n_round; k++) multiply_from(&ps, ps.round[k], ROUND_MULTIPLIER);
    for (int k = 0; k < ps.n_square; k++) multiply_from(&ps, ps.square[k], SQUARE_MULTIPLIER);
    if (!ps.failed && out->n == 0) push_span(&ps, "", 0, 1.0);
    if (!ps.failed && merge_equal(out) != 0) ps.failed = -1;
    free(ps.round);
    free(ps.square);
    free(text);
    if (ps.failed) {
        prompt_parse_free(out);
        return -1;
    }
    return 0;
}

void prompt_parse_free(prompt_parse *p) {
    for (int i = 0; i < p->n; i++) free(p->spans[i].text);
    free(p->spans);
    memset(p, 0, sizeof *p);
}

int prompt_span_is_break(const prompt_span *s) { return s->weight == -1.0 && strcmp(s->text, "BREAK") == 0; }
