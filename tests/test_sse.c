/* test_sse.c: the HTTP/SSE response parser (common/recur_sse.h) on hand-written responses,
 * each fed whole, one byte at a time and in pieces of every size from 2 to 17, which must
 * all give the same events and verdict:
 *   - a chunked event stream as recur serve sends it (chunk boundaries inside lines, CRLF
 *     and LF line ends, a chunk extension, a trailer), with keep-alive;
 *   - multi-line data joined with "\n", "data:" without the space, an empty data line,
 *     comments and other fields skipped, a blank line without data dispatching nothing;
 *   - a Content-Length JSON error body (status 400) kept whole; Connection: close; an
 *     HTTP/1.0 close-delimited stream ending at EOF (an unfinished event dropped there);
 *   - recur_sse_reset then a second response on the same parser (keep-alive);
 *   - refused: a bad status line, a bad chunk size, chunk data longer than its size, bytes
 *     after the end, EOF inside a chunked body or the head, an over-long header line, too
 *     many headers, an event over the limit, a callback that stops the parse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_sse.h"

static int failures;
#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (cond) printf("ok   ");                                                          \
        else printf("FAIL "), failures++;                                                  \
        printf(__VA_ARGS__);                                                                \
        printf("\n");                                                                       \
    } while (0)

typedef struct events {
    char all[8192];   /* every event's data, each followed by '|' */
    int n, stop_at;   /* stop_at > 0: the callback stops at that event */
} events_t;

static int on_event(void *ud, const char *data, size_t n) {
    events_t *e = ud;
    e->n++;
    if (strlen(data) != n) return 1;   /* the data must be NUL-terminated at n */
    size_t l = strlen(e->all);
    snprintf(e->all + l, sizeof e->all - l, "%s|", data);
    return e->stop_at && e->n == e->stop_at;
}

/* Feeds resp in pieces of `step` bytes (0: whole), then EOF if `eof`; returns the verdict. */
static recur_sse_result_t run(recur_sse_t *p, const char *resp, size_t step, int eof, events_t *e) {
    size_t n = strlen(resp), off = 0;
    recur_sse_result_t r = RECUR_SSE_MORE;
    if (!step) step = n ? n : 1;
    while (off < n && r == RECUR_SSE_MORE) {
        size_t k = n - off < step ? n - off : step;
        r = recur_sse_feed(p, resp + off, k, on_event, e);
        off += k;
    }
    if (off < n && r != RECUR_SSE_ERROR) r = recur_sse_feed(p, resp + off, n - off, on_event, e);
    if (eof && r == RECUR_SSE_MORE) r = recur_sse_eof(p, on_event, e);
    return r;
}

/* Every piece size gives `want` and the same events `ev` (NULL: not checked). */
static void check_all_splits(const char *what, const char *resp, int eof, recur_sse_result_t want, const char *ev,
                             int status, int keep_alive) {
    size_t steps[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
    int bad = 0;
    char first_err[200] = "";
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        recur_sse_t p;
        recur_sse_init(&p);
        events_t e = {{0}, 0, 0};
        recur_sse_result_t r = run(&p, resp, steps[i], eof, &e);
        int ok = r == want && (!ev || !strcmp(e.all, ev)) && (want == RECUR_SSE_ERROR || p.status == status) &&
                 (want != RECUR_SSE_DONE || p.keep_alive == keep_alive);
        if (!ok && !bad) {
            snprintf(first_err, sizeof first_err, "step %zu: result %d, status %d, keep-alive %d, events '%.80s', %s",
                     steps[i], (int)r, p.status, p.keep_alive, e.all, recur_sse_error(&p));
        }
        bad += !ok;
        recur_sse_free(&p);
    }
    CHECK(!bad, "%s (every split)%s%s", what, bad ? ": " : "", first_err);
}

/* The body pieces of a chunked event stream; chunk boundaries fall inside lines and events. */
static const char *const k_pieces[] = {
    "data: {\"choices\":[{\"text\":\"a\"", "}]}\n\n: \r", "\ncomment\r\nid: 7\r\nevent: x\ndata:b\n\r",
    "\ndata: c\ndata: \r", "\n\ndata: \n\ndata: {\"usage\":{}}\n\ndata:", " [DONE]\n\n\n\n\n\n\n"};
static char k_stream[1024];

static void make_stream(void) {
    strcpy(k_stream, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                     "Cache-Control: no-cache\r\n\r\n");
    for (size_t i = 0; i < sizeof k_pieces / sizeof *k_pieces; i++) {
        size_t l = strlen(k_stream);
        /* a chunk extension on one of them, upper-case hex on another */
        if (i == 1) snprintf(k_stream + l, sizeof k_stream - l, "%zx;ext=1\r\n%s\r\n", strlen(k_pieces[i]), k_pieces[i]);
        else if (i == 2) snprintf(k_stream + l, sizeof k_stream - l, "%zX\r\n%s\r\n", strlen(k_pieces[i]), k_pieces[i]);
        else snprintf(k_stream + l, sizeof k_stream - l, "%zx\r\n%s\r\n", strlen(k_pieces[i]), k_pieces[i]);
    }
    strcat(k_stream, "0\r\nX-Trailer: 1\r\n\r\n");
}

static void test_good(void) {
    check_all_splits("chunked event stream: events, comments and fields skipped, keep-alive", k_stream, 0,
                     RECUR_SSE_DONE, "{\"choices\":[{\"text\":\"a\"}]}|b|c\n||{\"usage\":{}}|[DONE]|", 200, 1);
    check_all_splits("400 with a Content-Length JSON body, Connection: close",
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     "Content-Length: 31\r\n\r\n{\"error\":{\"message\":\"bad\"}}\n\n\n\n",
                     0, RECUR_SSE_DONE, "", 400, 0);
    check_all_splits("HTTP/1.0 stream to EOF, an unfinished event dropped",
                     "HTTP/1.0 200 OK\nContent-Type: Text/Event-Stream; charset=utf-8\n\ndata: 1\n\ndata: 2\n", 1,
                     RECUR_SSE_DONE, "1|", 200, 0);
    check_all_splits("204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", 0, RECUR_SSE_DONE, "", 204, 1);
    check_all_splits("Content-Length: 0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, RECUR_SSE_DONE, "", 200, 1);

    recur_sse_t p;
    recur_sse_init(&p);
    events_t e = {{0}, 0, 0};
    const char *err = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"
                      "{\"error\":1}\n";
    recur_sse_result_t r = run(&p, err, 5, 0, &e);
    CHECK(r == RECUR_SSE_DONE && p.status == 429 && p.body && !strcmp(p.body, "{\"error\":1}\n") && p.body_n == 12 &&
              !p.event_stream && e.n == 0,
          "a non-SSE body is kept whole for its message: '%s'", p.body ? p.body : "(none)");
    recur_sse_reset(&p);
    r = run(&p, k_stream, 7, 0, &e);
    CHECK(r == RECUR_SSE_DONE && p.status == 200 && p.events == 6 && e.n == 6 && p.event_stream,
          "after recur_sse_reset, the next response on the same parser: %d events", (int)p.events);
    recur_sse_reset(&p);
    CHECK(recur_sse_feed(&p, "", 0, on_event, &e) == RECUR_SSE_MORE && p.status == 0 && p.body_n == 0,
          "reset clears the response");
    recur_sse_free(&p);
}

static void test_bad(void) {
    check_all_splits("refused: not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", 0, RECUR_SSE_ERROR, NULL, 0, 0);
    check_all_splits("refused: bad chunk size",
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 0, RECUR_SSE_ERROR,
                     NULL, 0, 0);
    check_all_splits("refused: chunk data longer than its size",
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 0, RECUR_SSE_ERROR,
                     NULL, 0, 0);
    check_all_splits("refused: bytes after the end",
                     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 200 OK\r\n", 0, RECUR_SSE_ERROR, NULL, 0, 0);
    check_all_splits("refused: EOF inside a chunked body",
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "8\r\ndata: 1\n\r\n",
                     1, RECUR_SSE_ERROR, NULL, 0, 0);
    check_all_splits("refused: EOF inside the head", "HTTP/1.1 200 OK\r\nContent-Le", 1, RECUR_SSE_ERROR, NULL, 0, 0);
    check_all_splits("refused: bad Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", 0,
                     RECUR_SSE_ERROR, NULL, 0, 0);

    size_t big = RECUR_SSE_MAX_LINE + 100;
    char *h = malloc(big + 64);
    strcpy(h, "HTTP/1.1 200 OK\r\nX-Long: ");
    memset(h + strlen(h), 'x', big);
    h[25 + big] = '\0';
    strcat(h, "\r\n\r\n");
    check_all_splits("refused: a header line over the limit", h, 0, RECUR_SSE_ERROR, NULL, 0, 0);
    free(h);

    char *many = malloc(16 * (RECUR_SSE_MAX_HEADERS + 2) + 64);
    strcpy(many, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i <= RECUR_SSE_MAX_HEADERS; i++) sprintf(many + strlen(many), "X-H%d: 1\r\n", i);
    strcat(many, "\r\n");
    check_all_splits("refused: too many headers", many, 0, RECUR_SSE_ERROR, NULL, 0, 0);
    free(many);

    /* an event over the limit, close-delimited so no chunk framing is needed */
    size_t evn = RECUR_SSE_MAX_EVENT + 10;
    char *ev = malloc(evn + 128);
    strcpy(ev, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ");
    size_t l = strlen(ev);
    memset(ev + l, 'y', evn);
    strcpy(ev + l + evn, "\n\n");
    recur_sse_t p;
    recur_sse_init(&p);
    events_t e = {{0}, 0, 0};
    recur_sse_result_t r = run(&p, ev, 4096, 1, &e);
    CHECK(r == RECUR_SSE_ERROR && e.n == 0 && strstr(recur_sse_error(&p), "over"), "refused: an event over %d bytes (%s)",
          RECUR_SSE_MAX_EVENT, recur_sse_error(&p));
    CHECK(recur_sse_feed(&p, "data: 1\n\n", 9, on_event, &e) == RECUR_SSE_ERROR, "an error stays an error");
    recur_sse_free(&p);
    free(ev);

    recur_sse_init(&p);
    events_t s = {{0}, 0, 2};
    r = run(&p, k_stream, 0, 0, &s);
    CHECK(r == RECUR_SSE_ERROR && s.n == 2 && strstr(recur_sse_error(&p), "stopped"),
          "a callback that returns nonzero stops the parse after its event");
    recur_sse_free(&p);
}

int main(void) {
    make_stream();
    test_good();
    test_bad();
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
