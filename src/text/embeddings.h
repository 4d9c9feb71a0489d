/* embeddings.h - textual-inversion embeddings (Gal et al. 2022) as AUTOMATIC1111 uses them: every embedding file of a
 * folder is available by its file name without the extension; where a prompt's tokens (of one emphasis span) contain
 * the name's BPE tokens, those tokens are replaced by the file's N vectors at the token-embedding stage (the N
 * positions carry the span's weight; an embedding never splits across a 75-token chunk).
 *
 * Files: A1111's .pt (a torch zip whose pickle holds string_to_param: {"*": tensor [N, C]}, read by the safe pickle
 * reader), safetensors or .bin with one tensor (emb_params, or diffusers' learned_embeds named after the token, [N, C]
 * or [C]), and SDXL files with clip_l [N, 768] and clip_g [N, 1280]. A file that cannot serve this model (another
 * width, an SDXL file on SD 1.x, an unreadable or hostile file) is kept as unusable with the reason: a prompt that
 * names it is refused, any other run goes on. */
#ifndef SD_EMBEDDINGS_H
#define SD_EMBEDDINGS_H

#include "model/desc.h"
#include "text/tokenizer.h"

#include <stdio.h>

#define EMB_MAX_NAME_IDS 32 /* BPE tokens of a name at most */

typedef struct {
    char *name; /* file name without the extension */
    char *path;
    int ids[EMB_MAX_NAME_IDS]; /* the name's BPE tokens (no BOS / EOS) */
    int n_ids;
    int n_vectors;                     /* N */
    float *vectors[MAX_TEXT_ENCODERS]; /* [N, width of encoder e], float32; NULL when unusable */
    char *unusable;                    /* why this model cannot use it, or NULL */
    char hash[13];                     /* the first 12 hex digits of the file's SHA-256 (A1111's short hash) */
} embedding;

typedef struct {
    embedding *e; /* [n] */
    int n;
} embedding_set;

/* Loads every *.pt, *.bin and *.safetensors of dir for a model described by d whose encoders have these widths.
 * Files that cannot serve the model are kept as unusable, with a one-line note on log (may be NULL). Returns SD_OK,
 * or SD_ERR_IO (dir unreadable) / SD_ERR_NOMEM with err set. */
sd_status embeddings_load_dir(embedding_set *s, const char *dir, const tokenizer *tok, const model_desc *d,
                              const int *widths, FILE *log, char *err, size_t errlen);
void embeddings_free(embedding_set *s);

/* The embedding whose name's tokens start at ids[0] (the longest name when several do), or NULL. */
const embedding *embeddings_match(const embedding_set *s, const int *ids, int n);

#endif
