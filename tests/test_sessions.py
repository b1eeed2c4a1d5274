#!/usr/bin/env python3
"""test_sessions.py: sessions through `recur serve` and the Python client (protobuf API),
CPU backend, real processes on loopback.

tp1 (the bundled tiny model), with --session-dir:
  - turn 2 of a session gives the same tokens as one request with the whole conversation
    (token ids), seeded sampling; usage: prompt_tokens equal, cached_prompt_tokens = what
    turn 1 consumed, so only turn 2's tokens (and turn 1's last, not yet consumed) prefill;
  - a second turn on a busy session gets ALREADY_EXISTS, the first one is unharmed;
  - create / get / list / fork (both copies continue alike and then independently) /
    delete / export -> import (the copy continues like the original);
  - kill -9 of serve and every worker process, restart on the same directory: the session
    continues exactly as an uninterrupted copy of it did before the kill;
  - tiers: 2 slots, 1 idle session per slot, host memory for 1 state: sessions move
    slot -> host -> disk (checked with GET) and every turn still equals the whole
    conversation in one request; turns with sampling penalties give the same tokens
    whether the session stayed in its slot or moved between turns;
  - damaged checkpoints: a flipped byte, a truncated shard, another state dtype (restart
    with --state bf16), a damaged import are refused with the reason; the session works
    again once its file is back;
  - an RWKV-7 state-tuning file as a variant (--state-variant): its greedy tokens equal
    `recur logits --state-in` from the same state and its seeded samples `recur generate
    --state-in`, a session on it gives the same, and the plain model samples others;
  - the worker group killed mid-turn (serve restarts it): the turn ends with an error and
    the session continues from its checkpoint, as if that turn never happened;
  - SIGTERM during a turn: the drain lets it finish, its checkpoint is written, and after
    a restart the session continues from the whole turn;
  - the prefix cache: prompts sharing a 40-token system prompt give `recur generate`'s
    tokens; the second one captures the prefix, later ones (also 4 at once, and a
    session's first turn) prefill only their own tokens (cached_prompt_tokens 40).
tp2 / pp2 (synth7 under mpirun): turn 2 == whole conversation; kill -9 and restart; a
session saved under tp2 continues under pp2 (and the reverse) exactly; a tiny model's
checkpoint is refused as another model's.

Usage: test_sessions.py LAYOUT [LAYOUT ...] (tp1, tp2, pp2). Needs RECUR_BIN,
RECUR_FIXTURES_DIR, RECUR_SOURCE_DIR; RECUR_MPIRUN for tp2/pp2. Exit 77 when the Python
client cannot load (python3-zmq, python3-protobuf, protoc).
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

from recur_testlib import BIN, Checks, SYNTH, TINY, client_or_skip, descendants, error_of, stop_process

recur_client = client_or_skip()
RecurClient, RecurError, api = recur_client.RecurClient, recur_client.RecurError, recur_client.api

SAMPLING = dict(temperature=0.8, top_p=0.95, seed=11)
check = Checks()


class Server:
    def __init__(self, model, extra, expect_fail=False):
        self.log = tempfile.NamedTemporaryFile(prefix="recur-sess-", suffix=".err", delete=False)
        self.p = subprocess.Popen([BIN, "serve", "--model", model, "--log-level", "warn", "--port", "0"] + extra,
                                  stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.endpoint = None
        deadline = time.time() + 90
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

    def kill9(self):
        """kill -9 of serve and every process of its worker group, all at once."""
        procs = [self.p.pid] + descendants(self.p.pid)
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.p.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(os.path.exists("/proc/%d" % p) and
                                             "zombie" not in open("/proc/%d/status" % p).read().lower()
                                             for p in procs[1:] if os.path.exists("/proc/%d/status" % p)):
            time.sleep(0.05)
        os.unlink(self.log.name)
        return len(procs)

    def stop(self):
        stop_process(self.p, 60)
        text = open(self.log.name).read()
        os.unlink(self.log.name)
        return self.p.returncode, text


def turn(c, ids, n, session=None, **kw):
    """Token ids generated for prompt ids, and the final."""
    args = dict(SAMPLING)
    args.update(kw)
    toks = [t.id for t in c.generate(list(ids), max_tokens=n, session_id=session, **args)]
    return toks, c.last_final


def prompt(k, vocab):
    return [(7 * k + 13 * i + 1) % vocab for i in range(9 + k % 5)]


def session_file(d, sid):
    for f in os.listdir(d):
        if f.endswith(".ckpt"):
            m = json.load(open(os.path.join(d, f)))
            if m["session"]["id"] == sid:
                return os.path.join(d, f), [os.path.join(d, s["file"]) for s in m["shards"]]
    return None, []


# ------------------------------------------------------------------ checks

def check_turns(name, c, vocab, sid):
    """Turn 1 and 2 of session sid; turn 2 against the whole conversation. Returns the
    conversation's token ids so far."""
    p1, p2 = prompt(1, vocab), prompt(2, vocab)
    o1, f1 = turn(c, p1, 10, sid)
    o2, f2 = turn(c, p2, 10, sid)
    whole = p1 + o1 + p2
    ow, fw = turn(c, whole, 10)
    u = f2.usage
    check(o2 == ow and len(o2) > 0, "%s: turn 2 of a session == the whole conversation in one request (%s)" % (name, o2))
    check(u.prompt_tokens == fw.usage.prompt_tokens == len(whole) and
          u.cached_prompt_tokens == len(p1) + len(o1) - 1 and u.prompt_tokens - u.cached_prompt_tokens == len(p2) + 1,
          "%s: usage of turn 2: prompt %d (whole %d), cached %d, prefilled %d = its %d new tokens + turn 1's last" % (
              name, u.prompt_tokens, fw.usage.prompt_tokens, u.cached_prompt_tokens,
              u.prompt_tokens - u.cached_prompt_tokens, len(p2)))
    info = c.get_session(sid)
    check(info.n_tokens == len(whole) + len(o2) and info.saved_tokens == info.n_tokens,
          "%s: GET: %d tokens, %d saved" % (name, info.n_tokens, info.saved_tokens))
    return whole + o2


def check_busy(name, c, ep, vocab):
    rid = c.start(prompt(3, vocab), max_tokens=400, session_id="busy", ignore_eos=True, **SAMPLING)
    it = c.stream(rid)
    next(it)
    with RecurClient(ep) as c2:
        e = error_of(lambda: turn(c2, prompt(4, vocab), 3, "busy"))
        check(e is not None and e.code == api.ERROR_CODE_ALREADY_EXISTS and "busy" in e.message,
              "%s: a second turn on a busy session -> %s" % (name, e))
        e = error_of(lambda: c2.delete_session("busy"))
        check(e is not None and e.code == api.ERROR_CODE_ALREADY_EXISTS, "%s: delete of a busy session -> %s" % (name, e))
    n = 1 + sum(1 for _ in it)
    check(n == 400 and c.last_final.finish_reason == api.FINISH_REASON_LENGTH,
          "%s: the first turn finished unharmed (%d tokens)" % (name, n))
    o, f = turn(c, prompt(4, vocab), 3, "busy")
    check(len(o) == 3, "%s: after it, the next turn runs" % name)


def check_ops(name, c, vocab, conv):
    s = c.create_session()
    check(s.session_id.startswith("sess-") and s.tier == api.SESSION_TIER_NEW and s.n_tokens == 0,
          "%s: CREATE without an id: %s, tier NEW" % (name, s.session_id))
    e = error_of(lambda: c.create_session("s1"))
    check(e is not None and e.code == api.ERROR_CODE_ALREADY_EXISTS, "%s: CREATE of an existing id -> %s" % (name, e))
    ids = {x.session_id for x in c.list_sessions()}
    check({"s1", s.session_id} <= ids, "%s: LIST has %d sessions" % (name, len(ids)))
    f = c.fork_session("s1", "s1-fork")
    check(f.session_id == "s1-fork" and f.n_tokens == c.get_session("s1").n_tokens,
          "%s: FORK: the copy has the conversation (%d tokens)" % (name, f.n_tokens))
    p3, p4 = prompt(5, vocab), prompt(6, vocab)
    a, _ = turn(c, p3, 8, "s1-fork")
    blob = c.export_session("s1")
    b, _ = turn(c, p3, 8, "s1")
    check(a == b, "%s: original and fork continue alike" % name)
    a2, _ = turn(c, p4, 8, "s1-fork")
    w, _ = turn(c, conv + p3 + b + p4, 8)
    check(a2 == w, "%s: the fork then goes its own way (== its whole conversation)" % name)
    imp = c.import_session(blob, "s1-imported")
    x, _ = turn(c, p3, 8, "s1-imported")
    check(imp.session_id == "s1-imported" and imp.tier == api.SESSION_TIER_DISK and x == b,
          "%s: EXPORT (%d bytes) -> IMPORT: the copy continues like the original" % (name, len(blob)))
    bad = bytearray(blob)
    bad[-10] ^= 0x40
    e = error_of(lambda: c.import_session(bytes(bad), "bad-import"))
    check(e is not None and e.code == api.ERROR_CODE_INVALID_ARGUMENT and "corrupt" in e.message,
          "%s: a damaged import -> %s" % (name, e))
    d = c.delete_session("s1-imported")
    e = error_of(lambda: c.get_session("s1-imported"))
    check(d.session_id == "s1-imported" and e is not None and e.code == api.ERROR_CODE_NOT_FOUND,
          "%s: DELETE, then GET -> %s" % (name, e))
    return conv + p3 + b


def layout_run(name, model, extra, work):
    """turns, ops (tp1), kill -9 + restart. Returns the session directory and the reference
    continuation for the cross-layout check."""
    d = os.path.join(work, "sessions-" + name)
    os.makedirs(d, exist_ok=True)
    s = Server(model, extra + ["--session-dir", d])
    with RecurClient(s.endpoint) as c:
        vocab = c.list_models()[0].n_vocab
        conv = check_turns(name, c, vocab, "s1")
        if name == "tp1":
            check_busy(name, c, s.endpoint, vocab)
            conv = check_ops(name, c, vocab, conv)
        # the reference: an uninterrupted copy's next turn, before the kill
        c.fork_session("s1", "s1-ref")
        p = prompt(8, vocab)
        ref, _ = turn(c, p, 10, "s1-ref")
    n = s.kill9()
    s = Server(model, extra + ["--session-dir", d])
    with RecurClient(s.endpoint) as c:
        info = c.get_session("s1")
        got, f = turn(c, p, 10, "s1")
        check(info.tier == api.SESSION_TIER_DISK and got == ref,
              "%s: kill -9 of serve and its %d worker processes, restart: the session continues as the uninterrupted "
              "copy did (%d tokens)" % (name, n - 1, len(got)))
        check(f.usage.cached_prompt_tokens == info.n_tokens - 1, "%s: after the restart turn 3 prefilled only its "
              "new tokens (cached %d)" % (name, f.usage.cached_prompt_tokens))
        p2 = prompt(9, vocab)
        c.fork_session("s1", "s1-xref")
        xref, _ = turn(c, p2, 10, "s1-xref")
    s.stop()
    return d, p2, xref, vocab


PEN = dict(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.3)


def check_tiers(work):
    # a conversation with sampling penalties on a server where it stays in its slot
    s = Server(TINY, [])
    with RecurClient(s.endpoint) as c:
        pen_ref = [turn(c, prompt(60 + k, 256), 8, "pen", **PEN)[0] for k in range(3)]
    s.stop()
    d = os.path.join(work, "tiers")
    os.makedirs(d)
    s = Server(TINY, ["--session-dir", d, "--slots", "3", "--session-slots", "1", "--session-host-bytes", "202752"])
    names = ["A", "B", "C", "D"]
    conv = {x: [] for x in names}
    ok, tiers = True, []
    with RecurClient(s.endpoint) as c:
        vocab = c.list_models()[0].n_vocab
        for rnd in range(3):
            for k, x in enumerate(names):
                p = prompt(10 * rnd + k, vocab)
                o, _ = turn(c, p, 6, x)
                w, _ = turn(c, conv[x] + p, 6)
                ok = ok and o == w
                conv[x] += p + o
                if rnd == 0 and k == 2:
                    tiers = [c.get_session(y).tier for y in "ABC"]
        check(ok, "tiers: 4 sessions x 3 turns over 2 slots: every turn == its whole conversation in one request")
        check(tiers == [api.SESSION_TIER_DISK, api.SESSION_TIER_HOST, api.SESSION_TIER_SLOT],
              "tiers: after A, B, C: A on disk, B in host memory, C in its slot (%s)" % tiers)
        pen, pen_tiers = [], []
        for k in range(3):   # other sessions' turns in between move "pen" out of its slot
            pen_tiers.append(c.get_session("pen").tier if k else None)
            pen.append(turn(c, prompt(60 + k, vocab), 8, "pen", **PEN)[0])
            for x in "ABC":
                o, _ = turn(c, prompt(70 + k, vocab), 2, x)
                conv[x] += prompt(70 + k, vocab) + o
        check(pen == pen_ref and api.SESSION_TIER_SLOT not in pen_tiers[1:],
              "tiers: turns with penalties moved between tiers (%s) == the same turns kept in a slot" % pen_tiers[1:])
        # damaged files: A's checkpoint (A is not in a slot or in host memory now)
        check(c.get_session("A").tier == api.SESSION_TIER_DISK, "tiers: A is on disk")
        man, shards = session_file(d, "A")
        keep = open(shards[0], "rb").read()
        bad = bytearray(keep)
        bad[len(bad) // 2] ^= 1
        open(shards[0], "wb").write(bytes(bad))
        e = error_of(lambda: turn(c, prompt(40, vocab), 4, "A"))
        check(e is not None and "corrupt" in e.message, "damaged: a flipped byte in a shard -> %s" % e)
        open(shards[0], "wb").write(keep[:-100])
        e = error_of(lambda: turn(c, prompt(40, vocab), 4, "A"))
        check(e is not None and "truncated" in e.message, "damaged: a truncated shard -> %s" % e)
        open(shards[0], "wb").write(keep)
        p = prompt(40, vocab)
        o, _ = turn(c, p, 4, "A")
        w, _ = turn(c, conv["A"] + p, 4)
        check(o == w, "damaged: with the file back the session continues exactly")
    s.stop()
    # another state dtype
    s = Server(TINY, ["--session-dir", d, "--state", "bf16"])
    with RecurClient(s.endpoint) as c:
        e = error_of(lambda: turn(c, prompt(41, vocab), 4, "B"))
        check(e is not None and "stored as f32" in e.message and "bf16" in e.message,
              "damaged: a server with bf16 states refuses the f32 checkpoint -> %s" % e)
        check(c.get_session("B").tier == api.SESSION_TIER_DISK, "damaged: the refused session is still there")
    s.stop()
    return d


def write_safetensors(path, tensors):
    header, blob = {}, b""
    for name, shape, vals in tensors:
        data = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)


def check_variant(work):
    L, H, N, C = 12, 1, 64, 64   # the tiny model
    vals = [[(((i * 2654435761 + l * 97) % 1000) / 1000.0 - 0.5) * 8 for i in range(H * N * N)] for l in range(L)]
    st = os.path.join(work, "tuned.safetensors")
    write_safetensors(st, [("blocks.%d.att.time_state" % l, [H, N, N], vals[l]) for l in range(L)])
    raw = os.path.join(work, "tuned.state")
    with open(raw, "wb") as f:   # the same state in the slot layout: ffn_x, att_x zero, then wkv
        for l in range(L):
            f.write(b"\0" * (8 * C) + struct.pack("<%df" % (H * N * N), *vals[l]))
    ids = [72, 101, 108, 108, 111, 32]
    ref = []
    for _ in range(6):   # greedy from --state-in, token by token
        out = os.path.join(work, "logits.f32")
        subprocess.run([BIN, "logits", "--model", TINY, "--tokens", ",".join(map(str, ids + ref)), "--out", out,
                        "--state-in", raw], check=True, capture_output=True)
        data = open(out, "rb").read()
        last = struct.unpack("<256f", data[-1024:])
        ref.append(max(range(256), key=lambda k: last[k]))
    s = Server(TINY, ["--state-variant", "tuned=" + st, "--served-model-name", "default"])
    with RecurClient(s.endpoint) as c:
        ms = [m.id for m in c.list_models()]
        check(ms == ["default", "default:tuned"], "variant: ListModels names it (%s)" % ms)
        got, _ = turn(c, ids, 6, None, temperature=0, model="default:tuned", ignore_eos=True)
        check(got == ref, "variant: greedy tokens from the state-tuning file == recur logits --state-in (%s)" % ref)
        # the tiny model's group norm after the wkv read-out leaves the initial state a small
        # effect on the logits (~0.1): seeded sampling shows it where greedy may not
        vs, _ = turn(c, ids, 24, None, temperature=1.0, top_p=1.0, seed=5, model="default:tuned", ignore_eos=True)
        ps, _ = turn(c, ids, 24, None, temperature=1.0, top_p=1.0, seed=5, ignore_eos=True)
        gen = subprocess.run([BIN, "generate", "--model", TINY, "--prompt", bytes(ids).decode(), "--state-in", raw,
                              "--temperature", "1", "--seed", "5", "--max-tokens", "24", "--ignore-eos"],
                             check=True, capture_output=True).stdout
        check(list(gen[:-1]) == vs, "variant: 24 tokens sampled with seed 5 == recur generate --state-in")
        check(vs != ps, "variant: the plain model samples other tokens with the same seed")
        c.create_session("tuned-chat", model="default:tuned")
        sgot, _ = turn(c, ids, 6, "tuned-chat", temperature=0, ignore_eos=True)
        check(sgot == ref and c.get_session("tuned-chat").model == "default:tuned",
              "variant: a session created on the variant starts from its state")
        e = error_of(lambda: turn(c, ids, 2, None, model="default:nope"))
        check(e is not None and e.code == api.ERROR_CODE_NOT_FOUND, "variant: an unknown variant -> %s" % e)
    s.stop()
    bad = os.path.join(work, "bad.safetensors")
    write_safetensors(bad, [("blocks.0.att.time_state", [H, N, N // 2], vals[0][:N * N // 2])])
    s = Server(TINY, ["--state-variant", "bad=" + bad, "--served-model-name", "default"])
    with RecurClient(s.endpoint) as c:
        time.sleep(0.3)
        e = error_of(lambda: turn(c, ids, 2, None, model="default:bad"))
        check(e is not None and "shape" in e.message, "variant: a file of the wrong shape -> %s" % e)
    s.stop()


def check_drain(work):
    d = os.path.join(work, "drain")
    s = Server(TINY, ["--session-dir", d])
    with RecurClient(s.endpoint) as c:
        p = prompt(50, 256)
        rid = c.start(p, max_tokens=300, session_id="dr", ignore_eos=True, **SAMPLING)
        it = c.stream(rid)
        toks = [next(it).id]
        s.p.send_signal(signal.SIGTERM)
        toks += [t.id for t in it]
        fr = c.last_final.finish_reason
    rc, _ = s.stop()
    check(len(toks) == 300 and fr == api.FINISH_REASON_LENGTH and rc == 0,
          "drain: SIGTERM during a turn: it finishes (%d tokens) and serve exits %s" % (len(toks), rc))
    s = Server(TINY, ["--session-dir", d])
    with RecurClient(s.endpoint) as c:
        info = c.get_session("dr")
        p2 = prompt(51, 256)
        o, _ = turn(c, p2, 8, "dr")
        w, _ = turn(c, p + toks + p2, 8)
        check(info.n_tokens == len(p) + 300 and info.saved_tokens == info.n_tokens and o == w,
              "drain: after the restart the session holds the whole turn (%d tokens) and continues exactly" %
              info.n_tokens)
    s.stop()


def check_worker_restart(work):
    d = os.path.join(work, "restart")
    s = Server(TINY, ["--session-dir", d, "--worker-timeout-ms", "3000"])
    with RecurClient(s.endpoint) as c:
        p1 = prompt(80, 256)
        o1, _ = turn(c, p1, 6, "wr")
        workers = descendants(s.p.pid)
        rid = c.start(prompt(81, 256), max_tokens=100000, session_id="wr", ignore_eos=True, **SAMPLING)
        it = c.stream(rid)
        next(it)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        e = None
        try:
            for _ in it:
                pass
        except (RecurError, TimeoutError) as x:
            e = x
        deadline = time.time() + 60
        while time.time() < deadline and c.health().status != api.SERVING_STATUS_SERVING:
            time.sleep(0.2)
        info = c.get_session("wr")
        p2 = prompt(82, 256)
        o2, _ = turn(c, p2, 6, "wr")
        w, _ = turn(c, p1 + o1 + p2, 6)
        check(isinstance(e, RecurError) and info.n_tokens == len(p1) + len(o1) and o2 == w,
              "worker group killed mid-turn and restarted: the turn ends with an error (%s), the session continues "
              "from its checkpoint exactly" % (e.message[:60] if isinstance(e, RecurError) else e))
    s.stop()


def check_prefix():
    system = "You are a terse helper. Reply in rhyme!\n"   # 40 tokens (bytes)
    qs = ["Q: cats? A:", "Q: dogs? A:", "Q: rain? A:", "Q: sun? A:", "Q: sea? A:", "Q: hills? A:", "Q: moon? A:",
          "Q: tea? A:"]
    assert len(system) == 40
    ref = {}
    for q in qs:
        ref[q] = list(subprocess.run([BIN, "generate", "--model", TINY, "--prompt", system + q, "--temperature", "0.8",
                                      "--top-p", "0.95", "--seed", "11", "--max-tokens", "12", "--ignore-eos"],
                                     check=True, capture_output=True).stdout[:-1])
    s = Server(TINY, ["--prefix-cache-entries", "4", "--prefix-cache-block", "8"])
    ids = {q: list((system + q).encode()) for q in qs}
    with RecurClient(s.endpoint) as c:
        got, cached = [], []
        for q in qs[:3]:
            o, f = turn(c, ids[q], 12, None, ignore_eos=True)
            got.append(o == ref[q])
            cached.append(f.usage.cached_prompt_tokens)
        check(all(got), "prefix cache: the first three prompts with a shared system prompt == recur generate")
        check(cached == [0, 0, 40], "prefix cache: the second captured the 40-token prefix, the third prefilled only "
              "its %d own tokens (cached %s)" % (len(ids[qs[2]]) - 40, cached))
        res = {}

        def one(q):
            with RecurClient(s.endpoint) as c2:
                res[q] = turn(c2, ids[q], 12, None, ignore_eos=True)

        th = [threading.Thread(target=one, args=(q,)) for q in qs[3:7]]
        for t in th:
            t.start()
        for t in th:
            t.join()
        check(all(res[q][0] == ref[q] and res[q][1].usage.cached_prompt_tokens == 40 for q in qs[3:7]),
              "prefix cache: 4 concurrent hits, each == recur generate, 40 tokens cached each")
        o1, f1 = turn(c, ids[qs[7]], 12, "pfx")
        o2, f2 = turn(c, [10, 65, 58], 8, "pfx")
        w, _ = turn(c, ids[qs[7]] + o1 + [10, 65, 58], 8)
        check(f1.usage.cached_prompt_tokens == 40 and o2 == w and f2.usage.cached_prompt_tokens == len(ids[qs[7]]) + 11,
              "prefix cache: a session's first turn starts from the cached prefix; its turn 2 == the whole conversation")
    s.stop()


def main():
    layouts = sys.argv[1:] or ["tp1"]
    work = tempfile.mkdtemp(prefix="recur-sessions-")
    mpi = {"tp2": ["--tp", "2"], "pp2": ["--pp", "2"]}
    runs = {}
    try:
        for name in layouts:
            model = TINY if name == "tp1" else SYNTH
            runs[name] = layout_run(name, model, mpi.get(name, []), work)
            if name == "tp1":
                check_tiers(work)
                check_variant(work)
                check_prefix()
                check_drain(work)
                check_worker_restart(work)
        # across layouts: each multi-rank layout's directory under the other one
        for a, b in [("tp2", "pp2"), ("pp2", "tp2")]:
            if a in runs and b in runs:
                d, p2, xref, vocab = runs[a]
                s = Server(SYNTH, mpi[b] + ["--session-dir", d])
                with RecurClient(s.endpoint) as c:
                    got, _ = turn(c, p2, 10, "s1")
                    check(got == xref, "saved under %s, loaded under %s: the same continuation" % (a, b))
                s.stop()
        other = [x for x in layouts if x != "tp1"]
        if "tp1" in runs and other:   # the tiny model's checkpoint where synth7 is served
            d3 = os.path.join(work, "foreign")
            os.makedirs(d3)
            man, shards = session_file(runs["tp1"][0], "s1")
            for f in [man] + shards:
                shutil.copy(f, d3)
            s = Server(SYNTH, mpi[other[0]] + ["--session-dir", d3])
            with RecurClient(s.endpoint) as c:
                e = error_of(lambda: turn(c, prompt(1, 64), 4, "s1"))
                check(e is not None and "another model" in e.message,
                      "a checkpoint of the tiny model where synth7 runs -> %s" % e)
            s.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("test_sessions: %s" % ("ok" if not check.fails else "%d failure(s)" % check.fails))
    return 1 if check.fails else 0


if __name__ == "__main__":
    sys.exit(main())
