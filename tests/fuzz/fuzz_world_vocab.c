/* fuzz_world_vocab.c: a World vocabulary file (lines "<id> <Python str or bytes literal>
 * <byte length>"), loaded by recur_tokenizer_world_load. Property: a refused file is
 * RECUR_E_FORMAT; an accepted one tokenizes: the input itself and a fixed mixed string
 * round-trip through encode/decode, and every id decodes. */
#include <stdlib.h>

#include "recur_fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static void round_trip(const recur_tokenizer_t *t, const uint8_t *s, size_t n) {
    size_t n_ids = 0, n_text = 0;
    int32_t *ids = recur_fuzz_encode(t, s, n, &n_ids);
    char *text = recur_fuzz_decode(t, ids, n_ids, &n_text);
    RECUR_FUZZ_CHECK(text && n_text == n && (n == 0 || memcmp(text, s, n) == 0));
    free(text);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    recur_tokenizer_t *t = (recur_tokenizer_t *)1;
    recur_status_t s = recur_tokenizer_world_load(recur_fuzz_file(data, n), &t);
    if (s != RECUR_OK) {
        RECUR_FUZZ_CHECK(t == NULL && s == RECUR_E_FORMAT);
        return 0;
    }
    RECUR_FUZZ_CHECK(recur_tokenizer_kind(t) == RECUR_TOKENIZER_WORLD && recur_tokenizer_eos(t) == 0);
    int32_t v = recur_tokenizer_vocab_size(t);
    RECUR_FUZZ_CHECK(v >= 257);
    static const char mixed[] = "Hello, w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80 \xff\xfe\x80 \n\t\x00 end";
    round_trip(t, (const uint8_t *)mixed, sizeof mixed - 1);
    round_trip(t, data, n);
    for (int32_t id = 0; id < v; id++) {
        const char *b;
        size_t nb;
        RECUR_FUZZ_CHECK(recur_tokenizer_token_bytes(t, id, &b, &nb) == RECUR_OK);
    }
    recur_tokenizer_free(t);
    return 0;
}
