#!/usr/bin/env bash
# test_http_sessions.sh: sessions over the OpenAI-compatible HTTP API of `recur serve` (CPU
# backend, bundled tiny model, byte-level: one token per byte), with curl. Checks:
#   - completions with session_id: turn 2 gives the same text and log-probabilities as one
#     request with the whole conversation (turn 1's prompt + its reply + turn 2's prompt),
#     the same prompt_tokens, and usage.prompt_tokens_details.cached_tokens = turn 1's
#     prompt and reply (less its last token, which no step had consumed); a turn that ended
#     on a stop string: the next prompt starting with that string continues after it (the
#     state holds it), equal to the whole conversation written out;
#   - chat with session_id: turn 2 sends only the new message; equal (text, logprobs,
#     prompt_tokens) to the whole conversation with turn 1's reply as the assistant message;
#     streaming with include_usage reports cached_tokens;
#   - /v1/sessions: create (own id, made-up id, existing id -> 409), get, list, fork (the
#     copy and the original then go their own ways, each equal to its whole-conversation
#     reference), delete (then 404), export -> import under a new id continues identically;
#     import of garbage -> 400, over --max-import-bytes -> 413, without Content-Length ->
#     411, onto an existing id -> 409;
#   - a second turn (and fork, export, delete) on a busy session -> 409 session_busy;
#     invalid session ids (empty, 129 bytes, control characters, not a string) -> 400;
#     unknown sessions -> 404; n > 1 with session_id -> 400; no API key -> 401;
#   - --max-requests-per-key: a key with N requests in flight gets 429 for the next, another
#     key is not affected, and the key works again once its requests end;
#   - /metrics: recur_session_turns_total, recur_session_prompt_tokens_cached_total, the
#     sessions per tier and removals move by exactly what the requests did;
#   - restart: kill -9 of serve and its workers (they die with it: parent-death signal), a
#     new serve on the same --session-dir: a completions session and a chat session whose
#     turn ended on the (custom template's) stop string continue exactly as uninterrupted
#     copies forked before the kill did.
# Needs: RECUR_BIN; curl, python3 (standard library only).
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
command -v curl >/dev/null || { echo "SKIP: curl not found"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-hsess-XXXXXX")
. "$(dirname "$0")/recur_testlib.sh"
SPID=
CPIDS=
cleanup() {
  [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null
  for p in $CPIDS; do kill "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
KEY=sk-a KEY2=sk-b

# start_serve OUTFILE ARGS...: serve with --port 0; sets SPID and URL
start_serve() {
  local out=$1; shift
  "$BIN" serve --port 0 --log-level warn --drain-timeout-s 2 "$@" >"$out.out" 2>"$out.err" &
  SPID=$!
  URL=$(serve_url "$out.out" "$SPID")
  [ -n "$URL" ]
}

AUTH="Authorization: Bearer $KEY"
# req METHOD PATH [BODY] [curl args...]: the body into $T/body, prints the status
req() { http_req "$@"; }
# jget EXPR: a Python expression on the JSON in $T/body as `j`
jget() { python3 -c "import json,sys; j=json.load(open('$T/body')); print($1)" 2>/dev/null; }
# save NAME: keeps $T/body as $T/NAME.json
save() { cp "$T/body" "$T/$1.json"; }
# same A B WHAT: two saved responses have the same text, log-probabilities (to 1e-4) and
# prompt_tokens
same() {
  python3 - "$T/$1.json" "$T/$2.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def parts(j):
    c = j["choices"][0]
    if "message" in c:
        return c["message"]["content"], [e["logprob"] for e in c["logprobs"]["content"]]
    return c["text"], c["logprobs"]["token_logprobs"]
(ta, la), (tb, lb) = parts(a), parts(b)
assert ta == tb, (ta, tb)
assert len(la) == len(lb) and la, (la, lb)
worst = max(abs(x - y) for x, y in zip(la, lb))
assert worst <= 1e-4, ("logprobs differ", worst)
assert a["usage"]["prompt_tokens"] == b["usage"]["prompt_tokens"], (a["usage"], b["usage"])
EOF
}
# expect_error NAME STATUS CODE METHOD PATH [BODY] [curl args]: the status and OpenAI error code
expect_error() {
  local name=$1 st=$2 code=$3; shift 3
  local got
  got=$(req "$@")
  local c m
  c=$(jget 'j["error"]["code"]')
  m=$(jget 'j["error"]["message"]')
  if [ "$got" = "$st" ] && [ "$c" = "$code" ] && [ -n "$m" ]; then pass "$name -> $got $c: $m"
  else fail "$name: got $got '$c' $(head -c 300 "$T/body"), want $st '$code'"; fi
}
metric() { curl -s -H "$AUTH" "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# wait_metric NAME VALUE: the coordinator publishes every 100 ms
wait_metric() {
  local v=
  for _ in $(seq 30); do v=$(metric "$1"); [ "$v" = "$2" ] && return 0; sleep 0.1; done
  echo "     $1 = $v, want $2"; return 1
}

# ================================================================ phase 1: one server
printf 'sk-b\n' >"$T/keys"
if ! start_serve "$T/serve" --session-dir "$T/sess" --api-key "$KEY" --api-key-file "$T/keys" \
     --max-requests-per-key 3 --max-import-bytes 300000; then
  fail "serve did not come up"; sed 's/^/     /' "$T/serve.err" | head; exit 1
fi
pass "serve up: $URL"
turns0=$(metric recur_session_turns_total); cached0=$(metric recur_session_prompt_tokens_cached_total)
new0=$(metric 'recur_sessions{tier="new"}'); del0=$(metric 'recur_sessions_removed_total{reason="deleted"}')
[ "$turns0" = 0 ] && [ "$cached0" = 0 ] && [ "$new0" = 0 ] && pass "/metrics has the session series (all 0)" \
  || fail "session metrics missing: turns $turns0 cached $cached0 new $new0"
turns_done=0 cached_done=0

# --- completions: turn 2 == the whole conversation; cached_tokens
P1="Once upon a time"
P2=". Then the cat sat down and"
req POST /v1/completions "{\"prompt\":\"$P1\",\"max_tokens\":20,\"temperature\":0,\"logprobs\":1,\"session_id\":\"s1\"}" >/dev/null
save s1t1; A1=$(jget 'j["choices"][0]["text"]')
c1=$(jget 'j["usage"]["prompt_tokens_details"]["cached_tokens"]')
req POST /v1/completions "{\"prompt\":\"$P2\",\"max_tokens\":24,\"temperature\":0,\"logprobs\":1,\"session_id\":\"s1\"}" >/dev/null
save s1t2
c2=$(jget 'j["usage"]["prompt_tokens_details"]["cached_tokens"]'); p2=$(jget 'j["usage"]["prompt_tokens"]')
turns_done=$((turns_done + 2)) cached_done=$((cached_done + c1 + c2))
whole=$(python3 -c "import json,sys; print(json.dumps(sys.argv[1] + sys.argv[2] + sys.argv[3]))" "$P1" "$A1" "$P2")
req POST /v1/completions "{\"prompt\":$whole,\"max_tokens\":24,\"temperature\":0,\"logprobs\":1}" >/dev/null
save s1whole
if same s1t2 s1whole && [ "$c1" = 0 ] && [ "$c2" = $((16 + 20 - 1)) ] && [ "$p2" = $((16 + 20 + ${#P2})) ] \
   && [ "$(jget '"prompt_tokens_details" in j["usage"]')" = False ]; then
  pass "completions: turn 2 == whole conversation (text, logprobs, prompt_tokens $p2); cached_tokens 0 then $c2 (turn 1 less its last token)"
else
  fail "completions session turn 2 vs whole: cached $c1/$c2 prompt $p2"
fi
# a turn that ends on a stop string: the state holds it, the next prompt may start with it
req POST /v1/completions "{\"prompt\":\"$P1\",\"max_tokens\":40,\"temperature\":0,\"stop\":[\"the the\"],\"session_id\":\"st\"}" >/dev/null
S1=$(jget 'j["choices"][0]["text"]'); f1=$(jget 'j["choices"][0]["finish_reason"]')
req POST /v1/completions '{"prompt":"the the girl went","max_tokens":12,"temperature":0,"logprobs":1,"session_id":"st"}' >/dev/null
save stt2
whole=$(python3 -c "import json,sys; print(json.dumps(sys.argv[1] + sys.argv[2] + 'the the girl went'))" "$P1" "$S1")
req POST /v1/completions "{\"prompt\":$whole,\"max_tokens\":12,\"temperature\":0,\"logprobs\":1}" >/dev/null
save stwhole
turns_done=$((turns_done + 2)) cached_done=$((cached_done + $(python3 -c "import json; print(json.load(open('$T/stt2.json'))['usage']['prompt_tokens_details']['cached_tokens'])")))
[ "$f1" = stop ] && same stt2 stwhole && pass "stop string 'the the' ended turn 1 ('$S1'); turn 2 starting with it == whole conversation" \
  || fail "unsent stop text: finish $f1, '$S1'"

# --- chat: turn 2 sends only the new message
SYS='{"role":"system","content":"Be brief."}'
U1='{"role":"user","content":"Hello"}'
U2='{"role":"user","content":"Tell me more"}'
req POST /v1/chat/completions "{\"messages\":[$SYS,$U1],\"max_tokens\":16,\"temperature\":0,\"logprobs\":true,\"session_id\":\"c1\"}" >/dev/null
save c1t1; R1=$(jget 'json.dumps(j["choices"][0]["message"]["content"])')
req POST /v1/chat/completions "{\"messages\":[$U2],\"max_tokens\":16,\"temperature\":0,\"logprobs\":true,\"session_id\":\"c1\"}" >/dev/null
save c1t2; cc=$(jget 'j["usage"]["prompt_tokens_details"]["cached_tokens"]')
req POST /v1/chat/completions "{\"messages\":[$SYS,$U1,{\"role\":\"assistant\",\"content\":$R1},$U2],\"max_tokens\":16,\"temperature\":0,\"logprobs\":true}" >/dev/null
save c1whole
turns_done=$((turns_done + 2)) cached_done=$((cached_done + cc))
# "System: Be brief.\n\nUser: Hello\n\nAssistant:" = 42 bytes, + 16 generated, less the last
same c1t2 c1whole && [ "$cc" = $((42 + 16 - 1)) ] \
  && pass "chat: turn 2 with only the new message == whole conversation with reply $R1 (cached_tokens $cc)" \
  || fail "chat session turn 2 vs whole (cached $cc)"
curl -sN -H "$AUTH" "$URL/v1/chat/completions" -d "{\"messages\":[$U2],\"max_tokens\":8,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"session_id\":\"c1\"}" >"$T/csse"
turns_done=$((turns_done + 1))
cs=$(python3 - "$T/csse" <<'EOF'
import json, sys
ev = [e[6:] for e in open(sys.argv[1]).read().split("\n\n") if e.startswith("data: ")]
assert ev[-1] == "[DONE]"
u = json.loads(ev[-2])["usage"]
print(u["prompt_tokens_details"]["cached_tokens"])
EOF
)
[ -n "$cs" ] && [ "$cs" -gt 57 ] && pass "chat stream on a session: include_usage has cached_tokens $cs" || fail "chat stream usage: '$cs'"
cached_done=$((cached_done + ${cs:-0}))

# --- /v1/sessions: create, get, list
st=$(req POST /v1/sessions '{"session_id":"made","model":"tiny-rwkv-7v0-834K-FP32"}')
[ "$st" = 200 ] && [ "$(jget '(j["id"], j["object"], j["tier"], j["n_tokens"])')" = "('made', 'session', 'new', 0)" ] \
  && pass "POST /v1/sessions {session_id, model}: a new session" || fail "create: $st $(cat "$T/body")"
st=$(req POST /v1/sessions ""); auto=$(jget 'j["id"]')
[ "$st" = 200 ] && [ "${auto#sess-}" != "$auto" ] && pass "POST /v1/sessions without a body: id made up ($auto)" || fail "create auto: $st"
expect_error "create an existing id" 409 session_exists POST /v1/sessions '{"session_id":"made"}'
expect_error "create: unknown field" 400 unknown_field POST /v1/sessions '{"session_id":"x","ttl":5}'
expect_error "create: unknown model" 404 model_not_found POST /v1/sessions '{"model":"gpt-9"}'
wait_metric 'recur_sessions{tier="new"}' $((new0 + 2)) && pass "/metrics: recur_sessions{tier=\"new\"} +2" || fail "new sessions gauge"
st=$(req GET /v1/sessions/s1)
[ "$st" = 200 ] && [ "$(jget 'j["n_tokens"]')" = $((p2 + 24)) ] && [ "$(jget 'j["tier"] in ("slot", "host", "disk")')" = True ] \
  && [ "$(jget 'j["busy"]')" = False ] && [ "$(jget 'j["saved_tokens"] == j["n_tokens"]')" = True ] \
  && pass "GET /v1/sessions/s1: $(jget '(j["tier"], j["n_tokens"])'), checkpointed" || fail "get: $st $(cat "$T/body")"
st=$(req GET /v1/sessions)
[ "$st" = 200 ] && [ "$(jget 'sorted(s["id"] for s in j["data"]) == sorted(["s1", "st", "c1", "made", "'"$auto"'"])')" = True ] \
  && pass "GET /v1/sessions lists the 5 sessions" || fail "list: $(cat "$T/body")"

# --- fork: the two go their own ways, each == its whole-conversation reference
st=$(req POST /v1/sessions/s1/fork '{"session_id":"s1b"}')
[ "$st" = 200 ] && [ "$(jget '(j["id"], j["n_tokens"])')" = "('s1b', $((p2 + 24)))" ] && pass "fork s1 -> s1b" || fail "fork: $st $(cat "$T/body")"
B2=$(python3 -c "import json; print(json.load(open('$T/s1t2.json'))['choices'][0]['text'])")
for pair in "s1:, and the dog" "s1b:! The end of the"; do
  sid=${pair%%:*} p=${pair#*:}
  req POST /v1/completions "{\"prompt\":\"$p\",\"max_tokens\":12,\"temperature\":0,\"logprobs\":1,\"session_id\":\"$sid\"}" >/dev/null
  save "$sid-t3"
  whole=$(python3 -c "import json,sys; print(json.dumps(''.join(sys.argv[1:])))" "$P1" "$A1" "$P2" "$B2" "$p")
  req POST /v1/completions "{\"prompt\":$whole,\"max_tokens\":12,\"temperature\":0,\"logprobs\":1}" >/dev/null
  save "$sid-whole"
  cached_done=$((cached_done + $(python3 -c "import json; print(json.load(open('$T/$sid-t3.json'))['usage']['prompt_tokens_details']['cached_tokens'])")))
done
turns_done=$((turns_done + 2))
same s1-t3 s1-whole && same s1b-t3 s1b-whole \
  && ! python3 -c "import json,sys; sys.exit(json.load(open('$T/s1-t3.json'))['usage']['prompt_tokens'] != json.load(open('$T/s1b-t3.json'))['usage']['prompt_tokens'])" \
  && pass "after the fork, s1 and s1b each == their own whole conversation" || fail "fork divergence"
expect_error "fork onto an existing id" 409 session_exists POST /v1/sessions/s1/fork '{"session_id":"c1"}'

# --- export -> import under a new id continues identically
code=$(curl -s -o "$T/s1.ckpt" -w '%{http_code} %{content_type}' -H "$AUTH" "$URL/v1/sessions/s1/export")
sz=$(stat -c %s "$T/s1.ckpt")
[ "${code%% *}" = 200 ] && [ "${code#* }" = application/octet-stream ] && [ "$sz" -gt 1000 ] && [ "$(head -c 8 "$T/s1.ckpt")" = RECURCK1 ] \
  && pass "GET /v1/sessions/s1/export: $sz bytes of application/octet-stream (RECURCK1)" || fail "export: $code size $sz"
req GET /v1/sessions/s1 >/dev/null; n_s1=$(jget 'j["n_tokens"]')
code=$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" --data-binary "@$T/s1.ckpt" "$URL/v1/sessions/s1copy/import")
[ "$code" = 200 ] && [ "$(jget '(j["id"], j["n_tokens"])')" = "('s1copy', $n_s1)" ] \
  && pass "POST /v1/sessions/s1copy/import: the same conversation length" || fail "import: $code $(cat "$T/body")"
code=$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" --data-binary "@$T/s1.ckpt" "$URL/v1/sessions/import?session_id=s1copy2")
[ "$code" = 200 ] && [ "$(jget 'j["id"]')" = s1copy2 ] && pass "POST /v1/sessions/import?session_id=s1copy2" || fail "import (query id): $code $(cat "$T/body")"
for sid in s1 s1copy; do
  req POST /v1/completions "{\"prompt\":\" Next day\",\"max_tokens\":12,\"temperature\":0,\"logprobs\":1,\"session_id\":\"$sid\"}" >/dev/null
  save "$sid-t4"
  cached_done=$((cached_done + $(jget 'j["usage"]["prompt_tokens_details"]["cached_tokens"]')))
done
turns_done=$((turns_done + 2))
same s1-t4 s1copy-t4 && pass "the imported copy continues exactly as the original" || fail "import continuation"
expect_error "import onto an existing id" 409 session_exists POST /v1/sessions/s1copy/import "@$T/s1.ckpt"
head -c 5000 /dev/urandom >"$T/garbage"
expect_error "import of garbage" 400 invalid_value POST /v1/sessions/junk/import "@$T/garbage"
head -c 300001 /dev/zero >"$T/huge"
expect_error "import over --max-import-bytes" 413 body_too_large POST /v1/sessions/huge/import "@$T/huge"
expect_error "import without Content-Length" 411 length_required POST /v1/sessions/chunked/import "@$T/s1.ckpt" -H 'Transfer-Encoding: chunked'

# --- delete, then 404
st=$(req DELETE /v1/sessions/s1copy2)
[ "$st" = 200 ] && [ "$(jget '(j["id"], j["object"], j["deleted"])')" = "('s1copy2', 'session.deleted', True)" ] \
  && pass "DELETE /v1/sessions/s1copy2" || fail "delete: $st $(cat "$T/body")"
expect_error "GET a deleted session" 404 session_not_found GET /v1/sessions/s1copy2
wait_metric 'recur_sessions_removed_total{reason="deleted"}' $((del0 + 1)) && pass "/metrics: one deletion" || fail "deleted counter"

# --- unknown and invalid
expect_error "GET unknown" 404 session_not_found GET /v1/sessions/nope
expect_error "DELETE unknown" 404 session_not_found DELETE /v1/sessions/nope
expect_error "fork unknown" 404 session_not_found POST /v1/sessions/nope/fork ""
expect_error "export unknown" 404 session_not_found GET /v1/sessions/nope/export
long=$(head -c 129 /dev/zero | tr '\0' x)
expect_error "session id of 129 bytes (path)" 400 invalid_session_id GET "/v1/sessions/$long"
expect_error "empty session id (path)" 400 invalid_session_id GET /v1/sessions/
expect_error "session id of 129 bytes (body)" 400 invalid_session_id POST /v1/completions "{\"prompt\":\"x\",\"session_id\":\"$long\"}"
expect_error "empty session id" 400 invalid_session_id POST /v1/completions '{"prompt":"x","session_id":""}'
expect_error "control character in a session id" 400 invalid_session_id POST /v1/chat/completions '{"messages":[{"role":"user","content":"x"}],"session_id":"a\u0001b"}'
expect_error "session id %-encoded control character (path)" 400 invalid_session_id GET /v1/sessions/a%01b
expect_error "session_id not a string" 400 invalid_type POST /v1/completions '{"prompt":"x","session_id":7}'
expect_error "n 2 with session_id" 400 invalid_value POST /v1/completions '{"prompt":"x","n":2,"session_id":"s1"}'
expect_error "wrong method" 405 method_not_allowed PUT /v1/sessions/s1
expect_error "a body on GET" 400 invalid_value DELETE /v1/sessions/s1 '{"x":1}'
code=$(curl -s -o "$T/body" -w '%{http_code}' "$URL/v1/sessions")
[ "$code" = 401 ] && [ "$(jget 'j["error"]["code"]')" = invalid_api_key ] && pass "GET /v1/sessions without a key -> 401" || fail "no key: $code"
code=$(curl -s -o "$T/body" -w '%{http_code}' "$URL/v1/completions" -d '{"prompt":"x","session_id":"s1"}')
[ "$code" = 401 ] && pass "a session turn without a key -> 401" || fail "turn without key: $code"

# --- busy: one turn at a time
curl -sN -H "$AUTH" "$URL/v1/completions" -d '{"prompt":"x","max_tokens":1000000,"ignore_eos":true,"stream":true,"session_id":"busy"}' >"$T/long" 2>/dev/null &
LPID=$!
for _ in $(seq 100); do [ -s "$T/long" ] && break; sleep 0.05; done
expect_error "a second turn on a busy session" 409 session_busy POST /v1/completions '{"prompt":"y","max_tokens":3,"session_id":"busy"}'
expect_error "fork of a busy session" 409 session_busy POST /v1/sessions/busy/fork ""
expect_error "export of a busy session" 409 session_busy GET /v1/sessions/busy/export
expect_error "delete of a busy session" 409 session_busy DELETE /v1/sessions/busy
st=$(req GET /v1/sessions/busy)
[ "$st" = 200 ] && [ "$(jget 'j["busy"]')" = True ] && pass "GET of a busy session works: busy true" || fail "get busy: $st $(cat "$T/body")"

# --- --max-requests-per-key 3 (the long stream above is one of sk-a's)
CPIDS=$LPID
for i in 1 2; do
  curl -sN -H "$AUTH" "$URL/v1/completions" -d '{"prompt":"x","max_tokens":1000000,"ignore_eos":true,"stream":true}' >"$T/long$i" 2>/dev/null &
  CPIDS="$CPIDS $!"
done
for i in 1 2; do for _ in $(seq 100); do [ -s "$T/long$i" ] && break; sleep 0.05; done; done
expect_error "4th request of a key with 3 in flight" 429 too_many_requests GET /v1/models
[ "$(jget 'j["error"]["type"]')" = rate_limit_error ] && pass "429 is a rate_limit_error" || fail "429 type"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY2" "$URL/v1/models")
[ "$code" = 200 ] && pass "another key is not limited" || fail "other key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")
[ "$code" = 200 ] && pass "health probes are not counted" || fail "health: $code"
for p in $CPIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
ok=0
for _ in $(seq 50); do
  [ "$(req GET /v1/sessions/busy)" = 200 ] && [ "$(jget 'j["busy"]')" = False ] && [ "$(metric recur_requests_running)" = 0 ] && { ok=1; break; }
  sleep 0.1
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "$URL/v1/models")
[ $ok = 1 ] && [ "$code" = 200 ] && pass "clients gone: the session is idle again and the key works (200)" \
  || { fail "after the limit: $code (idle: $ok; serve alive: $(kill -0 "$SPID" 2>/dev/null && echo yes || echo no))"; tail -5 "$T/serve.err"; }
turns_done=$((turns_done + 1))   # the cancelled turn on "busy" counts as a turn
cached_done=$((cached_done + 0))

# --- metrics moved by what the requests did
wait_metric recur_session_turns_total "$turns_done" && wait_metric recur_session_prompt_tokens_cached_total "$cached_done" \
  && pass "/metrics: recur_session_turns_total +$turns_done, recur_session_prompt_tokens_cached_total +$cached_done (the sum of the responses' cached_tokens)" \
  || fail "session counters"
kill -TERM "$SPID"; wait "$SPID" 2>/dev/null; SPID=

# ================================================================ phase 2: kill -9 and restart
# A chat template whose stop string the tiny model produces (it says " the the ..."), so a
# chat turn ends on it and the state holds text the client never saw.
cat >"$T/tmpl" <<'EOF'
name = "stop-test"
user_prefix = "User: "
user_suffix = "\n\n"
assistant_prefix = "Assistant:"
assistant_suffix = " the the\n\n"
generation_prompt = "Assistant:"
stop = " the the"
EOF
D2="$T/sess2"
if ! start_serve "$T/serve2" --session-dir "$D2" --chat-template "$T/tmpl"; then
  fail "serve 2 did not come up"; sed 's/^/     /' "$T/serve2.err" | head; exit 1
fi
AUTH="X-No-Auth: 1"
req POST /v1/completions '{"prompt":"Once upon a time","max_tokens":20,"temperature":0,"session_id":"r1"}' >/dev/null
req POST /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":20,"temperature":0,"session_id":"rc"}' >/dev/null
rc1=$(jget 'json.dumps(j["choices"][0]["message"]["content"])'); rf=$(jget 'j["choices"][0]["finish_reason"]')
req POST /v1/sessions/r1/fork '{"session_id":"r1ref"}' >/dev/null
req POST /v1/sessions/rc/fork '{"session_id":"rcref"}' >/dev/null
req POST /v1/completions '{"prompt":" and the","max_tokens":16,"temperature":0,"logprobs":1,"session_id":"r1ref"}' >/dev/null; save r1ref
req POST /v1/chat/completions '{"messages":[{"role":"user","content":"Go on"}],"max_tokens":16,"temperature":0,"logprobs":true,"session_id":"rcref"}' >/dev/null; save rcref
req POST /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":$rc1},{\"role\":\"user\",\"content\":\"Go on\"}],\"max_tokens\":16,\"temperature\":0,\"logprobs\":true}" >/dev/null
save rcwhole
[ "$rf" = stop ] && same rcref rcwhole && pass "custom template: chat turn 1 ended on its stop string (reply $rc1); turn 2 == whole conversation" \
  || fail "custom-template chat: finish $rf"
# kill -9 of serve; its workers die by their parent-death signal: wait until they are gone
kids=$(ps -o pid= --ppid "$SPID" | tr -d ' ')
kill -9 "$SPID"; wait "$SPID" 2>/dev/null; SPID=
for _ in $(seq 100); do
  alive=0; for k in $kids; do kill -0 "$k" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 0.05
done
[ $alive = 0 ] && pass "kill -9 serve: its worker processes ($kids) are gone too" || fail "workers outlived serve: $kids"
if ! start_serve "$T/serve3" --session-dir "$D2" --chat-template "$T/tmpl"; then
  fail "serve 3 did not come up"; sed 's/^/     /' "$T/serve3.err" | head; exit 1
fi
req POST /v1/completions '{"prompt":" and the","max_tokens":16,"temperature":0,"logprobs":1,"session_id":"r1"}' >/dev/null; save r1after
req POST /v1/chat/completions '{"messages":[{"role":"user","content":"Go on"}],"max_tokens":16,"temperature":0,"logprobs":true,"session_id":"rc"}' >/dev/null; save rcafter
same r1after r1ref && same rcafter rcref \
  && pass "after kill -9 and a restart on the same --session-dir: completions and chat sessions continue as the uninterrupted copies" \
  || fail "restart continuation"
kill -TERM "$SPID"; wait "$SPID" 2>/dev/null; SPID=

if [ $fails != 0 ]; then for f in serve serve2 serve3; do [ -f "$T/$f.err" ] && { echo "     $f stderr (end):"; tail -15 "$T/$f.err" | sed 's/^/     /'; }; done; fi
[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
