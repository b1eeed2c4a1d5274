/* recur_state_file.c: see recur_state_file.h. */
#include "recur_state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recur_log.h"
#include "recur_utf8.h"

recur_status_t recur_state_shard_path(const char *base, int32_t world_size, int32_t pp_rank, int32_t tp_rank,
                                      char *out, size_t n) {
    int k = world_size <= 1 ? snprintf(out, n, "%s", base)
                            : snprintf(out, n, "%s.shard-%d-%d", base, (int)pp_rank, (int)tp_rank);
    if (k < 0 || (size_t)k >= n) {
        recur_log_err("state file name for %s is too long", base);
        return RECUR_E_RANGE;
    }
    return RECUR_OK;
}

/* fsync of the directory holding path, so that the rename itself survives a crash. A
 * failure here is reported: the data is written, but not known to be durable. */
static int fsync_dir_(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

recur_status_t recur_state_file_write(const char *path, const void *data, size_t n, char *msg, size_t msg_n) {
    char tmp[4096 + 64];
    int k = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (k < 0 || (size_t)k >= sizeof tmp) return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            unlink(tmp);
            return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot write: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot flush: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    if (fsync_dir_(path) != 0)
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: written, but its directory cannot be synced: %s", path,
                     strerror(errno));
    return RECUR_OK;
}

recur_status_t recur_state_file_read(const char *path, void *data, size_t n, char *msg, size_t msg_n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size != (uint64_t)n) {
        close(fd);
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT,
                     "%s: %lld bytes, but a state (shard) of this model and layout has %zu: saved from another "
                     "model, grid or state dtype", path, (long long)st.st_size, n);
    }
    char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t r = read(fd, p, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot read: %s", path, r < 0 ? strerror(e) : "short file");
        }
        p += r;
        left -= (size_t)r;
    }
    close(fd);
    return RECUR_OK;
}

/* s as the inside of a JSON string: '"', '\\' and control bytes escaped. Writes to out when
 * non-NULL; returns the length, or (size_t)-1 when s is not valid UTF-8 (JSON text must be). */
static size_t json_escape_(const char *s, char *out) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s), k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = recur_utf8_len(p + i, n - i);
        if (!l) return (size_t)-1;
        if (p[i] == '"' || p[i] == '\\') {
            if (out) out[k] = '\\', out[k + 1] = (char)p[i];
            k += 2;
        } else if (p[i] < 0x20) {
            if (out) memcpy(out + k, "\\u00", 4), out[k + 4] = hex[p[i] >> 4], out[k + 5] = hex[p[i] & 15];
            k += 6;
        } else {
            if (out) memcpy(out + k, p + i, l);
            k += l;
        }
        i += l;
    }
    return k;
}

recur_status_t recur_state_write_manifest(const char *base, const recur_model_info_t *info, int32_t tp, int32_t pp,
                                          char *msg, size_t msg_n) {
    const char *file = strrchr(base, '/');
    file = file ? file + 1 : base;
    /* names go into JSON strings escaped (a file may be called a"b, or have a newline) */
    size_t file_n = json_escape_(file, NULL), arch_n = json_escape_(info->arch_name, NULL);
    if (file_n == (size_t)-1 || arch_n == (size_t)-1)
        return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "%s: the state manifest is JSON, so the %s must be valid UTF-8", base,
                     file_n == (size_t)-1 ? "file name" : "arch name");
    char *file_esc = malloc(file_n + 1), *arch_esc = malloc(arch_n + 1);
    size_t cap = 512 + arch_n + (size_t)tp * (size_t)pp * (file_n + 32);
    char *json = malloc(cap);
    if (!json || !file_esc || !arch_esc) {
        free(json);
        free(file_esc);
        free(arch_esc);
        return recur_fail_msg(msg, msg_n, RECUR_E_NOMEM, "%s: out of memory for the state manifest", base);
    }
    file_esc[json_escape_(file, file_esc)] = '\0';
    arch_esc[json_escape_(info->arch_name, arch_esc)] = '\0';
    size_t k = (size_t)snprintf(json, cap,
                                "{\"format\": \"recur-state-shards\", \"version\": 1, \"arch\": \"%s\", "
                                "\"n_layer\": %d, \"n_head\": %d, \"n_embd\": %d, \"dtype\": \"%s\", \"tp\": %d, "
                                "\"pp\": %d, \"shards\": [",
                                arch_esc, info->n_layer, info->n_head, info->n_embd,
                                recur_dtype_name(info->state_dtype), (int)tp, (int)pp);
    for (int32_t r = 0; r < tp * pp && k < cap; r++)
        k += (size_t)snprintf(json + k, cap - k, "%s\"%s.shard-%d-%d\"", r ? ", " : "", file_esc, (int)(r / tp),
                              (int)(r % tp));
    if (k < cap) k += (size_t)snprintf(json + k, cap - k, "]}\n");
    recur_status_t s = k < cap ? recur_state_file_write(base, json, k, msg, msg_n)
                               : recur_fail_msg(msg, msg_n, RECUR_E_RANGE, "%s: state manifest too long", base);
    free(json);
    free(file_esc);
    free(arch_esc);
    return s;
}
