/* recur_serve.c: `recur serve` (the coordinator in this process, the worker group as a
 * child process) and `recur client` (a small streaming client of the ZeroMQ API).
 *
 * serve: binds the client and worker endpoints, launches `recur worker --connect <worker
 * endpoint>` (or `mpirun -np T*P recur worker --tp T --pp P ...`, the launcher taken from
 * $RECUR_MPIRUN, default "mpirun --oversubscribe --bind-to none") in its own process group
 * (so a terminal's Ctrl-C reaches only serve, which then shuts the workers down in order),
 * prints "recur serve: listening on ENDPOINT" once the workers are ready, and runs the
 * coordinator loop. SIGINT/SIGTERM: Shutdown to the workers, wait for the child (10 s, then
 * SIGKILL), exit 0. The child exiting on its own: every request ends with an error, serve
 * exits 1. If serve itself is killed (SIGKILL), the workers exit by their idle limit. */
#include "recur_serve.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_coord.h"
#include "recur_dtype.h"
#include "recur_log.h"
#include "recur_msgsock.h"
#include "recur_proto.h"
#include "recur_tokenizer_pick.h"

/* Signals seen (SIGINT/SIGTERM): the first starts a graceful drain, the second stops at
 * once. Written by the handler only. */
static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    if (g_stop < 2) g_stop++;
}

static int arg_long(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "recur: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

typedef struct serve_state {
    pid_t child;        /* -1: external workers (started by the user's mpirun) */
    int child_status;   /* -1 while it runs */
    int announced;
    long drain_s;       /* the grace period of a drain */
    double drain_deadline;   /* 0: not draining */
} serve_state_t;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int serve_tick(recur_coord_t *c, void *ud) {
    serve_state_t *st = ud;
    if (g_stop >= 2) return 1;   /* a second signal: stop now */
    if (g_stop == 1) {
        if (st->drain_deadline == 0) {
            st->drain_deadline = mono_s() + (double)st->drain_s;
            recur_coord_drain(c);
            fprintf(stderr, "recur serve: draining: %d requests in flight, up to %ld s (a second signal stops now)\n",
                    recur_coord_live_requests(c), st->drain_s);
        }
        if (recur_coord_live_requests(c) == 0) return 1;
        if (mono_s() >= st->drain_deadline) {
            fprintf(stderr, "recur serve: drain deadline passed with %d requests in flight: stopping\n",
                    recur_coord_live_requests(c));
            return 1;
        }
    }
    int status;
    if (st->child > 0 && waitpid(st->child, &status, WNOHANG) == st->child) {
        st->child_status = status;
        return 1;
    }
    if (!st->announced && recur_coord_ready(c)) {
        printf("recur serve: listening on %s\n", recur_coord_client_endpoint(c));
        fflush(stdout);
        st->announced = 1;
    }
    return 0;
}

static void serve_usage(void) {
    fprintf(stderr,
            "usage: recur serve --model PATH [--backend cpu|cuda] [--weights f32|bf16|int8|fp8] [--tp T --pp P]\n"
            "                   [--bind tcp://127.0.0.1:PORT]\n"
            "                   [--worker-bind tcp://127.0.0.1:PORT] [--slots N] [--max-batch N] [--token-budget N]\n"
            "                   [--max-queue N] [--queue-timeout-ms N] [--max-prompt N] [--max-tokens N]\n"
            "                   [--tokenizer PATH] [--worker-timeout-ms N] [--log-level L]\n"
            "                   [--external-workers] [--drain-timeout-s N]\n"
            "  Without --model the bundled tiny RWKV-7 is served on the CPU.\n"
            "  --external-workers: start no worker group; the workers are launched separately (multi-node:\n"
            "    mpirun --hostfile H -np T*P recur worker --connect <the printed worker endpoint> --model PATH\n"
            "    --tp T --pp P [--backend cuda]); bind --worker-bind to an address the nodes can reach.\n"
            "  SIGTERM/SIGINT: drain (no new requests, Health NOT_SERVING; the requests in flight finish)\n"
            "    for up to --drain-timeout-s (default 30), then stop the workers; a second signal stops at once.\n");
}

int recur_serve_main(int argc, char **argv, int first) {
    recur_coord_config_t cfg = recur_coord_default_config();
    const char *model = NULL, *backend = "cpu", *slots_s = "64", *weights = NULL;
    char bind_c[256] = "tcp://127.0.0.1:0", bind_w[256] = "tcp://127.0.0.1:0";
    long tp = 1, pp = 1, v = 0, drain_s = 30;
    int external = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--external-workers")) {
            external = 1;
            continue;
        }
        if (!val) {
            fprintf(stderr, "recur serve: '%s' needs a value\n", a);
            serve_usage();
            return 2;
        }
        i++;
        int rc = 0;
        if (!strcmp(a, "--model")) model = val;
        else if (!strcmp(a, "--backend")) backend = val;
        else if (!strcmp(a, "--weights")) { /* passed on to the workers */
            recur_dtype_t wd;
            weights = val;
            if (recur_dtype_parse_weights(val, &wd)) rc = -1, fprintf(stderr, "recur serve: --weights f32|bf16|int8|fp8\n");
        }
        else if (!strcmp(a, "--tokenizer")) cfg.tokenizer_path = val;
        else if (!strcmp(a, "--bind")) snprintf(bind_c, sizeof bind_c, "%s", val);
        else if (!strcmp(a, "--worker-bind")) snprintf(bind_w, sizeof bind_w, "%s", val);
        else if (!strcmp(a, "--tp")) rc = arg_long(a, val, 1, 1024, &tp);
        else if (!strcmp(a, "--pp")) rc = arg_long(a, val, 1, 1024, &pp);
        else if (!strcmp(a, "--slots")) { rc = arg_long(a, val, 2, 1 << 20, &v); slots_s = val; cfg.sched.n_slots = (int32_t)v; }
        else if (!strcmp(a, "--max-batch")) { rc = arg_long(a, val, 1, 1 << 20, &v); cfg.sched.max_batch = (int32_t)v; }
        else if (!strcmp(a, "--token-budget")) { rc = arg_long(a, val, 1, 1 << 24, &v); cfg.sched.token_budget = (int32_t)v; }
        else if (!strcmp(a, "--max-queue")) { rc = arg_long(a, val, 1, 1 << 24, &v); cfg.sched.max_queue = (int32_t)v; }
        else if (!strcmp(a, "--queue-timeout-ms")) { rc = arg_long(a, val, 0, INT32_MAX, &v); cfg.sched.queue_timeout_ms = (uint32_t)v; }
        else if (!strcmp(a, "--max-prompt")) { rc = arg_long(a, val, 0, INT32_MAX, &v); cfg.sched.max_prompt = (int32_t)v; }
        else if (!strcmp(a, "--max-tokens")) { rc = arg_long(a, val, 1, INT32_MAX, &v); cfg.default_max_tokens = (int32_t)v; }
        else if (!strcmp(a, "--worker-timeout-ms")) { rc = arg_long(a, val, 1, INT32_MAX, &v); cfg.worker_timeout_ms = (int32_t)v; }
        else if (!strcmp(a, "--drain-timeout-s")) rc = arg_long(a, val, 0, 24 * 3600, &drain_s);
        else if (!strcmp(a, "--log-level")) {
            int l = recur_log_level_parse(val);
            if (l < 0) rc = -1, fprintf(stderr, "recur serve: bad --log-level '%s'\n", val);
            else recur_log_set_level((recur_log_level_t)l);
        } else {
            fprintf(stderr, "recur serve: unknown option '%s'\n", a);
            rc = -1;
        }
        if (rc) {
            serve_usage();
            return 2;
        }
    }
    char bundled[PATH_MAX + 64];
    if (!model) {   /* the README's demo: the bundled tiny model */
        if (recur_bundled_path(RECUR_BUNDLED_MODEL, bundled, sizeof bundled) != 0) {
            fprintf(stderr, "recur serve: the bundled model %s was not found (set RECUR_MODELS_DIR or pass --model)\n",
                    RECUR_BUNDLED_MODEL);
            return 2;
        }
        model = bundled;
    }
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
        fprintf(stderr, "recur serve: --backend expects cpu or cuda, got '%s'\n", backend);
        return 2;
    }
    cfg.sched.n_slots = (int32_t)strtol(slots_s, NULL, 10);   /* the worker's pool: --slots, default 64 */
    cfg.client_bind = bind_c, cfg.worker_bind = bind_w;
    cfg.model_path = model;
    cfg.tp = (int32_t)tp, cfg.pp = (int32_t)pp;

    void *zctx = zmq_ctx_new();
    recur_coord_t *c = NULL;
    if (!zctx || recur_coord_create(zctx, &cfg, &c) != RECUR_OK) {
        fprintf(stderr, "recur serve: cannot bind %s / %s\n", bind_c, bind_w);
        if (zctx) zmq_ctx_term(zctx);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the worker group's command line */
    char self[PATH_MAX], tps[32], pps[32], idle[32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) snprintf(self, sizeof self, "%s", argv[0]);
    else self[n] = '\0';
    snprintf(tps, sizeof tps, "%ld", tp);
    snprintf(pps, sizeof pps, "%ld", pp);
    snprintf(idle, sizeof idle, "%d", cfg.worker_timeout_ms > 10000 ? cfg.worker_timeout_ms : 10000);
    char *args[96];
    int k = 0;
    char launcher[1024], np[32];
    if (tp * pp > 1) {
        const char *env = getenv("RECUR_MPIRUN");
        snprintf(launcher, sizeof launcher, "%s", env && *env ? env : "mpirun --oversubscribe --bind-to none");
        for (char *t = strtok(launcher, " "); t && k < 60; t = strtok(NULL, " ")) args[k++] = t;
        snprintf(np, sizeof np, "%ld", tp * pp);
        args[k++] = "-np", args[k++] = np;
    }
    const char *tail[] = {self, "worker", "--connect", recur_coord_worker_endpoint(c), "--model", model,
                          "--backend", backend, "--slots", slots_s, "--tp", tps, "--pp", pps, "--idle-limit-ms", idle};
    for (size_t i = 0; i < sizeof tail / sizeof *tail; i++) args[k++] = (char *)tail[i];
    if (weights) args[k++] = "--weights", args[k++] = (char *)weights;
    args[k] = NULL;
    if (geteuid() == 0) {   /* Open MPI refuses root unless told */
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    }
    serve_state_t st = {.child_status = -1, .drain_s = drain_s};
    if (external) {
        st.child = -1;
        printf("recur serve: workers connect to %s\n", recur_coord_worker_endpoint(c));
        fflush(stdout);
        recur_log_info("recur serve: waiting for an external worker group (tp %ld x pp %ld) on %s", tp, pp,
                       recur_coord_worker_endpoint(c));
    } else {
        st.child = fork();
    }
    if (!external && st.child < 0) {
        fprintf(stderr, "recur serve: fork: %s\n", strerror(errno));
        recur_coord_free(c);
        zmq_ctx_term(zctx);
        return 1;
    }
    if (!external && st.child == 0) {
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execvp(args[0], args);
        fprintf(stderr, "recur serve: cannot run %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    if (!external) {
        setpgid(st.child, st.child);
        recur_log_info("recur serve: worker group pid %d: %s ...", (int)st.child, args[0]);
    }

    recur_status_t s = recur_coord_run(c, serve_tick, &st);
    int rc = 0;
    if (st.child_status >= 0) {
        int es = st.child_status;
        fprintf(stderr, "recur serve: the worker group exited (%s %d)\n", WIFEXITED(es) ? "status" : "signal",
                WIFEXITED(es) ? WEXITSTATUS(es) : WTERMSIG(es));
        recur_coord_fail_all(c, "the worker group exited");
        rc = 1;
    } else {
        if (s != RECUR_OK) rc = 1;
        recur_coord_shutdown_workers(c, g_stop ? "recur serve got a signal" : "recur serve is stopping");
        /* wait for the group, the sockets still open so the Shutdown goes out; external
         * workers are not ours to wait for: give the Shutdown a moment to leave */
        int status = 0, done = external;
        if (external) usleep(300000);
        for (int i = 0; i < 1000 && !done; i++) {
            if (waitpid(st.child, &status, WNOHANG) == st.child) done = 1;
            else usleep(10000);
        }
        if (!done) {
            fprintf(stderr, "recur serve: the worker group did not stop within 10 s: killing it\n");
            kill(-st.child, SIGKILL);
            waitpid(st.child, &status, 0);
            rc = 1;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "recur serve: the worker group exited with %d\n",
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
    }
    recur_coord_stats_t cs;
    recur_coord_get_stats(c, &cs);
    fprintf(stderr,
            "recur serve: %llu requests, %llu steps (max batch %d, mean %.1f), %llu tokens out; coordinator loop "
            "%.1f us per step outside waiting, %.1f us per step on the critical path (result in -> next plan out) "
            "of a %.1f us step period (%.2f%%); worker: round trip %.1f us, its own time %.1f us (forward %.1f us)\n",
            (unsigned long long)cs.requests, (unsigned long long)cs.steps, (int)cs.max_batch_seen,
            cs.steps ? (double)cs.seqs / (double)cs.steps : 0.0, (unsigned long long)cs.tokens_out,
            cs.busy_us_per_step, cs.critical_us_per_step, cs.period_us_per_step,
            cs.period_us_per_step > 0 ? 100.0 * cs.critical_us_per_step / cs.period_us_per_step : 0.0,
            cs.round_trip_us, cs.worker_total_us, cs.worker_forward_us);
    recur_coord_free(c);
    zmq_ctx_term(zctx);
    return rc;
}

/* ------------------------------------------------------------------ client */

static void client_usage(void) {
    fprintf(stderr,
            "usage: recur client --connect ENDPOINT (--prompt TEXT | --health) [--max-tokens N] [--temperature T]\n"
            "                    [--seed S] [--stop STR] [--cancel-after N] [--timeout-ms MS]\n");
}

static recur_status_t client_send(recur_msgsock_t *s, recur_api_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t st = recur_msgsock_send_api(s, NULL, env, &err);
    if (st != RECUR_OK) fprintf(stderr, "recur client: cannot send: %s\n", err.msg);
    return st;
}

int recur_client_main(int argc, char **argv, int first) {
    const char *connect = NULL, *prompt = NULL, *stop = NULL;
    long max_tokens = -1, cancel_after = -1, timeout_ms = 60000;
    double temperature = -1;
    unsigned long long seed = 0;
    int has_seed = 0, health = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--health")) { health = 1; continue; }
        const char *val = i + 1 < argc ? argv[++i] : NULL;
        int rc = 0;
        if (!val) rc = -1, fprintf(stderr, "recur client: '%s' needs a value\n", a);
        else if (!strcmp(a, "--connect")) connect = val;
        else if (!strcmp(a, "--prompt")) prompt = val;
        else if (!strcmp(a, "--stop")) stop = val;
        else if (!strcmp(a, "--max-tokens")) rc = arg_long(a, val, 1, INT32_MAX, &max_tokens);
        else if (!strcmp(a, "--cancel-after")) rc = arg_long(a, val, 0, INT32_MAX, &cancel_after);
        else if (!strcmp(a, "--timeout-ms")) rc = arg_long(a, val, 1, INT32_MAX, &timeout_ms);
        else if (!strcmp(a, "--temperature")) {
            char *end;
            temperature = strtod(val, &end);
            if (*end || end == val || !(temperature >= 0 && temperature <= 100))
                rc = -1, fprintf(stderr, "recur client: --temperature expects a number in [0, 100]\n");
        } else if (!strcmp(a, "--seed")) {
            char *end;
            seed = strtoull(val, &end, 10), has_seed = 1;
            if (*end || end == val || val[0] == '-') rc = -1, fprintf(stderr, "recur client: bad --seed\n");
        } else {
            fprintf(stderr, "recur client: unknown option '%s'\n", a);
            rc = -1;
        }
        if (rc) {
            client_usage();
            return 2;
        }
    }
    if (!connect || (!prompt && !health)) {
        fprintf(stderr, "recur client: --connect and --prompt (or --health) are required\n");
        client_usage();
        return 2;
    }
    void *zctx = zmq_ctx_new();
    recur_msgsock_t *s = NULL;
    if (!zctx || recur_msgsock_connect(zctx, connect, NULL, &s) != RECUR_OK) {
        fprintf(stderr, "recur client: cannot connect to %s\n", connect);
        if (zctx) zmq_ctx_term(zctx);
        return 1;
    }
    char rid[64];
    snprintf(rid, sizeof rid, "client-%d", (int)getpid());
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    Recur__Api__HealthRequest hr = RECUR__API__HEALTH_REQUEST__INIT;
    Recur__Api__GenerateRequest g = RECUR__API__GENERATE_REQUEST__INIT;
    Recur__Api__SamplingParams sp = RECUR__API__SAMPLING_PARAMS__INIT;
    char *stops[1] = {(char *)stop};
    if (health) {
        hr.request_id = rid;
        env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH;
        env.health = &hr;
    } else {
        g.request_id = rid;
        g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT;
        g.text = (char *)prompt;
        if (max_tokens > 0) sp.has_max_tokens = 1, sp.max_tokens = (uint32_t)max_tokens;
        if (temperature >= 0) sp.has_temperature = 1, sp.temperature = (float)temperature;
        if (has_seed) sp.has_seed = 1, sp.seed = seed;
        if (stop) sp.n_stop = 1, sp.stop = stops;
        g.sampling = &sp;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
        env.generate = &g;
    }
    int rc = 1;
    long n_tokens = 0;
    if (client_send(s, &env) != RECUR_OK) goto done;
    for (;;) {
        recur_api_envelope_t *r = NULL;
        recur_proto_error_t err;
        recur_status_t st = recur_msgsock_recv_api(s, (int32_t)timeout_ms, NULL, &r, &err);
        if (st == RECUR_E_TIMEOUT) {
            fprintf(stderr, "recur client: no answer from %s within %ld ms\n", connect, timeout_ms);
            goto done;
        }
        if (st != RECUR_OK) {
            fprintf(stderr, "recur client: bad answer: %s\n", err.msg);
            goto done;
        }
        if (r->body_case == RECUR__API__ENVELOPE__BODY_ERROR) {
            const Recur__Api__Error *e = r->error->error;
            fprintf(stderr, "recur client: error %d: %s\n", e ? (int)e->code : 0, e && e->message ? e->message : "");
            recur_proto_api_free(r);
            goto done;
        }
        if (r->body_case == RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE) {
            const Recur__Api__HealthResponse *h = r->health_response;
            int ok = h->status == RECUR__API__SERVING_STATUS__SERVING_STATUS_SERVING;
            printf("%s%s%s active %u queued %u free_slots %u\n", ok ? "serving" : "not serving",
                   h->detail ? ": " : "", h->detail ? h->detail : "", h->active_requests, h->queued_requests,
                   h->free_slots);
            rc = ok ? 0 : 1;
            recur_proto_api_free(r);
            goto done;
        }
        if (r->body_case == RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE) {
            fprintf(stderr, "recur client: cancel: %s\n", r->cancel_response->found ? "found" : "not found");
            recur_proto_api_free(r);
            continue;
        }
        if (r->body_case != RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE) {
            recur_proto_api_free(r);
            continue;
        }
        const Recur__Api__GenerateResponse *gr = r->generate_response;
        for (size_t i = 0; i < gr->n_tokens; i++) fputs(gr->tokens[i]->text ? gr->tokens[i]->text : "", stdout);
        fflush(stdout);
        n_tokens += (long)gr->n_tokens;
        if (gr->final) {
            const Recur__Api__GenerateFinal *f = gr->final;
            putchar('\n');
            const char *why = f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_STOP ? "stop"
                              : f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_LENGTH ? "length"
                              : f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_CANCELLED ? "cancelled"
                                                                                                      : "error";
            fprintf(stderr, "recur client: finished: %s; prompt %u tokens, completion %u tokens%s%s\n", why,
                    f->usage ? f->usage->prompt_tokens : 0, f->usage ? f->usage->completion_tokens : 0,
                    f->error ? "; " : "", f->error && f->error->message ? f->error->message : "");
            rc = f->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_ERROR ? 1 : 0;
            recur_proto_api_free(r);
            goto done;
        }
        recur_proto_api_free(r);
        if (cancel_after >= 0 && n_tokens >= cancel_after) {
            Recur__Api__CancelRequest cq = RECUR__API__CANCEL_REQUEST__INIT;
            cq.request_id = rid;
            recur_api_envelope_t ce = RECUR__API__ENVELOPE__INIT;
            ce.body_case = RECUR__API__ENVELOPE__BODY_CANCEL;
            ce.cancel = &cq;
            if (client_send(s, &ce) != RECUR_OK) goto done;
            cancel_after = -1;
        }
    }
done:
    recur_msgsock_close(s);
    zmq_ctx_term(zctx);
    return rc;
}
