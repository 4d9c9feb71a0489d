/* naming.h - the one correspondence between the original single-file tensor names (CompVis / Stability
 * layout, what the networks load) and diffusers' / transformers' names, in both directions. It follows
 * diffusers' conversion script (scripts/convert_original_stable_diffusion_to_diffusers.py):
 *   UNet: input_blocks.(L+1)i+j+1.{0,1} ↔ down_blocks.i.{resnets,attentions}.j,
 *         input_blocks.(L+1)(i+1).0.op ↔ down_blocks.i.downsamplers.0.conv,
 *         middle_block.{0,1,2} ↔ mid_block.{resnets.0, attentions.0, resnets.1},
 *         output_blocks.(L+1)i+j.{0,1} ↔ up_blocks.i.{resnets,attentions}.j, the upsampler after them,
 *         resnet in_layers.0/2 ↔ norm1/conv1, emb_layers.1 ↔ time_emb_proj, out_layers.0/3 ↔ norm2/conv2,
 *         skip_connection ↔ conv_shortcut; time_embed.0/2 ↔ time_embedding.linear_1/2, out.0/2 ↔ conv_norm_out/out
 *         (L = resnets per level, 2 in SD 1.x / 2.x)
 *   VAE:  encoder.down.i.block.j ↔ encoder.down_blocks.i.resnets.j, decoder.up.(n−1−i) ↔ decoder.up_blocks.i,
 *         mid.block_1/attn_1/block_2 ↔ mid_block.resnets.0/attentions.0/resnets.1, attention q/k/v/proj_out/norm
 *         ↔ to_q/to_k/to_v/to_out.0/group_norm, nin_shortcut ↔ conv_shortcut, norm_out ↔ conv_norm_out
 *   CLIP text encoder: cond_stage_model.transformer.text_model.X ↔ text_model.X
 * Names are module paths without the ".weight" / ".bias" suffix unless said otherwise. */
#ifndef SD_NAMING_H
#define SD_NAMING_H

#include <stddef.h>

/* Original UNet module path (after "model.diffusion_model.") → diffusers path. 0, or -1 when none. */
int naming_unet_to_diffusers(const char *orig, int L, char *out, size_t len);

/* diffusers UNet module path → original path; up_has_attention(i) tells whether up_blocks.i has attentions
 * (its upsampler is then output block item 2, else item 1). 0, or -1 when the name is not a UNet module. */
int naming_unet_from_diffusers(const char *diff, int L, int (*up_has_attention)(int i, void *user), void *user,
                               char *out, size_t len);

/* diffusers VAE module path → original path (after "first_stage_model."); n_up = decoder levels. */
int naming_vae_from_diffusers(const char *diff, int n_up, char *out, size_t len);

#endif
