/* recur_client.h: a small C client of recur's protobuf API (proto/recur_api.proto) over
 * ZeroMQ, for programs that talk to `recur serve` (recur_loadgen, tests, users' code).
 *
 * One client is one DEALER socket connected to the coordinator's client endpoint. Many
 * Generate requests may be in flight on it at once; they are told apart by request_id
 * (the caller's, unique among its requests in flight). Responses are read one at a time
 * with recur_client_next, in arrival order, whatever request they belong to.
 *
 *   recur_client_t *c;
 *   recur_client_connect(zctx, "tcp://127.0.0.1:5555", &c);
 *   recur_client_params_t p = recur_client_default_params();
 *   p.max_tokens = 40, p.temperature = 0;
 *   recur_client_generate(c, "r1", "Once upon a time", NULL, 0, &p);
 *   recur_client_event_t ev;
 *   while (recur_client_next(c, 60000, &ev) == RECUR_OK) {
 *       if (ev.kind == RECUR_CLIENT_EV_TOKENS) fputs(ev.text, stdout);
 *       if (ev.kind != RECUR_CLIENT_EV_TOKENS) break;   // FINAL or ERROR of "r1"
 *   }
 *   recur_client_close(c);
 *
 * Ownership: the client owns its socket and the event's strings (valid until the next
 * recur_client_next or close); the ZeroMQ context is the caller's and must outlive it.
 * Thread-safety: none (a ZeroMQ socket belongs to one thread); use one client per thread. */
#ifndef RECUR_CLIENT_H
#define RECUR_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_client recur_client_t;   /* opaque; defined in recur_client.c */

/* A Generate request's options; a negative number (or NULL) leaves the server's default. */
typedef struct recur_client_params {
    int32_t max_tokens;          /* >= 1                           */
    float temperature;           /* 0: greedy                      */
    float top_p, min_p;
    int32_t top_k;
    float repetition_penalty, presence_penalty, frequency_penalty;   /* NaN: unset */
    int has_seed;
    uint64_t seed;
    const char *const *stop;     /* n_stop stop strings            */
    int n_stop;
    int ignore_eos;              /* 1: keep going past EOS         */
    int32_t priority;            /* 0 by default; higher first     */
    int32_t logprobs;            /* -1: none; n: top-n             */
    const char *model;           /* NULL: the served model         */
} recur_client_params_t;

recur_client_params_t recur_client_default_params(void);

typedef enum recur_client_event_kind {
    RECUR_CLIENT_EV_TOKENS = 0,  /* tokens of a Generate stream (text: their text, may be "") */
    RECUR_CLIENT_EV_FINAL,       /* the stream's last message (tokens and text may be there too) */
    RECUR_CLIENT_EV_ERROR,       /* the request was refused whole (ErrorResponse)             */
    RECUR_CLIENT_EV_CANCELLED,   /* CancelResponse (found says whether it was in flight)      */
    RECUR_CLIENT_EV_OTHER        /* a response this client did not ask about: skipped        */
} recur_client_event_kind_t;

typedef enum recur_client_finish {
    RECUR_CLIENT_FINISH_NONE = 0, RECUR_CLIENT_FINISH_STOP, RECUR_CLIENT_FINISH_LENGTH,
    RECUR_CLIENT_FINISH_CANCELLED, RECUR_CLIENT_FINISH_ERROR
} recur_client_finish_t;

typedef struct recur_client_event {
    recur_client_event_kind_t kind;
    const char *request_id;      /* "" when the server could not read it  */
    int32_t n_tokens;            /* TOKENS / FINAL: tokens in this message */
    const int32_t *token_ids;    /* [n_tokens]                             */
    const char *text;            /* their text, concatenated (UTF-8)       */
    recur_client_finish_t finish;            /* FINAL                      */
    uint32_t prompt_tokens, completion_tokens;   /* FINAL: usage           */
    int32_t error_code;          /* ERROR, or FINAL with finish ERROR: recur.api.ErrorCode */
    const char *message;         /* ERROR / FINAL error: why               */
    int found;                   /* CANCELLED                              */
} recur_client_event_t;

const char *recur_client_finish_str(recur_client_finish_t f);   /* "stop", "length", ... */

/* Connects (ZeroMQ connects lazily: a wrong endpoint shows as a timeout later). */
recur_status_t recur_client_connect(void *zctx, const char *endpoint, recur_client_t **out);
void recur_client_close(recur_client_t *c);   /* NULL is a no-op */

/* Sends a Generate: text (UTF-8) or token ids (text NULL). RECUR_E_INVAL: a parameter the
 * protocol refuses (the message in recur_client_error); RECUR_E_IO: the send failed. */
recur_status_t recur_client_generate(recur_client_t *c, const char *request_id, const char *text,
                                     const int32_t *ids, size_t n_ids, const recur_client_params_t *p);
recur_status_t recur_client_cancel(recur_client_t *c, const char *request_id);

/* The next response, waiting up to timeout_ms (RECUR_E_TIMEOUT when none came). */
recur_status_t recur_client_next(recur_client_t *c, int32_t timeout_ms, recur_client_event_t *ev);

/* Health, synchronously (other responses arriving meanwhile are dropped: call it when no
 * Generate is in flight on this client). serving: 1 when SERVING. */
typedef struct recur_client_health {
    int serving;
    uint32_t active_requests, queued_requests, free_slots;
    char detail[256];
} recur_client_health_t;
recur_status_t recur_client_health(recur_client_t *c, int32_t timeout_ms, recur_client_health_t *h);

const char *recur_client_error(const recur_client_t *c);   /* the last failure, for people */

#ifdef __cplusplus
}
#endif
#endif
