/* recur_file.h: reading small whole files (configs, tokenizer files, index json). */
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

#ifdef __cplusplus
}
#endif
#endif
