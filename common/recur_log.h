/* recur_log.h: leveled logging to stderr.
 *
 * Thread-safe (one fprintf per message). The level is process-wide state owned by
 * recur_log.c, set once at start-up from --log-level or RECUR_LOG. */
#ifndef RECUR_LOG_H
#define RECUR_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recur_log_level {
    RECUR_LOG_DEBUG = 0, RECUR_LOG_INFO = 1, RECUR_LOG_WARN = 2, RECUR_LOG_ERROR = 3, RECUR_LOG_NONE = 4
} recur_log_level_t;

void recur_log_set_level(recur_log_level_t lvl);
recur_log_level_t recur_log_get_level(void);
/* Parses "debug|info|warn|error|none"; returns -1 on an unknown name. */
int  recur_log_level_parse(const char *name);

void recur_log(recur_log_level_t lvl, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void recur_logv(recur_log_level_t lvl, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 0)))   /* clang's -Wformat-nonliteral wants it */
#endif
    ;

#define recur_log_debug(...) recur_log(RECUR_LOG_DEBUG, __VA_ARGS__)
#define recur_log_info(...)  recur_log(RECUR_LOG_INFO,  __VA_ARGS__)
#define recur_log_warn(...)  recur_log(RECUR_LOG_WARN,  __VA_ARGS__)
#define recur_log_err(...)   recur_log(RECUR_LOG_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
