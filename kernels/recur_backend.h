/* recur_backend.h: the table of operations a compute backend provides.
 *
 * The model code (worker/) is written once against this table; the CPU backend
 * (kernels/cpu/) is the plain-C reference for every entry and a complete backend in its
 * own right, and the CUDA backend fills the same table with fused GPU kernels.
 *
 * Memory: every pointer passed to an op is backend memory (from iface.alloc), except
 * where a comment says "host". Activations are fp32 row-major [rows][cols]; weights are
 * recur_weight_t in whatever format the backend chose at upload (CPU: fp32).
 *
 * Batches are variable-length ("varlen"): M rows (tokens) belong to n_seq sequences,
 * sequence i owning rows seq_off[i] .. seq_off[i+1]-1 in order and living in state slot
 * slot[i] of a state pool (n_slots * slot_bytes bytes, see recur_state_ref_t). Row-wise
 * ops ignore sequences; token-shift and recurrence ops use them. This one shape covers a batched decode step
 * (every sequence 1 row), a prefill (one sequence, many rows) and a mix of both.
 *
 * Errors: ops return RECUR_OK or a status for failures a caller can see (device errors);
 * bad shapes are the caller's bug and are checked with RECUR_ASSERT in the wrappers.
 * Thread-safety: a backend instance is used by one thread at a time. */
#ifndef RECUR_BACKEND_H
#define RECUR_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "recur_dtype.h"
#include "recur_quant.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_backend recur_backend_t;

/* A weight matrix W [rows = out][cols = in] (nn.Linear layout), as the backend stores it.
 * F32 / BF16: data holds the elements. I8 / F8E4M3 (recur_quant.h): data holds the codes
 * [rows][cols] and, in the same allocation, scale the fp32 scale of each row, so that
 * W[r][c] ~ value(code) * scale[r]. */
typedef struct recur_weight {
    void         *data;   /* backend memory, owned by whoever called weight_upload */
    recur_dtype_t dtype;  /* the backend's storage type */
    int64_t       rows, cols;
    float        *scale;  /* backend memory inside data's allocation, [rows]; NULL unless I8 / F8E4M3 */
} recur_weight_t;

/* How a matrix may be stored (weight_upload, weight_random). */
typedef enum recur_weight_use {
    /* a projection: the backend's weight format (recur_backend_params_t.weight_dtype),
     * quantized to one byte per element in the int8 / fp8 modes */
    RECUR_WEIGHT_PROJ = 0,
    /* kept at full precision in every mode (f32 or, in the bf16/int8/fp8 modes of the cuda
     * backend, bf16): embeddings, and the small projections that feed exponential or
     * sigmoid gates (RWKV-7's decay/in-context-rate/value/output-gate LoRAs, xLSTM's input
     * and forget gates), a few percent of the bytes and the most sensitive to rounding */
    RECUR_WEIGHT_KEEP = 1
} recur_weight_use_t;

/* Bytes a stored matrix occupies on the backend (codes and scales for I8 / F8E4M3). */
static inline size_t recur_weight_bytes(const recur_weight_t *w) {
    if (recur_dtype_is_quant(w->dtype)) return recur_quant_buffer_bytes(w->rows, w->cols);
    return (size_t)w->rows * (size_t)w->cols * recur_dtype_size(w->dtype);
}

/* The sequence structure of a batch of rows (see the header comment). */
typedef struct recur_rows {
    int32_t        n_rows;   /* M                                        */
    int32_t        n_seq;
    const int32_t *seq_off;  /* backend memory, [n_seq + 1], seq_off[0] = 0, seq_off[n_seq] = M;
                                every sequence has at least one row (so n_seq == M: one each) */
    const int32_t *slot;     /* backend memory, [n_seq]; distinct, except that padding rows
                                of a padded decode batch all use slot 0 (whose state no
                                request reads), so ops must write only their own slot */
} recur_rows_t;

/* Where one per-layer piece of state sits inside the state pool. Addressed in bytes,
 * because a slot mixes element types: the matrix-valued state of a recurrence (RWKV-7's
 * wkv, xLSTM's C: almost all of a slot's bytes) is stored as mat_dtype, F32 (the default)
 * or BF16 (half the bytes a decode step reads and writes); everything else (the token-shift
 * vectors, xLSTM's n and m) is always F32: it is tiny, m is a log-domain stabiliser and n
 * a normaliser, where bf16 rounding would hurt most.
 * Arithmetic is fp32 whatever the storage: a BF16 matrix is widened on load and rounded to
 * nearest even (recur_f32_to_bf16) on store; each op below says when it stores.
 * slot_bytes and offset are multiples of 4 (the F32 parts are 4-byte aligned). */
typedef struct recur_state_ref {
    void         *pool;        /* backend memory: n_slots * slot_bytes bytes           */
    size_t        slot_bytes;  /* bytes per slot                                       */
    size_t        offset;      /* bytes from the start of a slot to this piece         */
    recur_dtype_t mat_dtype;   /* F32 or BF16: the matrix part (token_shift_mix has none) */
} recur_state_ref_t;

/* The state piece of one mLSTM layer (recur_mlstm_args_t), in bytes: C [nh][dqk][dv] in
 * mat_dtype, then n [nh][dqk] and m [nh] in F32 from recur_mlstm_state_n_offset on (with
 * BF16, nh*dqk*dv must be even so that n stays 4-byte aligned). */
static inline size_t recur_mlstm_state_n_offset(int32_t nh, int32_t dqk, int32_t dv, recur_dtype_t mat) {
    return (size_t)nh * (size_t)dqk * (size_t)dv * recur_dtype_size(mat);
}
static inline size_t recur_mlstm_state_bytes(int32_t nh, int32_t dqk, int32_t dv, recur_dtype_t mat) {
    return recur_mlstm_state_n_offset(nh, dqk, dv, mat) + (size_t)nh * ((size_t)dqk + 1) * sizeof(float);
}

typedef enum recur_act {
    RECUR_ACT_NONE = -1,    /* only where an op says so (recur_matmul_op_t) */
    RECUR_ACT_TANH = 0,
    RECUR_ACT_SIGMOID = 1,
    RECUR_ACT_RELU_SQ = 2   /* relu(x)^2, RWKV's channel-mix activation */
} recur_act_t;

/* One product of a matmul_many batch: y (=|+=) x . W^T over the batch's M rows, exactly
 * as matmul computes it, then y = act(y) elementwise unless act is RECUR_ACT_NONE (an
 * activation only with accumulate = 0). The pointers are borrowed for the call. */
typedef struct recur_matmul_op {
    const float          *x;
    const recur_weight_t *W;
    float                *y;
    int                   accumulate;
    recur_act_t           act;
} recur_matmul_op_t;

/* Most products one matmul_many call takes (the fused decode launches hold them in their
 * kernel parameters). */
#define RECUR_MATMUL_MANY_MAX 8

/* Arguments of the RWKV-7 per-token preparation (all [M][C] unless noted, in place where
 * marked "in/out"). Computes, per element, the decay, in-context rate, normalised key
 * and v_first residual of models/RWKV7.md §1.4:
 *   w  <- exp(-exp(-0.5) * sigmoid(w0 + w))                     (in/out: w holds the LoRA output)
 *   a  <- sigmoid(a0 + a)                                       (in/out: a holds the LoRA output)
 *   kk <- L2-normalise_per_head(k * k_k)   (eps 1e-12)          (out)
 *   k  <- k * (1 + (a - 1) * k_a)                               (in/out; kk uses k before this)
 *   layer 0 (v_mix == NULL): v_first <- v                       (out)
 *   else:   v <- v + (v_first - v) * sigmoid(v0 + v_mix)        (in/out) */
typedef struct recur_rwkv7_prep_args {
    int32_t M, C, head_size;
    float *w, *a, *k, *v, *kk, *v_first;
    const float *v_mix;                          /* NULL in layer 0 */
    const float *w0, *a0, *v0, *k_k, *k_a;       /* [C] */
} recur_rwkv7_prep_args_t;

/* The RWKV-7 recurrence (WKV), serial over each sequence's rows, per head of size N:
 *   S <- S diag(w) + (S (-kk)) (kk*a)^T + v k^T ;  y = S r
 * S is [N(value)][N(key)] per head, at state.offset of each slot (H*N*N elements of
 * state.mat_dtype). y uses the fp32 S of its token. BF16 state: the reference (CPU) and
 * the GPU's serial kernel (decode, short sequences) round S after every token; the GPU's
 * chunked prefill keeps S in fp32 through the call and rounds it once at the end, so the
 * two agree to bf16 tolerance, not to fp32 rounding. */
typedef struct recur_rwkv7_wkv_args {
    int32_t C, head_size;
    recur_rows_t rows;
    const float *r, *w, *k, *v, *kk, *a;         /* [M][C] */
    recur_state_ref_t state;
    float *y;                                    /* [M][C] out */
} recur_rwkv7_wkv_args_t;

/* After WKV: out = (GroupNorm_H(y) * ln_w + ln_b + (sum_head r*k*r_k) * v) * g. */
typedef struct recur_rwkv7_out_args {
    int32_t M, C, head_size;
    float eps;                                   /* 64e-5 for x070 */
    const float *y, *r, *k, *v, *g;              /* [M][C] */
    const float *r_k;                            /* [C] (H x N) */
    const float *ln_w, *ln_b;                    /* [C] */
    float *out;                                  /* [M][C] (may alias y) */
} recur_rwkv7_out_args_t;

/* The mLSTM cell of xLSTM (models/XLSTM.md §4-5) over a varlen batch, per head of
 * (DQK, DV), state per head C [DQK][DV], n [DQK], m (scalar) at state.offset of each slot
 * as C[NH][DQK][DV], n[NH][DQK], m[NH]. Gate pre-activations get their bias and the soft
 * cap here: i = cap*tanh((i_pre + i_bias)/cap), likewise f; then per token
 *   m' = max(logsigmoid(f) + m, i); C' = e^(logsig(f)+m-m') C + e^(i-m') k v^T; n' alike
 *   h  = (q/sqrt(DQK))^T C' / (max(|(q/sqrt(DQK)) . n'|, e^(-m')) + eps)
 * computed chunkwise (`chunk` tokens at a time, the form of §5, which equals the step
 * recurrence up to rounding; chunk = 1 is the plain step). Layout of the state piece:
 * recur_mlstm_state_bytes. BF16 C: with chunk 1 (the step form, and every decode batch
 * on the GPU) C is rounded after every token; with longer chunks it is carried in fp32
 * through all of a call's chunks and rounded once at the call's end (the reference does
 * the same), so chunked prefill and token-by-token steps agree to bf16 tolerance. */
typedef struct recur_mlstm_args {
    int32_t n_head, dqk, dv, chunk;
    float gate_cap, eps;
    recur_rows_t rows;
    const float *q, *k;                          /* [M][n_head*dqk] */
    const float *v;                              /* [M][n_head*dv]  */
    const float *i_pre, *f_pre;                  /* [M][n_head]     */
    const float *i_bias, *f_bias;                /* [n_head]        */
    recur_state_ref_t state;
    float *h;                                    /* [M][n_head*dv] out */
} recur_mlstm_args_t;

/* Sampling parameters of one row (sequence) for the sample op. The random number of a
 * draw is a counter-based hash of (seed, step), so a sequence's tokens do not depend on
 * which other sequences share its batch. A zero-initialised row with temperature, top_p
 * and seed set is a plain sampling row: every field added after those is "off" at 0
 * (repetition_penalty 0 counts as 1), except logprobs, which is read only when the op is
 * given logprob outputs (recur_sample_extras_t). */
typedef struct recur_sample_row {
    float    temperature;  /* <= 0: greedy (exact argmax, lowest id on ties) */
    int32_t  top_k;        /* <= 0: off                                      */
    float    top_p;        /* >= 1: off                                      */
    float    min_p;        /* <= 0: off                                      */
    uint64_t seed;
    uint64_t step;         /* the sequence's token counter                   */
    /* Penalties act on the ids of the row's history list (recur_sample_extras_t), after
     * its logit bias: */
    float    repetition_penalty; /* r > 0: an id that occurred (n_all > 0) gets l / r if
                                    l > 0, else l * r (HF / vLLM); 1 or <= 0: off      */
    float    presence_penalty;   /* l -= presence + frequency * n_out for an id that   */
    float    frequency_penalty;  /* was generated (n_out > 0) (OpenAI / vLLM); 0: off  */
    int32_t  logprobs;     /* -1: none; 0: the sampled token's log-probability; n in
                              [1, RECUR_SAMPLE_MAX_TOP]: also the n most likely ids'    */
} recur_sample_row_t;

/* The most alternatives the sample op reports per row (the API's limit, OpenAI's too). */
#define RECUR_SAMPLE_MAX_TOP 20

/* A logit bias of one row: bias is added to the logit of token. */
typedef struct recur_sample_bias {
    int32_t token;
    float   bias;
} recur_sample_bias_t;

/* One id of a row's history: n_all occurrences in the sequence so far (prompt and
 * generated tokens), n_out of them generated. */
typedef struct recur_sample_hist {
    int32_t token;
    int32_t n_all;
    int32_t n_out;
} recur_sample_hist_t;

/* What the sample op may do besides choosing tokens (NULL extras: nothing of this). Host
 * struct; the arrays are backend memory. Lists are CSR: row i's entries are
 * list[off[i]] .. list[off[i+1] - 1] (off has n + 1 entries, need not start at 0); within
 * a row the tokens of a list are distinct, and ids >= n_valid are ignored. */
typedef struct recur_sample_extras {
    int32_t n_bias;                  /* host: bias entries over all rows; 0: no row has any */
    const int32_t *bias_off;
    const recur_sample_bias_t *bias;
    int32_t n_hist;                  /* host: history entries over all rows; 0: none      */
    const int32_t *hist_off;
    const recur_sample_hist_t *hist;
    /* log-probabilities, for rows with params.logprobs >= 0; logprob NULL: no row's */
    int32_t top_n;                   /* host: columns of top_token / top_logprob, in
                                        [0, RECUR_SAMPLE_MAX_TOP]; a row reports
                                        min(params.logprobs, top_n) alternatives          */
    float *logprob;                  /* [n] the sampled token's; 0 where not asked        */
    int32_t *top_token;              /* [n][top_n] most likely first; -1 pads             */
    float *top_logprob;              /* [n][top_n]; 0 pads                                */
} recur_sample_extras_t;

typedef struct recur_backend_iface {
    const char *(*name)(const recur_backend_t *b);

    /* ---- memory */
    /* Zero-filled allocation; NULL on failure. */
    void *(*alloc)(recur_backend_t *b, size_t n_bytes);
    void  (*buf_free)(recur_backend_t *b, void *p);                       /* NULL is a no-op */
    recur_status_t (*upload)(recur_backend_t *b, void *dst, const void *host_src, size_t n_bytes);
    recur_status_t (*download)(recur_backend_t *b, void *host_dst, const void *src, size_t n_bytes);
    recur_status_t (*copy)(recur_backend_t *b, void *dst, const void *src, size_t n_bytes);
    recur_status_t (*memzero)(recur_backend_t *b, void *dst, size_t n_bytes);
    /* n_rows rows of row_bytes each from src (rows src_pitch bytes apart) to dst (rows
     * dst_pitch bytes apart), in backend memory; e.g. a column block of a matrix. */
    recur_status_t (*copy_2d)(recur_backend_t *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                              size_t row_bytes, size_t n_rows);
    recur_status_t (*synchronize)(recur_backend_t *b);

    /* ---- weights: host fp32 [rows][cols] -> the backend's format for `use` (allocates
     * w->data; quantizes on the way in the int8 / fp8 modes, recur_quant.h's rule) */
    recur_status_t (*weight_upload)(recur_backend_t *b, const float *host, int64_t rows, int64_t cols,
                                    recur_weight_use_t use, recur_weight_t *w);
    void (*weight_free)(recur_backend_t *b, recur_weight_t *w);          /* NULL data is a no-op */
    /* (optional) w [rows][cols] = recur_virtual_value(seed, (row0 + r) * full_cols + col0 + c,
     * lo, hi) (recur_model_files.h): the block at (row0, col0) of a virtual matrix with
     * full_cols columns (a tensor-parallel rank's slice, or the whole matrix with 0, 0,
     * cols), generated on the device in the backend's weight format for `use`, for
     * benchmarks at real shapes: the same bytes as weight_upload of those values. NULL: the
     * loader generates on the host and uploads. */
    recur_status_t (*weight_random)(recur_backend_t *b, int64_t rows, int64_t cols, uint64_t seed, float lo,
                                    float hi, int64_t row0, int64_t col0, int64_t full_cols, recur_weight_use_t use,
                                    recur_weight_t *w);
    /* (optional) device memory in use (by everyone) and in total, in bytes. NULL: unknown. */
    recur_status_t (*mem_info)(recur_backend_t *b, size_t *used, size_t *total);

    /* ---- row-wise ops */
    /* out[m] = W_emb[tokens[m]] (tokens: backend memory, validated by the caller) */
    recur_status_t (*embed)(recur_backend_t *b, const recur_weight_t *emb, const int32_t *tokens,
                            int32_t M, float *out);
    /* y = LayerNorm(x) * w + bias over each row of C (y may alias x) */
    recur_status_t (*layernorm)(recur_backend_t *b, const float *x, const float *w, const float *bias,
                                int32_t M, int32_t C, float eps, float *y);
    /* y[M][W.rows] (=|+=) x[M][W.cols] . W^T ; accumulate != 0 adds into y.
     * Quantized W (I8, F8E4M3), on every backend, with fp32 products and sums:
     *   M <= RECUR_QUANT_GEMV_MAX_M (2, decode): y[m][n] = (sum_k x[m][k] v[n][k]) * scale[n]
     *   larger M (tensor-core GEMMs, whose inputs are narrower than fp32):
     *     I8: y[m][n] = (sum_k bf16(x[m][k]) v[n][k]) * scale[n]
     *     F8: y[m][n] = ((sum_k e4m3(x[m][k] / sx[m]) v[n][k]) * scale[n]) * sx[m],
     *         sx[m] = recur_quant_act_scale(x[m]): activations quantized per row on the fly
     * where v is the code's value (recur_quant_code_value); backends differ only in the
     * order of the sums. */
    recur_status_t (*matmul)(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M,
                             float *y, int accumulate);
    /* (optional) y[M][Wt.cols] (=|+=) x[M][Wt.rows] . Wt, for Wt stored TRANSPOSED: [in][out]
     * (upload W^T with weight_upload). The same product as matmul with W = Wt^T, equal to it
     * up to fp32 summation order, but made for inputs with many exact zeros (relu^2
     * activations): a zero x[m][j] selects nothing, and a nonzero one selects the
     * contiguous row j of Wt, so at decode sizes only the rows that some x row needs are
     * read. Zero entries are skipped, not multiplied. Faster than matmul only when x is
     * sparse; for large M it runs as a plain GEMM on the transposed layout. A row's result
     * does not depend on M or on the other rows. NULL: the backend has no such path (or not
     * in its current weight mode: quantized matrices keep per-output-row scales, which the
     * transposed layout would turn into per-input ones), and callers keep W in the matmul
     * layout. */
    recur_status_t (*matmul_sparse_in)(recur_backend_t *b, const float *x, const recur_weight_t *Wt, int32_t M,
                                       float *y, int accumulate);
    /* (optional) the n <= RECUR_MATMUL_MANY_MAX independent products ops[0..n) over the same
     * M rows, each bit for bit what matmul followed by act gives for it alone (the order in
     * which they run is unspecified, so no op's y may overlap another op's x or y). At
     * decode sizes a backend runs them as one launch: a decode step is otherwise dozens of
     * small kernels per layer, each paying its launch and its tail. NULL: callers use
     * recur_backend_matmul_many, which runs matmul (and act) one op after another. */
    recur_status_t (*matmul_many)(recur_backend_t *b, int32_t M, int32_t n, const recur_matmul_op_t *ops);
    /* y = act(x) elementwise over n floats (y may alias x) */
    recur_status_t (*act)(recur_backend_t *b, recur_act_t kind, const float *x, int64_t n, float *y);
    /* y = x / sqrt(mean(x^2) + eps) * w over each row of C (y may alias x) */
    recur_status_t (*rmsnorm)(recur_backend_t *b, const float *x, const float *w, int32_t M, int32_t C, float eps,
                              float *y);
    /* y = silu(gate) * up, elementwise over n floats (y may alias either) */
    recur_status_t (*silu_mul)(recur_backend_t *b, const float *gate, const float *up, int64_t n, float *y);
    /* y = cap * tanh(x / cap), elementwise (y may alias x) */
    recur_status_t (*softcap)(recur_backend_t *b, const float *x, int64_t n, float cap, float *y);
    /* dst[i] = src[idx[i]] rows of C floats, i < n (idx: backend memory) */
    recur_status_t (*gather_rows)(recur_backend_t *b, const float *src, const int32_t *idx, int32_t n,
                                  int32_t C, float *dst);

    /* ---- token shift: for each row t, prev = previous row of the same sequence, or the
     * slot's stored vector for a sequence's first row; then for j < n_mix:
     *   out[j][t] = x[t] + (prev - x[t]) * mix[j]      (out: [n_mix][M][C], mix: [n_mix][C])
     * and the slot's stored vector (C floats at state.offset, always F32) becomes the
     * sequence's last row of x. */
    recur_status_t (*token_shift_mix)(recur_backend_t *b, const float *x, int32_t C, const recur_rows_t *rows,
                                      recur_state_ref_t state, int32_t n_mix, const float *mix, float *out);
    /* (optional) layernorm (w, bias, eps) of x into tmp [M][C], then token_shift_mix of tmp:
     * out and the stored vectors come out bit for bit as the two ops give them; tmp's
     * contents are left unspecified. At decode sizes two launches per use instead of four
     * (RWKV-7 runs it twice a layer). NULL: callers use recur_backend_layernorm_shift_mix,
     * which runs the two. */
    recur_status_t (*layernorm_shift_mix)(recur_backend_t *b, const float *x, const float *w, const float *bias,
                                          int32_t C, float eps, const recur_rows_t *rows, recur_state_ref_t state,
                                          int32_t n_mix, const float *mix, float *tmp, float *out);

    /* ---- RWKV-7 */
    recur_status_t (*rwkv7_prep)(recur_backend_t *b, const recur_rwkv7_prep_args_t *a);
    recur_status_t (*rwkv7_wkv)(recur_backend_t *b, const recur_rwkv7_wkv_args_t *a);
    recur_status_t (*rwkv7_out)(recur_backend_t *b, const recur_rwkv7_out_args_t *a);
    /* (optional) rwkv7_prep, then rwkv7_wkv, then rwkv7_out over the same rows (w.y is
     * o.y; w.r, w.w, w.k, w.v, w.kk and w.a are p's outputs; o.r, o.k, o.v are w's): o.out,
     * p.v_first (layer 0) and the state come out bit for bit as the three ops give them;
     * the intermediates (p.w, p.a, p.k, p.v, p.kk, w.y where it is not o.out) are left
     * unspecified. A decode step is otherwise three small launches per layer that mostly
     * wait on each other. NULL: callers use recur_backend_rwkv7_step, which runs the three. */
    recur_status_t (*rwkv7_step)(recur_backend_t *b, const recur_rwkv7_prep_args_t *p,
                                 const recur_rwkv7_wkv_args_t *w, const recur_rwkv7_out_args_t *o);

    /* ---- xLSTM */
    recur_status_t (*mlstm)(recur_backend_t *b, const recur_mlstm_args_t *a);
    /* out = LayerNorm_per_head(h; no bias, eps) * w * sigmoid(o_pre): h and o_pre [M][n_head*dv],
     * w [n_head*dv] (out may alias h) */
    recur_status_t (*xlstm_head_out)(recur_backend_t *b, const float *h, const float *o_pre, const float *w,
                                     int32_t M, int32_t n_head, int32_t dv, float eps, float *out);
    /* (optional) mlstm(a), then xlstm_head_out(a->h, o_pre, w, a->rows.n_rows, a->n_head,
     * a->dv, eps, out): out and the state come out bit for bit as the two ops give them;
     * a->h, where it is not out, is left unspecified. A decode step otherwise spends a
     * launch a layer on the head norm alone. NULL: callers use recur_backend_mlstm_head_out,
     * which runs the two. */
    recur_status_t (*mlstm_head_out)(recur_backend_t *b, const recur_mlstm_args_t *a, const float *o_pre,
                                     const float *w, float eps, float *out);

    /* ---- sampling: tokens[i] for each row i < n of logits [n][V] (backend memory),
     * among ids [0, n_valid); params and tokens in backend memory, extras as its comment
     * says (NULL: none). Per row, in this order:
     *   1. logit bias: l += bias for the ids of the row's bias list;
     *   2. penalties on the ids of its history list: repetition (n_all > 0), then
     *      presence and frequency (n_out > 0), as recur_sample_row_t says;
     *      (1 and 2 change the row of `logits` in place, only at the listed ids, and keep
     *      a finite logit finite: recur_sample_add_bias / recur_sample_penalize)
     *   3. the choice, as llama.cpp and vLLM users expect: temperature, top-k, softmax,
     *      min-p, top-p, then a draw with u = recur_sample_uniform(seed, step)
     *      (recur_sample_op.h defines it exactly);
     *   4. logprobs (params.logprobs >= 0 and extras->logprob): the log-softmax of the
     *      logits after 1 and 2, before temperature and truncation (vLLM's default
     *      "raw" processed logprobs), over ids [0, n_valid): the sampled token's, and the
     *      top ids by that logit (lowest id on ties), computed in double from the float
     *      logits (backends agree to about 1e-6; the ids and their order exactly).
     * Non-finite logits count as -inf (log-probability -inf). A row that asks for
     * nothing of 1, 2 and 4 costs what it did before these existed.
     * (optional: NULL means the caller downloads logits and samples on the host) */
    recur_status_t (*sample)(recur_backend_t *b, float *logits, int32_t n, int32_t V, int32_t n_valid,
                             const recur_sample_row_t *params, const recur_sample_extras_t *extras,
                             int32_t *tokens);

    /* ---- graphs (optional; NULL: ops always run eagerly). Between graph_begin and
     * graph_end the ops enqueued are recorded, not run; they must not sync with the host
     * or allocate (run the same sequence once eagerly first so scratch is sized).
     * graph_end returns an executable graph owned by the caller (graph_free);
     * graph_launch replays it with the buffer contents current at launch time. */
    recur_status_t (*graph_begin)(recur_backend_t *b);
    recur_status_t (*graph_end)(recur_backend_t *b, void **graph);
    recur_status_t (*graph_launch)(recur_backend_t *b, void *graph);
    void (*graph_free)(recur_backend_t *b, void *graph);

    /* ---- host staging (optional; NULL: plain malloc'ed memory and the synchronous upload).
     * host_alloc: zero-filled host memory the device reads directly (page-locked), for
     * buffers uploaded every step; NULL on failure. host_free: NULL is a no-op.
     * upload_async: enqueues the copy behind the ops already enqueued and returns at once
     * (not while a graph is being recorded); host_src must stay unchanged until a later
     * download or synchronize has returned. From host_alloc memory the copy is a true
     * asynchronous DMA; from other memory the backend may stage it before returning. */
    void *(*host_alloc)(recur_backend_t *b, size_t n_bytes);
    void  (*host_free)(recur_backend_t *b, void *p);
    recur_status_t (*upload_async)(recur_backend_t *b, void *dst, const void *host_src, size_t n_bytes);

    /* (optional) the cudaStream_t the backend's ops run on; NULL entry: no device stream.
     * The communication layer (worker/recur_comm) enqueues NCCL operations on it so that
     * they order with the backend's kernels. The stream stays owned by the backend. */
    void *(*native_stream)(recur_backend_t *b);

    void (*free)(recur_backend_t *b);
} recur_backend_iface_t;

/* The uniform draw in [0, 1) of the sample op for (seed, step): splitmix64 of
 * seed + (step + 1) * golden-ratio constant, top 24 bits. Every backend uses this. */
static inline float recur_sample_uniform(uint64_t seed, uint64_t step) {
    uint64_t z = seed + (step + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 40) * 0x1.0p-24);
}

struct recur_backend {
    recur_backend_iface_t iface;
    void *ctx;   /* backend-private state */
};

typedef struct recur_backend_params {
    int32_t       device;        /* CUDA ordinal (cuda backend); -1 = the current/local-rank device */
    recur_dtype_t weight_dtype;  /* storage of matrices (`--weights`): RECUR_DTYPE_F32 (exact
                                    reference path), RECUR_DTYPE_BF16, or the one-byte modes
                                    RECUR_DTYPE_I8 / RECUR_DTYPE_F8E4M3 (RECUR_WEIGHT_PROJ
                                    matrices quantized at upload, RECUR_WEIGHT_KEEP ones as in
                                    bf16 mode). The CPU backend keeps F32 for F32 and BF16 and
                                    implements I8 / F8E4M3 exactly as documented at matmul. */
} recur_backend_params_t;

/* device -1, weight_dtype BF16 (the cuda default; the CPU backend stores it as F32). */
recur_backend_params_t recur_backend_default_params(void);

/* Creates the backend named `name`: "cpu", or "cuda" when built with the CUDA backend.
 * p may be NULL (defaults). RECUR_E_UNSUPPORTED naming the available backends otherwise;
 * RECUR_E_CUDA when the CUDA backend finds no usable device. */
recur_status_t recur_backend_init(const char *name, const recur_backend_params_t *p, recur_backend_t **out);
void           recur_backend_free(recur_backend_t *b);   /* NULL is a no-op */
/* The products ops[0..n) (n <= RECUR_MATMUL_MANY_MAX) as iface.matmul_many defines them:
 * through it when the backend has it, else matmul and act one op after another. */
recur_status_t recur_backend_matmul_many(recur_backend_t *b, int32_t M, int32_t n, const recur_matmul_op_t *ops);
/* iface.mlstm_head_out when the backend has it, else mlstm and xlstm_head_out. */
recur_status_t recur_backend_mlstm_head_out(recur_backend_t *b, const recur_mlstm_args_t *a, const float *o_pre,
                                            const float *w, float eps, float *out);
/* iface.layernorm_shift_mix when the backend has it, else layernorm into tmp and
 * token_shift_mix of tmp. */
recur_status_t recur_backend_layernorm_shift_mix(recur_backend_t *b, const float *x, const float *w, const float *bias,
                                                 int32_t C, float eps, const recur_rows_t *rows,
                                                 recur_state_ref_t state, int32_t n_mix, const float *mix,
                                                 float *tmp, float *out);
/* iface.rwkv7_step when the backend has it, else rwkv7_prep, rwkv7_wkv and rwkv7_out. */
recur_status_t recur_backend_rwkv7_step(recur_backend_t *b, const recur_rwkv7_prep_args_t *p,
                                        const recur_rwkv7_wkv_args_t *w, const recur_rwkv7_out_args_t *o);
const char    *recur_backend_name(const recur_backend_t *b);

#ifdef __cplusplus
}
#endif
#endif
