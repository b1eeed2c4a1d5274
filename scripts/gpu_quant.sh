#!/usr/bin/env bash
# gpu_quant.sh [BUNDLE_DIR] [all|tests|ppl|bench|summary]: on a GPU machine, from the repository root, the checks and
# measurements of the quantized weight formats (--weights int8|fp8, issue 14), each stage
# on its own (a failing or hanging stage is reported and the next one runs):
#   1. test_quant_cuda: the GPU's codes and scales equal the CPU quantizer's, the device's
#      e4m3 conversion, matmul at 1..200 rows against the CPU (cuBLASLt FP8 and the bf16
#      fallback), logits error and greedy agreement on the RWKV-7 and xLSTM fixtures;
#      with 2+ GPUs also test_quant dist over NCCL (TP 2, PP 2);
#   2. bench_ppl on the GPU: perplexity of the tiny real RWKV-7 per format (f32, bf16,
#      int8, fp8; decode and prefill);
#   3. recur bench at the 7B shapes (rwkv7-7b, xlstm-7b; random weights made on the GPU)
#      for bf16, int8 and fp8: batch 1, 64, 256 and the largest batch that fits, prefill
#      of 2048 tokens; JSON per run to $OUT;
#   4. a summary table per model and format: weight bytes, device memory with the model
#      loaded, batch-1 decode tok/s (and as a fraction of its own bandwidth floor, and
#      against bf16: the target is >= 1.7x for int8 and fp8), the largest batch that fits
#      (= state slots) and its decode tok/s, batch-256 decode and 2048-token prefill.
# The second argument runs one part (tests = 1, ppl = 2, bench = 3, summary = 4 from the
# JSON already in $OUT; default all): the whole script takes several minutes, so on a
# machine with a per-command limit run `tests` and `ppl`, then `bench`, into one $OUT.
# Logs and JSON go to $OUT (default /tmp/gpu_quant). STAGE_TIMEOUT (s, default 400) bounds
# each stage; BENCH_ARGS adds recur bench options (e.g. "--layers 8" for a quick run).
# The bundle: scripts/bundle.sh build .devbundle on the build machine (README, GPU machine).
set -u
cd "$(dirname "$0")/.." || exit 1
bundle=$(cd "${1:-.devbundle}" 2>/dev/null && pwd) || { echo "gpu_quant: no bundle at ${1:-.devbundle}"; exit 1; }
part=${2:-all}
case $part in all|tests|ppl|bench|summary) ;; *) echo "gpu_quant: part must be all, tests, ppl, bench or summary"; exit 2 ;; esac
want() { [ "$part" = all ] || [ "$part" = "$1" ]; }
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RECUR_FIXTURES_DIR="$bundle/fixtures" RECUR_SOURCE_DIR="$PWD" RECUR_BIN="$bundle/bin/recur"
export NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp/gpu_quant}
mkdir -p "$out" || { echo "gpu_quant: cannot create $out"; exit 1; }
tmo=${STAGE_TIMEOUT:-400}
log="$out/gpu_quant-$part.log"
: >"$log"
status=()   # "stage: result" lines for the end
fails=0

# stage NAME CMD...: runs CMD under the timeout, output to NAME.log (and appended to the
# main log), records pass / FAIL(rc) / TIMEOUT / SKIPPED
stage() {
  local name=$1; shift
  local f="$out/$name.log" t0=$SECONDS rc
  echo "=== $name: $*" | tee -a "$log"
  timeout --kill-after=30 "$tmo" "$@" >"$f" 2>&1; rc=$?
  cat "$f" >>"$log"
  local res=pass
  case $rc in
    0) ;;
    77) res=SKIPPED ;;
    124|137) res="TIMEOUT(${tmo}s)"; fails=$((fails + 1)) ;;
    *) res="FAIL($rc)"; fails=$((fails + 1)) ;;
  esac
  status+=("$(printf '%-34s %-14s %5ds' "$name" "$res" $((SECONDS - t0)))")
  echo "--- $name: $res ($((SECONDS - t0)) s; log $f)"
  return 0
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/# gpu: /' | tee -a "$log"
n_gpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ "${n_gpu:-0}" -ge 1 ] 2>/dev/null || n_gpu=1

# ---- 1. correctness
if ! want tests; then :
elif [ -x "$bundle/bin/test_quant_cuda" ]; then
  stage test_quant_cuda "$bundle/bin/test_quant_cuda" cuda
  # the tail of the quality lines, for the summary
  grep -E '^cuda .*(max\|d\|)|matmul|e4m3 conversion' "$out/test_quant_cuda.log" >"$out/quality_cuda.txt" 2>/dev/null
else
  echo "gpu_quant: $bundle/bin/test_quant_cuda missing (a build without CUDA?)" | tee -a "$log"
  status+=("test_quant_cuda                    MISSING"); fails=$((fails + 1))
fi
if want tests && [ "$n_gpu" -ge 2 ] && command -v mpirun >/dev/null; then
  mpirun_flags=(--allow-run-as-root --oversubscribe --bind-to none --mca pml ob1 --mca btl self,vader
                --mca btl_vader_single_copy_mechanism none -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH
                -x RECUR_FIXTURES_DIR -x RECUR_SOURCE_DIR)
  for layout in "2 1" "1 2"; do
    stage "test_quant_dist_cuda_${layout// /x}" mpirun "${mpirun_flags[@]}" -np 2 "$bundle/bin/test_quant" dist $layout cuda
  done
fi

# ---- 2. perplexity per format on the GPU
if ! want ppl; then :
elif [ -x "$bundle/bin/bench_ppl" ]; then
  stage bench_ppl_cuda "$bundle/bin/bench_ppl" --backend cuda
else
  status+=("bench_ppl_cuda                     MISSING"); fails=$((fails + 1))
fi

# ---- 3. recur bench, 7B shapes, per format
# shellcheck disable=SC2206
extra=(${BENCH_ARGS:-})
for model in rwkv7-7b xlstm-7b; do
  want bench || break
  for w in bf16 int8 fp8; do
    stage "bench_${model}_$w" "$bundle/bin/recur" bench --model "$model" --weights "$w" --batch 1,64,256,max \
      --prompt 2048 --json "$out/bench-$model-$w.json" "${extra[@]}"
  done
done

# ---- 4. summary
echo
echo "# stages"
printf '%s\n' "${status[@]}"
echo
if command -v python3 >/dev/null; then
  python3 - "$out" <<'EOF' || echo "gpu_quant: the summary could not be made (see the JSON files in $out)"
import json, os, sys
out = sys.argv[1]
def load(model, w):
    try:
        with open(os.path.join(out, f"bench-{model}-{w}.json")) as f:
            return json.load(f)
    except Exception:
        return None
def row(j, what, batch=None):
    for r in j.get("rows", []):
        if r.get("what") != what:
            continue
        if batch is None or r.get("shape") == f"batch {batch}":
            return r
    return None
print("| model | weights | GEMV GB/s (12288x4096, M=1) | matrices GiB | memory with model GiB | decode b=1 tok/s | "
      "% of own floor | vs bf16 | decode b=256 tok/s | max slots (f32 state) | decode at max tok/s | "
      "prefill 2048 tok/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for model in ("rwkv7-7b", "xlstm-7b"):
    base = None
    for w in ("bf16", "int8", "fp8"):
        j = load(model, w)
        if not j:
            print(f"| {model} | {w} | (no result) | | | | | | | | | |")
            continue
        d1, d256, pf = row(j, "decode", 1), row(j, "decode", 256), row(j, "prefill")
        mx = row(j, "decode", j.get("max_batch")) if j.get("max_batch") else None
        tok1 = d1["throughput"] if d1 else None
        if w == "bf16":
            base = tok1
        pct = d1["pct_of_floor"] if d1 else None
        vs = f"{tok1 / base:.2f}x" if tok1 and base else "-"
        f = lambda v, fmt: (fmt % v) if v is not None else "-"
        print(f"| {model} | {w} | {f(j.get('gemv_gbs'), '%.0f')} | {f(j.get('matrix_bytes', 0) / 2**30, '%.2f')} | "
              f"{f(j.get('mem_model_gib'), '%.2f')} | {f(tok1, '%.1f')} | {f(pct, '%.1f%%')} | {vs} | "
              f"{f(d256['throughput'] if d256 else None, '%.0f')} | {j.get('max_batch', '-')} | "
              f"{f(mx['throughput'] if mx else None, '%.0f')} | {f(pf['throughput'] if pf else None, '%.0f')} |")
EOF
else
  echo "(no python3: the per-run tables are in $out/bench_*.log, JSON in $out/bench-*.json)"
fi
[ -s "$out/bench_ppl_cuda.log" ] && { echo; echo "# perplexity on the GPU (bench_ppl --backend cuda)"; cat "$out/bench_ppl_cuda.log"; }
[ -s "$out/quality_cuda.txt" ] && { echo; echo "# quality on the GPU (test_quant_cuda)"; cat "$out/quality_cuda.txt"; }
echo
echo "gpu_quant: $fails stage(s) failed; logs and JSON in $out"
[ $fails = 0 ]
