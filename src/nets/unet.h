/* unet.h - the UNet of every family in the LDM / SGM layout (model.diffusion_model.*).
 *
 * The block structure is read from the tensor names: input_blocks.i is conv_in (i = 0), a
 * ResBlock with an optional SpatialTransformer (of any depth), or a stride-2 downsampling conv; the middle block
 * is ResBlock, SpatialTransformer, ResBlock; output_blocks.i concatenate a skip and run a ResBlock,
 * an optional SpatialTransformer and an optional nearest-2x upsampling conv. Optional inputs: an added
 * conditioning vector (label_emb: SDXL's pooled text and size embeddings), added to the timestep embedding, and
 * residuals added to the skip connections and the middle block's output (a ControlNet's). */
#ifndef SD_UNET_H
#define SD_UNET_H

#include "model/desc.h"
#include "nn/layers.h"

#define UNET_MAX_BLOCKS 64 /* input or output blocks at most */

typedef struct {
    weight norm1_w, norm1_b, norm2_w, norm2_b, norm3_w, norm3_b;
    weight q1, k1, v1, o1_w, o1_b;     /* self-attention */
    weight q2, k2, v2, o2_w, o2_b;     /* cross-attention on the text context */
    weight ff1_w, ff1_b, ff2_w, ff2_b; /* GEGLU feed-forward */
} transformer_block;

typedef struct {
    int ch, heads, head_dim, depth, ff_inner;
    weight norm_w, norm_b, proj_in_w, proj_in_b, proj_out_w, proj_out_b;
    transformer_block *blocks; /* [depth] */
} spatial_transformer;

typedef struct {
    int has_res, has_attn, has_down, has_up;
    int in_ch, out_ch; /* channels in (after skip concat for output blocks) and out */
    resnet_block res;
    spatial_transformer attn;
    conv_layer sample; /* downsampling (stride 2) or upsampling conv */
} unet_block;

typedef struct {
    int in_ch, out_ch, model_ch, time_dim, ctx_dim, heads, head_dim;
    int added_dim;   /* the added conditioning's width (label_emb.0.0's input), 0 without one */
    int linear_proj; /* the transformers' proj_in / proj_out are linear layers (SD 2.x, SDXL), not 1x1 convolutions */
    int n_input, n_output;
} unet_config;

typedef struct {
    unet_config c;
    conv_layer conv_in;
    weight time1_w, time1_b, time2_w, time2_b;
    weight label1_w, label1_b, label2_w, label2_b; /* label_emb.0.0 / .0.2: [time, added], [time, time] (or empty) */
    unet_block *input, *output;                    /* [n_input] (0 = conv_in, unused), [n_output] */
    unet_block mid_res1, mid_attn, mid_res2;
    weight out_norm_w, out_norm_b;
    conv_layer conv_out;
} unet;

/* Loads the UNet under UNET_PREFIX; heads from the description. Returns SD_OK or SD_ERR_MODEL / SD_ERR_NOMEM. */
sd_status unet_load(unet *u, tensor_store *s, const model_desc *d, char *err, size_t errlen);
void unet_free(unet *u);

/* One evaluation's inputs. */
typedef struct {
    const float *x;   /* [B, in_ch, h, w] */
    const float *t;   /* [B] timesteps */
    const float *ctx; /* [B, ctx_len, ctx_dim] */
    int ctx_len;
    const float *added;            /* [B, added_dim], or NULL when the UNet has no added conditioning */
    const float *const *residuals; /* NULL, or [n_input + 1]: added to input block i's output (the skip connection)
                                      and, last, to the middle block's output; each [B, ch, H, W] of that block */
    int B, h, w;
} unet_input;

/* out[B, out_ch, h, w] = unet(in). Returns SD_OK, or the compute context's failure. */
sd_status unet_forward(compute *cc, const unet *u, const unet_input *in, float *out);

/* Only the encoder half of a UNet under root (conv_in, the time embedding, label_emb, the input blocks, the middle
 * block): a ControlNet's copy of it. */
sd_status unet_load_encoder(unet *u, tensor_store *s, const model_desc *d, const char *root, char *err, size_t errlen);

/* The encoder half on `in` (in->residuals unused), with add[model_ch, h, w] added to conv_in's output of every item
 * (may be NULL): outs[i] = input block i's output (i < n_input), outs[n_input] = the middle block's, each
 * unet_block_floats(u, i, B, h, w) floats. */
sd_status unet_encoder_forward(compute *cc, const unet *u, const unet_input *in, const float *add, float *const *outs);
size_t unet_block_floats(const unet *u, int i, int B, int h, int w);
/* Channels and size of input block i's output (i = n_input: the middle block's) at latent size h x w. */
void unet_block_shape(const unet *u, int i, int h, int w, int *ch, int *H, int *W);

/* FLOPs (2 per multiply-add) of one evaluation on a batch of B at latent h x w with a ctx_len-token context, as
 * direct convolutions and plain attention compute them (for estimates). */
double unet_flops(const unet *u, int B, int h, int w, int ctx_len);

/* The added conditioning vector of one item: [pooled (pooled_width); time_id_dim-channel sinusoidal embeddings
 * of each of n_ids size/crop ids], SDXL's (sgm ConcatTimestepEmbedderND). added[pooled_width + n_ids·time_id_dim]. */
void unet_added_vector(const float *pooled, int pooled_width, const float *ids, int n_ids, int time_id_dim,
                       float *added);

/* Sinusoidal timestep embedding (DDPM / LDM): [cos(t·f_i), sin(t·f_i)], f_i = 10000^(-i/half). */
void timestep_embedding(float t, int dim, float *out);

#endif
