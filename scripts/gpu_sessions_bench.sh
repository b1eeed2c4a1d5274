#!/usr/bin/env bash
# gpu_sessions_bench.sh [BUNDLE_DIR]: on a GPU machine, what a session saves in time to first
# token. For each model shape (random weights, made on the device), a fresh `recur serve
# --backend cuda` and `recur_loadgen --session-turns` over its HTTP API: conversations of
# TURNS turns (default 10), each turn PLEN new prompt tokens (default 2000) and OLEN generated
# (default 64, ignore_eos, greedy), run twice on the same plan:
#   session: each turn sends only its new tokens with session_id (the state holds the rest);
#   resend:  each turn sends the whole history again, without a session (what a stateless
#            OpenAI-style client does); the history's earlier outputs are placeholder ids of
#            the same count (recur_loadgen.c), so the same number of tokens is prefilled.
# Prints loadgen's per-turn table and, at the end, one table over the models: what, context
# tokens, TTFT ms (p50 over CONV conversations), ratio; JSON per model and a summary in $OUT.
#
# Run from a bundle made here (scripts/bundle.sh build .devbundle), like scripts/gpu_serve.sh:
#     bash scripts/gpu_sessions_bench.sh .devbundle
# Env: MODELS (default "rwkv7-7b xlstm-7b"; a model path works too), BACKEND (default cuda;
# cpu to try the script on the tiny model: MODELS=models/tiny-rwkv-7v0-834K-FP32.bin
# BACKEND=cpu TURNS=3 PLEN=50 OLEN=8 bash scripts/gpu_sessions_bench.sh build), TURNS, PLEN, OLEN, CONV (conversations at once,
# default 1), STAGE_S (time box per model, default 280 s), SERVE_ARGS (extra serve flags), OUT
# (default /tmp/sessions-bench). Exit 1 when a model's run failed (the others still run).
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=$(cd "${1:-.devbundle}" && pwd)
bin=$bundle/bin
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RECUR_FIXTURES_DIR="$bundle/fixtures" NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp/sessions-bench}
mkdir -p "$out"
TURNS=${TURNS:-10} PLEN=${PLEN:-2000} OLEN=${OLEN:-64} CONV=${CONV:-1} STAGE_S=${STAGE_S:-280}
for f in "$bin/recur" "$bin/recur_loadgen"; do
  [ -x "$f" ] || { echo "gpu_sessions_bench: $f is missing (scripts/bundle.sh build $bundle)"; exit 1; }
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/# gpu: /'
echo "# $TURNS turns x ($PLEN prompt + $OLEN generated tokens), $CONV conversation(s) at once"
status=0
summary=()
for model in ${MODELS:-rwkv7-7b xlstm-7b}; do
  echo "### $model"
  tag=$(basename "$model")
  # the sessions stay in state slots between turns (--session-slots: half of --slots)
  "$bin/recur" serve --model "$model" --backend "${BACKEND:-cuda}" --port 0 --slots 16 --log-level warn --drain-timeout-s 5 \
    ${SERVE_ARGS:-} >"$out/serve-$tag.out" 2>"$out/serve-$tag.err" &
  spid=$!
  url=
  for _ in $(seq 1800); do
    url=$(sed -n 's/^recur serve: http on //p' "$out/serve-$tag.out")
    [ -n "$url" ] && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "serve did not come up:"; tail -5 "$out/serve-$tag.err"
    kill -9 $spid 2>/dev/null; wait $spid 2>/dev/null
    status=1; summary+=("| $model | serve did not come up | | |"); continue
  fi
  # warm-up, not measured: CUDA graphs, cuBLAS, the allocator, a session's first save
  timeout 120 "$bin/recur_loadgen" --http "$url" --session-turns 2 --requests 1 --prompt-len 512 --output-len 8 \
    --seed 99 >/dev/null 2>&1
  rc=0
  timeout "$STAGE_S" "$bin/recur_loadgen" --http "$url" --session-turns "$TURNS" --requests "$CONV" \
    --concurrency "$CONV" --prompt-len "$PLEN" --output-len "$OLEN" --seed 1 --timeout-ms 300000 \
    --label "$tag" --json "$out/sessions-$tag.json" 2>&1 | tee "$out/sessions-$tag.txt"
  rc=${PIPESTATUS[0]}
  kill -TERM $spid 2>/dev/null
  wait $spid 2>/dev/null
  grep "tokens out" "$out/serve-$tag.err" | sed 's/^/# /'
  if [ "$rc" != 0 ] || [ ! -s "$out/sessions-$tag.json" ]; then
    echo "recur_loadgen failed (exit $rc)"; status=1; summary+=("| $model | run failed (exit $rc) | | |"); continue
  fi
  # the last turn's row of each way, from the JSON (python3 if there is one, else loadgen's table)
  if command -v python3 >/dev/null; then
    rows=$(python3 - "$out/sessions-$tag.json" "$tag" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); m = sys.argv[2]; l = j["last_turn"]; t = j["config"]["turns"]
print("| %s: turn %d with a session | %d | %.1f | 1.00 |" % (m, t, l["context_tokens"], l["ttft_session_ms"]))
print("| %s: turn %d resending the history | %d | %.1f | %.2f |" % (m, t, l["context_tokens"], l["ttft_resend_ms"],
                                                                    l["ratio"]))
EOF
)
  else
    rows=$(grep -E '^\| turn [0-9]+ (with a session|resending)' "$out/sessions-$tag.txt" | sed "s/^| /| $tag: /")
  fi
  while IFS= read -r r; do summary+=("$r"); done <<<"$rows"
done
echo
echo "### time to first token of turn $TURNS ($PLEN-token turns, $OLEN generated each)"
echo "| what | context tokens | TTFT ms (p50) | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${summary[@]}"
printf '%s\n' "${summary[@]}" >"$out/summary.md"
if command -v python3 >/dev/null; then
  python3 - "$out" <<'EOF'
import glob, json, os, sys
d = sys.argv[1]; res = {}
for p in sorted(glob.glob(os.path.join(d, "sessions-*.json"))):
    j = json.load(open(p))
    res[j.get("label", os.path.basename(p))] = {"config": j["config"], "last_turn": j["last_turn"],
                                                 "requests_failed": j["requests_failed"]}
json.dump(res, open(os.path.join(d, "summary.json"), "w"), indent=1)
EOF
fi
echo "# results in $out (sessions-MODEL.json / .txt, serve logs, summary.md, summary.json)"
exit $status
