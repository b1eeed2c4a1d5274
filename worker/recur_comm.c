/* recur_comm.c: the rank grid, the MPI transport and the control plane (recur_comm.h).
 *
 * MPI communicators of a recur_comm_t:
 *   world    a duplicate of MPI_COMM_WORLD, so our traffic (control plane, the MPI
 *            pipeline's point-to-point) can never match someone else's on MPI_COMM_WORLD;
 *   tp_comm  MPI_Comm_split(world, color = pp_rank, key = tp_rank): one per stage.
 * The pipeline peers are world ranks (world_rank +- tp) on `world`.
 * Every communicator gets MPI_ERRORS_RETURN, and every MPI call goes through
 * RECUR_COMM_MPI, so an MPI failure is RECUR_E_MPI with a message, never an abort. */
#include "recur_comm.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recur_comm_internal.h"
#include "recur_log.h"

/* MPI counts are int: larger buffers go in pieces of this many elements. 2^30 keeps a
 * piece of floats (4 GiB) or bytes (1 GiB) well inside int and MPI_Aint offsets. */
#define COMM_MPI_PIECE ((size_t)1 << 30)
/* The tag of pipeline messages on our private world communicator. */
#define COMM_TAG_PP 7001

/* MPI is initialised once per process, so its state is module state (recur_comm.h: the
 * world_init/finalize pair owns MPI for the process). Touched by the MPI thread only. */
static struct {
    int started;          /* MPI usable and our fields below filled in          */
    int we_initialised;   /* we called MPI_Init_thread, so we call MPI_Finalize */
    int32_t world_rank, world_size, local_rank, local_size;
    char host[64];
} comm_world = {.world_rank = -1};

struct recur_comm {
    recur_grid_t grid;
    recur_backend_t *b;       /* borrowed */
    MPI_Comm world;           /* dup of MPI_COMM_WORLD: control plane + MPI pipeline */
    MPI_Comm tp_comm;         /* this stage's TP group, ranks in tp_rank order       */
#ifdef RECUR_USE_NCCL
    recur_comm_nccl_t *nccl;  /* NULL: the MPI transport */
#endif
};

static const char *comm_host(void) { return comm_world.host[0] ? comm_world.host : "?"; }

recur_status_t recur_comm_mpi_check(int err, const char *call, const char *file, int line) {
    if (err == MPI_SUCCESS) return RECUR_OK;
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS) len = snprintf(msg, sizeof msg, "MPI error code %d", err);
    msg[len > 0 && len < (int)sizeof msg ? len : 0] = '\0';
    recur_log_err("MPI error in %s (%s:%d) on rank %d of %d (host %s): %s", call, file, line,
                  (int)comm_world.world_rank, (int)comm_world.world_size, comm_host(), msg);
    return RECUR_E_MPI;
}

/* ------------------------------------------------------------------------ the world */

static recur_status_t comm_world_start(int *argc, char ***argv) {
    if (comm_world.started) return RECUR_OK;
    /* The host first, so that even a failing MPI_Init is reported with it. */
    if (gethostname(comm_world.host, sizeof comm_world.host) != 0) snprintf(comm_world.host, sizeof comm_world.host, "?");
    comm_world.host[sizeof comm_world.host - 1] = '\0';

    int inited = 0, finalized = 0;
    RECUR_TRY(RECUR_COMM_MPI(MPI_Finalized(&finalized)));
    if (finalized) {
        recur_log_err("comm: MPI was already finalized in this process (host %s); it cannot start again", comm_host());
        return RECUR_E_MPI;
    }
    RECUR_TRY(RECUR_COMM_MPI(MPI_Initialized(&inited)));
    int provided = 0;
    if (!inited) {
        /* FUNNELED: the worker has other threads (I/O), but only this one calls MPI. */
        RECUR_TRY(RECUR_COMM_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)));
        comm_world.we_initialised = 1;
    } else {
        RECUR_TRY(RECUR_COMM_MPI(MPI_Query_thread(&provided)));
    }
    /* Before this, MPI's default handler would abort the job on any error. */
    RECUR_TRY(RECUR_COMM_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)));
    if (provided < MPI_THREAD_FUNNELED) {
        recur_log_err("comm: this MPI library offers thread level %d, below MPI_THREAD_FUNNELED (%d), on host %s",
                      provided, (int)MPI_THREAD_FUNNELED, comm_host());
        return RECUR_E_MPI;
    }
    int rank = 0, size = 0, lrank = 0, lsize = 0;
    RECUR_TRY(RECUR_COMM_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank)));
    RECUR_TRY(RECUR_COMM_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size)));
    comm_world.world_rank = rank;
    comm_world.world_size = size;
    /* The ranks sharing this host's memory, ordered by world rank: local_rank picks the
     * GPU (the CUDA backend's default device is the launcher's local rank, the same one). */
    MPI_Comm node = MPI_COMM_NULL;
    RECUR_TRY(RECUR_COMM_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node)));
    recur_status_t st = RECUR_COMM_MPI(MPI_Comm_set_errhandler(node, MPI_ERRORS_RETURN));
    if (st == RECUR_OK) st = RECUR_COMM_MPI(MPI_Comm_rank(node, &lrank));
    if (st == RECUR_OK) st = RECUR_COMM_MPI(MPI_Comm_size(node, &lsize));
    recur_status_t st_free = RECUR_COMM_MPI(MPI_Comm_free(&node));
    RECUR_TRY(st);
    RECUR_TRY(st_free);
    comm_world.local_rank = lrank;
    comm_world.local_size = lsize;
    comm_world.started = 1;
    return RECUR_OK;
}

recur_status_t recur_comm_world_init(int *argc, char ***argv, int32_t tp, int32_t pp, recur_grid_t *grid) {
    memset(grid, 0, sizeof *grid);
    RECUR_TRY(comm_world_start(argc, argv));
    grid->world_rank = comm_world.world_rank;
    grid->world_size = comm_world.world_size;
    grid->local_rank = comm_world.local_rank;
    grid->local_size = comm_world.local_size;
    snprintf(grid->host, sizeof grid->host, "%s", comm_world.host);
    /* Every rank has the same tp, pp and world size, so every rank takes the same branch
     * here: a bad layout returns everywhere at once and nobody waits in a collective. */
    if (tp < 1 || pp < 1) {
        if (grid->world_rank == 0) recur_log_err("rank grid: tp and pp must be at least 1 (got tp %d, pp %d)", tp, pp);
        return RECUR_E_INVAL;
    }
    if ((int64_t)tp * pp != grid->world_size) {
        if (grid->world_rank == 0)
            recur_log_err("rank grid: tp %d x pp %d needs %lld ranks, but this job has %d: launch with "
                          "mpirun -np %lld, or choose tp and pp whose product is %d",
                          tp, pp, (long long)tp * pp, grid->world_size, (long long)tp * pp, grid->world_size);
        return RECUR_E_INVAL;
    }
    grid->tp = tp;
    grid->pp = pp;
    grid->tp_rank = grid->world_rank % tp;
    grid->pp_rank = grid->world_rank / tp;
    return RECUR_OK;
}

void recur_comm_world_finalize(void) {
    int inited = 0, finalized = 0;
    if (MPI_Initialized(&inited) != MPI_SUCCESS || !inited) return;
    if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) return;
    if (!comm_world.we_initialised) return;   /* whoever initialised MPI finalizes it */
    /* MPI_Finalize is collective; an error here can only be reported, we are exiting. */
    (void)RECUR_COMM_MPI(MPI_Finalize());
    comm_world.started = 0;
    comm_world.we_initialised = 0;
}

void recur_comm_world_abort(int rc) {
    int inited = 0, finalized = 0;
    fflush(stdout);
    fflush(stderr);
    if (MPI_Initialized(&inited) == MPI_SUCCESS && inited && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized)
        MPI_Abort(MPI_COMM_WORLD, rc);
    exit(rc);   /* no MPI, or MPI_Abort returned */
}

/* ------------------------------------------------------------------------ the vote */

recur_status_t recur_comm_agree_on(MPI_Comm comm, recur_status_t mine) {
    int rank = 0, size = 0;
    RECUR_TRY(RECUR_COMM_MPI(MPI_Comm_rank(comm, &rank)));
    RECUR_TRY(RECUR_COMM_MPI(MPI_Comm_size(comm, &size)));
    /* One MINLOC over (key, status): a failing rank's key is its rank, an OK rank's key is
     * `size` (larger than every rank). The minimum key is the lowest failing rank, and
     * MINLOC carries its second field along: that rank's status. When nobody failed
     * every pair is (size, RECUR_OK) and the result is RECUR_OK. No allocation, so a
     * rank that is short of memory still votes. */
    struct { int key, status; } in = {mine != RECUR_OK ? rank : size, (int)mine}, out = {0, 0};
    RECUR_TRY(RECUR_COMM_MPI(MPI_Allreduce(&in, &out, 1, MPI_2INT, MPI_MINLOC, comm)));
    if (out.key < size && mine == RECUR_OK)
        recur_log_debug("comm: rank %d of the vote failed (%s); rank %d goes along", out.key,
                        recur_status_str((recur_status_t)out.status), rank);
    return out.key < size ? (recur_status_t)out.status : RECUR_OK;
}

/* ------------------------------------------------------------------------ create / free */

static int comm_is_cuda(recur_backend_t *b) { return strcmp(recur_backend_name(b), "cuda") == 0; }

/* The checks one rank can make alone; their verdict is then agreed over the world. */
static recur_status_t comm_check_local(const recur_grid_t *g, recur_backend_t *b) {
    if (!b) {
        recur_log_err("comm: no backend given on rank %d (host %s)", (int)comm_world.world_rank, comm_host());
        return RECUR_E_INVAL;
    }
    if (!g || g->tp < 1 || g->pp < 1 || (int64_t)g->tp * g->pp != comm_world.world_size ||
        g->world_rank != comm_world.world_rank || g->world_size != comm_world.world_size ||
        g->tp_rank != g->world_rank % g->tp || g->pp_rank != g->world_rank / g->tp) {
        recur_log_err("comm: rank %d (host %s) was given a grid that recur_comm_world_init did not make for this job",
                      (int)comm_world.world_rank, comm_host());
        return RECUR_E_INVAL;
    }
    if (comm_is_cuda(b)) {
#ifndef RECUR_USE_NCCL
        recur_log_err("comm: the cuda backend needs the NCCL transport, and this build has none "
                      "(NCCL was not found when it was configured)");
        return RECUR_E_UNSUPPORTED;
#endif
    }
    return RECUR_OK;
}

static recur_status_t comm_set_errhandler(MPI_Comm comm) {
    return RECUR_COMM_MPI(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
}

recur_status_t recur_comm_create(const recur_grid_t *grid, recur_backend_t *b, recur_comm_t **out) {
    *out = NULL;
    if (!comm_world.started) {
        /* Nothing collective is possible: this rank cannot even vote. */
        recur_log_err("comm: recur_comm_create before recur_comm_world_init");
        return RECUR_E_INVAL;
    }
    recur_comm_t *c = calloc(1, sizeof *c);
    recur_status_t st = c ? comm_check_local(grid, b) : RECUR_E_NOMEM;
    /* A rank that failed alone must not leave the others in MPI_Comm_dup: vote first. */
    st = recur_comm_agree_on(MPI_COMM_WORLD, st);
    if (st != RECUR_OK) {
        free(c);
        return st;
    }
    c->grid = *grid;
    c->b = b;
    c->world = MPI_COMM_NULL;
    c->tp_comm = MPI_COMM_NULL;
    /* Collective, and failing only on every rank or as a job-wide MPI problem. */
    if ((st = RECUR_COMM_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &c->world))) != RECUR_OK) goto fail;
    if ((st = comm_set_errhandler(c->world)) != RECUR_OK) goto fail;
    if ((st = RECUR_COMM_MPI(MPI_Comm_split(c->world, grid->pp_rank, grid->tp_rank, &c->tp_comm))) != RECUR_OK)
        goto fail;
    if ((st = comm_set_errhandler(c->tp_comm)) != RECUR_OK) goto fail;
    int tp_rank = -1, tp_size = -1;
    if ((st = RECUR_COMM_MPI(MPI_Comm_rank(c->tp_comm, &tp_rank))) != RECUR_OK) goto fail;
    if ((st = RECUR_COMM_MPI(MPI_Comm_size(c->tp_comm, &tp_size))) != RECUR_OK) goto fail;
    RECUR_ASSERT(tp_rank == grid->tp_rank && tp_size == grid->tp);
#ifdef RECUR_USE_NCCL
    if (comm_is_cuda(b) && (st = recur_comm_nccl_create(&c->grid, b, c->world, c->tp_comm, &c->nccl)) != RECUR_OK)
        goto fail;
#endif
    if (grid->world_rank == 0)
        recur_log_info("comm: %d rank%s as %d pipeline stage%s x %d tensor-parallel, transport %s", grid->world_size,
                       grid->world_size == 1 ? "" : "s", grid->pp, grid->pp == 1 ? "" : "s", grid->tp,
                       recur_comm_transport(c));
    *out = c;
    return RECUR_OK;
fail:
    recur_comm_free(c);
    return st;
}

void recur_comm_free(recur_comm_t *c) {
    if (!c) return;
#ifdef RECUR_USE_NCCL
    recur_comm_nccl_free(c->nccl);
#endif
    int finalized = 0;
    /* After MPI_Finalize the communicators are gone with it; freeing them is an error. */
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) {
        if (c->tp_comm != MPI_COMM_NULL) (void)RECUR_COMM_MPI(MPI_Comm_free(&c->tp_comm));
        if (c->world != MPI_COMM_NULL) (void)RECUR_COMM_MPI(MPI_Comm_free(&c->world));
    }
    free(c);
}

const recur_grid_t *recur_comm_grid(const recur_comm_t *c) { return &c->grid; }

const char *recur_comm_transport(const recur_comm_t *c) {
#ifdef RECUR_USE_NCCL
    if (c->nccl) return "nccl";
#endif
    return "mpi";
}

/* ------------------------------------------------------------------------ TP group */

const char *recur_comm_tp_allreduce_kind(const recur_comm_t *c) {
    if (c->grid.tp == 1) return "none";
#ifdef RECUR_USE_NCCL
    if (c->nccl) return recur_comm_nccl_allreduce_kind(c->nccl);
#endif
    return "mpi";
}

recur_status_t recur_comm_tp_allreduce(recur_comm_t *c, float *buf, size_t n) {
    if (c->grid.tp == 1 || n == 0) return RECUR_OK;
#ifdef RECUR_USE_NCCL
    if (c->nccl) return recur_comm_nccl_allreduce(c->nccl, buf, n);
#endif
    for (size_t off = 0; off < n; off += COMM_MPI_PIECE) {
        int len = (int)(n - off < COMM_MPI_PIECE ? n - off : COMM_MPI_PIECE);
        RECUR_TRY(RECUR_COMM_MPI(MPI_Allreduce(MPI_IN_PLACE, buf + off, len, MPI_FLOAT, MPI_SUM, c->tp_comm)));
    }
    return RECUR_OK;
}

recur_status_t recur_comm_tp_allgather(recur_comm_t *c, const float *send, float *recv, size_t n) {
    if (n == 0) return RECUR_OK;
    const size_t tp = (size_t)c->grid.tp;
    const int in_place = send == recv + (size_t)c->grid.tp_rank * n;
    /* Compared as integers: the pointers may belong to different allocations. */
    uintptr_t s0 = (uintptr_t)send, s1 = (uintptr_t)(send + n), r0 = (uintptr_t)recv, r1 = (uintptr_t)(recv + tp * n);
    if (!in_place && s0 < r1 && r0 < s1) {
        recur_log_err("comm: tp_allgather on rank %d: send overlaps recv without being recv + tp_rank * n",
                      (int)c->grid.world_rank);
        return RECUR_E_INVAL;
    }
    if (tp == 1) return in_place ? RECUR_OK : c->b->iface.copy(c->b, recv, send, n * sizeof(float));
#ifdef RECUR_USE_NCCL
    if (c->nccl) return recur_comm_nccl_allgather(c->nccl, send, recv, n);
#endif
    if (n > (size_t)INT_MAX) {
        /* The receive layout is per rank, so it cannot be cut into pieces like the others. */
        recur_log_err("comm: tp_allgather of %zu floats per rank is more than MPI's int count allows", n);
        return RECUR_E_INVAL;
    }
    return RECUR_COMM_MPI(MPI_Allgather(in_place ? MPI_IN_PLACE : send, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT,
                                        c->tp_comm));
}

/* ------------------------------------------------------------------------ pipeline */

recur_status_t recur_comm_pp_send_next(recur_comm_t *c, const void *buf, size_t n_bytes) {
    if (c->grid.pp_rank + 1 >= c->grid.pp) {
        recur_log_err("comm: pp_send_next on rank %d, which is in the last pipeline stage (%d of %d)",
                      (int)c->grid.world_rank, (int)c->grid.pp_rank, (int)c->grid.pp);
        return RECUR_E_INVAL;
    }
    if (n_bytes == 0) return RECUR_OK;
#ifdef RECUR_USE_NCCL
    if (c->nccl) return recur_comm_nccl_send_next(c->nccl, buf, n_bytes);
#endif
    const int peer = c->grid.world_rank + c->grid.tp;
    const char *p = buf;
    for (size_t off = 0; off < n_bytes; off += COMM_MPI_PIECE) {
        int len = (int)(n_bytes - off < COMM_MPI_PIECE ? n_bytes - off : COMM_MPI_PIECE);
        RECUR_TRY(RECUR_COMM_MPI(MPI_Send(p + off, len, MPI_BYTE, peer, COMM_TAG_PP, c->world)));
    }
    return RECUR_OK;
}

recur_status_t recur_comm_pp_recv_prev(recur_comm_t *c, void *buf, size_t n_bytes) {
    if (c->grid.pp_rank == 0) {
        recur_log_err("comm: pp_recv_prev on rank %d, which is in the first pipeline stage", (int)c->grid.world_rank);
        return RECUR_E_INVAL;
    }
    if (n_bytes == 0) return RECUR_OK;
#ifdef RECUR_USE_NCCL
    if (c->nccl) return recur_comm_nccl_recv_prev(c->nccl, buf, n_bytes);
#endif
    const int peer = c->grid.world_rank - c->grid.tp;
    char *p = buf;
    for (size_t off = 0; off < n_bytes; off += COMM_MPI_PIECE) {
        int len = (int)(n_bytes - off < COMM_MPI_PIECE ? n_bytes - off : COMM_MPI_PIECE);
        MPI_Status status;
        int got = -1;
        /* A longer message fails here (MPI_ERR_TRUNCATE); a shorter one is caught below. */
        RECUR_TRY(RECUR_COMM_MPI(MPI_Recv(p + off, len, MPI_BYTE, peer, COMM_TAG_PP, c->world, &status)));
        RECUR_TRY(RECUR_COMM_MPI(MPI_Get_count(&status, MPI_BYTE, &got)));
        if (got != len) {
            recur_log_err("comm: pp_recv_prev on rank %d (host %s): expected %d bytes from rank %d, got %d "
                          "(sends and receives of the stages do not match)",
                          (int)c->grid.world_rank, c->grid.host, len, peer, got);
            return RECUR_E_PROTO;
        }
    }
    return RECUR_OK;
}

/* ------------------------------------------------------------------------ control plane */

recur_status_t recur_comm_bcast_host(recur_comm_t *c, void *buf, size_t n_bytes, int32_t root) {
    if (root < 0 || root >= c->grid.world_size) {
        recur_log_err("comm: bcast_host from rank %d, but the ranks are 0..%d", (int)root, (int)c->grid.world_size - 1);
        return RECUR_E_INVAL;
    }
    char *p = buf;
    for (size_t off = 0; off < n_bytes; off += COMM_MPI_PIECE) {
        int len = (int)(n_bytes - off < COMM_MPI_PIECE ? n_bytes - off : COMM_MPI_PIECE);
        RECUR_TRY(RECUR_COMM_MPI(MPI_Bcast(p + off, len, MPI_BYTE, root, c->world)));
    }
    return RECUR_OK;
}

recur_status_t recur_comm_barrier(recur_comm_t *c) { return RECUR_COMM_MPI(MPI_Barrier(c->world)); }

recur_status_t recur_comm_agree(recur_comm_t *c, recur_status_t mine) { return recur_comm_agree_on(c->world, mine); }

recur_status_t recur_comm_min_i64(recur_comm_t *c, int64_t *v) {
    return RECUR_COMM_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_INT64_T, MPI_MIN, c->world));
}

recur_status_t recur_comm_synchronize(recur_comm_t *c) {
#ifdef RECUR_USE_NCCL
    if (c->nccl) return recur_comm_nccl_synchronize(c->nccl);
#endif
    return RECUR_OK;   /* MPI ops are blocking: done when they returned */
}
