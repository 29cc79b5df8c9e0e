"""`lintutor doctor`: versions, device, whether Triton runs (compiled or interpreted), and what
works on this machine; `course_map()`, the lessons present, read from their notebooks."""

from __future__ import annotations

import glob
import importlib
import json
import os
import platform
import re
import subprocess
import sys

# a code cell that imports Triton or the package's kernels makes a lesson a Triton lesson
_TRITON = re.compile(r"^\s*(import triton|from triton|(from|import) lintutor\.kernels)", re.M)


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
            "triton is not installed (it is Linux-only); only the Triton lessons need it",
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


def lesson_folder() -> str | None:
    """The first of `lesson_dirs()` that holds lesson notebooks (NN_name.ipynb), or None."""
    from lintutor.course.notebook import lesson_dirs

    for d in lesson_dirs():
        if glob.glob(os.path.join(d, "[0-9][0-9]_*.ipynb")):
            return d
    return None


def lessons(folder: str | None = None) -> list[dict]:
    """The lessons present, in order, read from their notebooks: [{"number": "01", "title":
    "Softmax attention", "path": ..., "triton": False, "exercises": 3, "minutes": 30}, ...].

    title is the notebook's first "# NN · Title" heading; triton is True when a code cell
    imports triton or lintutor.kernels; exercises and minutes come from the lesson's exercises.
    """
    from lintutor.course.exercises import all_exercises

    folder = folder or lesson_folder()
    if folder is None:
        return []
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "[0-9][0-9]_*.ipynb"))):
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as fh:
            cells = json.load(fh).get("cells", [])
        sources = ["".join(c.get("source", "")) for c in cells]
        title = name[3:].removesuffix(".ipynb").replace("_", " ").capitalize()
        for c, src in zip(cells, sources):
            if c.get("cell_type") == "markdown" and src.startswith("# "):
                title = re.sub(r"^\d\d\s*[·:.-]\s*", "", src.splitlines()[0][2:].strip())
                break
        code = "\n".join(s for c, s in zip(cells, sources) if c.get("cell_type") == "code")
        out.append({"number": name[:2], "title": title, "path": path,
                    "triton": bool(_TRITON.search(code))})  # fmt: skip
    exercises = list(all_exercises().values())
    for lesson in out:
        mine = [ex for ex in exercises if ex.lesson == lesson["number"]]
        lesson["exercises"] = len(mine)
        lesson["minutes"] = sum(ex.minutes or 0 for ex in mine)
    return out


def _numbers(nums: list[str]) -> str:
    """["00", "01", "02", "05"] -> "00-02, 05"."""
    runs: list[list[str]] = []
    for n in nums:
        if runs and int(n) == int(runs[-1][-1]) + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def course_map(folder: str | None = None) -> str:
    """A markdown table of the lessons present: number, title, exercises, what it runs on."""
    rows = ["| # | lesson | exercises | runs on |", "|---|---|---|---|"]
    for le in lessons(folder):
        ex = f"{le['exercises']} (about {le['minutes']} min)" if le["exercises"] else "none"
        runs = (
            "a GPU with Triton; on a CPU in Triton's interpreter (small shapes)"
            if le["triton"]
            else "any CPU (PyTorch only)"
        )
        rows.append(f"| {le['number']} | {le['title']} | {ex} | {runs} |")
    if len(rows) == 2:
        return "No lesson notebooks found (looked in ./notebooks and next to the package)."
    return "\n".join(rows)


def report() -> str:
    """The doctor's text report."""
    info = device_info()
    lines = ["lintutor doctor", ""]
    lines.append(f"  python       {platform.python_version()} ({sys.executable})")
    for mod, name in (("lintutor", "lintutor"), ("torch", "torch"), ("numpy", "numpy"),
                      ("plotly", "plotly"), ("ipywidgets", "ipywidgets"), ("tqdm", "tqdm"),
                      ("sklearn", "scikit-learn"), ("triton", "triton")):  # fmt: skip
        lines.append(f"  {name:<12} {_version(mod)}")
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
    present = lessons()
    plain = [le["number"] for le in present if not le["triton"]]
    triton = [le["number"] for le in present if le["triton"]]
    if not present:
        lines.append("  - no lesson notebooks found (in ./notebooks or next to the package)")
    if plain:
        s = "s" if len(plain) > 1 else ""
        lines.append(f"  - lesson{s} {_numbers(plain)}: everything (PyTorch on the CPU is enough)")
    if triton:
        which = f"lesson{'s' if len(triton) > 1 else ''} {_numbers(triton)} (Triton kernels)"
        if mode == "compiled":
            lines.append(f"  - {which}: kernels compiled for this GPU, benchmarks at full size")
        elif mode == "interpreter":
            lines.append(
                f"  - {which}: kernels run in Triton's CPU interpreter on small shapes (correct, "
                "slow); GPU benchmark plots come from results stored in assets/"
            )
        else:
            lines.append(f"  - {which}: reading only; Triton cannot run here (see above)")
    return "\n".join(lines)
