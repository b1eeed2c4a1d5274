/* recur_bench.h: `recur bench`, the single-process performance benchmark: hardware limits
 * first (device copy bandwidth, a large GEMM), then decode and prefill of a model (a real
 * checkpoint, or random weights at the RWKV-7 7.2B / xLSTM 7B shapes made on the device),
 * each reported against the floor the measured limits imply. */
#ifndef RECUR_BENCH_H
#define RECUR_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "recur_dtype.h"
#include "recur_model.h"

/* argv[0] is "bench"'s caller; options start at argv[first]. Returns the exit code. */
int recur_bench_main(int argc, char **argv, int first);

/* Is name one of the random-weight shapes of worker/recur_synth.h ("rwkv7-7b", "xlstm-7b",
 * "rwkv7-tiny8", "xlstm-tiny8")? */
int recur_bench_is_virtual(const char *name);
/* Loads the random-weight model `name` (its first `layers` layers; <= 0: all) with
 * matrices stored as dtype. xLSTM needs a config.json: it is written to a fresh directory
 * whose path goes to tmpdir (tmpdir_n bytes), to be removed with recur_bench_remove_tmpdir
 * after the model is freed. The same name, layers and dtype give the same weights on every
 * rank and every run (a split model's shards are slices of one model). */
recur_status_t recur_bench_load_virtual(const char *name, int32_t layers, recur_dtype_t dtype, recur_backend_t *b,
                                        const recur_model_params_t *p, recur_model_t **m, char *tmpdir,
                                        size_t tmpdir_n);
void recur_bench_remove_tmpdir(char *tmpdir);

#endif
