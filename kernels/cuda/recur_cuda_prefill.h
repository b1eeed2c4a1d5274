/* recur_cuda_prefill.h: the long-sequence (prefill) paths of the two recurrences on the
 * CUDA backend, and the device helpers they share (private; not installed).
 *
 * - recur_cuda_mlstm_tc.cu: the mLSTM cell chunkwise (models/XLSTM.md §5) with the four
 *   per-chunk products on tensor cores, parallel over chunks where the math allows it.
 * - recur_cuda_wkv_wy.cu: the RWKV-7 WKV in the chunked WY form (models/RWKV7.md §2.2),
 *   tensor cores for the state products.
 * Both keep the state and every accumulation in fp32 (a bf16 state is widened on load
 * and rounded once, when the call stores it). The tensor-core operands are fp32
 * values split into two tf32 parts (hi + lo, "3xTF32": hi*hi + hi*lo + lo*hi), which is
 * accurate to about 2^-21 relative per product, i.e. fp32-class: the op tests hold these
 * paths to the same 1e-4 as the fp32 CUDA-core kernels, with no new tolerance.
 *
 * The ops (recur_cuda_mlstm, recur_cuda_rwkv7_wkv) pick a path per sequence by length;
 * the _path entry points below force one, for tests and the micro-benchmark
 * (tests/bench_prefill_cuda.c) that chose the switch-over lengths. C-callable. */
#ifndef RECUR_CUDA_PREFILL_H
#define RECUR_CUDA_PREFILL_H

#include "recur_backend.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recur_cuda_path {
    RECUR_CUDA_PATH_AUTO = 0,    /* by sequence length (what the op table uses)           */
    RECUR_CUDA_PATH_SERIAL = 1,  /* the token-serial / CUDA-core kernels, every sequence   */
    RECUR_CUDA_PATH_CHUNKED = 2  /* the tensor-core chunked kernels, every sequence whose
                                    shape they support (others still go serial)           */
} recur_cuda_path_t;

recur_status_t recur_cuda_mlstm_path(recur_backend_t *b, const recur_mlstm_args_t *a, recur_cuda_path_t path);
recur_status_t recur_cuda_rwkv7_wkv_path(recur_backend_t *b, const recur_rwkv7_wkv_args_t *a, recur_cuda_path_t path);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
#include <cuda_runtime.h>
#include <stdint.h>

#include "recur_cuda_internal.h"

/* Sequences at least this long take the chunked paths in AUTO mode. Measured on an H100
 * with tests/bench_prefill_cuda.c (ms per call, 7B shapes, serial vs chunked): mlstm
 * T=8 0.044 vs 0.045, T=16 0.053 vs 0.046; wkv T=8 0.010 vs 0.010, T=16 0.016 vs 0.010. */
#define RECUR_MLSTM_TC_MIN_LEN 16
#define RECUR_WKV_WY_MIN_LEN 16

/* Launchers of the chunked paths (recur_cuda_mlstm_tc.cu, recur_cuda_wkv_wy.cu). They
 * handle exactly the sequences of length >= min_len (min_len >= 1) and leave the others
 * untouched; *supported = 0 (and nothing launched) when the shape or the pointers'
 * alignment is outside what they implement. */
recur_status_t recur_cuda_mlstm_tc(recur_cuda_ctx_t *c, const recur_mlstm_args_t *a, int32_t min_len, int *supported);
recur_status_t recur_cuda_mlstm_tc_init(recur_cuda_ctx_t *c);
recur_status_t recur_cuda_wkv_wy(recur_cuda_ctx_t *c, const recur_rwkv7_wkv_args_t *a, int32_t min_len, int *supported);
recur_status_t recur_cuda_wkv_wy_init(recur_cuda_ctx_t *c);

/* ---- the mLSTM state piece of sequence sq (recur_mlstm_state_bytes): its first byte,
 * and n [NH][DQK] (then m [NH]) in f32 after C, whose element size is the state's dtype */
static __device__ __forceinline__ char *recur_ml_state(const recur_mlstm_args_t &p, int sq) {
    return (char *)p.state.pool + (size_t)p.rows.slot[sq] * p.state.slot_bytes + p.state.offset;
}
static __device__ __forceinline__ float *recur_ml_state_n(const recur_mlstm_args_t &p, char *st) {
    const size_t es = p.state.mat_dtype == RECUR_DTYPE_BF16 ? 2 : 4;
    return (float *)(st + (size_t)p.n_head * p.dqk * p.dv * es);
}

/* ---- device helpers: cp.async and 3xTF32 mma.sync (m16n8k8, row.col, fp32 accumulate) */

/* 16-byte global -> shared copy, asynchronous; src_bytes 0 zero-fills the 16 bytes
 * (rows past a sequence's end) without reading src. */
static __device__ __forceinline__ void recur_cp_async16(void *smem, const void *gmem, int src_bytes) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void recur_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void recur_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

/* Barrier among `count` threads (a multiple of 32) on named barrier `id` (1..15; 0 is
 * __syncthreads), so that groups of warps with different roles sync separately. */
static __device__ __forceinline__ void recur_bar_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/* x rounded to tf32 (10 mantissa bits, to nearest, ties away) by integer add and mask:
 * two integer instructions, fewer than cvt.rna.tf32.f32 takes. */
static __device__ __forceinline__ uint32_t recur_tf32_rn(float x) { return (__float_as_uint(x) + 0x1000u) & 0xffffe000u; }

/* fp32 x = hi + lo for the tensor cores: hi = tf32(x), lo = tf32(x - hi) (x - hi is exact,
 * Sterbenz), so |x - hi - lo| <= 2^-22 |x| and the three products carry about 2^-21
 * relative error (the dropped lo*lo term is 2^-22): fp32-class for these sums. */
static __device__ __forceinline__ void recur_tf32_split(float x, uint32_t &hi, uint32_t &lo) {
    hi = recur_tf32_rn(x);
    lo = recur_tf32_rn(x - __uint_as_float(hi));
}

/* A fragment of m16n8k8 (16 x 8, row-major) split in two, B fragment (8 x 8) likewise.
 * Lane l = 4 g + q (g = l >> 2, q = l & 3) holds
 *   A: a0 = A[g][q], a1 = A[g+8][q], a2 = A[g][q+4], a3 = A[g+8][q+4]
 *   B: b0 = B[q][g], b1 = B[q+4][g]
 *   C/D: c0 = D[g][2q], c1 = D[g][2q+1], c2 = D[g+8][2q], c3 = D[g+8][2q+1]
 * (PTX ISA, "Matrix fragments for mma.m16n8k8" with .tf32). The k index only pairs A's
 * columns with B's rows, so any permutation of k applied to both gives the same product:
 * the kernels use k-position q <-> logical 2q and q+4 <-> 2q+1 where an operand comes
 * straight from accumulator registers (c0/c1 are adjacent columns). */
struct recur_fa { uint32_t h[4], l[4]; };
struct recur_fb { uint32_t h[2], l[2]; };

static __device__ __forceinline__ recur_fa recur_make_a(float a0, float a1, float a2, float a3) {
    recur_fa f;
    recur_tf32_split(a0, f.h[0], f.l[0]);
    recur_tf32_split(a1, f.h[1], f.l[1]);
    recur_tf32_split(a2, f.h[2], f.l[2]);
    recur_tf32_split(a3, f.h[3], f.l[3]);
    return f;
}
static __device__ __forceinline__ recur_fb recur_make_b(float b0, float b1) {
    recur_fb f;
    recur_tf32_split(b0, f.h[0], f.l[0]);
    recur_tf32_split(b1, f.h[1], f.l[1]);
    return f;
}

static __device__ __forceinline__ void recur_mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* d += A B in 3xTF32: the two small cross terms first, so they are not lost against the
 * large one in the fp32 accumulator. */
static __device__ __forceinline__ void recur_mma3(float (&d)[4], const recur_fa &a, const recur_fb &b) {
    recur_mma_tf32(d, a.l, b.h);
    recur_mma_tf32(d, a.h, b.l);
    recur_mma_tf32(d, a.h, b.h);
}
#endif /* __CUDACC__ */

#endif
