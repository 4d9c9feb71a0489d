/* lora.h - LoRA adapters (Hu et al. 2021) merged into a checkpoint's weights as they are loaded:
 *   W' = W + Σ_loras mult · scale · up · down,   scale = alpha / rank (1 without alpha)
 * (1×1 convolutions as matrices; LoCon: down is k×k, up 1×1, Δ[o,i,y,x] = Σ_r up[o,r] · down[r,i,y,x]).
 *
 * File formats: kohya / AUTOMATIC1111 (`lora_unet_<diffusers path>` for SD 1.x / 2.x, `lora_unet_<single-file
 * path>` for SDXL, `lora_te_<transformers path>`, or `lora_te1_` / `lora_te2_` for SDXL's two encoders, with '.'
 * as '_', `.lora_down.weight`, `.lora_up.weight`, optional `.alpha`) and diffusers / PEFT
 * (`unet.<path>.lora_A.weight` = down, `.lora_B.weight` = up, `text_encoder.<path>…`, `text_encoder_2.<path>…`).
 *
 * Names: the set derives, from the checkpoint's own tensor list, the diffusers / transformers module path of
 * every weight matrix (the UNet's input_blocks.3i+j+1 ↔ down_blocks.i.*.j rule and the resnet layer names
 * of diffusers' conversion script; OpenCLIP's fused in_proj as three row ranges, its c_fc / c_proj / out_proj as
 * transformers' fc1 / fc2 / out_proj) and the single-file path of every UNet matrix, and looks the LoRA's modules
 * up in that table: no per-layer list is written by hand. */
#ifndef SD_LORA_H
#define SD_LORA_H

#include "model/desc.h"
#include "model/store.h"

#include <stdio.h>

typedef struct lora_set lora_set;

/* The name table of the LoRA targets of the checkpoint in s, described by d. NULL without memory. */
lora_set *lora_set_create(const tensor_store *s, const model_desc *d);
void lora_set_free(lora_set *s);

/* Reads one LoRA file with a multiplier and maps its modules. Unmatched modules are counted (and listed on
 * `log` when verbose); a file that matches nothing, a module with inconsistent ranks or shapes, or an
 * unreadable file is an error (-1, err set). */
int lora_set_add(lora_set *s, const char *path, float multiplier, FILE *log, int verbose, char *err, size_t errlen);

/* Does any added LoRA change checkpoint tensor t? */
int lora_set_targets(const lora_set *s, const st_tensor *t);

/* Adds every delta aimed at t into w, its float32 values [t->numel]. Returns 0, or -1 without memory. */
int lora_set_merge(lora_set *s, const st_tensor *t, float *w);

/* One line per added file on log: how many of its modules were merged (call after the networks loaded). */
void lora_set_report(const lora_set *s, FILE *log);

/* Entry i of the name table (sorted by key): module key, tensor and row range; 0 past the end (for tools). */
int lora_set_target_at(const lora_set *s, int i, const char **key, const st_tensor **t, int *row0, int *rows);

/* The checkpoint tensor (and first row) a kohya / PEFT module name maps to, or NULL (for tests). */
const st_tensor *lora_set_lookup(const lora_set *s, const char *module, int *row0);

#endif
