/* bench_ppl.c: perplexity of a model on a text, per weight format (--weights f32, bf16,
 * int8, fp8), token by token (decode: one row per forward) and in prefill pieces.
 *
 *   bench_ppl [--backend cpu|cuda] [--model PATH] [--text FILE] [--piece N] [--check]
 *
 * Defaults: the real tiny RWKV-7 (byte-level, so a token is a byte) from the shared
 * fixtures and tests/data/ppl-sample.txt (its provenance: tests/data/README.md), pieces of
 * 128 rows. For each format and path it prints the perplexity exp(mean NLL) of predicting
 * every byte from the ones before it (the first byte has no prediction), bits per byte, and
 * against the f32 run: the largest |logit difference|, the mean KL(f32 || format) of the
 * next-token distributions, and how often the greedy token is the same. On the CPU, bf16 is
 * emulated (fp32 arithmetic on bf16-rounded weights: what the GPU's decode does); on cuda it
 * is the backend's bf16 mode (its prefill also rounds activations to bf16).
 * --check (the CTest registration, CPU): exits 1 unless every perplexity is finite and the
 * quantized ones stay within the bounds below of f32's. The table is the source of the
 * perplexity numbers in docs/benchmarks.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_backend.h"
#include "recur_log.h"
#include "recur_testutil.h"

/* --check: the perplexity ratio to f32 allowed per format, either way (measured on the CPU,
 * 2026-11-23, decode / prefill: bf16 1.0000 / 1.0000 (the model's weights are bf16 values),
 * int8 1.0004 / 1.0004, fp8 0.9993 / 0.9999; bounds about 5x the measured distance) */
static const double check_ratio[4] = {1.0, 1.001, 1.002, 1.005};

typedef struct stats {
    double ppl, bpb, max_d, kl, agree;
} stats_t;

/* log-softmax of row x [V] into out */
static void log_softmax(const float *x, int V, double *out) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < V; i++) s += exp((double)x[i] - m);
    const double l = m + log(s);
    for (int i = 0; i < V; i++) out[i] = (double)x[i] - l;
}

/* lg: [n][V] logits after each token; ref: the f32 run's (NULL: lg is f32 itself) */
static stats_t score(const float *lg, const float *ref, const int32_t *tok, int n, int V) {
    stats_t st = {0};
    double nll = 0, kl = 0, maxd = 0;
    int agree = 0;
    double *lp = malloc((size_t)V * sizeof(double)), *lr = malloc((size_t)V * sizeof(double));
    for (int t = 0; t + 1 < n; t++) {
        const float *x = lg + (size_t)t * V;
        log_softmax(x, V, lp);
        nll -= lp[tok[t + 1]];
        if (ref) {
            const float *r = ref + (size_t)t * V;
            log_softmax(r, V, lr);
            for (int i = 0; i < V; i++) {
                kl += exp(lr[i]) * (lr[i] - lp[i]);
                const double d = fabs((double)x[i] - r[i]);
                if (!(d <= maxd)) maxd = d;
            }
            agree += recur_test_argmax(x, V) == recur_test_argmax(r, V);
        }
    }
    free(lp);
    free(lr);
    const int np = n - 1;
    st.ppl = exp(nll / np);
    st.bpb = nll / np / log(2.0);
    st.max_d = maxd;
    st.kl = kl / np;
    st.agree = ref ? (double)agree / np : 1.0;
    return st;
}

int main(int argc, char **argv) {
    const char *backend = "cpu", *model = NULL, *text = NULL;
    int piece = 128, check = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--check")) { check = 1; continue; }
        if (!v) { fprintf(stderr, "bench_ppl: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--text")) text = v;
        else if (!strcmp(a, "--piece")) piece = atoi(v);
        else {
            fprintf(stderr, "usage: bench_ppl [--backend cpu|cuda] [--model PATH] [--text FILE] [--piece N] [--check]\n");
            return 2;
        }
    }
    if (piece < 1) piece = 128;
    recur_log_set_level(RECUR_LOG_WARN);
    const int gpu = strcmp(backend, "cpu") != 0;
    if (gpu && recur_test_no_cuda()) return RECUR_TEST_SKIP;
    char mpath[1200], tpath[1200];
    if (model) snprintf(mpath, sizeof mpath, "%s", model);
    else recur_fixture_path(mpath, sizeof mpath, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin");
    if (text) snprintf(tpath, sizeof tpath, "%s", text);
    else recur_source_path(tpath, sizeof tpath, "tests/data/ppl-sample.txt");
    void *buf = NULL;
    size_t nb = 0;
    if (recur_read_file(tpath, &buf, &nb) != 0 || nb < 2) {
        fprintf(stderr, "bench_ppl: cannot read %s\n", tpath);
        return 1;
    }
    const int n = (int)nb;
    int32_t *tok = malloc(nb * sizeof(int32_t));
    for (size_t i = 0; i < nb; i++) tok[i] = ((const unsigned char *)buf)[i]; /* byte-level vocabulary */
    free(buf);

    static const recur_dtype_t modes[4] = {RECUR_DTYPE_F32, RECUR_DTYPE_BF16, RECUR_DTYPE_I8, RECUR_DTYPE_F8E4M3};
    float *lg[4][2] = {{NULL}};
    int V = 0, fails = 0;
    for (int mi = 0; mi < 4; mi++)
        for (int path = 0; path < 2; path++) {
            recur_backend_params_t bp = recur_backend_default_params();
            bp.weight_dtype = modes[mi];
            recur_backend_t *b = NULL;
            if (recur_backend_init(backend, &bp, &b) != RECUR_OK ||
                (!gpu && modes[mi] == RECUR_DTYPE_BF16 && recur_test_cpu_bf16_weights(b)) ||
                recur_test_model_logits(b, mpath, tok, n, piece, path == 0, &lg[mi][path], &V) != RECUR_OK) {
                fprintf(stderr, "bench_ppl: %s %s on %s failed\n", mpath, recur_dtype_name(modes[mi]), backend);
                fails++;
            }
            recur_backend_free(b);
            if (V > 0 && V < 256) { /* token ids are bytes */
                fprintf(stderr, "bench_ppl: the model's vocabulary (%d) is not byte-level\n", V);
                return 1;
            }
        }
    printf("# bench_ppl: %s on %s, %d bytes of %s, backend %s%s, prefill pieces of %d\n", mpath, backend, n, tpath,
           backend, gpu ? "" : " (bf16 emulated)", piece);
    printf("| weights | path | perplexity | bits/byte | ppl / f32 | max abs logit diff vs f32 | mean KL vs f32 (nats) "
           "| greedy = f32 |\n|---|---|---|---|---|---|---|---|\n");
    for (int path = 0; path < 2; path++) {
        if (!lg[0][path]) continue;
        const stats_t ref = score(lg[0][path], NULL, tok, n, V);
        for (int mi = 0; mi < 4; mi++) {
            if (!lg[mi][path]) continue;
            const stats_t s = mi ? score(lg[mi][path], lg[0][path], tok, n, V) : ref;
            printf("| %s | %s | %.4f | %.4f | %.4f | %.4f | %.2e | %.1f%% |\n", recur_dtype_name(modes[mi]),
                   path ? "prefill" : "decode", s.ppl, s.bpb, s.ppl / ref.ppl, s.max_d, s.kl, 100.0 * s.agree);
            if (check && (!isfinite(s.ppl) || s.ppl / ref.ppl > check_ratio[mi] || s.ppl / ref.ppl < 1.0 / check_ratio[mi])) {
                fprintf(stderr, "bench_ppl: %s %s perplexity %.4f is not within x%.3f of f32's %.4f\n",
                        recur_dtype_name(modes[mi]), path ? "prefill" : "decode", s.ppl, check_ratio[mi], ref.ppl);
                fails++;
            }
        }
    }
    for (int mi = 0; mi < 4; mi++) free(lg[mi][0]), free(lg[mi][1]);
    free(tok);
    return fails ? 1 : 0;
}
