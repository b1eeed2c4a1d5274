/* recur_fuzz.h: what the libFuzzer targets of tests/fuzz share (docs/fuzzing.md).
 *
 * Each target is one file fuzz_<name>.c defining LLVMFuzzerTestOneInput, registered in
 * tests/fuzz/CMakeLists.txt with recur_add_fuzz(<name>); its seeds live in
 * tests/fuzz/corpus/<name>/ and an optional libFuzzer dictionary in tests/fuzz/<name>.dict.
 * A target checks properties the parser promises (an accepted message re-encodes, a
 * decoded text equals the input, a failure leaves no output) with RECUR_FUZZ_CHECK, which
 * aborts: libFuzzer then saves the input as a crash, like a sanitizer report.
 *
 * State: a target may keep what it loads once (a vocabulary, a temporary directory) in
 * static variables of its own file; nothing here is shared between threads (libFuzzer runs
 * one input at a time). */
#ifndef RECUR_FUZZ_H
#define RECUR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Call first in every LLVMFuzzerTestOneInput (cheap after the first call): silences
 * recur's log, which would otherwise print one line per rejected input, unless
 * RECUR_FUZZ_LOG names a level ("error", "debug", ...: for reproducing a crash). */
void recur_fuzz_init(void);

#define RECUR_FUZZ_CHECK(cond)                                                                      \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            fprintf(stderr, "fuzz check failed: %s:%d: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                                \
        }                                                                                           \
    } while (0)

/* Replaces the contents of one anonymous in-memory file (memfd, created on first use) with
 * data[0..n) and returns a path that opens it ("/proc/self/fd/N"): for the parsers whose API
 * takes a path. The path stays the same for the whole run. */
const char *recur_fuzz_file(const uint8_t *data, size_t n);

/* Writes data[0..n) to path (created or truncated); aborts when it cannot (the target's
 * set-up is broken, not the parser). */
void recur_fuzz_write(const char *path, const void *data, size_t n);

/* A fresh directory under $TMPDIR (or /tmp), removed with its files at exit. */
const char *recur_fuzz_tmpdir(void);

/* "<source tree>/<rel>" in a static buffer (valid until the next call). */
const char *recur_fuzz_source_path(const char *rel);

#endif
