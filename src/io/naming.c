/* naming.c - see naming.h. Each table is read in both directions where both are needed. */
#include "io/naming.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *orig, *diff;
} name_pair;

/* Resnet layers of the UNet: original ↔ diffusers. */
static const name_pair unet_resnet[] = {{"in_layers.0", "norm1"},          {"in_layers.2", "conv1"},
                                        {"emb_layers.1", "time_emb_proj"}, {"out_layers.0", "norm2"},
                                        {"out_layers.3", "conv2"},         {"skip_connection", "conv_shortcut"}};
/* Whole modules of the UNet outside the blocks. */
static const name_pair unet_top[] = {{"time_embed.0", "time_embedding.linear_1"},
                                     {"time_embed.2", "time_embedding.linear_2"},
                                     {"input_blocks.0.0", "conv_in"},
                                     {"out.0", "conv_norm_out"},
                                     {"out.2", "conv_out"}};
/* VAE resnet and attention layers, and the coders' ends. */
static const name_pair vae_layer[] = {
    {"nin_shortcut", "conv_shortcut"}, {"norm", "group_norm"}, {"q", "to_q"}, {"k", "to_k"},  {"v", "to_v"},
    {"proj_out", "to_out.0"},          {"q", "query"},         {"k", "key"},  {"v", "value"}, {"proj_out", "proj_attn"},
    {"norm_out", "conv_norm_out"}};

/* The other side of `name` in a table (from_diff: name is diffusers'); name itself when absent. */
static const char *lookup(const name_pair *t, size_t n, const char *name, int from_diff) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(from_diff ? t[i].diff : t[i].orig, name)) return from_diff ? t[i].orig : t[i].diff;
    return NULL;
}
#define LOOKUP(table, name, from_diff) lookup(table, sizeof table / sizeof *table, name, from_diff)

int naming_unet_to_diffusers(const char *orig, int L, char *out, size_t len) {
    int n, k;
    char rest[256];
    const char *top = LOOKUP(unet_top, orig, 0), *kind;
    if (top) return snprintf(out, len, "%s", top), 0;
    if (sscanf(orig, "input_blocks.%d.%d.%255s", &n, &k, rest) == 3 && n >= 1) {
        int i = (n - 1) / (L + 1), j = (n - 1) % (L + 1);
        if (j == L) return strcmp(rest, "op") ? -1 : (snprintf(out, len, "down_blocks.%d.downsamplers.0.conv", i), 0);
        kind = k == 0 ? "resnets" : "attentions";
        snprintf(out, len, "down_blocks.%d.%s.%d.", i, kind, j);
    } else if (sscanf(orig, "middle_block.%d.%255s", &n, rest) == 2) {
        kind = n == 1 ? "attentions" : "resnets";
        snprintf(out, len, "mid_block.%s.%d.", kind, n == 2 ? 1 : 0);
    } else if (sscanf(orig, "output_blocks.%d.%d.%255s", &n, &k, rest) == 3) {
        int i = n / (L + 1), j = n % (L + 1);
        if (k == 2 || (k == 1 && !strcmp(rest, "conv")))
            return strcmp(rest, "conv") ? -1 : (snprintf(out, len, "up_blocks.%d.upsamplers.0.conv", i), 0);
        kind = k == 0 ? "resnets" : "attentions";
        snprintf(out, len, "up_blocks.%d.%s.%d.", i, kind, j);
    } else {
        return -1;
    }
    const char *layer = !strcmp(kind, "resnets") ? LOOKUP(unet_resnet, rest, 0) : rest;
    if (!layer) return -1;
    size_t at = strlen(out);
    snprintf(out + at, len - at, "%s", layer);
    return 0;
}

int naming_unet_from_diffusers(const char *diff, int L, int (*up_has_attention)(int i, void *user), void *user,
                               char *out, size_t len) {
    int i, j, used = 0;
    char rest[256];
    const char *top = LOOKUP(unet_top, diff, 1), *layer;
    if (top) return snprintf(out, len, "%s", top), 0;
    if (sscanf(diff, "down_blocks.%d.downsamplers.0.con%n", &i, &used) == 1 && !strcmp(diff + used, "v"))
        return snprintf(out, len, "input_blocks.%d.0.op", (L + 1) * (i + 1)), 0;
    if (sscanf(diff, "up_blocks.%d.upsamplers.0.con%n", &i, &used) == 1 && !strcmp(diff + used, "v"))
        return snprintf(out, len, "output_blocks.%d.%d.conv", (L + 1) * i + L, up_has_attention(i, user) ? 2 : 1), 0;
    if (sscanf(diff, "down_blocks.%d.resnets.%d.%255s", &i, &j, rest) == 3 && (layer = LOOKUP(unet_resnet, rest, 1)))
        return snprintf(out, len, "input_blocks.%d.0.%s", (L + 1) * i + j + 1, layer), 0;
    if (sscanf(diff, "down_blocks.%d.attentions.%d.%255s", &i, &j, rest) == 3)
        return snprintf(out, len, "input_blocks.%d.1.%s", (L + 1) * i + j + 1, rest), 0;
    if (sscanf(diff, "mid_block.resnets.%d.%255s", &j, rest) == 2 && (layer = LOOKUP(unet_resnet, rest, 1)))
        return snprintf(out, len, "middle_block.%d.%s", j == 0 ? 0 : 2, layer), 0;
    if (sscanf(diff, "mid_block.attentions.0.%255s", rest) == 1)
        return snprintf(out, len, "middle_block.1.%s", rest), 0;
    if (sscanf(diff, "up_blocks.%d.resnets.%d.%255s", &i, &j, rest) == 3 && (layer = LOOKUP(unet_resnet, rest, 1)))
        return snprintf(out, len, "output_blocks.%d.0.%s", (L + 1) * i + j, layer), 0;
    if (sscanf(diff, "up_blocks.%d.attentions.%d.%255s", &i, &j, rest) == 3)
        return snprintf(out, len, "output_blocks.%d.1.%s", (L + 1) * i + j, rest), 0;
    return -1;
}

/* A VAE layer inside a resnet or the attention: its original name. */
static const char *vae_layer_orig(const char *rest) {
    const char *o = LOOKUP(vae_layer, rest, 1);
    return o ? o : rest;
}

int naming_vae_from_diffusers(const char *diff, int n_up, char *out, size_t len) {
    int i, j;
    char coder[8], tail[256], rest[256];
    if (sscanf(diff, "%7[a-z].%255s", coder, tail) != 2 || (strcmp(coder, "encoder") && strcmp(coder, "decoder")))
        return snprintf(out, len, "%s", diff), 0; /* quant_conv, post_quant_conv */
    const char *r = tail;
    if (sscanf(r, "down_blocks.%d.resnets.%d.%255s", &i, &j, rest) == 3)
        return snprintf(out, len, "%s.down.%d.block.%d.%s", coder, i, j, vae_layer_orig(rest)), 0;
    if (sscanf(r, "down_blocks.%d.downsamplers.0.%255s", &i, rest) == 2)
        return snprintf(out, len, "%s.down.%d.downsample.%s", coder, i, rest), 0;
    if (sscanf(r, "up_blocks.%d.resnets.%d.%255s", &i, &j, rest) == 3)
        return snprintf(out, len, "%s.up.%d.block.%d.%s", coder, n_up - 1 - i, j, vae_layer_orig(rest)), 0;
    if (sscanf(r, "up_blocks.%d.upsamplers.0.%255s", &i, rest) == 2)
        return snprintf(out, len, "%s.up.%d.upsample.%s", coder, n_up - 1 - i, rest), 0;
    if (sscanf(r, "mid_block.resnets.%d.%255s", &j, rest) == 2)
        return snprintf(out, len, "%s.mid.block_%d.%s", coder, j + 1, vae_layer_orig(rest)), 0;
    if (sscanf(r, "mid_block.attentions.0.%255s", rest) == 1)
        return snprintf(out, len, "%s.mid.attn_1.%s", coder, vae_layer_orig(rest)), 0;
    return snprintf(out, len, "%s.%s", coder, vae_layer_orig(r)), 0;
}
