"""Lesson 08's benchmark: lintutor's kernels against fla, SDPA and plain PyTorch on one GPU.

    lintutor bench                 (or python -m lintutor.experiments.kernel_bench) full run
    lintutor bench --quick         two sequence lengths, for a smoke test
    live(out_dir)                  forward + decode at four shapes in about a minute (lesson 08)
    lintutor bench --tune          also sweep the kernels' launch settings (kernel_tune.py)
    lintutor bench --gated         the gated kernels against fla's simple_gla with a gate
    lintutor bench --gated --tune  first the forward sweep (kernel_tune.tune_forward)
    lintutor bench --finish JSON   complete a run that stopped early
    lintutor bench --lm / --lm-drift   the LM curves instead (lm_curves.py)

Rules: one run on one card; the card's own copy bandwidth and bf16 matmul rate measured in the
same run (`_gpu.roofs`); every provider checked against an fp32 reference before it is timed (a
provider that fails is recorded, not timed; kernel_providers.py); bf16 inputs, fp32 state;
65,536 tokens per call (B = 65536 / T), H * D = 2048; decode B = 64, H = 16, D = 128 timed in
CUDA graphs. Writes assets/bench_<card>.json; `table()` and `figure()` read it back without a GPU
(results.py has the memory floors). The gated run writes assets/gated_bench_<card>.json
(`results.gated_table`, `results.gated_figure`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from lintutor.experiments import _gpu, kernel_providers, results
from lintutor.experiments.kernel_providers import (
    FWD_TOL,
    GRAD_TOL,
    T_LIST,
    TOKENS,
    WIDTH,
    fla_ops,
    forward_providers,
    gate_inputs,
    gated_forward_providers,
    gated_grad_check,
    gated_grad_fn,
    gated_reference,
    gated_slice,
    grad_check,
    grad_fn,
    inputs,
    reference,
    rel_err,
    sdpa_reference,
)

summarize, table, figure, decode_figure = (
    results.summarize, results.table, results.figure, results.decode_figure
)  # fmt: skip


def _within_budget(shapes, budget_s, rows, log):
    """The (D, T) shapes in order until `budget_s` seconds have passed since the first one
    started (at least one row is measured); the shapes left go into the last row's "skipped"."""
    import time

    t0 = time.perf_counter()
    for i, shape in enumerate(shapes):
        if budget_s is not None and time.perf_counter() - t0 > budget_s and rows:
            rows[-1]["skipped"] = [f"D={d} T={t}" for d, t in shapes[i:]]
            log(f"time budget of {budget_s:.0f} s spent: skipped {rows[-1]['skipped']}")
            return
        yield shape


def bench_shapes(fla, t_list=T_LIST, d_list=(64, 128), log=print, on_row=None, fwdbwd=True,
                 budget_s=None) -> list[dict]:  # fmt: skip
    """One row per (D, T): every provider's forward and forward+backward time and error.

    fwdbwd=False times forwards only; budget_s: no new shape starts once that many seconds have
    passed (the shapes left out are listed in the last row's "skipped")."""
    import torch

    providers = forward_providers(fla)
    rows = []
    shapes = [(D, T) for D in d_list for T in t_list]
    for D, T in _within_budget(shapes, budget_s, rows, log):
        H = WIDTH // D
        B = TOKENS // T
        row = {"D": D, "H": H, "T": T, "B": B}
        x = inputs(B, H, T, D, seed=T + D)
        ref = reference(x)
        for name, fn in providers.items():
            try:
                if name.startswith("sdpa"):
                    o = fn(x)
                    err = rel_err(o[:1, :2, :1024], sdpa_reference(x))
                else:
                    err = rel_err(fn(x), ref)
                row[f"{name}_fwd_err"] = err
                if not err < FWD_TOL:
                    row[f"{name}_fwd_ms"] = None
                    log(f"  {name} D={D} T={T}: rel err {err:.2e} FAILED, not timed")
                    continue
                if name == "torch_chunked" and T > 8192:
                    row[f"{name}_fwd_ms"] = _gpu.bench(lambda: fn(x), rep=30, warmup=5)  # noqa: B023
                else:
                    row[f"{name}_fwd_ms"] = _gpu.bench(lambda: fn(x))  # noqa: B023
            except Exception as e:  # a missing backend is recorded, not fatal
                row[f"{name}_fwd_ms"] = None
                row[f"{name}_fwd_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        del ref
        if fwdbwd:
            xg = inputs(B, H, T, D, seed=T + D + 1, grad=True)
            for name in ("lintutor", "fla_chunk", "fla_fused_chunk", "sdpa_flash", "sdpa_cudnn"):
                if name not in providers or row.get(f"{name}_fwd_ms") is None:
                    continue
                try:
                    fn, do, _ = grad_fn(name, providers[name], xg)
                    if not name.startswith("sdpa"):
                        row[f"{name}_grad_err"] = grad_check(xg, name, do, fn)
                        if not row[f"{name}_grad_err"] < GRAD_TOL:
                            row[f"{name}_fwdbwd_ms"] = None
                            continue
                    row[f"{name}_fwdbwd_ms"] = _gpu.bench(fn, rep=60, warmup=10)
                except Exception as e:
                    row[f"{name}_fwdbwd_ms"] = None
                    row[f"{name}_fwdbwd_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            del xg
        torch.cuda.empty_cache()
        rows.append(row)
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
        if on_row is not None:
            on_row(rows)
    return rows


def bench_decode(fla, log=print, kv_lengths=(1024, 4096, 16384, 65536)) -> dict:
    """One-token decode, B=64, H=16, D=E=128, fp32 state, every provider in a CUDA graph; SDPA
    decodes over KV caches of `kv_lengths` tokens."""
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
    o, S1 = causal_linear_attention_step_triton(q, k, v, Sl, normalize=False)
    out["lintutor_err"] = max(rel_err(o, ro), rel_err(S1, rS))
    S_work = S.clone()

    def step():
        return causal_linear_attention_step_triton(
            q, k, v, S_work, normalize=False, out_state=S_work
        )

    out["lintutor_graph_ms"] = _gpu.bench_graph(step)
    out["lintutor_eager_ms"] = _gpu.bench(step)
    Sc, q32, k32, v32 = S.clone(), q.float(), k.float(), v.float()
    out["torch_step_graph_ms"] = _gpu.bench_graph(
        lambda: causal_linear_attention_step(q32, k32, v32, Sc, normalize=False)
    )
    if fla is not None:
        rec = fla[2]
        qf, kf, vf = (t.unsqueeze(1) for t in (q, k, v))  # (B, 1, H, D)
        of, Sf = rec(qf, kf, vf, scale=1.0, initial_state=S.clone(), output_final_state=True)
        out["fla_recurrent_err"] = max(rel_err(of[:, 0], ro), rel_err(Sf, rS))
        S0f = S.clone()
        out["fla_recurrent_graph_ms"] = _gpu.bench_graph(
            lambda: rec(qf, kf, vf, scale=1.0, initial_state=S0f, output_final_state=True)
        )
    sd = []
    for L in kv_lengths:
        try:
            kc = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn_like(kc)
            q4 = q.unsqueeze(2)
            ms = _gpu.bench_graph(lambda: F.scaled_dot_product_attention(q4, kc, vc), n_inner=5)  # noqa: B023
            sd.append({"L": L, "sdpa_graph_ms": ms, "kv_cache_bytes": 2 * kc.numel() * 2})
            torch.cuda.empty_cache()
        except Exception as e:
            sd.append({"L": L, "error": f"{type(e).__name__}: {str(e)[:200]}"})
    out["sdpa"] = sd
    log(json.dumps(out))
    return out


# The order the gated run visits lengths in, so that a run cut short by its time budget still
# spans short, medium and long sequences; the rows are sorted afterwards.
GATED_T_ORDER = (1024, 16384, 65536, 4096, 512, 32768, 2048, 8192)
GATED_D = (128, 64)
GATED_DECODE = {"B": 64, "H": 16, "D": 128}


def _time_forward(row, name, fn, x, check, log):
    """Check fn against `check(o)` (a relative error), then time it; failures are recorded."""
    try:
        err = check(fn(x))
        row[f"{name}_fwd_err"] = err
        if not err < FWD_TOL:
            row[f"{name}_fwd_ms"] = None
            log(f"  {name} D={row['D']} T={row['T']}: rel err {err:.2e} FAILED, not timed")
            return
        long_torch = name == "torch_chunked" and row["T"] > 8192
        row[f"{name}_fwd_ms"] = _gpu.bench(lambda: fn(x), **({"rep": 30, "warmup": 5}
                                                             if long_torch else {}))  # fmt: skip
    except Exception as e:  # a missing backend or a refused shape is recorded, not fatal
        row[f"{name}_fwd_ms"] = None
        row[f"{name}_fwd_error"] = f"{type(e).__name__}: {str(e)[:200]}"


def _slice_err(o, ref, nb):
    """Relative error of the first nb sequences of o (or the slice (sequences, heads, tokens)
    when nb is a tuple, as SDPA's reference) against ref."""
    if isinstance(nb, tuple):
        return rel_err(o[: nb[0], : nb[1], : nb[2]], ref)
    return rel_err(o[:nb], ref)


def _gated_grads(name, fn, xg):
    """(fn() -> o and the gradients of q, k, v, g; their errors) for a gated provider."""
    f, do = gated_grad_fn(name, fn, xg)
    return f, gated_grad_check(xg, name, do, f)


def _plain_grads(name, fn, xg):
    """(fn() -> o and the gradients of q, k, v; the largest error) for an ungated provider."""
    f, do, _ = grad_fn(name, fn, xg)
    return f, {"max": grad_check(xg, name, do, f)}


def _time_fwdbwd(row, name, make, log):
    """make() -> (fn, errors dict); time fn when every error is below GRAD_TOL."""
    try:
        fn, errs = make()
        row[f"{name}_grad_err"] = max(errs.values())
        row[f"{name}_grad_errs"] = errs
        if not row[f"{name}_grad_err"] < GRAD_TOL:
            row[f"{name}_fwdbwd_ms"] = None
            log(f"  {name} D={row['D']} T={row['T']}: gradient errors {errs} FAILED, not timed")
            return
        row[f"{name}_fwdbwd_ms"] = _gpu.bench(fn, rep=60, warmup=10)
    except Exception as e:  # fla refuses its gated backward on Hopper with some Triton versions
        row[f"{name}_fwdbwd_ms"] = None
        row[f"{name}_fwdbwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"


def bench_gated_shapes(fla, t_list=GATED_T_ORDER, d_list=GATED_D, log=print, on_row=None,
                       fwdbwd=True, budget_s=None) -> list[dict]:  # fmt: skip
    """One row per (D, T): gated and plain forwards, forward+backward, each checked first.

    Forwards: ours gated, fla's chunk and fused_chunk simple GLA with the gate, our plain
    (ungated) kernel and SDPA (flash, cuDNN), every one checked on a slice of the batch
    (`gated_slice`) against an fp32 reference. Forward+backward: ours and fla's gated (every
    gradient, dg included, checked against fp32 autograd of lesson 04's form), next to the
    ungated ours and fla's. budget_s: no new shape starts once that many seconds have passed.
    """
    import torch

    plain = forward_providers(fla)
    gated = gated_forward_providers(fla)
    rows = []
    shapes = [(D, T) for T in t_list for D in d_list]
    for D, T in _within_budget(shapes, budget_s, rows, log):
        H, B = WIDTH // D, TOKENS // T
        row = {"D": D, "H": H, "T": T, "B": B}
        x = gate_inputs(inputs(B, H, T, D, seed=T + D), seed=T + D)
        nb = gated_slice(x, T)
        row["checked_sequences"] = nb
        check = functools.partial(_slice_err, ref=gated_reference(x, nb), nb=nb)
        for name, fn in gated.items():
            _time_forward(row, name, fn, x, check, log)
        check = functools.partial(_slice_err, ref=reference({n: x[n][:nb] for n in "qkv"}), nb=nb)
        _time_forward(row, "lintutor", plain["lintutor"], x, check, log)
        check = functools.partial(_slice_err, ref=sdpa_reference(x), nb=(1, 2, 1024))
        for name in ("sdpa_flash", "sdpa_cudnn"):
            _time_forward(row, name, plain[name], x, check, log)
        del check
        if fwdbwd:
            xg = gate_inputs(inputs(B, H, T, D, seed=T + D + 1, grad=True), seed=T + D + 1,
                             grad=True)  # fmt: skip
            for name, fn in gated.items():
                if row.get(f"{name}_fwd_ms") is not None:
                    _time_fwdbwd(row, name, functools.partial(_gated_grads, name, fn, xg), log)
            for name in ("lintutor", "fla_chunk", "fla_fused_chunk"):
                if name in plain:
                    _time_fwdbwd(row, name, functools.partial(_plain_grads, name, plain[name], xg),
                                 log)  # fmt: skip
            del xg
        del x
        torch.cuda.empty_cache()
        rows.append(row)
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                        if not isinstance(v, dict)}))  # fmt: skip
        if on_row is not None:
            on_row(rows)
    return sorted(rows, key=lambda r: (r["D"], r["T"]))


def bench_gated_decode(fla, log=print, B=64, H=16, D=128) -> dict:
    """One-token gated decode, B=64, H=16, D=E=128, fp32 state, in CUDA graphs: ours gated and
    ungated, fla's fused_recurrent_simple_gla with the gate, lesson 04's PyTorch step."""
    import torch
    import torch.nn.functional as F

    from lintutor.gated import gated_linear_attention_step
    from lintutor.kernels import (
        causal_linear_attention_step_triton,
        gated_linear_attention_step_triton,
    )

    dev = kernel_providers.DEVICE
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (
        torch.randn(B, H, D, device=dev, generator=gen, dtype=torch.bfloat16) for _ in range(3)
    )
    q = q * D**-0.5
    g = F.logsigmoid(torch.randn(B, H, device=dev, generator=gen) + 3) / 16  # (B, H) fp32
    S = torch.randn(B, H, D, D, device=dev, generator=gen) * 0.1
    out = {"B": B, "H": H, "D": D, "state_bytes_rw": 2 * S.numel() * 4, "gate_bytes": g.numel() * 4}
    ro, rS = gated_linear_attention_step(q.float(), k.float(), v.float(), g, S.clone())
    o, S1 = gated_linear_attention_step_triton(q, k, v, g, S.clone())
    out["lintutor_gated_err"] = max(rel_err(o, ro), rel_err(S1, rS))
    S_work = S.clone()

    def step():
        return gated_linear_attention_step_triton(q, k, v, g, S_work, out_state=S_work)

    out["lintutor_gated_graph_ms"] = _gpu.bench_graph(step)
    out["lintutor_gated_eager_ms"] = _gpu.bench(step)
    S_plain = S.clone()
    out["lintutor_graph_ms"] = _gpu.bench_graph(
        lambda: causal_linear_attention_step_triton(
            q, k, v, S_plain, normalize=False, out_state=S_plain
        )  # fmt: skip
    )
    Sc, q32, k32, v32 = S.clone(), q.float(), k.float(), v.float()

    def torch_step():  # lesson 04's step, its math only: its input checks read g on the host,
        # which a CUDA graph cannot capture; the state updated in place, as a server would
        Sc.mul_(torch.exp(g)[..., None, None]).add_(k32[..., :, None] * v32[..., None, :])
        return torch.einsum("bhd,bhde->bhe", q32, Sc)

    out["torch_step_err"] = max(rel_err(torch_step(), ro), rel_err(Sc, rS))
    out["torch_step_graph_ms"] = _gpu.bench_graph(torch_step)
    if fla is not None:
        rec = fla[2]
        qf, kf, vf = (t.unsqueeze(1) for t in (q, k, v))  # (B, 1, H, D)
        gf = g.unsqueeze(1)  # (B, 1, H)
        try:
            of, Sf = rec(qf, kf, vf, g=gf, scale=1.0, initial_state=S.clone(),
                         output_final_state=True)  # fmt: skip
            out["fla_recurrent_gated_err"] = max(rel_err(of[:, 0], ro), rel_err(Sf, rS))
            if out["fla_recurrent_gated_err"] < 1e-2:
                S0f = S.clone()
                out["fla_recurrent_gated_graph_ms"] = _gpu.bench_graph(
                    lambda: rec(
                        qf, kf, vf, g=gf, scale=1.0, initial_state=S0f, output_final_state=True
                    )  # fmt: skip
                )
        except Exception as e:
            out["fla_recurrent_gated_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    log(json.dumps(out))
    return out


def run_gated(quick=False, out_dir="assets", log=print, budget_s=None, tune_s=None) -> dict:
    """The gated benchmark: writes <out_dir>/gated_bench_<card>[_quick].json, returns it.

    quick: T in 1K and 16K only. budget_s: no new shape after that many seconds. tune_s: first
    run the forward sweep (kernel_tune.tune_forward) for about that many seconds, into
    <out_dir>/tune_forward_<card>.json.
    """
    import time

    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the benchmark needs a CUDA GPU; the lesson plots the stored results")
    t0 = time.perf_counter()
    fla = fla_ops()
    if fla is None:
        log("fla (flash-linear-attention / fla-core) is not installed: timing the other providers")
    result = {"date": _gpu.now(), "versions": _gpu.versions(), "roofs": _gpu.roofs(),
              "tokens_per_call": TOKENS, "width_HxD": WIDTH, "dtype": "bfloat16",
              "gate": "g = logsigmoid(x + 3) / 16, x ~ N(0, 1), fp32, fla's (B, T, H)"}  # fmt: skip
    log(json.dumps(result))
    tag = _gpu.device_tag(result["versions"]["gpu"])
    os.makedirs(out_dir, exist_ok=True)
    if tune_s:
        from lintutor.experiments.kernel_tune import tune_forward

        tune_forward(budget_s=tune_s, log=log,
                     out_path=os.path.join(out_dir, f"tune_forward_{tag}.json"))  # fmt: skip
    path = os.path.join(out_dir, f"gated_bench_{tag}{'_quick' if quick else ''}.json")

    def save(rows):
        with open(path, "w") as fh:
            json.dump(dict(result, rows=rows), fh, indent=1)

    result["decode"] = bench_gated_decode(fla, log=log, **GATED_DECODE)
    left = None if budget_s is None else max(0.0, budget_s - (time.perf_counter() - t0))
    t_list = GATED_T_ORDER[:2] if quick else GATED_T_ORDER
    result["rows"] = bench_gated_shapes(fla, t_list=t_list, d_list=GATED_D, log=log, on_row=save,
                                        budget_s=left)  # fmt: skip
    missing = [(D, T) for T in t_list for D in GATED_D
               if (D, T) not in {(r["D"], r["T"]) for r in result["rows"]}]  # fmt: skip
    if missing:
        result["incomplete"] = f"not measured (time budget): {missing}"
        result["missing"] = missing
    results.summarize_gated(result)
    result["seconds"] = time.perf_counter() - t0
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    log(results.gated_table(result))
    log(f"wrote {path}")
    return result


def run(quick=False, out_dir="assets", do_tune=False, log=print) -> dict:
    """Run the benchmark and write assets/bench_<card>.json; returns the result."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the benchmark needs a CUDA GPU; the lesson plots the stored results")
    fla = fla_ops()
    if fla is None:
        log("fla (flash-linear-attention / fla-core) is not installed: timing the other providers")
    result = {
        "date": _gpu.now(),
        "versions": _gpu.versions(),
        "roofs": _gpu.roofs(),
        "tokens_per_call": TOKENS,
        "width_HxD": WIDTH,
        "dtype": "bfloat16",
    }
    log(json.dumps(result))
    if do_tune:
        from lintutor.experiments.kernel_tune import tune

        result["tune"] = tune(fla, log)
    t_list = (1024, 65536) if quick else T_LIST
    tag = _gpu.device_tag(result["versions"]["gpu"])
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


LIVE_T = (1024, 16384)  # two of the stored run's lengths: many short sequences, few long ones


def live(out_dir: str, budget_s: float = 45.0, log=print) -> dict:
    """The benchmark in about a minute, to plot beside a stored run (lesson 08 on a GPU).

    The same rules as `run` (roofs, correctness before timing, one run on one card), fewer
    shapes: forwards only at T in LIVE_T for D = 64 and 128 (the last shapes are skipped once
    budget_s seconds have passed), and decode with KV caches of 1K and 4K tokens. Writes
    <out_dir>/bench_<card>_live.json and returns the summarized result.
    """
    import time

    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the benchmark needs a CUDA GPU; the lesson plots the stored results")
    t0 = time.perf_counter()
    fla = fla_ops()
    if fla is None:
        log("fla (flash-linear-attention / fla-core) is not installed: timing the other providers")
    result = {"date": _gpu.now(), "versions": _gpu.versions(), "roofs": _gpu.roofs(),
              "tokens_per_call": TOKENS, "width_HxD": WIDTH, "dtype": "bfloat16",
              "mode": "live: forward only, T in " + str(LIVE_T)}  # fmt: skip
    result["decode"] = bench_decode(fla, log=log, kv_lengths=(1024, 4096))
    left = max(0.0, budget_s - (time.perf_counter() - t0))
    result["rows"] = bench_shapes(fla, t_list=LIVE_T, log=log, fwdbwd=False, budget_s=left)
    summarize(result)
    result["seconds"] = time.perf_counter() - t0
    tag = _gpu.device_tag(result["versions"]["gpu"])
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"bench_{tag}_live.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    log(f"live benchmark: {result['seconds']:.0f} s, wrote {path}")
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `lintutor bench`."""
    p.add_argument("--quick", action="store_true", help="two sequence lengths only")
    p.add_argument("--tune", action="store_true", help="also sweep the kernel's block sizes")
    p.add_argument(
        "--gated",
        action="store_true",
        help="the gated kernels against fla's simple_gla with a gate",
    )
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


def run_from_args(args) -> int:
    """Run what `add_arguments`' flags ask for; 1 with the reason when it cannot run here."""
    from lintutor.experiments import lm_curves

    try:
        if getattr(args, "finish", None):
            finish_partial(args.finish, "not measured: the run stopped before this shape")
        elif args.lm_drift:
            lm_curves.run(out_dir=args.out, drift=True)
        elif args.lm:
            lm_curves.run(out_dir=args.out)
        elif getattr(args, "gated", False):
            run_gated(quick=args.quick, out_dir=args.out, tune_s=180 if args.tune else None)
        else:
            run(quick=args.quick, out_dir=args.out, do_tune=args.tune)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lintutor bench", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
