/* recur_cuda_quant.cu: the one-byte weight formats of recur_quant.h on the CUDA backend:
 * quantizing at upload (and generating quantized random weights for benchmarks), and the
 * matrix product at more than RECUR_QUANT_GEMV_MAX_M rows. (Up to that many rows the GEMV
 * kernels of recur_cuda_gemm.cu read the codes directly.)
 *
 * Quantizing: one block per row: the row's largest finite |w|, then the codes, with the
 * same IEEE operations as recur_quant_row (__fdiv_rn, round-half-even, and CUDA's
 * saturating e4m3 conversion), so the bytes equal the CPU backend's (test_quant_cuda).
 *
 * The product at M > RECUR_QUANT_GEMV_MAX_M (2) rows, y = x W^T:
 *   int8 up to RECUR_CUDA_QTC_WGMMA_MAX_M (384) rows on wgmma, RECUR_CUDA_QTC_MAX_M (128)
 *         on mma.sync (the batches of a decode step): one kernel that widens the codes in
 *         registers and feeds them to the tensor cores: wgmma in a build for sm_90a on an
 *         sm_90 GPU (qgemm_i8_wgmma_kernel), mma.sync otherwise (qgemm_i8_fused_kernel);
 * and otherwise with W's codes in blocks of rows (so that the scratch stays bounded, ~64
 * MiB at most):
 *   int8: x rounded to bf16; each block of codes widened to bf16 (exact: |code| <= 127),
 *         cuBLAS bf16 GEMM with fp32 accumulation into a block of fp32, then an epilogue
 *         multiplies each column by its row scale and writes (or adds) it into y;
 *   fp8:  x quantized per row to e4m3 (scale sx[m] = max |x[m]| / 448, the activations
 *         "on the fly"), the FP8 tensor-core GEMM of cuBLASLt (e4m3 x e4m3, fp32
 *         accumulation and output, no fast accumulation), then the epilogue multiplies by
 *         the row scale and by sx[m]. cuBLASLt reads the codes themselves, so only the fp32
 *         output block bounds its blocks: at decode batches one GEMM takes all of W (in
 *         blocks of 16 MiB of codes, 4096 x 4096 RWKV-7 FFN value took 73 us at 16 rows,
 *         against 26 us whole, H200). Where cuBLASLt has no algorithm for a shape (or fails,
 *         or RECUR_FP8_CUBLASLT=0), the same product runs through the bf16 path: e4m3 values
 *         are exact in bf16, so only the order of the fp32 sums differs.
 * A row's result does not depend on which other rows share the batch, except through the
 * GEMM algorithm cuBLAS picks for the batch size (as with bf16 weights). */
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "recur_cuda_internal.h"
#include "recur_cuda_prefill.h" /* the cp.async helpers */
#include "recur_quant.h"

/* Host staging of weight_upload: floats per chunk (64 MiB), whole rows at a time. */
#define QUANT_STAGE_FLOATS ((size_t)16 << 20)
/* Bounds on the scratch of the M > 8 product (bf16 elements of a block of W; fp32 outputs
 * of a block), 32 MiB each. */
#define QGEMM_W_ELEMS ((size_t)16 << 20)
#define QGEMM_Y_FLOATS ((size_t)8 << 20)
#define QUANT_THREADS 256
#define LT_PLANS 64
/* The most rows of x the fused int8 product takes by default (above: widen + cuBLAS, whose
 * wgmma kernels win once the product is compute-bound); set from measurements, see
 * docs/benchmarks.md. The wgmma form was faster than widen + cuBLAS up to 384 rows (H200:
 * RWKV-7 int8 decode at batch 192 7,815 -> 9,567 tok/s, 384 11,641 -> 12,099) and even at
 * 512 (13,435 -> 13,714; xLSTM 6,824 -> 6,766); the mma.sync form keeps session 17's 128. */
#define RECUR_CUDA_QTC_MAX_M 128
#define RECUR_CUDA_QTC_WGMMA_MAX_M 384

/* One cuBLASLt FP8 GEMM shape (m = rows of W in the block, n = M, k = K) and what the
 * heuristic said for it (ok = 0: no algorithm; use the bf16 path). */
struct recur_cuda_lt_plan {
    int64_t m, n, k;
    int ok;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
};

static void lt_plan_destroy(recur_cuda_lt_plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    memset(p, 0, sizeof *p);
}

static recur_status_t qgemm_i8_fused_init(recur_cuda_ctx_t *c);

recur_status_t recur_cuda_quant_init(recur_cuda_ctx_t *c) {
    const char *env = getenv("RECUR_FP8_CUBLASLT");
    c->lt_off = env && strcmp(env, "0") == 0;
    /* the wgmma form needs sm_90a code (a build for 90a) and an sm_90 device;
     * RECUR_QGEMM_WGMMA=0 keeps the mma.sync form (A/B runs) */
    int major = 0, minor = 0;
    RCU_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device));
    RCU_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, c->device));
    const char *wg = getenv("RECUR_QGEMM_WGMMA");
#ifdef RECUR_CUDA_SM90A
    c->qtc_wgmma = major == 9 && minor == 0 && !(wg && strcmp(wg, "0") == 0);
#else
    c->qtc_wgmma = 0;
    (void)wg;
#endif
    /* RECUR_QGEMM_TC_MAX_M: the most rows of x the fused int8 product takes (0: none; A/B runs) */
    const char *tc = getenv("RECUR_QGEMM_TC_MAX_M");
    c->qtc_max_m = tc && *tc ? atoi(tc) : c->qtc_wgmma ? RECUR_CUDA_QTC_WGMMA_MAX_M : RECUR_CUDA_QTC_MAX_M;
    if (c->qtc_max_m > RECUR_QUANT_GEMV_MAX_M) {
        recur_status_t st = qgemm_i8_fused_init(c);
        if (st != RECUR_OK) return st;
    }
    c->lt_plans = (recur_cuda_lt_plan *)calloc(LT_PLANS, sizeof(recur_cuda_lt_plan));
    if (!c->lt_plans) return RECUR_E_NOMEM;
    if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
        /* not fatal: the bf16 path computes the same products */
        recur_log_warn("cuda: cublasLtCreate failed; fp8 GEMMs above %d rows will use the bf16 tensor cores",
                       RECUR_QUANT_GEMV_MAX_M);
        c->lt = NULL;
        c->lt_off = 1;
    }
    return RECUR_OK;
}

void recur_cuda_quant_free(recur_cuda_ctx_t *c) {
    if (c->lt_plans) {
        for (int32_t i = 0; i < c->n_lt_plans; i++) lt_plan_destroy(&c->lt_plans[i]);
        free(c->lt_plans);
        c->lt_plans = NULL;
    }
    if (c->lt) cublasLtDestroy(c->lt);
    c->lt = NULL;
    cudaFree(c->q_w);
    cudaFree(c->q_y);
    cudaFree(c->q_x);
    cudaFree(c->q_part);
    cudaFree(c->q_cnt);
    c->q_w = c->q_y = c->q_x = c->q_part = c->q_cnt = NULL;
}

/* ------------------------------------------------------------------------ quantizing */

/* Where a row's values come from: a staged fp32 buffer, or the virtual generator. */
struct src_buf {
    const float *p;
    int64_t cols;
    __device__ float operator()(int64_t r, int64_t col) const { return p[r * cols + col]; }
};
struct src_virtual {
    uint64_t seed;
    float lo, hi;
    int64_t row0, col0, full_cols;
    __device__ float operator()(int64_t r, int64_t col) const {
        return recur_cuda_virtual_value(seed, (uint64_t)((row0 + r) * full_cols + col0 + col), lo, hi);
    }
};

/* recur_quant_row for row blockIdx.x (+ r_base) of src, on the device. */
template <typename Src>
static __global__ void __launch_bounds__(QUANT_THREADS)
quant_rows_kernel(Src src, int64_t r_base, int64_t cols, int is_i8, uint8_t *__restrict__ codes,
                  float *__restrict__ scale) {
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    float amax = 0.f;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
        const float a = fabsf(src(r, k));
        if (a <= FLT_MAX) amax = fmaxf(amax, a); /* finite only */
    }
    amax = recur_block_max(amax, red);
    float s = __fdiv_rn(amax, is_i8 ? RECUR_QUANT_I8_MAX : RECUR_QUANT_F8_MAX);
    if (!(s > 0.f)) s = 1.f;
    if (threadIdx.x == 0) scale[r_base + r] = s;
    uint8_t *q = codes + (size_t)(r_base + r) * (size_t)cols;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
        float t = __fdiv_rn(src(r, k), s);
        uint8_t code;
        if (t != t) {
            code = 0;
        } else if (is_i8) {
            t = fminf(fmaxf(t, -RECUR_QUANT_I8_MAX), RECUR_QUANT_I8_MAX);
            code = (uint8_t)(int8_t)__float2int_rn(t);
        } else {
            code = (uint8_t)__nv_cvt_float_to_fp8(t, __NV_SATFINITE, __NV_E4M3);
        }
        q[k] = code;
    }
}

/* w->data: the codes and scales in one allocation (recur_quant_buffer_bytes). */
static recur_status_t quant_alloc(recur_cuda_ctx_t *c, recur_weight_t *w) {
    const size_t nb = recur_quant_buffer_bytes(w->rows, w->cols);
    RCU_CHECK(cudaMalloc(&w->data, nb ? nb : 1));
    w->scale = (float *)((char *)w->data + recur_quant_codes_bytes(w->rows, w->cols));
    return RECUR_OK;
}

static void quant_drop(recur_weight_t *w) {
    cudaFree(w->data);
    w->data = NULL;
    w->scale = NULL;
}

recur_status_t recur_cuda_weight_quantize(recur_cuda_ctx_t *c, const float *host, recur_weight_t *w) {
    RECUR_ASSERT(recur_dtype_is_quant(w->dtype));
    const int64_t rows = w->rows, cols = w->cols;
    recur_status_t st = quant_alloc(c, w);
    if (st != RECUR_OK) return st;
    if (rows == 0 || cols == 0) return RECUR_OK;
    /* whole rows through a staging buffer, quantized on the device (a 7B checkpoint has
     * ~7e9 values: too many for one host core at load) */
    int64_t stage_rows = (int64_t)(QUANT_STAGE_FLOATS / (size_t)cols);
    if (stage_rows < 1) stage_rows = 1;
    if (stage_rows > rows) stage_rows = rows;
    float *stage = NULL;
    cudaError_t e = cudaMalloc(&stage, (size_t)stage_rows * (size_t)cols * sizeof(float));
    if (e != cudaSuccess) {
        quant_drop(w);
        return recur_cuda_fail(c, "CUDA", "cudaMalloc(staging)", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    const int is_i8 = w->dtype == RECUR_DTYPE_I8;
    for (int64_t r0 = 0; r0 < rows && st == RECUR_OK; r0 += stage_rows) {
        const int64_t nr = rows - r0 < stage_rows ? rows - r0 : stage_rows;
        /* stream order: the next chunk's copy into `stage` waits for this kernel */
        e = cudaMemcpyAsync(stage, host + (size_t)r0 * (size_t)cols, (size_t)nr * (size_t)cols * sizeof(float),
                            cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) {
            quant_rows_kernel<<<(unsigned)nr, QUANT_THREADS, 0, c->stream>>>(src_buf{stage, cols}, r0, cols, is_i8,
                                                                             (uint8_t *)w->data, w->scale);
            e = cudaGetLastError();
        }
        if (e != cudaSuccess)
            st = recur_cuda_fail(c, "CUDA", "weight_upload quantize", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess && st == RECUR_OK)
        st = recur_cuda_fail(c, "CUDA", "cudaStreamSynchronize", cudaGetErrorString(e), __FILE__, __LINE__);
    cudaFree(stage);
    if (st != RECUR_OK) quant_drop(w);
    return st;
}

recur_status_t recur_cuda_weight_random_quant(recur_cuda_ctx_t *c, uint64_t seed, float lo, float hi, int64_t row0,
                                              int64_t col0, int64_t full_cols, recur_weight_t *w) {
    RECUR_ASSERT(recur_dtype_is_quant(w->dtype));
    recur_status_t st = quant_alloc(c, w);
    if (st != RECUR_OK) return st;
    if (w->rows == 0 || w->cols == 0) return RECUR_OK;
    const src_virtual src = {seed, lo, hi, row0, col0, full_cols};
    const int is_i8 = w->dtype == RECUR_DTYPE_I8;
    /* a grid dimension holds 2^31 - 1 blocks: far more rows than any matrix has */
    RECUR_ASSERT(w->rows <= INT32_MAX);
    quant_rows_kernel<<<(unsigned)w->rows, QUANT_THREADS, 0, c->stream>>>(src, 0, w->cols, is_i8, (uint8_t *)w->data,
                                                                          w->scale);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        quant_drop(w);
        return recur_cuda_fail(c, "CUDA", "weight_random quantize", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    return RECUR_OK;
}

/* ------------------------------------------------------------------------ the M > 8 product */

/* e4m3 code -> its value, exactly (through binary16) */
static __device__ __forceinline__ float e4m3_value(uint8_t c) {
    return __half2float(__half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)c, __NV_E4M3)));
}

/* Row blockIdx.x of x [M][K]: sx[m] = recur_quant_act_scale(x[m]); its codes, as bytes
 * (out8) or as their bf16 values (outb, for the bf16 tensor cores). */
static __global__ void __launch_bounds__(QUANT_THREADS)
act_quant_kernel(const float *__restrict__ x, int K, uint8_t *__restrict__ out8, __nv_bfloat16 *__restrict__ outb,
                 float *__restrict__ sx) {
    __shared__ float red[32];
    const size_t m = blockIdx.x;
    const float *xr = x + m * (size_t)K;
    float amax = 0.f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) amax = fmaxf(amax, fabsf(xr[k])); /* NaN skipped, Inf kept */
    amax = recur_block_max(amax, red);
    float s = __fdiv_rn(amax, RECUR_QUANT_F8_MAX);
    if (!(s > 0.f)) s = 1.f;
    if (threadIdx.x == 0) sx[m] = s;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const uint8_t code = (uint8_t)__nv_cvt_float_to_fp8(__fdiv_rn(xr[k], s), __NV_SATFINITE, __NV_E4M3);
        if (out8) out8[m * (size_t)K + k] = code;
        else outb[m * (size_t)K + k] = __float2bfloat16_rn(e4m3_value(code)); /* exact */
    }
}

/* The same for the e4m3 bytes only, with the row read once into registers as R float4s a
 * thread (rows of up to 4096 R floats, K a multiple of 4, 16-byte aligned rows): one block a
 * row of a batch of a few rows takes a few microseconds instead of two dependent passes
 * over a long row (act_quant_kernel: ~25 us at 16 rows of 16384, H200). The same codes and
 * sx as act_quant_kernel (max and rounding are per element). */
#define AQ_THREADS 1024
template <int R>
static __global__ void __launch_bounds__(AQ_THREADS)
act_quant_rows_kernel(const float *__restrict__ x, int K, uint8_t *__restrict__ out8, float *__restrict__ sx) {
    __shared__ float red[32];
    const size_t m = blockIdx.x;
    const float4 *xr = (const float4 *)(x + m * (size_t)K);
    const int K4 = K / 4;
    float4 v[R];
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < R; j++) {
        const int i = threadIdx.x + j * AQ_THREADS;
        v[j] = i < K4 ? __ldg(xr + i) : make_float4(0.f, 0.f, 0.f, 0.f);
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v[j].x), fabsf(v[j].y)), fmaxf(fabsf(v[j].z), fabsf(v[j].w))));
    }
    amax = recur_block_max(amax, red); /* NaN skipped, Inf kept, as in act_quant_kernel */
    float s = __fdiv_rn(amax, RECUR_QUANT_F8_MAX);
    if (!(s > 0.f)) s = 1.f;
    if (threadIdx.x == 0) sx[m] = s;
    uint32_t *o = (uint32_t *)(out8 + m * (size_t)K);
#pragma unroll
    for (int j = 0; j < R; j++) {
        const int i = threadIdx.x + j * AQ_THREADS;
        if (i >= K4) break;
        const float e[4] = {v[j].x, v[j].y, v[j].z, v[j].w};
        uint32_t w = 0;
#pragma unroll
        for (int b = 0; b < 4; b++)
            w |= (uint32_t)(uint8_t)__nv_cvt_float_to_fp8(__fdiv_rn(e[b], s), __NV_SATFINITE, __NV_E4M3) << (8 * b);
        o[i] = w;
    }
}

/* n codes -> their values in bf16 (exact), 16 per thread and step when aligned. */
static __global__ void widen_codes_kernel(const uint8_t *__restrict__ q, size_t n, int is_i8,
                                          __nv_bfloat16 *__restrict__ out) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, t0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if ((n & 15u) == 0 && ((uintptr_t)q & 15u) == 0 && ((uintptr_t)out & 15u) == 0) {
        for (size_t i = t0; i < n / 16; i += stride) {
            const uint4 u = ((const uint4 *)q)[i];
            const uint32_t w[4] = {u.x, u.y, u.z, u.w};
            uint32_t o[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const uint32_t b0 = (w[j / 2] >> (16 * (j & 1))) & 0xffu, b1 = (w[j / 2] >> (16 * (j & 1) + 8)) & 0xffu;
                const float v0 = is_i8 ? (float)(int8_t)b0 : e4m3_value((uint8_t)b0);
                const float v1 = is_i8 ? (float)(int8_t)b1 : e4m3_value((uint8_t)b1);
                o[j] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v0)) |
                       (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v1)) << 16;
            }
            ((uint4 *)out)[2 * i] = make_uint4(o[0], o[1], o[2], o[3]);
            ((uint4 *)out)[2 * i + 1] = make_uint4(o[4], o[5], o[6], o[7]);
        }
        return;
    }
    for (size_t i = t0; i < n; i += stride)
        out[i] = __float2bfloat16_rn(is_i8 ? (float)(int8_t)q[i] : e4m3_value(q[i]));
}

/* y[m][j] (=|+=) ((p[m][j] * scale[j]) * sx[m]) for the block's nb columns; p is [M][nb],
 * y rows ldy apart; sx NULL: no activation scale. */
static __global__ void qgemm_epilogue_kernel(const float *__restrict__ p, int64_t M, int64_t nb,
                                             const float *__restrict__ scale, const float *__restrict__ sx, float *y,
                                             int64_t ldy, int accumulate) {
    const size_t n = (size_t)M * (size_t)nb;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t m = i / (size_t)nb, j = i % (size_t)nb;
        float v = __fmul_rn(p[i], scale[j]);
        if (sx) v = __fmul_rn(v, sx[m]);
        float *yp = y + m * (size_t)ldy + j;
        *yp = accumulate ? *yp + v : v;
    }
}

/* The same, 4 columns a thread: nb, ldy and the pointers' offsets multiples of 4 floats
 * (16 bytes). A row a block in y, column groups in x: no 64-bit division per element as in
 * the one above. fp8 16384 x 4096 at 1,024 rows took 166 instead of 181 us (H200), the same
 * bits (docs/benchmarks.md). */
static __global__ void qgemm_epilogue4_kernel(const float *__restrict__ p, int64_t M, int64_t nb,
                                              const float *__restrict__ scale, const float *__restrict__ sx, float *y,
                                              int64_t ldy, int accumulate) {
    const int64_t nb4 = nb / 4;
    for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
        const float s = sx ? sx[m] : 1.f;
        const float4 *pr = (const float4 *)(p + m * nb);
        float4 *yr = (float4 *)(y + m * ldy);
        for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < nb4; j += (int64_t)gridDim.x * blockDim.x) {
            const float4 a = pr[j], w = ((const float4 *)scale)[j];
            float4 v = make_float4(__fmul_rn(a.x, w.x), __fmul_rn(a.y, w.y), __fmul_rn(a.z, w.z), __fmul_rn(a.w, w.w));
            if (sx) v = make_float4(__fmul_rn(v.x, s), __fmul_rn(v.y, s), __fmul_rn(v.z, s), __fmul_rn(v.w, s));
            if (accumulate) {
                const float4 o = yr[j];
                v = make_float4(o.x + v.x, o.y + v.y, o.z + v.z, o.w + v.w);
            }
            yr[j] = v;
        }
    }
}

static unsigned grid_for(const recur_cuda_ctx_t *c, size_t n) {
    size_t want = (n + QUANT_THREADS - 1) / QUANT_THREADS, cap = (size_t)c->sm_count * 16;
    if (want < 1) want = 1;
    return (unsigned)(want < cap ? want : cap);
}

/* The cached plan for an FP8 GEMM of W block rows m, batch n, depth k; NULL if cuBLASLt is
 * off or has no algorithm for it. Heuristics run once per shape (host only; a shape first
 * meets this in the eager run that precedes any graph capture of it). */
static recur_cuda_lt_plan *lt_plan(recur_cuda_ctx_t *c, int64_t m, int64_t n, int64_t k,
                                   const recur_cuda_lt_plan *keep /* a plan the caller holds: not evicted */) {
    if (c->lt_off) return NULL;
    for (int32_t i = 0; i < c->n_lt_plans; i++) {
        recur_cuda_lt_plan *p = &c->lt_plans[i];
        if (p->m == m && p->n == n && p->k == k) return p->ok ? p : NULL;
    }
    recur_cuda_lt_plan *p;
    if (c->n_lt_plans < LT_PLANS) {
        p = &c->lt_plans[c->n_lt_plans++];
    } else { /* full: reuse slots round robin */
        p = &c->lt_plans[c->next_lt_plan];
        if (p == keep) {
            c->next_lt_plan = (c->next_lt_plan + 1) % LT_PLANS;
            p = &c->lt_plans[c->next_lt_plan];
        }
        c->next_lt_plan = (c->next_lt_plan + 1) % LT_PLANS;
        lt_plan_destroy(p);
    }
    memset(p, 0, sizeof *p);
    p->m = m, p->n = n, p->k = k;
    /* FP8 needs the "TN" form (A transposed), 16-byte aligned rows: W block [m][k] is A (k x m
     * column-major, op T), x [n][k] is B (k x n, op N), the product D is m x n (ld m), fp32 */
    if (k % 16 || m % 4) return NULL;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int8_t fast = 0;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    const size_t ws = c->cublas_ws_bytes;
    bool ok = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, (uint64_t)k, (uint64_t)m, k) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, (uint64_t)k, (uint64_t)n, k) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, (uint64_t)m, (uint64_t)n, m) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res, &nres) ==
                  CUBLAS_STATUS_SUCCESS &&
              nres > 0;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) {
        recur_log_info("cuda: no cuBLASLt FP8 algorithm for %lld x %lld x %lld; that shape uses the bf16 path",
                       (long long)m, (long long)n, (long long)k);
        lt_plan_destroy(p);
        p->m = m, p->n = n, p->k = k; /* remembered as unusable */
        return NULL;
    }
    p->algo = res.algo;
    p->ok = 1;
    return p;
}

/* ------------------------------------------- the fused int8 product (8 < M <= qtc_max_m) */

/* y = (x_bf16 . codes^T) * scale with the codes widened to bf16 in registers, on mma.sync
 * (m16n8k16, fp32 accumulate): the same function as the widen + cuBLAS path above (x
 * rounded to bf16, codes exact in bf16, fp32 sums, then the row scale), but the codes are
 * read once, as bytes, instead of written and read again as bf16 (3 more bytes a weight),
 * and it is one launch instead of three per block of rows. For the batches between the
 * GEMV's 8 rows and where the product becomes compute-bound, that is most of its time.
 *
 * A block is QTC_WARPS warps, 16 rows of W each (QTC_BN rows), against BM = 8 MT rows of x;
 * the grid is (M tiles, row tiles, splits of K). All warps of a block walk the same chunks
 * of 64 or 128 k, the block's codes and x for each staged in shared memory by cp.async,
 * several chunks ahead (qtc_shape). In each 64 k of a chunk, lane (g = lane / 4, t =
 * lane % 4) reads 16 codes at 16t of rows g and g + 8: in k-step s (0..3), its fragment
 * slots {2t, 2t+1, 2t+8, 2t+9} are physical k 16t + 4s + {0, 1, 2, 3} for A and B alike, a
 * permutation of the 64 k, which the product does not see. Splits of K write their partial sums; the
 * last block of a tile to arrive adds them in split order (deterministic) and writes y.
 * Rows of W past N and of x past M are clamped for loading and not written. A row's result
 * depends only on K's split, which depends only on the shape: not on the other rows. */
#define QTC_WARPS 8
#define QTC_THREADS (QTC_WARPS * 32)
#define QTC_BN (QTC_WARPS * 16)
#define QTC_KSUB 64           /* k of one pass of a warp over its rows: 16 codes a lane */
#define QTC_MIN_CHUNKS 4      /* chunks of K a split takes at least */
#define QTC_SMEM_BUDGET (110 * 1024) /* a block's pipeline: two blocks an SM */

/* A block's shape (template constants): MT tiles of 8 rows of x against QTC_BN rows of W;
 * chunks of KS * 64 k (one barrier and one stage of copies per chunk). Staged codes rows are
 * KC bytes; with KS = 2 the 16-byte columns of odd rows are swapped by halves (column q
 * stored at q ^ 4) so that the two rows a quarter-warp reads fall in different banks. x rows
 * are padded by 16 bytes (4 banks), as a lane's 16 bytes sit 32 bytes from its neighbour's. */
template <int MT, int KS> struct qtc_shape {
    static constexpr int BM = MT * 8, KC = QTC_KSUB * KS, XROW = KC + 8;
    static constexpr size_t stage_bytes = (size_t)QTC_BN * KC + (size_t)BM * XROW * 2;
    static constexpr int ST = QTC_SMEM_BUDGET / stage_bytes < 6 ? (int)(QTC_SMEM_BUDGET / stage_bytes) : 6;
    static constexpr size_t smem = ST * stage_bytes;
    static constexpr int XCOPIES = (BM * (KC / 8) + QTC_THREADS - 1) / QTC_THREADS; /* the last maybe partly */
    static_assert(ST >= 3, "a stage too large for the budget");
};

/* Codes 2h and 2h + 1 of the four in u (the word XOR 0x80808080, i.e. code + 128 as a byte)
 * as bf16x2, exactly: the byte in the mantissa of 2^23 is the float 2^23 + 128 + code, and
 * subtracting 2^23 + 128 leaves the code; an integer of magnitude <= 128 has nothing below
 * bf16's mantissa, so its float's upper half is its bf16. */
static __device__ __forceinline__ uint32_t qtc_codes_bf16x2(uint32_t u, int h) {
    const float f0 = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7540u + 2 * h)) - 8388736.0f;
    const float f1 = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7541u + 2 * h)) - 8388736.0f;
    return __byte_perm(__float_as_uint(f0), __float_as_uint(f1), 0x7632u);
}

/* The copies of a block's codes into a stage ([QTC_BN][KC] bytes), worked out once per
 * thread: copy j is row threadIdx.x / (KC / 16) + j * (rows a round), 16-byte column
 * threadIdx.x % (KC / 16), stored at column ^ 4 in odd rows when KS = 2 (qtc_shape). Rows
 * past N are clamped (loaded, never written). */
template <int KS> struct qtc_codes_copies {
    static constexpr int KC = QTC_KSUB * KS, WQ = KC / 16, N_COPIES = QTC_BN * WQ / QTC_THREADS;
    static_assert(N_COPIES * QTC_THREADS == QTC_BN * WQ, "the codes' copies split evenly");
    const int8_t *src[N_COPIES];
    int dst[N_COPIES];
    __device__ __forceinline__ void init(const int8_t *codes, int N, int K, int n0, int c0) {
        const int wq = threadIdx.x % WQ;
#pragma unroll
        for (int j = 0; j < N_COPIES; j++) {
            const int r = threadIdx.x / WQ + j * (QTC_THREADS / WQ);
            src[j] = codes + (size_t)min(n0 + r, N - 1) * K + (size_t)c0 * KC + 16 * wq;
            dst[j] = r * KC + 16 * (KS == 2 ? wq ^ ((r & 1) << 2) : wq);
        }
    }
    __device__ __forceinline__ void issue(unsigned char *stage, int c) const { /* chunk c of the split */
#pragma unroll
        for (int j = 0; j < N_COPIES; j++) recur_cp_async16(stage + dst[j], src[j] + (size_t)c * KC, 16);
    }
};

/* The A fragments of 64 k (half h of a chunk) of the warp's rows ra and rb = ra + 8 of a
 * stage of codes, for the four k-steps s of m16n8k16 (a0 a1 a2 a3 each): the lane's 16
 * codes at 16t of each row, widened to bf16 (the k permutation of qgemm_i8_fused_kernel's
 * comment). */
template <int KS>
static __device__ __forceinline__ void qtc_codes_frags(const int8_t *stage, int ra, int rb, int h, int t,
                                                       uint32_t (&af)[4][4]) {
    constexpr int KC = QTC_KSUB * KS;
    const int col = 4 * h + t; /* 16-byte column */
    const uint4 wa = *(const uint4 *)&stage[ra * KC + 16 * (KS == 2 ? col ^ ((ra & 1) << 2) : col)];
    const uint4 wb = *(const uint4 *)&stage[rb * KC + 16 * (KS == 2 ? col ^ ((rb & 1) << 2) : col)];
    const uint32_t ua[4] = {wa.x ^ 0x80808080u, wa.y ^ 0x80808080u, wa.z ^ 0x80808080u, wa.w ^ 0x80808080u};
    const uint32_t ub[4] = {wb.x ^ 0x80808080u, wb.y ^ 0x80808080u, wb.z ^ 0x80808080u, wb.w ^ 0x80808080u};
#pragma unroll
    for (int s = 0; s < 4; s++) {
        af[s][0] = qtc_codes_bf16x2(ua[s], 0);
        af[s][1] = qtc_codes_bf16x2(ub[s], 0);
        af[s][2] = qtc_codes_bf16x2(ua[s], 1);
        af[s][3] = qtc_codes_bf16x2(ub[s], 1);
    }
}

/* The end of a fused product's block: with K split, this block's partial sums go to `part`
 * and the last block of the tile to arrive adds all splits in split order (so the result
 * does not depend on the order they finish in); then the scaled sums go to y. acc is the
 * m16n8 C fragment of the warp's 16 rows of W (from nw) against MT tiles of 8 rows of x
 * (from m0): element e of lane (g, t) is row g (e < 2) or g + 8, column 2t + (e & 1). */
template <int MT>
static __device__ __forceinline__ void qtc_finish(float (&acc)[MT][4], const float *__restrict__ scale, float *y, int M,
                                                  int N, int accumulate, int m0, int nw, float *__restrict__ part,
                                                  unsigned *__restrict__ cnt) {
    __shared__ int last;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    if (gridDim.z > 1) {
        const size_t tile = (size_t)blockIdx.y * gridDim.x + blockIdx.x, tiles = (size_t)gridDim.x * gridDim.y;
        float *mine = part + ((blockIdx.z * tiles + tile) * QTC_THREADS + threadIdx.x) * (MT * 4);
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            __stcg((float4 *)(mine + 4 * mt), make_float4(acc[mt][0], acc[mt][1], acc[mt][2], acc[mt][3]));
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(&cnt[tile], 1u) == gridDim.z - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        const float *first = part + (tile * QTC_THREADS + threadIdx.x) * (MT * 4);
        const size_t zstride = tiles * QTC_THREADS * (MT * 4);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float4 v = __ldcg((const float4 *)(first + 4 * mt));
            for (unsigned z = 1; z < gridDim.z; z++) {
                const float4 u = __ldcg((const float4 *)(first + z * zstride + 4 * mt));
                v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
            }
            acc[mt][0] = v.x, acc[mt][1] = v.y, acc[mt][2] = v.z, acc[mt][3] = v.w;
        }
        if (threadIdx.x == 0) cnt[tile] = 0; /* ready for the next call (graph replays included) */
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int n = nw + g + 8 * (e >> 1), m = m0 + mt * 8 + 2 * t + (e & 1);
            if (n < N && m < M) {
                const float v = __fmul_rn(acc[mt][e], scale[n]);
                float *yp = y + (size_t)m * N + n;
                *yp = accumulate ? *yp + v : v;
            }
        }
}

template <int MT, int KS>
static __global__ void __launch_bounds__(QTC_THREADS, 2) /* two blocks an SM: at most 128 registers */
qgemm_i8_fused_kernel(const __nv_bfloat16 *__restrict__ xb, const int8_t *__restrict__ codes,
                      const float *__restrict__ scale, float *y, int M, int N, int K, int accumulate,
                      int chunks_per_split, float *__restrict__ part, unsigned *__restrict__ cnt) {
    using S = qtc_shape<MT, KS>;
    constexpr int BM = S::BM, KC = S::KC, ST = S::ST;
    extern __shared__ __align__(16) unsigned char qtc_smem[];
    int8_t(*ws)[QTC_BN][KC] = (int8_t(*)[QTC_BN][KC])qtc_smem; /* [ST] */
    __nv_bfloat16(*xs)[BM][S::XROW] = (__nv_bfloat16(*)[BM][S::XROW])(qtc_smem + (size_t)ST * QTC_BN * KC);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * QTC_BN, nw = n0 + warp * 16;
    const int c0 = blockIdx.z * chunks_per_split;
    const int nc = min(K / KC - c0, chunks_per_split); /* >= 1: the host sizes the splits */
    /* This thread's copies of a stage, worked out once: copy j of the codes is row
     * threadIdx.x / (KC / 16) + j * (rows a round), column threadIdx.x % (KC / 16); likewise x. */
    constexpr int XQ = KC / 8;
    const int xq = threadIdx.x % XQ;
    qtc_codes_copies<KS> wcp;
    wcp.init(codes, N, K, n0, c0);
    const __nv_bfloat16 *xsrc[S::XCOPIES];
    int xdst[S::XCOPIES]; /* -1: no copy (x's rows take fewer than a round) */
#pragma unroll
    for (int j = 0; j < S::XCOPIES; j++) {
        const int r = threadIdx.x / XQ + j * (QTC_THREADS / XQ);
        xsrc[j] = xb + (size_t)min(m0 + min(r, BM - 1), M - 1) * K + (size_t)c0 * KC + 8 * xq;
        xdst[j] = r < BM ? (r * S::XROW + 8 * xq) * 2 : -1;
    }
    auto stage = [&](int c) {
        unsigned char *xst = (unsigned char *)xs[c % ST];
        wcp.issue((unsigned char *)ws[c % ST], c);
#pragma unroll
        for (int j = 0; j < S::XCOPIES; j++)
            if (xdst[j] >= 0) recur_cp_async16(xst + xdst[j], xsrc[j] + (size_t)c * KC, 16);
    };
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < nc) stage(s);
        recur_cp_async_commit();
    }
    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.f;
    const int ra = warp * 16 + g, rb = ra + 8; /* the lane's rows of the stage (ra even iff g is) */
    for (int c = 0; c < nc; c++) {
        recur_cp_async_wait<ST - 2>(); /* chunk c has landed (this thread's copies) */
        __syncthreads();               /* everyone's; and chunk c - 1's stage is free again */
        if (c + ST - 1 < nc) stage(c + ST - 1);
        recur_cp_async_commit();
        const int sg = c % ST;
#pragma unroll
        for (int h = 0; h < KS; h++) {
            uint32_t af[4][4]; /* k-step s: a0 a1 a2 a3; x at k = 64 h + 16 t */
            qtc_codes_frags<KS>(&ws[sg][0][0], ra, rb, h, t, af);
            /* G tiles of x at a time, k-step outermost: the MMAs (volatile, so issued in this
             * order) then alternate between G accumulators instead of waiting on one */
            constexpr int G = MT < 4 ? MT : 4;
#pragma unroll
            for (int mg = 0; mg < MT; mg += G) {
                uint4 bx[G][2];
#pragma unroll
                for (int j = 0; j < G; j++) {
                    bx[j][0] = *(const uint4 *)&xs[sg][(mg + j) * 8 + g][64 * h + 16 * t];
                    bx[j][1] = *(const uint4 *)&xs[sg][(mg + j) * 8 + g][64 * h + 16 * t + 8];
                }
#pragma unroll
                for (int s = 0; s < 4; s++)
#pragma unroll
                    for (int j = 0; j < G; j++) {
                        const uint4 &b = bx[j][s >> 1];
                        recur_mma_bf16_16816(acc[mg + j], af[s][0], af[s][1], af[s][2], af[s][3], s & 1 ? b.z : b.x,
                                             s & 1 ? b.w : b.y);
                    }
            }
        }
    }
    qtc_finish<MT>(acc, scale, y, M, N, accumulate, m0, nw, part, cnt);
}

/* ------------------------------------- the same product on wgmma (sm_90a), the default there */

/* The same function again, with the x side of the product on the warpgroup MMA: each
 * warpgroup (4 warps, 64 rows of W) issues one wgmma.mma_async m64nBMk16 per k-step (BM =
 * 16, 32, 48 or 64 rows of x), A (the codes, widened as above) from registers, B (BM rows
 * of x) read by the tensor cores from shared memory. Against mma.sync, x is then read from
 * shared memory once per warpgroup rather than once per warp, and the MMAs issue at the
 * wgmma rate; that is what bounds the mma.sync kernel from 32 rows of x up. Blocks, chunks, splits and the copies of
 * the codes are those of qgemm_i8_fused_kernel, and so is the k permutation: x comes
 * permuted by round_perm_bf16_kernel (below) so that its logical k order, the one wgmma
 * reads, is the codes' fragment order.
 *
 * x sits in shared memory in the 128-byte swizzle of the PTX ISA's shared memory matrix
 * layouts: per 64 k of a chunk, BM rows of 128 bytes, the 16-byte column q of row r at
 * q ^ (r % 8), each 8 rows a 1024-byte-aligned atom. A k-step's B then starts 32 bytes
 * further into the same rows; the stride between 8-row groups is 1024 bytes. */
template <int MT, int KS> struct qwg_shape {
    static constexpr int BM = MT * 8, KC = QTC_KSUB * KS;
    static constexpr size_t x_bytes = (size_t)BM * KC * 2, codes_bytes = (size_t)QTC_BN * KC;
    static constexpr size_t stage_bytes = x_bytes + codes_bytes; /* x first: 1024-byte aligned */
    static constexpr int ST = QTC_SMEM_BUDGET / stage_bytes < 8 ? (int)(QTC_SMEM_BUDGET / stage_bytes) : 8;
    static constexpr size_t smem = ST * stage_bytes + 1024; /* + the base's alignment to 1024 */
    static constexpr int XCOPIES = (int)((x_bytes / 16 + QTC_THREADS - 1) / QTC_THREADS); /* the last maybe partly */
    static_assert(ST >= 4, "a stage too large for the budget");
    static_assert(stage_bytes % 1024 == 0 && x_bytes % 1024 == 0, "stages keep x's atoms 1024-byte aligned");
};

/* D (64 x N, fp32, the m16n8 C fragments of the warp's 16 rows) += A (64 x 16, bf16, this
 * warp's m16n8k16 A fragment) B (N x 16, bf16, K-major in shared memory: desc). */
template <int N> struct qwg_mma;
template <> struct qwg_mma<16> {
    static __device__ __forceinline__ void run(float (&d)[2][4], const uint32_t (&a)[4], uint64_t desc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {"
                     "%0,%1,%2,%3,%4,%5,%6,%7"
                     "}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
                       "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
    }
};
template <> struct qwg_mma<32> {
    static __device__ __forceinline__ void run(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
                     "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
                     "}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
                       "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
                       "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
    }
};
template <> struct qwg_mma<48> {
    static __device__ __forceinline__ void run(float (&d)[6][4], const uint32_t (&a)[4], uint64_t desc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 {"
                     "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                     "%16,%17,%18,%19,%20,%21,%22,%23"
                     "}, {%24,%25,%26,%27}, %28, p, 1, 1, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
                       "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
                       "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
                       "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
                       "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
    }
};
template <> struct qwg_mma<64> {
    static __device__ __forceinline__ void run(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
                     "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                     "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
                     "}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
                       "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
                       "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
                       "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
                       "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
                       "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
                       "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
    }
};

/* A shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format") for K-major bf16
 * in the 128-byte swizzle: start address, leading offset (unused here: 16), stride 1024
 * bytes between 8-row groups, all in 16-byte units. */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) /* (its only user is compiled for sm_90a only) */
static __device__ __forceinline__ uint64_t qwg_desc_sw128(uint32_t addr) {
    return (uint64_t)((addr & 0x3ffffu) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}
#endif

/* A wgmma reads its A registers and writes its accumulators after it issues, which the
 * compiler does not see: qwg_keep(A) keeps A's registers unchanged up to here (a use), and
 * qwg_keep(acc), after the last wait, orders every later read of acc after it. */
template <int R> static __device__ __forceinline__ void qwg_keep(const uint32_t (&r)[R][4]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" ::"r"(r[i][0]), "r"(r[i][1]), "r"(r[i][2]), "r"(r[i][3]) : "memory");
}
template <int R> static __device__ __forceinline__ void qwg_keep(float (&r)[R][4]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+f"(r[i][0]), "+f"(r[i][1]), "+f"(r[i][2]), "+f"(r[i][3])::"memory");
}

template <int MT, int KS>
static __global__ void __launch_bounds__(QTC_THREADS, 2)
qgemm_i8_wgmma_kernel(const __nv_bfloat16 *__restrict__ xb, const int8_t *__restrict__ codes,
                      const float *__restrict__ scale, float *y, int M, int N, int K, int accumulate,
                      int chunks_per_split, float *__restrict__ part, unsigned *__restrict__ cnt) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using S = qwg_shape<MT, KS>;
    constexpr int BM = S::BM, KC = S::KC, ST = S::ST;
    extern __shared__ __align__(16) unsigned char qtc_smem_raw[];
    const uint32_t raw0 = (uint32_t)__cvta_generic_to_shared(qtc_smem_raw);
    unsigned char *const smem = qtc_smem_raw + (((raw0 + 1023u) & ~1023u) - raw0);
    const uint32_t smem0 = (raw0 + 1023u) & ~1023u;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * QTC_BN, nw = n0 + warp * 16;
    const int c0 = blockIdx.z * chunks_per_split;
    const int nc = min(K / KC - c0, chunks_per_split); /* >= 1: the host sizes the splits */
    qtc_codes_copies<KS> wcp;
    wcp.init(codes, N, K, n0, c0);
    /* x copy q: 16-byte column q % 8 of row (q / 8) % BM of 64-k group q / (8 BM); a warp
     * fills 4 whole rows (no bank conflicts) and reads 4 runs of 128 bytes */
    const __nv_bfloat16 *xsrc[S::XCOPIES];
    int xdst[S::XCOPIES]; /* -1: no copy */
#pragma unroll
    for (int j = 0; j < S::XCOPIES; j++) {
        const int q = threadIdx.x + j * QTC_THREADS, col = q & 7, r = (q >> 3) % BM, grp = min(q / (8 * BM), KS - 1);
        xsrc[j] = xb + (size_t)min(m0 + r, M - 1) * K + (size_t)c0 * KC + 64 * grp + 8 * col;
        xdst[j] = q < (int)(S::x_bytes / 16) ? grp * BM * 128 + r * 128 + ((col ^ (r & 7)) << 4) : -1;
    }
    auto stage = [&](int c) {
        unsigned char *st = smem + (size_t)(c % ST) * S::stage_bytes;
#pragma unroll
        for (int j = 0; j < S::XCOPIES; j++)
            if (xdst[j] >= 0) recur_cp_async16(st + xdst[j], xsrc[j] + (size_t)c * KC, 16);
        wcp.issue(st + S::x_bytes, c);
    };
    /* ST - 2 chunks ahead, not ST - 1: a warpgroup's wgmmas of a chunk may still be reading
     * it while the warp goes on to the next (wait_group 1 below), so the stage refilled at
     * chunk c is the one chunk c - 2 used, which every warp has finished with by then */
#pragma unroll
    for (int s = 0; s < ST - 2; s++) {
        if (s < nc) stage(s);
        recur_cp_async_commit();
    }
    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.f;
    const int ra = warp * 16 + g, rb = ra + 8;
    /* A fragments of two groups of wgmmas (64 k each): the one in flight and the next */
    uint32_t af[2][4][4] = {};
    /* chunk c; its groups of 64 k alternate between af[0] and af[1] from af[p0] */
    auto chunk = [&](int c, auto p0) {
        recur_cp_async_wait<ST - 3>(); /* chunk c has landed (this thread's copies) */
        /* this thread's writes, made by the generic proxy, ordered before the tensor cores'
         * reads of them (the async proxy); the barrier then extends that to everyone's */
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        if (c + ST - 2 < nc) stage(c + ST - 2);
        recur_cp_async_commit();
        const int sg = c % ST;
        const uint32_t xs = smem0 + (uint32_t)(sg * S::stage_bytes);
#pragma unroll
        for (int h = 0; h < KS; h++) {
            const int p = (decltype(p0)::value + h) & 1;
            qtc_codes_frags<KS>((const int8_t *)smem + (size_t)sg * S::stage_bytes + S::x_bytes, ra, rb, h, t, af[p]);
            asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); /* af[p] written above */
#pragma unroll
            for (int s = 0; s < 4; s++)
                qwg_mma<BM>::run(acc, af[p][s], qwg_desc_sw128(xs + (uint32_t)(h * BM * 128 + s * 32)));
            asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
            /* the group before this one has finished: its A registers and stage are free,
             * while this one runs on as the next 64 k are widened */
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            qwg_keep(af[p ^ 1]);
        }
    };
    if (KS == 2) {
        for (int c = 0; c < nc; c++) chunk(c, std::integral_constant<int, 0>());
    } else {
        int c = 0;
        for (; c + 1 < nc; c += 2) {
            chunk(c, std::integral_constant<int, 0>());
            chunk(c + 1, std::integral_constant<int, 1>());
        }
        if (c < nc) chunk(c, std::integral_constant<int, 0>());
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    qwg_keep(af[0]);
    qwg_keep(af[1]);
    qwg_keep(acc);
    qtc_finish<MT>(acc, scale, y, M, N, accumulate, m0, nw, part, cnt);
#else
    __trap(); /* the host launches it only on sm_90 with a build for sm_90a */
#endif
}

/* out = bf16(x) (round to nearest even) with each row's every 64 k permuted as the fused
 * product's fragments take them: logical k 16 s + i of a group (k-step s, fragment slot
 * i) holds physical k 16 t + 4 s + 2 (i / 8) + i % 2, t = (i / 2) % 4 (see
 * qgemm_i8_fused_kernel). K is a multiple of 64. */
static __global__ void round_perm_bf16_kernel(const float *__restrict__ x, size_t n, __nv_bfloat16 *__restrict__ out) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int l = (int)(i & 63), s = l >> 4, f = l & 15;
        const int p = 16 * ((f >> 1) & 3) + 4 * s + 2 * (f >> 3) + (f & 1);
        out[i] = __float2bfloat16_rn(x[(i & ~(size_t)63) + (size_t)p]);
    }
}

/* The kernels' shared memory beyond the default 48 KiB, asked for once */
template <int MT> static recur_status_t qtc_attr(recur_cuda_ctx_t *c) {
    RCU_CHECK(cudaFuncSetAttribute(qgemm_i8_fused_kernel<MT, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)qtc_shape<MT, 1>::smem));
    RCU_CHECK(cudaFuncSetAttribute(qgemm_i8_fused_kernel<MT, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)qtc_shape<MT, 2>::smem));
    if (c->qtc_wgmma) {
        RCU_CHECK(cudaFuncSetAttribute(qgemm_i8_wgmma_kernel<MT, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)qwg_shape<MT, 1>::smem));
        if constexpr (QTC_SMEM_BUDGET / (qwg_shape<MT, 1>::stage_bytes * 2) >= 4)
            RCU_CHECK(cudaFuncSetAttribute(qgemm_i8_wgmma_kernel<MT, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)qwg_shape<MT, 2>::smem));
    }
    return RECUR_OK;
}
static recur_status_t qgemm_i8_fused_init(recur_cuda_ctx_t *c) {
    recur_status_t st = qtc_attr<2>(c);
    if (st == RECUR_OK) st = qtc_attr<4>(c);
    if (st == RECUR_OK) st = qtc_attr<8>(c);
    if (st == RECUR_OK && c->qtc_wgmma)
        RCU_CHECK(cudaFuncSetAttribute(qgemm_i8_wgmma_kernel<6, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)qwg_shape<6, 1>::smem));
    return st;
}

/* One launch of the fused product with block shape (MT, KS), on wgmma or mma.sync; K a
 * multiple of its chunk. */
template <int MT, int KS, bool WG>
static recur_status_t qtc_launch(recur_cuda_ctx_t *c, const recur_weight_t *W, int32_t M, float *y, int accumulate) {
    constexpr int BM = MT * 8, KC = QTC_KSUB * KS;
    size_t smem;
    if constexpr (WG) smem = qwg_shape<MT, KS>::smem;
    else smem = qtc_shape<MT, KS>::smem;
    const int64_t N = W->rows, K = W->cols;
    const int64_t mtiles = (M + BM - 1) / BM, ntiles = (N + QTC_BN - 1) / QTC_BN, tiles = mtiles * ntiles;
    const int64_t chunks = K / KC;
    /* splits of K: as many as keep the grid within one wave of two blocks an SM (a second,
     * partial wave would cost as much as a full one), each split at least QTC_MIN_CHUNKS */
    int64_t splits = 2 * (int64_t)c->sm_count / tiles;
    /* on wgmma also at least 16 BM k, so that a block's partial sums (4 BM bytes a row of
     * W) stay within a quarter of the codes it reads (one byte a k): 64 rows of x at
     * 4096 x 4096 took 24 us instead of 33 (H200) */
    const int64_t min_chunks = WG && 16 * BM > QTC_MIN_CHUNKS * KC ? 16 * BM / KC : QTC_MIN_CHUNKS;
    if (splits > chunks / min_chunks) splits = chunks / min_chunks;
    if (splits < 1) splits = 1;
    const int64_t per = (chunks + splits - 1) / splits;
    splits = (chunks + per - 1) / per; /* none empty */
    recur_status_t st;
    if (splits > 1) {
        const size_t part = (size_t)splits * (size_t)tiles * QTC_THREADS * (size_t)(4 * MT) * sizeof(float);
        if ((st = recur_cuda_scratch_reserve(c, &c->q_part, &c->q_part_bytes, part, "fused int8 GEMM's partial sums")) !=
            RECUR_OK)
            return st;
        const size_t before = c->q_cnt_bytes; /* not the pointer: a new buffer may get the old address */
        if ((st = recur_cuda_scratch_reserve(c, &c->q_cnt, &c->q_cnt_bytes, (size_t)tiles * sizeof(unsigned),
                                             "fused int8 GEMM's tile counters")) != RECUR_OK)
            return st;
        if (c->q_cnt_bytes != before) /* grown, so not while capturing a graph */
            RCU_CHECK(cudaMemsetAsync(c->q_cnt, 0, c->q_cnt_bytes, c->stream));
    }
    const dim3 grid((unsigned)mtiles, (unsigned)ntiles, (unsigned)splits);
    if constexpr (WG)
        qgemm_i8_wgmma_kernel<MT, KS><<<grid, QTC_THREADS, smem, c->stream>>>(
            c->xbf, (const int8_t *)W->data, W->scale, y, M, (int)N, (int)K, accumulate, (int)per, (float *)c->q_part,
            (unsigned *)c->q_cnt);
    else
        qgemm_i8_fused_kernel<MT, KS><<<grid, QTC_THREADS, smem, c->stream>>>(
            c->xbf, (const int8_t *)W->data, W->scale, y, M, (int)N, (int)K, accumulate, (int)per, (float *)c->q_part,
            (unsigned *)c->q_cnt);
    RCU_LAUNCHED("qgemm_i8_fused_kernel (or its wgmma form)");
    return RECUR_OK;
}

/* 128 k a chunk where K allows, except on wgmma where a stage that large leaves fewer than
 * 4 stages (the wgmma pipeline runs one stage less far ahead): 48 and 64 rows of x take
 * 64-k chunks there. At 32 rows 128 k (2 chunks ahead) against 64 k (6 ahead) took 16384 x
 * 4096 from 35.5 to 28.4 us and RWKV-7 int8 batch 32 from 3,857 to 4,258 tok/s (H200). */
template <int MT, bool WG>
static recur_status_t qtc_launch_ks(recur_cuda_ctx_t *c, const recur_weight_t *W, int32_t M, float *y, int accumulate) {
    if constexpr (WG && QTC_SMEM_BUDGET / (qwg_shape<MT, 1>::stage_bytes * 2) < 4) {
        return qtc_launch<MT, 1, WG>(c, W, M, y, accumulate);
    } else {
        return W->cols % (2 * QTC_KSUB) == 0 ? qtc_launch<MT, 2, WG>(c, W, M, y, accumulate)
                                             : qtc_launch<MT, 1, WG>(c, W, M, y, accumulate);
    }
}
template <bool WG>
static recur_status_t qtc_launch_m(recur_cuda_ctx_t *c, const recur_weight_t *W, int32_t M, float *y, int accumulate) {
    /* on wgmma also 48 rows (m64n48): 39.8 against 46.1 us at 16384 x 4096 (H200); 96 rows
     * (m64n96) was slower end to end than two tiles of 64 */
    if constexpr (WG)
        if (M > 32 && M <= 48) return qtc_launch_ks<6, WG>(c, W, M, y, accumulate);
    return M <= 16 ? qtc_launch_ks<2, WG>(c, W, M, y, accumulate)
         : M <= 32 ? qtc_launch_ks<4, WG>(c, W, M, y, accumulate)
                   : qtc_launch_ks<8, WG>(c, W, M, y, accumulate);
}

/* The fused product if this call can take it (int8, 8 < M <= qtc_max_m, K a multiple of
 * 64, 16-byte aligned codes); *done says whether it ran. */
static recur_status_t qgemm_i8_fused(recur_cuda_ctx_t *c, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                     int accumulate, bool *done) {
    *done = false;
    const int64_t N = W->rows, K = W->cols;
    if (W->dtype != RECUR_DTYPE_I8 || M > c->qtc_max_m || K % QTC_KSUB || ((uintptr_t)W->data & 15u) ||
        N > INT32_MAX || K > INT32_MAX)
        return RECUR_OK;
    const size_t nx = (size_t)M * (size_t)K;
    recur_status_t st;
    if (c->qtc_wgmma) { /* x permuted as the wgmma kernel reads it */
        if ((st = recur_cuda_xbf_reserve(c, nx)) != RECUR_OK) return st;
        const size_t blocks = (nx + 255) / 256, cap = (size_t)c->sm_count * 16;
        round_perm_bf16_kernel<<<(unsigned)(blocks < cap ? blocks : cap), 256, 0, c->stream>>>(x, nx, c->xbf);
        RCU_LAUNCHED("round_perm_bf16_kernel");
        st = qtc_launch_m<true>(c, W, M, y, accumulate);
    } else {
        if ((st = recur_cuda_round_x_bf16(c, x, nx)) != RECUR_OK) return st;
        st = qtc_launch_m<false>(c, W, M, y, accumulate);
    }
    *done = st == RECUR_OK;
    return st;
}

/* x quantized per row to e4m3 (act_quant_kernel) into c->q_x: the codes (*xq, M x K
 * bytes, 16-byte aligned rows if K is a multiple of 16) then sx (*sx, M floats). With bf16
 * non-NULL the codes' bf16 values go there instead and *xq is NULL. */
static recur_status_t act_quant(recur_cuda_ctx_t *c, const float *x, int32_t M, int64_t K, __nv_bfloat16 *bf16,
                                uint8_t **xq, float **sx) {
    const size_t nx = (size_t)M * (size_t)K, x8 = bf16 ? 0 : (nx + 15u) & ~(size_t)15u;
    recur_status_t st = recur_cuda_scratch_reserve(c, &c->q_x, &c->q_x_bytes, x8 + (size_t)M * sizeof(float),
                                                   "fp8 activation scratch");
    if (st != RECUR_OK) return st;
    *xq = bf16 ? NULL : (uint8_t *)c->q_x;
    *sx = (float *)((char *)c->q_x + x8);
    const int64_t r = (K / 4 + AQ_THREADS - 1) / AQ_THREADS; /* float4s a thread */
    if (!bf16 && K % 4 == 0 && ((uintptr_t)x & 15u) == 0 && r <= 4) {
        if (r <= 1) act_quant_rows_kernel<1><<<(unsigned)M, AQ_THREADS, 0, c->stream>>>(x, (int)K, *xq, *sx);
        else if (r <= 2) act_quant_rows_kernel<2><<<(unsigned)M, AQ_THREADS, 0, c->stream>>>(x, (int)K, *xq, *sx);
        else act_quant_rows_kernel<4><<<(unsigned)M, AQ_THREADS, 0, c->stream>>>(x, (int)K, *xq, *sx);
        RCU_LAUNCHED("act_quant_rows_kernel");
        return RECUR_OK;
    }
    act_quant_kernel<<<(unsigned)M, QUANT_THREADS, 0, c->stream>>>(x, (int)K, *xq, bf16, *sx);
    RCU_LAUNCHED("act_quant_kernel");
    return RECUR_OK;
}

recur_status_t recur_cuda_qgemm(recur_cuda_ctx_t *c, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                int accumulate) {
    bool fused;
    recur_status_t fst = qgemm_i8_fused(c, x, W, M, y, accumulate, &fused);
    if (fst != RECUR_OK || fused) return fst;
    const int64_t N = W->rows, K = W->cols;
    const int is_i8 = W->dtype == RECUR_DTYPE_I8;
    const uint8_t *codes = (const uint8_t *)W->data;
    /* rows of W per block: bounded scratch (the output block's; and the widened codes'
     * unless cuBLASLt reads the codes), a multiple of 16 where there are that many */
    auto block_rows = [&](bool widened) {
        int64_t nb = N;
        if (widened && (int64_t)(QGEMM_W_ELEMS / (size_t)K) < nb) nb = (int64_t)(QGEMM_W_ELEMS / (size_t)K);
        if ((int64_t)(QGEMM_Y_FLOATS / (size_t)M) < nb) nb = (int64_t)(QGEMM_Y_FLOATS / (size_t)M);
        if (nb >= 16) nb &= ~(int64_t)15;
        return nb < 1 ? (int64_t)1 : nb;
    };
    /* fp8 through cuBLASLt only when both block shapes have an algorithm (decided before
     * anything runs, so a call never mixes the two forms of x) */
    recur_cuda_lt_plan *pl = NULL, *pl_tail = NULL;
    int64_t nb = block_rows(false), tail = N % nb;
    if (!is_i8) {
        pl = lt_plan(c, nb, M, K, NULL);
        pl_tail = tail ? lt_plan(c, tail, M, K, pl) : pl;
    }
    const int use_lt = pl && pl_tail;
    if (!use_lt) nb = block_rows(true), tail = N % nb;
    const size_t nx = (size_t)M * (size_t)K;
    recur_status_t st;
    /* the activations, as the tensor cores take them */
    float *sx = NULL;
    uint8_t *xq = NULL;
    if (is_i8) {
        if ((st = recur_cuda_round_x_bf16(c, x, nx)) != RECUR_OK) return st;
    } else {
        if (!use_lt && (st = recur_cuda_xbf_reserve(c, nx)) != RECUR_OK) return st;
        /* without cuBLASLt the bf16 form of the e4m3 values goes into xbf */
        if ((st = act_quant(c, x, M, K, use_lt ? NULL : c->xbf, &xq, &sx)) != RECUR_OK) return st;
    }
    if ((st = recur_cuda_scratch_reserve(c, &c->q_y, &c->q_y_bytes, (size_t)M * (size_t)nb * sizeof(float),
                                         "quantized GEMM's output block")) != RECUR_OK)
        return st;
    if (!use_lt && (st = recur_cuda_scratch_reserve(c, &c->q_w, &c->q_w_bytes, (size_t)nb * (size_t)K * 2,
                                                    "quantized GEMM's bf16 weight block")) != RECUR_OK)
        return st;
    const float one = 1.0f, zero = 0.0f;
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t nbb = N - n0 < nb ? N - n0 : nb;
        float *yb = (float *)c->q_y;
        if (use_lt) {
            const recur_cuda_lt_plan *p = nbb == nb ? pl : pl_tail;
            cublasStatus_t e = cublasLtMatmul(c->lt, p->desc, &one, codes + (size_t)n0 * (size_t)K, p->a, xq, p->b,
                                              &zero, yb, p->d, yb, p->d, &p->algo, c->cublas_ws, c->cublas_ws_bytes,
                                              c->stream);
            if (e != CUBLAS_STATUS_SUCCESS) {
                recur_cuda_fail(c, "cuBLASLt", "cublasLtMatmul (fp8)", cublasGetStatusString(e), __FILE__, __LINE__);
                if (n0 > 0 || c->capturing) return RECUR_E_CUDA; /* y partly written, or inside a graph */
                recur_log_warn("cuda: the FP8 GEMM of cuBLASLt failed; fp8 weights use the bf16 tensor cores from now on");
                c->lt_off = 1;
                return recur_cuda_qgemm(c, x, W, M, y, accumulate);
            }
        } else {
            const size_t nw = (size_t)nbb * (size_t)K;
            widen_codes_kernel<<<grid_for(c, nw / 16 + 1), QUANT_THREADS, 0, c->stream>>>(
                codes + (size_t)n0 * (size_t)K, nw, is_i8, (__nv_bfloat16 *)c->q_w);
            RCU_LAUNCHED("widen_codes_kernel");
            RCU_CUBLAS(cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nbb, M, (int)K, &one, c->q_w, CUDA_R_16BF,
                                    (int)K, c->xbf, CUDA_R_16BF, (int)K, &zero, yb, CUDA_R_32F, (int)nbb,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        if (nbb % 4 == 0 && N % 4 == 0 && n0 % 4 == 0 && ((uintptr_t)yb & 15u) == 0 && ((uintptr_t)y & 15u) == 0 &&
            ((uintptr_t)W->scale & 15u) == 0) {
            const int64_t gx = (nbb / 4 + QUANT_THREADS - 1) / QUANT_THREADS;
            const dim3 grid((unsigned)gx, (unsigned)(M < 65535 ? M : 65535));
            qgemm_epilogue4_kernel<<<grid, QUANT_THREADS, 0, c->stream>>>(yb, M, nbb, W->scale + n0, sx, y + n0, N,
                                                                          accumulate);
        } else {
            qgemm_epilogue_kernel<<<grid_for(c, (size_t)M * (size_t)nbb), QUANT_THREADS, 0, c->stream>>>(
                yb, M, nbb, W->scale + n0, sx, y + n0, N, accumulate);
        }
        RCU_LAUNCHED("qgemm_epilogue_kernel");
    }
    return RECUR_OK;
}
