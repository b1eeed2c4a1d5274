/* recur_testutil.c: see recur_testutil.h. */
#include "recur_testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int recur_allclose(const float *got, const float *ref, size_t n, float atol, float rtol,
                   const char *what, float *max_abs) {
    size_t bad = 0, worst = 0;
    float wd = 0.f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(got[i] - ref[i]);
        if (!(d <= atol + rtol * fabsf(ref[i]))) bad++;
        if (!(d <= wd)) { wd = d; worst = i; } /* also catches NaN */
    }
    if (!isfinite(wd)) wd = INFINITY;
    fprintf(stderr, "%-40s max|d|=%.3e @%zu (got %.6g ref %.6g)  bad=%zu/%zu  [atol %.1e rtol %.1e]\n",
            what, (double)wd, worst, n ? (double)got[worst] : 0.0, n ? (double)ref[worst] : 0.0, bad, n,
            (double)atol, (double)rtol);
    if (max_abs) *max_abs = wd;
    return bad == 0;
}

/* The environment wins over the paths compiled in, so the same test binaries run on
 * another machine (the GPU machine) where the tree and fixtures live elsewhere. */
static const char *dir_from_env(const char *var, const char *compiled) {
    const char *e = getenv(var);
    return e && *e ? e : compiled;
}

void recur_fixture_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", dir_from_env("RECUR_FIXTURES_DIR", RECUR_FIXTURES_DIR), rel);
}

void recur_source_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", dir_from_env("RECUR_SOURCE_DIR", RECUR_SOURCE_DIR), rel);
}

int recur_read_file(const char *path, void **out, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return -1; }
    long len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return -1; }
    void *buf = malloc(len ? (size_t)len : 1);
    if (!buf) { fclose(f); return -1; }
    if ((size_t)len != fread(buf, 1, (size_t)len, f)) { free(buf); fclose(f); return -1; }
    fclose(f);
    *out = buf;
    *n = (size_t)len;
    return 0;
}

int recur_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

int recur_make_temp_dir(char *buf, size_t n) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, n, "%s/recur-test-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(buf) ? 0 : -1;
}

void recur_rm_rf(const char *path) {
    char cmd[4200];
    if (!path || !strstr(path, "recur-test-")) return; /* only ever our own temp dirs */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

int recur_write_safetensors(const char *path, const recur_test_tensor_t *t, int n, const char *metadata_json) {
    size_t cap = 4096 + (size_t)n * 256, len = 0;
    char *hdr = malloc(cap);
    if (!hdr) return -1;
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":%s", metadata_json ? metadata_json : "{}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].n_dims; d++)
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + t[i].n_bytes));
        off += t[i].n_bytes;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) { free(hdr); return -1; }
    uint64_t hl = len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hl >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, len, f) == len;
    for (int i = 0; i < n && ok; i++) ok = fwrite(t[i].data, 1, t[i].n_bytes, f) == t[i].n_bytes;
    ok &= fclose(f) == 0;
    free(hdr);
    return ok ? 0 : -1;
}

#include "recur_backend.h"
#include "recur_log.h"
#include "recur_model.h"

int recur_test_run_model(const char *path, const int32_t *tokens, int n, int chunk, const float *state_in,
                         float *logits_out, float *state_out, int *n_vocab, size_t *state_floats) {
    recur_backend_t *b = NULL;
    recur_model_t *m = NULL;
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = 2;
    p.max_tokens = chunk;
    recur_status_t st = recur_backend_init("cpu", NULL, &b);
    if (st == RECUR_OK) st = recur_model_load(path, b, &p, &m);
    if (st == RECUR_OK) {
        const recur_model_info_t *info = recur_model_info(m);
        if (n_vocab) *n_vocab = info->n_vocab;
        if (state_floats) *state_floats = info->state_bytes / sizeof(float); /* the default f32 state */
        st = state_in ? recur_model_state_set(m, 1, state_in) : recur_model_state_reset(m, 1);
        int32_t slot = 1, len = n;
        recur_batch_t bt = {.n_seq = 1, .tokens = tokens, .seq_len = &len, .slot = &slot,
                            .logits = logits_out ? RECUR_LOGITS_ALL : RECUR_LOGITS_NONE};
        if (st == RECUR_OK && n > 0) st = recur_model_forward(m, &bt, logits_out);
        if (st == RECUR_OK && state_out) st = recur_model_state_get(m, 1, state_out);
    }
    recur_model_free(m);
    recur_backend_free(b);
    return st;
}

int recur_test_no_cuda(void) {
    recur_backend_t *probe = NULL;
    recur_log_level_t lvl = recur_log_get_level();
    recur_log_set_level(RECUR_LOG_NONE);
    recur_status_t st = recur_backend_init("cuda", NULL, &probe);
    recur_log_set_level(lvl);
    recur_backend_free(probe);
    if (st != RECUR_OK) fprintf(stderr, "no CUDA backend or device: skipped\n");
    return st != RECUR_OK;
}

double recur_test_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t recur_test_rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

uint32_t recur_test_rng_below(uint64_t *s, uint32_t n) { return (uint32_t)((recur_test_rng_next(s) >> 33) % n); }

float recur_test_uniform(uint64_t *s, float lo, float hi) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return lo + (hi - lo) * (float)((*s >> 11) * 0x1.0p-53);
}

void recur_test_fill(uint64_t *s, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = recur_test_uniform(s, lo, hi);
}

void recur_test_hex_dump(const char *what, const uint8_t *s, size_t n) {
    fprintf(stderr, "  %s (%zu bytes):", what, n);
    for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, " %02x", s[i]);
    fprintf(stderr, "%s\n", n > 64 ? " ..." : "");
}

void recur_test_ids_dump(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

void *recur_read_fixture32(const char *rel, size_t *n_values) {
    char path[1024];
    void *data = NULL;
    size_t n = 0;
    recur_fixture_path(path, sizeof path, rel);
    if (recur_read_file(path, &data, &n) != 0 || n % 4) {
        fprintf(stderr, "cannot read fixture %s\n", path);
        free(data);
        return NULL;
    }
    *n_values = n / 4;
    return data;
}

void *recur_test_read_values32(int fixture, const char *rel, size_t *n_values) {
    char path[1200];
    if (fixture) recur_fixture_path(path, sizeof path, rel);
    else recur_source_path(path, sizeof path, rel);
    void *d = NULL;
    size_t bytes = 0;
    if (recur_read_file(path, &d, &bytes) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    *n_values = bytes / 4;
    return d;
}

int recur_test_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* ---------------------------------------------------------------- weight formats */

/* the CPU backend's own upload, wrapped by bf16_upload (test code: one backend per process) */
static recur_status_t (*g_cpu_upload)(recur_backend_t *, const float *, int64_t, int64_t, recur_weight_use_t,
                                      recur_weight_t *);

static recur_status_t bf16_upload(recur_backend_t *b, const float *host, int64_t rows, int64_t cols,
                                  recur_weight_use_t use, recur_weight_t *w) {
    const size_t n = (size_t)rows * (size_t)cols;
    float *t = malloc((n ? n : 1) * sizeof(float));
    if (!t) return RECUR_E_NOMEM;
    for (size_t i = 0; i < n; i++) t[i] = recur_bf16_to_f32(recur_f32_to_bf16(host[i]));
    recur_status_t st = g_cpu_upload(b, t, rows, cols, use, w);
    free(t);
    return st;
}

int recur_test_cpu_bf16_weights(recur_backend_t *b) {
    /* every CPU backend has the same upload function: one saved pointer serves them all */
    if (strcmp(recur_backend_name(b), "cpu") != 0 || (g_cpu_upload && g_cpu_upload != b->iface.weight_upload)) return -1;
    g_cpu_upload = b->iface.weight_upload;
    b->iface.weight_upload = bf16_upload;
    return 0;
}

int recur_test_model_logits(recur_backend_t *b, const char *path, const int32_t *tokens, int n, int piece, int decode,
                            float **logits, int *n_vocab) {
    *logits = NULL;
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = 2;
    p.max_tokens = decode ? 1 : piece;
    recur_model_t *m = NULL;
    recur_status_t st = recur_model_load(path, b, &p, &m);
    if (st != RECUR_OK) return st;
    const int V = recur_model_info(m)->n_vocab;
    float *lg = malloc((size_t)n * (size_t)V * sizeof(float));
    st = lg ? recur_model_state_reset(m, 1) : RECUR_E_NOMEM;
    int32_t slot = 1;
    for (int t = 0; t < n && st == RECUR_OK;) {
        int32_t len = decode ? 1 : (n - t < piece ? n - t : piece);
        recur_batch_t bt = {.n_seq = 1, .tokens = tokens + t, .seq_len = &len, .slot = &slot,
                            .logits = RECUR_LOGITS_ALL};
        st = recur_model_forward(m, &bt, lg + (size_t)t * V);
        t += len;
    }
    recur_model_free(m);
    if (st != RECUR_OK) {
        free(lg);
        return st;
    }
    *logits = lg;
    if (n_vocab) *n_vocab = V;
    return RECUR_OK;
}
