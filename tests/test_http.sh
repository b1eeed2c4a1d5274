#!/usr/bin/env bash
# test_http.sh: the OpenAI-compatible HTTP API of `recur serve` (CPU backend, bundled tiny
# model), with curl. Checks:
#   - the README's curl examples, run as written (only the port changed);
#   - completions and chat completions, non-streaming and streaming (SSE ending with
#     data: [DONE], include_usage), usage counts, finish_reason stop/length, n, stop, seed;
#     greedy text equal to `recur generate --temperature 0`;
#   - malformed JSON, wrong types, unknown fields, bad values, an oversized body (with and
#     without Content-Length), a missing or wrong API key, unknown routes and methods,
#     an unknown model, a too-long prompt: each the right 4xx and an OpenAI error JSON whose
#     message names the problem, and the server keeps serving;
#   - health probes without a key (ready only once the model is loaded), /v1/models,
#     /metrics in Prometheus text format;
#   - a client that disconnects mid-stream (and one that gives up on a non-streaming
#     request) gets its request cancelled and its slot freed (/metrics slots used back to 0);
#   - 64 concurrent streaming requests (curl in the background) each give the same text as
#     the same request alone (greedy and seeded sampling);
#   - SIGTERM with streams open: draining (new request 503, ready 503); at the drain deadline every
#     stream ends (error event + [DONE]), serve exits 0.
# Needs: RECUR_BIN, RECUR_SOURCE_DIR; curl, python3 (standard library only: SSE parsing).
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
SRC=${RECUR_SOURCE_DIR:?RECUR_SOURCE_DIR not set}
command -v curl >/dev/null || { echo "SKIP: curl not found"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-http-XXXXXX")
. "$(dirname "$0")/recur_testlib.sh"
SPID=
cleanup() { [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
KEY=sk-local

# --- start: no --model (the bundled tiny model), ephemeral port, a key file and a key
printf '# keys\n\n  sk-other  \n' >"$T/keys"
"$BIN" serve --port 0 --drain-timeout-s 3 --api-key "$KEY" --api-key-file "$T/keys" --max-prompt 200 --max-body-bytes 65536 \
  >"$T/serve.out" 2>"$T/serve.err" &
SPID=$!
URL=$(serve_url "$T/serve.out" "$SPID")
if [ -z "$URL" ]; then
  fail "serve did not come up"; sed 's/^/     /' "$T/serve.err" | head; exit 1
fi
pass "serve up without --model: $URL"
PORT=${URL##*:}
AUTH="Authorization: Bearer $KEY"
# req METHOD PATH [BODY] [extra curl args...]: prints "STATUS BODY"
req() { http_req "$@"; echo " $(cat "$T/body")"; }
MODEL=tiny-rwkv-7v0-834K-FP32

# jget EXPR: evaluates a Python expression on the JSON in $T/body as `j`
jget() { python3 -c "import json,sys; j=json.load(open('$T/body')); print($1)" 2>/dev/null; }
# expect_error NAME STATUS WORD METHOD PATH BODY [curl args]: the status, an OpenAI error
# object, and WORD in its message
expect_error() {
  local name=$1 st=$2 word=$3; shift 3
  local out code
  out=$(req "$@")
  code=${out%% *}
  local msg type
  msg=$(jget 'j["error"]["message"]')
  type=$(jget 'j["error"]["type"]')
  if [ "$code" = "$st" ] && [ -n "$type" ] && grep -qi -- "$word" <<<"$msg"; then
    pass "$name -> $code: $msg"
  else
    fail "$name: got '$out', want $st with '$word'"
  fi
}

# --- health, models, metrics
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/live")" = 200 ] && pass "/health/live 200 without a key" || fail "/health/live"
out=$(curl -s -w ' %{http_code}' "$URL/health/ready")
[ "${out##* }" = 200 ] && grep -q '"ready"' <<<"$out" && pass "/health/ready 200 without a key: ${out% *}" || fail "/health/ready: $out"
out=$(req GET /v1/models)
[ "${out%% *}" = 200 ] && [ "$(jget 'j["data"][0]["id"]')" = "$MODEL" ] && [ "$(jget 'j["object"]')" = list ] \
  && pass "/v1/models lists $MODEL (default name: the file's)" || fail "/v1/models: $out"
out=$(req GET /v1/models/$MODEL)
[ "${out%% *}" = 200 ] && [ "$(jget 'j["id"]')" = "$MODEL" ] && pass "/v1/models/$MODEL" || fail "/v1/models/ID: $out"
expect_error "/v1/models/other" 404 "not served" GET /v1/models/other ""
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer sk-other" "$URL/v1/models")" = 200 ] \
  && pass "a key from --api-key-file works" || fail "--api-key-file key refused"

# --- README examples (curl), as written but for the port
awk '/<!-- test_http: curl -->/{f=1; next} f && /^```sh/{g=1; next} g && /^```/{exit} g' "$SRC/README.md" \
  | grep -v '^build/bin/recur serve' | sed "s#127.0.0.1:8000#127.0.0.1:$PORT#g" >"$T/readme.sh"
if [ "$(grep -c '^curl' "$T/readme.sh")" -ge 3 ]; then
  bash "$T/readme.sh" >"$T/readme.out" 2>&1; rc=$?
  if [ $rc = 0 ] && grep -q '"status":"ready"' "$T/readme.out" && grep -q '"object":"text_completion"' "$T/readme.out" \
     && grep -q '"chat.completion.chunk"' "$T/readme.out" && grep -q '^data: \[DONE\]' "$T/readme.out"; then
    pass "README curl examples run ($(grep -c '^curl' "$T/readme.sh") commands)"
  else
    fail "README curl examples (rc $rc)"; head -c 600 "$T/readme.out"; echo
  fi
else
  fail "README has no curl examples under <!-- test_http: curl -->"
fi

# --- completions: greedy == generate; usage; finish_reason length
"$BIN" generate --prompt "Once upon a time" --max-tokens 40 --temperature 0 >"$T/gen" 2>/dev/null
out=$(req POST /v1/completions "{\"model\":\"$MODEL\",\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0}")
jget 'j["choices"][0]["text"]' >"$T/http"
if [ "${out%% *}" = 200 ] && cmp -s "$T/http" "$T/gen" && [ "$(jget 'j["choices"][0]["finish_reason"]')" = length ] \
   && [ "$(jget 'j["usage"]["completion_tokens"]')" = 40 ] && [ "$(jget 'j["usage"]["prompt_tokens"]')" = 16 ] \
   && [ "$(jget 'j["usage"]["total_tokens"]')" = 56 ] && [ "$(jget 'j["object"]')" = text_completion ]; then
  pass "completion == recur generate (greedy), usage 16+40, finish length"
else
  fail "completion: $out"; head -c 200 "$T/gen"; echo
fi
# stop string: finish stop, text cut before it
out=$(req POST /v1/completions '{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":["the the"]}')
[ "$(jget 'j["choices"][0]["finish_reason"]')" = stop ] && ! grep -q "the the" <<<"$(jget 'j["choices"][0]["text"]')" \
  && pass "stop string -> finish stop, trimmed: '$(jget 'j["choices"][0]["text"]')'" || fail "stop: $out"
# n = 3 with a seed: three choices, reproducible
body='{"prompt":"Once","max_tokens":12,"temperature":1.0,"seed":7,"n":3}'
req POST /v1/completions "$body" >/dev/null; jget '[c["text"] for c in j["choices"]]' >"$T/n1"
req POST /v1/completions "$body" >/dev/null; jget '[c["text"] for c in j["choices"]]' >"$T/n2"
[ "$(jget 'len(j["choices"])')" = 3 ] && [ "$(jget '[c["index"] for c in j["choices"]]')" = "[0, 1, 2]" ] \
  && [ "$(jget 'j["usage"]["completion_tokens"]')" = 36 ] && [ "$(jget 'j["usage"]["prompt_tokens"]')" = 4 ] \
  && cmp -s "$T/n1" "$T/n2" && [ "$(jget 'len(set(c["text"] for c in j["choices"]))')" -gt 1 ] \
  && pass "n 3 + seed: 3 different choices, same again with the same seed, usage 4+36" || fail "n/seed: $(cat "$T/n1" "$T/n2")"
# a prompt given as token ids (byte-level: "Once" = 79 110 99 101) == the text prompt
req POST /v1/completions '{"prompt":"Once","max_tokens":10,"temperature":0}' >/dev/null; jget 'j["choices"][0]["text"]' >"$T/a"
req POST /v1/completions '{"prompt":[79,110,99,101],"max_tokens":10,"temperature":0}' >/dev/null; jget 'j["choices"][0]["text"]' >"$T/b"
[ -s "$T/a" ] && cmp -s "$T/a" "$T/b" && pass "token-id prompt == text prompt" || fail "token-id prompt"

# --- streaming: SSE chunks, include_usage, [DONE]; the text equals the non-streaming one
curl -sN -H "$AUTH" "$URL/v1/completions" -d '{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' >"$T/sse"
python3 - "$T/sse" "$T/gen" <<'EOF' && pass "completion stream: chunks + usage chunk + [DONE], text == generate" || fail "completion stream"
import json, sys
raw = open(sys.argv[1]).read(); want = open(sys.argv[2]).read().rstrip("\n")
events = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
assert events[-1] == "[DONE]", events[-1:]
chunks = [json.loads(e) for e in events[:-1]]
text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
assert text == want, (text, want)
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 40, chunks[-1]
assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
EOF
# Each token leaves as it comes, not with the end of the answer: 300 tokens (a few ms each
# here) read from the socket as they arrive must come in many separate reads, the first
# event long before the last (a server that held the stream back sent it in one or two).
python3 - "$URL" "$KEY" <<'EOF' && pass "stream is incremental: events arrive token by token, not at the end" || fail "stream is incremental"
import json, socket, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
body = json.dumps({"prompt": "x", "max_tokens": 300, "ignore_eos": True, "temperature": 0, "stream": True}).encode()
s = socket.create_connection((u.hostname, u.port))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + sys.argv[2].encode() +
          b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
reads, data, t0 = [], b"", time.time()
while b"data: [DONE]" not in data:
    b = s.recv(65536)
    if not b:
        break
    data += b
    reads.append((time.time() - t0, b.count(b"data: ")))
with_events = [t for t, n in reads if n]
print("stream: %d reads with events over %.3f s" % (len(with_events), with_events[-1] - with_events[0]))
assert b"data: [DONE]" in data and data.count(b"data: ") >= 300
assert len(with_events) >= 10, reads[:20]
EOF
curl -sN -H "$AUTH" "$URL/v1/chat/completions" -d '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"max_tokens":12,"temperature":0,"stream":true}' >"$T/csse"
req POST /v1/chat/completions '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"max_tokens":12,"temperature":0}' >/dev/null
jget 'j["choices"][0]["message"]["content"]' >"$T/chat"
python3 - "$T/csse" "$T/chat" "$T/body" <<'EOF' && pass "chat stream: role delta, content deltas, finish, [DONE]; == non-streaming; usage" || fail "chat stream"
import json, sys
raw = open(sys.argv[1]).read(); want = open(sys.argv[2]).read().rstrip("\n"); full = json.load(open(sys.argv[3]))
events = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
assert events[-1] == "[DONE]"
chunks = [json.loads(e) for e in events[:-1]]
assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
assert text == want, (text, want)
assert chunks[-1]["choices"][0]["finish_reason"] == "length"
assert full["object"] == "chat.completion" and full["choices"][0]["message"]["role"] == "assistant"
# "System: Be brief.\n\nUser: Hello\n\nAssistant:" is 42 bytes = 42 tokens (byte-level)
assert full["usage"] == {"prompt_tokens": 42, "completion_tokens": 12, "total_tokens": 54}, full["usage"]
EOF

# --- bad requests: the right 4xx, a message that says what is wrong
expect_error "malformed JSON" 400 "not valid JSON" POST /v1/completions '{"prompt": "x",'
expect_error "trailing garbage" 400 "not valid JSON" POST /v1/completions '{"prompt": "x"} x'
expect_error "not an object" 400 "JSON object" POST /v1/completions '["x"]'
expect_error "wrong type (temperature)" 400 "'temperature' must be a number" POST /v1/completions '{"prompt":"x","temperature":"hot"}'
expect_error "wrong type (max_tokens)" 400 "'max_tokens' must be an integer" POST /v1/completions '{"prompt":"x","max_tokens":1.5}'
expect_error "wrong type (stream)" 400 "'stream' must be true or false" POST /v1/completions '{"prompt":"x","stream":"yes"}'
expect_error "wrong type (messages)" 400 "'messages' must be" POST /v1/chat/completions '{"messages":"hi"}'
expect_error "unknown field" 400 "unknown field 'foo'" POST /v1/completions '{"prompt":"x","foo":1}'
expect_error "chat field on completions" 400 "unknown field 'messages'" POST /v1/completions '{"prompt":"x","messages":[]}'
expect_error "unknown message field" 400 "unknown field" POST /v1/chat/completions '{"messages":[{"role":"user","content":"x","x":1}]}'
expect_error "duplicate field" 400 "appears twice" POST /v1/completions '{"prompt":"x","prompt":"y"}'
expect_error "missing prompt" 400 "'prompt' is required" POST /v1/completions '{"max_tokens":3}'
expect_error "bad role" 400 "role" POST /v1/chat/completions '{"messages":[{"role":"wizard","content":"x"}]}'
expect_error "top_p out of range" 400 "'top_p' must be between" POST /v1/completions '{"prompt":"x","top_p":2}'
expect_error "n out of range" 400 "'n' must be between" POST /v1/completions '{"prompt":"x","n":0}'
expect_error "tools" 400 "tool calling is not supported" POST /v1/chat/completions '{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}'
expect_error "invalid UTF-8" 400 "UTF-8" POST /v1/completions "$(printf '{"prompt":"\xff\xfe"}')"
expect_error "unknown model" 404 "not served" POST /v1/completions '{"model":"gpt-9","prompt":"x"}'
long=$(head -c 300 /dev/zero | tr '\0' a)
expect_error "prompt over --max-prompt" 400 "longer than the limit" POST /v1/completions "{\"prompt\":\"$long\"}"
head -c 70000 /dev/zero | tr '\0' a >"$T/big"
expect_error "oversized body (Content-Length)" 413 "at most 65536" POST /v1/completions "@$T/big"
code=$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" -H 'Transfer-Encoding: chunked' --data-binary "@$T/big" "$URL/v1/completions")
[ "$code" = 413 ] && grep -q "larger than 65536" "$T/body" && pass "oversized chunked body -> 413" || fail "chunked 413: $code $(cat "$T/body")"
code=$(curl -s -o "$T/body" -w '%{http_code}' "$URL/v1/models")
[ "$code" = 401 ] && grep -q '"code":"invalid_api_key"' "$T/body" && grep -q "missing API key" "$T/body" \
  && pass "missing key -> 401: $(jget 'j["error"]["message"]')" || fail "missing key: $code $(cat "$T/body")"
code=$(curl -s -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer sk-wrong" "$URL/v1/completions" -d '{"prompt":"x"}')
[ "$code" = 401 ] && grep -q "invalid API key" "$T/body" && pass "wrong key -> 401" || fail "wrong key: $code"
code=$(curl -s -o "$T/body" -w '%{http_code}' "$URL/metrics")
[ "$code" = 401 ] && pass "/metrics needs the key" || fail "/metrics without key: $code"
expect_error "unknown route" 404 "no route" GET /v1/embeddings ""
expect_error "wrong method" 405 "use POST" GET /v1/completions ""

# --- still serving correctly after all that
req POST /v1/completions "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0}" >/dev/null
jget 'j["choices"][0]["text"]' >"$T/http2"
cmp -s "$T/http2" "$T/gen" && pass "still serving correctly after the errors" || fail "serving after errors"

# --- metrics
metric() { curl -s -H "$AUTH" "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
curl -s -H "$AUTH" "$URL/metrics" >"$T/metrics"
ok=1
for m in recur_requests_running recur_requests_waiting recur_slots_used recur_slots_total recur_prompt_tokens_total \
         recur_generation_tokens_total 'recur_time_to_first_token_seconds_bucket{le="+Inf"}' \
         'recur_inter_token_latency_seconds_bucket{le="+Inf"}' 'recur_rank_step_forward_seconds_count{rank="0"}' \
         'recur_http_responses_total{route="/v1/completions",code="400"}'; do
  grep -qF "$m " "$T/metrics" || { ok=0; echo "     missing $m"; }
done
grep -q '^# TYPE recur_time_to_first_token_seconds histogram' "$T/metrics" || ok=0
[ "$(awk '$1=="recur_slots_total"{print $2}' "$T/metrics")" = 63 ] || ok=0
[ "$(awk '$1=="recur_generation_tokens_total"{print $2}' "$T/metrics")" -ge 200 ] || ok=0
[ $ok = 1 ] && pass "/metrics: Prometheus text with the gauges, counters, histograms (slots_total 63)" || fail "metrics"

# --- disconnect mid-stream frees the slot; a non-streaming client that gives up too
c0=$(metric 'recur_requests_finished_total{reason="cancelled"}')
curl -sN --max-time 1 -H "$AUTH" "$URL/v1/completions" -d '{"prompt":"x","max_tokens":1000000,"ignore_eos":true,"stream":true}' >"$T/dis" 2>/dev/null
curl -s --max-time 1 -H "$AUTH" "$URL/v1/completions" -d '{"prompt":"y","max_tokens":1000000,"ignore_eos":true}' >/dev/null 2>&1
used=; for _ in $(seq 50); do used=$(metric recur_slots_used); [ "$used" = 0 ] && break; sleep 0.1; done
c1=$(metric 'recur_requests_finished_total{reason="cancelled"}')
[ -s "$T/dis" ] && [ "$used" = 0 ] && [ "$((c1 - c0))" = 2 ] && [ "$(metric recur_requests_running)" = 0 ] \
  && pass "client disconnects (stream, non-stream): both cancelled, slots used back to 0" \
  || fail "disconnect: slots used $used, cancelled $c0 -> $c1"

# --- 64 concurrent streams == each alone (greedy and seeded)
body_i() {
  local i=$1
  if [ $((i % 2)) = 0 ]; then
    echo "{\"prompt\":\"Request $i says\",\"max_tokens\":$((16 + i % 24)),\"temperature\":0,\"stream\":true}"
  else
    echo "{\"prompt\":\"Story $i:\",\"max_tokens\":$((16 + i % 24)),\"temperature\":0.9,\"top_p\":0.9,\"seed\":$i,\"stream\":true}"
  fi
}
for i in $(seq 0 63); do curl -sN -H "$AUTH" "$URL/v1/completions" -d "$(body_i $i)" >"$T/alone$i"; done
for i in $(seq 0 63); do curl -sN -H "$AUTH" "$URL/v1/completions" -d "$(body_i $i)" >"$T/conc$i" & done
wait $(jobs -p | grep -v "^$SPID$") 2>/dev/null
python3 - "$T" <<'EOF' && pass "64 concurrent streams: each complete and equal to the same request alone" || fail "64 concurrent streams"
import json, sys
d = sys.argv[1]
def text(p):
    raw = open(p).read()
    ev = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
    assert ev and ev[-1] == "[DONE]", (p, raw[-200:])
    ch = [json.loads(e) for e in ev[:-1]]
    assert ch[-1]["choices"][0]["finish_reason"] in ("stop", "length"), p
    return "".join(c["choices"][0]["text"] for c in ch)
bad = [i for i in range(64) if text(f"{d}/alone{i}") != text(f"{d}/conc{i}")]
assert not bad, f"differ: {bad}"
assert len(set(text(f"{d}/alone{i}") for i in range(64))) > 32
EOF

# --- SIGTERM with open streams: a drain (--drain-timeout-s 3); the 1,000,000-token streams
# outlive it, so at the deadline they end (error event, [DONE]); serve exits 0
for i in 1 2; do
  curl -sN -H "$AUTH" "$URL/v1/completions" -d '{"prompt":"x","max_tokens":1000000,"ignore_eos":true,"stream":true}' >"$T/term$i" 2>/dev/null &
done
sleep 0.5
kill -TERM "$SPID"
sleep 0.5
# draining: a new request gets 503 and readiness turns false, while the open streams go on
code_new=$(curl -s -o "$T/drain_new" -w '%{http_code}' -H "$AUTH" "$URL/v1/completions" -d '{"prompt":"x","max_tokens":3}')
code_ready=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")
[ "$code_new" = 503 ] && [ "$code_ready" = 503 ] \
  && pass "draining after SIGTERM: a new request gets 503 ($(head -c 120 "$T/drain_new")), /health/ready 503" \
  || fail "draining: new request $code_new, ready $code_ready: $(cat "$T/drain_new")"
rc=124
for _ in $(seq 150); do kill -0 "$SPID" 2>/dev/null || { wait "$SPID"; rc=$?; break; }; sleep 0.1; done
wait $(jobs -p) 2>/dev/null
SPID=
[ "$rc" = 0 ] && tail -c 200 "$T/term1" | grep -q '^data: \[DONE\]' && grep -q '"error"' "$T/term1" \
  && tail -c 100 "$T/term2" | grep -q '^data: \[DONE\]' \
  && pass "SIGTERM: open streams end with an error event and [DONE], serve exits 0" \
  || { fail "SIGTERM: rc $rc"; tail -c 300 "$T/term1"; tail -5 "$T/serve.err"; }

if [ $fails != 0 ]; then echo "     serve's stderr (end):"; tail -40 "$T/serve.err" | sed 's/^/     /'; fi
[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
