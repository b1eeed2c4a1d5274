#!/usr/bin/env bash
# test_serve.sh: `recur serve` + `recur client` end to end on the bundled tiny model.
# Checks: greedy text through the server equals `recur generate --temperature 0`; 8
# concurrent clients each get their own complete, correct stream; a too-long prompt and an
# empty one get a clear error and the server keeps serving; Cancel ends a stream early
# (finish reason cancelled); SIGTERM shuts serve and its worker down (exit 0, no process
# left); a --tp 2 server on synth7 gives the same text as --tp 1; so does a coordinator started
# with --external-workers whose worker group is launched separately by mpirun --hostfile.
# Needs: RECUR_BIN, RECUR_FIXTURES_DIR; RECUR_MPIRUN (the mpirun command line) for --tp 2.
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
FX=${RECUR_FIXTURES_DIR:?RECUR_FIXTURES_DIR not set}/rwkv7
TINY=$FX/tiny-rwkv-7v0-834K-FP32.bin
SYNTH=$FX/synth7-C128-H2-L3-FP32.bin
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-serve-XXXXXX")
. "$(dirname "$0")/recur_testlib.sh"
SPID=
cleanup() { [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

# start_serve NAME ARGS...: starts serve, sets SPID and EP (empty when it did not come up)
start_serve() {
  local name=$1; shift
  "$BIN" serve --port 0 "$@" >"$T/$name.out" 2>"$T/$name.err" &
  SPID=$!
  EP=
  for _ in $(seq 300); do
    EP=$(sed -n 's/^recur serve: listening on //p' "$T/$name.out")
    [ -n "$EP" ] && return 0
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
  done
  fail "$name: serve did not come up"; sed 's/^/     /' "$T/$name.err" | head -10
}
# stop_serve NAME: SIGTERM, then exit 0 within 15 s and no worker left
stop_serve() {
  local name=$1 wpids
  wpids=$(pgrep -P "$SPID" 2>/dev/null)
  kill -TERM "$SPID"
  local rc=124
  for _ in $(seq 150); do kill -0 "$SPID" 2>/dev/null || { wait "$SPID"; rc=$?; break; }; sleep 0.1; done
  [ "$rc" = 0 ] && pass "$name: SIGTERM -> exit 0" || { fail "$name: SIGTERM -> exit $rc"; sed 's/^/     /' "$T/$name.err" | tail -5; }
  sleep 0.3
  local left=0
  for p in $wpids; do kill -0 "$p" 2>/dev/null && left=1; done
  [ "$left" = 0 ] && pass "$name: no worker process left" || fail "$name: worker processes left: $wpids"
  grep -h "per step" "$T/$name.err" | sed 's/^/     /'
  SPID=
}

start_serve tiny --model "$TINY" --max-prompt 200 --max-batch 16
if [ -n "$EP" ]; then
  "$BIN" client --connect "$EP" --prompt "Once upon a time" --max-tokens 40 --temperature 0 >"$T/c1" 2>"$T/c1.err"
  "$BIN" generate --model "$TINY" --prompt "Once upon a time" --max-tokens 40 --temperature 0 >"$T/g1" 2>/dev/null
  cmp -s "$T/c1" "$T/g1" && pass "greedy via serve == generate: $(head -c 50 "$T/c1")" || { fail "greedy via serve differs"; head -3 "$T/c1" "$T/g1" "$T/c1.err"; }

  # 8 concurrent clients, different prompts and lengths
  for i in 1 2 3 4 5 6 7 8; do
    "$BIN" client --connect "$EP" --prompt "Prompt number $i says" --max-tokens $((20 + 5 * i)) --temperature 0 >"$T/p$i" 2>/dev/null &
  done
  wait $(jobs -p | grep -v "^$SPID$") 2>/dev/null
  ok=1
  for i in 1 2 3 4 5 6 7 8; do
    "$BIN" generate --model "$TINY" --prompt "Prompt number $i says" --max-tokens $((20 + 5 * i)) --temperature 0 >"$T/q$i" 2>/dev/null
    cmp -s "$T/p$i" "$T/q$i" || { ok=0; echo "     client $i differs"; }
  done
  [ $ok = 1 ] && pass "8 concurrent clients each got their own correct stream" || fail "concurrent streams"

  long=$(head -c 300 /dev/zero | tr '\0' a)
  "$BIN" client --connect "$EP" --prompt "$long" --max-tokens 5 >/dev/null 2>"$T/e1"; rc=$?
  [ $rc = 1 ] && grep -q "prompt" "$T/e1" && pass "too-long prompt refused: $(head -1 "$T/e1")" || fail "too-long prompt: rc $rc $(cat "$T/e1")"
  "$BIN" client --connect "$EP" --prompt "" >/dev/null 2>"$T/e2"; rc=$?
  [ $rc = 1 ] && grep -q "non-empty" "$T/e2" && pass "empty prompt refused: $(head -1 "$T/e2")" || fail "empty prompt: rc $rc"

  "$BIN" client --connect "$EP" --prompt "The cat" --max-tokens 500 --temperature 0 --cancel-after 3 >"$T/cx" 2>"$T/cx.err"; rc=$?
  [ $rc = 0 ] && grep -q "finished: cancelled" "$T/cx.err" && [ "$(wc -c <"$T/cx")" -lt 100 ] \
    && pass "cancel ends the stream: $(grep finished "$T/cx.err")" || { fail "cancel: rc $rc"; cat "$T/cx.err"; }

  "$BIN" client --connect "$EP" --prompt "Once upon a time" --max-tokens 40 --temperature 0 --stop "the the" >"$T/st" 2>"$T/st.err"
  grep -q "finished: stop" "$T/st.err" && ! grep -q "the the" "$T/st" && pass "stop string ends the stream, trimmed: '$(head -c 40 "$T/st")'" || { fail "stop string"; cat "$T/st" "$T/st.err"; }

  "$BIN" client --connect "$EP" --prompt "Once upon a time" --max-tokens 40 --temperature 0 >"$T/c2" 2>/dev/null
  cmp -s "$T/c2" "$T/g1" && pass "still serving correctly after the errors" || fail "serving after errors"
  "$BIN" client --connect "$EP" --health >"$T/h" 2>&1 && pass "health: $(cat "$T/h")" || fail "health: $(cat "$T/h")"
  # the C client library through recur_loadgen: 48 requests, 16 in flight on one socket
  "$(dirname "$BIN")/recur_loadgen" --connect "$EP" --concurrency 16 --requests 48 --max-tokens 20 >"$T/lg" 2>&1; rc=$?
  [ $rc = 0 ] && grep -q "| requests done (errors) | 48 (0) |" "$T/lg" && grep -q "/ 960 |" "$T/lg" \
    && pass "recur_loadgen (C client library): 48 requests x 20 tokens, no error" || { fail "recur_loadgen: rc $rc"; cat "$T/lg"; }
  stop_serve tiny
fi

# --tp 2 (two MPI ranks) against --tp 1 on synth7
if [ -n "${RECUR_MPIRUN:-}" ] && [ -f "$SYNTH" ]; then
  start_serve tp1 --model "$SYNTH" --slots 8
  if [ -n "$EP" ]; then
    "$BIN" client --connect "$EP" --prompt "Hello there" --max-tokens 24 --temperature 0 >"$T/t1" 2>/dev/null
    stop_serve tp1
  fi
  start_serve tp2 --model "$SYNTH" --slots 8 --tp 2
  if [ -n "$EP" ]; then
    "$BIN" client --connect "$EP" --prompt "Hello there" --max-tokens 24 --temperature 0 >"$T/t2" 2>/dev/null
    [ -s "$T/t1" ] && cmp -s "$T/t1" "$T/t2" && pass "--tp 2 text == --tp 1 text" || { fail "--tp 2 differs from --tp 1"; od -c "$T/t1" | head -3; od -c "$T/t2" | head -3; }
    stop_serve tp2
  fi
else
  echo "skip --tp 2 (RECUR_MPIRUN or $SYNTH missing)"
fi

# multi-node shape on one machine: the coordinator alone (--external-workers), the worker
# group launched by "the user's" mpirun with a hostfile naming localhost twice
HOSTS=$(dirname "$0")/data/hostfile-localhost-twice
if [ -n "${RECUR_MPIRUN:-}" ] && [ -f "$SYNTH" ] && [ -f "$HOSTS" ] && [ -s "$T/t1" ]; then
  "$BIN" serve --model "$SYNTH" --port 0 --slots 8 --tp 2 --external-workers >"$T/ext.out" 2>"$T/ext.err" &
  SPID=$!
  WEP=
  for _ in $(seq 100); do
    WEP=$(sed -n 's/^recur serve: workers connect to //p' "$T/ext.out"); [ -n "$WEP" ] && break; sleep 0.1
  done
  # shellcheck disable=SC2086  # RECUR_MPIRUN is a command line
  $RECUR_MPIRUN --hostfile "$HOSTS" -np 2 "$BIN" worker --connect "$WEP" --model "$SYNTH" --slots 8 --tp 2 \
    >"$T/extw.out" 2>"$T/extw.err" &
  MPID=$!
  EP=
  for _ in $(seq 300); do
    EP=$(sed -n 's/^recur serve: listening on //p' "$T/ext.out"); [ -n "$EP" ] && break; sleep 0.1
  done
  if [ -n "$EP" ]; then
    "$BIN" client --connect "$EP" --prompt "Hello there" --max-tokens 24 --temperature 0 >"$T/t3" 2>/dev/null
    cmp -s "$T/t1" "$T/t3" && pass "--external-workers + mpirun --hostfile (localhost twice) --tp 2: same text" \
      || { fail "external workers: text differs"; od -c "$T/t3" | head -3; }
  else
    fail "external workers: serve never became ready"; tail -5 "$T/ext.err" "$T/extw.err"
  fi
  kill -TERM "$SPID"
  rc=124
  for _ in $(seq 150); do kill -0 "$SPID" 2>/dev/null || { wait "$SPID"; rc=$?; break; }; sleep 0.1; done
  wrc=124
  for _ in $(seq 150); do kill -0 "$MPID" 2>/dev/null || { wait "$MPID"; wrc=$?; break; }; sleep 0.1; done
  [ "$rc" = 0 ] && [ "$wrc" = 0 ] && pass "external workers: SIGTERM -> serve exit 0, the workers' mpirun exit 0 (Shutdown)" \
    || { fail "external workers: serve exit $rc, mpirun exit $wrc"; kill -9 "$MPID" 2>/dev/null; tail -3 "$T/extw.err"; }
  SPID=
else
  echo "skip --external-workers (RECUR_MPIRUN, $SYNTH, $HOSTS or the tp1 text missing)"
fi

[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
