"""A lesson's exercise intros state each exercise's difficulty, expected time and objective exactly
as its Exercise defines them, and the lesson's opening cell states their total time, so the text
and the checker cannot drift apart. Lessons are listed here once their intros carry the header."""

import os
import re

import nbformat
import pytest

from lintutor.course.exercises import get
from lintutor.course.notebook import exercise_cells

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LESSONS = [
    "04_decay_and_gating.ipynb",
    "05_mamba_as_linear_attention.ipynb",
    "06_efficientvit.ipynb",
    "07_linearized_llms.ipynb",
]
HEADER = re.compile(r"\*\*Difficulty (\d)/3 · about (\d+) min\.\*\* \*Objective:\* (.+)")


@pytest.mark.parametrize("name", LESSONS)
def test_each_exercise_intro_states_difficulty_time_and_objective(name):
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    exercises = exercise_cells(nb)
    assert exercises, f"{name}: no exercises"
    for ex_id, i in exercises:
        ex = get(ex_id)
        intro = next(c.source for c in reversed(nb.cells[:i]) if c.cell_type == "markdown")
        assert f"Exercise {ex_id}" in intro, f"{name}: the markdown before {ex_id} is not its intro"
        m = HEADER.search(intro)
        assert m, f"{name}: {ex_id}'s intro lacks '**Difficulty N/3 · about M min.** *Objective:*'"
        stated = (int(m.group(1)), int(m.group(2)), m.group(3).strip())
        assert stated == (ex.difficulty, ex.minutes, ex.objective), (name, ex_id, stated)
    total = sum(get(ex_id).minutes for ex_id, _ in exercises)
    opening = nb.cells[2].source
    assert f"{total} min for the" in opening, f"{name}: the opening should state {total} min"
