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

/* The most rows the decode GEMV kernels take (one pass over W; recur_cuda_gemm.cu). By
 * default they serve only RECUR_QUANT_GEMV_MAX_M rows (2): above that the GEMM paths were
 * faster for every weight format; RECUR_GEMV_MAX_M up to this many is an A/B switch
 * (recur_backend_cuda.cu). */
#define RECUR_CUDA_GEMV_MAX_M 8

/* The most rows the fused layer norm and token shift (layernorm_shift_mix) takes; more
 * rows run as the two kernels (recur_backend_cuda.cu says why). RWKV-7 7.2B, H200, fused
 * against apart: +3.6% (int8) and +0.5% (bf16) at batch 1, +0.6-1.1% at 16 and 32. */
#define RECUR_CUDA_NORM_SHIFT_MAX_M 32

/* The most rows (all single-token sequences) whose xLSTM head norm runs inside the mLSTM's
 * n/m kernel (recur_cuda_mlstm_head_out). xLSTM 7B, H200, against its own launch: +1.1%
 * (bf16) to +1.5% (int8) at batch 1, +0.9% at 8, even at 2, -0.8 to -2.7% at 64 and 256. */
#define RECUR_CUDA_MLSTM_HEAD_OUT_MAX_M 8

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
    recur_dtype_t  weight_dtype;  /* the weight mode chosen at init (F32, BF16, I8, F8E4M3) */
    /* CUDA graphs (graph_begin/graph_end/...). A graph holds the device pointers it was
     * recorded with, the scratch buffers' included, so while any graph exists a grown
     * scratch buffer (recur_cuda_scratch_reserve) does not free the old one but parks it
     * here until the last graph is freed. */
    int            pdl;           /* launch the small ops and GEMVs with programmatic dependent launch (sm_90+) */
    int            gemv_split;    /* RECUR_GEMV_SPLIT: warps per row group of the decode GEMVs forced (0: by shape) */
    int32_t        gemv_max_m;    /* the most rows of x the decode GEMVs take (RECUR_QUANT_GEMV_MAX_M; RECUR_GEMV_MAX_M) */
    int32_t        norm_shift_max_m; /* the most rows the fused layernorm_shift_mix takes (RECUR_NORM_SHIFT) */
    int32_t        mlstm_head_out_max_m; /* the most rows mlstm_head_out fuses (RECUR_MLSTM_HEAD_OUT) */
    int            capturing;     /* between graph_begin and graph_end: nothing may sync or allocate */
    int32_t        n_graphs;      /* executable graphs alive (graph_end minus graph_free) */
    void         **retired;
    int32_t        n_retired, cap_retired;
    /* Scratch of the GEMMs with quantized weights at more than 8 rows (recur_cuda_quant.cu),
     * grown like xbf and bounded (a block of rows of W at a time): */
    void          *q_w;           /* a block of W's codes widened to bf16 (exact)           */
    size_t         q_w_bytes;
    void          *q_y;           /* the block's fp32 product before the scales             */
    size_t         q_y_bytes;
    void          *q_x;           /* e4m3 activations (when cuBLASLt runs), then their row scales */
    size_t         q_x_bytes;
    /* The fused int8 GEMM (codes widened in registers, recur_cuda_quant.cu) up to qtc_max_m
     * rows (RECUR_QGEMM_TC_MAX_M; 0: never): its split-K partial sums and one arrival
     * counter per output tile, zero between calls (the last block of a tile resets it). */
    int32_t        qtc_max_m;
    int            qtc_wgmma;     /* it runs on wgmma (sm_90a build, sm_90 device, RECUR_QGEMM_WGMMA != 0) */
    void          *q_part;
    size_t         q_part_bytes;
    void          *q_cnt;
    size_t         q_cnt_bytes;
    /* cuBLASLt, for the FP8 tensor-core GEMM: a handle, and the descriptors and algorithm
     * of each shape seen (heuristics are asked once per shape). lt_off: never use it
     * (RECUR_FP8_CUBLASLT=0, or it failed once): the bf16 path computes the same. */
    cublasLtHandle_t lt;
    int              lt_off;
    struct recur_cuda_lt_plan *lt_plans;
    int32_t          n_lt_plans, next_lt_plan;
    /* Scratch of the tensor-core mLSTM prefill (recur_cuda_mlstm_tc.cu), grown like xbf
     * (stream-ordered: the old one is released behind the kernels that use it) and never
     * shrunk, so after the longest prefill a server has seen, prefill allocates nothing. Only
     * prefill uses it, and prefill is never recorded in a graph. */
    void          *mt_buf;
    size_t         mt_bytes;
    /* The sample op's per-row histograms for small batches (recur_cuda_sample.cu), one fixed
     * size, allocated at the first such call outside a graph recording. */
    void          *sample_front;
    size_t         sample_front_bytes;
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

/* Programmatic dependent launch (PDL, sm_90+). A decode step is ~1000 short kernels, and
 * between two of them the GPU idles for the next one's launch and ramp-up. Kernels launched
 * with recur_cuda_launch (the row-wise ops, token shift and the GEMV) may start while the
 * kernel before them is still running: each such kernel
 *   - calls recur_pdl_wait() in every block before it reads anything the kernel ahead of
 *     it may write, or writes anything (it returns once that kernel has completed and its
 *     memory is visible; every block must reach it, even one with no work, so that
 *     completion stays transitive down the stream). Before it, a kernel may read what no
 *     kernel writes during a forward pass (weights, norm and mix vectors: written at load
 *     time by plain launches and a stream synchronisation) and what only a kernel at least
 *     two places ahead writes: when a kernel starts, the one ahead of it has passed its
 *     own wait in every block, so every kernel before that one has completed. The decode
 *     kernels use this for their weights, the batch's slot tables (copied in before the
 *     step's first kernel) and the recurrent state (last written a token earlier);
 *   - calls recur_pdl_launch_dependents() once it has waited, letting the next kernel be
 *     scheduled early (it then sits waiting, prefetching its own weights into L2).
 * Kernels launched the plain way (other files, cuBLAS) wait for full completion as ever.
 * Both calls are no-ops in a kernel launched without the attribute. */
#ifdef __CUDACC__
static __device__ __forceinline__ void recur_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
static __device__ __forceinline__ void recur_pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* kernel<<<grid, block, smem, c->stream>>>(args...), with PDL allowed when c->pdl. */
template <typename... KArgs, typename... Args>
static inline cudaError_t recur_cuda_launch(const recur_cuda_ctx_t *c, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                                            size_t smem, Args &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = c->pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<Args &&>(args)...);
}
#endif

/* Like RCU_LAUNCHED, for the status a launch call returns. */
#define RCU_LAUNCH(what, expr) do { cudaError_t e_ = (expr); if (e_ == cudaSuccess) e_ = cudaGetLastError(); \
    if (e_ != cudaSuccess) return recur_cuda_fail(c, "CUDA", "launch of " what, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)

/* ceil(a / b) for positive sizes */
static inline int64_t recur_cuda_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- the ops each file provides (all enqueue on c->stream) */

/* recur_cuda_gemm.cu */
void recur_cuda_release_retired(recur_cuda_ctx_t *c); /* frees the parked scratch buffers (no graph left) */
/* Makes *buf hold at least `need` bytes of device memory (*bytes: its size). Grows only past
 * the largest size asked so far (logged with `what`), waiting for queued work first and
 * parking the old buffer while graphs exist; RECUR_E_CUDA while a graph is being recorded
 * (the same ops must run eagerly once first). */
recur_status_t recur_cuda_scratch_reserve(recur_cuda_ctx_t *c, void **buf, size_t *bytes, size_t need,
                                          const char *what);
/* c->xbf grown to hold n bf16 elements (recur_cuda_scratch_reserve) */
recur_status_t recur_cuda_xbf_reserve(recur_cuda_ctx_t *c, size_t n);
/* c->xbf[0..n) = bf16(x[0..n)) (round to nearest even), with c->xbf grown to n first. */
recur_status_t recur_cuda_round_x_bf16(recur_cuda_ctx_t *c, const float *x, size_t n);
recur_status_t recur_cuda_matmul(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                 int accumulate);
recur_status_t recur_cuda_matmul_many(recur_backend_t *b, int32_t M, int32_t n, const recur_matmul_op_t *ops);

/* recur_cuda_quant.cu: the one-byte weight formats (recur_quant.h) */
recur_status_t recur_cuda_quant_init(recur_cuda_ctx_t *c);  /* once, from backend init */
void recur_cuda_quant_free(recur_cuda_ctx_t *c);
/* w (rows, cols, dtype I8 / F8E4M3 set by the caller) from host fp32, or from the virtual
 * generator (recur_backend.h weight_random); allocates w->data and sets w->scale */
recur_status_t recur_cuda_weight_quantize(recur_cuda_ctx_t *c, const float *host, recur_weight_t *w);
recur_status_t recur_cuda_weight_random_quant(recur_cuda_ctx_t *c, uint64_t seed, float lo, float hi, int64_t row0,
                                              int64_t col0, int64_t full_cols, recur_weight_t *w);
/* matmul with quantized W at M > RECUR_QUANT_GEMV_MAX_M rows (recur_backend.h) */
recur_status_t recur_cuda_qgemm(recur_cuda_ctx_t *c, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                int accumulate);

/* recur_cuda_rwkv7.cu */
recur_status_t recur_cuda_rwkv7_prep(recur_backend_t *b, const recur_rwkv7_prep_args_t *a);
recur_status_t recur_cuda_rwkv7_wkv(recur_backend_t *b, const recur_rwkv7_wkv_args_t *a);
recur_status_t recur_cuda_rwkv7_out(recur_backend_t *b, const recur_rwkv7_out_args_t *a);
recur_status_t recur_cuda_rwkv7_step(recur_backend_t *b, const recur_rwkv7_prep_args_t *p,
                                     const recur_rwkv7_wkv_args_t *w, const recur_rwkv7_out_args_t *o);

/* recur_cuda_mlstm.cu */
recur_status_t recur_cuda_mlstm_init(recur_cuda_ctx_t *c); /* once, from backend init */
recur_status_t recur_cuda_mlstm(recur_backend_t *b, const recur_mlstm_args_t *a);
recur_status_t recur_cuda_xlstm_head_out(recur_backend_t *b, const float *h, const float *o_pre, const float *w,
                                         int32_t M, int32_t n_head, int32_t dv, float eps, float *out);
recur_status_t recur_cuda_mlstm_head_out(recur_backend_t *b, const recur_mlstm_args_t *a, const float *o_pre,
                                         const float *w, float eps, float *out);

/* recur_cuda_sample.cu */
recur_status_t recur_cuda_sample(recur_backend_t *b, float *logits, int32_t n, int32_t V, int32_t n_valid,
                                 const recur_sample_row_t *params, const recur_sample_extras_t *extras,
                                 int32_t *tokens);

/* ---- device helpers shared by the kernels (header-inline so every .cu has them) */
#ifdef __CUDACC__
/* D += A B on the tensor cores, m16n8k16, bf16 in, fp32 accumulate (A row-major 16 x 16,
 * B 16 x 8; fragments as the PTX ISA's "Matrix fragments for mma.m16n8k16"). Volatile, so
 * loads issued before it in the source stay before it. */
static __device__ __forceinline__ void recur_mma_bf16_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                            uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* 16 bytes read once (weights streamed past the caches: ld.global.cs), as volatile asm so
 * that the compiler keeps it where the source puts it relative to the MMAs. */
static __device__ __forceinline__ uint4 recur_ld_cs_u4(const void *p) {
    uint4 v;
    asm volatile("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

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
/* act(v) for recur_act_t kind (RECUR_ACT_NONE: v): the act op's arithmetic, which the
 * fused products' epilogues share so that they give the same bits. */
static __device__ __forceinline__ float recur_act_value(int kind, float v) {
    if (kind == RECUR_ACT_TANH) return tanhf(v);
    if (kind == RECUR_ACT_SIGMOID) return recur_sigmoidf(v);
    if (kind == RECUR_ACT_RELU_SQ) {
        v = v > 0.f ? v : 0.f;
        return v * v;
    }
    return v;
}

/* The largest of v over the block (blockDim.x a multiple of 32, at most 1024; NaN ignored as
 * fmaxf does); every thread gets it. `red` is __shared__ float[32]. */
static __device__ __forceinline__ float recur_block_max(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
    return t;
}

/* recur_virtual_value (worker/recur_model_files.h), element for element: keep the two in
 * step. The float arithmetic is written with _rn intrinsics so nvcc cannot contract it
 * into an FMA, which would round differently from the host's separate multiply and add. */
static __device__ __forceinline__ float recur_cuda_virtual_value(uint64_t seed, uint64_t i, float lo, float hi) {
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    float u = (float)((double)(z >> 40) * 0x1.0p-24);
    return __fadd_rn(lo, __fmul_rn(__fsub_rn(hi, lo), u));
}

/* Matrix state elements (recur_state_ref_t.mat_dtype): the kernels are templates on the
 * element type T (float or __nv_bfloat16), compute in fp32, and store through
 * recur_st_store, which rounds to nearest even as recur_f32_to_bf16 does (NaN aside). */
static __device__ __forceinline__ float recur_st_load(float x) { return x; }
static __device__ __forceinline__ float recur_st_load(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> static __device__ __forceinline__ T recur_st_store(float x);
template <> __device__ __forceinline__ float recur_st_store<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 recur_st_store<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}
/* x as it reads back after a store as T (the identity for float) */
template <typename T> static __device__ __forceinline__ float recur_st_round(float x) {
    return recur_st_load(recur_st_store<T>(x));
}

/* Eight bf16 (16 bytes: a vector load, first element in the low half of u.x) -> fp32.
 * bf16 -> fp32 is a 16-bit shift. */
static __device__ __forceinline__ void recur_bf16x8_widen(const uint4 &u, float *f /* [8] */) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
/* Eight consecutive bf16 state elements (16 bytes, aligned) <-> fp32: the vector loads of
 * the bandwidth-bound step kernels. */
static __device__ __forceinline__ void recur_bf16x8_load(const __nv_bfloat16 *p, float (&f)[8]) {
    recur_bf16x8_widen(*(const uint4 *)p, f);
}
static __device__ __forceinline__ void recur_bf16x8_store(__nv_bfloat16 *p, const float (&f)[8]) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        w[i] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i])) |
               (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i + 1])) << 16;
    }
    *(uint4 *)p = make_uint4(w[0], w[1], w[2], w[3]);
}
#endif

#endif
