/* recur_worker.h: the worker side of the coordinator link (proto/recur_internal.proto).
 *
 * A worker group is every MPI rank of one model (a tp x pp grid, or a single rank). World
 * rank 0 is the group's only contact with the coordinator: it connects a DEALER
 * (common/recur_msgsock.h, routing id "rank0") to the coordinator's worker endpoint,
 * sends Hello (the grid, host, backend, model identity, slots, state bytes per slot shard)
 * and serves messages until Shutdown. The other ranks never touch ZeroMQ.
 *
 * Lockstep between the ranks (recur_comm_bcast_host over MPI): every rank loops on
 *   1. a command header {kind, exit_code, n_bytes} broadcast from rank 0;
 *   2. kind RUN: n_bytes of the raw envelope (as rank 0 received it) broadcast next; every
 *      rank unpacks it and runs it (StepPlan or SlotOp), with the same calls in the same
 *      order, so the model's own collectives match up;
 *      kind STOP: every rank leaves the loop and returns exit_code.
 * Rank 0 broadcasts only what every rank must run (a valid StepPlan or SlotOp) and stops;
 * everything it can answer alone (Heartbeat, Ready, a plan it refuses, a message it cannot
 * decode) costs the others nothing, so between commands they simply wait in the
 * broadcast (MPI progress polling: a waiting rank keeps a core busy). A stop decided by
 * rank 0 (Shutdown, the coordinator gone, a failure) is always broadcast, so no rank is left
 * waiting.
 *
 * A StepPlan runs as: reset its reset_slots; then one forward of every LOGITS_MODE_NONE
 * sequence (prefill only, recur_model_forward with RECUR_LOGITS_NONE); then one forward of
 * every LOGITS_MODE_SAMPLE sequence (recur_model_forward_sample with its sampling rows,
 * ids in [0, n_vocab)). The slots of a plan are distinct, so the split does not change any
 * sequence's result. Before anything runs, rank 0 checks the plan against the model
 * (slots in [1, n_slots), token ids < n_vocab, logit-bias ids < n_vocab and distinct per
 * row); a plan that fails gets a StepResult with RECUR_E_INVAL and its message, nothing
 * changes, and the group keeps serving. A
 * message that does not decode (recur_proto's checks: slot 0, repeated slots, ...) is
 * answered the same way when its step or op_id can still be read, else only logged. A
 * failure while running (device, MPI) is answered with an error StepResult and ends
 * every rank with RECUR_WORKER_EXIT_FAILED.
 *
 * Sampling: a SamplingRow's penalties, logit bias and logprobs go to the sample op
 * (recur_backend.h) through recur_model_forward_sample_ex. The penalties need each
 * sequence's tokens so far: the ranks that sample (the last pipeline stage's, where the
 * logits are) keep, per slot, the counts of the tokens every plan fed to it (prompt and
 * generated tokens) and of the tokens sampled for it (recur_token_hist.h), and send the
 * lists only for rows that use a penalty (a repetition penalty needs every id seen;
 * presence and frequency only the generated ones). A slot's history is cleared when the
 * slot is reset (reset_slots, SlotOp RESET, also with history_only, which keeps the
 * state), copied with it by a SlotOp COPY between slots (a fork penalizes the same
 * tokens), and cleared by a COPY from a host key, LOAD and LOAD_TUNED: host copies and
 * state files carry no token history, so after them the penalties count only the tokens
 * fed from then on; SAVE writes none. When any row asks for logprobs, the StepResult carries logprob [n_seq] and
 * top_n = the most alternatives any row asked for, with top_token / top_logprob
 * [n_seq][top_n] (rows that asked fewer, and prefill-only rows, padded with -1 and 0).
 * A plan that fails after its tokens were counted (another rank out of memory, a device
 * failure) leaves them counted: the coordinator ends that step's requests, and their
 * slots are reset before they are used again.
 *
 * Liveness: rank 0 waits for messages in slices of at most heartbeat_ms, sends a Heartbeat
 * (rank 0, its last step) after heartbeat_ms without sending anything, and answers every
 * Heartbeat it receives. When nothing has come from the coordinator for idle_limit_ms
 * (before Ready too), it broadcasts a stop and every rank returns
 * RECUR_WORKER_EXIT_LOST. While Ready has not come, Hello is re-sent every heartbeat_ms
 * (a coordinator that restarted on the same endpoint then still learns about us).
 *
 * SlotOps (recur_internal.proto): a state lives in a slot, in each rank's host memory under
 * a key (COPY slot <-> key <-> key; DROP), or in a checkpoint (worker/recur_state_ckpt.h).
 * SAVE: every rank writes its shard file of the generation, rank 0 gathers the shard
 * records (file, ranges, size, CRC) and commits the manifest with the model identity and
 * the coordinator's session record, then removes older generations. LOAD: every rank reads
 * the manifest, checks the model identity, reads and checks the shard files it needs and
 * rebuilds its shard (any saved layout); LOAD_TUNED: an RWKV-7 state-tuning file. The ranks
 * agree (recur_comm_agree) on the outcome; the destination is set only when every rank
 * succeeded, and a failure's message is the first failing rank's, whichever rank that is.
 * SlotOpResult.bytes is rank 0's shard bytes written / read. The path of a SAVE, LOAD or
 * DELETE is checked by rank 0 first (recur_ckpt_path_check against session_dir): one that
 * could leave the session directory gets an INVAL result and touches no file.
 *
 * CURVE (curve_keys_dir): the link to the coordinator is encrypted and both ends are
 * authenticated; rank 0 watches its handshakes and logs a refusal (wrong keys, or a
 * coordinator without CURVE) once, then every 10 s while it keeps retrying.
 *
 * Ownership: the worker borrows the model and the communicator (both must outlive the
 * call) and owns its ZeroMQ context and socket for the duration of recur_worker_run.
 * Thread-safety: call it from the thread that owns the model and MPI. */
#ifndef RECUR_WORKER_H
#define RECUR_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "recur_comm.h"
#include "recur_model.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Process exit codes of `recur worker` (returned by recur_worker_run in *exit_code). */
#define RECUR_WORKER_EXIT_OK     0  /* Shutdown (or the exit_code the Shutdown asked for) */
#define RECUR_WORKER_EXIT_FAILED 1  /* a step or slot op failed on the device / MPI       */
#define RECUR_WORKER_EXIT_LOST   3  /* the coordinator went silent past idle_limit_ms     */

typedef struct recur_worker_params {
    const char *connect;        /* the coordinator's worker endpoint, "tcp://HOST:PORT" */
    const char *backend;        /* for Hello: "cpu", "cuda"                          */
    const char *checkpoint_id;  /* for Hello: the weights' identity (recur_worker_checkpoint_id) */
    const char *content_hash;   /* for Hello and checkpoints: recur_ckpt_content_hash of the
                                   model files (NULL: ""; checkpoints then match any model of
                                   the same dimensions) */
    const char *software_version; /* for Hello; NULL: not sent                        */
    int32_t heartbeat_ms;       /* idle Heartbeat interval; Ready may change it (> 0). Default 1000 */
    int32_t idle_limit_ms;      /* silence from the coordinator that ends the group. Default 30000 */
    const char *curve_keys_dir; /* NULL: no encryption. Else rank 0 connects as a CURVE client
                                   with the keys of this directory (common/recur_curve.h:
                                   worker.key, server.pub); a coordinator that refuses them is
                                   logged (and retried until idle_limit_ms) */
    const char *session_dir;    /* NULL: checkpoint paths are only checked to be plain file
                                   names without ".." components; else they must also lie
                                   directly in this directory (recur_ckpt_path_check) */
} recur_worker_params_t;

recur_worker_params_t recur_worker_default_params(void);

/* "<path>|size=<bytes>|mtime=<unix seconds>" of the checkpoint at path (for a directory:
 * the total size and the newest mtime of the regular files in it), the path shortened from
 * the left to fit in buf[0..n) (at most RECUR_PROTO_MAX_NAME_BYTES, what Hello carries).
 * Two workers with the same id loaded the same files, unless the files were rewritten
 * within the same second at the same size. RECUR_E_IO when path cannot be read. */
recur_status_t recur_worker_checkpoint_id(const char *path, char *buf, size_t n);

/* Runs the worker loop on every rank of the group (comm NULL: one rank, no MPI) until a
 * Shutdown, the coordinator's silence, or a failure. *exit_code gets what the process
 * should exit with (RECUR_WORKER_EXIT_*, or the Shutdown's exit_code); every rank gets the
 * same one. Returns RECUR_OK when the loop ended in an orderly way (all ranks stopped
 * together, whatever the exit code); another status when it could not start (bad params,
 * the socket) or the lockstep itself broke (MPI): the ranks may then disagree, and the
 * caller should take the whole job down (recur_comm_world_abort). */
recur_status_t recur_worker_run(recur_model_t *m, recur_comm_t *comm, const recur_worker_params_t *p,
                                int *exit_code);

#ifdef __cplusplus
}
#endif
#endif
