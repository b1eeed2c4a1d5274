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

recur_status_t recur_loader_upload_vec(recur_loader_t *ld, const recur_tensor_info_t *t, int64_t n, float **out) {
    RECUR_ASSERT((size_t)n <= ld->tmp_floats);
    RECUR_TRY(recur_tensor_read_f32(t, 0, n, ld->tmp));
    *out = ld->b->iface.alloc(ld->b, (size_t)n * sizeof(float));
    if (!*out) return RECUR_E_NOMEM;
    return ld->b->iface.upload(ld->b, *out, ld->tmp, (size_t)n * sizeof(float));
}

recur_status_t recur_loader_vec(recur_loader_t *ld, const char *name, int64_t n, float **out) {
    const recur_tensor_info_t *t = recur_loader_get(ld, name, 1);
    if (!t) return RECUR_E_FORMAT;
    if (!(t->n_dims >= 1 && t->shape[t->n_dims - 1] == n && t->n_elems == n)) {
        char want[64];
        snprintf(want, sizeof want, "[%lld] (or [1,1,%lld])", (long long)n, (long long)n);
        return recur_loader_shape_error(ld, t, want);
    }
    return recur_loader_upload_vec(ld, t, n, out);
}

recur_status_t recur_loader_mat(recur_loader_t *ld, const char *name, int64_t rows, int64_t cols, int transpose,
                                recur_weight_t *w) {
    const recur_tensor_info_t *t = recur_loader_get(ld, name, 1);
    if (!t) return RECUR_E_FORMAT;
    if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        char want[64];
        snprintf(want, sizeof want, "[%lld,%lld]", (long long)rows, (long long)cols);
        return recur_loader_shape_error(ld, t, want);
    }
    if (!t->data && ld->b->iface.weight_random) /* virtual: values made where they will live */
        return ld->b->iface.weight_random(ld->b, transpose ? cols : rows, transpose ? rows : cols, t->virt_seed,
                                          t->virt_lo, t->virt_hi, w);
    RECUR_ASSERT((size_t)(rows * cols) <= ld->tmp_floats);
    RECUR_TRY(recur_tensor_read_f32(t, 0, rows * cols, ld->tmp));
    if (!transpose) return ld->b->iface.weight_upload(ld->b, ld->tmp, rows, cols, w);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) ld->tmp2[j * rows + i] = ld->tmp[i * cols + j];
    return ld->b->iface.weight_upload(ld->b, ld->tmp2, cols, rows, w);
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
