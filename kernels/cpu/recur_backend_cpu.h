/* recur_backend_cpu.h: the CPU backend: plain C, fp32 everywhere. It is the reference
 * every other backend is tested against, and a full backend for machines without a GPU. */
#ifndef RECUR_BACKEND_CPU_H
#define RECUR_BACKEND_CPU_H

#include "recur_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* *out owns its table; free with recur_backend_free(). */
recur_status_t recur_backend_cpu_init(recur_backend_t **out);

#ifdef __cplusplus
}
#endif
#endif
