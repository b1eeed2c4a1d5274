/* recur_cuda_internal.h: what the .cu files of the CUDA backend share (private; not
 * installed, not included from C).
 *
 * The backend context, the error-check macros (H1 of STYLE.md, but returning a status
 * instead of aborting: a device error is something a caller can see), and the entry
 * points each .cu file contributes to the op table. */
#ifndef RECUR_CUDA_INTERNAL_H
#define RECUR_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "recur_backend.h"
#include "recur_log.h"
#include "recur_status.h"

/* Everything the backend owns. All mutable state lives here (no file-scope globals). */
typedef struct recur_cuda_ctx {
    int          device;
    char         desc[160];       /* "dev 0 (NVIDIA H100 ..., sm_90, 79.1 GiB)" for messages */
    int          sm_count;
    size_t       smem_optin;      /* the most dynamic shared memory one block may ask for */
    cudaStream_t stream;          /* every op is enqueued here (non-blocking w.r.t. stream 0) */
    cublasHandle_t cublas;        /* bound to `stream`, workspace = cublas_ws */
    void        *cublas_ws;       /* fixed cuBLAS workspace, so cuBLAS never allocates in an op */
    size_t       cublas_ws_bytes;
    /* x converted to bf16 for the tensor-core GEMM path. Grown (with a log line) only when
     * a call needs more than any call before; in a server the first forward at the largest
     * batch sizes it for good, so the steady state never allocates. */
    __nv_bfloat16 *xbf;
    size_t         xbf_elems;
    recur_dtype_t  weight_dtype;  /* storage chosen at init for every weight_upload */
} recur_cuda_ctx_t;

static inline recur_cuda_ctx_t *recur_cuda_ctx(recur_backend_t *b) { return (recur_cuda_ctx_t *)b->ctx; }

/* Logs "<lib> error: <stmt> -> <msg> (<file>:<line>, <device>)" and returns RECUR_E_CUDA.
 * Inline and static: each .cu file gets its own copy, so no symbol leaves the library. */
static inline recur_status_t recur_cuda_fail(const recur_cuda_ctx_t *c, const char *lib, const char *stmt,
                                             const char *msg, const char *file, int line) {
    recur_log_err("%s error: %s -> %s (%s:%d, %s)", lib, stmt, msg, file, line, c ? c->desc : "no device");
    return RECUR_E_CUDA;
}

/* Evaluate a CUDA runtime call once; on failure log it and return RECUR_E_CUDA from the
 * enclosing function (which must have a recur_cuda_ctx_t *c in scope). */
#define RCU_CHECK(expr) do { cudaError_t e_ = (expr); if (e_ != cudaSuccess) \
    return recur_cuda_fail(c, "CUDA", #expr, cudaGetErrorString(e_), __FILE__, __LINE__); } while (0)
#define RCU_CUBLAS(expr) do { cublasStatus_t e_ = (expr); if (e_ != CUBLAS_STATUS_SUCCESS) \
    return recur_cuda_fail(c, "cuBLAS", #expr, cublasGetStatusString(e_), __FILE__, __LINE__); } while (0)
/* After every launch: a bad configuration shows up here, not at the next sync. */
#define RCU_LAUNCHED(what) do { cudaError_t e_ = cudaGetLastError(); if (e_ != cudaSuccess) \
    return recur_cuda_fail(c, "CUDA", "launch of " what, cudaGetErrorString(e_), __FILE__, __LINE__); } while (0)

/* ceil(a / b) for positive sizes */
static inline int64_t recur_cuda_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- the ops each file provides (all enqueue on c->stream) */

/* recur_cuda_gemm.cu */
recur_status_t recur_cuda_matmul(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                 int accumulate);

/* recur_cuda_rwkv7.cu */
recur_status_t recur_cuda_rwkv7_prep(recur_backend_t *b, const recur_rwkv7_prep_args_t *a);
recur_status_t recur_cuda_rwkv7_wkv(recur_backend_t *b, const recur_rwkv7_wkv_args_t *a);
recur_status_t recur_cuda_rwkv7_out(recur_backend_t *b, const recur_rwkv7_out_args_t *a);

/* recur_cuda_mlstm.cu */
recur_status_t recur_cuda_mlstm_init(recur_cuda_ctx_t *c); /* once, from backend init */
recur_status_t recur_cuda_mlstm(recur_backend_t *b, const recur_mlstm_args_t *a);
recur_status_t recur_cuda_xlstm_head_out(recur_backend_t *b, const float *h, const float *o_pre, const float *w,
                                         int32_t M, int32_t n_head, int32_t dv, float eps, float *out);

/* ---- device helpers shared by the kernels (header-inline so every .cu has them) */
#ifdef __CUDACC__
/* Sum over a warp; every lane gets the total. */
static __device__ __forceinline__ float recur_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
 * total. `red` is __shared__ float[32]; the leading barrier lets callers reuse it at once. */
static __device__ __forceinline__ float recur_block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = recur_warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.f;
    return recur_warp_sum(t);
}

static __device__ __forceinline__ float recur_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
#endif

#endif
