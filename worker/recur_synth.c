/* recur_synth.c: synthetic checkpoints at named shapes (recur_synth.h). */
#include "recur_synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* name = prefix + layer + "." + suffix, or suffix alone when layer < 0 */
static void add(recur_synth_list_t *l, float lo, float hi, int nd, int64_t d0, int64_t d1, const char *prefix,
                int layer, const char *suffix) {
    RECUR_ASSERT(l->n < l->cap);
    if (layer < 0) snprintf(l->names[l->n], sizeof l->names[0], "%s", suffix);
    else snprintf(l->names[l->n], sizeof l->names[0], "%s%d.%s", prefix, layer, suffix);
    l->t[l->n] = (recur_virtual_tensor_t){.name = l->names[l->n], .n_dims = nd, .shape = {d0, d1}, .lo = lo, .hi = hi};
    l->n++;
}

/* uniform with std 1/sqrt(fan_in): a sane scale for random linear layers */
static float u(int64_t fan_in) { return sqrtf(3.0f / (float)fan_in); }

/* RWKV-7 (models/RWKV7.md §3.3) in rwkv.cpp's layout */
static void rwkv7(recur_synth_list_t *l, const recur_synth_shape_t *s) {
    const int64_t C = s->n_embd, V = s->n_vocab, F = s->ffn, Dw = s->lora_w, Da = s->lora_a, Dv = s->lora_v,
                  Dg = s->lora_g, H = C / 64;
    add(l, -1.f, 1.f, 2, V, C, "", -1, "emb.weight");
    add(l, 0.8f, 1.2f, 1, C, 0, "blocks.", 0, "ln0.weight");
    add(l, -0.1f, 0.1f, 1, C, 0, "blocks.", 0, "ln0.bias");
    for (int i = 0; i < s->n_layer; i++) {
        add(l, 0.8f, 1.2f, 1, C, 0, "blocks.", i, "ln1.weight");
        add(l, -0.1f, 0.1f, 1, C, 0, "blocks.", i, "ln1.bias");
        add(l, 0.8f, 1.2f, 1, C, 0, "blocks.", i, "ln2.weight");
        add(l, -0.1f, 0.1f, 1, C, 0, "blocks.", i, "ln2.bias");
        add(l, 0.f, 1.f, 3, 6, 1, "blocks.", i, "att.x_rwkvag");
        l->t[l->n - 1].shape[2] = C; /* [6,1,C] */
        add(l, -3.f, 0.f, 1, C, 0, "blocks.", i, "att.w0");
        add(l, -1.f, 1.f, 1, C, 0, "blocks.", i, "att.a0");
        add(l, 0.7f, 1.f, 1, C, 0, "blocks.", i, "att.k_k");
        add(l, 0.8f, 1.2f, 1, C, 0, "blocks.", i, "att.k_a");
        add(l, -0.3f, 0.3f, 2, H, 64, "blocks.", i, "att.r_k");
        add(l, -u(C), u(C), 2, Dw, C, "blocks.", i, "att.w1");
        add(l, -0.1f * u(Dw), 0.1f * u(Dw), 2, C, Dw, "blocks.", i, "att.w2");
        add(l, -u(C), u(C), 2, Da, C, "blocks.", i, "att.a1");
        add(l, -u(Da), u(Da), 2, C, Da, "blocks.", i, "att.a2");
        add(l, -u(C), u(C), 2, Dg, C, "blocks.", i, "att.g1");
        add(l, -u(Dg), u(Dg), 2, C, Dg, "blocks.", i, "att.g2");
        if (i > 0) {
            add(l, -1.f, 1.f, 1, C, 0, "blocks.", i, "att.v0");
            add(l, -u(C), u(C), 2, Dv, C, "blocks.", i, "att.v1");
            add(l, -u(Dv), u(Dv), 2, C, Dv, "blocks.", i, "att.v2");
        }
        add(l, -u(C), u(C), 2, C, C, "blocks.", i, "att.receptance.weight");
        add(l, -u(C), u(C), 2, C, C, "blocks.", i, "att.key.weight");
        add(l, -u(C), u(C), 2, C, C, "blocks.", i, "att.value.weight");
        add(l, -u(C), u(C), 2, C, C, "blocks.", i, "att.output.weight");
        add(l, 0.8f, 1.2f, 1, C, 0, "blocks.", i, "att.ln_x.weight");
        add(l, -0.1f, 0.1f, 1, C, 0, "blocks.", i, "att.ln_x.bias");
        add(l, 0.f, 1.f, 1, C, 0, "blocks.", i, "ffn.x_k");
        add(l, -u(C), u(C), 2, F, C, "blocks.", i, "ffn.key.weight");
        add(l, -u(F), u(F), 2, C, F, "blocks.", i, "ffn.value.weight");
    }
    add(l, 0.8f, 1.2f, 1, C, 0, "", -1, "ln_out.weight");
    add(l, -0.1f, 0.1f, 1, C, 0, "", -1, "ln_out.bias");
    add(l, -u(C), u(C), 2, V, C, "", -1, "head.weight");
}

/* xLSTM's widths from its factors, as the loader derives them (models/XLSTM.md §1) */
static int64_t xl_qk(const recur_synth_shape_t *s) { return (int64_t)((double)s->n_embd * s->qk_factor); }
static int64_t xl_v(const recur_synth_shape_t *s) { return (int64_t)((double)s->n_embd * s->v_factor); }
static int64_t xl_ffn(const recur_synth_shape_t *s) {
    const int64_t f = (int64_t)((double)s->n_embd * s->ffn_factor), m = s->ffn_multiple;
    return (f + m - 1) / m * m;
}

/* xLSTM (models/XLSTM.md §1-2) in transformers' layout; gate ranges as the fixture recipe
 * (§8.2) so the gates depend on x */
static void xlstm(recur_synth_list_t *l, const recur_synth_shape_t *s) {
    const int64_t D = s->n_embd, V = s->n_vocab, NH = s->n_head, QK = xl_qk(s), VD = xl_v(s), F = xl_ffn(s);
    add(l, -1.f, 1.f, 2, V, D, "", -1, "backbone.embeddings.weight");
    for (int i = 0; i < s->n_layer; i++) {
        add(l, 0.8f, 1.2f, 1, D, 0, "backbone.blocks.", i, "norm_mlstm.weight");
        add(l, 0.8f, 1.2f, 1, D, 0, "backbone.blocks.", i, "norm_ffn.weight");
        add(l, -u(D), u(D), 2, QK, D, "backbone.blocks.", i, "mlstm_layer.q.weight");
        add(l, -u(D), u(D), 2, QK, D, "backbone.blocks.", i, "mlstm_layer.k.weight");
        add(l, -u(D), u(D), 2, VD, D, "backbone.blocks.", i, "mlstm_layer.v.weight");
        add(l, -u(D), u(D), 2, VD, D, "backbone.blocks.", i, "mlstm_layer.ogate_preact.weight");
        add(l, -0.35f, 0.35f, 2, NH, D, "backbone.blocks.", i, "mlstm_layer.igate_preact.weight");
        add(l, -3.f, 3.f, 1, NH, 0, "backbone.blocks.", i, "mlstm_layer.igate_preact.bias");
        add(l, -0.35f, 0.35f, 2, NH, D, "backbone.blocks.", i, "mlstm_layer.fgate_preact.weight");
        add(l, 0.f, 4.f, 1, NH, 0, "backbone.blocks.", i, "mlstm_layer.fgate_preact.bias");
        add(l, 0.8f, 1.2f, 1, VD, 0, "backbone.blocks.", i, "mlstm_layer.multihead_norm.weight");
        add(l, -u(VD), u(VD), 2, D, VD, "backbone.blocks.", i, "mlstm_layer.out_proj.weight");
        add(l, -u(D), u(D), 2, F, D, "backbone.blocks.", i, "ffn.proj_up_gate.weight");
        add(l, -u(D), u(D), 2, F, D, "backbone.blocks.", i, "ffn.proj_up.weight");
        add(l, -u(F), u(F), 2, D, F, "backbone.blocks.", i, "ffn.proj_down.weight");
    }
    add(l, 0.8f, 1.2f, 1, D, 0, "", -1, "backbone.out_norm.weight");
    add(l, -u(D), u(D), 2, V, D, "", -1, "lm_head.weight");
}

static const struct {
    const char *name;
    recur_synth_shape_t shape;
} k_shapes[] = {
    /* RWKV-7 7.2B (models/RWKV7.md §3.3): LoRA ranks 128/128/96/480, FFN 16384 */
    {"rwkv7-7b", {.n_layer = 32, .n_embd = 4096, .n_vocab = 65536, .ffn = 16384, .lora_w = 128, .lora_a = 128,
                  .lora_v = 96, .lora_g = 480}},
    /* xLSTM 7B (models/XLSTM.md §1-2): qk 2048, v 4096, FFN 10944 */
    {"xlstm-7b", {.is_xlstm = 1, .n_layer = 32, .n_embd = 4096, .n_vocab = 50304, .n_head = 8, .qk_factor = 0.5,
                  .v_factor = 1.0, .ffn_factor = 2.667, .ffn_multiple = 64}},
    /* small ones with 8 heads and 8 layers: every TP x PP split up to 8 ranks fits them */
    {"rwkv7-tiny8", {.n_layer = 8, .n_embd = 512, .n_vocab = 512, .ffn = 512, .lora_w = 32, .lora_a = 32,
                     .lora_v = 32, .lora_g = 32}},
    {"xlstm-tiny8", {.is_xlstm = 1, .n_layer = 8, .n_embd = 256, .n_vocab = 512, .n_head = 8, .qk_factor = 0.5,
                     .v_factor = 1.0, .ffn_factor = 2.667, .ffn_multiple = 64}},
};

int recur_synth_known(const char *name) {
    for (size_t i = 0; name && i < sizeof k_shapes / sizeof k_shapes[0]; i++)
        if (!strcmp(name, k_shapes[i].name)) return 1;
    return 0;
}

recur_status_t recur_synth_shape(const char *name, int32_t layers, recur_synth_shape_t *s) {
    for (size_t i = 0; name && i < sizeof k_shapes / sizeof k_shapes[0]; i++)
        if (!strcmp(name, k_shapes[i].name)) {
            *s = k_shapes[i].shape;
            if (layers > 0 && layers < s->n_layer) s->n_layer = layers;
            return RECUR_OK;
        }
    return RECUR_E_INVAL;
}

recur_status_t recur_synth_tensors(const recur_synth_shape_t *s, recur_synth_list_t *l) {
    memset(l, 0, sizeof *l);
    l->cap = 40 * s->n_layer + 16;
    l->t = calloc((size_t)l->cap, sizeof *l->t);
    l->names = calloc((size_t)l->cap, sizeof *l->names);
    if (!l->t || !l->names) {
        recur_synth_list_free(l);
        return RECUR_E_NOMEM;
    }
    if (s->is_xlstm) xlstm(l, s);
    else rwkv7(l, s);
    return RECUR_OK;
}

void recur_synth_list_free(recur_synth_list_t *l) {
    free(l->t);
    free(l->names);
    memset(l, 0, sizeof *l);
}

int recur_synth_xlstm_config(const recur_synth_shape_t *s, char *buf, size_t n) {
    if (!s->is_xlstm) return -1;
    int k = snprintf(buf, n,
                     "{\"model_type\":\"xlstm\",\"hidden_size\":%lld,\"num_hidden_layers\":%d,\"num_heads\":%d,"
                     "\"vocab_size\":%lld,\"qk_dim_factor\":%g,\"v_dim_factor\":%g,\"ffn_proj_factor\":%g,"
                     "\"ffn_round_up_to_multiple_of\":%d,\"gate_soft_cap\":15.0,\"output_logit_soft_cap\":30.0,"
                     "\"norm_eps\":1e-6,\"eps\":1e-6,\"use_bias\":false,\"weight_mode\":\"single\",\"chunk_size\":64,"
                     "\"tie_word_embeddings\":false,\"bos_token_id\":0}",
                     (long long)s->n_embd, s->n_layer, s->n_head, (long long)s->n_vocab, s->qk_factor, s->v_factor,
                     s->ffn_factor, s->ffn_multiple);
    return k < 0 || (size_t)k >= n ? -1 : k;
}
