/* recur_backend_cpu.h: the CPU backend: plain C, fp32 arithmetic. It is the reference
 * every other backend is tested against, and a full backend for machines without a GPU.
 * Weights are fp32, or in the int8 / fp8 modes the one-byte formats of recur_quant.h with
 * the matmul semantics recur_backend.h defines for them. */
#ifndef RECUR_BACKEND_CPU_H
#define RECUR_BACKEND_CPU_H

#include "recur_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* *out owns its table; free with recur_backend_free(). p may be NULL (f32 weights); only
 * p->weight_dtype is used (BF16 is stored as F32). RECUR_E_UNSUPPORTED for other dtypes. */
recur_status_t recur_backend_cpu_init(const recur_backend_params_t *p, recur_backend_t **out);

#ifdef __cplusplus
}
#endif
#endif
