/* unicode.h - the bits of Unicode the CLIP tokenizer needs: UTF-8 decoding/encoding,
 * letter/number/whitespace classes, lowercase and canonical composition (tables generated
 * by tools/gen_unicode.py). */
#ifndef SD_UNICODE_H
#define SD_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Decodes strict UTF-8 (no overlongs, surrogates or values past U+10FFFF) into cps[].
 * Returns the number of code points, or -1 with *bad_offset = byte offset of the first bad sequence. */
long utf8_decode(const char *s, size_t len, uint32_t *cps, size_t *bad_offset);
/* Appends the UTF-8 encoding of cp to out; returns bytes written (1..4). */
int utf8_encode(uint32_t cp, unsigned char *out);

int uni_is_letter(uint32_t cp); /* \p{L} */
int uni_is_number(uint32_t cp); /* \p{N} */
int uni_is_space(uint32_t cp);  /* White_Space */
/* Lowercases cp into out (1 or 2 code points); returns the count. */
int uni_lower(uint32_t cp, uint32_t out[2]);
/* Canonical composition of a pair, or 0 when the pair does not compose. */
uint32_t uni_compose_pair(uint32_t a, uint32_t b);

#endif
