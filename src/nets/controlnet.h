/* controlnet.h - ControlNet (Zhang et al. 2023) in the original (cldm) layout: a copy of the UNet's encoder half
 * (time_embed, input_blocks, middle_block: nets/unet.c loads and runs it) with
 *   input_hint_block.{0,2,...,14}  the hint encoder: eight 3x3 convolutions with SiLU between them (indices 4, 8 and
 *                                  12 with stride 2), from the control image [3, H, W] in [0, 1] to the latent size;
 *                                  its output is added to conv_in's
 *   zero_convs.i.0                 a 1x1 convolution of input block i's output: the residual of skip connection i
 *   middle_block_out.0             a 1x1 convolution of the middle block's output: the middle block's residual
 * Files: lllyasviel's .pth (a state_dict of control_model.* tensors, read by the safe pickle reader) or the F16
 * safetensors releases (no prefix). Sizes come from the shapes; heads and the rest from the base model. */
#ifndef SD_CONTROLNET_H
#define SD_CONTROLNET_H

#include "nets/unet.h"

#define CONTROL_HINT_CONVS 8

typedef struct {
    tensor_store store;
    unet enc;                            /* the encoder half */
    conv_layer hint[CONTROL_HINT_CONVS]; /* input_hint_block.{0, 2, ..., 14} */
    conv_layer *zero;                    /* [enc.c.n_input] zero_convs.i.0 */
    conv_layer mid_out;                  /* middle_block_out.0 */
} controlnet;

/* Loads path for a base model described by d with UNet base: the shapes must be the base's own (a ControlNet of
 * another family or width is refused naming the tensor). Returns SD_OK or a failure with err set. */
sd_status controlnet_load(controlnet *cn, const char *path, const model_desc *d, const unet *base, char *err,
                          size_t errlen);
void controlnet_free(controlnet *cn);

/* hint[model_ch, H/8, W/8] = the hint encoder on image[3, H, W] (RGB in [0, 1]). */
sd_status controlnet_hint(compute *cc, const controlnet *cn, const float *image, int H, int W, float *hint);

/* The residuals of one evaluation: res[i] = strength · zero_convs.i(input block i's output), res[n_input] = strength ·
 * middle_block_out(the middle block's output), for in (in->residuals unused) with the hint added to conv_in; res[i]
 * holds unet_block_floats(&cn->enc, i, B, h, w) floats. */
sd_status controlnet_forward(compute *cc, const controlnet *cn, const unet_input *in, const float *hint, float strength,
                             float *const *res);

#endif
