#!/usr/bin/env bash
# gpu_serve.sh [BUNDLE_DIR]: on a GPU machine, `recur serve` end to end under load: for each
# model shape (random weights) and concurrency, a fresh `recur serve --backend cuda` and one
# `recur_loadgen` process keeping N streams in flight; prints loadgen's table and serve's exit
# line (the coordinator's critical path per step, the step period, the worker's own time).
# Then bench_coord (the coordinator alone with a fake worker) on this machine's CPU.
# Env: MODELS (default "rwkv7-7b xlstm-7b"), CONC (default "1 64 256"), TOKENS (200),
# SERVE_ARGS (extra serve flags), OUT (logs copied there).
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=$(cd "${1:-.devbundle}" && pwd)
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RECUR_FIXTURES_DIR="$bundle/fixtures" NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/# gpu: /'
for model in ${MODELS:-rwkv7-7b xlstm-7b}; do
  for n in ${CONC:-1 64 256}; do
    tag=$model-c$n
    "$bundle/bin/recur" serve --model "$model" --backend cuda --slots 300 --max-batch 256 --log-level warn \
      ${SERVE_ARGS:-} >"$out/serve-$tag.out" 2>"$out/serve-$tag.err" &
    spid=$!
    ep=
    for _ in $(seq 1200); do
      ep=$(sed -n 's/^recur serve: listening on //p' "$out/serve-$tag.out")
      [ -n "$ep" ] && break
      kill -0 $spid 2>/dev/null || break
      sleep 0.1
    done
    echo "### $model, $n streams in flight, ${TOKENS:-200} tokens each"
    if [ -z "$ep" ]; then
      echo "serve did not come up:"; tail -5 "$out/serve-$tag.err"; kill -9 $spid 2>/dev/null; continue
    fi
    # a warm-up round (CUDA graphs, allocator), then the measured one on the same server
    "$bundle/bin/recur_loadgen" --connect "$ep" --concurrency "$n" --requests "$n" --max-tokens 16 >/dev/null 2>&1
    reqs=$((n < 4 ? 4 : 2 * n))
    "$bundle/bin/recur_loadgen" --connect "$ep" --concurrency "$n" --requests $reqs --max-tokens "${TOKENS:-200}" \
      --temperature 0.8 2>&1 | tee "$out/loadgen-$tag.txt"
    kill -TERM $spid
    wait $spid
    grep "tokens out" "$out/serve-$tag.err" | sed 's/^/    /'
  done
done
echo "### bench_coord (fake worker, this host's CPU)"
"$bundle/bin/bench_coord" --requests 2048 --max-tokens 64
"$bundle/bin/bench_coord" --requests 1024 --max-tokens 64 --step-us 16000 | tail -6
