/* recur_cuda_wkv_wy.cu: the RWKV-7 WKV over long sequences (prefill) in the chunked WY
 * form of models/RWKV7.md §2.2, chunks of 16 tokens, head size 64.
 *
 * Per chunk of n tokens with incoming state S0 [V x K] (rows of S are value rows i), with
 * E_t = prod_{tau<=t} w_tau (columnwise, = e^{g_t}), alpha = -kk, beta = kk * a:
 *   A_qk[t,s] = (r_t E_t).(k_s / E_s), A_qb likewise with beta_s  (s <= t)
 *   A_ak[t,s] = (alpha_t E_{t-1}).(k_s / E_s), A_ab with beta_s   (s <  t)
 *   T = (I - A_ab)^-1,  W = T (alpha E_{t-1}),  A~ = T A_ak  (solved, not formed)
 *   U^T = S0 W^T + V^T A~^T                       (u_t = S_{t-1} alpha_t)
 *   Y^T = S0 (r E)^T + U^T A_qb^T + V^T A_qk^T    (y_t = S_t r_t)
 *   S   = S0 diag(E_n) + U^T (beta E_n / E) + V^T (k E_n / E)
 * Rows of S never interact (RWKV7.md §1.4), so the state work splits by value rows.
 * Chunks of 16 keep every factor within e^{+-0.6065*16} ~ 1.6e4 of 1 in fp32, so no
 * exponent centring is needed (fla's chunk-64 path needs it).
 *
 * One block per (head, sequence), 8 warps in two roles that overlap:
 *   warps 0-3 ("state"): each holds 16 rows of S as fp32 mma accumulators for the whole
 *     sequence and applies chunk c: U, Y, S's update on tensor cores (3xTF32), y out;
 *   warps 4-7 ("prep"):  meanwhile build everything chunk c+1 needs that does not depend
 *     on S (the decay products, the four A matrices on tensor cores, W and A~ by forward
 *     substitution) into the other half of a double buffer, with the raw inputs of
 *     chunk c+2 streaming in through cp.async.
 * One __syncthreads per chunk hands the buffers over. The serial kernel of
 * recur_cuda_rwkv7.cu keeps short sequences (decode).
 * A bf16 state (template parameter T) is widened when the state warps load it and rounded
 * once when they store it at the end of the call: through the chunks it stays in the fp32
 * accumulators, so this path and the serial one (which rounds per token) agree to bf16
 * tolerance. */
#include "recur_cuda_prefill.h"

#define WY_N 16                                  /* tokens per chunk */
#define WY_HS 64                                 /* head size */
#define WY_STATE_WARPS 4                         /* 16 value rows each */
#define WY_THREADS (2 * WY_STATE_WARPS * 32)     /* + as many prep warps */
#define WY_PREP_THREADS (WY_STATE_WARPS * 32)
/* Row strides (floats), chosen per access pattern so fragment loads hit distinct banks:
 * 72 = 8 mod 32 for [t][j] arrays read as (row g, col q) or float2 (row g, col 2q);
 * 68 = 4 mod 32 for Bt, read at rows 2q, 2q+1; 20 / 24 for the 16 x 16 matrices. */
#define WY_RS 72
#define WY_BS 68
#define WY_AS 20
#define WY_QBS 24

/* One buffer of what the state warps read for a chunk (offsets in floats). */
#define WB_WC 0                          /* W = T (alpha E_{t-1}) [16][WY_RS] */
#define WB_RT (WB_WC + WY_N * WY_RS)     /* r E                   [16][WY_RS] */
#define WB_KT (WB_RT + WY_N * WY_RS)     /* k E_n / E             [16][WY_RS] */
#define WB_V (WB_KT + WY_N * WY_RS)      /* v                     [16][WY_RS] */
#define WB_BT (WB_V + WY_N * WY_RS)      /* beta E_n / E          [16][WY_BS] */
#define WB_DEC (WB_BT + WY_N * WY_BS)    /* E_n                   [64]        */
#define WB_AI (WB_DEC + WY_HS)           /* A~ = T A_ak           [16][WY_AS] */
#define WB_AQK (WB_AI + WY_N * WY_AS)    /* A_qk                  [16][WY_AS] */
#define WB_AQB (WB_AQK + WY_N * WY_AS)   /* A_qb                  [16][WY_QBS]*/
#define WB_SIZE (WB_AQB + WY_N * WY_QBS)
/* prep-only arrays after the two buffers */
#define WP_AHAT (2 * WB_SIZE)            /* alpha E_{t-1}         [16][WY_RS] */
#define WP_KN (WP_AHAT + WY_N * WY_RS)   /* k / E                 [16][WY_RS] */
#define WP_BN (WP_KN + WY_N * WY_RS)     /* beta / E              [16][WY_RS] */
#define WP_AAK (WP_BN + WY_N * WY_RS)    /* A_ak                  [16][WY_AS] */
#define WP_AAB (WP_AAK + WY_N * WY_AS)   /* A_ab = L              [16][WY_AS] */
#define WP_RAW (WP_AAB + WY_N * WY_AS)   /* 2 x [6 arrays r,w,k,v,kk,a][16][64] */
#define WY_SMEM_FLOATS (WP_RAW + 2 * 6 * WY_N * WY_HS)

struct wy_args {
    int32_t C;
    const int32_t *seq_off, *slot;
    const float *in[6]; /* r, w, k, v, kk, a: [M][C] */
    char *pool;           /* bytes: slot s at pool + s * stride + offset */
    size_t stride, offset;
    float *y;
    int32_t min_len;
};

/* raw inputs of chunk cc into raw buffer rb (prep threads; one cp.async group) */
static __device__ __forceinline__ void wy_stage(const wy_args &p, float *rb, int32_t r0, int32_t r1, int cc, int h,
                                                int tid1) {
    const int32_t t0 = r0 + cc * WY_N;
    const int nt = r1 - t0 < WY_N ? r1 - t0 : WY_N;
    /* arr unrolled: a run-time index into p.in would put the pointers in local memory */
#pragma unroll
    for (int arr = 0; arr < 6; arr++)
        for (int e = tid1; e < WY_N * (WY_HS / 4); e += WY_PREP_THREADS) {
            const int t = e / (WY_HS / 4), j4 = e % (WY_HS / 4), tr = t < nt ? t : nt - 1;
            recur_cp_async16(rb + (arr * WY_N + t) * WY_HS + 4 * j4,
                             p.in[arr] + (size_t)(t0 + tr) * p.C + (size_t)h * WY_HS + 4 * j4, t < nt ? 16 : 0);
        }
}

/* Prep of chunk cc from raw buffer rb into state buffer wb (prep threads only). */
static __device__ void wy_prep(float *sm, const float *rb, float *wb, int nt, int tid1) {
    const int BAR = 1;
    const float *rr = rb, *rw = rb + 1 * WY_N * WY_HS, *rk = rb + 2 * WY_N * WY_HS, *rv = rb + 3 * WY_N * WY_HS;
    const float *rkk = rb + 4 * WY_N * WY_HS, *ra = rb + 5 * WY_N * WY_HS;
    float *ahat = sm + WP_AHAT, *kn = sm + WP_KN, *bn = sm + WP_BN;
    /* 1. decay products down each key column j, two threads per column with different
     *    outputs. Rows past the end (zero-filled) decay by 1, so E_n stays right. */
    {
        const int j = tid1 & 63, role = tid1 >> 6;
        float En = 1.f;
#pragma unroll
        for (int t = 0; t < WY_N; t++) En *= t < nt ? rw[t * WY_HS + j] : 1.f;
        float E = 1.f;
#pragma unroll
        for (int t = 0; t < WY_N; t++) {
            const float Ep = E;
            E *= t < nt ? rw[t * WY_HS + j] : 1.f;
            const float inv = __frcp_rn(E), kk = rkk[t * WY_HS + j], k = rk[t * WY_HS + j];
            if (role == 0) {
                wb[WB_RT + t * WY_RS + j] = rr[t * WY_HS + j] * E;
                ahat[t * WY_RS + j] = -kk * Ep;
                kn[t * WY_RS + j] = k * inv;
            } else {
                const float be = kk * ra[t * WY_HS + j], f = En * inv;
                bn[t * WY_RS + j] = be * inv;
                wb[WB_KT + t * WY_RS + j] = k * f;
                wb[WB_BT + t * WY_BS + j] = be * f;
            }
        }
        if (role == 0) wb[WB_DEC + j] = En;
    }
    recur_bar_sync(BAR, WY_PREP_THREADS);
    /* 2. the four 16 x 16 A matrices, one per prep warp, on tensor cores over K = 64 */
    {
        const int w1 = tid1 >> 5, lane = tid1 & 31, g = lane >> 2, qd = lane & 3;
        const float *X = w1 < 2 ? wb + WB_RT : ahat; /* token-t side */
        const float *Y = (w1 & 1) ? bn : kn;         /* token-s side */
        float acc[2][4], acc2[2][4]; /* even / odd k steps: two shorter mma chains */
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[n][r] = acc2[n][r] = 0.f;
#pragma unroll
        for (int ks = 0; ks < WY_HS / 8; ks++) {
            const int jc = 8 * ks + qd;
            const recur_fa A = recur_make_a(X[g * WY_RS + jc], X[(g + 8) * WY_RS + jc], X[g * WY_RS + jc + 4],
                                            X[(g + 8) * WY_RS + jc + 4]);
#pragma unroll
            for (int n = 0; n < 2; n++)
                recur_mma3(ks & 1 ? acc2[n] : acc[n], A,
                           recur_make_b(Y[(8 * n + g) * WY_RS + jc], Y[(8 * n + g) * WY_RS + jc + 4]));
        }
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[n][r] += acc2[n][r];
        /* w1: 0 A_qk (s <= t), 1 A_qb (s <= t), 2 A_ak (s < t), 3 A_ab (s < t) */
        float *dst = w1 == 0 ? wb + WB_AQK : w1 == 1 ? wb + WB_AQB : w1 == 2 ? sm + WP_AAK : sm + WP_AAB;
        const int ds = w1 == 1 ? WY_QBS : WY_AS;
        const bool strict = w1 >= 2;
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int t = g + 8 * (r >> 1), s = 8 * n + 2 * qd + (r & 1);
                const bool keep = strict ? s < t : s <= t;
                dst[t * ds + s] = keep ? acc[n][r] : 0.f;
            }
    }
    recur_bar_sync(BAR, WY_PREP_THREADS);
    /* 3. [W | A~] = (I - L)^-1 [alpha E_{t-1} | A_ak], L = A_ab strictly lower: forward
     *    substitution down the 16 rows, one thread per column (64 of W, 16 of A~), the
     *    column in registers, L's rows broadcast from shared memory; no barriers. The
     *    remaining threads hand v to the state warps meanwhile. */
    if (tid1 < WY_HS + WY_N) {
        const bool isw = tid1 < WY_HS;
        const int col = isw ? tid1 : tid1 - WY_HS, rs = isw ? WY_RS : WY_AS;
        const float *rhs = isw ? ahat + col : sm + WP_AAK + col, *L = sm + WP_AAB;
        float x[WY_N];
#pragma unroll
        for (int t = 0; t < WY_N; t++) {
            float acc = rhs[t * rs];
#pragma unroll
            for (int u = 0; u < t; u++) acc += L[t * WY_AS + u] * x[u];
            x[t] = acc;
        }
        float *dst = isw ? wb + WB_WC + col : wb + WB_AI + col;
        const int ds = isw ? WY_RS : WY_AS;
#pragma unroll
        for (int t = 0; t < WY_N; t++) dst[t * ds] = x[t];
    } else {
        for (int e = tid1 - (WY_HS + WY_N); e < WY_N * WY_HS / 4; e += WY_PREP_THREADS - (WY_HS + WY_N)) {
            const int tt = e / (WY_HS / 4), i4 = e % (WY_HS / 4);
            *(float4 *)&wb[WB_V + tt * WY_RS + 4 * i4] = *(const float4 *)&rv[tt * WY_HS + 4 * i4];
        }
    }
}

/* Chunk c for one state warp: rows i0..i0+15 of S in sacc (m16n8 accumulator layout:
 * sacc[q][r] = S[i0 + g + 8 (r >> 1)][8q + 2qd + (r & 1)]). */
static __device__ __forceinline__ void wy_state(float (&sacc)[8][4], const float *wb, const wy_args &p, int32_t t0,
                                                int nt, int h, int i0, int lane) {
    const int g = lane >> 2, qd = lane & 3;
    float ua[2][4], ub[2][4], ya[2][4], yb[2][4]; /* two accumulators each: shorter mma chains */
#pragma unroll
    for (int n = 0; n < 2; n++)
#pragma unroll
        for (int r = 0; r < 4; r++) ua[n][r] = ub[n][r] = ya[n][r] = yb[n][r] = 0.f;
    /* U^T += S0 W^T and Y^T += S0 (rE)^T: A = S0 from the accumulators (k permuted) */
#pragma unroll
    for (int q = 0; q < 8; q++) {
        const recur_fa A = recur_make_a(sacc[q][0], sacc[q][2], sacc[q][1], sacc[q][3]);
#pragma unroll
        for (int n = 0; n < 2; n++) {
            const int t = 8 * n + g;
            const float2 wv = *(const float2 *)&wb[WB_WC + t * WY_RS + 8 * q + 2 * qd];
            const float2 rv = *(const float2 *)&wb[WB_RT + t * WY_RS + 8 * q + 2 * qd];
            if (q & 1) {
                recur_mma3(ub[n], A, recur_make_b(wv.x, wv.y));
                recur_mma3(yb[n], A, recur_make_b(rv.x, rv.y));
            } else {
                recur_mma3(ua[n], A, recur_make_b(wv.x, wv.y));
                recur_mma3(ya[n], A, recur_make_b(rv.x, rv.y));
            }
        }
    }
    /* U^T += V^T A~^T, Y^T += V^T A_qk^T: A = V^T (standard layout) */
    recur_fa Av[2];
#pragma unroll
    for (int ks = 0; ks < 2; ks++) {
        const int s = 8 * ks + qd;
        Av[ks] = recur_make_a(wb[WB_V + s * WY_RS + i0 + g], wb[WB_V + s * WY_RS + i0 + g + 8],
                              wb[WB_V + (s + 4) * WY_RS + i0 + g], wb[WB_V + (s + 4) * WY_RS + i0 + g + 8]);
#pragma unroll
        for (int n = 0; n < 2; n++) {
            if (ks > n) continue; /* both matrices vanish for s > t */
            const int t = 8 * n + g;
            recur_mma3(ub[n], Av[ks], recur_make_b(wb[WB_AI + t * WY_AS + s], wb[WB_AI + t * WY_AS + s + 4]));
            recur_mma3(yb[n], Av[ks], recur_make_b(wb[WB_AQK + t * WY_AS + s], wb[WB_AQK + t * WY_AS + s + 4]));
        }
    }
    /* Y^T += U^T A_qb^T: A = U^T from its accumulators (k permuted) */
    recur_fa Au[2];
#pragma unroll
    for (int ks = 0; ks < 2; ks++) {
        float u[4];
#pragma unroll
        for (int r = 0; r < 4; r++) u[r] = ua[ks][r] + ub[ks][r];
        Au[ks] = recur_make_a(u[0], u[2], u[1], u[3]);
#pragma unroll
        for (int n = 0; n < 2; n++) {
            if (ks > n) continue;
            const int t = 8 * n + g;
            const float2 qb = *(const float2 *)&wb[WB_AQB + t * WY_QBS + 8 * ks + 2 * qd];
            recur_mma3(ya[n], Au[ks], recur_make_b(qb.x, qb.y));
        }
    }
    /* y out (rows of the sequence past its end are not written) */
#pragma unroll
    for (int n = 0; n < 2; n++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int t = 8 * n + 2 * qd + (r & 1), i = i0 + g + 8 * (r >> 1);
            if (t < nt) p.y[(size_t)(t0 + t) * p.C + (size_t)h * WY_HS + i] = ya[n][r] + yb[n][r];
        }
    /* S = S0 diag(E_n) + (U^T Bt + V^T Kt): the chunk's term into fresh accumulators, then
     * one fp32 FMA into the carried state (the tensor cores' accumulation truncates: fed
     * the carried S directly, it would bias it slightly at each of the 12 steps of every
     * chunk; this way S is rounded once per chunk, to nearest) */
    float ds[8][4];
#pragma unroll
    for (int q = 0; q < 8; q++)
#pragma unroll
        for (int r = 0; r < 4; r++) ds[q][r] = 0.f;
#pragma unroll
    for (int ks = 0; ks < 2; ks++)
#pragma unroll
        for (int q = 0; q < 8; q++) {
            const int j = 8 * q + g;
            recur_mma3(ds[q], Au[ks],
                       recur_make_b(wb[WB_BT + (8 * ks + 2 * qd) * WY_BS + j], wb[WB_BT + (8 * ks + 2 * qd + 1) * WY_BS + j]));
            recur_mma3(ds[q], Av[ks],
                       recur_make_b(wb[WB_KT + (8 * ks + qd) * WY_RS + j], wb[WB_KT + (8 * ks + qd + 4) * WY_RS + j]));
        }
#pragma unroll
    for (int q = 0; q < 8; q++) {
        const float2 d = *(const float2 *)&wb[WB_DEC + 8 * q + 2 * qd];
        sacc[q][0] = fmaf(sacc[q][0], d.x, ds[q][0]);
        sacc[q][1] = fmaf(sacc[q][1], d.y, ds[q][1]);
        sacc[q][2] = fmaf(sacc[q][2], d.x, ds[q][2]);
        sacc[q][3] = fmaf(sacc[q][3], d.y, ds[q][3]);
    }
}

/* grid (heads, sequences), WY_THREADS threads; T the state's element type */
template <typename T>
static __global__ void __launch_bounds__(WY_THREADS, 1) wkv_wy_kernel(wy_args p) {
    extern __shared__ __align__(16) float sm[];
    const int h = blockIdx.x, sq = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int32_t r0 = p.seq_off[sq], r1 = p.seq_off[sq + 1];
    if (r1 - r0 < p.min_len || r1 <= r0) return;
    const int nck = (r1 - r0 + WY_N - 1) / WY_N;
    T *S = (T *)(p.pool + (size_t)p.slot[sq] * p.stride + p.offset) + (size_t)h * WY_HS * WY_HS;
    const bool state = warp < WY_STATE_WARPS;
    const int tid1 = tid - WY_PREP_THREADS, i0 = 16 * warp;
    float *raw = sm + WP_RAW;
    const int RAWSZ = 6 * WY_N * WY_HS;
    float sacc[8][4];
    if (state) {
        const int g = lane >> 2, qd = lane & 3;
/* scalar accesses: slots need no alignment (this is once per call) */
#pragma unroll
        for (int q = 0; q < 8; q++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                sacc[q][r] = recur_st_load(S[(size_t)(i0 + g + 8 * (r >> 1)) * WY_HS + 8 * q + 2 * qd + (r & 1)]);
    } else {
        wy_stage(p, raw, r0, r1, 0, h, tid1);
        recur_cp_async_commit();
        if (nck > 1) wy_stage(p, raw + RAWSZ, r0, r1, 1, h, tid1);
        recur_cp_async_commit();
        recur_cp_async_wait<1>();
        recur_bar_sync(1, WY_PREP_THREADS);
        wy_prep(sm, raw, sm, r1 - r0 < WY_N ? r1 - r0 : WY_N, tid1);
    }
    __syncthreads();
    for (int c = 0; c < nck; c++) {
        if (state) {
            const int32_t t0 = r0 + c * WY_N;
            wy_state(sacc, sm + (c & 1) * WB_SIZE, p, t0, r1 - t0 < WY_N ? r1 - t0 : WY_N, h, i0, lane);
        } else if (c + 1 < nck) {
            /* raw[c & 1] held chunk c, prepared one round ago: it takes chunk c + 2 */
            if (c + 2 < nck) wy_stage(p, raw + (c & 1) * RAWSZ, r0, r1, c + 2, h, tid1);
            recur_cp_async_commit();
            recur_cp_async_wait<1>(); /* chunk c + 1 */
            recur_bar_sync(1, WY_PREP_THREADS);
            const int32_t t1 = r0 + (c + 1) * WY_N;
            wy_prep(sm, raw + ((c + 1) & 1) * RAWSZ, sm + ((c + 1) & 1) * WB_SIZE, r1 - t1 < WY_N ? r1 - t1 : WY_N, tid1);
        }
        __syncthreads();
    }
    if (state) {
        const int g = lane >> 2, qd = lane & 3;
#pragma unroll
        for (int q = 0; q < 8; q++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                S[(size_t)(i0 + g + 8 * (r >> 1)) * WY_HS + 8 * q + 2 * qd + (r & 1)] = recur_st_store<T>(sacc[q][r]);
    }
}

recur_status_t recur_cuda_wkv_wy_init(recur_cuda_ctx_t *c) {
    const size_t smem = (size_t)WY_SMEM_FLOATS * sizeof(float);
    if (smem <= c->smem_optin) { /* else recur_cuda_wkv_wy reports the shape unsupported */
        RCU_CHECK(cudaFuncSetAttribute(wkv_wy_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        RCU_CHECK(cudaFuncSetAttribute(wkv_wy_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem));
    }
    return RECUR_OK;
}

recur_status_t recur_cuda_wkv_wy(recur_cuda_ctx_t *c, const recur_rwkv7_wkv_args_t *a, int32_t min_len, int *supported) {
    const size_t smem = (size_t)WY_SMEM_FLOATS * sizeof(float);
    const void *ins[6] = {a->r, a->w, a->k, a->v, a->kk, a->a};
    bool ok = a->head_size == WY_HS && a->C % WY_HS == 0 && smem <= c->smem_optin;
    for (int i = 0; i < 6; i++) ok = ok && ((uintptr_t)ins[i] & 15u) == 0; /* 16-byte cp.async rows */
    *supported = ok;
    if (!ok) return RECUR_OK;
    wy_args p;
    p.C = a->C;
    p.seq_off = a->rows.seq_off;
    p.slot = a->rows.slot;
    for (int i = 0; i < 6; i++) p.in[i] = (const float *)ins[i];
    p.pool = (char *)a->state.pool;
    p.stride = a->state.slot_bytes;
    p.offset = a->state.offset;
    p.y = a->y;
    p.min_len = min_len < 1 ? 1 : min_len;
    const dim3 grid((unsigned)(a->C / WY_HS), (unsigned)a->rows.n_seq);
    if (a->state.mat_dtype == RECUR_DTYPE_BF16) wkv_wy_kernel<__nv_bfloat16><<<grid, WY_THREADS, smem, c->stream>>>(p);
    else wkv_wy_kernel<float><<<grid, WY_THREADS, smem, c->stream>>>(p);
    RCU_LAUNCHED("wkv_wy_kernel");
    return RECUR_OK;
}
