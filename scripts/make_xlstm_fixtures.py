#!/usr/bin/env python3
"""Make the xLSTM reference fixtures (tiny random models + HF reference logits and states).

Needs torch and transformers 5.x (xLSTMForCausalLM, pure-PyTorch path) and numpy; no internet, no
shared files. `xlstm` and `mlstm_kernels` must NOT be importable (HF would switch to Triton kernels).

    python3 scripts/make_xlstm_fixtures.py OUT_DIR [--only xlstm-tiny|xlstm-heads256] [--device cpu|cuda]

Writes OUT_DIR/<name>/ for each model (recipe: shared/models/XLSTM.md section 8.2):
  config.json, generation_config.json, model.safetensors   (HF save_pretrained)
  ref-tokens-long.u32        [T] token ids (uint32 LE), random in 3..255, no BOS
  ref-logits-long-full.f32   [T][V] one full forward, use_cache=False (chunkwise + recurrent tail)
  ref-logits-long-step.f32   [T][V] token by token with cache_params
  ref-tokens-short.u32       [7] ids (shorter than the chunk)
  ref-logits-short-full.f32  [7][V] one full forward, use_cache=False (recurrent loop only)
  ref-state-prefix.f32       state after the first P tokens (one forward of P tokens, use_cache=True)
  ref-logits-continue.f32    [T-P][V] one forward of tokens P..T-1 continuing from that cache
  ref-state-final.f32        state after all T tokens (from the step path)
  ref.json                   manifest: shapes, diffs, versions, layout, sha256 of every file
State layout (float32 LE): for each layer l = 0..L-1 in order: C [NH][DQK][DV], then n [NH][DQK],
then m [NH]  (HF cache_params.rnn_state[l] = (C [B,NH,DQK,DV], n [B,NH,DQK], m [B,NH,1]), B = 1).

All reference numbers are computed in float32 (default on the CPU: deterministic and machine
independent; --device cuda computes them on the GPU with TF32 off). If CUDA is available, the full and
step logits are also recomputed on the other device and the difference is reported (cross-device diff).
xlstm-heads256 stores its weights as bfloat16; the references are computed in fp32 from exactly those
bf16-rounded values (the script checks that the saved bf16 tensors equal the values used).
"""
import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

for _mod in ("xlstm", "mlstm_kernels"):
    try:
        __import__(_mod)
    except ImportError:
        pass
    else:
        sys.exit(f"'{_mod}' is importable: HF would use its Triton kernels, not the native ones. "
                 "Run in an environment without it.")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import xLSTMConfig, xLSTMForCausalLM  # noqa: E402

COMMON = dict(
    mode="inference", chunkwise_kernel="chunkwise--native_autograd",
    sequence_kernel="native_sequence__native", step_kernel="native",
    return_last_states=True, use_cache=True, gate_soft_cap=15.0, output_logit_soft_cap=30.0,
    norm_eps=1e-6, eps=1e-6, inference_state_dtype="float32", weight_mode="single",
    tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, pad_token_id=1)

MODELS = {
    # Exactly the XLSTM.md section 8.2 config (same parameter seed 2026 and init order as its script).
    "xlstm-tiny": dict(
        cfg=dict(vocab_size=256, hidden_size=128, num_hidden_layers=2, num_heads=2,
                 qk_dim_factor=0.5, v_dim_factor=1.0,            # qk_dim 64 (DQK 32), v_dim 128 (DV 64)
                 ffn_proj_factor=2.667, ffn_round_up_to_multiple_of=64,   # 341.4 -> FFN 384
                 chunk_size=16),
        weight_dtype="float32", param_seed=2026, T=45, P=30, S=7, tok_seed=11, short_seed=12),
    # The real 7B head dims DQK=256, DV=512 with 2 heads, 2 blocks, everything else small.
    # hidden*qk_dim_factor = 512 and hidden*v_dim_factor = 1024 are multiples of 64 (XLSTM.md 1.1 caveat).
    "xlstm-heads256": dict(
        cfg=dict(vocab_size=256, hidden_size=128, num_hidden_layers=2, num_heads=2,
                 qk_dim_factor=4.0, v_dim_factor=8.0,            # qk_dim 512 (DQK 256), v_dim 1024 (DV 512)
                 ffn_proj_factor=0.75, ffn_round_up_to_multiple_of=64,    # 96 -> FFN 128
                 chunk_size=64),
        weight_dtype="bfloat16", param_seed=2027, T=150, P=100, S=7, tok_seed=21, short_seed=22),
}

LAYOUT = ("float32 little-endian, no header. For each layer l = 0..L-1 in order: C [NH][DQK][DV] "
          "(row-major, C[h][i][j] multiplies key index i and value index j), then n [NH][DQK], then m [NH]. "
          "Equals HF cache_params.rnn_state[l] = (C [B,NH,DQK,DV], n [B,NH,DQK], m [B,NH,1]) with B = 1. "
          "Per layer NH*(DQK*DV + DQK + 1) floats.")


def rerandomise(model, seed):
    """XLSTM.md 8.2 step 4: re-randomise EVERY parameter from a seeded CPU generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("igate_preact.bias"):
                t = torch.randn(p.shape, generator=g) * 2.0          # N(0, 2^2)
            elif name.endswith("fgate_preact.bias"):
                t = torch.rand(p.shape, generator=g) * 4.0           # U(0, 4)
            elif name.endswith(("igate_preact.weight", "fgate_preact.weight")):
                t = torch.randn(p.shape, generator=g) * 0.2          # N(0, 0.2^2)
            elif p.dim() == 1:
                t = 1.0 + torch.randn(p.shape, generator=g) * 0.2    # norm weights
            else:
                t = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5   # N(0, 1/fan_in)
            p.copy_(t)


def state_tensors(cache, n_layers):
    out = []
    for l in range(n_layers):
        c, n, m = cache.rnn_state[l]
        out.append(tuple(x.detach().float().cpu().clone() for x in (c, n, m)))
    return out


def state_blob(state):
    parts = []
    for c, n, m in state:
        assert c.shape[0] == 1 and n.shape[0] == 1 and m.shape[0] == 1
        parts += [c[0].reshape(-1), n[0].reshape(-1), m[0].reshape(-1)]
    return torch.cat(parts).numpy().astype("<f4")


def state_diff(a, b):
    return [max(float((x - y).abs().max()) for x, y in zip(la, lb)) for la, lb in zip(a, b)]


@torch.no_grad()
def run_refs(model, ids, short, P, L):
    """All reference passes (batch 1). Returns a dict of float32 CPU tensors / states."""
    r = {}
    r["full"] = model(input_ids=ids, use_cache=False).logits[0].float().cpu()
    r["short"] = model(input_ids=short, use_cache=False).logits[0].float().cpu()
    # Full forward with a cache: final state of the chunkwise path.
    out = model(input_ids=ids, use_cache=True)
    r["full_cache_logits"] = out.logits[0].float().cpu()
    r["state_full"] = state_tensors(out.cache_params, L)
    # Token by token.
    steps, cache = [], None
    for t in range(ids.shape[1]):
        out = model(input_ids=ids[:, t:t + 1], cache_params=cache, use_cache=True)
        cache = out.cache_params
        steps.append(out.logits[0, -1].float().cpu())
        if t == P - 1:
            r["state_step_P"] = state_tensors(cache, L)
    r["step"] = torch.stack(steps)
    r["state_final"] = state_tensors(cache, L)
    # Prefix of P tokens (one forward), state hand-off, then one forward of the rest from that cache.
    out = model(input_ids=ids[:, :P], use_cache=True)
    r["prefix_logits"] = out.logits[0].float().cpu()
    r["state_prefix"] = state_tensors(out.cache_params, L)   # cloned: HF updates the cache in place
    out = model(input_ids=ids[:, P:], cache_params=out.cache_params, use_cache=True)
    r["continue"] = out.logits[0].float().cpu()
    r["state_after_continue"] = state_tensors(out.cache_params, L)
    return r


def maxabs(a, b):
    return float((a - b).abs().max())


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def make(name, spec, out_root, device, command):
    print(f"=== {name}", flush=True)
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    cfg = xLSTMConfig(**spec["cfg"], **COMMON)
    L, NH, V = cfg.num_hidden_layers, cfg.num_heads, cfg.vocab_size
    DQK, DV = cfg.qk_head_dim, cfg.v_head_dim
    torch.manual_seed(0)
    model = xLSTMForCausalLM(cfg).to(torch.float32).eval()
    layer = model.backbone.blocks[0].mlstm_layer
    ffn = model.backbone.blocks[0].ffn.up_proj_dim
    # XLSTM.md 1.1 caveat: the layer uses int(hidden*factor), the cache round_up(hidden*factor, 64).
    assert layer.qk_dim == cfg.qk_dim and layer.v_dim == cfg.v_dim, (layer.qk_dim, cfg.qk_dim, layer.v_dim, cfg.v_dim)
    assert DQK * NH == layer.qk_dim and DV * NH == layer.v_dim
    print(f"hidden {cfg.hidden_size} layers {L} heads {NH} DQK {DQK} DV {DV} FFN {ffn} vocab {V} "
          f"chunk {cfg.chunk_size}", flush=True)

    rerandomise(model, spec["param_seed"])
    if spec["weight_dtype"] == "bfloat16":
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    sd_used = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pnames = {k for k, _ in model.named_parameters()}
    if set(sd_used) != pnames:
        print("WARNING: state_dict keys that are not parameters (not re-randomised):",
              sorted(set(sd_used) - pnames), flush=True)

    T, P, S = spec["T"], spec["P"], spec["S"]
    ids = torch.randint(3, 256, (1, T), generator=torch.Generator().manual_seed(spec["tok_seed"]))
    short = torch.randint(3, 256, (1, S), generator=torch.Generator().manual_seed(spec["short_seed"]))
    assert T > cfg.chunk_size and T % cfg.chunk_size != 0 and S < cfg.chunk_size and 0 < P < T

    model_dev = model.to(device)
    r = run_refs(model_dev, ids.to(device), short.to(device), P, L)

    nums = {
        "full_vs_step_max_abs": maxabs(r["full"], r["step"]),
        "full_cache_vs_full_max_abs": maxabs(r["full_cache_logits"], r["full"]),
        "prefix_vs_step_max_abs": maxabs(r["prefix_logits"], r["step"][:P]),
        "continue_vs_step_max_abs": maxabs(r["continue"], r["step"][P:]),
        "continue_vs_full_max_abs": maxabs(r["continue"], r["full"][P:]),
        "state_prefix_vs_step_state_at_P_max_abs_per_layer": state_diff(r["state_prefix"], r["state_step_P"]),
        "state_final_step_vs_full_forward_state_max_abs_per_layer": state_diff(r["state_final"], r["state_full"]),
        "state_final_step_vs_after_continue_max_abs_per_layer": state_diff(r["state_final"], r["state_after_continue"]),
        "logits_max_abs": float(r["full"].abs().max()),
        "state_C_max_abs": max(float(s[0].abs().max()) for s in r["state_final"]),
        "state_m_range": [min(float(s[2].min()) for s in r["state_final"]),
                          max(float(s[2].max()) for s in r["state_final"])],
    }
    # Cross-device check (informative only; the saved references come from `device`).
    other = None
    if torch.cuda.is_available():
        other = "cuda" if device == "cpu" else "cpu"
        m2 = copy.deepcopy(model_dev).to(other)
        with torch.no_grad():
            f2 = m2(input_ids=ids.to(other), use_cache=False).logits[0].float().cpu()
            cache, st = None, []
            for t in range(T):
                o = m2(input_ids=ids[:, t:t + 1].to(other), cache_params=cache, use_cache=True)
                cache = o.cache_params
                st.append(o.logits[0, -1].float().cpu())
        nums[f"cross_device_{other}_full_max_abs"] = maxabs(f2, r["full"])
        nums[f"cross_device_{other}_step_max_abs"] = maxabs(torch.stack(st), r["step"])
        del m2
    for k, v in nums.items():
        print(f"  {k}: {v}", flush=True)
    assert nums["full_vs_step_max_abs"] < 1e-3, "HF full vs step differ too much"
    assert nums["continue_vs_step_max_abs"] < 1e-4, "continue vs step differ too much"
    assert nums["prefix_vs_step_max_abs"] < 1e-3

    # Save the model (bf16 checkpoints: convert the exact bf16-representable fp32 values).
    model_cpu = model_dev.to("cpu")
    if spec["weight_dtype"] == "bfloat16":
        model_cpu = model_cpu.to(torch.bfloat16)
    model_cpu.save_pretrained(d)
    st_path = os.path.join(d, "model.safetensors")
    want_dt = getattr(torch, spec["weight_dtype"])
    with safe_open(st_path, framework="pt") as f:
        keys = set(f.keys())
        assert keys == set(sd_used), (sorted(keys ^ set(sd_used)))
        for k in keys:
            t = f.get_tensor(k)
            assert t.dtype == want_dt, (k, t.dtype)
            assert torch.equal(t.to(torch.float32), sd_used[k]), f"saved {k} != values used"
    print(f"  saved {len(keys)} {spec['weight_dtype']} tensors == the fp32 values used: OK", flush=True)
    for fn in ("config.json", "generation_config.json"):
        assert os.path.exists(os.path.join(d, fn)), fn
    # Reload the saved files (as fp32) and check the full forward reproduces the stored logits.
    m3 = xLSTMForCausalLM.from_pretrained(d, dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        f3 = m3(input_ids=ids.to(device), use_cache=False).logits[0].float().cpu()
    nums["reload_full_vs_full_max_abs"] = maxabs(f3, r["full"])
    print(f"  reload_full_vs_full_max_abs: {nums['reload_full_vs_full_max_abs']}", flush=True)
    assert nums["reload_full_vs_full_max_abs"] == 0.0 or nums["reload_full_vs_full_max_abs"] < 1e-6

    def w(fn, arr, dt):
        arr = np.ascontiguousarray(np.asarray(arr).astype(dt))
        arr.tofile(os.path.join(d, fn))
        return list(arr.shape)

    shapes = {
        "ref-tokens-long.u32": w("ref-tokens-long.u32", ids[0].numpy(), "<u4"),
        "ref-logits-long-full.f32": w("ref-logits-long-full.f32", r["full"].numpy(), "<f4"),
        "ref-logits-long-step.f32": w("ref-logits-long-step.f32", r["step"].numpy(), "<f4"),
        "ref-tokens-short.u32": w("ref-tokens-short.u32", short[0].numpy(), "<u4"),
        "ref-logits-short-full.f32": w("ref-logits-short-full.f32", r["short"].numpy(), "<f4"),
        "ref-state-prefix.f32": w("ref-state-prefix.f32", state_blob(r["state_prefix"]), "<f4"),
        "ref-logits-continue.f32": w("ref-logits-continue.f32", r["continue"].numpy(), "<f4"),
        "ref-state-final.f32": w("ref-state-final.f32", state_blob(r["state_final"]), "<f4"),
    }
    n_state = L * NH * (DQK * DV + DQK + 1)
    assert shapes["ref-state-prefix.f32"] == [n_state] and shapes["ref-state-final.f32"] == [n_state]

    files = sorted(f for f in os.listdir(d) if f != "ref.json")
    manifest = {
        "name": name,
        "description": "random-weight xLSTM (HF xLSTMForCausalLM, weight_mode single) and HF fp32 reference outputs",
        "T": T, "P": P, "S_short": S, "V": V,
        "n_layers": L, "num_heads": NH, "hidden_size": cfg.hidden_size, "DQK": DQK, "DV": DV,
        "qk_dim": cfg.qk_dim, "v_dim": cfg.v_dim, "ffn_dim": ffn, "chunk_size": cfg.chunk_size,
        "qk_dim_factor": cfg.qk_dim_factor, "v_dim_factor": cfg.v_dim_factor,
        "ffn_proj_factor": cfg.ffn_proj_factor, "ffn_round_up_to_multiple_of": cfg.ffn_round_up_to_multiple_of,
        "gate_soft_cap": cfg.gate_soft_cap, "output_logit_soft_cap": cfg.output_logit_soft_cap,
        "norm_eps": cfg.norm_eps, "eps": cfg.eps,
        "checkpoint_dtype": spec["weight_dtype"],
        "compute": f"float32 on {device} (TF32 off); bf16 checkpoints: fp32 compute from the exact bf16 values",
        "param_seed": spec["param_seed"], "token_seed_long": spec["tok_seed"], "token_seed_short": spec["short_seed"],
        "init": "igate bias N(0,4); fgate bias U(0,4); i/f gate weights N(0,0.04); 1-D norm weights 1+N(0,0.04); "
                "other matrices N(0,1/fan_in); torch.Generator().manual_seed(param_seed), named_parameters order",
        "tokens": "torch.randint(3, 256, (1, n), generator=torch.Generator().manual_seed(seed)); no BOS",
        "shapes": shapes,
        "files": {
            "ref-tokens-long.u32": "[T] uint32 LE token ids",
            "ref-logits-long-full.f32": "[T][V] f32 LE, one forward, use_cache=False",
            "ref-logits-long-step.f32": "[T][V] f32 LE, one token per forward with cache_params",
            "ref-tokens-short.u32": "[S_short] uint32 LE token ids",
            "ref-logits-short-full.f32": "[S_short][V] f32 LE, one forward, use_cache=False",
            "ref-state-prefix.f32": "state after tokens[0:P] (one forward of P tokens, use_cache=True); layout below",
            "ref-logits-continue.f32": "[T-P][V] f32 LE, one forward of tokens[P:T] with the cache after P",
            "ref-state-final.f32": "state after all T tokens, from the token-by-token path; layout below",
        },
        "state_layout": LAYOUT,
        "state_floats": n_state,
        "hf_paths": {
            "long_full": f"{T // cfg.chunk_size} chunk(s) of {cfg.chunk_size} (chunkwise) + {T % cfg.chunk_size} recurrent",
            "prefix": f"{P // cfg.chunk_size} chunk(s) of {cfg.chunk_size} + {P % cfg.chunk_size} recurrent",
            "continue": f"{(T - P) // cfg.chunk_size} chunk(s) of {cfg.chunk_size} + {(T - P) % cfg.chunk_size} recurrent, from the prefix state",
            "short": f"{S} recurrent (S < chunk)",
        },
        "self_consistency": nums,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "python": platform.python_version(),
                     "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "sha256": {f: sha256(os.path.join(d, f)) for f in files},
        "bytes": {f: os.path.getsize(os.path.join(d, f)) for f in files},
    }
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(manifest["bytes"].values())
    print(f"  wrote {d}: {total} bytes in {len(files)} files + ref.json", flush=True)
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    a = ap.parse_args()
    torch.set_float32_matmul_precision("highest")
    command = "python3 scripts/make_xlstm_fixtures.py " + " ".join(
        ["OUT_DIR" if x == a.out_dir else x for x in sys.argv[1:]])
    print(f"torch {torch.__version__} transformers {transformers.__version__} numpy {np.__version__} "
          f"cuda {torch.cuda.is_available()} device {a.device}", flush=True)
    print("xlstm / mlstm_kernels importable: no (HF uses its native PyTorch kernels)", flush=True)
    for name in (a.only or list(MODELS)):
        make(name, MODELS[name], a.out_dir, a.device, command)


if __name__ == "__main__":
    main()
