/* test_worker.c: `recur worker` against a fake coordinator (a ROUTER bound on
 * tcp://127.0.0.1:*), for the RWKV-7 and xLSTM fixtures. The worker is the real binary,
 * spawned as a child process (so the CLI is tested too): alone, or with
 *   test_worker --np N MPIRUN [mpirun flags...]
 * as `MPIRUN flags -np N recur worker --tp N ...` (a TP split over N ranks).
 * Checks:
 *   - Hello: the grid, backend, the model identity (arch and sizes as the model loaded
 *     here, the checkpoint id naming the file), n_slots, state bytes per slot shard;
 *   - StepPlans (resets, prefill-only and sampled sequences mixed, then decode steps) give
 *     the greedy tokens of running recur_model here, sequence by sequence;
 *   - bad plans (a token outside the vocabulary, slot 0, a repeated slot, a slot past the
 *     pool) get an error StepResult for their step, and the worker keeps serving with the
 *     state untouched;
 *   - SlotOps: copy (slot -> slot, slot -> host key -> slot), save (a manifest and one shard file
 *     per rank), reset, load, drop, and the errors of a dropped key and a missing file
 *     round trip, then both slots continue exactly as the reference; a load from a missing
 *     file is an error result; SAVE / DELETE / LOAD paths outside --session-dir (a ".."
 *     component, a subdirectory) are refused and touch nothing; Heartbeat is answered;
 *   - sampling extras (frequency and repetition penalties, a logit bias, logprobs 3): the
 *     tokens and logprobs equal the reference model's with a token history kept here, a
 *     prefill-only sequence of the same plan gets padded logprobs, and after a SlotOp COPY
 *     the fork samples with the original's history (its logprob is the history's, not
 *     that of the same state without one);
 *   - Shutdown ends the process(es) with exit 0;
 *   - a coordinator that goes away (after Ready) makes the worker exit nonzero within its
 *     idle limit (2 s here). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_backend.h"
#include "recur_model.h"
#include "recur_msgsock.h"
#include "recur_testutil.h"
#include "recur_token_hist.h"

static int failures;
#define CHECK(cond) RECUR_CHECK(&failures, cond)

#define N_SLOTS 8
static const int32_t WAIT_MS = 30000;   /* only a failure waits this long */

static int np = 1;              /* worker ranks */
static char **launcher;         /* mpirun and its flags (np > 1) */
static int n_launcher;

typedef struct coord {
    void *zctx;
    recur_msgsock_t *router;
    recur_msgsock_peer_t peer;  /* rank 0 of the worker */
    pid_t pid;
} coord_t;

/* ------------------------------------------------------------------ processes */

/* session_dir: passed as --session-dir (NULL: none). */
static pid_t spawn_worker(const char *endpoint, const char *model, const char *idle_ms, const char *session_dir) {
    char bin[4096], tp[16];
    /* RECUR_BIN: a bundle's copy on a GPU machine (scripts/gpu_check.sh), where the build
     * directory compiled in here does not exist */
    const char *env_bin = getenv("RECUR_BIN");
    if (env_bin && *env_bin) snprintf(bin, sizeof bin, "%s", env_bin);
    else snprintf(bin, sizeof bin, "%s/recur", RECUR_BIN_DIR);
    snprintf(tp, sizeof tp, "%d", np);
    const char *args[64];
    int k = 0;
    if (np > 1) {
        for (int i = 0; i < n_launcher; i++) args[k++] = launcher[i];
        args[k++] = "-np", args[k++] = tp;
    }
    const char *tail[] = {bin, "worker", "--connect", endpoint, "--model", model, "--slots", "8", "--max-tokens", "64",
                          "--heartbeat-ms", "200", "--idle-limit-ms", idle_ms, "--tp", tp};
    for (size_t i = 0; i < sizeof tail / sizeof *tail; i++) args[k++] = tail[i];
    if (session_dir) args[k++] = "--session-dir", args[k++] = session_dir;
    args[k] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execvp(args[0], (char *const *)args);
        fprintf(stderr, "exec %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Waits up to timeout_s for pid; -1 (after killing it) when it did not exit. */
static int wait_exit(pid_t pid, double timeout_s, double *took) {
    double t0 = recur_test_now_s();
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (took) *took = recur_test_now_s() - t0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (recur_test_now_s() - t0 > timeout_s) {
            fprintf(stderr, "worker %d did not exit within %.0f s: killing it\n", (int)pid, timeout_s);
            kill(pid, SIGTERM);   /* mpirun passes it on to its ranks */
            usleep(2000000);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(20000);
    }
}

/* ------------------------------------------------------------------ messages */

/* The next message from the worker other than Hello and Heartbeat (unless asked for). */
static recur_internal_envelope_t *expect_body(coord_t *c, Recur__Internal__Envelope__BodyCase want) {
    double t0 = recur_test_now_s();
    while (recur_test_now_s() - t0 < WAIT_MS / 1e3) {
        recur_proto_error_t err;
        recur_internal_envelope_t *env = NULL;
        recur_msgsock_peer_t from;
        recur_status_t s = recur_msgsock_recv_internal(c->router, 500, &from, &env, &err);
        if (s == RECUR_E_TIMEOUT) continue;
        if (s != RECUR_OK) {
            fprintf(stderr, "coordinator recv: %s: %s\n", recur_status_str(s), err.msg);
            failures++;
            return NULL;
        }
        c->peer = from;
        if (env->body_case == want) return env;
        if (env->body_case != RECUR__INTERNAL__ENVELOPE__BODY_HELLO &&
            env->body_case != RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT) {
            fprintf(stderr, "expected %s, got %s\n", recur_proto_internal_body_name(want),
                    recur_proto_internal_body_name(env->body_case));
            failures++;
            recur_proto_internal_free(env);
            return NULL;
        }
        recur_proto_internal_free(env);
    }
    fprintf(stderr, "no %s from the worker within %d ms\n", recur_proto_internal_body_name(want), (int)WAIT_MS);
    failures++;
    return NULL;
}

static void send_env(coord_t *c, recur_internal_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_send_internal(c->router, &c->peer, env, &err);
    if (s != RECUR_OK) fprintf(stderr, "coordinator send: %s: %s\n", recur_status_str(s), err.msg);
    CHECK(s == RECUR_OK);
}

/* Sends env without recur_proto's checks (plans that break the protocol's rules). */
static void send_raw(coord_t *c, recur_internal_envelope_t *env) {
    env->has_protocol_version = 1, env->protocol_version = RECUR_PROTO_INTERNAL_VERSION;
    size_t n = recur__internal__envelope__get_packed_size(env);
    uint8_t *buf = malloc(n);
    recur__internal__envelope__pack(env, buf);
    CHECK(recur_msgsock_send(c->router, &c->peer, buf, n, NULL) == RECUR_OK);
    free(buf);
}

/* A plan of n sequences; mode[i] 1 = sample (greedy, step counter `step`), 0 = prefill only. */
typedef struct plan {
    uint64_t step;
    int n;
    int32_t slot[4], len[4], tok[64];
    int mode[4];
    int n_reset;
    int32_t reset[4];
} plan_t;

/* Sampling extras of the plans run_step sends (off by default), and the logprobs of the
 * last StepResult that had them. */
static struct {
    float freq, rep;
    int32_t logprobs, bias_tok;
    float bias_val;
} g_ex = {0.0f, 1.0f, -1, -1, 0.0f};
static float g_lp[4], g_top_lp[4][8];
static int32_t g_top_n = -1, g_top[4][8];

/* StepResult for p: -> tokens (n), or the error status (code != 0) with its message in why. */
static int32_t run_step(coord_t *c, const plan_t *p, int raw, int32_t *tokens, char *why, size_t why_n) {
    Recur__Internal__StepPlan sp = RECUR__INTERNAL__STEP_PLAN__INIT;
    Recur__Internal__SamplingRow rows[4], *rowp[4];
    Recur__Internal__LogitsMode modes[4];
    int n_tok = 0, n_rows = 0;
    for (int i = 0; i < p->n; i++) {
        n_tok += p->len[i];
        modes[i] = p->mode[i] ? RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE
                              : RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE;
        if (p->mode[i]) {
            Recur__Internal__SamplingRow r = RECUR__INTERNAL__SAMPLING_ROW__INIT;
            r.has_temperature = r.has_top_k = r.has_top_p = r.has_min_p = r.has_seed = r.has_step = 1;
            r.temperature = 0.0f, r.top_k = 0, r.top_p = 1.0f, r.min_p = 0.0f, r.seed = 7, r.step = p->step;
            r.has_frequency_penalty = r.has_repetition_penalty = r.has_logprobs = 1;
            r.frequency_penalty = g_ex.freq, r.repetition_penalty = g_ex.rep, r.logprobs = g_ex.logprobs;
            if (g_ex.bias_tok >= 0) {
                r.n_bias_token = r.n_bias_value = 1;
                r.bias_token = &g_ex.bias_tok, r.bias_value = &g_ex.bias_val;
            }
            rows[n_rows] = r;
            rowp[n_rows] = &rows[n_rows];
            n_rows++;
        }
    }
    sp.has_step = 1, sp.step = p->step;
    sp.n_slot = (size_t)p->n, sp.slot = (int32_t *)p->slot;
    sp.n_seq_len = (size_t)p->n, sp.seq_len = (int32_t *)p->len;
    sp.n_tokens = (size_t)n_tok, sp.tokens = (int32_t *)p->tok;
    sp.n_logits = (size_t)p->n, sp.logits = modes;
    sp.n_sampling = (size_t)n_rows, sp.sampling = rowp;
    sp.n_reset_slots = (size_t)p->n_reset, sp.reset_slots = (int32_t *)p->reset;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN;
    env.step_plan = &sp;
    if (raw) send_raw(c, &env);
    else send_env(c, &env);
    recur_internal_envelope_t *r = expect_body(c, RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT);
    if (!r) return -999;
    const Recur__Internal__StepResult *res = r->step_result;
    CHECK(res->step == p->step);
    int32_t code = res->status->code;
    if (why) snprintf(why, why_n, "%s", res->status->message ? res->status->message : "");
    if (code == 0) {
        CHECK(res->n_token == (size_t)p->n);
        for (int i = 0; i < p->n && i < (int)res->n_token; i++) {
            tokens[i] = res->token[i];
            CHECK(p->mode[i] ? res->token[i] >= 0 : res->token[i] == -1);
        }
        g_top_n = -1;
        if (res->n_logprob) {
            g_top_n = res->has_top_n ? (int32_t)res->top_n : 0;
            CHECK(res->n_logprob == (size_t)p->n && g_top_n <= 8);
            for (int i = 0; i < p->n && i < (int)res->n_logprob && g_top_n <= 8; i++) {
                g_lp[i] = res->logprob[i];
                for (int j = 0; j < g_top_n; j++)
                    g_top[i][j] = res->top_token[i * g_top_n + j], g_top_lp[i][j] = res->top_logprob[i * g_top_n + j];
            }
        }
    }
    recur_proto_internal_free(r);
    return code;
}

/* The same plan on the reference model, each sequence alone (a batch's rows do not
 * depend on each other: docs/testing.md). */
static void ref_step(recur_model_t *ref, const plan_t *p, int32_t *tokens) {
    for (int i = 0; i < p->n_reset; i++) CHECK(recur_model_state_reset(ref, p->reset[i]) == RECUR_OK);
    int off = 0;
    for (int i = 0; i < p->n; i++) {
        recur_batch_t b = {.n_seq = 1, .tokens = p->tok + off, .seq_len = &p->len[i], .slot = &p->slot[i],
                           .logits = p->mode[i] ? RECUR_LOGITS_LAST : RECUR_LOGITS_NONE};
        tokens[i] = -1;
        if (p->mode[i]) {
            recur_sample_row_t row = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 7,
                                      .step = p->step};
            CHECK(recur_model_forward_sample(ref, &b, &row, recur_model_info(ref)->n_vocab, &tokens[i]) == RECUR_OK);
        } else {
            CHECK(recur_model_forward(ref, &b, NULL) == RECUR_OK);
        }
        off += p->len[i];
    }
}

/* The extras plan p on the reference, each sequence alone, with the reference's own token
 * history h (none: hist NULL): tokens, and logprobs into lp / top / top_lp. */
static void ref_step_ex(recur_model_t *ref, recur_token_hist_t *h, const plan_t *p, int32_t *tokens, float *lp,
                        int32_t top[][8], float top_lp[][8]) {
    for (int i = 0; i < p->n_reset; i++) {
        CHECK(recur_model_state_reset(ref, p->reset[i]) == RECUR_OK);
        if (h) recur_token_hist_reset(h, p->reset[i]);
    }
    int off = 0;
    for (int i = 0; i < p->n; i++) {
        recur_batch_t b = {.n_seq = 1, .tokens = p->tok + off, .seq_len = &p->len[i], .slot = &p->slot[i],
                           .logits = p->mode[i] ? RECUR_LOGITS_LAST : RECUR_LOGITS_NONE};
        if (h) CHECK(recur_token_hist_add(h, p->slot[i], p->tok + off, p->len[i], 0) == RECUR_OK);
        tokens[i] = -1;
        if (p->mode[i]) {
            recur_sample_row_t row = {.temperature = 0.0f, .top_p = 1.0f, .seed = 7, .step = p->step,
                                      .repetition_penalty = g_ex.rep, .frequency_penalty = g_ex.freq,
                                      .logprobs = g_ex.logprobs};
            static recur_sample_hist_t he[4096];
            int32_t hoff[2] = {0, h ? recur_token_hist_export(h, p->slot[i], 0, he) : 0}, boff[2] = {0, 1};
            recur_sample_bias_t be = {g_ex.bias_tok, g_ex.bias_val};
            recur_sample_extras_t ex = {.n_bias = g_ex.bias_tok >= 0, .bias_off = boff, .bias = &be,
                                        .n_hist = hoff[1], .hist_off = hoff, .hist = he, .top_n = g_ex.logprobs,
                                        .logprob = &lp[i], .top_token = top[i], .top_logprob = top_lp[i]};
            CHECK(g_ex.logprobs <= 8 && (!h || recur_token_hist_size(h, p->slot[i]) <= 4096));
            CHECK(recur_model_forward_sample_ex(ref, &b, &row, &ex, recur_model_info(ref)->n_vocab, &tokens[i]) ==
                  RECUR_OK);
            if (h) CHECK(recur_token_hist_add(h, p->slot[i], &tokens[i], 1, 1) == RECUR_OK);
        } else {
            CHECK(recur_model_forward(ref, &b, NULL) == RECUR_OK);
        }
        off += p->len[i];
    }
}

/* The extras plan p on the worker and on the reference (with its history); 1 when the
 * tokens agree and the logprobs too (1e-4: a TP split may round the logits differently). */
static int step_both_ex(coord_t *c, recur_model_t *ref, recur_token_hist_t *h, const plan_t *p, int32_t *got) {
    int32_t want[4], top[4][8];
    float lp[4], top_lp[4][8];
    char why[512] = "";
    int32_t code = run_step(c, p, 0, got, why, sizeof why);
    if (code != 0) {
        fprintf(stderr, "step %llu failed: %d %s\n", (unsigned long long)p->step, (int)code, why);
        failures++;
        return 0;
    }
    ref_step_ex(ref, h, p, want, lp, top, top_lp);
    int ok = g_top_n == g_ex.logprobs;
    for (int i = 0; i < p->n; i++) {
        if (got[i] != want[i]) ok = 0;
        if (!p->mode[i] || g_top_n < 0) continue;
        ok &= fabsf(g_lp[i] - lp[i]) <= 1e-4f;
        for (int j = 0; j < g_top_n; j++) ok &= g_top[i][j] == top[i][j] && fabsf(g_top_lp[i][j] - top_lp[i][j]) <= 1e-4f;
    }
    if (!ok) {
        fprintf(stderr, "step %llu (extras): worker tokens %d %d, reference %d %d\n", (unsigned long long)p->step,
                (int)got[0], (int)got[1], (int)want[0], (int)want[1]);
        failures++;
    }
    return ok;
}

/* Runs p on both and compares; returns 1 when they agree. */
static int step_both(coord_t *c, recur_model_t *ref, const plan_t *p, int32_t *got) {
    int32_t want[4];
    char why[512] = "";
    int32_t code = run_step(c, p, 0, got, why, sizeof why);
    if (code != 0) {
        fprintf(stderr, "step %llu failed: %d %s\n", (unsigned long long)p->step, (int)code, why);
        failures++;
        return 0;
    }
    ref_step(ref, p, want);
    int ok = 1;
    for (int i = 0; i < p->n; i++)
        if (got[i] != want[i]) {
            fprintf(stderr, "step %llu seq %d: worker token %d, reference %d\n", (unsigned long long)p->step, i,
                    (int)got[i], (int)want[i]);
            ok = 0;
        }
    if (!ok) failures++;
    return ok;
}

/* slot / src > 0: a slot; < 0: the host key -slot / -src. */
static int32_t slot_op(coord_t *c, uint64_t op_id, Recur__Internal__SlotOpKind kind, int32_t slot, int32_t src,
                       const char *path, uint64_t *bytes, char *why, size_t why_n) {
    Recur__Internal__SlotOp o = RECUR__INTERNAL__SLOT_OP__INIT;
    o.has_op_id = 1, o.op_id = op_id, o.has_kind = 1, o.kind = kind;
    if (slot > 0) o.has_slot = 1, o.slot = slot;
    if (slot < 0) o.has_key = 1, o.key = (uint64_t)-slot;
    if (src > 0) o.has_src_slot = 1, o.src_slot = src;
    if (src < 0) o.has_src_key = 1, o.src_key = (uint64_t)-src;
    o.path = (char *)path;
    Recur__Internal__CheckpointMeta meta = RECUR__INTERNAL__CHECKPOINT_META__INIT;
    if (kind == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE) {
        meta.session_id = "s1", meta.has_n_consumed = 1, meta.n_consumed = 5;
        o.meta = &meta, o.has_generation = 1, o.generation = op_id;
    }
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP;
    env.slot_op = &o;
    send_env(c, &env);
    recur_internal_envelope_t *r = expect_body(c, RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP_RESULT);
    if (!r) return -999;
    CHECK(r->slot_op_result->op_id == op_id);
    int32_t code = r->slot_op_result->status->code;
    if (bytes) *bytes = r->slot_op_result->has_bytes ? r->slot_op_result->bytes : 0;
    if (why) snprintf(why, why_n, "%s", r->slot_op_result->status->message ? r->slot_op_result->status->message : "");
    recur_proto_internal_free(r);
    return code;
}

static void send_ready(coord_t *c) {
    Recur__Internal__Ready rd = RECUR__INTERNAL__READY__INIT;
    rd.has_epoch = 1, rd.epoch = 42, rd.has_heartbeat_interval_ms = 1, rd.heartbeat_interval_ms = 200;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_READY;
    env.ready = &rd;
    send_env(c, &env);
}

/* ------------------------------------------------------------------ scenarios */

static int coord_open(coord_t *c) {
    memset(c, 0, sizeof *c);
    c->zctx = zmq_ctx_new();
    recur_msgsock_params_t p = recur_msgsock_default_params();
    p.router_handover = 1;
    if (recur_msgsock_bind(c->zctx, "tcp://127.0.0.1:*", &p, &c->router) != RECUR_OK) {
        failures++;
        return -1;
    }
    return 0;
}

static void coord_close(coord_t *c) {
    recur_msgsock_close(c->router);
    c->router = NULL;
    if (c->zctx) zmq_ctx_term(c->zctx);
    c->zctx = NULL;
}

static void check_hello(const Recur__Internal__Hello *h, const recur_model_info_t *ri, const char *model) {
    CHECK(h->rank == 0 && h->world_size == (uint32_t)np && h->tp == (uint32_t)np && h->pp == 1 && h->tp_rank == 0 &&
          h->pp_rank == 0);
    CHECK(h->backend && strcmp(h->backend, "cpu") == 0);
    CHECK(h->host && h->host[0]);
    CHECK(h->model && strcmp(h->model->arch, ri->arch_name) == 0);
    CHECK(h->model->n_vocab == (uint32_t)ri->n_vocab && h->model->n_layer == (uint32_t)ri->n_layer &&
          h->model->n_embd == (uint32_t)ri->n_embd && h->model->n_head == (uint32_t)ri->n_head);
    const char *base = strrchr(model, '/');
    base = base ? base + 1 : model;
    CHECK(h->model->checkpoint_id && strstr(h->model->checkpoint_id, base) && strstr(h->model->checkpoint_id, "size="));
    CHECK(h->n_slots == N_SLOTS);
    if (np == 1) CHECK(h->state_bytes_per_slot == ri->state_bytes);
    else CHECK(h->state_bytes_per_slot > 0 && h->state_bytes_per_slot < ri->state_bytes);
    CHECK(h->software_version && h->software_version[0]);
    CHECK(h->has_pid && h->pid > 0);
}

static void scenario_serve(const char *model, const char *tmp) {
    fprintf(stderr, "== %s, %d rank(s)\n", model, np);
    recur_backend_t *b = NULL;
    recur_model_t *ref = NULL;
    recur_model_params_t mp = recur_model_default_params();
    mp.n_slots = N_SLOTS, mp.max_tokens = 64;
    if (recur_backend_init("cpu", NULL, &b) != RECUR_OK || recur_model_load(model, b, &mp, &ref) != RECUR_OK) {
        failures++;
        recur_backend_free(b);
        return;
    }
    const recur_model_info_t *ri = recur_model_info(ref);
    int32_t V = ri->n_vocab;
    coord_t c;
    if (coord_open(&c)) goto out_model;
    c.pid = spawn_worker(recur_msgsock_endpoint(c.router), model, "20000", tmp);
    double t0 = recur_test_now_s();
    recur_internal_envelope_t *hello = expect_body(&c, RECUR__INTERNAL__ENVELOPE__BODY_HELLO);
    if (!hello) goto out_proc;
    fprintf(stderr, "hello after %.2f s: checkpoint %s, %llu state bytes per slot\n", recur_test_now_s() - t0,
            hello->hello->model->checkpoint_id, (unsigned long long)hello->hello->state_bytes_per_slot);
    check_hello(hello->hello, ri, model);
    recur_proto_internal_free(hello);
    send_ready(&c);

    /* step 1: A (slot 1) prefill + sample, B (slot 2) prefill only; then decode both */
    int32_t got[4], a_last, b_last;
    plan_t p = {.step = 1, .n = 2, .slot = {1, 2}, .len = {5, 3}, .mode = {1, 0}, .n_reset = 2, .reset = {1, 2}};
    int32_t prompt[8] = {1, 2, 3, 4, 5, 7, 8, 9};
    for (int i = 0; i < 8; i++) p.tok[i] = prompt[i] % V;
    if (!step_both(&c, ref, &p, got)) goto out_proc;
    a_last = got[0];
    plan_t q = {.step = 2, .n = 2, .slot = {1, 2}, .len = {1, 1}, .mode = {1, 1}, .tok = {a_last, 10 % V}};
    if (!step_both(&c, ref, &q, got)) goto out_proc;
    for (uint64_t s = 3; s <= 6; s++) {
        a_last = got[0], b_last = got[1];
        plan_t d = {.step = s, .n = 2, .slot = {2, 1}, .len = {1, 1}, .mode = {1, 1}, .tok = {b_last, a_last}};
        int32_t g2[4];
        if (!step_both(&c, ref, &d, g2)) goto out_proc;
        got[0] = g2[1], got[1] = g2[0];
    }
    a_last = got[0], b_last = got[1];
    fprintf(stderr, "decode steps agree with the reference (last tokens %d, %d)\n", (int)a_last, (int)b_last);

    /* bad plans: each refused for its step, nothing changes */
    char why[512];
    int32_t dummy[4];
    plan_t bad = {.step = 100, .n = 1, .slot = {1}, .len = {1}, .mode = {1}, .tok = {V}};
    int32_t code = run_step(&c, &bad, 0, dummy, why, sizeof why);
    CHECK(code == RECUR_E_INVAL && strstr(why, "vocabulary"));
    fprintf(stderr, "token %d: %d %s\n", (int)V, (int)code, why);
    plan_t bad0 = {.step = 101, .n = 1, .slot = {0}, .len = {1}, .mode = {1}, .tok = {1}};
    code = run_step(&c, &bad0, 1, dummy, why, sizeof why);
    CHECK(code == RECUR_E_FORMAT && strstr(why, "slot"));
    fprintf(stderr, "slot 0: %d %s\n", (int)code, why);
    plan_t dup = {.step = 102, .n = 2, .slot = {1, 1}, .len = {1, 1}, .mode = {1, 1}, .tok = {1, 2}};
    code = run_step(&c, &dup, 1, dummy, why, sizeof why);
    CHECK(code == RECUR_E_FORMAT);
    fprintf(stderr, "repeated slot: %d %s\n", (int)code, why);
    plan_t past = {.step = 103, .n = 1, .slot = {N_SLOTS}, .len = {1}, .mode = {1}, .tok = {1}};
    code = run_step(&c, &past, 0, dummy, why, sizeof why);
    CHECK(code == RECUR_E_INVAL && strstr(why, "slot"));

    /* slot ops: copy 1 -> 3, save 1, copy 1 -> host key 7, reset 1 and 3, load 1, copy key 7 -> 3,
     * drop key 7; then 1 and 3 continue alike */
    char path[4096], shard[4200];
    snprintf(path, sizeof path, "%s/session.ckpt", tmp);
    uint64_t bytes = 0;
    CHECK(slot_op(&c, 1, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY, 3, 1, NULL, NULL, NULL, 0) == 0);
    CHECK(recur_model_state_copy(ref, 3, 1) == RECUR_OK);
    CHECK(slot_op(&c, 2, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE, 1, 0, path, &bytes, why, sizeof why) == 0);
    CHECK(bytes > 0 && (np > 1 || bytes == ri->state_bytes));
    struct stat st;
    char *man = NULL;
    size_t n = 0;
    CHECK(recur_read_file(path, (void **)&man, &n) == 0 && man && strstr(man, "recur-session-checkpoint") &&
          strstr(man, "\"id\":\"s1\"") && strstr(man, "\"content_hash\":\"fnv1a64s:"));
    free(man);
    for (int r = 0; r < np; r++) {
        snprintf(shard, sizeof shard, "%s.g2.shard-0-%d", path, r);
        CHECK(stat(shard, &st) == 0 && st.st_size > 0);
    }
    CHECK(slot_op(&c, 3, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY, -7, 1, NULL, NULL, why, sizeof why) == 0);
    CHECK(slot_op(&c, 4, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET, 1, 0, NULL, NULL, NULL, 0) == 0);
    CHECK(slot_op(&c, 5, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET, 3, 0, NULL, NULL, NULL, 0) == 0);
    CHECK(slot_op(&c, 6, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD, 1, 0, path, &bytes, why, sizeof why) == 0);
    CHECK(slot_op(&c, 7, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY, 3, -7, NULL, NULL, why, sizeof why) == 0);
    CHECK(slot_op(&c, 8, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DROP, -7, 0, NULL, NULL, why, sizeof why) == 0);
    code = slot_op(&c, 9, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY, 2, -7, NULL, NULL, why, sizeof why);
    CHECK(code == RECUR_E_INVAL && strstr(why, "no host copy under key 7"));
    fprintf(stderr, "copy from a dropped key: %d %s\n", (int)code, why);
    snprintf(shard, sizeof shard, "%s/missing.ckpt", tmp);
    code = slot_op(&c, 10, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD, 2, 0, shard, NULL, why, sizeof why);
    CHECK(code != 0 && code != -999 && strstr(why, "missing.ckpt"));
    fprintf(stderr, "load of a missing file: %d %s\n", (int)code, why);
    /* paths that leave --session-dir (tmp): refused before any file is touched */
    {
        char sub[4200], victim[4400], outside[4400];
        snprintf(sub, sizeof sub, "%s/sub", tmp);
        snprintf(victim, sizeof victim, "%s/victim.ckpt", sub);
        CHECK((mkdir(sub, 0700) == 0 || errno == EEXIST) && recur_write_file(victim, "keep", 4) == 0);
        snprintf(outside, sizeof outside, "%s/../escape.ckpt", tmp);
        code = slot_op(&c, 11, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE, 1, 0, outside, NULL, why, sizeof why);
        CHECK(code == RECUR_E_INVAL && strstr(why, "\"..\" component"));
        snprintf(outside, sizeof outside, "%s/../escape.ckpt.g11.shard-0-0", tmp);
        CHECK(stat(outside, &st) != 0);
        code = slot_op(&c, 12, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DELETE, 0, 0, victim, NULL, why, sizeof why);
        CHECK(code == RECUR_E_INVAL && strstr(why, "not directly in the session directory"));
        CHECK(stat(victim, &st) == 0);
        code = slot_op(&c, 13, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD, 2, 0, victim, NULL, why, sizeof why);
        CHECK(code == RECUR_E_INVAL);
        fprintf(stderr, "paths outside --session-dir refused: %s\n", why);
    }
    plan_t cont = {.step = 7, .n = 3, .slot = {1, 3, 2}, .len = {1, 1, 1}, .mode = {1, 1, 1},
                   .tok = {a_last, a_last, b_last}};
    if (step_both(&c, ref, &cont, got)) {
        CHECK(got[0] == got[1]);
        fprintf(stderr, "after copy/save/reset/load: slots 1 and 3 -> %d, %d (as the reference)\n", (int)got[0],
                (int)got[1]);
    }

    /* sampling extras: frequency and repetition penalties, a logit bias and logprobs; the
     * history follows a COPY (slot 4 -> 5), and a prefill-only sequence in the same plan
     * gets padded logprobs */
    {
        recur_token_hist_t *h = NULL;
        CHECK(recur_token_hist_create(N_SLOTS, &h) == RECUR_OK);
        g_ex.freq = 3.0f, g_ex.rep = 1.3f, g_ex.logprobs = 3, g_ex.bias_tok = 5 % V, g_ex.bias_val = 2.0f;
        plan_t e1 = {.step = 20, .n = 2, .slot = {4, 6}, .len = {6, 2}, .mode = {1, 0}, .n_reset = 2, .reset = {4, 6},
                     .tok = {1 % V, 2 % V, 1 % V, 2 % V, 1 % V, 2 % V, 3 % V, 4 % V}};
        int32_t e_got[4];
        int ok = step_both_ex(&c, ref, h, &e1, e_got);
        CHECK(ok && g_top_n == 3 && g_top[1][0] == -1 && g_lp[1] == 0.0f && g_lp[0] <= 0.0f && g_top[0][0] == e_got[0]);
        int32_t last = e_got[0];
        for (uint64_t k = 21; ok && k <= 24; k++) {
            plan_t d = {.step = k, .n = 1, .slot = {4}, .len = {1}, .mode = {1}, .tok = {last}};
            ok = step_both_ex(&c, ref, h, &d, e_got);
            last = e_got[0];
        }
        CHECK(slot_op(&c, 10, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY, 5, 4, NULL, NULL, NULL, 0) == 0);
        CHECK(recur_model_state_copy(ref, 5, 4) == RECUR_OK && recur_token_hist_copy(h, 5, 4) == RECUR_OK);
        /* slot 7: the same state without a history, to show that the history matters */
        CHECK(recur_model_state_copy(ref, 7, 4) == RECUR_OK);
        plan_t f = {.step = 25, .n = 2, .slot = {4, 5}, .len = {1, 1}, .mode = {1, 1}, .tok = {last, last}};
        if (ok && step_both_ex(&c, ref, h, &f, e_got)) {
            int32_t nh[4], top[4][8];
            float lp[4], top_lp[4][8];
            plan_t g = {.step = 25, .n = 1, .slot = {7}, .len = {1}, .mode = {1}, .tok = {last}};
            ref_step_ex(ref, NULL, &g, nh, lp, top, top_lp);
            /* the worker's fork (g_lp[1]) has the history's logprob, not the history-less one */
            CHECK(e_got[0] == e_got[1] && (nh[0] != e_got[1] || fabsf(lp[0] - g_lp[1]) > 1e-3f));
            fprintf(stderr, "extras: penalties, bias and logprobs as the reference; the COPY carried the history "
                    "(slots 4 and 5 -> %d, logprob %.5f; without the history %d, %.5f)\n", (int)e_got[0],
                    (double)g_lp[1], (int)nh[0], (double)lp[0]);
        }
        g_ex.freq = 0.0f, g_ex.rep = 1.0f, g_ex.logprobs = -1, g_ex.bias_tok = -1;
        recur_token_hist_free(h);
    }

    /* heartbeat, then shutdown */
    Recur__Internal__Heartbeat hb = RECUR__INTERNAL__HEARTBEAT__INIT;
    hb.has_seq = 1, hb.seq = 1, hb.has_rank = 1, hb.rank = -1;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(&c, &env);
    recur_internal_envelope_t *hr = expect_body(&c, RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT);
    CHECK(hr && hr->heartbeat->has_rank && hr->heartbeat->rank == 0 && hr->heartbeat->last_step == 25);
    recur_proto_internal_free(hr);
    Recur__Internal__Shutdown sd = RECUR__INTERNAL__SHUTDOWN__INIT;
    sd.reason = "test done";
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN;
    env.shutdown = &sd;
    send_env(&c, &env);
    double took = 0;
    int rc = wait_exit(c.pid, 30, &took);
    c.pid = 0;
    fprintf(stderr, "shutdown: exit %d after %.2f s\n", rc, took);
    CHECK(rc == 0);
out_proc:
    if (c.pid > 0) {
        kill(c.pid, SIGTERM);
        wait_exit(c.pid, 10, NULL);
    }
    coord_close(&c);
out_model:
    recur_model_free(ref);
    recur_backend_free(b);
}

/* The coordinator accepts the worker and then disappears. */
static void scenario_vanish(const char *model) {
    coord_t c;
    if (coord_open(&c)) return;
    c.pid = spawn_worker(recur_msgsock_endpoint(c.router), model, "2000", NULL);
    recur_internal_envelope_t *hello = expect_body(&c, RECUR__INTERNAL__ENVELOPE__BODY_HELLO);
    if (hello) {
        recur_proto_internal_free(hello);
        send_ready(&c);
        usleep(100000);
    }
    coord_close(&c);
    double took = 0;
    int rc = wait_exit(c.pid, 30, &took);
    fprintf(stderr, "coordinator gone: exit %d after %.2f s (idle limit 2 s)\n", rc, took);
    CHECK(rc > 0 && rc != 127);
    CHECK(took < 12.0);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--np") == 0) {
        np = atoi(argv[2]);
        launcher = argv + 3;
        n_launcher = argc - 3;
        if (np < 2 || n_launcher < 1 || n_launcher > 40) {
            fprintf(stderr, "usage: test_worker [--np N MPIRUN [flags...]]\n");
            return 2;
        }
    }
    char tmp[4096], rwkv[4096], xlstm[4096];
    if (recur_make_temp_dir(tmp, sizeof tmp) != 0) return 1;
    recur_fixture_path(rwkv, sizeof rwkv, "rwkv7/synth7-C128-H2-L3-FP32.bin");
    recur_source_path(xlstm, sizeof xlstm, "tests/fixtures/xlstm-tiny");
    scenario_serve(rwkv, tmp);
    scenario_serve(xlstm, tmp);
    scenario_vanish(rwkv);
    recur_rm_rf(tmp);
    if (failures) fprintf(stderr, "test_worker: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
