/* recur_comm_internal.h: what recur_comm.c (grid, MPI transport, control plane) and
 * recur_comm_nccl.c (the NCCL transport, built only with the CUDA backend) share.
 * Not for use outside worker/recur_comm*.c. */
#ifndef RECUR_COMM_INTERNAL_H
#define RECUR_COMM_INTERNAL_H

#include <mpi.h>

#include "recur_comm.h"

/* err != MPI_SUCCESS: logs "MPI error in <call> (<file>:<line>) on rank r of n (host h):
 * <MPI_Error_string>" and returns RECUR_E_MPI; else RECUR_OK. */
recur_status_t recur_comm_mpi_check(int err, const char *call, const char *file, int line);
#define RECUR_COMM_MPI(call) recur_comm_mpi_check((call), #call, __FILE__, __LINE__)

/* The vote of recur_comm_agree over any communicator of the job: every member passes its
 * status; all get the status of the lowest-ranked failing member, or RECUR_OK. */
recur_status_t recur_comm_agree_on(MPI_Comm comm, recur_status_t mine);

#ifdef RECUR_USE_NCCL
/* The NCCL transport. Ownership: owns its NCCL communicators; borrows the backend's
 * stream and the MPI communicators passed to create (used there only). */
typedef struct recur_comm_nccl recur_comm_nccl_t;

/* Collective over world (an MPI communicator of every rank, in world-rank order); tp_comm
 * is this rank's TP group (ranks in tp_rank order). Every rank returns the same status. */
recur_status_t recur_comm_nccl_create(const recur_grid_t *g, recur_backend_t *b, MPI_Comm world, MPI_Comm tp_comm,
                                      recur_comm_nccl_t **out);
void recur_comm_nccl_free(recur_comm_nccl_t *n); /* NULL is a no-op */

/* Callers (recur_comm.c) have already handled n == 0, tp == 1 and missing peers. */
recur_status_t recur_comm_nccl_allreduce(recur_comm_nccl_t *n, float *buf, size_t count);
recur_status_t recur_comm_nccl_allgather(recur_comm_nccl_t *n, const float *send, float *recv, size_t count);
recur_status_t recur_comm_nccl_send_next(recur_comm_nccl_t *n, const void *buf, size_t n_bytes);
recur_status_t recur_comm_nccl_recv_prev(recur_comm_nccl_t *n, void *buf, size_t n_bytes);
recur_status_t recur_comm_nccl_synchronize(recur_comm_nccl_t *n);
/* "p2p" when the TP all-reduces of decode size go over peer memory, else "nccl". */
const char *recur_comm_nccl_allreduce_kind(const recur_comm_nccl_t *n);
#endif

#endif
