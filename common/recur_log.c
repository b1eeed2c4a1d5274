/* recur_log.c: the process-wide log level and the stderr sink. */
#include "recur_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int recur_log_level_ = RECUR_LOG_INFO;

void recur_log_set_level(recur_log_level_t lvl) { atomic_store(&recur_log_level_, (int)lvl); }
recur_log_level_t recur_log_get_level(void) { return (recur_log_level_t)atomic_load(&recur_log_level_); }

int recur_log_level_parse(const char *name) {
    static const char *names[] = {"debug", "info", "warn", "error", "none"};
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, names[i]) == 0) return i;
    return -1;
}

void recur_logv(recur_log_level_t lvl, const char *fmt, va_list ap) {
    static const char *tags[] = {"debug", "info", "warn", "error", ""};
    if ((int)lvl < atomic_load(&recur_log_level_)) return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    /* One fprintf so concurrent threads do not interleave inside a line. */
    fprintf(stderr, "%02d:%02d:%02d.%03ld recur %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000L, tags[lvl], msg);
}

void recur_log(recur_log_level_t lvl, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    recur_logv(lvl, fmt, ap);
    va_end(ap);
}
