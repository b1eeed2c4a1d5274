/* recur_loader.h: helpers shared by the architectures' weight loaders (private to worker/).
 *
 * A loader reads tensors by name from the checkpoint, checks each shape, converts to
 * fp32 on the host (transposing when the file holds the transpose of nn.Linear layout),
 * and uploads to the backend. It records every tensor it consumed so that, at the end,
 * recur_loader_check_all_used() can refuse a checkpoint with tensors the architecture
 * does not know (a variant we would otherwise compute wrongly).
 * Ownership: the loader owns its host scratch and usage list (recur_loader_free); the
 * uploaded buffers belong to the caller. */
#ifndef RECUR_LOADER_H
#define RECUR_LOADER_H

#include "recur_backend.h"
#include "recur_model_files.h"

typedef struct recur_loader {
    recur_backend_t *b;
    const recur_model_files_t *f;
    const char *path;                   /* for messages */
    const char *arch;                   /* for messages, e.g. "RWKV-7 x070" */
    const recur_tensor_info_t **used;
    int32_t n_used, cap_used;
    int64_t n_params;
    int64_t bytes_read;                 /* checkpoint bytes this rank read (its shard) */
    int64_t matrix_bytes;               /* backend bytes of the matrices uploaded (recur_weight_bytes) */
    float *tmp, *tmp2;                  /* host scratch of tmp_floats each */
    size_t tmp_floats;
} recur_loader_t;

/* Allocates scratch for the largest tensor (max_floats). */
recur_status_t recur_loader_init(recur_loader_t *ld, recur_backend_t *b, const recur_model_files_t *f,
                                 const char *arch, size_t max_floats);
void recur_loader_free(recur_loader_t *ld);

/* The tensor `name`, marked used; NULL (with an error logged if required) when absent. */
const recur_tensor_info_t *recur_loader_get(recur_loader_t *ld, const char *name, int required);
/* Logs "tensor 'x' has shape [..], expected want" and returns RECUR_E_FORMAT. */
recur_status_t recur_loader_shape_error(const recur_loader_t *ld, const recur_tensor_info_t *t, const char *want);
void recur_loader_shape_str(const recur_tensor_info_t *t, char *buf, size_t n);
/* Uploads the n floats of t (shape already checked) to a new backend buffer *out. */
recur_status_t recur_loader_upload_vec(recur_loader_t *ld, const recur_tensor_info_t *t, int64_t n, float **out);
/* The same for elements [first, first + n) of t (a TP rank's part of a per-head tensor). */
recur_status_t recur_loader_upload_part(recur_loader_t *ld, const recur_tensor_info_t *t, int64_t first, int64_t n,
                                        float **out);
/* A vector of n floats: shape [n], [1,n] or [1,1,n]. */
recur_status_t recur_loader_vec(recur_loader_t *ld, const char *name, int64_t n, float **out);
/* A matrix [rows][cols] in the file, uploaded as [out][in] (transposed when transpose != 0),
 * stored as `use` says (RECUR_WEIGHT_PROJ: the backend's weight format, quantized in the
 * int8 / fp8 modes; RECUR_WEIGHT_KEEP: full precision). */
recur_status_t recur_loader_mat(recur_loader_t *ld, const char *name, int64_t rows, int64_t cols, int transpose,
                                recur_weight_use_t use, recur_weight_t *w);
/* A block of the [out][in] matrix the backend stores: rows (outputs) [r0, r0 + nr) and
 * columns (inputs) [c0, c0 + nc). A tensor-parallel rank takes a block of rows
 * (column-parallel layers: its heads' outputs) or of columns (row-parallel layers). */
typedef struct recur_block {
    int64_t r0, nr, c0, nc;
} recur_block_t;
/* As recur_loader_mat, but uploads only the block blk of the [out][in] matrix, reading
 * only the bytes of the checkpoint the block needs. */
recur_status_t recur_loader_mat_block(recur_loader_t *ld, const char *name, int64_t rows, int64_t cols, int transpose,
                                      const recur_block_t *blk, recur_weight_use_t use, recur_weight_t *w);
/* As recur_loader_vec, but uploads only elements [first, first + count). */
recur_status_t recur_loader_vec_part(recur_loader_t *ld, const char *name, int64_t n, int64_t first, int64_t count,
                                     float **out);
/* Marks every tensor whose name starts with prefix as used without reading it: another
 * rank (pipeline stage) loads and checks it. */
void recur_loader_skip_prefix(recur_loader_t *ld, const char *prefix);
/* RECUR_E_UNSUPPORTED (naming the first) if the checkpoint has a tensor nobody consumed. */
recur_status_t recur_loader_check_all_used(const recur_loader_t *ld);

#endif
