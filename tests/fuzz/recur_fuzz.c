/* recur_fuzz.c: see recur_fuzz.h. */
#define _GNU_SOURCE /* memfd_create */
#include "recur_fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "recur_log.h"

void recur_fuzz_init(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *lvl = getenv("RECUR_FUZZ_LOG");
    int l = lvl ? recur_log_level_parse(lvl) : -1;
    recur_log_set_level(l >= 0 ? (recur_log_level_t)l : RECUR_LOG_NONE);
}

const char *recur_fuzz_file(const uint8_t *data, size_t n) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("recur-fuzz", MFD_CLOEXEC);
        RECUR_FUZZ_CHECK(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    RECUR_FUZZ_CHECK(ftruncate(fd, 0) == 0);
    for (size_t off = 0; off < n;) {
        ssize_t w = pwrite(fd, data + off, n - off, (off_t)off);
        RECUR_FUZZ_CHECK(w > 0);
        off += (size_t)w;
    }
    return path;
}

void recur_fuzz_write(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    RECUR_FUZZ_CHECK(fd >= 0);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, (const char *)data + off, n - off);
        RECUR_FUZZ_CHECK(w > 0);
        off += (size_t)w;
    }
    RECUR_FUZZ_CHECK(close(fd) == 0);
}

static char tmpdir_[4096];

static void tmpdir_remove_(void) {
    DIR *d = opendir(tmpdir_);
    if (!d) return;
    char p[8192];
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir_, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir_);
}

const char *recur_fuzz_tmpdir(void) {
    if (tmpdir_[0]) return tmpdir_;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir_, sizeof tmpdir_, "%s/recur-fuzz-XXXXXX", t && *t ? t : "/tmp");
    RECUR_FUZZ_CHECK(mkdtemp(tmpdir_) != NULL);
    atexit(tmpdir_remove_);
    return tmpdir_;
}

const char *recur_fuzz_source_path(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", RECUR_SOURCE_DIR, rel);
    return buf;
}
