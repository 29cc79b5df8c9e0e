"""The checker's layers, each provoked by a deliberately broken learner function."""

import dataclasses
import math

import torch

from lintutor.course.checker import format_learner_exception
from lintutor.course.exercises import check, get, run_check


def _ok(q, k, v):
    return torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1) @ v


def test_not_attempted():
    def attention_one_query(q, k, v):
        raise NotImplementedError

    r = check("01.1", attention_one_query, show=False)
    assert r.status == "not attempted" and not r.passed
    assert "hint" in r.message


def test_learner_exception_shows_learner_line_first():
    def attention_one_query(q, k, v):
        scores = k @ q
        return scores[10**6]  # the learner's bug

    r = check("01.1", attention_one_query, show=False)
    assert r.status == "fail" and r.layer == "exception"
    first = r.message.splitlines()[2]
    assert "your line" in first and "scores[10**6]" in first
    assert 'File "checker.py"' not in r.message  # the checker's own frames are hidden


def test_timeout_is_reported():
    ex = dataclasses.replace(get("01.1"), timeout=0.5)

    def attention_one_query(q, k, v):
        while True:
            pass

    r = run_check(ex, attention_one_query)
    assert r.layer == "timeout" and "0.5 s" in r.message


def test_in_place_modification_is_detected():
    def attention_one_query(q, k, v):
        q.mul_(1.0001)
        return _ok(q, k, v)

    r = check("01.1", attention_one_query, show=False)
    assert r.layer == "in-place" and "'q'" in r.message


def test_transposed_shape_gets_a_hint():
    def softmax_attention(q, k, v, causal=False):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=causal
        ).transpose(-1, -2)

    r = check("01.2", softmax_attention, show=False)
    assert r.layer == "structure"
    assert "expected shape" in r.message and "transpose" in r.message


def test_wrong_dtype_is_named():
    def attention_one_query(q, k, v):
        return _ok(q, k, v).float()

    r = check("01.1", attention_one_query, show=False)
    assert r.layer == "structure" and "float64" in r.message and "float32" in r.message


def test_missing_return_is_named():
    def attention_one_query(q, k, v):
        _ok(q, k, v)

    r = check("01.1", attention_one_query, show=False)
    assert "return" in r.message


def test_nan_is_located():
    def attention_one_query(q, k, v):
        out = _ok(q, k, v)
        return torch.cat([out[:-1], out[-1:] / 0.0 * 0.0])  # the last entry becomes 0/0

    r = check("01.1", attention_one_query, show=False)
    assert r.layer == "nan" and "NaN" in r.message and "first at index (3,)" in r.message


def test_wrong_numbers_name_first_wrong_timestep_and_known_mistake():
    def softmax_attention(q, k, v, causal=False):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)  # ignores causal

    r = check("01.2", softmax_attention, show=False)
    assert r.layer == "numbers"
    assert "first wrong timestep: t = 0" in r.message
    assert "causal flag is ignored" in r.message


def test_small_error_is_accepted_but_float32_precision_is_not():
    def attention_one_query(q, k, v):
        return _ok(q, k, v) + 1e-12

    assert check("01.1", attention_one_query, show=False).passed

    def attention_one_query(q, k, v):  # noqa: F811
        return _ok(q.float(), k.float(), v.float()).double()

    assert not check("01.1", attention_one_query, show=False).passed


def test_check_never_raises():
    assert check("01.1", "not a function", show=False).status == "fail"
    assert check("99.9", _ok, show=False).status == "fail"

    def attention_one_query(q, k, v):
        raise SystemError("boom")

    assert check("01.1", attention_one_query, show=False).layer == "exception"


def test_verdict_is_printed_outside_jupyter(capsys):
    def attention_one_query(q, k, v):
        return _ok(q, k, v)

    result = check("01.1", attention_one_query)
    assert "[PASS] 01.1" in capsys.readouterr().out
    assert result.passed and "PASS" in result._repr_html_()


def test_format_learner_exception_without_learner_frames():
    try:
        torch.zeros(2) @ torch.zeros(3)
    except RuntimeError as err:
        text = format_learner_exception(err)
    assert text.startswith("RuntimeError")


def test_a_wrong_number_is_located_without_importing_sympy():
    """torch.unravel_index imports torch.fx's symbolic shapes (and sympy) on its first call:
    ~0.5 s in every forked child that found a wrong number. The checker locates the worst
    element itself; the index it names is the one torch gives."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from lintutor.course.checker import _unravel\n"
        "from lintutor.course.exercises import all_exercises, run_check\n"
        "for ex in all_exercises().values():\n"
        "    if ex.lesson != '08':\n"
        "        r = run_check(ex, ex.wrong[0], isolate=False)\n"
        "        assert r.status == 'fail', r.text()\n"
        "assert 'sympy' not in sys.modules, 'sympy was imported'\n"
        "x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))\n"
        "flat = int(torch.argmax(x))\n"
        "want = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), x.shape))\n"
        "assert _unravel(flat, x.shape) == want, (_unravel(flat, x.shape), want)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_an_exercise_with_a_bad_field_is_refused_by_name():
    """An exercise definition's mistakes are errors that name the exercise and the field: a
    form_asked without a form to check, a difficulty outside 1-3, a wrong answer without the
    docstring that is its message."""
    import pytest

    ex = get("01.1")
    assert ex.form is None
    with pytest.raises(ValueError, match="01.1: form_asked needs a form"):
        dataclasses.replace(ex, form_asked="no loop over groups")
    with pytest.raises(ValueError, match="01.1: difficulty must be 1, 2 or 3"):
        dataclasses.replace(ex, difficulty=4)

    def undocumented(**kwargs):
        return None

    with pytest.raises(ValueError, match="01.1: the wrong implementation undocumented has no"):
        dataclasses.replace(ex, wrong=[undocumented])
    assert dataclasses.replace(get("07.1")).form_asked.startswith("the parallel form")
