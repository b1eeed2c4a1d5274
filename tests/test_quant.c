/* test_quant.c: the one-byte weight formats (recur_quant.h, --weights int8|fp8).
 *
 *   test_quant          the CPU backend (labels unit + model; no GPU needed)
 *   test_quant cuda     the CUDA backend against the CPU one (label gpu; 77 without a GPU)
 *
 * CPU:
 *   1. E4M3: all 256 codes decode to the value of the format's definition (computed in
 *      double); every finite code round-trips; recur_f32_to_e4m3 equals a double-precision
 *      nearest-value search (ties to the even code, saturation at 448) on every midpoint
 *      between adjacent codes, one float either side of each, the specials, and 300,000
 *      random floats over 2^-14 .. 2^12; the GPU's bit-level widenings (recur_i8x4_float_bits,
 *      recur_e4m3x2_f16x2_bits) over every byte in every position.
 *   2. The quantizer against the rule computed in double (scale = absmax / QMAX correctly
 *      rounded; every code a nearest representable value of w / scale), on rows with
 *      outliers, tiny and huge magnitudes, zeros, NaN and Inf; and the checker itself must
 *      reject a scale 1% off, a scale from the wrong QMAX, and one flipped code.
 *   3. matmul with quantized weights against the documented semantics (recur_backend.h)
 *      evaluated in double from the stored codes and scales, at M = 1..200 (GEMV and GEMM
 *      forms): |y - ref| <= 1e-5 * sum_k |terms| (fp32 summation); the same reference with
 *      a scale 1% off must fail that bound.
 *   4. Quality: the real tiny RWKV-7, the random synth7, and the two xLSTM fixtures, each
 *      token by token (decode: activations fp32) and in pieces of 64 (prefill: bf16 / e4m3
 *      activations), in int8 and fp8 (and bf16, emulated: fp32 arithmetic on bf16-rounded
 *      weights, for context): max |logit - fp32 reference| within the per-model bound below,
 *      above a floor (the mode really quantized), and the reference's greedy token on every
 *      row whose top-2 margin exceeds twice the bound.
 * CUDA: the same bytes from weight_upload and weight_random as the CPU quantizer (codes
 *   and scales compared bit for bit); the device's e4m3 conversion on all the points of 1
 *   (rows whose absmax is 448, so the scale is exactly 1); matmul at M = 1..200 against the
 *   documented semantics and the CPU backend on the same codes within 2e-5 * sum |terms|
 *   (only the summation order may differ; 2e-4 for cuBLASLt's FP8 GEMM, whose tensor cores
 *   add with fewer bits), with cuBLASLt's FP8 GEMM and with the bf16 fallback; and the quality checks of
 *   4 with the bound plus test_models_cuda's bf16 bound (embeddings and gate LoRAs are bf16
 *   on the GPU, fp32 on the CPU).
 * test_quant dist TP PP (under mpirun): the quantized formats on a TP x PP grid (run_dist).
 * Bounds (max |logit error|, from measured values with about 2x margin; docs/testing.md). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_backend.h"
#include "recur_comm.h"
#include "recur_log.h"
#include "recur_model.h"
#include "recur_model_files.h"
#include "recur_quant.h"
#include "recur_testutil.h"

static int failures;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

#define CHECK(cond, ...)                                                                                             \
    do {                                                                                                             \
        if (!(cond)) {                                                                                               \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                     \
            fprintf(stderr, __VA_ARGS__);                                                                            \
            fputc('\n', stderr);                                                                                     \
            failures++;                                                                                              \
        }                                                                                                            \
    } while (0)

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---------------------------------------------------------------- 1. E4M3 */

/* The value of code c from the format's definition, in double (NaN for S.1111.111). */
static double e4m3_def(int c) {
    const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    const double v = e == 0 ? m / 8.0 * pow(2.0, -6) : (1.0 + m / 8.0) * pow(2.0, e - 7);
    return s ? -v : v;
}

/* The e4m3 code nearest to f by a search over the finite codes in double, ties to the even
 * code, sign kept, beyond 448 saturating (RNE + satfinite). */
static uint8_t e4m3_ref(float f) {
    if (f != f) return 0x7f;
    const double a = fabs((double)f);
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c <= 0x7e; c++) {
        const double d = fabs(a - e4m3_def(c));
        if (d < bd || (d == bd && (c & 1) == 0)) bd = d, best = c;
    }
    return (uint8_t)(best | (signbit(f) ? 0x80 : 0));
}

static void test_e4m3(void) {
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        const float v = recur_e4m3_to_f32((uint8_t)c);
        const double d = e4m3_def(c);
        if (isnan(d)) {
            bad += !isnan(v);
            continue;
        }
        bad += (double)v != d || !!signbit(v) != (c >= 128);
        bad += recur_f32_to_e4m3(v) != c; /* round trip, -0 included */
    }
    CHECK(bad == 0, "e4m3: %d of 256 codes decode or round-trip wrongly", bad);
    CHECK(recur_e4m3_to_f32(0x7e) == 448.f && recur_e4m3_to_f32(0x08) == 0x1p-6f && recur_e4m3_to_f32(0x01) == 0x1p-9f,
          "e4m3: 448 / 2^-6 / 2^-9 landmarks");

    /* midpoints of adjacent codes (exact in fp32) and one float either side of each */
    int n = 0;
    bad = 0;
    for (int c = 0; c < 0x7e; c++) {
        const float mid = (float)((e4m3_def(c) + e4m3_def(c + 1)) / 2);
        const float pts[3] = {mid, f_of(u_of(mid) - 1), f_of(u_of(mid) + 1)};
        for (int j = 0; j < 3; j++)
            for (int s = 0; s < 2; s++) {
                const float x = s ? -pts[j] : pts[j];
                n++;
                if (recur_f32_to_e4m3(x) != e4m3_ref(x)) {
                    if (bad++ < 5)
                        fprintf(stderr, "e4m3(%a) = 0x%02x, nearest-even 0x%02x\n", (double)x, recur_f32_to_e4m3(x),
                                e4m3_ref(x));
                }
            }
    }
    static const float specials[] = {0.f, -0.f, 0x1p-149f, -0x1p-149f, 0x1p-10f, 0x1p-11f, 3 * 0x1p-11f, FLT_MIN,
                                     448.f, 449.f, 463.99f, 464.f, 465.f, 480.f, 1e6f, FLT_MAX, INFINITY, -INFINITY,
                                     -448.f, -464.f, -1e30f, 0x1.ep-7f};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++, n++)
        if (recur_f32_to_e4m3(specials[i]) != e4m3_ref(specials[i])) {
            if (bad++ < 10)
                fprintf(stderr, "e4m3(%a) = 0x%02x, nearest-even 0x%02x\n", (double)specials[i],
                        recur_f32_to_e4m3(specials[i]), e4m3_ref(specials[i]));
        }
    CHECK((recur_f32_to_e4m3(NAN) & 0x7f) == 0x7f, "e4m3(NaN) must be NaN");
    /* random floats: uniform exponent over 2^-14 .. 2^12, random mantissa and sign */
    for (int i = 0; i < 300000; i++, n++) {
        const uint64_t r = recur_test_rng_next(&rng);
        const uint32_t e = 127 - 14 + (uint32_t)(r % 27), man = (uint32_t)(r >> 8) & 0x7fffffu;
        const float x = f_of((uint32_t)((r >> 40) & 1) << 31 | e << 23 | man);
        if (recur_f32_to_e4m3(x) != e4m3_ref(x) && bad++ < 10)
            fprintf(stderr, "e4m3(%a) = 0x%02x, nearest-even 0x%02x\n", (double)x, recur_f32_to_e4m3(x), e4m3_ref(x));
    }
    CHECK(bad == 0, "e4m3 rounding: %d of %d points differ from the nearest-even search", bad, n);
    fprintf(stderr, "e4m3 conversion: 256 codes, %d rounding points checked, %d bad\n", n, bad);

    /* the GPU's widenings, every byte in every position */
    bad = 0;
    for (uint32_t b = 0; b < 256; b++)
        for (int i = 0; i < 4; i++) {
            const uint32_t w = (b << (8 * i)) | (0xa5u << (8 * ((i + 1) & 3))); /* a neighbour byte set too */
            bad += f_of(recur_i8x4_float_bits(w, i)) - RECUR_QUANT_I8_BIAS != (float)(int8_t)b;
        }
    for (uint32_t lo = 0; lo < 256; lo++)
        for (uint32_t hi = 0; hi < 256; hi++) {
            if ((lo & 0x7f) == 0x7f || (hi & 0x7f) == 0x7f) continue; /* NaN codes: never produced for weights */
            const uint32_t w_even = lo | hi << 16 | 0xff00ff00u, w_odd = lo << 8 | hi << 24 | 0x00ff00ffu;
            const uint32_t e = recur_e4m3x2_f16x2_bits(w_even, 0), o = recur_e4m3x2_f16x2_bits(w_odd, 1);
            const float want_lo = recur_e4m3_to_f32((uint8_t)lo), want_hi = recur_e4m3_to_f32((uint8_t)hi);
            bad += recur_f16_to_f32((uint16_t)e) * RECUR_QUANT_F8_F16_SCALE != want_lo;
            bad += recur_f16_to_f32((uint16_t)(e >> 16)) * RECUR_QUANT_F8_F16_SCALE != want_hi;
            bad += recur_f16_to_f32((uint16_t)o) * RECUR_QUANT_F8_F16_SCALE != want_lo;
            bad += recur_f16_to_f32((uint16_t)(o >> 16)) * RECUR_QUANT_F8_F16_SCALE != want_hi;
        }
    CHECK(bad == 0, "GPU code widenings: %d wrong", bad);
}

/* ---------------------------------------------------------------- 2. the quantizer */

/* Failures of (codes, scale) as the quantization of row w against the rule in double. */
static int check_quant_row(const float *w, int n, recur_dtype_t dt, const uint8_t *codes, float scale, int verbose) {
    const double qmax = dt == RECUR_DTYPE_I8 ? 127.0 : 448.0;
    double amax = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(w[i]) && fabs((double)w[i]) > amax) amax = fabs((double)w[i]);
    const float want_s = amax > 0 && (float)(amax / qmax) > 0.f ? (float)(amax / qmax) : 1.f;
    int bad = 0;
    if (scale != want_s) {
        if (verbose) fprintf(stderr, "scale %a, want %a\n", (double)scale, (double)want_s);
        bad++;
    }
    for (int i = 0; i < n; i++) {
        const double t = isnan(w[i]) ? 0.0 : (double)w[i] / (double)want_s; /* the exact quotient */
        const double v = recur_quant_code_value(dt, codes[i]);
        int ok;
        if (dt == RECUR_DTYPE_I8) {
            const double tc = t > 127 ? 127 : t < -127 ? -127 : t;
            /* a nearest integer of the exact quotient (the fp32 quotient may sit on a tie) */
            ok = codes[i] != 0x80 && fabs(v - tc) <= 0.5 + 1e-6 * fabs(tc);
        } else {
            /* a nearest finite e4m3 value (ties either way), saturating */
            const double tc = t > 448 ? 448 : t < -448 ? -448 : t;
            double best = INFINITY;
            for (int c = 0; c <= 0x7e; c++) {
                const double d = fabs(fabs(tc) - e4m3_def(c));
                if (d < best) best = d;
            }
            ok = !isnan(v) && fabs(fabs(v) - fabs(tc)) <= best * (1 + 1e-6) + 1e-300 && (v == 0 || (v < 0) == (tc < 0));
        }
        if (!ok) {
            if (verbose && bad < 5)
                fprintf(stderr, "  w[%d] = %a: code 0x%02x (%g), quotient %.9g\n", i, (double)w[i], codes[i], v, t);
            bad++;
        }
    }
    return bad;
}

/* Test rows: mixed magnitudes, an outlier, zeros, tiny and huge, non-finite elements. */
#define QROWS 9
#define QCOLS 1000
static void make_rows(float *w) {
    for (int r = 0; r < QROWS; r++) {
        float *x = w + (size_t)r * QCOLS;
        const float mag = r == 3 ? 1e-30f : r == 4 ? 1e30f : r == 7 ? 1e-40f : 0.05f;
        recur_test_fill(&rng, x, QCOLS, -mag, mag);
        if (r == 1) x[17] = 3.0f;                       /* an outlier */
        if (r == 2) memset(x, 0, QCOLS * sizeof(float)); /* all zero: scale 1 */
        if (r == 5) x[3] = NAN, x[9] = INFINITY, x[11] = -INFINITY;
        if (r == 6)
            for (int i = 0; i < QCOLS; i++) x[i] = (float)(i % 255 - 127) * 0.5f; /* exact ties for int8 */
    }
}

static void test_quantizer(void) {
    float *w = malloc((size_t)QROWS * QCOLS * sizeof(float));
    uint8_t *q = malloc((size_t)QROWS * QCOLS);
    make_rows(w);
    const recur_dtype_t dts[2] = {RECUR_DTYPE_I8, RECUR_DTYPE_F8E4M3};
    for (int d = 0; d < 2; d++) {
        int bad = 0;
        for (int r = 0; r < QROWS; r++) {
            float s;
            recur_quant_row(w + (size_t)r * QCOLS, QCOLS, dts[d], q + (size_t)r * QCOLS, &s);
            const int b = check_quant_row(w + (size_t)r * QCOLS, QCOLS, dts[d], q + (size_t)r * QCOLS, s, 1);
            if (b) fprintf(stderr, "%s row %d: %d bad\n", recur_dtype_name(dts[d]), r, b);
            bad += b;
            if (r == 5) { /* NaN -> 0, +-Inf -> +-max */
                const uint8_t *qr = q + (size_t)r * QCOLS;
                const float mx = recur_quant_max(dts[d]);
                CHECK(qr[3] == 0 && recur_quant_code_value(dts[d], qr[9]) == mx &&
                          recur_quant_code_value(dts[d], qr[11]) == -mx,
                      "%s: NaN -> 0 and Inf -> max", recur_dtype_name(dts[d]));
            }
            if (r == 2) CHECK(s == 1.f, "all-zero row: scale 1");
        }
        CHECK(bad == 0, "%s quantizer: %d elements off the rule", recur_dtype_name(dts[d]), bad);
        /* the checker must catch a wrong scale and a wrong code */
        float s;
        recur_quant_row(w, QCOLS, dts[d], q, &s);
        CHECK(check_quant_row(w, QCOLS, dts[d], q, s * 1.01f, 0) > 0, "checker: a scale 1%% off must fail");
        uint8_t *q2 = malloc(QCOLS);
        const float s_wrong = s * recur_quant_max(dts[d]) / (recur_quant_max(dts[d]) + 1); /* absmax / (QMAX + 1) */
        for (int i = 0; i < QCOLS; i++)
            q2[i] = dts[d] == RECUR_DTYPE_I8 ? (uint8_t)recur_quant_i8(w[i], s_wrong) : recur_quant_f8(w[i], s_wrong);
        CHECK(check_quant_row(w, QCOLS, dts[d], q2, s, 0) > 0, "checker: codes for QMAX + 1 must fail");
        memcpy(q2, q, QCOLS);
        q2[5] ^= 0x04;
        CHECK(check_quant_row(w, QCOLS, dts[d], q2, s, 0) > 0, "checker: a flipped code must fail");
        free(q2);
    }
    free(w);
    free(q);
}

/* ---------------------------------------------------------------- 3. matmul */

/* y[M][N] per recur_backend.h's semantics, in double, from codes and scales (host), with
 * each output's sum of |terms| in tmag. scale_mul perturbs the scales (1: none). */
static void qmatmul_ref(const float *x, const uint8_t *q, const float *scale, recur_dtype_t dt, int M, int N, int K,
                        double scale_mul, double *y, double *tmag) {
    float *xr = malloc((size_t)K * sizeof(float));
    for (int m = 0; m < M; m++) {
        const float *xm = x + (size_t)m * K;
        double sx = 1.0;
        for (int k = 0; k < K; k++) xr[k] = xm[k];
        if (M > RECUR_QUANT_GEMV_MAX_M) {
            if (dt == RECUR_DTYPE_I8) {
                for (int k = 0; k < K; k++) xr[k] = recur_bf16_to_f32(recur_f32_to_bf16(xm[k]));
            } else {
                const float s = recur_quant_act_scale(xm, K);
                for (int k = 0; k < K; k++) xr[k] = recur_e4m3_to_f32(recur_f32_to_e4m3(xm[k] / s));
                sx = s;
            }
        }
        for (int n = 0; n < N; n++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                const double t = (double)xr[k] * recur_quant_code_value(dt, q[(size_t)n * K + k]);
                acc += t;
                mag += fabs(t);
            }
            const double f = (double)scale[n] * scale_mul * sx;
            y[(size_t)m * N + n] = acc * f;
            tmag[(size_t)m * N + n] = mag * fabs(f);
        }
    }
    free(xr);
}

/* The codes and scales of w (backend memory) on the host: [rows*cols] then [rows]. */
static int weight_to_host(recur_backend_t *b, const recur_weight_t *w, uint8_t **q, float **s) {
    const size_t n = (size_t)w->rows * (size_t)w->cols;
    *q = malloc(n ? n : 1);
    *s = malloc((size_t)w->rows * sizeof(float));
    if (!*q || !*s) return -1;
    if (b->iface.download(b, *q, w->data, n) != RECUR_OK) return -1;
    if (b->iface.download(b, *s, w->scale, (size_t)w->rows * sizeof(float)) != RECUR_OK) return -1;
    return 0;
}

/* matmul on backend b (weights in mode dt) vs the double reference; rel_gemv (M <= 2) and
 * rel_gemm (larger M) bound the error
 * relative to the sum of |terms|. With cpu_ref (the CUDA run) the CPU backend's output is
 * compared too. */
static void test_matmul(recur_backend_t *b, recur_dtype_t dt, recur_backend_t *cpu_ref, double rel_gemv,
                        double rel_gemm, const char *tag) {
    /* {1040, 1088}, {1024, 512}: K not a power of two, and a short K for 1000+ rows;
     * {16, 12304}: a long row, not a multiple of 4096 (the CUDA backend's fp8 activation
     * quantizer holds up to 16384 of a row in registers, 4096 a pass) */
    static const int shapes[][2] = {{256, 128},   {96, 512},    {300, 64},   {64, 4096}, {33, 48},
                                    {1100, 8192}, {1040, 1088}, {1024, 512}, {16, 12304}};
    /* 3..384: the CUDA backend's fused int8 product in each of its block shapes (16, 32,
     * 48, 64 rows of x; 100: two tiles, the second partly filled; 200: four); 400: past it
     * (widen + cuBLAS) */
    static const int Ms[] = {1, 2, 3, 5, 8, 9, 16, 24, 40, 64, 80, 100, 200, 400};
    double worst = 0;
    int undetected = 0; /* shapes and sizes where a scale 1% off would have passed */
    /* half the 1% a wrong scale would give: on the CPU rounding leaves it within 1e-6 */
    const double SLOPE_TOL = 5e-3;
    double worst_slope = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int N = shapes[si][0], K = shapes[si][1];
        float *W = malloc((size_t)N * K * sizeof(float));
        recur_test_fill(&rng, W, (size_t)N * K, -0.05f, 0.05f);
        for (int r = 0; r < N; r += 7) W[(size_t)r * K + (r % K)] = 0.8f; /* outliers: rows of different scales */
        recur_weight_t w = {0}, wc = {0};
        if (b->iface.weight_upload(b, W, N, K, RECUR_WEIGHT_PROJ, &w) != RECUR_OK || w.dtype != dt ||
            (cpu_ref && cpu_ref->iface.weight_upload(cpu_ref, W, N, K, RECUR_WEIGHT_PROJ, &wc) != RECUR_OK)) {
            CHECK(0, "%s: weight_upload %dx%d as %s", tag, N, K, recur_dtype_name(dt));
            free(W);
            continue;
        }
        uint8_t *q = NULL;
        float *s = NULL;
        CHECK(weight_to_host(b, &w, &q, &s) == 0, "%s: download", tag);
        for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
            const int M = Ms[mi];
            if ((double)N * K * M > 4e8) continue; /* the double reference of the big shape: decode sizes only */
            const double rel = M <= RECUR_QUANT_GEMV_MAX_M ? rel_gemv : rel_gemm;
            const size_t MN = (size_t)M * N;
            float *x = malloc((size_t)M * K * sizeof(float)), *y = malloc(3 * MN * sizeof(float));
            float *yc = y + MN, *yrep = y + 2 * MN;
            double *ref = malloc(4 * MN * sizeof(double)), *mag = ref + MN, *brk = mag + MN, *mag2 = brk + MN;
            recur_test_fill(&rng, x, (size_t)M * K, -2.f, 2.f);
            for (int m = 0; m < M; m++) x[(size_t)m * K + (m * 13) % K] = 40.f * (m + 1); /* per-row scales differ */
            qmatmul_ref(x, q, s, dt, M, N, K, 1.0, ref, mag);
            qmatmul_ref(x, q, s, dt, M, N, K, 1.01, brk, mag2); /* a scale 1% off */
            float *dx = b->iface.alloc(b, (size_t)M * K * sizeof(float)), *dy = b->iface.alloc(b, MN * sizeof(float));
            b->iface.upload(b, dx, x, (size_t)M * K * sizeof(float));
            /* accumulate: y0 + x W^T, y0 = 1 */
            for (size_t i = 0; i < MN; i++) y[i] = 1.f;
            b->iface.upload(b, dy, y, MN * sizeof(float));
            CHECK(b->iface.matmul(b, dx, &w, M, dy, 1) == RECUR_OK, "%s: matmul", tag);
            b->iface.download(b, y, dy, MN * sizeof(float));
            int bad = 0, bad_broken = 0;
            /* and the least-squares slope of y against the reference: rounding errors average
             * out of it, a wrong scale does not. The elementwise bound of an FP8 GEMM (Hopper's
             * FP8 accumulator) is too loose to see a scale 1% off in every shape; the slope
             * sees it in all of them. */
            double yr = 0, rr = 0, yb = 0, bb = 0;
            for (size_t i = 0; i < MN; i++) {
                const double yi = (double)y[i] - 1.0;
                const double e = fabs(yi - ref[i]) / (mag[i] + 1e-30);
                const double eb = fabs(yi - brk[i]) / (mag[i] + 1e-30);
                if (!(e <= rel)) bad++;
                if (!(eb <= rel)) bad_broken++;
                if (!(e <= worst)) worst = e;
                yr += yi * ref[i], rr += ref[i] * ref[i], yb += yi * brk[i], bb += brk[i] * brk[i];
            }
            const double slope = rr > 0 ? yr / rr : 1, slope_broken = bb > 0 ? yb / bb : 1;
            if (!(fabs(slope - 1) <= worst_slope)) worst_slope = fabs(slope - 1);
            undetected += bad_broken == 0 && fabs(slope_broken - 1) <= SLOPE_TOL;
            CHECK(bad == 0, "%s %s %dx%d M=%d: %d of %zu outputs beyond %.0e of their |terms|", tag,
                  recur_dtype_name(dt), N, K, M, bad, MN, rel);
            CHECK(fabs(slope - 1) <= SLOPE_TOL, "%s %s %dx%d M=%d: slope against the reference %.6f (1 +- %.0e)", tag,
                  recur_dtype_name(dt), N, K, M, slope, SLOPE_TOL);
            /* the same call twice gives the same bits (split sums added in a fixed order; the
             * CUDA product's tile counters back at zero after each call) */
            int same = 1;
            for (int rep = 0; rep < 2; rep++)
                same = same && b->iface.matmul(b, dx, &w, M, dy, 0) == RECUR_OK &&
                       b->iface.download(b, rep ? yrep : yc, dy, MN * sizeof(float)) == RECUR_OK;
            CHECK(same && memcmp(yc, yrep, MN * sizeof(float)) == 0,
                  "%s %s %dx%d M=%d: two identical calls gave different bits", tag, recur_dtype_name(dt), N, K, M);
            if (cpu_ref) { /* the CPU backend on the same codes (its own quantization: the same bytes) */
                float *cx = cpu_ref->iface.alloc(cpu_ref, (size_t)M * K * sizeof(float));
                float *cy = cpu_ref->iface.alloc(cpu_ref, MN * sizeof(float));
                memcpy(cx, x, (size_t)M * K * sizeof(float));
                cpu_ref->iface.matmul(cpu_ref, cx, &wc, M, cy, 0);
                memcpy(yc, cy, MN * sizeof(float));
                int badc = 0;
                for (size_t i = 0; i < MN; i++)
                    if (!(fabs((double)y[i] - 1.0 - yc[i]) <= 2 * rel * (mag[i] + 1e-30) + 1e-6)) badc++;
                CHECK(badc == 0, "%s %s %dx%d M=%d: %d outputs differ from the CPU backend's", tag, recur_dtype_name(dt),
                      N, K, M, badc);
                cpu_ref->iface.buf_free(cpu_ref, cx);
                cpu_ref->iface.buf_free(cpu_ref, cy);
            }
            b->iface.buf_free(b, dx);
            b->iface.buf_free(b, dy);
            free(x);
            free(y);
            free(ref);
        }
        free(q);
        free(s);
        b->iface.weight_free(b, &w);
        if (cpu_ref) cpu_ref->iface.weight_free(cpu_ref, &wc);
        free(W);
    }
    fprintf(stderr,
            "%-12s matmul %-4s: worst error %.2e of sum|terms| (bounds %.0e up to %d rows, %.0e above); "
            "worst |slope - 1| %.1e (bound %.0e)\n",
            tag, recur_dtype_name(dt), worst, rel_gemv, RECUR_QUANT_GEMV_MAX_M, rel_gemm, worst_slope, SLOPE_TOL);
    CHECK(undetected == 0, "%s: in %d cases the matmul bound would accept a scale 1%% off", tag, undetected);
}

/* A row of x with a NaN or an infinity gives non-finite outputs in that row only, at a
 * decode size (a GEMV that rescaled or converted x, e.g. to integers, could lose them). */
static void test_matmul_nonfinite(recur_backend_t *b, const char *tag) {
    const int N = 1024, K = 512, M = 2;
    float *W = malloc((size_t)N * K * sizeof(float)), *x = malloc((size_t)M * K * sizeof(float));
    float *y = malloc((size_t)M * N * sizeof(float));
    recur_test_fill(&rng, W, (size_t)N * K, -0.05f, 0.05f);
    recur_weight_t w = {0};
    CHECK(b->iface.weight_upload(b, W, N, K, RECUR_WEIGHT_PROJ, &w) == RECUR_OK, "%s: upload", tag);
    float *dx = b->iface.alloc(b, (size_t)M * K * sizeof(float)), *dy = b->iface.alloc(b, (size_t)M * N * sizeof(float));
    for (int kind = 0; kind < 2; kind++) {
        recur_test_fill(&rng, x, (size_t)M * K, -2.f, 2.f);
        x[K + 77] = kind ? INFINITY : NAN;
        b->iface.upload(b, dx, x, (size_t)M * K * sizeof(float));
        CHECK(b->iface.matmul(b, dx, &w, M, dy, 0) == RECUR_OK, "%s: matmul", tag);
        b->iface.download(b, y, dy, (size_t)M * N * sizeof(float));
        int finite0 = 0, finite1 = 0;
        for (int n = 0; n < N; n++) finite0 += isfinite(y[n]) != 0, finite1 += isfinite(y[N + n]) != 0;
        CHECK(finite0 == N && finite1 == 0, "%s %s: a %s in row 1 of x: %d of %d outputs of row 0 finite, %d of row 1",
              tag, recur_dtype_name(w.dtype), kind ? "inf" : "NaN", finite0, N, finite1);
    }
    b->iface.buf_free(b, dx);
    b->iface.buf_free(b, dy);
    b->iface.weight_free(b, &w);
    free(W);
    free(x);
    free(y);
}

/* ---------------------------------------------------------------- 4. quality */

/* Bounds of one mode and path: max and mean |logit - reference| over all rows, and the
 * least fraction of rows whose greedy token is the reference's. */
typedef struct qbound {
    float max, mean, agree;
} qbound_t;

typedef struct qcase {
    const char *name;
    int fixture; /* 1: ../shared/fixtures, 0: the source tree */
    const char *model, *tokens, *logits;
    /* CPU: bf16 (emulated), int8, fp8 decode, fp8 prefill (int8 and bf16: both paths) */
    qbound_t b[4];
    float gpu_extra; /* added to max on the GPU: test_models_cuda's bf16-weight bound (the
                        GPU keeps the embedding and the gate LoRAs in bf16, the CPU in fp32);
                        there the mean bound becomes 2 mean + gpu_extra / 5, and the
                        agreement bound drops by 0.1; the GPU's bf16 mode, whose prefill also
                        rounds activations, is held to gpu_extra alone (context, as in
                        test_models_cuda) */
} qcase_t;

/* Measured on the CPU (2026-11-23), max / mean / agreement, decode and prefill:
 *   rwkv7 tiny  bf16 1.7e-6 (its weights are bf16 values); int8 .0122/.0025, .0131/.0026, 68/68;
 *               fp8 .0466/.0102 decode, .0762/.0143 prefill, 68/68
 *   synth7      bf16 .035/.0059 40/40; int8 .204/.020, .212/.021, 39/40; fp8 .406/.067, .529/.088, 33/40
 *   xlstm tiny  bf16 .120/.0116 42/45; int8 1.12/.044, 1.06/.047, 36/45; fp8 3.33/.133 34/45, 3.39/.188 30/45
 *   heads256    bf16 0 (bf16 checkpoint); int8 2.36/.039, 2.36/.041, 136/150; fp8 2.29/.127 117/150,
 *               2.18/.171 98/150
 * The random models amplify any perturbation (xLSTM's normaliser max(|q.n|, e^-m) divides by
 * small numbers: bf16 weights alone move a logit by 0.12 there); the real tiny RWKV-7 is the
 * model whose numbers mean quality. Bounds: ~2x the measured max and mean, agreement a few
 * rows below the measured. */
static const qcase_t qcases[] = {
    {"rwkv7 tiny (real)", 1, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin", "rwkv7/tiny7-ref-tokens.u32",
     "rwkv7/tiny7-ref-logits.f32",
     {{1e-4f, 1e-5f, 1.f}, {0.03f, 0.005f, 0.97f}, {0.1f, 0.02f, 0.95f}, {0.15f, 0.03f, 0.95f}}, 2e-2f},
    {"rwkv7 synth7 (random)", 1, "rwkv7/synth7-C128-H2-L3-FP32.bin", "rwkv7/synth7-ref-tokens.u32",
     "rwkv7/synth7-ref-logits.f32",
     {{0.07f, 0.012f, 0.95f}, {0.4f, 0.04f, 0.9f}, {0.8f, 0.13f, 0.75f}, {1.0f, 0.18f, 0.75f}}, 0.15f},
    {"xlstm tiny (random)", 0, "tests/fixtures/xlstm-tiny", "tests/fixtures/xlstm-tiny/ref-tokens-long.u32",
     "tests/fixtures/xlstm-tiny/ref-logits-long-step.f32",
     {{0.25f, 0.025f, 0.85f}, {2.0f, 0.1f, 0.7f}, {5.0f, 0.27f, 0.6f}, {5.0f, 0.38f, 0.55f}}, 0.5f},
    {"xlstm heads256 (random)", 0, "tests/fixtures/xlstm-heads256", "tests/fixtures/xlstm-heads256/ref-tokens-long.u32",
     "tests/fixtures/xlstm-heads256/ref-logits-long-step.f32",
     {{1e-4f, 1e-5f, 1.f}, {4.0f, 0.08f, 0.85f}, {4.0f, 0.25f, 0.7f}, {4.0f, 0.35f, 0.55f}}, 0.5f},
};

/* below this the mode did not quantize anything (the fp32 path gives <= 1e-4) */
#define QUALITY_FLOOR 1e-3f

static float margin(const float *x, int n) {
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (x[i] > a) b = a, a = x[i];
        else if (x[i] > b) b = x[i];
    }
    return a - b;
}

/* mode: 0 bf16 (CPU: emulated), 1 int8, 2 fp8 */
static void quality(const char *backend, const qcase_t *qc, int mode) {
    static const recur_dtype_t dts[3] = {RECUR_DTYPE_BF16, RECUR_DTYPE_I8, RECUR_DTYPE_F8E4M3};
    const int gpu = strcmp(backend, "cpu") != 0;
    size_t nt = 0, nl = 0;
    uint32_t *tok_u = recur_test_read_values32(qc->fixture, qc->tokens, &nt);
    float *ref = recur_test_read_values32(qc->fixture, qc->logits, &nl);
    char path[1200];
    if (qc->fixture) recur_fixture_path(path, sizeof path, qc->model);
    else recur_source_path(path, sizeof path, qc->model);
    if (!tok_u || !ref) {
        CHECK(0, "%s: fixture files", qc->name);
        free(tok_u);
        free(ref);
        return;
    }
    const int T = (int)nt;
    int32_t *tok = malloc(nt * sizeof(int32_t));
    for (int i = 0; i < T; i++) tok[i] = (int32_t)tok_u[i];
    for (int path_i = 0; path_i < 2; path_i++) { /* 0 decode, 1 prefill pieces of 64 */
        recur_backend_params_t bp = recur_backend_default_params();
        bp.weight_dtype = gpu || mode ? dts[mode] : RECUR_DTYPE_F32;
        recur_backend_t *b = NULL;
        float *lg = NULL;
        int V = 0;
        if (recur_backend_init(backend, &bp, &b) != RECUR_OK || (!gpu && mode == 0 && recur_test_cpu_bf16_weights(b)) ||
            recur_test_model_logits(b, path, tok, T, 64, path_i == 0, &lg, &V) != RECUR_OK || (size_t)T * V != nl) {
            CHECK(0, "%s %s: could not run the model", qc->name, recur_dtype_name(dts[mode]));
            recur_backend_free(b);
            free(lg);
            continue;
        }
        recur_backend_free(b);
        qbound_t qb = mode == 2 ? qc->b[2 + path_i] : qc->b[mode];
        if (gpu && mode == 0) /* the GPU's own bf16 mode (bf16 activations in prefill): test_models_cuda's bound */
            qb.max = qc->gpu_extra, qb.mean = qc->gpu_extra / 5, qb.agree = 0.f;
        else if (gpu)
            qb.max += qc->gpu_extra, qb.mean = 2 * qb.mean + qc->gpu_extra / 5, qb.agree -= 0.1f;
        const float bound = qb.max;
        double maxd = 0, sumd = 0;
        for (size_t i = 0; i < nl; i++) {
            const double d = fabs((double)lg[i] - ref[i]);
            if (!(d <= maxd)) maxd = d;
            sumd += d;
        }
        int agree = 0, differ = 0, ties = 0, all_agree = 0;
        for (int t = 0; t < T; t++) {
            const float *r = ref + (size_t)t * V;
            const int same = recur_test_argmax(lg + (size_t)t * V, V) == recur_test_argmax(r, V);
            all_agree += same;
            if (margin(r, V) <= 2 * bound) ties++;
            else if (same) agree++;
            else differ++;
        }
        fprintf(stderr, "%-5s %-24s %-5s %-7s max|d| %.4f (<= %.3g) mean|d| %.5f (<= %.3g) greedy %d/%d (>= %.0f%%; "
                        "clear rows: %d agree, %d differ; %d near-ties)\n",
                backend, qc->name, recur_dtype_name(dts[mode]), path_i ? "prefill" : "decode", maxd, bound,
                sumd / (double)nl, qb.mean, all_agree, T, 100.0 * qb.agree, agree, differ, ties);
        const char *pn = path_i ? "prefill" : "decode";
        CHECK(maxd <= bound, "%s %s %s: max |logit error| %.4f above %.3g", qc->name, recur_dtype_name(dts[mode]), pn,
              maxd, bound);
        CHECK(sumd / (double)nl <= qb.mean, "%s %s %s: mean |logit error| %.5f above %.3g", qc->name,
              recur_dtype_name(dts[mode]), pn, sumd / (double)nl, qb.mean);
        CHECK(all_agree >= qb.agree * T, "%s %s %s: greedy token of %d of %d rows, want >= %.0f%%", qc->name,
              recur_dtype_name(dts[mode]), pn, all_agree, T, 100.0 * qb.agree);
        /* (bf16 may be exact: the tiny RWKV-7's weights are bf16 values) */
        CHECK(mode == 0 || maxd >= QUALITY_FLOOR, "%s %s: max |logit error| %.2e: the weights were not quantized",
              qc->name, recur_dtype_name(dts[mode]), maxd);
        CHECK(differ == 0, "%s %s %s: %d rows with a clear reference winner changed their greedy token", qc->name,
              recur_dtype_name(dts[mode]), path_i ? "prefill" : "decode", differ);
        free(lg);
    }
    free(tok);
    free(tok_u);
    free(ref);
}

/* ---------------------------------------------------------------- CUDA: the same bytes */

static void cuda_same_bytes(recur_backend_t *g, recur_backend_t *cpu, recur_dtype_t dt) {
    /* weight_upload: the test rows (specials included) */
    float *w = malloc((size_t)QROWS * QCOLS * sizeof(float));
    make_rows(w);
    recur_weight_t wg = {0}, wc = {0};
    uint8_t *qg = NULL, *qc = NULL;
    float *sg = NULL, *sc = NULL;
    if (g->iface.weight_upload(g, w, QROWS, QCOLS, RECUR_WEIGHT_PROJ, &wg) != RECUR_OK ||
        cpu->iface.weight_upload(cpu, w, QROWS, QCOLS, RECUR_WEIGHT_PROJ, &wc) != RECUR_OK ||
        weight_to_host(g, &wg, &qg, &sg) || weight_to_host(cpu, &wc, &qc, &sc)) {
        CHECK(0, "cuda %s: upload", recur_dtype_name(dt));
    } else {
        CHECK(memcmp(qg, qc, (size_t)QROWS * QCOLS) == 0 && memcmp(sg, sc, QROWS * sizeof(float)) == 0,
              "cuda %s weight_upload: codes or scales differ from the CPU quantizer's", recur_dtype_name(dt));
    }
    free(qg), free(qc), free(sg), free(sc);
    qg = qc = NULL, sg = sc = NULL;
    g->iface.weight_free(g, &wg);
    cpu->iface.weight_free(cpu, &wc);
    /* weight_random: a block of a virtual matrix, against the CPU quantizer of the same values */
    const int R = 96, Cc = 320, full = 1000, row0 = 5, col0 = 17;
    float *v = malloc((size_t)R * Cc * sizeof(float));
    for (int r = 0; r < R; r++)
        for (int k = 0; k < Cc; k++)
            v[(size_t)r * Cc + k] = recur_virtual_value(7, (uint64_t)(row0 + r) * full + col0 + k, -0.5f, 0.25f);
    if (!g->iface.weight_random ||
        g->iface.weight_random(g, R, Cc, 7, -0.5f, 0.25f, row0, col0, full, RECUR_WEIGHT_PROJ, &wg) != RECUR_OK ||
        cpu->iface.weight_upload(cpu, v, R, Cc, RECUR_WEIGHT_PROJ, &wc) != RECUR_OK || weight_to_host(g, &wg, &qg, &sg) ||
        weight_to_host(cpu, &wc, &qc, &sc)) {
        CHECK(0, "cuda %s: weight_random", recur_dtype_name(dt));
    } else {
        CHECK(memcmp(qg, qc, (size_t)R * Cc) == 0 && memcmp(sg, sc, R * sizeof(float)) == 0,
              "cuda %s weight_random: codes or scales differ from quantizing the same values on the CPU",
              recur_dtype_name(dt));
    }
    free(qg), free(qc), free(sg), free(sc);
    g->iface.weight_free(g, &wg);
    cpu->iface.weight_free(cpu, &wc);
    free(v);
    free(w);
    if (dt != RECUR_DTYPE_F8E4M3) return;
    /* the device's e4m3 conversion: rows whose absmax is 448 (scale exactly 1), so each code
     * is the conversion of the value itself */
    /* the values: every midpoint of adjacent codes, one float either side, the codes' own
     * values, specials, then random floats over 2^-14 .. 2^8 */
    const int cols = 1024, rows = 64, per = cols - 1;
    float *vals = malloc((size_t)rows * per * sizeof(float));
    int nv = 0;
    for (int c = 0; c < 0x7e; c++) {
        const float mid = (float)((e4m3_def(c) + e4m3_def(c + 1)) / 2), cv = (float)e4m3_def(c);
        const float pts[7] = {mid, -mid, f_of(u_of(mid) - 1), f_of(u_of(mid) + 1), -f_of(u_of(mid) + 1), cv, -cv};
        for (int j = 0; j < 7; j++) vals[nv++] = pts[j];
    }
    static const float sp[] = {0.f, -0.f, 0x1p-149f, -0x1p-12f, FLT_MIN, 447.9f, -447.9f};
    for (size_t j = 0; j < sizeof sp / sizeof sp[0]; j++) vals[nv++] = sp[j];
    while (nv < rows * per) {
        const uint64_t r = recur_test_rng_next(&rng);
        /* exponents -14 .. 7: every value below 2^8, so the row's largest is its 448 (scale 1) */
        const uint32_t e = 127 - 14 + (uint32_t)(r % 22), man = (uint32_t)(r >> 8) & 0x7fffffu;
        vals[nv++] = f_of((uint32_t)((r >> 40) & 1) << 31 | e << 23 | man);
    }
    float *m = malloc((size_t)rows * cols * sizeof(float));
    for (int r = 0; r < rows; r++) {
        m[(size_t)r * cols] = 448.f;
        memcpy(m + (size_t)r * cols + 1, vals + (size_t)r * per, (size_t)per * sizeof(float));
    }
    free(vals);
    if (g->iface.weight_upload(g, m, rows, cols, RECUR_WEIGHT_PROJ, &wg) != RECUR_OK || weight_to_host(g, &wg, &qg, &sg)) {
        CHECK(0, "cuda e4m3 conversion rows: upload");
    } else {
        int bad = 0;
        for (int r = 0; r < rows; r++) {
            CHECK(sg[r] == 1.f, "cuda e4m3 rows: scale %g, want 1", (double)sg[r]);
            for (int c = 0; c < cols; c++) {
                const float x = m[(size_t)r * cols + c];
                const uint8_t got = qg[(size_t)r * cols + c], want = recur_f32_to_e4m3(x);
                if (got != want && bad++ < 10)
                    fprintf(stderr, "device e4m3(%a) = 0x%02x, host 0x%02x\n", (double)x, got, want);
            }
        }
        CHECK(bad == 0, "cuda: the device's e4m3 conversion differs from recur_f32_to_e4m3 on %d of %d values", bad,
              rows * cols);
        fprintf(stderr, "cuda e4m3 conversion: %d values, %d differ from the host's\n", rows * cols, bad);
    }
    free(qg), free(sg);
    g->iface.weight_free(g, &wg);
    free(m);
}

/* ---------------------------------------------------------------- 5. under TP and PP */

/* The sequence of a fixture on model m (every rank calls it the same way); the last
 * stage's logits into lg [T][V] (others pass NULL). */
static recur_status_t run_seq(recur_model_t *m, const int32_t *tok, int T, int decode, float *lg, int V) {
    int32_t slot = 1;
    recur_status_t st = recur_model_state_reset(m, 1);
    for (int t = 0; t < T && st == RECUR_OK;) {
        int32_t len = decode ? 1 : T - t;
        recur_batch_t bt = {.n_seq = 1, .tokens = tok + t, .seq_len = &len, .slot = &slot, .logits = RECUR_LOGITS_ALL};
        st = recur_model_forward(m, &bt, lg ? lg + (size_t)t * V : NULL);
        t += len;
    }
    return st;
}

/* test_quant dist TP PP [cuda] (under mpirun -np TP*PP; CPU backend unless cuda, then one
 * GPU per rank, NCCL, with the GPU bounds of quality()): each rank quantizes its own
 * shard (column-parallel rows are the whole matrix's rows, so their codes and scales are
 * the same; row-parallel blocks take scales from their own columns). On synth7 (2 heads,
 * 3 layers) and the tiny xLSTM (2 heads, 2 layers), int8 and fp8, decode and prefill in
 * pieces of 16: the last stage's logits against the fp32 reference within the CPU bounds
 * of 4; with tp == 1 (pipeline only: every matrix whole on its stage) equal to one rank's
 * quantized run within 1e-4 (fp32 rounding); every rank stores fewer matrix bytes than the
 * whole model's when split. */
static int run_dist(int *argc, char ***argv, int tp, int pp, const char *backend) {
    const int gpu = strcmp(backend, "cpu") != 0;
    if (gpu && recur_test_no_cuda()) return RECUR_TEST_SKIP;
    recur_grid_t grid;
    if (recur_comm_world_init(argc, argv, tp, pp, &grid) != RECUR_OK) return 1;
    const int rank = grid.world_rank;
    recur_status_t all = RECUR_OK;
    for (int d = 0; d < 2; d++) {
        const recur_dtype_t dt = d ? RECUR_DTYPE_F8E4M3 : RECUR_DTYPE_I8;
        recur_backend_params_t bp = recur_backend_default_params();
        bp.weight_dtype = dt;
        bp.device = grid.local_rank;
        recur_backend_t *b = NULL;
        recur_comm_t *comm = NULL;
        if (recur_backend_init(backend, &bp, &b) != RECUR_OK || recur_comm_create(&grid, b, &comm) != RECUR_OK) {
            CHECK(0, "rank %d: backend / comm", rank);
            recur_backend_free(b);
            break;
        }
        for (int ci = 1; ci <= 2; ci++) {
            const qcase_t *qc = &qcases[ci];
            size_t nt = 0, nl = 0;
            uint32_t *tok_u = recur_test_read_values32(qc->fixture, qc->tokens, &nt);
            float *ref = recur_test_read_values32(qc->fixture, qc->logits, &nl);
            char path[1200];
            if (qc->fixture) recur_fixture_path(path, sizeof path, qc->model);
            else recur_source_path(path, sizeof path, qc->model);
            if (!tok_u || !ref) {
                CHECK(0, "fixture files");
                free(tok_u), free(ref);
                continue;
            }
            const int T = (int)nt;
            int32_t *tok = malloc(nt * sizeof(int32_t));
            for (int i = 0; i < T; i++) tok[i] = (int32_t)tok_u[i];
            for (int path_i = 0; path_i < 2; path_i++) {
                recur_model_params_t p = recur_model_default_params();
                p.n_slots = 2;
                p.max_tokens = 16;
                recur_model_t *one = NULL, *dist = NULL;
                CHECK(recur_model_load(path, b, &p, &one) == RECUR_OK, "%s: one-rank load", qc->name);
                p.comm = comm;
                CHECK(recur_model_load(path, b, &p, &dist) == RECUR_OK, "%s: sharded load", qc->name);
                if (!one || !dist) {
                    recur_model_free(one), recur_model_free(dist);
                    continue;
                }
                const recur_model_info_t *di = recur_model_info(dist);
                const int V = di->n_vocab, last = di->shard.pp_rank == di->shard.pp - 1;
                if (grid.world_size > 1)
                    CHECK(di->matrix_bytes < recur_model_info(one)->matrix_bytes,
                          "rank %d: %lld matrix bytes, the whole model %lld", rank, (long long)di->matrix_bytes,
                          (long long)recur_model_info(one)->matrix_bytes);
                float *lg1 = malloc((size_t)T * V * sizeof(float)), *lgd = malloc((size_t)T * V * sizeof(float));
                CHECK(run_seq(one, tok, T, path_i == 0, lg1, V) == RECUR_OK, "one-rank run");
                CHECK(run_seq(dist, tok, T, path_i == 0, last ? lgd : NULL, V) == RECUR_OK, "sharded run");
                if (last && di->shard.tp_rank == 0) {
                    qbound_t qb = dt == RECUR_DTYPE_I8 ? qc->b[1] : qc->b[2 + path_i];
                    if (gpu) qb.max += qc->gpu_extra, qb.mean = 2 * qb.mean + qc->gpu_extra / 5; /* as in quality() */
                    double maxd = 0, sumd = 0;
                    for (size_t i = 0; i < nl; i++) {
                        const double e = fabs((double)lgd[i] - ref[i]);
                        maxd = e > maxd ? e : maxd;
                        sumd += e;
                    }
                    fprintf(stderr, "rank %d tp %d pp %d %-22s %-4s %-7s vs fp32: max|d| %.4f (<= %.3g) mean %.5f "
                                    "(<= %.3g)\n", rank, tp, pp, qc->name, recur_dtype_name(dt),
                            path_i ? "prefill" : "decode", maxd, qb.max, sumd / (double)nl, qb.mean);
                    CHECK(maxd <= qb.max && sumd / (double)nl <= qb.mean, "%s %s: sharded logits beyond the bounds",
                          qc->name, recur_dtype_name(dt));
                    if (tp == 1) {
                        char what[128];
                        snprintf(what, sizeof what, "pp %d %s %s vs one rank", pp, recur_dtype_name(dt),
                                 path_i ? "prefill" : "decode");
                        CHECK(recur_allclose(lgd, lg1, nl, 1e-4f, 1e-4f, what, NULL), "%s: %s", qc->name, what);
                    }
                }
                free(lg1), free(lgd);
                recur_model_free(dist);
                recur_model_free(one);
            }
            free(tok), free(tok_u), free(ref);
        }
        recur_status_t mine = failures ? RECUR_E_INVAL : RECUR_OK;
        recur_status_t st = recur_comm_agree(comm, mine);
        if (st != RECUR_OK) all = st;
        recur_comm_free(comm);
        recur_backend_free(b);
    }
    recur_comm_world_finalize();
    if (rank == 0) fprintf(stderr, "test_quant dist tp %d pp %d: %s\n", tp, pp, all == RECUR_OK ? "PASS" : "FAIL");
    return all == RECUR_OK && !failures ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cpu";
    recur_log_set_level(RECUR_LOG_WARN);
    if (strcmp(backend, "dist") == 0) {
        if (argc < 4) {
            fprintf(stderr, "usage: mpirun -np TP*PP test_quant dist TP PP [cpu|cuda]\n");
            return 2;
        }
        return run_dist(&argc, &argv, atoi(argv[2]), atoi(argv[3]), argc > 4 ? argv[4] : "cpu");
    }
    if (strcmp(backend, "cpu") == 0) {
        test_e4m3();
        test_quantizer();
        for (int d = 0; d < 2; d++) {
            recur_backend_params_t bp = recur_backend_default_params();
            bp.weight_dtype = d ? RECUR_DTYPE_F8E4M3 : RECUR_DTYPE_I8;
            recur_backend_t *b = NULL;
            if (recur_backend_init("cpu", &bp, &b) != RECUR_OK) {
                CHECK(0, "cpu backend with %s weights", recur_dtype_name(bp.weight_dtype));
                continue;
            }
            CHECK(b->iface.matmul_sparse_in == NULL, "quantized modes keep the matmul layout");
            test_matmul(b, bp.weight_dtype, NULL, 1e-5, 1e-5, "cpu");
            test_matmul_nonfinite(b, "cpu");
            recur_backend_free(b);
        }
    } else {
        if (recur_test_no_cuda()) return RECUR_TEST_SKIP;
        for (int d = 0; d < 2; d++) {
            const recur_dtype_t dt = d ? RECUR_DTYPE_F8E4M3 : RECUR_DTYPE_I8;
            recur_backend_params_t bp = recur_backend_default_params();
            bp.weight_dtype = dt;
            recur_backend_t *g = NULL, *cpu = NULL;
            if (recur_backend_init("cuda", &bp, &g) != RECUR_OK || recur_backend_init("cpu", &bp, &cpu) != RECUR_OK) {
                CHECK(0, "backends with %s weights", recur_dtype_name(dt));
                recur_backend_free(g);
                recur_backend_free(cpu);
                continue;
            }
            cuda_same_bytes(g, cpu, dt);
            /* cuBLASLt's FP8 GEMM (M > 8): Hopper's FP8 tensor cores add the products in an
             * accumulator narrower than fp32 (about 14 bits, DeepSeek-V3 technical report,
             * arXiv:2412.19437, section 3.3.2) even without fast accumulation; measured on an
             * H200 (2026-11-23): 2.0e-3 of sum|terms| at worst, so 4e-3 here. The same product
             * through the bf16 path ("cuda-no-lt" below) stays at 2e-5. */
            test_matmul(g, dt, cpu, 2e-5, dt == RECUR_DTYPE_F8E4M3 ? 4e-3 : 2e-5, "cuda");
            test_matmul_nonfinite(g, "cuda");
            recur_backend_free(g);
            if (dt == RECUR_DTYPE_I8) { /* the fused product's mma.sync form (where wgmma is the default) */
                setenv("RECUR_QGEMM_WGMMA", "0", 1);
                if (recur_backend_init("cuda", &bp, &g) == RECUR_OK) test_matmul(g, dt, NULL, 2e-5, 2e-5, "cuda-mma");
                else CHECK(0, "cuda backend with RECUR_QGEMM_WGMMA=0");
                recur_backend_free(g);
                unsetenv("RECUR_QGEMM_WGMMA");
            }
            if (dt == RECUR_DTYPE_F8E4M3) { /* the bf16 tensor-core form of the fp8 GEMM */
                setenv("RECUR_FP8_CUBLASLT", "0", 1);
                if (recur_backend_init("cuda", &bp, &g) == RECUR_OK) test_matmul(g, dt, cpu, 2e-5, 2e-5, "cuda-no-lt");
                else CHECK(0, "cuda backend with RECUR_FP8_CUBLASLT=0");
                recur_backend_free(g);
                unsetenv("RECUR_FP8_CUBLASLT");
            }
            recur_backend_free(cpu);
        }
    }
    for (size_t i = 0; i < sizeof qcases / sizeof qcases[0]; i++)
        for (int mode = 0; mode < 3; mode++) quality(backend, &qcases[i], mode);
    fprintf(stderr, "%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
