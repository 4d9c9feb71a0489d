/* output.h - writing results: PNG with an AUTOMATIC1111-style `parameters` text chunk, the final
 * latent as safetensors. Where the bytes go:
 *   "-"                                 standard output
 *   an existing device or FIFO          written in place, never replaced (/dev/null, pipes)
 *   a symbolic link                     followed: its target is written as below
 *   a regular file, or a new one        temporary file beside it + fsync + rename, so an interrupted
 *                                       run never leaves a truncated file; an existing file keeps its mode
 * An existing file without write permission is refused, as cp refuses it; a regular file with no write
 * bit at all is refused even for root. */
#ifndef SD_OUTPUT_H
#define SD_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

/* Checks up front that `path` can be written by the rules above: not a directory (nor ending in '/'),
 * not a dangling symbolic link, writable if it exists, and a regular file's directory exists and is
 * writable. Returns 0, or -1 with err set. */
int output_check_path(const char *path, char *err, size_t errlen);

/* Writes `len` bytes to path by the rules above. */
int output_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

/* Removes the temporary file of a write in progress, if any. Async-signal-safe: for a signal handler that exits at
 * once. */
void output_discard_pending(void);

/* PNG of rgb[h, w, 3] with a text chunk key=text (tEXt when ASCII, iTXt UTF-8 otherwise). */
int output_write_png(const char *path, const uint8_t *rgb, int w, int h, const char *key, const char *text, char *err,
                     size_t errlen);

/* Reads the text chunk `key` of a PNG file into a malloc'd string (NULL if absent or unreadable). */
char *output_read_png_text(const char *path, const char *key);

/* One float32 tensor `name` of the given shape as a safetensors file. */
int output_write_tensor(const char *path, const char *name, const int64_t *shape, int ndim, const float *data,
                        char *err, size_t errlen);

#endif
