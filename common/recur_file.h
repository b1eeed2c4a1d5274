/* recur_file.h: reading small whole files (configs, tokenizer files, index json), and the
 * check of names that come from clients. */
#ifndef RECUR_FILE_H
#define RECUR_FILE_H

#include <stddef.h>

#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads the regular file `path` of 1..max bytes into a malloc'ed buffer with a NUL after
 * the last byte (*out, *n = its length; the caller frees). On failure logs one line naming
 * the file as `what` (e.g. "tokenizer.json") and returns RECUR_E_IO (cannot open or read)
 * or RECUR_E_FORMAT (empty, or larger than max: corruption or a wrong path). */
recur_status_t recur_file_read_small(const char *path, size_t max, const char *what, char **out, size_t *n);

/* 1 when s is a safe name: 1..max_len bytes of [A-Za-z0-9._-], not starting with '.'. Such
 * a name is never "", "." or "..", holds no '/', and is no hidden file, so it can name a
 * file inside a directory without leaving it. What clients may choose as identifiers that
 * end up near the file system (session ids) is held to it. */
int recur_name_is_safe(const char *s, size_t max_len);

/* s for an error message: at most max_chars bytes, every byte outside printable ASCII (and
 * '"', '\\') as '?', "..." when cut. Returns out. */
const char *recur_name_printable(const char *s, size_t max_chars, char *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
