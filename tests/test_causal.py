"""Causal linear attention: every form equals the recurrent definition (outputs, final states,
gradients), from a zero or a given initial state, on awkward shapes."""

import pytest
import torch

from lintutor import causal
from lintutor._validate import ShapeError
from lintutor.linear import linear_attention_weights

from reference import assert_close, qkv
from reference import state as random_state

# (B, H, T, D, E): T = 1, odd, one short of a chunk, not a multiple of it, a multiple of it
SHAPES = [(1, 1, 1, 3, 2), (2, 3, 7, 4, 5), (1, 2, 63, 8, 3), (2, 2, 100, 5, 7), (1, 2, 256, 6, 4)]


def _qkv(B, H, T, D, E, seed=0):
    return qkv(B, H, T, D, E, kind="elu1", seed=seed)  # phi(q), phi(k) > 0


def _state(B, H, D, E, normalize, seed=1):
    return random_state(B, H, D, E, normalize, z_scale=3.0, seed=seed)


EXACT = dict(rtol=1e-10, atol=1e-12)  # float64: the forms agree to rounding


FORMS = {
    "parallel": causal.causal_linear_attention_parallel,
    "chunked C=16": lambda *a, **kw: causal.causal_linear_attention_chunked(
        *a, **kw, chunk_size=16
    ),
    "chunked C=64": causal.causal_linear_attention_chunked,
    "chunked C=1": lambda *a, **kw: causal.causal_linear_attention_chunked(*a, **kw, chunk_size=1),
    "chunked C>T": lambda *a, **kw: causal.causal_linear_attention_chunked(
        *a, **kw, chunk_size=300
    ),
}


@pytest.mark.parametrize("with_state", [False, True], ids=["zero state", "initial state"])
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "unnormalized"])
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}T{}D{}E{}".format(*s))
def test_form_matches_recurrent_with_final_state(shape, form, normalize, with_state):
    B, H, T, D, E = shape
    q, k, v = _qkv(*shape)
    s0 = _state(B, H, D, E, normalize) if with_state else None
    kw = dict(normalize=normalize, initial_state=s0, output_final_state=True)
    o_ref, s_ref = causal.causal_linear_attention_recurrent(q, k, v, **kw)
    o, s = FORMS[form](q, k, v, **kw)
    assert o.shape == (B, H, T, E)
    assert_close("o", o_ref, o, **EXACT)
    assert_close("final state", s_ref, s, **EXACT)


@pytest.mark.parametrize("normalize", [True, False])
def test_output_only_when_final_state_not_requested(normalize):
    q, k, v = _qkv(2, 1, 9, 3, 2)
    for fn in [causal.causal_linear_attention_recurrent, causal.causal_linear_attention_parallel,
               causal.causal_linear_attention_chunked]:  # fmt: skip
        out = fn(q, k, v, normalize=normalize)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 9, 2)


def test_recurrent_matches_masked_attention_weights():
    """The definition: o_t = sum_{s<=t} (q_t . k_s) v_s / sum_{s<=t} q_t . k_s."""
    q, k, v = _qkv(2, 2, 11, 4, 3)
    w = linear_attention_weights(q, k, causal=True, eps=0.0)  # (B, H, T, T)
    o = causal.causal_linear_attention_recurrent(q, k, v, eps=0.0)
    assert_close("o", w @ v, o, **EXACT)


@pytest.mark.parametrize("normalize", [True, False])
def test_split_sequence_continues_from_final_state(normalize):
    q, k, v = _qkv(2, 2, 40, 4, 6)
    full = causal.causal_linear_attention_chunked(q, k, v, normalize=normalize, chunk_size=8)
    a, state = causal.causal_linear_attention_chunked(
        q[:, :, :17], k[:, :, :17], v[:, :, :17], normalize=normalize, output_final_state=True,
        chunk_size=8,
    )  # fmt: skip
    b = causal.causal_linear_attention_parallel(
        q[:, :, 17:], k[:, :, 17:], v[:, :, 17:], normalize=normalize, initial_state=state
    )
    assert_close("o (two halves)", full, torch.cat([a, b], dim=2), **EXACT)


@pytest.mark.parametrize("normalize", [True, False])
def test_decode_steps_match_recurrent(normalize):
    B, H, T, D, E = 2, 3, 13, 4, 5
    q, k, v = _qkv(B, H, T, D, E)
    s0 = _state(B, H, D, E, normalize)
    o_ref, s_ref = causal.causal_linear_attention_recurrent(
        q, k, v, normalize=normalize, initial_state=s0, output_final_state=True
    )
    state, outs = s0, []
    for t in range(T):
        o_t, state = causal.causal_linear_attention_step(
            q[:, :, t], k[:, :, t], v[:, :, t], state, normalize=normalize
        )
        outs.append(o_t)
    assert_close("o (steps)", o_ref, torch.stack(outs, dim=2), **EXACT)
    assert_close("state", s_ref, state, **EXACT)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("T,C", [(7, 3), (63, 16), (100, 32)])
def test_chunked_gradients_match_recurrent(T, C, normalize):
    B, H, D, E = 2, 2, 3, 4
    q, k, v = _qkv(B, H, T, D, E, seed=T)
    s0 = _state(B, H, D, E, normalize)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    leaves += [x.clone().requires_grad_() for x in (s0 if normalize else (s0,))]
    g = torch.Generator().manual_seed(5)
    w_o = torch.randn(B, H, T, E, generator=g, dtype=torch.float64)
    w_s = torch.randn(B, H, D, E, generator=g, dtype=torch.float64)

    def grads(fn, **kw):
        q, k, v, *s = leaves
        state = tuple(s) if normalize else s[0]
        o, s_final = fn(q, k, v, normalize=normalize, initial_state=state,
                        output_final_state=True, **kw)  # fmt: skip
        S = s_final[0] if normalize else s_final
        loss = (o * w_o).sum() + (S * w_s).sum()
        return torch.autograd.grad(loss, leaves)

    ref = grads(causal.causal_linear_attention_recurrent)
    got = grads(causal.causal_linear_attention_chunked, chunk_size=C)
    for name, a, b in zip(["q", "k", "v", "S0", "z0"], got, ref):
        assert_close(f"grad of {name}", b, a, rtol=1e-9, atol=1e-11)


def test_chunked_in_float32_is_close_to_float64_recurrent():
    q, k, v = _qkv(1, 2, 256, 8, 8)
    ref = causal.causal_linear_attention_recurrent(q, k, v)
    got = causal.causal_linear_attention_chunked(q.float(), k.float(), v.float())
    assert_close("o (float32)", ref, got.double(), rtol=1e-4, atol=1e-5)


def test_future_tokens_do_not_change_the_past():
    q, k, v = _qkv(1, 1, 20, 3, 3)
    v2 = v.clone()
    v2[:, :, 10:] += 5.0
    for fn in [causal.causal_linear_attention_parallel, causal.causal_linear_attention_chunked]:
        a, b = fn(q, k, v), fn(q, k, v2)
        assert_close("the past", b[:, :, :10], a[:, :, :10], **EXACT)
        assert not torch.allclose(a[:, :, 10:], b[:, :, 10:])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_chunk_size_below_one_is_reported(bad):
    q, k, v = _qkv(1, 1, 5, 2, 2)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        causal.causal_linear_attention_chunked(q, k, v, chunk_size=bad)


@pytest.mark.parametrize(
    "fn",
    [
        causal.causal_linear_attention_recurrent,
        causal.causal_linear_attention_parallel,
        causal.causal_linear_attention_chunked,
    ],  # fmt: skip
)
def test_mismatched_shapes_name_expected_and_actual(fn):
    q, k, v = _qkv(2, 2, 6, 4, 3)
    with pytest.raises(ShapeError, match=r"k: expected shape .*got \(2, 2, 5, 4\)"):
        fn(q, k[:, :, :5], v)
    with pytest.raises(ShapeError, match=r"initial_state\[0\] \(S\): expected shape"):
        fn(q, k, v, initial_state=(torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(TypeError, match="tuple"):
        fn(q, k, v, initial_state=torch.zeros(2, 2, 4, 3))
    with pytest.raises(TypeError, match="tensor S"):
        fn(q, k, v, normalize=False, initial_state=(torch.zeros(2, 2, 4, 3), torch.zeros(2, 2, 4)))


def test_step_rejects_a_state_of_the_wrong_shape():
    q, k, v = _qkv(2, 2, 1, 4, 3)
    with pytest.raises(ShapeError, match="z"):
        causal.causal_linear_attention_step(
            q[:, :, 0], k[:, :, 0], v[:, :, 0], (torch.zeros(2, 2, 4, 3), torch.zeros(2, 2, 5))
        )
