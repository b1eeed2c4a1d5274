/* recur_cuda_gemm.cu: y[M][N] (=|+=) x[M][K] . W^T for the CUDA backend.
 *
 * Two paths, by the number of input rows M:
 * - M <= RECUR_CUDA_GEMV_MAX_M (decode): a GEMV-style kernel that streams W once with
 *   16-byte loads (8 bf16 or 4 fp32 per load) and keeps all M rows' dot products in
 *   registers; x stays fp32 (it is small and L1/L2 resident). Bandwidth-bound on W, so
 *   its figure of merit is bytes of W per second.
 * - larger M (prefill, big batches): cuBLAS. bf16 weights: x is rounded to bf16 into a
 *   scratch buffer and cublasGemmEx runs bf16 x bf16 with fp32 accumulation and output
 *   (CUBLAS_COMPUTE_32F). fp32 weights: cublasSgemm in CUBLAS_DEFAULT_MATH, which never
 *   uses TF32, so the F32 path stays exact to fp32 rounding.
 * So with bf16 weights, M <= 8 multiplies by bf16 weights exactly, and M > 8 also rounds
 * the activations to bf16 (the usual mixed-precision GEMM; about 2^-9 relative per input).
 *
 * Column-major view for cuBLAS: W [N][K] row-major is K x N column-major (lda K), x is
 * K x M (ldb K), y is N x M (ldc N); y = op(W)^T x with op = transpose. */
#include <stdint.h>

#include "recur_cuda_internal.h"
#include "recur_dtype.h"

/* Decode batches up to this many rows use the GEMV kernel (one pass over W). */
#define RECUR_CUDA_GEMV_MAX_M 8
#define GEMV_WARPS 4 /* warps per block */
#define GEMV_UNROLL 2 /* 16-byte chunks of each row in flight per lane before the FMAs */

/* 16 bytes of weights -> fp32 */
static __device__ __forceinline__ void unpack16(const uint4 &u, float *f /* [8] */, const __nv_bfloat16 *) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
static __device__ __forceinline__ void unpack16(const uint4 &u, float *f /* [4] */, const float *) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
}
static __device__ __forceinline__ float w_scalar(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ float w_scalar(const float *p) { return *p; }

/* Each warp owns R consecutive rows of W (R rows share every load of x, cutting the x
 * traffic from L1 by R); lanes stride over K in 16-byte chunks. Rows past N are clamped
 * to row N-1 for loading and never written. `vec`: W and x rows are 16-byte aligned (K a
 * multiple of 8 for bf16, 4 for fp32, and aligned base pointers); otherwise the scalar
 * loop does all of K. */
template <typename WT, int MT, int R>
static __global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(const float *__restrict__ x, const WT *__restrict__ W, float *__restrict__ y, int N, int K, int accumulate,
            int vec) {
    constexpr int EL = 16 / (int)sizeof(WT); /* weights per 16-byte load */
    const int lane = threadIdx.x & 31;
    const int n0 = (blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5)) * R;
    if (n0 >= N) return;
    const WT *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = W + (size_t)(n0 + r < N ? n0 + r : N - 1) * K;
    float acc[MT][R];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[m][r] = 0.f;

    const int nch = vec ? K / EL : 0; /* 16-byte chunks per row */
    int ch = lane;
    /* main loop: GEMV_UNROLL chunks per row loaded before any is used */
    for (; ch + 32 * (GEMV_UNROLL - 1) < nch; ch += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL][R];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
#pragma unroll
            for (int r = 0; r < R; r++) wv[u][r] = __ldcs((const uint4 *)wr[r] + ch + 32 * u);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int k0 = (ch + 32 * u) * EL;
            float wf[R][EL];
#pragma unroll
            for (int r = 0; r < R; r++) unpack16(wv[u][r], wf[r], (const WT *)nullptr);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                float xf[EL];
#pragma unroll
                for (int e = 0; e < EL; e += 4) {
                    float4 t = __ldg((const float4 *)(x + (size_t)m * K + k0 + e));
                    xf[e] = t.x; xf[e + 1] = t.y; xf[e + 2] = t.z; xf[e + 3] = t.w;
                }
#pragma unroll
                for (int r = 0; r < R; r++)
#pragma unroll
                    for (int e = 0; e < EL; e++) acc[m][r] = fmaf(xf[e], wf[r][e], acc[m][r]);
            }
        }
    }
    /* remaining whole chunks, one at a time */
    for (; ch < nch; ch += 32) {
        const int k0 = ch * EL;
        float wf[R][EL];
#pragma unroll
        for (int r = 0; r < R; r++) unpack16(__ldcs((const uint4 *)wr[r] + ch), wf[r], (const WT *)nullptr);
#pragma unroll
        for (int m = 0; m < MT; m++) {
            float xf[EL];
#pragma unroll
            for (int e = 0; e < EL; e += 4) {
                float4 t = __ldg((const float4 *)(x + (size_t)m * K + k0 + e));
                xf[e] = t.x; xf[e + 1] = t.y; xf[e + 2] = t.z; xf[e + 3] = t.w;
            }
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int e = 0; e < EL; e++) acc[m][r] = fmaf(xf[e], wf[r][e], acc[m][r]);
        }
    }
    /* scalar part: the tail after the chunks, or all of K when unaligned */
    for (int k = nch * EL + lane; k < K; k += 32) {
        float wf[R];
#pragma unroll
        for (int r = 0; r < R; r++) wf[r] = w_scalar(wr[r] + k);
#pragma unroll
        for (int m = 0; m < MT; m++) {
            const float xv = x[(size_t)m * K + k];
#pragma unroll
            for (int r = 0; r < R; r++) acc[m][r] = fmaf(xv, wf[r], acc[m][r]);
        }
    }
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[m][r] = recur_warp_sum(acc[m][r]);
    if (lane == 0) {
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (n0 + r < N) {
                    float *yp = y + (size_t)m * N + n0 + r;
                    *yp = accumulate ? *yp + acc[m][r] : acc[m][r];
                }
    }
}

template <typename WT, int MT>
static recur_status_t gemv_launch_m(recur_cuda_ctx_t *c, const float *x, const WT *W, float *y, int N, int K,
                                    int accumulate, int vec) {
    /* More rows per warp as M grows: each x element loaded from L1 then serves R rows.
     * M <= 2 keeps R = 2 so that small N still spreads over many warps. */
    constexpr int R = MT <= 2 ? 2 : 4;
    const unsigned grid = (unsigned)recur_cuda_cdiv(N, (int64_t)GEMV_WARPS * R);
    gemv_kernel<WT, MT, R><<<grid, GEMV_WARPS * 32, 0, c->stream>>>(x, W, y, N, K, accumulate, vec);
    RCU_LAUNCHED("gemv_kernel");
    return RECUR_OK;
}

template <typename WT>
static recur_status_t gemv_launch(recur_cuda_ctx_t *c, const float *x, const WT *W, int M, float *y, int N, int K,
                                  int accumulate) {
    constexpr int EL = 16 / (int)sizeof(WT);
    const int vec = K % EL == 0 && ((uintptr_t)W & 15u) == 0 && ((uintptr_t)x & 15u) == 0;
    switch (M) {
    case 1: return gemv_launch_m<WT, 1>(c, x, W, y, N, K, accumulate, vec);
    case 2: return gemv_launch_m<WT, 2>(c, x, W, y, N, K, accumulate, vec);
    case 3: return gemv_launch_m<WT, 3>(c, x, W, y, N, K, accumulate, vec);
    case 4: return gemv_launch_m<WT, 4>(c, x, W, y, N, K, accumulate, vec);
    case 5: return gemv_launch_m<WT, 5>(c, x, W, y, N, K, accumulate, vec);
    case 6: return gemv_launch_m<WT, 6>(c, x, W, y, N, K, accumulate, vec);
    case 7: return gemv_launch_m<WT, 7>(c, x, W, y, N, K, accumulate, vec);
    case 8: return gemv_launch_m<WT, 8>(c, x, W, y, N, K, accumulate, vec);
    default: RECUR_ASSERT(!"gemv_launch: M out of range");
    }
    return RECUR_E_INVAL;
}

static __global__ void round_bf16_kernel(const float *__restrict__ x, size_t n, __nv_bfloat16 *__restrict__ out) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(x[i]);
}

/* Makes c->xbf hold at least n elements. Grows only past the largest size asked so far
 * (logged), so a server's steady state never allocates here. */
static recur_status_t xbf_reserve(recur_cuda_ctx_t *c, size_t n) {
    if (n <= c->xbf_elems) return RECUR_OK;
    recur_log_info("cuda: growing the bf16 activation scratch of the GEMM to %zu elements (%.1f MiB)", n,
                   (double)n * 2 / (1 << 20));
    /* Queued GEMMs may still read the old buffer. */
    RCU_CHECK(cudaStreamSynchronize(c->stream));
    RCU_CHECK(cudaFree(c->xbf));
    c->xbf = NULL;
    c->xbf_elems = 0;
    RCU_CHECK(cudaMalloc(&c->xbf, n * sizeof(__nv_bfloat16)));
    c->xbf_elems = n;
    return RECUR_OK;
}

recur_status_t recur_cuda_matmul(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                 int accumulate) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const int64_t N = W->rows, K = W->cols;
    RECUR_ASSERT(N <= INT32_MAX && K <= INT32_MAX);
    if (M <= 0 || N <= 0) return RECUR_OK;
    if (K == 0) { /* an empty sum: y = 0, or y unchanged */
        if (!accumulate) RCU_CHECK(cudaMemsetAsync(y, 0, (size_t)M * N * sizeof(float), c->stream));
        return RECUR_OK;
    }
    if (M <= RECUR_CUDA_GEMV_MAX_M) {
        if (W->dtype == RECUR_DTYPE_BF16)
            return gemv_launch(c, x, (const __nv_bfloat16 *)W->data, M, y, (int)N, (int)K, accumulate);
        RECUR_ASSERT(W->dtype == RECUR_DTYPE_F32);
        return gemv_launch(c, x, (const float *)W->data, M, y, (int)N, (int)K, accumulate);
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (W->dtype == RECUR_DTYPE_F32) {
        RCU_CUBLAS(cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, M, (int)K, &alpha, (const float *)W->data,
                               (int)K, x, (int)K, &beta, y, (int)N));
        return RECUR_OK;
    }
    RECUR_ASSERT(W->dtype == RECUR_DTYPE_BF16);
    const size_t nx = (size_t)M * (size_t)K;
    recur_status_t st = xbf_reserve(c, nx);
    if (st != RECUR_OK) return st;
    size_t blocks = (nx + 255) / 256, cap = (size_t)c->sm_count * 16;
    round_bf16_kernel<<<(unsigned)(blocks < cap ? blocks : cap), 256, 0, c->stream>>>(x, nx, c->xbf);
    RCU_LAUNCHED("round_bf16_kernel");
    RCU_CUBLAS(cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, M, (int)K, &alpha, W->data, CUDA_R_16BF,
                            (int)K, c->xbf, CUDA_R_16BF, (int)K, &beta, y, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
    return RECUR_OK;
}
