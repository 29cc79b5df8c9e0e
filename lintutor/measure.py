"""Measuring cost on this machine: median wall time and peak memory of a call.

Peak memory on CPU comes from torch's profiler (allocations and frees in time order), on GPU from
`torch.cuda.max_memory_allocated`. Both count only tensors torch allocates during the call.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

import torch


def time_call(
    fn, *args, repeats: int = 5, warmup: int = 1, stat: str = "median", **kwargs
) -> float:
    """Seconds of `fn(*args, **kwargs)` over `repeats` runs after `warmup` runs: the median, or
    with stat="min" the best run (steadier on a busy laptop, where others steal the cores)."""
    cuda = torch.cuda.is_available() and any(
        isinstance(a, torch.Tensor) and a.is_cuda for a in args
    )
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
    return min(times) if stat == "min" else statistics.median(times)


def peak_memory(fn, *args, **kwargs) -> int:
    """Peak bytes torch allocated during one call of `fn` (inputs already allocated excluded)."""
    cuda_args = [a for a in args if isinstance(a, torch.Tensor) and a.is_cuda]
    if cuda_args:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(*args, **kwargs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn(*args, **kwargs)
        del out
    events = [e for e in prof.events() if e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines, which bypass Python's sys.stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
