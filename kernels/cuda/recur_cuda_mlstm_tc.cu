/* recur_cuda_mlstm_tc.cu: the mLSTM cell over long sequences (prefill), chunkwise
 * (models/XLSTM.md §5, the arithmetic of the CPU reference's mlstm_chunk) with the
 * per-chunk products on tensor cores (3xTF32, see recur_cuda_prefill.h) and the work
 * that does not depend on the running state spread over all chunks at once, the TFLA /
 * mlstm_kernels split of XLSTM.md §9:
 *
 *   1. mt_gates_kernel   grid (chunks, heads, sequences): capped gates, the inclusive
 *                        cumsum b_t of logsigmoid(f) in the chunk, the chunk's total g and
 *                        max_t (g - b_t + i_t);
 *   2. mt_m_kernel       grid (heads, sequences), one warp: the scalar stabiliser
 *                        m_k = max(g_k + m_{k-1}, max_t a_t) chunk after chunk (the only
 *                        serial part of the gates), the final m into the state, and a copy
 *                        of the incoming n (kernel 4 rewrites n, and its other blocks must
 *                        still see the old one);
 *   3. mt_scores_kernel  grid (chunks, heads, sequences): per token m_t, the weight of the
 *                        state before the chunk and of the token in the state after it;
 *                        the intra-chunk scores P = exp(b_t - b_s + i_s - m_t) q.k/sqrt(d)
 *                        (L x L, causal; fp32 CUDA cores) and their row sums;
 *   4. mt_state_kernel   grid (DV tiles of 32, heads, sequences), 8 warps: the state tile
 *                        C^T [32 x DQK] lives in registers (fp32 mma accumulators) for the
 *                        whole sequence; per chunk, on tensor cores:
 *                          H_inter = C^T Q^T (q^T C_prev),  H_intra = V^T P^T,
 *                          C^T = decay C^T + V^T (wt k)     (the update k^T v),
 *                        and on CUDA cores q.n_prev and n's update (n is the DV-less twin
 *                        of C, kept redundantly by every tile of a head, as the CPU does).
 *                        q, k, P and the v tile of the next chunk stream in with cp.async
 *                        while the current one is computed.
 * Kernels 1-3 need a scratch of about (L + 10) floats per (token, head): the backend's
 * grow-only mt_buf (recur_cuda_internal.h), so a prefill no longer allocates once the
 * longest one has been seen. Chunk length 64 (the configured chunk only
 * changes rounding, recur_backend.h). A bf16 C (kernel 4 is a template on its element
 * type) is widened into the accumulators at the start and rounded once at the end of the
 * call; n and m are f32. */
#include <math.h>

#include "recur_cuda_prefill.h"

#define MT_L 64        /* tokens per chunk */
#define MT_TV 32       /* DV columns per block of kernel 4 (2 row groups of 16) */
#define MT_THREADS 256 /* kernel 4: warp w = row group (w & 1) x quarter of DQK (w >> 1) */
#define MT_VS 40       /* row stride (floats) of the staged v tile: 32 + 8, conflict-free fragment reads */
#define MT_PS 68       /* row stride of the staged scores: 64 + 4, likewise */

/* log(sigmoid(x)) without overflow, as the CPU reference */
static __device__ __forceinline__ float mt_logsigmoid(float x) {
    return x >= 0.f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}

/* Scratch layout, all indexed [head][row] with row the batch row (token) index: per-chunk
 * values live at the chunk's first row. */
struct mt_scratch {
    float  *P;   /* [NH][M][MT_L]: scores of row t against the chunk's tokens s     */
    float4 *tok; /* [NH][M]: m_t, w_prev (weight of the pre-chunk state), wt (weight in
                    the post-chunk state), den_intra (row sum of P)                    */
    float2 *bi;  /* [NH][M]: b_t (cumsum of logsigmoid f in the chunk), capped i_t     */
    float4 *cs;  /* [NH][M] at chunk starts: g, max_t a_t, m before, m after the chunk */
    float  *n0;  /* [n_seq][NH][DQK]: n at the start of the call                       */
};

/* ---- 1. gates per chunk; 64 threads = one per token */
static __global__ void __launch_bounds__(MT_L)
mt_gates_kernel(recur_mlstm_args_t p, int32_t min_len, mt_scratch s) {
    __shared__ float s_w0, s_g, s_red[2];
    const int c = blockIdx.x, h = blockIdx.y, sq = blockIdx.z, t = threadIdx.x, lane = t & 31, w = t >> 5;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r1 - r0 < min_len) return;
    const int32_t t0 = r0 + c * MT_L;
    if (t0 >= r1) return;
    const int nt = r1 - t0 < MT_L ? r1 - t0 : MT_L, NH = p.n_head, M = p.rows.n_rows;
    const float cap = p.gate_cap;
    float ls = 0.f, ig = 0.f;
    if (t < nt) {
        const size_t r = (size_t)(t0 + t) * NH + h;
        const float fi = cap * tanhf((p.f_pre[r] + p.f_bias[h]) / cap);
        ig = cap * tanhf((p.i_pre[r] + p.i_bias[h]) / cap);
        ls = mt_logsigmoid(fi);
    }
    /* inclusive scan over the chunk (two warps) */
    float b = ls;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const float y = __shfl_up_sync(0xffffffffu, b, o);
        if (lane >= o) b += y;
    }
    if (t == 31) s_w0 = b;
    __syncthreads();
    if (w == 1) b += s_w0;
    if (t == nt - 1) s_g = b;
    __syncthreads();
    const float g = s_g;
    float am = t < nt ? g - b + ig : -INFINITY;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, o));
    if (lane == 0) s_red[w] = am;
    __syncthreads();
    if (t < nt) s.bi[(size_t)h * M + t0 + t] = make_float2(b, ig);
    if (t == 0) s.cs[(size_t)h * M + t0] = make_float4(g, fmaxf(s_red[0], s_red[1]), 0.f, 0.f);
}

/* ---- 2. the stabiliser across chunks; 128 threads (warp 0 scans, all copy n) */
static __global__ void __launch_bounds__(128)
mt_m_kernel(recur_mlstm_args_t p, int32_t min_len, mt_scratch s) {
    const int h = blockIdx.x, sq = blockIdx.y, tid = threadIdx.x, lane = tid & 31;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r1 - r0 < min_len) return;
    const int NH = p.n_head, DK = p.dqk, M = p.rows.n_rows;
    float *nm = recur_ml_state_n(p, recur_ml_state(p, sq)); /* n [NH][DK], then m [NH] */
    const float *ng = nm + (size_t)h * DK;
    float *mg = nm + (size_t)NH * DK + h;
    for (int a = tid; a < DK; a += 128) s.n0[((size_t)sq * NH + h) * DK + a] = ng[a];
    if (tid >= 32) return;
    const int nck = (r1 - r0 + MT_L - 1) / MT_L;
    float m = *mg;
    for (int base = 0; base < nck; base += 32) {
        const int c = base + lane;
        float4 v = c < nck ? s.cs[(size_t)h * M + r0 + (size_t)c * MT_L] : make_float4(0.f, 0.f, 0.f, 0.f);
        const int n = nck - base < 32 ? nck - base : 32;
        for (int i = 0; i < n; i++) {
            const float g = __shfl_sync(0xffffffffu, v.x, i), am = __shfl_sync(0xffffffffu, v.y, i);
            const float mp = m;
            m = g + m; /* m_new = max(g + m_prev, max_t a_t), as the CPU reference */
            if (am > m) m = am;
            if (lane == i) { v.z = mp; v.w = m; }
        }
        if (c < nck) s.cs[(size_t)h * M + r0 + (size_t)c * MT_L] = v;
    }
    if (lane == 0) *mg = m; /* nothing after this kernel reads m from the state */
}

/* ---- 3. per-token weights and the intra-chunk scores; 256 threads, thread (ty, tx) owns
 * rows 4ty..4ty+3 x columns 4tx..4tx+3 of the 64 x 64 score block */
#define MT_KS 32 /* DQK columns staged per round */
static __global__ void __launch_bounds__(256)
mt_scores_kernel(recur_mlstm_args_t p, int32_t min_len, mt_scratch s) {
    __shared__ __align__(16) float Qt[MT_KS][MT_L + 4], Kt[MT_KS][MT_L + 4]; /* transposed slices */
    __shared__ float bs[MT_L], igs[MT_L], mts[MT_L], wps[MT_L], wts[MT_L];
    const int c = blockIdx.x, h = blockIdx.y, sq = blockIdx.z, tid = threadIdx.x;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r1 - r0 < min_len) return;
    const int32_t t0 = r0 + c * MT_L;
    if (t0 >= r1) return;
    const int nt = r1 - t0 < MT_L ? r1 - t0 : MT_L, NH = p.n_head, DK = p.dqk, M = p.rows.n_rows;
    const size_t qk_stride = (size_t)NH * DK, hm = (size_t)h * M;
    const float scale = 1.0f / sqrtf((float)DK);
    const float4 cs = s.cs[hm + t0]; /* g, amax, m before, m after */
    if (tid < MT_L) {
        const float2 v = tid < nt ? s.bi[hm + t0 + tid] : make_float2(0.f, 0.f);
        bs[tid] = v.x;
        igs[tid] = v.y;
    }
    __syncthreads();
    if (tid < nt) {
        /* the CPU reference's per-token stabiliser, in its order */
        const int t = tid;
        float mt = bs[t] + cs.z;
        for (int u = 0; u <= t; u++) {
            const float d = bs[t] - bs[u] + igs[u];
            if (d > mt) mt = d;
        }
        mts[t] = mt;
        wps[t] = expf(bs[t] + cs.z - mt);
        wts[t] = expf(cs.x - bs[t] + igs[t] - cs.w);
    }
    const int ty = tid >> 4, tx = tid & 15;
    const bool live = 4 * tx <= 4 * ty + 3; /* some (t, s) of the tile has s <= t */
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
    /* slices of q and k go through registers, the next one loading while this one is
     * multiplied: thread tid holds elements tid + 256 i (token e / MT_KS, column e % MT_KS) */
    constexpr int PER = MT_L * MT_KS / 256;
    float qr[PER], kr[PER];
    auto gload = [&](int a0) {
#pragma unroll
        for (int i = 0; i < PER; i++) {
            const int e = tid + 256 * i, t = e / MT_KS, a = e % MT_KS;
            const bool in = t < nt && a0 + a < DK;
            const size_t gi = (size_t)(t0 + (in ? t : 0)) * qk_stride + (size_t)h * DK + (in ? a0 + a : 0);
            qr[i] = in ? p.q[gi] : 0.f;
            kr[i] = in ? p.k[gi] : 0.f;
        }
    };
    gload(0);
    for (int a0 = 0; a0 < DK; a0 += MT_KS) {
#pragma unroll
        for (int i = 0; i < PER; i++) {
            const int e = tid + 256 * i;
            Qt[e % MT_KS][e / MT_KS] = qr[i];
            Kt[e % MT_KS][e / MT_KS] = kr[i];
        }
        __syncthreads();
        if (a0 + MT_KS < DK) gload(a0 + MT_KS);
        if (live) {
#pragma unroll 8
            for (int a = 0; a < MT_KS; a++) {
                const float4 qa = *(const float4 *)&Qt[a][4 * ty], ka = *(const float4 *)&Kt[a][4 * tx];
                const float qv[4] = {qa.x, qa.y, qa.z, qa.w}, kv[4] = {ka.x, ka.y, ka.z, ka.w};
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] += qv[i] * kv[j];
            }
        }
        __syncthreads();
    }
    /* scores with their decay (zero outside s <= t < nt), row sums across the 16 tx lanes */
    float rs[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = 4 * ty + i;
        float v[4];
        rs[i] = 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int u = 4 * tx + j;
            v[j] = u <= t && t < nt ? expf(bs[t] - bs[u] + igs[u] - mts[t]) * acc[i][j] * scale : 0.f;
            rs[i] += v[j];
        }
        if (t < nt) *(float4 *)&s.P[(hm + t0 + t) * MT_L + 4 * tx] = make_float4(v[0], v[1], v[2], v[3]);
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) rs[i] += __shfl_xor_sync(0xffffffffu, rs[i], o);
    }
    if (tx == 0)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int t = 4 * ty + i;
            if (t < nt) s.tok[hm + t0 + t] = make_float4(mts[t], wps[t], wts[t], rs[i]);
        }
}

/* ---- 4. the state tile through the chunks. 8 warps: warp w owns tile rows (DV columns)
 * 16 (w & 1) .. +15 and a quarter of DQK, aq = w >> 1: C^T[16 x DQK/4] in registers. */
template <int DK>
struct mt_smem {
    static constexpr int QS = DK + 8; /* row stride of staged q, k: conflict-free fragment reads */
    static constexpr int Q = 0, K = Q + MT_L * QS, P = K + MT_L * QS, V = P + MT_L * MT_PS;
    static constexpr int TK = V + 2 * MT_L * MT_VS; /* 2 x [MT_L] float4 */
    static constexpr int NS = TK + 2 * MT_L * 4, QN = NS + DK, DIV = QN + 4 * MT_L, WP = DIV + MT_L;
    static constexpr int XB = WP + MT_L;            /* 8 warps x 8 token tiles x 4 x 32 partial sums */
    static constexpr int TOTAL = XB + 8 * 8 * 4 * 32;
};

template <int DK, typename T>
static __global__ void __launch_bounds__(MT_THREADS, 1)
mt_state_kernel(recur_mlstm_args_t p, int32_t min_len, mt_scratch s) {
    using SM = mt_smem<DK>;
    constexpr int QS = SM::QS, DQ = DK / 4, NQ = DQ / 8; /* this warp's DQK quarter: NQ tiles of 8 */
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm + SM::Q, *Ks = sm + SM::K, *Ps = sm + SM::P, *ns = sm + SM::NS, *qnp = sm + SM::QN;
    float *divs = sm + SM::DIV, *wps = sm + SM::WP, *xb = sm + SM::XB;
    const int tile = blockIdx.x, h = blockIdx.y, sq = blockIdx.z, tid = threadIdx.x;
    const int32_t r0 = p.rows.seq_off[sq], r1 = p.rows.seq_off[sq + 1];
    if (r1 - r0 < min_len) return;
    const int NH = p.n_head, DV = p.dv, M = p.rows.n_rows;
    const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
    const int rg = warp & 1, aq = warp >> 1, abase = aq * DQ;
    const int j0 = tile * MT_TV, jr = 16 * rg + g; /* this lane's first tile row (DV column) */
    const int tb = 16 * aq;                        /* the tokens whose outputs this warp finishes */
    const size_t qk_stride = (size_t)NH * DK, v_stride = (size_t)NH * DV, hm = (size_t)h * M;
    const float scale = 1.0f / sqrtf((float)DK), eps = p.eps;
    char *st = recur_ml_state(p, sq);
    T *Cg = (T *)st + (size_t)h * DK * DV;
    const int nck = (r1 - r0 + MT_L - 1) / MT_L;

    /* C^T tile in registers: cacc[q][r] = C[a][j], a = abase + 8q + 2qd + (r & 1),
     * j = j0 + jr + 8 (r >> 1) (the m16n8 accumulator layout, M = DV rows, N = DQK) */
    float cacc[NQ][4];
#pragma unroll
    for (int q = 0; q < NQ; q++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int a = abase + 8 * q + 2 * qd + (r & 1), j = j0 + jr + 8 * (r >> 1);
            cacc[q][r] = j < DV ? recur_st_load(Cg[(size_t)a * DV + j]) : 0.f;
        }
    for (int a = tid; a < DK; a += MT_THREADS) ns[a] = s.n0[((size_t)sq * NH + h) * DK + a];

    /* staging of chunk c: q, P, the v tile and the token weights (buffer b of v and tok);
     * then k. Rows past the sequence's end are zero-filled (their weights too). */
    auto stage_qpv = [&](int c, int b) {
        const int32_t t0 = r0 + c * MT_L;
        const int nt = r1 - t0 < MT_L ? r1 - t0 : MT_L;
        for (int e = tid; e < MT_L * (DK / 4); e += MT_THREADS) {
            const int t = e / (DK / 4), a4 = e % (DK / 4), tr = t < nt ? t : nt - 1;
            recur_cp_async16(Qs + t * QS + 4 * a4, p.q + (size_t)(t0 + tr) * qk_stride + (size_t)h * DK + 4 * a4,
                             t < nt ? 16 : 0);
        }
        for (int e = tid; e < MT_L * (MT_L / 4); e += MT_THREADS) {
            const int t = e / (MT_L / 4), s4 = e % (MT_L / 4), tr = t < nt ? t : nt - 1;
            recur_cp_async16(Ps + t * MT_PS + 4 * s4, s.P + (hm + t0 + tr) * MT_L + 4 * s4, t < nt ? 16 : 0);
        }
        float *Vb = sm + SM::V + b * MT_L * MT_VS;
        for (int e = tid; e < MT_L * (MT_TV / 4); e += MT_THREADS) {
            const int t = e / (MT_TV / 4), j4 = e % (MT_TV / 4), tr = t < nt ? t : nt - 1;
            const bool in = t < nt && j0 + 4 * j4 < DV; /* DV % 4 == 0: a group is all in or all out */
            recur_cp_async16(Vb + t * MT_VS + 4 * j4,
                             p.v + (size_t)(t0 + tr) * v_stride + (size_t)h * DV + (in ? j0 + 4 * j4 : 0), in ? 16 : 0);
        }
        float *Tb = sm + SM::TK + b * MT_L * 4;
        if (tid < MT_L) {
            const int t = tid, tr = t < nt ? t : nt - 1;
            recur_cp_async16(Tb + 4 * t, s.tok + hm + t0 + tr, t < nt ? 16 : 0);
        }
    };
    auto stage_k = [&](int c) {
        const int32_t t0 = r0 + c * MT_L;
        const int nt = r1 - t0 < MT_L ? r1 - t0 : MT_L;
        for (int e = tid; e < MT_L * (DK / 4); e += MT_THREADS) {
            const int t = e / (DK / 4), a4 = e % (DK / 4), tr = t < nt ? t : nt - 1;
            recur_cp_async16(Ks + t * QS + 4 * a4, p.k + (size_t)(t0 + tr) * qk_stride + (size_t)h * DK + 4 * a4,
                             t < nt ? 16 : 0);
        }
    };

    stage_qpv(0, 0);
    recur_cp_async_commit();
    for (int c = 0; c < nck; c++) {
        const int b = c & 1;
        const int32_t t0 = r0 + c * MT_L;
        const int nt = r1 - t0 < MT_L ? r1 - t0 : MT_L;
        const float *Vb = sm + SM::V + b * MT_L * MT_VS;
        const float4 *Tb = (const float4 *)(sm + SM::TK + b * MT_L * 4);
        stage_k(c);
        recur_cp_async_commit();
        recur_cp_async_wait<1>(); /* q, P, v, tok of chunk c */
        __syncthreads();

        /* ---- phase 1: outputs of the chunk */
        {   /* q . n_prev, four quarters of DQK per token, 16-byte reads; each token starts
             * at its own offset (4t) so the 8 lanes of a quarter-warp hit 8 bank groups */
            const int t = tid & (MT_L - 1), quarter = tid >> 6, base = quarter * DQ;
            float acc = 0.f;
#pragma unroll 4
            for (int i = 0; i < DQ; i += 4) {
                const int a = base + (i + 4 * t) % DQ;
                const float4 qv = *(const float4 *)&Qs[t * QS + a], nv = *(const float4 *)&ns[a];
                acc += qv.x * nv.x + qv.y * nv.y + qv.z * nv.z + qv.w * nv.w;
            }
            qnp[quarter * MT_L + t] = acc;
        }
        /* H_inter^T = C^T Q^T over this warp's DQK quarter, all 64 tokens (A from the
         * accumulators with the k permutation of recur_cuda_prefill.h), four token tiles
         * at a time; the partial sums go to xb, where the four warps of a row group add
         * them up for the tokens each finishes. */
        float *mine = xb + warp * (8 * 4 * 32);
#pragma unroll
        for (int pass = 0; pass < 2; pass++) {
            float hin[4][4];
#pragma unroll
            for (int n = 0; n < 4; n++)
#pragma unroll
                for (int r = 0; r < 4; r++) hin[n][r] = 0.f;
#pragma unroll
            for (int q = 0; q < NQ; q++) {
                const recur_fa A = recur_make_a(cacc[q][0], cacc[q][2], cacc[q][1], cacc[q][3]);
                const int a = abase + 8 * q + 2 * qd;
#pragma unroll
                for (int n = 0; n < 4; n++) {
                    const float2 qv = *(const float2 *)&Qs[(32 * pass + 8 * n + g) * QS + a];
                    recur_mma3(hin[n], A, recur_make_b(qv.x, qv.y));
                }
            }
#pragma unroll
            for (int n = 0; n < 4; n++)
#pragma unroll
                for (int r = 0; r < 4; r++) mine[((4 * pass + n) * 4 + r) * 32 + lane] = hin[n][r];
        }
        /* H_intra^T = V^T P^T for this warp's 16 tokens (P is causal: s <= t) */
        float hia[2][4];
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) hia[n][r] = 0.f;
#pragma unroll
        for (int ks = 0; ks < 8; ks++) {
            if (ks > 2 * aq + 1) break;
            const int sr = 8 * ks + qd;
            const recur_fa A = recur_make_a(Vb[sr * MT_VS + jr], Vb[sr * MT_VS + jr + 8], Vb[(sr + 4) * MT_VS + jr],
                                            Vb[(sr + 4) * MT_VS + jr + 8]);
#pragma unroll
            for (int n = 0; n < 2; n++) {
                if (ks > 2 * aq + n) continue;
                const int t = tb + 8 * n + g;
                recur_mma3(hia[n], A, recur_make_b(Ps[t * MT_PS + sr], Ps[t * MT_PS + sr + 4]));
            }
        }
        __syncthreads(); /* qnp and xb complete */
        if (tid < MT_L) {
            const float4 tk = Tb[tid]; /* m_t, w_prev, wt, den_intra */
            const float qn = (qnp[tid] + qnp[MT_L + tid]) + (qnp[2 * MT_L + tid] + qnp[3 * MT_L + tid]);
            const float den = tk.y * scale * qn + tk.w;
            divs[tid] = fmaxf(fabsf(den), expf(-tk.x)) + eps;
            wps[tid] = tk.y * scale;
        }
        float hsum[2][4];
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                float v = 0.f;
#pragma unroll
                for (int w4 = 0; w4 < 4; w4++) v += xb[(rg + 2 * w4) * (8 * 4 * 32) + ((2 * aq + n) * 4 + r) * 32 + lane];
                hsum[n][r] = v;
            }
        __syncthreads(); /* divs, wps */
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int t = tb + 8 * n + 2 * qd + (r & 1), j = j0 + jr + 8 * (r >> 1);
                if (t < nt && j < DV)
                    p.h[(size_t)(t0 + t) * v_stride + (size_t)h * DV + j] = (hsum[n][r] * wps[t] + hia[n][r]) / divs[t];
            }
        __syncthreads(); /* Qs, Ps, xb free */
        if (c + 1 < nck) stage_qpv(c + 1, b ^ 1);
        recur_cp_async_commit();
        recur_cp_async_wait<1>(); /* k of chunk c */
        __syncthreads();

        /* ---- phase 2: n and C to the end of the chunk */
        const float4 csv = s.cs[hm + t0];
        const float decay = expf(csv.x + csv.z - csv.w); /* exp(g + m_prev - m_new) */
        const float *Tf = (const float *)Tb; /* wt_t at Tf[4t + 2] */
        for (int a = tid; a < DK; a += MT_THREADS) {
            float acc = decay * ns[a];
#pragma unroll 8
            for (int t = 0; t < MT_L; t++) acc += Tf[4 * t + 2] * Ks[t * QS + a];
            ns[a] = acc;
        }
        /* C^T = decay C^T + V^T (wt k): the chunk's term into fresh accumulators, then one
         * fp32 FMA into the carried state. The tensor cores' accumulation truncates, so
         * adding the products straight into the carried C would bias it a little at every
         * step of every chunk; this way the carried state is rounded once per chunk, to
         * nearest. wt goes on the A side (4 values per k step instead of 2 per B fragment).
         * DQK tiles in two halves, to bound the live accumulators. */
        constexpr int QH = NQ > 1 ? NQ / 2 : 1;
#pragma unroll
        for (int q0 = 0; q0 < NQ; q0 += QH) {
            float dc[QH][4];
#pragma unroll
            for (int qq = 0; qq < QH; qq++)
#pragma unroll
                for (int r = 0; r < 4; r++) dc[qq][r] = 0.f;
#pragma unroll
            for (int ks = 0; ks < 8; ks++) {
                const int sr = 8 * ks + qd;
                const float w0 = Tf[4 * sr + 2], w1 = Tf[4 * (sr + 4) + 2];
                const recur_fa A = recur_make_a(w0 * Vb[sr * MT_VS + jr], w0 * Vb[sr * MT_VS + jr + 8],
                                                w1 * Vb[(sr + 4) * MT_VS + jr], w1 * Vb[(sr + 4) * MT_VS + jr + 8]);
#pragma unroll
                for (int qq = 0; qq < QH; qq++) {
                    const int a = abase + 8 * (q0 + qq) + g;
                    recur_mma3(dc[qq], A, recur_make_b(Ks[sr * QS + a], Ks[(sr + 4) * QS + a]));
                }
            }
#pragma unroll
            for (int qq = 0; qq < QH; qq++)
#pragma unroll
                for (int r = 0; r < 4; r++) cacc[q0 + qq][r] = fmaf(decay, cacc[q0 + qq][r], dc[qq][r]);
        }
        __syncthreads(); /* Ks, ns, Vb, Tb reads done before the next chunk's staging */
    }

    /* ---- the tile back to the state; n from one tile (all tiles hold the same n) */
#pragma unroll
    for (int q = 0; q < NQ; q++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int a = abase + 8 * q + 2 * qd + (r & 1), j = j0 + jr + 8 * (r >> 1);
            if (j < DV) Cg[(size_t)a * DV + j] = recur_st_store<T>(cacc[q][r]);
        }
    if (tile == 0) {
        float *ng = recur_ml_state_n(p, st) + (size_t)h * DK;
        for (int a = tid; a < DK; a += MT_THREADS) ng[a] = ns[a];
    }
}

template <int DK>
static size_t mt_state_smem() { return (size_t)mt_smem<DK>::TOTAL * sizeof(float); }

recur_status_t recur_cuda_mlstm_tc_init(recur_cuda_ctx_t *c) {
    /* Only instances that fit the device get the attribute; the launcher checks again. */
#define MT_SMEM_ATTR(D)                                                                                                \
    if (mt_state_smem<D>() <= c->smem_optin) {                                                                         \
        RCU_CHECK(cudaFuncSetAttribute(mt_state_kernel<D, float>, cudaFuncAttributeMaxDynamicSharedMemorySize,         \
                                       (int)mt_state_smem<D>()));                                                      \
        RCU_CHECK(cudaFuncSetAttribute(mt_state_kernel<D, __nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                                       (int)mt_state_smem<D>()));                                                      \
    }
    MT_SMEM_ATTR(256)
    MT_SMEM_ATTR(128)
    MT_SMEM_ATTR(64)
    MT_SMEM_ATTR(32)
#undef MT_SMEM_ATTR
    return RECUR_OK;
}

static bool mt_aligned16(const void *ptr) { return ((uintptr_t)ptr & 15u) == 0; }

recur_status_t recur_cuda_mlstm_tc(recur_cuda_ctx_t *c, const recur_mlstm_args_t *a, int32_t min_len, int *supported) {
    const int DK = a->dqk, DV = a->dv, NH = a->n_head, M = a->rows.n_rows, n_seq = a->rows.n_seq;
    size_t smem = 0;
    switch (DK) {
    case 256: smem = mt_state_smem<256>(); break;
    case 128: smem = mt_state_smem<128>(); break;
    case 64: smem = mt_state_smem<64>(); break;
    case 32: smem = mt_state_smem<32>(); break;
    default: smem = 0;
    }
    /* cp.async moves 16-byte groups: rows of q, k, v and h must start 16-byte aligned */
    *supported = smem != 0 && smem <= c->smem_optin && DV % 4 == 0 && mt_aligned16(a->q) && mt_aligned16(a->k) &&
                 mt_aligned16(a->v) && M > 0 && n_seq > 0;
    if (!*supported) return RECUR_OK;
    if (min_len < 1) min_len = 1;
    /* chunks per sequence: no sequence is longer than M - n_seq + 1 */
    const int nck = (int)recur_cuda_cdiv((int64_t)M - n_seq + 1, MT_L);
    const size_t nhm = (size_t)NH * M;
    const size_t bytes = nhm * MT_L * sizeof(float) + nhm * sizeof(float4) * 2 + nhm * sizeof(float2) +
                         (size_t)n_seq * NH * DK * sizeof(float) + 256;
    if (bytes > c->mt_bytes) {
        RECUR_ASSERT(!c->capturing); /* decode batches, the only ones recorded, never come here */
        if (c->mt_buf) RCU_CHECK(cudaFreeAsync(c->mt_buf, c->stream));
        c->mt_buf = NULL;
        c->mt_bytes = 0;
        RCU_CHECK(cudaMallocAsync(&c->mt_buf, bytes, c->stream));
        c->mt_bytes = bytes;
        recur_log_debug("cuda: mLSTM prefill scratch grown to %.1f MiB", (double)bytes / (1024.0 * 1024.0));
    }
    void *buf = c->mt_buf;
    mt_scratch s;
    char *p = (char *)buf;
    s.tok = (float4 *)p; p += nhm * sizeof(float4);
    s.cs = (float4 *)p; p += nhm * sizeof(float4);
    s.P = (float *)p; p += nhm * MT_L * sizeof(float);
    s.bi = (float2 *)p; p += nhm * sizeof(float2);
    s.n0 = (float *)p;
    const dim3 gc((unsigned)nck, (unsigned)NH, (unsigned)n_seq);
    recur_status_t st = RECUR_OK;
    mt_gates_kernel<<<gc, MT_L, 0, c->stream>>>(*a, min_len, s);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        mt_m_kernel<<<dim3((unsigned)NH, (unsigned)n_seq), 128, 0, c->stream>>>(*a, min_len, s);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        mt_scores_kernel<<<gc, 256, 0, c->stream>>>(*a, min_len, s);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        const dim3 gs((unsigned)recur_cuda_cdiv(DV, MT_TV), (unsigned)NH, (unsigned)n_seq);
        const bool bf = a->state.mat_dtype == RECUR_DTYPE_BF16;
#define MT_STATE(D)                                                                                  \
    if (bf) mt_state_kernel<D, __nv_bfloat16><<<gs, MT_THREADS, smem, c->stream>>>(*a, min_len, s); \
    else mt_state_kernel<D, float><<<gs, MT_THREADS, smem, c->stream>>>(*a, min_len, s)
        switch (DK) {
        case 256: MT_STATE(256); break;
        case 128: MT_STATE(128); break;
        case 64: MT_STATE(64); break;
        default: MT_STATE(32); break;
        }
#undef MT_STATE
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) st = recur_cuda_fail(c, "CUDA", "launch of the mlstm tensor-core kernels", cudaGetErrorString(e), __FILE__, __LINE__);
    return st;
}
