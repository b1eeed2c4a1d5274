/* fuzz_st_index.c: model.safetensors.index.json, the list of a sharded checkpoint's files.
 * The input is the index; it sits in a directory (made once) that also holds two real shards
 * (tensors a, b in model-00001-of-00002.safetensors and c in model-00002-of-00002.safetensors),
 * a third valid one (other.safetensors: tensor a again), a corrupt one (bad.safetensors) and
 * a directory named like a shard (dir.safetensors), so the fuzzer can reach the shard opening,
 * the cross-checks between the weight map and the shards, and the failure paths after some
 * shards are already mapped. */
#include <stdlib.h>
#include <sys/stat.h>

#include "recur_fuzz_model_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static char dir_[4200], index_[4300];

/* A safetensors file with tensors named names[i], F32, shape [i + 1]. */
static void write_shard(const char *name, const char *const *names, int n) {
    char hdr[1024], path[4400];
    int k = snprintf(hdr, sizeof hdr, "{");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = 4 * (size_t)(i + 1);
        k += snprintf(hdr + k, sizeof hdr - (size_t)k, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}",
                      i ? "," : "", names[i], i + 1, off, off + bytes);
        off += bytes;
    }
    k += snprintf(hdr + k, sizeof hdr - (size_t)k, "}");
    uint8_t buf[2048];
    for (int b = 0; b < 8; b++) buf[b] = (uint8_t)((uint64_t)k >> (8 * b));
    memcpy(buf + 8, hdr, (size_t)k);
    for (size_t i = 0; i < off; i++) buf[8 + k + i] = (uint8_t)(0x3f * (i % 4 == 3));   /* 1.0f-ish bytes */
    snprintf(path, sizeof path, "%s/%s", dir_, name);
    recur_fuzz_write(path, buf, 8 + (size_t)k + off);
}

static void setup(void) {
    snprintf(dir_, sizeof dir_, "%s", recur_fuzz_tmpdir());
    static const char *const s1[] = {"a", "b"}, *const s2[] = {"c"}, *const s3[] = {"a"};
    write_shard("model-00001-of-00002.safetensors", s1, 2);
    write_shard("model-00002-of-00002.safetensors", s2, 1);
    write_shard("other.safetensors", s3, 1);
    char path[4400];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir_);
    recur_fuzz_write(path, "\x10\0\0\0\0\0\0\0{\"x\":", 13);
    snprintf(path, sizeof path, "%s/dir.safetensors", dir_);
    RECUR_FUZZ_CHECK(mkdir(path, 0755) == 0);
    snprintf(index_, sizeof index_, "%s/model.safetensors.index.json", dir_);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    recur_fuzz_init();
    if (!index_[0]) setup();
    recur_fuzz_write(index_, data, n);
    recur_model_files_t *f = (recur_model_files_t *)1;
    recur_status_t s = recur_model_files_open(index_, &f);
    if (s == RECUR_OK) {
        RECUR_FUZZ_CHECK(recur_model_files_format(f) == RECUR_FORMAT_SAFETENSORS);
        RECUR_FUZZ_CHECK(strcmp(recur_model_files_dir(f), dir_) == 0);
        RECUR_FUZZ_CHECK(recur_model_files_n_files(f) >= 1 && recur_model_files_n_files(f) <= 3);
        recur_fuzz_check_files(f, NULL, 0);
        recur_model_files_free(f);
    } else {
        RECUR_FUZZ_CHECK(f == NULL);
        RECUR_FUZZ_CHECK(s == RECUR_E_FORMAT || s == RECUR_E_UNSUPPORTED || s == RECUR_E_IO);
    }
    return 0;
}
