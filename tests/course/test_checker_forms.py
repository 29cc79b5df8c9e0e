"""Form detection (issue 12): an exercise that asks for a form (recurrent, parallel, chunked, no
loop over t, linear) rejects the other forms and says which one it saw. Every implementation
below gives the right numbers; only its form is wrong. The references pass (test_exercises.py
runs each on 50 seeds), and so do other legitimate ways to write the asked form."""

import types

import numpy as np
import pytest
import torch

from lintutor import causal as cl
from lintutor import featuremaps as fm
from lintutor import gated
from lintutor import linear as la
from lintutor import softmax as sm
from lintutor.course.exercises import all_exercises, check, get


def _state_out(o, q, k, v, normalize, initial_state, output_final_state, eps):
    if not output_final_state:
        return o
    _, state = cl.causal_linear_attention_parallel(
        q, k, v, normalize, initial_state, output_final_state=True, eps=eps
    )
    return o, state


def _numpy_recurrent(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6, chunk_size=None
):
    """A loop over t in numpy: one torch call in all, T Python steps."""
    qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
    B, H, T, D = qn.shape
    S = np.zeros((B, H, D, vn.shape[-1]))
    z = np.zeros((B, H, D))
    if initial_state is not None:
        S0, z0 = initial_state if normalize else (initial_state, None)
        S = S0.numpy().copy()
        z = z0.numpy().copy() if z0 is not None else z
    out = np.zeros(vn.shape)
    for t in range(T):
        S = S + kn[:, :, t, :, None] * vn[:, :, t, None, :]
        z = z + kn[:, :, t]
        num = np.einsum("bhd,bhde->bhe", qn[:, :, t], S)
        if normalize:
            num = num / (np.einsum("bhd,bhd->bh", qn[:, :, t], z)[..., None] + eps)
        out[:, :, t] = num
    o = torch.from_numpy(out)
    return _state_out(o, q, k, v, normalize, initial_state, output_final_state, eps)


def _stacked_prefixes(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6
):
    """'Vectorised': one parallel call per prefix, stacked (a loop over t in disguise)."""
    T = q.shape[2]
    o = torch.stack(
        [
            cl.causal_linear_attention_parallel(
                q[:, :, : t + 1],
                k[:, :, : t + 1],
                v[:, :, : t + 1],
                normalize,
                initial_state,
                eps=eps,
            )[:, :, -1]
            for t in range(T)
        ],
        dim=2,
    )
    return _state_out(o, q, k, v, normalize, initial_state, output_final_state, eps)


def _blocks_of_16(q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6):
    """The chunked form with a fixed block of 16 tokens."""
    return cl.causal_linear_attention_chunked(
        q, k, v, normalize, initial_state, output_final_state, eps, chunk_size=16
    )


def _blocks_of_48(q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6):
    """Fixed blocks of 48 tokens: 1, 2, 3 blocks at T = 32, 64, 128 (as even as a log T count)."""
    return cl.causal_linear_attention_chunked(
        q, k, v, normalize, initial_state, output_final_state, eps, chunk_size=48
    )


def _blocks_of_128(q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6):
    """Fixed blocks of 128 tokens: one block at every T up to 128."""
    return cl.causal_linear_attention_chunked(
        q, k, v, normalize, initial_state, output_final_state, eps, chunk_size=128
    )


def _chunked_as_recurrent(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6, chunk_size=64
):
    return cl.causal_linear_attention_recurrent(
        q, k, v, normalize, initial_state, output_final_state, eps
    )


def _chunked_as_parallel(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6, chunk_size=64
):
    return cl.causal_linear_attention_parallel(
        q, k, v, normalize, initial_state, output_final_state, eps
    )


def _chunked_fixed_block(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6, chunk_size=64
):
    return _blocks_of_16(q, k, v, normalize, initial_state, output_final_state, eps)


def _chunked_own_token_loop(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6, chunk_size=64
):
    """Chunks outside, but a token loop inside each chunk: still per token."""
    outs = []
    T = q.shape[2]
    for start in range(0, T, chunk_size):
        for t in range(start, min(start + chunk_size, T)):
            o = cl.causal_linear_attention_parallel(
                q[:, :, : t + 1],
                k[:, :, : t + 1],
                v[:, :, : t + 1],
                normalize,
                initial_state,
                eps=eps,
            )
            outs.append(o[:, :, -1])
    o = torch.stack(outs, dim=2)
    return _state_out(o, q, k, v, normalize, initial_state, output_final_state, eps)


def _my_own_recurrent_loop(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6
):
    """A learner's own loop over t, written in the test file (learner code)."""
    B, H, T, D = q.shape
    S, z = q.new_zeros(B, H, D, v.shape[-1]), q.new_zeros(B, H, D)
    if initial_state is not None:
        S, z = (initial_state[0], initial_state[1]) if normalize else (initial_state, z)
    outs = []
    for t in range(T):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + k[:, :, t]
        num = torch.einsum("bhd,bhde->bhe", q[:, :, t], S)
        if normalize:
            num = num / ((q[:, :, t] * z).sum(-1, keepdim=True) + eps)
        outs.append(num)
    o = torch.stack(outs, dim=2)
    return _state_out(o, q, k, v, normalize, initial_state, output_final_state, eps)


WRONG_FORMS = [
    # (exercise, implementation, words the verdict must contain)
    ("03.3", _chunked_as_recurrent, ["recurrent", "per token", "asks for the chunked form"]),
    ("03.3", _chunked_as_parallel, ["parallel", "asks for the chunked form"]),
    ("03.3", _chunked_fixed_block, ["chunk_size"]),
    ("03.3", _chunked_own_token_loop, ["recurrent", "per token"]),
    ("03.3", _numpy_recurrent, ["Python lines per token", "recurrent"]),
    ("03.2", _blocks_of_16, ["blocks", "chunked", "asks for the parallel form"]),
    ("03.2", _blocks_of_48, ["blocks", "chunked", "asks for the parallel form"]),
    ("03.2", _blocks_of_128, ["blocks", "chunked", "asks for the parallel form"]),
    ("03.2", _stacked_prefixes, ["per token", "recurrent"]),
    ("03.2", _my_own_recurrent_loop, ["per token", "recurrent"]),
    ("03.2", _numpy_recurrent, ["Python lines per token"]),
    ("03.1", cl.causal_linear_attention_parallel, ["parallel", "asks for the recurrent form"]),
    ("03.1", _blocks_of_16, ["chunked", "asks for the recurrent form"]),
]


@pytest.mark.parametrize(
    "ex_id,fn,words", WRONG_FORMS, ids=[f"{e}-{f.__name__}" for e, f, _ in WRONG_FORMS]
)
def test_a_wrong_form_is_rejected_and_named(ex_id, fn, words):
    fn = _renamed(fn, get(ex_id).name)
    r = check(ex_id, fn, show=False)
    assert r.status == "fail" and r.layer == "form", r.text()
    for word in words:
        assert word in r.message, (word, r.message)


def _renamed(fn, name):
    """A copy of fn under the learner's function name (the package's function is left as is)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def test_gated_forms():
    def gated_linear_attention_parallel(q, k, v, g):
        return gated.gated_linear_attention_recurrent(q, k, v, g)

    r = check("04.3", gated_linear_attention_parallel, show=False)
    assert r.layer == "form" and "recurrent" in r.message, r.text()

    def gated_linear_attention_recurrent(q, k, v, g):
        return gated.gated_linear_attention_parallel(q, k, v, g)

    r = check("04.1", gated_linear_attention_recurrent, show=False)
    assert r.layer == "form" and "parallel" in r.message, r.text()


def test_softmax_attention_loop_over_queries_is_rejected():
    def softmax_attention(q, k, v, causal=False):
        T = q.shape[2]
        rows = [
            sm.softmax_attention(
                q[:, :, t : t + 1],
                k[:, :, : t + 1] if causal else k,
                v[:, :, : t + 1] if causal else v,
            )
            for t in range(T)
        ]
        return torch.cat(rows, dim=2)

    r = check("01.2", softmax_attention, show=False)
    assert r.layer == "form" and "per token" in r.message, r.text()


def test_quadratic_linear_attention_is_rejected():
    def linear_attention(q, k, v, normalize=True, eps=1e-6):
        return la.linear_attention_quadratic(q, k, v, normalize=normalize, eps=eps)

    r = check("02.2", linear_attention, show=False)
    assert r.layer == "form" and "T x S" in r.message and "quadratic" in r.message, r.text()


def _numpy_quadratic(q, k, v, normalize=True, eps=1e-6):
    """The T x S map in numpy: torch sees no large tensor, only the memory probe's tracemalloc
    does."""
    qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
    scores = qn @ np.swapaxes(kn, -1, -2)
    o = scores @ vn
    if normalize:
        o = o / (scores.sum(-1, keepdims=True) + eps)
    return torch.from_numpy(o)


def _numpy_linear(q, k, v, normalize=True, eps=1e-6):
    """The linear form in numpy: K^T V first."""
    qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
    o = qn @ (np.swapaxes(kn, -1, -2) @ vn)
    if normalize:
        o = o / ((qn * kn.sum(-2, keepdims=True)).sum(-1, keepdims=True) + eps)
    return torch.from_numpy(o)


def test_a_quadratic_map_built_in_numpy_is_rejected_and_the_linear_form_in_numpy_passes():
    r = check("02.2", _renamed(_numpy_quadratic, "linear_attention"), show=False)
    assert r.layer == "form" and "outside torch" in r.message and "T x S" in r.message, r.text()
    r = check("02.2", _renamed(_numpy_linear, "linear_attention"), show=False)
    assert r.passed, r.text()


def test_elementwise_map_with_a_loop_is_rejected():
    def elu1(x):
        if x.dim() < 2:
            return fm.elu1(x)
        return torch.stack([fm.elu1(x[..., t, :]) for t in range(x.shape[-2])], dim=-2)

    r = check("02.1", elu1, show=False)
    assert r.layer == "form" and "per token" in r.message, r.text()


def test_legitimate_variants_of_the_asked_form_pass():
    def causal_linear_attention_chunked(
        q,
        k,
        v,
        normalize=True,
        initial_state=None,
        output_final_state=False,
        eps=1e-6,
        chunk_size=64,
    ):
        # an early return for one chunk is still the chunked form
        if chunk_size >= q.shape[2]:
            return cl.causal_linear_attention_parallel(
                q, k, v, normalize, initial_state, output_final_state, eps
            )
        return cl.causal_linear_attention_chunked(
            q, k, v, normalize, initial_state, output_final_state, eps, chunk_size
        )

    r = check("03.3", causal_linear_attention_chunked, show=False)
    assert r.passed, r.text()

    def causal_linear_attention_parallel(
        q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6
    ):
        # a Python loop over heads (not over t) is fine
        outs = [
            cl.causal_linear_attention_parallel(
                q[:, h : h + 1],
                k[:, h : h + 1],
                v[:, h : h + 1],
                normalize,
                None
                if initial_state is None
                else (
                    tuple(s[:, h : h + 1] for s in initial_state)
                    if normalize
                    else initial_state[:, h : h + 1]
                ),
                False,
                eps,
            )
            for h in range(q.shape[1])
        ]
        o = torch.cat(outs, dim=1)
        return _state_out(o, q, k, v, normalize, initial_state, output_final_state, eps)

    r = check("03.2", causal_linear_attention_parallel, show=False)
    assert r.passed, r.text()


def _tree_scan_parallel(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6
):
    """The parallel form as a prefix sum by doubling (Hillis-Steele): log2(T) steps, no loop
    over t."""
    B, H, T, D = q.shape
    S0, z0 = q.new_zeros(B, H, D, v.shape[-1]), q.new_zeros(B, H, D)
    if initial_state is not None:
        S0, z0 = initial_state if normalize else (initial_state, z0)
    X = k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, H, T, D, E)
    Z = k
    shift = 1
    while shift < T:
        X = torch.cat([X[:, :, :shift], X[:, :, shift:] + X[:, :, :-shift]], dim=2)
        Z = torch.cat([Z[:, :, :shift], Z[:, :, shift:] + Z[:, :, :-shift]], dim=2)
        shift *= 2
    o = torch.einsum("bhtd,bhtde->bhte", q, X + S0.unsqueeze(2))
    if normalize:
        o = o / ((q * (Z + z0.unsqueeze(2))).sum(-1, keepdim=True) + eps)
    return _state_out(o, q, k, v, normalize, initial_state, output_final_state, eps)


def test_a_log_t_tree_scan_is_the_parallel_form():
    r = check("03.2", _renamed(_tree_scan_parallel, "causal_linear_attention_parallel"), show=False)
    assert r.passed, r.text()


def test_pass_message_names_the_form_it_saw():
    r = check("03.3", get("03.3").reference, show=False)
    assert r.passed and "chunked form" in r.message, r.text()


def test_forms_are_set_where_the_lessons_ask_for_one():
    forms = {ex.id: ex.form for ex in all_exercises().values()}
    expected = {
        "01.2": "no loop over t",
        "02.1": "no loop over t",
        "02.2": "linear",
        "03.1": "recurrent",
        "03.2": "parallel",
        "03.3": "chunked",
        "04.1": "recurrent",
        "04.3": "parallel",
        "04.4": "chunked",
        "05.1": "recurrent",
    }
    for ex_id, form in expected.items():
        assert forms[ex_id] == form, (ex_id, forms[ex_id])


def test_a_form_needs_a_known_form_and_a_case_with_t():
    from lintutor.course.checker import Exercise, between, cases

    def make(named, form):
        return Exercise(id="99.3", title="t", reference=abs, make_inputs=lambda s, g: {},
                        named_sizes=named, random_sizes=between(), hints=("a", "b", "c"),
                        wrong=[], form=form)  # fmt: skip

    with pytest.raises(ValueError, match="needs a named case with T"):
        make(cases("N", ("n", 3)), "parallel")
    with pytest.raises(ValueError, match="form must be one of"):
        make(cases("T", ("t", 3)), "fast")
    assert make(cases("T", ("t", 3)), "chunked").form == "chunked"
