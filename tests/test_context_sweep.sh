#!/usr/bin/env bash
# test_context_sweep.sh: scripts/context_sweep.py on the CPU with small shapes (--device cpu
# --tiny), a smoke test of the script's logic, not a measurement:
#   - the transformer: prefill and decode rows at every context and batch, status ok with
#     positive times; a memory-only context too large to allocate is recorded as "oom"
#     (not a crash) with the KV bytes it needed; the JSON is complete at the end;
#   - --deadline-s: rows that would run past it are "skipped" with the reason;
#   - transformers' xLSTM (pure PyTorch at this size): prefill, decode from the prefilled
#     cache, and the batch-4 decode measured once and repeated for the next context;
#   - scripts/plot_benchmarks.py reads the JSON it writes (tables, the OOM point).
# Needs a Python with torch and transformers 5 (RECUR_TEST_TORCH_PY, default python3):
# skipped (77) without them, as on CI; the GPU machines run the real thing
# (scripts/gpu_serving_bench.sh).
set -u
SRC=${RECUR_SOURCE_DIR:?RECUR_SOURCE_DIR not set}
PY=${RECUR_TEST_TORCH_PY:-python3}
"$PY" -c "import torch, transformers; assert int(transformers.__version__.split('.')[0]) >= 5" 2>/dev/null \
  || { echo "SKIP: no torch + transformers 5 in $PY (set RECUR_TEST_TORCH_PY)"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-cs-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/recur_testlib.sh"
CS="$SRC/scripts/context_sweep.py"

"$PY" "$CS" --which llama3-8b --device cpu --tiny --contexts 64,256 --mem-only 128,1099511627776 --batches 1,4 \
  --steps 2 --json "$T/l.json" >"$T/l.log" 2>&1; rc=$?
python3 - "$T/l.json" "$rc" <<'EOF' && pass "transformer: prefill/decode rows ok, memory-only OOM recorded" || { fail "transformer rows"; cat "$T/l.log"; }
import json, sys
d = json.load(open(sys.argv[1])); assert sys.argv[2] == "0"
assert d["engine"] == "llama3-8b" and d["kind"] == "transformer" and d["kv_bytes_per_token"] > 0 and "total_s" in d
rows = {(r["what"], r["context"], r["batch"]): r for r in d["rows"]}
for L in (64, 256):
    p = rows[("prefill", L, 1)]
    assert p["status"] == "ok" and p["ttft_ms"] > 0 and abs(p["tok_s"] - L / (p["ttft_ms"] / 1e3)) < 1e-6 * p["tok_s"]
    for B in (1, 4):
        r = rows[("decode", L, B)]
        assert r["status"] == "ok" and r["step_ms"] > 0 and abs(r["tok_s"] - B / (r["step_ms"] / 1e3)) < 1e-6 * r["tok_s"]
assert rows[("memory", 128, 1)]["status"] == "ok"
big = rows[("memory", 1099511627776, 1)]
assert big["status"] == "oom" and big["kv_needed_gib"] > 1e3, big
EOF

"$PY" "$CS" --which llama3-8b --device cpu --tiny --contexts 64,4096,65536 --mem-only "" --batches 1 --steps 2 \
  --deadline-s 4 --json "$T/d.json" >"$T/d.log" 2>&1; rc=$?
python3 - "$T/d.json" "$rc" <<'EOF' && pass "--deadline-s: later rows skipped with the reason" || { fail "deadline"; cat "$T/d.log"; }
import json, sys
d = json.load(open(sys.argv[1])); assert sys.argv[2] == "0"
last = [r for r in d["rows"] if r["context"] == 65536]
assert last and all(r["status"] == "skipped" and "deadline" in r["note"] for r in last), last
EOF

"$PY" "$CS" --which hf-xlstm-triton --device cpu --tiny --contexts 32,96 --mem-only 300 --batches 1,4 --steps 2 \
  --json "$T/x.json" >"$T/x.log" 2>&1; rc=$?
python3 - "$T/x.json" "$rc" <<'EOF' && pass "xLSTM: prefill, decode, batch-4 decode measured once" || { fail "xLSTM rows"; cat "$T/x.log"; }
import json, sys
d = json.load(open(sys.argv[1])); assert sys.argv[2] == "0"
rows = {(r["what"], r["context"], r["batch"]): r for r in d["rows"]}
assert d["kind"] == "recurrent"
assert all(rows[("prefill", L, 1)]["status"] == "ok" and rows[("prefill", L, 1)]["state_bytes"] > 0 for L in (32, 96))
a, b = rows[("decode", 32, 4)], rows[("decode", 96, 4)]
assert a["status"] == b["status"] == "ok" and a["tok_s"] == b["tok_s"] and "measured once" in b["note"]
assert rows[("decode", 96, 1)]["status"] == "ok" and rows[("memory", 300, 1)]["status"] == "ok"
EOF
# the JSON is what scripts/plot_benchmarks.py reads
mkdir -p "$T/run"
cp "$T/l.json" "$T/run/peer-llama3-8b.json"
cp "$T/x.json" "$T/run/peer-hf-xlstm-triton.json"
python3 "$SRC/scripts/plot_benchmarks.py" --in "$T/run" --out "$T/rep" --no-plots >"$T/p.log" 2>&1 \
  && grep -q "^| 256 | " "$T/rep/summary.md" && grep -q "batch 1, memory: out of memory at" "$T/rep/summary.md" \
  && pass "plot_benchmarks.py reads the sweep's JSON (tables, the OOM point)" || { fail "plot_benchmarks.py on the sweep"; cat "$T/p.log"; }
[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
