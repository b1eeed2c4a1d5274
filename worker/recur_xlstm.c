/* recur_xlstm.c: xLSTM 7B ("xlstm" in Hugging Face transformers 5.x) on any backend:
 * config.json + safetensors loading and the forward pass of models/XLSTM.md §3-5.
 *
 *   x = E[token]
 *   per block:  xn = RMSNorm(x);  q,k,v,o = W xn;  i,f = W xn + b (soft-capped)
 *               h  = mLSTM(q, k, v, i, f; state C, n, m)
 *               x += W_out (sigmoid(o) * MultiHeadLayerNorm(h))
 *               xn2 = RMSNorm(x);  x += W_down (SiLU(W_gate xn2) * W_up xn2)
 *   logits = cap * tanh(lm_head RMSNorm(x) / cap)
 *
 * The checkpoint is a Hugging Face directory: config.json (xLSTMConfig) and
 * model.safetensors or shards. Only weight_mode "single" and use_bias false exist in
 * released checkpoints and in HF 5.17; anything else is refused, never guessed at. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "recur_file.h"
#include "recur_loader.h"
#include "recur_log.h"
#include "recur_model_arch.h"

#define XLSTM_MAX_LAYERS 1024
#define XLSTM_MAX_CONFIG_BYTES (1 << 20)

typedef struct xlstm_config {
    int32_t D, L, NH, V, bos;
    double qk_factor, v_factor, ffn_factor;
    int32_t ffn_multiple, chunk;
    float gate_cap, logit_cap, norm_eps, eps;
    int tied;
} xlstm_config_t;

typedef struct xlstm_layer {
    float *norm_mlstm, *norm_ffn, *mh_norm;          /* [D], [D], [NH*DV] */
    float *i_bias, *f_bias;                          /* [NH] */
    recur_weight_t wq, wk, wv, wo, wi, wf, wout;     /* [NH*DQK][D] x2, [NH*DV][D] x2, [NH][D] x2, [D][NH*DV] */
    recur_weight_t up_gate, up, down;                /* [F][D], [F][D], [D][F] */
} xlstm_layer_t;

typedef struct xlstm {
    xlstm_config_t cfg;
    int32_t DQK, DV, F, max_tokens, chunk;
    /* this rank's shard: layers [sh.layer_begin, sh.layer_end), heads h0 .. h0 + NHl - 1,
     * FFN columns f0 .. f0 + Fl - 1 (everything with tp = pp = 1) */
    recur_model_shard_t sh;
    recur_comm_t *comm;
    int32_t NHl, h0, Fl, f0;
    recur_dtype_t state_dtype;                       /* of C */
    uint32_t skip;                                   /* recur_model_params_t.skip_kernels */
    recur_weight_t emb, head;                        /* [V][D] (head == emb when tied) */
    float *out_norm;                                 /* [D] */
    xlstm_layer_t *layers;
    /* workspace, [max_tokens][...] */
    float *x, *xn, *q, *k, *v, *o, *ig, *fg, *h, *ffn_g, *ffn_u, *xo;
    float *lg_local, *lg_all;  /* tp > 1, last stage: [max_tokens][V/tp], [tp][max_tokens][V/tp] */
} xlstm_t;

/* ------------------------------------------------------------------ config.json */

static const cJSON *cfg_item(const cJSON *root, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, a);
    if ((!x || cJSON_IsNull(x)) && b) x = cJSON_GetObjectItemCaseSensitive(root, b);
    return x && !cJSON_IsNull(x) ? x : NULL;
}

/* A number field (optionally under an alias); def when absent; RECUR_E_FORMAT when the
 * field is there but not a number, or the two aliases disagree. */
static recur_status_t cfg_num(const char *path, const cJSON *root, const char *a, const char *b, double def,
                              double *out) {
    const cJSON *x = cfg_item(root, a, NULL), *y = b ? cfg_item(root, b, NULL) : NULL;
    if ((x && !cJSON_IsNumber(x)) || (y && !cJSON_IsNumber(y))) {
        recur_log_err("%s: '%s' must be a number", path, x && !cJSON_IsNumber(x) ? a : b);
        return RECUR_E_FORMAT;
    }
    if ((x && !isfinite(x->valuedouble)) || (y && !isfinite(y->valuedouble))) {   /* 1e999 parses as inf */
        recur_log_err("%s: '%s' must be a finite number", path, x && !isfinite(x->valuedouble) ? a : b);
        return RECUR_E_FORMAT;
    }
    if (x && y && x->valuedouble != y->valuedouble) {
        recur_log_err("%s: '%s' (%g) and '%s' (%g) disagree", path, a, x->valuedouble, b, y->valuedouble);
        return RECUR_E_FORMAT;
    }
    *out = x ? x->valuedouble : y ? y->valuedouble : def;
    return RECUR_OK;
}

static recur_status_t cfg_int(const char *path, const cJSON *root, const char *a, const char *b, double def,
                              int64_t lo, int64_t hi, int32_t *out) {
    double v;
    RECUR_TRY(cfg_num(path, root, a, b, def, &v));
    if (v != floor(v) || v < (double)lo || v > (double)hi) {
        recur_log_err("%s: '%s' = %g must be an integer in [%lld, %lld]", path, a, v, (long long)lo, (long long)hi);
        return RECUR_E_FORMAT;
    }
    *out = (int32_t)v;
    return RECUR_OK;
}

static int cfg_bool(const cJSON *root, const char *a, int def) {
    const cJSON *x = cfg_item(root, a, NULL);
    return x ? cJSON_IsTrue(x) : def;
}

/* A soft cap: a positive number, or null/absent/0 for none (0 in our struct). */
static recur_status_t cfg_cap(const char *path, const cJSON *root, const char *a, double def, float *out) {
    double v;
    RECUR_TRY(cfg_num(path, root, a, NULL, def, &v));
    if (!(v >= 0.0) || v > FLT_MAX) {   /* (float) of a larger double is undefined */
        recur_log_err("%s: '%s' = %g must be positive and at most %g (or null for no cap)", path, a, v, (double)FLT_MAX);
        return RECUR_E_FORMAT;
    }
    *out = (float)v;
    return RECUR_OK;
}

static recur_status_t read_config(const char *dir, xlstm_config_t *c) {
    char path[4200], *text = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    /* an xLSTM checkpoint needs its config.json next to the weights */
    RECUR_TRY(recur_file_read_small(path, XLSTM_MAX_CONFIG_BYTES, "config.json", &text, &n));
    cJSON *root = cJSON_ParseWithLength(text, n);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        recur_log_err("%s: not a JSON object", path);
        cJSON_Delete(root);
        return RECUR_E_FORMAT;
    }
    recur_status_t st = RECUR_OK;
    const cJSON *mt = cfg_item(root, "model_type", NULL), *wm = cfg_item(root, "weight_mode", NULL);
    if (mt && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "xlstm") != 0)) {
        recur_log_err("%s: model_type is '%s', expected 'xlstm'", path, cJSON_IsString(mt) ? mt->valuestring : "?");
        st = RECUR_E_UNSUPPORTED;
    } else if (wm && (!cJSON_IsString(wm) || strcmp(wm->valuestring, "single") != 0)) {
        recur_log_err("%s: weight_mode '%s' is not supported (only 'single': separate q/k/v/o, gate and FFN "
                      "matrices, as released checkpoints have)", path, cJSON_IsString(wm) ? wm->valuestring : "?");
        st = RECUR_E_UNSUPPORTED;
    } else if (cfg_bool(root, "use_bias", 0)) {
        recur_log_err("%s: use_bias: true is not supported (xLSTM 7B has no biases besides the gates')", path);
        st = RECUR_E_UNSUPPORTED;
    }
    if (st == RECUR_OK) st = cfg_int(path, root, "hidden_size", "embedding_dim", 4096, 1, 1 << 16, &c->D);
    if (st == RECUR_OK) st = cfg_int(path, root, "num_hidden_layers", "num_blocks", 32, 1, XLSTM_MAX_LAYERS, &c->L);
    if (st == RECUR_OK) st = cfg_int(path, root, "num_heads", NULL, 8, 1, 1024, &c->NH);
    if (st == RECUR_OK) st = cfg_int(path, root, "vocab_size", NULL, 50304, 1, 1 << 24, &c->V);
    if (st == RECUR_OK) st = cfg_int(path, root, "bos_token_id", NULL, 0, 0, 1 << 24, &c->bos);
    if (st == RECUR_OK) st = cfg_num(path, root, "qk_dim_factor", NULL, 0.5, &c->qk_factor);
    if (st == RECUR_OK) st = cfg_num(path, root, "v_dim_factor", NULL, 1.0, &c->v_factor);
    if (st == RECUR_OK) st = cfg_num(path, root, "ffn_proj_factor", NULL, 2.667, &c->ffn_factor);
    if (st == RECUR_OK) st = cfg_int(path, root, "ffn_round_up_to_multiple_of", NULL, 64, 1, 1 << 16, &c->ffn_multiple);
    if (st == RECUR_OK) st = cfg_int(path, root, "chunk_size", NULL, 64, 1, 4096, &c->chunk);
    if (st == RECUR_OK) st = cfg_cap(path, root, "gate_soft_cap", 15.0, &c->gate_cap);
    if (st == RECUR_OK) st = cfg_cap(path, root, "output_logit_soft_cap", 30.0, &c->logit_cap);
    double norm_eps = 0, eps = 0;   /* checked against FLT_MAX below, before the casts */
    if (st == RECUR_OK) st = cfg_num(path, root, "norm_eps", NULL, 1e-6, &norm_eps);
    if (st == RECUR_OK) st = cfg_num(path, root, "eps", NULL, 1e-6, &eps);
    if (st == RECUR_OK) {   /* (float) of a double above FLT_MAX would be undefined */
        c->norm_eps = norm_eps <= FLT_MAX ? (float)norm_eps : 0.f;
        c->eps = eps <= FLT_MAX ? (float)eps : 0.f;
    }
    if (st == RECUR_OK && (!(c->norm_eps > 0.f) || !(c->eps > 0.f) || !(c->qk_factor > 0) || !(c->v_factor > 0) ||
                           !(c->ffn_factor > 0))) {
        recur_log_err("%s: norm_eps and eps must be positive float32 values, the dimension factors positive", path);
        st = RECUR_E_FORMAT;
    }
    /* The dimensions are int(D * factor) (the FFN's rounded up to its multiple): keep them
     * where the conversion to int is defined (fuzz_xlstm_config: qk_dim_factor 1e30 was an
     * undefined float -> int cast). 2^24 is far above any real width and keeps D * width
     * products in size_t. */
    const double dmax = (double)(1 << 24);
    if (st == RECUR_OK && (c->D * c->qk_factor > dmax || c->D * c->v_factor > dmax ||
                           c->D * c->ffn_factor + c->ffn_multiple > dmax)) {
        recur_log_err("%s: hidden_size %d times qk_dim_factor %g, v_dim_factor %g or ffn_proj_factor %g is above 2^24",
                      path, c->D, c->qk_factor, c->v_factor, c->ffn_factor);
        st = RECUR_E_FORMAT;
    }
    c->tied = cfg_bool(root, "tie_word_embeddings", 0);
    cJSON_Delete(root);
    return st;
}

/* ------------------------------------------------------------------ loading */

static int xlstm_detect(const recur_model_files_t *f) {
    return recur_model_files_find(f, "backbone.embeddings.weight") &&
           recur_model_files_find(f, "backbone.blocks.0.mlstm_layer.q.weight");
}

static void xlstm_free(recur_backend_t *b, void *ctx) {
    xlstm_t *m = ctx;
    if (!m) return;
    if (m->head.data != m->emb.data) b->iface.weight_free(b, &m->head);
    b->iface.weight_free(b, &m->emb);
    float *vecs[] = {m->out_norm, m->x, m->xn, m->q, m->k, m->v, m->o, m->ig, m->fg, m->h, m->ffn_g, m->ffn_u, m->xo,
                     m->lg_local, m->lg_all};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) b->iface.buf_free(b, vecs[i]);
    if (m->layers) {
        for (int32_t i = 0; i < m->cfg.L; i++) {
            xlstm_layer_t *ly = &m->layers[i];
            float *lv[] = {ly->norm_mlstm, ly->norm_ffn, ly->mh_norm, ly->i_bias, ly->f_bias};
            for (size_t j = 0; j < sizeof lv / sizeof lv[0]; j++) b->iface.buf_free(b, lv[j]);
            recur_weight_t *lw[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->wi, &ly->wf, &ly->wout,
                                    &ly->up_gate, &ly->up, &ly->down};
            for (size_t j = 0; j < sizeof lw / sizeof lw[0]; j++) b->iface.weight_free(b, lw[j]);
        }
        free(m->layers);
    }
    free(m);
}

static recur_status_t load_layer(recur_loader_t *ld, const xlstm_t *m, int32_t i, xlstm_layer_t *ly) {
    const int32_t D = m->cfg.D, NH = m->cfg.NH, QK = NH * m->DQK, VD = NH * m->DV, F = m->F;
    const int32_t h0 = m->h0, nh = m->NHl;
    /* this rank's heads: rows of the per-head projections and gates (column-parallel),
     * columns of out_proj (row-parallel); its FFN slice: rows of up/gate, columns of down */
    const recur_block_t qk_rows = {(int64_t)h0 * m->DQK, (int64_t)nh * m->DQK, 0, D};
    const recur_block_t v_rows = {(int64_t)h0 * m->DV, (int64_t)nh * m->DV, 0, D};
    const recur_block_t gate_rows = {h0, nh, 0, D};
    const recur_block_t out_cols = {0, D, (int64_t)h0 * m->DV, (int64_t)nh * m->DV};
    const recur_block_t up_rows = {m->f0, m->Fl, 0, D}, down_cols = {0, D, m->f0, m->Fl};
    char k[160];
#define NAME(fmt) (snprintf(k, sizeof k, "backbone.blocks.%d." fmt, i), k)
    RECUR_TRY(recur_loader_vec(ld, NAME("norm_mlstm.weight"), D, &ly->norm_mlstm));
    RECUR_TRY(recur_loader_vec(ld, NAME("norm_ffn.weight"), D, &ly->norm_ffn));
    RECUR_TRY(recur_loader_vec_part(ld, NAME("mlstm_layer.multihead_norm.weight"), VD, (int64_t)h0 * m->DV,
                                    (int64_t)nh * m->DV, &ly->mh_norm));
    RECUR_TRY(recur_loader_vec_part(ld, NAME("mlstm_layer.igate_preact.bias"), NH, h0, nh, &ly->i_bias));
    RECUR_TRY(recur_loader_vec_part(ld, NAME("mlstm_layer.fgate_preact.bias"), NH, h0, nh, &ly->f_bias));
    /* the input and forget gates (exponential gates, NH rows each: tiny) stay at full
     * precision in the int8 / fp8 modes; the other matrices are quantized there */
    const recur_weight_use_t P = RECUR_WEIGHT_PROJ, G = RECUR_WEIGHT_KEEP;
    RECUR_TRY(recur_loader_mat_block(ld, NAME("mlstm_layer.q.weight"), QK, D, 0, &qk_rows, P, &ly->wq));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("mlstm_layer.k.weight"), QK, D, 0, &qk_rows, P, &ly->wk));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("mlstm_layer.v.weight"), VD, D, 0, &v_rows, P, &ly->wv));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("mlstm_layer.ogate_preact.weight"), VD, D, 0, &v_rows, P, &ly->wo));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("mlstm_layer.igate_preact.weight"), NH, D, 0, &gate_rows, G, &ly->wi));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("mlstm_layer.fgate_preact.weight"), NH, D, 0, &gate_rows, G, &ly->wf));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("mlstm_layer.out_proj.weight"), D, VD, 0, &out_cols, P, &ly->wout));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("ffn.proj_up_gate.weight"), F, D, 0, &up_rows, P, &ly->up_gate));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("ffn.proj_up.weight"), F, D, 0, &up_rows, P, &ly->up));
    RECUR_TRY(recur_loader_mat_block(ld, NAME("ffn.proj_down.weight"), D, F, 0, &down_cols, P, &ly->down));
#undef NAME
    return RECUR_OK;
}

/* HF: int(D * factor) for q/k and v; FFN rounded up to a multiple (models/XLSTM.md §1). */
static int32_t ffn_width(const xlstm_config_t *c) {
    double x = (double)c->D * c->ffn_factor;
    return (int32_t)(floor((x + c->ffn_multiple - 1) / c->ffn_multiple) * c->ffn_multiple);
}

static recur_status_t xlstm_load(recur_backend_t *b, const recur_model_files_t *f, const recur_model_params_t *p,
                                 recur_model_info_t *info, void **out) {
    *out = NULL;
    const char *path = recur_model_files_path(f, 0);
    recur_loader_t ld = {0};
    recur_status_t st;
    xlstm_t *m = calloc(1, sizeof *m);
    if (!m) return RECUR_E_NOMEM;
    if ((st = read_config(recur_model_files_dir(f), &m->cfg)) != RECUR_OK) goto fail;
    const xlstm_config_t *c = &m->cfg;
    int32_t qk = (int32_t)((double)c->D * c->qk_factor), vd = (int32_t)((double)c->D * c->v_factor);
    m->F = ffn_width(c);
    if (qk < c->NH || qk % c->NH || vd < c->NH || vd % c->NH) {
        recur_log_err("%s: qk_dim %d and v_dim %d must be multiples of num_heads %d", path, qk, vd, c->NH);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    m->DQK = qk / c->NH;
    m->DV = vd / c->NH;
    m->state_dtype = p->state_dtype;
    m->skip = p->skip_kernels;
    if (m->state_dtype == RECUR_DTYPE_BF16 && ((size_t)c->NH * m->DQK * m->DV) % 2) {
        /* n follows C in each layer's state and must stay 4-byte aligned */
        recur_log_err("%s: a bf16 state needs num_heads * qk_dim * v_dim even (got %d x %d x %d)", path, c->NH, m->DQK,
                      m->DV);
        st = RECUR_E_UNSUPPORTED;
        goto fail;
    }
    /* The config and the tensors must describe the same model. */
    const recur_tensor_info_t *emb = recur_model_files_find(f, "backbone.embeddings.weight");
    if (emb->n_dims != 2 || emb->shape[0] != c->V || emb->shape[1] != c->D) {
        char got[96];
        recur_loader_shape_str(emb, got, sizeof got);
        recur_log_err("%s: backbone.embeddings.weight has shape %s but config.json says [%d,%d] (vocab_size, "
                      "hidden_size)", path, got, c->V, c->D);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    char k[96];
    snprintf(k, sizeof k, "backbone.blocks.%d.norm_mlstm.weight", c->L);
    if (recur_model_files_find(f, k)) {
        recur_log_err("%s: has more blocks than num_hidden_layers = %d in config.json", path, c->L);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    size_t big = (size_t)c->V * c->D, ffn = (size_t)m->F * c->D, vv = (size_t)vd * c->D;
    if (ffn > big) big = ffn;
    if (vv > big) big = vv;
    if ((st = recur_model_plan_shard(p, path, c->L, c->NH, m->F, c->V, &m->sh)) != RECUR_OK) goto fail;
    m->comm = p->comm;
    m->NHl = m->sh.n_head;
    m->h0 = m->sh.head_begin;
    m->Fl = m->F / m->sh.tp;
    m->f0 = m->sh.tp_rank * m->Fl;
    const int first = m->sh.pp_rank == 0, last = m->sh.pp_rank == m->sh.pp - 1;
    if ((st = recur_loader_init(&ld, b, f, "xLSTM", big)) != RECUR_OK) goto fail;
    m->layers = calloc((size_t)c->L, sizeof *m->layers);
    if (!m->layers) { st = RECUR_E_NOMEM; goto fail; }

    /* This rank's tensors; the other stages' are theirs to read and check. */
    if (first) {
        if ((st = recur_loader_mat(&ld, "backbone.embeddings.weight", c->V, c->D, 0, RECUR_WEIGHT_KEEP, &m->emb)) !=
            RECUR_OK)
            goto fail;
    } else {
        (void)recur_loader_get(&ld, "backbone.embeddings.weight", 0);
    }
    for (int32_t i = 0; i < c->L; i++) {
        if (i >= m->sh.layer_begin && i < m->sh.layer_end) {
            if ((st = load_layer(&ld, m, i, &m->layers[i])) != RECUR_OK) goto fail;
        } else {
            char pre[48];
            snprintf(pre, sizeof pre, "backbone.blocks.%d.", i);
            recur_loader_skip_prefix(&ld, pre);
        }
    }
    if (last) {
        /* the head: this rank's rows of the vocabulary; tie_word_embeddings without an
         * lm_head tensor reads the embedding matrix (shared outright on a single rank, so
         * kept at the embedding's precision in every layout) */
        const recur_block_t vocab = {m->sh.vocab_begin, m->sh.n_vocab, 0, c->D};
        const int reads_emb = c->tied && !recur_model_files_find(f, "lm_head.weight");
        const char *head = reads_emb ? "backbone.embeddings.weight" : "lm_head.weight";
        if ((st = recur_loader_vec(&ld, "backbone.out_norm.weight", c->D, &m->out_norm)) != RECUR_OK) goto fail;
        if (reads_emb && first && m->sh.tp == 1)
            m->head = m->emb;
        else if ((st = recur_loader_mat_block(&ld, head, c->V, c->D, 0, &vocab,
                                              reads_emb ? RECUR_WEIGHT_KEEP : RECUR_WEIGHT_PROJ, &m->head)) != RECUR_OK)
            goto fail;
    } else {
        recur_loader_skip_prefix(&ld, "backbone.out_norm.");
        recur_loader_skip_prefix(&ld, "lm_head.");
    }
    if ((st = recur_loader_check_all_used(&ld)) != RECUR_OK) goto fail;

    m->max_tokens = p->max_tokens;
    m->chunk = p->prefill_chunk > 0 ? p->prefill_chunk : c->chunk;
    size_t T = (size_t)p->max_tokens;
    struct { float **buf; size_t floats; } ws[] = {
        {&m->x, T * c->D}, {&m->xn, T * c->D}, {&m->q, T * qk}, {&m->k, T * qk}, {&m->v, T * vd}, {&m->o, T * vd},
        {&m->ig, T * c->NH}, {&m->fg, T * c->NH}, {&m->h, T * vd}, {&m->ffn_g, T * m->F}, {&m->ffn_u, T * m->F},
        {&m->xo, T * c->D}};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
        if (!(*ws[i].buf = b->iface.alloc(b, ws[i].floats * sizeof(float)))) { st = RECUR_E_NOMEM; goto fail; }
    if (last && m->sh.tp > 1) {
        m->lg_local = b->iface.alloc(b, T * m->sh.n_vocab * sizeof(float));
        m->lg_all = b->iface.alloc(b, T * c->V * sizeof(float));
        if (!m->lg_local || !m->lg_all) { st = RECUR_E_NOMEM; goto fail; }
    }
    m->sh.bytes_read = ld.bytes_read;
    /* a shared head is the embedding: a step reads it (counted once) */
    const int64_t emb_bytes = first && m->head.data != m->emb.data ? (int64_t)recur_weight_bytes(&m->emb) : 0;

    *info = (recur_model_info_t){
        .arch = RECUR_ARCH_XLSTM, .arch_name = "xlstm", .n_vocab = c->V, .n_embd = c->D, .n_layer = c->L,
        .n_head = c->NH, .head_size = m->DV, .ffn_dim = m->F, .head_size_k = m->DQK,
        .state_bytes = (size_t)(m->sh.layer_end - m->sh.layer_begin) *
                       recur_mlstm_state_bytes(m->NHl, m->DQK, m->DV, m->state_dtype),
        .state_dtype = m->state_dtype,
        .n_params = ld.n_params, .matrix_bytes = ld.matrix_bytes - emb_bytes, .file_dtype = emb->dtype, .bos_id = c->bos, .prefill_chunk = m->chunk,
        .shard = m->sh,
    };
    recur_loader_free(&ld);
    *out = m;
    return RECUR_OK;
fail:
    recur_loader_free(&ld);
    xlstm_free(b, m);
    return st;
}

/* ------------------------------------------------------------------ forward */

static recur_status_t xlstm_forward(recur_backend_t *b, void *ctx, const recur_rows_t *rows, const int32_t *tokens,
                                    void *pool, size_t slot_bytes, int32_t n_out, const int32_t *out_rows,
                                    float *logits) {
    xlstm_t *m = ctx;
    const xlstm_config_t *c = &m->cfg;
    const int32_t M = rows->n_rows, D = c->D;
    RECUR_ASSERT(M >= 1 && M <= m->max_tokens);
    const recur_backend_iface_t *k = &b->iface;
    const size_t MD = (size_t)M * D;
    const recur_model_shard_t *sh = &m->sh;
    /* Row-parallel projections: rank 0 of the TP group adds its part to x, the others
     * write theirs, and the all-reduce sums them into x on every rank. */
    const int acc = sh->tp_rank == 0, tp = sh->tp > 1;
    /* State per slot, per layer of this stage: C [NH][DQK][DV] (state dtype), n [NH][DQK],
     * m [NH] (f32), for this rank's heads. */
    const size_t layer_state = recur_mlstm_state_bytes(m->NHl, m->DQK, m->DV, m->state_dtype);

    if (sh->pp_rank == 0)
        RECUR_TRY(k->embed(b, &m->emb, tokens, M, m->x));
    else
        RECUR_TRY(recur_comm_pp_recv_prev(m->comm, m->x, MD * sizeof(float)));
    for (int32_t l = sh->layer_begin; l < sh->layer_end; l++) {
        const xlstm_layer_t *ly = &m->layers[l];
        if (!(m->skip & RECUR_SKIP_NORM1)) RECUR_TRY(k->rmsnorm(b, m->x, ly->norm_mlstm, M, D, c->norm_eps, m->xn));
        /* the six projections of the normed input as one batch (one launch at decode sizes) */
        const recur_matmul_op_t proj[6] = {
            {m->xn, &ly->wq, m->q, 0, RECUR_ACT_NONE},  {m->xn, &ly->wk, m->k, 0, RECUR_ACT_NONE},
            {m->xn, &ly->wv, m->v, 0, RECUR_ACT_NONE},  {m->xn, &ly->wo, m->o, 0, RECUR_ACT_NONE},
            {m->xn, &ly->wi, m->ig, 0, RECUR_ACT_NONE}, {m->xn, &ly->wf, m->fg, 0, RECUR_ACT_NONE}};
        if (!(m->skip & RECUR_SKIP_PROJ)) RECUR_TRY(recur_backend_matmul_many(b, M, 6, proj));
        recur_mlstm_args_t a = {
            .n_head = m->NHl, .dqk = m->DQK, .dv = m->DV, .chunk = m->chunk,
            .gate_cap = c->gate_cap > 0.f ? c->gate_cap : INFINITY, .eps = c->eps, .rows = *rows,
            .q = m->q, .k = m->k, .v = m->v, .i_pre = m->ig, .f_pre = m->fg, .i_bias = ly->i_bias, .f_bias = ly->f_bias,
            .state = {pool, slot_bytes, (size_t)(l - sh->layer_begin) * layer_state, m->state_dtype}, .h = m->h};
        if (!(m->skip & (RECUR_SKIP_RECUR | RECUR_SKIP_RECUR_OUT))) {
            RECUR_TRY(recur_backend_mlstm_head_out(b, &a, m->o, ly->mh_norm, c->norm_eps, m->h));
        } else { /* --skip diagnostics: either half alone */
            if (!(m->skip & RECUR_SKIP_RECUR)) RECUR_TRY(k->mlstm(b, &a));
            if (!(m->skip & RECUR_SKIP_RECUR_OUT))
                RECUR_TRY(k->xlstm_head_out(b, m->h, m->o, ly->mh_norm, M, m->NHl, m->DV, c->norm_eps, m->h));
        }
        if (!(m->skip & RECUR_SKIP_OUT)) RECUR_TRY(k->matmul(b, m->h, &ly->wout, M, m->x, acc));
        if (tp) RECUR_TRY(recur_comm_tp_allreduce(m->comm, m->x, MD));
        if (!(m->skip & RECUR_SKIP_NORM2)) RECUR_TRY(k->rmsnorm(b, m->x, ly->norm_ffn, M, D, c->norm_eps, m->xn));
        const recur_matmul_op_t up[2] = {{m->xn, &ly->up_gate, m->ffn_g, 0, RECUR_ACT_NONE},
                                         {m->xn, &ly->up, m->ffn_u, 0, RECUR_ACT_NONE}};
        if (!(m->skip & RECUR_SKIP_FFN_UP)) RECUR_TRY(recur_backend_matmul_many(b, M, 2, up));
        if (!(m->skip & RECUR_SKIP_FFN_ACT)) RECUR_TRY(k->silu_mul(b, m->ffn_g, m->ffn_u, (int64_t)M * m->Fl, m->ffn_g));
        if (!(m->skip & RECUR_SKIP_FFN_DOWN)) RECUR_TRY(k->matmul(b, m->ffn_g, &ly->down, M, m->x, acc));
        if (tp) RECUR_TRY(recur_comm_tp_allreduce(m->comm, m->x, MD));
    }
    if (sh->pp_rank < sh->pp - 1) return recur_comm_pp_send_next(m->comm, m->x, MD * sizeof(float));
    if (n_out == 0) return RECUR_OK;
    RECUR_TRY(k->gather_rows(b, m->x, out_rows, n_out, D, m->xo));
    RECUR_TRY(k->rmsnorm(b, m->xo, m->out_norm, n_out, D, c->norm_eps, m->xo));
    float *lg = tp ? m->lg_local : logits;
    RECUR_TRY(k->matmul(b, m->xo, &m->head, n_out, lg, 0));
    if (c->logit_cap > 0.f) RECUR_TRY(k->softcap(b, lg, (int64_t)n_out * sh->n_vocab, c->logit_cap, lg));
    return recur_model_gather_logits(b, m->comm, sh, m->lg_local, m->lg_all, n_out, logits);
}

const recur_model_arch_t recur_arch_xlstm = {
    .name = "xlstm",
    .detect = xlstm_detect,
    .load = xlstm_load,
    .free = xlstm_free,
    .forward = xlstm_forward,
};
