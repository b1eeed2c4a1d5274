#!/usr/bin/env bash
# test.sh: set up, build, and run the whole test suite:
#   1. the normal build (CUDA backend compiled when nvcc is found; on CI it must be) and
#      every CTest test (gpu tests skip with 77 where there is no GPU);
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build of the C tests.
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
