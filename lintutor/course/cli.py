"""The `lintutor` command: lab, doctor, check, hint, solution, list."""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import time


def _cmd_lab(args) -> int:
    from lintutor.course.notebook import lesson_dirs

    here = next((d for d in lesson_dirs()[:2] if os.path.isdir(d)), None)
    if here is None:  # installed from a wheel: copy the lessons to a folder the learner owns
        here = os.path.abspath(args.dir)
        _copy_lessons(lesson_dirs()[2], here, update=args.update)
    cmd = [sys.executable, "-m", "jupyter", "lab", here]
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    try:
        return subprocess.call(cmd)
    except FileNotFoundError:
        print("JupyterLab is not installed: pip install 'lintutor[lab]'", file=sys.stderr)
        return 1


def _copy_lessons(src: str, dst: str, update: bool) -> None:
    """Copy lessons into dst; a lesson the learner changed is kept, or backed up with --update."""
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if not os.path.exists(d):
            shutil.copy2(s, d)
        elif not filecmp.cmp(s, d, shallow=False):
            if update:
                backup = f"{d}.{time.strftime('%Y%m%d-%H%M%S')}.bak"
                shutil.copy2(d, backup)
                shutil.copy2(s, d)
                print(f"updated {name}; your version is kept as {os.path.basename(backup)}")
            else:
                print(f"kept your {name} (it differs from the course's; --update to replace it)")


def _cmd_doctor(args) -> int:
    from lintutor.course.doctor import report

    print(report())
    return 0


def _cmd_list(args) -> int:
    import glob

    from lintutor.course.exercises import all_exercises
    from lintutor.course.notebook import lesson_dirs

    d = next((d for d in lesson_dirs() if os.path.isdir(d)), None)
    print("Lessons:")
    for path in sorted(glob.glob(os.path.join(d, "*.ipynb"))) if d else []:
        print(f"  {os.path.basename(path)}")
    print("\nExercises:")
    for ex in all_exercises().values():
        print(f"  {ex.id:<6} {ex.name:<40} {ex.title}")
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


def _cmd_check(args) -> int:
    from lintutor.course.grade import check_notebook, format_table
    from lintutor.course.notebook import find_lesson

    try:
        path = find_lesson(args.notebook)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    results = check_notebook(path)
    print(f"{path}\n")
    print(format_table(results))
    if not results:
        print("this lesson has no exercises")
        return 0
    return 0 if all(r.passed for r in results) else 1


def _cmd_bench(args) -> int:
    from lintutor.experiments.kernel_bench import run_from_args

    return run_from_args(args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="lintutor", description="The lintutor course on linear attention."
    )
    sub = p.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("lab", help="open the lessons in JupyterLab")
    lab.add_argument(
        "--dir",
        default="lintutor-lessons",
        help="where to copy the lessons when installed from a wheel",
    )
    lab.add_argument(
        "--update", action="store_true", help="replace changed lessons (your version is backed up)"
    )
    lab.add_argument(
        "--dry-run", action="store_true", help="print the command instead of running it"
    )
    lab.set_defaults(fn=_cmd_lab)
    sub.add_parser("doctor", help="versions, device, Triton, what works here").set_defaults(
        fn=_cmd_doctor
    )
    chk = sub.add_parser("check", help="grade the exercises of a notebook (path or lesson number)")
    chk.add_argument("notebook")
    chk.set_defaults(fn=_cmd_check)
    h = sub.add_parser("hint", help="a hint for an exercise")
    h.add_argument("id")
    h.add_argument("--level", type=int, default=1, choices=(1, 2, 3))
    h.set_defaults(fn=_cmd_hint)
    s = sub.add_parser("solution", help="the reference solution of an exercise")
    s.add_argument("id")
    s.set_defaults(fn=_cmd_solution)
    sub.add_parser("list", help="lessons and exercises").set_defaults(fn=_cmd_list)
    from lintutor.experiments.kernel_bench import add_arguments as _bench_arguments

    b = sub.add_parser("bench", help="time lesson 08's kernels against fla and SDPA (GPU)")
    _bench_arguments(b)
    b.set_defaults(fn=_cmd_bench)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
