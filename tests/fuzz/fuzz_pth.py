#!/usr/bin/env python3
"""A fuzzing loop for scripts/pth_to_safetensors.py (the .pth converter), standard library only.

    python3 tests/fuzz/fuzz_pth.py --seconds 60 [--seed N] [--crash-dir DIR]
    python3 tests/fuzz/fuzz_pth.py --replay FILE...       # rerun saved cases (or the corpus)

Each case is a mutation of a real torch.save file of tests/data (the edge-case checkpoint most
of the time, the tiny RWKV-7 ones sometimes) converted in-process with convert() and random
options (--dtype, --shard-size, --allow-variant). The mutations:
  pickle   data.pkl edited (byte flips, inserted/deleted/duplicated runs, and the integers of
           the pickle - shapes, strides, offsets, sizes - set to edge values), re-zipped with
           valid CRCs so the unpickler and the tensor checks see it;
  members  a member dropped, renamed, duplicated, truncated, extended or rewritten
           (byteorder, .format_version), re-zipped;
  raw      the zip file's own bytes flipped, overwritten or truncated (CRCs, headers).
A case passes when the converter either
  - converts: the output parses as safetensors (header JSON, dtypes, offsets tiling the data,
    the index naming every shard's tensors), or
  - refuses with ConvertError or zipfile.BadZipFile (the errors main() reports as such) or
    hits the output-size limit set here (OSError EFBIG), leaving no file behind.
Anything else is a finding: another exception type (main() would print it as a generic
"TypeName: message" line), a hang (30 s), MemoryError (the process is limited to 4 GiB: the
converter promises memory bounded by its chunks, not by what a small file claims), a
malformed output, or files left behind. Findings are saved as DIR/pth-<kind>-<sha1>.pth with
a .txt holding the traceback; the exit status is then 1.

The committed cases in tests/fuzz/corpus/pth/ (reproducers of fixed findings) are replayed
before the loop starts.
"""
import argparse
import errno
import hashlib
import importlib.util
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import types
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, 'tests', 'data')
CORPUS = os.path.join(HERE, 'corpus', 'pth')
SEEDS = [('pth-edge-cases.pth', 8), ('tiny7-blinkdl-bf16.pth', 1), ('tiny7-blinkdl-fp32.pth', 1)]
CASE_TIMEOUT_S = 30
MEMORY_LIMIT = 4 << 30
OUTPUT_LIMIT = 256 << 20
ST_SIZE = {'F32': 4, 'F16': 2, 'BF16': 2, 'F64': 8, 'I64': 8, 'I32': 4, 'I16': 2, 'I8': 1, 'U8': 1,
           'BOOL': 1}


def load_converter():
    spec = importlib.util.spec_from_file_location(
        'pth_to_safetensors', os.path.join(ROOT, 'scripts', 'pth_to_safetensors.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Hang(Exception):
    pass


class BadOutput(Exception):
    pass


# ----------------------------------------------------------------------------- mutations

def read_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip(members):
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as z:
        for name, b in members:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), b)
    return out.getvalue()


EDGE_INTS = [0, 1, 2, 3, 7, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 40,
             2 ** 62, -1, -2 ** 31]


def mutate_pickle_ints(rng, pkl):
    """Sets some pickle integer operands (BININT1 'K', BININT2 'M', BININT 'J', LONG1 0x8a) to
    edge values, keeping the opcode stream intact where the value fits its opcode."""
    b = bytearray(pkl)
    spots = [i for i in range(len(b) - 1) if b[i] in (0x4b, 0x4d, 0x4a, 0x8a)]
    for _ in range(rng.randint(1, 4)):
        if not spots:
            break
        i = rng.choice(spots)
        v = rng.choice(EDGE_INTS) if rng.random() < 0.7 else rng.randint(0, 4096)
        op = b[i]
        if op == 0x4b and i + 1 < len(b):
            b[i + 1] = v & 0xff
        elif op == 0x4d and i + 2 < len(b):
            b[i + 1:i + 3] = struct.pack('<H', v & 0xffff)
        elif op == 0x4a and i + 4 < len(b):
            b[i + 1:i + 5] = struct.pack('<i', ((v + 2 ** 31) % 2 ** 32) - 2 ** 31)
        elif op == 0x8a and i + 1 < len(b):
            n = b[i + 1]
            enc = v.to_bytes(max(1, (v.bit_length() + 8) // 8), 'little', signed=True)
            b[i + 1:i + 2 + n] = bytes([len(enc)]) + enc
    return bytes(b)


def mutate_bytes(rng, b, max_edits=4):
    b = bytearray(b)
    for _ in range(rng.randint(1, max_edits)):
        if not b:
            b += bytes([rng.randrange(256)])
            continue
        k = rng.randrange(6)
        i = rng.randrange(len(b))
        if k == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif k == 1:
            b[i] = rng.choice([0, 1, 0x7f, 0x80, 0xff, rng.randrange(256)])
        elif k == 2:
            del b[i:i + rng.randint(1, 16)]
        elif k == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif k == 4:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 32)]
        else:
            del b[i:]
    return bytes(b)


def mutate(rng, data):
    kind = rng.choices(['pickle-ints', 'pickle-bytes', 'members', 'raw'], [4, 3, 2, 1])[0]
    if kind == 'raw':
        return kind, mutate_bytes(rng, data, 3)
    members = read_members(data)
    pkl = next(i for i, (n, _) in enumerate(members) if n.endswith('/data.pkl'))
    if kind == 'pickle-ints':
        members[pkl] = (members[pkl][0], mutate_pickle_ints(rng, members[pkl][1]))
    elif kind == 'pickle-bytes':
        members[pkl] = (members[pkl][0], mutate_bytes(rng, members[pkl][1]))
    else:
        i = rng.randrange(len(members))
        name, b = members[i]
        prefix = members[pkl][0][:-len('data.pkl')]
        k = rng.randrange(7)
        if k == 0:
            del members[i]
        elif k == 1:
            members[i] = (rng.choice([name + 'x', name.upper(), prefix + 'data/' + str(rng.randrange(20)),
                                      'other/data.pkl', name.replace('/', '//')]), b)
        elif k == 2:
            members.append((name, b))
        elif k == 3:
            members[i] = (name, b[:rng.randrange(len(b) + 1)])
        elif k == 4:
            members[i] = (name, b + bytes(rng.randint(1, 64)))
        elif k == 5:
            members.append((prefix + 'byteorder', rng.choice([b'big', b'little', b'', b'\xff'])))
        else:
            members.append((prefix + '.format_version', rng.choice([b'1', b'2', b'99', b''])))
    return kind, write_zip(members)


# ----------------------------------------------------------------------------- checking the output

def check_safetensors(path):
    """Returns {name: (dtype, shape)} of a valid safetensors file; raises BadOutput otherwise."""
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 8:
        raise BadOutput('%s: shorter than 8 bytes' % path)
    n = struct.unpack('<Q', data[:8])[0]
    if n > len(data) - 8 or n % 8:
        raise BadOutput('%s: header length %d' % (path, n))
    try:
        h = json.loads(data[8:8 + n].decode('utf-8'))
    except ValueError as e:
        raise BadOutput('%s: header is not JSON: %s' % (path, e))
    spans, out = [], {}
    for name, v in h.items():
        if name == '__metadata__':
            if not all(isinstance(x, str) for x in v.values()):
                raise BadOutput('%s: metadata values must be strings' % path)
            continue
        dt, shape, (lo, hi) = v['dtype'], v['shape'], v['data_offsets']
        numel = 1
        for d in shape:
            if type(d) is not int or d < 0:
                raise BadOutput('%s: %s: shape %r' % (path, name, shape))
            numel *= d
        if dt not in ST_SIZE or hi - lo != numel * ST_SIZE[dt]:
            raise BadOutput('%s: %s: %s %r does not fill [%d, %d)' % (path, name, dt, shape, lo, hi))
        spans.append((lo, hi))
        out[name] = (dt, shape)
    pos = 0
    for lo, hi in sorted(spans):
        if lo != pos:
            raise BadOutput('%s: data not tiled at %d' % (path, pos))
        pos = hi
    if pos != len(data) - 8 - n:
        raise BadOutput('%s: tensors cover %d of %d data bytes' % (path, pos, len(data) - 8 - n))
    return out


def check_output(out, sharded):
    if not sharded:
        if not check_safetensors(out):
            raise BadOutput('no tensors written')
        return
    with open(os.path.join(out, 'model.safetensors.index.json')) as f:
        index = json.load(f)
    names = set()
    for fn in sorted(set(index['weight_map'].values())):
        t = check_safetensors(os.path.join(out, fn))
        names |= set(t)
        for name in t:
            if index['weight_map'].get(name) != fn:
                raise BadOutput('index puts %s elsewhere than %s' % (name, fn))
    if names != set(index['weight_map']):
        raise BadOutput('index and shards name different tensors')
    extra = set(os.listdir(out)) - set(index['weight_map'].values()) - {'model.safetensors.index.json'}
    if extra:
        raise BadOutput('stray files in the output directory: %s' % sorted(extra))


# ----------------------------------------------------------------------------- one case

def run_case(conv, data, opts, work):
    """Returns the outcome: 'converted', 'refused', 'output-limit'. Raises on a finding."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    src = os.path.join(work, 'in.pth')
    with open(src, 'wb') as f:
        f.write(data)
    out = os.path.join(work, 'out' if opts['shard_size'] else 'out.safetensors')
    args = types.SimpleNamespace(input=src, output=out, dtype=opts['dtype'], shard_size=opts['shard_size'],
                                 force=True, allow_variant=opts['allow_variant'], quiet=True)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        conv.convert(args, lambda msg: None)
        outcome = 'converted'
    except (conv.ConvertError, zipfile.BadZipFile):
        outcome = 'refused'
    except OSError as e:
        if e.errno != errno.EFBIG:
            raise
        outcome = 'output-limit'
    finally:
        signal.alarm(0)
    if outcome == 'converted':
        check_output(out, bool(opts['shard_size']))
    else:
        left = sorted(set(os.listdir(work)) - {'in.pth'})
        if left:
            raise BadOutput('after a refusal, files were left behind: %s' % left)
    return outcome


def random_opts(rng):
    return {'dtype': rng.choice(['keep', 'keep', 'f32', 'f16', 'bf16']),
            'shard_size': rng.choice([None, None, None, 1, 4096, 1 << 20]),
            'allow_variant': rng.random() < 0.7}


def finding_kind(e):
    if isinstance(e, Hang):
        return 'hang'
    if isinstance(e, BadOutput):
        return 'bad-output'
    return type(e).__name__


def save_finding(crash_dir, kind, data, opts, tb):
    os.makedirs(crash_dir, exist_ok=True)
    h = hashlib.sha1(data).hexdigest()
    base = os.path.join(crash_dir, 'pth-%s-%s' % (kind, h))
    with open(base + '.pth', 'wb') as f:
        f.write(data)
    with open(base + '.txt', 'w') as f:
        f.write('options: %s\n\n%s' % (json.dumps(opts), tb))
    return base + '.pth'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seconds', type=float, default=60)
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--crash-dir', default=os.path.join(ROOT, 'build-fuzz', 'crashes'))
    ap.add_argument('--replay', nargs='+', metavar='FILE')
    a = ap.parse_args()

    def on_alarm(signum, frame):
        raise Hang('one case ran for more than %d s' % CASE_TIMEOUT_S)
    warnings.filterwarnings('ignore', 'Duplicate name', UserWarning)   # mutations repeat members
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT, OUTPUT_LIMIT))

    seeds = []
    for name, weight in SEEDS:
        p = os.path.join(DATA, name)
        if os.path.exists(p):
            with open(p, 'rb') as f:
                seeds.append((f.read(), weight))
    if not seeds:
        print('fuzz_pth: no .pth fixtures in %s: skipped' % DATA)
        return 77
    conv = load_converter()
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), 'little')
    rng = random.Random(seed)
    counts, kinds, findings = {}, {}, []
    work = tempfile.mkdtemp(prefix='recur-fuzz-pth-')
    replay = a.replay or sorted(os.path.join(CORPUS, f) for f in os.listdir(CORPUS)
                                if f.endswith('.pth')) if (a.replay or os.path.isdir(CORPUS)) else []

    def one(data, opts, kind):
        try:
            outcome = run_case(conv, data, opts, work)
            counts[outcome] = counts.get(outcome, 0) + 1
        except Exception as e:      # noqa: BLE001 - every other exception is the finding
            fk = finding_kind(e)
            counts['finding'] = counts.get('finding', 0) + 1
            path = save_finding(a.crash_dir, fk, data, opts, traceback.format_exc())
            findings.append((fk, path))
            print('fuzz_pth: FINDING %s (%s mutation): %s: %s -> %s' % (fk, kind, type(e).__name__, e, path))

    t0 = time.monotonic()
    try:
        for p in replay:
            with open(p, 'rb') as f:
                data = f.read()
            opts_path = p[:-4] + '.json'
            opts = random_opts(random.Random(0))
            if os.path.exists(opts_path):
                with open(opts_path) as f:
                    opts.update(json.load(f))
            one(data, opts, 'replay')
        n = 0
        while not a.replay and time.monotonic() - t0 < a.seconds:
            base = rng.choices([s for s, _ in seeds], [w for _, w in seeds])[0]
            kind, data = mutate(rng, base)
            if rng.random() < 0.3:                    # stack a second mutation now and then
                try:
                    k2, data = mutate(rng, data)
                    kind += '+' + k2
                except Exception:   # noqa: BLE001 - the first one broke the zip beyond re-reading
                    pass
            kinds[kind.split('+')[0]] = kinds.get(kind.split('+')[0], 0) + 1
            one(data, random_opts(rng), kind)
            n += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(counts.values())
    print('fuzz_pth: seed %d, %d cases in %.0f s (%.1f/s; %d replayed): %s; mutations: %s'
          % (seed, total, time.monotonic() - t0, total / max(time.monotonic() - t0, 1e-9), len(replay),
             ', '.join('%s %d' % kv for kv in sorted(counts.items())),
             ', '.join('%s %d' % kv for kv in sorted(kinds.items()))))
    return 1 if findings else 0


if __name__ == '__main__':
    sys.exit(main())
