/* bench_prefill_cuda.c: the two recurrences at 7B shapes on the CUDA backend, each path
 * forced in turn (recur_cuda_prefill.h): the serial / CUDA-core kernels against the
 * chunked tensor-core ones, one sequence of T tokens for several T. For each T it
 *   - runs both paths from the same random state and inputs and compares outputs and
 *     final states (max |diff| against max |value|; fails past 1e-4 relative: both are
 *     fp32-class, see recur_cuda_prefill.h),
 *   - times each (ms per layer call), which is what the switch-over lengths
 *     RECUR_MLSTM_TC_MIN_LEN / RECUR_WKV_WY_MIN_LEN were read from.
 * Usage: bench_prefill_cuda [T,T,...] (default 16,32,64,128,256,512,1024,2048).
 * Exits 77 without a GPU. Label gpu. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recur_backend.h"
#include "recur_cuda_prefill.h"
#include "recur_testutil.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(float lo, float hi) { return recur_test_uniform(&rng, lo, hi); }
static void fill(float *x, size_t n, float lo, float hi) { recur_test_fill(&rng, x, n, lo, hi); }
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static void *dev(recur_backend_t *b, const void *h, size_t n) {
    void *d = b->iface.alloc(b, n);
    if (d && h) b->iface.upload(b, d, h, n);
    return d;
}
/* max |a - b| over n and max |b| */
static void diff(const float *a, const float *b, size_t n, double *dmax, double *vmax) {
    *dmax = 0;
    *vmax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= *dmax)) *dmax = d; /* NaN propagates */
        if (fabs(b[i]) > *vmax) *vmax = fabs(b[i]);
    }
}

static int failures;

/* On a mismatch: the first few elements past 1e-4 relative, as (row, column) of a
 * [rows][cols] array, to tell a layout slip (whole rows or tiles) from rounding. */
static void show_bad(const char *what, const float *got, const float *ref, size_t n, size_t cols, double vmax) {
    const double tol = 1e-4 * (vmax > 1 ? vmax : 1);
    int shown = 0;
    size_t nbad = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)got[i] - ref[i]) <= tol) continue;
        nbad++;
        if (shown++ < 6)
            printf("  %s [%zu][%zu]: chunked %.6g serial %.6g\n", what, i / cols, i % cols, got[i], ref[i]);
    }
    if (nbad) printf("  %s: %zu of %zu elements off\n", what, nbad, n);
}

static void report(const char *op, int T, double ms_s, double ms_c, double dy, double vy, double ds, double vs) {
    const double ry = dy / (vy > 1 ? vy : 1), rs = ds / (vs > 1 ? vs : 1);
    const int bad = !(ry <= 1e-4) || !(rs <= 1e-4);
    printf("%-6s %6d %10.3f %10.3f %8.2fx %10.2e %10.2e %s\n", op, T, ms_s, ms_c, ms_s / ms_c, ry, rs,
           bad ? "MISMATCH" : "");
    failures += bad;
}

typedef recur_status_t (*run_fn)(recur_backend_t *b, const void *args, recur_cuda_path_t path);
static recur_status_t run_mlstm(recur_backend_t *b, const void *a, recur_cuda_path_t p) {
    return recur_cuda_mlstm_path(b, (const recur_mlstm_args_t *)a, p);
}
static recur_status_t run_wkv(recur_backend_t *b, const void *a, recur_cuda_path_t p) {
    return recur_cuda_rwkv7_wkv_path(b, (const recur_rwkv7_wkv_args_t *)a, p);
}

/* ms per call of path p, restoring the state before each call (copy not timed: the
 * state is reset once, then calls run back to back; the recurrence's cost does not
 * depend on the state's values) */
static double time_path(recur_backend_t *b, run_fn f, const void *args, recur_cuda_path_t p, int reps) {
    f(b, args, p);
    b->iface.synchronize(b);
    double t0 = now_s();
    for (int i = 0; i < reps; i++) f(b, args, p);
    b->iface.synchronize(b);
    return (now_s() - t0) / reps * 1e3;
}

static void bench_mlstm(recur_backend_t *b, int T) {
    enum { NH = 8, DK = 256, DV = 512 };
    const size_t per = (size_t)NH * ((size_t)DK * DV + DK + 1), nq = (size_t)T * NH * DK, nv = (size_t)T * NH * DV;
    float *h_in = malloc((2 * nq + nv + 2 * (size_t)T * NH + 2 * NH) * sizeof(float)), *st0 = malloc(per * sizeof(float));
    float *hs = malloc(nv * sizeof(float)), *hc = malloc(nv * sizeof(float));
    float *ss = malloc(per * sizeof(float)), *sc = malloc(per * sizeof(float));
    fill(h_in, 2 * nq, 0.f, 1.f); /* q, k >= 0: no cancelling denominators (see test_backend_cpu.c) */
    fill(h_in + 2 * nq, nv, -1.f, 1.f);
    fill(h_in + 2 * nq + nv, (size_t)T * NH, -5.f, 5.f);           /* i_pre */
    fill(h_in + 2 * nq + nv + (size_t)T * NH, (size_t)T * NH, 0.f, 8.f); /* f_pre */
    fill(h_in + 2 * nq + nv + 2 * (size_t)T * NH, 2 * NH, -0.5f, 0.5f);   /* biases */
    fill(st0, per, -0.3f, 0.3f);
    for (int h = 0; h < NH; h++) st0[(size_t)NH * ((size_t)DK * DV + DK) + h] = frand(-2.f, 3.f);
    float *din = dev(b, h_in, (2 * nq + nv + 2 * (size_t)T * NH + 2 * NH) * sizeof(float));
    float *dst = dev(b, st0, per * sizeof(float)), *dh = dev(b, NULL, nv * sizeof(float));
    int32_t off[2] = {0, T}, sl[1] = {0};
    int32_t *doff = dev(b, off, sizeof off), *dsl = dev(b, sl, sizeof sl);
    recur_mlstm_args_t a = {.n_head = NH, .dqk = DK, .dv = DV, .chunk = 64, .gate_cap = 15.f, .eps = 1e-6f,
                            .rows = {T, 1, doff, dsl}, .q = din, .k = din + nq, .v = din + 2 * nq,
                            .i_pre = din + 2 * nq + nv, .f_pre = din + 2 * nq + nv + (size_t)T * NH,
                            .i_bias = din + 2 * nq + nv + 2 * (size_t)T * NH,
                            .f_bias = din + 2 * nq + nv + 2 * (size_t)T * NH + NH,
                            .state = {dst, per * sizeof(float), 0, RECUR_DTYPE_F32}, .h = dh};
    if (recur_cuda_mlstm_path(b, &a, RECUR_CUDA_PATH_SERIAL) != RECUR_OK) failures++;
    b->iface.download(b, hs, dh, nv * sizeof(float));
    b->iface.download(b, ss, dst, per * sizeof(float));
    b->iface.upload(b, dst, st0, per * sizeof(float));
    if (recur_cuda_mlstm_path(b, &a, RECUR_CUDA_PATH_CHUNKED) != RECUR_OK) failures++;
    b->iface.download(b, hc, dh, nv * sizeof(float));
    b->iface.download(b, sc, dst, per * sizeof(float));
    double dy, vy, ds, vs;
    diff(hc, hs, nv, &dy, &vy);
    diff(sc, ss, per, &ds, &vs);
    show_bad("mlstm h", hc, hs, nv, (size_t)NH * DV, vy);
    show_bad("mlstm state (C as [NH*DQK][DV], then n, m)", sc, ss, per, DV, vs);
    const int reps_s = T >= 1024 ? 3 : 10, reps_c = T >= 1024 ? 10 : 30;
    const double ms_s = time_path(b, run_mlstm, &a, RECUR_CUDA_PATH_SERIAL, reps_s);
    const double ms_c = time_path(b, run_mlstm, &a, RECUR_CUDA_PATH_CHUNKED, reps_c);
    report("mlstm", T, ms_s, ms_c, dy, vy, ds, vs);
    void *bufs[] = {din, dst, dh, doff, dsl};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) b->iface.buf_free(b, bufs[i]);
    free(h_in); free(st0); free(hs); free(hc); free(ss); free(sc);
}

static void bench_wkv(recur_backend_t *b, int T) {
    enum { C = 4096, N = 64, H = C / N };
    const size_t TC = (size_t)T * C, per = (size_t)H * N * N;
    float *h_in = malloc(6 * TC * sizeof(float)), *st0 = malloc(per * sizeof(float));
    float *ys = malloc(TC * sizeof(float)), *yc = malloc(TC * sizeof(float));
    float *ss = malloc(per * sizeof(float)), *sc = malloc(per * sizeof(float));
    fill(h_in, 6 * TC, -1.f, 1.f);
    for (size_t i = 0; i < TC; i++) h_in[TC + i] = frand(0.55f, 1.f); /* decay */
    for (size_t m = 0; m < (size_t)T * H; m++) {                      /* kk: unit vectors per head */
        float *kk = h_in + 4 * TC + m * N;
        double s2 = 0;
        for (int j = 0; j < N; j++) s2 += (double)kk[j] * kk[j];
        for (int j = 0; j < N; j++) kk[j] /= (float)sqrt(s2);
    }
    for (size_t i = 0; i < TC; i++) h_in[5 * TC + i] = frand(0.f, 1.f);
    fill(st0, per, -0.5f, 0.5f);
    float *din = dev(b, h_in, 6 * TC * sizeof(float)), *dst = dev(b, st0, per * sizeof(float));
    float *dy = dev(b, NULL, TC * sizeof(float));
    int32_t off[2] = {0, T}, sl[1] = {0};
    int32_t *doff = dev(b, off, sizeof off), *dsl = dev(b, sl, sizeof sl);
    recur_rwkv7_wkv_args_t a = {.C = C, .head_size = N, .rows = {T, 1, doff, dsl}, .r = din, .w = din + TC,
                                .k = din + 2 * TC, .v = din + 3 * TC, .kk = din + 4 * TC, .a = din + 5 * TC,
                                .state = {dst, per * sizeof(float), 0, RECUR_DTYPE_F32}, .y = dy};
    if (recur_cuda_rwkv7_wkv_path(b, &a, RECUR_CUDA_PATH_SERIAL) != RECUR_OK) failures++;
    b->iface.download(b, ys, dy, TC * sizeof(float));
    b->iface.download(b, ss, dst, per * sizeof(float));
    b->iface.upload(b, dst, st0, per * sizeof(float));
    if (recur_cuda_rwkv7_wkv_path(b, &a, RECUR_CUDA_PATH_CHUNKED) != RECUR_OK) failures++;
    b->iface.download(b, yc, dy, TC * sizeof(float));
    b->iface.download(b, sc, dst, per * sizeof(float));
    double d1, v1, d2, v2;
    diff(yc, ys, TC, &d1, &v1);
    diff(sc, ss, per, &d2, &v2);
    show_bad("wkv y", yc, ys, TC, C, v1);
    show_bad("wkv state (as [H*64 value rows][64])", sc, ss, per, N, v2);
    /* the state is re-randomised by each timed call's own output: fine, the decay keeps it bounded */
    const int reps_s = T >= 1024 ? 3 : 10, reps_c = T >= 1024 ? 10 : 30;
    const double ms_s = time_path(b, run_wkv, &a, RECUR_CUDA_PATH_SERIAL, reps_s);
    const double ms_c = time_path(b, run_wkv, &a, RECUR_CUDA_PATH_CHUNKED, reps_c);
    report("wkv", T, ms_s, ms_c, d1, v1, d2, v2);
    void *bufs[] = {din, dst, dy, doff, dsl};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) b->iface.buf_free(b, bufs[i]);
    free(h_in); free(st0); free(ys); free(yc); free(ss); free(sc);
}

int main(int argc, char **argv) {
    int Ts[32] = {16, 32, 64, 128, 256, 512, 1024, 2048}, nT = 8;
    if (argc > 1) {
        nT = 0;
        for (char *p = argv[1]; *p && nT < 32;) {
            Ts[nT++] = (int)strtol(p, &p, 10);
            if (*p == ',') p++;
        }
    }
    recur_backend_params_t par = recur_backend_default_params();
    recur_backend_t *b = NULL;
    if (recur_backend_init("cuda", &par, &b) != RECUR_OK) return RECUR_TEST_SKIP;
    printf("# one sequence, 7B shapes: mlstm NH 8 x DQK 256 x DV 512; wkv C 4096 (64 heads of 64)\n");
    printf("# ms per call; diff = max|chunked - serial| / max(1, max|serial|) for outputs, then states\n");
    printf("%-6s %6s %10s %10s %9s %10s %10s\n", "op", "T", "serial", "chunked", "speedup", "diff out", "diff st");
    for (int i = 0; i < nT; i++) bench_mlstm(b, Ts[i]);
    for (int i = 0; i < nT; i++) bench_wkv(b, Ts[i]);
    recur_backend_free(b);
    printf("%s (%d mismatches)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
