/* test_sessions_table.c: the coordinator's session table (coordinator/recur_sessions.h).
 *
 * By hand: add / find / duplicate / limit, tiers and their LRU order (touch reorders, busy
 * sessions are never offered), host room against the byte budget, idle expiry, the
 * conversation after a turn (advance), after a save and after a lost state (revert).
 * Then a randomized run against a plain array model: after every operation the LRU idle
 * session of each tier, the expired one and the counts equal what a linear scan of the
 * model gives. Session ids: what recur_sessions_id_check lets in and refuses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_file.h"
#include "recur_sessions.h"
#include "recur_testutil.h"

static int failures;
#define CHECK(c) RECUR_CHECK(&failures, c)

static recur_sessions_config_t cfg(int32_t max_sessions, uint64_t host_copies, uint64_t ttl) {
    recur_sessions_config_t c = {.max_sessions = max_sessions, .max_slots = 4, .host_bytes = host_copies * 1000,
                                 .state_bytes = 1000, .ttl_ms = ttl};
    return c;
}

static void test_by_hand(void) {
    recur_sessions_t *t;
    recur_sessions_config_t c = cfg(3, 2, 100);
    CHECK(recur_sessions_create(&c, &t) == RECUR_OK);
    recur_sess_t *a, *b, *d, *x;
    CHECK(recur_sessions_add(t, "a", "m", 10, 1000, &a) == RECUR_OK);
    CHECK(recur_sessions_add(t, "b", "m:v", 20, 1001, &b) == RECUR_OK);
    CHECK(recur_sessions_add(t, "a", "m", 30, 1002, &x) == RECUR_E_INVAL && !x);
    CHECK(recur_sessions_add(t, "", "m", 30, 1002, &x) == RECUR_E_INVAL);
    CHECK(recur_sessions_add(t, "d", "m", 30, 1002, &d) == RECUR_OK);
    CHECK(recur_sessions_add(t, "e", "m", 30, 1002, &x) == RECUR_E_BUSY && strstr(recur_sessions_error(t), "too many"));
    CHECK(recur_sessions_find(t, "b") == b && !recur_sessions_find(t, "zz") && a->key != b->key);
    CHECK(recur_sessions_tier(a) == RECUR_SESS_NEW && !strcmp(b->model, "m:v"));
    /* tiers: a and b in slots, d on host; LRU order in each */
    recur_sessions_set_slot(t, a, 1);
    recur_sessions_set_slot(t, b, 2);
    recur_sessions_set_host(t, d, 1);
    CHECK(recur_sessions_lru_idle(t, RECUR_SESS_SLOT) == a && recur_sessions_lru_idle(t, RECUR_SESS_HOST) == d);
    recur_sessions_touch(t, a, 40, 1003);   /* a is now the most recent */
    CHECK(recur_sessions_lru_idle(t, RECUR_SESS_SLOT) == b);
    recur_sessions_set_busy(t, b, 1);       /* busy: never offered */
    CHECK(recur_sessions_lru_idle(t, RECUR_SESS_SLOT) == a);
    recur_sessions_set_busy(t, b, 0);
    CHECK(recur_sessions_lru_idle(t, RECUR_SESS_SLOT) == b);
    /* host room: 2 copies fit; d has one; a slot session with a host copy counts too */
    CHECK(recur_sessions_host_room(t));
    recur_sessions_set_host(t, a, 1);
    CHECK(!recur_sessions_host_room(t));
    CHECK(recur_sessions_lru_idle(t, RECUR_SESS_HOST) == d);   /* a is in a slot: not a host-tier session */
    recur_sessions_set_slot(t, a, 0);
    CHECK(recur_sessions_tier(a) == RECUR_SESS_HOST && recur_sessions_lru_idle(t, RECUR_SESS_HOST) == d);
    recur_sessions_stats_t st;
    recur_sessions_get_stats(t, &st);
    CHECK(st.n_sessions == 3 && st.n_slot == 1 && st.n_slot_idle == 1 && st.n_host == 2 && st.host_bytes_used == 2000);
    /* expiry: ttl 100; last used b 20, d 30, a 40 */
    CHECK(recur_sessions_expired(t, 119) == NULL);
    CHECK(recur_sessions_expired(t, 120) == b);
    recur_sessions_set_busy(t, b, 1);
    CHECK(recur_sessions_expired(t, 129) == NULL && recur_sessions_expired(t, 130) == d);   /* busy b is skipped */
    recur_sessions_set_busy(t, b, 0);
    /* the conversation */
    int32_t toks[6] = {5, 6, 7, 8, 9, 10};
    CHECK(recur_sessions_advance(b, toks, 6, 5) == RECUR_OK && b->n_consumed == 5 && b->n_pending == 1 &&
          b->pending[0] == 10);
    /* the unsent text (a stop string) follows the conversation: saved, reverted */
    CHECK(recur_sessions_set_unsent(b, (const uint8_t *)"\n\nUser:", 7) == RECUR_OK && b->n_unsent == 7);
    static uint8_t big[RECUR_SESS_MAX_UNSENT + 1];
    CHECK(recur_sessions_set_unsent(b, big, sizeof big) == RECUR_E_INVAL && b->n_unsent == 7);
    CHECK(recur_sessions_mark_saved(b) == RECUR_OK);
    recur_sessions_set_disk(t, b, 3, 1);
    CHECK(recur_sessions_advance(b, toks, 6, 6) == RECUR_OK && b->n_consumed == 11 && b->n_pending == 0);
    CHECK(recur_sessions_set_unsent(b, NULL, 0) == RECUR_OK && b->n_unsent == 0);
    recur_sessions_set_disk(t, b, 3, 0);
    CHECK(recur_sessions_revert_to_disk(b) == RECUR_OK && b->n_consumed == 5 && b->n_pending == 1 && b->disk_current);
    CHECK(b->n_unsent == 7 && !memcmp(b->unsent, "\n\nUser:", 7));
    recur_sessions_set_slot(t, b, 0);
    CHECK(recur_sessions_tier(b) == RECUR_SESS_DISK);
    recur_sessions_remove(t, a);
    CHECK(!recur_sessions_find(t, "a") && recur_sessions_add(t, "e", "m", 50, 1004, &x) == RECUR_OK);
    /* iteration: most recent first */
    recur_sess_t *it = recur_sessions_first(t);
    CHECK(it == x && recur_sessions_next(it) == d && recur_sessions_next(d) == b && !recur_sessions_next(b));
    recur_sessions_free(t);
    printf("ok   by hand: add/find/limit, LRU per tier, busy, host room, expiry, conversation\n");
}

/* ---- randomized, against an array model */
typedef struct mrec { int live, slot, host, busy; uint64_t used; recur_sess_t *s; } mrec_t;

static void test_random(uint64_t seed) {
    enum { N = 40 };
    recur_sessions_t *t;
    recur_sessions_config_t c = cfg(N, 7, 500);
    CHECK(recur_sessions_create(&c, &t) == RECUR_OK);
    mrec_t M[N];
    memset(M, 0, sizeof M);
    uint64_t rng = seed, now = 1;
    for (int step = 0; step < 20000; step++) {
        now += recur_test_rng_below(&rng, 5);
        int i = (int)recur_test_rng_below(&rng, N);
        mrec_t *m = &M[i];
        char id[16];
        snprintf(id, sizeof id, "s%d", i);
        switch (recur_test_rng_below(&rng, 7)) {
        case 0:
            if (!m->live) {
                CHECK(recur_sessions_add(t, id, "m", now, now, &m->s) == RECUR_OK);
                *m = (mrec_t){.live = 1, .used = now, .s = m->s};
            } else if (!m->busy) {
                recur_sessions_remove(t, m->s);
                memset(m, 0, sizeof *m);
            }
            break;
        case 1:
            if (m->live) recur_sessions_touch(t, m->s, now, now), m->used = now;
            break;
        case 2:
            if (m->live) recur_sessions_set_busy(t, m->s, m->busy = !m->busy);
            break;
        case 3:
            if (m->live) recur_sessions_set_slot(t, m->s, m->slot = m->slot ? 0 : i + 1);
            break;
        default:
            if (m->live) recur_sessions_set_host(t, m->s, m->host = !m->host);
            break;
        }
        /* the model's answers */
        int lru_slot = -1, lru_host = -1, exp = -1, n_host = 0, n_live = 0;
        for (int k = 0; k < N; k++) {
            const mrec_t *q = &M[k];
            if (!q->live) continue;
            n_live++;
            n_host += q->host;
            if (q->busy) continue;
            /* ties by last use: the table keeps insertion order, so compare only strictly */
            if (q->slot && (lru_slot < 0 || q->used < M[lru_slot].used)) lru_slot = k;
            if (!q->slot && q->host && (lru_host < 0 || q->used < M[lru_host].used)) lru_host = k;
            if (q->used + 500 <= now && (exp < 0 || q->used < M[exp].used)) exp = k;
        }
        recur_sess_t *ls = recur_sessions_lru_idle(t, RECUR_SESS_SLOT), *lh = recur_sessions_lru_idle(t, RECUR_SESS_HOST);
        recur_sess_t *ex = recur_sessions_expired(t, now);
        int ok = (lru_slot < 0) == !ls && (lru_host < 0) == !lh && (exp < 0) == !ex;
        if (ok && ls) ok = ls->last_used_ms == M[lru_slot].used && ls->slot && !ls->busy;
        if (ok && lh) ok = lh->last_used_ms == M[lru_host].used && lh->host && !lh->slot && !lh->busy;
        if (ok && ex) ok = ex->last_used_ms == M[exp].used && !ex->busy;
        recur_sessions_stats_t st;
        recur_sessions_get_stats(t, &st);
        ok = ok && st.n_sessions == n_live && st.n_host == n_host;
        if (!ok) {
            fprintf(stderr, "seed %llu step %d: the table disagrees with the model\n", (unsigned long long)seed, step);
            failures++;
            break;
        }
    }
    recur_sessions_free(t);
}

/* Client-chosen session ids (recur_sessions_id_check, recur_name_is_safe): anything that
 * could name a path, a hidden file or something unprintable is refused, with a message that
 * shows the id only as printable ASCII. */
static void test_ids(void) {
    char long_ok[129], long_bad[130], msg[320];
    memset(long_ok, 'a', 128), long_ok[128] = '\0';
    memset(long_bad, 'a', 129), long_bad[129] = '\0';
    const char *good[] = {"a", "chat-1", "s1.fork_2", "A.B-c_d.9", "x..y", long_ok};
    const char *bad[] = {"", ".", "..", "../x", "a/b", "/etc", ".hidden", "a b", "a\\b", "a\nb", "caf\xc3\xa9",
                         "a:b", "~", "a%2fb", long_bad};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        CHECK(recur_sessions_id_check(good[i], "session_id", msg, sizeof msg) == RECUR_OK);
        CHECK(recur_name_is_safe(good[i], RECUR_SESSION_ID_MAX));
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        msg[0] = '\0';
        CHECK(recur_sessions_id_check(bad[i], "session_id", msg, sizeof msg) == RECUR_E_INVAL);
        CHECK(strstr(msg, "session_id") && strstr(msg, "must be 1 to 128 characters"));
        for (const char *p = msg; *p; p++) CHECK(*p >= 0x20 && *p < 0x7f);   /* a safe message */
        CHECK(!recur_name_is_safe(bad[i], RECUR_SESSION_ID_MAX));
    }
    CHECK(recur_sessions_id_check(NULL, "x", msg, sizeof msg) == RECUR_E_INVAL);
    CHECK(!recur_name_is_safe("abc", 2) && recur_name_is_safe("ab", 2));
    /* the table refuses them too (a manifest read back at start names its own id) */
    recur_sessions_t *t;
    recur_sessions_config_t c = cfg(8, 2, 0);
    recur_sess_t *s;
    CHECK(recur_sessions_create(&c, &t) == RECUR_OK);
    CHECK(recur_sessions_add(t, "../x", "m", 1, 1, &s) == RECUR_E_INVAL && !s);
    CHECK(strstr(recur_sessions_error(t), "must be 1 to 128"));
    CHECK(recur_sessions_add(t, long_ok, "m", 1, 1, &s) == RECUR_OK && s);
    recur_sessions_free(t);
    printf("ok   session ids: %zu valid, %zu refused (paths, dot names, spaces, non-ASCII, 129 bytes)\n",
           sizeof good / sizeof *good, sizeof bad / sizeof *bad);
}

int main(void) {
    test_ids();
    test_by_hand();
    for (uint64_t seed = 1; seed <= 8; seed++) test_random(seed);
    printf("ok   randomized: 8 x 20000 operations agree with an array model\n");
    if (failures) fprintf(stderr, "test_sessions_table: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
