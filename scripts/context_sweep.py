#!/usr/bin/env python3
"""context_sweep.py: the peers of recur's context sweep, on one GPU, random bf16 weights:

  llama3-8b        a Llama-3-8B-shaped transformer written here in plain PyTorch (32 layers,
                   hidden 4096, 32 query / 8 KV heads of 128, SwiGLU 14336, vocab 128256):
                   fused QKV and gate/up matrices, a KV cache allocated once per run (no
                   torch.cat per token), scaled_dot_product_attention with the fastest backend
                   this GPU offers (cuDNN, flash or memory-efficient, timed at start-up and
                   recorded), and the decode step captured in a CUDA graph (no Python launch
                   cost). Rotary embedding without Llama 3's frequency rescaling (same cost).
  fla-rwkv7        flash-linear-attention's RWKV7ForCausalLM at the RWKV-7 7.2B shape
  hf-xlstm-triton  transformers' xLSTMForCausalLM with the mlstm_kernels Triton kernels
  (the last two are built as in scripts/peer_bench.py and run eagerly, as shipped)

Per context L (--contexts): TTFT of a [1, L] prompt (one forward, logits of the last
position only, first token = argmax), then --steps timed decode steps at batch 1 from that
cache; then decode at the other --batches with a cache of length L (the transformer: a KV
cache of L positions per sequence, random values, which cost the same as real ones; the
recurrent peers: the state after a 16-token prompt, which has the same size at any L, so it
is measured once, at the first L). Memory per row: the peak of torch's allocator
(max_memory_allocated, reset before the row) and the device's memory in use after the row
(cudaMemGetInfo, the figure nvidia-smi shows, comparable with recur's). Out-of-memory is
caught and recorded as status "oom": for the transformer that is its limit point. --mem-only
L: memory alone at a context too long to time (the transformer: allocate its KV cache; the
recurrent peers: the prompt fed in 65,536-token pieces through their cache, if --deadline-s
leaves time for it).

--deadline-s: a measurement whose estimate (from the previous context, quadratic in L for the
transformer's prefill, linear otherwise) would end past the deadline is skipped with status
"skipped" and the reason. The JSON (--json) is rewritten after every row, so a run cut short
by a timeout keeps what it measured.

Needs torch with CUDA (2.11 on the GPU machines), transformers 5.x and, for the peers, their
wheels (scripts/gpu_serving_bench.sh installs them from .whl/). --device cpu --tiny runs
small shapes on the CPU: a smoke test of this script (tests/test_context_sweep.sh), not a
measurement.
"""
import argparse, gc, json, math, os, sys, time, traceback

import torch
import torch.nn.functional as F

T_START = time.perf_counter()


def now():
    return time.perf_counter() - T_START


def is_oom(e):
    if isinstance(e, torch.OutOfMemoryError):
        return True
    s = str(e).lower()
    return "out of memory" in s or "can't allocate memory" in s or "alloc_failed" in s


class Run:
    """The JSON being written: one dict, rows appended, saved after each row."""

    def __init__(self, path, meta):
        self.path, self.d = path, dict(meta, rows=[])

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.d, f, indent=1)
        os.replace(tmp, self.path)

    def row(self, **r):
        r.setdefault("status", "ok")
        r["t_s"] = round(now(), 2)
        self.d["rows"].append(r)
        self.save()
        keys = [k for k in ("ttft_ms", "first_prefill_ms", "step_ms", "tok_s", "peak_alloc_gib", "device_used_gib") if r.get(k) is not None]
        print(f"  {self.d['engine']:16s} {r['what']:8s} L={r['context']:<8d} B={r['batch']:<4d} {r['status']:8s} " +
              " ".join(f"{k}={r[k]:.4g}" for k in keys) + (f"  ({r['note']})" if r.get("note") else ""), flush=True)
        return r


class Dev:
    """Memory and timing on the device (CUDA, or the CPU for the smoke test)."""

    def __init__(self, name):
        self.cuda = name == "cuda"
        self.dev = torch.device(name)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self):
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_alloc_gib(self):
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def used_gib(self):
        if not self.cuda:
            return None
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**30

    def total_gib(self):
        return torch.cuda.mem_get_info()[1] / 2**30 if self.cuda else None

    def cleanup(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def timed(dev, fn, reps=1):
    dev.sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    dev.sync()
    return (time.perf_counter() - t0) / reps


def tensor_bytes(obj, depth=0, seen=None):
    """Bytes of every tensor reachable from a cache object (lists, dicts, attributes)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return 0
    seen.add(id(obj))
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, depth + 1, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, depth + 1, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(tensor_bytes(v, depth + 1, seen) for v in vars(obj).values())
    return 0


# ------------------------------------------------------------------ the transformer


class Llama:
    """A Llama-3-8B-shaped decoder in plain PyTorch (see the module docstring)."""

    def __init__(self, dev, tiny=False, graphs=True):
        self.dev, self.graphs = dev, graphs and dev.cuda
        if tiny:
            self.L, self.D, self.I, self.H, self.KV, self.V = 2, 128, 352, 4, 2, 512
        else:
            self.L, self.D, self.I, self.H, self.KV, self.V = 32, 4096, 14336, 32, 8, 128256
        self.hd = self.D // self.H
        d, dt = dev.dev, torch.bfloat16
        g = torch.Generator(device=d).manual_seed(2026)

        def w(o, i):
            return torch.empty(o, i, device=d, dtype=dt).normal_(0.0, i ** -0.5, generator=g)

        def ln():
            return torch.empty(self.D, device=d, dtype=dt).uniform_(0.8, 1.2, generator=g)

        self.emb = torch.empty(self.V, self.D, device=d, dtype=dt).normal_(0.0, 1.0, generator=g)
        self.layers = [dict(ln1=ln(), wqkv=w((self.H + 2 * self.KV) * self.hd, self.D), wo=w(self.D, self.H * self.hd),
                            ln2=ln(), w13=w(2 * self.I, self.D), w2=w(self.D, self.I)) for _ in range(self.L)]
        self.norm, self.head = ln(), w(self.V, self.D)
        self.inv_freq = 1.0 / (500000.0 ** (torch.arange(0, self.hd, 2, device=d, dtype=torch.float32) / self.hd))
        self.kv_bytes_per_token = 2 * self.L * self.KV * self.hd * 2   # K and V, bf16
        self.params = sum(t.numel() for t in [self.emb, self.norm, self.head] +
                          [t for lw in self.layers for t in lw.values()])
        self.backend = {"prefill": None, "decode": None}

    # -- pieces
    def rope(self, pos):   # pos: [T] int64 -> cos, sin [T, hd/2] (bf16)
        f = pos.to(torch.float32)[:, None] * self.inv_freq[None]
        return f.cos().to(torch.bfloat16), f.sin().to(torch.bfloat16)

    @staticmethod
    def apply_rope(x, cos, sin):   # x [B, h, T, hd]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def layer(self, lw, x, cos, sin, kc, vc, start, causal):
        B, T, _ = x.shape
        h = F.rms_norm(x, (self.D,), lw["ln1"], 1e-5)
        q, k, v = (h @ lw["wqkv"].t()).split([self.H * self.hd, self.KV * self.hd, self.KV * self.hd], dim=-1)
        q = self.apply_rope(q.view(B, T, self.H, self.hd).transpose(1, 2), cos, sin)
        k = self.apply_rope(k.view(B, T, self.KV, self.hd).transpose(1, 2), cos, sin)
        kc[:, :, start:start + T] = k
        vc[:, :, start:start + T] = v.view(B, T, self.KV, self.hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, kc[:, :, :start + T], vc[:, :, :start + T], is_causal=causal,
                                           enable_gqa=True)
        x = x + o.transpose(1, 2).reshape(B, T, self.H * self.hd) @ lw["wo"].t()
        gu = F.rms_norm(x, (self.D,), lw["ln2"], 1e-5) @ lw["w13"].t()
        gt, up = gu.chunk(2, dim=-1)
        return x + (F.silu(gt) * up) @ lw["w2"].t()

    def logits_last(self, x):
        return F.rms_norm(x[:, -1], (self.D,), self.norm, 1e-5) @ self.head.t()

    def alloc_cache(self, B, n, random=False):
        """K and V for B sequences of n positions, per layer (raises on out-of-memory)."""
        kc, vc = [], []
        for _ in range(self.L):
            for lst in (kc, vc):
                t = torch.empty(B, self.KV, n, self.hd, device=self.dev.dev, dtype=torch.bfloat16)
                if random:
                    t.normal_()
                lst.append(t)
        return kc, vc

    def sdpa_ctx(self, which):
        b = self.backend.get(which)
        if b is None or not self.dev.cuda:
            import contextlib
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([getattr(SDPBackend, b)])

    # -- measurements
    def pick_backends(self, tiny):
        """The fastest SDPA backend for a causal prefill and for a batch-16 decode step."""
        if not self.dev.cuda:
            return {}
        from torch.nn.attention import SDPBackend, sdpa_kernel
        d, out = self.dev.dev, {}
        T, Lk = (256, 1024) if tiny else (8192, 32768)
        shapes = {"prefill": ((1, self.H, T, self.hd), (1, self.KV, T, self.hd), True),
                  "decode": ((16, self.H, 1, self.hd), (16, self.KV, Lk + 1, self.hd), False)}
        for which, (qs, ks, causal) in shapes.items():
            q = torch.randn(qs, device=d, dtype=torch.bfloat16)
            k = torch.randn(ks[0], ks[1], ks[2] + 7, ks[3], device=d, dtype=torch.bfloat16)[:, :, :ks[2]]   # a cache view
            v = torch.randn_like(k)
            times = {}
            for name in ["CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"]:
                try:
                    with sdpa_kernel([getattr(SDPBackend, name)]):
                        f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                        f()
                        times[name] = timed(self.dev, f, 5) * 1e3
                except Exception as e:   # this backend cannot run this shape here
                    times[name] = f"unavailable: {type(e).__name__}: {str(e)[:120]}"
            ok = {n: t for n, t in times.items() if isinstance(t, float)}
            self.backend[which] = min(ok, key=ok.get) if ok else None
            out[which] = dict(chosen=self.backend[which], ms=times)
            del q, k, v
        self.dev.cleanup()
        return out

    def prefill(self, L, steps_after=0):
        """TTFT of [1, L]; the cache has room for decode steps at position L. Returns
        (ttft_s, cache)."""
        d = self.dev.dev
        ids = torch.randint(3, min(self.V, 50000), (1, L), device=d)
        kc, vc = self.alloc_cache(1, L + 1)
        cos, sin = self.rope(torch.arange(L, device=d))

        def run():
            with torch.no_grad(), self.sdpa_ctx("prefill"):
                x = self.emb[ids]
                for i, lw in enumerate(self.layers):
                    x = self.layer(lw, x, cos, sin, kc[i], vc[i], 0, True)
                return self.logits_last(x).argmax(-1)

        dt = timed(self.dev, run)
        del cos, sin
        return dt, (kc, vc)

    def decode(self, B, L, steps, cache=None):
        """Decode steps of B sequences at context L (each step writes position L and attends
        to L + 1 positions: the cost of a step at context L). Returns (step_s, graphed, note)."""
        d = self.dev.dev
        kc, vc = cache if cache is not None else self.alloc_cache(B, L + 1, random=True)
        tok = torch.randint(3, min(self.V, 50000), (B, 1), device=d)
        cos, sin = self.rope(torch.tensor([L], device=d))

        def step():
            with torch.no_grad(), self.sdpa_ctx("decode"):
                x = self.emb[tok]
                for i, lw in enumerate(self.layers):
                    x = self.layer(lw, x, cos, sin, kc[i], vc[i], L, False)
                tok.copy_(self.logits_last(x).argmax(-1, keepdim=True))

        run, graphed, note = step, False, None
        if self.graphs:
            try:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        step()
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    step()
                run, graphed = g.replay, True
            except Exception as e:
                if is_oom(e):
                    raise
                note = f"CUDA graph capture failed, eager: {type(e).__name__}: {str(e)[:120]}"
        for _ in range(3):
            run()
        dt = timed(self.dev, run, steps)
        return dt, graphed, note

    def mem_only(self, L):
        kc, vc = self.alloc_cache(1, L + 1)
        self.dev.sync()
        used = self.dev.used_gib()
        del kc, vc
        return used


# ------------------------------------------------------------------ the recurrent peers


class Recurrent:
    """fla's RWKV-7 or transformers' xLSTM (Triton kernels), built as in peer_bench.py."""

    def __init__(self, which, dev, tiny=False):
        self.which, self.dev = which, dev
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        if tiny:
            self.model, self.V = self._tiny(which)
        else:
            import peer_bench
            self.model, self.V = peer_bench.build(which)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.state_bytes = None
        self.xlstm = which.startswith("hf-xlstm")
        if self.xlstm:
            from transformers.models.xlstm import modeling_xlstm
            self.soft_cap = modeling_xlstm.soft_cap

    def _tiny(self, which):   # the CPU smoke test: transformers' pure-PyTorch xLSTM, small
        if which != "hf-xlstm-triton":
            raise SystemExit(f"context_sweep.py: --tiny has no small {which} (it needs Triton on a GPU)")
        from transformers import xLSTMConfig, xLSTMForCausalLM
        cfg = xLSTMConfig(hidden_size=128, num_hidden_layers=2, num_heads=2, vocab_size=512, mode="inference",
                          return_last_states=True, use_cache=True, weight_mode="single", max_inference_chunksize=256,
                          chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
                          step_kernel="native")
        m = xLSTMForCausalLM(cfg).to(self.dev.dev, torch.bfloat16).eval()
        return m, cfg.vocab_size

    def forward(self, ids, cache):
        """Logits of the last position and the cache after ids."""
        m = self.model
        if self.xlstm:   # the backbone, then the head on the last position only
            out = m.backbone(input_ids=ids, cache_params=cache, use_cache=True)
            h = out.last_hidden_state[:, -1:]
            logits = self.soft_cap(m.lm_head(h.to(m.lm_head.weight.dtype)).float(), m.config.output_logit_soft_cap)
            return logits[:, -1], out.cache_params
        out = m(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    @torch.no_grad()
    def prefill(self, L):
        ids = torch.randint(3, min(self.V, 50000), (1, L), device=self.dev.dev)
        res = {}

        def run():
            logits, cache = self.forward(ids, None)
            res["tok"], res["cache"] = logits.argmax(-1, keepdim=True), cache

        dt = timed(self.dev, run)
        self.state_bytes = tensor_bytes(res["cache"])
        return dt, (res["cache"], res["tok"])

    @torch.no_grad()
    def decode(self, B, L, steps, cache=None):
        """Decode steps at batch B: from the prefilled cache (batch 1), else from the state of
        a 16-token prompt (its size does not depend on the context)."""
        if cache is None:
            _, c = self.forward(torch.randint(3, min(self.V, 50000), (B, 16), device=self.dev.dev), None)
            tok = torch.randint(3, min(self.V, 50000), (B, 1), device=self.dev.dev)
        else:
            c, tok = cache
        st = {"c": c, "tok": tok}

        def step():
            logits, st["c"] = self.forward(st["tok"], st["c"])
            st["tok"] = logits.argmax(-1, keepdim=True)

        for _ in range(3):
            step()
        return timed(self.dev, step, steps), False, None

    @torch.no_grad()
    def mem_only(self, L, piece=65536):
        """The prompt fed in pieces through the cache, as a server would; memory after it."""
        cache, left = None, L
        while left > 0:
            n = min(piece, left)
            _, cache = self.forward(torch.randint(3, min(self.V, 50000), (1, n), device=self.dev.dev), cache)
            left -= n
        self.dev.sync()
        return self.dev.used_gib()


# ------------------------------------------------------------------ the sweep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", required=True, choices=["llama3-8b", "fla-rwkv7", "hf-xlstm-triton"])
    ap.add_argument("--contexts", default="2048,8192,16384,32768,65536,131072")
    ap.add_argument("--mem-only", default="1048576", help="contexts measured for memory only ('' for none)")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--deadline-s", type=float, default=1e9, help="seconds from start; later rows are skipped")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="small shapes (the CPU smoke test)")
    ap.add_argument("--no-graphs", action="store_true", help="the transformer's decode without CUDA graphs")
    ap.add_argument("--no-warm-each", action="store_true",
                    help="time the first prefill of each context (by default one untimed prefill of the same "
                         "length runs first: Triton autotunes per sequence length, which is not the TTFT of a "
                         "server that has seen that length before)")
    a = ap.parse_args()
    contexts = [int(x) for x in a.contexts.split(",") if x]
    mem_only = [int(x) for x in a.mem_only.split(",") if x]
    batches = [int(x) for x in a.batches.split(",") if x]
    dev = Dev(a.device)
    import transformers
    meta = dict(engine=a.which, tool="context_sweep.py", version=1, torch=torch.__version__,
                transformers=transformers.__version__, device=torch.cuda.get_device_name() if dev.cuda else "cpu",
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), tiny=a.tiny, steps=a.steps,
                contexts=contexts, mem_only_contexts=mem_only, batches=batches, deadline_s=a.deadline_s)
    if dev.cuda:
        for k in ("flash_sdp_enabled", "cudnn_sdp_enabled", "mem_efficient_sdp_enabled"):
            f = getattr(torch.backends.cuda, k, None)
            meta[k] = f() if f else None
        meta["total_gib"] = dev.total_gib()
    run = Run(a.json, meta)
    print(f"# {a.which}: torch {torch.__version__}, transformers {transformers.__version__}, {meta['device']}", flush=True)
    t0 = now()
    eng = Llama(dev, a.tiny, graphs=not a.no_graphs) if a.which == "llama3-8b" else Recurrent(a.which, dev, a.tiny)
    dev.sync()
    run.d.update(build_s=round(now() - t0, 2), params=eng.params, weights_used_gib=dev.used_gib())
    if isinstance(eng, Llama):
        run.d.update(kind="transformer", kv_bytes_per_token=eng.kv_bytes_per_token, cuda_graph_decode=eng.graphs,
                     attention=eng.pick_backends(a.tiny))
        print(f"# attention backends: {json.dumps(run.d['attention'])}", flush=True)
    else:
        run.d.update(kind="recurrent", cuda_graph_decode=False)
    # warm-up: kernels loaded, autotuned (Triton) and planned before anything is timed
    t0 = now()
    try:
        w = min(contexts) if contexts else 2048
        _, c = eng.prefill(w)
        eng.decode(1, w, 2, c)
        del c
        dev.cleanup()
        for B in batches:
            if B > 1:
                eng.decode(B, w, 2)
        dev.cleanup()
    except Exception as e:
        print(f"# warm-up failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
        run.d["warmup_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    run.d["warmup_s"] = round(now() - t0, 2)
    run.save()
    print(f"# built in {run.d['build_s']} s, warm-up {run.d['warmup_s']} s, {eng.params / 1e9:.2f}B params", flush=True)

    prev_ttft = {}    # L -> seconds
    prev_step = {}    # B -> (L, seconds)
    once = {}         # recurrent peers: batch -> the row measured at the first context
    transformer = isinstance(eng, Llama)

    def over(est, what):
        left = a.deadline_s - now()
        if est > left:
            return f"skipped: {what} estimated at {est:.0f} s, {max(left, 0):.0f} s left before --deadline-s"
        return None

    for L in contexts:
        # ---- TTFT at batch 1, then decode from that cache
        est = 0.0
        if prev_ttft:
            Lp, tp = max(prev_ttft.items())
            est = tp * ((L / Lp) ** 2 if transformer else L / Lp) * 1.2 * (1 if a.no_warm_each else 2) + 2
        why = over(est, "prefill")
        if why:
            run.row(what="prefill", context=L, batch=1, status="skipped", note=why)
            for B in batches:
                run.row(what="decode", context=L, batch=B, status="skipped", note=why)
            continue
        dev.reset_peak()
        cache = None
        try:
            first_ms = None
            if not a.no_warm_each:
                # untimed, same length: the first use of a shape can autotune (Triton) or plan
                first_s, c = eng.prefill(L)
                first_ms = first_s * 1e3
                del c
                dev.cleanup()
                dev.reset_peak()
            dt, cache = eng.prefill(L)
            prev_ttft[L] = dt
            run.row(what="prefill", context=L, batch=1, ttft_ms=dt * 1e3, tok_s=L / dt, peak_alloc_gib=dev.peak_alloc_gib(),
                    device_used_gib=dev.used_gib(), first_prefill_ms=first_ms,
                    state_bytes=None if transformer else eng.state_bytes)
        except Exception as e:
            cache = None
            dev.cleanup()
            st = "oom" if is_oom(e) else "error"
            run.row(what="prefill", context=L, batch=1, status=st, note=f"{type(e).__name__}: {str(e)[:200]}",
                    device_used_gib=dev.used_gib())
            if st == "error":
                traceback.print_exc()
        for B in batches:
            if not transformer and B > 1 and B in once:
                r = dict(once[B])
                r.update(context=L, note="the state has the same size at any context: measured once, at %d" % once[B]["context"])
                r.pop("t_s", None)
                run.row(**r)
                continue
            if B == 1 and cache is None:
                run.row(what="decode", context=L, batch=1, status="skipped", note="no prefilled cache (see the prefill row)")
                continue
            est = 3.0
            if B in prev_step:
                Lp, sp = prev_step[B]
                est = sp * (a.steps + 5) * (max(L / Lp, 1.0) if transformer else 1.0) + 3
            why = over(est, "decode")
            if why:
                run.row(what="decode", context=L, batch=B, status="skipped", note=why)
                continue
            if B > 1:
                dev.reset_peak()
            try:
                dt, graphed, note = eng.decode(B, L, a.steps, cache if B == 1 else None)
                prev_step[B] = (L, dt)
                r = run.row(what="decode", context=L, batch=B, step_ms=dt * 1e3, tok_s=B / dt,
                            peak_alloc_gib=dev.peak_alloc_gib(), device_used_gib=dev.used_gib(), cuda_graph=graphed,
                            cache="prefilled prompt" if B == 1 else
                            ("random KV of the context length" if transformer else "state after a 16-token prompt"),
                            note=note)
                if not transformer and B > 1:
                    once[B] = r
            except Exception as e:
                dev.cleanup()
                st = "oom" if is_oom(e) else "error"
                run.row(what="decode", context=L, batch=B, status=st, note=f"{type(e).__name__}: {str(e)[:200]}",
                        device_used_gib=dev.used_gib())
                if st == "error":
                    traceback.print_exc()
            if B == 1:
                cache = None   # the batch-1 cache is not needed past here
                dev.cleanup()
        cache = None
        dev.cleanup()

    # ---- memory only
    for L in mem_only:
        dev.reset_peak()
        if not transformer:
            est = 0.0
            if prev_ttft:
                Lp, tp = max(prev_ttft.items())
                est = tp * L / Lp * 1.2 + 5
            why = over(est if prev_ttft else 1e9, "the pieces of the prompt")
            if why:
                run.row(what="memory", context=L, batch=1, status="skipped", note=why)
                continue
        try:
            t0 = now()
            used = eng.mem_only(L)
            run.row(what="memory", context=L, batch=1, device_used_gib=used, peak_alloc_gib=dev.peak_alloc_gib(),
                    elapsed_s=round(now() - t0, 2),
                    note="KV cache allocated" if transformer else "prompt fed in 65,536-token pieces")
        except Exception as e:
            dev.cleanup()
            st = "oom" if is_oom(e) else "error"
            need = eng.kv_bytes_per_token * (L + 1) / 2**30 if transformer else None
            run.row(what="memory", context=L, batch=1, status=st, note=f"{type(e).__name__}: {str(e)[:200]}",
                    kv_needed_gib=need, device_used_gib=dev.used_gib())
        dev.cleanup()
    run.d["total_s"] = round(now(), 2)
    run.save()
    print(f"# {a.which}: done in {run.d['total_s']} s", flush=True)


if __name__ == "__main__":
    main()
