/* recur_model_files.h: read-only access to the tensors of a model checkpoint.
 *
 * Formats: rwkv.cpp's ".bin" container (magic "ggmf", version 100/101, FP32 and FP16
 * tensors) and safetensors (one file, or shards listed by model.safetensors.index.json).
 * Files are mmap'ed; tensor data is never copied here. Everything read from a file is
 * validated (magic, version, header length, names, dtypes, shapes, offsets inside the
 * file, tensors tiling the data region) and a problem is reported as RECUR_E_FORMAT (or
 * RECUR_E_UNSUPPORTED for a well-formed variant recur does not read) with one error log
 * line naming the file and the problem.
 *
 * Ownership: recur_model_files_open() returns a handle that owns the mappings, the file
 * descriptors and every string and recur_tensor_info_t it hands out; all of them stay
 * valid until recur_model_files_free(). Thread-safety: a handle is immutable after open,
 * so concurrent readers are fine. */
#ifndef RECUR_MODEL_FILES_H
#define RECUR_MODEL_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "recur_dtype.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECUR_TENSOR_MAX_DIMS 4

typedef enum recur_file_format {
    RECUR_FORMAT_RWKVCPP_BIN = 0, /* rwkv.cpp ".bin" (ggml-era container)      */
    RECUR_FORMAT_SAFETENSORS = 1, /* one file, or shards with an index json     */
    RECUR_FORMAT_VIRTUAL     = 2  /* names and shapes only, values generated    */
} recur_file_format_t;

typedef struct recur_tensor_info {
    const char   *name;                          /* e.g. "blocks.0.att.w1"                    */
    recur_dtype_t dtype;
    int32_t       n_dims;                        /* 0..RECUR_TENSOR_MAX_DIMS (0 = scalar)     */
    int64_t       shape[RECUR_TENSOR_MAX_DIMS];  /* PyTorch/row-major order: the last dim is
                                                    contiguous. rwkv.cpp's reversed ggml "ne"
                                                    order is undone when reading a .bin.     */
    int64_t       n_elems;                       /* product of shape (1 for a scalar)         */
    const void   *data;                          /* into the mapping; may be unaligned        */
    size_t        n_bytes;                       /* n_elems * recur_dtype_size(dtype)         */
    int32_t       file_index;                    /* which file of the set holds the data      */
    uint64_t      file_offset;                   /* byte offset of the data in that file      */
    /* Virtual tensors (data == NULL): element i is recur_virtual_value(seed, i, lo, hi). */
    uint64_t      virt_seed;
    float         virt_lo, virt_hi;
} recur_tensor_info_t;

/* One tensor of a virtual checkpoint (benchmarks at real shapes without the files). */
typedef struct recur_virtual_tensor {
    const char *name;
    int32_t     n_dims;
    int64_t     shape[RECUR_TENSOR_MAX_DIMS];
    float       lo, hi;   /* values uniform in [lo, hi) */
} recur_virtual_tensor_t;

/* The generator of virtual tensor values: a counter-based hash (splitmix64 of the seed and
 * the element index), so any device can produce element i on its own. The CUDA backend's
 * weight_random kernel computes the same function; keep the two in step. */
static inline float recur_virtual_value(uint64_t seed, uint64_t i, float lo, float hi) {
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return lo + (hi - lo) * (float)((double)(z >> 40) * 0x1.0p-24);
}

/* Header of a rwkv.cpp .bin file (only meaningful for RECUR_FORMAT_RWKVCPP_BIN). */
typedef struct recur_bin_header {
    int32_t version;    /* 100 or 101   */
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t data_type;  /* 0 = FP32, 1 = FP16 (other values are rejected at open) */
} recur_bin_header_t;

typedef struct recur_model_files recur_model_files_t; /* opaque; defined in recur_model_files.c */

/* path: a .bin file, a .safetensors file, a model.safetensors.index.json, or a directory
 * holding model.safetensors.index.json, model.safetensors, exactly one *.safetensors, or
 * exactly one *.bin (searched in that order). *out = NULL on error. */
recur_status_t recur_model_files_open(const char *path, recur_model_files_t **out);
/* One .bin or .safetensors file held in memory, parsed and validated exactly as a file on
 * disk (the fuzz targets use it: ASan then sees a read one byte past the end, which a page
 * of an mmap'ed file would hide). The format: the .bin magic, else a name ending in ".bin",
 * else safetensors. `name` stands for the file's path in messages and in
 * recur_model_files_path()/_dir(). data[0..n) is borrowed: the caller keeps it alive and
 * unchanged until recur_model_files_free(); tensors point into it. */
recur_status_t recur_model_files_open_memory(const void *data, size_t n, const char *name,
                                             recur_model_files_t **out);
void           recur_model_files_free(recur_model_files_t *f); /* NULL is a no-op */

recur_file_format_t recur_model_files_format(const recur_model_files_t *f);
/* Directory of the checkpoint (where config.json / tokenizer files would sit). */
const char *recur_model_files_dir(const recur_model_files_t *f);
int32_t     recur_model_files_n_files(const recur_model_files_t *f);
const char *recur_model_files_path(const recur_model_files_t *f, int32_t file_index);
int32_t     recur_model_files_n_tensors(const recur_model_files_t *f);
/* i in [0, n_tensors): tensors in file order (shard by shard). */
const recur_tensor_info_t *recur_model_files_tensor(const recur_model_files_t *f, int32_t i);
/* Lookup by exact name; NULL if absent. */
const recur_tensor_info_t *recur_model_files_find(const recur_model_files_t *f, const char *name);
/* RECUR_E_INVAL if the set is not a .bin. */
recur_status_t recur_model_files_bin_header(const recur_model_files_t *f, recur_bin_header_t *out);
/* A string value of the safetensors "__metadata__" object (first file that has it); NULL if absent. */
const char *recur_model_files_metadata(const recur_model_files_t *f, const char *key);

/* A virtual checkpoint: the tensors `t` (copied), each with its own seed derived from
 * `seed` and its name; dir is reported by recur_model_files_dir() (where a config.json may
 * be). dtype is reported as `dtype` (the precision the values stand for). */
recur_status_t recur_model_files_virtual(const char *dir, const recur_virtual_tensor_t *t, int32_t n, uint64_t seed,
                                         recur_dtype_t dtype, recur_model_files_t **out);

/* Converts n_elems elements of t, starting at element `first`, to float32 in dst
 * (dst must not alias the mapping). RECUR_E_RANGE if first + n_elems > t->n_elems. */
recur_status_t recur_tensor_read_f32(const recur_tensor_info_t *t, int64_t first, int64_t n_elems, float *dst);

#ifdef __cplusplus
}
#endif
#endif
