/* recur_model_arch.h: what recur_model.c needs from each architecture (private to worker/).
 *
 * An architecture loads its weights from the checkpoint files onto the backend, fills in
 * the model info, sizes its workspace for max_tokens rows, and runs one forward piece of
 * at most max_tokens rows. recur_model.c does everything around it: argument checks,
 * cutting batches into pieces, index uploads, logits download, and the state pool. */
#ifndef RECUR_MODEL_ARCH_H
#define RECUR_MODEL_ARCH_H

#include "recur_backend.h"
#include "recur_model.h"
#include "recur_model_files.h"

typedef struct recur_model_arch {
    const char *name;
    /* Does this checkpoint look like this architecture? (cheap: tensor names only) */
    int (*detect)(const recur_model_files_t *f);
    /* Loads weights and workspace (for p->max_tokens rows) into *ctx and fills *info
     * (state_bytes and state_dtype = p->state_dtype included). */
    recur_status_t (*load)(recur_backend_t *b, const recur_model_files_t *f, const recur_model_params_t *p,
                           recur_model_info_t *info, void **ctx);
    void (*free)(recur_backend_t *b, void *ctx);
    /* One piece: rows.n_rows <= max_tokens; tokens and out_rows in backend memory.
     * Writes logits for the n_out rows listed in out_rows to logits ([n_out][n_vocab],
     * backend memory; n_out <= rows.n_rows). */
    recur_status_t (*forward)(recur_backend_t *b, void *ctx, const recur_rows_t *rows, const int32_t *tokens,
                              void *state_pool, size_t slot_bytes, int32_t n_out, const int32_t *out_rows,
                              float *logits);
} recur_model_arch_t;

/* This rank's shard (recur_model_shard_t) of a model with n_layer layers, n_head heads,
 * FFN width ffn and vocabulary n_vocab, for p->comm (NULL: the whole model, tp = pp = 1).
 * RECUR_E_INVAL with a message naming the mismatch when the grid cannot split this model
 * (heads, FFN width or vocabulary not divisible by tp; fewer layers than stages). */
recur_status_t recur_model_plan_shard(const recur_model_params_t *p, const char *path, int32_t n_layer, int32_t n_head,
                                      int32_t ffn, int32_t n_vocab, recur_model_shard_t *sh);

/* The logits of a TP group: each rank computed local [n_out][sh->n_vocab] (its rows of the
 * head); gathered ([tp][n_out][n_vocab/tp] scratch, backend memory) and laid out as
 * logits [n_out][n_vocab_full]. With tp == 1 local must already be logits (no-op). */
recur_status_t recur_model_gather_logits(recur_backend_t *b, recur_comm_t *comm, const recur_model_shard_t *sh,
                                         const float *local, float *gathered, int32_t n_out, float *logits);

extern const recur_model_arch_t recur_arch_rwkv7;
extern const recur_model_arch_t recur_arch_xlstm;

#endif
