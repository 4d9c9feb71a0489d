/* output.c - see output.h. PNG chunk layout: RFC 2083 (length, type, data, CRC-32 of type+data). */
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* exported by libstb (stb_image_write.h declares it only inside the implementation) */
unsigned char *stbi_write_png_to_mem(const unsigned char *pixels, int stride_bytes, int x, int y, int n, int *out_len);

static char *dir_of(const char *path) {
    char *copy = strdup(path);
    if (!copy) return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

static int is_stdout(const char *path) { return strcmp(path, "-") == 0; }

/* Creates and removes a temporary file in dir, as the write will: 0, or -1 with errno set. */
static int try_create(const char *dir) {
    char probe[4200];
    if (snprintf(probe, sizeof probe, "%s/.sd-tmp-XXXXXX", dir) >= (int)sizeof probe) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = mkstemp(probe);
    if (fd < 0) return -1;
    close(fd);
    unlink(probe);
    return 0;
}

int output_check_path(const char *path, char *err, size_t errlen) {
    struct stat sb, lb;
    if (!path || !*path) {
        snprintf(err, errlen, "output: empty path");
        return -1;
    }
    if (is_stdout(path)) return 0;
    if (path[strlen(path) - 1] == '/') {
        snprintf(err, errlen, "%s: names a directory, not a file", path);
        return -1;
    }
    int exists = stat(path, &sb) == 0;
    if (!exists && lstat(path, &lb) == 0 && S_ISLNK(lb.st_mode)) {
        snprintf(err, errlen, "%s: is a symbolic link to a missing file", path);
        return -1;
    }
    if (exists && S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "%s: is a directory", path);
        return -1;
    }
    if (exists &&
        (access(path, W_OK) != 0 || (S_ISREG(sb.st_mode) && !(sb.st_mode & 0222)))) { /* read-only, even for root */
        snprintf(err, errlen, "%s: cannot write: the file is read-only (permission denied)", path);
        return -1;
    }
    if (exists && !S_ISREG(sb.st_mode)) return 0; /* a device or FIFO: written in place */
    char *target = exists ? realpath(path, NULL) : strdup(path), *dir = target ? dir_of(target) : NULL;
    int rc = 0;
    if (!dir) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    } else if (stat(dir, &sb) != 0) {
        snprintf(err, errlen, "%s: directory '%s' does not exist", path, dir);
        rc = -1;
    } else if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "%s: '%s' is not a directory", path, dir);
        rc = -1;
    } else if (access(dir, W_OK) != 0) {
        snprintf(err, errlen, "%s: directory '%s' is not writable (%s)", path, dir, strerror(errno));
        rc = -1;
    } else if (try_create(dir) != 0) { /* what access() cannot tell: /proc, a full or odd filesystem */
        snprintf(err, errlen, "%s: cannot create a file in '%s': %s", path, dir, strerror(errno));
        rc = -1;
    }
    free(target);
    free(dir);
    return rc;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Standard output, a device or a FIFO: written in place, never replaced. */
static int write_in_place(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    int fd = is_stdout(path) ? 1 : open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write_all(fd, data, len) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", is_stdout(path) ? "standard output" : path, strerror(errno));
        if (fd > 1) close(fd);
        return -1;
    }
    return fd > 1 ? close(fd) : 0;
}

/* The temporary file being written, for output_discard_pending (set while pending is 1). */
static char pending_path[4096];
static volatile sig_atomic_t pending;

void output_discard_pending(void) {
    if (pending) unlink(pending_path);
}

/* A regular file (or a new one): temporary file beside the target + fsync + rename, so a crash never
 * leaves a truncated file. A symbolic link is followed: its target is replaced, and keeps its mode. */
static int write_replacing(const char *path, const struct stat *old, const void *data, size_t len, char *err,
                           size_t errlen) {
    char *target = old ? realpath(path, NULL) : strdup(path), *dir = target ? dir_of(target) : NULL;
    size_t tlen = dir ? strlen(dir) + 32 : 0;
    char *tmp = dir ? malloc(tlen) : NULL;
    if (!tmp) {
        free(target);
        free(dir);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    snprintf(tmp, tlen, "%s/.sd-tmp-XXXXXX", dir);
    free(dir);
    int fd = mkstemp(tmp);
    if (fd >= 0 && strlen(tmp) < sizeof pending_path) {
        memcpy(pending_path, tmp, strlen(tmp) + 1);
        pending = 1;
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(errno));
        free(tmp);
        free(target);
        return -1;
    }
    mode_t mask = umask(0);
    umask(mask);
    mode_t mode = old ? old->st_mode & 07777 : 0666 & ~mask; /* mkstemp creates 0600 */
    int ok = write_all(fd, data, len) == 0 && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, target) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        ok = 0;
    }
    pending = 0;
    free(tmp);
    free(target);
    return ok ? 0 : -1;
}

int output_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    if (output_check_path(path, err, errlen) != 0) return -1;
    struct stat sb;
    int exists = !is_stdout(path) && stat(path, &sb) == 0;
    if (is_stdout(path) || (exists && !S_ISREG(sb.st_mode))) return write_in_place(path, data, len, err, errlen);
    return write_replacing(path, exists ? &sb : NULL, data, len, err, errlen);
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = (unsigned char)v;
}

/* Builds a tEXt (ASCII) or iTXt (UTF-8) chunk; returns its malloc'd bytes and length. */
static unsigned char *text_chunk(const char *key, const char *text, size_t *out_len) {
    int ascii = 1;
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        if (*c >= 0x80) ascii = 0;
    size_t klen = strlen(key), tlen = strlen(text);
    size_t data_len = klen + 1 + (ascii ? 0 : 4) + tlen;
    unsigned char *c = malloc(12 + data_len);
    if (!c) return NULL;
    put_be32(c, (uint32_t)data_len);
    memcpy(c + 4, ascii ? "tEXt" : "iTXt", 4);
    unsigned char *d = c + 8;
    memcpy(d, key, klen + 1); /* keyword and its NUL */
    d += klen + 1;
    if (!ascii) {
        memcpy(d, "\0\0\0\0", 4);
        d += 4;
    } /* no compression, empty language and translation */
    memcpy(d, text, tlen);
    put_be32(c + 8 + data_len, crc32_update(0, c + 4, 4 + data_len));
    *out_len = 12 + data_len;
    return c;
}

int output_write_png(const char *path, const uint8_t *rgb, int w, int h, const char *key, const char *text, char *err,
                     size_t errlen) {
    int png_len = 0;
    unsigned char *png = stbi_write_png_to_mem(rgb, w * 3, w, h, 3, &png_len);
    size_t chunk_len = 0;
    unsigned char *chunk = text ? text_chunk(key, text, &chunk_len) : NULL;
    const size_t ihdr_end = 8 + 25; /* signature + IHDR chunk */
    unsigned char *out = png ? malloc((size_t)png_len + chunk_len) : NULL;
    if (!png || !out || (text && !chunk) || (size_t)png_len < ihdr_end) {
        free(png);
        free(chunk);
        free(out);
        snprintf(err, errlen, "%s: cannot encode the PNG (out of memory)", path);
        return -1;
    }
    memcpy(out, png, ihdr_end);
    if (chunk) memcpy(out + ihdr_end, chunk, chunk_len);
    memcpy(out + ihdr_end + chunk_len, png + ihdr_end, (size_t)png_len - ihdr_end);
    int rc = output_write_atomic(path, out, (size_t)png_len + chunk_len, err, errlen);
    free(png);
    free(chunk);
    free(out);
    return rc;
}

char *output_read_png_text(const char *path, const char *key) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char sig[8], hdr[8];
    char *result = NULL;
    if (fread(sig, 1, 8, f) != 8) goto done;
    while (!result && fread(hdr, 1, 8, f) == 8) {
        uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        if (len > (64u << 20)) break;
        int is_text = !memcmp(hdr + 4, "tEXt", 4), is_itxt = !memcmp(hdr + 4, "iTXt", 4);
        if (!is_text && !is_itxt) {
            if (fseek(f, (long)len + 4, SEEK_CUR) != 0) break;
            continue;
        }
        char *data = malloc(len + 1);
        if (!data || fread(data, 1, len, f) != len) {
            free(data);
            break;
        }
        data[len] = 0;
        fseek(f, 4, SEEK_CUR);
        size_t klen = strnlen(data, len);
        if (klen < len && strcmp(data, key) == 0) {
            size_t off = klen + 1 + (is_itxt ? 2 : 0);
            if (is_itxt) {
                off += strnlen(data + off, len - off) + 1;
                off += strnlen(data + off, len - off) + 1;
            }
            if (off <= len) result = strdup(data + off);
        }
        free(data);
    }
done:
    fclose(f);
    return result;
}

int output_write_tensor(const char *path, const char *name, const int64_t *shape, int ndim, const float *data,
                        char *err, size_t errlen) {
    char header[512], dims[200] = "";
    size_t numel = 1, off = 0;
    for (int i = 0; i < ndim; i++) {
        off += (size_t)snprintf(dims + off, sizeof dims - off, "%s%lld", i ? "," : "", (long long)shape[i]);
        numel *= (size_t)shape[i];
    }
    int hl = snprintf(header, sizeof header, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],\"data_offsets\":[0,%zu]}}",
                      name, dims, numel * 4);
    size_t padded = ((size_t)hl + 7) & ~(size_t)7; /* keep the data 8-byte aligned */
    unsigned char *buf = malloc(8 + padded + numel * 4);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memset(buf + 8, ' ', padded);
    memcpy(buf + 8, header, (size_t)hl);
    memcpy(buf + 8 + padded, data, numel * 4);
    int rc = output_write_atomic(path, buf, 8 + padded + numel * 4, err, errlen);
    free(buf);
    return rc;
}
