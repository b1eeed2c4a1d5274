/* recur_cuda_allreduce.cu: the one-shot all-reduce over peer memory (see the header). */
#include "recur_cuda_allreduce.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "recur_log.h"

#define AR_THREADS 256
/* Spins between two looks at the clock in a wait. */
#define AR_SPINS_PER_CLOCK 1024

struct recur_cuda_ar {
    int device, nranks, rank;
    int pdl;                     /* launch with programmatic dependent launch (sm_90+, RECUR_PDL != 0) */
    size_t max_floats;
    size_t lines;                /* 16-byte lines per rank vector in the exposed buffer: max_floats / 2, rounded up */
    uint4 *mine;                 /* this rank's exposed allocation: [2][nranks][lines] */
    uint4 *base[RECUR_CUDA_AR_MAX_RANKS];   /* every rank's exposed allocation as this GPU sees it */
    int connected;
    uint32_t *calls;             /* device: [0] calls finished, [1] blocks of the current call done */
    int *timed_out_host;         /* pinned, mapped: a wait gave up */
    int *timed_out_dev;
};

typedef struct { uint4 *base[RECUR_CUDA_AR_MAX_RANKS]; } ar_bases_t;

static recur_status_t ar_cuda(cudaError_t e, const char *call, int device) {
    if (e == cudaSuccess) return RECUR_OK;
    recur_log_err("cuda all-reduce: %s on GPU %d: %s", call, device, cudaGetErrorString(e));
    return RECUR_E_CUDA;
}
#define AR_CUDA(ar, call) ar_cuda((call), #call, (ar)->device)

__device__ __forceinline__ void st_volatile_line(uint4 *p, uint4 v) {
    asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z),
                 "r"(v.w)
                 : "memory");
}
__device__ __forceinline__ uint4 ld_volatile_line(const uint4 *p) {
    uint4 v;
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p)
                 : "memory");
    return v;
}
__device__ __forceinline__ uint64_t global_ns(void) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* The low-latency line protocol (as NCCL's LL): a 16-byte line carries two floats, each
 * beside the call number e in its own 8-byte half, {x, e, y, e}, stored with one volatile
 * 16-byte store. An 8-byte half arrives whole, so a reader that sees e in both halves has
 * both values: no fence and no separate flag, one trip over the link instead of three
 * (data, the fence's acknowledgement, the flag).
 *
 * Block b of every rank handles the same lines (same n, same grid): it stores its lines
 * into slot [par][rank] of every rank's buffer, then, line by line, waits until slot
 * [par][r] of its own buffer holds call e for every r and sums them in rank order. Two
 * buffers (par = e & 1) alternate: a peer can be at most one call ahead (it cannot finish
 * call e + 1 before this rank has stored its lines of e + 1, which it does only after
 * finishing call e), so it never writes the buffer this rank is still reading.
 *
 * The call number is one for the whole group of calls, not per block: which block handles
 * a line depends on n, so a line's last writer may be another block of another call. The
 * last block of a call to finish advances it.
 *
 * PDL: every block waits (griddepcontrol.wait) before it reads buf or the call counter, so
 * the kernel ahead (which wrote buf) has completed, and an all-reduce just ahead has
 * advanced the counter; then it lets the next kernel launch. */
__global__ void __launch_bounds__(AR_THREADS)
    ar_kernel(float *buf, size_t n, ar_bases_t bases, int rank, int nranks, size_t lines, uint32_t *calls,
              int *timed_out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    __shared__ uint32_t s_e;
    const int b = blockIdx.x;
    if (threadIdx.x == 0) s_e = *(volatile uint32_t *)calls + 1;
    __syncthreads();
    const uint32_t e = s_e;
    const size_t par = e & 1u;
    const size_t n_lines = (n + 1) / 2;
    const size_t per = (n_lines + gridDim.x - 1) / gridDim.x;
    const size_t lo = (size_t)b * per, hi = lo + per < n_lines ? lo + per : n_lines;
    for (size_t i = lo + threadIdx.x; i < hi; i += AR_THREADS) {
        const float x = buf[2 * i], y = 2 * i + 1 < n ? buf[2 * i + 1] : 0.0f;
        const uint4 line = make_uint4(__float_as_uint(x), e, __float_as_uint(y), e);
        for (int r = 0; r < nranks; r++)
            st_volatile_line(bases.base[r] + (par * (size_t)nranks + (size_t)rank) * lines + i, line);
    }
    const uint4 *slots = bases.base[rank] + par * (size_t)nranks * lines;
    for (size_t i = lo + threadIdx.x; i < hi; i += AR_THREADS) {
        float sx = 0.0f, sy = 0.0f;
        for (int r = 0; r < nranks; r++) {
            const uint4 *p = slots + (size_t)r * lines + i;
            uint4 v = ld_volatile_line(p);
            if (v.y != e || v.w != e) {
                const uint64_t t0 = global_ns();
                for (uint32_t k = 1;; k++) {
                    v = ld_volatile_line(p);
                    if (v.y == e && v.w == e) break;
                    /* once one wait gave up, the others do not wait their full time too */
                    if (k % AR_SPINS_PER_CLOCK == 0 &&
                        (*(volatile int *)timed_out ||
                         global_ns() - t0 > (uint64_t)RECUR_CUDA_AR_WAIT_S * 1000000000ull)) {
                        *(volatile int *)timed_out = 1;
                        __threadfence_system();
                        break;
                    }
                }
            }
            /* rank order from rank 0's value: the same bits on every rank */
            sx = r == 0 ? __uint_as_float(v.x) : sx + __uint_as_float(v.x);
            sy = r == 0 ? __uint_as_float(v.z) : sy + __uint_as_float(v.z);
        }
        buf[2 * i] = sx;
        if (2 * i + 1 < n) buf[2 * i + 1] = sy;
    }
    __syncthreads();
    if (threadIdx.x == 0 && atomicAdd(&calls[1], 1u) == gridDim.x - 1) {
        /* every block has read calls[0] (each read it before its increment) */
        calls[1] = 0;
        calls[0] = e;
    }
}

extern "C" recur_status_t recur_cuda_ar_create(int device, int nranks, int rank, size_t max_floats,
                                                recur_cuda_ar_t **out, unsigned char *handle) {
    *out = NULL;
    if (nranks < 2 || nranks > RECUR_CUDA_AR_MAX_RANKS || rank < 0 || rank >= nranks || max_floats == 0) {
        recur_log_err("cuda all-reduce: %d ranks (rank %d) of up to %zu floats: need 2..%d ranks", nranks, rank,
                      max_floats, RECUR_CUDA_AR_MAX_RANKS);
        return RECUR_E_INVAL;
    }
    recur_cuda_ar_t *ar = (recur_cuda_ar_t *)calloc(1, sizeof *ar);
    if (!ar) return RECUR_E_NOMEM;
    ar->device = device;
    ar->nranks = nranks;
    ar->rank = rank;
    ar->max_floats = max_floats;
    ar->lines = (max_floats + 1) / 2;
    const size_t bytes = 2 * (size_t)nranks * ar->lines * sizeof(uint4);
    cudaIpcMemHandle_t h;
    int major = 0;
    recur_status_t st = AR_CUDA(ar, cudaSetDevice(device));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    /* as the backend's kernels (recur_backend_cuda.cu): sm_90+, and RECUR_PDL=0 turns it off */
    const char *pdl_env = getenv("RECUR_PDL");
    ar->pdl = major >= 9 && !(pdl_env && strcmp(pdl_env, "0") == 0);
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMalloc((void **)&ar->mine, bytes));
    /* call number 0 in every line: no call has delivered anything yet */
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMemset(ar->mine, 0, bytes));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMalloc((void **)&ar->calls, 2 * sizeof(uint32_t)));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMemset(ar->calls, 0, 2 * sizeof(uint32_t)));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaHostAlloc((void **)&ar->timed_out_host, sizeof(int), cudaHostAllocMapped));
    if (st == RECUR_OK) {
        *ar->timed_out_host = 0;
        st = AR_CUDA(ar, cudaHostGetDevicePointer((void **)&ar->timed_out_dev, ar->timed_out_host, 0));
    }
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaDeviceSynchronize());   /* the memsets, before a peer maps us */
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaIpcGetMemHandle(&h, ar->mine));
    if (st != RECUR_OK) {
        recur_cuda_ar_free(ar);
        return st;
    }
    static_assert(sizeof h == RECUR_CUDA_AR_HANDLE_BYTES, "cudaIpcMemHandle_t size");
    memcpy(handle, &h, sizeof h);
    ar->base[rank] = ar->mine;
    *out = ar;
    return RECUR_OK;
}

extern "C" recur_status_t recur_cuda_ar_connect(recur_cuda_ar_t *ar, const unsigned char *handles) {
    recur_status_t st = AR_CUDA(ar, cudaSetDevice(ar->device));
    for (int r = 0; r < ar->nranks && st == RECUR_OK; r++) {
        if (r == ar->rank || ar->base[r]) continue;
        cudaIpcMemHandle_t h;
        memcpy(&h, handles + (size_t)r * RECUR_CUDA_AR_HANDLE_BYTES, sizeof h);
        void *p = NULL;
        cudaError_t e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();   /* not sticky; leave no error behind for the next call */
            recur_log_err("cuda all-reduce: rank %d cannot map rank %d's buffer on GPU %d (cudaIpcOpenMemHandle: %s)",
                          ar->rank, r, ar->device, cudaGetErrorString(e));
            st = RECUR_E_CUDA;
            break;
        }
        ar->base[r] = (uint4 *)p;
    }
    if (st == RECUR_OK) ar->connected = 1;
    return st;
}

extern "C" int recur_cuda_ar_fits(const recur_cuda_ar_t *ar, size_t n) { return n >= 1 && n <= ar->max_floats; }

extern "C" recur_status_t recur_cuda_ar_run(recur_cuda_ar_t *ar, float *buf, size_t n, void *stream) {
    if (!ar->connected || n == 0 || n > ar->max_floats) {
        recur_log_err("cuda all-reduce: run of %zu floats on %s object (up to %zu)", n,
                      ar->connected ? "a" : "an unconnected", ar->max_floats);
        return RECUR_E_INVAL;
    }
    ar_bases_t bases;
    memcpy(bases.base, ar->base, sizeof bases.base);
    const size_t n_lines = (n + 1) / 2;
    size_t blocks = (n_lines + AR_THREADS - 1) / AR_THREADS;
    if (blocks > RECUR_CUDA_AR_MAX_BLOCKS) blocks = RECUR_CUDA_AR_MAX_BLOCKS;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)blocks);
    cfg.blockDim = dim3(AR_THREADS);
    cfg.stream = (cudaStream_t)stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = ar->pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, ar_kernel, buf, n, bases, ar->rank, ar->nranks, ar->lines, ar->calls,
                                       ar->timed_out_dev);
    if (e == cudaSuccess) e = cudaGetLastError();
    return ar_cuda(e, "launch of the all-reduce kernel", ar->device);
}

extern "C" int recur_cuda_ar_timed_out(const recur_cuda_ar_t *ar) {
    return ar && *(volatile const int *)ar->timed_out_host != 0;
}

extern "C" void recur_cuda_ar_free(recur_cuda_ar_t *ar) {
    if (!ar) return;
    (void)cudaSetDevice(ar->device);
    for (int r = 0; r < ar->nranks; r++)
        if (r != ar->rank && ar->base[r]) (void)cudaIpcCloseMemHandle(ar->base[r]);
    if (ar->mine) (void)cudaFree(ar->mine);
    if (ar->calls) (void)cudaFree(ar->calls);
    if (ar->timed_out_host) (void)cudaFreeHost(ar->timed_out_host);
    free(ar);
}
