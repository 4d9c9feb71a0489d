/* image.h - input pictures for img2img and inpainting, preprocessed as diffusers' VaeImageProcessor
 * does: resize with Pillow's Lanczos filter, RGB in [-1, 1], masks converted to grey and binarised. */
#ifndef SD_IMAGE_H
#define SD_IMAGE_H

#include "sd.h"

#include <stdint.h>

/* dst[oh, ow, ch] = src[h, w, ch] resized with Pillow's Image.resize(LANCZOS) (a = 3, support widened
 * by the scale when shrinking, 22-bit fixed-point weights, horizontal pass first, 8-bit rounding and
 * clipping after each pass). A size that does not change is copied. Returns 0, -1 without memory. */
int image_resize_lanczos(const uint8_t *src, int w, int h, int ch, uint8_t *dst, int ow, int oh);

/* out[3, H, W] = 2·(v/255) − 1 of the image as RGB (alpha dropped, grey replicated), resized to W x H. */
int image_to_model_input(const sd_pixels *p, int W, int H, float *out);
/* The same in [0, 1]: v/255 (a ControlNet's control image, an upscaler's input). */
int image_to_unit_rgb(const sd_pixels *p, int W, int H, float *out);

/* mask[H, W] = 1 where the mask, resized to W x H in its own channels and converted to grey as Pillow's
 * convert("L") does, is >= 128 (v/255 >= 0.5: repaint), else 0. */
int image_binary_mask(const sd_pixels *p, int W, int H, float *mask);

#endif
