"""Stored results, read back without a GPU: where assets/ is, lesson 08's benchmark JSON turned
into floors and ratios, a text table and figures.

    load("bench_h100.json")    the stored dict (from the checkout or from inside a wheel)
    summarize(result)          add the memory floors and the ratios to fla and SDPA
    table(result), figure(result, D, what), decode_figure(result)

Memory floors (bytes that must move / measured copy bandwidth):
  forward        read q, k, v, write o: 4 tensors of 65,536 x 2048 bf16 = 1.07 GB
  forward+back   forward, then read q, k, v, do and write dq, dk, dv: 11 such tensors
  decode         read and write the fp32 state once: 2 * B * H * D * E * 4 bytes
"""

from __future__ import annotations

import json
import os

from lintutor.experiments.kernel_providers import TOKENS, WIDTH

BENCH = "bench_h100.json"  # the benchmark lesson 08 shows

PROVIDERS = {"lintutor": "lintutor", "fla_chunk": "fla chunk", "fla_fused_chunk": "fla fused_chunk",
             "sdpa_cudnn": "SDPA cuDNN", "sdpa_flash": "SDPA flash",
             "torch_chunked": "PyTorch chunked"}  # fmt: skip


def asset_path(name: str) -> str:
    """Path of a file in assets/: the repository's folder, or the copy inside an installed wheel."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # lintutor/
    for d in (os.path.join(os.path.dirname(package), "assets"), os.path.join(package, "_assets")):
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"assets/{name} is missing (looked next to the package and inside it)")


def load(result: dict | str | None = None, default: str = BENCH) -> dict:
    """A stored result: a dict as is, a path or a file name in assets/ (None: `default`)."""
    if isinstance(result, dict):
        return result
    name = default if result is None else result
    path = name if os.path.isfile(name) else asset_path(name)
    with open(path) as fh:
        return json.load(fh)


def summarize(result: dict) -> dict:
    """Add floors and ratios to the rows; returns result."""
    bw = result["roofs"]["copy_TBps"] * 1e12
    unit = TOKENS * WIDTH * 2  # one (B, T, H*D) bf16 tensor
    result["floor_fwd_ms"] = 4 * unit / bw * 1e3
    result["floor_fwdbwd_ms"] = 11 * unit / bw * 1e3
    for r in result["rows"]:
        fla_f = [r.get(f"{n}_fwd_ms") for n in ("fla_chunk", "fla_fused_chunk")]
        fla_f = [x for x in fla_f if x]
        sd = [r.get(f"{n}_fwd_ms") for n in ("sdpa_flash", "sdpa_cudnn")]
        sd = [x for x in sd if x]
        lf, lb = r.get("lintutor_fwd_ms"), r.get("lintutor_fwdbwd_ms")
        r["fla_best_fwd_ms"] = min(fla_f) if fla_f else None
        r["sdpa_best_fwd_ms"] = min(sd) if sd else None
        if lf:
            r["lintutor_fwd_floor_frac"] = result["floor_fwd_ms"] / lf
            r["ratio_fwd_to_fla"] = lf / r["fla_best_fwd_ms"] if fla_f else None
            r["ratio_fwd_to_sdpa"] = lf / r["sdpa_best_fwd_ms"] if sd else None
            r["lintutor_fwd_Mtok_per_s"] = TOKENS / lf / 1e3
        if lb and r.get("fla_chunk_fwdbwd_ms"):
            r["ratio_fwdbwd_to_fla_chunk"] = lb / r["fla_chunk_fwdbwd_ms"]
        fla_b = [r.get(f"{n}_fwdbwd_ms") for n in ("fla_chunk", "fla_fused_chunk")]
        fla_b = [x for x in fla_b if x]
        r["fla_best_fwdbwd_ms"] = min(fla_b) if fla_b else None
        if lb and fla_b:
            r["ratio_fwdbwd_to_fla"] = lb / min(fla_b)
        if lb:
            r["lintutor_fwdbwd_floor_frac"] = result["floor_fwdbwd_ms"] / lb
    d = result.get("decode")
    if d:
        d["floor_ms"] = d["state_bytes_rw"] / bw * 1e3
        d["lintutor_graph_floor_ratio"] = d["lintutor_graph_ms"] / d["floor_ms"]
        if d.get("fla_recurrent_graph_ms"):
            d["ratio_to_fla"] = d["lintutor_graph_ms"] / d["fla_recurrent_graph_ms"]
    return result


def table(result: dict | str | None = None) -> str:
    """A plain-text table of the forward and forward+backward rows (and the decode line)."""
    result = load(result)
    head = (
        f"{'D':>4} {'T':>6} | {'ours':>7} {'fla_c':>7} {'fla_fc':>7} {'cudnn':>7} {'flash':>7} "
        f"{'torch':>7} {'/fla':>5} {'/sdpa':>6} {'floor':>5} | {'ours':>7} {'fla_c':>7} "
        f"{'fla_fc':>7} {'/fla':>5}"
    )
    lines = [f"fwd ms (floor {result['floor_fwd_ms']:.3f})" + " " * 60 + "fwd+bwd ms", head]

    def f(x, w=7, p=3):
        return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) and x is not None else f"{'-':>{w}}"

    for r in result["rows"]:
        lines.append(
            f"{r['D']:>4} {r['T']:>6} | {f(r.get('lintutor_fwd_ms'))} "
            f"{f(r.get('fla_chunk_fwd_ms'))} "
            f"{f(r.get('fla_fused_chunk_fwd_ms'))} {f(r.get('sdpa_cudnn_fwd_ms'))} "
            f"{f(r.get('sdpa_flash_fwd_ms'))} {f(r.get('torch_chunked_fwd_ms'))} "
            f"{f(r.get('ratio_fwd_to_fla'), 5, 2)} {f(r.get('ratio_fwd_to_sdpa'), 6, 2)} "
            f"{f(r.get('lintutor_fwd_floor_frac'), 5, 2)} | {f(r.get('lintutor_fwdbwd_ms'))} "
            f"{f(r.get('fla_chunk_fwdbwd_ms'))} {f(r.get('fla_fused_chunk_fwdbwd_ms'))} "
            f"{f(r.get('ratio_fwdbwd_to_fla'), 5, 2)}"
        )
    d = result.get("decode")
    if d:
        lines.append(
            f"decode B=64 H=16 D=128 (graph): ours {d['lintutor_graph_ms']:.4f} ms, floor "
            f"{d['floor_ms']:.4f} ms ({d['lintutor_graph_floor_ratio']:.2f}x), fla "
            f"{d.get('fla_recurrent_graph_ms') or float('nan'):.4f} ms, torch step "
            f"{d['torch_step_graph_ms']:.4f} ms"
        )
    return "\n".join(lines)


FIGURES = ("forward ms", "ratio to fla and SDPA", "forward+backward ms",
           "fraction of the memory floor")  # fmt: skip


def figure(result: dict | str | None = None, D: int = 128, what: str = "forward ms"):
    """One plotly figure of the benchmark at head dim D; `what` is one of FIGURES."""
    import plotly.graph_objects as go

    if what not in FIGURES:
        raise ValueError(f"what must be one of {FIGURES}, got {what!r}")
    result = load(result)
    rows = [r for r in result["rows"] if r["D"] == D]
    T = [r["T"] for r in rows]
    fig = go.Figure()
    if what in ("forward ms", "forward+backward ms"):
        key = "_fwd_ms" if what == "forward ms" else "_fwdbwd_ms"
        for p, label in PROVIDERS.items():
            ys = [r.get(p + key) for r in rows]
            if any(y is not None for y in ys):
                fig.add_scatter(x=T, y=ys, mode="lines+markers", name=label)
        floor = result["floor_fwd_ms"] if key == "_fwd_ms" else result["floor_fwdbwd_ms"]
        fig.add_scatter(x=T, y=[floor] * len(T), mode="lines", name="memory floor",
                        line=dict(dash="dash"))  # fmt: skip
        fig.update_yaxes(type="log", title="ms per call (65,536 tokens)")
    elif what == "ratio to fla and SDPA":
        for key, name in (("ratio_fwd_to_fla", "forward / fastest fla"),
                          ("ratio_fwdbwd_to_fla", "fwd+bwd / fastest fla"),
                          ("ratio_fwd_to_sdpa", "forward / fastest SDPA")):  # fmt: skip
            fig.add_scatter(x=T, y=[r.get(key) for r in rows], mode="lines+markers", name=name)
        fig.add_scatter(x=T, y=[1.0] * len(T), mode="lines", name="equal", line=dict(dash="dash"))
        fig.update_yaxes(type="log", title="lintutor time / other time")
    else:
        fig.add_scatter(x=T, y=[r.get("lintutor_fwd_floor_frac") for r in rows],
                        mode="lines+markers", name="lintutor forward")  # fmt: skip
        fl = [result["floor_fwd_ms"] / r["fla_best_fwd_ms"] if r.get("fla_best_fwd_ms") else None
              for r in rows]  # fmt: skip
        fig.add_scatter(x=T, y=fl, mode="lines+markers", name="fastest fla forward")
        fig.update_yaxes(range=[0, 1.05], title="memory floor / measured time")
    fig.update_xaxes(type="log", title="sequence length T (B = 65536 / T)")
    fig.update_layout(title=f"{what}, D = {D}, bf16, {result['versions']['gpu']}", height=420)
    return fig


def decode_figure(result: dict | str | None = None):
    """One-token decode: lintutor, fla, the PyTorch step and the floor, next to SDPA's KV cache."""
    import plotly.graph_objects as go

    d = load(result)["decode"]
    fig = go.Figure()
    fig.add_bar(x=["lintutor", "fla fused_recurrent", "PyTorch step", "memory floor"],
                y=[d["lintutor_graph_ms"], d.get("fla_recurrent_graph_ms"),
                   d["torch_step_graph_ms"], d["floor_ms"]],
                name="linear attention (state)")  # fmt: skip
    timed = [s for s in d["sdpa"] if "sdpa_graph_ms" in s]
    fig.add_bar(x=[f"SDPA, KV cache {s['L'] // 1024}K" for s in timed],
                y=[s["sdpa_graph_ms"] for s in timed], name="softmax (KV cache)")  # fmt: skip
    fig.update_yaxes(type="log", title="ms per decode step (CUDA graph)")
    fig.update_xaxes(title="provider")
    fig.update_layout(title="one-token decode, B = 64, H = 16, D = 128", height=400)
    return fig
