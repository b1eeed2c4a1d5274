/* recur_token_hist.h: per-slot token counts of the sequences in a worker's state slots,
 * for the penalties of the sample op (recur_backend.h: a row's recur_sample_hist_t list).
 *
 * For each slot, every token id the slot's sequence has had since the slot was last reset,
 * with two counts: n_all, how often it was fed to the model (prompt and generated tokens
 * alike: whatever a StepPlan ran on that slot), and n_out, how often it was generated
 * (sampled for that slot). A generated token is fed in the next step, so when the next
 * token is sampled, n_all covers the prompt and all the output so far, and n_out the
 * output: what the repetition penalty (n_all) and the presence and frequency penalties
 * (n_out) ask for.
 *
 * Storage, per slot: the entries in first-seen order (so exporting a slot's list is a
 * copy) and an open-addressing index of them (a power of two, at most half full); about 20
 * bytes per distinct token, allocated on first use. reset keeps small buffers for the
 * next sequence and frees large ones (a long sequence's memory goes back with it).
 *
 * Ownership: the history owns its buffers. Thread-safety: one thread at a time. */
#ifndef RECUR_TOKEN_HIST_H
#define RECUR_TOKEN_HIST_H

#include <stdint.h>

#include "recur_backend.h"   /* recur_sample_hist_t */
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_token_hist recur_token_hist_t;   /* opaque; defined in recur_token_hist.c */

/* Slots [0, n_slots), all empty. RECUR_E_INVAL (n_slots < 1) or RECUR_E_NOMEM; *out NULL then. */
recur_status_t recur_token_hist_create(int32_t n_slots, recur_token_hist_t **out);
void recur_token_hist_free(recur_token_hist_t *h);   /* NULL is a no-op */

/* Forgets the slot's tokens. */
void recur_token_hist_reset(recur_token_hist_t *h, int32_t slot);

/* dst := src (a forked sequence keeps its history). RECUR_E_NOMEM leaves dst empty. */
recur_status_t recur_token_hist_copy(recur_token_hist_t *h, int32_t dst, int32_t src);

/* Counts n tokens (ids >= 0) into the slot: n_all += 1 each, or with output set n_out += 1
 * each. RECUR_E_NOMEM (the counts of the tokens before the failing one are in). Counts
 * saturate at INT32_MAX. */
recur_status_t recur_token_hist_add(recur_token_hist_t *h, int32_t slot, const int32_t *tokens, int32_t n, int output);

/* Makes room for `extra` more distinct ids in the slot, so that adding that many new
 * tokens afterwards cannot fail. RECUR_E_NOMEM. */
recur_status_t recur_token_hist_reserve(recur_token_hist_t *h, int32_t slot, int32_t extra);

/* Distinct ids in the slot. */
int32_t recur_token_hist_size(const recur_token_hist_t *h, int32_t slot);

/* Writes the slot's entries to out (room for recur_token_hist_size) in first-seen order;
 * with outputs_only, only those with n_out > 0. Returns how many it wrote. */
int32_t recur_token_hist_export(const recur_token_hist_t *h, int32_t slot, int outputs_only, recur_sample_hist_t *out);

/* The counts of one id (0 and 0 when absent). */
void recur_token_hist_get(const recur_token_hist_t *h, int32_t slot, int32_t token, int32_t *n_all, int32_t *n_out);

#ifdef __cplusplus
}
#endif
#endif
