/* recur_model.c: the architecture-independent part of a model (see recur_model.h). */
#include "recur_model.h"

#include <stdlib.h>
#include <string.h>

#include "recur_log.h"
#include "recur_model_arch.h"
#include "recur_model_files.h"

#define RECUR_MODEL_MAGIC 0x52434d4fu /* "RCMO" */

static const recur_model_arch_t *const recur_archs[] = {&recur_arch_rwkv7, &recur_arch_xlstm};

struct recur_model {
    uint32_t magic;
    recur_backend_t *b;
    const recur_model_arch_t *arch;
    void *arch_ctx;
    recur_model_info_t info;
    recur_model_params_t params;
    float *pool;          /* backend: n_slots * info.state_floats */
    float *init_state;    /* backend: one slot's initial state    */
    /* Per-piece index arrays, host staging and backend copies (sized for max_tokens). */
    int32_t *h_seq_off, *h_slot, *h_out_rows, *h_tokens;
    int32_t *d_seq_off, *d_slot, *d_out_rows, *d_tokens;
    float *d_logits;      /* backend: [max_tokens][n_vocab] */
    uint8_t *slot_seen;   /* host: n_slots, for the repeated-slot check */
};

recur_model_params_t recur_model_default_params(void) {
    return (recur_model_params_t){.n_slots = 9, .max_tokens = 128, .prefill_chunk = 0};
}

const recur_model_info_t *recur_model_info(const recur_model_t *m) { return &m->info; }
int32_t recur_model_n_slots(const recur_model_t *m) { return m->params.n_slots; }

void recur_model_free(recur_model_t *m) {
    if (!m) return;
    RECUR_ASSERT(m->magic == RECUR_MODEL_MAGIC);
    recur_backend_t *b = m->b;
    if (m->arch_ctx) m->arch->free(b, m->arch_ctx);
    b->iface.buf_free(b, m->pool);
    b->iface.buf_free(b, m->init_state);
    b->iface.buf_free(b, m->d_seq_off);
    b->iface.buf_free(b, m->d_slot);
    b->iface.buf_free(b, m->d_out_rows);
    b->iface.buf_free(b, m->d_tokens);
    b->iface.buf_free(b, m->d_logits);
    free(m->h_seq_off);
    free(m->h_slot);
    free(m->h_out_rows);
    free(m->h_tokens);
    free(m->slot_seen);
    m->magic = 0;
    free(m);
}

recur_status_t recur_model_load(const char *path, recur_backend_t *b, const recur_model_params_t *p,
                                recur_model_t **out) {
    *out = NULL;
    recur_model_files_t *files = NULL;
    RECUR_TRY(recur_model_files_open(path, &files));
    recur_status_t st = recur_model_load_files(files, b, p, out);
    recur_model_files_free(files);
    return st;
}

recur_status_t recur_model_load_files(const recur_model_files_t *files, recur_backend_t *b,
                                      const recur_model_params_t *p, recur_model_t **out) {
    *out = NULL;
    const char *path = recur_model_files_path(files, 0);
    recur_model_params_t params = p ? *p : recur_model_default_params();
    if (params.n_slots < 2 || params.max_tokens < 1 || params.prefill_chunk < 0 || params.prefill_chunk > 4096) {
        recur_log_err("model params: n_slots must be >= 2 (slot 0 is padding), max_tokens >= 1 and prefill_chunk "
                      "in [0, 4096], got %d, %d and %d", params.n_slots, params.max_tokens, params.prefill_chunk);
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
    if (st != RECUR_OK) goto fail;

    size_t slot_bytes = m->info.state_floats * sizeof(float);
    size_t T = (size_t)params.max_tokens;
    m->pool = b->iface.alloc(b, slot_bytes * (size_t)params.n_slots);
    m->init_state = b->iface.alloc(b, slot_bytes); /* both architectures start from all zeros */
    m->h_seq_off = malloc((T + 1) * sizeof(int32_t));
    m->h_slot = malloc(T * sizeof(int32_t));
    m->h_out_rows = malloc(T * sizeof(int32_t));
    m->h_tokens = malloc(T * sizeof(int32_t));
    m->d_seq_off = b->iface.alloc(b, (T + 1) * sizeof(int32_t));
    m->d_slot = b->iface.alloc(b, T * sizeof(int32_t));
    m->d_out_rows = b->iface.alloc(b, T * sizeof(int32_t));
    m->d_tokens = b->iface.alloc(b, T * sizeof(int32_t));
    m->d_logits = b->iface.alloc(b, T * (size_t)m->info.n_vocab * sizeof(float));
    m->slot_seen = calloc((size_t)params.n_slots, 1);
    if (!m->pool || !m->init_state || !m->h_seq_off || !m->h_slot || !m->h_out_rows || !m->h_tokens ||
        !m->d_seq_off || !m->d_slot || !m->d_out_rows || !m->d_tokens || !m->d_logits || !m->slot_seen) {
        recur_log_err("out of memory allocating %d state slots of %.2f MiB", params.n_slots,
                      (double)slot_bytes / (1024.0 * 1024.0));
        st = RECUR_E_NOMEM;
        goto fail;
    }
    recur_log_info("loaded %s: %s, %d layers, C=%d, H=%d, vocab %d, %.2fM params (%s), state %.2f MiB/slot x %d slots, backend %s",
                   path, m->info.arch_name, m->info.n_layer, m->info.n_embd, m->info.n_head, m->info.n_vocab,
                   (double)m->info.n_params / 1e6, recur_dtype_name(m->info.file_dtype),
                   (double)slot_bytes / (1024.0 * 1024.0), params.n_slots, recur_backend_name(b));
    *out = m;
    return RECUR_OK;
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

/* Runs the rows gathered so far as one piece and copies its logits out. */
static recur_status_t flush_piece(recur_model_t *m, int32_t n_rows, int32_t n_seq, int32_t n_out, float *logits_dst) {
    recur_backend_t *b = m->b;
    m->h_seq_off[n_seq] = n_rows;
    RECUR_TRY(b->iface.upload(b, m->d_tokens, m->h_tokens, (size_t)n_rows * sizeof(int32_t)));
    RECUR_TRY(b->iface.upload(b, m->d_seq_off, m->h_seq_off, (size_t)(n_seq + 1) * sizeof(int32_t)));
    RECUR_TRY(b->iface.upload(b, m->d_slot, m->h_slot, (size_t)n_seq * sizeof(int32_t)));
    if (n_out) RECUR_TRY(b->iface.upload(b, m->d_out_rows, m->h_out_rows, (size_t)n_out * sizeof(int32_t)));
    recur_rows_t rows = {.n_rows = n_rows, .n_seq = n_seq, .seq_off = m->d_seq_off, .slot = m->d_slot};
    RECUR_TRY(m->arch->forward(b, m->arch_ctx, &rows, m->d_tokens, m->pool, m->info.state_floats, n_out,
                               m->d_out_rows, m->d_logits));
    if (n_out)
        RECUR_TRY(b->iface.download(b, logits_dst, m->d_logits, (size_t)n_out * m->info.n_vocab * sizeof(float)));
    return RECUR_OK;
}

recur_status_t recur_model_forward(recur_model_t *m, const recur_batch_t *bt, float *logits) {
    RECUR_ASSERT(m && m->magic == RECUR_MODEL_MAGIC);
    RECUR_TRY(check_batch(m, bt, logits));
    const int32_t T = m->params.max_tokens;
    const size_t V = (size_t)m->info.n_vocab;
    int32_t n_rows = 0, n_seq = 0, n_out = 0;
    int64_t pos = 0;         /* next batch token           */
    int64_t out_written = 0; /* logits rows already copied */
    for (int32_t s = 0; s < bt->n_seq; s++) {
        int32_t done = 0;
        while (done < bt->seq_len[s]) {
            /* A sequence may be cut across pieces: its state carries over in its slot. */
            int32_t take = bt->seq_len[s] - done;
            if (take > T - n_rows) take = T - n_rows;
            m->h_seq_off[n_seq] = n_rows;
            m->h_slot[n_seq] = bt->slot[s];
            memcpy(m->h_tokens + n_rows, bt->tokens + pos, (size_t)take * sizeof(int32_t));
            if (bt->logits == RECUR_LOGITS_ALL)
                for (int32_t t = 0; t < take; t++) m->h_out_rows[n_out++] = n_rows + t;
            else if (bt->logits == RECUR_LOGITS_LAST && done + take == bt->seq_len[s])
                m->h_out_rows[n_out++] = n_rows + take - 1;
            n_rows += take;
            n_seq++;
            done += take;
            pos += take;
            if (n_rows == T) {
                RECUR_TRY(flush_piece(m, n_rows, n_seq, n_out, logits ? logits + out_written * V : NULL));
                out_written += n_out;
                n_rows = n_seq = n_out = 0;
            }
        }
    }
    if (n_rows > 0) RECUR_TRY(flush_piece(m, n_rows, n_seq, n_out, logits ? logits + out_written * V : NULL));
    return RECUR_OK;
}

static float *slot_ptr(recur_model_t *m, int32_t slot) { return m->pool + (size_t)slot * m->info.state_floats; }

recur_status_t recur_model_state_reset(recur_model_t *m, int32_t slot) {
    RECUR_TRY(check_slot(m, slot));
    return m->b->iface.copy(m->b, slot_ptr(m, slot), m->init_state, m->info.state_floats * sizeof(float));
}

recur_status_t recur_model_state_get(recur_model_t *m, int32_t slot, float *host) {
    RECUR_TRY(check_slot(m, slot));
    return m->b->iface.download(m->b, host, slot_ptr(m, slot), m->info.state_floats * sizeof(float));
}

recur_status_t recur_model_state_set(recur_model_t *m, int32_t slot, const float *host) {
    RECUR_TRY(check_slot(m, slot));
    return m->b->iface.upload(m->b, slot_ptr(m, slot), host, m->info.state_floats * sizeof(float));
}

recur_status_t recur_model_state_copy(recur_model_t *m, int32_t dst_slot, int32_t src_slot) {
    RECUR_TRY(check_slot(m, dst_slot));
    RECUR_TRY(check_slot(m, src_slot));
    if (dst_slot == src_slot) return RECUR_OK;
    return m->b->iface.copy(m->b, slot_ptr(m, dst_slot), slot_ptr(m, src_slot), m->info.state_floats * sizeof(float));
}
