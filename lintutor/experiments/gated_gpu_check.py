"""One GPU call for the gated kernels (lesson 08): their tests, the forward sweep, the benchmark.

    python -m lintutor.experiments.gated_gpu_check --out DIR [--tests-s 120] [--tune-s 170]
                       [--bench-s 200] [--delta-s 150] [--quick] [--no-apply] [--skip PART ...]

Four parts, each with its own time budget, in this order (the later ones time the GPU, so
nothing runs beside them):

1. tests: every kernel test (tests/kernels: gated, plain, delta rule, checked launcher,
   puzzles) on the GPU itself, through pytest with 8 workers (most of the time is compiling
   kernel variants), killed at the budget; log in DIR/tests.log, a line per test.
2. tune: `kernel_tune.tune_forward`, the sweep of the plain and gated forward launch settings,
   into DIR/tune_forward_<card>.json; its winners are printed as FORWARD_CONFIGS entries to
   paste into lintutor/kernels/chunked.py, and (unless --no-apply) put into FORWARD_CONFIGS of
   this process, so the benchmark times the settings that get pasted.
3. bench: `kernel_bench.run_gated`, gated and plain kernels against fla's simple_gla with a
   gate, SDPA and the memory floor, into DIR/gated_bench_<card>.json (saved after every
   shape; shapes left when the budget is spent are listed as not measured).
4. delta: lesson 09's `delta_bench` (checks and gradients on a small shape, decode in a CUDA
   graph, then the forward shapes, both head dims at each T) into DIR/delta_bench_<card>.json.

The last lines printed are a compact summary: tests passed/failed, the sweep's winners, the
benchmark's table and issue 16's targets, met or not. Writes DIR/summary.txt too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

TESTS = ["tests/kernels"]  # every kernel test: gated, plain, delta, checked launcher, puzzles


def run_tests(out_dir: str, budget_s: float, log=print) -> dict:
    """pytest on TESTS (8 workers when pytest-xdist is there), killed after budget_s; returns
    {"rc", "seconds", "last_line", "failed": [...]}."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=",
           "-rfs", "-v", *TESTS]  # fmt: skip
    try:
        import xdist  # noqa: F401

        cmd += ["-n", "8"]
    except ImportError:
        pass
    t0 = time.perf_counter()
    path = os.path.join(out_dir, "tests.log")
    with open(path, "w") as fh:  # its own process group: at the budget the workers go too
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
    with open(path) as fh:
        lines = [line.rstrip() for line in fh if line.strip()]
    failed = [line for line in lines if "FAILED" in line.split("::")[0]]
    passed = sum(" PASSED " in f" {line} " for line in lines)
    out = {"rc": rc, "seconds": time.perf_counter() - t0, "last_line": lines[-1] if lines else "",
           "failed": failed[:30], "passed_lines": passed}  # fmt: skip
    log(json.dumps(out))
    return out


def apply_winners(winners: dict) -> dict:
    """Put a sweep's winners ({"(Dp, Ep, gated, few)": settings}) into chunked.FORWARD_CONFIGS of
    this process, so that the benchmark times what will be pasted; returns what changed."""
    import ast

    from lintutor.kernels import chunked

    changed = {}
    for key, cfg in winners.items():
        k = ast.literal_eval(key)
        if chunked.FORWARD_CONFIGS.get(k) != cfg:
            changed[key] = cfg
        chunked.FORWARD_CONFIGS[k] = dict(cfg)
    return changed


def run_delta(out_dir: str, budget_s: float, log=print) -> dict:
    """Lesson 09's benchmark (`delta_bench.run`: checks and gradients, decode in a CUDA graph,
    then the forward shapes, both head dims at each T, no new shape after budget_s) into
    DIR/delta_bench_<card>.json; a failure is recorded, not raised, so the summary still comes."""
    import time

    from lintutor.experiments import delta_bench

    t0 = time.perf_counter()
    try:
        result = delta_bench.run(out_dir=out_dir, log=log, budget_s=budget_s)
    except Exception as e:  # what was measured is in the file already
        result = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    result["seconds"] = time.perf_counter() - t0
    return result


def targets_lines(result: dict) -> list[str]:
    """Issue 16's targets read off a gated benchmark result, one line each."""
    from lintutor.experiments import results

    marks = {True: "met", False: "NOT met", None: "not measured"}
    return [f"  {marks[ok]:>12}: {name} ({vals})" for name, ok, vals in
            results.gated_targets(result)]  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lintutor.experiments.gated_gpu_check",
                                description=__doc__.split("\n")[0])  # fmt: skip
    p.add_argument("--out", required=True, help="folder for the logs and JSON results")
    p.add_argument("--tests-s", type=float, default=120, help="time budget of the tests (s)")
    p.add_argument("--tune-s", type=float, default=170, help="time budget of the sweep (s)")
    p.add_argument("--bench-s", type=float, default=200, help="time budget of the benchmark (s)")
    p.add_argument("--quick", action="store_true", help="benchmark T = 1K and 16K only")
    p.add_argument("--delta-s", type=float, default=150,
                   help="time budget of lesson 09's delta-rule benchmark (s)")  # fmt: skip
    p.add_argument(
        "--no-apply",
        action="store_true",
        help="time FORWARD_CONFIGS as committed, not the sweep's winners",
    )
    p.add_argument("--skip", nargs="*", default=[], choices=["tests", "tune", "bench", "delta"],
                   help="parts to leave out")  # fmt: skip
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gated_gpu_check needs a CUDA GPU (it times kernels and runs their tests there)",
              file=sys.stderr)  # fmt: skip
        return 1
    from lintutor.experiments import _gpu, kernel_bench, kernel_tune, results

    os.makedirs(args.out, exist_ok=True)
    tag = _gpu.device_tag(torch.cuda.get_device_name())
    summary = [f"gated_gpu_check on {torch.cuda.get_device_name()}, {_gpu.now()}"]
    if "tests" not in args.skip:
        t = run_tests(args.out, args.tests_s)
        summary.append(f"tests: rc {t['rc']} in {t['seconds']:.0f} s: {t['last_line']}")
        summary += [f"  {line}" for line in t["failed"]]
    if "tune" not in args.skip:
        tune = kernel_tune.tune_forward(
            budget_s=args.tune_s, out_path=os.path.join(args.out, f"tune_forward_{tag}.json")
        )
        summary.append(f"tune: {len(tune['rows'])} settings in {tune['seconds']:.0f} s")
        summary.append(tune["paste"])
        if not args.no_apply:  # the benchmark below then times the settings that get pasted
            applied = apply_winners(tune["winners"])
            summary.append(f"applied to FORWARD_CONFIGS for the benchmark: {applied}")
    if "bench" not in args.skip:
        res = kernel_bench.run_gated(quick=args.quick, out_dir=args.out, budget_s=args.bench_s)
        summary.append(f"bench: {len(res['rows'])} shapes in {res['seconds']:.0f} s"
                       + (f" ({res['incomplete']})" if "incomplete" in res else ""))  # fmt: skip
        summary.append(results.gated_table(res))
        summary.append("issue 16's targets:")
        summary += targets_lines(res)
    if "delta" not in args.skip:
        d = run_delta(args.out, args.delta_s)
        summary.append(f"delta: {len(d.get('rows', []))} shapes in {d['seconds']:.0f} s")
        from lintutor.experiments import delta_bench

        summary.append(delta_bench.table(d) if "versions" in d else d.get("error", "no result"))
    text = "\n".join(summary)
    print("\n===== summary =====\n" + text)
    with open(os.path.join(args.out, "summary.txt"), "w") as fh:
        fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
