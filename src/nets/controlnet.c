/* controlnet.c - see controlnet.h. Follows cldm.py's ControlNet and diffusers' ControlNetModel. */
#include "nets/controlnet.h"

#include <stdlib.h>
#include <string.h>

/* Where the tensors are: "control_model." in the .pth releases, nothing in the safetensors ones. */
static const char *root_of(const tensor_store *s) {
    return store_find(s, "control_model.input_blocks.0.0.weight") ? "control_model." : "";
}

/* The hint encoder: eight 3x3 convolutions, channels from their shapes, stride 2 at indices 4, 8 and 12. */
static void load_hint(wloader *L, controlnet *cn, const char *root) {
    int in = 3;
    for (int i = 0; i < CONTROL_HINT_CONVS && !L->failed; i++) {
        char name[64];
        snprintf(name, sizeof name, "input_hint_block.%d.weight", 2 * i);
        wl_prefix(L, "%s", root);
        const st_tensor *t = wl_find(L, name);
        if (!t || t->ndim != 4) {
            wl_fail(L, "missing or malformed tensor '%s%s' (the hint encoder)", root, name);
            return;
        }
        snprintf(name, sizeof name, "input_hint_block.%d", 2 * i);
        const int out = (int)t->shape[0], stride = i == 2 || i == 4 || i == 6 ? 2 : 1;
        cn->hint[i] = conv_layer_load(L, name, in, out, 3, stride, 1);
        in = out;
    }
    if (!L->failed && in != cn->enc.c.model_ch)
        wl_fail(L, "the hint encoder gives %d channels, conv_in %d", in, cn->enc.c.model_ch);
}

/* zero_convs.i.0 (one per input block) and middle_block_out.0: 1x1 convolutions of the block outputs' channels. */
static void load_zero_convs(wloader *L, controlnet *cn, const char *root) {
    const unet *u = &cn->enc;
    wl_prefix(L, "%s", root);
    for (int i = 0; i < u->c.n_input && !L->failed; i++) {
        const int ch = i ? u->input[i].out_ch : u->c.model_ch;
        char name[64];
        snprintf(name, sizeof name, "zero_convs.%d.0", i);
        cn->zero[i] = conv_layer_load(L, name, ch, ch, 1, 1, 0);
    }
    const int mid = u->mid_res2.res.out_ch;
    cn->mid_out = conv_layer_load(L, "middle_block_out.0", mid, mid, 1, 1, 0);
}

/* The ControlNet's encoder must be the base UNet's: same widths, blocks and conditioning. */
static int check_base(const controlnet *cn, const unet *base, const char *path, char *err, size_t errlen) {
    const unet_config *a = &cn->enc.c, *b = &base->c;
    const char *what = a->ctx_dim != b->ctx_dim           ? "context widths"
                       : a->model_ch != b->model_ch       ? "channel counts"
                       : a->time_dim != b->time_dim       ? "time embedding widths"
                       : a->n_input != b->n_input         ? "numbers of input blocks"
                       : a->added_dim != b->added_dim     ? "added conditionings"
                       : a->linear_proj != b->linear_proj ? "transformers' projections (linear or 1x1 convolutions)"
                                                          : NULL;
    for (int i = 1; !what && i < a->n_input; i++)
        if (cn->enc.input[i].out_ch != base->input[i].out_ch) what = "block widths";
    if (!what) return 0;
    snprintf(err, errlen,
             "%s: a ControlNet for another model: the %s differ from the model's UNet (context %d vs %d, channels "
             "%d vs %d)",
             path, what, a->ctx_dim, b->ctx_dim, a->model_ch, b->model_ch);
    return -1;
}

sd_status controlnet_load(controlnet *cn, const char *path, const model_desc *d, const unet *base, char *err,
                          size_t errlen) {
    memset(cn, 0, sizeof *cn);
    sd_status st = store_open(&cn->store, path, NULL, err, errlen);
    if (st != SD_OK) return st;
    const char *root = root_of(&cn->store);
    char probe[96];
    snprintf(probe, sizeof probe, "%sinput_hint_block.0.weight", root);
    if (!store_find(&cn->store, probe)) {
        snprintf(err, errlen,
                 "%s: not a ControlNet (no tensor 'input_hint_block.0.weight', with or without "
                 "'control_model.')",
                 path);
        return SD_ERR_MODEL;
    }
    if (d->family == FAMILY_SDXL) {
        snprintf(err, errlen, "%s: ControlNets for SDXL are not supported yet", path);
        return SD_ERR_MODEL;
    }
    if ((st = unet_load_encoder(&cn->enc, &cn->store, d, root, err, errlen)) != SD_OK) return st;
    if (check_base(cn, base, path, err, errlen) != 0) return SD_ERR_MODEL;
    if (!(cn->zero = calloc((size_t)cn->enc.c.n_input, sizeof *cn->zero))) {
        snprintf(err, errlen, "out of memory loading the ControlNet");
        return SD_ERR_NOMEM;
    }
    wloader L = {&cn->store, err, errlen, 0, ""};
    load_hint(&L, cn, root);
    load_zero_convs(&L, cn, root);
    return L.failed ? SD_ERR_MODEL : SD_OK;
}

void controlnet_free(controlnet *cn) {
    unet_free(&cn->enc);
    free(cn->zero);
    store_close(&cn->store);
    memset(cn, 0, sizeof *cn);
}

sd_status controlnet_hint(compute *cc, const controlnet *cn, const float *image, int H, int W, float *hint) {
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    size_t most = 0;
    int h = H, w = W;
    for (int i = 0; i < CONTROL_HINT_CONVS; i++) { /* the largest activation along the way */
        const conv_desc *d = &cn->hint[i].d;
        h = conv_out_size(h, 3, d->stride, 1, 1);
        w = conv_out_size(w, 3, d->stride, 1, 1);
        if ((size_t)d->out_ch * h * w > most) most = (size_t)d->out_ch * h * w;
    }
    float *a = compute_alloc(cc, most), *b = compute_alloc(cc, most); /* ping-pong [C, h, w] */
    if (!a || !b) return cc->status;
    const float *x = image;
    h = H;
    w = W;
    for (int i = 0; i < CONTROL_HINT_CONVS && !compute_stopped(cc); i++) { /* conv, then SiLU but after the last */
        const conv_desc *d = &cn->hint[i].d;
        float *y = i == CONTROL_HINT_CONVS - 1 ? hint : i % 2 ? b : a;
        conv_layer_forward(cc, &cn->hint[i], x, 1, h, w, y);
        h = conv_out_size(h, 3, d->stride, 1, 1);
        w = conv_out_size(w, 3, d->stride, 1, 1);
        if (i < CONTROL_HINT_CONVS - 1) silu_inplace(cc, y, (size_t)d->out_ch * h * w);
        x = y;
    }
    compute_reset(cc, mark);
    return compute_stopped(cc) ? cc->status : SD_OK;
}

sd_status controlnet_forward(compute *cc, const controlnet *cn, const unet_input *in, const float *hint, float strength,
                             float *const *res) {
    const unet *u = &cn->enc;
    const int n = u->c.n_input;
    if (compute_stopped(cc)) return cc->status;
    arena_mark mark = compute_mark(cc);
    float *outs[UNET_MAX_BLOCKS + 1]; /* the blocks' outputs, [B, ch_i, H_i, W_i] each */
    for (int i = 0; i <= n; i++)
        if (!(outs[i] = compute_alloc(cc, unet_block_floats(u, i, in->B, in->h, in->w)))) return cc->status;
    sd_status st = unet_encoder_forward(cc, u, in, hint, outs);
    for (int i = 0; i <= n && st == SD_OK && !compute_stopped(cc); i++) {
        int ch, H, W;
        unet_block_shape(u, i, in->h, in->w, &ch, &H, &W);
        const size_t count = (size_t)in->B * ch * H * W;
        conv_layer_forward(cc, i < n ? &cn->zero[i] : &cn->mid_out, outs[i], in->B, H, W, res[i]);
        for (size_t k = 0; k < count; k++) res[i][k] *= strength;
    }
    compute_reset(cc, mark);
    return st != SD_OK ? st : compute_stopped(cc) ? cc->status : SD_OK;
}
