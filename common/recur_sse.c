/* recur_sse.c: see recur_sse.h. A byte-driven state machine: lines for the head and the
 * chunk framing, counted runs of bytes for chunk data and Content-Length bodies; the body
 * bytes go through a second, independent line splitter for the SSE fields, because an event
 * line may be cut anywhere by the chunk boundaries. */
#include "recur_sse.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    S_STATUS = 0, S_HEADER, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_TRAILER, S_BODY_LEN, S_BODY_EOF, S_DONE,
    S_ERROR
};

void recur_sse_init(recur_sse_t *p) {
    memset(p, 0, sizeof *p);
    p->content_length = -1;
}

void recur_sse_free(recur_sse_t *p) {
    if (!p) return;
    free(p->line);
    free(p->ev);
    free(p->sl);
    free(p->body);
    recur_sse_init(p);
}

void recur_sse_reset(recur_sse_t *p) {
    char *line = p->line, *ev = p->ev, *sl = p->sl, *body = p->body;
    size_t line_cap = p->line_cap, ev_cap = p->ev_cap, sl_cap = p->sl_cap;
    recur_sse_init(p);
    p->line = line, p->line_cap = line_cap;
    p->ev = ev, p->ev_cap = ev_cap;
    p->sl = sl, p->sl_cap = sl_cap;
    p->body = body;   /* RECUR_SSE_MAX_BODY + 1 bytes when not NULL */
}

const char *recur_sse_error(const recur_sse_t *p) { return p->state == S_ERROR ? p->err : ""; }

static recur_sse_result_t fail(recur_sse_t *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    p->state = S_ERROR;
    return RECUR_SSE_ERROR;
}

/* Appends n bytes to a growing buffer (one byte more kept for a NUL); -1 past max. */
static int grow_add(char **b, size_t *len, size_t *cap, const char *s, size_t n, size_t max) {
    if (*len + n > max) return -1;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1) c *= 2;
        char *q = realloc(*b, c);
        if (!q) return -1;
        *b = q, *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = '\0';
    return 0;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

/* ---------------------------------------------------------------- the body */

/* One complete SSE line (no line ending). Returns nonzero when the callback stopped. */
static int sse_line(recur_sse_t *p, char *l, size_t n, recur_sse_event_fn fn, void *ud) {
    if (n == 0) {   /* the end of an event */
        if (!p->ev_has_data) return 0;
        p->events++;
        int stop = 0;
        if (fn) stop = fn(ud, p->ev ? p->ev : "", p->ev_n);
        p->ev_n = 0, p->ev_has_data = 0;
        if (p->ev) p->ev[0] = '\0';
        return stop ? 1 : 0;
    }
    if (l[0] == ':') return 0;   /* a comment */
    char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    if (fl != 4 || memcmp(l, "data", 4) != 0) return 0;   /* event, id, retry, unknown: not used */
    const char *v = colon ? colon + 1 : l + n;
    if (v < l + n && *v == ' ') v++;
    size_t vn = (size_t)(l + n - v);
    if (p->ev_has_data && grow_add(&p->ev, &p->ev_n, &p->ev_cap, "\n", 1, RECUR_SSE_MAX_EVENT)) return -1;
    if (grow_add(&p->ev, &p->ev_n, &p->ev_cap, v, vn, RECUR_SSE_MAX_EVENT)) return -1;
    if (!p->ev) { /* an empty first value: make the buffer exist so the data is "" */
        if (grow_add(&p->ev, &p->ev_n, &p->ev_cap, "", 0, RECUR_SSE_MAX_EVENT)) return -1;
    }
    p->ev_has_data = 1;
    return 0;
}

/* n bytes of the body (after de-chunking). */
static recur_sse_result_t body_bytes(recur_sse_t *p, const char *b, size_t n, recur_sse_event_fn fn, void *ud) {
    p->body_bytes += n;
    if (!p->event_stream) {
        if (!p->body && !(p->body = malloc(RECUR_SSE_MAX_BODY + 1))) return fail(p, "out of memory");
        size_t k = p->body_n + n <= RECUR_SSE_MAX_BODY ? n : RECUR_SSE_MAX_BODY - p->body_n;
        memcpy(p->body + p->body_n, b, k);
        p->body_n += k;
        p->body[p->body_n] = '\0';
        return RECUR_SSE_MORE;
    }
    while (n) {
        const char *nl = memchr(b, '\n', n);
        size_t k = nl ? (size_t)(nl - b) : n;
        if (grow_add(&p->sl, &p->sl_n, &p->sl_cap, b, k, RECUR_SSE_MAX_EVENT))
            return fail(p, "an event line over %d bytes", RECUR_SSE_MAX_EVENT);
        if (!nl) break;
        size_t ln = p->sl_n;
        if (ln && p->sl[ln - 1] == '\r') p->sl[--ln] = '\0';
        int r = sse_line(p, p->sl, ln, fn, ud);
        p->sl_n = 0;
        if (r > 0) return fail(p, "stopped by the caller");
        if (r < 0) return fail(p, "an event over %d bytes (or out of memory)", RECUR_SSE_MAX_EVENT);
        b += k + 1, n -= k + 1;
    }
    return RECUR_SSE_MORE;
}

/* ---------------------------------------------------------------- the head and framing */

static recur_sse_result_t status_line(recur_sse_t *p, char *l) {
    int minor = 0, status = 0;
    char sp = 0;
    if (sscanf(l, "HTTP/1.%d %3d%c", &minor, &status, &sp) < 2 || status < 100 || status > 999 || minor < 0 ||
        minor > 1)
        return fail(p, "not an HTTP/1.x status line: '%.60s'", l);
    p->status = status;
    p->http10 = minor == 0;
    p->keep_alive = !p->http10;
    p->state = S_HEADER;
    return RECUR_SSE_MORE;
}

static recur_sse_result_t header_line(recur_sse_t *p, char *l) {
    if (++p->n_headers > RECUR_SSE_MAX_HEADERS) return fail(p, "more than %d headers", RECUR_SSE_MAX_HEADERS);
    char *colon = strchr(l, ':');
    if (!colon || colon == l) return fail(p, "a header line without a name: '%.60s'", l);
    *colon = '\0';
    const char *name = l;
    char *v = trim(colon + 1);
    if (!strcasecmp(name, "Content-Length")) {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < 0) return fail(p, "bad Content-Length '%.40s'", v);
        p->content_length = x;
    } else if (!strcasecmp(name, "Transfer-Encoding")) {
        for (char *t = v; *t; t++) *t = (char)tolower((unsigned char)*t);
        if (strstr(v, "chunked")) p->chunked = 1;
        else if (strcmp(v, "identity") != 0) return fail(p, "unsupported Transfer-Encoding '%.40s'", v);
    } else if (!strcasecmp(name, "Connection")) {
        for (char *t = v; *t; t++) *t = (char)tolower((unsigned char)*t);
        if (strstr(v, "close")) p->keep_alive = 0;
        else if (strstr(v, "keep-alive")) p->keep_alive = 1;
    } else if (!strcasecmp(name, "Content-Type")) {
        p->event_stream = !strncasecmp(v, "text/event-stream", 17);
    }
    return RECUR_SSE_MORE;
}

static recur_sse_result_t end_of_head(recur_sse_t *p) {
    p->headers_done = 1;
    if (p->status < 200 || p->status == 204 || p->status == 304) {
        if (p->status < 200) return fail(p, "an interim %d response (not expected)", p->status);
        p->state = S_DONE;
        return RECUR_SSE_DONE;
    }
    if (p->chunked) {
        p->state = S_CHUNK_SIZE;
    } else if (p->content_length >= 0) {
        p->left = (uint64_t)p->content_length;
        p->state = p->left ? S_BODY_LEN : S_DONE;
        if (!p->left) return RECUR_SSE_DONE;
    } else {
        p->state = S_BODY_EOF;
        p->keep_alive = 0;   /* the end of the connection is the end of the body */
    }
    return RECUR_SSE_MORE;
}

static recur_sse_result_t chunk_size_line(recur_sse_t *p, char *l) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(l, &end, 16);
    if (errno || end == l || !isxdigit((unsigned char)l[0]) || (*end && *end != ';' && *end != ' ' && *end != '\t'))
        return fail(p, "bad chunk size line '%.40s'", l);
    if (x == 0) {
        p->state = S_TRAILER;
    } else {
        p->left = x;
        p->state = S_CHUNK_DATA;
    }
    return RECUR_SSE_MORE;
}

/* A complete line of the head or of the chunk framing. */
static recur_sse_result_t framing_line(recur_sse_t *p, char *l, size_t n) {
    switch (p->state) {
    case S_STATUS: return status_line(p, l);
    case S_HEADER: return n == 0 ? end_of_head(p) : header_line(p, l);
    case S_CHUNK_SIZE: return chunk_size_line(p, l);
    case S_CHUNK_CRLF:
        if (n) return fail(p, "chunk data longer than its size");
        p->state = S_CHUNK_SIZE;
        return RECUR_SSE_MORE;
    case S_TRAILER:
        if (n) return RECUR_SSE_MORE;   /* trailer fields: not used */
        p->state = S_DONE;
        return RECUR_SSE_DONE;
    default: return fail(p, "internal: a line in state %d", p->state);
    }
}

recur_sse_result_t recur_sse_feed(recur_sse_t *p, const char *buf, size_t n, recur_sse_event_fn fn, void *ud) {
    if (p->state == S_ERROR) return RECUR_SSE_ERROR;
    if (p->state == S_DONE) return n ? fail(p, "%zu bytes after the end of the response", n) : RECUR_SSE_DONE;
    while (n) {
        switch (p->state) {
        case S_CHUNK_DATA:
        case S_BODY_LEN: {
            size_t k = (uint64_t)n < p->left ? n : (size_t)p->left;
            recur_sse_result_t r = body_bytes(p, buf, k, fn, ud);
            if (r == RECUR_SSE_ERROR) return r;
            p->left -= k, buf += k, n -= k;
            if (p->left == 0) {
                if (p->state == S_BODY_LEN) {
                    p->state = S_DONE;
                    return n ? fail(p, "%zu bytes after the end of the response", n) : RECUR_SSE_DONE;
                }
                p->state = S_CHUNK_CRLF;
            }
            break;
        }
        case S_BODY_EOF: {
            recur_sse_result_t r = body_bytes(p, buf, n, fn, ud);
            if (r == RECUR_SSE_ERROR) return r;
            n = 0;
            break;
        }
        case S_DONE: return fail(p, "%zu bytes after the end of the response", n);
        default: {   /* a line of the head or the chunk framing */
            const char *nl = memchr(buf, '\n', n);
            size_t k = nl ? (size_t)(nl - buf) : n;
            if (grow_add(&p->line, &p->line_n, &p->line_cap, buf, k, RECUR_SSE_MAX_LINE))
                return fail(p, "a header or framing line over %d bytes", RECUR_SSE_MAX_LINE);
            buf += k, n -= k;
            if (!nl) break;
            buf++, n--;
            size_t ln = p->line_n;
            if (ln && p->line[ln - 1] == '\r') p->line[--ln] = '\0';
            p->line_n = 0;
            recur_sse_result_t r = framing_line(p, p->line, ln);
            if (r == RECUR_SSE_ERROR) return r;
            if (r == RECUR_SSE_DONE) return n ? fail(p, "%zu bytes after the end of the response", n) : r;
            break;
        }
        }
    }
    return p->state == S_DONE ? RECUR_SSE_DONE : RECUR_SSE_MORE;
}

recur_sse_result_t recur_sse_eof(recur_sse_t *p, recur_sse_event_fn fn, void *ud) {
    (void)fn, (void)ud;   /* an unfinished event is dropped (the SSE standard's rule) */
    if (p->state == S_ERROR) return RECUR_SSE_ERROR;
    if (p->state == S_DONE) return RECUR_SSE_DONE;
    if (p->state == S_BODY_EOF) {
        p->state = S_DONE;
        return RECUR_SSE_DONE;
    }
    return fail(p, "the connection closed %s", p->headers_done ? "before the end of the body" : "before the headers");
}
