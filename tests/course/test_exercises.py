"""The checker is proved on every exercise: the reference passes on 50 seeds, and every known
wrong implementation is rejected (and, where it is the first failure, named). The exercise
format is checked too: lessons are found by name, every wrong implementation carries its
message, and no reference solution uses a private helper."""

import os
import re

import pytest

import lintutor.course.exercises as exercises_package
from lintutor.course.checker import Exercise, between, cases, mistake
from lintutor.course.exercises import all_exercises, check, lesson_modules, run_check, solution

EXERCISES = list(all_exercises().values())


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_reference_passes_50_seeds(ex):
    result = run_check(ex, ex.reference, seeds=range(50))
    assert result.passed, result.text()
    assert result.details["cases"] == len(ex.named_sizes) + 50


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_each_exercise_has_hints_and_wrong_library(ex):
    assert len(ex.hints) == 3 and all(h.strip() for h in ex.hints)
    assert len(ex.wrong) >= 6, f"{ex.id}: at least 6 known wrong implementations"
    assert all(mistake(fn) for fn in ex.wrong), f"{ex.id}: every wrong implementation has a message"
    assert ex.name.isidentifier(), f"{ex.id}: the learner's function name {ex.name!r}"
    # the solution a learner gets (and the solved-notebook harness pastes) defines that name
    namespace = {}
    exec(solution(ex.id), namespace)
    assert callable(namespace.get(ex.name)), f"{ex.id}: solution does not define {ex.name}"


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_exercise_says_its_difficulty_time_and_objective(ex):
    assert ex.difficulty in (1, 2, 3), ex.id
    assert isinstance(ex.minutes, int) and 1 <= ex.minutes <= 60, ex.id
    assert ex.objective.strip().endswith(".") and len(ex.objective) < 120, ex.id


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_solution_uses_no_private_helper(ex):
    for line in solution(ex.id).splitlines():
        if line.startswith("import "):
            assert not re.match(r"import\s+_", line), f"{ex.id}: {line}"
        if line.startswith("from "):
            names = line.split(" import ", 1)[1]
            assert not re.search(r"(^|[\s,(])_\w", names), f"{ex.id}: {line}"


def test_lessons_are_found_by_name_in_lesson_order():
    folder = os.path.dirname(exercises_package.__file__)
    files = sorted(f[:-3] for f in os.listdir(folder) if re.fullmatch(r"lesson\d\d\.py", f))
    assert lesson_modules() == files and len(files) >= 6
    ids = list(all_exercises())
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("."))))
    for ex in EXERCISES:
        assert ex.lesson == ex.id[:2] and ex.name == ex.reference.__name__


def test_case_table_and_ranges():
    named = cases("B T causal", ("T=1", 1, 1, True), ("odd T", 2, 7, False))
    assert named == [("T=1", {"B": 1, "T": 1, "causal": True}),
                     ("odd T", {"B": 2, "T": 7, "causal": False})]  # fmt: skip
    with pytest.raises(ValueError, match="2 values for the 3 columns"):
        cases("B T causal", ("short", 1, 1))
    draw = between(T=(1, 5), causal=bool, form=["a", "b"], D=16)
    import torch

    seen = [draw(torch.Generator().manual_seed(s)) for s in range(40)]
    assert {tuple(sorted(d)) for d in seen} == {("D", "T", "causal", "form")}
    assert {d["T"] for d in seen} == {1, 2, 3, 4, 5} and {d["D"] for d in seen} == {16}
    assert {d["causal"] for d in seen} == {True, False} and {d["form"] for d in seen} == {"a", "b"}


def test_a_wrong_implementation_without_a_message_is_refused():
    def silent(x):
        return x

    with pytest.raises(ValueError, match="no docstring"):
        Exercise(id="99.1", title="t", reference=abs, make_inputs=lambda s, g: {},
                 named_sizes=[], random_sizes=between(), hints=("a", "b", "c"),
                 wrong=[silent])  # fmt: skip


WRONG = [(ex, i) for ex in EXERCISES for i in range(len(ex.wrong))]


@pytest.mark.parametrize("ex,i", WRONG, ids=[f"{ex.id}-{ex.wrong[i].__name__}" for ex, i in WRONG])
def test_wrong_implementation_is_rejected(ex, i):
    wrong = ex.wrong[i]
    result = check(ex.id, wrong, show=False)
    assert result.status == "fail", f"{ex.id}: {wrong.__name__} was not rejected"
    # "kernel": the checked launcher caught an out-of-bounds access or an unwritten output
    assert result.layer in {"numbers", "structure", "nan", "exception", "kernel"}
    # the checker names a known mistake (not always this one: several can agree on a case)
    assert "known mistake" in result.message or result.layer in {"exception", "kernel"}, (
        result.message
    )
