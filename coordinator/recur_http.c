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

#include "recur_log.h"
#include "recur_msgsock.h"
#include "recur_proto.h"
#include "recur_utf8.h"

#define SLICE_MS 100            /* how often a waiting thread checks its client and the stop flag */
#define CANCEL_WAIT_MS 2000     /* how long a closing job waits for its cancelled requests' finals */
#define MAX_TOP_KEYS 64         /* top-level fields in a request body                             */
#define MAX_MESSAGES 4096       /* chat messages per request                                       */

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
};

recur_http_config_t recur_http_default_config(void) {
    recur_http_config_t c;
    memset(&c, 0, sizeof c);
    c.host = "127.0.0.1";
    c.max_body_bytes = (size_t)4 << 20;
    c.max_choices = 64;
    c.max_connections = 512;
    c.coord_timeout_ms = 2000;
    return c;
}

/* ------------------------------------------------------------------ keys */

int recur_http_key_ok(const char *const *keys, size_t n, const char *key, size_t len) {
    unsigned ok = 0;
    for (size_t k = 0; k < n; k++) {
        size_t kl = strlen(keys[k]);
        unsigned d = kl != len;
        /* every byte of the configured key is compared, whatever the candidate holds */
        for (size_t i = 0; i < kl; i++) d |= (unsigned)(uint8_t)keys[k][i] ^ (unsigned)(uint8_t)(i < len ? key[i] : 0);
        ok |= d == 0;
    }
    return (int)ok;
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

/* ------------------------------------------------------------------ small buffers */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
static void sb_str(sbuf_t *b, const char *s) { sb_add(b, s, strlen(s)); }

static int utf8_valid(const char *s) {
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t l = recur_utf8_len(p + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

/* ------------------------------------------------------------------ responses */

static const char *route_name(const char *url) {
    static const char *const known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health/live",
                                        "/health/ready", "/metrics"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(url, known[i])) return known[i];
    if (!strncmp(url, "/v1/models/", 11)) return "/v1/models";
    return "other";
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
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, strncmp(url, "/v1/c", 5) ? "GET" : "POST");
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

/* ------------------------------------------------------------------ request parsing */

enum { EP_COMPL = 1, EP_CHAT = 2 };

typedef struct prompt {
    char *text;          /* or */
    int32_t *ids;
    size_t n_ids;
} prompt_t;

typedef struct gen_req {
    int chat;
    char *model;
    prompt_t *prompts;
    size_t n_prompts;
    int32_t n;
    int stream, include_usage;
    int has_max_tokens;
    uint32_t max_tokens;
    int has_temperature, has_top_p, has_top_k, has_min_p, has_rep, has_pres, has_freq, has_seed, has_logprobs;
    float temperature, top_p, min_p, rep, pres, freq;
    int32_t top_k;
    uint64_t seed;
    uint32_t logprobs;   /* completions: the int; chat: top_logprobs */
    int chat_logprobs;   /* chat: logprobs: true */
    int has_top_logprobs;
    char *stops[RECUR_PROTO_MAX_STOP];
    size_t n_stops;
    int32_t stop_ids[RECUR_PROTO_MAX_STOP_TOKENS];
    size_t n_stop_ids;
    int ignore_eos;
    int32_t priority;
    Recur__Api__LogitBias bias[RECUR_PROTO_MAX_LOGIT_BIAS];
    Recur__Api__LogitBias *biasp[RECUR_PROTO_MAX_LOGIT_BIAS];
    size_t n_bias;
} gen_req_t;

static void gen_req_clear(gen_req_t *g) {
    free(g->model);
    for (size_t i = 0; i < g->n_prompts; i++) free(g->prompts[i].text), free(g->prompts[i].ids);
    free(g->prompts);
    for (size_t i = 0; i < g->n_stops; i++) free(g->stops[i]);
    memset(g, 0, sizeof *g);
}

/* A failure to read the request: status, OpenAI param and message. */
typedef struct bad {
    int status;
    char param[64];
    char code[48];
    char msg[768];
} bad_t;

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int badf(bad_t *b, const char *param, const char *code, const char *fmt, ...) {
    b->status = 400;
    snprintf(b->param, sizeof b->param, "%s", param ? param : "");
    snprintf(b->code, sizeof b->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->msg, sizeof b->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *json_type(const cJSON *v) {
    return cJSON_IsString(v) ? "a string" : cJSON_IsNumber(v) ? "a number" : cJSON_IsBool(v) ? "a boolean"
         : cJSON_IsArray(v)  ? "an array" : cJSON_IsObject(v) ? "an object" : cJSON_IsNull(v) ? "null" : "invalid";
}

static int get_number(const cJSON *v, const char *name, double lo, double hi, double *out, bad_t *b) {
    if (!cJSON_IsNumber(v)) return badf(b, name, "invalid_type", "'%s' must be a number, got %s", name, json_type(v));
    double x = v->valuedouble;
    if (!isfinite(x) || x < lo || x > hi)
        return badf(b, name, "invalid_value", "'%s' must be between %g and %g, got %g", name, lo, hi, x);
    *out = x;
    return 0;
}

static int get_int(const cJSON *v, const char *name, double lo, double hi, int64_t *out, bad_t *b) {
    if (!cJSON_IsNumber(v)) return badf(b, name, "invalid_type", "'%s' must be an integer, got %s", name, json_type(v));
    double x = v->valuedouble;
    if (!isfinite(x) || x != floor(x))
        return badf(b, name, "invalid_type", "'%s' must be an integer, got %g", name, x);
    if (x < lo || x > hi)
        return badf(b, name, "invalid_value", "'%s' must be between %.0f and %.0f, got %.0f", name, lo, hi, x);
    *out = (int64_t)x;
    return 0;
}

static int get_bool(const cJSON *v, const char *name, int *out, bad_t *b) {
    if (!cJSON_IsBool(v)) return badf(b, name, "invalid_type", "'%s' must be true or false, got %s", name, json_type(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string that must be valid UTF-8 without NUL; copied into *out. */
static int get_string(const cJSON *v, const char *name, char **out, bad_t *b) {
    if (!cJSON_IsString(v)) return badf(b, name, "invalid_type", "'%s' must be a string, got %s", name, json_type(v));
    if (!utf8_valid(v->valuestring)) return badf(b, name, "invalid_value", "'%s' is not valid UTF-8", name);
    if (!(*out = strdup(v->valuestring))) return badf(b, name, NULL, "out of memory");
    return 0;
}

static int add_stop(gen_req_t *g, const cJSON *v, const char *name, bad_t *b) {
    if (g->n_stops == RECUR_PROTO_MAX_STOP)
        return badf(b, "stop", "invalid_value", "too many stop strings (at most %d, the chat template's included)",
                    RECUR_PROTO_MAX_STOP);
    char *s = NULL;
    if (get_string(v, name, &s, b)) return -1;
    if (!*s || strlen(s) > RECUR_PROTO_MAX_STOP_BYTES) {
        free(s);
        return badf(b, "stop", "invalid_value", "a stop string must have 1 to %d bytes", RECUR_PROTO_MAX_STOP_BYTES);
    }
    g->stops[g->n_stops++] = s;
    return 0;
}

static int parse_stop(gen_req_t *g, const cJSON *v, bad_t *b) {
    if (cJSON_IsString(v)) return add_stop(g, v, "stop", b);
    if (!cJSON_IsArray(v))
        return badf(b, "stop", "invalid_type", "'stop' must be a string or an array of strings, got %s", json_type(v));
    const cJSON *it;
    cJSON_ArrayForEach(it, v) if (add_stop(g, it, "stop", b)) return -1;
    return 0;
}

/* An array of token ids into *ids / *n. */
static int parse_ids(const cJSON *arr, const char *name, int32_t **ids, size_t *n, bad_t *b) {
    size_t k = (size_t)cJSON_GetArraySize(arr);
    *ids = malloc((k ? k : 1) * sizeof **ids);
    *n = 0;
    if (!*ids) return badf(b, name, NULL, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        int64_t x;
        if (get_int(it, name, 0, INT32_MAX, &x, b)) return -1;
        (*ids)[(*n)++] = (int32_t)x;
    }
    return 0;
}

static int parse_prompt(gen_req_t *g, const cJSON *v, bad_t *b) {
    if (cJSON_IsString(v)) {
        if (!(g->prompts = calloc(1, sizeof *g->prompts))) return badf(b, "prompt", NULL, "out of memory");
        g->n_prompts = 1;
        return get_string(v, "prompt", &g->prompts[0].text, b);
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return badf(b, "prompt", "invalid_type",
                    "'prompt' must be a string, an array of strings, an array of token ids or an array of arrays of "
                    "token ids (non-empty), got %s", cJSON_IsArray(v) ? "an empty array" : json_type(v));
    const cJSON *first = v->child;
    if (cJSON_IsNumber(first)) {   /* one prompt as token ids */
        if (!(g->prompts = calloc(1, sizeof *g->prompts))) return badf(b, "prompt", NULL, "out of memory");
        g->n_prompts = 1;
        return parse_ids(v, "prompt", &g->prompts[0].ids, &g->prompts[0].n_ids, b);
    }
    size_t k = (size_t)cJSON_GetArraySize(v);
    if (!(g->prompts = calloc(k, sizeof *g->prompts))) return badf(b, "prompt", NULL, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        prompt_t *p = &g->prompts[g->n_prompts++];
        if (cJSON_IsString(first) && cJSON_IsString(it)) {
            if (get_string(it, "prompt", &p->text, b)) return -1;
        } else if (cJSON_IsArray(first) && cJSON_IsArray(it)) {
            if (parse_ids(it, "prompt", &p->ids, &p->n_ids, b)) return -1;
        } else {
            return badf(b, "prompt", "invalid_type",
                        "'prompt': an array must hold only strings, only token ids or only arrays of token ids");
        }
    }
    return 0;
}

/* Chat messages -> the prompt text, through the template. */
static int parse_messages(recur_http_t *h, gen_req_t *g, const cJSON *v, bad_t *b) {
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return badf(b, "messages", "invalid_type", "'messages' must be a non-empty array, got %s",
                    cJSON_IsArray(v) ? "an empty array" : json_type(v));
    size_t k = (size_t)cJSON_GetArraySize(v);
    if (k > MAX_MESSAGES) return badf(b, "messages", "invalid_value", "more than %d messages", MAX_MESSAGES);
    recur_chat_message_t *m = calloc(k, sizeof *m);
    char **owned = calloc(k, sizeof *owned);
    int rc = -1;
    size_t i = 0;
    const cJSON *it;
    if (!m || !owned) {
        badf(b, "messages", NULL, "out of memory");
        goto out;
    }
    cJSON_ArrayForEach(it, v) {
        char name[48];
        snprintf(name, sizeof name, "messages[%zu]", i);
        if (!cJSON_IsObject(it)) {
            badf(b, name, "invalid_type", "'%s' must be an object with 'role' and 'content', got %s", name, json_type(it));
            goto out;
        }
        const cJSON *role = NULL, *content = NULL, *f;
        cJSON_ArrayForEach(f, it) {
            if (!strcmp(f->string, "role")) role = f;
            else if (!strcmp(f->string, "content")) content = f;
            else if (!strcmp(f->string, "name")) continue;   /* OpenAI's participant name: not shown to the model */
            else {
                badf(b, name, "unknown_field", "'%s.%s': unknown field (a message has role, content and name)", name,
                     f->string);
                goto out;
            }
        }
        if (!cJSON_IsString(role)) {
            badf(b, name, "invalid_type", "'%s.role' must be a string", name);
            goto out;
        }
        const char *r = role->valuestring;
        if (!strcmp(r, "system") || !strcmp(r, "developer")) m[i].role = RECUR_CHAT_SYSTEM;
        else if (!strcmp(r, "user")) m[i].role = RECUR_CHAT_USER;
        else if (!strcmp(r, "assistant")) m[i].role = RECUR_CHAT_ASSISTANT;
        else {
            badf(b, name, "invalid_value", "'%s.role' is '%.64s': recur takes system, developer, user and assistant", name, r);
            goto out;
        }
        if (cJSON_IsString(content)) {
            if (get_string(content, name, &owned[i], b)) goto out;
        } else if (cJSON_IsArray(content)) {   /* content parts: text ones only */
            sbuf_t s = {0};
            const cJSON *part;
            cJSON_ArrayForEach(part, content) {
                const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
                const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
                    free(s.p);
                    badf(b, name, "invalid_value", "'%s.content': only parts {\"type\": \"text\", \"text\": ...} are "
                         "supported", name);
                    goto out;
                }
                sb_str(&s, tx->valuestring);
            }
            if (s.oom || !(owned[i] = s.p ? s.p : strdup(""))) {
                free(s.p);
                badf(b, name, NULL, "out of memory");
                goto out;
            }
            if (!utf8_valid(owned[i])) {
                badf(b, name, "invalid_value", "'%s.content' is not valid UTF-8", name);
                goto out;
            }
        } else if (cJSON_IsNull(content) && m[i].role == RECUR_CHAT_ASSISTANT) {
            owned[i] = strdup("");
        } else {
            badf(b, name, "invalid_type", "'%s.content' must be a string or an array of text parts, got %s", name,
                 content ? json_type(content) : "nothing");
            goto out;
        }
        m[i].content = owned[i] ? owned[i] : "";
        i++;
    }
    const recur_chat_template_t *t = chat_template_for(h);
    if (!t) {
        b->status = 503;
        snprintf(b->code, sizeof b->code, "not_ready");
        snprintf(b->msg, sizeof b->msg, "not ready: the model is still loading (its chat template is not known yet)");
        goto out;
    }
    if (!(g->prompts = calloc(1, sizeof *g->prompts))) {
        badf(b, "messages", NULL, "out of memory");
        goto out;
    }
    g->n_prompts = 1;
    if (recur_chat_template_render(t, m, k, &g->prompts[0].text) != RECUR_OK) {
        badf(b, "messages", NULL, "out of memory");
        goto out;
    }
    const char *const *ts;
    size_t nts = recur_chat_template_stops(t, &ts);
    for (size_t j = 0; j < nts && g->n_stops < RECUR_PROTO_MAX_STOP; j++)
        if ((g->stops[g->n_stops] = strdup(ts[j]))) g->n_stops++;
    rc = 0;
out:
    for (size_t j = 0; owned && j < k; j++) free(owned[j]);
    free(owned);
    free(m);
    return rc;
}

static int parse_logit_bias(gen_req_t *g, const cJSON *v, bad_t *b) {
    if (!cJSON_IsObject(v))
        return badf(b, "logit_bias", "invalid_type", "'logit_bias' must be an object mapping token ids to biases");
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        if (g->n_bias == RECUR_PROTO_MAX_LOGIT_BIAS)
            return badf(b, "logit_bias", "invalid_value", "'logit_bias' has more than %d entries", RECUR_PROTO_MAX_LOGIT_BIAS);
        char *end;
        errno = 0;
        long id = strtol(it->string, &end, 10);
        if (!*it->string || *end || errno || id < 0 || id > INT32_MAX || !isdigit((unsigned char)it->string[0]))
            return badf(b, "logit_bias", "invalid_value", "'logit_bias': key '%.40s' is not a token id", it->string);
        double x;
        if (get_number(it, "logit_bias", -100, 100, &x, b)) return -1;
        for (size_t j = 0; j < g->n_bias; j++)
            if (g->bias[j].token_id == (int32_t)id)
                return badf(b, "logit_bias", "invalid_value", "'logit_bias': token %ld appears twice", id);
        Recur__Api__LogitBias lb = RECUR__API__LOGIT_BIAS__INIT;
        lb.has_token_id = lb.has_bias = 1, lb.token_id = (int32_t)id, lb.bias = (float)x;
        g->bias[g->n_bias] = lb;
        g->biasp[g->n_bias] = &g->bias[g->n_bias];
        g->n_bias++;
    }
    return 0;
}

/* The fields each endpoint takes; a field whose value is null counts as absent. Fields that
 * ask for something recur does not do are refused with a message, not ignored. */
static const struct {
    const char *name;
    int eps;
} k_fields[] = {
    {"model", 3}, {"prompt", 1}, {"messages", 2}, {"max_tokens", 3}, {"max_completion_tokens", 2},
    {"temperature", 3}, {"top_p", 3}, {"top_k", 3}, {"min_p", 3}, {"repetition_penalty", 3},
    {"presence_penalty", 3}, {"frequency_penalty", 3}, {"seed", 3}, {"n", 3}, {"stop", 3}, {"stop_token_ids", 3},
    {"stream", 3}, {"stream_options", 3}, {"logprobs", 3}, {"top_logprobs", 2}, {"logit_bias", 3},
    {"ignore_eos", 3}, {"user", 3}, {"echo", 1}, {"suffix", 1}, {"best_of", 1}, {"priority", 3},
    {"response_format", 2}, {"tools", 2}, {"tool_choice", 2}, {"parallel_tool_calls", 2}, {"functions", 2},
    {"function_call", 2},
};

static int parse_request(recur_http_t *h, int ep, const cJSON *root, gen_req_t *g, bad_t *b) {
    memset(g, 0, sizeof *g);
    g->chat = ep == EP_CHAT;
    g->n = 1;
    if (!cJSON_IsObject(root)) return badf(b, NULL, "invalid_type", "the body must be a JSON object, got %s", json_type(root));
    const cJSON *f, *prompt = NULL, *messages = NULL;
    int n_keys = 0;
    cJSON_ArrayForEach(f, root) {
        if (++n_keys > MAX_TOP_KEYS) return badf(b, NULL, "invalid_value", "more than %d fields", MAX_TOP_KEYS);
        for (const cJSON *e = root->child; e != f; e = e->next)
            if (!strcmp(e->string, f->string))
                return badf(b, f->string, "duplicate_field", "'%s' appears twice", f->string);
        int known = 0;
        for (size_t i = 0; i < sizeof k_fields / sizeof *k_fields; i++)
            if (!strcmp(k_fields[i].name, f->string) && (k_fields[i].eps & ep)) known = 1;
        if (!known)
            return badf(b, f->string, "unknown_field", "unknown field '%.64s' for %s", f->string,
                        ep == EP_CHAT ? "/v1/chat/completions" : "/v1/completions");
    }
    cJSON_ArrayForEach(f, root) {
        const char *k = f->string;
        int64_t x;
        double d;
        if (cJSON_IsNull(f)) continue;
        if (!strcmp(k, "model")) {
            if (get_string(f, k, &g->model, b)) return -1;
        } else if (!strcmp(k, "prompt")) {
            prompt = f;
        } else if (!strcmp(k, "messages")) {
            messages = f;
        } else if (!strcmp(k, "max_tokens") || !strcmp(k, "max_completion_tokens")) {
            if (get_int(f, k, 1, INT32_MAX, &x, b)) return -1;
            if (g->has_max_tokens && (uint32_t)x != g->max_tokens)
                return badf(b, k, "invalid_value", "max_tokens and max_completion_tokens disagree");
            g->has_max_tokens = 1, g->max_tokens = (uint32_t)x;
        } else if (!strcmp(k, "temperature")) {
            if (get_number(f, k, 0, 100, &d, b)) return -1;
            g->has_temperature = 1, g->temperature = (float)d;
        } else if (!strcmp(k, "top_p")) {
            if (get_number(f, k, 0, 1, &d, b)) return -1;
            if (d == 0) return badf(b, k, "invalid_value", "'top_p' must be greater than 0 (use temperature 0 for greedy)");
            g->has_top_p = 1, g->top_p = (float)d;
        } else if (!strcmp(k, "top_k")) {
            if (get_int(f, k, -1, INT32_MAX, &x, b)) return -1;   /* -1: off, as in vLLM */
            g->has_top_k = 1, g->top_k = x < 0 ? 0 : (int32_t)x;
        } else if (!strcmp(k, "min_p")) {
            if (get_number(f, k, 0, 1, &d, b)) return -1;
            g->has_min_p = 1, g->min_p = (float)d;
        } else if (!strcmp(k, "repetition_penalty")) {
            if (get_number(f, k, 1e-6, 100, &d, b)) return -1;
            g->has_rep = 1, g->rep = (float)d;
        } else if (!strcmp(k, "presence_penalty")) {
            if (get_number(f, k, -2, 2, &d, b)) return -1;
            g->has_pres = 1, g->pres = (float)d;
        } else if (!strcmp(k, "frequency_penalty")) {
            if (get_number(f, k, -2, 2, &d, b)) return -1;
            g->has_freq = 1, g->freq = (float)d;
        } else if (!strcmp(k, "seed")) {
            /* JSON numbers reach us as doubles: integers are exact up to 2^53 */
            if (get_int(f, k, -9007199254740992.0, 9007199254740992.0, &x, b)) return -1;
            g->has_seed = 1, g->seed = (uint64_t)x;
        } else if (!strcmp(k, "n")) {
            if (get_int(f, k, 1, h->cfg.max_choices, &x, b)) return -1;
            g->n = (int32_t)x;
        } else if (!strcmp(k, "best_of")) {
            if (get_int(f, k, 1, 1, &x, b)) return -1;
        } else if (!strcmp(k, "stop")) {
            if (parse_stop(g, f, b)) return -1;
        } else if (!strcmp(k, "stop_token_ids")) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (!cJSON_IsArray(f)) return badf(b, k, "invalid_type", "'stop_token_ids' must be an array of token ids");
            if (cJSON_GetArraySize(f) > RECUR_PROTO_MAX_STOP_TOKENS)
                return badf(b, k, "invalid_value", "more than %d stop_token_ids", RECUR_PROTO_MAX_STOP_TOKENS);
            int rc = parse_ids(f, k, &ids, &n, b);
            if (!rc) memcpy(g->stop_ids, ids, n * sizeof *ids), g->n_stop_ids = n;
            free(ids);
            if (rc) return -1;
        } else if (!strcmp(k, "stream")) {
            if (get_bool(f, k, &g->stream, b)) return -1;
        } else if (!strcmp(k, "stream_options")) {
            if (!cJSON_IsObject(f)) return badf(b, k, "invalid_type", "'stream_options' must be an object");
            const cJSON *o;
            cJSON_ArrayForEach(o, f) {
                if (!strcmp(o->string, "include_usage")) {
                    if (!cJSON_IsNull(o) && get_bool(o, "stream_options.include_usage", &g->include_usage, b)) return -1;
                } else if (!strcmp(o->string, "continuous_usage_stats")) {
                    return badf(b, "stream_options", "unsupported", "'stream_options.continuous_usage_stats' is not "
                                "supported");
                } else {
                    return badf(b, "stream_options", "unknown_field", "unknown field 'stream_options.%.64s' (known: "
                                "include_usage)", o->string);
                }
            }
        } else if (!strcmp(k, "logprobs")) {
            if (g->chat) {
                if (get_bool(f, k, &g->chat_logprobs, b)) return -1;
            } else {
                if (get_int(f, k, 0, RECUR_PROTO_MAX_LOGPROBS, &x, b)) return -1;
                g->has_logprobs = 1, g->logprobs = (uint32_t)x;
            }
        } else if (!strcmp(k, "top_logprobs")) {
            if (get_int(f, k, 0, RECUR_PROTO_MAX_LOGPROBS, &x, b)) return -1;
            g->has_top_logprobs = 1, g->logprobs = (uint32_t)x;
        } else if (!strcmp(k, "logit_bias")) {
            if (parse_logit_bias(g, f, b)) return -1;
        } else if (!strcmp(k, "ignore_eos")) {
            if (get_bool(f, k, &g->ignore_eos, b)) return -1;
        } else if (!strcmp(k, "priority")) {
            if (get_int(f, k, INT32_MIN, INT32_MAX, &x, b)) return -1;
            g->priority = (int32_t)x;
        } else if (!strcmp(k, "user")) {
            if (!cJSON_IsString(f)) return badf(b, k, "invalid_type", "'user' must be a string, got %s", json_type(f));
        } else if (!strcmp(k, "echo")) {
            int e;
            if (get_bool(f, k, &e, b)) return -1;
            if (e) return badf(b, k, "unsupported", "'echo': true is not supported");
        } else if (!strcmp(k, "suffix")) {
            if (!cJSON_IsString(f) || f->valuestring[0])
                return badf(b, k, "unsupported", "'suffix' is not supported (insertion needs a fill-in-the-middle model)");
        } else if (!strcmp(k, "response_format")) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(f, "type");
            if (!cJSON_IsObject(f) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text"))
                return badf(b, k, "unsupported", "'response_format': only {\"type\": \"text\"} is supported");
        } else if (!strcmp(k, "tools") || !strcmp(k, "functions")) {
            if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) > 0)
                return badf(b, k, "unsupported", "'%s': tool calling is not supported", k);
        } else if (!strcmp(k, "tool_choice") || !strcmp(k, "function_call")) {
            if (!cJSON_IsString(f) || strcmp(f->valuestring, "none"))
                return badf(b, k, "unsupported", "'%s': tool calling is not supported (only \"none\")", k);
        } else if (!strcmp(k, "parallel_tool_calls")) {
            int e;
            if (get_bool(f, k, &e, b)) return -1;
        }
    }
    if (g->include_usage && !g->stream)
        return badf(b, "stream_options", "invalid_value", "'stream_options' is only allowed with stream: true");
    if (g->has_top_logprobs && !g->chat_logprobs)
        return badf(b, "top_logprobs", "invalid_value", "'top_logprobs' needs 'logprobs': true");
    if (g->chat && g->chat_logprobs) g->has_logprobs = 1;
    if (!g->chat && !prompt) return badf(b, "prompt", "missing_field", "'prompt' is required");
    if (g->chat && !messages) return badf(b, "messages", "missing_field", "'messages' is required");
    if (prompt && parse_prompt(g, prompt, b)) return -1;
    if (messages && parse_messages(h, g, messages, b)) return -1;
    if ((size_t)g->n * g->n_prompts > (size_t)h->cfg.max_choices)
        return badf(b, "n", "invalid_value", "%zu prompts x n %d = more than %d choices", g->n_prompts, (int)g->n,
                    (int)h->cfg.max_choices);
    return 0;
}

/* ------------------------------------------------------------------ jobs (generation requests) */

typedef struct sub {
    char rid[80];
    size_t prompt;          /* index into the request's prompts */
    int got, done, finish;  /* finish: Recur__Api__FinishReason */
    uint32_t prompt_tokens, completion_tokens;
    int role_sent;          /* chat stream: the first delta (role) went out */
    sbuf_t text;            /* non-streaming: the whole text */
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
    sbuf_t out;             /* SSE bytes not yet handed to libmicrohttpd */
    size_t out_pos;
} job_t;

static int http_status_for(Recur__Api__ErrorCode c, const char **code) {
    switch (c) {
    case RECUR__API__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT: *code = "invalid_value"; return 400;
    case RECUR__API__ERROR_CODE__ERROR_CODE_NOT_FOUND: *code = "model_not_found"; return 404;
    case RECUR__API__ERROR_CODE__ERROR_CODE_RESOURCE_EXHAUSTED: *code = "queue_full"; return 429;
    case RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE: *code = "not_ready"; return 503;
    case RECUR__API__ERROR_CODE__ERROR_CODE_DEADLINE_EXCEEDED: *code = "timeout"; return 504;
    /* 400, not 501: clients retry 5xx, and asking again will not help */
    case RECUR__API__ERROR_CODE__ERROR_CODE_UNIMPLEMENTED: *code = "unsupported"; return 400;
    case RECUR__API__ERROR_CODE__ERROR_CODE_ALREADY_EXISTS: *code = "duplicate_request"; return 409;
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
    sb_str(&j->out, "data: ");
    sb_str(&j->out, s);
    sb_str(&j->out, "\n\n");
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
    uint64_t p = 0, c = 0;
    for (size_t i = 0; i < j->n_subs; i++) {
        c += j->subs[i].completion_tokens;
        /* a prompt is counted once, however many choices it has */
        int first = 1;
        for (size_t k = 0; k < i; k++) first &= j->subs[k].prompt != j->subs[i].prompt;
        if (first) p += j->subs[i].prompt_tokens;
    }
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)p);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)c);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(p + c));
}

static void on_generate_response(job_t *j, const Recur__Api__GenerateResponse *gr) {
    sub_t *s = job_sub(j, gr->request_id);
    if (!s || s->done) return;
    size_t k = (size_t)(s - j->subs);
    if (!s->got) s->got = 1, j->n_got++;
    if (gr->n_tokens && !j->failed) {
        sbuf_t piece = {0};
        for (size_t i = 0; i < gr->n_tokens; i++)
            if (gr->tokens[i]->text) sb_str(&piece, gr->tokens[i]->text);
        cJSON *lp = NULL;
        if (j->logprobs) {
            lp = j->stream ? new_logprobs(j) : s->lp;
            add_logprobs(j, lp, gr->tokens, gr->n_tokens, &s->text_off);
        }
        if (j->stream) {
            if (piece.n || lp) stream_chunk(j, k, piece.p ? piece.p : "", lp, NULL);
        } else if (piece.n) {
            sb_add(&s->text, piece.p, piece.n);
            if (s->text.oom) job_fail(j, 500, "internal_error", "out of memory");
        }
        free(piece.p);
    }
    const Recur__Api__GenerateFinal *f = gr->final;
    if (!f) return;
    s->done = 1, j->n_done++;
    s->finish = f->finish_reason;
    if (f->usage) s->prompt_tokens = f->usage->prompt_tokens, s->completion_tokens = f->usage->completion_tokens;
    if (f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_ERROR) {
        const char *code = "internal_error";
        int st = f->error && f->error->has_code ? http_status_for(f->error->code, &code) : 500;
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
        int st = er->error && er->error->has_code ? http_status_for(er->error->code, &code) : 500;
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
static int job_send(job_t *j, const gen_req_t *g, bad_t *b) {
    for (size_t i = 0; i < j->n_subs; i++) {
        sub_t *s = &j->subs[i];
        const prompt_t *p = &g->prompts[s->prompt];
        Recur__Api__SamplingParams sp = RECUR__API__SAMPLING_PARAMS__INIT;
        sp.has_max_tokens = g->has_max_tokens, sp.max_tokens = g->max_tokens;
        sp.has_temperature = g->has_temperature, sp.temperature = g->temperature;
        sp.has_top_p = g->has_top_p, sp.top_p = g->top_p;
        sp.has_top_k = g->has_top_k, sp.top_k = g->top_k;
        sp.has_min_p = g->has_min_p, sp.min_p = g->min_p;
        sp.has_repetition_penalty = g->has_rep, sp.repetition_penalty = g->rep;
        sp.has_presence_penalty = g->has_pres, sp.presence_penalty = g->pres;
        sp.has_frequency_penalty = g->has_freq, sp.frequency_penalty = g->freq;
        /* n choices of one prompt with one seed: seed, seed+1, ... (else all n would be equal) */
        sp.has_seed = g->has_seed, sp.seed = g->seed + (uint64_t)(i % (size_t)g->n);
        sp.has_logprobs = g->has_logprobs, sp.logprobs = g->logprobs;
        sp.has_ignore_eos = g->ignore_eos, sp.ignore_eos = g->ignore_eos;
        sp.n_stop = g->n_stops, sp.stop = (char **)g->stops;
        sp.n_stop_token_ids = g->n_stop_ids, sp.stop_token_ids = (int32_t *)g->stop_ids;
        sp.n_logit_bias = g->n_bias, sp.logit_bias = (Recur__Api__LogitBias **)g->biasp;
        Recur__Api__TokenIds ti = RECUR__API__TOKEN_IDS__INIT;
        Recur__Api__GenerateRequest q = RECUR__API__GENERATE_REQUEST__INIT;
        q.request_id = s->rid;
        q.model = g->model;
        if (p->text) {
            q.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT;
            q.text = p->text;
        } else {
            ti.n_ids = p->n_ids, ti.ids = p->ids;
            q.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TOKEN_IDS;
            q.token_ids = &ti;
        }
        q.sampling = &sp;
        q.has_priority = g->priority != 0, q.priority = g->priority;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
        env.generate = &q;
        recur_proto_error_t err;
        recur_status_t st = recur_msgsock_send_api(j->sock, NULL, &env, &err);
        if (st != RECUR_OK) {
            /* the protocol's own checks (lengths, counts) are the client's errors */
            if (st == RECUR_E_INVAL || st == RECUR_E_RANGE) badf(b, NULL, "invalid_value", "%s", err.msg);
            else badf(b, NULL, "internal_error", "cannot reach the coordinator: %s", err.msg), b->status = 500;
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
            sb_str(&j->out, "data: [DONE]\n\n");
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
    bad_t b = {0};
    cJSON *root;
    const char *end = NULL;
    pthread_mutex_lock(&h->mu);
    /* body[n] is the NUL the sbuf keeps: the text must end exactly there (nothing after the
     * value, no NUL inside) */
    root = cJSON_ParseWithLengthOpts(body, n + 1, &end, 1);
    pthread_mutex_unlock(&h->mu);
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return reply_error(h, conn, url, 400, "invalid_json", NULL,
                           "the body is not valid JSON (parsing stopped at byte %zu of %zu)", at, n);
    }
    gen_req_t g;
    int bad = parse_request(h, ep, root, &g, &b);
    cJSON_Delete(root);
    if (bad) {
        gen_req_clear(&g);
        return reply_error(h, conn, url, b.status, b.code[0] ? b.code : NULL, b.param[0] ? b.param : NULL, "%s", b.msg);
    }
    job_t *j = calloc(1, sizeof *j);
    if (j) j->subs = calloc(g.n_prompts * (size_t)g.n, sizeof *j->subs);
    if (!j || !j->subs || !(j->sock = coord_open(h))) {
        job_free(j);
        gen_req_clear(&g);
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
    gen_req_clear(&g);
    atomic_fetch_add(&h->streams, 1);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);   /* the connection holds it; job_read_free frees j */
    recur_metrics_http(h->cfg.metrics, route_name(url), 200);
    return ret;
done:
    gen_req_clear(&g);
    job_free(j);
    return ret;
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
    sbuf_t body;
    int too_big;
} hreq_t;

static int auth_ok(recur_http_t *h, struct MHD_Connection *conn) {
    if (!h->n_keys) return 1;
    const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7)) return 0;
    a += 7;
    while (*a == ' ') a++;
    return recur_http_key_ok((const char *const *)h->keys, h->n_keys, a, strlen(a));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_n, void **con_cls) {
    recur_http_t *h = cls;
    hreq_t *q = *con_cls;
    (void)version;
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    int health = !strcmp(url, "/health/live") || !strcmp(url, "/health/ready");
    int ep = !strcmp(url, "/v1/completions") ? EP_COMPL : !strcmp(url, "/v1/chat/completions") ? EP_CHAT : 0;
    int models = !strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11);
    int metrics = !strcmp(url, "/metrics");
    if (!q) {   /* the headers: decide what can be decided before the body */
        if (!(q = calloc(1, sizeof *q))) return MHD_NO;
        *con_cls = q;
        if (!health && !auth_ok(h, conn)) {
            const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
            return reply_error(h, conn, url, 401, "invalid_api_key", NULL, "%s",
                               a ? "invalid API key (send 'Authorization: Bearer <key>' with a configured key)"
                                 : "missing API key: send 'Authorization: Bearer <key>'");
        }
        if (!ep && !health && !models && !metrics)
            return reply_error(h, conn, url, 404, "not_found", NULL, "no route %.16s %.200s (routes: POST "
                               "/v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health/live, GET "
                               "/health/ready, GET /metrics)", method, url);
        if ((ep && !post) || (!ep && !get))
            return reply_error(h, conn, url, 405, "method_not_allowed", NULL, "%.16s %s: use %s", method, url,
                               ep ? "POST" : "GET");
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->cfg.max_body_bytes)
            return reply_error(h, conn, url, 413, "body_too_large", NULL,
                               "the request body has %s bytes; this server takes at most %zu (--max-body-bytes)", cl,
                               h->cfg.max_body_bytes);
        return MHD_YES;
    }
    if (*upload_n) {   /* a piece of the body */
        if (q->body.n + *upload_n > h->cfg.max_body_bytes) q->too_big = 1;
        if (!q->too_big) sb_add(&q->body, upload, *upload_n);
        *upload_n = 0;
        return MHD_YES;
    }
    if (q->too_big)
        return reply_error(h, conn, url, 413, "body_too_large", NULL,
                           "the request body is larger than %zu bytes (--max-body-bytes)", h->cfg.max_body_bytes);
    if (q->body.oom) return reply_error(h, conn, url, 500, "internal_error", NULL, "out of memory");
    if (health) return handle_health(h, conn, url, !strcmp(url, "/health/ready"));
    if (models) return handle_models(h, conn, url);
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
    (void)cls, (void)conn, (void)toe;
    hreq_t *q = *con_cls;
    if (q) free(q->body.p), free(q);
    *con_cls = NULL;
}

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
        cfg->max_body_bytes < 1 || cfg->max_choices < 1 || cfg->max_connections < 1 || cfg->coord_timeout_ms < 1) {
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
    recur_chat_template_free(h->builtin);
    free(h->host);
    free(h->endpoint);
    free(h->model_id);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
