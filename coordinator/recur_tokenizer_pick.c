/* recur_tokenizer_pick.c: see recur_tokenizer_pick.h. */
#include "recur_tokenizer_pick.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recur_log.h"

#ifndef RECUR_DEFAULT_MODEL_DIR
#define RECUR_DEFAULT_MODEL_DIR "models"
#endif

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int recur_bundled_path(const char *file, char *out, size_t n) {
    const char *env = getenv("RECUR_MODELS_DIR");
    if (env && *env) {
        snprintf(out, n, "%s/%s", env, file);
        if (is_file(out)) return 0;
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(out, n, "%s/../../models/%s", exe, file);
        if (is_file(out)) return 0;
        snprintf(out, n, "%s/../share/recur/models/%s", exe, file);
        if (is_file(out)) return 0;
    }
    snprintf(out, n, "%s/%s", RECUR_DEFAULT_MODEL_DIR, file);
    return is_file(out) ? 0 : -1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static recur_status_t load_file(const char *path, recur_tokenizer_t **tok) {
    return ends_with(path, ".json") ? recur_tokenizer_bpe_load(path, tok) : recur_tokenizer_world_load(path, tok);
}

recur_status_t recur_tokenizer_pick(const char *tokenizer_path, const char *model_path, const char *arch,
                                    int32_t n_vocab, recur_tokenizer_t **tok) {
    *tok = NULL;
    if (tokenizer_path) return load_file(tokenizer_path, tok);
    if (n_vocab == 256) return recur_tokenizer_bytes_init(256, tok);
    char dir[PATH_MAX], path[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s", model_path ? model_path : ".");
    if (!is_dir(dir)) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
    }
    static const char *local[] = {"tokenizer.json", RECUR_WORLD_VOCAB};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, local[i]);
        if (is_file(path)) return load_file(path, tok);
    }
    if (arch && !strcmp(arch, "rwkv7") && n_vocab == 65536 &&
        recur_bundled_path(RECUR_WORLD_VOCAB, path, sizeof path) == 0)
        return recur_tokenizer_world_load(path, tok);
    if (arch && !strcmp(arch, "xlstm") && n_vocab >= 50277 &&
        recur_bundled_path(RECUR_NEOX_TOKENIZER, path, sizeof path) == 0)
        return recur_tokenizer_bpe_load(path, tok);
    recur_log_err("no tokenizer for a vocabulary of %d tokens: pass --tokenizer (a tokenizer.json or a World "
                  "vocab file)", n_vocab);
    return RECUR_E_INVAL;
}
