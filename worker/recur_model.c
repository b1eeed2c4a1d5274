/* recur_model.c: the architecture-independent part of a model (see recur_model.h). */
#include "recur_model.h"

#include <stdlib.h>
#include <string.h>

#include "recur_log.h"
#include "recur_model_arch.h"
#include "recur_model_files.h"

#define RECUR_MODEL_MAGIC 0x52434d4fu /* "RCMO" */

static const recur_model_arch_t *const recur_archs[] = {&recur_arch_rwkv7, &recur_arch_xlstm};

/* The index arrays of a forward piece live in one host staging block and one device
 * block of the same layout (int32 offsets, T = max_tokens), so a piece costs one upload:
 *   IDX_TOK  [T]     tokens             \
 *   IDX_SEQ  [T+1]   seq_off             | an eager piece (any batch shape)
 *   IDX_SLOT [T]     slots               |
 *   IDX_OUT  [T]     out_rows           /
 *   IDX_DEC  [2T]    a padded decode batch of P rows: tokens [P], then slots [P]
 *   IDX_IOTA [T+1]   0, 1, ..., T (device only, uploaded at load): the seq_off and
 *                    out_rows of every decode batch, which never change. */
#define IDX_TOK(T) 0
#define IDX_SEQ(T) ((size_t)(T))
#define IDX_SLOT(T) (2 * (size_t)(T) + 1)
#define IDX_OUT(T) (3 * (size_t)(T) + 1)
#define IDX_DEC(T) (4 * (size_t)(T) + 1)
#define IDX_IOTA(T) (6 * (size_t)(T) + 1)
#define IDX_TOTAL(T) (7 * (size_t)(T) + 2)

/* Logits modes of a decode graph: what the recorded forward ends with. */
enum { GRAPH_LAST = 0, GRAPH_NONE = 1, GRAPH_MODES = 2 };

struct recur_model {
    uint32_t magic;
    recur_backend_t *b;
    const recur_model_arch_t *arch;
    void *arch_ctx;
    recur_model_info_t info;
    recur_model_params_t params;
    void *pool;           /* backend: n_slots * info.state_bytes */
    void *init_state;     /* backend: one slot's initial state   */
    int32_t *h_idx;       /* host staging, IDX_TOTAL(max_tokens) (page-locked when the backend has host_alloc) */
    int32_t *d_idx;       /* backend copy, same layout */
    int h_idx_pinned;     /* h_idx came from host_alloc */
    int dec_upload_pending; /* an upload_async of IDX_DEC may still read h_idx: sync before rewriting it */
    float *d_logits;      /* backend: [max_tokens][n_vocab] */
    recur_sample_row_t *d_sample;  /* backend: [max_tokens] sampling parameters of the rows to sample */
    int32_t *d_sampled;            /* backend: [max_tokens] tokens the sample op chose */
    /* the sample op's extras (recur_sample_extras_t), last stage only: the CSR offsets of
     * a piece's rows and the logprob outputs are sized by max_tokens at load; the lists
     * themselves grow to the largest step seen (only steps that use bias or penalties) */
    int32_t *d_bias_off, *d_hist_off;   /* backend: [max_tokens + 1] */
    recur_sample_bias_t *d_bias;        /* backend: [cap_bias] */
    recur_sample_hist_t *d_hist;        /* backend: [cap_hist] */
    size_t cap_bias, cap_hist;
    float *d_logprob, *d_top_logprob;   /* backend: [max_tokens], [max_tokens][RECUR_SAMPLE_MAX_TOP] */
    int32_t *d_top_token;               /* backend: [max_tokens][RECUR_SAMPLE_MAX_TOP] */
    uint8_t *slot_seen;   /* host: n_slots, for the repeated-slot check */
    /* Decode graphs: per bucket size and logits mode, a graph (NULL: none yet) and
     * whether the bucket has run eagerly once (so the backend's scratch is sized). */
    int graphs_on;        /* params.use_graphs, the backend has graphs, none failed */
    int32_t n_buckets;
    int32_t *buckets;     /* ascending; the last is max_tokens */
    void **graphs;        /* [n_buckets][GRAPH_MODES] */
    uint8_t *warm;        /* [n_buckets][GRAPH_MODES] */
    int32_t n_graphs;
};

recur_status_t recur_model_plan_shard(const recur_model_params_t *p, const char *path, int32_t n_layer, int32_t n_head,
                                      int32_t ffn, int32_t n_vocab, recur_model_shard_t *sh) {
    *sh = (recur_model_shard_t){.tp = 1, .pp = 1, .layer_end = n_layer, .n_head = n_head, .n_vocab = n_vocab};
    if (!p->comm) return RECUR_OK;
    const recur_grid_t *g = recur_comm_grid(p->comm);
    const int32_t tp = g->tp, pp = g->pp;
    struct { const char *what; int32_t n; } parts[] = {{"heads", n_head}, {"FFN width", ffn}, {"vocabulary", n_vocab}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (parts[i].n % tp != 0) {
            recur_log_err("%s: tensor parallelism %d does not divide the model's %s (%d): tp must divide its %d "
                          "heads, FFN width %d and vocabulary %d", path, tp, parts[i].what, parts[i].n, n_head, ffn,
                          n_vocab);
            return RECUR_E_INVAL;
        }
    }
    if (pp > n_layer) {
        recur_log_err("%s: pipeline parallelism %d exceeds the model's %d layers", path, pp, n_layer);
        return RECUR_E_INVAL;
    }
    /* even stages, the first n_layer % pp taking one layer more */
    const int32_t base = n_layer / pp, extra = n_layer % pp, s = g->pp_rank;
    sh->tp = tp;
    sh->pp = pp;
    sh->tp_rank = g->tp_rank;
    sh->pp_rank = s;
    sh->layer_begin = s * base + (s < extra ? s : extra);
    sh->layer_end = sh->layer_begin + base + (s < extra ? 1 : 0);
    sh->n_head = n_head / tp;
    sh->head_begin = g->tp_rank * sh->n_head;
    sh->n_vocab = n_vocab / tp;
    sh->vocab_begin = g->tp_rank * sh->n_vocab;
    return RECUR_OK;
}

recur_status_t recur_model_gather_logits(recur_backend_t *b, recur_comm_t *comm, const recur_model_shard_t *sh,
                                         const float *local, float *gathered, int32_t n_out, float *logits) {
    if (sh->tp == 1 || n_out == 0) return RECUR_OK;
    const size_t vl = (size_t)sh->n_vocab;
    RECUR_TRY(recur_comm_tp_allgather(comm, local, gathered, (size_t)n_out * vl));
    /* gathered holds rank r's [n_out][vl] block at r * n_out * vl: it becomes columns
     * [r * vl, (r + 1) * vl) of every logits row */
    for (int32_t r = 0; r < sh->tp; r++)
        RECUR_TRY(b->iface.copy_2d(b, logits + (size_t)r * vl, (size_t)sh->tp * vl * sizeof(float),
                                   gathered + (size_t)r * n_out * vl, vl * sizeof(float), vl * sizeof(float),
                                   (size_t)n_out));
    return RECUR_OK;
}

/* params.pp_micro_min_seqs by default (and for 0): see forward_micro */
#define PP_MICRO_MIN_SEQS 128

recur_model_params_t recur_model_default_params(void) {
    /* RECUR_GRAPHS=0 turns graphs off by default, so that programs that take the defaults
     * (recur bench, the server) can be compared with and without them. */
    const char *g = getenv("RECUR_GRAPHS");
    int32_t use_graphs = g && strcmp(g, "0") == 0 ? 0 : 1;
    return (recur_model_params_t){.n_slots = 9, .reserve_mib = 2048, .max_tokens = 128, .prefill_chunk = 0,
                                  .use_graphs = use_graphs, .state_dtype = RECUR_DTYPE_F32,
                                  .pp_micro_min_seqs = PP_MICRO_MIN_SEQS};
}

const recur_model_info_t *recur_model_info(const recur_model_t *m) { return &m->info; }
int32_t recur_model_n_slots(const recur_model_t *m) { return m->params.n_slots; }
int32_t recur_model_n_graphs(const recur_model_t *m) { return m->n_graphs; }

int recur_skip_parse(const char *list, uint32_t *mask) {
    static const char *const names[] = {"norm1",  "shift1", "proj",   "lora2",  "recur",   "recur_out", "out",
                                        "norm2",  "shift2", "ffn_up", "ffn_act", "ffn_down"};
    uint32_t m = 0;
    if (strcmp(list, "none") != 0)
        for (const char *p = list; *p;) {
            const size_t n = strcspn(p, ",");
            size_t i = 0;
            while (i < sizeof names / sizeof names[0] && !(strlen(names[i]) == n && !strncmp(p, names[i], n))) i++;
            if (n > 0 && i == sizeof names / sizeof names[0]) return -1;
            if (n > 0) m |= 1u << i;
            p += n + (p[n] == ',');
        }
    *mask = m;
    return 0;
}

void recur_model_free(recur_model_t *m) {
    if (!m) return;
    RECUR_ASSERT(m->magic == RECUR_MODEL_MAGIC);
    recur_backend_t *b = m->b;
    /* Graphs first: they reference the buffers freed below. */
    if (m->graphs)
        for (int32_t i = 0; i < m->n_buckets * GRAPH_MODES; i++)
            if (m->graphs[i]) b->iface.graph_free(b, m->graphs[i]);
    if (m->arch_ctx) m->arch->free(b, m->arch_ctx);
    b->iface.buf_free(b, m->pool);
    b->iface.buf_free(b, m->init_state);
    b->iface.buf_free(b, m->d_idx);
    b->iface.buf_free(b, m->d_logits);
    b->iface.buf_free(b, m->d_sample);
    b->iface.buf_free(b, m->d_sampled);
    b->iface.buf_free(b, m->d_bias_off);
    b->iface.buf_free(b, m->d_hist_off);
    b->iface.buf_free(b, m->d_bias);
    b->iface.buf_free(b, m->d_hist);
    b->iface.buf_free(b, m->d_logprob);
    b->iface.buf_free(b, m->d_top_logprob);
    b->iface.buf_free(b, m->d_top_token);
    if (m->h_idx_pinned) b->iface.host_free(b, m->h_idx);
    else free(m->h_idx);
    free(m->slot_seen);
    free(m->buckets);
    free(m->graphs);
    free(m->warm);
    m->magic = 0;
    free(m);
}

/* The bucket sizes of padded decode batches, up to and including max_tokens: 1, 2, 4, 8
 * (the GEMV path, one kernel per row count anyway), then steps of 1.5x / 2x alternately
 * (12, 16, 24, 32, ... 384, 512: at most a third of a batch is padding), then multiples
 * of 256 (where a step is a large GEMM and 256 more rows are cheap relative to it). */
static int32_t next_bucket(int32_t b) {
    if (b < 8) return 2 * b;
    if (b >= 512) return b + 256;
    return (b & (b - 1)) == 0 ? b + b / 2 : (b / 3) * 4; /* 8 -> 12 -> 16 -> 24 -> 32 ... */
}

static recur_status_t init_graphs(recur_model_t *m) {
    const recur_backend_iface_t *k = &m->b->iface;
    const int32_t T = m->params.max_tokens;
    m->graphs_on = m->params.use_graphs && k->graph_begin && k->graph_end && k->graph_launch && k->graph_free;
    if (!m->graphs_on) return RECUR_OK;
    int32_t n = 0;
    for (int32_t b = 1; b < T; b = next_bucket(b)) n++;
    n++; /* T itself */
    m->buckets = malloc((size_t)n * sizeof *m->buckets);
    m->graphs = calloc((size_t)n * GRAPH_MODES, sizeof *m->graphs);
    m->warm = calloc((size_t)n * GRAPH_MODES, 1);
    if (!m->buckets || !m->graphs || !m->warm) return RECUR_E_NOMEM;
    n = 0;
    for (int32_t b = 1; b < T; b = next_bucket(b)) m->buckets[n++] = b;
    m->buckets[n++] = T;
    m->n_buckets = n;
    return RECUR_OK;
}

recur_status_t recur_model_load(const char *path, recur_backend_t *b, const recur_model_params_t *p,
                                recur_model_t **out) {
    *out = NULL;
    recur_model_files_t *files = NULL;
    recur_status_t st = recur_model_files_open(path, &files);
    if (st != RECUR_OK) {
        /* the other ranks of a grid wait in the load's first vote: vote, then fail */
        if (p && p->comm) (void)recur_comm_agree(p->comm, st);
        return st;
    }
    st = recur_model_load_files(files, b, p, out);
    recur_model_files_free(files);
    return st;
}

recur_status_t recur_model_load_files(const recur_model_files_t *files, recur_backend_t *b,
                                      const recur_model_params_t *p, recur_model_t **out) {
    *out = NULL;
    const char *path = recur_model_files_path(files, 0);
    recur_model_params_t params = p ? *p : recur_model_default_params();
    if ((params.n_slots != 0 && params.n_slots < 2) || params.reserve_mib < 0 || params.max_tokens < 1 ||
        params.prefill_chunk < 0 || params.prefill_chunk > 4096 ||
        (params.state_dtype != RECUR_DTYPE_F32 && params.state_dtype != RECUR_DTYPE_BF16)) {
        recur_log_err("model params: n_slots must be 0 (fit to memory) or >= 2 (slot 0 is padding), max_tokens >= 1, "
                      "prefill_chunk in [0, 4096] and state_dtype f32 or bf16, got %d, %d, %d and %s", params.n_slots,
                      params.max_tokens, params.prefill_chunk, recur_dtype_name(params.state_dtype));
        return RECUR_E_INVAL;
    }
    recur_status_t st = RECUR_OK;
    recur_model_t *m = calloc(1, sizeof *m);
    if (!m) return RECUR_E_NOMEM;
    m->magic = RECUR_MODEL_MAGIC;
    m->b = b;
    m->params = params;
    for (size_t i = 0; i < sizeof recur_archs / sizeof recur_archs[0]; i++)
        if (recur_archs[i]->detect(files)) { m->arch = recur_archs[i]; break; }
    if (!m->arch) {
        recur_log_err("%s: not a checkpoint of a model recur knows (RWKV-7 x070, xLSTM)", path);
        st = RECUR_E_UNSUPPORTED;
        goto fail;
    }
    st = m->arch->load(b, files, &params, &m->info, &m->arch_ctx);
    /* every rank of a grid must know whether all of them loaded (no one waits on a peer
     * that gave up) */
    if (params.comm) st = recur_comm_agree(params.comm, st);
    if (st != RECUR_OK) goto fail;
    const recur_model_shard_t *sh = &m->info.shard;
    const int last_stage = sh->pp_rank == sh->pp - 1;

    size_t slot_bytes = m->info.state_bytes; /* bf16 state: smaller slots, so more fit below */
    RECUR_ASSERT(m->info.state_dtype == params.state_dtype && slot_bytes % 4 == 0);
    size_t T = (size_t)params.max_tokens;
    if (params.n_slots == 0) { /* the pool takes what the weights and the workspace leave */
        size_t used = 0, total = 0;
        double reserve = (double)params.reserve_mib * 1024.0 * 1024.0;
        /* the logits buffer and index arrays below are not allocated yet: count them */
        double later = (last_stage ? (double)T * m->info.n_vocab * sizeof(float) : 0.0) +
                       16.0 * (double)T * sizeof(int32_t);
        if (!b->iface.mem_info || b->iface.mem_info(b, &used, &total) != RECUR_OK) {
            recur_log_err("model params: n_slots 0 (fit to free memory) needs a backend that reports its memory");
            st = RECUR_E_INVAL;
            goto fail;
        }
        double fit = ((double)total - (double)used - reserve - later) / (double)slot_bytes;
        if (params.comm) { /* every rank's pool has the same slots: the fewest that fit anywhere */
            int64_t n = fit < 0 ? 0 : fit > (double)(1 << 20) ? 1 << 20 : (int64_t)fit;
            if ((st = recur_comm_min_i64(params.comm, &n)) != RECUR_OK) goto fail;
            fit = (double)n;
        }
        if (fit < 2) {
            recur_log_err("model: no room for state slots (%.2f MiB each) after the weights and %d MiB kept free",
                          (double)slot_bytes / (1024.0 * 1024.0), params.reserve_mib);
            st = RECUR_E_NOMEM;
            goto fail;
        }
        params.n_slots = fit > (double)(1 << 20) ? 1 << 20 : (int32_t)fit;
        m->params.n_slots = params.n_slots;
        recur_log_info("model: %d state slots fit in free memory (%.2f MiB each, %s matrices, %d MiB kept free)",
                       params.n_slots, (double)slot_bytes / (1024.0 * 1024.0), recur_dtype_name(params.state_dtype),
                       params.reserve_mib);
    }
    m->pool = b->iface.alloc(b, slot_bytes * (size_t)params.n_slots);
    m->init_state = b->iface.alloc(b, slot_bytes); /* both architectures start from all zeros (bf16 0 too) */
    if (b->iface.host_alloc && b->iface.host_free) {
        m->h_idx = b->iface.host_alloc(b, IDX_TOTAL(T) * sizeof(int32_t));
        m->h_idx_pinned = m->h_idx != NULL;
    }
    if (!m->h_idx) m->h_idx = malloc(IDX_TOTAL(T) * sizeof(int32_t));
    m->d_idx = b->iface.alloc(b, IDX_TOTAL(T) * sizeof(int32_t));
    /* logits exist on the last stage only */
    m->d_logits = b->iface.alloc(b, (last_stage ? T * (size_t)m->info.n_vocab : 1) * sizeof(float));
    if (b->iface.sample && last_stage) {
        m->d_sample = b->iface.alloc(b, T * sizeof(recur_sample_row_t));
        m->d_sampled = b->iface.alloc(b, T * sizeof(int32_t));
        m->d_bias_off = b->iface.alloc(b, (T + 1) * sizeof(int32_t));
        m->d_hist_off = b->iface.alloc(b, (T + 1) * sizeof(int32_t));
        m->d_logprob = b->iface.alloc(b, T * sizeof(float));
        m->d_top_logprob = b->iface.alloc(b, T * RECUR_SAMPLE_MAX_TOP * sizeof(float));
        m->d_top_token = b->iface.alloc(b, T * RECUR_SAMPLE_MAX_TOP * sizeof(int32_t));
        if (!m->d_sample || !m->d_sampled || !m->d_bias_off || !m->d_hist_off || !m->d_logprob || !m->d_top_logprob ||
            !m->d_top_token) {
            st = RECUR_E_NOMEM;
            goto fail_agree;
        }
    }
    m->slot_seen = calloc((size_t)params.n_slots, 1);
    if (!m->pool || !m->init_state || !m->h_idx || !m->d_idx || !m->d_logits || !m->slot_seen) {
        recur_log_err("out of memory allocating %d state slots of %.2f MiB", params.n_slots,
                      (double)slot_bytes / (1024.0 * 1024.0));
        st = RECUR_E_NOMEM;
        goto fail_agree;
    }
    for (size_t i = 0; i <= T; i++) m->h_idx[IDX_IOTA(T) + i] = (int32_t)i;
    if ((st = b->iface.upload(b, m->d_idx + IDX_IOTA(T), m->h_idx + IDX_IOTA(T), (T + 1) * sizeof(int32_t))) != RECUR_OK)
        goto fail_agree;
    if ((st = init_graphs(m)) != RECUR_OK) goto fail_agree;
    if (params.comm && (st = recur_comm_agree(params.comm, RECUR_OK)) != RECUR_OK) goto fail; /* a peer failed */
    if (params.comm) {
        const recur_grid_t *g = recur_comm_grid(params.comm);
        size_t used = 0, total = 0;
        int have_mem = b->iface.mem_info && b->iface.mem_info(b, &used, &total) == RECUR_OK;
        recur_log_info("rank %d (tp %d/%d, pp %d/%d) on %s: layers %d..%d, heads %d..%d, vocabulary %d..%d; read %.1f "
                       "MiB of the checkpoint; state %.2f MiB/slot; device memory in use %s%.0f MiB",
                       g->world_rank, sh->tp_rank, sh->tp, sh->pp_rank, sh->pp, g->host, sh->layer_begin,
                       sh->layer_end - 1, sh->head_begin, sh->head_begin + sh->n_head - 1, sh->vocab_begin,
                       sh->vocab_begin + sh->n_vocab - 1, (double)sh->bytes_read / (1024.0 * 1024.0),
                       (double)slot_bytes / (1024.0 * 1024.0), have_mem ? "" : "(unknown) ",
                       have_mem ? (double)used / (1024.0 * 1024.0) : 0.0);
    }
    recur_log_info("loaded %s: %s, %d layers, C=%d, H=%d, vocab %d, %.2fM params (%s), state %.2f MiB/slot (%s) x %d "
                   "slots, backend %s", path, m->info.arch_name, m->info.n_layer, m->info.n_embd, m->info.n_head,
                   m->info.n_vocab, (double)m->info.n_params / 1e6, recur_dtype_name(m->info.file_dtype),
                   (double)slot_bytes / (1024.0 * 1024.0), recur_dtype_name(m->info.state_dtype), params.n_slots,
                   recur_backend_name(b));
    *out = m;
    return RECUR_OK;
fail_agree: /* after the first agreement: the peers wait in the last one for this status */
    if (params.comm) (void)recur_comm_agree(params.comm, st);
fail:
    recur_model_free(m);
    return st;
}

static recur_status_t check_slot(const recur_model_t *m, int32_t slot) {
    if (slot < 1 || slot >= m->params.n_slots) {
        recur_log_err("state slot %d out of range [1, %d)", slot, m->params.n_slots);
        return RECUR_E_INVAL;
    }
    return RECUR_OK;
}

static recur_status_t check_batch(recur_model_t *m, const recur_batch_t *bt, const float *logits) {
    if (bt->n_seq < 0 || (bt->n_seq > 0 && (!bt->tokens || !bt->seq_len || !bt->slot))) {
        recur_log_err("forward: malformed batch");
        return RECUR_E_INVAL;
    }
    if (bt->logits != RECUR_LOGITS_NONE && !logits && bt->n_seq > 0) {
        recur_log_err("forward: logits requested without an output buffer");
        return RECUR_E_INVAL;
    }
    recur_status_t st = RECUR_OK;
    memset(m->slot_seen, 0, (size_t)m->params.n_slots);
    int64_t pos = 0;
    for (int32_t s = 0; s < bt->n_seq && st == RECUR_OK; s++) {
        if (bt->seq_len[s] < 1) {
            recur_log_err("forward: sequence %d has %d tokens (must be >= 1)", s, bt->seq_len[s]);
            st = RECUR_E_INVAL;
        } else if ((st = check_slot(m, bt->slot[s])) == RECUR_OK && m->slot_seen[bt->slot[s]]++) {
            recur_log_err("forward: slot %d appears twice in one batch", bt->slot[s]);
            st = RECUR_E_INVAL;
        }
        for (int32_t t = 0; st == RECUR_OK && t < bt->seq_len[s]; t++, pos++) {
            int32_t tok = bt->tokens[pos];
            if (tok < 0 || tok >= m->info.n_vocab) {
                recur_log_err("forward: token id %d at position %lld is outside the vocabulary [0, %d)", tok,
                              (long long)pos, m->info.n_vocab);
                st = RECUR_E_INVAL;
            }
        }
    }
    return st;
}

/* Where a forward's output rows go: logits to the host, or (sample != NULL) one token per
 * output row chosen on the backend, params[i] for output row i. `done` counts the output
 * rows already delivered. */
typedef struct out_sink {
    float *logits;                      /* host [rows][V], or NULL */
    const recur_sample_row_t *params;   /* host, one per output row, or NULL */
    const recur_sample_extras_t *ex;    /* host (lists already uploaded), or NULL */
    int32_t n_valid;
    int32_t *tokens;                    /* host, one per output row */
    int64_t done;
} out_sink_t;

/* Delivers the n_out rows of d_logits to the sink (only the last stage has them). */
static recur_status_t deliver(recur_model_t *m, out_sink_t *o, int32_t n_out) {
    recur_backend_t *b = m->b;
    if (n_out == 0) return RECUR_OK;
    if (m->info.shard.pp_rank != m->info.shard.pp - 1) {
        /* an earlier stage: its part ended with a send */
    } else if (o->params) {
        RECUR_TRY(b->iface.upload(b, m->d_sample, o->params + o->done, (size_t)n_out * sizeof(recur_sample_row_t)));
        const recur_sample_extras_t *ex = o->ex;
        recur_sample_extras_t dex = {0};
        if (ex) { /* the piece's rows: their slice of the offsets (into the whole lists) */
            if (ex->n_bias > 0) {
                RECUR_TRY(b->iface.upload(b, m->d_bias_off, ex->bias_off + o->done, ((size_t)n_out + 1) * sizeof(int32_t)));
                dex.n_bias = ex->n_bias, dex.bias_off = m->d_bias_off, dex.bias = m->d_bias;
            }
            if (ex->n_hist > 0) {
                RECUR_TRY(b->iface.upload(b, m->d_hist_off, ex->hist_off + o->done, ((size_t)n_out + 1) * sizeof(int32_t)));
                dex.n_hist = ex->n_hist, dex.hist_off = m->d_hist_off, dex.hist = m->d_hist;
            }
            if (ex->top_n >= 0) {
                dex.top_n = ex->top_n, dex.logprob = m->d_logprob;
                dex.top_token = m->d_top_token, dex.top_logprob = m->d_top_logprob;
            }
        }
        RECUR_TRY(b->iface.sample(b, m->d_logits, n_out, m->info.n_vocab, o->n_valid, m->d_sample, ex ? &dex : NULL,
                                  m->d_sampled));
        RECUR_TRY(b->iface.download(b, o->tokens + o->done, m->d_sampled, (size_t)n_out * sizeof(int32_t)));
        if (dex.logprob) {
            const size_t k = (size_t)dex.top_n;
            RECUR_TRY(b->iface.download(b, ex->logprob + o->done, m->d_logprob, (size_t)n_out * sizeof(float)));
            if (k) {
                RECUR_TRY(b->iface.download(b, ex->top_token + o->done * (int64_t)k, m->d_top_token,
                                            (size_t)n_out * k * sizeof(int32_t)));
                RECUR_TRY(b->iface.download(b, ex->top_logprob + o->done * (int64_t)k, m->d_top_logprob,
                                            (size_t)n_out * k * sizeof(float)));
            }
        }
    } else if (o->logits) {
        RECUR_TRY(b->iface.download(b, o->logits + o->done * m->info.n_vocab, m->d_logits,
                                    (size_t)n_out * m->info.n_vocab * sizeof(float)));
    }
    o->done += n_out;
    return RECUR_OK;
}

static recur_status_t flush_piece(recur_model_t *m, int32_t n_rows, int32_t n_seq, int32_t n_out, out_sink_t *o) {
    recur_backend_t *b = m->b;
    const int32_t T = m->params.max_tokens;
    m->h_idx[IDX_SEQ(T) + (size_t)n_seq] = n_rows;
    /* One upload of the staging prefix in use instead of one per array. */
    size_t used = n_out ? IDX_OUT(T) + (size_t)n_out : IDX_SLOT(T) + (size_t)n_seq;
    RECUR_TRY(b->iface.upload(b, m->d_idx, m->h_idx, used * sizeof(int32_t)));
    recur_rows_t rows = {.n_rows = n_rows, .n_seq = n_seq, .seq_off = m->d_idx + IDX_SEQ(T), .slot = m->d_idx + IDX_SLOT(T)};
    RECUR_TRY(m->arch->forward(b, m->arch_ctx, &rows, m->d_idx + IDX_TOK(T), m->pool, m->info.state_bytes, n_out,
                               m->d_idx + IDX_OUT(T), m->d_logits));
    return deliver(m, o, n_out);
}

/* The smallest bucket that holds n rows (n <= max_tokens), by index. */
static int32_t bucket_of(const recur_model_t *m, int32_t n) {
    int32_t i = 0;
    while (m->buckets[i] < n) i++;
    return i;
}

/* Records the forward of a padded decode batch as a graph. The caller has run this exact
 * forward (same bucket, same mode) eagerly before, so every scratch buffer is sized. On a
 * failure the graph is not recorded and nothing has run: *graph stays NULL. */
static recur_status_t record_graph(recur_model_t *m, const recur_rows_t *rows, int32_t n_out, void **graph) {
    recur_backend_t *b = m->b;
    const int32_t T = m->params.max_tokens;
    *graph = NULL;
    RECUR_TRY(b->iface.graph_begin(b));
    recur_status_t st = m->arch->forward(b, m->arch_ctx, rows, m->d_idx + IDX_DEC(T), m->pool, m->info.state_bytes,
                                         n_out, m->d_idx + IDX_IOTA(T), m->d_logits);
    void *g = NULL;
    recur_status_t st_end = b->iface.graph_end(b, &g);
    if (st == RECUR_OK && st_end != RECUR_OK) st = st_end;
    if (st != RECUR_OK) {
        if (g) b->iface.graph_free(b, g);
        return st;
    }
    *graph = g;
    return RECUR_OK;
}

/* A decode batch (every sequence one token, n_seq <= max_tokens) through the graph of its
 * bucket. Rows n_seq..P-1 are padding: token 0 in slot 0. Several padding rows then
 * share slot 0 in one batch, against the "distinct slots" rule of recur_rows_t; that is
 * safe because
 *  - every op writes only the state of the slot of the row's own sequence, so padding
 *    rows write slot 0 and nothing else (the races among them leave slot 0 holding some
 *    mix of their results, which no request ever reads: slot 0 is refused by check_slot);
 *  - every op besides the recurrences is row-wise (norms, GEMMs, elementwise, gather),
 *    and the recurrences read a row's own sequence only, so whatever a padding row holds,
 *    NaN or Inf included, never reaches a real row; its logits are not copied out.
 * One reserved slot per padding row would avoid the races but cost a slot's state per
 * row (128 MiB for xLSTM 7B), hence the shared slot. */
static recur_status_t forward_decode(recur_model_t *m, const recur_batch_t *bt, out_sink_t *o) {
    recur_backend_t *b = m->b;
    const int32_t T = m->params.max_tokens, B = bt->n_seq;
    const int32_t bi = bucket_of(m, B), P = m->buckets[bi];
    const int mode = bt->logits == RECUR_LOGITS_NONE ? GRAPH_NONE : GRAPH_LAST;
    const int32_t n_out = mode == GRAPH_LAST ? P : 0;
    int32_t *h = m->h_idx + IDX_DEC(T), *d = m->d_idx + IDX_DEC(T);

    if (m->dec_upload_pending) { /* the last step had no download to wait for its upload */
        RECUR_TRY(b->iface.synchronize(b));
        m->dec_upload_pending = 0;
    }
    memcpy(h, bt->tokens, (size_t)B * sizeof(int32_t));
    memset(h + B, 0, (size_t)(P - B) * sizeof(int32_t));
    memcpy(h + P, bt->slot, (size_t)B * sizeof(int32_t));
    memset(h + P + B, 0, (size_t)(P - B) * sizeof(int32_t));
    if (b->iface.upload_async) {
        RECUR_TRY(b->iface.upload_async(b, d, h, 2 * (size_t)P * sizeof(int32_t)));
        m->dec_upload_pending = 1;
    } else {
        RECUR_TRY(b->iface.upload(b, d, h, 2 * (size_t)P * sizeof(int32_t)));
    }
    /* seq_off = 0..P and out_rows = 0..P-1: both the iota block. */
    const recur_rows_t rows = {.n_rows = P, .n_seq = P, .seq_off = m->d_idx + IDX_IOTA(T), .slot = d + P};
    void **graph = &m->graphs[bi * GRAPH_MODES + mode];
    uint8_t *warm = &m->warm[bi * GRAPH_MODES + mode];
    if (!*graph && *warm) {
        recur_status_t st = record_graph(m, &rows, n_out, graph);
        if (st == RECUR_OK) {
            m->n_graphs++;
            recur_log_debug("model: recorded the decode graph of %d rows (%s)", P, mode == GRAPH_LAST ? "logits" : "no logits");
        } else {
            /* Nothing ran; go on eagerly, for good (a backend that cannot record this
             * forward once will not later). */
            recur_log_warn("model: recording a decode graph failed (%s); decoding without graphs from now on",
                           recur_status_str(st));
            m->graphs_on = 0;
        }
    }
    if (*graph) {
        RECUR_TRY(b->iface.graph_launch(b, *graph));
    } else {
        RECUR_TRY(m->arch->forward(b, m->arch_ctx, &rows, d, m->pool, m->info.state_bytes, n_out,
                                   m->d_idx + IDX_IOTA(T), m->d_logits));
        *warm = 1;
    }
    if (mode == GRAPH_LAST) {
        /* Only the real rows; the download waits for the step, upload included. */
        RECUR_TRY(deliver(m, o, B));
        /* an earlier pipeline stage downloads nothing: its upload may still be queued
         * behind a send that waits for the next stage, and must not be overwritten */
        if (m->info.shard.pp_rank == m->info.shard.pp - 1) m->dec_upload_pending = 0;
    }
    return RECUR_OK;
}

/* A batch the decode graphs serve: every sequence exactly one token, all in one piece. */
static int is_decode_batch(const recur_model_t *m, const recur_batch_t *bt) {
    if (!m->graphs_on || bt->n_seq < 1 || bt->n_seq > m->params.max_tokens) return 0;
    for (int32_t s = 0; s < bt->n_seq; s++)
        if (bt->seq_len[s] != 1) return 0;
    return 1; /* LAST and ALL are the same output here: one row per sequence */
}

static recur_status_t forward(recur_model_t *m, const recur_batch_t *bt, out_sink_t *o) {
    if (is_decode_batch(m, bt)) return forward_decode(m, bt, o);
    const int32_t T = m->params.max_tokens;
    int32_t *h_seq_off = m->h_idx + IDX_SEQ(T), *h_slot = m->h_idx + IDX_SLOT(T);
    int32_t *h_out_rows = m->h_idx + IDX_OUT(T), *h_tokens = m->h_idx + IDX_TOK(T);
    int32_t n_rows = 0, n_seq = 0, n_out = 0;
    int64_t pos = 0; /* next batch token */
    for (int32_t s = 0; s < bt->n_seq; s++) {
        int32_t done = 0;
        while (done < bt->seq_len[s]) {
            /* A sequence may be cut across pieces: its state carries over in its slot. */
            int32_t take = bt->seq_len[s] - done;
            if (take > T - n_rows) take = T - n_rows;
            h_seq_off[n_seq] = n_rows;
            h_slot[n_seq] = bt->slot[s];
            memcpy(h_tokens + n_rows, bt->tokens + pos, (size_t)take * sizeof(int32_t));
            if (bt->logits == RECUR_LOGITS_ALL)
                for (int32_t t = 0; t < take; t++) h_out_rows[n_out++] = n_rows + t;
            else if (bt->logits == RECUR_LOGITS_LAST && done + take == bt->seq_len[s])
                h_out_rows[n_out++] = n_rows + take - 1;
            n_rows += take;
            n_seq++;
            done += take;
            pos += take;
            if (n_rows == T) {
                RECUR_TRY(flush_piece(m, n_rows, n_seq, n_out, o));
                n_rows = n_seq = n_out = 0;
            }
        }
    }
    if (n_rows > 0) RECUR_TRY(flush_piece(m, n_rows, n_seq, n_out, o));
    return RECUR_OK;
}

/* forward() in micro-batches of whole sequences (pp > 1): while stage s runs micro-batch
 * j, stage s - 1 runs j + 1. With n of them a step takes (n + pp - 1) / n of one stage's
 * time for the whole batch, so more are better (2 stages: 1.33x one GPU with 2, 1.78x with
 * 8) until they get too small: a micro-batch reads the stage's weights again, and below
 * params.pp_micro_min_seqs sequences that costs more than the overlap gains (at small
 * batches a step is bound by the weight reads). So one per pp_micro_min_seqs sequences, up
 * to 8 pp, and none (the whole batch through each stage in turn) when that makes fewer
 * than 2. Output rows keep the batch's order. */
static recur_status_t forward_micro(recur_model_t *m, const recur_batch_t *bt, out_sink_t *o) {
    const int32_t pp = m->info.shard.pp;
    const int32_t min_seqs = m->params.pp_micro_min_seqs > 0 ? m->params.pp_micro_min_seqs : PP_MICRO_MIN_SEQS;
    int32_t n_mb = bt->n_seq / min_seqs;
    if (n_mb > 8 * pp) n_mb = 8 * pp;
    if (pp == 1 || n_mb < 2) return forward(m, bt, o);
    int64_t pos = 0;
    for (int32_t j = 0, s0 = 0; j < n_mb; j++) {
        const int32_t s1 = (int32_t)((int64_t)bt->n_seq * (j + 1) / n_mb);
        recur_batch_t sub = *bt;
        sub.n_seq = s1 - s0;
        sub.tokens = bt->tokens + pos;
        sub.seq_len = bt->seq_len + s0;
        sub.slot = bt->slot + s0;
        RECUR_TRY(forward(m, &sub, o));
        for (int32_t s = s0; s < s1; s++) pos += bt->seq_len[s];
        s0 = s1;
    }
    return RECUR_OK;
}

recur_status_t recur_model_forward(recur_model_t *m, const recur_batch_t *bt, float *logits) {
    RECUR_ASSERT(m && m->magic == RECUR_MODEL_MAGIC);
    const int last_stage = m->info.shard.pp_rank == m->info.shard.pp - 1;
    /* the earlier stages have no logits to write: check the batch as if they had */
    RECUR_TRY(check_batch(m, bt, last_stage ? logits : (const float *)bt));
    out_sink_t o = {.logits = logits};
    return forward_micro(m, bt, &o);
}

/* Checks the host lists of ex (offsets from 0, nondecreasing, ending at the count) and
 * uploads them, growing the device lists when a step needs more room. Last stage only. */
static recur_status_t upload_lists(recur_model_t *m, const recur_sample_extras_t *ex, int32_t n_seq) {
    recur_backend_t *b = m->b;
    struct {
        int32_t n;
        const int32_t *off;
        const void *list;
        size_t elem;
        void **dev;
        size_t *cap;
        const char *what;
    } l[2] = {{ex->n_bias, ex->bias_off, ex->bias, sizeof(recur_sample_bias_t), (void **)&m->d_bias, &m->cap_bias,
               "bias"},
              {ex->n_hist, ex->hist_off, ex->hist, sizeof(recur_sample_hist_t), (void **)&m->d_hist, &m->cap_hist,
               "history"}};
    for (int k = 0; k < 2; k++) {
        if (l[k].n <= 0) continue;
        int ok = l[k].off && l[k].list && l[k].off[0] == 0 && l[k].off[n_seq] == l[k].n;
        for (int32_t i = 0; ok && i < n_seq; i++) ok = l[k].off[i] <= l[k].off[i + 1];
        if (!ok) {
            recur_log_err("forward_sample: malformed %s list (offsets must run from 0 to its %d entries)", l[k].what,
                          l[k].n);
            return RECUR_E_INVAL;
        }
        if ((size_t)l[k].n > *l[k].cap) {
            size_t cap = *l[k].cap ? *l[k].cap : 1024;
            while (cap < (size_t)l[k].n) cap *= 2;
            b->iface.buf_free(b, *l[k].dev);
            *l[k].cap = 0;
            if (!(*l[k].dev = b->iface.alloc(b, cap * l[k].elem))) {
                recur_log_err("forward_sample: out of backend memory for %zu %s entries", cap, l[k].what);
                return RECUR_E_NOMEM;
            }
            *l[k].cap = cap;
        }
        RECUR_TRY(b->iface.upload(b, *l[k].dev, l[k].list, (size_t)l[k].n * l[k].elem));
    }
    return RECUR_OK;
}

recur_status_t recur_model_forward_sample_ex(recur_model_t *m, const recur_batch_t *bt,
                                             const recur_sample_row_t *params, const recur_sample_extras_t *ex,
                                             int32_t n_valid, int32_t *tokens) {
    RECUR_ASSERT(m && m->magic == RECUR_MODEL_MAGIC);
    if (!m->b->iface.sample) {
        recur_log_err("forward_sample: the %s backend has no sample op", recur_backend_name(m->b));
        return RECUR_E_UNSUPPORTED;
    }
    if (!params || !tokens || n_valid < 1 || n_valid > m->info.n_vocab) {
        recur_log_err("forward_sample: needs parameters and an output per sequence, and n_valid in [1, %d] (got %d)",
                      m->info.n_vocab, n_valid);
        return RECUR_E_INVAL;
    }
    const recur_model_shard_t *sh = &m->info.shard;
    const int last_stage = sh->pp_rank == sh->pp - 1;
    if (ex && (ex->top_n < -1 || ex->top_n > RECUR_SAMPLE_MAX_TOP ||
               (ex->top_n >= 0 && (!ex->logprob || (ex->top_n > 0 && (!ex->top_token || !ex->top_logprob)))))) {
        recur_log_err("forward_sample: top_n %d must be in [-1, %d], with outputs for the logprobs", ex->top_n,
                      RECUR_SAMPLE_MAX_TOP);
        return RECUR_E_INVAL;
    }
    recur_batch_t last = *bt;
    last.logits = RECUR_LOGITS_LAST;
    /* check_batch only asks that LAST has somewhere to go: the tokens array here. */
    RECUR_TRY(check_batch(m, &last, (const float *)tokens));
    recur_sample_extras_t hex = {.top_n = -1};
    if (ex) {
        hex = *ex;
        if (!last_stage) hex.n_bias = hex.n_hist = 0; /* lists are read where the logits are */
        recur_status_t st = last_stage ? upload_lists(m, &hex, bt->n_seq) : RECUR_OK;
        /* every rank passed extras: all of them learn whether the lists fit before the forward */
        if (m->params.comm) st = recur_comm_agree(m->params.comm, st);
        if (st != RECUR_OK) return st;
    }
    out_sink_t o = {.params = params, .ex = ex ? &hex : NULL, .n_valid = n_valid, .tokens = tokens};
    RECUR_TRY(forward_micro(m, &last, &o));
    if (!m->params.comm) return RECUR_OK;
    /* the last stage's first rank sampled: everyone gets its tokens (and logprobs) */
    const int root = (sh->pp - 1) * sh->tp;
    const size_t n = (size_t)bt->n_seq;
    RECUR_TRY(recur_comm_bcast_host(m->params.comm, tokens, n * sizeof(int32_t), root));
    if (ex && ex->top_n >= 0) {
        RECUR_TRY(recur_comm_bcast_host(m->params.comm, ex->logprob, n * sizeof(float), root));
        if (ex->top_n > 0) {
            RECUR_TRY(recur_comm_bcast_host(m->params.comm, ex->top_token, n * (size_t)ex->top_n * sizeof(int32_t), root));
            RECUR_TRY(recur_comm_bcast_host(m->params.comm, ex->top_logprob, n * (size_t)ex->top_n * sizeof(float), root));
        }
    }
    return RECUR_OK;
}

recur_status_t recur_model_forward_sample(recur_model_t *m, const recur_batch_t *bt, const recur_sample_row_t *params,
                                          int32_t n_valid, int32_t *tokens) {
    return recur_model_forward_sample_ex(m, bt, params, NULL, n_valid, tokens);
}

static void *slot_ptr(recur_model_t *m, int32_t slot) { return (char *)m->pool + (size_t)slot * m->info.state_bytes; }

recur_status_t recur_model_state_reset(recur_model_t *m, int32_t slot) {
    RECUR_TRY(check_slot(m, slot));
    return m->b->iface.copy(m->b, slot_ptr(m, slot), m->init_state, m->info.state_bytes);
}

recur_status_t recur_model_state_get(recur_model_t *m, int32_t slot, void *host) {
    RECUR_TRY(check_slot(m, slot));
    return m->b->iface.download(m->b, host, slot_ptr(m, slot), m->info.state_bytes);
}

recur_status_t recur_model_state_set(recur_model_t *m, int32_t slot, const void *host) {
    RECUR_TRY(check_slot(m, slot));
    return m->b->iface.upload(m->b, slot_ptr(m, slot), host, m->info.state_bytes);
}

recur_status_t recur_model_state_copy(recur_model_t *m, int32_t dst_slot, int32_t src_slot) {
    RECUR_TRY(check_slot(m, dst_slot));
    RECUR_TRY(check_slot(m, src_slot));
    if (dst_slot == src_slot) return RECUR_OK;
    return m->b->iface.copy(m->b, slot_ptr(m, dst_slot), slot_ptr(m, src_slot), m->info.state_bytes);
}
