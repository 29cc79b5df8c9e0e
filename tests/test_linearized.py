"""Grouped linear attention and the local conv on V (lesson 07): every form equals the
definition in float64, grouped with one kernel equals full causal linear attention, and the
causal conv is a banded lower-triangular Toeplitz matmul with exactly zero gradient to the
future."""

import pytest
import torch

from lintutor import causal, linearized
from lintutor.featuremaps import elu1

# (B, H, T, D, E, G): T = 1, T < G, T not a multiple of G, G = 1, a multiple, long T
SHAPES = [
    (1, 1, 1, 3, 2, 4),
    (2, 3, 5, 4, 5, 8),
    (1, 2, 23, 8, 3, 4),
    (2, 1, 9, 2, 3, 1),
    (1, 2, 32, 5, 7, 16),
    (1, 1, 301, 3, 2, 64),
]
IDS = ["B{}H{}T{}D{}E{}G{}".format(*s) for s in SHAPES]


def _qkv(B, H, T, D, E, seed=0, positive=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    q, k = r(B, H, T, D), r(B, H, T, D)
    if positive:
        q, k = elu1(q), elu1(k)
    return q, k, r(B, H, T, E)


def _state(B, H, D, E, normalize, seed=1):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(B, H, D, E, generator=g, dtype=torch.float64)
    return (S, 3 * torch.rand(B, H, D, generator=g, dtype=torch.float64)) if normalize else S


def _close(a, b, tol=1e-10):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y, tol)
    else:
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero state", "initial state"])
@pytest.mark.parametrize(
    "local,normalize,alpha",
    [("relu2", False, 1.0), ("relu2", False, 0.0), ("relu2", True, 0.7), ("linear", True, 1.0),
     ("linear", False, -0.5)],
)  # fmt: skip
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_grouped_parallel_matches_recurrent_with_final_state(shape, local, normalize, alpha,
                                                             with_state):  # fmt: skip
    B, H, T, D, E, G = shape
    q, k, v = _qkv(B, H, T, D, E, positive=normalize)
    s0 = _state(B, H, D, E, normalize) if with_state else None
    kw = dict(group_size=G, local=local, global_factor=alpha, normalize=normalize,
              initial_state=s0, output_final_state=True)  # fmt: skip
    o_ref, s_ref = linearized.grouped_linear_attention_recurrent(q, k, v, **kw)
    o, s = linearized.grouped_linear_attention_parallel(q, k, v, **kw)
    assert o.shape == (B, H, T, E)
    _close(o, o_ref)
    _close(s, s_ref)


@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "unnormalized"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_grouped_with_one_kernel_equals_full_causal_linear_attention(shape, normalize):
    """local = global = q . k and alpha = 1: the chunked form with C = G, i.e. lesson 03."""
    B, H, T, D, E, G = shape
    q, k, v = _qkv(B, H, T, D, E, seed=3, positive=True)
    s0 = _state(B, H, D, E, normalize)
    kw = dict(normalize=normalize, initial_state=s0, output_final_state=True)
    ref = causal.causal_linear_attention_recurrent(q, k, v, **kw)
    for form in (linearized.grouped_linear_attention_parallel,
                 linearized.grouped_linear_attention_recurrent):  # fmt: skip
        _close(form(q, k, v, group_size=G, local="linear", global_factor=1.0, **kw), ref)


def test_paper_variant_is_a_different_model():
    """relu^2 inside groups is not full causal linear attention (and needs no positive maps)."""
    q, k, v = _qkv(1, 2, 40, 4, 4, seed=5)
    q, k = linearized.cosine(q), linearized.cosine(k)
    full = causal.causal_linear_attention_recurrent(q, k, v, normalize=False)
    paper = linearized.grouped_linear_attention_parallel(q, k, v, group_size=8)
    assert (paper - full).abs().max() > 0.1
    # inside the first group there is no global term, so only the kernel differs there
    local_only = linearized.grouped_linear_attention_parallel(q, k, v, 8, global_factor=0.0)
    _close(paper[:, :, :8], local_only[:, :, :8])


def test_global_factor_zero_cuts_every_group_off_from_the_past():
    q, k, v = _qkv(1, 1, 20, 3, 2, seed=6)
    v.requires_grad_(True)
    o = linearized.grouped_linear_attention_parallel(q, k, v, group_size=8, global_factor=0.0)
    (g,) = torch.autograd.grad(o[:, :, 10].sum(), v)  # token 10 is in the group 8..15
    assert torch.count_nonzero(g[:, :, :8]) == 0 and torch.count_nonzero(g[:, :, 8:11]) > 0


def test_grouped_split_at_a_group_boundary_continues_from_the_final_state():
    q, k, v = _qkv(2, 2, 37, 4, 3, seed=7)
    kw = dict(group_size=8, local="relu2", global_factor=0.6, output_final_state=True)
    o, s = linearized.grouped_linear_attention_parallel(q, k, v, **kw)
    first, rest = (slice(0, 16), slice(16, None))
    o1, s1 = linearized.grouped_linear_attention_parallel(
        q[:, :, first], k[:, :, first], v[:, :, first], **kw
    )
    o2, s2 = linearized.grouped_linear_attention_parallel(
        q[:, :, rest], k[:, :, rest], v[:, :, rest], initial_state=s1, **kw
    )
    _close(torch.cat([o1, o2], dim=2), o)
    _close(s2, s)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("G", [1, 3, 8])
def test_grouped_step_matches_parallel(G, normalize):
    B, H, T, D, E = 2, 3, 19, 4, 5
    q, k, v = _qkv(B, H, T, D, E, seed=8, positive=True)
    kw = dict(group_size=G, local="relu2", global_factor=0.8, normalize=normalize)
    ref = linearized.grouped_linear_attention_parallel(q, k, v, **kw)
    S, z = torch.zeros(B, H, D, E, dtype=q.dtype), torch.zeros(B, H, D, dtype=q.dtype)
    state = (S, z if normalize else None, k[:, :, :0], v[:, :, :0])
    outs = []
    for t in range(T):
        o_t, state = linearized.grouped_linear_attention_step(q[:, :, t], k[:, :, t],
                                                              v[:, :, t], state, **kw)  # fmt: skip
        outs.append(o_t)
        assert state[2].shape[2] == (t + 1) % G  # the open group holds (t + 1) mod G tokens
    _close(torch.stack(outs, dim=2), ref)


def test_grouped_gradients_match_recurrent():
    q, k, v = _qkv(1, 2, 21, 3, 4, seed=9)
    leaves = [x.requires_grad_(True) for x in (q, k, v)]
    alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    do = torch.randn(1, 2, 21, 4, dtype=torch.float64)
    grads = []
    for form in (linearized.grouped_linear_attention_recurrent,
                 linearized.grouped_linear_attention_parallel):  # fmt: skip
        o = form(linearized.cosine(q), linearized.cosine(k), v, 4, "relu2", alpha)
        grads.append(torch.autograd.grad((o * do).sum(), leaves + [alpha]))
    _close(grads[0], grads[1])


def test_cosine_is_the_official_normalization():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    _close(linearized.cosine(x), x / x.norm(dim=-1, keepdim=True))


# --- the local conv on V ----------------------------------------------------------------------


def _vw(B, H, T, E, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(B, H, T, E, generator=g, dtype=torch.float64)
    return v, torch.randn(H, K, generator=g, dtype=torch.float64)


CONV_SHAPES = [(1, 1, 1, 2, 3), (2, 3, 7, 4, 5), (1, 2, 40, 3, 7), (1, 1, 5, 2, 9), (1, 1, 4, 2, 1),
               (1, 2, 300, 2, 63)]  # fmt: skip
CONV_IDS = ["B{}H{}T{}E{}K{}".format(*s) for s in CONV_SHAPES]


def test_causal_conv_mask_keeps_the_current_token_and_the_past():
    assert linearized.causal_conv_mask(7).tolist() == [1, 1, 1, 1, 0, 0, 0]
    m = linearized.causal_conv_mask(63)  # the official kernel: 32 taps kept, 31 future masked
    assert int(m.sum()) == 32 and m[31] == 1 and m[32] == 0
    with pytest.raises(ValueError, match="odd"):
        linearized.causal_conv_mask(4)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=CONV_IDS)
def test_convs_equal_banded_toeplitz_matmuls(shape):
    B, H, T, E, K = shape
    v, w = _vw(B, H, T, E, K)
    M_causal = linearized.conv_toeplitz(w, T, causal=True)  # (H, T, T)
    M_centred = linearized.conv_toeplitz(w, T, causal=False)
    assert torch.equal(M_causal, M_causal.tril())  # lower-triangular
    band = (torch.arange(T).view(1, T) - torch.arange(T).view(T, 1)).abs() > K // 2
    assert torch.count_nonzero(M_centred[:, band]) == 0  # banded
    _close(linearized.causal_depthwise_conv(v, w), M_causal @ v)
    _close(linearized.centered_depthwise_conv(v, w), M_centred @ v)
    i, j = torch.tril_indices(T, T)
    _close(M_causal[:, i, j], M_centred[:, i, j])  # the same taps on and below the diagonal


@pytest.mark.parametrize("shape", CONV_SHAPES[1:4], ids=CONV_IDS[1:4])
def test_causal_conv_has_exactly_zero_gradient_to_the_future(shape):
    B, H, T, E, K = shape
    v, w = _vw(B, H, T, E, K, seed=1)
    jac = torch.autograd.functional.jacobian(lambda x: linearized.causal_depthwise_conv(x, w), v)
    jac = jac.movedim(2, 0).movedim(6, 1)  # (T_out, T_in, B, H, E, B, H, E)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)  # out t, input s > t
    assert torch.count_nonzero(jac[future]) == 0
    leaky = (
        torch.autograd.functional.jacobian(lambda x: linearized.centered_depthwise_conv(x, w), v)
        .movedim(2, 0)
        .movedim(6, 1)
    )
    assert torch.count_nonzero(leaky[future]) > 0  # the centred conv reads the next tokens


def test_masked_taps_get_zero_gradient():
    v, w = _vw(2, 2, 9, 3, 5, seed=2)
    w.requires_grad_(True)
    (g,) = torch.autograd.grad(linearized.causal_depthwise_conv(v, w).square().sum(), w)
    assert torch.count_nonzero(g[:, 3:]) == 0 and torch.count_nonzero(g[:, :3]) > 0


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=CONV_IDS)
def test_causal_conv_state_steps_and_splits(shape):
    B, H, T, E, K = shape
    P = K // 2
    v, w = _vw(B, H, T, E, K, seed=3)
    past = torch.randn(B, H, P, E, dtype=torch.float64)
    c, last = linearized.causal_depthwise_conv(v, w, initial_state=past, output_final_state=True)
    full = linearized.causal_depthwise_conv(torch.cat([past, v], dim=2), w)[:, :, P:]
    _close(c, full)
    _close(last, torch.cat([past, v], dim=2)[:, :, -P:] if P else past)
    window, outs = past, []
    for t in range(T):
        c_t, window = linearized.conv_step(v[:, :, t], w, window)
        outs.append(c_t)
    _close(torch.stack(outs, dim=2), c)
    _close(window, last)


def test_augmented_step_matches_linear_attention_plus_conv():
    B, H, T, D, E, K = 2, 3, 17, 4, 5, 7
    q, k, v = _qkv(B, H, T, D, E, seed=10, positive=True)
    w = torch.randn(H, K, dtype=torch.float64)
    for eps in (1e-6, 0.5):
        ref = causal.causal_linear_attention_parallel(q, k, v, eps=eps)
        ref = ref + linearized.causal_depthwise_conv(v, w)
        state = (torch.zeros(B, H, D, E, dtype=q.dtype), torch.zeros(B, H, D, dtype=q.dtype),
                 torch.zeros(B, H, K // 2, E, dtype=q.dtype))  # fmt: skip
        outs = []
        for t in range(T):
            o_t, *state = linearized.augmented_linear_attention_step(
                q[:, :, t], k[:, :, t], v[:, :, t], *state, w, eps=eps
            )
            outs.append(o_t)
        _close(torch.stack(outs, dim=2), ref)
        _close(state[0], k.transpose(-1, -2) @ v)
        _close(state[1], k.sum(2))
        _close(state[2], v[:, :, -(K // 2) :])


def test_bad_arguments_are_named():
    q, k, v = _qkv(1, 1, 4, 2, 2)
    with pytest.raises(ValueError, match="local must be one of"):
        linearized.grouped_linear_attention_parallel(q, k, v, 2, local="softmax")
    with pytest.raises(ValueError, match="group_size"):
        linearized.grouped_linear_attention_parallel(q, k, v, 0)
    with pytest.raises(ValueError, match="odd"):
        linearized.centered_depthwise_conv(v, torch.zeros(1, 4, dtype=v.dtype))
