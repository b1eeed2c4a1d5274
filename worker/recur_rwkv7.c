/* recur_rwkv7.c: RWKV-7 ("x070") on any backend: weight loading from rwkv.cpp .bin or
 * BlinkDL-layout safetensors, and the forward pass of models/RWKV7.md §1.
 *
 * Two checkpoint layouts reach us:
 *   rwkv.cpp .bin: att.x_rwkvag [6,1,C] (x_r,x_w,x_k,x_v,x_a,x_g), LoRA w1/a1/v1/g1 [D,C]
 *                  and w2/a2/v2/g2 [C,D] (already transposed for W.x);
 *   BlinkDL .pth (converted to safetensors): att.x_r ... att.x_g [1,1,C] each, LoRA
 *                  w1 [C,D] and w2 [D,C] (PyTorch x @ W).
 * Both are stored the same way on the backend: every matrix as nn.Linear [out][in].
 * Every tensor's shape is checked against the dimensions derived from emb.weight,
 * att.r_k and the LoRA ranks, and every tensor in the file must be one we use: an
 * unknown name means a variant (7a DeepEmbed, 7b DEA, ...) we would compute wrongly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_log.h"
#include "recur_loader.h"
#include "recur_model_arch.h"

#define RWKV7_HEAD_SIZE 64
#define RWKV7_LN_EPS 1e-5f
#define RWKV7_GN_EPS 64e-5f   /* ln_x GroupNorm eps: 64e-5 in x070, not 1e-5 */
#define RWKV7_MAX_LAYERS 1024

enum { MIX_R, MIX_W, MIX_K, MIX_V, MIX_A, MIX_G, MIX_N };
/* The LoRAs of a layer (decay w, in-context rate a, gate g, value residual v); the
 * workspace keeps one [max_tokens][D_max] output per LoRA, so that all run as one batch. */
enum { LORA_N = 4 };

typedef struct rwkv7_layer {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;        /* [C] */
    float *mix;                                  /* [6][C]: x_r x_w x_k x_v x_a x_g */
    float *w0, *a0, *v0, *k_k, *k_a, *r_k;       /* [C] (v0 unused in layer 0) */
    float *lnx_w, *lnx_b;                        /* [C] */
    float *ffn_mix;                              /* [C] */
    recur_weight_t wr, wk, wv, wo;               /* [C][C] */
    recur_weight_t w1, w2, a1, a2, v1, v2, g1, g2; /* [D][C], [C][D] */
    recur_weight_t ffn_key;                      /* [F][C] */
    /* [C][F], or transposed [F][C] when the backend has matmul_sparse_in: relu^2 leaves
     * most of the F inputs exactly zero at decode, and in [F][C] each nonzero one selects
     * a contiguous row, so only those rows are read (models/RWKV7.md §8.1 item 5). Only
     * one layout is kept, so the sparse path costs no extra memory. */
    recur_weight_t ffn_value;
} rwkv7_layer_t;

typedef struct rwkv7 {
    int32_t C, H, L, V, F, D_max, max_tokens;
    /* this rank's shard: layers [sh.layer_begin, sh.layer_end), Cl = its heads' channels
     * starting at c0, Fl = its slice of the FFN width starting at f0 (all of it: tp 1) */
    recur_model_shard_t sh;
    recur_comm_t *comm;
    int32_t Cl, c0, Fl, f0;
    recur_dtype_t state_dtype;                   /* of the wkv matrices */
    uint32_t skip;                               /* recur_model_params_t.skip_kernels */
    recur_weight_t emb, head;                    /* [V][C] */
    float *ln0_w, *ln0_b, *lnout_w, *lnout_b;    /* [C] */
    rwkv7_layer_t *layers;
    /* workspace, [max_tokens][...] */
    float *x, *xa, *mixes, *r, *k, *v, *w, *a, *g, *kk, *v_first, *v_mix, *y, *lora, *ffn, *xo;
    float *lg_local, *lg_all;  /* tp > 1, last stage: [max_tokens][V/tp], [tp][max_tokens][V/tp] */
} rwkv7_t;

/* ------------------------------------------------------------------ loading */

/* rwkv7's loader: the shared one plus which layout the checkpoint uses. */
typedef struct loader {
    recur_loader_t base;
    int blinkdl; /* 1: BlinkDL names/layout, 0: rwkv.cpp .bin layout */
} loader_t;

/* LoRA pair: first maps C -> D (stored [D][C]), second D -> C (stored [C][D]). The file
 * tells D; the .bin already has the Linear layout, BlinkDL has its transpose. Every LoRA
 * feeds a gate (decay, in-context rate, value residual, output gate) and together they are
 * ~2% of a layer's bytes at 7B: kept at full precision in the int8 / fp8 modes. */
static recur_status_t ld_lora(loader_t *ld, const rwkv7_t *m, int layer, const char *n1, const char *n2,
                              recur_weight_t *w1, recur_weight_t *w2, int32_t *d_max) {
    const int32_t C = m->C;
    char k1[96], k2[96];
    snprintf(k1, sizeof k1, "blocks.%d.att.%s", layer, n1);
    snprintf(k2, sizeof k2, "blocks.%d.att.%s", layer, n2);
    const recur_tensor_info_t *t = recur_model_files_find(ld->base.f, k1);
    if (!t) {
        recur_log_err("%s: missing tensor '%s' (RWKV-7 x070)", ld->base.path, k1);
        return RECUR_E_FORMAT;
    }
    if (t->n_dims != 2) return recur_loader_shape_error(&ld->base, t, ld->blinkdl ? "[C,D]" : "[D,C]");
    int64_t D = ld->blinkdl ? t->shape[1] : t->shape[0];
    if (D < 1 || D > 4 * (int64_t)C) return recur_loader_shape_error(&ld->base, t, "a LoRA rank between 1 and 4C");
    if (D > *d_max) *d_max = (int32_t)D;
    /* the first matrix is replicated (its D outputs feed every head), the second gives
     * this rank's channels only */
    const recur_block_t mine = {m->c0, m->Cl, 0, D};
    if (ld->blinkdl) {
        RECUR_TRY(recur_loader_mat(&ld->base, k1, C, D, 1, RECUR_WEIGHT_KEEP, w1));
        RECUR_TRY(recur_loader_mat_block(&ld->base, k2, D, C, 1, &mine, RECUR_WEIGHT_KEEP, w2));
    } else {
        RECUR_TRY(recur_loader_mat(&ld->base, k1, D, C, 0, RECUR_WEIGHT_KEEP, w1));
        RECUR_TRY(recur_loader_mat_block(&ld->base, k2, C, D, 0, &mine, RECUR_WEIGHT_KEEP, w2));
    }
    return RECUR_OK;
}

static recur_status_t ld_layer(loader_t *ld, rwkv7_t *m, int i, rwkv7_layer_t *ly) {
    char k[128];
    int32_t C = m->C;
    /* vectors over the whole hidden vector (replicated), and per-channel ones of the heads
     * (this rank's part) */
#define LVEC(field, fmt) do { snprintf(k, sizeof k, fmt, i); RECUR_TRY(recur_loader_vec(&ld->base, k, C, &ly->field)); } while (0)
#define LHEADS(field, fmt) do { snprintf(k, sizeof k, fmt, i); RECUR_TRY(recur_loader_vec_part(&ld->base, k, C, m->c0, m->Cl, &ly->field)); } while (0)
    LVEC(ln1_w, "blocks.%d.ln1.weight");
    LVEC(ln1_b, "blocks.%d.ln1.bias");
    LVEC(ln2_w, "blocks.%d.ln2.weight");
    LVEC(ln2_b, "blocks.%d.ln2.bias");
    LHEADS(w0, "blocks.%d.att.w0");
    LHEADS(a0, "blocks.%d.att.a0");
    LHEADS(k_k, "blocks.%d.att.k_k");
    LHEADS(k_a, "blocks.%d.att.k_a");
    LHEADS(lnx_w, "blocks.%d.att.ln_x.weight");
    LHEADS(lnx_b, "blocks.%d.att.ln_x.bias");
    LVEC(ffn_mix, "blocks.%d.ffn.x_k");
    /* r_k is [H, 64], one bonus weight per key channel of each head. */
    snprintf(k, sizeof k, "blocks.%d.att.r_k", i);
    const recur_tensor_info_t *rk = recur_loader_get(&ld->base, k, 1);
    if (!rk) return RECUR_E_FORMAT;
    if (rk->n_dims != 2 || rk->shape[0] != m->H || rk->shape[1] != RWKV7_HEAD_SIZE) {
        char want[64];
        snprintf(want, sizeof want, "[%d,%d]", m->H, RWKV7_HEAD_SIZE);
        return recur_loader_shape_error(&ld->base, rk, want);
    }
    RECUR_TRY(recur_loader_upload_part(&ld->base, rk, m->c0, m->Cl, &ly->r_k));

    /* Token-shift mixes: one [6,1,C] tensor in .bin, six [1,1,C] in BlinkDL layout;
     * gathered into ld->base.tmp as [6][C] and uploaded once. */
    if (ld->blinkdl) {
        static const char *names[MIX_N] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
        for (int j = 0; j < MIX_N; j++) {
            snprintf(k, sizeof k, "blocks.%d.att.%s", i, names[j]);
            const recur_tensor_info_t *t = recur_loader_get(&ld->base, k, 1);
            if (!t) return RECUR_E_FORMAT;
            if (t->n_dims < 1 || t->n_elems != C || t->shape[t->n_dims - 1] != C) return recur_loader_shape_error(&ld->base, t, "[1,1,C]");
            RECUR_TRY(recur_tensor_read_f32(t, 0, C, ld->base.tmp + (size_t)j * C));
        }
    } else {
        snprintf(k, sizeof k, "blocks.%d.att.x_rwkvag", i);
        const recur_tensor_info_t *t = recur_loader_get(&ld->base, k, 1);
        if (!t) return RECUR_E_FORMAT;
        if (t->n_dims < 2 || t->n_elems != (int64_t)MIX_N * C || t->shape[0] != MIX_N || t->shape[t->n_dims - 1] != C) {
            char want[64];
            snprintf(want, sizeof want, "[6,1,%d]", C);
            return recur_loader_shape_error(&ld->base, t, want);
        }
        RECUR_TRY(recur_tensor_read_f32(t, 0, (int64_t)MIX_N * C, ld->base.tmp));
    }
    ly->mix = ld->base.b->iface.alloc(ld->base.b, (size_t)MIX_N * C * sizeof(float));
    if (!ly->mix) return RECUR_E_NOMEM;
    RECUR_TRY(ld->base.b->iface.upload(ld->base.b, ly->mix, ld->base.tmp, (size_t)MIX_N * C * sizeof(float)));

    /* r, k, v: this rank's heads' rows (column-parallel); output: their columns
     * (row-parallel, summed over the group) */
    const recur_block_t heads_out = {m->c0, m->Cl, 0, C}, heads_in = {0, C, m->c0, m->Cl};
    snprintf(k, sizeof k, "blocks.%d.att.receptance.weight", i);
    RECUR_TRY(recur_loader_mat_block(&ld->base, k, C, C, 0, &heads_out, RECUR_WEIGHT_PROJ, &ly->wr));
    snprintf(k, sizeof k, "blocks.%d.att.key.weight", i);
    RECUR_TRY(recur_loader_mat_block(&ld->base, k, C, C, 0, &heads_out, RECUR_WEIGHT_PROJ, &ly->wk));
    snprintf(k, sizeof k, "blocks.%d.att.value.weight", i);
    RECUR_TRY(recur_loader_mat_block(&ld->base, k, C, C, 0, &heads_out, RECUR_WEIGHT_PROJ, &ly->wv));
    snprintf(k, sizeof k, "blocks.%d.att.output.weight", i);
    RECUR_TRY(recur_loader_mat_block(&ld->base, k, C, C, 0, &heads_in, RECUR_WEIGHT_PROJ, &ly->wo));
    RECUR_TRY(ld_lora(ld, m, i, "w1", "w2", &ly->w1, &ly->w2, &m->D_max));
    RECUR_TRY(ld_lora(ld, m, i, "a1", "a2", &ly->a1, &ly->a2, &m->D_max));
    RECUR_TRY(ld_lora(ld, m, i, "g1", "g2", &ly->g1, &ly->g2, &m->D_max));
    if (i > 0) {
        RECUR_TRY(ld_lora(ld, m, i, "v1", "v2", &ly->v1, &ly->v2, &m->D_max));
        LHEADS(v0, "blocks.%d.att.v0");
    } else {
        /* Layer 0's v0/v1/v2, when present, are inert (v_first == v there): accept and skip. */
        static const char *inert[] = {"v0", "v1", "v2"};
        for (int j = 0; j < 3; j++) {
            snprintf(k, sizeof k, "blocks.0.att.%s", inert[j]);
            (void)recur_loader_get(&ld->base, k, 0);
        }
    }
#undef LVEC
#undef LHEADS
    /* FFN: this rank's slice of the width: rows of key, columns of value (rows of the
     * transposed layout the sparse path keeps) */
    const recur_block_t key_part = {m->f0, m->Fl, 0, C};
    snprintf(k, sizeof k, "blocks.%d.ffn.key.weight", i);
    RECUR_TRY(recur_loader_mat_block(&ld->base, k, m->F, C, 0, &key_part, RECUR_WEIGHT_PROJ, &ly->ffn_key));
    snprintf(k, sizeof k, "blocks.%d.ffn.value.weight", i);
    const int sparse = ld->base.b->iface.matmul_sparse_in != NULL;
    const recur_block_t value_part = sparse ? key_part : (recur_block_t){0, C, m->f0, m->Fl};
    RECUR_TRY(recur_loader_mat_block(&ld->base, k, C, m->F, sparse, &value_part, RECUR_WEIGHT_PROJ, &ly->ffn_value));
    return RECUR_OK;
}

static void rwkv7_free(recur_backend_t *b, void *ctx) {
    rwkv7_t *m = ctx;
    if (!m) return;
    b->iface.weight_free(b, &m->emb);
    b->iface.weight_free(b, &m->head);
    float *vecs[] = {m->ln0_w, m->ln0_b, m->lnout_w, m->lnout_b, m->x, m->xa, m->mixes, m->r, m->k, m->v,
                     m->w, m->a, m->g, m->kk, m->v_first, m->v_mix, m->y, m->lora, m->ffn, m->xo,
                     m->lg_local, m->lg_all};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) b->iface.buf_free(b, vecs[i]);
    if (m->layers) {
        for (int32_t i = 0; i < m->L; i++) {
            rwkv7_layer_t *ly = &m->layers[i];
            float *lv[] = {ly->ln1_w, ly->ln1_b, ly->ln2_w, ly->ln2_b, ly->mix, ly->w0, ly->a0, ly->v0,
                           ly->k_k, ly->k_a, ly->r_k, ly->lnx_w, ly->lnx_b, ly->ffn_mix};
            for (size_t j = 0; j < sizeof lv / sizeof lv[0]; j++) b->iface.buf_free(b, lv[j]);
            recur_weight_t *lw[] = {&ly->wr, &ly->wk, &ly->wv, &ly->wo, &ly->w1, &ly->w2, &ly->a1, &ly->a2,
                                    &ly->v1, &ly->v2, &ly->g1, &ly->g2, &ly->ffn_key, &ly->ffn_value};
            for (size_t j = 0; j < sizeof lw / sizeof lw[0]; j++) b->iface.weight_free(b, lw[j]);
        }
        free(m->layers);
    }
    free(m);
}

static int rwkv7_detect(const recur_model_files_t *f) {
    return recur_model_files_find(f, "blocks.0.att.r_k") && recur_model_files_find(f, "blocks.0.att.k_a") &&
           recur_model_files_find(f, "emb.weight");
}

/* State layout per slot, per layer: ffn_x[C] f32, att_x[C] f32, wkv[H][64][64] in the
 * state dtype (rwkv.cpp's layout when that is f32); a rank's shard: its stage's layers,
 * its heads' wkv matrices (the shift vectors are replicated across the TP group). Bytes
 * per layer: */
static size_t layer_state_bytes(const rwkv7_t *m) {
    return 2 * (size_t)m->C * sizeof(float) +
           (size_t)m->sh.n_head * RWKV7_HEAD_SIZE * RWKV7_HEAD_SIZE * recur_dtype_size(m->state_dtype);
}

static recur_status_t rwkv7_load(recur_backend_t *b, const recur_model_files_t *f, const recur_model_params_t *p,
                                 recur_model_info_t *info, void **out) {
    *out = NULL;
    const int32_t max_tokens = p->max_tokens;
    loader_t ld = {.blinkdl = recur_model_files_find(f, "blocks.0.att.x_rwkvag") == NULL};
    const char *path = recur_model_files_path(f, 0);
    recur_status_t st = RECUR_OK;
    rwkv7_t *m = calloc(1, sizeof *m);
    if (!m) return RECUR_E_NOMEM;
    m->state_dtype = p->state_dtype;
    m->skip = p->skip_kernels;

    /* Dimensions: V, C from emb.weight; L from the ln1 blocks; H from C / 64. */
    const recur_tensor_info_t *emb = recur_model_files_find(f, "emb.weight");
    if (emb->n_dims != 2 || emb->shape[0] < 1 || emb->shape[1] < RWKV7_HEAD_SIZE ||
        emb->shape[1] % RWKV7_HEAD_SIZE != 0 || emb->shape[0] > (1 << 24) || emb->shape[1] > (1 << 16)) {
        char got[96];
        recur_loader_shape_str(emb, got, sizeof got);
        recur_log_err("%s: emb.weight has shape %s: expected [vocab, C] with C a multiple of %d", path, got,
                      RWKV7_HEAD_SIZE);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    m->V = (int32_t)emb->shape[0];
    m->C = (int32_t)emb->shape[1];
    m->H = m->C / RWKV7_HEAD_SIZE;
    const recur_tensor_info_t *rk = recur_model_files_find(f, "blocks.0.att.r_k");
    if (rk->n_dims != 2 || rk->shape[1] != RWKV7_HEAD_SIZE) {
        char got[96];
        recur_loader_shape_str(rk, got, sizeof got);
        recur_log_err("%s: blocks.0.att.r_k has shape %s: recur supports RWKV-7 with head size %d only", path,
                      got, RWKV7_HEAD_SIZE);
        st = RECUR_E_UNSUPPORTED;
        goto fail;
    }
    for (m->L = 0; m->L < RWKV7_MAX_LAYERS; m->L++) {
        char k[64];
        snprintf(k, sizeof k, "blocks.%d.ln1.weight", m->L);
        if (!recur_model_files_find(f, k)) break;
    }
    if (m->L == 0) {
        recur_log_err("%s: no blocks.N.ln1.weight tensors", path);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    if (recur_model_files_format(f) == RECUR_FORMAT_RWKVCPP_BIN) {
        recur_bin_header_t h;
        if ((st = recur_model_files_bin_header(f, &h)) != RECUR_OK) goto fail;
        if (h.n_vocab != m->V || h.n_embd != m->C || h.n_layer != m->L) {
            recur_log_err("%s: header says vocab %d, C %d, %d layers but the tensors say %d, %d, %d", path,
                          h.n_vocab, h.n_embd, h.n_layer, m->V, m->C, m->L);
            st = RECUR_E_FORMAT;
            goto fail;
        }
    }

    /* The FFN width, from layer 0 (every stage needs it to plan its shard). */
    const recur_tensor_info_t *fk = recur_model_files_find(f, "blocks.0.ffn.key.weight");
    if (!fk) {
        recur_log_err("%s: missing tensor 'blocks.0.ffn.key.weight' (RWKV-7 x070)", path);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    if (fk->n_dims != 2 || fk->shape[0] < 1 || fk->shape[0] > 16 * (int64_t)m->C || fk->shape[1] != m->C) {
        char got[96];
        recur_loader_shape_str(fk, got, sizeof got);
        recur_log_err("%s: blocks.0.ffn.key.weight has shape %s, expected [F,%d] with F <= 16 C", path, got, m->C);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    m->F = (int32_t)fk->shape[0];
    if ((st = recur_model_plan_shard(p, path, m->L, m->H, m->F, m->V, &m->sh)) != RECUR_OK) goto fail;
    m->comm = p->comm;
    m->Cl = m->sh.n_head * RWKV7_HEAD_SIZE;
    m->c0 = m->sh.head_begin * RWKV7_HEAD_SIZE;
    m->Fl = m->F / m->sh.tp;
    m->f0 = m->sh.tp_rank * m->Fl;
    const int first = m->sh.pp_rank == 0, last = m->sh.pp_rank == m->sh.pp - 1;

    /* Host scratch for the largest matrix (emb/head [V][C] or the FFN [F][C], F <= 16C). */
    size_t big = (size_t)m->V * m->C;
    if ((size_t)16 * m->C * m->C > big) big = (size_t)16 * m->C * m->C;
    if ((st = recur_loader_init(&ld.base, b, f, "RWKV-7 x070", big)) != RECUR_OK) goto fail;
    m->layers = calloc((size_t)m->L, sizeof *m->layers);
    if (!m->layers) { st = RECUR_E_NOMEM; goto fail; }

    /* This rank's tensors; the other stages' are theirs to read and check. */
    if (first) {
        if ((st = recur_loader_mat(&ld.base, "emb.weight", m->V, m->C, 0, RECUR_WEIGHT_KEEP, &m->emb)) != RECUR_OK)
            goto fail;
        if ((st = recur_loader_vec(&ld.base, "blocks.0.ln0.weight", m->C, &m->ln0_w)) != RECUR_OK) goto fail;
        if ((st = recur_loader_vec(&ld.base, "blocks.0.ln0.bias", m->C, &m->ln0_b)) != RECUR_OK) goto fail;
    } else {
        (void)recur_loader_get(&ld.base, "emb.weight", 0);
    }
    for (int32_t i = 0; i < m->L; i++) {
        if (i >= m->sh.layer_begin && i < m->sh.layer_end) {
            if ((st = ld_layer(&ld, m, i, &m->layers[i])) != RECUR_OK) goto fail;
        } else {
            char pre[32];
            snprintf(pre, sizeof pre, "blocks.%d.", i);
            recur_loader_skip_prefix(&ld.base, pre);
        }
    }
    if (last) {
        const recur_block_t vocab = {m->sh.vocab_begin, m->sh.n_vocab, 0, m->C};
        if ((st = recur_loader_vec(&ld.base, "ln_out.weight", m->C, &m->lnout_w)) != RECUR_OK) goto fail;
        if ((st = recur_loader_vec(&ld.base, "ln_out.bias", m->C, &m->lnout_b)) != RECUR_OK) goto fail;
        if ((st = recur_loader_mat_block(&ld.base, "head.weight", m->V, m->C, 0, &vocab, RECUR_WEIGHT_PROJ,
                                         &m->head)) != RECUR_OK)
            goto fail;
    } else {
        recur_loader_skip_prefix(&ld.base, "ln_out.");
        recur_loader_skip_prefix(&ld.base, "head.");
    }
    if ((st = recur_loader_check_all_used(&ld.base)) != RECUR_OK) goto fail;

    /* Workspace for max_tokens rows. */
    m->max_tokens = max_tokens;
    size_t MC = (size_t)max_tokens * m->C;
    float **bufs[] = {&m->x, &m->xa, &m->r, &m->k, &m->v, &m->w, &m->a, &m->g, &m->kk, &m->v_first, &m->v_mix,
                      &m->y, &m->xo};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i] = b->iface.alloc(b, MC * sizeof(float)))) { st = RECUR_E_NOMEM; goto fail; }
    m->mixes = b->iface.alloc(b, MIX_N * MC * sizeof(float));
    m->lora = b->iface.alloc(b, (size_t)LORA_N * max_tokens * m->D_max * sizeof(float));
    m->ffn = b->iface.alloc(b, (size_t)max_tokens * m->F * sizeof(float));
    if (!m->mixes || !m->lora || !m->ffn) { st = RECUR_E_NOMEM; goto fail; }
    if (last && m->sh.tp > 1) {
        m->lg_local = b->iface.alloc(b, (size_t)max_tokens * m->sh.n_vocab * sizeof(float));
        m->lg_all = b->iface.alloc(b, (size_t)max_tokens * m->V * sizeof(float));
        if (!m->lg_local || !m->lg_all) { st = RECUR_E_NOMEM; goto fail; }
    }
    m->sh.bytes_read = ld.base.bytes_read;
    const int64_t emb_bytes = first ? (int64_t)recur_weight_bytes(&m->emb) : 0;

    *info = (recur_model_info_t){
        .arch = RECUR_ARCH_RWKV7, .arch_name = "rwkv7", .n_vocab = m->V, .n_embd = m->C, .n_layer = m->L,
        .n_head = m->H, .head_size = RWKV7_HEAD_SIZE, .ffn_dim = m->F, .head_size_k = RWKV7_HEAD_SIZE,
        .state_bytes = (size_t)(m->sh.layer_end - m->sh.layer_begin) * layer_state_bytes(m),
        .state_dtype = m->state_dtype,
        .n_params = ld.base.n_params,
        .matrix_bytes = ld.base.matrix_bytes - emb_bytes,
        .file_dtype = recur_model_files_find(f, "head.weight")->dtype,
        .bos_id = -1,        /* RWKV World models take the text as it is */
        .prefill_chunk = 0,  /* the CPU WKV is serial; the GPU's chunked form comes with the CUDA backend */
        .shard = m->sh,
    };
    recur_loader_free(&ld.base);
    *out = m;
    return RECUR_OK;
fail:
    recur_loader_free(&ld.base);
    rwkv7_free(b, m);
    return st;
}

/* ------------------------------------------------------------------ forward */



/* m->mixes = token_shift_mix(LayerNorm(m->x)) with n_mix mixes: one fused op where the
 * backend has it; the --skip diagnostics (skip_norm, skip_shift) leave out either half. */
static recur_status_t norm_shift(recur_backend_t *b, const rwkv7_t *m, uint32_t skip_norm, uint32_t skip_shift,
                                 const float *ln_w, const float *ln_b, const recur_rows_t *rows,
                                 recur_state_ref_t shift, int32_t n_mix, const float *mix) {
    const int32_t M = rows->n_rows, C = m->C;
    if (!(m->skip & (skip_norm | skip_shift)))
        return recur_backend_layernorm_shift_mix(b, m->x, ln_w, ln_b, C, RWKV7_LN_EPS, rows, shift, n_mix, mix, m->xa,
                                                 m->mixes);
    if (!(m->skip & skip_norm)) RECUR_TRY(b->iface.layernorm(b, m->x, ln_w, ln_b, M, C, RWKV7_LN_EPS, m->xa));
    if (!(m->skip & skip_shift)) RECUR_TRY(b->iface.token_shift_mix(b, m->xa, C, rows, shift, n_mix, mix, m->mixes));
    return RECUR_OK;
}

static recur_status_t rwkv7_forward(recur_backend_t *b, void *ctx, const recur_rows_t *rows, const int32_t *tokens,
                                    void *pool, size_t slot_bytes, int32_t n_out, const int32_t *out_rows,
                                    float *logits) {
    rwkv7_t *m = ctx;
    const int32_t M = rows->n_rows, C = m->C, Cl = m->Cl;
    const size_t MC = (size_t)M * C;
    RECUR_ASSERT(M >= 1 && M <= m->max_tokens);
    const recur_backend_iface_t *k = &b->iface;
    const recur_model_shard_t *sh = &m->sh;
    /* Row-parallel projections: rank 0 of the TP group adds its part to x, the others
     * write theirs, and the all-reduce sums them into x on every rank. */
    const int acc = sh->tp_rank == 0, tp = sh->tp > 1;

    if (sh->pp_rank == 0) {
        RECUR_TRY(k->embed(b, &m->emb, tokens, M, m->x));
        RECUR_TRY(k->layernorm(b, m->x, m->ln0_w, m->ln0_b, M, C, RWKV7_LN_EPS, m->x));
    } else { /* the hidden vectors and layer 0's values (v_first) from the previous stage */
        RECUR_TRY(recur_comm_pp_recv_prev(m->comm, m->x, MC * sizeof(float)));
        RECUR_TRY(recur_comm_pp_recv_prev(m->comm, m->v_first, (size_t)M * Cl * sizeof(float)));
    }
    for (int32_t l = sh->layer_begin; l < sh->layer_end; l++) {
        const rwkv7_layer_t *ly = &m->layers[l];
        size_t so = (size_t)(l - sh->layer_begin) * layer_state_bytes(m); /* l: a layer of this stage */
        recur_state_ref_t ffn_shift = {pool, slot_bytes, so, RECUR_DTYPE_F32};
        recur_state_ref_t att_shift = {pool, slot_bytes, so + (size_t)C * sizeof(float), RECUR_DTYPE_F32};
        recur_state_ref_t wkv = {pool, slot_bytes, so + 2 * (size_t)C * sizeof(float), m->state_dtype};

        /* ---- time mix */
        RECUR_TRY(norm_shift(b, m, RECUR_SKIP_NORM1, RECUR_SKIP_SHIFT1, ly->ln1_w, ly->ln1_b, rows, att_shift, MIX_N,
                             ly->mix));
        const float *xr = m->mixes + MIX_R * MC, *xw = m->mixes + MIX_W * MC, *xk = m->mixes + MIX_K * MC;
        const float *xv = m->mixes + MIX_V * MC, *xa = m->mixes + MIX_A * MC, *xg = m->mixes + MIX_G * MC;
        /* r, k, v and the LoRAs' first matrices (with the decay's tanh and the gate's
         * sigmoid between a LoRA's two matrices) as one batch of products, then the LoRAs'
         * second matrices as another: at decode sizes 2 launches instead of 15. The
         * value LoRA exists from layer 1 on, so it comes last in both. */
        const size_t MD = (size_t)M * m->D_max;
        float *lw = m->lora, *la = lw + MD, *lg = la + MD, *lv = lg + MD;
        const int n_lora = l > 0 ? LORA_N : LORA_N - 1;
        const recur_matmul_op_t first[3 + LORA_N] = {
            {xr, &ly->wr, m->r, 0, RECUR_ACT_NONE},   {xk, &ly->wk, m->k, 0, RECUR_ACT_NONE},
            {xv, &ly->wv, m->v, 0, RECUR_ACT_NONE},   {xw, &ly->w1, lw, 0, RECUR_ACT_TANH},
            {xa, &ly->a1, la, 0, RECUR_ACT_NONE},     {xg, &ly->g1, lg, 0, RECUR_ACT_SIGMOID},
            {xv, &ly->v1, lv, 0, RECUR_ACT_NONE}};
        if (!(m->skip & RECUR_SKIP_PROJ)) RECUR_TRY(recur_backend_matmul_many(b, M, 3 + n_lora, first));
        const recur_matmul_op_t second[LORA_N] = {
            {lw, &ly->w2, m->w, 0, RECUR_ACT_NONE}, {la, &ly->a2, m->a, 0, RECUR_ACT_NONE},
            {lg, &ly->g2, m->g, 0, RECUR_ACT_NONE}, {lv, &ly->v2, m->v_mix, 0, RECUR_ACT_NONE}};
        if (!(m->skip & RECUR_SKIP_LORA2)) RECUR_TRY(recur_backend_matmul_many(b, M, n_lora, second));
        recur_rwkv7_prep_args_t prep = {
            .M = M, .C = Cl, .head_size = RWKV7_HEAD_SIZE, .w = m->w, .a = m->a, .k = m->k, .v = m->v,
            .kk = m->kk, .v_first = m->v_first, .v_mix = l > 0 ? m->v_mix : NULL,
            .w0 = ly->w0, .a0 = ly->a0, .v0 = ly->v0, .k_k = ly->k_k, .k_a = ly->k_a};
        recur_rwkv7_wkv_args_t wa = {.C = Cl, .head_size = RWKV7_HEAD_SIZE, .rows = *rows, .r = m->r, .w = m->w,
                                     .k = m->k, .v = m->v, .kk = m->kk, .a = m->a, .state = wkv, .y = m->y};
        recur_rwkv7_out_args_t oa = {.M = M, .C = Cl, .head_size = RWKV7_HEAD_SIZE, .eps = RWKV7_GN_EPS,
                                     .y = m->y, .r = m->r, .k = m->k, .v = m->v, .g = m->g, .r_k = ly->r_k,
                                     .ln_w = ly->lnx_w, .ln_b = ly->lnx_b, .out = m->y};
        if (!(m->skip & RECUR_SKIP_RECUR)) RECUR_TRY(recur_backend_rwkv7_step(b, &prep, &wa, &oa));
        if (!(m->skip & RECUR_SKIP_OUT)) RECUR_TRY(k->matmul(b, m->y, &ly->wo, M, m->x, acc));
        if (tp) RECUR_TRY(recur_comm_tp_allreduce(m->comm, m->x, MC));

        /* ---- channel mix */
        RECUR_TRY(norm_shift(b, m, RECUR_SKIP_NORM2, RECUR_SKIP_SHIFT2, ly->ln2_w, ly->ln2_b, rows, ffn_shift, 1,
                             ly->ffn_mix));
        const recur_matmul_op_t key = {m->mixes, &ly->ffn_key, m->ffn, 0, RECUR_ACT_RELU_SQ};
        if (!(m->skip & RECUR_SKIP_FFN_UP)) RECUR_TRY(recur_backend_matmul_many(b, M, 1, &key));
        if (m->skip & RECUR_SKIP_FFN_DOWN) {
        } else if (k->matmul_sparse_in) {
            RECUR_TRY(k->matmul_sparse_in(b, m->ffn, &ly->ffn_value, M, m->x, acc));
        } else {
            RECUR_TRY(k->matmul(b, m->ffn, &ly->ffn_value, M, m->x, acc));
        }
        if (tp) RECUR_TRY(recur_comm_tp_allreduce(m->comm, m->x, MC));
    }
    if (sh->pp_rank < sh->pp - 1) {
        RECUR_TRY(recur_comm_pp_send_next(m->comm, m->x, MC * sizeof(float)));
        return recur_comm_pp_send_next(m->comm, m->v_first, (size_t)M * Cl * sizeof(float));
    }
    if (n_out == 0) return RECUR_OK;
    RECUR_TRY(k->gather_rows(b, m->x, out_rows, n_out, C, m->xo));
    RECUR_TRY(k->layernorm(b, m->xo, m->lnout_w, m->lnout_b, n_out, C, RWKV7_LN_EPS, m->xo));
    RECUR_TRY(k->matmul(b, m->xo, &m->head, n_out, tp ? m->lg_local : logits, 0));
    return recur_model_gather_logits(b, m->comm, sh, m->lg_local, m->lg_all, n_out, logits);
}

const recur_model_arch_t recur_arch_rwkv7 = {
    .name = "rwkv7",
    .detect = rwkv7_detect,
    .load = rwkv7_load,
    .free = rwkv7_free,
    .forward = rwkv7_forward,
};
