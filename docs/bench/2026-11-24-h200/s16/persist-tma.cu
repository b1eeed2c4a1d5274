// Can a one-byte dot product stream at the rate of its bytes if a copy engine feeds it?
//
// Session 14's persist.cu ran RWKV-7 7.2B's chain of batch-1 products (32 layers, 4 products
// a layer, each reading the one before) as launches and as one persistent kernel. In the
// persistent kernel, int8 stayed ~9 us a layer above the same bytes read with no arithmetic
// (64.4 against 55.4 us): each warp's loads wait behind its own arithmetic. This program adds
// a persistent kernel whose loads do not: in each block a producer (one thread issuing bulk
// copies, cp.async.bulk, the Hopper copy engine; or one warp issuing 16-byte cp.async) copies
// the block's rows into 16 KiB slots of shared memory, each slot completed by an mbarrier;
// every other warp (a consumer) owns a few slots, waits for each in turn, does the dot
// products from shared memory and hands the slot back. The producer runs ahead across the
// grid barriers, so the next product's first rows arrive while the consumers wait at the
// barrier and load the next x.
//
// A slot holds RR rows (int8 4, bf16 2) by 16 KiB / RR bytes of columns; a warp takes a group
// of RR rows and its slots in column order, and lane j takes chunks j, j + 32, ... of every
// row, as the launches do: every row is summed in the same order, and the program fails
// unless every output equals the launches' bit for bit.
//
// Build: nvcc -O2 -arch=sm_90 -std=c++17 persist-tma.cu -o persist-tma   (needs ../s14/persist.cu)
// Run:   ./persist-tma [consumer warps,slots a warp,mechanism] ...  e.g. ./persist-tma 5,2,0 10,1,2
//        (mechanism 0: bulk copies, whole rows in one; 1: bulk copies, one a row; 2: 16-byte
//        cp.async by all 32 lanes of the producer warp, completed by cp.async.mbarrier.arrive)
//        ONLY=int8|read|bf16 runs one format.
#define main persist_s14_main
#include "../s14/persist.cu"
#undef main

#define SLOT 16384
#define XS_BYTES (16384 * 4)

static __device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
// SPIN 1: poll with mbarrier.test_wait (never suspends); 0: mbarrier.try_wait (may suspend the
// thread until the phase completes or a time limit passes)
#ifndef SPIN
#define SPIN 1
#endif
static __device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t ok = 0;
    while (!ok) {
        if (SPIN)
            asm volatile("{ .reg .pred p; mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                         : "=r"(ok) : "r"(bar), "r"(parity) : "memory");
        else
            asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                         : "=r"(ok) : "r"(bar), "r"(parity) : "memory");
    }
}
static __device__ __forceinline__ void consumers_sync(int ncw) { asm volatile("bar.sync 1, %0;" ::"r"(ncw * 32) : "memory"); }

// the units of product p in block b: groups of RR rows (the last may be short) by column blocks
struct Units { int r0, r1, ng, ncb, cbytes; };
template <typename WT>
static __device__ __forceinline__ Units units_of(int p, int b, int nb) {
    Units u;
    range(rows_of(p), b, nb, u.r0, u.r1);
    const int RR = Shape<WT>::RR, rowbytes = cols_of(p) * (int)sizeof(WT);
    u.cbytes = SLOT / RR < rowbytes ? SLOT / RR : rowbytes;
    u.ncb = rowbytes / u.cbytes;
    u.ng = (u.r1 - u.r0 + RR - 1) / RR;
    return u;
}

template <typename WT>
__global__ void __launch_bounds__(32 * 17, 1) k_tma(Chain c, int ncw, int sw, int mech) {
    extern __shared__ __align__(128) unsigned char sm[];
    float *xs = (float *)sm;
    unsigned char *ring = sm + XS_BYTES;
    const int ns = ncw * sw;  // consumer warp w owns slots w * sw .. w * sw + sw - 1
    uint64_t *full = (uint64_t *)(ring + (size_t)ns * SLOT), *empty = full + ns;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nb = gridDim.x, b = blockIdx.x;
    const int RR = Shape<WT>::RR, E = Fmt<WT>::E;
    if (threadIdx.x < ns) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(full + threadIdx.x)), "r"(mech == 2 ? 32 : 1));
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(empty + threadIdx.x)));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncthreads();

    // the producer: one thread (mech 0, 1: bulk copies) or one warp (mech 2: 16-byte cp.async)
    // streams every product's rows, in unit order
    if (warp == ncw) {
        if (lane && mech != 2) return;
        unsigned cnt[16] = {};  // units given to each consumer warp so far
        for (int l = 0; l < NL; l++)
            for (int p = 0; p < NP; p++) {
                const Units q = units_of<WT>(p, b, nb);
                const size_t rowbytes = (size_t)cols_of(p) * sizeof(WT);
                const unsigned char *W = (const unsigned char *)c.w[l][p];
                for (int g = 0; g < q.ng; g++) {
                    const int row = q.r0 + g * RR, nr = min(RR, q.r1 - row), w = g % ncw;
                    for (int cb = 0; cb < q.ncb; cb++) {
                        const unsigned k = cnt[w]++, s = w * sw + k % sw;
                        // a slot is refilled only once its warp has read it: the producer is never
                        // more than one phase ahead of a slot's consumer, and the consumer never
                        // ahead of its own slots, so parity waits are unambiguous
                        if (k >= (unsigned)sw) mbar_wait(smem_addr(empty + s), (k / sw - 1) & 1);
                        const uint32_t fb = smem_addr(full + s);
                        unsigned char *dst = ring + (size_t)s * SLOT;
                        if (mech == 2) {
                            const int cch = q.cbytes / 16;
                            for (int i = lane; i < nr * cch; i += 32) {
                                const unsigned char *src = W + (size_t)(row + i / cch) * rowbytes + (size_t)cb * q.cbytes + (size_t)(i % cch) * 16;
                                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst + (size_t)i * 16)), "l"(src) : "memory");
                            }
                            asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(fb) : "memory");
                            continue;
                        }
                        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(fb), "r"(nr * q.cbytes) : "memory");
                        if (q.ncb == 1 && mech == 0)  // whole rows: one contiguous copy
                            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                                         ::"r"(smem_addr(dst)), "l"(W + (size_t)row * rowbytes), "r"(nr * q.cbytes), "r"(fb) : "memory");
                        else
                            for (int r = 0; r < nr; r++)
                                asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                                             ::"r"(smem_addr(dst + r * q.cbytes)),
                                               "l"(W + (size_t)(row + r) * rowbytes + (size_t)cb * q.cbytes), "r"(q.cbytes), "r"(fb)
                                             : "memory");
                    }
                }
            }
        return;
    }

    // the consumers
    unsigned k = 0;  // this warp's units so far
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < NP; p++) {
            const int K = cols_of(p);
            const float *x = p ? c.a[l][p - 1] : (l ? c.a[l - 1][3] : c.x0);
            // x into shared memory with every load in flight at once (a loop of load-then-store
            // would make one round trip to L2 per 16 bytes a thread)
            for (int i = threadIdx.x * 4; i < K; i += ncw * 32 * 4)
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(xs + i)), "l"(x + i) : "memory");
            asm volatile("cp.async.wait_all;" ::: "memory");
            consumers_sync(ncw);
            const Units q = units_of<WT>(p, b, nb);
            const int cch = q.cbytes / 16;  // chunks of a row in a unit
            for (int g = warp; g < q.ng; g += ncw) {
                const int row = q.r0 + g * RR, nr = min(RR, q.r1 - row);
                float acc[RR];
#pragma unroll
                for (int r = 0; r < RR; r++) acc[r] = 0.f;
                for (int cb = 0; cb < q.ncb; cb++, k++) {
                    const unsigned s = warp * sw + k % sw;
                    mbar_wait(smem_addr(full + s), (k / sw) & 1);
                    const uint4 *slot = (const uint4 *)(ring + (size_t)s * SLOT);
                    for (int j = lane; j < cch; j += 32) {
                        const float *xj = xs + (size_t)(cb * cch + j) * E;
#pragma unroll
                        for (int r = 0; r < RR; r++)
                            if (r < nr) Fmt<WT>::dot(xj, slot[r * cch + j], acc[r]);
                    }
                    __syncwarp();
                    if (lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(empty + s)) : "memory");
                }
#pragma unroll
                for (int r = 0; r < RR; r++)
#pragma unroll
                    for (int o = 16; o; o >>= 1) acc[r] += __shfl_xor_sync(~0u, acc[r], o);
#pragma unroll
                for (int r = 0; r < RR; r++)
                    if (lane == r && r < nr) c.a[l][p][row + r] = finish<WT>(acc[r], c.s[l][p], row + r, p);
            }
            // grid barrier among the consumers (the producer never waits on it)
            consumers_sync(ncw);
            if (threadIdx.x == 0) {
                __threadfence();
                atomicAdd(c.bar, 1u);
                const unsigned target = (unsigned)(l * NP + p + 1) * nb;
                unsigned v;
                do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(c.bar) : "memory");
                while ((int)(v - target) < 0);
            }
            consumers_sync(ncw);
        }
}

template <typename WT>
static int run_tma(const char *name, double copy_gbs, int nsm, const std::vector<std::vector<int>> &cfgs) {
    Bench<WT> B(name, copy_gbs);
    Chain &c = B.c;
    cudaStream_t s = B.s;
    int bad = 0;
    B.launches();
    {   // session 14's persistent kernel with its barrier only, for the comparison
        B.clear();
        CK(cudaFuncSetAttribute(k_persist<WT>, cudaFuncAttributeMaxDynamicSharedMemorySize, 16384 * 4));
        int mode = 0, sb = 0;
        unsigned long long *tsn = nullptr;
        void *args[] = {&c, &mode, &sb, &tsn};
        const float ms = B.time([&]() {
            CK(cudaMemsetAsync(c.bar, 0, 8, s));
            CK(cudaLaunchCooperativeKernel((void *)k_persist<WT>, dim3(nsm), dim3(32 * PW), args, 16384 * 4, s));
        });
        bad |= B.report("persist (s14), barrier only", ms, true);
    }
    CK(cudaFuncSetAttribute(k_tma<WT>, cudaFuncAttributeMaxDynamicSharedMemorySize, 232448));
    for (const auto &cf : cfgs) {
        int ncw = cf[0], sw = cf[1], mech = cf[2], ns = ncw * sw;
        const size_t smb = XS_BYTES + (size_t)ns * SLOT + 16 * ns;
        if (ncw < 1 || ncw > 16 || sw < 1 || smb > 232448) { printf("| %d consumer warps, %d slots each | (does not fit) |\n", ncw, sw); continue; }
        B.clear();
        void *args[] = {&c, &ncw, &sw, &mech};
        const float ms = B.time([&]() {
            CK(cudaMemsetAsync(c.bar, 0, 8, s));
            CK(cudaLaunchCooperativeKernel((void *)k_tma<WT>, dim3(nsm), dim3(32 * (ncw + 1)), args, smb, s));
        });
        static const char *mn[3] = {"bulk copies, a unit's rows in one", "bulk copies, one a row", "16-byte cp.async by a producer warp"};
        char nm[96];
        snprintf(nm, sizeof nm, "%s: %d consumer warps, %d slots of 16 KiB each", mn[mech], ncw, sw);
        bad |= B.report(nm, ms, true);
    }
    return bad;
}

int main(int argc, char **argv) {
    cudaDeviceProp pr;
    const double gbs = copy_rate_gbs(pr);
    std::vector<std::vector<int>> cfgs = {{5, 2, 0}, {5, 2, 1}, {5, 2, 2}, {10, 1, 2}};
    if (argc > 1) {
        cfgs.clear();
        for (int i = 1; i < argc; i++) { int w = 0, k = 0, m = 0; if (sscanf(argv[i], "%d,%d,%d", &w, &k, &m) == 3 && m >= 0 && m <= 2) cfgs.push_back({w, k, m}); }
    }
    const char *only = getenv("ONLY");
    int bad = 0;
    if (!only || !strcmp(only, "int8")) bad |= run_tma<int8_t>("int8", gbs, pr.multiProcessorCount, cfgs);
    if (!only || !strcmp(only, "read")) bad |= run_tma<rd8>("read (int8 bytes, one xor a chunk)", gbs, pr.multiProcessorCount, cfgs);
    if (!only || !strcmp(only, "bf16")) bad |= run_tma<__nv_bfloat16>("bf16", gbs, pr.multiProcessorCount, cfgs);
    printf(bad ? "\nFAIL: a persistent variant's outputs differ from the launches'\n" : "\nall outputs equal\n");
    return bad;
}
