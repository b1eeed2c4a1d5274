#!/usr/bin/env bash
# test_serve_sampling.sh: the sampling extras end to end, `recur serve` + `recur client` on
# the bundled tiny model (byte-level, 256 tokens), and on synth7 split over ranks.
# Checks:
#  - greedy with --logprobs 5: one logprob line per generated token; each token is its own
#    top-1 alternative with the same logprob; 5 alternatives in descending order; every
#    logprob <= 0 and the 5 alternatives' probabilities sum to <= 1;
#  - logit_bias -100 on the greedy first token changes the first token (and it leaves the
#    top 5); +100 on a token makes every generated token that token (sampling at T = 1);
#  - frequency penalty 2 (and repetition penalty 1.5) give fewer repeated tokens than none,
#    greedy; presence 2 as well;
#  - with a stop string (text held back until decided) every token still has its own
#    logprobs: as many lines as completion tokens, the greedy prefix, each its own top-1;
#  - the same seed with penalties, bias and logprobs gives the same tokens and logprobs twice;
#  - 6 concurrent requests, extras mixed with plain ones (one batch): each gets the text and
#    logprobs it gets alone;
#  - an out-of-range logit_bias id gets INVALID_ARGUMENT naming the vocabulary, and the
#    server keeps serving (the next greedy answer is unchanged);
#  - synth7 with penalties, bias and logprobs (greedy): --tp 2 and --pp 2 (where the token
#    history lives on the last stage, not on the rank that answers) give the same tokens as
#    one rank and logprobs within 1e-3.
# Needs: RECUR_BIN, RECUR_FIXTURES_DIR, python3; RECUR_MPIRUN for the --tp 2 / --pp 2 part.
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
FX=${RECUR_FIXTURES_DIR:?RECUR_FIXTURES_DIR not set}/rwkv7
TINY=$FX/tiny-rwkv-7v0-834K-FP32.bin
SYNTH=$FX/synth7-C128-H2-L3-FP32.bin
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-samp-XXXXXX")
. "$(dirname "$0")/recur_testlib.sh"
SPID=
cleanup() { [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

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
stop_serve() {
  kill -TERM "$SPID"
  for _ in $(seq 150); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  wait "$SPID" 2>/dev/null
  SPID=
}
# client NAME ARGS...: stdout to $T/NAME, the logprob lines to $T/NAME.lp, stderr to $T/NAME.err
client() {
  local name=$1; shift
  "$BIN" client --connect "$EP" "$@" >"$T/$name" 2>"$T/$name.err"
  local rc=$?
  grep '^logprob ' "$T/$name.err" >"$T/$name.lp"
  return $rc
}
# lp FILE MODE: python over the logprob lines ("logprob LP id ID | top: ID "TEXT" LP, ...")
lp() {
  python3 - "$@" <<'EOF'
import re, sys, math
path, mode = sys.argv[1], sys.argv[2]
rows = []
for line in open(path, encoding="utf-8", errors="replace"):
    m = re.match(r'^logprob (\S+) id (\d+)(?: \| top: (.*))?$', line.rstrip("\n"))
    if not m:
        print("unparsed: " + line.strip()); sys.exit(1)
    tops = [(int(a), float(c)) for a, _, c in re.findall(r'(\d+) "((?:[^"\\]|\\.)*)" ([^,\s]+)', m.group(3) or "")]
    rows.append((float(m.group(1)), int(m.group(2)), tops))
if mode == "greedy":   # argv[3] = alternatives expected per token
    k = int(sys.argv[3]); bad = []
    for i, (l, t, tops) in enumerate(rows):
        if len(tops) != k: bad.append("token %d: %d alternatives" % (i, len(tops)))
        elif tops[0][0] != t or tops[0][1] != l: bad.append("token %d: id %d lp %g, top-1 %s" % (i, t, l, tops[0]))
        elif any(tops[j][1] < tops[j + 1][1] for j in range(k - 1)): bad.append("token %d: not descending" % i)
        elif l > 0 or any(x > 0 for _, x in tops): bad.append("token %d: a logprob > 0" % i)
        elif sum(math.exp(x) for _, x in tops) > 1 + 1e-4: bad.append("token %d: probabilities sum > 1" % i)
    print("%d tokens; %s" % (len(rows), "; ".join(bad[:3]) if bad else "all consistent"))
    sys.exit(1 if bad or not rows else 0)
if mode == "ids":      # the generated ids, one line
    print(" ".join(str(t) for _, t, _ in rows))
if mode == "repeats":  # generated tokens minus distinct ones
    ids = [t for _, t, _ in rows]; print(len(ids) - len(set(ids)))
if mode == "first":
    print(rows[0][1] if rows else -1)
if mode == "not_in_top1":  # argv[3]: an id that must not be among the first token's alternatives
    print("absent" if all(t != int(sys.argv[3]) for t, _ in rows[0][2]) else "present")
if mode == "same":     # argv[3]: another file; same ids, logprobs within 1e-3
    other = [l for l in open(sys.argv[3], encoding="utf-8", errors="replace") if l.startswith("logprob ")]
    o = []
    for line in other:
        m = re.match(r'^logprob (\S+) id (\d+)(?: \| top: (.*))?$', line.rstrip("\n"))
        o.append((float(m.group(1)), int(m.group(2)),
                  [(int(a), float(c)) for a, _, c in re.findall(r'(\d+) "((?:[^"\\]|\\.)*)" ([^,\s]+)', m.group(3) or "")]))
    ok = len(o) == len(rows) and len(rows) > 0 and all(
        a[1] == b[1] and abs(a[0] - b[0]) <= 1e-3 and [t for t, _ in a[2]] == [t for t, _ in b[2]]
        and all(abs(x - y) <= 1e-3 for (_, x), (_, y) in zip(a[2], b[2])) for a, b in zip(rows, o))
    print("same" if ok else "differ (%d vs %d tokens)" % (len(rows), len(o)))
EOF
}

if ! command -v python3 >/dev/null; then echo "skip: no python3"; exit 77; fi

start_serve tiny --model "$TINY" --max-batch 8
if [ -n "$EP" ]; then
  P="Once upon a time"
  client g5 --prompt "$P" --max-tokens 30 --temperature 0 --logprobs 5
  n=$(wc -l <"$T/g5.lp")
  grep -q "completion 30 tokens" "$T/g5.err" && [ "$n" = 30 ] && r=$(lp "$T/g5.lp" greedy 5) \
    && pass "greedy --logprobs 5: $r" || { fail "greedy logprobs: $n lines; $(lp "$T/g5.lp" greedy 5)"; head -3 "$T/g5.err"; }
  client g0 --prompt "$P" --max-tokens 30 --temperature 0
  cmp -s "$T/g0" "$T/g5" && pass "logprobs do not change the text" || fail "text with logprobs differs"

  first=$(lp "$T/g5.lp" first)
  client b1 --prompt "$P" --max-tokens 5 --temperature 0 --logprobs 5 --logit-bias "$first:-100"
  f2=$(lp "$T/b1.lp" first)
  [ "$f2" != "$first" ] && [ "$f2" -ge 0 ] && [ "$(lp "$T/b1.lp" not_in_top1 "$first")" = absent ] \
    && pass "logit_bias $first:-100 moves the first greedy token to $f2" || fail "bias -100: first token $f2 (was $first)"
  client b2 --prompt "$P" --max-tokens 12 --temperature 1 --seed 3 --logprobs 0 --logit-bias "90:100"
  ids=$(lp "$T/b2.lp" ids)
  [ "$ids" = "$(printf '90 %.0s' $(seq 12) | sed 's/ $//')" ] && [ "$(cat "$T/b2")" = ZZZZZZZZZZZZ ] \
    && pass "logit_bias 90:+100 makes every token 90 ('Z') at T=1" || fail "bias +100: ids '$ids', text '$(cat "$T/b2")'"

  client r0 --prompt "$P" --max-tokens 40 --temperature 0 --logprobs 0
  r0=$(lp "$T/r0.lp" repeats)
  for pen in "--frequency-penalty 2" "--repetition-penalty 1.5" "--presence-penalty 2"; do
    client r1 --prompt "$P" --max-tokens 40 --temperature 0 --logprobs 0 $pen
    r1=$(lp "$T/r1.lp" repeats)
    [ "$r1" -lt "$r0" ] && pass "$pen: $r1 repeated tokens of 40, $r0 without: '$(head -c 40 "$T/r1")'" \
      || fail "$pen: $r1 repeats, $r0 without"
  done

  # a stop string holds text (and its tokens) back: the logprobs stay with their tokens
  client st --prompt "$P" --max-tokens 40 --temperature 0 --stop "the the" --logprobs 2
  nst=$(sed -n 's/.*completion \([0-9]*\) tokens.*/\1/p' "$T/st.err")
  ids_st=$(lp "$T/st.lp" ids); ids_r0=$(lp "$T/r0.lp" ids)
  grep -q "finished: stop" "$T/st.err" && [ "$(wc -l <"$T/st.lp")" = "$nst" ] && [ "${ids_r0#"$ids_st"}" != "$ids_r0" ] \
    && lp "$T/st.lp" greedy 2 >/dev/null \
    && pass "stop string: $nst tokens, each with its own logprobs, the greedy ones" \
    || { fail "stop string with logprobs: $nst tokens, ids '$ids_st'"; cat "$T/st.err"; }

  args=(--prompt "$P" --max-tokens 30 --temperature 0.9 --seed 7 --frequency-penalty 0.5 --presence-penalty 0.3
        --repetition-penalty 1.2 --logit-bias "32:-2,101:1.5" --logprobs 3)
  client s1 "${args[@]}"
  client s2 "${args[@]}"
  [ -s "$T/s1.lp" ] && cmp -s "$T/s1" "$T/s2" && cmp -s "$T/s1.lp" "$T/s2.lp" \
    && pass "same seed with penalties, bias and logprobs: same tokens and logprobs twice" || fail "seeded runs differ"

  # 6 requests at once, extras mixed with plain ones: each as it was alone
  mix=("--logprobs 3" "" "--frequency-penalty 1.5 --logprobs 2" "--logit-bias 116:-100" "--repetition-penalty 1.4"
       "--presence-penalty 1 --logit-bias 101:3 --logprobs 1")
  for i in 0 1 2 3 4 5; do client "m$i" --prompt "Prompt $i:" --max-tokens 25 --temperature 0 ${mix[$i]} & done
  wait $(jobs -p | grep -v "^$SPID$") 2>/dev/null
  ok=1
  for i in 0 1 2 3 4 5; do
    client "a$i" --prompt "Prompt $i:" --max-tokens 25 --temperature 0 ${mix[$i]}
    { [ -s "$T/a$i" ] && cmp -s "$T/m$i" "$T/a$i" && cmp -s "$T/m$i.lp" "$T/a$i.lp"; } || { ok=0; echo "     request $i differs"; }
  done
  [ $ok = 1 ] && pass "6 concurrent requests with mixed extras: each as alone (text and logprobs)" || fail "concurrent extras"

  client e1 --prompt "$P" --max-tokens 5 --logit-bias "256:5"; rc=$?
  [ $rc = 1 ] && grep -q "error 1: .*logit_bias\[0\].token_id = 256: outside the vocabulary of 256" "$T/e1.err" \
    && pass "out-of-range logit_bias id refused: $(head -1 "$T/e1.err")" || { fail "bad bias id: rc $rc"; cat "$T/e1.err"; }
  client g1 --prompt "$P" --max-tokens 30 --temperature 0
  cmp -s "$T/g1" "$T/g0" && pass "still serving correctly after the error" || fail "serving after the error"
  stop_serve
fi

if [ -n "${RECUR_MPIRUN:-}" ] && [ -f "$SYNTH" ]; then
  args=(--prompt "Hello there" --max-tokens 24 --temperature 0 --frequency-penalty 0.7 --presence-penalty 0.2
        --repetition-penalty 1.3 --logit-bias "101:2" --logprobs 4)
  for grid in "1 1" "2 1" "1 2"; do
    set -- $grid
    start_serve "grid$1$2" --model "$SYNTH" --slots 8 --tp "$1" --pp "$2"
    [ -n "$EP" ] || continue
    client "d$1$2" "${args[@]}"
    [ "$1$2" = 11 ] && client d11plain --prompt "Hello there" --max-tokens 24 --temperature 0 --logprobs 4
    stop_serve
  done
  # the comparison below means something only if the extras change the tokens
  [ -s "$T/d11.lp" ] && [ "$(lp "$T/d11.lp" ids)" != "$(lp "$T/d11plain.lp" ids)" ] \
    && pass "synth7: penalties and bias change the greedy tokens" || fail "synth7: the extras changed nothing"
  for g in 21 12; do
    [ -s "$T/d11.lp" ] && cmp -s "$T/d11" "$T/d$g" && [ "$(lp "$T/d11.lp" same "$T/d$g.lp")" = same ] \
      && pass "synth7 tp x pp = ${g:0:1} x ${g:1:1}: same tokens and logprobs as one rank, with penalties and bias" \
      || { fail "synth7 ${g:0:1} x ${g:1:1} differs: $(lp "$T/d11.lp" same "$T/d$g.lp")"; head -2 "$T/d11.lp" "$T/d$g.lp"; }
  done
else
  echo "skip --tp 2 / --pp 2 (RECUR_MPIRUN or $SYNTH missing)"
fi

[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
