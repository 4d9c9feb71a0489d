/* ckpt.c - see ckpt.h. Layout references: PKWARE APPNOTE.TXT 4.3 (local header, central directory, end of
 * central directory, ZIP64 records), CPython Lib/pickletools.py (opcodes), torch/serialization.py (_save,
 * persistent ids) and torch/_utils.py (_rebuild_tensor_v2). */
#include "io/ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_STACK (1 << 20)
#define MAX_MEMO  (1 << 22)

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int ckpt_is_zip(const void *buf, size_t size) { return size >= 4 && !memcmp(buf, "PK\x03\x04", 4); }

/* ---------------- zip ---------------- */

typedef struct {
    const char *name; /* not NUL-terminated */
    size_t name_len;
    const uint8_t *data;
    uint64_t size;
    int stored; /* method 0, sizes equal: readable in place */
} zip_entry;

typedef struct {
    zip_entry *e;
    int n;
} zip_dir;

/* Reads the central directory (ZIP64 when the 32-bit fields are saturated). */
static int zip_read(const uint8_t *b, size_t size, zip_dir *z, char *why, size_t wl) {
    if (size < 22) return snprintf(why, wl, "too short for a zip archive"), -1;
    size_t eocd = 0;
    int found = 0;
    for (size_t p = size - 22 + 1; p-- > 0 && size - p <= 22 + 65535;)
        if (le(b + p, 4) == 0x06054b50) {
            eocd = p;
            found = 1;
            break;
        }
    if (!found) return snprintf(why, wl, "no zip end-of-directory record"), -1;
    uint64_t count = le(b + eocd + 10, 2), cd_size = le(b + eocd + 12, 4), cd_off = le(b + eocd + 16, 4);
    if ((count == 0xffff || cd_off == 0xffffffff || cd_size == 0xffffffff) && eocd >= 20 &&
        le(b + eocd - 20, 4) == 0x07064b50) {
        uint64_t z64 = le(b + eocd - 20 + 8, 8);
        if (size < 56 || z64 > size - 56 || le(b + z64, 4) != 0x06064b50)
            return snprintf(why, wl, "broken ZIP64 record"), -1;
        count = le(b + z64 + 32, 8);
        cd_size = le(b + z64 + 40, 8);
        cd_off = le(b + z64 + 48, 8);
    }
    if (cd_off > size || cd_size > size - cd_off || count > cd_size / 46)
        return snprintf(why, wl, "zip directory out of bounds"), -1;
    z->e = calloc(count + 1, sizeof *z->e);
    if (!z->e) return snprintf(why, wl, "out of memory"), -1;
    const uint8_t *p = b + cd_off, *end = b + cd_off + cd_size;
    for (uint64_t i = 0; i < count; i++) {
        if (end - p < 46 || le(p, 4) != 0x02014b50)
            return snprintf(why, wl, "broken zip directory entry %llu", (unsigned long long)i), -1;
        uint64_t method = le(p + 10, 2), csize = le(p + 20, 4), usize = le(p + 24, 4), off = le(p + 42, 4);
        size_t nlen = le(p + 28, 2), xlen = le(p + 30, 2), clen = le(p + 32, 2);
        if ((size_t)(end - p) < 46 + nlen + xlen + clen)
            return snprintf(why, wl, "zip directory entry %llu out of bounds", (unsigned long long)i), -1;
        for (const uint8_t *x = p + 46 + nlen, *xe = x + xlen;
             xe - x >= 4;) { /* ZIP64 extra: the saturated fields, in order */
            size_t id = le(x, 2), dl = le(x + 2, 2);
            const uint8_t *d = x + 4, *de = d + dl;
            if (de > xe) break;
            if (id == 1) {
                if (usize == 0xffffffff && de - d >= 8) {
                    usize = le(d, 8);
                    d += 8;
                }
                if (csize == 0xffffffff && de - d >= 8) {
                    csize = le(d, 8);
                    d += 8;
                }
                if (off == 0xffffffff && de - d >= 8) {
                    off = le(d, 8);
                }
            }
            x = de;
        }
        if (size < 30 || off > size - 30 || le(b + off, 4) != 0x04034b50)
            return snprintf(why, wl, "broken zip local header"), -1;
        uint64_t data = off + 30 + le(b + off + 26, 2) + le(b + off + 28, 2);
        if (data > size || csize > size - data) return snprintf(why, wl, "zip entry data out of bounds"), -1;
        z->e[z->n++] = (zip_entry){(const char *)p + 46, nlen, b + data, usize, method == 0 && csize == usize};
        p += 46 + nlen + xlen + clen;
    }
    return 0;
}

static const zip_entry *zip_find(const zip_dir *z, const char *prefix, size_t plen, const char *name) {
    size_t nlen = strlen(name);
    for (int i = 0; i < z->n; i++)
        if (z->e[i].name_len == plen + nlen && !memcmp(z->e[i].name, prefix, plen) &&
            !memcmp(z->e[i].name + plen, name, nlen))
            return &z->e[i];
    return NULL;
}

/* ---------------- pickle values ---------------- */

typedef enum {
    PV_MARK,
    PV_NONE,
    PV_BOOL,
    PV_INT,
    PV_FLOAT,
    PV_STR,
    PV_TUPLE,
    PV_LIST,
    PV_DICT,
    PV_GLOBAL,
    PV_STORAGE,
    PV_TENSOR
} pv_kind;

typedef struct pv {
    pv_kind kind;
    int64_t i; /* int, bool */
    double f;
    char *s;           /* str; global "module.name" */
    struct pv **items; /* tuple / list items; dict: key, value, key, value, ... */
    int n, cap;
    st_dtype dtype;      /* storage, tensor */
    const uint8_t *data; /* storage bytes */
    int64_t numel;       /* storage elements */
    struct pv *storage;  /* tensor */
    int64_t offset, shape[ST_MAX_DIMS], stride[ST_MAX_DIMS];
    int ndim;
    struct pv *next_alloc; /* every value, for freeing */
} pv;

typedef struct {
    const uint8_t *p, *end, *start;
    const zip_dir *zip;
    const char *prefix; /* "<archive>/" */
    size_t plen;
    pv **stack;
    int sp;
    pv **memo;
    size_t n_memo, memo_count; /* slots, entries stored (MEMOIZE's next index) */
    pv *all;
    char why[300];
} unpickler;

static pv *new_pv(unpickler *u, pv_kind k) {
    pv *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = k;
    v->next_alloc = u->all;
    u->all = v;
    return v;
}

static int add_item(pv *c, pv *x) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        pv **p = realloc(c->items, (size_t)cap * sizeof *p);
        if (!p) return -1;
        c->items = p;
        c->cap = cap;
    }
    c->items[c->n++] = x;
    return 0;
}

static void free_all(unpickler *u) {
    for (pv *v = u->all, *n; v; v = n) {
        n = v->next_alloc;
        free(v->s);
        free(v->items);
        free(v);
    }
    free(u->stack);
    free(u->memo);
}

/* The globals a tensor checkpoint may name, and what they are. */
/* clang-format off */
static const struct { const char *name; st_dtype storage; int is_storage; } allowed_globals[] = {
    {"collections.OrderedDict", 0, 0},
    {"torch._utils._rebuild_tensor_v2", 0, 0},
    {"torch._utils._rebuild_parameter", 0, 0},
    {"torch.FloatStorage", ST_F32, 1},
    {"torch.HalfStorage", ST_F16, 1},
    {"torch.BFloat16Storage", ST_BF16, 1},
    {"torch.IntStorage", ST_I32, 1},
    {"torch.LongStorage", ST_I64, 1},
};
/* clang-format on */

static int global_index(const char *name) {
    for (size_t i = 0; i < sizeof allowed_globals / sizeof *allowed_globals; i++)
        if (!strcmp(name, allowed_globals[i].name)) return (int)i;
    return -1;
}

/* ---------------- the machine ---------------- */

#define NEED(n)                                                                                                        \
    do {                                                                                                               \
        if ((size_t)(u->end - u->p) < (size_t)(n))                                                                     \
            return snprintf(u->why, sizeof u->why, "pickle: truncated at byte %ld", (long)(u->p - u->start)), -1;      \
    } while (0)
#define BAD(...) return snprintf(u->why, sizeof u->why, __VA_ARGS__), -1

static int push(unpickler *u, pv *v) {
    if (!v) BAD("out of memory");
    if (u->sp == MAX_STACK) BAD("pickle: stack deeper than %d", MAX_STACK);
    u->stack[u->sp++] = v;
    return 0;
}

static pv *pop(unpickler *u) { return u->sp > 0 && u->stack[u->sp - 1]->kind != PV_MARK ? u->stack[--u->sp] : NULL; }

/* Index of the topmost MARK, or -1. */
static int find_mark(const unpickler *u) {
    for (int i = u->sp - 1; i >= 0; i--)
        if (u->stack[i]->kind == PV_MARK) return i;
    return -1;
}

static int memo_put(unpickler *u, uint64_t idx) {
    if (u->sp == 0) BAD("pickle: memo store with an empty stack");
    if (idx >= MAX_MEMO) BAD("pickle: memo index %llu too large", (unsigned long long)idx);
    if (idx >= u->n_memo) {
        size_t n = idx + 1 > 2 * u->n_memo ? idx + 1 : 2 * u->n_memo;
        pv **m = realloc(u->memo, n * sizeof *m);
        if (!m) BAD("out of memory");
        memset(m + u->n_memo, 0, (n - u->n_memo) * sizeof *m);
        u->memo = m;
        u->n_memo = n;
    }
    u->memo_count += u->memo[idx] == NULL;
    u->memo[idx] = u->stack[u->sp - 1];
    return 0;
}

static int memo_get(unpickler *u, uint64_t idx) {
    if (idx >= u->n_memo || !u->memo[idx]) BAD("pickle: memo index %llu never stored", (unsigned long long)idx);
    return push(u, u->memo[idx]);
}

static int push_str(unpickler *u, size_t len) {
    NEED(len);
    pv *v = new_pv(u, PV_STR);
    if (!v || !(v->s = malloc(len + 1))) BAD("out of memory");
    memcpy(v->s, u->p, len);
    v->s[len] = 0;
    u->p += len;
    return push(u, v);
}

static int push_int(unpickler *u, int64_t x) {
    pv *v = new_pv(u, PV_INT);
    if (v) v->i = x;
    return push(u, v);
}

/* GLOBAL / STACK_GLOBAL: refused unless in allowed_globals. */
static int push_global(unpickler *u, const char *module, const char *name) {
    char full[300];
    snprintf(full, sizeof full, "%s.%s", module, name);
    if (global_index(full) < 0)
        BAD("pickle global '%.200s' is not allowed (a checkpoint may only rebuild tensors; nothing was executed)",
            full);
    pv *v = new_pv(u, PV_GLOBAL);
    if (!v || !(v->s = strdup(full))) BAD("out of memory");
    return push(u, v);
}

/* Pops items above the topmost MARK into a new container of kind k. */
static int collect(unpickler *u, pv_kind k, pv *into) {
    int m = find_mark(u);
    if (m < 0) BAD("pickle: no MARK");
    pv *c = into ? into : new_pv(u, k);
    if (!c) BAD("out of memory");
    for (int i = m + 1; i < u->sp; i++)
        if (add_item(c, u->stack[i]) != 0) BAD("out of memory");
    u->sp = m;
    return into ? 0 : push(u, c);
}

static int tuple_of(unpickler *u, int n) {
    if (u->sp < n) BAD("pickle: stack underflow");
    pv *t = new_pv(u, PV_TUPLE);
    if (!t) BAD("out of memory");
    for (int i = u->sp - n; i < u->sp; i++) {
        if (u->stack[i]->kind == PV_MARK) BAD("pickle: MARK inside a tuple");
        if (add_item(t, u->stack[i]) != 0) BAD("out of memory");
    }
    u->sp -= n;
    return push(u, t);
}

/* BINPERSID: ("storage", storage type, key, location, numel) → the storage's bytes in the zip. */
static int persistent_load(unpickler *u) {
    pv *pid = pop(u);
    if (!pid || pid->kind != PV_TUPLE || pid->n < 5 || pid->items[0]->kind != PV_STR ||
        strcmp(pid->items[0]->s, "storage") || pid->items[1]->kind != PV_GLOBAL || pid->items[2]->kind != PV_STR ||
        pid->items[4]->kind != PV_INT)
        BAD("pickle: a persistent id that is not a torch storage");
    int g = global_index(pid->items[1]->s);
    if (!allowed_globals[g].is_storage) BAD("pickle: '%s' is not a storage type", pid->items[1]->s);
    char name[300];
    snprintf(name, sizeof name, "data/%s", pid->items[2]->s);
    const zip_entry *e = zip_find(u->zip, u->prefix, u->plen, name);
    if (!e) BAD("storage '%s' is missing from the archive", pid->items[2]->s);
    if (!e->stored) BAD("storage '%s' is compressed (only stored entries can be read in place)", pid->items[2]->s);
    pv *s = new_pv(u, PV_STORAGE);
    if (!s) BAD("out of memory");
    s->dtype = allowed_globals[g].storage;
    s->numel = pid->items[4]->i;
    s->data = e->data;
    if (s->numel < 0 || (uint64_t)s->numel > e->size / st_dtype_size(s->dtype))
        BAD("storage '%s' claims %lld elements but holds %llu bytes", pid->items[2]->s, (long long)s->numel,
            (unsigned long long)e->size);
    return push(u, s);
}

/* _rebuild_tensor_v2(storage, offset, size, stride, ...): a contiguous view of the storage. */
static pv *rebuild_tensor(unpickler *u, const pv *args) {
    if (args->n < 4 || args->items[0]->kind != PV_STORAGE || args->items[1]->kind != PV_INT ||
        args->items[2]->kind != PV_TUPLE || args->items[3]->kind != PV_TUPLE ||
        args->items[2]->n != args->items[3]->n || args->items[2]->n > ST_MAX_DIMS) {
        snprintf(u->why, sizeof u->why, "pickle: _rebuild_tensor_v2 with unexpected arguments");
        return NULL;
    }
    pv *t = new_pv(u, PV_TENSOR);
    if (!t) return NULL;
    t->storage = args->items[0];
    t->offset = args->items[1]->i;
    t->ndim = args->items[2]->n;
    int64_t numel = 1, expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        const pv *sz = args->items[2]->items[d], *st = args->items[3]->items[d];
        if (sz->kind != PV_INT || st->kind != PV_INT || sz->i < 0 || sz->i > ((int64_t)1 << 40)) {
            snprintf(u->why, sizeof u->why, "pickle: a tensor size or stride is not a valid integer");
            return NULL;
        }
        t->shape[d] = sz->i;
        t->stride[d] = st->i;
        if (sz->i > 1 && st->i != expect) {
            snprintf(u->why, sizeof u->why, "a tensor is not contiguous (stride %lld, expected %lld)", (long long)st->i,
                     (long long)expect);
            return NULL;
        }
        expect *= sz->i;
        numel *= sz->i;
        if (numel > ((int64_t)1 << 40)) {
            snprintf(u->why, sizeof u->why, "a tensor is too large");
            return NULL;
        }
    }
    if (t->offset < 0 || t->offset > t->storage->numel || numel > t->storage->numel - t->offset) {
        snprintf(u->why, sizeof u->why, "a tensor reaches past its storage (offset %lld + %lld > %lld)",
                 (long long)t->offset, (long long)numel, (long long)t->storage->numel);
        return NULL;
    }
    t->numel = numel;
    t->dtype = t->storage->dtype;
    return t;
}

static int reduce(unpickler *u) {
    pv *args = pop(u), *fn = pop(u), *r = NULL;
    if (!args || !fn || args->kind != PV_TUPLE || fn->kind != PV_GLOBAL)
        BAD("pickle: REDUCE needs a global and an argument tuple");
    if (!strcmp(fn->s, "collections.OrderedDict"))
        r = new_pv(u, PV_DICT);
    else if (!strcmp(fn->s, "torch._utils._rebuild_tensor_v2")) {
        if (!(r = rebuild_tensor(u, args))) return -1;
    } else if (!strcmp(fn->s, "torch._utils._rebuild_parameter") && args->n >= 1 && args->items[0]->kind == PV_TENSOR)
        r = args->items[0];
    else
        BAD("pickle: '%s' cannot be called", fn->s);
    return push(u, r);
}

static int setitems(unpickler *u, int from) {
    if (from < 1 || u->stack[from - 1]->kind != PV_DICT || (u->sp - from) % 2) BAD("pickle: SETITEM(S) without a dict");
    pv *d = u->stack[from - 1];
    for (int i = from; i < u->sp; i++)
        if (add_item(d, u->stack[i]) != 0) BAD("out of memory");
    u->sp = from;
    return 0;
}

/* Runs one opcode; 1 at STOP. */
static int step(unpickler *u) {
    NEED(1);
    uint8_t op = *u->p++;
    pv *v;
    switch (op) {
    case 0x80:
        NEED(1);
        u->p++;
        return 0; /* PROTO */
    case 0x95:
        NEED(8);
        u->p += 8;
        return 0; /* FRAME */
    case '(': {
        static pv mark = {.kind = PV_MARK};
        return push(u, &mark);
    }
    case '}': return push(u, new_pv(u, PV_DICT));
    case ']': return push(u, new_pv(u, PV_LIST));
    case ')': return push(u, new_pv(u, PV_TUPLE));
    case 'N': return push(u, new_pv(u, PV_NONE));
    case 0x88:
    case 0x89:
        if ((v = new_pv(u, PV_BOOL))) v->i = op == 0x88;
        return push(u, v);
    case 'K': NEED(1); return push_int(u, *u->p++);
    case 'M':
        NEED(2);
        u->p += 2;
        return push_int(u, (int64_t)le(u->p - 2, 2));
    case 'J':
        NEED(4);
        u->p += 4;
        return push_int(u, (int32_t)le(u->p - 4, 4));
    case 0x8a: { /* LONG1 */
        NEED(1);
        size_t n = *u->p++;
        NEED(n);
        if (n > 8) BAD("pickle: integer wider than 64 bits");
        uint64_t x = n ? le(u->p, (int)n) : 0;
        if (n && n < 8 && (u->p[n - 1] & 0x80)) x |= ~(uint64_t)0 << (8 * n); /* sign-extend */
        u->p += n;
        return push_int(u, (int64_t)x);
    }
    case 'G': { /* BINFLOAT, big-endian */
        NEED(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) bits = bits << 8 | u->p[i];
        u->p += 8;
        if ((v = new_pv(u, PV_FLOAT))) memcpy(&v->f, &bits, 8);
        return push(u, v);
    }
    case 'X':
        NEED(4);
        u->p += 4;
        return push_str(u, le(u->p - 4, 4)); /* BINUNICODE */
    case 0x8c:
    case 'U':
        NEED(1);
        u->p++;
        return push_str(u, u->p[-1]); /* SHORT_BINUNICODE, SHORT_BINSTRING */
    case 'T':
        NEED(4);
        u->p += 4;
        return push_str(u, le(u->p - 4, 4)); /* BINSTRING */
    case 'q':
        NEED(1);
        u->p++;
        return memo_put(u, u->p[-1]); /* BINPUT */
    case 'r':
        NEED(4);
        u->p += 4;
        return memo_put(u, le(u->p - 4, 4));      /* LONG_BINPUT */
    case 0x94: return memo_put(u, u->memo_count); /* MEMOIZE */
    case 'h':
        NEED(1);
        u->p++;
        return memo_get(u, u->p[-1]); /* BINGET */
    case 'j':
        NEED(4);
        u->p += 4;
        return memo_get(u, le(u->p - 4, 4)); /* LONG_BINGET */
    case 'c': {                              /* GLOBAL "module\nname\n" */
        const uint8_t *nl1 = memchr(u->p, '\n', (size_t)(u->end - u->p)),
                      *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(u->end - nl1 - 1)) : NULL;
        if (!nl2 || nl1 - u->p > 200 || nl2 - nl1 > 200) BAD("pickle: malformed GLOBAL");
        char module[202], name[202];
        snprintf(module, sizeof module, "%.*s", (int)(nl1 - u->p), u->p);
        snprintf(name, sizeof name, "%.*s", (int)(nl2 - nl1 - 1), nl1 + 1);
        u->p = nl2 + 1;
        return push_global(u, module, name);
    }
    case 0x93: { /* STACK_GLOBAL */
        pv *name = pop(u), *module = pop(u);
        if (!name || !module || name->kind != PV_STR || module->kind != PV_STR) BAD("pickle: malformed STACK_GLOBAL");
        return push_global(u, module->s, name->s);
    }
    case 't': return collect(u, PV_TUPLE, NULL);
    case 0x85: return tuple_of(u, 1);
    case 0x86: return tuple_of(u, 2);
    case 0x87: return tuple_of(u, 3);
    case 'Q': return persistent_load(u);
    case 'R': return reduce(u);
    case 'b':
        if (!pop(u) || u->sp == 0) BAD("pickle: BUILD without an object");
        return 0; /* state ignored */
    case 's': return setitems(u, u->sp - 2);
    case 'u': { /* SETITEMS: drop the MARK, then as SETITEM */
        int m = find_mark(u);
        if (m < 0) BAD("pickle: no MARK");
        memmove(u->stack + m, u->stack + m + 1, (size_t)(u->sp - m - 1) * sizeof *u->stack);
        u->sp--;
        return setitems(u, m);
    }
    case 'a': {
        pv *x = pop(u);
        if (!x || u->sp == 0 || u->stack[u->sp - 1]->kind != PV_LIST) BAD("pickle: APPEND without a list");
        return add_item(u->stack[u->sp - 1], x) ? -1 : 0;
    }
    case 'e': {
        int m = find_mark(u);
        if (m < 1 || u->stack[m - 1]->kind != PV_LIST) BAD("pickle: APPENDS without a list");
        return collect(u, PV_LIST, u->stack[m - 1]);
    }
    case '.': return 1; /* STOP */
    default:
        BAD("pickle opcode 0x%02x at byte %ld is not supported (not a tensor checkpoint)", op,
            (long)(u->p - 1 - u->start));
    }
}

/* ---------------- the checkpoint ---------------- */

static const pv *dict_get(const pv *d, const char *key) {
    for (int i = 0; d && d->kind == PV_DICT && i + 1 < d->n; i += 2)
        if (d->items[i]->kind == PV_STR && !strcmp(d->items[i]->s, key)) return d->items[i + 1];
    return NULL;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Adds the tensors of dict d (and of the dicts nested in it, named "key.name", to depth 4) to f's table. */
static int add_tensors(st_file *f, int *cap, const pv *d, const char *prefix, int depth, char *why, size_t wl) {
    for (int i = 0; i + 1 < d->n; i += 2) {
        const pv *k = d->items[i], *t = d->items[i + 1];
        if (k->kind != PV_STR) continue;
        char name[1024];
        if (snprintf(name, sizeof name, "%s%s", prefix, k->s) >= (int)sizeof name)
            return snprintf(why, wl, "a tensor name longer than %zu bytes", sizeof name - 1), -1;
        if (t->kind == PV_DICT && depth < 4) { /* nested: {"params_ema": {...}}, {"string_to_param": {...}} */
            char nested[1030];
            snprintf(nested, sizeof nested, "%s.", name);
            if (add_tensors(f, cap, t, nested, depth + 1, why, wl) != 0) return -1;
            continue;
        }
        if (t->kind != PV_TENSOR) continue; /* other entries (numbers, strings) are not weights */
        if (f->n_tensors == *cap) {
            int c = *cap ? 2 * *cap : 256;
            st_tensor *p = realloc(f->tensors, (size_t)c * sizeof *p);
            if (!p) return snprintf(why, wl, "out of memory"), -1;
            f->tensors = p;
            *cap = c;
        }
        st_tensor *e = &f->tensors[f->n_tensors];
        memset(e, 0, sizeof *e);
        if (!(e->name = strdup(name))) return snprintf(why, wl, "out of memory"), -1;
        f->n_tensors++;
        e->dtype = t->dtype;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        e->numel = t->numel;
        e->nbytes = (size_t)t->numel * st_dtype_size(t->dtype);
        e->data = t->storage->data + (size_t)t->offset * st_dtype_size(t->dtype);
    }
    return 0;
}

/* The dict's tensors as the table's entries (sorted by name): the state dict's own, and those of nested dicts under
 * their key ("params_ema.conv_first.weight", "string_to_param.*"). */
static int fill_table(st_file *f, const pv *sd, char *why, size_t wl) {
    int cap = 0;
    if (add_tensors(f, &cap, sd, "", 0, why, wl) != 0) return -1;
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, compare_names);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name))
            return snprintf(why, wl, "tensor '%s' appears twice", f->tensors[i].name), -1;
    if (f->n_tensors == 0) return snprintf(why, wl, "holds no tensors"), -1;
    return 0;
}

int ckpt_parse(st_file *f, const void *buf, size_t size, const char *path, char *err, size_t errlen) {
    if (!f->path && !(f->path = strdup(path))) return st_fail(err, errlen, path, "out of memory");
    zip_dir z = {0};
    unpickler u = {0};
    int rc = zip_read(buf, size, &z, u.why, sizeof u.why);
    const zip_entry *pkl = NULL;
    for (int i = 0; rc == 0 && i < z.n && !pkl; i++) /* "<archive>/data.pkl" */
        if (z.e[i].name_len >= 8 && !memcmp(z.e[i].name + z.e[i].name_len - 8, "data.pkl", 8) &&
            (z.e[i].name_len == 8 || z.e[i].name[z.e[i].name_len - 9] == '/'))
            pkl = &z.e[i];
    if (rc == 0 && !pkl) rc = -1, snprintf(u.why, sizeof u.why, "a zip without data.pkl: not a PyTorch checkpoint");
    if (rc == 0 && !pkl->stored) rc = -1, snprintf(u.why, sizeof u.why, "data.pkl is compressed");
    if (rc == 0) {
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(pkl->name_len - 8), pkl->name);
        u.p = u.start = pkl->data;
        u.end = pkl->data + pkl->size;
        u.zip = &z;
        u.prefix = prefix;
        u.plen = strlen(prefix);
        u.stack = malloc(MAX_STACK * sizeof(pv *));
        if (!u.stack) rc = -1, snprintf(u.why, sizeof u.why, "out of memory");
        while (rc == 0 && (rc = step(&u)) == 0) {
        }
        if (rc == 1) {
            const pv *top = u.sp == 1 ? u.stack[0] : NULL, *sd = dict_get(top, "state_dict");
            if (!sd) sd = top;
            if (!sd || sd->kind != PV_DICT)
                rc = -1, snprintf(u.why, sizeof u.why, "the pickle holds no dict of tensors");
            else
                rc = fill_table(f, sd, u.why, sizeof u.why);
        }
    }
    if (rc != 0) st_fail(err, errlen, path, "%s", u.why);
    free_all(&u);
    free(z.e);
    return rc == 0 ? 0 : -1;
}

int ckpt_open(st_file *f, const char *path, char *err, size_t errlen) {
    return st_open_with(f, path, ckpt_parse, err, errlen);
}
