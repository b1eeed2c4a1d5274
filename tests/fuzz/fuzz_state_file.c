/* fuzz_state_file.c: state files and the manifest of a split state (worker/recur_state_file).
 * The first input byte picks what the rest is:
 *   even: a state file's contents. Reading it with its own size gives the bytes back; with
 *         one byte more or less it is RECUR_E_FORMAT with a message, the buffer untouched.
 *   odd:  a manifest: byte 1 gives tp and pp (1..4 each, not both 1), the rest up to a NUL is the base
 *         file name ('/' and NUL cannot be in one), after it the arch name. The manifest
 *         written for them must be one JSON object naming the arch, the grid and the shard
 *         files recur_state_shard_path gives, in world-rank order; or, when a name is not
 *         UTF-8, RECUR_E_INVAL and no file. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recur_fuzz.h"
#include "recur_state_file.h"
#include "recur_utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static void state_file(const uint8_t *data, size_t n) {
    const char *path = recur_fuzz_file(data, n);
    uint8_t *buf = malloc(n + 1);
    RECUR_FUZZ_CHECK(buf != NULL);
    char msg[256];
    RECUR_FUZZ_CHECK(recur_state_file_read(path, buf, n, msg, sizeof msg) == RECUR_OK);
    RECUR_FUZZ_CHECK(n == 0 || memcmp(buf, data, n) == 0);
    memset(buf, 0xA5, n + 1);
    msg[0] = '\0';
    RECUR_FUZZ_CHECK(recur_state_file_read(path, buf, n + 1, msg, sizeof msg) == RECUR_E_FORMAT && msg[0]);
    if (n > 0) {
        msg[0] = '\0';
        RECUR_FUZZ_CHECK(recur_state_file_read(path, buf, n - 1, msg, sizeof msg) == RECUR_E_FORMAT && msg[0]);
    }
    for (size_t i = 0; i <= n; i++) RECUR_FUZZ_CHECK(buf[i] == 0xA5);
    free(buf);
}

static const char *json_str(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static double json_num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : -1.0;
}

static int utf8(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0, l; i < n; i += l)
        if (!(l = recur_utf8_len((const uint8_t *)s + i, n - i))) return 0;
    return 1;
}

static void manifest(const uint8_t *data, size_t n) {
    if (n < 2) return;
    int32_t tp = 1 + (data[0] & 3), pp = 1 + ((data[0] >> 2) & 3);
    if (tp * pp == 1) tp = 2;   /* one rank writes no manifest: its state file is the base itself */
    const uint8_t *name = data + 1, *nul = memchr(name, 0, n - 1);
    size_t name_n = nul ? (size_t)(nul - name) : n - 1;
    if (name_n == 0 || name_n > 200 || memchr(name, '/', name_n)) return;
    char file[256], arch[512];
    memcpy(file, name, name_n);
    file[name_n] = '\0';
    if (!strcmp(file, ".") || !strcmp(file, "..")) return;
    size_t arch_n = nul ? n - 1 - name_n - 1 : 0;
    if (arch_n >= sizeof arch) arch_n = sizeof arch - 1;
    if (arch_n) memcpy(arch, nul + 1, arch_n);
    arch[arch_n] = '\0';   /* a NUL inside ends it, as a C string does */

    char base[4400];
    snprintf(base, sizeof base, "%s/%s", recur_fuzz_tmpdir(), file);
    recur_model_info_t info;
    memset(&info, 0, sizeof info);
    info.arch_name = arch;
    info.n_layer = 24;
    info.n_head = 32;
    info.n_embd = 2048;
    info.state_dtype = RECUR_DTYPE_F32;
    char msg[256];
    recur_status_t s = recur_state_write_manifest(base, &info, tp, pp, msg, sizeof msg);
    if (!utf8(file) || !utf8(arch)) {   /* JSON text is UTF-8: refused, nothing written */
        RECUR_FUZZ_CHECK(s == RECUR_E_INVAL && msg[0] && access(base, F_OK) != 0);
        return;
    }
    RECUR_FUZZ_CHECK(s == RECUR_OK);
    char *text = NULL;
    {
        FILE *f = fopen(base, "rb");
        RECUR_FUZZ_CHECK(f != NULL);
        RECUR_FUZZ_CHECK(fseek(f, 0, SEEK_END) == 0);
        long len = ftell(f);
        RECUR_FUZZ_CHECK(len > 0 && fseek(f, 0, SEEK_SET) == 0);
        text = malloc((size_t)len + 1);
        RECUR_FUZZ_CHECK(text && fread(text, 1, (size_t)len, f) == (size_t)len);
        text[len] = '\0';
        fclose(f);
    }
    RECUR_FUZZ_CHECK(unlink(base) == 0);
    cJSON *root = cJSON_Parse(text);
    if (!root) fprintf(stderr, "the manifest is not JSON:\n%s\n", text);
    RECUR_FUZZ_CHECK(cJSON_IsObject(root));
    RECUR_FUZZ_CHECK(json_str(root, "format") && !strcmp(json_str(root, "format"), "recur-state-shards"));
    RECUR_FUZZ_CHECK(json_str(root, "arch") && !strcmp(json_str(root, "arch"), arch));
    RECUR_FUZZ_CHECK(json_num(root, "tp") == tp && json_num(root, "pp") == pp && json_num(root, "n_layer") == 24);
    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(root, "shards");
    RECUR_FUZZ_CHECK(cJSON_IsArray(shards) && cJSON_GetArraySize(shards) == tp * pp);
    for (int32_t r = 0; r < tp * pp; r++) {
        char want[4400];
        RECUR_FUZZ_CHECK(recur_state_shard_path(file, tp * pp, r / tp, r % tp, want, sizeof want) == RECUR_OK);
        const cJSON *x = cJSON_GetArrayItem(shards, r);
        RECUR_FUZZ_CHECK(cJSON_IsString(x) && !strcmp(x->valuestring, want));
    }
    cJSON_Delete(root);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    if (n == 0) return 0;
    if (data[0] & 1) manifest(data + 1, n - 1);
    else state_file(data + 1, n - 1);
    return 0;
}
