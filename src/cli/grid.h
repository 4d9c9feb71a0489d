/* grid.h - the contact sheet of a sweep (AUTOMATIC1111's X/Y/Z plot): the images in cells, the first axis across,
 * the second down, the third as sub-grids stacked downward, each under a title; the axis values are written in the
 * margins with stb_easy_font's bitmap font (no font files), black on white. */
#ifndef SD_GRID_H
#define SD_GRID_H

#include "jobs.h"

#include <stdint.h>

#define GRID_FONT_SCALE 2 /* screen pixels per font pixel */
#define GRID_PAD        6 /* pixels around a label */

typedef struct {
    int w, h;
    const uint8_t *rgb; /* [h, w, 3] */
} grid_image;

/* Where things go: cells of cell_w x cell_h; a left margin (second-axis labels), a top margin (first-axis
 * labels) and, with a third axis, a title band above each sub-grid. */
typedef struct {
    int nx, ny, nz;
    int cell_w, cell_h;
    int left, top, title;
    int width, height; /* the whole sheet */
} grid_layout;

/* Layout for the axes and images (images in job order: first axis fastest). */
void grid_plan(const sweep_axis *axes, int n_axes, const grid_image *images, grid_layout *g);

/* Top-left corner of the cell at (x, y, z). */
void grid_cell_origin(const grid_layout *g, int x, int y, int z, int *px, int *py);

/* The label of value v on axis ax: "seed: 5", or the replacement text for prompt S/R (printable ASCII). */
void grid_label(const sweep_axis *ax, int v, char *out, size_t max);

/* Draws the sheet into *rgb (malloc'd [g->height, g->width, 3]). Returns 0, or -1 without memory. */
int grid_render(const sweep_axis *axes, int n_axes, const grid_image *images, const grid_layout *g, uint8_t **rgb);

/* AUTOMATIC1111's X/Y/Z plot description for the PNG parameters:
 * `Script: X/Y/Z plot, X Type: Seed, X Values: "1-8", Y Type: ...` (malloc'd). */
char *grid_description(const sweep_axis *axes, int n_axes);

#endif
