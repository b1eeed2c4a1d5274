/* recur_loadgen_http.c: recur_loadgen's HTTP driver (see recur_loadgen.h): POST
 * /v1/completions with "stream": true, one request at a time on each of `conc` keep-alive
 * connections, all multiplexed with poll() in one thread over plain non-blocking sockets
 * (no HTTP library: the loadgen stays one small binary that needs only libc and cJSON on a
 * GPU machine), the responses parsed by common/recur_sse.h.
 *
 * Per request: t_start when its bytes start going out (a new connection's connect is
 * included), t_first at the first event whose choices[0].text is not empty (the first
 * text a user sees), an inter-chunk gap for each later such event, t_end at the end of the
 * response. The usage chunk (stream_options.include_usage) gives the server's prompt and
 * completion token counts (and prompt_tokens_details.cached_tokens: a session's turn). A
 * request with session_id (recur_loadgen --session-turns) sends it in the body. A request fails on a status other than 200 (the JSON error's
 * message is kept), an error event, a stream without "data: [DONE]", a malformed response,
 * a connection error, or no byte for timeout_ms. A keep-alive connection that the server
 * closed while idle (EOF or reset before any byte of the response) is reconnected and the
 * request sent again, once. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "recur_loadgen.h"
#include "recur_sse.h"

enum { C_IDLE = 0, C_CONNECTING, C_SENDING, C_RECEIVING };

typedef struct conn {
    int fd, state;
    long req;              /* the request on it, -1: none */
    char *out;             /* the request's bytes */
    size_t out_n, out_off, out_cap;
    recur_sse_t parser;
    uint64_t got;          /* response bytes received for this request */
    int reused;            /* the connection carried an earlier request */
    int saw_done, failed_event;
    double last_io;
} conn_t;

typedef struct http {
    lg_run_t *r;
    struct addrinfo *ai;
    char host[300], prefix[256];
    char *body;            /* scratch for one request body */
    size_t body_cap;
    long done;
} http_t;

/* --------------------------------------------------------------- the request */

static int buf_printf(char **b, size_t *n, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int buf_printf(char **b, size_t *n, size_t *cap, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(*b ? *b + *n : NULL, *b ? *cap - *n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return -1;
        if (*b && *n + (size_t)k < *cap) {
            *n += (size_t)k;
            return 0;
        }
        size_t c = *cap ? *cap : 4096;
        while (c <= *n + (size_t)k) c *= 2;
        char *q = realloc(*b, c);
        if (!q) return -1;
        *b = q, *cap = c;
    }
}

/* The JSON body of request i, then the whole HTTP request into c->out. */
static int build_request(http_t *h, conn_t *c, long i) {
    const lg_run_t *r = h->r;
    const lg_req_t *q = &r->reqs[i];
    size_t n = 0;
    int bad = buf_printf(&h->body, &n, &h->body_cap, "{");
    if (r->model) {
        cJSON *s = cJSON_CreateString(r->model);   /* escaped as JSON */
        char *m = s ? cJSON_PrintUnformatted(s) : NULL;
        cJSON_Delete(s);
        if (!m) return -1;
        bad |= buf_printf(&h->body, &n, &h->body_cap, "\"model\":%s,", m);
        free(m);
    }
    bad |= buf_printf(&h->body, &n, &h->body_cap, "\"prompt\":");
    if (q->ids) {
        bad |= buf_printf(&h->body, &n, &h->body_cap, "[");
        for (int32_t k = 0; k < q->n_prompt && !bad; k++)
            bad |= buf_printf(&h->body, &n, &h->body_cap, k ? ",%d" : "%d", (int)q->ids[k]);
        bad |= buf_printf(&h->body, &n, &h->body_cap, "]");
    } else {
        cJSON *s = cJSON_CreateString(q->text ? q->text : "");
        char *t = s ? cJSON_PrintUnformatted(s) : NULL;
        cJSON_Delete(s);
        if (!t) return -1;
        bad |= buf_printf(&h->body, &n, &h->body_cap, "%s", t);
        free(t);
    }
    if (q->session_id) {
        cJSON *sid = cJSON_CreateString(q->session_id);
        char *t = sid ? cJSON_PrintUnformatted(sid) : NULL;
        cJSON_Delete(sid);
        if (!t) return -1;
        bad |= buf_printf(&h->body, &n, &h->body_cap, ",\"session_id\":%s", t);
        free(t);
    }
    bad |= buf_printf(&h->body, &n, &h->body_cap,
                      ",\"max_tokens\":%d,\"temperature\":%g,\"seed\":%llu,\"ignore_eos\":%s,\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":true}}",
                      (int)q->max_tokens, r->temperature, (unsigned long long)q->seed, r->eos ? "false" : "true");
    if (bad) return -1;
    c->out_n = 0, c->out_off = 0;
    bad |= buf_printf(&c->out, &c->out_n, &c->out_cap,
                      "POST %s/v1/completions HTTP/1.1\r\nHost: %s\r\nUser-Agent: recur_loadgen\r\n"
                      "Accept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
                      h->prefix, h->host, n);
    if (r->api_key) bad |= buf_printf(&c->out, &c->out_n, &c->out_cap, "Authorization: Bearer %s\r\n", r->api_key);
    bad |= buf_printf(&c->out, &c->out_n, &c->out_cap, "\r\n%s", h->body);
    return bad ? -1 : 0;
}

/* --------------------------------------------------------------- the response */

static void conn_close(conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->reused = 0;
}

/* One SSE event of the request on c (the time it arrived: t). */
typedef struct ev_ctx {
    http_t *h;
    conn_t *c;
    double t;
} ev_ctx_t;

static int handle_event(void *ud, const char *data, size_t n) {
    ev_ctx_t *e = ud;
    lg_run_t *r = e->h->r;
    conn_t *c = e->c;
    lg_req_t *q = &r->reqs[c->req];
    (void)n;
    if (!strcmp(data, "[DONE]")) {
        c->saw_done = 1;
        return 0;
    }
    cJSON *o = cJSON_Parse(data);
    if (!o) {
        if (!c->failed_event) lg_req_fail(r, c->req, "an event that is not JSON: '%.80s'", data);
        c->failed_event = 1;
        return 0;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (err && !cJSON_IsNull(err)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
        if (!c->failed_event)
            lg_req_fail(r, c->req, "error event: %.150s", cJSON_IsString(m) ? m->valuestring : "(no message)");
        c->failed_event = 1;
    }
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
    const cJSON *c0 = cJSON_IsArray(ch) ? cJSON_GetArrayItem(ch, 0) : NULL;
    const cJSON *text = c0 ? cJSON_GetObjectItemCaseSensitive(c0, "text") : NULL;
    if (cJSON_IsString(text) && text->valuestring[0]) {
        if (q->chunks == 0) q->t_first = e->t;
        else if (lg_itl_add(r, e->t - q->t_last)) {
            cJSON_Delete(o);
            return 1;
        }
        q->t_last = e->t;
        q->chunks++;
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "usage");
    if (cJSON_IsObject(u)) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
        if (cJSON_IsNumber(pt) && cJSON_IsNumber(ct)) {
            q->has_usage = 1;
            q->prompt_tokens = (uint32_t)pt->valuedouble;
            q->completion_tokens = (uint32_t)ct->valuedouble;
        }
        const cJSON *ca = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details"),
                                                           "cached_tokens");
        if (cJSON_IsNumber(ca)) q->has_cached = 1, q->cached_tokens = (uint32_t)ca->valuedouble;
    }
    cJSON_Delete(o);
    return 0;
}

/* The response on c is complete (DONE) or broken (ERROR): the request's verdict. */
static void finish(http_t *h, conn_t *c, recur_sse_result_t res, double t) {
    lg_run_t *r = h->r;
    lg_req_t *q = &r->reqs[c->req];
    q->t_end = t;
    if (q->state == LG_IN_FLIGHT) {
        if (res == RECUR_SSE_ERROR) {
            lg_req_fail(r, c->req, "bad response: %s", recur_sse_error(&c->parser));
        } else if (c->parser.status != 200) {
            cJSON *o = c->parser.body ? cJSON_Parse(c->parser.body) : NULL;
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "error"), "message");
            lg_req_fail(r, c->req, "HTTP %d: %.150s", c->parser.status,
                        cJSON_IsString(m) ? m->valuestring : c->parser.body ? c->parser.body : "");
            cJSON_Delete(o);
        } else if (!c->parser.event_stream) {
            lg_req_fail(r, c->req, "HTTP 200 without an event stream");
        } else if (!c->saw_done) {
            lg_req_fail(r, c->req, "the stream ended without data: [DONE]");
        } else {
            q->state = LG_OK;
        }
    }
    h->done++;
    int keep = res == RECUR_SSE_DONE && c->parser.keep_alive;
    recur_sse_reset(&c->parser);
    c->req = -1;
    c->state = C_IDLE;
    if (keep) c->reused = 1;
    else conn_close(c);
}

/* --------------------------------------------------------------- connections */

static int start_connect(http_t *h, conn_t *c) {
    for (struct addrinfo *a = h->ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
            c->fd = fd;
            c->state = C_CONNECTING;
            return 0;
        }
        close(fd);
    }
    return -1;
}

/* Puts request i on c (a new connection if it has none). */
static void start_request(http_t *h, conn_t *c, long i, double t) {
    lg_run_t *r = h->r;
    lg_req_t *q = &r->reqs[i];
    if (q->attempts == 0) q->t_start = t;
    q->attempts++;
    q->state = LG_IN_FLIGHT;
    c->req = i, c->got = 0, c->saw_done = 0, c->failed_event = 0, c->last_io = t;
    recur_sse_reset(&c->parser);
    if (build_request(h, c, i)) {
        lg_req_fail(r, i, "out of memory building the request");
        q->t_end = t;
        h->done++;
        c->req = -1;
        return;
    }
    if (c->fd >= 0) {
        c->state = C_SENDING;
        return;
    }
    if (start_connect(h, c)) {
        lg_req_fail(r, i, "cannot connect: %s", strerror(errno));
        q->t_end = t;
        h->done++;
        c->req = -1;
    }
}

/* The connection failed under its request: retried once on a fresh connection when it
 * was a kept-alive one and nothing of the response came (the server closed it while idle). */
static void conn_broken(http_t *h, conn_t *c, const char *why, double t) {
    lg_req_t *q = &h->r->reqs[c->req];
    int retry = c->reused && c->got == 0 && q->attempts < 2;
    conn_close(c);
    if (retry) {
        long i = c->req;
        c->req = -1;
        start_request(h, c, i, t);
        return;
    }
    lg_req_fail(h->r, c->req, "%s", why);
    q->t_end = t;
    h->done++;
    recur_sse_reset(&c->parser);
    c->req = -1;
    c->state = C_IDLE;
}

static void on_writable(http_t *h, conn_t *c, double t) {
    if (c->state == C_CONNECTING) {
        int e = 0;
        socklen_t l = sizeof e;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l) || e) {
            char why[160];
            snprintf(why, sizeof why, "cannot connect: %s", strerror(e ? e : errno));
            c->reused = 0;   /* a fresh connection: no retry */
            conn_broken(h, c, why, t);
            return;
        }
        c->state = C_SENDING;
    }
    while (c->out_off < c->out_n) {
        ssize_t k = send(c->fd, c->out + c->out_off, c->out_n - c->out_off, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (k < 0) {
            char why[160];
            snprintf(why, sizeof why, "send: %s", strerror(errno));
            conn_broken(h, c, why, t);
            return;
        }
        c->out_off += (size_t)k;
        c->last_io = t;
    }
    c->state = C_RECEIVING;
}

static void on_readable(http_t *h, conn_t *c, char *buf, size_t cap) {
    for (;;) {
        ssize_t k = recv(c->fd, buf, cap, 0);
        double t = lg_now_s();
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (k < 0 || (k == 0 && c->got == 0)) {
            char why[160];
            snprintf(why, sizeof why, "%s", k < 0 ? strerror(errno) : "the server closed the connection");
            conn_broken(h, c, why, t);
            return;
        }
        ev_ctx_t e = {h, c, t};
        if (k == 0) {
            finish(h, c, recur_sse_eof(&c->parser, handle_event, &e), t);
            conn_close(c);
            return;
        }
        c->got += (uint64_t)k;
        c->last_io = t;
        recur_sse_result_t res = recur_sse_feed(&c->parser, buf, (size_t)k, handle_event, &e);
        if (res != RECUR_SSE_MORE) {
            finish(h, c, res, t);
            return;
        }
    }
}

/* --------------------------------------------------------------- the run */

static int parse_url(http_t *h, const char *url) {
    if (strncmp(url, "http://", 7) != 0) {
        fprintf(stderr, "recur_loadgen: --http expects http://HOST:PORT[/PREFIX], got '%s'\n", url);
        return -1;
    }
    const char *p = url + 7, *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof h->host) {
        fprintf(stderr, "recur_loadgen: no host in '%s'\n", url);
        return -1;
    }
    memcpy(h->host, p, hl);
    h->host[hl] = '\0';
    snprintf(h->prefix, sizeof h->prefix, "%s", slash ? slash : "");
    size_t pl = strlen(h->prefix);
    while (pl && h->prefix[pl - 1] == '/') h->prefix[--pl] = '\0';
    /* HOST[:PORT], HOST may be [v6] */
    char host[300], port[16] = "80";
    snprintf(host, sizeof host, "%s", h->host);
    char *colon = host[0] == '[' ? strstr(host, "]:") : strrchr(host, ':');
    if (host[0] == '[') {
        char *end = strchr(host, ']');
        if (!end) {
            fprintf(stderr, "recur_loadgen: bad host in '%s'\n", url);
            return -1;
        }
        if (colon) snprintf(port, sizeof port, "%s", colon + 2);
        *end = '\0';
        memmove(host, host + 1, strlen(host));
    } else if (colon) {
        snprintf(port, sizeof port, "%s", colon + 1);
        *colon = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int e = getaddrinfo(host, port, &hints, &h->ai);
    if (e) {
        fprintf(stderr, "recur_loadgen: %s: %s\n", h->host, gai_strerror(e));
        return -1;
    }
    return 0;
}

int lg_run_http(lg_run_t *r, const char *url) {
    http_t h = {.r = r};
    if (parse_url(&h, url)) return -1;
    conn_t *cs = calloc((size_t)r->conc, sizeof *cs);
    struct pollfd *pf = calloc((size_t)r->conc, sizeof *pf);
    long *pc = calloc((size_t)r->conc, sizeof *pc);
    size_t cap = 256 * 1024;
    char *buf = malloc(cap);
    int rc = -1;
    if (!cs || !pf || !pc || !buf) {
        fprintf(stderr, "recur_loadgen: out of memory\n");
        goto out;
    }
    for (long k = 0; k < r->conc; k++) {
        cs[k].fd = -1, cs[k].req = -1;
        recur_sse_init(&cs[k].parser);
    }
    long next = 0;
    r->t0 = lg_now_s();
    while (h.done < r->n) {
        double t = lg_now_s();
        for (long k = 0; k < r->conc && next < r->n; k++)
            if (cs[k].req < 0) start_request(&h, &cs[k], next++, t);
        int n = 0;
        for (long k = 0; k < r->conc; k++) {
            conn_t *c = &cs[k];
            if (c->req < 0 || c->fd < 0) continue;
            pf[n] = (struct pollfd){.fd = c->fd, .events = c->state == C_RECEIVING ? POLLIN : POLLOUT};
            pc[n++] = k;
        }
        if (n == 0) continue;   /* every request left failed at once; start the next */
        int k = poll(pf, (nfds_t)n, 100);
        if (k < 0 && errno != EINTR) {
            fprintf(stderr, "recur_loadgen: poll: %s\n", strerror(errno));
            goto out;
        }
        t = lg_now_s();
        for (int j = 0; j < n && k > 0; j++) {
            if (!pf[j].revents) continue;
            conn_t *c = &cs[pc[j]];
            if (c->req < 0 || c->fd != pf[j].fd) continue;
            if (c->state == C_RECEIVING) on_readable(&h, c, buf, cap);
            else on_writable(&h, c, t);
        }
        t = lg_now_s();
        for (long j = 0; j < r->conc; j++) {
            conn_t *c = &cs[j];
            if (c->req >= 0 && t - c->last_io > r->timeout_ms / 1e3) {
                char why[120];
                snprintf(why, sizeof why, "no answer for %ld ms", r->timeout_ms);
                c->reused = 0;
                conn_broken(&h, c, why, t);
            }
        }
    }
    r->t1 = lg_now_s();
    rc = 0;
out:
    for (long k = 0; cs && k < r->conc; k++) {
        conn_close(&cs[k]);
        free(cs[k].out);
        recur_sse_free(&cs[k].parser);
    }
    free(cs), free(pf), free(pc), free(buf), free(h.body);
    if (h.ai) freeaddrinfo(h.ai);
    return rc;
}
