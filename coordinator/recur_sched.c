/* recur_sched.c: continuous-batching scheduler (see recur_sched.h for the policy).
 *
 * Data structures, chosen so that a plan + complete at batch 256 costs a few microseconds:
 *   - requests: one malloc each (record + prompt + stop ids), freed when they finish;
 *   - an id -> request map (open addressing, backward-shift deletion) sized at create for
 *     every request that can be alive at once (max_queue waiting + n_slots - 1 running), so
 *     cancel/finish and the per-sequence lookups in complete are O(1) and never allocate;
 *   - waiting requests on two intrusive lists: by (priority desc, arrival), for admission,
 *     and by arrival only, for the queue timeout (the oldest is at its head);
 *   - admitted requests on two intrusive lists: prefill (admission order) and decode
 *     (circular, for round-robin when more are decoding than max_batch);
 *   - the plan's arrays and the free-slot stack are sized at create; the event ring grows
 *     by doubling only when the caller lets events pile up. */
#include "recur_sched.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_log.h"

typedef enum req_state { REQ_WAITING = 0, REQ_PREFILL = 1, REQ_DECODE = 2 } req_state_t;

typedef struct req req_t;
struct req {
    uint64_t id;
    void    *cookie;
    int32_t *prompt;            /* [n_prompt], in the same allocation as the record */
    int32_t *stop;              /* [n_stop], likewise                               */
    int32_t  n_prompt, n_stop;
    int32_t  n_prefilled;       /* prompt tokens already planned                    */
    int32_t  max_tokens, n_gen;
    int32_t  last_token;        /* the input of the next decode step                */
    int32_t  priority;
    int32_t  ignore_eos;
    int32_t  slot;              /* 0 while waiting (unless pinned)                  */
    int32_t  pinned;            /* slot was the caller's (request.slot > 0)         */
    int32_t  keep_slot;         /* the slot goes back to the caller at the end      */
    int32_t  reset_pending;     /* the slot is not yet reset for this request       */
    int32_t  n_fed;             /* tokens put into plans for this request's slot     */
    int32_t  split_at;          /* a prefill chunk ends here (0: none)              */
    req_state_t state;
    uint64_t submit_ms;
    recur_sample_row_t sampling;
    req_t *q_prev, *q_next;     /* waiting: priority list; admitted: prefill/decode list */
    req_t *a_prev, *a_next;     /* waiting: arrival list                            */
};

typedef struct req_list { req_t *head, *tail; } req_list_t;

/* Who has a slot: the free stack, a request the scheduler admitted, or the caller
 * (recur_sched_slot_take / keep_slot), idle or in use by a pinned request. */
enum { SLOT_FREE = 0, SLOT_REQ = 1, SLOT_CALLER = 2, SLOT_CALLER_BUSY = 3 };

struct recur_sched {
    recur_sched_config_t cfg;
    char err[256];

    /* id map */
    req_t  **map;
    uint64_t map_mask;
    uint64_t next_id;

    req_list_t waitq;           /* priority desc, then arrival (need a free slot)   */
    req_list_t pinq;            /* likewise, requests on a caller's slot            */
    req_list_t arrivals;        /* arrival order (q via a_prev/a_next)              */
    int32_t    n_waiting;
    req_list_t prefill;         /* admitted, prompt not fully planned               */
    req_t     *decode_head;     /* circular list via q_prev/q_next                  */
    int32_t    n_decode, n_running;

    int32_t *free_slots;        /* stack of free slot ids                           */
    int32_t  n_free;
    uint8_t *slot_state;        /* [n_slots] SLOT_FREE / SLOT_REQ / SLOT_CALLER / SLOT_CALLER_BUSY */
    int32_t  n_caller;          /* slots the caller holds (idle or busy)             */
    uint64_t *p_reset_id;       /* [nb] the request of each reset slot              */

    /* the plan in flight */
    int       in_flight;
    uint64_t  step;
    int32_t  *p_slot, *p_seq_len, *p_tokens, *p_reset;
    uint8_t  *p_split;
    uint8_t  *p_sample;
    uint64_t *p_id;
    recur_sample_row_t *p_rows;
    recur_sched_plan_t  plan;

    /* events: a ring */
    recur_sched_event_t *ev;
    size_t ev_cap, ev_head, ev_n;

    recur_sched_stats_t st;
};

static void set_err(recur_sched_t *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void set_err(recur_sched_t *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    recur_log_debug("sched: %s", s->err);
}

const char *recur_sched_reason_str(recur_sched_reason_t r) {
    switch (r) {
    case RECUR_SCHED_STOP: return "stop";
    case RECUR_SCHED_LENGTH: return "length";
    case RECUR_SCHED_CANCELLED: return "cancelled";
    case RECUR_SCHED_ERROR: return "error";
    case RECUR_SCHED_TIMEOUT: return "timeout";
    default: return "unknown";
    }
}

recur_sched_config_t recur_sched_default_config(void) {
    recur_sched_config_t c;
    memset(&c, 0, sizeof c);
    c.n_slots = 257;
    c.max_batch = 256;
    c.token_budget = 2048;
    c.max_queue = 4096;
    c.queue_timeout_ms = 60000;
    c.prefill_chunk_max = 512;
    c.max_prompt = 0;
    c.n_vocab = 0;
    c.eos_id = -1;
    return c;
}

/* ---------------------------------------------------------------- id map */

static uint64_t map_hash(uint64_t id) { return id * 0x9E3779B97F4A7C15ull; }

static req_t *map_get(const recur_sched_t *s, uint64_t id) {
    for (uint64_t i = map_hash(id) & s->map_mask;; i = (i + 1) & s->map_mask) {
        req_t *r = s->map[i];
        if (!r) return NULL;
        if (r->id == id) return r;
    }
}

static void map_put(recur_sched_t *s, req_t *r) {
    uint64_t i = map_hash(r->id) & s->map_mask;
    while (s->map[i]) i = (i + 1) & s->map_mask;
    s->map[i] = r;
}

/* Backward-shift deletion: keeps every probe chain unbroken without tombstones, so the
 * map never degrades however many requests pass through it. */
static void map_del(recur_sched_t *s, uint64_t id) {
    uint64_t i = map_hash(id) & s->map_mask;
    while (s->map[i]->id != id) i = (i + 1) & s->map_mask;
    uint64_t j = i;
    for (;;) {
        s->map[i] = NULL;
        for (;;) {
            j = (j + 1) & s->map_mask;
            if (!s->map[j]) return;
            uint64_t k = map_hash(s->map[j]->id) & s->map_mask;
            /* move map[j] to the hole at i unless its home k lies cyclically in (i, j] */
            if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
            break;
        }
        s->map[i] = s->map[j];
        i = j;
    }
}

/* ---------------------------------------------------------------- lists */

static void list_push_tail_q(req_list_t *l, req_t *r) {
    r->q_next = NULL;
    r->q_prev = l->tail;
    if (l->tail) l->tail->q_next = r; else l->head = r;
    l->tail = r;
}

static void list_remove_q(req_list_t *l, req_t *r) {
    if (r->q_prev) r->q_prev->q_next = r->q_next; else l->head = r->q_next;
    if (r->q_next) r->q_next->q_prev = r->q_prev; else l->tail = r->q_prev;
    r->q_prev = r->q_next = NULL;
}

static void list_push_tail_a(req_list_t *l, req_t *r) {
    r->a_next = NULL;
    r->a_prev = l->tail;
    if (l->tail) l->tail->a_next = r; else l->head = r;
    l->tail = r;
}

static void list_remove_a(req_list_t *l, req_t *r) {
    if (r->a_prev) r->a_prev->a_next = r->a_next; else l->head = r->a_next;
    if (r->a_next) r->a_next->a_prev = r->a_prev; else l->tail = r->a_prev;
    r->a_prev = r->a_next = NULL;
}

/* The priority queue: after the last request of priority >= r's, found from the tail, so
 * the common case (one priority) is O(1). */
static void waitq_insert(req_list_t *q, req_t *r) {
    req_t *after = q->tail;
    while (after && after->priority < r->priority) after = after->q_prev;
    r->q_prev = after;
    r->q_next = after ? after->q_next : q->head;
    if (r->q_next) r->q_next->q_prev = r; else q->tail = r;
    if (after) after->q_next = r; else q->head = r;
}

static void decode_insert(recur_sched_t *s, req_t *r) {
    /* at the tail of the round: just before the head */
    if (!s->decode_head) {
        r->q_next = r->q_prev = r;
        s->decode_head = r;
    } else {
        req_t *h = s->decode_head;
        r->q_next = h;
        r->q_prev = h->q_prev;
        h->q_prev->q_next = r;
        h->q_prev = r;
    }
    s->n_decode++;
}

static void decode_remove(recur_sched_t *s, req_t *r) {
    if (r->q_next == r) {
        s->decode_head = NULL;
    } else {
        r->q_prev->q_next = r->q_next;
        r->q_next->q_prev = r->q_prev;
        if (s->decode_head == r) s->decode_head = r->q_next;
    }
    r->q_next = r->q_prev = NULL;
    s->n_decode--;
}

/* ---------------------------------------------------------------- events */

/* Makes room for k more events before anything changes, so no call is left half done by
 * a failed allocation. */
static recur_status_t ev_reserve(recur_sched_t *s, size_t k) {
    if (s->ev_n + k <= s->ev_cap) return RECUR_OK;
    size_t cap = s->ev_cap ? s->ev_cap : 64;
    while (cap < s->ev_n + k) cap *= 2;
    recur_sched_event_t *ev = malloc(cap * sizeof *ev);
    if (!ev) {
        set_err(s, "out of memory growing the event queue to %zu events", cap);
        return RECUR_E_NOMEM;
    }
    for (size_t i = 0; i < s->ev_n; i++) ev[i] = s->ev[(s->ev_head + i) % s->ev_cap];
    free(s->ev);
    s->ev = ev;
    s->ev_cap = cap;
    s->ev_head = 0;
    return RECUR_OK;
}

static recur_sched_event_t *ev_push(recur_sched_t *s, recur_sched_event_type_t type, const req_t *r) {
    RECUR_ASSERT(s->ev_n < s->ev_cap);   /* ev_reserve ran first */
    recur_sched_event_t *e = &s->ev[(s->ev_head + s->ev_n) % s->ev_cap];
    s->ev_n++;
    e->type = type;
    e->id = r->id;
    e->cookie = r->cookie;
    e->token = -1;
    e->index = -1;
    e->ttft_ms = 0;
    e->reason = RECUR_SCHED_STOP;
    e->prompt_tokens = r->n_prompt;
    e->completion_tokens = r->n_gen;
    e->message[0] = '\0';
    return e;
}

int recur_sched_next_event(recur_sched_t *s, recur_sched_event_t *ev) {
    if (!s->ev_n) return 0;
    *ev = s->ev[s->ev_head];
    s->ev_head = (s->ev_head + 1) % s->ev_cap;
    s->ev_n--;
    return 1;
}

/* ---------------------------------------------------------------- lifecycle */

recur_status_t recur_sched_create(const recur_sched_config_t *cfg, recur_sched_t **out) {
    *out = NULL;
    const recur_sched_config_t *c = cfg;
    const char *bad = NULL;
    if (c->n_slots < 2) bad = "n_slots must be >= 2 (slot 0 is padding)";
    else if (c->max_batch < 1) bad = "max_batch must be >= 1";
    else if (c->token_budget < 1) bad = "token_budget must be >= 1";
    else if (c->max_queue < 1) bad = "max_queue must be >= 1";
    else if (c->prefill_chunk_max < 0) bad = "prefill_chunk_max must be >= 0";
    else if (c->max_prompt < 0) bad = "max_prompt must be >= 0";
    else if (c->n_vocab < 0) bad = "n_vocab must be >= 0";
    else if (c->eos_id < -1 || (c->n_vocab && c->eos_id >= c->n_vocab)) bad = "eos_id must be -1 or a token id";
    if (bad) {
        recur_log_err("scheduler config: %s", bad);
        return RECUR_E_INVAL;
    }
    recur_sched_t *s = calloc(1, sizeof *s);
    if (!s) return RECUR_E_NOMEM;
    s->cfg = *c;
    if (!s->cfg.prefill_chunk_max || s->cfg.prefill_chunk_max > s->cfg.token_budget)
        s->cfg.prefill_chunk_max = s->cfg.token_budget;
    s->next_id = 1;

    uint64_t live = (uint64_t)c->max_queue + (uint64_t)c->n_slots;
    uint64_t cap = 16;
    while (cap < 2 * live) cap *= 2;   /* load factor <= 1/2 */
    s->map = calloc(cap, sizeof *s->map);
    s->map_mask = cap - 1;

    int32_t nb = c->max_batch < c->n_slots - 1 ? c->max_batch : c->n_slots - 1;
    s->free_slots = malloc((size_t)c->n_slots * sizeof *s->free_slots);
    s->p_slot = malloc((size_t)nb * sizeof *s->p_slot);
    s->p_seq_len = malloc((size_t)nb * sizeof *s->p_seq_len);
    s->p_reset = malloc((size_t)nb * sizeof *s->p_reset);
    s->p_reset_id = malloc((size_t)nb * sizeof *s->p_reset_id);
    s->p_split = malloc((size_t)nb);
    s->slot_state = calloc((size_t)c->n_slots, 1);
    s->p_tokens = malloc((size_t)c->token_budget * sizeof *s->p_tokens);
    s->p_sample = malloc((size_t)nb);
    s->p_id = malloc((size_t)nb * sizeof *s->p_id);
    s->p_rows = malloc((size_t)nb * sizeof *s->p_rows);
    if (!s->map || !s->free_slots || !s->p_slot || !s->p_seq_len || !s->p_reset || !s->p_reset_id || !s->slot_state ||
        !s->p_split ||
        !s->p_tokens || !s->p_sample ||
        !s->p_id || !s->p_rows || ev_reserve(s, (size_t)nb * 3 + 64) != RECUR_OK) {
        recur_sched_free(s);
        return RECUR_E_NOMEM;
    }
    /* Pushed highest first, so slot 1 is handed out first (plans read naturally in tests). */
    for (int32_t i = c->n_slots - 1; i >= 1; i--) s->free_slots[s->n_free++] = i;
    s->st.slots_total = c->n_slots - 1;
    *out = s;
    return RECUR_OK;
}

void recur_sched_free(recur_sched_t *s) {
    if (!s) return;
    if (s->map)
        for (uint64_t i = 0; i <= s->map_mask; i++) free(s->map[i]);
    free(s->map);
    free(s->free_slots);
    free(s->p_slot);
    free(s->p_seq_len);
    free(s->p_reset);
    free(s->p_reset_id);
    free(s->p_split);
    free(s->slot_state);
    free(s->p_tokens);
    free(s->p_sample);
    free(s->p_id);
    free(s->p_rows);
    free(s->ev);
    free(s);
}

const char *recur_sched_error(const recur_sched_t *s) { return s->err; }

/* ---------------------------------------------------------------- submit */

static int bad_float(float x) { return !isfinite(x); }

recur_status_t recur_sched_submit(recur_sched_t *s, const recur_sched_request_t *r, uint64_t now_ms, uint64_t *id) {
    const recur_sched_config_t *c = &s->cfg;
    if (id) *id = 0;
    if (s->n_waiting >= c->max_queue) {
        set_err(s, "queue full (%d waiting)", (int)s->n_waiting);
        return RECUR_E_BUSY;
    }
    if (!r->prompt || r->n_prompt < 1) {
        set_err(s, "empty prompt");
        return RECUR_E_INVAL;
    }
    if (c->max_prompt && r->n_prompt > c->max_prompt) {
        set_err(s, "prompt of %d tokens is longer than the limit of %d", (int)r->n_prompt, (int)c->max_prompt);
        return RECUR_E_INVAL;
    }
    for (int32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || (c->n_vocab && r->prompt[i] >= c->n_vocab)) {
            set_err(s, "prompt token %d at position %d is not a token id (vocabulary of %d)", (int)r->prompt[i], (int)i,
                    (int)c->n_vocab);
            return RECUR_E_INVAL;
        }
    if (r->max_tokens < 1) {
        set_err(s, "max_tokens must be >= 1 (got %d)", (int)r->max_tokens);
        return RECUR_E_INVAL;
    }
    const recur_sample_row_t *p = &r->sampling;
    if (bad_float(p->temperature) || p->temperature < 0) {
        set_err(s, "temperature must be a finite number >= 0 (got %g)", (double)p->temperature);
        return RECUR_E_INVAL;
    }
    if (p->top_k < 0) {
        set_err(s, "top_k must be >= 0 (0: off; got %d)", (int)p->top_k);
        return RECUR_E_INVAL;
    }
    if (isnan(p->top_p) || p->top_p <= 0) {
        set_err(s, "top_p must be > 0 (>= 1: off; got %g)", (double)p->top_p);
        return RECUR_E_INVAL;
    }
    if (bad_float(p->min_p) || p->min_p < 0 || p->min_p > 1) {
        set_err(s, "min_p must be in [0, 1] (got %g)", (double)p->min_p);
        return RECUR_E_INVAL;
    }
    if (r->n_stop < 0 || (r->n_stop > 0 && !r->stop_ids)) {
        set_err(s, "bad stop token list (%d ids)", (int)r->n_stop);
        return RECUR_E_INVAL;
    }
    for (int32_t i = 0; i < r->n_stop; i++)
        if (r->stop_ids[i] < 0 || (c->n_vocab && r->stop_ids[i] >= c->n_vocab)) {
            set_err(s, "stop token %d is not a token id", (int)r->stop_ids[i]);
            return RECUR_E_INVAL;
        }
    if (r->split_at < 0 || r->split_at > r->n_prompt) {
        set_err(s, "split_at %d is outside the prompt of %d tokens", (int)r->split_at, (int)r->n_prompt);
        return RECUR_E_INVAL;
    }
    if (r->slot < 0 || r->slot >= c->n_slots || (r->slot > 0 && s->slot_state[r->slot] != SLOT_CALLER)) {
        set_err(s, "slot %d is not a slot the caller holds idle (recur_sched_slot_take, keep_slot)", (int)r->slot);
        return RECUR_E_INVAL;
    }

    size_t n = sizeof(req_t) + ((size_t)r->n_prompt + (size_t)r->n_stop) * sizeof(int32_t);
    req_t *q = malloc(n);
    if (!q) {
        set_err(s, "out of memory queueing a prompt of %d tokens", (int)r->n_prompt);
        return RECUR_E_NOMEM;
    }
    memset(q, 0, sizeof *q);
    q->prompt = (int32_t *)(q + 1);
    q->stop = q->prompt + r->n_prompt;
    memcpy(q->prompt, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
    if (r->n_stop) memcpy(q->stop, r->stop_ids, (size_t)r->n_stop * sizeof(int32_t));
    q->n_prompt = r->n_prompt;
    q->n_stop = r->n_stop;
    q->max_tokens = r->max_tokens;
    q->priority = r->priority;
    q->ignore_eos = r->ignore_eos;
    q->cookie = r->cookie;
    q->sampling = r->sampling;
    q->submit_ms = now_ms;
    q->state = REQ_WAITING;
    q->id = s->next_id++;
    q->keep_slot = r->keep_slot != 0;
    q->split_at = r->split_at;
    if (r->slot > 0) {   /* the caller's slot, used as it is: no reset */
        q->slot = r->slot, q->pinned = 1;
        s->slot_state[r->slot] = SLOT_CALLER_BUSY;
    }

    map_put(s, q);
    waitq_insert(q->pinned ? &s->pinq : &s->waitq, q);
    list_push_tail_a(&s->arrivals, q);
    s->n_waiting++;
    s->st.submitted++;
    if (id) *id = q->id;
    return RECUR_OK;
}

/* ---------------------------------------------------------------- ending requests */

/* Unlinks r from wherever it is, frees its slot, queues FINISHED (after ERROR with msg when
 * given) and frees it. The caller reserved the events. */
static void end_request(recur_sched_t *s, req_t *r, recur_sched_reason_t reason, const char *msg) {
    switch (r->state) {
    case REQ_WAITING:
        list_remove_q(r->pinned ? &s->pinq : &s->waitq, r);
        list_remove_a(&s->arrivals, r);
        s->n_waiting--;
        break;
    case REQ_PREFILL:
        list_remove_q(&s->prefill, r);
        break;
    case REQ_DECODE:
        decode_remove(s, r);
        break;
    }
    int32_t kept = 0;
    if (r->slot) {
        if (r->state != REQ_WAITING) s->n_running--;
        /* back to the caller, with whatever state the plans left in it; a slot assigned at
         * admission that no plan used yet holds nothing of the request's: it is freed */
        if (r->keep_slot && (r->pinned || r->n_fed > 0)) {
            if (!r->pinned) s->n_caller++;
            s->slot_state[r->slot] = SLOT_CALLER;
            kept = r->slot;
        } else {
            /* Free at once; whoever gets it next has it reset by the plan that first runs it. */
            if (r->pinned) s->n_caller--;
            s->slot_state[r->slot] = SLOT_FREE;
            s->free_slots[s->n_free++] = r->slot;
        }
    }
    if (msg) {
        recur_sched_event_t *e = ev_push(s, RECUR_SCHED_EV_ERROR, r);
        snprintf(e->message, sizeof e->message, "%s", msg);
    }
    recur_sched_event_t *e = ev_push(s, RECUR_SCHED_EV_FINISHED, r);
    e->reason = reason;
    e->slot = kept;
    e->fed = r->n_fed;
    s->st.finished[reason]++;
    map_del(s, r->id);
    free(r);
}

recur_status_t recur_sched_finish(recur_sched_t *s, uint64_t id, recur_sched_reason_t reason) {
    if (reason != RECUR_SCHED_STOP && reason != RECUR_SCHED_LENGTH && reason != RECUR_SCHED_CANCELLED) {
        set_err(s, "finish reason must be stop, length or cancelled (got %s)", recur_sched_reason_str(reason));
        return RECUR_E_INVAL;
    }
    req_t *r = map_get(s, id);
    if (!r) {
        set_err(s, "no request %llu (finished or never submitted)", (unsigned long long)id);
        return RECUR_E_INVAL;
    }
    RECUR_TRY(ev_reserve(s, 1));
    end_request(s, r, reason, NULL);
    return RECUR_OK;
}

recur_status_t recur_sched_cancel(recur_sched_t *s, uint64_t id) {
    return recur_sched_finish(s, id, RECUR_SCHED_CANCELLED);
}

/* ---------------------------------------------------------------- plan */

recur_status_t recur_sched_plan(recur_sched_t *s, uint64_t now_ms, recur_sched_plan_t *plan) {
    const recur_sched_config_t *c = &s->cfg;
    memset(plan, 0, sizeof *plan);
    if (s->in_flight) {
        set_err(s, "step %llu is in flight: complete it before planning the next",
                (unsigned long long)s->step);
        return RECUR_E_INVAL;
    }
    /* 1. queue timeout: the arrival list's head is the oldest waiting request */
    if (c->queue_timeout_ms) {
        size_t n_exp = 0;
        for (req_t *r = s->arrivals.head; r && now_ms >= r->submit_ms + c->queue_timeout_ms; r = r->a_next) n_exp++;
        RECUR_TRY(ev_reserve(s, 2 * n_exp));
        while (s->arrivals.head && now_ms >= s->arrivals.head->submit_ms + c->queue_timeout_ms) {
            req_t *r = s->arrivals.head;
            char msg[128];
            snprintf(msg, sizeof msg, "queued %llu ms without a free slot (queue_timeout_ms %u)",
                     (unsigned long long)(now_ms - r->submit_ms), (unsigned)c->queue_timeout_ms);
            end_request(s, r, RECUR_SCHED_TIMEOUT, msg);
        }
    }
    /* 2. admission, up to min(max_batch, token_budget) running requests: then every running
     *    sequence fits in each step (decode ones take one token each) and, while any prompt is
     *    prefilling, decode leaves at least one token and one sequence of the step to the
     *    oldest prefill, so an admitted request always progresses. Slots beyond that cap stay
     *    free. */
    int32_t cap = c->max_batch < c->token_budget ? c->max_batch : c->token_budget;
    while (s->n_running < cap) {
        /* the better of the two queue heads: priority, then arrival (ids grow); a request
         * on a free slot only while one is free, a pinned one always (it has its slot) */
        req_t *a = s->n_free ? s->waitq.head : NULL, *b = s->pinq.head, *r;
        if (!a && !b) break;
        if (!a) r = b;
        else if (!b) r = a;
        else r = b->priority > a->priority || (b->priority == a->priority && b->id < a->id) ? b : a;
        list_remove_q(r->pinned ? &s->pinq : &s->waitq, r);
        list_remove_a(&s->arrivals, r);
        s->n_waiting--;
        if (!r->pinned) {
            r->slot = s->free_slots[--s->n_free];
            r->reset_pending = 1;
            s->slot_state[r->slot] = SLOT_REQ;
        }
        r->state = REQ_PREFILL;
        list_push_tail_q(&s->prefill, r);
        s->n_running++;
    }
    /* 3. decode: one token each. The admission cap makes them all fit; the bounds and the
     *    round-robin start (decode_head) only keep that true should the cap ever change. */
    int32_t max_seq = c->max_batch < c->n_slots - 1 ? c->max_batch : c->n_slots - 1;
    int32_t n_seq = 0, n_tok = 0, n_sample = 0, n_reset = 0, n_split = 0;
    int32_t budget = c->token_budget;
    req_t *r = s->decode_head;
    for (int32_t k = 0; k < s->n_decode && n_seq < max_seq && budget > 0; k++, r = r->q_next) {
        s->p_slot[n_seq] = r->slot;
        s->p_seq_len[n_seq] = 1;
        s->p_sample[n_seq] = 1;
        s->p_id[n_seq] = r->id;
        s->p_tokens[n_tok++] = r->last_token;
        s->p_split[n_seq] = 0;
        r->n_fed++;
        recur_sample_row_t *row = &s->p_rows[n_sample++];
        *row = r->sampling;
        row->step = (uint64_t)r->n_gen;
        n_seq++;
        budget--;
    }
    if (s->n_decode) s->decode_head = r;   /* the next round starts at the first left out */
    int32_t n_decode = n_seq;
    /* 4. prefill chunks, oldest admission first */
    for (r = s->prefill.head; r && n_seq < max_seq && budget > 0; r = r->q_next) {
        int32_t left = r->n_prompt - r->n_prefilled;
        if (left <= 0) continue;
        int32_t chunk = left;
        if (chunk > c->prefill_chunk_max) chunk = c->prefill_chunk_max;
        if (chunk > budget) chunk = budget;
        if (r->split_at > r->n_prefilled && chunk > r->split_at - r->n_prefilled) chunk = r->split_at - r->n_prefilled;
        s->p_split[n_seq] = (uint8_t)(r->split_at && r->n_prefilled + chunk == r->split_at);
        n_split += s->p_split[n_seq];
        s->p_slot[n_seq] = r->slot;
        s->p_seq_len[n_seq] = chunk;
        s->p_id[n_seq] = r->id;
        memcpy(s->p_tokens + n_tok, r->prompt + r->n_prefilled, (size_t)chunk * sizeof(int32_t));
        n_tok += chunk;
        budget -= chunk;
        r->n_prefilled += chunk;
        r->n_fed += chunk;
        int last = r->n_prefilled == r->n_prompt;
        s->p_sample[n_seq] = (uint8_t)last;
        if (last) {
            recur_sample_row_t *row = &s->p_rows[n_sample++];
            *row = r->sampling;
            row->step = 0;
        }
        if (r->reset_pending) s->p_reset_id[n_reset] = r->id, s->p_reset[n_reset++] = r->slot;
        n_seq++;
    }
    s->st.last_seqs = n_seq;
    s->st.last_tokens = n_tok;
    s->st.last_decode = n_decode;
    s->st.last_prefill_tokens = n_tok - n_decode;
    if (!n_seq) return RECUR_OK;

    s->step++;
    s->in_flight = 1;
    s->st.steps++;
    s->st.tokens_planned += (uint64_t)n_tok;
    s->plan.step = s->step;
    s->plan.n_seq = n_seq;
    s->plan.n_tokens = n_tok;
    s->plan.slot = s->p_slot;
    s->plan.seq_len = s->p_seq_len;
    s->plan.tokens = s->p_tokens;
    s->plan.sample = s->p_sample;
    s->plan.id = s->p_id;
    s->plan.n_sample = n_sample;
    s->plan.sampling = s->p_rows;
    s->plan.n_reset = n_reset;
    s->plan.reset_slots = s->p_reset;
    s->plan.reset_ids = s->p_reset_id;
    s->plan.split_hit = s->p_split;
    s->plan.n_split_hit = n_split;
    s->plan.n_decode = n_decode;
    s->plan.n_prefill_tokens = n_tok - n_decode;
    *plan = s->plan;
    return RECUR_OK;
}

/* ---------------------------------------------------------------- complete */

static int is_stop(const recur_sched_t *s, const req_t *r, int32_t tok) {
    if (tok == s->cfg.eos_id && !r->ignore_eos) return 1;
    for (int32_t i = 0; i < r->n_stop; i++)
        if (r->stop[i] == tok) return 1;
    return 0;
}

recur_status_t recur_sched_complete(recur_sched_t *s, const recur_sched_result_t *res, uint64_t now_ms) {
    const recur_sched_plan_t *p = &s->plan;
    if (!s->in_flight) {
        set_err(s, "a result for step %llu, but no step is in flight", (unsigned long long)res->step);
        return RECUR_E_PROTO;
    }
    if (res->step != p->step) {
        set_err(s, "a result for step %llu, but step %llu is in flight", (unsigned long long)res->step,
                (unsigned long long)p->step);
        return RECUR_E_PROTO;
    }
    RECUR_TRY(ev_reserve(s, 3 * (size_t)p->n_seq));
    if (res->status != RECUR_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "step %llu failed: %s%s%s", (unsigned long long)p->step,
                 recur_status_str(res->status), res->message ? ": " : "", res->message ? res->message : "");
        for (int32_t i = 0; i < p->n_seq; i++) {
            req_t *r = map_get(s, p->id[i]);
            if (r) end_request(s, r, RECUR_SCHED_ERROR, msg);   /* NULL: cancelled meanwhile */
        }
        s->in_flight = 0;
        return RECUR_OK;
    }
    int per_seq = res->n_token == p->n_seq;
    if (!per_seq && res->n_token != p->n_sample) {
        set_err(s, "step %llu: %d tokens in the result, expected %d (sampled) or %d (sequences)",
                (unsigned long long)p->step, (int)res->n_token, (int)p->n_sample, (int)p->n_seq);
        return RECUR_E_PROTO;
    }
    for (int32_t i = 0, k = 0; i < p->n_seq; i++) {
        if (!p->sample[i]) continue;
        int32_t t = res->token[per_seq ? i : k++];
        if (t < 0 || (s->cfg.n_vocab && t >= s->cfg.n_vocab)) {
            set_err(s, "step %llu: sequence %d (slot %d) got token %d, not a token id", (unsigned long long)p->step,
                    (int)i, (int)p->slot[i], (int)t);
            return RECUR_E_PROTO;
        }
    }
    for (int32_t i = 0, k = 0; i < p->n_seq; i++) {
        req_t *r = map_get(s, p->id[i]);
        int32_t t = -1;
        if (p->sample[i]) t = res->token[per_seq ? i : k++];
        if (!r) continue;   /* finished or cancelled while the step ran */
        r->reset_pending = 0;
        if (!p->sample[i]) continue;   /* a prefill chunk that is not the prompt's last */
        if (r->state == REQ_PREFILL) {
            list_remove_q(&s->prefill, r);
            r->state = REQ_DECODE;
            decode_insert(s, r);
        }
        recur_sched_event_t *e = ev_push(s, RECUR_SCHED_EV_TOKEN, r);
        e->token = t;
        e->index = r->n_gen;
        if (r->n_gen == 0) e->ttft_ms = now_ms >= r->submit_ms ? now_ms - r->submit_ms : 0;
        r->n_gen++;
        e->completion_tokens = r->n_gen;
        r->last_token = t;
        if (is_stop(s, r, t)) end_request(s, r, RECUR_SCHED_STOP, NULL);
        else if (r->n_gen >= r->max_tokens) end_request(s, r, RECUR_SCHED_LENGTH, NULL);
    }
    s->in_flight = 0;
    return RECUR_OK;
}

/* ---------------------------------------------------------------- slots the caller holds */

recur_status_t recur_sched_slot_take(recur_sched_t *s, int32_t *slot) {
    *slot = 0;
    if (!s->n_free) {
        set_err(s, "no free slot");
        return RECUR_E_BUSY;
    }
    *slot = s->free_slots[--s->n_free];
    s->slot_state[*slot] = SLOT_CALLER;
    s->n_caller++;
    return RECUR_OK;
}

recur_status_t recur_sched_slot_give(recur_sched_t *s, int32_t slot) {
    if (slot < 1 || slot >= s->cfg.n_slots || s->slot_state[slot] != SLOT_CALLER) {
        set_err(s, "slot %d is not a slot the caller holds idle", (int)slot);
        return RECUR_E_INVAL;
    }
    s->slot_state[slot] = SLOT_FREE;
    s->free_slots[s->n_free++] = slot;
    s->n_caller--;
    return RECUR_OK;
}

/* ---------------------------------------------------------------- queries */

uint64_t recur_sched_next_deadline_ms(const recur_sched_t *s) {
    if (!s->cfg.queue_timeout_ms || !s->arrivals.head) return UINT64_MAX;
    return s->arrivals.head->submit_ms + s->cfg.queue_timeout_ms;
}

void recur_sched_get_stats(const recur_sched_t *s, recur_sched_stats_t *st) {
    *st = s->st;
    st->running = s->n_running;
    st->waiting = s->n_waiting;
    st->slots_used = s->cfg.n_slots - 1 - s->n_free;
    st->slots_total = s->cfg.n_slots - 1;
    st->slots_caller = s->n_caller;
}
