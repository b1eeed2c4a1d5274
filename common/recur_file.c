/* recur_file.c: see recur_file.h. */
#include "recur_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recur_log.h"

recur_status_t recur_file_read_small(const char *path, size_t max, const char *what, char **out, size_t *n_out) {
    recur_status_t st = RECUR_E_IO;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        recur_log_err("%s: cannot open the %s: %s", path, what, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        recur_log_err("%s: the %s is not a readable regular file", path, what);
        goto fail;
    }
    if (sb.st_size <= 0 || (uint64_t)sb.st_size > max) {
        recur_log_err("%s: the %s has %lld bytes, outside [1, %zu]", path, what, (long long)sb.st_size, max);
        st = RECUR_E_FORMAT;
        goto fail;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    buf = malloc(n + 1);
    if (!buf) {
        recur_log_err("%s: out of memory reading the %s (%zu bytes)", path, what, n);
        st = RECUR_E_NOMEM;
        goto fail;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            recur_log_err("%s: reading the %s failed after %zu of %zu bytes: %s", path, what, got, n,
                          r < 0 ? strerror(errno) : "unexpected end of file");
            goto fail;
        }
        got += (size_t)r;
    }
    buf[n] = '\0';
    close(fd);
    *out = buf;
    *n_out = n;
    return RECUR_OK;
fail:
    free(buf);
    if (fd >= 0) close(fd);
    return st;
}

int recur_name_is_safe(const char *s, size_t max_len) {
    if (!s || !*s || *s == '.') return 0;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        const char c = *p;
        if (n >= max_len) return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

const char *recur_name_printable(const char *s, size_t max_chars, char *out, size_t n) {
    if (!out || !n) return "";
    size_t o = 0, i = 0;
    for (; s && s[i] && i < max_chars && o + 1 < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        out[o++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
    }
    out[o] = '\0';
    if (s && s[i] && o + 4 < n) memcpy(out + o, "...", 4);
    return out;
}
