/* recur_synth.h: synthetic checkpoints — random weights at a named shape, for benchmarks at
 * the real 7B shapes without the files, and for tests that need a model of a given size
 * (eight heads and eight layers, say, to split over 8 ranks) that no fixture has.
 *
 * Names: "rwkv7-7b" (RWKV-7 7.2B: C 4096, 32 layers), "xlstm-7b" (xLSTM 7B: D 4096, 32
 * blocks, 8 heads), "rwkv7-tiny8" (C 512 = 8 heads of 64, 8 layers, vocabulary 512) and
 * "xlstm-tiny8" (D 256, 8 heads, 8 blocks, vocabulary 512).
 *
 * The tensors have the names and layouts of the real checkpoints (rwkv.cpp's for RWKV-7,
 * transformers' for xLSTM) and values uniform in per-tensor ranges chosen so that the
 * activations keep a sane scale (linear layers: std 1/sqrt(fan_in)); the values themselves
 * are drawn by whoever makes the checkpoint (recur_model_files_virtual for a virtual one).
 * Ownership: a recur_synth_list_t owns its arrays (recur_synth_list_free). */
#ifndef RECUR_SYNTH_H
#define RECUR_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "recur_model_files.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_synth_shape {
    int     is_xlstm;
    int32_t n_layer;
    int64_t n_embd, n_vocab;
    /* RWKV-7: FFN width and the LoRA ranks of w, a, v, g; heads are n_embd / 64 */
    int64_t ffn, lora_w, lora_a, lora_v, lora_g;
    /* xLSTM: heads and the config.json factors (the widths follow from them) */
    int32_t n_head;
    double  qk_factor, v_factor, ffn_factor;
    int32_t ffn_multiple;
} recur_synth_shape_t;

typedef struct recur_synth_list {
    recur_virtual_tensor_t *t;  /* n tensors; t[i].name points into names */
    char (*names)[96];
    int32_t n, cap;
} recur_synth_list_t;

/* Is name one of the shapes above? */
int recur_synth_known(const char *name);
/* The shape called name, cut to its first `layers` layers when 0 < layers < its own count.
 * RECUR_E_INVAL for an unknown name. */
recur_status_t recur_synth_shape(const char *name, int32_t layers, recur_synth_shape_t *s);
/* Every tensor of shape s, in checkpoint order. RECUR_E_NOMEM, or RECUR_OK with l filled. */
recur_status_t recur_synth_tensors(const recur_synth_shape_t *s, recur_synth_list_t *l);
void recur_synth_list_free(recur_synth_list_t *l);
/* xLSTM's config.json for shape s into buf (n bytes, NUL-terminated): its length, or -1 if
 * it does not fit or s is not an xLSTM shape (RWKV-7 checkpoints carry no config). */
int recur_synth_xlstm_config(const recur_synth_shape_t *s, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
