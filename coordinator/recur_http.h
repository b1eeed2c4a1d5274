/* recur_http.h: the OpenAI-compatible HTTP API of `recur serve` (libmicrohttpd).
 *
 * Routes:
 *   POST /v1/completions, POST /v1/chat/completions   OpenAI's request and response shapes,
 *        stream: true as server-sent events ending with "data: [DONE]";
 *   GET  /v1/models, GET /v1/models/{id};
 *   GET  /health/live    200 while the coordinator loop answers (no API key needed);
 *   GET  /health/ready   200 only when every worker rank is up and the model is loaded
 *                        (no API key needed), else 503 with the reason;
 *   GET  /metrics        Prometheus text (coordinator/recur_metrics.h);
 *   /v1/sessions         sessions (README "Sessions over HTTP"): POST (create), GET (list),
 *                        GET/DELETE /v1/sessions/{id}, POST .../{id}/fork, GET .../{id}/export
 *                        (the checkpoint's pieces streamed as one body), POST .../{id}/import
 *                        and POST /v1/sessions/import (the body streamed to the coordinator in
 *                        4 MiB pieces, up to max_import_bytes). Completions and chat take
 *                        "session_id"; a chat turn of a session that has had one is rendered
 *                        as the conversation's continuation (recur_chat_template.h).
 * Request bodies are read by coordinator/recur_http_parse.h (also the fuzz target's code).
 * Every other route needs "Authorization: Bearer KEY" when API keys are configured (keys
 * compared in constant time); errors are OpenAI's JSON {"error": {"message", "type",
 * "param", "code"}} with a message that names the field or the limit.
 *
 * Design: the HTTP server is a protobuf client of the coordinator, like `recur client`. Each
 * HTTP connection has its own thread (libmicrohttpd's thread-per-connection mode), and a
 * request that needs the coordinator opens its own ZeroMQ DEALER to the coordinator's
 * client ROUTER over inproc:// (the coordinator binds it: recur_coord_config_t.
 * client_bind_extra), sends one GenerateRequest per choice, and reads the replies on that
 * thread. So no ZeroMQ socket is shared between threads, the coordinator's single-owner
 * loop needs no change, and HTTP and protobuf clients get exactly the same behaviour. A
 * streaming response is a libmicrohttpd callback that blocks on the socket in slices of
 * 100 ms and checks between them whether the client went away (its socket closed); then
 * (and when a non-streaming client goes away while it waits) the request is cancelled
 * (CancelRequest), which frees its slot at once.
 *
 * Sessions ride the same inproc link: a SessionRequest per operation on a DEALER of its
 * own; a chat request with session_id first asks GET (has the session had a turn?) to pick
 * whole or continuation rendering. --max-requests-per-key counts each key's requests from
 * their headers until libmicrohttpd reports them complete (streams included) in atomics.
 *
 * Ownership: recur_http_start copies the configuration (strings included) except the
 * ZeroMQ context, the metrics and the chat template, which stay the caller's and must
 * outlive recur_http_stop. Thread-safety: start and stop from one thread; the server's own
 * threads only read the configuration. */
#ifndef RECUR_HTTP_H
#define RECUR_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "recur_chat_template.h"
#include "recur_metrics.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_http recur_http_t;   /* opaque; defined in recur_http.c */

typedef struct recur_http_config {
    const char *host;               /* address or name to listen on; NULL: "127.0.0.1"        */
    int port;                       /* 0: a free port (recur_http_port tells which)            */
    const char *coord_endpoint;     /* the coordinator's client ROUTER, e.g. "inproc://recur-http" */
    const char *model_id;           /* the served model's id (responses, /v1/models)           */
    const char *const *api_keys;    /* n_api_keys keys; none: no authentication                */
    size_t n_api_keys;
    size_t max_body_bytes;          /* larger request bodies get 413; default 4 MiB            */
    const recur_chat_template_t *chat_template;   /* NULL: the built-in one for the model's arch */
    recur_metrics_t *metrics;       /* GET /metrics renders it, responses are counted; NULL: 404 */
    int32_t max_choices;            /* prompts x n per request; default 64                     */
    int32_t max_connections;        /* concurrent connections (a thread each); default 512     */
    int32_t coord_timeout_ms;       /* health / models answers from the coordinator; 2000      */
    size_t max_import_bytes;        /* POST /v1/sessions/.../import bodies (a session's exported
                                       checkpoint, streamed to the coordinator in pieces, not
                                       held whole); larger get 413; default 1 GiB              */
    int32_t session_timeout_ms;     /* a session operation's answer (fork, export and import
                                       pieces may write files first); default 60000            */
    int32_t max_requests_per_key;   /* requests in flight per API key; the next gets 429; 0
                                       (default): no limit. Without keys it has no effect     */
} recur_http_config_t;

recur_http_config_t recur_http_default_config(void);

/* Starts listening. RECUR_E_INVAL (bad config, a host that does not resolve) or RECUR_E_IO
 * (the address is in use, ...), logged with the reason; *out = NULL then. */
recur_status_t recur_http_start(void *zctx, const recur_http_config_t *cfg, recur_http_t **out);
int recur_http_port(const recur_http_t *h);
/* Ends every open stream (cancelling its requests), stops accepting and joins the threads.
 * NULL is a no-op. Call it before the coordinator is freed. */
void recur_http_stop(recur_http_t *h);

/* Reads an API key file: one key per line; blank lines and lines starting with '#' are
 * ignored; leading and trailing white space is trimmed. Appends malloc'ed keys to
 * *keys / *n (realloc'ed). RECUR_E_IO (cannot read, with a message), RECUR_E_FORMAT (a key
 * with a control character or white space inside), RECUR_E_NOMEM. */
recur_status_t recur_http_read_key_file(const char *path, char ***keys, size_t *n);

/* 1 when key (len bytes) equals one of keys[0..n); the time taken does not depend on where
 * key and a configured key first differ, nor on which key matched. */
int recur_http_key_ok(const char *const *keys, size_t n, const char *key, size_t len);
/* The index of the key that matches (as recur_http_key_ok, in constant time), or -1. */
int recur_http_key_index(const char *const *keys, size_t n, const char *key, size_t len);

#ifdef __cplusplus
}
#endif
#endif
