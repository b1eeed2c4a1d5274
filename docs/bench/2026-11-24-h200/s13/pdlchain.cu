// How far ahead can PDL-launched kernels run when each triggers its dependents before its wait?
// A chain of NK kernels; kernel 0 spins LONG_NS, the others SHORT_NS; every block records
// globaltimer at start (pre-wait), after the wait, and at the end (block 0's go to rec[k]).
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
static __device__ __forceinline__ unsigned long long gt() { unsigned long long t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
__global__ void k_chain(unsigned long long *rec, int k, int early, long long spin_ns) {
    extern __shared__ char sm[];
    unsigned long long t0 = gt();
    if (early) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (!early) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    unsigned long long t1 = gt();
    while ((long long)(gt() - t1) < spin_ns) {}
    if (threadIdx.x == 0 && spin_ns < 0) sm[0] = 1;
    unsigned long long t2 = gt();
    if (threadIdx.x == 0) {
        atomicMin(&rec[k * 4 + 0], t0);
        atomicMax(&rec[k * 4 + 1], t1);
        atomicMax(&rec[k * 4 + 2], t2);
        atomicMax(&rec[k * 4 + 3], t0);
    }
}
int main(int argc, char **argv) {
    int NK = 16, grid = argc > 1 ? atoi(argv[1]) : 132, smem = argc > 2 ? atoi(argv[2]) : 0;
    cudaStream_t s; cudaStreamCreate(&s);
    unsigned long long *rec; cudaMalloc(&rec, NK * 4 * 8);
    cudaFuncSetAttribute(k_chain, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);
    for (int early = 0; early < 2; early++) {
        for (int it = 0; it < 3; it++) {
            unsigned long long init[64 * 4];
            for (int i = 0; i < NK; i++) { init[4*i] = ~0ull; init[4*i+1] = 0; init[4*i+2] = 0; init[4*i+3] = 0; }
            cudaMemcpy(rec, init, NK * 4 * 8, cudaMemcpyHostToDevice);
            cudaDeviceSynchronize();
            for (int k = 0; k < NK; k++) {
                cudaLaunchConfig_t cfg = {}; cfg.gridDim = dim3(grid); cfg.blockDim = dim3(128); cfg.dynamicSmemBytes = smem; cfg.stream = s;
                cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
                cfg.attrs = at; cfg.numAttrs = 1;
                long long spin = k == 0 ? 50000 : 2000;
                cudaLaunchKernelEx(&cfg, k_chain, rec, k, early, spin);
            }
            cudaError_t e = cudaStreamSynchronize(s);
            if (e) { printf("err %s\n", cudaGetErrorString(e)); return 1; }
            unsigned long long r[64 * 4]; cudaMemcpy(r, rec, NK * 4 * 8, cudaMemcpyDeviceToHost);
            if (it < 2) continue;
            printf("grid %d smem %d %s trigger: us relative to kernel 0's first start (first start / last start / wait released / end)\n", grid, smem, early ? "EARLY" : "late");
            for (int k = 0; k < NK; k++)
                printf("  k%-2d %8.2f %8.2f %8.2f %8.2f\n", k, (r[4*k] - r[0]) / 1e3, (r[4*k+3] - r[0]) / 1e3, (r[4*k+1] - r[0]) / 1e3, (r[4*k+2] - r[0]) / 1e3);
        }
    }
    return 0;
}
