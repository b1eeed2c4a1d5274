#!/usr/bin/env python3
"""test_serve_failures.py: worker ranks dying or hanging under `recur serve` (CPU backend).

Per layout (tp1: the tiny model, one worker process; tp2: synth7, two ranks under mpirun):
  - kill -9 of a worker rank during a stream: the stream ends with an error within a few
    seconds, Health turns NOT_SERVING, serve starts the worker group again and serves the
    same greedy text as before;
  - SIGSTOP of a worker rank: noticed by the heartbeat timeout (--worker-timeout-ms 2000),
    the stream ends with an error, the group is killed and started again, serving again;
  - kill -9 of serve itself: no worker process is left a few seconds later.
Usage: test_serve_failures.py LAYOUT [LAYOUT ...]. Needs RECUR_BIN, RECUR_FIXTURES_DIR,
RECUR_SOURCE_DIR; RECUR_MPIRUN for tp2. Exit 77 without python3-zmq / python3-protobuf.
"""
import os
import signal
import subprocess
import sys
import time

from recur_testlib import BIN, Checks, SYNTH, TINY, client_or_skip

recur_client = client_or_skip()
RecurClient, RecurError, api = recur_client.RecurClient, recur_client.RecurError, recur_client.api

LAYOUTS = {
    "tp1": (TINY, []),
    "tp2": (SYNTH, ["--tp", "2"]),
}
check = Checks()


def workers_of(serve_pid):
    """pids of `recur worker` processes descending from serve (mpirun's ranks included)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    kids, procs = {}, {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        pid, ppid = int(parts[0]), int(parts[1])
        kids.setdefault(ppid, []).append(pid)
        procs[pid] = parts[2]
    found, todo = [], [serve_pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            todo.append(k)
            if procs[k].split()[0] == BIN and procs[k].split()[1:2] == ["worker"]:
                found.append(k)
    return sorted(found)


def alive(pids):
    """The pids that still exist and are not zombies."""
    left = []
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(p)
        except OSError:
            pass
    return left


def wait_ready(ep, seconds):
    t0 = time.time()
    with RecurClient(ep, timeout_ms=2000) as c:
        while time.time() - t0 < seconds:
            try:
                if c.health().status == api.SERVING_STATUS_SERVING:
                    return time.time() - t0
            except (RecurError, TimeoutError):
                pass
            time.sleep(0.2)
    return None


def greedy(ep, prompt, n=24):
    with RecurClient(ep, timeout_ms=20000) as c:
        return c.complete(prompt, max_tokens=n, temperature=0)[0]


def stream_until_error(ep, sig, victim_fn, what, name):
    """Starts a long stream, sends sig to one worker rank, measures how long until the stream
    ends with an error; returns that time or None."""
    with RecurClient(ep, timeout_ms=30000) as c:
        rid = c.start("A long story", max_tokens=1000000, temperature=0, ignore_eos=True)
        gen = c.stream(rid)
        next(gen)
        victim = victim_fn()
        t0 = time.time()
        os.kill(victim, sig)
        err = None
        try:
            for _ in gen:
                pass
        except RecurError as e:
            err = e
        except TimeoutError as e:
            err = e
        dt = time.time() - t0
        check(isinstance(err, RecurError) and dt < 15,
              "%s: %s of worker pid %d: the stream ended with an error after %.1f s (%s)" % (name, what, victim, dt, err))
        return dt


def main():
    for name in sys.argv[1:] or ["tp1"]:
        model, extra = LAYOUTS[name]
        if extra and not os.environ.get("RECUR_MPIRUN"):
            print("skip %s: RECUR_MPIRUN not set" % name)
            continue
        log = open(os.devnull, "w")
        p = subprocess.Popen([BIN, "serve", "--model", model, "--port", "0", "--slots", "8", "--worker-timeout-ms", "2000",
                              "--log-level", "warn"] + extra, stdout=subprocess.PIPE, stderr=log, text=True)
        ep = None
        t_end = time.time() + 60
        while time.time() < t_end and not ep:
            line = p.stdout.readline()
            if line.startswith("recur serve: listening on "):
                ep = line.split()[-1]
        if not ep:
            check(False, "%s: serve came up" % name)
            p.kill()
            continue
        ranks = []
        try:
            ref = greedy(ep, "Hello there")
            ranks = workers_of(p.pid)
            check(len(ranks) == (2 if extra else 1), "%s: worker ranks %s" % (name, ranks))

            stream_until_error(ep, signal.SIGKILL, lambda: workers_of(p.pid)[-1], "kill -9", name)
            t = wait_ready(ep, 60)
            check(t is not None and greedy(ep, "Hello there") == ref and workers_of(p.pid) != ranks,
                  "%s: after kill -9 the worker group was restarted (ready again after %s s) and serves the same "
                  "text" % (name, "%.1f" % t if t is not None else "never"))

            ranks = workers_of(p.pid)
            stream_until_error(ep, signal.SIGSTOP, lambda: workers_of(p.pid)[0], "SIGSTOP", name)
            t = wait_ready(ep, 60)
            check(t is not None and greedy(ep, "Hello there") == ref,
                  "%s: after SIGSTOP the group was killed and restarted (ready again after %s s), same text" % (
                      name, "%.1f" % t if t is not None else "never"))
            stopped_left = alive(ranks)
            check(not stopped_left, "%s: the stopped group's processes are gone: %s" % (name, stopped_left or "yes"))

            ranks = workers_of(p.pid)   # serve's descendants now; after the kill they are orphans
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            t0 = time.time()
            while time.time() - t0 < 15 and alive(ranks):
                time.sleep(0.2)
            left = alive(ranks)
            check(not left, "%s: kill -9 of serve: no worker process left (after %.1f s)%s" % (
                name, time.time() - t0, "" if not left else ": %s" % left))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            for w in alive(ranks):
                try:
                    os.kill(w, signal.SIGKILL)
                except OSError:
                    pass
    print("all passed" if check.fails == 0 else "%d failed" % check.fails)
    return 0 if check.fails == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
