"""Mamba's selective scan equals gated linear attention (outputs and final states, float64, both
discretizations), and its implicit attention matrix reproduces the layer's output."""

import pytest
import torch
import torch.nn.functional as F

from lintutor._validate import ShapeError
from lintutor.mamba import (
    MambaMixer,
    discretize,
    mamba_attention_matrix,
    mamba_to_gated_linear_attention,
    selective_scan_as_linear_attention,
    selective_scan_recurrent,
)

SIZES = [(1, 1, 1, 1), (2, 11, 3, 5), (3, 7, 4, 2), (1, 20, 2, 16)]  # (b, T, d, N)


def _ssm(b, T, d, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    A = -torch.exp(n(d, N))  # negative, as Mamba's A = -exp(A_log)
    return n(b, T, d), F.softplus(n(b, T, d)), A, n(b, T, N), n(b, T, N), n(d), n(b, d, N)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("disc", ["simple", "zoh"])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_selective_scan_equals_gated_linear_attention(size, disc, chunk_size):
    x, delta, A, B, C, D, h0 = _ssm(*size)
    y, h = selective_scan_recurrent(x, delta, A, B, C, D, disc, h0, output_final_state=True)
    y2, h2 = selective_scan_as_linear_attention(
        x, delta, A, B, C, D, disc, h0, output_final_state=True, chunk_size=chunk_size
    )
    assert (y - y2).abs().max() < 1e-10
    assert (h - h2).abs().max() < 1e-10


def test_the_dictionary_is_C_B_delta_x_and_exp_delta_A():
    x, delta, A, B, C, _, _ = _ssm(2, 5, 3, 4)
    q, k, v, g = mamba_to_gated_linear_attention(x, delta, A, B, C)
    assert q.shape == k.shape == g.shape == (2, 3, 5, 4) and v.shape == (2, 3, 5, 1)
    torch.testing.assert_close(q[:, 1], C)
    torch.testing.assert_close(k[:, 2], B)
    torch.testing.assert_close(v[:, 0, :, 0], delta[:, :, 0] * x[:, :, 0])
    torch.testing.assert_close(torch.exp(g[:, 1]), torch.exp(delta[:, :, 1, None] * A[1]))


def test_zoh_and_simple_agree_to_first_order_in_delta():
    _, delta, A, B, _, _, _ = _ssm(1, 4, 2, 3)
    errors = []
    for scale in (1e-2, 1e-3):
        _, B_simple = discretize(delta * scale, A, B, "simple")
        _, B_zoh = discretize(delta * scale, A, B, "zoh")
        errors.append(((B_zoh - B_simple).abs().max() / B_simple.abs().max()).item())
    assert errors[1] < errors[0] / 5  # relative difference shrinks with Delta
    assert errors[0] > 1e-5  # but they are different discretizations


def test_attention_matrix_reproduces_the_scan():
    for disc in ("simple", "zoh"):
        x, delta, A, B, C, D, _ = _ssm(2, 9, 3, 4, seed=5)
        alpha = mamba_attention_matrix(delta, A, B, C, disc)  # (b, d, T, T)
        assert alpha.shape == (2, 3, 9, 9)
        assert (alpha.triu(1) == 0).all()  # causal
        y = torch.einsum("bdts,bsd->btd", alpha, x) + D * x
        torch.testing.assert_close(y, selective_scan_recurrent(x, delta, A, B, C, D, disc))


def test_without_D_there_is_no_shortcut():
    x, delta, A, B, C, D, _ = _ssm(1, 6, 2, 3)
    with_d = selective_scan_recurrent(x, delta, A, B, C, D)
    torch.testing.assert_close(with_d - selective_scan_recurrent(x, delta, A, B, C), D * x)


def test_wrong_shapes_name_the_argument():
    x, delta, A, B, C, D, _ = _ssm(1, 6, 2, 3)
    with pytest.raises(ShapeError, match="A"):
        selective_scan_recurrent(x, delta, A.T, B, C, D)
    with pytest.raises(ValueError, match="discretization"):
        discretize(delta, A, B, "euler")


def test_mamba_mixer_is_causal_and_matches_its_attention_matrix():
    torch.manual_seed(0)
    layer = MambaMixer(8, d_state=4).double()
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    y = layer(x)
    x2 = x.clone()
    x2[:, 7:] = 0
    torch.testing.assert_close(layer(x2)[:, :7], y[:, :7])
    u, delta, A, B, C, D, z = layer.ssm_inputs(x)
    alpha = mamba_attention_matrix(delta, A, B, C)
    ssm = torch.einsum("bdts,bsd->btd", alpha, u) + D * u
    torch.testing.assert_close(layer.out_proj(ssm * F.silu(z)), y)
