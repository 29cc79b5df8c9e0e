"""The checker is proved on every exercise: the reference passes on 50 seeds, and every known
wrong implementation is rejected (and, where it is the first failure, named)."""

import pytest

from lintutor.exercises import all_exercises, check, run_check, solution

EXERCISES = list(all_exercises().values())


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_reference_passes_50_seeds(ex):
    result = run_check(ex, ex.reference, seeds=range(50))
    assert result.passed, result.text()
    assert result.details["cases"] == len(ex.named_sizes) + 50


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_each_exercise_has_hints_and_wrong_library(ex):
    assert len(ex.hints) == 3 and all(h.strip() for h in ex.hints)
    assert len(ex.wrong) >= 4, f"{ex.id}: at least 4 known wrong implementations"
    assert ex.name.isidentifier(), f"{ex.id}: the learner's function name {ex.name!r}"
    # the solution a learner gets (and the solved-notebook harness pastes) defines that name
    namespace = {}
    exec(solution(ex.id), namespace)
    assert callable(namespace.get(ex.name)), f"{ex.id}: solution does not define {ex.name}"


WRONG = [(ex, i) for ex in EXERCISES for i in range(len(ex.wrong))]


@pytest.mark.parametrize(
    "ex,i", WRONG, ids=[f"{ex.id}-{ex.wrong[i].fn.__name__}" for ex, i in WRONG]
)
def test_wrong_implementation_is_rejected(ex, i):
    wrong = ex.wrong[i]
    result = check(ex.id, wrong.fn, show=False)
    assert result.status == "fail", f"{ex.id}: {wrong.fn.__name__} was not rejected"
    assert result.layer in {"numbers", "structure", "nan", "exception"}
    # the checker names a known mistake (not always this one: several can agree on a case)
    assert "known mistake" in result.message or result.layer == "exception", result.message
