"""Grading a notebook from the command line: run its `imports` cells and its exercise cells in a
fresh namespace (nothing else: no trainings, no plots), then check each exercise."""

from __future__ import annotations

import contextlib
import io

import nbformat

from lintutor.course.checker import (
    FAIL,
    CheckResult,
    format_learner_exception,
    learner_namespace_prelude,
    run_check,
)
from lintutor.course.exercises import get
from lintutor.course.notebook import exercise_cells


def check_notebook(path: str) -> list[CheckResult]:
    """One CheckResult per exercise cell of the notebook at `path`, in notebook order."""
    nb = nbformat.read(path, as_version=4)
    ns = learner_namespace_prelude()
    for cell in nb.cells:
        if "imports" in cell.get("metadata", {}).get("tags", []):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(cell.source, f"{path}:imports", "exec"), ns)
    results = []
    for ex_id, i in exercise_cells(nb):
        ex = get(ex_id)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(nb.cells[i].source, f"<cell {i}>", "exec"), ns)
        except Exception as err:
            msg = f"the exercise cell does not run\n{format_learner_exception(err)}"
            results.append(CheckResult(ex.id, FAIL, "exception", msg))
            continue
        fn = ns.get(ex.name)
        if fn is None:
            msg = f"the exercise cell defines no function named {ex.name}"
            results.append(CheckResult(ex.id, FAIL, "type", msg))
            continue
        results.append(run_check(ex, fn))
    return results


def format_table(results: list[CheckResult]) -> str:
    """A plain-text table: id, title, status, first line of the message."""
    rows = [("exercise", "title", "status", "detail")]
    for r in results:
        ex = get(r.exercise)
        detail = r.message.splitlines()[0] if r.message else ""
        rows.append((r.exercise, ex.title, r.status, detail[:70]))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(row[c].ljust(widths[c]) for c in range(3)) + "  " + row[3])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    passed = sum(r.passed for r in results)
    lines.append(f"\n{passed} of {len(results)} exercises pass")
    return "\n".join(lines)
