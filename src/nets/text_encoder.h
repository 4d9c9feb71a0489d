/* text_encoder.h - the CLIP text transformer that conditions the UNet, in either naming:
 *   CLIP (SD 1.x, transformers' CLIPTextModel: ViT-L/14 text tower, quick_gelu, separate q/k/v),
 *   OpenCLIP (SD 2.x, open_clip's text tower: ViT-H/14, exact GELU, fused in_proj q/k/v).
 * Both: token + position embeddings, pre-LayerNorm layers with causal self-attention and an MLP,
 * final LayerNorm. Output [77, hidden]. */
#ifndef SD_TEXT_ENCODER_H
#define SD_TEXT_ENCODER_H

#include "nn/kernels.h"
#include "model/model.h"

typedef struct {
    int vocab, hidden, layers, heads, mlp, positions;
    int exact_gelu;  /* 1: GELU (OpenCLIP), 0: quick_gelu (CLIP) */
} text_config;

typedef struct {
    weight ln1_w, ln1_b;
    weight qkv_w, qkv_b;                     /* fused [3·hidden, hidden] (OpenCLIP), or empty */
    weight q_w, q_b, k_w, k_b, v_w, v_b;     /* separate (CLIP) */
    weight out_w, out_b;
    weight ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b; /* MLP */
} text_layer;

typedef struct {
    text_config c;
    weight tok_emb, pos_emb;   /* [vocab, hidden], [positions, hidden] */
    text_layer *layers;        /* [layers] */
    weight final_w, final_b;
} text_encoder;

/* Sizes from the weight shapes, naming and heads from the model description. */
int text_encoder_load(text_encoder *te, sd_model *m, char *err, size_t errlen);
void text_encoder_free(text_encoder *te);

/* hidden[positions, hidden] = final_layer_norm(hidden state after the first `n_layers` layers) of
 * ids[positions]. scratch holds a converted half matrix. */
int text_encoder_forward(const text_encoder *te, const int *ids, int n_layers, float *hidden, arena *a, float *scratch);

#endif
