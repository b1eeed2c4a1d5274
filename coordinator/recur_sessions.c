/* recur_sessions.c: see recur_sessions.h.
 *
 * Records sit in a chained hash table by id, on one list of every session by last use
 * (oldest first: expiry looks at the head) and, while idle with their state in a slot or in
 * host memory only, on that tier's list, also oldest first (eviction takes the head). */
#include "recur_sessions.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_file.h"

enum { TL_NONE = 0, TL_SLOT = 1, TL_HOST = 2 };

typedef struct dlist { recur_sess_t *head, *tail; } dlist_t;

struct recur_sessions {
    recur_sessions_config_t cfg;
    char err[320];
    recur_sess_t **bucket;
    size_t n_bucket;            /* a power of two */
    int32_t n;
    dlist_t all;                /* l_prev / l_next, by last use, oldest first */
    dlist_t tier[3];            /* t_prev / t_next: TL_SLOT, TL_HOST */
    int32_t n_slot, n_host, n_tier[3];
    uint64_t next_serial, next_key;
};

static void set_err(recur_sessions_t *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void set_err(recur_sessions_t *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof t->err, fmt, ap);
    va_end(ap);
}

const char *recur_sess_tier_name(recur_sess_tier_t tier) {
    switch (tier) {
    case RECUR_SESS_NEW: return "new";
    case RECUR_SESS_SLOT: return "slot";
    case RECUR_SESS_HOST: return "host";
    case RECUR_SESS_DISK: return "disk";
    default: return "lost";
    }
}

static uint64_t hash_id(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

recur_status_t recur_sessions_create(const recur_sessions_config_t *cfg, recur_sessions_t **out) {
    *out = NULL;
    if (!cfg || cfg->max_sessions < 1 || cfg->max_slots < -1) return RECUR_E_INVAL;
    recur_sessions_t *t = calloc(1, sizeof *t);
    if (!t) return RECUR_E_NOMEM;
    t->cfg = *cfg;
    t->n_bucket = 64;
    while (t->n_bucket < (size_t)cfg->max_sessions && t->n_bucket < ((size_t)1 << 20)) t->n_bucket *= 2;
    t->bucket = calloc(t->n_bucket, sizeof *t->bucket);
    if (!t->bucket) {
        free(t);
        return RECUR_E_NOMEM;
    }
    t->next_serial = t->next_key = 1;
    *out = t;
    return RECUR_OK;
}

static void rec_free(recur_sess_t *s) {
    free(s->pending);
    free(s->disk_pending);
    free(s->unsent);
    free(s->disk_unsent);
    free(s);
}

void recur_sessions_free(recur_sessions_t *t) {
    if (!t) return;
    for (recur_sess_t *s = t->all.head, *n; s; s = n) {
        n = s->l_next;
        rec_free(s);
    }
    free(t->bucket);
    free(t);
}

const recur_sessions_config_t *recur_sessions_config(const recur_sessions_t *t) { return &t->cfg; }
const char *recur_sessions_error(const recur_sessions_t *t) { return t->err; }
void recur_sessions_set_state_bytes(recur_sessions_t *t, uint64_t state_bytes) { t->cfg.state_bytes = state_bytes; }
int32_t recur_sessions_n_slot_idle(const recur_sessions_t *t) { return t->n_tier[TL_SLOT]; }

recur_sess_t *recur_sessions_find(const recur_sessions_t *t, const char *id) {
    if (!id) return NULL;
    for (recur_sess_t *s = t->bucket[hash_id(id) & (t->n_bucket - 1)]; s; s = s->h_next)
        if (!strcmp(s->id, id)) return s;
    return NULL;
}

/* ---- lists */

#define LIST_REMOVE(L, s, P, N) do { \
    if ((s)->P) (s)->P->N = (s)->N; else (L)->head = (s)->N; \
    if ((s)->N) (s)->N->P = (s)->P; else (L)->tail = (s)->P; \
    (s)->P = (s)->N = NULL; } while (0)

/* Inserts s into L by last_used_ms (oldest first); usually at the tail. */
#define LIST_INSERT(L, s, P, N) do { \
    recur_sess_t *a_ = (L)->tail; \
    while (a_ && a_->last_used_ms > (s)->last_used_ms) a_ = a_->P; \
    (s)->P = a_; (s)->N = a_ ? a_->N : (L)->head; \
    if ((s)->N) (s)->N->P = (s); else (L)->tail = (s); \
    if (a_) a_->N = (s); else (L)->head = (s); } while (0)

/* Puts s on the tier list its state calls for. */
static void relist(recur_sessions_t *t, recur_sess_t *s) {
    if (s->t_list) {
        LIST_REMOVE(&t->tier[s->t_list], s, t_prev, t_next);
        t->n_tier[s->t_list]--;
    }
    s->t_list = TL_NONE;
    if (s->busy) return;
    if (s->slot > 0) s->t_list = TL_SLOT;
    else if (s->host) s->t_list = TL_HOST;
    if (s->t_list) {
        LIST_INSERT(&t->tier[s->t_list], s, t_prev, t_next);
        t->n_tier[s->t_list]++;
    }
}

recur_status_t recur_sessions_id_check(const char *id, const char *what, char *msg, size_t msg_n) {
    if (recur_name_is_safe(id, RECUR_SESSION_ID_MAX)) return RECUR_OK;
    char shown[80];
    size_t n = id ? strlen(id) : 0;
    if (msg && msg_n)
        snprintf(msg, msg_n, "%s \"%s\" (%zu bytes): must be 1 to %d characters of A-Z a-z 0-9 . _ - and not start "
                 "with '.'", what ? what : "session id", recur_name_printable(id, 40, shown, sizeof shown), n,
                 RECUR_SESSION_ID_MAX);
    return RECUR_E_INVAL;
}

recur_status_t recur_sessions_add(recur_sessions_t *t, const char *id, const char *model, uint64_t now_ms,
                                  uint64_t unix_ms, recur_sess_t **out) {
    *out = NULL;
    char why[256];
    if (recur_sessions_id_check(id, "session id", why, sizeof why) != RECUR_OK) {
        set_err(t, "%s", why);
        return RECUR_E_INVAL;
    }
    if (recur_sessions_find(t, id)) {
        set_err(t, "session '%s' already exists", id);
        return RECUR_E_INVAL;
    }
    if (t->n >= t->cfg.max_sessions) {
        set_err(t, "too many sessions (%d, the limit): delete some or let them expire", (int)t->n);
        return RECUR_E_BUSY;
    }
    recur_sess_t *s = calloc(1, sizeof *s);
    if (!s) {
        set_err(t, "out of memory");
        return RECUR_E_NOMEM;
    }
    snprintf(s->id, sizeof s->id, "%s", id);
    snprintf(s->model, sizeof s->model, "%s", model ? model : "");
    s->serial = t->next_serial++;
    s->key = t->next_key++;
    s->created_unix_ms = s->last_used_unix_ms = unix_ms;
    s->last_used_ms = now_ms;
    size_t b = hash_id(id) & (t->n_bucket - 1);
    s->h_next = t->bucket[b];
    t->bucket[b] = s;
    LIST_INSERT(&t->all, s, l_prev, l_next);
    t->n++;
    *out = s;
    return RECUR_OK;
}

void recur_sessions_remove(recur_sessions_t *t, recur_sess_t *s) {
    recur_sess_t **pp = &t->bucket[hash_id(s->id) & (t->n_bucket - 1)];
    while (*pp && *pp != s) pp = &(*pp)->h_next;
    if (*pp) *pp = s->h_next;
    LIST_REMOVE(&t->all, s, l_prev, l_next);
    if (s->t_list) {
        LIST_REMOVE(&t->tier[s->t_list], s, t_prev, t_next);
        t->n_tier[s->t_list]--;
    }
    if (s->slot > 0) t->n_slot--;
    if (s->host) t->n_host--;
    t->n--;
    rec_free(s);
}

void recur_sessions_touch(recur_sessions_t *t, recur_sess_t *s, uint64_t now_ms, uint64_t unix_ms) {
    LIST_REMOVE(&t->all, s, l_prev, l_next);
    if (now_ms > s->last_used_ms) s->last_used_ms = now_ms;
    s->last_used_unix_ms = unix_ms;
    LIST_INSERT(&t->all, s, l_prev, l_next);
    relist(t, s);
}

void recur_sessions_set_busy(recur_sessions_t *t, recur_sess_t *s, int busy) {
    s->busy = busy != 0;
    relist(t, s);
}

void recur_sessions_set_slot(recur_sessions_t *t, recur_sess_t *s, int32_t slot) {
    t->n_slot += (slot > 0) - (s->slot > 0);
    s->slot = slot > 0 ? slot : 0;
    relist(t, s);
}

void recur_sessions_set_host(recur_sessions_t *t, recur_sess_t *s, int current) {
    t->n_host += (current != 0) - (s->host != 0);
    s->host = current != 0;
    relist(t, s);
}

void recur_sessions_set_disk(recur_sessions_t *t, recur_sess_t *s, uint64_t gen, int current) {
    (void)t;
    s->disk_gen = gen;
    s->disk_current = gen > 0 && current;
}

recur_sess_tier_t recur_sessions_tier(const recur_sess_t *s) {
    if (s->slot > 0) return RECUR_SESS_SLOT;
    if (s->host) return RECUR_SESS_HOST;
    if (s->disk_current) return RECUR_SESS_DISK;
    if (s->n_consumed == 0 && s->n_pending == 0) return RECUR_SESS_NEW;
    return RECUR_SESS_LOST;
}

/* ---- the conversation */

static recur_status_t set_tokens(int32_t **dst, size_t *n_dst, const int32_t *src, size_t n) {
    int32_t *p = NULL;
    if (n) {
        p = malloc(n * sizeof *p);
        if (!p) return RECUR_E_NOMEM;
        memcpy(p, src, n * sizeof *p);
    }
    free(*dst);
    *dst = p;
    *n_dst = n;
    return RECUR_OK;
}

static recur_status_t set_bytes(uint8_t **dst, size_t *n_dst, const uint8_t *src, size_t n) {
    uint8_t *p = NULL;
    if (n) {
        p = malloc(n);
        if (!p) return RECUR_E_NOMEM;
        memcpy(p, src, n);
    }
    free(*dst);
    *dst = p;
    *n_dst = n;
    return RECUR_OK;
}

recur_status_t recur_sessions_set_unsent(recur_sess_t *s, const uint8_t *bytes, size_t n) {
    if (n > RECUR_SESS_MAX_UNSENT) return RECUR_E_INVAL;
    return set_bytes(&s->unsent, &s->n_unsent, bytes, n);
}

recur_status_t recur_sessions_advance(recur_sess_t *s, const int32_t *toks, size_t n, size_t fed) {
    if (fed > n) return RECUR_E_INVAL;
    if (set_tokens(&s->pending, &s->n_pending, toks + fed, n - fed) != RECUR_OK) return RECUR_E_NOMEM;
    s->n_consumed += fed;
    return RECUR_OK;
}

recur_status_t recur_sessions_mark_saved(recur_sess_t *s) {
    if (set_tokens(&s->disk_pending, &s->disk_n_pending, s->pending, s->n_pending) != RECUR_OK ||
        set_bytes(&s->disk_unsent, &s->disk_n_unsent, s->unsent, s->n_unsent) != RECUR_OK)
        return RECUR_E_NOMEM;
    s->disk_n_consumed = s->n_consumed;
    return RECUR_OK;
}

recur_status_t recur_sessions_revert_to_disk(recur_sess_t *s) {
    if (!s->disk_gen) return RECUR_E_INVAL;
    if (set_tokens(&s->pending, &s->n_pending, s->disk_pending, s->disk_n_pending) != RECUR_OK ||
        set_bytes(&s->unsent, &s->n_unsent, s->disk_unsent, s->disk_n_unsent) != RECUR_OK)
        return RECUR_E_NOMEM;
    s->n_consumed = s->disk_n_consumed;
    s->disk_current = 1;
    return RECUR_OK;
}

recur_status_t recur_sessions_set_conversation(recur_sess_t *s, uint64_t n_consumed, const int32_t *pending,
                                               size_t n_pending) {
    if (set_tokens(&s->pending, &s->n_pending, pending, n_pending) != RECUR_OK) return RECUR_E_NOMEM;
    s->n_consumed = n_consumed;
    return RECUR_OK;
}

/* ---- policy queries */

recur_sess_t *recur_sessions_lru_idle(const recur_sessions_t *t, recur_sess_tier_t tier) {
    if (tier == RECUR_SESS_SLOT) return t->tier[TL_SLOT].head;
    if (tier == RECUR_SESS_HOST) return t->tier[TL_HOST].head;
    return NULL;
}

recur_sess_t *recur_sessions_expired(const recur_sessions_t *t, uint64_t now_ms) {
    if (!t->cfg.ttl_ms) return NULL;
    for (recur_sess_t *s = t->all.head; s && s->last_used_ms + t->cfg.ttl_ms <= now_ms; s = s->l_next)
        if (!s->busy) return s;
    return NULL;
}

int recur_sessions_host_room(const recur_sessions_t *t) {
    return t->cfg.state_bytes > 0 && (uint64_t)(t->n_host + 1) * t->cfg.state_bytes <= t->cfg.host_bytes;
}

recur_sess_t *recur_sessions_first(const recur_sessions_t *t) { return t->all.tail; }
recur_sess_t *recur_sessions_next(const recur_sess_t *s) { return s->l_prev; }

void recur_sessions_get_stats(const recur_sessions_t *t, recur_sessions_stats_t *st) {
    memset(st, 0, sizeof *st);
    st->n_sessions = t->n;
    st->n_slot = t->n_slot;
    st->n_host = t->n_host;
    st->host_bytes_used = (uint64_t)t->n_host * t->cfg.state_bytes;
    st->n_slot_idle = t->n_tier[TL_SLOT];
    for (const recur_sess_t *s = t->all.head; s; s = s->l_next) {
        recur_sess_tier_t tier = recur_sessions_tier(s);
        st->n_disk_only += tier == RECUR_SESS_DISK;
        st->n_new += tier == RECUR_SESS_NEW;
        st->n_busy += s->busy != 0;
    }
}
