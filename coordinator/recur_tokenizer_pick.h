/* recur_tokenizer_pick.h: which tokenizer goes with a model, shared by `recur generate`
 * (which has the model loaded) and the coordinator of `recur serve` (which only knows what
 * the worker's Hello says: arch and n_vocab), so both tokenize a prompt the same way.
 *
 * Ownership: *out is the caller's (recur_tokenizer_free). Thread-safety: no shared state. */
#ifndef RECUR_TOKENIZER_PICK_H
#define RECUR_TOKENIZER_PICK_H

#include <stddef.h>
#include <stdint.h>

#include "recur_status.h"
#include "recur_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECUR_BUNDLED_MODEL "tiny-rwkv-7v0-834K-FP32.bin"
#define RECUR_WORLD_VOCAB "rwkv_vocab_v20230424.txt"
#define RECUR_NEOX_TOKENIZER "20B_tokenizer.json" /* GPT-NeoX-20B BPE: xLSTM 7B's tokenizer */

/* Where a bundled file lives: $RECUR_MODELS_DIR, then <exe>/../../models (a build tree),
 * <exe>/../share/recur/models (an install), then the source tree this was built from.
 * 0 with the path in out, -1 when none exists. */
int recur_bundled_path(const char *file, char *out, size_t n);

/* tokenizer_path when given (a tokenizer.json is BPE, anything else a World vocab); else
 * byte-level for a 256-token model (no other tokenizer fits it); else a tokenizer.json or
 * World vocab in the model's directory (model_path may be a file or a directory); else the
 * bundled World vocab for a 65,536-token rwkv7 or the bundled GPT-NeoX tokenizer for an
 * xlstm of >= 50,277 tokens. RECUR_E_INVAL (logged) when nothing fits; the loaders' errors. */
recur_status_t recur_tokenizer_pick(const char *tokenizer_path, const char *model_path, const char *arch,
                                    int32_t n_vocab, recur_tokenizer_t **out);

#ifdef __cplusplus
}
#endif
#endif
