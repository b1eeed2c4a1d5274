/* recur_backend_cuda.h: the CUDA backend (one GPU). Weights in bf16 (or fp32 for the exact
 * reference path, or the one-byte int8 / fp8 formats of recur_quant.h for projections),
 * activations and recurrent state in fp32, on one stream owned by the backend. Every op of
 * recur_backend.h is implemented on the GPU. RECUR_FP8_CUBLASLT=0 in the environment keeps
 * fp8 GEMMs above 8 rows off cuBLASLt (the bf16 tensor-core form computes the same).
 * Ownership: the backend owns its stream, cuBLAS(Lt) handles and scratch workspaces;
 * buffers from iface.alloc belong to the caller. One thread at a time. */
#ifndef RECUR_BACKEND_CUDA_H
#define RECUR_BACKEND_CUDA_H

#include "recur_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* RECUR_E_CUDA (with a message) when no device is usable. */
recur_status_t recur_backend_cuda_init(const recur_backend_params_t *p, recur_backend_t **out);

#ifdef __cplusplus
}
#endif
#endif
