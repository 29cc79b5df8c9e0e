"""Feature maps: output dims, positivity, and which ones approximate softmax's exp kernel."""

import math

import pytest
import torch

from lintutor import featuremaps as fm


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", ["elu1", "relu", "squared_relu", "taylor2"])
@pytest.mark.parametrize("D", [1, 3, 8])
def test_output_dim_matches_feature_dim(name, D):
    x = _x(2, 3, 5, D)
    out = fm.get_feature_map(name)(x)
    assert out.shape == (2, 3, 5, fm.feature_dim(name, D))


def test_random_features_output_dim_is_M():
    W = fm.draw_random_projection(6, 11, seed=1, dtype=torch.float64)
    assert W.shape == (6, 11)
    assert fm.positive_random_features(_x(2, 7, 6), W).shape == (
        2,
        7,
        fm.feature_dim("random", 6, 11),
    )


@pytest.mark.parametrize("name", ["elu1", "relu", "squared_relu"])
def test_elementwise_maps_are_nonnegative(name):
    assert (fm.get_feature_map(name)(_x(1000) * 5) >= 0).all()


def test_elu1_is_positive_and_equals_exp_below_zero():
    x = _x(100) * 4
    out = fm.elu1(x)
    assert (out > 0).all()
    neg = x < 0
    torch.testing.assert_close(out[neg], torch.exp(x[neg]))
    torch.testing.assert_close(out[~neg], x[~neg] + 1)


def test_squared_relu_is_relu_squared():
    x = _x(50)
    torch.testing.assert_close(fm.squared_relu(x), fm.relu(x) * fm.relu(x))


def test_taylor2_dot_product_equals_second_order_taylor_of_exp():
    D = 5
    q, k = _x(7, D, seed=1), _x(9, D, seed=2)
    u = q @ k.T / math.sqrt(D)  # (7, 9)
    torch.testing.assert_close(fm.taylor2(q) @ fm.taylor2(k).T, 1 + u + u**2 / 2)
    assert ((fm.taylor2(q) @ fm.taylor2(k).T) >= 0.5 - 1e-12).all()


def test_random_features_are_positive_and_estimate_exp_kernel():
    D, M = 4, 20000
    q, k = _x(5, D, seed=3) * 0.5, _x(6, D, seed=4) * 0.5
    W = fm.draw_random_projection(D, M, seed=0, dtype=torch.float64)
    pq, pk = fm.positive_random_features(q, W), fm.positive_random_features(k, W)
    assert (pq > 0).all() and (pk > 0).all()
    exact = torch.exp(q @ k.T / math.sqrt(D))
    rel = ((pq @ pk.T - exact).abs() / exact).max()
    assert rel < 0.05, rel


@pytest.mark.parametrize("orthogonal", [True, False])
def test_projection_is_seeded_and_redraws_with_a_new_seed(orthogonal):
    a = fm.draw_random_projection(5, 12, seed=7, orthogonal=orthogonal)
    b = fm.draw_random_projection(5, 12, seed=7, orthogonal=orthogonal)
    c = fm.draw_random_projection(5, 12, seed=8, orthogonal=orthogonal)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_orthogonal_projection_columns_are_orthogonal_within_a_block():
    W = fm.draw_random_projection(6, 6, seed=2, dtype=torch.float64)  # one block
    cos = torch.nn.functional.normalize(W, dim=0)
    torch.testing.assert_close(cos.T @ cos, torch.eye(6, dtype=torch.float64))


def test_random_features_reject_wrong_projection():
    with pytest.raises(ValueError, match="projection"):
        fm.positive_random_features(_x(3, 4), fm.draw_random_projection(5, 8))


def test_unknown_feature_map_is_reported():
    with pytest.raises(ValueError, match="unknown feature map"):
        fm.get_feature_map("softplus")
    assert fm.get_feature_map(torch.sigmoid) is torch.sigmoid
