/* arena.h - the activation arena: a bump allocator over large blocks, reset to a mark instead of freed
 * piece by piece. A stage (text encoder, sampling, VAE) allocates its activations here and gives the whole
 * arena back when it ends, so that the peak memory is the largest stage, not the sum. */
#ifndef SD_ARENA_H
#define SD_ARENA_H

#include <stddef.h>

typedef struct arena_block arena_block;
typedef struct {
    arena_block *head, *cur;
    size_t peak, used; /* bytes */
    int failed;        /* an allocation failed (the compute context reports SD_ERR_NOMEM) */
} arena;
typedef struct {
    arena_block *block;
    size_t offset, used;
} arena_mark;

void arena_init(arena *a);
void arena_free(arena *a);
/* n floats, 64-byte aligned, uninitialised. NULL (and a->failed set) when memory runs out. */
float *arena_alloc(arena *a, size_t n);
arena_mark arena_get_mark(const arena *a);
void arena_reset(arena *a, arena_mark m);

#endif
