#!/usr/bin/env bash
# test.sh: set up, build, and run the whole test suite:
#   1. the normal build (CUDA backend compiled when nvcc is found; on CI it must be) and
#      every CTest test (gpu tests skip with 77 where there is no GPU);
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build of the C tests;
#   3. every fuzz target (tests/fuzz, libFuzzer + ASan + UBSan, clang) for FUZZ_SECONDS
#      each (default 12) from its committed seeds, and the .pth converter's fuzzing loop:
#      a crash, a failed property or a sanitizer report fails the run (docs/fuzzing.md);
#   4. a ThreadSanitizer build of the tests with threads: the message transport (ZeroMQ's
#      I/O threads), the coordinator loop with a client and a fake worker in threads
#      (bench_coord), the ranks' collectives (test_comm), `recur worker` (test_worker).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)

# CI machines have the CUDA toolkit: there a missing nvcc is an error, not a silent skip.
if [ "${CI:-}" = "true" ] && [ -z "${RECUR_CUDA:-}" ]; then export RECUR_CUDA=ON; fi
scripts/build.sh build
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)

RECUR_CUDA=OFF scripts/build.sh build-san -DRECUR_SANITIZE_ADDRESS=ON -DRECUR_SANITIZE_UNDEFINED=ON
# The converter test is Python (no C code under the sanitizers), so it runs once, above.
(cd build-san && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" --timeout 900 -E test_pth_converter)

# 3. fuzzing, briefly: the seeds (and the reproducers of past findings) always run first
scripts/fuzz.sh "${FUZZ_SECONDS:-12}"

# 4. ThreadSanitizer (gcc). ZeroMQ is not built with TSan: tests/tsan.supp drops the reports
# that have a libzmq frame (its hand-offs are invisible to TSan), nothing of recur's own.
# Only the threaded tests' programs are built (the rest would be the ASan build again).
tsan_tests=(test_msgsock bench_coord test_comm test_worker recur)
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECUR_CUDA=OFF -DRECUR_SANITIZE_THREAD=ON \
  >build-tsan.configure.log 2>&1 || { cat build-tsan.configure.log; exit 1; }
cmake --build build-tsan -j"$jobs" --target "${tsan_tests[@]}"
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp:second_deadlock_stack=1:history_size=4"
# TSan of gcc 12 cannot map its shadow memory under a kernel with 32 bits of mmap
# randomisation ("unexpected memory mapping"): then the tests run with ASLR off.
tsan=()
if ! build-tsan/bin/bench_coord --requests 1 --max-tokens 1 >build-tsan/probe.log 2>&1 &&
   grep -q "unexpected memory mapping" build-tsan/probe.log; then
  tsan=(setarch "$(uname -m)" -R)
fi
(cd build-tsan && "${tsan[@]}" ctest --output-on-failure -j"$jobs" --timeout 900 \
  -R '^(test_msgsock|bench_coord|test_comm|test_comm_np[24]|test_worker|test_worker_tp2)$')
