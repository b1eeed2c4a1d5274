// Does a persistent kernel take the fixed cost out of a chain of decode products?
//
// The chain is RWKV-7 7.2B's batch-1 products, 32 layers, each layer with its own weights
// (6.6 GB int8, 13 GB bf16: none from L2), every product reading the one before it:
//   P0 13120 x 4096 (r, k, v and the LoRAs' first matrices) <- previous layer's P3
//   P1  4096 x 4096 (output projection)                     <- P0's first 4096
//   P2 16384 x 4096 (FFN key, relu^2 applied)                <- P1
//   P3  4096 x 16384 (FFN value)                             <- P2
// (the LoRAs' second matrices, bf16 in every format, and the small kernels are left out).
//
// Variants, each timed over the whole chain and printed as us a layer:
//   launches  one PDL launch a product, in a CUDA graph, a warp a row, 8 MiB of the
//             product's rows asked into L2 before the wait (recur's GEMV shape);
//   persist   one cooperative kernel, one 512-thread block an SM, each block a fixed range
//             of every product's rows, a grid barrier between products;
//   +L2       the same, each block asking L2 for its next rows before the barrier;
//   +smem S   the same, each block copying (cp.async) up to S KiB of its next rows into
//             shared memory before the barrier and reading them from there after it.
// Every variant sums a row in the same order, so every output must equal the launches' bit
// for bit; the program checks that and fails otherwise.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include <cuda_bf16.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)

#define NL 32
#define NP 4
static __host__ __device__ constexpr int rows_of(int p) { return p == 0 ? 13120 : p == 2 ? 16384 : 4096; }
static __host__ __device__ constexpr int cols_of(int p) { return p == 3 ? 16384 : 4096; }
#define U 8           // chunks of 16 bytes in flight per lane
#ifndef PW
#define PW 16         // warps in a persistent block
#endif
#define SEPW 8        // warps in a launched block

struct Chain {
    const void *w[NL][NP];   // weights, row-major, rows of cols_of(p) elements
    const float *s[NL][NP];  // int8 row scales
    float *a[NL][NP];        // outputs; the input of (l, p) is a[l][p-1] or a[l-1][3] (or x0)
    const float *x0;
    unsigned *bar;           // grid barrier: count, generation
};

static __device__ __forceinline__ float i8f(uint32_t w, int i) {
    return __uint_as_float(__byte_perm(w ^ 0x80808080u, 0x4b000000u, 0x7440u + (unsigned)i)) - 8388736.0f;
}
template <typename WT> struct Fmt;
template <> struct Fmt<int8_t> {
    static const int E = 16;
    static __device__ __forceinline__ void dot(const float *x, uint4 u, float &acc) {
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 16; e += 4) {
            float4 t = *(const float4 *)(x + e);
            acc = fmaf(t.x, i8f(w[e / 4], 0), acc); acc = fmaf(t.y, i8f(w[e / 4], 1), acc);
            acc = fmaf(t.z, i8f(w[e / 4], 2), acc); acc = fmaf(t.w, i8f(w[e / 4], 3), acc);
        }
    }
};
// "read": the int8 matrices' bytes, folded by one xor a chunk: what streaming them costs
struct rd8 { uint8_t b; };
template <> struct Fmt<rd8> {
    static const int E = 16;
    static __device__ __forceinline__ void dot(const float *x, uint4 u, float &acc) {
        acc += __uint_as_float((u.x ^ u.y ^ u.z ^ u.w) & 0x3f7fffffu) * x[0];
    }
};
template <> struct Fmt<__nv_bfloat16> {
    static const int E = 8;
    static __device__ __forceinline__ void dot(const float *x, uint4 u, float &acc) {
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 8; e += 4) {
            float4 t = *(const float4 *)(x + e);
            acc = fmaf(t.x, __uint_as_float(w[e / 2] << 16), acc); acc = fmaf(t.y, __uint_as_float(w[e / 2] & 0xffff0000u), acc);
            acc = fmaf(t.z, __uint_as_float(w[e / 2 + 1] << 16), acc); acc = fmaf(t.w, __uint_as_float(w[e / 2 + 1] & 0xffff0000u), acc);
        }
    }
};

// RR rows' dot products by one warp, sharing each load of x: lane j takes chunks j, j+32, ...
// of every row, UC of them a row in flight (recur's GEMV shape: int8 4 rows x 4 chunks, bf16
// 2 x 4). SMEM: the rows are in shared memory (same chunk order, so the same bits).
template <typename WT> struct Shape;
#ifndef UC8
#define UC8 4
#endif
#ifndef RR8
#define RR8 4
#endif
#ifndef PIPE8
#define PIPE8 0
#endif
template <> struct Shape<int8_t> { static const int RR = RR8, UC = UC8, PIPE = PIPE8; };
template <> struct Shape<rd8> { static const int RR = RR8, UC = UC8, PIPE = PIPE8; };
template <> struct Shape<__nv_bfloat16> { static const int RR = 2, UC = 4, PIPE = 0; };
template <typename WT, bool SMEM, int RR, int UC>
static __device__ __forceinline__ void load_round(uint4 (&v)[UC][RR], const uint4 *row0, int nch, int c0) {
#pragma unroll
    for (int u = 0; u < UC; u++)
#pragma unroll
        for (int r = 0; r < RR; r++) v[u][r] = SMEM ? row0[(size_t)r * nch + c0 + 32 * u] : __ldcs(row0 + (size_t)r * nch + c0 + 32 * u);
}
// PIPE: the next round's loads are issued before this round's arithmetic (same order of sums)
template <typename WT, bool SMEM>
static __device__ __forceinline__ void rows_dot(const uint4 *row0, int nch, const float *x, int lane, float *acc) {
    const int E = Fmt<WT>::E, RR = Shape<WT>::RR, UC = Shape<WT>::UC;
#pragma unroll
    for (int r = 0; r < RR; r++) acc[r] = 0.f;
    uint4 v[UC][RR];
    if (Shape<WT>::PIPE) load_round<WT, SMEM, RR, UC>(v, row0, nch, lane);
    for (int c0 = lane; c0 < nch; c0 += 32 * UC) {
        uint4 w[UC][RR];
        if (Shape<WT>::PIPE) {
            if (c0 + 32 * UC < nch) load_round<WT, SMEM, RR, UC>(w, row0, nch, c0 + 32 * UC);
        } else {
            load_round<WT, SMEM, RR, UC>(v, row0, nch, c0);
        }
#pragma unroll
        for (int u = 0; u < UC; u++)
#pragma unroll
            for (int r = 0; r < RR; r++) Fmt<WT>::dot(x + (c0 + 32 * u) * E, v[u][r], acc[r]);
        if (Shape<WT>::PIPE)
#pragma unroll
            for (int u = 0; u < UC; u++)
#pragma unroll
                for (int r = 0; r < RR; r++) v[u][r] = w[u][r];
    }
#pragma unroll
    for (int r = 0; r < RR; r++)
#pragma unroll
        for (int o = 16; o; o >>= 1) acc[r] += __shfl_xor_sync(~0u, acc[r], o);
}
template <typename WT>
static __device__ __forceinline__ float finish(float acc, const float *s, int row, int p) {
    float y = sizeof(WT) == 1 ? acc * s[row] : acc;
    if (p == 2) { y = fmaxf(y, 0.f); y = y * y; }
    return y;
}

// ---- one launch a product -------------------------------------------------------------
template <typename WT>
__global__ void __launch_bounds__(32 * SEPW) k_launch(const void *W, const float *s, const float *x, float *y, int R, int K, int p, long pf_bytes_per_row) {
    const int RR = Shape<WT>::RR;
    const int lane = threadIdx.x & 31, row = (blockIdx.x * SEPW + (threadIdx.x >> 5)) * RR;
    const int nch = K * (int)sizeof(WT) / 16;
    const uint4 *wr = (const uint4 *)W + (size_t)row * nch;
    if (row < R)
        for (int r = 0; r < RR; r++)
            for (long o = lane * 128; o < pf_bytes_per_row; o += 32 * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)(wr + (size_t)r * nch) + o));
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    if (row >= R) return;
    float acc[RR];
    rows_dot<WT, false>(wr, nch, x, lane, acc);
    if (lane < RR) y[row + lane] = finish<WT>(acc[lane], s, row + lane, p);
}

// ---- persistent ------------------------------------------------------------------------
static __device__ __forceinline__ unsigned long long gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}
// Grid barrier in two halves, so that a block can issue its next product's staging copies
// between arriving and waiting. bar[0] counts arrivals and only grows (the host clears it
// before each launch): the n-th barrier is passed once it reaches n * nb.
static __device__ __forceinline__ void grid_arrive(unsigned *bar, unsigned long long *tp) {
    __syncthreads();
    if (threadIdx.x == 0) {
        if (tp) tp[1] = gtime();
        __threadfence();
        atomicAdd(bar, 1u);
    }
}
static __device__ __forceinline__ void grid_wait(const unsigned *bar, unsigned target) {
    if (threadIdx.x == 0) {
        unsigned v;
        do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(bar) : "memory");
        while ((int)(v - target) < 0);
    }
    __syncthreads();
}
static __device__ __forceinline__ void range(int R, int b, int nb, int &r0, int &r1) {
    r0 = (int)((long)R * b / nb);
    r1 = (int)((long)R * (b + 1) / nb);
}
// mode 0: barrier only; 1: L2 prefetch of the next rows; 2: next rows into shared memory
template <typename WT>
__global__ void __launch_bounds__(32 * PW, 1) k_persist(Chain c, int mode, int stage_bytes, unsigned long long *ts) {
    extern __shared__ uint4 smem[];
    float *xs = (float *)smem;                    // 16384 floats
    uint4 *st = smem + 16384 * 4 / 16;            // stage_bytes
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nb = gridDim.x, b = blockIdx.x;
    int staged = 0;                               // rows of this block's range staged for (l, p)
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < NP; p++) {
            const int R = rows_of(p), K = cols_of(p), nch = K * (int)sizeof(WT) / 16;
            const float *x = p ? c.a[l][p - 1] : (l ? c.a[l - 1][3] : c.x0);
            for (int i = threadIdx.x * 4; i < K; i += blockDim.x * 4) *(float4 *)(xs + i) = __ldcg((const float4 *)(x + i));
            asm volatile("cp.async.wait_all;" ::: "memory");
            __syncthreads();
            unsigned long long *tp = ts ? ts + ((size_t)(l * NP + p) * nb + b) * 3 : nullptr;
            if (tp && threadIdx.x == 0) tp[0] = gtime();
            int r0, r1;
            range(R, b, nb, r0, r1);
            const uint4 *W = (const uint4 *)c.w[l][p];
            // groups of RR rows; the last group of a range may reach into the next block's rows
            // (then it computes them too, and writes only its own); staged groups are whole
            const int RR = Shape<WT>::RR;
            for (int i = warp * RR; i < r1 - r0; i += PW * RR) {
                const int row = min(r0 + i, R - RR);
                float acc[RR];
                if (i < staged) rows_dot<WT, true>(st + (size_t)i * nch, nch, xs, lane, acc);
                else rows_dot<WT, false>(W + (size_t)row * nch, nch, xs, lane, acc);
#pragma unroll
                for (int r = 0; r < RR; r++)
                    if (lane == r && row + r >= r0 + i && row + r < r1) c.a[l][p][row + r] = finish<WT>(acc[r], c.s[l][p], row + r, p);
            }
            grid_arrive(c.bar, tp);
            staged = 0;
            const int nl = p == NP - 1 ? l + 1 : l, np = (p + 1) % NP;
            if (nl < NL && mode) {
                const int nch2 = cols_of(np) * (int)sizeof(WT) / 16;
                int q0, q1;
                range(rows_of(np), b, nb, q0, q1);
                const uint4 *W2 = (const uint4 *)c.w[nl][np] + (size_t)q0 * nch2;
                const int rows = min(q1 - q0, stage_bytes / (nch2 * 16)) / Shape<WT>::RR * Shape<WT>::RR;
                const long nbytes = (long)rows * nch2 * 16;
                if (mode == 1) {
                    for (long o = threadIdx.x * 128L; o < nbytes; o += blockDim.x * 128L)
                        asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)W2 + o));
                } else {
                    for (long i = threadIdx.x; i < nbytes / 16; i += blockDim.x) {
                        const unsigned d = (unsigned)__cvta_generic_to_shared(st + i);
                        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(W2 + i) : "memory");
                    }
                    asm volatile("cp.async.commit_group;" ::: "memory");
                    staged = rows;
                }
            }
            grid_wait(c.bar, (unsigned)(l * NP + p + 1) * nb);
            if (tp && threadIdx.x == 0) tp[2] = gtime();
        }
}

__global__ void k_fill(uint32_t *p, size_t n, uint32_t seed, int bf16, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
        if (bf16) {
            uint32_t h2 = h * 747796405u + 2891336453u;
            float a = ((h & 0xffff) / 65535.f * 2.f - 1.f) * amp, c = ((h2 >> 16) / 65535.f * 2.f - 1.f) * amp;
            p[i] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16(a)) | ((uint32_t)__bfloat16_as_ushort(__float2bfloat16(c)) << 16);
        } else {
            p[i] = h & 0x7f7f7f7fu ^ ((h >> 1) & 0x80808080u);  // codes in -127..127 (no -128)
        }
    }
}

// The chain's buffers, the launches (the reference for the bits) and the timing and checking
// that every variant shares. Owns the buffers and the stream.
template <typename WT>
struct Bench {
    static const int it = 10;  // timed runs of the whole chain
    Chain c;
    size_t total = 0;  // bytes of matrices (and int8 row scales)
    double floor_us;
    std::vector<void *> allocs;
    std::vector<float> ref, out;
    cudaStream_t s;
    cudaEvent_t e0, e1;

    Bench(const char *name, double copy_gbs) {
        for (int l = 0; l < NL; l++)
            for (int p = 0; p < NP; p++) {
                const size_t n = (size_t)rows_of(p) * cols_of(p) * sizeof(WT);
                void *w; CK(cudaMalloc(&w, n)); allocs.push_back(w);
                const float amp = 1.7320508f / sqrtf((float)cols_of(p)) * (p == 3 ? 0.8f : 1.f);
                k_fill<<<1024, 256>>>((uint32_t *)w, n / 4, 0x9e3779b9u * (l * NP + p + 1), sizeof(WT) == 2, amp);
                c.w[l][p] = w;
                total += n;
                std::vector<float> sc(rows_of(p), 1.f / (73.3f * sqrtf((float)cols_of(p))) * (p == 3 ? 0.8f : 1.f));
                float *sd; CK(cudaMalloc(&sd, rows_of(p) * 4)); allocs.push_back(sd);
                CK(cudaMemcpy(sd, sc.data(), rows_of(p) * 4, cudaMemcpyHostToDevice));
                c.s[l][p] = sd;
                if (sizeof(WT) == 1) total += rows_of(p) * 4;
                float *a; CK(cudaMalloc(&a, rows_of(p) * 4)); allocs.push_back(a);
                c.a[l][p] = a;
            }
        std::vector<float> hx(4096);
        for (int i = 0; i < 4096; i++) hx[i] = sinf(0.37f * i) * 1.3f;
        float *x0; CK(cudaMalloc(&x0, 4096 * 4)); allocs.push_back(x0);
        CK(cudaMemcpy(x0, hx.data(), 4096 * 4, cudaMemcpyHostToDevice));
        c.x0 = x0;
        unsigned *bar; CK(cudaMalloc(&bar, 8)); CK(cudaMemset(bar, 0, 8)); allocs.push_back(bar);
        c.bar = bar;
        CK(cudaDeviceSynchronize());
        floor_us = total / copy_gbs / 1e3 / NL;
        printf("\n%s: %.2f GB of matrices, floor at %.0f GB/s: %.2f us a layer\n", name, total / 1e9, copy_gbs, floor_us);
        printf("| variant | us a layer | GB/s | of the copy rate | over the floor, us a layer | outputs == launches |\n|---|---|---|---|---|---|\n");
        CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    }
    ~Bench() {
        CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
        CK(cudaStreamDestroy(s));
        for (void *p : allocs) CK(cudaFree(p));
    }
    void grab(std::vector<float> &v) {
        v.clear();
        for (int l = 0; l < NL; l++) for (int p = 0; p < NP; p++) {
            size_t o = v.size(); v.resize(o + rows_of(p));
            CK(cudaMemcpy(v.data() + o, c.a[l][p], rows_of(p) * 4, cudaMemcpyDeviceToHost));
        }
    }
    void clear() { for (int l = 0; l < NL; l++) for (int p = 0; p < NP; p++) CK(cudaMemset(c.a[l][p], 0xff, rows_of(p) * 4)); }
    // one run of the chain to warm up, then it timed: ms in all
    template <typename F> float time(F once) {
        once(); CK(cudaStreamSynchronize(s));
        CK(cudaEventRecord(e0, s));
        for (int i = 0; i < it; i++) once();
        CK(cudaEventRecord(e1, s));
        CK(cudaStreamSynchronize(s));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
        return ms;
    }
    // prints a row; with check, compares the outputs with the launches' and returns 1 if they differ
    int report(const char *v, float ms, bool check) {
        const double us = ms * 1e3 / it / NL;
        int eq = -1;
        if (check) { grab(out); eq = out.size() == ref.size() && !memcmp(out.data(), ref.data(), ref.size() * 4); }
        printf("| %s | %.2f | %.0f | %.1f%% | %.2f | %s |\n", v, us, total / NL / us / 1e3, 100.0 * floor_us / us, us - floor_us, eq < 0 ? "(reference)" : eq ? "yes" : "NO");
        fflush(stdout);
        return eq == 0;
    }
    // one PDL launch a product, in a CUDA graph: times it and keeps its outputs as the reference
    void launches() {
        clear();
        cudaGraph_t g; cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        for (int l = 0; l < NL; l++)
            for (int p = 0; p < NP; p++) {
                const int R = rows_of(p), K = cols_of(p);
                const float *x = p ? c.a[l][p - 1] : (l ? c.a[l - 1][3] : c.x0);
                cudaLaunchConfig_t cfg = {}; cfg.gridDim = dim3((R + SEPW * Shape<WT>::RR - 1) / (SEPW * Shape<WT>::RR)); cfg.blockDim = dim3(32 * SEPW); cfg.stream = s;
                cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
                cfg.attrs = at; cfg.numAttrs = 1;
                const long pf = (8L << 20) / R;
                CK(cudaLaunchKernelEx(&cfg, k_launch<WT>, (const void *)c.w[l][p], c.s[l][p], x, c.a[l][p], R, K, p, pf));
            }
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        CK(cudaGraphLaunch(ge, s)); CK(cudaStreamSynchronize(s));
        grab(ref);
        report("launches (PDL, graph)", time([&]() { CK(cudaGraphLaunch(ge, s)); }), false);
        CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g));
    }
};

template <typename WT>
static int run(const char *name, double copy_gbs, int nsm, const std::vector<int> &stage_kib) {
    Bench<WT> B(name, copy_gbs);
    Chain &c = B.c;
    cudaStream_t s = B.s;
    int bad = 0;
    B.launches();
    // persistent
    struct V { int mode, kib; };
    std::vector<V> vs = {{0, 0}, {1, 64}, {1, 160}};
    for (int k : stage_kib) vs.push_back({2, k});
    const size_t smax = 16384 * 4 + 160 * 1024;
    unsigned long long *tsd; CK(cudaMalloc(&tsd, (size_t)NL * NP * nsm * 3 * 8)); B.allocs.push_back(tsd);
    CK(cudaFuncSetAttribute(k_persist<WT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smax));
    for (const V &v : vs) {
        B.clear();
        const size_t sm = 16384 * 4 + (size_t)v.kib * 1024;
        int mode = v.mode, sb = v.kib * 1024;
        unsigned long long *tsn = nullptr;
        void *args[] = {&c, &mode, &sb, &tsn};
        const float ms = B.time([&]() {
            CK(cudaMemsetAsync(c.bar, 0, 8, s));
            CK(cudaLaunchCooperativeKernel((void *)k_persist<WT>, dim3(nsm), dim3(32 * PW), args, sm, s));
        });
        char nm[64];
        if (v.mode == 0) snprintf(nm, sizeof nm, "persist, barrier only");
        else if (v.mode == 1) snprintf(nm, sizeof nm, "persist +L2 %d KiB a block", v.kib);
        else snprintf(nm, sizeof nm, "persist +smem %d KiB a block", v.kib);
        bad |= B.report(nm, ms, true);
        // one more run with time stamps: where a product's time goes
        void *args2[] = {&c, &mode, &sb, &tsd};
        CK(cudaMemsetAsync(c.bar, 0, 8, s));
        CK(cudaLaunchCooperativeKernel((void *)k_persist<WT>, dim3(nsm), dim3(32 * PW), args2, sm, s));
        CK(cudaStreamSynchronize(s));
        std::vector<unsigned long long> h((size_t)NL * NP * nsm * 3);
        CK(cudaMemcpy(h.data(), tsd, h.size() * 8, cudaMemcpyDeviceToHost));
        for (int p = 0; p < NP; p++) {
            double sp = 0, tail = 0, bar = 0, first = 0;
            for (int l = 1; l < NL; l++) {
                const unsigned long long *q = &h[(size_t)(l * NP + p) * nsm * 3];
                unsigned long long s0 = ~0ull, s1 = 0, e0 = ~0ull, e1 = 0, b1 = 0;
                std::vector<unsigned long long> ends;
                for (int b = 0; b < nsm; b++) {
                    s0 = std::min(s0, q[3 * b]); s1 = std::max(s1, q[3 * b]);
                    e0 = std::min(e0, q[3 * b + 1]); e1 = std::max(e1, q[3 * b + 1]); b1 = std::max(b1, q[3 * b + 2]);
                    ends.push_back(q[3 * b + 1]);
                }
                std::sort(ends.begin(), ends.end());
                sp += (e1 - s0) / 1e3; tail += (e1 - ends[nsm / 2]) / 1e3; bar += (b1 - e1) / 1e3; first += (s1 - s0) / 1e3;
            }
            const double n = NL - 1, bytes = (double)rows_of(p) * cols_of(p) * sizeof(WT);
            printf("|   P%d %5d x %5d | first to last block's end %.2f us (%.0f GB/s) | starts spread %.2f | last end - median end %.2f | last end to the last block past the barrier %.2f |\n",
                   p, rows_of(p), cols_of(p), sp / n, bytes / (sp / n) / 1e3, first / n, tail / n, bar / n);
        }
    }
    return bad;
}

// The device's copy rate: 1 GiB device to device, counting read + write (GB/s); prints it
static double copy_rate_gbs(cudaDeviceProp &pr) {
    int dev = 0; CK(cudaSetDevice(dev));
    CK(cudaGetDeviceProperties(&pr, dev));
    const size_t n = 1ull << 30;
    void *a, *b; CK(cudaMalloc(&a, n)); CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 10; i++) CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
    const double gbs = 2.0 * n * 10 / (ms * 1e-3) / 1e9;
    CK(cudaFree(a)); CK(cudaFree(b));
    CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
    printf("%s, %d SMs, copy rate %.0f GB/s (read + write)\n", pr.name, pr.multiProcessorCount, gbs);
    return gbs;
}

int main(int argc, char **argv) {
    cudaDeviceProp pr;
    const double gbs = copy_rate_gbs(pr);
    std::vector<int> kib = {32, 64, 96, 128, 160};
    if (argc > 1) { kib.clear(); for (int i = 1; i < argc; i++) kib.push_back(atoi(argv[i])); }
    const char *only = getenv("ONLY");  // int8, read or bf16: that format alone
    int bad = 0;
    if (!only || !strcmp(only, "int8")) bad |= run<int8_t>("int8", gbs, pr.multiProcessorCount, kib);
    if (only && !strcmp(only, "read")) bad |= run<rd8>("read (int8 bytes, one xor a chunk)", gbs, pr.multiProcessorCount, kib);
    if (!only || !strcmp(only, "bf16")) bad |= run<__nv_bfloat16>("bf16", gbs, pr.multiProcessorCount, kib);
    printf(bad ? "\nFAIL: a persistent variant's outputs differ from the launches'\n" : "\nall outputs equal\n");
    return bad;
}
