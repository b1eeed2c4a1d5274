/* fuzz_state_ckpt.c: session checkpoints (worker/recur_state_ckpt): the manifest a restarted
 * server reads from --session-dir and the export container a client sends with
 * SessionRequest IMPORT. The first input byte picks what the rest is:
 *   even: a manifest's JSON. When it parses, its JSON written back parses too and is written
 *         back the same (the manifest round-trips), and every shard file it names is a plain
 *         name in the manifest's directory (no '/', not "." or "..").
 *   odd:  an export blob. When its manifest parses, importing it under that manifest's own
 *         identity either refuses it (RECUR_E_FORMAT: sizes, CRCs) leaving no file behind, or
 *         writes a checkpoint that exports again and loads on its own layout's first shard.
 * Seeds (tests/fuzz/corpus/state_ckpt): a made-up 1-layer RWKV-7 of 2 heads, saved by one
 * rank and by a TP 2 group; the real tiny model's manifest is in the same format. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "recur_fuzz.h"
#include "recur_state_ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static void check_names(const recur_ckpt_manifest_t *m) {
    for (int32_t i = 0; i < m->n_shards; i++) {
        const char *f = m->shards[i].file;
        RECUR_FUZZ_CHECK(f[0] && !strchr(f, '/') && strcmp(f, ".") && strcmp(f, ".."));
    }
}

static void manifest(const uint8_t *data, size_t n) {
    recur_ckpt_manifest_t m = {0}, m2 = {0};
    char msg[512];
    if (recur_ckpt_manifest_parse((const char *)data, n, "fuzz", &m, msg, sizeof msg) != RECUR_OK) {
        recur_ckpt_manifest_free(&m);
        return;
    }
    check_names(&m);
    char *j = recur_ckpt_manifest_json(&m);
    RECUR_FUZZ_CHECK(j != NULL);
    RECUR_FUZZ_CHECK(recur_ckpt_manifest_parse(j, strlen(j), "fuzz (written back)", &m2, msg, sizeof msg) == RECUR_OK);
    char *j2 = recur_ckpt_manifest_json(&m2);
    RECUR_FUZZ_CHECK(j2 != NULL && strcmp(j, j2) == 0);
    free(j);
    free(j2);
    recur_ckpt_manifest_free(&m);
    recur_ckpt_manifest_free(&m2);
}

/* files in the fuzzing directory whose names start with prefix */
static int count_files(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int k = 0;
    for (struct dirent *e; (e = readdir(d));) k += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return k;
}

static void blob(const uint8_t *data, size_t n) {
    recur_ckpt_manifest_t m = {0};
    char msg[512];
    if (recur_ckpt_blob_manifest(data, n, &m, msg, sizeof msg) != RECUR_OK) {
        recur_ckpt_manifest_free(&m);
        return;
    }
    check_names(&m);
    const char *dir = recur_fuzz_tmpdir();
    char path[4096];
    snprintf(path, sizeof path, "%s/imp.ckpt", dir);
    recur_ckpt_meta_t meta = {.n_consumed = 1};
    snprintf(meta.session_id, sizeof meta.session_id, "fuzz");
    recur_status_t s = recur_ckpt_import(data, n, &m.id, path, 7, &meta, msg, sizeof msg);
    RECUR_FUZZ_CHECK(s == RECUR_OK || s == RECUR_E_FORMAT || s == RECUR_E_NOMEM);
    if (s != RECUR_OK) {
        RECUR_FUZZ_CHECK(msg[0]);
        RECUR_FUZZ_CHECK(count_files(dir, "imp.ckpt") == 0); /* refused: nothing written */
    } else {
        uint8_t *out = NULL;
        size_t out_n = 0;
        RECUR_FUZZ_CHECK(recur_ckpt_export(path, &out, &out_n, msg, sizeof msg) == RECUR_OK);
        recur_ckpt_manifest_t m2 = {0};
        RECUR_FUZZ_CHECK(recur_ckpt_blob_manifest(out, out_n, &m2, msg, sizeof msg) == RECUR_OK);
        RECUR_FUZZ_CHECK(m2.generation == 7 && strcmp(m2.meta.session_id, "fuzz") == 0);
        /* the first shard of the saved layout loads from it */
        const recur_ckpt_shard_t *mine = &m2.shards[0];
        void *buf = malloc(mine->bytes ? mine->bytes : 1);
        uint64_t got = 0;
        if (buf) RECUR_FUZZ_CHECK(recur_ckpt_load(path, &m.id, mine, buf, &got, msg, sizeof msg) == RECUR_OK);
        free(buf);
        free(out);
        recur_ckpt_manifest_free(&m2);
        RECUR_FUZZ_CHECK(recur_ckpt_remove(path, 0, 1) == RECUR_OK);
        RECUR_FUZZ_CHECK(count_files(dir, "imp.ckpt") == 0);
    }
    recur_ckpt_manifest_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    if (n < 1) return 0;
    if (data[0] & 1) blob(data + 1, n - 1);
    else manifest(data + 1, n - 1);
    return 0;
}
