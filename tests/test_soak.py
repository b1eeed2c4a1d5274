#!/usr/bin/env python3
"""test_soak.py: `recur serve` under a steady mix of everything clients do, for --seconds
(CI: 120), on the bundled tiny model (CPU), with checks that nothing drifts.

Before the run, alone and one at a time: the reference outputs of 16 greedy prompts, of 8
seeded sampled prompts, and the 300-token greedy continuation the cancelled requests use.
Then --threads client threads (default 8), each with its own socket, pick at random:
  greedy     a reference prompt: the tokens must equal its reference (batching changes nothing);
  sampled    a seeded reference prompt: the same seed gives the same tokens;
  cancel     a 300-token request cancelled after 1..20 tokens: it ends CANCELLED and what
             came before the cancel is a prefix of the reference;
  disconnect a 300-token request on a socket of its own, closed after 1..20 tokens (the
             server must cancel it: checked at the end by Health);
  session    two turns of a fresh session (seeded sampling): turn 2 equals one request with
             the whole conversation; then the session is deleted;
  invalid    a request the server must refuse: max_tokens 0, top_p 1.5, temperature -1,
             an unknown model, an empty prompt, session id "../x", a logit-bias id outside
             the vocabulary, GET of an unknown session: only the expected error code counts.
With --http, a third of the greedy requests go through the HTTP API (/v1/completions) and a
third of the disconnects are HTTP streams dropped mid-way.
A sampler reads VmRSS and RssAnon (/proc/PID/status) of serve and of every worker process
twice a second. At the end: Health shows no request active or queued and every slot free
(as at the start); no unexpected error response came; and each process's resident memory
is flat, for VmRSS and for its anonymous part RssAnon (heap and stacks, where a leak grows;
VmRSS is mostly shared libraries' pages): the largest sample of the last quarter <= the
largest of the first quarter x 1.10 + 2 MiB, and at most 4 MiB above it.
Why that bound: every code path runs within the first seconds, so by the end of the first
quarter the pools, scheduler arrays, buffers and malloc's arenas have their steady size; what
is left is allocator noise (trimming, fragmentation, HTTP connection threads: at most 0.7 MiB
in the runs of docs/testing.md), well under 2 MiB. The relative part alone would be loose in
a CUDA build, whose processes hold ~85 MiB of anonymous memory the CUDA libraries map at
load (10% of that is room for a leak to hide in), hence the absolute 4 MiB cap: a leak of
1 KiB per request over the ~4,500 requests of the last three quarters of a 120 s run adds
~4.4 MiB, and fails. The figures (requests, tokens, cancels, disconnects, turns, refusals,
memory per process at start, first-quarter max, last-quarter max and end) are printed for
docs/testing.md. In an ASan build the memory bound is not asserted (ASan's quarantine keeps
freed memory, up to 256 MiB, so the resident set grows by design): LeakSanitizer, which
checks serve at its exit, stands in for it.

Usage: test_soak.py [--seconds N] [--threads N] [--layout tp1|tp2] [--http] [--seed S].
Needs RECUR_BIN, RECUR_FIXTURES_DIR, RECUR_SOURCE_DIR (RECUR_MPIRUN for tp2). Exit 77 when
the Python client cannot load.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from recur_testlib import BIN, SYNTH, TINY, client_or_skip, descendants, stop_process

recur_client = client_or_skip()
RecurClient, RecurError, api = recur_client.RecurClient, recur_client.RecurError, recur_client.api

LAYOUTS = {
    "tp1": (TINY, []),
    "tp2": (SYNTH, ["--tp", "2"]),
}
SAMPLING = dict(temperature=0.9, top_p=0.95)
LONG = 300   # tokens of a request that is cancelled or dropped


def rss_kib(pid):
    """(VmRSS, RssAnon) in KiB, or None: the resident set, and its anonymous part (heap,
    stacks: what a leak grows; the rest is mapped files, mostly shared libraries)."""
    got = {}
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith(("VmRSS:", "RssAnon:")):
                got[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        return None
    return (got["VmRSS"], got.get("RssAnon", got["VmRSS"])) if "VmRSS" in got else None


def comm(pid):
    try:
        return open("/proc/%d/comm" % pid).read().strip()
    except OSError:
        return "?"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {k: 0 for k in ("requests", "tokens", "greedy", "sampled", "cancel", "disconnect", "turns",
                                 "invalid", "http", "mismatch", "unexpected")}
        self.problems = []

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.n[k] += v

    def problem(self, what):
        with self.lock:
            self.n["unexpected" if what.startswith("unexpected") else "mismatch"] += 1
            if len(self.problems) < 20:
                self.problems.append(what)


def toks(c, prompt, **kw):
    """Token ids of a whole generation and its final."""
    out = [t.id for t in c.generate(prompt, **kw)]
    return out, c.last_final


class Soak:
    def __init__(self, a):
        self.a = a
        self.model, extra = LAYOUTS[a.layout]
        self.work = tempfile.mkdtemp(prefix="recur-soak-")
        self.sdir = os.path.join(self.work, "sessions")
        os.makedirs(self.sdir)
        self.log = open(os.path.join(self.work, "serve.err"), "w")
        self.p = subprocess.Popen([BIN, "serve", "--model", self.model, "--port", "0", "--log-level", "warn",
                                   "--session-dir", self.sdir, "--slots", "40"] + extra,
                                  stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.ep = self.http = None
        deadline = time.time() + 120
        while time.time() < deadline and not (self.ep and self.http):
            line = self.p.stdout.readline()
            if not line:
                break
            if line.startswith("recur serve: listening on "):
                self.ep = line.split()[-1]
            if line.startswith("recur serve: http on "):
                self.http = line.split()[-1]
        if not self.ep:
            raise RuntimeError("serve did not come up: " + open(self.log.name).read()[-2000:])
        # a sanitizer build: ASan keeps freed memory in its quarantine (up to 256 MiB), so the
        # resident set grows by design; LeakSanitizer checks for leaks at serve's exit instead
        maps = open("/proc/%d/maps" % self.p.pid).read()
        self.asan = "libasan" in maps or "clang_rt.asan" in maps
        self.stats = Stats()
        self.rss = {}   # pid -> [(t, kib)]
        self.stop = threading.Event()

    # ---- references, alone and one at a time
    def references(self, rng):
        with RecurClient(self.ep) as c:
            self.vocab = c.list_models()[0].n_vocab
            lo = 32 if self.vocab >= 128 else 1
            hi = min(self.vocab - 1, 126)
            self.greedy = []
            for i in range(16):
                p = [rng.randint(lo, hi) for _ in range(rng.randint(4, 40))]
                n = rng.randint(4, 40)
                self.greedy.append((p, n, toks(c, p, max_tokens=n, temperature=0, ignore_eos=True)[0]))
            self.sampled = []
            for i in range(8):
                p = [rng.randint(lo, hi) for _ in range(rng.randint(4, 40))]
                n, seed = rng.randint(4, 40), rng.randint(1, 1 << 40)
                self.sampled.append((p, n, seed, toks(c, p, max_tokens=n, seed=seed, ignore_eos=True, **SAMPLING)[0]))
            self.long_prompt = [rng.randint(lo, hi) for _ in range(12)]
            self.long_ref = toks(c, self.long_prompt, max_tokens=LONG, temperature=0, ignore_eos=True)[0]
            h = c.health()
        self.h0 = h
        self.lo, self.hi = lo, hi
        # the HTTP API's text for the greedy references (it speaks text, the prompts are bytes)
        self.http_refs = []
        if self.a.http:
            with RecurClient(self.ep) as c:
                for i in range(4):
                    text = "HTTP soak prompt %d about %s" % (i, ["rivers", "stars", "bread", "clocks"][i])
                    self.http_refs.append((text, c.complete(text, max_tokens=16, temperature=0, ignore_eos=True)[0]))

    # ---- the operations
    def op_greedy(self, c, rng):
        if self.http_refs and rng.random() < 1 / 3:
            return self.op_http_greedy(rng)
        p, n, want = rng.choice(self.greedy)
        got, fin = toks(c, p, max_tokens=n, temperature=0, ignore_eos=True)
        if got != want:
            self.stats.problem("greedy mismatch: %s vs %s" % (got[:8], want[:8]))
        self.stats.add(requests=1, tokens=len(got), greedy=1)

    def op_sampled(self, c, rng):
        p, n, seed, want = rng.choice(self.sampled)
        got, fin = toks(c, p, max_tokens=n, seed=seed, ignore_eos=True, **SAMPLING)
        if got != want:
            self.stats.problem("seeded sample mismatch (seed %d): %s vs %s" % (seed, got[:8], want[:8]))
        self.stats.add(requests=1, tokens=len(got), sampled=1)

    def op_cancel(self, c, rng):
        k = rng.randint(1, 20)
        rid = c.start(self.long_prompt, max_tokens=LONG, temperature=0, ignore_eos=True)
        got, sent = [], False
        for t in c.stream(rid):
            got.append(t.id)
            if len(got) >= k and not sent:
                c.cancel(rid)
                sent = True
        fin = c.last_final
        if fin.finish_reason != api.FINISH_REASON_CANCELLED or got != self.long_ref[:len(got)]:
            self.stats.problem("cancel: finish %d after %d tokens, prefix ok %s" % (
                fin.finish_reason, len(got), got == self.long_ref[:len(got)]))
        self.stats.add(requests=1, tokens=len(got), cancel=1)

    def op_disconnect(self, c, rng):
        k = rng.randint(1, 20)
        if self.http and rng.random() < 1 / 3 and self.a.http:
            return self.op_http_disconnect(k)
        d = RecurClient(self.ep)
        try:
            rid = d.start(self.long_prompt, max_tokens=LONG, temperature=0, ignore_eos=True)
            n = 0
            for t in d.stream(rid):
                n += 1
                if n >= k:
                    break
        finally:
            d.close()   # linger 0: the connection goes away with the request running
        self.stats.add(requests=1, tokens=n, disconnect=1)

    def op_session(self, c, rng, tag):
        sid = "soak-%s" % tag
        seed = rng.randint(1, 1 << 40)
        p1 = [rng.randint(self.lo, self.hi) for _ in range(rng.randint(3, 20))]
        p2 = [rng.randint(self.lo, self.hi) for _ in range(rng.randint(3, 20))]
        n1, n2 = rng.randint(3, 16), rng.randint(3, 16)
        o1, _ = toks(c, p1, max_tokens=n1, seed=seed, ignore_eos=True, session_id=sid, **SAMPLING)
        o2, _ = toks(c, p2, max_tokens=n2, seed=seed + 1, ignore_eos=True, session_id=sid, **SAMPLING)
        whole, _ = toks(c, p1 + o1 + p2, max_tokens=n2, seed=seed + 1, ignore_eos=True, **SAMPLING)
        if o2 != whole:
            self.stats.problem("session turn 2 != whole conversation: %s vs %s" % (o2[:8], whole[:8]))
        c.delete_session(sid)
        self.stats.add(requests=3, tokens=len(o1) + len(o2) + len(whole), turns=2)

    INVALID = [
        ("max_tokens 0", dict(max_tokens=0), api.ERROR_CODE_INVALID_ARGUMENT),
        ("top_p 1.5", dict(top_p=1.5), api.ERROR_CODE_INVALID_ARGUMENT),
        ("temperature -1", dict(temperature=-1.0), api.ERROR_CODE_INVALID_ARGUMENT),
        ("unknown model", dict(model="no-such-model"), api.ERROR_CODE_NOT_FOUND),
        ("session id ../x", dict(session_id="../x"), api.ERROR_CODE_INVALID_ARGUMENT),
        ("logit bias outside the vocabulary", dict(logit_bias=[api.LogitBias(token_id=10 ** 6, bias=1.0)]),
         api.ERROR_CODE_INVALID_ARGUMENT),
    ]

    def op_invalid(self, c, rng):
        i = rng.randint(0, len(self.INVALID) + 1)
        try:
            if i == len(self.INVALID):
                what, want = "empty prompt", (api.ERROR_CODE_INVALID_ARGUMENT, api.ERROR_CODE_PROTOCOL)
                list(c.generate(""))
            elif i == len(self.INVALID) + 1:
                what, want = "GET of an unknown session", (api.ERROR_CODE_NOT_FOUND,)
                c.get_session("soak-no-such-session")
            else:
                what, kw, code = self.INVALID[i]
                want = (code,)
                kw = dict({"max_tokens": 4}, **kw)
                list(c.generate("Hello", **kw))
            self.stats.problem("invalid request accepted: %s" % what)
        except RecurError as e:
            if e.code not in want:
                self.stats.problem("unexpected error for %s: %s" % (what, e))
        self.stats.add(invalid=1)

    # ---- HTTP
    def _http_conn(self):
        hp = self.http.split("://", 1)[1]
        host, port = hp.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=60)

    def op_http_greedy(self, rng):
        text, want = rng.choice(self.http_refs)
        conn = self._http_conn()
        body = json.dumps({"prompt": text, "max_tokens": 16, "temperature": 0, "ignore_eos": True})
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        if r.status != 200:
            self.stats.problem("unexpected HTTP %d: %s" % (r.status, data[:200]))
            return
        got = json.loads(data)["choices"][0]["text"]
        if got != want:
            self.stats.problem("HTTP greedy mismatch: %r vs %r" % (got[:30], want[:30]))
        self.stats.add(requests=1, http=1, greedy=1, tokens=16)

    def op_http_disconnect(self, k):
        conn = self._http_conn()
        body = json.dumps({"prompt": "An endless story", "max_tokens": LONG, "temperature": 0, "ignore_eos": True,
                           "stream": True})
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        n = 0
        while n < k:
            line = r.fp.readline()
            if not line:
                break
            n += line.startswith(b"data: {")
        conn.sock.close()   # mid-stream
        conn.close()
        self.stats.add(requests=1, http=1, disconnect=1, tokens=n)

    # ---- the run
    def client(self, idx, seed):
        rng = random.Random(seed)
        ops = [("greedy", 30), ("sampled", 20), ("cancel", 10), ("disconnect", 10), ("session", 15), ("invalid", 15)]
        names = [o for o, w in ops for _ in range(w)]
        it = 0
        c = RecurClient(self.ep, timeout_ms=60000)
        while not self.stop.is_set():
            op = rng.choice(names)
            it += 1
            try:
                if op == "session":
                    self.op_session(c, rng, "%d-%d" % (idx, it))
                else:
                    getattr(self, "op_" + op)(c, rng)
            except RecurError as e:
                self.stats.problem("unexpected error in %s: %s" % (op, e))
            except Exception as e:  # a timeout, a broken stream: reported, the thread goes on
                self.stats.problem("unexpected failure in %s: %r" % (op, e))
                c.close()
                c = RecurClient(self.ep, timeout_ms=60000)   # a socket in a clean state
        c.close()

    def sampler(self):
        t0 = time.time()
        while not self.stop.is_set():
            for pid in [self.p.pid] + descendants(self.p.pid):
                kib = rss_kib(pid)
                if kib is not None:
                    self.rss.setdefault(pid, []).append((time.time() - t0, kib))
            self.stop.wait(0.5)

    def run(self):
        rng = random.Random(self.a.seed)
        t_ref = time.time()
        self.references(rng)
        print("references: 16 greedy, 8 seeded, one %d-token continuation in %.1f s; Health: %d slots free" % (
            LONG, time.time() - t_ref, self.h0.free_slots), flush=True)
        sampler = threading.Thread(target=self.sampler)
        sampler.start()
        threads = [threading.Thread(target=self.client, args=(i, self.a.seed * 1000 + i)) for i in range(self.a.threads)]
        t0 = time.time()
        for t in threads:
            t.start()
        while time.time() - t0 < self.a.seconds:
            time.sleep(max(0.0, min(10.0, self.a.seconds - (time.time() - t0))))
            n = self.stats.n
            print("  %5.0f s: %d requests, %d tokens, %d problems" % (time.time() - t0, n["requests"], n["tokens"],
                                                                     n["mismatch"] + n["unexpected"]), flush=True)
        self.stop.set()
        for t in threads:
            t.join(120)
        elapsed = time.time() - t0
        sampler.join()
        return elapsed

    def finish(self, elapsed):
        ok = True
        # the server settles: every request ended, every slot free
        with RecurClient(self.ep) as c:
            deadline = time.time() + 15
            h = c.health()
            while time.time() < deadline and (h.active_requests or h.queued_requests or
                                              h.free_slots != self.h0.free_slots):
                time.sleep(0.2)
                h = c.health()
            left = c.list_sessions()
        n = self.stats.n
        print("soak: %.0f s, %d threads, layout %s%s" % (elapsed, self.a.threads, self.a.layout,
                                                         ", HTTP too" if self.a.http else ""))
        print("  requests %d (%.1f/s), tokens %d (%.0f/s); greedy %d, seeded %d, cancelled %d, disconnected %d, "
              "session turns %d, refused as expected %d, over HTTP %d" % (
                  n["requests"], n["requests"] / elapsed, n["tokens"], n["tokens"] / elapsed, n["greedy"], n["sampled"],
                  n["cancel"], n["disconnect"], n["turns"], n["invalid"], n["http"]))
        good = h.status == api.SERVING_STATUS_SERVING and h.active_requests == 0 and h.queued_requests == 0 and \
            h.free_slots == self.h0.free_slots and not left
        print(("ok   " if good else "FAIL ") + "end: Health %s, active %d, queued %d, free slots %d of %d at the start, "
              "sessions left %d" % (api.ServingStatus.Name(h.status), h.active_requests, h.queued_requests,
                                    h.free_slots, self.h0.free_slots, len(left)))
        ok &= good
        bad = n["mismatch"] + n["unexpected"]
        print(("ok   " if bad == 0 else "FAIL ") + "%d mismatches, %d unexpected errors" % (n["mismatch"],
                                                                                          n["unexpected"]))
        for p in self.stats.problems:
            print("     " + p)
        ok &= bad == 0
        ok &= n["greedy"] > 0 and n["sampled"] > 0 and n["cancel"] > 0 and n["disconnect"] > 0 and n["turns"] > 0
        # resident memory per process: VmRSS (the whole resident set) and RssAnon (its
        # anonymous part, where a leak shows without the shared libraries' pages around it)
        for pid, s in sorted(self.rss.items()):
            if len(s) < 8:
                continue
            q = elapsed / 4
            who = "serve" if pid == self.p.pid else "%s %d (worker group)" % (comm(pid), pid)
            for i, what in ((0, "VmRSS"), (1, "RssAnon")):
                first = max(k[i] for t, k in s if t <= q)
                last = max(k[i] for t, k in s if t >= elapsed - q)
                bound = min(first * 1.10 + 2048, first + 4096)
                flat = last <= bound or self.asan
                print(("ok   " if flat else "FAIL ") + ("(ASan: not asserted) " if self.asan else "") + "%s %s: start %.1f MiB, first-quarter max %.1f, last-quarter "
                      "max %.1f (bound %.1f), end %.1f MiB; %d samples" % (
                          what, who, s[0][1][i] / 1024, first / 1024, last / 1024, bound / 1024, s[-1][1][i] / 1024,
                          len(s)))
                ok &= flat
        return ok

    def close(self):
        stop_process(self.p, 60)
        self.log.close()
        rc = self.p.returncode
        text = open(self.log.name).read()
        shutil.rmtree(self.work, ignore_errors=True)
        return rc, text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--layout", default="tp1", choices=sorted(LAYOUTS))
    ap.add_argument("--http", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if LAYOUTS[a.layout][1] and not os.environ.get("RECUR_MPIRUN"):
        print("skip %s: RECUR_MPIRUN not set" % a.layout)
        return 77
    s = Soak(a)
    ok = False
    try:
        ok = s.finish(s.run())
    finally:
        rc, text = s.close()
    print(("ok   " if rc == 0 else "FAIL ") + "serve exits %d after SIGTERM%s" % (
        rc, " (LeakSanitizer found no leak in it: this is an ASan build)" if s.asan and rc == 0 else ""))
    if rc != 0:
        print(text[-2000:])
    ok &= rc == 0
    print("all passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
