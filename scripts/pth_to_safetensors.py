#!/usr/bin/env python3
"""Convert a BlinkDL RWKV-7 `.pth` checkpoint (a torch.save zip file) to safetensors.

Needs only the Python 3 standard library (3.9+): no torch, no numpy.

    pth_to_safetensors.py IN.pth OUT.safetensors [--dtype keep|f32|f16|bf16] [--force]
    pth_to_safetensors.py IN.pth OUT_DIR --shard-size 2GB [...]

With --shard-size, OUT is a directory that receives model-00001-of-0000N.safetensors shards and
model.safetensors.index.json ({"metadata": {"total_size": N}, "weight_map": {name: shard}}).
Tensor names and shapes are kept exactly as in the .pth (BlinkDL layout: att.x_r [1,1,C],
att.w1 [C,D], ...). Tensors are written in name order, each one contiguous and row-major.

Safety: data.pkl is read by a restricted unpickler that resolves only the handful of torch
globals a state dict needs (tensor/parameter rebuild functions, storage classes, dtypes,
collections.OrderedDict), each mapped to a small stand-in here. Any other global (os.system,
builtins.eval, ...) stops the conversion with an error that names it. Nothing is executed.

Output is written atomically: a temporary file (or directory) next to OUT, fsync, os.replace.
On any error nothing is left behind and the exit status is 1 (2 for bad arguments).

Dtype conversion speed, measured on 128M-element files (CPython 3.11, one core):
  --dtype keep          byte copy, ~250 MB/s here incl. CRC check (disk-bound on big files)
  bf16 -> f32           byte interleave (bytearray slicing), ~55 M elements/s
  f32 -> bf16           round to nearest even, NaN -> 0x7FC0, SWAR arithmetic on one big
                        integer of 32-bit lanes, ~33 M elements/s
  f32/bf16 <-> f16      struct's 'e' format (round to nearest even, overflow -> inf), ~12 M elements/s
  f64 -> f32            array('d') -> array('f'), ~18 M elements/s
Anything else goes through f32 (f64 sources are rounded to f32 first, as torch does). So a 7B
bf16 release (14 GB) takes about a minute with keep, ~2 minutes to f32, ~10 minutes to f16.
"""
import argparse
import array
import collections
import itertools
import json
import io
import os
import pickle
import pickletools
import re
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib

CONVERTER = 'recur pth_to_safetensors 1'
CHUNK_ELEMS = 1 << 22          # elements per conversion chunk
# What reading a corrupt zip member can raise besides BadZipFile (a bad offset, an unknown
# compression method, the encryption flag, a broken deflate stream, a short read)
ZIP_READ_ERRORS = (OSError, EOFError, zlib.error, NotImplementedError, RuntimeError, zipfile.BadZipFile)
MAX_PICKLE_BYTES = 256 << 20   # data.pkl of a 7B checkpoint is ~100 KB; more is not a state dict
INDEX_NAME = 'model.safetensors.index.json'
SHARD_RE = re.compile(r'^model-\d{5}-of-\d{5}\.safetensors$')


class ConvertError(Exception):
    pass


# ----------------------------------------------------------------------------- dtypes

class DType:
    def __init__(self, torch_name, st_name, itemsize, kind):
        self.torch_name, self.st_name, self.itemsize, self.kind = torch_name, st_name, itemsize, kind

    def __repr__(self):
        return 'torch.' + self.torch_name


_DT = [DType('float32', 'F32', 4, 'float'), DType('float16', 'F16', 2, 'float'),
       DType('bfloat16', 'BF16', 2, 'float'), DType('float64', 'F64', 8, 'float'),
       DType('int64', 'I64', 8, 'int'), DType('int32', 'I32', 4, 'int'),
       DType('int16', 'I16', 2, 'int'), DType('int8', 'I8', 1, 'int'),
       DType('uint8', 'U8', 1, 'int'), DType('bool', 'BOOL', 1, 'int')]
DTYPES = {d.torch_name: d for d in _DT}
ST_DTYPES = {d.st_name: d for d in _DT}
F32, F16, BF16, F64 = DTYPES['float32'], DTYPES['float16'], DTYPES['bfloat16'], DTYPES['float64']
DTYPE_ALIASES = {'float': 'float32', 'half': 'float16', 'double': 'float64', 'long': 'int64',
                 'int': 'int32', 'short': 'int16'}
# torch dtype names that may appear as globals; the ones not in DTYPES are rejected per tensor
OTHER_DTYPE_NAMES = {'complex32', 'complex64', 'complex128', 'cfloat', 'cdouble', 'chalf',
                     'uint16', 'uint32', 'uint64', 'float8_e4m3fn', 'float8_e5m2',
                     'float8_e4m3fnuz', 'float8_e5m2fnuz', 'float8_e8m0fnu', 'qint8', 'quint8',
                     'qint32', 'quint4x2', 'bits8', 'bits16'}
LEGACY_STORAGES = {'FloatStorage': 'float32', 'HalfStorage': 'float16',
                   'BFloat16Storage': 'bfloat16', 'DoubleStorage': 'float64',
                   'LongStorage': 'int64', 'IntStorage': 'int32', 'ShortStorage': 'int16',
                   'CharStorage': 'int8', 'ByteStorage': 'uint8', 'BoolStorage': 'bool'}


# ----------------------------------------------------------------------------- stand-ins

class _DTypeObj:
    """Stand-in for a torch.dtype global (torch.float32 ...)."""
    def __init__(self, name):
        self.name = name
        self.dtype = DTYPES.get(DTYPE_ALIASES.get(name, name))

    def __repr__(self):
        return 'torch.' + self.name


class _StorageType:
    """Stand-in for torch.FloatStorage etc. (dtype None = UntypedStorage, counted in bytes)."""
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _TypeMarker:
    """Stand-in for torch.Tensor / torch.nn.Parameter passed to _rebuild_from_type_v2."""
    def __init__(self, name):
        self.name = name


class _Storage:
    def __init__(self, member, key, dtype, nbytes):
        self.member, self.key, self.dtype, self.nbytes = member, key, dtype, nbytes


class _Tensor:
    def __init__(self, storage, dtype, offset, shape, stride):
        self.storage, self.dtype, self.offset, self.shape, self.stride = \
            storage, dtype, offset, shape, stride

    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n


def _ints(x, what):
    if not isinstance(x, (tuple, list)) or not all(type(v) is int and v >= 0 for v in x):
        raise ConvertError('bad tensor %s %r' % (what, x))
    return tuple(x)


def _make_tensor(storage, offset, size, stride, dtype=None):
    if not isinstance(storage, _Storage):
        raise ConvertError('tensor rebuilt from a %s, not a storage' % type(storage).__name__)
    if type(offset) is not int or offset < 0:
        raise ConvertError('bad storage offset %r' % (offset,))
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if len(size) != len(stride):
        raise ConvertError('tensor size %r and stride %r differ in rank' % (size, stride))
    if dtype is None:
        if storage.dtype is None:
            raise ConvertError('untyped storage without a dtype')
        dtype = storage.dtype
    elif storage.dtype is not None and storage.dtype is not dtype:
        raise ConvertError('storage dtype %r differs from tensor dtype %r' % (storage.dtype, dtype))
    t = _Tensor(storage, dtype, offset, size, stride)
    if t.numel() > 0:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if (last + 1) * dtype.itemsize > storage.nbytes:
            raise ConvertError('tensor (offset %d, size %r, stride %r) reaches past the end of '
                               'storage %r (%d bytes of %r)' % (offset, size, stride, storage.key,
                                                                storage.nbytes, dtype))
    return t


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(dtype, _DTypeObj):
        raise ConvertError('bad dtype %r in _rebuild_tensor_v3' % (dtype,))
    if dtype.dtype is None:
        raise ConvertError('unsupported tensor dtype %r' % dtype)
    return _make_tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, _Tensor):
        raise ConvertError('parameter rebuilt from a %s, not a tensor' % type(data).__name__)
    return data


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _REBUILDERS or not isinstance(new_type, _TypeMarker) or \
            not isinstance(args, tuple):
        raise ConvertError('unsupported tensor subclass reconstruction')
    return func(*args)


ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
    ('torch', 'Tensor'): _TypeMarker('Tensor'),
    ('torch._tensor', 'Tensor'): _TypeMarker('Tensor'),
    ('torch.nn.parameter', 'Parameter'): _TypeMarker('Parameter'),
    ('torch', 'UntypedStorage'): _StorageType('UntypedStorage', None),
    ('torch.storage', 'UntypedStorage'): _StorageType('UntypedStorage', None),
}
for _n, _d in LEGACY_STORAGES.items():
    ALLOWED_GLOBALS[('torch', _n)] = _StorageType(_n, DTYPES[_d])
for _n in list(DTYPES) + list(DTYPE_ALIASES) + sorted(OTHER_DTYPE_NAMES):
    ALLOWED_GLOBALS[('torch', _n)] = _DTypeObj(_n)


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, zf, prefix):
        super().__init__(f)
        self._zf, self._prefix, self._storages = zf, prefix, {}

    def find_class(self, module, name):
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise ConvertError('data.pkl references the global %s.%s, which is not allowed '
                               '(only torch tensor/storage rebuild globals are); refusing to load'
                               % (module, name))
        return obj

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
            raise ConvertError('unsupported persistent id %r in data.pkl' % (pid,))
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or \
                type(numel) is not int or numel < 0:
            raise ConvertError('bad storage record %r in data.pkl' % (pid,))
        nbytes = numel * (stype.dtype.itemsize if stype.dtype else 1)
        st = self._storages.get(key)
        if st is not None:
            if st.dtype is not stype.dtype or st.nbytes != nbytes:
                raise ConvertError('storage %r is referenced with two different types' % key)
            return st
        member = self._prefix + 'data/' + key
        try:
            info = self._zf.getinfo(member)
        except KeyError:
            raise ConvertError('missing storage member %r' % member) from None
        if info.file_size != nbytes:
            raise ConvertError('storage member %r has %d bytes, expected %d (%d x %s)%s'
                               % (member, info.file_size, nbytes, numel, stype.name,
                                  ' - truncated?' if info.file_size < nbytes else ''))
        st = _Storage(member, key, stype.dtype, nbytes)
        self._storages[key] = st
        return st


# ----------------------------------------------------------------------------- reading

class Archive:
    """The checkpoint zip. Storages are read straight from the file at their offset when they are
    stored uncompressed (torch.save never compresses): zipfile's own seek re-reads from the
    member's start on Python < 3.12, which is quadratic when many tensors view one big storage."""
    def __init__(self, path, zf):
        self.path, self.zf = path, zf
        self.fh = open(path, 'rb')
        self.size = os.fstat(self.fh.fileno()).st_size
        self._base = {}

    def close(self):
        self.fh.close()
        self.zf.close()

    def _data_offset(self, info):
        off = self._base.get(info.filename)
        if off is None:
            if not 0 <= info.header_offset <= self.size - 30:
                raise ConvertError('bad zip local header offset %d for %r'
                                   % (info.header_offset, info.filename))
            self.fh.seek(info.header_offset)
            h = self.fh.read(30)
            if len(h) != 30 or h[:4] != b'PK\x03\x04':
                raise ConvertError('bad zip local header for %r' % info.filename)
            nlen, xlen = struct.unpack('<HH', h[26:30])
            off = info.header_offset + 30 + nlen + xlen
            if off + info.file_size > self.size:
                raise ConvertError('storage member %r is truncated' % info.filename)
            self._base[info.filename] = off
        return off

    def chunks(self, member, lo, hi, step):
        """Yields bytes [lo, hi) of a member in pieces of at most step bytes. Reading a whole member
        checks its CRC-32."""
        info = self.zf.getinfo(member)
        whole = lo == 0 and hi == info.file_size
        f = None
        try:
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
                self.fh.seek(self._data_offset(info) + lo)
                read = self.fh.read
            else:
                f = self.zf.open(member)
                if lo:
                    f.seek(lo)
                read = f.read
            crc, pos = 0, lo
            while pos < hi:
                b = read(min(step, hi - pos))
                if not b:
                    raise ConvertError('storage member %r is truncated' % member)
                if whole:
                    crc = zlib.crc32(b, crc)
                pos += len(b)
                yield b
            if whole and crc != info.CRC:
                raise ConvertError('CRC-32 mismatch in %r: the file is corrupt' % member)
        except ZIP_READ_ERRORS as e:
            raise ConvertError('cannot read storage member %r (corrupt zip?): %s: %s'
                               % (member, type(e).__name__, e)) from None
        finally:
            if f is not None:
                f.close()


def read_pickle(zf, name):
    """data.pkl's bytes, after checking what the unpickler would otherwise trust: CPython's C
    unpickler allocates a counted argument (BINBYTES, BINUNICODE8, LONG4 ...) at the size the
    pickle claims before reading it, and a memo slot at the index it claims, so a few corrupt
    bytes could make it ask for gigabytes (MemoryError, or memory the machine does not have).
    pickletools reads every argument without trusting its length; on top of that a FRAME must
    fit in what is left and a memo index must be below the opcode count (torch numbers them
    from 0). Zip-level corruption (bad offsets, a broken stream) is a ConvertError too."""
    try:
        info = zf.getinfo(name)
        if info.file_size > MAX_PICKLE_BYTES:
            raise ConvertError('%s is %d bytes; more than %d is not a state dict'
                               % (name, info.file_size, MAX_PICKLE_BYTES))
        data = zf.read(name)
    except ZIP_READ_ERRORS as e:
        raise ConvertError('cannot read %s from the zip (corrupt?): %s: %s'
                           % (name, type(e).__name__, e)) from None
    n_ops = 0
    try:
        for op, arg, pos in pickletools.genops(data):
            n_ops += 1
            if op.name == 'FRAME' and arg > len(data) - pos:
                raise ConvertError('%s: FRAME of %d bytes at byte %d runs past the end' % (name, arg, pos))
            if op.name in ('PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'):
                idx = n_ops if op.name == 'MEMOIZE' else int(arg)
                if idx > len(data):
                    raise ConvertError('%s: memo index %d at byte %d (the pickle has %d bytes)'
                                       % (name, idx, pos, len(data)))
    except ConvertError:
        raise
    except (ValueError, TypeError, KeyError, struct.error, OverflowError) as e:
        raise ConvertError('cannot unpickle %s: malformed: %s: %s' % (name, type(e).__name__, e)) from None
    return data


def open_checkpoint(path):
    """Returns (Archive, unpickled top-level object) of a torch.save zip file."""
    if not zipfile.is_zipfile(path):
        with open(path, 'rb') as f:
            head = f.read(2)
        if head[:1] == b'\x80':
            raise ConvertError('legacy (pre-1.6, non-zip) torch.save format is not supported; '
                               're-save it with a current torch')
        raise ConvertError('not a zip file, or a corrupt/truncated one (torch.save output '
                           'is a zip archive)')
    try:
        zf = zipfile.ZipFile(path)
    except (UnicodeDecodeError, ValueError, EOFError, NotImplementedError, struct.error) as e:
        # zipfile's own checks raise BadZipFile; these come from a central directory it
        # parsed anyway (a name flagged UTF-8 that is not, an impossible size)
        raise ConvertError('corrupt zip: %s: %s' % (type(e).__name__, e)) from None
    try:
        pkls = [n for n in zf.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
        if len(pkls) != 1:
            raise ConvertError('expected exactly one <archive>/data.pkl in the zip, found %d'
                               % len(pkls))
        prefix = pkls[0][:-len('data.pkl')]
        names = set(zf.namelist())
        if prefix + 'byteorder' in names:
            try:
                bo = zf.read(prefix + 'byteorder').strip()
            except ZIP_READ_ERRORS as e:
                raise ConvertError('cannot read byteorder from the zip (corrupt?): %s: %s'
                                   % (type(e).__name__, e)) from None
            if bo != b'little':
                raise ConvertError('byteorder is %r; only little-endian checkpoints are supported'
                                   % bo.decode('latin-1'))
        obj = RestrictedUnpickler(io.BytesIO(read_pickle(zf, pkls[0])), zf, prefix).load()
    except ConvertError:
        zf.close()
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, struct.error, OverflowError) as e:
        zf.close()
        raise ConvertError('cannot unpickle data.pkl: %s: %s' % (type(e).__name__, e)) from None
    except BaseException:
        zf.close()
        raise
    try:
        return Archive(path, zf), obj
    except BaseException:
        zf.close()
        raise


def pick_state_dict(obj):
    if not isinstance(obj, dict):
        raise ConvertError('top-level object is a %s, not a dict' % type(obj).__name__)
    for k in ('state_dict', 'model'):
        if isinstance(obj.get(k), dict):
            return obj[k]
    return obj


def read_range(ar, st, lo, hi):
    return b''.join(ar.chunks(st.member, lo, hi, max(hi - lo, 1)))


def _collapse(shape, stride):
    """Drop size-1 dims and merge dims that are contiguous with each other."""
    dims = [(s, st) for s, st in zip(shape, stride) if s != 1]
    out = []
    for s, st in dims:
        if out and out[-1][1] == st * s:
            out[-1] = (out[-1][0] * s, st)
        else:
            out.append((s, st))
    return out


def tensor_chunks(ar, t):
    """Yields the tensor's elements as contiguous row-major bytes (source dtype), in pieces."""
    isz = t.dtype.itemsize
    n = t.numel()
    if n == 0:
        return
    dims = _collapse(t.shape, t.stride)
    if not dims or (len(dims) == 1 and dims[0][1] == 1):       # contiguous: stream it
        yield from ar.chunks(t.storage.member, t.offset * isz, (t.offset + n) * isz,
                             CHUNK_ELEMS * isz)
        return
    # strided view: read the touched byte range, gather rows with memoryview slicing
    last = t.offset + sum((s - 1) * st for s, st in dims)
    buf = read_range(ar, t.storage, t.offset * isz, (last + 1) * isz)
    mv = memoryview(buf).cast({1: 'B', 2: 'H', 4: 'I', 8: 'Q'}[isz])
    rn, rs = dims[-1]
    out, outn = bytearray(), 0
    for idx in itertools.product(*(range(s) for s, _ in dims[:-1])):
        start = sum(i * st for i, (_, st) in zip(idx, dims[:-1]))
        if rs == 0:
            # an expanded dim: one value rn times. rn is not bounded by the file's size (a
            # 5 KB .pth may expand to gigabytes), so it goes out in chunks like the rest
            v, left = mv[start:start + 1].tobytes(), rn
            while left > CHUNK_ELEMS - outn:
                k = CHUNK_ELEMS - outn
                out += v * k
                left -= k
                yield bytes(out)
                out, outn = bytearray(), 0
            out += v * left
            outn += left
        else:
            out += mv[start:start + (rn - 1) * rs + 1:rs].tobytes()
            outn += rn
        if outn >= CHUNK_ELEMS:
            yield bytes(out)
            out, outn = bytearray(), 0
    if out:
        yield bytes(out)


# ----------------------------------------------------------------------------- conversion

_BIG = sys.byteorder == 'big'


def _arr(code, b):
    a = array.array(code)
    a.frombytes(b)
    if _BIG:
        a.byteswap()
    return a


def _tobytes(a):
    if _BIG:
        a = array.array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def bf16_to_f32(b):
    n = len(b) // 2
    out = bytearray(4 * n)
    out[2::4] = b[0::2]
    out[3::4] = b[1::2]
    return bytes(out)


_ONES = {}


def _lane_consts(n):
    """(ONES, 0x7FFF*ONES) for n 32-bit lanes, cached: building them costs as much as an add."""
    c = _ONES.get(n)
    if c is None:
        ones = int.from_bytes(b'\x01\x00\x00\x00' * n, 'little')
        c = _ONES[n] = (ones, 0x7FFF * ones)
        if len(_ONES) > 4:
            _ONES.pop(next(iter(_ONES)))
    return c


def f32_to_bf16(b):
    """float32 -> bfloat16, round to nearest even; NaN -> 0x7FC0 (as torch/c10 does).

    SWAR on one big integer holding all the floats as 32-bit lanes: r = u + 0x7FFF + ((u >> 16) & 1),
    keep the high 16 bits. Only NaNs with a large mantissa could carry out of their lane, so NaN
    lanes are zeroed first and patched to 0x7FC0 afterwards."""
    n = len(b) // 4
    if n == 0:
        return b''
    hi = b[3::4]
    nans = []
    if hi.count(0x7F) or hi.count(0xFF):          # exponent may be all ones: look closer
        src = bytearray(b)
        for v in (0x7F, 0xFF):
            i = hi.find(v)
            while i >= 0:
                if b[4 * i + 2] & 0x80 and (b[4 * i + 2] & 0x7F or b[4 * i + 1] or b[4 * i]):
                    nans.append(i)
                    src[4 * i:4 * i + 4] = b'\0\0\0\0'
                i = hi.find(v, i + 1)
        b = src
    ones, bias = _lane_consts(n)
    x = int.from_bytes(b, 'little')
    r = (x + bias + ((x >> 16) & ones)).to_bytes(4 * n + 1, 'little')
    out = bytearray(2 * n)
    out[0::2] = r[2:4 * n:4]
    out[1::2] = r[3:4 * n:4]
    for i in nans:
        out[2 * i], out[2 * i + 1] = 0xC0, 0x7F
    return bytes(out)


_INF = float('inf')


def _pack_f16(vals):
    """Round to nearest even (struct 'e'); |v| >= 65520 becomes +/-inf, as a cast does."""
    if len(vals) > 1 << 20:
        return b''.join(_pack_f16(vals[i:i + (1 << 20)]) for i in range(0, len(vals), 1 << 20))
    try:
        return struct.pack('<%de' % len(vals), *vals)
    except (OverflowError, struct.error):
        vals = [v if not (v >= 65520.0 or v <= -65520.0) else (_INF if v > 0 else -_INF)
                for v in vals]
        return struct.pack('<%de' % len(vals), *vals)


def f32_to_f16(b):
    return _pack_f16(_arr('f', b))


def f16_to_f32(b):
    return _tobytes(array.array('f', struct.unpack('<%de' % (len(b) // 2), b)))


def f64_to_f32(b):
    return _tobytes(array.array('f', _arr('d', b)))


def f32_to_f64(b):
    return _tobytes(array.array('d', _arr('f', b)))


_DIRECT = {('BF16', 'F32'): bf16_to_f32, ('F32', 'BF16'): f32_to_bf16,
           ('F32', 'F16'): f32_to_f16, ('F16', 'F32'): f16_to_f32,
           ('F64', 'F32'): f64_to_f32, ('F32', 'F64'): f32_to_f64}


def converter(src, dst):
    if src is dst:
        return lambda b: b
    f = _DIRECT.get((src.st_name, dst.st_name))
    if f:
        return f
    a = _DIRECT[(src.st_name, 'F32')]
    b = _DIRECT[('F32', dst.st_name)]
    return lambda x: b(a(x))


# ----------------------------------------------------------------------------- checks

X070_TOP = {'emb.weight', 'ln_out.weight', 'ln_out.bias', 'head.weight'}
X070_BLOCK = {'ln0.weight', 'ln0.bias', 'ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias',
              'ffn.x_k', 'ffn.key.weight', 'ffn.value.weight', 'att.r_k',
              'att.receptance.weight', 'att.key.weight', 'att.value.weight',
              'att.output.weight', 'att.ln_x.weight', 'att.ln_x.bias'} | \
    {'att.x_' + c for c in 'rwkvag'} | {'att.%s%d' % (c, i) for c in 'wav' for i in (0, 1, 2)} | \
    {'att.g1', 'att.g2', 'att.k_k', 'att.k_a'}
_BLOCK_RE = re.compile(r'^blocks\.(\d+)\.(.+)$')


def check_rwkv7(names, allow_variant, warn):
    names = set(names)
    missing = [k for k in ('emb.weight', 'blocks.0.att.r_k', 'head.weight') if k not in names]
    if missing:
        warn('does not look like an RWKV-7 x070 checkpoint (missing %s); converting anyway'
             % ', '.join(missing))
        return
    de = sorted(k for k in names if re.search(r'\.ffn\.(s_emb|s_emb_x)\.weight$|\.ffn\.s[012]$', k))
    dea = sorted(k for k in names if re.match(r'^blocks\.\d+\.qkv\.', k))
    unknown = sorted(k for k in names if k not in X070_TOP and k not in de and k not in dea and
                     not (_BLOCK_RE.match(k) and _BLOCK_RE.match(k).group(2) in X070_BLOCK))
    problems = []
    if de:
        problems.append('RWKV-7a "DeepEmbed" tensors (e.g. %s)' % de[0])
    if dea:
        problems.append('RWKV-7b "DEA" attention tensors (e.g. %s)' % dea[0])
    if unknown:
        problems.append('%d tensors unknown to x070 (e.g. %s)' % (len(unknown), unknown[0]))
    if problems:
        msg = 'checkpoint is not plain RWKV-7 x070: it has ' + '; '.join(problems)
        if not allow_variant:
            raise ConvertError(msg + ' (pass --allow-variant to convert it anyway)')
        warn(msg + '; converting anyway (--allow-variant)')


# ----------------------------------------------------------------------------- writing

def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def safetensors_header(items, metadata):
    """items: [(name, out_dtype, shape, nbytes)] in file order. Returns the padded header bytes."""
    h = collections.OrderedDict()
    h['__metadata__'] = metadata
    off = 0
    for name, dt, shape, nbytes in items:
        h[name] = {'dtype': dt.st_name, 'shape': list(shape), 'data_offsets': [off, off + nbytes]}
        off += nbytes
    hb = json.dumps(h, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
    hb += b' ' * ((8 - len(hb) % 8) % 8)
    return struct.pack('<Q', len(hb)) + hb


def write_safetensors(f, ar, entries, metadata):
    """entries: [(name, _Tensor, out_dtype)] sorted by name. Writes a whole file to f."""
    items = [(n, dt, t.shape, t.numel() * dt.itemsize) for n, t, dt in entries]
    f.write(safetensors_header(items, metadata))
    for (name, t, dt), (_, _, _, nbytes) in zip(entries, items):
        conv = converter(t.dtype, dt)
        done = 0
        for chunk in tensor_chunks(ar, t):
            b = conv(chunk)
            f.write(b)
            done += len(b)
        if done != nbytes:
            raise ConvertError('internal error: tensor %r wrote %d bytes, expected %d'
                               % (name, done, nbytes))
    return sum(i[3] for i in items)


def _write_file_atomic(path, fill):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(d)


def plan_shards(entries, shard_size):
    shards, cur, cur_bytes = [], [], 0
    for e in entries:
        nb = e[1].numel() * e[2].itemsize
        if cur and cur_bytes + nb > shard_size:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(e)
        cur_bytes += nb
    if cur or not shards:
        shards.append(cur)
    return shards


def write_sharded(out_dir, ar, entries, metadata, shard_size, force):
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise ConvertError('%s exists and is not a directory' % out_dir)
        stray = [n for n in os.listdir(out_dir) if n != INDEX_NAME and not SHARD_RE.match(n)]
        if stray:
            raise ConvertError('%s exists and holds other files (e.g. %s); not replacing it'
                               % (out_dir, stray[0]))
        if os.listdir(out_dir) and not force:
            raise ConvertError('%s exists (use --force to replace it)' % out_dir)
    shards = plan_shards(entries, shard_size)
    tmp = tempfile.mkdtemp(dir=parent, prefix='.' + os.path.basename(out_dir) + '.', suffix='.tmp')
    old = None
    try:
        weight_map, total = collections.OrderedDict(), 0
        for i, sh in enumerate(shards):
            fn = 'model-%05d-of-%05d.safetensors' % (i + 1, len(shards))
            with open(os.path.join(tmp, fn), 'wb') as f:
                total += write_safetensors(f, ar, sh, metadata)
                f.flush()
                os.fsync(f.fileno())
            for name, _, _ in sh:
                weight_map[name] = fn
        index = {'metadata': {'total_size': total}, 'weight_map': weight_map}
        with open(os.path.join(tmp, INDEX_NAME), 'w') as f:
            json.dump(index, f, indent=2)
            f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(dir=parent, prefix='.' + os.path.basename(out_dir) + '.',
                                   suffix='.old')
            os.rmdir(old)
            os.rename(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old and not os.path.exists(out_dir):
            os.rename(old, out_dir)
            old = None
        raise
    _fsync_dir(parent)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return len(shards), total


# ----------------------------------------------------------------------------- main

def parse_size(s):
    m = re.match(r'^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$', s)
    if not m:
        raise argparse.ArgumentTypeError('bad size %r (examples: 2000000000, 2e9, 2GB, 1.5GiB)' % s)
    mult = {'': 0, 'k': 1, 'm': 2, 'g': 3, 't': 4}[m.group(2).lower()]
    v = float(m.group(1)) * ((1024 if m.group(3) else 1000) ** mult)
    if v < 1:
        raise argparse.ArgumentTypeError('shard size must be at least 1 byte')
    return int(v)


OUT_DTYPES = {'f32': F32, 'f16': F16, 'bf16': BF16}


def convert(args, warn):
    src = args.input
    ar, obj = open_checkpoint(src)
    try:
        sd = pick_state_dict(obj)
        entries = []
        for name, v in sd.items():
            if not isinstance(name, str):
                raise ConvertError('state dict key %r is not a string' % (name,))
            if not isinstance(v, _Tensor):
                raise ConvertError('state dict entry %r is a %s, not a tensor'
                                   % (name, type(v).__name__))
            if v.dtype.kind != 'float':
                if v.numel() <= 1:
                    warn('skipping %s tensor %r of shape %s (not a weight)'
                         % (v.dtype.torch_name, name, list(v.shape)))
                    continue
                raise ConvertError('tensor %r has dtype %s; only float tensors are supported'
                                   % (name, v.dtype.torch_name))
            dt = v.dtype if args.dtype == 'keep' else OUT_DTYPES[args.dtype]
            entries.append((name, v, dt))
        if not entries:
            raise ConvertError('no float tensors found')
        entries.sort(key=lambda e: e[0])
        check_rwkv7([e[0] for e in entries], args.allow_variant, warn)
        metadata = collections.OrderedDict([('format', 'pt'),
                                            ('source', os.path.basename(src)),
                                            ('converter', CONVERTER)])
        if args.shard_size:
            n, total = write_sharded(args.output, ar, entries, metadata, args.shard_size,
                                     args.force)
            return '%d tensors, %d bytes of data in %d shards' % (len(entries), total, n)
        total = [0]

        def fill(f):
            total[0] = write_safetensors(f, ar, entries, metadata)
        _write_file_atomic(args.output, fill)
        return '%d tensors, %d bytes of data' % (len(entries), total[0])
    finally:
        ar.close()


def main(argv=None):
    ap = argparse.ArgumentParser(
        description='Convert a BlinkDL RWKV-7 .pth (torch.save zip) to safetensors, stdlib only.')
    ap.add_argument('input', metavar='IN.pth')
    ap.add_argument('output', metavar='OUT',
                    help='output .safetensors file, or a directory with --shard-size')
    ap.add_argument('--shard-size', type=parse_size, metavar='BYTES',
                    help='write shards of at most BYTES each (e.g. 2e9, 2GB, 1.5GiB) plus an index')
    ap.add_argument('--dtype', choices=('keep', 'f32', 'f16', 'bf16'), default='keep')
    ap.add_argument('--force', action='store_true', help='replace an existing output')
    ap.add_argument('--allow-variant', action='store_true',
                    help='convert RWKV-7a/7b or otherwise non-x070 checkpoints too')
    ap.add_argument('-q', '--quiet', action='store_true', help='no summary line')
    args = ap.parse_args(argv)

    def warn(msg):
        print('%s: warning: %s: %s' % (os.path.basename(sys.argv[0]), args.input, msg),
              file=sys.stderr)

    def fail(msg):
        print('%s: error: %s: %s' % (os.path.basename(sys.argv[0]), args.input, msg),
              file=sys.stderr)
        return 1

    if not args.shard_size:
        if os.path.isdir(args.output):
            return fail('output %s is a directory (use --shard-size to write shards)' % args.output)
        if os.path.exists(args.output) and not args.force:
            return fail('output %s exists (use --force to replace it)' % args.output)
    try:
        summary = convert(args, warn)
    except ConvertError as e:
        return fail(str(e))
    except zipfile.BadZipFile as e:
        return fail('corrupt zip: %s' % e)
    except OSError as e:
        return fail('%s' % e)
    except KeyboardInterrupt:
        return fail('interrupted')
    except Exception as e:      # anything unexpected still gets a clean one-line message
        return fail('%s: %s' % (type(e).__name__, e))
    if not args.quiet:
        print('wrote %s: %s' % (args.output, summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
