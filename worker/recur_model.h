/* recur_model.h: a loaded model on one backend: weights, a pool of recurrent-state slots,
 * and the forward pass over a varlen batch of sequences.
 *
 * Slots: the pool holds n_slots states; slot 0 is the padding slot and is never used for
 * a request. A slot's state is info.state_bytes bytes in the architecture's documented
 * layout, layer after layer with no padding:
 *   RWKV-7: ffn_x[C] f32, att_x[C] f32, wkv[H][N][N] (rwkv.cpp's layout and the fixtures')
 *   xLSTM:  C[NH][DQK][DV], n[NH][DQK] f32, m[NH] f32 (transformers' cache order)
 * where the matrices (wkv, C) are info.state_dtype: F32 by default, BF16 with
 * params.state_dtype = BF16 (half the bytes, so about twice the slots in the same memory,
 * and half the state traffic of a decode step; the recurrences still compute in fp32 and
 * round the matrices when they store them, see recur_backend.h). Saving, loading and
 * forking a state is a plain byte copy, bit-identical. A fresh slot must be reset
 * (recur_model_state_reset) before use.
 * Under tensor/pipeline parallelism (params.comm) each rank's pool holds its shard of
 * every slot: the same layout restricted to its layers and its heads (RWKV-7: per layer
 * of its stage ffn_x[C], att_x[C] (replicated across the TP group), wkv[its heads][N][N];
 * xLSTM: C, n and m of its heads), so the full state is the shards put back in order.
 *
 * Ownership: the model owns its weights, workspace and pool, all on the backend given at
 * load, which must outlive the model. Nothing is allocated after load (except the room
 * for the logit-bias and penalty lists of recur_model_forward_sample_ex, which grows to
 * the largest step that used them): a forward pass larger than params.max_tokens rows is
 * cut into pieces of at most that many rows.
 * Thread-safety: one thread at a time per model. */
#ifndef RECUR_MODEL_H
#define RECUR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "recur_backend.h"
#include "recur_comm.h"
#include "recur_model_files.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recur_arch {
    RECUR_ARCH_RWKV7 = 0,
    RECUR_ARCH_XLSTM = 1
} recur_arch_t;

typedef enum recur_logits_mode {
    RECUR_LOGITS_NONE = 0,  /* state update only (prefill without output)   */
    RECUR_LOGITS_LAST = 1,  /* one row per sequence: after its last token    */
    RECUR_LOGITS_ALL  = 2   /* one row per token, in batch order             */
} recur_logits_mode_t;

typedef struct recur_model_params {
    int32_t n_slots;     /* state slots including padding slot 0 (>= 2); 0 = as many as
                            fit in the backend's free memory after the weights and the
                            workspace, less reserve_mib (needs the backend's mem_info)  */
    int32_t reserve_mib; /* with n_slots 0: device memory left free, MiB (default 2048) */
    int32_t max_tokens;  /* rows per internal forward piece (workspace size)  */
    int32_t prefill_chunk; /* tokens per chunk of the chunkwise-parallel recurrence
                              (xLSTM); 0 = the checkpoint's default (config chunk_size) */
    int32_t use_graphs;  /* 1: decode batches replay recorded backend graphs (see
                            recur_model_forward); 0: every op is launched eagerly. Default 1,
                            or 0 when the environment has RECUR_GRAPHS=0 (A/B runs). */
    recur_dtype_t state_dtype; /* storage of the matrix-valued state (RWKV-7 wkv, xLSTM C):
                            RECUR_DTYPE_F32 (default) or RECUR_DTYPE_BF16. The shift vectors
                            and xLSTM's n and m stay F32. With BF16, logits agree with the
                            F32 state's to bf16 tolerance (docs/testing.md), and a chunked
                            prefill agrees with token-by-token steps to that tolerance,
                            not to fp32 rounding (the rounding points differ). */
    int32_t pp_micro_min_seqs; /* pipeline (pp > 1): a batch is cut into micro-batches (so that
                            the stages work at once) only of at least this many sequences each
                            (default, and with 0: 128). A micro-batch re-reads the stage's weights, so
                            small ones make a step slower than not cutting at all: on
                            2 x H200 a batch of 16 cut in two ran at 0.59x one GPU. */
    uint32_t skip_kernels; /* recur_skip_t bits: kernels left out of every forward pass. For
                            measurement only (recur bench --skip: what each kernel costs
                            inside a decode step); the model's outputs are then wrong.
                            Default 0. */
    recur_comm_t *comm;  /* NULL: one rank holds the whole model. Else this rank's place in
                            a tp x pp grid (recur_comm.h): it loads and runs only its shard
                            (see recur_model_shard_t), and every rank of the grid must call
                            each function below with the same arguments, in the same order
                            (they exchange activations and agree on failures). Borrowed: it
                            must outlive the model. */
} recur_model_params_t;

/* Kernels of a layer (and the head) that recur_model_params_t.skip_kernels can leave out,
 * by role; an architecture without such a kernel ignores its bit. Names (recur_skip_parse):
 * norm1 shift1 proj lora2 recur recur_out out norm2 shift2 ffn_up ffn_act ffn_down. The head
 * is not among them: without it the sampler reads logits no kernel wrote, and its time
 * depends on them (on an H200 such steps took 0.7 ms longer, not shorter). */
typedef enum recur_skip {
    RECUR_SKIP_NORM1 = 1u << 0,     /* the norm before the mixer (RWKV-7 ln1, xLSTM's mLSTM norm) */
    RECUR_SKIP_SHIFT1 = 1u << 1,    /* RWKV-7's token shift before the time mix */
    RECUR_SKIP_PROJ = 1u << 2,      /* the mixer's input products (RWKV-7 r, k, v and the LoRAs'
                                       first matrices; xLSTM q, k, v, o and the gates) */
    RECUR_SKIP_LORA2 = 1u << 3,     /* RWKV-7's LoRAs' second matrices */
    RECUR_SKIP_RECUR = 1u << 4,     /* the recurrence (RWKV-7 rwkv7_step, xLSTM mlstm) */
    RECUR_SKIP_RECUR_OUT = 1u << 5, /* xLSTM's head norm and output gate */
    RECUR_SKIP_OUT = 1u << 6,       /* the mixer's output product */
    RECUR_SKIP_NORM2 = 1u << 7,     /* the norm before the FFN */
    RECUR_SKIP_SHIFT2 = 1u << 8,    /* RWKV-7's token shift before the FFN */
    RECUR_SKIP_FFN_UP = 1u << 9,    /* RWKV-7's FFN key (with relu^2), xLSTM's up and gate */
    RECUR_SKIP_FFN_ACT = 1u << 10,  /* xLSTM's silu(gate) * up */
    RECUR_SKIP_FFN_DOWN = 1u << 11  /* RWKV-7's FFN value, xLSTM's down */
} recur_skip_t;

/* "norm1,shift1" -> *mask (0 for "" or "none"); -1 (mask untouched) on an unknown name. */
int recur_skip_parse(const char *list, uint32_t *mask);

/* The part of the model one rank holds. Pipeline stage pp_rank runs layers [layer_begin,
 * layer_end) (contiguous, as even as possible, earlier stages taking the remainder); stage
 * 0 also the embedding, the last stage the output norm and the head. Within a stage,
 * tensor-parallel rank tp_rank holds heads [head_begin, head_begin + n_head): the rows of
 * the per-head projections (column-parallel) and the matching columns of the output and
 * FFN-down projections (row-parallel, summed with an all-reduce), likewise a 1/tp slice of
 * the FFN width, and rows [vocab_begin, vocab_begin + n_vocab) of the head (logits
 * gathered across the group). Norms over the whole hidden vector and the token-shift
 * vectors are replicated on every TP rank. */
typedef struct recur_model_shard {
    int32_t tp, tp_rank, pp, pp_rank;
    int32_t layer_begin, layer_end;
    int32_t head_begin, n_head;
    int32_t vocab_begin, n_vocab;
    int64_t bytes_read;          /* checkpoint bytes this rank read at load */
} recur_model_shard_t;

typedef struct recur_model_info {
    recur_arch_t arch;
    const char  *arch_name;    /* "rwkv7", "xlstm"                             */
    int32_t      n_vocab, n_embd, n_layer, n_head, head_size, ffn_dim;
    int32_t      head_size_k;  /* key size per head: xLSTM's DQK (head_size is DV); RWKV-7:
                                  head_size. With the dims above it fixes the state layout */
    size_t       state_bytes;  /* per slot, of this rank's shard (see above)  */
    recur_dtype_t state_dtype; /* storage of the state matrices: F32 or BF16   */
    int64_t      n_params;     /* weights read from the checkpoint             */
    int64_t      matrix_bytes; /* this rank's matrices as stored on the backend (codes and
                                  scales in the int8 / fp8 modes), the embedding table left
                                  out: the weight bytes one decode step reads */
    recur_dtype_t file_dtype;  /* dtype of the largest tensors in the file     */
    int32_t      bos_id;       /* token every prompt must start with; -1: none */
    int32_t      prefill_chunk;/* the chunk in use (0 where the arch has none) */
    recur_model_shard_t shard; /* this rank's part (the whole model: tp = pp = 1)   */
} recur_model_info_t;

typedef struct recur_batch {
    int32_t        n_seq;
    const int32_t *tokens;   /* host, [sum of seq_len]: each sequence's tokens in turn */
    const int32_t *seq_len;  /* host, [n_seq], each >= 1                              */
    const int32_t *slot;     /* host, [n_seq], distinct, in [1, n_slots)              */
    recur_logits_mode_t logits;
} recur_batch_t;

typedef struct recur_model recur_model_t;   /* opaque; defined in recur_model.c */

recur_model_params_t recur_model_default_params(void);

/* path: as recur_model_files_open() (a .bin, a .safetensors, an index json or a directory).
 * Detects the architecture, validates every tensor's name, dtype and shape, and uploads
 * the weights. *out = NULL on error (RECUR_E_FORMAT / RECUR_E_UNSUPPORTED with a message). */
recur_status_t recur_model_load(const char *path, recur_backend_t *b, const recur_model_params_t *p,
                                recur_model_t **out);
/* The same from an open checkpoint (e.g. a virtual one: recur_model_files_virtual); the
 * model does not keep f, which the caller still owns and may free after this returns. */
recur_status_t recur_model_load_files(const recur_model_files_t *f, recur_backend_t *b, const recur_model_params_t *p,
                                      recur_model_t **out);
void recur_model_free(recur_model_t *m);  /* NULL is a no-op */

const recur_model_info_t *recur_model_info(const recur_model_t *m);
int32_t recur_model_n_slots(const recur_model_t *m);

/* Runs the batch, advancing each sequence's slot state past its tokens. logits (host) gets
 * [n_seq][n_vocab] (LAST) or [n_tokens][n_vocab] (ALL); NULL only with RECUR_LOGITS_NONE.
 * With params.comm, only the ranks of the last pipeline stage write logits (the others may
 * pass NULL), and with pp > 1 a batch of several sequences is cut into up to pp
 * micro-batches that follow each other through the stages, so that all stages work at
 * once.
 * RECUR_E_INVAL (with a message) for a token id outside the vocabulary, a bad slot, a
 * repeated slot or an empty sequence; nothing is changed then.
 *
 * Decode batches (every sequence one token, at most max_tokens of them) on a backend with
 * graphs and params.use_graphs: the batch is padded to a bucket size (1, 2, 4, 8, 12, 16,
 * 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, then multiples of 256, and max_tokens
 * itself) with rows of token 0 in padding slot 0, and the step is one upload, one graph
 * launch and one download. A bucket's first step runs eagerly (it sizes the backend's
 * scratch), its second records the graph, later ones replay it; graphs live until
 * recur_model_free. Padding rows touch only slot 0; real rows get the eager path's bits
 * where the bucket has at most 8 rows (the GEMV kernels' per-row arithmetic does not depend
 * on the row count), and agree to fp32 rounding above (cuBLAS may pick another algorithm). */
recur_status_t recur_model_forward(recur_model_t *m, const recur_batch_t *batch, float *logits);

/* Decode graphs recorded so far (for tests and logs; 0 without graph support). */
int32_t recur_model_n_graphs(const recur_model_t *m);

/* The batch as recur_model_forward with RECUR_LOGITS_LAST, then each sequence's next token
 * chosen on the backend (its sample op): params[i] (host) for sequence i, ids in
 * [0, n_valid); tokens (host) gets n_seq ids. Only the ids leave the backend, which is what
 * a server's decode loop wants. RECUR_E_UNSUPPORTED if the backend has no sample op.
 * With params.comm the last stage samples and every rank returns the same tokens. */
recur_status_t recur_model_forward_sample(recur_model_t *m, const recur_batch_t *batch, const recur_sample_row_t *params,
                                          int32_t n_valid, int32_t *tokens);

/* forward_sample with the sample op's extras (recur_backend.h: logit bias, penalties,
 * logprobs), here in host memory and per sequence of the batch: the lists' offsets start
 * at 0 and end at n_bias / n_hist; top_n -1 means no logprobs, else logprob [n_seq],
 * top_token and top_logprob [n_seq][top_n] are outputs (every rank gets them, as the
 * tokens). ex NULL is forward_sample. The rows of bias and penalties change the logits in
 * place before the choice, so a greedy row takes the argmax of the changed logits.
 * With params.comm: every rank passes extras or none, with the same top_n; only the last
 * stage reads the lists (others may pass none: n_bias = n_hist = 0). The device room for
 * the lists grows to the largest step seen (the only allocation after load); the ranks
 * agree on that before the forward, so a failure (RECUR_E_NOMEM) changes no state. */
recur_status_t recur_model_forward_sample_ex(recur_model_t *m, const recur_batch_t *batch,
                                             const recur_sample_row_t *params, const recur_sample_extras_t *ex,
                                             int32_t n_valid, int32_t *tokens);

/* A slot's state as raw bytes (host: info.state_bytes, the layout above), so that a
 * session saved with get and loaded with set, on this model or another with the same
 * info (state_dtype included), continues bit-identically. */
recur_status_t recur_model_state_reset(recur_model_t *m, int32_t slot);             /* initial state */
recur_status_t recur_model_state_get(recur_model_t *m, int32_t slot, void *host);
recur_status_t recur_model_state_set(recur_model_t *m, int32_t slot, const void *host);
recur_status_t recur_model_state_copy(recur_model_t *m, int32_t dst_slot, int32_t src_slot);

#ifdef __cplusplus
}
#endif
#endif
