"""The tutor: the exercise checker, notebook helpers, grading, `lintutor doctor` and the
`lintutor` command. Nothing here is lesson content, and no lesson module imports it.

    checker.py    Exercise, CheckResult, run_check and the case helpers (the exercise format)
    exercises/    lessonNN.py, one per lesson, found by name; check, hint, solution, get
    notebook.py   COLAB_SETUP, setup_notebook, exercise cells, the solved copy of a lesson
    grade.py      grade a notebook's exercise cells (`lintutor check`)
    cli.py        the `lintutor` command;  doctor.py: `lintutor doctor`
"""

from lintutor.course.exercises import all_exercises, check, get, hint, solution
from lintutor.course.notebook import setup_notebook

__all__ = ["all_exercises", "check", "get", "hint", "setup_notebook", "solution"]
