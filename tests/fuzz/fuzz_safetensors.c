/* fuzz_safetensors.c: one .safetensors file (8-byte length, JSON header, tiled data),
 * parsed from memory by recur_model_files_open_memory exactly as from disk. */
#include <stdlib.h>

#include "recur_fuzz_model_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    /* an exact-size copy: a read one byte past the end is a heap overflow for ASan */
    uint8_t *buf = malloc(n ? n : 1);
    RECUR_FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, n);
    recur_model_files_t *f = (recur_model_files_t *)1;
    recur_status_t s = recur_model_files_open_memory(buf, n, "fuzz/model.safetensors", &f);
    if (s == RECUR_OK) {
        /* the magic decides: a "ggmf" file named .safetensors is read as a .bin */
        RECUR_FUZZ_CHECK(recur_model_files_format(f) == RECUR_FORMAT_SAFETENSORS ||
                         (n >= 4 && memcmp(buf, "fmgg", 4) == 0));
        RECUR_FUZZ_CHECK(strcmp(recur_model_files_dir(f), "fuzz") == 0);
        recur_fuzz_check_files(f, buf, n);
        recur_model_files_free(f);
    } else {
        RECUR_FUZZ_CHECK(f == NULL);
        RECUR_FUZZ_CHECK(s == RECUR_E_FORMAT || s == RECUR_E_UNSUPPORTED);
    }
    free(buf);
    return 0;
}
