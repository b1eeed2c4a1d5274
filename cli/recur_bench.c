/* recur_bench.c: see recur_bench.h.
 *
 * Output: one table (like nccl-tests), every row "what | shape | time | throughput |
 * floor | % of floor", and with --json the same rows as JSON. Floors:
 *   decode  = (matrix bytes read once per step + state bytes read and written) / copy bandwidth
 *   prefill = 2 * matrix params * tokens / measured GEMM rate, the rate measured in the
 *             weights' format at the rows of the prompt's forward pieces (min(prompt, --piece))
 * so "% of floor" = floor time / measured time (100% = at the hardware limit). */
#include "recur_bench.h"
#include "recur_synth.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "recur_backend.h"
#include "recur_comm.h"
#include "recur_log.h"
#include "recur_model.h"
#include "recur_model_files.h"

#define BENCH_MAX_LIST 32

typedef struct bench_opts {
    const char *model, *backend, *json;
    recur_dtype_t weights, state;
    int32_t batches[BENCH_MAX_LIST], n_batches, want_max_batch;
    int32_t prompts[BENCH_MAX_LIST], n_prompts;
    int32_t steps, layers, piece, tp, pp;
    int32_t decode_after;   /* > 0: that many batch-1 decode steps after each prefill */
    const char *skip;       /* --skip "SET;SET": decode again without each set's kernels */
} bench_opts_t;

typedef struct bench_row {
    char what[32], shape[48];
    int64_t n;              /* the batch or the prompt length, for readers of the JSON */
    double ms, throughput, floor_ms;
    const char *unit;
    double mem_gib;
} bench_row_t;

typedef struct bench {
    bench_opts_t o;
    recur_backend_t *b;
    double copy_gbs, gemv_gbs;
    /* the GEMM rate per row count: one per distinct prefill piece (256 rows without prompts) */
    int64_t gemm_rows[BENCH_MAX_LIST];
    double gemm_tflops[BENCH_MAX_LIST];
    int n_gemm;
    bench_row_t rows[128];
    int n_rows;
    char device[160], model_desc[256];
    /* under mpirun (--tp/--pp): the grid; only rank 0 prints */
    int dist;
    recur_grid_t grid;
    recur_comm_t *comm;
    FILE *out;
    size_t state_bytes;   /* per slot */
    recur_dtype_t wdt;    /* the weight format in use */
    int64_t matrix_bytes; /* recur_model_info_t.matrix_bytes (rank 0) */
    double mem_model_gib; /* device memory in use with the 2-slot model loaded */
    int32_t max_fit;      /* the largest batch that fits (0: not measured) */
    uint32_t skip_now;    /* recur_model_params_t.skip_kernels of the model open_model makes */
    const char *skip_set; /* its names, for the decode rows (NULL: none left out) */
} bench_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse_list(const char *opt, const char *s, int32_t *out, int32_t *n, int allow_max, int32_t *want_max) {
    *n = 0;
    const char *p = s;
    while (*p) {
        if (allow_max && strncmp(p, "max", 3) == 0 && (p[3] == ',' || p[3] == '\0')) {
            *want_max = 1;
            p += 3;
        } else {
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (errno || end == p || v < 1 || v > (1L << 24) || *n >= BENCH_MAX_LIST) {
                fprintf(stderr, "recur bench: %s expects a list of positive integers%s, got '%s'\n", opt,
                        allow_max ? " (or 'max')" : "", s);
                return -1;
            }
            out[(*n)++] = (int32_t)v;
            p = end;
        }
        if (*p == ',') p++;
        else if (*p) {
            fprintf(stderr, "recur bench: bad list '%s'\n", s);
            return -1;
        }
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: recur bench [--model rwkv7-7b|xlstm-7b|rwkv7-tiny8|xlstm-tiny8|PATH] [--backend cuda|cpu] [--weights bf16|f32|int8|fp8]\n"
            "                   [--state f32|bf16] [--batch 1,8,32,128,256,512,max]\n"
            "                   [--prompt 2048,8192,32768,131072] [--steps N] [--piece N] [--layers N]\n"
            "                   [--json FILE] [--tp T --pp P] [--decode-after N] [--skip SET;SET...]\n"
            "  rwkv7-7b / xlstm-7b: random weights at the real shapes, made on the device;\n"
            "  rwkv7-tiny8 / xlstm-tiny8: small ones (8 heads, 8 layers) for quick runs and splits.\n"
            "  --state: storage of the recurrent state's matrices (default f32; bf16 halves a slot).\n"
            "  --weights int8|fp8: projections quantized to one byte at load (README, Weights).\n"
            "  --layers N keeps only the first N layers (quick runs); --piece is the number of\n"
            "  tokens per forward pass in prefill (default 2048); 'max' in --batch adds the largest\n"
            "  batch whose states (and the decode workspace for that many rows) fit in free device\n"
            "  memory. --decode-after N: after each prefill, N timed batch-1 decode steps of that\n"
            "  sequence (a 'decode@context' row: decode with the state of a prompt that long). Split over ranks: mpirun -np T*P recur bench --tp T --pp P ... (one GPU per\n"
            "  rank; floors are for T*P GPUs; a 'comm' row times the step's all-reduces and\n"
            "  stage-to-stage sends alone).\n"
            "  --skip: after the decode rows, the same decode batches again with each set's kernels\n"
            "  left out of every step (SET: comma-separated names among norm1 shift1 proj lora2 recur\n"
            "  recur_out out norm2 shift2 ffn_up ffn_act ffn_down): what each costs inside a step,\n"
            "  where timelines cannot be had. The outputs of such steps are wrong, and the sampler's\n"
            "  time depends on them (steps sample at top-p 0.9).\n");
}

/* The next ';'-separated set of a --skip list at *q into set[256], *q moved past it; 0, or
 * -1 for a set too long or naming an unknown kernel. */
static int next_skip_set(const char **q, char *set, uint32_t *mask) {
    const size_t n = strcspn(*q, ";");
    snprintf(set, 256, "%.*s", (int)(n < 256 ? n : 255), *q);
    *q += n + ((*q)[n] == ';');
    return n < 256 && recur_skip_parse(set, mask) == 0 ? 0 : -1;
}

static int parse(int argc, char **argv, int first, bench_opts_t *o) {
    *o = (bench_opts_t){.model = "rwkv7-7b", .backend = NULL, .weights = RECUR_DTYPE_BF16, .state = RECUR_DTYPE_F32,
                        .steps = 20, .piece = 2048, .tp = 1, .pp = 1};
    parse_list("--batch", "1,8,32,128,256,512,max", o->batches, &o->n_batches, 1, &o->want_max_batch);
    parse_list("--prompt", "2048,8192,32768,131072", o->prompts, &o->n_prompts, 0, NULL);
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "recur bench: '%s' needs a value\n", a); return -1; }
        i++;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--backend")) o->backend = v;
        else if (!strcmp(a, "--json")) o->json = v;
        else if (!strcmp(a, "--skip")) {
            char set[256];
            uint32_t mask;
            for (const char *q = v; *q;) {
                if (next_skip_set(&q, set, &mask) != 0) {
                    fprintf(stderr, "recur bench: --skip: bad set '%s' (names: norm1 shift1 proj lora2 recur recur_out "
                                    "out norm2 shift2 ffn_up ffn_act ffn_down)\n", set);
                    return -1;
                }
            }
            o->skip = v;
        }
        else if (!strcmp(a, "--weights")) {
            if (recur_dtype_parse_weights(v, &o->weights)) {
                fprintf(stderr, "recur bench: --weights f32|bf16|int8|fp8\n");
                return -1;
            }
        } else if (!strcmp(a, "--state")) {
            if (!strcmp(v, "bf16")) o->state = RECUR_DTYPE_BF16;
            else if (!strcmp(v, "f32")) o->state = RECUR_DTYPE_F32;
            else { fprintf(stderr, "recur bench: %s bf16|f32\n", a); return -1; }
        } else if (!strcmp(a, "--batch")) {
            o->want_max_batch = 0;
            if (parse_list(a, v, o->batches, &o->n_batches, 1, &o->want_max_batch)) return -1;
        } else if (!strcmp(a, "--prompt")) {
            if (parse_list(a, v, o->prompts, &o->n_prompts, 0, NULL)) return -1;
        } else if (!strcmp(a, "--steps") || !strcmp(a, "--layers") || !strcmp(a, "--piece") || !strcmp(a, "--tp") ||
                   !strcmp(a, "--pp") || !strcmp(a, "--decode-after")) {
            char *end;
            long x = strtol(v, &end, 10);
            if (*end || x < 1 || x > (1L << 20)) { fprintf(stderr, "recur bench: %s expects a positive integer\n", a); return -1; }
            if (!strcmp(a, "--steps")) o->steps = (int32_t)x;
            else if (!strcmp(a, "--layers")) o->layers = (int32_t)x;
            else if (!strcmp(a, "--tp")) o->tp = (int32_t)x;
            else if (!strcmp(a, "--pp")) o->pp = (int32_t)x;
            else if (!strcmp(a, "--decode-after")) o->decode_after = (int32_t)x;
            else o->piece = (int32_t)x;
        } else if (!strcmp(a, "--log-level")) {
            int lvl = recur_log_level_parse(v);
            if (lvl < 0) { fprintf(stderr, "recur bench: bad --log-level\n"); return -1; }
            recur_log_set_level((recur_log_level_t)lvl);
        } else {
            fprintf(stderr, "recur bench: unknown option '%s'\n", a);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- measurements */

static void add_row(bench_t *bn, const char *what, const char *shape, int64_t n, double ms, double thr,
                    const char *unit, double floor_ms, double mem_gib) {
    if (bn->n_rows >= (int)(sizeof bn->rows / sizeof bn->rows[0])) return;
    bench_row_t *r = &bn->rows[bn->n_rows++];
    r->n = n;
    snprintf(r->what, sizeof r->what, "%s", what);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    r->ms = ms;
    r->throughput = thr;
    r->unit = unit;
    r->floor_ms = floor_ms;
    r->mem_gib = mem_gib;
    if (!bn->out) return;
    fprintf(bn->out, "  %-16s %-22s %11.3f %12.1f %-8s %10.3f %7.1f%% %8s\n", what, shape, ms, thr, unit, floor_ms,
            floor_ms > 0 ? 100.0 * floor_ms / ms : 0.0, "");
    if (mem_gib > 0) fprintf(bn->out, "  %-16s %-22s %40s peak memory %.2f GiB\n", "", "", "", mem_gib);
    fflush(bn->out);
}

static double mem_used_gib(recur_backend_t *b) {
    size_t used = 0, total = 0;
    if (!b->iface.mem_info || b->iface.mem_info(b, &used, &total) != RECUR_OK) return 0.0;
    return (double)used / (1024.0 * 1024.0 * 1024.0);
}

/* The rows of a prompt of T tokens' forward pieces (the last piece may be shorter) */
static int64_t prefill_rows(const bench_t *bn, int32_t T) { return T < bn->o.piece ? T : bn->o.piece; }

/* The measured GEMM rate at `rows` (TFLOP/s; 0 if not measured) */
static double gemm_tflops_at(const bench_t *bn, int64_t rows) {
    for (int i = 0; i < bn->n_gemm; i++)
        if (bn->gemm_rows[i] == rows) return bn->gemm_tflops[i];
    return 0.0;
}

/* Device copy bandwidth (read + write counted) and a 12288x4096 product at batch 1 (weight
 * bytes) and at the rows of each prefill piece size (flops; 256 rows without prompts).
 * int8 above its fused kernel's rows widens the codes and calls cuBLAS, at a lower rate per
 * flop than the fused kernel's at 256 rows: the prefill floor needs the rate at the rows
 * the prefill runs, or int8 prefill reads above 100% of its floor. */
static recur_status_t measure_limits(bench_t *bn) {
    recur_backend_t *b = bn->b;
    int gpu = strcmp(recur_backend_name(b), "cpu") != 0;
    size_t bytes = gpu ? (size_t)1 << 30 : (size_t)256 << 20;
    void *src = b->iface.alloc(b, bytes), *dst = b->iface.alloc(b, bytes);
    recur_status_t st = RECUR_OK;
    if (!src || !dst) { st = RECUR_E_NOMEM; goto out; }
    RECUR_TRY(b->iface.copy(b, dst, src, bytes));
    RECUR_TRY(b->iface.synchronize(b));
    int reps = gpu ? 20 : 3;
    double t0 = now_s();
    for (int i = 0; i < reps; i++) RECUR_TRY(b->iface.copy(b, dst, src, bytes));
    RECUR_TRY(b->iface.synchronize(b));
    double dt = now_s() - t0;
    bn->copy_gbs = 2.0 * (double)bytes * reps / dt / 1e9;
    if (bn->out)
        fprintf(bn->out, "  %-16s %-22s %11.3f %12.1f %-8s\n", "d2d copy", gpu ? "1 GiB" : "256 MiB", dt / reps * 1e3,
                bn->copy_gbs, "GB/s");

    int64_t Ms[1 + BENCH_MAX_LIST] = {1}, Mb = 0;
    int nM = 1;
    for (int i = 0; i < bn->o.n_prompts; i++) {
        const int64_t r = prefill_rows(bn, bn->o.prompts[i]);
        int seen = 0;
        for (int j = 1; j < nM; j++) seen |= Ms[j] == r;
        if (!seen) Ms[nM++] = r;
    }
    if (nM == 1) Ms[nM++] = 256;
    for (int j = 1; j < nM; j++) if (Ms[j] > Mb) Mb = Ms[j];
    const int64_t N = gpu ? 12288 : 2048, K = 4096;
    recur_weight_t w = {0};
    if (b->iface.weight_random) {
        st = b->iface.weight_random(b, N, K, 1, -0.01f, 0.01f, 0, 0, K, RECUR_WEIGHT_PROJ, &w);
    } else {
        float *h = malloc((size_t)N * K * sizeof(float));
        if (!h) { st = RECUR_E_NOMEM; goto out; }
        for (int64_t i = 0; i < N * K; i++) h[i] = recur_virtual_value(1, (uint64_t)i, -0.01f, 0.01f);
        st = b->iface.weight_upload(b, h, N, K, RECUR_WEIGHT_PROJ, &w);
        free(h);
    }
    if (st != RECUR_OK) goto out;
    float *x = b->iface.alloc(b, (size_t)Mb * K * sizeof(float)), *y = b->iface.alloc(b, (size_t)Mb * N * sizeof(float));
    if (!x || !y) { st = RECUR_E_NOMEM; goto gemm_out; }
    for (int j = 0; j < nM; j++) {
        for (int i = 0; i < 2; i++) b->iface.matmul(b, x, &w, (int32_t)Ms[j], y, 0);
        b->iface.synchronize(b);
        int n = gpu ? 50 : 2;
        t0 = now_s();
        for (int i = 0; i < n; i++) st = b->iface.matmul(b, x, &w, (int32_t)Ms[j], y, 0);
        b->iface.synchronize(b);
        dt = (now_s() - t0) / n;
        char shape[48];
        snprintf(shape, sizeof shape, "%lldx%lld M=%lld %s", (long long)N, (long long)K, (long long)Ms[j],
                 recur_dtype_name(w.dtype));
        if (j == 0) {
            bn->gemv_gbs = (double)N * K * recur_dtype_size(w.dtype) / dt / 1e9;
            /* floor: the weight bytes at the copy bandwidth (which counts reads and writes) */
            double floor_s = (double)N * K * recur_dtype_size(w.dtype) / (bn->copy_gbs * 1e9);
            if (bn->out)
                fprintf(bn->out, "  %-16s %-22s %11.3f %12.1f %-8s %10.3f %7.1f%%\n", "gemm (weights)", shape, dt * 1e3,
                        bn->gemv_gbs, "GB/s", floor_s * 1e3, 100.0 * floor_s / dt);
        } else {
            bn->gemm_rows[bn->n_gemm] = Ms[j];
            bn->gemm_tflops[bn->n_gemm] = 2.0 * (double)N * K * Ms[j] / dt / 1e12;
            if (bn->out)
                fprintf(bn->out, "  %-16s %-22s %11.3f %12.1f %-8s\n", "gemm (flops)", shape, dt * 1e3,
                        bn->gemm_tflops[bn->n_gemm] * 1e3, "GFLOP/s");
            bn->n_gemm++;
        }
    }
gemm_out:
    b->iface.buf_free(b, x);
    b->iface.buf_free(b, y);
    b->iface.weight_free(b, &w);
out:
    b->iface.buf_free(b, src);
    b->iface.buf_free(b, dst);
    return st;
}

static recur_status_t open_model(bench_t *bn, int32_t n_slots, int32_t max_tokens, recur_model_t **m,
                                 char *tmpdir, size_t tmpdir_n) {
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = n_slots;
    p.max_tokens = max_tokens;
    p.comm = bn->comm;
    p.state_dtype = bn->o.state;
    p.skip_kernels = bn->skip_now;
    if (!recur_bench_is_virtual(bn->o.model)) return recur_model_load(bn->o.model, bn->b, &p, m);
    return recur_bench_load_virtual(bn->o.model, bn->o.layers, bn->o.weights, bn->b, &p, m, tmpdir, tmpdir_n);
}

int recur_bench_is_virtual(const char *name) { return recur_synth_known(name); }

recur_status_t recur_bench_load_virtual(const char *name, int32_t layers, recur_dtype_t dtype, recur_backend_t *b,
                                        const recur_model_params_t *p, recur_model_t **m, char *tmpdir,
                                        size_t tmpdir_n) {
    *m = NULL;
    if (recur_dtype_is_quant(dtype)) dtype = RECUR_DTYPE_BF16; /* a bf16 checkpoint, quantized at load */
    recur_synth_shape_t shape;
    RECUR_TRY(recur_synth_shape(name, layers, &shape));
    recur_synth_list_t l;
    RECUR_TRY(recur_synth_tensors(&shape, &l));
    recur_status_t st = RECUR_OK;
    recur_model_files_t *f = NULL;
    const char *dir = ".";
    if (shape.is_xlstm) {
        /* the xLSTM loader reads config.json next to the weights */
        char cfg[1024], path[PATH_MAX];
        snprintf(tmpdir, tmpdir_n, "%s/recur-bench-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (recur_synth_xlstm_config(&shape, cfg, sizeof cfg) < 0 || !mkdtemp(tmpdir)) {
            tmpdir[0] = '\0';
            st = RECUR_E_IO;
            goto out;
        }
        snprintf(path, sizeof path, "%s/config.json", tmpdir);
        FILE *fp = fopen(path, "w");
        const int bad = !fp || fputs(cfg, fp) < 0;
        if ((fp && fclose(fp) != 0) || bad) {
            st = RECUR_E_IO;
            goto out;
        }
        dir = tmpdir;
    }
    if ((st = recur_model_files_virtual(dir, l.t, l.n, 2026, dtype, &f)) != RECUR_OK) goto out;
    st = recur_model_load_files(f, b, p, m);
out:
    recur_model_files_free(f);
    recur_synth_list_free(&l);
    return st;
}

static void close_model(recur_model_t *m, char *tmpdir) {
    recur_model_free(m);
    recur_bench_remove_tmpdir(tmpdir);
}

void recur_bench_remove_tmpdir(char *tmpdir) {
    if (tmpdir[0]) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/config.json", tmpdir);
        unlink(path);
        rmdir(tmpdir);
        tmpdir[0] = '\0';
    }
}

/* parameters of every matrix a step multiplies by (everything but the embedding table) */
static double step_params(const recur_model_info_t *info) {
    return (double)info->n_params - (double)info->n_vocab * info->n_embd;
}

static double n_gpus(const bench_t *bn) { return bn->dist ? (double)bn->grid.world_size : 1.0; }

/* The communication of one decode step of B rows, alone: the TP group's two all-reduces of
 * [B][C] per layer of the stage and the stage-to-stage send/recv of [B][C] (the data an
 * RWKV-7 step also sends for v_first is left out: 1/tp of it). */
static recur_status_t bench_comm(bench_t *bn, const recur_model_info_t *info, int32_t B) {
    if (!bn->dist || bn->grid.world_size == 1) return RECUR_OK;
    const recur_model_shard_t *sh = &info->shard;
    const size_t n = (size_t)B * info->n_embd;
    float *buf = bn->b->iface.alloc(bn->b, n * sizeof(float));
    if (!buf) return RECUR_E_NOMEM;
    recur_status_t st = RECUR_OK;
    double t0 = 0.0;
    for (int i = 0; i < 3 + bn->o.steps && st == RECUR_OK; i++) {
        if (i == 3) {
            if ((st = recur_comm_synchronize(bn->comm)) != RECUR_OK) break;
            if ((st = recur_comm_barrier(bn->comm)) != RECUR_OK) break;
            t0 = now_s();
        }
        if (sh->pp_rank > 0) st = recur_comm_pp_recv_prev(bn->comm, buf, n * sizeof(float));
        for (int32_t l = sh->layer_begin; l < sh->layer_end && st == RECUR_OK && sh->tp > 1; l++)
            for (int k = 0; k < 2 && st == RECUR_OK; k++) st = recur_comm_tp_allreduce(bn->comm, buf, n);
        if (st == RECUR_OK && sh->pp_rank < sh->pp - 1) st = recur_comm_pp_send_next(bn->comm, buf, n * sizeof(float));
    }
    if (st == RECUR_OK) st = recur_comm_synchronize(bn->comm);
    if (st == RECUR_OK) st = recur_comm_barrier(bn->comm);
    double dt = (now_s() - t0) / bn->o.steps;
    bn->b->iface.buf_free(bn->b, buf);
    if (st != RECUR_OK) return st;
    char shape[48];
    snprintf(shape, sizeof shape, "batch %d tp%d pp%d", B, sh->tp, sh->pp);
    add_row(bn, "comm/step", shape, B, dt * 1e3, 0.0, "", 0.0, 0);
    return RECUR_OK;
}

static recur_status_t bench_decode(bench_t *bn, recur_model_t *m, int32_t B, recur_dtype_t wdt) {
    const recur_model_info_t *info = recur_model_info(m);
    int32_t *tok = malloc((size_t)B * sizeof(int32_t)), *len = malloc((size_t)B * sizeof(int32_t));
    int32_t *slot = malloc((size_t)B * sizeof(int32_t));
    float *logits = malloc((size_t)B * info->n_vocab * sizeof(float));
    recur_sample_row_t *sp = malloc((size_t)B * sizeof *sp);
    int32_t *next = malloc((size_t)B * sizeof(int32_t));
    double t0 = 0.0;
    recur_status_t st = RECUR_E_NOMEM;
    if (!tok || !len || !slot || !logits || !sp || !next) goto out;
    for (int32_t i = 0; i < B; i++) {
        tok[i] = (int32_t)((i * 7919 + 13) % info->n_vocab);
        len[i] = 1;
        slot[i] = i + 1;
        if ((st = recur_model_state_reset(m, i + 1)) != RECUR_OK) goto out;
    }
    recur_batch_t bt = {.n_seq = B, .tokens = tok, .seq_len = len, .slot = slot, .logits = RECUR_LOGITS_LAST};
    /* A server's step: forward, then sampling on the device (temperature 1, top-p 0.9),
     * only the token ids coming back; backends without a sample op copy the logits. */
    for (int32_t i = 0; i < B; i++)
        sp[i] = (recur_sample_row_t){.temperature = 1.f, .top_p = 0.9f, .seed = (uint64_t)i, .step = 0};
    for (int i = 0; i < 3 + bn->o.steps; i++) {
        if (i == 3) t0 = now_s();
        st = bn->b->iface.sample ? recur_model_forward_sample(m, &bt, sp, info->n_vocab, next)
                                 : recur_model_forward(m, &bt, logits);
        if (st != RECUR_OK) goto out;
        for (int32_t j = 0; j < B; j++) sp[j].step++;
    }
    double dt = (now_s() - t0) / bn->o.steps;
    /* the floor: each rank reads its matrices as stored (codes and scales in the int8 / fp8
     * modes: info->matrix_bytes) and reads and writes its shard of B states once; the step
     * waits for the slowest rank */
    int64_t bytes = -(info->matrix_bytes + 2 * (int64_t)B * (int64_t)info->state_bytes);
    if (bn->dist && (st = recur_comm_min_i64(bn->comm, &bytes)) != RECUR_OK) goto out;
    char shape[48];
    if (bn->skip_set) snprintf(shape, sizeof shape, "batch %d w/o %s", B, bn->skip_set);
    else snprintf(shape, sizeof shape, "batch %d", B);
    add_row(bn, "decode", shape, B, dt * 1e3, B / dt, "tok/s", (double)-bytes / (bn->copy_gbs * 1e9) * 1e3, 0);
    st = bench_comm(bn, info, B);
out:
    free(sp);
    free(next);
    free(tok);
    free(len);
    free(slot);
    free(logits);
    return st;
}

/* record 0: a warm-up (first-use costs out of the first timed prompt), no row */
static recur_status_t bench_prefill(bench_t *bn, recur_model_t *m, int32_t T, recur_dtype_t wdt, int record) {
    const recur_model_info_t *info = recur_model_info(m);
    int32_t *tok = malloc((size_t)T * sizeof(int32_t)), slot = 1;
    float *logits = malloc((size_t)info->n_vocab * sizeof(float));
    recur_status_t st = RECUR_E_NOMEM;
    if (!tok || !logits) goto out;
    for (int32_t i = 0; i < T; i++) tok[i] = (int32_t)(((int64_t)i * 2654435761u) % (uint32_t)info->n_vocab);
    if ((st = recur_model_state_reset(m, 1)) != RECUR_OK) goto out;
    recur_batch_t bt = {.n_seq = 1, .tokens = tok, .seq_len = &T, .slot = &slot, .logits = RECUR_LOGITS_LAST};
    recur_sample_row_t sp = {.temperature = 1.f, .top_p = 0.9f};
    int32_t first = 0;
    double t0 = now_s(); /* time to first token: the prefill and the first token's sampling */
    st = bn->b->iface.sample ? recur_model_forward_sample(m, &bt, &sp, info->n_vocab, &first)
                             : recur_model_forward(m, &bt, logits);
    if (st != RECUR_OK) goto out;
    double dt = now_s() - t0;
    if (!record) goto out;
    double flops = 2.0 * step_params(info) * T;
    char shape[48];
    snprintf(shape, sizeof shape, "prompt %d (TTFT)", T);
    const double rate = gemm_tflops_at(bn, prefill_rows(bn, T));
    add_row(bn, "prefill", shape, T, dt * 1e3, T / dt, "tok/s", rate > 0 ? flops / (rate * 1e12 * n_gpus(bn)) * 1e3 : 0,
            mem_used_gib(bn->b));
    if (bn->o.decode_after > 0) {
        /* decode on from the state the prompt left (its first token already sampled): a
         * recurrent model's step costs the same at any context, and this row shows it */
        int32_t one = 1, tk = first;
        recur_batch_t db = {.n_seq = 1, .tokens = &tk, .seq_len = &one, .slot = &slot, .logits = RECUR_LOGITS_LAST};
        for (int i = 0; i < 3 + bn->o.decode_after; i++) {
            if (i == 3) t0 = now_s();
            sp.step++;
            st = bn->b->iface.sample ? recur_model_forward_sample(m, &db, &sp, info->n_vocab, &tk)
                                     : recur_model_forward(m, &db, logits);
            if (st != RECUR_OK) goto out;
        }
        dt = (now_s() - t0) / bn->o.decode_after;
        /* the floor as decode's: this rank's matrices as stored and its state shard, once */
        int64_t bytes = -(info->matrix_bytes + 2 * (int64_t)info->state_bytes);
        if (bn->dist && (st = recur_comm_min_i64(bn->comm, &bytes)) != RECUR_OK) goto out;
        snprintf(shape, sizeof shape, "batch 1 after %d", T);
        add_row(bn, "decode@context", shape, T, dt * 1e3, 1.0 / dt, "tok/s",
                (double)-bytes / (bn->copy_gbs * 1e9) * 1e3, mem_used_gib(bn->b));
    }
out:
    free(tok);
    free(logits);
    return st;
}

static void write_json(const bench_t *bn) {
    FILE *f = fopen(bn->o.json, "w");
    if (!f) {
        recur_log_err("%s: cannot write: %s", bn->o.json, strerror(errno));
        return;
    }
    fprintf(f, "{\"device\":\"%s\",\"model\":\"%s\",\"weights\":\"%s\",\"matrix_bytes\":%lld,"
               "\"mem_model_gib\":%.3f,\"state\":\"%s\",\"state_bytes\":%zu,\"max_batch\":%d,"
               "\"copy_gbs\":%.1f,\"gemv_gbs\":%.1f,\"gemm_tflops\":%.4g,\"gemm\":[",
            bn->device, bn->model_desc, recur_dtype_name(bn->wdt), (long long)bn->matrix_bytes, bn->mem_model_gib,
            recur_dtype_name(bn->o.state), bn->state_bytes, bn->max_fit, bn->copy_gbs, bn->gemv_gbs,
            bn->n_gemm ? bn->gemm_tflops[0] : 0.0);
    /* gemm_tflops (above, for older readers): the first rate, at the first prompt's pieces */
    for (int i = 0; i < bn->n_gemm; i++)
        fprintf(f, "%s{\"rows\":%lld,\"tflops\":%.4g}", i ? "," : "", (long long)bn->gemm_rows[i], bn->gemm_tflops[i]);
    fprintf(f, "],\"rows\":[");
    for (int i = 0; i < bn->n_rows; i++) {
        const bench_row_t *r = &bn->rows[i];
        fprintf(f, "%s{\"what\":\"%s\",\"shape\":\"%s\",\"n\":%lld,\"ms\":%.4f,\"throughput\":%.2f,\"unit\":\"%s\","
                   "\"floor_ms\":%.4f,\"pct_of_floor\":%.2f,\"mem_gib\":%.3f}",
                i ? "," : "", r->what, r->shape, (long long)r->n, r->ms, r->throughput, r->unit, r->floor_ms,
                r->floor_ms > 0 ? 100.0 * r->floor_ms / r->ms : 0.0, r->mem_gib);
    }
    fprintf(f, "]}\n");
    fclose(f);
}

int recur_bench_main(int argc, char **argv, int first) {
    bench_t *bn = calloc(1, sizeof *bn);
    if (!bn) return 1;
    int rc = 1;
    recur_model_t *m = NULL;
    char tmpdir[PATH_MAX] = "";
    for (int i = first; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage();
            free(bn);
            return 0;
        }
    if (parse(argc, argv, first, &bn->o)) {
        usage();
        free(bn);
        return 2;
    }
    const char *backend = bn->o.backend;
#ifdef RECUR_USE_CUDA
    if (!backend) backend = "cuda";
#else
    if (!backend) backend = "cpu";
#endif
    recur_backend_params_t bp = recur_backend_default_params();
    bp.weight_dtype = bn->o.weights;
    bn->out = stdout;
    if (bn->o.tp * bn->o.pp > 1 || getenv("OMPI_COMM_WORLD_SIZE")) {
        if (recur_comm_world_init(NULL, NULL, bn->o.tp, bn->o.pp, &bn->grid) != RECUR_OK) goto done;
        bn->dist = 1;
        bp.device = bn->grid.local_rank;
        if (bn->grid.world_rank != 0) bn->out = NULL;
    }
    if (recur_backend_init(backend, &bp, &bn->b) != RECUR_OK) goto done;
    if (bn->dist && recur_comm_create(&bn->grid, bn->b, &bn->comm) != RECUR_OK) goto done;
    /* the CPU backend stores a bf16 request as f32 */
    recur_dtype_t wdt = strcmp(backend, "cpu") == 0 && bn->o.weights == RECUR_DTYPE_BF16 ? RECUR_DTYPE_F32 : bn->o.weights;
    bn->wdt = wdt;
    snprintf(bn->device, sizeof bn->device, "%s", recur_backend_name(bn->b));

    FILE *out = bn->out;
    if (out) {
        fprintf(out, "# recur bench: model %s, backend %s, weights %s, state %s", bn->o.model, bn->device,
                recur_dtype_name(wdt), recur_dtype_name(bn->o.state));
        if (bn->dist) fprintf(out, ", %d ranks: tp %d x pp %d (%s)", bn->grid.world_size, bn->grid.tp, bn->grid.pp,
                              recur_comm_transport(bn->comm));
        fprintf(out, "\n# %-16s %-22s %11s %12s %-8s %10s %8s\n", "what", "shape", "time", "throughput", "", "floor",
                "of floor");
        fprintf(out, "# %-16s %-22s %11s %12s %-8s %10s %8s\n", "", "", "(ms)", "", "", "(ms)", "");
    }
    if (measure_limits(bn) != RECUR_OK) goto done;

    /* decode: one model with enough slots for the largest batch that fits */
    int32_t max_b = 0;
    for (int i = 0; i < bn->o.n_batches; i++) if (bn->o.batches[i] > max_b) max_b = bn->o.batches[i];
    int32_t piece = bn->o.piece;
    if (open_model(bn, 2, 1, &m, tmpdir, sizeof tmpdir) != RECUR_OK) goto done; /* to learn the sizes */
    const recur_model_info_t *info0 = recur_model_info(m);
    size_t state_bytes = info0->state_bytes;
    bn->state_bytes = state_bytes;
    snprintf(bn->model_desc, sizeof bn->model_desc,
             "%s %s: %d layers, C=%d, vocab %d, %.3gM params, state %.2f MiB (%zu bytes, %s matrices)", bn->o.model,
             info0->arch_name, info0->n_layer, info0->n_embd, info0->n_vocab, info0->n_params / 1e6,
             state_bytes / (1024.0 * 1024.0), state_bytes, recur_dtype_name(info0->state_dtype));
    if (out) fprintf(out, "# %s\n", bn->model_desc);
    bn->matrix_bytes = info0->matrix_bytes;
    bn->mem_model_gib = mem_used_gib(bn->b);
    if (out)
        fprintf(out, "# weights %s: %.3f GiB of matrices read per step%s; device memory in use with the model loaded "
                "(2 slots): %.2f GiB\n", recur_dtype_name(wdt), (double)info0->matrix_bytes / (1 << 30),
                bn->dist ? " (this rank)" : "", bn->mem_model_gib);
    if (bn->o.want_max_batch && bn->b->iface.mem_info) {
        /* Memory in use with this model of 2 slots and a 1-row workspace, then with a
         * second one of 129 rows: the difference is 128 rows of workspace and logits, which
         * a decode batch of B rows also needs (RWKV-7 7B: ~0.6 MiB per row, as much as
         * 1/30 of a bf16 slot, so it must be counted where thousands of slots fit). */
        size_t used1 = 0, used2 = 0, total = 0;
        bn->b->iface.mem_info(bn->b, &used1, &total);
        close_model(m, tmpdir);
        m = NULL;
        if (open_model(bn, 2, 129, &m, tmpdir, sizeof tmpdir) != RECUR_OK) goto done;
        bn->b->iface.mem_info(bn->b, &used2, &total);
        /* per row: the measured workspace and logits, plus 64 KiB the backend grows on
         * first use (bf16 copies of activations for the tensor cores); 2 GiB kept free */
        double per_row = (used2 > used1 ? (double)(used2 - used1) / 128.0 : 0.0) + 65536.0;
        double free_b = (double)total - (double)used1 - 2.0 * (1 << 30);
        int32_t fit = free_b > 0 ? (int32_t)(free_b / ((double)state_bytes + per_row)) - 1 : 0;
        if (bn->dist) { /* every rank's pool: the fewest that fit anywhere */
            int64_t f64 = fit;
            if (recur_comm_min_i64(bn->comm, &f64) != RECUR_OK) goto done;
            fit = (int32_t)f64;
        }
        bn->max_fit = fit;
        if (fit > max_b) max_b = fit;
        if (fit > 0) bn->o.batches[bn->o.n_batches++] = fit;
        if (out)
            fprintf(out, "# largest batch that fits: %d slots of %.2f MiB (%s state%s) and %.2f MiB of workspace per row\n",
                    fit, state_bytes / (1024.0 * 1024.0), recur_dtype_name(bn->o.state),
                    bn->dist ? ", this rank's shard" : "", per_row / (1024.0 * 1024.0));
    }
    close_model(m, tmpdir);
    m = NULL;
    if (open_model(bn, max_b + 1, max_b, &m, tmpdir, sizeof tmpdir) != RECUR_OK) goto done;
    for (int i = 0; i < bn->o.n_batches; i++)
        if (bench_decode(bn, m, bn->o.batches[i], wdt) != RECUR_OK) goto done;
    close_model(m, tmpdir);
    m = NULL;
    /* --skip: each set's kernels left out (a model loaded per set: the mask is fixed at load) */
    for (const char *q = bn->o.skip; q && *q;) {
        char set[256];
        if (next_skip_set(&q, set, &bn->skip_now) != 0) goto done; /* parse() checked every set */
        bn->skip_set = set;
        recur_status_t st = open_model(bn, max_b + 1, max_b, &m, tmpdir, sizeof tmpdir);
        for (int i = 0; i < bn->o.n_batches && st == RECUR_OK; i++) st = bench_decode(bn, m, bn->o.batches[i], wdt);
        close_model(m, tmpdir);
        m = NULL;
        bn->skip_now = 0;
        bn->skip_set = NULL;
        if (st != RECUR_OK) goto done;
    }

    /* prefill: a model with a piece-sized workspace and one request slot */
    if (open_model(bn, 2, piece, &m, tmpdir, sizeof tmpdir) != RECUR_OK) goto done;
    if (bn->o.n_prompts && bench_prefill(bn, m, bn->o.prompts[0] < piece ? bn->o.prompts[0] : piece, wdt, 0) != RECUR_OK)
        goto done;
    for (int i = 0; i < bn->o.n_prompts; i++)
        if (bench_prefill(bn, m, bn->o.prompts[i], wdt, 1) != RECUR_OK) goto done;
    if (bn->o.json && out) write_json(bn);
    rc = 0;
done:
    close_model(m, tmpdir);
    if (rc != 0 && bn->dist && bn->comm && bn->grid.world_size > 1) recur_comm_world_abort(1); /* no rank left waiting */
    recur_comm_free(bn->comm);
    recur_backend_free(bn->b);
    if (bn->dist) recur_comm_world_finalize();
    free(bn);
    return rc;
}
