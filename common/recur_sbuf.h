/* recur_sbuf.h: a growable, NUL-terminated byte buffer for building responses and texts.
 *
 * Ownership: the holder of a recur_sbuf_t owns b->p (malloc'd; release it with free or
 * recur_sbuf_free). A zeroed struct is an empty buffer. An allocation failure sets b->oom
 * and makes every later append a no-op, so a builder appends freely and checks oom once at
 * the end. Not thread-safe: one buffer, one writer. */
#ifndef RECUR_SBUF_H
#define RECUR_SBUF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recur_sbuf {
    char *p;     /* the bytes, NUL-terminated once anything was appended (NULL before) */
    size_t n;    /* bytes in use, without the NUL */
    size_t cap;  /* bytes allocated */
    int oom;     /* an append failed: the contents are incomplete */
} recur_sbuf_t;

void recur_sbuf_add(recur_sbuf_t *b, const char *s, size_t n);
void recur_sbuf_str(recur_sbuf_t *b, const char *s);
void recur_sbuf_printf(recur_sbuf_t *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Frees the bytes and leaves an empty buffer. */
void recur_sbuf_free(recur_sbuf_t *b);

#ifdef __cplusplus
}
#endif
#endif
