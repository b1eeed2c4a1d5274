/* recur_worker.c: see recur_worker.h for the protocol between the ranks and with the
 * coordinator. */
#include "recur_worker.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_log.h"
#include "recur_msgsock.h"
#include "recur_proto.h"
#include "recur_state_ckpt.h"
#include "recur_state_file.h"
#include "recur_token_hist.h"

/* The command header rank 0 broadcasts to the other ranks (recur_worker.h). */
enum { CMD_RUN = 1, CMD_STOP = 2 };
typedef struct cmd_hdr {
    int32_t kind;
    int32_t exit_code;  /* CMD_STOP */
    uint64_t n_bytes;   /* CMD_RUN: the envelope's size, broadcast next */
} cmd_hdr_t;

/* A state shard kept in this rank's host memory under a key (SlotOp COPY to / from a key). */
typedef struct host_entry {
    uint64_t key;
    void *buf;   /* info->state_bytes */
} host_entry_t;

typedef struct worker {
    recur_model_t *m;
    recur_comm_t *comm;        /* NULL: one rank */
    const recur_model_info_t *info;
    recur_grid_t grid;
    int multi;                 /* more than one rank: commands are broadcast */
    int32_t n_slots;
    recur_worker_params_t p;
    /* rank 0 only */
    void *zctx;
    recur_msgsock_t *sock;
    int ready;
    uint64_t epoch, hb_seq, last_step;
    double last_recv, last_send; /* monotonic seconds */
    void *hs_events;             /* rank 0 with CURVE: failed handshakes of the socket      */
    uint64_t hs_failed;          /* failed handshakes so far                                */
    double hs_logged[5];         /* when one of each RECUR_MSGSOCK_HS_* kind was last logged */
    /* every rank: the envelope bytes of the current command */
    uint8_t *buf;
    size_t buf_cap;
    /* every rank: its host copies of states, and what its checkpoints must match */
    host_entry_t *host;
    size_t n_host, cap_host;
    recur_ckpt_identity_t ident;
    recur_ckpt_shard_t shard;   /* this rank's part of a slot */
    /* sampling extras (recur_worker.h "Sampling"): the token history of every slot, kept
     * where the logits are (the last pipeline stage's ranks; NULL elsewhere) */
    recur_token_hist_t *hist;
    int32_t *bias_stamp, stamp;       /* rank 0: [n_vocab], the bias duplicate check */
    /* a plan's extras, grown and reused: the CSR lists and the logprob outputs */
    int32_t *x_boff, *x_hoff;
    recur_sample_bias_t *x_bias;
    recur_sample_hist_t *x_hist;
    float *x_lp, *x_tl;
    int32_t *x_tt;
    size_t cap_boff, cap_hoff, cap_bias, cap_hist, cap_lp, cap_tl, cap_tt;
    /* the plan's logprobs per sequence for its StepResult (res_top_n -1: none asked) */
    int32_t res_top_n;
    float *res_lp, *res_tl;
    int32_t *res_tt;
    size_t cap_res_lp, cap_res_tl, cap_res_tt;
} worker_t;

/* Room for need elements of elem bytes in *p (grown by doubling). 0, or -1 out of memory. */
static int grow(void *pp, size_t *cap, size_t need, size_t elem) {
    void **p = pp;
    if (need <= *cap && *p) return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

recur_worker_params_t recur_worker_default_params(void) {
    return (recur_worker_params_t){.heartbeat_ms = 1000, .idle_limit_ms = 30000};
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ checkpoint identity */

recur_status_t recur_worker_checkpoint_id(const char *path, char *buf, size_t n) {
    struct stat st;
    if (!path || !buf || n < 64) return RECUR_E_INVAL;
    if (n > RECUR_PROTO_MAX_NAME_BYTES) n = RECUR_PROTO_MAX_NAME_BYTES;
    if (stat(path, &st) != 0) {
        recur_log_err("%s: cannot stat the checkpoint: %s", path, strerror(errno));
        return RECUR_E_IO;
    }
    unsigned long long size = 0;
    long long mtime = 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) {
            recur_log_err("%s: cannot list the checkpoint directory: %s", path, strerror(errno));
            return RECUR_E_IO;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char f[PATH_MAX];
            struct stat fs;
            if (snprintf(f, sizeof f, "%s/%s", path, e->d_name) >= (int)sizeof f) continue;
            if (stat(f, &fs) != 0 || !S_ISREG(fs.st_mode)) continue;
            size += (unsigned long long)fs.st_size;
            if ((long long)fs.st_mtime > mtime) mtime = (long long)fs.st_mtime;
        }
        closedir(d);
    } else {
        size = (unsigned long long)st.st_size;
        mtime = (long long)st.st_mtime;
    }
    char real[PATH_MAX];
    const char *name = realpath(path, real) ? real : path;
    char tail[96];
    snprintf(tail, sizeof tail, "|size=%llu|mtime=%lld", size, mtime);
    /* keep the end of a long path: the file name says more than the mount point */
    size_t room = n - strlen(tail) - 1, len = strlen(name);
    if (len > room) name += len - room;
    snprintf(buf, n, "%s%s", name, tail);
    return RECUR_OK;
}

/* ------------------------------------------------------------------ replies (rank 0) */

static void send_env(worker_t *w, const recur_internal_envelope_t *env) {
    recur_proto_error_t err;
    recur_status_t s = recur_msgsock_send_internal(w->sock, NULL, env, &err);
    if (s != RECUR_OK)   /* a coordinator that is gone: the idle limit ends us */
        recur_log_warn("worker: cannot send %s to the coordinator: %s", recur_proto_internal_body_name(env->body_case),
                       err.msg);
    w->last_send = now_s();
}

static void send_hello(worker_t *w) {
    const recur_model_info_t *info = w->info;
    Recur__Internal__ModelIdentity mi = RECUR__INTERNAL__MODEL_IDENTITY__INIT;
    mi.arch = (char *)info->arch_name;
    mi.has_n_vocab = mi.has_n_layer = mi.has_n_embd = mi.has_n_head = mi.has_head_size = 1;
    mi.n_vocab = (uint32_t)info->n_vocab, mi.n_layer = (uint32_t)info->n_layer;
    mi.n_embd = (uint32_t)info->n_embd, mi.n_head = (uint32_t)info->n_head;
    mi.head_size = (uint32_t)info->head_size;
    mi.checkpoint_id = (char *)w->p.checkpoint_id;
    mi.content_hash = w->ident.content_hash;
    mi.state_dtype = (char *)recur_dtype_name(info->state_dtype);
    mi.has_head_size_k = 1, mi.head_size_k = (uint32_t)w->ident.head_size_k;
    Recur__Internal__Hello h = RECUR__INTERNAL__HELLO__INIT;
    h.has_rank = h.has_world_size = h.has_tp = h.has_pp = h.has_tp_rank = h.has_pp_rank = 1;
    h.rank = (uint32_t)w->grid.world_rank, h.world_size = (uint32_t)w->grid.world_size;
    h.tp = (uint32_t)w->grid.tp, h.pp = (uint32_t)w->grid.pp;
    h.tp_rank = (uint32_t)w->grid.tp_rank, h.pp_rank = (uint32_t)w->grid.pp_rank;
    h.host = w->grid.host;
    h.backend = (char *)w->p.backend;
    h.model = &mi;
    h.has_n_slots = 1, h.n_slots = (uint32_t)w->n_slots;
    h.has_state_bytes_per_slot = 1, h.state_bytes_per_slot = (uint64_t)info->state_bytes;
    h.has_pid = 1, h.pid = (uint32_t)getpid();
    h.software_version = (char *)w->p.software_version;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    send_env(w, &env);
}

static void send_heartbeat(worker_t *w) {
    Recur__Internal__Heartbeat hb = RECUR__INTERNAL__HEARTBEAT__INIT;
    hb.has_seq = hb.has_rank = hb.has_unix_time_ms = hb.has_last_step = 1;
    hb.seq = ++w->hb_seq, hb.rank = w->grid.world_rank, hb.unix_time_ms = unix_ms(), hb.last_step = w->last_step;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(w, &env);
}

/* A failed StepResult: status s with msg, no tokens. */
static void send_step_error(worker_t *w, uint64_t step, recur_status_t s, const char *msg) {
    Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
    st.has_code = 1, st.code = (int32_t)s, st.message = (char *)(msg && *msg ? msg : recur_status_str(s));
    Recur__Internal__StepResult r = RECUR__INTERNAL__STEP_RESULT__INIT;
    r.has_step = r.has_rank = 1, r.step = step, r.rank = (uint32_t)w->grid.world_rank;
    r.status = &st;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT;
    env.step_result = &r;
    send_env(w, &env);
}

static void send_slot_result(worker_t *w, uint64_t op_id, recur_status_t s, const char *msg, uint64_t bytes) {
    Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
    st.has_code = 1, st.code = (int32_t)s;
    if (s != RECUR_OK) st.message = (char *)(msg && *msg ? msg : recur_status_str(s));
    Recur__Internal__SlotOpResult r = RECUR__INTERNAL__SLOT_OP_RESULT__INIT;
    r.has_op_id = r.has_rank = 1, r.op_id = op_id, r.rank = (uint32_t)w->grid.world_rank;
    r.status = &st;
    if (s == RECUR_OK && bytes) r.has_bytes = 1, r.bytes = bytes;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP_RESULT;
    env.slot_op_result = &r;
    send_env(w, &env);
}

/* A message recur_proto refused (bad fields, another version): answer the plan or slot op
 * it was meant to be when its step / op_id can still be read with protobuf-c alone, so the
 * coordinator is not left waiting for a result; anything else is only logged. The size is
 * already bounded by the socket's max_msg_bytes. */
static void answer_undecodable(worker_t *w, const uint8_t *data, size_t n, recur_status_t s, const char *why) {
    Recur__Internal__Envelope *raw = recur__internal__envelope__unpack(NULL, n, data);
    if (raw && raw->body_case == RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN && raw->step_plan->has_step)
        send_step_error(w, raw->step_plan->step, s, why);
    else if (raw && raw->body_case == RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP && raw->slot_op->has_op_id)
        send_slot_result(w, raw->slot_op->op_id, s, why, 0);
    else
        recur_log_warn("worker: dropped a message from the coordinator: %s", why);
    if (raw) recur__internal__envelope__free_unpacked(raw, NULL);
}

/* ------------------------------------------------------------------ checks (rank 0) */

static recur_status_t bad_(char *msg, size_t n, recur_status_t s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static recur_status_t bad_(char *msg, size_t n, recur_status_t s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, n, fmt, ap);
    va_end(ap);
    return s;
}

/* What recur_proto cannot know: the plan against this model and this worker's features. */
static recur_status_t check_plan(worker_t *w, const Recur__Internal__StepPlan *p, char *msg, size_t n) {
    for (size_t i = 0; i < p->n_slot; i++)
        if (p->slot[i] >= w->n_slots)
            return bad_(msg, n, RECUR_E_INVAL, "step_plan.slot[%zu] = %d: the worker has slots [1, %d)", i,
                        (int)p->slot[i], (int)w->n_slots);
    for (size_t i = 0; i < p->n_reset_slots; i++)
        if (p->reset_slots[i] >= w->n_slots)
            return bad_(msg, n, RECUR_E_INVAL, "step_plan.reset_slots[%zu] = %d: the worker has slots [1, %d)", i,
                        (int)p->reset_slots[i], (int)w->n_slots);
    for (size_t i = 0; i < p->n_tokens; i++)
        if (p->tokens[i] >= w->info->n_vocab)
            return bad_(msg, n, RECUR_E_INVAL, "step_plan.tokens[%zu] = %d: outside the vocabulary of %d tokens", i,
                        (int)p->tokens[i], (int)w->info->n_vocab);
    for (size_t i = 0; i < p->n_sampling; i++) {
        const Recur__Internal__SamplingRow *r = p->sampling[i];
        if (r->n_bias_token == 0) continue;
        /* distinct ids (the sample op writes each listed logit once): a stamp per row */
        if (++w->stamp == INT32_MAX) {
            memset(w->bias_stamp, 0, (size_t)w->info->n_vocab * sizeof *w->bias_stamp);
            w->stamp = 1;
        }
        for (size_t j = 0; j < r->n_bias_token; j++) {
            const int32_t t = r->bias_token[j];
            if (t >= w->info->n_vocab)
                return bad_(msg, n, RECUR_E_INVAL, "step_plan.sampling[%zu].bias_token[%zu] = %d: outside the "
                            "vocabulary of %d tokens", i, j, (int)t, (int)w->info->n_vocab);
            if (w->bias_stamp[t] == w->stamp)
                return bad_(msg, n, RECUR_E_INVAL, "step_plan.sampling[%zu].bias_token: token %d appears twice", i,
                            (int)t);
            w->bias_stamp[t] = w->stamp;
        }
    }
    return RECUR_OK;
}

static recur_status_t check_slot_op(const worker_t *w, const Recur__Internal__SlotOp *o, char *msg, size_t n) {
    if (o->has_kind && (o->kind == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE ||
                        o->kind == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD ||
                        o->kind == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DELETE) &&
        o->path && recur_ckpt_path_check(o->path, w->p.session_dir, msg, n) != RECUR_OK)
        return RECUR_E_INVAL;
    if (o->has_slot && o->slot >= w->n_slots)
        return bad_(msg, n, RECUR_E_INVAL, "slot_op.slot = %d: the worker has slots [1, %d)", (int)o->slot,
                    (int)w->n_slots);
    if (o->has_src_slot && o->src_slot >= w->n_slots)
        return bad_(msg, n, RECUR_E_INVAL, "slot_op.src_slot = %d: the worker has slots [1, %d)", (int)o->src_slot,
                    (int)w->n_slots);
    return RECUR_OK;
}

/* ------------------------------------------------------------------ running (every rank) */

/* Every rank of the group gets the status of the lowest failing rank. */
static recur_status_t agree(worker_t *w, recur_status_t s) {
    return w->comm ? recur_comm_agree(w->comm, s) : s;
}

/* A row that uses a penalty (recur_sample_row_t: repetition 1 or <= 0 is off). */
static int row_penalized(const recur_sample_row_t *r) {
    return (r->repetition_penalty > 0.0f && r->repetition_penalty != 1.0f) || r->presence_penalty != 0.0f ||
           r->frequency_penalty != 0.0f;
}

/* The extras of the plan's n_samp sampled sequences (sampling rows `rows`, slots
 * `slots`) into *ex: logprob outputs for top_n >= 0 on every rank; the bias and history
 * lists where the history is kept (the ranks that sample). RECUR_E_NOMEM. */
static recur_status_t build_extras(worker_t *w, const Recur__Internal__StepPlan *p, const recur_sample_row_t *rows,
                                   int32_t n_samp, const int32_t *slots, int32_t top_n, recur_sample_extras_t *ex) {
    const size_t ns = (size_t)n_samp, k = top_n > 0 ? (size_t)top_n : 1;
    *ex = (recur_sample_extras_t){.top_n = top_n};
    if (top_n >= 0) {
        if (grow(&w->x_lp, &w->cap_lp, ns, sizeof *w->x_lp) || grow(&w->x_tt, &w->cap_tt, ns * k, sizeof *w->x_tt) ||
            grow(&w->x_tl, &w->cap_tl, ns * k, sizeof *w->x_tl))
            return RECUR_E_NOMEM;
        ex->logprob = w->x_lp, ex->top_token = w->x_tt, ex->top_logprob = w->x_tl;
    }
    if (!w->hist) return RECUR_OK;
    size_t nb = 0, nh = 0;
    for (int32_t j = 0; j < n_samp; j++) {
        nb += p->sampling[j]->n_bias_token;
        if (row_penalized(&rows[j])) nh += (size_t)recur_token_hist_size(w->hist, slots[j]);
    }
    if (nb > INT32_MAX || nh > INT32_MAX || grow(&w->x_boff, &w->cap_boff, ns + 1, sizeof *w->x_boff) ||
        grow(&w->x_hoff, &w->cap_hoff, ns + 1, sizeof *w->x_hoff) ||
        grow(&w->x_bias, &w->cap_bias, nb + 1, sizeof *w->x_bias) ||
        grow(&w->x_hist, &w->cap_hist, nh + 1, sizeof *w->x_hist))
        return RECUR_E_NOMEM;
    int32_t b = 0, h = 0;
    w->x_boff[0] = w->x_hoff[0] = 0;
    for (int32_t j = 0; j < n_samp; j++) {
        const Recur__Internal__SamplingRow *r = p->sampling[j];
        for (size_t i = 0; i < r->n_bias_token; i++)
            w->x_bias[b++] = (recur_sample_bias_t){.token = r->bias_token[i], .bias = r->bias_value[i]};
        /* only the presence and frequency penalties: the generated ids are enough */
        if (row_penalized(&rows[j])) {
            const int rep_on = rows[j].repetition_penalty > 0.0f && rows[j].repetition_penalty != 1.0f;
            h += recur_token_hist_export(w->hist, slots[j], !rep_on, w->x_hist + h);
        }
        w->x_boff[j + 1] = b, w->x_hoff[j + 1] = h;
    }
    ex->n_bias = b, ex->bias_off = w->x_boff, ex->bias = w->x_bias;
    ex->n_hist = h, ex->hist_off = w->x_hoff, ex->hist = w->x_hist;
    return RECUR_OK;
}

/* Runs plan p (checked) on this rank; tokens[n_seq] gets the sampled ids, -1 on prefill-only
 * rows, and (when a row asked for logprobs) w->res_* the logprobs per sequence. Order:
 * resets, the prefill-only batch, the sampling batch (recur_worker.h). */
static recur_status_t run_plan(worker_t *w, const Recur__Internal__StepPlan *p, int32_t *tokens, uint64_t *fwd_us,
                               char *msg, size_t msg_n) {
    recur_status_t s = RECUR_OK;
    for (size_t i = 0; i < p->n_reset_slots && s == RECUR_OK; i++) {
        s = recur_model_state_reset(w->m, p->reset_slots[i]);
        if (w->hist) recur_token_hist_reset(w->hist, p->reset_slots[i]);
    }
    s = agree(w, s);
    if (s != RECUR_OK) return bad_(msg, msg_n, s, "resetting the plan's slots failed: %s", recur_status_str(s));

    size_t n_seq = p->n_slot;
    int32_t *lens = malloc(2 * n_seq * sizeof *lens), *slots = malloc(2 * n_seq * sizeof *slots);
    int32_t *ids = malloc((p->n_tokens ? p->n_tokens : 1) * sizeof *ids), *sampled = malloc(n_seq * sizeof *sampled);
    recur_sample_row_t *rows = malloc(n_seq * sizeof *rows);
    size_t *seq_of = malloc(n_seq * sizeof *seq_of);
    s = lens && slots && ids && sampled && rows && seq_of ? RECUR_OK : RECUR_E_NOMEM;
    /* prefill-only sequences first in lens/slots/ids, then the sampled ones behind them */
    int32_t n_none = 0, n_samp = 0, top_n = -1;
    int use_ex = 0;
    size_t tok_none = 0;
    recur_sample_extras_t ex = {.top_n = -1};
    w->res_top_n = -1;
    if (s == RECUR_OK) {
        for (size_t i = 0; i < n_seq; i++)
            if (p->logits[i] != RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE) tok_none += (size_t)p->seq_len[i];
        size_t off = 0, put_none = 0, put_samp = tok_none;
        for (size_t i = 0; i < n_seq; i++) {
            size_t len = (size_t)p->seq_len[i];
            tokens[i] = -1;
            if (p->logits[i] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE) {
                const Recur__Internal__SamplingRow *r = p->sampling[n_samp];
                recur_sample_row_t *row = &rows[n_samp];
                *row = (recur_sample_row_t){
                    .temperature = r->temperature, .top_k = r->top_k, .top_p = r->top_p, .min_p = r->min_p,
                    .seed = r->seed, .step = r->step,
                    .repetition_penalty = r->has_repetition_penalty ? r->repetition_penalty : 1.0f,
                    .presence_penalty = r->has_presence_penalty ? r->presence_penalty : 0.0f,
                    .frequency_penalty = r->has_frequency_penalty ? r->frequency_penalty : 0.0f,
                    .logprobs = r->has_logprobs ? r->logprobs : -1};
                use_ex |= r->n_bias_token > 0 || row_penalized(row) || row->logprobs >= 0;
                if (row->logprobs > top_n) top_n = row->logprobs;
                lens[n_seq + (size_t)n_samp] = (int32_t)len, slots[n_seq + (size_t)n_samp] = p->slot[i];
                seq_of[n_samp++] = i;
                memcpy(ids + put_samp, p->tokens + off, len * sizeof *ids);
                put_samp += len;
            } else {
                lens[n_none] = (int32_t)len, slots[n_none++] = p->slot[i];
                memcpy(ids + put_none, p->tokens + off, len * sizeof *ids);
                put_none += len;
            }
            /* every token fed counts, and with room for the one sampled after it */
            if (w->hist && s == RECUR_OK) s = recur_token_hist_add(w->hist, p->slot[i], p->tokens + off, (int32_t)len, 0);
            if (w->hist && s == RECUR_OK && p->logits[i] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE)
                s = recur_token_hist_reserve(w->hist, p->slot[i], 1);
            off += len;
        }
        if (s == RECUR_OK && use_ex) s = build_extras(w, p, rows, n_samp, slots + n_seq, top_n, &ex);
        if (s == RECUR_OK && top_n >= 0 && w->grid.world_rank == 0) {
            const size_t k = (size_t)(top_n > 0 ? top_n : 1);
            if (grow(&w->res_lp, &w->cap_res_lp, n_seq, sizeof *w->res_lp) ||
                grow(&w->res_tt, &w->cap_res_tt, n_seq * k, sizeof *w->res_tt) ||
                grow(&w->res_tl, &w->cap_res_tl, n_seq * k, sizeof *w->res_tl))
                s = RECUR_E_NOMEM;
        }
    }
    s = agree(w, s);
    if (s != RECUR_OK) {
        bad_(msg, msg_n, s, "out of memory for a plan of %zu sequences", n_seq);
        goto out;
    }
    double t0 = now_s();
    if (n_none) {
        recur_batch_t b = {.n_seq = n_none, .tokens = ids, .seq_len = lens, .slot = slots, .logits = RECUR_LOGITS_NONE};
        s = recur_model_forward(w->m, &b, NULL);
        if (s != RECUR_OK) {
            bad_(msg, msg_n, s, "the prefill forward failed: %s", recur_status_str(s));
            goto out;
        }
    }
    if (n_samp) {
        recur_batch_t b = {.n_seq = n_samp, .tokens = ids + tok_none, .seq_len = lens + n_seq, .slot = slots + n_seq,
                           .logits = RECUR_LOGITS_LAST};
        s = recur_model_forward_sample_ex(w->m, &b, rows, use_ex ? &ex : NULL, w->info->n_vocab, sampled);
        if (s != RECUR_OK) {
            bad_(msg, msg_n, s, "the sampling forward failed: %s", recur_status_str(s));
            goto out;
        }
        for (int32_t j = 0; j < n_samp; j++) {
            tokens[seq_of[j]] = sampled[j];
            if (w->hist) { /* room was reserved above: this cannot fail */
                const recur_status_t hs = recur_token_hist_add(w->hist, slots[n_seq + (size_t)j], &sampled[j], 1, 1);
                RECUR_ASSERT(hs == RECUR_OK);
            }
        }
        if (top_n >= 0 && w->grid.world_rank == 0) { /* per plan sequence; prefill-only ones padded */
            const size_t k = (size_t)top_n;
            for (size_t i = 0; i < n_seq; i++) w->res_lp[i] = 0.0f;
            for (size_t i = 0; i < n_seq * k; i++) w->res_tt[i] = -1, w->res_tl[i] = 0.0f;
            for (int32_t j = 0; j < n_samp; j++) {
                w->res_lp[seq_of[j]] = ex.logprob[j];
                memcpy(w->res_tt + seq_of[j] * k, ex.top_token + (size_t)j * k, k * sizeof *w->res_tt);
                memcpy(w->res_tl + seq_of[j] * k, ex.top_logprob + (size_t)j * k, k * sizeof *w->res_tl);
            }
            w->res_top_n = top_n;
        }
    }
    *fwd_us = (uint64_t)((now_s() - t0) * 1e6);
out:
    free(lens);
    free(slots);
    free(ids);
    free(sampled);
    free(rows);
    free(seq_of);
    return s;
}

/* ------------------------------------------------------------------ host copies and checkpoints */

static host_entry_t *host_find(worker_t *w, uint64_t key) {
    for (size_t i = 0; i < w->n_host; i++)
        if (w->host[i].key == key) return &w->host[i];
    return NULL;
}

/* The host buffer for key, made when missing (NULL: out of memory). */
static void *host_get_or_add(worker_t *w, uint64_t key) {
    host_entry_t *e = host_find(w, key);
    if (e) return e->buf;
    if (w->n_host == w->cap_host) {
        size_t cap = w->cap_host ? 2 * w->cap_host : 16;
        host_entry_t *h = realloc(w->host, cap * sizeof *h);
        if (!h) return NULL;
        w->host = h, w->cap_host = cap;
    }
    void *b = malloc(w->info->state_bytes);
    if (!b) return NULL;
    w->host[w->n_host++] = (host_entry_t){.key = key, .buf = b};
    return b;
}

static void host_drop(worker_t *w, uint64_t key) {
    host_entry_t *e = host_find(w, key);
    if (!e) return;
    free(e->buf);
    *e = w->host[--w->n_host];
}

/* After a failed op (all ranks agreed on failure s): every rank learns the first failing
 * rank's message, so rank 0 can send the reason itself, whichever rank saw it (a corrupt
 * shard that only another rank reads). */
static void share_failure(worker_t *w, recur_status_t mine, char *msg, size_t msg_n) {
    if (!w->multi) return;
    struct { int32_t status; char msg[400]; } b;
    int have = 0;
    for (int32_t r = 0; r < w->grid.world_size; r++) {
        memset(&b, 0, sizeof b);
        if (r == w->grid.world_rank) {
            b.status = (int32_t)mine;
            snprintf(b.msg, sizeof b.msg, "%s", msg);
        }
        if (recur_comm_bcast_host(w->comm, &b, sizeof b, r) != RECUR_OK) return;
        if (!have && b.status != RECUR_OK && b.msg[0]) {
            if (r != w->grid.world_rank) snprintf(msg, msg_n, "rank %d: %s", (int)r, b.msg);
            have = 1;
        }
    }
}

/* SAVE: every rank writes its shard file; rank 0 gathers the shard records and commits the
 * manifest, then removes older generations. */
static recur_status_t save_ckpt(worker_t *w, const Recur__Internal__SlotOp *o, const void *data, char *msg,
                                size_t msg_n) {
    recur_ckpt_shard_t mine = w->shard;
    recur_status_t s = recur_ckpt_write_shard(o->path, o->generation, &mine, data, msg, msg_n);
    const int32_t world = w->multi ? w->grid.world_size : 1;
    recur_ckpt_manifest_t m;
    memset(&m, 0, sizeof m);
    m.shards = calloc((size_t)world, sizeof *m.shards);
    if (!m.shards && s == RECUR_OK) s = bad_(msg, msg_n, RECUR_E_NOMEM, "out of memory");
    /* every rank's record (and status) to every rank, rank by rank */
    int all_ok = s == RECUR_OK;
    for (int32_t r = 0; r < world; r++) {
        struct { int32_t status; recur_ckpt_shard_t sh; } rec;
        memset(&rec, 0, sizeof rec);
        if (r == w->grid.world_rank) rec.status = (int32_t)s, rec.sh = mine;
        if (w->multi && recur_comm_bcast_host(w->comm, &rec, sizeof rec, r) != RECUR_OK) {
            free(m.shards);
            return RECUR_E_MPI;
        }
        if (rec.status != RECUR_OK) all_ok = 0;
        if (m.shards) m.shards[r] = rec.sh;
    }
    if (w->grid.world_rank == 0 && all_ok) {
        m.id = w->ident;
        snprintf(m.checkpoint_id, sizeof m.checkpoint_id, "%s", w->p.checkpoint_id);
        m.tp = w->grid.tp, m.pp = w->grid.pp, m.generation = o->generation, m.n_shards = world;
        for (int32_t r = 0; r < world; r++) m.state_bytes += m.shards[r].bytes;
        const Recur__Internal__CheckpointMeta *mt = o->meta;
        snprintf(m.meta.session_id, sizeof m.meta.session_id, "%s", mt->session_id ? mt->session_id : "");
        snprintf(m.meta.model, sizeof m.meta.model, "%s", mt->model ? mt->model : "");
        m.meta.n_consumed = mt->n_consumed;
        m.meta.pending = mt->pending, m.meta.n_pending = mt->n_pending;
        if (mt->has_unsent) m.meta.unsent = mt->unsent.data, m.meta.n_unsent = mt->unsent.len;
        m.meta.created_unix_ms = mt->created_unix_ms, m.meta.last_used_unix_ms = mt->last_used_unix_ms;
        s = recur_ckpt_manifest_write(o->path, &m, msg, msg_n);
        if (s == RECUR_OK) recur_ckpt_remove(o->path, o->generation, 0);   /* older generations */
    }
    free(m.shards);
    s = agree(w, s);   /* a rank whose shard failed has its own status: everyone fails */
    if (s != RECUR_OK) {   /* this generation was not committed: its files are garbage */
        char path[RECUR_PROTO_MAX_PATH_BYTES + 64];
        if (recur_ckpt_shard_path(o->path, o->generation, mine.pp_rank, mine.tp_rank, path, sizeof path) == RECUR_OK)
            unlink(path);
    }
    return s;
}

/* Runs slot op o (checked) on this rank, agreeing with the others; *bytes = this rank's
 * shard bytes written / read for SAVE / LOAD. */
static recur_status_t run_slot_op(worker_t *w, const Recur__Internal__SlotOp *o, uint64_t *bytes, char *msg,
                                  size_t msg_n) {
    recur_status_t s = RECUR_OK;
    *bytes = 0;
    const size_t nb = w->info->state_bytes;
    /* Non-zero ranks write their own messages too: share_failure sends the first one. */
    switch (o->kind) {
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET:
        s = o->has_history_only && o->history_only ? RECUR_OK : recur_model_state_reset(w->m, o->slot);
        if (w->hist) recur_token_hist_reset(w->hist, o->slot);
        s = agree(w, s);
        return s == RECUR_OK ? s : bad_(msg, msg_n, s, "resetting slot %d failed", (int)o->slot);
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DROP:
        host_drop(w, o->key);
        return RECUR_OK;
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DELETE:
        if (w->grid.world_rank == 0 && recur_ckpt_remove(o->path, 0, 1) != RECUR_OK)
            s = bad_(msg, msg_n, RECUR_E_IO, "%s: could not remove every file of the checkpoint (see the log)",
                     o->path);
        s = agree(w, s);
        break;
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY: {
        if (o->has_slot && o->has_src_slot) {
            /* the fork keeps its history too, so its penalties go on counting the same tokens */
            s = recur_model_state_copy(w->m, o->slot, o->src_slot);
            if (s == RECUR_OK && w->hist) s = recur_token_hist_copy(w->hist, o->slot, o->src_slot);
            s = agree(w, s);
            if (s != RECUR_OK) bad_(msg, msg_n, s, "copying slot %d to %d failed", (int)o->src_slot, (int)o->slot);
            break;
        }
        const host_entry_t *src = o->has_src_key ? host_find(w, o->src_key) : NULL;
        if (o->has_src_key && !src)
            s = bad_(msg, msg_n, RECUR_E_INVAL, "no host copy under key %llu", (unsigned long long)o->src_key);
        s = agree(w, s);
        if (s != RECUR_OK) break;
        if (o->has_slot) {   /* key -> slot; host copies carry no token history */
            if (w->hist) recur_token_hist_reset(w->hist, o->slot);
            s = agree(w, recur_model_state_set(w->m, o->slot, src->buf));
            if (s != RECUR_OK) bad_(msg, msg_n, s, "restoring slot %d from host key %llu failed", (int)o->slot,
                                    (unsigned long long)o->src_key);
            break;
        }
        void *dst = host_get_or_add(w, o->key);
        if (!dst) s = bad_(msg, msg_n, RECUR_E_NOMEM, "out of host memory for a state of %zu bytes", nb);
        else if (src) memcpy(dst, src->buf, nb);
        else s = recur_model_state_get(w->m, o->src_slot, dst);
        s = agree(w, s);
        if (s != RECUR_OK) {
            host_drop(w, o->key);
            if (!msg[0]) bad_(msg, msg_n, s, "copying to host key %llu failed", (unsigned long long)o->key);
        }
        break;
    }
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE: {
        void *tmp = NULL;
        const void *data = NULL;
        if (o->has_key) {
            const host_entry_t *e = host_find(w, o->key);
            if (!e) s = bad_(msg, msg_n, RECUR_E_INVAL, "no host copy under key %llu", (unsigned long long)o->key);
            else data = e->buf;
        } else if (!(tmp = malloc(nb))) {
            s = bad_(msg, msg_n, RECUR_E_NOMEM, "out of memory for a state of %zu bytes", nb);
        } else {
            s = recur_model_state_get(w->m, o->slot, tmp);
            data = tmp;
        }
        s = agree(w, s);
        if (s == RECUR_OK) s = save_ckpt(w, o, data, msg, msg_n);
        free(tmp);
        if (s == RECUR_OK) *bytes = nb;
        break;
    }
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD:
    case RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD_TUNED: {
        void *tmp = malloc(nb);
        uint64_t rd = 0;
        if (!tmp) s = bad_(msg, msg_n, RECUR_E_NOMEM, "out of memory for a state of %zu bytes", nb);
        else if (o->kind == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD)
            s = recur_ckpt_load(o->path, &w->ident, &w->shard, tmp, &rd, msg, msg_n);
        else
            s = recur_ckpt_load_tuned(o->path, &w->ident, &w->shard, tmp, msg, msg_n);
        s = agree(w, s);   /* set the destination only when every rank has its shard */
        if (s == RECUR_OK) {
            if (o->has_slot) {
                s = recur_model_state_set(w->m, o->slot, tmp);
                /* a state file carries no token history: penalties count from here on */
                if (w->hist) recur_token_hist_reset(w->hist, o->slot);
            } else {
                void *dst = host_get_or_add(w, o->key);
                if (!dst) s = bad_(msg, msg_n, RECUR_E_NOMEM, "out of host memory for a state of %zu bytes", nb);
                else memcpy(dst, tmp, nb);
            }
            s = agree(w, s);
        }
        free(tmp);
        if (s == RECUR_OK) *bytes = rd ? rd : nb;
        break;
    }
    default:
        return bad_(msg, msg_n, RECUR_E_INVAL, "slot_op.kind %d: unknown", (int)o->kind);
    }
    if (s != RECUR_OK) {
        share_failure(w, msg[0] ? s : RECUR_OK, msg, msg_n);
        if (!msg[0]) bad_(msg, msg_n, s, "slot op failed: %s", recur_status_str(s));
    }
    return s;
}

/* Runs the envelope in w->buf[0..n) (a checked StepPlan or SlotOp) on this rank; rank 0
 * also replies. Returns RECUR_OK, or the failure that must end the group. */
static recur_status_t run_command(worker_t *w, const recur_internal_envelope_t *env, double t_recv) {
    char msg[RECUR_PROTO_MAX_MESSAGE_BYTES / 4];
    msg[0] = '\0';
    int rank0 = w->grid.world_rank == 0;
    if (env->body_case == RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP) {
        const Recur__Internal__SlotOp *o = env->slot_op;
        uint64_t bytes = 0;
        recur_status_t s = run_slot_op(w, o, &bytes, msg, sizeof msg);
        if (rank0) send_slot_result(w, o->op_id, s, msg, bytes);
        /* a file that cannot be read or written (or a missing key, or no memory for one more
         * host copy) is the request's problem, not the group's */
        return s == RECUR_OK || s == RECUR_E_IO || s == RECUR_E_FORMAT || s == RECUR_E_RANGE || s == RECUR_E_INVAL ||
                       s == RECUR_E_NOMEM || s == RECUR_E_UNSUPPORTED
                   ? RECUR_OK
                   : s;
    }
    const Recur__Internal__StepPlan *p = env->step_plan;
    int32_t *tokens = malloc(p->n_slot * sizeof *tokens);
    uint64_t fwd_us = 0;
    recur_status_t s = tokens ? RECUR_OK : RECUR_E_NOMEM;
    s = agree(w, s);
    if (s == RECUR_OK) s = run_plan(w, p, tokens, &fwd_us, msg, sizeof msg);
    if (rank0) {
        if (s != RECUR_OK) {
            send_step_error(w, p->step, s, msg);
        } else {
            Recur__Internal__StepTiming tm = RECUR__INTERNAL__STEP_TIMING__INIT;
            tm.has_forward_us = tm.has_total_us = 1;
            tm.forward_us = fwd_us, tm.total_us = (uint64_t)((now_s() - t_recv) * 1e6);
            Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
            st.has_code = 1, st.code = 0;
            Recur__Internal__StepResult r = RECUR__INTERNAL__STEP_RESULT__INIT;
            r.has_step = r.has_rank = 1, r.step = p->step, r.rank = 0;
            r.n_token = p->n_slot, r.token = tokens;
            if (w->res_top_n >= 0) {
                r.n_logprob = p->n_slot, r.logprob = w->res_lp;
                r.has_top_n = 1, r.top_n = (uint32_t)w->res_top_n;
                r.n_top_token = r.n_top_logprob = p->n_slot * (size_t)w->res_top_n;
                r.top_token = w->res_tt, r.top_logprob = w->res_tl;
            }
            r.timing = &tm;
            r.status = &st;
            recur_internal_envelope_t out = RECUR__INTERNAL__ENVELOPE__INIT;
            out.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT;
            out.step_result = &r;
            send_env(w, &out);
        }
    }
    if (s == RECUR_OK) w->last_step = p->step;
    free(tokens);
    /* the model refuses bad input before changing anything (RECUR_E_INVAL): the plan's fault */
    return s == RECUR_OK || s == RECUR_E_INVAL ? RECUR_OK : s;
}

/* ------------------------------------------------------------------ the loops */

static recur_status_t buf_reserve(worker_t *w, size_t n) {
    if (n <= w->buf_cap) return RECUR_OK;
    uint8_t *b = realloc(w->buf, n);
    if (!b) return RECUR_E_NOMEM;
    w->buf = b;
    w->buf_cap = n;
    return RECUR_OK;
}

/* Rank 0: tells every other rank to stop with code. */
static recur_status_t stop_all(worker_t *w, int code) {
    if (!w->multi) return RECUR_OK;
    cmd_hdr_t h = {.kind = CMD_STOP, .exit_code = code, .n_bytes = 0};
    return recur_comm_bcast_host(w->comm, &h, sizeof h, 0);
}

/* Rank 0: the message in w->buf[0..n) to every rank, which then all run it. */
static recur_status_t bcast_run(worker_t *w, size_t n) {
    if (!w->multi) return RECUR_OK;
    cmd_hdr_t h = {.kind = CMD_RUN, .exit_code = 0, .n_bytes = n};
    RECUR_TRY(recur_comm_bcast_host(w->comm, &h, sizeof h, 0));
    return recur_comm_bcast_host(w->comm, w->buf, n, 0);
}

/* Rank 0: a coordinator that refuses our handshake (CURVE keys on one side only, or the
 * wrong ones) shows nothing at the socket (ZeroMQ retries by itself), so the monitor's events
 * are the only sign: logged once, then every 10 s, until idle_limit_ms ends the group. */
static void log_handshakes(worker_t *w) {
    char what[200];
    for (int kind; (kind = recur_msgsock_next_handshake_failure(w->sock, what, sizeof what)) != 0;) {
        w->hs_failed++;
        /* per kind: the first failure may be a bare "broken pipe" when the coordinator hung
         * up first, and the telling one ("different mechanisms") comes with a later try */
        const int k = kind > 0 && kind < 5 ? kind : RECUR_MSGSOCK_HS_OTHER;
        double t = now_s();
        if (w->hs_logged[k] != 0 && t - w->hs_logged[k] < 10.0) continue;
        w->hs_logged[k] = t;
        recur_log_err("worker: the handshake with the coordinator at %s failed: %s (%llu attempts; with CURVE "
                      "both sides need --curve-keys with the keys of one `recur keygen`); retrying for up to "
                      "--idle-limit-ms %d", w->p.connect, what, (unsigned long long)w->hs_failed,
                      (int)w->p.idle_limit_ms);
    }
}

static recur_status_t loop_rank0(worker_t *w, int *exit_code) {
    recur_proto_error_t err;
    size_t max_bytes = recur_msgsock_max_msg_bytes(w->sock);
    send_hello(w);
    w->last_recv = now_s();
    for (;;) {
        if (w->hs_events) log_handshakes(w);
        double now = now_s();
        double idle_left = w->p.idle_limit_ms / 1e3 - (now - w->last_recv);
        double hb_left = w->p.heartbeat_ms / 1e3 - (now - w->last_send);
        if (idle_left <= 0) {
            recur_log_err("worker: nothing from the coordinator at %s for %d ms: stopping every rank", w->p.connect,
                          (int)w->p.idle_limit_ms);
            *exit_code = RECUR_WORKER_EXIT_LOST;
            return stop_all(w, *exit_code);
        }
        if (hb_left <= 0) {
            if (w->ready) send_heartbeat(w);
            else send_hello(w);   /* a coordinator that (re)started since we said hello */
            continue;
        }
        double wait = idle_left < hb_left ? idle_left : hb_left;
        int32_t wait_ms = (int32_t)(wait * 1e3) + 1;
        const uint8_t *data = NULL;
        size_t n = 0;
        recur_status_t s = recur_msgsock_recv(w->sock, wait_ms, NULL, &data, &n, &err);
        if (s == RECUR_E_TIMEOUT) continue;
        if (s == RECUR_E_FORMAT) {   /* bad framing, dropped; the coordinator is alive */
            w->last_recv = now_s();
            recur_log_warn("worker: %s", err.msg);
            continue;
        }
        if (s != RECUR_OK) {
            recur_log_err("worker: receiving from the coordinator failed: %s", err.msg);
            *exit_code = RECUR_WORKER_EXIT_FAILED;
            return stop_all(w, *exit_code);
        }
        double t_recv = w->last_recv = now_s();
        recur_internal_envelope_t *env = NULL;
        s = recur_proto_internal_unpack(data, n, max_bytes, &env, &err);
        if (s != RECUR_OK) {
            answer_undecodable(w, data, n, s, err.msg);
            continue;
        }
        char msg[512];
        switch (env->body_case) {
        case RECUR__INTERNAL__ENVELOPE__BODY_READY:
            w->ready = 1;
            w->epoch = env->ready->epoch;
            if (env->ready->has_heartbeat_interval_ms && env->ready->heartbeat_interval_ms > 0)
                w->p.heartbeat_ms = (int32_t)(env->ready->heartbeat_interval_ms > 3600000u
                                                  ? 3600000u : env->ready->heartbeat_interval_ms);
            recur_log_info("worker: the coordinator accepted us (epoch %llu)", (unsigned long long)w->epoch);
            break;
        case RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT:
            send_heartbeat(w);
            break;
        case RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN: {
            const Recur__Internal__Shutdown *sd = env->shutdown;
            *exit_code = sd->has_exit_code ? sd->exit_code : RECUR_WORKER_EXIT_OK;
            recur_log_info("worker: shutdown (%s), exit code %d", sd->reason ? sd->reason : "no reason", *exit_code);
            recur_proto_internal_free(env);
            return stop_all(w, *exit_code);
        }
        case RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN:
        case RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP: {
            int plan = env->body_case == RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN;
            s = plan ? check_plan(w, env->step_plan, msg, sizeof msg) : check_slot_op(w, env->slot_op, msg, sizeof msg);
            if (s != RECUR_OK) {
                if (plan) send_step_error(w, env->step_plan->step, s, msg);
                else send_slot_result(w, env->slot_op->op_id, s, msg, 0);
                break;
            }
            if ((s = buf_reserve(w, n)) != RECUR_OK) {
                if (plan) send_step_error(w, env->step_plan->step, s, "out of memory");
                else send_slot_result(w, env->slot_op->op_id, s, "out of memory", 0);
                break;
            }
            memcpy(w->buf, data, n);
            if ((s = bcast_run(w, n)) != RECUR_OK) {
                recur_proto_internal_free(env);
                return s;   /* the lockstep broke: the caller takes the job down */
            }
            s = run_command(w, env, t_recv);
            if (s != RECUR_OK) {
                recur_log_err("worker: %s failed on the device: %s; stopping every rank", plan ? "a step" : "a slot op",
                              recur_status_str(s));
                recur_proto_internal_free(env);
                *exit_code = RECUR_WORKER_EXIT_FAILED;
                return RECUR_OK;   /* every rank saw the same failure and stops by itself */
            }
            break;
        }
        default:
            recur_log_warn("worker: unexpected %s from the coordinator, ignored",
                           recur_proto_internal_body_name(env->body_case));
            break;
        }
        recur_proto_internal_free(env);
    }
}

static recur_status_t loop_other(worker_t *w, int *exit_code) {
    for (;;) {
        cmd_hdr_t h;
        RECUR_TRY(recur_comm_bcast_host(w->comm, &h, sizeof h, 0));
        if (h.kind == CMD_STOP) {
            *exit_code = h.exit_code;
            return RECUR_OK;
        }
        if (h.kind != CMD_RUN || h.n_bytes == 0 || h.n_bytes > RECUR_PROTO_MAX_MSG_BYTES_DEFAULT * 64) {
            recur_log_err("worker rank %d: bad command from rank 0 (kind %d, %llu bytes)", w->grid.world_rank,
                          (int)h.kind, (unsigned long long)h.n_bytes);
            return RECUR_E_PROTO;
        }
        RECUR_TRY(buf_reserve(w, (size_t)h.n_bytes));
        RECUR_TRY(recur_comm_bcast_host(w->comm, w->buf, (size_t)h.n_bytes, 0));
        recur_internal_envelope_t *env = NULL;
        /* the bytes rank 0 decoded and checked: the same decode cannot fail here */
        RECUR_TRY(recur_proto_internal_unpack(w->buf, (size_t)h.n_bytes, (size_t)h.n_bytes, &env, NULL));
        recur_status_t s = run_command(w, env, now_s());
        recur_proto_internal_free(env);
        if (s != RECUR_OK) {
            *exit_code = RECUR_WORKER_EXIT_FAILED;
            return RECUR_OK;
        }
    }
}

recur_status_t recur_worker_run(recur_model_t *m, recur_comm_t *comm, const recur_worker_params_t *p,
                                int *exit_code) {
    *exit_code = RECUR_WORKER_EXIT_FAILED;
    if (!m || !p || p->heartbeat_ms <= 0 || p->idle_limit_ms <= 0) {
        recur_log_err("worker: bad parameters (heartbeat_ms and idle_limit_ms must be > 0)");
        return RECUR_E_INVAL;
    }
    worker_t w = {.m = m, .comm = comm, .info = recur_model_info(m), .n_slots = recur_model_n_slots(m), .p = *p};
    if (comm) {
        w.grid = *recur_comm_grid(comm);
    } else {
        w.grid.world_size = w.grid.tp = w.grid.pp = w.grid.local_size = 1;
        if (gethostname(w.grid.host, sizeof w.grid.host - 1) != 0) snprintf(w.grid.host, sizeof w.grid.host, "?");
    }
    w.multi = comm && w.grid.world_size > 1;
    w.res_top_n = -1;
    if (!w.p.backend) w.p.backend = "cpu";
    if (!w.p.checkpoint_id || !*w.p.checkpoint_id) w.p.checkpoint_id = "unknown";
    recur_ckpt_identity_of(w.info, w.p.content_hash ? w.p.content_hash : "", &w.ident);
    recur_ckpt_shard_of(w.info, &w.shard);

    /* rank 0 opens the socket; every rank learns whether that worked before anyone waits */
    recur_status_t s = RECUR_OK;
    const recur_model_shard_t *sh = &w.info->shard;
    if (sh->pp_rank == sh->pp - 1 && recur_token_hist_create(w.n_slots, &w.hist) != RECUR_OK) s = RECUR_E_NOMEM;
    if (s == RECUR_OK && w.grid.world_rank == 0 &&
        !(w.bias_stamp = calloc((size_t)w.info->n_vocab, sizeof *w.bias_stamp)))
        s = RECUR_E_NOMEM;
    if (s != RECUR_OK) {
        recur_log_err("worker: out of memory for the sampling state");
    } else if (w.grid.world_rank == 0) {
        if (!w.p.connect) {
            recur_log_err("worker: no coordinator endpoint to connect to");
            s = RECUR_E_INVAL;
        } else if (!(w.zctx = zmq_ctx_new())) {
            recur_log_err("worker: cannot create a ZeroMQ context: %s", zmq_strerror(zmq_errno()));
            s = RECUR_E_IO;
        } else {
            recur_msgsock_params_t mp = recur_msgsock_default_params();
            recur_curve_keys_t keys;
            char msg[512];
            mp.routing_id = "rank0";
            if (w.p.curve_keys_dir) {
                s = recur_curve_load_client(w.p.curve_keys_dir, &keys, msg, sizeof msg);
                if (s != RECUR_OK) recur_log_err("worker: --curve-keys: %s", msg);
                mp.curve = &keys;
            }
            if (s == RECUR_OK) s = recur_msgsock_connect(w.zctx, w.p.connect, &mp, &w.sock);
            /* also without CURVE: a coordinator that requires it refuses us at the handshake */
            if (s == RECUR_OK && recur_msgsock_watch_handshakes(w.sock, w.zctx, &w.hs_events))
                recur_log_warn("worker: cannot watch the handshakes: a refusal will show only as the "
                               "coordinator's silence");
            memset(&keys, 0, sizeof keys);   /* the socket has its copy */
        }
    }
    if (w.multi) s = recur_comm_agree(comm, s);
    if (s == RECUR_OK) {
        s = w.grid.world_rank == 0 ? loop_rank0(&w, exit_code) : loop_other(&w, exit_code);
    }
    recur_msgsock_close(w.sock);
    if (w.zctx) zmq_ctx_term(w.zctx);
    free(w.buf);
    for (size_t i = 0; i < w.n_host; i++) free(w.host[i].buf);
    free(w.host);
    recur_token_hist_free(w.hist);
    free(w.bias_stamp);
    free(w.x_boff), free(w.x_hoff), free(w.x_bias), free(w.x_hist), free(w.x_lp), free(w.x_tl), free(w.x_tt);
    free(w.res_lp), free(w.res_tl), free(w.res_tt);
    return s;
}
