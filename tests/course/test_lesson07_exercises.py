"""Lesson 07's checks catch what the shared exercise tests do not: an answer remembered from an
earlier call with the same shapes fails, each exercise has such a pair of cases, and the long
cases go past any small fixed buffer."""

import pytest

from lintutor.course.exercises import get, run_check

IDS = ["07.1", "07.2", "07.3", "07.4"]


def _shapes(kwargs):
    return tuple((k, tuple(v.shape)) if hasattr(v, "shape") else (k, repr(v))
                 for k, v in sorted(kwargs.items()))  # fmt: skip


@pytest.mark.parametrize("ex_id", IDS)
def test_an_answer_remembered_by_shape_fails(ex_id):
    ex = get(ex_id)
    memo = {}

    def remembered(**kwargs):
        key = _shapes(kwargs)
        if key not in memo:
            memo[key] = ex.reference(**kwargs)
        return memo[key]

    result = run_check(ex, remembered)
    assert result.status == "fail" and result.layer == "numbers", result.text()
    assert "same shapes, other values" in result.message


@pytest.mark.parametrize("ex_id", IDS)
def test_cases_cover_the_awkward_sizes(ex_id):
    ex = get(ex_id)
    sizes = [s for _, s in ex.named_sizes]
    labels = [label for label, _ in ex.named_sizes]
    assert any("same shapes, other values" in label for label in labels)
    long_axis = {"07.1": "T", "07.2": "T", "07.3": "n", "07.4": "k"}[ex_id]
    assert max(s[long_axis] for s in sizes) >= 300  # past any plausible fixed buffer
    short_axis = {"07.1": "T", "07.2": "T", "07.3": "n", "07.4": "k"}[ex_id]
    assert min(s[short_axis] for s in sizes) <= 1
    if ex_id == "07.1":
        assert any(s["T"] % s["G"] for s in sizes) and any(s["D"] != s["E"] for s in sizes)
        assert any(s["state"] for s in sizes) and any(s["B"] > 1 and s["H"] > 1 for s in sizes)
    if ex_id == "07.3":
        assert len({s["eps"] for s in sizes}) > 1
