/* fuzz_xlstm_config.c: an xLSTM checkpoint's config.json, read by the model loader next to
 * the real weights of tests/fixtures/xlstm-tiny (D 128, 2 blocks, 2 heads, vocabulary 256).
 * The config is parsed, its numbers turned into dimensions, checked against the tensors,
 * and when the loader accepts it the model runs one 3-token prefill and one step. Property:
 * a refused config is RECUR_E_FORMAT or RECUR_E_UNSUPPORTED, an accepted one computes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recur_backend.h"
#include "recur_fuzz.h"
#include "recur_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static recur_model_files_t *files_;
static recur_backend_t *backend_;
static char config_[4300];

static void setup(void) {
    const char *dir = recur_fuzz_tmpdir();
    char link[4300];
    snprintf(link, sizeof link, "%s/model.safetensors", dir);
    RECUR_FUZZ_CHECK(symlink(recur_fuzz_source_path("tests/fixtures/xlstm-tiny/model.safetensors"), link) == 0);
    snprintf(config_, sizeof config_, "%s/config.json", dir);
    RECUR_FUZZ_CHECK(recur_model_files_open(link, &files_) == RECUR_OK);
    RECUR_FUZZ_CHECK(recur_backend_init("cpu", NULL, &backend_) == RECUR_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    if (!files_) setup();
    recur_fuzz_write(config_, data, n);
    recur_model_params_t p = recur_model_default_params();
    p.n_slots = 2;
    p.max_tokens = 4;
    p.use_graphs = 0;
    recur_model_t *m = (recur_model_t *)1;
    recur_status_t s = recur_model_load_files(files_, backend_, &p, &m);
    if (s != RECUR_OK) {
        RECUR_FUZZ_CHECK(m == NULL);
        if (s != RECUR_E_FORMAT && s != RECUR_E_UNSUPPORTED && s != RECUR_E_IO)
            fprintf(stderr, "config refused with %s\n", recur_status_str(s));
        RECUR_FUZZ_CHECK(s == RECUR_E_FORMAT || s == RECUR_E_UNSUPPORTED || s == RECUR_E_IO);
        return 0;
    }
    const recur_model_info_t *info = recur_model_info(m);
    RECUR_FUZZ_CHECK(info->arch == RECUR_ARCH_XLSTM && info->n_vocab == 256 && info->n_embd == 128 &&
                     info->n_layer == 2);
    RECUR_FUZZ_CHECK(recur_model_state_reset(m, 1) == RECUR_OK);
    int32_t tokens[3] = {1, 2, 3}, len3 = 3, len1 = 1, slot = 1;
    float *logits = malloc(256 * sizeof *logits);
    RECUR_FUZZ_CHECK(logits != NULL);
    recur_batch_t b = {1, tokens, &len3, &slot, RECUR_LOGITS_LAST};
    RECUR_FUZZ_CHECK(recur_model_forward(m, &b, logits) == RECUR_OK);
    b.seq_len = &len1;
    RECUR_FUZZ_CHECK(recur_model_forward(m, &b, logits) == RECUR_OK);
    free(logits);
    recur_model_free(m);
    return 0;
}
