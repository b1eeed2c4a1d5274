/* bench_coord.c: the coordinator's own cost per step at batch 256, end to end through its
 * sockets, with the model replaced by a fake worker that answers every StepPlan at once.
 *
 * Three threads, real ZeroMQ over loopback TCP, the real coordinator loop (coordinator/
 * recur_coord.h) and the bundled World tokenizer (65,536 tokens, as the 7B RWKV-7):
 *   - this thread runs recur_coord_run;
 *   - a fake worker group (rank 0's DEALER) says Hello for an rwkv7 model with a 65,536-token
 *     vocabulary and 257 slots, then answers each StepPlan with one token per sampled row
 *     (ids drawn from 1000..20999, text of every length), after --step-us of sleep (0: at
 *     once, so the coordinator is the only cost);
 *   - a client (common/recur_client.h) keeps --batch requests of --max-tokens tokens in
 *     flight on one socket until --requests have finished.
 * Prints the coordinator's stats (recur_coord_get_stats) as a table: the critical path per
 * step (StepResult in -> next StepPlan out: what it adds to every step), everything it does
 * per step outside waiting (most of it overlaps the worker's next step), and both as a share
 * of a 16.4 ms step (the 7B RWKV-7 step at batch 256 on one H200 measured by `recur serve`,
 * docs/benchmarks.md) against the 2% budget. Not a timed assertion: exit 0 means the run
 * itself worked (every request finished with its tokens).
 *
 * Usage: bench_coord [--batch 256] [--requests 1024] [--max-tokens 64] [--step-us 0] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_client.h"
#include "recur_coord.h"
#include "recur_msgsock.h"
#include "recur_proto.h"

typedef struct bench {
    void *zctx;
    char worker_ep[256], client_ep[256];
    int batch, requests, max_tokens, step_us;
    atomic_int stop;        /* the client is done (or failed): the loop and the worker end */
    atomic_int failed;
    long tokens_seen;
} bench_t;

static void *fake_worker(void *arg) {
    bench_t *b = arg;
    recur_msgsock_params_t mp = recur_msgsock_default_params();
    mp.routing_id = "rank0";
    recur_msgsock_t *s = NULL;
    if (recur_msgsock_connect(b->zctx, b->worker_ep, &mp, &s) != RECUR_OK) {
        atomic_store(&b->failed, 1);
        atomic_store(&b->stop, 1);
        return NULL;
    }
    Recur__Internal__ModelIdentity mi = RECUR__INTERNAL__MODEL_IDENTITY__INIT;
    mi.arch = (char *)"rwkv7";
    mi.has_n_vocab = mi.has_n_layer = mi.has_n_embd = mi.has_n_head = mi.has_head_size = 1;
    mi.n_vocab = 65536, mi.n_layer = 32, mi.n_embd = 4096, mi.n_head = 64, mi.head_size = 64;
    mi.checkpoint_id = (char *)"bench_coord fake";
    Recur__Internal__Hello h = RECUR__INTERNAL__HELLO__INIT;
    h.has_rank = h.has_world_size = h.has_tp = h.has_pp = h.has_tp_rank = h.has_pp_rank = 1;
    h.world_size = h.tp = h.pp = 1;
    h.host = (char *)"localhost", h.backend = (char *)"fake";
    h.model = &mi;
    h.has_n_slots = 1, h.n_slots = 257;
    h.has_state_bytes_per_slot = 1, h.state_bytes_per_slot = 32u * (2u * 4096u * 4u + 64u * 64u * 64u * 4u);
    h.has_pid = 1, h.pid = (uint32_t)getpid();
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    recur_proto_error_t err;
    if (recur_msgsock_send_internal(s, NULL, &env, &err) != RECUR_OK) {
        fprintf(stderr, "bench_coord: the fake worker's Hello: %s\n", err.msg);
        atomic_store(&b->failed, 1);
        atomic_store(&b->stop, 1);
    }
    int32_t *tok = NULL;
    size_t cap = 0;
    uint64_t rng = 88172645463325252ull;
    while (!atomic_load(&b->stop)) {
        recur_internal_envelope_t *in = NULL;
        if (recur_msgsock_recv_internal(s, 100, NULL, &in, &err) != RECUR_OK) continue;
        if (in->body_case == RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN) {
            const Recur__Internal__StepPlan *p = in->step_plan;
            if (p->n_slot > cap) {
                cap = p->n_slot;
                tok = realloc(tok, cap * sizeof *tok);
            }
            for (size_t i = 0; i < p->n_slot; i++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                tok[i] = p->logits[i] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE ? 1000 + (int32_t)(rng % 20000)
                                                                                          : -1;
            }
            if (b->step_us) usleep((useconds_t)b->step_us);
            Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
            st.has_code = 1;
            Recur__Internal__StepResult r = RECUR__INTERNAL__STEP_RESULT__INIT;
            r.has_step = r.has_rank = 1, r.step = p->step;
            r.n_token = p->n_slot, r.token = tok;
            r.status = &st;
            recur_internal_envelope_t out = RECUR__INTERNAL__ENVELOPE__INIT;
            out.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT;
            out.step_result = &r;
            recur_msgsock_send_internal(s, NULL, &out, &err);
        } else if (in->body_case == RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT) {
            Recur__Internal__Heartbeat hb = RECUR__INTERNAL__HEARTBEAT__INIT;
            hb.has_seq = hb.has_rank = 1;
            recur_internal_envelope_t out = RECUR__INTERNAL__ENVELOPE__INIT;
            out.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT;
            out.heartbeat = &hb;
            recur_msgsock_send_internal(s, NULL, &out, &err);
        }
        recur_proto_internal_free(in);
    }
    free(tok);
    recur_msgsock_close(s);
    return NULL;
}

static void *client(void *arg) {
    bench_t *b = arg;
    recur_client_t *c = NULL;
    if (recur_client_connect(b->zctx, b->client_ep, &c) != RECUR_OK) goto fail;
    recur_client_health_t hh = {0};
    for (int i = 0; i < 200; i++) {   /* until the fake worker's Hello is taken */
        if (recur_client_health(c, 5000, &hh) == RECUR_OK && hh.serving) break;
        usleep(20000);
    }
    if (!hh.serving) {
        fprintf(stderr, "bench_coord: the coordinator did not take the fake worker: %s\n", hh.detail);
        goto fail;
    }
    recur_client_params_t p = recur_client_default_params();
    p.max_tokens = b->max_tokens, p.temperature = 0.0f, p.ignore_eos = 1;
    int next = 0, done = 0, in_flight = 0;
    char rid[32], prompt[256];
    while (done < b->requests) {
        while (in_flight < b->batch && next < b->requests) {
            snprintf(rid, sizeof rid, "b%d", next);
            snprintf(prompt, sizeof prompt, "Request %d: the river runs past an old mill where children play", next);
            if (recur_client_generate(c, rid, prompt, NULL, 0, &p) != RECUR_OK) goto fail;
            next++, in_flight++;
        }
        recur_client_event_t ev;
        if (recur_client_next(c, 30000, &ev) != RECUR_OK) goto fail;
        if (ev.kind == RECUR_CLIENT_EV_ERROR) goto fail;
        b->tokens_seen += ev.n_tokens;
        if (ev.kind == RECUR_CLIENT_EV_FINAL) {
            if (ev.finish != RECUR_CLIENT_FINISH_LENGTH || (int)ev.completion_tokens != b->max_tokens) goto fail;
            done++, in_flight--;
        }
    }
    recur_client_close(c);
    atomic_store(&b->stop, 1);
    return NULL;
fail:
    fprintf(stderr, "bench_coord: client failed: %s\n", c ? recur_client_error(c) : "connect");
    recur_client_close(c);
    atomic_store(&b->failed, 1);
    atomic_store(&b->stop, 1);
    return NULL;
}

static int tick(recur_coord_t *c, void *ud) {
    (void)c;
    return atomic_load(&((bench_t *)ud)->stop);
}

int main(int argc, char **argv) {
    bench_t b;
    memset(&b, 0, sizeof b);
    b.batch = 256, b.requests = 1024, b.max_tokens = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--batch")) b.batch = v;
        else if (!strcmp(argv[i], "--requests")) b.requests = v;
        else if (!strcmp(argv[i], "--max-tokens")) b.max_tokens = v;
        else if (!strcmp(argv[i], "--step-us")) b.step_us = v;
    }
    if (b.batch < 1 || b.batch > 256 || b.requests < 1 || b.max_tokens < 1 || b.step_us < 0) {
        fprintf(stderr, "usage: bench_coord [--batch 1..256] [--requests N] [--max-tokens N] [--step-us N]\n");
        return 2;
    }
    b.zctx = zmq_ctx_new();
    recur_coord_config_t cfg = recur_coord_default_config();
    cfg.sched.max_batch = 256;
    cfg.sched.max_queue = 1 << 16;
    cfg.sched.queue_timeout_ms = 0;
    recur_coord_t *c = NULL;
    if (recur_coord_create(b.zctx, &cfg, &c) != RECUR_OK) return 1;
    snprintf(b.worker_ep, sizeof b.worker_ep, "%s", recur_coord_worker_endpoint(c));
    snprintf(b.client_ep, sizeof b.client_ep, "%s", recur_coord_client_endpoint(c));
    pthread_t tw, tc;
    pthread_create(&tw, NULL, fake_worker, &b);
    pthread_create(&tc, NULL, client, &b);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    recur_status_t s = recur_coord_run(c, tick, &b);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(tc, NULL);
    pthread_join(tw, NULL);
    recur_coord_stats_t st;
    recur_coord_get_stats(c, &st);
    const double step_ref_us = 16400.0;   /* 7B RWKV-7, batch 256, one H200 (docs/benchmarks.md) */
    double wall = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("bench_coord: %d requests x %d tokens, %d in flight, fake step %d us, World tokenizer (65,536)\n",
           b.requests, b.max_tokens, b.batch, b.step_us);
    printf("| what | per step | share of a 16.4 ms batch-256 step (budget 2%%) |\n|---|---|---|\n");
    printf("| mean batch | %.1f sequences (max %d) over %llu steps | |\n",
           st.steps ? (double)st.seqs / (double)st.steps : 0.0, st.max_batch_seen, (unsigned long long)st.steps);
    printf("| critical path (result in -> next plan out) | %.1f us | %.2f%% |\n", st.critical_us_per_step,
           100.0 * st.critical_us_per_step / step_ref_us);
    printf("| all coordinator work outside waiting | %.1f us | %.2f%% (overlaps the next step) |\n",
           st.busy_us_per_step, 100.0 * st.busy_us_per_step / step_ref_us);
    printf("| step period with the fake worker | %.1f us | |\n", st.period_us_per_step);
    printf("| tokens streamed | %ld in %.2f s (%.0f tokens/s) | |\n", b.tokens_seen, wall,
           wall > 0 ? (double)b.tokens_seen / wall : 0.0);
    recur_coord_free(c);
    zmq_ctx_term(b.zctx);
    if (s != RECUR_OK || atomic_load(&b.failed) || b.tokens_seen != (long)b.requests * b.max_tokens) {
        fprintf(stderr, "bench_coord: the run failed (%ld tokens of %ld)\n", b.tokens_seen,
                (long)b.requests * b.max_tokens);
        return 1;
    }
    return 0;
}
