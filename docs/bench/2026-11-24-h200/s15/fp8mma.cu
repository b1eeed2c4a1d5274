// Can a batch-1 FP8 product with activations quantized to e4m3 (W8A8) run at the speed of
// reading its bytes, through tensor cores?
//
// The weights stay row-major codes, the layout recur already keeps (cuBLASLt's prefill GEMM
// reads the same bytes). No reordering is needed for mma.sync m16n8k32 e4m3: any
// permutation of k applied to both operands leaves a dot product unchanged. So lane (g, t)
// of a warp loads 16 contiguous bytes of row g and 16 of row g + 8 at byte 16t of each
// 64-byte block of k. They are the A fragments of two MMAs. Lanes 0-3 load x's matching 16
// bytes as B (column 0 = the one batch row); the other lanes give zeros. A block of 8 warps
// takes 16 rows, each warp a contiguous eighth of k, and the warps' sums meet in shared
// memory. That is two 16-byte loads and two MMAs a lane per 64 bytes of two rows: about 0.03
// instructions a weight, against ~3 for recur's CUDA-core GEMV.
//
// Variants, each timed as recur's bench_gemv_cuda times its products: a CUDA graph of 64
// back-to-back PDL launches, over enough copies of the matrix (>= 1 GiB) that none is in L2.
//   read U  the same loads, folded by xor (what streaming the bytes costs in this shape);
//   mma U   the MMAs;
//   U = 64-byte blocks of k in flight a lane (2 x U loads of 16 bytes).
// The MMA's output is checked against an fp32 dot product of the decoded codes: the
// worst |difference| / sum |terms| is printed and must stay below 1e-5.
//
// Build: nvcc -O2 -arch=sm_90 -std=c++17 fp8mma.cu -o fp8mma
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <cmath>
#include <algorithm>
#include <cuda_runtime.h>
#include <cuda_fp8.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)

#define WARPS 8

static __device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t a0, const uint32_t a1, const uint32_t a2,
                                                const uint32_t a3, const uint32_t b0, const uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
static __device__ __forceinline__ uint4 ld_cs(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

template <bool MMA, int U>
__global__ void __launch_bounds__(WARPS * 32) k_fp8(const uint8_t *__restrict__ W, const float *__restrict__ rs,
                                                     const uint8_t *__restrict__ xq, float xscale, float *__restrict__ y,
                                                     int K, long pf_bytes_per_row) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.x * 16;
    // as recur's GEMVs: ask L2 for part of the rows before waiting on the kernel ahead
    if (warp == 0 && lane < 16)
        for (long o = 0; o < pf_bytes_per_row; o += 128)
            asm volatile("prefetch.global.L2 [%0];" ::"l"(W + (size_t)(row0 + lane) * K + o));
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    const int nkb = K / 64, kb0 = warp * nkb / WARPS, kb1 = (warp + 1) * nkb / WARPS;
    const uint4 *ra = (const uint4 *)(W + (size_t)(row0 + g) * K) + t;
    const uint4 *rb = (const uint4 *)(W + (size_t)(row0 + g + 8) * K) + t;
    const uint4 *xv = (const uint4 *)xq + t;
    float d[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    uint32_t fold = 0;
    for (int kb = kb0; kb < kb1; kb += U) {
        uint4 A[U], B[U], X[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (kb + u < kb1) {
                A[u] = ld_cs(ra + (size_t)(kb + u) * 4);
                B[u] = ld_cs(rb + (size_t)(kb + u) * 4);
                X[u] = g == 0 ? __ldg(xv + (size_t)(kb + u) * 4) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
        for (int u = 0; u < U; u++)
            if (kb + u < kb1) {
                if (MMA) {
                    mma_e4m3(d[u & 1], A[u].x, B[u].x, A[u].y, B[u].y, X[u].x, X[u].y);
                    mma_e4m3(d[u & 1], A[u].z, B[u].z, A[u].w, B[u].w, X[u].z, X[u].w);
                } else {
                    fold ^= A[u].x ^ A[u].y ^ A[u].z ^ A[u].w ^ B[u].x ^ B[u].y ^ B[u].z ^ B[u].w ^ X[u].x;
                }
            }
    }
    if (!MMA) d[0][0] = d[0][2] = __uint_as_float(fold & 0x3f7fffffu);
    __shared__ float red[WARPS][16];
    if (t == 0) {  // column 0 of C: rows g (d[.][0]) and g + 8 (d[.][2])
        red[warp][g] = d[0][0] + d[1][0];
        red[warp][g + 8] = d[0][2] + d[1][2];
    }
    __syncthreads();
    if (threadIdx.x < 16) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) s += red[w][threadIdx.x];
        y[row0 + threadIdx.x] = s * rs[row0 + threadIdx.x] * xscale;
    }
}

// reference: fp32 dot product of the decoded codes, and sum |terms|, a warp a row
__global__ void k_ref(const uint8_t *W, const float *rs, const uint8_t *xq, float xscale, float *y, float *mag, int R, int K) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= R) return;
    float s = 0.f, m = 0.f;
    for (int k = lane; k < K; k += 32) {
        __nv_fp8_e4m3 a, b;
        a.__x = W[(size_t)row * K + k];
        b.__x = xq[k];
        const float p = (float)a * (float)b;
        s += p;
        m += fabsf(p);
    }
    for (int o = 16; o; o >>= 1) { s += __shfl_xor_sync(~0u, s, o); m += __shfl_xor_sync(~0u, m, o); }
    if (lane == 0) { y[row] = s * rs[row] * xscale; mag[row] = m * fabsf(rs[row] * xscale); }
}

__global__ void k_fill(uint32_t *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
        // e4m3 codes without NaN (S.1111.111) and with exponents <= 12 (|v| < 2^6): a
        // spread of magnitudes like real weights' codes
        uint32_t v = h & 0xe7e7e7e7u;
        p[i] = v;
    }
}

struct Shape { const char *what; int R, K; };

template <bool MMA, int U>
static double time_variant(const std::vector<uint8_t *> &w, const float *rs, const uint8_t *xq, float *y, int R, int K) {
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaGraph_t g; cudaGraphExec_t ge;
    const int calls = 64;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < calls; i++) {
        cudaLaunchConfig_t cfg = {}; cfg.gridDim = dim3(R / 16); cfg.blockDim = dim3(WARPS * 32); cfg.stream = s;
        cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at; cfg.numAttrs = 1;
        const long pf = std::min((long)K, (8L << 20) / R);
        CK(cudaLaunchKernelEx(&cfg, k_fp8<MMA, U>, (const uint8_t *)w[i % w.size()], rs, xq, 0.01f, y, K, pf));
    }
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphLaunch(ge, s)); CK(cudaStreamSynchronize(s));
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    const int reps = 10;
    CK(cudaEventRecord(e0, s));
    for (int r = 0; r < reps; r++) CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(e1, s)); CK(cudaStreamSynchronize(s));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g)); CK(cudaStreamDestroy(s));
    return ms * 1e3 / (reps * calls);
}

int main() {
    cudaDeviceProp pr; CK(cudaGetDeviceProperties(&pr, 0));
    const size_t n = 1ull << 30;
    void *a, *b; CK(cudaMalloc(&a, n)); CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 10; i++) CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
    const double copy = 2.0 * n * 10 / (ms * 1e-3) / 1e9;
    CK(cudaFree(a)); CK(cudaFree(b));
    printf("%s, %d SMs, copy rate %.0f GB/s (read + write)\n\n", pr.name, pr.multiProcessorCount, copy);
    printf("| shape | variant | us | GB/s | of the copy rate |\n|---|---|---|---|---|\n");
    const Shape shapes[] = {{"4096 x 4096", 4096, 4096}, {"13120 x 4096", 13120, 4096}, {"16384 x 4096", 16384, 4096},
                            {"4096 x 16384", 4096, 16384}, {"12288 x 4096", 12288, 4096}, {"65536 x 4096", 65536, 4096}};
    int bad = 0;
    for (const Shape &sh : shapes) {
        const size_t bytes = (size_t)sh.R * sh.K;
        const int copies = (int)std::max<size_t>(2, ((1ull << 30) + bytes - 1) / bytes);
        std::vector<uint8_t *> w(copies);
        for (int c = 0; c < copies; c++) {
            CK(cudaMalloc(&w[c], bytes));
            k_fill<<<1024, 256>>>((uint32_t *)w[c], bytes / 4, 0x9e3779b9u * (c + 1));
        }
        std::vector<float> hrs(sh.R);
        for (int r = 0; r < sh.R; r++) hrs[r] = 0.001f * (1.f + (r % 7) * 0.1f);
        float *rs, *y, *yr, *mag; uint8_t *xq;
        CK(cudaMalloc(&rs, sh.R * 4)); CK(cudaMalloc(&y, sh.R * 4)); CK(cudaMalloc(&yr, sh.R * 4)); CK(cudaMalloc(&mag, sh.R * 4));
        CK(cudaMalloc(&xq, sh.K));
        k_fill<<<64, 256>>>((uint32_t *)xq, sh.K / 4, 12345u);
        CK(cudaMemcpy(rs, hrs.data(), sh.R * 4, cudaMemcpyHostToDevice));
        CK(cudaDeviceSynchronize());
        // correctness of the MMA form, against the reference, on copy 0
        k_ref<<<(sh.R + 7) / 8, 256>>>(w[0], rs, xq, 0.01f, yr, mag, sh.R, sh.K);
        k_fp8<true, 4><<<sh.R / 16, WARPS * 32>>>(w[0], rs, xq, 0.01f, y, sh.K, 0);
        CK(cudaDeviceSynchronize());
        std::vector<float> hy(sh.R), hyr(sh.R), hm(sh.R);
        CK(cudaMemcpy(hy.data(), y, sh.R * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hyr.data(), yr, sh.R * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hm.data(), mag, sh.R * 4, cudaMemcpyDeviceToHost));
        double worst = 0;
        for (int r = 0; r < sh.R; r++) {
            const double e = fabs((double)hy[r] - hyr[r]) / std::max(1e-30, (double)hm[r]);
            if (!(e <= worst)) worst = e;
        }
        if (!(worst < 1e-5)) bad = 1;
        struct V { const char *name; double us; };
        const V vs[] = {{"read U=4", time_variant<false, 4>(w, rs, xq, y, sh.R, sh.K)},
                        {"mma U=4", time_variant<true, 4>(w, rs, xq, y, sh.R, sh.K)},
                        {"read U=8", time_variant<false, 8>(w, rs, xq, y, sh.R, sh.K)},
                        {"mma U=8", time_variant<true, 8>(w, rs, xq, y, sh.R, sh.K)}};
        for (const V &v : vs) {
            const double gbs = bytes / v.us / 1e3;
            printf("| %s | %s | %.2f | %.0f | %.1f%% |\n", sh.what, v.name, v.us, gbs, 100.0 * gbs / copy);
        }
        printf("|   %s: MMA form against the fp32 reference: worst %.2e (bound 1e-5) %s |\n", sh.what, worst, worst < 1e-5 ? "ok" : "FAIL");
        fflush(stdout);
        for (uint8_t *p : w) CK(cudaFree(p));
        CK(cudaFree(rs)); CK(cudaFree(y)); CK(cudaFree(yr)); CK(cudaFree(mag)); CK(cudaFree(xq));
    }
    printf(bad ? "\nFAIL\n" : "\nall MMA outputs within bound\n");
    return bad;
}
