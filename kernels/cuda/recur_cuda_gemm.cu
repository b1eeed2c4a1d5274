/* recur_cuda_gemm.cu: y[M][N] (=|+=) x[M][K] . W^T for the CUDA backend.
 *
 * Paths, by the number of input rows M and the shape:
 * - M <= c->gemv_max_m (decode; RECUR_QUANT_GEMV_MAX_M = 2 rows unless RECUR_GEMV_MAX_M
 *   asks for up to RECUR_CUDA_GEMV_MAX_M = 8): GEMV-style kernels that stream W once with
 *   16-byte loads (8 bf16, 4 fp32 or 16 one-byte codes per load) and keep x in fp32 (it is
 *   small and L1/L2 resident). Bandwidth-bound on W, so their figure of merit is bytes of W
 *   per second. Codes (int8, e4m3) are widened in registers by bit manipulation
 *   (recur_quant.h) and a row's scale multiplies its finished sum:
 *   - a row-per-warp kernel (the general case; CUDA-core FMAs);
 *   - split-K for few, long rows (N < 1024: LoRA down-projections, gate projections),
 *     which would otherwise leave most of the device idle;
 *   - with bf16 weights at M >= 3, a tensor-core kernel (mma.sync) fed an exact
 *     three-way bf16 split of x, since M CUDA-core FMAs per weight stop being free;
 *   all of them launched with PDL (recur_cuda_internal.h), prefetching their first
 *   weights into L2 while the kernel before them finishes. In each, a row's arithmetic
 *   depends on the shape only, never on M, so a padded decode batch gives each real row
 *   the bits it would get alone at the same kernel.
 * - matmul_many at M <= 2: a layer's independent products (any mix of weight formats,
 *   row-per-warp and split-K shapes) in one launch of gemv_many_kernel, which runs the
 *   same per-row code as the kernels above (bit-equal results), with the activation that
 *   follows a product applied as it is written.
 * - larger M (prefill, big batches): cuBLAS. bf16 weights: x is rounded to bf16 into a
 *   scratch buffer and cublasGemmEx runs bf16 x bf16 with fp32 accumulation and output
 *   (CUBLAS_COMPUTE_32F). fp32 weights: cublasSgemm in CUBLAS_DEFAULT_MATH, which never
 *   uses TF32, so the F32 path stays exact to fp32 rounding.
 * So with bf16 weights, the GEMVs multiply by bf16 weights exactly, and the GEMM also
 * rounds the activations to bf16 (the usual mixed-precision GEMM; about 2^-9 relative per
 * input). Quantized weights above the GEMV rows: recur_cuda_quant.cu.
 *
 * Column-major view for cuBLAS: W [N][K] row-major is K x N column-major (lda K), x is
 * K x M (ldb K), y is N x M (ldc N); y = op(W)^T x with op = transpose. */
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recur_cuda_internal.h"
#include "recur_dtype.h"
#include "recur_quant.h"

#define GEMV_WARPS 4 /* warps per block */
/* Weight bytes a GEMV launched with PDL asks L2 for while the kernel before it still runs
 * (spread over its rows): enough to keep DRAM busy across the kernel boundary, a small
 * part of L2 (50 MB on an H100), and bounded because only one kernel waits ahead. */
#define GEMV_PREFETCH_BYTES ((size_t)8 << 20)

/* 16 bytes of weights -> fp32 */
static __device__ __forceinline__ void unpack16(const uint4 &u, float *f /* [8] */, const __nv_bfloat16 *) {
    recur_bf16x8_widen(u, f);
}
static __device__ __forceinline__ void unpack16(const uint4 &u, float *f /* [4] */, const float *) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
}
/* 16 bytes of int8 codes -> their values, exactly (recur_i8x4_float_bits: a byte under the
 * exponent of 2^23, then one subtraction; no int-to-float conversion per weight) */
static __device__ __forceinline__ void unpack16(const uint4 &u, float *f /* [16] */, const int8_t *) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) f[4 * i + j] = __uint_as_float(recur_i8x4_float_bits(w[i], j)) - RECUR_QUANT_I8_BIAS;
}
/* 16 bytes of e4m3 codes -> their values, exactly: on sm_89+ cvt.rn.f16x2.e4m3x2 widens two
 * codes to binary16 in one instruction (every e4m3 value, subnormals included, is a
 * binary16 one), then each half to fp32. On an H200 this made the e4m3 GEMVs 10-19% faster
 * than moving the codes' bits into binary16 ones by integer operations (4096 x 16384 at one
 * row: 20.1 -> 17.1 us, bench_gemv_cuda), and faster than the int8 kernels' two
 * instructions per code. Older devices keep the bit moves (recur_e4m3x2_f16x2_bits: the
 * values times 2^-8, the 2^8 going into the row's scale, row_mul). Both give the same bits:
 * every term of a row's sum is scaled by the same power of two. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define GEMV_E4M3_CVT 1
#else
#define GEMV_E4M3_CVT 0
#endif
static __device__ __forceinline__ float f16_bits_to_float(uint32_t h) {
    return __half2float(__ushort_as_half((unsigned short)(h & 0xffffu)));
}
static __device__ __forceinline__ void unpack16(const uint4 &u, float *f /* [16] */, const __nv_fp8_e4m3 *) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
#if GEMV_E4M3_CVT
        uint32_t lo, hi; /* codes 0, 1 and 2, 3 of the word as f16x2 (the first code in the low half) */
        asm("{ .reg .b16 a, b;\n mov.b32 {a, b}, %2;\n cvt.rn.f16x2.e4m3x2 %0, a;\n cvt.rn.f16x2.e4m3x2 %1, b; }"
            : "=r"(lo), "=r"(hi)
            : "r"(w[i]));
        const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&lo));
        const float2 b = __half22float2(*reinterpret_cast<const __half2 *>(&hi));
        f[4 * i + 0] = a.x;
        f[4 * i + 1] = a.y;
        f[4 * i + 2] = b.x;
        f[4 * i + 3] = b.y;
#else
        const uint32_t even = recur_e4m3x2_f16x2_bits(w[i], 0), odd = recur_e4m3x2_f16x2_bits(w[i], 1);
        f[4 * i + 0] = f16_bits_to_float(even);
        f[4 * i + 1] = f16_bits_to_float(odd);
        f[4 * i + 2] = f16_bits_to_float(even >> 16);
        f[4 * i + 3] = f16_bits_to_float(odd >> 16);
#endif
    }
}
static __device__ __forceinline__ float w_scalar(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ float w_scalar(const float *p) { return *p; }
static __device__ __forceinline__ float w_scalar(const int8_t *p) { return (float)*p; }
static __device__ __forceinline__ float w_scalar(const __nv_fp8_e4m3 *p) { /* as unpack16 (exact) */
    const float v = f16_bits_to_float(recur_e4m3x2_f16x2_bits(*(const uint8_t *)p, 0));
    return GEMV_E4M3_CVT ? v * RECUR_QUANT_F8_F16_SCALE : v;
}
/* What the finished dot product of a row is multiplied by: 1 for f32/bf16 weights, the row's
 * scale for int8, and for e4m3 too (times 2^8 where unpack16 moves bits). */
template <typename WT> static __device__ __forceinline__ float row_mul(const float *scale, int n) { return 1.0f; }
template <> __device__ __forceinline__ float row_mul<int8_t>(const float *scale, int n) { return scale[n]; }
template <> __device__ __forceinline__ float row_mul<__nv_fp8_e4m3>(const float *scale, int n) {
    return GEMV_E4M3_CVT ? scale[n] : scale[n] * RECUR_QUANT_F8_F16_SCALE;
}

/* acc[m][r] += x[m][kb .. kb+EL) . wf[r][0 .. EL) for the MT rows of x, in element order. */
template <int MT, int R, int EL>
static __device__ __forceinline__ void fma_chunk(const float *__restrict__ x, int K, int kb, const float (&wf)[R][EL],
                                                 float (&acc)[MT][R]) {
#pragma unroll
    for (int m = 0; m < MT; m++) {
        float xf[EL];
#pragma unroll
        for (int e = 0; e < EL; e += 4) {
            float4 t = __ldg((const float4 *)(x + (size_t)m * K + kb + e));
            xf[e] = t.x; xf[e + 1] = t.y; xf[e + 2] = t.z; xf[e + 3] = t.w;
        }
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int e = 0; e < EL; e++) acc[m][r] = fmaf(xf[e], wf[r][e], acc[m][r]);
    }
}

/* The dot products of rows wr[0..R) of W with the MT rows of x, as this lane's partial
 * sums: 16-byte chunks ch0, ch0 + chstep, ... of each row (U of them loaded before any
 * is used), then the scalar elements after the chunks (or all of K when not
 * `vec`) from nch * EL + k0 in steps of kstep. The order of the FMAs into one row's sum
 * depends only on (ch0, chstep, k0, kstep), never on MT, R or U, so a row's result does
 * not change with the number of rows in the batch (graph replays of padded batches rely on it). */
template <typename WT, int MT, int R, int U>
static __device__ __forceinline__ void gemv_partial(const float *__restrict__ x, const WT *const *wr, int K, int vec,
                                                    int ch0, int chstep, int k0, int kstep, float (&acc)[MT][R]) {
    constexpr int EL = 16 / (int)sizeof(WT); /* weights per 16-byte load */
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[m][r] = 0.f;
    const int nch = vec ? K / EL : 0; /* 16-byte chunks per row */
    int ch = ch0;
    /* main loop: U chunks per row loaded before any is used */
    for (; ch + chstep * (U - 1) < nch; ch += chstep * U) {
        uint4 wv[U][R];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) wv[u][r] = __ldcs((const uint4 *)wr[r] + ch + chstep * u);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int kb = (ch + chstep * u) * EL;
            float wf[R][EL];
#pragma unroll
            for (int r = 0; r < R; r++) unpack16(wv[u][r], wf[r], (const WT *)nullptr);
            fma_chunk<MT, R, EL>(x, K, kb, wf, acc);
        }
    }
    /* remaining whole chunks, one at a time */
    for (; ch < nch; ch += chstep) {
        const int kb = ch * EL;
        float wf[R][EL];
#pragma unroll
        for (int r = 0; r < R; r++) unpack16(__ldcs((const uint4 *)wr[r] + ch), wf[r], (const WT *)nullptr);
        fma_chunk<MT, R, EL>(x, K, kb, wf, acc);
    }
    /* scalar part: the tail after the chunks, or all of K when unaligned */
    for (int k = nch * EL + k0; k < K; k += kstep) {
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
}

/* The first `bytes` of row p into L2 (one prefetch per 128-byte line, over `lanes`
 * threads). Only L2, never registers: L2 is the point of coherence, so this is safe
 * before recur_pdl_wait() even if a kernel still running were writing W. */
static __device__ __forceinline__ void prefetch_l2(const void *p, int bytes, int lane, int lanes) {
    const char *q = (const char *)p;
    for (int o = lane * 128; o < bytes; o += lanes * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(q + o));
}

/* Each warp owns R consecutive rows of W (R rows share every load of x, cutting the x
 * traffic from L1 by R); lanes stride over K in 16-byte chunks. Rows past N are clamped
 * to row N-1 for loading and never written. `vec`: W and x rows are 16-byte aligned (K a
 * multiple of 8 for bf16, 4 for fp32, and aligned base pointers); otherwise the scalar
 * loop does all of K. The kernels (gemv_kernel, gemv_many_kernel) run, in this order,
 * gemv_rows_begin (the row pointers, and pf bytes of each row into L2 before the PDL
 * wait), the PDL wait, then gemv_rows_end (the sums; results get `act`, only without
 * accumulate). The order is the one the single kernel was tuned with: computing the row
 * pointers after the wait changed its code and cost bf16 ~10% of its bandwidth. */
template <typename WT, int R, int LG = 32>
static __device__ __forceinline__ void gemv_rows_begin(const WT *__restrict__ W, int N, int K, int n0, int pf,
                                                       int lane, const WT *(&wr)[R]) {
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = W + (size_t)(n0 + r < N ? n0 + r : N - 1) * K;
    if (n0 < N)
#pragma unroll
        for (int r = 0; r < R; r++) prefetch_l2(wr[r], pf, lane % LG, LG);
}

/* The sums of rows n0 .. n0+R of W for the MT rows of x, by S warps that take
 * interleaved 16-byte chunks of the rows (this one is warp s of them; S = 1: one warp,
 * lanes striding over K). S is a template constant because the chunk stride then folds
 * into the loads' immediate offsets: as a runtime value it cost the unsplit kernel up to
 * ~15% of its bandwidth (bench_gemv_cuda, H200). With S > 1 the warps' sums meet in red (the block's
 * [warps][MT * R] floats, this group's warps consecutive from warp - s) and are added in
 * warp order, so the result is deterministic; every warp of the block must call this
 * (it holds a block barrier), including those with n0 >= N. Results get `act`, only
 * without accumulate. */
template <typename WT, int MT, int R, int U, int S, int LG = 32>
static __device__ __forceinline__ void gemv_rows_end(const float *__restrict__ x, const WT *const (&wr)[R],
                                                     float *__restrict__ y, int N, int K, int accumulate, int act,
                                                     int vec, const float *__restrict__ scale, int n0, int lane,
                                                     int s, float (*red)[MT * R]) {
    static_assert(LG == 32 || S == 1, "lane groups only without a split");
    if constexpr (S == 1) {
        /* LG < 32 (gemv_lane_group): a group past N still computes, on clamped rows, as its
         * warp's shuffles need every lane; it writes nothing */
        if (LG == 32 && n0 >= N) return;
        (void)s;
        (void)red;
        float acc[MT][R];
        const int l = lane % LG;
        gemv_partial<WT, MT, R, U>(x, wr, K, vec, l, LG, l, LG, acc);
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int o = LG / 2; o > 0; o >>= 1) acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], o);
        if (l == 0) {
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (n0 + r < N) {
                        float *yp = y + (size_t)m * N + n0 + r;
                        const float v = __fmul_rn(acc[m][r], row_mul<WT>(scale, n0 + r)); /* no FMA with the add */
                        *yp = accumulate ? *yp + v : recur_act_value(act, v);
                    }
        }
    } else {
        /* a group past N still computes (its row pointers are clamped to row N - 1, so
         * the loads are valid; only the grid's last block has such groups) and reaches
         * the barrier; it writes nothing */
        static_assert(MT * R <= 32, "one lane finishes each of the group's MT x R sums");
        const int warp = (int)(threadIdx.x >> 5);
        float acc[MT][R];
        gemv_partial<WT, MT, R, U>(x, wr, K, vec, s * 32 + lane, S * 32, s * 32 + lane, S * 32, acc);
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float v = recur_warp_sum(acc[m][r]);
                if (lane == 0) red[warp][m * R + r] = v;
            }
        __syncthreads();
        if (n0 >= N || s != 0 || lane >= MT * R) return;
        /* lane i finishes element i = m * R + r of the group, adding its warps in order */
        float v = 0.f;
#pragma unroll
        for (int j = 0; j < S; j++) v += red[warp + j][lane];
        const int m = lane / R, r = lane % R;
        if (n0 + r < N) {
            float *yp = y + (size_t)m * N + n0 + r;
            v = __fmul_rn(v, row_mul<WT>(scale, n0 + r)); /* no FMA with the add */
            *yp = accumulate ? *yp + v : recur_act_value(act, v);
        }
    }
}

/* The row-per-warp GEMV over the whole matrix, GEMV_WARPS warps a block, S warps
 * (1, 2 or 4) per group of R rows (gemv_row_split). pf: bytes of each row to prefetch
 * into L2 before the PDL wait. */
template <typename WT, int MT, int R, int U, int S, int LG = 32>
static __global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(const float *__restrict__ x, const WT *__restrict__ W, float *__restrict__ y, int N, int K, int accumulate,
            int act, int vec, int pf, const float *__restrict__ scale) {
    __shared__ float red[S > 1 ? GEMV_WARPS : 1][MT * R];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, s = warp % S;
    const int n0 = (((blockIdx.x * GEMV_WARPS + warp) / S) * (32 / LG) + lane / LG) * R;
    const WT *wr[R];
    gemv_rows_begin<WT, R, LG>(W, N, K, n0, s == 0 ? pf : 0, lane, wr);
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    gemv_rows_end<WT, MT, R, U, S, LG>(x, wr, y, N, K, accumulate, act, vec, scale, n0, lane, s, red);
}

/* Split-K form for matrices of few rows and long rows (the LoRA down-projections of
 * RWKV-7, N 96..480 x K 4096, and xLSTM's gate projections, N 8): the row-per-warp kernel
 * gives them a handful of blocks, each warp walking 8-32 KiB of row one load round trip
 * after another, so they run at latency, not bandwidth. Here one block of GEMV_SK_WARPS
 * warps owns one row, the warps take interleaved chunks of it, and the warps' sums are
 * added in warp order through shared memory (no atomics: deterministic). */
#define GEMV_SK_WARPS 8
template <typename WT, int MT>
static __device__ __forceinline__ void gemv_splitk_row(const float *__restrict__ x, const WT *const (&wr)[1],
                                                       float *__restrict__ y, int N, int K, int accumulate, int act,
                                                       int vec, const float *__restrict__ scale, int n,
                                                       float (*red)[MT]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float acc[MT][1];
    gemv_partial<WT, MT, 1, 2>(x, wr, K, vec, warp * 32 + lane, GEMV_SK_WARPS * 32, warp * 32 + lane,
                               GEMV_SK_WARPS * 32, acc);
#pragma unroll
    for (int m = 0; m < MT; m++) {
        const float v = recur_warp_sum(acc[m][0]);
        if (lane == 0) red[warp][m] = v;
    }
    __syncthreads();
    if (threadIdx.x < MT) {
        const int m = threadIdx.x;
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < GEMV_SK_WARPS; w++) v += red[w][m];
        v = __fmul_rn(v, row_mul<WT>(scale, n));
        float *yp = y + (size_t)m * N + n;
        *yp = accumulate ? *yp + v : recur_act_value(act, v);
    }
}

template <typename WT, int MT>
static __global__ void __launch_bounds__(GEMV_SK_WARPS * 32)
gemv_splitk_kernel(const float *__restrict__ x, const WT *__restrict__ W, float *__restrict__ y, int N, int K,
                   int accumulate, int act, int vec, int pf, const float *__restrict__ scale) {
    __shared__ float red[GEMV_SK_WARPS][MT];
    const int n = blockIdx.x;
    const WT *wr[1] = {W + (size_t)n * K};
    prefetch_l2(wr[0], pf, threadIdx.x, GEMV_SK_WARPS * 32);
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    gemv_splitk_row<WT, MT>(x, wr, y, N, K, accumulate, act, vec, scale, n, red);
}

/* Tensor-core form for 3..8 rows of x and bf16 weights. With M rows the CUDA-core kernel
 * does M fp32 FMAs per weight, which at M = 8 is ~1e11 FMAs per 7B step: the FMA pipes,
 * not DRAM, set the pace. Here each weight goes through mma.sync m16n8k16 (bf16 in, fp32
 * accumulate) with the batch rows as the 8 columns of B, and x is kept exact: each fp32 x
 * is split as hi + mid + lo, three bf16 that together hold all 24 bits of its significand
 * (v - bf16(v) is exact by Sterbenz, twice), so W.x = W.hi + W.mid + W.lo with exact
 * bf16 x bf16 products; hi products accumulate apart from mid + lo. Result: fp32-class
 * accuracy (not bf16-activation accuracy) at tensor-core issue cost.
 *
 * A block of GEMV_MMA_WARPS warps owns 16 rows (one m16 tile); the warps take
 * interleaved 32-wide chunks of K and add their accumulators in warp order (shared
 * memory; deterministic, and a column's sums never depend on other columns, so a row's
 * result is the same for every M the kernel serves). Lane (g = lane/4, c = lane%4) loads
 * 16 bytes at k = 32j + 8c of rows g and g+8 of each tile and 8 floats of x row g at the
 * same k: inside the chunk, logical k {2c, 2c+1, 2c+8, 2c+9} of k-tile t (the lane's
 * fragment slots) are physical k 8c + 4t + {0, 1, 2, 3} for A and B alike, a permutation
 * of the chunk's k, which a dot product does not see. Rows past N are clamped for loading
 * and not written; columns m >= M see x = 0 and are not written. */
#define GEMV_MMA_WARPS 8
#define GEMV_MMA_U 4 /* 32-wide chunks per warp in flight (W and x both loaded before any MMA) */

static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 t = __floats2bfloat162_rn(lo, hi); /* .x (first) in the low half */
    return *reinterpret_cast<uint32_t *>(&t);
}

/* Loads as volatile asm, which the compiler keeps in order with the (volatile) MMAs: all
 * of an iteration's loads are issued before its first MMA, not each next to its use
 * (recur_ld_cs_u4 in recur_cuda_internal.h likewise). */
static __device__ __forceinline__ float4 ld_nc_f4(const float4 *p) {
    float4 v;
    asm volatile("ld.global.nc.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
    return v;
}

/* One 32-wide chunk: wa / wb are the lane's 16 bytes of rows g and g+8, xa / xb its 8 x
 * values (zeros for a column past M). */
static __device__ __forceinline__ void gemv_mma_chunk(const uint4 &wa, const uint4 &wb, const float4 &xa,
                                                      const float4 &xb, float (&acc_h)[4], float (&acc_l)[4]) {
    const float e[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
    float h[8], md[8], lo[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        h[i] = __bfloat162float(__float2bfloat16_rn(e[i]));
        const float r = e[i] - h[i]; /* exact */
        md[i] = __bfloat162float(__float2bfloat16_rn(r));
        lo[i] = r - md[i];           /* exact; rounded to bf16 by the pack (the last ~1 bit) */
    }
#pragma unroll
    for (int kt = 0; kt < 2; kt++) {
        const int q = 4 * kt;
        /* k-tile 0: words x, y of the 16 bytes; k-tile 1: words z, w */
        const uint32_t a0 = kt ? wa.z : wa.x, a1 = kt ? wb.z : wb.x, a2 = kt ? wa.w : wa.y, a3 = kt ? wb.w : wb.y;
        recur_mma_bf16_16816(acc_h, a0, a1, a2, a3, pack_bf16x2(h[q], h[q + 1]), pack_bf16x2(h[q + 2], h[q + 3]));
        recur_mma_bf16_16816(acc_l, a0, a1, a2, a3, pack_bf16x2(md[q], md[q + 1]), pack_bf16x2(md[q + 2], md[q + 3]));
        recur_mma_bf16_16816(acc_l, a0, a1, a2, a3, pack_bf16x2(lo[q], lo[q + 1]), pack_bf16x2(lo[q + 2], lo[q + 3]));
    }
}

static __global__ void __launch_bounds__(GEMV_MMA_WARPS * 32)
gemv_mma_kernel(const float *__restrict__ x, const __nv_bfloat16 *__restrict__ W, float *__restrict__ y, int M, int N,
                int K, int accumulate, int pf) {
    __shared__ float red[GEMV_MMA_WARPS][4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, cq = lane & 3;
    const int n0 = blockIdx.x * 16;
    if (n0 + (int)(threadIdx.x >> 4) < N) /* the block's 16 rows into L2 before the PDL wait */
        prefetch_l2(W + (size_t)(n0 + (threadIdx.x >> 4)) * K, pf, threadIdx.x & 15, 16);
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    const int ra = n0 + g < N ? n0 + g : N - 1, rb = n0 + g + 8 < N ? n0 + g + 8 : N - 1;
    const uint4 *wa = (const uint4 *)(W + (size_t)ra * K + 8 * cq), *wb = (const uint4 *)(W + (size_t)rb * K + 8 * cq);
    const bool col = g < M;
    const float4 *xg = (const float4 *)(x + (size_t)(col ? g : 0) * K + 8 * cq);
    float acc_h[4] = {0.f, 0.f, 0.f, 0.f}, acc_l[4] = {0.f, 0.f, 0.f, 0.f};
    const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
    const int nch = K / 32; /* a chunk is 32 k: 4 uint4 of a W row, 8 float4 of an x row */
    int j = warp;
    for (; j + GEMV_MMA_WARPS * (GEMV_MMA_U - 1) < nch; j += GEMV_MMA_WARPS * GEMV_MMA_U) {
        uint4 va[GEMV_MMA_U], vb[GEMV_MMA_U];
        float4 xa[GEMV_MMA_U], xb[GEMV_MMA_U];
#pragma unroll
        for (int u = 0; u < GEMV_MMA_U; u++) {
            const size_t o = (size_t)(j + GEMV_MMA_WARPS * u) * 4;
            va[u] = recur_ld_cs_u4(wa + o);
            vb[u] = recur_ld_cs_u4(wb + o);
        }
#pragma unroll
        for (int u = 0; u < GEMV_MMA_U; u++) { /* row 0 stands in for a column past M, then zeroed */
            const size_t o = (size_t)(j + GEMV_MMA_WARPS * u) * 8;
            xa[u] = ld_nc_f4(xg + o);
            xb[u] = ld_nc_f4(xg + o + 1);
        }
#pragma unroll
        for (int u = 0; u < GEMV_MMA_U; u++)
            gemv_mma_chunk(va[u], vb[u], col ? xa[u] : z4, col ? xb[u] : z4, acc_h, acc_l);
    }
    for (; j < nch; j += GEMV_MMA_WARPS) {
        const uint4 va = recur_ld_cs_u4(wa + (size_t)j * 4), vb = recur_ld_cs_u4(wb + (size_t)j * 4);
        const float4 xa = ld_nc_f4(xg + (size_t)j * 8), xb = ld_nc_f4(xg + (size_t)j * 8 + 1);
        gemv_mma_chunk(va, vb, col ? xa : z4, col ? xb : z4, acc_h, acc_l);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) red[warp][i][lane] = acc_h[i] + acc_l[i];
    __syncthreads();
    /* C fragment: element i of lane (g, c) is row g (i < 2) or g + 8, column 2c + (i & 1) */
    if (threadIdx.x < 128) {
        const int i = threadIdx.x >> 5, ln = threadIdx.x & 31;
        const int n = n0 + (ln >> 2) + (i >= 2 ? 8 : 0), m = 2 * (ln & 3) + (i & 1);
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < GEMV_MMA_WARPS; w++) v += red[w][i][ln];
        if (n < N && m < M) {
            float *yp = y + (size_t)m * N + n;
            *yp = accumulate ? *yp + v : v;
        }
    }
}

/* The tensor-core kernel serves bf16 weights at M >= 3 (where the CUDA-core kernel's FMA
 * count starts to show), for shapes with whole 32-wide chunks, rows long enough for the
 * warps to share and enough rows for the grid (narrow matrices take split-K, which is
 * cheap there). M = 1, 2 keep the CUDA-core kernel: one or two FMAs per weight are free. */
static bool gemv_use_mma(int M, int N, int K, int vec) {
    return M >= 3 && vec && N >= 1024 && K % 32 == 0 && K >= 1024;
}

/* Split-K when the row-per-warp grid would leave most of the device idle and the rows are
 * long enough for every lane of every warp to have 16-byte chunks. Decided on the shape
 * alone, never on M, so a row's arithmetic is the same at every batch size. */
static bool gemv_use_splitk(int N, int K, int el) {
    return N < 1024 && K / el >= 2 * GEMV_SK_WARPS * 32;
}

/* Rows per warp and chunks per row in flight of the row-per-warp kernels, for M batch rows
 * and weights of wsize bytes. More rows per warp as M grows: each x element loaded from
 * L1 then serves R rows. M <= 2 keeps R = 2 so that small N still spreads over many
 * warps, and keeps 4 chunks per row in flight per lane (the loads of a warp are its only
 * latency hiding; with M > 2 the registers go to the accumulators instead).
 * One-byte codes (int8, e4m3) carry half the weights' bytes per row: a K = 4096 row is
 * 8 chunks per lane, so with R = 2, U = 4 a warp's whole life is two load round trips
 * and the kernel ran at ~48% of HBM bandwidth (H200, 2026-11-23: 2,292 GB/s against
 * bf16's 3,987). R = 4 puts 4 x 4 chunks (256 bytes) per lane in flight at once and shares
 * each x load over 4 rows instead of 2 (measured: docs/benchmarks.md, quantized weights). */
static constexpr __host__ __device__ int gemv_rows_per_warp(int M, int wsize) { return M <= 2 && wsize != 1 ? 2 : 4; }
static constexpr __host__ __device__ int gemv_unroll(int M) { return M <= 2 ? 4 : 2; }

/* Bytes of each row of a matrix with N rows of K WT to prefetch into L2 before the PDL
 * wait (rows_total: the rows of every matrix the launch reads); 0 without PDL, where the
 * kernel cannot start early and would just ask twice for lines it is about to load. */
static int gemv_prefetch_bytes(const recur_cuda_ctx_t *c, int K, size_t wsize, int64_t rows_total) {
    if (!c->pdl) return 0;
    const size_t row = (size_t)K * wsize, share = GEMV_PREFETCH_BYTES / (size_t)rows_total;
    return (int)((row < share ? row : share) & ~(size_t)127);
}

/* Warps per group of R rows in the row-per-warp kernels (1, 2 or 4; they split the rows'
 * K between them, gemv_rows_end). Few, long rows (RWKV-7's FFN value projection: 4096
 * rows of 16384, 1024 warps at 4 rows a warp) leave the row-per-warp grid at ~8 warps
 * an SM, each walking its rows one load round trip after another; splitting K gives
 * the device more warps, each with fewer round trips, for the same bytes. Split rows of
 * K >= 8192 while the grid has fewer than 16 warps an SM and each warp keeps at least
 * 4 KiB of weights. Measured on an H200 (bench_gemv_cuda and recur bench,
 * docs/benchmarks.md): at M = 1 the one-byte 4096 x 16384 product went from 24.4 (int8)
 * and 32.1 us (e4m3) to 18.2 and 19.9, 4096 x 10944 from 18.2 and 23.4 to 13.6 and
 * 14.5. Shorter rows are not split: the 7B models' K = 4096 products are mostly fused
 * (matmul_many), where the launch already has warps enough and split blocks made RWKV-7's
 * r, k, v and LoRA launch 17% slower (16.6 -> 19.5 us, int8) and its tokens/s 12%
 * lower, though a 4096 x 4096 product alone gained (7.5 -> 6.1 us). Splitting up to 48
 * warps an SM lost per token too. Decided on the shape (and the device) alone, never on
 * M, so a row's arithmetic is the same at every batch size, and the same for matmul and
 * matmul_many. RECUR_GEMV_SPLIT=1|2|4 forces it (A/B runs). */
static int gemv_row_split(const recur_cuda_ctx_t *c, int N, int K, size_t wsize) {
    if (c->gemv_split > 0) return c->gemv_split;
    if (K < 8192) return 1;
    const int64_t R = gemv_rows_per_warp(1, (int)wsize), groups = recur_cuda_cdiv(N, R);
    const int64_t want = (int64_t)c->sm_count * 16, warp_bytes = R * (int64_t)K * (int64_t)wsize;
    int split = 1;
    while (split < GEMV_WARPS && groups * split < want && warp_bytes / (2 * split) >= 4096) split *= 2;
    return split;
}

/* Lanes per row group of the row-per-warp kernels at M = 2: rows of at most 8 or 16
 * 16-byte chunks (RWKV-7's LoRA up-projections: K 96 and 128 in bf16, 192-256 bytes) would
 * leave half or more of each warp's lanes without a chunk, so a warp takes 2 or 4 groups
 * of R rows, 16 or 8 lanes each. A row's sum does not change: each lane still adds the
 * same chunk (its lane index within the group), and the full-warp sum's first steps only
 * added the idle lanes' zeros (exact: a partial sum that starts at +0 is never -0). So it
 * may depend on M: measured on an H200 (recur bench, RWKV-7 7B, 2026-11-24), it gained
 * 2.4% per step at batch 2 (bf16 416.9 -> 426.8 tok/s) and lost 1% at batch 1 (233.3 ->
 * 231.0), where the wider warps' extra rows outweigh the idle lanes. */
static constexpr int GEMV_LANE_GROUP_M = 2;
static int gemv_lane_group(int M, int K, int el, int vec) {
    if (M != GEMV_LANE_GROUP_M || !vec) return 32;
    const int nch = K / el;
    return nch <= 8 ? 8 : nch <= 16 ? 16 : 32;
}

template <typename WT, int MT>
static recur_status_t gemv_launch_m(recur_cuda_ctx_t *c, const float *x, const WT *W, float *y, int N, int K,
                                    int accumulate, int act, int vec, const float *scale) {
    constexpr int EL = 16 / (int)sizeof(WT);
    const int pf = gemv_prefetch_bytes(c, K, sizeof(WT), N);
    if (vec && gemv_use_splitk(N, K, EL)) {
        RCU_LAUNCH("gemv_splitk_kernel", recur_cuda_launch(c, gemv_splitk_kernel<WT, MT>, dim3((unsigned)N),
                                                           dim3(GEMV_SK_WARPS * 32), 0, x, W, y, N, K, accumulate, act,
                                                           vec, pf, scale));
        return RECUR_OK;
    }
    constexpr int R = gemv_rows_per_warp(MT, (int)sizeof(WT)), U = gemv_unroll(MT);
    const int split = gemv_row_split(c, N, K, sizeof(WT));
    const dim3 block(GEMV_WARPS * 32);
    if constexpr (MT == GEMV_LANE_GROUP_M) {
        const int lg = split == 1 ? gemv_lane_group(MT, K, EL, vec) : 32;
        if (lg < 32) {
            const unsigned grid = (unsigned)recur_cuda_cdiv(recur_cuda_cdiv(N, (int64_t)R * (32 / lg)), GEMV_WARPS);
            if (lg == 16)
                RCU_LAUNCH("gemv_kernel", recur_cuda_launch(c, gemv_kernel<WT, MT, R, U, 1, 16>, dim3(grid), block, 0, x,
                                                            W, y, N, K, accumulate, act, vec, pf, scale));
            else
                RCU_LAUNCH("gemv_kernel", recur_cuda_launch(c, gemv_kernel<WT, MT, R, U, 1, 8>, dim3(grid), block, 0, x,
                                                            W, y, N, K, accumulate, act, vec, pf, scale));
            return RECUR_OK;
        }
    }
    const unsigned grid = (unsigned)recur_cuda_cdiv(recur_cuda_cdiv(N, (int64_t)R) * split, GEMV_WARPS);
    if (split == 4)
        RCU_LAUNCH("gemv_kernel", recur_cuda_launch(c, gemv_kernel<WT, MT, R, U, 4>, dim3(grid), block, 0, x, W, y, N, K,
                                                    accumulate, act, vec, pf, scale));
    else if (split == 2)
        RCU_LAUNCH("gemv_kernel", recur_cuda_launch(c, gemv_kernel<WT, MT, R, U, 2>, dim3(grid), block, 0, x, W, y, N, K,
                                                    accumulate, act, vec, pf, scale));
    else
        RCU_LAUNCH("gemv_kernel", recur_cuda_launch(c, gemv_kernel<WT, MT, R, U, 1>, dim3(grid), block, 0, x, W, y, N, K,
                                                    accumulate, act, vec, pf, scale));
    return RECUR_OK;
}

/* *act_done: whether act was applied to the results as they were written (the CUDA-core
 * kernels; the tensor-core one leaves it to the caller). */
template <typename WT>
static recur_status_t gemv_launch(recur_cuda_ctx_t *c, const float *x, const WT *W, int M, float *y, int N, int K,
                                  int accumulate, const float *scale, int act, bool *act_done) {
    constexpr int EL = 16 / (int)sizeof(WT);
    const int vec = K % EL == 0 && ((uintptr_t)W & 15u) == 0 && ((uintptr_t)x & 15u) == 0;
    if constexpr (sizeof(WT) == 2) {
        if (gemv_use_mma(M, N, K, vec)) {
            const int pf = gemv_prefetch_bytes(c, K, sizeof(WT), N);
            const unsigned grid = (unsigned)recur_cuda_cdiv(N, 16);
            RCU_LAUNCH("gemv_mma_kernel", recur_cuda_launch(c, gemv_mma_kernel, dim3(grid), dim3(GEMV_MMA_WARPS * 32), 0,
                                                            x, (const __nv_bfloat16 *)W, y, M, N, K, accumulate, pf));
            *act_done = act == RECUR_ACT_NONE;
            return RECUR_OK;
        }
    }
    *act_done = true;
    switch (M) {
    case 1: return gemv_launch_m<WT, 1>(c, x, W, y, N, K, accumulate, act, vec, scale);
    case 2: return gemv_launch_m<WT, 2>(c, x, W, y, N, K, accumulate, act, vec, scale);
    case 3: return gemv_launch_m<WT, 3>(c, x, W, y, N, K, accumulate, act, vec, scale);
    case 4: return gemv_launch_m<WT, 4>(c, x, W, y, N, K, accumulate, act, vec, scale);
    case 5: return gemv_launch_m<WT, 5>(c, x, W, y, N, K, accumulate, act, vec, scale);
    case 6: return gemv_launch_m<WT, 6>(c, x, W, y, N, K, accumulate, act, vec, scale);
    case 7: return gemv_launch_m<WT, 7>(c, x, W, y, N, K, accumulate, act, vec, scale);
    case 8: return gemv_launch_m<WT, 8>(c, x, W, y, N, K, accumulate, act, vec, scale);
    default: RECUR_ASSERT(!"gemv_launch: M out of range");
    }
    return RECUR_E_INVAL;
}

/* ------------------------------------------------------------ fused products (matmul_many) */

/* One product of a gemv_many_kernel launch; its blocks are the grid's blocks from the
 * previous op's block_end to its own. */
struct gemv_many_op {
    const float *x;
    const void *W;
    float *y;
    const float *scale;
    int N, K, accumulate, act, vec, pf;
    int dtype;     /* recur_dtype_t of W */
    int splitk;    /* 1: one row per block (gemv_splitk_row); 0: GEMV_SK_WARPS warps of gemv_rows */
    int split;     /* the row-per-warp form's warps per row group (gemv_row_split) */
    int lg;        /* its lanes per row group (gemv_lane_group; 32 unless split is 1) */
    int block_end; /* one past its last block */
};
struct gemv_many {
    gemv_many_op op[RECUR_MATMUL_MANY_MAX];
    int n;
};

/* Block bl of product o: the same per-row arithmetic as gemv_kernel / gemv_splitk_kernel
 * (the same gemv_rows / gemv_splitk_row and the same split of K over lanes), so a fused
 * product gives the bits of the product launched alone; only the number of warps per
 * block of the row-per-warp form differs, which no row's sum sees. */
template <typename WT, int MT, int R, int S, int LG = 32>
static __device__ __forceinline__ void gemv_many_rows(const gemv_many_op &o, int bl, float (*red)[MT * R]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, s = warp % S;
    const int n0 = (((bl * GEMV_SK_WARPS + warp) / S) * (32 / LG) + lane / LG) * R;
    const WT *wr[R];
    gemv_rows_begin<WT, R, LG>((const WT *)o.W, o.N, o.K, n0, s == 0 ? o.pf : 0, lane, wr);
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    gemv_rows_end<WT, MT, R, gemv_unroll(MT), S, LG>(o.x, wr, o.y, o.N, o.K, o.accumulate, o.act, o.vec, o.scale, n0,
                                                     lane, s, red);
}

/* red: the block's [GEMV_SK_WARPS][MT * 4] floats of shared memory */
template <typename WT, int MT>
static __device__ __forceinline__ void gemv_many_block(const gemv_many_op &o, int bl, float *red) {
    const WT *W = (const WT *)o.W;
    if (o.splitk) {
        const WT *wr[1] = {W + (size_t)bl * o.K};
        prefetch_l2(wr[0], o.pf, threadIdx.x, GEMV_SK_WARPS * 32);
        recur_pdl_wait();
        recur_pdl_launch_dependents();
        gemv_splitk_row<WT, MT>(o.x, wr, o.y, o.N, o.K, o.accumulate, o.act, o.vec, o.scale, bl,
                                (float(*)[MT])red);
    } else {
        constexpr int R = gemv_rows_per_warp(MT, (int)sizeof(WT));
        static_assert(R <= 4, "red holds 4 rows per warp");
        if constexpr (MT == GEMV_LANE_GROUP_M) { /* o.lg is 32 at any other M */
            if (o.lg == 16) return gemv_many_rows<WT, MT, R, 1, 16>(o, bl, (float(*)[MT * R])red);
            if (o.lg == 8) return gemv_many_rows<WT, MT, R, 1, 8>(o, bl, (float(*)[MT * R])red);
        }
        if (o.split == 4) gemv_many_rows<WT, MT, R, 4>(o, bl, (float(*)[MT * R])red);
        else if (o.split == 2) gemv_many_rows<WT, MT, R, 2>(o, bl, (float(*)[MT * R])red);
        else gemv_many_rows<WT, MT, R, 1>(o, bl, (float(*)[MT * R])red);
    }
}

/* Up to RECUR_MATMUL_MANY_MAX products of any weight formats in one launch: a decode
 * layer's projections that read the same (or independent) inputs, which launched one by
 * one would each pay a launch, a ramp and a tail. */
template <int MT>
static __global__ void __launch_bounds__(GEMV_SK_WARPS * 32) gemv_many_kernel(const __grid_constant__ gemv_many g) {
    __shared__ float red[GEMV_SK_WARPS * MT * 4];
    int i = 0;
    while (i < g.n - 1 && (int)blockIdx.x >= g.op[i].block_end) i++;
    const gemv_many_op o = g.op[i]; /* into registers: the loops must not re-read the parameter space */
    const int bl = (int)blockIdx.x - (i ? g.op[i - 1].block_end : 0);
    switch (o.dtype) {
    case RECUR_DTYPE_BF16: gemv_many_block<__nv_bfloat16, MT>(o, bl, red); break;
    case RECUR_DTYPE_F32: gemv_many_block<float, MT>(o, bl, red); break;
    case RECUR_DTYPE_I8: gemv_many_block<int8_t, MT>(o, bl, red); break;
    default: gemv_many_block<__nv_fp8_e4m3, MT>(o, bl, red); break;
    }
}

/* Batch rows up to which matmul_many fuses. Measured on an H200 (2026-11-23, recur bench,
 * 7B shapes): at batch 1 fusing gains 4-13% per token where a layer's products share one
 * launch, but at 4 and 8 rows the fused kernel (one instantiation for every weight format,
 * so the registers of the widest: 232 at 8 rows) lost 2-8% against the per-format
 * kernels. */
#define GEMV_MANY_MAX_M 2

/* Whether one product can go into gemv_many_kernel: decode sizes, a non-empty matrix, and
 * not one that matmul would give to the tensor-core kernel (its bits would differ). */
static bool gemv_many_fits(const recur_cuda_ctx_t *c, int32_t M, const recur_matmul_op_t *o, int vec) {
    const recur_weight_t *W = o->W;
    if (M > GEMV_MANY_MAX_M || M > c->gemv_max_m || W->rows <= 0 || W->cols <= 0) return false;
    if (W->rows > INT32_MAX || W->cols > INT32_MAX) return false;
    return !(W->dtype == RECUR_DTYPE_BF16 && gemv_use_mma(M, (int)W->rows, (int)W->cols, vec));
}

static recur_status_t matmul_act(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                 int accumulate, int act, bool *act_done);

recur_status_t recur_cuda_matmul_many(recur_backend_t *b, int32_t M, int32_t n, const recur_matmul_op_t *ops) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(n >= 0 && n <= RECUR_MATMUL_MANY_MAX);
    if (M <= 0) return RECUR_OK;
    gemv_many g;
    memset(&g, 0, sizeof g);
    int64_t rows_total = 0, blocks = 0;
    for (int32_t i = 0; i < n; i++) {
        const recur_matmul_op_t *o = &ops[i];
        const recur_weight_t *W = o->W;
        RECUR_ASSERT(o->act == RECUR_ACT_NONE || !o->accumulate);
        const int wsize = (int)recur_dtype_size(W->dtype), el = 16 / wsize;
        const int vec = W->cols % el == 0 && ((uintptr_t)W->data & 15u) == 0 && ((uintptr_t)o->x & 15u) == 0;
        /* alone, as matmul + act: what does not fit, and a batch of one (the fused kernel's
         * 8-warp blocks ran a lone one-byte 16384 x 4096 product at 29 us against 20 us for
         * the 4-warp GEMV, more than the activation launch it saves; ncu, H200) */
        if (n == 1 || !gemv_many_fits(c, M, o, vec)) {
            bool act_done;
            RECUR_TRY(matmul_act(b, o->x, W, M, o->y, o->accumulate, (int)o->act, &act_done));
            if (!act_done) RECUR_TRY(b->iface.act(b, o->act, o->y, (int64_t)M * W->rows, o->y));
            continue;
        }
        if (recur_dtype_is_quant(W->dtype)) RECUR_ASSERT(W->scale);
        gemv_many_op *q = &g.op[g.n++];
        *q = (gemv_many_op){o->x, W->data, o->y, W->scale, (int)W->rows, (int)W->cols, o->accumulate, (int)o->act,
                            vec, 0, (int)W->dtype, vec && gemv_use_splitk((int)W->rows, (int)W->cols, el),
                            gemv_row_split(c, (int)W->rows, (int)W->cols, (size_t)wsize), 32, 0};
        if (q->split == 1) q->lg = gemv_lane_group(M, q->K, el, vec);
        /* row groups a warp takes: split warps to one group, or 32 / lg groups to a warp */
        const int64_t groups = recur_cuda_cdiv(q->N, (int64_t)gemv_rows_per_warp(M, wsize));
        blocks += q->splitk ? q->N
                            : recur_cuda_cdiv(q->lg < 32 ? recur_cuda_cdiv(groups, 32 / q->lg) : groups * q->split,
                                              GEMV_SK_WARPS);
        RECUR_ASSERT(blocks <= INT32_MAX);
        q->block_end = (int)blocks;
        rows_total += q->N;
    }
    if (g.n == 0) return RECUR_OK;
    for (int i = 0; i < g.n; i++)
        g.op[i].pf = gemv_prefetch_bytes(c, g.op[i].K, recur_dtype_size((recur_dtype_t)g.op[i].dtype), rows_total);
    const dim3 grid((unsigned)blocks), block(GEMV_SK_WARPS * 32);
    static_assert(GEMV_MANY_MAX_M == 2, "one gemv_many_kernel instantiation per batch size fused");
    if (M == 1) RCU_LAUNCH("gemv_many_kernel", recur_cuda_launch(c, gemv_many_kernel<1>, grid, block, 0, g));
    else RCU_LAUNCH("gemv_many_kernel", recur_cuda_launch(c, gemv_many_kernel<2>, grid, block, 0, g));
    return RECUR_OK;
}

static __global__ void round_bf16_kernel(const float *__restrict__ x, size_t n, __nv_bfloat16 *__restrict__ out) {
    recur_pdl_wait(); /* the GEMM before may still read `out` (xbf) */
    recur_pdl_launch_dependents();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(x[i]);
}

void recur_cuda_release_retired(recur_cuda_ctx_t *c) {
    for (int32_t i = 0; i < c->n_retired; i++) cudaFree(c->retired[i]);
    c->n_retired = 0;
}

recur_status_t recur_cuda_scratch_reserve(recur_cuda_ctx_t *c, void **buf, size_t *bytes, size_t need,
                                          const char *what) {
    if (need <= *bytes) return RECUR_OK;
    if (c->capturing) {
        /* An allocation cannot be recorded into a graph (and the sync below would end the
         * capture): the caller must run the same ops eagerly once before capturing them. */
        recur_log_err("cuda: the %s would have to grow to %zu bytes while a graph is being recorded "
                      "(run the same forward eagerly first)", what, need);
        return RECUR_E_CUDA;
    }
    recur_log_info("cuda: growing the %s to %.1f MiB", what, (double)need / (1 << 20));
    /* Queued kernels may still use the old buffer. */
    RCU_CHECK(cudaStreamSynchronize(c->stream));
    if (*buf && c->n_graphs > 0) {
        /* Graphs recorded earlier still point at the old buffer: keep it until they go. */
        if (c->n_retired == c->cap_retired) {
            int32_t cap = c->cap_retired ? 2 * c->cap_retired : 4;
            void **r = (void **)realloc(c->retired, (size_t)cap * sizeof *r);
            if (!r) return RECUR_E_NOMEM;
            c->retired = r;
            c->cap_retired = cap;
        }
        c->retired[c->n_retired++] = *buf;
    } else {
        RCU_CHECK(cudaFree(*buf));
    }
    *buf = NULL;
    *bytes = 0;
    RCU_CHECK(cudaMalloc(buf, need));
    *bytes = need;
    return RECUR_OK;
}

/* Makes c->xbf hold at least n elements. Grows only past the largest size asked so far
 * (logged), so a server's steady state never allocates here. */
recur_status_t recur_cuda_xbf_reserve(recur_cuda_ctx_t *c, size_t n) {
    void *p = c->xbf;
    size_t bytes = c->xbf_elems * sizeof(__nv_bfloat16);
    recur_status_t st = recur_cuda_scratch_reserve(c, &p, &bytes, n * sizeof(__nv_bfloat16),
                                                   "bf16 activation scratch of the GEMM");
    c->xbf = (__nv_bfloat16 *)p;
    c->xbf_elems = bytes / sizeof(__nv_bfloat16);
    return st;
}

recur_status_t recur_cuda_round_x_bf16(recur_cuda_ctx_t *c, const float *x, size_t nx) {
    recur_status_t st = recur_cuda_xbf_reserve(c, nx);
    if (st != RECUR_OK) return st;
    size_t blocks = (nx + 255) / 256, cap = (size_t)c->sm_count * 16;
    RCU_LAUNCH("round_bf16_kernel", recur_cuda_launch(c, round_bf16_kernel, dim3((unsigned)(blocks < cap ? blocks : cap)),
                                                      dim3(256), 0, x, nx, c->xbf));
    return RECUR_OK;
}

/* matmul, and act on the results where the kernel can apply it as it writes them (the
 * decode GEMVs); *act_done says whether it did (never with accumulate). */
static recur_status_t matmul_act(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                 int accumulate, int act, bool *act_done) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    *act_done = act == RECUR_ACT_NONE;
    RECUR_ASSERT(act == RECUR_ACT_NONE || !accumulate);
    const int64_t N = W->rows, K = W->cols;
    RECUR_ASSERT(N <= INT32_MAX && K <= INT32_MAX);
    if (M <= 0 || N <= 0) return RECUR_OK;
    if (K == 0) { /* an empty sum: y = 0, or y unchanged */
        if (!accumulate) RCU_CHECK(cudaMemsetAsync(y, 0, (size_t)M * N * sizeof(float), c->stream));
        return RECUR_OK;
    }
    if (recur_dtype_is_quant(W->dtype)) { /* recur_backend.h: fp32 activations up to 8 rows */
        static_assert(RECUR_CUDA_GEMV_MAX_M >= RECUR_QUANT_GEMV_MAX_M, "the GEMVs serve the decode sizes");
        RECUR_ASSERT(W->scale);
        if (M > c->gemv_max_m) return recur_cuda_qgemm(c, x, W, M, y, accumulate);
        if (W->dtype == RECUR_DTYPE_I8)
            return gemv_launch(c, x, (const int8_t *)W->data, M, y, (int)N, (int)K, accumulate, W->scale, act,
                               act_done);
        return gemv_launch(c, x, (const __nv_fp8_e4m3 *)W->data, M, y, (int)N, (int)K, accumulate, W->scale, act,
                           act_done);
    }
    if (M <= c->gemv_max_m) {
        if (W->dtype == RECUR_DTYPE_BF16)
            return gemv_launch(c, x, (const __nv_bfloat16 *)W->data, M, y, (int)N, (int)K, accumulate,
                               (const float *)nullptr, act, act_done);
        RECUR_ASSERT(W->dtype == RECUR_DTYPE_F32);
        return gemv_launch(c, x, (const float *)W->data, M, y, (int)N, (int)K, accumulate, (const float *)nullptr, act,
                           act_done);
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (W->dtype == RECUR_DTYPE_F32) {
        RCU_CUBLAS(cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, M, (int)K, &alpha, (const float *)W->data,
                               (int)K, x, (int)K, &beta, y, (int)N));
        return RECUR_OK;
    }
    RECUR_ASSERT(W->dtype == RECUR_DTYPE_BF16);
    recur_status_t st = recur_cuda_round_x_bf16(c, x, (size_t)M * (size_t)K);
    if (st != RECUR_OK) return st;
    RCU_CUBLAS(cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, M, (int)K, &alpha, W->data, CUDA_R_16BF,
                            (int)K, c->xbf, CUDA_R_16BF, (int)K, &beta, y, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
    return RECUR_OK;
}

recur_status_t recur_cuda_matmul(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                 int accumulate) {
    bool act_done;
    return matmul_act(b, x, W, M, y, accumulate, RECUR_ACT_NONE, &act_done);
}
