/* grid.c - the contact sheet of a sweep (see grid.h). */
#include "grid.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb_easy_font.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#define FONT_LINE 12 /* stb_easy_font's line height in font pixels */
#define TEXT_H    (FONT_LINE * GRID_FONT_SCALE)
#define MAX_LEFT  400 /* the second axis' labels are cut to fit this margin */

void grid_label(const sweep_axis *ax, int v, char *out, size_t max) {
    if (ax->option)
        snprintf(out, max, "%s: %s", ax->short_key, ax->values[v]);
    else
        snprintf(out, max, "%s", ax->values[v]);
    for (char *p = out; *p; p++) /* the font has printable ASCII only */
        if (*p < 32 || *p > 126) *p = '?';
}

/* Width in pixels of text drawn at `scale` screen pixels per font pixel. */
static int text_width(const char *s, int scale) { return stb_easy_font_width((char *)s) * scale; }

/* The scale text is drawn at in a box `width` wide: GRID_FONT_SCALE when it fits, else 1, cut (in place) to fit
 * with "..." when even that is too wide. */
static int fit(char *s, int width) {
    if (text_width(s, GRID_FONT_SCALE) <= width) return GRID_FONT_SCALE;
    size_t n = strlen(s);
    while (n > 0 && text_width(s, 1) > width) strcpy(s + --n, "...");
    if (text_width(s, 1) > width) s[0] = 0;
    return 1;
}

void grid_plan(const sweep_axis *axes, int n_axes, const grid_image *images, grid_layout *g) {
    memset(g, 0, sizeof *g);
    g->nx = n_axes > 0 ? axes[0].n : 1;
    g->ny = n_axes > 1 ? axes[1].n : 1;
    g->nz = n_axes > 2 ? axes[2].n : 1;
    for (int i = 0; i < g->nx * g->ny * g->nz; i++) {
        if (images[i].w > g->cell_w) g->cell_w = images[i].w;
        if (images[i].h > g->cell_h) g->cell_h = images[i].h;
    }
    g->top = TEXT_H + 2 * GRID_PAD;
    for (int y = 0; n_axes > 1 && y < g->ny; y++) {
        char label[256];
        grid_label(&axes[1], y, label, sizeof label);
        int w = text_width(label, GRID_FONT_SCALE) + 2 * GRID_PAD;
        if (w > g->left) g->left = w;
    }
    if (g->left > MAX_LEFT) g->left = MAX_LEFT;
    g->title = n_axes > 2 ? TEXT_H + 2 * GRID_PAD : 0;
    g->width = g->left + g->nx * g->cell_w;
    g->height = g->nz * (g->title + g->top + g->ny * g->cell_h);
}

void grid_cell_origin(const grid_layout *g, int x, int y, int z, int *px, int *py) {
    *px = g->left + x * g->cell_w;
    *py = z * (g->title + g->top + g->ny * g->cell_h) + g->title + g->top + y * g->cell_h;
}

/* Black text at `scale` with its top-left corner at (x, y), clipped to the sheet. */
static void draw_text(uint8_t *rgb, const grid_layout *g, int x, int y, const char *text, int scale) {
    static char quads[64 * 1024]; /* 64 bytes a quad */
    int n = stb_easy_font_print(0, 0, (char *)text, NULL, quads, sizeof quads);
    for (int q = 0; q < n; q++) {
        const float *v0 = (const float *)(quads + 64 * q),
                    *v2 = (const float *)(quads + 64 * q + 32); /* opposite corners */
        int x0 = x + (int)lroundf(v0[0]) * scale, y0 = y + (int)lroundf(v0[1]) * scale;
        int x1 = x + (int)lroundf(v2[0]) * scale, y1 = y + (int)lroundf(v2[1]) * scale;
        for (int py = y0 < 0 ? 0 : y0; py < y1 && py < g->height; py++)
            for (int px = x0 < 0 ? 0 : x0; px < x1 && px < g->width; px++)
                memset(rgb + 3 * ((size_t)py * g->width + px), 0, 3);
    }
}

/* A label centred in the box [x, x+w) x [y, y+h), smaller or cut when it does not fit. */
static void draw_label(uint8_t *rgb, const grid_layout *g, int x, int y, int w, int h, const char *label) {
    char text[256];
    snprintf(text, sizeof text, "%s", label);
    int scale = fit(text, w - 2 * GRID_PAD);
    draw_text(rgb, g, x + (w - text_width(text, scale)) / 2, y + (h - FONT_LINE * scale) / 2 + scale, text, scale);
}

static void paste(uint8_t *rgb, const grid_layout *g, int px, int py, const grid_image *im) {
    px += (g->cell_w - im->w) / 2; /* centred in its cell */
    py += (g->cell_h - im->h) / 2;
    for (int r = 0; r < im->h; r++)
        memcpy(rgb + 3 * ((size_t)(py + r) * g->width + px), im->rgb + 3 * (size_t)r * im->w, 3 * (size_t)im->w);
}

int grid_render(const sweep_axis *axes, int n_axes, const grid_image *images, const grid_layout *g, uint8_t **out) {
    uint8_t *rgb = malloc(3 * (size_t)g->width * g->height); /* [height, width, 3] */
    if (!rgb) return -1;
    memset(rgb, 255, 3 * (size_t)g->width * g->height);
    char label[256];
    for (int z = 0; z < g->nz; z++) {
        int px, py;
        grid_cell_origin(g, 0, 0, z, &px, &py);
        if (n_axes > 2) {
            grid_label(&axes[2], z, label, sizeof label);
            draw_label(rgb, g, 0, py - g->top - g->title, g->width, g->title, label);
        }
        for (int x = 0; x < g->nx; x++) {
            grid_label(&axes[0], x, label, sizeof label);
            draw_label(rgb, g, px + x * g->cell_w, py - g->top, g->cell_w, g->top, label);
        }
        for (int y = 0; n_axes > 1 && y < g->ny; y++) {
            grid_label(&axes[1], y, label, sizeof label);
            draw_label(rgb, g, 0, py + y * g->cell_h, g->left, g->cell_h, label);
        }
        for (int y = 0; y < g->ny; y++)
            for (int x = 0; x < g->nx; x++) {
                grid_cell_origin(g, x, y, z, &px, &py);
                paste(rgb, g, px, py, &images[(z * g->ny + y) * g->nx + x]);
            }
    }
    *out = rgb;
    return 0;
}

/* Appends v to t (n of len bytes used) as AUTOMATIC1111's infotext quote() writes a value: as it is unless it holds
 * ',', ':' or a newline, else as a JSON string (json.dumps(v, ensure_ascii=False): \" \\ and control characters
 * escaped), so that its reader gives v back. */
static void append_quoted(char *t, size_t len, size_t *n, const char *v) {
    if (!strpbrk(v, ",:\n")) {
        *n += (size_t)snprintf(t + *n, len - *n, "%s", v);
        return;
    }
    *n += (size_t)snprintf(t + *n, len - *n, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p && *n + 8 < len; p++) {
        const char *esc = *p == '"'    ? "\\\""
                          : *p == '\\' ? "\\\\"
                          : *p == '\n' ? "\\n"
                          : *p == '\t' ? "\\t"
                          : *p == '\r' ? "\\r"
                                       : NULL;
        if (esc)
            *n += (size_t)snprintf(t + *n, len - *n, "%s", esc);
        else if (*p < 0x20)
            *n += (size_t)snprintf(t + *n, len - *n, "\\u%04x", *p);
        else
            t[(*n)++] = (char)*p;
    }
    *n += (size_t)snprintf(t + *n, len - *n, "\"");
}

char *grid_description(const sweep_axis *axes, int n_axes) {
    size_t len = 64;
    for (int x = 0; x < n_axes; x++) len += 6 * strlen(axes[x].spec) + 64; /* \u00XX: 6 bytes per byte at most */
    char *t = malloc(len);
    if (!t) return NULL;
    size_t n = (size_t)snprintf(t, len, "Script: X/Y/Z plot");
    for (int x = 0; x < n_axes; x++) {
        const char *eq = strchr(axes[x].spec, '=');
        n += (size_t)snprintf(t + n, len - n, ", %c Type: %s, %c Values: ", "XYZ"[x], axes[x].label, "XYZ"[x]);
        append_quoted(t, len, &n, eq + 1);
    }
    return t;
}
