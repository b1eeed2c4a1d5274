/* recur_token_hist.c: see recur_token_hist.h. */
#include "recur_token_hist.h"

#include <stdlib.h>
#include <string.h>

#include "recur_log.h"

/* Entries kept across a reset; a slot that held more gives its memory back. */
#define HIST_KEEP 4096

typedef struct slot_hist {
    recur_sample_hist_t *e;  /* [cap] entries, first n in use, in first-seen order */
    int32_t n, cap;
    int32_t *idx;            /* [mask + 1] positions in e, -1 empty; NULL before first use */
    uint32_t mask;
} slot_hist_t;

struct recur_token_hist {
    int32_t n_slots;
    slot_hist_t *s;
};

static uint32_t hash_(int32_t tok) { return (uint32_t)tok * 2654435761u; }

static slot_hist_t *slot_(const recur_token_hist_t *h, int32_t slot) {
    RECUR_ASSERT(h && slot >= 0 && slot < h->n_slots);
    return &h->s[slot];
}

recur_status_t recur_token_hist_create(int32_t n_slots, recur_token_hist_t **out) {
    *out = NULL;
    if (n_slots < 1) return RECUR_E_INVAL;
    recur_token_hist_t *h = calloc(1, sizeof *h);
    if (h) h->s = calloc((size_t)n_slots, sizeof *h->s);
    if (!h || !h->s) {
        free(h);
        recur_log_err("token history: out of memory for %d slots", n_slots);
        return RECUR_E_NOMEM;
    }
    h->n_slots = n_slots;
    *out = h;
    return RECUR_OK;
}

static void slot_free_(slot_hist_t *s) {
    free(s->e);
    free(s->idx);
    memset(s, 0, sizeof *s);
}

void recur_token_hist_free(recur_token_hist_t *h) {
    if (!h) return;
    for (int32_t i = 0; i < h->n_slots; i++) slot_free_(&h->s[i]);
    free(h->s);
    free(h);
}

void recur_token_hist_reset(recur_token_hist_t *h, int32_t slot) {
    slot_hist_t *s = slot_(h, slot);
    if (s->cap > HIST_KEEP) {
        slot_free_(s);
        return;
    }
    s->n = 0;
    if (s->idx) memset(s->idx, 0xff, ((size_t)s->mask + 1) * sizeof *s->idx);
}

/* Room for `need` entries: the entry array and an index at most half full. */
static recur_status_t grow_(slot_hist_t *s, int32_t need) {
    if (need <= s->cap && s->idx && (uint64_t)need * 2 <= (uint64_t)s->mask + 1) return RECUR_OK;
    if (need > INT32_MAX / 4) return RECUR_E_NOMEM;
    int32_t cap = s->cap ? s->cap : 64;
    while (cap < need) cap *= 2;
    if (cap != s->cap) {
        recur_sample_hist_t *e = realloc(s->e, (size_t)cap * sizeof *e);
        if (!e) return RECUR_E_NOMEM;
        s->e = e;
        s->cap = cap;
    }
    uint32_t n_idx = 2u * (uint32_t)cap;
    if (s->idx && s->mask + 1 == n_idx) return RECUR_OK;
    int32_t *idx = malloc((size_t)n_idx * sizeof *idx);
    if (!idx) return RECUR_E_NOMEM;
    memset(idx, 0xff, (size_t)n_idx * sizeof *idx);
    for (int32_t j = 0; j < s->n; j++) {
        uint32_t p = hash_(s->e[j].token) & (n_idx - 1);
        while (idx[p] >= 0) p = (p + 1) & (n_idx - 1);
        idx[p] = j;
    }
    free(s->idx);
    s->idx = idx;
    s->mask = n_idx - 1;
    return RECUR_OK;
}

/* The index position of tok, or of the empty place where it would go (idx non-NULL). */
static uint32_t find_(const slot_hist_t *s, int32_t tok) {
    uint32_t p = hash_(tok) & s->mask;
    while (s->idx[p] >= 0 && s->e[s->idx[p]].token != tok) p = (p + 1) & s->mask;
    return p;
}

recur_status_t recur_token_hist_reserve(recur_token_hist_t *h, int32_t slot, int32_t extra) {
    slot_hist_t *s = slot_(h, slot);
    if (extra < 0 || s->n > INT32_MAX - extra) return RECUR_E_NOMEM;
    return grow_(s, s->n + extra);
}

recur_status_t recur_token_hist_add(recur_token_hist_t *h, int32_t slot, const int32_t *tokens, int32_t n, int output) {
    slot_hist_t *s = slot_(h, slot);
    for (int32_t i = 0; i < n; i++) {
        const int32_t tok = tokens[i];
        RECUR_ASSERT(tok >= 0);
        if (grow_(s, s->n + 1) != RECUR_OK) {
            recur_log_err("token history: out of memory for %d ids in slot %d", s->n + 1, slot);
            return RECUR_E_NOMEM;
        }
        const uint32_t p = find_(s, tok);
        if (s->idx[p] < 0) {
            s->idx[p] = s->n;
            s->e[s->n++] = (recur_sample_hist_t){.token = tok};
        }
        recur_sample_hist_t *e = &s->e[s->idx[p]];
        int32_t *c = output ? &e->n_out : &e->n_all;
        if (*c < INT32_MAX) (*c)++;
    }
    return RECUR_OK;
}

recur_status_t recur_token_hist_copy(recur_token_hist_t *h, int32_t dst, int32_t src) {
    if (dst == src) return RECUR_OK;
    slot_hist_t *d = slot_(h, dst), *s = slot_(h, src);
    recur_token_hist_reset(h, dst);
    if (s->n == 0) return RECUR_OK;
    if (grow_(d, s->n) != RECUR_OK) {
        recur_log_err("token history: out of memory copying %d ids from slot %d to %d", s->n, src, dst);
        return RECUR_E_NOMEM;
    }
    memcpy(d->e, s->e, (size_t)s->n * sizeof *s->e);
    d->n = s->n;
    memset(d->idx, 0xff, ((size_t)d->mask + 1) * sizeof *d->idx);
    for (int32_t j = 0; j < d->n; j++) d->idx[find_(d, d->e[j].token)] = j;
    return RECUR_OK;
}

int32_t recur_token_hist_size(const recur_token_hist_t *h, int32_t slot) { return slot_(h, slot)->n; }

int32_t recur_token_hist_export(const recur_token_hist_t *h, int32_t slot, int outputs_only, recur_sample_hist_t *out) {
    const slot_hist_t *s = slot_(h, slot);
    if (!outputs_only) {
        if (s->n) memcpy(out, s->e, (size_t)s->n * sizeof *out);
        return s->n;
    }
    int32_t k = 0;
    for (int32_t j = 0; j < s->n; j++)
        if (s->e[j].n_out > 0) out[k++] = s->e[j];
    return k;
}

void recur_token_hist_get(const recur_token_hist_t *h, int32_t slot, int32_t token, int32_t *n_all, int32_t *n_out) {
    const slot_hist_t *s = slot_(h, slot);
    *n_all = *n_out = 0;
    if (!s->idx || token < 0) return;
    const uint32_t p = find_(s, token);
    if (s->idx[p] >= 0) *n_all = s->e[s->idx[p]].n_all, *n_out = s->e[s->idx[p]].n_out;
}
