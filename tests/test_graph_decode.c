/* test_graph_decode.c: decode through recorded CUDA graphs (recur_model.h, use_graphs = 1)
 * against the same steps launched eagerly (use_graphs = 0), on the CUDA backend (label gpu;
 * exits 77 without a GPU).
 *
 * Two models of one checkpoint share one backend: G decodes through graphs (batches padded
 * to a bucket with rows in padding slot 0), E eagerly at the batch's own size. For decode
 * batches of 1, 3, 5 and 17 sequences, 20 steps each:
 *   - sequences sit in interleaved slots, in an order that changes every step;
 *   - one sequence joins mid-way (its slot reset and a 4-token prompt prefilled eagerly,
 *     between graph replays), and with 1 sequence the first leaves when the next joins;
 *   - some steps ask for no logits (the NONE graph) or for ALL (same as LAST here);
 *   - with 17 sequences, a 64-token prefill on a spare slot after step 20 (then 4 more
 *     steps) grows the backend's bf16 GEMM scratch (bf16 weights) after graphs were
 *     recorded against the old one, which must stay valid;
 * and checked: every step's logits and, at the end, every used slot's state, G against E;
 * every slot outside the step's batch unchanged by G's step (padding rows touch slot 0
 * only); G recorded graphs and E none.
 * Before that, the decode GEMV kernels at 7B-like shapes (test_gemv_paths).
 * Equality: bitwise where both run the same kernels on each row (buckets of up to
 * RECUR_QUANT_GEMV_MAX_M = 2 rows: the GEMV kernels, whose per-row arithmetic does not
 * depend on the row count); where G's bucket has more rows the GEMMs go to cuBLAS, whose
 * algorithm (split-K, tile) may change with the row count, so rows agree to fp32 rounding
 * only: |G-E| <= tol * (1 + |E|) with tol 1e-5 (f32 weights) / 1e-4 (bf16 weights, cuBLAS
 * on bf16 inputs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_backend.h"
#include "recur_log.h"
#include "recur_model.h"
#include "recur_model_files.h"
#include "recur_quant.h"
#include "recur_testutil.h"

#define N_SLOTS 40
#define MAX_TOKENS 64
#define STEPS 20
#define JOIN_STEP 8
#define PROMPT 4

static int failures;

typedef struct fx {
    const char *name;
    int fixture; /* 1: under RECUR_FIXTURES_DIR, 0: under the source tree */
    const char *path;
} fx_t;

static const fx_t cases[] = {
    {"rwkv7 tiny", 1, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin"},
    {"rwkv7 synth7", 1, "rwkv7/synth7-C128-H2-L3-FP32.bin"},
    {"xlstm tiny", 0, "tests/fixtures/xlstm-tiny"},
};

/* Largest |g-e| / (1 + |e|) over n values (INFINITY when one is not finite and they differ). */
static double rel_diff(const float *g, const float *e, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (g[i] == e[i]) continue;
        if (!isfinite(g[i]) || !isfinite(e[i])) return INFINITY;
        double d = fabs((double)g[i] - (double)e[i]) / (1.0 + fabs((double)e[i]));
        if (d > worst) worst = d;
    }
    return worst;
}

/* tol 0: bitwise. Returns the difference for the summary. */
static double check_same(const float *g, const float *e, size_t n, double tol, const char *what) {
    int exact = memcmp(g, e, n * sizeof(float)) == 0;
    double d = exact ? 0.0 : rel_diff(g, e, n);
    if (tol == 0.0 ? !exact : !(d <= tol)) {
        fprintf(stderr, "FAIL %s: graph vs eager differ by %.3g (allowed %s)\n", what, d, tol == 0.0 ? "0, bitwise" : "tol");
        failures++;
    }
    return d;
}

static uint32_t tok_of(int j, int s, int V) { return (uint32_t)((j * 131 + s * 31 + 7) % V); }

/* One schedule of decode steps with n sequences in flight (see the header comment). */
static void run_schedule(recur_model_t *G, recur_model_t *E, int n, recur_dtype_t wdt, const char *name,
                         double *worst) {
    const int V = recur_model_info(G)->n_vocab;
    const size_t S = recur_model_info(G)->state_bytes / sizeof(float); /* f32 state */
    const int n_seqs = n == 1 ? 2 : n; /* with one sequence, the joiner replaces the first */
    int32_t slot_of[32];
    for (int j = 0; j < n_seqs; j++) slot_of[j] = 1 + (j * 7 + n) % (N_SLOTS - 1); /* distinct: 7 and 39 coprime */
    float *lg = malloc((size_t)MAX_TOKENS * V * sizeof(float)), *le = malloc((size_t)MAX_TOKENS * V * sizeof(float));
    float *before = malloc((size_t)N_SLOTS * S * sizeof(float)), *sg = malloc(S * sizeof(float));
    float *se = malloc(S * sizeof(float));
    char what[256];
    /* Every slot starts from a recognisable random state, the same in G and E. */
    uint32_t rng = 12345u + (uint32_t)n;
    for (int32_t sl = 1; sl < N_SLOTS; sl++) {
        for (size_t i = 0; i < S; i++) {
            rng = rng * 1664525u + 1013904223u;
            sg[i] = (float)((rng >> 8) * 0x1.0p-24) * 0.2f - 0.1f;
        }
        recur_model_state_set(G, sl, sg);
        recur_model_state_set(E, sl, sg);
    }
    for (int j = 0; j < n_seqs; j++) {
        recur_model_state_reset(G, slot_of[j]);
        recur_model_state_reset(E, slot_of[j]);
    }
    const int steps = n == 17 ? STEPS + 4 : STEPS;
    int32_t spare = 1; /* a slot no sequence uses, for the large prefill */
    for (int j = 0; j < n_seqs; j++)
        if (slot_of[j] == spare) { spare++; j = -1; }
    for (int s = 0; s < steps; s++) {
        /* active sequences this step */
        int act[32], na = 0;
        for (int j = 0; j < n_seqs; j++) {
            int on = n == 1 ? (j == 0 ? s < JOIN_STEP : s >= JOIN_STEP) : (j < n - 1 || s >= JOIN_STEP);
            if (on) act[na++] = j;
        }
        if (s == JOIN_STEP) { /* the joiner: fresh slot, its prompt prefilled (eager path) */
            const int j = n_seqs - 1;
            int32_t ptok[PROMPT], len = PROMPT, sl = slot_of[j];
            for (int t = 0; t < PROMPT; t++) ptok[t] = (int32_t)tok_of(j + 100, t, V);
            recur_batch_t pb = {.n_seq = 1, .tokens = ptok, .seq_len = &len, .slot = &sl, .logits = RECUR_LOGITS_LAST};
            recur_model_state_reset(G, sl);
            recur_model_state_reset(E, sl);
            if (recur_model_forward(G, &pb, lg) != RECUR_OK || recur_model_forward(E, &pb, le) != RECUR_OK) failures++;
            snprintf(what, sizeof what, "%s %s n=%d joiner prompt", name, recur_dtype_name(wdt), n);
            check_same(lg, le, (size_t)V, 0.0, what);
        }
        if (s == STEPS) {
            /* A prefill of max_tokens rows on a spare slot grows the GEMM's bf16 scratch
             * past what the recorded graphs were made with. */
            int32_t ptok[MAX_TOKENS], len = MAX_TOKENS, sl = spare;
            for (int t = 0; t < MAX_TOKENS; t++) ptok[t] = (int32_t)tok_of(7, t, V);
            recur_batch_t pb = {.n_seq = 1, .tokens = ptok, .seq_len = &len, .slot = &sl, .logits = RECUR_LOGITS_NONE};
            if (recur_model_forward(G, &pb, NULL) != RECUR_OK || recur_model_forward(E, &pb, NULL) != RECUR_OK) failures++;
        }
        /* the batch: active sequences rotated by the step, reversed on odd steps */
        int32_t tok[32], len[32], sl[32];
        for (int i = 0; i < na; i++) {
            int j = act[(i + s) % na];
            if (s & 1) j = act[(na - 1 - i + s) % na];
            tok[i] = (int32_t)tok_of(j, s, V);
            len[i] = 1;
            sl[i] = slot_of[j];
        }
        recur_logits_mode_t mode = s % 7 == 5 ? RECUR_LOGITS_NONE : s % 7 == 6 ? RECUR_LOGITS_ALL : RECUR_LOGITS_LAST;
        recur_batch_t bt = {.n_seq = na, .tokens = tok, .seq_len = len, .slot = sl, .logits = mode};
        /* slots outside the batch, before G's step */
        for (int32_t q = 1; q < N_SLOTS; q++) recur_model_state_get(G, q, before + (size_t)q * S);
        if (recur_model_forward(G, &bt, mode == RECUR_LOGITS_NONE ? NULL : lg) != RECUR_OK) failures++;
        if (recur_model_forward(E, &bt, mode == RECUR_LOGITS_NONE ? NULL : le) != RECUR_OK) failures++;
        for (int32_t q = 1; q < N_SLOTS; q++) {
            int in_batch = 0;
            for (int i = 0; i < na; i++) in_batch |= sl[i] == q;
            if (in_batch) continue;
            recur_model_state_get(G, q, sg);
            if (memcmp(sg, before + (size_t)q * S, S * sizeof(float)) != 0) {
                fprintf(stderr, "FAIL %s %s n=%d step %d: slot %d, not in the batch, changed\n", name,
                        recur_dtype_name(wdt), n, s, q);
                failures++;
            }
        }
        /* The bucket: up to the GEMV rows it stays on the GEMV path in both models (bitwise):
         * na rows run in the bucket of the next power of two */
        int bucket = 1;
        while (bucket < na) bucket *= 2;
        const int bucket_small = bucket <= RECUR_QUANT_GEMV_MAX_M;
        const double tol = bucket_small ? 0.0 : wdt == RECUR_DTYPE_F32 ? 1e-5 : 1e-4;
        if (mode != RECUR_LOGITS_NONE) {
            snprintf(what, sizeof what, "%s %s n=%d step %d (batch %d) logits", name, recur_dtype_name(wdt), n, s, na);
            double d = check_same(lg, le, (size_t)na * V, tol, what);
            if (d > *worst) *worst = d;
        }
    }
    for (int j = 0; j < n_seqs; j++) {
        recur_model_state_get(G, slot_of[j], sg);
        recur_model_state_get(E, slot_of[j], se);
        snprintf(what, sizeof what, "%s %s n=%d final state of sequence %d (slot %d)", name, recur_dtype_name(wdt), n,
                 j, slot_of[j]);
        /* bitwise only where every step's bucket stayed on the GEMV rows (as above) */
        int bucket = 1;
        while (bucket < n) bucket *= 2;
        const double tol = bucket <= RECUR_QUANT_GEMV_MAX_M ? 0.0 : wdt == RECUR_DTYPE_F32 ? 1e-5 : 1e-4;
        double d = check_same(sg, se, S, tol, what);
        if (d > *worst) *worst = d;
    }
    free(lg);
    free(le);
    free(before);
    free(sg);
    free(se);
}

static void run_case(const fx_t *c, recur_dtype_t wdt) {
    char path[1200];
    if (c->fixture) recur_fixture_path(path, sizeof path, c->path);
    else recur_source_path(path, sizeof path, c->path);
    recur_backend_params_t bp = recur_backend_default_params();
    bp.weight_dtype = wdt;
    recur_backend_t *b = NULL;
    recur_model_t *G = NULL, *E = NULL;
    recur_model_params_t mp = recur_model_default_params();
    mp.n_slots = N_SLOTS;
    mp.max_tokens = MAX_TOKENS;
    mp.use_graphs = 1;
    recur_model_params_t me = mp;
    me.use_graphs = 0;
    if (recur_backend_init("cuda", &bp, &b) != RECUR_OK || recur_model_load(path, b, &mp, &G) != RECUR_OK ||
        recur_model_load(path, b, &me, &E) != RECUR_OK) {
        fprintf(stderr, "FAIL %s: cannot load %s\n", c->name, path);
        failures++;
    } else {
        static const int sizes[] = {1, 3, 5, 17};
        double worst_small = 0.0, worst_large = 0.0;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            run_schedule(G, E, sizes[i], wdt, c->name,
                         sizes[i] <= RECUR_QUANT_GEMV_MAX_M ? &worst_small : &worst_large);
        int32_t ng = recur_model_n_graphs(G), ne = recur_model_n_graphs(E);
        fprintf(stderr, "%-14s %-4s graphs recorded %d (eager model %d); graph vs eager: batch 1 (GEMV) %s, "
                        "batches 3-17 max rel diff %.3g\n",
                c->name, recur_dtype_name(wdt), ng, ne, worst_small == 0.0 ? "bitwise" : "DIFFER", worst_large);
        /* buckets 1, 2, 4, 8, 16, 24 with logits, several with none */
        if (ng < 6 || ne != 0) {
            fprintf(stderr, "FAIL %s: expected >= 6 graphs in G and none in E\n", c->name);
            failures++;
        }
    }
    recur_model_free(G);
    recur_model_free(E);
    recur_backend_free(b);
}

/* The decode GEMV kernels at 7B shapes, which the fixtures are too small to reach (at up
 * to 8 rows, RECUR_GEMV_MAX_M=8: by default they take RECUR_QUANT_GEMV_MAX_M = 2 rows and
 * the GEMMs the rest, but the A/B switch keeps the rest of them in use):
 * split-K (few, long rows: the LoRA down-projections and gate projections) and, with bf16
 * weights at M >= 3, the tensor-core kernel (x split into three bf16 parts, fp32-class
 * accuracy). Every row of every M from 1 to 8 (distinct x rows) against a float64 host
 * product, and bit for bit against the same row at M = 8 wherever M and 8 take the same
 * kernel (the shape alone picks split-K; the tensor-core kernel serves every M >= 3 of its
 * shapes): the bitwise graph-vs-eager checks below rely on a row not depending on M.
 * Also times M = 1 and 8 (eager launches, so small shapes show the launch rate). */
static void test_gemv_paths(recur_dtype_t wdt) {
    recur_backend_params_t bp = recur_backend_default_params();
    bp.weight_dtype = wdt;
    recur_backend_t *b = NULL;
    setenv("RECUR_GEMV_MAX_M", "8", 1);
    const recur_status_t st = recur_backend_init("cuda", &bp, &b);
    unsetenv("RECUR_GEMV_MAX_M");
    if (st != RECUR_OK || !b->iface.weight_random) {
        failures++;
        recur_backend_free(b);
        return;
    }
    /* N, K: split-K (N < 1024, long K); tensor-core shapes with bf16 (N >= 1024, K % 32 == 0,
     * K >= 1024), N not a multiple of the 32-row tile and K not of the 256-wide warp round */
    static const int shapes[][2] = {{8, 4096}, {128, 4096}, {480, 4096}, {100, 8200}, {1040, 4096}, {2048, 1056}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int N = shapes[si][0], K = shapes[si][1];
        const int mma_shape = wdt == RECUR_DTYPE_BF16 && N >= 1024 && K % 32 == 0 && K >= 1024;
        const uint64_t seed = 11 + si;
        recur_weight_t w = {0};
        float *x = malloc((size_t)8 * K * sizeof(float)), *y = malloc((size_t)8 * N * sizeof(float));
        float *y8 = malloc((size_t)8 * N * sizeof(float)), *wh = malloc((size_t)K * sizeof(float));
        double *ref = malloc((size_t)8 * N * sizeof(double));
        float *dx = b->iface.alloc(b, (size_t)8 * K * sizeof(float)), *dy = b->iface.alloc(b, (size_t)8 * N * sizeof(float));
        if (b->iface.weight_random(b, N, K, seed, -0.02f, 0.02f, 0, 0, K, RECUR_WEIGHT_PROJ, &w) != RECUR_OK || !dx || !dy) {
            failures++;
            goto next;
        }
        uint32_t rng = 777u + (uint32_t)si;
        for (size_t i = 0; i < (size_t)8 * K; i++) {
            rng = rng * 1664525u + 1013904223u;
            x[i] = (float)((rng >> 8) * 0x1.0p-24) * 2.f - 1.f;
        }
        for (int n = 0; n < N; n++) {
            for (int k = 0; k < K; k++) {
                float wv = recur_virtual_value(seed, (uint64_t)n * K + k, -0.02f, 0.02f);
                if (wdt == RECUR_DTYPE_BF16) {
                    uint32_t u;
                    memcpy(&u, &wv, 4);
                    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u; /* round to nearest even */
                    memcpy(&wv, &u, 4);
                }
                wh[k] = wv;
            }
            for (int m = 0; m < 8; m++) {
                double acc = 0.0;
                for (int k = 0; k < K; k++) acc += (double)x[(size_t)m * K + k] * wh[k];
                ref[(size_t)m * N + n] = acc;
            }
        }
        b->iface.upload(b, dx, x, (size_t)8 * K * sizeof(float));
        b->iface.matmul(b, dx, &w, 8, dy, 0);
        b->iface.download(b, y8, dy, (size_t)8 * N * sizeof(float));
        double worst = 0.0;
        for (int M = 1; M <= 8; M++) {
            b->iface.memzero(b, dy, (size_t)8 * N * sizeof(float));
            b->iface.matmul(b, dx, &w, M, dy, 0);
            b->iface.matmul(b, dx, &w, M, dy, 1); /* accumulate: 2 x (W.x) */
            b->iface.download(b, y, dy, (size_t)M * N * sizeof(float));
            const int same_kernel_as_8 = !mma_shape || M >= 3;
            int bad_ref = 0, bad_bits = 0;
            for (size_t i = 0; i < (size_t)M * N; i++) {
                double d = fabs((double)y[i] - 2.0 * ref[i]);
                if (d > worst) worst = d;
                bad_ref += !(d <= 2e-4);
                bad_bits += same_kernel_as_8 && y[i] != 2.f * y8[i];
            }
            if (bad_ref || bad_bits) {
                fprintf(stderr, "FAIL gemv %s %dx%d M=%d: %d values off the float64 product, %d differ from M=8's\n",
                        recur_dtype_name(wdt), N, K, M, bad_ref, bad_bits);
                failures++;
            }
        }
        double us[2];
        for (int i = 0; i < 2; i++) {
            const int M = i ? 8 : 1;
            b->iface.synchronize(b);
            double t0 = recur_test_now_s();
            for (int r = 0; r < 200; r++) b->iface.matmul(b, dx, &w, M, dy, 0);
            b->iface.synchronize(b);
            us[i] = (recur_test_now_s() - t0) / 200 * 1e6;
        }
        fprintf(stderr, "gemv %-4s %4dx%-5d %-11s M=1 %.2f us, M=8 %.2f us per call (eager); max |d| vs float64 %.2g\n",
                recur_dtype_name(wdt), N, K, N < 1024 ? "(split-K)" : mma_shape ? "(tensor M>2)" : "", us[0], us[1],
                worst / 2);
    next:
        b->iface.weight_free(b, &w);
        b->iface.buf_free(b, dx);
        b->iface.buf_free(b, dy);
        free(x);
        free(y);
        free(y8);
        free(wh);
        free(ref);
    }
    recur_backend_free(b);
}

int main(void) {
    if (recur_test_no_cuda()) return RECUR_TEST_SKIP;
    test_gemv_paths(RECUR_DTYPE_F32);
    test_gemv_paths(RECUR_DTYPE_BF16);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], RECUR_DTYPE_F32);
        run_case(&cases[i], RECUR_DTYPE_BF16);
    }
    fprintf(stderr, "%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
