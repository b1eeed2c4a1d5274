#!/usr/bin/env python3
"""Write the committed seed corpora of tests/fuzz (docs/fuzzing.md), standard library only.

    python3 tests/fuzz/make_corpus.py            # from the repository root

Seeds are small valid inputs made from the real files, so the fuzzer starts from inputs
that get past the first checks:
  safetensors   the tensor names, dtypes and header layout of tests/fixtures/xlstm-tiny with
                every dimension shrunk to at most 2, plus F16/BF16/scalar/empty/__metadata__
  bin           the tensor names and header of the tiny RWKV-7 .bin (models/) shrunk the
                same way, FP32 and FP16
  st_index      index files for the shards fuzz_st_index writes
  xlstm_config  tests/fixtures/xlstm-tiny/config.json and smaller variants of it
  world_vocab   the first 256 lines of the bundled World vocab and a sample of the rest
  bpe_json      models/20B_tokenizer.json cut to its first 400 ids and the merges among them
  tokenizer_*   texts: prose, many scripts, combining marks, emoji, invalid UTF-8, spaces,
                special-token text, and 40 texts of tests/fixtures/tokenizer-neox-vectors.jsonl
  state_file    a state file and three manifests
The protobuf seeds (proto_api, proto_internal) come from the encodings test_proto builds:
`build/bin/test_proto --write-corpus tests/fuzz/corpus`.
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, 'tests', 'fuzz', 'corpus')


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode('utf-8')
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def filler(n):
    return bytes((i * 37 + 11) % 251 for i in range(n))


# ---------------------------------------------------------------- safetensors

ST_SIZE = {'F32': 4, 'F16': 2, 'BF16': 2}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape)] -> file bytes (data in that order)."""
    h, off = {}, 0
    if metadata is not None:
        h['__metadata__'] = metadata
    for name, dt, shape in tensors:
        n = ST_SIZE[dt]
        for d in shape:
            n *= d
        h[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + n]}
        off += n
    hb = json.dumps(h, separators=(',', ':')).encode()
    if pad:
        hb += b' ' * (-len(hb) % 8)
    return struct.pack('<Q', len(hb)) + hb + filler(off)


def read_st_header(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        return json.loads(f.read(n))


def shrink(shape):
    return [min(d, 2) for d in shape]


def make_safetensors():
    h = read_st_header(os.path.join(ROOT, 'tests', 'fixtures', 'xlstm-tiny', 'model.safetensors'))
    real = [(k, v['dtype'], shrink(v['shape'])) for k, v in h.items() if k != '__metadata__']
    put('safetensors', 'xlstm-tiny-shrunk', safetensors(real, h.get('__metadata__', {'format': 'pt'})))
    put('safetensors', 'xlstm-tiny-first8', safetensors(real[:8]))
    put('safetensors', 'dtypes', safetensors([('a', 'F32', [2, 2]), ('b', 'F16', [3]), ('c', 'BF16', [1, 1, 2])]))
    put('safetensors', 'scalar-empty', safetensors([('scalar', 'F32', []), ('empty', 'F16', [0, 4]),
                                                    ('x', 'BF16', [2])], pad=False))
    put('safetensors', 'metadata', safetensors([('w', 'F32', [1])], {'format': 'pt', 'source': 'x.pth'}))
    put('safetensors', 'no-tensors', safetensors([]))


# ---------------------------------------------------------------- rwkv.cpp .bin

def read_bin(path):
    with open(path, 'rb') as f:
        data = f.read()
    magic, version, n_vocab, n_embd, n_layer, ftype = struct.unpack_from('<6i', data, 0)
    off, tensors = 24, []
    while off < len(data):
        n_dims, key_len, dt = struct.unpack_from('<3i', data, off)
        ne = struct.unpack_from('<%di' % n_dims, data, off + 12)
        name = data[off + 12 + 4 * n_dims: off + 12 + 4 * n_dims + key_len].decode()
        n = 1
        for d in ne:
            n *= d
        off += 12 + 4 * n_dims + key_len + n * (4 if dt == 0 else 2)
        tensors.append((name, list(ne)))
    return (magic, version, n_vocab, n_embd, n_layer, ftype), tensors


def bin_file(header, tensors, dt):
    magic, version, _, _, n_layer, _ = header
    n_vocab, n_embd = 3, 2
    out = [struct.pack('<6i', magic, version, n_vocab, n_embd, n_layer, dt)]
    for name, ne in tensors:
        ne = [n_embd, n_vocab] if name in ('emb.weight', 'head.weight') else shrink(ne)   # ggml order
        key = name.encode()
        n = 1
        for d in ne:
            n *= d
        out.append(struct.pack('<3i', len(ne), len(key), dt) + struct.pack('<%di' % len(ne), *ne) + key)
        out.append(filler(n * (4 if dt == 0 else 2)))
    return b''.join(out)


def make_bin():
    header, tensors = read_bin(os.path.join(ROOT, 'models', 'tiny-rwkv-7v0-834K-FP32.bin'))
    put('bin', 'tiny7-shrunk-fp32', bin_file(header, tensors, 0))
    put('bin', 'tiny7-shrunk-fp16', bin_file(header, tensors, 1))
    one = [t for t in tensors if not t[0].startswith('blocks.') or t[0].startswith('blocks.0.')]
    h1 = header[:4] + (1,) + header[5:]
    put('bin', 'tiny7-one-layer', bin_file(h1, one, 0))


# ---------------------------------------------------------------- the index json

def make_st_index():
    s1, s2 = 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'
    put('st_index', 'two-shards', json.dumps({'metadata': {'total_size': 24},
                                              'weight_map': {'a': s1, 'b': s1, 'c': s2}}, indent=2))
    put('st_index', 'one-shard', json.dumps({'weight_map': {'a': 'other.safetensors'}}))
    put('st_index', 'bad-shard', json.dumps({'weight_map': {'a': s1, 'b': s1, 'x': 'bad.safetensors'}}))


# ---------------------------------------------------------------- xLSTM config.json

def make_xlstm_config():
    with open(os.path.join(ROOT, 'tests', 'fixtures', 'xlstm-tiny', 'config.json')) as f:
        text = f.read()
    put('xlstm_config', 'xlstm-tiny', text)
    cfg = json.loads(text)
    keep = ['model_type', 'hidden_size', 'num_hidden_layers', 'num_heads', 'vocab_size', 'qk_dim_factor',
            'v_dim_factor', 'ffn_proj_factor', 'ffn_round_up_to_multiple_of', 'chunk_size']
    put('xlstm_config', 'minimal', json.dumps({k: cfg[k] for k in keep}))
    alias = {k: cfg[k] for k in keep if k not in ('hidden_size', 'num_hidden_layers')}
    alias.update({'embedding_dim': 128, 'num_blocks': 2, 'gate_soft_cap': None, 'output_logit_soft_cap': None})
    put('xlstm_config', 'aliases-no-caps', json.dumps(alias))


# ---------------------------------------------------------------- World vocab

def make_world_vocab():
    with open(os.path.join(ROOT, 'models', 'rwkv_vocab_v20230424.txt'), 'rb') as f:
        lines = f.read().split(b'\n')
    head = lines[:256]
    sample = [lines[i] for i in range(256, len(lines), 2011) if lines[i]]
    put('world_vocab', 'bytes-and-sample', b'\n'.join(head + sample) + b'\n')
    put('world_vocab', 'bytes-only', b'\n'.join(head) + b'\n')


# ---------------------------------------------------------------- tokenizer.json

def make_bpe_json():
    with open(os.path.join(ROOT, 'models', '20B_tokenizer.json'), encoding='utf-8') as f:
        tok = json.load(f)
    vocab = {k: v for k, v in tok['model']['vocab'].items() if v < 400}
    merges = []
    for m in tok['model']['merges']:
        a, b = m.split(' ') if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    added = [t for t in tok['added_tokens'] if t['id'] < 2]
    spaces = [t for t in tok['added_tokens'] if t['id'] >= 2][-3:]   # "   ", "  " ...
    for i, t in enumerate(spaces):
        added.append(dict(t, id=400 + i))
    tok['added_tokens'] = added
    tok['model']['vocab'] = vocab
    tok['model']['merges'] = merges
    put('bpe_json', 'neox-400', json.dumps(tok, ensure_ascii=False, separators=(',', ':')))
    tok['model']['merges'] = [m.split(' ') for m in merges[:40]]
    tok['normalizer'] = None
    put('bpe_json', 'neox-400-pairs-no-nfc', json.dumps(tok, ensure_ascii=False, indent=1))


# ---------------------------------------------------------------- texts

TEXTS = [
    b'Hello, world! The quick brown fox jumps over the lazy dog.',
    'Gr\u00fc\u00dfe aus K\u00f6ln \u2014 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8, '
    '\u0440\u0443\u0441\u0441\u043a\u0438\u0439, \u0627\u0644\u0639\u0631\u0628\u064a\u0629, '
    '\ud55c\uad6d\uc5b4, \u0939\u093f\u0928\u094d\u0926\u0940'.encode(),
    'e\u0301 a\u0308 \u1e9b\u0323 \uac00\u11a8 (decomposed and Hangul jamo)'.encode(),
    '\U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f44d\U0001f3fd \U0001f1e9\U0001f1ea'.encode(),
    b'\x80 lone continuation, \xc3 truncated, \xe2\x82 truncated, \xf0\x9f\x98 truncated',
    b'\xc0\x80 overlong, \xed\xa0\x80 surrogate, \xf4\x90\x80\x80 above U+10FFFF, \xf5\xff\xfe',
    b'  two,   three,' + b' ' * 30 + b'thirty spaces\n\n\r\n\ttabs\t\t',
    b'<|endoftext|>text<|padding|> <|endoftext|',
    b'int main(void) { return 0x7f + 12345678 - 3.14e-2; } // code\'s "quotes"',
    b'\x00\x01\x02 NUL and control bytes \x7f\x1b[0m',
    b'',
]


def make_texts():
    for i, t in enumerate(TEXTS):
        for target in ('tokenizer_world', 'tokenizer_bpe'):
            put(target, 'text-%02d' % i, t)
    with open(os.path.join(ROOT, 'tests', 'fixtures', 'tokenizer-neox-vectors.jsonl'), encoding='utf-8') as f:
        rows = [r for r in (json.loads(line) for line in f if line.strip()) if 'hex' in r]
    for i, r in enumerate(rows[::max(1, len(rows) // 40)][:40]):
        put('tokenizer_bpe', 'neox-vector-%02d' % i, bytes.fromhex(r['hex']))
        put('tokenizer_world', 'neox-vector-%02d' % i, bytes.fromhex(r['hex']))


# ---------------------------------------------------------------- state files

def make_state_file():
    put('state_file', 'state', b'\x00' + filler(64))
    # odd first byte: a manifest; then tp-1 | (pp-1) << 2, the base name, NUL, the arch
    put('state_file', 'manifest-tp1', b'\x01\x00model.state\x00rwkv7')
    put('state_file', 'manifest-tp2pp2', b'\x01\x05s\x00xlstm')
    put('state_file', 'manifest-tp4pp4', b'\x01\x0fsess-0001.state\x00rwkv7')


if __name__ == '__main__':
    make_safetensors()
    make_bin()
    make_st_index()
    make_xlstm_config()
    make_world_vocab()
    make_bpe_json()
    make_texts()
    make_state_file()
