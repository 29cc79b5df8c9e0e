"""The sweep of the kernels' launch settings (`lintutor bench --tune`, lesson 08).

Every setting of the forward scan, of the two fused backward kernels and every backward version
through autograd is timed at the benchmark's shapes, next to fla's kernels at the same shapes.
The defaults in `lintutor.kernels.chunked._config` and `chunked_bwd._bwd_config` come from
these sweeps. The rows go into the benchmark JSON under "tune".
"""

from __future__ import annotations

import functools
import json
import math

from lintutor.experiments import _gpu, kernel_providers
from lintutor.experiments.kernel_providers import T_LIST, TOKENS, WIDTH, grad_fn, inputs


def tune(fla, log=print) -> list[dict]:
    """Sweep the kernels' launch settings; fla's kernels are timed at the same shapes.

    Rows: {"what": ..., "ms"}. fwd: (BE, C, warps, stages) of the forward scan;
    fwd_seg: the number of segments at long T; dkdv / onepass: (C, warps, stages) of the
    backward kernels; fwdbwd: every backward version through autograd; fla_*: fla's kernels.
    """
    import torch

    from lintutor.experiments.kernel_providers import forward_providers
    from lintutor.kernels import causal_linear_attention_triton, chunked, chunked_bwd

    out = []

    def record(row, fn, rep=40):
        try:
            row["ms"] = _gpu.bench(fn, rep=rep, warmup=10)
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

    def with_backward(version):
        def fwd(x):
            return causal_linear_attention_triton(
                x["q"], x["k"], x["v"], normalize=False, backward=version
            )

        return fwd

    for D in (64, 128):
        H = WIDTH // D
        for T in T_LIST:
            x = inputs(TOKENS // T, H, T, D, seed=1)
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
                xg = inputs(TOKENS // T, H, T, D, seed=3, grad=True)
                for version in chunked_bwd.BACKWARD_VERSIONS:  # auto, onepass, dkdv, scans
                    fn, _, _ = grad_fn("lintutor", with_backward(version), xg)
                    record({"what": "fwdbwd", "version": version, "D": D, "T": T}, fn, rep=60)
                if fla is not None:
                    p = forward_providers(fla)
                    for name in ("fla_chunk", "fla_fused_chunk"):
                        fn, _, _ = grad_fn(name, p[name], xg)
                        record({"what": "fla_fwdbwd", "name": name, "D": D, "T": T}, fn, rep=60)
                del xg
            torch.cuda.empty_cache()
    return out


# The forward sweep (`tune_forward`): candidate launch settings (C, BE, warps, stages, evict) of
# the plain and gated forward scans, most promising first so that a budget cut drops the least
# likely. Shared memory per program grows with BE, C and stages (q and k tiles of C x D, v of
# C x BE per stage); an H200 SM has 228 KB, so fewer stages or a smaller C can fit two programs
# per SM; BE = 32 gives four programs per head at D = 128 (q, k read four times, three from L2);
# BE = 128 one (q, k read once, the whole (D, E) state in one program's registers).
CANDIDATES = {
    128: [(64, 64, 4, 4, False), (64, 64, 8, 3, False), (64, 64, 4, 3, False),
          (64, 64, 8, 2, False), (64, 64, 4, 2, False), (32, 64, 4, 4, False),
          (32, 64, 8, 3, False), (64, 32, 4, 4, False), (64, 32, 4, 3, False),
          (64, 32, 8, 3, False), (32, 32, 4, 4, False), (64, 128, 8, 2, False),
          (32, 128, 8, 3, False), (32, 128, 8, 2, False), (64, 64, 4, 4, True),
          (64, 64, 8, 3, True), (64, 32, 4, 4, True)],
    64: [(64, 64, 4, 4, False), (64, 64, 4, 3, False), (64, 64, 8, 3, False),
         (32, 64, 4, 4, False), (64, 64, 4, 2, False), (32, 64, 4, 3, False)],
}  # fmt: skip
SHORT_T, LONG_T = (512, 4096, 16384), (32768, 65536)


def _compiled(kernel) -> dict:
    """{id: (num_warps, num_stages, shared bytes, registers, spills)} of a jitted kernel's
    compiled variants so far (empty where this Triton keeps them elsewhere)."""
    out = {}
    try:
        for caches in kernel.device_caches.values():
            for c in caches[0].values():
                c._init_handles()
                m = c.metadata
                out[id(c)] = dict(warps=m.num_warps, stages=m.num_stages, smem=m.shared,
                                  regs=c.n_regs, spills=c.n_spills)  # fmt: skip
    except Exception:  # a Triton without these attributes: no resource numbers
        pass
    return out


def _geomean(xs):
    xs = [x for x in xs if x]
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs))) if xs else None


def tune_forward(budget_s=180.0, log=print, out_path=None, t_short=SHORT_T, t_long=LONG_T,
                 d_list=(128, 64)) -> dict:  # fmt: skip
    """Sweep the forward scan's launch settings, plain and gated, at the benchmark's shapes.

    Rows: {"D", "T", "gated", "few", "C", "BE", "warps", "stages", "evict", "segments", "split",
    "ms", "floor_frac", "err"} and the compiled kernel's registers, spills and shared memory.
    Every setting is first checked against the default setting's output (relative error
    < 1e-2), then timed. Short T (one program per head fills the GPU): the settings of
    CANDIDATES (D = 64: gated only; D = 128: plain and gated). Long T (few programs): the
    default and the short-T winner with 1-8 segments and 1-4 sub-segments in the pre-pass.
    The winners, per (next_pow2(D), next_pow2(E), gated, few), are printed and stored as
    `FORWARD_CONFIGS` entries (chunked.py) to paste. Budget: about budget_s seconds in all,
    shared between the five parts (unused time carries over).
    """
    import time

    import torch

    from lintutor.experiments.kernel_providers import gate_inputs
    from lintutor.kernels import chunked
    from lintutor.kernels._common import num_sms

    t0 = time.perf_counter()
    result = {"date": _gpu.now(), "versions": _gpu.versions(), "roofs": _gpu.roofs(), "rows": [],
              "budget_s": budget_s}  # fmt: skip
    bw = result["roofs"]["copy_TBps"] * 1e12
    floor_ms = 4 * TOKENS * WIDTH * 2 / bw * 1e3
    sms = num_sms(torch.device(kernel_providers.DEVICE))
    cache = {}

    def data(D, T):
        if (D, T) not in cache:
            cache.clear()
            torch.cuda.empty_cache()
            x = gate_inputs(inputs(TOKENS // T, WIDTH // D, T, D, seed=5), seed=5)
            cache[(D, T)] = (x, {})
        return cache[(D, T)]

    def measure(D, T, gated, few, cfg, segments=None, split=1):
        x, refs = data(D, T)
        g = x["g"] if gated else None
        qkv = (x["q"], x["k"], x["v"])
        conf = dict(C=cfg[0], BE=cfg[1], warps=cfg[2], stages=cfg[3], evict=cfg[4])
        row = {"D": D, "T": T, "gated": gated, "few": few, **conf,
               "segments": segments, "split": split}  # fmt: skip

        def fn():
            return chunked.chunk_scan(*qkv, g=g, chunk_size=conf["C"], config=conf,
                                      num_segments=segments, split=split)[0]  # fmt: skip

        try:
            before = _compiled(chunked._chunk_scan_kernel)
            if gated not in refs:
                refs[gated] = chunked.chunk_scan(*qkv, g=g)[0]  # the default setting
            row["err"] = _rel(fn(), refs[gated])
            new = [v for k, v in _compiled(chunked._chunk_scan_kernel).items() if k not in before]
            if new:
                row.update({k: new[0][k] for k in ("regs", "spills", "smem")})
            if not row["err"] < 1e-2:
                row["ms"] = None
                row["error"] = f"differs from the default setting: rel err {row['err']:.2e}"
            else:
                row["ms"] = _gpu.bench(fn, rep=25, warmup=5)
                row["floor_frac"] = floor_ms / row["ms"]
        except Exception as e:  # a setting that does not compile (shared memory) is recorded
            row["ms"] = None
            row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
        result["rows"].append(row)
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
        return row.get("ms")

    def short_part(D, gated, deadline):
        for cfg in CANDIDATES[D]:
            if time.perf_counter() > deadline:
                log(f"budget: stopped the short-T sweep D={D} gated={gated} before {cfg}")
                break
            for T in t_short:
                measure(D, T, gated, False, cfg)

    def best_short(D, gated):
        rows = [r for r in result["rows"] if r["D"] == D and r["gated"] == gated
                and not r["few"] and r["T"] in t_short]  # fmt: skip
        by_cfg = {}
        for r in rows:
            by_cfg.setdefault((r["C"], r["BE"], r["warps"], r["stages"], r["evict"]), []).append(
                r["ms"]
            )
        scored = [(_geomean(ms), cfg) for cfg, ms in by_cfg.items()
                  if len(ms) == len(t_short) and all(ms)]  # fmt: skip
        return min(scored)[1] if scored else None

    def long_part(D, gated, deadline):
        bases = [CANDIDATES[D][0]]
        best = best_short(D, gated)
        if best is not None and best not in bases:
            bases.append(best)
        for cfg in bases:
            for T in t_long:
                programs = (TOKENS // T) * (WIDTH // D) * -(-D // cfg[1])
                ns_list = [1] + [n for n in (2, 3, 4, 6, 8) if programs * n <= 2 * sms]
                for ns in ns_list:
                    for split in (1,) if ns == 1 else (1, 2, 4):
                        if time.perf_counter() > deadline:
                            log(f"budget: stopped the long-T sweep D={D} gated={gated}")
                            return
                        measure(D, T, gated, True, cfg, segments=ns, split=split)

    big, small = max(d_list), min(d_list)  # D = 128 and 64 at the benchmark's shapes
    parts = [(short_part, big, False, 0.28), (short_part, big, True, 0.28),
             (short_part, small, True, 0.12), (long_part, big, False, 0.1),
             (long_part, big, True, 0.1), (long_part, small, True, 0.06),
             (long_part, small, False, 0.06)]  # fmt: skip
    parts = list(dict.fromkeys(parts))  # one head dim: its parts once
    for i, (part, D, gated, share) in enumerate(parts):
        left = max(0.0, budget_s - (time.perf_counter() - t0))
        part(D, gated, time.perf_counter() + left * share / sum(p[3] for p in parts[i:]))
    cache.clear()
    result["winners"] = forward_winners(result, sms)
    result["paste"] = paste_configs(result["winners"])
    result["seconds"] = time.perf_counter() - t0
    log(result["paste"])
    if out_path:
        with open(out_path, "w") as fh:
            json.dump(result, fh, indent=1)
        log(f"wrote {out_path}")
    return result


def _rel(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def forward_winners(result: dict, sms: int) -> dict:
    """{"(Dp, Ep, gated, few)": settings} from a `tune_forward` result: the setting with the
    smallest geometric-mean time over the regime's lengths; at long T also the programs per
    SM (0: never cut) and split whose implied segment counts time best."""
    from lintutor.kernels.chunked import SEGMENT_BELOW

    def segments(programs, n_chunks, ppsm):  # chunked.segments_for on a card of `sms` SMs
        if programs >= SEGMENT_BELOW * sms:
            return 1
        return max(1, min(n_chunks, ppsm * sms // programs))

    rows = [r for r in result["rows"] if r.get("ms")]
    out = {}
    for D in sorted({r["D"] for r in rows}):
        for gated in (False, True):
            mine = [r for r in rows if r["D"] == D and r["gated"] == gated]
            short = [r for r in mine if not r["few"]]
            if short:
                by = {}
                for r in short:
                    by.setdefault((r["C"], r["BE"], r["warps"], r["stages"], r["evict"]),
                                  {})[r["T"]] = r["ms"]  # fmt: skip
                n = max(len(v) for v in by.values())
                (C, BE, w, s, ev), _ = min(((k, v) for k, v in by.items() if len(v) == n),
                                           key=lambda kv: _geomean(kv[1].values()))  # fmt: skip
                ppsm = 1 if D >= 128 else 2  # used only where the grid is short: as before
                out[str((D, D, gated, False))] = dict(C=C, BE=BE, warps=w, stages=s, ppsm=ppsm,
                                                      split=1, evict=ev)  # fmt: skip
            long = [r for r in mine if r["few"]]
            if long:
                best = None
                for cfg in {(r["C"], r["BE"], r["warps"], r["stages"], r["evict"]) for r in long}:
                    rs = [r for r in long if (r["C"], r["BE"], r["warps"], r["stages"],
                                              r["evict"]) == cfg]  # fmt: skip
                    Ts = sorted({r["T"] for r in rs})
                    for ppsm in (0, 1, 2, 3):
                        for split in (1, 2, 4):
                            ms = []
                            for T in Ts:
                                programs = (TOKENS // T) * (WIDTH // D) * -(-D // cfg[1])
                                ns = segments(programs, T // cfg[0], ppsm)
                                hit = [r["ms"] for r in rs if r["T"] == T and
                                       (r["segments"] or 1) == ns and
                                       (r["split"] == split or ns == 1)]  # fmt: skip
                                ms.append(min(hit) if hit else None)
                            if all(ms) and (best is None or _geomean(ms) < best[0]):
                                best = (_geomean(ms), cfg, ppsm, split)
                if best is not None:
                    _, (C, BE, w, s, ev), ppsm, split = best
                    out[str((D, D, gated, True))] = dict(
                        C=C, BE=BE, warps=w, stages=s, ppsm=ppsm, split=split, evict=ev
                    )
    return out


def paste_configs(winners: dict) -> str:
    """The winners as FORWARD_CONFIGS entries (chunked.py), one line each, to paste."""
    lines = ["# FORWARD_CONFIGS entries from tune_forward (paste into lintutor/kernels/chunked.py)"]
    for key, c in sorted(winners.items()):
        lines.append(f"    {key}: dict(C={c['C']}, BE={c['BE']}, warps={c['warps']}, "
                     f"stages={c['stages']}, ppsm={c['ppsm']}, split={c['split']}, "
                     f"evict={c['evict']}),")  # fmt: skip
    return "\n".join(lines)
