/* fuzz_tokenizer_world.c: the RWKV World tokenizer with the bundled vocabulary
 * (models/rwkv_vocab_v20230424.txt) on arbitrary bytes. Properties: encode never fails and
 * decode(encode(s)) == s byte for byte (valid UTF-8 or not); decoding the input read as ids
 * gives the tokens' bytes in order, or RECUR_E_RANGE when one is outside the vocabulary. */
#include <stdlib.h>

#include "recur_fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static recur_tokenizer_t *tok_;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    if (!tok_) RECUR_FUZZ_CHECK(recur_tokenizer_world_load(recur_fuzz_source_path("models/rwkv_vocab_v20230424.txt"),
                                                           &tok_) == RECUR_OK);
    size_t n_ids = 0, n_text = 0;
    int32_t *ids = recur_fuzz_encode(tok_, data, n, &n_ids);
    RECUR_FUZZ_CHECK(n_ids <= n);
    for (size_t i = 0; i < n_ids; i++) RECUR_FUZZ_CHECK(ids[i] != 0);   /* <|endoftext|> is never text */
    char *text = recur_fuzz_decode(tok_, ids, n_ids, &n_text);
    RECUR_FUZZ_CHECK(text && n_text == n && (n == 0 || memcmp(text, data, n) == 0));
    free(text);
    free(ids);

    ids = recur_fuzz_ids(tok_, data, n, &n_ids);
    free(recur_fuzz_decode(tok_, ids, n_ids, &n_text));
    free(ids);
    return 0;
}
