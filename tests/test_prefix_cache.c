/* test_prefix_cache.c: the prefix-state cache's trie (coordinator/recur_prefix_cache.h).
 *
 * By hand: a prefix is worth capturing once two prompts share it (rounded down to the
 * block, leaving a token), a pending capture is not served, a committed one is; the longest
 * cached prefix wins and always leaves a token to prefill; LRU eviction skips pinned
 * entries; a failed capture and a clear forget entries; the trie stays within its token
 * budget and keeps the cached paths. Then random prompts over a small alphabet (so they
 * share prefixes) against a brute-force model of the same rules: every lookup and every
 * observe agrees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_prefix_cache.h"
#include "recur_testutil.h"

static int failures;
#define CHECK(c) RECUR_CHECK(&failures, c)

static void test_by_hand(void) {
    recur_prefix_config_t cfg = {.max_entries = 2, .block = 4, .max_trie_tokens = 1 << 20, .key_base = 1000};
    recur_prefix_cache_t *pc;
    CHECK(recur_prefix_create(&cfg, &pc) == RECUR_OK);
    int32_t A[20], B[20], C[20];
    for (int i = 0; i < 20; i++) A[i] = i, B[i] = i < 10 ? i : 100 + i, C[i] = i < 13 ? i : 200 + i;
    int32_t e;
    uint64_t key;
    CHECK(recur_prefix_observe(pc, A, 20, 0) == 0);   /* nothing shared yet */
    CHECK(recur_prefix_lookup(pc, B, 20, 1, &e, &key) == 0 && e == -1);
    CHECK(recur_prefix_observe(pc, B, 20, 0) == 8);   /* shares 10 with A: block 8 */
    int32_t e0 = recur_prefix_reserve(pc, B, 8, 2, &key);
    CHECK(e0 == 0 && key == 1000);
    CHECK(recur_prefix_reserve(pc, B, 8, 2, &key) == -1);   /* one entry per prefix */
    CHECK(recur_prefix_lookup(pc, C, 20, 3, &e, &key) == 0);   /* pending: not served */
    CHECK(recur_prefix_observe(pc, B, 10, 0) == 0);            /* nor captured twice */
    recur_prefix_commit(pc, e0, 1);
    CHECK(recur_prefix_lookup(pc, C, 20, 4, &e, &key) == 8 && e == e0 && key == 1000);
    CHECK(recur_prefix_lookup(pc, A, 8, 4, &e, &key) == 0);   /* must leave a token */
    CHECK(recur_prefix_lookup(pc, A, 9, 4, &e, &key) == 8);
    /* C shares 13 with A: 12, beyond the 8 it starts from */
    CHECK(recur_prefix_observe(pc, C, 20, 8) == 12);
    int32_t e1 = recur_prefix_reserve(pc, C, 12, 5, &key);
    CHECK(e1 == 1 && key == 1001);
    recur_prefix_commit(pc, e1, 1);
    CHECK(recur_prefix_lookup(pc, C, 20, 6, &e, &key) == 12 && e == e1);   /* the longest */
    CHECK(recur_prefix_lookup(pc, B, 20, 7, &e, &key) == 8 && e == e0);    /* B leaves A at 10 */
    /* full: a third prefix evicts the least recently used (e1, used at 6) unless pinned */
    int32_t D[20];
    for (int i = 0; i < 20; i++) D[i] = i < 5 ? 50 : i;
    recur_prefix_observe(pc, D, 20, 0);
    recur_prefix_pin(pc, e1, 1);
    int32_t e2 = recur_prefix_reserve(pc, D, 4, 8, &key);
    CHECK(e2 == e0);   /* e1 pinned: e0 goes */
    CHECK(recur_prefix_lookup(pc, B, 20, 9, &e, &key) == 0);
    recur_prefix_pin(pc, e2, 1);
    CHECK(recur_prefix_reserve(pc, A, 16, 9, &key) == -1);   /* every entry pinned (e2 pending counts too) */
    recur_prefix_commit(pc, e2, 0);   /* a failed capture: freed */
    CHECK(recur_prefix_lookup(pc, D, 20, 10, &e, &key) == 0);
    recur_prefix_stats_t st;
    recur_prefix_get_stats(pc, &st);
    CHECK(st.entries == 1 && st.pending == 0 && st.captures == 2 && st.evictions == 1 && st.hits == 4);
    recur_prefix_clear(pc);
    CHECK(recur_prefix_lookup(pc, C, 20, 11, &e, &key) == 0);
    recur_prefix_free(pc);

    /* the trie's budget: many unrelated prompts, one cached path survives the pruning */
    recur_prefix_config_t small = {.max_entries = 4, .block = 4, .max_trie_tokens = 200, .key_base = 1};
    CHECK(recur_prefix_create(&small, &pc) == RECUR_OK);
    recur_prefix_observe(pc, A, 20, 0);
    CHECK(recur_prefix_observe(pc, B, 20, 0) == 8);
    e0 = recur_prefix_reserve(pc, B, 8, 1, &key);
    recur_prefix_commit(pc, e0, 1);
    uint64_t rng = 5;
    for (int k = 0; k < 200; k++) {
        int32_t p[30];
        for (int i = 0; i < 30; i++) p[i] = 1000 + (int32_t)recur_test_rng_below(&rng, 100000);
        recur_prefix_observe(pc, p, 30, 0);
    }
    recur_prefix_get_stats(pc, &st);
    CHECK(st.trie_tokens <= 230 && recur_prefix_lookup(pc, C, 20, 2, &e, &key) == 8);
    recur_prefix_free(pc);
    printf("ok   by hand: capture rule, pending vs committed, longest hit, LRU with pins, failure, clear, budget\n");
}

/* ---- random prompts against a brute-force model */
enum { MAXP = 400, LEN = 24, MAXE = 6 };
typedef struct model {
    int32_t seen[MAXP][LEN];
    int32_t n_seen[MAXP], n;
    int32_t ent[MAXE][LEN], ent_len[MAXE], ent_state[MAXE];   /* 0 free, 1 pending, 2 valid */
    uint64_t ent_used[MAXE];
} model_t;

static int common(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

static void test_random(uint64_t seed) {
    recur_prefix_config_t cfg = {.max_entries = MAXE, .block = 3, .max_trie_tokens = 1 << 22, .key_base = 7};
    recur_prefix_cache_t *pc;
    CHECK(recur_prefix_create(&cfg, &pc) == RECUR_OK);
    model_t *M = calloc(1, sizeof *M);
    uint64_t rng = seed, now = 0;
    int bad = 0;
    for (int k = 0; k < MAXP && !bad; k++) {
        now++;
        int32_t p[LEN], n = 2 + (int32_t)recur_test_rng_below(&rng, LEN - 1);
        for (int i = 0; i < n; i++) p[i] = (int32_t)recur_test_rng_below(&rng, i < 6 ? 2 : 4);
        /* lookup: the longest valid entry that is a prefix of p and leaves a token */
        int32_t want = 0, we = -1;
        for (int i = 0; i < MAXE; i++)
            if (M->ent_state[i] == 2 && M->ent_len[i] <= n - 1 && common(M->ent[i], M->ent_len[i], p, n) == M->ent_len[i] &&
                M->ent_len[i] > want)
                want = M->ent_len[i], we = i;
        int32_t e;
        uint64_t key;
        int32_t got = recur_prefix_lookup(pc, p, n, now, &e, &key);
        if (got != want || e != we) {
            fprintf(stderr, "seed %llu prompt %d: lookup %d (entry %d), model %d (entry %d)\n", (unsigned long long)seed,
                    k, got, e, want, we);
            bad = 1;
        }
        if (we >= 0) M->ent_used[we] = now;
        /* observe: the longest prefix shared with an earlier prompt, to a block, leaving a token */
        int32_t L = 0;
        for (int j = 0; j < M->n; j++) {
            int c = common(M->seen[j], M->n_seen[j], p, n);
            if (c > L) L = c;
        }
        if (L > n - 1) L = n - 1;
        int32_t P = L / 3 * 3, exists = 0;
        for (int i = 0; i < MAXE; i++)
            if (M->ent_state[i] && M->ent_len[i] == P && common(M->ent[i], P, p, n) == P) exists = 1;
        int32_t wantP = P > got && P >= 3 && !exists ? P : 0;
        int32_t gotP = recur_prefix_observe(pc, p, n, got);
        memcpy(M->seen[M->n], p, (size_t)n * sizeof *p);
        M->n_seen[M->n++] = n;
        if (gotP != wantP) {
            fprintf(stderr, "seed %llu prompt %d: observe %d, model %d\n", (unsigned long long)seed, k, gotP, wantP);
            bad = 1;
        }
        if (gotP) {   /* capture it: sometimes it fails */
            int32_t r = recur_prefix_reserve(pc, p, gotP, now, &key);
            int32_t mr = -1;
            for (int i = 0; i < MAXE && mr < 0; i++)
                if (!M->ent_state[i]) mr = i;
            if (mr < 0)
                for (int i = 0; i < MAXE; i++)
                    if (M->ent_state[i] == 2 && (mr < 0 || M->ent_used[i] < M->ent_used[mr])) mr = i;
            if (r != mr) {
                fprintf(stderr, "seed %llu prompt %d: reserve %d, model %d\n", (unsigned long long)seed, k, r, mr);
                bad = 1;
                break;
            }
            memcpy(M->ent[r], p, (size_t)gotP * sizeof *p);
            M->ent_len[r] = gotP, M->ent_used[r] = now;
            int ok = recur_test_rng_below(&rng, 8) != 0;
            recur_prefix_commit(pc, r, ok);
            M->ent_state[r] = ok ? 2 : 0;
        }
    }
    failures += bad;
    free(M);
    recur_prefix_free(pc);
}

int main(void) {
    test_by_hand();
    for (uint64_t seed = 1; seed <= 20; seed++) test_random(seed);
    printf("ok   randomized: 20 x 400 prompts, lookups and captures agree with a brute-force model\n");
    if (failures) fprintf(stderr, "test_prefix_cache: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
