/* test_sched.c: the coordinator's scheduler (coordinator/recur_sched.h), driven by hand and
 * by a randomized simulation with a fake model, time given explicitly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_sched.h"
#include "recur_testutil.h"

static int failures;
#define CHECK(c) RECUR_CHECK(&failures, c)

static recur_sched_config_t cfg_small(int32_t n_slots, int32_t max_batch, int32_t budget) {
    recur_sched_config_t c = recur_sched_default_config();
    c.n_slots = n_slots;
    c.max_batch = max_batch;
    c.token_budget = budget;
    c.max_queue = 64;
    c.queue_timeout_ms = 0;
    c.prefill_chunk_max = 0;
    return c;
}

static recur_sched_request_t req(const int32_t *prompt, int32_t n, int32_t max_tokens) {
    recur_sched_request_t r;
    memset(&r, 0, sizeof r);
    r.prompt = prompt;
    r.n_prompt = n;
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0.0f;
    r.sampling.top_p = 1.0f;
    return r;
}

/* Completes the plan in flight with token `tok` for every sampled sequence. */
static void complete_all(recur_sched_t *s, const recur_sched_plan_t *p, int32_t tok, uint64_t now) {
    int32_t t[1024];
    for (int32_t i = 0; i < p->n_sample; i++) t[i] = tok;
    recur_sched_result_t res = { .step = p->step, .status = RECUR_OK, .n_token = p->n_sample, .token = t };
    CHECK(recur_sched_complete(s, &res, now) == RECUR_OK);
}

static int resets_slot(const recur_sched_plan_t *p, int32_t slot) {
    for (int32_t i = 0; i < p->n_reset; i++)
        if (p->reset_slots[i] == slot) return 1;
    return 0;
}

/* Drains events; counts FINISHED per reason and remembers the last FINISHED. */
typedef struct ev_tally {
    int n_token, n_finished, n_error;
    int reason[RECUR_SCHED_N_REASONS];
    recur_sched_event_t last_fin, last_err;
} ev_tally_t;
static ev_tally_t drain(recur_sched_t *s) {
    ev_tally_t t;
    memset(&t, 0, sizeof t);
    recur_sched_event_t e;
    while (recur_sched_next_event(s, &e)) {
        if (e.type == RECUR_SCHED_EV_TOKEN) t.n_token++;
        if (e.type == RECUR_SCHED_EV_ERROR) { t.n_error++; t.last_err = e; }
        if (e.type == RECUR_SCHED_EV_FINISHED) { t.n_finished++; t.reason[e.reason]++; t.last_fin = e; }
    }
    return t;
}

/* ---------------------------------------------------------------- FCFS and priority */
static void test_order(void) {
    recur_sched_config_t c = cfg_small(2, 4, 16);   /* one usable slot: admission is serial */
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t p[1] = { 5 };
    int32_t prio[6] = { 0, 0, 5, 5, -1, 5 };
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) {
        recur_sched_request_t r = req(p, 1, 1);
        r.priority = prio[i];
        CHECK(recur_sched_submit(s, &r, 0, &ids[i]) == RECUR_OK);
    }
    uint64_t want[6] = { ids[2], ids[3], ids[5], ids[0], ids[1], ids[4] };   /* priority, then FCFS */
    for (int i = 0; i < 6; i++) {
        recur_sched_plan_t pl;
        CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
        CHECK(pl.n_seq == 1);
        if (pl.n_seq != 1) break;
        CHECK(pl.id[0] == want[i]);
        CHECK(pl.slot[0] == 1 && pl.n_reset == 1 && pl.reset_slots[0] == 1);
        complete_all(s, &pl, 9, 1);
    }
    ev_tally_t t = drain(s);
    CHECK(t.n_finished == 6 && t.reason[RECUR_SCHED_LENGTH] == 6);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- slot exhaustion */
static void test_slots(void) {
    recur_sched_config_t c = cfg_small(3, 8, 64);   /* two usable slots */
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t p[3] = { 1, 2, 3 };
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) {
        recur_sched_request_t r = req(p, 3, 2);
        CHECK(recur_sched_submit(s, &r, 0, &ids[i]) == RECUR_OK);
    }
    recur_sched_plan_t pl;
    CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
    CHECK(pl.n_seq == 2 && pl.id[0] == ids[0] && pl.id[1] == ids[1]);
    recur_sched_stats_t st;
    recur_sched_get_stats(s, &st);
    CHECK(st.running == 2 && st.waiting == 2 && st.slots_used == 2 && st.slots_total == 2);
    complete_all(s, &pl, 4, 1);                     /* first tokens */
    CHECK(recur_sched_plan(s, 1, &pl) == RECUR_OK); /* still full: only the two decode */
    CHECK(pl.n_seq == 2 && pl.n_decode == 2 && pl.n_reset == 0);
    complete_all(s, &pl, 4, 2);                     /* max_tokens 2: both finish */
    recur_sched_get_stats(s, &st);
    CHECK(st.running == 0 && st.waiting == 2 && st.slots_used == 0);
    CHECK(recur_sched_plan(s, 2, &pl) == RECUR_OK);
    CHECK(pl.n_seq == 2 && pl.id[0] == ids[2] && pl.id[1] == ids[3] && pl.n_reset == 2);
    CHECK(resets_slot(&pl, 1) && resets_slot(&pl, 2));
    complete_all(s, &pl, 4, 3);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- chunked prefill */
static void test_chunked_prefill(void) {
    recur_sched_config_t c = cfg_small(5, 8, 7);
    c.prefill_chunk_max = 5;
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    enum { N = 3 };
    int32_t lens[N] = { 13, 4, 9 };
    int32_t prompts[N][16], got[N][16], n_got[N] = { 0 }, sampled_at[N];
    uint64_t ids[N];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < lens[i]; j++) prompts[i][j] = 100 * (i + 1) + j;
        recur_sched_request_t r = req(prompts[i], lens[i], 1);
        CHECK(recur_sched_submit(s, &r, 0, &ids[i]) == RECUR_OK);
        sampled_at[i] = -1;
    }
    int steps = 0;
    for (;;) {
        recur_sched_plan_t pl;
        CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
        if (!pl.n_seq) break;
        CHECK(pl.n_tokens <= 7);
        int32_t off = 0, sum = 0;
        for (int32_t q = 0; q < pl.n_seq; q++) {
            int i = (int)(pl.id[q] - ids[0]);
            CHECK(pl.seq_len[q] <= 5);
            for (int32_t j = 0; j < pl.seq_len[q] && n_got[i] < 16; j++) got[i][n_got[i]++] = pl.tokens[off + j];
            if (pl.sample[q]) {
                CHECK(n_got[i] == lens[i]);   /* samples exactly at the prompt's last chunk */
                sampled_at[i] = steps;
            }
            off += pl.seq_len[q];
            sum += pl.seq_len[q];
        }
        CHECK(sum == pl.n_tokens && off == pl.n_tokens);
        complete_all(s, &pl, 1, 0);
        if (++steps > 20) break;
    }
    for (int i = 0; i < N; i++) {
        CHECK(n_got[i] == lens[i]);
        CHECK(memcmp(got[i], prompts[i], (size_t)lens[i] * sizeof(int32_t)) == 0);
        CHECK(sampled_at[i] >= 0);
    }
    CHECK(steps == 4);   /* 26 tokens at 7 per step */
    ev_tally_t t = drain(s);
    CHECK(t.n_token == 3 && t.reason[RECUR_SCHED_LENGTH] == 3);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- decode first */
static void test_decode_first(void) {
    recur_sched_config_t c = cfg_small(9, 4, 4);
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t short_p[1] = { 3 }, long_p[100];
    for (int i = 0; i < 100; i++) long_p[i] = i;
    uint64_t a[3], big;
    for (int i = 0; i < 3; i++) {
        recur_sched_request_t r = req(short_p, 1, 1000);
        CHECK(recur_sched_submit(s, &r, 0, &a[i]) == RECUR_OK);
    }
    recur_sched_plan_t pl;
    CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
    CHECK(pl.n_seq == 3 && pl.n_decode == 0 && pl.n_sample == 3);
    complete_all(s, &pl, 7, 0);
    recur_sched_request_t rb = req(long_p, 100, 5);
    CHECK(recur_sched_submit(s, &rb, 0, &big) == RECUR_OK);
    for (int k = 0; k < 10; k++) {
        CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
        CHECK(pl.n_seq == 4 && pl.n_decode == 3 && pl.n_tokens == 4);
        for (int i = 0; i < 3; i++) CHECK(pl.seq_len[i] == 1 && pl.sample[i] && pl.tokens[i] == 7);
        CHECK(pl.id[3] == big && pl.seq_len[3] == 1 && !pl.sample[3]);
        for (int i = 0; i < pl.n_sample; i++) CHECK(pl.sampling[i].step == (uint64_t)(k + 1));
        complete_all(s, &pl, 7, 0);
    }
    recur_sched_free(s);

    /* admission stops at max_batch running (here 2 of 8 slots), so the admitted never starve */
    c = cfg_small(9, 2, 8);
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    for (int i = 0; i < 3; i++) {
        recur_sched_request_t r = req(short_p, 1, 1000);
        CHECK(recur_sched_submit(s, &r, 0, &a[i]) == RECUR_OK);
    }
    recur_sched_stats_t st;
    for (int k = 0; k < 30; k++) {
        CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
        CHECK(pl.n_seq == 2 && pl.id[0] == a[0] && pl.id[1] == a[1]);
        recur_sched_get_stats(s, &st);
        CHECK(st.running == 2 && st.waiting == 1 && st.slots_used == 2);
        complete_all(s, &pl, 7, 0);
    }
    CHECK(recur_sched_cancel(s, a[0]) == RECUR_OK);
    CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
    CHECK(pl.n_seq == 2 && pl.id[0] == a[1] && pl.id[1] == a[2] && pl.n_reset == 1);
    complete_all(s, &pl, 7, 0);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- stops */
static void test_stops(void) {
    recur_sched_config_t c = cfg_small(8, 8, 64);
    c.eos_id = 0;
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t p[4] = { 1, 2, 3, 4 }, stop7[2] = { 9, 7 };
    uint64_t len_id, stop_id, ign_id, eos_id;
    recur_sched_request_t r = req(p, 4, 3);
    CHECK(recur_sched_submit(s, &r, 0, &len_id) == RECUR_OK);
    r = req(p, 2, 100);
    r.stop_ids = stop7;
    r.n_stop = 2;
    CHECK(recur_sched_submit(s, &r, 0, &stop_id) == RECUR_OK);
    r = req(p, 3, 4);
    r.ignore_eos = 1;
    CHECK(recur_sched_submit(s, &r, 0, &ign_id) == RECUR_OK);
    r = req(p, 1, 50);
    CHECK(recur_sched_submit(s, &r, 0, &eos_id) == RECUR_OK);
    /* fake model: the stop request gets 5 then 7; eos and ignore_eos get 0; length gets 5 */
    int done[4] = { 0 };
    for (int step = 0; step < 10; step++) {
        recur_sched_plan_t pl;
        CHECK(recur_sched_plan(s, (uint64_t)step, &pl) == RECUR_OK);
        if (!pl.n_seq) break;
        int32_t tok[16];
        for (int32_t i = 0, k = 0; i < pl.n_seq; i++) {
            if (!pl.sample[i]) continue;
            uint64_t id = pl.id[i];
            tok[k] = id == len_id ? 5 : id == stop_id ? (pl.sampling[k].step == 0 ? 5 : 7) : 0;
            k++;
        }
        recur_sched_result_t res = { .step = pl.step, .status = RECUR_OK, .n_token = pl.n_sample, .token = tok };
        CHECK(recur_sched_complete(s, &res, (uint64_t)step + 10) == RECUR_OK);
        recur_sched_event_t e;
        while (recur_sched_next_event(s, &e)) {
            if (e.type == RECUR_SCHED_EV_TOKEN && e.index == 0) CHECK(e.ttft_ms == (uint64_t)step + 10);
            if (e.type != RECUR_SCHED_EV_FINISHED) continue;
            if (e.id == len_id) { done[0]++; CHECK(e.reason == RECUR_SCHED_LENGTH && e.completion_tokens == 3 && e.prompt_tokens == 4); }
            if (e.id == stop_id) { done[1]++; CHECK(e.reason == RECUR_SCHED_STOP && e.completion_tokens == 2 && e.prompt_tokens == 2); }
            if (e.id == ign_id) { done[2]++; CHECK(e.reason == RECUR_SCHED_LENGTH && e.completion_tokens == 4); }
            if (e.id == eos_id) { done[3]++; CHECK(e.reason == RECUR_SCHED_STOP && e.completion_tokens == 1); }
        }
    }
    for (int i = 0; i < 4; i++) CHECK(done[i] == 1);
    /* a stop string found by the caller */
    uint64_t id;
    r = req(p, 1, 50);
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_OK);
    recur_sched_plan_t pl;
    CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
    complete_all(s, &pl, 5, 0);
    CHECK(recur_sched_finish(s, id, RECUR_SCHED_STOP) == RECUR_OK);
    ev_tally_t t = drain(s);
    CHECK(t.n_finished == 1 && t.reason[RECUR_SCHED_STOP] == 1 && t.last_fin.completion_tokens == 1);
    CHECK(recur_sched_finish(s, id, RECUR_SCHED_STOP) == RECUR_E_INVAL);   /* once only */
    CHECK(recur_sched_finish(s, 12345, RECUR_SCHED_ERROR) == RECUR_E_INVAL);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- cancellation */
static void test_cancel(void) {
    recur_sched_config_t c = cfg_small(2, 8, 64);
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t p[2] = { 1, 2 };
    uint64_t a, b, w;
    recur_sched_request_t r = req(p, 2, 100);
    CHECK(recur_sched_submit(s, &r, 0, &a) == RECUR_OK);
    recur_sched_plan_t pl;
    CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
    complete_all(s, &pl, 3, 0);
    CHECK(recur_sched_submit(s, &r, 0, &b) == RECUR_OK);   /* waits: the only slot is a's */
    CHECK(recur_sched_submit(s, &r, 0, &w) == RECUR_OK);
    CHECK(recur_sched_cancel(s, w) == RECUR_OK);            /* a waiting request */
    CHECK(recur_sched_plan(s, 1, &pl) == RECUR_OK);
    CHECK(pl.n_seq == 1 && pl.id[0] == a);
    CHECK(recur_sched_cancel(s, a) == RECUR_OK);            /* while its step is in flight */
    recur_sched_stats_t st;
    recur_sched_get_stats(s, &st);
    CHECK(st.slots_used == 0 && st.running == 0 && st.waiting == 1);   /* freed at once */
    complete_all(s, &pl, 3, 1);                              /* a's token is dropped */
    ev_tally_t t = drain(s);
    CHECK(t.n_token == 1 && t.n_finished == 2 && t.reason[RECUR_SCHED_CANCELLED] == 2);
    CHECK(recur_sched_plan(s, 2, &pl) == RECUR_OK);
    CHECK(pl.n_seq == 1 && pl.id[0] == b && pl.slot[0] == 1 && pl.n_reset == 1 && pl.reset_slots[0] == 1);
    complete_all(s, &pl, 3, 2);
    CHECK(recur_sched_cancel(s, a) == RECUR_E_INVAL);
    CHECK(strstr(recur_sched_error(s), "no request") != NULL);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- queue limits */
static void test_queue_limits(void) {
    recur_sched_config_t c = cfg_small(2, 8, 64);
    c.max_queue = 2;
    c.queue_timeout_ms = 100;
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t p[1] = { 1 };
    uint64_t a, b, d;
    recur_sched_request_t r = req(p, 1, 1000);
    CHECK(recur_sched_submit(s, &r, 0, &a) == RECUR_OK);
    CHECK(recur_sched_submit(s, &r, 10, &b) == RECUR_OK);
    CHECK(recur_sched_submit(s, &r, 20, &d) == RECUR_E_BUSY);
    CHECK(strcmp(recur_sched_error(s), "queue full (2 waiting)") == 0);
    CHECK(recur_sched_next_deadline_ms(s) == 100);
    recur_sched_plan_t pl;
    CHECK(recur_sched_plan(s, 50, &pl) == RECUR_OK);   /* a runs, b waits */
    complete_all(s, &pl, 2, 50);
    CHECK(recur_sched_next_deadline_ms(s) == 110);
    CHECK(recur_sched_plan(s, 109, &pl) == RECUR_OK);
    complete_all(s, &pl, 2, 109);
    ev_tally_t t = drain(s);
    CHECK(t.n_finished == 0);
    CHECK(recur_sched_plan(s, 110, &pl) == RECUR_OK);   /* b times out */
    complete_all(s, &pl, 2, 110);
    t = drain(s);
    CHECK(t.n_error == 1 && t.n_finished == 1 && t.reason[RECUR_SCHED_TIMEOUT] == 1 && t.last_fin.id == b);
    CHECK(strstr(t.last_err.message, "queue_timeout_ms 100") != NULL);
    CHECK(t.last_fin.completion_tokens == 0 && t.last_fin.prompt_tokens == 1);
    CHECK(recur_sched_next_deadline_ms(s) == UINT64_MAX);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- a failed step */
static void test_failed_step(void) {
    recur_sched_config_t c = cfg_small(3, 8, 64);
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t p[3] = { 1, 2, 3 };
    uint64_t ids[3];
    for (int i = 0; i < 3; i++) {
        recur_sched_request_t r = req(p, 3, 10);
        CHECK(recur_sched_submit(s, &r, 0, &ids[i]) == RECUR_OK);
    }
    recur_sched_plan_t pl;
    CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);
    CHECK(pl.n_seq == 2);
    /* a result that does not match: refused, nothing changed */
    recur_sched_result_t bad = { .step = pl.step + 1, .status = RECUR_OK };
    CHECK(recur_sched_complete(s, &bad, 0) == RECUR_E_PROTO);
    int32_t neg[2] = { -1, 3 };
    bad.step = pl.step;
    bad.n_token = 2;
    bad.token = neg;
    CHECK(recur_sched_complete(s, &bad, 0) == RECUR_E_PROTO);
    recur_sched_plan_t pl2;
    CHECK(recur_sched_plan(s, 0, &pl2) == RECUR_E_INVAL);   /* still in flight */
    recur_sched_result_t fail = { .step = pl.step, .status = RECUR_E_CUDA, .message = "device lost" };
    CHECK(recur_sched_complete(s, &fail, 0) == RECUR_OK);
    recur_sched_event_t e;
    int n_err = 0, n_fin = 0;
    while (recur_sched_next_event(s, &e)) {
        CHECK(e.id == ids[0] || e.id == ids[1]);
        if (e.type == RECUR_SCHED_EV_ERROR) { n_err++; CHECK(strstr(e.message, "device lost") != NULL); }
        if (e.type == RECUR_SCHED_EV_FINISHED) { n_fin++; CHECK(e.reason == RECUR_SCHED_ERROR); }
    }
    CHECK(n_err == 2 && n_fin == 2);
    CHECK(recur_sched_plan(s, 0, &pl) == RECUR_OK);   /* the third runs */
    CHECK(pl.n_seq == 1 && pl.id[0] == ids[2] && pl.n_reset == 1);
    complete_all(s, &pl, 1, 0);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- bad input */
static void test_bad_input(void) {
    recur_sched_config_t c = cfg_small(1, 8, 64);
    recur_sched_t *s = NULL;
    CHECK(recur_sched_create(&c, &s) == RECUR_E_INVAL && s == NULL);
    c = cfg_small(4, 8, 64);
    c.max_prompt = 4;
    c.n_vocab = 100;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t p[5] = { 1, 2, 3, 4, 5 }, oov[1] = { 100 };
    uint64_t id;
    recur_sched_request_t r = req(p, 0, 4);
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "empty"));
    r = req(p, 5, 4);
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "limit of 4"));
    r = req(oov, 1, 4);
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "vocabulary"));
    r = req(p, 2, 0);
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "max_tokens"));
    r = req(p, 2, 4);
    r.sampling.temperature = NAN;
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "temperature"));
    r = req(p, 2, 4);
    r.sampling.top_p = 0;
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "top_p"));
    r = req(p, 2, 4);
    r.sampling.min_p = 2;
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "min_p"));
    recur_sched_stats_t st;
    recur_sched_get_stats(s, &st);
    CHECK(st.submitted == 0 && st.waiting == 0);
    recur_sched_free(s);
    recur_sched_free(NULL);
}

/* ---------------------------------------------------------------- slots the caller holds */
static void test_caller_slots(void) {
    recur_sched_config_t c = cfg_small(3, 4, 16);   /* slots 1 and 2 */
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t held = 0, other = 0, p5[5] = {1, 2, 3, 4, 5}, p3[3] = {7, 8, 9};
    CHECK(recur_sched_slot_take(s, &held) == RECUR_OK && held == 1);
    /* a slot not held, and the padding slot, are refused */
    recur_sched_request_t r = req(p5, 5, 3);
    r.slot = 2;
    uint64_t id = 0, id2 = 0;
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "slot 2"));
    r.slot = held, r.keep_slot = 1;
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_OK);
    CHECK(recur_sched_slot_give(s, held) == RECUR_E_INVAL);   /* a request runs on it */
    CHECK(recur_sched_submit(s, &r, 0, &id2) == RECUR_E_INVAL);   /* one request per held slot */
    /* the last free slot is taken too: the pinned request still runs, an ordinary one waits */
    CHECK(recur_sched_slot_take(s, &other) == RECUR_OK && other == 2);
    int32_t no = -1;
    CHECK(recur_sched_slot_take(s, &no) == RECUR_E_BUSY && no == 0);
    recur_sched_request_t q = req(p3, 3, 2);
    CHECK(recur_sched_submit(s, &q, 0, &id2) == RECUR_OK);
    recur_sched_plan_t p;
    CHECK(recur_sched_plan(s, 1, &p) == RECUR_OK);
    CHECK(p.n_seq == 1 && p.slot[0] == held && p.id[0] == id && p.n_reset == 0 && p.seq_len[0] == 5 &&
          p.n_split_hit == 0);
    complete_all(s, &p, 11, 1);
    for (int k = 0; k < 2; k++) {   /* two decode steps: max_tokens 3 */
        CHECK(recur_sched_plan(s, 2, &p) == RECUR_OK && p.n_seq == 1 && p.slot[0] == held);
        complete_all(s, &p, 11, 2);
    }
    ev_tally_t t = drain(s);
    /* the slot stays the caller's: 5 prompt tokens and the 2 generated ones fed, the third not */
    CHECK(t.n_finished == 1 && t.last_fin.id == id && t.last_fin.reason == RECUR_SCHED_LENGTH &&
          t.last_fin.slot == held && t.last_fin.fed == 7);
    recur_sched_stats_t st;
    recur_sched_get_stats(s, &st);
    CHECK(st.slots_caller == 2 && st.waiting == 1 && st.running == 0);
    /* giving slot 2 back lets the waiting request in, reset first */
    CHECK(recur_sched_slot_give(s, other) == RECUR_OK);
    CHECK(recur_sched_plan(s, 3, &p) == RECUR_OK && p.n_seq == 1 && p.slot[0] == other && p.n_reset == 1 &&
          p.reset_slots[0] == other && p.reset_ids[0] == id2);
    complete_all(s, &p, 11, 3);
    /* a keep_slot request without a held slot: assigned at admission (reset, reset_ids), kept */
    recur_sched_request_t k = req(p3, 3, 1);
    k.keep_slot = 1;
    uint64_t id3 = 0;
    CHECK(recur_sched_submit(s, &k, 4, &id3) == RECUR_OK);
    CHECK(recur_sched_plan(s, 4, &p) == RECUR_OK);   /* id2 decodes; id3 waits: no free slot */
    CHECK(p.n_seq == 1 && p.id[0] == id2);
    complete_all(s, &p, 11, 4);   /* id2 reaches max_tokens 2: slot 2 free again */
    CHECK(recur_sched_plan(s, 5, &p) == RECUR_OK && p.n_seq == 1 && p.id[0] == id3 && p.n_reset == 1 &&
          p.reset_ids[0] == id3);
    complete_all(s, &p, 11, 5);
    t = drain(s);
    CHECK(t.last_fin.id == id3 && t.last_fin.slot == p.slot[0] && t.last_fin.fed == 3);
    /* cancelling a pinned request that waits returns the slot untouched (fed 0) */
    r.max_tokens = 1;
    CHECK(recur_sched_submit(s, &r, 6, &id) == RECUR_OK);
    CHECK(recur_sched_cancel(s, id) == RECUR_OK);
    t = drain(s);
    CHECK(t.last_fin.reason == RECUR_SCHED_CANCELLED && t.last_fin.slot == held && t.last_fin.fed == 0);
    CHECK(recur_sched_slot_give(s, held) == RECUR_OK && recur_sched_slot_give(s, held) == RECUR_E_INVAL);
    CHECK(recur_sched_slot_give(s, 2) == RECUR_OK);   /* id3's kept slot */
    recur_sched_get_stats(s, &st);
    CHECK(st.slots_caller == 0 && st.slots_used == 0);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- a chunk ends at split_at */
static void test_split(void) {
    recur_sched_config_t c = cfg_small(3, 4, 16);
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    int32_t pr[20];
    for (int i = 0; i < 20; i++) pr[i] = i + 1;
    recur_sched_request_t r = req(pr, 20, 1);
    uint64_t id;
    r.split_at = 21;
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_E_INVAL && strstr(recur_sched_error(s), "split_at"));
    r.split_at = 7;
    CHECK(recur_sched_submit(s, &r, 0, &id) == RECUR_OK);
    recur_sched_plan_t p;
    CHECK(recur_sched_plan(s, 1, &p) == RECUR_OK && p.n_seq == 1 && p.seq_len[0] == 7 && p.split_hit[0] == 1 &&
          p.n_split_hit == 1 && !p.sample[0]);
    complete_all(s, &p, 3, 1);
    CHECK(recur_sched_plan(s, 2, &p) == RECUR_OK && p.seq_len[0] == 13 && p.split_hit[0] == 0 && p.sample[0]);
    complete_all(s, &p, 3, 2);
    drain(s);
    recur_sched_free(s);
}

/* ---------------------------------------------------------------- randomized simulation */
typedef struct sim_req {
    int32_t prompt[64];
    int32_t n_prompt, max_tokens, n_seen, n_gen, last_tok, slot;
    int32_t stop;           /* the stop id of this request, -1 none */
    int finished, running, cancel_sent, ignore_eos;
    int sess;               /* the session it continues, -1 none */
    int32_t split;          /* split_at, 0 none */
    int pinned;             /* submitted on the session's slot */
    recur_sched_reason_t reason;
} sim_req_t;

/* A session of the simulation: the hash of what its state has consumed, the slot it holds
 * (0: none; its state is "elsewhere" and is restored into the slot its request gets). */
typedef struct sim_sess {
    uint64_t h;
    int32_t slot;
    uint64_t busy;          /* the request running on it, 0 none */
} sim_sess_t;

static uint64_t chain(uint64_t h, int32_t tok) { return (h ^ (uint64_t)(tok + 1)) * 0x100000001b3ull + 0x9E37u; }

/* The fake model: the token a request gets at index k, a function of (id, k) only. */
static int32_t fake_token(uint64_t id, int32_t k) { return (int32_t)((id * 2654435761u + (uint64_t)k * 40503u) % 50u); }

static void test_simulation(uint64_t seed, int n_steps) {
    uint64_t h = seed * 0x9E3779B97F4A7C15ull;
    recur_sched_config_t c = cfg_small(2 + (int32_t)(h >> 59), 1 + (int32_t)((h >> 20) % 24), 1 + (int32_t)((h >> 30) % 64));
    c.max_queue = 40;
    c.queue_timeout_ms = 300;
    c.prefill_chunk_max = (int32_t)(seed % 3) * 7;
    c.eos_id = 0;
    recur_sched_t *s;
    CHECK(recur_sched_create(&c, &s) == RECUR_OK);
    enum { MAXR = 8000 };
    sim_req_t *R = calloc(MAXR + 1, sizeof *R);
    int32_t *owner = calloc((size_t)c.n_slots, sizeof *owner);   /* slot -> sim id */
    uint64_t *slot_h = calloc((size_t)c.n_slots, sizeof *slot_h); /* what each slot has consumed */
    int *slot_sess = malloc((size_t)c.n_slots * sizeof *slot_sess); /* the session holding it, -1 */
    for (int32_t i = 0; i < c.n_slots; i++) slot_sess[i] = -1;
    enum { NS = 5 };
    sim_sess_t S[NS];
    memset(S, 0, sizeof S);
    uint64_t rng = seed * 7919 + 1, now = 0, n_sub = 0, n_sess_req = 0, n_pinned = 0, n_evict = 0;
    int bad = 0;
    for (int step = 0; step < n_steps && !bad; step++) {
        now += 1 + recur_test_rng_below(&rng, 10);
        int arrivals = recur_test_rng_below(&rng, 4) == 0 ? 1 + (int)recur_test_rng_below(&rng, 2) : 0;
        for (int k = 0; k < arrivals && n_sub < MAXR; k++) {
            sim_req_t *q = &R[n_sub + 1];
            q->n_prompt = 1 + (int32_t)recur_test_rng_below(&rng, 64);
            for (int j = 0; j < q->n_prompt; j++) q->prompt[j] = (int32_t)recur_test_rng_below(&rng, 50);
            q->max_tokens = 1 + (int32_t)recur_test_rng_below(&rng, 20);
            q->stop = recur_test_rng_below(&rng, 2) ? (int32_t)recur_test_rng_below(&rng, 50) : -1;
            recur_sched_request_t r = req(q->prompt, q->n_prompt, q->max_tokens);
            r.priority = (int32_t)recur_test_rng_below(&rng, 3);
            r.stop_ids = &q->stop;
            r.n_stop = q->stop >= 0;
            r.ignore_eos = (int)recur_test_rng_below(&rng, 2);
            q->split = recur_test_rng_below(&rng, 3) == 0 ? (int32_t)recur_test_rng_below(&rng, (uint32_t)q->n_prompt + 1) : 0;
            r.split_at = q->split;
            /* a third of the arrivals continue an idle session: on its slot when it holds one
             * (sometimes after taking one and "loading" the state into it), else on a slot
             * assigned at admission whose reset the caller replaces by a restore */
            q->sess = -1;
            int si = (int)recur_test_rng_below(&rng, NS);
            if (recur_test_rng_below(&rng, 3) == 0 && !S[si].busy) {
                if (!S[si].slot && recur_test_rng_below(&rng, 2) && recur_sched_slot_take(s, &S[si].slot) == RECUR_OK) {
                    slot_h[S[si].slot] = S[si].h;   /* a load into the taken slot */
                    slot_sess[S[si].slot] = si;
                }
                q->sess = si;
                r.keep_slot = 1;
                r.slot = S[si].slot;
                q->pinned = r.slot > 0;
                if (q->pinned) CHECK(slot_h[r.slot] == S[si].h && slot_sess[r.slot] == si);
            }
            uint64_t id;
            recur_status_t st = recur_sched_submit(s, &r, now, &id);
            if (st == RECUR_E_BUSY) continue;
            CHECK(st == RECUR_OK && id == n_sub + 1);
            n_sub++;
            if (q->sess >= 0) S[q->sess].busy = id, n_sess_req++, n_pinned += (uint64_t)q->pinned;
            q->ignore_eos = r.ignore_eos;   /* without it, eos (0) stops too */
        }
        /* random cancellations, of waiting or running requests */
        if (n_sub && recur_test_rng_below(&rng, 8) == 0) {
            uint64_t id = 1 + recur_test_rng_below(&rng, (uint32_t)n_sub);
            recur_status_t st = recur_sched_cancel(s, id);
            CHECK(st == (R[id].finished ? RECUR_E_INVAL : RECUR_OK));
            if (st == RECUR_OK && R[id].running) owner[R[id].slot] = 0;
            R[id].running = 0;
            if (st == RECUR_OK) R[id].cancel_sent = 1;
        }
        /* sometimes an idle session's slot goes back to the pool (its state "moves to host") */
        {
            int si = (int)recur_test_rng_below(&rng, NS);
            if (S[si].slot && !S[si].busy && recur_test_rng_below(&rng, 6) == 0) {
                CHECK(recur_sched_slot_give(s, S[si].slot) == RECUR_OK);
                slot_sess[S[si].slot] = -1;
                S[si].slot = 0;
                n_evict++;
            }
        }
        recur_sched_plan_t pl;
        CHECK(recur_sched_plan(s, now, &pl) == RECUR_OK);
        CHECK(pl.n_tokens <= c.token_budget);
        /* resets first: a session request's reset is replaced by restoring its state */
        for (int32_t i = 0; i < pl.n_reset; i++) {
            int32_t sl = pl.reset_slots[i];
            const sim_req_t *q = &R[pl.reset_ids[i]];
            CHECK(!q->pinned);
            if (slot_sess[sl] >= 0 && (q->sess != slot_sess[sl])) { CHECK(!"reset of a slot a session holds"); bad = 1; }
            slot_h[sl] = q->sess >= 0 ? S[q->sess].h : 0;
        }
        CHECK(pl.n_seq <= c.max_batch && pl.n_seq < c.n_slots);
        int32_t off = 0, ns = 0;
        for (int32_t i = 0; i < pl.n_seq; i++) {
            uint64_t id = pl.id[i];
            sim_req_t *q = &R[id];
            int32_t sl = pl.slot[i];
            if (sl < 1 || sl >= c.n_slots) { CHECK(!"slot out of range"); bad = 1; break; }
            for (int32_t j = 0; j < i; j++) if (pl.slot[j] == sl) { CHECK(!"slot twice in a plan"); bad = 1; }
            if (!q->running) {   /* its first step: the slot must be free (per our view) and reset */
                if (owner[sl] && !R[owner[sl]].finished && R[owner[sl]].running) { CHECK(!"slot of a live request"); bad = 1; }
                if (q->pinned) {   /* its session's slot, as the session left it */
                    CHECK(!resets_slot(&pl, sl) && sl == S[q->sess].slot && slot_h[sl] == S[q->sess].h);
                } else {
                    CHECK(resets_slot(&pl, sl));
                    if (slot_sess[sl] >= 0) { CHECK(!"a session's slot given to a request"); bad = 1; }
                }
                CHECK(q->n_seen == 0);
                owner[sl] = (int32_t)id;
                q->running = 1;
                q->slot = sl;
            } else {
                CHECK(q->slot == sl && owner[sl] == (int32_t)id);
                CHECK(!resets_slot(&pl, sl));
            }
            if (slot_sess[sl] >= 0 && slot_sess[sl] != q->sess) { CHECK(!"tokens into another session's slot"); bad = 1; }
            for (int32_t j = 0; j < pl.seq_len[i]; j++) slot_h[sl] = chain(slot_h[sl], pl.tokens[off + j]);
            if (q->n_seen < q->n_prompt) {   /* prefill: the prompt continues in order */
                CHECK(q->n_seen + pl.seq_len[i] <= q->n_prompt);
                /* no chunk crosses split_at; the one ending there says so */
                CHECK(!(q->split && q->n_seen < q->split && q->n_seen + pl.seq_len[i] > q->split));
                CHECK(pl.split_hit[i] == (q->split && q->n_seen + pl.seq_len[i] == q->split));
                CHECK(memcmp(pl.tokens + off, q->prompt + q->n_seen, (size_t)pl.seq_len[i] * sizeof(int32_t)) == 0);
                q->n_seen += pl.seq_len[i];
                CHECK(pl.sample[i] == (q->n_seen == q->n_prompt));
            } else {                         /* decode: the last generated token */
                CHECK(pl.seq_len[i] == 1 && pl.sample[i] && pl.tokens[off] == q->last_tok && !pl.split_hit[i]);
            }
            if (pl.sample[i]) { CHECK(pl.sampling[ns].step == (uint64_t)q->n_gen); ns++; }
            off += pl.seq_len[i];
        }
        CHECK(off == pl.n_tokens && ns == pl.n_sample);
        if (pl.n_seq) {
            int32_t tok[1024];
            for (int32_t i = 0, k = 0; i < pl.n_seq; i++)
                if (pl.sample[i]) tok[k++] = fake_token(pl.id[i], R[pl.id[i]].n_gen);
            /* sometimes a cancellation lands while the step runs, rarely the step fails */
            if (recur_test_rng_below(&rng, 10) == 0) {
                uint64_t id = pl.id[recur_test_rng_below(&rng, (uint32_t)pl.n_seq)];
                CHECK(recur_sched_cancel(s, id) == RECUR_OK);
                owner[R[id].slot] = 0;
                R[id].running = 0;
                R[id].cancel_sent = 1;
            }
            recur_sched_result_t res = { .step = pl.step, .status = RECUR_OK, .n_token = pl.n_sample, .token = tok };
            if (recur_test_rng_below(&rng, 200) == 0) {
                res.status = RECUR_E_IO;
                res.message = "simulated";
            }
            CHECK(recur_sched_complete(s, &res, now) == RECUR_OK);
        }
        recur_sched_event_t e;
        while (recur_sched_next_event(s, &e)) {
            sim_req_t *q = &R[e.id];
            CHECK(e.id >= 1 && e.id <= n_sub);
            CHECK(!q->finished);
            if (e.type == RECUR_SCHED_EV_TOKEN) {
                CHECK(e.index == q->n_gen && e.token == fake_token(e.id, q->n_gen));
                q->last_tok = e.token;
                q->n_gen++;
            } else if (e.type == RECUR_SCHED_EV_FINISHED) {
                q->finished = 1;
                q->reason = e.reason;
                if (q->running) owner[q->slot] = 0;
                q->running = 0;
                CHECK(e.fed >= 0 && e.fed <= q->n_prompt + q->n_gen);
                if (q->sess >= 0) {   /* the session's state: what the plans fed, in order */
                    sim_sess_t *ss = &S[q->sess];
                    CHECK(ss->busy == e.id);
                    uint64_t hh = ss->h;
                    for (int32_t j = 0; j < e.fed; j++)
                        hh = chain(hh, j < q->n_prompt ? q->prompt[j] : fake_token(e.id, j - q->n_prompt));
                    CHECK(e.slot == (q->pinned || q->slot ? (q->pinned ? ss->slot : q->slot) : 0));
                    if (e.slot) {
                        CHECK(slot_h[e.slot] == hh);
                        slot_sess[e.slot] = q->sess;
                    }
                    ss->busy = 0;
                    ss->slot = e.slot;
                    if (e.reason == RECUR_SCHED_ERROR) {   /* a failed step: the state is gone */
                        if (ss->slot) {
                            CHECK(recur_sched_slot_give(s, ss->slot) == RECUR_OK);
                            slot_sess[ss->slot] = -1;
                        }
                        ss->slot = 0;
                        ss->h = 0;
                    } else {
                        ss->h = hh;
                    }
                } else {
                    CHECK(e.slot == 0);
                }
                CHECK(e.completion_tokens == q->n_gen && e.prompt_tokens == q->n_prompt);
                int at_stop = q->n_gen >= 1 && (q->last_tok == q->stop || (q->last_tok == 0 && !q->ignore_eos));
                if (e.reason == RECUR_SCHED_LENGTH) CHECK(q->n_gen == q->max_tokens && !at_stop);
                if (e.reason == RECUR_SCHED_STOP) CHECK(at_stop);
                if (e.reason == RECUR_SCHED_CANCELLED) CHECK(q->cancel_sent);
                if (e.reason == RECUR_SCHED_TIMEOUT) CHECK(q->n_seen == 0);
            }
        }
    }
    /* drain: cancel what is left, then everything must be free and finished exactly once */
    for (uint64_t id = 1; id <= n_sub; id++)
        if (!R[id].finished) CHECK(recur_sched_cancel(s, id) == RECUR_OK);
    recur_sched_event_t ev;
    while (recur_sched_next_event(s, &ev))
        if (ev.type == RECUR_SCHED_EV_FINISHED && ev.slot) CHECK(recur_sched_slot_give(s, ev.slot) == RECUR_OK);
    for (int i = 0; i < NS; i++)
        if (S[i].slot && !S[i].busy) CHECK(recur_sched_slot_give(s, S[i].slot) == RECUR_OK);
    ev_tally_t t = drain(s);
    recur_sched_stats_t st;
    recur_sched_get_stats(s, &st);
    CHECK(st.slots_caller == 0);
    CHECK(st.running == 0 && st.waiting == 0 && st.slots_used == 0);
    uint64_t total = 0;
    for (int i = 0; i < RECUR_SCHED_N_REASONS; i++) total += st.finished[i];
    CHECK(total == n_sub && st.submitted == n_sub);
    (void)t;
    fprintf(stderr, "simulation seed %llu: %llu session requests (%llu on their slot), %llu session slots given back\n",
            (unsigned long long)seed, (unsigned long long)n_sess_req, (unsigned long long)n_pinned,
            (unsigned long long)n_evict);
    fprintf(stderr, "simulation seed %llu: %d slots, batch %d, budget %d, chunk %d: %llu requests, %llu steps, "
                    "stop %llu length %llu cancelled %llu error %llu timeout %llu\n",
            (unsigned long long)seed, (int)c.n_slots - 1, (int)c.max_batch, (int)c.token_budget,
            (int)c.prefill_chunk_max, (unsigned long long)n_sub, (unsigned long long)st.steps,
            (unsigned long long)st.finished[0], (unsigned long long)st.finished[1], (unsigned long long)st.finished[2],
            (unsigned long long)st.finished[3], (unsigned long long)st.finished[4]);
    free(R);
    free(owner);
    free(slot_h);
    free(slot_sess);
    recur_sched_free(s);
}

int main(void) {
    test_order();
    test_slots();
    test_chunked_prefill();
    test_decode_first();
    test_stops();
    test_cancel();
    test_queue_limits();
    test_failed_step();
    test_bad_input();
    test_caller_slots();
    test_split();
    for (uint64_t seed = 1; seed <= 16; seed++) test_simulation(seed, 4000);
    if (failures) fprintf(stderr, "test_sched: %d checks failed\n", failures);
    else fprintf(stderr, "test_sched: all checks passed\n");
    return failures ? 1 : 0;
}
