/* recur_curve.h: ZeroMQ CURVE for the coordinator <-> worker link: key files, `recur keygen`,
 * and the ZAP handler that decides which workers may connect.
 *
 * CURVE (RFC 26, CurveZMQ) encrypts and authenticates a ZeroMQ connection with Curve25519
 * keys: the server (the coordinator's worker ROUTER) has a key pair whose public half the
 * clients know beforehand; each client (a worker group's rank 0) has its own key pair. The
 * handshake proves both sides hold their secret keys; what follows is encrypted. Which client
 * keys are let in is not CURVE's business but ZAP's (RFC 27): libzmq asks a handler bound at
 * "inproc://zeromq.zap.01" on the same context about every handshake, and the handler here
 * accepts exactly the public keys it was given. Without a handler libzmq accepts any client
 * that knows the server's public key, so the handler is bound before the server socket.
 *
 * Key directory (`recur keygen --out DIR`), Z85 text (40 characters per key), '#' comments:
 *   server.key  the coordinator's secret key       mode 0600   read by recur serve
 *   server.pub  the coordinator's public key       mode 0644   read by recur worker
 *   worker.key  the workers' secret key            mode 0600   read by recur worker
 *   worker.pub  the workers' public key(s)         mode 0644   read by recur serve
 * worker.pub may list several keys, one per line (several worker groups, or a rotation);
 * a public key is derived from its secret (zmq_curve_public), so the .key files hold only
 * the secret. Each side needs only its two files: serve reads server.key and worker.pub, a
 * worker worker.key and server.pub, so a deployment can give each only those.
 *
 * Errors: a message naming the file and the cause into msg[0..msg_n) (NUL-terminated).
 * Ownership: recur_curve_keys_t is plain data; a recur_zap_t owns its ZeroMQ socket (on the
 * caller's context, which must outlive it). Thread-safety: a recur_zap_t is used by one
 * thread (the coordinator's loop polls its socket). */
#ifndef RECUR_CURVE_H
#define RECUR_CURVE_H

#include <stddef.h>
#include <stdint.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECUR_CURVE_Z85_LEN 40      /* a 32-byte key as Z85 text                   */
#define RECUR_CURVE_MAX_ALLOWED 64  /* public keys worker.pub may list            */
#define RECUR_CURVE_ZAP_DOMAIN "recur-workers"

typedef struct recur_curve_keys {
    char public_key[RECUR_CURVE_Z85_LEN + 1];   /* this side's, derived from secret_key       */
    char secret_key[RECUR_CURVE_Z85_LEN + 1];
    char server_key[RECUR_CURVE_Z85_LEN + 1];   /* a client: the server's public key; else "" */
    int32_t n_allowed;                          /* a server: the client keys it accepts      */
    char allowed[RECUR_CURVE_MAX_ALLOWED][RECUR_CURVE_Z85_LEN + 1];
} recur_curve_keys_t;

/* 1 when this libzmq can do CURVE (zmq_has("curve"): built with libsodium or tweetnacl). */
int recur_curve_available(void);

/* Writes the four files into dir (made with mode 0700 when missing): each written to a
 * temporary name and renamed, the .key files with mode 0600 whatever the umask.
 * RECUR_E_INVAL when one of them exists and !force (nothing is written then);
 * RECUR_E_UNSUPPORTED without CURVE; RECUR_E_IO. */
recur_status_t recur_curve_keygen(const char *dir, int force, char *msg, size_t msg_n);

/* The coordinator's keys: secret from dir/server.key, allowed from dir/worker.pub. */
recur_status_t recur_curve_load_server(const char *dir, recur_curve_keys_t *k, char *msg, size_t msg_n);
/* A worker's keys: secret from dir/worker.key, server_key from dir/server.pub. */
recur_status_t recur_curve_load_client(const char *dir, recur_curve_keys_t *k, char *msg, size_t msg_n);

/* ---- the ZAP handler */

typedef struct recur_zap recur_zap_t;   /* opaque; defined in recur_curve.c */

/* Binds the handler (a REP socket at inproc://zeromq.zap.01) on zctx. It answers handshakes
 * of domain RECUR_CURVE_ZAP_DOMAIN: CURVE with one of k->allowed is accepted, anything else
 * refused; other domains (sockets without CURVE, if libzmq asks about them) are accepted,
 * so the handler changes nothing for them. RECUR_E_IO when the endpoint is taken (one
 * handler per context). */
recur_status_t recur_zap_create(void *zctx, const recur_curve_keys_t *k, recur_zap_t **out, char *msg, size_t msg_n);
void recur_zap_free(recur_zap_t *z);   /* NULL is a no-op */
/* The socket to put in a zmq_poll set (ZMQ_POLLIN); owned by z. */
void *recur_zap_socket(recur_zap_t *z);
/* Answers every request waiting (never blocks). A refusal is logged (warn) with the
 * peer's address and key, at most once per 5 s with a count of those left out, since a
 * refused peer retries every 100 ms. */
void recur_zap_handle(recur_zap_t *z);
/* Handshakes accepted and refused so far (domain RECUR_CURVE_ZAP_DOMAIN). */
void recur_zap_counts(const recur_zap_t *z, uint64_t *accepted, uint64_t *refused);

#ifdef __cplusplus
}
#endif
#endif
