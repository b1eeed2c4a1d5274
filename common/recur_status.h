/* recur_status.h: the status codes every fallible recur function returns, and RECUR_TRY.
 *
 * Anything a client, a file or a peer can cause returns a recur_status_t with a message
 * logged at the point of failure; only broken internal invariants abort (RECUR_ASSERT). */
#ifndef RECUR_STATUS_H
#define RECUR_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recur_status {
    RECUR_OK        = 0,
    RECUR_E_INVAL   = -1,  /* bad argument or bad request                         */
    RECUR_E_NOMEM   = -2,  /* allocation failed                                   */
    RECUR_E_IO      = -3,  /* open/read/write/mmap failed                         */
    RECUR_E_FORMAT  = -4,  /* a file or message is malformed, truncated or corrupt */
    RECUR_E_UNSUPPORTED = -5, /* well-formed, but a variant recur does not handle */
    RECUR_E_CUDA    = -6,
    RECUR_E_NCCL    = -7,
    RECUR_E_MPI     = -8,
    RECUR_E_TIMEOUT = -9,
    RECUR_E_PROTO   = -10, /* protocol violation or version mismatch              */
    RECUR_E_RANGE   = -11, /* a value is outside what the model or config allows  */
    RECUR_E_BUSY    = 1    /* retry later                                         */
} recur_status_t;

/* Static string naming the status; never NULL. */
const char *recur_status_str(recur_status_t s);

/* A failure's message for the caller: formatted into msg (msg_n bytes, cut to fit) when
 * the caller gave a buffer, else logged as an error. Returns s, so that
 * `return recur_fail_msg(msg, msg_n, RECUR_E_FORMAT, "...", ...);` reports and fails. */
recur_status_t recur_fail_msg(char *msg, size_t msg_n, recur_status_t s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#if defined(__cplusplus)
#define RECUR_NORETURN [[noreturn]]
#else
#define RECUR_NORETURN _Noreturn
#endif

/* Print "<file>:<line>: internal error: <msg>" and abort. For broken invariants only. */
RECUR_NORETURN void recur_panic(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#define RECUR_ASSERT(cond) do { if (!(cond)) recur_panic(__FILE__, __LINE__, "assertion failed: %s", #cond); } while (0)

/* Evaluate expr once; on failure log the call site and return the status to our caller. */
#define RECUR_TRY(expr) do { recur_status_t s_ = (expr); if (s_ != RECUR_OK) { \
    recur_log_trace(__FILE__, __LINE__, #expr, s_); return s_; } } while (0)

/* Logged by RECUR_TRY at each level a failure passes through (debug level, so the
 * first message, which names the real problem, stays the one users read). */
void recur_log_trace(const char *file, int line, const char *expr, recur_status_t s);

#ifdef __cplusplus
}
#endif
#endif
