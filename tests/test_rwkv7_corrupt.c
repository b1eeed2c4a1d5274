/* test_rwkv7_corrupt.c: loading RWKV-7 from damaged or re-laid-out checkpoints.
 *
 * The rule: a damaged file gives a clear error, or, if the damage is in a field that
 * does not matter, the very same logits; never different logits (a silent wrong answer).
 *   - bit flips in every field of the .bin's file header and of every tensor header;
 *   - truncated copies;
 *   - the same weights re-written as safetensors in BlinkDL's .pth layout (six x_* mixes,
 *     LoRA matrices transposed), as one file and as shards with an index: same logits;
 *   - a wrong shape, a missing tensor and a variant's extra tensor: a clear error.
 * Flips inside tensor data cannot be detected by any of these formats (no checksums):
 * that is for the session files' checksums, not the checkpoint reader. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recur_log.h"
#include "recur_model.h"
#include "recur_model_files.h"
#include "recur_testutil.h"

static int failures;
static char tmpdir[512];
static const int32_t probe[4] = {34, 105, 110, 32};
static float ref_logits[4 * 256];

/* 0 = loaded and same logits, 1 = refused; a different answer counts as a failure. */
static int load_and_compare(const char *path, const char *what) {
    float lg[4 * 256];
    int V = 0;
    int st = recur_test_run_model(path, probe, 4, 128, NULL, lg, NULL, &V, NULL);
    if (st != RECUR_OK) return 1;
    if (V != 256 || memcmp(lg, ref_logits, sizeof lg) != 0) {
        fprintf(stderr, "SILENT WRONG ANSWER: %s loaded and gave different logits\n", what);
        failures++;
    }
    return 0;
}

static int rd32(const unsigned char *p) { int v; memcpy(&v, p, 4); return v; }

static void test_bin_flips_and_truncation(const char *fixture) {
    char src[1024], dst[1024];
    recur_fixture_path(src, sizeof src, fixture);
    unsigned char *d = NULL;
    size_t n = 0;
    if (recur_read_file(src, (void **)&d, &n) != 0) { failures++; return; }
    snprintf(dst, sizeof dst, "%s/flip.bin", tmpdir);
    /* The positions of every header field: 6 file-header ints, then per tensor
     * n_dims, key_len, dtype, ne[...] and the key bytes. */
    size_t *pos = malloc(n / 4 * sizeof(size_t) + 64 * sizeof(size_t));
    size_t np = 0, off = 24;
    for (size_t i = 0; i < 24; i++) pos[np++] = i;
    int n_tensors = 0;
    while (off + 12 <= n) {
        int nd = rd32(d + off), kl = rd32(d + off + 4), dt = rd32(d + off + 8);
        size_t elems = 1;
        for (int i = 0; i < nd; i++) elems *= (size_t)rd32(d + off + 12 + 4 * (size_t)i);
        for (size_t i = 0; i < 12 + 4 * (size_t)nd; i += 4) pos[np++] = off + i;  /* low byte of each int   */
        for (size_t i = 0; i < 12 + 4 * (size_t)nd; i += 4) pos[np++] = off + i + 3; /* and its high byte    */
        size_t key = off + 12 + 4 * (size_t)nd;
        for (int i = 0; i < kl; i += 3) pos[np++] = key + (size_t)i;               /* every third key byte  */
        off = key + (size_t)kl + elems * (dt == 0 ? 4 : 2);
        n_tensors++;
    }
    /* One copy, each flip written in place and undone: no 3 MB rewrite per trial. */
    int refused = 0, same = 0;
    int fd = recur_write_file(dst, d, n) == 0 ? open(dst, O_WRONLY) : -1;
    if (fd < 0) failures++;
    for (size_t i = 0; fd >= 0 && i < np; i++) {
        int bit = (int)(i % 8);
        unsigned char flipped = d[pos[i]] ^ (unsigned char)(1u << bit);
        char what[128];
        snprintf(what, sizeof what, "%s with bit %d of byte %zu flipped", fixture, bit, pos[i]);
        if (pwrite(fd, &flipped, 1, (off_t)pos[i]) != 1) { failures++; break; }
        if (load_and_compare(dst, what)) refused++;
        else same++;
        if (pwrite(fd, &d[pos[i]], 1, (off_t)pos[i]) != 1) { failures++; break; }
    }
    /* Two header fields are informational: version 101 -> 100 (both are the same
     * container) and the file-wide type 0 -> 1 (per-tensor types govern). These must load
     * with the same logits, so the reader is strict without being over-strict. */
    static const struct { size_t byte; int bit; } benign[] = {{4, 0}, {20, 0}};
    for (size_t i = 0; fd >= 0 && i < 2; i++) {
        unsigned char flipped = d[benign[i].byte] ^ (unsigned char)(1u << benign[i].bit);
        if (pwrite(fd, &flipped, 1, (off_t)benign[i].byte) != 1) failures++;
        int r = load_and_compare(dst, "informational header field flipped");
        fprintf(stderr, "%s: header byte %zu bit %d flipped (informational): %s\n", fixture, benign[i].byte,
                benign[i].bit, r ? "REFUSED" : "same logits");
        RECUR_CHECK(&failures, r == 0);
        if (pwrite(fd, &d[benign[i].byte], 1, (off_t)benign[i].byte) != 1) failures++;
    }
    if (fd >= 0) close(fd);
    fprintf(stderr, "%s: %d tensors, %zu header flips: %d refused, %d harmless (same logits)\n", fixture, n_tensors, np,
            refused, same);
    RECUR_CHECK(&failures, refused > 0 && (size_t)(refused + same) == np);
    /* truncations: at tensor-header boundaries and evenly through the data */
    int trunc_ok = 0, trunc_n = 0;
    for (int k = 0; k < 60; k++) {
        size_t len = k < 30 ? pos[(size_t)k * np / 30] : (size_t)k * n / 60;
        if (len >= n) continue;
        trunc_n++;
        recur_write_file(dst, d, len);
        char what[96];
        snprintf(what, sizeof what, "%s truncated to %zu bytes", fixture, len);
        trunc_ok += load_and_compare(dst, what);
    }
    fprintf(stderr, "%s: %d/%d truncated copies refused\n", fixture, trunc_ok, trunc_n);
    RECUR_CHECK(&failures, trunc_ok == trunc_n);
    free(pos);
    free(d);
}

/* Rewrites the .bin's tensors as safetensors in BlinkDL's layout. mode: 0 as is,
 * 1 wrong shape for one tensor, 2 one tensor missing, 3 an extra variant tensor. */
typedef struct tensor_buf { char name[96]; int64_t shape[3]; int nd; float *data; size_t n; } tensor_buf_t;

static int blinkdl_tensors(const char *fixture, tensor_buf_t **out) {
    char src[1024];
    recur_fixture_path(src, sizeof src, fixture);
    recur_model_files_t *f = NULL;
    if (recur_model_files_open(src, &f) != RECUR_OK) return -1;
    int nt = recur_model_files_n_tensors(f), k = 0;
    tensor_buf_t *t = calloc(6 * (size_t)nt + 16, sizeof *t); /* x_rwkvag becomes 6 tensors */
    for (int i = 0; i < nt; i++) {
        const recur_tensor_info_t *ti = recur_model_files_tensor(f, i);
        float *v = malloc((size_t)ti->n_elems * sizeof(float));
        recur_tensor_read_f32(ti, 0, ti->n_elems, v);
        const char *suffix = strrchr(ti->name, '.');
        if (strstr(ti->name, "att.x_rwkvag")) {
            static const char *mix[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
            int64_t C = ti->shape[ti->n_dims - 1];
            char prefix[64];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(suffix - ti->name) < 63 ? (int)(suffix - ti->name) : 63, ti->name);
            for (int j = 0; j < 6; j++, k++) {
                snprintf(t[k].name, sizeof t[k].name, "%s.%s", prefix, mix[j]);
                t[k].nd = 3;
                t[k].shape[0] = t[k].shape[1] = 1;
                t[k].shape[2] = C;
                t[k].n = (size_t)C;
                t[k].data = malloc((size_t)C * sizeof(float));
                memcpy(t[k].data, v + j * C, (size_t)C * sizeof(float));
            }
            free(v);
            continue;
        }
        int lora = ti->n_dims == 2 && suffix && strlen(suffix) == 3 && strchr("wavg", suffix[1]) &&
                   (suffix[2] == '1' || suffix[2] == '2') && strstr(ti->name, ".att.");
        snprintf(t[k].name, sizeof t[k].name, "%s", ti->name);
        t[k].nd = ti->n_dims;
        for (int j = 0; j < ti->n_dims; j++) t[k].shape[j] = ti->shape[j];
        t[k].n = (size_t)ti->n_elems;
        t[k].data = v;
        if (lora) { /* .bin holds W for W.x; BlinkDL holds its transpose */
            int64_t r = ti->shape[0], c = ti->shape[1];
            float *tr = malloc(t[k].n * sizeof(float));
            for (int64_t i2 = 0; i2 < r; i2++)
                for (int64_t j = 0; j < c; j++) tr[j * r + i2] = v[i2 * c + j];
            free(v);
            t[k].data = tr;
            t[k].shape[0] = c;
            t[k].shape[1] = r;
        }
        k++;
    }
    recur_model_files_free(f);
    *out = t;
    return k;
}

static int write_st(const char *path, tensor_buf_t *t, int first, int count) {
    recur_test_tensor_t *tt = calloc((size_t)count, sizeof *tt);
    for (int i = 0; i < count; i++) {
        tensor_buf_t *s = &t[first + i];
        tt[i] = (recur_test_tensor_t){.name = s->name, .dtype = "F32", .n_dims = s->nd, .data = s->data,
                                      .n_bytes = s->n * sizeof(float)};
        memcpy(tt[i].shape, s->shape, sizeof s->shape);
    }
    int rc = recur_write_safetensors(path, tt, count, "{\"format\":\"pt\"}");
    free(tt);
    return rc;
}

static void test_safetensors_layouts(const char *fixture) {
    tensor_buf_t *t = NULL;
    int nt = blinkdl_tensors(fixture, &t);
    if (nt <= 0) { failures++; return; }
    char path[1200], what[256];

    /* one file */
    snprintf(path, sizeof path, "%s/blinkdl.safetensors", tmpdir);
    write_st(path, t, 0, nt);
    snprintf(what, sizeof what, "%s as BlinkDL-layout safetensors", fixture);
    int r = load_and_compare(path, what);
    fprintf(stderr, "%-60s %s\n", what, r ? "REFUSED" : "same logits");
    if (r) failures++;

    /* three shards + index, loaded through the directory */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    snprintf(path, sizeof path, "mkdir -p '%s'", dir);
    if (system(path) != 0) failures++;
    FILE *ix = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    ix = fopen(path, "w");
    fprintf(ix, "{\"metadata\":{},\"weight_map\":{");
    int per = (nt + 2) / 3;
    for (int s = 0; s < 3; s++) {
        int first = s * per, cnt = first + per > nt ? nt - first : per;
        snprintf(path, sizeof path, "%s/model-%05d-of-00003.safetensors", dir, s + 1);
        write_st(path, t, first, cnt);
        for (int i = first; i < first + cnt; i++)
            fprintf(ix, "%s\"%s\":\"model-%05d-of-00003.safetensors\"", i ? "," : "", t[i].name, s + 1);
    }
    fprintf(ix, "}}");
    fclose(ix);
    snprintf(what, sizeof what, "%s as 3 safetensors shards (directory)", fixture);
    r = load_and_compare(dir, what);
    fprintf(stderr, "%-60s %s\n", what, r ? "REFUSED" : "same logits");
    if (r) failures++;

    /* must be refused: wrong shape, missing tensor, a 7a-variant tensor */
    int victim = nt / 2;
    int64_t saved = t[victim].shape[0];
    t[victim].shape[0] = saved + 1; /* shape no longer matches; keep bytes consistent */
    t[victim].n = t[victim].n / (size_t)saved * (size_t)(saved + 1);
    t[victim].data = realloc(t[victim].data, t[victim].n * sizeof(float));
    memset(t[victim].data, 0, t[victim].n * sizeof(float));
    snprintf(path, sizeof path, "%s/badshape.safetensors", tmpdir);
    write_st(path, t, 0, nt);
    snprintf(what, sizeof what, "wrong shape for %s", t[victim].name);
    r = load_and_compare(path, what);
    fprintf(stderr, "%-60s %s\n", what, r ? "refused" : "LOADED");
    RECUR_CHECK(&failures, r == 1);

    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    write_st(path, t, 0, victim); /* everything before the victim only */
    r = load_and_compare(path, "missing tensors");
    fprintf(stderr, "%-60s %s\n", "missing tensors", r ? "refused" : "LOADED");
    RECUR_CHECK(&failures, r == 1);

    for (int i = 0; i < nt; i++) free(t[i].data);
    free(t);

    /* the intact tensors plus one a DeepEmbed (RWKV-7a) checkpoint carries */
    nt = blinkdl_tensors(fixture, &t);
    tensor_buf_t *extra = &t[nt]; /* blinkdl_tensors leaves room for 16 more */
    snprintf(extra->name, sizeof extra->name, "blocks.0.ffn.s_emb.weight");
    extra->nd = 2;
    extra->shape[0] = 256;
    extra->shape[1] = 64;
    extra->n = 256 * 64;
    extra->data = calloc(extra->n, sizeof(float));
    snprintf(path, sizeof path, "%s/variant.safetensors", tmpdir);
    write_st(path, t, 0, nt + 1);
    r = load_and_compare(path, "RWKV-7a extra tensor");
    fprintf(stderr, "%-60s %s\n", "RWKV-7a extra tensor (ffn.s_emb.weight)", r ? "refused" : "LOADED");
    RECUR_CHECK(&failures, r == 1);
    for (int i = 0; i <= nt; i++) free(t[i].data);
    free(t);
}

int main(void) {
    if (recur_make_temp_dir(tmpdir, sizeof tmpdir) != 0) return 1;
    char path[1024];
    recur_fixture_path(path, sizeof path, "rwkv7/tiny-rwkv-7v0-834K-FP32.bin");
    if (recur_test_run_model(path, probe, 4, 128, NULL, ref_logits, NULL, NULL, NULL) != 0) return 1;
    recur_log_set_level(RECUR_LOG_NONE); /* thousands of expected load errors */
    test_bin_flips_and_truncation("rwkv7/tiny-rwkv-7v0-834K-FP32.bin");
    recur_log_set_level(RECUR_LOG_ERROR);
    test_safetensors_layouts("rwkv7/tiny-rwkv-7v0-834K-FP32.bin");
    recur_rm_rf(tmpdir);
    fprintf(stderr, "%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
