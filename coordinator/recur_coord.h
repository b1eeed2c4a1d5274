/* recur_coord.h: the coordinator of one model on one node: client requests in, step plans
 * out to the worker group, tokens back to the clients (DESIGN.md "Processes").
 *
 * One object owns: a ROUTER for clients (proto/recur_api.proto), a ROUTER for the worker
 * group (proto/recur_internal.proto: only world rank 0 of the group talks to it), the
 * scheduler (coordinator/recur_sched.h) and the tokenizer (picked once the worker's Hello
 * names the model: recur_tokenizer_pick.h). recur_coord_run is the whole loop, on one
 * thread: it polls both sockets (the timeout from the scheduler's next deadline, the
 * heartbeat and the caller's tick, whichever comes first) and
 *   - Hello: checks the protocol and that the model is the one configured (arch and vocab
 *     when the caller set them), takes n_slots and n_vocab, builds the scheduler and the
 *     tokenizer, replies Ready. Until then Generate is refused with UNAVAILABLE;
 *   - Generate: tokenizes (text, or token ids as given), submits; a bad request gets an
 *     ErrorResponse (code + message: empty / too long prompt, queue full, duplicate id);
 *   - with no step in flight and work in the scheduler: sends the plan as a StepPlan;
 *   - StepResult: completes the step, turns every TOKEN event into text (incrementally:
 *     bytes of an unfinished UTF-8 character, and the last max-stop-length - 1 bytes while
 *     stop strings are set, are held back with their token ids until decided), finds stop
 *     strings (the request ends STOP, the stop text trimmed), streams one GenerateResponse
 *     per released piece to the client's identity and a final one (finish reason, usage,
 *     error) on FINISHED;
 *   - Cancel (request id, from the same client identity): cancels and answers
 *     CancelResponse, then the stream's final message (CANCELLED);
 *   - ListModels, Health: answered at once;
 *   - Session requests and SlotOpResults: see "Sessions" below (recur_coord_sessions.inc);
 *   - heartbeats to the worker after heartbeat_ms without sending it anything; a worker
 *     silent for worker_timeout_ms (no result, no heartbeat) is lost: every request ends
 *     with ERROR, Health says NOT_SERVING and Generate is refused until a Hello comes again.
 * Invalid UTF-8 in generated text is sent as U+FFFD (the API's text is UTF-8).
 * Sampling extras: the request's repetition / presence / frequency penalties and logprobs
 * go into its sampling rows (defaults 1, 0, 0, none), its logit_bias (token ids checked
 * against the vocabulary: INVALID_ARGUMENT) into every SamplingRow of it; the logprobs of
 * a StepResult are queued on their request and attached to their token when its TOKEN
 * event comes, so they stay with the token while its text is held back; each Token then
 * has logprob and top_logprobs (most likely first, each alternative's text decoded alone,
 * invalid UTF-8 as U+FFFD).
 *
 * Disconnects: the client ROUTER's TCP/IPC disconnections are watched (a ZeroMQ socket
 * monitor; each request remembers the connection it came through), so a client that goes
 * away has its requests cancelled and their slots freed at once. A failed send to a client
 * cancels its request too. (inproc clients have no connection to watch: the HTTP front end
 * cancels on disconnect itself.)
 *
 * Ownership: the coordinator owns its sockets, scheduler, tokenizer and requests; the
 * ZeroMQ context is the caller's and must outlive it. Thread-safety: one thread. */
#ifndef RECUR_COORD_H
#define RECUR_COORD_H

#include <stdint.h>

#include "recur_metrics.h"
#include "recur_sched.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_coord recur_coord_t;   /* opaque; defined in recur_coord.c */

typedef struct recur_coord_config {
    const char *client_bind;      /* e.g. "tcp://127.0.0.1:0" (0: a free port)          */
    const char *worker_bind;      /* e.g. "tcp://127.0.0.1:0"                           */
    const char *model_id;         /* the ListModels id; NULL: "default"                 */
    const char *model_path;       /* for the tokenizer lookup (its directory)            */
    const char *tokenizer_path;   /* NULL: recur_tokenizer_pick's choice                 */
    int32_t tp, pp;               /* the grid the worker must report (>= 1)              */
    recur_sched_config_t sched;   /* n_slots and n_vocab are taken from the Hello; a
                                     n_slots smaller than the worker's is kept (>= 2)    */
    int32_t default_max_tokens;   /* a request without max_tokens; default 256           */
    int32_t heartbeat_ms;         /* idle heartbeat to the worker (and asked of it); 1000 */
    int32_t worker_timeout_ms;    /* worker silence that counts as lost; 30000           */
    const char *client_bind_extra;/* a second endpoint of the client ROUTER, e.g.
                                     "inproc://recur-http" for the HTTP front end in this
                                     process (coordinator/recur_http.h); NULL: none      */
    recur_metrics_t *metrics;     /* the loop reports here (recur_metrics.h); NULL: none;
                                     the caller's, must outlive the coordinator          */
    /* sessions (see "Sessions" below) */
    const char *session_dir;      /* durable checkpoints, a directory every worker rank can
                                     reach too; NULL: sessions live in memory only       */
    int32_t max_sessions;         /* default 10000                                       */
    int32_t session_slots;        /* idle sessions kept in state slots; -1 (default): half
                                     of the slots                                         */
    uint64_t session_host_bytes;  /* host memory per worker rank for idle sessions; 1 GiB */
    uint32_t session_ttl_s;       /* idle sessions are deleted after this; 0 (default): never */
    int32_t n_variants;           /* initial-state variants: "<model id>:<name>" starts from */
    const char *const *variant_names;   /* the RWKV-7 state-tuning file at variant_paths[i] */
    const char *const *variant_paths;
    int32_t prefix_cache_entries; /* prompt-prefix states kept on the workers; 0: off     */
    int32_t prefix_cache_block;   /* prefix states are cut at multiples of this; default 32 */
    /* CURVE on the worker endpoint (common/recur_curve.h): NULL (default) none. Else the
     * worker ROUTER is a CURVE server with worker_curve->secret_key, and a ZAP handler (bound
     * on the context before the socket, answered by the loop) lets in only clients whose
     * public key is in worker_curve->allowed; refusals and failed handshakes (a worker
     * without CURVE, or with another server key) are logged (at most every 5 s each) and
     * counted in recur_coord_stats_t, and the coordinator serves on with the group it has.
     * Read at create; the caller's. */
    const struct recur_curve_keys *worker_curve;
} recur_coord_config_t;

recur_coord_config_t recur_coord_default_config(void);

/* Binds both sockets on the caller's ZeroMQ context. RECUR_E_INVAL / RECUR_E_IO (logged). */
recur_status_t recur_coord_create(void *zctx, const recur_coord_config_t *cfg, recur_coord_t **out);
void recur_coord_free(recur_coord_t *c);   /* NULL is a no-op; sends nothing */

/* The endpoints actually bound (port 0 resolved). Owned by c. */
const char *recur_coord_client_endpoint(const recur_coord_t *c);
const char *recur_coord_worker_endpoint(const recur_coord_t *c);
int recur_coord_ready(const recur_coord_t *c);   /* 1: a worker said Hello and is not lost */
/* How many times a worker group was declared lost because it fell silent for
 * worker_timeout_ms (a stopped or hung rank): the caller, which owns the processes, then
 * kills and restarts the group. */
uint64_t recur_coord_lost_count(const recur_coord_t *c);

/* Runs the loop until tick returns nonzero (called at least every 100 ms and after each
 * batch of messages; NULL: never) and returns RECUR_OK, or RECUR_E_IO when a socket fails. */
recur_status_t recur_coord_run(recur_coord_t *c, int (*tick)(recur_coord_t *c, void *ud), void *ud);

/* Ends every live request with an ERROR final (reason: why), e.g. when the worker
 * process died; the coordinator is then not ready. */
void recur_coord_fail_all(recur_coord_t *c, const char *why);

/* Sends Shutdown (reason, exit_code 0) to the worker, if one said Hello; ends every live
 * request as CANCELLED first. */
void recur_coord_shutdown_workers(recur_coord_t *c, const char *reason);

/* Graceful drain: from now on Generate is refused (UNAVAILABLE, "shutting down") and
 * Health says NOT_SERVING, while the requests already accepted (running or queued) go on
 * to their end. The caller stops the loop once recur_coord_live_requests is 0 or its
 * deadline passes, then calls recur_coord_shutdown_workers. */
void recur_coord_drain(recur_coord_t *c);   /* also checkpoints sessions (see Sessions) */
int recur_coord_live_requests(const recur_coord_t *c);   /* accepted and not yet finished, plus
                                                           session operations still running */

/* Loop cost: steps run, sequences over all steps, and per step, in microseconds (means):
 *   busy: handling messages and building plans (everything but waiting in poll); most of
 *         it (detokenizing, streaming) overlaps the worker's next step;
 *   critical: from a StepResult's arrival to the next plan's send, for plans sent in
 *         answer to a result: what the coordinator adds to the step time;
 *   period: from one such plan to the next (the step time the workers see, all included);
 *   round_trip: plan sent -> result received; worker_total / forward / sample: the worker's
 *         own StepTiming (plan received -> result sent; the forward pass; sampling), so
 *         round_trip - worker_total is the transport and worker_total - forward - sample
 *         the worker's own bookkeeping (unpack, MPI broadcast, pack). */
/* Sessions (proto/recur_api.proto "sessions"; README "Sessions"): Generate with session_id
 * continues a session (one turn at a time: a second gets ALREADY_EXISTS), Session requests
 * create, get, list, fork, delete, export and import them. The coordinator keeps the table
 * (coordinator/recur_sessions.h): a session's state stays in its slot between turns; idle
 * sessions move to the workers' host memory and then to disk, least recently used first,
 * within session_slots and session_host_bytes; session_ttl_s deletes idle ones. With
 * session_dir every turn ends with a checkpoint (worker/recur_state_ckpt.h) before the
 * turn's final response is sent; the table is rebuilt from the directory at start, so a
 * restarted server (any tp x pp layout of the same model) continues every saved session.
 * A drain checkpoints every session whose newest state is not on disk yet. Model ids
 * "<id>:<variant>" start from an initial-state variant; the prefix cache keeps states at
 * block boundaries of prompt prefixes that several requests shared. The HTTP front end
 * speaks the same SessionRequest messages (its inproc client endpoint).
 * A turn that ended on a stop string: the state consumed the stop string (and what followed
 * it in the tokens generated with it), which the client never saw. The session keeps those
 * bytes as its unsent text (recur_sessions.h; checkpoints, forks and exports carry it), and
 * the next turn's text prompt, when it begins with them, is tokenized from after them, so
 * that the state holds exactly the conversation a client writes out (chat: the template's
 * continuation begins with the closing that the stop string started). */
typedef struct recur_coord_session_stats {
    int32_t  sessions, in_slot, in_host, on_disk, fresh, busy;
    uint64_t host_bytes_used;           /* per rank (rank 0's shard bytes per host copy)      */
    uint64_t turns;                     /* session turns finished                             */
    uint64_t turn_tokens_cached;        /* prompt tokens of turns served from session states  */
    uint64_t turn_tokens_prefilled;     /* prompt tokens of turns prefilled                   */
    uint64_t saves, save_failures, loads, load_failures;
    uint64_t to_host, to_disk, lost, expired, deleted;
    uint64_t prefix_lookups, prefix_hits, prefix_tokens_saved;
    int32_t  prefix_entries;
} recur_coord_session_stats_t;
void recur_coord_get_session_stats(const recur_coord_t *c, recur_coord_session_stats_t *st);

typedef struct recur_coord_stats {
    uint64_t steps, seqs, tokens_out, requests;
    int32_t  max_batch_seen;
    double   busy_us_per_step;
    double   critical_us_per_step, period_us_per_step;
    double   round_trip_us, worker_total_us, worker_forward_us, worker_sample_us;
    /* worker_curve: worker connections whose key ZAP accepted / refused, and handshakes that
     * failed before ZAP was asked (no CURVE on the peer, another server key) */
    uint64_t worker_keys_accepted, worker_keys_refused, worker_handshakes_failed;
} recur_coord_stats_t;
void recur_coord_get_stats(const recur_coord_t *c, recur_coord_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif
