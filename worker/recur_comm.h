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
 *          memory. The NCCL unique ids travel over MPI.
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

/* Initialises MPI for this process (call once, before anything else uses MPI), sets
 * MPI_ERRORS_RETURN, and fills *grid for a tp x pp layout. RECUR_E_INVAL (with a message
 * on rank 0) when tp < 1, pp < 1 or tp * pp != the number of ranks. Without mpirun this is
 * a world of one rank. */
recur_status_t recur_comm_world_init(int *argc, char ***argv, int32_t tp, int32_t pp, recur_grid_t *grid);
/* Finalizes MPI (once, at exit; safe if world_init failed or was never called). */
void recur_comm_world_finalize(void);
/* After a failure on one rank: take the whole job down (MPI_Abort) with exit code rc,
 * so that no peer waits forever in a collective. */
void recur_comm_world_abort(int rc);

typedef struct recur_comm recur_comm_t;

/* Collective over the world: builds the TP-group and pipeline communicators of this rank
 * for backend b (NCCL for "cuda", MPI otherwise). */
recur_status_t recur_comm_create(const recur_grid_t *grid, recur_backend_t *b, recur_comm_t **out);
void recur_comm_free(recur_comm_t *c); /* NULL is a no-op */
const recur_grid_t *recur_comm_grid(const recur_comm_t *c);
const char *recur_comm_transport(const recur_comm_t *c); /* "nccl" or "mpi" */

/* ---- TP group (no-ops that return RECUR_OK when tp == 1) */
/* buf[0..n) = sum over the group's ranks of buf[0..n), in place (backend memory). */
recur_status_t recur_comm_tp_allreduce(recur_comm_t *c, float *buf, size_t n);
/* recv[r * n .. (r + 1) * n) = rank r's send[0..n), for every r < tp (backend memory). */
recur_status_t recur_comm_tp_allgather(recur_comm_t *c, const float *send, float *recv, size_t n);

/* ---- pipeline: with the same tp_rank of the next / previous stage (backend memory).
 * A send is matched by the receiving stage's recv of the same size, in the same order. */
recur_status_t recur_comm_pp_send_next(recur_comm_t *c, const void *buf, size_t n_bytes);
recur_status_t recur_comm_pp_recv_prev(recur_comm_t *c, void *buf, size_t n_bytes);

/* ---- control plane over the world (host memory, blocking, MPI on both transports) */
recur_status_t recur_comm_bcast_host(recur_comm_t *c, void *buf, size_t n_bytes, int32_t root);
recur_status_t recur_comm_barrier(recur_comm_t *c);
/* Every rank passes its status; all get RECUR_OK only when every rank had RECUR_OK,
 * else the first failing status (so all ranks agree whether a step or a load worked). */
recur_status_t recur_comm_agree(recur_comm_t *c, recur_status_t mine);

/* Waits until the ops enqueued so far have finished (NCCL: the backend's stream). */
recur_status_t recur_comm_synchronize(recur_comm_t *c);

#ifdef __cplusplus
}
#endif
#endif
