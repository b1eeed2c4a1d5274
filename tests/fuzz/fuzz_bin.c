/* fuzz_bin.c: one rwkv.cpp .bin file (file header, then tensor headers and data), parsed
 * from memory by recur_model_files_open_memory exactly as from disk. A parsed file must
 * agree with its header: emb.weight and head.weight [n_vocab, n_embd], layers 0..n_layer-1. */
#include <stdlib.h>

#include "recur_fuzz_model_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    uint8_t *buf = malloc(n ? n : 1);
    RECUR_FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, n);
    recur_model_files_t *f = (recur_model_files_t *)1;
    recur_status_t s = recur_model_files_open_memory(buf, n, "model.bin", &f);
    if (s == RECUR_OK) {
        RECUR_FUZZ_CHECK(recur_model_files_format(f) == RECUR_FORMAT_RWKVCPP_BIN);
        recur_bin_header_t h;
        RECUR_FUZZ_CHECK(recur_model_files_bin_header(f, &h) == RECUR_OK);
        RECUR_FUZZ_CHECK(h.n_vocab > 0 && h.n_embd > 0 && h.n_layer > 0 && (h.data_type == 0 || h.data_type == 1));
        const char *need[] = {"emb.weight", "head.weight"};
        for (int k = 0; k < 2; k++) {
            const recur_tensor_info_t *t = recur_model_files_find(f, need[k]);
            RECUR_FUZZ_CHECK(t && t->n_dims == 2 && t->shape[0] == h.n_vocab && t->shape[1] == h.n_embd);
        }
        RECUR_FUZZ_CHECK(strcmp(recur_model_files_dir(f), ".") == 0);
        recur_fuzz_check_files(f, buf, n);
        recur_model_files_free(f);
    } else {
        RECUR_FUZZ_CHECK(f == NULL);
        RECUR_FUZZ_CHECK(s == RECUR_E_FORMAT || s == RECUR_E_UNSUPPORTED);
    }
    free(buf);
    return 0;
}
