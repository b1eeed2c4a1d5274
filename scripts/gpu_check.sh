#!/usr/bin/env bash
# gpu_check.sh [BUNDLE_DIR]: on a GPU machine, from the repository root, run every test
# binary of a bundle made by scripts/bundle.sh (GPU tests must pass there, not skip), the
# command-line test and a demo generation; print a compact table. Copies logs to $OUT if set.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=$(cd "${1:-.devbundle}" && pwd)
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RECUR_FIXTURES_DIR="$bundle/fixtures" RECUR_SOURCE_DIR="$PWD" RECUR_BIN="$bundle/bin/recur"
export NCCL_NVLS_ENABLE=0
log=${OUT:-/tmp}/gpu_check.log
: >"$log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/# gpu: /'
printf '%-28s %-8s %8s\n' test result seconds
fails=0
run() { # run NAME CMD...
  local name=$1; shift
  local t0=$(date +%s%N)
  "$@" >>"$log" 2>&1; local rc=$?
  local ms=$((($(date +%s%N) - t0) / 1000000))
  local dt=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
  local res=pass; [ $rc = 77 ] && res=SKIPPED; [ $rc != 0 ] && [ $rc != 77 ] && res="FAIL($rc)"
  [ "$res" = pass ] || fails=$((fails + 1))
  printf '%-28s %-8s %8.2f\n' "$name" "$res" "$dt"
}
for t in "$bundle"/bin/test_*; do
  name=$(basename "$t")
  echo "=== $name" >>"$log"
  case $name in
    # the _cuda registrations of tests that take the backend as argv[1] (tests/CMakeLists.txt
    # passes ARGS cuda; without it they would test the CPU again): the op test, the sampling
    # op, the bf16-state model test (test_models_cuda ignores the argument)
    *_cuda) run "$name" "$t" cuda ;;
    test_dist) run "$name" "$t" cuda 1 1 ;;   # one rank on the GPU; the split runs below
    *) run "$name" "$t" ;;
  esac
done
# The decode products at 7B shapes per weight format (a table in the log; fails if a product
# fused by matmul_many differs in any bit from the same product alone).
echo "=== bench_gemv_cuda" >>"$log"
[ -x "$bundle/bin/bench_gemv_cuda" ] && run bench_gemv_cuda "$bundle/bin/bench_gemv_cuda"
# The communication layer across ranks (the loop above ran test_comm alone: one rank, CPU).
# Open MPI's mpirun, flags as in tests/CMakeLists.txt; the cuda run puts one rank on each
# GPU of this machine (NCCL needs a GPU per rank), so on 2 GPUs it is TP 2 and PP 2 over
# NCCL, on one GPU a single rank. NCCL_NVLS_ENABLE=0 (exported above) reaches every rank.
mpirun_flags=(--allow-run-as-root --oversubscribe --bind-to none --mca pml ob1 --mca btl self,vader
              --mca btl_vader_single_copy_mechanism none -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH)
n_gpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ "${n_gpu:-0}" -ge 1 ] || n_gpu=1
if command -v mpirun >/dev/null; then
  echo "=== test_comm cpu, mpirun -np 4" >>"$log"
  run "test_comm cpu (np 4)" mpirun "${mpirun_flags[@]}" -np 4 "$bundle/bin/test_comm" cpu
  echo "=== test_comm cuda, mpirun -np $n_gpu" >>"$log"
  run "test_comm cuda (np $n_gpu)" mpirun "${mpirun_flags[@]}" -np "$n_gpu" "$bundle/bin/test_comm" cuda
  echo "=== test_dist cpu tp 2 x pp 2, mpirun -np 4" >>"$log"
  run "test_dist cpu (tp2 pp2)" mpirun "${mpirun_flags[@]}" -x RECUR_FIXTURES_DIR -x RECUR_SOURCE_DIR -np 4 \
    "$bundle/bin/test_dist" cpu 2 2
  if [ "$n_gpu" -ge 2 ]; then # the split models over NCCL: TP 2, PP 2
    for layout in "2 1" "1 2"; do
      echo "=== test_dist cuda $layout, mpirun -np 2" >>"$log"
      run "test_dist cuda (tp pp = $layout)" mpirun "${mpirun_flags[@]}" -x RECUR_FIXTURES_DIR -x RECUR_SOURCE_DIR \
        -np 2 "$bundle/bin/test_dist" cuda $layout
    done
  fi
else
  echo "=== mpirun not found: the multi-rank tests cannot run" >>"$log"
  run "test_comm (mpirun missing)" false
fi
if [ -n "${RECUR_MEMCHECK:-}" ] && command -v compute-sanitizer >/dev/null; then
  echo "=== compute-sanitizer" >>"$log"
  run "memcheck test_backend_cuda" compute-sanitizer --tool memcheck --error-exitcode 1 "$bundle/bin/test_backend_cuda" cuda
  run "memcheck test_state_bf16_cuda" compute-sanitizer --tool memcheck --error-exitcode 1 "$bundle/bin/test_state_bf16_cuda" cuda
  run "memcheck bench_prefill_cuda" compute-sanitizer --tool memcheck --error-exitcode 1 "$bundle/bin/bench_prefill_cuda"
fi
echo "=== test_cli.sh" >>"$log"
run test_cli.sh bash tests/test_cli.sh
echo "=== generate" >>"$log"
run "recur generate (demo)" "$RECUR_BIN" generate --prompt "Once upon a time" --max-tokens 60 --temperature 0.7 --top-p 0.5 --seed 1 --log-level info
tail -3 "$log"
echo "# $fails not passed (a skipped GPU test counts: on this machine it must run)"
[ $fails = 0 ]
