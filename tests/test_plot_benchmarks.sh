#!/usr/bin/env bash
# test_plot_benchmarks.sh: scripts/plot_benchmarks.py on a small run directory made here:
# recur's own JSON from the real tools on the tiny model (recur bench on the CPU at prompts
# of 64 and 256 tokens, recur_loadgen --http against recur serve at concurrency 1 and 4) and
# peers' JSON written by hand in context_sweep.py's format with known numbers (a transformer
# that runs out of memory at batch 16 and at 1M, a recurrent peer). Checks:
#   - the four PNGs are drawn (PNG signature, not tiny) and data/ holds the inputs;
#   - summary.md: a TTFT row per context with the measured values, the transformer ÷ recur
#     ratio computed from the files, OOM cells, the measured OOM points, the computed
#     longest context (80 GiB free / 128 KiB per token = 640K), the serving table with the
#     loadgen's p50 TTFT, the cost per million tokens ($3.60/h at 1,000 tok/s = $1.0000);
#   - --no-plots: tables without PNGs; no --price-per-hour: the cost table says so;
#   - a directory without inputs: exit non-zero with a message.
# These numbers are test inputs, not measurements. Needs Debian's python3 with matplotlib
# (python3-matplotlib, scripts/setup.sh): skipped (77) without it except on CI (CI=true).
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
SRC=${RECUR_SOURCE_DIR:?RECUR_SOURCE_DIR not set}
LG="$(dirname "$BIN")/recur_loadgen"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import matplotlib" 2>/dev/null; then
  [ "${CI:-}" = true ] && { echo "FAIL: matplotlib missing on CI (scripts/setup.sh installs python3-matplotlib)"; exit 1; }
  echo "SKIP: no matplotlib for $PY (apt-get install python3-matplotlib)"; exit 77
fi
TINY=${RECUR_FIXTURES_DIR:-$SRC/tests/fixtures}/rwkv7/tiny-rwkv-7v0-834K-FP32.bin
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-plot-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/recur_testlib.sh"
R="$T/run"
mkdir -p "$R"

# --- recur's JSON from the real tools
"$BIN" bench --model "$TINY" --backend cpu --batch 1,16 --prompt 64,256 --steps 1 --decode-after 2 \
  --json "$R/recur-rwkv7-7b-1gpu.json" >"$T/bench.log" 2>&1 || { fail "recur bench"; cat "$T/bench.log"; }
"$BIN" serve --port 0 --slots 8 --drain-timeout-s 1 >"$T/serve.out" 2>"$T/serve.err" &
SPID=$!
URL=$(serve_url "$T/serve.out" "$SPID")
[ -n "$URL" ] || { fail "serve did not come up"; cat "$T/serve.err"; exit 1; }
for n in 1 4; do
  "$LG" --http "$URL" --concurrency $n --requests $((2 * n)) --prompt-len 16 --output-len 8 --label "tiny c=$n" \
    --json "$R/serve-rwkv7-7b-c$n.json" >/dev/null 2>&1 || fail "loadgen c=$n"
done
kill -TERM "$SPID"; wait "$SPID"; SPID=

# --- the peers: context_sweep.py's format, numbers chosen for the checks below
"$PY" - "$R" <<'EOF'
import json, sys
R = sys.argv[1]
llama = dict(engine="llama3-8b", kind="transformer", tool="context_sweep.py", version=1, kv_bytes_per_token=131072,
             total_gib=100.0, weights_used_gib=20.0, params=8.03e9, warmup_s=1.0, cuda_graph_decode=True,
             attention={"prefill": {"chosen": "FLASH_ATTENTION"}, "decode": {"chosen": "FLASH_ATTENTION"}}, rows=[
    dict(what="prefill", context=64, batch=1, status="ok", ttft_ms=50.0, tok_s=1280.0, device_used_gib=21.0),
    dict(what="decode", context=64, batch=1, status="ok", step_ms=10.0, tok_s=100.0, device_used_gib=21.0),
    dict(what="decode", context=64, batch=16, status="ok", step_ms=16.0, tok_s=1000.0, device_used_gib=22.0),
    dict(what="prefill", context=256, batch=1, status="ok", ttft_ms=400.0, tok_s=640.0, device_used_gib=22.0),
    dict(what="decode", context=256, batch=1, status="ok", step_ms=12.0, tok_s=83.3, device_used_gib=22.0),
    dict(what="decode", context=256, batch=16, status="oom", note="OutOfMemoryError: synthetic"),
    dict(what="memory", context=1048576, batch=1, status="oom", note="OutOfMemoryError: synthetic", kv_needed_gib=128.0)])
fla = dict(engine="fla-rwkv7", kind="recurrent", tool="context_sweep.py", version=1, params=7.2e9, warmup_s=2.0, rows=[
    dict(what="prefill", context=64, batch=1, status="ok", ttft_ms=30.0, tok_s=2133.0, device_used_gib=15.0),
    dict(what="decode", context=64, batch=1, status="ok", step_ms=60.0, tok_s=16.7),
    dict(what="decode", context=64, batch=16, status="ok", step_ms=80.0, tok_s=200.0),
    dict(what="prefill", context=256, batch=1, status="skipped", note="skipped: synthetic deadline"),
    dict(what="memory", context=1048576, batch=1, status="ok", device_used_gib=16.0)])
json.dump(llama, open(f"{R}/peer-llama3-8b.json", "w")); json.dump(fla, open(f"{R}/peer-fla-rwkv7.json", "w"))
open(f"{R}/env.txt", "w").write("date_utc: 2000-01-01T00:00:00Z\ncommit: test\ngpu: 0, Test GPU, 1, 100 GiB, 0 MiB\n")
open(f"{R}/stages.tsv", "w").write("stage\tgpu\tstart_s\telapsed_s\tresult\tnote\nrecur-rwkv7-7b\t0\t0\t5\tok\t\n")
EOF

"$PY" "$SRC/scripts/plot_benchmarks.py" --in "$R" --out "$T/rep" --price-per-hour 3.6 >"$T/p.log" 2>&1; rc=$?
[ $rc = 0 ] || { fail "plot_benchmarks.py: rc $rc"; cat "$T/p.log"; }
"$PY" - "$T/rep" "$R" <<'EOF' && pass "4 PNGs drawn, data/ holds the inputs" || fail "PNGs / data"
import os, sys
rep, run = sys.argv[1:3]
for f in ["throughput_vs_context.png", "ttft_vs_context.png", "memory_vs_context.png", "latency_vs_concurrency.png"]:
    b = open(os.path.join(rep, f), "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) > 10000, (f, len(b))
assert sorted(os.listdir(os.path.join(rep, "data"))) == sorted(os.listdir(run))
EOF
"$PY" - "$T/rep/summary.md" "$R" <<'EOF' && pass "summary.md: TTFT values and ratio, OOM cells and points, 640K computed, serving, \$1.0000" || { fail "summary.md"; cat "$T/rep/summary.md"; }
import json, sys
s = open(sys.argv[1]).read(); R = sys.argv[2]
b = json.load(open(f"{R}/recur-rwkv7-7b-1gpu.json"))
pre = {r["n"]: r for r in b["rows"] if r["what"] == "prefill"}
sec = s.split("### Time to first token (ms)")[1].split("###")[0]
row64 = [l for l in sec.splitlines() if l.startswith("| 64 |")][0].split(" | ")
def f(x): return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"
assert row64[1] == f(pre[64]["ms"]), (row64, pre[64]["ms"])
assert row64[2] == "50.0" and row64[3] == "30.0", row64          # llama, fla
assert f(50.0 / pre[64]["ms"]) + "×" in row64[-1], (row64, 50.0 / pre[64]["ms"])   # transformer ÷ recur
row256 = [l for l in sec.splitlines() if l.startswith("| 256 |")][0]
assert "skipped" in row256, row256
d16 = s.split("### Decode at batch 16")[1].split("###")[0]
assert [l for l in d16.splitlines() if l.startswith("| 256 |")][0].count("OOM") >= 1
assert "batch 16, decode: out of memory at 256 tokens" in s and "batch 1, memory: out of memory at 1M tokens" in s
assert "| 1 | 640K |" in s, "computed longest context"
srv = json.load(open(f"{R}/serve-rwkv7-7b-c4.json"))
t = srv["ttft_ms"]
assert f"| 4 | 8 (0) |" in s and f"{f(t['p50'])} / {f(t['p90'])} / {f(t['p99'])}" in s
assert "decode batch 16 at 64 (engine) | 1 | 1,000 | $1.0000 |" in s, "cost"
assert "2000-01-01" in s and "1 x Test GPU (100 GiB), driver 1" in s and "recur-rwkv7-7b" in s
EOF
"$PY" "$SRC/scripts/plot_benchmarks.py" --in "$R" --out "$T/rep2" --no-plots >/dev/null 2>&1 \
  && [ -f "$T/rep2/summary.md" ] && ! ls "$T/rep2"/*.png >/dev/null 2>&1 && grep -q "No --price-per-hour" "$T/rep2/summary.md" \
  && pass "--no-plots: tables only; no price: the cost table says so" || fail "--no-plots"
mkdir -p "$T/empty"
"$PY" "$SRC/scripts/plot_benchmarks.py" --in "$T/empty" --out "$T/rep3" >"$T/e.log" 2>&1
[ $? != 0 ] && grep -q "no recur-" "$T/e.log" && pass "no inputs: exit non-zero with a message" || fail "empty input dir"
[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
