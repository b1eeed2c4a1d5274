#!/usr/bin/env python3
"""test_security.py: CURVE on the coordinator <-> worker link, client-chosen session ids,
and what `recur serve` listens on; real processes on loopback, CPU backend.

Parts (arguments; default all):
  keygen    `recur keygen --out DIR`: four files, the secrets mode 0600 (the directory 0700)
            whatever the umask, the public keys 0644; a second run is refused (exit 2, the
            files unchanged) unless --force, which writes new keys.
  curve     serve --curve-keys on the tiny model: greedy text equal to a serve without
            CURVE; serve logs the worker's key as accepted. A missing key directory stops
            serve at once (exit 2, message naming the file).
  curve-tp2 the same with --tp 2 (synth7, workers through $RECUR_MPIRUN).
  external  serve --curve-keys --external-workers; the worker group connects through a
            small TCP relay in this script, which records every byte: the prompt's text
            and the model's arch name ("rwkv7", in Hello) never cross it in the clear,
            while the same relay in front of a serve without CURVE sees both (the control).
            Then three rogue workers, each with --idle-limit-ms 3000: without CURVE, with
            another keygen's keys, with the right server key but another worker key. Each
            is refused (serve logs why: other mechanism, CURVE check failed, ZAP refused
            the key), exits 3 (coordinator silent), and serving goes on with the good group
            (same text, Health SERVING).
  ids       session ids a client sends ("../x", "a/b", "", 200 characters, ".hidden",
            "a b") in GenerateRequest.session_id, SessionRequest CREATE / GET / FORK
            (session_id and new_session_id) / IMPORT: INVALID_ARGUMENT each (or the
            protocol check's refusal for the over-long and empty ones), and nothing is
            created outside --session-dir (nor in it); a valid id still works.
  listen    every listening TCP socket of serve and of its worker processes (from
            /proc/net/tcp{,6} matched to the socket inodes in /proc/PID/fd) is bound to
            127.0.0.1 (the default): tp1, and tp2 with serve's default mpirun (not
            $RECUR_MPIRUN). Open MPI 4.1's mpirun itself listens on the wildcard address
            for its daemons (ORTE's out-of-band TCP, no option binds it elsewhere): those
            sockets are printed and left out of the assertion (README "Security").

Needs RECUR_BIN, RECUR_FIXTURES_DIR, RECUR_SOURCE_DIR; RECUR_MPIRUN for curve-tp2 and the
external group. Exit 77 when the Python client cannot load or libzmq has no CURVE.
"""
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

from recur_testlib import BIN, Checks, SYNTH, TINY, client_or_skip, descendants, error_of, stop_process

recur_client = client_or_skip("zmq")
RecurClient, RecurError, api = recur_client.RecurClient, recur_client.RecurError, recur_client.api

PROMPT = "Secret prompt: the eagle lands at midnight"
check = Checks()


class Server:
    """recur serve; waits for "listening on" (or, external, "workers connect to")."""

    def __init__(self, args, external=False, env=None, wait=True):
        self.log = tempfile.NamedTemporaryFile(prefix="recur-sec-", suffix=".err", delete=False)
        self.p = subprocess.Popen([BIN, "serve", "--port", "0", "--log-level", "info"] + args,
                                  stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.endpoint = self.worker_endpoint = None
        if not wait:
            return
        if external:
            self.worker_endpoint = self._line("recur serve: workers connect to ")
        else:
            self.endpoint = self._line("recur serve: listening on ")

    def _line(self, prefix, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line.split()[-1]
        self.p.kill()
        raise RuntimeError("serve: no '%s': %s" % (prefix, self.text()[-2000:]))

    def wait_ready(self):
        self.endpoint = self._line("recur serve: listening on ")

    def text(self):
        return open(self.log.name, errors="replace").read()

    def stop(self):
        stop_process(self.p, 60)
        text = self.text()
        os.unlink(self.log.name)
        return self.p.returncode, text


def greedy(ep, prompt=PROMPT, n=24):
    with RecurClient(ep) as c:
        return c.complete(prompt, max_tokens=n, temperature=0)[0]


def worker(wep, model, keys=None, extra=(), tp=1, idle_ms=None):
    """A worker group of tp ranks (mpirun for tp > 1) connecting to wep."""
    cmd = [BIN, "worker", "--connect", wep, "--model", model, "--slots", "8", "--tp", str(tp)] + list(extra)
    if keys:
        cmd += ["--curve-keys", keys]
    if idle_ms:
        cmd += ["--idle-limit-ms", str(idle_ms)]
    if tp > 1:
        cmd = os.environ["RECUR_MPIRUN"].split() + ["-np", str(tp)] + cmd
    log = tempfile.NamedTemporaryFile(prefix="recur-sec-w-", suffix=".err", delete=False)
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    p.logname = log.name
    return p


def worker_text(p):
    return open(p.logname, errors="replace").read()


def keygen(d, *more):
    return subprocess.run([BIN, "keygen", "--out", d] + list(more), capture_output=True, text=True)


# ------------------------------------------------------------------ a recording TCP relay

class Relay:
    """Listens on 127.0.0.1:0 and forwards every connection to (host, port), keeping a copy of
    every byte in both directions."""

    def __init__(self, endpoint):
        hp = endpoint.split("://", 1)[1]
        host, port = hp.rsplit(":", 1)
        self.up = (host, int(port))
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.endpoint = "tcp://127.0.0.1:%d" % self.ls.getsockname()[1]
        self.data = bytearray()
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                a, _ = self.ls.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.up)
            except OSError:
                a.close()
                continue
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                with self.lock:
                    self.data += d
                dst.sendall(d)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def captured(self):
        with self.lock:
            return bytes(self.data)

    def close(self):
        self.stopped = True
        self.ls.close()


# ------------------------------------------------------------------ parts

def part_keygen(work):
    d = os.path.join(work, "kg")
    old = os.umask(0o000)   # the modes must not come from the umask
    try:
        r = keygen(d)
    finally:
        os.umask(old)
    modes = {f: stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode) for f in sorted(os.listdir(d))}
    check(r.returncode == 0 and modes == {"server.key": 0o600, "server.pub": 0o644, "worker.key": 0o600,
                                          "worker.pub": 0o644} and stat.S_IMODE(os.stat(d).st_mode) == 0o700,
          "keygen: 4 files, modes %s, directory %o (umask 000)" % (
              {k: oct(v) for k, v in modes.items()}, stat.S_IMODE(os.stat(d).st_mode)))
    before = {f: open(os.path.join(d, f)).read() for f in modes}
    r2 = keygen(d)
    check(r2.returncode == 2 and "exists" in r2.stderr and "--force" in r2.stderr and
          before == {f: open(os.path.join(d, f)).read() for f in modes},
          "keygen again: exit %d, '%s', files unchanged" % (r2.returncode, r2.stderr.strip()[:90]))
    r3 = keygen(d, "--force")
    after = {f: open(os.path.join(d, f)).read() for f in modes}
    check(r3.returncode == 0 and all(after[f] != before[f] for f in modes),
          "keygen --force: exit %d, all four keys new" % r3.returncode)
    keys = [l for l in after["server.pub"].splitlines() if l and not l.startswith("#")]
    check(len(keys) == 1 and len(keys[0]) == 40, "keygen: a public key is one line of 40 Z85 characters")


def part_curve(work, model, extra, name):
    keys = os.path.join(work, "keys-" + name)
    keygen(keys)
    ref = Server(["--model", model] + extra)
    try:
        want = greedy(ref.endpoint)
    finally:
        ref.stop()
    s = Server(["--model", model, "--curve-keys", keys] + extra)
    try:
        got = greedy(s.endpoint)
        got2 = greedy(s.endpoint, "Once upon a time", 16)
    finally:
        rc, text = s.stop()
    check(got == want and len(got) > 0 and len(got2) > 0,
          "%s: serve --curve-keys serves the same text as without (%d chars)" % (name, len(got)))
    check(rc == 0 and "accepted (CURVE key" in text and "refused a worker" not in text and
          ", 0 refused by key, 0 failed handshakes" in text,
          "%s: serve exits %d; its worker's key accepted, nothing refused" % (name, rc))
    if name == "tp1":
        p = subprocess.run([BIN, "serve", "--model", model, "--port", "0", "--curve-keys", os.path.join(work, "nokeys")],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 2 and "server.key" in p.stderr and "recur keygen" in p.stderr,
              "tp1: --curve-keys without key files: exit %d, '%s'" % (p.returncode, p.stderr.strip()[:100]))


def part_external(work):
    mp = bool(os.environ.get("RECUR_MPIRUN"))
    model, tp = (SYNTH, 2) if mp else (TINY, 1)
    keys, other, mixed = (os.path.join(work, n) for n in ("ext-keys", "ext-other", "ext-mixed"))
    keygen(keys)
    keygen(other)
    os.makedirs(mixed)
    shutil.copy(os.path.join(keys, "server.pub"), mixed)      # the right server key ...
    shutil.copy(os.path.join(other, "worker.key"), mixed)     # ... but a worker key not in worker.pub
    os.chmod(os.path.join(mixed, "worker.key"), 0o600)

    # the control: no CURVE, the relay sees the protobuf in the clear
    s = Server(["--model", model, "--tp", str(tp), "--external-workers"], external=True)
    relay = Relay(s.worker_endpoint)
    w = worker(relay.endpoint, model, tp=tp)
    try:
        s.wait_ready()
        want = greedy(s.endpoint)
        cap = relay.captured()
    finally:
        s.stop()
        w.wait(30)
        relay.close()
    plain_prompt, plain_arch = PROMPT.encode() in cap, b"rwkv7" in cap
    check(plain_prompt and plain_arch, "control, no CURVE: the relay saw %d bytes, the prompt in the clear: %s, "
          "'rwkv7' (Hello): %s" % (len(cap), plain_prompt, plain_arch))

    s = Server(["--model", model, "--tp", str(tp), "--external-workers", "--curve-keys", keys], external=True)
    relay = Relay(s.worker_endpoint)
    w = worker(relay.endpoint, model, keys=keys, tp=tp)
    rogues = []
    try:
        s.wait_ready()
        got = greedy(s.endpoint)
        cap = relay.captured()
        check(got == want, "external tp%d + CURVE through the relay: the same text" % tp)
        check(len(cap) > 1000 and PROMPT.encode() not in cap and PROMPT[8:20].encode() not in cap and
              b"rwkv7" not in cap,
              "CURVE: the relay saw %d bytes, neither the prompt nor 'rwkv7' among them" % len(cap))
        # the rogues, one after the other (each retries every 100 ms until its idle limit)
        # what the rogue sees is certain; which side notices a failed handshake first (serve
        # may log only "Broken pipe" for the first two) is not, so serve's part is checked
        # on its counts at exit and on its log as a whole
        # the reason the rogue gives: certain for a key ZAP refused; for the other two it
        # depends on which end reads the other's greeting first ("different mechanisms", a
        # failed CURVE check) or sees the connection close ("the handshake failed")
        for label, k, why in (("no CURVE", None, ("different security mechanisms", "the handshake failed")),
                              ("another keygen's keys", other, ("the handshake failed", "CURVE check failed")),
                              ("the right server key, another worker key", mixed, ("not an allowed key",))):
            t0 = time.time()
            r = worker(s.worker_endpoint, TINY, keys=k, idle_ms=3000)
            rc = r.wait(60)
            took = time.time() - t0
            rtext = worker_text(r)
            rogues.append(r)
            text = s.text()
            with RecurClient(s.endpoint) as c:
                h = c.health()
            again = greedy(s.endpoint)
            check(rc == 3 and h.status == api.SERVING_STATUS_SERVING and again == want,
                  "rogue worker (%s): exited %d after %.1f s (its idle limit: never let in); serve still SERVING "
                  "with the good group, same text" % (label, rc, took))
            said = [l[l.find("worker:"):] for l in rtext.splitlines() if "handshake with the" in l]
            hit = [l for l in said if any(w in l for w in why)]
            # without a telling line, the rogue's last words (its log file is removed below)
            tail = " | ".join(rtext.strip().splitlines()[-3:])[:400] if not hit else ""
            check(bool(hit), "rogue worker (%s) says: %s%s" % (label, (hit or said or ["nothing"])[0][:170],
                                                             "; its log ends: " + tail if tail else ""))
    finally:
        rc, text = s.stop()
        w.wait(30)
        relay.close()
        for r in rogues + [w]:
            os.unlink(r.logname)
    check(rc == 0 and w.returncode == 0, "external + CURVE: serve exits %d, the group %d after Shutdown" % (
        rc, w.returncode))
    line = next((l for l in text.splitlines() if "CURVE on the worker link" in l), "")
    nums = [int(w) for w in line.replace(",", " ").split() if w.isdigit()]
    check(len(nums) == 3 and nums[0] >= 1 and nums[1] >= 1 and nums[2] >= 1 and
          "refused a worker connection" in text and "not an allowed worker key" in text and
          "failed its CURVE handshake" in text and "accepted (CURVE key" in text,
          "serve's log: the group's key accepted, the rogues refused and logged; at exit: %s" % line[13:])


def part_ids(work):
    top = os.path.join(work, "ids")
    sdir = os.path.join(top, "sessions")
    os.makedirs(sdir)
    s = Server(["--model", TINY, "--session-dir", sdir])
    bad = ["../x", "a/b", "", "x" * 200, ".hidden", "a b", "../../etc/passwd"]
    codes = {}
    try:
        with RecurClient(s.endpoint, timeout_ms=20000) as c:
            for sid in bad:
                got = []
                got.append(error_of(lambda: c.complete([65, 66, 67], max_tokens=2, session_id=sid)))
                got.append(error_of(lambda: c.create_session(sid)))
                got.append(error_of(lambda: c.get_session(sid)))
                got.append(error_of(lambda: c.fork_session(sid, "ok-fork")))
                # sent as given (the library's helpers treat "" as "make one up")
                got.append(error_of(lambda: c._session(api.SESSION_OP_FORK, session_id="ok-src", new_session_id=sid)))
                blob = b"RECURCK1" + bytes(64)
                got.append(error_of(lambda: c._session(api.SESSION_OP_IMPORT, session_id=sid, chunk=api.StateChunk(
                    offset=0, total=len(blob), data=blob))))
                codes[sid] = [api.ErrorCode.Name(e.code) if e else "accepted" for e in got]
                ok = all(e is not None and e.code == api.ERROR_CODE_INVALID_ARGUMENT for e in got)
                msg = next((e.message for e in got if e and "characters" in e.message), got[0].message if got[0] else "")
                check(ok, "session id %r (%d bytes): Generate, CREATE, GET, FORK (both ids), IMPORT -> %s; e.g. '%s'" % (
                    sid[:24] + ("..." if len(sid) > 24 else ""), len(sid),
                    "/".join(sorted(set(codes[sid]))), msg[:110]))
            text, fin = c.complete([65, 66, 67], max_tokens=3, session_id="ok-1.v_2")
            check(fin.finish_reason == api.FINISH_REASON_LENGTH and c.get_session("ok-1.v_2").n_tokens > 0,
                  "a valid id ('ok-1.v_2') still starts a session")
    finally:
        rc, log = s.stop()
    outside = sorted(os.path.relpath(os.path.join(dp, f), top) for dp, _, fs in os.walk(top) for f in fs
                     if not os.path.join(dp, f).startswith(sdir + os.sep))
    parent_new = [f for f in os.listdir(work) if f.startswith(("x", "etc", "passwd", ".hidden"))]
    inside = os.listdir(sdir)
    check(not outside and not parent_new and all(f.startswith("s-") for f in inside),
          "nothing created outside --session-dir (outside: %s, next to it: %s); inside only the valid session's "
          "checkpoint files (%d)" % (outside, parent_new, len(inside)))
    check(rc == 0, "serve exits %d" % rc)


# ---- listening sockets

def listeners():
    """{inode: "addr:port"} of every listening TCP socket (/proc/net/tcp and tcp6)."""
    out = {}
    for f, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = open(f).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            p = l.split()
            if p[3] != "0A":   # TCP_LISTEN
                continue
            ip, port = p[1].split(":")
            raw = bytes.fromhex(ip)
            if v6:
                words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                addr = "[" + socket.inet_ntop(socket.AF_INET6, b"".join(words)) + "]"
            else:
                addr = socket.inet_ntoa(raw[::-1])
            out[int(p[9])] = "%s:%d" % (addr, int(port, 16))
    return out


def sockets_of(pid):
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if t.startswith("socket:["):
                inodes.add(int(t[8:-1]))
    except OSError:
        pass
    return inodes


def comm(pid):
    try:
        return open("/proc/%d/comm" % pid).read().strip()
    except OSError:
        return "?"


def part_listen(work):
    env = dict(os.environ)
    env.pop("RECUR_MPIRUN", None)   # serve's own default launcher
    layouts = [("tp1", TINY, [])]
    if shutil.which("mpirun"):
        layouts.append(("tp2, serve's default mpirun", SYNTH, ["--tp", "2"]))
    for name, model, extra in layouts:
        s = Server(["--model", model] + extra, env=env)
        try:
            greedy(s.endpoint, n=4)   # every process up and past its start
            pids = [s.p.pid] + descendants(s.p.pid)
            lst = listeners()
            ours, mpi = [], []
            for pid in pids:
                for ino in sockets_of(pid):
                    if ino in lst:
                        (mpi if comm(pid) in ("mpirun", "orterun", "prterun", "orted", "prted") else ours).append(
                            (comm(pid), pid, lst[ino]))
            bad = [x for x in ours if not x[2].startswith(("127.0.0.1:", "[::1]:"))]
            check(len(ours) >= 3 and not bad,
                  "%s: %d processes; recur's %d listening sockets all on loopback: %s%s" % (
                      name, len(pids), len(ours), ", ".join("%s %s" % (c, a) for c, _, a in sorted(ours)),
                      "; NOT: %s" % bad if bad else ""))
            if mpi:
                print("note %s: Open MPI's mpirun listens on %s (ORTE out-of-band TCP: Open MPI 4.1 binds it to the "
                      "wildcard address, no option moves it; README 'Security')" % (
                          name, ", ".join(a for _, _, a in mpi)))
        finally:
            rc, text = s.stop()
        check(rc == 0, "%s: serve exits %d" % (name, rc))


def main():
    parts = sys.argv[1:] or ["keygen", "curve", "curve-tp2", "external", "ids", "listen"]
    if subprocess.run([BIN, "keygen", "--out", "/nonexistent-dir-for-check/x"], capture_output=True,
                      text=True).stderr.find("without CURVE") >= 0:
        print("skip: this libzmq has no CURVE")
        return 77
    work = tempfile.mkdtemp(prefix="recur-sec-")
    try:
        for p in parts:
            print("== %s" % p, flush=True)
            if p == "keygen":
                part_keygen(work)
            elif p == "curve":
                part_curve(work, TINY, [], "tp1")
            elif p == "curve-tp2":
                if not os.environ.get("RECUR_MPIRUN"):
                    print("skip curve-tp2: RECUR_MPIRUN not set")
                    continue
                part_curve(work, SYNTH, ["--tp", "2"], "tp2")
            elif p == "external":
                part_external(work)
            elif p == "ids":
                part_ids(work)
            elif p == "listen":
                part_listen(work)
            else:
                print("unknown part %s" % p)
                return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("all passed" if check.fails == 0 else "%d failed" % check.fails)
    return 0 if check.fails == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
