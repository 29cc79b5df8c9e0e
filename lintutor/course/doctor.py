"""`lintutor doctor`: versions, device, whether Triton runs (compiled or interpreted), and what
works on this machine."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys


def _version(mod: str) -> str:
    try:
        return importlib.import_module(mod).__version__
    except Exception:
        return "not installed"


def device_info() -> dict:
    """{'kind': 'cuda'|'cpu', 'name': ..., 'capability': (major, minor) or None}."""
    import torch

    if torch.cuda.is_available():
        return {
            "kind": "cuda",
            "name": torch.cuda.get_device_name(0),
            "capability": torch.cuda.get_device_capability(0),
        }
    return {"kind": "cpu", "name": platform.processor() or platform.machine(), "capability": None}


def triton_status(timeout: float = 120.0) -> tuple[str, str]:
    """('compiled' | 'interpreter' | 'unavailable', detail) from running the canary kernel in a
    fresh process (TRITON_INTERPRET must be set before triton is imported)."""
    import torch

    if importlib.util.find_spec("triton") is None:
        return (
            "unavailable",
            "triton is not installed (it is Linux-only); lessons 00-07 need it not",
        )
    env = dict(os.environ)
    mode = "compiled"
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
        mode = "interpreter"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lintutor.course._triton_canary"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return "unavailable", f"the canary kernel did not finish in {timeout:.0f} s"
    out = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and out and out[-1].startswith("ok"):
        return mode, f"canary vector add {out[-1]}"
    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return "unavailable", f"the canary kernel failed: {err}"


def report() -> str:
    """The doctor's text report."""
    info = device_info()
    lines = ["lintutor doctor", ""]
    lines.append(f"  python       {platform.python_version()} ({sys.executable})")
    for mod in ("lintutor", "torch", "numpy", "plotly", "ipywidgets", "einops", "triton"):
        lines.append(f"  {mod:<12} {_version(mod)}")
    import torch

    if info["kind"] == "cuda":
        major, minor = info["capability"]
        lines.append(f"  device       GPU: {info['name']} (compute capability {major}.{minor})")
    else:
        lines.append(f"  device       CPU only: {info['name']}, {torch.get_num_threads()} threads")
    mode, detail = triton_status()
    lines.append(f"  triton       {mode}: {detail}")
    lines.append("")
    lines.append("What works here:")
    lines.append("  - lessons 00-07: everything (they need only PyTorch on the CPU)")
    if mode == "compiled":
        lines.append("  - lesson 08: kernels compiled for this GPU, benchmarks at full size")
    elif mode == "interpreter":
        lines.append(
            "  - lesson 08: kernels run in Triton's CPU interpreter on small shapes (correct, "
            "slow); benchmark plots come from the stored GPU results in assets/"
        )
    else:
        lines.append("  - lesson 08: reading only; Triton cannot run here (see above)")
    return "\n".join(lines)
