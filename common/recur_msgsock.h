/* recur_msgsock.h: ZeroMQ sockets that carry recur's protobuf envelopes, one envelope per
 * ZeroMQ message.
 *
 * Two shapes, one per side of a many-to-one link:
 *   ROUTER (recur_msgsock_bind): the coordinator's end. Many peers (clients, or worker
 *     ranks) connect to it; every message received comes with the sender's identity
 *     (recur_msgsock_peer_t), and a reply is routed to exactly that peer. Replies to a
 *     peer that is gone fail (RECUR_E_IO) instead of vanishing (ZMQ_ROUTER_MANDATORY).
 *     With params.router_handover, a peer that connects with a routing id already in use
 *     takes it over (a restarted worker rank); without, the newcomer is ignored.
 *   DEALER (recur_msgsock_connect): a client's or a worker's end, connected to one ROUTER;
 *     many requests may be in flight. ZeroMQ reconnects by itself after a drop.
 * Frames: a DEALER sends [payload]; the ROUTER sees [identity][payload]. A REQ socket
 * (e.g. a minimal Python client) sends [""][payload]; the ROUTER accepts that too and
 * answers such a peer with the delimiter it expects. Anything else is RECUR_E_FORMAT.
 *
 * Endpoints: "tcp://HOST:PORT", "ipc://PATH" or "inproc://NAME". For a bind, HOST is the
 * interface to listen on: an address (127.0.0.1 by default; see recur_msgsock_tcp_endpoint),
 * an interface name (eth0) or * for all; PORT * or 0 picks a free port, which
 * recur_msgsock_endpoint then reports. IPv6 addresses go in brackets: tcp://[::1]:5555.
 *
 * Limits: a socket refuses to send, and to decode, a message larger than its
 * max_msg_bytes; over tcp/ipc ZeroMQ itself also drops the connection of a peer that sends
 * one (ZMQ_MAXMSGSIZE), so it never reaches recv. Close drops unsent messages (linger 0):
 * a process shutting down never hangs on a peer that is gone.
 *
 * Errors: like recur_proto.h, each failure has a message naming the socket and the cause,
 * written to err when err is non-NULL, else logged at error level. RECUR_E_TIMEOUT is never
 * logged (waiting with a timeout is the normal way to idle).
 *
 * Ownership: the ZeroMQ context (zmq_ctx_new) belongs to the caller; one per process is
 * the norm, and the two ends of an inproc:// endpoint must share it. It must outlive every
 * socket made from it: close them all before zmq_ctx_term (which otherwise blocks). A
 * recur_msgsock_t owns its ZeroMQ socket and the last message received.
 * Thread-safety: a socket is used by one thread at a time (ZeroMQ's rule); different
 * sockets may be used by different threads. */
#ifndef RECUR_MSGSOCK_H
#define RECUR_MSGSOCK_H

#include <stddef.h>
#include <stdint.h>

#include "recur_curve.h"
#include "recur_proto.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_msgsock recur_msgsock_t;   /* opaque; defined in recur_msgsock.c */

typedef struct recur_msgsock_params {
    size_t  max_msg_bytes;   /* largest message sent or received (ZMQ_MAXMSGSIZE too);
                                0 = RECUR_PROTO_MAX_MSG_BYTES_DEFAULT                      */
    int32_t send_timeout_ms; /* how long a send may wait while the peer's queue is full
                                (ZMQ_SNDTIMEO); -1 = forever; default 1000. A loop that
                                serves many peers wants 0: a slow client then gets
                                RECUR_E_BUSY instead of stalling everyone else           */
    int32_t hwm;             /* queued messages per peer, each way (ZMQ_SNDHWM/RCVHWM);
                                0 = unlimited; default 10000                               */
    int32_t heartbeat_ms;    /* ZMTP pings every heartbeat_ms; a connection silent for 3
                                intervals is dropped (a dead host is noticed); 0 = off,
                                the default                                                */
    const char *routing_id;  /* DEALER: the identity the ROUTER sees, e.g. "rank3" (1..255
                                bytes, not starting with a zero byte); NULL: ZeroMQ picks one.
                                Ignored for a ROUTER.                                       */
    int32_t router_handover; /* ROUTER: 1 = a new connection with a routing id in use takes
                                it over (ZMQ_ROUTER_HANDOVER): right for the worker socket,
                                where ranks name themselves and may restart; wrong for the
                                client socket, where it would let one client take another's
                                replies. Default 0.                                         */
    const recur_curve_keys_t *curve; /* NULL (default): no encryption (ZMTP's NULL mechanism).
                                ROUTER: a CURVE server with curve->secret_key, ZAP domain
                                RECUR_CURVE_ZAP_DOMAIN: bind the ZAP handler (recur_zap_create)
                                on the context first, or libzmq lets in any client that knows
                                the public key. DEALER: a CURVE client with curve->secret_key /
                                public_key, to the server curve->server_key. Copied at open.
                                RECUR_E_UNSUPPORTED when libzmq has no CURVE.               */
} recur_msgsock_params_t;

recur_msgsock_params_t recur_msgsock_default_params(void);

/* A peer of a ROUTER socket: the identity ZeroMQ gives (or the peer chose) and whether it
 * is a REQ socket. Plain data: copy it, keep it with a request, compare it. */
#define RECUR_MSGSOCK_PEER_MAX 255
typedef struct recur_msgsock_peer {
    uint8_t id[RECUR_MSGSOCK_PEER_MAX];
    uint8_t len;        /* 0: no peer (what a DEALER receives)                   */
    uint8_t delimited;  /* 1: the peer sends and expects an empty delimiter frame */
} recur_msgsock_peer_t;

/* 1 when a and b are the same peer. */
int recur_msgsock_peer_equal(const recur_msgsock_peer_t *a, const recur_msgsock_peer_t *b);
/* The peer id for messages: as text when printable, else "0x" and hex. Returns buf. */
const char *recur_msgsock_peer_str(const recur_msgsock_peer_t *p, char *buf, size_t n);

/* "tcp://IFACE:PORT" into buf: iface NULL or "" = 127.0.0.1 (listen locally unless told
 * otherwise); an IPv6 address is bracketed; port 0 = any free port ("*").
 * RECUR_E_INVAL for a port outside [0, 65535] or a buffer too small. */
recur_status_t recur_msgsock_tcp_endpoint(char *buf, size_t n, const char *iface, int port);

/* Opens a ROUTER bound to endpoint / a DEALER connected to endpoint, on the caller's
 * context zctx. p NULL = the defaults. *out = NULL on error: RECUR_E_INVAL for a bad
 * endpoint or parameter (or an interface that does not exist), RECUR_E_IO when ZeroMQ
 * fails (e.g. the address is in use), RECUR_E_NOMEM. */
recur_status_t recur_msgsock_bind(void *zctx, const char *endpoint, const recur_msgsock_params_t *p,
                                  recur_msgsock_t **out);
recur_status_t recur_msgsock_connect(void *zctx, const char *endpoint, const recur_msgsock_params_t *p,
                                     recur_msgsock_t **out);
void recur_msgsock_close(recur_msgsock_t *s);   /* NULL is a no-op */

/* The endpoint: for a ROUTER the one actually bound (the port a wildcard got, from
 * ZMQ_LAST_ENDPOINT), for a DEALER the one given. Owned by s. */
const char *recur_msgsock_endpoint(const recur_msgsock_t *s);
/* The ZeroMQ socket, to put in a zmq_poll set with other sockets (then recv with timeout
 * 0). Do not send, receive or close through it. */
void *recur_msgsock_zmq(recur_msgsock_t *s);
size_t recur_msgsock_max_msg_bytes(const recur_msgsock_t *s);

/* ---- noticing that a peer went away (a ROUTER cannot see it otherwise)
 * recur_msgsock_last_fd: the file descriptor of the connection the last received message
 * came through (-1: none, e.g. inproc); valid until the next recv. watch_disconnects makes
 * the socket report TCP/IPC disconnections; *pair is a ZeroMQ socket to put in a zmq_poll
 * set (owned by s, closed with it). next_disconnect: the fd of the next connection that
 * went away, or -1 when no more are pending. libzmq queues a connection's disconnection
 * before it closes the fd, so before any message of a later connection that reuses the fd
 * number: a caller that drains these events after each recv and before taking last_fd
 * never blames a new connection for an old one's disconnection. (One that closes before
 * that drain is then missed: its request runs to the end unheard.) */
int recur_msgsock_last_fd(const recur_msgsock_t *s);
recur_status_t recur_msgsock_watch_disconnects(recur_msgsock_t *s, void *zctx, void **pair);
int recur_msgsock_next_disconnect(recur_msgsock_t *s);

/* Failed handshakes (ZMQ_EVENT_HANDSHAKE_FAILED_*): on a CURVE socket, a peer without CURVE,
 * with the wrong server key, or whose key ZAP refused. The pair is as for disconnects; a
 * socket has one monitor, so it watches disconnects or handshakes, not both.
 * next_handshake_failure: the kind of the next one pending, with what went wrong in words in
 * what[0..n), or 0 when none is (never blocks). */
enum {
    RECUR_MSGSOCK_HS_REFUSED = 1,   /* the ZAP handler refused the key                     */
    RECUR_MSGSOCK_HS_MECHANISM = 2, /* one end has CURVE, the other not                    */
    RECUR_MSGSOCK_HS_CRYPTO = 3,    /* a CURVE check failed: the client has another server key */
    RECUR_MSGSOCK_HS_OTHER = 4      /* any other protocol error or failure                 */
};
recur_status_t recur_msgsock_watch_handshakes(recur_msgsock_t *s, void *zctx, void **pair);
int recur_msgsock_next_handshake_failure(recur_msgsock_t *s, char *what, size_t n);

/* ---- bytes: one payload per message */

/* Sends data[0..n) (copied) to peer `to` (ROUTER: required; DEALER: must be NULL).
 * RECUR_E_RANGE: larger than max_msg_bytes; RECUR_E_IO: the peer is not connected (ROUTER)
 * or the context is gone; RECUR_E_BUSY: the peer's queue stayed full for send_timeout_ms
 * (nothing was sent); RECUR_E_INVAL: bad arguments. */
recur_status_t recur_msgsock_send(recur_msgsock_t *s, const recur_msgsock_peer_t *to, const void *data, size_t n,
                                  recur_proto_error_t *err);
/* Waits up to timeout_ms (-1 = forever, 0 = only what is already there) for one message.
 * *data / *n: its payload, owned by s and valid until the next recv on s or its close.
 * from (may be NULL): the sender (len 0 on a DEALER); filled even when the framing is bad,
 * so the caller can answer that peer. RECUR_E_TIMEOUT: nothing came (also returned early
 * when a signal interrupts the wait, so a loop can check its stop flag);
 * RECUR_E_FORMAT: the frames were not [payload] or [""][payload] (the message is dropped);
 * RECUR_E_IO: the context was terminated or ZeroMQ failed. */
recur_status_t recur_msgsock_recv(recur_msgsock_t *s, int32_t timeout_ms, recur_msgsock_peer_t *from,
                                  const uint8_t **data, size_t *n, recur_proto_error_t *err);

/* ---- envelopes: recur_proto pack/unpack over the byte functions, with the socket's
 * max_msg_bytes as the limit. Send returns pack's or send's status. Recv returns recv's
 * status, or unpack's (RECUR_E_FORMAT, RECUR_E_PROTO, RECUR_E_RANGE) with *from filled so
 * the coordinator can answer an ErrorResponse to that peer; *env (freed with
 * recur_proto_*_free by the caller) is NULL on any failure. */
recur_status_t recur_msgsock_send_api(recur_msgsock_t *s, const recur_msgsock_peer_t *to,
                                      const recur_api_envelope_t *env, recur_proto_error_t *err);
recur_status_t recur_msgsock_recv_api(recur_msgsock_t *s, int32_t timeout_ms, recur_msgsock_peer_t *from,
                                      recur_api_envelope_t **env, recur_proto_error_t *err);
recur_status_t recur_msgsock_send_internal(recur_msgsock_t *s, const recur_msgsock_peer_t *to,
                                           const recur_internal_envelope_t *env, recur_proto_error_t *err);
recur_status_t recur_msgsock_recv_internal(recur_msgsock_t *s, int32_t timeout_ms, recur_msgsock_peer_t *from,
                                           recur_internal_envelope_t **env, recur_proto_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
