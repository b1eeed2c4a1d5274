#!/usr/bin/env python3
"""Make the BlinkDL-style .pth test fixtures for scripts/pth_to_safetensors.py.

Needs torch (any 2.x; no GPU). Run from anywhere:

    python3 scripts/make_pth_fixtures.py [TINY7_FP32.bin] [--out-dir tests/data]

TINY7_FP32.bin defaults to ../shared/fixtures/rwkv7/tiny-rwkv-7v0-834K-FP32.bin relative to
the repository root. Writes into --out-dir (default: <repo>/tests/data):

  tiny7-blinkdl-fp32.pth     the tiny RWKV-7 converted back to BlinkDL .pth layout, float32
  tiny7-blinkdl-bf16.pth     the same, cast to bfloat16 (as released checkpoints are)
  pth-edge-cases.pth         synthetic state dict: views, offsets, shared storage, scalars, dtypes
  pth-edge-cases.json        expected values/dtypes/shapes for pth-edge-cases.pth
  pth-fixtures-made-with.txt torch/python versions and sha256 of input and outputs

rwkv.cpp .bin -> BlinkDL layout (RWKV7.md section 3.2, undone):
  att.x_rwkvag [6,1,C]          -> att.x_r, x_w, x_k, x_v, x_a, x_g, each [1,1,C]
  att.{w,a,v,g}1 [D,C] (file)   -> [C,D]   (transposed back)
  att.{w,a,v,g}2 [C,D] (file)   -> [D,C]
  everything else unchanged. Every tensor gets its own contiguous storage, like a real checkpoint.
"""
import argparse
import collections
import hashlib
import json
import os
import struct
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, '..', 'shared', 'fixtures', 'rwkv7', 'tiny-rwkv-7v0-834K-FP32.bin')
BIN_MAGIC = 0x67676d66
LORA = ('w1', 'w2', 'a1', 'a2', 'v1', 'v2', 'g1', 'g2')


def read_bin(path):
    """Tiny rwkv.cpp .bin parser: returns [(name, shape (PyTorch order), dtype, bytes)] in file order."""
    with open(path, 'rb') as f:
        d = f.read()
    magic, ver, _n_vocab, _n_embd, _n_layer, _ftype = struct.unpack_from('<6i', d, 0)
    if magic != BIN_MAGIC or ver not in (100, 101):
        raise SystemExit('%s: not an rwkv.cpp .bin (magic %#x version %d)' % (path, magic, ver))
    off, out = 24, []
    while off < len(d):
        nd, klen, dt = struct.unpack_from('<3i', d, off)
        off += 12
        ne = struct.unpack_from('<%di' % nd, d, off)
        off += 4 * nd
        key = d[off:off + klen].decode('utf-8')
        off += klen
        n = 1
        for x in ne:
            n *= x
        if dt not in (0, 1):
            raise SystemExit('%s: %s: quantized dtype %d not supported' % (path, key, dt))
        nbytes = n * (4 if dt == 0 else 2)
        if off + nbytes > len(d):
            raise SystemExit('%s: %s: truncated' % (path, key))
        out.append((key, tuple(reversed(ne)), torch.float32 if dt == 0 else torch.float16,
                    d[off:off + nbytes]))
        off += nbytes
    return out


def to_blinkdl(entries):
    sd = collections.OrderedDict()
    for key, shape, dtype, raw in entries:
        t = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).to(torch.float32).clone()
        leaf = key.rsplit('.', 1)[-1]
        if key.endswith('.att.x_rwkvag'):
            base = key[:-len('x_rwkvag')]
            assert t.shape[0] == 6 and t.shape[1] == 1, (key, t.shape)
            for i, n in enumerate('rwkvag'):
                sd[base + 'x_' + n] = t[i:i + 1].clone().contiguous()   # [1,1,C], own storage
        elif '.att.' in key and leaf in LORA:
            sd[key] = t.t().contiguous().clone()
        else:
            sd[key] = t
    return sd


def edge_cases():
    """Small state dict exercising what a converter must get right. Values are exact in their dtype."""
    sd = collections.OrderedDict()
    mat = (torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25 - 1.0)
    sd['mat'] = mat                                   # contiguous, storage shared with the next two
    sd['mat_t'] = mat.t()                             # transposed view: shape [4,3], stride (1,4)
    sd['mat_slice'] = mat[1:, 1:3]                    # offset 5, shape [2,2], stride (4,1)
    big = torch.arange(10, dtype=torch.float32) * 0.125 + 0.5
    sd['vec_every_other'] = big[1::2]                 # offset 1, stride 2; base not saved
    sd['vec_slice'] = big[3:7]                        # offset 3; storage larger than the tensor
    sd['scalar'] = torch.tensor(3.5, dtype=torch.float32)        # 0-dim
    sd['half'] = torch.tensor([[1.5, -2.25, 65504.0], [6.103515625e-05, 5.960464477539063e-08, -0.0]],
                              dtype=torch.float16)
    bf = torch.tensor([1.0078125, -256.0, 0.5, 2.0 ** 100, -3.0, 2.0 ** -130, 7.0, 1e-2],
                      dtype=torch.float32).to(torch.bfloat16)  # 1e-2 rounds (RNE) to a bf16 value
    sd['bf16_cube'] = bf.reshape(2, 2, 2)             # 3-D bf16
    sd['bf16_cube_perm'] = bf.reshape(2, 2, 2).permute(2, 0, 1)   # 3-D non-contiguous view
    cube = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * 0.5 - 4.0
    sd['cube'] = cube                                 # 3-D f32
    sd['cube_perm'] = cube.permute(2, 0, 1)[1:]       # 3-D view: permuted and offset
    sd['half_t'] = sd['half'].t()                     # f16 transposed view
    sd['f64'] = torch.tensor([0.1, -2.5, 1e300], dtype=torch.float64)
    sd['expanded'] = torch.tensor([1.25, -0.75], dtype=torch.float32).reshape(2, 1).expand(2, 3)  # stride 0
    sd['param'] = torch.nn.Parameter(torch.tensor([[2.0, -4.0]], dtype=torch.float32))
    sd['empty'] = torch.zeros(0, 3, dtype=torch.float32)
    sd['step'] = torch.tensor(7, dtype=torch.int64)   # int scalar: converter skips it with a warning
    return sd


ST_DTYPE = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.float64: 'F64'}


def edge_json(sd):
    tensors = collections.OrderedDict()
    skipped = []
    for k, t in sd.items():
        if t.dtype not in ST_DTYPE:
            skipped.append(k)
            continue
        tensors[k] = {
            'dtype': ST_DTYPE[t.dtype],
            'shape': list(t.shape),
            'values': [float(x) for x in t.detach().to(torch.float64).reshape(-1).tolist()],
            'storage_offset': t.storage_offset(),
            'stride': list(t.stride()),
            'contiguous': t.is_contiguous(),
        }
    return {'top_level_key': 'model', 'tensors': tensors, 'skipped': skipped}


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for b in iter(lambda: f.read(1 << 20), b''):
            h.update(b)
    return h.hexdigest()


def check_roundtrip(path, sd):
    z = torch.load(path, map_location='cpu', weights_only=True)
    if 'model' in z and isinstance(z['model'], dict):
        z = z['model']
    assert list(z.keys()) == list(sd.keys()), path
    for k, t in sd.items():
        assert z[k].dtype == t.dtype and z[k].shape == t.shape, (path, k)
        assert torch.equal(z[k].detach().to(torch.float64), t.detach().to(torch.float64)) or \
            (t.numel() == 0), (path, k)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('bin', nargs='?', default=DEFAULT_BIN, help='tiny RWKV-7 FP32 rwkv.cpp .bin')
    ap.add_argument('--out-dir', default=os.path.join(REPO, 'tests', 'data'))
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    torch.manual_seed(0)
    outs = []

    sd = to_blinkdl(read_bin(a.bin))
    p = os.path.join(a.out_dir, 'tiny7-blinkdl-fp32.pth')
    torch.save(sd, p)
    check_roundtrip(p, sd)
    outs.append(p)

    sd16 = collections.OrderedDict((k, v.to(torch.bfloat16)) for k, v in sd.items())
    p = os.path.join(a.out_dir, 'tiny7-blinkdl-bf16.pth')
    torch.save(sd16, p)
    check_roundtrip(p, sd16)
    outs.append(p)

    e = edge_cases()
    p = os.path.join(a.out_dir, 'pth-edge-cases.pth')
    torch.save({'model': e}, p)
    check_roundtrip(p, e)
    outs.append(p)
    pj = os.path.join(a.out_dir, 'pth-edge-cases.json')
    with open(pj, 'w') as f:
        json.dump(edge_json(e), f, indent=1)
        f.write('\n')
    outs.append(pj)

    pm = os.path.join(a.out_dir, 'pth-fixtures-made-with.txt')
    with open(pm, 'w') as f:
        f.write('made by scripts/make_pth_fixtures.py\n')
        f.write('torch %s\n' % torch.__version__)
        f.write('python %s\n' % sys.version.split()[0])
        f.write('input %s sha256 %s\n' % (os.path.basename(a.bin), sha256(a.bin)))
        for o in outs:
            f.write('output %s sha256 %s bytes %d\n' % (os.path.basename(o), sha256(o), os.path.getsize(o)))
    for o in outs + [pm]:
        print('wrote', o)
    print('torch', torch.__version__)


if __name__ == '__main__':
    main()
