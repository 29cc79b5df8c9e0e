"""The sweep of the kernels' launch settings (`lintutor bench --tune`, lesson 08).

Every setting of the forward scan, of the two fused backward kernels and every backward version
through autograd is timed at the benchmark's shapes, next to fla's kernels at the same shapes.
The defaults in `lintutor.kernels.chunked._config` and `chunked_bwd._bwd_config` come from
these sweeps. The rows go into the benchmark JSON under "tune".
"""

from __future__ import annotations

import functools
import json

from lintutor.experiments import _gpu
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
