/* recur_cuda_mlstm.cu: the xLSTM ops of the CUDA backend: the mLSTM cell (chunkwise form
 * of models/XLSTM.md §5, exactly the CPU reference's arithmetic per chunk) and the
 * per-head output norm.
 *
 * mlstm runs as two kernels on the stream:
 * 1. mlstm_chunk_kernel, grid (DV tiles of ML_TV columns, heads, sequences), 256 threads.
 *    A block keeps its C tile [DQK][ML_TV] and the head's n [DQK] in shared memory for the
 *    whole sequence (C is read from and written to the state once per call, so a decode
 *    step moves each state byte twice), and walks the sequence chunk by chunk:
 *      gates and cumulative log forget gates (one thread scans, the chunk is <= 128 long),
 *      per-token stabilisers m_t, the intra-chunk scores P = exp(D - m_t) q.k/sqrt(d)
 *      (L x L, recomputed by every DV tile of the head), the inter-chunk q^T C_prev and
 *      q.n_prev, the outputs h for the tile, then C and n updated to the chunk's end.
 *    q, k are staged in slices of ML_KS columns of DQK; v for the tile once per chunk.
 *    n and m are needed by every tile but belong to the head: the blocks only read them
 *    from the state (n evolves in each block's shared memory, computed redundantly).
 * 2. mlstm_nm_kernel, grid (heads, sequences): replays the same gate and n arithmetic and
 *    writes n and m back. Running it after kernel 1 is what makes the update race-free:
 *    no block of kernel 1 can see a new n or m.
 * fp32 throughout; no tensor cores yet (a later version can use them for the three
 * products per chunk). The effective chunk is min(chunk, 128), lowered further if the
 * shared memory would not fit (any chunk gives the same function up to rounding). */
#include "recur_cuda_internal.h"

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

/* Floats of dynamic shared memory kernel 1 needs for chunk L and head dim DK. */
static size_t ml_smem_floats(int L, int DK) {
    return (size_t)DK * ML_TV + DK + (size_t)L * L + (size_t)L * ML_TV + 2 * (size_t)L * (ML_KS + 1) + 7 * (size_t)L + 4;
}

/* TPI: rows of the output tile per thread (thread = column jx, rows rg + 4*i), so the
 * chunk is at most 4 * TPI tokens. Instantiated for 1, 4, 16, 32 so a decode step does
 * not carry 32 idle accumulators. */
template <int TPI>
static __global__ void __launch_bounds__(ML_THREADS)
mlstm_chunk_kernel(recur_mlstm_args_t p, int L) {
    extern __shared__ __align__(16) float sm[];
    const int NH = p.n_head, DK = p.dqk, DV = p.dv;
    const int tile = blockIdx.x, h = blockIdx.y, sq = blockIdx.z, tid = threadIdx.x;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r0 >= r1) return;
    const int j0 = tile * ML_TV, tw = DV - j0 < ML_TV ? DV - j0 : ML_TV;
    float *st = p.state.pool + (size_t)p.rows.slot[sq] * p.state.slot_stride + p.state.offset;
    float *Cg = st + (size_t)h * DK * DV + j0;                   /* row a at Cg + a * DV */
    const float *ng = st + (size_t)NH * DK * DV + (size_t)h * DK;
    const float *mg = st + (size_t)NH * ((size_t)DK * DV + DK) + h;
    const size_t qk_stride = (size_t)NH * DK, v_stride = (size_t)NH * DV;
    const float scale = 1.0f / sqrtf((float)DK);
    constexpr int QS = ML_KS + 1; /* padded row of the q/k slices: column reads by row hit distinct banks */

    float *Cs = sm;                          /* [DK][ML_TV] */
    float *ns = Cs + (size_t)DK * ML_TV;     /* [DK] */
    float *P = ns + DK;                      /* [L][L] */
    float *Vs = P + (size_t)L * L;           /* [L][ML_TV] */
    float *Qs = Vs + (size_t)L * ML_TV;      /* [L][QS] */
    float *Ks = Qs + (size_t)L * QS;         /* [L][QS] */
    float *ig = Ks + (size_t)L * QS, *bcum = ig + L, *mts = bcum + L, *wprev = mts + L, *wt = wprev + L;
    float *divv = wt + L, *qn = divv + L, *misc = qn + L;

    /* ---- the state before the call */
    const bool vec = tw == ML_TV && DV % 4 == 0 && ((uintptr_t)Cg & 15u) == 0;
    if (vec) {
        for (int e = tid; e < DK * (ML_TV / 4); e += ML_THREADS) {
            const int a = e / (ML_TV / 4), j = (e % (ML_TV / 4)) * 4;
            *(float4 *)(Cs + (size_t)a * ML_TV + j) = *(const float4 *)(Cg + (size_t)a * DV + j);
        }
    } else {
        for (int e = tid; e < DK * ML_TV; e += ML_THREADS) {
            const int a = e / ML_TV, j = e % ML_TV;
            Cs[e] = j < tw ? Cg[(size_t)a * DV + j] : 0.f;
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
        for (int a0 = 0; a0 < DK; a0 += ML_KS) {
            const int ka = DK - a0 < ML_KS ? DK - a0 : ML_KS;
            for (int e = tid; e < nt * ML_KS; e += ML_THREADS) {
                const int t = e / ML_KS, a = e % ML_KS;
                const size_t g = (size_t)(t0 + t) * qk_stride + (size_t)h * DK + a0 + a;
                Qs[t * QS + a] = a < ka ? p.q[g] : 0.f;
                Ks[t * QS + a] = a < ka ? p.k[g] : 0.f;
            }
            __syncthreads();
            for (int e = tid; e < nt * nt; e += ML_THREADS) {
                const int t = e / nt, s = e % nt;
                if (s > t) continue;
                float acc = 0.f;
#pragma unroll 8
                for (int a = 0; a < ML_KS; a++) acc += Qs[t * QS + a] * Ks[s * QS + a];
                P[t * L + s] += acc;
            }
            for (int t = tid; t < nt; t += ML_THREADS) {
                float acc = 0.f;
                for (int a = 0; a < ka; a++) acc += Qs[t * QS + a] * ns[a0 + a];
                qn[t] += acc;
            }
            for (int a = 0; a < ka; a++) {
                const float cv = Cs[(size_t)(a0 + a) * ML_TV + jx];
#pragma unroll
                for (int i = 0; i < TPI; i++) {
                    const int t = rg + 4 * i;
                    if (t < nt) hacc[i] += Qs[t * QS + a] * cv;
                }
            }
            __syncthreads();
        }
        /* ---- scores with their decay, then the denominators */
        for (int e = tid; e < nt * nt; e += ML_THREADS) {
            const int t = e / nt, s = e % nt;
            if (s <= t) P[t * L + s] = expf(bcum[t] - bcum[s] + ig[s] - mts[t]) * P[t * L + s] * scale;
        }
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
            for (int e = tid; e < nt * ML_KS; e += ML_THREADS) {
                const int t = e / ML_KS, a = e % ML_KS;
                Ks[t * QS + a] = a < ka ? wt[t] * p.k[(size_t)(t0 + t) * qk_stride + (size_t)h * DK + a0 + a] : 0.f;
            }
            __syncthreads();
#pragma unroll
            for (int ii = 0; ii < ML_KS / 4; ii++) {
                const int a = rg + 4 * ii;
                if (a < ka) {
                    float *cp = Cs + (size_t)(a0 + a) * ML_TV + jx;
                    float acc = decay * *cp;
                    for (int t = 0; t < nt; t++) acc += Ks[t * QS + a] * Vs[t * ML_TV + jx];
                    *cp = acc;
                }
            }
            if (tid < ka) {
                float acc = decay * ns[a0 + tid];
                for (int t = 0; t < nt; t++) acc += Ks[t * QS + tid];
                ns[a0 + tid] = acc;
            }
            __syncthreads();
        }
        m_prev = m_new;
    }

    /* ---- the C tile back to the state (n and m: mlstm_nm_kernel) */
    if (vec) {
        for (int e = tid; e < DK * (ML_TV / 4); e += ML_THREADS) {
            const int a = e / (ML_TV / 4), j = (e % (ML_TV / 4)) * 4;
            *(float4 *)(Cg + (size_t)a * DV + j) = *(const float4 *)(Cs + (size_t)a * ML_TV + j);
        }
    } else {
        for (int e = tid; e < DK * ML_TV; e += ML_THREADS) {
            const int a = e / ML_TV, j = e % ML_TV;
            if (j < tw) Cg[(size_t)a * DV + j] = Cs[e];
        }
    }
}

/* grid (heads, sequences): n and m of each head through the sequence, the same chunks and
 * the same arithmetic as mlstm_chunk_kernel; runs after it on the stream. */
static __global__ void __launch_bounds__(ML_THREADS)
mlstm_nm_kernel(recur_mlstm_args_t p, int L) {
    __shared__ float ig[ML_LMAX], bcum[ML_LMAX], wt[ML_LMAX], misc[4];
    const int NH = p.n_head, DK = p.dqk, h = blockIdx.x, sq = blockIdx.y;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r0 >= r1) return;
    float *st = p.state.pool + (size_t)p.rows.slot[sq] * p.state.slot_stride + p.state.offset;
    float *ng = st + (size_t)NH * p.dv * DK + (size_t)h * DK;
    float *mg = st + (size_t)NH * ((size_t)DK * p.dv + DK) + h;
    const size_t qk_stride = (size_t)NH * DK;
    float m_prev = *mg;
    for (int32_t t0 = r0; t0 < r1; t0 += L) {
        const int nt = r1 - t0 < L ? r1 - t0 : L;
        ml_gates(p, t0, nt, h, m_prev, ig, bcum, wt, misc);
        const float decay = misc[1];
        /* each a is owned by one thread for the whole sequence: no races on n */
        for (int a = threadIdx.x; a < DK; a += ML_THREADS) {
            float acc = decay * ng[a];
            for (int t = 0; t < nt; t++) acc += wt[t] * p.k[(size_t)(t0 + t) * qk_stride + (size_t)h * DK + a];
            ng[a] = acc;
        }
        m_prev = misc[0];
        __syncthreads(); /* before the next chunk's gates overwrite wt and misc */
    }
    if (threadIdx.x == 0) *mg = m_prev;
}

recur_status_t recur_cuda_mlstm_init(recur_cuda_ctx_t *c) {
    /* Allow every instance the device's whole opt-in shared memory once, at init, rather
     * than setting the attribute on each call. */
    RCU_CHECK(cudaFuncSetAttribute(mlstm_chunk_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->smem_optin));
    RCU_CHECK(cudaFuncSetAttribute(mlstm_chunk_kernel<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->smem_optin));
    RCU_CHECK(cudaFuncSetAttribute(mlstm_chunk_kernel<16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->smem_optin));
    RCU_CHECK(cudaFuncSetAttribute(mlstm_chunk_kernel<32>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->smem_optin));
    return RECUR_OK;
}

recur_status_t recur_cuda_mlstm(recur_backend_t *b, const recur_mlstm_args_t *a) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(a->n_head > 0 && a->dqk > 0 && a->dv > 0);
    if (a->rows.n_rows <= 0 || a->rows.n_seq <= 0) return RECUR_OK;
    int L = a->chunk < 1 ? 1 : a->chunk > ML_LMAX ? ML_LMAX : a->chunk;
    while (L > 1 && ml_smem_floats(L, a->dqk) * sizeof(float) > c->smem_optin) L = (L + 1) / 2;
    const size_t smem = ml_smem_floats(L, a->dqk) * sizeof(float);
    if (smem > c->smem_optin) {
        recur_log_err("cuda mlstm: dqk %d needs %zu bytes of shared memory per block, the device allows %zu", a->dqk,
                      smem, c->smem_optin);
        return RECUR_E_UNSUPPORTED;
    }
    const dim3 grid((unsigned)recur_cuda_cdiv(a->dv, ML_TV), (unsigned)a->n_head, (unsigned)a->rows.n_seq);
    if (L <= 4) mlstm_chunk_kernel<1><<<grid, ML_THREADS, smem, c->stream>>>(*a, L);
    else if (L <= 16) mlstm_chunk_kernel<4><<<grid, ML_THREADS, smem, c->stream>>>(*a, L);
    else if (L <= 64) mlstm_chunk_kernel<16><<<grid, ML_THREADS, smem, c->stream>>>(*a, L);
    else mlstm_chunk_kernel<32><<<grid, ML_THREADS, smem, c->stream>>>(*a, L);
    RCU_LAUNCHED("mlstm_chunk_kernel");
    mlstm_nm_kernel<<<dim3((unsigned)a->n_head, (unsigned)a->rows.n_seq), ML_THREADS, 0, c->stream>>>(*a, L);
    RCU_LAUNCHED("mlstm_nm_kernel");
    return RECUR_OK;
}

/* One warp per (row, head): LayerNorm without bias over DV (two passes, fp32), times w
 * and sigmoid(o). out may alias h: each lane writes only elements it alone reads, after
 * the warp-wide reductions. */
static __global__ void __launch_bounds__(256)
xlstm_head_out_kernel(const float *h, const float *__restrict__ o_pre, const float *__restrict__ w, int64_t n_items,
                      int NH, int DV, float eps, float *out) {
    const int64_t item = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (item >= n_items) return;
    const int lane = threadIdx.x & 31, hh = (int)(item % NH);
    const size_t o = (size_t)item * DV; /* rows are NH*DV wide, heads consecutive */
    const float *x = h + o;
    float s = 0.f;
    for (int j = lane; j < DV; j += 32) s += x[j];
    const float mean = recur_warp_sum(s) / (float)DV;
    float v = 0.f;
    for (int j = lane; j < DV; j += 32) { float d = x[j] - mean; v += d * d; }
    const float inv = 1.0f / sqrtf(recur_warp_sum(v) / (float)DV + eps);
    for (int j = lane; j < DV; j += 32)
        out[o + j] = (x[j] - mean) * inv * w[(size_t)hh * DV + j] * recur_sigmoidf(o_pre[o + j]);
}

recur_status_t recur_cuda_xlstm_head_out(recur_backend_t *b, const float *h, const float *o_pre, const float *w,
                                         int32_t M, int32_t n_head, int32_t dv, float eps, float *out) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const int64_t n_items = (int64_t)M * n_head;
    if (n_items <= 0 || dv <= 0) return RECUR_OK;
    xlstm_head_out_kernel<<<(unsigned)recur_cuda_cdiv(n_items, 8), 256, 0, c->stream>>>(h, o_pre, w, n_items, n_head,
                                                                                       dv, eps, out);
    RCU_LAUNCHED("xlstm_head_out_kernel");
    return RECUR_OK;
}
