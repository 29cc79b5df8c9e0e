"""The lesson-08 benchmark: lintutor's kernels against fla, SDPA and plain PyTorch on one GPU.

    python -m lintutor.bench            (or `lintutor bench`) full run, JSON into assets/
    python -m lintutor.bench --quick    two shapes, for a smoke test

Rules (shared/BENCHMARK.md): one run on one card; the card's own copy bandwidth and bf16 matmul
rate measured in the same run; every provider checked against an fp32 reference before it is
timed (a provider that fails is recorded, not timed); bf16 inputs, fp32 state; 65,536 tokens per
call (B = 65536 / T), H * D = 2048; decode B = 64, H = 16, D = 128 timed in CUDA graphs.

Memory floors (bytes that must move / measured copy bandwidth):
  forward        read q, k, v, write o: 4 tensors of 65,536 x 2048 bf16 = 1.07 GB
  forward+back   forward, then read q, k, v, do and write dq, dk, dv: 11 such tensors
  decode         read and write the fp32 state once: 2 * B * H * D * E * 4 bytes
fla is compared as plain causal linear attention: no gate, scale=1 (q is pre-scaled by D^-0.5
for every provider), layout (B, T, H, D) converted once, outside the timed region.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys

TOKENS, WIDTH = 65536, 2048
T_LIST = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def _versions() -> dict:
    import torch
    import triton

    out = {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
    }
    try:
        import fla

        out["fla"] = getattr(fla, "__version__", "installed")
    except ImportError:
        out["fla"] = None
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["cudnn"] = torch.backends.cudnn.version()
        out["cuda"] = torch.version.cuda
        try:
            import subprocess

            out["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip()  # fmt: skip
        except Exception:
            out["driver"] = None
    return out


def _bench(fn, rep=100, warmup=25) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def _bench_graph(fn, n_inner=20) -> float:
    """Median ms per call of fn replayed inside a CUDA graph (n_inner calls per graph)."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n_inner):
            fn()
    return _bench(g.replay) / n_inner


def roofs() -> dict:
    """Copy bandwidth (TB/s, read + written) and bf16 matmul rate (TFLOP/s), measured here."""
    import torch

    x = torch.empty(2**29, dtype=torch.bfloat16, device="cuda").normal_()  # 1 GiB
    y = torch.empty_like(x)
    ms = _bench(lambda: y.copy_(x))
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    mm = _bench(lambda: a @ b)
    return {"copy_TBps": 2 * 2**30 / ms / 1e9, "bf16_mm_TFLOPs": 2 * 8192**3 / mm / 1e9}


def rel_err(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _fla():
    try:
        from fla.ops.simple_gla import (
            chunk_simple_gla,
            fused_chunk_simple_gla,
            fused_recurrent_simple_gla,
        )
    except ImportError:
        return None
    return chunk_simple_gla, fused_chunk_simple_gla, fused_recurrent_simple_gla


def forward_providers(fla):
    """{name: (fn(x) -> o (B, H, T, E), layout)}; x holds both layouts of q, k, v."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lintutor.causal import causal_linear_attention_chunked
    from lintutor.kernels import causal_linear_attention_triton

    def sdpa(backend):
        def fn(x):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(x["q"], x["k"], x["v"], is_causal=True)

        return fn

    p = {
        "lintutor": lambda x: causal_linear_attention_triton(
            x["q"], x["k"], x["v"], normalize=False
        ),
        "torch_chunked": lambda x: causal_linear_attention_chunked(
            x["q"], x["k"], x["v"], normalize=False
        ),
        "sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
    }
    if fla is not None:
        chunk, fused_chunk, _ = fla
        p["fla_chunk"] = lambda x: chunk(x["qf"], x["kf"], x["vf"], scale=1.0)[0].transpose(1, 2)
        p["fla_fused_chunk"] = lambda x: fused_chunk(x["qf"], x["kf"], x["vf"], scale=1.0)[
            0
        ].transpose(1, 2)
    del torch
    return p


def _inputs(B, H, T, D, seed=0, grad=False):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (
        torch.randn(B, H, T, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3)
    )
    q = q * D**-0.5
    x = {"q": q, "k": k, "v": v}
    x.update({n + "f": t.transpose(1, 2).contiguous() for n, t in list(x.items())})  # (B, T, H, D)
    if grad:
        for t in x.values():
            t.requires_grad_(True)
    return x


def _reference(x):
    """fp32 plain causal linear attention (lesson 03's chunked form) of the bf16 inputs."""
    from lintutor.causal import causal_linear_attention_chunked

    return causal_linear_attention_chunked(
        x["q"].float(), x["k"].float(), x["v"].float(), normalize=False
    )


def _sdpa_reference(x):
    import torch

    B = 1
    q, k, v = (x[n][:B, :2, :1024].float() for n in "qkv")
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=s.device).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v


def _grad_fn(name, fwd, x):
    """fn() computing o and all three input gradients, for the provider `name`."""
    import torch

    layout = "f" if name.startswith("fla") else ""
    ins = [x["q" + layout], x["k" + layout], x["v" + layout]]
    o = fwd(x)
    do = torch.randn_like(o)

    def fn():
        out = fwd(x)
        return torch.autograd.grad(out, ins, do)

    return fn, do, ins


def bench_shapes(fla, t_list=T_LIST, d_list=(64, 128), log=print, on_row=None) -> list[dict]:
    import torch

    providers = forward_providers(fla)
    rows = []
    for D in d_list:
        H = WIDTH // D
        for T in t_list:
            B = TOKENS // T
            row = {"D": D, "H": H, "T": T, "B": B}
            x = _inputs(B, H, T, D, seed=T + D)
            ref = _reference(x)
            for name, fn in providers.items():
                try:
                    if name.startswith("sdpa"):
                        o = fn(x)
                        err = rel_err(o[:1, :2, :1024], _sdpa_reference(x))
                    else:
                        err = rel_err(fn(x), ref)
                    row[f"{name}_fwd_err"] = err
                    if not err < 2e-2:
                        row[f"{name}_fwd_ms"] = None
                        log(f"  {name} D={D} T={T}: rel err {err:.2e} FAILED, not timed")
                        continue
                    if name == "torch_chunked" and T > 8192:
                        row[f"{name}_fwd_ms"] = _bench(lambda: fn(x), rep=30, warmup=5)  # noqa: B023
                    else:
                        row[f"{name}_fwd_ms"] = _bench(lambda: fn(x))  # noqa: B023
                except Exception as e:  # a missing backend is recorded, not fatal
                    row[f"{name}_fwd_ms"] = None
                    row[f"{name}_fwd_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            del ref
            xg = _inputs(B, H, T, D, seed=T + D + 1, grad=True)
            for name in ("lintutor", "fla_chunk", "fla_fused_chunk", "sdpa_flash", "sdpa_cudnn"):
                if name not in providers or row.get(f"{name}_fwd_ms") is None:
                    continue
                try:
                    fn, do, ins = _grad_fn(name, providers[name], xg)
                    if not name.startswith("sdpa"):
                        row[f"{name}_grad_err"] = _grad_check(
                            providers[name], xg, name, do, ins, fn
                        )
                        if not row[f"{name}_grad_err"] < 3e-2:
                            row[f"{name}_fwdbwd_ms"] = None
                            continue
                    row[f"{name}_fwdbwd_ms"] = _bench(fn, rep=60, warmup=10)
                except Exception as e:
                    row[f"{name}_fwdbwd_ms"] = None
                    row[f"{name}_fwdbwd_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            del xg
            torch.cuda.empty_cache()
            rows.append(row)
            log(
                json.dumps(
                    {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                )
            )
            if on_row is not None:
                on_row(rows)
    return rows


def _grad_check(fwd, x, name, do, ins, fn) -> float:
    """Largest relative error of dq, dk, dv against fp32 autograd of the torch chunked form."""
    import torch

    from lintutor.causal import causal_linear_attention_chunked

    grads = fn()
    B = x["q"].shape[0]
    nb = max(1, min(B, 4096 // x["q"].shape[2]))  # a slice of the batch keeps the fp32 ref small
    leaves = [x[n][:nb].detach().float().requires_grad_() for n in "qkv"]
    o = causal_linear_attention_chunked(*leaves, normalize=False)
    ref = torch.autograd.grad(o, leaves, do[:nb].float())  # do is (B, H, T, E) for everyone
    errs = []
    for g, r in zip(grads, ref):
        g = g.transpose(1, 2) if name.startswith("fla") else g
        errs.append(rel_err(g[:nb], r))
    return max(errs)


def bench_decode(fla, log=print) -> dict:
    """One-token decode, B=64, H=16, D=E=128, fp32 state, every provider in a CUDA graph."""
    import torch
    import torch.nn.functional as F

    from lintutor.causal import causal_linear_attention_step
    from lintutor.kernels import causal_linear_attention_step_triton

    B, H, D = 64, 16, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(B, H, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3)
    )
    q = q * D**-0.5
    S = torch.randn(B, H, D, D, device="cuda", generator=g) * 0.1
    out = {"B": B, "H": H, "D": D, "state_bytes_rw": 2 * S.numel() * 4}
    ro, rS = causal_linear_attention_step(
        q.float(), k.float(), v.float(), S.clone(), normalize=False
    )

    Sl = S.clone()
    o, S1 = causal_linear_attention_step_triton(q, k, v, Sl)
    out["lintutor_err"] = max(rel_err(o, ro), rel_err(S1, rS))
    S_work = S.clone()
    out["lintutor_graph_ms"] = _bench_graph(
        lambda: causal_linear_attention_step_triton(q, k, v, S_work, out_state=S_work)
    )
    out["lintutor_eager_ms"] = _bench(
        lambda: causal_linear_attention_step_triton(q, k, v, S_work, out_state=S_work)
    )
    Sc, q32, k32, v32 = S.clone(), q.float(), k.float(), v.float()
    out["torch_step_graph_ms"] = _bench_graph(
        lambda: causal_linear_attention_step(q32, k32, v32, Sc, normalize=False)
    )
    if fla is not None:
        rec = fla[2]
        qf, kf, vf = (t.unsqueeze(1) for t in (q, k, v))  # (B, 1, H, D)
        of, Sf = rec(qf, kf, vf, scale=1.0, initial_state=S.clone(), output_final_state=True)
        out["fla_recurrent_err"] = max(rel_err(of[:, 0], ro), rel_err(Sf, rS))
        S0f = S.clone()
        out["fla_recurrent_graph_ms"] = _bench_graph(
            lambda: rec(qf, kf, vf, scale=1.0, initial_state=S0f, output_final_state=True)
        )
    sd = []
    for L in (1024, 4096, 16384, 65536):
        try:
            kc = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn_like(kc)
            q4 = q.unsqueeze(2)
            ms = _bench_graph(lambda: F.scaled_dot_product_attention(q4, kc, vc), n_inner=5)  # noqa: B023
            sd.append({"L": L, "sdpa_graph_ms": ms, "kv_cache_bytes": 2 * kc.numel() * 2})
            torch.cuda.empty_cache()
        except Exception as e:
            sd.append({"L": L, "error": f"{type(e).__name__}: {str(e)[:200]}"})
    out["sdpa"] = sd
    log(json.dumps(out))
    return out


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


def table(result: dict) -> str:
    """A plain-text table of the forward and forward+backward rows."""
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


def tune(fla, log=print) -> list[dict]:
    """Sweep the kernels' launch settings; fla's kernels are timed at the same shapes.

    Rows: {"what": ..., "ms"}. fwd: (BE, C, warps, stages) of the forward scan;
    fwd_seg: the number of segments at long T; dkdv / onepass: (C, warps, stages) of the
    backward kernels; fwdbwd: every backward version through autograd; fla_*: fla's kernels.
    """
    import torch

    from lintutor.kernels import chunked, chunked_bwd
    from lintutor.kernels.chunked_bwd import ChunkedLinearAttention

    out = []

    def record(row, fn, rep=40):
        try:
            row["ms"] = _bench(fn, rep=rep, warmup=10)
        except Exception as e:  # a config that does not compile (shared memory) is recorded
            row["ms"] = None
            row["error"] = f"{type(e).__name__}: {str(e)[:120]}"
        out.append(row)
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))

    def sweep(what, D, T, fn, Cs, warps_list, stages_list, **extra):
        for C in Cs:
            for warps in warps_list:
                for stages in stages_list:
                    row = {"what": what, "D": D, "T": T, **extra, "C": C, "warps": warps,
                           "stages": stages}  # fmt: skip
                    record(row, functools.partial(fn, C, warps, stages))

    for D in (64, 128):
        H = WIDTH // D
        for T in T_LIST:
            x = _inputs(TOKENS // T, H, T, D, seed=1)
            qkv = (x["q"], x["k"], x["v"])
            if fla is not None:
                for i, name in ((0, "chunk"), (1, "fused_chunk")):
                    fn = functools.partial(fla[i], x["qf"], x["kf"], x["vf"], scale=1.0)
                    record({"what": "fla_fwd", "name": name, "D": D, "T": T}, fn)
            record({"what": "fwd_default", "D": D, "T": T},
                   functools.partial(chunked.chunk_scan, *qkv))  # fmt: skip
            if T in (512, 16384, 65536):
                for BE in (64,) if D == 64 else (64, 128):  # BE: columns of E per program

                    def fwd(C, warps, stages, qkv=qkv, BE=BE):
                        return chunked.chunk_scan(*qkv, chunk_size=C, config=(BE, warps, stages))

                    if BE == 64:
                        sweep("fwd", D, T, fwd, (64,), (4,), (2, 3, 4), BE=BE)
                    else:
                        sweep("fwd", D, T, fwd, (64, 128), (8,), (2, 3), BE=BE)
            if T >= 32768:
                for ns in (1, 2, 4, 8):
                    row = {"what": "fwd_seg", "D": D, "T": T, "segments": ns}
                    record(row, functools.partial(chunked.chunk_scan, *qkv, num_segments=ns))
            do = torch.randn_like(x["v"])
            args = (x["q"], x["k"], x["v"], do)
            if T in (512, 4096, 16384):

                def onepass(C, warps, stages, args=args):
                    return chunked_bwd.bwd_onepass(*args, config=(C, warps, stages, 1))

                def dkdv(C, warps, stages, args=args):
                    return chunked_bwd.dkdv(*args, config=(C, warps, stages, 2))

                if T != 4096:
                    sweep("onepass", D, T, onepass, (32, 64), (4, 8), (1, 2, 3))
                elif D == 128:
                    sweep("dkdv", D, T, dkdv, (32, 64), (4, 8), (1, 2, 3))
            del x, qkv, do, args
            if T in (512, 4096, 16384, 65536):
                xg = _inputs(TOKENS // T, H, T, D, seed=3, grad=True)
                for version in ("auto", "onepass", "dkdv", "scans"):
                    ChunkedLinearAttention.backward_version = version
                    fn, _, _ = _grad_fn("lintutor", forward_providers(None)["lintutor"], xg)
                    record({"what": "fwdbwd", "version": version, "D": D, "T": T}, fn, rep=60)
                ChunkedLinearAttention.backward_version = "auto"
                if fla is not None:
                    p = forward_providers(fla)
                    for name in ("fla_chunk", "fla_fused_chunk"):
                        fn, _, _ = _grad_fn(name, p[name], xg)
                        record({"what": "fla_fwdbwd", "name": name, "D": D, "T": T}, fn, rep=60)
                del xg
            torch.cuda.empty_cache()
    return out


def run(quick=False, out_dir="assets", do_tune=False, log=print) -> dict:
    """Run the benchmark and write assets/bench_<gpu>.json; returns the result."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the benchmark needs a CUDA GPU; the lesson plots the stored results")
    fla = _fla()
    if fla is None:
        log("fla (flash-linear-attention / fla-core) is not installed: timing the other providers")
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "roofs": roofs(),
        "tokens_per_call": TOKENS,
        "width_HxD": WIDTH,
        "dtype": "bfloat16",
    }
    log(json.dumps(result))
    if do_tune:
        result["tune"] = tune(fla, log)
    t_list = (1024, 65536) if quick else T_LIST
    name = result["versions"]["gpu"].lower()
    tag = "h200" if "h200" in name else "h100" if "h100" in name else name.split()[-1]
    path = os.path.join(out_dir, f"bench_{tag}{'_quick' if quick else ''}.json")
    os.makedirs(out_dir, exist_ok=True)

    def save(rows):
        with open(path, "w") as fh:
            json.dump(dict(result, rows=rows), fh, indent=1)

    result["decode"] = bench_decode(fla, log=log)
    result["rows"] = bench_shapes(fla, t_list=t_list, log=log, on_row=save)
    summarize(result)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    log(table(result))
    log(f"wrote {path}")
    return result


def finish_partial(path: str, note: str, log=print) -> dict:
    """Complete a benchmark JSON that a run left unfinished (it saves after every row).

    Shapes of the grid with no row get {"not_measured": note}; the file gets "incomplete" and
    the floors and ratios of `summarize`, computed from its own measurements. Nothing is copied
    from another run.
    """
    with open(path) as fh:
        result = json.load(fh)
    have = {(r["D"], r["T"]) for r in result["rows"]}
    missing = [(D, T) for D in (64, 128) for T in T_LIST if (D, T) not in have]
    for D, T in missing:
        result["rows"].append(
            {"D": D, "H": WIDTH // D, "T": T, "B": TOKENS // T, "not_measured": note}
        )
    if missing:
        result["incomplete"] = f"{len(have)} of {len(have) + len(missing)} shapes: {note}"
    summarize(result)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    log(table(result))
    return result


LM_CONFIG = {"vocab_size": 64, "d_model": 128, "n_layers": 2, "n_heads": 2, "max_len": 256,
             "batch_size": 64, "seq_len": 256, "n_pairs": 16, "steps": 600, "lr": 3e-3}  # fmt: skip


def lm_curves(device="cuda", out_dir="assets", config=None, log=print, drift=False) -> dict:
    """Train lesson 03's TinyLM on MQAR twice, torch chunked form vs the Triton kernel.

    Same seed, same batches; head dim 64 (d_model 128, 2 heads), elu+1 features, normalized.
    Writes assets/lm_curves_<gpu>.json with both histories; returns them. With drift=True it
    trains four equivalent forms instead (chunked C=64 and C=32, parallel, kernel) and writes
    assets/lm_drift_<gpu>.json: how far training alone spreads forms that compute one function.
    """
    import torch

    from lintutor.causal import causal_linear_attention_chunked, causal_linear_attention_parallel
    from lintutor.data import mqar_batch_fn
    from lintutor.kernels import causal_linear_attention_triton
    from lintutor.models import TinyLM, train

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("the LM curves need a CUDA GPU; lesson 08 plots the stored ones")
    c = dict(LM_CONFIG, **(config or {}))
    runs = {}
    forms = {"torch_chunked": None, "triton": functools.partial(causal_linear_attention_triton)}
    if drift:
        forms = {
            "torch_chunked_C64": None,
            "torch_chunked_C32": functools.partial(causal_linear_attention_chunked, chunk_size=32),
            "torch_parallel": causal_linear_attention_parallel,
            "triton": causal_linear_attention_triton,
        }
    for name, fn in forms.items():
        torch.manual_seed(0)
        kwargs = {"attention_fn": fn} if fn is not None else {}
        model = TinyLM(c["vocab_size"], c["d_model"], c["n_layers"], c["n_heads"], c["max_len"],
                       mixer="linear", mixer_kwargs=kwargs)  # fmt: skip
        batch_fn = mqar_batch_fn(
            c["batch_size"], c["seq_len"], c["n_pairs"], c["vocab_size"], seed=0
        )
        hist = train(model, batch_fn, c["steps"], lr=c["lr"], device=device, progress=False, seed=0)
        runs[name] = hist
        last = f"loss {hist['loss'][-1]:.4f} acc {hist['accuracy'][-1]:.3f}"
        log(f"{name}: final {last} in {hist['seconds']:.1f} s")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "versions": _versions(), "config": c, "runs": runs}  # fmt: skip
    if device != "cpu":
        name = result["versions"].get("gpu", "gpu").lower()
        tag = "h200" if "h200" in name else "h100" if "h100" in name else "gpu"
        os.makedirs(out_dir, exist_ok=True)
        stem = "lm_drift" if drift else "lm_curves"
        with open(os.path.join(out_dir, f"{stem}_{tag}.json"), "w") as fh:
            json.dump(result, fh, indent=1)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="two sequence lengths only")
    p.add_argument("--tune", action="store_true", help="also sweep the kernel's block sizes")
    p.add_argument("--out", default="assets", help="folder for the JSON result")
    p.add_argument("--lm", action="store_true", help="only train the LM with both forms")
    p.add_argument(
        "--lm-drift", action="store_true", help="only train the LM with four equal forms"
    )
    p.add_argument(
        "--finish",
        metavar="JSON",
        help="complete a run that stopped early: mark the missing shapes, add floors and ratios",
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lintutor bench", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


def run_from_args(args) -> int:
    """Run what `add_arguments`' flags ask for; 1 with the reason when it cannot run here."""
    try:
        if getattr(args, "finish", None):
            finish_partial(args.finish, "not measured: the run stopped before this shape")
        elif args.lm_drift:
            lm_curves(out_dir=args.out, drift=True)
        elif args.lm:
            lm_curves(out_dir=args.out)
        else:
            run(quick=args.quick, out_dir=args.out, do_tune=args.tune)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
