/* recur_sampler.h: choosing the next token from a row of logits on the host.
 *
 * Order of operations (the one llama.cpp and vLLM users expect): temperature, top-k,
 * softmax, min-p, top-p, then a draw from the renormalised distribution with the
 * request's own random stream. temperature <= 0 means greedy: the exact argmax (lowest
 * id on ties), with no randomness. Ownership: a sampler owns its scratch arrays, sized
 * once for the vocabulary at init. Thread-safety: one sampler per request/thread. */
#ifndef RECUR_SAMPLER_H
#define RECUR_SAMPLER_H

#include <stdint.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_sampler_params {
    float    temperature; /* <= 0: greedy                                  */
    int32_t  top_k;       /* <= 0: off                                     */
    float    top_p;       /* >= 1: off; in (0, 1): nucleus                 */
    float    min_p;       /* <= 0: off; keep p >= min_p * p_max            */
    uint64_t seed;        /* the random stream; same seed, same tokens     */
} recur_sampler_params_t;

typedef struct recur_sampler recur_sampler_t; /* opaque; defined in recur_sampler.c */

recur_sampler_params_t recur_sampler_default_params(void); /* T=1, top_k off, top_p 1, min_p 0, seed 0 */
/* RECUR_E_INVAL (with a message) for NaN/negative/out-of-range parameters. */
recur_status_t recur_sampler_init(const recur_sampler_params_t *p, int32_t n_vocab, recur_sampler_t **out);
void           recur_sampler_free(recur_sampler_t *s); /* NULL is a no-op */

/* Picks a token among ids [0, n_valid) (n_valid <= n_vocab; ids beyond are never chosen,
 * e.g. padding rows of a vocabulary). Non-finite logits count as -inf; if every logit is
 * -inf/NaN the lowest id is returned. */
int32_t recur_sampler_sample(recur_sampler_t *s, const float *logits, int32_t n_valid);

#ifdef __cplusplus
}
#endif
#endif
