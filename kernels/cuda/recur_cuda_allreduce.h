/* recur_cuda_allreduce.h: a one-shot all-reduce (sum) of fp32 vectors among the GPUs of
 * one host that can write each other's memory (NVLink or PCIe peer access, through CUDA IPC
 * handles), for the small vectors of tensor-parallel decode.
 *
 * Why not NCCL for these: a batch-1 decode step of a 7B model runs 64 all-reduces of 16 KiB;
 * NCCL takes ~8-11 us for each on 2 x H200 (../shared/DEVICE.md), most of it protocol, not
 * bytes; this kernel 3-4 us (docs/benchmarks.md, 2026-11-24). Here one kernel per call stores this rank's vector straight into every peer's
 * buffer, each pair of floats beside the call's number in one 16-byte line (so a reader
 * knows a line has arrived without a fence or a separate flag), waits until its own buffer
 * holds every peer's lines of this call and sums them in rank order. So every rank gets
 * the same bits, and the sum does not depend on timing.
 *
 * Each rank exposes one device allocation to its peers: [2][nranks][max_floats / 2] lines
 * of {x, call, y, call}; the two halves alternate by call, so a peer already in the next
 * call never overwrites what this rank is still summing. A local call counter in device
 * memory makes a call recorded in a CUDA graph count the same way as an eager one. Every
 * rank of the group must issue the same calls (same n) in the same order, as with any
 * collective. On sm_90+ the kernel is launched with programmatic dependent launch, like
 * the backend's own kernels (RECUR_PDL=0 turns both off).
 *
 * A peer that never arrives (a dead rank) does not hang the device: a wait gives up after
 * RECUR_CUDA_AR_WAIT_S seconds and raises a flag the host reads (recur_cuda_ar_timed_out);
 * the results of that call are then wrong and the object is unusable.
 *
 * Ownership: a recur_cuda_ar_t owns its exposed allocation, its peers' mappings and its
 * counters; free it on every rank after the stream it ran on has drained.
 * Thread-safety: one thread (the one that owns the stream) uses an object. */
#ifndef RECUR_CUDA_ALLREDUCE_H
#define RECUR_CUDA_ALLREDUCE_H

#include <stddef.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECUR_CUDA_AR_MAX_RANKS 8
#define RECUR_CUDA_AR_MAX_BLOCKS 64
#define RECUR_CUDA_AR_HANDLE_BYTES 64   /* sizeof(cudaIpcMemHandle_t) */
#define RECUR_CUDA_AR_WAIT_S 60

typedef struct recur_cuda_ar recur_cuda_ar_t;

/* Allocates this rank's exposed buffer on `device` for vectors of up to max_floats and
 * writes its IPC handle to handle[RECUR_CUDA_AR_HANDLE_BYTES], to be sent to the peers.
 * RECUR_E_INVAL for nranks outside 2..RECUR_CUDA_AR_MAX_RANKS or rank outside 0..nranks-1;
 * RECUR_E_CUDA (logged) when the allocation or the handle fails. */
recur_status_t recur_cuda_ar_create(int device, int nranks, int rank, size_t max_floats, recur_cuda_ar_t **out,
                                    unsigned char *handle);
/* Maps the peers' buffers: handles holds nranks handles in rank order (this rank's own is
 * skipped). RECUR_E_CUDA (logged) when a peer's buffer cannot be mapped, e.g. no peer
 * access between the two GPUs or another host's handle. */
recur_status_t recur_cuda_ar_connect(recur_cuda_ar_t *ar, const unsigned char *handles);
/* 1 when a vector of n floats fits (n <= max_floats). */
int recur_cuda_ar_fits(const recur_cuda_ar_t *ar, size_t n);
/* buf[0..n) = the sum over the ranks of their buf[0..n), in place (device memory), enqueued
 * on `stream` (a cudaStream_t); returns at once. Needs recur_cuda_ar_connect first and
 * 1 <= n <= max_floats (RECUR_E_INVAL otherwise). */
recur_status_t recur_cuda_ar_run(recur_cuda_ar_t *ar, float *buf, size_t n, void *stream);
/* 1 once a wait of an earlier call gave up on a peer (read it after the stream is idle, or
 * while polling it). */
int recur_cuda_ar_timed_out(const recur_cuda_ar_t *ar);
/* NULL is a no-op. The stream that ran the calls must be idle. */
void recur_cuda_ar_free(recur_cuda_ar_t *ar);

#ifdef __cplusplus
}
#endif
#endif
