/* recur_comm_nccl.c: the NCCL transport of recur_comm (the "cuda" backend); built only
 * with the CUDA backend and NCCL (RECUR_USE_NCCL).
 *
 * Communicators, made once by recur_comm_nccl_create:
 *   tp    one per pipeline stage over its tp ranks (ncclCommInitRank; the unique id is
 *         made by the stage's tp_rank 0 and broadcast over the stage's MPI communicator);
 *         absent when tp == 1 (every TP op is then a no-op or a copy).
 *   pipe  one over the whole world (id from world rank 0), used only for ncclSend/ncclRecv
 *         between world_rank and world_rank +- tp; absent when pp == 1.
 *         Why one world communicator rather than one per pair of neighbouring stages:
 *         one init (per-pair ones must be created in a careful order, since each rank
 *         sits in two of them and ncclCommInitRank blocks until its peers join), one set of
 *         NCCL resources per rank instead of two, and NCCL connects point-to-point
 *         channels only between the peers that actually talk (runtime connect), so the
 *         unused pairs cost nothing.
 * Every op is enqueued on the backend's stream (iface.native_stream) and returns at once;
 * ops on one stream run in order, so the TP and pipeline communicators never wait on each
 * other in a cycle as long as every rank issues its ops in the model's order.
 *
 * NVLink multicast (NVLS): nothing here asks for it (no ncclMemAlloc, no buffer
 * registration, no config); NCCL itself reads NCCL_NVLS_ENABLE from the environment,
 * which must be 0 on machines where multicast is not allowed.
 *
 * The TP all-reduce of vectors up to AR_MAX_FLOATS (decode-sized activations) goes instead
 * through kernels/cuda/recur_cuda_allreduce (one kernel over peer memory, a few us where
 * NCCL takes ~10) when every rank of the group is on one host and the GPUs can map each
 * other's memory; a self-test at create must pass first. RECUR_TP_ALLREDUCE in the
 * environment chooses: auto (default: peer memory where possible, else NCCL), p2p (peer
 * memory or fail at create), nccl (NCCL only).
 *
 * Errors: every NCCL call is checked; a failure is RECUR_E_NCCL with ncclGetErrorString,
 * ncclGetLastError, the call, rank, host and GPU in the log, and marks the transport
 * broken (later ops refuse; free aborts the communicators instead of destroying them). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "recur_comm_internal.h"
#include "recur_cuda_allreduce.h"
#include "recur_log.h"

/* Largest all-reduce that goes over peer memory: 1 MiB, a batch of 64 rows of a 4096-wide
 * model (NCCL's ring is as fast beyond that; the buffer costs 2 x tp x this per GPU). */
#define AR_MAX_FLOATS ((size_t)1 << 18)

struct recur_comm_nccl {
    recur_grid_t grid;       /* copy, for messages and peers */
    cudaStream_t stream;     /* the backend's; borrowed */
    int device;              /* the backend's CUDA device */
    char bus_id[32];         /* its PCI bus id, for messages */
    ncclComm_t tp;           /* NULL when tp == 1 */
    ncclComm_t pipe;         /* NULL when pp == 1 */
    recur_cuda_ar_t *ar;     /* the peer-memory all-reduce of the TP group; NULL: NCCL only */
    int broken;              /* an NCCL or CUDA error happened */
};

static recur_status_t nccl_check(recur_comm_nccl_t *n, ncclResult_t r, const char *call, const char *file, int line) {
    if (r == ncclSuccess) return RECUR_OK;
    const char *last = ncclGetLastError(NULL);   /* the comm argument is unused by NCCL */
    recur_log_err("NCCL error in %s (%s:%d) on rank %d of %d (host %s, GPU %d %s): %s%s%s", call, file, line,
                  (int)n->grid.world_rank, (int)n->grid.world_size, n->grid.host, n->device, n->bus_id,
                  ncclGetErrorString(r), last && *last ? "; last error: " : "", last && *last ? last : "");
    n->broken = 1;
    return RECUR_E_NCCL;
}
#define NCCL_CHECK(n, call) nccl_check((n), (call), #call, __FILE__, __LINE__)

static recur_status_t nccl_cuda_check(recur_comm_nccl_t *n, cudaError_t e, const char *call, const char *file,
                                      int line) {
    if (e == cudaSuccess) return RECUR_OK;
    recur_log_err("CUDA error in %s (%s:%d) on rank %d of %d (host %s, GPU %d %s): %s", call, file, line,
                  (int)n->grid.world_rank, (int)n->grid.world_size, n->grid.host, n->device, n->bus_id,
                  cudaGetErrorString(e));
    n->broken = 1;
    return RECUR_E_CUDA;
}
#define NCCL_CUDA_CHECK(n, call) nccl_cuda_check((n), (call), #call, __FILE__, __LINE__)

/* What a rank knows locally before any NCCL call: its stream and device. */
static recur_status_t nccl_prepare(recur_comm_nccl_t *n, recur_backend_t *b) {
    n->device = -1;
    snprintf(n->bus_id, sizeof n->bus_id, "?");
    void *stream = b->iface.native_stream ? b->iface.native_stream(b) : NULL;
    if (!stream) {
        recur_log_err("comm: backend %s on rank %d gives no device stream (iface.native_stream) for NCCL",
                      recur_backend_name(b), (int)n->grid.world_rank);
        return RECUR_E_INVAL;
    }
    n->stream = (cudaStream_t)stream;
    /* NCCL binds a communicator to the device current at init: make it the stream's. */
    RECUR_TRY(NCCL_CUDA_CHECK(n, cudaStreamGetDevice(n->stream, &n->device)));
    RECUR_TRY(NCCL_CUDA_CHECK(n, cudaSetDevice(n->device)));
    RECUR_TRY(NCCL_CUDA_CHECK(n, cudaDeviceGetPCIBusId(n->bus_id, (int)sizeof n->bus_id, n->device)));
    return RECUR_OK;
}

/* NCCL refuses (or hangs on) two ranks of one communicator on one GPU; say so plainly,
 * before any NCCL call. Every rank sees the same table, so every rank returns the same. */
typedef struct { char host[64]; char bus_id[32]; } nccl_place_t;

static recur_status_t nccl_check_placement(recur_comm_nccl_t *n, MPI_Comm world) {
    const int size = n->grid.world_size;
    nccl_place_t mine;
    memset(&mine, 0, sizeof mine);
    snprintf(mine.host, sizeof mine.host, "%s", n->grid.host);
    snprintf(mine.bus_id, sizeof mine.bus_id, "%s", n->bus_id);
    nccl_place_t *all = calloc((size_t)size, sizeof *all);
    recur_status_t st = recur_comm_agree_on(world, all ? RECUR_OK : RECUR_E_NOMEM);
    if (st == RECUR_OK)
        st = RECUR_COMM_MPI(MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, world));
    for (int i = 0; st == RECUR_OK && i < size; i++)
        for (int j = i + 1; j < size; j++)
            if (strcmp(all[i].host, all[j].host) == 0 && strcmp(all[i].bus_id, all[j].bus_id) == 0) {
                if (n->grid.world_rank == 0)
                    recur_log_err("comm: ranks %d and %d on host %s would share GPU %s; NCCL needs one GPU per "
                                  "rank: launch at most as many ranks per host as it has GPUs (this host has %d "
                                  "ranks)",
                                  i, j, all[i].host, all[i].bus_id, (int)n->grid.local_size);
                st = RECUR_E_INVAL;
                break;
            }
    free(all);
    return st;
}

/* ncclCommInitRank over the members of `group` (an MPI communicator, rank r of it being
 * NCCL rank r): member 0 makes the unique id and broadcasts it with a flag, so that if
 * ncclGetUniqueId fails nobody enters ncclCommInitRank (which would wait forever). */
static recur_status_t nccl_init_comm(recur_comm_nccl_t *n, MPI_Comm group, int nranks, int rank, ncclComm_t *out,
                                     const char *what) {
    struct { int ok; ncclUniqueId id; } msg;
    memset(&msg, 0, sizeof msg);
    if (rank == 0) msg.ok = NCCL_CHECK(n, ncclGetUniqueId(&msg.id)) == RECUR_OK;
    RECUR_TRY(RECUR_COMM_MPI(MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, 0, group)));
    if (!msg.ok) {
        if (rank != 0)
            recur_log_err("comm: the %s NCCL communicator of rank %d: its first rank could not make a unique id", what,
                          (int)n->grid.world_rank);
        n->broken = 1;
        return RECUR_E_NCCL;
    }
    RECUR_TRY(NCCL_CUDA_CHECK(n, cudaSetDevice(n->device)));
    recur_status_t st = NCCL_CHECK(n, ncclCommInitRank(out, nranks, msg.id, rank));
    if (st != RECUR_OK) *out = NULL;
    return st;
}

/* One tiny exchange along the pipeline (and one all-reduce in each TP group) at create:
 * NCCL connects peers lazily, at their first operation, and that connection step blocks
 * the calling host thread until the peer makes its own. Done here, in one agreed order,
 * it can never wait on a peer that is busy in an MPI call of the control plane; it also
 * makes a broken link fail at create, not at the first step. */
static recur_status_t nccl_warm_up(recur_comm_nccl_t *n) {
    float *scratch = NULL;
    RECUR_TRY(NCCL_CUDA_CHECK(n, cudaMalloc((void **)&scratch, 2 * sizeof(float))));
    recur_status_t st = NCCL_CUDA_CHECK(n, cudaMemsetAsync(scratch, 0, 2 * sizeof(float), n->stream));
    if (st == RECUR_OK && n->tp)
        st = NCCL_CHECK(n, ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, n->tp, n->stream));
    if (st == RECUR_OK && n->pipe) {
        const int first = n->grid.pp_rank == 0, last = n->grid.pp_rank == n->grid.pp - 1;
        /* A group, so a middle stage posts its receive and its send together. */
        st = NCCL_CHECK(n, ncclGroupStart());
        if (st == RECUR_OK) {
            recur_status_t s1 = RECUR_OK, s2 = RECUR_OK;
            if (!first)
                s1 = NCCL_CHECK(n, ncclRecv(scratch + 1, 1, ncclFloat32, n->grid.world_rank - n->grid.tp, n->pipe,
                                            n->stream));
            if (!last)
                s2 = NCCL_CHECK(n, ncclSend(scratch, 1, ncclFloat32, n->grid.world_rank + n->grid.tp, n->pipe,
                                            n->stream));
            /* ncclGroupEnd must match ncclGroupStart even when an op inside failed. */
            recur_status_t s3 = NCCL_CHECK(n, ncclGroupEnd());
            st = s1 != RECUR_OK ? s1 : s2 != RECUR_OK ? s2 : s3;
        }
    }
    if (st == RECUR_OK) st = recur_comm_nccl_synchronize(n);
    /* cudaFree waits for the device, so the scratch is not freed under a running op. */
    recur_status_t st_free = NCCL_CUDA_CHECK(n, cudaFree(scratch));
    return st != RECUR_OK ? st : st_free;
}

/* k of element i in self-test call `call`: it also depends on the call, so a line left from
 * another call would show */
static int ar_selftest_k(size_t i, size_t call) { return (int)((i + 7 * call) % 251 + 1); }

/* Known sums through the peer-memory all-reduce, both buffers of each size (an odd length,
 * one hidden vector, the largest) and sizes that alternate (a line's last writer then
 * belongs to another call with another split into blocks): rank r contributes (r + 1) * k
 * with small integers k, so the sum is exact and known. */
static recur_status_t ar_selftest(recur_comm_nccl_t *n) {
    static const size_t sizes[] = {AR_MAX_FLOATS, 4096, 3, AR_MAX_FLOATS, 4096, 1001};
    const int tp = n->grid.tp;
    float *h = malloc(AR_MAX_FLOATS * sizeof(float)), *d = NULL;
    recur_status_t st = h ? NCCL_CUDA_CHECK(n, cudaMalloc((void **)&d, AR_MAX_FLOATS * sizeof(float))) : RECUR_E_NOMEM;
    for (size_t si = 0; si < 2 * sizeof sizes / sizeof sizes[0] && st == RECUR_OK; si++) {
        const size_t len = sizes[si % (sizeof sizes / sizeof sizes[0])];
        for (size_t i = 0; i < len; i++) h[i] = (float)((n->grid.tp_rank + 1) * ar_selftest_k(i, si));
        st = NCCL_CUDA_CHECK(n, cudaMemcpyAsync(d, h, len * sizeof(float), cudaMemcpyHostToDevice, n->stream));
        if (st == RECUR_OK) st = recur_cuda_ar_run(n->ar, d, len, n->stream);
        if (st == RECUR_OK)
            st = NCCL_CUDA_CHECK(n, cudaMemcpyAsync(h, d, len * sizeof(float), cudaMemcpyDeviceToHost, n->stream));
        if (st == RECUR_OK) st = recur_comm_nccl_synchronize(n);
        for (size_t i = 0; i < len && st == RECUR_OK; i++) {
            const int want = tp * (tp + 1) / 2 * ar_selftest_k(i, si);
            if (h[i] != (float)want) {
                recur_log_err("comm: the peer-memory all-reduce's self-test failed on rank %d: element %zu of %zu is "
                              "%g, not %d",
                              (int)n->grid.world_rank, i, len, h[i], want);
                st = RECUR_E_CUDA;
            }
        }
    }
    if (d) (void)NCCL_CUDA_CHECK(n, cudaFree(d));
    free(h);
    return st;
}

/* Sets up n->ar for the TP group (collective over tp_comm; every member takes the same
 * path and ends with the same n->ar set or NULL). RECUR_OK with n->ar NULL when the
 * environment asks for NCCL or, in auto mode, when peer memory cannot be used; an error
 * when RECUR_TP_ALLREDUCE=p2p and it cannot, or when MPI fails. */
static recur_status_t ar_setup(recur_comm_nccl_t *n, MPI_Comm tp_comm) {
    const char *env = getenv("RECUR_TP_ALLREDUCE");
    int mode = 1;   /* 0 nccl, 1 auto, 2 p2p */
    if (env && *env) {
        if (strcmp(env, "nccl") == 0) mode = 0;
        else if (strcmp(env, "p2p") == 0) mode = 2;
        else if (strcmp(env, "auto") != 0) {
            recur_log_err("comm: RECUR_TP_ALLREDUCE=%s on rank %d: expected auto, p2p or nccl", env,
                          (int)n->grid.world_rank);
            mode = -1;
        }
    }
    int lo = mode, hi = mode;
    RECUR_TRY(RECUR_COMM_MPI(MPI_Allreduce(&mode, &lo, 1, MPI_INT, MPI_MIN, tp_comm)));
    RECUR_TRY(RECUR_COMM_MPI(MPI_Allreduce(&mode, &hi, 1, MPI_INT, MPI_MAX, tp_comm)));
    if (lo < 0 || (lo == 0 && hi == 2)) {
        if (lo >= 0 && n->grid.tp_rank == 0)
            recur_log_err("comm: the ranks of a tensor-parallel group were given different RECUR_TP_ALLREDUCE");
        return RECUR_E_INVAL;
    }
    if (lo == 0) return RECUR_OK;
    const int forced = hi == 2, tp = n->grid.tp;
    const char *why = NULL;
    const size_t host_n = sizeof n->grid.host;
    char *hosts = calloc((size_t)tp, host_n);
    unsigned char *handles = calloc((size_t)tp, RECUR_CUDA_AR_HANDLE_BYTES);
    unsigned char mine[RECUR_CUDA_AR_HANDLE_BYTES];
    recur_status_t st = recur_comm_agree_on(tp_comm, hosts && handles ? RECUR_OK : RECUR_E_NOMEM);
    if (st == RECUR_OK) {
        char host[sizeof n->grid.host] = {0};
        snprintf(host, sizeof host, "%s", n->grid.host);
        st = RECUR_COMM_MPI(MPI_Allgather(host, (int)host_n, MPI_CHAR, hosts, (int)host_n, MPI_CHAR, tp_comm));
        for (int r = 1; st == RECUR_OK && r < tp && !why; r++)
            if (strncmp(hosts, hosts + (size_t)r * host_n, host_n) != 0) why = "its ranks are on more than one host";
    }
    if (st == RECUR_OK && tp > RECUR_CUDA_AR_MAX_RANKS && !why) why = "it has more ranks than the kernel handles";
    if (st == RECUR_OK && !why) {
        st = recur_comm_agree_on(tp_comm, recur_cuda_ar_create(n->device, tp, n->grid.tp_rank, AR_MAX_FLOATS,
                                                               &n->ar, mine));
        if (st == RECUR_OK)
            st = RECUR_COMM_MPI(MPI_Allgather(mine, RECUR_CUDA_AR_HANDLE_BYTES, MPI_BYTE, handles,
                                              RECUR_CUDA_AR_HANDLE_BYTES, MPI_BYTE, tp_comm));
        if (st == RECUR_OK) st = recur_comm_agree_on(tp_comm, recur_cuda_ar_connect(n->ar, handles));
        if (st == RECUR_OK) st = recur_comm_agree_on(tp_comm, ar_selftest(n));
        if (st != RECUR_OK && st != RECUR_E_MPI) {
            why = "a GPU could not map its peers' memory or the self-test failed (see above)";
            st = RECUR_OK;
        }
    }
    free(hosts);
    free(handles);
    if (st == RECUR_OK && why) {
        if (n->ar) (void)recur_comm_nccl_synchronize(n);
        recur_cuda_ar_free(n->ar);
        n->ar = NULL;
        n->broken = 0;   /* the fallback is NCCL, which saw no error */
        if (n->grid.tp_rank == 0)
            recur_log(forced ? RECUR_LOG_ERROR : RECUR_LOG_INFO,
                      "comm: tensor-parallel group of rank %d: no all-reduce over peer memory, %s%s",
                      (int)n->grid.world_rank, why,
                      forced ? " (RECUR_TP_ALLREDUCE=p2p)" : "; NCCL does them all");
        return forced ? RECUR_E_UNSUPPORTED : RECUR_OK;
    }
    return st;
}

recur_status_t recur_comm_nccl_create(const recur_grid_t *g, recur_backend_t *b, MPI_Comm world, MPI_Comm tp_comm,
                                      recur_comm_nccl_t **out) {
    *out = NULL;
    recur_comm_nccl_t *n = calloc(1, sizeof *n);
    recur_status_t st = RECUR_E_NOMEM;
    if (n) {
        n->grid = *g;
        st = nccl_prepare(n, b);
    }
    /* Each step ends with a vote over the world, so every rank holds the same st and a
     * rank that failed never leaves the others blocked in the next collective
     * (ncclCommInitRank waits for all its members). What no vote can prevent: a rank that
     * fails inside ncclCommInitRank while its peers wait there; it then returns an error,
     * and the launcher (mpirun) ends the job when that rank exits non-zero. */
    st = recur_comm_agree_on(world, st);
    if (st == RECUR_OK) st = recur_comm_agree_on(world, nccl_check_placement(n, world));
    if (st == RECUR_OK && g->tp > 1)
        st = recur_comm_agree_on(world, nccl_init_comm(n, tp_comm, g->tp, g->tp_rank, &n->tp, "tensor-parallel"));
    if (st == RECUR_OK && g->pp > 1)
        st = recur_comm_agree_on(world, nccl_init_comm(n, world, g->world_size, g->world_rank, &n->pipe, "pipeline"));
    if (st == RECUR_OK) st = recur_comm_agree_on(world, nccl_warm_up(n));
    if (st == RECUR_OK && g->tp > 1) st = recur_comm_agree_on(world, ar_setup(n, tp_comm));
    if (st != RECUR_OK) {
        if (n) n->broken = 1;   /* abort, not destroy: peers may be in any state */
        recur_comm_nccl_free(n);
        return st;
    }
    if (g->world_rank == 0) {
        int version = 0;
        if (ncclGetVersion(&version) != ncclSuccess) version = 0;   /* only for the message below */
        const char *nvls = getenv("NCCL_NVLS_ENABLE");
        /* ncclGetVersion: major * 10000 + minor * 100 + patch since NCCL 2.9. */
        recur_log_info("comm: NCCL %d.%d.%d (built with %d.%d.%d), NCCL_NVLS_ENABLE=%s%s", version / 10000,
                       version / 100 % 100, version % 100, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, nvls ? nvls : "(unset)",
                       nvls ? "" : ": NCCL may use NVLink multicast where the system has it; set "
                                   "NCCL_NVLS_ENABLE=0 where that is not allowed");
        if (n->ar)
            recur_log_info("comm: tensor-parallel all-reduces of up to %zu KiB over peer memory (one kernel), "
                           "NCCL above",
                           AR_MAX_FLOATS * sizeof(float) / 1024);
    }
    *out = n;
    return RECUR_OK;
}

static void nccl_release(recur_comm_nccl_t *n, ncclComm_t *comm) {
    if (!*comm) return;
    /* A communicator that saw an error may have operations stuck on the device: only
     * ncclCommAbort is safe then. Otherwise destroy (after the stream has drained). */
    ncclResult_t r = n->broken ? ncclCommAbort(*comm) : ncclCommDestroy(*comm);
    if (r != ncclSuccess) (void)NCCL_CHECK(n, r);
    *comm = NULL;
}

void recur_comm_nccl_free(recur_comm_nccl_t *n) {
    if (!n) return;
    if (!n->broken && (n->tp || n->pipe)) (void)recur_comm_nccl_synchronize(n);   /* sets broken on failure */
    if (n->device >= 0) (void)cudaSetDevice(n->device);
    nccl_release(n, &n->tp);
    nccl_release(n, &n->pipe);
    recur_cuda_ar_free(n->ar);
    free(n);
}

static recur_status_t nccl_usable(recur_comm_nccl_t *n, const char *op) {
    if (!n->broken) return RECUR_OK;
    recur_log_err("comm: %s on rank %d: an earlier NCCL error left the communicators unusable", op,
                  (int)n->grid.world_rank);
    return RECUR_E_NCCL;
}

recur_status_t recur_comm_nccl_allreduce(recur_comm_nccl_t *n, float *buf, size_t count) {
    RECUR_TRY(nccl_usable(n, "tp_allreduce"));
    if (n->ar && recur_cuda_ar_fits(n->ar, count)) {
        recur_status_t st = recur_cuda_ar_run(n->ar, buf, count, n->stream);
        if (st != RECUR_OK) n->broken = 1;
        return st;
    }
    return NCCL_CHECK(n, ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, n->tp, n->stream));
}

const char *recur_comm_nccl_allreduce_kind(const recur_comm_nccl_t *n) { return n->ar ? "p2p" : "nccl"; }

recur_status_t recur_comm_nccl_allgather(recur_comm_nccl_t *n, const float *send, float *recv, size_t count) {
    RECUR_TRY(nccl_usable(n, "tp_allgather"));
    /* NCCL's in-place form is exactly send == recv + rank * count, which recur_comm.h
     * allows; any other overlap was refused by the caller. */
    return NCCL_CHECK(n, ncclAllGather(send, recv, count, ncclFloat32, n->tp, n->stream));
}

recur_status_t recur_comm_nccl_send_next(recur_comm_nccl_t *n, const void *buf, size_t n_bytes) {
    RECUR_TRY(nccl_usable(n, "pp_send_next"));
    return NCCL_CHECK(n, ncclSend(buf, n_bytes, ncclUint8, n->grid.world_rank + n->grid.tp, n->pipe, n->stream));
}

recur_status_t recur_comm_nccl_recv_prev(recur_comm_nccl_t *n, void *buf, size_t n_bytes) {
    RECUR_TRY(nccl_usable(n, "pp_recv_prev"));
    return NCCL_CHECK(n, ncclRecv(buf, n_bytes, ncclUint8, n->grid.world_rank - n->grid.tp, n->pipe, n->stream));
}

static recur_status_t nccl_async_error(recur_comm_nccl_t *n, ncclComm_t comm) {
    if (!comm) return RECUR_OK;
    ncclResult_t async = ncclSuccess;
    RECUR_TRY(NCCL_CHECK(n, ncclCommGetAsyncError(comm, &async)));
    if (async == ncclSuccess || async == ncclInProgress) return RECUR_OK;
    return nccl_check(n, async, "an enqueued NCCL operation (ncclCommGetAsyncError)", __FILE__, __LINE__);
}

/* A wait of the peer-memory all-reduce gave up: a peer never arrived (it died, or the ranks
 * stopped issuing the same all-reduces). */
static recur_status_t ar_peer_lost(recur_comm_nccl_t *n) {
    if (!recur_cuda_ar_timed_out(n->ar)) return RECUR_OK;
    recur_log_err("comm: a tensor-parallel all-reduce on rank %d (host %s, GPU %d %s) waited %d s for a peer rank "
                  "that did not arrive",
                  (int)n->grid.world_rank, n->grid.host, n->device, n->bus_id, RECUR_CUDA_AR_WAIT_S);
    n->broken = 1;
    return RECUR_E_TIMEOUT;
}

recur_status_t recur_comm_nccl_synchronize(recur_comm_nccl_t *n) {
    /* Polled rather than cudaStreamSynchronize: when a peer dies, NCCL reports it as an
     * asynchronous error while the stream would never finish (as nccl-tests does). */
    for (;;) {
        cudaError_t e = cudaStreamQuery(n->stream);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) return nccl_cuda_check(n, e, "cudaStreamQuery(backend stream)", __FILE__, __LINE__);
        RECUR_TRY(nccl_async_error(n, n->tp));
        RECUR_TRY(nccl_async_error(n, n->pipe));
        RECUR_TRY(ar_peer_lost(n));
        sched_yield();
    }
    RECUR_TRY(ar_peer_lost(n));
    RECUR_TRY(nccl_async_error(n, n->tp));
    return nccl_async_error(n, n->pipe);
}
