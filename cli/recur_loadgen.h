/* recur_loadgen.h: what recur_loadgen's two drivers share (the program's own header, not a
 * library): the planned requests, what each one measured, and the run's settings. The
 * drivers: the protobuf API over ZeroMQ (cli/recur_loadgen.c, lg_run_zmq) and the
 * OpenAI-compatible HTTP API with SSE streams over plain sockets (cli/recur_loadgen_http.c,
 * lg_run_http). Both keep `conc` requests in flight until every planned request has ended,
 * from one thread, and record the times; cli/recur_loadgen.c turns them into the table and
 * the JSON.
 * Ownership: lg_run_t owns its requests (and their prompts) and the ITL samples.
 * Thread-safety: one thread (a GPU-memory sampler thread, if any, touches none of this). */
#ifndef RECUR_LOADGEN_H
#define RECUR_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

enum { LG_PENDING = 0, LG_IN_FLIGHT, LG_OK, LG_FAILED };

typedef struct lg_req {
    /* the plan */
    int32_t *ids;           /* prompt token ids (n_prompt of them); NULL: the text prompt */
    int32_t n_prompt;
    char *text;             /* text prompt when ids is NULL                         */
    char *session_id;       /* HTTP: the request's "session_id" (NULL: none)        */
    int32_t max_tokens;     /* output length asked for (with ignore_eos: produced)  */
    uint64_t seed;          /* the sampling seed sent                               */
    /* what happened (seconds on CLOCK_MONOTONIC) */
    int state;
    double t_start, t_first, t_last, t_end;
    int32_t tokens;         /* tokens seen while streaming (HTTP: 0, it sees text)  */
    int32_t chunks;         /* stream messages with text (HTTP) or tokens (ZeroMQ)  */
    int has_usage;
    uint32_t prompt_tokens, completion_tokens;   /* the server's count of the request */
    int has_cached;         /* usage.prompt_tokens_details.cached_tokens was there  */
    uint32_t cached_tokens;
    int attempts;           /* HTTP: sends (a stale keep-alive connection is retried once) */
    char err[200];
} lg_req_t;

typedef struct lg_run {
    lg_req_t *reqs;
    long n, conc;
    double temperature;
    int eos;                /* 1: stop at EOS; 0: ignore_eos (a fixed amount of work) */
    long timeout_ms;        /* a request with no byte/message for this long fails   */
    const char *api_key, *model;   /* HTTP: Bearer key, "model" field (NULL: none)  */
    double t0, t1;          /* the run's start and end                             */
    double *itl;            /* inter-token (ZeroMQ) / inter-chunk (HTTP) gaps, seconds */
    size_t n_itl, cap_itl;
    int quiet;              /* warm-up: no error prints                            */
} lg_run_t;

double lg_now_s(void);
int lg_itl_add(lg_run_t *r, double gap_s);   /* -1: out of memory */
/* Marks request i failed with a message (the first 5 failures are printed unless quiet). */
void lg_req_fail(lg_run_t *r, long i, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Runs the plan against url ("http://HOST:PORT" with an optional path prefix before
 * /v1/completions). 0: it ran (failures are per request); -1: it could not start (a
 * message says why). */
int lg_run_http(lg_run_t *r, const char *url);

#endif
