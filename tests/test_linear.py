"""Non-causal linear attention: the linear form equals the quadratic form; bad input is reported."""

import pytest
import torch

from lintutor import featuremaps as fm
from lintutor._validate import ShapeError
from lintutor.linear import (
    attention_entropy,
    linear_attention,
    linear_attention_quadratic,
    linear_attention_weights,
)
from lintutor.softmax import attention_weights

from reference import assert_close, qkv

SHAPES = [(1, 1, 1, 1, 1, 1), (2, 3, 7, 9, 4, 5), (1, 2, 63, 63, 8, 3), (2, 1, 100, 17, 3, 8)]


def _qkv(B, H, T, S, D, E, seed=0):
    return qkv(B, H, T, D, E, S=S, seed=seed)  # raw normals: each test applies its feature map


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("name", ["elu1", "relu", "squared_relu", "taylor2"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_form_matches_quadratic_form(shape, name, normalize):
    q, k, v = _qkv(*shape)
    phi = fm.get_feature_map(name)
    a = linear_attention(phi(q), phi(k), v, normalize=normalize)
    b = linear_attention_quadratic(phi(q), phi(k), v, normalize=normalize)
    assert a.shape == shape[:3] + (shape[-1],)
    assert_close("linear vs quadratic", b, a, rtol=1e-10, atol=1e-12)


def test_normalized_output_is_weights_times_values():
    q, k, v = _qkv(2, 2, 6, 6, 4, 3)
    q, k = fm.elu1(q), fm.elu1(k)
    w = linear_attention_weights(q, k)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6, dtype=torch.float64))
    assert_close("o", linear_attention(q, k, v), w @ v, rtol=1e-10, atol=1e-12)


def test_causal_weights_hide_the_future():
    q, k, _ = _qkv(1, 1, 5, 5, 3, 1)
    w = linear_attention_weights(fm.elu1(q), fm.elu1(k), causal=True, eps=0.0)
    assert torch.equal(w[0, 0].triu(1), torch.zeros(5, 5, dtype=torch.float64))
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 1, 5, dtype=torch.float64))


def test_taylor_weights_approach_softmax_for_small_scores():
    q, k, _ = _qkv(1, 2, 8, 8, 4, 1)
    q, k = 0.3 * q, 0.3 * k
    lin = linear_attention_weights(fm.taylor2(q), fm.taylor2(k))
    soft = attention_weights(q, k)
    assert (lin - soft).abs().max() < 2e-3


def test_entropy_is_log_S_for_uniform_and_zero_for_one_hot():
    uniform = torch.full((1, 1, 2, 8), 1 / 8, dtype=torch.float64)
    torch.testing.assert_close(
        attention_entropy(uniform), torch.full((1, 1, 2), 8.0).log().double()
    )
    one_hot = torch.eye(4, dtype=torch.float64).view(1, 1, 4, 4)
    assert attention_entropy(one_hot).abs().max() < 1e-9


def test_mismatched_shapes_name_expected_and_actual():
    q, k, v = _qkv(2, 2, 5, 5, 4, 3)
    with pytest.raises(ShapeError, match=r"v: expected shape .*got \(2, 2, 6, 3\)"):
        linear_attention(q, k, torch.zeros(2, 2, 6, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match="k:"):
        linear_attention_quadratic(q, k[..., :3], v)


@pytest.mark.parametrize("fn", [linear_attention, linear_attention_quadratic])
def test_negative_normalizer_is_reported(fn):
    q, k, v = _qkv(1, 1, 6, 6, 4, 2)
    k = k.abs()
    q = -q.abs()  # every q . sum(k) < 0: raw features, no positive feature map
    with pytest.raises(ValueError, match="non-negative feature map"):
        fn(q, k, v)
    fn(q, k, v, normalize=False)  # without the normalizer any sign is fine
