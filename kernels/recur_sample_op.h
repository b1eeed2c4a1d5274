/* recur_sample_op.h: the exact arithmetic of the backend sample op (recur_backend.h),
 * shared by the CPU reference (kernels/cpu) and the CUDA kernel (kernels/cuda), so both
 * compute bit-identical weights and integer masses and therefore the same token.
 *
 * Definition of the op for one row (ids i < n_valid with finite logits are candidates),
 * on the logits as the row's logit bias and penalties left them (recur_sample_add_bias,
 * recur_sample_penalize below; recur_backend.h gives the order):
 *  1. greedy when !(temperature > 0) or top_k == 1: the exact argmax of the raw logits,
 *     lowest id on ties (-0 equals +0); 0 if no logit is finite.
 *  2. s_i = l_i * (1/T) (1/T rounded to float once per row, the product clamped to
 *     +-FLT_MAX, -0 made +0; one multiply per logit, not a division). The order O of the
 *     candidates is s descending, then id ascending (as the host sampler's sort). Every set
 *     below is cut along O, so it is exactly a prefix of O or a filter of one: no
 *     "probability >= threshold" ties arise, because (s, id) is a unique key
 *     (recur_sample_rank_key, ascending = O).
 *  3. weight w_i = recur_sample_exp(s_i - s_max) in (0, 1], w = 1 at the top; integer mass
 *     q_i = floor(w_i * 2^40) (recur_sample_q). Sums of q are exact, so the order in which
 *     a backend adds them does not matter (a float or double sum would).
 *  4. top-k (k > 0): the first k elements of O (ties at the boundary broken by lower id).
 *  5. min-p (min_p > 0): of those, keep w_i >= min_p (the max weight is 1), and always the
 *     first element of O. M1 = the kept mass.
 *  6. top-p (top_p < 1): the shortest prefix (along O) of the kept elements whose mass
 *     reaches X = ceil(top_p * M1) (recur_sample_top_p_target; X = 0 for top_p <= 0 keeps
 *     the first element). M2 = its mass (M1 when top-p is off).
 *  7. draw: t = floor(u * M2) with u = recur_sample_uniform(seed, step) = u24 / 2^24
 *     (recur_sample_draw_target, exact); the token is the first kept element along O
 *     (descending probability) whose running mass exceeds t.
 * NaN parameters: temperature NaN is greedy; top_p / min_p NaN are "off".
 * Tokens with w < 2^-40 get mass 0 and are never drawn (e^-28 * 2^40 = 0.76, so every
 * element with s - s_max < -28 has q = 0: backends may skip those, RECUR_SAMPLE_CUT).
 *
 * The float arithmetic is written with explicit correctly rounded operations (fmaf, and
 * __f*_rn on the device) so that no compiler can contract or reorder it: the CPU build is
 * ISO C11 (no FP contraction across statements), and every multiply-add here is an fmaf. */
#ifndef RECUR_SAMPLE_OP_H
#define RECUR_SAMPLE_OP_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define RECUR_SAMPLE_FN static __host__ __device__ __forceinline__
#else
#define RECUR_SAMPLE_FN static inline
#endif

#define RECUR_SAMPLE_Q_BITS 40
#define RECUR_SAMPLE_ONE ((uint64_t)1 << RECUR_SAMPLE_Q_BITS) /* q of the top element (w = 1) */
/* Masses are uint64: n * 2^40 must fit, so at most 2^23 ids per row (vocabularies are < 2^18). */
#define RECUR_SAMPLE_MAX_VOCAB (1 << 23)
/* Elements with s - s_max < -RECUR_SAMPLE_CUT have q = 0 (see above). */
#define RECUR_SAMPLE_CUT 28.0f

RECUR_SAMPLE_FN float recur_sample_fma_(float a, float b, float c) {
#ifdef __CUDA_ARCH__
    return __fmaf_rn(a, b, c);
#else
    return fmaf(a, b, c);
#endif
}
RECUR_SAMPLE_FN float recur_sample_mul_(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
RECUR_SAMPLE_FN float recur_sample_sub(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
RECUR_SAMPLE_FN uint32_t recur_sample_fbits_(float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}
RECUR_SAMPLE_FN float recur_sample_bitsf_(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

RECUR_SAMPLE_FN float recur_sample_add_(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
RECUR_SAMPLE_FN float recur_sample_div_(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
RECUR_SAMPLE_FN int recur_sample_finite_(float x) { return (recur_sample_fbits_(x) & 0x7f800000u) != 0x7f800000u; }
RECUR_SAMPLE_FN float recur_sample_clamp_(float x) { return fminf(fmaxf(x, -FLT_MAX), FLT_MAX); }

/* ---- Before step 1 (recur_backend.h's sample op, steps 1 and 2): the logit bias and the
 * penalties of the listed ids, each one correctly rounded operation per term, so every
 * backend gets the same bits and hence the same tokens. A finite logit stays finite
 * (clamped to +-FLT_MAX: a bias never turns a candidate into a non-candidate); a
 * non-finite one is left as it is (it stays out). */
RECUR_SAMPLE_FN float recur_sample_add_bias(float l, float bias) {
    return recur_sample_finite_(l) ? recur_sample_clamp_(recur_sample_add_(l, bias)) : l;
}

/* Repetition penalty r for an id that occurred (n_all > 0): l / r if l > 0 else l * r (r
 * <= 0 or 1: off); then, for an id generated n_out > 0 times, l - (presence + frequency *
 * n_out) with the bracket one fma. */
RECUR_SAMPLE_FN float recur_sample_penalize(float l, int32_t n_all, int32_t n_out, float rep, float presence,
                                            float frequency) {
    if (!recur_sample_finite_(l)) return l;
    if (n_all > 0 && rep > 0.0f && rep != 1.0f) l = l > 0.0f ? recur_sample_div_(l, rep) : recur_sample_mul_(l, rep);
    if (n_out > 0) l = recur_sample_sub(l, recur_sample_fma_(frequency, (float)n_out, presence));
    return recur_sample_clamp_(l);
}

/* 1/T of step 2 (T > 0), at most FLT_MAX so that 0 * (1/T) is 0, not NaN. */
RECUR_SAMPLE_FN float recur_sample_inv_t(float T) {
#ifdef __CUDA_ARCH__
    const float inv = __fdiv_rn(1.0f, T);
#else
    const float inv = 1.0f / T;
#endif
    return fminf(inv, FLT_MAX);
}

/* The scaled logit of step 2 (l finite, inv_t = recur_sample_inv_t(T)). Monotone in l. */
RECUR_SAMPLE_FN float recur_sample_scale(float l, float inv_t) {
    float s = recur_sample_mul_(l, inv_t);
    /* l / tiny T can overflow; clamping keeps s - s_max finite or -inf, never NaN */
    s = fminf(fmaxf(s, -FLT_MAX), FLT_MAX);
    return s == 0.0f ? 0.0f : s; /* -0 and +0 are one value: one key */
}

/* e^d for d <= 0, to about 1 ulp, from *, fma and rint only (each exactly specified by
 * IEEE 754), so every backend gets the same bits: n = rint(d / ln 2), r = d - n ln 2
 * (Cody-Waite with fma, |r| <= 0.35), e^r by its degree-7 Taylor polynomial (truncation
 * error 5e-9 relative), times 2^n (n in [-126, 0]: a normal power of two, so the product
 * is exact-then-rounded like ldexp). d <= -87 gives 0 (no subnormals). e^0 = 1 exactly,
 * and the result is clamped to 1 so the top weight is exactly 1. */
RECUR_SAMPLE_FN float recur_sample_exp(float d) {
    if (!(d > -87.0f)) return 0.0f;
    const float n = rintf(recur_sample_mul_(d, 1.44269504088896341f));
    float r = recur_sample_fma_(-n, 0.693145751953125f, d);   /* ln 2 high part: 16 bits, n*hi exact */
    r = recur_sample_fma_(-n, 1.42860682030941723e-6f, r);      /* ln 2 low part */
    float p = 1.0f / 5040.0f;
    p = recur_sample_fma_(p, r, 1.0f / 720.0f);
    p = recur_sample_fma_(p, r, 1.0f / 120.0f);
    p = recur_sample_fma_(p, r, 1.0f / 24.0f);
    p = recur_sample_fma_(p, r, 1.0f / 6.0f);
    p = recur_sample_fma_(p, r, 0.5f);
    p = recur_sample_fma_(p, r, 1.0f);
    p = recur_sample_fma_(p, r, 1.0f);
    const float w = recur_sample_mul_(p, recur_sample_bitsf_((uint32_t)((int)n + 127) << 23));
    return w < 1.0f ? w : 1.0f;
}

/* Integer mass of a weight w in [0, 1]: floor(w * 2^40) (the product is exact). */
RECUR_SAMPLE_FN uint64_t recur_sample_q(float w) {
    return (uint64_t)recur_sample_mul_(w, 1099511627776.0f /* 2^40 */);
}

/* The key of order O: ascending key = descending s, then ascending id. */
RECUR_SAMPLE_FN uint64_t recur_sample_rank_key(float s, int32_t id) {
    const uint32_t u = recur_sample_fbits_(s);
    const uint32_t ord = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending with s */
    return ((uint64_t)(~ord) << 32) | (uint32_t)id;
}
RECUR_SAMPLE_FN int32_t recur_sample_key_id(uint64_t key) { return (int32_t)(uint32_t)key; }
RECUR_SAMPLE_FN float recur_sample_key_s(uint64_t key) {
    const uint32_t ord = ~(uint32_t)(key >> 32);
    return recur_sample_bitsf_((ord & 0x80000000u) ? (ord & 0x7fffffffu) : ~ord);
}

/* The 24 random bits of the draw: recur_sample_uniform(seed, step) == u24 * 2^-24. */
RECUR_SAMPLE_FN uint32_t recur_sample_u24(uint64_t seed, uint64_t step) {
    uint64_t z = seed + (step + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint32_t)(z >> 40);
}

/* t = floor(u24 * M / 2^24) < M, exactly, without a 128-bit product. */
RECUR_SAMPLE_FN uint64_t recur_sample_draw_target(uint64_t M, uint32_t u24) {
    return (M >> 24) * u24 + (((M & 0xffffffu) * u24) >> 24);
}

/* X = ceil(top_p * M) in double (IEEE, so the same everywhere); 0 for top_p <= 0. For
 * top_p < 1 and M >= 2^40, X <= M. */
RECUR_SAMPLE_FN uint64_t recur_sample_top_p_target(float top_p, uint64_t M) {
    if (!(top_p > 0.0f)) return 0;
    return (uint64_t)ceil((double)top_p * (double)M);
}

/* ---- The CUDA kernel's bucketing, here so that the host test can check its interval
 * property. bucket = which of RECUR_SAMPLE_NBUCKETS equal slices of d = s - s_max in
 * [-CUT, 0] a finite logit falls in (RECUR_SAMPLE_NBUCKETS for d < -CUT). Each step from
 * l to the bucket is monotone (times 1/T > 0, clamp, minus s_max, times -scale, truncate),
 * so the bucket never increases with l and the logits of one bucket form one interval of
 * floats, found by bisection (recur_sample_bucket_range): a pass over the row then tests
 * lo <= l <= hi instead of redoing the arithmetic per logit. */
#define RECUR_SAMPLE_NBUCKETS 2048

RECUR_SAMPLE_FN int recur_sample_bucket_of_d(float d) {
    if (!(d >= -RECUR_SAMPLE_CUT)) return RECUR_SAMPLE_NBUCKETS;
    const int b = (int)recur_sample_mul_(-d, (float)RECUR_SAMPLE_NBUCKETS / RECUR_SAMPLE_CUT);
    return b < RECUR_SAMPLE_NBUCKETS - 1 ? b : RECUR_SAMPLE_NBUCKETS - 1;
}
RECUR_SAMPLE_FN int recur_sample_bucket(float l, float inv_t, float smax) {
    return recur_sample_bucket_of_d(recur_sample_sub(recur_sample_scale(l, inv_t), smax));
}
/* Finite floats <-> uint32 in the same order (-0 just below +0). */
RECUR_SAMPLE_FN uint32_t recur_sample_ford_(float x) {
    const uint32_t u = recur_sample_fbits_(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
RECUR_SAMPLE_FN float recur_sample_funord_(uint32_t o) {
    return recur_sample_bitsf_((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

/* The finite logits l <= lmax with bucket b (0 <= b < NBUCKETS) are exactly those with
 * *lo <= l <= *hi; lmax is the row's largest finite logit and smax its scaled value, so
 * bucket(lmax) = 0. If no float has bucket b, *lo > *hi. About 2 x 32 bucket evaluations. */
RECUR_SAMPLE_FN void recur_sample_bucket_range(int b, float inv_t, float smax, float lmax, float *lo, float *hi) {
    const uint32_t A = recur_sample_ford_(-FLT_MAX), Z = recur_sample_ford_(lmax);
    uint32_t a = A, z = Z;
    /* hi: the last u in [A, Z] with bucket >= b (invariant: bucket(a) >= b > bucket(z)) */
    if (recur_sample_bucket(recur_sample_funord_(Z), inv_t, smax) >= b) {
        a = Z;
    } else if (recur_sample_bucket(recur_sample_funord_(A), inv_t, smax) < b) {
        *lo = 1.0f; /* no float reaches bucket b */
        *hi = 0.0f;
        return;
    } else {
        while (z - a > 1) {
            const uint32_t m = a + (z - a) / 2;
            if (recur_sample_bucket(recur_sample_funord_(m), inv_t, smax) >= b) a = m;
            else z = m;
        }
    }
    *hi = recur_sample_funord_(a);
    /* lo: the first u in [A, Z] with bucket <= b (invariant: bucket(a) > b >= bucket(z)) */
    a = A;
    z = Z;
    if (recur_sample_bucket(recur_sample_funord_(A), inv_t, smax) <= b) {
        z = A;
    } else {
        while (z - a > 1) {
            const uint32_t m = a + (z - a) / 2;
            if (recur_sample_bucket(recur_sample_funord_(m), inv_t, smax) <= b) z = m;
            else a = m;
        }
    }
    *lo = recur_sample_funord_(z);
}

#endif
