import pytest
import torch

from lintutor import softmax as sm
from lintutor._validate import ShapeError


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [1, 7, 16])
def test_loops_equal_matrix_equal_sdpa(T, causal):
    g = torch.Generator().manual_seed(T)
    q, k = (torch.randn(2, 3, T, 5, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, T, 4, generator=g, dtype=torch.float64)
    loops = sm.softmax_attention_loops(q, k, v, causal)
    matrix = sm.softmax_attention(q, k, v, causal)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(loops, matrix, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(matrix, sdpa, rtol=1e-12, atol=1e-12)


def test_multihead_equals_nn_multiheadattention():
    C, H = 12, 3
    mha = torch.nn.MultiheadAttention(C, H, bias=False, batch_first=True).double()
    w_q, w_k, w_v = (w.T for w in mha.in_proj_weight.detach().chunk(3))
    x = torch.randn(2, 6, C, dtype=torch.float64)
    ours = sm.multihead_attention(x, w_q, w_k, w_v, mha.out_proj.weight.detach().T, H, causal=True)
    theirs, _ = mha(x, x, x, attn_mask=~sm.causal_mask(6), need_weights=False)
    torch.testing.assert_close(ours, theirs)


def test_split_merge_roundtrip():
    x = torch.randn(2, 5, 12)
    assert sm.split_heads(x, 4).shape == (2, 4, 5, 3)
    assert torch.equal(sm.merge_heads(sm.split_heads(x, 4)), x)


def test_causal_weights_hide_the_future():
    q, k = torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4)
    w = sm.attention_weights(q, k, causal=True)[0, 0]
    assert torch.all(w.triu(1) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(6))


def test_wrong_shapes_name_argument_expected_and_actual():
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    v = torch.randn(2, 2, 5, 4)
    with pytest.raises(ShapeError, match=r"v: expected shape .*\(2, 3, 5, E\).*got \(2, 2, 5, 4\)"):
        sm.softmax_attention(q, k, v)
    with pytest.raises(ShapeError, match="q: expected 4 dimensions"):
        sm.softmax_attention(q[0], k, v)
    with pytest.raises(ValueError, match="not divisible by n_heads=5"):
        sm.split_heads(torch.randn(1, 2, 12), 5)
