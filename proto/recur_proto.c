/* recur_proto.c: pack/unpack of the API and internal envelopes, with the checks listed in
 * recur_proto.h. */
#include "recur_proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_log.h"
#include "recur_utf8.h"

/* ------------------------------------------------------------------ errors */

recur_status_t recur_proto_fail(recur_proto_error_t *err, recur_status_t s, const char *fmt, ...) {
    char buf[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (err)
        memcpy(err->msg, buf, sizeof(buf));
    else if (s != RECUR_E_TIMEOUT)
        recur_log_err("%s", buf);
    return s;
}

static void proto_err_clear_(recur_proto_error_t *err) {
    if (err) err->msg[0] = '\0';
}

/* The validators below fail with RECUR_E_FORMAT; pack turns that into RECUR_E_INVAL. */
#define PROTO_BAD(...) return recur_proto_fail(err, RECUR_E_FORMAT, __VA_ARGS__)
     #define PROTO_CHECK(expr) do { recur_status_t s_ = (expr); if (s_ != RECUR_OK) return s_; } while (0)
     
     /* ------------------------------------------------------------------ field checks */
     
     /* A string field: `required` means it must be present and non-empty. At most max_bytes
      * bytes of strict UTF-8 (what proto2 strings hold in every other language's runtime). */
     static recur_status_t check_str_(recur_proto_error_t *err, const char *what, const char *s, int required,
                                      size_t max_bytes) {
         if (!s || !*s) {
             if (required) PROTO_BAD("%s: missing (must be a non-empty string)", what);
        return RECUR_OK;
    }
    size_t n = strlen(s);
    if (n > max_bytes) PROTO_BAD("%s: %zu bytes, more than the limit of %zu", what, n, max_bytes);
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        size_t len = recur_utf8_len(p + i, n - i);
        if (len == 0) PROTO_BAD("%s: not valid UTF-8 at byte %zu", what, i);
        i += len;
    }
    return RECUR_OK;
}

static recur_status_t check_float_(recur_proto_error_t *err, const char *what, int has, float v, float lo,
                                   float hi, int lo_open) {
    if (!has) return RECUR_OK;
    if (!isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
        PROTO_BAD("%s = %g: must be a finite number in %c%g, %g]", what, (double)v, lo_open ? '(' : '[',
                  (double)lo, (double)hi);
    return RECUR_OK;
}

static int cmp_i32_(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Every v[i] >= 1 and no two equal (slots: 0 is the padding slot). */
static recur_status_t check_slots_(recur_proto_error_t *err, const char *what, const int32_t *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (v[i] < 1) PROTO_BAD("%s[%zu] = %d: slots start at 1 (slot 0 is the padding slot)", what, i, (int)v[i]);
    if (n < 2) return RECUR_OK;
    int32_t *c = malloc(n * sizeof(*c));
    if (!c) return recur_proto_fail(err, RECUR_E_NOMEM, "%s: out of memory checking %zu slots", what, n);
    memcpy(c, v, n * sizeof(*c));
    qsort(c, n, sizeof(*c), cmp_i32_);
    for (size_t i = 1; i < n; i++)
        if (c[i] == c[i - 1]) {
            int32_t dup = c[i];
            free(c);
            PROTO_BAD("%s: slot %d appears more than once", what, (int)dup);
        }
    free(c);
    return RECUR_OK;
}

/* ------------------------------------------------------------------ API checks */

static recur_status_t check_error_code_(recur_proto_error_t *err, const char *what, const Recur__Api__Error *e) {
    if (!e) PROTO_BAD("%s: missing", what);
    if (!e->has_code || e->code <= RECUR__API__ERROR_CODE__ERROR_CODE_UNSPECIFIED ||
        e->code > RECUR__API__ERROR_CODE__ERROR_CODE_ALREADY_EXISTS)
        PROTO_BAD("%s.code: missing or unknown (%d)", what, e->has_code ? (int)e->code : 0);
    char w[96];
    snprintf(w, sizeof(w), "%s.message", what);
    return check_str_(err, w, e->message, 0, RECUR_PROTO_MAX_MESSAGE_BYTES);
}

static recur_status_t check_request_id_(recur_proto_error_t *err, const char *what, const char *id, int required) {
    return check_str_(err, what, id, required, RECUR_PROTO_MAX_ID_BYTES);
}

static recur_status_t check_sampling_params_(recur_proto_error_t *err, const Recur__Api__SamplingParams *p) {
    if (!p) return RECUR_OK;
    PROTO_CHECK(check_float_(err, "generate.sampling.temperature", p->has_temperature, p->temperature, 0.0f,
                             HUGE_VALF, 0));
    PROTO_CHECK(check_float_(err, "generate.sampling.top_p", p->has_top_p, p->top_p, 0.0f, 1.0f, 1));
    if (p->has_top_k && p->top_k < 0) PROTO_BAD("generate.sampling.top_k = %d: must be >= 0", (int)p->top_k);
    PROTO_CHECK(check_float_(err, "generate.sampling.min_p", p->has_min_p, p->min_p, 0.0f, 1.0f, 0));
    PROTO_CHECK(check_float_(err, "generate.sampling.repetition_penalty", p->has_repetition_penalty,
                             p->repetition_penalty, 0.0f, HUGE_VALF, 1));
    PROTO_CHECK(check_float_(err, "generate.sampling.presence_penalty", p->has_presence_penalty,
                             p->presence_penalty, -2.0f, 2.0f, 0));
    PROTO_CHECK(check_float_(err, "generate.sampling.frequency_penalty", p->has_frequency_penalty,
                             p->frequency_penalty, -2.0f, 2.0f, 0));
    if (p->has_max_tokens && p->max_tokens < 1) PROTO_BAD("generate.sampling.max_tokens = 0: must be >= 1");
    if (p->n_stop > RECUR_PROTO_MAX_STOP)
        PROTO_BAD("generate.sampling.stop: %zu strings, more than the limit of %d", p->n_stop, RECUR_PROTO_MAX_STOP);
    for (size_t i = 0; i < p->n_stop; i++) {
        char w[64];
        snprintf(w, sizeof(w), "generate.sampling.stop[%zu]", i);
        PROTO_CHECK(check_str_(err, w, p->stop[i], 1, RECUR_PROTO_MAX_STOP_BYTES));
    }
    if (p->n_stop_token_ids > RECUR_PROTO_MAX_STOP_TOKENS)
        PROTO_BAD("generate.sampling.stop_token_ids: %zu ids, more than the limit of %d", p->n_stop_token_ids,
                  RECUR_PROTO_MAX_STOP_TOKENS);
    for (size_t i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0)
            PROTO_BAD("generate.sampling.stop_token_ids[%zu] = %d: must be >= 0", i, (int)p->stop_token_ids[i]);
    if (p->has_logprobs && p->logprobs > RECUR_PROTO_MAX_LOGPROBS)
        PROTO_BAD("generate.sampling.logprobs = %u: more than the limit of %d", (unsigned)p->logprobs,
                  RECUR_PROTO_MAX_LOGPROBS);
    if (p->n_logit_bias > RECUR_PROTO_MAX_LOGIT_BIAS)
        PROTO_BAD("generate.sampling.logit_bias: %zu entries, more than the limit of %d", p->n_logit_bias,
                  RECUR_PROTO_MAX_LOGIT_BIAS);
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        const Recur__Api__LogitBias *b = p->logit_bias[i];
        if (!b->has_token_id || b->token_id < 0)
            PROTO_BAD("generate.sampling.logit_bias[%zu].token_id: missing or negative", i);
        if (!b->has_bias || !(b->bias >= -100.0f && b->bias <= 100.0f))
            PROTO_BAD("generate.sampling.logit_bias[%zu].bias: missing or outside [-100, 100]", i);
        for (size_t j = 0; j < i; j++)
            if (p->logit_bias[j]->token_id == b->token_id)
                PROTO_BAD("generate.sampling.logit_bias: token %d appears twice", (int)b->token_id);
    }
    return RECUR_OK;
}

static recur_status_t check_generate_(recur_proto_error_t *err, const Recur__Api__GenerateRequest *r) {
    PROTO_CHECK(check_request_id_(err, "generate.request_id", r->request_id, 1));
    PROTO_CHECK(check_str_(err, "generate.model", r->model, 0, RECUR_PROTO_MAX_NAME_BYTES));
    switch (r->prompt_case) {
    case RECUR__API__GENERATE_REQUEST__PROMPT_TEXT:
        /* the message size bounds its length */
        PROTO_CHECK(check_str_(err, "generate.text", r->text, 1, SIZE_MAX));
        break;
    case RECUR__API__GENERATE_REQUEST__PROMPT_TOKEN_IDS:
        if (!r->token_ids || r->token_ids->n_ids == 0) PROTO_BAD("generate.token_ids: empty prompt");
        for (size_t i = 0; i < r->token_ids->n_ids; i++)
            if (r->token_ids->ids[i] < 0)
                PROTO_BAD("generate.token_ids[%zu] = %d: token ids are >= 0", i, (int)r->token_ids->ids[i]);
        break;
    default:
        PROTO_BAD("generate: no prompt (set text or token_ids)");
    }
    PROTO_CHECK(check_sampling_params_(err, r->sampling));
    PROTO_CHECK(check_str_(err, "generate.session_id", r->session_id, 0, RECUR_PROTO_MAX_ID_BYTES));
    return RECUR_OK;
}

static recur_status_t check_token_(recur_proto_error_t *err, size_t i, const Recur__Api__Token *t) {
    char w[96];
    if (!t->has_id || t->id < 0) PROTO_BAD("generate_response.tokens[%zu].id: missing or negative", i);
    snprintf(w, sizeof(w), "generate_response.tokens[%zu].text", i);
    PROTO_CHECK(check_str_(err, w, t->text, 0, SIZE_MAX));
    if (t->has_logprob && isnan(t->logprob)) PROTO_BAD("generate_response.tokens[%zu].logprob: NaN", i);
    if (t->n_top_logprobs > RECUR_PROTO_MAX_LOGPROBS)
        PROTO_BAD("generate_response.tokens[%zu].top_logprobs: %zu entries, more than the limit of %d", i,
                  t->n_top_logprobs, RECUR_PROTO_MAX_LOGPROBS);
    for (size_t j = 0; j < t->n_top_logprobs; j++) {
        const Recur__Api__TopLogprob *tl = t->top_logprobs[j];
        if (!tl->has_id || tl->id < 0)
            PROTO_BAD("generate_response.tokens[%zu].top_logprobs[%zu].id: missing or negative", i, j);
        if (tl->has_logprob && isnan(tl->logprob))
            PROTO_BAD("generate_response.tokens[%zu].top_logprobs[%zu].logprob: NaN", i, j);
        snprintf(w, sizeof(w), "generate_response.tokens[%zu].top_logprobs[%zu].text", i, j);
        PROTO_CHECK(check_str_(err, w, tl->text, 0, SIZE_MAX));
    }
    return RECUR_OK;
}

static recur_status_t check_generate_response_(recur_proto_error_t *err, const Recur__Api__GenerateResponse *r) {
    PROTO_CHECK(check_request_id_(err, "generate_response.request_id", r->request_id, 1));
    for (size_t i = 0; i < r->n_tokens; i++) PROTO_CHECK(check_token_(err, i, r->tokens[i]));
    const Recur__Api__GenerateFinal *f = r->final;
    if (f) {
        if (!f->has_finish_reason || f->finish_reason <= RECUR__API__FINISH_REASON__FINISH_REASON_UNSPECIFIED ||
            f->finish_reason > RECUR__API__FINISH_REASON__FINISH_REASON_ERROR)
            PROTO_BAD("generate_response.final.finish_reason: missing or unknown (%d)",
                      f->has_finish_reason ? (int)f->finish_reason : 0);
        int is_error = f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_ERROR;
        if (is_error) PROTO_CHECK(check_error_code_(err, "generate_response.final.error", f->error));
        else if (f->error) PROTO_BAD("generate_response.final.error: set, but finish_reason is not ERROR");
    }
    return RECUR_OK;
}

static recur_status_t check_model_info_(recur_proto_error_t *err, size_t i, const Recur__Api__ModelInfo *m) {
    char w[64];
    snprintf(w, sizeof(w), "list_models_response.models[%zu].id", i);
    PROTO_CHECK(check_str_(err, w, m->id, 1, RECUR_PROTO_MAX_NAME_BYTES));
    snprintf(w, sizeof(w), "list_models_response.models[%zu].arch", i);
    PROTO_CHECK(check_str_(err, w, m->arch, 0, RECUR_PROTO_MAX_NAME_BYTES));
    snprintf(w, sizeof(w), "list_models_response.models[%zu].checkpoint_id", i);
    return check_str_(err, w, m->checkpoint_id, 0, RECUR_PROTO_MAX_NAME_BYTES);
}

static recur_status_t check_chunk_(recur_proto_error_t *err, const char *what, const Recur__Api__StateChunk *c) {
    if (!c->has_offset || !c->has_total || !c->has_data)
        PROTO_BAD("%s: offset, total and data must be set", what);
    if (c->data.len > RECUR_PROTO_MAX_CHUNK_BYTES)
        PROTO_BAD("%s.data: %zu bytes, more than the limit of %d", what, c->data.len, RECUR_PROTO_MAX_CHUNK_BYTES);
    if (c->offset > c->total || c->data.len > c->total - c->offset)
        PROTO_BAD("%s: bytes [%llu, %llu) do not fit in a total of %llu", what, (unsigned long long)c->offset,
                  (unsigned long long)(c->offset + c->data.len), (unsigned long long)c->total);
    return RECUR_OK;
}

static recur_status_t check_session_info_(recur_proto_error_t *err, const char *what, const Recur__Api__SessionInfo *i) {
    char w[96];
    snprintf(w, sizeof w, "%s.session_id", what);
    PROTO_CHECK(check_str_(err, w, i->session_id, 1, RECUR_PROTO_MAX_ID_BYTES));
    snprintf(w, sizeof w, "%s.model", what);
    PROTO_CHECK(check_str_(err, w, i->model, 0, RECUR_PROTO_MAX_NAME_BYTES));
    if (i->has_tier && (i->tier <= RECUR__API__SESSION_TIER__SESSION_TIER_UNSPECIFIED ||
                        i->tier > RECUR__API__SESSION_TIER__SESSION_TIER_DISK))
        PROTO_BAD("%s.tier: unknown (%d)", what, (int)i->tier);
    return RECUR_OK;
}

static recur_status_t check_session_(recur_proto_error_t *err, const Recur__Api__SessionRequest *s) {
    PROTO_CHECK(check_request_id_(err, "session.request_id", s->request_id, 0));
    if (!s->has_op || s->op <= RECUR__API__SESSION_OP__SESSION_OP_UNSPECIFIED ||
        s->op > RECUR__API__SESSION_OP__SESSION_OP_IMPORT)
        PROTO_BAD("session.op: missing or unknown (%d)", s->has_op ? (int)s->op : 0);
    const int op = (int)s->op;
    const int id_needed = op == RECUR__API__SESSION_OP__SESSION_OP_GET || op == RECUR__API__SESSION_OP__SESSION_OP_DELETE ||
                          op == RECUR__API__SESSION_OP__SESSION_OP_FORK || op == RECUR__API__SESSION_OP__SESSION_OP_EXPORT;
    if (op == RECUR__API__SESSION_OP__SESSION_OP_LIST && s->session_id) PROTO_BAD("session.session_id: set on a LIST");
    PROTO_CHECK(check_str_(err, "session.session_id", s->session_id, id_needed, RECUR_PROTO_MAX_ID_BYTES));
    if (s->session_id && !*s->session_id) PROTO_BAD("session.session_id: empty");
    PROTO_CHECK(check_str_(err, "session.model", s->model, 0, RECUR_PROTO_MAX_NAME_BYTES));
    if (s->model && op != RECUR__API__SESSION_OP__SESSION_OP_CREATE) PROTO_BAD("session.model: set on an op other than CREATE");
    PROTO_CHECK(check_str_(err, "session.new_session_id", s->new_session_id, 0, RECUR_PROTO_MAX_ID_BYTES));
    if (s->new_session_id && (op != RECUR__API__SESSION_OP__SESSION_OP_FORK || !*s->new_session_id))
        PROTO_BAD("session.new_session_id: set on an op other than FORK, or empty");
    if (op == RECUR__API__SESSION_OP__SESSION_OP_IMPORT) {
        if (!s->chunk) PROTO_BAD("session.chunk: an IMPORT needs it");
        return check_chunk_(err, "session.chunk", s->chunk);
    }
    if (s->chunk) PROTO_BAD("session.chunk: set on an op other than IMPORT");
    return RECUR_OK;
}

static recur_status_t check_session_response_(recur_proto_error_t *err, const Recur__Api__SessionResponse *s) {
    PROTO_CHECK(check_request_id_(err, "session_response.request_id", s->request_id, 0));
    if (s->info) PROTO_CHECK(check_session_info_(err, "session_response.info", s->info));
    for (size_t i = 0; i < s->n_sessions; i++) {
        char w[64];
        snprintf(w, sizeof w, "session_response.sessions[%zu]", i);
        PROTO_CHECK(check_session_info_(err, w, s->sessions[i]));
    }
    if (s->chunk) PROTO_CHECK(check_chunk_(err, "session_response.chunk", s->chunk));
    if (s->error) PROTO_CHECK(check_error_code_(err, "session_response.error", s->error));
    return RECUR_OK;
}

recur_status_t recur_proto_api_validate(const recur_api_envelope_t *env, recur_proto_error_t *err) {
    proto_err_clear_(err);
    if (!env) PROTO_BAD("api envelope: NULL");
    switch (env->body_case) {
    case RECUR__API__ENVELOPE__BODY_GENERATE:
        return check_generate_(err, env->generate);
    case RECUR__API__ENVELOPE__BODY_CANCEL:
        return check_request_id_(err, "cancel.request_id", env->cancel->request_id, 1);
    case RECUR__API__ENVELOPE__BODY_SESSION:
        return check_session_(err, env->session);
    case RECUR__API__ENVELOPE__BODY_LIST_MODELS:
        return check_request_id_(err, "list_models.request_id", env->list_models->request_id, 0);
    case RECUR__API__ENVELOPE__BODY_HEALTH:
        return check_request_id_(err, "health.request_id", env->health->request_id, 0);
    case RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE:
        return check_generate_response_(err, env->generate_response);
    case RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE:
        return check_request_id_(err, "cancel_response.request_id", env->cancel_response->request_id, 1);
    case RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE:
        return check_session_response_(err, env->session_response);
    case RECUR__API__ENVELOPE__BODY_LIST_MODELS_RESPONSE: {
        const Recur__Api__ListModelsResponse *l = env->list_models_response;
        PROTO_CHECK(check_request_id_(err, "list_models_response.request_id", l->request_id, 0));
        for (size_t i = 0; i < l->n_models; i++) PROTO_CHECK(check_model_info_(err, i, l->models[i]));
        return RECUR_OK;
    }
    case RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE: {
        const Recur__Api__HealthResponse *h = env->health_response;
        PROTO_CHECK(check_request_id_(err, "health_response.request_id", h->request_id, 0));
        if (!h->has_status || h->status <= RECUR__API__SERVING_STATUS__SERVING_STATUS_UNSPECIFIED ||
            h->status > RECUR__API__SERVING_STATUS__SERVING_STATUS_NOT_SERVING)
            PROTO_BAD("health_response.status: missing or unknown (%d)", h->has_status ? (int)h->status : 0);
        return check_str_(err, "health_response.detail", h->detail, 0, RECUR_PROTO_MAX_MESSAGE_BYTES);
    }
    case RECUR__API__ENVELOPE__BODY_ERROR:
        PROTO_CHECK(check_request_id_(err, "error.request_id", env->error->request_id, 0));
        return check_error_code_(err, "error.error", env->error->error);
    case RECUR__API__ENVELOPE__BODY__NOT_SET:
        break;
    default:
        PROTO_BAD("api envelope: unknown body %d", (int)env->body_case);
    }
    PROTO_BAD("api envelope: no body");
}

int recur_proto_api_is_request(const recur_api_envelope_t *env) {
    if (!env) return 0;
    switch (env->body_case) {
    case RECUR__API__ENVELOPE__BODY_GENERATE:
    case RECUR__API__ENVELOPE__BODY_CANCEL:
    case RECUR__API__ENVELOPE__BODY_SESSION:
    case RECUR__API__ENVELOPE__BODY_LIST_MODELS:
    case RECUR__API__ENVELOPE__BODY_HEALTH:
        return 1;
    default:
        return 0;
    }
}

const char *recur_proto_api_body_name(Recur__Api__Envelope__BodyCase body) {
    switch (body) {
    case RECUR__API__ENVELOPE__BODY__NOT_SET:                return "none";
    case RECUR__API__ENVELOPE__BODY_GENERATE:                return "generate";
    case RECUR__API__ENVELOPE__BODY_CANCEL:                  return "cancel";
    case RECUR__API__ENVELOPE__BODY_SESSION:                 return "session";
    case RECUR__API__ENVELOPE__BODY_LIST_MODELS:             return "list_models";
    case RECUR__API__ENVELOPE__BODY_HEALTH:                  return "health";
    case RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE:       return "generate_response";
    case RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE:         return "cancel_response";
    case RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE:        return "session_response";
    case RECUR__API__ENVELOPE__BODY_LIST_MODELS_RESPONSE:    return "list_models_response";
    case RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE:         return "health_response";
    case RECUR__API__ENVELOPE__BODY_ERROR:                   return "error";
    default:                                                 return "unknown";
    }
}

/* ------------------------------------------------------------------ internal checks */

static recur_status_t check_status_(recur_proto_error_t *err, const char *what, const Recur__Internal__Status *st) {
    if (!st || !st->has_code) PROTO_BAD("%s: missing", what);
    char w[64];
    snprintf(w, sizeof(w), "%s.message", what);
    PROTO_CHECK(check_str_(err, w, st->message, st->code != 0, RECUR_PROTO_MAX_MESSAGE_BYTES));
    return RECUR_OK;
}

#define PROTO_NEED(cond, ...) do { if (!(cond)) PROTO_BAD(__VA_ARGS__); } while (0)

static recur_status_t check_hello_(recur_proto_error_t *err, const Recur__Internal__Hello *h) {
    PROTO_NEED(h->has_rank && h->has_world_size && h->has_tp && h->has_pp && h->has_tp_rank && h->has_pp_rank,
               "hello: the rank grid (rank, world_size, tp, pp, tp_rank, pp_rank) must be set");
    PROTO_NEED(h->tp >= 1 && h->pp >= 1 && (uint64_t)h->tp * h->pp == h->world_size,
               "hello: tp %u x pp %u does not make world_size %u", (unsigned)h->tp, (unsigned)h->pp,
               (unsigned)h->world_size);
    PROTO_NEED(h->tp_rank < h->tp && h->pp_rank < h->pp, "hello: tp_rank %u / pp_rank %u outside tp %u x pp %u",
               (unsigned)h->tp_rank, (unsigned)h->pp_rank, (unsigned)h->tp, (unsigned)h->pp);
    PROTO_NEED((uint64_t)h->pp_rank * h->tp + h->tp_rank == h->rank,
               "hello: rank %u is not pp_rank %u * tp %u + tp_rank %u", (unsigned)h->rank, (unsigned)h->pp_rank,
               (unsigned)h->tp, (unsigned)h->tp_rank);
    PROTO_CHECK(check_str_(err, "hello.host", h->host, 1, RECUR_PROTO_MAX_NAME_BYTES));
    PROTO_CHECK(check_str_(err, "hello.backend", h->backend, 1, RECUR_PROTO_MAX_NAME_BYTES));
    PROTO_CHECK(check_str_(err, "hello.software_version", h->software_version, 0, RECUR_PROTO_MAX_NAME_BYTES));
    const Recur__Internal__ModelIdentity *m = h->model;
    PROTO_NEED(m, "hello.model: missing");
    PROTO_CHECK(check_str_(err, "hello.model.arch", m->arch, 1, RECUR_PROTO_MAX_NAME_BYTES));
    PROTO_CHECK(check_str_(err, "hello.model.checkpoint_id", m->checkpoint_id, 1, RECUR_PROTO_MAX_NAME_BYTES));
    PROTO_CHECK(check_str_(err, "hello.model.content_hash", m->content_hash, 0, RECUR_PROTO_MAX_NAME_BYTES));
    PROTO_CHECK(check_str_(err, "hello.model.state_dtype", m->state_dtype, 0, RECUR_PROTO_MAX_NAME_BYTES));
    PROTO_NEED(m->has_n_vocab && m->n_vocab >= 1 && m->has_n_layer && m->n_layer >= 1 && m->has_n_embd &&
                   m->n_embd >= 1 && m->has_n_head && m->n_head >= 1,
               "hello.model: n_vocab, n_layer, n_embd and n_head must be set and >= 1");
    PROTO_NEED(h->has_n_slots && h->n_slots >= 2, "hello.n_slots: must be >= 2 (slot 0 is the padding slot)");
    PROTO_NEED(h->has_state_bytes_per_slot && h->state_bytes_per_slot >= 1,
               "hello.state_bytes_per_slot: must be set and >= 1");
    return RECUR_OK;
}

static recur_status_t check_sampling_row_(recur_proto_error_t *err, size_t i, const Recur__Internal__SamplingRow *r) {
    PROTO_NEED(r->has_temperature && r->has_top_k && r->has_top_p && r->has_min_p && r->has_seed && r->has_step,
               "step_plan.sampling[%zu]: temperature, top_k, top_p, min_p, seed and step must all be set", i);
    PROTO_NEED(isfinite(r->temperature) && isfinite(r->top_p) && isfinite(r->min_p),
               "step_plan.sampling[%zu]: temperature, top_p and min_p must be finite", i);
    PROTO_NEED((!r->has_repetition_penalty || (isfinite(r->repetition_penalty) && r->repetition_penalty > 0.0f)) &&
                   (!r->has_presence_penalty || isfinite(r->presence_penalty)) &&
                   (!r->has_frequency_penalty || isfinite(r->frequency_penalty)),
               "step_plan.sampling[%zu]: penalties must be finite (repetition > 0)", i);
    PROTO_NEED(!r->has_logprobs || (r->logprobs >= -1 && r->logprobs <= RECUR_PROTO_MAX_LOGPROBS),
               "step_plan.sampling[%zu].logprobs = %d: must be in [-1, %d]", i, (int)r->logprobs,
               RECUR_PROTO_MAX_LOGPROBS);
    PROTO_NEED(r->n_bias_token == r->n_bias_value && r->n_bias_token <= RECUR_PROTO_MAX_LOGIT_BIAS,
               "step_plan.sampling[%zu]: %zu bias tokens and %zu bias values (equal, <= %d)", i, r->n_bias_token,
               r->n_bias_value, RECUR_PROTO_MAX_LOGIT_BIAS);
    for (size_t j = 0; j < r->n_bias_token; j++)
        PROTO_NEED(r->bias_token[j] >= 0 && isfinite(r->bias_value[j]),
                   "step_plan.sampling[%zu].bias[%zu]: token must be >= 0 and the bias finite", i, j);
    return RECUR_OK;
}

static recur_status_t check_step_plan_(recur_proto_error_t *err, const Recur__Internal__StepPlan *p) {
    PROTO_NEED(p->has_step, "step_plan.step: missing");
    size_t n_seq = p->n_slot;
    PROTO_NEED(n_seq >= 1, "step_plan: no sequences");
    PROTO_NEED(p->n_seq_len == n_seq && p->n_logits == n_seq,
               "step_plan: %zu slots but %zu seq_len and %zu logits entries (one each per sequence)", n_seq,
               p->n_seq_len, p->n_logits);
    PROTO_CHECK(check_slots_(err, "step_plan.slot", p->slot, n_seq));
    uint64_t total = 0;
    size_t n_sample = 0;
    for (size_t i = 0; i < n_seq; i++) {
        PROTO_NEED(p->seq_len[i] >= 1, "step_plan.seq_len[%zu] = %d: every sequence has >= 1 token", i,
                   (int)p->seq_len[i]);
        total += (uint64_t)p->seq_len[i];   /* <= 2^31 * n_seq: no overflow */
        if (p->logits[i] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE) n_sample++;
        else PROTO_NEED(p->logits[i] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE,
                        "step_plan.logits[%zu] = %d: unknown mode", i, (int)p->logits[i]);
    }
    PROTO_NEED(total == p->n_tokens, "step_plan: seq_len adds up to %llu tokens but tokens has %zu",
               (unsigned long long)total, p->n_tokens);
    for (size_t i = 0; i < p->n_tokens; i++)
        PROTO_NEED(p->tokens[i] >= 0, "step_plan.tokens[%zu] = %d: token ids are >= 0", i, (int)p->tokens[i]);
    PROTO_NEED(p->n_sampling == n_sample, "step_plan: %zu sequences sample but %zu sampling rows were sent",
               n_sample, p->n_sampling);
    for (size_t i = 0; i < p->n_sampling; i++) PROTO_CHECK(check_sampling_row_(err, i, p->sampling[i]));
    return check_slots_(err, "step_plan.reset_slots", p->reset_slots, p->n_reset_slots);
}

static recur_status_t check_step_result_(recur_proto_error_t *err, const Recur__Internal__StepResult *r) {
    PROTO_NEED(r->has_step && r->has_rank, "step_result: step and rank must be set");
    PROTO_CHECK(check_status_(err, "step_result.status", r->status));
    size_t n = r->n_token;
    PROTO_NEED(r->status->code != 0 || n >= 1, "step_result: success without tokens");
    for (size_t i = 0; i < n; i++)
        PROTO_NEED(r->token[i] >= -1, "step_result.token[%zu] = %d: must be >= -1", i, (int)r->token[i]);
    PROTO_NEED(r->n_logprob == 0 || r->n_logprob == n, "step_result: %zu logprobs for %zu tokens", r->n_logprob, n);
    for (size_t i = 0; i < r->n_logprob; i++)
        PROTO_NEED(!isnan(r->logprob[i]) && r->logprob[i] != HUGE_VALF, "step_result.logprob[%zu]: NaN or +inf", i);
    uint32_t top_n = r->has_top_n ? r->top_n : 0;
    PROTO_NEED(top_n <= RECUR_PROTO_MAX_LOGPROBS, "step_result.top_n = %u: more than the limit of %d",
               (unsigned)top_n, RECUR_PROTO_MAX_LOGPROBS);
    PROTO_NEED(r->n_top_token == n * top_n && r->n_top_logprob == n * top_n,
               "step_result: %zu top tokens and %zu top logprobs, expected %zu tokens x top_n %u", r->n_top_token,
               r->n_top_logprob, n, (unsigned)top_n);
    for (size_t i = 0; i < r->n_top_token; i++) {
        PROTO_NEED(r->top_token[i] >= -1, "step_result.top_token[%zu] = %d: must be >= -1", i, (int)r->top_token[i]);
        PROTO_NEED(!isnan(r->top_logprob[i]), "step_result.top_logprob[%zu]: NaN", i);
    }
    return RECUR_OK;
}

static recur_status_t check_slot_op_(recur_proto_error_t *err, const Recur__Internal__SlotOp *o) {
    PROTO_NEED(o->has_op_id, "slot_op.op_id: missing");
    PROTO_NEED(o->has_kind && o->kind >= RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET &&
                   o->kind <= RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD_TUNED,
               "slot_op.kind: missing or unknown (%d)", o->has_kind ? (int)o->kind : 0);
    PROTO_NEED(!o->has_slot || o->slot >= 1, "slot_op.slot = %d: must be >= 1 (slot 0 is the padding slot)",
               (int)o->slot);
    PROTO_NEED(!o->has_key || o->key >= 1, "slot_op.key: must be >= 1");
    PROTO_NEED(!o->has_src_slot || o->src_slot >= 1, "slot_op.src_slot = %d: must be >= 1", (int)o->src_slot);
    PROTO_NEED(!o->has_src_key || o->src_key >= 1, "slot_op.src_key: must be >= 1");
    const int k = (int)o->kind;
    const int dst_one = o->has_slot + o->has_key == 1, src_one = o->has_src_slot + o->has_src_key == 1;
    const int is_copy = k == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY;
    const int is_save = k == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE;
    const int has_path = is_save || k == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD ||
                         k == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DELETE ||
                         k == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD_TUNED;
    switch (k) {
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET:
        PROTO_NEED(o->has_slot && !o->has_key, "slot_op: a reset needs slot (and no key)");
        break;
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DROP:
        PROTO_NEED(o->has_key && !o->has_slot, "slot_op: a drop needs key (and no slot)");
        break;
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DELETE:
        PROTO_NEED(!o->has_key && !o->has_slot, "slot_op: a delete takes only a path");
        break;
    default:
        PROTO_NEED(dst_one, "slot_op: exactly one of slot and key must be set");
    }
    if (is_copy) {
        PROTO_NEED(src_one, "slot_op: a copy needs exactly one of src_slot and src_key");
        PROTO_NEED(!(o->has_slot && o->has_src_slot && o->slot == o->src_slot) &&
                       !(o->has_key && o->has_src_key && o->key == o->src_key),
                   "slot_op: a copy's source and destination are the same");
    } else {
        PROTO_NEED(!o->has_src_slot && !o->has_src_key, "slot_op.src_slot/src_key: set on an operation that is not a copy");
    }
    if (is_save) {
        PROTO_NEED(o->meta, "slot_op.meta: a save needs it");
        PROTO_NEED(o->has_generation && o->generation >= 1, "slot_op.generation: a save needs it (>= 1)");
        PROTO_CHECK(check_str_(err, "slot_op.meta.session_id", o->meta->session_id, 0, RECUR_PROTO_MAX_ID_BYTES));
        PROTO_CHECK(check_str_(err, "slot_op.meta.model", o->meta->model, 0, RECUR_PROTO_MAX_NAME_BYTES));
        for (size_t i = 0; i < o->meta->n_pending; i++)
            PROTO_NEED(o->meta->pending[i] >= 0, "slot_op.meta.pending[%zu] = %d: token ids are >= 0", i,
                       (int)o->meta->pending[i]);
        PROTO_NEED(!o->meta->has_unsent || o->meta->unsent.len <= RECUR_PROTO_MAX_UNSENT_BYTES,
                   "slot_op.meta.unsent: %zu bytes, more than %d", o->meta->unsent.len, RECUR_PROTO_MAX_UNSENT_BYTES);
    } else {
        PROTO_NEED(!o->meta && !o->has_generation, "slot_op.meta/generation: set on an operation that is not a save");
    }
    PROTO_NEED(!o->has_history_only || k == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET,
               "slot_op.history_only: set on an operation that is not a reset");
    if (has_path) return check_str_(err, "slot_op.path", o->path, 1, RECUR_PROTO_MAX_PATH_BYTES);
    PROTO_NEED(!o->path, "slot_op.path: set on an operation without a file");
    return RECUR_OK;
}

recur_status_t recur_proto_internal_validate(const recur_internal_envelope_t *env, recur_proto_error_t *err) {
    proto_err_clear_(err);
    if (!env) PROTO_BAD("internal envelope: NULL");
    switch (env->body_case) {
    case RECUR__INTERNAL__ENVELOPE__BODY_HELLO:
        return check_hello_(err, env->hello);
    case RECUR__INTERNAL__ENVELOPE__BODY_READY:
        PROTO_NEED(env->ready->has_epoch, "ready.epoch: missing");
        return RECUR_OK;
    case RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN:
        return check_step_plan_(err, env->step_plan);
    case RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT:
        return check_step_result_(err, env->step_result);
    case RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP:
        return check_slot_op_(err, env->slot_op);
    case RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP_RESULT:
        PROTO_NEED(env->slot_op_result->has_op_id && env->slot_op_result->has_rank,
                   "slot_op_result: op_id and rank must be set");
        return check_status_(err, "slot_op_result.status", env->slot_op_result->status);
    case RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT:
        PROTO_NEED(env->heartbeat->has_seq, "heartbeat.seq: missing");
        PROTO_NEED(!env->heartbeat->has_rank || env->heartbeat->rank >= -1, "heartbeat.rank = %d: must be >= -1",
                   (int)env->heartbeat->rank);
        return RECUR_OK;
    case RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN:
        return check_str_(err, "shutdown.reason", env->shutdown->reason, 0, RECUR_PROTO_MAX_MESSAGE_BYTES);
    case RECUR__INTERNAL__ENVELOPE__BODY__NOT_SET:
        break;
    default:
        PROTO_BAD("internal envelope: unknown body %d", (int)env->body_case);
    }
    PROTO_BAD("internal envelope: no body");
}

const char *recur_proto_internal_body_name(Recur__Internal__Envelope__BodyCase body) {
    switch (body) {
    case RECUR__INTERNAL__ENVELOPE__BODY__NOT_SET:        return "none";
    case RECUR__INTERNAL__ENVELOPE__BODY_HELLO:           return "hello";
    case RECUR__INTERNAL__ENVELOPE__BODY_READY:           return "ready";
    case RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN:       return "step_plan";
    case RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT:     return "step_result";
    case RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP:         return "slot_op";
    case RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP_RESULT:  return "slot_op_result";
    case RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT:       return "heartbeat";
    case RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN:        return "shutdown";
    default:                                              return "unknown";
    }
}

recur_status_t recur_proto_status_code(const Recur__Internal__Status *st) {
    if (!st || !st->has_code) return RECUR_E_PROTO;
    if (st->code == 0) return RECUR_OK;
    /* recur_status_str names every value of recur_status_t and nothing else, so this keeps
     * up with codes added there. */
    recur_status_t s = (recur_status_t)st->code;
    return strcmp(recur_status_str(s), "unknown status") != 0 ? s : RECUR_E_PROTO;
}

recur_status_t recur_proto_step_result_matches(const Recur__Internal__StepResult *res, uint64_t step, size_t n_seq,
                                               const Recur__Internal__LogitsMode *plan_logits,
                                               recur_proto_error_t *err) {
    proto_err_clear_(err);
    if (!res) return recur_proto_fail(err, RECUR_E_PROTO, "step_result: NULL");
    if (res->step != step)
        return recur_proto_fail(err, RECUR_E_PROTO, "step_result for step %llu, expected step %llu",
                                (unsigned long long)res->step, (unsigned long long)step);
    if (recur_proto_status_code(res->status) != RECUR_OK) return RECUR_OK;   /* a failure answers any plan */
    if (res->n_token != n_seq)
        return recur_proto_fail(err, RECUR_E_PROTO, "step_result for step %llu has %zu tokens, the plan had %zu sequences",
                                (unsigned long long)step, res->n_token, n_seq);
    for (size_t i = 0; plan_logits && i < n_seq; i++) {
        int sampled = plan_logits[i] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE;
        if (sampled != (res->token[i] >= 0))
            return recur_proto_fail(err, RECUR_E_PROTO, "step_result for step %llu: sequence %zu %s but got token %d",
                                    (unsigned long long)step, i, sampled ? "was sampled" : "was not sampled",
                                    (int)res->token[i]);
    }
    return RECUR_OK;
}

/* ------------------------------------------------------------------ the wire */

/* Reads one base-128 varint at *pos; 0 when truncated or longer than 10 bytes. */
static int wire_varint_(const uint8_t *p, size_t n, size_t *pos, uint64_t *v) {
    uint64_t r = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (*pos >= n) return 0;
        uint8_t b = p[(*pos)++];
        if (i == 9 && b > 1) return 0;
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return 1;
        }
    }
    return 0;
}

/* One protocol: its name, version, the descriptor of its envelope, and the field numbers
 * of its bodies and of the other protocol's (to say "wrong socket" rather than "garbage"). */
typedef struct proto_kind {
    const char *name;
    const char *other_name;
    uint32_t version;
    const ProtobufCMessageDescriptor *desc;
    uint32_t body_lo, body_hi, other_lo, other_hi;
} proto_kind_t;

static const proto_kind_t PROTO_API = {"api", "internal (coordinator <-> worker)", RECUR_PROTO_API_VERSION,
                                       &recur__api__envelope__descriptor, 10, 99, 100, 199};
static const proto_kind_t PROTO_INTERNAL = {"internal", "client API", RECUR_PROTO_INTERNAL_VERSION,
                                            &recur__internal__envelope__descriptor, 100, 199, 10, 99};

/* The wire structure of a message and, through the descriptor, of every sub-message in it:
 * field numbers in [1, 2^29), wire types 0, 1, 2, 5, nothing truncated. protobuf-c checks
 * less inside sub-messages: a key written in two bytes that decodes to field number 0
 * ("80 00") is kept there as an unknown field, which pack then writes back as a key
 * ("00") that protobuf-c itself refuses, so we would accept what we cannot send
 * (fuzz_proto_api found it). NULL when all is well, else what is wrong. */
static const char *wire_nested_(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n, int depth) {
    if (depth > 32) return "sub-messages nested more than 32 deep";
    size_t pos = 0;
    while (pos < n) {
        uint64_t key, v;
        if (!wire_varint_(p, n, &pos, &key)) return "a truncated field key";
        uint64_t field = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (field == 0 || field > 0x1fffffff) return "a field number 0 or above 2^29 - 1";
        switch (wt) {
        case 0:
            if (!wire_varint_(p, n, &pos, &v)) return "a truncated varint";
            break;
        case 1:
        case 5:
            if (n - pos < (wt == 1 ? 8u : 4u)) return "a truncated fixed-size field";
            pos += wt == 1 ? 8 : 4;
            break;
        case 2: {
            if (!wire_varint_(p, n, &pos, &v) || v > n - pos) return "a field that runs past its end";
            const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(d, (unsigned)field);
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                const char *why = wire_nested_(fd->descriptor, p + pos, (size_t)v, depth + 1);
                if (why) return why;
            }
            pos += (size_t)v;
            break;
        }
        default:
            return "a group or an unknown wire type";
        }
    }
    return NULL;
}

/* Walks the top-level fields (without decoding them) to read protocol_version before
 * anything else: a peer of another version gets "version X, expected Y" even when the
 * rest of its message would not decode under our schema. */
static recur_status_t wire_scan_(const proto_kind_t *k, const uint8_t *p, size_t n, recur_proto_error_t *err) {
    size_t pos = 0;
    int have_version = 0;
    uint64_t version = 0;
    uint32_t own_body = 0, other_body = 0;
    while (pos < n) {
        size_t start = pos;
        uint64_t key, v;
        if (!wire_varint_(p, n, &pos, &key))
            return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: truncated field key at byte %zu of %zu",
                                    k->name, start, n);
        uint64_t field = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (field == 0 || field > 0x1fffffff)
            return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: field number %llu at byte %zu", k->name,
                                    (unsigned long long)field, start);
        switch (wt) {
        case 0:
            if (!wire_varint_(p, n, &pos, &v))
                return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: truncated varint at byte %zu of %zu",
                                        k->name, start, n);
            if (field == 1) {
                have_version = 1;
                version = v;   /* the last occurrence wins, as in any protobuf reader */
            }
            break;
        case 1:
        case 5: {
            size_t w = wt == 1 ? 8 : 4;
            if (n - pos < w)
                return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: truncated fixed field at byte %zu of %zu",
                                        k->name, start, n);
            pos += w;
            break;
        }
        case 2:
            if (!wire_varint_(p, n, &pos, &v) || v > n - pos)
                return recur_proto_fail(err, RECUR_E_FORMAT,
                                        "%s message malformed: field %llu at byte %zu runs past the end (%zu bytes)",
                                        k->name, (unsigned long long)field, start, n);
            pos += (size_t)v;
            break;
        default:   /* groups (3, 4) are not used by recur; 6 and 7 do not exist */
            return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: wire type %u at byte %zu", k->name, wt,
                                    start);
        }
        if (field == 1 && wt != 0)
            return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: protocol_version has wire type %u",
                                    k->name, wt);
        if (field >= k->body_lo && field <= k->body_hi && !own_body) own_body = (uint32_t)field;
        if (field >= k->other_lo && field <= k->other_hi && !other_body) other_body = (uint32_t)field;
    }
    if (!own_body && other_body)
        return recur_proto_fail(err, RECUR_E_PROTO, "%s message expected, got a %s message (body field %u): wrong socket?",
                                k->name, k->other_name, (unsigned)other_body);
    if (!have_version)
        return recur_proto_fail(err, RECUR_E_PROTO, "%s message carries no protocol_version: not a recur %s envelope",
                                k->name, k->name);
    if (version != k->version)
        return recur_proto_fail(err, RECUR_E_PROTO, "%s message: protocol version %llu, expected %u", k->name,
                                (unsigned long long)version, (unsigned)k->version);
    const char *why = wire_nested_(k->desc, p, n, 0);
    if (why) return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: it holds %s", k->name, why);
    return RECUR_OK;
}

/* A protobuf-c allocator that refuses to hand out more than `limit` bytes in total, so
 * decoding cannot be made to allocate far more than the message's size. Its blocks come
 * from malloc, so the message is freed with protobuf-c's default allocator (free). */
typedef struct proto_budget {
    size_t used, limit;
    int exceeded;
} proto_budget_t;

static void *budget_alloc_(void *data, size_t size) {
    proto_budget_t *b = data;
    if (size > b->limit - b->used) {
        b->exceeded = 1;
        return NULL;
    }
    b->used += size;
    return malloc(size ? size : 1);
}

static void budget_free_(void *data, void *p) {
    (void)data;
    free(p);
}

static size_t proto_limit_(size_t max_bytes) {
    return max_bytes ? max_bytes : RECUR_PROTO_MAX_MSG_BYTES_DEFAULT;
}

static recur_status_t proto_unpack_(const proto_kind_t *k, const uint8_t *buf, size_t n, size_t max_bytes,
                                    ProtobufCMessage **out, recur_proto_error_t *err) {
    *out = NULL;
    size_t limit = proto_limit_(max_bytes);
    if (n > limit)
        return recur_proto_fail(err, RECUR_E_RANGE, "%s message of %zu bytes exceeds the limit of %zu bytes", k->name, n,
                                limit);
    if (!buf && n > 0) return recur_proto_fail(err, RECUR_E_INVAL, "%s message: NULL buffer", k->name);
    PROTO_CHECK(wire_scan_(k, buf, n, err));
    proto_budget_t budget = {0, n * (size_t)RECUR_PROTO_ALLOC_FACTOR + ((size_t)1 << 20), 0};
    ProtobufCAllocator alloc = {budget_alloc_, budget_free_, &budget};
    ProtobufCMessage *m = protobuf_c_message_unpack(k->desc, &alloc, n, buf);
    if (!m) {
        if (budget.exceeded)
            return recur_proto_fail(err, RECUR_E_FORMAT,
                                    "%s message of %zu bytes needs more than %zu bytes of memory to decode (the limit is "
                                    "%dx its size)",
                                    k->name, n, budget.limit, RECUR_PROTO_ALLOC_FACTOR);
        return recur_proto_fail(err, RECUR_E_FORMAT, "%s message malformed: it does not decode as a recur.%s.Envelope",
                                k->name, k->name);
    }
    *out = m;
    return RECUR_OK;
}

static recur_status_t proto_pack_(const proto_kind_t *k, const ProtobufCMessage *m, size_t max_bytes, uint8_t **out,
                                  size_t *n_out, recur_proto_error_t *err) {
    size_t limit = proto_limit_(max_bytes);
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > limit)
        return recur_proto_fail(err, RECUR_E_RANGE, "%s message of %zu bytes exceeds the limit of %zu bytes", k->name, n,
                                limit);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return recur_proto_fail(err, RECUR_E_NOMEM, "%s message: out of memory for %zu bytes", k->name, n);
    size_t got = protobuf_c_message_pack(m, buf);
    RECUR_ASSERT(got == n);
    *out = buf;
    *n_out = n;
    return RECUR_OK;
}

/* A body field this build does not know, inside this protocol's range: a newer peer that
 * forgot to bump the version. Said plainly rather than as "no body". */
static recur_status_t proto_unknown_body_(const proto_kind_t *k, const ProtobufCMessage *m, int body_set,
                                          recur_proto_error_t *err) {
    if (body_set) return RECUR_OK;
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        uint32_t tag = m->unknown_fields[i].tag;
        if (tag >= k->body_lo && tag <= k->body_hi)
            return recur_proto_fail(err, RECUR_E_FORMAT, "%s message: unknown body field %u (a newer peer?)", k->name,
                                    (unsigned)tag);
    }
    return RECUR_OK;
}

/* ------------------------------------------------------------------ API envelope */

recur_status_t recur_proto_api_pack(const recur_api_envelope_t *env, size_t max_bytes, uint8_t **out,
                                    size_t *n_out, recur_proto_error_t *err) {
    if (!out || !n_out) return recur_proto_fail(err, RECUR_E_INVAL, "api pack: NULL output");
    *out = NULL;
    *n_out = 0;
    /* our own message breaking the rules is our caller's bug, not malformed input */
    if (recur_proto_api_validate(env, err) != RECUR_OK) return RECUR_E_INVAL;
    recur_api_envelope_t e = *env;   /* shallow: the body stays the caller's */
    e.has_protocol_version = 1;
    e.protocol_version = RECUR_PROTO_API_VERSION;
    return proto_pack_(&PROTO_API, &e.base, max_bytes, out, n_out, err);
}

recur_status_t recur_proto_api_unpack(const uint8_t *buf, size_t n, size_t max_bytes, recur_api_envelope_t **out,
                                      recur_proto_error_t *err) {
    if (!out) return recur_proto_fail(err, RECUR_E_INVAL, "api unpack: NULL output");
    *out = NULL;   /* on every failure, as the header promises */
    proto_err_clear_(err);
    ProtobufCMessage *m = NULL;
    PROTO_CHECK(proto_unpack_(&PROTO_API, buf, n, max_bytes, &m, err));
    recur_api_envelope_t *env = (recur_api_envelope_t *)m;
    recur_status_t s = proto_unknown_body_(&PROTO_API, m, env->body_case != RECUR__API__ENVELOPE__BODY__NOT_SET, err);
    if (s == RECUR_OK) s = recur_proto_api_validate(env, err);
    if (s != RECUR_OK) {
        recur_proto_api_free(env);
        return s;
    }
    *out = env;
    return RECUR_OK;
}

void recur_proto_api_free(recur_api_envelope_t *env) {
    if (env) recur__api__envelope__free_unpacked(env, NULL);
}

/* ------------------------------------------------------------------ internal envelope */

recur_status_t recur_proto_internal_pack(const recur_internal_envelope_t *env, size_t max_bytes, uint8_t **out,
                                         size_t *n_out, recur_proto_error_t *err) {
    if (!out || !n_out) return recur_proto_fail(err, RECUR_E_INVAL, "internal pack: NULL output");
    *out = NULL;
    *n_out = 0;
    if (recur_proto_internal_validate(env, err) != RECUR_OK) return RECUR_E_INVAL;
    recur_internal_envelope_t e = *env;
    e.has_protocol_version = 1;
    e.protocol_version = RECUR_PROTO_INTERNAL_VERSION;
    return proto_pack_(&PROTO_INTERNAL, &e.base, max_bytes, out, n_out, err);
}

recur_status_t recur_proto_internal_unpack(const uint8_t *buf, size_t n, size_t max_bytes,
                                           recur_internal_envelope_t **out, recur_proto_error_t *err) {
    if (!out) return recur_proto_fail(err, RECUR_E_INVAL, "internal unpack: NULL output");
    *out = NULL;   /* on every failure, as the header promises */
    proto_err_clear_(err);
    ProtobufCMessage *m = NULL;
    PROTO_CHECK(proto_unpack_(&PROTO_INTERNAL, buf, n, max_bytes, &m, err));
    recur_internal_envelope_t *env = (recur_internal_envelope_t *)m;
    recur_status_t s =
        proto_unknown_body_(&PROTO_INTERNAL, m, env->body_case != RECUR__INTERNAL__ENVELOPE__BODY__NOT_SET, err);
    if (s == RECUR_OK) s = recur_proto_internal_validate(env, err);
    if (s != RECUR_OK) {
        recur_proto_internal_free(env);
        return s;
    }
    *out = env;
    return RECUR_OK;
}

void recur_proto_internal_free(recur_internal_envelope_t *env) {
    if (env) recur__internal__envelope__free_unpacked(env, NULL);
}
