/* arena.c - see arena.h. */
#include "nn/arena.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA_BLOCK_MIN ((size_t)64 << 20) /* bytes */

struct arena_block {
    arena_block *next;
    size_t size, offset; /* bytes */
    unsigned char *data;
};

void arena_init(arena *a) { memset(a, 0, sizeof *a); }

void arena_free(arena *a) {
    for (arena_block *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b->data);
        free(b);
    }
    memset(a, 0, sizeof *a);
}

#define HUGE_PAGE ((size_t)2 << 20) /* bytes: an x86-64 transparent huge page */

/* `bytes` rounded up to whole huge pages, aligned to one, and marked for transparent huge pages where the
 * kernel has them (its default "madvise" mode): the first touch of a block faults 512x fewer times. Every
 * stage starts in fresh blocks (sd_release_stage frees them), and page faults are dear on virtual machines:
 * on this project's VM, touching 512 MB fresh took 1.4-2.0 s with 4 KB pages, 0.05-0.4 s with huge pages;
 * TAESD's 512x512 decode went from 0.76 to 0.38 s, the VAE's from 7.3-8.6 to 4.1-5.6 s. */
static unsigned char *block_memory(size_t *bytes) {
    *bytes = (*bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    unsigned char *p = aligned_alloc(HUGE_PAGE, *bytes);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, *bytes, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
    return p;
}

static arena_block *arena_new_block(size_t bytes) {
    arena_block *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->size = bytes < ARENA_BLOCK_MIN ? ARENA_BLOCK_MIN : bytes;
    b->data = block_memory(&b->size);
    if (!b->data) {
        free(b);
        return NULL;
    }
    return b;
}

float *arena_alloc(arena *a, size_t n) {
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    if (!a->cur) {
        if (!a->head && !(a->head = arena_new_block(bytes))) {
            a->failed = 1;
            return NULL;
        }
        a->cur = a->head;
        a->cur->offset = 0;
    }
    /* Move to the next block (reusing kept ones) until one has room. */
    while (a->cur->size - a->cur->offset < bytes) {
        arena_block *next = a->cur->next;
        if (next && next->size < bytes) { /* too small for this request: drop it */
            a->cur->next = next->next;
            free(next->data);
            free(next);
            continue;
        }
        if (!next) {
            if (!(next = arena_new_block(bytes))) {
                a->failed = 1;
                return NULL;
            }
            a->cur->next = next;
        }
        a->cur = next;
        a->cur->offset = 0;
    }
    float *p = (float *)(a->cur->data + a->cur->offset);
    a->cur->offset += bytes;
    a->used += bytes;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

arena_mark arena_get_mark(const arena *a) {
    arena_mark m = {a->cur, a->cur ? a->cur->offset : 0, a->used};
    return m;
}

void arena_reset(arena *a, arena_mark m) {
    a->cur = m.block;
    if (a->cur) a->cur->offset = m.offset;
    a->used = m.used;
}
