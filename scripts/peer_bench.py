#!/usr/bin/env python3
"""peer_bench.py: the peers `recur bench` is compared with, at the same 7B shapes, random bf16
weights, on the same GPU, in the same run (scripts/gpu_bench.sh --peers calls this):

  fla-rwkv7        flash-linear-attention's RWKV-7 model (fla.models.RWKV7ForCausalLM), 7.2B shape
  hf-xlstm-triton  transformers xLSTMForCausalLM with the mlstm_kernels Triton kernels (xLSTM 7B)
  hf-xlstm-native  the same model on transformers' pure-PyTorch path

Decode: tokens/s of greedy steps with the model's cache at batch B (3 warm-up steps, then N
timed). Prefill: one forward of a [1, T] prompt with the cache on (after a warm-up of the same
shape, so Triton autotuning is excluded), TTFT = its time. Prints one line per measurement and
writes JSON. Needs torch, transformers 5.x and the peers' wheels (carried to the GPU machine).
"""
import argparse, json, os, sys, time

import torch


def timed(fn, reps=1):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def randomise_(model):
    # Random weights without the models' own (slow, sometimes degenerate) initialisers.
    g = torch.Generator(device="cuda").manual_seed(2026)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p.shape[-1] ** -0.5, generator=g)
            elif name.endswith("bias"):
                p.uniform_(-1.0, 1.0, generator=g)
            else:
                p.uniform_(0.8, 1.2, generator=g)


def build(which):
    torch.set_default_dtype(torch.bfloat16)
    if which == "fla-rwkv7":
        from fla.models import RWKV7Config, RWKV7ForCausalLM
        cfg = RWKV7Config(hidden_size=4096, num_hidden_layers=32, head_dim=64, intermediate_size=16384,
                          vocab_size=65536, decay_low_rank_dim=128, a_low_rank_dim=128, v_low_rank_dim=96,
                          gate_low_rank_dim=480)
        with torch.device("cuda"):
            model = RWKV7ForCausalLM(cfg)
    else:
        from transformers import xLSTMConfig, xLSTMForCausalLM
        kw = dict(mode="inference", return_last_states=True, use_cache=True, weight_mode="single")
        if which == "hf-xlstm-triton":
            kw.update(chunkwise_kernel="chunkwise--triton_limit_chunk", sequence_kernel="native_sequence__triton",
                      step_kernel="triton")
        else:
            kw.update(chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
                      step_kernel="native")
        cfg = xLSTMConfig(**kw)   # defaults = xLSTM 7B (models/XLSTM.md §1)
        with torch.device("cuda"):
            model = xLSTMForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16).eval()
    randomise_(model)
    return model, cfg.vocab_size


@torch.no_grad()
def decode_tps(model, V, B, steps):
    ids = torch.randint(3, min(V, 50000), (B, 1), device="cuda")
    out = model(input_ids=ids, use_cache=True)
    cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else out.cache_params
    key = "past_key_values" if getattr(out, "past_key_values", None) is not None else "cache_params"

    def step():
        nonlocal out, ids
        out = model(input_ids=ids, use_cache=True, **{key: cache})
        ids = out.logits[:, -1:].argmax(-1)

    for _ in range(3):
        step()
    dt = timed(step, steps)
    return dt * 1e3, B / dt


@torch.no_grad()
def prefill(model, V, T):
    ids = torch.randint(3, min(V, 50000), (1, T), device="cuda")
    f = lambda: model(input_ids=ids, use_cache=True)
    f()  # warm-up (autotuning)
    dt = timed(f)
    return dt * 1e3, T / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--which", required=True, choices=["fla-rwkv7", "hf-xlstm-triton", "hf-xlstm-native"])
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--prompts", default="2048,8192")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import transformers
    print(f"# {a.which}: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}", flush=True)
    t0 = time.perf_counter()
    model, V = build(a.which)
    print(f"# built in {time.perf_counter() - t0:.1f} s, {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B params",
          flush=True)
    rows = []
    for B in [int(x) for x in a.batches.split(",") if x]:
        try:
            ms, tps = decode_tps(model, V, B, a.steps)
            rows.append(dict(what="decode", shape=f"batch {B}", ms=ms, tok_s=tps))
            print(f"  {a.which:16s} decode  batch {B:<6d} {ms:10.3f} ms {tps:12.1f} tok/s", flush=True)
        except Exception as e:  # report and go on: one failure must not hide the rest
            print(f"  {a.which:16s} decode  batch {B:<6d} FAILED: {type(e).__name__}: {str(e)[:200]}", flush=True)
        torch.cuda.empty_cache()
    for T in [int(x) for x in a.prompts.split(",") if x]:
        try:
            ms, tps = prefill(model, V, T)
            rows.append(dict(what="prefill", shape=f"prompt {T}", ms=ms, tok_s=tps,
                             peak_gib=torch.cuda.max_memory_allocated() / 2**30))
            print(f"  {a.which:16s} prefill prompt {T:<6d} {ms:10.3f} ms {tps:12.1f} tok/s", flush=True)
        except Exception as e:
            print(f"  {a.which:16s} prefill prompt {T:<6d} FAILED: {type(e).__name__}: {str(e)[:200]}", flush=True)
        torch.cuda.empty_cache()
    if a.json:
        json.dump(dict(which=a.which, device=torch.cuda.get_device_name(), rows=rows), open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
