/* test_state_file.c: worker/recur_state_file (state files and the manifest of a split state).
 *   - shard names: the base itself for one rank, "<base>.shard-<pp>-<tp>" otherwise, and a
 *     name that does not fit is RECUR_E_RANGE;
 *   - write then read gives the bytes back; reading with another size is RECUR_E_FORMAT with
 *     a message and the caller's buffer untouched; a missing file is RECUR_E_IO;
 *   - the manifest is one JSON object naming the arch, the grid and the shard files in
 *     world-rank order, also for file names holding '"', '\' and control bytes (fuzz_state_file
 *     found them written unescaped: not JSON); a name that is not UTF-8 is RECUR_E_INVAL and
 *     writes nothing. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "recur_log.h"
#include "recur_state_file.h"
#include "recur_testutil.h"

static int failures;
#define CHECK(cond) RECUR_CHECK(&failures, cond)

static void test_shard_path(void) {
    char out[64];
    CHECK(recur_state_shard_path("a/s", 1, 0, 0, out, sizeof out) == RECUR_OK && !strcmp(out, "a/s"));
    CHECK(recur_state_shard_path("a/s", 4, 1, 0, out, sizeof out) == RECUR_OK && !strcmp(out, "a/s.shard-1-0"));
    CHECK(recur_state_shard_path("a/s", 4, 1, 0, out, 8) == RECUR_E_RANGE);
}

static void test_read_write(const char *tmp) {
    char path[4200], msg[256];
    snprintf(path, sizeof path, "%s/slot.state", tmp);
    uint8_t data[1000], back[1001];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7 + 3);
    CHECK(recur_state_file_write(path, data, sizeof data, msg, sizeof msg) == RECUR_OK);
    CHECK(recur_state_file_read(path, back, sizeof data, msg, sizeof msg) == RECUR_OK);
    CHECK(memcmp(back, data, sizeof data) == 0);
    for (int d = -1; d <= 1; d += 2) {
        memset(back, 0x5a, sizeof back);
        msg[0] = '\0';
        CHECK(recur_state_file_read(path, back, sizeof data + (size_t)d, msg, sizeof msg) == RECUR_E_FORMAT);
        CHECK(strstr(msg, "1000 bytes") != NULL);
        int untouched = 1;
        for (size_t i = 0; i < sizeof back; i++) untouched &= back[i] == 0x5a;
        CHECK(untouched);
    }
    snprintf(path, sizeof path, "%s/missing.state", tmp);
    CHECK(recur_state_file_read(path, back, 1, msg, sizeof msg) == RECUR_E_IO && strstr(msg, "missing.state"));
}

/* Writes the manifest of `file` in tmp and checks it parses with the right contents. */
static void check_manifest(const char *tmp, const char *file, const char *arch, int32_t tp, int32_t pp) {
    char base[4200], msg[256] = "";
    snprintf(base, sizeof base, "%s/%s", tmp, file);
    recur_model_info_t info;
    memset(&info, 0, sizeof info);
    info.arch_name = arch;
    info.n_layer = 3, info.n_head = 4, info.n_embd = 64, info.state_dtype = RECUR_DTYPE_BF16;
    recur_status_t s = recur_state_write_manifest(base, &info, tp, pp, msg, sizeof msg);
    CHECK(s == RECUR_OK);
    if (s != RECUR_OK) {
        fprintf(stderr, "manifest of '%s': %s\n", file, msg);
        return;
    }
    void *text = NULL;
    size_t n = 0;
    CHECK(recur_read_file(base, &text, &n) == 0);
    cJSON *root = text ? cJSON_ParseWithLength(text, n) : NULL;
    if (!cJSON_IsObject(root)) fprintf(stderr, "manifest of '%s' is not JSON:\n%.*s\n", file, (int)n, (char *)text);
    CHECK(cJSON_IsObject(root));
    if (cJSON_IsObject(root)) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "arch");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "dtype");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tp"), *p = cJSON_GetObjectItemCaseSensitive(root, "pp");
        CHECK(cJSON_IsString(a) && !strcmp(a->valuestring, arch));
        CHECK(cJSON_IsString(d) && !strcmp(d->valuestring, "bf16"));
        CHECK(cJSON_IsNumber(t) && t->valueint == tp && cJSON_IsNumber(p) && p->valueint == pp);
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(root, "shards");
        CHECK(cJSON_IsArray(sh) && cJSON_GetArraySize(sh) == tp * pp);
        for (int32_t r = 0; r < tp * pp; r++) {
            char want[4200];
            CHECK(recur_state_shard_path(file, tp * pp, r / tp, r % tp, want, sizeof want) == RECUR_OK);
            const cJSON *x = cJSON_GetArrayItem(sh, r);
            CHECK(cJSON_IsString(x) && !strcmp(x->valuestring, want));
        }
    }
    cJSON_Delete(root);
    free(text);
    remove(base);
}

static void test_manifest(const char *tmp) {
    check_manifest(tmp, "session.state", "rwkv7", 2, 1);
    check_manifest(tmp, "s", "xlstm", 2, 2);
    check_manifest(tmp, "a\"b\\c", "rwkv7", 1, 2);                    /* quote, backslash */
    check_manifest(tmp, "new\nline\ttab\x01", "x\"y", 4, 1);          /* control bytes */
    check_manifest(tmp, "gr\xc3\xbc\xc3\x9f \xf0\x9f\x98\x80", "rwkv7", 2, 1); /* UTF-8 as is */
    /* not UTF-8: refused, with a message, and no file */
    char base[4200], msg[256] = "";
    snprintf(base, sizeof base, "%s/bad\xff.state", tmp);
    recur_model_info_t info;
    memset(&info, 0, sizeof info);
    info.arch_name = "rwkv7";
    CHECK(recur_state_write_manifest(base, &info, 2, 1, msg, sizeof msg) == RECUR_E_INVAL && strstr(msg, "UTF-8"));
    struct stat st;
    CHECK(stat(base, &st) != 0);
}

int main(void) {
    char tmp[4096];
    if (recur_make_temp_dir(tmp, sizeof tmp) != 0) return 1;
    recur_log_set_level(RECUR_LOG_ERROR);
    test_shard_path();
    test_read_write(tmp);
    test_manifest(tmp);
    recur_rm_rf(tmp);
    fprintf(stderr, "test_state_file: %s (%d failed checks)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
