"""Gated causal linear attention: parallel and chunked forms equal the recurrent definition
(outputs, final states, gradients) for scalar and vector gates; the segment sum is stable where
the cumulative-product mask is not."""

import pytest
import torch

from lintutor._validate import ShapeError
from lintutor.causal import causal_linear_attention_recurrent
from lintutor.gated import (
    GatedLinearAttention,
    decay_mask_naive,
    fixed_decay_log_gates,
    gated_linear_attention_chunked,
    gated_linear_attention_parallel,
    gated_linear_attention_recurrent,
    gated_linear_attention_step,
    segment_sum,
    selective_copying_batch,
)
from lintutor.gated import decay_mask as gated_decay_mask

from reference import assert_close, gen, qkv
from reference import state as random_state

SHAPES = [  # (B, H, T, D, E, chunk): awkward on purpose
    (1, 1, 1, 3, 2, 4),
    (2, 3, 13, 4, 5, 4),
    (1, 2, 17, 6, 3, 5),
    (3, 1, 9, 2, 7, 16),
]


def _inputs(B, H, T, D, E, vector, seed=0):
    """q, k uniform in [0, 1), v normal, and log-gates in (-2, 0]: scalar or one per channel."""
    g = gen(seed)
    q, k, v = qkv(B, H, T, D, E, kind="uniform", g=g)
    log_g = -2 * torch.rand(*((B, H, T, D) if vector else (B, H, T)), generator=g, dtype=q.dtype)
    return q, k, v, log_g


def _state(B, H, D, E, normalize, seed=1):
    return random_state(B, H, D, E, normalize, seed=seed)


EXACT = dict(rtol=1e-10, atol=1e-12)  # float64: the forms agree to rounding


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
@pytest.mark.parametrize("normalize", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("form", ["parallel", "chunked"])
def test_form_matches_recurrent_with_initial_state(shape, vector, normalize, form):
    B, H, T, D, E, C = shape
    q, k, v, g = _inputs(B, H, T, D, E, vector)
    S0 = _state(B, H, D, E, normalize)
    want, want_state = gated_linear_attention_recurrent(q, k, v, g, normalize, S0, True)
    if form == "parallel":
        got, state = gated_linear_attention_parallel(q, k, v, g, normalize, S0, True)
    else:
        got, state = gated_linear_attention_chunked(q, k, v, g, normalize, S0, True, chunk_size=C)
    assert_close("o", want, got, **EXACT)
    assert_close("final state", want_state, state, **EXACT)


@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
def test_chunked_gradients_match_recurrent(vector):
    q, k, v, g = _inputs(2, 2, 11, 3, 4, vector, seed=3)
    S0 = _state(2, 2, 3, 4, False)
    grads = []
    for fn in (gated_linear_attention_recurrent, gated_linear_attention_chunked):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, g, S0)]
        kwargs = {"chunk_size": 4} if fn is gated_linear_attention_chunked else {}
        o, S = fn(*leaves[:4], initial_state=leaves[4], output_final_state=True, **kwargs)
        (
            (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() + S.sum()
        ).backward()
        grads.append([t.grad for t in leaves])
    for name, got, want in zip(("dq", "dk", "dv", "dg", "dS0"), *grads[::-1]):
        assert_close(name, want, got, rtol=1e-9, atol=1e-11)


def test_zero_gate_is_plain_causal_linear_attention():
    q, k, v, _ = _inputs(2, 2, 9, 3, 4, False)
    zero = torch.zeros(2, 2, 9, dtype=torch.float64)
    for normalize in (False, True):
        want = causal_linear_attention_recurrent(q, k, v, normalize=normalize)
        got = gated_linear_attention_chunked(q, k, v, zero, normalize=normalize, chunk_size=4)
        assert_close(f"o (normalize={normalize})", want, got, **EXACT)


def test_scalar_gate_equals_vector_gate_with_equal_channels():
    q, k, v, g = _inputs(1, 2, 7, 3, 2, False)
    want = gated_linear_attention_parallel(q, k, v, g)
    got = gated_linear_attention_parallel(q, k, v, g.unsqueeze(-1).expand(-1, -1, -1, 3))
    assert_close("o", want, got, **EXACT)


def test_step_continues_the_recurrence():
    q, k, v, g = _inputs(2, 2, 6, 3, 4, True)
    o, state = gated_linear_attention_recurrent(q[:, :, :5], k[:, :, :5], v[:, :, :5], g[:, :, :5],
                                                output_final_state=True)  # fmt: skip
    o_t, _ = gated_linear_attention_step(q[:, :, 5], k[:, :, 5], v[:, :, 5], g[:, :, 5], state)
    assert_close("o_t", gated_linear_attention_recurrent(q, k, v, g)[:, :, 5], o_t)


def test_segment_sum_is_the_sum_over_each_segment():
    g = torch.randn(2, 7, dtype=torch.float64)
    G = segment_sum(g)
    for t in range(7):
        for s in range(7):
            want = g[:, s + 1 : t + 1].sum(-1) if s <= t else torch.full((2,), float("-inf"))
            torch.testing.assert_close(G[:, t, s], want.to(G.dtype))


def test_naive_cumprod_mask_breaks_for_long_sequences_and_segment_sum_does_not():
    g = torch.full((1, 2000), -0.5)  # a_t = 0.61: the product underflows after ~200 steps
    assert torch.isnan(decay_mask_naive(g)).any()
    stable = torch.exp(segment_sum(g))
    assert torch.isfinite(stable).all()
    torch.testing.assert_close(stable[0, 1999, 1990], torch.exp(torch.tensor(-4.5)))
    # short sequences: both are the same mask
    short = -torch.rand(1, 12, dtype=torch.float64)
    torch.testing.assert_close(decay_mask_naive(short), torch.exp(segment_sum(short)))


def test_chunked_is_finite_where_a_global_cumsum_would_underflow():
    q, k, v, _ = _inputs(1, 1, 3000, 2, 2, False)
    g = torch.full((1, 1, 3000), -1.0, dtype=torch.float64)  # exp(-3000) = 0 in float64
    o = gated_linear_attention_chunked(q, k, v, g, chunk_size=64)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o[:, :, -8:], gated_linear_attention_parallel(
        q[:, :, -64:], k[:, :, -64:], v[:, :, -64:], g[:, :, -64:])[:, :, -8:])  # fmt: skip


def test_fixed_decay_is_retnets_gamma():
    g = fixed_decay_log_gates(3, 5, batch=2, dtype=torch.float64)
    assert g.shape == (2, 3, 5)
    torch.testing.assert_close(
        torch.exp(g[0, :, 0]), 1 - 2.0 ** -torch.tensor([5.0, 6, 7]).double()
    )


def test_wrong_gate_shape_names_the_argument():
    q, k, v, g = _inputs(1, 2, 5, 3, 4, False)
    with pytest.raises(ShapeError, match="g"):
        gated_linear_attention_parallel(q, k, v, g[:, :, :4])
    with pytest.raises(ShapeError, match="g"):
        gated_linear_attention_chunked(q, k, v, torch.zeros(1, 2, 5, 2))


@pytest.mark.parametrize("gate", GatedLinearAttention.GATES)
def test_mixer_is_causal_and_keeps_shape(gate):
    torch.manual_seed(0)
    mixer = GatedLinearAttention(16, 4, gate=gate, chunk_size=4).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    y = mixer(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 6:] += 1.0  # change the future
    torch.testing.assert_close(mixer(x2)[:, :6], y[:, :6])


def test_selective_copying_targets_are_the_data_tokens_in_order():
    g = torch.Generator().manual_seed(0)
    inputs, targets, mask = selective_copying_batch(5, n_tokens=4, T=20, vocab=10, generator=g)
    assert inputs.shape == targets.shape == mask.shape == (5, 24)
    torch.testing.assert_close(targets[:, :-1], inputs[:, 1:])
    for b in range(5):
        data = inputs[b, :20][inputs[b, :20] >= 2]
        assert data.tolist() == targets[b][mask[b]].tolist()
        assert inputs[b, 20] == 1


def test_decay_mask_is_exp_of_segment_sum_and_the_causal_mask_at_zero_gate():
    g = -torch.rand(2, 3, 9, dtype=torch.float64)
    torch.testing.assert_close(gated_decay_mask(g), torch.exp(segment_sum(g)))
    ones = torch.ones(9, 9, dtype=torch.float64).tril()
    torch.testing.assert_close(gated_decay_mask(torch.zeros(9, dtype=torch.float64)), ones)


@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
def test_decay_masked_scores_times_v_is_the_parallel_form(vector):
    from lintutor.gated import decay_masked_scores, decay_masked_scores_factorized

    q, k, v, g = _inputs(2, 3, 11, 4, 5, vector)
    scores = decay_masked_scores(q, k, g)
    assert_close("scores @ v", gated_linear_attention_parallel(q, k, v, g), scores @ v, **EXACT)
    # mild gates in float64: GLA's factorization gives the same scores
    assert_close("factorized", scores, decay_masked_scores_factorized(q, k, g), **EXACT)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_factorized_scores_overflow_past_log_max_over_a_64_token_chunk(dtype):
    from lintutor.gated import decay_masked_scores, decay_masked_scores_factorized

    C = 64
    limit = torch.log(torch.tensor(torch.finfo(dtype).max)).item() / C  # 0.173 / 1.386
    q, k, _, _ = _inputs(1, 1, C, 4, 1, False)
    q, k = q.to(dtype), k.to(dtype)
    for mean_abs, finite in [(0.9 * limit, True), (1.05 * limit, False)]:
        g = torch.full((1, 1, C), -mean_abs, dtype=dtype)  # constant gates: sum = -C * mean_abs
        assert torch.isfinite(decay_masked_scores_factorized(q, k, g)).all() == finite, mean_abs
        assert torch.isfinite(decay_masked_scores(q, k, g)).all()  # the segment sum never does


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_mixer_starts_with_slow_forgetting_whatever_the_weight_init(gate):
    from lintutor.models import TinyLM

    torch.manual_seed(0)
    model = TinyLM(8, d_model=16, n_layers=1, n_heads=2, max_len=8,
                   mixer=lambda d, h: GatedLinearAttention(d, h, gate=gate))  # fmt: skip
    mixer = model.blocks[0].mixer  # TinyLM's init zeroed its biases and shrank its weights
    a = torch.exp(mixer.log_gates(torch.zeros(1, 5, 16)))  # zero input: the starting gate
    torch.testing.assert_close(a, torch.full_like(a, torch.sigmoid(torch.tensor(3.0)) ** (1 / 16)))
    assert a.min() > 0.99


def test_selective_copying_span_puts_the_data_first_and_keeps_the_default_draws():
    def draw(**kw):
        g = torch.Generator().manual_seed(1)
        return selective_copying_batch(6, n_tokens=3, T=20, vocab=9, generator=g, **kw)

    for a, b in zip(draw(), draw(span=20)):  # span=T is the default, draw for draw
        assert torch.equal(a, b)
    inputs, targets, mask = draw(span=3)  # the data first, then 17 noise tokens
    assert (inputs[:, :3] >= 2).all() and (inputs[:, 3:20] == 0).all()
    assert torch.equal(targets[mask].view(6, 3), inputs[:, :3])
    with pytest.raises(ValueError, match="span"):
        draw(span=2)
