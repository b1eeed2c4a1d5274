/* recur_tokenizer_internal.h: the seam between recur_tokenizer.c (the public handle, the byte
 * kind, dispatch) and recur_tokenizer_world.c (the World vocab parser and trie). Not a public
 * header: nothing outside coordinator/recur_tokenizer*.c may include it.
 *
 * A recur_world_vocab_t is immutable after recur_world_vocab_load returns, so the read-only
 * functions below are safe to call from several threads at once. */
#ifndef RECUR_TOKENIZER_INTERNAL_H
#define RECUR_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "recur_status.h"

typedef struct recur_world_vocab recur_world_vocab_t; /* defined in recur_tokenizer_world.c */

/* Parses and validates the whole file, then builds the trie. *out = NULL on error.
 * RECUR_E_IO (cannot read), RECUR_E_FORMAT (malformed line, duplicate id or token, a byte
 * with no single-byte token), RECUR_E_NOMEM. Every error is logged with the file name and,
 * for a bad line, its 1-based line number. */
recur_status_t recur_world_vocab_load(const char *path, recur_world_vocab_t **out);
void           recur_world_vocab_free(recur_world_vocab_t *v); /* NULL is a no-op */

/* Max id + 1; id 0 (<|endoftext|>) is implicit and never in the file. */
int32_t recur_world_vocab_size(const recur_world_vocab_t *v);

/* Greedy longest match. ids must have room for n entries (each token covers >= 1 byte);
 * *n_ids gets the count. Cannot fail: load guarantees every byte has a token. */
void recur_world_vocab_encode(const recur_world_vocab_t *v, const uint8_t *s, size_t n,
                              int32_t *ids, size_t *n_ids);

/* The bytes of id, which the caller has checked is in [0, size). Id 0 and ids absent from a
 * file with gaps have no bytes (*n = 0, *p still a valid pointer). */
void recur_world_vocab_token(const recur_world_vocab_t *v, int32_t id, const uint8_t **p, size_t *n);

#endif
