/* recur_http.c: see recur_http.h.
 *
 * A request's life: libmicrohttpd calls the access handler several times per request: first
 * with the headers (the API key and the body size are checked there), then with pieces of
 * the body (kept, up to max_body_bytes), then once with nothing (the body is complete): the
 * route runs. A generation request becomes a job: one DEALER socket to the coordinator, one
 * GenerateRequest per choice ("sub"), and the replies read on this connection's thread. The
 * HTTP status is decided when every sub has had its first reply (so a refused request gets
 * its 4xx, not a 200 and an error event); a stream is then answered by job_read (SSE), a
 * non-streaming request is read to the end and answered whole. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* POLLRDHUP: the peer closed its end (Linux) */
#endif
#include "recur_http.h"
#include "recur_sbuf.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "recur_http_parse.h"
#include "recur_log.h"
#include "recur_msgsock.h"
#include "recur_proto.h"

#define SLICE_MS 100            /* how often a waiting thread checks its client and the stop flag */
#define CANCEL_WAIT_MS 2000     /* how long a closing job waits for its cancelled requests' finals */

struct recur_http {
    recur_http_config_t cfg;
    void *zctx;
    char *host, *endpoint, *model_id;
    char **keys;
    size_t n_keys;
    struct MHD_Daemon *d;
    int port;
    atomic_int stopping;
    atomic_int streams;          /* SSE responses not yet freed */
    atomic_uint_least64_t seq;
    pthread_mutex_t mu;          /* guards arch, builtin; serializes cJSON_Parse (its error
                                    pointer is a global in cJSON 1.7) */
    char arch[RECUR_PROTO_MAX_NAME_BYTES];
    recur_chat_template_t *builtin;
    long long started;           /* unix time: /v1/models "created" */
    atomic_int *in_flight;       /* requests in flight per API key (n_keys): --max-requests-per-key */
};

recur_http_config_t recur_http_default_config(void) {
    recur_http_config_t c;
    memset(&c, 0, sizeof c);
    c.host = "127.0.0.1";
    c.max_body_bytes = (size_t)4 << 20;
    c.max_choices = 64;
    c.max_connections = 512;
    c.coord_timeout_ms = 2000;
    c.max_import_bytes = (size_t)1 << 30;
    c.session_timeout_ms = 60000;
    return c;
}

/* ------------------------------------------------------------------ keys */

int recur_http_key_index(const char *const *keys, size_t n, const char *key, size_t len) {
    int found = -1;
    for (size_t k = 0; k < n; k++) {
        size_t kl = strlen(keys[k]);
        unsigned d = kl != len;
        /* every byte of the configured key is compared, whatever the candidate holds */
        for (size_t i = 0; i < kl; i++) d |= (unsigned)(uint8_t)keys[k][i] ^ (unsigned)(uint8_t)(i < len ? key[i] : 0);
        /* no branch on the outcome: select the index arithmetically (mask all ones on a match) */
        unsigned mask = 0u - (unsigned)(d == 0);
        found = (int)(((unsigned)found & ~mask) | ((unsigned)k & mask));
    }
    return found;
}

int recur_http_key_ok(const char *const *keys, size_t n, const char *key, size_t len) {
    return recur_http_key_index(keys, n, key, len) >= 0;
}

recur_status_t recur_http_read_key_file(const char *path, char ***keys, size_t *n) {
    FILE *f = fopen(path, "r");
    if (!f) {
        recur_log_err("%s: cannot read the API key file: %s", path, strerror(errno));
        return RECUR_E_IO;
    }
    char line[4096];
    int ln = 0;
    recur_status_t s = RECUR_OK;
    while (s == RECUR_OK && fgets(line, sizeof line, f)) {
        ln++;
        char *p = line, *e = line + strlen(line);
        while (*p && isspace((unsigned char)*p)) p++;
        while (e > p && isspace((unsigned char)e[-1])) e--;
        *e = '\0';
        if (!*p || *p == '#') continue;
        for (char *q = p; *q; q++)
            if ((unsigned char)*q <= ' ' || *q == 0x7f) {
                recur_log_err("%s:%d: an API key may not contain white space or control characters", path, ln);
                s = RECUR_E_FORMAT;
                break;
            }
        if (s != RECUR_OK) break;
        char **k = realloc(*keys, (*n + 1) * sizeof *k);
        if (!k) { s = RECUR_E_NOMEM; break; }
        *keys = k;
        if (!(k[*n] = strdup(p))) { s = RECUR_E_NOMEM; break; }
        (*n)++;
    }
    if (s == RECUR_OK && ferror(f)) {
        recur_log_err("%s: read error", path);
        s = RECUR_E_IO;
    }
    fclose(f);
    return s;
}

/* ------------------------------------------------------------------ responses */

static const char *route_name(const char *url) {
    static const char *const known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health/live",
                                        "/health/ready", "/metrics"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(url, known[i])) return known[i];
    if (!strncmp(url, "/v1/models/", 11)) return "/v1/models";
    if (!strncmp(url, "/v1/sessions", 12) && (!url[12] || url[12] == '/')) return "/v1/sessions";
    return "other";
}

/* The routes under /v1/sessions: the operation, the session id in the path (percent-decoded
 * by libmicrohttpd; "" when none) and the methods allowed (for 405). Returns 0 when url is
 * not a sessions route. Ids with a '/' can be named too, except ones that end in /fork,
 * /export or /import (those suffixes are the operations). */
typedef struct sess_route {
    Recur__Api__SessionOp op;
    const char *id;          /* points into the url, or "" */
    size_t id_len;
    const char *allow;
    int id_required;         /* the operation names a session in the path */
} sess_route_t;

static int ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n > k && !memcmp(s + n - k, suf, k);
}

static int session_route(const char *url, const char *method, sess_route_t *r) {
    static const char base[] = "/v1/sessions";
    memset(r, 0, sizeof *r);
    r->id = "";
    if (strncmp(url, base, sizeof base - 1)) return 0;
    const char *rest = url + sizeof base - 1;
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"), del = !strcmp(method, "DELETE");
    if (!*rest) {
        r->allow = "GET, POST";
        r->op = get ? RECUR__API__SESSION_OP__SESSION_OP_LIST : post ? RECUR__API__SESSION_OP__SESSION_OP_CREATE : 0;
        return 1;
    }
    if (*rest != '/') return 0;
    rest++;
    size_t n = strlen(rest);
    if (!strcmp(rest, "import")) {   /* a new session, id made up (or ?session_id=) */
        r->allow = "POST";
        r->op = post ? RECUR__API__SESSION_OP__SESSION_OP_IMPORT : 0;
        return 1;
    }
    r->id_required = 1;
    if (ends_with(rest, n, "/fork")) {
        r->allow = "POST", r->id = rest, r->id_len = n - 5;
        r->op = post ? RECUR__API__SESSION_OP__SESSION_OP_FORK : 0;
    } else if (ends_with(rest, n, "/import")) {
        r->allow = "POST", r->id = rest, r->id_len = n - 7;
        r->op = post ? RECUR__API__SESSION_OP__SESSION_OP_IMPORT : 0;
    } else if (ends_with(rest, n, "/export")) {
        r->allow = "GET", r->id = rest, r->id_len = n - 7;
        r->op = get ? RECUR__API__SESSION_OP__SESSION_OP_EXPORT : 0;
    } else {
        r->allow = "GET, DELETE", r->id = rest, r->id_len = n;
        r->op = get ? RECUR__API__SESSION_OP__SESSION_OP_GET : del ? RECUR__API__SESSION_OP__SESSION_OP_DELETE : 0;
    }
    return 1;
}

/* Queues body (malloc'ed, taken; NULL = out of memory -> 500) with status. */
static enum MHD_Result reply_raw(recur_http_t *h, struct MHD_Connection *conn, const char *url, int status,
                                 const char *ctype, char *body, size_t n) {
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                                  "\"code\":null}}";
        status = MHD_HTTP_INTERNAL_SERVER_ERROR, ctype = "application/json";
        body = strdup(oom), n = body ? strlen(body) : 0;
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        sess_route_t sr;
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, session_route(url, "", &sr) ? sr.allow
                                                          : strncmp(url, "/v1/c", 5) ? "GET" : "POST");
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    recur_metrics_http(h->cfg.metrics, route_name(url), status);
    return ret;
}

static enum MHD_Result reply_json(recur_http_t *h, struct MHD_Connection *conn, const char *url, int status,
                                  cJSON *obj) {
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return reply_raw(h, conn, url, status, "application/json", s, s ? strlen(s) : 0);
}

static cJSON *error_json(const char *type, const char *code, const char *param, const char *msg) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    if (!e) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    return root;
}

static const char *type_for(int status) {
    /* OpenAI's types: 4xx are invalid_request_error (401 and 404 included, told apart by
     * code), except 429 */
    return status == 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
}

#if defined(__GNUC__)
__attribute__((format(printf, 7, 8)))
#endif
static enum MHD_Result reply_error(recur_http_t *h, struct MHD_Connection *conn, const char *url, int status,
                                   const char *code, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply_json(h, conn, url, status, error_json(type_for(status), code, param, msg));
}


static enum MHD_Result reply_bad(recur_http_t *h, struct MHD_Connection *conn, const char *url,
                                 const recur_http_bad_t *b) {
    return reply_error(h, conn, url, b->status, b->code[0] ? b->code : NULL, b->param[0] ? b->param : NULL, "%s",
                       b->msg);
}

/* ------------------------------------------------------------------ the coordinator link */

static recur_msgsock_t *coord_open(recur_http_t *h) {
    recur_msgsock_t *s = NULL;
    recur_msgsock_params_t p = recur_msgsock_default_params();
    if (recur_msgsock_connect(h->zctx, h->endpoint, &p, &s) != RECUR_OK) return NULL;
    return s;
}

/* Sends env and waits up to the configured timeout for the reply of body `want`. The reply
 * (or NULL: no answer, logged) is the caller's to free. */
static recur_api_envelope_t *coord_call(recur_http_t *h, recur_api_envelope_t *env, Recur__Api__Envelope__BodyCase want) {
    recur_msgsock_t *s = coord_open(h);
    recur_api_envelope_t *r = NULL;
    recur_proto_error_t err;
    if (!s) return NULL;
    if (recur_msgsock_send_api(s, NULL, env, &err) != RECUR_OK) {
        recur_log_warn("http: cannot ask the coordinator: %s", err.msg);
        recur_msgsock_close(s);
        return NULL;
    }
    for (int waited = 0; waited < h->cfg.coord_timeout_ms && !atomic_load(&h->stopping); waited += SLICE_MS) {
        recur_status_t st = recur_msgsock_recv_api(s, SLICE_MS, NULL, &r, &err);
        if (st == RECUR_E_TIMEOUT) continue;
        if (st == RECUR_OK && r->body_case == want) break;
        recur_proto_api_free(r);
        r = NULL;
        if (st != RECUR_OK) break;
    }
    recur_msgsock_close(s);
    return r;
}

/* The model's arch (for the chat template), asked of the coordinator once it is known. */
static const recur_chat_template_t *chat_template_for(recur_http_t *h) {
    if (h->cfg.chat_template) return h->cfg.chat_template;
    pthread_mutex_lock(&h->mu);
    const recur_chat_template_t *t = h->builtin;
    pthread_mutex_unlock(&h->mu);
    if (t) return t;
    Recur__Api__ListModelsRequest lm = RECUR__API__LIST_MODELS_REQUEST__INIT;
    lm.request_id = "http-models";
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_LIST_MODELS;
    env.list_models = &lm;
    recur_api_envelope_t *r = coord_call(h, &env, RECUR__API__ENVELOPE__BODY_LIST_MODELS_RESPONSE);
    const char *arch = r && r->list_models_response->n_models && r->list_models_response->models[0]->arch
                           ? r->list_models_response->models[0]->arch
                           : NULL;
    if (arch && *arch) {
        recur_chat_template_t *made = NULL;
        if (recur_chat_template_builtin(arch, &made) == RECUR_OK) {
            pthread_mutex_lock(&h->mu);
            if (!h->builtin) {
                h->builtin = made, made = NULL;
                snprintf(h->arch, sizeof h->arch, "%s", arch);
                recur_log_info("http: chat template '%s' for arch %s", recur_chat_template_name(h->builtin), arch);
            }
            t = h->builtin;
            pthread_mutex_unlock(&h->mu);
            recur_chat_template_free(made);
        }
    }
    recur_proto_api_free(r);
    return t;
}

/* ------------------------------------------------------------------ the client's socket */

/* 1 when the HTTP client closed its connection (or it broke). */
static int client_gone(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd pf = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&pf, 1, 0) <= 0) return 0;
    if (pf.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return 1;
    if (pf.revents & POLLIN) {   /* readable: a pipelined request, or the end of the stream */
        char c;
        ssize_t k = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return 0;
}

/* ------------------------------------------------------------------ jobs (generation requests) */

static int render_chat(recur_http_t *h, recur_http_gen_req_t *g, recur_http_bad_t *b);

typedef struct sub {
    char rid[80];
    size_t prompt;          /* index into the request's prompts */
    int got, done, finish;  /* finish: Recur__Api__FinishReason */
    uint32_t prompt_tokens, completion_tokens;
    int has_cached;         /* the coordinator reported cached_prompt_tokens (a session, the prefix cache) */
    uint32_t cached_tokens;
    int role_sent;          /* chat stream: the first delta (role) went out */
    recur_sbuf_t text;            /* non-streaming: the whole text */
    cJSON *lp;              /* non-streaming logprobs: chat "content" array, or completions object */
    size_t text_off;        /* completions logprobs: text_offset of the next token */
} sub_t;

typedef struct job {
    recur_http_t *h;
    struct MHD_Connection *conn;
    recur_msgsock_t *sock;
    int chat, stream, include_usage, logprobs;
    char id[48];
    long long created;
    sub_t *subs;
    size_t n_subs, n_got, n_done;
    /* the first failure; the whole request fails with it */
    int failed, fail_status;
    char fail_code[48], fail_msg[640];
    int cancel_sent, streaming, done_written;
    recur_sbuf_t out;             /* SSE bytes not yet handed to libmicrohttpd */
    size_t out_pos;
} job_t;

/* The HTTP status and OpenAI-style code of a coordinator error. msg (may be NULL) tells a
 * session's refusals from a model's or the queue's: the coordinator's messages name them. */
static int http_status_for(Recur__Api__ErrorCode c, const char *msg, const char **code) {
    int sess = msg && strstr(msg, "session");
    switch (c) {
    case RECUR__API__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT: *code = "invalid_value"; return 400;
    case RECUR__API__ERROR_CODE__ERROR_CODE_NOT_FOUND: *code = sess ? "session_not_found" : "model_not_found"; return 404;
    case RECUR__API__ERROR_CODE__ERROR_CODE_RESOURCE_EXHAUSTED:
        /* the session table is full: 507 (Insufficient Storage), retrying soon will not help;
         * the queue (or an import slot) is full: 429, retry later */
        if (msg && strstr(msg, "too many sessions")) {
            *code = "session_limit";
            return 507;
        }
        *code = "queue_full";
        return 429;
    case RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE: *code = "not_ready"; return 503;
    case RECUR__API__ERROR_CODE__ERROR_CODE_DEADLINE_EXCEEDED: *code = "timeout"; return 504;
    /* 400, not 501: clients retry 5xx, and asking again will not help */
    case RECUR__API__ERROR_CODE__ERROR_CODE_UNIMPLEMENTED: *code = "unsupported"; return 400;
    case RECUR__API__ERROR_CODE__ERROR_CODE_ALREADY_EXISTS:
        *code = !sess ? "duplicate_request" : strstr(msg, "busy") ? "session_busy" : "session_exists";
        return 409;
    case RECUR__API__ERROR_CODE__ERROR_CODE_CANCELLED: *code = "cancelled"; return 503;
    default: *code = "internal_error"; return 500;
    }
}

static sub_t *job_sub(job_t *j, const char *rid) {
    if (!rid) return NULL;
    for (size_t i = 0; i < j->n_subs; i++)
        if (!strcmp(j->subs[i].rid, rid)) return &j->subs[i];
    return NULL;
}

static void sse(job_t *j, cJSON *obj) {
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) {
        j->out.oom = 1;
        return;
    }
    recur_sbuf_str(&j->out, "data: ");
    recur_sbuf_str(&j->out, s);
    recur_sbuf_str(&j->out, "\n\n");
    free(s);
}

static void job_cancel_all(job_t *j) {
    if (j->cancel_sent) return;
    j->cancel_sent = 1;
    for (size_t i = 0; i < j->n_subs; i++) {
        if (j->subs[i].done) continue;
        Recur__Api__CancelRequest cq = RECUR__API__CANCEL_REQUEST__INIT;
        cq.request_id = j->subs[i].rid;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_CANCEL;
        env.cancel = &cq;
        recur_proto_error_t err;
        if (recur_msgsock_send_api(j->sock, NULL, &env, &err) != RECUR_OK)
            recur_log_warn("http: cannot cancel %s: %s", j->subs[i].rid, err.msg);
    }
}

/* The request fails (first failure wins): every other choice is cancelled; a stream gets an
 * error event (and [DONE] when it ends). */
static void job_fail(job_t *j, int status, const char *code, const char *msg) {
    if (j->failed) return;
    j->failed = 1, j->fail_status = status;
    snprintf(j->fail_code, sizeof j->fail_code, "%s", code ? code : "");
    snprintf(j->fail_msg, sizeof j->fail_msg, "%s", msg);
    if (j->streaming) sse(j, error_json(type_for(status), code, NULL, msg));
    job_cancel_all(j);
}

/* The JSON start of a chunk or a response. */
static cJSON *job_object(const job_t *j, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->h->model_id);
    return o;
}

static const char *finish_name(int f) {
    return f == RECUR__API__FINISH_REASON__FINISH_REASON_LENGTH ? "length" : "stop";
}

/* The UTF-8 bytes of s as a JSON array of numbers (OpenAI's "bytes"). */
static cJSON *bytes_array(const char *s) {
    cJSON *a = cJSON_CreateArray();
    for (const uint8_t *p = (const uint8_t *)s; a && *p; p++) cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

/* Logprobs of tokens[0..n) appended in the endpoint's shape: chat: items of the "content"
 * array; completions: the four parallel arrays of the object. */
static void add_logprobs(job_t *j, cJSON *lp, Recur__Api__Token *const *tokens, size_t n, size_t *text_off) {
    for (size_t i = 0; i < n; i++) {
        const Recur__Api__Token *t = tokens[i];
        const char *txt = t->text ? t->text : "";
        if (j->chat) {
            cJSON *e = cJSON_CreateObject(), *tops = cJSON_CreateArray();
            cJSON_AddStringToObject(e, "token", txt);
            cJSON_AddNumberToObject(e, "logprob", t->has_logprob ? t->logprob : 0.0);
            cJSON_AddItemToObject(e, "bytes", bytes_array(txt));
            for (size_t k = 0; k < t->n_top_logprobs; k++) {
                const Recur__Api__TopLogprob *tl = t->top_logprobs[k];
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "token", tl->text ? tl->text : "");
                cJSON_AddNumberToObject(o, "logprob", tl->logprob);
                cJSON_AddItemToObject(o, "bytes", bytes_array(tl->text ? tl->text : ""));
                cJSON_AddItemToArray(tops, o);
            }
            cJSON_AddItemToObject(e, "top_logprobs", tops);
            cJSON_AddItemToArray(lp, e);
        } else {
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "tokens"), cJSON_CreateString(txt));
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "token_logprobs"),
                                 t->has_logprob ? cJSON_CreateNumber(t->logprob) : cJSON_CreateNull());
            cJSON *tops = cJSON_CreateObject();
            for (size_t k = 0; k < t->n_top_logprobs; k++) {
                const Recur__Api__TopLogprob *tl = t->top_logprobs[k];
                cJSON_AddNumberToObject(tops, tl->text ? tl->text : "", tl->logprob);
            }
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "top_logprobs"), tops);
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "text_offset"), cJSON_CreateNumber((double)*text_off));
            *text_off += strlen(txt);
        }
    }
}

static cJSON *new_logprobs(const job_t *j) {
    if (j->chat) return cJSON_CreateArray();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "tokens", cJSON_CreateArray());
    cJSON_AddItemToObject(o, "token_logprobs", cJSON_CreateArray());
    cJSON_AddItemToObject(o, "top_logprobs", cJSON_CreateArray());
    cJSON_AddItemToObject(o, "text_offset", cJSON_CreateArray());
    return o;
}

/* One stream chunk for choice k: text (may be ""), logprobs (taken; may be NULL), finish
 * (NULL: not finished). */
static void stream_chunk(job_t *j, size_t k, const char *text, cJSON *lp, const char *finish) {
    sub_t *s = &j->subs[k];
    cJSON *o = job_object(j, j->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", (double)k);
    if (j->chat) {
        cJSON *delta = cJSON_AddObjectToObject(c, "delta");
        if (!s->role_sent) cJSON_AddStringToObject(delta, "role", "assistant"), s->role_sent = 1;
        if (text && (*text || !finish)) cJSON_AddStringToObject(delta, "content", text);
        if (lp) {
            cJSON *l = cJSON_AddObjectToObject(c, "logprobs");
            cJSON_AddItemToObject(l, "content", lp);
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
        if (lp) cJSON_AddItemToObject(c, "logprobs", lp);
        else cJSON_AddNullToObject(c, "logprobs");
    }
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    cJSON_AddItemToArray(choices, c);
    if (j->include_usage) cJSON_AddNullToObject(o, "usage");
    sse(j, o);
}

static void usage_object(const job_t *j, cJSON *o) {
    uint64_t p = 0, c = 0, cached = 0;
    int has_cached = 0;
    for (size_t i = 0; i < j->n_subs; i++) {
        c += j->subs[i].completion_tokens;
        /* a prompt is counted once, however many choices it has */
        int first = 1;
        for (size_t k = 0; k < i; k++) first &= j->subs[k].prompt != j->subs[i].prompt;
        if (first) p += j->subs[i].prompt_tokens, cached += j->subs[i].cached_tokens;
        has_cached |= j->subs[i].has_cached;
    }
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)p);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)c);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(p + c));
    /* OpenAI's field for prompt tokens served from a cache: here the part of a session's
     * conversation its state had consumed, or a prefix-cache hit (only when there is one) */
    if (has_cached) cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "prompt_tokens_details"), "cached_tokens",
                                            (double)cached);
}

static void on_generate_response(job_t *j, const Recur__Api__GenerateResponse *gr) {
    sub_t *s = job_sub(j, gr->request_id);
    if (!s || s->done) return;
    size_t k = (size_t)(s - j->subs);
    if (!s->got) s->got = 1, j->n_got++;
    if (gr->n_tokens && !j->failed) {
        recur_sbuf_t piece = {0};
        for (size_t i = 0; i < gr->n_tokens; i++)
            if (gr->tokens[i]->text) recur_sbuf_str(&piece, gr->tokens[i]->text);
        cJSON *lp = NULL;
        if (j->logprobs) {
            lp = j->stream ? new_logprobs(j) : s->lp;
            add_logprobs(j, lp, gr->tokens, gr->n_tokens, &s->text_off);
        }
        if (j->stream) {
            if (piece.n || lp) stream_chunk(j, k, piece.p ? piece.p : "", lp, NULL);
        } else if (piece.n) {
            recur_sbuf_add(&s->text, piece.p, piece.n);
            if (s->text.oom) job_fail(j, 500, "internal_error", "out of memory");
        }
        free(piece.p);
    }
    const Recur__Api__GenerateFinal *f = gr->final;
    if (!f) return;
    s->done = 1, j->n_done++;
    s->finish = f->finish_reason;
    if (f->usage) {
        s->prompt_tokens = f->usage->prompt_tokens, s->completion_tokens = f->usage->completion_tokens;
        s->has_cached = f->usage->has_cached_prompt_tokens, s->cached_tokens = f->usage->cached_prompt_tokens;
    }
    if (f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_ERROR) {
        const char *code = "internal_error";
        int st = f->error && f->error->has_code ? http_status_for(f->error->code, f->error->message, &code) : 500;
        job_fail(j, st, code, f->error && f->error->message ? f->error->message : "the request failed");
    } else if (f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_CANCELLED) {
        if (!j->cancel_sent) job_fail(j, 503, "cancelled", "the request was cancelled by the server (it is stopping)");
    } else if (j->stream && !j->failed) {
        stream_chunk(j, k, "", NULL, finish_name(f->finish_reason));
    }
}

static void job_on_message(job_t *j, recur_api_envelope_t *env) {
    switch (env->body_case) {
    case RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE: on_generate_response(j, env->generate_response); break;
    case RECUR__API__ENVELOPE__BODY_ERROR: {
        const Recur__Api__ErrorResponse *er = env->error;
        sub_t *s = job_sub(j, er->request_id);
        if (s && !s->done) {
            s->done = 1, j->n_done++;
            if (!s->got) s->got = 1, j->n_got++;
        }
        const char *code = "internal_error";
        int st = er->error && er->error->has_code ? http_status_for(er->error->code, er->error->message, &code) : 500;
        job_fail(j, st, code, er->error && er->error->message ? er->error->message : "the coordinator refused the request");
        if (!s) {   /* an answer we cannot attribute: nothing more will come for anyone */
            for (size_t i = 0; i < j->n_subs; i++)
                if (!j->subs[i].done) j->subs[i].done = 1, j->n_done++;
            j->n_got = j->n_subs;
        }
        break;
    }
    case RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE: {
        sub_t *s = job_sub(j, env->cancel_response->request_id);
        /* not found: it had ended already, its final is in front of this answer */
        if (s && !s->done && !env->cancel_response->found) s->done = 1, j->n_done++;
        break;
    }
    default: break;
    }
}

/* Reads the coordinator's replies for up to timeout_ms (all that are there after the first). */
static void job_pump(job_t *j, int timeout_ms) {
    for (int first = 1;; first = 0) {
        recur_api_envelope_t *env = NULL;
        recur_proto_error_t err;
        recur_status_t s = recur_msgsock_recv_api(j->sock, first ? timeout_ms : 0, NULL, &env, &err);
        if (s == RECUR_E_TIMEOUT) return;
        if (s != RECUR_OK) {
            recur_log_err("http: bad reply from the coordinator: %s", err.msg);
            job_fail(j, 500, "internal_error", "the coordinator's reply could not be read");
            for (size_t i = 0; i < j->n_subs; i++)
                if (!j->subs[i].done) j->subs[i].done = 1, j->n_done++;
            j->n_got = j->n_subs;
            return;
        }
        job_on_message(j, env);
        recur_proto_api_free(env);
    }
}

/* Waits until every sub has had a reply (all = 0) or has ended (all = 1), or (all = 2) new
 * stream bytes wait in j->out, or the request failed (returns 0), or the client went away
 * (returns 1). When the server stops, the request fails and ends at once (a stream then
 * still gets its error event and [DONE]). */
static int job_wait(job_t *j, int all) {
    const size_t had = j->out.n;
    for (;;) {
        if (all == 2 && (j->out.n != had || j->out.oom)) return 0;
        if ((all ? j->n_done : j->n_got) == j->n_subs) return 0;
        if (j->failed && !all) return 0;
        if (atomic_load(&j->h->stopping)) {
            job_fail(j, 503, "not_ready", "the server is stopping");
            for (size_t i = 0; i < j->n_subs; i++)   /* no more answers are waited for */
                if (!j->subs[i].done) j->subs[i].done = 1, j->n_done++;
            j->n_got = j->n_subs;
            return 0;
        }
        if (client_gone(j->conn)) return 1;
        job_pump(j, SLICE_MS);
    }
}

static void job_free(job_t *j) {
    if (!j) return;
    if (j->sock) {
        if (j->n_done < j->n_subs) {
            /* cancel what still runs and wait for the finals, so the slots are free when we
             * return and the Cancel is not dropped with the socket (linger 0) */
            job_cancel_all(j);
            for (int waited = 0; j->n_done < j->n_subs && waited < CANCEL_WAIT_MS; waited += SLICE_MS)
                job_pump(j, SLICE_MS);
        }
        recur_msgsock_close(j->sock);
    }
    for (size_t i = 0; i < j->n_subs; i++) free(j->subs[i].text.p), cJSON_Delete(j->subs[i].lp);
    free(j->subs);
    free(j->out.p);
    free(j);
}

/* Sends one GenerateRequest per choice. */
static int job_send(job_t *j, const recur_http_gen_req_t *g, recur_http_bad_t *b) {
    for (size_t i = 0; i < j->n_subs; i++) {
        recur_http_gen_msg_t m;
        recur_http_generate_request(g, i, j->subs[i].rid, &m);
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
        env.generate = &m.q;
        recur_proto_error_t err;
        recur_status_t st = recur_msgsock_send_api(j->sock, NULL, &env, &err);
        if (st != RECUR_OK) {
            /* the protocol's own checks (lengths, counts) are the client's errors */
            if (st == RECUR_E_INVAL || st == RECUR_E_RANGE) recur_http_badf(b, NULL, "invalid_value", "%s", err.msg);
            else recur_http_badf(b, NULL, "internal_error", "cannot reach the coordinator: %s", err.msg), b->status = 500;
            for (size_t k = i; k < j->n_subs; k++) j->subs[k].done = j->subs[k].got = 1;
            j->n_done += j->n_subs - i, j->n_got += j->n_subs - i;
            return -1;
        }
    }
    return 0;
}

/* The whole non-streaming response. */
static cJSON *job_response(job_t *j) {
    cJSON *o = job_object(j, j->chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (size_t i = 0; i < j->n_subs; i++) {
        sub_t *s = &j->subs[i];
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", (double)i);
        if (j->chat) {
            cJSON *m = cJSON_AddObjectToObject(c, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", s->text.p ? s->text.p : "");
            if (s->lp) {
                cJSON *l = cJSON_AddObjectToObject(c, "logprobs");
                cJSON_AddItemToObject(l, "content", s->lp);
                s->lp = NULL;
            } else {
                cJSON_AddNullToObject(c, "logprobs");
            }
        } else {
            cJSON_AddStringToObject(c, "text", s->text.p ? s->text.p : "");
            if (s->lp) cJSON_AddItemToObject(c, "logprobs", s->lp), s->lp = NULL;
            else cJSON_AddNullToObject(c, "logprobs");
        }
        cJSON_AddStringToObject(c, "finish_reason", finish_name(s->finish));
        cJSON_AddItemToArray(choices, c);
    }
    usage_object(j, o);
    return o;
}

/* libmicrohttpd's reader for a stream: hands out the SSE bytes, waiting for more. */
static ssize_t job_read(void *cls, uint64_t pos, char *buf, size_t max) {
    job_t *j = cls;
    (void)pos;
    for (;;) {
        if (j->out.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (j->out_pos < j->out.n) {
            size_t k = j->out.n - j->out_pos < max ? j->out.n - j->out_pos : max;
            memcpy(buf, j->out.p + j->out_pos, k);
            j->out_pos += k;
            if (j->out_pos == j->out.n) j->out_pos = j->out.n = 0;
            return (ssize_t)k;
        }
        if (j->done_written) return MHD_CONTENT_READER_END_OF_STREAM;
        if (j->n_done == j->n_subs) {
            if (j->include_usage && !j->failed) {
                cJSON *o = job_object(j, j->chat ? "chat.completion.chunk" : "text_completion");
                cJSON_AddArrayToObject(o, "choices");
                usage_object(j, o);
                sse(j, o);
            }
            recur_sbuf_str(&j->out, "data: [DONE]\n\n");
            j->done_written = 1;
            continue;
        }
        /* the next piece, not the whole answer: each token goes out as it comes */
        if (job_wait(j, 2) == 1) {   /* the client went away: job_free cancels */
            recur_log_info("http: %s: the client went away; cancelling", j->id);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void job_read_free(void *cls) {
    job_t *j = cls;
    atomic_fetch_sub(&j->h->streams, 1);
    job_free(j);
}

static enum MHD_Result handle_generate(recur_http_t *h, struct MHD_Connection *conn, const char *url, int ep,
                                       const char *body, size_t n) {
    recur_http_bad_t b = {0};
    cJSON *root = recur_http_parse_json(body, n, &b);
    if (!root) return reply_bad(h, conn, url, &b);
    recur_http_gen_req_t g;
    int bad = recur_http_parse_generate(ep, root, h->cfg.max_choices, &g, &b);
    cJSON_Delete(root);
    if (!bad && g.chat) bad = render_chat(h, &g, &b);
    if (bad) {
        recur_http_gen_req_clear(&g);
        return reply_bad(h, conn, url, &b);
    }
    job_t *j = calloc(1, sizeof *j);
    if (j) j->subs = calloc(g.n_prompts * (size_t)g.n, sizeof *j->subs);
    if (!j || !j->subs || !(j->sock = coord_open(h))) {
        job_free(j);
        recur_http_gen_req_clear(&g);
        return reply_error(h, conn, url, 500, "internal_error", NULL, "cannot reach the coordinator (out of sockets?)");
    }
    j->h = h, j->conn = conn, j->chat = g.chat, j->stream = g.stream, j->include_usage = g.include_usage;
    j->logprobs = g.has_logprobs;
    j->created = (long long)time(NULL);
    uint64_t seq = atomic_fetch_add(&h->seq, 1);
    snprintf(j->id, sizeof j->id, "%s-%llx%04llx", g.chat ? "chatcmpl" : "cmpl", (unsigned long long)h->started,
             (unsigned long long)seq);
    j->n_subs = g.n_prompts * (size_t)g.n;
    for (size_t i = 0; i < j->n_subs; i++) {
        snprintf(j->subs[i].rid, sizeof j->subs[i].rid, "%s-%zu", j->id, i);
        j->subs[i].prompt = i / (size_t)g.n;
        if (j->logprobs && !j->stream) j->subs[i].lp = new_logprobs(j);
    }
    enum MHD_Result ret;
    if (job_send(j, &g, &b)) {
        ret = reply_error(h, conn, url, b.status, b.code, NULL, "%s", b.msg);
        goto done;
    }
    int w = job_wait(j, !g.stream);
    if (w == 1) {
        recur_log_info("http: %s: the client went away; cancelling", j->id);
        ret = MHD_NO;   /* nobody to answer: close the connection */
        goto done;
    }
    if (j->failed) {
        ret = reply_error(h, conn, url, j->fail_status, j->fail_code[0] ? j->fail_code : NULL, NULL, "%s", j->fail_msg);
        goto done;
    }
    if (!g.stream) {
        ret = reply_json(h, conn, url, 200, job_response(j));
        goto done;
    }
    /* stream: what came so far is converted already (stream chunks in j->out) */
    j->streaming = 1;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, job_read, j, job_read_free);
    if (!r) {
        ret = MHD_NO;
        goto done;
    }
    recur_http_gen_req_clear(&g);
    atomic_fetch_add(&h->streams, 1);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);   /* the connection holds it; job_read_free frees j */
    recur_metrics_http(h->cfg.metrics, route_name(url), 200);
    return ret;
done:
    recur_http_gen_req_clear(&g);
    job_free(j);
    return ret;
}

/* ------------------------------------------------------------------ sessions */

/* Sends env and waits up to timeout_ms for the reply of body `want` on socket s (already
 * open), or an ErrorResponse (the coordinator refused the message whole). The reply (or
 * NULL: no answer) is the caller's to free. */
static recur_api_envelope_t *sock_call(recur_http_t *h, recur_msgsock_t *s, recur_api_envelope_t *env,
                                       Recur__Api__Envelope__BodyCase want, int timeout_ms) {
    recur_api_envelope_t *r = NULL;
    recur_proto_error_t err;
    if (recur_msgsock_send_api(s, NULL, env, &err) != RECUR_OK) {
        recur_log_warn("http: cannot ask the coordinator: %s", err.msg);
        return NULL;
    }
    for (int waited = 0; waited < timeout_ms && !atomic_load(&h->stopping); waited += SLICE_MS) {
        recur_status_t st = recur_msgsock_recv_api(s, SLICE_MS, NULL, &r, &err);
        if (st == RECUR_E_TIMEOUT) continue;
        if (st == RECUR_OK && (r->body_case == want || r->body_case == RECUR__API__ENVELOPE__BODY_ERROR)) return r;
        recur_proto_api_free(r);
        r = NULL;
        if (st != RECUR_OK) break;
    }
    return NULL;
}

/* The error of a session call's reply: the SessionResponse's, or an ErrorResponse's; NULL
 * when it succeeded. */
static const Recur__Api__Error *session_error(const recur_api_envelope_t *r) {
    if (r->body_case == RECUR__API__ENVELOPE__BODY_ERROR) return r->error->error;
    return r->session_response->error;
}
static const Recur__Api__Error k_no_error_detail = RECUR__API__ERROR__INIT;

/* One SessionRequest on a socket of its own; the SessionResponse or NULL (no answer). */
static recur_api_envelope_t *session_call(recur_http_t *h, Recur__Api__SessionRequest *q) {
    recur_msgsock_t *s = coord_open(h);
    if (!s) return NULL;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
    env.session = q;
    recur_api_envelope_t *r = sock_call(h, s, &env, RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE, h->cfg.session_timeout_ms);
    recur_msgsock_close(s);
    return r;
}

/* 1 when session `id` has had a turn (its state holds a conversation: a chat request then
 * renders its messages as the conversation's continuation), 0 when it has none or does not
 * exist yet (the request starts it); -1 when the coordinator did not answer (b set). */
static int session_has_turns(recur_http_t *h, const char *id, recur_http_bad_t *b) {
    Recur__Api__SessionRequest q;
    recur_http_session_request(RECUR__API__SESSION_OP__SESSION_OP_GET, "http-session-get", id, NULL, &q);
    recur_api_envelope_t *r = session_call(h, &q);
    if (!r) {
        recur_http_badf(b, NULL, "not_ready", "the coordinator did not answer (session '%.128s')", id);
        b->status = 503;
        return -1;
    }
    int turns = r->body_case == RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE && r->session_response->info &&
                r->session_response->info->n_tokens > 0;
    recur_proto_api_free(r);
    return turns;
}

/* Chat: the prompt from the messages, through the template; a later turn of a session as
 * the continuation of its conversation (recur_chat_template_render_continuation). */
static int render_chat(recur_http_t *h, recur_http_gen_req_t *g, recur_http_bad_t *b) {
    const recur_chat_template_t *t = chat_template_for(h);
    if (!t) {
        recur_http_badf(b, NULL, "not_ready", "not ready: the model is still loading (its chat template is not known yet)");
        b->status = 503;
        return -1;
    }
    int cont = 0;
    if (g->session_id && (cont = session_has_turns(h, g->session_id, b)) < 0) return -1;
    return recur_http_render_chat(g, t, cont, b);
}

static const char *tier_name(Recur__Api__SessionTier t) {
    switch (t) {
    case RECUR__API__SESSION_TIER__SESSION_TIER_NEW: return "new";
    case RECUR__API__SESSION_TIER__SESSION_TIER_SLOT: return "slot";
    case RECUR__API__SESSION_TIER__SESSION_TIER_HOST: return "host";
    case RECUR__API__SESSION_TIER__SESSION_TIER_DISK: return "disk";
    default: return "unknown";
    }
}

/* A SessionInfo as JSON (README "Sessions over HTTP"). */
static cJSON *session_json(const Recur__Api__SessionInfo *in) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", in->session_id ? in->session_id : "");
    cJSON_AddStringToObject(o, "object", "session");
    cJSON_AddStringToObject(o, "model", in->model ? in->model : "");
    cJSON_AddStringToObject(o, "tier", tier_name(in->tier));
    cJSON_AddNumberToObject(o, "n_tokens", (double)in->n_tokens);
    cJSON_AddBoolToObject(o, "busy", in->busy);
    cJSON_AddNumberToObject(o, "saved_tokens", (double)in->saved_tokens);
    cJSON_AddNumberToObject(o, "created_at", (double)(in->created_unix_ms / 1000u));
    cJSON_AddNumberToObject(o, "last_used_at", (double)(in->last_used_unix_ms / 1000u));
    cJSON_AddNumberToObject(o, "created_unix_ms", (double)in->created_unix_ms);
    cJSON_AddNumberToObject(o, "last_used_unix_ms", (double)in->last_used_unix_ms);
    return o;
}

/* A SessionResponse's error as the HTTP error reply. */
static enum MHD_Result reply_session_error(recur_http_t *h, struct MHD_Connection *conn, const char *url,
                                           const Recur__Api__Error *e) {
    const char *code = "internal_error";
    const char *msg = e && e->message ? e->message : "the session operation failed";
    int st = e && e->has_code ? http_status_for(e->code, msg, &code) : 500;
    /* the coordinator's NOT_FOUND for a session operation names a session or a model */
    if (st == 404 && strstr(msg, "model")) code = "model_not_found";
    return reply_error(h, conn, url, st, code, NULL, "%s", msg);
}

/* GET, LIST, CREATE, FORK, DELETE: one request, one answer. */
static enum MHD_Result handle_session_op(recur_http_t *h, struct MHD_Connection *conn, const char *url,
                                         Recur__Api__SessionOp op, const char *id, const char *body, size_t n) {
    recur_http_bad_t b = {0};
    recur_http_sess_body_t sb = {0};
    if ((op == RECUR__API__SESSION_OP__SESSION_OP_CREATE || op == RECUR__API__SESSION_OP__SESSION_OP_FORK) &&
        recur_http_parse_session_body(op, body, n, &sb, &b))
        return reply_bad(h, conn, url, &b);
    Recur__Api__SessionRequest q;
    recur_http_session_request(op, "http-session", id, &sb, &q);
    recur_api_envelope_t *r = session_call(h, &q);
    recur_http_sess_body_clear(&sb);
    if (!r) return reply_error(h, conn, url, 503, "not_ready", NULL, "the coordinator did not answer");
    const Recur__Api__SessionResponse *sr = r->session_response;
    enum MHD_Result ret;
    if (r->body_case == RECUR__API__ENVELOPE__BODY_ERROR || sr->error) {
        const Recur__Api__Error *e = session_error(r);
        ret = reply_session_error(h, conn, url, e ? e : &k_no_error_detail);
    } else if (op == RECUR__API__SESSION_OP__SESSION_OP_LIST) {
        cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data");
        cJSON_AddStringToObject(o, "object", "list");
        for (size_t i = 0; i < sr->n_sessions; i++) cJSON_AddItemToArray(data, session_json(sr->sessions[i]));
        ret = reply_json(h, conn, url, 200, o);
    } else if (!sr->info) {
        ret = reply_error(h, conn, url, 500, "internal_error", NULL, "the coordinator's answer has no session");
    } else if (op == RECUR__API__SESSION_OP__SESSION_OP_DELETE) {
        cJSON *o = cJSON_CreateObject();   /* OpenAI's shape of a deletion */
        cJSON_AddStringToObject(o, "id", sr->info->session_id ? sr->info->session_id : id);
        cJSON_AddStringToObject(o, "object", "session.deleted");
        cJSON_AddBoolToObject(o, "deleted", 1);
        ret = reply_json(h, conn, url, 200, o);
    } else {
        ret = reply_json(h, conn, url, 200, session_json(sr->info));
    }
    recur_proto_api_free(r);
    return ret;
}

/* GET /v1/sessions/{id}/export: the checkpoint's pieces, as they come, as one body of the
 * size the first piece announces. */
typedef struct export_job {
    recur_http_t *h;
    struct MHD_Connection *conn;
    recur_msgsock_t *sock;
    recur_api_envelope_t *cur;   /* the piece being handed out */
    size_t off;                  /* within cur's data */
    uint64_t sent, total;
    int done;                    /* cur is the last piece */
} export_job_t;

static void export_free(void *cls) {
    export_job_t *x = cls;
    atomic_fetch_sub(&x->h->streams, 1);
    recur_proto_api_free(x->cur);
    recur_msgsock_close(x->sock);
    free(x);
}

/* The next piece of x (into x->cur), or -1 (an error, the client went away, no answer). */
static int export_next(export_job_t *x) {
    recur_proto_api_free(x->cur);
    x->cur = NULL, x->off = 0;
    for (int waited = 0; waited < x->h->cfg.session_timeout_ms; waited += SLICE_MS) {
        if (atomic_load(&x->h->stopping) || client_gone(x->conn)) return -1;
        recur_api_envelope_t *r = NULL;
        recur_proto_error_t err;
        recur_status_t st = recur_msgsock_recv_api(x->sock, SLICE_MS, NULL, &r, &err);
        if (st == RECUR_E_TIMEOUT) continue;
        if (st != RECUR_OK) return -1;
        const Recur__Api__SessionResponse *sr = r->body_case == RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE
                                                    ? r->session_response : NULL;
        if (!sr || sr->error || !sr->chunk || !sr->chunk->has_data || sr->chunk->offset != x->sent ||
            sr->chunk->total != x->total) {
            if (sr && sr->error) recur_log_warn("http: export failed: %s", sr->error->message ? sr->error->message : "?");
            recur_proto_api_free(r);
            return -1;
        }
        x->cur = r;
        x->done = sr->has_done && sr->done;
        return 0;
    }
    return -1;
}

static ssize_t export_read(void *cls, uint64_t pos, char *buf, size_t max) {
    export_job_t *x = cls;
    (void)pos;
    for (;;) {
        if (x->sent >= x->total) return MHD_CONTENT_READER_END_OF_STREAM;
        const ProtobufCBinaryData *d = x->cur ? &x->cur->session_response->chunk->data : NULL;
        if (d && x->off < d->len) {
            size_t k = d->len - x->off < max ? d->len - x->off : max;
            memcpy(buf, d->data + x->off, k);
            x->off += k, x->sent += k;
            return (ssize_t)k;
        }
        if ((x->cur && x->done) || export_next(x)) {   /* short, or broken: the client sees a cut body */
            recur_log_warn("http: export stopped at byte %llu of %llu", (unsigned long long)x->sent,
                           (unsigned long long)x->total);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static enum MHD_Result handle_export(recur_http_t *h, struct MHD_Connection *conn, const char *url, const char *id) {
    export_job_t *x = calloc(1, sizeof *x);
    if (!x || !(x->sock = coord_open(h))) {
        free(x);
        return reply_error(h, conn, url, 500, "internal_error", NULL, "cannot reach the coordinator (out of sockets?)");
    }
    x->h = h, x->conn = conn;
    Recur__Api__SessionRequest q;
    recur_http_session_request(RECUR__API__SESSION_OP__SESSION_OP_EXPORT, "http-export", id, NULL, &q);
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
    env.session = &q;
    x->cur = sock_call(h, x->sock, &env, RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE, h->cfg.session_timeout_ms);
    enum MHD_Result ret;
    const Recur__Api__SessionResponse *sr =
        x->cur && x->cur->body_case == RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE ? x->cur->session_response : NULL;
    if (!x->cur) {
        ret = reply_error(h, conn, url, 503, "not_ready", NULL, "the coordinator did not answer");
    } else if (!sr || sr->error) {
        const Recur__Api__Error *e = session_error(x->cur);
        ret = reply_session_error(h, conn, url, e ? e : &k_no_error_detail);
    } else if (!sr->chunk || !sr->chunk->has_total || sr->chunk->offset != 0) {
        ret = reply_error(h, conn, url, 500, "internal_error", NULL, "the coordinator's export has no first piece");
    } else {
        x->total = sr->chunk->total;
        x->done = sr->has_done && sr->done;
        struct MHD_Response *r = MHD_create_response_from_callback(x->total, 64 * 1024, export_read, x, export_free);
        if (!r) {
            ret = MHD_NO;
        } else {
            atomic_fetch_add(&h->streams, 1);
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
            ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
            MHD_destroy_response(r);   /* the connection holds it; export_free frees x */
            recur_metrics_http(h->cfg.metrics, route_name(url), 200);
            return ret;
        }
    }
    recur_proto_api_free(x->cur);
    recur_msgsock_close(x->sock);
    free(x);
    return ret;
}

/* POST .../import: the body goes to the coordinator in pieces of IMPORT_PIECE bytes as it
 * arrives (never held whole); each piece's answer is awaited before the next. */
#define IMPORT_PIECE ((size_t)4 << 20)

typedef struct import_job {
    recur_msgsock_t *sock;
    char id[RECUR_PROTO_MAX_ID_BYTES + 1];   /* "" : made up by the coordinator */
    uint64_t total, sent;
    uint8_t *buf;                            /* the piece being filled */
    size_t n;
    recur_api_envelope_t *last;              /* the last piece's answer (the session's info) */
    int failed, status;
    char code[48], msg[512];
} import_job_t;

static void import_free(import_job_t *x) {
    if (!x) return;
    recur_msgsock_close(x->sock);
    recur_proto_api_free(x->last);
    free(x->buf);
    free(x);
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void import_fail(import_job_t *x, int status, const char *code, const char *fmt, ...) {
    if (x->failed) return;
    x->failed = 1, x->status = status;
    snprintf(x->code, sizeof x->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->msg, sizeof x->msg, fmt, ap);
    va_end(ap);
}

/* Sends the piece in x->buf and waits for its answer. */
static void import_send(recur_http_t *h, import_job_t *x) {
    if (x->failed || !x->n) return;
    Recur__Api__StateChunk ch = RECUR__API__STATE_CHUNK__INIT;
    ch.has_offset = ch.has_total = ch.has_data = 1;
    ch.offset = x->sent, ch.total = x->total, ch.data.len = x->n, ch.data.data = x->buf;
    Recur__Api__SessionRequest q = RECUR__API__SESSION_REQUEST__INIT;
    q.request_id = "http-import";
    q.has_op = 1, q.op = RECUR__API__SESSION_OP__SESSION_OP_IMPORT;
    q.session_id = x->id[0] ? x->id : NULL;
    q.chunk = &ch;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
    env.session = &q;
    recur_api_envelope_t *r = sock_call(h, x->sock, &env, RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE,
                                        h->cfg.session_timeout_ms);
    x->sent += x->n, x->n = 0;
    if (!r) {
        import_fail(x, 503, "not_ready", "the coordinator did not answer (import at byte %llu)",
                    (unsigned long long)x->sent);
        return;
    }
    const Recur__Api__Error *e = session_error(r);
    if (e || r->body_case != RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE) {
        const char *code = "internal_error";
        const char *msg = e && e->message ? e->message : "the import failed";
        int st = e && e->has_code ? http_status_for(e->code, msg, &code) : 500;
        import_fail(x, st, code, "%s", msg);
        recur_proto_api_free(r);
        return;
    }
    recur_proto_api_free(x->last);
    x->last = r;
}

/* A piece of the body: buffered, sent whenever a piece is full. */
static void import_feed(recur_http_t *h, import_job_t *x, const char *data, size_t n) {
    while (n && !x->failed) {
        size_t k = IMPORT_PIECE - x->n < n ? IMPORT_PIECE - x->n : n;
        memcpy(x->buf + x->n, data, k);
        x->n += k, data += k, n -= k;
        if (x->n == IMPORT_PIECE) import_send(h, x);
    }
}

/* The body is complete: the last piece, then the answer. */
static enum MHD_Result import_finish(recur_http_t *h, struct MHD_Connection *conn, const char *url, import_job_t *x) {
    import_send(h, x);
    if (!x->failed && x->sent != x->total)
        import_fail(x, 400, "invalid_value", "the body has %llu bytes, Content-Length said %llu",
                    (unsigned long long)x->sent, (unsigned long long)x->total);
    const Recur__Api__SessionResponse *sr = x->last ? x->last->session_response : NULL;
    if (!x->failed && (!sr || !sr->info))
        import_fail(x, 500, "internal_error", "the coordinator's answer to the import has no session");
    if (x->failed) return reply_error(h, conn, url, x->status, x->code, NULL, "%s", x->msg);
    return reply_json(h, conn, url, 200, session_json(sr->info));
}

/* ------------------------------------------------------------------ other routes */

static enum MHD_Result handle_health(recur_http_t *h, struct MHD_Connection *conn, const char *url, int ready) {
    Recur__Api__HealthRequest hr = RECUR__API__HEALTH_REQUEST__INIT;
    hr.request_id = "http-health";
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH;
    env.health = &hr;
    recur_api_envelope_t *r = coord_call(h, &env, RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE);
    cJSON *o = cJSON_CreateObject();
    int status = 200;
    if (!r) {
        status = 503;
        cJSON_AddStringToObject(o, "status", "unavailable");
        cJSON_AddStringToObject(o, "detail", "the coordinator loop did not answer");
    } else {
        const Recur__Api__HealthResponse *hs = r->health_response;
        int serving = hs->status == RECUR__API__SERVING_STATUS__SERVING_STATUS_SERVING &&
                      hs->workers_ready == hs->workers_expected;
        if (ready && !serving) status = 503;
        cJSON_AddStringToObject(o, "status", !ready ? "live" : serving ? "ready" : "not ready");
        if (!serving) cJSON_AddStringToObject(o, "detail", hs->detail ? hs->detail : "not serving");
        cJSON_AddNumberToObject(o, "workers_ready", hs->workers_ready);
        cJSON_AddNumberToObject(o, "workers_expected", hs->workers_expected);
        if (hs->has_active_requests) {
            cJSON_AddNumberToObject(o, "running", hs->active_requests);
            cJSON_AddNumberToObject(o, "waiting", hs->queued_requests);
            cJSON_AddNumberToObject(o, "free_slots", hs->free_slots);
        }
    }
    recur_proto_api_free(r);
    return reply_json(h, conn, url, status, o);
}

static enum MHD_Result handle_models(recur_http_t *h, struct MHD_Connection *conn, const char *url) {
    Recur__Api__ListModelsRequest lm = RECUR__API__LIST_MODELS_REQUEST__INIT;
    lm.request_id = "http-models";
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_LIST_MODELS;
    env.list_models = &lm;
    recur_api_envelope_t *r = coord_call(h, &env, RECUR__API__ENVELOPE__BODY_LIST_MODELS_RESPONSE);
    if (!r) return reply_error(h, conn, url, 503, "not_ready", NULL, "the coordinator did not answer");
    const char *one = !strncmp(url, "/v1/models/", 11) ? url + 11 : NULL;
    cJSON *data = cJSON_CreateArray(), *found = NULL;
    const Recur__Api__ListModelsResponse *lr = r->list_models_response;
    for (size_t i = 0; i < lr->n_models; i++) {
        const Recur__Api__ModelInfo *mi = lr->models[i];
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", mi->id ? mi->id : "");
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)h->started);
        cJSON_AddStringToObject(m, "owned_by", "recur");
        if (mi->arch) {   /* what the worker reported (once ready) */
            cJSON *x = cJSON_AddObjectToObject(m, "recur");
            cJSON_AddStringToObject(x, "arch", mi->arch);
            cJSON_AddNumberToObject(x, "n_vocab", mi->n_vocab);
            cJSON_AddNumberToObject(x, "n_layer", mi->n_layer);
            cJSON_AddNumberToObject(x, "n_embd", mi->n_embd);
            cJSON_AddNumberToObject(x, "tp", mi->tp);
            cJSON_AddNumberToObject(x, "pp", mi->pp);
            cJSON_AddNumberToObject(x, "max_sequences", mi->max_sequences);
        }
        if (one && mi->id && !strcmp(one, mi->id)) found = cJSON_Duplicate(m, 1);
        cJSON_AddItemToArray(data, m);
    }
    recur_proto_api_free(r);
    if (one) {
        cJSON_Delete(data);
        if (!found) return reply_error(h, conn, url, 404, "model_not_found", "model", "model '%.200s' is not served here", one);
        return reply_json(h, conn, url, 200, found);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToObject(o, "data", data);
    return reply_json(h, conn, url, 200, o);
}

/* ------------------------------------------------------------------ the access handler */

typedef struct hreq {
    recur_sbuf_t body;
    int too_big;
    int key;                 /* the API key's index (-1: none / no keys) */
    int counted;             /* counted in h->in_flight[key] */
    import_job_t *imp;       /* an import's body streams to the coordinator */
} hreq_t;

/* The index of the request's API key; -1 when it has none that matches. */
static int auth_key(recur_http_t *h, struct MHD_Connection *conn) {
    const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7)) return -1;
    a += 7;
    while (*a == ' ') a++;
    return recur_http_key_index((const char *const *)h->keys, h->n_keys, a, strlen(a));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_n, void **con_cls) {
    recur_http_t *h = cls;
    hreq_t *q = *con_cls;
    (void)version;
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    int health = !strcmp(url, "/health/live") || !strcmp(url, "/health/ready");
    int ep = !strcmp(url, "/v1/completions") ? RECUR_HTTP_EP_COMPLETIONS : !strcmp(url, "/v1/chat/completions") ? RECUR_HTTP_EP_CHAT : 0;
    int models = !strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11);
    int metrics = !strcmp(url, "/metrics");
    sess_route_t sr;
    int sess = session_route(url, method, &sr);
    int import = sess && sr.op == RECUR__API__SESSION_OP__SESSION_OP_IMPORT;
    if (!q) {   /* the headers: decide what can be decided before the body */
        if (!(q = calloc(1, sizeof *q))) return MHD_NO;
        *con_cls = q;
        q->key = -1;
        if (!health && h->n_keys && (q->key = auth_key(h, conn)) < 0) {
            const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
            return reply_error(h, conn, url, 401, "invalid_api_key", NULL, "%s",
                               a ? "invalid API key (send 'Authorization: Bearer <key>' with a configured key)"
                                 : "missing API key: send 'Authorization: Bearer <key>'");
        }
        if (!ep && !health && !models && !metrics && !sess)
            return reply_error(h, conn, url, 404, "not_found", NULL, "no route %.16s %.200s (routes: POST "
                               "/v1/completions, POST /v1/chat/completions, GET /v1/models, /v1/sessions, GET "
                               "/health/live, GET /health/ready, GET /metrics)", method, url);
        if (sess ? !sr.op : ((ep && !post) || (!ep && !get)))
            return reply_error(h, conn, url, 405, "method_not_allowed", NULL, "%.16s %s: use %s", method, url,
                               sess ? sr.allow : ep ? "POST" : "GET");
        /* --max-requests-per-key: a key with that many requests in flight gets 429 for the
         * next one (counted until the response is complete, streams included) */
        if (q->key >= 0 && h->cfg.max_requests_per_key > 0) {
            if (atomic_fetch_add(&h->in_flight[q->key], 1) >= h->cfg.max_requests_per_key) {
                atomic_fetch_sub(&h->in_flight[q->key], 1);
                return reply_error(h, conn, url, 429, "too_many_requests", NULL,
                                   "this API key has %d requests in flight, the most this server allows "
                                   "(--max-requests-per-key); retry when one has finished",
                                   (int)h->cfg.max_requests_per_key);
            }
            q->counted = 1;
        }
        recur_http_bad_t b = {0};
        if (sess && sr.id_required && recur_http_session_id_check(sr.id, sr.id_len, "session_id", &b))
            return reply_bad(h, conn, url, &b);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        size_t limit = import ? h->cfg.max_import_bytes : h->cfg.max_body_bytes;
        if (cl && strtoull(cl, NULL, 10) > limit)
            return reply_error(h, conn, url, 413, "body_too_large", NULL,
                               "the request body has %s bytes; this server takes at most %zu (%s)", cl, limit,
                               import ? "--max-import-bytes" : "--max-body-bytes");
        if (import) {
            /* the checkpoint streams to the coordinator, which needs its size up front */
            char *end = NULL;
            unsigned long long total = cl ? strtoull(cl, &end, 10) : 0;
            if (!cl || !end || *end || total == 0)
                return reply_error(h, conn, url, cl ? 400 : 411, cl ? "invalid_value" : "length_required", NULL, "%s",
                                   cl ? "an import needs a body: the bytes of an exported session"
                                      : "an import needs Content-Length (the exported session's size)");
            const char *qid = sr.id_len ? NULL : MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "session_id");
            if (qid && recur_http_session_id_check(qid, strlen(qid), "session_id", &b)) return reply_bad(h, conn, url, &b);
            import_job_t *x = calloc(1, sizeof *x);
            if (!x || !(x->buf = malloc(IMPORT_PIECE)) || !(x->sock = coord_open(h))) {
                import_free(x);
                return reply_error(h, conn, url, 500, "internal_error", NULL, "out of memory (or sockets)");
            }
            x->total = total;
            if (sr.id_len) snprintf(x->id, sizeof x->id, "%.*s", (int)sr.id_len, sr.id);
            else if (qid) snprintf(x->id, sizeof x->id, "%s", qid);
            q->imp = x;
        }
        return MHD_YES;
    }
    if (*upload_n) {   /* a piece of the body */
        if (q->imp) {
            if (q->imp->sent + q->imp->n + *upload_n > q->imp->total)
                import_fail(q->imp, 400, "invalid_value", "the body is longer than its Content-Length");
            import_feed(h, q->imp, upload, *upload_n);
        } else {
            if (q->body.n + *upload_n > h->cfg.max_body_bytes) q->too_big = 1;
            if (!q->too_big) recur_sbuf_add(&q->body, upload, *upload_n);
        }
        *upload_n = 0;
        return MHD_YES;
    }
    if (q->imp) return import_finish(h, conn, url, q->imp);
    if (q->too_big)
        return reply_error(h, conn, url, 413, "body_too_large", NULL,
                           "the request body is larger than %zu bytes (--max-body-bytes)", h->cfg.max_body_bytes);
    if (q->body.oom) return reply_error(h, conn, url, 500, "internal_error", NULL, "out of memory");
    if (health) return handle_health(h, conn, url, !strcmp(url, "/health/ready"));
    if (models) return handle_models(h, conn, url);
    if (sess) {
        char id[RECUR_PROTO_MAX_ID_BYTES + 1];
        snprintf(id, sizeof id, "%.*s", (int)sr.id_len, sr.id);
        if (sr.op == RECUR__API__SESSION_OP__SESSION_OP_EXPORT) return handle_export(h, conn, url, id);
        if (sr.op != RECUR__API__SESSION_OP__SESSION_OP_CREATE && sr.op != RECUR__API__SESSION_OP__SESSION_OP_FORK &&
            q->body.n)
            return reply_error(h, conn, url, 400, "invalid_value", NULL, "%s %s takes no body", method, url);
        return handle_session_op(h, conn, url, sr.op, id, q->body.p ? q->body.p : "", q->body.n);
    }
    if (metrics) {
        if (!h->cfg.metrics) return reply_error(h, conn, url, 404, "not_found", NULL, "metrics are off");
        recur_metrics_http(h->cfg.metrics, "/metrics", 200);   /* counted before rendering: it shows itself */
        char *text = recur_metrics_render(h->cfg.metrics);
        struct MHD_Response *r =
            text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE) : NULL;
        if (!r) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    return handle_generate(h, conn, url, ep, q->body.p ? q->body.p : "", q->body.n);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    recur_http_t *h = cls;
    (void)conn, (void)toe;
    hreq_t *q = *con_cls;
    if (q) {
        if (q->counted) atomic_fetch_sub(&h->in_flight[q->key], 1);
        import_free(q->imp);
        free(q->body.p), free(q);
    }
    *con_cls = NULL;
}

/* libmicrohttpd's messages are printf formats with their arguments (clang checks the call) */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 0)))
#endif
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char m[512];
    vsnprintf(m, sizeof m, fmt, ap);
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n') m[--n] = '\0';
    recur_log_info("http: %s", m);   /* mostly connections we closed on purpose */
}

/* ------------------------------------------------------------------ lifetime */

recur_status_t recur_http_start(void *zctx, const recur_http_config_t *cfg, recur_http_t **out) {
    *out = NULL;
    if (!zctx || !cfg || !cfg->coord_endpoint || !cfg->model_id || cfg->port < 0 || cfg->port > 65535 ||
        cfg->max_body_bytes < 1 || cfg->max_choices < 1 || cfg->max_connections < 1 || cfg->coord_timeout_ms < 1 ||
        cfg->max_import_bytes < 1 || cfg->session_timeout_ms < 1 || cfg->max_requests_per_key < 0) {
        recur_log_err("http: bad configuration (endpoint, model id, port, limits)");
        return RECUR_E_INVAL;
    }
    recur_http_t *h = calloc(1, sizeof *h);
    if (!h) return RECUR_E_NOMEM;
    h->cfg = *cfg;
    h->zctx = zctx;
    pthread_mutex_init(&h->mu, NULL);
    h->started = (long long)time(NULL);
    h->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    h->endpoint = strdup(cfg->coord_endpoint);
    h->model_id = strdup(cfg->model_id);
    recur_status_t s = h->host && h->endpoint && h->model_id ? RECUR_OK : RECUR_E_NOMEM;
    if (s == RECUR_OK && cfg->n_api_keys && !(h->keys = calloc(cfg->n_api_keys, sizeof *h->keys))) s = RECUR_E_NOMEM;
    for (size_t i = 0; s == RECUR_OK && i < cfg->n_api_keys; i++, h->n_keys++)
        if (!(h->keys[i] = strdup(cfg->api_keys[i]))) s = RECUR_E_NOMEM;
    if (s == RECUR_OK && cfg->n_api_keys && !(h->in_flight = calloc(cfg->n_api_keys, sizeof *h->in_flight)))
        s = RECUR_E_NOMEM;
    h->cfg.api_keys = NULL, h->cfg.host = h->host, h->cfg.coord_endpoint = h->endpoint, h->cfg.model_id = h->model_id;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = s == RECUR_OK ? getaddrinfo(h->host, port, &hints, &ai) : 0;
    if (s == RECUR_OK && gai) {
        recur_log_err("http: --host %s: %s", h->host, gai_strerror(gai));
        s = RECUR_E_INVAL;
    }
    if (s == RECUR_OK) {
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC |
                         MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
        /* the server's threads inherit this mask: SIGINT/SIGTERM go to serve's main thread */
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, SIGINT);
        sigaddset(&block, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
                                MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_END);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!h->d) {
            recur_log_err("http: cannot listen on %s port %d (in use, or not an address of this host?)", h->host,
                          cfg->port);
            s = RECUR_E_IO;
        }
    }
    if (ai) freeaddrinfo(ai);
    if (s != RECUR_OK) {
        recur_http_stop(h);
        return s;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? (int)di->port : cfg->port;
    *out = h;
    return RECUR_OK;
}

int recur_http_port(const recur_http_t *h) { return h->port; }

void recur_http_stop(recur_http_t *h) {
    if (!h) return;
    atomic_store(&h->stopping, 1);   /* waiting threads see it within SLICE_MS */
    if (h->d) {
        /* no new connections; open streams write their error event and [DONE] (up to 2 s),
         * then libmicrohttpd closes what is left and joins the threads */
        MHD_socket ls = MHD_quiesce_daemon(h->d);
        if (ls != MHD_INVALID_SOCKET) close(ls);
        for (int i = 0; i < 200 && atomic_load(&h->streams) > 0; i++) usleep(10000);
        MHD_stop_daemon(h->d);
    }
    for (size_t i = 0; i < h->n_keys; i++) free(h->keys[i]);
    free(h->keys);
    free(h->in_flight);
    recur_chat_template_free(h->builtin);
    free(h->host);
    free(h->endpoint);
    free(h->model_id);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
