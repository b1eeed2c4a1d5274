/* recur_cuda_allreduce.cu: the one-shot all-reduce over peer memory (see the header). */
#include "recur_cuda_allreduce.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "recur_log.h"

#define AR_THREADS 256
/* The flags sit before the data, one u32 per (block, source rank); the data starts on its
 * own page so that both buffers keep 16-byte alignment for float4 moves. */
#define AR_FLAGS_BYTES ((size_t)RECUR_CUDA_AR_MAX_BLOCKS * RECUR_CUDA_AR_MAX_RANKS * sizeof(uint32_t))
#define AR_DATA_OFF ((size_t)4096)

struct recur_cuda_ar {
    int device, nranks, rank;
    size_t stride;               /* floats per rank vector in the exposed buffer (max_floats, rounded up to 4) */
    char *mine;                  /* this rank's exposed allocation */
    char *base[RECUR_CUDA_AR_MAX_RANKS];   /* every rank's exposed allocation as this GPU sees it */
    int connected;
    uint32_t *epoch;             /* device: the calls each block has finished */
    int *timed_out_host;         /* pinned, mapped: a wait gave up */
    int *timed_out_dev;
};

typedef struct { char *base[RECUR_CUDA_AR_MAX_RANKS]; } ar_bases_t;

static recur_status_t ar_cuda(cudaError_t e, const char *call, int device) {
    if (e == cudaSuccess) return RECUR_OK;
    recur_log_err("cuda all-reduce: %s on GPU %d: %s", call, device, cudaGetErrorString(e));
    return RECUR_E_CUDA;
}
#define AR_CUDA(ar, call) ar_cuda((call), #call, (ar)->device)

__device__ __forceinline__ void st_release_sys(uint32_t *p, uint32_t v) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t ld_acquire_sys(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ uint64_t global_ns(void) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ float ar_add(float a, float b) { return a + b; }
__device__ __forceinline__ float4 ar_add(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

/* Block b of every rank handles the same slice of the vector (same n, same grid): it pushes
 * the slice into slot [par][rank] of every rank's buffer, raises flags[b][rank] = e there,
 * waits until flags[b][r] >= e here for every r, and sums slots [par][0..nranks) in rank
 * order. U is float or float4 (16-byte aligned buf, n % 4 == 0); stride in units of U. */
template <typename U>
__global__ void __launch_bounds__(AR_THREADS)
    ar_kernel(U *buf, size_t units, ar_bases_t bases, int rank, int nranks, size_t stride, uint32_t *epoch,
              int *timed_out) {
    __shared__ uint32_t s_e;
    const int b = blockIdx.x;
    if (threadIdx.x == 0) s_e = epoch[b] + 1;
    __syncthreads();
    const uint32_t e = s_e;
    const size_t par = e & 1u;
    const size_t per = (units + gridDim.x - 1) / gridDim.x;
    const size_t lo = (size_t)b * per, hi = lo + per < units ? lo + per : units;
    for (size_t i = lo + threadIdx.x; i < hi; i += AR_THREADS) {
        const U v = buf[i];
        for (int r = 0; r < nranks; r++) {
            U *slot = (U *)(bases.base[r] + AR_DATA_OFF) + (par * (size_t)nranks + (size_t)rank) * stride;
            slot[i] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x < nranks) {
        const int r = threadIdx.x;
        /* the block's pushes (ordered before this thread by the barrier) before the flag */
        __threadfence_system();
        st_release_sys((uint32_t *)bases.base[r] + (size_t)b * RECUR_CUDA_AR_MAX_RANKS + rank, e);
        const uint32_t *f = (const uint32_t *)bases.base[rank] + (size_t)b * RECUR_CUDA_AR_MAX_RANKS + r;
        /* >= e, not == e: a fast peer may already have raised the next call's flag */
        if ((int32_t)(ld_acquire_sys(f) - e) < 0) {
            const uint64_t t0 = global_ns();
            while ((int32_t)(ld_acquire_sys(f) - e) < 0) {
                if (global_ns() - t0 > (uint64_t)RECUR_CUDA_AR_WAIT_S * 1000000000ull) {
                    *(volatile int *)timed_out = 1;
                    __threadfence_system();
                    break;
                }
            }
        }
    }
    __syncthreads();
    const U *slots = (const U *)(bases.base[rank] + AR_DATA_OFF) + par * (size_t)nranks * stride;
    for (size_t i = lo + threadIdx.x; i < hi; i += AR_THREADS) {
        /* L2, not L1: the peers wrote these lines since this SM may last have read them */
        U acc = __ldcg(slots + i);
        for (int r = 1; r < nranks; r++) acc = ar_add(acc, __ldcg(slots + (size_t)r * stride + i));
        buf[i] = acc;
    }
    if (threadIdx.x == 0) epoch[b] = e;
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
    ar->stride = (max_floats + 3) / 4 * 4;
    const size_t bytes = AR_DATA_OFF + 2 * (size_t)nranks * ar->stride * sizeof(float);
    cudaIpcMemHandle_t h;
    recur_status_t st = AR_CUDA(ar, cudaSetDevice(device));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMalloc((void **)&ar->mine, bytes));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMemset(ar->mine, 0, AR_FLAGS_BYTES));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMalloc((void **)&ar->epoch, RECUR_CUDA_AR_MAX_BLOCKS * sizeof(uint32_t)));
    if (st == RECUR_OK) st = AR_CUDA(ar, cudaMemset(ar->epoch, 0, RECUR_CUDA_AR_MAX_BLOCKS * sizeof(uint32_t)));
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
        ar->base[r] = (char *)p;
    }
    if (st == RECUR_OK) ar->connected = 1;
    return st;
}

extern "C" int recur_cuda_ar_fits(const recur_cuda_ar_t *ar, size_t n) { return n >= 1 && n <= ar->stride; }

extern "C" recur_status_t recur_cuda_ar_run(recur_cuda_ar_t *ar, float *buf, size_t n, void *stream) {
    if (!ar->connected || n == 0 || n > ar->stride) {
        recur_log_err("cuda all-reduce: run of %zu floats on %s object (up to %zu)", n,
                      ar->connected ? "a" : "an unconnected", ar->stride);
        return RECUR_E_INVAL;
    }
    ar_bases_t bases;
    memcpy(bases.base, ar->base, sizeof bases.base);
    cudaStream_t s = (cudaStream_t)stream;
    const int vec = n % 4 == 0 && ((uintptr_t)buf & 15u) == 0;
    const size_t units = vec ? n / 4 : n;
    size_t blocks = (units + AR_THREADS - 1) / AR_THREADS;
    if (blocks > RECUR_CUDA_AR_MAX_BLOCKS) blocks = RECUR_CUDA_AR_MAX_BLOCKS;
    if (vec)
        ar_kernel<float4><<<(unsigned)blocks, AR_THREADS, 0, s>>>((float4 *)buf, units, bases, ar->rank, ar->nranks,
                                                                  ar->stride / 4, ar->epoch, ar->timed_out_dev);
    else
        ar_kernel<float><<<(unsigned)blocks, AR_THREADS, 0, s>>>(buf, units, bases, ar->rank, ar->nranks, ar->stride,
                                                                 ar->epoch, ar->timed_out_dev);
    return AR_CUDA(ar, cudaGetLastError());
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
    if (ar->epoch) (void)cudaFree(ar->epoch);
    if (ar->timed_out_host) (void)cudaFreeHost(ar->timed_out_host);
    free(ar);
}
