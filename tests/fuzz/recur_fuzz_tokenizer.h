/* recur_fuzz_tokenizer.h: the checks the tokenizer targets share. */
#ifndef RECUR_FUZZ_TOKENIZER_H
#define RECUR_FUZZ_TOKENIZER_H

#include <string.h>

#include "recur_fuzz.h"
#include "recur_tokenizer.h"

/* Encodes data[0..n): every id is in [0, vocab) and has bytes or is special; returns the ids
 * (caller frees) and *n_ids. */
static inline int32_t *recur_fuzz_encode(const recur_tokenizer_t *t, const uint8_t *data, size_t n, size_t *n_ids) {
    int32_t *ids = NULL;
    recur_status_t s = recur_tokenizer_encode(t, (const char *)data, n, &ids, n_ids);
    if (s != RECUR_OK) fprintf(stderr, "encode of %zu bytes failed: %s\n", n, recur_status_str(s));
    RECUR_FUZZ_CHECK(s == RECUR_OK && ids != NULL);
    RECUR_FUZZ_CHECK(n == 0 || *n_ids > 0);
    for (size_t i = 0; i < *n_ids; i++) RECUR_FUZZ_CHECK(ids[i] >= 0 && ids[i] < recur_tokenizer_vocab_size(t));
    return ids;
}

/* Decodes ids that may be out of range. In range: RECUR_OK, and the text is the tokens'
 * bytes one after the other (what a client streaming token by token sees). Otherwise
 * RECUR_E_RANGE and no text. Returns the text (caller frees; NULL after RECUR_E_RANGE). */
static inline char *recur_fuzz_decode(const recur_tokenizer_t *t, const int32_t *ids, size_t n_ids, size_t *n_out) {
    int32_t v = recur_tokenizer_vocab_size(t);
    int in_range = 1;
    size_t want = 0;
    for (size_t i = 0; i < n_ids; i++) {
        const char *b = NULL;
        size_t nb = 0;
        recur_status_t s = recur_tokenizer_token_bytes(t, ids[i], &b, &nb);
        if (ids[i] < 0 || ids[i] >= v) {
            RECUR_FUZZ_CHECK(s == RECUR_E_RANGE);
            in_range = 0;
        } else {
            RECUR_FUZZ_CHECK(s == RECUR_OK && b != NULL);
            want += nb;
        }
    }
    char *text = (char *)1;
    *n_out = (size_t)-1;
    recur_status_t s = recur_tokenizer_decode(t, ids, n_ids, &text, n_out);
    if (!in_range) {
        RECUR_FUZZ_CHECK(s == RECUR_E_RANGE && text == NULL);
        return NULL;
    }
    RECUR_FUZZ_CHECK(s == RECUR_OK && text != NULL && *n_out == want && text[want] == '\0');
    size_t off = 0;
    for (size_t i = 0; i < n_ids; i++) {
        const char *b = NULL;
        size_t nb = 0;
        RECUR_FUZZ_CHECK(recur_tokenizer_token_bytes(t, ids[i], &b, &nb) == RECUR_OK);
        RECUR_FUZZ_CHECK(nb == 0 || memcmp(text + off, b, nb) == 0);
        off += nb;
    }
    return text;
}

/* ids from the input: little-endian 16-bit values mapped onto [-1, vocab] (both ends out of
 * range), so the decode target reaches every token and the range check. */
static inline int32_t *recur_fuzz_ids(const recur_tokenizer_t *t, const uint8_t *data, size_t n, size_t *n_ids) {
    int32_t v = recur_tokenizer_vocab_size(t);
    *n_ids = n / 2;
    int32_t *ids = malloc((*n_ids ? *n_ids : 1) * sizeof *ids);
    RECUR_FUZZ_CHECK(ids != NULL);
    for (size_t i = 0; i < *n_ids; i++) {
        uint32_t u = (uint32_t)data[2 * i] | (uint32_t)data[2 * i + 1] << 8;
        ids[i] = (int32_t)(u % (uint32_t)(v + 2)) - 1;
    }
    return ids;
}

#endif
