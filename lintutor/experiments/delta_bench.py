"""Lesson 09's benchmark: the delta-rule kernels against fla's gated delta rule, one GPU, one run.

    python -m lintutor.experiments.delta_bench            full run (10 shapes and decode)
    python -m lintutor.experiments.delta_bench --quick    2 shapes and decode (no sweep), ~3 min
    python -m lintutor.experiments.delta_bench --tune     sweep the kernels' launch settings

Rules: the card's copy bandwidth and bf16 matmul rate are measured in the same run; every
provider is checked against an fp32 PyTorch reference (`lintutor.delta_gated`'s chunked form on the
GPU) on a small shape and on each benchmark shape before it is timed (relative L2 error < 2e-2,
else it is recorded and not timed); bf16 q, k, v, o, fp32 beta, g and state; scale D^-0.5;
65,536 tokens per call (B = 65536 / T), H * D = 2048; fla's layout (B, T, H, D) is the storage
and lintutor reads it through transposed views (no copy). Median of triton's do_bench; decode
(B = 64, H = 16, D = E = 128) also inside CUDA-graph replay, for every provider.

Inputs: q randn, k randn normalized per head (unit keys, as Gated DeltaNet's L2 norm gives),
v randn, beta = sigmoid(randn), g = logsigmoid(randn + 4) (gates a = exp(g) mostly in 0.95-1).

Memory floors (bytes that must move / measured copy bandwidth):
  forward  read q, k, v, write o (4 bf16 tensors of 65,536 x 2048) and read beta, g (fp32)
  decode   read and write the fp32 state once: 2 * B * H * D * E * 4 bytes

Writes assets/delta_bench_<card>.json (delta_bench_<card>_quick.json with --quick), saved
after every shape; `table()` and `figure()` read it back without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os

from lintutor.experiments import _gpu
from lintutor.experiments.results import asset_path, load

TOKENS, WIDTH = 65536, 2048
T_LIST = (512, 2048, 8192, 32768, 65536)
QUICK = ((64, 2048), (128, 32768))  # (D, T)
TOL = 2e-2
DEVICE = "cuda"  # where the inputs live (the tests run the same code on the CPU interpreter)


def rel_err(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def fla_ops():
    """fla's (chunk_gated_delta_rule, fused_recurrent_gated_delta_rule), or None."""
    try:
        from fla.ops.gated_delta_rule import (
            chunk_gated_delta_rule,
            fused_recurrent_gated_delta_rule,
        )
    except ImportError:
        return None
    return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule


def inputs(B, T, H, D, seed=0):
    """fla-layout bf16 q, k, v (B, T, H, D), fp32 beta, g (B, T, H)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device=DEVICE).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=DEVICE, generator=g)  # noqa: E731
    q, k, v = r(B, T, H, D), F.normalize(r(B, T, H, D), dim=-1), r(B, T, H, D)
    beta = torch.sigmoid(r(B, T, H))
    log_a = F.logsigmoid(r(B, T, H) + 4)
    return [x.bfloat16() for x in (q, k, v)] + [beta, log_a]


def ours(x):
    """The (B, H, T, *) views of fla-layout storage."""
    return [t.transpose(1, 2) for t in x]


def providers(fla, D, torch_form=True):
    """{name: fn(x) -> o in fla's layout (B, T, H, D)}."""
    from lintutor.delta_gated import gated_delta_rule_chunked
    from lintutor.kernels.delta import gated_delta_rule_triton

    scale = D**-0.5
    out = {"lintutor": lambda x: gated_delta_rule_triton(*ours(x), scale=scale).transpose(1, 2)}
    if fla is not None:
        out["fla_chunk"] = lambda x: fla[0](x[0], x[1], x[2], x[4], x[3], scale=scale)[0]
    if torch_form:
        out["torch_chunked"] = lambda x: gated_delta_rule_chunked(*ours(x), scale=scale).transpose(
            1, 2
        )
    return out


def reference(x, D):
    """fp32 PyTorch chunked form on the GPU, (B, T, H, D)."""
    from lintutor.delta_gated import gated_delta_rule_chunked

    return gated_delta_rule_chunked(*(t.float() for t in ours(x)), scale=D**-0.5).transpose(1, 2)


def floor_fwd_ms(H, bw) -> float:
    return (4 * TOKENS * WIDTH * 2 + 2 * TOKENS * H * 4) / bw * 1e3


def bench_shape(fla, D, T, bw, log=print) -> dict:
    import torch

    H, B = WIDTH // D, TOKENS // T
    row = {"D": D, "H": H, "T": T, "B": B, "floor_fwd_ms": floor_fwd_ms(H, bw)}
    x = inputs(B, T, H, D, seed=T + D)
    with torch.no_grad():
        ref = reference(x, D)
        for name, fn in providers(fla, D, torch_form=T <= 8192).items():
            try:
                err = rel_err(fn(x), ref)
                row[f"{name}_rel"] = err
                if err > TOL:
                    row[f"{name}_error"] = f"relative error {err:.3g} > {TOL}: not timed"
                    continue
                row[f"{name}_fwd_ms"] = _gpu.bench(lambda fn=fn, x=x: fn(x))
            except Exception as e:  # recorded, not fatal: the other providers still run
                row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    lt, fc = row.get("lintutor_fwd_ms"), row.get("fla_chunk_fwd_ms")
    if lt:
        row["lintutor_floor_frac"] = row["floor_fwd_ms"] / lt
        row["lintutor_tokens_per_s"] = TOKENS / lt * 1e3
    if lt and fc:
        row["ratio_lintutor_to_fla"] = lt / fc
    if fc:
        row["fla_floor_frac"] = row["floor_fwd_ms"] / fc
    log(json.dumps(row))
    del x, ref
    torch.cuda.empty_cache()
    return row


def small_checks(fla, log=print, B=1, T=300, H=None, d_list=(64, 128)) -> dict:
    """Every provider and our gradients against the fp32 reference on a small shape.

    H defaults to the benchmark's (2048 / D), so fla autotunes once per D (its key includes H).
    """
    import torch

    out = {}
    for D in d_list:
        x = inputs(B, T, H or WIDTH // D, D, seed=D)
        with torch.no_grad():
            ref = reference(x, D)
            for name, fn in providers(fla, D).items():
                out[f"D{D}_{name}_rel"] = rel_err(fn(x), ref)
        from lintutor.delta_gated import gated_delta_rule_chunked
        from lintutor.kernels.delta import gated_delta_rule_triton

        leaves = [t.transpose(1, 2).detach().float().requires_grad_() for t in x]
        ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
        o, S = gated_delta_rule_triton(*leaves, output_final_state=True, scale=D**-0.5)
        ro, rS = gated_delta_rule_chunked(*ref_leaves, output_final_state=True, scale=D**-0.5)
        do, dS = torch.randn_like(o), torch.randn_like(S)
        torch.autograd.backward([o, S], [do, dS])
        torch.autograd.backward([ro, rS], [do, dS])
        out[f"D{D}_lintutor_fp32_o_rel"] = rel_err(o, ro)
        out[f"D{D}_lintutor_fp32_S_rel"] = rel_err(S, rS)
        for name, a, b in zip(("dq", "dk", "dv", "dbeta", "dg"), leaves, ref_leaves):
            out[f"D{D}_lintutor_grad_{name}_rel"] = rel_err(a.grad, b.grad)
    log(json.dumps(out))
    return out


def step_math(q, k, v, beta, g, S, scale):
    """`delta_gated.gated_delta_rule_step`'s arithmetic without its input checks: a CUDA graph
    cannot capture them (the check that g <= 0 reads a value back to the host, which is not
    allowed while a stream is capturing). (B, H, D|E), (B, H), (B, H, D, E) fp32."""
    import torch

    S = torch.exp(g)[..., None, None] * S  # forget
    v_old = torch.einsum("bhd,bhde->bhe", k, S)  # what S returns for k
    S = S + beta[..., None, None] * k.unsqueeze(-1) * (v - v_old).unsqueeze(-2)  # erase, write
    return scale * torch.einsum("bhd,bhde->bhe", q, S), S


def bench_decode(fla, bw, log=print, sweep=True, B=64, H=16, D=128) -> dict:
    """One-token decode, B=64, H=16, D=E=128, fp32 state, every provider in a CUDA graph."""
    import torch

    from lintutor.delta_gated import gated_delta_rule_step
    from lintutor.kernels.delta import gated_delta_rule_step_triton
    from lintutor.kernels.delta_bodies import decode_step

    scale = D**-0.5
    q, k, v, beta, log_a = (t[:, 0] for t in inputs(B, 1, H, D, seed=1))  # (B, H, D), (B, H)
    S = torch.randn(B, H, D, D, device=DEVICE) * 0.1
    out = {"B": B, "H": H, "D": D, "state_bytes_rw": 2 * S.numel() * 4}
    out["floor_ms"] = out["state_bytes_rw"] / bw * 1e3
    ro, rS = gated_delta_rule_step(q.float(), k.float(), v.float(), beta, log_a, S.clone(), scale)
    o, S1 = gated_delta_rule_step_triton(q, k, v, beta, log_a, S.clone(), scale)
    out["lintutor_rel"] = max(rel_err(o, ro), rel_err(S1, rS))
    work = S.clone()
    step = lambda: gated_delta_rule_step_triton(q, k, v, beta, log_a, work, scale, out_state=work)  # noqa: E731
    out["lintutor_graph_ms"] = _gpu.bench_graph(step)
    out["lintutor_eager_ms"] = _gpu.bench(step)
    q32, k32, v32, Sc = q.float(), k.float(), v.float(), S.clone()
    mo, mS = step_math(q32, k32, v32, beta, log_a, Sc, scale)
    out["torch_step_rel"] = max(rel_err(mo, ro), rel_err(mS, rS))  # the step's math, checked
    out["torch_step_graph_ms"] = _gpu.bench_graph(
        lambda: step_math(q32, k32, v32, beta, log_a, Sc, scale)
    )
    if fla is not None:
        try:
            f = lambda S0: fla[1](q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),  # noqa: E731
                                  g=log_a.unsqueeze(1), beta=beta.unsqueeze(1), scale=scale,
                                  initial_state=S0, output_final_state=True)  # fmt: skip
            of, Sf = f(S.clone())
            out["fla_recurrent_rel"] = max(rel_err(of[:, 0], ro), rel_err(Sf, rS))
            S0f = S.clone()
            out["fla_recurrent_graph_ms"] = _gpu.bench_graph(lambda: f(S0f))
            out["fla_recurrent_eager_ms"] = _gpu.bench(lambda: f(S0f))
        except Exception as e:
            out["fla_recurrent_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    if sweep:  # the decode kernel's block of E and warps, each in a graph
        out["sweep"] = []
        for BE in (16, 32, 64):
            for warps in (2, 4, 8):
                w = S.clone()
                ms = _gpu.bench_graph(lambda BE=BE, warps=warps, w=w: decode_step(
                    q, k, v, beta, log_a, w, scale, out_state=w, BE=BE, warps=warps))  # fmt: skip
                out["sweep"].append({"BE": BE, "warps": warps, "graph_ms": ms})
        best = min(out["sweep"], key=lambda r: r["graph_ms"])
        out["lintutor_best"] = best
    out["lintutor_over_floor"] = out["lintutor_graph_ms"] / out["floor_ms"]
    if out.get("fla_recurrent_graph_ms"):
        out["fla_over_floor"] = out["fla_recurrent_graph_ms"] / out["floor_ms"]
        out["ratio_lintutor_to_fla"] = out["lintutor_graph_ms"] / out["fla_recurrent_graph_ms"]
    log(json.dumps(out))
    return out


def tune(d_list=(64, 128), t_list=(512, 32768), log=print) -> list[dict]:
    """Forward time of every launch setting in a small grid, at few-head and many-head shapes."""
    import torch

    from lintutor.kernels.delta_bodies import chunk_forward

    rows = []
    for D in d_list:
        for T in t_list:
            H, B = WIDTH // D, TOKENS // T
            x = ours(inputs(B, T, H, D, seed=T))
            grid = [{"BE": be, "warps": w, "stages": s} for be in (16, 32, 64) for w in (4, 8)
                    for s in (2, 3)] + [{"ut_warps": u} for u in (1, 2, 4, 8)]  # fmt: skip
            for cfg in grid:
                row = {"D": D, "T": T, **cfg}
                try:
                    with torch.no_grad():
                        row["fwd_ms"] = _gpu.bench(lambda cfg=cfg, x=x, s=D**-0.5: chunk_forward(
                            *x[:4], x[4], scale=s, config=cfg), rep=40)  # fmt: skip
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                log(json.dumps(row))
                rows.append(row)
            del x
            torch.cuda.empty_cache()
    return rows


def live(D=128, T=8192, log=print) -> dict:
    """A short run for a notebook on a GPU: one shape and decode, lintutor and PyTorch only
    (fla's autotuning alone can take minutes); not saved. Returns a result `table` reads."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the live benchmark needs a CUDA GPU")
    result = {"versions": _gpu.versions(), "roofs": _gpu.roofs()}
    bw = result["roofs"]["copy_TBps"] * 1e12
    result["rows"] = [bench_shape(None, D, T, bw, log)]
    result["decode"] = bench_decode(None, bw, log, sweep=False)
    return result


def run(quick=False, out_dir="assets", do_tune=False, log=print, budget_s=None) -> dict:
    """Run the benchmark and write assets/delta_bench_<card>[_quick].json; returns the result.

    budget_s: no new shape after that many seconds (the shapes left are listed in
    `incomplete`); the full sweep then goes through both head dims at each T first."""
    import time

    import torch

    t0 = time.perf_counter()

    if not torch.cuda.is_available():
        raise RuntimeError("the benchmark needs a CUDA GPU; lesson 09 plots the stored results")
    fla = fla_ops()
    if fla is None:
        log("fla (fla-core) is not installed: timing lintutor and PyTorch only")
    result = {"date": _gpu.now(), "versions": _gpu.versions(), "roofs": _gpu.roofs(),
              "tokens_per_call": TOKENS, "width_HxD": WIDTH, "dtype": "bfloat16",
              "inputs": "q randn, k unit, v randn, beta = sigmoid(randn), "
                        "g = logsigmoid(randn + 4)"}  # fmt: skip
    log(json.dumps(result))
    tag = _gpu.device_tag(result["versions"].get("gpu"))
    suffix = "_tune" if do_tune else "_quick" if quick else ""
    path = os.path.join(out_dir, f"delta_bench_{tag}{suffix}.json")
    os.makedirs(out_dir, exist_ok=True)

    def save():
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)

    bw = result["roofs"]["copy_TBps"] * 1e12
    if do_tune:
        result["tune"] = tune(log=log)
        save()
        log(f"wrote {path}")
        return result
    shapes = QUICK if quick else [(D, T) for T in T_LIST for D in (64, 128)]
    result["checks"] = small_checks(fla, log, d_list=sorted({D for D, _ in shapes}))
    save()
    result["decode"] = bench_decode(fla, bw, log, sweep=not quick)
    save()
    result["rows"] = []
    for i, (D, T) in enumerate(shapes):
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            result["incomplete"] = f"not measured (time budget): {shapes[i:]}"
            break
        result["rows"].append(bench_shape(fla, D, T, bw, log))
        save()
    log(table(result))
    log(f"wrote {path}")
    return result


def stored_runs(folder: str | None = None) -> dict[str, str]:
    """{card: path} of the stored benchmark runs in `folder` (default assets/): for each card the
    full sweep delta_bench_<card>.json where there is one, else delta_bench_<card>_quick.json;
    _tune.json files (launch-setting sweeps) are not benchmark runs."""
    if folder is None:
        folder = os.path.dirname(asset_path("README.md"))
    runs = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not (name.startswith("delta_bench_") and name.endswith(".json")):
            continue
        stem = name[len("delta_bench_") : -len(".json")]
        if not stem or stem.endswith("_tune"):
            continue
        card, quick = stem.removesuffix("_quick"), stem.endswith("_quick")
        if card not in runs or not quick:
            runs[card] = os.path.join(folder, name)
    return runs


def table(result: dict | str | None = None) -> str:
    """Forward ms per shape (lintutor, fla, their ratio, fraction of the floor) and decode."""
    result = load(result, default="delta_bench_h200.json")
    v = result["versions"]
    head = (f"{v.get('gpu')}, torch {v.get('torch')}, triton {v.get('triton')}, fla {v.get('fla')}"
            f"; copy {result['roofs']['copy_TBps']:.2f} TB/s")  # fmt: skip
    f = lambda x, p=3: "-" if x is None else f"{x:.{p}f}"  # noqa: E731
    lines = [head, f"{'D':>4} {'T':>6} {'ours ms':>8} {'fla ms':>8} {'ours/fla':>8} "
             f"{'floor ms':>8} {'floor/ours':>10} {'floor/fla':>9}"]  # fmt: skip
    for r in result.get("rows", []):
        lines.append(f"{r['D']:>4} {r['T']:>6} {f(r.get('lintutor_fwd_ms')):>8} "
                     f"{f(r.get('fla_chunk_fwd_ms')):>8} {f(r.get('ratio_lintutor_to_fla'), 2):>8} "
                     f"{f(r['floor_fwd_ms']):>8} {f(r.get('lintutor_floor_frac'), 2):>10} "
                     f"{f(r.get('fla_floor_frac'), 2):>9}")  # fmt: skip
    d = result.get("decode")
    if d:
        lines.append(f"decode B={d['B']} H={d['H']} D={d['D']} (CUDA graph): ours "
                     f"{d['lintutor_graph_ms']:.4f} ms = {d['lintutor_over_floor']:.2f}x the floor "
                     f"({d['floor_ms']:.4f} ms); fla {f(d.get('fla_recurrent_graph_ms'), 4)} ms "
                     f"({f(d.get('fla_over_floor'), 2)}x)")  # fmt: skip
    return "\n".join(lines)


def figure(result: dict | str | None = None):
    """Forward ms against T for D = 64 and 128 (lintutor, fla, the memory floor), log axes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    result = load(result, default="delta_bench_h200.json")
    rows = result.get("rows", [])
    dims = sorted({r["D"] for r in rows}) or [64, 128]
    heads = {r["D"]: r["H"] for r in rows}
    titles = [f"D = {D} (H = {heads.get(D, WIDTH // D)})" for D in dims]
    fig = make_subplots(rows=1, cols=len(dims), subplot_titles=titles)
    names = {"lintutor": "lintutor", "fla_chunk": "fla chunk_gated_delta_rule",
             "torch_chunked": "PyTorch chunked"}  # fmt: skip
    for col, D in enumerate(dims, start=1):
        rs = [r for r in rows if r["D"] == D]
        for key, label in names.items():
            pts = [(r["T"], r[f"{key}_fwd_ms"]) for r in rs if r.get(f"{key}_fwd_ms")]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts],
                                         mode="lines+markers", name=label, legendgroup=key,
                                         showlegend=col == 1), row=1, col=col)  # fmt: skip
        if rs:
            fig.add_trace(go.Scatter(x=[r["T"] for r in rs], y=[r["floor_fwd_ms"] for r in rs],
                                     mode="lines", line=dict(dash="dot", color="gray"),
                                     name="memory floor", legendgroup="floor",
                                     showlegend=col == 1), row=1, col=col)  # fmt: skip
        fig.update_xaxes(title_text="T (B = 65,536 / T)", type="log", row=1, col=col)
        fig.update_yaxes(title_text="forward ms (bf16)", type="log", row=1, col=col)
    fig.update_layout(title=f"gated delta rule forward on {result['versions'].get('gpu')}",
                      width=800, height=380)  # fmt: skip
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lintutor.experiments.delta_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="2 shapes and decode (< 3 min)")
    parser.add_argument("--tune", action="store_true", help="sweep the launch settings only")
    parser.add_argument("--out", default="assets", help="folder for the JSON (default assets/)")
    args = parser.parse_args(argv)
    run(quick=args.quick, out_dir=args.out, do_tune=args.tune)


if __name__ == "__main__":
    main()
