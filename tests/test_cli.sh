#!/usr/bin/env bash
# test_cli.sh: the `recur` command line as users and later checks rely on it.
# Needs: RECUR_BIN (the binary), RECUR_FIXTURES_DIR, python3 (stdlib) for float checks.
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
FX=${RECUR_FIXTURES_DIR:?RECUR_FIXTURES_DIR not set}/rwkv7
TINY=$FX/tiny-rwkv-7v0-834K-FP32.bin
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/recur_testlib.sh"

# expect_exit CODE DESC CMD...: runs CMD, checks its exit code, keeps stderr in $T/err
expect_exit() {
  local want=$1 desc=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local got=$?
  if [ "$got" = "$want" ]; then pass "$desc (exit $got)"; else fail "$desc: exit $got, want $want"; sed 's/^/     /' "$T/err" | head -5; fi
}
expect_err() { # expect_err PATTERN DESC: the last command's stderr mentions PATTERN
  if grep -q -- "$1" "$T/err"; then pass "$2"; else fail "$2: stderr lacks '$1'"; sed 's/^/     /' "$T/err" | head -5; fi
}

# ---- usage errors: a message and exit 2, never a crash
expect_exit 2 "no arguments" "$BIN"
expect_exit 2 "unknown command" "$BIN" frobnicate
expect_exit 2 "logits without --out" "$BIN" logits --model "$TINY" --tokens 1,2
expect_exit 2 "bad token list" "$BIN" logits --model "$TINY" --tokens 1,x,3 --out "$T/l"
expect_err "comma-separated" "bad token list explained"
expect_exit 2 "empty token list" "$BIN" logits --model "$TINY" --tokens "" --out "$T/l"
expect_exit 2 "unknown option" "$BIN" generate --prompt hi --frobnicate 3
expect_exit 2 "option without value" "$BIN" generate --prompt
expect_exit 2 "top-p out of range" "$BIN" generate --prompt hi --top-p 2
expect_exit 2 "negative max-tokens" "$BIN" generate --prompt hi --max-tokens -1
expect_exit 2 "empty prompt" "$BIN" generate --prompt ""
expect_exit 0 "help" "$BIN" help
expect_exit 0 "version" "$BIN" version

# ---- runtime errors: exit 1 with a message naming the problem
expect_exit 1 "missing model file" "$BIN" logits --model "$T/nope.bin" --tokens 1 --out "$T/l"
expect_err "nope.bin" "missing model named"
head -c 100000 "$TINY" >"$T/trunc.bin"
expect_exit 1 "truncated model file" "$BIN" logits --model "$T/trunc.bin" --tokens 1 --out "$T/l"
expect_err "trunc.bin" "truncated model named"
expect_exit 1 "token outside the vocabulary" "$BIN" logits --model "$TINY" --tokens 1,256 --out "$T/l"
expect_err "outside the vocabulary" "bad token explained"
expect_exit 1 "state file of the wrong size" "$BIN" logits --model "$TINY" --tokens 1 --out "$T/l" --state-in "$TINY"
expect_exit 1 "unwritable output" "$BIN" logits --model "$TINY" --tokens 1 --out /nonexistent/dir/l

# ---- recur logits against rwkv.cpp's expected logits, and resume through state files
expect_exit 0 "logits on the tiny model" "$BIN" logits --model "$TINY" --tokens 34,105,110 --out "$T/l3"
expect_exit 0 "logits, first two tokens, state out" "$BIN" logits --model "$TINY" --tokens 34,105 --out "$T/l2" --state-out "$T/s2"
expect_exit 0 "logits, third token from state" "$BIN" logits --model "$TINY" --tokens 110 --out "$T/l1" --state-in "$T/s2"
expect_exit 0 "logits, chunk 1" "$BIN" logits --model "$TINY" --tokens 34,105,110 --out "$T/l3c" --chunk 1
python3 - "$T" "$FX/expected-logits-7v0-834K.bin" <<'PY' && pass "logits match rwkv.cpp within 1e-4; resume and chunked agree exactly" || fail "logits values"
import struct, sys
t, ref = sys.argv[1], sys.argv[2]
f = lambda p: struct.unpack('<%df' % (len(open(p, 'rb').read()) // 4), open(p, 'rb').read())
l3, exp, l1, l3c = f(t + '/l3'), f(ref), f(t + '/l1'), f(t + '/l3c')
assert len(l3) == 3 * 256 and len(l1) == 256, (len(l3), len(l1))
d = max(abs(a - b) for a, b in zip(l3[512:], exp))
print('     max |logits - rwkv.cpp expected| = %.3g' % d)
assert d <= 1e-4
assert l3[512:] == l1, 'resume from --state-out/--state-in differs'
assert l3 == l3c, '--chunk 1 differs'
PY

# ---- generate: text on stdout, greedy deterministic, seeds reproducible
expect_exit 0 "generate, bundled model, greedy" "$BIN" generate --prompt "Once upon a time" --max-tokens 40 --temperature 0
cp "$T/out" "$T/g1"
if [ "$(wc -c <"$T/g1")" -ge 10 ]; then pass "generate printed text: $(head -c 60 "$T/g1" | tr '\n' ' ')"; else fail "generate printed too little"; fi
"$BIN" generate --prompt "Once upon a time" --max-tokens 40 --temperature 0 >"$T/g2" 2>/dev/null
cmp -s "$T/g1" "$T/g2" && pass "greedy is deterministic" || fail "greedy differs between runs"
"$BIN" generate --prompt "The cat" --max-tokens 60 --temperature 1 --top-p 0.9 --top-k 40 --seed 7 >"$T/s7a" 2>/dev/null
"$BIN" generate --prompt "The cat" --max-tokens 60 --temperature 1 --top-p 0.9 --top-k 40 --seed 7 >"$T/s7b" 2>/dev/null
"$BIN" generate --prompt "The cat" --max-tokens 60 --temperature 1 --top-p 0.9 --top-k 40 --seed 8 >"$T/s8" 2>/dev/null
cmp -s "$T/s7a" "$T/s7b" && pass "same seed, same text" || fail "same seed gave different text"
cmp -s "$T/s7a" "$T/s8" && fail "seeds 7 and 8 gave the same 60 tokens" || pass "different seeds, different text"
expect_exit 0 "generate with an explicit model path" "$BIN" generate --model "$TINY" --prompt "In the" --max-tokens 5 --temperature 0
expect_exit 0 "generate --max-tokens 0" "$BIN" generate --prompt "In the" --max-tokens 0

# ---- --state bf16: the recurrent state's matrices stored as bf16 (half the slot)
expect_exit 0 "logits, bf16 state, one pass" "$BIN" logits --model "$TINY" --tokens 34,105,110 --out "$T/b3" --state bf16
expect_exit 0 "logits, bf16 state, two tokens, state out" "$BIN" logits --model "$TINY" --tokens 34,105 --out "$T/b2" --state-out "$T/bs2" --state bf16
expect_exit 0 "logits, bf16 state, third token from the bf16 state file" "$BIN" logits --model "$TINY" --tokens 110 --out "$T/b1" --state-in "$T/bs2" --state bf16
python3 - "$T" "$FX/expected-logits-7v0-834K.bin" <<'PY' && pass "bf16 state: logits within 1e-3 of rwkv.cpp; resume equal; state file about half the f32 one" || fail "bf16 state logits / state file"
import os, struct, sys
t, ref = sys.argv[1], sys.argv[2]
f = lambda p: struct.unpack('<%df' % (len(open(p, 'rb').read()) // 4), open(p, 'rb').read())
b3, exp, b1 = f(t + '/b3'), f(ref), f(t + '/b1')
d = max(abs(a - b) for a, b in zip(b3[512:], exp))
print('     bf16 state: max |logits - rwkv.cpp expected| = %.3g' % d)
assert d <= 1e-3
assert b3[512:] == b1, 'resume from a bf16 --state-out/--state-in differs'
n16, n32 = os.path.getsize(t + '/bs2'), os.path.getsize(t + '/s2')
print('     state file: %d bytes (bf16) vs %d (f32)' % (n16, n32))
assert 0.45 * n32 < n16 < 0.6 * n32
PY
expect_exit 1 "an f32 state file into a bf16-state model" "$BIN" logits --model "$TINY" --tokens 110 --out "$T/l" --state-in "$T/s2" --state bf16
expect_err "bf16" "state dtype named in the message"
expect_exit 2 "bad --state" "$BIN" generate --prompt hi --state f16
expect_exit 0 "generate, bf16 state, greedy" "$BIN" generate --prompt "Once upon a time" --max-tokens 40 --temperature 0 --state bf16
cmp -s "$T/out" "$T/g1" && pass "greedy text with a bf16 state equals the f32 state's" || fail "greedy text differs with a bf16 state"

# ---- xLSTM: a Hugging Face model directory (config.json + model.safetensors)
XL=${RECUR_SOURCE_DIR:?}/tests/fixtures/xlstm-tiny
toks=$(python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read(); print(','.join(str(x) for x in struct.unpack('<%dI'%(len(d)//4),d)))" "$XL/ref-tokens-long.u32")
expect_exit 0 "logits on an xLSTM model directory" "$BIN" logits --model "$XL" --tokens "$toks" --out "$T/xl"
python3 - "$T/xl" "$XL/ref-logits-long-step.f32" <<'PY' && pass "xLSTM logits match transformers within 1e-4 (no BOS added)" || fail "xLSTM logits values"
import struct, sys
f = lambda p: struct.unpack('<%df' % (len(open(p, 'rb').read()) // 4), open(p, 'rb').read())
a, b = f(sys.argv[1]), f(sys.argv[2])
assert len(a) == len(b), (len(a), len(b))
d = max(abs(x - y) for x, y in zip(a, b))
print('     max |logits - transformers| = %.3g' % d)
assert d <= 1e-4
PY
expect_exit 0 "generate on an xLSTM model directory" "$BIN" generate --model "$XL" --prompt "abc" --max-tokens 8 --temperature 0
expect_exit 0 "generate on xLSTM with an empty prompt (BOS alone)" "$BIN" generate --model "$XL" --prompt "" --max-tokens 4 --temperature 0

# ---- recur bench (CPU, the tiny model): a table with every row, and JSON
expect_exit 0 "bench on the CPU" "$BIN" bench --model "$TINY" --backend cpu --batch 1,3 --prompt 16,32 --steps 2 --decode-after 2 --json "$T/b.json"
for row in "d2d copy" "gemm (weights)" "decode           batch 1" "decode           batch 3" "prefill          prompt 32"; do
  grep -q -- "$row" "$T/out" && pass "bench row: $row" || fail "bench row missing: $row"
done
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert len(d['rows'])==6 and all(r['throughput']>0 for r in d['rows'])" "$T/b.json" \
  && pass "bench JSON has the decode and prefill rows" || fail "bench JSON"
expect_exit 0 "bench on the CPU, bf16 state" "$BIN" bench --model "$TINY" --backend cpu --state bf16 --batch 2 --prompt 16 --steps 1 --json "$T/b16.json"
grep -q "state bf16" "$T/out" && pass "bench prints the state dtype" || fail "bench does not print the state dtype"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); e=json.load(open(sys.argv[2])); assert d['state']=='bf16' and e['state']=='f32' and 0 < d['state_bytes'] < e['state_bytes']" "$T/b16.json" "$T/b.json" \
  && pass "bench JSON: state dtype and bytes per slot" || fail "bench JSON state fields"
expect_exit 2 "bench with a bad option" "$BIN" bench --batch 0
# the prefill floor's GEMM rate is measured at the rows of each prompt's pieces, min(prompt, --piece)
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert [g['rows'] for g in d['gemm']]==[16,32] and all(g['tflops']>0 for g in d['gemm'])" "$T/b.json" \
  && pass "bench JSON: a GEMM rate per prefill piece size" || fail "bench JSON GEMM rates"
expect_exit 0 "bench with --piece 32" "$BIN" bench --model "$TINY" --backend cpu --batch 1 --prompt 16,48,64 --piece 32 --steps 1 --json "$T/bp.json"
grep -q -- "gemm (flops)     2048x4096 M=16 " "$T/out" && grep -q -- "gemm (flops)     2048x4096 M=32 " "$T/out" \
  && [ "$(grep -c -- 'gemm (flops)' "$T/out")" = 2 ] && pass "bench --piece: GEMM rows at 16 and 32 (48 and 64 run 32-row pieces)" \
  || fail "bench --piece GEMM rows"
python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); r={g['rows']:g['tflops'] for g in d['gemm']}
p=[x for x in d['rows'] if x['what']=='prefill']
# floor = flops / rate: per token, the 48- and 64-token prompts share the 32-row rate, the 16-token one has its own
f=[x['floor_ms']/x['n'] for x in p]
assert abs(f[1]-f[2]) < 1e-3*max(f) and abs(f[0]*r[16]-f[1]*r[32]) < 2e-3*f[0]*r[16], (f, r)" "$T/bp.json" \
  && pass "bench --piece: each prefill floor uses its pieces' GEMM rate" || fail "bench --piece prefill floors"
# --skip: the decode batches again per set, with the set's kernels left out
expect_exit 0 "bench --skip on the CPU" "$BIN" bench --model "$TINY" --backend cpu --batch 1,2 --prompt 16 --steps 1 --skip "recur;norm1,shift1" --json "$T/bs.json"
python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); s=[x['shape'] for x in d['rows'] if x['what']=='decode']
assert s==['batch 1','batch 2','batch 1 w/o recur','batch 2 w/o recur','batch 1 w/o norm1,shift1','batch 2 w/o norm1,shift1'], s" "$T/bs.json" \
  && pass "bench --skip: a decode row per batch and set" || fail "bench --skip rows"
expect_exit 2 "bench --skip with an unknown kernel" "$BIN" bench --model "$TINY" --backend cpu --skip "norm1,lnx"
# --decode-after (the first bench above): batch-1 decode steps after each prefill
python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); r=[x for x in d['rows'] if x['what']=='decode@context']
assert [x['n'] for x in r]==[16,32] and all(x['throughput']>0 and x['shape']=='batch 1 after %d' % x['n'] for x in r)
assert [x['n'] for x in d['rows'] if x['what']=='prefill']==[16,32] and [x['n'] for x in d['rows'] if x['what']=='decode']==[1,3]" "$T/b.json" \
  && pass "bench --decode-after: decode@context rows for 16 and 32, with n in the JSON" || fail "bench --decode-after rows"

echo "$fails failed"
[ "$fails" = 0 ]
