"""The non-causal kernel = lesson 02's linear_attention, with and without segments."""

import pytest
import torch

import lintutor.kernels as K
from lintutor.kernels import linear as klinear
from lintutor.kernels._common import device
from lintutor.linear import linear_attention

from reference import assert_close, kernel_inputs

DEV = device()


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("T", [1, 65])
def test_noncausal_kernel_matches_lesson02_linear_attention(normalize, T):
    q, k, v, _ = kernel_inputs(2, 1, T, 16, 32, torch.float32, DEV, seed=8)
    q, k = q.abs(), k.abs()
    o = K.linear_attention_triton(q, k, v, normalize=normalize)
    ro = linear_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(), normalize=normalize)
    assert_close("o", ro, o, rel=1e-5)


def test_noncausal_kernel_with_segments_matches(monkeypatch):
    monkeypatch.setattr(klinear, "num_sms", lambda device: 8)  # 2 heads -> 8 segments of T=500
    q, k, v, _ = kernel_inputs(2, 1, 500, 16, 32, torch.float32, DEV, seed=9)
    q, k = q.abs(), k.abs()
    o = K.linear_attention_triton(q, k, v, normalize=False)
    ro = linear_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(), normalize=False)
    assert_close("o", ro, o, rel=1e-5)
