// What an RWKV-7-like output projection (4096 x 4096 int8, batch 1) costs inside a PDL chain
// "recurrence-like kernel (64 blocks, spins SPIN ns) -> product -> small kernel", 32 layers,
// each with its own weights (537 MB: none from L2), captured into a CUDA graph.
// Variants of the product: none, registers (as recur's gemv_kernel: R=4 rows a warp, 4
// chunks per row in flight, 2 KiB of each row prefetched into L2 before the wait), staged
// (whole rows into shared memory by cp.async before the wait). Prints the per-layer cost
// (variant - none) and, for one layer, when the product's blocks started, were released
// and ended relative to the end of the kernel before it.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#define K 4096
#define N 4096
#define L 32
static __device__ __forceinline__ unsigned long long gt() { unsigned long long t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
static __device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
static __device__ __forceinline__ void pdl_go() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__global__ void k_rec(float *x, long long spin, unsigned long long *st) {
    __shared__ float sh[64][65];
    pdl_wait(); pdl_go();
    unsigned long long t = gt();
    sh[threadIdx.x][threadIdx.x] = 1.f;
    while ((long long)(gt() - t) < spin) {}
    __syncthreads();
    x[blockIdx.x * 64 + threadIdx.x] = 0.01f * (threadIdx.x + sh[threadIdx.x][threadIdx.x]);
    if (st && threadIdx.x == 0) st[blockIdx.x] = gt();
}
__global__ void k_small(const float *y, float *x) {
    pdl_wait(); pdl_go();
    float s = 0; for (int i = threadIdx.x; i < N; i += blockDim.x) s += y[i];
    for (int i = threadIdx.x; i < K; i += blockDim.x) x[i] = x[i] + 1e-6f * s;
}
static __device__ __forceinline__ float i8f(uint32_t w, int i) { return __uint_as_float(__byte_perm(w ^ 0x80808080u, 0x4b000000u, 0x7440u + (unsigned)i)) - 8388736.0f; }
static __device__ __forceinline__ void chunk(const float *x, int kb, uint4 u, float &acc) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 16; e += 4) {
        float4 t = __ldg((const float4 *)(x + kb + e));
        acc = fmaf(t.x, i8f(w[e / 4], 0), acc); acc = fmaf(t.y, i8f(w[e / 4], 1), acc);
        acc = fmaf(t.z, i8f(w[e / 4], 2), acc); acc = fmaf(t.w, i8f(w[e / 4], 3), acc);
    }
}
template <bool STAGED>
__global__ void __launch_bounds__(128) k_gemv(const float *x, const int8_t *W, float *y, int pf, unsigned long long *st) {
    extern __shared__ uint4 stage[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n0 = (blockIdx.x * 4 + warp) * 4;
    unsigned long long t0 = gt();
    const int8_t *wr[4];
    for (int r = 0; r < 4; r++) wr[r] = W + (size_t)(n0 + r) * K;
    uint4 *sl = stage + warp * 4 * 8 * 32 + lane;
    if (STAGED) {
        for (int r = 0; r < 4; r++) for (int i = 0; i < 8; i++) {
            unsigned d = (unsigned)__cvta_generic_to_shared(sl + (r * 8 + i) * 32);
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"((const uint4 *)wr[r] + lane + 32 * i) : "memory");
        }
    } else {
        for (int r = 0; r < 4; r++) for (int o = lane * 128; o < pf; o += 32 * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(wr[r] + o));
    }
    pdl_wait(); pdl_go();
    unsigned long long t1 = gt();
    float acc[4] = {0, 0, 0, 0};
    if (STAGED) {
        asm volatile("cp.async.wait_all;" ::: "memory");
        for (int i = 0; i < 8; i++) {
#pragma unroll
            for (int r = 0; r < 4; r++) chunk(x, (lane + 32 * i) * 16, sl[(r * 8 + i) * 32], acc[r]);
        }
    } else {
        for (int ch = lane; ch < K / 16; ch += 128) {
            uint4 v[4][4];
#pragma unroll
            for (int u = 0; u < 4; u++)
#pragma unroll
                for (int r = 0; r < 4; r++) v[u][r] = __ldcs((const uint4 *)wr[r] + ch + 32 * u);
#pragma unroll
            for (int u = 0; u < 4; u++)
#pragma unroll
                for (int r = 0; r < 4; r++) chunk(x, (ch + 32 * u) * 16, v[u][r], acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        for (int o = 16; o; o >>= 1) acc[r] += __shfl_xor_sync(~0u, acc[r], o);
        if (lane == 0) y[n0 + r] = acc[r] * 0.01f;
    }
    if (st && threadIdx.x == 0) { st[3 * blockIdx.x] = t0; st[3 * blockIdx.x + 1] = t1; st[3 * blockIdx.x + 2] = gt(); }
}
template <typename F, typename... A> static void launch(F f, int g, int b, size_t sm, cudaStream_t s, A... a) {
    cudaLaunchConfig_t cfg = {}; cfg.gridDim = dim3(g); cfg.blockDim = dim3(b); cfg.dynamicSmemBytes = sm; cfg.stream = s;
    cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at; cfg.numAttrs = 1; cudaLaunchKernelEx(&cfg, f, a...);
}
int main(int argc, char **argv) {
    long long spin = argc > 1 ? atoll(argv[1]) : 8000;
    cudaStream_t s; cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    int8_t *W; cudaMalloc(&W, (size_t)L * N * K); cudaMemset(W, 1, (size_t)L * N * K);
    float *x, *y; cudaMalloc(&x, K * 4); cudaMalloc(&y, N * 4); cudaMemset(x, 0, K * 4);
    unsigned long long *st; cudaMalloc(&st, 8 * 4096);
    const size_t smem = 4 * 4 * 8 * 32 * 16; /* 64 KiB */
    cudaFuncSetAttribute(k_gemv<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    const char *names[] = {"none", "registers", "staged"};
    double base = 0;
    for (int v = 0; v < 3; v++) {
        for (int stamp = 0; stamp < 2; stamp++) {
            cudaGraph_t g; cudaGraphExec_t ge;
            cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
            for (int l = 0; l < L; l++) {
                unsigned long long *sr = stamp && l == 5 ? st : nullptr, *sg = stamp && l == 5 ? st + 64 : nullptr;
                launch(k_rec, 64, 64, 0, s, x, spin, sr);
                if (v == 1) launch(k_gemv<false>, N / 16, 128, 0, s, (const float *)x, (const int8_t *)(W + (size_t)l * N * K), y, 2048, sg);
                if (v == 2) launch(k_gemv<true>, N / 16, 128, smem, s, (const float *)x, (const int8_t *)(W + (size_t)l * N * K), y, 0, sg);
                launch(k_small, 1, 1024, 0, s, (const float *)y, x);
            }
            cudaStreamEndCapture(s, &g);
            if (cudaGraphInstantiate(&ge, g, 0)) { printf("instantiate failed\n"); return 1; }
            for (int i = 0; i < 5; i++) cudaGraphLaunch(ge, s);
            cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
            cudaEventRecord(e0, s);
            const int it = 50;
            for (int i = 0; i < it; i++) cudaGraphLaunch(ge, s);
            cudaEventRecord(e1, s);
            if (cudaStreamSynchronize(s)) { printf("error %s\n", cudaGetErrorString(cudaGetLastError())); return 1; }
            float ms; cudaEventElapsedTime(&ms, e0, e1);
            const double per_layer = ms * 1e3 / it / L;
            if (!stamp) {
                if (v == 0) base = per_layer;
                printf("spin %lld ns  %-9s: %.2f us a layer, product %.2f us\n", spin, names[v], per_layer, per_layer - base);
            } else if (v) {
                std::vector<unsigned long long> h(4096); cudaMemcpy(h.data(), st, 8 * 4096, cudaMemcpyDeviceToHost);
                unsigned long long rend = *std::max_element(h.begin(), h.begin() + 64);
                unsigned long long s0 = ~0ull, s1 = 0, r0 = ~0ull, r1 = 0, e1v = 0;
                for (int b = 0; b < N / 16; b++) { unsigned long long *p = &h[64 + 3 * b]; s0 = std::min(s0, p[0]); s1 = std::max(s1, p[0]); r0 = std::min(r0, p[1]); r1 = std::max(r1, p[1]); e1v = std::max(e1v, p[2]); }
                printf("    %-9s (us from the recurrence's end): blocks started %.2f .. %.2f, released %.2f .. %.2f, last ended %.2f\n", names[v],
                       ((double)s0 - rend) / 1e3, ((double)s1 - rend) / 1e3, ((double)r0 - rend) / 1e3, ((double)r1 - rend) / 1e3, ((double)e1v - rend) / 1e3);
            }
            cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
        }
    }
    return 0;
}
