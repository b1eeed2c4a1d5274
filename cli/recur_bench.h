/* recur_bench.h: `recur bench`, the single-process performance benchmark: hardware limits
 * first (device copy bandwidth, a large GEMM), then decode and prefill of a model (a real
 * checkpoint, or random weights at the RWKV-7 7.2B / xLSTM 7B shapes made on the device),
 * each reported against the floor the measured limits imply. */
#ifndef RECUR_BENCH_H
#define RECUR_BENCH_H

/* argv[0] is "bench"'s caller; options start at argv[first]. Returns the exit code. */
int recur_bench_main(int argc, char **argv, int first);

#endif
