/* test_token_hist.c: the worker's per-slot token counts (worker/recur_token_hist.h)
 * against a plain reference (dense count arrays and a first-seen order per slot), over a
 * random sequence of adds (fed and generated tokens, up to a few thousand distinct ids so
 * the index grows and a reset frees a large slot), resets, copies (also onto itself and
 * from an empty slot), and reserve-then-add. Checks after every operation that touches
 * a slot: its size, every id's counts, and its export (all, and generated only) in
 * first-seen order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_testutil.h"
#include "recur_token_hist.h"

static int failures;
#define CHECK(c) RECUR_CHECK(&failures, c)

enum { SLOTS = 5, VOCAB = 9000 };

typedef struct ref_slot {
    int32_t all[VOCAB], out[VOCAB];
    int32_t order[VOCAB], n;
} ref_slot_t;

static ref_slot_t ref[SLOTS];

static uint64_t rng(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void ref_add(int slot, int32_t tok, int output) {
    ref_slot_t *r = &ref[slot];
    if (!r->all[tok] && !r->out[tok]) r->order[r->n++] = tok;
    if (output) r->out[tok]++;
    else r->all[tok]++;
}

static int check_slot(const recur_token_hist_t *h, int slot) {
    const ref_slot_t *r = &ref[slot];
    int bad = recur_token_hist_size(h, slot) != r->n;
    static recur_sample_hist_t e[VOCAB];
    int32_t n = recur_token_hist_export(h, slot, 0, e);
    bad += n != r->n;
    for (int32_t j = 0; j < n && j < r->n; j++)
        bad += e[j].token != r->order[j] || e[j].n_all != r->all[r->order[j]] || e[j].n_out != r->out[r->order[j]];
    n = recur_token_hist_export(h, slot, 1, e);
    int32_t k = 0;
    for (int32_t j = 0; j < r->n; j++)
        if (r->out[r->order[j]] > 0) {
            bad += k >= n || e[k].token != r->order[j] || e[k].n_out != r->out[r->order[j]];
            k++;
        }
    bad += k != n;
    for (int32_t t = 0; t < VOCAB; t += 7) {
        int32_t a, o;
        recur_token_hist_get(h, slot, t, &a, &o);
        bad += a != r->all[t] || o != r->out[t];
    }
    return bad;
}

int main(void) {
    recur_token_hist_t *h = NULL;
    CHECK(recur_token_hist_create(0, &h) == RECUR_E_INVAL && h == NULL);
    CHECK(recur_token_hist_create(SLOTS, &h) == RECUR_OK && h);
    if (!h) return 1;
    uint64_t s = 7;
    int bad = 0, ops = 0;
    int32_t big = 0; /* the most ids a slot had */
    int32_t toks[64];
    for (int it = 0; it < 4000; it++, ops++) {
        const int slot = (int)(rng(&s) % SLOTS);
        int op = (int)(rng(&s) % 100);
        if (slot == 4 && op >= 70 && op < 88 && ref[4].n <= 4200) op = 0; /* let it grow first */
        if (op < 70) { /* fed tokens (a prefill chunk or a decode token), or a generated one */
            const int output = op >= 55;
            /* slot 4 gets a wide vocabulary (grows past the kept size), the others a narrow one */
            const int32_t span = slot == 4 ? VOCAB : 300, n = output ? 1 : 1 + (int32_t)(rng(&s) % 64);
            for (int32_t i = 0; i < n; i++) toks[i] = (int32_t)(rng(&s) % (uint64_t)span);
            CHECK(recur_token_hist_add(h, slot, toks, n, output) == RECUR_OK);
            for (int32_t i = 0; i < n; i++) ref_add(slot, toks[i], output);
        } else if (op < 78) {
            recur_token_hist_reset(h, slot);
            memset(&ref[slot], 0, sizeof ref[slot]);
        } else if (op < 88) {
            const int src = (int)(rng(&s) % SLOTS);
            CHECK(recur_token_hist_copy(h, slot, src) == RECUR_OK);
            if (src != slot) ref[slot] = ref[src];
        } else { /* reserve, then that many new ids */
            const int32_t extra = 1 + (int32_t)(rng(&s) % 8);
            CHECK(recur_token_hist_reserve(h, slot, extra) == RECUR_OK);
            for (int32_t i = 0; i < extra; i++) {
                const int32_t t = (int32_t)(rng(&s) % VOCAB);
                CHECK(recur_token_hist_add(h, slot, &t, 1, 1) == RECUR_OK);
                ref_add(slot, t, 1);
            }
        }
        bad += check_slot(h, slot);
        big = ref[slot].n > big ? ref[slot].n : big;
    }
    for (int i = 0; i < SLOTS; i++) bad += check_slot(h, i);
    /* then the wide slot: reset (its memory goes), reused, copied, copied back */
    recur_token_hist_reset(h, 4);
    memset(&ref[4], 0, sizeof ref[4]);
    bad += check_slot(h, 4);
    for (int32_t i = 0; i < 64; i++) toks[i] = 8000 + i;
    CHECK(recur_token_hist_add(h, 4, toks, 64, 0) == RECUR_OK);
    for (int32_t i = 0; i < 64; i++) ref_add(4, toks[i], 0);
    CHECK(recur_token_hist_copy(h, 0, 4) == RECUR_OK && recur_token_hist_copy(h, 4, 1) == RECUR_OK);
    ref[0] = ref[4];
    ref[4] = ref[1];
    for (int i = 0; i < SLOTS; i++) bad += check_slot(h, i);
    fprintf(stderr, "token history: %d operations, largest slot %d ids, %d mismatches\n", ops, big, bad);
    CHECK(bad == 0);
    CHECK(big > 4096); /* the wide slot grew past what a reset keeps */
    recur_token_hist_free(h);
    recur_token_hist_free(NULL);
    fprintf(stderr, "%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
