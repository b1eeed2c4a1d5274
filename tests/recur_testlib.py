"""recur_testlib: what the Python end-to-end tests share (tests/test_*.py import it from
their own folder): the programs and fixtures CTest names in the environment, the Python
client (or the skip when it cannot load), a counting check and a process's descendants."""
import importlib
import os
import signal
import subprocess
import sys

BIN = os.environ["RECUR_BIN"]
FX = os.path.join(os.environ["RECUR_FIXTURES_DIR"], "rwkv7")
TINY = os.path.join(FX, "tiny-rwkv-7v0-834K-FP32.bin")
SYNTH = os.path.join(FX, "synth7-C128-H2-L3-FP32.bin")
_client = None   # scripts/recur_client.py, once client_or_skip loaded it


def client_or_skip(*more):
    """scripts/recur_client.py as a module, and the modules named in more; exits 77 (CTest's
    skip) when one cannot load (python3-zmq / python3-protobuf / protoc missing)."""
    try:
        sys.path.insert(0, os.path.join(os.environ.get("RECUR_SOURCE_DIR", "."), "scripts"))
        for m in more:
            importlib.import_module(m)
        global _client
        _client = importlib.import_module("recur_client")
        return _client
    except Exception as e:
        print("skip: the Python client cannot load (%s)" % e)
        sys.exit(77)


class Checks:
    """check(cond, what) prints "ok"/"FAIL" and the check, counts the failures in
    check.fails, and returns cond (so a test can go on or stop on it)."""

    def __init__(self):
        self.fails = 0

    def __call__(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            self.fails += 1
        return cond


def descendants(pid):
    """Every process below pid (children, their children, ...), from one `ps` listing."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    kids = {}
    for i in range(0, len(out) - 1, 2):
        kids.setdefault(int(out[i + 1]), []).append(int(out[i]))
    found, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            found.append(k)
            todo.append(k)
    return found


def stop_process(p, timeout=60):
    """SIGTERM to p (a Popen) if it still runs, then up to timeout s for it to exit (serve
    drains and stops its workers), SIGKILL after that; its exit code."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def error_of(fn):
    """The RecurError fn() raises (the client loaded by client_or_skip), or None."""
    try:
        fn()
    except _client.RecurError as e:
        return e
    return None
