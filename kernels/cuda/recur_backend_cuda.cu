/* recur_backend_cuda.cu: the CUDA backend's table (see recur_backend_cuda.h): device
 * choice, stream and handles, memory, weights, and the small row-wise ops. The matrix
 * product lives in recur_cuda_gemm.cu, RWKV-7 in recur_cuda_rwkv7.cu, xLSTM in
 * recur_cuda_mlstm.cu.
 *
 * Conventions kept by every op here:
 * - everything is enqueued on the backend's one stream; upload and download return only
 *   once the host buffer may be reused (they synchronise the stream); upload_async does
 *   not wait (its source is meant to be host_alloc's page-locked memory);
 * - graphs: graph_begin..graph_end records the stream (cudaStreamBeginCapture) into a
 *   graph instantiated once and replayed by graph_launch, so a decode step costs one
 *   launch instead of ~1000; cuBLAS records fine because its workspace is fixed
 *   (cublasSetWorkspace at init, so it allocates nothing during a call);
 * - the row-wise ops, token shift and the GEMVs launch with programmatic dependent launch
 *   (recur_cuda_internal.h): each waits for the kernel before it in every block before
 *   touching what that kernel may write, and before that only prefetches into L2 or reads
 *   what it cannot write (weights; slot tables and state in token shift and rwkv7_step);
 * - every CUDA/cuBLAS call is checked and a failure returns RECUR_E_CUDA with the call,
 *   file:line and device in the log (recur_cuda_internal.h); nothing aborts on a device error;
 * - an op with nothing to do (0 rows, 0 elements) returns RECUR_OK without a launch;
 * - ops allocate nothing; the only growable scratch is the bf16 copy of the activations
 *   for the GEMM (recur_cuda_gemm.cu), and the staging buffer of weight_upload, which is
 *   not an op of the forward pass.
 * The thread that calls the ops must have the backend's device current: init makes it
 * current on the calling thread (one device per worker process). */
#include "recur_backend_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_cuda_internal.h"
#include "recur_dtype.h"

/* cuBLAS workspace: 32 MiB is what NVIDIA recommends for Hopper (cuBLAS docs,
 * cublasSetWorkspace); with it set, cuBLAS allocates nothing of its own during a call. */
#define RECUR_CUDA_CUBLAS_WS_BYTES ((size_t)32 << 20)
/* weight_upload converts fp32 -> bf16 on the device through a staging buffer of this
 * many floats (64 MiB), so a 1 GiB matrix does not need a 1 GiB temporary. */
#define RECUR_CUDA_STAGE_FLOATS ((size_t)16 << 20)

static const char *cuda_name(const recur_backend_t *b) { return "cuda"; }

/* ------------------------------------------------------------------------ memory */

static void *cuda_alloc(recur_backend_t *b, size_t n) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n ? n : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* an out-of-memory is not sticky; clear it */
        recur_cuda_fail(c, "CUDA", "cudaMalloc", cudaGetErrorString(e), __FILE__, __LINE__);
        recur_log_err("cuda: allocation of %zu bytes failed", n);
        return NULL;
    }
    /* The contract says zero-filled. On our stream, so every later op sees the zeros. */
    e = cudaMemsetAsync(p, 0, n ? n : 1, c->stream);
    if (e != cudaSuccess) {
        recur_cuda_fail(c, "CUDA", "cudaMemsetAsync", cudaGetErrorString(e), __FILE__, __LINE__);
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_buf_free(recur_backend_t *b, void *p) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!p) return;
    /* Work still queued may read p: wait for it (not a hot path). */
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) recur_cuda_fail(c, "CUDA", "cudaStreamSynchronize", cudaGetErrorString(e), __FILE__, __LINE__);
    e = cudaFree(p);
    if (e != cudaSuccess) recur_cuda_fail(c, "CUDA", "cudaFree", cudaGetErrorString(e), __FILE__, __LINE__);
}

static recur_status_t cuda_upload(recur_backend_t *b, void *dst, const void *host, size_t n) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!n) return RECUR_OK;
    RCU_CHECK(cudaMemcpyAsync(dst, host, n, cudaMemcpyHostToDevice, c->stream));
    /* The caller may overwrite `host` as soon as we return. */
    RCU_CHECK(cudaStreamSynchronize(c->stream));
    return RECUR_OK;
}

static recur_status_t cuda_download(recur_backend_t *b, void *host, const void *src, size_t n) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!n) return RECUR_OK;
    RCU_CHECK(cudaMemcpyAsync(host, src, n, cudaMemcpyDeviceToHost, c->stream));
    RCU_CHECK(cudaStreamSynchronize(c->stream));
    return RECUR_OK;
}

static recur_status_t cuda_copy(recur_backend_t *b, void *dst, const void *src, size_t n) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!n || dst == src) return RECUR_OK;
    RCU_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->stream));
    return RECUR_OK;
}

static recur_status_t cuda_copy_2d(recur_backend_t *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                                   size_t row_bytes, size_t n_rows) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!row_bytes || !n_rows) return RECUR_OK;
    RCU_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, n_rows, cudaMemcpyDeviceToDevice, c->stream));
    return RECUR_OK;
}

static recur_status_t cuda_upload_async(recur_backend_t *b, void *dst, const void *host, size_t n) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!n) return RECUR_OK;
    /* Stream-ordered: the ops enqueued after this see the data, and nothing waits here. */
    RCU_CHECK(cudaMemcpyAsync(dst, host, n, cudaMemcpyHostToDevice, c->stream));
    return RECUR_OK;
}

static void *cuda_host_alloc(recur_backend_t *b, size_t n) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    void *p = NULL;
    /* Page-locked, so a copy from it is a DMA the host does not wait for. */
    cudaError_t e = cudaHostAlloc(&p, n ? n : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        recur_cuda_fail(c, "CUDA", "cudaHostAlloc", cudaGetErrorString(e), __FILE__, __LINE__);
        return NULL;
    }
    memset(p, 0, n ? n : 1);
    return p;
}

static void cuda_host_free(recur_backend_t *b, void *p) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!p) return;
    cudaError_t e = cudaFreeHost(p);
    if (e != cudaSuccess) recur_cuda_fail(c, "CUDA", "cudaFreeHost", cudaGetErrorString(e), __FILE__, __LINE__);
}

static recur_status_t cuda_memzero(recur_backend_t *b, void *dst, size_t n) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!n) return RECUR_OK;
    RCU_CHECK(cudaMemsetAsync(dst, 0, n, c->stream));
    return RECUR_OK;
}

static recur_status_t cuda_synchronize(recur_backend_t *b) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RCU_CHECK(cudaStreamSynchronize(c->stream));
    return RECUR_OK;
}

static recur_status_t cuda_mem_info(recur_backend_t *b, size_t *used, size_t *total) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    size_t fr = 0, tot = 0;
    RCU_CHECK(cudaMemGetInfo(&fr, &tot));
    if (used) *used = tot - fr;
    if (total) *total = tot;
    return RECUR_OK;
}

/* ------------------------------------------------------------------------ weights */

/* fp32 -> bf16 round-to-nearest-even (__float2bfloat16_rn, like recur_f32_to_bf16). */
static __global__ void f32_to_bf16_kernel(const float *__restrict__ src, __nv_bfloat16 *__restrict__ dst, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

/* A grid for n independent elements: enough blocks to fill the device, no more (the
 * kernels loop with a grid stride). */
static unsigned elem_grid(const recur_cuda_ctx_t *c, size_t n, int threads) {
    size_t want = (n + (size_t)threads - 1) / (size_t)threads, cap = (size_t)c->sm_count * 16;
    if (want < 1) want = 1;
    return (unsigned)(want < cap ? want : cap);
}

/* The storage of a matrix for `use` in the backend's weight mode: the mode itself for
 * projections; full precision (f32 in f32 mode, else bf16) for RECUR_WEIGHT_KEEP. */
static recur_dtype_t weight_format(const recur_cuda_ctx_t *c, recur_weight_use_t use) {
    if (use == RECUR_WEIGHT_PROJ || c->weight_dtype == RECUR_DTYPE_F32) return c->weight_dtype;
    return RECUR_DTYPE_BF16;
}

static recur_status_t cuda_weight_upload(recur_backend_t *b, const float *host, int64_t rows, int64_t cols,
                                         recur_weight_use_t use, recur_weight_t *w) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const size_t n = (size_t)rows * (size_t)cols;
    const recur_dtype_t dt = weight_format(c, use);
    *w = recur_weight_t{};
    w->dtype = dt;
    w->rows = rows;
    w->cols = cols;
    if (recur_dtype_is_quant(dt)) return recur_cuda_weight_quantize(c, host, w);
    RCU_CHECK(cudaMalloc(&w->data, (n ? n : 1) * recur_dtype_size(dt)));
    if (dt == RECUR_DTYPE_F32) {
        recur_status_t st = cuda_upload(b, w->data, host, n * sizeof(float));
        if (st != RECUR_OK) { cudaFree(w->data); w->data = NULL; }
        return st;
    }
    /* bf16: stream the fp32 values through a staging buffer and round on the device (a
     * 7B checkpoint is ~7e9 values; rounding them on one host core would take seconds). */
    size_t stage_n = n < RECUR_CUDA_STAGE_FLOATS ? n : RECUR_CUDA_STAGE_FLOATS;
    float *stage = NULL;
    cudaError_t e = cudaMalloc(&stage, (stage_n ? stage_n : 1) * sizeof(float));
    if (e != cudaSuccess) {
        cudaFree(w->data);
        w->data = NULL;
        return recur_cuda_fail(c, "CUDA", "cudaMalloc(staging)", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    recur_status_t st = RECUR_OK;
    for (size_t off = 0; off < n && st == RECUR_OK; off += stage_n) {
        size_t k = n - off < stage_n ? n - off : stage_n;
        /* Stream order: the next chunk's copy into `stage` waits for this kernel. */
        e = cudaMemcpyAsync(stage, host + off, k * sizeof(float), cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) {
            f32_to_bf16_kernel<<<elem_grid(c, k, 256), 256, 0, c->stream>>>(stage, (__nv_bfloat16 *)w->data + off, k);
            e = cudaGetLastError();
        }
        if (e != cudaSuccess) st = recur_cuda_fail(c, "CUDA", "weight_upload convert", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess && st == RECUR_OK)
        st = recur_cuda_fail(c, "CUDA", "cudaStreamSynchronize", cudaGetErrorString(e), __FILE__, __LINE__);
    cudaFree(stage);
    if (st != RECUR_OK) { cudaFree(w->data); w->data = NULL; }
    return st;
}

template <typename T>
static __global__ void weight_random_kernel(T *__restrict__ w, int64_t rows, int64_t cols, uint64_t seed, float lo,
                                            float hi, int64_t row0, int64_t col0, int64_t full_cols) {
    const size_t n = (size_t)rows * (size_t)cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)cols, col = i % (size_t)cols;
        float v = recur_cuda_virtual_value(seed, ((size_t)row0 + r) * (size_t)full_cols + (size_t)col0 + col, lo, hi);
        if constexpr (sizeof(T) == 2) w[i] = __float2bfloat16_rn(v);
        else w[i] = v;
    }
}

static recur_status_t cuda_weight_random(recur_backend_t *b, int64_t rows, int64_t cols, uint64_t seed, float lo,
                                         float hi, int64_t row0, int64_t col0, int64_t full_cols, recur_weight_use_t use,
                                         recur_weight_t *w) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const size_t n = (size_t)rows * (size_t)cols;
    *w = recur_weight_t{};
    w->dtype = weight_format(c, use);
    w->rows = rows;
    w->cols = cols;
    if (recur_dtype_is_quant(w->dtype)) return recur_cuda_weight_random_quant(c, seed, lo, hi, row0, col0, full_cols, w);
    RCU_CHECK(cudaMalloc(&w->data, (n ? n : 1) * recur_dtype_size(w->dtype)));
    if (n) {
        if (w->dtype == RECUR_DTYPE_BF16)
            weight_random_kernel<<<elem_grid(c, n, 256), 256, 0, c->stream>>>((__nv_bfloat16 *)w->data, rows, cols, seed,
                                                                              lo, hi, row0, col0, full_cols);
        else
            weight_random_kernel<<<elem_grid(c, n, 256), 256, 0, c->stream>>>((float *)w->data, rows, cols, seed, lo, hi,
                                                                              row0, col0, full_cols);
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) {
            cudaFree(w->data);
            w->data = NULL;
            return recur_cuda_fail(c, "CUDA", "weight_random_kernel", cudaGetErrorString(e), __FILE__, __LINE__);
        }
    }
    return RECUR_OK;
}

static void cuda_weight_free(recur_backend_t *b, recur_weight_t *w) {
    if (!w->data) return;
    cuda_buf_free(b, w->data);
    w->data = NULL;
    w->scale = NULL;
}

/* ------------------------------------------------------------------------ row-wise ops */

static __device__ __forceinline__ float load_w(const float *p, size_t i) { return p[i]; }
static __device__ __forceinline__ float load_w(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }

/* grid (output rows, column blocks), one element a thread: a block walking a whole 4096-wide
 * row one load after another took ~8 us at batch 1 (ncu, H200), for 16 KiB. An id outside
 * the table writes NaN rather than reading out of bounds (the caller validates ids; this
 * keeps a caller bug visible and memory-safe). */
template <typename T>
static __global__ void embed_kernel(const T *__restrict__ e, int64_t n_rows, int64_t C, const int32_t *__restrict__ tok,
                                    float *__restrict__ out) {
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    const int64_t m = blockIdx.x, i = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= C) return;
    const int32_t t = tok[m];
    out[m * C + i] = t < 0 || t >= n_rows ? __int_as_float(0x7fc00000) : load_w(e + (int64_t)t * C, (size_t)i);
}

static recur_status_t cuda_embed(recur_backend_t *b, const recur_weight_t *emb, const int32_t *tokens, int32_t M,
                                 float *out) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (M <= 0 || emb->cols <= 0) return RECUR_OK;
    const dim3 grid((unsigned)M, (unsigned)recur_cuda_cdiv(emb->cols, 256));
    if (emb->dtype == RECUR_DTYPE_BF16)
        RCU_LAUNCH("embed_kernel", recur_cuda_launch(c, embed_kernel<__nv_bfloat16>, grid, dim3(256), 0,
                                                     (const __nv_bfloat16 *)emb->data, emb->rows, emb->cols, tokens, out));
    else
        RCU_LAUNCH("embed_kernel", recur_cuda_launch(c, embed_kernel<float>, grid, dim3(256), 0,
                                                     (const float *)emb->data, emb->rows, emb->cols, tokens, out));
    return RECUR_OK;
}

/* Asks L2 for n floats at p (one prefetch per 128-byte line, spread over the block) before
 * the PDL wait: only L2, the point of coherence, so it is safe whatever p is (an op's
 * inputs may be outputs of the kernel still running), and the loads after the wait hit. */
static __device__ __forceinline__ void prefetch_l2_floats(const float *p, int64_t n) {
    for (int64_t o = (int64_t)threadIdx.x * 32; o < n; o += (int64_t)blockDim.x * 32)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(p + o));
}

/* One block per row; two passes over the row (mean, then the centred variance) so a row
 * with a large mean loses nothing to cancellation, like the CPU's double version. w and
 * bias are prefetched into L2 before the PDL wait. When the row fits (C <= NORM_REGS *
 * blockDim: every model here), each thread keeps its elements of x in registers (one read
 * of the row, all loads in flight at once); otherwise the row is re-read from L1/L2. Both
 * forms sum each thread's elements in the same order, so they agree bit for bit. y may
 * alias x: each element is read and written by the same thread, after both reductions. */
#define NORM_REGS 8

/* The register form's statistics of row xr: this thread's elements tid + k bd (0 past C)
 * into xv, and the row's mean and 1 / sqrt(var + eps). Every thread of the block calls
 * it; layernorm_kernel and layernorm_shift_mix_kernel share it, so they agree bit for bit. */
static __device__ __forceinline__ void layernorm_row_stats(const float *xr, int32_t C, float eps, float *red,
                                                           float (&xv)[NORM_REGS], float *mean, float *inv) {
    const int bd = blockDim.x, tid = threadIdx.x;
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NORM_REGS; k++) {
        const int i = tid + k * bd;
        xv[k] = i < C ? xr[i] : 0.f;
        if (i < C) s += xv[k];
    }
    const float mu = recur_block_sum(s, red) / (float)C;
    float v = 0.f;
#pragma unroll
    for (int k = 0; k < NORM_REGS; k++)
        if (tid + k * bd < C) { float d = xv[k] - mu; v += d * d; }
    const float var = recur_block_sum(v, red) / (float)C;
    *mean = mu;
    *inv = 1.0f / sqrtf(var + eps);
}

static __global__ void layernorm_kernel(const float *x, const float *__restrict__ w, const float *__restrict__ bias,
                                        int32_t C, float eps, float *y) {
    __shared__ float red[32];
    const int bd = blockDim.x, tid = threadIdx.x;
    const bool regs = C <= NORM_REGS * bd;
    /* weights: into registers before the PDL wait when the row fits (no kernel writes
     * them), else into L2 */
    float wv[NORM_REGS], bv[NORM_REGS];
    if (regs) {
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++) {
            const int i = tid + k * bd;
            wv[k] = i < C ? w[i] : 0.f;
            bv[k] = i < C ? bias[i] : 0.f;
        }
    } else {
        prefetch_l2_floats(w, C);
        prefetch_l2_floats(bias, C);
    }
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    const float *xr = x + (size_t)blockIdx.x * C;
    float *yr = y + (size_t)blockIdx.x * C;
    if (regs) {
        float xv[NORM_REGS], mean, inv;
        layernorm_row_stats(xr, C, eps, red, xv, &mean, &inv);
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++) {
            const int i = tid + k * bd;
            if (i < C) yr[i] = (xv[k] - mean) * inv * wv[k] + bv[k];
        }
        return;
    }
    float s = 0.f;
    for (int i = tid; i < C; i += bd) s += xr[i];
    const float mean = recur_block_sum(s, red) / (float)C;
    float v = 0.f;
    for (int i = tid; i < C; i += bd) { float d = xr[i] - mean; v += d * d; }
    const float var = recur_block_sum(v, red) / (float)C;
    const float inv = 1.0f / sqrtf(var + eps);
    for (int i = tid; i < C; i += bd) yr[i] = (xr[i] - mean) * inv * w[i] + bias[i];
}

static recur_status_t cuda_layernorm(recur_backend_t *b, const float *x, const float *w, const float *bias, int32_t M,
                                     int32_t C, float eps, float *y) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (M <= 0 || C <= 0) return RECUR_OK;
    RCU_LAUNCH("layernorm_kernel", recur_cuda_launch(c, layernorm_kernel, dim3((unsigned)M), dim3(C >= 1024 ? 512 : 256),
                                                     0, x, w, bias, C, eps, y));
    return RECUR_OK;
}

/* As layernorm_kernel: w read before the PDL wait, x read once when the row fits. */
static __global__ void rmsnorm_kernel(const float *x, const float *__restrict__ w, int32_t C, float eps, float *y) {
    __shared__ float red[32];
    const int bd = blockDim.x, tid = threadIdx.x;
    const bool regs = C <= NORM_REGS * bd;
    float xv[NORM_REGS], wv[NORM_REGS];
    if (regs) { /* as layernorm_kernel */
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++) wv[k] = tid + k * bd < C ? w[tid + k * bd] : 0.f;
    } else {
        prefetch_l2_floats(w, C);
    }
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    const float *xr = x + (size_t)blockIdx.x * C;
    float *yr = y + (size_t)blockIdx.x * C;
    if (regs) {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++) {
            const int i = tid + k * bd;
            xv[k] = i < C ? xr[i] : 0.f;
            if (i < C) s += xv[k] * xv[k];
        }
        const float inv = 1.0f / sqrtf(recur_block_sum(s, red) / (float)C + eps);
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++)
            if (tid + k * bd < C) yr[tid + k * bd] = xv[k] * inv * wv[k];
        return;
    }
    float s = 0.f;
    for (int i = tid; i < C; i += bd) s += xr[i] * xr[i];
    const float inv = 1.0f / sqrtf(recur_block_sum(s, red) / (float)C + eps);
    for (int i = tid; i < C; i += bd) yr[i] = xr[i] * inv * w[i];
}

static recur_status_t cuda_rmsnorm(recur_backend_t *b, const float *x, const float *w, int32_t M, int32_t C, float eps,
                                   float *y) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (M <= 0 || C <= 0) return RECUR_OK;
    RCU_LAUNCH("rmsnorm_kernel", recur_cuda_launch(c, rmsnorm_kernel, dim3((unsigned)M), dim3(C >= 1024 ? 512 : 256), 0,
                                                   x, w, C, eps, y));
    return RECUR_OK;
}

/* Elementwise ops: a grid-stride loop. Precise expf/tanhf (no fast-math), like the CPU. */
static __global__ void act_kernel(int kind, const float *x, int64_t n, float *y) {
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        y[i] = recur_act_value(kind, x[i]);
    }
}

static recur_status_t cuda_act(recur_backend_t *b, recur_act_t kind, const float *x, int64_t n, float *y) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(kind == RECUR_ACT_TANH || kind == RECUR_ACT_SIGMOID || kind == RECUR_ACT_RELU_SQ);
    if (n <= 0) return RECUR_OK;
    RCU_LAUNCH("act_kernel", recur_cuda_launch(c, act_kernel, dim3(elem_grid(c, (size_t)n, 256)), dim3(256), 0, (int)kind,
                                               x, n, y));
    return RECUR_OK;
}

static __global__ void silu_mul_kernel(const float *g, const float *u, int64_t n, float *y) {
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gv = g[i];
        y[i] = gv / (1.0f + expf(-gv)) * u[i];
    }
}

static recur_status_t cuda_silu_mul(recur_backend_t *b, const float *gate, const float *up, int64_t n, float *y) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (n <= 0) return RECUR_OK;
    RCU_LAUNCH("silu_mul_kernel", recur_cuda_launch(c, silu_mul_kernel, dim3(elem_grid(c, (size_t)n, 256)), dim3(256), 0,
                                                    gate, up, n, y));
    return RECUR_OK;
}

static __global__ void softcap_kernel(const float *x, int64_t n, float cap, float *y) {
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = cap * tanhf(x[i] / cap);
}

static recur_status_t cuda_softcap(recur_backend_t *b, const float *x, int64_t n, float cap, float *y) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (n <= 0) return RECUR_OK;
    RCU_LAUNCH("softcap_kernel", recur_cuda_launch(c, softcap_kernel, dim3(elem_grid(c, (size_t)n, 256)), dim3(256), 0, x,
                                                   n, cap, y));
    return RECUR_OK;
}

/* grid (destination rows, column blocks), one element a thread (as embed_kernel). Rows
 * must not overlap across rows of dst (dst == src with the identity index is fine: each
 * element is read then written by one thread). */
static __global__ void gather_rows_kernel(const float *src, const int32_t *__restrict__ idx, int32_t C, float *dst) {
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i < C) dst[(size_t)blockIdx.x * C + i] = src[(size_t)idx[blockIdx.x] * C + i];
}

static recur_status_t cuda_gather_rows(recur_backend_t *b, const float *src, const int32_t *idx, int32_t n, int32_t C,
                                       float *dst) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (n <= 0 || C <= 0) return RECUR_OK;
    const dim3 grid((unsigned)n, (unsigned)recur_cuda_cdiv(C, 256));
    RCU_LAUNCH("gather_rows_kernel", recur_cuda_launch(c, gather_rows_kernel, grid, dim3(256), 0, src, idx, C, dst));
    return RECUR_OK;
}

/* Sequence of row t: the s with seq_off[s] <= t < seq_off[s+1] (empty sequences skipped),
 * by a binary search for the first offset above t. */
static __device__ __forceinline__ int32_t seq_of_row(const int32_t *seq_off, int32_t n_seq, int32_t t) {
    int32_t lo = 0, hi = n_seq; /* first u in [0, n_seq] with seq_off[u] > t lies in (lo, hi] */
    while (lo < hi) {
        int32_t mid = (lo + hi + 1) >> 1;
        if (seq_off[mid] > t) hi = mid - 1;
        else lo = mid;
    }
    return lo;
}

/* The sequence of row t (its rows [*r0, *r1)) and its slot's stored vector, looked up by
 * thread 0 into s_seq (__shared__ int32_t[3]) and shared with the block (a barrier: every
 * thread of the block calls it). */
static __device__ __forceinline__ float *shift_row_seq(const int32_t *__restrict__ seq_off,
                                                       const int32_t *__restrict__ slot, int32_t n_seq, int32_t t,
                                                       char *pool, size_t stride, size_t offset, int32_t *s_seq,
                                                       int32_t *r0, int32_t *r1) {
    if (threadIdx.x == 0) {
        const int32_t s = seq_of_row(seq_off, n_seq, t);
        s_seq[0] = seq_off[s];
        s_seq[1] = seq_off[s + 1];
        s_seq[2] = slot[s];
    }
    __syncthreads();
    *r0 = s_seq[0];
    *r1 = s_seq[1];
    return (float *)(pool + (size_t)s_seq[2] * stride + offset); /* byte stride and offset */
}

/* Mix vectors a token_shift_mix_kernel thread holds in registers from before the PDL wait
 * (RWKV-7 has 6; more are read after the wait). */
#define SHIFT_PRE_MIX 6

/* grid (M rows, column blocks). The first row of a sequence reads the slot's stored
 * vector and, in the same thread, then overwrites it with the sequence's last row, so no
 * other thread ever reads a stored element after it changed. Before the PDL wait a thread
 * reads everything that does not come from the kernel ahead (a layer norm, which writes
 * only the x read here): the sequence and slot of its row (tables copied in before the
 * step's first kernel), the stored vector (last written by this kernel one step earlier,
 * long complete: every kernel before the one ahead has completed when this one starts)
 * and its mix weights, so that after the wait only x is one load away. */
static __global__ void token_shift_mix_kernel(const float *__restrict__ x, int32_t C, int32_t M,
                                              const int32_t *__restrict__ seq_off, const int32_t *__restrict__ slot,
                                              int32_t n_seq, char *pool, size_t stride, size_t offset, int32_t n_mix,
                                              const float *__restrict__ mix, float *__restrict__ out) {
    __shared__ int32_t s_seq[3];
    const int32_t t = blockIdx.x;
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    int32_t r0, r1;
    float *const shift = shift_row_seq(seq_off, slot, n_seq, t, pool, stride, offset, s_seq, &r0, &r1);
    float stored = 0.f, mv[SHIFT_PRE_MIX];
    if (i < C) {
        if (t == r0) stored = shift[i];
#pragma unroll
        for (int32_t j = 0; j < SHIFT_PRE_MIX; j++) mv[j] = j < n_mix ? mix[(size_t)j * C + i] : 0.f;
    }
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    if (i >= C) return;
    const float xv = x[(size_t)t * C + i];
    const float pv = t == r0 ? stored : x[(size_t)(t - 1) * C + i];
    const size_t MC = (size_t)M * C;
#pragma unroll
    for (int32_t j = 0; j < SHIFT_PRE_MIX; j++)
        if (j < n_mix) out[j * MC + (size_t)t * C + i] = xv + (pv - xv) * mv[j];
    for (int32_t j = SHIFT_PRE_MIX; j < n_mix; j++) out[j * MC + (size_t)t * C + i] = xv + (pv - xv) * mix[(size_t)j * C + i];
    if (t == r0) shift[i] = x[(size_t)(r1 - 1) * C + i];
}

static recur_status_t cuda_token_shift_mix(recur_backend_t *b, const float *x, int32_t C, const recur_rows_t *rows,
                                           recur_state_ref_t st, int32_t n_mix, const float *mix, float *out) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (rows->n_rows <= 0 || C <= 0) return RECUR_OK;
    dim3 grid((unsigned)rows->n_rows, (unsigned)recur_cuda_cdiv(C, 256));
    RCU_LAUNCH("token_shift_mix_kernel",
               recur_cuda_launch(c, token_shift_mix_kernel, grid, dim3(256), 0, x, C, rows->n_rows, rows->seq_off,
                                 rows->slot, rows->n_seq, (char *)st.pool, st.slot_bytes, st.offset, n_mix, mix, out));
    return RECUR_OK;
}

/* layernorm_kernel's register form, then token_shift_mix_kernel, in one launch: grid (M
 * rows, NS_GROUPS column groups), blocks of layernorm_kernel's size. Every block works out
 * its row's statistics over the whole row (the same sums as layernorm_kernel, so the same
 * bits) and writes the mixes of its group, the elements tid + k bd with k in [y KG, (y +
 * 1) KG). At decode's few rows the writes then spread over that many times as many SMs:
 * RWKV-7 7.2B int8 at batch 1 ran 364.5 / 368.9 / 380.5 / 381.6 tok/s with 1 / 2 / 4 / 8
 * groups, and 367.4 as the two kernels (H200).
 * A row that is not its sequence's first also needs the row before it normalised, and a
 * sequence's first row stores its sequence's last row normalised: a block recomputes
 * those rows' statistics (at most three rows, one in decode) rather than waiting on
 * another block. Before the PDL wait: as token_shift_mix_kernel (tables, the stored
 * vector, the first mixes), and the norm's weights. */
#define NS_GROUPS 8
static __global__ void __launch_bounds__(512)
layernorm_shift_mix_kernel(const float *__restrict__ x, const float *__restrict__ w, const float *__restrict__ bias,
                           int32_t C, float eps, const int32_t *__restrict__ seq_off,
                           const int32_t *__restrict__ slot, int32_t n_seq, int32_t M, char *pool, size_t stride,
                           size_t offset, int32_t n_mix, const float *__restrict__ mix, float *__restrict__ out) {
    constexpr int KG = NORM_REGS / NS_GROUPS;
    static_assert(NORM_REGS % NS_GROUPS == 0, "whole groups");
    __shared__ float red[32];
    __shared__ int32_t s_seq[3];
    const int32_t t = blockIdx.x;
    const int bd = blockDim.x, tid = threadIdx.x, k0 = (int)blockIdx.y * KG;
    int32_t r0, r1;
    float *const shift = shift_row_seq(seq_off, slot, n_seq, t, pool, stride, offset, s_seq, &r0, &r1);
    float wv[KG], bv[KG], prev[KG], mv[SHIFT_PRE_MIX][KG];
#pragma unroll
    for (int j = 0; j < KG; j++) {
        const int i = tid + (k0 + j) * bd;
        const bool in = i < C;
        wv[j] = in ? w[i] : 0.f;
        bv[j] = in ? bias[i] : 0.f;
        prev[j] = in && t == r0 ? shift[i] : 0.f;
#pragma unroll
        for (int m = 0; m < SHIFT_PRE_MIX; m++) mv[m][j] = in && m < n_mix ? mix[(size_t)m * C + i] : 0.f;
    }
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    /* row r of x normalised: this thread's elements of the group into v */
    auto norm_row = [&](int32_t r, float(&v)[KG]) {
        float xv[NORM_REGS], mean, inv;
        layernorm_row_stats(x + (size_t)r * C, C, eps, red, xv, &mean, &inv);
#pragma unroll
        for (int j = 0; j < KG; j++) {
            float e = xv[j]; /* xv[k0 + j] by selects: an index known only at run time would put xv in local memory */
#pragma unroll
            for (int g = 1; g < NS_GROUPS; g++)
                if ((int)blockIdx.y == g) e = xv[g * KG + j];
            v[j] = (e - mean) * inv * wv[j] + bv[j];
        }
    };
    float cur[KG];
    norm_row(t, cur);
    if (t != r0) norm_row(t - 1, prev);
    const size_t MC = (size_t)M * C;
#pragma unroll
    for (int j = 0; j < KG; j++) {
        const int i = tid + (k0 + j) * bd;
        if (i >= C) continue;
        const float xv = cur[j], pv = prev[j];
        float *o = out + (size_t)t * C + i;
#pragma unroll
        for (int m = 0; m < SHIFT_PRE_MIX; m++)
            if (m < n_mix) o[m * MC] = xv + (pv - xv) * mv[m][j];
        for (int m = SHIFT_PRE_MIX; m < n_mix; m++) o[m * MC] = xv + (pv - xv) * mix[(size_t)m * C + i];
    }
    if (t != r0) return;
    if (r1 - 1 != t) norm_row(r1 - 1, cur); /* the sequence's last row, for the next step */
#pragma unroll
    for (int j = 0; j < KG; j++) {
        const int i = tid + (k0 + j) * bd;
        if (i < C) shift[i] = cur[j];
    }
}

static recur_status_t cuda_layernorm_shift_mix(recur_backend_t *b, const float *x, const float *w, const float *bias,
                                               int32_t C, float eps, const recur_rows_t *rows, recur_state_ref_t st,
                                               int32_t n_mix, const float *mix, float *tmp, float *out) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    const int32_t M = rows->n_rows;
    if (M <= 0 || C <= 0) return RECUR_OK;
    const int bd = C >= 1024 ? 512 : 256; /* layernorm_kernel's */
    /* the two launches for layernorm_kernel's looping form, and for many rows: there
     * NS_GROUPS blocks a row would each read the row (and the one before it) again, and
     * one group a row needs 128 registers a thread at 512 threads (one block an SM): that
     * form lost 0.2-1.5% at 64 and 256 rows (H200) */
    if (C > NORM_REGS * bd || M > c->norm_shift_max_m) {
        RECUR_TRY(cuda_layernorm(b, x, w, bias, M, C, eps, tmp));
        return cuda_token_shift_mix(b, tmp, C, rows, st, n_mix, mix, out);
    }
    RCU_LAUNCH("layernorm_shift_mix_kernel",
               recur_cuda_launch(c, layernorm_shift_mix_kernel, dim3((unsigned)M, NS_GROUPS), dim3(bd), 0, x, w, bias, C, eps,
                                 rows->seq_off, rows->slot, rows->n_seq, M, (char *)st.pool, st.slot_bytes, st.offset,
                                 n_mix, mix, out));
    return RECUR_OK;
}

/* ------------------------------------------------------------------------ graphs */

static recur_status_t cuda_graph_begin(recur_backend_t *b) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(!c->capturing);
    /* Thread-local mode: a call on this thread that cannot be recorded (a sync, cudaMalloc)
     * fails and invalidates the capture instead of silently running at record time, while
     * other threads (other backends of the process) are not restricted. */
    RCU_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = 1;
    return RECUR_OK;
}

static recur_status_t cuda_graph_end(recur_backend_t *b, void **graph) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    *graph = NULL;
    RECUR_ASSERT(c->capturing);
    c->capturing = 0;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e != cudaSuccess) {
        /* An op broke the capture (the failure was logged there); the stream is usable again. */
        (void)cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        return recur_cuda_fail(c, "CUDA", "cudaStreamEndCapture", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g); /* the executable graph keeps what it needs */
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return recur_cuda_fail(c, "CUDA", "cudaGraphInstantiate", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    c->n_graphs++;
    *graph = (void *)x;
    return RECUR_OK;
}

static recur_status_t cuda_graph_launch(recur_backend_t *b, void *graph) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RCU_CHECK(cudaGraphLaunch((cudaGraphExec_t)graph, c->stream));
    return RECUR_OK;
}

static void cuda_graph_free(recur_backend_t *b, void *graph) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (!graph) return;
    /* A launched graph still running is freed by CUDA once it completes. */
    cudaError_t e = cudaGraphExecDestroy((cudaGraphExec_t)graph);
    if (e != cudaSuccess) recur_cuda_fail(c, "CUDA", "cudaGraphExecDestroy", cudaGetErrorString(e), __FILE__, __LINE__);
    if (--c->n_graphs == 0 && c->n_retired > 0) {
        /* The last graph may still be running on the parked scratch buffers. */
        e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) recur_cuda_fail(c, "CUDA", "cudaStreamSynchronize", cudaGetErrorString(e), __FILE__, __LINE__);
        recur_cuda_release_retired(c);
    }
}

/* ------------------------------------------------------------------------ lifetime */

static void *cuda_native_stream(recur_backend_t *b) { return (void *)recur_cuda_ctx(b)->stream; }

static void cuda_free(recur_backend_t *b) {
    if (!b) return;
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    if (c) {
        /* Errors here can only be logged: the backend is going away either way. */
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->cublas) cublasDestroy(c->cublas);
        cudaFree(c->cublas_ws);
        cudaFree(c->xbf);
        if (c->mt_buf) cudaFree(c->mt_buf); /* after the stream sync above: nothing uses it */
        if (c->sample_front) cudaFree(c->sample_front);
        recur_cuda_quant_free(c);
        recur_cuda_release_retired(c);
        free(c->retired);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(b);
}

/* The device to use for `requested` (-1: the local rank's device modulo the count when an
 * MPI launcher says which rank we are, else the thread's current device). */
static int pick_device(int requested, int n_dev) {
    if (requested >= 0) return requested;
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v) % n_dev;
    }
    int d = 0;
    if (cudaGetDevice(&d) != cudaSuccess) { (void)cudaGetLastError(); d = 0; }
    return d;
}

static recur_status_t cuda_setup(recur_cuda_ctx_t *c, const recur_backend_params_t *p) {
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        (void)cudaGetLastError();
        recur_log_err("cuda backend: no usable CUDA device (%s)",
                      e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
        return RECUR_E_CUDA;
    }
    c->device = pick_device(p->device, n_dev);
    snprintf(c->desc, sizeof c->desc, "device %d", c->device);
    if (c->device < 0 || c->device >= n_dev) {
        recur_log_err("cuda backend: device %d requested, %d present", c->device, n_dev);
        return RECUR_E_CUDA;
    }
    RCU_CHECK(cudaSetDevice(c->device));
    cudaDeviceProp prop;
    RCU_CHECK(cudaGetDeviceProperties(&prop, c->device));
    snprintf(c->desc, sizeof c->desc, "device %d: %s, sm_%d%d", c->device, prop.name, prop.major, prop.minor);
    c->sm_count = prop.multiProcessorCount;
    /* PDL needs sm_90; RECUR_PDL=0 turns it off (A/B runs, or to rule it out). */
    const char *pdl_env = getenv("RECUR_PDL");
    c->pdl = prop.major >= 9 && !(pdl_env && strcmp(pdl_env, "0") == 0);
    /* RECUR_GEMV_SPLIT=1|2|4 forces the decode GEMVs' split of long rows over warps
     * (recur_cuda_gemm.cu, gemv_row_split), for A/B runs; anything else: chosen by shape. */
    const char *split_env = getenv("RECUR_GEMV_SPLIT");
    const int split = split_env ? atoi(split_env) : 0;
    c->gemv_split = split == 1 || split == 2 || split == 4 ? split : 0;
    /* RECUR_GEMV_MAX_M=1..8: the most rows of x the decode GEMVs take (default
     * RECUR_QUANT_GEMV_MAX_M, 2), the GEMM paths above it; for A/B runs and the GEMV
     * kernels' own tests only: quantized weights then keep fp32 activations for more (or
     * fewer) rows than recur_backend.h says, and than the CPU backend does */
    const char *gm_env = getenv("RECUR_GEMV_MAX_M");
    const int gm = gm_env ? atoi(gm_env) : 0;
    c->gemv_max_m = gm >= 1 && gm <= RECUR_CUDA_GEMV_MAX_M ? gm : RECUR_QUANT_GEMV_MAX_M;
    /* RECUR_NORM_SHIFT=n: the fused layer norm and token shift up to n rows (0: never),
     * for A/B runs; unset: RECUR_CUDA_NORM_SHIFT_MAX_M */
    const char *ns_env = getenv("RECUR_NORM_SHIFT");
    c->norm_shift_max_m = ns_env ? atoi(ns_env) : RECUR_CUDA_NORM_SHIFT_MAX_M;
    /* RECUR_MLSTM_HEAD_OUT=n: xLSTM's head norm inside the mLSTM's launches up to n rows
     * (0: never), for A/B runs; unset: RECUR_CUDA_MLSTM_HEAD_OUT_MAX_M */
    const char *mh_env = getenv("RECUR_MLSTM_HEAD_OUT");
    c->mlstm_head_out_max_m = mh_env ? atoi(mh_env) : RECUR_CUDA_MLSTM_HEAD_OUT_MAX_M;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    if (prop.major < 8) {
        /* bf16 arithmetic and the cp/ld paths used here need sm_80+; we build for sm_90. */
        recur_log_err("cuda backend: %s is older than sm_80", c->desc);
        return RECUR_E_CUDA;
    }
    RCU_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    RCU_CUBLAS(cublasCreate(&c->cublas));
    RCU_CUBLAS(cublasSetStream(c->cublas, c->stream));
    /* Plain fp32 GEMMs must stay fp32 (no TF32): the F32 weight path is the exact one. */
    RCU_CUBLAS(cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH));
    c->cublas_ws_bytes = RECUR_CUDA_CUBLAS_WS_BYTES;
    RCU_CHECK(cudaMalloc(&c->cublas_ws, c->cublas_ws_bytes));
    RCU_CUBLAS(cublasSetWorkspace(c->cublas, c->cublas_ws, c->cublas_ws_bytes));
    recur_status_t st = recur_cuda_quant_init(c);
    if (st != RECUR_OK) return st;
    return recur_cuda_mlstm_init(c);
}

extern "C" recur_status_t recur_backend_cuda_init(const recur_backend_params_t *p, recur_backend_t **out) {
    *out = NULL;
    recur_backend_params_t params = p ? *p : recur_backend_default_params();
    if (params.weight_dtype != RECUR_DTYPE_BF16 && params.weight_dtype != RECUR_DTYPE_F32 &&
        !recur_dtype_is_quant(params.weight_dtype)) {
        recur_log_err("cuda backend: weight dtype %s is not supported (f32, bf16, int8 or fp8)",
                      recur_dtype_name(params.weight_dtype));
        return RECUR_E_UNSUPPORTED;
    }
    recur_backend_t *b = (recur_backend_t *)calloc(1, sizeof *b);
    recur_cuda_ctx_t *c = (recur_cuda_ctx_t *)calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return RECUR_E_NOMEM;
    }
    b->ctx = c;
    c->weight_dtype = params.weight_dtype;
    recur_status_t st = cuda_setup(c, &params);
    if (st != RECUR_OK) {
        cuda_free(b);
        return st;
    }
    b->iface = recur_backend_iface_t{};
    b->iface.name = cuda_name;
    b->iface.alloc = cuda_alloc;
    b->iface.buf_free = cuda_buf_free;
    b->iface.upload = cuda_upload;
    b->iface.download = cuda_download;
    b->iface.copy = cuda_copy;
    b->iface.memzero = cuda_memzero;
    b->iface.copy_2d = cuda_copy_2d;
    b->iface.synchronize = cuda_synchronize;
    b->iface.weight_upload = cuda_weight_upload;
    b->iface.weight_free = cuda_weight_free;
    b->iface.weight_random = cuda_weight_random;
    b->iface.mem_info = cuda_mem_info;
    b->iface.embed = cuda_embed;
    b->iface.layernorm = cuda_layernorm;
    b->iface.matmul = recur_cuda_matmul;
    b->iface.matmul_many = recur_cuda_matmul_many;
    b->iface.act = cuda_act;
    b->iface.rmsnorm = cuda_rmsnorm;
    b->iface.silu_mul = cuda_silu_mul;
    b->iface.softcap = cuda_softcap;
    b->iface.gather_rows = cuda_gather_rows;
    b->iface.token_shift_mix = cuda_token_shift_mix;
    b->iface.layernorm_shift_mix = cuda_layernorm_shift_mix;
    b->iface.rwkv7_prep = recur_cuda_rwkv7_prep;
    b->iface.rwkv7_wkv = recur_cuda_rwkv7_wkv;
    b->iface.rwkv7_out = recur_cuda_rwkv7_out;
    b->iface.rwkv7_step = recur_cuda_rwkv7_step;
    b->iface.mlstm = recur_cuda_mlstm;
    b->iface.xlstm_head_out = recur_cuda_xlstm_head_out;
    b->iface.mlstm_head_out = recur_cuda_mlstm_head_out;
    b->iface.sample = recur_cuda_sample;
    b->iface.graph_begin = cuda_graph_begin;
    b->iface.graph_end = cuda_graph_end;
    b->iface.graph_launch = cuda_graph_launch;
    b->iface.graph_free = cuda_graph_free;
    b->iface.host_alloc = cuda_host_alloc;
    b->iface.host_free = cuda_host_free;
    b->iface.upload_async = cuda_upload_async;
    b->iface.native_stream = cuda_native_stream;
    b->iface.free = cuda_free;
    recur_log_info("cuda backend: %s, %d SMs, weights %s%s", c->desc, c->sm_count, recur_dtype_name(c->weight_dtype),
                   c->pdl ? ", programmatic dependent launch" : "");
    *out = b;
    return RECUR_OK;
}
