/* sha256.h - SHA-256 (FIPS 180-4) of a file, for the short hashes AUTOMATIC1111 records (the first hex digits). */
#ifndef SD_SHA256_H
#define SD_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t bytes; /* message length so far */
    uint8_t block[64];
    size_t fill; /* bytes in block */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t digest[32]);

/* hex[65] = the lowercase hex SHA-256 of the file at path. Returns 0, or -1 when it cannot be read. */
int sha256_file_hex(const char *path, char hex[65]);

#endif
