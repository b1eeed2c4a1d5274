/* recur_client.c: see recur_client.h. */
#include "recur_client.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_msgsock.h"
#include "recur_proto.h"

struct recur_client {
    recur_msgsock_t *sock;
    recur_api_envelope_t *last;   /* the envelope the last event points into */
    int32_t *ids;                 /* the last event's token ids */
    size_t cap_ids;
    char *text;                   /* the last event's text */
    size_t cap_text;
    char err[256];
};

recur_client_params_t recur_client_default_params(void) {
    recur_client_params_t p;
    memset(&p, 0, sizeof p);
    p.max_tokens = -1, p.temperature = -1.0f, p.top_p = -1.0f, p.min_p = -1.0f, p.top_k = -1;
    p.repetition_penalty = p.presence_penalty = p.frequency_penalty = NAN;
    p.logprobs = -1;
    return p;
}

const char *recur_client_finish_str(recur_client_finish_t f) {
    switch (f) {
    case RECUR_CLIENT_FINISH_STOP: return "stop";
    case RECUR_CLIENT_FINISH_LENGTH: return "length";
    case RECUR_CLIENT_FINISH_CANCELLED: return "cancelled";
    case RECUR_CLIENT_FINISH_ERROR: return "error";
    default: return "none";
    }
}

static void set_err(recur_client_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

const char *recur_client_error(const recur_client_t *c) { return c->err; }

recur_status_t recur_client_connect(void *zctx, const char *endpoint, recur_client_t **out) {
    *out = NULL;
    recur_client_t *c = calloc(1, sizeof *c);
    if (!c) return RECUR_E_NOMEM;
    recur_status_t s = recur_msgsock_connect(zctx, endpoint, NULL, &c->sock);
    if (s != RECUR_OK) {
        free(c);
        return s;
    }
    *out = c;
    return RECUR_OK;
}

void recur_client_close(recur_client_t *c) {
    if (!c) return;
    recur_proto_api_free(c->last);
    recur_msgsock_close(c->sock);
    free(c->ids);
    free(c->text);
    free(c);
}

static recur_status_t send_env(recur_client_t *c, recur_api_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_send_api(c->sock, NULL, env, &err);
    if (s != RECUR_OK) set_err(c, "%s", err.msg);
    return s;
}

recur_status_t recur_client_generate(recur_client_t *c, const char *request_id, const char *text,
                                     const int32_t *ids, size_t n_ids, const recur_client_params_t *p) {
    recur_client_params_t dp = recur_client_default_params();
    if (!p) p = &dp;
    Recur__Api__SamplingParams sp = RECUR__API__SAMPLING_PARAMS__INIT;
    if (p->max_tokens >= 0) sp.has_max_tokens = 1, sp.max_tokens = (uint32_t)p->max_tokens;
    if (p->temperature >= 0) sp.has_temperature = 1, sp.temperature = p->temperature;
    if (p->top_p >= 0) sp.has_top_p = 1, sp.top_p = p->top_p;
    if (p->min_p >= 0) sp.has_min_p = 1, sp.min_p = p->min_p;
    if (p->top_k >= 0) sp.has_top_k = 1, sp.top_k = p->top_k;
    if (!isnan(p->repetition_penalty)) sp.has_repetition_penalty = 1, sp.repetition_penalty = p->repetition_penalty;
    if (!isnan(p->presence_penalty)) sp.has_presence_penalty = 1, sp.presence_penalty = p->presence_penalty;
    if (!isnan(p->frequency_penalty)) sp.has_frequency_penalty = 1, sp.frequency_penalty = p->frequency_penalty;
    if (p->has_seed) sp.has_seed = 1, sp.seed = p->seed;
    if (p->ignore_eos) sp.has_ignore_eos = 1, sp.ignore_eos = 1;
    if (p->logprobs >= 0) sp.has_logprobs = 1, sp.logprobs = (uint32_t)p->logprobs;
    sp.n_stop = p->stop ? (size_t)p->n_stop : 0, sp.stop = (char **)p->stop;
    Recur__Api__TokenIds ti = RECUR__API__TOKEN_IDS__INIT;
    Recur__Api__GenerateRequest g = RECUR__API__GENERATE_REQUEST__INIT;
    g.request_id = (char *)request_id;
    g.model = (char *)p->model;
    if (text) {
        g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT, g.text = (char *)text;
    } else {
        ti.n_ids = n_ids, ti.ids = (int32_t *)ids;
        g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TOKEN_IDS, g.token_ids = &ti;
    }
    if (p->priority) g.has_priority = 1, g.priority = p->priority;
    g.sampling = &sp;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
    env.generate = &g;
    return send_env(c, &env);
}

recur_status_t recur_client_cancel(recur_client_t *c, const char *request_id) {
    Recur__Api__CancelRequest q = RECUR__API__CANCEL_REQUEST__INIT;
    q.request_id = (char *)request_id;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_CANCEL;
    env.cancel = &q;
    return send_env(c, &env);
}

static recur_status_t recv_env(recur_client_t *c, int32_t timeout_ms) {
    recur_proto_api_free(c->last);
    c->last = NULL;
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_recv_api(c->sock, timeout_ms, NULL, &c->last, &err);
    if (s == RECUR_E_TIMEOUT) set_err(c, "no answer within %d ms", (int)timeout_ms);
    else if (s != RECUR_OK) set_err(c, "%s", err.msg);
    return s;
}

static recur_status_t fill_tokens(recur_client_t *c, const Recur__Api__GenerateResponse *gr, recur_client_event_t *ev) {
    size_t nt = 0;
    for (size_t i = 0; i < gr->n_tokens; i++) nt += gr->tokens[i]->text ? strlen(gr->tokens[i]->text) : 0;
    if (gr->n_tokens > c->cap_ids) {
        int32_t *q = realloc(c->ids, gr->n_tokens * sizeof *q);
        if (!q) return RECUR_E_NOMEM;
        c->ids = q, c->cap_ids = gr->n_tokens;
    }
    if (nt + 1 > c->cap_text) {
        char *q = realloc(c->text, nt + 1);
        if (!q) return RECUR_E_NOMEM;
        c->text = q, c->cap_text = nt + 1;
    }
    size_t off = 0;
    for (size_t i = 0; i < gr->n_tokens; i++) {
        const Recur__Api__Token *t = gr->tokens[i];
        c->ids[i] = t->id;
        size_t k = t->text ? strlen(t->text) : 0;
        memcpy(c->text + off, t->text, k);
        off += k;
    }
    c->text[off] = '\0';
    ev->n_tokens = (int32_t)gr->n_tokens, ev->token_ids = c->ids, ev->text = c->text;
    return RECUR_OK;
}

recur_status_t recur_client_next(recur_client_t *c, int32_t timeout_ms, recur_client_event_t *ev) {
    memset(ev, 0, sizeof *ev);
    ev->request_id = ev->text = ev->message = "";
    RECUR_TRY(recv_env(c, timeout_ms));
    const recur_api_envelope_t *env = c->last;
    switch (env->body_case) {
    case RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE: {
        const Recur__Api__GenerateResponse *gr = env->generate_response;
        ev->request_id = gr->request_id ? gr->request_id : "";
        RECUR_TRY(fill_tokens(c, gr, ev));
        if (!gr->final) {
            ev->kind = RECUR_CLIENT_EV_TOKENS;
            return RECUR_OK;
        }
        const Recur__Api__GenerateFinal *f = gr->final;
        ev->kind = RECUR_CLIENT_EV_FINAL;
        ev->finish = f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_STOP        ? RECUR_CLIENT_FINISH_STOP
                     : f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_LENGTH    ? RECUR_CLIENT_FINISH_LENGTH
                     : f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_CANCELLED ? RECUR_CLIENT_FINISH_CANCELLED
                                                                                              : RECUR_CLIENT_FINISH_ERROR;
        if (f->usage) ev->prompt_tokens = f->usage->prompt_tokens, ev->completion_tokens = f->usage->completion_tokens;
        if (f->error) {
            ev->error_code = (int32_t)f->error->code;
            ev->message = f->error->message ? f->error->message : "";
        }
        return RECUR_OK;
    }
    case RECUR__API__ENVELOPE__BODY_ERROR: {
        const Recur__Api__ErrorResponse *er = env->error;
        ev->kind = RECUR_CLIENT_EV_ERROR;
        ev->request_id = er->request_id ? er->request_id : "";
        if (er->error) {
            ev->error_code = (int32_t)er->error->code;
            ev->message = er->error->message ? er->error->message : "";
        }
        return RECUR_OK;
    }
    case RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE:
        ev->kind = RECUR_CLIENT_EV_CANCELLED;
        ev->request_id = env->cancel_response->request_id ? env->cancel_response->request_id : "";
        ev->found = env->cancel_response->found;
        return RECUR_OK;
    default:
        ev->kind = RECUR_CLIENT_EV_OTHER;
        return RECUR_OK;
    }
}

recur_status_t recur_client_health(recur_client_t *c, int32_t timeout_ms, recur_client_health_t *h) {
    memset(h, 0, sizeof *h);
    Recur__Api__HealthRequest q = RECUR__API__HEALTH_REQUEST__INIT;
    q.request_id = (char *)"health";
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH;
    env.health = &q;
    RECUR_TRY(send_env(c, &env));
    for (;;) {
        RECUR_TRY(recv_env(c, timeout_ms));
        if (c->last->body_case == RECUR__API__ENVELOPE__BODY_ERROR) {
            set_err(c, "%s", c->last->error->error && c->last->error->error->message ? c->last->error->error->message
                                                                                       : "error");
            return RECUR_E_PROTO;
        }
        if (c->last->body_case != RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE) continue;
        const Recur__Api__HealthResponse *r = c->last->health_response;
        h->serving = r->status == RECUR__API__SERVING_STATUS__SERVING_STATUS_SERVING;
        h->active_requests = r->active_requests, h->queued_requests = r->queued_requests;
        h->free_slots = r->free_slots;
        snprintf(h->detail, sizeof h->detail, "%s", r->detail ? r->detail : "");
        return RECUR_OK;
    }
}
