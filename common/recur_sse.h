/* recur_sse.h: an incremental parser of one HTTP/1.1 response whose body may be a stream of
 * server-sent events (SSE), for clients that read it from a non-blocking socket in pieces
 * of any size (recur_loadgen's HTTP mode; a unit test feeds it one byte at a time).
 *
 * What it reads: the status line and headers (Content-Length, Transfer-Encoding: chunked,
 * Connection: close, Content-Type), then the body framed by chunked encoding, by
 * Content-Length, or by the end of the connection (recur_sse_eof). A body of content type
 * text/event-stream is split into events: lines ending in "\n" or "\r\n"; "data:" lines
 * (one optional space after the colon dropped) make up the event's data, joined with "\n";
 * a blank line ends the event, which is handed to the callback; comments (":...") and the
 * other fields (event, id, retry) are skipped. Any other body is kept whole (up to
 * RECUR_SSE_MAX_BODY bytes; the rest is counted, not kept) for the caller to read an error
 * message from.
 *
 * Limits: a status line or header line over RECUR_SSE_MAX_LINE bytes, more than
 * RECUR_SSE_MAX_HEADERS headers, a bad chunk size or an event over RECUR_SSE_MAX_EVENT bytes
 * make the response RECUR_SSE_ERROR (with a message in recur_sse_error); so does a
 * connection that closes before a framed body is complete. Bytes after the end of the
 * response are refused the same way (no pipelining: one request at a time per
 * connection). 1xx interim responses are not expected (the client sends no Expect).
 *
 * Ownership: the parser owns its buffers; recur_sse_reset makes it ready for the next
 * response on the same connection (keep-alive) and keeps the buffers' memory. The event
 * data passed to the callback is valid during the call only.
 * Thread-safety: none; one parser per connection. */
#ifndef RECUR_SSE_H
#define RECUR_SSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    RECUR_SSE_MAX_LINE = 8192,        /* status line, one header line, one chunk-size line */
    RECUR_SSE_MAX_HEADERS = 100,
    RECUR_SSE_MAX_EVENT = 1 << 20,    /* the data of one event */
    RECUR_SSE_MAX_BODY = 64 * 1024    /* a non-SSE body kept for its error message */
};

typedef enum recur_sse_result {
    RECUR_SSE_MORE = 0,   /* the response goes on: feed more bytes */
    RECUR_SSE_DONE = 1,   /* the response is complete                                   */
    RECUR_SSE_ERROR = -1  /* malformed or cut short: recur_sse_error says how; stays so  */
} recur_sse_result_t;

/* An event's data (n bytes, NUL-terminated at data[n]). Return nonzero to stop the parse:
 * recur_sse_feed then returns RECUR_SSE_ERROR with "stopped by the caller". */
typedef int (*recur_sse_event_fn)(void *ud, const char *data, size_t n);

typedef struct recur_sse {
    /* the response as read so far (valid once the headers are in: headers_done) */
    int status;             /* e.g. 200                                              */
    int headers_done;
    int event_stream;       /* Content-Type text/event-stream                        */
    int keep_alive;         /* the connection may carry the next request after this   */
    int64_t content_length; /* -1: none                                              */
    int chunked;
    char *body;             /* a non-SSE body, NUL-terminated (RECUR_SSE_MAX_BODY max)  */
    size_t body_n;
    uint64_t body_bytes;    /* body bytes seen (after de-chunking)                    */
    uint64_t events;        /* events handed to the callback                          */
    /* internal */
    int state;
    char *line;             /* the line being read (status, header, chunk size, SSE)  */
    size_t line_n, line_cap;
    char *ev;               /* the data of the event being read                      */
    size_t ev_n, ev_cap;
    int ev_has_data;
    char *sl;               /* the SSE line being read (it may span chunks)           */
    size_t sl_n, sl_cap;
    uint64_t left;          /* bytes left in the chunk or the Content-Length body     */
    int n_headers;
    int http10;
    char err[160];
} recur_sse_t;

void recur_sse_init(recur_sse_t *p);
void recur_sse_free(recur_sse_t *p);    /* the buffers; the struct is the caller's */
void recur_sse_reset(recur_sse_t *p);   /* ready for the next response, buffers kept */

/* Parses n more bytes of the response; events go to fn(ud, ...) as they complete (fn may
 * be NULL). Once DONE or ERROR, further calls return the same without reading. */
recur_sse_result_t recur_sse_feed(recur_sse_t *p, const char *buf, size_t n, recur_sse_event_fn fn, void *ud);

/* The connection closed (EOF). DONE when that ends a body that has no other framing (an
 * event still missing its blank line is dropped, as the SSE standard says); ERROR when the
 * response was cut short. */
recur_sse_result_t recur_sse_eof(recur_sse_t *p, recur_sse_event_fn fn, void *ud);

const char *recur_sse_error(const recur_sse_t *p);   /* "" unless ERROR */

#ifdef __cplusplus
}
#endif
#endif
