/* recur_cuda_random.h: filling device buffers with virtual-checkpoint values (see
 * recur_cuda_random.cu). Private to kernels/cuda. */
#ifndef RECUR_CUDA_RANDOM_H
#define RECUR_CUDA_RANDOM_H

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst: n elements, bf16 when bf16 != 0 else fp32; enqueued on stream. 0 on success. */
int recur_cuda_fill_virtual(void *dst, int bf16, uint64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
