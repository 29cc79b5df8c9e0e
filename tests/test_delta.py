"""The delta rule (lesson 09): chunked forms and decode steps equal the recurrent definition in
float64 (outputs, final states, gradients); the update is a gradient step and a contraction; the
associative-memory measurements behave as the lesson says; inputs are checked."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from lintutor import associative as am
from lintutor._validate import ShapeError
from lintutor.delta import (
    DeltaNetAttention,
    delta_rule_chunked,
    delta_rule_recurrent,
    delta_rule_step,
    inverse_by_powers,
    ut_transform,
)
from lintutor.delta_gated import (
    gated_delta_rule_chunked,
    gated_delta_rule_recurrent,
    gated_delta_rule_step,
)
from lintutor.gated import gated_linear_attention_recurrent

SHAPES = [  # (B, H, T, D, E, chunk): awkward on purpose
    (1, 1, 1, 3, 2, 4),  # T = 1
    (2, 3, 13, 4, 5, 4),  # odd T, not a multiple of the chunk, B and H > 1
    (1, 2, 17, 6, 3, 5),  # D != E
    (3, 1, 9, 2, 7, 16),  # one short chunk
    (1, 1, 300, 8, 8, 64),  # long T, 4 full chunks and a partial one
]


def _inputs(B, H, T, D, E, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    k = F.normalize(torch.randn(B, H, T, D, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, H, T, E, generator=g, dtype=torch.float64)
    beta = 2 * torch.rand(B, H, T, generator=g, dtype=torch.float64)  # the whole range (0, 2)
    log_a = -torch.rand(B, H, T, generator=g, dtype=torch.float64)
    S0 = torch.randn(B, H, D, E, generator=g, dtype=torch.float64)
    return [x.to(dtype) for x in (q, k, v, beta, log_a, S0)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}T{}D{}E{}C{}".format(*s))
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_chunked_matches_recurrent_with_initial_and_final_state(shape, gated):
    B, H, T, D, E, C = shape
    q, k, v, beta, g, S0 = _inputs(B, H, T, D, E)
    if gated:
        want, want_S = gated_delta_rule_recurrent(q, k, v, beta, g, S0, True, scale=0.7)
        got, S = gated_delta_rule_chunked(q, k, v, beta, g, S0, True, scale=0.7, chunk_size=C)
    else:
        want, want_S = delta_rule_recurrent(q, k, v, beta, S0, True, scale=0.7)
        got, S = delta_rule_chunked(q, k, v, beta, S0, True, scale=0.7, chunk_size=C)
    assert got.shape == (B, H, T, E) and S.shape == (B, H, D, E)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, want_S, rtol=1e-10, atol=1e-10)


def test_chunked_is_called_twice_with_other_values_and_gives_their_answers():
    for seed in (0, 1):
        q, k, v, beta, g, S0 = _inputs(2, 2, 11, 3, 4, seed=seed)
        want = gated_delta_rule_recurrent(q, k, v, beta, g, S0)
        torch.testing.assert_close(
            gated_delta_rule_chunked(q, k, v, beta, g, S0, chunk_size=4),
            want,
            rtol=1e-10,
            atol=1e-10,
        )


def test_zero_gate_is_the_delta_rule():
    q, k, v, beta, _, S0 = _inputs(2, 2, 10, 3, 4)
    zero = torch.zeros(2, 2, 10, dtype=torch.float64)
    want = delta_rule_recurrent(q, k, v, beta, S0)
    torch.testing.assert_close(
        gated_delta_rule_chunked(q, k, v, beta, zero, S0, chunk_size=3), want
    )


def test_orthonormal_keys_with_beta_one_make_the_delta_rule_additive():
    """Nothing to erase: S^T k_t = 0 for a key orthogonal to all earlier ones."""
    D = 6
    keys = am.make_keys(D, D, "orthogonal", generator=torch.Generator().manual_seed(0))[0]
    k = keys.view(1, 1, D, D)  # (B, H, T = D, D)
    q, v = (
        torch.randn(1, 1, D, D, dtype=torch.float64),
        torch.randn(1, 1, D, 5, dtype=torch.float64),
    )
    ones, zeros = (
        torch.ones(1, 1, D, dtype=torch.float64),
        torch.zeros(1, 1, D, dtype=torch.float64),
    )
    got = delta_rule_recurrent(q, k, v, ones)
    torch.testing.assert_close(got, gated_linear_attention_recurrent(q, k, v, zeros))


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_step_after_prefill_equals_the_full_forward(gated):
    q, k, v, beta, g, S0 = _inputs(2, 3, 21, 4, 5)
    pre = slice(0, 20)
    if gated:
        full = gated_delta_rule_recurrent(q, k, v, beta, g, S0, scale=0.5)
        _, S = gated_delta_rule_chunked(*(x[:, :, pre] for x in (q, k, v, beta, g)), S0, True,
                                        scale=0.5, chunk_size=8)  # fmt: skip
        o_t, S_next = gated_delta_rule_step(
            *(x[:, :, 20] for x in (q, k, v, beta, g)), S, scale=0.5
        )
        _, S_full = gated_delta_rule_recurrent(q, k, v, beta, g, S0, True)
    else:
        full = delta_rule_recurrent(q, k, v, beta, S0, scale=0.5)
        _, S = delta_rule_chunked(*(x[:, :, pre] for x in (q, k, v, beta)), S0, True,
                                  scale=0.5, chunk_size=8)  # fmt: skip
        o_t, S_next = delta_rule_step(*(x[:, :, 20] for x in (q, k, v, beta)), S, scale=0.5)
        _, S_full = delta_rule_recurrent(q, k, v, beta, S0, True)
    torch.testing.assert_close(o_t, full[:, :, 20], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S_next, S_full, rtol=1e-10, atol=1e-10)


def test_step_from_no_state_starts_at_zero():
    q, k, v, beta, _, _ = _inputs(2, 2, 1, 3, 4)
    o_t, S = delta_rule_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], beta[:, :, 0], None)
    torch.testing.assert_close(o_t, delta_rule_recurrent(q, k, v, beta)[:, :, 0])
    torch.testing.assert_close(
        S, beta[:, :, 0, None, None] * k[:, :, 0, :, None] * v[:, :, 0, None]
    )


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_chunked_gradients_match_recurrent(gated):
    q, k, v, beta, g, S0 = _inputs(2, 2, 11, 3, 4, seed=3)
    grads = []
    for form in ("recurrent", "chunked"):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, beta, g, S0)]
        lq, lk, lv, lb, lg, lS = leaves
        kw = {"chunk_size": 4} if form == "chunked" else {}
        if gated:
            fn = gated_delta_rule_chunked if form == "chunked" else gated_delta_rule_recurrent
            o, S = fn(lq, lk, lv, lb, lg, lS, True, **kw)
        else:
            fn = delta_rule_chunked if form == "chunked" else delta_rule_recurrent
            o, S = fn(lq, lk, lv, lb, lS, True, **kw)
        w = torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)
        ((o * w).sum() + (S * S).sum()).backward()
        grads.append([x.grad for x in leaves])
    names = ("dq", "dk", "dv", "dbeta", "dg", "dS0")
    for name, want, got in zip(names, *grads):
        if name == "dg" and not gated:
            assert want is None and got is None
            continue
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=name)


def test_delta_step_is_one_gradient_step_on_the_regression_loss():
    q, k, v, beta, _, S0 = _inputs(1, 1, 1, 5, 3)
    S = S0.clone().requires_grad_()
    k_t, v_t, b = k[:, :, 0], v[:, :, 0], beta[0, 0, 0]
    loss = 0.5 * ((torch.einsum("bhd,bhde->bhe", k_t, S) - v_t) ** 2).sum()  # ||S^T k - v||^2 / 2
    (grad,) = torch.autograd.grad(loss, S)
    _, S_new = delta_rule_step(q[:, :, 0], k_t, v_t, beta[:, :, 0], S0)
    torch.testing.assert_close(S_new, S0 - b * grad)


def test_a_write_with_beta_one_stores_the_pair_exactly():
    q, k, v, _, _, S0 = _inputs(2, 2, 1, 6, 4)
    ones = torch.ones(2, 2, dtype=torch.float64)
    _, S = delta_rule_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], ones, S0)
    torch.testing.assert_close(torch.einsum("bhd,bhde->bhe", k[:, :, 0], S), v[:, :, 0])


def test_the_transition_is_a_contraction_for_beta_in_0_2_and_only_there():
    k = F.normalize(torch.randn(7, dtype=torch.float64), dim=0)
    for beta, norm in ((0.3, 1.0), (1.0, 1.0), (1.9, 1.0), (2.5, 1.5)):
        M = torch.eye(7, dtype=torch.float64) - beta * torch.outer(k, k)
        assert abs(torch.linalg.matrix_norm(M, ord=2).item() - norm) < 1e-12


def test_recurrent_matches_flas_naive_gated_delta_rule():
    """A transcription of fla's naive_recurrent_gated_delta_rule, layout (B, T, H, D)."""
    q, k, v, beta, g, S0 = _inputs(2, 3, 9, 4, 5)
    scale = 4**-0.5
    qf, kf, vf, bf, gf = (x.transpose(1, 2) for x in (q, k, v, beta, g))  # fla's layout
    h, o = S0.clone(), torch.zeros_like(vf)
    for i in range(qf.shape[1]):
        h = h * gf[:, i].exp()[..., None, None]
        b_v = (vf[:, i] - (h * kf[:, i][..., None]).sum(-2)) * bf[:, i][..., None]
        h = h + kf[:, i].unsqueeze(-1) * b_v.unsqueeze(-2)
        o[:, i] = torch.einsum("bhd,bhdm->bhm", qf[:, i] * scale, h)
    got, S = gated_delta_rule_recurrent(q, k, v, beta, g, S0, True, scale=scale)
    torch.testing.assert_close(got, o.transpose(1, 2))
    torch.testing.assert_close(S, h)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_ut_transform_is_the_inverse_times_diag_beta(gated):
    _, k, v, beta, g, _ = _inputs(2, 1, 7, 3, 4)
    gate = g if gated else None
    w, u = ut_transform(k, v, beta, gate)
    gamma = torch.exp(torch.cumsum(g, -1)) if gated else torch.ones_like(beta)  # (B, H, C)
    ratio = gamma.unsqueeze(-1) / gamma.unsqueeze(-2)  # gamma_t / gamma_s
    A = (beta.unsqueeze(-1) * (k @ k.transpose(-1, -2)) * ratio).tril(-1)
    T = torch.linalg.inv(torch.eye(7, dtype=torch.float64) + A) @ torch.diag_embed(beta)
    torch.testing.assert_close(w, T @ (gamma.unsqueeze(-1) * k))
    torch.testing.assert_close(u, T @ v)


def test_ut_transform_is_exact_for_identical_keys_and_beta_near_two():
    """The worst case for a power series of A: all keys equal, beta = 1.99 (|1 - beta| < 1)."""
    C = 64
    k = F.normalize(torch.ones(1, 1, C, 8, dtype=torch.float64), dim=-1)
    v = torch.randn(1, 1, C, 4, dtype=torch.float64)
    beta = torch.full((1, 1, C), 1.99, dtype=torch.float64)
    q = torch.randn(1, 1, C, 8, dtype=torch.float64)
    want = delta_rule_recurrent(q, k, v, beta)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        got = delta_rule_chunked(*(x.to(dtype) for x in (q, k, v, beta)), chunk_size=C)
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_inverse_by_powers_is_exact_for_random_keys_and_breaks_for_alike_keys_in_fp32():
    """The product (I - A)(I + A^2)(I + A^4)... equals the solve in float64 for random keys; in
    float32 it loses everything when the keys are alike (powers of A grow like C(62, 31))."""
    C = 64
    k = F.normalize(torch.randn(1, 1, C, 16, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64), dim=-1)  # fmt: skip
    A = (0.5 * k @ k.transpose(-1, -2)).tril(-1)
    eye = torch.eye(C, dtype=torch.float64)
    torch.testing.assert_close(inverse_by_powers(A) @ (eye + A), eye.expand(1, 1, C, C))
    same = torch.ones(C, C, dtype=torch.float64).tril(-1)  # all keys equal, beta = 1
    exact = torch.linalg.inv(eye + same)
    err32 = (inverse_by_powers(same.float()).double() - exact).abs().max()
    solve32 = torch.linalg.solve_triangular(eye.float() + same.float(), eye.float(), upper=False,
                                            unitriangular=True)  # fmt: skip
    assert err32 > 1e3 and (solve32.double() - exact).abs().max() < 1e-5


def test_forms_share_one_signature_and_the_gated_ones_add_g_after_beta():
    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    rec = params(delta_rule_recurrent)
    assert params(delta_rule_chunked) == rec + [("chunk_size", 64)]
    g = ("g", inspect.Parameter.empty)
    assert params(gated_delta_rule_recurrent) == rec[:4] + [g] + rec[4:]
    assert params(gated_delta_rule_chunked) == rec[:4] + [g] + rec[4:] + [("chunk_size", 64)]
    step = params(delta_rule_step)
    assert [n for n, _ in step] == ["q_t", "k_t", "v_t", "beta_t", "state", "scale"]
    assert params(gated_delta_rule_step) == step[:4] + [("g_t", g[1])] + step[4:]


def test_bf16_inputs_run_in_float32_and_return_bf16():
    q, k, v, beta, g, S0 = _inputs(1, 2, 70, 8, 8)
    low = [x.bfloat16() for x in (q, k, v, beta, g)]
    o, S = gated_delta_rule_chunked(*low, S0.float(), True)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    o_t, S_t = delta_rule_step(*(x[:, :, 0] for x in low[:4]), S0.float())
    assert o_t.dtype == torch.bfloat16 and S_t.dtype == torch.float32
    want, want_S = gated_delta_rule_recurrent(*(x.double() for x in low), S0.float().double(), True)
    assert (o.double() - want).norm() / want.norm() < 1e-2  # bf16 output rounding
    assert (S.double() - want_S).norm() / want_S.norm() < 1e-5  # float32 arithmetic


@pytest.mark.parametrize(
    "form", [delta_rule_recurrent, delta_rule_chunked], ids=["recurrent", "chunked"]
)
def test_empty_sequence_returns_no_outputs_and_the_initial_state(form):
    q, k, v, beta, _, S0 = _inputs(2, 2, 0, 3, 4)
    o, S = form(q, k, v, beta, S0, True)
    assert o.shape == (2, 2, 0, 4)
    torch.testing.assert_close(S, S0)


def test_wrong_inputs_are_named_with_expected_and_actual():
    q, k, v, beta, g, S0 = _inputs(1, 2, 5, 3, 4)
    with pytest.raises(ShapeError, match=r"beta.*\(1, 2, 5\).*\(1, 2, 4\)"):
        delta_rule_recurrent(q, k, v, beta[:, :, :4])
    with pytest.raises(ShapeError, match="g"):
        gated_delta_rule_chunked(q, k, v, beta, g[:, :1])
    with pytest.raises(ShapeError, match="initial_state"):
        delta_rule_chunked(q, k, v, beta, S0[..., :3])
    with pytest.raises(ValueError, match=r"g: log-gates must be <= 0.*0\.5"):
        gated_delta_rule_recurrent(q, k, v, beta, g + 0.5 - g.max())
    with pytest.raises(TypeError, match="beta: expected a floating-point tensor"):
        delta_rule_chunked(q, k, v, torch.ones(1, 2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="g: the gated forms need log-gates"):
        gated_delta_rule_chunked(q, k, v, beta, None)
    with pytest.raises(ValueError, match="chunk_size"):
        delta_rule_chunked(q, k, v, beta, chunk_size=0)
    with pytest.raises(ShapeError, match="beta_t"):
        delta_rule_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], beta, S0)


@pytest.mark.parametrize("rule", DeltaNetAttention.RULES)
def test_mixer_is_causal_and_keeps_shape(rule):
    torch.manual_seed(0)
    mixer = DeltaNetAttention(16, 4, rule=rule, shift_keys=True, chunk_size=4).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    y = mixer(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 6:] += 1.0  # change the future
    torch.testing.assert_close(mixer(x2)[:, :6], y[:, :6])


def test_mixer_starts_at_its_beta_and_gate_whatever_the_weight_init():
    mixer = DeltaNetAttention(8, 2, rule="gated_delta", beta_init=0.05, gate_init=0.99)
    for proj in (mixer.beta_proj, mixer.gate_proj):
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    x = torch.randn(1, 3, 8)
    torch.testing.assert_close(torch.sigmoid(mixer.beta_proj(x) + mixer.beta_offset),
                               torch.full((1, 3, 2), 0.05))  # fmt: skip
    a = torch.exp(F.logsigmoid(mixer.gate_proj(x) + mixer.gate_offset) / 16)
    torch.testing.assert_close(a, torch.full((1, 3, 2), 0.99))
    with pytest.raises(ValueError, match="rule"):
        DeltaNetAttention(8, 2, rule="softmax")


def test_orthogonal_keys_are_read_back_exactly_up_to_d():
    gen = torch.Generator().manual_seed(0)
    keys = am.make_keys(8, 8, "orthogonal", batch=3, generator=gen)
    torch.testing.assert_close(keys @ keys.transpose(-1, -2), torch.eye(8).double().expand(3, 8, 8))
    values = torch.randn(3, 8, 5, generator=gen, dtype=torch.float64)
    for memory in am.MEMORIES.values():
        assert am.retrieval_error(memory(keys, values), keys, values).max() < 1e-20
    with pytest.raises(ValueError, match="at most d = 8"):
        am.make_keys(9, 8, "orthogonal")


def test_additive_crosstalk_grows_like_n_over_d_and_the_delta_rule_keeps_correlated_keys_apart():
    r = am.capacity_curves(d=16, pairs=(8, 16, 32), trials=40, seed=1)
    additive = r["random"]["additive"]
    for n, err in zip(r["pairs"], additive):
        assert 0.7 * (n - 1) / 16 < err < 1.3 * (n - 1) / 16  # E ||sum (k_i.k_j) v_i||^2 ~ (n-1)/d
    assert r["random"]["least squares"][0] < 1e-20  # n <= d: a linear memory can be exact
    assert r["random"]["delta"][0] < additive[0]
    corr = r["correlated"]
    ratios = [a / d for a, d in zip(corr["additive"], corr["delta"])]
    assert ratios[0] > 2 and ratios[0] < ratios[1] < ratios[2]  # the gap grows with n
    assert all(x != x for x in r["orthogonal"]["additive"][2:])  # NaN: no 32 orthogonal keys


def test_delta_sweeps_approach_least_squares_when_the_pairs_fit():
    gen = torch.Generator().manual_seed(2)
    keys = am.make_keys(12, 16, "random", batch=4, generator=gen)
    values = torch.randn(4, 12, 3, generator=gen, dtype=torch.float64)
    errs = [am.retrieval_error(am.delta_memory(keys, values, sweeps=s), keys, values).mean()
            for s in (1, 4, 32)]  # fmt: skip
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3
