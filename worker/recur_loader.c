/* recur_loader.c: see recur_loader.h. */
#include "recur_loader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_log.h"

recur_status_t recur_loader_init(recur_loader_t *ld, recur_backend_t *b, const recur_model_files_t *f,
                                 const char *arch, size_t max_floats) {
    *ld = (recur_loader_t){.b = b, .f = f, .path = recur_model_files_path(f, 0), .arch = arch,
                           .tmp_floats = max_floats};
    ld->tmp = malloc(max_floats * sizeof(float));
    ld->tmp2 = malloc(max_floats * sizeof(float));
    if (!ld->tmp || !ld->tmp2) {
        recur_loader_free(ld);
        return RECUR_E_NOMEM;
    }
    return RECUR_OK;
}

void recur_loader_free(recur_loader_t *ld) {
    free(ld->tmp);
    free(ld->tmp2);
    free(ld->used);
    ld->tmp = ld->tmp2 = NULL;
    ld->used = NULL;
}

const recur_tensor_info_t *recur_loader_get(recur_loader_t *ld, const char *name, int required) {
    const recur_tensor_info_t *t = recur_model_files_find(ld->f, name);
    if (!t) {
        if (required) recur_log_err("%s: missing tensor '%s' (%s)", ld->path, name, ld->arch);
        return NULL;
    }
    if (ld->n_used == ld->cap_used) {
        int32_t cap = ld->cap_used ? 2 * ld->cap_used : 256;
        const recur_tensor_info_t **u = realloc(ld->used, (size_t)cap * sizeof *u);
        if (!u) return NULL;
        ld->used = u;
        ld->cap_used = cap;
    }
    ld->used[ld->n_used++] = t;
    ld->n_params += t->n_elems;
    return t;
}

void recur_loader_shape_str(const recur_tensor_info_t *t, char *buf, size_t n) {
    int o = snprintf(buf, n, "[");
    for (int i = 0; i < t->n_dims && o < (int)n; i++)
        o += snprintf(buf + o, n - (size_t)o, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (o < (int)n) snprintf(buf + o, n - (size_t)o, "]");
}

recur_status_t recur_loader_shape_error(const recur_loader_t *ld, const recur_tensor_info_t *t, const char *want) {
    char got[96];
    recur_loader_shape_str(t, got, sizeof got);
    recur_log_err("%s: tensor '%s' has shape %s, expected %s", ld->path, t->name, got, want);
    return RECUR_E_FORMAT;
}

/* Reads elements [first, first + n) of t as fp32, counting the checkpoint bytes read. */
static recur_status_t read_f32(recur_loader_t *ld, const recur_tensor_info_t *t, int64_t first, int64_t n, float *dst) {
    RECUR_TRY(recur_tensor_read_f32(t, first, n, dst));
    if (t->data) ld->bytes_read += n * (int64_t)recur_dtype_size(t->dtype);
    return RECUR_OK;
}

recur_status_t recur_loader_upload_part(recur_loader_t *ld, const recur_tensor_info_t *t, int64_t first, int64_t n,
                                        float **out) {
    RECUR_ASSERT((size_t)n <= ld->tmp_floats);
    RECUR_TRY(read_f32(ld, t, first, n, ld->tmp));
    *out = ld->b->iface.alloc(ld->b, (size_t)n * sizeof(float));
    if (!*out) return RECUR_E_NOMEM;
    return ld->b->iface.upload(ld->b, *out, ld->tmp, (size_t)n * sizeof(float));
}

recur_status_t recur_loader_upload_vec(recur_loader_t *ld, const recur_tensor_info_t *t, int64_t n, float **out) {
    return recur_loader_upload_part(ld, t, 0, n, out);
}

recur_status_t recur_loader_vec_part(recur_loader_t *ld, const char *name, int64_t n, int64_t first, int64_t count,
                                     float **out) {
    RECUR_ASSERT(first >= 0 && count >= 1 && first + count <= n);
    const recur_tensor_info_t *t = recur_loader_get(ld, name, 1);
    if (!t) return RECUR_E_FORMAT;
    if (!(t->n_dims >= 1 && t->shape[t->n_dims - 1] == n && t->n_elems == n)) {
        char want[64];
        snprintf(want, sizeof want, "[%lld] (or [1,1,%lld])", (long long)n, (long long)n);
        return recur_loader_shape_error(ld, t, want);
    }
    return recur_loader_upload_part(ld, t, first, count, out);
}

recur_status_t recur_loader_vec(recur_loader_t *ld, const char *name, int64_t n, float **out) {
    return recur_loader_vec_part(ld, name, n, 0, n, out);
}

/* The upload of a block, counted in ld->matrix_bytes. */
static recur_status_t counted(recur_loader_t *ld, recur_status_t st, const recur_weight_t *w) {
    if (st == RECUR_OK) ld->matrix_bytes += (int64_t)recur_weight_bytes(w);
    return st;
}

recur_status_t recur_loader_mat_block(recur_loader_t *ld, const char *name, int64_t rows, int64_t cols, int transpose,
                                      const recur_block_t *blk, recur_weight_use_t use, recur_weight_t *w) {
    const recur_tensor_info_t *t = recur_loader_get(ld, name, 1);
    if (!t) return RECUR_E_FORMAT;
    if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        char want[64];
        snprintf(want, sizeof want, "[%lld,%lld]", (long long)rows, (long long)cols);
        return recur_loader_shape_error(ld, t, want);
    }
    /* the stored matrix is [out][in] = [rows][cols], or [cols][rows] when transposed */
    const int64_t out_n = transpose ? cols : rows, in_n = transpose ? rows : cols;
    const int64_t r0 = blk->r0, nr = blk->nr, c0 = blk->c0, nc = blk->nc;
    RECUR_ASSERT(r0 >= 0 && nr >= 1 && r0 + nr <= out_n && c0 >= 0 && nc >= 1 && c0 + nc <= in_n);
    if (!t->data && ld->b->iface.weight_random) /* virtual: values made where they will live */
        return counted(ld, ld->b->iface.weight_random(ld->b, nr, nc, t->virt_seed, t->virt_lo, t->virt_hi, r0, c0,
                                                      in_n, use, w), w);
    RECUR_ASSERT((size_t)(nr * nc) <= ld->tmp_floats);
    if (!transpose) { /* file row o = stored row o: one read per row of the block (or one in all) */
        if (nc == cols) {
            RECUR_TRY(read_f32(ld, t, r0 * cols, nr * cols, ld->tmp));
        } else {
            for (int64_t o = 0; o < nr; o++) RECUR_TRY(read_f32(ld, t, (r0 + o) * cols + c0, nc, ld->tmp + o * nc));
        }
        return counted(ld, ld->b->iface.weight_upload(ld->b, ld->tmp, nr, nc, use, w), w);
    }
    /* transposed: file row i holds input i of every output; read the block's inputs
     * (columns r0.. of those rows), then transpose on the host */
    for (int64_t i = 0; i < nc; i++) RECUR_TRY(read_f32(ld, t, (c0 + i) * cols + r0, nr, ld->tmp + i * nr));
    for (int64_t i = 0; i < nc; i++)
        for (int64_t o = 0; o < nr; o++) ld->tmp2[o * nc + i] = ld->tmp[i * nr + o];
    return counted(ld, ld->b->iface.weight_upload(ld->b, ld->tmp2, nr, nc, use, w), w);
}

recur_status_t recur_loader_mat(recur_loader_t *ld, const char *name, int64_t rows, int64_t cols, int transpose,
                                recur_weight_use_t use, recur_weight_t *w) {
    const recur_block_t all = {0, transpose ? cols : rows, 0, transpose ? rows : cols};
    return recur_loader_mat_block(ld, name, rows, cols, transpose, &all, use, w);
}

void recur_loader_skip_prefix(recur_loader_t *ld, const char *prefix) {
    const size_t n = strlen(prefix);
    const int32_t nt = recur_model_files_n_tensors(ld->f);
    for (int32_t i = 0; i < nt; i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(ld->f, i);
        if (strncmp(t->name, prefix, n) == 0) (void)recur_loader_get(ld, t->name, 0);
    }
}

recur_status_t recur_loader_check_all_used(const recur_loader_t *ld) {
    int32_t n = recur_model_files_n_tensors(ld->f);
    for (int32_t i = 0; i < n; i++) {
        const recur_tensor_info_t *t = recur_model_files_tensor(ld->f, i);
        int found = 0;
        for (int32_t j = 0; j < ld->n_used && !found; j++) found = ld->used[j] == t;
        if (!found) {
            const char *hint = strstr(t->name, "s_emb") ? " (an RWKV-7a 'DeepEmbed' checkpoint?)" : "";
            recur_log_err("%s: unexpected tensor '%s'%s: this is not a plain %s checkpoint, or a variant recur "
                          "does not support", ld->path, t->name, hint, ld->arch);
            return RECUR_E_UNSUPPORTED;
        }
    }
    return RECUR_OK;
}
