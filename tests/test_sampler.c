/* test_sampler.c: the host sampler's contract (recur_sampler.h): greedy is the exact
 * argmax, a seed fixes the stream, top-k/top-p/min-p never let an excluded token
 * through, and sampled frequencies follow the softmax of logits/temperature. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "recur_sampler.h"
#include "recur_testutil.h"

static int failures;

static recur_sampler_t *mk(float temp, int top_k, float top_p, float min_p, uint64_t seed, int V) {
    recur_sampler_params_t p = {.temperature = temp, .top_k = top_k, .top_p = top_p, .min_p = min_p, .seed = seed};
    recur_sampler_t *s = NULL;
    if (recur_sampler_init(&p, V, &s) != RECUR_OK) failures++;
    return s;
}

/* Frequencies over n draws vs expected probabilities; each within 5 standard errors. */
static void check_freq(recur_sampler_t *s, const float *lg, int V, const double *want, int n, const char *what) {
    int *cnt = calloc((size_t)V, sizeof(int));
    for (int i = 0; i < n; i++) cnt[recur_sampler_sample(s, lg, V)]++;
    for (int v = 0; v < V; v++) {
        double f = (double)cnt[v] / n, se = sqrt(want[v] * (1 - want[v]) / n) + 1e-12;
        int bad = want[v] == 0.0 ? cnt[v] != 0 : fabs(f - want[v]) > 5 * se;
        if (bad) {
            fprintf(stderr, "%s: token %d freq %.4f want %.4f\n", what, v, f, want[v]);
            failures++;
        }
    }
    free(cnt);
}

int main(void) {
    enum { V = 5 };
    const float lg[V] = {logf(0.1f), logf(0.4f), logf(0.2f), logf(0.25f), logf(0.05f)};

    /* greedy: argmax, lowest id on ties, ignores NaN, respects n_valid */
    recur_sampler_t *g = mk(0.f, 0, 1.f, 0.f, 1, V);
    RECUR_CHECK(&failures, recur_sampler_sample(g, lg, V) == 1);
    const float tie[V] = {0.f, 3.f, 3.f, NAN, 1.f};
    RECUR_CHECK(&failures, recur_sampler_sample(g, tie, V) == 1);
    RECUR_CHECK(&failures, recur_sampler_sample(g, lg, 1) == 0); /* only id 0 allowed */
    recur_sampler_free(g);

    /* same seed, same stream; different seed, different stream (over 200 draws) */
    recur_sampler_t *a = mk(1.f, 0, 1.f, 0.f, 42, V), *b = mk(1.f, 0, 1.f, 0.f, 42, V), *c = mk(1.f, 0, 1.f, 0.f, 43, V);
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 200; i++) {
        int x = recur_sampler_sample(a, lg, V), y = recur_sampler_sample(b, lg, V), z = recur_sampler_sample(c, lg, V);
        same_ab &= x == y;
        same_ac &= x == z;
    }
    RECUR_CHECK(&failures, same_ab);
    RECUR_CHECK(&failures, !same_ac);
    recur_sampler_free(a);
    recur_sampler_free(b);
    recur_sampler_free(c);

    const int N = 200000;
    /* plain T=1: frequencies = softmax(logits) */
    const double p1[V] = {0.1, 0.4, 0.2, 0.25, 0.05};
    recur_sampler_t *s = mk(1.f, 0, 1.f, 0.f, 7, V);
    check_freq(s, lg, V, p1, N, "T=1");
    recur_sampler_free(s);
    /* T=0.5: p^2 renormalised */
    double p2[V], z2 = 0;
    for (int v = 0; v < V; v++) z2 += p2[v] = p1[v] * p1[v];
    for (int v = 0; v < V; v++) p2[v] /= z2;
    s = mk(0.5f, 0, 1.f, 0.f, 8, V);
    check_freq(s, lg, V, p2, N, "T=0.5");
    recur_sampler_free(s);
    /* top-k 2: only ids 1 (0.4) and 3 (0.25) */
    const double pk[V] = {0, 0.4 / 0.65, 0, 0.25 / 0.65, 0};
    s = mk(1.f, 2, 1.f, 0.f, 9, V);
    check_freq(s, lg, V, pk, N, "top-k 2");
    recur_sampler_free(s);
    /* top-p 0.7: sorted 0.4, 0.25 (0.65 < 0.7), 0.2 -> reaches 0.85: keep ids 1, 3, 2 */
    const double pp[V] = {0, 0.4 / 0.85, 0.2 / 0.85, 0.25 / 0.85, 0};
    s = mk(1.f, 0, 0.7f, 0.f, 10, V);
    check_freq(s, lg, V, pp, N, "top-p 0.7");
    recur_sampler_free(s);
    /* min-p 0.45: keep p >= 0.18 -> ids 1, 3, 2 (thresholds kept off the exact ratios) */
    s = mk(1.f, 0, 1.f, 0.45f, 11, V);
    check_freq(s, lg, V, pp, N, "min-p 0.45");
    recur_sampler_free(s);
    /* min-p 0.55: keep p >= 0.22 -> ids 1, 3 */
    s = mk(1.f, 0, 1.f, 0.55f, 12, V);
    check_freq(s, lg, V, pk, N, "min-p 0.55");
    recur_sampler_free(s);

    /* invalid parameters are refused */
    recur_sampler_params_t bad[] = {{.temperature = NAN, .top_p = 1.f}, {.temperature = 1.f, .top_p = 0.f},
                                    {.temperature = 1.f, .top_p = 1.f, .min_p = 2.f}};
    for (int i = 0; i < 3; i++) {
        recur_sampler_t *x = NULL;
        RECUR_CHECK(&failures, recur_sampler_init(&bad[i], V, &x) == RECUR_E_INVAL && x == NULL);
    }
    fprintf(stderr, "%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
