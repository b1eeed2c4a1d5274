/* recur_fuzz_model_files.h: the checks fuzz_safetensors, fuzz_bin and fuzz_st_index make on
 * an opened checkpoint (header-only, shared by the three). */
#ifndef RECUR_FUZZ_MODEL_FILES_H
#define RECUR_FUZZ_MODEL_FILES_H

#include <string.h>

#include "recur_fuzz.h"
#include "recur_model_files.h"

/* Every tensor lies inside its file, its size is its shape's, its name finds it, and its
 * first and last elements read (ASan sees a read past a borrowed buffer). */
static inline void recur_fuzz_check_files(const recur_model_files_t *f, const uint8_t *base, size_t size) {
    int32_t n = recur_model_files_n_tensors(f);
    RECUR_FUZZ_CHECK(n >= 0 && recur_model_files_tensor(f, n) == NULL && recur_model_files_tensor(f, -1) == NULL);
    for (int32_t i = 0; i < n; i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(f, i);
        RECUR_FUZZ_CHECK(t && t->name && t->name[0]);
        RECUR_FUZZ_CHECK(recur_model_files_find(f, t->name) == t);
        RECUR_FUZZ_CHECK(t->n_dims >= 0 && t->n_dims <= RECUR_TENSOR_MAX_DIMS);
        int64_t e = 1;
        for (int32_t d = 0; d < t->n_dims; d++) {
            RECUR_FUZZ_CHECK(t->shape[d] >= 0);
            e *= t->shape[d];
        }
        RECUR_FUZZ_CHECK(e == t->n_elems && t->n_bytes == (size_t)e * recur_dtype_size(t->dtype));
        RECUR_FUZZ_CHECK(t->file_index >= 0 && t->file_index < recur_model_files_n_files(f));
        if (base && t->n_bytes) {
            const uint8_t *p = t->data;
            RECUR_FUZZ_CHECK(p >= base && (size_t)(p - base) == t->file_offset);
            RECUR_FUZZ_CHECK(t->file_offset <= size && t->n_bytes <= size - t->file_offset);
        }
        float v[1];
        if (t->n_elems > 0) {
            RECUR_FUZZ_CHECK(recur_tensor_read_f32(t, 0, 1, v) == RECUR_OK);
            RECUR_FUZZ_CHECK(recur_tensor_read_f32(t, t->n_elems - 1, 1, v) == RECUR_OK);
        }
        RECUR_FUZZ_CHECK(recur_tensor_read_f32(t, t->n_elems, 1, v) == RECUR_E_RANGE);
    }
}

#endif
