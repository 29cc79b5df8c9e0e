"""Lesson 08's notebook, read without running it: every exercise states the difficulty, time and
objective its Exercise carries; the package's version of an exercise is shown only after its
check; every cell puts its tensors on the one DEVICE chosen at the top; the gated-kernel section
has its place after the benchmark, and the intro and the closing section say it is there; the
intro explains why the exercises are met in the order 08.4-08.8, then 08.1-08.3."""

import os
import re

import nbformat

from lintutor.course.exercises import get
from lintutor.course.notebook import exercise_cells

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NB = nbformat.read(os.path.join(ROOT, "notebooks", "08_triton_kernels.ipynb"), as_version=4)


def _text_before(i):
    """The markdown since the last heading before cell i."""
    out = []
    for cell in reversed(NB.cells[:i]):
        if cell.cell_type == "markdown":
            out.append(cell.source)
            if cell.source.lstrip().startswith("#"):
                break
    return " ".join(" ".join(out).split())


def test_each_exercise_states_the_difficulty_time_and_objective_of_its_exercise():
    cells = exercise_cells(NB)
    assert [i for i, _ in cells][:5] and len(cells) == 8
    for ex_id, i in cells:
        ex, text = get(ex_id), _text_before(i)
        assert f"Difficulty {ex.difficulty}" in text, (ex_id, text[:300])
        assert f"about {ex.minutes} minutes" in text, (ex_id, text[:300])
        objective = " ".join(ex.objective.replace("tl.dot", "`tl.dot`").split())
        assert objective in text, (ex_id, objective)


def test_the_package_version_is_shown_only_after_the_check():
    for ex_id, i in exercise_cells(NB):
        ex = get(ex_id)
        name = ex.reference.__name__
        for j, cell in enumerate(NB.cells):
            if cell.cell_type != "code" or j == i:
                continue
            shows = re.search(rf"(show|getsource)\([\w.]*\b{name}\b", cell.source)
            if shows:
                assert j > i + 1, f"{ex_id}: cell {j} shows {name} before its check (cell {i + 1})"


def test_tensors_live_on_the_one_device_chosen_at_the_top():
    assert "DEVICE = device()" in NB.cells[1].source
    for j, cell in enumerate(NB.cells):
        if cell.cell_type == "code":
            assert "DEV)" not in cell.source and "device=DEV," not in cell.source, j
    lm = next(c.source for c in NB.cells if "TinyLM(" in c.source and c.cell_type == "code")
    assert ".to(DEVICE)" in lm and "mqar_batch(" in lm  # the GPU crash: CPU tensors into a kernel


def test_the_gated_kernel_section_has_its_place_after_the_benchmark():
    slot = [j for j, c in enumerate(NB.cells) if "slot:gated-kernels" in c.metadata.get("tags", [])]
    live = [j for j, c in enumerate(NB.cells) if "kernel_bench.live(" in c.source]
    assert len(slot) == 1 and live and slot[0] == live[0] + 1


def _intro():
    return " ".join(NB.cells[2].source.split())


def test_the_intro_explains_the_order_of_the_exercise_numbers():
    order = [ex_id for ex_id, _ in exercise_cells(NB)]
    puzzles, kernels = order[:5], order[5:]
    assert puzzles == [f"08.{n}" for n in range(4, 9)] and kernels == ["08.1", "08.2", "08.3"]
    assert "exercises 08.4-08.8, come first" in _intro()
    assert "the three kernels, exercises 08.1-08.3" in _intro()
    listing = NB.cells[3].source  # lists the exercises in the order the notebook meets them
    assert "notebook_order" in listing and "(n < 4, n)" in listing


def test_the_intro_and_the_closing_section_know_the_gated_kernels():
    headings = [c.source for c in NB.cells if c.cell_type == "markdown"]
    assert any(h.startswith("## 8b.") for h in headings)
    assert "section 8b" in _intro() and "gated_linear_attention_triton" in _intro()
    closing = next(" ".join(h.split()) for h in headings if h.startswith("## What changed"))
    assert "no gates" not in closing and "section 8b" in closing
