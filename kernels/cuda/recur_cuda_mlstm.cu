/* recur_cuda_mlstm.cu: the xLSTM ops of the CUDA backend: the mLSTM cell (chunkwise form
 * of models/XLSTM.md §5, exactly the CPU reference's arithmetic per chunk) and the
 * per-head output norm.
 *
 * Sequences of RECUR_MLSTM_TC_MIN_LEN tokens or more (prefill) go through the tensor-core
 * chunkwise kernels of recur_cuda_mlstm_tc.cu (unless the configured chunk is 1, the plain
 * step form); the others, and every sequence of a decode batch, through the kernels
 * below, each kernel skipping the other path's sequences (recur_cuda_mlstm_path).
 *
 * Here mlstm runs as two kernels on the stream:
 * 1. the state and outputs, grid (DV tiles of ML_TV columns, heads, sequences), 256 threads:
 *    - mlstm_chunk_kernel (chunks of 2..128 tokens). A block keeps its C tile
 *      [DQK][ML_TV] and the head's n [DQK] in shared memory for the whole sequence (C is
 *      read from and written to the state once per call), and walks the sequence chunk
 *      by chunk: gates and cumulative log forget gates (one thread scans, the chunk is
 *      <= 128 long), per-token stabilisers m_t, the intra-chunk scores
 *      P = exp(D - m_t) q.k/sqrt(d) (L x L, recomputed by every DV tile of the head), the
 *      inter-chunk q^T C_prev and q.n_prev, the outputs h for the tile, then C and n
 *      updated to the chunk's end. q, k are staged in slices of ML_KS columns of DQK
 *      (whole, for chunks of <= 4 tokens); v for the tile once per chunk.
 *    - mlstm_step_kernel (chunks of 1 token: every decode batch, whatever the configured
 *      chunk, see recur_cuda_mlstm): C streamed through registers, one read and one write
 *      of each state element per token.
 *    n and m are needed by every tile but belong to the head: these blocks only read them
 *    from the state (n evolves in each block's shared memory, computed redundantly).
 * 2. mlstm_nm_kernel, grid (heads, sequences): replays the same gate and n arithmetic and
 *    writes n and m back. Running it after kernel 1 is what makes the update race-free:
 *    no block of kernel 1 can see a new n or m.
 * fp32 throughout, on CUDA cores. The effective chunk is min(chunk, 128, the longest sequence of the
 * batch), lowered further if the shared memory would not fit (any chunk gives the same
 * function up to rounding; below the longest sequence it splits exactly as the CPU).
 * C may be stored as bf16 (recur_state_ref_t.mat_dtype; the kernels are templates on its
 * element type T): kernel 1 widens it on load and rounds it on store, i.e. once per call in
 * mlstm_chunk_kernel (C stays in shared memory across the call's chunks) and once per token
 * in mlstm_step_kernel (which stores every token), the CPU reference's rounding points; n
 * and m are f32 either way. */
#include "recur_cuda_prefill.h"

#define ML_THREADS 256
#define ML_TV 64   /* DV columns per block: 256 threads = 4 row groups x 64 columns */
#define ML_KS 32   /* DQK columns of q/k staged at a time */
#define ML_LMAX 128

/* log(sigmoid(x)) without overflow, as the CPU reference */
static __device__ __forceinline__ float logsigmoidf_(float x) {
    return x >= 0.f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}

/* Gate arithmetic of one chunk [t0, t0+nt) of head h, shared by both kernels so that they
 * agree: ig[t] (capped input gate), bcum[t] (inclusive cumsum of logsigmoid(f)), wt[t]
 * (weight of token t in the end-of-chunk state), misc[0] = m after the chunk, misc[1] =
 * the decay of the state before the chunk. Ends with a barrier. */
static __device__ void ml_gates(const recur_mlstm_args_t &p, int32_t t0, int nt, int h, float m_prev, float *ig,
                                float *bcum, float *wt, float *misc) {
    const int NH = p.n_head;
    const float cap = p.gate_cap;
    for (int t = threadIdx.x; t < nt; t += blockDim.x) {
        const size_t r = (size_t)(t0 + t) * NH + h;
        const float fi = cap * tanhf((p.f_pre[r] + p.f_bias[h]) / cap);
        ig[t] = cap * tanhf((p.i_pre[r] + p.i_bias[h]) / cap);
        bcum[t] = logsigmoidf_(fi);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        /* the scan is serial, in the reference's order: nt <= 128 additions */
        float acc = 0.f;
        for (int t = 0; t < nt; t++) { acc += bcum[t]; bcum[t] = acc; }
        const float g = acc;
        float m_new = g + m_prev;
        for (int t = 0; t < nt; t++) { float a = g - bcum[t] + ig[t]; if (a > m_new) m_new = a; }
        misc[0] = m_new;
        misc[1] = expf(g + m_prev - m_new);
    }
    __syncthreads();
    const float g = bcum[nt - 1], m_new = misc[0];
    for (int t = threadIdx.x; t < nt; t += blockDim.x) wt[t] = expf(g - bcum[t] + ig[t] - m_new);
    __syncthreads();
}

/* Chunks up to this long (decode) stage all of q and k at once instead of ML_KS columns
 * at a time: a decode block is latency-bound, and each staging round is a global-memory
 * round trip plus a barrier. It is the TPI = 1 instance of the kernel. */
#define ML_FULL_STAGE_L 4

/* Row stride (floats) of the staged q/k rows: DK padded to whole slices, +1 so that reads
 * down a column hit distinct banks. */
static __host__ __device__ __forceinline__ int ml_qk_stride(int L, int DK) {
    return L <= ML_FULL_STAGE_L ? (DK + ML_KS - 1) / ML_KS * ML_KS + 1 : ML_KS + 1;
}

/* Floats of dynamic shared memory kernel 1 needs for chunk L and head dim DK. */
static size_t ml_smem_floats(int L, int DK) {
    return (size_t)DK * ML_TV + DK + (size_t)L * L + (size_t)L * ML_TV + 2 * (size_t)L * ml_qk_stride(L, DK) +
           7 * (size_t)L + 4;
}

/* TPI: rows of the output tile per thread (thread = column jx, rows rg + 4*i), so the
 * chunk is at most 4 * TPI tokens. Instantiated for 1, 4, 16, 32 so a decode step does
 * not carry 32 idle accumulators. */
template <int TPI, typename T>
static __global__ void __launch_bounds__(ML_THREADS)
mlstm_chunk_kernel(recur_mlstm_args_t p, int L, int32_t skip_below, int32_t skip_from) {
    extern __shared__ __align__(16) float sm[];
    const int NH = p.n_head, DK = p.dqk, DV = p.dv;
    const int tile = blockIdx.x, h = blockIdx.y, sq = blockIdx.z, tid = threadIdx.x;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    /* long ones: the tensor-core path; single tokens in a mixed batch: the step kernel */
    if (r0 >= r1 || r1 - r0 >= skip_from || r1 - r0 < skip_below) return;
    const int j0 = tile * ML_TV, tw = DV - j0 < ML_TV ? DV - j0 : ML_TV;
    char *st = recur_ml_state(p, sq);
    T *Cg = (T *)st + (size_t)h * DK * DV + j0;                 /* row a at Cg + a * DV */
    const float *ng = recur_ml_state_n(p, st) + (size_t)h * DK;
    const float *mg = recur_ml_state_n(p, st) + (size_t)NH * DK + h;
    const size_t qk_stride = (size_t)NH * DK, v_stride = (size_t)NH * DV;
    const float scale = 1.0f / sqrtf((float)DK);
    constexpr bool BF = sizeof(T) == 2;
    constexpr int VW = BF ? 8 : 4; /* elements per 16-byte state access */
    constexpr bool FULL = TPI == 1; /* L <= ML_FULL_STAGE_L: q, k staged whole (see above) */
    const int QS = ml_qk_stride(L, DK), dkp = (DK + ML_KS - 1) / ML_KS * ML_KS;

    float *Cs = sm;                          /* [DK][ML_TV] */
    float *ns = Cs + (size_t)DK * ML_TV;     /* [DK] */
    float *P = ns + DK;                      /* [L][L] */
    float *Vs = P + (size_t)L * L;           /* [L][ML_TV] */
    float *Qs = Vs + (size_t)L * ML_TV;      /* [L][QS]: a slice of q, or all of it (FULL) */
    float *Ks = Qs + (size_t)L * QS;         /* [L][QS]: likewise k, then wt * k */
    float *ig = Ks + (size_t)L * QS, *bcum = ig + L, *mts = bcum + L, *wprev = mts + L, *wt = wprev + L;
    float *divv = wt + L, *qn = divv + L, *misc = qn + L;

    /* ---- the state before the call (16-byte accesses where every row of the tile allows) */
    const bool vec = tw == ML_TV && DV % VW == 0 && ((uintptr_t)Cg & 15u) == 0;
    if (vec) {
        for (int e = tid; e < DK * (ML_TV / VW); e += ML_THREADS) {
            const int a = e / (ML_TV / VW), j = (e % (ML_TV / VW)) * VW;
            float *dst = Cs + (size_t)a * ML_TV + j;
            if constexpr (BF) {
                float f[8];
                recur_bf16x8_load((const __nv_bfloat16 *)(Cg + (size_t)a * DV + j), f);
                *(float4 *)dst = make_float4(f[0], f[1], f[2], f[3]);
                *(float4 *)(dst + 4) = make_float4(f[4], f[5], f[6], f[7]);
            } else {
                *(float4 *)dst = *(const float4 *)(Cg + (size_t)a * DV + j);
            }
        }
    } else {
        for (int e = tid; e < DK * ML_TV; e += ML_THREADS) {
            const int a = e / ML_TV, j = e % ML_TV;
            Cs[e] = j < tw ? recur_st_load(Cg[(size_t)a * DV + j]) : 0.f;
        }
    }
    for (int a = tid; a < DK; a += ML_THREADS) ns[a] = ng[a];
    float m_prev = *mg;
    const int jx = tid & (ML_TV - 1), rg = tid / ML_TV;
    __syncthreads();

    for (int32_t t0 = r0; t0 < r1; t0 += L) {
        const int nt = r1 - t0 < L ? r1 - t0 : L;
        ml_gates(p, t0, nt, h, m_prev, ig, bcum, wt, misc);
        const float m_new = misc[0], decay = misc[1];
        /* per-token stabiliser m_t = max(b_t + m_prev, max_{s<=t} b_t - b_s + i_s) */
        for (int t = tid; t < nt; t += ML_THREADS) {
            float mt = bcum[t] + m_prev;
            for (int s = 0; s <= t; s++) { float d = bcum[t] - bcum[s] + ig[s]; if (d > mt) mt = d; }
            mts[t] = mt;
            wprev[t] = expf(bcum[t] + m_prev - mt);
            qn[t] = 0.f;
        }
        for (int e = tid; e < nt * nt; e += ML_THREADS) P[(e / nt) * L + e % nt] = 0.f;
        for (int e = tid; e < nt * ML_TV; e += ML_THREADS) {
            const int t = e / ML_TV, j = e % ML_TV;
            Vs[t * ML_TV + j] = j < tw ? p.v[(size_t)(t0 + t) * v_stride + (size_t)h * DV + j0 + j] : 0.f;
        }
        float hacc[TPI];
#pragma unroll
        for (int i = 0; i < TPI; i++) hacc[i] = 0.f;
        __syncthreads();

        /* ---- q.k (pairs), q.n_prev and q^T C_prev, one DK slice at a time */
        /* q, k columns [a0, a0 + width) of the chunk's rows into Qs, Ks (zeros past DK) */
        auto stage_qk = [&](int a0, int width) {
            for (int e = tid; e < nt * width; e += ML_THREADS) {
                const int t = e / width, a = e % width;
                const size_t g = (size_t)(t0 + t) * qk_stride + (size_t)h * DK + a0 + a;
                Qs[t * QS + a] = a0 + a < DK ? p.q[g] : 0.f;
                Ks[t * QS + a] = a0 + a < DK ? p.k[g] : 0.f;
            }
        };
        if (FULL) {
            stage_qk(0, dkp);
            __syncthreads();
        }
        for (int a0 = 0; a0 < DK; a0 += ML_KS) {
            const int ka = DK - a0 < ML_KS ? DK - a0 : ML_KS;
            if (!FULL) {
                stage_qk(a0, ML_KS);
                __syncthreads();
            }
            const float *Qa = Qs + (FULL ? a0 : 0), *Ka = Ks + (FULL ? a0 : 0); /* this slice's column 0 */
            for (int e = tid; e < nt * nt; e += ML_THREADS) {
                const int t = e / nt, s = e % nt;
                if (s > t) continue;
                float acc = 0.f;
#pragma unroll 8
                for (int a = 0; a < ML_KS; a++) acc += Qa[t * QS + a] * Ka[s * QS + a];
                P[t * L + s] += acc;
            }
            for (int t = tid; t < nt; t += ML_THREADS) {
                float acc = 0.f;
                for (int a = 0; a < ka; a++) acc += Qa[t * QS + a] * ns[a0 + a];
                qn[t] += acc;
            }
            for (int a = 0; a < ka; a++) {
                const float cv = Cs[(size_t)(a0 + a) * ML_TV + jx];
#pragma unroll
                for (int i = 0; i < TPI; i++) {
                    const int t = rg + 4 * i;
                    if (t < nt) hacc[i] += Qa[t * QS + a] * cv;
                }
            }
            if (!FULL) __syncthreads(); /* before the next slice overwrites Qs, Ks */
        }
        if (FULL) __syncthreads(); /* every read of Ks done before it is rescaled below */
        /* ---- scores with their decay, then the denominators */
        for (int e = tid; e < nt * nt; e += ML_THREADS) {
            const int t = e / nt, s = e % nt;
            if (s <= t) P[t * L + s] = expf(bcum[t] - bcum[s] + ig[s] - mts[t]) * P[t * L + s] * scale;
        }
        if (FULL) /* k becomes the state-update weights wt * k (the loop below reads them) */
            for (int e = tid; e < nt * dkp; e += ML_THREADS) Ks[(e / dkp) * QS + e % dkp] *= wt[e / dkp];
        __syncthreads();
        for (int t = tid; t < nt; t += ML_THREADS) {
            float den = wprev[t] * scale * qn[t];
            for (int s = 0; s <= t; s++) den += P[t * L + s];
            divv[t] = fmaxf(fabsf(den), expf(-mts[t])) + p.eps;
        }
        __syncthreads();
        /* ---- outputs of the tile */
#pragma unroll
        for (int i = 0; i < TPI; i++) {
            const int t = rg + 4 * i;
            if (t < nt) {
                float acc = hacc[i] * wprev[t] * scale;
                for (int s = 0; s <= t; s++) acc += P[t * L + s] * Vs[s * ML_TV + jx];
                if (jx < tw) p.h[(size_t)(t0 + t) * v_stride + (size_t)h * DV + j0 + jx] = acc / divv[t];
            }
        }
        /* ---- C and n to the end of the chunk: C = decay C + sum_t (wt k_t) v_t^T.
         * No barrier is needed first: Ks, ns and Cs were last read in the slice loop,
         * which ended with one, and the output loop above reads none of them. */
        for (int a0 = 0; a0 < DK; a0 += ML_KS) {
            const int ka = DK - a0 < ML_KS ? DK - a0 : ML_KS;
            if (!FULL) {
                for (int e = tid; e < nt * ML_KS; e += ML_THREADS) {
                    const int t = e / ML_KS, a = e % ML_KS;
                    Ks[t * QS + a] = a < ka ? wt[t] * p.k[(size_t)(t0 + t) * qk_stride + (size_t)h * DK + a0 + a] : 0.f;
                }
                __syncthreads();
            }
            const float *Ka = Ks + (FULL ? a0 : 0);
#pragma unroll
            for (int ii = 0; ii < ML_KS / 4; ii++) {
                const int a = rg + 4 * ii;
                if (a < ka) {
                    float *cp = Cs + (size_t)(a0 + a) * ML_TV + jx;
                    float acc = decay * *cp;
                    for (int t = 0; t < nt; t++) acc += Ka[t * QS + a] * Vs[t * ML_TV + jx];
                    *cp = acc;
                }
            }
            if (tid < ka) {
                float acc = decay * ns[a0 + tid];
                for (int t = 0; t < nt; t++) acc += Ka[t * QS + tid];
                ns[a0 + tid] = acc;
            }
            /* slices touch disjoint rows of Cs and ns; the barrier only guards Ks */
            if (!FULL) __syncthreads();
        }
        if (FULL) __syncthreads(); /* before the next chunk stages over Qs, Ks */
        m_prev = m_new;
    }

    /* ---- the C tile back to the state (n and m: mlstm_nm_kernel); bf16: rounded here,
     * once per call */
    if (vec) {
        for (int e = tid; e < DK * (ML_TV / VW); e += ML_THREADS) {
            const int a = e / (ML_TV / VW), j = (e % (ML_TV / VW)) * VW;
            const float *src = Cs + (size_t)a * ML_TV + j;
            if constexpr (BF) {
                const float4 x = *(const float4 *)src, y = *(const float4 *)(src + 4);
                const float f[8] = {x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w};
                recur_bf16x8_store((__nv_bfloat16 *)(Cg + (size_t)a * DV + j), f);
            } else {
                *(float4 *)(Cg + (size_t)a * DV + j) = *(const float4 *)src;
            }
        }
    } else {
        for (int e = tid; e < DK * ML_TV; e += ML_THREADS) {
            const int a = e / ML_TV, j = e % ML_TV;
            if (j < tw) Cg[(size_t)a * DV + j] = recur_st_store<T>(Cs[e]);
        }
    }
}

/* The step form (chunks of one token: decode, or chunk = 1), grid (DV tiles, heads,
 * sequences), 256 threads. Nothing of C is staged: each thread streams its columns of the
 * tile down every RG-th row, reading C once, adding q[a] C[a][j] to its share of the output
 * and writing the updated element straight back, so a token costs one read and one write
 * of the state and the block needs ~7-12 KB of shared memory (many blocks per SM keep many
 * loads in flight). VEC (the tile 16-byte aligned in every slot, DV a multiple of 64): a
 * thread owns 16 bytes of adjacent columns (4 f32 or 8 bf16) and moves them with one
 * access, 16 or 32 row groups; otherwise one column and 4 row groups. A bf16 C is widened
 * on load and rounded on store, i.e. after every token. Per token the arithmetic is
 * mlstm_chunk_kernel's with nt = 1, in the same order (ml_gates' formulas), so the paths
 * and mlstm_nm_kernel agree. n evolves in shared memory as in the chunk kernel. */
#define ML_STEP_UNROLL 8 /* rows of C loaded per thread before they are used */
template <bool VEC, typename T>
static __host__ __device__ constexpr int ml_step_rg() { /* row groups */
    return ML_THREADS / (ML_TV / (VEC ? 16 / (int)sizeof(T) : 1));
}
/* Dynamic shared memory of mlstm_step_kernel (floats): q, wt k, n [DK] each, v [ML_TV],
 * the row groups' partial outputs [RG >= 16][ML_TV], misc [8] and two [32] reductions. */
static size_t ml_step_smem_floats(int DK, int rg) {
    return 3 * (size_t)DK + ML_TV + (size_t)(rg > 16 ? rg : 16) * ML_TV + 8 + 64;
}
/* 16 bytes of C (4 f32 or 8 bf16 adjacent columns) -> fp32 */
static __device__ __forceinline__ void ml_widen16(const uint4 &u, float (&f)[4], const float *) {
    f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
static __device__ __forceinline__ void ml_widen16(const uint4 &u, float (&f)[8], const __nv_bfloat16 *) {
    recur_bf16x8_widen(u, f);
}
/* Rows of C per thread a small decode grid loads before the PDL wait (VEC only): xLSTM 7B's
 * whole share of a thread (DQK 256 over 16 row groups in f32, 32 in bf16), 256 bytes of
 * registers. Only when the grid is small (ml_step_preload): at large batches the registers
 * would cost occupancy, which the state streaming needs more. */
template <typename T> static __host__ __device__ constexpr int ml_step_pre_rows() { return sizeof(T) == 2 ? 8 : 16; }
static bool ml_step_preload(const recur_cuda_ctx_t *c, const dim3 &grid) {
    return (int64_t)grid.x * grid.y * grid.z <= 2 * (int64_t)c->sm_count;
}
/* Launched with PDL (recur_cuda_internal.h). Before the wait a block reads what the kernel
 * ahead (the products) cannot write: its sequence and slot, the head's n and m and, with
 * PRE, its first token's rows of C (the state was last written a token earlier), so that
 * after the wait only q, k, v and the gates are still to come. The rows are then used in
 * the order the loop would load them, so the result does not depend on PRE. */
template <bool VEC, typename T, bool PRE>
static __global__ void __launch_bounds__(ML_THREADS)
mlstm_step_kernel(recur_mlstm_args_t p, int32_t skip_from) {
    constexpr bool BF = sizeof(T) == 2;
    constexpr int CPT = VEC ? 16 / (int)sizeof(T) : 1; /* columns per thread */
    constexpr int RG = ml_step_rg<VEC, T>();           /* row groups: 16, 32 or 4 */
    constexpr int NPRE = PRE && VEC ? ml_step_pre_rows<T>() : 0;
    extern __shared__ __align__(16) float sm[];
    const int NH = p.n_head, DK = p.dqk, DV = p.dv;
    const int tile = blockIdx.x, h = blockIdx.y, sq = blockIdx.z, tid = threadIdx.x;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r0 >= r1 || r1 - r0 >= skip_from) {
        recur_pdl_wait(); /* every block waits: completion stays transitive down the stream */
        return;
    }
    const int j0 = tile * ML_TV, tw = DV - j0 < ML_TV ? DV - j0 : ML_TV;
    const int jc = (tid % (ML_TV / CPT)) * CPT, rg = tid / (ML_TV / CPT); /* first column, row group */
    char *st = recur_ml_state(p, sq);
    T *Cg = (T *)st + (size_t)h * DK * DV + j0 + jc;  /* this thread's column(s), row a at + a * DV */
    const float *ng = recur_ml_state_n(p, st) + (size_t)h * DK;
    const float *mg = recur_ml_state_n(p, st) + (size_t)NH * DK + h;
    const size_t qk_stride = (size_t)NH * DK, v_stride = (size_t)NH * DV;
    const float scale = 1.0f / sqrtf((float)DK), cap = p.gate_cap;
    float *qs = sm, *kw = qs + DK, *ns = kw + DK; /* [DK] each: q, wt * k, n */
    float *vs = ns + DK;                          /* [ML_TV] */
    float *red = vs + ML_TV;                      /* [RG][ML_TV]: the row groups' partial outputs */
    float *misc = red + (RG > 16 ? RG : 16) * ML_TV; /* [8], then two [32] reduction buffers */
    for (int a = tid; a < DK; a += ML_THREADS) ns[a] = ng[a];
    float m_prev = *mg;
    const float f_bias = p.f_bias[h], i_bias = p.i_bias[h]; /* parameters: written at load time only */
    const bool col = jc < tw; /* VEC needs tw == ML_TV, so all its threads have columns */
    uint4 pre[NPRE > 0 ? NPRE : 1];
#pragma unroll
    for (int u = 0; u < NPRE; u++)
        if (rg + RG * u < DK) pre[u] = *(const uint4 *)(Cg + (size_t)(rg + RG * u) * DV);
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    /* With DK <= ML_THREADS a thread's q and k (one element, a = tid) and v are loaded
     * before thread 0 reads the gates, so that the token's inputs take one round trip to
     * L2 instead of two (the gates, a barrier, then q, k, v). */
    const bool one = DK <= ML_THREADS;
    for (int32_t t = r0; t < r1; t++) {
        const size_t qo = (size_t)t * qk_stride + (size_t)h * DK;
        float q1 = 0.f, k1 = 0.f, v1 = 0.f;
        if (one && tid < DK) {
            q1 = p.q[qo + tid];
            k1 = p.k[qo + tid];
        }
        if (tid < tw) v1 = p.v[(size_t)t * v_stride + (size_t)h * DV + j0 + tid];
        /* gates of token t (thread 0; the formulas of ml_gates with nt = 1) */
        if (tid == 0) {
            const size_t r = (size_t)t * NH + h;
            const float fi = cap * tanhf((p.f_pre[r] + f_bias) / cap);
            const float ig = cap * tanhf((p.i_pre[r] + i_bias) / cap);
            const float b = 0.f + logsigmoidf_(fi); /* bcum[0], as the chunk kernel's scan */
            float m_new = b + m_prev;
            const float aa = b - b + ig;
            if (aa > m_new) m_new = aa;
            float mt = b + m_prev; /* the per-token stabiliser: here equal to m_new */
            const float d = b - b + ig;
            if (d > mt) mt = d;
            misc[0] = m_new;
            misc[1] = expf(b + m_prev - m_new); /* decay of C, n */
            misc[2] = expf(b - b + ig - m_new); /* wt */
            misc[3] = mt;
            misc[4] = expf(b + m_prev - mt);    /* wprev */
            misc[5] = expf(b - b + ig - mt);    /* the score's decay */
        }
        __syncthreads(); /* misc ready */
        const float decay = misc[1], wt = misc[2];
        float pq = 0.f, pn = 0.f;
        for (int a = tid; a < DK; a += ML_THREADS) {
            const float qa = one ? q1 : p.q[qo + a], ka = one ? k1 : p.k[qo + a], na = ns[a];
            qs[a] = qa;
            kw[a] = wt * ka;
            pq += qa * ka;
            pn += qa * na;
            ns[a] = decay * na + wt * ka; /* as mlstm_nm_kernel: decay n + sum_t wt k */
        }
        if (tid < ML_TV) vs[tid] = tid < tw ? v1 : 0.f;
        const float qk = recur_block_sum(pq, misc + 8); /* barriers inside: qs, kw, vs visible after */
        const float qn = recur_block_sum(pn, misc + 8 + 32);
        float hacc[CPT], vj[CPT];
#pragma unroll
        for (int e = 0; e < CPT; e++) { hacc[e] = 0.f; vj[e] = vs[jc + e]; }
        /* row a of the tile, its values cv as loaded: the output's term and the new C */
        auto row = [&](int a, const float (&cv)[CPT]) {
            const float qa = qs[a], ka = kw[a];
            float nv[CPT];
#pragma unroll
            for (int e = 0; e < CPT; e++) {
                hacc[e] += qa * cv[e];
                nv[e] = decay * cv[e] + ka * vj[e];
            }
            T *cp = Cg + (size_t)a * DV;
            if constexpr (VEC && BF) recur_bf16x8_store((__nv_bfloat16 *)cp, nv);
            else if constexpr (VEC) *(float4 *)cp = make_float4(nv[0], nv[1], nv[2], nv[3]);
            else *cp = recur_st_store<T>(nv[0]);
        };
        if (col) {
            int a = rg;
            if constexpr (NPRE > 0) {
                if (t == r0) { /* the preloaded rows first: the order of the loop below */
#pragma unroll
                    for (int u = 0; u < NPRE; u++)
                        if (rg + RG * u < DK) {
                            float cv[CPT];
                            ml_widen16(pre[u], cv, (const T *)nullptr);
                            row(rg + RG * u, cv);
                        }
                    a = rg + RG * NPRE;
                }
            }
            for (; a + RG * (ML_STEP_UNROLL - 1) < DK; a += RG * ML_STEP_UNROLL) {
                float cv[ML_STEP_UNROLL][CPT];
#pragma unroll
                for (int u = 0; u < ML_STEP_UNROLL; u++) {
                    const T *cp = Cg + (size_t)(a + RG * u) * DV;
                    if constexpr (VEC) {
                        ml_widen16(*(const uint4 *)cp, cv[u], (const T *)nullptr);
                    } else {
                        cv[u][0] = recur_st_load(*cp);
                    }
                }
#pragma unroll
                for (int u = 0; u < ML_STEP_UNROLL; u++) row(a + RG * u, cv[u]);
            }
            for (; a < DK; a += RG) {
                float cv[CPT];
#pragma unroll
                for (int e = 0; e < CPT; e++) cv[e] = recur_st_load(Cg[(size_t)a * DV + e]);
                row(a, cv);
            }
        }
#pragma unroll
        for (int e = 0; e < CPT; e++) red[rg * ML_TV + jc + e] = hacc[e];
        __syncthreads();
        if (tid < tw) { /* one thread per output column */
            const float mt = misc[3], wprev = misc[4];
            const float P = misc[5] * qk * scale;
            const float den = wprev * scale * qn + P;
            const float dv = fmaxf(fabsf(den), expf(-mt)) + p.eps;
            float num = 0.f;
            for (int g = 0; g < RG; g++) num += red[g * ML_TV + tid];
            p.h[(size_t)t * v_stride + (size_t)h * DV + j0 + tid] = (num * wprev * scale + P * vs[tid]) / dv;
        }
        m_prev = misc[0];
        __syncthreads(); /* thread 0 rewrites misc for the next token only after every read */
    }
}

/* xlstm_head_out for one (row, head) by one warp, in the register form (DV <= 32 *
 * XH_REGS): x, o and out at the item's first element, wv the lane's norm weights
 * (elements lane + 32 u). xlstm_head_out_kernel and the fused decode form of
 * mlstm_nm_kernel both run exactly this, so they agree bit for bit. */
#define XH_REGS 16
static __device__ __forceinline__ void head_out_item(const float *x, const float *__restrict__ o_pre,
                                                     const float (&wv)[XH_REGS], int DV, float eps, int lane,
                                                     float *out) {
    float xv[XH_REGS], ov[XH_REGS];
#pragma unroll
    for (int u = 0; u < XH_REGS; u++) {
        const int j = lane + 32 * u;
        xv[u] = j < DV ? x[j] : 0.f;
        ov[u] = j < DV ? o_pre[j] : 0.f;
    }
    float s = 0.f;
#pragma unroll
    for (int u = 0; u < XH_REGS; u++)
        if (lane + 32 * u < DV) s += xv[u];
    const float mean = recur_warp_sum(s) / (float)DV;
    float v = 0.f;
#pragma unroll
    for (int u = 0; u < XH_REGS; u++)
        if (lane + 32 * u < DV) { float d = xv[u] - mean; v += d * d; }
    const float inv = 1.0f / sqrtf(recur_warp_sum(v) / (float)DV + eps);
#pragma unroll
    for (int u = 0; u < XH_REGS; u++)
        if (lane + 32 * u < DV) out[lane + 32 * u] = (xv[u] - mean) * inv * wv[u] * recur_sigmoidf(ov[u]);
}

/* The head output norm folded into mlstm_nm_kernel (decode: see recur_cuda_mlstm_head_out):
 * o_pre, w, eps and out of xlstm_head_out, over the op's h. */
struct ml_head_out {
    const float *o_pre, *w;
    float eps;
    float *out;
};

/* grid (heads, sequences): n and m of each head through the sequence, the same chunks and
 * the same arithmetic as mlstm_chunk_kernel; runs after it on the stream. Launched with PDL
 * (recur_cuda_internal.h): it computes n and m before the wait, into shared memory (dynamic,
 * DK floats), and only writes them after it. Every kernel of the op ahead of it (the step
 * kernel, the chunk kernel) reads n and m but writes neither, nor the gates or k, and the
 * kernel before the op has completed when this one starts (the step kernel waits in every
 * block; the chunk kernel is a plain launch). So in a decode step its arithmetic overlaps
 * the step kernel's. With HO (decode: recur_cuda_mlstm_head_out) its warps then also do
 * xlstm_head_out for the sequence's rows and the block's head, whose h the step kernel
 * has just written: one launch fewer a layer. */
template <bool HO>
static __global__ void __launch_bounds__(ML_THREADS)
mlstm_nm_kernel(recur_mlstm_args_t p, int L, int32_t skip_from, ml_head_out ho) {
    __shared__ float ig[ML_LMAX], bcum[ML_LMAX], wt[ML_LMAX], misc[4];
    extern __shared__ float ns[]; /* [DK]: n as it evolves */
    const int NH = p.n_head, DK = p.dqk, h = blockIdx.x, sq = blockIdx.y;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r0 >= r1 || r1 - r0 >= skip_from) {
        recur_pdl_wait(); /* every block waits: completion stays transitive down the stream */
        return;
    }
    float *nm = recur_ml_state_n(p, recur_ml_state(p, sq)); /* n [NH][DK], then m [NH] */
    float *ng = nm + (size_t)h * DK, *mg = nm + (size_t)NH * DK + h;
    const size_t qk_stride = (size_t)NH * DK;
    float m_prev = *mg;
    float wv[XH_REGS]; /* HO: the head's norm weights, a lane's (written only at load time) */
    if (HO)
#pragma unroll
        for (int u = 0; u < XH_REGS; u++) {
            const int j = (int)(threadIdx.x & 31) + 32 * u;
            wv[u] = j < p.dv ? ho.w[(size_t)h * p.dv + j] : 0.f;
        }
    /* each a is owned by one thread for the whole sequence: no barrier needed around ns */
    for (int a = threadIdx.x; a < DK; a += ML_THREADS) ns[a] = ng[a];
    for (int32_t t0 = r0; t0 < r1; t0 += L) {
        const int nt = r1 - t0 < L ? r1 - t0 : L;
        ml_gates(p, t0, nt, h, m_prev, ig, bcum, wt, misc);
        const float decay = misc[1];
        for (int a = threadIdx.x; a < DK; a += ML_THREADS) {
            float acc = decay * ns[a];
            for (int t = 0; t < nt; t++) acc += wt[t] * p.k[(size_t)(t0 + t) * qk_stride + (size_t)h * DK + a];
            ns[a] = acc;
        }
        m_prev = misc[0];
        __syncthreads(); /* before the next chunk's gates overwrite wt and misc */
    }
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    for (int a = threadIdx.x; a < DK; a += ML_THREADS) ng[a] = ns[a];
    if (threadIdx.x == 0) *mg = m_prev;
    if (HO) /* a warp per row of the sequence (one in decode), the block's head */
        for (int32_t r = r0 + (int32_t)(threadIdx.x >> 5); r < r1; r += ML_THREADS / 32) {
            const size_t o = (size_t)r * NH * p.dv + (size_t)h * p.dv;
            head_out_item(p.h + o, ho.o_pre + o, wv, p.dv, ho.eps, (int)(threadIdx.x & 31), ho.out + o);
        }
}

recur_status_t recur_cuda_mlstm_init(recur_cuda_ctx_t *c) {
    /* Allow every instance the device's whole opt-in shared memory once, at init, rather
     * than setting the attribute on each call. */
#define ML_SMEM_ATTR(kernel) \
    RCU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->smem_optin))
    ML_SMEM_ATTR((mlstm_chunk_kernel<1, float>));
    ML_SMEM_ATTR((mlstm_chunk_kernel<4, float>));
    ML_SMEM_ATTR((mlstm_chunk_kernel<16, float>));
    ML_SMEM_ATTR((mlstm_chunk_kernel<32, float>));
    ML_SMEM_ATTR((mlstm_chunk_kernel<1, __nv_bfloat16>));
    ML_SMEM_ATTR((mlstm_chunk_kernel<4, __nv_bfloat16>));
    ML_SMEM_ATTR((mlstm_chunk_kernel<16, __nv_bfloat16>));
    ML_SMEM_ATTR((mlstm_chunk_kernel<32, __nv_bfloat16>));
    ML_SMEM_ATTR((mlstm_step_kernel<true, float, false>));
    ML_SMEM_ATTR((mlstm_step_kernel<true, float, true>));
    ML_SMEM_ATTR((mlstm_step_kernel<false, float, false>));
    ML_SMEM_ATTR((mlstm_step_kernel<true, __nv_bfloat16, false>));
    ML_SMEM_ATTR((mlstm_step_kernel<true, __nv_bfloat16, true>));
    ML_SMEM_ATTR((mlstm_step_kernel<false, __nv_bfloat16, false>));
#undef ML_SMEM_ATTR
    /* this is the backend's one init hook for the recurrences: the chunked prefill paths
     * of both models set their shared-memory limits here too */
    recur_status_t st = recur_cuda_mlstm_tc_init(c);
    return st == RECUR_OK ? recur_cuda_wkv_wy_init(c) : st;
}

/* The CUDA-core kernels for every sequence shorter than skip_from (INT32_MAX: all), with
 * the state's element type T. In a batch that mixes single tokens (decode) with longer
 * pieces (prefill chunks) the single tokens still go through the step kernel and only the
 * pieces through the chunk kernel: the chunk kernel keeps a [DQK][ML_TV] tile of C in shared
 * memory (64 KiB at xLSTM 7B's DQK 256, with the staged q and k beside it), which for a one-token sequence
 * is the same bytes as the step kernel's streaming at a fraction of its occupancy. For a
 * one-token sequence both are the same function (one chunk of one token), and
 * mlstm_nm_kernel's arithmetic for it does not depend on L either. */
template <typename T>
static recur_status_t mlstm_serial(recur_cuda_ctx_t *c, const recur_mlstm_args_t *a, int32_t skip_from,
                                   const ml_head_out *ho) {
    int L = a->chunk < 1 ? 1 : a->chunk > ML_LMAX ? ML_LMAX : a->chunk;
    /* No sequence is longer than n_rows - n_seq + 1 (sequences are not empty in practice;
     * an empty one only makes this bound loose, never wrong): a decode batch (one row per
     * sequence) takes the step kernel whatever the configured chunk, and a shorter chunk
     * that still covers every sequence splits them exactly as the configured one would. */
    const int32_t longest = a->rows.n_rows - a->rows.n_seq + 1;
    if (longest >= 1 && longest < L) L = longest;
    if (skip_from > 1 && skip_from - 1 < L) L = skip_from - 1; /* the longer ones are not ours */
    while (L > 1 && ml_smem_floats(L, a->dqk) * sizeof(float) > c->smem_optin) L = (L + 1) / 2;
    const size_t smem = ml_smem_floats(L, a->dqk) * sizeof(float);
    if (smem > c->smem_optin) {
        recur_log_err("cuda mlstm: dqk %d needs %zu bytes of shared memory per block, the device allows %zu", a->dqk,
                      smem, c->smem_optin);
        return RECUR_E_UNSUPPORTED;
    }
    const dim3 grid((unsigned)recur_cuda_cdiv(a->dv, ML_TV), (unsigned)a->n_head, (unsigned)a->rows.n_seq);
    /* single-token sequences of a mixed batch: the step kernel (skip_from 2), then the
     * chunk kernel for the rest (skip_below 2) */
    const int32_t step_skip_from = L == 1 ? skip_from : 2;
    if (L == 1 || a->rows.n_seq > 1) {
        /* 16-byte path: every slot's tile rows 16-byte aligned (DV a multiple of the tile,
         * the pool, the slot size and the piece's offset; C starts the piece) */
        const bool vec = a->dv % ML_TV == 0 && a->state.slot_bytes % 16 == 0 && a->state.offset % 16 == 0 &&
                         ((uintptr_t)a->state.pool & 15u) == 0;
        const size_t sm1 = ml_step_smem_floats(a->dqk, vec ? ml_step_rg<true, T>() : ml_step_rg<false, T>()) *
                           sizeof(float);
        if (sm1 > c->smem_optin) {
            recur_log_err("cuda mlstm: dqk %d too large for the step kernel", a->dqk);
            return RECUR_E_UNSUPPORTED;
        }
        const dim3 block(ML_THREADS);
        if (vec && ml_step_preload(c, grid))
            RCU_LAUNCH("mlstm_step_kernel", recur_cuda_launch(c, mlstm_step_kernel<true, T, true>, grid, block, sm1, *a,
                                                              step_skip_from));
        else if (vec)
            RCU_LAUNCH("mlstm_step_kernel", recur_cuda_launch(c, mlstm_step_kernel<true, T, false>, grid, block, sm1, *a,
                                                              step_skip_from));
        else
            RCU_LAUNCH("mlstm_step_kernel", recur_cuda_launch(c, mlstm_step_kernel<false, T, false>, grid, block, sm1,
                                                              *a, step_skip_from));
    }
    if (L > 1) {
        const int32_t below = a->rows.n_seq > 1 ? 2 : 1;
        if (L <= ML_FULL_STAGE_L) mlstm_chunk_kernel<1, T><<<grid, ML_THREADS, smem, c->stream>>>(*a, L, below, skip_from);
        else if (L <= 16) mlstm_chunk_kernel<4, T><<<grid, ML_THREADS, smem, c->stream>>>(*a, L, below, skip_from);
        else if (L <= 64) mlstm_chunk_kernel<16, T><<<grid, ML_THREADS, smem, c->stream>>>(*a, L, below, skip_from);
        else mlstm_chunk_kernel<32, T><<<grid, ML_THREADS, smem, c->stream>>>(*a, L, below, skip_from);
        RCU_LAUNCHED("mlstm_chunk_kernel");
    }
    if ((size_t)a->dqk * sizeof(float) > 32768) { /* within the default dynamic limit beside its static arrays */
        recur_log_err("cuda mlstm: dqk %d too large for the n/m kernel", a->dqk);
        return RECUR_E_UNSUPPORTED;
    }
    const dim3 nm_grid((unsigned)a->n_head, (unsigned)a->rows.n_seq);
    if (ho)
        RCU_LAUNCH("mlstm_nm_kernel", recur_cuda_launch(c, mlstm_nm_kernel<true>, nm_grid, dim3(ML_THREADS),
                                                        (size_t)a->dqk * sizeof(float), *a, L, skip_from, *ho));
    else
        RCU_LAUNCH("mlstm_nm_kernel", recur_cuda_launch(c, mlstm_nm_kernel<false>, nm_grid, dim3(ML_THREADS),
                                                        (size_t)a->dqk * sizeof(float), *a, L, skip_from,
                                                        ml_head_out{}));
    return RECUR_OK;
}

extern "C" recur_status_t recur_cuda_mlstm_path(recur_backend_t *b, const recur_mlstm_args_t *a, recur_cuda_path_t path) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(a->n_head > 0 && a->dqk > 0 && a->dv > 0);
    RECUR_ASSERT(a->state.mat_dtype == RECUR_DTYPE_F32 ||
                 (a->state.mat_dtype == RECUR_DTYPE_BF16 && ((size_t)a->n_head * a->dqk * a->dv) % 2 == 0));
    RECUR_ASSERT(a->state.slot_bytes % 4 == 0 && a->state.offset % 4 == 0);
    if (a->rows.n_rows <= 0 || a->rows.n_seq <= 0) return RECUR_OK;
    /* No sequence is longer than n_rows - n_seq + 1. Sequences from min_len tokens on go
     * through the tensor-core kernels (unless the configured chunk is 1, the plain step
     * form, or the shape is one they do not implement); the rest through the CUDA-core
     * ones, each kernel skipping the other's sequences. */
    const int32_t longest = a->rows.n_rows - a->rows.n_seq + 1;
    const int32_t min_len = path == RECUR_CUDA_PATH_CHUNKED ? 1 : RECUR_MLSTM_TC_MIN_LEN;
    int32_t skip_from = INT32_MAX;
    if (path != RECUR_CUDA_PATH_SERIAL && (a->chunk > 1 || path == RECUR_CUDA_PATH_CHUNKED) && longest >= min_len) {
        int supported = 0;
        recur_status_t st = recur_cuda_mlstm_tc(c, a, min_len, &supported);
        if (st != RECUR_OK) return st;
        if (supported) {
            if (a->rows.n_seq == 1 || min_len <= 1) return RECUR_OK; /* nothing is left over */
            skip_from = min_len;
        }
    }
    return a->state.mat_dtype == RECUR_DTYPE_BF16 ? mlstm_serial<__nv_bfloat16>(c, a, skip_from, NULL)
                                                  : mlstm_serial<float>(c, a, skip_from, NULL);
}

recur_status_t recur_cuda_mlstm(recur_backend_t *b, const recur_mlstm_args_t *a) {
    return recur_cuda_mlstm_path(b, a, RECUR_CUDA_PATH_AUTO);
}

/* One warp per (row, head): LayerNorm without bias over DV (two passes, fp32), times w
 * and sigmoid(o). out may alias h: each lane writes only elements it alone reads, after
 * the warp-wide reductions. Launched with PDL. When a head fits (DV <= 32 * XH_REGS: every
 * model here) each lane holds its elements in registers (head_out_item): the norm weights
 * loaded before the wait (written only at load time), h and o together right after it, so
 * the kernel waits on L2 once; otherwise the weights go to L2 before the wait and the rows
 * are re-read. Both forms do the same arithmetic in the same order. */
static __global__ void __launch_bounds__(256)
xlstm_head_out_kernel(const float *h, const float *__restrict__ o_pre, const float *__restrict__ w, int64_t n_items,
                      int NH, int DV, float eps, float *out) {
    const int64_t item = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, hh = (int)(item % NH);
    const bool regs = DV <= 32 * XH_REGS;
    const float *wh = w + (size_t)hh * DV;
    float wv[XH_REGS];
    if (item < n_items) {
        if (regs) {
#pragma unroll
            for (int u = 0; u < XH_REGS; u++) wv[u] = lane + 32 * u < DV ? wh[lane + 32 * u] : 0.f;
        } else {
            for (int j = lane * 32; j < DV; j += 32 * 32) asm volatile("prefetch.global.L2 [%0];" ::"l"(wh + j));
        }
    }
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    if (item >= n_items) return;
    const size_t o = (size_t)item * DV; /* rows are NH*DV wide, heads consecutive */
    const float *x = h + o;
    if (regs) {
        head_out_item(x, o_pre + o, wv, DV, eps, lane, out + o);
        return;
    }
    float s = 0.f;
    for (int j = lane; j < DV; j += 32) s += x[j];
    const float mean = recur_warp_sum(s) / (float)DV;
    float v = 0.f;
    for (int j = lane; j < DV; j += 32) { float d = x[j] - mean; v += d * d; }
    const float inv = 1.0f / sqrtf(recur_warp_sum(v) / (float)DV + eps);
    for (int j = lane; j < DV; j += 32) out[o + j] = (x[j] - mean) * inv * wh[j] * recur_sigmoidf(o_pre[o + j]);
}

recur_status_t recur_cuda_xlstm_head_out(recur_backend_t *b, const float *h, const float *o_pre, const float *w,
                                         int32_t M, int32_t n_head, int32_t dv, float eps, float *out) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const int64_t n_items = (int64_t)M * n_head;
    if (n_items <= 0 || dv <= 0) return RECUR_OK;
    RCU_LAUNCH("xlstm_head_out_kernel",
               recur_cuda_launch(c, xlstm_head_out_kernel, dim3((unsigned)recur_cuda_cdiv(n_items, 8)), dim3(256), 0, h,
                                 o_pre, w, n_items, (int)n_head, (int)dv, eps, out));
    return RECUR_OK;
}

/* mlstm, then xlstm_head_out over its h. A decode batch (as many rows as sequences: no
 * sequence is longer than one row, so recur_cuda_mlstm_path would take the step kernel
 * and then mlstm_nm_kernel) of at most mlstm_head_out_max_m rows, with heads of at most
 * 32 XH_REGS, takes the head norm inside mlstm_nm_kernel; anything else runs the two ops.
 * Larger batches lose by it (RECUR_CUDA_MLSTM_HEAD_OUT_MAX_M): the head norm's own launch
 * runs 8 (row, head) items a block on 8 warps, the fold one a block on one warp. */
recur_status_t recur_cuda_mlstm_head_out(recur_backend_t *b, const recur_mlstm_args_t *a, const float *o_pre,
                                         const float *w, float eps, float *out) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (a->rows.n_rows > 0 && a->rows.n_rows == a->rows.n_seq && a->dv <= 32 * XH_REGS &&
        a->rows.n_rows <= c->mlstm_head_out_max_m) {
        RECUR_ASSERT(a->n_head > 0 && a->dqk > 0 && a->dv > 0);
        RECUR_ASSERT(a->state.mat_dtype == RECUR_DTYPE_F32 ||
                     (a->state.mat_dtype == RECUR_DTYPE_BF16 && ((size_t)a->n_head * a->dqk * a->dv) % 2 == 0));
        RECUR_ASSERT(a->state.slot_bytes % 4 == 0 && a->state.offset % 4 == 0);
        const ml_head_out ho = {o_pre, w, eps, out};
        return a->state.mat_dtype == RECUR_DTYPE_BF16 ? mlstm_serial<__nv_bfloat16>(c, a, INT32_MAX, &ho)
                                                      : mlstm_serial<float>(c, a, INT32_MAX, &ho);
    }
    RECUR_TRY(recur_cuda_mlstm(b, a));
    return recur_cuda_xlstm_head_out(b, a->h, o_pre, w, a->rows.n_rows, a->n_head, a->dv, eps, out);
}
