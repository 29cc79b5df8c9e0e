"""Exercises: `check(ID, fn)` grades a learner's function, `hint(ID, level)` and `solution(ID)`
help, `all_exercises()` lists them all.

Each lesson's exercises live in `lintutor/course/exercises/lessonNN.py` as a list `EXERCISES`;
the modules are found by name (`lesson` + two digits), in lesson order, so a new lesson only adds
its file. The format of an exercise is in `lintutor.course.checker`'s docstring; every exercise
has a reference (the package function that is its solution), named and random cases, three hint
levels and at least six known wrong implementations that the checker must reject
(tests/course/test_exercises.py proves it).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re

from lintutor.course.checker import (
    FAIL,
    NOT_ATTEMPTED,
    PASS,
    CheckResult,
    Exercise,
    _show,
    _with_meta,
    log_result,
    run_check,
    solution_source,
)
from lintutor.course.workspace import record_check

_LESSON_MODULE = re.compile(r"lesson(\d\d)")


def lesson_modules() -> list[str]:
    """Names of the lesson modules in this package (lesson01, lesson02, ...), in lesson order."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if _LESSON_MODULE.fullmatch(m.name)]
    return sorted(names, key=lambda name: int(name[len("lesson") :]))


def all_exercises() -> dict[str, Exercise]:
    """{id: Exercise} for every lesson, in course order."""
    return dict(_load_all())


@functools.cache
def _load_all() -> dict[str, Exercise]:
    out: dict[str, Exercise] = {}
    for mod in lesson_modules():
        for ex in importlib.import_module(f"{__name__}.{mod}").EXERCISES:
            if ex.id in out:
                raise ValueError(f"exercise id {ex.id!r} is defined twice ({mod})")
            out[ex.id] = ex
    return out


def get(exercise_id: str) -> Exercise:
    """The exercise with this id ("01.2"); a clear error lists the ids that exist."""
    exercises = all_exercises()
    key = str(exercise_id).strip()
    if key not in exercises:
        raise KeyError(f"no exercise {key!r}; known: {', '.join(exercises)}")
    return exercises[key]


def check(exercise_id: str, fn, *, show: bool = True) -> CheckResult:
    """Grade `fn` for exercise `exercise_id`. Never raises; prints a verdict and returns it.

    In a notebook, an exercise cell whose last run failed (a SyntaxError, or an error before
    the function was defined) is reported as such instead of checking an older function.
    Whatever the function raises (SystemExit and KeyboardInterrupt too) is a verdict; only the
    learner's own interrupt of a check that runs in a child process stops the cell."""
    try:
        ex = get(exercise_id)
    except KeyError as err:
        result = CheckResult(str(exercise_id), FAIL, "id", str(err.args[0]))
    else:
        try:
            result = _cell_failed(ex, fn)
            if result is None:
                result = run_check(ex, fn)
        except Exception as err:  # a checker bug must not kill the learner's kernel
            result = CheckResult(ex.id, FAIL, "internal", f"the checker itself failed: {err!r}")
        except KeyboardInterrupt:  # the stop button, while the check ran in a child: stop
            raise
        except BaseException as err:  # noqa: BLE001 (check never raises)
            result = CheckResult(ex.id, FAIL, "exit", f"the check was interrupted: {err!r}")
    log_result(result)
    record_check(result)  # the workspace's progress file, when the lesson runs in one
    if show:
        _show(result)
    return result


def _cell_failed(ex: Exercise, fn) -> CheckResult | None:
    from lintutor.course.notebook import last_cell_run, watch_exercise_cells

    watch_exercise_cells()  # from now on, if setup_notebook did not already
    run = last_cell_run(ex.name)
    if not run or not run["error"] or run["defined"] or run["left"] is not fn:
        return None  # the cell ran, or defined the function, or fn is another function
    msg = (
        f"your exercise cell did not run, so {ex.name} was not (re)defined:\n{run['error']}\n"
        "Fix it and run that cell again, then this one."
    )
    return _with_meta(CheckResult(ex.id, FAIL, "cell", msg), ex)


def hint(exercise_id: str, level: int = 1) -> str:
    """Hint 1 (a nudge), 2 (the approach) or 3 (nearly the code) for an exercise."""
    ex = get(exercise_id)
    if level not in (1, 2, 3):
        raise ValueError(f"level must be 1, 2 or 3, got {level!r}")
    text = f"Hint {level}/3 for {ex.id} ({ex.title}): {ex.hints[level - 1]}"
    print(text)
    return text


def solution(exercise_id: str, name: str | None = None) -> str:
    """The reference solution as a self-contained cell (imports + function)."""
    return solution_source(get(exercise_id), name)


__all__ = [
    "CheckResult",
    "Exercise",
    "PASS",
    "FAIL",
    "NOT_ATTEMPTED",
    "all_exercises",
    "check",
    "get",
    "hint",
    "lesson_modules",
    "solution",
]
