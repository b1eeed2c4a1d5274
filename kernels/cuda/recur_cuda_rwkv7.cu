/* recur_cuda_rwkv7.cu: the RWKV-7 ops of the CUDA backend (recur_backend.h):
 * - rwkv7_prep: one warp per (row, head): decay, in-context rate, L2-normalised key per
 *   head (warp reduction), k and v updates; all elementwise besides that one norm.
 * - rwkv7_wkv: sequences of RECUR_WKV_WY_MIN_LEN tokens or more (prefill) take the
 *   chunked WY form on tensor cores (recur_cuda_wkv_wy.cu); the others (decode) the
 *   serial recurrence of models/RWKV7.md §8.1 item 1 (BlinkDL's wkv7s):
 *   one block of N = head_size threads per (sequence, head), thread i holding state row
 *   S[i][0:N] in registers for the whole sequence; the per-token vectors r, w, k, kk, a
 *   are staged in shared memory (double-buffered: one barrier per token). The state is
 *   loaded and stored through shared memory so the global accesses are coalesced. A bf16
 *   state (the kernels are templates on the element type) is widened on load and rounded
 *   after every token, as the CPU reference does.
 * - rwkv7_out: one warp per (row, head): group norm, the r.k bonus, the gate.
 * All arithmetic is fp32 (the WY path: fp32 state, 3xTF32 products), in the CPU
 * reference's order where it matters. */
#include "recur_cuda_prefill.h"

/* exp(-0.5): the RWKV-7 decay is exp(-exp(-0.5) * sigmoid(z)), in (0.5453, 1). */
#define RECUR_RWKV7_DECAY_SCALE 0.6065306597126334f
#define ROWHEAD_WARPS 8 /* warps per block for the one-warp-per-(row, head) kernels */

/* The (row, head) item of this warp in the one-warp-per-(row, head) kernels: false past
 * the last item; else the lane, the head's offset within a row and its offset in [M][C]. */
static __device__ __forceinline__ bool rowhead_item(int64_t n_items, int C, int N, int *lane, int *hoff, size_t *o) {
    const int64_t item = (int64_t)blockIdx.x * ROWHEAD_WARPS + (threadIdx.x >> 5);
    if (item >= n_items) return false;
    const int H = C / N;
    *lane = threadIdx.x & 31;
    *hoff = (int)(item % H) * N;
    *o = (size_t)(item / H) * C + *hoff;
    return true;
}

/* The per-channel parameters prep_head reads, each at the head's first channel (v0 is
 * NULL where there is no value mix: layer 0). */
struct rwkv7_head_params {
    const float *w0, *a0, *v0, *k_k, *k_a;
};

/* rwkv7_prep for one (row, head) of size N, by one warp: the head's inputs at w_in..v_in
 * (element j at [j]; the LoRA results and k, v), its outputs at w_out..v_out (may be the
 * inputs: each lane reads an element before it writes it); v_first is read at v_first_in
 * (with a value mix) or written at v_first_out (without: layer 0), v_mix at the row's
 * head. The separate kernel and the fused step both run exactly this, with their
 * operands in global or shared memory, so they agree bit for bit. */
static __device__ __forceinline__ void prep_head(const rwkv7_head_params &q, int N, int lane, const float *w_in,
                                                 const float *a_in, const float *k_in, const float *v_in,
                                                 float *w_out, float *a_out, float *kk_out, float *k_out,
                                                 float *v_out, const float *v_first_in, float *v_first_out,
                                                 const float *v_mix) {
    /* kk = normalise(k * k_k) over the head: k is still the input here */
    float ss = 0.f;
    for (int j = lane; j < N; j += 32) { float t = k_in[j] * q.k_k[j]; ss += t * t; }
    ss = recur_warp_sum(ss);
    const float nrm = sqrtf(ss);
    const float inv = 1.0f / (nrm > 1e-12f ? nrm : 1e-12f);
    for (int j = lane; j < N; j += 32) {
        w_out[j] = expf(-RECUR_RWKV7_DECAY_SCALE * recur_sigmoidf(q.w0[j] + w_in[j]));
        const float a = recur_sigmoidf(q.a0[j] + a_in[j]);
        a_out[j] = a;
        const float k = k_in[j];
        kk_out[j] = k * q.k_k[j] * inv;
        k_out[j] = k * (1.0f + (a - 1.0f) * q.k_a[j]);
        const float v = v_in[j];
        if (!v_mix) { v_first_out[j] = v; v_out[j] = v; }
        else v_out[j] = v + (v_first_in[j] - v) * recur_sigmoidf(q.v0[j] + v_mix[j]);
    }
}

static __global__ void __launch_bounds__(ROWHEAD_WARPS * 32)
rwkv7_prep_kernel(recur_rwkv7_prep_args_t p, int64_t n_items) {
    int lane, hoff;
    size_t o;
    if (!rowhead_item(n_items, p.C, p.head_size, &lane, &hoff, &o)) return;
    const rwkv7_head_params q = {p.w0 + hoff, p.a0 + hoff, p.v0 ? p.v0 + hoff : NULL, p.k_k + hoff, p.k_a + hoff};
    prep_head(q, p.head_size, lane, p.w + o, p.a + o, p.k + o, p.v + o, p.w + o, p.a + o, p.kk + o, p.k + o, p.v + o,
              p.v_first + o, p.v_first + o, p.v_mix ? p.v_mix + o : NULL);
}

recur_status_t recur_cuda_rwkv7_prep(recur_backend_t *b, const recur_rwkv7_prep_args_t *a) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(a->head_size > 0 && a->C % a->head_size == 0);
    const int64_t n_items = (int64_t)a->M * (a->C / a->head_size);
    if (n_items <= 0) return RECUR_OK;
    rwkv7_prep_kernel<<<(unsigned)recur_cuda_cdiv(n_items, ROWHEAD_WARPS), ROWHEAD_WARPS * 32, 0, c->stream>>>(*a, n_items);
    RCU_LAUNCHED("rwkv7_prep_kernel");
    return RECUR_OK;
}

/* One token of state row i held in st (models/RWKV7.md §8.1 item 1): sa = -S_i . kk, then
 * S_i = S_i * w + sa * (kk*a) + v_i * k, returning y_i = S_i . r (the fp32 values; a bf16
 * state is rounded by the caller afterwards). rwkv7_wkv_kernel and rwkv7_step_kernel both
 * run this, so they agree bit for bit. */
template <int N>
static __device__ __forceinline__ float wkv_row_token(float (&st)[N], const float *rr, const float *ww,
                                                      const float *kv, const float *ba, const float *kn, float vi) {
    float sa = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) sa -= st[j] * kn[j];
    float yi = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
        st[j] = st[j] * ww[j] + sa * ba[j] + vi * kv[j];
        yi += st[j] * rr[j];
    }
    return yi;
}

/* A bf16 state is rounded after every token, as stored (y used the fp32 values). */
template <int N, typename T> static __device__ __forceinline__ void wkv_row_round(float (&st)[N]) {
    if constexpr (sizeof(T) != sizeof(float)) {
#pragma unroll
        for (int j = 0; j < N; j++) st[j] = recur_st_round<T>(st[j]);
    }
}

/* grid (H, n_seq), N threads. sh_vec: [2 buffers][5 vectors r, w, k, kk*a, kk][N].
 * T: the state's element type; pool, stride and offset in bytes. */
template <int N, typename T>
static __global__ void __launch_bounds__(N)
rwkv7_wkv_kernel(int32_t C, const int32_t *__restrict__ seq_off, const int32_t *__restrict__ slot,
                 const float *__restrict__ r, const float *__restrict__ w, const float *__restrict__ k,
                 const float *__restrict__ v, const float *__restrict__ kk, const float *__restrict__ a,
                 char *pool, size_t stride, size_t offset, float *__restrict__ y, int32_t skip_from) {
    __shared__ float sh_S[N][N + 1]; /* +1: the transposing accesses hit distinct banks */
    __shared__ __align__(16) float sh_vec[2][5][N];
    const int i = threadIdx.x, h = blockIdx.x, s = blockIdx.y;
    const int32_t t0 = seq_off[s], t1 = seq_off[s + 1];
    if (t0 >= t1 || t1 - t0 >= skip_from) return; /* long ones: the WY path */
    T *S = (T *)(pool + (size_t)slot[s] * stride + offset) + (size_t)h * N * N;
    /* coalesced load: pass q reads row q of S (consecutive threads, consecutive columns) */
    for (int q = 0; q < N; q++) sh_S[q][i] = recur_st_load(S[(size_t)q * N + i]);
    __syncthreads();
    float st[N];
#pragma unroll
    for (int j = 0; j < N; j++) st[j] = sh_S[i][j];

    const size_t hoff = (size_t)h * N + i;
    int buf = 0;
    for (int32_t t = t0; t < t1; t++, buf ^= 1) {
        const size_t e = (size_t)t * C + hoff;
        const float kkv = kk[e];
        sh_vec[buf][0][i] = r[e];
        sh_vec[buf][1][i] = w[e];
        sh_vec[buf][2][i] = k[e];
        sh_vec[buf][3][i] = kkv * a[e];
        sh_vec[buf][4][i] = kkv;
        const float vi = v[e];
        /* one barrier per token: the other buffer, written next token, was last read
         * before this barrier */
        __syncthreads();
        const float *sv = sh_vec[buf][0];
        y[e] = wkv_row_token<N>(st, sv, sv + N, sv + 2 * N, sv + 3 * N, sv + 4 * N, vi);
        wkv_row_round<N, T>(st);
    }
    /* store through shared memory again, coalesced */
    __syncthreads();
#pragma unroll
    for (int j = 0; j < N; j++) sh_S[i][j] = st[j];
    __syncthreads();
    for (int q = 0; q < N; q++) S[(size_t)q * N + i] = recur_st_store<T>(sh_S[q][i]);
}

/* The serial kernel for every sequence shorter than skip_from (INT32_MAX: all). */
static recur_status_t wkv_serial(recur_cuda_ctx_t *c, const recur_rwkv7_wkv_args_t *a, int32_t skip_from) {
    const int N = a->head_size;
    dim3 grid((unsigned)(a->C / N), (unsigned)a->rows.n_seq);
    const recur_state_ref_t s = a->state;
    const bool bf = s.mat_dtype == RECUR_DTYPE_BF16;
    RECUR_ASSERT(bf || s.mat_dtype == RECUR_DTYPE_F32);
    char *pool = (char *)s.pool;
#define WKV_LAUNCH(NN, TT)                                                                                             \
    rwkv7_wkv_kernel<NN, TT><<<grid, NN, 0, c->stream>>>(a->C, a->rows.seq_off, a->rows.slot, a->r, a->w, a->k, a->v, \
                                                         a->kk, a->a, pool, s.slot_bytes, s.offset, a->y, skip_from)
    switch (N) {
    case 64:
        if (bf) WKV_LAUNCH(64, __nv_bfloat16);
        else WKV_LAUNCH(64, float);
        break;
    case 32:
        if (bf) WKV_LAUNCH(32, __nv_bfloat16);
        else WKV_LAUNCH(32, float);
        break;
    default:
        /* Every RWKV-7 checkpoint uses 64; other sizes would need their own instance. */
        recur_log_err("cuda rwkv7_wkv: head size %d not supported (64 or 32)", N);
        return RECUR_E_UNSUPPORTED;
    }
#undef WKV_LAUNCH
    RCU_LAUNCHED("rwkv7_wkv_kernel");
    return RECUR_OK;
}

extern "C" recur_status_t recur_cuda_rwkv7_wkv_path(recur_backend_t *b, const recur_rwkv7_wkv_args_t *a,
                                                   recur_cuda_path_t path) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const int N = a->head_size;
    RECUR_ASSERT(N > 0 && a->C % N == 0);
    RECUR_ASSERT(a->state.slot_bytes % 4 == 0 && a->state.offset % 4 == 0); /* recur_state_ref_t */
    if (a->rows.n_rows <= 0 || a->rows.n_seq <= 0) return RECUR_OK;
    /* No sequence is longer than n_rows - n_seq + 1: a decode batch never launches the WY
     * kernel. Otherwise each kernel takes its own sequences and skips the others'. */
    const int32_t longest = a->rows.n_rows - a->rows.n_seq + 1;
    const int32_t min_len = path == RECUR_CUDA_PATH_CHUNKED ? 1 : RECUR_WKV_WY_MIN_LEN;
    int32_t skip_from = INT32_MAX;
    if (path != RECUR_CUDA_PATH_SERIAL && longest >= min_len) {
        int supported = 0;
        recur_status_t st = recur_cuda_wkv_wy(c, a, min_len, &supported);
        if (st != RECUR_OK) return st;
        if (supported) {
            if (a->rows.n_seq == 1 || min_len <= 1) return RECUR_OK; /* nothing is left over */
            skip_from = min_len;
        }
    }
    return wkv_serial(c, a, skip_from);
}

recur_status_t recur_cuda_rwkv7_wkv(recur_backend_t *b, const recur_rwkv7_wkv_args_t *a) {
    return recur_cuda_rwkv7_wkv_path(b, a, RECUR_CUDA_PATH_AUTO);
}

/* rwkv7_out for one (row, head) of size N, by one warp: y, r, k, v, g and out at the
 * row's head, r_k, ln_w and ln_b at the head's first channel (out may alias y: every lane
 * has finished reading y, the reductions being warp collectives, and each lane writes only
 * the elements it reads). Shared by the separate kernel and the fused step, as prep_head. */
static __device__ __forceinline__ void out_head(int N, float eps, const float *r_k, const float *ln_w,
                                                const float *ln_b, int lane, const float *y, const float *r,
                                                const float *k, const float *v, const float *g, float *out) {
    float s = 0.f, bonus = 0.f;
    for (int j = lane; j < N; j += 32) {
        s += y[j];
        bonus += r[j] * k[j] * r_k[j];
    }
    const float mean = recur_warp_sum(s) / (float)N;
    bonus = recur_warp_sum(bonus);
    float var = 0.f;
    for (int j = lane; j < N; j += 32) { float d = y[j] - mean; var += d * d; }
    var = recur_warp_sum(var) / (float)N;
    const float inv = 1.0f / sqrtf(var + eps);
    for (int j = lane; j < N; j += 32) out[j] = ((y[j] - mean) * inv * ln_w[j] + ln_b[j] + bonus * v[j]) * g[j];
}

static __global__ void __launch_bounds__(ROWHEAD_WARPS * 32)
rwkv7_out_kernel(recur_rwkv7_out_args_t p, int64_t n_items) {
    int lane, hoff;
    size_t o;
    if (!rowhead_item(n_items, p.C, p.head_size, &lane, &hoff, &o)) return;
    out_head(p.head_size, p.eps, p.r_k + hoff, p.ln_w + hoff, p.ln_b + hoff, lane, p.y + o, p.r + o, p.k + o, p.v + o,
             p.g + o, p.out + o);
}

recur_status_t recur_cuda_rwkv7_out(recur_backend_t *b, const recur_rwkv7_out_args_t *a) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(a->head_size > 0 && a->C % a->head_size == 0);
    const int64_t n_items = (int64_t)a->M * (a->C / a->head_size);
    if (n_items <= 0) return RECUR_OK;
    rwkv7_out_kernel<<<(unsigned)recur_cuda_cdiv(n_items, ROWHEAD_WARPS), ROWHEAD_WARPS * 32, 0, c->stream>>>(*a, n_items);
    RCU_LAUNCHED("rwkv7_out_kernel");
    return RECUR_OK;
}

/* The fused step for rows that are each a whole sequence (a decode batch): grid (H, n_seq),
 * N threads, one block per (sequence, head). Every thread loads its channel of the head's
 * parameters before the PDL wait (weights: no kernel writes them) and of the inputs right
 * after it, all into shared memory at once (one round trip to L2 instead of one per
 * dependent step of prep_head and out_head); warp 0 runs prep_head on them; every thread
 * then advances its row of S by the one token as rwkv7_wkv_kernel does (same operands,
 * same order); warp 0 runs out_head on the new y. Only o.out, v_first (layer 0) and the
 * state reach global memory. Launched with PDL, unlike the three kernels. */
template <int N, typename T>
static __global__ void __launch_bounds__(N)
rwkv7_step_kernel(recur_rwkv7_prep_args_t p, recur_rwkv7_out_args_t o, const float *__restrict__ r,
                  const int32_t *__restrict__ seq_off, const int32_t *__restrict__ slot, char *pool, size_t stride,
                  size_t offset) {
    __shared__ float sh_S[N][N + 1];
    __shared__ __align__(16) float sv[8][N]; /* r, w, a, k, kk, v, kk*a, y */
    __shared__ float spar[8][N];             /* w0, a0, v0, k_k, k_a, r_k, ln_w, ln_b */
    __shared__ float sinp[7][N];             /* the inputs w, a, k, v, v_first, v_mix, g */
    float *sr = sv[0], *sw = sv[1], *sa_ = sv[2], *sk = sv[3], *skk = sv[4], *sv_ = sv[5], *sba = sv[6], *sy = sv[7];
    const int i = threadIdx.x, h = blockIdx.x, s = blockIdx.y, hoff = h * N;
    {
        const float *pc[] = {p.w0, p.a0, p.v0, p.k_k, p.k_a, o.r_k, o.ln_w, o.ln_b};
#pragma unroll
        for (int q = 0; q < 8; q++)
            if (pc[q]) spar[q][i] = pc[q][hoff + i];
    }
    /* The batch's slot table and this head's state are read before the PDL wait: the
     * kernel ahead (the LoRA products, a GEMV) writes neither, the tables are copied in
     * before the step's first kernel, and the state was last written by this kernel one
     * token earlier, long complete (every kernel before the one ahead has completed when
     * this one starts: the one ahead was only let go once it had waited for them). So the
     * 16 KiB of state arrive while the kernel ahead still runs. */
    const int32_t t = seq_off[s];
    T *S = (T *)(pool + (size_t)slot[s] * stride + offset) + (size_t)h * N * N;
    for (int q = 0; q < N; q++) sh_S[q][i] = recur_st_load(S[(size_t)q * N + i]);
    const size_t e0 = (size_t)t * p.C + hoff;
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    sr[i] = r[e0 + i];
    sinp[0][i] = p.w[e0 + i];
    sinp[1][i] = p.a[e0 + i];
    sinp[2][i] = p.k[e0 + i];
    sinp[3][i] = p.v[e0 + i];
    if (p.v_mix) {
        sinp[4][i] = p.v_first[e0 + i];
        sinp[5][i] = p.v_mix[e0 + i];
    }
    sinp[6][i] = o.g[e0 + i];
    __syncthreads();
    if (i < 32) {
        const rwkv7_head_params q = {spar[0], spar[1], spar[2], spar[3], spar[4]};
        prep_head(q, N, i, sinp[0], sinp[1], sinp[2], sinp[3], sw, sa_, skk, sk, sv_, sinp[4], p.v_first + e0,
                  p.v_mix ? sinp[5] : NULL);
    }
    __syncthreads();
    sba[i] = skk[i] * sa_[i];
    float st[N];
#pragma unroll
    for (int j = 0; j < N; j++) st[j] = sh_S[i][j];
    __syncthreads();
    sy[i] = wkv_row_token<N>(st, sr, sw, sk, sba, skk, sv_[i]);
    wkv_row_round<N, T>(st);
#pragma unroll
    for (int j = 0; j < N; j++) sh_S[i][j] = st[j];
    __syncthreads();
    for (int q = 0; q < N; q++) S[(size_t)q * N + i] = recur_st_store<T>(sh_S[q][i]);
    if (i < 32) out_head(N, o.eps, spar[5], spar[6], spar[7], i, sy, sr, sk, sv_, sinp[6], o.out + e0);
}

recur_status_t recur_cuda_rwkv7_step(recur_backend_t *b, const recur_rwkv7_prep_args_t *p,
                                     const recur_rwkv7_wkv_args_t *w, const recur_rwkv7_out_args_t *o) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const int N = p->head_size;
    const recur_state_ref_t s = w->state;
    const bool bf = s.mat_dtype == RECUR_DTYPE_BF16;
    /* the fused kernel: every row its own sequence, and a head size it is built for */
    const bool fused = w->rows.n_seq == w->rows.n_rows && p->M == w->rows.n_rows && o->M == p->M &&
                       (N == 64 || N == 32) && w->head_size == N && o->head_size == N && p->C == w->C &&
                       o->C == p->C && p->C % N == 0 && (bf || s.mat_dtype == RECUR_DTYPE_F32);
    if (!fused) {
        RECUR_TRY(recur_cuda_rwkv7_prep(b, p));
        RECUR_TRY(recur_cuda_rwkv7_wkv(b, w));
        return recur_cuda_rwkv7_out(b, o);
    }
    if (p->M <= 0) return RECUR_OK;
    RECUR_ASSERT(s.slot_bytes % 4 == 0 && s.offset % 4 == 0);
    dim3 grid((unsigned)(p->C / N), (unsigned)w->rows.n_seq);
    char *pool = (char *)s.pool;
#define STEP_LAUNCH(NN, TT)                                                                                            \
    RCU_LAUNCH("rwkv7_step_kernel", recur_cuda_launch(c, rwkv7_step_kernel<NN, TT>, grid, dim3(NN), 0, *p, *o, w->r,  \
                                                      w->rows.seq_off, w->rows.slot, pool, s.slot_bytes, s.offset))
    if (N == 64) {
        if (bf) STEP_LAUNCH(64, __nv_bfloat16);
        else STEP_LAUNCH(64, float);
    } else {
        if (bf) STEP_LAUNCH(32, __nv_bfloat16);
        else STEP_LAUNCH(32, float);
    }
#undef STEP_LAUNCH
    return RECUR_OK;
}
