#!/usr/bin/env bash
# fuzz.sh [SECONDS_PER_TARGET] [TARGET...]: build the libFuzzer targets (tests/fuzz, clang with
# ASan + UBSan, in build-fuzz) and run each for SECONDS_PER_TARGET (default 60) on its seed
# corpus; then the .pth converter's own fuzzing loop (tests/fuzz/fuzz_pth.py) for as long.
# Prints executions, coverage and corpus size per target, and the file of any crash (saved
# under build-fuzz/crashes/, never committed). Exit status 1 when any target crashed.
#
# New inputs that reach new code go to build-fuzz/corpus/<target>/ (kept between runs, not
# committed); the committed seeds in tests/fuzz/corpus/<target>/ are only read. To replay a
# crash: build-fuzz/bin/fuzz_<target> CRASH_FILE (RECUR_FUZZ_LOG=debug shows recur's log).
# Environment: FUZZ_JOBS (parallel targets, default: the number of cores), FUZZ_PTH=0 skips
# the converter loop.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECUR_CUDA=OFF -DRECUR_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >build-fuzz.configure.log 2>&1 \
  || { cat build-fuzz.configure.log; exit 1; }
cmake --build build-fuzz -j"$(nproc 2>/dev/null || echo 2)" --target recur_fuzz >build-fuzz/build.log 2>&1 \
  || { tail -50 build-fuzz/build.log; exit 1; }

mkdir -p build-fuzz/crashes build-fuzz/logs
if [ $# -gt 0 ]; then targets=("$@"); else
  targets=()
  for f in tests/fuzz/fuzz_*.c; do t=$(basename "$f" .c); targets+=("${t#fuzz_}"); done
fi

# One target: libFuzzer for $secs seconds. -timeout: one input running 10 s is a hang;
# -rss_limit_mb: a parser that allocates without bound is a finding, not an OOM of the host.
run_one() {
  local t=$1 corpus=build-fuzz/corpus/$1 seeds=tests/fuzz/corpus/$1
  mkdir -p "$corpus" "$seeds"
  local dict=() rc=0
  if [ -f "tests/fuzz/$t.dict" ]; then
    mkdir -p build-fuzz/dict
    { if head -1 "tests/fuzz/$t.dict" | grep -q '^# +json'; then cat tests/fuzz/json.dict; fi
      cat "tests/fuzz/$t.dict"; } >"build-fuzz/dict/$t.dict"
    dict=(-dict="build-fuzz/dict/$t.dict")
  fi
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1 \
    "build-fuzz/bin/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/crashes/$t-" "${dict[@]}" "$corpus" "$seeds" \
    >"build-fuzz/logs/$t.log" 2>&1 || rc=$?
  echo $rc >"build-fuzz/logs/$t.rc"
}

status=0
for t in "${targets[@]}"; do
  rm -f "build-fuzz/logs/$t.log" "build-fuzz/logs/$t.rc"
  [ -x "build-fuzz/bin/fuzz_$t" ] || { echo "fuzz: no target fuzz_$t" >&2; status=1; continue; }
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$t" &
done
wait

printf '%-18s %12s %8s %8s %10s  %s\n' target executions exec/s cov corpus result
for t in "${targets[@]}"; do
  log=build-fuzz/logs/$t.log
  [ -f "$log" ] || continue
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | awk '{print $2}' || true)
  result=ok
  if [ "$(cat "build-fuzz/logs/$t.rc" 2>/dev/null)" != 0 ]; then
    result="CRASH: $(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -1) (log: $log)"
    status=1
  fi
  printf '%-18s %12s %8s %8s %10s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}" "$result"
done

if [ "${FUZZ_PTH:-1}" != 0 ] && [ $# -eq 0 ]; then
  rc=0
  python3 tests/fuzz/fuzz_pth.py --seconds "$secs" --crash-dir build-fuzz/crashes || rc=$?
  [ $rc = 0 ] || [ $rc = 77 ] || status=1   # 77: the .pth fixtures are missing (it says so)
fi
exit $status
