/* recur_curve.c: CURVE key files, keygen and the ZAP handler (contract in recur_curve.h). */
#include "recur_curve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "recur_log.h"

#define KEY_FILE_MAX 65536   /* a key file is a few lines; anything larger is not one */
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

int recur_curve_available(void) { return zmq_has("curve") == 1; }

static recur_status_t need_curve_(char *msg, size_t msg_n) {
    if (recur_curve_available()) return RECUR_OK;
    return recur_fail_msg(msg, msg_n, RECUR_E_UNSUPPORTED,
                 "this libzmq was built without CURVE (zmq_has(\"curve\") is 0): install one built with libsodium "
                 "(Debian's libzmq5 is), or run without --curve-keys");
}

/* ------------------------------------------------------------------ key files */

/* The keys in file path (one Z85 key per line; blank lines and '#' comments skipped) into
 * keys[0..*n), at most max; each checked to decode to 32 bytes. */
static recur_status_t read_keys_(const char *path, int secret, char (*keys)[RECUR_CURVE_Z85_LEN + 1], int32_t max,
                                 int32_t *n, char *msg, size_t msg_n) {
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot open: %s (recur keygen --out DIR makes the key files)", path,
                     strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > KEY_FILE_MAX) {
        close(fd);
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: not a key file (not a regular file, or over %d bytes)", path,
                     KEY_FILE_MAX);
    }
    /* a readable-by-all secret is a leak waiting to happen; Kubernetes Secret volumes are
     * 0644 unless told (defaultMode), so warn rather than refuse */
    if (secret && (st.st_mode & 0007))
        recur_log_warn("%s: the secret key is readable by every user (mode %04o): chmod 600 it (Kubernetes: "
                       "defaultMode 0400 on the Secret volume)", path, (unsigned)(st.st_mode & 07777));
    char buf[KEY_FILE_MAX + 1];
    size_t got = 0;
    for (ssize_t r; got < sizeof buf - 1 && (r = read(fd, buf + got, sizeof buf - 1 - got)) != 0;) {
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot read: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    int line = 0;
    for (char *p = buf, *next; p && *p; p = next) {
        line++;
        next = strchr(p, '\n');
        if (next) *next++ = '\0';
        while (*p == ' ' || *p == '\t') p++;
        size_t l = strlen(p);
        while (l && (p[l - 1] == ' ' || p[l - 1] == '\t' || p[l - 1] == '\r')) p[--l] = '\0';
        if (!l || p[0] == '#') continue;
        uint8_t bin[32];
        if (l != RECUR_CURVE_Z85_LEN || !zmq_z85_decode(bin, p))
            return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s line %d: not a CURVE key (expected %d characters of Z85 "
                         "text, as recur keygen writes)", path, line, RECUR_CURVE_Z85_LEN);
        if (*n == max)
            return secret ? recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: a secret key file holds one key", path)
                          : recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: more than %d keys", path, (int)max);
        memcpy(keys[*n], p, RECUR_CURVE_Z85_LEN + 1);
        (*n)++;
    }
    if (*n == 0) return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: no key in the file", path);
    if (secret && *n != 1) return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: a secret key file holds one key", path);
    return RECUR_OK;
}

static recur_status_t key_path_(const char *dir, const char *name, char *out, size_t n, char *msg, size_t msg_n) {
    if (!dir || !*dir) return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "no key directory given");
    int w = snprintf(out, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n) return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "%s: key directory path too long", dir);
    return RECUR_OK;
}

/* secret file -> k->secret_key and k->public_key */
static recur_status_t load_secret_(const char *dir, const char *name, recur_curve_keys_t *k, char *msg,
                                   size_t msg_n) {
    char path[4096];
    char key[1][RECUR_CURVE_Z85_LEN + 1];
    int32_t n = 0;
    RECUR_TRY(key_path_(dir, name, path, sizeof path, msg, msg_n));
    RECUR_TRY(read_keys_(path, 1, key, 1, &n, msg, msg_n));
    memcpy(k->secret_key, key[0], sizeof k->secret_key);
    if (zmq_curve_public(k->public_key, k->secret_key) != 0)
        return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "%s: cannot derive the public key: %s", path,
                     zmq_strerror(zmq_errno()));
    return RECUR_OK;
}

recur_status_t recur_curve_load_server(const char *dir, recur_curve_keys_t *k, char *msg, size_t msg_n) {
    memset(k, 0, sizeof *k);
    RECUR_TRY(need_curve_(msg, msg_n));
    RECUR_TRY(load_secret_(dir, "server.key", k, msg, msg_n));
    char path[4096];
    RECUR_TRY(key_path_(dir, "worker.pub", path, sizeof path, msg, msg_n));
    return read_keys_(path, 0, k->allowed, RECUR_CURVE_MAX_ALLOWED, &k->n_allowed, msg, msg_n);
}

recur_status_t recur_curve_load_client(const char *dir, recur_curve_keys_t *k, char *msg, size_t msg_n) {
    memset(k, 0, sizeof *k);
    RECUR_TRY(need_curve_(msg, msg_n));
    RECUR_TRY(load_secret_(dir, "worker.key", k, msg, msg_n));
    char path[4096];
    char key[1][RECUR_CURVE_Z85_LEN + 1];
    int32_t n = 0;
    RECUR_TRY(key_path_(dir, "server.pub", path, sizeof path, msg, msg_n));
    RECUR_TRY(read_keys_(path, 0, key, 1, &n, msg, msg_n));
    memcpy(k->server_key, key[0], sizeof k->server_key);
    return RECUR_OK;
}

/* Writes text to dir/name with mode (exactly; the umask is not applied): a temporary file
 * in dir, fsync, rename over the name. */
static recur_status_t write_file_(const char *dir, const char *name, const char *text, mode_t mode, char *msg,
                                  size_t msg_n) {
    char path[4096], tmp[4200];
    RECUR_TRY(key_path_(dir, name, path, sizeof path, msg, msg_n));
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp-%d", dir, name, (int)getpid());
    unlink(tmp);   /* a leftover of ours from a killed run */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t len = strlen(text);
    int ok = fchmod(fd, mode) == 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) ok = 0, e = errno;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return RECUR_OK;
}

recur_status_t recur_curve_keygen(const char *dir, int force, char *msg, size_t msg_n) {
    static const char *const names[4] = {"server.key", "server.pub", "worker.key", "worker.pub"};
    RECUR_TRY(need_curve_(msg, msg_n));
    if (!dir || !*dir) return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "keygen: no directory given (--out DIR)");
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || mkdir(dir, 0700) != 0)
            return recur_fail_msg(msg, msg_n, RECUR_E_IO, "%s: cannot create the key directory: %s", dir, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "%s: exists and is not a directory", dir);
    }
    for (int i = 0; i < 4 && !force; i++) {
        char path[4096];
        RECUR_TRY(key_path_(dir, names[i], path, sizeof path, msg, msg_n));
        if (lstat(path, &st) == 0)
            return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "%s exists: recur keygen does not overwrite keys (--force replaces "
                         "them; whatever uses the old keys is then locked out)", path);
    }
    char spub[RECUR_CURVE_Z85_LEN + 1], ssec[RECUR_CURVE_Z85_LEN + 1];
    char wpub[RECUR_CURVE_Z85_LEN + 1], wsec[RECUR_CURVE_Z85_LEN + 1];
    if (zmq_curve_keypair(spub, ssec) != 0 || zmq_curve_keypair(wpub, wsec) != 0)
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "keygen: zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    char text[4][512];
    snprintf(text[0], sizeof text[0], "# recur CURVE secret key of the coordinator (recur serve --curve-keys reads it).\n"
             "# Keep it private. Its public key is server.pub. Made by recur keygen.\n%s\n", ssec);
    snprintf(text[1], sizeof text[1], "# recur CURVE public key of the coordinator (recur worker --curve-keys reads it).\n"
             "%s\n", spub);
    snprintf(text[2], sizeof text[2], "# recur CURVE secret key of the workers (recur worker --curve-keys reads it).\n"
             "# Keep it private. Its public key is worker.pub. Made by recur keygen.\n%s\n", wsec);
    snprintf(text[3], sizeof text[3], "# recur CURVE public key(s) of the workers the coordinator accepts, one per line\n"
             "# (recur serve --curve-keys reads it).\n%s\n", wpub);
    static const mode_t modes[4] = {0600, 0644, 0600, 0644};
    for (int i = 0; i < 4; i++) RECUR_TRY(write_file_(dir, names[i], text[i], modes[i], msg, msg_n));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);   /* the renames are durable */
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    memset(ssec, 0, sizeof ssec);
    memset(wsec, 0, sizeof wsec);
    return RECUR_OK;
}

/* ------------------------------------------------------------------ ZAP */

struct recur_zap {
    void *rep;
    int32_t n_allowed;
    uint8_t allowed[RECUR_CURVE_MAX_ALLOWED][32];
    uint64_t accepted, refused;
    uint64_t last_log_ms, unlogged;   /* refusals are logged at most every 5 s */
};

static uint64_t mono_ms_(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

recur_status_t recur_zap_create(void *zctx, const recur_curve_keys_t *k, recur_zap_t **out, char *msg, size_t msg_n) {
    *out = NULL;
    if (!zctx || !k || k->n_allowed < 1 || k->n_allowed > RECUR_CURVE_MAX_ALLOWED)
        return recur_fail_msg(msg, msg_n, RECUR_E_INVAL, "ZAP handler: no context, or no allowed key");
    recur_zap_t *z = calloc(1, sizeof *z);
    if (!z) return recur_fail_msg(msg, msg_n, RECUR_E_NOMEM, "ZAP handler: out of memory");
    for (int32_t i = 0; i < k->n_allowed; i++)
        if (!zmq_z85_decode(z->allowed[i], k->allowed[i])) {
            free(z);
            return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "ZAP handler: allowed key %d is not Z85", (int)i);
        }
    z->n_allowed = k->n_allowed;
    z->rep = zmq_socket(zctx, ZMQ_REP);
    int zero = 0;
    if (!z->rep || zmq_setsockopt(z->rep, ZMQ_LINGER, &zero, sizeof zero) != 0 || zmq_bind(z->rep, ZAP_ENDPOINT) != 0) {
        int e = zmq_errno();
        recur_zap_free(z);
        return recur_fail_msg(msg, msg_n, RECUR_E_IO, "ZAP handler: cannot bind %s: %s", ZAP_ENDPOINT, zmq_strerror(e));
    }
    *out = z;
    return RECUR_OK;
}

void recur_zap_free(recur_zap_t *z) {
    if (!z) return;
    if (z->rep) zmq_close(z->rep);
    free(z);
}

void *recur_zap_socket(recur_zap_t *z) { return z ? z->rep : NULL; }

void recur_zap_counts(const recur_zap_t *z, uint64_t *accepted, uint64_t *refused) {
    *accepted = z ? z->accepted : 0;
    *refused = z ? z->refused : 0;
}

/* One frame of a reply; more: ZMQ_SNDMORE or 0. */
static void zap_send_(recur_zap_t *z, const void *d, size_t n, int more) { zmq_send(z->rep, d, n, more); }

/* Reads one request (up to 8 frames kept; more are drained) and answers it. 0 when none waited. */
static int zap_one_(recur_zap_t *z) {
    enum { MAXF = 8 };
    zmq_msg_t f[MAXF];
    int nf = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, z->rep, nf == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            if (nf == 0) return 0;
            break;   /* the context is going away */
        }
        more = zmq_msg_more(&m);
        if (nf < MAXF) f[nf++] = m;
        else zmq_msg_close(&m);
    }
    /* RFC 27: version, request id, domain, address, identity, mechanism, credentials... */
#define FRAME_IS(i, s) (nf > (i) && zmq_msg_size(&f[i]) == strlen(s) && !memcmp(zmq_msg_data(&f[i]), s, strlen(s)))
    const char *code = "400", *text = "not an allowed worker key";
    char addr[64] = "?", key85[RECUR_CURVE_Z85_LEN + 1] = "";
    int ours = nf > 2 && FRAME_IS(2, RECUR_CURVE_ZAP_DOMAIN);
    if (nf >= 6) {
        size_t al = zmq_msg_size(&f[3]) < sizeof addr - 1 ? zmq_msg_size(&f[3]) : sizeof addr - 1;
        memcpy(addr, zmq_msg_data(&f[3]), al);
        addr[al] = '\0';
    }
    if (!FRAME_IS(0, "1.0") || nf < 6) {
        code = "500", text = "malformed ZAP request";
    } else if (!ours) {
        code = "200", text = "OK";   /* not a CURVE socket of ours: ZAP adds nothing there */
    } else if (FRAME_IS(5, "CURVE") && nf >= 7 && zmq_msg_size(&f[6]) == 32) {
        const uint8_t *pk = zmq_msg_data(&f[6]);
        zmq_z85_encode(key85, pk, 32);
        for (int32_t i = 0; i < z->n_allowed; i++)
            if (!memcmp(pk, z->allowed[i], 32)) code = "200", text = "OK";
    } else {
        text = "only CURVE is accepted on the worker endpoint";
    }
    zap_send_(z, "1.0", 3, ZMQ_SNDMORE);
    if (nf > 1) zap_send_(z, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else zap_send_(z, "", 0, ZMQ_SNDMORE);
    zap_send_(z, code, 3, ZMQ_SNDMORE);
    zap_send_(z, text, strlen(text), ZMQ_SNDMORE);
    zap_send_(z, "", 0, ZMQ_SNDMORE);   /* user id */
    zap_send_(z, "", 0, 0);             /* metadata */
    if (ours && code[0] == '2') {
        z->accepted++;
        recur_log_info("coordinator: worker connection from %s accepted (CURVE key %s)", addr, key85);
    } else if (ours) {
        z->refused++;
        uint64_t t = mono_ms_();
        if (z->last_log_ms == 0 || t - z->last_log_ms >= 5000) {
            recur_log_warn("coordinator: refused a worker connection from %s: %s (key %s)%s%llu refused in all; "
                           "the workers' key must be in worker.pub", addr, text, key85[0] ? key85 : "none",
                           z->unlogged ? ", more since the last message; " : "; ", (unsigned long long)z->refused);
            z->last_log_ms = t;
            z->unlogged = 0;
        } else {
            z->unlogged++;
        }
    }
#undef FRAME_IS
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    return 1;
}

void recur_zap_handle(recur_zap_t *z) {
    if (!z) return;
    for (int i = 0; i < 1000 && zap_one_(z); i++) {
    }
}
