/* test_rwkv7_invariants.c: properties of the recurrent forward pass that must hold
 * whatever the weights, checked on the real tiny model and the 2-head synthetic one:
 *   - token-by-token == one prefill call == prefill cut into chunks of any size;
 *   - a batch of different sequences (mixed lengths, shuffled slots, cut across pieces)
 *     == each sequence alone; a batched decode step == single decode steps;
 *   - a forked state (slot copy) continues exactly like the original;
 *   - rejected input (bad slot, repeated slot, token outside the vocabulary, empty
 *     sequence) changes no state.
 * On the CPU backend every row is computed by the same code in the same order whatever
 * the batch shape, so these comparisons are exact (bitwise); a backend with
 * shape-dependent reductions would need a tolerance here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_backend.h"
#include "recur_model.h"
#include "recur_testutil.h"

static int failures;

typedef struct ctx {
    recur_backend_t *b;
    recur_model_t *m;
    int V;
    size_t S;
} ctx_t;

static int open_model(ctx_t *c, const char *rel, int n_slots, int max_tokens) {
    char path[1024];
    recur_fixture_path(path, sizeof path, rel);
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = n_slots;
    p.max_tokens = max_tokens;
    if (recur_backend_init("cpu", NULL, &c->b) != RECUR_OK || recur_model_load(path, c->b, &p, &c->m) != RECUR_OK) return -1;
    c->V = recur_model_info(c->m)->n_vocab;
    c->S = recur_model_info(c->m)->state_bytes / sizeof(float); /* f32 state */
    return 0;
}

static void close_model(ctx_t *c) {
    recur_model_free(c->m);
    recur_backend_free(c->b);
    c->m = NULL;
    c->b = NULL;
}

static int forward1(ctx_t *c, int32_t slot, const int32_t *toks, int32_t n, recur_logits_mode_t mode, float *lg) {
    recur_batch_t bt = {.n_seq = 1, .tokens = toks, .seq_len = &n, .slot = &slot, .logits = mode};
    return recur_model_forward(c->m, &bt, lg);
}

static void expect_same(const float *a, const float *b, size_t n, const char *what) {
    if (!recur_allclose(a, b, n, 0.f, 0.f, what, NULL)) failures++;
}

static int32_t *load_tokens(const char *rel, size_t *n) {
    uint32_t *u = recur_read_fixture32(rel, n);
    if (!u) return NULL;
    int32_t *t = malloc(*n * sizeof *t);
    for (size_t i = 0; i < *n; i++) t[i] = (int32_t)u[i];
    free(u);
    return t;
}

/* token-by-token == one call == chunked, for logits and the final state. */
static void test_chunking(const char *model, const char *tok_rel) {
    size_t n = 0;
    int32_t *toks = load_tokens(tok_rel, &n);
    ctx_t c = {0};
    if (!toks || open_model(&c, model, 2, 128) != 0) { failures++; free(toks); return; }
    float *ref = malloc(n * c.V * sizeof(float)), *lg = malloc(n * c.V * sizeof(float));
    float *ref_st = malloc(c.S * sizeof(float)), *st = malloc(c.S * sizeof(float));
    recur_model_state_reset(c.m, 1);
    for (size_t t = 0; t < n; t++)
        if (forward1(&c, 1, toks + t, 1, RECUR_LOGITS_LAST, ref + t * c.V) != RECUR_OK) failures++;
    recur_model_state_get(c.m, 1, ref_st);
    close_model(&c);

    static const int chunks[] = {1, 2, 3, 7, 16, 33, 128};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        char what[160];
        memset(lg, 0, n * c.V * sizeof(float));
        char path[1024];
        recur_fixture_path(path, sizeof path, model);
        if (recur_test_run_model(path, toks, (int)n, chunks[i], NULL, lg, st, NULL, NULL) != 0) { failures++; continue; }
        snprintf(what, sizeof what, "%s prefill chunk %d logits", model + 6, chunks[i]);
        expect_same(lg, ref, n * c.V, what);
        snprintf(what, sizeof what, "%s prefill chunk %d state", model + 6, chunks[i]);
        expect_same(st, ref_st, c.S, what);
    }
    free(toks);
    free(ref);
    free(lg);
    free(ref_st);
    free(st);
}

/* A batch of different sequences, cut across pieces, == each alone; then one batched
 * decode step == single decode steps. */
static void test_batch_vs_alone(const char *model, const char *tok_rel, int max_tokens) {
    size_t n = 0;
    int32_t *toks = load_tokens(tok_rel, &n);
    enum { NS = 4 };
    const int32_t len[NS] = {1, 5, 17, 30}, start[NS] = {3, 0, 20, 9}, slot[NS] = {3, 1, 4, 2};
    const int32_t next[NS] = {101, 32, 7, 200};
    ctx_t c = {0};
    if (!toks || n < 40 || open_model(&c, model, 6, max_tokens) != 0) { failures++; free(toks); return; }
    int total = 0;
    for (int s = 0; s < NS; s++) total += len[s];
    int32_t *bt_tok = malloc((size_t)total * sizeof(int32_t));
    float *lg = malloc((size_t)total * c.V * sizeof(float)), *alone = malloc(40 * (size_t)c.V * sizeof(float));
    float *dec = malloc(NS * (size_t)c.V * sizeof(float)), *dec1 = malloc((size_t)c.V * sizeof(float));
    float *st_b = malloc(c.S * sizeof(float)), *st_a = malloc(c.S * sizeof(float));
    for (int s = 0, o = 0; s < NS; o += len[s], s++) memcpy(bt_tok + o, toks + start[s], (size_t)len[s] * sizeof(int32_t));
    for (int s = 0; s < NS; s++) recur_model_state_reset(c.m, slot[s]);
    recur_batch_t bt = {.n_seq = NS, .tokens = bt_tok, .seq_len = len, .slot = slot, .logits = RECUR_LOGITS_ALL};
    if (recur_model_forward(c.m, &bt, lg) != RECUR_OK) failures++;
    /* decode step for all four at once */
    int32_t one[NS] = {1, 1, 1, 1};
    recur_batch_t dbt = {.n_seq = NS, .tokens = next, .seq_len = one, .slot = slot, .logits = RECUR_LOGITS_LAST};
    if (recur_model_forward(c.m, &dbt, dec) != RECUR_OK) failures++;

    char what[160];
    for (int s = 0, o = 0; s < NS; o += len[s], s++) {
        recur_model_state_get(c.m, slot[s], st_b);
        recur_model_state_reset(c.m, 5);
        if (forward1(&c, 5, toks + start[s], len[s], RECUR_LOGITS_ALL, alone) != RECUR_OK) failures++;
        snprintf(what, sizeof what, "%s batch(max %d) seq %d prefill", model + 6, max_tokens, s);
        expect_same(lg + (size_t)o * c.V, alone, (size_t)len[s] * c.V, what);
        if (forward1(&c, 5, &next[s], 1, RECUR_LOGITS_LAST, dec1) != RECUR_OK) failures++;
        snprintf(what, sizeof what, "%s batch(max %d) seq %d decode", model + 6, max_tokens, s);
        expect_same(dec + (size_t)s * c.V, dec1, c.V, what);
        recur_model_state_get(c.m, 5, st_a);
        snprintf(what, sizeof what, "%s batch(max %d) seq %d state", model + 6, max_tokens, s);
        expect_same(st_b, st_a, c.S, what);
    }
    close_model(&c);
    free(toks);
    free(bt_tok);
    free(lg);
    free(alone);
    free(dec);
    free(dec1);
    free(st_b);
    free(st_a);
}

/* A fork continues exactly like its original, and running it leaves the original alone. */
static void test_fork(void) {
    size_t n = 0;
    int32_t *toks = load_tokens("rwkv7/tiny7-ref-tokens.u32", &n);
    ctx_t c = {0};
    if (!toks || open_model(&c, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin", 4, 64) != 0) { failures++; free(toks); return; }
    float *a = malloc(20 * (size_t)c.V * sizeof(float)), *b = malloc(20 * (size_t)c.V * sizeof(float));
    float *s1 = malloc(c.S * sizeof(float)), *s1_after = malloc(c.S * sizeof(float));
    recur_model_state_reset(c.m, 1);
    forward1(&c, 1, toks, 30, RECUR_LOGITS_NONE, NULL);
    if (recur_model_state_copy(c.m, 2, 1) != RECUR_OK) failures++;
    recur_model_state_get(c.m, 1, s1);
    forward1(&c, 2, toks + 30, 20, RECUR_LOGITS_ALL, b); /* run the fork first */
    recur_model_state_get(c.m, 1, s1_after);
    expect_same(s1_after, s1, c.S, "fork: original untouched by the fork's run");
    forward1(&c, 1, toks + 30, 20, RECUR_LOGITS_ALL, a);
    expect_same(b, a, 20 * (size_t)c.V, "fork: same continuation");
    close_model(&c);
    free(toks);
    free(a);
    free(b);
    free(s1);
    free(s1_after);
}

/* Bad batches are rejected with RECUR_E_INVAL and leave every state as it was. */
static void test_rejects(void) {
    ctx_t c = {0};
    if (open_model(&c, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin", 4, 8) != 0) { failures++; return; }
    float *before = malloc(3 * c.S * sizeof(float)), *after = malloc(3 * c.S * sizeof(float));
    float *lg = malloc(64 * (size_t)c.V * sizeof(float));
    int32_t toks[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    for (int s = 1; s <= 3; s++) {
        recur_model_state_reset(c.m, s);
        forward1(&c, s, toks, 3 + s, RECUR_LOGITS_NONE, NULL);
        recur_model_state_get(c.m, s, before + (size_t)(s - 1) * c.S);
    }
    struct { const char *what; int32_t n_seq; int32_t len[2]; int32_t slot[2]; int32_t bad_tok; } cases[] = {
        {"slot 0 (padding)", 1, {3, 0}, {0, 0}, -1},
        {"slot >= n_slots", 1, {3, 0}, {4, 0}, -1},
        {"negative slot", 1, {3, 0}, {-1, 0}, -1},
        {"repeated slot", 2, {3, 2}, {2, 2}, -1},
        {"token id = n_vocab (late in a long batch)", 2, {3, 9}, {1, 2}, 256},
        {"negative token id", 2, {3, 9}, {1, 2}, -5},
        {"empty sequence", 2, {3, 0}, {1, 2}, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t t2[12];
        memcpy(t2, toks, sizeof t2);
        if (cases[i].bad_tok != -1) t2[11] = cases[i].bad_tok;
        recur_batch_t bt = {.n_seq = cases[i].n_seq, .tokens = t2, .seq_len = cases[i].len, .slot = cases[i].slot,
                            .logits = RECUR_LOGITS_ALL};
        recur_status_t st = recur_model_forward(c.m, &bt, lg);
        fprintf(stderr, "reject %-45s -> %s\n", cases[i].what, recur_status_str(st));
        if (st != RECUR_E_INVAL) failures++;
    }
    for (int s = 1; s <= 3; s++) recur_model_state_get(c.m, s, after + (size_t)(s - 1) * c.S);
    expect_same(after, before, 3 * c.S, "states after rejected batches");
    close_model(&c);
    free(before);
    free(after);
    free(lg);
}

/* n_slots 0 (fit the pool to free memory) needs a backend that reports its memory: the
 * CPU backend does not, so the load is refused with a status, not guessed. */
static void test_auto_slots_refused_without_mem_info(void) {
    char path[1024];
    recur_fixture_path(path, sizeof path, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin");
    recur_backend_t *b = NULL;
    recur_model_t *m = NULL;
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = 0;
    recur_backend_init("cpu", NULL, &b);
    recur_status_t st = recur_model_load(path, b, &p, &m);
    fprintf(stderr, "n_slots 0 on the CPU backend -> %s\n", recur_status_str(st));
    RECUR_CHECK(&failures, st == RECUR_E_INVAL && m == NULL);
    recur_model_free(m);
    recur_backend_free(b);
}

/* recur_model_params_t.skip_kernels (recur bench --skip): the names parse to their bits,
 * and a forward without the recurrence and the token shifts leaves the state as it was
 * (it changes it with every kernel run), while the model loads and runs. */
static void test_skip_kernels(void) {
    uint32_t mask = 7;
    if (recur_skip_parse("norm1,shift1", &mask) != 0 || mask != (RECUR_SKIP_NORM1 | RECUR_SKIP_SHIFT1)) failures++;
    if (recur_skip_parse("recur_out,ffn_down", &mask) != 0 || mask != (RECUR_SKIP_RECUR_OUT | RECUR_SKIP_FFN_DOWN))
        failures++;
    if (recur_skip_parse("none", &mask) != 0 || mask != 0) failures++;
    if (recur_skip_parse("", &mask) != 0 || mask != 0) failures++;
    mask = 5;
    if (recur_skip_parse("out,recurr", &mask) != -1 || mask != 5) failures++; /* unknown: refused, mask kept */
    if (recur_skip_parse("head", &mask) != -1) failures++;
    size_t n = 0;
    int32_t *toks = load_tokens("rwkv7/tiny7-ref-tokens.u32", &n);
    for (int skip = 0; skip < 2 && toks; skip++) {
        char path[1024];
        recur_fixture_path(path, sizeof path, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin");
        recur_model_params_t p = recur_model_default_params();
        p.n_slots = 2;
        p.max_tokens = 16;
        p.skip_kernels = skip ? RECUR_SKIP_RECUR | RECUR_SKIP_SHIFT1 | RECUR_SKIP_SHIFT2 : 0;
        ctx_t c = {0};
        if (recur_backend_init("cpu", NULL, &c.b) != RECUR_OK || recur_model_load(path, c.b, &p, &c.m) != RECUR_OK) {
            failures++;
            close_model(&c);
            break;
        }
        c.V = recur_model_info(c.m)->n_vocab;
        c.S = recur_model_info(c.m)->state_bytes / sizeof(float);
        float *s0 = malloc(c.S * sizeof(float)), *s1 = malloc(c.S * sizeof(float)), *lg = malloc((size_t)c.V * sizeof(float));
        recur_model_state_reset(c.m, 1);
        recur_model_state_get(c.m, 1, s0);
        if (forward1(&c, 1, toks, 8, RECUR_LOGITS_LAST, lg) != RECUR_OK) failures++;
        recur_model_state_get(c.m, 1, s1);
        const int same = memcmp(s0, s1, c.S * sizeof(float)) == 0;
        if (same != skip) {
            fprintf(stderr, "skip_kernels %s: the state %s  FAIL\n", skip ? "recur,shift1,shift2" : "none",
                    same ? "did not change" : "changed");
            failures++;
        }
        free(s0);
        free(s1);
        free(lg);
        close_model(&c);
    }
    free(toks);
}

int main(void) {
    test_auto_slots_refused_without_mem_info();
    test_chunking("rwkv7/tiny-rwkv-7v0-834K-FP32.bin", "rwkv7/tiny7-ref-tokens.u32");
    test_chunking("rwkv7/synth7-C128-H2-L3-FP32.bin", "rwkv7/synth7-ref-tokens.u32");
    test_batch_vs_alone("rwkv7/tiny-rwkv-7v0-834K-FP32.bin", "rwkv7/tiny7-ref-tokens.u32", 128);
    test_batch_vs_alone("rwkv7/tiny-rwkv-7v0-834K-FP32.bin", "rwkv7/tiny7-ref-tokens.u32", 8);
    test_batch_vs_alone("rwkv7/synth7-C128-H2-L3-FP32.bin", "rwkv7/synth7-ref-tokens.u32", 13);
    test_fork();
    test_rejects();
    test_skip_kernels();
    fprintf(stderr, "%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
