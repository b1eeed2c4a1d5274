#!/usr/bin/env bash
# wait-for-recur.sh [SECONDS]: wait until no `recur` process runs in this container, at most
# SECONDS (default 110). It is the preStop hook of the worker pods (deploy/k8s): when a job
# is deleted every pod gets SIGTERM at once, so a worker pod waits here until the
# coordinator has drained its requests and sent the worker group Shutdown; only then does
# its sshd (and with it the ranks' connections) get the signal. Exits 0 either way: the
# pod's terminationGracePeriodSeconds bounds the whole stop.
limit=${1:-110}
[[ $limit =~ ^[0-9]+$ ]] || { echo "wait-for-recur: SECONDS must be a number, got '$limit'" >&2; exit 2; }
for ((i = 0; i < limit; i++)); do
  running=0
  for c in /proc/[0-9]*/comm; do
    name=""
    read -r name 2>/dev/null <"$c" || true
    if [ "$name" = recur ]; then running=1; break; fi
  done
  [ "$running" = 1 ] || exit 0
  sleep 1
done
echo "wait-for-recur: recur still runs after $limit s" >&2
exit 0
