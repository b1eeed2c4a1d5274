#!/usr/bin/env bash
# launch_multinode.sh: run recur across nodes. On this node it starts the coordinator
# (`recur serve --external-workers`), and through `mpirun` the worker group: T*P ranks of
# `recur worker --connect tcp://COORD:PORT`, one per GPU, laid out node by node from a
# hostfile (world rank = pp_rank * T + tp_rank, so with G GPUs per node and T <= G a
# stage's tensor-parallel group stays inside one node).
#
#   scripts/launch_multinode.sh --model PATH --tp T --pp P --hostfile hosts [options] [-- serve flags]
#
# The same script is the launcher of the Kubernetes manifests (deploy/k8s): the MPI
# Operator's launcher pod passes its hostfile, a LeaderWorkerSet leader --hosts-from-lws.
# --dry-run prints the environment and both command lines and exits (tests/test_deploy.sh
# checks every flag it prints against `recur <command> --help`).
#
# Signals: SIGTERM/SIGINT go to the coordinator, which drains and shuts the workers down;
# mpirun then ends by itself (it is stopped after --stop-timeout-s otherwise). If the worker
# group ends first, the coordinator is stopped and the script exits 1.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch_multinode.sh --model PATH [options] [-- extra `recur serve` flags]
  --model PATH          model file or directory, at the same path on every node (required)
  --tp T, --pp P        tensor- and pipeline-parallel sizes (default 1, 1); T*P ranks in all
  --hostfile FILE       Open MPI hostfile, one node a line: `HOST slots=GPUS`
  --hosts-from-lws G    the nodes of this LeaderWorkerSet group (LWS_LEADER_ADDRESS,
                        LWS_GROUP_SIZE), G slots each; without either option: this node only
  --coord-host H        address of this node that the workers connect to (default: the first
                        address of `hostname -I`)
  --worker-port N       the coordinator's worker endpoint port (default 5556)
  --ifname IF           network interface for NCCL (NCCL_SOCKET_IFNAME) and Open MPI's TCP
                        traffic (btl_tcp_if_include, oob_tcp_if_include)
  --backend cpu|cuda    (default cuda)
  --slots N             state slots of the worker group, padding slot 0 included (default 64)
  --recur PATH          the recur program (default: recur on PATH, else build/bin/recur)
  --mpirun CMD          the MPI launcher (default: mpirun)
  --mpi-args "ARGS"     more mpirun arguments (split on spaces)
  --wait-hosts S        wait up to S seconds for every other node to accept TCP on --ssh-port
  --ssh-port N          port of the nodes' sshd, for --wait-hosts (default 22)
  --stop-timeout-s S    after the coordinator exits, how long mpirun may take (default 30)
  --curve-keys DIR      CURVE on the coordinator <-> worker link: `recur serve --curve-keys DIR`
                        and `recur worker --curve-keys DIR` (DIR from `recur keygen`, at the
                        same path on the coordinator's node and on the node of world rank 0)
  --dry-run             print the environment and the two command lines, start nothing
Environment: NCCL_NVLS_ENABLE is set to 0 unless already set (NVLink multicast can take
multi-GPU hosts' GPUs out of service) and passed to every rank with NCCL_SOCKET_IFNAME,
NCCL_DEBUG, PATH and LD_LIBRARY_PATH.
EOF
}

die() { echo "launch_multinode: $*" >&2; exit 2; }
need_int() {
  if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt "${3:-1}" ]; then die "$1 expects an integer >= ${3:-1}, got '$2'"; fi
}

model="" tp=1 pp=1 hostfile="" lws_slots="" coord_host="" worker_port=5556 ifname=""
backend=cuda slots=64 recur="" mpirun=mpirun mpi_args="" wait_hosts=0 ssh_port=22
stop_timeout=30 dry_run=0 curve_keys=""
serve_extra=()
while [ $# -gt 0 ]; do
  opt=$1
  case $opt in
    --dry-run) dry_run=1; shift; continue ;;
    -h|--help) usage; exit 0 ;;
    --) shift; serve_extra=("$@"); break ;;
    --*) [ $# -ge 2 ] || die "$opt needs a value" ;;
    *) usage >&2; die "unexpected argument '$opt'" ;;
  esac
  val=$2
  shift 2
  case $opt in
    --model) model=$val ;;
    --tp) need_int "$opt" "$val"; tp=$val ;;
    --pp) need_int "$opt" "$val"; pp=$val ;;
    --hostfile) hostfile=$val ;;
    --hosts-from-lws) need_int "$opt" "$val"; lws_slots=$val ;;
    --coord-host) coord_host=$val ;;
    --worker-port) need_int "$opt" "$val"; worker_port=$val ;;
    --ifname) ifname=$val ;;
    --backend) [ "$val" = cpu ] || [ "$val" = cuda ] || die "--backend expects cpu or cuda, got '$val'"; backend=$val ;;
    --slots) need_int "$opt" "$val" 2; slots=$val ;;
    --recur) recur=$val ;;
    --mpirun) mpirun=$val ;;
    --mpi-args) mpi_args=$val ;;
    --wait-hosts) need_int "$opt" "$val" 0; wait_hosts=$val ;;
    --ssh-port) need_int "$opt" "$val"; ssh_port=$val ;;
    --stop-timeout-s) need_int "$opt" "$val" 0; stop_timeout=$val ;;
    --curve-keys) curve_keys=$val ;;
    *) usage >&2; die "unknown option '$opt'" ;;
  esac
done
[ -n "$model" ] || { usage >&2; die "--model is required"; }
[ -z "$hostfile" ] || [ -z "$lws_slots" ] || die "give --hostfile or --hosts-from-lws, not both"
np=$((tp * pp))

if [ -z "$recur" ]; then
  if command -v recur >/dev/null 2>&1; then recur=$(command -v recur)
  else recur="$(cd "$(dirname "$0")/.." && pwd)/build/bin/recur"; fi
fi
[ "$dry_run" = 1 ] || [ -x "$recur" ] || die "the recur program '$recur' is not there (build it, or give --recur)"

# The nodes: from the hostfile, from the LeaderWorkerSet group, or this node alone.
# LWS names a group's pods NAME-GROUP (the leader) and NAME-GROUP-I (workers 1..size-1),
# all under the leader's subdomain, so the workers' addresses follow from the leader's.
hosts=()   # "host slots" pairs
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "cannot read the hostfile '$hostfile'"
  while read -r h rest; do
    case $h in ''|'#'*) continue ;; esac
    s=1
    if [[ $rest =~ slots=([0-9]+) ]]; then s=${BASH_REMATCH[1]}; fi
    hosts+=("$h $s")
  done <"$hostfile"
  [ ${#hosts[@]} -gt 0 ] || die "the hostfile '$hostfile' names no host"
elif [ -n "$lws_slots" ]; then
  leader=${LWS_LEADER_ADDRESS:?--hosts-from-lws needs LWS_LEADER_ADDRESS (set by LeaderWorkerSet)}
  size=${LWS_GROUP_SIZE:?--hosts-from-lws needs LWS_GROUP_SIZE (set by LeaderWorkerSet)}
  need_int LWS_GROUP_SIZE "$size"
  first=${leader%%.*}
  domain=${leader#"$first"}
  hosts+=("$leader $lws_slots")
  for ((i = 1; i < size; i++)); do hosts+=("$first-$i$domain $lws_slots"); done
fi
total=0
for hs in "${hosts[@]}"; do total=$((total + ${hs##* })); done
if [ ${#hosts[@]} -gt 0 ] && [ "$total" -lt "$np" ]; then
  die "--tp $tp x --pp $pp needs $np slots, the nodes give $total (${hosts[*]})"
fi

if [ -z "$coord_host" ]; then
  coord_host=$(hostname -I 2>/dev/null | awk '{print $1}')
  [ -n "$coord_host" ] || die "cannot tell this node's address: give --coord-host"
fi

# ---- the environment every rank gets
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
pass_env=(NCCL_NVLS_ENABLE PATH)
[ -n "$ifname" ] && export NCCL_SOCKET_IFNAME=$ifname
for v in NCCL_SOCKET_IFNAME NCCL_DEBUG LD_LIBRARY_PATH; do
  [ -n "${!v:-}" ] && pass_env+=("$v")
done
if [ "$(id -u)" = 0 ]; then   # Open MPI refuses root unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# ---- the two command lines
serve_cmd=("$recur" serve --external-workers --model "$model" --tp "$tp" --pp "$pp" --backend "$backend"
           --slots "$slots" --worker-bind "tcp://0.0.0.0:$worker_port")
[ -n "$curve_keys" ] && serve_cmd+=(--curve-keys "$curve_keys")
serve_cmd+=("${serve_extra[@]}")
read -r -a mpi_cmd <<<"$mpirun"
mpi_cmd+=(-np "$np" --map-by slot --bind-to none)
if [ -n "$hostfile" ]; then
  mpi_cmd+=(--hostfile "$hostfile")
elif [ ${#hosts[@]} -gt 0 ]; then
  hl=""
  for hs in "${hosts[@]}"; do hl+="${hl:+,}${hs% *}:${hs##* }"; done
  mpi_cmd+=(--host "$hl")
fi
for v in "${pass_env[@]}"; do mpi_cmd+=(-x "$v"); done
if [ -n "$ifname" ]; then
  mpi_cmd+=(--mca btl_tcp_if_include "$ifname" --mca oob_tcp_if_include "$ifname")
fi
if [ -n "$mpi_args" ]; then read -r -a extra <<<"$mpi_args"; mpi_cmd+=("${extra[@]}"); fi
mpi_cmd+=("$recur" worker --connect "tcp://$coord_host:$worker_port" --model "$model" --tp "$tp" --pp "$pp"
          --backend "$backend" --slots "$slots")
[ -n "$curve_keys" ] && mpi_cmd+=(--curve-keys "$curve_keys")

if [ "$dry_run" = 1 ]; then
  for v in "${pass_env[@]}"; do echo "env: $v=${!v}"; done
  for hs in "${hosts[@]}"; do echo "node: $hs"; done
  echo "serve: ${serve_cmd[*]@Q}"
  echo "workers: ${mpi_cmd[*]@Q}"
  exit 0
fi

# ---- wait for the other nodes' sshd (pods of a group start in any order)
if [ "$wait_hosts" -gt 0 ]; then
  me=$(hostname)
  for hs in "${hosts[@]}"; do
    h=${hs% *}
    case $h in localhost|127.*|"$me"|"$me".*|"$coord_host") continue ;; esac
    deadline=$((SECONDS + wait_hosts))
    until (exec 3<>"/dev/tcp/$h/$ssh_port") 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || die "$h:$ssh_port did not answer within $wait_hosts s"
      sleep 2
    done
  done
fi

serve_pid="" mpi_pid=""
stop_serve() { if [ -n "$serve_pid" ]; then kill -TERM "$serve_pid" 2>/dev/null || true; fi; }
trap stop_serve TERM INT
echo "launch_multinode: ${serve_cmd[*]@Q}" >&2
"${serve_cmd[@]}" &
serve_pid=$!
echo "launch_multinode: ${mpi_cmd[*]@Q}" >&2
"${mpi_cmd[@]}" &
mpi_pid=$!

# Wait for the first of the two to end (a trapped signal also ends `wait -n`: loop).
while kill -0 "$serve_pid" 2>/dev/null && kill -0 "$mpi_pid" 2>/dev/null; do
  wait -n "$serve_pid" "$mpi_pid" || true
done
if ! kill -0 "$serve_pid" 2>/dev/null; then
  rc=0
  wait "$serve_pid" || rc=$?
  # The coordinator told the workers to stop; give mpirun the time to see them go.
  for ((i = 0; i < stop_timeout * 10; i++)); do kill -0 "$mpi_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$mpi_pid" 2>/dev/null; then
    echo "launch_multinode: the worker group is still running $stop_timeout s after the coordinator: stopping it" >&2
    kill -TERM "$mpi_pid" 2>/dev/null || true
  fi
  wait "$mpi_pid" 2>/dev/null || true
  exit "$rc"
fi
mrc=0
wait "$mpi_pid" || mrc=$?
echo "launch_multinode: the worker group ended (mpirun status $mrc): stopping the coordinator" >&2
stop_serve
wait "$serve_pid" 2>/dev/null || true
exit 1
