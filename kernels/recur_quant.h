/* recur_quant.h: the one-byte weight formats (int8, FP8 E4M3) and the scalar rules every
 * backend follows to make and to read them (header-only: small static inline functions,
 * for C and CUDA; those marked RECUR_QUANT_HD are device code too).
 *
 * A quantized matrix W [rows][cols] is stored as codes [rows][cols], one byte each, and one
 * fp32 scale per row: W[r][c] ~ value(code[r][c]) * scale[r]. A row is an output channel
 * of y = x W^T, so its scale multiplies a whole dot product once, after the sum, and a
 * tensor-parallel rank's block of rows or columns is quantized from its own values
 * (column-parallel blocks get exactly the whole matrix's codes; row-parallel blocks get
 * scales from their own columns).
 *
 * The rule (recur_quant_row), per row:
 *   absmax = the largest |w| over the row's finite elements;
 *   scale  = absmax / QMAX (QMAX = 127 for int8, 448 for e4m3), or 1 where that is not > 0
 *            (an all-zero row);
 *   int8:  code = round-half-even(clamp(w / scale, -127, 127)); NaN -> 0  (-128 unused:
 *          the format is symmetric);
 *   e4m3:  code = e4m3(w / scale), rounded to nearest even and saturated at +-448 (CUDA's
 *          __nv_cvt_float_to_fp8(.., __NV_SATFINITE, __NV_E4M3)); NaN -> 0.
 * w / scale is one IEEE division (correctly rounded) wherever it runs, so a backend that
 * quantizes on the device writes the same bytes as this host code (test_quant checks it,
 * and checks the conversion against a double-precision search over all 256 codes).
 *
 * E4M3 ("e4m3fn" of the OCP FP8 spec): sign, 4 exponent bits (bias 7), 3 mantissa bits;
 * no infinities; S.1111.111 is NaN; largest 448 = 1.75 * 2^8; smallest normal 2^-6;
 * subnormals m * 2^-9. */
#ifndef RECUR_QUANT_H
#define RECUR_QUANT_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "recur_dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __CUDACC__
#define RECUR_QUANT_HD __host__ __device__
#else
#define RECUR_QUANT_HD
#endif

#define RECUR_QUANT_I8_MAX 127.0f
#define RECUR_QUANT_F8_MAX 448.0f

/* Batches of more than this many rows multiply quantized weights on tensor cores, which
 * take the activations in a narrower type (recur_backend.h, matmul): bf16 with int8
 * weights, e4m3 (per-row scale, recur_quant_act_scale) with fp8 weights. Up to this many
 * rows the activations stay fp32. The same on every backend. The CUDA backend's decode
 * GEMVs serve the same sizes for every weight format: from 3 rows up its tensor-core
 * products were faster (H200, 2026-11-24: batch-8 decode of RWKV-7 7.2B 748 -> 1,424
 * tok/s int8, 750 -> 1,512 fp8, 1,055 -> 1,250 bf16; docs/benchmarks.md). */
#define RECUR_QUANT_GEMV_MAX_M 2

static inline int recur_dtype_is_quant(recur_dtype_t t) {
    return t == RECUR_DTYPE_I8 || t == RECUR_DTYPE_F8E4M3;
}

static inline float recur_quant_max(recur_dtype_t t) {
    return t == RECUR_DTYPE_I8 ? RECUR_QUANT_I8_MAX : RECUR_QUANT_F8_MAX;
}

/* Bytes of a quantized matrix's buffer: the codes, padded to 16 bytes, then rows fp32
 * scales (one allocation, so freeing the data frees the scales). */
static inline size_t recur_quant_codes_bytes(int64_t rows, int64_t cols) {
    return ((size_t)rows * (size_t)cols + 15u) & ~(size_t)15u;
}
static inline size_t recur_quant_buffer_bytes(int64_t rows, int64_t cols) {
    return recur_quant_codes_bytes(rows, cols) + (size_t)rows * sizeof(float);
}

/* ---------------------------------------------------------------- E4M3 <-> fp32 */

/* fp32 -> E4M3, round to nearest even, saturating finite values and infinities at +-448;
 * NaN -> S.1111.111. The sign of zero is kept. */
static inline uint8_t recur_f32_to_e4m3(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint8_t)(sign | 0x7fu);       /* NaN */
    if (a >= 0x43e00000u) return (uint8_t)(sign | 0x7eu);      /* >= 448, Inf: saturate */
    if (a < 0x3c800000u) {                                    /* below 2^-6: subnormal steps of 2^-9 */
        const float t = fabsf(f) * 512.0f;                    /* exact: a power of two, t < 8 */
        return (uint8_t)(sign | (uint8_t)nearbyintf(t));      /* ties to even; 8 is 2^-6, code 0x08 */
    }
    /* normal: round the 23-bit mantissa to 3 bits, ties to even (a carry moves into the
     * exponent, which is right); the largest result is 448 itself (a < 448 here) */
    const uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);
    const uint32_t e = (r >> 23) - 120u, m = (r >> 20) & 7u;
    return (uint8_t)(sign | (e << 3) | m);
}

/* E4M3 -> fp32, exact (NaN for S.1111.111). */
static inline float recur_e4m3_to_f32(uint8_t c) {
    const int e = (c >> 3) & 15, m = c & 7;
    float v;
    if (e == 15 && m == 7) v = NAN;
    else if (e == 0) v = (float)m * 0x1p-9f;
    else v = ldexpf(1.0f + (float)m * 0.125f, e - 7);
    return (c & 0x80u) ? -v : v;
}

/* ---------------------------------------------------------------- quantizing */

/* A row's scale from its largest finite |value| (recur_quant_row). */
static inline float recur_quant_scale(float absmax, float qmax) {
    const float s = absmax / qmax;
    return s > 0.0f ? s : 1.0f;
}

static inline int8_t recur_quant_i8(float w, float scale) {
    float t = w / scale;
    if (t != t) return 0;
    if (t > RECUR_QUANT_I8_MAX) t = RECUR_QUANT_I8_MAX;
    if (t < -RECUR_QUANT_I8_MAX) t = -RECUR_QUANT_I8_MAX;
    return (int8_t)nearbyintf(t); /* the default rounding mode: to nearest even */
}

static inline uint8_t recur_quant_f8(float w, float scale) {
    const float t = w / scale;
    return t != t ? 0 : recur_f32_to_e4m3(t);
}

/* One row of n values -> codes and its scale (dt: I8 or F8E4M3). */
static inline void recur_quant_row(const float *w, int64_t n, recur_dtype_t dt, uint8_t *codes, float *scale) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float a = fabsf(w[i]);
        if (a <= FLT_MAX && a > amax) amax = a; /* finite only */
    }
    const float s = recur_quant_scale(amax, recur_quant_max(dt));
    *scale = s;
    if (dt == RECUR_DTYPE_I8)
        for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)recur_quant_i8(w[i], s);
    else
        for (int64_t i = 0; i < n; i++) codes[i] = recur_quant_f8(w[i], s);
}

/* The value a code stands for, before its row's scale. */
static inline float recur_quant_code_value(recur_dtype_t dt, uint8_t c) {
    return dt == RECUR_DTYPE_I8 ? (float)(int8_t)c : recur_e4m3_to_f32(c);
}

/* The scale of one activation row for an e4m3 GEMM (fp8 weights, batches above
 * RECUR_QUANT_GEMV_MAX_M rows): the largest |x| / 448, or 1 where that is not > 0. Unlike
 * the weights' rule, infinities count (and NaN stays NaN in the codes), so a non-finite
 * activation still shows in the output. The row's codes are recur_f32_to_e4m3(x / sx). */
static inline float recur_quant_act_scale(const float *x, int64_t n) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        if (a > amax) amax = a; /* NaN compares false: skipped */
    }
    return recur_quant_scale(amax, RECUR_QUANT_F8_MAX);
}

/* ---------------------------------------------------------------- unpacking on a GPU
 * Bit-level forms the CUDA GEMV uses to widen 4 codes held in one 32-bit word (byte 0 =
 * the first code) with a few integer operations instead of a conversion per code (a
 * conversion instruction per weight would cost more than the weight's load at batch 1).
 * Plain integer code, so test_quant checks them here, exhaustively. */

/* int8: byte i of w as the bits of the float 2^23 + 128 + code (the code's biased byte
 * under the exponent of 2^23); subtracting RECUR_QUANT_I8_BIAS gives the code exactly.
 * (On the device one __byte_perm forms the same word: selector nibbles, lowest first, take
 * byte i of the first operand, then bytes 4, 4 and 7 of {0x4b000000 : first}, i.e. 00 00 4b.) */
#define RECUR_QUANT_I8_BIAS 8388736.0f /* 2^23 + 128 */
RECUR_QUANT_HD static inline uint32_t recur_i8x4_float_bits(uint32_t w, int i) {
#ifdef __CUDA_ARCH__
    /* the same bits in one PRMT: byte i of w ^ 0x80808080 under the bytes 00 00 4b of 0x4b000000 */
    return __byte_perm(w ^ 0x80808080u, 0x4b000000u, 0x7440u + (unsigned)i);
#else
    return 0x4b000000u | (((w ^ 0x80808080u) >> (8 * i)) & 0xffu);
#endif
}

/* e4m3: bytes 0 and 2 (odd = 0) or 1 and 3 (odd = 1) of w as an f16x2 word (the first of
 * the two bytes in the low half) whose halves are the codes' values times 2^-8, exactly:
 * e4m3's exponent and mantissa bits become binary16's, subnormals included (binary16's
 * exponent bias is 8 more). The sign moves from bit 7 to bit 15 by adding it to itself. */
#define RECUR_QUANT_F8_F16_SCALE 256.0f /* multiply the f16 values by this */
RECUR_QUANT_HD static inline uint32_t recur_e4m3x2_f16x2_bits(uint32_t w, int odd) {
    const uint32_t t = (odd ? w >> 8 : w) & 0x00ff00ffu;
    return (t + (t & 0x00800080u)) << 7;
}

#ifdef __cplusplus
}
#endif
#endif
