// Cost of same-address atomics per block at chain-launch sizes (docs/benchmarks.md, 2026-11-24 s12). nvcc -O2 -arch=sm_90 atomics.cu
#include <cstdio>
__global__ void k_none(unsigned *c, int n) { if (threadIdx.x == 0 && blockIdx.x == 9999999) c[0] = 1; }
__global__ void k_one(unsigned *c, int n) { if (threadIdx.x == 0) atomicAdd(c, 1u); }
__global__ void k_three(unsigned *c, int n) {
  __shared__ int t;
  if (threadIdx.x == 0) t = atomicAdd(c, 1u);
  __syncthreads();
  if (threadIdx.x == 0) { __threadfence(); atomicAdd(c + 32, 1u); __threadfence(); if (atomicAdd(c + 64, 1u) == gridDim.x - 1) { c[0] = 0; c[32] = 0; c[64] = 0; } }
}
__global__ void k_spread(unsigned *c, int n) { if (threadIdx.x == 0) atomicAdd(c + 32 * (blockIdx.x % 64), 1u); }
int main() {
  unsigned *c; cudaMalloc(&c, 1 << 20); cudaMemset(c, 0, 1 << 20);
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  for (int blocks : {256, 1024, 2048, 4096}) {
    for (int threads : {128, 256}) {
      void (*ks[])(unsigned *, int) = {k_none, k_one, k_three, k_spread};
      const char *nm[] = {"none", "one atomic", "ticket+done+exit", "one atomic, 64 lines"};
      for (int i = 0; i < 4; i++) {
        for (int w = 0; w < 3; w++) ks[i]<<<blocks, threads>>>(c, 0);
        cudaEventRecord(a);
        for (int r = 0; r < 100; r++) ks[i]<<<blocks, threads>>>(c, 0);
        cudaEventRecord(b); cudaEventSynchronize(b);
        float ms; cudaEventElapsedTime(&ms, a, b);
        printf("%5d blocks x %3d threads  %-22s %7.2f us/launch\n", blocks, threads, nm[i], ms * 10);
      }
    }
  }
  return 0;
}
