/* recur_sampler.c: see recur_sampler.h. */
#include "recur_sampler.h"

#include <math.h>
#include <stdlib.h>

#include "recur_log.h"

typedef struct cand {
    float   logit; /* scaled logit, later the probability */
    int32_t id;
} cand_t;

struct recur_sampler {
    recur_sampler_params_t p;
    int32_t n_vocab;
    cand_t *cands;     /* [n_vocab] scratch */
    uint64_t rng[4];   /* xoshiro256** state */
};

recur_sampler_params_t recur_sampler_default_params(void) {
    return (recur_sampler_params_t){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0};
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform double in [0, 1) with 53 random bits. */
static double uniform01(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

recur_status_t recur_sampler_init(const recur_sampler_params_t *p, int32_t n_vocab, recur_sampler_t **out) {
    *out = NULL;
    if (!(p->temperature == p->temperature) || !(p->top_p > 0.0f) || !(p->min_p >= 0.0f && p->min_p <= 1.0f) ||
        n_vocab < 1) {
        recur_log_err("sampler: invalid parameters (temperature %g, top_p %g must be in (0, 1], min_p %g in [0, 1])",
                      (double)p->temperature, (double)p->top_p, (double)p->min_p);
        return RECUR_E_INVAL;
    }
    recur_sampler_t *s = calloc(1, sizeof *s);
    if (!s) return RECUR_E_NOMEM;
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    if (!s->cands) {
        free(s);
        return RECUR_E_NOMEM;
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    *out = s;
    return RECUR_OK;
}

void recur_sampler_free(recur_sampler_t *s) {
    if (!s) return;
    free(s->cands);
    free(s);
}

static int cand_desc(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id; /* deterministic order on ties */
}

static int32_t argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    float bv = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (isfinite(logits[i]) && logits[i] > bv) { bv = logits[i]; best = i; }
    return best;
}

int32_t recur_sampler_sample(recur_sampler_t *s, const float *logits, int32_t n_valid) {
    if (n_valid > s->n_vocab) n_valid = s->n_vocab;
    if (n_valid < 1) return 0;
    const recur_sampler_params_t *p = &s->p;
    if (p->temperature <= 0.0f || p->top_k == 1) return argmax(logits, n_valid);

    int32_t n = 0;
    for (int32_t i = 0; i < n_valid; i++)
        if (isfinite(logits[i])) s->cands[n++] = (cand_t){logits[i] / p->temperature, i};
    if (n == 0) return 0;
    qsort(s->cands, (size_t)n, sizeof *s->cands, cand_desc);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;

    /* Softmax over the survivors (sorted, so cands[0] holds the max). */
    double sum = 0.0;
    float mx = s->cands[0].logit;
    for (int32_t i = 0; i < n; i++) {
        float e = expf(s->cands[i].logit - mx);
        s->cands[i].logit = e;
        sum += e;
    }
    /* min-p: relative to the most likely token, whose unnormalised weight is 1. */
    if (p->min_p > 0.0f) {
        int32_t keep = 1;
        while (keep < n && s->cands[keep].logit >= p->min_p) keep++;
        for (int32_t i = keep; i < n; i++) sum -= s->cands[i].logit;
        n = keep;
    }
    /* top-p: the smallest prefix whose mass reaches top_p. */
    if (p->top_p < 1.0f) {
        double acc = 0.0, target = (double)p->top_p * sum;
        int32_t keep = 0;
        while (keep < n) {
            acc += s->cands[keep++].logit;
            if (acc >= target) break;
        }
        sum = acc;
        n = keep;
    }
    double u = uniform01(s->rng) * sum, acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += s->cands[i].logit;
        if (u < acc) return s->cands[i].id;
    }
    return s->cands[n - 1].id; /* u landed in the rounding slack at the top */
}
