/* recur_coord.c: see recur_coord.h. */
#include "recur_coord.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_curve.h"
#include "recur_log.h"
#include "recur_msgsock.h"
#include "recur_prefix_cache.h"
#include "recur_proto.h"
#include "recur_sessions.h"
#include "recur_state_ckpt.h"
#include "recur_tokenizer.h"
#include "recur_tokenizer_pick.h"
#include "recur_utf8.h"

/* Sessions and initial-state variants: recur_coord_sessions.inc (included at the end). */
typedef struct creq_ext creq_ext_t;     /* what a request needs beyond a fresh slot */
typedef struct coord_sess coord_sess_t; /* the session table, pending state ops, variants */
/* The logprobs of one generated token (StepResult -> Token), RECUR_PROTO_MAX_LOGPROBS
 * alternatives at most. n_top -1: none came for this token. */
typedef struct lp_ent {
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_id[RECUR_PROTO_MAX_LOGPROBS];
    float top_lp[RECUR_PROTO_MAX_LOGPROBS];
} lp_ent_t;

/* One client request while it lives (from submit to its final message). */
typedef struct creq {
    struct creq *next, *prev;
    recur_msgsock_peer_t peer;
    int fd;                            /* the client's connection (-1: unknown) */
    char rid[RECUR_PROTO_MAX_ID_BYTES + 1];
    uint64_t id;                       /* the scheduler's */
    char *stops[RECUR_PROTO_MAX_STOP];
    int n_stops;
    size_t max_stop;                   /* longest stop string, bytes */
    int32_t *pend_ids;                 /* tokens whose text is not yet sent */
    size_t n_pend, cap_pend;
    char *text;                        /* bytes decoded but not yet sent */
    size_t n_text, cap_text;
    int stopped;                       /* a stop string matched: later tokens are dropped */
    creq_ext_t *ext;                   /* a session turn or a variant; NULL: a plain request */
    /* sampling extras: the logit bias (sent with every sampling row) and logprobs (-1:
     * none; n: the sampled token's and n alternatives). Logprobs come with a StepResult
     * before the scheduler's TOKEN event of the same token: they wait in lpq (FIFO) until
     * on_token takes them, then travel in pend_lp beside pend_ids until sent. */
    int32_t logprobs;
    int32_t n_bias;
    int32_t *bias_tok;
    float *bias_val;
    lp_ent_t *lpq, *pend_lp;
    size_t lpq_head, n_lpq, cap_lpq, cap_pend_lp;
    char fail[RECUR_PROTO_MAX_MESSAGE_BYTES / 16];   /* non-empty: the final is ERROR with this */
    uint64_t t_accept_ns, t_last_ns;   /* metrics: accepted, latest token (monotonic ns) */
} creq_t;

struct recur_coord {
    recur_coord_config_t cfg;
    char model_id[RECUR_PROTO_MAX_NAME_BYTES];
    recur_msgsock_t *clients, *workers;
    void *client_events;               /* disconnections of clients (NULL: not watched) */
    recur_zap_t *zap;                   /* worker_curve: the ZAP handler (NULL: no CURVE)  */
    void *worker_events;                /* worker_curve: failed handshakes on the worker socket */
    uint64_t hs_failed, hs_last_log_ms[5], hs_unlogged[5];   /* by RECUR_MSGSOCK_HS_* kind */
    uint64_t disconnect_cancels;
    recur_sched_t *sched;
    recur_tokenizer_t *tok;
    int32_t bos;                        /* prepended to text prompts; -1: none */
    /* the worker group (its rank 0) */
    int ready;
    int draining;                       /* recur_coord_drain: no new requests */
    uint64_t lost_count;                /* worker groups lost by silence (heartbeat timeout) */
    uint64_t sess_published_ms;         /* the sessions' metrics were last published then */
    recur_msgsock_peer_t wpeer;
    uint32_t wpid;
    char arch[RECUR_PROTO_MAX_NAME_BYTES], ckpt[RECUR_PROTO_MAX_NAME_BYTES], lost_why[256];
    int32_t n_vocab, n_slots, n_layer, n_embd, n_head;
    uint64_t last_from_worker_ms, last_to_worker_ms, hb_seq, epoch;
    /* the step in flight */
    int in_flight;
    uint64_t flight_step, flight_sent_ns;
    int32_t plan_n_seq;
    Recur__Internal__LogitsMode *logits;
    Recur__Internal__SamplingRow *rows, **rowp;
    size_t cap_seq, cap_rows;
    /* requests */
    creq_t *head;
    int32_t n_ext;                      /* live requests with an ext                        */
    coord_sess_t *ss;                   /* sessions, variants (recur_coord_sessions.inc)     */
    /* requests with a logit bias or logprobs, by scheduler id (ascending: ids are given in
     * submit order), to find them from a plan's sequences; and the ids of the plan in
     * flight when one of its rows asked for logprobs */
    creq_t **xreqs;
    size_t n_xreqs, cap_xreqs;
    uint64_t *flight_ids;
    size_t cap_flight_ids;
    int flight_lp;
    uint64_t seed_counter;
    /* stats */
    uint64_t steps, seqs, tokens_out, requests, busy_ns;
    int32_t max_batch_seen;
    uint64_t result_ns;                 /* when the StepResult being handled arrived        */
    uint64_t plan_sent_ns;              /* when the step in flight was sent                 */
    uint64_t crit_ns, crit_n;           /* result arrived -> next plan sent, back to back   */
    uint64_t period_ns, period_n;       /* plan sent -> next plan sent, back to back        */
    uint64_t rtt_ns, w_total_us, w_fwd_us, w_sample_us, w_n;   /* plan sent -> result; worker's own times */
    /* scratch for responses */
    Recur__Api__Token *tokbuf, **tokp;
    size_t cap_tok;
    char *sendtext;
    size_t cap_sendtext;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static uint64_t now_ms(void) { return now_ns() / 1000000ull; }

/* recur_coord_sessions.inc, called from the request loop below */
struct recur_sched_plan;
static recur_status_t ext_create(recur_coord_t *c, const recur_coord_config_t *cfg);
static void ext_destroy(recur_coord_t *c);
static int ext_resolve_model(recur_coord_t *c, const char *model, int32_t *variant);
static int ext_begin(recur_coord_t *c, const recur_msgsock_peer_t *from, const Recur__Api__GenerateRequest *g,
                     int32_t variant, creq_ext_t **out);
static int ext_wants_bos(const creq_ext_t *x);
static int ext_attach(recur_coord_t *c, creq_t *r, int32_t **ids, size_t *n, recur_sched_request_t *q);
static void ext_on_token(recur_coord_t *c, creq_t *r, int32_t token);
static void ext_on_stop(creq_t *r, const char *bytes, size_t n);
static size_t ext_skip_unsent(const creq_ext_t *x, const char *text, size_t n);
static int ext_finish(recur_coord_t *c, creq_t *r, const recur_sched_event_t *ev, Recur__Api__Usage *u,
                      Recur__Api__GenerateFinal *fin);
static void ext_free(recur_coord_t *c, creq_t *r);
static void ext_plan_resets(recur_coord_t *c, const recur_sched_plan_t *p, const int32_t **resets, int32_t *n_reset);
static void ext_plan_sent(recur_coord_t *c, const recur_sched_plan_t *p);
static void ext_step_failed(recur_coord_t *c);
static void ext_list_models(recur_coord_t *c, Recur__Api__ListModelsResponse *lr);
static void ext_on_slot_op_result(recur_coord_t *c, const Recur__Internal__SlotOpResult *res);
static void ext_on_session(recur_coord_t *c, const recur_msgsock_peer_t *from, const Recur__Api__SessionRequest *q);
static void ext_on_worker_ready(recur_coord_t *c, const Recur__Internal__Hello *h);
static void ext_on_worker_lost(recur_coord_t *c, const char *why);
static void ext_tick(recur_coord_t *c);
static void ext_drain(recur_coord_t *c);
static int ext_pending(const recur_coord_t *c);

recur_coord_config_t recur_coord_default_config(void) {
    recur_coord_config_t c;
    memset(&c, 0, sizeof c);
    c.client_bind = "tcp://127.0.0.1:0";
    c.worker_bind = "tcp://127.0.0.1:0";
    c.tp = c.pp = 1;
    c.sched = recur_sched_default_config();
    c.default_max_tokens = 256;
    c.heartbeat_ms = 1000;
    c.worker_timeout_ms = 30000;
    c.max_sessions = 10000;
    c.session_slots = -1;
    c.session_host_bytes = (uint64_t)1 << 30;
    c.prefix_cache_block = 32;
    return c;
}

/* ------------------------------------------------------------------ growable buffers */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* ------------------------------------------------------------------ sampling extras */

/* The request with scheduler id `id` among those with a bias or logprobs, or NULL. */
static creq_t *xreq_find(const recur_coord_t *c, uint64_t id, size_t *pos) {
    size_t lo = 0, hi = c->n_xreqs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->xreqs[mid]->id < id) lo = mid + 1;
        else hi = mid;
    }
    if (pos) *pos = lo;
    return lo < c->n_xreqs && c->xreqs[lo]->id == id ? c->xreqs[lo] : NULL;
}

static void xreq_remove(recur_coord_t *c, const creq_t *r) {
    size_t pos;
    if (xreq_find(c, r->id, &pos) != r) return;
    memmove(c->xreqs + pos, c->xreqs + pos + 1, (c->n_xreqs - pos - 1) * sizeof *c->xreqs);
    c->n_xreqs--;
}

/* Writes bytes[0, n) as UTF-8 to dst (room for 3n + 1), each byte of an invalid or
 * unfinished sequence as U+FFFD; returns the length. */
static size_t utf8_clean_to(const char *bytes, size_t n, char *dst) {
    const uint8_t *p = (const uint8_t *)bytes;
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        size_t l = recur_utf8_len(p + i, n - i);
        if (l) {
            memcpy(dst + out, p + i, l);
            out += l, i += l;
        } else {
            memcpy(dst + out, "\xEF\xBF\xBD", 3);
            out += 3, i++;
        }
    }
    dst[out] = '\0';
    return out;
}

/* The logprobs of a StepResult into the queues of the requests that asked, before the
 * scheduler turns its tokens into events. */
static void queue_logprobs(recur_coord_t *c, const Recur__Internal__StepResult *res) {
    if (!c->flight_lp || res->n_logprob != res->n_token) return;
    const size_t k = res->has_top_n ? res->top_n : 0;
    for (size_t i = 0; i < res->n_token; i++) {
        creq_t *r = res->token[i] >= 0 ? xreq_find(c, c->flight_ids[i], NULL) : NULL;
        if (!r || r->logprobs < 0) continue;
        if (r->lpq_head == r->n_lpq) r->lpq_head = r->n_lpq = 0;
        if (grow((void **)&r->lpq, &r->cap_lpq, r->n_lpq + 1, sizeof *r->lpq)) continue;   /* on_token then sends none */
        lp_ent_t *e = &r->lpq[r->n_lpq++];
        e->token = res->token[i];
        e->logprob = res->logprob[i];
        e->n_top = 0;
        for (size_t j = 0; j < k && e->n_top < r->logprobs; j++) {
            const int32_t id = res->top_token[i * k + j];
            if (id < 0) continue;
            e->top_id[e->n_top] = id;
            e->top_lp[e->n_top++] = res->top_logprob[i * k + j];
        }
    }
}

/* ------------------------------------------------------------------ sending to clients */

static void send_client(recur_coord_t *c, const recur_msgsock_peer_t *to, recur_api_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_send_api(c->clients, to, env, &err);
    if (s != RECUR_OK) {
        char b[64];
        recur_log_warn("coordinator: reply to client %s dropped: %s", recur_msgsock_peer_str(to, b, sizeof b), err.msg);
    }
}

static void send_error(recur_coord_t *c, const recur_msgsock_peer_t *to, const char *rid, Recur__Api__ErrorCode code,
                       const char *msg) {
    Recur__Api__Error e = RECUR__API__ERROR__INIT;
    e.has_code = 1, e.code = code, e.message = (char *)msg;
    Recur__Api__ErrorResponse er = RECUR__API__ERROR_RESPONSE__INIT;
    er.request_id = (char *)(rid && *rid ? rid : NULL);
    er.error = &e;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_ERROR;
    env.error = &er;
    send_client(c, to, &env);
}

/* Copies bytes [0, n) of src into c->sendtext as valid UTF-8 (invalid bytes -> U+FFFD);
 * with final = 0 an unfinished character at the end is left out. Returns the bytes of src
 * consumed; the text is NUL-terminated. */
static size_t utf8_clean(recur_coord_t *c, const char *src, size_t n, int final) {
    size_t out = 0, i = 0;
    if (grow((void **)&c->sendtext, &c->cap_sendtext, 3 * n + 1, 1)) return 0;
    const uint8_t *p = (const uint8_t *)src;
    while (i < n) {
        size_t l = recur_utf8_len(p + i, n - i);
        if (l) {
            memcpy(c->sendtext + out, p + i, l);
            out += l, i += l;
            continue;
        }
        if (!final) {   /* a lead byte whose continuation bytes may still come */
            size_t need = p[i] >= 0xF0 && p[i] <= 0xF4 ? 4 : p[i] >= 0xE0 && p[i] <= 0xEF ? 3
                        : p[i] >= 0xC2 && p[i] <= 0xDF ? 2 : 0;
            int prefix = need > n - i;
            for (size_t k = i + 1; prefix && k < n; k++) prefix = (p[k] & 0xC0) == 0x80;
            if (need && prefix) break;
        }
        memcpy(c->sendtext + out, "\xEF\xBF\xBD", 3);
        out += 3, i++;
    }
    c->sendtext[out] = '\0';
    return i;
}

/* Sends the pending tokens of r with text[0, n_send) (cleaned), and the final when fin. */
static void send_tokens(recur_coord_t *c, creq_t *r, size_t n_send, int final_text, const Recur__Api__GenerateFinal *fin) {
    size_t used = utf8_clean(c, r->text, n_send, final_text);
    /* Text held back (a possible stop string, an unfinished character) can only travel with
     * a token: keep the last pending token for it, else the final message would have text and
     * no token to carry it, and that text would be lost. */
    size_t n_tok = r->n_pend;
    if (!fin && used < r->n_text && n_tok) n_tok--;
    if (!fin && !n_tok) return;
    if (n_tok && grow((void **)&c->tokbuf, &c->cap_tok, n_tok, sizeof *c->tokbuf)) return;
    Recur__Api__Token **tp = malloc((n_tok ? n_tok : 1) * sizeof *tp);
    if (!tp) return;
    /* logprobs: every alternative's text (cleaned: 3 bytes per byte at most) in one block */
    Recur__Api__TopLogprob *alt = NULL, **altp = NULL;
    char *alt_text = NULL;
    if (r->logprobs >= 0 && r->pend_lp) {
        size_t n_alt = 0, n_bytes = 0;
        for (size_t i = 0; i < n_tok; i++)
            for (int32_t j = 0; j < r->pend_lp[i].n_top; j++) {
                const char *b = NULL;
                size_t nb = 0;
                if (recur_tokenizer_token_bytes(c->tok, r->pend_lp[i].top_id[j], &b, &nb) != RECUR_OK) nb = 0;
                n_alt++, n_bytes += 3 * nb + 1;
            }
        alt = malloc((n_alt ? n_alt : 1) * sizeof *alt);
        altp = malloc((n_alt ? n_alt : 1) * sizeof *altp);
        alt_text = malloc(n_bytes ? n_bytes : 1);
        if (!alt || !altp || !alt_text) {   /* the tokens still go, without their logprobs */
            free(alt), free(altp), free(alt_text);
            alt = NULL, altp = NULL, alt_text = NULL;
        }
    }
    size_t a = 0, at = 0;
    for (size_t i = 0; i < n_tok; i++) {
        Recur__Api__Token t = RECUR__API__TOKEN__INIT;
        t.has_id = 1, t.id = r->pend_ids[i];
        t.text = i + 1 == n_tok ? c->sendtext : (char *)"";
        if (alt && r->pend_lp[i].n_top >= 0) {
            const lp_ent_t *e = &r->pend_lp[i];
            t.has_logprob = 1, t.logprob = e->logprob;
            t.n_top_logprobs = (size_t)e->n_top, t.top_logprobs = altp + a;
            for (int32_t j = 0; j < e->n_top; j++, a++) {
                const char *b = NULL;
                size_t nb = 0;
                if (recur_tokenizer_token_bytes(c->tok, e->top_id[j], &b, &nb) != RECUR_OK) nb = 0;
                Recur__Api__TopLogprob tl = RECUR__API__TOP_LOGPROB__INIT;
                tl.has_id = 1, tl.id = e->top_id[j];
                tl.has_logprob = 1, tl.logprob = e->top_lp[j];
                tl.text = alt_text + at;
                at += utf8_clean_to(b, nb, alt_text + at) + 1;
                alt[a] = tl;
                altp[a] = &alt[a];
            }
        }
        c->tokbuf[i] = t;
        tp[i] = &c->tokbuf[i];
    }
    Recur__Api__GenerateResponse gr = RECUR__API__GENERATE_RESPONSE__INIT;
    gr.request_id = r->rid;
    gr.n_tokens = n_tok, gr.tokens = tp;
    gr.final = (Recur__Api__GenerateFinal *)fin;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE;
    env.generate_response = &gr;
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_send_api(c->clients, &r->peer, &env, &err);
    free(tp);
    free(alt), free(altp), free(alt_text);
    c->tokens_out += n_tok;
    if (r->n_pend > n_tok) {   /* the kept token (and its logprobs) moves to the front */
        memmove(r->pend_ids, r->pend_ids + n_tok, (r->n_pend - n_tok) * sizeof *r->pend_ids);
        if (r->pend_lp) memmove(r->pend_lp, r->pend_lp + n_tok, (r->n_pend - n_tok) * sizeof *r->pend_lp);
    }
    r->n_pend -= n_tok;
    if (used) memmove(r->text, r->text + used, r->n_text - used);   /* text is NULL before any token */
    r->n_text -= used;
    if (s != RECUR_OK && !fin && !r->fail[0]) {
        /* the client is gone (or stuck): stop spending steps on it */
        recur_log_info("coordinator: request %s: %s; cancelling it", r->rid, err.msg);
        recur_sched_cancel(c->sched, r->id);
    }
}

/* ------------------------------------------------------------------ requests */

static void req_free(recur_coord_t *c, creq_t *r) {
    if (r->ext) ext_free(c, r);
    if (r->prev) r->prev->next = r->next;
    else c->head = r->next;
    if (r->next) r->next->prev = r->prev;
    for (int i = 0; i < r->n_stops; i++) free(r->stops[i]);
    xreq_remove(c, r);
    free(r->bias_tok), free(r->bias_val), free(r->lpq), free(r->pend_lp);
    free(r->pend_ids);
    free(r->text);
    free(r);
}

static creq_t *req_find(recur_coord_t *c, const recur_msgsock_peer_t *peer, const char *rid) {
    for (creq_t *r = c->head; r; r = r->next)
        if (recur_msgsock_peer_equal(&r->peer, peer) && !strcmp(r->rid, rid)) return r;
    return NULL;
}

static size_t find_stop(const creq_t *r, size_t *pos) {
    size_t best = SIZE_MAX;
    for (int i = 0; i < r->n_stops; i++) {
        size_t k = strlen(r->stops[i]);
        for (size_t p = 0; p + k <= r->n_text && p < best; p++)
            if (!memcmp(r->text + p, r->stops[i], k)) { best = p; break; }
    }
    *pos = best;
    return best != SIZE_MAX;
}

static void on_token(recur_coord_t *c, creq_t *r, int32_t token) {
    if (r->ext) ext_on_token(c, r, token);   /* the session's record has every generated token */
    /* this token's logprobs (queued by its StepResult): the first queued for this id */
    lp_ent_t lp = {.n_top = -1};
    while (r->logprobs >= 0 && r->lpq_head < r->n_lpq) {
        const lp_ent_t *e = &r->lpq[r->lpq_head++];
        if (e->token == token) {
            lp = *e;
            break;
        }
        recur_log_warn("coordinator: request %s: logprobs for token %d dropped (the next token is %d)", r->rid,
                       (int)e->token, (int)token);
    }
    if (r->stopped || r->fail[0]) return;
    recur_metrics_token(c->cfg.metrics, r->t_accept_ns, &r->t_last_ns, now_ns());
    const char *bytes = NULL;
    size_t nb = 0;
    if (recur_tokenizer_token_bytes(c->tok, token, &bytes, &nb) != RECUR_OK) nb = 0;   /* padding rows: no text */
    if (grow((void **)&r->pend_ids, &r->cap_pend, r->n_pend + 1, sizeof *r->pend_ids) ||
        grow((void **)&r->text, &r->cap_text, r->n_text + nb + 1, 1) ||
        (r->logprobs >= 0 && grow((void **)&r->pend_lp, &r->cap_pend_lp, r->n_pend + 1, sizeof *r->pend_lp))) {
        snprintf(r->fail, sizeof r->fail, "out of memory");
        recur_sched_cancel(c->sched, r->id);
        return;
    }
    if (r->logprobs >= 0) r->pend_lp[r->n_pend] = lp;
    r->pend_ids[r->n_pend++] = token;
    memcpy(r->text + r->n_text, bytes, nb);
    r->n_text += nb;
    size_t pos;
    if (r->n_stops && find_stop(r, &pos)) {
        if (r->ext) ext_on_stop(r, r->text + pos, r->n_text - pos);   /* a session keeps it: the state has it */
        r->n_text = pos;   /* the stop text and what follows are not output */
        r->stopped = 1;
        recur_sched_finish(c->sched, r->id, RECUR_SCHED_STOP);   /* its FINISHED sends the rest */
        return;
    }
    size_t hold = r->max_stop ? r->max_stop - 1 : 0;
    if (r->n_text <= hold) return;
    send_tokens(c, r, r->n_text - hold, 0, NULL);
}

static void on_finished(recur_coord_t *c, creq_t *r, const recur_sched_event_t *ev, const char *err_msg) {
    static const Recur__Api__FinishReason map[RECUR_SCHED_N_REASONS] = {
        RECUR__API__FINISH_REASON__FINISH_REASON_STOP, RECUR__API__FINISH_REASON__FINISH_REASON_LENGTH,
        RECUR__API__FINISH_REASON__FINISH_REASON_CANCELLED, RECUR__API__FINISH_REASON__FINISH_REASON_ERROR,
        RECUR__API__FINISH_REASON__FINISH_REASON_ERROR};
    Recur__Api__Usage u = RECUR__API__USAGE__INIT;
    u.has_prompt_tokens = u.has_completion_tokens = 1;
    u.prompt_tokens = (uint32_t)ev->prompt_tokens, u.completion_tokens = (uint32_t)ev->completion_tokens;
    Recur__Api__GenerateFinal fin = RECUR__API__GENERATE_FINAL__INIT;
    fin.has_finish_reason = 1;
    fin.finish_reason = map[ev->reason];
    fin.usage = &u;
    Recur__Api__Error e = RECUR__API__ERROR__INIT;
    const char *why = r->fail[0] ? r->fail : err_msg;
    if (r->fail[0] || ev->reason == RECUR_SCHED_ERROR || ev->reason == RECUR_SCHED_TIMEOUT) {
        fin.finish_reason = RECUR__API__FINISH_REASON__FINISH_REASON_ERROR;
        e.has_code = 1;
        e.code = ev->reason == RECUR_SCHED_TIMEOUT ? RECUR__API__ERROR_CODE__ERROR_CODE_DEADLINE_EXCEEDED
                                                    : RECUR__API__ERROR_CODE__ERROR_CODE_INTERNAL;
        if (r->fail[0]) e.code = RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE;
        e.message = (char *)(why && *why ? why : "the step failed");
        fin.error = &e;
    }
    if (r->ext && ext_finish(c, r, ev, &u, &fin)) return;   /* held until the session's checkpoint is on disk */
    send_tokens(c, r, r->n_text, 1, &fin);
    recur_metrics_finished(c->cfg.metrics, (const char *[]){"", "stop", "length", "cancelled", "error"}[fin.finish_reason],
                           r->t_accept_ns, now_ns());
    req_free(c, r);
}

static void drain_events(recur_coord_t *c) {
    recur_sched_event_t ev;
    /* an ERROR event's message goes with the same request's FINISHED, which follows it */
    char last_err[sizeof ev.message] = "";
    uint64_t last_err_id = 0;
    while (recur_sched_next_event(c->sched, &ev)) {
        creq_t *r = ev.cookie;
        if (!r) continue;
        switch (ev.type) {
        case RECUR_SCHED_EV_TOKEN: on_token(c, r, ev.token); break;
        case RECUR_SCHED_EV_ERROR:
            snprintf(last_err, sizeof last_err, "%s", ev.message);
            last_err_id = ev.id;
            break;
        case RECUR_SCHED_EV_FINISHED: on_finished(c, r, &ev, last_err_id == ev.id ? last_err : NULL); break;
        }
    }
}

void recur_coord_fail_all(recur_coord_t *c, const char *why) {
    c->ready = 0;
    snprintf(c->lost_why, sizeof c->lost_why, "%s", why);
    if (!c->sched) return;
    if (c->in_flight) {   /* the step's requests end through the scheduler as ERROR */
        recur_sched_result_t res = {.step = c->flight_step, .status = RECUR_E_IO, .message = why};
        recur_sched_complete(c->sched, &res, now_ms());
        c->in_flight = 0;
    }
    for (creq_t *r = c->head; r; r = r->next) {
        if (!r->fail[0]) snprintf(r->fail, sizeof r->fail, "%s", why);
        recur_sched_cancel(c->sched, r->id);   /* fails for those already ended above: fine */
    }
    drain_events(c);
    ext_on_worker_lost(c, why);
}

/* ------------------------------------------------------------------ client messages */

static void on_generate(recur_coord_t *c, const recur_msgsock_peer_t *from, const Recur__Api__GenerateRequest *g) {
    const char *rid = g->request_id;
    if (c->draining) {
        send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE,
                   "the server is shutting down (draining): no new requests; retry on another replica");
        return;
    }
    if (!c->ready) {
        char m[320];
        snprintf(m, sizeof m, "not ready: %s", c->lost_why[0] ? c->lost_why : "the workers are starting");
        send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE, m);
        return;
    }
    char why[320];
    /* set, even to "": a session id (it ends up naming files on the workers) */
    if (g->session_id && recur_sessions_id_check(g->session_id, "generate.session_id", why, sizeof why) != RECUR_OK) {
        send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, why);
        return;
    }
    int32_t variant = -1;
    if (ext_resolve_model(c, g->model, &variant) != 0) {
        char m[600];
        snprintf(m, sizeof m, "model '%.256s' is not served here (ListModels: '%s' and its variants)", g->model,
                 c->model_id);
        send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_NOT_FOUND, m);
        return;
    }
    if (req_find(c, from, rid)) {
        send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_ALREADY_EXISTS,
                   "a request with this request_id is already in flight");
        return;
    }
    const Recur__Api__SamplingParams *sp = g->sampling;
    /* recur_proto checked the ranges, the count and that the ids are distinct; the
     * vocabulary is known here */
    for (size_t i = 0; sp && i < sp->n_logit_bias; i++)
        if (sp->logit_bias[i]->token_id >= c->n_vocab) {
            char m[200];
            snprintf(m, sizeof m, "generate.sampling.logit_bias[%zu].token_id = %d: outside the vocabulary of %d tokens",
                     i, (int)sp->logit_bias[i]->token_id, (int)c->n_vocab);
            send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, m);
            return;
        }
    creq_ext_t *ext = NULL;   /* a session turn or a variant: after the checks above */
    if (ext_begin(c, from, g, variant, &ext) != 0) return;
    int32_t *ids = NULL;
    size_t n = 0;
    if (g->prompt_case == RECUR__API__GENERATE_REQUEST__PROMPT_TEXT) {
        int32_t *raw = NULL;
        /* a session whose latest turn ended on a stop string has consumed it unseen: a prompt
         * that starts with it continues after it (recur_coord_sessions.inc) */
        size_t len = strlen(g->text), skip = ext_skip_unsent(ext, g->text, len);
        if (recur_tokenizer_encode(c->tok, g->text + skip, len - skip, &raw, &n) != RECUR_OK) {
            free(ext);
            send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_INTERNAL, "the prompt could not be tokenized");
            return;
        }
        ids = malloc((n + 1) * sizeof *ids);
        if (ids) {
            size_t k = 0;
            if (c->bos >= 0 && ext_wants_bos(ext)) ids[k++] = c->bos;   /* a conversation's start only */
            memcpy(ids + k, raw, n * sizeof *raw);
            n += k;
        }
        free(raw);
    } else {
        n = g->token_ids->n_ids;
        ids = malloc((n ? n : 1) * sizeof *ids);
        if (ids) memcpy(ids, g->token_ids->ids, n * sizeof *ids);
    }
    creq_t *r = calloc(1, sizeof *r);
    if (!ids || !r) {
        free(ids);
        free(r);
        free(ext);
        send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    r->peer = *from;
    r->fd = recur_msgsock_last_fd(c->clients);
    snprintf(r->rid, sizeof r->rid, "%s", rid);
    r->logprobs = sp && sp->has_logprobs ? (int32_t)sp->logprobs : -1;
    if (sp && sp->n_logit_bias) {
        r->bias_tok = malloc(sp->n_logit_bias * sizeof *r->bias_tok);
        r->bias_val = malloc(sp->n_logit_bias * sizeof *r->bias_val);
        if (!r->bias_tok || !r->bias_val) {
            free(ids), free(r->bias_tok), free(r->bias_val), free(r), free(ext);
            send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        for (size_t i = 0; i < sp->n_logit_bias; i++)
            r->bias_tok[i] = sp->logit_bias[i]->token_id, r->bias_val[i] = sp->logit_bias[i]->bias;
        r->n_bias = (int32_t)sp->n_logit_bias;
    }
    recur_sched_request_t q = {.prompt = ids, .n_prompt = (int32_t)n, .cookie = r};
    q.max_tokens = sp && sp->has_max_tokens ? (int32_t)(sp->max_tokens > INT32_MAX ? INT32_MAX : sp->max_tokens)
                                            : c->cfg.default_max_tokens;
    q.sampling.temperature = sp && sp->has_temperature ? sp->temperature : 1.0f;
    q.sampling.top_p = sp && sp->has_top_p ? sp->top_p : 1.0f;
    q.sampling.top_k = sp && sp->has_top_k ? sp->top_k : 0;
    q.sampling.min_p = sp && sp->has_min_p ? sp->min_p : 0.0f;
    q.sampling.repetition_penalty = sp && sp->has_repetition_penalty ? sp->repetition_penalty : 1.0f;
    q.sampling.presence_penalty = sp && sp->has_presence_penalty ? sp->presence_penalty : 0.0f;
    q.sampling.frequency_penalty = sp && sp->has_frequency_penalty ? sp->frequency_penalty : 0.0f;
    q.sampling.logprobs = r->logprobs;
    /* no seed: a different one per request (not reproducible, as asked) */
    q.sampling.seed = sp && sp->has_seed ? sp->seed : (now_ns() ^ (++c->seed_counter * 0x9E3779B97F4A7C15ull));
    q.priority = g->has_priority ? g->priority : 0;
    q.ignore_eos = sp && sp->has_ignore_eos && sp->ignore_eos;
    if (sp) q.stop_ids = sp->stop_token_ids, q.n_stop = (int32_t)sp->n_stop_token_ids;
    for (size_t i = 0; sp && i < sp->n_stop && r->n_stops < RECUR_PROTO_MAX_STOP; i++) {
        size_t k = strlen(sp->stop[i]);
        if (!k || !(r->stops[r->n_stops] = strdup(sp->stop[i]))) continue;
        r->n_stops++;
        if (k > r->max_stop) r->max_stop = k;
    }
    r->next = c->head;
    if (c->head) c->head->prev = r;
    c->head = r;
    r->ext = ext;
    if (ext && ext_attach(c, r, &ids, &n, &q) != 0) {
        free(ids);
        req_free(c, r);
        send_error(c, from, rid, RECUR__API__ERROR_CODE__ERROR_CODE_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    recur_status_t s = n == 0 ? RECUR_E_INVAL : recur_sched_submit(c->sched, &q, now_ms(), &r->id);
    free(ids);
    if (s != RECUR_OK) {
        char m[320];
        snprintf(m, sizeof m, "%s", n == 0 ? "the prompt is empty (it has no tokens)" : recur_sched_error(c->sched));
        req_free(c, r);
        send_error(c, from, rid,
                   s == RECUR_E_BUSY ? RECUR__API__ERROR_CODE__ERROR_CODE_RESOURCE_EXHAUSTED
                   : s == RECUR_E_NOMEM ? RECUR__API__ERROR_CODE__ERROR_CODE_RESOURCE_EXHAUSTED
                                        : RECUR__API__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, m);
        return;
    }
    /* ids grow with each submit: appending keeps xreqs sorted */
    if ((r->n_bias || r->logprobs >= 0) && !grow((void **)&c->xreqs, &c->cap_xreqs, c->n_xreqs + 1, sizeof *c->xreqs))
        c->xreqs[c->n_xreqs++] = r;
    else if (r->n_bias || r->logprobs >= 0) {   /* it could not get its bias or logprobs: end it */
        snprintf(r->fail, sizeof r->fail, "out of memory");
        recur_sched_cancel(c->sched, r->id);
        drain_events(c);
    }
    c->requests++;
    r->t_accept_ns = now_ns();
    recur_metrics_request(c->cfg.metrics, (int64_t)n);
}

static void on_cancel(recur_coord_t *c, const recur_msgsock_peer_t *from, const Recur__Api__CancelRequest *q) {
    creq_t *r = req_find(c, from, q->request_id);
    Recur__Api__CancelResponse cr = RECUR__API__CANCEL_RESPONSE__INIT;
    cr.request_id = q->request_id;
    cr.has_found = 1;
    cr.found = r && recur_sched_cancel(c->sched, r->id) == RECUR_OK;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE;
    env.cancel_response = &cr;
    send_client(c, from, &env);
    if (cr.found) drain_events(c);   /* the stream's final (CANCELLED) right after */
}

static void on_health(recur_coord_t *c, const recur_msgsock_peer_t *from, const char *rid) {
    Recur__Api__HealthResponse h = RECUR__API__HEALTH_RESPONSE__INIT;
    h.request_id = (char *)rid;
    h.has_status = 1;
    h.status = c->ready && !c->draining ? RECUR__API__SERVING_STATUS__SERVING_STATUS_SERVING
                                        : RECUR__API__SERVING_STATUS__SERVING_STATUS_NOT_SERVING;
    h.detail = c->ready && !c->draining ? NULL
               : c->draining             ? (char *)"draining: finishing the requests in flight, taking no new ones"
                                         : (char *)(c->lost_why[0] ? c->lost_why : "the workers are starting");
    h.has_workers_ready = h.has_workers_expected = 1;
    h.workers_ready = c->ready ? (uint32_t)(c->cfg.tp * c->cfg.pp) : 0;
    h.workers_expected = (uint32_t)(c->cfg.tp * c->cfg.pp);
    if (c->sched) {
        recur_sched_stats_t st;
        recur_sched_get_stats(c->sched, &st);
        h.has_active_requests = h.has_queued_requests = h.has_free_slots = 1;
        h.active_requests = (uint32_t)st.running, h.queued_requests = (uint32_t)st.waiting;
        h.free_slots = (uint32_t)(st.slots_total - st.slots_used);
    }
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE;
    env.health_response = &h;
    send_client(c, from, &env);
}

static void on_list_models(recur_coord_t *c, const recur_msgsock_peer_t *from, const char *rid) {
    Recur__Api__ModelInfo mi = RECUR__API__MODEL_INFO__INIT;
    mi.id = c->model_id;
    Recur__Api__ModelInfo *mp = &mi;
    Recur__Api__ListModelsResponse lr = RECUR__API__LIST_MODELS_RESPONSE__INIT;
    lr.request_id = (char *)rid;
    if (c->ready) {   /* what the model is, the worker told us */
        mi.arch = c->arch, mi.checkpoint_id = c->ckpt;
        mi.has_n_vocab = mi.has_n_layer = mi.has_n_embd = mi.has_n_head = mi.has_tp = mi.has_pp = 1;
        mi.n_vocab = (uint32_t)c->n_vocab, mi.n_layer = (uint32_t)c->n_layer, mi.n_embd = (uint32_t)c->n_embd;
        mi.n_head = (uint32_t)c->n_head, mi.tp = (uint32_t)c->cfg.tp, mi.pp = (uint32_t)c->cfg.pp;
        mi.has_max_sequences = 1, mi.max_sequences = (uint32_t)(c->n_slots - 1);
    }
    lr.n_models = 1, lr.models = &mp;
    ext_list_models(c, &lr);   /* "<id>:<variant>" for each initial-state variant */
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_LIST_MODELS_RESPONSE;
    env.list_models_response = &lr;
    send_client(c, from, &env);
}

/* Cancels the requests of clients whose connection closed, so their slots free at once. */
static void poll_disconnects(recur_coord_t *c) {
    for (int fd; (fd = recur_msgsock_next_disconnect(c->clients)) >= 0;) {
        for (creq_t *r = c->head; r; r = r->next) {
            if (r->fd != fd || r->stopped || !c->sched) continue;
            r->fd = -1;
            if (recur_sched_cancel(c->sched, r->id) == RECUR_OK) {
                c->disconnect_cancels++;
                recur_log_info("coordinator: request %s: the client disconnected; cancelled", r->rid);
            }
        }
        if (c->sched) drain_events(c);
    }
}

static recur_status_t poll_clients(recur_coord_t *c) {
    poll_disconnects(c);   /* first: see recur_msgsock_next_disconnect */
    for (;;) {
        recur_msgsock_peer_t from;
        recur_api_envelope_t *env = NULL;
        recur_proto_error_t err;
        recur_status_t s = recur_msgsock_recv_api(c->clients, 0, &from, &env, &err);
        if (s == RECUR_E_TIMEOUT) return RECUR_OK;
        if (s == RECUR_E_IO) return s;
        /* Again after each message: a connection that closed while this round read earlier
         * messages may have left its fd number to the connection this message came through,
         * and its disconnection (queued before this message) must not cancel this request. */
        poll_disconnects(c);
        if (s != RECUR_OK) {   /* unreadable: tell that client why */
            if (from.len)
                send_error(c, &from, NULL,
                           s == RECUR_E_PROTO ? RECUR__API__ERROR_CODE__ERROR_CODE_PROTOCOL
                                              : RECUR__API__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, err.msg);
            continue;
        }
        switch (env->body_case) {
        case RECUR__API__ENVELOPE__BODY_GENERATE: on_generate(c, &from, env->generate); break;
        case RECUR__API__ENVELOPE__BODY_CANCEL: on_cancel(c, &from, env->cancel); break;
        case RECUR__API__ENVELOPE__BODY_HEALTH: on_health(c, &from, env->health->request_id); break;
        case RECUR__API__ENVELOPE__BODY_LIST_MODELS: on_list_models(c, &from, env->list_models->request_id); break;
        case RECUR__API__ENVELOPE__BODY_SESSION:
            if (!c->ready && env->session->op != RECUR__API__SESSION_OP__SESSION_OP_GET &&
                env->session->op != RECUR__API__SESSION_OP__SESSION_OP_LIST)
                send_error(c, &from, env->session->request_id, RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE,
                           c->lost_why[0] ? c->lost_why : "the workers are starting");
            else if (c->draining)
                send_error(c, &from, env->session->request_id, RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE,
                           "the server is shutting down (draining)");
            else
                ext_on_session(c, &from, env->session);
            break;
        default:
            send_error(c, &from, NULL, RECUR__API__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                       "not a request (a response body sent to the coordinator)");
        }
        recur_proto_api_free(env);
    }
}

/* ------------------------------------------------------------------ worker messages */

static void send_worker(recur_coord_t *c, recur_internal_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_send_internal(c->workers, &c->wpeer, env, &err);
    c->last_to_worker_ms = now_ms();
    if (s != RECUR_OK) recur_log_warn("coordinator: send to the worker failed: %s", err.msg);
}

static void send_ready(recur_coord_t *c) {
    Recur__Internal__Ready rd = RECUR__INTERNAL__READY__INIT;
    rd.has_epoch = rd.has_heartbeat_interval_ms = 1;
    rd.epoch = c->epoch, rd.heartbeat_interval_ms = (uint32_t)c->cfg.heartbeat_ms;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_READY;
    env.ready = &rd;
    send_worker(c, &env);
}

static void refuse_worker(recur_coord_t *c, const char *why) {
    recur_log_err("coordinator: worker refused: %s", why);
    Recur__Internal__Shutdown sd = RECUR__INTERNAL__SHUTDOWN__INIT;
    sd.reason = (char *)why, sd.has_exit_code = 1, sd.exit_code = 1;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN;
    env.shutdown = &sd;
    send_worker(c, &env);
    snprintf(c->lost_why, sizeof c->lost_why, "worker refused: %s", why);
}

static void on_hello(recur_coord_t *c, const recur_msgsock_peer_t *from, const Recur__Internal__Hello *h) {
    if (c->ready && recur_msgsock_peer_equal(from, &c->wpeer) && h->pid == c->wpid) {
        send_ready(c);   /* a Hello re-sent before our Ready arrived */
        return;
    }
    if (c->ready) recur_coord_fail_all(c, "the worker group restarted");
    c->wpeer = *from;
    char why[320];
    const Recur__Internal__ModelIdentity *mi = h->model;
    if ((int32_t)h->tp != c->cfg.tp || (int32_t)h->pp != c->cfg.pp) {
        snprintf(why, sizeof why, "grid tp %u x pp %u, expected %d x %d", h->tp, h->pp, c->cfg.tp, c->cfg.pp);
        refuse_worker(c, why);
        return;
    }
    if (!mi || mi->n_vocab < 1 || h->n_slots < 2 || mi->n_vocab > INT32_MAX || h->n_slots > INT32_MAX) {
        refuse_worker(c, "hello without a model identity or with fewer than 2 slots");
        return;
    }
    if (c->cfg.sched.n_vocab > 0 && (int32_t)mi->n_vocab != c->cfg.sched.n_vocab) {
        snprintf(why, sizeof why, "model vocabulary %u, expected %d", mi->n_vocab, c->cfg.sched.n_vocab);
        refuse_worker(c, why);
        return;
    }
    recur_tokenizer_free(c->tok);
    c->tok = NULL;
    if (recur_tokenizer_pick(c->cfg.tokenizer_path, c->cfg.model_path, mi->arch, (int32_t)mi->n_vocab, &c->tok) !=
        RECUR_OK) {
        refuse_worker(c, "no tokenizer for this model");
        return;
    }
    /* xLSTM was trained with BOS 0 before every document (as `recur generate` does);
     * Hello does not carry the BOS id yet, so it is known here by arch. */
    c->bos = mi->arch && !strcmp(mi->arch, "xlstm") ? 0 : -1;
    recur_sched_config_t sc = c->cfg.sched;
    sc.n_slots = c->cfg.sched.n_slots >= 2 && c->cfg.sched.n_slots < (int32_t)h->n_slots ? c->cfg.sched.n_slots
                                                                                        : (int32_t)h->n_slots;
    sc.n_vocab = (int32_t)mi->n_vocab;
    if (sc.max_batch > sc.n_slots - 1) sc.max_batch = sc.n_slots - 1;
    sc.eos_id = recur_tokenizer_eos(c->tok);
    recur_sched_free(c->sched);
    c->sched = NULL;
    if (recur_sched_create(&sc, &c->sched) != RECUR_OK) {
        refuse_worker(c, "the scheduler's configuration is invalid (see the log)");
        return;
    }
    snprintf(c->arch, sizeof c->arch, "%s", mi->arch ? mi->arch : "");
    snprintf(c->ckpt, sizeof c->ckpt, "%s", mi->checkpoint_id ? mi->checkpoint_id : "");
    c->n_vocab = (int32_t)mi->n_vocab, c->n_slots = sc.n_slots;
    c->n_layer = (int32_t)mi->n_layer, c->n_embd = (int32_t)mi->n_embd, c->n_head = (int32_t)mi->n_head;
    c->wpid = h->pid;
    c->epoch++;
    c->ready = 1;
    c->lost_why[0] = '\0';
    c->in_flight = 0;
    c->last_from_worker_ms = now_ms();
    send_ready(c);
    ext_on_worker_ready(c, h);
    recur_log_info("coordinator: worker ready (%s, %s, vocab %d, %d slots, tp %d pp %d)", c->arch,
                   h->backend ? h->backend : "?", c->n_vocab, c->n_slots - 1, c->cfg.tp, c->cfg.pp);
}

static void maybe_step(recur_coord_t *c);

static void on_step_result(recur_coord_t *c, const Recur__Internal__StepResult *res) {
    if (!c->in_flight || res->step != c->flight_step) {
        recur_log_warn("coordinator: a result for step %llu, none in flight: ignored", (unsigned long long)res->step);
        return;
    }
    recur_sched_result_t sr = {.step = res->step, .status = recur_proto_status_code(res->status),
                               .message = res->status->message};
    recur_proto_error_t err;
    if (sr.status == RECUR_OK &&
        recur_proto_step_result_matches(res, c->flight_step, (size_t)c->plan_n_seq, c->logits, &err) !=
            RECUR_OK) {
        sr.status = RECUR_E_PROTO, sr.message = err.msg;
    }
    if (sr.status == RECUR_OK) sr.n_token = (int32_t)res->n_token, sr.token = res->token;
    if (sr.status == RECUR_OK) queue_logprobs(c, res);
    recur_metrics_step(c->cfg.metrics, now_ns() - c->flight_sent_ns, res->rank, res->timing ? res->timing->forward_us : 0,
                       res->timing ? res->timing->total_us : 0);
    uint64_t t = now_ms();
    if (recur_sched_complete(c->sched, &sr, t) != RECUR_OK) {
        recur_sched_result_t bad = {.step = res->step, .status = RECUR_E_PROTO, .message = recur_sched_error(c->sched)};
        recur_sched_complete(c->sched, &bad, t);
    }
    c->in_flight = 0;
    /* a failed step may leave a capture of the prefix cache with a wrong state: forget them */
    if (sr.status != RECUR_OK) ext_step_failed(c);
    if (sr.status == RECUR_OK && res->timing) {
        c->rtt_ns += c->result_ns - c->plan_sent_ns;
        c->w_total_us += res->timing->total_us, c->w_fwd_us += res->timing->forward_us;
        c->w_sample_us += res->timing->sample_us, c->w_n++;
    }
    /* The next plan goes out before this step's tokens are detokenized and streamed (in
     * maybe_step, after the send): the worker's next step overlaps that work. A stop string
     * found while streaming then ends its request with one step already planned for it;
     * the scheduler drops that sequence's token when the step completes. */
    maybe_step(c);
    c->result_ns = 0;
    drain_events(c);
}

static recur_status_t poll_workers(recur_coord_t *c) {
    for (;;) {
        recur_msgsock_peer_t from;
        recur_internal_envelope_t *env = NULL;
        recur_proto_error_t err;
        recur_status_t s = recur_msgsock_recv_internal(c->workers, 0, &from, &env, &err);
        if (s == RECUR_E_TIMEOUT) return RECUR_OK;
        if (s == RECUR_E_IO) return s;
        if (s != RECUR_OK) {
            recur_log_warn("coordinator: unreadable message from the worker: %s", err.msg);
            continue;
        }
        if (env->body_case == RECUR__INTERNAL__ENVELOPE__BODY_HELLO) {
            on_hello(c, &from, env->hello);
        } else if (!c->ready || !recur_msgsock_peer_equal(&from, &c->wpeer)) {
            char b[64];
            recur_log_warn("coordinator: %s from %s, not the ready worker: ignored",
                           recur_proto_internal_body_name(env->body_case), recur_msgsock_peer_str(&from, b, sizeof b));
        } else {
            c->result_ns = now_ns();
            c->last_from_worker_ms = c->result_ns / 1000000ull;
            if (env->body_case == RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT) on_step_result(c, env->step_result);
            else if (env->body_case == RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP_RESULT)
                ext_on_slot_op_result(c, env->slot_op_result);
            c->result_ns = 0;
            /* Heartbeat: its arrival is the point */
        }
        recur_proto_internal_free(env);
    }
}

/* Sends the scheduler's next plan when no step is in flight. */
static void maybe_step(recur_coord_t *c) {
    if (!c->ready || c->in_flight || !c->sched) return;
    recur_sched_plan_t p;
    /* Events (queue timeouts found by plan, the previous step's tokens) are drained after
     * the plan is sent, so the worker computes while we detokenize and stream. */
    if (recur_sched_plan(c->sched, now_ms(), &p) != RECUR_OK) {
        drain_events(c);
        return;
    }
    if (p.n_seq == 0) {
        drain_events(c);
        return;
    }
    if (grow((void **)&c->logits, &c->cap_seq, (size_t)p.n_seq, sizeof *c->logits) ||
        grow((void **)&c->rows, &c->cap_rows, (size_t)p.n_sample + 1, sizeof *c->rows) ||
        !(c->rowp = realloc(c->rowp, c->cap_rows * sizeof *c->rowp))) {
        recur_sched_result_t bad = {.step = p.step, .status = RECUR_E_NOMEM, .message = "out of memory"};
        recur_sched_complete(c->sched, &bad, now_ms());
        drain_events(c);
        return;
    }
    for (int32_t i = 0; i < p.n_seq; i++)
        c->logits[i] = p.sample[i] ? RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE
                                   : RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE;
    c->flight_lp = 0;
    for (int32_t i = 0, j = 0; i < p.n_sample; i++, j++) {
        Recur__Internal__SamplingRow r = RECUR__INTERNAL__SAMPLING_ROW__INIT;
        const recur_sample_row_t *s = &p.sampling[i];
        r.has_temperature = r.has_top_k = r.has_top_p = r.has_min_p = r.has_seed = r.has_step = 1;
        r.temperature = s->temperature, r.top_k = s->top_k, r.top_p = s->top_p, r.min_p = s->min_p;
        r.seed = s->seed, r.step = s->step;
        r.has_repetition_penalty = r.has_presence_penalty = r.has_frequency_penalty = r.has_logprobs = 1;
        r.repetition_penalty = s->repetition_penalty, r.presence_penalty = s->presence_penalty;
        r.frequency_penalty = s->frequency_penalty, r.logprobs = s->logprobs;
        c->flight_lp |= s->logprobs >= 0;
        /* the bias list stays with the request: found by the sequence's id */
        while (!p.sample[j]) j++;   /* row i is the plan's i-th sampled sequence */
        const creq_t *q = c->n_xreqs ? xreq_find(c, p.id[j], NULL) : NULL;
        if (q && q->n_bias) {
            r.n_bias_token = r.n_bias_value = (size_t)q->n_bias;
            r.bias_token = q->bias_tok, r.bias_value = q->bias_val;
        }
        c->rows[i] = r;
        c->rowp[i] = &c->rows[i];
    }
    if (c->flight_lp) {   /* on_step_result finds each sequence's request by these */
        if (grow((void **)&c->flight_ids, &c->cap_flight_ids, (size_t)p.n_seq, sizeof *c->flight_ids)) c->flight_lp = 0;
        else memcpy(c->flight_ids, p.id, (size_t)p.n_seq * sizeof *c->flight_ids);
    }
    Recur__Internal__StepPlan sp = RECUR__INTERNAL__STEP_PLAN__INIT;
    sp.has_step = 1, sp.step = p.step;
    sp.n_slot = sp.n_seq_len = sp.n_logits = (size_t)p.n_seq;
    sp.slot = (int32_t *)p.slot, sp.seq_len = (int32_t *)p.seq_len, sp.logits = c->logits;
    sp.n_tokens = (size_t)p.n_tokens, sp.tokens = (int32_t *)p.tokens;
    sp.n_sampling = (size_t)p.n_sample, sp.sampling = c->rowp;
    const int32_t *resets = p.reset_slots;
    int32_t n_resets = p.n_reset;
    if (c->n_ext) ext_plan_resets(c, &p, &resets, &n_resets);   /* states loaded instead: sent first */
    sp.n_reset_slots = (size_t)n_resets, sp.reset_slots = (int32_t *)resets;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN;
    env.step_plan = &sp;
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_send_internal(c->workers, &c->wpeer, &env, &err);
    const uint64_t sent = now_ns();
    if (c->result_ns) {   /* sent in answer to a result: the part of the step we add */
        c->crit_ns += sent - c->result_ns, c->crit_n++;
        c->period_ns += sent - c->plan_sent_ns, c->period_n++;
    }
    c->result_ns = 0;
    c->plan_sent_ns = sent;
    c->last_to_worker_ms = sent / 1000000ull;
    c->in_flight = 1;
    c->flight_step = p.step, c->flight_sent_ns = now_ns();
    c->plan_n_seq = p.n_seq;
    c->steps++;
    c->seqs += (uint64_t)p.n_seq;
    if (p.n_seq > c->max_batch_seen) c->max_batch_seen = p.n_seq;
    if (s != RECUR_OK) {   /* the requests of this step end with the reason */
        recur_sched_result_t bad = {.step = p.step, .status = s, .message = err.msg};
        recur_sched_complete(c->sched, &bad, now_ms());
        c->in_flight = 0;
    } else if (c->n_ext) {
        ext_plan_sent(c, &p);   /* prefix-cache captures, after the step */
    }
    drain_events(c);
}

static void heartbeat(recur_coord_t *c) {
    if (!c->ready) return;
    uint64_t t = now_ms();
    if (t - c->last_from_worker_ms > (uint64_t)c->cfg.worker_timeout_ms) {
        char why[160];
        snprintf(why, sizeof why, "the worker group stopped answering (silent for %d ms)", c->cfg.worker_timeout_ms);
        recur_log_err("coordinator: %s", why);
        recur_coord_fail_all(c, why);
        c->lost_count++;
        return;
    }
    if (t - c->last_to_worker_ms < (uint64_t)c->cfg.heartbeat_ms) return;
    Recur__Internal__Heartbeat hb = RECUR__INTERNAL__HEARTBEAT__INIT;
    hb.has_seq = hb.has_rank = hb.has_unix_time_ms = 1;
    hb.seq = ++c->hb_seq, hb.rank = -1, hb.unix_time_ms = (uint64_t)time(NULL) * 1000u;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_worker(c, &env);
}

/* The metrics' gauges (recur_metrics.h), after each pass of the loop; the sessions' figures
 * at most every 100 ms (counting sessions per tier walks the table). */
static void update_gauges(recur_coord_t *c) {
    recur_sched_stats_t st = {0};
    if (!c->cfg.metrics) return;
    if (c->sched) recur_sched_get_stats(c->sched, &st);
    recur_metrics_sched(c->cfg.metrics, st.running, st.waiting, st.slots_used, st.slots_total);
    recur_metrics_ready(c->cfg.metrics, c->ready);
    uint64_t t = now_ms();
    if (t - c->sess_published_ms < 100) return;
    c->sess_published_ms = t;
    recur_coord_session_stats_t ss;
    recur_coord_get_session_stats(c, &ss);
    recur_metrics_sessions_t m = {
        .fresh = ss.fresh, .in_slot = ss.in_slot, .in_host = ss.in_host, .on_disk = ss.on_disk, .busy = ss.busy,
        .host_bytes = (int64_t)ss.host_bytes_used, .turns = ss.turns, .cached_tokens = ss.turn_tokens_cached,
        .prefilled_tokens = ss.turn_tokens_prefilled, .saves = ss.saves, .save_failures = ss.save_failures,
        .loads = ss.loads, .load_failures = ss.load_failures, .to_host = ss.to_host, .to_disk = ss.to_disk,
        .lost = ss.lost, .expired = ss.expired, .deleted = ss.deleted, .prefix_lookups = ss.prefix_lookups,
        .prefix_hits = ss.prefix_hits, .prefix_tokens_saved = ss.prefix_tokens_saved,
        .prefix_entries = ss.prefix_entries};
    recur_metrics_sessions(c->cfg.metrics, &m);
}

/* Failed handshakes on the worker socket (CURVE): a peer without CURVE or with another server
 * key, which retries every 100 ms, so logged at most every 5 s. ZAP refusals are logged by
 * the handler (it knows the key and the address) and only counted here. */
static void poll_worker_handshakes(recur_coord_t *c) {
    char what[200];
    for (int kind; (kind = recur_msgsock_next_handshake_failure(c->workers, what, sizeof what)) != 0;) {
        if (kind == RECUR_MSGSOCK_HS_REFUSED) continue;
        c->hs_failed++;
        const int k = kind > 0 && kind < 5 ? kind : RECUR_MSGSOCK_HS_OTHER;
        uint64_t t = now_ms();
        if (c->hs_last_log_ms[k] && t - c->hs_last_log_ms[k] < 5000) {
            c->hs_unlogged[k]++;
            continue;
        }
        recur_log_warn("coordinator: a connection to the worker endpoint %s failed its CURVE handshake: %s "
                       "(%llu failed handshakes in all, %llu like this one not logged since the last message); "
                       "serving goes on with the workers already accepted",
                       recur_msgsock_endpoint(c->workers), what, (unsigned long long)c->hs_failed,
                       (unsigned long long)c->hs_unlogged[k]);
        c->hs_last_log_ms[k] = t;
        c->hs_unlogged[k] = 0;
    }
}

recur_status_t recur_coord_run(recur_coord_t *c, int (*tick)(recur_coord_t *c, void *ud), void *ud) {
    zmq_pollitem_t items[5];
    int n_items = 0;
    items[n_items++] = (zmq_pollitem_t){recur_msgsock_zmq(c->clients), 0, ZMQ_POLLIN, 0};
    items[n_items++] = (zmq_pollitem_t){recur_msgsock_zmq(c->workers), 0, ZMQ_POLLIN, 0};
    if (c->client_events) items[n_items++] = (zmq_pollitem_t){c->client_events, 0, ZMQ_POLLIN, 0};
    /* the handshakes of connecting workers wait for the ZAP answer: it is part of the loop */
    if (c->zap) items[n_items++] = (zmq_pollitem_t){recur_zap_socket(c->zap), 0, ZMQ_POLLIN, 0};
    if (c->worker_events) items[n_items++] = (zmq_pollitem_t){c->worker_events, 0, ZMQ_POLLIN, 0};
    for (;;) {
        if (tick && tick(c, ud)) return RECUR_OK;
        long timeout = 100;   /* the tick's period (signals, the child process) */
        if (c->sched) {
            uint64_t dl = recur_sched_next_deadline_ms(c->sched), t = now_ms();
            if (dl != UINT64_MAX) timeout = dl <= t ? 0 : (long)(dl - t) < timeout ? (long)(dl - t) : timeout;
        }
        int rc = zmq_poll(items, n_items, timeout);
        uint64_t t0 = now_ns();
        /* the iteration that takes the worker's Hello loads the tokenizer and builds the
         * scheduler (tens of ms for a 65,536-token vocabulary): a one-time cost, not a step's */
        const int was_ready = c->ready;
        if (rc < 0 && errno != EINTR) {
            recur_log_err("coordinator: zmq_poll: %s", zmq_strerror(errno));
            return RECUR_E_IO;
        }
        if (c->zap) recur_zap_handle(c->zap);
        if (c->worker_events) poll_worker_handshakes(c);
        if (poll_workers(c) != RECUR_OK || poll_clients(c) != RECUR_OK) return RECUR_E_IO;
        heartbeat(c);
        ext_tick(c);
        maybe_step(c);
        update_gauges(c);
        if (was_ready) c->busy_ns += now_ns() - t0;
    }
}

/* ------------------------------------------------------------------ lifetime */

recur_status_t recur_coord_create(void *zctx, const recur_coord_config_t *cfg, recur_coord_t **out) {
    *out = NULL;
    if (!zctx || !cfg || cfg->tp < 1 || cfg->pp < 1 || cfg->heartbeat_ms < 1 || cfg->worker_timeout_ms < 1 ||
        cfg->default_max_tokens < 1) {
        recur_log_err("coordinator: bad configuration (tp, pp, heartbeat_ms, worker_timeout_ms, default_max_tokens)");
        return RECUR_E_INVAL;
    }
    recur_coord_t *c = calloc(1, sizeof *c);
    if (!c) return RECUR_E_NOMEM;
    c->cfg = *cfg;
    c->bos = -1;
    snprintf(c->model_id, sizeof c->model_id, "%s", cfg->model_id ? cfg->model_id : "default");
    c->cfg.model_id = c->model_id;
    c->cfg.model_path = c->cfg.tokenizer_path = NULL;   /* kept below, copied */
    c->cfg.model_path = cfg->model_path ? strdup(cfg->model_path) : NULL;
    c->cfg.tokenizer_path = cfg->tokenizer_path ? strdup(cfg->tokenizer_path) : NULL;
    recur_msgsock_params_t cp = recur_msgsock_default_params();
    cp.send_timeout_ms = 0;   /* a slow client gets BUSY, it does not stall the loop */
    recur_msgsock_params_t wp = recur_msgsock_default_params();
    wp.router_handover = 1;   /* a restarted rank 0 takes its identity over */
    c->cfg.worker_curve = NULL;   /* the caller's: used here only */
    recur_status_t s = recur_msgsock_bind(zctx, cfg->client_bind, &cp, &c->clients);
    if (s == RECUR_OK && cfg->worker_curve) {
        /* the handler first: a CURVE server without one lets in any client that knows its
         * public key (libzmq's default) */
        char msg[256];
        s = recur_zap_create(zctx, cfg->worker_curve, &c->zap, msg, sizeof msg);
        if (s != RECUR_OK) recur_log_err("coordinator: %s", msg);
        wp.curve = cfg->worker_curve;
    }
    if (s == RECUR_OK) s = recur_msgsock_bind(zctx, cfg->worker_bind, &wp, &c->workers);
    if (s == RECUR_OK && c->zap && recur_msgsock_watch_handshakes(c->workers, zctx, &c->worker_events) != RECUR_OK)
        recur_log_warn("coordinator: cannot watch the worker socket's handshakes: workers refused for their keys "
                       "are still logged, those without CURVE are not");
    if (s == RECUR_OK && cfg->client_bind_extra && zmq_bind(recur_msgsock_zmq(c->clients), cfg->client_bind_extra)) {
        recur_log_err("coordinator: cannot bind %s: %s", cfg->client_bind_extra, zmq_strerror(errno));
        s = RECUR_E_IO;
    }
    if (s == RECUR_OK && recur_msgsock_watch_disconnects(c->clients, zctx, &c->client_events) != RECUR_OK)
        recur_log_warn("coordinator: cannot watch client disconnections: a client that goes away keeps its "
                       "request running until a send to it fails");
    if (s != RECUR_OK) {
        recur_coord_free(c);
        return s;
    }
    snprintf(c->lost_why, sizeof c->lost_why, "the workers are starting");
    if ((s = ext_create(c, cfg)) != RECUR_OK) {
        recur_coord_free(c);
        return s;
    }
    *out = c;
    return RECUR_OK;
}

void recur_coord_free(recur_coord_t *c) {
    if (!c) return;
    while (c->head) req_free(c, c->head);
    ext_destroy(c);
    recur_msgsock_close(c->clients);
    recur_msgsock_close(c->workers);
    recur_zap_free(c->zap);
    recur_sched_free(c->sched);
    recur_tokenizer_free(c->tok);
    free((char *)c->cfg.model_path);
    free((char *)c->cfg.tokenizer_path);
    free(c->logits);
    free(c->xreqs);
    free(c->flight_ids);
    free(c->rows);
    free(c->rowp);
    free(c->tokbuf);
    free(c->tokp);
    free(c->sendtext);
    free(c);
}

const char *recur_coord_client_endpoint(const recur_coord_t *c) { return recur_msgsock_endpoint(c->clients); }
const char *recur_coord_worker_endpoint(const recur_coord_t *c) { return recur_msgsock_endpoint(c->workers); }
int recur_coord_ready(const recur_coord_t *c) { return c->ready; }

void recur_coord_shutdown_workers(recur_coord_t *c, const char *reason) {
    if (c->sched) {
        for (creq_t *r = c->head; r; r = r->next) recur_sched_cancel(c->sched, r->id);
        drain_events(c);
    }
    if (!c->wpeer.len) return;
    Recur__Internal__Shutdown sd = RECUR__INTERNAL__SHUTDOWN__INIT;
    sd.reason = (char *)reason, sd.has_exit_code = 1, sd.exit_code = 0;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN;
    env.shutdown = &sd;
    send_worker(c, &env);
    c->ready = 0;
    snprintf(c->lost_why, sizeof c->lost_why, "shutting down");
}

void recur_coord_drain(recur_coord_t *c) {
    if (!c->draining) recur_log_info("coordinator: draining (%d requests in flight)", recur_coord_live_requests(c));
    c->draining = 1;
    ext_drain(c);
}

uint64_t recur_coord_lost_count(const recur_coord_t *c) { return c->lost_count; }

int recur_coord_live_requests(const recur_coord_t *c) {
    int n = 0;
    for (const creq_t *r = c->head; r; r = r->next) n++;
    return n + ext_pending(c);
}

void recur_coord_get_stats(const recur_coord_t *c, recur_coord_stats_t *st) {
    st->steps = c->steps, st->seqs = c->seqs, st->tokens_out = c->tokens_out, st->requests = c->requests;
    st->max_batch_seen = c->max_batch_seen;
    st->busy_us_per_step = c->steps ? (double)c->busy_ns / 1e3 / (double)c->steps : 0.0;
    st->critical_us_per_step = c->crit_n ? (double)c->crit_ns / 1e3 / (double)c->crit_n : 0.0;
    st->period_us_per_step = c->period_n ? (double)c->period_ns / 1e3 / (double)c->period_n : 0.0;
    st->round_trip_us = c->w_n ? (double)c->rtt_ns / 1e3 / (double)c->w_n : 0.0;
    st->worker_total_us = c->w_n ? (double)c->w_total_us / (double)c->w_n : 0.0;
    st->worker_forward_us = c->w_n ? (double)c->w_fwd_us / (double)c->w_n : 0.0;
    st->worker_sample_us = c->w_n ? (double)c->w_sample_us / (double)c->w_n : 0.0;
    recur_zap_counts(c->zap, &st->worker_keys_accepted, &st->worker_keys_refused);
    st->worker_handshakes_failed = c->hs_failed;
}

/* ------------------------------------------------------------------ sessions */
#include "recur_coord_sessions.inc"
