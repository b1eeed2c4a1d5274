#!/usr/bin/env bash
# gpu_bench.sh [BUNDLE_DIR] [extra recur bench options...]: on a GPU machine, from the
# repository root, `recur bench` for RWKV-7 7.2B and xLSTM 7B shapes (random bf16 weights),
# tables to stdout and JSON to $OUT (or /tmp). The runs recorded in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=$(cd "${1:-.devbundle}" && pwd)
shift || true
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
rc=0
for model in rwkv7-7b xlstm-7b; do
  echo "== recur bench --model $model $*"
  "$bundle/bin/recur" bench --model "$model" --json "$out/bench-$model.json" "$@" || rc=1
done
exit $rc
