#!/usr/bin/env bash
# gpu_serving_bench.sh [BUNDLE_DIR]: the serving benchmarks (docs/benchmarks.md, "Serving
# benchmarks") in one call on a GPU machine, from the repository root, time-boxed: every
# stage runs under `timeout` inside a total of BUDGET_S seconds (default 530), and what does
# not fit is skipped and said so in $OUT/stages.tsv and on stdout.
#
#   recur-M          recur bench --model M (RWKV-7 7.2B / xLSTM 7B shapes, random bf16 weights):
#                    decode at batch 1, 16, 256 and the largest that fits; TTFT and memory of
#                    prompts of 2K..128K tokens and 1M (RECUR_1M=0 leaves 1M out), each followed
#                    by batch-1 decode steps at that context (--decode-after)
#   serve-M          recur serve --model M --backend cuda, then recur_loadgen --http at each
#                    concurrency in CONC (default 1 16 64 256): prompts lognormal (median 512
#                    tokens), 128 output tokens, GPU memory sampled with nvidia-smi
#   peer-P           scripts/context_sweep.py --which P on the same prompts and batches: the
#                    Llama-3-8B-shaped transformer, fla's RWKV-7, transformers' xLSTM + Triton
#                    (wheels from .whl/ installed into /tmp, as scripts/gpu_bench.sh does)
#   recur-M-tp2/pp2  with 2 GPUs: recur bench under mpirun with --tp 2 / --pp 2
# With 2 or more GPUs the stages run in two lanes at once: everything on GPU 0 but fla's
# RWKV-7, whose first use autotunes its Triton kernels for minutes, on GPU 1 (an H200 of the
# same host); then the TP2/PP2 stages. With one GPU everything runs in turn: recur, serve
# rwkv7-7b, the transformer, transformers' xLSTM, serve xlstm-7b, and fla last with what is
# left. LANES=1 forces one lane.
#
# Output in $OUT (default /tmp/serving-bench): every stage's JSON and log, stages.tsv, env.txt,
# and report/ from scripts/plot_benchmarks.py (tables; PNGs where matplotlib is installed).
# Env: BUDGET_S, PRICE (GPU price per hour for the cost table), CONC, SERVE_MODELS, PACK (a tarball of it all),
# PEERS, RECUR_1M, LANES, DIST_S (seconds kept for the TP2/PP2 stages at the end, default 100; PEERS and
# SERVE_MODELS set but empty run none), TRITON_CACHE_DIR (default .triton-cache here: Triton's compiled
# kernels and autotuning results; copied to $OUT/triton-cache.tgz at the end, so a later call
# can carry it back as .triton-cache.tgz in the repository root and skip fla's autotuning).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ME="$REPO/scripts/gpu_serving_bench.sh"

# ---------------------------------------------------------------- internal modes (one stage each)
if [ "${1:-}" = "--serve-one" ]; then   # --serve-one BUNDLE MODEL OUT
  bundle=$2 model=$3 out=$4
  bin=$bundle/bin
  "$bin/recur" serve --model "$model" --backend cuda --slots 300 --max-batch 256 --port 0 --log-level warn \
    --drain-timeout-s 5 >"$out/serve-$model.out" 2>"$out/serve-$model.err" &
  spid=$!
  # the time box's SIGTERM reaches this shell only: take serve (and, by its parent-death
  # signal, its workers) down with it, so the next stage has the GPU to itself
  trap 'kill -9 $spid 2>/dev/null' EXIT
  trap 'kill -9 $spid 2>/dev/null; exit 143' TERM INT
  t0=$(date +%s%N)
  url=
  for _ in $(seq 1800); do
    url=$(sed -n 's/^recur serve: http on //p' "$out/serve-$model.out")
    [ -n "$url" ] && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "serve did not come up:"; tail -5 "$out/serve-$model.err"; exit 1
  fi
  echo "# serve $model up in $(( ($(date +%s%N) - t0) / 1000000 )) ms: $url"
  rc=0
  for n in ${CONC:-1 16 64 256}; do
    reqs=$(( n == 1 ? 8 : n * 3 / 2 ))
    # warm-up at this concurrency (short requests: the decode batch passes through the sizes
    # the measured run will use, so their CUDA graphs exist before it)
    "$bin/recur_loadgen" --http "$url" --concurrency "$n" --requests "$n" --prompt-len 64 --output-len 16 \
      --seed 99 >/dev/null 2>&1
    echo "### $model, concurrency $n, $reqs requests"
    "$bin/recur_loadgen" --http "$url" --concurrency "$n" --requests "$reqs" --prompt-len "${PLEN:-lognormal:512:0.6:32:4096}" \
      --output-len "${OLEN:-128}" --seed 1 --temperature 0.8 --gpu-mem-ms 200 --timeout-ms 60000 \
      --label "$model c=$n" --json "$out/serve-$model-c$n.json" || rc=1
  done
  kill -TERM $spid
  wait $spid
  trap - EXIT TERM INT
  grep "tokens out" "$out/serve-$model.err" | sed 's/^/# /'
  exit $rc
fi
if [ "${1:-}" = "--peer" ]; then   # --peer NAME DEADLINE_S OUT
  name=$2 deadline=$3 out=$4
  case $name in
    fla-rwkv7) export PYTHONPATH=/tmp/site_fla ;;
    hf-xlstm-triton) export PYTHONPATH=/tmp/site_xl ;;
  esac
  # SWEEP_ARGS: extra options (a dry run on a machine without a GPU: "--device cpu --tiny")
  exec env PYTHONUNBUFFERED=1 "${PYTHON:-python3}" "$REPO/scripts/context_sweep.py" --which "$name" \
    --contexts "$CONTEXTS" --mem-only "${MEM_ONLY-1048576}" --batches 1,16 --steps 16 --deadline-s "$deadline" \
    --json "$out/peer-$name.json" ${SWEEP_ARGS:-}
fi

# ---------------------------------------------------------------- the run
bundle=$(cd "${1:-.devbundle}" && pwd)
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$REPO/.triton-cache}
export RECUR_MODELS_DIR=${RECUR_MODELS_DIR:-$REPO/models}   # the bundled tokenizers
export CONTEXTS=${CONTEXTS:-2048,8192,16384,32768,65536,131072}
out=${OUT:-/tmp/serving-bench}
mkdir -p "$out" "$TRITON_CACHE_DIR"
# an earlier run's Triton cache, carried back as .triton-cache.tgz (see the end)
if [ -f "$REPO/.triton-cache.tgz" ] && [ -z "$(ls -A "$TRITON_CACHE_DIR")" ]; then
  tar xzf "$REPO/.triton-cache.tgz" -C "$TRITON_CACHE_DIR" && echo "# Triton cache restored from .triton-cache.tgz"
fi
BUDGET_S=${BUDGET_S:-530}
T0=$(date +%s)
bin=$bundle/bin
el() { echo $(( $(date +%s) - T0 )); }

ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: ${COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  echo "gpus: $ngpu"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  nvidia-smi topo -m 2>/dev/null | head -3 | sed 's/^/topo: /'
  echo "budget_s: $BUDGET_S"
  echo "price_per_hour: ${PRICE:-}"
  python3 -c "import torch, transformers; print('torch:', torch.__version__); print('transformers:', transformers.__version__)" 2>&1
} >"$out/env.txt"
cat "$out/env.txt"
printf 'stage\tgpu\tstart_s\telapsed_s\tresult\tnote\n' >"$out/stages.tsv"
[ "$ngpu" -ge 1 ] || { echo "no GPU found (nvidia-smi -L)"; exit 1; }

# stage NAME GPU END_EPOCH CAP CMD...: CMD under timeout with CUDA_VISIBLE_DEVICES=GPU, at most
# CAP seconds and never past END_EPOCH; an argument @DEADLINE@ becomes the seconds it has
# less a margin (for scripts that stop on their own before the timeout).
stage() {
  local name=$1 gpu=$2 end=$3 cap=$4
  shift 4
  local left=$(( end - $(date +%s) - 2 ))
  local t=$(( cap < left ? cap : left ))
  local start
  start=$(el)
  if [ "$t" -lt 25 ]; then
    printf '%s\t%s\t%s\t0\tskipped\tno time left in the budget\n' "$name" "$gpu" "$start" >>"$out/stages.tsv"
    echo "[${start}s] $name: SKIPPED (no time left in the budget)"
    return 0
  fi
  local args=() a
  for a in "$@"; do
    [ "$a" = @DEADLINE@ ] && a=$(( t - 15 ))
    args+=("$a")
  done
  echo "[${start}s] $name on GPU $gpu, up to $t s"
  local s
  s=$(date +%s)
  CUDA_VISIBLE_DEVICES=$gpu timeout -k 10 "$t" "${args[@]}" >"$out/$name.log" 2>&1
  local rc=$? d=$(( $(date +%s) - s )) res note=
  case $rc in
    0) res=ok ;;
    124|137) res=timeout; note="stopped by the time box after $t s" ;;
    *) res="exit $rc" ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$gpu" "$start" "$d" "$res" "$note" >>"$out/stages.tsv"
  echo "[$(el)s] $name: $res after $d s"
  grep -E '^(  |# |\| )' "$out/$name.log" | tail -4 | sed 's/^/    /'
}

prompts=$CONTEXTS
[ "${RECUR_1M:-1}" = 1 ] && prompts=$prompts,1048576
recur_bench() { # recur_bench MODEL END CAP
  stage "recur-$1" 0 "$2" "$3" "$bin/recur" bench --model "$1" --batch 1,16,256,max --prompt "$prompts" \
    --decode-after 16 --steps 10 --json "$out/recur-$1-1gpu.json"
}
serve() { stage "serve-$1" 0 "$2" "$3" bash "$ME" --serve-one "$bundle" "$1" "$out"; }
peer() { # peer NAME GPU END CAP
  stage "peer-$1" "$2" "$3" "$4" bash "$ME" --peer "$1" @DEADLINE@ "$out"
}
has() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }
PEERS=${PEERS-llama3-8b fla-rwkv7 hf-xlstm-triton}
SERVE_MODELS=${SERVE_MODELS-rwkv7-7b xlstm-7b}

# the peers' wheels (../shared/DEVICE.md): separate site dirs as in gpu_bench.sh
if has fla-rwkv7 "$PEERS" || has hf-xlstm-triton "$PEERS"; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_fla .whl/einops-*.whl \
    .whl/fla_core-*.whl .whl/flash_linear_attention-*.whl >"$out/pip.log" 2>&1 || echo "# fla wheels: see pip.log"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_xl .whl/einops-*.whl \
    .whl/mlstm_kernels-*.whl .whl/xlstm-*.whl >>"$out/pip.log" 2>&1 || echo "# xlstm wheels: see pip.log"
fi

END=$(( T0 + BUDGET_S ))
if [ "$ngpu" -ge 2 ] && [ "${LANES:-auto}" != 1 ]; then
  LANE_END=$(( END - ${DIST_S:-100} ))   # then TP2 and PP2 of both models on both GPUs
  (
    recur_bench rwkv7-7b "$LANE_END" 150
    recur_bench xlstm-7b "$LANE_END" 140
    has rwkv7-7b "$SERVE_MODELS" && serve rwkv7-7b "$LANE_END" 150
    has llama3-8b "$PEERS" && peer llama3-8b 0 "$LANE_END" 150
    has hf-xlstm-triton "$PEERS" && peer hf-xlstm-triton 0 "$LANE_END" 200
    has xlstm-7b "$SERVE_MODELS" && serve xlstm-7b "$LANE_END" 120
  ) &
  lane_a=$!
  (
    has fla-rwkv7 "$PEERS" && peer fla-rwkv7 1 "$LANE_END" 480
  ) &
  lane_b=$!
  wait $lane_a $lane_b
  mpi=(mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH -np 2)
  for m in rwkv7-7b xlstm-7b; do
    for layout in tp pp; do
      stage "recur-$m-${layout}2" 0,1 "$END" 60 "${mpi[@]}" "$bin/recur" bench --model "$m" --$layout 2 \
        --batch 1,16,256 --prompt "$CONTEXTS" --decode-after 8 --steps 10 --json "$out/recur-$m-${layout}2.json"
    done
  done
else
  recur_bench rwkv7-7b "$END" 150
  recur_bench xlstm-7b "$END" 140
  has rwkv7-7b "$SERVE_MODELS" && serve rwkv7-7b "$END" 150
  has llama3-8b "$PEERS" && peer llama3-8b 0 "$END" 150
  has hf-xlstm-triton "$PEERS" && peer hf-xlstm-triton 0 "$END" 200
  has xlstm-7b "$SERVE_MODELS" && serve xlstm-7b "$END" 120
  has fla-rwkv7 "$PEERS" && peer fla-rwkv7 0 "$END" 400
  [ "$ngpu" -ge 2 ] || echo "# one GPU: the TP2 and PP2 stages need two and were not run" | tee -a "$out/env.txt"
fi

echo "== stages ($(el) s of $BUDGET_S)"
column -t -s $'\t' "$out/stages.tsv" 2>/dev/null || cat "$out/stages.tsv"
tc=$(du -sm "$TRITON_CACHE_DIR" 2>/dev/null | cut -f1)
if [ -n "$(ls -A "$TRITON_CACHE_DIR" 2>/dev/null)" ] && [ "${tc:-99}" -le 60 ]; then
  tar czf "$out/triton-cache.tgz" -C "$TRITON_CACHE_DIR" . && echo "# Triton cache (${tc} MB) in triton-cache.tgz"
fi
python3 scripts/plot_benchmarks.py --in "$out" --out "$out/report" ${PRICE:+--price-per-hour "$PRICE"} \
  >"$out/report.log" 2>&1 || echo "# plot_benchmarks.py failed: see report.log"
cat "$out/report/summary.md" 2>/dev/null || tail -5 "$out/report.log"
echo "# everything in $out; tables in $out/report/summary.md"
# PACK=FILE: the whole output as one tarball (the device tool returns at most 8 files of a
# call, 16 MiB each: OUT=/tmp/serving-bench PACK=$OUT/serving.tgz on the GPU machine); the
# Triton cache, which can be larger, goes beside it as triton-cache.tgz
if [ -n "${PACK:-}" ]; then
  tar czf "$PACK" --exclude=triton-cache.tgz -C "$(dirname "$out")" "$(basename "$out")" &&
    echo "# packed into $PACK ($(du -h "$PACK" | cut -f1))"
  [ -f "$out/triton-cache.tgz" ] && cp "$out/triton-cache.tgz" "$(dirname "$PACK")/"
fi
