"""Verdicts (issue 12): a failed exercise cell is named instead of "not attempted"; the verdict
carries the exercise's difficulty, time and objective; nested results and nested inputs are
compared."""

import dataclasses

import pytest
import torch

from lintutor import softmax as sm
from lintutor.course.checker import Exercise, between, cases, normal
from lintutor.course.exercises import check, get, run_check


def test_verdict_shows_difficulty_time_and_objective():
    ex = get("01.1")
    r = check("01.1", ex.reference, show=False)
    assert r.passed
    assert f"difficulty {ex.difficulty}/3" in r.text() and f"{ex.minutes} min" in r.text()
    assert f"Objective met: {ex.objective}" in r.text()
    assert "Objective met" in r._repr_html_()

    def attention_one_query(q, k, v):
        raise NotImplementedError

    r = check("01.1", attention_one_query, show=False)
    assert r.status == "not attempted" and f"Objective: {ex.objective}" in r.text()
    assert "Objective met" not in r.text()


# --- a failed exercise cell in a notebook ------------------------------------------------------


@pytest.fixture
def shell():
    IPython = pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from lintutor.course import notebook
    from lintutor.course.notebook import watch_exercise_cells

    ip = InteractiveShell.instance()
    watch_exercise_cells(ip)
    yield ip
    InteractiveShell.clear_instance()  # later tests see no IPython, and no cell records
    notebook._CELL_RUNS.clear()
    assert IPython


STUB = "def attention_one_query(q, k, v):\n    raise NotImplementedError\n"


def test_a_cell_with_a_syntax_error_is_named_not_not_attempted(shell):
    shell.run_cell(STUB)
    shell.run_cell("def attention_one_query(q, k, v):\n    return (k @ q +\n")
    r = check("01.1", shell.user_ns["attention_one_query"], show=False)
    assert r.status == "fail" and r.layer == "cell", r.text()
    assert "SyntaxError" in r.message and "line 2" in r.message and "not attempted" not in r.message
    # fixed and run again: the check uses the new function
    shell.run_cell(
        "from lintutor import softmax as sm\n"
        "def attention_one_query(q, k, v):\n    return sm.attention_one_query(q, k, v)\n"
    )
    assert check("01.1", shell.user_ns["attention_one_query"], show=False).passed


def test_a_cell_that_fails_while_defining_is_named(shell):
    shell.run_cell(STUB)
    shell.run_cell("def attention_one_query(q, k, v, scale=undefined_scale):\n    return q\n")
    r = check("01.1", shell.user_ns["attention_one_query"], show=False)
    assert r.status == "fail" and r.layer == "cell" and "NameError" in r.message, r.text()


def test_another_function_than_the_cells_is_checked_as_it_is(shell):
    shell.run_cell(STUB)
    shell.run_cell("def attention_one_query(q, k, v):\n    return (k @ q +\n")
    from lintutor import softmax as sm

    assert check("01.1", sm.attention_one_query, show=False).passed


def test_a_cell_that_fails_after_defining_checks_the_new_function(shell):
    shell.run_cell(
        "from lintutor import softmax as sm\n"
        "def attention_one_query(q, k, v):\n    return sm.attention_one_query(q, k, v)\n"
        "attention_one_query(1, 2)\n"  # the learner's own test call is wrong, the function is fine
    )
    r = check("01.1", shell.user_ns["attention_one_query"], show=False)
    assert r.passed, r.text()


# --- nested results and inputs -----------------------------------------------------------------


def _state_ref(x, state):
    """o and a nested state (S, z)."""
    S, z = state
    return x * 2, (S + x.sum(), z + 1)


def _state_inputs(s, g):
    return {"x": normal(g, s["T"]), "state": (normal(g, 3, 2), normal(g, 3))}


def _bad_z(x, state):
    """z is not updated"""
    S, z = state
    return x * 2, (S + x.sum(), z.clone())


def _bad_S(x, state):
    """S misses the sum"""
    S, z = state
    return x * 2, (S.clone(), z + 1)


def _bad_o(x, state):
    """o is not doubled"""
    S, z = state
    return x.clone(), (S + x.sum(), z + 1)


def _bad_shape(x, state):
    """z has the wrong shape"""
    S, z = state
    return x * 2, (S + x.sum(), (z + 1)[:2])


NESTED = Exercise(
    id="99.1",
    title="nested",
    reference=_state_ref,
    make_inputs=_state_inputs,
    named_sizes=cases("T", ("T=3", 3)),
    random_sizes=between(T=(1, 5)),
    hints=("a", "b", "c"),
    wrong=[_bad_z, _bad_S, _bad_o, _bad_shape],
    output_names=("o", "state"),
)


def test_nested_results_are_compared_leaf_by_leaf():
    assert run_check(NESTED, _state_ref).passed
    r = run_check(NESTED, _bad_z)
    assert r.layer == "numbers" and "state[1]" in r.message, r.text()
    r = run_check(NESTED, _bad_S)
    assert r.layer == "numbers" and "state[0]" in r.message, r.text()
    r = run_check(NESTED, _bad_shape)
    assert r.layer == "structure" and "state[1]" in r.message and "(2,)" in r.message, r.text()

    def wrong_structure(x, state):
        return x * 2, state[0] + x.sum()

    r = run_check(NESTED, wrong_structure)
    assert r.layer == "structure" and "state" in r.message and "tuple" in r.message, r.text()


def test_a_tensor_inside_a_tuple_argument_modified_in_place_is_caught():
    def sneaky(x, state):
        S, z = state
        z.add_(1)  # modifies the caller's state
        return x * 2, (S + x.sum(), z)

    r = run_check(NESTED, sneaky)
    assert r.layer == "in-place" and "state" in r.message, r.text()


def test_results_may_vary_in_structure_with_the_case():
    """The reference returns o alone or (o, state) depending on an option: both are compared."""

    def ref(x, with_state=False):
        return (x + 1, x.sum()) if with_state else x + 1

    def wrong(x, with_state=False):
        return (x + 1, x.sum() + 1) if with_state else x + 1

    ex = Exercise(
        id="99.2",
        title="t",
        reference=ref,
        make_inputs=lambda s, g: {"x": normal(g, s["T"]), "with_state": s["w"]},
        named_sizes=cases("T w", ("plain", 3, False), ("with state", 3, True)),
        random_sizes=between(T=(1, 4), w=bool),
        hints=("a", "b", "c"),
        wrong=[],
    )
    assert run_check(ex, ref).passed
    r = run_check(ex, wrong)
    assert r.layer == "numbers" and "with state" in r.message, r.text()


def test_the_output_of_a_function_is_converted_only_for_comparison():
    ex = dataclasses.replace(get("01.1"), n_random=1)
    r = run_check(ex, lambda q, k, v: sm.attention_one_query(q, k, v).requires_grad_())
    assert r.passed, r.text()
    assert torch.is_grad_enabled()
