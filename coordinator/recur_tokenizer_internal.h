/* recur_tokenizer_internal.h: the seam between recur_tokenizer.c (the public handle, the byte
 * kind, dispatch), recur_tokenizer_world.c (the World vocab parser and trie) and
 * recur_tokenizer_bpe.c (HF tokenizer.json byte-level BPE). Not a public header: nothing
 * outside coordinator/recur_tokenizer*.c may include it.
 *
 * A recur_world_vocab_t / recur_bpe_t is immutable after its load returns, so the read-only
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

typedef struct recur_bpe recur_bpe_t; /* defined in recur_tokenizer_bpe.c */

/* Parses a Hugging Face tokenizer.json and builds the tables. *out = NULL on error.
 * RECUR_E_IO (cannot read), RECUR_E_FORMAT (malformed JSON or inconsistent contents: a merge
 * or added-token id that does not match the vocab, duplicates), RECUR_E_UNSUPPORTED (a
 * pipeline component or option recur does not implement), RECUR_E_NOMEM. Every error is
 * logged with the file name and what is wrong. */
recur_status_t recur_bpe_load(const char *path, recur_bpe_t **out);
void           recur_bpe_free(recur_bpe_t *b); /* NULL is a no-op */

int32_t recur_bpe_size(const recur_bpe_t *b); /* max id + 1 over vocab and added tokens */
int32_t recur_bpe_eos(const recur_bpe_t *b);  /* id of "<|endoftext|>", -1 if none */

/* Encodes any bytes; *ids is malloc'ed (non-NULL on success, even for 0 ids). The count is
 * not bounded by n: NFC can lengthen text. RECUR_E_NOMEM, or RECUR_E_INVAL if PCRE2 fails. */
recur_status_t recur_bpe_encode(const recur_bpe_t *b, const uint8_t *s, size_t n, int32_t **ids, size_t *n_ids);

/* The bytes of id, which the caller has checked is in [0, size). Special added tokens and
 * ids nothing defines have none (*n = 0, *p still a valid pointer). */
void recur_bpe_token(const recur_bpe_t *b, int32_t id, const uint8_t **p, size_t *n);

#endif
