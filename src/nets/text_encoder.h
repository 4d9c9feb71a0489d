/* text_encoder.h - the CLIP text transformer that conditions the UNet, in either naming:
 *   CLIP (transformers' CLIPTextModel: ViT-L/14's text tower, quick_gelu, separate q/k/v; SD 1.x, SDXL's first),
 *   OpenCLIP (open_clip's text tower: ViT-H/14, ViT-bigG/14, exact GELU, fused in_proj q/k/v; SD 2.x, SDXL's second).
 * Both: token + position embeddings, pre-LayerNorm layers with causal self-attention and an MLP, a final
 * LayerNorm; OpenCLIP's towers also have a text projection for the pooled output. */
#ifndef SD_TEXT_ENCODER_H
#define SD_TEXT_ENCODER_H

#include "model/desc.h"
#include "nn/kernels.h"

typedef struct {
    int vocab, hidden, layers, heads, mlp, positions;
    int projection; /* pooled output width (text_projection's columns), 0 without a projection */
    int exact_gelu; /* 1: GELU (OpenCLIP), 0: quick_gelu (CLIP) */
} text_config;

typedef struct {
    weight ln1_w, ln1_b;
    weight qkv_w, qkv_b;                 /* fused [3·hidden, hidden] (OpenCLIP), or empty */
    weight q_w, q_b, k_w, k_b, v_w, v_b; /* separate (CLIP) */
    weight out_w, out_b;
    weight ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b; /* MLP */
} text_layer;

typedef struct {
    text_config c;
    weight tok_emb, pos_emb; /* [vocab, hidden], [positions, hidden] */
    text_layer *layers;      /* [layers] */
    weight final_w, final_b;
    weight projection; /* [hidden, projection] (x · P), or empty */
} text_encoder;

/* Sizes from the weight shapes, naming and heads from the description. Returns SD_OK or SD_ERR_MODEL / SD_ERR_NOMEM
 * with err set. */
sd_status text_encoder_load(text_encoder *te, tensor_store *s, const text_encoder_desc *e, char *err, size_t errlen);
void text_encoder_free(text_encoder *te);

/* One sequence of `positions` tokens: ids, and vectors that take the place of some tokens' embedding rows
 * (textual-inversion embeddings): vectors[i] = a row of `hidden` floats, or NULL to use token_embedding[ids[i]].
 * vectors itself may be NULL. */
typedef struct {
    const int *ids;
    const float *const *vectors;
} text_input;

/* What one pass computes. */
typedef struct {
    int layers;     /* the context is the hidden state after this many layers (1..layers) */
    int final_norm; /* ... passed through the final LayerNorm */
    float *context; /* [positions, hidden] */
    float *pooled;  /* [projection], or NULL: the final layer's output through the final LayerNorm at the first
                       <|endoftext|> token, times the projection (every layer runs) */
} text_output;

/* Runs the encoder on `in`, writing what `out` asks for. Returns SD_OK, or the compute context's failure. */
sd_status text_encoder_forward(compute *cc, const text_encoder *te, const text_input *in, const text_output *out);

#endif
