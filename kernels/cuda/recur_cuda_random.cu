/* recur_cuda_random.cu: virtual-checkpoint weights generated on the GPU (benchmarks at the
 * 7B shapes without 14-28 GB of files or host-side generation). Element i of a tensor is
 * recur_virtual_value(seed, i, lo, hi) from worker/recur_model_files.h, computed here with
 * the same integer steps, so the device holds exactly the values a host read would give
 * (then rounded to the storage dtype). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "recur_cuda_random.h"

__device__ static float virtual_value(uint64_t seed, uint64_t i, float lo, float hi) {
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return lo + (hi - lo) * (float)((double)(z >> 40) * 0x1.0p-24);
}

__global__ static void fill_bf16(__nv_bfloat16 *out, uint64_t n, uint64_t seed, float lo, float hi) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(virtual_value(seed, i, lo, hi));
}

__global__ static void fill_f32(float *out, uint64_t n, uint64_t seed, float lo, float hi) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
        out[i] = virtual_value(seed, i, lo, hi);
}

extern "C" int recur_cuda_fill_virtual(void *dst, int bf16, uint64_t n, uint64_t seed, float lo, float hi,
                                       cudaStream_t stream) {
    const int threads = 256;
    uint64_t want = (n + threads - 1) / threads;
    int blocks = (int)(want < 65536 ? (want ? want : 1) : 65536); /* grid-stride beyond this */
    if (bf16)
        fill_bf16<<<blocks, threads, 0, stream>>>((__nv_bfloat16 *)dst, n, seed, lo, hi);
    else
        fill_f32<<<blocks, threads, 0, stream>>>((float *)dst, n, seed, lo, hi);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
