"""The `lintutor` command: lab, update, check, list, hint, solution, doctor, build, bench.

The learner's work lives in a workspace of theirs (`lintutor.course.workspace`: default
~/lintutor-lessons, `--dir` or $LINTUTOR_HOME): `lab` copies the lessons there once and opens
it, `update` brings it to the course's version with a backup first, `check NN` grades the
workspace's copy and keeps the verdicts in its progress file, `list` shows them.

Every command imports what it needs when it runs, so `lintutor --help` imports no torch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_STATUS_MARK = {"pass": "pass", "fail": "FAIL", "not attempted": "not attempted"}


def _workspace(args):
    from lintutor.course.workspace import Workspace

    return Workspace(getattr(args, "dir", None))


def _in_checkout() -> str | None:
    """The checkout's notebooks/ when the package runs from a checkout (editable install)."""
    from lintutor.course.notebook import lesson_dirs

    d = lesson_dirs()[0]
    root = os.path.dirname(d)
    return d if os.path.isdir(d) and os.path.exists(os.path.join(root, "pyproject.toml")) else None


# --- lab and update ---------------------------------------------------------------------------


def _lab_command(args, root: str) -> list[str]:
    # answer_yes: one Ctrl-C stops the server (JupyterLab would ask "Shut down? (y/[n])" first)
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}",
           "--ServerApp.answer_yes=True"]  # fmt: skip
    if args.no_browser:
        cmd.append("--no-browser")
    if args.port is not None:
        cmd.append(f"--port={args.port}")
    if args.ip is not None:
        cmd.append(f"--ip={args.ip}")
    extra = list(args.jupyter_args or [])
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if (args.allow_root or is_root) and "--allow-root" not in extra:
        cmd.append("--allow-root")  # JupyterLab refuses to start as root without it
    return cmd + extra


def _cmd_lab(args) -> int:
    ws = _workspace(args)
    say = (lambda msg: print(msg)) if not args.dry_run else (lambda msg: print(f"[dry run] {msg}"))
    if args.update:
        ws.update(dry_run=args.dry_run, say=say)
    else:
        ws.ensure(dry_run=args.dry_run, say=say)
        changed = [name for action, name, _ in ws.plan() if action == "changed"]
        if changed:
            say(
                f"kept your version of {len(changed)} lesson(s) that differ from the course's "
                "(`lintutor update` replaces them, after a backup)"
            )
    say(f"Your work lives in {ws.root} (progress in {os.path.basename(ws.progress_path)}).")
    checkout = _in_checkout()
    if checkout:
        say(
            f"{checkout} is the course's source, which its tests read: edit the copies in "
            f"{ws.root}, not those."
        )
    cmd = _lab_command(args, ws.root)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    if _jupyter_missing():
        print("JupyterLab is not installed: pip install 'lintutor[lab]'", file=sys.stderr)
        return 1
    env = dict(os.environ, LINTUTOR_WORKSPACE=ws.root)
    proc = subprocess.Popen(cmd, cwd=ws.root, env=env)
    while True:  # Ctrl-C reaches JupyterLab too, which shuts down (or asks): wait for it
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue
    if code in (-2, 130):
        code = 0  # stopped with Ctrl-C
    print(f"JupyterLab stopped. Your work is in {ws.root}.")
    return code


def _jupyter_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("jupyterlab") is None


def _cmd_update(args) -> int:
    ws = _workspace(args)
    say = (lambda msg: print(msg)) if not args.dry_run else (lambda msg: print(f"[dry run] {msg}"))
    ws.update(dry_run=args.dry_run, say=say)
    return 0


# --- check and list ---------------------------------------------------------------------------


def _cmd_check(args) -> int:
    from lintutor.course.notebook import find_lesson
    from lintutor.course.workspace import Workspace

    ws = Workspace(args.dir)
    try:
        path = find_lesson(args.notebook, ws.root)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    mine = ws.holds(path)
    print(f"Grading {path}" + (" (your workspace copy)" if mine else ""))
    others = ws.duplicates(path) if mine else []
    if others:
        names = ", ".join(os.path.basename(p) for p in others)
        print(f"  not graded: {names} (to grade one: lintutor check PATH)")
    print()

    from lintutor.course.grade import check_notebook, format_table

    results = check_notebook(path)
    print(format_table(results))
    if not results:
        print("this lesson has no exercises")
        return 0
    if mine:
        ws.record(results, by="lintutor check")
        print(f"(progress saved in {ws.progress_path})")
    return 0 if all(r.passed for r in results) else 1


def _cmd_list(args) -> int:
    from lintutor.course.doctor import lessons
    from lintutor.course.exercises import all_exercises

    ws = _workspace(args)
    progress = ws.progress()
    if ws.exists():
        print(f"Workspace: {ws.root}")
    else:
        print(f"Workspace: {ws.root} (not there yet: `lintutor lab` creates it)")
    exercises = list(all_exercises().values())
    for le in lessons():
        mine = [ex for ex in exercises if ex.lesson == le["number"]]
        passed = sum(progress.get(ex.id, {}).get("status") == "pass" for ex in mine)
        count = f"  {passed}/{len(mine)} pass" if mine else ""
        print(f"\n{os.path.basename(le['path'])}  {le['title']}{count}")
        for ex in mine:
            entry = progress.get(ex.id, {})
            status = _STATUS_MARK.get(entry.get("status"), entry.get("status", "-"))
            when = f"  ({entry['when']}, {entry.get('by', '')})" if entry.get("when") else ""
            print(f"  {ex.id:<6} {ex.name:<34} {status:<14}{ex.title}{when}")
    return 0


# --- the rest -------------------------------------------------------------------------------


def _cmd_doctor(args) -> int:
    from lintutor.course.doctor import report

    print(report())
    return 0


def _cmd_hint(args) -> int:
    from lintutor.course.exercises import hint

    try:
        hint(args.id, args.level)
    except (KeyError, ValueError) as err:
        print(err.args[0], file=sys.stderr)
        return 2
    return 0


def _cmd_solution(args) -> int:
    from lintutor.course.exercises import solution

    try:
        print(solution(args.id))
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    return 0


def _cmd_build(args) -> int:
    from lintutor.course.site import build

    try:
        index = build(
            args.out, lessons=args.lessons or None, solved=not args.unsolved, timeout=args.timeout
        )
    except ImportError as err:
        print(f"{err}: pip install 'lintutor[site]'", file=sys.stderr)
        return 1
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"site written: {index}")
    return 0


def _cmd_bench(args) -> int:
    from lintutor.experiments.kernel_bench import add_arguments, run_from_args

    p = argparse.ArgumentParser(prog="lintutor bench", description=_BENCH_HELP)
    add_arguments(p)
    return run_from_args(p.parse_args(args.bench_args))


_BENCH_HELP = "time lesson 08's kernels against fla and SDPA (GPU)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lintutor", description="The lintutor course on linear attention."
    )
    sub = p.add_subparsers(dest="command", required=True)
    dir_help = "your workspace (default: $LINTUTOR_HOME or ~/lintutor-lessons)"

    lab = sub.add_parser(
        "lab",
        help="open your workspace in JupyterLab (copies the lessons there the first time)",
        description="Open your workspace in JupyterLab. The first time, the lessons are copied "
        "there; a lesson already there is never overwritten. Options after `--` go to "
        "`jupyter lab` as they are.",
    )
    lab.add_argument("--dir", help=dir_help)
    lab.add_argument(
        "--update",
        action="store_true",
        help="first bring the lessons to the course's version (a backup first)",
    )
    lab.add_argument(
        "--dry-run",
        action="store_true",
        help="copy nothing, start nothing: print what would happen",
    )
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser")
    lab.add_argument("--port", type=int, help="the port JupyterLab listens on")
    lab.add_argument("--ip", help="the address JupyterLab listens on")
    lab.add_argument(
        "--allow-root", action="store_true", help="run as root (added by itself when you are root)"
    )
    lab.set_defaults(fn=_cmd_lab, jupyter_args=[])

    up = sub.add_parser("update", help="bring your lessons to the course's version (backup first)")
    up.add_argument("--dir", help=dir_help)
    up.add_argument("--dry-run", action="store_true", help="print what would change")
    up.set_defaults(fn=_cmd_update)

    chk = sub.add_parser("check", help="grade your exercises in a lesson (number or path)")
    chk.add_argument("notebook", help="a lesson number (01), a name, or a notebook's path")
    chk.add_argument("--dir", help=dir_help)
    chk.set_defaults(fn=_cmd_check)

    ls = sub.add_parser("list", help="lessons, exercises and which of yours pass")
    ls.add_argument("--dir", help=dir_help)
    ls.set_defaults(fn=_cmd_list)

    h = sub.add_parser("hint", help="a hint for an exercise")
    h.add_argument("id")
    h.add_argument("--level", type=int, default=1, choices=(1, 2, 3))
    h.set_defaults(fn=_cmd_hint)
    s = sub.add_parser("solution", help="the reference solution of an exercise")
    s.add_argument("id")
    s.set_defaults(fn=_cmd_solution)
    sub.add_parser("doctor", help="versions, device, Triton, what works here").set_defaults(
        fn=_cmd_doctor
    )

    b = sub.add_parser("build", help="execute the lessons and write a static HTML site")
    b.add_argument("--out", default="site", help="the site's folder (default: ./site)")
    b.add_argument("--lessons", nargs="*", help="lesson numbers (default: all)")
    b.add_argument(
        "--unsolved",
        action="store_true",
        help="run the lessons as committed (default: with the solutions filled in)",
    )
    b.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    b.set_defaults(fn=_cmd_build)

    bench = sub.add_parser("bench", help=_BENCH_HELP, add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)  # parsed by _cmd_bench
    bench.set_defaults(fn=_cmd_bench)
    return p


def main(argv=None) -> int:
    p = parser()
    args, rest = p.parse_known_args(argv)
    if rest and args.command == "lab":  # options for `jupyter lab` itself, after `--` or not
        args.jupyter_args = [a for a in rest if a != "--"]
    elif rest and args.command != "bench":
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    elif rest:
        args.bench_args = list(args.bench_args) + rest
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
