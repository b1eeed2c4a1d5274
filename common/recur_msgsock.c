/* recur_msgsock.c: ROUTER/DEALER sockets carrying one protobuf envelope per message
 * (contract in recur_msgsock.h). */
#include "recur_msgsock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "recur_log.h"

struct recur_msgsock {
    void   *zs;
    int     router;
    size_t  max_msg_bytes;
    char    endpoint[512];
    zmq_msg_t last;   /* the payload of the last message received (what recv's *data points into) */
    void   *monitor;  /* recur_msgsock_watch_disconnects: the PAIR reading the socket's events */
};

recur_msgsock_params_t recur_msgsock_default_params(void) {
    recur_msgsock_params_t p;
    memset(&p, 0, sizeof(p));
    p.max_msg_bytes = RECUR_PROTO_MAX_MSG_BYTES_DEFAULT;
    p.send_timeout_ms = 1000;
    p.hwm = 10000;
    p.heartbeat_ms = 0;
    p.routing_id = NULL;
    p.router_handover = 0;
    return p;
}

int recur_msgsock_peer_equal(const recur_msgsock_peer_t *a, const recur_msgsock_peer_t *b) {
    return a && b && a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

const char *recur_msgsock_peer_str(const recur_msgsock_peer_t *p, char *buf, size_t n) {
    if (!buf || n == 0) return "";
    buf[0] = '\0';
    if (!p || p->len == 0) {
        snprintf(buf, n, "(none)");
        return buf;
    }
    int printable = 1;
    for (size_t i = 0; i < p->len; i++)
        if (p->id[i] < 0x20 || p->id[i] > 0x7e) printable = 0;
    if (printable) {
        snprintf(buf, n, "%.*s", (int)p->len, (const char *)p->id);
        return buf;
    }
    size_t o = (size_t)snprintf(buf, n, "0x");
    for (size_t i = 0; i < p->len && o + 3 <= n; i++) o += (size_t)snprintf(buf + o, n - o, "%02x", p->id[i]);
    return buf;
}

recur_status_t recur_msgsock_tcp_endpoint(char *buf, size_t n, const char *iface, int port) {
    if (!buf || n == 0) return recur_proto_fail(NULL, RECUR_E_INVAL, "tcp endpoint: no buffer");
    buf[0] = '\0';
    if (port < 0 || port > 65535)
        return recur_proto_fail(NULL, RECUR_E_INVAL, "tcp endpoint: port %d is outside [0, 65535]", port);
    if (!iface || !*iface) iface = "127.0.0.1";
    int v6 = strchr(iface, ':') != NULL && iface[0] != '[';
    char portbuf[16];
    if (port == 0)
        snprintf(portbuf, sizeof(portbuf), "*");
    else
        snprintf(portbuf, sizeof(portbuf), "%d", port);
    int w = snprintf(buf, n, v6 ? "tcp://[%s]:%s" : "tcp://%s:%s", iface, portbuf);
    if (w < 0 || (size_t)w >= n) {
        buf[0] = '\0';
        return recur_proto_fail(NULL, RECUR_E_INVAL, "tcp endpoint for interface '%s': buffer of %zu bytes too small",
                                iface, n);
    }
    return RECUR_OK;
}

static int endpoint_ok_(const char *e) {
    static const char *const schemes[] = {"tcp://", "ipc://", "inproc://"};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t k = strlen(schemes[i]);
        if (strncmp(e, schemes[i], k) == 0 && e[k] != '\0') return 1;
    }
    return 0;
}

static recur_status_t set_int_(recur_msgsock_t *s, int opt, int v, const char *name, recur_proto_error_t *err) {
    if (zmq_setsockopt(s->zs, opt, &v, sizeof(v)) != 0)
        return recur_proto_fail(err, RECUR_E_IO, "zmq_setsockopt(%s = %d): %s", name, v, zmq_strerror(zmq_errno()));
    return RECUR_OK;
}

static recur_status_t set_str_(recur_msgsock_t *s, int opt, const char *v, const char *name) {
    if (zmq_setsockopt(s->zs, opt, v, strlen(v)) != 0)
        return recur_proto_fail(NULL, RECUR_E_IO, "zmq_setsockopt(%s): %s", name, zmq_strerror(zmq_errno()));
    return RECUR_OK;
}

/* CURVE: a ROUTER is the server (its clients checked by the ZAP handler under our domain),
 * a DEALER the client of the server key it was given. Keys as Z85 text (40 characters). */
static recur_status_t set_curve_(recur_msgsock_t *s, const recur_curve_keys_t *k) {
    if (!recur_curve_available())
        return recur_proto_fail(NULL, RECUR_E_UNSUPPORTED, "msgsock: CURVE asked for, but this libzmq was built "
                                "without it (zmq_has(\"curve\") is 0)");
    if (strlen(k->secret_key) != RECUR_CURVE_Z85_LEN || strlen(k->public_key) != RECUR_CURVE_Z85_LEN)
        return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock: CURVE keys missing (recur_curve_load_*)");
    if (s->router) {
        RECUR_TRY(set_int_(s, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER", NULL));
        RECUR_TRY(set_str_(s, ZMQ_CURVE_SECRETKEY, k->secret_key, "ZMQ_CURVE_SECRETKEY"));
        return set_str_(s, ZMQ_ZAP_DOMAIN, RECUR_CURVE_ZAP_DOMAIN, "ZMQ_ZAP_DOMAIN");
    }
    if (strlen(k->server_key) != RECUR_CURVE_Z85_LEN)
        return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock: CURVE client without the server's public key");
    RECUR_TRY(set_str_(s, ZMQ_CURVE_SERVERKEY, k->server_key, "ZMQ_CURVE_SERVERKEY"));
    RECUR_TRY(set_str_(s, ZMQ_CURVE_PUBLICKEY, k->public_key, "ZMQ_CURVE_PUBLICKEY"));
    return set_str_(s, ZMQ_CURVE_SECRETKEY, k->secret_key, "ZMQ_CURVE_SECRETKEY");
}

static recur_status_t msgsock_configure_(recur_msgsock_t *s, const char *endpoint, const recur_msgsock_params_t *p) {
    recur_proto_error_t *err = NULL;   /* configuration failures are logged */
    RECUR_TRY(set_int_(s, ZMQ_LINGER, 0, "ZMQ_LINGER", err));
    int64_t max = (int64_t)s->max_msg_bytes;
    if (zmq_setsockopt(s->zs, ZMQ_MAXMSGSIZE, &max, sizeof(max)) != 0)
        return recur_proto_fail(err, RECUR_E_IO, "zmq_setsockopt(ZMQ_MAXMSGSIZE): %s", zmq_strerror(zmq_errno()));
    RECUR_TRY(set_int_(s, ZMQ_SNDHWM, p->hwm, "ZMQ_SNDHWM", err));
    RECUR_TRY(set_int_(s, ZMQ_RCVHWM, p->hwm, "ZMQ_RCVHWM", err));
    RECUR_TRY(set_int_(s, ZMQ_SNDTIMEO, p->send_timeout_ms, "ZMQ_SNDTIMEO", err));
    if (strchr(endpoint, '[')) RECUR_TRY(set_int_(s, ZMQ_IPV6, 1, "ZMQ_IPV6", err));
    if (p->heartbeat_ms > 0) {
        RECUR_TRY(set_int_(s, ZMQ_HEARTBEAT_IVL, p->heartbeat_ms, "ZMQ_HEARTBEAT_IVL", err));
        RECUR_TRY(set_int_(s, ZMQ_HEARTBEAT_TIMEOUT, 3 * p->heartbeat_ms, "ZMQ_HEARTBEAT_TIMEOUT", err));
    }
    if (p->curve) RECUR_TRY(set_curve_(s, p->curve));
    if (s->router) {
        /* a reply to a peer that left must fail loudly, not be dropped in silence */
        RECUR_TRY(set_int_(s, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY", err));
        if (p->router_handover) RECUR_TRY(set_int_(s, ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER", err));
    } else if (p->routing_id) {
        if (zmq_setsockopt(s->zs, ZMQ_ROUTING_ID, p->routing_id, strlen(p->routing_id)) != 0)
            return recur_proto_fail(err, RECUR_E_IO, "zmq_setsockopt(ZMQ_ROUTING_ID): %s", zmq_strerror(zmq_errno()));
    }
    return RECUR_OK;
}

static recur_status_t msgsock_open_(void *zctx, int router, const char *endpoint, const recur_msgsock_params_t *pp,
                                    recur_msgsock_t **out) {
    const char *what = router ? "bind" : "connect";
    if (!out) return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock %s: NULL output", what);
    *out = NULL;
    if (!zctx) return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock %s: no ZeroMQ context", what);
    if (!endpoint || !endpoint_ok_(endpoint))
        return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock %s: endpoint '%s': expected tcp://HOST:PORT, ipc://PATH or "
                                "inproc://NAME", what, endpoint ? endpoint : "(null)");
    recur_msgsock_params_t p = pp ? *pp : recur_msgsock_default_params();
    if (p.max_msg_bytes == 0) p.max_msg_bytes = RECUR_PROTO_MAX_MSG_BYTES_DEFAULT;
    if (p.max_msg_bytes > (size_t)INT64_MAX || p.send_timeout_ms < -1 || p.hwm < 0 || p.heartbeat_ms < 0 ||
        p.heartbeat_ms > 1000000)
        return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock %s %s: bad parameters (send_timeout_ms %d, hwm %d, "
                                "heartbeat_ms %d)", what, endpoint, (int)p.send_timeout_ms, (int)p.hwm, (int)p.heartbeat_ms);
    if (!router && p.routing_id) {
        size_t k = strlen(p.routing_id);
        if (k == 0 || k > RECUR_MSGSOCK_PEER_MAX)
            return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock connect %s: routing_id of %zu bytes (1..%d)", endpoint,
                                    k, RECUR_MSGSOCK_PEER_MAX);
    }
    recur_msgsock_t *s = calloc(1, sizeof(*s));
    if (!s) return recur_proto_fail(NULL, RECUR_E_NOMEM, "msgsock %s %s: out of memory", what, endpoint);
    s->router = router;
    s->max_msg_bytes = p.max_msg_bytes;
    zmq_msg_init(&s->last);
    s->zs = zmq_socket(zctx, router ? ZMQ_ROUTER : ZMQ_DEALER);
    if (!s->zs) {
        recur_status_t st = recur_proto_fail(NULL, RECUR_E_IO, "msgsock %s %s: zmq_socket: %s", what, endpoint,
                                             zmq_strerror(zmq_errno()));
        recur_msgsock_close(s);
        return st;
    }
    recur_status_t st = msgsock_configure_(s, endpoint, &p);
    if (st != RECUR_OK) {
        recur_msgsock_close(s);
        return st;
    }
    int rc = router ? zmq_bind(s->zs, endpoint) : zmq_connect(s->zs, endpoint);
    if (rc != 0) {
        int e = zmq_errno();
        /* a malformed endpoint or an interface that does not exist is the configuration's
         * fault; anything else (address in use, ...) is the system's */
        st = (e == EINVAL || e == EPROTONOSUPPORT || e == ENODEV || e == ENOCOMPATPROTO) ? RECUR_E_INVAL
                                                                                        : RECUR_E_IO;
        recur_proto_fail(NULL, st, "msgsock: zmq_%s(%s): %s", what, endpoint, zmq_strerror(e));
        recur_msgsock_close(s);
        return st;
    }
    size_t len = sizeof(s->endpoint);
    if (!router || zmq_getsockopt(s->zs, ZMQ_LAST_ENDPOINT, s->endpoint, &len) != 0)
        snprintf(s->endpoint, sizeof(s->endpoint), "%s", endpoint);
    s->endpoint[sizeof(s->endpoint) - 1] = '\0';
    *out = s;
    return RECUR_OK;
}

recur_status_t recur_msgsock_bind(void *zctx, const char *endpoint, const recur_msgsock_params_t *p,
                                  recur_msgsock_t **out) {
    return msgsock_open_(zctx, 1, endpoint, p, out);
}

recur_status_t recur_msgsock_connect(void *zctx, const char *endpoint, const recur_msgsock_params_t *p,
                                     recur_msgsock_t **out) {
    return msgsock_open_(zctx, 0, endpoint, p, out);
}

void recur_msgsock_close(recur_msgsock_t *s) {
    if (!s) return;
    zmq_msg_close(&s->last);
    if (s->monitor) {
        zmq_socket_monitor(s->zs, NULL, 0);   /* stop the events before closing their reader */
        zmq_close(s->monitor);
    }
    if (s->zs) zmq_close(s->zs);   /* linger 0 was set at open: returns at once */
    free(s);
}

int recur_msgsock_last_fd(const recur_msgsock_t *s) {
    /* ZMQ_SRCFD: deprecated in favour of ZMQ_MSG_PROPERTY_PEER_ADDRESS, but the only way to
     * match a message with the connection a monitor event names */
    int fd = zmq_msg_get((zmq_msg_t *)&s->last, ZMQ_SRCFD);
    return fd >= 0 ? fd : -1;
}

static recur_status_t watch_(recur_msgsock_t *s, void *zctx, int events, void **pair) {
    *pair = NULL;
    if (s->monitor) return recur_proto_fail(NULL, RECUR_E_INVAL, "msgsock %s: already watched", s->endpoint);
    /* a name never used before in this process: a socket closed just now may still hold
     * its monitor's endpoint while the next one gets the same address */
    static unsigned long serial;
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://recur-msgsock-monitor-%p-%lu", (void *)s,
             __atomic_add_fetch(&serial, 1, __ATOMIC_RELAXED));
    if (zmq_socket_monitor(s->zs, ep, events) != 0) return RECUR_E_IO;
    s->monitor = zmq_socket(zctx, ZMQ_PAIR);
    if (!s->monitor || zmq_connect(s->monitor, ep) != 0) {
        if (s->monitor) zmq_close(s->monitor);
        s->monitor = NULL;
        zmq_socket_monitor(s->zs, NULL, 0);
        return RECUR_E_IO;
    }
    *pair = s->monitor;
    return RECUR_OK;
}

recur_status_t recur_msgsock_watch_disconnects(recur_msgsock_t *s, void *zctx, void **pair) {
    return watch_(s, zctx, ZMQ_EVENT_DISCONNECTED, pair);
}

recur_status_t recur_msgsock_watch_handshakes(recur_msgsock_t *s, void *zctx, void **pair) {
    return watch_(s, zctx,
                  ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                      ZMQ_EVENT_HANDSHAKE_FAILED_AUTH,
                  pair);
}

/* Reads and drops the remaining frames of a monitor event whose first frame was read. */
static void skip_event_rest(void *monitor) {
    for (int more = 1; more;) {
        zmq_msg_t r;
        zmq_msg_init(&r);
        if (zmq_msg_recv(&r, monitor, ZMQ_DONTWAIT) < 0) more = 0;
        else more = zmq_msg_more(&r);
        zmq_msg_close(&r);
    }
}

/* The next monitor event (never blocks): 1 with its number and value, 0 when none. */
static int next_event_(recur_msgsock_t *s, uint16_t *event, uint32_t *value) {
    if (!s->monitor) return 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return 0;
        }
        /* frame 1: uint16 event, uint32 value; frame 2: the endpoint */
        int got = 0;
        if (zmq_msg_size(&m) == 6) {
            const uint8_t *d = zmq_msg_data(&m);
            memcpy(event, d, 2);
            memcpy(value, d + 2, 4);
            got = 1;
        }
        const int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (more) skip_event_rest(s->monitor);
        if (got) return 1;
    }
}

int recur_msgsock_next_handshake_failure(recur_msgsock_t *s, char *what, size_t n) {
    uint16_t ev;
    uint32_t val;
    while (next_event_(s, &ev, &val)) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            snprintf(what, n, "the key was refused (ZAP status %u: not an allowed key)", (unsigned)val);
            return RECUR_MSGSOCK_HS_REFUSED;
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && val == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
            snprintf(what, n, "the two ends use different security mechanisms (CURVE keys on one side only)");
            return RECUR_MSGSOCK_HS_MECHANISM;
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && val == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) {
            snprintf(what, n, "a CURVE check failed (the client does not have this server's public key)");
            return RECUR_MSGSOCK_HS_CRYPTO;
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            snprintf(what, n, "a protocol error in the handshake (code 0x%x)", (unsigned)val);
            return RECUR_MSGSOCK_HS_OTHER;
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            snprintf(what, n, "the handshake failed (%s: the other end hung up; with CURVE, a client with another "
                     "server key sees this)", zmq_strerror((int)val));
            return RECUR_MSGSOCK_HS_OTHER;
        }
    }
    return 0;
}

int recur_msgsock_next_disconnect(recur_msgsock_t *s) {
    if (!s->monitor) return -1;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        /* frame 1: uint16 event, uint32 value (the fd); frame 2: the endpoint */
        int fd = -1;
        if (zmq_msg_size(&m) == 6) {
            const uint8_t *d = zmq_msg_data(&m);
            uint16_t ev;
            uint32_t val;
            memcpy(&ev, d, 2);
            memcpy(&val, d + 2, 4);
            if (ev == ZMQ_EVENT_DISCONNECTED) fd = (int)val;
        }
        const int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (more) skip_event_rest(s->monitor);
        if (fd >= 0) return fd;
    }
}

const char *recur_msgsock_endpoint(const recur_msgsock_t *s) { return s ? s->endpoint : ""; }
void *recur_msgsock_zmq(recur_msgsock_t *s) { return s ? s->zs : NULL; }
size_t recur_msgsock_max_msg_bytes(const recur_msgsock_t *s) { return s ? s->max_msg_bytes : 0; }

/* ------------------------------------------------------------------ send */

static recur_status_t send_errno_(recur_msgsock_t *s, const recur_msgsock_peer_t *to, recur_proto_error_t *err) {
    int e = zmq_errno();
    char peer[2 * RECUR_MSGSOCK_PEER_MAX + 3];
    recur_msgsock_peer_str(to, peer, sizeof(peer));
    if (e == EHOSTUNREACH)
        return recur_proto_fail(err, RECUR_E_IO, "msgsock %s: peer %s is not connected", s->endpoint, peer);
    if (e == EAGAIN)
        return recur_proto_fail(err, RECUR_E_BUSY, "msgsock %s: the queue to peer %s stayed full, message not sent",
                                s->endpoint, s->router ? peer : "(the router)");
    return recur_proto_fail(err, RECUR_E_IO, "msgsock %s: send: %s", s->endpoint, zmq_strerror(e));
}

/* Sends the routing frames, then *payload (always consumed: closed, whatever happens). */
static recur_status_t send_msg_(recur_msgsock_t *s, const recur_msgsock_peer_t *to, zmq_msg_t *payload,
                                recur_proto_error_t *err) {
    recur_status_t st = RECUR_OK;
    if (s->router) {
        if (!to || to->len == 0) {
            st = recur_proto_fail(err, RECUR_E_INVAL, "msgsock %s: a ROUTER needs the peer to send to", s->endpoint);
            goto done;
        }
        /* A multipart message is queued whole or not at all: once the identity frame is
         * accepted, the rest cannot fail for lack of room. */
        if (zmq_send(s->zs, to->id, to->len, ZMQ_SNDMORE) < 0) {
            st = send_errno_(s, to, err);
            goto done;
        }
        if (to->delimited && zmq_send(s->zs, "", 0, ZMQ_SNDMORE) < 0) {
            st = send_errno_(s, to, err);
            goto done;
        }
    } else if (to && to->len) {
        st = recur_proto_fail(err, RECUR_E_INVAL, "msgsock %s: a DEALER sends only to its router (peer must be NULL)",
                              s->endpoint);
        goto done;
    }
    if (zmq_msg_send(payload, s->zs, 0) < 0) {
        st = send_errno_(s, to, err);
        goto done;
    }
    return RECUR_OK;   /* zmq_msg_send took the message */
done:
    zmq_msg_close(payload);
    return st;
}

recur_status_t recur_msgsock_send(recur_msgsock_t *s, const recur_msgsock_peer_t *to, const void *data, size_t n,
                                  recur_proto_error_t *err) {
    if (!s || (!data && n)) return recur_proto_fail(err, RECUR_E_INVAL, "msgsock send: NULL socket or data");
    if (n > s->max_msg_bytes)
        return recur_proto_fail(err, RECUR_E_RANGE, "msgsock %s: message of %zu bytes exceeds the limit of %zu bytes",
                                s->endpoint, n, s->max_msg_bytes);
    zmq_msg_t m;
    if (zmq_msg_init_size(&m, n) != 0)
        return recur_proto_fail(err, RECUR_E_NOMEM, "msgsock %s: no memory for a message of %zu bytes", s->endpoint, n);
    if (n) memcpy(zmq_msg_data(&m), data, n);
    return send_msg_(s, to, &m, err);
}

static void free_packed_(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* Hands a packed buffer to ZeroMQ without a copy; ZeroMQ frees it when sent. */
static recur_status_t send_packed_(recur_msgsock_t *s, const recur_msgsock_peer_t *to, uint8_t *buf, size_t n,
                                   recur_proto_error_t *err) {
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, buf, n, free_packed_, NULL) != 0) {
        free(buf);
        return recur_proto_fail(err, RECUR_E_NOMEM, "msgsock %s: no memory for a message", s->endpoint);
    }
    return send_msg_(s, to, &m, err);
}

recur_status_t recur_msgsock_send_api(recur_msgsock_t *s, const recur_msgsock_peer_t *to,
                                      const recur_api_envelope_t *env, recur_proto_error_t *err) {
    if (!s) return recur_proto_fail(err, RECUR_E_INVAL, "msgsock send: NULL socket");
    uint8_t *buf = NULL;
    size_t n = 0;
    RECUR_TRY(recur_proto_api_pack(env, s->max_msg_bytes, &buf, &n, err));
    return send_packed_(s, to, buf, n, err);
}

recur_status_t recur_msgsock_send_internal(recur_msgsock_t *s, const recur_msgsock_peer_t *to,
                                           const recur_internal_envelope_t *env, recur_proto_error_t *err) {
    if (!s) return recur_proto_fail(err, RECUR_E_INVAL, "msgsock send: NULL socket");
    uint8_t *buf = NULL;
    size_t n = 0;
    RECUR_TRY(recur_proto_internal_pack(env, s->max_msg_bytes, &buf, &n, err));
    return send_packed_(s, to, buf, n, err);
}

/* ------------------------------------------------------------------ receive */

static int64_t now_ms_(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for and receives the first frame of the next message into *part. */
static recur_status_t recv_first_(recur_msgsock_t *s, int32_t timeout_ms, zmq_msg_t *part, recur_proto_error_t *err) {
    int64_t deadline = timeout_ms >= 0 ? now_ms_() + timeout_ms : 0;
    for (;;) {
        if (zmq_msg_recv(part, s->zs, ZMQ_DONTWAIT) >= 0) return RECUR_OK;
        int e = zmq_errno();
        if (e != EAGAIN && e != EINTR)
            return recur_proto_fail(err, RECUR_E_IO, "msgsock %s: recv: %s", s->endpoint, zmq_strerror(e));
        long wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - now_ms_();
            if (left <= 0 || e == EINTR)
                return recur_proto_fail(err, RECUR_E_TIMEOUT, "msgsock %s: no message within %d ms", s->endpoint,
                                        (int)timeout_ms);
            wait = (long)left;
        } else if (e == EINTR) {
            return recur_proto_fail(err, RECUR_E_TIMEOUT, "msgsock %s: wait interrupted by a signal", s->endpoint);
        }
        zmq_pollitem_t it = {s->zs, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, wait) < 0) {
            e = zmq_errno();
            if (e == EINTR)
                return recur_proto_fail(err, RECUR_E_TIMEOUT, "msgsock %s: wait interrupted by a signal", s->endpoint);
            return recur_proto_fail(err, RECUR_E_IO, "msgsock %s: zmq_poll: %s", s->endpoint, zmq_strerror(e));
        }
        /* ready (or timed out): the next zmq_msg_recv says which */
    }
}

recur_status_t recur_msgsock_recv(recur_msgsock_t *s, int32_t timeout_ms, recur_msgsock_peer_t *from,
                                  const uint8_t **data, size_t *n, recur_proto_error_t *err) {
    if (from) memset(from, 0, sizeof(*from));
    if (data) *data = NULL;
    if (n) *n = 0;
    if (!s || !data || !n) return recur_proto_fail(err, RECUR_E_INVAL, "msgsock recv: NULL argument");
    zmq_msg_close(&s->last);
    zmq_msg_init(&s->last);

    zmq_msg_t part;
    zmq_msg_init(&part);
    recur_status_t st = recv_first_(s, timeout_ms, &part, err);
    if (st != RECUR_OK) {
        zmq_msg_close(&part);
        return st;
    }
    recur_msgsock_peer_t peer;
    memset(&peer, 0, sizeof(peer));
    int more = zmq_msg_more(&part);
    int have_first = 1;   /* part holds a frame not yet classified */
    if (s->router) {
        /* ROUTER: the first frame is the identity ZeroMQ prepends (1..255 bytes) */
        size_t k = zmq_msg_size(&part);
        peer.len = (uint8_t)(k > RECUR_MSGSOCK_PEER_MAX ? RECUR_MSGSOCK_PEER_MAX : k);
        memcpy(peer.id, zmq_msg_data(&part), peer.len);
        have_first = 0;
    }
    /* The rest must be [payload] or [""][payload]. Read every frame (a message is
     * delivered whole) so that a bad one does not leave frames behind for the next recv. */
    size_t n_frames = 0;
    int bad = 0;
    for (;;) {
        if (!have_first) {
            if (!more) break;
            zmq_msg_close(&part);
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, s->zs, 0) < 0) {
                st = recur_proto_fail(err, RECUR_E_IO, "msgsock %s: recv: %s", s->endpoint, zmq_strerror(zmq_errno()));
                zmq_msg_close(&part);
                return st;
            }
            more = zmq_msg_more(&part);
        }
        have_first = 0;
        n_frames++;
        if (n_frames == 1) {
            zmq_msg_move(&s->last, &part);
        } else if (n_frames == 2 && zmq_msg_size(&s->last) == 0) {
            peer.delimited = 1;
            zmq_msg_move(&s->last, &part);
        } else {
            bad = 1;
        }
    }
    zmq_msg_close(&part);
    if (from) *from = peer;
    if (bad || n_frames == 0) {
        char p[2 * RECUR_MSGSOCK_PEER_MAX + 3];
        zmq_msg_close(&s->last);
        zmq_msg_init(&s->last);
        return recur_proto_fail(err, RECUR_E_FORMAT, "msgsock %s: message from peer %s has %zu frames after the identity, "
                                "expected the payload (or an empty delimiter and the payload)", s->endpoint,
                                recur_msgsock_peer_str(&peer, p, sizeof(p)), n_frames);
    }
    *data = zmq_msg_data(&s->last);
    *n = zmq_msg_size(&s->last);
    return RECUR_OK;
}

recur_status_t recur_msgsock_recv_api(recur_msgsock_t *s, int32_t timeout_ms, recur_msgsock_peer_t *from,
                                      recur_api_envelope_t **env, recur_proto_error_t *err) {
    if (env) *env = NULL;
    if (!env) return recur_proto_fail(err, RECUR_E_INVAL, "msgsock recv: NULL output");
    const uint8_t *data;
    size_t n;
    recur_status_t st = recur_msgsock_recv(s, timeout_ms, from, &data, &n, err);
    if (st != RECUR_OK) return st;
    return recur_proto_api_unpack(data, n, s->max_msg_bytes, env, err);
}

recur_status_t recur_msgsock_recv_internal(recur_msgsock_t *s, int32_t timeout_ms, recur_msgsock_peer_t *from,
                                           recur_internal_envelope_t **env, recur_proto_error_t *err) {
    if (env) *env = NULL;
    if (!env) return recur_proto_fail(err, RECUR_E_INVAL, "msgsock recv: NULL output");
    const uint8_t *data;
    size_t n;
    recur_status_t st = recur_msgsock_recv(s, timeout_ms, from, &data, &n, err);
    if (st != RECUR_OK) return st;
    return recur_proto_internal_unpack(data, n, s->max_msg_bytes, env, err);
}
