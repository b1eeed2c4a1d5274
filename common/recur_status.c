/* recur_status.c: status strings, panic, and the RECUR_TRY trace. */
#include "recur_status.h"
#include "recur_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *recur_status_str(recur_status_t s) {
    switch (s) {
    case RECUR_OK:            return "ok";
    case RECUR_E_INVAL:       return "invalid argument";
    case RECUR_E_NOMEM:       return "out of memory";
    case RECUR_E_IO:          return "I/O error";
    case RECUR_E_FORMAT:      return "malformed data";
    case RECUR_E_UNSUPPORTED: return "unsupported";
    case RECUR_E_CUDA:        return "CUDA error";
    case RECUR_E_NCCL:        return "NCCL error";
    case RECUR_E_MPI:         return "MPI error";
    case RECUR_E_TIMEOUT:     return "timeout";
    case RECUR_E_PROTO:       return "protocol error";
    case RECUR_E_RANGE:       return "out of range";
    case RECUR_E_BUSY:        return "busy";
    }
    return "unknown status";
}

recur_status_t recur_fail_msg(char *msg, size_t msg_n, recur_status_t s, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (msg && msg_n) snprintf(msg, msg_n, "%s", buf);
    else recur_log_err("%s", buf);
    return s;
}

void recur_panic(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s:%d: internal error: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

void recur_log_trace(const char *file, int line, const char *expr, recur_status_t s) {
    recur_log_debug("  at %s:%d: %s -> %s", file, line, expr, recur_status_str(s));
}
