"""The tutor: the exercise checker, notebook helpers, grading, `lintutor doctor` and the
`lintutor` command. Nothing here is lesson content, and no lesson module imports it.

    checker.py    Exercise, CheckResult, run_check and the case helpers (the exercise format)
    sandbox.py    running a learner's function: child process, time limits, state, prints
    forms.py      which form a function computes (recurrent, chunked, parallel, quadratic)
    exercises/    lessonNN.py, one per lesson, found by name; check, hint, solution, get
    notebook.py   COLAB_SETUP, setup_notebook, exercise cells, the solved copy of a lesson
    grade.py      grade a notebook's exercise cells (`lintutor check`)
    cli.py        the `lintutor` command;  doctor.py: `lintutor doctor`
"""

# Imported on first use (PEP 562), so that `lintutor --help` (lintutor.course.cli) and the
# workspace commands do not import torch.
_LAZY = {
    "all_exercises": "lintutor.course.exercises",
    "check": "lintutor.course.exercises",
    "get": "lintutor.course.exercises",
    "hint": "lintutor.course.exercises",
    "solution": "lintutor.course.exercises",
    "setup_notebook": "lintutor.course.notebook",
}

__all__ = ["all_exercises", "check", "get", "hint", "setup_notebook", "solution"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lintutor.course' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
