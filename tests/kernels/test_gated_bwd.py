"""Gradients of the gated kernel = autograd of lesson 04's float64 parallel form: q, k, v, the
log-gates g and the initial state, every backward version, awkward lengths, strong gates, half
precision, fla's layouts as strided views, one output unused, the normalized form, and the
fused dk/dv kernel with segments.

Runs in Triton's CPU interpreter when there is no GPU (small B*H there), and on a GPU as is.
"""

import pytest
import torch

import lintutor.kernels as K
from lintutor.gated import gated_linear_attention_parallel
from lintutor.kernels._common import device
from lintutor.kernels.chunked_bwd import chunk_bwd, dkdv

from .test_gated import TOL, gates
from reference import assert_close, gen, kernel_inputs

DEV = device()
NAMES = ("dq", "dk", "dv", "dg", "dS0")


@pytest.fixture(params=["onepass", "dkdv", "scans"])
def backward_version(request):
    """Every backward version that ships (chunked_bwd.py: v3 one pass, v2 dk/dv, v1 scans)."""
    return request.param


def _grads(q, k, v, g, S0, backward, normalize=False, use=("o", "S"), seed=7):
    """(kernel's gradients, lesson 04's float64 gradients) of random cotangents of o and S."""
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, S0)]
    ref = [x.detach().double().cpu().requires_grad_() for x in (q, k, v, g, S0)]
    o, S = K.gated_linear_attention_triton(*leaves[:4], normalize=normalize,
                                           initial_state=leaves[4], output_final_state=True,
                                           backward=backward)  # fmt: skip
    ro, rS = gated_linear_attention_parallel(*ref[:4], normalize=normalize, initial_state=ref[4],
                                             output_final_state=True)  # fmt: skip
    gn = gen(seed)
    do = torch.randn(o.shape, generator=gn).to(DEV, o.dtype)
    dS = torch.randn(S.shape, generator=gn).to(DEV)
    outs = [(o, ro, do), (S, rS, dS)]
    chosen = [x for x, name in zip(outs, ("o", "S")) if name in use]
    torch.autograd.backward([x[0] for x in chosen], [x[2] for x in chosen])
    torch.autograd.backward([x[1] for x in chosen], [x[2].double().cpu() for x in chosen])
    return [x.grad for x in leaves], [r.grad for r in ref]


@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
def test_gated_gradients_match_autograd_of_lesson04(T, backward_version):
    B, H, D, E = (1, 1, 16, 32) if T == 1000 else (2, 1, 32, 16)
    q, k, v, S0 = kernel_inputs(B, H, T, D, E, torch.float32, DEV, seed=T)
    got, want = _grads(q, k, v, gates(B, H, T), S0, backward_version)
    for name, r, x in zip(NAMES, want, got):
        assert_close(name, r, x, rel=1e-4 if name == "dg" else 1e-5)


@pytest.mark.parametrize("T", [65, 200])
def test_gated_gradients_with_strong_gates(T, backward_version):
    q, k, v, S0 = kernel_inputs(1, 2, T, 16, 32, torch.float32, DEV, seed=T + 1)
    got, want = _grads(q, k, v, gates(1, 2, T, "strong"), S0, backward_version)
    for name, r, x in zip(NAMES, want, got):
        assert_close(name, r, x, rel=1e-4 if name == "dg" else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gated_gradients_in_half_precision_are_close(dtype, backward_version):
    q, k, v, S0 = kernel_inputs(1, 2, 65, 32, 16, dtype, DEV, seed=3)
    got, want = _grads(q, k, v, gates(1, 2, 65), S0, backward_version)
    for name, r, x in zip(NAMES, want, got):
        assert x.dtype == (dtype if name in ("dq", "dk", "dv") else torch.float32), name
        assert_close(name, r, x, rel=(3 if name == "dg" else 1) * TOL[dtype])


def test_gated_gradients_in_fla_layout_strides(backward_version):
    q, k, v, S0 = kernel_inputs(1, 2, 70, 16, 32, torch.float32, DEV, seed=6)
    g = gates(1, 2, 70, "strong")
    dense = [x.clone().requires_grad_() for x in (q, k, v, g)]
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for x in (q, k, v)]
    strided.append(g.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_())
    do = torch.randn(v.shape, generator=gen(3)).to(DEV)
    for leaves in (dense, strided):
        o = K.gated_linear_attention_triton(*leaves, backward=backward_version)
        o.backward(do)
    for name, a, b in zip(NAMES, strided, dense):
        assert_close(name, b.grad, a.grad, rel=1e-6)


@pytest.mark.parametrize("use", ["S", "o"])
def test_gated_gradients_when_only_one_output_is_used(use, backward_version):
    """Only S_T used: dg comes from the final state's <dS_T, S_T> term and the k . dk dots alone;
    only o used: no dS_T at all."""
    q, k, v, S0 = kernel_inputs(1, 2, 70, 16, 32, torch.float32, DEV, seed=8)
    got, want = _grads(q, k, v, gates(1, 2, 70), S0, backward_version, use=(use,))
    for name, r, x in zip(NAMES, want, got):
        if r is None:  # S_T does not depend on q: no gradient at all, or zeros
            assert x is None or float(x.abs().max()) == 0, (use, name)
        else:
            assert_close(f"{name} ({use} used)", r, x, rel=1e-4 if name == "dg" else 1e-5)


def test_normalized_gated_gradients_reach_the_gate():
    q, k, v, S0 = kernel_inputs(1, 2, 70, 16, 16, torch.float32, DEV, seed=4)
    q, k = q.abs() + 0.1, k.abs() + 0.1  # positive features, as a feature map gives
    g = gates(1, 2, 70)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g)]
    K.gated_linear_attention_triton(*leaves, normalize=True).square().sum().backward()
    ref = [x.detach().double().cpu().requires_grad_() for x in (q, k, v, g)]
    gated_linear_attention_parallel(*ref, normalize=True).square().sum().backward()
    for name, r, x in zip(NAMES, ref, leaves):
        assert_close(name, r.grad, x.grad, rel=1e-4)


@pytest.mark.parametrize("segments", [2, 3])
def test_gated_fused_dkdv_with_segments_matches_the_scans(segments):
    q, k, v, _ = kernel_inputs(2, 1, 200, 16, 32, torch.float32, DEV, seed=5)
    g = gates(2, 1, 200, "strong")
    gn = gen(2)
    do = torch.randn(v.shape, generator=gn).to(DEV)
    dS = torch.randn(2, 1, 16, 32, generator=gn).to(DEV)
    dk, dv, dS0, kdk = dkdv(q, k, v, do, dS, output_dS0=True, chunk_size=16,
                            num_segments=segments, g=g)  # fmt: skip
    _, rk, rv, rS0, _ = chunk_bwd(q, k, v, do, None, dS, 16, need_dS0=True, backward="scans",
                                  g=g, ST=torch.zeros_like(dS))  # fmt: skip
    assert_close("dk", rk, dk, rel=1e-5)
    assert_close("dv", rv, dv, rel=1e-5)
    assert_close("dS0", rS0, dS0, rel=1e-5)
    assert_close("k . dk", (k * rk).sum(-1), kdk, rel=1e-5)
