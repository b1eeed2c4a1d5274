#!/usr/bin/env python3
"""Tests for scripts/pth_to_safetensors.py (stdlib only; run by CTest).

    python3 tests/test_pth_converter.py [-v] [unittest args]

Environment: RECUR_SOURCE_DIR (repo root; default: this file's ../), RECUR_FIXTURES_DIR (shared
fixtures; default <repo>/../shared/fixtures), RECUR_BIN (optional `recur` binary for the logits
comparison). Exit: 0 all passed, 1 a failure, 77 when the torch-made fixtures in tests/data or
the shared tiny7 .bin are missing (everything that could run still ran and passed).

Two sources of .pth files:
- tests/data/*.pth, made by real torch with scripts/make_pth_fixtures.py;
- .pth-like zips written here by hand (FakeTorch below): the same pickle opcodes torch.save
  emits (GLOBAL torch._utils _rebuild_tensor_v2, persistent ids ('storage', torch.XStorage,
  key, 'cpu', numel)), so the converter is fully exercised without torch.
"""
import collections
import contextlib
import io
import json
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import types
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get('RECUR_SOURCE_DIR') or os.path.dirname(HERE)
CONV = os.path.join(SRC, 'scripts', 'pth_to_safetensors.py')
DATA = os.path.join(SRC, 'tests', 'data')
FIX = os.environ.get('RECUR_FIXTURES_DIR') or os.path.join(SRC, '..', 'shared', 'fixtures')
TINY_BIN = os.path.join(FIX, 'rwkv7', 'tiny-rwkv-7v0-834K-FP32.bin')
PTH_FP32 = os.path.join(DATA, 'tiny7-blinkdl-fp32.pth')
PTH_BF16 = os.path.join(DATA, 'tiny7-blinkdl-bf16.pth')
PTH_EDGE = os.path.join(DATA, 'pth-edge-cases.pth')
EDGE_JSON = os.path.join(DATA, 'pth-edge-cases.json')
HAVE_TORCH_FIXTURES = all(os.path.exists(p) for p in (PTH_FP32, PTH_BF16, PTH_EDGE, EDGE_JSON))
HAVE_BIN = os.path.exists(TINY_BIN)
LORA = ('w1', 'w2', 'a1', 'a2', 'v1', 'v2', 'g1', 'g2')
ITEMSIZE = {'F32': 4, 'F16': 2, 'BF16': 2, 'F64': 8}


# ----------------------------------------------------------------------------- independent helpers

def readb(path):
    with open(path, 'rb') as f:
        return f.read()


def prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def read_bin(path):
    """rwkv.cpp .bin -> OrderedDict name -> (shape, f32 LE bytes). FP32 files only."""
    d = readb(path)
    magic, ver = struct.unpack_from('<2i', d, 0)
    assert magic == 0x67676d66 and ver in (100, 101)
    off, out = 24, collections.OrderedDict()
    while off < len(d):
        nd, klen, dt = struct.unpack_from('<3i', d, off)
        off += 12
        ne = struct.unpack_from('<%di' % nd, d, off)
        off += 4 * nd
        key = d[off:off + klen].decode()
        off += klen
        assert dt == 0, 'fp32 .bin expected'
        n = prod(ne)
        out[key] = (tuple(reversed(ne)), d[off:off + 4 * n])
        off += 4 * n
    return out


def transpose2d(b, rows, cols, isz):
    """Row-major [rows, cols] -> [cols, rows]."""
    out = bytearray(len(b))
    for r in range(rows):
        for c in range(cols):
            o = (c * rows + r) * isz
            i = (r * cols + c) * isz
            out[o:o + isz] = b[i:i + isz]
    return bytes(out)


def bin_to_blinkdl(binT):
    """The .bin layout mapped back to BlinkDL names/shapes: name -> (shape, f32 bytes)."""
    out = collections.OrderedDict()
    for k, (shape, b) in binT.items():
        leaf = k.rsplit('.', 1)[-1]
        if k.endswith('.att.x_rwkvag'):
            base = k[:-len('x_rwkvag')]
            C = shape[2]
            for i, n in enumerate('rwkvag'):
                out[base + 'x_' + n] = ((1, 1, C), b[i * 4 * C:(i + 1) * 4 * C])
        elif '.att.' in k and leaf in LORA:
            r, c = shape
            out[k] = ((c, r), transpose2d(b, r, c, 4))
        else:
            out[k] = (shape, b)
    return out


def read_safetensors(path, tc=None):
    """Independent reader with structural checks. Returns (metadata, OrderedDict name->(dtype, shape, bytes))
    in file (data) order."""
    d = readb(path)
    (n,) = struct.unpack_from('<Q', d, 0)
    assert (8 + n) % 8 == 0, 'header not padded to 8 bytes'
    hb = d[8:8 + n]
    assert hb.rstrip(b' ') == hb.rstrip(b' ').rstrip() and hb.startswith(b'{')
    h = json.loads(hb.decode('utf-8'))
    meta = h.pop('__metadata__', None)
    data = d[8 + n:]
    items = sorted(h.items(), key=lambda kv: kv[1]['data_offsets'][0])
    pos = 0
    out = collections.OrderedDict()
    for k, v in items:
        b, e = v['data_offsets']
        assert b == pos, 'hole or overlap before %s' % k
        isz = ITEMSIZE[v['dtype']]
        assert e - b == prod(v['shape']) * isz, 'size mismatch for %s' % k
        out[k] = (v['dtype'], tuple(v['shape']), data[b:e])
        pos = e
    assert pos == len(data), 'trailing bytes after the last tensor'
    return meta, out


def f32_bits(b):
    return struct.unpack('<%dI' % (len(b) // 4), b)


def bf16_rne_ref(b):
    """Per-element reference float32 -> bfloat16 (round to nearest even, NaN -> 0x7FC0)."""
    out = []
    for u in f32_bits(b):
        if (u & 0x7FFFFFFF) > 0x7F800000:
            out.append(0x7FC0)
        else:
            out.append(((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF)
    return struct.pack('<%dH' % len(out), *out)


def bf16_to_f32_ref(b):
    hs = struct.unpack('<%dH' % (len(b) // 2), b)
    return struct.pack('<%dI' % len(hs), *[h << 16 for h in hs])


def f16_ref(floats):
    out = bytearray()
    for x in floats:
        try:
            out += struct.pack('<e', x)
        except OverflowError:
            out += struct.pack('<e', math.copysign(math.inf, x))
    return bytes(out)


def f32_floats(b):
    return struct.unpack('<%df' % (len(b) // 4), b)


# ----------------------------------------------------------------------------- fake torch.save

class FakeTorch:
    """Module objects named like torch's, so pickle emits torch's GLOBAL opcodes."""
    STORAGES = ('FloatStorage', 'HalfStorage', 'BFloat16Storage', 'DoubleStorage', 'LongStorage',
                'IntStorage', 'BoolStorage', 'ByteStorage', 'ComplexFloatStorage')

    def __init__(self):
        self.mods = {n: types.ModuleType(n) for n in ('torch', 'torch._utils', 'torch._tensor')}

        def fn(mod, name):
            def f(*a):
                raise AssertionError('never called')
            f.__module__, f.__name__, f.__qualname__ = mod, name, name
            setattr(self.mods[mod], name, f)
            return f
        self.rebuild_v2 = fn('torch._utils', '_rebuild_tensor_v2')
        self.rebuild_param = fn('torch._utils', '_rebuild_parameter')
        self.rebuild_from_type = fn('torch._tensor', '_rebuild_from_type_v2')
        self.storage_cls = {}
        for n in self.STORAGES + ('Tensor',):
            c = type(n, (), {})
            c.__module__, c.__qualname__ = 'torch', n
            setattr(self.mods['torch'], n, c)
            self.storage_cls[n] = c

    @contextlib.contextmanager
    def installed(self):
        saved = {n: sys.modules.get(n) for n in self.mods}
        sys.modules.update(self.mods)
        try:
            yield
        finally:
            for n, m in saved.items():
                if m is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = m


FAKE = FakeTorch()
SCODE = {'F32': ('FloatStorage', 4), 'F16': ('HalfStorage', 2), 'BF16': ('BFloat16Storage', 2),
         'F64': ('DoubleStorage', 8), 'I64': ('LongStorage', 8), 'BOOL': ('BoolStorage', 1),
         'C64': ('ComplexFloatStorage', 8)}


class S:
    """A storage: raw bytes of a given dtype."""
    def __init__(self, key, dtype, data, numel=None):
        self.key, self.dtype, self.data = key, dtype, data
        self.numel = len(data) // SCODE[dtype][1] if numel is None else numel


class T:
    """A tensor view of a storage, pickled the way torch.Tensor.__reduce_ex__ does."""
    def __init__(self, storage, shape, stride=None, offset=0, param=False, from_type=False):
        if stride is None:
            stride, acc = [], 1
            for s in reversed(shape):
                stride.insert(0, acc)
                acc *= s
        self.storage, self.shape, self.stride, self.offset = storage, tuple(shape), tuple(stride), offset
        self.param, self.from_type = param, from_type

    def __reduce_ex__(self, proto):
        args = (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict())
        if self.param:
            plain = T(self.storage, self.shape, self.stride, self.offset)
            return (FAKE.rebuild_param, (plain, True, collections.OrderedDict()))
        if self.from_type:
            return (FAKE.rebuild_from_type, (FAKE.rebuild_v2, FAKE.storage_cls['Tensor'], args, {}))
        return (FAKE.rebuild_v2, args)


class FakePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, S):
            return ('storage', FAKE.storage_cls[SCODE[obj.dtype][0]], obj.key, 'cpu', obj.numel)
        return None


def pickle_state(obj, protocol=2):
    buf = io.BytesIO()
    with FAKE.installed():
        FakePickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def collect_storages(obj, acc):
    if isinstance(obj, dict):
        for v in obj.values():
            collect_storages(v, acc)
    elif isinstance(obj, T):
        acc[obj.storage.key] = obj.storage
    return acc


def write_zip(path, pkl, storages, archive='archive', byteorder='little', drop=(), truncate=(),
              compression=zipfile.ZIP_STORED):
    """A torch.save-like zip. storages: {key: bytes}."""
    with zipfile.ZipFile(path, 'w', compression) as z:
        z.writestr(archive + '/data.pkl', pkl)
        if byteorder is not None:
            z.writestr(archive + '/byteorder', byteorder)
        for k, b in storages.items():
            if k in drop:
                continue
            z.writestr('%s/data/%s' % (archive, k), b[:len(b) // 2] if k in truncate else b)
        z.writestr(archive + '/version', '3\n')
        z.writestr(archive + '/.data/serialization_id', '0123456789')


def write_pth(path, top, **kw):
    st = collect_storages(top, {})
    write_zip(path, pickle_state(top), {k: s.data for k, s in st.items()}, **kw)


def f32b(vals):
    return struct.pack('<%df' % len(vals), *vals)


def hand_tiny7(binT, dtype):
    """A BlinkDL-layout state dict of the tiny model made by hand: one storage per tensor."""
    sd = {}
    for i, (k, (shape, b)) in enumerate(bin_to_blinkdl(binT).items()):
        if dtype == 'BF16':
            b = bf16_rne_ref(b)
        sd[k] = T(S(str(i), dtype, b), shape)
    return sd


# ----------------------------------------------------------------------------- test base

class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='recur-pth-test-')

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def p(self, name):
        return os.path.join(self.tmp, name)

    def conv(self, *args, ok=True):
        r = subprocess.run([sys.executable, CONV] + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        if ok:
            self.assertEqual(r.returncode, 0, 'converter failed: %s' % r.stderr)
        return r

    def assert_rejected(self, inp, *extra, msg=None):
        out = self.p('rejected.safetensors')
        before = set(os.listdir(self.tmp))
        r = self.conv(inp, out, *extra, ok=False)
        self.assertNotEqual(r.returncode, 0, 'expected failure; stdout=%s' % r.stdout)
        self.assertNotIn('Traceback', r.stderr)
        self.assertIn(os.path.basename(inp), r.stderr)
        if msg:
            self.assertIn(msg, r.stderr)
        self.assertFalse(os.path.exists(out), 'output left behind')
        self.assertEqual(set(os.listdir(self.tmp)), before, 'temporary files left behind')
        return r

    def check_against_bin(self, tensors, dtype_map):
        """tensors from read_safetensors; dtype_map(f32 bytes) -> (expected dtype, expected bytes)."""
        exp = bin_to_blinkdl(read_bin(TINY_BIN))
        self.assertEqual(sorted(tensors), sorted(exp))
        self.assertEqual(list(tensors), sorted(exp), 'data not in name order')
        for k, (shape, b) in exp.items():
            dt, shp, data = tensors[k]
            edt, eb = dtype_map(b)
            self.assertEqual((dt, shp), (edt, shape), k)
            self.assertTrue(data == eb, 'tensor %s differs' % k)


# ----------------------------------------------------------------------------- real torch fixtures

@unittest.skipUnless(HAVE_TORCH_FIXTURES and HAVE_BIN, 'torch-made fixtures or tiny7 .bin missing')
class TorchFixtures(Base):
    def test_fp32_keep_bit_exact(self):
        out = self.p('t.safetensors')
        self.conv(PTH_FP32, out)
        meta, t = read_safetensors(out)
        self.assertEqual(meta, {'format': 'pt', 'source': 'tiny7-blinkdl-fp32.pth',
                                'converter': 'recur pth_to_safetensors 1'})
        self.check_against_bin(t, lambda b: ('F32', b))

    def test_bf16_keep(self):
        out = self.p('t.safetensors')
        self.conv(PTH_BF16, out)
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('BF16', bf16_rne_ref(b)))

    def test_fp32_to_bf16_matches_torch_cast(self):
        out = self.p('t.safetensors')
        self.conv(PTH_FP32, out, '--dtype', 'bf16')
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('BF16', bf16_rne_ref(b)))
        out2 = self.p('u.safetensors')
        self.conv(PTH_BF16, out2)
        _, u = read_safetensors(out2)
        self.assertEqual(t, u)          # our rounding == torch's .to(bfloat16)

    def test_bf16_to_f32_and_f16(self):
        out = self.p('t.safetensors')
        self.conv(PTH_BF16, out, '--dtype', 'f32')
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('F32', bf16_to_f32_ref(bf16_rne_ref(b))))
        out = self.p('h.safetensors')
        self.conv(PTH_FP32, out, '--dtype', 'f16')
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('F16', f16_ref(f32_floats(b))))

    def test_sharded(self):
        single, d = self.p('one.safetensors'), self.p('shards')
        self.conv(PTH_FP32, single)
        self.conv(PTH_FP32, d, '--shard-size', '1MB')
        _, one = read_safetensors(single)
        idx = json.loads(readb(os.path.join(d, 'model.safetensors.index.json')))
        files = sorted(set(idx['weight_map'].values()))
        self.assertGreaterEqual(len(files), 3)
        self.assertEqual(sorted(os.listdir(d)), sorted(files + ['model.safetensors.index.json']))
        self.assertEqual(set(idx['weight_map']), set(one))
        merged = {}
        for i, fn in enumerate(files):
            self.assertEqual(fn, 'model-%05d-of-%05d.safetensors' % (i + 1, len(files)))
            _, t = read_safetensors(os.path.join(d, fn))
            self.assertLessEqual(sum(len(v[2]) for v in t.values()), 1000000)
            for k in t:
                self.assertEqual(idx['weight_map'][k], fn)
            merged.update(t)
        self.assertEqual(merged, dict(one))
        self.assertEqual(idx['metadata']['total_size'], sum(len(v[2]) for v in one.values()))

    def test_edge_cases_match_sidecar(self):
        exp = json.loads(readb(EDGE_JSON))
        out = self.p('e.safetensors')
        r = self.conv(PTH_EDGE, out)
        for k in exp['skipped']:
            self.assertIn(k, r.stderr)              # warned about
        self.assertIn('does not look like an RWKV-7', r.stderr)
        _, t = read_safetensors(out)
        self.assertEqual(sorted(t), sorted(exp['tensors']))
        fmt = {'F32': 'f', 'F16': 'e', 'F64': 'd'}
        for k, e in exp['tensors'].items():
            dt, shape, data = t[k]
            self.assertEqual(dt, e['dtype'], k)
            self.assertEqual(list(shape), e['shape'], k)
            if dt == 'BF16':
                eb = bf16_rne_ref(f32b(e['values']))
                self.assertEqual(bf16_to_f32_ref(eb), f32b(e['values']), 'not exact bf16: ' + k)
            else:
                eb = struct.pack('<%d%s' % (len(e['values']), fmt[dt]), *e['values'])
            self.assertEqual(data, eb, k)

    def test_edge_cases_to_f32(self):
        exp = json.loads(readb(EDGE_JSON))
        out = self.p('e.safetensors')
        self.conv(PTH_EDGE, out, '--dtype', 'f32')
        _, t = read_safetensors(out)
        for k, e in exp['tensors'].items():
            self.assertEqual(t[k][0], 'F32')
            got = f32_floats(t[k][2])
            want = struct.unpack('<%df' % len(e['values']), f32b_clamped(e['values']))
            self.assertEqual(struct.pack('<%df' % len(got), *got),
                             struct.pack('<%df' % len(want), *want), k)


def f32b_clamped(vals):
    out = []
    for v in vals:
        try:
            out.append(struct.pack('<f', v))
        except OverflowError:
            out.append(struct.pack('<f', math.copysign(math.inf, v)))
    return b''.join(out)


# ----------------------------------------------------------------------------- hand-made tiny7

@unittest.skipUnless(HAVE_BIN, 'tiny7 .bin missing (RECUR_FIXTURES_DIR)')
class HandMadeTiny7(Base):
    @classmethod
    def setUpClass(cls):
        cls.binT = read_bin(TINY_BIN)

    def make(self, dtype='F32', name='hand.pth', **kw):
        path = self.p(name)
        write_pth(path, hand_tiny7(self.binT, dtype), **kw)
        return path

    def test_fp32(self):
        out = self.p('t.safetensors')
        r = self.conv(self.make(), out)
        self.assertEqual(r.stderr, '')
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('F32', b))

    def test_bf16_and_widen(self):
        src = self.make('BF16')
        out = self.p('t.safetensors')
        self.conv(src, out)
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('BF16', bf16_rne_ref(b)))
        out = self.p('w.safetensors')
        self.conv(src, out, '--dtype', 'f32')
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('F32', bf16_to_f32_ref(bf16_rne_ref(b))))

    def test_dtype_bf16_f16(self):
        src = self.make()
        out = self.p('b.safetensors')
        self.conv(src, out, '--dtype', 'bf16')
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('BF16', bf16_rne_ref(b)))
        out = self.p('h.safetensors')
        self.conv(src, out, '--dtype', 'f16')
        _, t = read_safetensors(out)
        self.check_against_bin(t, lambda b: ('F16', f16_ref(f32_floats(b))))

    def test_shards_and_size_spellings(self):
        src = self.make()
        _, one = read_safetensors(self.conv_single(src))
        for spelling in ('1e6', '1MB', '1000000', '0.9765625MiB'):
            d = self.p('sh-' + spelling)
            self.conv(src, d, '--shard-size', spelling)
            idx = json.loads(readb(os.path.join(d, 'model.safetensors.index.json')))
            self.assertEqual(set(idx['weight_map']), set(one))
            files = sorted(set(idx['weight_map'].values()))
            self.assertEqual(len(files), 4)       # 3.33 MB of data in <= 1 MB shards
            merged = {}
            for fn in files:
                merged.update(read_safetensors(os.path.join(d, fn))[1])
            self.assertEqual(merged, dict(one))
        # one shard when the limit is large
        d = self.p('sh-big')
        self.conv(src, d, '--shard-size', '2GB')
        self.assertEqual(sorted(os.listdir(d)),
                         ['model-00001-of-00001.safetensors', 'model.safetensors.index.json'])
        # existing directory: refused without --force, replaced with it
        r = self.conv(src, d, '--shard-size', '1e6', ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(os.listdir(d)), 2)
        self.conv(src, d, '--shard-size', '1e6', '--force')
        self.assertEqual(len(os.listdir(d)), 5)
        self.assertEqual([n for n in os.listdir(self.tmp) if n.startswith('.')], [])

    def conv_single(self, src):
        out = self.p('single.safetensors')
        if not os.path.exists(out):
            self.conv(src, out)
        return out

    def test_variant_7a_rejected(self):
        sd = hand_tiny7(self.binT, 'F32')
        sd['blocks.0.ffn.s_emb.weight'] = T(S('x1', 'F32', f32b([0.0] * 8)), (2, 4))
        sd['blocks.0.ffn.s1'] = T(S('x2', 'F32', f32b([0.0] * 8)), (4, 2))
        path = self.p('v7a.pth')
        write_pth(path, sd)
        self.assert_rejected(path, msg='DeepEmbed')
        out = self.p('ok.safetensors')
        r = self.conv(path, out, '--allow-variant')
        self.assertIn('warning', r.stderr)
        self.assertIn('blocks.0.ffn.s_emb.weight', read_safetensors(out)[1])

    def test_variant_7b_rejected(self):
        sd = hand_tiny7(self.binT, 'F32')
        sd['blocks.3.qkv.qq.weight'] = T(S('x1', 'F32', f32b([0.0] * 8)), (2, 4))
        path = self.p('v7b.pth')
        write_pth(path, sd)
        self.assert_rejected(path, msg='DEA')

    def test_wrapped_state_dict(self):
        for key in ('state_dict', 'model'):
            path = self.p('w-%s.pth' % key)
            write_pth(path, {key: hand_tiny7(self.binT, 'F32'), 'epoch': 3})
            out = self.p('w-%s.safetensors' % key)
            self.conv(path, out)
            self.check_against_bin(read_safetensors(out)[1], lambda b: ('F32', b))

    @unittest.skipUnless(os.environ.get('RECUR_BIN') and os.path.exists(os.environ['RECUR_BIN']),
                         'RECUR_BIN not set or missing')
    def test_recur_logits_match_bin(self):
        recur = os.environ['RECUR_BIN']

        def logits(model, tag):
            f = self.p('logits-%s.f32' % tag)
            r = subprocess.run([recur, 'logits', '--model', model, '--tokens', '34,105,110',
                                '--out', f], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=240)
            return r, f
        r, fb = logits(TINY_BIN, 'bin')
        if r.returncode != 0:
            self.skipTest('`recur logits` does not run on the .bin yet: %s' % r.stderr.strip()[-300:])
        ref = f32_floats(readb(fb))
        self.assertGreater(len(ref), 0)
        cases = [('F32', 1e-5, None), ('BF16', 0.5, 'bf16')]
        if HAVE_TORCH_FIXTURES:
            cases += [('torch-F32', 1e-5, PTH_FP32), ('torch-BF16', 0.5, PTH_BF16)]
        cases += [('sharded-dir', 1e-5, 'shard'), ('sharded-index', 1e-5, 'index')]
        for tag, tol, src in cases:
            st = self.p(tag + '.safetensors')
            if src in ('shard', 'index'):
                st = self.p(tag)
                self.conv(self.make(name=tag + '.pth'), st, '--shard-size', '1MB')
                if src == 'index':
                    st = os.path.join(st, 'model.safetensors.index.json')
            else:
                if src is None or src == 'bf16':
                    src = self.make('F32' if src is None else 'BF16', name=tag + '.pth')
                self.conv(src, st)
            r, fs = logits(st, tag)
            self.assertEqual(r.returncode, 0, '%s: recur logits failed: %s' % (tag, r.stderr))
            got = f32_floats(readb(fs))
            self.assertEqual(len(got), len(ref), tag)
            diff = max(abs(a - b) for a, b in zip(got, ref))
            self.assertLessEqual(diff, tol, '%s: max |diff| %g' % (tag, diff))
            V = 256 if len(ref) % 256 == 0 else len(ref)
            for i in range(0, len(ref), V):
                rows = ref[i:i + V], got[i:i + V]
                self.assertEqual(rows[0].index(max(rows[0])), rows[1].index(max(rows[1])), tag)


# ----------------------------------------------------------------------------- hand-made edge cases

class HandMadeEdgeCases(Base):
    def test_views_offsets_shared_scalar_dtypes(self):
        mat = S('0', 'F32', f32b([i * 0.25 - 1 for i in range(12)]))           # 3x4
        big = S('1', 'F32', f32b([0.5 + i * 0.125 for i in range(10)]))
        half_vals = [1.5, -2.25, 65504.0, 6.103515625e-05, 5.960464477539063e-08, -0.0]
        half = S('2', 'F16', struct.pack('<6e', *half_vals))
        bfv = [1.0078125, -256.0, 0.5, 2.0 ** 100, -3.0, 2.0 ** -130, 7.0, 0.010009765625]
        bf = S('3', 'BF16', bf16_rne_ref(f32b(bfv)))
        cube = S('4', 'F32', f32b([i * 0.5 - 4 for i in range(24)]))
        f64 = S('5', 'F64', struct.pack('<3d', 0.1, -2.5, 1e300))
        ex = S('6', 'F32', f32b([1.25, -0.75]))
        step = S('7', 'I64', struct.pack('<q', 7))
        sd = collections.OrderedDict([
            ('mat', T(mat, (3, 4))),
            ('mat_t', T(mat, (4, 3), (1, 4))),
            ('mat_slice', T(mat, (2, 2), (4, 1), offset=5)),
            ('vec_every_other', T(big, (5,), (2,), offset=1)),
            ('vec_slice', T(big, (4,), offset=3)),
            ('scalar', T(S('8', 'F32', f32b([3.5])), ())),
            ('half', T(half, (2, 3))),
            ('half_t', T(half, (3, 2), (1, 3))),
            ('bf16_cube', T(bf, (2, 2, 2))),
            ('bf16_cube_perm', T(bf, (2, 2, 2), (1, 4, 2))),
            ('cube', T(cube, (2, 3, 4))),
            ('cube_perm', T(cube, (3, 2, 3), (1, 12, 4), offset=1)),
            ('f64', T(f64, (3,))),
            ('expanded', T(ex, (2, 3), (1, 0))),
            ('param', T(S('9', 'F32', f32b([2.0, -4.0])), (1, 2), param=True)),
            ('subclassed', T(S('10', 'F32', f32b([9.0])), (1,), from_type=True)),
            ('empty', T(S('11', 'F32', b''), (0, 3))),
            ('step', T(step, ())),
        ])
        path = self.p('edge.pth')
        write_pth(path, {'model': sd})
        out = self.p('edge.safetensors')
        r = self.conv(path, out)
        self.assertIn("'step'", r.stderr)
        _, t = read_safetensors(out)
        M = [i * 0.25 - 1 for i in range(12)]
        B = [0.5 + i * 0.125 for i in range(10)]
        C = [i * 0.5 - 4 for i in range(24)]
        bfb = bf16_rne_ref(f32b(bfv))
        bh = [bfb[2 * i:2 * i + 2] for i in range(8)]
        hh = [struct.pack('<e', v) for v in half_vals]
        expect = {
            'mat': ('F32', (3, 4), f32b(M)),
            'mat_t': ('F32', (4, 3), f32b([M[r * 4 + c] for c in range(4) for r in range(3)])),
            'mat_slice': ('F32', (2, 2), f32b([M[5], M[6], M[9], M[10]])),
            'vec_every_other': ('F32', (5,), f32b(B[1::2])),
            'vec_slice': ('F32', (4,), f32b(B[3:7])),
            'scalar': ('F32', (), f32b([3.5])),
            'half': ('F16', (2, 3), b''.join(hh)),
            'half_t': ('F16', (3, 2), b''.join(hh[r * 3 + c] for c in range(3) for r in range(2))),
            'bf16_cube': ('BF16', (2, 2, 2), bfb),
            'bf16_cube_perm': ('BF16', (2, 2, 2),
                               b''.join(bh[i * 1 + j * 4 + k * 2] for i in range(2)
                                        for j in range(2) for k in range(2))),
            'cube': ('F32', (2, 3, 4), f32b(C)),
            'cube_perm': ('F32', (3, 2, 3), f32b([C[1 + i + j * 12 + k * 4] for i in range(3)
                                                 for j in range(2) for k in range(3)])),
            'f64': ('F64', (3,), struct.pack('<3d', 0.1, -2.5, 1e300)),
            'expanded': ('F32', (2, 3), f32b([1.25] * 3 + [-0.75] * 3)),
            'param': ('F32', (1, 2), f32b([2.0, -4.0])),
            'subclassed': ('F32', (1,), f32b([9.0])),
            'empty': ('F32', (0, 3), b''),
        }
        self.assertEqual(dict(t), expect)
        self.assertEqual(list(t), sorted(expect))
        # f32 output: f64 1e300 -> inf, f16/bf16 widened exactly
        out = self.p('edge32.safetensors')
        self.conv(path, out, '--dtype', 'f32')
        _, t = read_safetensors(out)
        self.assertEqual(t['f64'][2], f32b([0.1, -2.5]) + struct.pack('<f', math.inf))
        self.assertEqual(t['half'][2], f32b(half_vals))
        self.assertEqual(t['bf16_cube'][2], bf16_to_f32_ref(bfb))
        self.assertEqual(t['mat_t'][2], expect['mat_t'][2])

    def test_f32_to_bf16_and_f16_special_values(self):
        bits = [0x00000000, 0x80000000, 0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001,
                0x3F80FFFF, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
                0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF, 0x00000001,
                0x00008000, 0x00018000, 0x807FFFFF, 0x477FE000, 0x477FF000, 0x477FEFFF,
                0x33800000, 0x33000001, 0xC77FF000, 0x387FC000]
        raw = struct.pack('<%dI' % len(bits), *bits)
        path = self.p('special.pth')
        write_pth(path, {'x': T(S('0', 'F32', raw), (len(bits),))})
        out = self.p('b.safetensors')
        self.conv(path, out, '--dtype', 'bf16')
        got = read_safetensors(out)[1]['x'][2]
        self.assertEqual(got, bf16_rne_ref(raw))
        self.assertEqual(struct.unpack('<4H', got[6:14]), (0x3F80, 0x3F82, 0x3F81, 0x3F81))
        out = self.p('h.safetensors')
        self.conv(path, out, '--dtype', 'f16')
        got = read_safetensors(out)[1]['x'][2]
        vals = f32_floats(raw)
        hs = struct.unpack('<%dH' % len(bits), got)
        for v, h, want in zip(vals, hs, struct.unpack('<%dH' % len(bits), f16_ref(vals))):
            if math.isnan(v):
                self.assertEqual(h & 0x7C00, 0x7C00)
                self.assertNotEqual(h & 0x3FF, 0)
            else:
                self.assertEqual(h, want, v)

    def test_deflated_members_and_many_views(self):
        # torch never compresses, but a re-zipped checkpoint might: the zipfile fallback path
        vals = [i * 0.5 for i in range(4096)]
        flat = S('0', 'F32', f32b(vals))
        sd = collections.OrderedDict(('p%03d' % i, T(flat, (2, 4), (4, 1), offset=16 * i))
                                     for i in range(256))
        sd['flat_t'] = T(flat, (64, 64), (1, 64))
        for comp in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            path = self.p('views-%d.pth' % comp)
            write_pth(path, sd, compression=comp)
            out = self.p('views-%d.safetensors' % comp)
            self.conv(path, out)
            t = read_safetensors(out)[1]
            for i in range(256):
                self.assertEqual(t['p%03d' % i][2], f32b(vals[16 * i:16 * i + 8]))
            self.assertEqual(t['flat_t'][2], transpose2d(f32b(vals), 64, 64, 4))
        # many slices of one large storage must not re-read the storage from its start each time
        import time
        big = S('0', 'F32', bytes(4 * (1 << 22)))
        sd = {'s%03d' % i: T(big, (1024,), offset=(i + 1) * 16000) for i in range(200)}
        path = self.p('slices.pth')
        write_pth(path, sd)
        t0 = time.time()
        self.conv(path, self.p('slices.safetensors'))
        self.assertLess(time.time() - t0, 20)

    def test_big_chunks(self):
        # more than one conversion chunk (4M elements) for the streaming path, and a big transposed view
        import random
        rnd = random.Random(1)
        n = (1 << 22) + 12345
        raw = bytes(rnd.getrandbits(8) for _ in range(64)) * (n * 4 // 64) + b'\x00' * (n * 4 % 64)
        raw = bytes(raw)
        rows, cols = 1000, 700
        mat = f32b([rnd.uniform(-2, 2) for _ in range(rows * cols)])
        path = self.p('big.pth')
        write_pth(path, {'a': T(S('0', 'F32', raw), (n,)),
                         'm_t': T(S('1', 'F32', mat), (cols, rows), (1, cols))})
        out = self.p('big.safetensors')
        self.conv(path, out, '--dtype', 'bf16')
        t = read_safetensors(out)[1]
        self.assertTrue(t['a'][2] == bf16_rne_ref(raw))
        self.assertTrue(t['m_t'][2] == bf16_rne_ref(transpose2d(mat, rows, cols, 4)))


# ----------------------------------------------------------------------------- rejections

class Rejections(Base):
    def good_sd(self):
        return {'w': T(S('0', 'F32', f32b([1.0, 2.0, 3.0, 4.0])), (2, 2))}

    def test_malicious_globals(self):
        marker = self.p('pwned')
        cmd = 'touch ' + marker

        class Evil:
            def __reduce__(self):
                return (os.system, (cmd,))

        class EvilEval:
            def __reduce__(self):
                return (eval, ("__import__('os').system(%r)" % cmd,))
        cases = [
            ('os-system-p2.pth', pickle.dumps({'w': Evil()}, protocol=2), 'system'),
            ('eval-stack-global.pth', pickle.dumps({'w': EvilEval()}, protocol=4), 'builtins.eval'),
            ('os-system-opcodes.pth', b'cos\nsystem\n(S' + repr(cmd).encode() + b'\ntR.', 'os.system'),
            ('posix-system.pth', b'\x80\x02cposix\nsystem\nq\x00X' + struct.pack('<I', len(cmd))
             + cmd.encode() + b'\x85R.', 'posix.system'),
            ('builtin-eval-p0.pth', b'c__builtin__\neval\n(S"1+1"\ntR.', '__builtin__.eval'),
            ('getattr.pth', pickle.dumps(getattr, protocol=4), 'builtins.getattr'),
        ]
        self.assertIn(b'\x93', cases[1][1])                       # STACK_GLOBAL really used
        for fn, pkl, name in cases:
            path = self.p(fn)
            write_zip(path, pkl, {})
            self.assert_rejected(path, msg=name)
            self.assertFalse(os.path.exists(marker), 'payload executed!')

    def test_not_a_zip_and_corrupt_zip(self):
        path = self.p('garbage.pth')
        with open(path, 'wb') as f:
            f.write(b'not a zip file at all' * 100)
        self.assert_rejected(path, msg='zip')
        legacy = self.p('legacy.pth')
        with open(legacy, 'wb') as f:
            f.write(pickle.dumps({'a': 1}, protocol=2))
        self.assert_rejected(legacy, msg='legacy')
        good = self.p('good.pth')
        write_pth(good, self.good_sd())
        data = readb(good)
        cut = self.p('cut.pth')
        with open(cut, 'wb') as f:
            f.write(data[:len(data) // 2])
        self.assert_rejected(cut)
        # flip a byte inside the stored tensor data: CRC mismatch
        i = data.index(f32b([1.0, 2.0, 3.0, 4.0]))
        bad = self.p('crc.pth')
        with open(bad, 'wb') as f:
            f.write(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        self.assert_rejected(bad, msg='CRC')
        empty = self.p('empty.pth')
        open(empty, 'wb').close()
        self.assert_rejected(empty)

    def test_truncated_and_missing_storage(self):
        path = self.p('trunc.pth')
        write_pth(path, self.good_sd(), truncate=('0',))
        self.assert_rejected(path, msg='truncated')
        path = self.p('missing.pth')
        write_pth(path, self.good_sd(), drop=('0',))
        self.assert_rejected(path, msg='missing storage')
        path = self.p('nopkl.pth')
        with zipfile.ZipFile(path, 'w') as z:
            z.writestr('archive/data/0', b'1234')
        self.assert_rejected(path, msg='data.pkl')
        path = self.p('badpkl.pth')
        write_zip(path, b'\x80\x02}q\x00(X\x01\x00', {})
        self.assert_rejected(path, msg='unpickle')

    def test_big_endian(self):
        path = self.p('be.pth')
        write_pth(path, self.good_sd(), byteorder='big')
        self.assert_rejected(path, msg='byteorder')
        path = self.p('nobo.pth')                               # old torch: no byteorder member
        write_pth(path, self.good_sd(), byteorder=None)
        out = self.p('nobo.safetensors')
        self.conv(path, out)
        self.assertEqual(read_safetensors(out)[1]['w'][2], f32b([1.0, 2.0, 3.0, 4.0]))

    def test_out_of_bounds_views(self):
        s = S('0', 'F32', f32b([1.0, 2.0, 3.0, 4.0]))
        for name, t in (('off', T(s, (2, 2), offset=1)), ('stride', T(s, (2, 2), (3, 1))),
                        ('numel', T(S('1', 'F32', f32b([1.0]), numel=4), (4,)))):
            path = self.p(name + '.pth')
            write_pth(path, {'w': t})
            self.assert_rejected(path)

    def test_non_tensor_values_and_int_tensors(self):
        path = self.p('nt.pth')
        write_pth(path, dict(self.good_sd(), lr=0.001))
        self.assert_rejected(path, msg="'lr'")
        path = self.p('int.pth')
        write_pth(path, dict(self.good_sd(), ids=T(S('1', 'I64', struct.pack('<4q', 1, 2, 3, 4)), (4,))))
        self.assert_rejected(path, msg="'ids'")
        path = self.p('c64.pth')
        write_pth(path, {'z': T(S('0', 'C64', b'\x00' * 16), (2,))})
        self.assert_rejected(path, msg='ComplexFloatStorage')
        path = self.p('toplist.pth')
        write_zip(path, pickle.dumps([1, 2], protocol=2), {})
        self.assert_rejected(path, msg='not a dict')
        path = self.p('onlyint.pth')
        write_pth(path, {'step': T(S('0', 'I64', struct.pack('<q', 5)), ())})
        self.assert_rejected(path, msg='no float tensors')

    def test_atomic_no_clobber(self):
        good = self.p('good.pth')
        write_pth(good, self.good_sd())
        out = self.p('out.safetensors')
        with open(out, 'wb') as f:
            f.write(b'previous')
        r = self.conv(good, out, ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(readb(out), b'previous')
        # failing conversion with --force leaves the old file untouched and no temp files
        bad = self.p('bad.pth')
        write_pth(bad, self.good_sd(), truncate=('0',))
        before = sorted(os.listdir(self.tmp))
        r = self.conv(bad, out, '--force', ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(readb(out), b'previous')
        self.assertEqual(sorted(os.listdir(self.tmp)), before)
        # data error found late (CRC) in the middle of writing
        data = readb(good)
        i = data.index(f32b([1.0, 2.0, 3.0, 4.0]))
        with open(bad, 'wb') as f:
            f.write(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:])
        r = self.conv(bad, out, '--force', ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(readb(out), b'previous')
        self.assertEqual(sorted(os.listdir(self.tmp)), before)
        d = self.p('shards')
        r = self.conv(bad, d, '--shard-size', '1KB', ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(sorted(os.listdir(self.tmp)), before)
        self.conv(good, out, '--force')
        self.assertEqual(read_safetensors(out)[1]['w'][2], f32b([1.0, 2.0, 3.0, 4.0]))
        # a directory with foreign files is never replaced
        os.mkdir(d)
        open(os.path.join(d, 'notes.txt'), 'w').close()
        r = self.conv(good, d, '--shard-size', '1KB', '--force', ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(os.listdir(d), ['notes.txt'])

    def test_bad_arguments(self):
        good = self.p('good.pth')
        write_pth(good, self.good_sd())
        for args in (['--shard-size', 'lots'], ['--shard-size', '0'], ['--dtype', 'f8']):
            r = self.conv(good, self.p('x'), *args, ok=False)
            self.assertEqual(r.returncode, 2)
            self.assertFalse(os.path.exists(self.p('x')))
        r = self.conv(self.p('nonexistent.pth'), self.p('x'), ok=False)
        self.assertEqual(r.returncode, 1)
        self.assertNotIn('Traceback', r.stderr)

    def test_header_format(self):
        good = self.p('good.pth')
        write_pth(good, {'b': T(S('0', 'F16', struct.pack('<3e', 1, 2, 3)), (3,)),
                         'a': T(S('1', 'F32', f32b([1.0])), (1,))})
        out = self.p('o.safetensors')
        self.conv(good, out)
        d = readb(out)
        (n,) = struct.unpack_from('<Q', d, 0)
        self.assertEqual(n % 8, 0)
        h = json.loads(d[8:8 + n])
        self.assertEqual(list(h), ['__metadata__', 'a', 'b'])
        self.assertEqual(h['__metadata__']['source'], 'good.pth')
        self.assertEqual(h['a']['data_offsets'], [0, 4])
        self.assertEqual(h['b'], {'dtype': 'F16', 'shape': [3], 'data_offsets': [4, 10]})
        self.assertEqual(len(d), 8 + n + 10)



# ----------------------------------------------------------------------------- fuzz findings

FUZZ_CASES = os.path.join(SRC, 'tests', 'fuzz', 'corpus', 'pth')


def load_converter_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('pth_to_safetensors_under_test', CONV)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FuzzFindings(Base):
    """What tests/fuzz/fuzz_pth.py found (docs/fuzzing.md): corrupt files that made the
    converter fail with an exception main() only knew as "something unexpected" (MemoryError
    from a pickle length, OverflowError from a FRAME, OSError from a zip offset,
    NotImplementedError from a compression method, UnicodeDecodeError from a member name), and
    an expanded view emitted as one piece of any size."""

    def test_reproducers_refused_with_a_real_message(self):
        import re
        import resource

        def limit():   # the MemoryError case asked for exabytes; 2 GiB is plenty for the rest
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        cases = sorted(f for f in os.listdir(FUZZ_CASES) if f.endswith('.pth'))
        self.assertGreaterEqual(len(cases), 5)
        for f in cases:
            with open(os.path.join(FUZZ_CASES, f[:-4] + '.json')) as fh:
                opts = json.load(fh)
            extra = ['--dtype', opts['dtype']] + (['--allow-variant'] if opts['allow_variant'] else [])
            out = self.p('o') if opts['shard_size'] else self.p('o.safetensors')
            if opts['shard_size']:
                extra += ['--shard-size', str(opts['shard_size'])]
            r = subprocess.run([sys.executable, CONV, os.path.join(FUZZ_CASES, f), out] + extra,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
                               preexec_fn=limit)
            self.assertEqual(r.returncode, 1, f)
            self.assertNotIn('Traceback', r.stderr)
            last = r.stderr.strip().splitlines()[-1]
            m = re.match(r'^pth_to_safetensors\.py: error: [^:]*: (.*)$', last)
            self.assertTrue(m, last)
            # main()'s catch-all prints "TypeName: message" (or an OSError's "[Errno N] ...")
            self.assertNotRegex(m.group(1), r'^([A-Z][A-Za-z]*(Error|Exception)|\[Errno)', '%s: %s' % (f, last))
            self.assertEqual(os.listdir(self.tmp), [], f)

    def test_expanded_view_in_chunks(self):
        mod = load_converter_module()
        ce = mod.CHUNK_ELEMS

        class Ar:
            def chunks(self, member, lo, hi, step):
                yield bytes(range(hi - lo))
        for shape, stride, nst in (((3 * ce + 5,), (0,), 1), ((3, ce + 5), (1, 0), 3), ((2, 2, ce), (0, 1, 0), 2)):
            st = mod._Storage('m', '0', mod.F32, 4 * nst)
            t = mod._Tensor(st, mod.F32, 0, shape, stride)
            total, biggest = 0, 0
            for b in mod.tensor_chunks(Ar(), t):
                total += len(b)
                biggest = max(biggest, len(b))
            self.assertEqual(total, 4 * t.numel(), shape)
            self.assertLessEqual(biggest, 4 * ce, '%s stride %s: a piece of %d bytes' % (shape, stride, biggest))


def main():
    prog = unittest.main(exit=False, verbosity=2 if '-v' in sys.argv else 1)
    res = prog.result
    if not res.wasSuccessful():
        sys.exit(1)
    if not (HAVE_TORCH_FIXTURES and HAVE_BIN):
        print('SKIP (77): missing %s; the other tests passed' %
              ', '.join(p for p, ok in ((TINY_BIN, HAVE_BIN), (DATA + '/*.pth', HAVE_TORCH_FIXTURES))
                        if not ok), file=sys.stderr)
        sys.exit(77)
    sys.exit(0)


if __name__ == '__main__':
    main()
