// Boundary latency of PDL chains vs grid size: kernel k+1's blocks wait on kernel k. Every block
// stores its own stamps (no atomics). Kernels alternate grid sizes gA (even k) and gB (odd k),
// blockDim T; each spins SPIN ns after the wait. Prints, per boundary type, median over the chain of
//   gap_first = first release(k+1) - last end(k); gap_last = last release(k+1) - last end(k).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>
static __device__ __forceinline__ unsigned long long gt() { unsigned long long t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
__global__ void k_chain(unsigned long long *rec, int early, long long spin_ns) {
    if (early) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (!early) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    unsigned long long t1 = gt();
    while ((long long)(gt() - t1) < spin_ns) {}
    __syncthreads();
    unsigned long long t2 = gt();
    if (threadIdx.x == 0) { rec[2 * blockIdx.x] = t1; rec[2 * blockIdx.x + 1] = t2; }
}
int main(int argc, char **argv) {
    const int NK = 24;
    int gA = atoi(argv[1]), gB = atoi(argv[2]), T = atoi(argv[3]), early = atoi(argv[4]);
    long long spin = argc > 5 ? atoll(argv[5]) : 3000;
    cudaStream_t s; cudaStreamCreate(&s);
    int gmax = std::max(gA, gB);
    unsigned long long *rec; cudaMalloc(&rec, (size_t)NK * gmax * 2 * 8);
    std::vector<unsigned long long> h((size_t)NK * gmax * 2);
    for (int it = 0; it < 3; it++) {
        for (int k = 0; k < NK; k++) {
            cudaLaunchConfig_t cfg = {}; cfg.gridDim = dim3(k % 2 ? gB : gA); cfg.blockDim = dim3(T); cfg.stream = s;
            cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = at; cfg.numAttrs = 1;
            cudaLaunchKernelEx(&cfg, k_chain, rec + (size_t)k * gmax * 2, early, k == 0 ? 30000LL : spin);
        }
        if (cudaStreamSynchronize(s)) { printf("error\n"); return 1; }
    }
    cudaMemcpy(h.data(), rec, h.size() * 8, cudaMemcpyDeviceToHost);
    std::vector<double> gf[2], gl[2], span;
    for (int k = 1; k + 1 < NK; k++) {
        int g = k % 2 ? gB : gA, g1 = (k + 1) % 2 ? gB : gA;
        unsigned long long endk = 0, r0 = ~0ull, r1 = 0, s0 = ~0ull;
        for (int b = 0; b < g; b++) { endk = std::max(endk, h[((size_t)k * gmax + b) * 2 + 1]); s0 = std::min(s0, h[((size_t)k * gmax + b) * 2]); }
        for (int b = 0; b < g1; b++) { unsigned long long t = h[((size_t)(k + 1) * gmax + b) * 2]; r0 = std::min(r0, t); r1 = std::max(r1, t); }
        gf[k % 2].push_back((double)(r0 - endk) / 1e3); gl[k % 2].push_back((double)(r1 - endk) / 1e3);
    }
    for (int p = 0; p < 2; p++) {
        std::sort(gf[p].begin(), gf[p].end()); std::sort(gl[p].begin(), gl[p].end());
        printf("T=%d %s  %5d -> %5d blocks: gap to first release %.2f us, to last release %.2f us\n", T, early ? "early" : "late ",
               p ? gB : gA, p ? gA : gB, gf[p][gf[p].size() / 2], gl[p][gl[p].size() / 2]);
    }
    return 0;
}
