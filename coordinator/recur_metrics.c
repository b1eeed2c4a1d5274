/* recur_metrics.c: see recur_metrics.h. */
#include "recur_metrics.h"
#include "recur_sbuf.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in seconds: 1 ms to 60 s, roughly x2 per bucket (TTFT and end to end reach
 * seconds under load; inter-token latency and steps sit in the ms range). */
static const double k_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3,
                                  0.5,   0.75,   1.0,   1.5,  2.5,  5.0,  10.0, 20.0, 30.0, 60.0};
#define N_BOUNDS (sizeof k_bounds / sizeof *k_bounds)

typedef struct hist {
    atomic_uint_least64_t bucket[N_BOUNDS + 1];   /* non-cumulative; the last is +Inf */
    atomic_uint_least64_t count;
    atomic_uint_least64_t sum_ns;                 /* integer ns: no atomic double needed */
} hist_t;

/* HTTP routes counted by name; everything else is "other". */
static const char *const k_routes[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/sessions",
                                       "/health/live",    "/health/ready",        "/metrics",   "other"};
#define N_ROUTES (sizeof k_routes / sizeof *k_routes)
static const int k_codes[] = {200, 400, 401, 404, 405, 409, 411, 413, 429, 500, 503, 504, 507};
#define N_CODES (sizeof k_codes / sizeof *k_codes)   /* + one slot for any other code */

static const char *const k_reasons[] = {"stop", "length", "cancelled", "error"};
#define N_REASONS (sizeof k_reasons / sizeof *k_reasons)

#define SESS_FIELDS (sizeof(recur_metrics_sessions_t) / sizeof(int64_t))

struct recur_metrics {
    hist_t hist[RECUR_METRICS_N_HIST];
    hist_t rank_forward[RECUR_METRICS_MAX_RANKS], rank_total[RECUR_METRICS_MAX_RANKS];
    atomic_uint_least64_t prompt_tokens, generation_tokens, requests, steps;
    atomic_uint_least64_t finished[N_REASONS];
    atomic_int_least64_t running, waiting, slots_used, slots_total, ready;
    atomic_uint_least64_t http[N_ROUTES][N_CODES + 1];
    /* sessions, as the coordinator published them: fields of recur_metrics_sessions_t in order */
    atomic_int_least64_t sess[SESS_FIELDS];
};

recur_status_t recur_metrics_create(recur_metrics_t **out) {
    /* calloc zeroes every atomic: a valid initial value for the lock-free atomics of every
     * platform we build on (C11 allows it for atomic integer types initialised to 0) */
    *out = calloc(1, sizeof **out);
    return *out ? RECUR_OK : RECUR_E_NOMEM;
}

void recur_metrics_free(recur_metrics_t *m) { free(m); }

size_t recur_metrics_buckets(const double **bounds) {
    if (bounds) *bounds = k_bounds;
    return N_BOUNDS;
}

static void hist_observe(hist_t *h, double s) {
    if (!(s >= 0)) s = 0;   /* NaN or a clock step back */
    size_t i = 0;
    while (i < N_BOUNDS && s > k_bounds[i]) i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    double ns = s * 1e9;
    atomic_fetch_add_explicit(&h->sum_ns, ns < 1.8e19 ? (uint64_t)ns : UINT64_MAX / 2, memory_order_relaxed);
}

void recur_metrics_observe(recur_metrics_t *m, recur_metrics_hist_t h, double seconds) {
    if (!m || (unsigned)h >= RECUR_METRICS_N_HIST) return;
    hist_observe(&m->hist[h], seconds);
}

void recur_metrics_token(recur_metrics_t *m, uint64_t t_accept_ns, uint64_t *t_last_ns, uint64_t now_ns) {
    if (!m) return;
    if (*t_last_ns == 0) hist_observe(&m->hist[RECUR_METRICS_TTFT], (double)(now_ns - t_accept_ns) * 1e-9);
    else hist_observe(&m->hist[RECUR_METRICS_ITL], (double)(now_ns - *t_last_ns) * 1e-9);
    *t_last_ns = now_ns;
    atomic_fetch_add_explicit(&m->generation_tokens, 1, memory_order_relaxed);
}

void recur_metrics_request(recur_metrics_t *m, int64_t n_prompt) {
    if (!m) return;
    atomic_fetch_add_explicit(&m->requests, 1, memory_order_relaxed);
    if (n_prompt > 0) atomic_fetch_add_explicit(&m->prompt_tokens, (uint64_t)n_prompt, memory_order_relaxed);
}

void recur_metrics_finished(recur_metrics_t *m, const char *reason, uint64_t t_accept_ns, uint64_t now_ns) {
    if (!m) return;
    for (size_t i = 0; i < N_REASONS; i++)
        if (reason && !strcmp(reason, k_reasons[i])) atomic_fetch_add_explicit(&m->finished[i], 1, memory_order_relaxed);
    if (t_accept_ns) hist_observe(&m->hist[RECUR_METRICS_E2E], (double)(now_ns - t_accept_ns) * 1e-9);
}

void recur_metrics_sched(recur_metrics_t *m, int64_t running, int64_t waiting, int64_t slots_used,
                         int64_t slots_total) {
    if (!m) return;
    atomic_store_explicit(&m->running, running, memory_order_relaxed);
    atomic_store_explicit(&m->waiting, waiting, memory_order_relaxed);
    atomic_store_explicit(&m->slots_used, slots_used, memory_order_relaxed);
    atomic_store_explicit(&m->slots_total, slots_total, memory_order_relaxed);
}

void recur_metrics_step(recur_metrics_t *m, uint64_t round_trip_ns, uint32_t rank, uint64_t forward_us,
                        uint64_t total_us) {
    if (!m) return;
    atomic_fetch_add_explicit(&m->steps, 1, memory_order_relaxed);
    hist_observe(&m->hist[RECUR_METRICS_STEP], (double)round_trip_ns * 1e-9);
    if (rank >= RECUR_METRICS_MAX_RANKS) return;
    if (forward_us) hist_observe(&m->rank_forward[rank], (double)forward_us * 1e-6);
    if (total_us) hist_observe(&m->rank_total[rank], (double)total_us * 1e-6);
}

void recur_metrics_sessions(recur_metrics_t *m, const recur_metrics_sessions_t *s) {
    if (!m || !s) return;
    /* every field is 64 bits wide (checked below): store them one by one, as int64 */
    int64_t v[SESS_FIELDS];
    memcpy(v, s, sizeof v);
    for (size_t i = 0; i < SESS_FIELDS; i++) atomic_store_explicit(&m->sess[i], v[i], memory_order_relaxed);
}
_Static_assert(sizeof(recur_metrics_sessions_t) % sizeof(int64_t) == 0, "recur_metrics_sessions_t: 64-bit fields only");

void recur_metrics_ready(recur_metrics_t *m, int ready) {
    if (m) atomic_store_explicit(&m->ready, ready ? 1 : 0, memory_order_relaxed);
}

void recur_metrics_http(recur_metrics_t *m, const char *route, int status) {
    if (!m) return;
    size_t r = N_ROUTES - 1, c = N_CODES;
    for (size_t i = 0; i + 1 < N_ROUTES; i++)
        if (route && !strcmp(route, k_routes[i])) r = i;
    for (size_t i = 0; i < N_CODES; i++)
        if (status == k_codes[i]) c = i;
    atomic_fetch_add_explicit(&m->http[r][c], 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ rendering */

static void render_hist_body(recur_sbuf_t *b, const char *name, const char *labels, const hist_t *h) {
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t i = 0; i <= N_BOUNDS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < N_BOUNDS) recur_sbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, k_bounds[i], (unsigned long long)cum);
        else recur_sbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    uint64_t sum = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
    /* the count is the +Inf bucket's: the buckets were read first, so the two agree */
    recur_sbuf_printf(b, "%s_sum%s%s%s %.9f\n%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
              (double)sum * 1e-9, name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "", (unsigned long long)cum);
}

static void render_hist(recur_sbuf_t *b, const char *name, const char *help, const hist_t *h) {
    recur_sbuf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    render_hist_body(b, name, "", h);
}

static void render_scalar(recur_sbuf_t *b, const char *name, const char *type, const char *help, long long v) {
    recur_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type, name, v);
}

char *recur_metrics_render(const recur_metrics_t *m) {
    recur_sbuf_t b = {0};
    recur_sbuf_str(&b, "");   /* an empty text, not NULL, when nothing else is added */
#define LD(x) ((long long)atomic_load_explicit(&m->x, memory_order_relaxed))
    render_scalar(&b, "recur_ready", "gauge", "1 when every worker rank is up and the model is loaded", LD(ready));
    render_scalar(&b, "recur_requests_running", "gauge", "requests holding a slot (prefill or decode)", LD(running));
    render_scalar(&b, "recur_requests_waiting", "gauge", "requests queued for a slot", LD(waiting));
    render_scalar(&b, "recur_slots_used", "gauge", "state slots in use", LD(slots_used));
    render_scalar(&b, "recur_slots_total", "gauge", "state slots for requests (the padding slot excluded)",
                  LD(slots_total));
    render_scalar(&b, "recur_requests_total", "counter", "requests accepted by the scheduler", LD(requests));
    render_scalar(&b, "recur_prompt_tokens_total", "counter", "prompt tokens of accepted requests", LD(prompt_tokens));
    render_scalar(&b, "recur_generation_tokens_total", "counter", "tokens generated", LD(generation_tokens));
    render_scalar(&b, "recur_steps_total", "counter", "forward steps completed", LD(steps));
#undef LD
    recur_sbuf_printf(&b, "# HELP recur_requests_finished_total requests ended, by finish reason\n"
                  "# TYPE recur_requests_finished_total counter\n");
    for (size_t i = 0; i < N_REASONS; i++)
        recur_sbuf_printf(&b, "recur_requests_finished_total{reason=\"%s\"} %llu\n", k_reasons[i],
                  (unsigned long long)atomic_load_explicit(&m->finished[i], memory_order_relaxed));
    render_hist(&b, "recur_time_to_first_token_seconds", "request accepted to its first generated token",
                &m->hist[RECUR_METRICS_TTFT]);
    render_hist(&b, "recur_inter_token_latency_seconds", "time between two generated tokens of one request",
                &m->hist[RECUR_METRICS_ITL]);
    render_hist(&b, "recur_request_duration_seconds", "request accepted to its final message",
                &m->hist[RECUR_METRICS_E2E]);
    render_hist(&b, "recur_step_seconds", "coordinator: step plan sent to its result received",
                &m->hist[RECUR_METRICS_STEP]);
    static const char *const rank_names[2] = {"recur_rank_step_forward_seconds", "recur_rank_step_total_seconds"};
    static const char *const rank_help[2] = {"a worker rank's forward pass per step (StepTiming.forward_us)",
                                             "a worker rank's time from plan received to result sent"};
    for (int k = 0; k < 2; k++) {
        const hist_t *hs = k == 0 ? m->rank_forward : m->rank_total;
        recur_sbuf_printf(&b, "# HELP %s %s\n# TYPE %s histogram\n", rank_names[k], rank_help[k], rank_names[k]);
        for (int r = 0; r < RECUR_METRICS_MAX_RANKS; r++) {
            if (!atomic_load_explicit(&hs[r].count, memory_order_relaxed)) continue;
            char lab[32];
            snprintf(lab, sizeof lab, "rank=\"%d\"", r);
            render_hist_body(&b, rank_names[k], lab, &hs[r]);
        }
    }
    /* sessions and the prefix cache (the coordinator's latest publication) */
    recur_metrics_sessions_t ss;
    {
        int64_t v[SESS_FIELDS];
        for (size_t i = 0; i < SESS_FIELDS; i++) v[i] = atomic_load_explicit(&m->sess[i], memory_order_relaxed);
        memcpy(&ss, v, sizeof ss);
    }
    recur_sbuf_printf(&b, "# HELP recur_sessions sessions by where their state is (new: no turn yet)\n# TYPE recur_sessions gauge\n"
                  "recur_sessions{tier=\"new\"} %lld\nrecur_sessions{tier=\"slot\"} %lld\n"
                  "recur_sessions{tier=\"host\"} %lld\nrecur_sessions{tier=\"disk\"} %lld\n",
              (long long)ss.fresh, (long long)ss.in_slot, (long long)ss.in_host, (long long)ss.on_disk);
    render_scalar(&b, "recur_sessions_busy", "gauge", "sessions with a turn or an operation running", ss.busy);
    render_scalar(&b, "recur_session_host_bytes", "gauge", "workers' host memory (per rank) holding idle sessions",
                  ss.host_bytes);
    render_scalar(&b, "recur_session_turns_total", "counter", "session turns finished", (long long)ss.turns);
    render_scalar(&b, "recur_session_prompt_tokens_cached_total", "counter",
                  "prompt tokens of session turns the session's state had consumed (not prefilled)",
                  (long long)ss.cached_tokens);
    render_scalar(&b, "recur_session_prompt_tokens_prefilled_total", "counter", "prompt tokens of session turns prefilled",
                  (long long)ss.prefilled_tokens);
    render_scalar(&b, "recur_prompt_tokens_cached_total", "counter",
                  "prompt tokens served from a cached state: session turns plus prefix-cache hits",
                  (long long)(ss.cached_tokens + ss.prefix_tokens_saved));
    recur_sbuf_printf(&b, "# HELP recur_session_checkpoints_total session checkpoint saves and loads, by outcome\n"
                  "# TYPE recur_session_checkpoints_total counter\n"
                  "recur_session_checkpoints_total{op=\"save\",result=\"ok\"} %llu\n"
                  "recur_session_checkpoints_total{op=\"save\",result=\"failed\"} %llu\n"
                  "recur_session_checkpoints_total{op=\"load\",result=\"ok\"} %llu\n"
                  "recur_session_checkpoints_total{op=\"load\",result=\"failed\"} %llu\n",
              (unsigned long long)ss.saves,   /* the coordinator counts saves that worked, loads tried */
              (unsigned long long)ss.save_failures,
              (unsigned long long)(ss.loads - (ss.load_failures < ss.loads ? ss.load_failures : ss.loads)),
              (unsigned long long)ss.load_failures);
    recur_sbuf_printf(&b, "# HELP recur_session_moves_total idle sessions moved down a tier\n"
                  "# TYPE recur_session_moves_total counter\n"
                  "recur_session_moves_total{to=\"host\"} %llu\nrecur_session_moves_total{to=\"disk\"} %llu\n",
              (unsigned long long)ss.to_host, (unsigned long long)ss.to_disk);
    recur_sbuf_printf(&b, "# HELP recur_sessions_removed_total sessions removed, by reason\n"
                  "# TYPE recur_sessions_removed_total counter\n"
                  "recur_sessions_removed_total{reason=\"deleted\"} %llu\n"
                  "recur_sessions_removed_total{reason=\"expired\"} %llu\n"
                  "recur_sessions_removed_total{reason=\"lost\"} %llu\n",
              (unsigned long long)ss.deleted, (unsigned long long)ss.expired, (unsigned long long)ss.lost);
    render_scalar(&b, "recur_prefix_cache_lookups_total", "counter", "prompts looked up in the prefix cache",
                  (long long)ss.prefix_lookups);
    render_scalar(&b, "recur_prefix_cache_hits_total", "counter", "prefix-cache lookups that found a cached prefix",
                  (long long)ss.prefix_hits);
    render_scalar(&b, "recur_prefix_cache_misses_total", "counter", "prefix-cache lookups that found none",
                  (long long)(ss.prefix_lookups - (ss.prefix_hits < ss.prefix_lookups ? ss.prefix_hits : ss.prefix_lookups)));
    render_scalar(&b, "recur_prefix_cache_tokens_saved_total", "counter", "prompt tokens not prefilled thanks to the prefix cache",
                  (long long)ss.prefix_tokens_saved);
    render_scalar(&b, "recur_prefix_cache_entries", "gauge", "prefix states kept", ss.prefix_entries);
    recur_sbuf_printf(&b, "# HELP recur_http_responses_total HTTP responses by route and status code\n"
                  "# TYPE recur_http_responses_total counter\n");
    for (size_t r = 0; r < N_ROUTES; r++)
        for (size_t c = 0; c <= N_CODES; c++) {
            uint64_t v = atomic_load_explicit(&m->http[r][c], memory_order_relaxed);
            if (!v) continue;
            char code[16];
            if (c < N_CODES) snprintf(code, sizeof code, "%d", k_codes[c]);
            else snprintf(code, sizeof code, "other");
            recur_sbuf_printf(&b, "recur_http_responses_total{route=\"%s\",code=\"%s\"} %llu\n", k_routes[r], code,
                      (unsigned long long)v);
        }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
