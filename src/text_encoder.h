/* text_encoder.h - the CLIP text transformer of SD 1.x (ViT-L/14 text tower):
 * token + position embeddings, pre-LayerNorm layers with causal self-attention and a
 * quick_gelu MLP, final LayerNorm. Output [77, hidden] conditions the UNet. */
#ifndef SD_TEXT_ENCODER_H
#define SD_TEXT_ENCODER_H

#include "kernels.h"
#include "model.h"

typedef struct {
    int vocab, hidden, layers, heads, mlp, positions;
} text_config;

typedef struct {
    weight ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b; /* self-attention */
    weight ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;                 /* MLP */
} text_layer;

typedef struct {
    text_config c;
    weight tok_emb, pos_emb;   /* [vocab, hidden], [positions, hidden] */
    text_layer *layers;        /* [layers] */
    weight final_w, final_b;
} text_encoder;

/* Sizes from the weight shapes, heads from the model (defaults/metadata). */
int text_encoder_load(text_encoder *te, sd_model *m, char *err, size_t errlen);
void text_encoder_free(text_encoder *te);

/* hidden[positions, hidden] = encoder(ids[positions]). scratch holds a converted half matrix. */
int text_encoder_forward(const text_encoder *te, const int *ids, float *hidden, arena *a, float *scratch);

#endif
