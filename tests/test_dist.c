/* test_dist.c: a model split over MPI ranks (tensor and pipeline parallel) computes what
 * one rank computes.
 *
 *   mpirun -np N test_dist BACKEND TP PP
 *
 * For each model (the synthetic RWKV-7 fixture: C 128, 2 heads, 3 layers, so PP2 splits
 * it 2 + 1; the xLSTM tiny fixture: 2 heads, 2 layers; and random-weight checkpoints of 8
 * heads and 8 layers, worker/recur_synth.h's rwkv7-tiny8 and xlstm-tiny8, which every
 * grid up to 8 ranks fits: TP 4 and 8, TP 4 x PP 2, PP 4 and 8, written by each rank as a
 * bf16 safetensors file before the test) every rank loads the whole model on its own (the
 * reference) and its shard for the TP x PP grid, runs the same script on both
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
 * A grid that does not fit a model (TP that does not divide its heads, PP above its
 * layers: the 2-head fixtures under TP 4, say) must fail the load on every rank with
 * RECUR_E_INVAL, and nobody may hang.
 * BACKEND cuda exits 77 without a GPU per rank. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "recur_backend.h"
#include "recur_comm.h"
#include "recur_log.h"
#include "recur_model.h"
#include "recur_synth.h"
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

/* tol: the bound of logits and state against one rank (0: the fixtures' own, below) */
static void test_model(const char *path, recur_backend_t *b, recur_comm_t *comm, float tol_given) {
    const recur_grid_t *g = recur_comm_grid(comm);
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = 5;
    p.max_tokens = 8; /* the 12-token prompt is cut across pieces */
    p.pp_micro_min_seqs = 1; /* the few sequences here still go through the stages in micro-batches */
    recur_model_t *ref = NULL, *dist = NULL;
    recur_status_t st = recur_model_load(path, b, &p, &ref);
    CHECK(st == RECUR_OK, "%s: reference load: %s", path, recur_status_str(st));
    if (!ref) return;
    const int expect_fail = recur_model_info(ref)->n_head % g->tp != 0 || recur_model_info(ref)->n_layer < g->pp;
    p.comm = comm;
    const recur_log_level_t lvl0 = recur_log_get_level();
    if (expect_fail) recur_log_set_level(RECUR_LOG_NONE); /* the refusal's message is expected */
    st = recur_model_load(path, b, &p, &dist);
    recur_log_set_level(lvl0);
    if (expect_fail) {
        CHECK(st == RECUR_E_INVAL && !dist, "%s: tp %d x pp %d should not fit this model, load gave %s", path, g->tp,
              g->pp, recur_status_str(st));
        if (g->world_rank == 0 && st == RECUR_E_INVAL)
            printf("%s: tp %d x pp %d does not fit it (%d heads, %d layers): refused on every rank\n", path, g->tp,
                   g->pp, recur_model_info(ref)->n_head, recur_model_info(ref)->n_layer);
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
    const float tol = tol_given > 0 ? tol_given : ri->arch == RECUR_ARCH_XLSTM ? 5e-5f : 1e-5f;
    const float tol_state = tol_given > 0 ? tol_given : 1e-5f;
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
        CHECK(recur_allclose(got.state[i], exp, di->state_bytes / sizeof(float), tol_state, tol_state, "state shard",
                             NULL),
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

/* The 8-layer synthetic models (C 512 / D 256) are wider and deeper than the fixtures, so
 * the split's reordered fp32 sums grow more on the way to the logits and the state:
 * measured over every layout here (TP 2, 4, 8, PP 2, 4, 8, TP 2 x PP 2, TP 4 x PP 2), at
 * most 4.5e-5 for RWKV-7 (TP 2) and, for xLSTM, whose random gates amplify any
 * perturbation (docs/testing.md), 4.3e-4 in the logits and 8.1e-4 in the state (TP 4;
 * PP alone: 0, or 8.2e-5 where micro-batches regroup the sequences). The bounds keep a
 * margin of about 4x; a wrong shard moves values by O(0.1..1). */
#define SYNTH_TOL_RWKV7 2e-4f
#define SYNTH_TOL_XLSTM 3e-3f

/* Writes the synthetic model `name` (recur_synth.h) under dir as bf16 safetensors (and an
 * xLSTM's config.json beside it); its path goes to path. 0 on success. */
static int write_synth(const char *name, const char *dir, char *path, size_t path_n) {
    recur_synth_shape_t shape;
    recur_synth_list_t l;
    if (recur_synth_shape(name, 0, &shape) != RECUR_OK || recur_synth_tensors(&shape, &l) != RECUR_OK) return -1;
    recur_test_tensor_t *t = calloc((size_t)l.n, sizeof *t);
    int rc = t ? 0 : -1;
    for (int32_t i = 0; i < l.n && rc == 0; i++) {
        int64_t n = 1;
        for (int d = 0; d < l.t[i].n_dims; d++) n *= l.t[i].shape[d];
        uint16_t *v = malloc((size_t)n * sizeof *v);
        if (!v) {
            rc = -1;
            break;
        }
        for (int64_t k = 0; k < n; k++) { /* bf16 values: the f32 load is exact */
            float x = recur_virtual_value(1000u + (uint64_t)i, (uint64_t)k, l.t[i].lo, l.t[i].hi);
            uint32_t u;
            memcpy(&u, &x, sizeof u);
            v[k] = (uint16_t)(u >> 16);
        }
        t[i] = (recur_test_tensor_t){.name = l.t[i].name, .dtype = "BF16", .n_dims = l.t[i].n_dims, .data = v,
                                     .n_bytes = (size_t)n * sizeof *v};
        memcpy(t[i].shape, l.t[i].shape, sizeof t[i].shape);
    }
    if (rc == 0 && shape.is_xlstm) {
        char cfg[1024], cpath[4096];
        snprintf(path, path_n, "%s/%s", dir, name);
        FILE *f = NULL;
        rc = snprintf(cpath, sizeof cpath, "%s/config.json", path) < (int)sizeof cpath && mkdir(path, 0700) == 0 &&
                     recur_synth_xlstm_config(&shape, cfg, sizeof cfg) > 0 &&
                     (f = fopen(cpath, "w")) != NULL && fputs(cfg, f) >= 0
                 ? 0
                 : -1;
        if (f && fclose(f) != 0) rc = -1;
        if (rc == 0 && snprintf(cpath, sizeof cpath, "%s/model.safetensors", path) >= (int)sizeof cpath) rc = -1;
        if (rc == 0) rc = recur_write_safetensors(cpath, t, l.n, NULL);
    } else if (rc == 0) {
        snprintf(path, path_n, "%s/%s.safetensors", dir, name);
        rc = recur_write_safetensors(path, t, l.n, NULL);
    }
    for (int32_t i = 0; t && i < l.n; i++) free((void *)t[i].data);
    free(t);
    recur_synth_list_free(&l);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: mpirun -np N %s cpu|cuda TP PP\n", argv[0]);
        return 2;
    }
    const char *backend = argv[1];
    const int tp = atoi(argv[2]), pp = atoi(argv[3]);
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
        test_model(rwkv, b, comm, 0.f);
        test_model(xlstm, b, comm, 0.f);
        /* the 8-head, 8-layer synthetic models: each rank writes its own copy (ranks may be
         * on different hosts) */
        char tmp[512], path[4096];
        if (recur_make_temp_dir(tmp, sizeof tmp) == 0) {
            static const char *const synth[] = {"rwkv7-tiny8", "xlstm-tiny8"};
            static const float synth_tol[] = {SYNTH_TOL_RWKV7, SYNTH_TOL_XLSTM};
            for (size_t i = 0; i < sizeof synth / sizeof synth[0]; i++) {
                const int wrote = write_synth(synth[i], tmp, path, sizeof path) == 0;
                CHECK(wrote, "writing %s under %s", synth[i], tmp);
                if (wrote) test_model(path, b, comm, synth_tol[i]);
            }
            recur_rm_rf(tmp);
        } else {
            CHECK(0, "a temporary directory");
        }
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
        printf("test_dist %s tp %d pp %d: %s\n", backend, tp, pp, all == RECUR_OK ? "ok" : "FAILED");
    return all == RECUR_OK ? 0 : 1;
}
