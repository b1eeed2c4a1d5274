/* fuzz_tokenizer_bpe.c: the byte-level BPE tokenizer with the bundled GPT-NeoX-20B
 * tokenizer.json (models/20B_tokenizer.json) on arbitrary bytes. Properties: encode never
 * fails; decoding the input read as ids gives the tokens' bytes in order, or RECUR_E_RANGE;
 * and decode(encode(s)) == s whenever recur_tokenizer.h promises it: every valid UTF-8 run
 * of s is unchanged by NFC, s holds no special token's text ("<|" is refused outright: cheap
 * and safe) and no byte the vocabulary lacks (0xC0, 0xC1, 0xF5..0xFF). */
#include <stdlib.h>
#include <utf8proc.h>

#include "recur_fuzz_tokenizer.h"
#include "recur_utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static recur_tokenizer_t *tok_;

/* The run splitting of recur_bpe_encode: maximal valid UTF-8 runs between invalid bytes. */
static int nfc_stable(const uint8_t *s, size_t n) {
    size_t start = 0;
    for (size_t i = 0; i <= n;) {
        size_t l = i < n ? recur_utf8_len(s + i, n - i) : 0;
        if (l) {
            i += l;
            continue;
        }
        if (i > start) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m =
                utf8proc_map(s + start, (utf8proc_ssize_t)(i - start), &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            int same = m == (utf8proc_ssize_t)(i - start) && memcmp(nfc, s + start, (size_t)m) == 0;
            free(nfc);
            if (!same) return 0;
        }
        start = ++i;
    }
    return 1;
}

static int round_trips(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0xC0 || s[i] == 0xC1 || s[i] >= 0xF5) return 0;
        if (s[i] == '<' && i + 1 < n && s[i + 1] == '|') return 0;
    }
    return nfc_stable(s, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    if (!tok_) RECUR_FUZZ_CHECK(recur_tokenizer_bpe_load(recur_fuzz_source_path("models/20B_tokenizer.json"), &tok_) ==
                                RECUR_OK);
    size_t n_ids = 0, n_text = 0;
    int32_t *ids = recur_fuzz_encode(tok_, data, n, &n_ids);
    char *text = recur_fuzz_decode(tok_, ids, n_ids, &n_text);
    RECUR_FUZZ_CHECK(text != NULL);
    if (round_trips(data, n)) RECUR_FUZZ_CHECK(n_text == n && (n == 0 || memcmp(text, data, n) == 0));
    free(text);
    free(ids);

    ids = recur_fuzz_ids(tok_, data, n, &n_ids);
    free(recur_fuzz_decode(tok_, ids, n_ids, &n_text));
    free(ids);
    return 0;
}
