"""Exercises: `check(ID, fn)` grades a learner's function, `hint(ID, level)` and `solution(ID)`
help, `list_exercises()` shows them all.

Each lesson's exercises live in `lintutor/exercises/lessonNN.py` as a list `EXERCISES`; every
exercise has a reference (the package function that is its solution), a case generator, three
hint levels and at least four known wrong implementations that the checker must reject
(tests/test_exercises.py proves it).
"""

from __future__ import annotations

import importlib

from lintutor.exercises.core import (
    FAIL,
    NOT_ATTEMPTED,
    PASS,
    CheckResult,
    Exercise,
    Wrong,
    _show,
    log_result,
    run_check,
    solution_source,
)

# Lesson modules, in course order. A lesson adds its module here.
LESSON_MODULES = ("lesson01", "lesson02", "lesson03", "lesson04", "lesson05", "lesson08")


def all_exercises() -> dict[str, Exercise]:
    """{id: Exercise} for every lesson, in course order."""
    out: dict[str, Exercise] = {}
    for mod in LESSON_MODULES:
        for ex in importlib.import_module(f"lintutor.exercises.{mod}").EXERCISES:
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
    """Grade `fn` for exercise `exercise_id`. Never raises; prints a verdict and returns it."""
    try:
        ex = get(exercise_id)
    except KeyError as err:
        result = CheckResult(str(exercise_id), FAIL, "id", str(err.args[0]))
    else:
        try:
            result = run_check(ex, fn)
        except Exception as err:  # a checker bug must not kill the learner's kernel
            result = CheckResult(ex.id, FAIL, "internal", f"the checker itself failed: {err!r}")
    log_result(result)
    if show:
        _show(result)
    return result


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
    "Wrong",
    "PASS",
    "FAIL",
    "NOT_ATTEMPTED",
    "all_exercises",
    "check",
    "get",
    "hint",
    "solution",
]
