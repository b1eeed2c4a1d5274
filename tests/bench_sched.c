/* bench_sched.c: the scheduler's cost per step at batch 256 with mixed prefill, to check the
 * coordinator's overhead budget (< 2% of a step; a 7B step at batch 256 takes ~15-30 ms on
 * an H200, so the budget is 300-600 us for everything the coordinator does per step).
 *
 * Usage: bench_sched [steps]   (default 20000). Prints, per step: sequences, tokens, and the
 * time of plan + complete + draining the events (the fake model's work is not timed), as
 * mean / p50 / p99 / max in microseconds, and the mean as a share of a 15 ms step. Not a
 * timed assertion: the exit code only says the run itself worked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_sched.h"
#include "recur_testutil.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int n_steps = argc > 1 ? atoi(argv[1]) : 20000;
    if (n_steps < 10) n_steps = 10;
    recur_sched_config_t c = recur_sched_default_config();
    c.n_slots = 1 + 256;
    c.max_batch = 256;
    c.token_budget = 2048;
    c.prefill_chunk_max = 512;
    c.max_queue = 4096;
    c.queue_timeout_ms = 0;
    c.eos_id = 0;
    recur_sched_t *s;
    if (recur_sched_create(&c, &s) != RECUR_OK) return 1;

    enum { MAX_PROMPT = 2048 };
    int32_t *prompt = malloc(MAX_PROMPT * sizeof *prompt);
    double *t_us = malloc((size_t)n_steps * sizeof *t_us);
    if (!prompt || !t_us) return 1;
    for (int i = 0; i < MAX_PROMPT; i++) prompt[i] = 1 + i % 1000;
    uint64_t rng = 12345, now = 0;
    int32_t tok[1024];
    double sum_seq = 0, sum_tok = 0, sum_dec = 0, t_submit = 0;
    uint64_t n_submit = 0, n_events = 0;
    int timed = 0;
    for (int step = 0; step < n_steps; step++) {
        now += 20;
        recur_sched_stats_t st;
        recur_sched_get_stats(s, &st);
        /* keep the slots full and a few requests queued: arrivals refill what finished */
        while (st.waiting < 16) {
            recur_sched_request_t r;
            memset(&r, 0, sizeof r);
            r.prompt = prompt;
            r.n_prompt = 64 + (int32_t)recur_test_rng_below(&rng, MAX_PROMPT - 64);
            r.max_tokens = 50 + (int32_t)recur_test_rng_below(&rng, 250);
            r.sampling.temperature = 0.8f;
            r.sampling.top_p = 0.95f;
            r.sampling.seed = rng;
            uint64_t id;
            double t0 = recur_test_now_s();
            if (recur_sched_submit(s, &r, now, &id) != RECUR_OK) return 1;
            t_submit += recur_test_now_s() - t0;
            n_submit++;
            st.waiting++;
        }
        double t0 = recur_test_now_s();
        recur_sched_plan_t pl;
        if (recur_sched_plan(s, now, &pl) != RECUR_OK) return 1;
        double t1 = recur_test_now_s();
        for (int32_t i = 0; i < pl.n_sample; i++)   /* the fake model: rarely eos */
            tok[i] = recur_test_rng_below(&rng, 400) == 0 ? 0 : 1 + (int32_t)recur_test_rng_below(&rng, 50000);
        recur_sched_result_t res = { .step = pl.step, .status = RECUR_OK, .n_token = pl.n_sample, .token = tok };
        double t2 = recur_test_now_s();
        if (pl.n_seq && recur_sched_complete(s, &res, now) != RECUR_OK) return 1;
        recur_sched_event_t e;
        while (recur_sched_next_event(s, &e)) n_events++;
        double t3 = recur_test_now_s();
        t_us[timed++] = ((t1 - t0) + (t3 - t2)) * 1e6;
        sum_seq += pl.n_seq;
        sum_tok += pl.n_tokens;
        sum_dec += pl.n_decode;
    }
    qsort(t_us, (size_t)timed, sizeof *t_us, cmp_double);
    double mean = 0;
    for (int i = 0; i < timed; i++) mean += t_us[i];
    mean /= timed;
    printf("# bench_sched: n_slots %d, max_batch %d, token_budget %d, prefill_chunk_max %d, %d steps\n",
           (int)c.n_slots - 1, (int)c.max_batch, (int)c.token_budget, (int)c.prefill_chunk_max, n_steps);
    printf("# %8s %8s %8s %10s %10s %10s %10s %12s\n", "seqs", "decode", "tokens", "mean", "p50", "p99", "max",
           "of 15 ms");
    printf("# %8s %8s %8s %10s %10s %10s %10s %12s\n", "/step", "/step", "/step", "(us)", "(us)", "(us)", "(us)",
           "(%)");
    printf("  %8.1f %8.1f %8.1f %10.2f %10.2f %10.2f %10.2f %12.4f\n", sum_seq / n_steps, sum_dec / n_steps,
           sum_tok / n_steps, mean, t_us[timed / 2], t_us[(int)(timed * 0.99)], t_us[timed - 1],
           mean / 15000.0 * 100.0);
    printf("# submit: %.2f us per request (%llu requests, prompt copy included); %llu events drained\n",
           n_submit ? t_submit / (double)n_submit * 1e6 : 0.0, (unsigned long long)n_submit,
           (unsigned long long)n_events);
    free(prompt);
    free(t_us);
    recur_sched_free(s);
    return 0;
}
