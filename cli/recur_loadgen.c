/* recur_loadgen.c: `recur_loadgen`, a load generator for `recur serve`'s protobuf API.
 *
 * One process, one thread, one DEALER socket (common/recur_client.h) keeps --concurrency
 * Generate requests in flight until --requests have finished, and prints a table: requests,
 * errors, tokens out, tokens/s, time to first token and inter-token latency percentiles.
 * It links only the client library (no CUDA), so it stays small where `recur client` per
 * stream would cost a process each.
 *
 *   recur_loadgen --connect tcp://127.0.0.1:5555 --concurrency 256 --requests 1024 \
 *                 --max-tokens 200 --prompt-words 32
 *
 * Prompts: "Request <i>:" followed by --prompt-words words of a fixed text, so every
 * request differs and has about the same length. --ignore-eos is on unless --eos is given,
 * so every request produces --max-tokens tokens (a fixed amount of work). Greedy by default
 * (--temperature 0). Exit 1 when any request failed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "recur_client.h"

typedef struct lg_req {
    double t_start, t_first, t_last;
    int32_t tokens;
    int active;
} lg_req_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
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

static void usage(void) {
    fprintf(stderr, "usage: recur_loadgen --connect ENDPOINT [--concurrency N] [--requests M] [--max-tokens T]\n"
                    "                     [--prompt-words W] [--temperature X] [--eos] [--timeout-ms MS]\n");
}

static const char *k_words[] = {"the", "river", "runs", "past", "an", "old", "mill", "where", "children",
                                "play", "under", "tall", "green", "trees", "and", "birds", "sing"};

int main(int argc, char **argv) {
    const char *connect = NULL;
    long conc = 16, total = 64, max_tokens = 128, words = 16, timeout_ms = 120000;
    double temperature = 0.0;
    int eos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--eos")) { eos = 1; continue; }
        if (!strcmp(a, "--help")) { usage(); return 0; }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        int rc = 0;
        if (!v) rc = -1, fprintf(stderr, "recur_loadgen: '%s' needs a value\n", a);
        else if (!strcmp(a, "--connect")) connect = v;
        else if (!strcmp(a, "--concurrency")) rc = arg_long(a, v, 1, 65536, &conc);
        else if (!strcmp(a, "--requests")) rc = arg_long(a, v, 1, 100000000, &total);
        else if (!strcmp(a, "--max-tokens")) rc = arg_long(a, v, 1, 1 << 24, &max_tokens);
        else if (!strcmp(a, "--prompt-words")) rc = arg_long(a, v, 0, 100000, &words);
        else if (!strcmp(a, "--timeout-ms")) rc = arg_long(a, v, 1, 1 << 30, &timeout_ms);
        else if (!strcmp(a, "--temperature")) {
            char *end;
            temperature = strtod(v, &end);
            if (*end || end == v || temperature < 0) rc = -1, fprintf(stderr, "recur_loadgen: bad --temperature\n");
        } else rc = -1, fprintf(stderr, "recur_loadgen: unknown option '%s'\n", a);
        if (rc) {
            usage();
            return 2;
        }
    }
    if (!connect) {
        usage();
        return 2;
    }
    if (conc > total) conc = total;
    lg_req_t *reqs = calloc((size_t)total, sizeof *reqs);
    double *ttft = calloc((size_t)total, sizeof *ttft), *e2e = calloc((size_t)total, sizeof *e2e);
    size_t cap_itl = (size_t)total * 4, n_itl = 0;
    double *itl = malloc(cap_itl * sizeof *itl);
    size_t plen = 32 + (size_t)words * 10;
    char *prompt = malloc(plen);
    void *zctx = zmq_ctx_new();
    recur_client_t *c = NULL;
    if (!reqs || !ttft || !e2e || !itl || !prompt || !zctx || recur_client_connect(zctx, connect, &c) != RECUR_OK) {
        fprintf(stderr, "recur_loadgen: cannot start (memory or %s)\n", connect);
        return 1;
    }
    recur_client_params_t p = recur_client_default_params();
    p.max_tokens = (int32_t)max_tokens, p.temperature = (float)temperature, p.ignore_eos = !eos;
    long next = 0, done = 0, errors = 0, in_flight = 0;
    uint64_t tokens_out = 0, prompt_tokens = 0;
    double t0 = now_s();
    int rc = 0;
    char rid[32];
    while (done < total) {
        while (in_flight < conc && next < total) {
            int off = snprintf(prompt, plen, "Request %ld:", next);
            for (long w = 0; w < words; w++)
                off += snprintf(prompt + off, plen - (size_t)off, " %s", k_words[(w + next) % 17]);
            snprintf(rid, sizeof rid, "lg-%ld", next);
            reqs[next].t_start = now_s(), reqs[next].active = 1;
            if (recur_client_generate(c, rid, prompt, NULL, 0, &p) != RECUR_OK) {
                fprintf(stderr, "recur_loadgen: send failed: %s\n", recur_client_error(c));
                rc = 1;
                goto out;
            }
            next++, in_flight++;
        }
        recur_client_event_t ev;
        recur_status_t s = recur_client_next(c, (int32_t)timeout_ms, &ev);
        if (s != RECUR_OK) {
            fprintf(stderr, "recur_loadgen: %s (%ld of %ld requests done)\n", recur_client_error(c), done, total);
            rc = 1;
            goto out;
        }
        long i = strncmp(ev.request_id, "lg-", 3) ? -1 : strtol(ev.request_id + 3, NULL, 10);
        if (i < 0 || i >= next || !reqs[i].active) continue;
        lg_req_t *r = &reqs[i];
        double t = now_s();
        if (ev.kind == RECUR_CLIENT_EV_ERROR) {
            if (errors++ < 5) fprintf(stderr, "recur_loadgen: request %ld refused: %s\n", i, ev.message);
            r->active = 0, done++, in_flight--;
            continue;
        }
        if (ev.kind != RECUR_CLIENT_EV_TOKENS && ev.kind != RECUR_CLIENT_EV_FINAL) continue;
        if (ev.n_tokens > 0) {
            if (r->tokens == 0) r->t_first = t;
            else {
                if (n_itl == cap_itl) {
                    double *q = realloc(itl, 2 * cap_itl * sizeof *q);
                    if (!q) { rc = 1; goto out; }
                    itl = q, cap_itl *= 2;
                }
                itl[n_itl++] = (t - r->t_last) / ev.n_tokens;
            }
            r->t_last = t;
            r->tokens += ev.n_tokens;
        }
        if (ev.kind == RECUR_CLIENT_EV_FINAL) {
            if (ev.finish == RECUR_CLIENT_FINISH_ERROR || ev.finish == RECUR_CLIENT_FINISH_CANCELLED) {
                if (errors++ < 5) fprintf(stderr, "recur_loadgen: request %ld ended %s: %s\n", i,
                                          recur_client_finish_str(ev.finish), ev.message);
            } else {
                ttft[done - errors] = r->t_first - r->t_start;
                e2e[done - errors] = t - r->t_start;
            }
            tokens_out += ev.completion_tokens;
            prompt_tokens += ev.prompt_tokens;
            r->active = 0, done++, in_flight--;
        }
    }
out:;
    double wall = now_s() - t0;
    size_t n_ok = (size_t)(done - errors);
    qsort(ttft, n_ok, sizeof *ttft, cmp_double);
    qsort(e2e, n_ok, sizeof *e2e, cmp_double);
    qsort(itl, n_itl, sizeof *itl, cmp_double);
    printf("| what | value |\n|---|---|\n");
    printf("| requests done (errors) | %ld (%ld) |\n", done, errors);
    printf("| concurrency | %ld |\n", conc);
    printf("| prompt tokens / completion tokens | %llu / %llu |\n", (unsigned long long)prompt_tokens,
           (unsigned long long)tokens_out);
    printf("| wall time | %.2f s |\n", wall);
    printf("| completion tokens/s | %.1f |\n", wall > 0 ? (double)tokens_out / wall : 0.0);
    printf("| requests/s | %.2f |\n", wall > 0 ? (double)done / wall : 0.0);
    printf("| TTFT p50 / p90 / p99 | %.1f / %.1f / %.1f ms |\n", 1e3 * pct(ttft, n_ok, 0.5), 1e3 * pct(ttft, n_ok, 0.9),
           1e3 * pct(ttft, n_ok, 0.99));
    printf("| inter-token p50 / p90 / p99 | %.2f / %.2f / %.2f ms |\n", 1e3 * pct(itl, n_itl, 0.5),
           1e3 * pct(itl, n_itl, 0.9), 1e3 * pct(itl, n_itl, 0.99));
    printf("| request latency p50 / p99 | %.1f / %.1f ms |\n", 1e3 * pct(e2e, n_ok, 0.5), 1e3 * pct(e2e, n_ok, 0.99));
    recur_client_close(c);
    zmq_ctx_term(zctx);
    free(reqs), free(ttft), free(e2e), free(itl), free(prompt);
    return rc || errors ? 1 : 0;
}
