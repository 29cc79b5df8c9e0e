"""What every GPU experiment records and how it times: library versions, the card's own copy
bandwidth and bf16 matmul rate (its roofs, measured in the same run), median timers.

Imports torch and triton only inside the functions: reading stored results needs neither.
"""

from __future__ import annotations

import datetime
import platform


def now() -> str:
    """The UTC time of a run, as stored in every result."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    """torch, triton, python, fla (None if missing) and, on a GPU, the card, CUDA and driver."""
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


def device_tag(gpu_name: str | None, other: str | None = None) -> str:
    """The card in result file names: "h100", "h200", else `other` or the name's last word."""
    name = (gpu_name or "gpu").lower()
    if "h200" in name:
        return "h200"
    if "h100" in name:
        return "h100"
    return other or name.split()[-1]


def bench(fn, rep=100, warmup=25) -> float:
    """Median milliseconds of fn() (triton.testing.do_bench)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def bench_graph(fn, n_inner=20) -> float:
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
    return bench(g.replay) / n_inner


def roofs() -> dict:
    """Copy bandwidth (TB/s, read + written) and bf16 matmul rate (TFLOP/s), measured here."""
    import torch

    x = torch.empty(2**29, dtype=torch.bfloat16, device="cuda").normal_()  # 1 GiB
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    mm = bench(lambda: a @ b)
    return {"copy_TBps": 2 * 2**30 / ms / 1e9, "bf16_mm_TFLOPs": 2 * 8192**3 / mm / 1e9}
