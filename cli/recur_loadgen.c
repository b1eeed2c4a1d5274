/* recur_loadgen.c: `recur_loadgen`, a load generator for `recur serve`: its protobuf API
 * (--connect, over ZeroMQ with the C client library) or its OpenAI-compatible HTTP API
 * (--http, /v1/completions with SSE streams; cli/recur_loadgen_http.c).
 *
 * One process, one thread keeps --concurrency requests in flight (closed loop: a new one
 * starts when one ends) until --requests have ended, then prints a table and, with --json,
 * writes the same figures as JSON (docs/benchmarks.md lists the keys). It links no CUDA, so
 * it stays small where a client process per stream would cost a process each.
 *
 *   recur_loadgen --http http://127.0.0.1:8000 --concurrency 64 --requests 256 \
 *                 --prompt-len lognormal:1000:0.6:16:8192 --output-len 128 --seed 1 --json out.json
 *
 * Prompts: with --prompt-len, token ids drawn uniformly from --token-range (default 33:127,
 * printable ASCII bytes, valid for every tokenizer recur ships), so a prompt has exactly the
 * drawn number of tokens; without it, "Request <i>:" and --prompt-words words of a fixed
 * text. Lengths (--prompt-len, --output-len): N | uniform:LO:HI | normal:MEAN:SD[:MIN:MAX] |
 * lognormal:MEDIAN:SIGMA[:MIN:MAX], rounded, clamped to [MIN, MAX] (default [1, 2^24]),
 * drawn from --seed (splitmix64; Box-Muller for the normal), so a seed gives the same plan
 * on every machine. --ignore-eos is on unless --eos is given, so every request produces its
 * --output-len tokens (a fixed amount of work). Greedy by default (--temperature 0); request
 * i samples with seed + i.
 *
 * Figures: time to first token (request start -> first token, HTTP: first text), the gaps
 * between tokens (ZeroMQ: per token, a message's gap divided by its tokens; HTTP: between
 * stream chunks with text, which is what an HTTP user sees), time per output token per
 * request ((last - first) / (tokens - 1)), request latency; percentiles are the nearest rank
 * of the sorted samples. Token counts are the server's (usage). --gpu-mem-ms MS samples
 * `nvidia-smi --query-gpu=index,memory.used` every MS during the measured run (a sampler
 * thread) and reports peak and mean per GPU. --warmup N runs N requests first, not counted.
 * Exit 1 when any measured request failed.
 *
 * --session-turns N (HTTP): multi-turn conversations instead (run_session_turns below): the
 * time to first token of each turn with a session (only the new turn's tokens sent) and
 * resending the whole history, and their ratio. */
#define _GNU_SOURCE
#include "recur_loadgen.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_client.h"

/* --------------------------------------------------------------- shared helpers */

double lg_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int lg_itl_add(lg_run_t *r, double gap_s) {
    if (r->n_itl == r->cap_itl) {
        size_t c = r->cap_itl ? 2 * r->cap_itl : 4096;
        double *q = realloc(r->itl, c * sizeof *q);
        if (!q) return -1;
        r->itl = q, r->cap_itl = c;
    }
    r->itl[r->n_itl++] = gap_s;
    return 0;
}

static int g_failures_printed;   /* the first few failures are printed; one thread */

void lg_req_fail(lg_run_t *r, long i, const char *fmt, ...) {
    lg_req_t *q = &r->reqs[i];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->err, sizeof q->err, fmt, ap);
    va_end(ap);
    q->state = LG_FAILED;
    if (!r->quiet && g_failures_printed++ < 5) fprintf(stderr, "recur_loadgen: request %ld failed: %s\n", i, q->err);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest rank of sorted v */
static double pct(const double *v, size_t n, double p) {
    if (!n) return 0.0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static int arg_long(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "recur_loadgen: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* --------------------------------------------------------------- the plan */

/* splitmix64: small, seedable, the same on every platform */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }
static double rng_normal(uint64_t *s) {
    double u1 = rng_unit(s), u2 = rng_unit(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct dist {
    enum { D_FIXED, D_UNIFORM, D_NORMAL, D_LOGNORMAL } kind;
    double a, b, lo, hi;
    char spec[96];
} dist_t;

static int parse_dist(const char *opt, const char *s, dist_t *d) {
    double v[5];
    int n = 0;
    char kind[16] = "";
    const char *p = s;
    const char *colon = strchr(s, ':');
    *d = (dist_t){.kind = D_FIXED, .lo = 1, .hi = 1 << 24};
    snprintf(d->spec, sizeof d->spec, "%s", s);
    if (colon) {
        size_t kl = (size_t)(colon - s);
        if (kl >= sizeof kind) goto bad;
        memcpy(kind, s, kl);
        p = colon + 1;
    }
    while (*p && n < 5) {
        char *end;
        errno = 0;
        v[n] = strtod(p, &end);
        if (errno || end == p || !isfinite(v[n])) goto bad;
        n++;
        p = end;
        if (*p == ':') p++;
        else if (*p) goto bad;
    }
    if (*p) goto bad;
    if (!colon) {
        if (n != 1 || v[0] < 1 || v[0] != floor(v[0])) goto bad;
        d->a = v[0];
        return 0;
    }
    int base;
    if (!strcmp(kind, "uniform")) d->kind = D_UNIFORM, base = 2;
    else if (!strcmp(kind, "normal")) d->kind = D_NORMAL, base = 2;
    else if (!strcmp(kind, "lognormal")) d->kind = D_LOGNORMAL, base = 2;
    else goto bad;
    if (n != base && !(d->kind != D_UNIFORM && n == base + 2)) goto bad;
    d->a = v[0], d->b = v[1];
    if (n == base + 2) d->lo = v[2], d->hi = v[3];
    if (d->lo < 1 || d->hi < d->lo || d->hi > (1 << 24)) goto bad;
    if (d->kind == D_UNIFORM && (d->a < 1 || d->b < d->a || d->b > (1 << 24))) goto bad;
    if (d->kind == D_NORMAL && d->b < 0) goto bad;
    if (d->kind == D_LOGNORMAL && (d->a <= 0 || d->b < 0)) goto bad;
    return 0;
bad:
    fprintf(stderr,
            "recur_loadgen: %s expects N | uniform:LO:HI | normal:MEAN:SD[:MIN:MAX] | lognormal:MEDIAN:SIGMA[:MIN:MAX] "
            "(lengths >= 1), got '%s'\n",
            opt, s);
    return -1;
}

static int32_t draw(const dist_t *d, uint64_t *s) {
    double x;
    switch (d->kind) {
    case D_FIXED: return (int32_t)d->a;
    case D_UNIFORM: x = d->a + floor(rng_unit(s) * (d->b - d->a + 1)); break;
    case D_NORMAL: x = d->a + d->b * rng_normal(s); break;
    default: x = d->a * exp(d->b * rng_normal(s)); break;
    }
    x = floor(x + 0.5);
    if (x < d->lo) x = d->lo;
    if (x > d->hi) x = d->hi;
    return (int32_t)x;
}

typedef struct opts {
    const char *connect, *http, *json, *label, *api_key, *model;
    long conc, total, words, timeout_ms, warmup, gpu_mem_ms;
    long tok_lo, tok_hi;
    unsigned long long seed;
    double temperature;
    int eos, have_plen;
    dist_t plen, olen;
    long session_turns;          /* > 0: conversations of this many turns (run_session_turns) */
    const char *session_mode;    /* both | session | resend */
} opts_t;

static const char *k_words[] = {"the", "river", "runs", "past", "an", "old", "mill", "where", "children",
                                "play", "under", "tall", "green", "trees", "and", "birds", "sing"};

/* n requests; `stream` picks an independent part of the seed's sequence (warm-up vs run) */
static int make_plan(const opts_t *o, long n, uint64_t stream, lg_run_t *r) {
    memset(r, 0, sizeof *r);
    r->reqs = calloc((size_t)n, sizeof *r->reqs);
    if (!r->reqs) return -1;
    r->n = n;
    r->conc = o->conc < n ? o->conc : n;
    r->temperature = o->temperature, r->eos = o->eos, r->timeout_ms = o->timeout_ms;
    r->api_key = o->api_key, r->model = o->model;
    uint64_t s = (uint64_t)o->seed * 0x2545f4914f6cdd1dull + stream;
    for (long i = 0; i < n; i++) {   /* lengths first, so they do not depend on the token range */
        lg_req_t *q = &r->reqs[i];
        q->n_prompt = o->have_plen ? draw(&o->plen, &s) : 0;
        q->max_tokens = draw(&o->olen, &s);
        q->seed = (uint64_t)o->seed + (uint64_t)i + stream * 1000003ull;
    }
    for (long i = 0; i < n; i++) {
        lg_req_t *q = &r->reqs[i];
        if (o->have_plen) {
            q->ids = malloc((size_t)q->n_prompt * sizeof *q->ids);
            if (!q->ids) return -1;
            for (int32_t k = 0; k < q->n_prompt; k++)
                q->ids[k] = (int32_t)(o->tok_lo + (long)(rng_next(&s) % (uint64_t)(o->tok_hi - o->tok_lo)));
        } else {
            size_t cap = 32 + (size_t)o->words * 10;
            q->text = malloc(cap);
            if (!q->text) return -1;
            int off = snprintf(q->text, cap, "Request %ld:", i);
            for (long w = 0; w < o->words; w++)
                off += snprintf(q->text + off, cap - (size_t)off, " %s", k_words[(w + i) % 17]);
        }
    }
    return 0;
}

static void free_plan(lg_run_t *r) {
    for (long i = 0; r->reqs && i < r->n; i++) free(r->reqs[i].ids), free(r->reqs[i].text);
    free(r->reqs);
    free(r->itl);
    memset(r, 0, sizeof *r);
}

/* --------------------------------------------------------------- ZeroMQ driver */

static int lg_run_zmq(lg_run_t *r, const char *endpoint) {
    void *zctx = zmq_ctx_new();
    recur_client_t *c = NULL;
    if (!zctx || recur_client_connect(zctx, endpoint, &c) != RECUR_OK) {
        fprintf(stderr, "recur_loadgen: cannot connect to %s\n", endpoint);
        if (zctx) zmq_ctx_term(zctx);
        return -1;
    }
    recur_client_params_t p = recur_client_default_params();
    p.temperature = (float)r->temperature, p.ignore_eos = !r->eos, p.has_seed = 1;
    long next = 0, done = 0, in_flight = 0;
    int rc = 0;
    char rid[32];
    r->t0 = lg_now_s();
    while (done < r->n) {
        while (in_flight < r->conc && next < r->n) {
            lg_req_t *q = &r->reqs[next];
            snprintf(rid, sizeof rid, "lg-%ld", next);
            p.max_tokens = q->max_tokens, p.seed = q->seed;
            q->t_start = lg_now_s(), q->state = LG_IN_FLIGHT, q->attempts = 1;
            if (recur_client_generate(c, rid, q->text, q->ids, q->ids ? (size_t)q->n_prompt : 0, &p) != RECUR_OK) {
                fprintf(stderr, "recur_loadgen: send failed: %s\n", recur_client_error(c));
                rc = -1;
                goto out;
            }
            next++, in_flight++;
        }
        recur_client_event_t ev;
        recur_status_t s = recur_client_next(c, (int32_t)r->timeout_ms, &ev);
        if (s != RECUR_OK) {
            fprintf(stderr, "recur_loadgen: %s (%ld of %ld requests done)\n", recur_client_error(c), done, r->n);
            for (long i = 0; i < next; i++)
                if (r->reqs[i].state == LG_IN_FLIGHT) lg_req_fail(r, i, "no answer for %ld ms", r->timeout_ms);
            break;
        }
        long i = strncmp(ev.request_id, "lg-", 3) ? -1 : strtol(ev.request_id + 3, NULL, 10);
        if (i < 0 || i >= next || r->reqs[i].state != LG_IN_FLIGHT) continue;
        lg_req_t *q = &r->reqs[i];
        double t = lg_now_s();
        if (ev.kind == RECUR_CLIENT_EV_ERROR) {
            lg_req_fail(r, i, "refused: %s", ev.message);
            q->t_end = t, done++, in_flight--;
            continue;
        }
        if (ev.kind != RECUR_CLIENT_EV_TOKENS && ev.kind != RECUR_CLIENT_EV_FINAL) continue;
        if (ev.n_tokens > 0) {
            if (q->tokens == 0) q->t_first = t;
            else if (lg_itl_add(r, (t - q->t_last) / ev.n_tokens)) {
                rc = -1;
                goto out;
            }
            q->t_last = t;
            q->tokens += ev.n_tokens;
            q->chunks++;
        }
        if (ev.kind == RECUR_CLIENT_EV_FINAL) {
            q->has_usage = 1, q->prompt_tokens = ev.prompt_tokens, q->completion_tokens = ev.completion_tokens;
            if (ev.finish == RECUR_CLIENT_FINISH_ERROR || ev.finish == RECUR_CLIENT_FINISH_CANCELLED)
                lg_req_fail(r, i, "ended %s: %s", recur_client_finish_str(ev.finish), ev.message);
            else q->state = LG_OK;
            q->t_end = t, done++, in_flight--;
        }
    }
out:
    r->t1 = lg_now_s();
    recur_client_close(c);
    zmq_ctx_term(zctx);
    return rc;
}

/* --------------------------------------------------------------- GPU memory sampler */

enum { GPU_MAX = 16 };
typedef struct gpu_sampler {
    pthread_t th;
    int running, fd;
    pid_t pid;
    pthread_mutex_t mu;
    double peak[GPU_MAX], sum[GPU_MAX], min[GPU_MAX];
    long count[GPU_MAX];
    int n_gpus;
} gpu_sampler_t;

static void *sampler_main(void *arg) {
    gpu_sampler_t *g = arg;
    FILE *f = fdopen(g->fd, "r");
    if (!f) return NULL;
    char line[256];
    while (fgets(line, sizeof line, f)) {   /* "0, 12345" */
        int idx;
        double mib;
        if (sscanf(line, "%d , %lf", &idx, &mib) != 2 || idx < 0 || idx >= GPU_MAX) continue;
        pthread_mutex_lock(&g->mu);
        if (!g->count[idx] || mib > g->peak[idx]) g->peak[idx] = mib;
        if (!g->count[idx] || mib < g->min[idx]) g->min[idx] = mib;
        g->sum[idx] += mib, g->count[idx]++;
        if (idx + 1 > g->n_gpus) g->n_gpus = idx + 1;
        pthread_mutex_unlock(&g->mu);
    }
    fclose(f);
    return NULL;
}

static int sampler_start(gpu_sampler_t *g, long ms) {
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    int p[2];
    if (pipe(p)) return -1;
    char lms[32];
    snprintf(lms, sizeof lms, "%ld", ms);
    g->pid = fork();
    if (g->pid < 0) {
        close(p[0]), close(p[1]);
        return -1;
    }
    if (g->pid == 0) {
        dup2(p[1], 1);
        close(p[0]), close(p[1]);
        execlp("nvidia-smi", "nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits", "-lms", lms,
               (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    g->fd = p[0];
    if (pthread_create(&g->th, NULL, sampler_main, g)) {
        close(g->fd);
        kill(g->pid, SIGTERM);
        waitpid(g->pid, NULL, 0);
        return -1;
    }
    g->running = 1;
    return 0;
}

static void sampler_stop(gpu_sampler_t *g) {
    if (!g->running) return;
    kill(g->pid, SIGTERM);   /* its pipe closes: the thread reads EOF */
    waitpid(g->pid, NULL, 0);
    pthread_join(g->th, NULL);
    g->running = 0;
}

/* --------------------------------------------------------------- report */

typedef struct stats {
    long ok, failed, n;
    uint64_t prompt_tokens, completion_tokens, planned_prompt, planned_completion;
    double wall;
    double *ttft, *tpot, *e2e;
    size_t n_ttft, n_tpot, n_e2e;
} stats_t;

static int compute(lg_run_t *r, stats_t *s) {
    memset(s, 0, sizeof *s);
    s->n = r->n;
    s->wall = r->t1 - r->t0;
    s->ttft = malloc((size_t)r->n * sizeof(double));
    s->tpot = malloc((size_t)r->n * sizeof(double));
    s->e2e = malloc((size_t)r->n * sizeof(double));
    if (!s->ttft || !s->tpot || !s->e2e) return -1;
    for (long i = 0; i < r->n; i++) {
        const lg_req_t *q = &r->reqs[i];
        s->planned_prompt += (uint64_t)q->n_prompt, s->planned_completion += (uint64_t)q->max_tokens;
        if (q->state != LG_OK) {
            s->failed++;
            continue;
        }
        s->ok++;
        s->prompt_tokens += q->prompt_tokens, s->completion_tokens += q->completion_tokens;
        if (q->chunks > 0) s->ttft[s->n_ttft++] = q->t_first - q->t_start;
        if (q->completion_tokens > 1 && q->chunks > 1)
            s->tpot[s->n_tpot++] = (q->t_last - q->t_first) / (double)(q->completion_tokens - 1);
        s->e2e[s->n_e2e++] = q->t_end - q->t_start;
    }
    if (s->n_ttft) qsort(s->ttft, s->n_ttft, sizeof(double), cmp_double);
    if (s->n_tpot) qsort(s->tpot, s->n_tpot, sizeof(double), cmp_double);
    if (s->n_e2e) qsort(s->e2e, s->n_e2e, sizeof(double), cmp_double);
    if (r->n_itl) qsort(r->itl, r->n_itl, sizeof(double), cmp_double);   /* itl is NULL when empty */
    return 0;
}

static double mean(const double *v, size_t n) {
    double t = 0;
    for (size_t i = 0; i < n; i++) t += v[i];
    return n ? t / (double)n : 0.0;
}

static cJSON *pct_json(const double *v, size_t n) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", (double)n);
    cJSON_AddNumberToObject(o, "mean", 1e3 * mean(v, n));
    cJSON_AddNumberToObject(o, "p50", 1e3 * pct(v, n, 0.5));
    cJSON_AddNumberToObject(o, "p90", 1e3 * pct(v, n, 0.9));
    cJSON_AddNumberToObject(o, "p99", 1e3 * pct(v, n, 0.99));
    cJSON_AddNumberToObject(o, "max", n ? 1e3 * v[n - 1] : 0.0);
    return o;
}

static const char *dist_name(const dist_t *d) { return d->spec; }

static void print_table(const opts_t *o, const lg_run_t *r, const stats_t *s, const gpu_sampler_t *g) {
    double w = s->wall > 0 ? s->wall : 1e-9;
    printf("| what | value |\n|---|---|\n");
    if (o->label) printf("| run | %s |\n", o->label);
    printf("| api | %s %s |\n", o->http ? "http" : "zmq", o->http ? o->http : o->connect);
    printf("| requests done (errors) | %ld (%ld) |\n", s->ok + s->failed, s->failed);
    printf("| concurrency | %ld |\n", r->conc);
    printf("| prompt length / output length | %s / %s |\n", o->have_plen ? dist_name(&o->plen) : "text",
           dist_name(&o->olen));
    printf("| prompt tokens / completion tokens | %llu / %llu |\n", (unsigned long long)s->prompt_tokens,
           (unsigned long long)s->completion_tokens);
    printf("| wall time | %.2f s |\n", s->wall);
    printf("| completion tokens/s | %.1f |\n", (double)s->completion_tokens / w);
    printf("| total tokens/s (prompt + completion) | %.1f |\n", (double)(s->prompt_tokens + s->completion_tokens) / w);
    printf("| requests/s | %.2f |\n", (double)(s->ok + s->failed) / w);
    printf("| TTFT p50 / p90 / p99 | %.1f / %.1f / %.1f ms |\n", 1e3 * pct(s->ttft, s->n_ttft, 0.5),
           1e3 * pct(s->ttft, s->n_ttft, 0.9), 1e3 * pct(s->ttft, s->n_ttft, 0.99));
    printf("| inter-token%s p50 / p90 / p99 | %.2f / %.2f / %.2f ms |\n", o->http ? " (between chunks)" : "",
           1e3 * pct(r->itl, r->n_itl, 0.5), 1e3 * pct(r->itl, r->n_itl, 0.9), 1e3 * pct(r->itl, r->n_itl, 0.99));
    printf("| time per output token p50 / p90 / p99 | %.2f / %.2f / %.2f ms |\n", 1e3 * pct(s->tpot, s->n_tpot, 0.5),
           1e3 * pct(s->tpot, s->n_tpot, 0.9), 1e3 * pct(s->tpot, s->n_tpot, 0.99));
    printf("| request latency p50 / p99 | %.1f / %.1f ms |\n", 1e3 * pct(s->e2e, s->n_e2e, 0.5),
           1e3 * pct(s->e2e, s->n_e2e, 0.99));
    for (int k = 0; g && k < g->n_gpus; k++)
        if (g->count[k])
            printf("| GPU %d memory used peak / mean | %.0f / %.0f MiB |\n", k, g->peak[k], g->sum[k] / g->count[k]);
}

static int write_json(const opts_t *o, const lg_run_t *r, const stats_t *s, const gpu_sampler_t *g) {
    double w = s->wall > 0 ? s->wall : 1e-9;
    cJSON *j = cJSON_CreateObject(), *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tool", "recur_loadgen");
    cJSON_AddNumberToObject(j, "version", 1);
    if (o->label) cJSON_AddStringToObject(j, "label", o->label);
    cJSON_AddStringToObject(j, "api", o->http ? "http" : "zmq");
    cJSON_AddStringToObject(j, "target", o->http ? o->http : o->connect);
    cJSON_AddNumberToObject(cfg, "concurrency", (double)r->conc);
    cJSON_AddNumberToObject(cfg, "requests", (double)r->n);
    cJSON_AddStringToObject(cfg, "prompt_len", o->have_plen ? dist_name(&o->plen) : "text");
    cJSON_AddStringToObject(cfg, "output_len", dist_name(&o->olen));
    cJSON_AddNumberToObject(cfg, "seed", (double)o->seed);
    cJSON_AddNumberToObject(cfg, "temperature", o->temperature);
    cJSON_AddBoolToObject(cfg, "ignore_eos", !o->eos);
    cJSON_AddNumberToObject(cfg, "warmup_requests", (double)o->warmup);
    cJSON_AddItemToObject(j, "config", cfg);
    cJSON_AddNumberToObject(j, "requests_ok", (double)s->ok);
    cJSON_AddNumberToObject(j, "requests_failed", (double)s->failed);
    cJSON_AddNumberToObject(j, "prompt_tokens", (double)s->prompt_tokens);
    cJSON_AddNumberToObject(j, "completion_tokens", (double)s->completion_tokens);
    cJSON_AddNumberToObject(j, "planned_prompt_tokens", (double)s->planned_prompt);
    cJSON_AddNumberToObject(j, "planned_completion_tokens", (double)s->planned_completion);
    cJSON_AddNumberToObject(j, "wall_s", s->wall);
    cJSON_AddNumberToObject(j, "requests_per_s", (double)(s->ok + s->failed) / w);
    cJSON_AddNumberToObject(j, "output_tokens_per_s", (double)s->completion_tokens / w);
    cJSON_AddNumberToObject(j, "total_tokens_per_s", (double)(s->prompt_tokens + s->completion_tokens) / w);
    cJSON_AddItemToObject(j, "ttft_ms", pct_json(s->ttft, s->n_ttft));
    cJSON_AddItemToObject(j, "itl_ms", pct_json(r->itl, r->n_itl));
    cJSON_AddStringToObject(j, "itl_is", o->http ? "gap between stream chunks with text" : "gap per token");
    cJSON_AddItemToObject(j, "tpot_ms", pct_json(s->tpot, s->n_tpot));
    cJSON_AddItemToObject(j, "e2e_ms", pct_json(s->e2e, s->n_e2e));
    if (g && g->n_gpus) {
        cJSON *a = cJSON_AddArrayToObject(j, "gpu_memory_mib");
        for (int k = 0; k < g->n_gpus; k++) {
            if (!g->count[k]) continue;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "index", k);
            cJSON_AddNumberToObject(e, "peak", g->peak[k]);
            cJSON_AddNumberToObject(e, "mean", g->sum[k] / (double)g->count[k]);
            cJSON_AddNumberToObject(e, "min", g->min[k]);
            cJSON_AddNumberToObject(e, "samples", (double)g->count[k]);
            cJSON_AddItemToArray(a, e);
        }
    } else {
        cJSON_AddNullToObject(j, "gpu_memory_mib");
    }
    cJSON *rq = cJSON_AddArrayToObject(j, "requests");   /* one record per measured request */
    for (long i = 0; i < r->n; i++) {
        const lg_req_t *q = &r->reqs[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "prompt_len", q->n_prompt);
        cJSON_AddNumberToObject(e, "max_tokens", q->max_tokens);
        cJSON_AddBoolToObject(e, "ok", q->state == LG_OK);
        cJSON_AddNumberToObject(e, "start_s", q->t_start - r->t0);
        if (q->state == LG_OK && q->chunks) cJSON_AddNumberToObject(e, "ttft_ms", 1e3 * (q->t_first - q->t_start));
        else cJSON_AddNullToObject(e, "ttft_ms");
        cJSON_AddNumberToObject(e, "e2e_ms", 1e3 * (q->t_end - q->t_start));
        cJSON_AddNumberToObject(e, "prompt_tokens", q->prompt_tokens);
        cJSON_AddNumberToObject(e, "completion_tokens", q->completion_tokens);
        cJSON_AddNumberToObject(e, "chunks", q->chunks);
        cJSON_AddItemToArray(rq, e);
    }
    cJSON *errs = cJSON_AddArrayToObject(j, "errors");
    for (long i = 0, k = 0; i < r->n && k < 10; i++)
        if (r->reqs[i].state == LG_FAILED) cJSON_AddItemToArray(errs, cJSON_CreateString(r->reqs[i].err)), k++;
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    FILE *f = text ? fopen(o->json, "w") : NULL;
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f)) ok = 0;
    free(text);
    if (!ok) fprintf(stderr, "recur_loadgen: cannot write %s: %s\n", o->json, strerror(errno));
    return ok ? 0 : -1;
}

/* --------------------------------------------------------------- --session-turns */

/* Conversations of o->session_turns turns (HTTP only): turn t of conversation c sends a new
 * prompt of --prompt-len random token ids and asks for --output-len tokens. Two ways, one
 * after the other, on the same plan:
 *   session: each turn sends only its new prompt with "session_id" (the server keeps the
 *            conversation's state and prefills only the new tokens);
 *   resend:  each turn sends the whole history without a session: every earlier prompt,
 *            each followed by as many placeholder ids as that turn generated (the server's
 *            text is not turned back into ids: what matters for the time to first token is
 *            how many tokens are prefilled, and that is the same), then the new prompt.
 * Every conversation's turn t runs as one wave (--concurrency of them in flight), so turn t
 * of every conversation has the same context length. Per turn: the context (the server's
 * prompt_tokens), cached_tokens, and the time to first token of each way. */
typedef struct sess_way {
    const char *name;
    int use_session;
    double *ttft;            /* [turn * n_conv + c], seconds; < 0: failed */
    uint32_t *prompt_tokens, *cached_tokens, *completion_tokens;
    long failed;
} sess_way_t;

static int run_session_way(const opts_t *o, sess_way_t *w, long n_conv, const int32_t *const *new_ids,
                           const int32_t *plen, const int32_t *olen, uint64_t stream_seed) {
    long turns = o->session_turns;
    int32_t **hist = calloc((size_t)n_conv, sizeof *hist);
    size_t *n_hist = calloc((size_t)n_conv, sizeof *n_hist);
    int rc = hist && n_hist ? 0 : -1;
    char tag[64];
    /* session ids of this run only: process, time and seed */
    snprintf(tag, sizeof tag, "lg-%ld-%llx-%llx", (long)getpid(), (unsigned long long)time(NULL),
             (unsigned long long)stream_seed);
    uint64_t ph = stream_seed ^ 0x5bd1e995ull;   /* placeholder ids for the resent outputs */
    for (long t = 0; t < turns && !rc; t++) {
        lg_run_t r;
        memset(&r, 0, sizeof r);
        if (!(r.reqs = calloc((size_t)n_conv, sizeof *r.reqs))) { rc = -1; break; }
        r.n = n_conv;
        r.conc = o->conc < n_conv ? o->conc : n_conv;
        r.temperature = o->temperature, r.eos = o->eos, r.timeout_ms = o->timeout_ms;
        r.api_key = o->api_key, r.model = o->model;
        for (long c = 0; c < n_conv && !rc; c++) {
            lg_req_t *q = &r.reqs[c];
            const int32_t *nw = new_ids[t * n_conv + c];
            int32_t np = plen[t * n_conv + c];
            q->max_tokens = olen[t * n_conv + c];
            q->seed = (uint64_t)o->seed + (uint64_t)(t * n_conv + c);
            size_t total = w->use_session ? (size_t)np : n_hist[c] + (size_t)np;
            if (!(q->ids = malloc(total * sizeof *q->ids))) { rc = -1; break; }
            if (!w->use_session && n_hist[c]) memcpy(q->ids, hist[c], n_hist[c] * sizeof *q->ids);
            memcpy(q->ids + (total - (size_t)np), nw, (size_t)np * sizeof *q->ids);
            q->n_prompt = (int32_t)total;
            if (w->use_session) {
                char sid[96];
                snprintf(sid, sizeof sid, "%s-%ld", tag, c);
                if (!(q->session_id = strdup(sid))) rc = -1;
            }
        }
        if (!rc) rc = lg_run_http(&r, o->http);
        for (long c = 0; c < n_conv && !rc; c++) {
            lg_req_t *q = &r.reqs[c];
            size_t k = (size_t)(t * n_conv + c);
            int ok = q->state == LG_OK && q->chunks > 0;
            w->ttft[k] = ok ? q->t_first - q->t_start : -1.0;
            w->prompt_tokens[k] = q->prompt_tokens;
            w->cached_tokens[k] = q->has_cached ? q->cached_tokens : 0;
            w->completion_tokens[k] = q->completion_tokens;
            if (!ok) {
                w->failed++;
                if (w->failed <= 5) fprintf(stderr, "recur_loadgen: %s turn %ld conversation %ld failed: %s\n", w->name,
                                            t + 1, c, q->err[0] ? q->err : "no text");
            }
            if (!w->use_session) {   /* the history grows by the prompt and placeholders for the output */
                int32_t np = plen[t * n_conv + c];
                size_t add = (size_t)np + q->completion_tokens;
                int32_t *hh = realloc(hist[c], (n_hist[c] + add) * sizeof *hh);
                if (!hh) { rc = -1; break; }
                hist[c] = hh;
                memcpy(hh + n_hist[c], new_ids[t * n_conv + c], (size_t)np * sizeof *hh);
                for (uint32_t i = 0; i < q->completion_tokens; i++)
                    hh[n_hist[c] + (size_t)np + i] = (int32_t)(o->tok_lo + (long)(rng_next(&ph) % (uint64_t)(o->tok_hi - o->tok_lo)));
                n_hist[c] += add;
            }
        }
        for (long c = 0; c < n_conv; c++) free(r.reqs[c].ids), free(r.reqs[c].session_id);
        free(r.reqs);
        free(r.itl);
        if (rc) fprintf(stderr, "recur_loadgen: the %s run could not go on (turn %ld)\n", w->name, t + 1);
    }
    for (long c = 0; hist && c < n_conv; c++) free(hist[c]);
    free(hist), free(n_hist);
    return rc;
}

/* p50 of the successful TTFTs of turn t, in seconds (0 when none) */
static double turn_p50(const sess_way_t *w, long t, long n_conv, double *tmp) {
    size_t k = 0;
    for (long c = 0; c < n_conv; c++)
        if (w->ttft[t * n_conv + c] >= 0) tmp[k++] = w->ttft[t * n_conv + c];
    if (!k) return 0.0;
    qsort(tmp, k, sizeof *tmp, cmp_double);
    return pct(tmp, k, 0.5);
}

static double turn_mean_u32(const uint32_t *v, long t, long n_conv) {
    double s = 0;
    for (long c = 0; c < n_conv; c++) s += v[t * n_conv + c];
    return n_conv ? s / (double)n_conv : 0.0;
}

/* One figure as text ("-" when that way did not run). */
static const char *fmt_or_dash(char *buf, size_t n, int have, int decimals, double v) {
    if (!have) return "-";
    snprintf(buf, n, "%.*f", decimals, v);
    return buf;
}

/* The per-turn table, the summary of the last turn and, with --json, the same as JSON. */
static int report_session_turns(const opts_t *o, const sess_way_t *ways, const int have[2], long n_conv, double *tmp) {
    long turns = o->session_turns;
    cJSON *j = cJSON_CreateObject(), *cfg = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    printf("| turn | context tokens | cached tokens (session) | TTFT session ms (p50) | TTFT resend ms (p50) | "
           "resend / session |\n|---|---|---|---|---|---|\n");
    double last[2] = {0, 0}, last_ctx = 0;
    for (long t = 0; t < turns; t++) {
        double p[2], ctx = 0;
        char b0[32], b1[32], b2[32], b3[32];
        for (int k = 0; k < 2; k++) p[k] = have[k] ? turn_p50(&ways[k], t, n_conv, tmp) : 0;
        ctx = turn_mean_u32(have[0] ? ways[0].prompt_tokens : ways[1].prompt_tokens, t, n_conv);
        printf("| %ld | %.0f | %s | %s | %s | %s |\n", t + 1, ctx,
               fmt_or_dash(b0, sizeof b0, have[0], 0, have[0] ? turn_mean_u32(ways[0].cached_tokens, t, n_conv) : 0),
               fmt_or_dash(b1, sizeof b1, have[0], 1, 1e3 * p[0]), fmt_or_dash(b2, sizeof b2, have[1], 1, 1e3 * p[1]),
               fmt_or_dash(b3, sizeof b3, have[0] && have[1] && p[0] > 0, 2, p[0] > 0 ? p[1] / p[0] : 0));
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "turn", (double)(t + 1));
        cJSON_AddNumberToObject(e, "context_tokens", ctx);
        for (int k = 0; k < 2; k++) {
            if (!have[k]) continue;
            const sess_way_t *w = &ways[k];
            cJSON *x = cJSON_AddObjectToObject(e, w->name);
            size_t m = 0;
            for (long c = 0; c < n_conv; c++)
                if (w->ttft[t * n_conv + c] >= 0) tmp[m++] = w->ttft[t * n_conv + c];
            if (m) qsort(tmp, m, sizeof *tmp, cmp_double);
            cJSON_AddItemToObject(x, "ttft_ms", pct_json(tmp, m));
            cJSON *pt = cJSON_AddArrayToObject(x, "prompt_tokens"), *ct = cJSON_AddArrayToObject(x, "cached_tokens");
            cJSON *gt = cJSON_AddArrayToObject(x, "completion_tokens");
            for (long c = 0; c < n_conv; c++) {
                cJSON_AddItemToArray(pt, cJSON_CreateNumber(w->prompt_tokens[t * n_conv + c]));
                cJSON_AddItemToArray(ct, cJSON_CreateNumber(w->cached_tokens[t * n_conv + c]));
                cJSON_AddItemToArray(gt, cJSON_CreateNumber(w->completion_tokens[t * n_conv + c]));
            }
        }
        cJSON_AddItemToArray(arr, e);
        last[0] = p[0], last[1] = p[1], last_ctx = ctx;
    }
    printf("\n| what | context tokens | TTFT ms (p50) | ratio |\n|---|---|---|---|\n");
    if (have[0]) printf("| turn %ld with a session (only the new turn prefilled) | %.0f | %.1f | 1.00 |\n", turns, last_ctx,
                        1e3 * last[0]);
    if (have[1]) {
        char b[32];
        printf("| turn %ld resending the whole history | %.0f | %.1f | %s |\n", turns, last_ctx, 1e3 * last[1],
               fmt_or_dash(b, sizeof b, have[0] && last[0] > 0, 2, last[0] > 0 ? last[1] / last[0] : 0));
    }
    int rc = 0;
    if (o->json) {
        cJSON_AddStringToObject(j, "tool", "recur_loadgen");
        cJSON_AddNumberToObject(j, "version", 1);
        cJSON_AddStringToObject(j, "mode", "session_turns");
        if (o->label) cJSON_AddStringToObject(j, "label", o->label);
        cJSON_AddStringToObject(j, "target", o->http);
        cJSON_AddNumberToObject(cfg, "turns", (double)turns);
        cJSON_AddNumberToObject(cfg, "conversations", (double)n_conv);
        cJSON_AddNumberToObject(cfg, "concurrency", (double)(o->conc < n_conv ? o->conc : n_conv));
        cJSON_AddStringToObject(cfg, "prompt_len", o->plen.spec);
        cJSON_AddStringToObject(cfg, "output_len", o->olen.spec);
        cJSON_AddStringToObject(cfg, "session_mode", o->session_mode);
        cJSON_AddNumberToObject(cfg, "seed", (double)o->seed);
        cJSON_AddNumberToObject(cfg, "temperature", o->temperature);
        cJSON_AddItemToObject(j, "config", cfg), cfg = NULL;
        cJSON_AddItemToObject(j, "turns", arr), arr = NULL;
        cJSON *l = cJSON_AddObjectToObject(j, "last_turn");
        cJSON_AddNumberToObject(l, "context_tokens", last_ctx);
        if (have[0]) cJSON_AddNumberToObject(l, "ttft_session_ms", 1e3 * last[0]);
        if (have[1]) cJSON_AddNumberToObject(l, "ttft_resend_ms", 1e3 * last[1]);
        if (have[0] && have[1] && last[0] > 0) cJSON_AddNumberToObject(l, "ratio", last[1] / last[0]);
        cJSON_AddNumberToObject(j, "requests_failed", (double)(ways[0].failed + ways[1].failed));
        char *text = cJSON_Print(j);
        FILE *f = text ? fopen(o->json, "w") : NULL;
        int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        if (f && fclose(f)) ok = 0;
        free(text);
        if (!ok) fprintf(stderr, "recur_loadgen: cannot write %s: %s\n", o->json, strerror(errno)), rc = -1;
    }
    cJSON_Delete(cfg), cJSON_Delete(arr), cJSON_Delete(j);
    return rc;
}

static int run_session_turns(const opts_t *o) {
    long turns = o->session_turns, n_conv = o->total;
    size_t n = (size_t)(turns * n_conv);
    int32_t **new_ids = calloc(n, sizeof *new_ids);
    int32_t *plen = calloc(n, sizeof *plen), *olen = calloc(n, sizeof *olen);
    double *tmp = malloc((size_t)n_conv * sizeof *tmp);
    sess_way_t ways[2] = {{.name = "session", .use_session = 1}, {.name = "resend"}};
    int rc = new_ids && plen && olen && tmp ? 0 : -1;
    uint64_t s = (uint64_t)o->seed * 0x2545f4914f6cdd1dull + 7;
    for (size_t i = 0; i < n && !rc; i++) {   /* the same new prompts for both ways */
        plen[i] = draw(&o->plen, &s);
        olen[i] = draw(&o->olen, &s);
        if (!(new_ids[i] = malloc((size_t)plen[i] * sizeof **new_ids))) rc = -1;
        for (int32_t k = 0; !rc && k < plen[i]; k++)
            new_ids[i][k] = (int32_t)(o->tok_lo + (long)(rng_next(&s) % (uint64_t)(o->tok_hi - o->tok_lo)));
    }
    for (int k = 0; k < 2 && !rc; k++) {
        sess_way_t *w = &ways[k];
        if ((k == 0 && !strcmp(o->session_mode, "resend")) || (k == 1 && !strcmp(o->session_mode, "session"))) continue;
        w->ttft = malloc(n * sizeof *w->ttft);
        w->prompt_tokens = calloc(n, sizeof *w->prompt_tokens);
        w->cached_tokens = calloc(n, sizeof *w->cached_tokens);
        w->completion_tokens = calloc(n, sizeof *w->completion_tokens);
        if (!w->ttft || !w->prompt_tokens || !w->cached_tokens || !w->completion_tokens) { rc = -1; break; }
        rc = run_session_way(o, w, n_conv, (const int32_t *const *)new_ids, plen, olen, (uint64_t)o->seed * 31 + 3);
    }
    int have[2] = {ways[0].ttft != NULL, ways[1].ttft != NULL};
    if (!rc) rc = report_session_turns(o, ways, have, n_conv, tmp);
    if (!rc && (ways[0].failed || ways[1].failed)) rc = 1;
    for (size_t i = 0; new_ids && i < n; i++) free(new_ids[i]);
    free(new_ids), free(plen), free(olen), free(tmp);
    for (int k = 0; k < 2; k++)
        free(ways[k].ttft), free(ways[k].prompt_tokens), free(ways[k].cached_tokens), free(ways[k].completion_tokens);
    return rc;
}

/* --------------------------------------------------------------- main */

static void usage(void) {
    fprintf(stderr,
            "usage: recur_loadgen (--connect ENDPOINT | --http http://HOST:PORT) [--concurrency N] [--requests M]\n"
            "                     [--prompt-len DIST] [--output-len DIST] [--max-tokens T] [--prompt-words W]\n"
            "                     [--token-range LO:HI] [--seed S] [--temperature X] [--eos] [--timeout-ms MS]\n"
            "                     [--warmup N] [--gpu-mem-ms MS] [--json FILE] [--label TEXT] [--api-key KEY]\n"
            "                     [--model NAME] [--session-turns N [--session-mode both|session|resend]]\n"
            "  DIST: N | uniform:LO:HI | normal:MEAN:SD[:MIN:MAX] | lognormal:MEDIAN:SIGMA[:MIN:MAX] (tokens).\n"
            "  --prompt-len: prompts of that many random token ids in --token-range (default 33:127);\n"
            "  without it, text prompts of --prompt-words words. --max-tokens T = --output-len T.\n"
            "  --session-turns N (HTTP): --requests conversations of N turns, each turn --prompt-len new tokens and\n"
            "  --output-len generated; turn t of every conversation is one wave. With a session (only the new\n"
            "  tokens sent, session_id) and/or resending the whole history (no session); prints TTFT per turn\n"
            "  for both and their ratio; --json has the per-turn figures.\n");
}

int main(int argc, char **argv) {
    opts_t o = {.conc = 16, .total = 64, .words = 16, .timeout_ms = 120000, .tok_lo = 33, .tok_hi = 127, .seed = 1,
                .session_mode = "both"};
    parse_dist("--output-len", "128", &o.olen);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--eos")) { o.eos = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        int rc = 0;
        long x;
        if (!v) rc = -1, fprintf(stderr, "recur_loadgen: '%s' needs a value\n", a);
        else if (!strcmp(a, "--connect")) o.connect = v;
        else if (!strcmp(a, "--http")) o.http = v;
        else if (!strcmp(a, "--json")) o.json = v;
        else if (!strcmp(a, "--label")) o.label = v;
        else if (!strcmp(a, "--api-key")) o.api_key = v;
        else if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--concurrency")) rc = arg_long(a, v, 1, 65536, &o.conc);
        else if (!strcmp(a, "--requests")) rc = arg_long(a, v, 1, 100000000, &o.total);
        else if (!strcmp(a, "--max-tokens") || !strcmp(a, "--output-len")) rc = parse_dist(a, v, &o.olen);
        else if (!strcmp(a, "--prompt-len")) rc = parse_dist(a, v, &o.plen), o.have_plen = 1;
        else if (!strcmp(a, "--prompt-words")) rc = arg_long(a, v, 0, 100000, &o.words);
        else if (!strcmp(a, "--timeout-ms")) rc = arg_long(a, v, 1, 1 << 30, &o.timeout_ms);
        else if (!strcmp(a, "--warmup")) rc = arg_long(a, v, 0, 1000000, &o.warmup);
        else if (!strcmp(a, "--gpu-mem-ms")) rc = arg_long(a, v, 0, 60000, &o.gpu_mem_ms);
        else if (!strcmp(a, "--session-turns")) rc = arg_long(a, v, 1, 100000, &o.session_turns);
        else if (!strcmp(a, "--session-mode")) {
            o.session_mode = v;
            if (strcmp(v, "both") && strcmp(v, "session") && strcmp(v, "resend"))
                rc = -1, fprintf(stderr, "recur_loadgen: --session-mode expects both, session or resend\n");
        }
        else if (!strcmp(a, "--seed")) rc = arg_long(a, v, 0, 1L << 40, &x), o.seed = (unsigned long long)x;
        else if (!strcmp(a, "--token-range")) {
            char *end;
            o.tok_lo = strtol(v, &end, 10);
            o.tok_hi = *end == ':' ? strtol(end + 1, &end, 10) : -1;
            if (*end || o.tok_lo < 0 || o.tok_hi <= o.tok_lo || o.tok_hi > (1L << 30))
                rc = -1, fprintf(stderr, "recur_loadgen: --token-range expects LO:HI with 0 <= LO < HI\n");
        } else if (!strcmp(a, "--temperature")) {
            char *end;
            o.temperature = strtod(v, &end);
            if (*end || end == v || !(o.temperature >= 0 && o.temperature <= 100))
                rc = -1, fprintf(stderr, "recur_loadgen: --temperature expects a number in [0, 100]\n");
        } else rc = -1, fprintf(stderr, "recur_loadgen: unknown option '%s'\n", a);
        if (rc) {
            usage();
            return 2;
        }
    }
    if (!o.connect == !o.http) {
        fprintf(stderr, "recur_loadgen: give one of --connect (protobuf API) and --http (HTTP API)\n");
        usage();
        return 2;
    }
    if (o.session_turns && (!o.http || !o.have_plen)) {
        fprintf(stderr, "recur_loadgen: --session-turns needs --http and --prompt-len (the new tokens of each turn)\n");
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    lg_run_t r;
    if (o.warmup > 0) {
        if (make_plan(&o, o.warmup, 1, &r)) {
            fprintf(stderr, "recur_loadgen: out of memory\n");
            return 1;
        }
        r.quiet = 1;
        int rc = o.http ? lg_run_http(&r, o.http) : lg_run_zmq(&r, o.connect);
        long bad = 0;
        for (long i = 0; i < r.n; i++) bad += r.reqs[i].state != LG_OK;
        if (rc || bad) fprintf(stderr, "recur_loadgen: warm-up: %ld of %ld requests failed\n", bad, r.n);
        free_plan(&r);
        if (rc) return 1;
    }
    if (o.session_turns) {
        int rc = run_session_turns(&o);
        if (rc < 0) fprintf(stderr, "recur_loadgen: the session-turns run failed (see above)\n");
        return rc ? 1 : 0;
    }
    if (make_plan(&o, o.total, 0, &r)) {
        fprintf(stderr, "recur_loadgen: out of memory\n");
        return 1;
    }
    gpu_sampler_t g;
    int sampling = 0;
    if (o.gpu_mem_ms > 0) {
        if (sampler_start(&g, o.gpu_mem_ms)) fprintf(stderr, "recur_loadgen: cannot start nvidia-smi: %s\n", strerror(errno));
        else sampling = 1;
    }
    int rc = o.http ? lg_run_http(&r, o.http) : lg_run_zmq(&r, o.connect);
    if (sampling) {
        sampler_stop(&g);
        if (!g.n_gpus) fprintf(stderr, "recur_loadgen: nvidia-smi gave no memory samples\n");
    }
    stats_t s;
    int bad = rc != 0;
    if (compute(&r, &s)) {
        fprintf(stderr, "recur_loadgen: out of memory\n");
        bad = 1;
    } else {
        print_table(&o, &r, &s, sampling ? &g : NULL);
        if (o.json && write_json(&o, &r, &s, sampling ? &g : NULL)) bad = 1;
        if (s.failed) bad = 1;
    }
    free(s.ttft), free(s.tpot), free(s.e2e);
    free_plan(&r);
    return bad ? 1 : 0;
}
