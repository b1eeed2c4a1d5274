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
    recur_dtype_t state_dtype;                   /* of the wkv matrices */
    recur_weight_t emb, head;                    /* [V][C] */
    float *ln0_w, *ln0_b, *lnout_w, *lnout_b;    /* [C] */
    rwkv7_layer_t *layers;
    /* workspace, [max_tokens][...] */
    float *x, *xa, *mixes, *r, *k, *v, *w, *a, *g, *kk, *v_first, *v_mix, *y, *lora, *ffn, *xo;
} rwkv7_t;

/* ------------------------------------------------------------------ loading */

/* rwkv7's loader: the shared one plus which layout the checkpoint uses. */
typedef struct loader {
    recur_loader_t base;
    int blinkdl; /* 1: BlinkDL names/layout, 0: rwkv.cpp .bin layout */
} loader_t;

/* LoRA pair: first maps C -> D (stored [D][C]), second D -> C (stored [C][D]). The file
 * tells D; the .bin already has the Linear layout, BlinkDL has its transpose. */
static recur_status_t ld_lora(loader_t *ld, int layer, const char *n1, const char *n2, int32_t C,
                              recur_weight_t *w1, recur_weight_t *w2, int32_t *d_max) {
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
    if (ld->blinkdl) {
        RECUR_TRY(recur_loader_mat(&ld->base, k1, C, D, 1, w1));
        RECUR_TRY(recur_loader_mat(&ld->base, k2, D, C, 1, w2));
    } else {
        RECUR_TRY(recur_loader_mat(&ld->base, k1, D, C, 0, w1));
        RECUR_TRY(recur_loader_mat(&ld->base, k2, C, D, 0, w2));
    }
    return RECUR_OK;
}

static recur_status_t ld_layer(loader_t *ld, rwkv7_t *m, int i, rwkv7_layer_t *ly) {
    char k[128];
    int32_t C = m->C;
#define LVEC(field, fmt, n) do { snprintf(k, sizeof k, fmt, i); RECUR_TRY(recur_loader_vec(&ld->base, k, n, &ly->field)); } while (0)
    LVEC(ln1_w, "blocks.%d.ln1.weight", C);
    LVEC(ln1_b, "blocks.%d.ln1.bias", C);
    LVEC(ln2_w, "blocks.%d.ln2.weight", C);
    LVEC(ln2_b, "blocks.%d.ln2.bias", C);
    LVEC(w0, "blocks.%d.att.w0", C);
    LVEC(a0, "blocks.%d.att.a0", C);
    LVEC(k_k, "blocks.%d.att.k_k", C);
    LVEC(k_a, "blocks.%d.att.k_a", C);
    LVEC(lnx_w, "blocks.%d.att.ln_x.weight", C);
    LVEC(lnx_b, "blocks.%d.att.ln_x.bias", C);
    LVEC(ffn_mix, "blocks.%d.ffn.x_k", C);
#undef LVEC
    /* r_k is [H, 64], one bonus weight per key channel of each head. */
    snprintf(k, sizeof k, "blocks.%d.att.r_k", i);
    const recur_tensor_info_t *rk = recur_loader_get(&ld->base, k, 1);
    if (!rk) return RECUR_E_FORMAT;
    if (rk->n_dims != 2 || rk->shape[0] != m->H || rk->shape[1] != RWKV7_HEAD_SIZE) {
        char want[64];
        snprintf(want, sizeof want, "[%d,%d]", m->H, RWKV7_HEAD_SIZE);
        return recur_loader_shape_error(&ld->base, rk, want);
    }
    RECUR_TRY(recur_loader_upload_vec(&ld->base, rk, C, &ly->r_k));

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

    snprintf(k, sizeof k, "blocks.%d.att.receptance.weight", i);
    RECUR_TRY(recur_loader_mat(&ld->base, k, C, C, 0, &ly->wr));
    snprintf(k, sizeof k, "blocks.%d.att.key.weight", i);
    RECUR_TRY(recur_loader_mat(&ld->base, k, C, C, 0, &ly->wk));
    snprintf(k, sizeof k, "blocks.%d.att.value.weight", i);
    RECUR_TRY(recur_loader_mat(&ld->base, k, C, C, 0, &ly->wv));
    snprintf(k, sizeof k, "blocks.%d.att.output.weight", i);
    RECUR_TRY(recur_loader_mat(&ld->base, k, C, C, 0, &ly->wo));
    RECUR_TRY(ld_lora(ld, i, "w1", "w2", C, &ly->w1, &ly->w2, &m->D_max));
    RECUR_TRY(ld_lora(ld, i, "a1", "a2", C, &ly->a1, &ly->a2, &m->D_max));
    RECUR_TRY(ld_lora(ld, i, "g1", "g2", C, &ly->g1, &ly->g2, &m->D_max));
    if (i > 0) {
        RECUR_TRY(ld_lora(ld, i, "v1", "v2", C, &ly->v1, &ly->v2, &m->D_max));
        snprintf(k, sizeof k, "blocks.%d.att.v0", i);
        RECUR_TRY(recur_loader_vec(&ld->base, k, C, &ly->v0));
    } else {
        /* Layer 0's v0/v1/v2, when present, are inert (v_first == v there): accept and skip. */
        static const char *inert[] = {"v0", "v1", "v2"};
        for (int j = 0; j < 3; j++) {
            snprintf(k, sizeof k, "blocks.0.att.%s", inert[j]);
            (void)recur_loader_get(&ld->base, k, 0);
        }
    }
    snprintf(k, sizeof k, "blocks.%d.ffn.key.weight", i);
    const recur_tensor_info_t *fk = recur_model_files_find(ld->base.f, k);
    if (!fk) {
        recur_log_err("%s: missing tensor '%s' (RWKV-7 x070)", ld->base.path, k);
        return RECUR_E_FORMAT;
    }
    if (i == 0) {
        if (fk->n_dims != 2 || fk->shape[0] < 1 || fk->shape[0] > 16 * (int64_t)C)
            return recur_loader_shape_error(&ld->base, fk, "[F,C]");
        m->F = (int32_t)fk->shape[0];
    }
    RECUR_TRY(recur_loader_mat(&ld->base, k, m->F, C, 0, &ly->ffn_key));
    snprintf(k, sizeof k, "blocks.%d.ffn.value.weight", i);
    RECUR_TRY(recur_loader_mat(&ld->base, k, C, m->F, ld->base.b->iface.matmul_sparse_in != NULL, &ly->ffn_value));
    return RECUR_OK;
}

static void rwkv7_free(recur_backend_t *b, void *ctx) {
    rwkv7_t *m = ctx;
    if (!m) return;
    b->iface.weight_free(b, &m->emb);
    b->iface.weight_free(b, &m->head);
    float *vecs[] = {m->ln0_w, m->ln0_b, m->lnout_w, m->lnout_b, m->x, m->xa, m->mixes, m->r, m->k, m->v,
                     m->w, m->a, m->g, m->kk, m->v_first, m->v_mix, m->y, m->lora, m->ffn, m->xo};
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
 * state dtype (rwkv.cpp's layout when that is f32). Bytes per layer: */
static size_t layer_state_bytes(const rwkv7_t *m) {
    return 2 * (size_t)m->C * sizeof(float) +
           (size_t)m->H * RWKV7_HEAD_SIZE * RWKV7_HEAD_SIZE * recur_dtype_size(m->state_dtype);
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

    /* Host scratch for the largest matrix (emb/head [V][C] or the FFN [F][C], F <= 16C). */
    size_t big = (size_t)m->V * m->C;
    if ((size_t)16 * m->C * m->C > big) big = (size_t)16 * m->C * m->C;
    if ((st = recur_loader_init(&ld.base, b, f, "RWKV-7 x070", big)) != RECUR_OK) goto fail;
    m->layers = calloc((size_t)m->L, sizeof *m->layers);
    if (!m->layers) { st = RECUR_E_NOMEM; goto fail; }

    if ((st = recur_loader_mat(&ld.base, "emb.weight", m->V, m->C, 0, &m->emb)) != RECUR_OK) goto fail;
    if ((st = recur_loader_vec(&ld.base, "blocks.0.ln0.weight", m->C, &m->ln0_w)) != RECUR_OK) goto fail;
    if ((st = recur_loader_vec(&ld.base, "blocks.0.ln0.bias", m->C, &m->ln0_b)) != RECUR_OK) goto fail;
    for (int32_t i = 0; i < m->L; i++)
        if ((st = ld_layer(&ld, m, i, &m->layers[i])) != RECUR_OK) goto fail;
    if ((st = recur_loader_vec(&ld.base, "ln_out.weight", m->C, &m->lnout_w)) != RECUR_OK) goto fail;
    if ((st = recur_loader_vec(&ld.base, "ln_out.bias", m->C, &m->lnout_b)) != RECUR_OK) goto fail;
    if ((st = recur_loader_mat(&ld.base, "head.weight", m->V, m->C, 0, &m->head)) != RECUR_OK) goto fail;
    if ((st = recur_loader_check_all_used(&ld.base)) != RECUR_OK) goto fail;

    /* Workspace for max_tokens rows. */
    m->max_tokens = max_tokens;
    size_t MC = (size_t)max_tokens * m->C;
    float **bufs[] = {&m->x, &m->xa, &m->r, &m->k, &m->v, &m->w, &m->a, &m->g, &m->kk, &m->v_first, &m->v_mix,
                      &m->y, &m->xo};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i] = b->iface.alloc(b, MC * sizeof(float)))) { st = RECUR_E_NOMEM; goto fail; }
    m->mixes = b->iface.alloc(b, MIX_N * MC * sizeof(float));
    m->lora = b->iface.alloc(b, (size_t)max_tokens * m->D_max * sizeof(float));
    m->ffn = b->iface.alloc(b, (size_t)max_tokens * m->F * sizeof(float));
    if (!m->mixes || !m->lora || !m->ffn) { st = RECUR_E_NOMEM; goto fail; }

    *info = (recur_model_info_t){
        .arch = RECUR_ARCH_RWKV7, .arch_name = "rwkv7", .n_vocab = m->V, .n_embd = m->C, .n_layer = m->L,
        .n_head = m->H, .head_size = RWKV7_HEAD_SIZE, .ffn_dim = m->F,
        .state_bytes = (size_t)m->L * layer_state_bytes(m), .state_dtype = m->state_dtype,
        .n_params = ld.base.n_params,
        .file_dtype = recur_model_files_find(f, "head.weight")->dtype,
        .bos_id = -1,        /* RWKV World models take the text as it is */
        .prefill_chunk = 0,  /* the CPU WKV is serial; the GPU's chunked form comes with the CUDA backend */
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


/* y = f2(f1(x)) with an optional activation between the two LoRA matmuls. */
static recur_status_t lora(recur_backend_t *b, rwkv7_t *m, const float *x, int32_t M, const recur_weight_t *w1,
                           const recur_weight_t *w2, int act, recur_act_t kind, float *y) {
    RECUR_TRY(b->iface.matmul(b, x, w1, M, m->lora, 0));
    if (act) RECUR_TRY(b->iface.act(b, kind, m->lora, (int64_t)M * w1->rows, m->lora));
    return b->iface.matmul(b, m->lora, w2, M, y, 0);
}

static recur_status_t rwkv7_forward(recur_backend_t *b, void *ctx, const recur_rows_t *rows, const int32_t *tokens,
                                    void *pool, size_t slot_bytes, int32_t n_out, const int32_t *out_rows,
                                    float *logits) {
    rwkv7_t *m = ctx;
    const int32_t M = rows->n_rows, C = m->C;
    const size_t MC = (size_t)M * C;
    RECUR_ASSERT(M >= 1 && M <= m->max_tokens);
    const recur_backend_iface_t *k = &b->iface;

    RECUR_TRY(k->embed(b, &m->emb, tokens, M, m->x));
    RECUR_TRY(k->layernorm(b, m->x, m->ln0_w, m->ln0_b, M, C, RWKV7_LN_EPS, m->x));
    for (int32_t l = 0; l < m->L; l++) {
        const rwkv7_layer_t *ly = &m->layers[l];
        size_t so = (size_t)l * layer_state_bytes(m);
        recur_state_ref_t ffn_shift = {pool, slot_bytes, so, RECUR_DTYPE_F32};
        recur_state_ref_t att_shift = {pool, slot_bytes, so + (size_t)C * sizeof(float), RECUR_DTYPE_F32};
        recur_state_ref_t wkv = {pool, slot_bytes, so + 2 * (size_t)C * sizeof(float), m->state_dtype};

        /* ---- time mix */
        RECUR_TRY(k->layernorm(b, m->x, ly->ln1_w, ly->ln1_b, M, C, RWKV7_LN_EPS, m->xa));
        RECUR_TRY(k->token_shift_mix(b, m->xa, C, rows, att_shift, MIX_N, ly->mix, m->mixes));
        const float *xr = m->mixes + MIX_R * MC, *xw = m->mixes + MIX_W * MC, *xk = m->mixes + MIX_K * MC;
        const float *xv = m->mixes + MIX_V * MC, *xa = m->mixes + MIX_A * MC, *xg = m->mixes + MIX_G * MC;
        RECUR_TRY(k->matmul(b, xr, &ly->wr, M, m->r, 0));
        RECUR_TRY(k->matmul(b, xk, &ly->wk, M, m->k, 0));
        RECUR_TRY(k->matmul(b, xv, &ly->wv, M, m->v, 0));
        RECUR_TRY(lora(b, m, xw, M, &ly->w1, &ly->w2, 1, RECUR_ACT_TANH, m->w));
        RECUR_TRY(lora(b, m, xa, M, &ly->a1, &ly->a2, 0, RECUR_ACT_TANH, m->a));
        RECUR_TRY(lora(b, m, xg, M, &ly->g1, &ly->g2, 1, RECUR_ACT_SIGMOID, m->g));
        if (l > 0) RECUR_TRY(lora(b, m, xv, M, &ly->v1, &ly->v2, 0, RECUR_ACT_TANH, m->v_mix));
        recur_rwkv7_prep_args_t prep = {
            .M = M, .C = C, .head_size = RWKV7_HEAD_SIZE, .w = m->w, .a = m->a, .k = m->k, .v = m->v,
            .kk = m->kk, .v_first = m->v_first, .v_mix = l > 0 ? m->v_mix : NULL,
            .w0 = ly->w0, .a0 = ly->a0, .v0 = ly->v0, .k_k = ly->k_k, .k_a = ly->k_a};
        RECUR_TRY(k->rwkv7_prep(b, &prep));
        recur_rwkv7_wkv_args_t wa = {.C = C, .head_size = RWKV7_HEAD_SIZE, .rows = *rows, .r = m->r, .w = m->w,
                                     .k = m->k, .v = m->v, .kk = m->kk, .a = m->a, .state = wkv, .y = m->y};
        RECUR_TRY(k->rwkv7_wkv(b, &wa));
        recur_rwkv7_out_args_t oa = {.M = M, .C = C, .head_size = RWKV7_HEAD_SIZE, .eps = RWKV7_GN_EPS,
                                     .y = m->y, .r = m->r, .k = m->k, .v = m->v, .g = m->g, .r_k = ly->r_k,
                                     .ln_w = ly->lnx_w, .ln_b = ly->lnx_b, .out = m->y};
        RECUR_TRY(k->rwkv7_out(b, &oa));
        RECUR_TRY(k->matmul(b, m->y, &ly->wo, M, m->x, 1));

        /* ---- channel mix */
        RECUR_TRY(k->layernorm(b, m->x, ly->ln2_w, ly->ln2_b, M, C, RWKV7_LN_EPS, m->xa));
        RECUR_TRY(k->token_shift_mix(b, m->xa, C, rows, ffn_shift, 1, ly->ffn_mix, m->mixes));
        RECUR_TRY(k->matmul(b, m->mixes, &ly->ffn_key, M, m->ffn, 0));
        RECUR_TRY(k->act(b, RECUR_ACT_RELU_SQ, m->ffn, (int64_t)M * m->F, m->ffn));
        if (k->matmul_sparse_in)
            RECUR_TRY(k->matmul_sparse_in(b, m->ffn, &ly->ffn_value, M, m->x, 1));
        else
            RECUR_TRY(k->matmul(b, m->ffn, &ly->ffn_value, M, m->x, 1));
    }
    if (n_out == 0) return RECUR_OK;
    RECUR_TRY(k->gather_rows(b, m->x, out_rows, n_out, C, m->xo));
    RECUR_TRY(k->layernorm(b, m->xo, m->lnout_w, m->lnout_b, n_out, C, RWKV7_LN_EPS, m->xo));
    return k->matmul(b, m->xo, &m->head, n_out, logits, 0);
}

const recur_model_arch_t recur_arch_rwkv7 = {
    .name = "rwkv7",
    .detect = rwkv7_detect,
    .load = rwkv7_load,
    .free = rwkv7_free,
    .forward = rwkv7_forward,
};
