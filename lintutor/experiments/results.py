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
import math
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


def roofline(result: dict | str | None = None, D: int = 64, C: int = 64) -> dict:
    """The forward's bytes, flops and arithmetic intensity at head dim D (E = D) against the
    card's own roofs measured in `result`'s run: 65,536 tokens, H = 2048 / D, chunks of C.

    bytes: q, k, v read once and o written once, bf16 (the memory floor). flops of the chunked
    schedule per token and head: 2 C (D + E) for q k^T and its product with v inside the chunk,
    4 D E for q S and k^T v. The kernel runs ceil(E / 64) programs per head, each computing q k^T
    (`kernel_flops`). fla's `chunk_simple_gla` runs two kernels: the first walks the chunks and
    writes every chunk's starting state (D, E) in the inputs' dtype, the second reads q, k, v and
    those states and writes o: k and v are read twice and the states written and read once
    (`fla_chunk_bytes`, a lower bound from that schedule, not a measurement).
    """
    result = load(result)
    E, H = D, WIDTH // D
    unit = TOKENS * H * D * 2  # one (B, T, H, D) bf16 tensor
    bw = result["roofs"]["copy_TBps"] * 1e12  # bytes / s
    peak = result["roofs"]["bf16_mm_TFLOPs"] * 1e12  # flop / s
    per_token = 2 * C * (D + E) + 4 * D * E
    n_e = -(-E // 64)
    flops = TOKENS * H * per_token
    states = TOKENS // C * H * D * E * 2  # one bf16 state per chunk and head
    out = {"D": D, "E": E, "H": H, "C": C, "bytes": 4 * unit, "flops": flops,
           "kernel_flops": TOKENS * H * (per_token + 2 * C * D * (n_e - 1)),
           "copy_TBps": bw / 1e12, "bf16_mm_TFLOPs": peak / 1e12,
           "fla_chunk_bytes": 6 * unit + 2 * states}  # fmt: skip
    out["intensity"] = flops / out["bytes"]  # flop per byte
    out["ridge"] = peak / bw  # below it a kernel is limited by memory, above by the math
    out["memory_ms"] = out["bytes"] / bw * 1e3
    out["compute_ms"] = out["kernel_flops"] / peak * 1e3
    out["fla_chunk_floor_ms"] = out["fla_chunk_bytes"] / bw * 1e3
    return out


def roofline_figure(result: dict | str | None = None):
    """The roofline of the stored run's card with the forward kernels on it: TFLOP/s reached
    (the math's flops over the measured time) against flop per byte moved."""
    import plotly.graph_objects as go

    result = summarize(load(result))
    r64 = roofline(result, 64)
    bw, peak = r64["copy_TBps"], r64["bf16_mm_TFLOPs"]
    xs = [2.0**i for i in range(0, 12)]
    fig = go.Figure()
    fig.add_scatter(x=xs, y=[min(peak, bw * x) for x in xs], mode="lines", name="roofs: copy "
                    f"{bw:.2f} TB/s x intensity, bf16 matmul {peak:.0f} TFLOP/s",
                    line=dict(color="#444"))  # fmt: skip
    for D, symbol in ((64, "circle"), (128, "diamond")):
        rf = roofline(result, D)
        rows = [r for r in result["rows"] if r["D"] == D]
        for key, name, x in (("lintutor_fwd_ms", "lintutor", rf["intensity"]),
                             ("fla_fused_chunk_fwd_ms", "fla fused_chunk", rf["intensity"]),
                             ("fla_chunk_fwd_ms", "fla chunk (bytes from its schedule)",
                              rf["flops"] / rf["fla_chunk_bytes"])):  # fmt: skip
            pts = [(r["T"], r[key]) for r in rows if r.get(key)]
            if not pts:
                continue
            fig.add_scatter(
                x=[x] * len(pts), y=[rf["flops"] / (ms * 1e-3) / 1e12 for _, ms in pts],
                mode="markers", marker=dict(symbol=symbol, size=9), name=f"{name}, D = {D}",
                text=[f"T = {T}: {ms:.3f} ms" for T, ms in pts],
                hovertemplate="%{text}<br>%{y:.0f} TFLOP/s<extra></extra>",
            )  # fmt: skip
    fig.add_scatter(x=[r64["ridge"]] * 2, y=[bw, peak], mode="lines+text",
                    text=["", f"ridge {r64['ridge']:.0f} flop/byte"], textposition="top center",
                    line=dict(dash="dot", color="#888"), showlegend=False)  # fmt: skip
    fig.update_xaxes(type="log", title="arithmetic intensity (flop per byte moved)")
    fig.update_yaxes(
        type="log",
        title="TFLOP/s (the math's flops / measured time)",
        range=[0, math.log10(peak * 2)],
    )
    fig.update_layout(title=f"Roofline of the forward, {result['versions']['gpu']}, bf16",
                      height=460, width=900, legend=dict(font=dict(size=11)))  # fmt: skip
    return fig


def compare_figure(live: dict | str | None, stored: dict | str | None = None):
    """Forward times of a live run (markers) beside a stored run (lines), D = 64 and 128; with
    live=None the stored run alone."""
    from plotly.colors import DEFAULT_PLOTLY_COLORS
    from plotly.subplots import make_subplots

    stored = summarize(load(stored))
    live = summarize(load(live)) if live is not None else {"rows": []}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("D = 64", "D = 128"),
                        horizontal_spacing=0.1)  # fmt: skip
    for col, D in enumerate((64, 128), start=1):
        for i, (p, label) in enumerate(PROVIDERS.items()):
            colour = DEFAULT_PLOTLY_COLORS[i % len(DEFAULT_PLOTLY_COLORS)]
            for res, mode, dash, who in ((stored, "lines", "dot", "stored"),
                                         (live, "markers", None, "live")):  # fmt: skip
                rows = [r for r in res["rows"] if r["D"] == D and r.get(p + "_fwd_ms")]
                if not rows:
                    continue
                fig.add_scatter(
                    x=[r["T"] for r in rows], y=[r[p + "_fwd_ms"] for r in rows], mode=mode,
                    name=f"{label} ({who})", legendgroup=f"{p} {who}", showlegend=col == 1,
                    line=dict(color=colour, dash=dash), marker=dict(color=colour, size=10),
                    row=1, col=col,
                )  # fmt: skip
        for res, dash in ((stored, "dot"), (live, "solid")):
            rows = [r for r in res["rows"] if r["D"] == D and "floor_fwd_ms" in res]
            if rows:
                Ts = [min(r["T"] for r in rows), max(r["T"] for r in rows)]
                fig.add_scatter(x=Ts, y=[res["floor_fwd_ms"]] * 2, mode="lines",
                                line=dict(color="black", dash=dash, width=1), showlegend=False,
                                hoverinfo="skip", row=1, col=col)  # fmt: skip
        fig.update_xaxes(type="log", title="T (B = 65536 / T)", row=1, col=col)
        fig.update_yaxes(type="log", title="forward ms" if col == 1 else None, row=1, col=col)
    title = f"stored: {stored['versions']['gpu']} (lines; black: its memory floor)"
    if live["rows"]:
        title = f"live: {live['versions']['gpu']} (markers) beside " + title
    fig.update_layout(
        title=title,
        height=480, width=900, legend=dict(font=dict(size=10)),
    )  # fmt: skip
    return fig


# The gated benchmark (`lintutor bench --gated`, kernel_bench.run_gated): lesson 08's section
# "a kernel that forgets" reads this file.
GATED = "gated_bench_h200.json"

GATED_PROVIDERS = {"lintutor_gated": "lintutor gated", "fla_chunk_gated": "fla chunk gated",
                   "fla_fused_chunk_gated": "fla fused_chunk gated",
                   "lintutor": "lintutor ungated", "fla_chunk": "fla chunk ungated",
                   "fla_fused_chunk": "fla fused_chunk ungated", "sdpa_cudnn": "SDPA cuDNN",
                   "sdpa_flash": "SDPA flash"}  # fmt: skip


def _ratio(a, b):
    return a / b if a and b else None


def summarize_gated(result: dict) -> dict:
    """Add the floors and ratios to a gated run; returns result.

    Floors: the plain ones (`summarize`) plus the gate's bytes, one fp32 per head and token:
    read once forward; read again and dg written backward (11 tensors + 3 gates).
    """
    bw = result["roofs"]["copy_TBps"] * 1e12
    unit = TOKENS * WIDTH * 2  # one (B, T, H*D) bf16 tensor
    result["floor_fwd_ms"] = 4 * unit / bw * 1e3
    result["floor_fwdbwd_ms"] = 11 * unit / bw * 1e3
    for r in result["rows"]:
        gate = TOKENS * r["H"] * 4  # (B, T, H) fp32
        r["floor_gated_fwd_ms"] = (4 * unit + gate) / bw * 1e3
        r["floor_gated_fwdbwd_ms"] = (11 * unit + 3 * gate) / bw * 1e3
        fla = [r.get(f"{n}_fwd_ms") for n in ("fla_chunk_gated", "fla_fused_chunk_gated")]
        fla = [x for x in fla if x]
        r["fla_best_gated_fwd_ms"] = min(fla) if fla else None
        sd = [x for x in (r.get("sdpa_flash_fwd_ms"), r.get("sdpa_cudnn_fwd_ms")) if x]
        r["sdpa_best_fwd_ms"] = min(sd) if sd else None
        ours, plain = r.get("lintutor_gated_fwd_ms"), r.get("lintutor_fwd_ms")
        r["ratio_gated_fwd_to_fla"] = _ratio(ours, r["fla_best_gated_fwd_ms"])
        r["ratio_gated_fwd_to_sdpa"] = _ratio(ours, r["sdpa_best_fwd_ms"])
        r["gate_cost_fwd"] = _ratio(ours, plain)
        for n in ("lintutor_gated", "fla_chunk_gated", "fla_fused_chunk_gated"):
            r[f"{n}_fwd_floor_frac"] = _ratio(r["floor_gated_fwd_ms"], r.get(f"{n}_fwd_ms"))
        r["lintutor_fwd_floor_frac"] = _ratio(result["floor_fwd_ms"], plain)
        gb = r.get("lintutor_gated_fwdbwd_ms")
        r["ratio_gated_fwdbwd_to_fla_chunk_ungated"] = _ratio(gb, r.get("fla_chunk_fwdbwd_ms"))
        r["ratio_gated_fwdbwd_to_ungated"] = _ratio(gb, r.get("lintutor_fwdbwd_ms"))
        r["ratio_gated_fwdbwd_to_fla_gated"] = _ratio(
            gb, min([x for x in (r.get("fla_chunk_gated_fwdbwd_ms"),
                                 r.get("fla_fused_chunk_gated_fwdbwd_ms")) if x], default=None)
        )  # fmt: skip
        r["lintutor_gated_fwdbwd_floor_frac"] = _ratio(r["floor_gated_fwdbwd_ms"], gb)
        for n in ("lintutor", "fla_chunk", "fla_fused_chunk", "fla_fused_chunk_gated"):
            floor = r["floor_gated_fwdbwd_ms"] if n.endswith("gated") else result["floor_fwdbwd_ms"]
            r[f"{n}_fwdbwd_floor_frac"] = _ratio(floor, r.get(f"{n}_fwdbwd_ms"))
    d = result.get("decode")
    if d:
        d["floor_ms"] = (d["state_bytes_rw"] + d.get("gate_bytes", 0)) / bw * 1e3
        d["lintutor_gated_graph_floor_ratio"] = _ratio(d.get("lintutor_gated_graph_ms"),
                                                       d["floor_ms"])  # fmt: skip
        d["ratio_to_fla"] = _ratio(d.get("lintutor_gated_graph_ms"),
                                   d.get("fla_recurrent_gated_graph_ms"))  # fmt: skip
        d["fla_graph_floor_ratio"] = _ratio(d.get("fla_recurrent_gated_graph_ms"), d["floor_ms"])
        d["gate_cost"] = _ratio(d.get("lintutor_gated_graph_ms"), d.get("lintutor_graph_ms"))
    return result


def _f(x, w=7, p=3):
    return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"


def gated_table(result: dict | str | None = None) -> str:
    """A plain-text table of a gated run: forwards, forward+backward, decode."""
    result = summarize_gated(load(result, default=GATED))
    floors = {r["D"]: r["floor_gated_fwd_ms"] for r in result["rows"]}
    lines = [
        "gated fwd ms (floor "
        + ", ".join(f"{v:.3f} at D={D}" for D, v in sorted(floors.items()))
        + f"); plain fwd (floor {result['floor_fwd_ms']:.3f}); fwd+bwd ms (plain floor "
        f"{result['floor_fwdbwd_ms']:.3f})",
        f"{'D':>4} {'T':>6} | {'ours':>7} {'fla_c':>7} {'fla_fc':>7} {'/fla':>5} {'floor':>5} | "
        f"{'plain':>7} {'floor':>5} | {'ours_g':>7} {'ours':>7} {'fla_c':>7} {'fla_fcg':>7} "
        f"{'/fla_c':>6} {'/ours':>5}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['D']:>4} {r['T']:>6} | {_f(r.get('lintutor_gated_fwd_ms'))} "
            f"{_f(r.get('fla_chunk_gated_fwd_ms'))} {_f(r.get('fla_fused_chunk_gated_fwd_ms'))} "
            f"{_f(r.get('ratio_gated_fwd_to_fla'), 5, 2)} "
            f"{_f(r.get('lintutor_gated_fwd_floor_frac'), 5, 2)} | "
            f"{_f(r.get('lintutor_fwd_ms'))} {_f(r.get('lintutor_fwd_floor_frac'), 5, 2)} | "
            f"{_f(r.get('lintutor_gated_fwdbwd_ms'))} {_f(r.get('lintutor_fwdbwd_ms'))} "
            f"{_f(r.get('fla_chunk_fwdbwd_ms'))} {_f(r.get('fla_fused_chunk_gated_fwdbwd_ms'))} "
            f"{_f(r.get('ratio_gated_fwdbwd_to_fla_chunk_ungated'), 6, 2)} "
            f"{_f(r.get('ratio_gated_fwdbwd_to_ungated'), 5, 2)}"
        )
    d = result.get("decode")
    if d:
        lines.append(
            f"gated decode B={d['B']} H={d['H']} D={d['D']} (graph): ours "
            f"{_f(d.get('lintutor_gated_graph_ms'), 0, 4)} ms, floor {d['floor_ms']:.4f} ms "
            f"({_f(d.get('lintutor_gated_graph_floor_ratio'), 0, 2)}x), fla "
            f"{_f(d.get('fla_recurrent_gated_graph_ms'), 0, 4)} ms, ours ungated "
            f"{_f(d.get('lintutor_graph_ms'), 0, 4)} ms"
        )
    return "\n".join(lines)


def gated_targets(result: dict | str | None = None) -> list[tuple[str, bool | None, str]]:
    """Issue 16's targets, read off a gated run: (target, met (None: not measured), values)."""
    result = summarize_gated(load(result, default=GATED))
    rows = result["rows"]
    missing = missing_shapes(result)

    def check(name, values, ok, unmeasured=0):
        """Met only if every value passes and no shape of the target is unmeasured; a value
        that fails is 'not met' whatever is missing; else None (not measured everywhere)."""
        vals = [v for v in values if v is not None]
        if not vals:
            return (name, None, "not measured")
        span = f"{min(vals):.2f}-{max(vals):.2f}"
        if not all(ok(v) for v in vals):
            return (name, False, span)
        if unmeasured:
            return (name, None, f"{span} at {len(vals)} shapes; {unmeasured} not measured")
        return (name, True, span)

    d = result.get("decode") or {}
    return [
        check("gated forward <= 0.8x fla's fastest gated forward, every shape",
              [r.get("ratio_gated_fwd_to_fla") for r in rows], lambda v: v <= 0.8,
              len(missing)),
        check("gated decode <= 1.10x the memory floor (CUDA graph)",
              [d.get("lintutor_gated_graph_floor_ratio")], lambda v: v <= 1.10),
        check("plain forward D=128 within 1.2x the floor, T <= 16K",
              [1 / r["lintutor_fwd_floor_frac"] for r in rows
               if r["D"] == 128 and r["T"] <= 16384 and r.get("lintutor_fwd_floor_frac")],
              lambda v: v <= 1.2, sum(D == 128 and T <= 16384 for D, T in missing)),
        check("plain forward D=128 within 1.4x the floor, T >= 32K",
              [1 / r["lintutor_fwd_floor_frac"] for r in rows
               if r["D"] == 128 and r["T"] >= 32768 and r.get("lintutor_fwd_floor_frac")],
              lambda v: v <= 1.4, sum(D == 128 and T >= 32768 for D, T in missing)),
    ]  # fmt: skip


def missing_shapes(result: dict) -> list[tuple[int, int]]:
    """The (D, T) shapes a gated run left unmeasured (its time budget): `missing`, or the list in
    its `incomplete` note (runs stored before `missing` was written)."""
    import ast

    if "missing" in result:
        return [tuple(x) for x in result["missing"]]
    note = result.get("incomplete", "")
    return [tuple(x) for x in ast.literal_eval(note.split(": ", 1)[1])] if ": " in note else []


GATED_FIGURES = ("forward ms", "forward+backward ms")


def gated_figure(result: dict | str | None = None, D: int = 128, what: str = "forward ms"):
    """Times of the gated run at head dim D (log-log), with the memory floor; `what` is one of
    GATED_FIGURES."""
    import plotly.graph_objects as go

    if what not in GATED_FIGURES:
        raise ValueError(f"what must be one of {GATED_FIGURES}, got {what!r}")
    result = summarize_gated(load(result, default=GATED))
    rows = [r for r in result["rows"] if r["D"] == D]
    T = [r["T"] for r in rows]
    key = "_fwd_ms" if what == "forward ms" else "_fwdbwd_ms"
    fig = go.Figure()
    for p, label in GATED_PROVIDERS.items():
        ys = [r.get(p + key) for r in rows]
        if any(y is not None for y in ys):
            dash = None if p.endswith("gated") else "dot"
            fig.add_scatter(x=T, y=ys, mode="lines+markers", name=label, line=dict(dash=dash))
    floor = "floor_gated_fwd_ms" if key == "_fwd_ms" else "floor_gated_fwdbwd_ms"
    fig.add_scatter(x=T, y=[r[floor] for r in rows], mode="lines", name="memory floor (gated)",
                    line=dict(dash="dash", color="black"))  # fmt: skip
    fig.update_xaxes(type="log", title="sequence length T (B = 65536 / T)")
    fig.update_yaxes(type="log", title="ms per call (65,536 tokens)")
    title = f"{what} with a scalar gate, D = {D}, bf16, {result['versions']['gpu']}"
    fig.update_layout(title=title + " (dotted: no gate)", height=420, width=900)
    return fig


def floor_figure(result: dict | str | None = None):
    """Every kernel of a gated run as a fraction of its memory floor (1 = moving the bytes at
    the measured copy bandwidth), D = 64 and 128; decode in the legend."""
    from plotly.subplots import make_subplots

    result = summarize_gated(load(result, default=GATED))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("D = 64", "D = 128"),
                        horizontal_spacing=0.1)  # fmt: skip
    series = [("lintutor_gated_fwd_floor_frac", "ours gated, forward", None),
              ("lintutor_fwd_floor_frac", "ours ungated, forward", "dot"),
              ("fla_chunk_gated_fwd_floor_frac", "fla chunk gated, forward", None),
              ("fla_fused_chunk_gated_fwd_floor_frac", "fla fused_chunk gated, forward", None),
              ("lintutor_gated_fwdbwd_floor_frac", "ours gated, fwd+bwd", "dash"),
              ("lintutor_fwdbwd_floor_frac", "ours ungated, fwd+bwd", "dashdot"),
              ("fla_chunk_fwdbwd_floor_frac", "fla chunk ungated, fwd+bwd", "dashdot"),
              ("fla_fused_chunk_gated_fwdbwd_floor_frac", "fla fused_chunk gated, fwd+bwd",
               "dash")]  # fmt: skip
    from plotly.colors import DEFAULT_PLOTLY_COLORS

    for col, D in enumerate((64, 128), start=1):
        rows = [r for r in result["rows"] if r["D"] == D]
        for i, (key, name, dash) in enumerate(series):
            ys = [r.get(key) for r in rows]
            if not any(y is not None for y in ys):
                continue
            fig.add_scatter(x=[r["T"] for r in rows], y=ys, mode="lines+markers", name=name,
                            legendgroup=name, showlegend=col == 1,
                            line=dict(dash=dash, color=DEFAULT_PLOTLY_COLORS[i % 10]),
                            row=1, col=col)  # fmt: skip
        fig.update_xaxes(type="log", title="T (B = 65536 / T)", row=1, col=col)
        fig.update_yaxes(range=[0, 1.05], title="floor / measured" if col == 1 else None,
                         row=1, col=col)  # fmt: skip
    d = result.get("decode") or {}
    dec = ""
    if d.get("lintutor_gated_graph_floor_ratio"):
        dec = f"; gated decode: ours {1 / d['lintutor_gated_graph_floor_ratio']:.2f}"
        if d.get("fla_graph_floor_ratio"):
            dec += f", fla {1 / d['fla_graph_floor_ratio']:.2f}"
    fig.update_layout(title=f"Fraction of the memory floor, {result['versions']['gpu']}{dec}",
                      height=460, width=900, legend=dict(font=dict(size=10)))  # fmt: skip
    return fig
