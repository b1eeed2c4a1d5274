/* fuzz_bpe_json.c: a Hugging Face tokenizer.json, loaded by recur_tokenizer_bpe_load.
 * Property: a refused file is RECUR_E_FORMAT or RECUR_E_UNSUPPORTED; an accepted one
 * tokenizes: encoding the input itself and a fixed mixed string gives ids in range whose
 * decode is their bytes in order, and every id has bytes (or none, if special). */
#include <stdlib.h>

#include "recur_fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static void encode_decode(const recur_tokenizer_t *t, const uint8_t *s, size_t n) {
    size_t n_ids = 0, n_text = 0;
    int32_t *ids = recur_fuzz_encode(t, s, n, &n_ids);
    free(recur_fuzz_decode(t, ids, n_ids, &n_text));
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    recur_tokenizer_t *t = (recur_tokenizer_t *)1;
    recur_status_t s = recur_tokenizer_bpe_load(recur_fuzz_file(data, n), &t);
    if (s != RECUR_OK) {
        RECUR_FUZZ_CHECK(t == NULL && (s == RECUR_E_FORMAT || s == RECUR_E_UNSUPPORTED));
        return 0;
    }
    RECUR_FUZZ_CHECK(recur_tokenizer_kind(t) == RECUR_TOKENIZER_BPE);
    int32_t v = recur_tokenizer_vocab_size(t);
    RECUR_FUZZ_CHECK(v >= 1 && recur_tokenizer_eos(t) >= -1 && recur_tokenizer_eos(t) < v);
    static const char mixed[] = "Hello, w\xc3\xb6rld \xe2\x9c\x93 e\xcc\x81 \xf0\x9f\x98\x80  <|endoftext|> \xff\x80 12345";
    encode_decode(t, (const uint8_t *)mixed, sizeof mixed - 1);
    encode_decode(t, data, n < 4096 ? n : 4096);
    for (int32_t id = 0; id < v; id++) {
        const char *b;
        size_t nb;
        RECUR_FUZZ_CHECK(recur_tokenizer_token_bytes(t, id, &b, &nb) == RECUR_OK);
    }
    recur_tokenizer_free(t);
    return 0;
}
