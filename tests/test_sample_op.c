/* test_sample_op.c: the backend sample op (recur_backend.h; its exact definition is
 * kernels/recur_sample_op.h) on the backend named by argv[1] ("cpu" by default).
 *
 * Checks: the shared arithmetic (uniform draw, exp, fixed-point masses, rank keys);
 * greedy == the exact argmax (ties, NaN, +-inf); ids >= n_valid never chosen; top_k = 1
 * is greedy; tokens depend only on (logits, params), not on the run or the batch position;
 * frequencies over many (seed, step) draws follow the distribution the parameters define
 * (temperature, top-k, top-p, min-p; 5 standard errors); logit bias and penalties change
 * exactly the listed logits by the documented arithmetic (bit for bit) and greedy and
 * sampling follow them (a frequency or presence penalty on the argmax moves greedy to the
 * runner-up, repetition divides positive and multiplies negative logits, bias -100 bans
 * and +100 forces a token); logprobs equal a double-precision log-softmax of the
 * processed logits within 1e-5 (plus float's 1e-6 relative for values far below 0), the
 * top ids are the most likely in order (lowest id on ties), the sampled token's logprob is
 * its entry there, and rows that ask nothing get padding. For a backend other than cpu,
 * also: its tokens equal the CPU backend's, token for token, on 200 rows of 65536 ids under
 * several parameter sets (the op is exact integer arithmetic on bit-identical weights, so
 * no mismatch is allowed); with random bias, penalties and logprobs (V 65536 x 260 rows,
 * 262144 x 8, 50277 x 33) its processed logits are bit-identical to the CPU's, its tokens
 * and top ids equal, its logprobs within 1e-6; and the time of 1 x 65536 and 256 x 65536,
 * also with extras.
 * argv[2] = "quick": fewer draws and rows and no timing, for runs under compute-sanitizer;
 * "tiny": no frequencies and one row of each kind (for racecheck, the slowest tool);
 * "time": only the timings (for a profiler).
 * Exit 77 when the backend cannot be created (no GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recur_backend.h"
#include "recur_sample_op.h"
#include "recur_testutil.h"

static int failures;
static int quick; /* argv[2]: 1 = "quick", 2 = "tiny" */

/* ------------------------------------------------------------------ small helpers */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }
static float rng_gauss(uint64_t *s) {
    double u = rng_unif(s), v = rng_unif(s);
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static recur_sample_row_t prm(float T, int32_t top_k, float top_p, float min_p, uint64_t seed, uint64_t step) {
    return (recur_sample_row_t){.temperature = T, .top_k = top_k, .top_p = top_p, .min_p = min_p, .seed = seed,
                                .step = step};
}

/* Copies n bytes of host memory to new backend memory (NULL for n = 0). */
static void *to_dev(recur_backend_t *b, const void *host, size_t n) {
    if (!n) return NULL;
    void *d = b->iface.alloc(b, n);
    if (!d) {
        fprintf(stderr, "to_dev: allocation failed\n");
        exit(1);
    }
    b->iface.upload(b, d, host, n);
    return d;
}

/* Runs the op on backend b over host arrays (copies in and out). ex: host arrays (NULL:
 * no extras); its outputs are copied back into ex's host arrays; logits_out (may be NULL)
 * gets the logits as the op left them. */
static void run_op_ex(recur_backend_t *b, const float *logits, int32_t n, int32_t V, int32_t nv,
                      const recur_sample_row_t *p, const recur_sample_extras_t *ex, int32_t *tokens,
                      float *logits_out) {
    size_t lb = (size_t)n * (size_t)V * sizeof(float);
    float *dl = to_dev(b, logits, lb);
    recur_sample_row_t *dp = to_dev(b, p, (size_t)n * sizeof *dp);
    int32_t *dt = b->iface.alloc(b, (size_t)n * sizeof *dt);
    recur_sample_extras_t dex = {0};
    if (ex) {
        dex = *ex;
        size_t nb = (size_t)(ex->n_bias > 0 ? ex->n_bias : 0), nh = (size_t)(ex->n_hist > 0 ? ex->n_hist : 0);
        size_t k = ex->logprob ? (size_t)ex->top_n : 0;
        dex.bias_off = ex->bias_off ? to_dev(b, ex->bias_off, ((size_t)n + 1) * sizeof(int32_t)) : NULL;
        dex.bias = to_dev(b, ex->bias, nb * sizeof *ex->bias);
        dex.hist_off = ex->hist_off ? to_dev(b, ex->hist_off, ((size_t)n + 1) * sizeof(int32_t)) : NULL;
        dex.hist = to_dev(b, ex->hist, nh * sizeof *ex->hist);
        dex.logprob = NULL, dex.top_token = NULL, dex.top_logprob = NULL;
        if (ex->logprob) {
            dex.logprob = b->iface.alloc(b, (size_t)n * sizeof(float));
            dex.top_token = k ? b->iface.alloc(b, (size_t)n * k * sizeof(int32_t)) : NULL;
            dex.top_logprob = k ? b->iface.alloc(b, (size_t)n * k * sizeof(float)) : NULL;
        }
    }
    if (!dt) {
        fprintf(stderr, "run_op: allocation failed\n");
        exit(1);
    }
    recur_status_t st = b->iface.sample(b, dl, n, V, nv, dp, ex ? &dex : NULL, dt);
    RECUR_CHECK(&failures, st == RECUR_OK);
    b->iface.download(b, tokens, dt, (size_t)n * sizeof *dt);
    if (logits_out) b->iface.download(b, logits_out, dl, lb);
    if (ex && ex->logprob) {
        size_t k = (size_t)ex->top_n;
        b->iface.download(b, ex->logprob, dex.logprob, (size_t)n * sizeof(float));
        if (k) {
            b->iface.download(b, ex->top_token, dex.top_token, (size_t)n * k * sizeof(int32_t));
            b->iface.download(b, ex->top_logprob, dex.top_logprob, (size_t)n * k * sizeof(float));
        }
    }
    if (ex) {
        b->iface.buf_free(b, (void *)dex.bias_off);
        b->iface.buf_free(b, (void *)dex.bias);
        b->iface.buf_free(b, (void *)dex.hist_off);
        b->iface.buf_free(b, (void *)dex.hist);
        b->iface.buf_free(b, dex.logprob);
        b->iface.buf_free(b, dex.top_token);
        b->iface.buf_free(b, dex.top_logprob);
    }
    b->iface.buf_free(b, dl);
    b->iface.buf_free(b, dp);
    b->iface.buf_free(b, dt);
}

static void run_op(recur_backend_t *b, const float *logits, int32_t n, int32_t V, int32_t nv,
                   const recur_sample_row_t *p, int32_t *tokens) {
    run_op_ex(b, logits, n, V, nv, p, NULL, tokens, NULL);
}

/* The exact argmax: finite logits only, lowest id on ties, 0 if none. */
static int32_t ref_argmax(const float *l, int32_t nv) {
    int32_t best = 0;
    float bv = -INFINITY;
    int any = 0;
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i]) && (!any || l[i] > bv)) { bv = l[i]; best = i; any = 1; }
    return best;
}

typedef struct refc { float s; int32_t id; double w; } refc_t;
static int refc_cmp(const void *a, const void *b) {
    const refc_t *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The distribution the parameters define, in double precision, straight from the words of
 * recur_sample_op.h (valid where no boundary is a near-tie, which the callers arrange). */
static void ref_dist(const float *l, int32_t nv, recur_sample_row_t p, double *prob) {
    memset(prob, 0, (size_t)nv * sizeof *prob);
    if (!(p.temperature > 0.0f) || p.top_k == 1) {
        prob[ref_argmax(l, nv)] = 1.0;
        return;
    }
    refc_t *c = malloc((size_t)nv * sizeof *c);
    int32_t n = 0;
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i])) c[n++] = (refc_t){l[i] * (1.0f / p.temperature), i, 0.0};
    qsort(c, (size_t)n, sizeof *c, refc_cmp);
    if (p.top_k > 0 && p.top_k < n) n = p.top_k;
    double M = 0;
    for (int32_t j = 0; j < n; j++) {
        double w = exp((double)c[j].s - (double)c[0].s);
        if (p.min_p > 0.0f && w < p.min_p && j > 0) w = 0;
        c[j].w = w;
        M += w;
    }
    if (p.top_p < 1.0f) {
        double acc = 0;
        int32_t j = 0;
        while (j < n) {
            acc += c[j++].w;
            if (acc >= p.top_p * M) break;
        }
        n = j;
        M = acc;
    }
    for (int32_t j = 0; j < n; j++) prob[c[j].id] = c[j].w / M;
    free(c);
}

/* Draws n_draw tokens from one row of logits with steps 0..n_draw-1 (batches of `chunk`
 * rows of the same logits) and compares the frequencies of the ids with `prob` (5
 * standard errors; ids of probability 0 must never appear). ids >= n_cat are pooled
 * into one category "rest". */
static void check_freq(recur_backend_t *b, const float *l, int32_t V, int32_t nv, recur_sample_row_t p,
                       int32_t n_draw, int32_t chunk, int32_t n_cat, const char *what) {
    double *prob = calloc((size_t)V, sizeof *prob), *want = calloc((size_t)n_cat + 1, sizeof *want);
    long *cnt = calloc((size_t)n_cat + 1, sizeof *cnt);
    float *rows = malloc((size_t)chunk * (size_t)V * sizeof *rows);
    recur_sample_row_t *ps = malloc((size_t)chunk * sizeof *ps);
    int32_t *tok = malloc((size_t)chunk * sizeof *tok);
    ref_dist(l, nv, p, prob);
    for (int32_t v = 0; v < nv; v++) want[v < n_cat ? v : n_cat] += prob[v];
    for (int32_t r = 0; r < chunk; r++) memcpy(rows + (size_t)r * V, l, (size_t)V * sizeof *l);
    int bad_id = 0;
    for (int32_t d0 = 0; d0 < n_draw; d0 += chunk) {
        int32_t k = n_draw - d0 < chunk ? n_draw - d0 : chunk;
        for (int32_t r = 0; r < k; r++) {
            ps[r] = p;
            ps[r].step = (uint64_t)(d0 + r);
        }
        run_op(b, rows, k, V, nv, ps, tok);
        for (int32_t r = 0; r < k; r++) {
            if (tok[r] < 0 || tok[r] >= nv || prob[tok[r]] == 0.0) bad_id++;
            else cnt[tok[r] < n_cat ? tok[r] : n_cat]++;
        }
    }
    if (bad_id) {
        fprintf(stderr, "%s: %d draws of ids outside the kept set\n", what, bad_id);
        failures++;
    }
    double worst = 0;
    for (int32_t v = 0; v <= n_cat; v++) {
        double f = (double)cnt[v] / n_draw, se = sqrt(want[v] * (1 - want[v]) / n_draw) + 1e-12;
        double z = fabs(f - want[v]) / se;
        int bad = want[v] == 0.0 ? cnt[v] != 0 : z > 5.0;
        if (want[v] > 0 && z > worst) worst = z;
        if (bad) {
            fprintf(stderr, "%s: %s %d freq %.5f want %.5f (%.1f SE)\n", what, v < n_cat ? "id" : "rest", v, f, want[v], z);
            failures++;
        }
    }
    fprintf(stderr, "freq %-40s %d draws, worst %.2f SE\n", what, n_draw, worst);
    free(prob); free(want); free(cnt); free(rows); free(ps); free(tok);
}

/* ------------------------------------------------------------------ the checks */

static void test_arithmetic(void) {
    uint64_t r = 1;
    for (int i = 0; i < 100000; i++) {
        uint64_t seed = rng_next(&r), step = i < 50000 ? (uint64_t)i : rng_next(&r);
        float u = recur_sample_uniform(seed, step);
        RECUR_CHECK(&failures, u == (float)recur_sample_u24(seed, step) * 0x1.0p-24f && u >= 0.0f && u < 1.0f);
    }
    RECUR_CHECK(&failures, recur_sample_exp(0.0f) == 1.0f && recur_sample_q(1.0f) == RECUR_SAMPLE_ONE);
    double worst = 0;
    for (float d = -86.9f; d <= 0.0f; d += 0.00137f) {
        double e = exp((double)d), rel = fabs((double)recur_sample_exp(d) - e) / e;
        if (rel > worst) worst = rel;
    }
    fprintf(stderr, "recur_sample_exp: worst relative error %.3g over (-87, 0]\n", worst);
    RECUR_CHECK(&failures, worst < 2.5e-7); /* ~2 ulp */
    int nonzero = 0;
    for (float d = -RECUR_SAMPLE_CUT; d > -90.0f; d = nextafterf(d, -INFINITY) - 1e-4f)
        nonzero += recur_sample_q(recur_sample_exp(d)) != 0;
    RECUR_CHECK(&failures, nonzero == 0); /* what lets backends skip d < -28 */
    RECUR_CHECK(&failures, recur_sample_exp(-87.5f) == 0.0f && recur_sample_exp(-INFINITY) == 0.0f);
    /* exact floor(u24 * M / 2^24) */
    for (int i = 0; i < 100000; i++) {
        uint64_t M = (rng_next(&r) >> (1 + rng_next(&r) % 40)) | RECUR_SAMPLE_ONE;
        uint32_t u = (uint32_t)(rng_next(&r) >> 40);
        uint64_t t = recur_sample_draw_target(M, u);
        /* t <= u*M/2^24 < t + 1  <=>  t*2^24 <= u*M < (t+1)*2^24, split in 32-bit halves
         * of M so every product fits 64 bits: u*M = u*Mh*2^32 + u*Ml */
        uint64_t Mh = M >> 32, Ml = M & 0xffffffffu;
        uint64_t a = (uint64_t)u * Ml, hi = (uint64_t)u * Mh + (a >> 32), lo = a & 0xffffffffu; /* u*M = hi*2^32 + lo */
        uint64_t th = t >> 40, tl = (t << 24) & 0xffffffffffffffffull; /* t*2^24 = th*2^64 + tl */
        uint64_t pm_hi = hi >> 32, pm_lo = (hi << 32) | lo;                 /* u*M = pm_hi*2^64 + pm_lo */
        int le = th < pm_hi || (th == pm_hi && tl <= pm_lo);
        uint64_t t1 = t + 1, t1h = t1 >> 40, t1l = t1 << 24;
        int gt = t1h > pm_hi || (t1h == pm_hi && t1l > pm_lo);
        RECUR_CHECK(&failures, t < M && le && gt);
    }
    /* rank keys: ascending key = descending s, then ascending id; s round-trips */
    const float vals[] = {-FLT_MAX, -3.5f, -1e-30f, 0.0f, 1e-30f, 2.0f, 2.0000002f, FLT_MAX};
    for (int a = 0; a < 8; a++) {
        RECUR_CHECK(&failures, recur_sample_key_s(recur_sample_rank_key(vals[a], 7)) == vals[a]);
        RECUR_CHECK(&failures, recur_sample_key_id(recur_sample_rank_key(vals[a], 7)) == 7);
        for (int c = 0; c < 8; c++)
            RECUR_CHECK(&failures, (recur_sample_rank_key(vals[a], 5) < recur_sample_rank_key(vals[c], 9)) == (a >= c));
    }
    RECUR_CHECK(&failures, recur_sample_scale(-0.0f, 1.0f) == 0.0f && !signbit(recur_sample_scale(-0.0f, 1.0f)));
    RECUR_CHECK(&failures, recur_sample_scale(1e30f, recur_sample_inv_t(1e-30f)) == FLT_MAX);
    RECUR_CHECK(&failures, recur_sample_inv_t(1e-45f) == FLT_MAX && recur_sample_scale(0.0f, FLT_MAX) == 0.0f);
    RECUR_CHECK(&failures, recur_sample_top_p_target(0.0f, 1000) == 0 && recur_sample_top_p_target(0.5f, 1001) == 501);
}

/* The CUDA kernel's bucket intervals (recur_sample_bucket_range): for every bucket, the
 * logits in [lo, hi] are exactly the finite logits of that bucket, and the interval is
 * tight (its end points are in the bucket, their outer neighbours are not). */
static void test_bucket_ranges(void) {
    enum { V = 20000 };
    static float l[V];
    static int has[RECUR_SAMPLE_NBUCKETS];
    uint64_t r = 31;
    const float temps[] = {1.0f, 0.37f, 3.3f, 1e-3f, 40.0f};
    int bad = 0, checked = 0;
    for (int t = 0; t < 10; t++) {
        const float T = temps[t % 5];
        for (int v = 0; v < V; v++) {
            float g = rng_gauss(&r);
            l[v] = t < 5 ? 6.0f * g : (t < 8 ? roundf(8.0f * g) * 0.125f : 1e3f * g);
            if (v % 97 == 0) l[v] = -INFINITY;
            if (v % 89 == 0) l[v] = NAN;
        }
        float lmax = -INFINITY;
        for (int v = 0; v < V; v++)
            if (isfinite(l[v]) && l[v] > lmax) lmax = l[v];
        const float inv = recur_sample_inv_t(T), smax = recur_sample_scale(lmax, inv);
        memset(has, 0, sizeof has);
        for (int v = 0; v < V; v++)
            if (isfinite(l[v])) {
                int bk = recur_sample_bucket(l[v], inv, smax);
                if (bk < RECUR_SAMPLE_NBUCKETS) has[bk] = 1;
            }
        for (int bk = 0; bk < RECUR_SAMPLE_NBUCKETS; bk++) {
            if (!has[bk] && rng_next(&r) % 16) continue; /* all full buckets, some empty ones */
            float lo, hi;
            recur_sample_bucket_range(bk, inv, smax, lmax, &lo, &hi);
            checked++;
            for (int v = 0; v < V; v++) {
                int in = isfinite(l[v]) && recur_sample_bucket(l[v], inv, smax) == bk;
                bad += in != (l[v] >= lo && l[v] <= hi);
            }
            if (lo <= hi) {
                bad += recur_sample_bucket(lo, inv, smax) != bk || recur_sample_bucket(hi, inv, smax) != bk;
                if (lo > -FLT_MAX) bad += recur_sample_bucket(nextafterf(lo, -INFINITY), inv, smax) == bk;
                if (hi < lmax) bad += recur_sample_bucket(nextafterf(hi, INFINITY), inv, smax) == bk;
            } else {
                bad += has[bk];
            }
        }
    }
    fprintf(stderr, "bucket ranges: %d buckets checked, %d errors\n", checked, bad);
    RECUR_CHECK(&failures, bad == 0);
}

/* greedy == argmax with ties, NaN and +-inf; top_k = 1 is greedy; n_valid bounds it. */
static void test_greedy(recur_backend_t *b) {
    enum { N = 64, V = 1031 };
    float *l = malloc((size_t)N * V * sizeof *l);
    recur_sample_row_t p[N];
    int32_t tok[N];
    uint64_t r = 11;
    for (int i = 0; i < N; i++) {
        float *x = l + (size_t)i * V;
        for (int v = 0; v < V; v++) {
            x[v] = (i & 1) ? (float)(rng_next(&r) % 8) : rng_gauss(&r) * 3.0f; /* odd rows: many ties */
            uint64_t k = rng_next(&r) % 50;
            if (k == 0) x[v] = NAN;
            else if (k == 1) x[v] = -INFINITY;
            else if (k == 2 && (i % 4) == 1) x[v] = INFINITY; /* counts as -inf */
        }
        if (i == 5) for (int v = 0; v < V; v++) x[v] = (v % 2) ? NAN : -INFINITY; /* nothing finite: 0 */
        if (i == 6) for (int v = 0; v < V; v++) x[v] = (v % 3) ? -0.0f : 0.0f;   /* -0 == +0: id 0 */
        static const float temps[] = {0.0f, -1.0f, NAN, 0.8f};
        p[i] = prm(temps[i % 4], i % 4 == 3 ? 1 : (int32_t)(i % 7), 0.9f, 0.1f, (uint64_t)i, 3);
    }
    run_op(b, l, N, V, V, p, tok);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += tok[i] != ref_argmax(l + (size_t)i * V, V);
    RECUR_CHECK(&failures, tok[5] == 0 && tok[6] == 0);
    /* n_valid: the largest logits sit at ids >= nv */
    const int32_t nv = 1000;
    for (int i = 0; i < N; i++)
        for (int v = nv; v < V; v++) l[(size_t)i * V + v] = (v % 2) ? 1e30f : 100.0f;
    run_op(b, l, N, V, nv, p, tok);
    for (int i = 0; i < N; i++) bad += tok[i] != ref_argmax(l + (size_t)i * V, nv);
    /* n_valid <= 0: id 0 */
    run_op(b, l, N, V, 0, p, tok);
    for (int i = 0; i < N; i++) bad += tok[i] != 0;
    fprintf(stderr, "greedy: %d of %d rows differ from the argmax\n", bad, 3 * N);
    RECUR_CHECK(&failures, bad == 0);
    free(l);
}

/* Sampling never picks ids >= n_valid, even when they hold the largest logits. */
static void test_n_valid(recur_backend_t *b) {
    enum { N = 512, V = 203 };
    const int32_t nv = 150;
    float *l = malloc((size_t)N * V * sizeof *l);
    recur_sample_row_t p[N];
    int32_t tok[N];
    uint64_t r = 5;
    for (int i = 0; i < N; i++) {
        for (int v = 0; v < V; v++) l[(size_t)i * V + v] = v < nv ? rng_gauss(&r) : (v % 3 ? 50.0f : INFINITY);
        p[i] = prm(i % 2 ? 5.0f : 1.0f, i % 3 ? 0 : 500, 1.0f, 0.0f, 99, (uint64_t)i);
    }
    run_op(b, l, N, V, nv, p, tok);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += tok[i] < 0 || tok[i] >= nv;
    RECUR_CHECK(&failures, bad == 0);
    free(l);
}

/* Same (logits, params) -> same token, in another run and at any batch position. */
static void test_determinism(recur_backend_t *b) {
    enum { N = 64, BIG = 257, V = 5003 };
    float *l = malloc((size_t)N * V * sizeof *l), *lb = malloc((size_t)BIG * V * sizeof *lb);
    recur_sample_row_t p[N], pb[BIG];
    int32_t t1[N], t2[N], tb[BIG];
    uint64_t r = 77;
    for (size_t i = 0; i < (size_t)N * V; i++) l[i] = rng_gauss(&r) * 2.0f;
    for (int i = 0; i < N; i++)
        p[i] = prm(0.5f + (float)(i % 5) * 0.3f, (i % 3) ? 0 : 20 + i, (i % 4) ? 0.9f : 1.0f, (i % 5) ? 0.0f : 0.02f,
                   rng_next(&r), (uint64_t)i * 17);
    run_op(b, l, N, V, V, p, t1);
    run_op(b, l, N, V, V, p, t2);
    int same = 1;
    for (int i = 0; i < N; i++) same &= t1[i] == t2[i];
    RECUR_CHECK(&failures, same);
    /* rows 0..N-1 at positions 4i+3 of a bigger batch, other rows random */
    for (size_t i = 0; i < (size_t)BIG * V; i++) lb[i] = rng_gauss(&r) * 2.0f;
    for (int i = 0; i < BIG; i++) pb[i] = prm(1.0f, 0, 1.0f, 0.0f, rng_next(&r), (uint64_t)i);
    for (int i = 0; i < N; i++) {
        memcpy(lb + (size_t)(4 * i + 3) * V, l + (size_t)i * V, V * sizeof *l);
        pb[4 * i + 3] = p[i];
    }
    run_op(b, lb, BIG, V, V, pb, tb);
    int moved = 0;
    for (int i = 0; i < N; i++) moved += tb[4 * i + 3] != t1[i];
    RECUR_CHECK(&failures, moved == 0);
    /* a different step changes some tokens (the stream moves) */
    for (int i = 0; i < N; i++) p[i].step++;
    run_op(b, l, N, V, V, p, t2);
    int changed = 0;
    for (int i = 0; i < N; i++) changed += t1[i] != t2[i];
    RECUR_CHECK(&failures, changed > 0);
    free(l);
    free(lb);
}

static void test_frequencies(recur_backend_t *b) {
    /* V = 5, p = (0.1, 0.4, 0.2, 0.25, 0.05) as the host sampler's test */
    const float l5[5] = {logf(0.1f), logf(0.4f), logf(0.2f), logf(0.25f), logf(0.05f)};
    const int32_t N = quick ? 2000 : 60000, C = quick ? 1000 : 20000;
    check_freq(b, l5, 5, 5, prm(1.0f, 0, 1.0f, 0.0f, 7, 0), N, C, 5, "V=5 T=1");
    check_freq(b, l5, 5, 5, prm(0.5f, 0, 1.0f, 0.0f, 8, 0), N, C, 5, "V=5 T=0.5");
    check_freq(b, l5, 5, 5, prm(1.0f, 2, 1.0f, 0.0f, 9, 0), N, C, 5, "V=5 top-k 2");
    check_freq(b, l5, 5, 5, prm(1.0f, 0, 0.7f, 0.0f, 10, 0), N, C, 5, "V=5 top-p 0.7");
    check_freq(b, l5, 5, 5, prm(1.0f, 0, 1.0f, 0.55f, 11, 0), N, C, 5, "V=5 min-p 0.55");
    check_freq(b, l5, 5, 5, prm(2.0f, 4, 0.8f, 0.3f, 12, 0), N, C, 5, "V=5 T=2 top-k 4 top-p .8 min-p .3");

    /* V = 2048: three hot ids over a Gaussian crowd, the crowd pooled into "rest"; the
     * hot ids sit at 0..2 so they are their own categories. */
    enum { V = 2048 };
    float *l = malloc(V * sizeof *l);
    uint64_t r = 1234;
    for (int v = 0; v < V; v++) l[v] = rng_gauss(&r);
    l[0] = 6.0f;
    l[1] = 5.5f;
    l[2] = 5.0f;
    const int32_t N2 = quick ? 200 : 10000, C2 = quick ? 100 : 2000;
    check_freq(b, l, V, V, prm(1.0f, 0, 1.0f, 0.0f, 21, 0), N2, C2, 3, "V=2048 T=1");
    check_freq(b, l, V, V, prm(0.7f, 0, 0.95f, 0.0f, 22, 0), N2, C2, 3, "V=2048 T=0.7 top-p .95");
    check_freq(b, l, V, V, prm(1.5f, 100, 1.0f, 0.0f, 23, 0), N2, C2, 3, "V=2048 T=1.5 top-k 100");
    check_freq(b, l, V, V, prm(1.0f, 0, 1.0f, 0.01f, 24, 0), N2, C2, 3, "V=2048 min-p .01");
    check_freq(b, l, V, 1900, prm(1.2f, 1000, 0.9f, 0.005f, 25, 0), N2, C2, 3, "V=2048 nv 1900 all four");
    free(l);
}

/* Row kinds for the agreement test, chosen to reach every path of a kernel: spread and
 * peaked rows, heavy ties (few distinct values: buckets too big to sort directly), all
 * equal, non-finite entries, few finite entries, huge and tiny logit scales. */
static void fill_row(float *x, int32_t V, int kind, uint64_t *r) {
    for (int32_t v = 0; v < V; v++) {
        float g = rng_gauss(r);
        switch (kind) {
        case 0: x[v] = 2.0f * g; break;
        case 1: x[v] = 4.0f * g + (v % 1000 == 0 ? 15.0f : 0.0f); break;
        case 2: x[v] = roundf(4.0f * g) * 0.25f; break;                /* many exact ties */
        case 3: x[v] = 1.5f; break;                                     /* all equal */
        case 4: x[v] = (rng_next(r) % 7 == 0) ? NAN : (rng_next(r) % 7 == 0 ? -INFINITY : 3.0f * g); break;
        case 5: x[v] = (rng_next(r) % 500 == 0) ? g : -INFINITY; break; /* few finite */
        case 6: x[v] = 1e4f * g; break;                                 /* very peaked */
        case 7: x[v] = 1e-3f * g; break;                                /* nearly flat */
        default: x[v] = (float)(rng_next(r) % 3); break;                /* three values */
        }
    }
}

/* ------------------------------------------------------------------ extras: bias, penalties, logprobs */

/* Builds the host side of recur_sample_extras_t: entries added with their row in any
 * order, made CSR by xb_done (stable within a row). */
typedef struct xb {
    int32_t n, top_n;
    int32_t nb, nh, capb, caph;
    int32_t *brow, *hrow, *boff, *hoff;
    recur_sample_bias_t *bias, *bsort;
    recur_sample_hist_t *hist, *hsort;
    float *lp, *tl;
    int32_t *tt;
    recur_sample_extras_t ex;
} xb_t;

static void xb_init(xb_t *x, int32_t n, int32_t top_n) {
    memset(x, 0, sizeof *x);
    x->n = n, x->top_n = top_n;
    x->boff = calloc((size_t)n + 1, sizeof *x->boff);
    x->hoff = calloc((size_t)n + 1, sizeof *x->hoff);
    x->lp = calloc((size_t)n, sizeof *x->lp);
    x->tt = calloc((size_t)n * (top_n > 0 ? (size_t)top_n : 1), sizeof *x->tt);
    x->tl = calloc((size_t)n * (top_n > 0 ? (size_t)top_n : 1), sizeof *x->tl);
}
static void xb_bias(xb_t *x, int32_t row, int32_t tok, float v) {
    if (x->nb == x->capb) {
        x->capb = x->capb ? 2 * x->capb : 64;
        x->bias = realloc(x->bias, (size_t)x->capb * sizeof *x->bias);
        x->brow = realloc(x->brow, (size_t)x->capb * sizeof *x->brow);
    }
    x->bias[x->nb] = (recur_sample_bias_t){tok, v};
    x->brow[x->nb++] = row;
}
static void xb_hist(xb_t *x, int32_t row, int32_t tok, int32_t n_all, int32_t n_out) {
    if (x->nh == x->caph) {
        x->caph = x->caph ? 2 * x->caph : 64;
        x->hist = realloc(x->hist, (size_t)x->caph * sizeof *x->hist);
        x->hrow = realloc(x->hrow, (size_t)x->caph * sizeof *x->hrow);
    }
    x->hist[x->nh] = (recur_sample_hist_t){tok, n_all, n_out};
    x->hrow[x->nh++] = row;
}
/* The extras to pass to run_op_ex; logprobs asked when top_n >= 0. */
static const recur_sample_extras_t *xb_done(xb_t *x) {
    memset(x->boff, 0, ((size_t)x->n + 1) * sizeof *x->boff);
    memset(x->hoff, 0, ((size_t)x->n + 1) * sizeof *x->hoff);
    for (int32_t j = 0; j < x->nb; j++) x->boff[x->brow[j] + 1]++;
    for (int32_t j = 0; j < x->nh; j++) x->hoff[x->hrow[j] + 1]++;
    for (int32_t r = 0; r < x->n; r++) x->boff[r + 1] += x->boff[r], x->hoff[r + 1] += x->hoff[r];
    free(x->bsort);
    free(x->hsort);
    x->bsort = malloc(((size_t)x->nb + 1) * sizeof *x->bsort);
    x->hsort = malloc(((size_t)x->nh + 1) * sizeof *x->hsort);
    int32_t *fill = calloc((size_t)x->n, sizeof *fill);
    for (int32_t j = 0; j < x->nb; j++) x->bsort[x->boff[x->brow[j]] + fill[x->brow[j]]++] = x->bias[j];
    memset(fill, 0, (size_t)x->n * sizeof *fill);
    for (int32_t j = 0; j < x->nh; j++) x->hsort[x->hoff[x->hrow[j]] + fill[x->hrow[j]]++] = x->hist[j];
    free(fill);
    x->ex = (recur_sample_extras_t){.n_bias = x->nb, .bias_off = x->boff, .bias = x->bsort, .n_hist = x->nh,
                                    .hist_off = x->hoff, .hist = x->hsort, .top_n = x->top_n < 0 ? 0 : x->top_n,
                                    .logprob = x->top_n >= 0 ? x->lp : NULL, .top_token = x->tt, .top_logprob = x->tl};
    return &x->ex;
}
static void xb_free(xb_t *x) {
    free(x->brow); free(x->hrow); free(x->boff); free(x->hoff); free(x->bias); free(x->bsort);
    free(x->hist); free(x->hsort); free(x->lp); free(x->tl); free(x->tt);
}

static recur_sample_row_t prm_pen(float T, float rep, float pres, float freq, int32_t logprobs, uint64_t seed,
                                  uint64_t step) {
    recur_sample_row_t p = prm(T, 0, 1.0f, 0.0f, seed, step);
    p.repetition_penalty = rep, p.presence_penalty = pres, p.frequency_penalty = freq, p.logprobs = logprobs;
    return p;
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Bias and penalties change exactly the listed logits, by exactly the documented
 * arithmetic, and greedy / sampling follow the changed logits. */
static void test_penalties(recur_backend_t *b) {
    enum { V = 1000, N = 16 };
    float *l = malloc((size_t)N * V * sizeof *l), *out = malloc((size_t)N * V * sizeof *out);
    recur_sample_row_t p[N];
    int32_t tok[N];
    uint64_t r = 4242;
    for (int i = 0; i < N; i++) {
        float *x = l + (size_t)i * V;
        for (int v = 0; v < V; v++) x[v] = fmaxf(fminf(rng_gauss(&r), 2.9f), -2.9f); /* below the ids set next */
        x[100] = 5.0f;  /* the argmax */
        x[200] = 4.0f;  /* the runner-up */
        x[300] = -3.0f;
        x[400] = 3.0f;
        x[500] = -INFINITY;
        x[501] = NAN;
        if (i == 8) x[502] = FLT_MAX;
        p[i] = prm_pen(0.0f, 1.0f, 0.0f, 0.0f, -1, 1, 0);
    }
    xb_t x;
    xb_init(&x, N, -1);
    /* row 0: frequency 2 on the argmax generated 3 times: 5 - 6 = -1, greedy -> 200 */
    p[0].frequency_penalty = 2.0f;
    xb_hist(&x, 0, 100, 3, 3);
    /* row 1: presence 1.5 on the argmax: 3.5 -> 200 */
    p[1].presence_penalty = 1.5f;
    xb_hist(&x, 1, 100, 1, 1);
    /* row 2: presence and frequency on a prompt-only token (n_out 0): no change -> 100 */
    p[2].presence_penalty = 2.0f, p[2].frequency_penalty = 2.0f;
    xb_hist(&x, 2, 100, 4, 0);
    /* row 3: repetition 2: 5 / 2 = 2.5 (-> 200), -3 * 2 = -6, 3 / 2 = 1.5, n_all 0 untouched */
    p[3].repetition_penalty = 2.0f;
    xb_hist(&x, 3, 100, 1, 0);
    xb_hist(&x, 3, 300, 2, 1);
    xb_hist(&x, 3, 400, 0, 0);
    /* row 4: repetition 0.5 (< 1 rewards): 5 / 0.5 = 10, -3 * 0.5 = -1.5 */
    p[4].repetition_penalty = 0.5f;
    xb_hist(&x, 4, 100, 1, 1);
    xb_hist(&x, 4, 300, 1, 0);
    /* row 5: bias -100 bans the argmax -> 200 */
    xb_bias(&x, 5, 100, -100.0f);
    /* row 6: bias +100 forces a low token */
    xb_bias(&x, 6, 777, 100.0f);
    /* row 7: all in order: 400 is 3; bias +1 -> 4; repetition 2 -> 2; presence .25 +
     * frequency .5 * 2 -> 0.75. And 100: bias -1 -> 4, / 2 -> 2, - (.25 + .5) -> 1.25,
     * so greedy goes to 200 */
    p[7].repetition_penalty = 2.0f, p[7].presence_penalty = 0.25f, p[7].frequency_penalty = 0.5f;
    xb_bias(&x, 7, 400, 1.0f);
    xb_bias(&x, 7, 100, -1.0f);
    xb_hist(&x, 7, 400, 3, 2);
    xb_hist(&x, 7, 100, 1, 1);
    /* row 8: non-finite logits stay as they are; FLT_MAX + 100 stays finite; ids >= n_valid
     * (and negative) are ignored */
    xb_bias(&x, 8, 500, 100.0f);
    xb_bias(&x, 8, 501, 100.0f);
    xb_bias(&x, 8, 502, 100.0f);
    xb_bias(&x, 8, 990, 100.0f);
    xb_bias(&x, 8, -5, 100.0f);
    p[8].frequency_penalty = 1.0f;
    xb_hist(&x, 8, 500, 1, 1);
    xb_hist(&x, 8, 999, 1, 1);
    /* row 9: sampling at T = 1 with +100 on 777: every draw is 777 (checked below over steps) */
    p[9] = prm_pen(1.0f, 1.0f, 0.0f, 0.0f, -1, 5, 0);
    xb_bias(&x, 9, 777, 100.0f);
    /* row 10: negative frequency penalty (allowed: [-2, 2]) raises 200 above 100 */
    p[10].frequency_penalty = -2.0f;
    xb_hist(&x, 10, 200, 1, 1);
    /* rows 11..15: nothing (unchanged logits, same tokens as without extras) */
    const int32_t nv = 990;
    run_op_ex(b, l, N, V, nv, p, xb_done(&x), tok, out);
    const int32_t want[N] = {200, 200, 100, 200, 100, 200, 777, 200, 502, 777, 200};
    int bad = 0;
    for (int i = 0; i <= 10; i++)
        if (tok[i] != want[i]) {
            fprintf(stderr, "penalties: row %d chose %d, expected %d\n", i, tok[i], want[i]);
            bad++;
        }
    /* exact values at the listed ids, every other logit bit-identical */
    struct { int row, id; float v; } ex[] = {
        {0, 100, -1.0f}, {1, 100, 3.5f}, {2, 100, 5.0f}, {3, 100, 2.5f}, {3, 300, -6.0f}, {3, 400, 3.0f},
        {4, 100, 10.0f}, {4, 300, -1.5f}, {5, 100, -95.0f}, {7, 400, 0.75f}, {7, 100, 1.25f},
        {8, 502, FLT_MAX}, {10, 200, 6.0f},
    };
    for (size_t k = 0; k < sizeof ex / sizeof ex[0]; k++) {
        float got = out[(size_t)ex[k].row * V + ex[k].id];
        if (!same_bits(got, ex[k].v)) {
            fprintf(stderr, "penalties: row %d id %d is %.9g, expected %.9g\n", ex[k].row, ex[k].id, (double)got,
                    (double)ex[k].v);
            bad++;
        }
    }
    float l6 = l[6 * V + 777] + 100.0f;
    if (!same_bits(out[6 * V + 777], l6)) bad++;
    if (!(isinf(out[8 * V + 500]) && out[8 * V + 500] < 0) || !isnan(out[8 * V + 501])) bad++;
    int changed = 0;
    for (int i = 0; i < N; i++)
        for (int v = 0; v < V; v++) {
            int listed = 0;
            for (size_t k = 0; k < sizeof ex / sizeof ex[0]; k++) listed |= ex[k].row == i && ex[k].id == v;
            listed |= (i == 6 || i == 9) && v == 777;
            listed |= i == 8 && (v == 500 || v == 501);
            if (!listed && !same_bits(out[(size_t)i * V + v], l[(size_t)i * V + v])) changed++;
        }
    if (changed) fprintf(stderr, "penalties: %d logits changed that no list names\n", changed);
    bad += changed;
    /* the rows without extras choose as they do without any extras */
    int32_t plain[N];
    run_op(b, l, N, V, nv, p, plain);
    for (int i = 11; i < N; i++) bad += plain[i] != tok[i];
    /* +100 forces every draw at T = 1; -100 on the argmax removes it from every draw */
    {
        enum { D = 256 };
        float *rows = malloc((size_t)D * V * sizeof *rows);
        recur_sample_row_t pd[D];
        int32_t td[D];
        xb_t y;
        xb_init(&y, D, -1);
        for (int i = 0; i < D; i++) {
            memcpy(rows + (size_t)i * V, l + 9 * V, V * sizeof *l);
            rows[(size_t)i * V + 100] = 12.0f; /* a clear favourite without the bias */
            pd[i] = prm_pen(1.0f, 1.0f, 0.0f, 0.0f, -1, 77, (uint64_t)i);
            if (i % 2) xb_bias(&y, i, 777, 100.0f);
            else xb_bias(&y, i, 100, -100.0f);
        }
        run_op_ex(b, rows, D, V, nv, pd, xb_done(&y), td, NULL);
        int forced = 0, banned = 0;
        for (int i = 0; i < D; i++) {
            if (i % 2) forced += td[i] == 777;
            else banned += td[i] != 100;
        }
        fprintf(stderr, "bias at T=1: +100 forced %d/%d draws, -100 kept the favourite out of %d/%d\n", forced, D / 2,
                banned, D / 2);
        bad += (D / 2 - forced) + (D / 2 - banned);
        /* and without the bias the favourite wins most draws (so the check above means something) */
        run_op(b, rows, D, V, nv, pd, td);
        int fav = 0;
        for (int i = 0; i < D; i++) fav += td[i] == 100;
        RECUR_CHECK(&failures, fav > D * 9 / 10);
        xb_free(&y);
        free(rows);
    }
    fprintf(stderr, "penalties and bias: %d errors\n", bad);
    RECUR_CHECK(&failures, bad == 0);
    xb_free(&x);
    free(l);
    free(out);
}

/* 1e-5, widened by float's own rounding (6e-8 relative) for log-probabilities far below
 * zero (rows of logits of scale 1e4): a float cannot hold -40000.123456 any closer. */
#define LP_TOL(ref) (1e-5 + 1e-6 * fabs(ref))

/* log p_i in double of the finite logits of ids [0, nv); -inf elsewhere. */
static void ref_logsoftmax(const float *l, int32_t nv, double *out) {
    double mx = -INFINITY, sum = 0;
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i]) && l[i] > mx) mx = l[i];
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i])) sum += exp((double)l[i] - mx);
    for (int32_t i = 0; i < nv; i++) out[i] = isfinite(l[i]) ? (double)l[i] - mx - log(sum) : -INFINITY;
}

typedef struct lpc { float l; int32_t id; } lpc_t;
static int lpc_cmp(const void *a, const void *b) {
    const lpc_t *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Checks one row's logprob outputs against a double log-softmax of the logits the op
 * sampled from (out, i.e. after bias and penalties). Returns the number of errors. */
static int check_logprob_row(const float *out, int32_t nv, const recur_sample_row_t *p, int32_t token,
                             const xb_t *x, int32_t r, double *worst) {
    int bad = 0;
    const int32_t cols = x->top_n;
    const int32_t *tt = x->tt + (size_t)r * (size_t)(cols > 0 ? cols : 1);
    const float *tl = x->tl + (size_t)r * (size_t)(cols > 0 ? cols : 1);
    if (p->logprobs < 0) {
        bad += x->lp[r] != 0.0f;
        for (int32_t j = 0; j < cols; j++) bad += tt[j] != -1 || tl[j] != 0.0f;
        return bad;
    }
    double *ref = malloc((size_t)(nv > 0 ? nv : 1) * sizeof *ref);
    lpc_t *c = malloc((size_t)(nv > 0 ? nv : 1) * sizeof *c);
    ref_logsoftmax(out, nv, ref);
    int32_t nf = 0;
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(out[i])) c[nf++] = (lpc_t){out[i], i};
    qsort(c, (size_t)nf, sizeof *c, lpc_cmp);
    const double want = token >= 0 && token < nv ? ref[token] : -INFINITY;
    if (isinf(want)) bad += !(isinf(x->lp[r]) && x->lp[r] < 0);
    else {
        double d = fabs((double)x->lp[r] - want);
        if (d > *worst) *worst = d;
        bad += !(d <= LP_TOL(want)) || x->lp[r] > 0.0f;
    }
    const int32_t k = p->logprobs < cols ? p->logprobs : cols;
    for (int32_t j = 0; j < cols; j++) {
        if (j >= k || j >= nf) {
            bad += tt[j] != -1 || tl[j] != 0.0f;
            continue;
        }
        if (tt[j] != c[j].id) {
            if (bad < 3) fprintf(stderr, "  top %d: id %d, expected %d\n", j, tt[j], c[j].id);
            bad++;
            continue;
        }
        double d = fabs((double)tl[j] - ref[c[j].id]);
        if (d > *worst) *worst = d;
        bad += !(d <= LP_TOL(ref[c[j].id])) || (j > 0 && tl[j] > tl[j - 1]);
    }
    /* the sampled token, if among the top, has the same value there */
    for (int32_t j = 0; j < k && j < nf; j++)
        if (tt[j] == token) bad += !same_bits(tl[j], x->lp[r]);
    free(ref);
    free(c);
    return bad;
}

static void test_logprobs(recur_backend_t *b) {
    enum { V = 5003, N = 48 };
    float *l = malloc((size_t)N * V * sizeof *l), *out = malloc((size_t)N * V * sizeof *out);
    recur_sample_row_t p[N];
    int32_t tok[N];
    uint64_t r = 99;
    for (int i = 0; i < N; i++) fill_row(l + (size_t)i * V, V, i % 9, &r);
    for (int v = 0; v < V; v++) l[(size_t)(N - 1) * V + v] = v % 2 ? NAN : -INFINITY; /* nothing finite */
    static const int32_t lps[] = {0, 1, 5, 20, -1, 3, 20, 7};
    xb_t x;
    xb_init(&x, N, 20);
    for (int i = 0; i < N; i++) {
        p[i] = prm_pen(i % 3 == 0 ? 0.0f : 0.8f + 0.1f * (float)(i % 5), 1.0f, 0.0f, 0.0f, lps[i % 8], 1000 + i,
                       (uint64_t)i);
        if (i % 4 == 1) p[i].top_k = 40, p[i].top_p = 0.9f;
        if (i % 6 == 2) { /* with bias and penalties: logprobs come after them */
            p[i].repetition_penalty = 1.3f, p[i].frequency_penalty = 0.7f;
            xb_bias(&x, i, ref_argmax(l + (size_t)i * V, V), -5.0f);
            xb_bias(&x, i, 17, 3.0f);
            xb_hist(&x, i, 17, 2, 1);
            xb_hist(&x, i, 4000, 1, 1);
        }
    }
    const int32_t nv = V - 3;
    run_op_ex(b, l, N, V, nv, p, xb_done(&x), tok, out);
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < N; i++) {
        int e = check_logprob_row(out + (size_t)i * V, nv, &p[i], tok[i], &x, i, &worst);
        if (e) fprintf(stderr, "logprobs: row %d (kind %d, logprobs %d): %d errors\n", i, i % 9, p[i].logprobs, e);
        bad += e;
        /* greedy rows: the token is the top alternative and their logprobs are equal */
        if (p[i].temperature == 0.0f && p[i].logprobs > 0 && i != N - 1)
            bad += x.tt[(size_t)i * 20] != tok[i] || !same_bits(x.tl[(size_t)i * 20], x.lp[i]);
    }
    bad += !(isinf(x.lp[N - 1]) && x.lp[N - 1] < 0) || x.tt[(size_t)(N - 1) * 20] != -1;
    /* fewer columns than asked: min(logprobs, top_n); top_n 0: only the sampled logprob */
    for (int cols = 0; cols <= 3; cols += 3) {
        xb_t y;
        xb_init(&y, N, cols);
        run_op_ex(b, l, N, V, nv, p, xb_done(&y), tok, out);
        for (int i = 0; i < N; i++) bad += check_logprob_row(out + (size_t)i * V, nv, &p[i], tok[i], &y, i, &worst);
        xb_free(&y);
    }
    fprintf(stderr, "logprobs: %d errors, worst |logprob - double reference| %.3g\n", bad, worst);
    RECUR_CHECK(&failures, bad == 0);
    xb_free(&x);
    free(l);
    free(out);
}

/* ------------------------------------------------------------------ backend vs CPU */

static void test_vs_cpu(recur_backend_t *b) {
    recur_backend_t *cpu = NULL;
    if (recur_backend_init("cpu", NULL, &cpu) != RECUR_OK) {
        failures++;
        return;
    }
    enum { NMAX = 200, V = 65536, NSET = 10, SMALL = 8 };
    const int N = quick == 2 ? 9 : quick ? 27 : NMAX;
    float *l = malloc((size_t)NMAX * V * sizeof *l);
    recur_sample_row_t *p = malloc(NMAX * sizeof *p);
    int32_t *tg = malloc(NMAX * sizeof *tg), *tc = malloc(NMAX * sizeof *tc);
    uint64_t r = 2024;
    for (int i = 0; i < N; i++) fill_row(l + (size_t)i * V, V, i % 9, &r);
    static const struct { float T; int32_t k; float tp, mp; const char *name; } sets[NSET] = {
        {0.0f, 0, 1.0f, 0.0f, "greedy"},
        {1.0f, 0, 1.0f, 0.0f, "T=1"},
        {0.7f, 40, 1.0f, 0.0f, "T=.7 top-k 40"},
        {1.0f, 0, 0.9f, 0.0f, "top-p .9"},
        {1.0f, 0, 1.0f, 0.05f, "min-p .05"},
        {1.3f, 1000, 0.95f, 0.01f, "T=1.3 k 1000 p .95 min-p .01"},
        {0.5f, 5000, 0.5f, 0.0f, "T=.5 k 5000 p .5"},
        {2.0f, 60000, 0.999f, 0.0f, "T=2 k 60000 p .999"},
        {1.0f, 3, 0.0f, 0.0f, "k 3 p 0 (top alone)"},
        {0.9f, 0, 1.0f, 2.0f, "min-p 2 (top alone)"},
    };
    int total_bad = 0;
    for (int s = 0; s < NSET; s++) {
        for (int i = 0; i < N; i++)
            p[i] = prm(sets[s].T, sets[s].k, sets[s].tp, sets[s].mp, rng_next(&r), rng_next(&r) % 100000);
        /* odd sets: n_valid not a multiple of 4 (the scalar tail of the row loop) */
        int32_t nv = (s % 2) ? V - 37 : V;
        run_op(cpu, l, N, V, nv, p, tc);
        /* the whole batch at once, then in small batches (1..SMALL rows: the CUDA backend's
         * multi-block front), which must give the same tokens */
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0) {
                run_op(b, l, N, V, nv, p, tg);
            } else {
                for (int i0 = 0, k = 1; i0 < N; i0 += k, k = k % SMALL + 1) {
                    const int kk = N - i0 < k ? N - i0 : k;
                    run_op(b, l + (size_t)i0 * V, kk, V, nv, p + i0, tg + i0);
                }
            }
            int bad = 0;
            for (int i = 0; i < N; i++)
                if (tg[i] != tc[i]) {
                    if (bad < 5) fprintf(stderr, "  set %s row %d (kind %d): %s %d, cpu %d\n", sets[s].name, i, i % 9,
                                         recur_backend_name(b), tg[i], tc[i]);
                    bad++;
                }
            fprintf(stderr, "vs cpu: %-32s %-12s %d/%d rows differ\n", sets[s].name, pass ? "small batches" : "one batch",
                    bad, N);
            total_bad += bad;
        }
    }
    /* V not a multiple of 4 (every row misaligned differently) */
    {
        const int32_t V2 = 50277, N2 = quick == 2 ? 9 : quick ? 18 : 64;
        for (int i = 0; i < N2; i++) fill_row(l + (size_t)i * V2, V2, i % 9, &r);
        for (int i = 0; i < N2; i++) p[i] = prm(1.0f, i % 2 ? 50 : 0, 0.9f, 0.0f, rng_next(&r), (uint64_t)i);
        run_op(cpu, l, N2, V2, V2, p, tc);
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0) run_op(b, l, N2, V2, V2, p, tg);
            else
                for (int i0 = 0; i0 < N2; i0 += 3)
                    run_op(b, l + (size_t)i0 * V2, N2 - i0 < 3 ? N2 - i0 : 3, V2, V2, p + i0, tg + i0);
            int bad = 0;
            for (int i = 0; i < N2; i++) bad += tg[i] != tc[i];
            fprintf(stderr, "vs cpu: %-32s %-12s %d/%d rows differ\n", "V=50277, k 50 / p .9",
                    pass ? "small batches" : "one batch", bad, N2);
            total_bad += bad;
        }
    }
    fprintf(stderr, "vs cpu: %d mismatches in total (0 allowed: the op is exact)\n", total_bad);
    RECUR_CHECK(&failures, total_bad == 0);
    free(l); free(p); free(tg); free(tc);
    recur_backend_free(cpu);
}

/* Bias, penalties and logprobs on random rows: the backend's processed logits must be
 * bit-identical to the CPU's (the same correctly rounded arithmetic), so its tokens and
 * top ids must be equal; logprobs within 1e-6 (double sums in another order). V 65536
 * with a batch above 256, and V 262144 (vocabularies reach ~256K). */
static void test_vs_cpu_extras(recur_backend_t *b) {
    recur_backend_t *cpu = NULL;
    if (recur_backend_init("cpu", NULL, &cpu) != RECUR_OK) {
        failures++;
        return;
    }
    static const struct { int32_t V, n, n_quick, n_tiny; } shapes[] = {
        {65536, 260, 20, 3}, {262144, 8, 2, 1}, {50277, 33, 5, 2}};
    int total_bad = 0;
    double worst = 0;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const int32_t V = shapes[sh].V, N = quick == 2 ? shapes[sh].n_tiny : quick ? shapes[sh].n_quick : shapes[sh].n;
        float *l = malloc((size_t)N * V * sizeof *l), *og = malloc((size_t)N * V * sizeof *og),
              *oc = malloc((size_t)N * V * sizeof *oc);
        recur_sample_row_t *p = malloc((size_t)N * sizeof *p);
        int32_t *tg = malloc((size_t)N * sizeof *tg), *tc = malloc((size_t)N * sizeof *tc);
        uint64_t r = 555 + sh;
        xb_t xg, xc;
        xb_init(&xg, N, 20);
        xb_init(&xc, N, 20);
        for (int i = 0; i < N; i++) {
            fill_row(l + (size_t)i * V, V, i % 9, &r);
            const int greedy = i % 4 == 0;
            p[i] = prm_pen(greedy ? 0.0f : 0.5f + (float)(rng_next(&r) % 100) * 0.01f,
                           i % 3 ? 0.5f + (float)(rng_next(&r) % 150) * 0.01f : 1.0f,
                           (float)((int)(rng_next(&r) % 401) - 200) * 0.01f,
                           (float)((int)(rng_next(&r) % 401) - 200) * 0.01f, (int32_t)(rng_next(&r) % 22) - 1,
                           rng_next(&r), rng_next(&r) % 1000);
            if (i % 5 == 1) p[i].top_k = 50, p[i].top_p = 0.9f;
            if (i % 7 == 3) p[i].min_p = 0.05f;
            /* distinct ids per list: a random start and an odd stride */
            const int32_t nb = (int32_t)(rng_next(&r) % 12), nh = (int32_t)(rng_next(&r) % 400);
            int32_t t0 = (int32_t)(rng_next(&r) % (uint64_t)V), st = 2 * (int32_t)(rng_next(&r) % 500) + 1;
            for (int32_t j = 0; j < nb; j++) {
                const int32_t k = (int32_t)(rng_next(&r) % 5);
                const float v = k == 0 ? -100.0f : k == 1 ? 100.0f : (float)((int)(rng_next(&r) % 2001) - 1000) * 0.1f;
                xb_bias(&xg, i, (int32_t)(((int64_t)t0 + (int64_t)j * st) % V), v);
                xb_bias(&xc, i, (int32_t)(((int64_t)t0 + (int64_t)j * st) % V), v);
            }
            t0 = (int32_t)(rng_next(&r) % (uint64_t)V), st = 2 * (int32_t)(rng_next(&r) % 500) + 1;
            for (int32_t j = 0; j < nh; j++) {
                const int32_t na = 1 + (int32_t)(rng_next(&r) % 6), no = (int32_t)(rng_next(&r) % (uint64_t)(na + 1));
                xb_hist(&xg, i, (int32_t)(((int64_t)t0 + (int64_t)j * st) % V), na, no);
                xb_hist(&xc, i, (int32_t)(((int64_t)t0 + (int64_t)j * st) % V), na, no);
            }
        }
        const int32_t nv = V - (int32_t)(sh * 7);
        run_op_ex(b, l, N, V, nv, p, xb_done(&xg), tg, og);
        run_op_ex(cpu, l, N, V, nv, p, xb_done(&xc), tc, oc);
        int bad = 0;
        for (int i = 0; i < N; i++) {
            int e = memcmp(og + (size_t)i * V, oc + (size_t)i * V, (size_t)V * sizeof *og) != 0;
            e += tg[i] != tc[i];
            double d = fabs((double)xg.lp[i] - (double)xc.lp[i]);
            if (isinf(xc.lp[i])) e += !(isinf(xg.lp[i]) && xg.lp[i] < 0);
            else if (d > worst) worst = d;
            e += !(isinf(xc.lp[i]) || d <= 1e-6 + 1e-6 * fabs((double)xc.lp[i]));
            for (int j = 0; j < 20; j++) {
                const size_t k = (size_t)i * 20 + (size_t)j;
                e += xg.tt[k] != xc.tt[k];
                double dt = fabs((double)xg.tl[k] - (double)xc.tl[k]);
                if (dt > worst) worst = dt;
                e += !(dt <= 1e-6 + 1e-6 * fabs((double)xc.tl[k]));
            }
            if (e && bad < 5)
                fprintf(stderr, "  V=%d row %d (kind %d): %s token %d lp %.7g, cpu %d lp %.7g\n", V, i, i % 9,
                        recur_backend_name(b), tg[i], (double)xg.lp[i], tc[i], (double)xc.lp[i]);
            bad += e != 0;
        }
        fprintf(stderr, "vs cpu with bias, penalties, logprobs: V=%d, %d rows: %d differ\n", V, N, bad);
        total_bad += bad;
        xb_free(&xg);
        xb_free(&xc);
        free(l); free(og); free(oc); free(p); free(tg); free(tc);
    }
    fprintf(stderr, "vs cpu with extras: %d rows differ, worst logprob difference %.3g\n", total_bad, worst);
    RECUR_CHECK(&failures, total_bad == 0);
    recur_backend_free(cpu);
}

/* Time per call with extras (device-resident lists, built once). The logits are changed
 * in place by every call; that does not change the work. */
static void time_extras(recur_backend_t *b) {
    enum { NMAX = 256 };
    static const struct { int32_t V; float T; int32_t logprobs, nb, nh; const char *name; } sets[] = {
        {65536, 0.0f, 5, 0, 0, "greedy + logprobs 5"},
        {65536, 1.0f, 20, 0, 0, "T=1 + logprobs 20"},
        {65536, 1.0f, -1, 10, 200, "T=1 + 10 bias, 200 hist"},
        {65536, 0.8f, 20, 10, 1000, "T=.8 + bias, 1000 hist, lp 20"},
        {262144, 0.0f, -1, 0, 0, "V=256K greedy"},
        {262144, 0.0f, 20, 10, 1000, "V=256K greedy, all extras"},
    };
    fprintf(stderr, "# sample op with extras on %s\n# %-32s %8s %12s\n", recur_backend_name(b), "params", "rows",
            "us/call");
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        const int32_t V = sets[s].V;
        float *l = malloc((size_t)NMAX * V * sizeof *l);
        uint64_t r = 19;
        for (size_t i = 0; i < (size_t)NMAX * V; i++) l[i] = 2.0f * rng_gauss(&r);
        float *dl = to_dev(b, l, (size_t)NMAX * V * sizeof *l);
        recur_sample_row_t p[NMAX];
        for (int i = 0; i < NMAX; i++) p[i] = prm_pen(sets[s].T, 1.1f, 0.2f, 0.3f, sets[s].logprobs, 5, (uint64_t)i);
        xb_t x;
        xb_init(&x, NMAX, sets[s].logprobs >= 0 ? 20 : -1);
        for (int i = 0; i < NMAX; i++) {
            for (int j = 0; j < sets[s].nb; j++) xb_bias(&x, i, j * 97 % V, 1.0f);
            for (int j = 0; j < sets[s].nh; j++) xb_hist(&x, i, j * 31 % V, 2, 1);
        }
        const recur_sample_extras_t *he = xb_done(&x);
        recur_sample_extras_t de = *he;
        de.bias_off = to_dev(b, he->bias_off, (NMAX + 1) * sizeof(int32_t));
        de.bias = to_dev(b, he->bias, (size_t)he->n_bias * sizeof *he->bias);
        de.hist_off = to_dev(b, he->hist_off, (NMAX + 1) * sizeof(int32_t));
        de.hist = to_dev(b, he->hist, (size_t)he->n_hist * sizeof *he->hist);
        de.logprob = he->logprob ? b->iface.alloc(b, NMAX * sizeof(float)) : NULL;
        de.top_token = b->iface.alloc(b, NMAX * 20 * sizeof(int32_t));
        de.top_logprob = b->iface.alloc(b, NMAX * 20 * sizeof(float));
        recur_sample_row_t *dp = to_dev(b, p, sizeof p);
        int32_t *dt = b->iface.alloc(b, NMAX * sizeof(int32_t));
        for (int n = 1; n <= NMAX; n = n == 1 ? 8 : n * 32) {
            for (int w = 0; w < 3; w++) b->iface.sample(b, dl, n, V, V, dp, &de, dt);
            b->iface.synchronize(b);
            const int iters = 50;
            double t0 = now_s();
            for (int it = 0; it < iters; it++) b->iface.sample(b, dl, n, V, V, dp, &de, dt);
            b->iface.synchronize(b);
            fprintf(stderr, "  %-32s %8d %12.1f\n", sets[s].name, n, (now_s() - t0) / iters * 1e6);
        }
        b->iface.buf_free(b, dl); b->iface.buf_free(b, (void *)de.bias_off); b->iface.buf_free(b, (void *)de.bias);
        b->iface.buf_free(b, (void *)de.hist_off); b->iface.buf_free(b, (void *)de.hist);
        b->iface.buf_free(b, de.logprob); b->iface.buf_free(b, de.top_token); b->iface.buf_free(b, de.top_logprob);
        b->iface.buf_free(b, dp); b->iface.buf_free(b, dt);
        xb_free(&x);
        free(l);
    }
}

/* Time per call (calls enqueued back to back, one synchronize at the end). */
static void time_op(recur_backend_t *b) {
    enum { V = 65536, NMAX = 256 };
    float *l = malloc((size_t)NMAX * V * sizeof *l);
    recur_sample_row_t p[NMAX];
    uint64_t r = 9;
    for (size_t i = 0; i < (size_t)NMAX * V; i++) l[i] = 2.0f * rng_gauss(&r);
    float *dl = b->iface.alloc(b, (size_t)NMAX * V * sizeof *l);
    recur_sample_row_t *dp = b->iface.alloc(b, sizeof p);
    int32_t *dt = b->iface.alloc(b, NMAX * sizeof(int32_t));
    b->iface.upload(b, dl, l, (size_t)NMAX * V * sizeof *l);
    static const struct { float T; int32_t k; float tp, mp; const char *name; } sets[] = {
        {0.0f, 0, 1.0f, 0.0f, "greedy"},
        {1.0f, 0, 1.0f, 0.0f, "T=1"},
        {0.8f, 50, 0.9f, 0.02f, "T=.8 k 50 p .9 min-p .02"},
        {1.0f, 0, 0.95f, 0.0f, "top-p .95"},
    };
    fprintf(stderr, "# sample op timing on %s (N(0, 2^2) logits)\n# %-26s %8s %12s\n", recur_backend_name(b), "params",
            "rows", "us/call");
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++)
        for (int n = 1; n <= NMAX; n = n == 1 ? 8 : n * 32) {
            for (int i = 0; i < n; i++) p[i] = prm(sets[s].T, sets[s].k, sets[s].tp, sets[s].mp, 5, (uint64_t)i);
            b->iface.upload(b, dp, p, (size_t)n * sizeof *p);
            for (int w = 0; w < 5; w++) b->iface.sample(b, dl, n, V, V, dp, NULL, dt);
            b->iface.synchronize(b);
            const int iters = 200;
            double t0 = now_s();
            for (int it = 0; it < iters; it++) b->iface.sample(b, dl, n, V, V, dp, NULL, dt);
            b->iface.synchronize(b);
            double us = (now_s() - t0) / iters * 1e6;
            fprintf(stderr, "  %-26s %8d %12.1f\n", sets[s].name, n, us);
        }
    b->iface.buf_free(b, dl);
    b->iface.buf_free(b, dp);
    b->iface.buf_free(b, dt);
    free(l);
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "cpu";
    recur_backend_t *b = NULL;
    quick = argc < 3 ? 0 : strcmp(argv[2], "quick") == 0 ? 1 : strcmp(argv[2], "tiny") == 0 ? 2 : 0;
    if (recur_backend_init(name, NULL, &b) != RECUR_OK) return RECUR_TEST_SKIP;
    if (argc > 2 && strcmp(argv[2], "time") == 0) { /* the timings alone (for profiling) */
        time_op(b);
        time_extras(b);
        recur_backend_free(b);
        return 0;
    }
    if (!b->iface.sample) {
        fprintf(stderr, "backend %s has no sample op\n", recur_backend_name(b));
        recur_backend_free(b);
        return 1;
    }
    fprintf(stderr, "backend: %s\n", recur_backend_name(b));
    test_arithmetic();
    test_bucket_ranges();
    test_greedy(b);
    test_n_valid(b);
    test_determinism(b);
    if (quick < 2) test_frequencies(b);
    test_penalties(b);
    test_logprobs(b);
    if (strcmp(name, "cpu") != 0) {
        test_vs_cpu(b);
        test_vs_cpu_extras(b);
        if (!quick) {
            time_op(b);
            time_extras(b);
        }
    }
    recur_backend_free(b);
    fprintf(stderr, "%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
