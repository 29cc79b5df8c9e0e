"""Lesson 07's checks catch what the shared exercise tests do not: an answer remembered from an
earlier call with the same shapes fails, each exercise has such a pair of cases, and the long
cases go past any small fixed buffer; 07.1 asks for a form, so a loop over groups (or over t)
with the right numbers is rejected and named, and a loop over heads is not."""

import pytest
import torch

from lintutor import linearized
from lintutor.course.exercises import check, get, run_check

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


def _loop_over_groups(q, k, v, group_size=64, local="relu2", global_factor=1.0,
                      initial_state=None, output_final_state=False):  # fmt: skip
    """The right numbers, one group at a time: a Python loop over the T / G groups."""
    B, H, T, D = q.shape
    S = initial_state if initial_state is not None else q.new_zeros(B, H, D, v.shape[-1])
    outs = []
    for start in range(0, T, group_size):
        qg, kg, vg = (x[:, :, start : start + group_size] for x in (q, k, v))  # (B, H, r, *)
        r = qg.shape[2]
        a = linearized.local_kernel(qg @ kg.transpose(-1, -2), local)  # (B, H, r, r)
        a = a.masked_fill(~torch.ones(r, r, dtype=torch.bool).tril(), 0.0)
        outs.append(a @ vg + global_factor * (qg @ S))  # (B, H, r, E)
        S = S + kg.transpose(-1, -2) @ vg  # (B, H, D, E)
    o = torch.cat(outs, dim=2) if outs else v.new_zeros(v.shape)
    return (o, S) if output_final_state else o


def _loop_over_t(q, k, v, group_size=64, local="relu2", global_factor=1.0, initial_state=None,
                 output_final_state=False):  # fmt: skip
    """The right numbers from the recurrent form: a loop over t inside the package."""
    return linearized.grouped_linear_attention_recurrent(
        q, k, v, group_size, local, global_factor, False, initial_state, output_final_state
    )


def _loop_over_heads(q, k, v, group_size=64, local="relu2", global_factor=1.0,
                     initial_state=None, output_final_state=False):  # fmt: skip
    """All groups at once for each head in turn: a loop, but not over groups or t."""
    outs = [
        linearized.grouped_linear_attention_parallel(
            q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], group_size, local, global_factor,
            initial_state=None if initial_state is None else initial_state[:, h : h + 1],
            output_final_state=True,
        )
        for h in range(q.shape[1])
    ]  # fmt: skip
    o, S = torch.cat([o for o, _ in outs], dim=1), torch.cat([s for _, s in outs], dim=1)
    return (o, S) if output_final_state else o


def _as_learner(fn):
    def grouped_linear_attention_parallel(*args, **kwargs):
        return fn(*args, **kwargs)

    return grouped_linear_attention_parallel


@pytest.mark.parametrize(
    "fn,words",
    [(_loop_over_groups, ["blocks of about 4 tokens", "chunked form"]),
     (_loop_over_t, ["per token", "recurrent form"])],
    ids=["loop over groups", "loop over t"],
)  # fmt: skip
def test_grouped_attention_with_a_loop_over_groups_or_t_is_rejected(fn, words):
    r = check("07.1", _as_learner(fn), show=False)
    assert r.status == "fail" and r.layer == "form", r.text()
    for word in words + ["asks for the parallel form"]:
        assert word in r.message, (word, r.message)


@pytest.mark.parametrize("fn", [_loop_over_groups, _loop_over_t], ids=["groups", "t"])
def test_the_wrong_form_message_says_what_07_1_asks_for(fn):
    """07.1 asks for no loop over groups: the message says so, not only "no loop over t"."""
    r = check("07.1", _as_learner(fn), show=False)
    assert "asks for the parallel form (every group at once: no loop over groups" in r.message
    assert "(no loop over t)" not in r.message, r.message


def test_grouped_attention_with_a_loop_over_heads_passes():
    r = check("07.1", _as_learner(_loop_over_heads), show=False)
    assert r.passed and "parallel form" in r.message, r.text()
