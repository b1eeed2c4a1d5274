/* test_model_files.c: recur_model_files on the rwkv.cpp .bin fixtures and on safetensors
 * files written here, plus corruption: truncations, bit flips and crafted bad headers, and
 * recur_model_files_open_memory against opening the same file from disk.
 *
 * The rule for a corrupted file: opening it must either fail with one error line, or succeed
 * with exactly the directory of the intact file (names, dtypes, shapes, offsets). Documented
 * exceptions, counted separately:
 *  - the .bin header's version (100 <-> 101) and data_type (0 <-> 1) are informational;
 *  - a flipped character of a tensor name can give another valid name. The container has no
 *    checksum, so nothing at this level can tell; the model loader rejects unknown names and
 *    reports missing ones, which is where such a file fails;
 *  - safetensors "__metadata__" strings are free-form, so a flip there gives other metadata.
 * Exit code: 0 pass, 1 fail. */
#include "recur_model_files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "recur_log.h"
#include "recur_testutil.h"

#define TINY32 "rwkv7/tiny-rwkv-7v0-834K-FP32.bin"
#define TINY16 "rwkv7/tiny-rwkv-7v0-834K-FP16.bin"
#define SYNTH7 "rwkv7/synth7-C128-H2-L3-FP32.bin"

/* ------------------------------------------------------------------ small helpers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* xorshift64: the test's own deterministic random numbers. */
static uint64_t rnd_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void path_join(char *buf, size_t n, const char *dir, const char *name) {
    int k = snprintf(buf, n, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= n) { /* never with mkdtemp paths; checked so nothing is silently cut */
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        exit(1);
    }
}

static int make_subdir(char *buf, size_t n, const char *tmp, const char *name) {
    path_join(buf, n, tmp, name);
    return mkdir(buf, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

static int shape_is(const recur_tensor_info_t *t, int nd, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t want[4] = {d0, d1, d2, d3};
    if (!t || t->n_dims != nd) return 0;
    for (int i = 0; i < nd; i++)
        if (t->shape[i] != want[i]) return 0;
    return 1;
}

/* IEEE binary32 -> binary16 with round-to-nearest-even (what torch's .half() does). */
static uint16_t f32_to_f16_rne(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u;
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to Inf */
    if (ax < 0x38800000u) {                        /* below 2^-14: half subnormal or zero */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint16_t)lrintf(a * 16777216.0f)); /* units of 2^-24 */
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

/* Opens `path` with stderr captured into `log`. */
static recur_status_t open_captured(const char *path, recur_model_files_t **out, const char *tmp, char *log,
                                    size_t cap) {
    char cpath[4096];
    path_join(cpath, sizeof cpath, tmp, "captured-stderr.txt");
    fflush(stderr);
    int fd = open(cpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int saved = dup(2);
    if (fd >= 0 && saved >= 0) dup2(fd, 2);
    if (fd >= 0) close(fd);
    recur_status_t st = recur_model_files_open(path, out);
    fflush(stderr);
    if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
    }
    log[0] = '\0';
    FILE *f = fopen(cpath, "rb");
    if (f) {
        size_t n = fread(log, 1, cap - 1, f);
        log[n] = '\0';
        fclose(f);
    }
    return st;
}

/* Expects opening `path` to fail (with `want` unless it is RECUR_OK = "any error") and to
 * log exactly one error line that names `must_name`. */
static void expect_fail(int *fails, const char *tmp, const char *path, recur_status_t want, const char *must_name,
                        const char *what) {
    char log[8192];
    recur_model_files_t *mf = (recur_model_files_t *)&log; /* sentinel: must become NULL */
    recur_status_t st = open_captured(path, &mf, tmp, log, sizeof log);
    int lines = 0;
    for (const char *p = log; (p = strstr(p, " recur error: ")) != NULL; p++) lines++;
    int ok = st != RECUR_OK && (want == RECUR_OK || st == want) && mf == NULL && lines == 1 &&
             strstr(log, must_name) != NULL;
    const char *msg = strstr(log, " recur error: ");
    fprintf(stderr, "  %-4s %-44s -> %-16s %.*s\n", ok ? "ok" : "FAIL", what, recur_status_str(st),
            msg ? (int)strcspn(msg + 14, "\n") : 0, msg ? msg + 14 : "");
    if (!ok) {
        fprintf(stderr, "       (want %s, %d error line(s), naming '%s'; log:\n%s)\n",
                want == RECUR_OK ? "any error" : recur_status_str(want), lines, must_name, log);
        if (st == RECUR_OK && mf) recur_model_files_free(mf);
        (*fails)++;
    }
}

/* ------------------------------------------------------------------ directory comparison */

typedef enum flip_class {
    FLIP_DETECTED = 0, /* open failed                                               */
    FLIP_SAME,         /* identical directory and header / metadata                 */
    FLIP_HDR_INFO,     /* .bin version 100<->101 or data_type 0<->1 changed only     */
    FLIP_RENAMED,      /* one tensor got another valid name, all else identical     */
    FLIP_META,         /* safetensors __metadata__ strings changed only             */
    FLIP_BAD,          /* anything else: a silently different model                 */
    FLIP_N
} flip_class_t;

static const char *flip_class_name[FLIP_N] = {"detected (error)", "benign (same directory)",
                                              "header version/data_type (informational)",
                                              "renamed tensor (loader rejects)", "metadata text changed",
                                              "DIFFERENT DIRECTORY"};

/* Directory of `got` vs `ref`, ignoring file paths. Also checks that every data pointer is
 * base + file_offset for one base per file (the mapping). */
static flip_class_t compare_dirs(const recur_model_files_t *ref, const recur_model_files_t *got,
                                 const char *const *meta_keys) {
    int32_t n = recur_model_files_n_tensors(ref);
    if (recur_model_files_n_tensors(got) != n || recur_model_files_n_files(got) != recur_model_files_n_files(ref) ||
        recur_model_files_format(got) != recur_model_files_format(ref))
        return FLIP_BAD;
    int renamed = 0;
    for (int32_t i = 0; i < n; i++) {
        const recur_tensor_info_t *a = recur_model_files_tensor(ref, i), *b = recur_model_files_tensor(got, i);
        if (a->dtype != b->dtype || a->n_dims != b->n_dims || a->n_elems != b->n_elems || a->n_bytes != b->n_bytes ||
            a->file_index != b->file_index || a->file_offset != b->file_offset ||
            memcmp(a->shape, b->shape, sizeof a->shape) != 0)
            return FLIP_BAD;
        const recur_tensor_info_t *b0 = recur_model_files_tensor(got, 0);
        if (b->file_index == b0->file_index &&
            (const uint8_t *)b->data - b->file_offset != (const uint8_t *)b0->data - b0->file_offset)
            return FLIP_BAD;
        if (strcmp(a->name, b->name) != 0) {
            if (recur_model_files_find(got, b->name) != b) return FLIP_BAD;
            renamed++;
        }
    }
    if (renamed > 1) return FLIP_BAD;
    if (recur_model_files_format(ref) == RECUR_FORMAT_RWKVCPP_BIN) {
        recur_bin_header_t ha, hb;
        recur_model_files_bin_header(ref, &ha);
        recur_model_files_bin_header(got, &hb);
        if (ha.n_vocab != hb.n_vocab || ha.n_embd != hb.n_embd || ha.n_layer != hb.n_layer) return FLIP_BAD;
        if (renamed) return FLIP_RENAMED;
        if (ha.version != hb.version || ha.data_type != hb.data_type) return FLIP_HDR_INFO;
        return FLIP_SAME;
    }
    if (renamed) return FLIP_RENAMED;
    for (int i = 0; meta_keys && meta_keys[i]; i++) {
        const char *x = recur_model_files_metadata(ref, meta_keys[i]), *y = recur_model_files_metadata(got, meta_keys[i]);
        if (!y || strcmp(x, y) != 0) return FLIP_META;
    }
    return FLIP_SAME;
}

static flip_class_t classify_open(const char *path, const recur_model_files_t *ref, const char *const *meta_keys) {
    recur_model_files_t *mf = NULL;
    if (recur_model_files_open(path, &mf) != RECUR_OK) return mf == NULL ? FLIP_DETECTED : FLIP_BAD;
    flip_class_t c = compare_dirs(ref, mf, meta_keys);
    recur_model_files_free(mf);
    return c;
}

static void print_counts(const char *what, const int counts[FLIP_N]) {
    int total = 0;
    for (int i = 0; i < FLIP_N; i++) total += counts[i];
    fprintf(stderr, "  %s: %d cases\n", what, total);
    for (int i = 0; i < FLIP_N; i++)
        if (counts[i]) fprintf(stderr, "      %-44s %6d\n", flip_class_name[i], counts[i]);
}

/* ------------------------------------------------------------------ .bin fixtures */

static recur_model_files_t *open_fixture(int *fails, const char *rel) {
    char path[4096];
    recur_fixture_path(path, sizeof path, rel);
    recur_model_files_t *mf = NULL;
    recur_status_t st = recur_model_files_open(path, &mf);
    if (st != RECUR_OK || !mf) {
        fprintf(stderr, "cannot open fixture %s: %s\n", path, recur_status_str(st));
        (*fails)++;
        return NULL;
    }
    return mf;
}

static void check_bin_common(int *fails, const recur_model_files_t *mf, const char *rel, int32_t n_tensors,
                             int32_t V, int32_t C, int32_t L, int32_t data_type) {
    char path[4096], dir[4096];
    recur_fixture_path(path, sizeof path, rel);
    recur_fixture_path(dir, sizeof dir, "rwkv7");
    RECUR_CHECK(fails, recur_model_files_format(mf) == RECUR_FORMAT_RWKVCPP_BIN);
    RECUR_CHECK(fails, recur_model_files_n_files(mf) == 1);
    RECUR_CHECK(fails, strcmp(recur_model_files_path(mf, 0), path) == 0);
    RECUR_CHECK(fails, recur_model_files_path(mf, 1) == NULL);
    RECUR_CHECK(fails, strcmp(recur_model_files_dir(mf), dir) == 0);
    RECUR_CHECK(fails, recur_model_files_n_tensors(mf) == n_tensors);
    RECUR_CHECK(fails, recur_model_files_metadata(mf, "format") == NULL);
    recur_bin_header_t h;
    RECUR_CHECK(fails, recur_model_files_bin_header(mf, &h) == RECUR_OK);
    RECUR_CHECK(fails, h.version == 101 && h.n_vocab == V && h.n_embd == C && h.n_layer == L &&
                           h.data_type == data_type);
    /* Every tensor is found by its name, in file order, and packed back to back. */
    uint64_t prev_end = 24;
    for (int32_t i = 0; i < n_tensors; i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(mf, i);
        RECUR_CHECK(fails, t && recur_model_files_find(mf, t->name) == t);
        if (!t) continue;
        uint64_t hdr = 12 + 4 * (uint64_t)t->n_dims + strlen(t->name);
        RECUR_CHECK(fails, t->file_offset == prev_end + hdr);
        RECUR_CHECK(fails, t->n_bytes == (size_t)t->n_elems * recur_dtype_size(t->dtype));
        RECUR_CHECK(fails, t->file_index == 0);
        prev_end = t->file_offset + t->n_bytes;
        /* FP16 files: 2-D matrices are f16; vectors, the [6,1,C]/[1,1,C] tensors and r_k stay f32 */
        int want_f16 = data_type == 1 && t->n_dims == 2 && strstr(t->name, ".r_k") == NULL;
        RECUR_CHECK(fails, t->dtype == (want_f16 ? RECUR_DTYPE_F16 : RECUR_DTYPE_F32));
    }
    RECUR_CHECK(fails, recur_model_files_tensor(mf, -1) == NULL && recur_model_files_tensor(mf, n_tensors) == NULL);
    RECUR_CHECK(fails, strcmp(recur_model_files_tensor(mf, 0)->name, "emb.weight") == 0);
    RECUR_CHECK(fails, strcmp(recur_model_files_tensor(mf, n_tensors - 1)->name, "head.weight") == 0);
    RECUR_CHECK(fails, recur_model_files_find(mf, "no.such.tensor") == NULL);
    RECUR_CHECK(fails, recur_model_files_find(mf, "") == NULL);
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "emb.weight"), 2, V, C, 0, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "head.weight"), 2, V, C, 0, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "blocks.0.att.x_rwkvag"), 3, 6, 1, C, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "blocks.0.att.w1"), 2, 32, C, 0, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "blocks.0.att.w2"), 2, C, 32, 0, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "blocks.0.ln1.weight"), 1, C, 0, 0, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "blocks.1.att.r_k"), 2, C / 64, 64, 0, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "blocks.1.att.k_k"), 3, 1, 1, C, 0));
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, "blocks.0.ffn.key.weight"), 2, 4 * C, C, 0, 0));
    char name[64];
    snprintf(name, sizeof name, "blocks.%d.ffn.value.weight", L - 1);
    RECUR_CHECK(fails, shape_is(recur_model_files_find(mf, name), 2, C, 4 * C, 0, 0));
    snprintf(name, sizeof name, "blocks.%d.ln1.weight", L);
    RECUR_CHECK(fails, recur_model_files_find(mf, name) == NULL);
}

/* The bytes read through the API equal the file's bytes at file_offset. */
static void check_bin_values(int *fails, const recur_model_files_t *mf, const char *rel) {
    char path[4096];
    recur_fixture_path(path, sizeof path, rel);
    void *raw = NULL;
    size_t n_raw = 0;
    if (recur_read_file(path, &raw, &n_raw) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        (*fails)++;
        return;
    }
    int bad = 0;
    for (int32_t i = 0; i < recur_model_files_n_tensors(mf); i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(mf, i);
        if (t->file_offset + t->n_bytes > n_raw || memcmp((const uint8_t *)raw + t->file_offset, t->data, t->n_bytes))
            bad++;
    }
    RECUR_CHECK(fails, bad == 0);
    free(raw);
}

static void test_bin_fixtures(int *fails) {
    fprintf(stderr, "== .bin fixtures\n");
    recur_model_files_t *f32 = open_fixture(fails, TINY32), *f16 = open_fixture(fails, TINY16),
                        *syn = open_fixture(fails, SYNTH7);
    if (f32) {
        check_bin_common(fails, f32, TINY32, 339, 256, 64, 12, 0);
        check_bin_values(fails, f32, TINY32);
        RECUR_CHECK(fails, recur_model_files_find(f32, "blocks.0.att.v1") == NULL); /* absent in tiny layer 0 */
        RECUR_CHECK(fails, shape_is(recur_model_files_find(f32, "blocks.1.att.v1"), 2, 32, 64, 0, 0));
    }
    if (f16) {
        check_bin_common(fails, f16, TINY16, 339, 256, 64, 12, 1);
        check_bin_values(fails, f16, TINY16);
    }
    if (syn) {
        check_bin_common(fails, syn, SYNTH7, 90, 256, 128, 3, 0);
        check_bin_values(fails, syn, SYNTH7);
        RECUR_CHECK(fails, shape_is(recur_model_files_find(syn, "blocks.0.att.v1"), 2, 32, 128, 0, 0));
        RECUR_CHECK(fails, shape_is(recur_model_files_find(syn, "blocks.2.att.r_k"), 2, 2, 64, 0, 0));
    }
    if (f32 && f16) {
        /* FP16 file == FP32 file rounded to fp16 (nearest even), tensor by tensor. */
        int32_t n = recur_model_files_n_tensors(f32), n_f16 = 0;
        size_t n_vals = 0, n_exact = 0;
        double worst_rel = 0.0;
        for (int32_t i = 0; i < n; i++) {
            const recur_tensor_info_t *a = recur_model_files_tensor(f32, i);
            const recur_tensor_info_t *b = recur_model_files_find(f16, a->name);
            RECUR_CHECK(fails, b && a->n_dims == b->n_dims && memcmp(a->shape, b->shape, sizeof a->shape) == 0);
            if (!b || a->n_elems != b->n_elems) continue;
            float *x = malloc((size_t)a->n_elems * sizeof *x), *y = malloc((size_t)a->n_elems * sizeof *y);
            RECUR_CHECK(fails, x && y);
            if (x && y && recur_tensor_read_f32(a, 0, a->n_elems, x) == RECUR_OK &&
                recur_tensor_read_f32(b, 0, b->n_elems, y) == RECUR_OK) {
                n_f16 += b->dtype == RECUR_DTYPE_F16;
                for (int64_t k = 0; k < a->n_elems; k++) {
                    float want = b->dtype == RECUR_DTYPE_F16 ? recur_f16_to_f32(f32_to_f16_rne(x[k])) : x[k];
                    n_vals++;
                    n_exact += memcmp(&want, &y[k], 4) == 0;
                    double rel = fabs((double)y[k] - (double)x[k]) / fmax(fabs((double)x[k]), 6.103515625e-5 /* 2^-14: smallest normal f16 */);
                    if (rel > worst_rel) worst_rel = rel;
                }
            } else {
                (*fails)++;
            }
            free(x);
            free(y);
        }
        fprintf(stderr, "  fp16 vs fp32: %d f16 tensors, %zu/%zu values equal to RNE(fp32), worst rel diff %.3g\n",
                n_f16, n_exact, n_vals, worst_rel);
        RECUR_CHECK(fails, n_f16 > 100 && n_exact == n_vals && worst_rel <= 1.0 / 2048);
    }
    if (f16) {
        /* read_f32: sub-ranges, bounds */
        const recur_tensor_info_t *t = recur_model_files_find(f16, "head.weight");
        float all[256 * 64], part[100];
        RECUR_CHECK(fails, t && t->dtype == RECUR_DTYPE_F16);
        if (t) {
            RECUR_CHECK(fails, recur_tensor_read_f32(t, 0, t->n_elems, all) == RECUR_OK);
            RECUR_CHECK(fails, recur_tensor_read_f32(t, 1234, 100, part) == RECUR_OK);
            RECUR_CHECK(fails, memcmp(part, all + 1234, sizeof part) == 0);
            RECUR_CHECK(fails, recur_tensor_read_f32(t, t->n_elems, 0, part) == RECUR_OK);
            recur_log_level_t lvl = recur_log_get_level();
            recur_log_set_level(RECUR_LOG_NONE);
            RECUR_CHECK(fails, recur_tensor_read_f32(t, t->n_elems - 99, 100, part) == RECUR_E_RANGE);
            RECUR_CHECK(fails, recur_tensor_read_f32(t, -1, 1, part) == RECUR_E_RANGE);
            RECUR_CHECK(fails, recur_tensor_read_f32(t, 0, -1, part) == RECUR_E_RANGE);
            RECUR_CHECK(fails, recur_tensor_read_f32(t, INT64_MAX, 2, part) == RECUR_E_RANGE);
            recur_log_set_level(lvl);
        }
    }
    RECUR_CHECK(fails, f32 == NULL || recur_model_files_bin_header(f32, NULL) == RECUR_E_INVAL);
    recur_model_files_free(f32);
    recur_model_files_free(f16);
    recur_model_files_free(syn);
    recur_model_files_free(NULL);
}

/* ------------------------------------------------------------------ .bin corruption */

static int copy_fixture(const char *rel, const char *dst, size_t *size) {
    char path[4096];
    void *buf = NULL;
    recur_fixture_path(path, sizeof path, rel);
    if (recur_read_file(path, &buf, size) != 0) return -1;
    int rc = recur_write_file(dst, buf, *size);
    free(buf);
    return rc;
}

static int cmp_size_desc(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Truncations at every header field boundary of every tensor, at every byte of the 24-byte
 * header, and at ~300 random lengths: all must fail. Lengths are visited from long to short
 * so one copy is cut step by step with ftruncate (no rewrite). */
static void test_bin_truncation(int *fails, const char *tmp, const char *rel) {
    char path[4096];
    path_join(path, sizeof path, tmp, "trunc.bin");
    size_t size = 0;
    recur_model_files_t *ref = open_fixture(fails, rel);
    if (!ref || copy_fixture(rel, path, &size) != 0) {
        fprintf(stderr, "cannot prepare %s\n", path);
        (*fails)++;
        recur_model_files_free(ref);
        return;
    }
    int32_t n = recur_model_files_n_tensors(ref);
    size_t cap = 32 + (size_t)n * 12 + 400, nl = 0;
    size_t *lens = malloc(cap * sizeof *lens);
    for (size_t l = 0; l <= 24; l++) lens[nl++] = l;
    for (int32_t i = 0; i < n; i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(ref, i);
        size_t data = (size_t)t->file_offset, hs = data - 12 - 4 * (size_t)t->n_dims - strlen(t->name);
        size_t pts[] = {hs, hs + 1, hs + 4, hs + 8, hs + 11, hs + 12, hs + 12 + 4 * (size_t)t->n_dims,
                        data - 1, data, data + t->n_bytes / 2, data + t->n_bytes - 1};
        for (size_t k = 0; k < sizeof pts / sizeof pts[0]; k++) lens[nl++] = pts[k];
    }
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int k = 0; k < 300; k++) lens[nl++] = (size_t)(rnd_next(&seed) % size);
    qsort(lens, nl, sizeof *lens, cmp_size_desc);
    int counts[FLIP_N] = {0}, wrong_status = 0;
    int fd = open(path, O_RDWR);
    size_t prev = SIZE_MAX;
    for (size_t i = 0; i < nl && fd >= 0; i++) {
        if (lens[i] >= size || lens[i] == prev) continue;
        prev = lens[i];
        if (ftruncate(fd, (off_t)lens[i]) != 0) {
            (*fails)++;
            break;
        }
        recur_model_files_t *mf = NULL;
        recur_status_t st = recur_model_files_open(path, &mf);
        if (st == RECUR_OK) {
            fprintf(stderr, "  truncated to %zu bytes: opened without error\n", lens[i]);
            counts[FLIP_BAD]++;
            recur_model_files_free(mf);
        } else {
            counts[FLIP_DETECTED]++;
            /* length 0 is an empty file; the rest must say "malformed" */
            if (st != RECUR_E_FORMAT || mf != NULL) wrong_status++;
        }
    }
    if (fd >= 0) close(fd);
    char what[256];
    snprintf(what, sizeof what, "truncations of %s (%zu bytes)", rel, size);
    print_counts(what, counts);
    RECUR_CHECK(fails, fd >= 0 && counts[FLIP_BAD] == 0 && counts[FLIP_DETECTED] > 300 && wrong_status == 0);
    free(lens);
    recur_model_files_free(ref);
    unlink(path);
}

static int flip_bit(int fd, size_t off, int bit) {
    uint8_t b;
    if (pread(fd, &b, 1, (off_t)off) != 1) return -1;
    b ^= (uint8_t)(1u << bit);
    return pwrite(fd, &b, 1, (off_t)off) == 1 ? 0 : -1;
}

/* Every bit of the 24-byte header, and one bit (rotating) of every byte of every tensor
 * header (n_dims, key_len, dtype, ne[], key). Flipped in place and flipped back. */
static void test_bin_flips(int *fails, const char *tmp, const char *rel, int tensor_headers) {
    char path[4096];
    path_join(path, sizeof path, tmp, "flip.bin");
    size_t size = 0;
    recur_model_files_t *ref = open_fixture(fails, rel);
    if (!ref || copy_fixture(rel, path, &size) != 0) {
        (*fails)++;
        recur_model_files_free(ref);
        return;
    }
    int counts[FLIP_N] = {0}, counts_hdr[FLIP_N] = {0};
    int fd = open(path, O_RDWR);
    RECUR_CHECK(fails, fd >= 0);
    for (size_t off = 0; off < 24 && fd >= 0; off++) {
        for (int bit = 0; bit < 8; bit++) {
            if (flip_bit(fd, off, bit) != 0) { (*fails)++; goto done; }
            flip_class_t c = classify_open(path, ref, NULL);
            counts_hdr[c]++;
            /* only version (bytes 4..7) and data_type (20..23) may change without an error */
            if (c == FLIP_BAD || (c == FLIP_HDR_INFO && !(off >= 4 && off < 8) && !(off >= 20))) {
                fprintf(stderr, "  header byte %zu bit %d: %s\n", off, bit, flip_class_name[c]);
                counts_hdr[FLIP_BAD] += c != FLIP_BAD;
            }
            if (flip_bit(fd, off, bit) != 0) { (*fails)++; goto done; }
        }
    }
    for (int32_t i = 0; tensor_headers && i < recur_model_files_n_tensors(ref) && fd >= 0; i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(ref, i);
        size_t data = (size_t)t->file_offset, hs = data - 12 - 4 * (size_t)t->n_dims - strlen(t->name);
        for (size_t off = hs; off < data; off++) {
            int bit = (int)(off % 8);
            if (flip_bit(fd, off, bit) != 0) { (*fails)++; goto done; }
            flip_class_t c = classify_open(path, ref, NULL);
            counts[c]++;
            if (c == FLIP_BAD || c == FLIP_HDR_INFO || (c == FLIP_RENAMED && off < hs + 12 + 4 * (size_t)t->n_dims)) {
                fprintf(stderr, "  tensor '%s' header byte %zu bit %d: %s\n", t->name, off - hs, bit,
                        flip_class_name[c]);
                counts[FLIP_BAD] += c != FLIP_BAD;
            }
            if (flip_bit(fd, off, bit) != 0) { (*fails)++; goto done; }
        }
    }
done:
    if (fd >= 0) close(fd);
    char what[256];
    snprintf(what, sizeof what, "bit flips in the 24-byte header of %s (all 192 bits)", rel);
    print_counts(what, counts_hdr);
    RECUR_CHECK(fails, counts_hdr[FLIP_BAD] == 0 && counts_hdr[FLIP_RENAMED] == 0);
    if (tensor_headers) {
        snprintf(what, sizeof what, "bit flips in tensor headers of %s (one bit per byte)", rel);
        print_counts(what, counts);
        RECUR_CHECK(fails, counts[FLIP_BAD] == 0 && counts[FLIP_HDR_INFO] == 0 && counts[FLIP_DETECTED] > 1000);
    }
    recur_model_files_free(ref);
    unlink(path);
}

/* ------------------------------------------------------------------ crafted .bin files */

typedef struct buf {
    uint8_t *p;
    size_t   n, cap;
} buf_t;

static void buf_put(buf_t *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) abort(); /* test: out of memory is fatal */
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void buf_i32(buf_t *b, int32_t v) {
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    buf_put(b, le, 4);
}

static void buf_zero(buf_t *b, size_t n) {
    static const uint8_t z[256];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        buf_put(b, z, k);
        n -= k;
    }
}

/* Appends a .bin tensor; `ne` in ggml order, zero-filled data. */
static void bin_tensor(buf_t *b, const char *name, int32_t dtype, int nd, const int32_t *ne) {
    buf_i32(b, nd);
    buf_i32(b, (int32_t)strlen(name));
    buf_i32(b, dtype);
    size_t n = 1;
    for (int i = 0; i < nd; i++) {
        buf_i32(b, ne[i]);
        n *= (size_t)ne[i];
    }
    buf_put(b, name, strlen(name));
    buf_zero(b, n * (dtype ? 2 : 4));
}

/* A minimal valid .bin: V=4, C=2, L=1, tensors emb.weight, blocks.0.ln1.weight, head.weight,
 * with optional edits for the crafted failure cases. */
static void bin_minimal(buf_t *b, int32_t version, int32_t data_type, const char *dup_name, int n_layer) {
    int32_t vc[2] = {2, 4}, c[1] = {2};
    b->n = 0;
    buf_i32(b, 0x67676d66);
    buf_i32(b, version);
    buf_i32(b, 4);
    buf_i32(b, 2);
    buf_i32(b, n_layer);
    buf_i32(b, data_type);
    bin_tensor(b, "emb.weight", 0, 2, vc);
    bin_tensor(b, "blocks.0.ln1.weight", 0, 1, c);
    if (dup_name) bin_tensor(b, dup_name, 0, 1, c);
    bin_tensor(b, "head.weight", 1, 2, vc);
}

static void test_bin_crafted(int *fails, const char *tmp) {
    fprintf(stderr, "== crafted .bin files and directories\n");
    char dir[4096], p[4096], p2[4096], fx[4096];
    buf_t b = {0};
    make_subdir(dir, sizeof dir, tmp, "bin");

    bin_minimal(&b, 100, 0, NULL, 1);
    path_join(p, sizeof p, dir, "ok.bin");
    recur_write_file(p, b.p, b.n);
    recur_model_files_t *mf = NULL;
    RECUR_CHECK(fails, recur_model_files_open(p, &mf) == RECUR_OK);
    if (mf) {
        recur_bin_header_t h;
        RECUR_CHECK(fails, recur_model_files_bin_header(mf, &h) == RECUR_OK && h.version == 100);
        RECUR_CHECK(fails, recur_model_files_n_tensors(mf) == 3);
        RECUR_CHECK(fails, recur_model_files_find(mf, "head.weight")->dtype == RECUR_DTYPE_F16);
        RECUR_CHECK(fails, strcmp(recur_model_files_dir(mf), dir) == 0);
        recur_model_files_free(mf);
    }
    /* the same bytes under a name without .bin: recognised by the magic */
    path_join(p, sizeof p, dir, "renamed.weights");
    recur_write_file(p, b.p, b.n);
    mf = NULL;
    RECUR_CHECK(fails, recur_model_files_open(p, &mf) == RECUR_OK && recur_model_files_format(mf) == RECUR_FORMAT_RWKVCPP_BIN);
    recur_model_files_free(mf);
    unlink(p);

    struct { int32_t version, data_type; const char *dup; int n_layer; recur_status_t want; const char *what; } cases[] = {
        {102, 0, NULL, 1, RECUR_E_FORMAT, "version 102"},
        {101, 9, NULL, 1, RECUR_E_UNSUPPORTED, "quantized data_type 9 (Q8_0)"},
        {101, 7, NULL, 1, RECUR_E_UNSUPPORTED, "quantized data_type 7 (Q5_0)"},
        {101, 2, NULL, 1, RECUR_E_FORMAT, "data_type 2"},
        {101, -1, NULL, 1, RECUR_E_FORMAT, "data_type -1"},
        {101, 0, "blocks.0.ln1.weight", 1, RECUR_E_FORMAT, "duplicate tensor name"},
        {101, 0, "blocks.1.ln1.weight", 1, RECUR_E_FORMAT, "tensor of layer 1 with n_layer 1"},
        {101, 0, NULL, 2, RECUR_E_FORMAT, "n_layer 2 but only layer 0"},
        {101, 0, NULL, 0, RECUR_E_FORMAT, "n_layer 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bin_minimal(&b, cases[i].version, cases[i].data_type, cases[i].dup, cases[i].n_layer);
        snprintf(p2, sizeof p2, "case%zu.bin", i);
        path_join(p, sizeof p, dir, p2);
        recur_write_file(p, b.p, b.n);
        expect_fail(fails, tmp, p, cases[i].want, p, cases[i].what);
        unlink(p);
    }
    /* field-level edits of the minimal file */
    struct { size_t off; int32_t v; const char *what; } edits[] = {
        {24, 0, "n_dims 0"}, {24, 5, "n_dims 5"}, {28, 0, "key_len 0"}, {28, 1025, "key_len 1025"},
        {28, 1 << 30, "key_len 2^30"}, {32, 2, "tensor dtype 2"}, {36, 0, "ne 0"}, {36, -2, "ne negative"},
        {36, 0x7fffffff, "ne 2^31-1 (data beyond the end)"}, {0, 0x12345678, "bad magic"}, {8, -4, "n_vocab < 0"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        bin_minimal(&b, 101, 0, NULL, 1);
        uint32_t v = (uint32_t)edits[i].v;
        uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
        memcpy(b.p + edits[i].off, le, 4);
        path_join(p, sizeof p, dir, "edit.bin");
        recur_write_file(p, b.p, b.n);
        expect_fail(fails, tmp, p, RECUR_E_FORMAT, p, edits[i].what);
    }
    /* a name with a control character / invalid UTF-8 / valid non-ASCII UTF-8 */
    static const char *names[] = {"emb.weigh\x01", "emb.weigh\xff", "blocks.0.ln1.we\xc3\xa9ght"};
    for (int i = 0; i < 3; i++) {
        bin_minimal(&b, 101, 0, NULL, 1);
        int32_t c[1] = {2};
        bin_tensor(&b, names[i], 0, 1, c);
        path_join(p, sizeof p, dir, "name.bin");
        recur_write_file(p, b.p, b.n);
        if (i < 2) {
            expect_fail(fails, tmp, p, RECUR_E_FORMAT, p, i ? "name with invalid UTF-8" : "name with a control byte");
        } else {
            mf = NULL;
            RECUR_CHECK(fails, recur_model_files_open(p, &mf) == RECUR_OK && recur_model_files_find(mf, names[2]));
            recur_model_files_free(mf);
        }
    }
    /* trailing garbage shorter than a tensor header */
    bin_minimal(&b, 101, 0, NULL, 1);
    buf_zero(&b, 5);
    path_join(p, sizeof p, dir, "trail.bin");
    recur_write_file(p, b.p, b.n);
    expect_fail(fails, tmp, p, RECUR_E_FORMAT, p, "5 trailing bytes");
    unlink(p);
    path_join(p, sizeof p, dir, "name.bin");
    unlink(p);
    path_join(p, sizeof p, dir, "edit.bin");
    unlink(p);

    /* paths and directories */
    path_join(p, sizeof p, tmp, "does-not-exist");
    expect_fail(fails, tmp, p, RECUR_E_IO, p, "nonexistent path");
    path_join(p, sizeof p, dir, "empty.bin");
    recur_write_file(p, "", 0);
    expect_fail(fails, tmp, p, RECUR_E_FORMAT, p, "empty .bin file");
    path_join(p, sizeof p, dir, "empty.safetensors");
    recur_write_file(p, "", 0);
    expect_fail(fails, tmp, p, RECUR_E_FORMAT, p, "empty .safetensors file");
    unlink(p);
    path_join(p, sizeof p, dir, "empty.bin");
    unlink(p);
    make_subdir(p, sizeof p, tmp, "emptydir");
    expect_fail(fails, tmp, p, RECUR_E_FORMAT, p, "directory with no model file");
    /* one .bin (a symlink to the fixture, as in a HF cache) plus unrelated files */
    make_subdir(p, sizeof p, tmp, "onebin");
    recur_fixture_path(fx, sizeof fx, TINY32);
    path_join(p2, sizeof p2, p, "tiny.bin");
    RECUR_CHECK(fails, symlink(fx, p2) == 0);
    path_join(p2, sizeof p2, p, "config.json");
    recur_write_file(p2, "{}", 2);
    path_join(p2, sizeof p2, p, ".hidden.bin");
    recur_write_file(p2, "x", 1);
    mf = NULL;
    RECUR_CHECK(fails, recur_model_files_open(p, &mf) == RECUR_OK && recur_model_files_n_tensors(mf) == 339 &&
                           strcmp(recur_model_files_dir(mf), p) == 0);
    recur_model_files_free(mf);
    /* a second .bin makes it ambiguous */
    path_join(p2, sizeof p2, p, "other.bin");
    RECUR_CHECK(fails, symlink(fx, p2) == 0);
    expect_fail(fails, tmp, p, RECUR_E_FORMAT, p, "directory with two .bin files");
    free(b.p);
}

/* ------------------------------------------------------------------ safetensors writer */

typedef struct st_tensor {
    const char *name;
    const char *dtype;
    int         nd;
    int64_t     shape[4];
    const void *data;
    size_t      nbytes;
} st_tensor_t;

static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf_t *b, const char *fmt, ...) {
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_put(b, tmp, (size_t)n);
}

/* Writes a safetensors file: data in array order; header entries in reverse order (the
 * reader must not rely on JSON order); header padded with spaces to a multiple of 8.
 * `meta` is the inside of the __metadata__ object, or NULL for none. */
static int st_write(const char *path, const st_tensor_t *t, int n, const char *meta) {
    buf_t h = {0}, out = {0};
    uint64_t off[64], pos = 0;
    for (int i = 0; i < n; i++) {
        off[i] = pos;
        pos += t[i].nbytes;
    }
    buf_put(&h, "{", 1);
    if (meta) buf_printf(&h, "\"__metadata__\":{%s}", meta);
    for (int i = n - 1; i >= 0; i--) {
        buf_printf(&h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", (meta || i != n - 1) ? "," : "", t[i].name,
                   t[i].dtype);
        for (int d = 0; d < t[i].nd; d++) buf_printf(&h, "%s%" PRId64, d ? "," : "", t[i].shape[d]);
        buf_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off[i], off[i] + t[i].nbytes);
    }
    buf_put(&h, "}", 1);
    while (h.n % 8) buf_put(&h, " ", 1);
    uint64_t hl = h.n;
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hl >> (8 * i));
    buf_put(&out, le, 8);
    buf_put(&out, h.p, h.n);
    for (int i = 0; i < n; i++) buf_put(&out, t[i].data, t[i].nbytes);
    int rc = recur_write_file(path, out.p, out.n);
    free(h.p);
    free(out.p);
    return rc;
}

/* A file with the raw header `json` (length field `hlen`, or its real length when 0) followed
 * by `data_len` bytes of data. */
static int st_write_raw(const char *path, const char *json, uint64_t hlen, size_t data_len) {
    buf_t out = {0};
    size_t jl = strlen(json);
    if (!hlen) hlen = jl;
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hlen >> (8 * i));
    buf_put(&out, le, 8);
    buf_put(&out, json, jl);
    buf_zero(&out, data_len);
    int rc = recur_write_file(path, out.p, out.n);
    free(out.p);
    return rc;
}

/* The tensors of the single-file test, with bit patterns covering special values. */
typedef struct st_fixture {
    float    a[6];     /* F32 [2,3]       */
    uint16_t b[5];     /* F16 [5]: 10 bytes, so everything after it is misaligned */
    uint16_t c[6];     /* BF16 [3,1,2]    */
    float    d[1];     /* F32 [] scalar   */
    float    f[8];     /* F32 [4,1,1,2]   */
    st_tensor_t t[6];
    int n;
} st_fixture_t;

static void st_fixture_init(st_fixture_t *x, int with_empty) {
    static const float a[6] = {1.0f, -2.5f, 3.25e-3f, 1e30f, -0.0f, 7.0f};
    static const uint16_t b[5] = {0x3c00, 0x0001, 0x7bff, 0xfc00, 0x8000};
    static const uint16_t c[6] = {0x3f80, 0xc000, 0x0001, 0x7f80, 0x4049, 0x0000};
    memcpy(x->a, a, sizeof a);
    memcpy(x->b, b, sizeof b);
    memcpy(x->c, c, sizeof c);
    x->d[0] = 42.5f;
    for (int i = 0; i < 8; i++) x->f[i] = (float)i * 0.125f - 0.3f;
    int n = 0;
    x->t[n++] = (st_tensor_t){"model.a", "F32", 2, {2, 3}, x->a, sizeof x->a};
    x->t[n++] = (st_tensor_t){"model.b", "F16", 1, {5}, x->b, sizeof x->b};
    x->t[n++] = (st_tensor_t){"model.c", "BF16", 3, {3, 1, 2}, x->c, sizeof x->c};
    x->t[n++] = (st_tensor_t){"model.d", "F32", 0, {0}, x->d, sizeof x->d};
    if (with_empty) x->t[n++] = (st_tensor_t){"model.e", "F32", 2, {0, 4}, NULL, 0};
    x->t[n++] = (st_tensor_t){"model.f", "F32", 4, {4, 1, 1, 2}, x->f, sizeof x->f};
    x->n = n;
}

/* Checks an opened set against the tensors that were written (in file order). */
static void st_check_tensors(int *fails, const recur_model_files_t *mf, const st_tensor_t *t, int n, int32_t fi,
                             int32_t first) {
    for (int i = 0; i < n; i++) {
        const recur_tensor_info_t *g = recur_model_files_tensor(mf, first + i);
        const recur_tensor_info_t *byname = recur_model_files_find(mf, t[i].name);
        RECUR_CHECK(fails, g && g == byname);
        if (!g || g != byname) continue;
        recur_dtype_t dt = strcmp(t[i].dtype, "F32") == 0 ? RECUR_DTYPE_F32
                           : strcmp(t[i].dtype, "F16") == 0 ? RECUR_DTYPE_F16 : RECUR_DTYPE_BF16;
        int64_t n_el = 1;
        for (int d = 0; d < t[i].nd; d++) n_el *= t[i].shape[d];
        RECUR_CHECK(fails, g->dtype == dt && g->n_dims == t[i].nd && g->n_elems == n_el && g->n_bytes == t[i].nbytes);
        RECUR_CHECK(fails, g->file_index == fi);
        for (int d = 0; d < t[i].nd; d++) RECUR_CHECK(fails, g->shape[d] == t[i].shape[d]);
        RECUR_CHECK(fails, t[i].nbytes == 0 || memcmp(g->data, t[i].data, t[i].nbytes) == 0);
        float got[16], want[16];
        if (n_el > 16) continue;
        RECUR_CHECK(fails, recur_tensor_read_f32(g, 0, n_el, got) == RECUR_OK);
        for (int64_t k = 0; k < n_el; k++) {
            uint16_t h;
            if (dt == RECUR_DTYPE_F32) memcpy(&want[k], (const uint8_t *)t[i].data + 4 * k, 4);
            else {
                memcpy(&h, (const uint8_t *)t[i].data + 2 * k, 2);
                want[k] = dt == RECUR_DTYPE_F16 ? recur_f16_to_f32(h) : recur_bf16_to_f32(h);
            }
        }
        RECUR_CHECK(fails, n_el == 0 || memcmp(got, want, (size_t)n_el * 4) == 0);
    }
}

static void test_st_single(int *fails, const char *tmp) {
    fprintf(stderr, "== safetensors: one file\n");
    char dir[4096], p[4096];
    make_subdir(dir, sizeof dir, tmp, "st1");
    path_join(p, sizeof p, dir, "model.safetensors");
    st_fixture_t x;
    st_fixture_init(&x, 1);
    RECUR_CHECK(fails, st_write(p, x.t, x.n, "\"format\":\"pt\",\"note\":\"h\\u00e9llo \\\"q\\\"\"") == 0);
    /* open by file and by directory */
    for (int by_dir = 0; by_dir < 2; by_dir++) {
        recur_model_files_t *mf = NULL;
        char dir_slash[4200];
        snprintf(dir_slash, sizeof dir_slash, "%s//", dir);
        RECUR_CHECK(fails, recur_model_files_open(by_dir ? dir_slash : p, &mf) == RECUR_OK);
        if (!mf) continue;
        RECUR_CHECK(fails, recur_model_files_format(mf) == RECUR_FORMAT_SAFETENSORS);
        RECUR_CHECK(fails, recur_model_files_n_files(mf) == 1 && recur_model_files_n_tensors(mf) == x.n);
        RECUR_CHECK(fails, strcmp(recur_model_files_dir(mf), dir) == 0);
        RECUR_CHECK(fails, strstr(recur_model_files_path(mf, 0), "/model.safetensors") != NULL);
        RECUR_CHECK(fails, strstr(recur_model_files_path(mf, 0), "//") == NULL);
        const char *fmt = recur_model_files_metadata(mf, "format"), *note = recur_model_files_metadata(mf, "note");
        RECUR_CHECK(fails, fmt && strcmp(fmt, "pt") == 0);
        RECUR_CHECK(fails, note && strcmp(note, "h\xc3\xa9llo \"q\"") == 0);
        RECUR_CHECK(fails, recur_model_files_metadata(mf, "nope") == NULL);
        recur_bin_header_t h;
        RECUR_CHECK(fails, recur_model_files_bin_header(mf, &h) == RECUR_E_INVAL);
        st_check_tensors(fails, mf, x.t, x.n, 0, 0);
        /* spot values through the converters: f16 1.0, min subnormal, 65504, -inf; bf16 1, -2, pi-ish */
        float v[6];
        const recur_tensor_info_t *tb = recur_model_files_find(mf, "model.b"), *tc = recur_model_files_find(mf, "model.c");
        if (tb && tc) {
            RECUR_CHECK(fails, recur_tensor_read_f32(tb, 0, 5, v) == RECUR_OK);
            RECUR_CHECK(fails, v[0] == 1.0f && v[1] == 5.9604644775390625e-8f && v[2] == 65504.0f && isinf(v[3]) &&
                                   v[3] < 0 && v[4] == 0.0f && signbit(v[4]));
            RECUR_CHECK(fails, recur_tensor_read_f32(tc, 1, 5, v) == RECUR_OK);
            RECUR_CHECK(fails, v[0] == -2.0f && v[1] > 0 && v[1] < 1e-38f && isinf(v[2]) && v[3] == 3.140625f &&
                                   v[4] == 0.0f);
        }
        const recur_tensor_info_t *td = recur_model_files_find(mf, "model.d"), *te = recur_model_files_find(mf, "model.e");
        RECUR_CHECK(fails, td && td->n_dims == 0 && td->n_elems == 1);
        RECUR_CHECK(fails, te && te->n_elems == 0 && te->n_bytes == 0);
        const recur_tensor_info_t *tf = recur_model_files_find(mf, "model.f");
        RECUR_CHECK(fails, tf && ((uintptr_t)tf->data & 3) != 0); /* misaligned on purpose */
        recur_model_files_free(mf);
    }
}

static void test_st_sharded(int *fails, const char *tmp) {
    fprintf(stderr, "== safetensors: sharded with an index\n");
    char dir[4096], p[4096];
    make_subdir(dir, sizeof dir, tmp, "shards");
    float xw[4] = {1, 2, 3, 4}, yb[2] = {-1, 0.5f};
    uint16_t xh[4] = {0x3f80, 0x4000, 0x4040, 0x4080}, yw[3] = {0x3c00, 0x4000, 0x4200};
    st_tensor_t s1[2] = {{"x.w", "F32", 1, {4}, xw, sizeof xw}, {"x.h", "BF16", 2, {2, 2}, xh, sizeof xh}};
    st_tensor_t s2[2] = {{"y.w", "F16", 1, {3}, yw, sizeof yw}, {"y.b", "F32", 1, {2}, yb, sizeof yb}};
    path_join(p, sizeof p, dir, "model-00002-of-00002.safetensors");
    RECUR_CHECK(fails, st_write(p, s2, 2, "\"format\":\"second\"") == 0);
    path_join(p, sizeof p, dir, "model-00001-of-00002.safetensors");
    RECUR_CHECK(fails, st_write(p, s1, 2, "\"format\":\"pt\"") == 0);
    static const char *index =
        "{\"metadata\": {\"total_size\": 46},\n \"weight_map\": {\"y.b\": \"model-00002-of-00002.safetensors\",\n"
        "  \"x.w\": \"model-00001-of-00002.safetensors\", \"y.w\": \"model-00002-of-00002.safetensors\",\n"
        "  \"x.h\": \"model-00001-of-00002.safetensors\"}}\n";
    path_join(p, sizeof p, dir, "model.safetensors.index.json");
    RECUR_CHECK(fails, recur_write_file(p, index, strlen(index)) == 0);
    for (int by_dir = 0; by_dir < 2; by_dir++) {
        recur_model_files_t *mf = NULL;
        RECUR_CHECK(fails, recur_model_files_open(by_dir ? dir : p, &mf) == RECUR_OK);
        if (!mf) continue;
        RECUR_CHECK(fails, recur_model_files_format(mf) == RECUR_FORMAT_SAFETENSORS);
        RECUR_CHECK(fails, recur_model_files_n_files(mf) == 2 && recur_model_files_n_tensors(mf) == 4);
        RECUR_CHECK(fails, strcmp(recur_model_files_dir(mf), dir) == 0);
        RECUR_CHECK(fails, strstr(recur_model_files_path(mf, 0), "model-00001-of-00002.safetensors") != NULL);
        RECUR_CHECK(fails, strstr(recur_model_files_path(mf, 1), "model-00002-of-00002.safetensors") != NULL);
        const char *fmt = recur_model_files_metadata(mf, "format");
        RECUR_CHECK(fails, fmt && strcmp(fmt, "pt") == 0); /* the first file's */
        st_check_tensors(fails, mf, s1, 2, 0, 0);
        st_check_tensors(fails, mf, s2, 2, 1, 2);
        recur_model_files_free(mf);
    }
}

/* ------------------------------------------------------------------ safetensors corruption */

static void test_st_corruption(int *fails, const char *tmp) {
    fprintf(stderr, "== safetensors: truncations and bit flips\n");
    char dir[4096], p[4096], q[4096];
    make_subdir(dir, sizeof dir, tmp, "stflip");
    path_join(p, sizeof p, dir, "ref.safetensors");
    path_join(q, sizeof q, dir, "bad.safetensors");
    /* No zero-size tensor here: a flipped digit in the shape of a 0-element tensor ([0,4] ->
     * [0,5]) still describes 0 bytes, which no reader can detect. */
    st_fixture_t x;
    st_fixture_init(&x, 0);
    RECUR_CHECK(fails, st_write(p, x.t, x.n, "\"format\":\"pt\"") == 0);
    recur_model_files_t *ref = NULL;
    RECUR_CHECK(fails, recur_model_files_open(p, &ref) == RECUR_OK);
    uint8_t *raw = NULL;
    size_t n = 0;
    if (!ref || recur_read_file(p, (void **)&raw, &n) != 0) {
        (*fails)++;
        recur_model_files_free(ref);
        return;
    }
    static const char *const meta_keys[] = {"format", NULL};
    int tr[FLIP_N] = {0}, fl[FLIP_N] = {0};
    /* In place, like the .bin tests: rewriting a file thousands of times is slow on ext4
     * (truncate-then-write forces a flush on close). */
    recur_write_file(q, raw, n);
    int fd = open(q, O_RDWR);
    RECUR_CHECK(fails, fd >= 0);
    for (size_t len = n; len-- > 0 && fd >= 0;) {
        if (ftruncate(fd, (off_t)len) != 0) { (*fails)++; break; }
        flip_class_t c = classify_open(q, ref, meta_keys);
        tr[c]++;
        if (c != FLIP_DETECTED) fprintf(stderr, "  truncated to %zu bytes: %s\n", len, flip_class_name[c]);
    }
    if (fd >= 0 && pwrite(fd, raw, n, 0) != (ssize_t)n) (*fails)++;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
    for (size_t off = 0; off < 8 + hlen && fd >= 0; off++) {
        for (int bit = 0; bit < 8; bit++) {
            if (flip_bit(fd, off, bit) != 0) { (*fails)++; break; }
            flip_class_t c = classify_open(q, ref, meta_keys);
            if (flip_bit(fd, off, bit) != 0) { (*fails)++; break; }
            fl[c]++;
            if (c == FLIP_BAD || c == FLIP_HDR_INFO)
                fprintf(stderr, "  header byte %zu ('%c') bit %d: %s\n", off, raw[off] >= 32 && raw[off] < 127 ? raw[off] : '?',
                        bit, flip_class_name[c]);
        }
    }
    if (fd >= 0) close(fd);
    char what[128];
    snprintf(what, sizeof what, "truncations of a %zu-byte safetensors file (every length)", n);
    print_counts(what, tr);
    snprintf(what, sizeof what, "bit flips in the length + %" PRIu64 "-byte JSON header (every bit)", hlen);
    print_counts(what, fl);
    RECUR_CHECK(fails, tr[FLIP_DETECTED] == (int)n);
    RECUR_CHECK(fails, fl[FLIP_BAD] == 0 && fl[FLIP_HDR_INFO] == 0 && fl[FLIP_DETECTED] > 0);
    free(raw);
    recur_model_files_free(ref);
    unlink(q);
}

static void test_st_crafted(int *fails, const char *tmp) {
    fprintf(stderr, "== safetensors: crafted bad headers\n");
    char dir[4096], p[4096];
    make_subdir(dir, sizeof dir, tmp, "stbad");
    path_join(p, sizeof p, dir, "bad.safetensors");
#define T8 "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
    struct { const char *json; uint64_t hlen; size_t data; recur_status_t want; const char *what; } cases[] = {
        {"{}", 1000, 0, RECUR_E_FORMAT, "header length > file"},
        {"{}", 1, 0, RECUR_E_FORMAT, "header length 1"},
        {"{" T8 "}", 0xffffffffffffffffull, 8, RECUR_E_FORMAT, "header length 2^64-1"},
        {"[1,2,3]", 0, 0, RECUR_E_FORMAT, "JSON array, not an object"},
        {"\"str\"   ", 0, 0, RECUR_E_FORMAT, "JSON string, not an object"},
        {"{\"t\":", 0, 0, RECUR_E_FORMAT, "JSON cut short"},
        {"{" T8 "}x", 0, 8, RECUR_E_FORMAT, "garbage after the JSON"},
        {"{" T8 "}{}", 0, 8, RECUR_E_FORMAT, "two JSON values"},
        {"{\"t\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT, "unknown dtype F99"},
        {"{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_UNSUPPORTED, "dtype F64"},
        {"{\"t\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_UNSUPPORTED, "dtype I64"},
        {"{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_UNSUPPORTED, "dtype U8"},
        {"{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_UNSUPPORTED,
         "dtype F8_E4M3"},
        {"{\"t\":{\"dtype\":3,\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT, "dtype not a string"},
        {"{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT, "no dtype"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "shape/offset size mismatch"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT, "negative shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 0, 10, RECUR_E_FORMAT,
         "fractional shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT, "huge shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "shape product overflows"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "shape element is a string"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_UNSUPPORTED,
         "5-dim shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 0, 8, RECUR_E_FORMAT,
         "offsets beyond the end"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8, RECUR_E_FORMAT, "begin > end"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 0, 8, RECUR_E_FORMAT, "negative offset"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 0, 8, RECUR_E_FORMAT, "three offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 12, RECUR_E_FORMAT,
         "trailing data after the last tensor"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, RECUR_E_FORMAT,
         "gap before the first tensor"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 0, 20, RECUR_E_FORMAT,
         "gap between tensors"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, RECUR_E_FORMAT,
         "overlapping tensors"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "two tensors on the same bytes"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
         "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "duplicate tensor name"},
        {"{\"__metadata__\":[1]," T8 "}", 0, 8, RECUR_E_FORMAT, "__metadata__ not an object"},
        {"{\"__metadata__\":{\"a\":1}," T8 "}", 0, 8, RECUR_E_FORMAT, "__metadata__ value not a string"},
        {"{\"t\":[1,2]}", 0, 0, RECUR_E_FORMAT, "tensor entry not an object"},
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT, "empty tensor name"},
        {"{\"t\\u0001\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "control character in a name"},
        {"{\"t\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "invalid UTF-8 in a name"},
        {"{\"t\x01\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, RECUR_E_FORMAT,
         "raw control byte in the header"},
    };
#undef T8
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        st_write_raw(p, cases[i].json, cases[i].hlen, cases[i].data);
        expect_fail(fails, tmp, p, cases[i].want, p, cases[i].what);
    }
    /* positive controls for the raw writer: an empty header, and a zero-size tensor at the end */
    static const char *ok[] = {"{}      ", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                           "\"z\":{\"dtype\":\"BF16\",\"shape\":[0,3],\"data_offsets\":[8,8]}}"};
    for (int i = 0; i < 2; i++) {
        st_write_raw(p, ok[i], 0, i ? 8 : 0);
        recur_model_files_t *mf = NULL;
        RECUR_CHECK(fails, recur_model_files_open(p, &mf) == RECUR_OK && recur_model_files_n_tensors(mf) == 2 * i);
        recur_model_files_free(mf);
    }
    unlink(p);
}

static void test_st_index_crafted(int *fails, const char *tmp) {
    fprintf(stderr, "== safetensors: crafted bad index files\n");
    char dir[4096], p[4096], ip[4096], sub[4096];
    make_subdir(dir, sizeof dir, tmp, "idxbad");
    float a[2] = {1, 2}, b[2] = {3, 4};
    st_tensor_t s1[2] = {{"a", "F32", 1, {2}, a, sizeof a}, {"b", "F32", 1, {2}, b, sizeof b}};
    path_join(p, sizeof p, dir, "s1.safetensors");
    st_write(p, s1, 2, NULL);
    path_join(p, sizeof p, dir, "s2.safetensors");
    st_write(p, s1 + 1, 1, NULL); /* "b" again: a duplicate if both shards are used */
    /* a shard outside the directory, for the traversal cases: it must never be opened */
    make_subdir(sub, sizeof sub, dir, "sub");
    path_join(p, sizeof p, sub, "s3.safetensors");
    st_write(p, s1, 2, NULL);
    path_join(ip, sizeof ip, sub, "model.safetensors.index.json");

    struct { const char *json; recur_status_t want; const char *name; const char *what; } cases[] = {
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}", RECUR_OK, NULL, "valid"},
        {"{\"weight_map\":{\"a\":\"missing.safetensors\",\"b\":\"s1.safetensors\"}}", RECUR_E_IO, "missing.safetensors",
         "index names a missing shard"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s1.safetensors\"}}", RECUR_E_FORMAT,
         "index.json", "index names a tensor absent from its shard"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\"}}", RECUR_E_FORMAT, "index.json", "shard tensor missing in index"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}", RECUR_E_FORMAT, "index.json",
         "duplicate tensor across shards"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"a\":\"s1.safetensors\"}}",
         RECUR_E_FORMAT, "index.json", "weight_map key twice"},
        {"{\"weight_map\":{\"a\":\"../s1.safetensors\",\"b\":\"../s1.safetensors\"}}", RECUR_E_FORMAT, "index.json",
         "path traversal ../"},
        {"{\"weight_map\":{\"a\":\"..\",\"b\":\"s1.safetensors\"}}", RECUR_E_FORMAT, "index.json", "shard '..'"},
        {"{\"weight_map\":{\"a\":\"/etc/passwd\"}}", RECUR_E_FORMAT, "index.json", "absolute shard path"},
        {"{\"weight_map\":{\"a\":\"sub/s3.safetensors\",\"b\":\"sub/s3.safetensors\"}}", RECUR_E_FORMAT, "index.json",
         "shard in a subdirectory"},
        {"{\"weight_map\":{\"a\":7}}", RECUR_E_FORMAT, "index.json", "weight_map value not a string"},
        {"{\"weight_map\":{}}", RECUR_E_FORMAT, "index.json", "empty weight_map"},
        {"{\"metadata\":{}}", RECUR_E_FORMAT, "index.json", "no weight_map"},
        {"{\"metadata\":3,\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}", RECUR_E_FORMAT,
         "index.json", "metadata not an object"},
        {"[\"s1.safetensors\"]", RECUR_E_FORMAT, "index.json", "index is an array"},
        {"{\"weight_map\":", RECUR_E_FORMAT, "index.json", "index is cut short"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}} x", RECUR_E_FORMAT, "index.json",
         "garbage after the index JSON"},
        {"", RECUR_E_FORMAT, "index.json", "empty index"},
    };
    path_join(ip, sizeof ip, dir, "model.safetensors.index.json");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        recur_write_file(ip, cases[i].json, strlen(cases[i].json));
        if (cases[i].want == RECUR_OK) {
            recur_model_files_t *mf = NULL;
            RECUR_CHECK(fails, recur_model_files_open(ip, &mf) == RECUR_OK && recur_model_files_n_files(mf) == 1 &&
                                   recur_model_files_n_tensors(mf) == 2);
            recur_model_files_free(mf);
        } else {
            expect_fail(fails, tmp, ip, cases[i].want, cases[i].name, cases[i].what);
        }
    }
    /* directory resolution: the index wins over the shards; without it, two *.safetensors are ambiguous */
    recur_write_file(ip, cases[0].json, strlen(cases[0].json));
    recur_model_files_t *mf = NULL;
    RECUR_CHECK(fails, recur_model_files_open(dir, &mf) == RECUR_OK && recur_model_files_n_tensors(mf) == 2);
    recur_model_files_free(mf);
    unlink(ip);
    expect_fail(fails, tmp, dir, RECUR_E_FORMAT, dir, "directory with two *.safetensors");
    /* exactly one *.safetensors (not named model.safetensors) is picked, even next to a .bin */
    path_join(p, sizeof p, dir, "s2.safetensors");
    unlink(p);
    path_join(p, sizeof p, dir, "stray.bin");
    recur_write_file(p, "x", 1);
    mf = NULL;
    RECUR_CHECK(fails, recur_model_files_open(dir, &mf) == RECUR_OK && recur_model_files_n_tensors(mf) == 2 &&
                           recur_model_files_format(mf) == RECUR_FORMAT_SAFETENSORS);
    recur_model_files_free(mf);
}

/* recur_model_files_open_memory (the fuzz targets' entry point): the same directory as from
 * disk, data pointing into the caller's buffer, the format from the magic or the name, and
 * a truncated buffer refused as a truncated file is. */
static void test_open_memory(int *fails) {
    fprintf(stderr, "== open_memory\n");
    char path[4096];
    recur_fixture_path(path, sizeof path, TINY16);
    void *buf = NULL;
    size_t n = 0;
    recur_model_files_t *ref = open_fixture(fails, TINY16), *mf = NULL;
    if (!ref || recur_read_file(path, &buf, &n) != 0) {
        (*fails)++;
        recur_model_files_free(ref);
        return;
    }
    RECUR_CHECK(fails, recur_model_files_open_memory(buf, n, "dir/x.safetensors", &mf) == RECUR_OK); /* magic wins */
    if (mf) {
        RECUR_CHECK(fails, compare_dirs(ref, mf, NULL) == FLIP_SAME);
        RECUR_CHECK(fails, strcmp(recur_model_files_dir(mf), "dir") == 0 &&
                               strcmp(recur_model_files_path(mf, 0), "dir/x.safetensors") == 0);
        const recur_tensor_info_t *t = recur_model_files_tensor(mf, 0);
        RECUR_CHECK(fails, (const uint8_t *)t->data == (const uint8_t *)buf + t->file_offset);
    }
    recur_model_files_free(mf);
    mf = (recur_model_files_t *)buf;
    RECUR_CHECK(fails, recur_model_files_open_memory(buf, n - 1, "x.bin", &mf) == RECUR_E_FORMAT && mf == NULL);
    RECUR_CHECK(fails, recur_model_files_open_memory(buf, 0, "x.bin", &mf) == RECUR_E_FORMAT && mf == NULL);
    /* no magic: the name picks the parser (.bin: its header check; else safetensors) */
    memcpy(buf, "xxxx", 4);
    RECUR_CHECK(fails, recur_model_files_open_memory(buf, n, "m.bin", &mf) == RECUR_E_FORMAT);
    static const char st[] = "\x10\0\0\0\0\0\0\0{}              ";
    RECUR_CHECK(fails, recur_model_files_open_memory(st, sizeof st - 1, "m.safetensors", &mf) == RECUR_OK &&
                           recur_model_files_n_tensors(mf) == 0 &&
                           recur_model_files_format(mf) == RECUR_FORMAT_SAFETENSORS);
    recur_model_files_free(mf);
    recur_model_files_free(ref);
    free(buf);
}

int main(void) {
    int fails = 0;
    char tmp[4096];
    double t0 = now_s();
    if (recur_make_temp_dir(tmp, sizeof tmp) != 0) {
        fprintf(stderr, "cannot create a temp dir\n");
        return 1;
    }
    recur_log_set_level(RECUR_LOG_ERROR);

    test_bin_fixtures(&fails);
    test_open_memory(&fails);
    test_bin_crafted(&fails, tmp);
    test_st_single(&fails, tmp);
    test_st_sharded(&fails, tmp);
    test_st_crafted(&fails, tmp);
    test_st_index_crafted(&fails, tmp);

    /* Bulk corruption: thousands of expected errors, so logging is off (the crafted cases
     * above show the messages). */
    fprintf(stderr, "== .bin corruption\n");
    recur_log_set_level(RECUR_LOG_NONE);
    double t1 = now_s();
    test_bin_truncation(&fails, tmp, TINY16);
    test_bin_truncation(&fails, tmp, SYNTH7);
    double t2 = now_s();
    test_bin_flips(&fails, tmp, TINY32, 0);
    test_bin_flips(&fails, tmp, TINY16, 1);
    double t3 = now_s();
    test_st_corruption(&fails, tmp);
    fprintf(stderr, "  (times: setup+crafted %.1f s, .bin truncations %.1f s, .bin flips %.1f s, safetensors %.1f s)\n",
            t1 - t0, t2 - t1, t3 - t2, now_s() - t3);
    recur_log_set_level(RECUR_LOG_ERROR);

    recur_rm_rf(tmp);
    fprintf(stderr, "test_model_files: %s (%d failed checks, %.1f s)\n", fails ? "FAIL" : "PASS", fails,
            now_s() - t0);
    return fails ? 1 : 0;
}
