/* test_dist.c: a model split over MPI ranks (tensor and pipeline parallel) computes what
 * one rank computes.
 *
 *   mpirun -np N test_dist BACKEND TP PP [expect-fail]
 *
 * For each model (the synthetic RWKV-7 fixture: C 128, 2 heads, 3 layers, so PP2 splits
 * it 2 + 1; the xLSTM tiny fixture: 2 heads, 2 layers) every rank loads the whole model on
 * its own (the reference) and its shard for the TP x PP grid, runs the same script on both
 * (a mixed prefill of three sequences with all logits, decode steps, a sampled step) and
 * checks:
 *   - the last stage's logits are within 1e-5 of the reference for RWKV-7 and 5e-5 for
 *     xLSTM (the split changes only the order of fp32 sums; the random tiny xLSTM amplifies
 *     such reordering: our own prefill and decode paths differ by 1.3e-5 on it, and
 *     transformers' two paths by 4.9e-5, docs/testing.md);
 *   - every rank returns the sampled tokens of the reference;
 *   - each rank's state shard equals its part of the reference state (layers of its stage,
 *     its heads; RWKV-7's shift vectors replicated), so the shards put together are the
 *     whole state;
 *   - with more than one rank, no rank read the whole checkpoint;
 *   - a rank that cannot load its part (here: the last rank's checkpoint path does not
 *     exist, as on a node without the files) makes the load fail on every rank, with no
 *     rank left waiting. (An allocation that fails takes the same path; it is not
 *     provoked here because with memory overcommit, as on the GPU machines, a huge pool
 *     may well be "allocated".)
 * With expect-fail the grid does not fit the models (e.g. TP 4 with 2 heads): loading must
 * fail on every rank with RECUR_E_INVAL, and nobody may hang.
 * BACKEND cuda exits 77 without a GPU per rank. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_backend.h"
#include "recur_comm.h"
#include "recur_log.h"
#include "recur_model.h"
#include "recur_testutil.h"

#define N_SEQ 3
#define N_DECODE 4

static int failures;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            failures++;                                                       \
        }                                                                     \
    } while (0)

static int g_rank;

/* What one run of the script produced. */
typedef struct script_out {
    float *prefill_logits;  /* [total prompt tokens][V] */
    float *decode_logits;   /* [N_DECODE][N_SEQ][V]     */
    int32_t sampled[N_SEQ];
    float *state[N_SEQ];    /* state_bytes each (f32)  */
} script_out_t;

static const int32_t seq_len[N_SEQ] = {7, 1, 12};
static const int32_t slots[N_SEQ] = {3, 1, 2};

static void free_out(script_out_t *o) {
    free(o->prefill_logits);
    free(o->decode_logits);
    for (int i = 0; i < N_SEQ; i++) free(o->state[i]);
}

/* The script: fresh slots, a mixed prefill (ALL logits), N_DECODE decode steps (LAST), a
 * greedy sampled step, then each slot's state. logits land only on the last stage. */
static recur_status_t run_script(recur_model_t *m, int last_stage, script_out_t *o) {
    const recur_model_info_t *info = recur_model_info(m);
    const int32_t V = info->n_vocab;
    int32_t total = 0;
    for (int i = 0; i < N_SEQ; i++) total += seq_len[i];
    memset(o, 0, sizeof *o);
    o->prefill_logits = calloc((size_t)total * V, sizeof(float));
    o->decode_logits = calloc((size_t)N_DECODE * N_SEQ * V, sizeof(float));
    for (int i = 0; i < N_SEQ; i++) o->state[i] = calloc(1, info->state_bytes);
    int32_t *tokens = malloc((size_t)total * sizeof(int32_t));
    if (!o->prefill_logits || !o->decode_logits || !tokens) return RECUR_E_NOMEM;
    uint64_t rng = 0x5eed;
    for (int32_t t = 0; t < total; t++) tokens[t] = (int32_t)recur_test_rng_below(&rng, (uint32_t)V);
    for (int i = 0; i < N_SEQ; i++) RECUR_TRY(recur_model_state_reset(m, slots[i]));
    recur_batch_t bt = {.n_seq = N_SEQ, .tokens = tokens, .seq_len = seq_len, .slot = slots,
                        .logits = RECUR_LOGITS_ALL};
    recur_status_t st = recur_model_forward(m, &bt, last_stage ? o->prefill_logits : NULL);
    const int32_t one[N_SEQ] = {1, 1, 1};
    for (int d = 0; d < N_DECODE && st == RECUR_OK; d++) {
        int32_t step[N_SEQ];
        for (int i = 0; i < N_SEQ; i++) step[i] = (int32_t)recur_test_rng_below(&rng, (uint32_t)V);
        recur_batch_t db = {.n_seq = N_SEQ, .tokens = step, .seq_len = one, .slot = slots, .logits = RECUR_LOGITS_LAST};
        st = recur_model_forward(m, &db, last_stage ? o->decode_logits + (size_t)d * N_SEQ * V : NULL);
    }
    if (st == RECUR_OK) {
        int32_t step[N_SEQ] = {5, 9, 2};
        recur_sample_row_t sp[N_SEQ];
        for (int i = 0; i < N_SEQ; i++) sp[i] = (recur_sample_row_t){.temperature = 0.f, .top_p = 1.f};
        recur_batch_t sb = {.n_seq = N_SEQ, .tokens = step, .seq_len = one, .slot = slots, .logits = RECUR_LOGITS_LAST};
        for (int i = 0; i < N_SEQ; i++) o->sampled[i] = -1;
        st = recur_model_forward_sample(m, &sb, sp, V, o->sampled);
    }
    for (int i = 0; i < N_SEQ && st == RECUR_OK; i++) st = recur_model_state_get(m, slots[i], o->state[i]);
    free(tokens);
    return st;
}

/* The rank's part of a whole state `full` (reference layout) into shard. */
static void expected_shard(const recur_model_info_t *ref, const recur_model_info_t *mine, const float *full,
                           float *shard) {
    const recur_model_shard_t *sh = &mine->shard;
    const size_t full_layer = ref->state_bytes / sizeof(float) / (size_t)ref->n_layer;
    float *o = shard;
    for (int32_t l = sh->layer_begin; l < sh->layer_end; l++) {
        const float *L = full + (size_t)l * full_layer;
        if (ref->arch == RECUR_ARCH_RWKV7) {
            const size_t C = (size_t)ref->n_embd, N = (size_t)ref->head_size;
            memcpy(o, L, 2 * C * sizeof(float)); /* ffn_x, att_x: replicated */
            o += 2 * C;
            memcpy(o, L + 2 * C + (size_t)sh->head_begin * N * N, (size_t)sh->n_head * N * N * sizeof(float));
            o += (size_t)sh->n_head * N * N;
        } else {
            /* full layer: NH * (DQK * DV + DQK + 1) */
            const size_t NH = (size_t)ref->n_head, DV = (size_t)ref->head_size;
            const size_t DQK = (full_layer / NH - 1) / (DV + 1), h0 = (size_t)sh->head_begin, nh = (size_t)sh->n_head;
            memcpy(o, L + h0 * DQK * DV, nh * DQK * DV * sizeof(float));
            o += nh * DQK * DV;
            memcpy(o, L + NH * DQK * DV + h0 * DQK, nh * DQK * sizeof(float));
            o += nh * DQK;
            memcpy(o, L + NH * DQK * DV + NH * DQK + h0, nh * sizeof(float));
            o += nh;
        }
    }
}

static void test_model(const char *path, recur_backend_t *b, recur_comm_t *comm, int expect_fail) {
    const recur_grid_t *g = recur_comm_grid(comm);
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = 5;
    p.max_tokens = 8; /* the 12-token prompt is cut across pieces */
    recur_model_t *ref = NULL, *dist = NULL;
    recur_status_t st = recur_model_load(path, b, &p, &ref);
    CHECK(st == RECUR_OK, "%s: reference load: %s", path, recur_status_str(st));
    p.comm = comm;
    st = recur_model_load(path, b, &p, &dist);
    if (expect_fail) {
        CHECK(st == RECUR_E_INVAL && !dist, "%s: tp %d x pp %d should not fit this model, load gave %s", path, g->tp,
              g->pp, recur_status_str(st));
        recur_model_free(ref);
        recur_model_free(dist);
        return;
    }
    CHECK(st == RECUR_OK, "%s: sharded load: %s", path, recur_status_str(st));
    if (!ref || !dist) {
        recur_model_free(ref);
        recur_model_free(dist);
        return;
    }
    const recur_model_info_t *ri = recur_model_info(ref), *di = recur_model_info(dist);
    const recur_model_shard_t *sh = &di->shard;
    CHECK(sh->tp == g->tp && sh->pp == g->pp && sh->tp_rank == g->tp_rank && sh->pp_rank == g->pp_rank,
          "shard placement");
    if (g->world_size > 1)
        CHECK(sh->bytes_read < ri->shard.bytes_read, "%s: rank read %lld bytes, the whole model is %lld", path,
              (long long)sh->bytes_read, (long long)ri->shard.bytes_read);
    const int last = sh->pp_rank == sh->pp - 1;
    script_out_t want, got;
    st = run_script(ref, 1, &want);
    CHECK(st == RECUR_OK, "reference script: %s", recur_status_str(st));
    st = run_script(dist, last, &got);
    CHECK(st == RECUR_OK, "sharded script: %s", recur_status_str(st));
    int32_t total = 0;
    for (int i = 0; i < N_SEQ; i++) total += seq_len[i];
    const size_t V = (size_t)ri->n_vocab;
    const float tol = ri->arch == RECUR_ARCH_XLSTM ? 5e-5f : 1e-5f;
    if (last) {
        CHECK(recur_allclose(got.prefill_logits, want.prefill_logits, (size_t)total * V, tol, tol, "prefill logits", NULL),
              "%s: prefill logits differ", path);
        CHECK(recur_allclose(got.decode_logits, want.decode_logits, (size_t)N_DECODE * N_SEQ * V, tol, tol,
                             "decode logits", NULL),
              "%s: decode logits differ", path);
    }
    for (int i = 0; i < N_SEQ; i++)
        CHECK(got.sampled[i] == want.sampled[i], "%s: sequence %d sampled %d, the reference %d", path, i,
              got.sampled[i], want.sampled[i]);
    float *exp = malloc(di->state_bytes);
    for (int i = 0; i < N_SEQ && exp; i++) {
        expected_shard(ri, di, want.state[i], exp);
        CHECK(recur_allclose(got.state[i], exp, di->state_bytes / sizeof(float), 1e-5f, 1e-5f, "state shard", NULL),
              "%s: slot %d: the state shard differs from its part of the whole state", path, slots[i]);
    }
    free(exp);
    if (g->world_size > 1) {
        const char *mine = g->world_rank == g->world_size - 1 ? "/nonexistent/recur-test-model.bin" : path;
        recur_model_t *no = NULL;
        recur_log_level_t lvl = recur_log_get_level();
        recur_log_set_level(RECUR_LOG_NONE);
        st = recur_model_load(mine, b, &p, &no);
        recur_log_set_level(lvl);
        CHECK(st != RECUR_OK && !no, "%s: one rank unable to load must fail the load everywhere, got %s", path,
              recur_status_str(st));
        recur_model_free(no);
    }
    if (g->world_rank == 0)
        printf("%s: tp %d x pp %d: rank 0 holds layers %d..%d, heads %d..%d, read %.1f of %.1f KiB\n", path, g->tp,
               g->pp, sh->layer_begin, sh->layer_end - 1, sh->head_begin, sh->head_begin + sh->n_head - 1,
               (double)sh->bytes_read / 1024.0, (double)ri->shard.bytes_read / 1024.0);
    free_out(&want);
    free_out(&got);
    recur_model_free(dist);
    recur_model_free(ref);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: mpirun -np N %s cpu|cuda TP PP [expect-fail]\n", argv[0]);
        return 2;
    }
    const char *backend = argv[1];
    const int tp = atoi(argv[2]), pp = atoi(argv[3]);
    const int expect_fail = argc > 4 && strcmp(argv[4], "expect-fail") == 0;
    recur_log_set_level(RECUR_LOG_ERROR);
    recur_grid_t grid;
    recur_status_t st = recur_comm_world_init(&argc, &argv, tp, pp, &grid);
    if (st != RECUR_OK) {
        recur_comm_world_finalize();
        return 1;
    }
    g_rank = grid.world_rank;
    recur_backend_params_t bp = recur_backend_default_params();
    bp.weight_dtype = RECUR_DTYPE_F32; /* the exact path: the split may only reorder sums */
    bp.device = grid.local_rank;
    recur_backend_t *b = NULL;
    int skip = 0;
    if (strcmp(backend, "cuda") == 0 && (recur_test_no_cuda() || recur_backend_init("cuda", &bp, &b) != RECUR_OK))
        skip = 1;
    else if (!b && recur_backend_init(backend, &bp, &b) != RECUR_OK)
        failures++;
    /* every rank must agree whether to run: a GPU missing on one host skips them all */
    int64_t any_skip = skip ? 0 : 1;
    recur_comm_t *comm = NULL;
    if (!skip && !failures && recur_comm_create(&grid, b, &comm) != RECUR_OK) failures++;
    if (comm) {
        (void)recur_comm_min_i64(comm, &any_skip);
        if (!any_skip) skip = 1;
    }
    if (!skip && comm && !failures) {
        char rwkv[4096], xlstm[4096];
        recur_fixture_path(rwkv, sizeof rwkv, "rwkv7/synth7-C128-H2-L3-FP32.bin");
        recur_source_path(xlstm, sizeof xlstm, "tests/fixtures/xlstm-tiny");
        test_model(rwkv, b, comm, expect_fail);
        test_model(xlstm, b, comm, expect_fail);
    }
    /* one verdict for the job */
    recur_status_t mine = failures ? RECUR_E_INVAL : RECUR_OK;
    recur_status_t all = comm ? recur_comm_agree(comm, mine) : mine;
    recur_comm_free(comm);
    recur_backend_free(b);
    recur_comm_world_finalize();
    if (skip) {
        if (grid.world_rank == 0) fprintf(stderr, "test_dist: no GPU for every rank (skipped)\n");
        return 77;
    }
    if (grid.world_rank == 0)
        printf("test_dist %s tp %d pp %d%s: %s\n", backend, tp, pp, expect_fail ? " (expect-fail)" : "",
               all == RECUR_OK ? "ok" : "FAILED");
    return all == RECUR_OK ? 0 : 1;
}
