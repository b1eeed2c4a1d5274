/* recur_sessions.h: the coordinator's session table: where each session's state is, least
 * recently used order per tier, budgets and idle expiry.
 *
 * Pure bookkeeping: no sockets, no files, no clock (every call that needs the time takes
 * it from the caller), so tests drive it by hand. The coordinator (recur_coord.c) asks it
 * what to move and carries the moves out as SlotOps, then records the outcome here.
 *
 * A session's state is in one or more of (DESIGN.md "Recurrent state"):
 *   - a slot the coordinator holds in the scheduler (recur_sched_slot_take, keep_slot);
 *   - a host copy on the workers under the session's own key (s->key), current or not;
 *   - its checkpoint on disk (generation disk_gen; disk_current when it equals the state).
 * Its tier is the fastest place holding the current state: SLOT, HOST, DISK; NEW when it
 * never had a turn (the model's initial state, or its variant's); LOST never happens in a
 * consistent table (a move that failed leaves the state nowhere: the coordinator deletes
 * such a session). Busy sessions (a turn or an operation running) are never chosen for
 * eviction or expiry.
 *
 * Policy the coordinator follows (documented here because the queries serve it):
 *   - idle sessions in slots beyond max_slots, or while ordinary requests wait for a free
 *     slot, move to host (least recently used first); without host room they move to disk
 *     when there is a session directory (a checkpoint that is current costs nothing), else
 *     they are dropped;
 *   - host copies beyond host_bytes (host_count * state_bytes) move to disk or are dropped,
 *     least recently used first;
 *   - sessions idle longer than ttl_ms are deleted.
 *
 * Ownership: the table owns its records (id, model and token arrays). Pointers returned
 * stay valid until the session is removed. Thread-safety: none; one thread. */
#ifndef RECUR_SESSIONS_H
#define RECUR_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recur_sess_tier {
    RECUR_SESS_NEW = 0,
    RECUR_SESS_SLOT = 1,
    RECUR_SESS_HOST = 2,
    RECUR_SESS_DISK = 3,
    RECUR_SESS_LOST = 4
} recur_sess_tier_t;

const char *recur_sess_tier_name(recur_sess_tier_t t);   /* "new", "slot", ... */

typedef struct recur_sess recur_sess_t;
struct recur_sess {
    char     id[129];
    char     model[257];        /* the model id it uses, with ":variant"                      */
    uint64_t serial;            /* unique per record ever made (survives no restart)           */
    uint64_t key;               /* its host key on the workers (unique, >= 1)                  */
    uint64_t created_unix_ms, last_used_unix_ms;
    uint64_t last_used_ms;      /* the caller's clock: LRU and TTL                             */
    /* the conversation: n_consumed tokens in the state, then pending[] not yet consumed    */
    uint64_t n_consumed;
    int32_t *pending;
    size_t   n_pending;
    /* generated text the client was not sent: the stop string that ended the latest turn
     * and whatever followed it in the tokens generated with it. The state has consumed it
     * (the model generated it), so the next turn's text prompt, when it starts with these
     * bytes, continues after them (recur_coord.h "Sessions"). Empty after a turn that did
     * not end on a stop string. At most RECUR_SESS_MAX_UNSENT bytes. */
    uint8_t *unsent;
    size_t   n_unsent;
    /* where the state is */
    int32_t  slot;              /* > 0: in this slot                                           */
    int      host;              /* the host copy under key is current                          */
    uint64_t disk_gen;          /* > 0: a checkpoint of this generation exists                 */
    int      disk_current;      /* the checkpoint is the current state                         */
    uint64_t disk_n_consumed;   /* the checkpoint's conversation                               */
    int32_t *disk_pending;
    size_t   disk_n_pending;
    uint8_t *disk_unsent;
    size_t   disk_n_unsent;
    int      busy;              /* a turn or an operation uses it                              */
    /* private: table links */
    recur_sess_t *h_next, *l_prev, *l_next, *t_prev, *t_next;
    int t_list;
};

typedef struct recur_sessions_config {
    int32_t  max_sessions;      /* records at most (>= 1)                                      */
    int32_t  max_slots;         /* idle sessions kept in slots at most (>= 0; -1: the caller
                                   decides, e.g. from the slots it has)                       */
    uint64_t host_bytes;        /* host memory per rank for host copies (0: no host tier)       */
    uint64_t state_bytes;       /* one host copy on the largest rank (rank 0's shard)           */
    uint64_t ttl_ms;            /* idle sessions older than this are deleted; 0: never         */
} recur_sessions_config_t;

typedef struct recur_sessions recur_sessions_t;

recur_status_t recur_sessions_create(const recur_sessions_config_t *cfg, recur_sessions_t **out);
void recur_sessions_free(recur_sessions_t *t);   /* NULL is a no-op */
const recur_sessions_config_t *recur_sessions_config(const recur_sessions_t *t);
/* The bytes of one host copy (known once the workers said Hello). */
void recur_sessions_set_state_bytes(recur_sessions_t *t, uint64_t state_bytes);
/* Idle sessions in slots (O(1)). */
int32_t recur_sessions_n_slot_idle(const recur_sessions_t *t);
/* The message of the latest failed call. */
const char *recur_sessions_error(const recur_sessions_t *t);

/* Session ids come from clients and name things on the workers' file systems (through
 * checkpoints), so they are held to recur_name_is_safe (common/recur_file.h): 1..128
 * characters of A-Z a-z 0-9 . _ -, not starting with '.' (no '/', never "." or ".."). */
#define RECUR_SESSION_ID_MAX 128
/* RECUR_OK, or RECUR_E_INVAL with "<what> ...: must be ..." in msg (the id shown only as far
 * as it is printable ASCII). what names the field, e.g. "session_id". */
recur_status_t recur_sessions_id_check(const char *id, const char *what, char *msg, size_t msg_n);

recur_sess_t *recur_sessions_find(const recur_sessions_t *t, const char *id);
/* A new record (tier NEW, no state anywhere). RECUR_E_INVAL: id not valid
 * (recur_sessions_id_check), or already there; RECUR_E_BUSY: max_sessions reached;
 * RECUR_E_NOMEM. */
recur_status_t recur_sessions_add(recur_sessions_t *t, const char *id, const char *model, uint64_t now_ms,
                                  uint64_t unix_ms, recur_sess_t **out);
/* Forgets s (the caller has freed its slot, host copy and files). */
void recur_sessions_remove(recur_sessions_t *t, recur_sess_t *s);

/* Most recently used now. */
void recur_sessions_touch(recur_sessions_t *t, recur_sess_t *s, uint64_t now_ms, uint64_t unix_ms);
void recur_sessions_set_busy(recur_sessions_t *t, recur_sess_t *s, int busy);

/* Where the state is (each keeps the per-tier LRU lists and the counts right). */
void recur_sessions_set_slot(recur_sessions_t *t, recur_sess_t *s, int32_t slot);   /* 0: none */
void recur_sessions_set_host(recur_sessions_t *t, recur_sess_t *s, int current);
void recur_sessions_set_disk(recur_sessions_t *t, recur_sess_t *s, uint64_t gen, int current);
recur_sess_tier_t recur_sessions_tier(const recur_sess_t *s);

/* The conversation after a turn: n_consumed += fed, pending := toks[fed..n). toks is the
 * turn's input (the old pending tokens, then the new prompt) and its generated tokens. */
recur_status_t recur_sessions_advance(recur_sess_t *s, const int32_t *toks, size_t n, size_t fed);
/* Copies of the conversation: the checkpoint's record := the live one (after a save), or
 * the live one := the checkpoint's (when the live state was lost). */
recur_status_t recur_sessions_mark_saved(recur_sess_t *s);
recur_status_t recur_sessions_revert_to_disk(recur_sess_t *s);
recur_status_t recur_sessions_set_conversation(recur_sess_t *s, uint64_t n_consumed, const int32_t *pending,
                                               size_t n_pending);
/* The unsent text (copied; n = 0 clears it): after a turn, with the conversation. Like the
 * tokens, mark_saved copies it to the checkpoint's record and revert_to_disk back.
 * RECUR_E_INVAL when n > RECUR_SESS_MAX_UNSENT (nothing changed), RECUR_E_NOMEM. */
#define RECUR_SESS_MAX_UNSENT 1024
recur_status_t recur_sessions_set_unsent(recur_sess_t *s, const uint8_t *bytes, size_t n);

/* Policy queries: the least recently used idle session of a tier (SLOT: in a slot; HOST:
 * with a current host copy and no slot), or NULL. */
recur_sess_t *recur_sessions_lru_idle(const recur_sessions_t *t, recur_sess_tier_t tier);
/* An idle session last used before now_ms - ttl_ms, or NULL (none, or no TTL). */
recur_sess_t *recur_sessions_expired(const recur_sessions_t *t, uint64_t now_ms);
/* 1 when one more host copy fits in host_bytes. */
int recur_sessions_host_room(const recur_sessions_t *t);
/* The sessions, most recently used first (NULL after the last). */
recur_sess_t *recur_sessions_first(const recur_sessions_t *t);
recur_sess_t *recur_sessions_next(const recur_sess_t *s);

typedef struct recur_sessions_stats {
    int32_t  n_sessions, n_slot, n_slot_idle, n_host, n_disk_only, n_new, n_busy;
    uint64_t host_bytes_used;
} recur_sessions_stats_t;
void recur_sessions_get_stats(const recur_sessions_t *t, recur_sessions_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif
