/* test_proto.c: proto/recur_proto (pack/unpack of the API and internal envelopes).
 *   - every message type round-trips through pack/unpack with non-trivial values (fields
 *     checked one by one, and the re-encoding equals the first encoding byte for byte);
 *   - another protocol version, a missing version, or the other protocol's envelope is
 *     RECUR_E_PROTO with "protocol version X, expected Y" / "wrong socket";
 *   - every truncation of every encoding, random garbage, and thousands of random
 *     mutations of valid encodings never crash (run under ASan/UBSan by scripts/test.sh)
 *     and never give RECUR_OK for something pack would refuse;
 *   - the size limit (RECUR_E_RANGE) and the decoding memory budget;
 *   - the semantic checks (counts against lengths, slots, empty oneof, enum values, ...). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_proto.h"
#include "recur_testutil.h"

static int failures;
#define CHECK(cond) RECUR_CHECK(&failures, cond)

/* ------------------------------------------------------------------ a corpus of valid messages */

typedef struct enc {
    int internal;     /* 0: api envelope, 1: internal envelope */
    int body;         /* the body case packed                  */
    uint8_t *buf;
    size_t n;
} enc_t;

#define MAX_CORPUS 64
static enc_t corpus[MAX_CORPUS];
static int n_corpus;

static void add_api(const recur_api_envelope_t *env) {
    recur_proto_error_t err;
    enc_t *e = &corpus[n_corpus];
    recur_status_t s = recur_proto_api_pack(env, 0, &e->buf, &e->n, &err);
    if (s != RECUR_OK) {
        fprintf(stderr, "pack api %s: %s: %s\n", recur_proto_api_body_name(env->body_case), recur_status_str(s),
                err.msg);
        failures++;
        return;
    }
    e->internal = 0;
    e->body = env->body_case;
    n_corpus++;
}

static void add_internal(const recur_internal_envelope_t *env) {
    recur_proto_error_t err;
    enc_t *e = &corpus[n_corpus];
    recur_status_t s = recur_proto_internal_pack(env, 0, &e->buf, &e->n, &err);
    if (s != RECUR_OK) {
        fprintf(stderr, "pack internal %s: %s: %s\n", recur_proto_internal_body_name(env->body_case),
                recur_status_str(s), err.msg);
        failures++;
        return;
    }
    e->internal = 1;
    e->body = env->body_case;
    n_corpus++;
}

static const char *const PROMPT = "Hello, w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80";   /* 1- to 4-byte UTF-8 */
static const uint64_t SEED = 0xdeadbeefcafef00dull;

static void build_api_corpus(void) {
    /* generate, with a text prompt and every sampling field */
    {
        char *stop[] = {"\n\n", "END"};
        int32_t stop_ids[] = {0, 261};
        Recur__Api__SamplingParams sp = RECUR__API__SAMPLING_PARAMS__INIT;
        sp.has_temperature = 1, sp.temperature = 0.0f;   /* set to 0: greedy, not "unset" */
        sp.has_top_p = 1, sp.top_p = 0.9f;
        sp.has_top_k = 1, sp.top_k = 40;
        sp.has_min_p = 1, sp.min_p = 0.05f;
        sp.has_repetition_penalty = 1, sp.repetition_penalty = 1.1f;
        sp.has_presence_penalty = 1, sp.presence_penalty = 0.5f;
        sp.has_frequency_penalty = 1, sp.frequency_penalty = -0.25f;
        sp.has_seed = 1, sp.seed = SEED;
        sp.has_max_tokens = 1, sp.max_tokens = 256;
        sp.n_stop = 2, sp.stop = stop;
        sp.n_stop_token_ids = 2, sp.stop_token_ids = stop_ids;
        sp.has_logprobs = 1, sp.logprobs = 5;
        sp.has_ignore_eos = 1, sp.ignore_eos = 1;
        Recur__Api__GenerateRequest g = RECUR__API__GENERATE_REQUEST__INIT;
        g.request_id = "req-42";
        g.model = "rwkv7-g1-2.9b";
        g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT;
        g.text = (char *)PROMPT;
        g.sampling = &sp;
        g.has_priority = 1, g.priority = -3;
        g.session_id = "sess-1";
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
        env.generate = &g;
        add_api(&env);
    }
    /* generate, with token ids and no sampling */
    {
        int32_t ids[] = {1, 2, 3, 65529, 0};
        Recur__Api__TokenIds t = RECUR__API__TOKEN_IDS__INIT;
        t.n_ids = 5, t.ids = ids;
        Recur__Api__GenerateRequest g = RECUR__API__GENERATE_REQUEST__INIT;
        g.request_id = "req-43";
        g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TOKEN_IDS;
        g.token_ids = &t;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
        env.generate = &g;
        add_api(&env);
    }
    /* generate_response: two tokens with logprobs, and the final message */
    {
        Recur__Api__TopLogprob tl[2] = {RECUR__API__TOP_LOGPROB__INIT, RECUR__API__TOP_LOGPROB__INIT};
        tl[0].has_id = 1, tl[0].id = 11, tl[0].text = "a", tl[0].has_logprob = 1, tl[0].logprob = -0.5f;
        tl[1].has_id = 1, tl[1].id = 12, tl[1].text = "b", tl[1].has_logprob = 1, tl[1].logprob = -1.5f;
        Recur__Api__TopLogprob *tlp[] = {&tl[0], &tl[1]};
        Recur__Api__Token tok[2] = {RECUR__API__TOKEN__INIT, RECUR__API__TOKEN__INIT};
        tok[0].has_id = 1, tok[0].id = 11, tok[0].text = "a", tok[0].has_logprob = 1, tok[0].logprob = -0.5f;
        tok[0].n_top_logprobs = 2, tok[0].top_logprobs = tlp;
        tok[1].has_id = 1, tok[1].id = 50276, tok[1].text = "";   /* inside a multi-byte character */
        Recur__Api__Token *tokp[] = {&tok[0], &tok[1]};
        Recur__Api__Usage u = RECUR__API__USAGE__INIT;
        u.has_prompt_tokens = 1, u.prompt_tokens = 7;
        u.has_completion_tokens = 1, u.completion_tokens = 256;
        u.has_cached_prompt_tokens = 1, u.cached_prompt_tokens = 3;
        Recur__Api__GenerateFinal f = RECUR__API__GENERATE_FINAL__INIT;
        f.has_finish_reason = 1, f.finish_reason = RECUR__API__FINISH_REASON__FINISH_REASON_LENGTH;
        f.usage = &u;
        Recur__Api__GenerateResponse r = RECUR__API__GENERATE_RESPONSE__INIT;
        r.request_id = "req-42";
        r.n_tokens = 2, r.tokens = tokp;
        r.final = &f;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE;
        env.generate_response = &r;
        add_api(&env);
    }
    /* generate_response: an error final */
    {
        Recur__Api__Error e = RECUR__API__ERROR__INIT;
        e.has_code = 1, e.code = RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE, e.message = "worker rank 3 lost";
        Recur__Api__GenerateFinal f = RECUR__API__GENERATE_FINAL__INIT;
        f.has_finish_reason = 1, f.finish_reason = RECUR__API__FINISH_REASON__FINISH_REASON_ERROR;
        f.error = &e;
        Recur__Api__GenerateResponse r = RECUR__API__GENERATE_RESPONSE__INIT;
        r.request_id = "req-44";
        r.final = &f;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE;
        env.generate_response = &r;
        add_api(&env);
    }
    /* cancel and its response */
    {
        Recur__Api__CancelRequest c = RECUR__API__CANCEL_REQUEST__INIT;
        c.request_id = "req-42";
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_CANCEL;
        env.cancel = &c;
        add_api(&env);
        Recur__Api__CancelResponse cr = RECUR__API__CANCEL_RESPONSE__INIT;
        cr.request_id = "req-42", cr.has_found = 1, cr.found = 1;
        env.body_case = RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE;
        env.cancel_response = &cr;
        add_api(&env);
    }
    /* session and its response */
    {
        Recur__Api__SessionRequest s = RECUR__API__SESSION_REQUEST__INIT;
        s.request_id = "r-s", s.session_id = "sess-1", s.has_op = 1, s.op = RECUR__API__SESSION_OP__SESSION_OP_GET;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
        env.session = &s;
        add_api(&env);
        Recur__Api__SessionInfo info = RECUR__API__SESSION_INFO__INIT;
        info.session_id = "sess-1", info.model = "xlstm-7b", info.has_n_tokens = 1, info.n_tokens = 123456789012ull;
        Recur__Api__SessionResponse sr = RECUR__API__SESSION_RESPONSE__INIT;
        sr.request_id = "r-s", sr.info = &info;
        env.body_case = RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE;
        env.session_response = &sr;
        add_api(&env);
        /* an IMPORT chunk, an EXPORT chunk answer, a LIST answer */
        static uint8_t bytes[5] = {1, 2, 3, 4, 5};
        Recur__Api__StateChunk ch = RECUR__API__STATE_CHUNK__INIT;
        ch.has_offset = ch.has_total = ch.has_data = 1, ch.offset = 10, ch.total = 15, ch.data.len = 5, ch.data.data = bytes;
        Recur__Api__SessionRequest im = RECUR__API__SESSION_REQUEST__INIT;
        im.request_id = "r-i", im.has_op = 1, im.op = RECUR__API__SESSION_OP__SESSION_OP_IMPORT, im.chunk = &ch;
        env.body_case = RECUR__API__ENVELOPE__BODY_SESSION;
        env.session = &im;
        add_api(&env);
        Recur__Api__SessionInfo li[2] = {RECUR__API__SESSION_INFO__INIT, RECUR__API__SESSION_INFO__INIT};
        li[0].session_id = "a", li[0].has_tier = 1, li[0].tier = RECUR__API__SESSION_TIER__SESSION_TIER_HOST;
        li[1].session_id = "b", li[1].has_busy = 1, li[1].busy = 1, li[1].has_saved_tokens = 1, li[1].saved_tokens = 77;
        Recur__Api__SessionInfo *lp[2] = {&li[0], &li[1]};
        Recur__Api__SessionResponse lr = RECUR__API__SESSION_RESPONSE__INIT;
        lr.request_id = "r-l", lr.n_sessions = 2, lr.sessions = lp, lr.chunk = &ch, lr.has_done = 1, lr.done = 1;
        env.body_case = RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE;
        env.session_response = &lr;
        add_api(&env);
    }
    /* list_models and its response */
    {
        Recur__Api__ListModelsRequest l = RECUR__API__LIST_MODELS_REQUEST__INIT;
        l.request_id = "r-l";
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_LIST_MODELS;
        env.list_models = &l;
        add_api(&env);
        Recur__Api__ModelInfo m[2] = {RECUR__API__MODEL_INFO__INIT, RECUR__API__MODEL_INFO__INIT};
        m[0].id = "rwkv7-7b", m[0].arch = "rwkv7", m[0].has_n_vocab = 1, m[0].n_vocab = 65536;
        m[0].has_n_layer = 1, m[0].n_layer = 32, m[0].has_n_embd = 1, m[0].n_embd = 4096, m[0].has_n_head = 1;
        m[0].n_head = 64, m[0].checkpoint_id = "sha256:0123abcd", m[0].has_tp = 1, m[0].tp = 2, m[0].has_pp = 1;
        m[0].pp = 2, m[0].has_max_sequences = 1, m[0].max_sequences = 511;
        m[1].id = "xlstm-7b", m[1].arch = "xlstm", m[1].has_n_vocab = 1, m[1].n_vocab = 50304;
        Recur__Api__ModelInfo *mp[] = {&m[0], &m[1]};
        Recur__Api__ListModelsResponse lr = RECUR__API__LIST_MODELS_RESPONSE__INIT;
        lr.request_id = "r-l", lr.n_models = 2, lr.models = mp;
        env.body_case = RECUR__API__ENVELOPE__BODY_LIST_MODELS_RESPONSE;
        env.list_models_response = &lr;
        add_api(&env);
    }
    /* health and its response */
    {
        Recur__Api__HealthRequest h = RECUR__API__HEALTH_REQUEST__INIT;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH;
        env.health = &h;
        add_api(&env);
        Recur__Api__HealthResponse hr = RECUR__API__HEALTH_RESPONSE__INIT;
        hr.has_status = 1, hr.status = RECUR__API__SERVING_STATUS__SERVING_STATUS_NOT_SERVING;
        hr.detail = "2 of 4 workers ready";
        hr.has_workers_ready = 1, hr.workers_ready = 2, hr.has_workers_expected = 1, hr.workers_expected = 4;
        hr.has_active_requests = 1, hr.active_requests = 17, hr.has_queued_requests = 1, hr.queued_requests = 5;
        hr.has_free_slots = 1, hr.free_slots = 300;
        env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE;
        env.health_response = &hr;
        add_api(&env);
    }
    /* error */
    {
        Recur__Api__Error e = RECUR__API__ERROR__INIT;
        e.has_code = 1, e.code = RECUR__API__ERROR_CODE__ERROR_CODE_PROTOCOL;
        e.message = "api message: protocol version 2, expected 1";
        Recur__Api__ErrorResponse er = RECUR__API__ERROR_RESPONSE__INIT;
        er.request_id = "req-9", er.error = &e;
        recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
        env.body_case = RECUR__API__ENVELOPE__BODY_ERROR;
        env.error = &er;
        add_api(&env);
    }
}

static void build_internal_corpus(void) {
    /* hello: rank 3 of a tp 2 x pp 2 grid */
    {
        Recur__Internal__ModelIdentity m = RECUR__INTERNAL__MODEL_IDENTITY__INIT;
        m.arch = "rwkv7", m.has_n_vocab = 1, m.n_vocab = 65536, m.has_n_layer = 1, m.n_layer = 32;
        m.has_n_embd = 1, m.n_embd = 4096, m.has_n_head = 1, m.n_head = 64, m.has_head_size = 1, m.head_size = 64;
        m.checkpoint_id = "/models/rwkv7-g1-7.2b.safetensors:15032385536:1718000000";
        Recur__Internal__Hello h = RECUR__INTERNAL__HELLO__INIT;
        h.has_rank = 1, h.rank = 3, h.has_world_size = 1, h.world_size = 4, h.has_tp = 1, h.tp = 2;
        h.has_pp = 1, h.pp = 2, h.has_tp_rank = 1, h.tp_rank = 1, h.has_pp_rank = 1, h.pp_rank = 1;
        h.host = "gpu-node-07", h.backend = "cuda", h.model = &m;
        h.has_n_slots = 1, h.n_slots = 512;
        h.has_state_bytes_per_slot = 1, h.state_bytes_per_slot = 17301504ull;
        h.has_pid = 1, h.pid = 424242, h.software_version = "0.1.0";
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HELLO;
        env.hello = &h;
        add_internal(&env);
    }
    /* ready */
    {
        Recur__Internal__Ready r = RECUR__INTERNAL__READY__INIT;
        r.has_epoch = 1, r.epoch = 0x0123456789abcdefull, r.has_heartbeat_interval_ms = 1, r.heartbeat_interval_ms = 500;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_READY;
        env.ready = &r;
        add_internal(&env);
    }
    /* step plan: a 5-token prefill chunk (no output), two decodes that sample */
    {
        int32_t slot[] = {5, 2, 300};
        int32_t seq_len[] = {5, 1, 1};
        int32_t tokens[] = {10, 20, 30, 40, 50, 65535, 0};
        Recur__Internal__LogitsMode logits[] = {RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE,
                                                RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE,
                                                RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE};
        Recur__Internal__SamplingRow row[2] = {RECUR__INTERNAL__SAMPLING_ROW__INIT,
                                               RECUR__INTERNAL__SAMPLING_ROW__INIT};
        for (int i = 0; i < 2; i++) {
            row[i].has_temperature = 1, row[i].temperature = i ? 0.7f : 0.0f;
            row[i].has_top_k = 1, row[i].top_k = i ? 50 : 0;
            row[i].has_top_p = 1, row[i].top_p = i ? 0.95f : 1.0f;
            row[i].has_min_p = 1, row[i].min_p = 0.0f;
            row[i].has_seed = 1, row[i].seed = SEED + (uint64_t)i;
            row[i].has_step = 1, row[i].step = 1000 + (uint64_t)i;
        }
        row[1].has_repetition_penalty = 1, row[1].repetition_penalty = 1.2f;
        row[1].has_presence_penalty = 1, row[1].presence_penalty = 0.1f;
        row[1].has_frequency_penalty = 1, row[1].frequency_penalty = 0.2f;
        row[1].has_logprobs = 1, row[1].logprobs = 2;
        Recur__Internal__SamplingRow *rowp[] = {&row[0], &row[1]};
        int32_t resets[] = {5, 300};
        Recur__Internal__StepPlan p = RECUR__INTERNAL__STEP_PLAN__INIT;
        p.has_step = 1, p.step = 77;
        p.n_slot = 3, p.slot = slot, p.n_seq_len = 3, p.seq_len = seq_len, p.n_tokens = 7, p.tokens = tokens;
        p.n_logits = 3, p.logits = logits, p.n_sampling = 2, p.sampling = rowp;
        p.n_reset_slots = 2, p.reset_slots = resets;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN;
        env.step_plan = &p;
        add_internal(&env);
    }
    /* step result: the answer to that plan, top 2 logprobs */
    {
        int32_t token[] = {-1, 4321, 7};
        float logprob[] = {0.0f, -0.125f, -3.5f};
        int32_t top_token[] = {-1, -1, 4321, 99, 7, 8};
        float top_logprob[] = {0.0f, 0.0f, -0.125f, -2.25f, -0.75f, -1.0f};
        Recur__Internal__StepTiming t = RECUR__INTERNAL__STEP_TIMING__INIT;
        t.has_forward_us = 1, t.forward_us = 12345, t.has_sample_us = 1, t.sample_us = 67, t.has_total_us = 1;
        t.total_us = 12500;
        Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
        st.has_code = 1, st.code = 0;
        Recur__Internal__StepResult r = RECUR__INTERNAL__STEP_RESULT__INIT;
        r.has_step = 1, r.step = 77, r.has_rank = 1, r.rank = 3;
        r.n_token = 3, r.token = token, r.n_logprob = 3, r.logprob = logprob;
        r.has_top_n = 1, r.top_n = 2, r.n_top_token = 6, r.top_token = top_token;
        r.n_top_logprob = 6, r.top_logprob = top_logprob;
        r.timing = &t, r.status = &st;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT;
        env.step_result = &r;
        add_internal(&env);
    }
    /* step result: a failure */
    {
        Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
        st.has_code = 1, st.code = RECUR_E_CUDA, st.message = "cudaMemcpyAsync: an illegal memory access";
        Recur__Internal__StepResult r = RECUR__INTERNAL__STEP_RESULT__INIT;
        r.has_step = 1, r.step = 78, r.has_rank = 1, r.rank = 0, r.status = &st;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT;
        env.step_result = &r;
        add_internal(&env);
    }
    /* slot ops: one of each kind */
    {
        static const Recur__Internal__SlotOpKind kinds[] = {
            RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY,
            RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE, RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD};
        int32_t pend[] = {7, 0};
        Recur__Internal__CheckpointMeta meta = RECUR__INTERNAL__CHECKPOINT_META__INIT;
        meta.session_id = "sess-1", meta.model = "default:tuned", meta.has_n_consumed = 1, meta.n_consumed = 1234;
        meta.n_pending = 2, meta.pending = pend;
        for (int i = 0; i < 4; i++) {
            Recur__Internal__SlotOp o = RECUR__INTERNAL__SLOT_OP__INIT;
            o.has_op_id = 1, o.op_id = 900 + (uint64_t)i, o.has_kind = 1, o.kind = kinds[i];
            o.has_slot = 1, o.slot = 17;
            if (i == 1) o.has_src_slot = 1, o.src_slot = 4;
            if (i >= 2) o.path = "/var/lib/recur/sessions/sess-1.rank3.state";
            if (i == 2) o.meta = &meta, o.has_generation = 1, o.generation = 5;
            recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
            env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP;
            env.slot_op = &o;
            add_internal(&env);
        }
    }
    /* slot op result, heartbeat, shutdown */
    {
        Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
        st.has_code = 1, st.code = RECUR_E_IO, st.message = "open /var/lib/recur/x: No space left on device";
        Recur__Internal__SlotOpResult r = RECUR__INTERNAL__SLOT_OP_RESULT__INIT;
        r.has_op_id = 1, r.op_id = 903, r.has_rank = 1, r.rank = 2, r.status = &st, r.has_bytes = 1, r.bytes = 4096;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP_RESULT;
        env.slot_op_result = &r;
        add_internal(&env);

        Recur__Internal__Heartbeat hb = RECUR__INTERNAL__HEARTBEAT__INIT;
        hb.has_seq = 1, hb.seq = 31, hb.has_rank = 1, hb.rank = -1, hb.has_unix_time_ms = 1;
        hb.unix_time_ms = 1718000000123ull, hb.has_last_step = 1, hb.last_step = 76;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT;
        env.heartbeat = &hb;
        add_internal(&env);

        Recur__Internal__Shutdown sd = RECUR__INTERNAL__SHUTDOWN__INIT;
        sd.reason = "rank 1 reports checkpoint_id B, rank 0 A", sd.has_exit_code = 1, sd.exit_code = 3;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN;
        env.shutdown = &sd;
        add_internal(&env);
    }
}

/* ------------------------------------------------------------------ round trips */

static int streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

/* Field-by-field checks of what the decoder returned for corpus entry i. */
static void check_api_fields(int i, const recur_api_envelope_t *e) {
    CHECK(e->has_protocol_version && e->protocol_version == RECUR_PROTO_API_VERSION);
    switch (e->body_case) {
    case RECUR__API__ENVELOPE__BODY_GENERATE: {
        const Recur__Api__GenerateRequest *g = e->generate;
        if (g->prompt_case == RECUR__API__GENERATE_REQUEST__PROMPT_TEXT) {
            const Recur__Api__SamplingParams *sp = g->sampling;
            CHECK(streq(g->request_id, "req-42") && streq(g->model, "rwkv7-g1-2.9b") && streq(g->text, PROMPT));
            CHECK(g->has_priority && g->priority == -3 && streq(g->session_id, "sess-1"));
            CHECK(sp && sp->has_temperature && sp->temperature == 0.0f && sp->top_p == 0.9f && sp->top_k == 40);
            CHECK(sp->min_p == 0.05f && sp->repetition_penalty == 1.1f && sp->presence_penalty == 0.5f);
            CHECK(sp->frequency_penalty == -0.25f && sp->has_seed && sp->seed == SEED && sp->max_tokens == 256);
            CHECK(sp->n_stop == 2 && streq(sp->stop[0], "\n\n") && streq(sp->stop[1], "END"));
            CHECK(sp->n_stop_token_ids == 2 && sp->stop_token_ids[0] == 0 && sp->stop_token_ids[1] == 261);
            CHECK(sp->has_logprobs && sp->logprobs == 5 && sp->has_ignore_eos && sp->ignore_eos);
        } else {
            CHECK(g->prompt_case == RECUR__API__GENERATE_REQUEST__PROMPT_TOKEN_IDS && streq(g->request_id, "req-43"));
            CHECK(g->token_ids && g->token_ids->n_ids == 5 && g->token_ids->ids[3] == 65529 &&
                  g->token_ids->ids[4] == 0);
            CHECK(!g->sampling && !g->has_priority && !g->model && !g->session_id);
        }
        break;
    }
    case RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE: {
        const Recur__Api__GenerateResponse *r = e->generate_response;
        CHECK(r->final && r->final->has_finish_reason);
        if (r->final->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_LENGTH) {
            CHECK(streq(r->request_id, "req-42") && r->n_tokens == 2);
            CHECK(r->tokens[0]->id == 11 && streq(r->tokens[0]->text, "a") && r->tokens[0]->logprob == -0.5f);
            CHECK(r->tokens[0]->n_top_logprobs == 2 && r->tokens[0]->top_logprobs[1]->id == 12 &&
                  r->tokens[0]->top_logprobs[1]->logprob == -1.5f && streq(r->tokens[0]->top_logprobs[1]->text, "b"));
            CHECK(r->tokens[1]->id == 50276 && !r->tokens[1]->has_logprob);
            CHECK(r->final->usage && r->final->usage->prompt_tokens == 7 && r->final->usage->completion_tokens == 256 &&
                  r->final->usage->cached_prompt_tokens == 3);
        } else {
            CHECK(r->final->finish_reason == RECUR__API__FINISH_REASON__FINISH_REASON_ERROR && r->n_tokens == 0);
            CHECK(r->final->error && r->final->error->code == RECUR__API__ERROR_CODE__ERROR_CODE_UNAVAILABLE &&
                  streq(r->final->error->message, "worker rank 3 lost"));
        }
        break;
    }
    case RECUR__API__ENVELOPE__BODY_CANCEL:
        CHECK(streq(e->cancel->request_id, "req-42"));
        break;
    case RECUR__API__ENVELOPE__BODY_CANCEL_RESPONSE:
        CHECK(streq(e->cancel_response->request_id, "req-42") && e->cancel_response->has_found &&
              e->cancel_response->found);
        break;
    case RECUR__API__ENVELOPE__BODY_SESSION:
        if (e->session->op == RECUR__API__SESSION_OP__SESSION_OP_IMPORT)
            CHECK(!e->session->session_id && e->session->chunk && e->session->chunk->offset == 10 &&
                  e->session->chunk->total == 15 && e->session->chunk->data.len == 5 &&
                  e->session->chunk->data.data[4] == 5);
        else
            CHECK(streq(e->session->session_id, "sess-1") && e->session->op == RECUR__API__SESSION_OP__SESSION_OP_GET);
        break;
    case RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE:
        if (e->session_response->n_sessions)
            CHECK(e->session_response->n_sessions == 2 && streq(e->session_response->sessions[1]->session_id, "b") &&
                  e->session_response->sessions[1]->saved_tokens == 77 &&
                  e->session_response->sessions[0]->tier == RECUR__API__SESSION_TIER__SESSION_TIER_HOST &&
                  e->session_response->done && e->session_response->chunk->data.len == 5);
        else
            CHECK(e->session_response->info && e->session_response->info->n_tokens == 123456789012ull &&
                  streq(e->session_response->info->model, "xlstm-7b"));
        break;
    case RECUR__API__ENVELOPE__BODY_LIST_MODELS:
        CHECK(streq(e->list_models->request_id, "r-l"));
        break;
    case RECUR__API__ENVELOPE__BODY_LIST_MODELS_RESPONSE: {
        const Recur__Api__ListModelsResponse *l = e->list_models_response;
        CHECK(l->n_models == 2 && streq(l->models[0]->id, "rwkv7-7b") && l->models[0]->n_vocab == 65536);
        CHECK(l->models[0]->n_head == 64 && l->models[0]->tp == 2 && l->models[0]->max_sequences == 511);
        CHECK(streq(l->models[0]->checkpoint_id, "sha256:0123abcd") && streq(l->models[1]->arch, "xlstm"));
        CHECK(!l->models[1]->has_n_layer);
        break;
    }
    case RECUR__API__ENVELOPE__BODY_HEALTH:
        CHECK(e->health->request_id == NULL);
        break;
    case RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE: {
        const Recur__Api__HealthResponse *h = e->health_response;
        CHECK(h->status == RECUR__API__SERVING_STATUS__SERVING_STATUS_NOT_SERVING && h->workers_ready == 2);
        CHECK(h->workers_expected == 4 && h->active_requests == 17 && h->queued_requests == 5 && h->free_slots == 300);
        CHECK(streq(h->detail, "2 of 4 workers ready"));
        break;
    }
    case RECUR__API__ENVELOPE__BODY_ERROR:
        CHECK(streq(e->error->request_id, "req-9") && e->error->error &&
              e->error->error->code == RECUR__API__ERROR_CODE__ERROR_CODE_PROTOCOL);
        break;
    default:
        fprintf(stderr, "corpus %d: unexpected api body %d\n", i, (int)e->body_case);
        failures++;
    }
}

static void check_internal_fields(int i, const recur_internal_envelope_t *e) {
    CHECK(e->has_protocol_version && e->protocol_version == RECUR_PROTO_INTERNAL_VERSION);
    switch (e->body_case) {
    case RECUR__INTERNAL__ENVELOPE__BODY_HELLO: {
        const Recur__Internal__Hello *h = e->hello;
        CHECK(h->rank == 3 && h->world_size == 4 && h->tp == 2 && h->pp == 2 && h->tp_rank == 1 && h->pp_rank == 1);
        CHECK(streq(h->host, "gpu-node-07") && streq(h->backend, "cuda") && h->n_slots == 512);
        CHECK(h->state_bytes_per_slot == 17301504ull && h->pid == 424242 && streq(h->software_version, "0.1.0"));
        CHECK(h->model && streq(h->model->arch, "rwkv7") && h->model->n_vocab == 65536 && h->model->n_layer == 32);
        CHECK(h->model->n_embd == 4096 && h->model->n_head == 64 && h->model->head_size == 64);
        CHECK(streq(h->model->checkpoint_id, "/models/rwkv7-g1-7.2b.safetensors:15032385536:1718000000"));
        break;
    }
    case RECUR__INTERNAL__ENVELOPE__BODY_READY:
        CHECK(e->ready->epoch == 0x0123456789abcdefull && e->ready->heartbeat_interval_ms == 500);
        break;
    case RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN: {
        const Recur__Internal__StepPlan *p = e->step_plan;
        CHECK(p->step == 77 && p->n_slot == 3 && p->slot[2] == 300 && p->n_seq_len == 3 && p->seq_len[0] == 5);
        CHECK(p->n_tokens == 7 && p->tokens[4] == 50 && p->tokens[5] == 65535 && p->tokens[6] == 0);
        CHECK(p->n_logits == 3 && p->logits[0] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE &&
              p->logits[2] == RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE);
        CHECK(p->n_sampling == 2 && p->sampling[0]->temperature == 0.0f && p->sampling[1]->temperature == 0.7f);
        CHECK(p->sampling[1]->top_k == 50 && p->sampling[1]->top_p == 0.95f && p->sampling[1]->seed == SEED + 1);
        CHECK(p->sampling[1]->step == 1001 && p->sampling[1]->repetition_penalty == 1.2f &&
              p->sampling[1]->logprobs == 2 && !p->sampling[0]->has_logprobs);
        CHECK(p->n_reset_slots == 2 && p->reset_slots[1] == 300);
        break;
    }
    case RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT: {
        const Recur__Internal__StepResult *r = e->step_result;
        if (r->step == 77) {
            CHECK(r->rank == 3 && r->n_token == 3 && r->token[0] == -1 && r->token[1] == 4321);
            CHECK(r->n_logprob == 3 && r->logprob[2] == -3.5f && r->top_n == 2 && r->n_top_token == 6);
            CHECK(r->top_token[3] == 99 && r->top_logprob[3] == -2.25f && r->timing && r->timing->forward_us == 12345);
            CHECK(recur_proto_status_code(r->status) == RECUR_OK);
        } else {
            CHECK(r->step == 78 && r->n_token == 0 && recur_proto_status_code(r->status) == RECUR_E_CUDA);
            CHECK(streq(r->status->message, "cudaMemcpyAsync: an illegal memory access"));
        }
        break;
    }
    case RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP: {
        const Recur__Internal__SlotOp *o = e->slot_op;
        CHECK(o->op_id >= 900 && o->op_id <= 903 && o->slot == 17);
        CHECK(o->kind == (Recur__Internal__SlotOpKind)(o->op_id - 899));
        if (o->kind == RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY) CHECK(o->has_src_slot && o->src_slot == 4);
        if (o->op_id >= 902) CHECK(streq(o->path, "/var/lib/recur/sessions/sess-1.rank3.state"));
        if (o->op_id == 902)
            CHECK(o->meta && streq(o->meta->session_id, "sess-1") && streq(o->meta->model, "default:tuned") &&
                  o->meta->n_consumed == 1234 && o->meta->n_pending == 2 && o->meta->pending[0] == 7 &&
                  o->generation == 5);
        else CHECK(!o->meta && !o->has_generation);
        break;
    }
    case RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP_RESULT:
        CHECK(e->slot_op_result->op_id == 903 && e->slot_op_result->rank == 2 && e->slot_op_result->bytes == 4096);
        CHECK(recur_proto_status_code(e->slot_op_result->status) == RECUR_E_IO);
        break;
    case RECUR__INTERNAL__ENVELOPE__BODY_HEARTBEAT:
        CHECK(e->heartbeat->seq == 31 && e->heartbeat->rank == -1 && e->heartbeat->unix_time_ms == 1718000000123ull);
        CHECK(e->heartbeat->last_step == 76);
        break;
    case RECUR__INTERNAL__ENVELOPE__BODY_SHUTDOWN:
        CHECK(streq(e->shutdown->reason, "rank 1 reports checkpoint_id B, rank 0 A") && e->shutdown->exit_code == 3);
        break;
    default:
        fprintf(stderr, "corpus %d: unexpected internal body %d\n", i, (int)e->body_case);
        failures++;
    }
}

/* Decodes buf as the given protocol; on RECUR_OK re-encodes it (which must work: unpack
 * and pack run the same checks) and, when `same` is set, checks the bytes are equal. */
static recur_status_t decode(int internal, const uint8_t *buf, size_t n, size_t max_bytes, int same,
                             recur_proto_error_t *err, int check_fields, int corpus_index) {
    recur_status_t s;
    uint8_t *re = NULL;
    size_t rn = 0;
    recur_proto_error_t err2;
    /* *out starts non-NULL: unpack must set it to NULL on failure (fuzz_proto_* found it
     * left untouched) */
    static char poison;
    if (internal) {
        recur_internal_envelope_t *e = (recur_internal_envelope_t *)(void *)&poison;
        s = recur_proto_internal_unpack(buf, n, max_bytes, &e, err);
        CHECK((s == RECUR_OK) == (e != NULL));
        if (s != RECUR_OK) return s;
        if (check_fields) check_internal_fields(corpus_index, e);
        recur_status_t ps = recur_proto_internal_pack(e, 0, &re, &rn, &err2);
        if (ps != RECUR_OK) fprintf(stderr, "re-pack of an accepted internal message failed: %s\n", err2.msg);
        CHECK(ps == RECUR_OK);
        recur_proto_internal_free(e);
    } else {
        recur_api_envelope_t *e = (recur_api_envelope_t *)(void *)&poison;
        s = recur_proto_api_unpack(buf, n, max_bytes, &e, err);
        CHECK((s == RECUR_OK) == (e != NULL));
        if (s != RECUR_OK) return s;
        if (check_fields) check_api_fields(corpus_index, e);
        recur_status_t ps = recur_proto_api_pack(e, 0, &re, &rn, &err2);
        if (ps != RECUR_OK) fprintf(stderr, "re-pack of an accepted api message failed: %s\n", err2.msg);
        CHECK(ps == RECUR_OK);
        recur_proto_api_free(e);
    }
    if (same && re) CHECK(rn == n && memcmp(re, buf, n) == 0);
    free(re);
    return s;
}

static void test_roundtrip(void) {
    int seen_api[64] = {0}, seen_int[256] = {0};
    for (int i = 0; i < n_corpus; i++) {
        recur_proto_error_t err;
        recur_status_t s = decode(corpus[i].internal, corpus[i].buf, corpus[i].n, 0, 1, &err, 1, i);
        if (s != RECUR_OK) fprintf(stderr, "corpus %d: %s: %s\n", i, recur_status_str(s), err.msg);
        CHECK(s == RECUR_OK);
        if (corpus[i].internal) seen_int[corpus[i].body]++;
        else seen_api[corpus[i].body]++;
    }
    /* every body of both envelopes is in the corpus */
    for (int b = 10; b < 40; b++)
        if (strcmp(recur_proto_api_body_name((Recur__Api__Envelope__BodyCase)b), "unknown") != 0 && !seen_api[b]) {
            fprintf(stderr, "api body %s not round-tripped\n", recur_proto_api_body_name((Recur__Api__Envelope__BodyCase)b));
            failures++;
        }
    for (int b = 100; b < 200; b++)
        if (strcmp(recur_proto_internal_body_name((Recur__Internal__Envelope__BodyCase)b), "unknown") != 0 &&
            !seen_int[b]) {
            fprintf(stderr, "internal body %s not round-tripped\n",
                    recur_proto_internal_body_name((Recur__Internal__Envelope__BodyCase)b));
            failures++;
        }
    fprintf(stderr, "round trip: %d messages\n", n_corpus);
}

/* ------------------------------------------------------------------ versions */

static void expect(recur_status_t got, recur_status_t want, const recur_proto_error_t *err, const char *needle,
                   const char *what) {
    int ok = got == want && (!needle || strstr(err->msg, needle));
    if (!ok) {
        fprintf(stderr, "%s: got %s \"%s\", expected %s containing \"%s\"\n", what, recur_status_str(got), err->msg,
                recur_status_str(want), needle ? needle : "");
        failures++;
    }
}

/* Packs with protobuf-c directly: bypasses our checks and our version stamp. */
static uint8_t *raw_pack(const ProtobufCMessage *m, size_t *n) {
    *n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*n ? *n : 1);
    protobuf_c_message_pack(m, b);
    return b;
}

static void test_versions(void) {
    recur_proto_error_t err;
    Recur__Api__HealthRequest h = RECUR__API__HEALTH_REQUEST__INIT;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_HEALTH;
    env.health = &h;
    size_t n;
    uint8_t *b;
    recur_api_envelope_t *out = NULL;

    env.has_protocol_version = 1, env.protocol_version = 1;   /* a version-1 client (before sessions) */
    b = raw_pack(&env.base, &n);
    expect(recur_proto_api_unpack(b, n, 0, &out, &err), RECUR_E_PROTO, &err, "protocol version 1, expected 2",
           "api v1");
    CHECK(out == NULL);
    free(b);

    env.protocol_version = 0;   /* present but 0 */
    b = raw_pack(&env.base, &n);
    expect(recur_proto_api_unpack(b, n, 0, &out, &err), RECUR_E_PROTO, &err, "protocol version 0, expected 2",
           "api v0");
    free(b);

    env.has_protocol_version = 0;
    b = raw_pack(&env.base, &n);
    expect(recur_proto_api_unpack(b, n, 0, &out, &err), RECUR_E_PROTO, &err, "no protocol_version", "api no version");
    free(b);

    /* a future version whose body our schema cannot even decode: the version is still what
     * the reader reports (08 63 = version 99; field 10 with wire type 0 instead of 2) */
    const uint8_t future[] = {0x08, 0x63, 0x50, 0x01};
    expect(recur_proto_api_unpack(future, sizeof(future), 0, &out, &err), RECUR_E_PROTO, &err,
           "protocol version 99, expected 2", "api future");
    expect(recur_proto_api_unpack(future + 2, 2, 0, &out, &err), RECUR_E_PROTO, &err, "no protocol_version",
           "api body without version");

    Recur__Internal__Ready r = RECUR__INTERNAL__READY__INIT;
    r.has_epoch = 1, r.epoch = 5;
    recur_internal_envelope_t ie = RECUR__INTERNAL__ENVELOPE__INIT;
    ie.body_case = RECUR__INTERNAL__ENVELOPE__BODY_READY;
    ie.ready = &r;
    ie.has_protocol_version = 1, ie.protocol_version = 7;
    recur_internal_envelope_t *iout = NULL;
    b = raw_pack(&ie.base, &n);
    expect(recur_proto_internal_unpack(b, n, 0, &iout, &err), RECUR_E_PROTO, &err, "protocol version 7, expected 2",
           "internal v7");
    CHECK(iout == NULL);
    free(b);

    /* each protocol's envelope sent to the other's socket */
    for (int i = 0; i < n_corpus; i++) {
        if (corpus[i].internal)
            expect(recur_proto_api_unpack(corpus[i].buf, corpus[i].n, 0, &out, &err), RECUR_E_PROTO, &err,
                   "wrong socket", "internal message to the api");
        else
            expect(recur_proto_internal_unpack(corpus[i].buf, corpus[i].n, 0, &iout, &err), RECUR_E_PROTO, &err,
                   "wrong socket", "api message to the internal socket");
    }
}

/* ------------------------------------------------------------------ malformed input */

static int acceptable_failure(recur_status_t s) {
    return s == RECUR_E_FORMAT || s == RECUR_E_PROTO;
}

static void test_truncation(void) {
    size_t n_cases = 0;
    for (int i = 0; i < n_corpus; i++) {
        for (size_t k = 0; k < corpus[i].n; k++) {
            recur_proto_error_t err;
            recur_status_t s = decode(corpus[i].internal, corpus[i].buf, k, 0, 0, &err, 0, i);
            n_cases++;
            if (!acceptable_failure(s) || err.msg[0] == '\0') {
                fprintf(stderr, "corpus %d cut to %zu of %zu bytes: %s \"%s\"\n", i, k, corpus[i].n,
                        recur_status_str(s), err.msg);
                failures++;
            }
            if (k >= 2) CHECK(s == RECUR_E_FORMAT);   /* the version (2 bytes) is whole: not a version error */
        }
    }
    fprintf(stderr, "truncation: %zu prefixes refused\n", n_cases);
}

static void test_garbage(void) {
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    uint8_t buf[600];
    int n_ok = 0;
    for (int it = 0; it < 6000; it++) {
        size_t n = recur_test_rng_below(&rng, 512);
        for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)recur_test_rng_next(&rng);
        if (it % 2 && n >= 2) buf[0] = 0x08, buf[1] = 0x01;   /* half of them past the version check */
        recur_proto_error_t err;
        recur_status_t s = decode(it % 4 >= 2, buf, n, 0, 0, &err, 0, -1);
        if (s == RECUR_OK) n_ok++;
        else if (!acceptable_failure(s)) {
            fprintf(stderr, "garbage %d (%zu bytes): %s \"%s\"\n", it, n, recur_status_str(s), err.msg);
            failures++;
        }
    }
    fprintf(stderr, "garbage: 6000 random buffers, %d happened to be valid\n", n_ok);
}

/* Random edits of valid encodings: flips, overwrites, inserts, deletes, duplicated ranges,
 * varint-ish bytes. Whatever decodes must re-encode (decode() checks). */
static void test_mutations(void) {
    uint64_t rng = 0x0ddba11cafebabeull;
    const int iters = 20000;
    int n_ok = 0, n_fail = 0;
    uint8_t *buf = malloc(8192);
    for (int it = 0; it < iters; it++) {
        const enc_t *e = &corpus[recur_test_rng_below(&rng, (uint32_t)n_corpus)];
        size_t n = e->n;
        memcpy(buf, e->buf, n);
        int n_mut = 1 + (int)recur_test_rng_below(&rng, 4);
        for (int m = 0; m < n_mut && n > 0; m++) {
            size_t at = recur_test_rng_below(&rng, (uint32_t)n);
            switch (recur_test_rng_below(&rng, 7)) {
            case 0: buf[at] ^= (uint8_t)(1u << recur_test_rng_below(&rng, 8)); break;
            case 1: buf[at] = (uint8_t)recur_test_rng_next(&rng); break;
            case 2:   /* insert a byte */
                if (n < 4096) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (uint8_t)recur_test_rng_next(&rng);
                    n++;
                }
                break;
            case 3:   /* delete a byte */
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
                break;
            case 4: { /* duplicate a range (repeated fields, oneof set twice) */
                size_t len = 1 + recur_test_rng_below(&rng, (uint32_t)(n - at));
                if (n + len < 4096) {
                    memmove(buf + at + len, buf + at, n - at);
                    n += len;
                }
                break;
            }
            case 5: buf[at] = (uint8_t)(0x80 | recur_test_rng_next(&rng)); break;   /* a varint that goes on */
            default: n = at; break;                                                    /* truncate */
            }
        }
        recur_proto_error_t err;
        recur_status_t s = decode(e->internal, buf, n, 0, 0, &err, 0, -1);
        if (s == RECUR_OK) n_ok++;
        else if (acceptable_failure(s)) n_fail++;
        else {
            fprintf(stderr, "mutation %d: %s \"%s\"\n", it, recur_status_str(s), err.msg);
            failures++;
        }
    }
    free(buf);
    fprintf(stderr, "mutations: %d edits, %d still valid, %d refused\n", iters, n_ok, n_fail);
}

/* ------------------------------------------------------------------ limits */

static void test_size_limits(void) {
    recur_proto_error_t err;
    const size_t n_tok = 100000;
    int32_t *tokens = malloc(n_tok * sizeof(int32_t));
    for (size_t i = 0; i < n_tok; i++) tokens[i] = (int32_t)(i * 7919 % 65536);
    int32_t slot = 9, seq_len = (int32_t)n_tok;
    Recur__Internal__LogitsMode lm = RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE;
    Recur__Internal__StepPlan p = RECUR__INTERNAL__STEP_PLAN__INIT;
    p.has_step = 1, p.step = 1, p.n_slot = 1, p.slot = &slot, p.n_seq_len = 1, p.seq_len = &seq_len;
    p.n_tokens = n_tok, p.tokens = tokens, p.n_logits = 1, p.logits = &lm;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN;
    env.step_plan = &p;

    uint8_t *b = NULL;
    size_t n = 0;
    expect(recur_proto_internal_pack(&env, 100000, &b, &n, &err), RECUR_E_RANGE, &err, "exceeds the limit of 100000",
           "pack over the limit");
    CHECK(b == NULL);
    CHECK(recur_proto_internal_pack(&env, 0, &b, &n, &err) == RECUR_OK && n > 100000);
    recur_internal_envelope_t *out = NULL;
    expect(recur_proto_internal_unpack(b, n, 100000, &out, &err), RECUR_E_RANGE, &err, "exceeds the limit",
           "unpack over the limit");
    CHECK(out == NULL);
    CHECK(recur_proto_internal_unpack(b, n, n, &out, &err) == RECUR_OK && out && out->step_plan->n_tokens == n_tok);
    recur_proto_internal_free(out);
    free(b);
    free(tokens);

    /* the default limit */
    size_t big = RECUR_PROTO_MAX_MSG_BYTES_DEFAULT + 1;
    uint8_t *huge = calloc(big, 1);
    recur_api_envelope_t *aout = NULL;
    expect(recur_proto_api_unpack(huge, big, 0, &aout, &err), RECUR_E_RANGE, &err, "exceeds the limit",
           "unpack over the default limit");
    free(huge);
}

/* 400k empty SamplingRow sub-messages: 800 KB on the wire, ~40 MB decoded. The decoding
 * budget (32x + 1 MiB) refuses it before the allocations happen. */
static void test_alloc_budget(void) {
    const size_t rows = 400000;
    size_t inner = rows * 2;
    size_t n = 2 + 3 + 4 + inner;
    uint8_t *b = malloc(n);
    size_t o = 0;
    b[o++] = 0x08, b[o++] = 0x02;                      /* protocol_version 2 */
    b[o++] = (uint8_t)(((102 << 3 | 2) & 0x7f) | 0x80);  /* field 102 (step_plan), length-delimited */
    b[o++] = (uint8_t)((102 << 3 | 2) >> 7);
    size_t len = inner;                                 /* varint length */
    while (len >= 0x80) {
        b[o++] = (uint8_t)(len | 0x80);
        len >>= 7;
    }
    b[o++] = (uint8_t)len;
    for (size_t i = 0; i < rows; i++) b[o++] = 6 << 3 | 2, b[o++] = 0;   /* sampling {} */
    recur_proto_error_t err;
    recur_internal_envelope_t *out = NULL;
    expect(recur_proto_internal_unpack(b, o, 0, &out, &err), RECUR_E_FORMAT, &err, "of memory to decode",
           "decoding budget");
    CHECK(out == NULL);
    free(b);
}

/* ------------------------------------------------------------------ semantic checks */

/* A valid step plan the cases below break one field at a time. */
typedef struct plan_fixture {
    int32_t slot[3], seq_len[3], tokens[7], resets[2];
    Recur__Internal__LogitsMode logits[3];
    Recur__Internal__SamplingRow row[2];
    Recur__Internal__SamplingRow *rowp[2];
    Recur__Internal__StepPlan p;
    recur_internal_envelope_t env;
} plan_fixture_t;

static void plan_init(plan_fixture_t *f) {
    memset(f, 0, sizeof(*f));
    int32_t slot[] = {5, 2, 300}, seq_len[] = {5, 1, 1}, tokens[] = {1, 2, 3, 4, 5, 6, 7}, resets[] = {5, 300};
    memcpy(f->slot, slot, sizeof(slot));
    memcpy(f->seq_len, seq_len, sizeof(seq_len));
    memcpy(f->tokens, tokens, sizeof(tokens));
    memcpy(f->resets, resets, sizeof(resets));
    f->logits[0] = RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE;
    f->logits[1] = f->logits[2] = RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE;
    for (int i = 0; i < 2; i++) {
        Recur__Internal__SamplingRow r = RECUR__INTERNAL__SAMPLING_ROW__INIT;
        r.has_temperature = r.has_top_k = r.has_top_p = r.has_min_p = r.has_seed = r.has_step = 1;
        r.temperature = 1.0f, r.top_p = 1.0f;
        f->row[i] = r;
        f->rowp[i] = &f->row[i];
    }
    Recur__Internal__StepPlan p = RECUR__INTERNAL__STEP_PLAN__INIT;
    p.has_step = 1, p.step = 3;
    p.n_slot = 3, p.slot = f->slot, p.n_seq_len = 3, p.seq_len = f->seq_len, p.n_tokens = 7, p.tokens = f->tokens;
    p.n_logits = 3, p.logits = f->logits, p.n_sampling = 2, p.sampling = f->rowp;
    p.n_reset_slots = 2, p.reset_slots = f->resets;
    f->p = p;
    recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
    env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN;
    env.step_plan = &f->p;
    f->env = env;
}

/* The broken message must be refused by pack (RECUR_E_INVAL) and, sent anyway (packed by
 * protobuf-c directly, version stamped), by unpack (RECUR_E_FORMAT), with the same message. */
static void expect_internal_refused(recur_internal_envelope_t *env, const char *needle, const char *what) {
    recur_proto_error_t err;
    uint8_t *b = NULL;
    size_t n = 0;
    expect(recur_proto_internal_pack(env, 0, &b, &n, &err), RECUR_E_INVAL, &err, needle, what);
    free(b);
    env->has_protocol_version = 1, env->protocol_version = RECUR_PROTO_INTERNAL_VERSION;
    b = raw_pack(&env->base, &n);
    recur_internal_envelope_t *out = NULL;
    expect(recur_proto_internal_unpack(b, n, 0, &out, &err), RECUR_E_FORMAT, &err, needle, what);
    CHECK(out == NULL);
    free(b);
}

/* The message is accepted by pack and, packed, by unpack. */
static void expect_ok_internal(recur_internal_envelope_t *env, const char *what) {
    recur_proto_error_t err;
    uint8_t *b = NULL;
    size_t n = 0;
    recur_internal_envelope_t *out = NULL;
    int ok = recur_proto_internal_pack(env, 0, &b, &n, &err) == RECUR_OK &&
             recur_proto_internal_unpack(b, n, 0, &out, &err) == RECUR_OK;
    if (!ok) {
        fprintf(stderr, "%s: refused: %s\n", what, err.msg);
        failures++;
    }
    recur_proto_internal_free(out);
    free(b);
}

static void expect_ok_api(recur_api_envelope_t *env, const char *what) {
    recur_proto_error_t err;
    uint8_t *b = NULL;
    size_t n = 0;
    recur_api_envelope_t *out = NULL;
    int ok = recur_proto_api_pack(env, 0, &b, &n, &err) == RECUR_OK && recur_proto_api_unpack(b, n, 0, &out, &err) == RECUR_OK;
    if (!ok) {
        fprintf(stderr, "%s: refused: %s\n", what, err.msg);
        failures++;
    }
    recur_proto_api_free(out);
    free(b);
}

static void expect_api_refused(recur_api_envelope_t *env, const char *needle, const char *what) {
    recur_proto_error_t err;
    uint8_t *b = NULL;
    size_t n = 0;
    expect(recur_proto_api_pack(env, 0, &b, &n, &err), RECUR_E_INVAL, &err, needle, what);
    free(b);
    env->has_protocol_version = 1, env->protocol_version = RECUR_PROTO_API_VERSION;
    b = raw_pack(&env->base, &n);
    recur_api_envelope_t *out = NULL;
    expect(recur_proto_api_unpack(b, n, 0, &out, &err), RECUR_E_FORMAT, &err, needle, what);
    CHECK(out == NULL);
    free(b);
}

static void test_semantics_internal(void) {
    plan_fixture_t f;
    recur_proto_error_t err;
    uint8_t *b = NULL;
    size_t n = 0;

    plan_init(&f);
    CHECK(recur_proto_internal_pack(&f.env, 0, &b, &n, &err) == RECUR_OK);
    free(b);

    plan_init(&f), f.p.n_tokens = 6;
    expect_internal_refused(&f.env, "seq_len adds up to 7 tokens but tokens has 6", "plan: token count");
    plan_init(&f), f.seq_len[0] = 4;
    expect_internal_refused(&f.env, "adds up to 6 tokens but tokens has 7", "plan: lengths");
    plan_init(&f), f.seq_len[2] = 0;
    expect_internal_refused(&f.env, "seq_len[2] = 0", "plan: empty sequence");
    plan_init(&f), f.seq_len[2] = -5;
    expect_internal_refused(&f.env, "seq_len[2] = -5", "plan: negative length");
    plan_init(&f), f.p.n_seq_len = 2;
    expect_internal_refused(&f.env, "3 slots but 2 seq_len", "plan: seq_len count");
    plan_init(&f), f.p.n_logits = 2;
    expect_internal_refused(&f.env, "and 2 logits", "plan: logits count");
    plan_init(&f), f.slot[2] = 5;
    expect_internal_refused(&f.env, "slot 5 appears more than once", "plan: duplicate slot");
    plan_init(&f), f.slot[1] = 0;
    expect_internal_refused(&f.env, "step_plan.slot[1] = 0", "plan: padding slot");
    plan_init(&f), f.tokens[3] = -2;
    expect_internal_refused(&f.env, "tokens[3] = -2", "plan: negative token");
    plan_init(&f), f.p.n_sampling = 1;
    expect_internal_refused(&f.env, "2 sequences sample but 1 sampling rows", "plan: sampling rows");
    plan_init(&f), f.logits[0] = (Recur__Internal__LogitsMode)7;
    expect_internal_refused(&f.env, "logits[0] = 7: unknown mode", "plan: logits enum");
    plan_init(&f), f.row[1].temperature = NAN;
    expect_internal_refused(&f.env, "must be finite", "plan: NaN temperature");
    plan_init(&f), f.row[0].has_seed = 0;
    expect_internal_refused(&f.env, "sampling[0]: temperature, top_k", "plan: missing seed");
    plan_init(&f), f.row[0].has_logprobs = 1, f.row[0].logprobs = 21;
    expect_internal_refused(&f.env, "logprobs = 21", "plan: logprobs");
    plan_init(&f), f.resets[1] = 5;
    expect_internal_refused(&f.env, "reset_slots: slot 5 appears more than once", "plan: duplicate reset");
    plan_init(&f), f.p.n_slot = 0, f.p.n_seq_len = 0, f.p.n_logits = 0, f.p.n_tokens = 0, f.p.n_sampling = 0;
    expect_internal_refused(&f.env, "no sequences", "plan: empty");
    plan_init(&f), f.p.has_step = 0;
    expect_internal_refused(&f.env, "step_plan.step: missing", "plan: no step");

    /* an envelope without a body */
    recur_internal_envelope_t empty = RECUR__INTERNAL__ENVELOPE__INIT;
    expect_internal_refused(&empty, "no body", "internal: empty oneof");

    /* hello: grid and model */
    {
        Recur__Internal__ModelIdentity m = RECUR__INTERNAL__MODEL_IDENTITY__INIT;
        m.arch = "xlstm", m.checkpoint_id = "x", m.has_n_vocab = m.has_n_layer = m.has_n_embd = m.has_n_head = 1;
        m.n_vocab = 50304, m.n_layer = 32, m.n_embd = 4096, m.n_head = 8;
        Recur__Internal__Hello h = RECUR__INTERNAL__HELLO__INIT;
        h.has_rank = h.has_world_size = h.has_tp = h.has_pp = h.has_tp_rank = h.has_pp_rank = 1;
        h.rank = 2, h.world_size = 4, h.tp = 2, h.pp = 2, h.tp_rank = 0, h.pp_rank = 1;
        h.host = "h", h.backend = "cpu", h.model = &m, h.has_n_slots = 1, h.n_slots = 8;
        h.has_state_bytes_per_slot = 1, h.state_bytes_per_slot = 1;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_HELLO;
        env.hello = &h;
        CHECK(recur_proto_internal_pack(&env, 0, &b, &n, &err) == RECUR_OK);
        free(b);
        h.world_size = 3;
        expect_internal_refused(&env, "tp 2 x pp 2 does not make world_size 3", "hello: grid");
        h.world_size = 4, h.rank = 1;
        expect_internal_refused(&env, "rank 1 is not pp_rank 1 * tp 2 + tp_rank 0", "hello: rank");
        h.rank = 2, h.n_slots = 1;
        expect_internal_refused(&env, "n_slots", "hello: slots");
        h.n_slots = 8, h.host = "bad\xff";
        expect_internal_refused(&env, "hello.host: not valid UTF-8", "hello: host UTF-8");
        h.host = "h", h.model = NULL;
        expect_internal_refused(&env, "hello.model: missing", "hello: model");
    }
    /* step result counts */
    {
        int32_t tok[] = {1, 2};
        float lp[] = {-1.0f};
        Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
        st.has_code = 1;
        Recur__Internal__StepResult r = RECUR__INTERNAL__STEP_RESULT__INIT;
        r.has_step = r.has_rank = 1, r.n_token = 2, r.token = tok, r.n_logprob = 1, r.logprob = lp, r.status = &st;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_STEP_RESULT;
        env.step_result = &r;
        expect_internal_refused(&env, "1 logprobs for 2 tokens", "result: logprobs");
        r.n_logprob = 0, r.has_top_n = 1, r.top_n = 2;
        expect_internal_refused(&env, "expected 2 tokens x top_n 2", "result: top");
        r.has_top_n = 0, r.status = NULL;
        expect_internal_refused(&env, "step_result.status: missing", "result: status");
        r.status = &st, st.code = RECUR_E_CUDA;
        expect_internal_refused(&env, "step_result.status.message: missing", "result: error without message");
    }
    /* slot ops */
    {
        Recur__Internal__SlotOp o = RECUR__INTERNAL__SLOT_OP__INIT;
        o.has_op_id = o.has_kind = o.has_slot = 1, o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY;
        o.slot = 3;
        recur_internal_envelope_t env = RECUR__INTERNAL__ENVELOPE__INIT;
        env.body_case = RECUR__INTERNAL__ENVELOPE__BODY_SLOT_OP;
        env.slot_op = &o;
        expect_internal_refused(&env, "a copy needs exactly one of src_slot and src_key", "slot op: copy without source");
        o.has_src_slot = 1, o.src_slot = 3;
        expect_internal_refused(&env, "source and destination are the same", "slot op: copy onto itself");
        o.has_src_key = 1, o.src_key = 4;
        expect_internal_refused(&env, "exactly one of src_slot and src_key", "slot op: copy with two sources");
        o.has_src_slot = 0, o.has_key = 1, o.key = 9;
        expect_internal_refused(&env, "exactly one of slot and key", "slot op: copy to slot and key");
        o.has_slot = 0;
        expect_ok_internal(&env, "slot op: key -> key copy");
        o.key = 4;
        expect_internal_refused(&env, "source and destination are the same", "slot op: key onto itself");
        o.has_src_key = 0, o.has_key = 0, o.has_slot = 1;
        o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_SAVE;
        expect_internal_refused(&env, "slot_op.meta: a save needs it", "slot op: save without meta");
        Recur__Internal__CheckpointMeta meta = RECUR__INTERNAL__CHECKPOINT_META__INIT;
        o.meta = &meta;
        expect_internal_refused(&env, "slot_op.generation: a save needs it", "slot op: save without generation");
        o.has_generation = 1, o.generation = 1;
        expect_internal_refused(&env, "slot_op.path: missing", "slot op: save without path");
        int32_t bad_pend[] = {-2};
        meta.n_pending = 1, meta.pending = bad_pend, o.path = "/x";
        expect_internal_refused(&env, "slot_op.meta.pending[0] = -2", "slot op: save with a bad pending token");
        meta.n_pending = 0;
        expect_ok_internal(&env, "slot op: save");
        o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_LOAD;
        expect_internal_refused(&env, "not a save", "slot op: load with meta");
        o.meta = NULL, o.has_generation = 0;
        expect_ok_internal(&env, "slot op: load");
        o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DROP;
        expect_internal_refused(&env, "a drop needs key", "slot op: drop of a slot");
        o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_DELETE;
        expect_internal_refused(&env, "a delete takes only a path", "slot op: delete with a slot");
        o.has_slot = 0;
        expect_ok_internal(&env, "slot op: delete");
        o.has_slot = 1, o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET;
        expect_internal_refused(&env, "set on an operation without a file", "slot op: reset with path");
        o.path = NULL, o.has_history_only = 1, o.history_only = 1;
        expect_ok_internal(&env, "slot op: history-only reset");
        o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_COPY, o.has_src_slot = 1, o.src_slot = 5;
        expect_internal_refused(&env, "history_only: set on an operation that is not a reset", "slot op: copy history");
        o.kind = RECUR__INTERNAL__SLOT_OP_KIND__SLOT_OP_KIND_RESET, o.has_src_slot = 0, o.has_history_only = 0;
        o.has_key = 1, o.key = 0;
        expect_internal_refused(&env, "slot_op.key: must be >= 1", "slot op: key 0");
        o.has_key = 0, o.kind = (Recur__Internal__SlotOpKind)9;
        expect_internal_refused(&env, "slot_op.kind: missing or unknown (9)", "slot op: kind");
    }
}

static void test_semantics_api(void) {
    Recur__Api__SamplingParams sp = RECUR__API__SAMPLING_PARAMS__INIT;
    Recur__Api__GenerateRequest g = RECUR__API__GENERATE_REQUEST__INIT;
    g.request_id = "r";
    g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT, g.text = "hi";
    g.sampling = &sp;
    recur_api_envelope_t env = RECUR__API__ENVELOPE__INIT;
    env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE;
    env.generate = &g;
    recur_proto_error_t err;
    uint8_t *b = NULL;
    size_t n = 0;
    CHECK(recur_proto_api_pack(&env, 0, &b, &n, &err) == RECUR_OK);
    free(b);

    g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT__NOT_SET;
    expect_api_refused(&env, "generate: no prompt", "generate: empty oneof");
    g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TEXT, g.text = "";
    expect_api_refused(&env, "generate.text: missing", "generate: empty text");
    g.text = "caf\xc3";   /* cut inside a character */
    expect_api_refused(&env, "generate.text: not valid UTF-8 at byte 3", "generate: UTF-8");
    g.text = "\xed\xa0\x80";   /* a surrogate */
    expect_api_refused(&env, "not valid UTF-8", "generate: surrogate");
    g.text = "hi", g.request_id = NULL;
    expect_api_refused(&env, "generate.request_id: missing", "generate: no id");
    char long_id[200];
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    g.request_id = long_id;
    expect_api_refused(&env, "199 bytes, more than the limit of 128", "generate: long id");
    g.request_id = "r";
    sp.has_temperature = 1, sp.temperature = -0.5f;
    expect_api_refused(&env, "temperature = -0.5", "generate: temperature");
    sp.temperature = NAN;
    expect_api_refused(&env, "temperature = nan", "generate: NaN temperature");
    sp.has_temperature = 0, sp.has_top_p = 1, sp.top_p = 0.0f;
    expect_api_refused(&env, "top_p = 0: must be a finite number in (0, 1]", "generate: top_p 0");
    sp.top_p = 1.5f;
    expect_api_refused(&env, "top_p = 1.5", "generate: top_p 1.5");
    sp.has_top_p = 0, sp.has_top_k = 1, sp.top_k = -1;
    expect_api_refused(&env, "top_k = -1", "generate: top_k");
    sp.has_top_k = 0, sp.has_max_tokens = 1, sp.max_tokens = 0;
    expect_api_refused(&env, "max_tokens = 0", "generate: max_tokens");
    sp.has_max_tokens = 0, sp.has_logprobs = 1, sp.logprobs = 21;
    expect_api_refused(&env, "logprobs = 21", "generate: logprobs");
    sp.has_logprobs = 0, sp.has_presence_penalty = 1, sp.presence_penalty = 3.0f;
    expect_api_refused(&env, "presence_penalty = 3", "generate: presence");
    sp.has_presence_penalty = 0;
    char *stops[17];
    for (int i = 0; i < 17; i++) stops[i] = "x";
    sp.n_stop = 17, sp.stop = stops;
    expect_api_refused(&env, "17 strings, more than the limit of 16", "generate: stops");
    sp.n_stop = 1, stops[0] = "";
    expect_api_refused(&env, "stop[0]: missing", "generate: empty stop");
    sp.n_stop = 0;
    int32_t ids[] = {5, -1};
    Recur__Api__TokenIds t = RECUR__API__TOKEN_IDS__INIT;
    t.n_ids = 2, t.ids = ids;
    g.prompt_case = RECUR__API__GENERATE_REQUEST__PROMPT_TOKEN_IDS, g.token_ids = &t;
    expect_api_refused(&env, "token_ids[1] = -1", "generate: negative id");
    t.n_ids = 0;
    expect_api_refused(&env, "generate.token_ids: empty prompt", "generate: no ids");

    /* responses */
    Recur__Api__GenerateFinal f = RECUR__API__GENERATE_FINAL__INIT;
    Recur__Api__GenerateResponse r = RECUR__API__GENERATE_RESPONSE__INIT;
    r.request_id = "r", r.final = &f;
    env.body_case = RECUR__API__ENVELOPE__BODY_GENERATE_RESPONSE;
    env.generate_response = &r;
    expect_api_refused(&env, "finish_reason: missing", "response: no finish reason");
    f.has_finish_reason = 1, f.finish_reason = RECUR__API__FINISH_REASON__FINISH_REASON_ERROR;
    expect_api_refused(&env, "final.error: missing", "response: error without error");
    Recur__Api__Error e = RECUR__API__ERROR__INIT;
    f.finish_reason = RECUR__API__FINISH_REASON__FINISH_REASON_STOP, f.error = &e;
    expect_api_refused(&env, "finish_reason is not ERROR", "response: error on stop");
    f.finish_reason = (Recur__Api__FinishReason)12, f.error = NULL;
    expect_api_refused(&env, "unknown (12)", "response: finish enum");

    recur_api_envelope_t empty = RECUR__API__ENVELOPE__INIT;
    expect_api_refused(&empty, "no body", "api: empty oneof");

    /* sessions: which op needs which field */
    {
        Recur__Api__SessionRequest q = RECUR__API__SESSION_REQUEST__INIT;
        recur_api_envelope_t se = RECUR__API__ENVELOPE__INIT;
        se.body_case = RECUR__API__ENVELOPE__BODY_SESSION, se.session = &q;
        expect_api_refused(&se, "session.op: missing", "session: no op");
        q.has_op = 1, q.op = (Recur__Api__SessionOp)8;
        expect_api_refused(&se, "session.op: missing or unknown (8)", "session: op 8");
        q.op = RECUR__API__SESSION_OP__SESSION_OP_GET;
        expect_api_refused(&se, "session.session_id: missing", "session: GET without id");
        q.op = RECUR__API__SESSION_OP__SESSION_OP_CREATE;
        expect_ok_api(&se, "session: CREATE without id");
        q.model = "default:tuned";
        expect_ok_api(&se, "session: CREATE with a variant");
        q.op = RECUR__API__SESSION_OP__SESSION_OP_FORK, q.session_id = "a";
        expect_api_refused(&se, "session.model: set on an op other than CREATE", "session: FORK with model");
        q.model = NULL, q.new_session_id = "b";
        expect_ok_api(&se, "session: FORK");
        q.op = RECUR__API__SESSION_OP__SESSION_OP_DELETE;
        expect_api_refused(&se, "new_session_id: set on an op other than FORK", "session: DELETE with new id");
        q.new_session_id = NULL, q.op = RECUR__API__SESSION_OP__SESSION_OP_LIST;
        expect_api_refused(&se, "session.session_id: set on a LIST", "session: LIST with id");
        q.session_id = NULL;
        expect_ok_api(&se, "session: LIST");
        q.op = RECUR__API__SESSION_OP__SESSION_OP_IMPORT;
        expect_api_refused(&se, "session.chunk: an IMPORT needs it", "session: IMPORT without chunk");
        Recur__Api__StateChunk ch = RECUR__API__STATE_CHUNK__INIT;
        uint8_t d[4] = {0};
        ch.has_offset = ch.has_total = ch.has_data = 1, ch.offset = 2, ch.total = 5, ch.data.len = 4, ch.data.data = d;
        q.chunk = &ch;
        expect_api_refused(&se, "bytes [2, 6) do not fit in a total of 5", "session: chunk past the total");
        ch.offset = 1;
        expect_ok_api(&se, "session: IMPORT chunk");
        q.op = RECUR__API__SESSION_OP__SESSION_OP_EXPORT, q.session_id = "a";
        expect_api_refused(&se, "session.chunk: set on an op other than IMPORT", "session: EXPORT with chunk");
        Recur__Api__SessionInfo in = RECUR__API__SESSION_INFO__INIT;
        Recur__Api__SessionResponse sr = RECUR__API__SESSION_RESPONSE__INIT;
        sr.info = &in;
        se.body_case = RECUR__API__ENVELOPE__BODY_SESSION_RESPONSE, se.session_response = &sr;
        expect_api_refused(&se, "session_response.info.session_id: missing", "session: info without id");
        in.session_id = "a", in.has_tier = 1, in.tier = (Recur__Api__SessionTier)9;
        expect_api_refused(&se, "session_response.info.tier: unknown (9)", "session: tier 9");
    }

    /* a body field from a newer peer that kept version 2: field 50, empty */
    const uint8_t newer[] = {0x08, 0x02, 0x92, 0x03, 0x00};
    recur_api_envelope_t *out = NULL;
    expect(recur_proto_api_unpack(newer, sizeof(newer), 0, &out, &err), RECUR_E_FORMAT, &err,
           "unknown body field 50", "api: unknown body");
    /* the oneof set twice: the last one wins, as in every protobuf reader */
    const uint8_t twice[] = {0x08, 0x02, 0x72, 0x00, 0x6a, 0x00};   /* health, then list_models */
    CHECK(recur_proto_api_unpack(twice, sizeof(twice), 0, &out, &err) == RECUR_OK && out &&
          out->body_case == RECUR__API__ENVELOPE__BODY_LIST_MODELS);
    recur_proto_api_free(out);
    CHECK(recur_proto_api_is_request(NULL) == 0);
}

static void test_helpers(void) {
    recur_proto_error_t err;
    Recur__Internal__Status st = RECUR__INTERNAL__STATUS__INIT;
    CHECK(recur_proto_status_code(NULL) == RECUR_E_PROTO);
    CHECK(recur_proto_status_code(&st) == RECUR_E_PROTO);   /* code not set */
    st.has_code = 1, st.code = 0;
    CHECK(recur_proto_status_code(&st) == RECUR_OK);
    st.code = RECUR_E_TIMEOUT;
    CHECK(recur_proto_status_code(&st) == RECUR_E_TIMEOUT);
    st.code = -12345;
    CHECK(recur_proto_status_code(&st) == RECUR_E_PROTO);

    int32_t tok[] = {-1, 17};
    Recur__Internal__LogitsMode lm[] = {RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_NONE,
                                        RECUR__INTERNAL__LOGITS_MODE__LOGITS_MODE_SAMPLE};
    st.code = 0;
    Recur__Internal__StepResult r = RECUR__INTERNAL__STEP_RESULT__INIT;
    r.has_step = 1, r.step = 9, r.n_token = 2, r.token = tok, r.status = &st;
    CHECK(recur_proto_step_result_matches(&r, 9, 2, lm, &err) == RECUR_OK);
    expect(recur_proto_step_result_matches(&r, 10, 2, lm, &err), RECUR_E_PROTO, &err, "expected step 10",
           "matches: step");
    expect(recur_proto_step_result_matches(&r, 9, 3, lm, &err), RECUR_E_PROTO, &err, "the plan had 3 sequences",
           "matches: count");
    tok[0] = 5;
    expect(recur_proto_step_result_matches(&r, 9, 2, lm, &err), RECUR_E_PROTO, &err, "was not sampled",
           "matches: unsampled row");
    st.code = RECUR_E_CUDA;   /* a failed step answers the plan whatever its arrays */
    CHECK(recur_proto_step_result_matches(&r, 9, 5, lm, &err) == RECUR_OK);

    CHECK(strcmp(recur_proto_api_body_name(RECUR__API__ENVELOPE__BODY_HEALTH_RESPONSE), "health_response") == 0);
    CHECK(strcmp(recur_proto_internal_body_name(RECUR__INTERNAL__ENVELOPE__BODY_STEP_PLAN), "step_plan") == 0);
    CHECK(RECUR_PROTO_API_VERSION == 2 && RECUR_PROTO_INTERNAL_VERSION == 2);

    /* err NULL: the message is logged instead, and nothing crashes */
    recur_api_envelope_t *out = NULL;
    CHECK(recur_proto_api_unpack((const uint8_t *)"\x08", 1, 0, &out, NULL) == RECUR_E_FORMAT);
    CHECK(recur_proto_api_unpack(NULL, 0, 0, &out, &err) == RECUR_E_PROTO);
}

/* A key written in two bytes ("80 00") that decodes to field number 0, inside a
 * sub-message: protobuf-c keeps it as an unknown field and packs it back as "00", which it
 * then refuses itself. Found by fuzz_proto_internal / fuzz_proto_api (the two inputs below);
 * refused since, naming the problem. */
static void test_nested_field_zero(void) {
    static const uint8_t internal_msg[] = {0x08, 0x02, 0xaa, 0x06, 0x0d, 0x08, 0xef, 0x9b, 0x01, 0x80,
                                           0x00, 0xff, 0xd1, 0x91, 0x01, 0x10, 0xf4, 0x03};
    /* a Heartbeat (field 101) {seq, <field 0 varint>, rank}; the same without field 0 decodes */
    static const uint8_t internal_ok[] = {0x08, 0x02, 0xaa, 0x06, 0x07, 0x08, 0xef, 0x9b, 0x01, 0x10, 0xf4, 0x03};
    recur_proto_error_t err;
    CHECK(decode(1, internal_ok, sizeof internal_ok, 0, 0, &err, 0, -1) == RECUR_OK);
    recur_status_t s = decode(1, internal_msg, sizeof internal_msg, 0, 0, &err, 0, -1);
    CHECK(s == RECUR_E_FORMAT && strstr(err.msg, "field number 0"));
    fprintf(stderr, "field 0 in a sub-message: %s \"%s\"\n", recur_status_str(s), err.msg);
    /* the API: a Generate (field 30) with a fixed32 field 0 ("85 00" + 4 bytes) among its own
     * fields; without those 6 bytes (and the length 0x41 -> 0x3b) it decodes */
    uint8_t api_msg[] = {0x08, 0x02, 0xf2, 0x01, 0x41, 0x0a, 0x06, 0x72, 0x65, 0x71, 0x2d, 0x34, 0x32, 0x12,
                         0x22, 0x08, 0x0b, 0x12, 0x01, 0x61, 0x1d, 0x00, 0x00, 0x00, 0xbf, 0x22, 0x0a, 0x08,
                         0x0b, 0x12, 0x01, 0x00, 0x1d, 0x00, 0x00, 0x61, 0xbf, 0x22, 0x02, 0x08, 0x0c, 0x12,
                         0x01, 0x62, 0x1d, 0x00, 0x00, 0xc0, 0xbf, 0x12, 0x06, 0x08, 0xe4, 0x88, 0x03, 0x12,
                         0x00, 0x85, 0x00, 0x00, 0x00, 0x00, 0x01, 0x30, 0xfd, 0xff, 0xff, 0xff, 0xff, 0x03};
    s = decode(0, api_msg, sizeof api_msg, 0, 0, &err, 0, -1);
    CHECK(s == RECUR_E_FORMAT && strstr(err.msg, "field number 0"));
    memmove(api_msg + 57, api_msg + 63, sizeof api_msg - 63);
    api_msg[4] = 0x3b;
    CHECK(decode(0, api_msg, sizeof api_msg - 6, 0, 0, &err, 0, -1) == RECUR_OK);
}

/* `test_proto --write-corpus DIR`: the valid encodings above as fuzzing seeds,
 * DIR/proto_api/<body>-<i> and DIR/proto_internal/<body>-<i> (tests/fuzz/corpus). */
static int write_corpus(const char *dir) {
    for (int i = 0; i < n_corpus; i++) {
        const enc_t *e = &corpus[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/%s-%02d", dir, e->internal ? "proto_internal" : "proto_api",
                 e->internal ? recur_proto_internal_body_name((Recur__Internal__Envelope__BodyCase)e->body)
                             : recur_proto_api_body_name((Recur__Api__Envelope__BodyCase)e->body), i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(e->buf, 1, e->n, f) != e->n || fclose(f) != 0) {
            fprintf(stderr, "test_proto: cannot write %s\n", path);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    build_api_corpus();
    build_internal_corpus();
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return failures ? 1 : write_corpus(argv[2]);
    test_roundtrip();
    test_versions();
    test_truncation();
    test_garbage();
    test_mutations();
    test_size_limits();
    test_alloc_budget();
    test_semantics_internal();
    test_semantics_api();
    test_helpers();
    test_nested_field_zero();
    for (int i = 0; i < n_corpus; i++) free(corpus[i].buf);
    if (failures) fprintf(stderr, "test_proto: %d failure(s)\n", failures);
    else fprintf(stderr, "test_proto: ok\n");
    return failures ? 1 : 0;
}
