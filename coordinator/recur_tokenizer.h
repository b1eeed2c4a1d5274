/* recur_tokenizer.h: text <-> token ids.
 *
 * Kinds: RECUR_TOKENIZER_BYTES (id = byte value; the bundled tiny RWKV-7 model),
 * RECUR_TOKENIZER_WORLD (RWKV World: greedy longest-byte-match over a trie built from
 * rwkv_vocab_v20230424.txt; id 0 = <|endoftext|>, not in the file) and RECUR_TOKENIZER_BPE
 * (byte-level BPE from a Hugging Face tokenizer.json: the GPT-NeoX-20B tokenizer of xLSTM 7B).
 *
 * Text is bytes: encode takes any byte string (valid UTF-8 or not) and, for BYTES and WORLD,
 * decode(encode(s)) reproduces s exactly; BPE's exceptions are listed at its loader.
 * Ownership: a tokenizer owns its tables; encode/decode return
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
    RECUR_TOKENIZER_WORLD = 1,
    RECUR_TOKENIZER_BPE   = 2
} recur_tokenizer_kind_t;

typedef struct recur_tokenizer recur_tokenizer_t; /* opaque; defined in recur_tokenizer.c */

/* Byte-level: ids 0..255 are bytes 0..255; n_vocab >= 256 (ids >= 256 decode to nothing
 * and are never produced by encode). eos = -1 (none). */
recur_status_t recur_tokenizer_bytes_init(int32_t n_vocab, recur_tokenizer_t **out);
/* World vocab file; every line validated (id, Python str/bytes literal, byte length).
 * RECUR_E_FORMAT with the file and line number on a malformed line. eos = 0. */
recur_status_t recur_tokenizer_world_load(const char *vocab_path, recur_tokenizer_t **out);
/* Byte-level BPE from a Hugging Face tokenizer.json (GPT-NeoX-20B: 20B_tokenizer.json, or
 * xLSTM 7B's tokenizer.json). encode(s) equals HF `tokenizers` Tokenizer.encode(s).ids for any
 * valid UTF-8 s: added tokens written in the text (<|endoftext|> -> 0, runs of 2..24 spaces)
 * are matched first, then NFC, the GPT-2 split regex and the merges. Merges may be stored as
 * "a b" strings or ["a", "b"] pairs. vocab_size = max id + 1 over vocab and added tokens
 * (NeoX: 50277; xLSTM's 50304-row embedding has 27 more rows no text maps to); eos = the id of
 * "<|endoftext|>" (NeoX: 0), -1 if there is none.
 * Decode (unlike HF's default): special added tokens (special: true, e.g. <|endoftext|>,
 * <|padding|>) decode to nothing, as HF decode(ids, skip_special_tokens=True) does; other
 * added tokens decode to their content; vocab tokens to their bytes.
 * Round trip: decode(encode(s)) == s for valid UTF-8 s that NFC leaves unchanged and that
 * does not contain a special token's text. Invalid UTF-8: each invalid byte becomes the
 * one-byte token for that byte (the valid runs around it are encoded separately), so it round
 * trips too, except a byte the vocab has no token for (NeoX: 0xC0, 0xC1, 0xF5..0xFF, which no
 * UTF-8 text contains), which is encoded as U+FFFD.
 * Errors: RECUR_E_IO (unreadable), RECUR_E_FORMAT (malformed JSON, a merge naming a token not
 * in the vocab, duplicate or inconsistent ids), RECUR_E_UNSUPPORTED (well-formed, but not
 * what recur implements: a model other than BPE, dropout, byte_fallback, subword affixes, a
 * normalizer other than NFC, a pre-tokenizer other than ByteLevel(add_prefix_space=false,
 * use_regex=true), a decoder other than ByteLevel, a post-processor other than ByteLevel,
 * truncation/padding, added tokens with single_word/lstrip/rstrip). */
recur_status_t recur_tokenizer_bpe_load(const char *tokenizer_json_path, recur_tokenizer_t **out);
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
