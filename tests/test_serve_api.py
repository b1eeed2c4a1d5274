#!/usr/bin/env python3
"""test_serve_api.py: `recur serve` through the Python client example (scripts/recur_client.py,
Debian's python3-zmq and python3-protobuf), on the CPU backend, real processes on loopback.

For each worker layout given (tp1 on the bundled tiny model; tp2 and pp2 on synth7, through
mpirun) it starts a server and checks:
  - 32 concurrent clients (threads, one socket each) with different prompts and greedy
    decoding: every output equals the same request run alone (batching changes nothing);
  - ListModels names the model and the layout; Health is SERVING with every slot free;
  - a token-id prompt is used as given (usage counts its tokens);
  - Cancel mid-stream ends the stream CANCELLED and frees the slot (free slots back to all);
  - a client that closes its connection mid-stream has its request cancelled (slot freed);
  - invalid parameters get INVALID_ARGUMENT / NOT_FOUND with a message naming the field
    (max_tokens 0, top_p 1.5, temperature -1, top_k -1, unknown model, empty prompt), and the
    server keeps serving the same text afterwards.
and on a second server of the same layout with one slot and a queue of two:
  - priority: with the slot busy, a later request of higher priority runs before an earlier one;
  - a full queue gives RESOURCE_EXHAUSTED; a request waiting past --queue-timeout-ms ends
    with DEADLINE_EXCEEDED; afterwards nothing is left running or queued.
Finally SIGTERM drains: an in-flight stream finishes, a new request gets UNAVAILABLE.

Usage: test_serve_api.py LAYOUT [LAYOUT ...]   (tp1, tp2, pp2). Needs RECUR_BIN,
RECUR_FIXTURES_DIR, RECUR_SOURCE_DIR; RECUR_MPIRUN for tp2/pp2. Exit 77 when python3-zmq or
python3-protobuf or protoc is missing.
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from recur_testlib import BIN, Checks, SYNTH, TINY, client_or_skip, error_of, stop_process

recur_client = client_or_skip()
RecurClient, RecurError, api = recur_client.RecurClient, recur_client.RecurError, recur_client.api

LAYOUTS = {
    "tp1": (TINY, []),
    "tp2": (SYNTH, ["--tp", "2"]),
    "pp2": (SYNTH, ["--pp", "2"]),
}
check = Checks()


class Server:
    def __init__(self, model, extra):
        self.log = tempfile.NamedTemporaryFile(prefix="recur-serve-", suffix=".err", delete=False)
        self.p = subprocess.Popen([BIN, "serve", "--model", model, "--port", "0", "--log-level", "warn"] + extra,
                                  stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.endpoint = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            if line.startswith("recur serve: listening on "):
                self.endpoint = line.split()[-1]
                break
        if not self.endpoint:
            self.p.kill()
            raise RuntimeError("serve did not come up: " + open(self.log.name).read()[-2000:])

    def stop(self):
        stop_process(self.p, 30)
        os.unlink(self.log.name)
        return self.p.returncode


def greedy(ep, prompt, n):
    with RecurClient(ep) as c:
        text, fin = c.complete(prompt, max_tokens=n, temperature=0)
        return text, fin.finish_reason


def main_checks(name, ep, model):
    prompts = ["Prompt %d: the %s of" % (i, ["cat", "sea", "king", "rain"][i % 4]) for i in range(32)]
    lens = [12 + (i * 7) % 29 for i in range(32)]
    alone = [greedy(ep, p, n) for p, n in zip(prompts, lens)]
    got = [None] * 32
    start = threading.Barrier(32)

    def run(i):
        start.wait()
        try:
            got[i] = greedy(ep, prompts[i], lens[i])
        except Exception as e:  # reported below as a mismatch
            got[i] = ("<%s>" % e, None)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [i for i in range(32) if got[i] != alone[i]]
    check(not bad, "%s: 32 concurrent clients, each output equals the request run alone%s" % (
        name, "" if not bad else " (differ: %s; e.g. %r vs %r)" % (bad, got[bad[0]], alone[bad[0]])))

    with RecurClient(ep) as c:
        ms = c.list_models()
        check(len(ms) == 1 and ms[0].n_vocab > 0 and ms[0].tp * ms[0].pp == (2 if name != "tp1" else 1),
              "%s: ListModels: %s" % (name, [(m.id, m.arch, m.n_vocab, m.tp, m.pp) for m in ms]))
        h0 = c.health()
        check(h0.status == api.SERVING_STATUS_SERVING and h0.active_requests == 0 and h0.free_slots > 0,
              "%s: Health serving, %d slots free" % (name, h0.free_slots))

        toks = []
        for t in c.generate([5, 6, 7, 8, 9], max_tokens=4, temperature=0):
            toks.append(t.id)
        check(c.last_final.usage.prompt_tokens == 5 and len(toks) == 4,
              "%s: token-id prompt used as given (prompt_tokens %d, %d generated)" % (
                  name, c.last_final.usage.prompt_tokens, len(toks)))

        rid = c.start("The cancelled one", max_tokens=100000, temperature=0, ignore_eos=True)
        n = 0
        for _ in c.stream(rid):
            n += 1
            if n == 3:
                c.cancel(rid)
        fr = c.last_final.finish_reason
        h1 = c.health()
        check(fr == api.FINISH_REASON_CANCELLED and n < 1000 and h1.free_slots == h0.free_slots and
              h1.active_requests == 0,
              "%s: cancel mid-stream -> %s after %d tokens; free slots back to %d" % (
                  name, recur_client.FINISH_NAMES.get(fr), n, h1.free_slots))

        gone = RecurClient(ep)
        rid = gone.start("The client goes away", max_tokens=100000, temperature=0, ignore_eos=True)
        g = gone.stream(rid)
        next(g)
        next(g)
        gone.close()   # the TCP connection closes with the request still running
        t0 = time.time()
        h2 = c.health()
        while time.time() - t0 < 5 and (h2.active_requests or h2.free_slots != h0.free_slots):
            time.sleep(0.05)
            h2 = c.health()
        check(h2.active_requests == 0 and h2.free_slots == h0.free_slots,
              "%s: a client that disconnects mid-stream has its request cancelled, slot free after %.2f s" % (
                  name, time.time() - t0))

        # A connection that closes and a new one that gets its fd number at once: the old
        # one's disconnection must cancel only the old request, never the new one.
        wrong = []
        for i in range(12):
            old = RecurClient(ep)
            rid = old.start("Going away %d" % i, max_tokens=100000, temperature=0, ignore_eos=True)
            next(old.stream(rid))
            old.close()
            with RecurClient(ep) as new:
                got = new.complete(prompts[0], max_tokens=lens[0], temperature=0)
                if (got[0], got[1].finish_reason) != alone[0]:
                    wrong.append((i, got[0], recur_client.FINISH_NAMES.get(got[1].finish_reason)))
        check(not wrong, "%s: 12 times a client closes and the next connects at once: the new "
              "request is never cancelled for the old one%s" % (name, " (%r)" % wrong[:3] if wrong else ""))

        bad_cases = [
            ("max_tokens 0", dict(max_tokens=0), api.ERROR_CODE_INVALID_ARGUMENT, "max_tokens"),
            ("top_p 1.5", dict(top_p=1.5), api.ERROR_CODE_INVALID_ARGUMENT, "top_p"),
            ("temperature -1", dict(temperature=-1.0), api.ERROR_CODE_INVALID_ARGUMENT, "temperature"),
            ("top_k -1", dict(top_k=-1), api.ERROR_CODE_INVALID_ARGUMENT, "top_k"),
            ("unknown model", dict(model="no-such-model"), api.ERROR_CODE_NOT_FOUND, "no-such-model"),
        ]
        for what, kw, code, word in bad_cases:
            model_kw = {"model": kw.pop("model")} if "model" in kw else {}
            e = error_of(lambda: list(c.generate("Hello", **model_kw, **kw)))
            check(e is not None and e.code == code and word in e.message,
                  "%s: %s -> %s" % (name, what, e if e else "no error"))
        e = error_of(lambda: list(c.generate("")))
        check(e is not None and e.code in (api.ERROR_CODE_INVALID_ARGUMENT, api.ERROR_CODE_PROTOCOL),
              "%s: empty prompt -> %s" % (name, e))
    again = greedy(ep, prompts[0], lens[0])
    check(again == alone[0], "%s: still serving the same text after the errors%s" % (
        name, "" if again == alone[0] else " (got %r, alone %r)" % (again, alone[0])))


def queue_checks(name, model, extra):
    s = Server(model, extra + ["--slots", "2", "--max-queue", "2", "--queue-timeout-ms", "1500"])
    try:
        with RecurClient(s.endpoint) as c:
            long_rid = c.start("Busy", max_tokens=1000000, temperature=0, ignore_eos=True)
            gen = c.stream(long_rid)
            next(gen)  # it runs: the one slot is taken
            low = c.start("Low", max_tokens=3, temperature=0, priority=0)
            high = c.start("High", max_tokens=3, temperature=0, priority=5)
            time.sleep(0.2)
            full = c.start("Full", max_tokens=3, temperature=0)
            e = error_of(lambda: list(c.stream(full)))
            check(e is not None and e.code == api.ERROR_CODE_RESOURCE_EXHAUSTED,
                  "%s: a full queue -> %s" % (name, e))
            c.cancel(long_rid)
            for _ in gen:
                pass
            order = []  # which request each streamed message belongs to, in arrival order
            done = set()
            while len(done) < 2:
                gr = c.next_response()
                order.append(gr.request_id)
                if gr.HasField("final"):
                    done.add(gr.request_id)
            check(order.index(high) < order.index(low) and order[-1] == low,
                  "%s: priority 5 ran before the earlier priority 0 request" % name)

            long_rid = c.start("Busy again", max_tokens=1000000, temperature=0, ignore_eos=True)
            gen = c.stream(long_rid)
            next(gen)
            late = c.start("Waits too long", max_tokens=3, temperature=0)
            t0 = time.time()
            e = error_of(lambda: list(c.stream(late)))
            waited = time.time() - t0
            check(e is not None and e.code == api.ERROR_CODE_DEADLINE_EXCEEDED and 1.0 < waited < 10,
                  "%s: queue timeout after %.1f s -> %s" % (name, waited, e))
            c.cancel(long_rid)
            for _ in gen:
                pass
            h = c.health()
            check(h.active_requests == 0 and h.queued_requests == 0 and h.free_slots == 1,
                  "%s: nothing left running or queued (free slots %d)" % (name, h.free_slots))
    finally:
        s.stop()


def drain_check(name, s):
    """SIGTERM: the stream in flight finishes, a new request is refused, serve exits 0."""
    # long enough to be still running when the new request comes (~6 s at this server's
    # speed: sanitizer builds are many times slower), short enough to end within the drain
    t0 = time.time()
    greedy(s.endpoint, "Timing", 100)
    n_drain = int(min(5000, max(600, 6.0 / ((time.time() - t0) / 100))))
    with RecurClient(s.endpoint) as c, RecurClient(s.endpoint, timeout_ms=10000) as c2:
        rid = c.start("Draining", max_tokens=n_drain, temperature=0, ignore_eos=True)
        gen = c.stream(rid)
        next(gen)
        s.p.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        try:
            e = error_of(lambda: list(c2.generate("New", max_tokens=3)))
        except TimeoutError as t:
            e = t
        n = 1 + sum(1 for _ in gen)
        fr = c.last_final.finish_reason
    rc = s.p.wait(30)
    check(isinstance(e, RecurError) and e.code == api.ERROR_CODE_UNAVAILABLE and fr == api.FINISH_REASON_LENGTH and n == n_drain
          and rc == 0, "%s: SIGTERM drains: the stream in flight finished (%d tokens, %s), a new request got %s, "
          "exit %s" % (name, n, recur_client.FINISH_NAMES.get(fr), e, rc))


def main():
    layouts = sys.argv[1:] or ["tp1"]
    for name in layouts:
        model, extra = LAYOUTS[name]
        if extra and not os.environ.get("RECUR_MPIRUN"):
            print("skip %s: RECUR_MPIRUN not set" % name)
            continue
        s = Server(model, extra + ["--slots", "40", "--drain-timeout-s", "120"])
        try:
            main_checks(name, s.endpoint, model)
            drain_check(name, s)
        finally:
            s.stop()
        queue_checks(name, model, extra)
    print("all passed" if check.fails == 0 else "%d failed" % check.fails)
    return 0 if check.fails == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
