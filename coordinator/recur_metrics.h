/* recur_metrics.h: the serving metrics of `recur serve`, rendered in the Prometheus text
 * exposition format (version 0.0.4) for GET /metrics.
 *
 * What is measured, and by whom:
 *   - the coordinator loop (coordinator/recur_coord.c) reports, from its one thread: time to
 *     first token and inter-token latency per request, prompt and generated tokens, requests
 *     running and waiting, slots used and total, and each step's time (the coordinator's
 *     round trip from plan sent to result received, and the forward and total time the
 *     reporting rank measured, StepTiming);
 *   - the HTTP front end (coordinator/recur_http.c) counts its responses by route and status.
 * Histograms have fixed buckets (seconds), chosen for LLM serving: 1 ms .. 60 s.
 *
 * Ownership: recur_metrics_create returns an object the caller frees with
 * recur_metrics_free after every thread that reports has stopped.
 * Thread-safety: every function may be called from any thread at any time (counters and
 * histogram buckets are C11 atomics; gauges are atomic stores; render reads them without
 * a lock, so a scrape may see one histogram's count a step ahead of its sum). */
#ifndef RECUR_METRICS_H
#define RECUR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_metrics recur_metrics_t;   /* opaque; defined in recur_metrics.c */

/* The histograms. */
typedef enum recur_metrics_hist {
    RECUR_METRICS_TTFT,           /* request accepted -> its first generated token        */
    RECUR_METRICS_ITL,            /* between two generated tokens of one request          */
    RECUR_METRICS_STEP,           /* coordinator: step plan sent -> its result received   */
    RECUR_METRICS_E2E,            /* request accepted -> its final message                 */
    RECUR_METRICS_N_HIST
} recur_metrics_hist_t;

recur_status_t recur_metrics_create(recur_metrics_t **out);   /* RECUR_E_NOMEM */
void recur_metrics_free(recur_metrics_t *m);                  /* NULL is a no-op */

/* Every reporting function accepts m == NULL and then does nothing, so a coordinator
 * without metrics needs no checks at its call sites. */

/* One observation, in seconds, into histogram h. */
void recur_metrics_observe(recur_metrics_t *m, recur_metrics_hist_t h, double seconds);

/* A generated token of a request accepted at t_accept_ns (monotonic ns) at time now_ns:
 * the first one (*t_last_ns == 0) goes into TTFT, later ones into ITL; *t_last_ns := now_ns.
 * Counts one generated token. */
void recur_metrics_token(recur_metrics_t *m, uint64_t t_accept_ns, uint64_t *t_last_ns, uint64_t now_ns);

/* A request accepted with n_prompt tokens. */
void recur_metrics_request(recur_metrics_t *m, int64_t n_prompt);

/* A request ended (reason: "stop", "length", "cancelled", "error"), accepted at t_accept_ns. */
void recur_metrics_finished(recur_metrics_t *m, const char *reason, uint64_t t_accept_ns, uint64_t now_ns);

/* The scheduler's state now. */
void recur_metrics_sched(recur_metrics_t *m, int64_t running, int64_t waiting, int64_t slots_used,
                         int64_t slots_total);

/* One step: the coordinator's round trip (plan sent -> result) and, when the result carried
 * them (0: not reported), the forward and total microseconds that `rank` measured
 * (histograms labelled rank="N", N < RECUR_METRICS_MAX_RANKS; other ranks are not kept).
 * Today only the rank that replies (world rank 0) reports its times. */
#define RECUR_METRICS_MAX_RANKS 64
void recur_metrics_step(recur_metrics_t *m, uint64_t round_trip_ns, uint32_t rank, uint64_t forward_us,
                        uint64_t total_us);

/* Sessions and the prefix cache (coordinator/recur_coord.h recur_coord_get_session_stats):
 * the coordinator loop publishes its counters here (at most every 100 ms), so the HTTP
 * threads never touch the coordinator's own state. Each value is stored on its own: a scrape
 * may see one publication's tier gauges beside the next one's counters. */
typedef struct recur_metrics_sessions {
    int64_t  fresh, in_slot, in_host, on_disk;   /* sessions per tier (new, slot, host, disk)   */
    int64_t  busy;                               /* a turn or an operation running              */
    int64_t  host_bytes;                         /* workers' host memory for idle sessions      */
    uint64_t turns;                              /* session turns finished                      */
    uint64_t cached_tokens;                      /* prompt tokens of turns served from the state */
    uint64_t prefilled_tokens;                   /* prompt tokens of turns prefilled            */
    uint64_t saves, save_failures, loads, load_failures;
    uint64_t to_host, to_disk, lost, expired, deleted;
    uint64_t prefix_lookups, prefix_hits, prefix_tokens_saved;
    int64_t  prefix_entries;
} recur_metrics_sessions_t;
void recur_metrics_sessions(recur_metrics_t *m, const recur_metrics_sessions_t *s);

/* 1 / 0: the worker group is up and the model loaded. */
void recur_metrics_ready(recur_metrics_t *m, int ready);

/* An HTTP response: route (e.g. "/v1/completions"; anything else is counted as "other") and
 * status code. */
void recur_metrics_http(recur_metrics_t *m, const char *route, int status);

/* The whole exposition as text: a malloc'ed NUL-terminated string the caller frees, or NULL
 * when out of memory. */
char *recur_metrics_render(const recur_metrics_t *m);

/* The bucket upper bounds (seconds, ascending, the last finite one; +Inf is implicit). */
size_t recur_metrics_buckets(const double **bounds);

#ifdef __cplusplus
}
#endif
#endif
