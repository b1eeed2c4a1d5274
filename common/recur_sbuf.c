/* recur_sbuf.c: the growable byte buffer (recur_sbuf.h). */
#include "recur_sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for `more` bytes and the NUL; 0, or -1 with b->oom set. */
static int reserve(recur_sbuf_t *b, size_t more) {
    if (b->oom) return -1;
    if (b->n + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
        b->oom = 1;
        return -1;
    }
    b->p = q, b->cap = cap;
    return 0;
}

void recur_sbuf_add(recur_sbuf_t *b, const char *s, size_t n) {
    if (reserve(b, n)) return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void recur_sbuf_str(recur_sbuf_t *b, const char *s) { recur_sbuf_add(b, s, strlen(s)); }

void recur_sbuf_printf(recur_sbuf_t *b, const char *fmt, ...) {
    /* into the room there is; if it did not fit, grow to what it needs and format again */
    for (int pass = 0; pass < 2 && !b->oom; pass++) {
        const size_t room = b->cap > b->n ? b->cap - b->n : 0;
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(room ? b->p + b->n : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        if (reserve(b, (size_t)k)) return;
    }
}

void recur_sbuf_free(recur_sbuf_t *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
