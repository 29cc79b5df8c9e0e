"""Lesson 06's checks: the form they ask for is enforced (and named), every wrong variant is
rejected where it is wrong, stateful answers fail, and right answers written other ways pass."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lintutor import efficientvit as ev
from lintutor.course.exercises import check, get, run_check
from lintutor.course.exercises import lesson06 as l06


def _result(ex_id, fn):
    return check(ex_id, fn, show=False)


def test_reference_passes_50_seeds_and_the_named_cases():
    for ex_id in ("06.1", "06.2", "06.3"):
        ex = get(ex_id)
        result = run_check(ex, ex.reference, seeds=range(50))
        assert result.passed, result.text()
        assert len(ex.wrong) >= 6


def test_the_cases_cover_what_the_lesson_promises():
    named = {ex_id: dict(get(ex_id).named_sizes) for ex_id in ("06.1", "06.2", "06.3")}
    la = named["06.1"]
    assert any(s["T"] == 1 for s in la.values()) and any(s["T"] > s["D"] for s in la.values())
    assert any(s["T"] <= s["D"] for s in la.values()) and any(s["H"] > 1 for s in la.values())
    assert any(s.get("scale", 1) < 1e-6 for s in la.values())  # normalizers below eps
    assert any(s.get("dead_queries") for s in la.values()) and any("eps" in s for s in la.values())
    ms = named["06.3"]
    assert any(s["height"] % 2 and s["width"] % 2 for s in ms.values())
    assert {(5,), (3, 5)} <= {s["scales"] for s in ms.values()}
    for ex_id, table in named.items():  # same shapes twice, other values: no memoized answers
        sizes = [tuple(sorted(s.items())) for s in table.values()]
        assert len(sizes) > len(set(sizes)), ex_id


def _quadratic_matmul(q, k, v, eps=1e-15):
    """the quadratic form with torch's own product: the T x S map of scores, then V"""
    return ev.relu_linear_attention_quadratic(q, k, v, eps)


def _quadratic_broadcast(q, k, v, eps=1e-15):
    """the T x S map built by broadcasting and a sum, no matmul anywhere"""
    s = (torch.relu(q).unsqueeze(-2) * torch.relu(k).unsqueeze(-3)).sum(-1)  # (B, H, T, S)
    return (s.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2) / (s.sum(-1, keepdim=True) + eps)


def _quadratic_einsum(q, k, v, eps=1e-15):
    """the T x S map with einsum"""
    s = torch.einsum("bhtd,bhsd->bhts", torch.relu(q), torch.relu(k))
    return (s / (s.sum(-1, keepdim=True) + eps)) @ v


def _quadratic_numpy(q, k, v, eps=1e-15):
    """the T x S map in numpy, and back to torch"""
    qn, kn, vn = np.maximum(q.numpy(), 0), np.maximum(k.numpy(), 0), v.numpy()
    s = qn @ kn.swapaxes(-1, -2)  # (B, H, T, S)
    return torch.from_numpy((s @ vn) / (s.sum(-1, keepdims=True) + eps))


@pytest.mark.parametrize(
    "fn",
    [_quadratic_matmul, _quadratic_broadcast, _quadratic_einsum, _quadratic_numpy],
    ids=["matmul", "broadcast", "einsum", "numpy"],
)
def test_06_1_rejects_the_quadratic_form_however_it_is_built(fn):
    result = _result("06.1", fn)
    assert result.status == "fail" and result.layer == "form", result.text()
    assert "quadratic form" in result.message and "asks for the linear form" in result.message


def _separate_products(q, k, v, eps=1e-15):
    """numerator and denominator from two products: the linear form without the ones column"""
    qr, kr = torch.relu(q), torch.relu(k)
    num = qr @ (kr.transpose(-1, -2) @ v)  # (B, H, T, E)
    return num / ((qr * kr.sum(2, keepdim=True)).sum(-1, keepdim=True) + eps)


def test_06_1_without_the_ones_column_gets_an_honest_verdict():
    """Two products give the same numbers and the same memory growth as the ones column: the
    check cannot tell them apart, so it passes them as the linear form, and neither the pass
    nor the exercise claims more than that (the ones column stays in the text and the hints)."""
    ex = get("06.1")
    result = _result("06.1", _separate_products)
    assert result.passed and "the linear form" in result.message, result.text()
    claims = " ".join([ex.title, ex.objective, result.text()])
    assert "ones column" not in claims and "one product" not in claims, claims
    assert any("ones" in hint for hint in ex.hints)  # taught, not enforced


def test_06_1_library_holds_only_wrong_numbers():
    """Form mistakes are the form check's to catch: every known mistake gives wrong numbers on
    some named case, so the checker can name it."""
    ex = get("06.1")
    for fn in ex.wrong:
        l06._LA_CACHE.clear()
        wrong_somewhere = False
        for i, (_, sizes) in enumerate(ex.named_sizes):
            inputs = ex.make_inputs(dict(sizes), torch.Generator().manual_seed(1000 + i))
            got, want = fn(**inputs), ex.reference(**inputs)
            if not torch.allclose(got, want, rtol=ex.rtol, atol=ex.atol, equal_nan=False):
                wrong_somewhere = True
                break
        assert wrong_somewhere, f"{fn.__name__} gives the reference's numbers on every case"


def test_06_1_accepts_the_released_layout_and_einsum():
    def released_layout(q, k, v, eps=1e-15):  # v as (E, T) with a ones ROW, as in ops.py
        v1 = F.pad(v.transpose(-1, -2), (0, 0, 0, 1), value=1.0)  # (B, H, E + 1, T)
        vk = v1 @ torch.relu(k)  # (B, H, E + 1, D)
        out = vk @ torch.relu(q).transpose(-1, -2)  # (B, H, E + 1, T)
        return (out[:, :, :-1] / (out[:, :, -1:] + eps)).transpose(-1, -2)

    def with_einsum(q, k, v, eps=1e-15):
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        state = torch.einsum("bhsd,bhse->bhde", torch.relu(k), v1)
        out = torch.einsum("bhtd,bhde->bhte", torch.relu(q), state)
        return out[..., :-1] / (out[..., -1:] + eps)

    for fn in (released_layout, with_einsum):
        assert _result("06.1", fn).passed, _result("06.1", fn).text()


@pytest.mark.parametrize(
    "fn, case, words",
    [
        (l06._sw_always_linear, "one token", "the linear form"),
        (l06._sw_always_quadratic, "T = D + 1", "map of scores"),
        (l06._sw_strict, "T = D", "the linear form"),
        (l06._sw_value_dim, "E < T < D", "the linear form"),
        (l06._sw_all_heads, "T = D + 1", "map of scores"),
    ],
    ids=["always linear", "always quadratic", "strict <", "compares E", "compares H * D"],
)
def test_06_2_says_which_form_it_saw_and_where(fn, case, words):
    result = _result("06.2", fn)
    assert result.status == "fail" and result.layer == "exception"
    assert f"case '{case}'" in result.message and words in result.message


def test_06_2_accepts_the_forms_written_inline():
    def inline(q, k, v, eps=1e-15):
        qr, kr = torch.relu(q), torch.relu(k)
        if q.shape[-2] <= q.shape[-1]:
            w = qr @ kr.transpose(-1, -2)
            return (w / (w.sum(-1, keepdim=True) + eps)) @ v
        out = qr @ (kr.transpose(-1, -2) @ F.pad(v, (0, 1), value=1.0))
        return out[..., :-1] / (out[..., -1:] + eps)

    assert _result("06.2", inline).passed


def test_06_2_sees_products_only_as_its_lesson_says():
    """Lesson 06 says 06.2 watches matrix products only: a T x T map built by broadcasting at
    T > D goes unseen (the two forms' numbers agree to rounding). If the check learns to see it,
    change that sentence of the lesson with this test."""

    def broadcast_always(q, k, v, eps=1e-15):
        return _quadratic_broadcast(q, k, v, eps)

    assert _result("06.2", broadcast_always).passed
    assert _result("06.2", l06._sw_always_quadratic).layer == "exception"  # with @: seen


def test_stateful_answers_fail_on_the_repeated_shapes():
    assert "same shapes, new values" in _result("06.1", l06._la_memoized).message
    l06._SW_FORM.clear()
    assert _result("06.2", l06._sw_decided_once).status == "fail"

    cache = {}

    def memo_ms(qkv, depthwise, pointwise, heads):
        key = (tuple(qkv.shape), len(depthwise))
        cache.setdefault(key, ev.multi_scale_qkv(qkv, depthwise, pointwise, heads))
        return cache[key]

    assert "same shapes, new values" in _result("06.3", memo_ms).message


def test_watched_inputs_raise_only_on_the_forbidden_shapes():
    forbidden = {(3, 3): "a 3 x 3 product"}
    a = l06._watch(torch.randn(3, 2, dtype=torch.float64), forbidden)
    b = l06._watch(torch.randn(2, 3, dtype=torch.float64), forbidden)
    assert (b @ a).shape == (2, 2)  # allowed, and the result is watched too
    with pytest.raises(l06.FormError, match="3 x 3"):
        a @ b
    with pytest.raises(l06.FormError):
        torch.einsum("id,dj->ij", a, b)
    c = (a * 2).sum(0, keepdim=True)  # elementwise work never raises
    assert isinstance(c, l06._Watched) and c._forbidden is forbidden
