/* test_comm.c: the communication layer (worker/recur_comm.h), run by mpirun.
 *
 *   [mpirun -np N ...] test_comm [cpu|cuda]
 *
 * For every layout tp x pp with tp * pp == N (N = 4: tp4, tp2 x pp2, pp4) it checks the
 * grid (tp_rank, pp_rank, local ranks per host), then, through the backend's memory:
 * the TP all-reduce and all-gather (separate buffers and in place) on random data, the
 * pipeline's send/recv along the stages with data that names its sender, and the control
 * plane (bcast, barrier, agree with one or two failing ranks). Layouts that do not fit N
 * and a grid that one rank got wrong must give RECUR_E_INVAL on every rank, at once.
 *
 * cpu  (default): the MPI transport; alone (no mpirun) it is a world of one.
 * cuda: the NCCL transport on device buffers, plus an all-reduce recorded in a CUDA graph.
 *       Exits 77 on every rank when a host has fewer CUDA devices than ranks (NCCL cannot
 *       put two ranks of a communicator on one GPU) or the build has no NCCL.
 * The exit code is agreed: 0 pass, 1 fail, 77 skipped, the same on every rank. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recur_backend.h"
#include "recur_comm.h"
#include "recur_log.h"
#include "recur_testutil.h"

#ifdef RECUR_USE_CUDA
#include <cuda_runtime_api.h>
#endif

/* What one rank checks: fails counts the failed checks of this rank. */
typedef struct test_ctx {
    recur_backend_t *b;
    int is_cuda;
    int layout;        /* index of the layout, part of every seed */
    int fails;
} test_ctx_t;

#define CHECK(t, cond) RECUR_CHECK(&(t)->fails, cond)

/* A seed for (layout, rank, what, k); never 0 (xorshift's fixed point). */
static uint64_t seed_of(int layout, int rank, int what, int k) {
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(1 + layout * 1000003 + rank * 1009 + what * 101 + k);
    return s ^ (s >> 29) ^ 1;
}

/* Values in [0.25, 2): never zero, so a missing contribution always shows. */
static void fill_floats(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    recur_test_fill(&s, x, n, 0.25f, 2.0f);
}

/* Bytes, never zero. */
static void fill_bytes(uint8_t *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = (uint8_t)(recur_test_rng_next(&s) >> 56) | 1u;
}

/* ---- backend buffers */

static void *dev_from_host(test_ctx_t *t, const void *host, size_t bytes) {
    void *d = t->b->iface.alloc(t->b, bytes ? bytes : 1);
    if (!d) return NULL;
    if (t->b->iface.upload(t->b, d, host, bytes) != RECUR_OK) {
        t->b->iface.buf_free(t->b, d);
        return NULL;
    }
    return d;
}

static int dev_to_host(test_ctx_t *t, void *host, const void *d, size_t bytes) {
    return t->b->iface.download(t->b, host, d, bytes) == RECUR_OK;
}

/* ---- stderr capture, to check that an expected error is explained */

typedef struct { int saved; FILE *tmp; } capture_t;

static void capture_begin(capture_t *c) {
    fflush(stderr);
    c->tmp = tmpfile();
    c->saved = c->tmp ? dup(2) : -1;
    if (c->saved >= 0) dup2(fileno(c->tmp), 2);
}

/* Restores stderr, copies what was written (at most n-1 bytes) to buf, and echoes it
 * marked as expected. Returns 0 when nothing could be captured (then buf is ""). */
static int capture_end(capture_t *c, char *buf, size_t n) {
    buf[0] = '\0';
    fflush(stderr);
    if (c->saved < 0) {
        if (c->tmp) fclose(c->tmp);
        return 0;
    }
    dup2(c->saved, 2);
    close(c->saved);
    rewind(c->tmp);
    size_t k = fread(buf, 1, n - 1, c->tmp);
    buf[k] = '\0';
    fclose(c->tmp);
    if (k) fprintf(stderr, "(expected) %s", buf);
    return 1;
}

/* ---- the checks of one layout */

typedef struct who {
    char host[64];
    int32_t world_rank, local_rank, local_size;
} who_t;

/* Everyone's (host, local rank) over bcast_host; local ranks must number the ranks of
 * each host 0..n-1 in world-rank order, with local_size n. */
static void check_local_ranks(test_ctx_t *t, recur_comm_t *c) {
    const recur_grid_t *g = recur_comm_grid(c);
    who_t *all = calloc((size_t)g->world_size, sizeof *all);
    if (!all) {
        t->fails++;
        return;
    }
    for (int r = 0; r < g->world_size; r++) {
        if (r == g->world_rank) {
            snprintf(all[r].host, sizeof all[r].host, "%s", g->host);
            all[r].world_rank = g->world_rank;
            all[r].local_rank = g->local_rank;
            all[r].local_size = g->local_size;
        }
        CHECK(t, recur_comm_bcast_host(c, &all[r], sizeof all[r], r) == RECUR_OK);
    }
    for (int r = 0; r < g->world_size; r++) {
        int before = 0, same = 0;
        for (int q = 0; q < g->world_size; q++) {
            if (strcmp(all[q].host, all[r].host) != 0) continue;
            same++;
            if (q < r) before++;
        }
        CHECK(t, all[r].world_rank == r);
        CHECK(t, all[r].local_rank == before);
        CHECK(t, all[r].local_size == same);
    }
    free(all);
}

static void check_allreduce(test_ctx_t *t, recur_comm_t *c) {
    const recur_grid_t *g = recur_comm_grid(c);
    /* 4096 and 16384: decode sizes of the peer-memory all-reduce; the odd sizes: its
     * half-filled last line; 1 << 20: past its largest, so NCCL. */
    static const size_t sizes[] = {1, 3, 1000, 4096, 16384, 65537, (size_t)1 << 20};
    const int p2p = strcmp(recur_comm_tp_allreduce_kind(c), "p2p") == 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *mine = malloc(n * sizeof(float)), *ref = calloc(n, sizeof(float)), *got = malloc(n * sizeof(float));
        float *tmp = malloc(n * sizeof(float));
        if (!mine || !ref || !got || !tmp) {
            t->fails++;
            goto next;
        }
        fill_floats(mine, n, seed_of(t->layout, g->world_rank, 1, (int)si));
        /* The reference: the group's members are world ranks pp_rank * tp + r. */
        for (int r = 0; r < g->tp; r++) {
            fill_floats(tmp, n, seed_of(t->layout, g->pp_rank * g->tp + r, 1, (int)si));
            for (size_t i = 0; i < n; i++) ref[i] += tmp[i];
        }
        float *d = dev_from_host(t, mine, n * sizeof(float));
        CHECK(t, d != NULL);
        if (d) {
            CHECK(t, recur_comm_tp_allreduce(c, d, n) == RECUR_OK);
            CHECK(t, recur_comm_synchronize(c) == RECUR_OK);
            CHECK(t, dev_to_host(t, got, d, n * sizeof(float)));
            char what[64];
            snprintf(what, sizeof what, "allreduce n=%zu tp=%d", n, (int)g->tp);
            CHECK(t, recur_allclose(got, ref, n, 1e-6f, 1e-5f, what, NULL));
            if (p2p) {
                /* summed in rank order: world rank 0's group holds rank 0's bits */
                memcpy(tmp, got, n * sizeof(float));
                CHECK(t, recur_comm_bcast_host(c, tmp, n * sizeof(float), 0) == RECUR_OK);
                if (g->pp_rank == 0) CHECK(t, memcmp(tmp, got, n * sizeof(float)) == 0);
            }
            t->b->iface.buf_free(t->b, d);
        }
    next:
        free(mine);
        free(ref);
        free(got);
        free(tmp);
    }
    /* n == 0 is a no-op, even with a NULL buffer. */
    CHECK(t, recur_comm_tp_allreduce(c, NULL, 0) == RECUR_OK);
}

static void check_allgather(test_ctx_t *t, recur_comm_t *c) {
    const recur_grid_t *g = recur_comm_grid(c);
    static const size_t sizes[] = {1, 5, 4099, 300007};
    const size_t tp = (size_t)g->tp;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *mine = malloc(n * sizeof(float)), *ref = malloc(tp * n * sizeof(float));
        float *got = malloc(tp * n * sizeof(float));
        if (!mine || !ref || !got) {
            t->fails++;
            goto next;
        }
        fill_floats(mine, n, seed_of(t->layout, g->world_rank, 2, (int)si));
        for (size_t r = 0; r < tp; r++)
            fill_floats(ref + r * n, n, seed_of(t->layout, g->pp_rank * g->tp + (int)r, 2, (int)si));
        for (int in_place = 0; in_place < 2; in_place++) {
            /* recv starts as a pattern of -1s, so a slot that nobody wrote shows. */
            for (size_t i = 0; i < tp * n; i++) got[i] = -1.0f;
            if (in_place) memcpy(got + (size_t)g->tp_rank * n, mine, n * sizeof(float));
            float *recv = dev_from_host(t, got, tp * n * sizeof(float));
            float *send = in_place ? (recv ? recv + (size_t)g->tp_rank * n : NULL) : dev_from_host(t, mine, n * sizeof(float));
            CHECK(t, recv && send);
            if (recv && send) {
                CHECK(t, recur_comm_tp_allgather(c, send, recv, n) == RECUR_OK);
                CHECK(t, recur_comm_synchronize(c) == RECUR_OK);
                CHECK(t, dev_to_host(t, got, recv, tp * n * sizeof(float)));
                char what[80];
                snprintf(what, sizeof what, "allgather n=%zu tp=%d%s", n, (int)g->tp, in_place ? " in place" : "");
                CHECK(t, recur_allclose(got, ref, tp * n, 0.0f, 0.0f, what, NULL));
            }
            if (!in_place && send) t->b->iface.buf_free(t->b, send);
            if (recv) t->b->iface.buf_free(t->b, recv);
        }
    next:
        free(mine);
        free(ref);
        free(got);
    }
    /* Overlapping buffers that are not the in-place form are refused (on this rank only,
     * before any communication, so the others are not kept waiting). */
    if (g->tp > 1) {
        float *d = t->b->iface.alloc(t->b, 8 * tp * sizeof(float));
        if (d) {
            recur_log_level_t lvl = recur_log_get_level();
            recur_log_set_level(RECUR_LOG_NONE);
            size_t off = g->tp_rank == 0 ? 1 : 0;   /* never tp_rank * n */
            CHECK(t, recur_comm_tp_allgather(c, d + off, d, 8) == RECUR_E_INVAL);
            recur_log_set_level(lvl);
            t->b->iface.buf_free(t->b, d);
        }
    }
}

/* Along the stages: stage s receives from s - 1 and then sends to s + 1, several messages
 * of different sizes in a row; each message is made from its sender's (stage, tp_rank),
 * so a receiver can tell that it came from the same tp_rank of the previous stage. */
static void check_pipeline(test_ctx_t *t, recur_comm_t *c) {
    const recur_grid_t *g = recur_comm_grid(c);
    enum { N_MSG = 3 };
    static const size_t sizes[N_MSG] = {1, 4097, ((size_t)1 << 20) + 3};
    const int first = g->pp_rank == 0, last = g->pp_rank == g->pp - 1;
    uint8_t *host[N_MSG] = {0}, *dsend[N_MSG] = {0}, *drecv[N_MSG] = {0};
    int ok = 1;
    for (int k = 0; k < N_MSG; k++) {
        host[k] = malloc(sizes[k]);
        if (!host[k]) {
            ok = 0;
            continue;
        }
        if (!last) {
            fill_bytes(host[k], sizes[k], seed_of(t->layout, g->world_rank, 3, k));
            dsend[k] = dev_from_host(t, host[k], sizes[k]);
            ok &= dsend[k] != NULL;
        }
        if (!first) {
            drecv[k] = t->b->iface.alloc(t->b, sizes[k]);
            ok &= drecv[k] != NULL;
        }
    }
    CHECK(t, ok);
    /* Every rank runs the same sequence even if its buffers failed, so nobody waits. */
    ok = recur_comm_agree(c, ok ? RECUR_OK : RECUR_E_NOMEM) == RECUR_OK;
    if (ok) {
        for (int k = 0; k < N_MSG && !first; k++) CHECK(t, recur_comm_pp_recv_prev(c, drecv[k], sizes[k]) == RECUR_OK);
        for (int k = 0; k < N_MSG && !last; k++) CHECK(t, recur_comm_pp_send_next(c, dsend[k], sizes[k]) == RECUR_OK);
        CHECK(t, recur_comm_synchronize(c) == RECUR_OK);
        for (int k = 0; k < N_MSG && !first; k++) {
            uint8_t *ref = malloc(sizes[k]);
            CHECK(t, ref != NULL);
            if (!ref) continue;
            fill_bytes(ref, sizes[k], seed_of(t->layout, g->world_rank - g->tp, 3, k));
            CHECK(t, dev_to_host(t, host[k], drecv[k], sizes[k]));
            size_t bad = 0;
            for (size_t i = 0; i < sizes[k]; i++) bad += host[k][i] != ref[i];
            if (bad)
                fprintf(stderr, "rank %d: pipeline message %d (%zu bytes) from rank %d: %zu bytes differ\n",
                        (int)g->world_rank, k, sizes[k], (int)(g->world_rank - g->tp), bad);
            CHECK(t, bad == 0);
            free(ref);
        }
    }
    for (int k = 0; k < N_MSG; k++) {
        free(host[k]);
        if (dsend[k]) t->b->iface.buf_free(t->b, dsend[k]);
        if (drecv[k]) t->b->iface.buf_free(t->b, drecv[k]);
    }
    /* No peer: refused on this rank alone, at once. */
    recur_log_level_t lvl = recur_log_get_level();
    recur_log_set_level(RECUR_LOG_NONE);
    uint8_t byte = 1;
    if (last) CHECK(t, recur_comm_pp_send_next(c, &byte, 1) == RECUR_E_INVAL);
    if (first) CHECK(t, recur_comm_pp_recv_prev(c, &byte, 1) == RECUR_E_INVAL);
    recur_log_set_level(lvl);
}

static void check_control(test_ctx_t *t, recur_comm_t *c) {
    const recur_grid_t *g = recur_comm_grid(c);
    const int ws = g->world_size, me = g->world_rank;
    /* bcast from the last rank and from rank 0; receivers start with a different pattern. */
    enum { NB = 10007 };
    static uint8_t buf[NB], ref[NB];
    const int roots[2] = {ws - 1, 0};
    for (int i = 0; i < 2; i++) {
        fill_bytes(ref, NB, seed_of(t->layout, roots[i], 4, i));
        if (me == roots[i]) memcpy(buf, ref, NB);
        else memset(buf, 0, NB);
        CHECK(t, recur_comm_bcast_host(c, buf, NB, roots[i]) == RECUR_OK);
        CHECK(t, memcmp(buf, ref, NB) == 0);
    }
    recur_log_level_t lvl = recur_log_get_level();
    recur_log_set_level(RECUR_LOG_NONE);
    CHECK(t, recur_comm_bcast_host(c, buf, 4, ws) == RECUR_E_INVAL);   /* not a rank: refused everywhere */
    CHECK(t, recur_comm_bcast_host(c, buf, 4, -1) == RECUR_E_INVAL);
    recur_log_set_level(lvl);
    CHECK(t, recur_comm_barrier(c) == RECUR_OK);

    /* agree: nobody failed; the last rank failed; rank 0 and the last failed differently
     * (rank 0's status wins: the lowest failing rank); a positive status (busy) counts. */
    CHECK(t, recur_comm_agree(c, RECUR_OK) == RECUR_OK);
    CHECK(t, recur_comm_agree(c, me == ws - 1 ? RECUR_E_IO : RECUR_OK) == RECUR_E_IO);
    recur_status_t two = me == 0 ? RECUR_E_FORMAT : me == ws - 1 ? RECUR_E_IO : RECUR_OK;
    CHECK(t, recur_comm_agree(c, two) == RECUR_E_FORMAT);
    CHECK(t, recur_comm_agree(c, me == ws - 1 ? RECUR_E_BUSY : RECUR_OK) == RECUR_E_BUSY);
    CHECK(t, recur_comm_agree(c, RECUR_E_NCCL) == RECUR_E_NCCL);
}

/* An all-reduce recorded in a backend graph (NCCL ops captured on the backend's stream)
 * and launched twice: after the first launch every rank holds S = the group's sum, after
 * the second tp * S. */
static void check_graph_allreduce(test_ctx_t *t, recur_comm_t *c, size_t n) {
    const recur_grid_t *g = recur_comm_grid(c);
    if (!t->b->iface.graph_begin || g->tp == 1) return;
    float *mine = malloc(n * sizeof(float)), *ref = calloc(n, sizeof(float)), *tmp = malloc(n * sizeof(float));
    float *d = NULL;
    void *graph = NULL;
    if (!mine || !ref || !tmp) {
        t->fails++;
        goto done;
    }
    fill_floats(mine, n, seed_of(t->layout, g->world_rank, 5, 0));
    for (int r = 0; r < g->tp; r++) {
        fill_floats(tmp, n, seed_of(t->layout, g->pp_rank * g->tp + r, 5, 0));
        for (size_t i = 0; i < n; i++) ref[i] += tmp[i];
    }
    for (size_t i = 0; i < n; i++) ref[i] *= (float)g->tp;
    d = dev_from_host(t, mine, n * sizeof(float));
    CHECK(t, d != NULL);
    if (!d) goto done;
    CHECK(t, t->b->iface.graph_begin(t->b) == RECUR_OK);
    CHECK(t, recur_comm_tp_allreduce(c, d, n) == RECUR_OK);
    CHECK(t, t->b->iface.graph_end(t->b, &graph) == RECUR_OK);
    if (graph) {
        CHECK(t, t->b->iface.graph_launch(t->b, graph) == RECUR_OK);
        CHECK(t, t->b->iface.graph_launch(t->b, graph) == RECUR_OK);
        CHECK(t, recur_comm_synchronize(c) == RECUR_OK);
        CHECK(t, dev_to_host(t, tmp, d, n * sizeof(float)));
        CHECK(t, recur_allclose(tmp, ref, n, 1e-5f, 1e-5f, "allreduce in a graph, launched twice", NULL));
        t->b->iface.graph_free(t->b, graph);
    }
done:
    if (d) t->b->iface.buf_free(t->b, d);
    free(mine);
    free(ref);
    free(tmp);
}

static void run_layout(test_ctx_t *t, int32_t tp, int32_t pp) {
    recur_grid_t g;
    if (recur_comm_world_init(NULL, NULL, tp, pp, &g) != RECUR_OK) {
        fprintf(stderr, "layout tp %d x pp %d: world_init failed\n", tp, pp);
        t->fails++;
        return;
    }
    CHECK(t, g.tp == tp && g.pp == pp && (int64_t)g.tp * g.pp == g.world_size);
    CHECK(t, g.tp_rank == g.world_rank % tp);
    CHECK(t, g.pp_rank == g.world_rank / tp);
    CHECK(t, g.world_rank == g.pp_rank * tp + g.tp_rank);
    CHECK(t, g.local_rank >= 0 && g.local_rank < g.local_size && g.host[0] != '\0');

    recur_comm_t *c = NULL;
    if (recur_comm_create(&g, t->b, &c) != RECUR_OK) {
        fprintf(stderr, "layout tp %d x pp %d: recur_comm_create failed on rank %d\n", tp, pp, g.world_rank);
        t->fails++;
        return;
    }
    CHECK(t, strcmp(recur_comm_transport(c), t->is_cuda ? "nccl" : "mpi") == 0);
    /* RECUR_TP_ALLREDUCE=p2p or nccl (the GPU tests set one): that is what the group uses */
    const char *want = getenv("RECUR_TP_ALLREDUCE"), *kind = recur_comm_tp_allreduce_kind(c);
    if (g.tp == 1) CHECK(t, strcmp(kind, "none") == 0);
    else if (!t->is_cuda) CHECK(t, strcmp(kind, "mpi") == 0);
    else if (want && (strcmp(want, "p2p") == 0 || strcmp(want, "nccl") == 0)) CHECK(t, strcmp(kind, want) == 0);
    if (g.world_rank == 0) fprintf(stderr, "layout tp %d x pp %d: all-reduce %s\n", tp, pp, kind);
    CHECK(t, memcmp(recur_comm_grid(c), &g, sizeof g) == 0);
    check_local_ranks(t, c);
    check_allreduce(t, c);
    check_allgather(t, c);
    check_pipeline(t, c);
    check_control(t, c);
    check_graph_allreduce(t, c, 4099);
    check_graph_allreduce(t, c, 4096);
    CHECK(t, recur_comm_synchronize(c) == RECUR_OK);
    recur_comm_free(c);
    if (g.world_rank == 0) fprintf(stderr, "layout tp %d x pp %d: done\n", tp, pp);
}

/* Layouts that do not fit the world: RECUR_E_INVAL on every rank (nobody waits), rank 0
 * explains, and the grid still says who we are. */
static void check_bad_layouts(test_ctx_t *t, int32_t ws) {
    const int32_t bad[][2] = {{0, 1}, {1, 0}, {-1, -1}, {ws + 1, 1}, {2, ws}, {ws, 2}, {3, 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t tp = bad[i][0], pp = bad[i][1];
        if (tp >= 1 && pp >= 1 && (int64_t)tp * pp == ws) continue;   /* fits after all ({3, 1} on 3 ranks) */
        recur_grid_t g;
        capture_t cap;
        char text[2048];
        capture_begin(&cap);
        recur_status_t st = recur_comm_world_init(NULL, NULL, tp, pp, &g);
        int captured = capture_end(&cap, text, sizeof text);
        CHECK(t, st == RECUR_E_INVAL);
        CHECK(t, g.world_size == ws && g.world_rank >= 0 && g.world_rank < ws && g.tp == 0 && g.pp == 0);
        /* Rank 0 says what is wrong: the sizes, or for a fitting count, how to launch. */
        if (g.world_rank == 0 && captured) CHECK(t, strstr(text, "rank grid:") != NULL);
        if (g.world_rank != 0 && captured) CHECK(t, text[0] == '\0');
    }
}

/* A grid that one rank got wrong: every rank's create must fail with RECUR_E_INVAL. */
static void check_bad_grid(test_ctx_t *t, int32_t ws) {
    recur_grid_t g;
    CHECK(t, recur_comm_world_init(NULL, NULL, ws, 1, &g) == RECUR_OK);
    if (g.world_rank == 0) g.tp_rank = (g.tp_rank + 1) % (ws + 1);   /* wrong on rank 0 only */
    recur_comm_t *c = NULL;
    recur_log_level_t lvl = recur_log_get_level();
    recur_log_set_level(RECUR_LOG_NONE);
    recur_status_t st = recur_comm_create(&g, t->b, &c);
    recur_log_set_level(lvl);
    CHECK(t, st == RECUR_E_INVAL && c == NULL);
    recur_comm_free(c);
}

/* 1 when this rank can run the cuda test: a CUDA backend, NCCL, and a device per rank of
 * this host. Prints why not. */
static int cuda_usable_here(const recur_grid_t *g) {
#if defined(RECUR_USE_CUDA) && defined(RECUR_USE_NCCL)
    if (recur_test_no_cuda()) return 0;
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess) n_dev = 0;
    if (n_dev < g->local_size) {
        fprintf(stderr, "rank %d: host %s has %d CUDA device(s) for %d ranks: NCCL needs one GPU per rank: skipped\n",
                (int)g->world_rank, g->host, n_dev, (int)g->local_size);
        return 0;
    }
    return 1;
#else
    fprintf(stderr, "rank %d: built without the CUDA backend or without NCCL: skipped\n", (int)g->world_rank);
    return 0;
#endif
}

int main(int argc, char **argv) {
    recur_grid_t g;
    /* tp 0 is refused, but MPI starts and g says how many ranks there are. */
    capture_t cap;
    char text[2048];
    capture_begin(&cap);
    recur_status_t st = recur_comm_world_init(&argc, &argv, 0, 0, &g);
    capture_end(&cap, text, sizeof text);
    if (st != RECUR_E_INVAL) {
        fprintf(stderr, "world_init(tp 0) returned %s, expected invalid argument\n", recur_status_str(st));
        return 1;
    }
    const char *which = argc > 1 ? argv[1] : "cpu";
    const int is_cuda = strcmp(which, "cuda") == 0;
    if (!is_cuda && strcmp(which, "cpu") != 0) {
        fprintf(stderr, "usage: [mpirun -np N] test_comm [cpu|cuda]\n");
        recur_comm_world_finalize();
        return 2;
    }
    const int32_t ws = g.world_size;
    test_ctx_t t = {.is_cuda = is_cuda};

    /* The control communicator (CPU backend, MPI): the skip vote and the verdict. */
    recur_backend_t *cpu = NULL;
    recur_comm_t *ctl = NULL;
    recur_grid_t g1;
    if (recur_backend_init("cpu", NULL, &cpu) != RECUR_OK || recur_comm_world_init(NULL, NULL, ws, 1, &g1) != RECUR_OK ||
        recur_comm_create(&g1, cpu, &ctl) != RECUR_OK) {
        fprintf(stderr, "rank %d: could not set up the control communicator\n", (int)g.world_rank);
        recur_comm_world_abort(1);
    }

    int rc = 0;
    if (is_cuda) {
        /* Every rank must make the same choice, or the runners would wait for the skippers. */
        recur_status_t here = cuda_usable_here(&g) ? RECUR_OK : RECUR_E_UNSUPPORTED;
        if (recur_comm_agree(ctl, here) != RECUR_OK) rc = RECUR_TEST_SKIP;
        else if (recur_backend_init("cuda", NULL, &t.b) != RECUR_OK) t.fails++;
        /* If creating the CUDA backend failed on one rank, stop everyone before NCCL. */
        if (rc == 0 && recur_comm_agree(ctl, t.b ? RECUR_OK : RECUR_E_CUDA) != RECUR_OK) rc = 1;
    } else {
        t.b = cpu;
    }

    if (rc == 0) {
        if (g.world_rank == 0) fprintf(stderr, "test_comm %s on %d rank(s)\n", which, (int)ws);
        check_bad_layouts(&t, ws);
        check_bad_grid(&t, ws);
        int layout = 0;
        for (int32_t tp = ws; tp >= 1; tp--) {
            if (ws % tp) continue;
            t.layout = layout++;
            run_layout(&t, tp, ws / tp);
        }
        if (t.fails) fprintf(stderr, "rank %d (host %s): %d check(s) failed\n", (int)g.world_rank, g.host, t.fails);
        /* One verdict for all ranks, so mpirun's exit code does not depend on who ends first. */
        rc = recur_comm_agree(ctl, t.fails ? RECUR_E_RANGE : RECUR_OK) == RECUR_OK ? 0 : 1;
        if (g.world_rank == 0) fprintf(stderr, "test_comm %s on %d rank(s): %s\n", which, (int)ws, rc ? "FAIL" : "pass");
    }

    if (t.b && t.b != cpu) recur_backend_free(t.b);
    recur_comm_free(ctl);
    recur_backend_free(cpu);
    recur_comm_world_finalize();
    return rc;
}
