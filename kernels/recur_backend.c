/* recur_backend.c: choosing and releasing a backend. */
#include "recur_backend.h"

#include <string.h>

#include "recur_backend_cpu.h"
#ifdef RECUR_USE_CUDA
#include "recur_backend_cuda.h"
#endif
#include "recur_log.h"

recur_backend_params_t recur_backend_default_params(void) {
    return (recur_backend_params_t){.device = -1, .weight_dtype = RECUR_DTYPE_BF16};
}

recur_status_t recur_backend_init(const char *name, const recur_backend_params_t *p, recur_backend_t **out) {
    *out = NULL;
    recur_backend_params_t params = p ? *p : recur_backend_default_params();
    if (!name || strcmp(name, "cpu") == 0) return recur_backend_cpu_init(&params, out);
#ifdef RECUR_USE_CUDA
    if (strcmp(name, "cuda") == 0) return recur_backend_cuda_init(&params, out);
    recur_log_err("unknown backend '%s' (available: cpu, cuda)", name);
#else
    (void)params;
    recur_log_err("unknown backend '%s' (available: cpu; this build has no CUDA backend)", name);
#endif
    return RECUR_E_UNSUPPORTED;
}

void recur_backend_free(recur_backend_t *b) {
    if (b && b->iface.free) b->iface.free(b);
}

recur_status_t recur_backend_matmul_many(recur_backend_t *b, int32_t M, int32_t n, const recur_matmul_op_t *ops) {
    RECUR_ASSERT(n >= 0 && n <= RECUR_MATMUL_MANY_MAX);
    for (int32_t i = 0; i < n; i++) RECUR_ASSERT(ops[i].act == RECUR_ACT_NONE || !ops[i].accumulate);
    if (b->iface.matmul_many) return b->iface.matmul_many(b, M, n, ops);
    for (int32_t i = 0; i < n; i++) {
        const recur_matmul_op_t *o = &ops[i];
        RECUR_TRY(b->iface.matmul(b, o->x, o->W, M, o->y, o->accumulate));
        if (o->act != RECUR_ACT_NONE) RECUR_TRY(b->iface.act(b, o->act, o->y, (int64_t)M * o->W->rows, o->y));
    }
    return RECUR_OK;
}

recur_status_t recur_backend_mlstm_head_out(recur_backend_t *b, const recur_mlstm_args_t *a, const float *o_pre,
                                            const float *w, float eps, float *out) {
    if (b->iface.mlstm_head_out) return b->iface.mlstm_head_out(b, a, o_pre, w, eps, out);
    RECUR_TRY(b->iface.mlstm(b, a));
    return b->iface.xlstm_head_out(b, a->h, o_pre, w, a->rows.n_rows, a->n_head, a->dv, eps, out);
}

recur_status_t recur_backend_layernorm_shift_mix(recur_backend_t *b, const float *x, const float *w, const float *bias,
                                                 int32_t C, float eps, const recur_rows_t *rows,
                                                 recur_state_ref_t state, int32_t n_mix, const float *mix,
                                                 float *tmp, float *out) {
    if (b->iface.layernorm_shift_mix)
        return b->iface.layernorm_shift_mix(b, x, w, bias, C, eps, rows, state, n_mix, mix, tmp, out);
    RECUR_TRY(b->iface.layernorm(b, x, w, bias, rows->n_rows, C, eps, tmp));
    return b->iface.token_shift_mix(b, tmp, C, rows, state, n_mix, mix, out);
}

recur_status_t recur_backend_rwkv7_step(recur_backend_t *b, const recur_rwkv7_prep_args_t *p,
                                        const recur_rwkv7_wkv_args_t *w, const recur_rwkv7_out_args_t *o) {
    if (b->iface.rwkv7_step) return b->iface.rwkv7_step(b, p, w, o);
    RECUR_TRY(b->iface.rwkv7_prep(b, p));
    RECUR_TRY(b->iface.rwkv7_wkv(b, w));
    return b->iface.rwkv7_out(b, o);
}

const char *recur_backend_name(const recur_backend_t *b) {
    return b ? b->iface.name(b) : "(none)";
}
