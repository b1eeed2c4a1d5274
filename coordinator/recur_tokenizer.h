/* recur_tokenizer.h: text <-> token ids.
 *
 * Kinds: RECUR_TOKENIZER_BYTES (id = byte value; the bundled tiny RWKV-7 model) and
 * RECUR_TOKENIZER_WORLD (RWKV World: greedy longest-byte-match over a trie built from
 * rwkv_vocab_v20230424.txt; id 0 = <|endoftext|>, not in the file). Later kinds (the
 * GPT-NeoX BPE for xLSTM) plug into the same interface.
 *
 * Text is bytes: encode takes any byte string (valid UTF-8 or not) and decode(encode(s))
 * reproduces s exactly. Ownership: a tokenizer owns its tables; encode/decode return
 * malloc'ed arrays the caller frees with free(). Thread-safety: a tokenizer is immutable
 * after load, so concurrent encode/decode calls are fine. */
#ifndef RECUR_TOKENIZER_H
#define RECUR_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recur_tokenizer_kind {
    RECUR_TOKENIZER_BYTES = 0,
    RECUR_TOKENIZER_WORLD = 1
} recur_tokenizer_kind_t;

typedef struct recur_tokenizer recur_tokenizer_t; /* opaque; defined in recur_tokenizer.c */

/* Byte-level: ids 0..255 are bytes 0..255; n_vocab >= 256 (ids >= 256 decode to nothing
 * and are never produced by encode). eos = -1 (none). */
recur_status_t recur_tokenizer_bytes_init(int32_t n_vocab, recur_tokenizer_t **out);
/* World vocab file; every line validated (id, Python str/bytes literal, byte length).
 * RECUR_E_FORMAT with the file and line number on a malformed line. eos = 0. */
recur_status_t recur_tokenizer_world_load(const char *vocab_path, recur_tokenizer_t **out);
void           recur_tokenizer_free(recur_tokenizer_t *t); /* NULL is a no-op */

recur_tokenizer_kind_t recur_tokenizer_kind(const recur_tokenizer_t *t);
int32_t recur_tokenizer_vocab_size(const recur_tokenizer_t *t); /* max id + 1 */
int32_t recur_tokenizer_eos(const recur_tokenizer_t *t);        /* -1 if none */

/* *ids = malloc'ed array of *n_ids ids (non-NULL even when n_ids is 0). */
recur_status_t recur_tokenizer_encode(const recur_tokenizer_t *t, const char *text, size_t n_bytes,
                                      int32_t **ids, size_t *n_ids);
/* *text = malloc'ed, NUL-terminated after *n_bytes bytes. RECUR_E_RANGE on an id outside
 * [0, vocab_size). Special ids (e.g. <|endoftext|>) decode to nothing. */
recur_status_t recur_tokenizer_decode(const recur_tokenizer_t *t, const int32_t *ids, size_t n_ids,
                                      char **text, size_t *n_bytes);
/* The bytes of one token, pointing into the tokenizer's tables (valid until free);
 * for streaming output. RECUR_E_RANGE on a bad id. */
recur_status_t recur_tokenizer_token_bytes(const recur_tokenizer_t *t, int32_t id,
                                           const char **bytes, size_t *n_bytes);

#ifdef __cplusplus
}
#endif
#endif
