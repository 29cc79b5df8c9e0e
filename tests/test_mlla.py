"""MLLA: the linear form equals its quadratic form, 2-D RoPE is a relative encoding, and the
block keeps shapes and uses position exactly where the released code does."""

import pytest
import torch

from lintutor.mlla import (
    MLLABlock,
    MLLALinearAttention,
    mlla_attention,
    mlla_attention_quadratic,
    rope_2d,
    rope_2d_angles,
)

from reference import assert_close, qkv


def _qkv(B=2, H=3, n=12, D=4, E=5, seed=0):
    return qkv(B, H, n, D, E, kind="uniform", seed=seed)  # positive q, k: features already


@pytest.mark.parametrize("with_rope", [False, True])
def test_linear_form_equals_quadratic_form(with_rope):
    q, k, v = _qkv()
    q_r, k_r = (q.flip(-1), k.roll(1, -1)) if with_rope else (None, None)  # any rotated copies
    assert_close(
        "linear vs quadratic", mlla_attention_quadratic(q, k, v, q_r, k_r),
        mlla_attention(q, k, v, q_r, k_r),
    )  # fmt: skip


def test_without_rope_the_weights_are_a_normalized_average():
    q, k, v = _qkv(n=7)
    ones = torch.ones_like(v[..., :1])
    torch.testing.assert_close(mlla_attention(q, k, ones), ones, rtol=1e-5, atol=1e-5)


def test_rope_2d_scores_depend_only_on_the_offset():
    height, width, c = 3, 4, 8
    g = torch.Generator().manual_seed(0)
    qv = torch.randn(c, generator=g, dtype=torch.float64)
    kv = torch.randn(c, generator=g, dtype=torch.float64)
    n = height * width
    q = rope_2d(qv.expand(1, n, c), height, width)[0]  # the same vector at every position
    k = rope_2d(kv.expand(1, n, c), height, width)[0]
    scores = q @ k.T  # (n, n)
    pos = [(i, j) for i in range(height) for j in range(width)]
    by_offset = {}
    for a, (ia, ja) in enumerate(pos):
        for b, (ib, jb) in enumerate(pos):
            by_offset.setdefault((ia - ib, ja - jb), []).append(scores[a, b])
    for values in by_offset.values():
        torch.testing.assert_close(torch.stack(values), values[0].expand(len(values)))
    assert len({round(float(v[0]), 6) for v in by_offset.values()}) > 1  # it does see position


def test_rope_rotates_without_changing_norms_and_is_identity_at_the_origin():
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    r = rope_2d(x, 3, 4)
    torch.testing.assert_close(r.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(r[:, 0], x[:, 0])
    assert rope_2d_angles(3, 4, 8).shape == (3, 4, 4)


def test_attention_without_position_is_permutation_equivariant_and_with_it_is_not():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8)
    perm = torch.randperm(16)
    plain = MLLALinearAttention(8, 4, 4, n_heads=2, rope=False, lepe=False)
    torch.testing.assert_close(plain(x[:, perm]), plain(x)[:, perm], rtol=1e-5, atol=1e-6)
    for kwargs in ({"rope": True, "lepe": False}, {"rope": False, "lepe": True}):
        layer = MLLALinearAttention(8, 4, 4, n_heads=2, **kwargs)
        assert not torch.allclose(layer(x[:, perm]), layer(x)[:, perm], atol=1e-4)


def test_block_keeps_shape_and_has_the_released_parts():
    torch.manual_seed(0)
    block = MLLABlock(16, 4, 4, n_heads=2)
    x = torch.randn(3, 16, 16)
    assert block(x).shape == x.shape
    names = {n for n, _ in block.named_children()}
    assert {"cpe1", "in_proj", "act_proj", "dwc", "attn", "out_proj", "cpe2", "mlp"} <= names
    assert not hasattr(block.attn, "v")  # no V projection: only q and k are projected
    assert block.attn.qk.out_features == 2 * 16
