/* desc.h - what a checkpoint is, read once from its tensor names, shapes and metadata: the model families as a
 * table of descriptions (desc.c), and the description the rest of the library reads every model-dependent fact
 * from (text encoders, the UNet's conditioning, latent and VAE scale, the family's defaults) instead of
 * switching on the family. Adding a family is a row of that table, an encoder option or a conditioning input,
 * not a new pipeline. */
#ifndef SD_DESC_H
#define SD_DESC_H

#include "sd.h"

#include "model/store.h"

#include <stdio.h>

/* Prefixes of the original single-file layout (v1-5-pruned-emaonly.safetensors, sd_xl_base_1.0.safetensors). */
#define UNET_PREFIX "model.diffusion_model."
#define VAE_PREFIX  "first_stage_model."

#define MAX_TEXT_ENCODERS 2

typedef enum { FAMILY_SD1 = 1, FAMILY_SD2, FAMILY_SDXL } model_family;
typedef enum { PRED_UNKNOWN = 0, PRED_EPSILON, PRED_V } model_prediction;
typedef enum { TEXT_CLIP = 1, TEXT_OPENCLIP } text_naming;

/* One text encoder: where it is, how it is named, and which of its outputs the UNet takes. */
typedef struct {
    const char *name;      /* "CLIP ViT-L/14", ... (by naming and family; the sizes come from the shapes) */
    text_naming naming;    /* CLIP (transformers names, quick_gelu, separate q/k/v) or OpenCLIP (open_clip names,
                              exact GELU, fused in_proj q/k/v) */
    const char *prefix;    /* where its tensors live */
    int width;             /* hidden size, from the token embedding's shape */
    int heads;             /* attention heads (metadata, else the family's rule) */
    const char *heads_key; /* the metadata key that sets heads: sd.text.heads, sd.text2.heads */
    int skip;              /* last layers the context does not use (1: the penultimate layer's hidden state) */
    int final_norm;        /* the context goes through the final LayerNorm */
    int pad_id;            /* token after <|endoftext|>: 49407 (CLIP's tokenizer) or 0, "!" (open_clip's) */
    int pooled;            /* also gives the pooled output: ln_final at the first <|endoftext|> times text_projection */
} text_encoder_desc;

typedef struct {
    model_family family;
    const char *family_name; /* "SD 1.x", "SD 2.x", "SDXL" */
    int n_text;
    text_encoder_desc text[MAX_TEXT_ENCODERS];
    /* the UNet's conditioning */
    int context_width;             /* the encoders' widths side by side, per token */
    int added_width;               /* the added conditioning vector's width (label_emb's input), 0 = none */
    int pooled_width;              /* its first part: the pooled text embedding */
    int time_ids, time_id_dim;     /* then time_ids sinusoidal embeddings of time_id_dim channels (size and crop) */
    int unet_heads, unet_head_dim; /* head_dim 0 = unet_heads heads in every transformer */
    int unet_in_ch;                /* latent_ch, or 2·latent_ch + 1 for inpainting models */
    int latent_ch;
    float vae_scale, vae_shift; /* latent = (z − shift)·scale */
    /* the family's defaults */
    model_prediction prediction; /* PRED_UNKNOWN: decided from the UNet at load (SD 2.x without metadata) */
    int default_size;            /* pixels (set at load when it depends on the prediction) */
    sd_spacing default_spacing;  /* SD_SPACING_DEFAULT: each sampler's own */
    int zero_empty_negative;     /* an empty negative prompt is all zeros, not the encoded empty string */
    int vae_tile_px;             /* --vae-tiling's tile size (diffusers' tile_sample_min_size) */
} model_desc;

/* Reads the description of the checkpoint in s (family, encoders, channels, metadata keys sd.*). Returns SD_OK, or
 * SD_ERR_MODEL with err naming the tensor or key when s is not a usable Stable Diffusion checkpoint. */
sd_status desc_read(model_desc *d, const tensor_store *s, char *err, size_t errlen);

/* The text encoders' parameter prefix shared by all of them ("cond_stage_model." or "conditioner."). */
const char *desc_text_root(const model_desc *d);

#endif
