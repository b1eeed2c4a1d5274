#!/usr/bin/env python3
"""plot_benchmarks.py: tables and plots of a serving-benchmark run (scripts/gpu_serving_bench.sh).

  plot_benchmarks.py --in RUN_DIR --out REPORT_DIR [--price-per-hour USD] [--no-plots]

Reads from RUN_DIR (what gpu_serving_bench.sh writes to $OUT):
  recur-MODEL-LAYOUT.json   `recur bench --json` (LAYOUT 1gpu, tp2, pp2): prefill rows (TTFT,
                            memory in use), decode rows per batch, decode@context rows
  serve-MODEL-cN.json       `recur_loadgen --json` at concurrency N
  peer-ENGINE.json          scripts/context_sweep.py --json (llama3-8b, fla-rwkv7, hf-xlstm-triton)
  env.txt, stages.tsv       the machine and what each stage did
and writes to REPORT_DIR: summary.md (every table: TTFT, decode at batch 1 and 16, memory per
context with recur-vs-peer ratios; where the transformer runs out of memory, measured and
computed from its KV bytes; serving latency percentiles per concurrency; cost per million
output tokens when --price-per-hour is given: price / 3600 / (tokens/s / 1e6), times the GPUs
used), the PNGs (throughput, memory and TTFT vs context, latency percentiles vs concurrency)
unless --no-plots or matplotlib is missing, and data/ (a copy of the inputs).

Only standard-library Python and, for the plots, matplotlib (Debian python3-matplotlib).
"""
import argparse, glob, json, math, os, re, shutil, sys

RECUR_MODELS = {"rwkv7-7b": "RWKV-7 7.2B", "xlstm-7b": "xLSTM 7B"}
PEERS = {"llama3-8b": "Llama-3-8B shape (PyTorch SDPA)", "fla-rwkv7": "fla RWKV-7", "hf-xlstm-triton": "HF xLSTM + Triton"}
# which recur model each recurrent peer is the same model as (the transformer: both)
PEER_OF = {"fla-rwkv7": "rwkv7-7b", "hf-xlstm-triton": "xlstm-7b"}
GIB = 2 ** 30


def fmt(x, unit=""):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        s = f"{x:,.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s + unit


def ctx_name(L):
    if L >= 1 << 20 and L % (1 << 20) == 0:
        return f"{L >> 20}M"
    if L >= 1024 and L % 1024 == 0:
        return f"{L >> 10}K"
    return str(L)


# ------------------------------------------------------------------ loading


class Cell:
    """A measurement or why there is none (status: ok, oom, skipped, error, missing)."""

    def __init__(self, value=None, status="ok", note=""):
        self.value, self.status, self.note = value, status, note

    def show(self, unit=""):
        if self.status == "ok":
            return fmt(self.value, unit)
        return {"oom": "OOM", "skipped": "skipped", "missing": "—"}.get(self.status, self.status)


MISSING = Cell(None, "missing")


def load_recur(path):
    d = json.load(open(path))
    r = dict(raw=d, prefill={}, ctx_decode={}, decode={}, max_batch=d.get("max_batch", 0),
             state_bytes=d.get("state_bytes"), device=d.get("device", ""))
    for row in d.get("rows", []):
        n = row.get("n")
        if n is None:   # JSON from before 'n': the number in the shape
            m = re.search(r"(\d+)", row.get("shape", ""))
            n = int(m.group(1)) if m else None
        if row["what"] == "prefill":
            r["prefill"][n] = row
        elif row["what"] == "decode@context":
            r["ctx_decode"][n] = row
        elif row["what"] == "decode":
            r["decode"][n] = row
    return r


def load_peer(path):
    d = json.load(open(path))
    p = dict(raw=d, prefill={}, decode={}, memory={})
    for row in d.get("rows", []):
        if row["what"] == "prefill":
            p["prefill"][row["context"]] = row
        elif row["what"] == "decode":
            p["decode"][(row["context"], row["batch"])] = row
        elif row["what"] == "memory":
            p["memory"][row["context"]] = row
    return p


def load(indir):
    D = dict(recur={}, peers={}, serve={}, env={}, stages=[])
    for f in sorted(glob.glob(os.path.join(indir, "recur-*.json"))):
        m = re.match(r"recur-(.+)-(1gpu|tp2|pp2)\.json$", os.path.basename(f))
        if m:
            D["recur"][(m.group(1), m.group(2))] = load_recur(f)
    for f in sorted(glob.glob(os.path.join(indir, "peer-*.json"))):
        name = re.match(r"peer-(.+)\.json$", os.path.basename(f)).group(1)
        D["peers"][name] = load_peer(f)
    for f in sorted(glob.glob(os.path.join(indir, "serve-*-c*.json"))):
        m = re.match(r"serve-(.+)-c(\d+)\.json$", os.path.basename(f))
        if m:
            D["serve"].setdefault(m.group(1), {})[int(m.group(2))] = json.load(open(f))
    envp = os.path.join(indir, "env.txt")
    if os.path.exists(envp):
        for line in open(envp):
            if ":" in line:
                k, v = line.split(":", 1)
                D["env"].setdefault(k.strip(), []).append(v.strip())
    stp = os.path.join(indir, "stages.tsv")
    if os.path.exists(stp):
        lines = [l.rstrip("\n").split("\t") for l in open(stp) if l.strip()]
        if lines:
            D["stages"] = [dict(zip(lines[0], l)) for l in lines[1:]]
    return D


# ------------------------------------------------------------------ the series


def engines(D):
    """(key, label, gpus) of every engine in the run, recur first."""
    out = []
    for layout in ("1gpu", "tp2", "pp2"):
        for m in RECUR_MODELS:
            if (m, layout) in D["recur"]:
                lab = "recur " + RECUR_MODELS[m] + ("" if layout == "1gpu" else " " + layout.upper())
                out.append((("recur", m, layout), lab, 1 if layout == "1gpu" else 2))
    for p in PEERS:
        if p in D["peers"]:
            out.append((("peer", p), PEERS[p], 1))
    return out


def contexts(D):
    s = set()
    for r in D["recur"].values():
        s.update(k for k in r["prefill"] if k)
    for p in D["peers"].values():
        s.update(p["prefill"])
    return sorted(s)


def mem_contexts(D):
    s = set()
    for p in D["peers"].values():
        s.update(p["memory"])
    return sorted(set(contexts(D)) | s)


def peer_cell(row, key):
    if row is None:
        return MISSING
    if row.get("status", "ok") != "ok":
        return Cell(None, row["status"], row.get("note", ""))
    return Cell(row.get(key))


def ttft(D, eng, L):
    if eng[0] == "recur":
        row = D["recur"][(eng[1], eng[2])]["prefill"].get(L)
        return Cell(row["ms"]) if row else MISSING
    return peer_cell(D["peers"][eng[1]]["prefill"].get(L), "ttft_ms")


def prefill_tps(D, eng, L):
    if eng[0] == "recur":
        row = D["recur"][(eng[1], eng[2])]["prefill"].get(L)
        return Cell(row["throughput"]) if row else MISSING
    return peer_cell(D["peers"][eng[1]]["prefill"].get(L), "tok_s")


def decode_tps(D, eng, L, B):
    """Decode tokens/s at batch B with the context at L. recur: batch 1 from the
    decode@context rows; other batches from the decode rows (a fixed-size state: the same
    at every L, marked 'flat')."""
    if eng[0] == "recur":
        r = D["recur"][(eng[1], eng[2])]
        if B == 1 and L in r["ctx_decode"]:
            return Cell(r["ctx_decode"][L]["throughput"])
        if L not in r["prefill"] and B == 1:
            return MISSING
        row = r["decode"].get(B)
        return Cell(row["throughput"], "ok", "flat") if row else MISSING
    return peer_cell(D["peers"][eng[1]]["decode"].get((L, B)), "tok_s")


def memory_gib(D, eng, L, B=1):
    if eng[0] == "recur":
        row = D["recur"][(eng[1], eng[2])]["prefill"].get(L)
        return Cell(row["mem_gib"]) if row and B == 1 and row.get("mem_gib", 0) > 0 else MISSING
    p = D["peers"][eng[1]]
    if B == 1:
        row = p["prefill"].get(L) or p["memory"].get(L)
    else:
        row = p["decode"].get((L, B))
    return peer_cell(row, "device_used_gib")


def ratio(num, den):
    if num.status == "ok" and den.status == "ok" and num.value and den.value:
        return Cell(num.value / den.value)
    if den.status == "ok" and num.status == "oom":
        return Cell(None, "peer OOM")
    return MISSING


# ------------------------------------------------------------------ tables


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def comparisons(D):
    """(label, recur engine, peer engine): the ratios shown next to each table."""
    E = {e[0]: e for e in engines(D)}
    out = []
    for p, m in PEER_OF.items():
        if ("peer", p) in E and ("recur", m, "1gpu") in E:
            out.append((f"recur {RECUR_MODELS[m]} vs {PEERS[p]}", ("recur", m, "1gpu"), ("peer", p)))
    if ("peer", "llama3-8b") in E:
        for m in RECUR_MODELS:
            if ("recur", m, "1gpu") in E:
                out.append((f"recur {RECUR_MODELS[m]} vs transformer", ("recur", m, "1gpu"), ("peer", "llama3-8b")))
    return out


def metric_table(D, title, get, unit, lower_is_better, note, ctxs=None):
    ctxs = ctxs or contexts(D)
    es = engines(D)
    comps = comparisons(D)
    head = ["context"] + [lab for _, lab, _ in es] + [f"{c[0]} ({'peer ÷ recur' if lower_is_better else 'recur ÷ peer'})" for c in comps]
    rows = []
    for L in ctxs:
        cells = [ctx_name(L)] + [get(D, e, L).show() for e, _, _ in es]
        for _, re_, pe in comps:
            a, b = get(D, re_, L), get(D, pe, L)
            r = ratio(b, a) if lower_is_better else ratio(a, b)
            cells.append(r.show("×") if r.status == "ok" else r.show())
        rows.append(cells)
    return f"### {title}\n\n{note}\n\n" + table(head, rows)


def oom_section(D):
    out = ["### Where the transformer runs out of memory\n"]
    p = D["peers"].get("llama3-8b")
    if not p:
        return "### Where the transformer runs out of memory\n\nThe transformer was not run.\n"
    raw = p["raw"]
    first = {}
    for row in raw["rows"]:
        if row.get("status") == "oom":
            key = (row["what"], row["batch"])
            first[key] = min(first.get(key, 1 << 62), row["context"])
    if first:
        out.append("Measured (the first context whose allocation failed):\n")
        for (what, B), L in sorted(first.items(), key=lambda x: (x[0][1], x[1])):
            out.append(f"- batch {B}, {what}: out of memory at {ctx_name(L)} tokens")
        out.append("")
    else:
        out.append("Measured: no out-of-memory in the contexts run.\n")
    kv, tot, w = raw.get("kv_bytes_per_token"), raw.get("total_gib"), raw.get("weights_used_gib")
    if kv and tot and w:
        free = (tot - w) * GIB
        out.append(f"Computed from its KV cache ({kv / 1024:.0f} KiB per token: K and V of every layer in bf16) "
                   f"and the memory left after its weights ({tot - w:.1f} of {tot:.1f} GiB; activations not counted, "
                   "so these are upper bounds):\n")
        rows = [[str(B), ctx_name(int(free // (B * kv)))] for B in (1, 16, 64, 256)]
        out.append(table(["batch", "longest context that fits"], rows))
        rows = [[ctx_name(L), str(int(free // (L * kv)))] for L in contexts(D) + [1 << 20]]
        out.append(table(["context", "most sequences that fit"], rows))
    for (m, layout), r in sorted(D["recur"].items()):
        if layout != "1gpu":
            continue
        mb = r.get("max_batch") or 0
        sb = r.get("state_bytes") or 0
        out.append(f"- recur {RECUR_MODELS.get(m, m)}: the state is {sb / 2**20:.2f} MiB per sequence at any context"
                   + (f"; {mb:,} sequences fit (recur bench's largest batch), whatever the context." if mb else "."))
    return "\n".join(out) + "\n"


def serve_section(D):
    if not D["serve"]:
        return "### Serving over HTTP\n\nNo serving runs in this directory.\n"
    out = ["### Serving over HTTP (recur serve + recur_loadgen --http)\n",
           "Closed loop: N streams in flight, a new request when one ends; prompts and output lengths as in each "
           "run's config; TTFT from sending the request to the first text; ITL between stream chunks with text; "
           "TPOT = (last − first) / (tokens − 1) per request.\n"]
    for m, runs in sorted(D["serve"].items()):
        rows = []
        for n in sorted(runs):
            j = runs[n]
            gm = j.get("gpu_memory_mib") or []
            peak = max((g["peak"] for g in gm if g.get("index", 0) == 0), default=None)
            t, i, tp, e = j["ttft_ms"], j["itl_ms"], j["tpot_ms"], j["e2e_ms"]
            rows.append([str(n), f"{j['requests_ok']} ({j['requests_failed']})", fmt(j["requests_per_s"]),
                         fmt(j["output_tokens_per_s"]), f"{fmt(t['p50'])} / {fmt(t['p90'])} / {fmt(t['p99'])}",
                         f"{fmt(i['p50'])} / {fmt(i['p90'])} / {fmt(i['p99'])}", fmt(tp["p50"]), fmt(e["p50"]),
                         fmt(peak / 1024 if peak else None)])
        cfg = runs[min(runs)]["config"]
        out.append(f"**{RECUR_MODELS.get(m, m)}** (prompt {cfg['prompt_len']} tokens, output {cfg['output_len']}):\n")
        out.append(table(["concurrency", "requests ok (failed)", "requests/s", "output tok/s", "TTFT p50 / p90 / p99 ms",
                          "ITL p50 / p90 / p99 ms", "TPOT p50 ms", "latency p50 ms", "GPU memory peak GiB"], rows))
    return "\n".join(out) + "\n"


def cost(price, tps, gpus=1):
    return price * gpus / 3600.0 / (tps / 1e6)


def cost_section(D, price):
    if price is None:
        return "### Cost per million output tokens\n\nNo --price-per-hour given: not computed.\n"
    rows = []
    for m, runs in sorted(D["serve"].items()):
        for n in sorted(runs):
            tps = runs[n]["output_tokens_per_s"]
            if tps > 0:
                rows.append([f"recur serve {RECUR_MODELS.get(m, m)}, HTTP, {n} streams", "1", fmt(tps), f"${cost(price, tps):.4f}"])
    for e, lab, g in engines(D):
        if e[0] == "recur":
            r = D["recur"][(e[1], e[2])]
            for B in sorted(r["decode"]):
                tps = r["decode"][B]["throughput"]
                tag = " (largest that fits)" if B == r.get("max_batch") else ""
                rows.append([f"{lab}, decode batch {B:,}{tag} (engine)", str(g), fmt(tps), f"${cost(price, tps, g):.4f}"])
        else:
            p = D["peers"][e[1]]
            for (L, B), row in sorted(p["decode"].items()):
                if B > 1 and row.get("status") == "ok":
                    rows.append([f"{lab}, decode batch {B} at {ctx_name(L)} (engine)", str(g), fmt(row["tok_s"]),
                                 f"${cost(price, row['tok_s'], g):.4f}"])
    return (f"### Cost per million output tokens at ${price:.2f} per GPU-hour\n\n"
            "cost = price × GPUs / 3600 ÷ (output tokens/s ÷ 1e6), from the measured throughput of each row; "
            "'engine' rows are decode steps alone (no HTTP, no scheduling), the serve rows are end to end.\n\n"
            + table(["what", "GPUs", "output tok/s", "$ per 1M output tokens"], rows))


def gpu_desc(env):
    """'2 x NVIDIA H200 (143771 MiB), driver 580.x' from env.txt's nvidia-smi lines."""
    gs = [[x.strip() for x in g.split(",")] for g in env.get("gpu", [])]
    gs = [g for g in gs if len(g) >= 4]
    if not gs:
        return "; ".join(env.get("gpu", ["?"]))
    names = sorted({f"{g[1]} ({g[3]})" for g in gs})
    return f"{len(gs)} x " + ", ".join(names) + f", driver {gs[0][2]}"


def header(D, indir, price):
    env = D["env"]
    g = [gpu_desc(env)]
    lines = ["## Serving benchmarks: " + env.get("date_utc", ["?"])[0],
             "",
             f"- GPU: {'; '.join(g)}",
             f"- commit: {env.get('commit', ['unknown'])[0]}; torch {env.get('torch', ['?'])[0]}, "
             f"transformers {env.get('transformers', ['?'])[0]}",
             f"- command: `OUT=... {('PRICE=' + str(price) + ' ') if price is not None else ''}bash scripts/gpu_serving_bench.sh .devbundle` "
             f"(budget {env.get('budget_s', ['?'])[0]} s; each stage's command in docs/benchmarks.md)",
             ""]
    for p, d in D["peers"].items():
        raw = d["raw"]
        extra = ""
        if raw.get("attention"):
            extra = "; attention " + ", ".join(f"{k}: {v.get('chosen')}" for k, v in raw["attention"].items())
        if raw.get("kind") == "transformer":
            extra += f"; CUDA-graph decode {'on' if raw.get('cuda_graph_decode') else 'off'}"
        lines.append(f"- {PEERS.get(p, p)}: {raw.get('params', 0) / 1e9:.2f}B params, warm-up {raw.get('warmup_s', '?')} s{extra}")
    if D["stages"]:
        lines += ["", table(["stage", "GPU", "start s", "took s", "result", "note"],
                            [[s.get("stage", ""), s.get("gpu", ""), s.get("start_s", ""), s.get("elapsed_s", ""),
                              s.get("result", ""), s.get("note", "")] for s in D["stages"]])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ plots


def plots(D, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    es = engines(D)
    ctxs = contexts(D)
    styles = {}
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e", "#17becf", "#7f7f7f"]
    for i, (e, lab, _) in enumerate(es):
        styles[e] = dict(color=colors[i % len(colors)], marker="o" if e[0] == "recur" else "s")
    made = []

    def series(get, e, xs, **kw):
        pts, ooms = [], []
        for L in xs:
            c = get(D, e, L, **kw) if kw else get(D, e, L)
            if c.status == "ok" and c.value is not None:
                pts.append((L, c.value))
            elif c.status == "oom":
                ooms.append(L)
        return pts, ooms

    def draw(ax, get, ylabel, xs, logy=True, **kw):
        for e, lab, _ in es:
            pts, ooms = series(get, e, xs, **kw)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=lab, **styles[e])
            for L in ooms:
                ax.axvline(L, color=styles[e]["color"], ls=":", lw=1)
                ax.annotate(f"{lab.split(' (')[0]} OOM", (L, 0.97), xycoords=("data", "axes fraction"), rotation=90,
                            va="top", ha="right", fontsize=7, color=styles[e]["color"])
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([ctx_name(L) for L in xs])
        ax.set_xlabel("context (prompt tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)

    gpu = gpu_desc(D["env"])[:90]
    if ctxs:
        fig, axs = plt.subplots(1, 3, figsize=(18, 5.5))
        draw(axs[0], prefill_tps, "prefill tokens/s ([1, L] prompt)", ctxs)
        axs[0].set_title("prefill throughput")
        draw(axs[1], decode_tps, "decode tokens/s", ctxs, B=1)
        axs[1].set_title("decode at batch 1, after a prompt of L")
        draw(axs[2], decode_tps, "decode tokens/s", ctxs, B=16)
        axs[2].set_title("decode at batch 16, cache at L")
        axs[0].legend(fontsize=8)
        fig.suptitle(f"Throughput vs context — {gpu}", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "throughput_vs_context.png"), dpi=110)
        plt.close(fig)
        made.append("throughput_vs_context.png")

        fig, ax = plt.subplots(figsize=(9, 5.5))
        draw(ax, ttft, "time to first token (ms)", ctxs)
        ax.set_title(f"TTFT of a [1, L] prompt — {gpu}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "ttft_vs_context.png"), dpi=110)
        plt.close(fig)
        made.append("ttft_vs_context.png")

        mctx = mem_contexts(D)
        fig, ax = plt.subplots(figsize=(9, 5.5))
        draw(ax, memory_gib, "GPU memory in use (GiB)", mctx, logy=False)
        if "llama3-8b" in D["peers"]:
            pts, ooms = series(memory_gib, ("peer", "llama3-8b"), mctx, B=16)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--", label=PEERS["llama3-8b"] + ", batch 16",
                        **styles[("peer", "llama3-8b")])
            for L in ooms:
                ax.annotate("batch 16 OOM", (L, 0.5), xycoords=("data", "axes fraction"), rotation=90, fontsize=7)
            tot = D["peers"]["llama3-8b"]["raw"].get("total_gib")
            if tot:
                ax.axhline(tot, color="k", lw=1, ls="--")
                ax.annotate(f"GPU memory {tot:.0f} GiB", (mctx[0], tot), va="bottom", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_title(f"Memory vs context (batch 1 unless marked) — {gpu}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "memory_vs_context.png"), dpi=110)
        plt.close(fig)
        made.append("memory_vs_context.png")

    if D["serve"]:
        fig, axs = plt.subplots(1, 2, figsize=(14, 5.5))
        for k, (key, title) in enumerate([("ttft_ms", "time to first token"), ("itl_ms", "inter-token latency")]):
            ax = axs[k]
            for i, (m, runs) in enumerate(sorted(D["serve"].items())):
                ns = sorted(runs)
                for p, ls in (("p50", "-"), ("p90", "--"), ("p99", ":")):
                    ax.plot(ns, [runs[n][key][p] for n in ns], ls=ls, marker="o", color=colors[i],
                            label=f"{RECUR_MODELS.get(m, m)} {p}")
                ax.set_xscale("log", base=2)
                ax.set_xticks(ns)
                ax.set_xticklabels([str(n) for n in ns])
            if all(runs[n][key][p] > 0 for runs in D["serve"].values() for n in runs for p in ("p50", "p90", "p99")):
                ax.set_yscale("log")   # (a zero gap, chunks that came in one read, needs a linear axis)
            ax.set_xlabel("concurrent streams")
            ax.set_ylabel("ms")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"recur serve over HTTP: latency percentiles vs concurrency — {gpu}", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "latency_vs_concurrency.png"), dpi=110)
        plt.close(fig)
        made.append("latency_vs_concurrency.png")
    return made


# ------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="indir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--price-per-hour", type=float, default=None, help="GPU price in USD per GPU-hour")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()
    if a.price_per_hour is not None and not a.price_per_hour > 0:
        sys.exit("plot_benchmarks.py: --price-per-hour must be > 0")
    D = load(a.indir)
    if not D["recur"] and not D["peers"] and not D["serve"]:
        sys.exit(f"plot_benchmarks.py: no recur-*.json, peer-*.json or serve-*-c*.json in {a.indir}")
    os.makedirs(os.path.join(a.out, "data"), exist_ok=True)
    for pat in ("recur-*.json", "peer-*.json", "serve-*-c*.json", "env.txt", "stages.tsv"):
        for f in glob.glob(os.path.join(a.indir, pat)):
            if os.path.abspath(os.path.dirname(f)) != os.path.abspath(os.path.join(a.out, "data")):
                shutil.copy(f, os.path.join(a.out, "data", os.path.basename(f)))

    made, why = [], ""
    if not a.no_plots:
        try:
            made = plots(D, a.out)
        except ImportError as e:
            why = f"plots not drawn: {e} (Debian: python3-matplotlib)"
    parts = [header(D, a.indir, a.price_per_hour)]
    if made:
        parts.append("\n".join(f"![{m[:-4].replace('_', ' ')}]({m})" for m in made) + "\n")
    elif why:
        parts.append(why + "\n")
    if contexts(D):
        parts.append(metric_table(D, "Time to first token (ms)", ttft, "ms", True,
                                  "One [1, L] prompt; the first token sampled (recur) or argmax'd (peers)."))
        parts.append(metric_table(D, "Prefill throughput (tokens/s)", prefill_tps, "", False, "L ÷ TTFT."))
        parts.append(metric_table(D, "Decode at batch 1 after a prompt of L (tokens/s)",
                                  lambda D_, e, L: decode_tps(D_, e, L, 1), "", False,
                                  "Decode steps of the sequence the prompt started."))
        parts.append(metric_table(D, "Decode at batch 16 with the cache at L (tokens/s)",
                                  lambda D_, e, L: decode_tps(D_, e, L, 16), "", False,
                                  "The transformer: 16 KV caches of L positions. recur and the recurrent peers: "
                                  "their state has the same size at any L, so it is measured once and shown on every row."))
        parts.append(metric_table(D, "GPU memory in use at batch 1 (GiB)", lambda D_, e, L: memory_gib(D_, e, L, 1), "",
                                  True, "The device's memory in use (cudaMemGetInfo, as nvidia-smi shows it) after a "
                                  "[1, L] prompt; memory-only contexts: recur processes the prompt, the transformer "
                                  "allocates its KV cache, the recurrent peers feed it in 65,536-token pieces.",
                                  ctxs=mem_contexts(D)))
        if "llama3-8b" in D["peers"]:
            parts.append(metric_table(D, "GPU memory in use at batch 16 (GiB)",
                                      lambda D_, e, L: memory_gib(D_, e, L, 16), "", True,
                                      "Only the peers record it (recur's batch-16 state: 16 × the state per sequence)."))
        parts.append(oom_section(D))
    parts.append(serve_section(D))
    parts.append(cost_section(D, a.price_per_hour))
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(parts))
    print(f"plot_benchmarks.py: {os.path.join(a.out, 'summary.md')}" + (f" and {', '.join(made)}" if made else "")
          + (f" ({why})" if why else ""))


if __name__ == "__main__":
    main()
