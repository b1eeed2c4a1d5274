/* bench_gemv_cuda.c: the decode products (1-2 rows of x) of the 7B models on the CUDA
 * backend, per weight format, as a table: time per product, weight bytes read per second
 * and that as a fraction of the device's copy rate (read + write counted, as `recur bench`
 * prints it). Each product runs inside a CUDA graph of back-to-back launches (PDL edges,
 * as in a decode step), over enough copies of the matrix that none of it is in L2.
 *
 * It also checks what a change to these kernels could break without any model test
 * noticing at these shapes: a product launched alone and the same product fused with
 * another one (matmul_many) must give the same bits (fails otherwise).
 *
 * Usage: bench_gemv_cuda [bf16,int8,fp8 [ROWS [ONLY]]] (default all three formats; ROWS a
 * comma list of rows of x, default 1,2; above 8 rows the products are the batched GEMMs;
 * ONLY: just the products whose name or N x K contains it, e.g. for a profiler).
 * RECUR_GEMV_SPLIT, RECUR_PDL (recur_backend_cuda.cu), RECUR_QGEMM_TC_MAX_M and
 * RECUR_QGEMM_WGMMA (recur_cuda_quant.cu) select kernel variants for A/B runs.
 * Exits 77 without a GPU. Label gpu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_backend.h"
#include "recur_dtype.h"
#include "recur_testutil.h"

typedef struct {
    const char *what;
    int64_t N, K;
} shape_t;

/* RWKV-7 7.2B and xLSTM 7B (worker/recur_synth.c) */
static const shape_t k_shapes[] = {
    {"rwkv7 r|k|v|o", 4096, 4096},   {"rwkv7 ffn key", 16384, 4096}, {"rwkv7 ffn value", 4096, 16384},
    {"xlstm q|k", 2048, 4096},       {"xlstm up+gate", 21888, 4096}, {"xlstm down", 4096, 10944},
    {"12288x4096", 12288, 4096},     {"rwkv7 head", 65536, 4096},
};

#define MIN_BYTES ((size_t)1 << 30) /* matrices cycled through per graph: well past L2 */
#define CALLS 64                    /* products per graph */

static int failures;
static const char *g_only; /* ONLY (main), or NULL */

/* whether the product named `what`, N x K, is to run (ONLY) */
static int selected(const char *what, int64_t N, int64_t K) {
    char nk[48];
    snprintf(nk, sizeof nk, "%lldx%lld", (long long)N, (long long)K);
    return !g_only || strstr(what, g_only) || strstr(nk, g_only);
}

/* Ends the graph being recorded (CALLS products), replays it once to warm up, then times
 * 10 replays: seconds per product, or -1 if anything failed. */
static double graph_seconds(recur_backend_t *b) {
    void *g = NULL;
    double t = -1;
    if (b->iface.graph_end(b, &g) != RECUR_OK) return -1;
    if (b->iface.graph_launch(b, g) == RECUR_OK && b->iface.synchronize(b) == RECUR_OK) {
        const int reps = 10;
        const double t0 = recur_test_now_s();
        for (int r = 0; r < reps; r++) b->iface.graph_launch(b, g);
        if (b->iface.synchronize(b) == RECUR_OK) t = (recur_test_now_s() - t0) / (reps * CALLS);
    }
    b->iface.graph_free(b, g);
    return t;
}

/* Seconds per product of x[M] . W^T over `copies` copies of W, in a graph of CALLS. */
static double time_products(recur_backend_t *b, recur_weight_t *w, int copies, const float *x, float *y, int32_t M) {
    if (b->iface.graph_begin(b) != RECUR_OK) return -1;
    for (int i = 0; i < CALLS; i++) b->iface.matmul(b, x, &w[i % copies], M, y, 0);
    return graph_seconds(b);
}

/* matmul alone against the same product fused with another (matmul_many): same bits */
static void check_fused(recur_backend_t *b, const char *what, const recur_weight_t *w, const recur_weight_t *w2,
                        const float *x, float *y, float *y2, int32_t M) {
    const size_t n = (size_t)M * (size_t)w->rows;
    float *a = malloc(n * sizeof *a), *c = malloc(n * sizeof *c);
    const recur_matmul_op_t ops[2] = {{x, w, y, 0, RECUR_ACT_NONE}, {x, w2, y2, 0, RECUR_ACT_NONE}};
    int ok = a && c && b->iface.matmul(b, x, w, M, y, 0) == RECUR_OK && b->iface.download(b, a, y, n * 4) == RECUR_OK &&
             b->iface.matmul_many(b, M, 2, ops) == RECUR_OK && b->iface.download(b, c, y, n * 4) == RECUR_OK;
    if (ok) ok = memcmp(a, c, n * sizeof *a) == 0;
    if (!ok) {
        printf("FAIL %s M=%d: matmul and matmul_many differ\n", what, (int)M);
        failures++;
    }
    free(a);
    free(c);
}

/* A layer's products that the models issue as one matmul_many launch at batch 1 (the 7B
 * shapes; "keep": stored bf16 in every format, RECUR_WEIGHT_KEEP), timed like the single
 * products, alternating over 2 sets of weights. */
#define FUSED_MAX 7
typedef struct {
    const char *what, *shape;
    int n;
    int64_t N[FUSED_MAX], K[FUSED_MAX];
    int keep[FUSED_MAX];
} fused_t;
static const fused_t k_fused[] = {
    {"rwkv7 layer in", "r,k,v + LoRA downs", 7,
     {4096, 4096, 4096, 128, 128, 96, 480}, {4096, 4096, 4096, 4096, 4096, 4096, 4096}, {0, 0, 0, 1, 1, 1, 1}},
    {"rwkv7 LoRA ups", "4096x{128,128,96,480}", 4, {4096, 4096, 4096, 4096}, {128, 128, 96, 480}, {1, 1, 1, 1}},
    {"xlstm layer in", "q,k,v,o + gates", 6, {2048, 2048, 4096, 4096, 8, 8}, {4096, 4096, 4096, 4096, 4096, 4096},
     {0, 0, 0, 0, 1, 1}},
};

static void time_fused(recur_backend_t *b, const fused_t *f, const float *x, float *y, double copy_gbs,
                       recur_dtype_t dt) {
    recur_weight_t w[2][FUSED_MAX];
    memset(w, 0, sizeof w);
    size_t bytes = 0;
    int ok = 1;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < f->n && ok; i++) {
            ok = b->iface.weight_random(b, f->N[i], f->K[i], 300 + 10 * (uint64_t)c + (uint64_t)i, -0.02f, 0.02f, 0, 0,
                                        f->K[i], f->keep[i] ? RECUR_WEIGHT_KEEP : RECUR_WEIGHT_PROJ,
                                        &w[c][i]) == RECUR_OK;
            if (ok && c == 0)
                bytes += (size_t)f->N[i] * (size_t)f->K[i] * recur_dtype_size(w[c][i].dtype) +
                         (w[c][i].scale ? (size_t)f->N[i] * sizeof(float) : 0);
        }
    double t = -1;
    if (ok && b->iface.graph_begin(b) == RECUR_OK) {
        for (int k = 0; k < CALLS; k++) {
            recur_matmul_op_t ops[FUSED_MAX];
            int64_t off = 0;
            for (int i = 0; i < f->n; i++) {
                ops[i] = (recur_matmul_op_t){x, &w[k % 2][i], y + off, 0, RECUR_ACT_NONE};
                off += f->N[i];
            }
            b->iface.matmul_many(b, 1, f->n, ops);
        }
        t = graph_seconds(b);
    }
    if (t > 0) {
        const double gbs = (double)bytes / t / 1e9;
        char shape[48];
        snprintf(shape, sizeof shape, "%s M=1", f->shape);
        printf("%-6s %-16s %-20s %9.2f %9.0f %8.1f%%\n", recur_dtype_name(dt), f->what, shape, t * 1e6, gbs,
               copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0);
    } else {
        printf("FAIL %s: could not run\n", f->what);
        failures++;
    }
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < f->n; i++) b->iface.weight_free(b, &w[c][i]);
}

#define MAX_ROWS 16 /* entries of the ROWS list */

static int run_format(recur_dtype_t dt, const int32_t *rows, int n_rows) {
    recur_backend_params_t par = recur_backend_default_params();
    par.weight_dtype = dt;
    recur_backend_t *b = NULL;
    if (recur_backend_init("cuda", &par, &b) != RECUR_OK) return RECUR_TEST_SKIP;

    /* copy rate, read + write counted */
    const size_t cb = (size_t)1 << 30;
    void *src = b->iface.alloc(b, cb), *dst = b->iface.alloc(b, cb);
    double copy_gbs = 0;
    if (src && dst) {
        b->iface.copy(b, dst, src, cb);
        b->iface.synchronize(b);
        const double t0 = recur_test_now_s();
        for (int i = 0; i < 10; i++) b->iface.copy(b, dst, src, cb);
        b->iface.synchronize(b);
        copy_gbs = 2.0 * (double)cb * 10 / (recur_test_now_s() - t0) / 1e9;
    }
    b->iface.buf_free(b, src);
    b->iface.buf_free(b, dst);

    const int64_t maxN = 65536, maxK = 16384;
    int32_t maxM = 2;
    for (int i = 0; i < n_rows; i++)
        if (rows[i] > maxM) maxM = rows[i];
    uint64_t rng = 0x243f6a8885a308d3ull;
    float *hx = malloc((size_t)maxM * maxK * sizeof *hx);
    float *x = b->iface.alloc(b, (size_t)maxM * maxK * sizeof(float));
    float *y = b->iface.alloc(b, (size_t)maxM * maxN * sizeof(float));
    float *y2 = b->iface.alloc(b, (size_t)maxM * maxN * sizeof(float));
    if (!hx || !x || !y || !y2) {
        printf("FAIL out of memory\n");
        failures++;
        goto out;
    }
    recur_test_fill(&rng, hx, (size_t)maxM * maxK, -1.0f, 1.0f);
    b->iface.upload(b, x, hx, (size_t)maxM * maxK * sizeof(float));
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++) {
        const shape_t *s = &k_shapes[i];
        if (!selected(s->what, s->N, s->K)) continue;
        recur_weight_t w[16], w2 = {0};
        memset(w, 0, sizeof w);
        int copies = 0;
        size_t bytes = 0;
        while (copies < 16 && (copies < 2 || (size_t)copies * bytes < MIN_BYTES)) {
            if (b->iface.weight_random(b, s->N, s->K, 7 + (uint64_t)copies, -0.02f, 0.02f, 0, 0, s->K,
                                       RECUR_WEIGHT_PROJ, &w[copies]) != RECUR_OK)
                break;
            bytes = (size_t)s->N * (size_t)s->K * recur_dtype_size(w[copies].dtype) +
                    (w[copies].scale ? (size_t)s->N * sizeof(float) : 0);
            copies++;
        }
        if (copies < 2 || b->iface.weight_random(b, 256, s->K, 99, -0.02f, 0.02f, 0, 0, s->K, RECUR_WEIGHT_PROJ,
                                                 &w2) != RECUR_OK) {
            printf("FAIL %s: could not make the weights\n", s->what);
            failures++;
        } else {
            for (int ri = 0; ri < n_rows; ri++) {
                const int32_t M = rows[ri];
                check_fused(b, s->what, &w[0], &w2, x, y, y2, M);
                const double t = time_products(b, w, copies, x, y, M);
                const double gbs = (double)bytes / t / 1e9;
                char shape[48];
                snprintf(shape, sizeof shape, "%lldx%lld M=%d", (long long)s->N, (long long)s->K, (int)M);
                printf("%-6s %-16s %-20s %9.2f %9.0f %8.1f%% %8.1f\n", recur_dtype_name(w[0].dtype), s->what, shape,
                       t * 1e6, gbs, copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0,
                       2.0 * M * (double)s->N * (double)s->K / t / 1e12);
            }
        }
        for (int c = 0; c < copies; c++) b->iface.weight_free(b, &w[c]);
        b->iface.weight_free(b, &w2);
    }
    for (size_t i = 0; i < sizeof k_fused / sizeof k_fused[0]; i++)
        if (selected(k_fused[i].what, 0, 0)) time_fused(b, &k_fused[i], x, y, copy_gbs, dt);
out:
    free(hx);
    b->iface.buf_free(b, x);
    b->iface.buf_free(b, y);
    b->iface.buf_free(b, y2);
    printf("(copy rate %.0f GB/s, read + write)\n", copy_gbs);
    recur_backend_free(b);
    return 0;
}

int main(int argc, char **argv) {
    const char *list = argc > 1 ? argv[1] : "bf16,int8,fp8";
    int32_t rows[MAX_ROWS] = {1, 2};
    int n_rows = 2;
    if (argc > 2) {
        char rb[128];
        snprintf(rb, sizeof rb, "%s", argv[2]);
        n_rows = 0;
        for (char *tok = strtok(rb, ","); tok; tok = strtok(NULL, ",")) {
            char *end;
            const long v = strtol(tok, &end, 10);
            if (*end || v < 1 || v > 1024 || n_rows == MAX_ROWS) {
                fprintf(stderr, "bench_gemv_cuda: ROWS must be up to %d numbers in 1..1024, got %s\n", MAX_ROWS, argv[2]);
                return 2;
            }
            rows[n_rows++] = (int32_t)v;
        }
        if (n_rows == 0) {
            fprintf(stderr, "bench_gemv_cuda: empty ROWS\n");
            return 2;
        }
    }
    g_only = argc > 3 ? argv[3] : NULL;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    printf("%-6s %-16s %-20s %9s %9s %9s %8s\n", "format", "product", "shape", "us", "GB/s", "of copy", "TFLOP/s");
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        recur_dtype_t dt;
        if (recur_dtype_parse_weights(tok, &dt) != 0) {
            fprintf(stderr, "bench_gemv_cuda: unknown format %s\n", tok);
            return 2;
        }
        if (run_format(dt, rows, n_rows) == RECUR_TEST_SKIP) {
            printf("no usable CUDA device: skipped\n");
            return RECUR_TEST_SKIP;
        }
    }
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
