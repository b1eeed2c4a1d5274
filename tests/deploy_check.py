#!/usr/bin/env python3
"""deploy_check.py: the checks of tests/test_deploy.sh that read YAML (PyYAML, from .venv-test).

  deploy_check.py split RENDERED.yaml OUTDIR
      one JSON file per document, under OUTDIR/<schema name>/ (deploy/schemas/<name>.json);
      a kind without a schema is an error.
  deploy_check.py consistency RENDERED.yaml
      the layout, drain and reference rules the manifests must keep (see check_consistency).
  deploy_check.py commands RENDERED.yaml LAUNCH_SCRIPT
      prints, one per line as JSON, every `recur` invocation a container of RENDERED would
      run: a container that runs scripts/launch_multinode.sh is run with --dry-run (its
      $(VAR)s filled in from its environment and ConfigMap, the operator's hostfile or the
      LeaderWorkerSet group made up to match the manifest) and the recur command lines it
      prints are taken.
  deploy_check.py dockerfile DOCKERFILE TEST_SH
      the build stage runs CI's commands; prints the entrypoint's recur invocation as JSON.
  deploy_check.py flags RECUR_BIN < invocations (JSON lines)
      every --flag of every invocation appears in `recur <command> --help`; lists the missing.
Exit status 0 when all is well, 1 with a message per problem otherwise.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

SCHEMAS = {
    ("v1", "ConfigMap"): "configmap-v1",
    ("v1", "Secret"): "secret-v1",
    ("v1", "Service"): "service-v1",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaim-v1",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudget-policy-v1",
    ("kubeflow.org/v2beta1", "MPIJob"): "mpijob-kubeflow-v2beta1",
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset-x-k8s-v1",
}
# Secrets the manifests mount but do not create: the user makes them (deploy/README.md).
USER_SECRETS = {"recur-mpi-ssh", "recur-curve-keys"}
DRAIN_MARGIN_S = 30   # checkpointing and stopping the workers, after the drain
POD_IP = "10.0.0.1"   # stands in for the downward API's status.podIP

problems = []


def problem(msg):
    problems.append(msg)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def pod_templates(docs):
    """(role, template) of every pod the workloads make; role: coordinator or worker."""
    out = []
    for d in by_kind(docs, "MPIJob"):
        specs = d["spec"]["mpiReplicaSpecs"]
        out.append(("coordinator", specs["Launcher"]["template"]))
        if "Worker" in specs:
            out.append(("worker", specs["Worker"]["template"]))
    for d in by_kind(docs, "LeaderWorkerSet"):
        t = d["spec"]["leaderWorkerTemplate"]
        out.append(("coordinator", t.get("leaderTemplate", t["workerTemplate"])))
        if t.get("size", 1) > 1:
            out.append(("worker", t["workerTemplate"]))
    return out


def config(docs):
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    return cms.get("recur-config", {})


def container_env(docs, c):
    """The container's environment as the kubelet would make it (ConfigMaps, literals)."""
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    env = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(cms.get(src["configMapRef"]["name"], {}))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[e["name"]] = POD_IP
    return env


def expand(s, env, where):
    def sub(m):
        if m.group(1) not in env:
            problem(f"{where}: $({m.group(1)}) is not in the container's environment")
            return m.group(0)
        return str(env[m.group(1)])
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, s)


def gpus(c):
    return int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def prestop_seconds(c, where):
    cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not cmd:
        problem(f"{where}: no preStop hook")
        return 0
    if os.path.basename(cmd[0]) in ("sleep", "wait-for-recur.sh") and len(cmd) == 2 and cmd[1].isdigit():
        return int(cmd[1])
    problem(f"{where}: preStop {cmd} is not `sleep N` or `wait-for-recur.sh N`")
    return 0


# ---------------------------------------------------------------- split

def cmd_split(rendered, outdir):
    docs = load(rendered)
    if not docs:
        problem(f"{rendered}: no documents")
    for i, d in enumerate(docs):
        key = (d.get("apiVersion"), d.get("kind"))
        name = SCHEMAS.get(key)
        if not name:
            problem(f"{rendered}: document {i} is {key[1]} ({key[0]}), which has no schema in deploy/schemas")
            continue
        os.makedirs(os.path.join(outdir, name), exist_ok=True)
        base = os.path.splitext(os.path.basename(rendered))[0]
        with open(os.path.join(outdir, name, f"{base}-{i:03d}-{d['metadata']['name']}.json"), "w") as f:
            json.dump(d, f)


# ---------------------------------------------------------------- consistency

def check_consistency(rendered):
    docs = load(rendered)
    cfg = config(docs)
    where = os.path.basename(rendered)
    try:
        tp, pp, per_pod = int(cfg["RECUR_TP"]), int(cfg["RECUR_PP"]), int(cfg["RECUR_GPUS_PER_POD"])
        drain = int(cfg["RECUR_DRAIN_TIMEOUT_S"])
    except (KeyError, ValueError) as e:
        problem(f"{where}: recur-config lacks a number: {e}")
        return
    if cfg.get("NCCL_NVLS_ENABLE") != "0":
        problem(f"{where}: NCCL_NVLS_ENABLE must be \"0\" (NVLink multicast), got {cfg.get('NCCL_NVLS_ENABLE')!r}")
    ranks = tp * pp
    jobs = by_kind(docs, "MPIJob") + by_kind(docs, "LeaderWorkerSet")
    if len(jobs) != 1:
        problem(f"{where}: expected one MPIJob or LeaderWorkerSet, found {len(jobs)}")
        return
    job = jobs[0]
    if job["kind"] == "MPIJob":
        spec = job["spec"]
        slots = spec.get("slotsPerWorker", 1)
        workers = spec["mpiReplicaSpecs"].get("Worker", {}).get("replicas", 0)
        if workers * slots != ranks:
            problem(f"{where}: {workers} workers x slotsPerWorker {slots} != RECUR_TP x RECUR_PP = {ranks}")
        if slots != per_pod:
            problem(f"{where}: slotsPerWorker {slots} != RECUR_GPUS_PER_POD {per_pod}")
        launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
        if gpus(launcher):
            problem(f"{where}: the launcher (coordinator only) asks for GPUs")
    else:
        size = job["spec"]["leaderWorkerTemplate"].get("size", 1)
        if size * per_pod != ranks:
            problem(f"{where}: group size {size} x RECUR_GPUS_PER_POD {per_pod} != RECUR_TP x RECUR_PP = {ranks}")
        if job["spec"]["leaderWorkerTemplate"].get("restartPolicy") != "RecreateGroupOnPodRestart":
            problem(f"{where}: the group must restart together (restartPolicy RecreateGroupOnPodRestart)")
    names = {k: {d["metadata"]["name"] for d in by_kind(docs, k)}
             for k in ("ConfigMap", "Secret", "PersistentVolumeClaim")}
    coord_grace = None
    templates = pod_templates(docs)
    for role, t in templates:
        spec, labels = t["spec"], t.get("metadata", {}).get("labels", {})
        w = f"{where}: {role} pod"
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for c in spec["containers"]:
            wc = f"{w} container {c['name']}"
            if role == "worker" or job["kind"] == "LeaderWorkerSet":
                if gpus(c) != per_pod:
                    problem(f"{wc}: nvidia.com/gpu limit {gpus(c)} != RECUR_GPUS_PER_POD {per_pod}")
            if "requests" not in c.get("resources", {}):
                problem(f"{wc}: no resource requests")
            stop = prestop_seconds(c, wc)
            if role == "coordinator":
                coord_grace = grace
                if grace < stop + drain + DRAIN_MARGIN_S:
                    problem(f"{wc}: terminationGracePeriodSeconds {grace} < preStop {stop} + drain {drain}"
                            f" + {DRAIN_MARGIN_S}")
                probes = {p: c.get(p, {}).get("httpGet", {}).get("path")
                          for p in ("livenessProbe", "readinessProbe", "startupProbe")}
                want = {"livenessProbe": "/health/live", "readinessProbe": "/health/ready",
                        "startupProbe": "/health/live"}
                if probes != want:
                    problem(f"{wc}: probes {probes}, want {want}")
            elif stop > grace:
                problem(f"{wc}: preStop waits {stop} s, longer than terminationGracePeriodSeconds {grace}")
            for src in c.get("envFrom", []):
                n = src.get("configMapRef", {}).get("name")
                if n and n not in names["ConfigMap"]:
                    problem(f"{wc}: envFrom ConfigMap {n} is not in the manifests")
            vols = {v["name"] for v in spec.get("volumes", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in vols:
                    problem(f"{wc}: volumeMount {m['name']} has no volume")
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in names[
                    "PersistentVolumeClaim"]:
                problem(f"{w}: PVC {v['persistentVolumeClaim']['claimName']} is not in the manifests")
            s = v.get("secret", {}).get("secretName")
            if s and s not in names["Secret"] and s not in USER_SECRETS:
                problem(f"{w}: Secret {s} is neither in the manifests nor one the user makes")
        if role == "worker" and coord_grace is not None and grace < coord_grace:
            problem(f"{w}: terminationGracePeriodSeconds {grace} < the coordinator's {coord_grace}")
        svc_ok = all(labels.get(k) == v for s in by_kind(docs, "Service") for k, v in s["spec"]["selector"].items())
        if (role == "coordinator") != svc_ok:
            problem(f"{w}: the Service recur-api {'misses' if role == 'coordinator' else 'selects'} it")
        for pdb in by_kind(docs, "PodDisruptionBudget"):
            if not all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()):
                problem(f"{w}: the PodDisruptionBudget does not cover it")
    if not any(r == "coordinator" for r, _ in templates):
        problem(f"{where}: no coordinator pod")


# ---------------------------------------------------------------- commands

def recur_invocations(argv, origin):
    """The recur invocation(s) in one command line: [(origin, subcommand, [args])]."""
    out = []
    for i, a in enumerate(argv):
        if os.path.basename(a) == "recur" and i + 1 < len(argv):
            out.append({"origin": origin, "command": argv[i + 1], "args": argv[i + 2:]})
            break
    return out


def dry_run(script, args, env_extra, origin):
    env = dict(os.environ, **env_extra)
    r = subprocess.run(["bash", script, "--dry-run", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        problem(f"{origin}: launch_multinode.sh --dry-run failed ({r.returncode}): {r.stderr.strip()}")
        return []
    out = []
    for line in r.stdout.splitlines():
        for tag in ("serve: ", "workers: "):
            if line.startswith(tag):
                out += recur_invocations(shlex.split(line[len(tag):]), f"{origin} ({tag.strip()})")
    if len(out) != 2:
        problem(f"{origin}: the dry run printed {len(out)} recur command lines, not 2:\n{r.stdout}")
    return out


def cmd_commands(rendered, script):
    docs = load(rendered)
    where = os.path.basename(rendered)
    invs = []
    tmp = tempfile.mkdtemp(prefix="recur-deploy-")
    for d in by_kind(docs, "MPIJob") + by_kind(docs, "LeaderWorkerSet"):
        for role, t in pod_templates([d]):
            for c in t["spec"]["containers"]:
                origin = f"{where}: {d['kind']} {role} {c['name']}"
                env = container_env(docs, c)
                argv = [expand(a, env, origin) for a in c.get("command", []) + c.get("args", [])]
                if any(os.path.basename(a) == "launch_multinode.sh" for a in argv):
                    i = next(i for i, a in enumerate(argv) if os.path.basename(a) == "launch_multinode.sh")
                    args, extra = argv[i + 1:], {}
                    if d["kind"] == "MPIJob":   # the operator's hostfile: one line per worker pod
                        spec = d["spec"]
                        hf = os.path.join(tmp, f"hostfile-{len(invs)}")
                        with open(hf, "w") as f:
                            for k in range(spec["mpiReplicaSpecs"].get("Worker", {}).get("replicas", 0)):
                                f.write(f"recur-worker-{k}.recur.default.svc slots={spec.get('slotsPerWorker', 1)}\n")
                        args = [hf if a == "/etc/mpi/hostfile" else a for a in args]
                    else:                       # what LeaderWorkerSet puts in every container
                        extra = {"LWS_LEADER_ADDRESS": "recur-0.recur.default",
                                 "LWS_GROUP_SIZE": str(d["spec"]["leaderWorkerTemplate"].get("size", 1))}
                    invs += dry_run(script, args, extra, origin)
                else:
                    invs += recur_invocations(argv, origin)
    for inv in invs:
        print(json.dumps(inv))


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions(path):
    """[(stage name, INSTRUCTION, text)] with continuation lines joined, comments dropped."""
    out, stage, buf = [], None, ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            ins, _, rest = buf.strip().partition(" ")
            ins = ins.upper()
            if ins == "FROM":
                m = re.search(r"\bAS\s+(\S+)", rest, re.I)
                stage = m.group(1) if m else rest
            out.append((stage, ins, rest.strip()))
            buf = ""
    return out


def cmd_dockerfile(path, test_sh):
    ins = dockerfile_instructions(path)
    build_runs = " ".join(t for s, i, t in ins if s == "build" and i == "RUN")
    with open(test_sh) as f:
        ci = f.read()
    for step in ("scripts/setup.sh", "scripts/build.sh build"):
        if step not in ci:
            problem(f"{test_sh} no longer runs `{step}`: update this check and the Dockerfile together")
        if step not in build_runs:
            problem(f"{path}: the build stage does not run `{step}` (CI's command)")
    if "-DRECUR_CUDA_ARCHITECTURES=" not in build_runs:
        problem(f"{path}: the build stage does not pass the CUDA architectures to CMake")
    froms = [t for s, i, t in ins if i == "FROM"]
    if len(froms) < 2 or "devel" not in froms[0] or "runtime" not in froms[-1]:
        problem(f"{path}: expected a CUDA devel build stage and a CUDA runtime final stage, got {froms}")
    final = froms[-1].split()[-1] if froms else None
    users = [t for s, i, t in ins if i == "USER" and s == final]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problem(f"{path}: the final stage must run as a non-root USER, got {users}")
    entry = [json.loads(t) for s, i, t in ins if i == "ENTRYPOINT" and s == final]
    cmd = [json.loads(t) for s, i, t in ins if i == "CMD" and s == final]
    if not entry or not cmd:
        problem(f"{path}: the final stage needs ENTRYPOINT and CMD in exec (JSON) form")
        return
    argv = entry[-1] + cmd[-1]
    invs = recur_invocations(argv, f"{os.path.basename(path)}: ENTRYPOINT + CMD")
    if not invs or invs[0]["command"] != "serve":
        problem(f"{path}: the entrypoint does not run `recur serve`: {argv}")
    for inv in invs:
        print(json.dumps(inv))


# ---------------------------------------------------------------- flags

def help_flags(recur, command):
    """The --flags `recur COMMAND --help` documents (its own usage paragraph and the common
    options; the command's usage may go to stdout or, with exit 2, to stderr)."""
    r = subprocess.run([recur, command, "--help"], capture_output=True, text=True)
    text = r.stdout + "\n" + r.stderr
    paras = re.split(r"\n\s*\n", text)
    mine = [p for p in paras if re.search(rf"(^|\n)\s*(usage: )?recur {re.escape(command)}\b", p)]
    mine += [p for p in paras if p.lstrip().startswith("common options")]
    return set(re.findall(r"--[a-z][a-z0-9-]*", "\n".join(mine if mine else [text])))


def cmd_flags(recur):
    invs = [json.loads(line) for line in sys.stdin if line.strip()]
    if not invs:
        problem("no recur invocation was found to check")
    known, missing = {}, {}
    for inv in invs:
        c = inv["command"]
        if c not in known:
            known[c] = help_flags(recur, c)
            if not known[c]:
                problem(f"`recur {c} --help` documents no flag")
        for a in inv["args"]:
            if a.startswith("--") and a != "--":
                flag = a.split("=", 1)[0]
                if flag not in known[c]:
                    missing.setdefault((c, flag), []).append(inv["origin"])
    for (c, flag), where in sorted(missing.items()):
        where = sorted(set(where))
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        problem(f"`recur {c}` has no flag {flag} (not in `recur {c} --help`), used by: "
                + "; ".join(where[:3]) + more)
    if missing:
        problem("missing flags, by command: " + "; ".join(
            f"recur {c}: " + " ".join(sorted(f for cc, f in missing if cc == c))
            for c in sorted({c for c, _ in missing})))
    print(f"checked {len(invs)} recur invocations ({', '.join(sorted(known))})")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    {"split": cmd_split, "consistency": check_consistency, "commands": cmd_commands,
     "dockerfile": cmd_dockerfile, "flags": cmd_flags}[cmd](*args)
    for p in problems:
        print(f"deploy_check {cmd}: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
