/* recur_sched.h: the coordinator's scheduler (continuous batching over state slots).
 *
 * Pure logic: no sockets, no threads, no clock (every call that needs the time takes
 * now_ms from the caller, so tests drive time by hand). The coordinator loop calls, per
 * step:   plan -> send the plan to the workers -> complete(result) -> drain events.
 * Requests join (submit) and leave (finish/cancel) between steps.
 *
 * Policy, per plan:
 *   1. queued requests waiting longer than queue_timeout_ms end (ERROR + FINISHED TIMEOUT);
 *   2. waiting requests take free slots, higher priority first, FCFS within a priority,
 *      while fewer than min(max_batch, token_budget) requests run (so all of them fit in
 *      every step, and a prefilling prompt always gets at least one token of it);
 *   3. every sequence in decode gets one token, so running sequences never starve;
 *   4. the rest of the token budget goes to prefill chunks of admitted requests, oldest
 *      admission first, at most prefill_chunk_max tokens of one prompt per step; the chunk
 *      that ends a prompt samples the first generated token.
 * A request's slot is listed in reset_slots by the first plan that runs it (a slot is reset
 * when assigned, DESIGN.md "Recurrent state"), so a slot freed by a cancellation is never
 * reused with the old sequence's state.
 *
 * Slots the caller holds (sessions: a conversation's state stays in its slot between
 * requests). recur_sched_slot_take takes a free slot out of the pool for the caller and
 * recur_sched_slot_give puts one back. A request may run on such a slot (request.slot > 0,
 * "pinned"): it is admitted without a free slot and its slot is never reset, so it
 * continues the state the slot holds. A request with keep_slot hands its slot (pinned, or
 * assigned at admission and reset then; the caller may replace that reset by loading a
 * state: plan.reset_ids says whose slot each reset is for) to the caller when it ends:
 * FINISHED says which slot and how many of the request's tokens (prompt, then generated)
 * the plans fed into it (`fed`, including a step still in flight), i.e. what the slot's
 * state has consumed once the step in flight completes.
 *
 * Stops: max_tokens (FINISHED LENGTH), a stop token id or the configured EOS unless the
 * request sets ignore_eos (FINISHED STOP; the stop token is delivered as a TOKEN and counted
 * in usage). Stop strings need text, so the caller finds them after detokenizing and calls
 * recur_sched_finish(..., RECUR_SCHED_STOP).
 *
 * Ownership: the scheduler owns its requests (submit copies the prompt and the stop ids),
 * the plan's arrays (valid until the next plan/complete/free; reused, so no allocation per
 * step in the steady state) and the events. The cookie is the caller's and only passed back.
 * Thread-safety: none; one thread (the coordinator loop) owns a scheduler. */
#ifndef RECUR_SCHED_H
#define RECUR_SCHED_H

#include <stdint.h>

#include "recur_backend.h"   /* recur_sample_row_t */
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_sched recur_sched_t;   /* opaque; defined in recur_sched.c */

typedef struct recur_sched_config {
    int32_t  n_slots;           /* slots in the pool, padding slot 0 included (>= 2)          */
    int32_t  max_batch;         /* sequences per step (>= 1)                                  */
    int32_t  token_budget;      /* tokens per step: decode 1 each, prefill the rest (>= 1)    */
    int32_t  max_queue;         /* requests waiting for a slot (>= 1); more: RECUR_E_BUSY     */
    uint32_t queue_timeout_ms;  /* longest wait for a slot; 0: no limit                       */
    int32_t  prefill_chunk_max; /* prompt tokens of one request per step; 0: token_budget     */
    int32_t  max_prompt;        /* longest prompt accepted; 0: no limit                       */
    int32_t  n_vocab;           /* token ids must be < n_vocab; 0: unchecked                  */
    int32_t  eos_id;            /* ends a request (unless ignore_eos); -1: none               */
} recur_sched_config_t;

/* n_slots 257, max_batch 256, token_budget 2048, max_queue 4096, queue_timeout_ms 60000,
 * prefill_chunk_max 512, max_prompt 0, n_vocab 0, eos_id -1. */
recur_sched_config_t recur_sched_default_config(void);

typedef struct recur_sched_request {
    const int32_t *prompt;      /* [n_prompt] token ids, copied; n_prompt >= 1                */
    int32_t        n_prompt;
    int32_t        max_tokens;  /* tokens to generate at most (>= 1)                          */
    recur_sample_row_t sampling;/* temperature, top_k, top_p, min_p, seed (step is ignored)   */
    int32_t        priority;    /* higher is admitted first; FCFS within a priority           */
    const int32_t *stop_ids;    /* [n_stop] token ids that end the request, copied            */
    int32_t        n_stop;
    int32_t        ignore_eos;  /* nonzero: the configured eos_id does not end the request    */
    void          *cookie;      /* the caller's, returned in every event                      */
    int32_t        slot;        /* 0: a free slot, reset at admission; > 0: a slot the caller
                                 * holds idle (pinned: used as it is, no reset)               */
    int32_t        keep_slot;   /* nonzero: at the end the slot goes to the caller (FINISHED.slot) */
    int32_t        split_at;    /* 0, or a prompt position (1..n_prompt) where a prefill chunk
                                 * must end (plan.split_hit): the caller copies the state
                                 * there (the prefix cache)                                   */
} recur_sched_request_t;

typedef enum recur_sched_reason {
    RECUR_SCHED_STOP = 0,       /* EOS, a stop token, or the caller's stop string             */
    RECUR_SCHED_LENGTH = 1,     /* max_tokens reached                                         */
    RECUR_SCHED_CANCELLED = 2,  /* recur_sched_cancel (client request or disconnect)          */
    RECUR_SCHED_ERROR = 3,      /* the step failed (an ERROR event came first)                */
    RECUR_SCHED_TIMEOUT = 4,    /* waited for a slot past queue_timeout_ms (ERROR first)      */
    RECUR_SCHED_N_REASONS = 5
} recur_sched_reason_t;

const char *recur_sched_reason_str(recur_sched_reason_t r);   /* "stop", "length", ...; never NULL */

/* One forward step. Per-sequence arrays are parallel, in sequence order (as recur_batch_t
 * and the StepPlan message): decode sequences first, then prefill chunks. */
typedef struct recur_sched_plan {
    uint64_t       step;        /* increases by one per non-empty plan                        */
    int32_t        n_seq;       /* 0: nothing to run (then do not call complete)              */
    int32_t        n_tokens;    /* sum of seq_len; <= token_budget                            */
    const int32_t *slot;        /* [n_seq] distinct, in [1, n_slots)                          */
    const int32_t *seq_len;     /* [n_seq] >= 1                                               */
    const int32_t *tokens;      /* [n_tokens] each sequence's tokens in turn                  */
    const uint8_t *sample;      /* [n_seq] 1: sample this sequence's next token               */
    const uint64_t *id;         /* [n_seq] the request of each sequence                       */
    int32_t        n_sample;    /* sequences with sample[i] = 1                               */
    const recur_sample_row_t *sampling;  /* [n_sample] in sequence order; step = tokens
                                          * generated so far, so a seed reproduces a text     */
    int32_t        n_reset;
    const int32_t *reset_slots; /* [n_reset] reset to the initial state before the step runs  */
    const uint64_t *reset_ids;  /* [n_reset] the request each reset slot was admitted for     */
    const uint8_t *split_hit;   /* [n_seq] 1: this chunk ends at the request's split_at       */
    int32_t        n_split_hit;
    int32_t        n_decode;    /* sequences in decode (one token each)                       */
    int32_t        n_prefill_tokens;
} recur_sched_plan_t;

/* What the workers returned for one plan. */
typedef struct recur_sched_result {
    uint64_t       step;        /* the plan's step                                            */
    recur_status_t status;      /* RECUR_OK, or the step failed                               */
    const char    *message;     /* status != RECUR_OK: why (may be NULL)                      */
    int32_t        n_token;     /* n_sample (one per sampled sequence) or n_seq (one per
                                 * sequence, the unsampled ones ignored, e.g. -1)             */
    const int32_t *token;
} recur_sched_result_t;

typedef enum recur_sched_event_type {
    RECUR_SCHED_EV_TOKEN = 0,
    RECUR_SCHED_EV_FINISHED = 1,
    RECUR_SCHED_EV_ERROR = 2    /* always followed by the request's FINISHED                  */
} recur_sched_event_type_t;

typedef struct recur_sched_event {
    recur_sched_event_type_t type;
    uint64_t id;
    void    *cookie;
    int32_t  token;             /* TOKEN: the id                                              */
    int32_t  index;             /* TOKEN: 0 for the first generated token                     */
    uint64_t ttft_ms;           /* TOKEN with index 0: complete's now_ms - submit's now_ms     */
    recur_sched_reason_t reason;/* FINISHED                                                   */
    int32_t  prompt_tokens;     /* FINISHED: usage                                            */
    int32_t  completion_tokens;
    int32_t  slot;              /* FINISHED of a keep_slot request: its slot, now the caller's,
                                 * when pinned or fed (a slot assigned at admission that no
                                 * plan used holds nothing of it and is freed); else 0        */
    int32_t  fed;               /* FINISHED: tokens (prompt, then generated) fed into the slot
                                 * by the plans so far, the one in flight included            */
    char     message[160];      /* ERROR                                                      */
} recur_sched_event_t;

typedef struct recur_sched_stats {
    int32_t  running;           /* requests holding a slot                                    */
    int32_t  waiting;           /* requests queued for a slot                                 */
    int32_t  slots_used, slots_total;   /* slots_total = n_slots - 1 (0 is padding); used
                                           includes the caller's                              */
    int32_t  slots_caller;      /* slots the caller holds (recur_sched_slot_take, keep_slot)  */
    uint64_t steps;             /* non-empty plans so far                                     */
    int32_t  last_seqs, last_tokens, last_decode, last_prefill_tokens;   /* the latest plan  */
    uint64_t tokens_planned;    /* over all plans                                             */
    uint64_t submitted;
    uint64_t finished[RECUR_SCHED_N_REASONS];
} recur_sched_stats_t;

/* RECUR_E_INVAL (a bad config field, logged with its name) or RECUR_E_NOMEM; *out = NULL
 * on error. Every buffer a step needs is sized here from max_batch and token_budget. */
recur_status_t recur_sched_create(const recur_sched_config_t *cfg, recur_sched_t **out);
void recur_sched_free(recur_sched_t *s);   /* NULL is a no-op; live requests are dropped silently */

/* The message of the latest failed call (never NULL; "" when none failed yet). */
const char *recur_sched_error(const recur_sched_t *s);

/* Queues a request; *id gets its id (>= 1, never reused). RECUR_E_BUSY "queue full (N
 * waiting)"; RECUR_E_INVAL for an empty or too long prompt, a token id out of range, a
 * slot the caller does not hold idle or a bad parameter (the message names it);
 * RECUR_E_NOMEM. Nothing is queued on error. */
recur_status_t recur_sched_submit(recur_sched_t *s, const recur_sched_request_t *r, uint64_t now_ms, uint64_t *id);

/* Ends a request at once with reason (STOP, LENGTH or CANCELLED), waiting or running: its
 * FINISHED event is queued and its slot is free for the next plan. A sequence of the step in
 * flight still runs on the workers; its result is ignored. RECUR_E_INVAL "no request N" if
 * it is unknown or already finished (the CancelResponse's found = false). */
recur_status_t recur_sched_finish(recur_sched_t *s, uint64_t id, recur_sched_reason_t reason);
recur_status_t recur_sched_cancel(recur_sched_t *s, uint64_t id);   /* finish(..., CANCELLED) */

/* Builds the next step into *plan (arrays owned by the scheduler). RECUR_E_INVAL if the
 * previous plan has not been completed; RECUR_E_NOMEM if the event queue cannot grow
 * (nothing changed then). plan->n_seq = 0: nothing to run now. */
recur_status_t recur_sched_plan(recur_sched_t *s, uint64_t now_ms, recur_sched_plan_t *plan);

/* Feeds back the step's result: on success appends each sampled token (TOKEN events), ends
 * requests that reached a stop (FINISHED) and frees their slots; on failure every request of
 * that step still alive gets ERROR (the result's message) and FINISHED ERROR. RECUR_E_PROTO
 * (nothing changed) if the result does not match the plan in flight (step, count, a negative
 * or out-of-vocabulary token): the caller then completes it again as a failure. */
recur_status_t recur_sched_complete(recur_sched_t *s, const recur_sched_result_t *res, uint64_t now_ms);

/* Pops the oldest event into *ev; returns 1, or 0 when there is none. Events of one
 * request come in order: TOKENs by index, then (ERROR and) FINISHED exactly once. */
int recur_sched_next_event(recur_sched_t *s, recur_sched_event_t *ev);

/* A free slot for the caller (*slot), out of the pool until given back; RECUR_E_BUSY when
 * none is free. */
recur_status_t recur_sched_slot_take(recur_sched_t *s, int32_t *slot);
/* Returns a slot the caller holds idle to the pool (its next request resets it).
 * RECUR_E_INVAL when the caller does not hold it idle (free, or a request runs on it). */
recur_status_t recur_sched_slot_give(recur_sched_t *s, int32_t slot);

/* The time at which the oldest waiting request times out; UINT64_MAX when none can (for the
 * loop's poll timeout). */
uint64_t recur_sched_next_deadline_ms(const recur_sched_t *s);

void recur_sched_get_stats(const recur_sched_t *s, recur_sched_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif
