#!/usr/bin/env bash
# test_loadgen_http.sh: recur_loadgen against `recur serve` on the bundled tiny model, over
# the HTTP API (SSE streams) and the protobuf API:
#   - 40 requests, 8 in flight, prompt and output lengths drawn (uniform), a warm-up: exit 0,
#     the JSON has every documented key; 40 ok, 0 failed; the server's usage counts equal
#     the planned tokens exactly (token-id prompts, ignore_eos); the server's own
#     /metrics counter of generated tokens grew by the same amount; percentiles ordered
#     (p50 <= p90 <= p99 <= max); requests overlapped (the sum of latencies > 2 x wall);
#   - the same seed gives the same plan at another concurrency; another seed another plan;
#   - lognormal and normal lengths with MIN:MAX clamps stay inside them;
#   - prompts over serve's --max-prompt fail (HTTP 400 with the server's message) and are
#     counted: failures == the planned prompts over the limit, exit 1;
#   - --gpu-mem-ms with a stand-in nvidia-smi on PATH: peak and mean per GPU from its lines;
#     with none on PATH: a warning, gpu_memory_mib null, exit 0;
#   - the protobuf API (--connect) with the same plan: the same token counts;
#   - --session-turns (multi-turn conversations, with a session and resending the history):
#     both ways see the same context per turn, the session's cached_tokens are the earlier
#     turns less the one token not yet consumed, the table and the JSON; a mode alone; the
#     usage error without --prompt-len;
#   - a server that is not there: every request fails, exit 1, no hang.
# Needs: RECUR_BIN (recur_loadgen next to it), python3 (standard library only).
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
LG="$(dirname "$BIN")/recur_loadgen"
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-lg-XXXXXX")
. "$(dirname "$0")/recur_testlib.sh"
SPID=
cleanup() { [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

"$BIN" serve --port 0 --max-prompt 200 --slots 16 --drain-timeout-s 1 >"$T/serve.out" 2>"$T/serve.err" &
SPID=$!
URL=$(serve_url "$T/serve.out" "$SPID")
EP=$(serve_url "$T/serve.out" "$SPID" "recur serve: listening on ")
if [ -z "$URL" ]; then
  fail "serve did not come up"; sed 's/^/     /' "$T/serve.err" | head; exit 1
fi
pass "serve up: $URL"

gen_tokens() { # the server's counter of generated tokens
  python3 -c "
import sys, urllib.request
t = urllib.request.urlopen('$URL/metrics').read().decode()
print(int(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith('recur_generation_tokens_total'))))"
}

# --- the main run
"$LG" --http "$URL" --concurrency 8 --requests 40 --prompt-len uniform:8:64 --output-len uniform:4:24 --seed 5 \
  --warmup 4 --label "tiny c8" --json "$T/a.json" >"$T/a.txt" 2>"$T/a.err"; rc=$?
g0=$(gen_tokens)
[ $rc = 0 ] && pass "40 requests over HTTP, exit 0" || { fail "http run: rc $rc"; cat "$T/a.txt" "$T/a.err"; }
"$LG" --http "$URL" --concurrency 8 --requests 40 --prompt-len uniform:8:64 --output-len uniform:4:24 --seed 5 \
  --json "$T/a2.json" >/dev/null 2>&1
g1=$(gen_tokens)
python3 - "$T/a.json" "$T/a2.json" "$g0" "$g1" <<'EOF' && pass "JSON keys, counts == plan, /metrics agrees, percentiles ordered, overlap" || fail "JSON checks"
import json, sys
a = json.load(open(sys.argv[1])); a2 = json.load(open(sys.argv[2]))
keys = ["tool", "version", "label", "api", "target", "config", "requests_ok", "requests_failed", "prompt_tokens",
        "completion_tokens", "planned_prompt_tokens", "planned_completion_tokens", "wall_s", "requests_per_s",
        "output_tokens_per_s", "total_tokens_per_s", "ttft_ms", "itl_ms", "itl_is", "tpot_ms", "e2e_ms",
        "gpu_memory_mib", "requests", "errors"]
missing = [k for k in keys if k not in a]
assert not missing, missing
for k in ["concurrency", "requests", "prompt_len", "output_len", "seed", "temperature", "ignore_eos", "warmup_requests"]:
    assert k in a["config"], k
assert a["tool"] == "recur_loadgen" and a["api"] == "http" and a["label"] == "tiny c8"
assert a["config"]["concurrency"] == 8 and a["config"]["warmup_requests"] == 4
assert a["requests_ok"] == 40 and a["requests_failed"] == 0 and a["errors"] == [], (a["requests_ok"], a["errors"])
assert a["completion_tokens"] == a["planned_completion_tokens"] > 0, (a["completion_tokens"], a["planned_completion_tokens"])
assert a["prompt_tokens"] == a["planned_prompt_tokens"] > 0
rq = a["requests"]
assert len(rq) == 40 and all(r["ok"] for r in rq)
assert all(8 <= r["prompt_len"] <= 64 and 4 <= r["max_tokens"] <= 24 for r in rq)
assert all(r["completion_tokens"] == r["max_tokens"] and r["prompt_tokens"] == r["prompt_len"] for r in rq)
assert len({r["prompt_len"] for r in rq}) > 10, "lengths are not drawn"
# the second run's tokens, counted by the server itself
assert int(sys.argv[4]) - int(sys.argv[3]) == a2["completion_tokens"], (sys.argv[3], sys.argv[4], a2["completion_tokens"])
for k in ["ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"]:
    p = a[k]
    assert p["n"] > 0 and 0 <= p["p50"] <= p["p90"] <= p["p99"] <= p["max"], (k, p)
assert a["ttft_ms"]["n"] == 40 and a["e2e_ms"]["n"] == 40
assert abs(a["output_tokens_per_s"] - a["completion_tokens"] / a["wall_s"]) < 1e-6 * a["output_tokens_per_s"] + 1e-9
assert abs(a["requests_per_s"] - 40 / a["wall_s"]) < 1e-6 * a["requests_per_s"]
assert all(r["ttft_ms"] <= r["e2e_ms"] for r in rq)
assert sum(r["e2e_ms"] for r in rq) / 1e3 > 2 * a["wall_s"], "requests did not overlap"
assert a["gpu_memory_mib"] is None
EOF
grep -q "| requests done (errors) | 40 (0) |" "$T/a.txt" && grep -q "| TTFT p50 / p90 / p99 |" "$T/a.txt" \
  && pass "the table: $(grep 'completion tokens/s' "$T/a.txt")" || { fail "table"; cat "$T/a.txt"; }

# --- the plan depends on the seed only
"$LG" --http "$URL" --concurrency 3 --requests 40 --prompt-len uniform:8:64 --output-len uniform:4:24 --seed 5 \
  --json "$T/b.json" >/dev/null 2>&1
"$LG" --http "$URL" --concurrency 8 --requests 40 --prompt-len uniform:8:64 --output-len uniform:4:24 --seed 6 \
  --json "$T/c.json" >/dev/null 2>&1
python3 - "$T/a.json" "$T/b.json" "$T/c.json" <<'EOF' && pass "same seed, same plan (at another concurrency); another seed, another plan" || fail "seeded plans"
import json, sys
a, b, c = (json.load(open(p)) for p in sys.argv[1:4])
la = [(r["prompt_len"], r["max_tokens"]) for r in a["requests"]]
assert la == [(r["prompt_len"], r["max_tokens"]) for r in b["requests"]]
assert la != [(r["prompt_len"], r["max_tokens"]) for r in c["requests"]]
EOF

# --- clamped distributions
"$LG" --http "$URL" --concurrency 8 --requests 60 --prompt-len lognormal:20:1.0:5:90 --output-len normal:6:4:2:9 \
  --seed 9 --json "$T/d.json" >/dev/null 2>&1; rc=$?
python3 - "$T/d.json" "$rc" <<'EOF' && pass "lognormal / normal lengths inside their MIN:MAX clamps" || fail "clamped distributions"
import json, sys
d = json.load(open(sys.argv[1])); assert sys.argv[2] == "0"
p = [r["prompt_len"] for r in d["requests"]]; o = [r["max_tokens"] for r in d["requests"]]
assert min(p) >= 5 and max(p) <= 90 and min(o) >= 2 and max(o) <= 9, (min(p), max(p), min(o), max(o))
assert 5 in p or 90 in p or 2 in o or 9 in o, "no value at a clamp: the tails are not drawn"
assert d["completion_tokens"] == sum(o)
EOF

# --- refused requests are counted, not hidden
"$LG" --http "$URL" --concurrency 4 --requests 16 --prompt-len uniform:150:260 --output-len 4 --seed 2 \
  --json "$T/e.json" >"$T/e.txt" 2>"$T/e.err"; rc=$?
python3 - "$T/e.json" "$rc" <<'EOF' && pass "prompts over --max-prompt: HTTP 400 counted as failures, exit 1" || { fail "refused requests"; cat "$T/e.err"; }
import json, sys
e = json.load(open(sys.argv[1])); assert sys.argv[2] == "1", sys.argv[2]
over = sum(r["prompt_len"] > 200 for r in e["requests"])
assert 0 < over < 16 and e["requests_failed"] == over and e["requests_ok"] == 16 - over, (over, e["requests_failed"])
assert all(r["ok"] == (r["prompt_len"] <= 200) for r in e["requests"])
assert e["errors"] and all(m.startswith("HTTP 400") and "longer than" in m for m in e["errors"]), e["errors"][:2]
EOF

# --- GPU memory sampling through nvidia-smi (a stand-in here)
mkdir -p "$T/fakebin"
cat >"$T/fakebin/nvidia-smi" <<'EOF'
#!/bin/sh
case "$*" in *--query-gpu=index,memory.used*--format=csv,noheader,nounits*-lms*) ;; *) exit 2 ;; esac
while :; do printf '0, 1000\n1, 500\n'; sleep 0.02; printf '0, 3000\n1, 700\n'; sleep 0.02; done
EOF
chmod +x "$T/fakebin/nvidia-smi"
PATH="$T/fakebin:$PATH" "$LG" --http "$URL" --concurrency 4 --requests 12 --output-len 40 --gpu-mem-ms 20 \
  --json "$T/g.json" >"$T/g.txt" 2>&1; rc=$?
python3 - "$T/g.json" "$rc" <<'EOF' && pass "--gpu-mem-ms: peak and mean per GPU from nvidia-smi's lines" || { fail "gpu memory sampling"; cat "$T/g.txt"; }
import json, sys
g = json.load(open(sys.argv[1])); assert sys.argv[2] == "0"
m = {e["index"]: e for e in g["gpu_memory_mib"]}
assert set(m) == {0, 1} and m[0]["peak"] == 3000 and m[0]["min"] == 1000 and m[1]["peak"] == 700, m
assert 1000 <= m[0]["mean"] <= 3000 and m[0]["samples"] >= 2
EOF
env PATH=/usr/bin:/bin sh -c 'command -v nvidia-smi' >/dev/null || {
  env PATH=/usr/bin:/bin "$LG" --http "$URL" --concurrency 2 --requests 4 --output-len 8 --gpu-mem-ms 50 \
    --json "$T/h.json" >"$T/h.txt" 2>&1; rc=$?
  [ $rc = 0 ] && grep -q "no memory samples" "$T/h.txt" && python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['gpu_memory_mib'] is None" "$T/h.json" \
    && pass "--gpu-mem-ms without nvidia-smi: a warning, null, exit 0" || { fail "no nvidia-smi"; cat "$T/h.txt"; }
}

# --- the protobuf API, same plan
"$LG" --connect "$EP" --concurrency 8 --requests 40 --prompt-len uniform:8:64 --output-len uniform:4:24 --seed 5 \
  --json "$T/z.json" >"$T/z.txt" 2>&1; rc=$?
python3 - "$T/z.json" "$T/a.json" "$rc" <<'EOF' && pass "--connect (protobuf API): the same plan gives the same token counts" || { fail "zmq run"; cat "$T/z.txt"; }
import json, sys
z = json.load(open(sys.argv[1])); a = json.load(open(sys.argv[2])); assert sys.argv[3] == "0"
assert z["api"] == "zmq" and z["requests_ok"] == 40
assert z["completion_tokens"] == a["completion_tokens"] and z["prompt_tokens"] == a["prompt_tokens"]
assert z["itl_ms"]["n"] > 0 and z["ttft_ms"]["n"] == 40
EOF

# --- --session-turns: conversations with a session vs resending the whole history
"$LG" --http "$URL" --session-turns 3 --requests 3 --concurrency 2 --prompt-len uniform:10:30 --output-len 8 --seed 3 \
  --json "$T/s.json" >"$T/s.txt" 2>&1; rc=$?
python3 - "$T/s.json" "$rc" "$T/s.txt" <<'EOF' && pass "--session-turns 3: per-turn contexts agree between the ways, cached_tokens = the previous turns less one, table + JSON" || { fail "session turns: rc $rc"; cat "$T/s.txt"; }
import json, sys
j = json.load(open(sys.argv[1])); assert sys.argv[2] == "0", sys.argv[2]
txt = open(sys.argv[3]).read()
assert j["mode"] == "session_turns" and j["config"]["turns"] == 3 and j["config"]["conversations"] == 3
assert j["requests_failed"] == 0 and len(j["turns"]) == 3
prev = [0, 0, 0]
for t in j["turns"]:
    s, r = t["session"], t["resend"]
    assert s["prompt_tokens"] == r["prompt_tokens"], (s["prompt_tokens"], r["prompt_tokens"])  # the same context
    assert r["cached_tokens"] == [0, 0, 0]                                                     # no session
    for c in range(3):
        want = prev[c] - 1 if prev[c] else 0   # the last generated token was not consumed yet
        assert s["cached_tokens"][c] == want, (t["turn"], c, s["cached_tokens"][c], want)
        assert s["completion_tokens"][c] == 8 == r["completion_tokens"][c]
        prev[c] = s["prompt_tokens"][c] + 8
    assert s["ttft_ms"]["n"] == 3 and r["ttft_ms"]["n"] == 3
assert j["last_turn"]["context_tokens"] == sum(j["turns"][2]["session"]["prompt_tokens"]) / 3
assert j["last_turn"]["ratio"] > 0
assert "| turn | context tokens |" in txt and "resending the whole history" in txt
EOF
"$LG" --http "$URL" --session-turns 2 --requests 1 --prompt-len 10 --output-len 4 --session-mode session >"$T/s2.txt" 2>&1; rc=$?
[ $rc = 0 ] && grep -q "with a session" "$T/s2.txt" && ! grep -q "resending the whole" "$T/s2.txt" \
  && pass "--session-mode session: only the session way" || { fail "session-mode session: rc $rc"; cat "$T/s2.txt"; }
"$LG" --http "$URL" --session-turns 2 --requests 1 >"$T/s3.txt" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "needs --http and --prompt-len" "$T/s3.txt" && pass "--session-turns without --prompt-len: usage error (2)" \
  || fail "session-turns usage: rc $rc"

# --- nobody there: every request fails quickly, exit 1
PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1]); s.close()")
timeout 30 "$LG" --http "http://127.0.0.1:$PORT" --concurrency 4 --requests 8 --json "$T/n.json" >"$T/n.txt" 2>&1; rc=$?
[ $rc = 1 ] && python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['requests_failed']==8 and 'connect' in j['errors'][0]" "$T/n.json" \
  && pass "no server: 8 failures (connection refused), exit 1" || { fail "no server: rc $rc"; cat "$T/n.txt"; }

kill -TERM "$SPID"; wait "$SPID"; SPID=
[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
