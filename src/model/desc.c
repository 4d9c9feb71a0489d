/* desc.c - see desc.h. The families are rows of one table: the tensor that identifies a family, its text
 * encoders, latent scale and defaults. */
#include "model/desc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CLIP_EOS_ID     49407 /* <|endoftext|>: CLIP's tokenizer pads with it */
#define OPENCLIP_PAD_ID 0     /* "!": open_clip's tokenizer pads with it */

/* A text encoder of a family: naming, where, and which outputs it gives. */
typedef struct {
    const char *name;
    text_naming naming;
    const char *prefix;
    int skip, final_norm, pad_id, pooled;
    int clip_l_heads; /* CLIP ViT-L/14's fixed 12 heads (SD 1.x) instead of heads of 64 */
} encoder_rule;

typedef struct {
    model_family family;
    const char *name;
    const char *root; /* the text encoders' common prefix */
    int n_text;
    encoder_rule text[MAX_TEXT_ENCODERS];
    int time_ids;           /* size and crop ids in the added conditioning (SDXL: 6), 0 without one */
    float vae_scale;        /* the family's latent scaling factor (ldm / sgm scale_factor) */
    int unet_head_dim;      /* fixed head width (0: unet_heads heads of any width, 8 by default) */
    const char *prediction; /* the default prediction type; NULL: decided from the UNet (SD 2.x) */
    int default_size;
    sd_spacing spacing;
    int zero_empty_negative;
    int vae_tile_px;
} family_rule;

/* The first encoder's token embedding identifies the family. */
/* clang-format off */
static const family_rule FAMILIES[] = {
    {FAMILY_SD1, "SD 1.x", "cond_stage_model.", 1,
     {{"CLIP ViT-L/14 (transformers naming)", TEXT_CLIP, "cond_stage_model.transformer.text_model.", 0, 1,
       CLIP_EOS_ID, 0, 1}},
     0, 0.18215f, 0, "epsilon", 512, SD_SPACING_DEFAULT, 0, 512},
    {FAMILY_SD2, "SD 2.x", "cond_stage_model.", 1,
     {{"OpenCLIP ViT-H/14 (open_clip naming)", TEXT_OPENCLIP, "cond_stage_model.model.", 1, 1, OPENCLIP_PAD_ID, 0, 0}},
     0, 0.18215f, 64, NULL, 512, SD_SPACING_DEFAULT, 0, 512},
    /* SDXL (sgm): both encoders' penultimate hidden states side by side, no final LayerNorm; the pooled output and
     * six size ids as added conditioning; diffusers' SDXL scheduler config (leading spacing); heads 64 wide */
    {FAMILY_SDXL, "SDXL", "conditioner.", 2,
     {{"CLIP ViT-L/14 (transformers naming)", TEXT_CLIP, "conditioner.embedders.0.transformer.text_model.", 1, 0,
       CLIP_EOS_ID, 0, 0},
      {"OpenCLIP ViT-bigG/14 (open_clip naming)", TEXT_OPENCLIP, "conditioner.embedders.1.model.", 1, 0,
       OPENCLIP_PAD_ID, 1, 0}},
     6, 0.13025f, 64, "epsilon", 1024, SD_SPACING_LEADING, 1, 1024},
};
/* clang-format on */
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof *FAMILIES))

/* Checkpoints of other families, recognised to be refused by name. */
static const struct {
    const char *probe, *what;
} UNSUPPORTED[] = {
    {"conditioner.embedders.0.model.token_embedding.weight",
     "an SDXL refiner (sd_xl_refiner_1.0: one OpenCLIP encoder and aesthetic-score conditioning), not supported yet"},
    {"model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight", "an SD 3 checkpoint (MMDiT), not supported"},
    {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "a FLUX checkpoint, not supported"},
};

/* The tensor whose presence identifies an encoder (its token embedding). */
static void token_embedding_name(const encoder_rule *e, char *out, size_t len) {
    snprintf(out, len, "%s%s", e->prefix,
             e->naming == TEXT_CLIP ? "embeddings.token_embedding.weight" : "token_embedding.weight");
}

static const st_tensor *token_embedding(const tensor_store *s, const encoder_rule *e) {
    char name[256];
    token_embedding_name(e, name, sizeof name);
    return store_find(s, name);
}

/* The family whose first encoder is present; NULL with err set when none is, or when two families are. */
static const family_rule *find_family(const tensor_store *s, char *err, size_t errlen) {
    const family_rule *found = NULL;
    const char *path = s->file.path;
    for (size_t i = 0; i < sizeof UNSUPPORTED / sizeof *UNSUPPORTED; i++)
        if (store_find(s, UNSUPPORTED[i].probe)) {
            snprintf(err, errlen, "%s: is %s (it has '%s')", path, UNSUPPORTED[i].what, UNSUPPORTED[i].probe);
            return NULL;
        }
    for (int i = 0; i < N_FAMILIES; i++) {
        if (!token_embedding(s, &FAMILIES[i].text[0])) continue;
        if (found) {
            char a[256], b[256];
            token_embedding_name(&found->text[0], a, sizeof a);
            token_embedding_name(&FAMILIES[i].text[0], b, sizeof b);
            snprintf(err, errlen, "%s: mixes model families: both '%s' (%s) and '%s' (%s)", path, a, found->name, b,
                     FAMILIES[i].name);
            return NULL;
        }
        found = &FAMILIES[i];
    }
    int has_unet = store_find(s, UNET_PREFIX "input_blocks.0.0.weight") != NULL;
    int has_vae = store_find(s, VAE_PREFIX "decoder.conv_in.weight") != NULL;
    if (!found && !has_unet && !has_vae) {
        snprintf(err, errlen,
                 "%s: not a Stable Diffusion checkpoint (no model.diffusion_model.*, first_stage_model.* "
                 "or text encoder tensors among its %d)",
                 path, s->file.n_tensors);
        return NULL;
    }
    if (!found) { /* a UNet or VAE without any known text encoder: name SD 1.x's, the most common */
        char name[256];
        token_embedding_name(&FAMILIES[0].text[0], name, sizeof name);
        snprintf(err, errlen, "%s: missing tensor '%s' (text encoder)", path, name);
        return NULL;
    }
    if (!has_unet) {
        snprintf(err, errlen, "%s: missing tensor '" UNET_PREFIX "input_blocks.0.0.weight' (UNet)", path);
        return NULL;
    }
    if (!has_vae) {
        snprintf(err, errlen, "%s: missing tensor '" VAE_PREFIX "decoder.conv_in.weight' (VAE)", path);
        return NULL;
    }
    return found;
}

static int parse_positive(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0 || v > 4096) return -1;
    *out = (int)v;
    return 0;
}

/* A positive integer metadata key into *out when present. Returns 0, or -1 with err set. */
static int meta_positive(const tensor_store *s, const char *key, int *out, char *err, size_t errlen) {
    const char *v = st_meta_get(&s->file, key);
    if (!v || parse_positive(v, out) == 0) return 0;
    snprintf(err, errlen, "%s: metadata %s='%s' is not a positive integer", s->file.path, key, v);
    return -1;
}

/* Channels of a 4-D tensor's dimension `dim`, or 0 when absent / not 4-D. */
static int conv_channels(const tensor_store *s, const char *name, int dim) {
    const st_tensor *t = store_find(s, name);
    return t && t->ndim == 4 ? (int)t->shape[dim] : 0;
}

/* Encoder i of the family: its rule, width from the token embedding, heads (metadata key sd.text.heads for the
 * first, sd.text2.heads for the second). */
static int read_encoder(model_desc *d, const tensor_store *s, const encoder_rule *e, int i, char *err, size_t errlen) {
    text_encoder_desc *t = &d->text[i];
    const st_tensor *tok = token_embedding(s, e);
    if (!tok) {
        char name[256];
        token_embedding_name(e, name, sizeof name);
        snprintf(err, errlen, "%s: missing tensor '%s' (text encoder %d)", s->file.path, name, i + 1);
        return -1;
    }
    t->name = e->name;
    t->naming = e->naming;
    t->prefix = e->prefix;
    t->width = tok->ndim == 2 ? (int)tok->shape[1] : 0;
    t->skip = e->skip;
    t->final_norm = e->final_norm;
    t->pad_id = e->pad_id;
    t->pooled = e->pooled;
    /* CLIP ViT-L/14: 12 heads of 64; the OpenCLIP towers: heads of 64 (16 at width 1024, 20 at 1280) */
    t->heads = e->clip_l_heads ? 12 : t->width >= 64 ? t->width / 64 : 1;
    t->heads_key = i == 0 ? "sd.text.heads" : "sd.text2.heads";
    return meta_positive(s, t->heads_key, &t->heads, err, errlen);
}

/* Head counts and prediction type: the family's defaults, overridden by metadata keys. */
static int read_unet_metadata(model_desc *d, const tensor_store *s, const family_rule *f, char *err, size_t errlen) {
    d->unet_heads = 8;
    d->unet_head_dim = f->unet_head_dim;
    if (meta_positive(s, "sd.unet.heads", &d->unet_heads, err, errlen) ||
        meta_positive(s, "sd.unet.head_dim", &d->unet_head_dim, err, errlen))
        return -1;
    const char *v = st_meta_get(&s->file, "sd.prediction");
    if (!v) v = f->prediction;
    if (!v)
        d->prediction = PRED_UNKNOWN;
    else if (strcmp(v, "epsilon") == 0)
        d->prediction = PRED_EPSILON;
    else if (strcmp(v, "v_prediction") == 0)
        d->prediction = PRED_V;
    else {
        snprintf(err, errlen, "%s: metadata sd.prediction='%s' is not epsilon or v_prediction", s->file.path, v);
        return -1;
    }
    return 0;
}

/* UNet input and latent channels: the UNet takes the latent, or latent + mask + masked-image latent. */
static int read_channels(model_desc *d, const tensor_store *s, char *err, size_t errlen) {
    d->unet_in_ch = conv_channels(s, UNET_PREFIX "input_blocks.0.0.weight", 1);
    d->latent_ch = conv_channels(s, VAE_PREFIX "decoder.conv_in.weight", 1);
    if (d->unet_in_ch && d->latent_ch && d->unet_in_ch != d->latent_ch && d->unet_in_ch != 2 * d->latent_ch + 1) {
        snprintf(err, errlen,
                 "%s: tensor '" UNET_PREFIX "input_blocks.0.0.weight' takes %d channels; expected %d (the VAE's "
                 "latent) or %d (an inpainting model)",
                 s->file.path, d->unet_in_ch, d->latent_ch, 2 * d->latent_ch + 1);
        return -1;
    }
    return 0;
}

/* The added conditioning: its width from label_emb's input, the pooled part from the encoder that has one, and the
 * size ids' embedding width from what is left. */
static int read_added(model_desc *d, const tensor_store *s, const family_rule *f, char *err, size_t errlen) {
    const st_tensor *label = store_find(s, UNET_PREFIX "label_emb.0.0.weight");
    if (!f->time_ids) return 0;
    if (!label || label->ndim != 2) {
        snprintf(err, errlen, "%s: missing tensor '" UNET_PREFIX "label_emb.0.0.weight' (%s's added conditioning)",
                 s->file.path, f->name);
        return -1;
    }
    d->added_width = (int)label->shape[1];
    d->time_ids = f->time_ids;
    for (int i = 0; i < d->n_text; i++) {
        char name[256];
        snprintf(name, sizeof name, "%stext_projection", d->text[i].prefix);
        const st_tensor *p = d->text[i].pooled ? store_find(s, name) : NULL;
        if (d->text[i].pooled && (!p || p->ndim != 2)) {
            snprintf(err, errlen, "%s: missing tensor '%s' (the pooled text output)", s->file.path, name);
            return -1;
        }
        if (p) d->pooled_width = (int)p->shape[1];
    }
    int rest = d->added_width - d->pooled_width;
    d->time_id_dim = rest > 0 && rest % (2 * d->time_ids) == 0 ? rest / d->time_ids : 0;
    if (!d->time_id_dim) {
        snprintf(err, errlen,
                 "%s: tensor '" UNET_PREFIX "label_emb.0.0.weight' takes %d inputs: not the pooled output's %d plus %d "
                 "size embeddings",
                 s->file.path, d->added_width, d->pooled_width, d->time_ids);
        return -1;
    }
    return 0;
}

sd_status desc_read(model_desc *d, const tensor_store *s, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    const family_rule *f = find_family(s, err, errlen);
    if (!f) return SD_ERR_MODEL;
    d->family = f->family;
    d->family_name = f->name;
    d->n_text = f->n_text;
    for (int i = 0; i < f->n_text; i++) {
        if (read_encoder(d, s, &f->text[i], i, err, errlen) != 0) return SD_ERR_MODEL;
        d->context_width += d->text[i].width;
    }
    if (read_unet_metadata(d, s, f, err, errlen) != 0 || read_channels(d, s, err, errlen) != 0 ||
        read_added(d, s, f, err, errlen) != 0)
        return SD_ERR_MODEL;
    d->vae_scale = f->vae_scale;
    d->vae_shift = 0.0f;
    d->default_size = f->default_size;
    d->default_spacing = f->spacing;
    d->zero_empty_negative = f->zero_empty_negative;
    d->vae_tile_px = f->vae_tile_px;
    return SD_OK;
}

const char *desc_text_root(const model_desc *d) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i].family == d->family) return FAMILIES[i].root;
    return "cond_stage_model.";
}
