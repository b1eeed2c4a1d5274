/* recur_comm.h: how worker ranks find each other and exchange activations.
 *
 * Ranks are MPI processes (one per GPU on the CUDA backend; any number on one machine on
 * the CPU backend) laid out as a grid of pp pipeline stages x tp tensor-parallel ranks:
 *     world_rank = pp_rank * tp + tp_rank
 * so a stage's TP group is tp consecutive world ranks, and "the same rank of the next
 * stage" is world_rank + tp.
 *
 * One interface, two transports, chosen by the backend the communicator is created for:
 *   NCCL  (backend "cuda"): ops are enqueued on the backend's stream (so they order with the
 *          kernels and can be captured in a graph) and return at once; buffers are device
 *          memory. The NCCL unique ids travel over MPI. Nothing here turns on NVLink
 *          multicast (NVLS); NCCL reads NCCL_NVLS_ENABLE from the environment, and it
 *          must be 0 on machines where multicast is not allowed (our lent GPU machines).
 *   MPI   (any other backend): ops are blocking; buffers are the backend's (host) memory.
 * MPI is also the control plane of both: host broadcasts and barriers over the world.
 *
 * Errors: MPI runs with MPI_ERRORS_RETURN; every MPI failure becomes RECUR_E_MPI and every
 * NCCL failure RECUR_E_NCCL, with a logged message naming the call, this rank and its host.
 *
 * Ownership: recur_comm_world_init/finalize own MPI for the process; a recur_comm_t owns
 * its MPI sub-communicators and NCCL communicators, and borrows the backend (which must
 * outlive it). Thread-safety: one thread per process calls into this module. */
#ifndef RECUR_COMM_H
#define RECUR_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "recur_backend.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_grid {
    int32_t world_rank, world_size;
    int32_t tp, pp;              /* grid sizes, tp * pp == world_size         */
    int32_t tp_rank, pp_rank;    /* this rank's place                          */
    int32_t local_rank, local_size; /* among the ranks on this host (device = local_rank) */
    char    host[64];            /* this rank's host name, for messages        */
} recur_grid_t;

/* Initialises MPI for this process (MPI_Init_thread, MPI_THREAD_FUNNELED: only the thread
 * that called this one calls MPI), sets MPI_ERRORS_RETURN, and fills *grid for a tp x pp
 * layout. Call it before anything else uses MPI. RECUR_E_INVAL (with a message on rank 0)
 * when tp < 1, pp < 1 or tp * pp != the number of ranks; every rank sees the same sizes,
 * so every rank returns it and none waits for the others. After RECUR_E_INVAL, MPI stays
 * initialised and *grid still has world_rank, world_size, local_rank, local_size and host
 * (tp, pp, tp_rank and pp_rank are 0); calling again with another layout is allowed (MPI
 * is initialised only once). RECUR_E_MPI when MPI cannot start. Without mpirun this is a
 * world of one rank. If MPI was initialised by someone else, it is used as it is (and
 * world_finalize leaves it alone). argc and argv may be NULL (as MPI allows). */
recur_status_t recur_comm_world_init(int *argc, char ***argv, int32_t tp, int32_t pp, recur_grid_t *grid);
/* Finalizes MPI (once, at exit, after every recur_comm_free; safe if world_init failed or
 * was never called, and a no-op when MPI was not initialised by world_init). */
void recur_comm_world_finalize(void);
/* After a failure on one rank: take the whole job down (MPI_Abort) with exit code rc,
 * so that no peer waits forever in a collective. Without MPI it is exit(rc). */
RECUR_NORETURN void recur_comm_world_abort(int rc);

typedef struct recur_comm recur_comm_t;

/* Collective over the world: builds the TP-group and pipeline communicators of this rank
 * for backend b (NCCL for "cuda", MPI otherwise). grid is the one world_init filled (it
 * is copied). Every rank returns the same status: a failure on one rank (bad grid, no
 * device stream, NCCL init) is agreed over MPI, so no rank is left waiting. On "cuda":
 * RECUR_E_INVAL when two ranks of the job would share one GPU (NCCL cannot put two
 * ranks of a communicator on one device: launch at most as many ranks per host as it has
 * GPUs); RECUR_E_UNSUPPORTED in a build without NCCL. */
recur_status_t recur_comm_create(const recur_grid_t *grid, recur_backend_t *b, recur_comm_t **out);
/* NULL is a no-op. Waits for the ops enqueued so far; call it on every rank (NCCL
 * communicators are torn down together), before recur_comm_world_finalize. */
void recur_comm_free(recur_comm_t *c);
const recur_grid_t *recur_comm_grid(const recur_comm_t *c);
const char *recur_comm_transport(const recur_comm_t *c); /* "nccl" or "mpi" */

/* Every rank of the group calls each op with the same n, in the same order. n == 0 is a
 * no-op. The sum is fp32 in an order the transport chooses (not bitwise reproducible
 * across transports or group sizes). */
/* ---- TP group (no-ops that return RECUR_OK when tp == 1) */
/* buf[0..n) = sum over the group's ranks of buf[0..n), in place (backend memory). */
recur_status_t recur_comm_tp_allreduce(recur_comm_t *c, float *buf, size_t n);
/* How tp_allreduce moves decode-sized vectors: "none" (tp == 1), "mpi", "nccl", or "p2p"
 * (one kernel over the GPUs' peer memory, summing in rank order, so every rank of the group
 * gets the same bits; larger vectors still go through NCCL). See
 * recur_comm_nccl.c for RECUR_TP_ALLREDUCE. */
const char *recur_comm_tp_allreduce_kind(const recur_comm_t *c);
/* recv[r * n .. (r + 1) * n) = rank r's send[0..n), for every r < tp (backend memory).
 * send may be recv + tp_rank * n (in place); otherwise the two must not overlap
 * (RECUR_E_INVAL). With tp == 1 it is a copy of send into recv. */
recur_status_t recur_comm_tp_allgather(recur_comm_t *c, const float *send, float *recv, size_t n);

/* ---- pipeline: with the same tp_rank of the next / previous stage (backend memory).
 * A send is matched by the receiving stage's recv of the same size, in the same order.
 * RECUR_E_INVAL on the last stage's send / the first stage's recv (no such peer); on the
 * MPI transport RECUR_E_PROTO when the message that arrives has another size. MPI: the
 * send returns once buf may be reused (it may wait for the receiver). */
recur_status_t recur_comm_pp_send_next(recur_comm_t *c, const void *buf, size_t n_bytes);
recur_status_t recur_comm_pp_recv_prev(recur_comm_t *c, void *buf, size_t n_bytes);

/* ---- control plane over the world (host memory, blocking, MPI on both transports) */
/* buf[0..n_bytes) of rank root to every rank; RECUR_E_INVAL when root is not a rank. */
recur_status_t recur_comm_bcast_host(recur_comm_t *c, void *buf, size_t n_bytes, int32_t root);
recur_status_t recur_comm_barrier(recur_comm_t *c);
/* Every rank passes its status; all get RECUR_OK only when every rank had RECUR_OK,
 * else the status of the lowest-numbered failing rank (so all ranks agree whether a step
 * or a load worked, and on the same status). RECUR_E_MPI if the vote itself fails. */
recur_status_t recur_comm_agree(recur_comm_t *c, recur_status_t mine);

/* *v = the smallest of every rank's *v (e.g. the state slots that fit on every rank). */
recur_status_t recur_comm_min_i64(recur_comm_t *c, int64_t *v);

/* Waits until the ops enqueued so far have finished (NCCL: the backend's stream, polled
 * so that an asynchronous NCCL error, e.g. a peer gone, returns RECUR_E_NCCL instead of
 * waiting forever; MPI: at once, its ops are blocking). Not while a graph is recorded. */
recur_status_t recur_comm_synchronize(recur_comm_t *c);

#ifdef __cplusplus
}
#endif
#endif
