/* recur_testutil.h: helpers shared by the C tests (comparisons, fixture files, temp dirs).
 * A test's exit code is its verdict: 0 pass, 1 fail, 77 skipped (hardware missing). */
#ifndef RECUR_TESTUTIL_H
#define RECUR_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#define RECUR_TEST_SKIP 77

/* Returns 1 if every |got-ref| <= atol + rtol*|ref| (NaN/Inf in got fails); prints the
 * worst element and the count of bad ones under `what`. *max_abs (if non-NULL) gets the
 * largest |got-ref|. */
int recur_allclose(const float *got, const float *ref, size_t n, float atol, float rtol,
                   const char *what, float *max_abs);

/* "<fixtures dir>/<rel>" and "<source dir>/<rel>" into buf. The directories are the
 * RECUR_FIXTURES_DIR / RECUR_SOURCE_DIR environment variables when set, else the paths
 * compiled in. */
void recur_fixture_path(char *buf, size_t n, const char *rel);
void recur_source_path(char *buf, size_t n, const char *rel);

/* Reads a whole file; *out is malloc'ed (caller frees). Returns 0 on success. */
int recur_read_file(const char *path, void **out, size_t *n);
int recur_write_file(const char *path, const void *data, size_t n);

/* Creates a fresh private temp directory; returns 0 on success. recur_rm_rf removes it. */
int recur_make_temp_dir(char *buf, size_t n);
void recur_rm_rf(const char *path);

/* Simple check macro: prints the failed condition and counts it in *failures. */
#define RECUR_CHECK(failures, cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); (*(failures))++; } } while (0)

#endif

/* One tensor for recur_write_safetensors: data is host memory in dtype's encoding. */
typedef struct recur_test_tensor {
    const char *name;
    const char *dtype;     /* "F32", "F16", "BF16" */
    int n_dims;
    int64_t shape[4];
    const void *data;
    size_t n_bytes;
} recur_test_tensor_t;

/* Writes a safetensors file (header padded to 8 bytes, tensors in the given order). */
int recur_write_safetensors(const char *path, const recur_test_tensor_t *t, int n, const char *metadata_json);

/* Loads the model at `path` on the CPU backend and runs `tokens` as one sequence from
 * `state_in` (NULL = initial state), `chunk` rows per forward piece. logits_out gets
 * [n][n_vocab] (NULL: not wanted), state_out the final state (NULL: not wanted).
 * *n_vocab and *state_floats (if non-NULL) get the model's sizes. Returns the status. */
int recur_test_run_model(const char *path, const int32_t *tokens, int n, int chunk, const float *state_in,
                         float *logits_out, float *state_out, int *n_vocab, size_t *state_floats);

/* 1 (after printing why) when no CUDA backend or device can be opened: GPU tests then
 * return RECUR_TEST_SKIP. */
int recur_test_no_cuda(void);

/* Monotonic seconds, for timing prints. */
double recur_test_now_s(void);
/* xorshift64*: a seeded, platform-independent PRNG so failures reproduce. */
uint64_t recur_test_rng_next(uint64_t *s);
uint32_t recur_test_rng_below(uint64_t *s, uint32_t n);
/* xorshift64 uniform float in [lo, hi) from state *s, and a fill of n of them: the
 * inputs of the op tests (a fixed seed per test keeps its inputs fixed). */
float recur_test_uniform(uint64_t *s, float lo, float hi);
void recur_test_fill(uint64_t *s, float *x, size_t n, float lo, float hi);
/* Prints up to 64 bytes in hex / up to 40 ids to stderr, labelled `what`. */
void recur_test_hex_dump(const char *what, const uint8_t *s, size_t n);
void recur_test_ids_dump(const char *what, const int32_t *ids, size_t n);

/* Reads a whole fixture file of little-endian 32-bit values (float or uint32); NULL on failure. */
void *recur_read_fixture32(const char *rel, size_t *n_values);
/* A file of 4-byte values, from the fixtures (fixture != 0) or the source tree; NULL (with
 * a message) when it cannot be read. The caller free()s it. */
void *recur_test_read_values32(int fixture, const char *rel, size_t *n_values);
/* The index of the largest of x[0..n) (the first on ties). */
int recur_test_argmax(const float *x, int n);

/* ---- weight formats (test_quant, bench_ppl) */
#include "recur_backend.h"

/* Makes b, a CPU backend with f32 weights, store every matrix rounded to bf16 (round to
 * nearest even; fp32 arithmetic): what the CUDA backend's bf16 weights compute in decode
 * (GEMVs with fp32 activations), for comparisons on machines without a GPU. (The
 * CPU backend's upload function is kept in a file-scope pointer). 0 on success. */
int recur_test_cpu_bf16_weights(recur_backend_t *b);

/* Loads the model at path on b and runs tokens[0..n) as one sequence from the initial
 * state: decode != 0 token by token (one row per forward: the decode GEMVs), else in
 * forward pieces of `piece` rows (prefill: the GEMM paths for pieces over 8 rows).
 * *logits gets a malloc'ed [n][*n_vocab] (the caller frees). Returns the status. */
int recur_test_model_logits(recur_backend_t *b, const char *path, const int32_t *tokens, int n, int piece, int decode,
                            float **logits, int *n_vocab);
