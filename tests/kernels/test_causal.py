"""The causal launchers = lesson 03's references: outputs, final states and gradients of every
backward version, the normalized form, decode with and without the normalizer.

Runs in Triton's CPU interpreter when there is no GPU (small B*H there), and on a GPU as is.
"""

import pytest
import torch

import lintutor.kernels as K
from lintutor.causal import causal_linear_attention_parallel, causal_linear_attention_step
from lintutor.kernels._common import device
from lintutor.kernels.chunked_bwd import BACKWARD_VERSIONS

from reference import assert_close, gen, kernel_inputs, parallel_reference, rel_error

DEV = device()
TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}  # relative L2 error


def inputs(B, H, T, D, E, dtype, seed=0):
    return kernel_inputs(B, H, T, D, E, dtype, DEV, seed)


@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_chunked_forward_matches_parallel_with_states(T, dtype):
    q, k, v, S0 = inputs(1, 2, T, 32, 16, dtype)
    o, S = K.causal_linear_attention_triton(
        q, k, v, normalize=False, initial_state=S0, output_final_state=True
    )
    ro, rS = parallel_reference(q, k, v, S0)
    assert o.dtype == dtype and o.shape == (1, 2, T, 16) and S.dtype == torch.float32
    assert_close("o", ro, o, rel=TOL[dtype])
    assert_close("S", rS, S, rel=1e-5)


def test_chunked_accepts_fla_layout_strides_without_copy():
    q, k, v, _ = inputs(1, 2, 70, 16, 16, torch.float32)
    qt, kt, vt = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert not qt.is_contiguous()
    o = K.causal_linear_attention_triton(qt, kt, vt, normalize=False)
    assert_close("o", parallel_reference(q, k, v, None)[0], o, rel=1e-5)


@pytest.fixture(params=["onepass", "dkdv", "scans"])
def backward_version(request):
    """Every backward version that ships (chunked_bwd.py: v3 one pass, v2 dk/dv, v1 scans)."""
    return request.param


@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
def test_chunked_gradients_match_autograd_of_parallel(T, backward_version):
    B, H, D, E = (1, 1, 16, 32) if T == 1000 else (2, 1, 32, 16)
    q, k, v, S0 = inputs(B, H, T, D, E, torch.float32, seed=T)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, S0)]
    o, S = K.causal_linear_attention_triton(
        *leaves[:3], normalize=False, initial_state=leaves[3], output_final_state=True,
        backward=backward_version,
    )  # fmt: skip
    g = gen(7)
    do, dS = torch.randn(o.shape, generator=g).to(DEV), torch.randn(S.shape, generator=g).to(DEV)
    torch.autograd.backward([o, S], [do, dS])
    ref_leaves = [x.detach().double().cpu().requires_grad_() for x in (q, k, v, S0)]
    ro, rS = causal_linear_attention_parallel(
        *ref_leaves[:3], normalize=False, initial_state=ref_leaves[3], output_final_state=True
    )
    torch.autograd.backward([ro, rS], [do.double().cpu(), dS.double().cpu()])
    for name, x, r in zip(("dq", "dk", "dv", "dS0"), leaves, ref_leaves):
        assert_close(name, r.grad, x.grad, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chunked_gradients_in_half_precision_are_close(dtype, backward_version):
    q, k, v, S0 = inputs(1, 2, 65, 32, 16, dtype, seed=3)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o = K.causal_linear_attention_triton(
        *leaves, normalize=False, initial_state=S0, backward=backward_version
    )
    do = torch.randn(o.shape, generator=gen(1)).to(DEV, o.dtype)
    o.backward(do)
    ref_leaves = [x.detach().double().cpu().requires_grad_() for x in (q, k, v)]
    ro = causal_linear_attention_parallel(
        *ref_leaves, normalize=False, initial_state=S0.double().cpu()
    )
    ro.backward(do.double().cpu())
    for name, x, r in zip(("dq", "dk", "dv"), leaves, ref_leaves):
        assert x.grad.dtype == dtype
        assert_close(name, r.grad, x.grad, rel=TOL[dtype])


def test_gradients_in_fla_layout_strides(backward_version):
    q, k, v, _ = inputs(1, 2, 70, 16, 32, torch.float32, seed=6)
    dense = [x.clone().requires_grad_() for x in (q, k, v)]
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for x in (q, k, v)]
    do = torch.randn(v.shape, generator=gen(3)).to(DEV)
    for leaves in (dense, strided):
        o = K.causal_linear_attention_triton(*leaves, normalize=False, backward=backward_version)
        o.backward(do)
    for name, a, b in zip(("dq", "dk", "dv"), strided, dense):
        assert_close(name, b.grad, a.grad, rel=1e-6)


def test_gradients_when_only_the_final_state_or_only_the_output_is_used(backward_version):
    q, k, v, S0 = inputs(1, 2, 70, 16, 32, torch.float32, seed=8)
    for use in ("state", "output"):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, S0)]
        o, S = K.causal_linear_attention_triton(
            *leaves[:3], normalize=False, initial_state=leaves[3], output_final_state=True,
            backward=backward_version,
        )  # fmt: skip
        ((S if use == "state" else o) ** 2).sum().backward()
        ref = [x.detach().double().cpu().requires_grad_() for x in (q, k, v, S0)]
        ro, rS = causal_linear_attention_parallel(
            *ref[:3], normalize=False, initial_state=ref[3], output_final_state=True
        )
        ((rS if use == "state" else ro) ** 2).sum().backward()
        for name, x, r in zip(("dq", "dk", "dv", "dS0"), leaves, ref):
            if r.grad is None or float(r.grad.abs().max()) == 0:
                assert x.grad is None or float(x.grad.abs().max()) == 0, (use, name)
            else:
                assert_close(f"{name} ({use} used)", r.grad, x.grad, rel=1e-5)


def test_backward_version_is_an_argument_and_every_version_gives_the_same_gradients():
    q, k, v, _ = inputs(1, 1, 40, 16, 16, torch.float32, seed=2)
    grads = {}
    for version in BACKWARD_VERSIONS:
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        K.causal_linear_attention_triton(*leaves, normalize=True, backward=version).sum().backward()
        grads[version] = [x.grad for x in leaves]
    for version, got in grads.items():
        assert_close(f"gradients with backward={version!r}", grads["scans"], got, rel=1e-5)
    with pytest.raises(ValueError, match="backward must be one of"):
        K.causal_linear_attention_triton(q, k, v, backward="fast")


def test_normalized_kernel_matches_parallel_with_state_tuple_and_gradients():
    q, k, v, S0 = inputs(1, 2, 70, 16, 16, torch.float32, seed=4)
    q, k = q.abs() + 0.1, k.abs() + 0.1  # positive features, as a feature map gives
    z0 = torch.rand(1, 2, 16).to(DEV)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o, (S, z) = K.causal_linear_attention_triton(
        *leaves, normalize=True, initial_state=(S0, z0), output_final_state=True
    )
    ro, (rS, rz) = causal_linear_attention_parallel(
        *(x.double().cpu() for x in (q, k, v)), normalize=True,
        initial_state=(S0.double().cpu(), z0.double().cpu()), output_final_state=True,
    )  # fmt: skip
    assert_close("o", ro, o, rel=1e-5)
    assert_close("S", rS, S, rel=1e-5)
    assert_close("z", rz, z, rel=1e-5)
    o.sum().backward()
    ref_leaves = [x.detach().double().cpu().requires_grad_() for x in (q, k, v)]
    causal_linear_attention_parallel(*ref_leaves, normalize=True).sum().backward()
    ref_no_state = [r.grad for r in ref_leaves]
    leaves2 = [x.clone().requires_grad_() for x in (q, k, v)]
    K.causal_linear_attention_triton(*leaves2, normalize=True).sum().backward()
    for name, x, r in zip(("dq", "dk", "dv"), leaves2, ref_no_state):
        assert_close(name, r, x.grad, rel=1e-4)


@pytest.mark.parametrize("D,E", [(64, 128), (128, 64), (128, 128)])
def test_chunked_forward_large_head_dims(D, E):
    q, k, v, S0 = inputs(1, 1, 130, D, E, torch.bfloat16, seed=9)
    o, S = K.causal_linear_attention_triton(
        q, k, v, normalize=False, initial_state=S0, output_final_state=True
    )
    ro, rS = parallel_reference(q, k, v, S0)
    assert_close("o", ro, o, rel=2e-2)
    assert_close("S", rS, S, rel=1e-5)


def _step_inputs(B, H, D, E, dtype, normalize, seed=5):
    g = gen(seed)
    q, k = (torch.randn(B, H, D, generator=g).to(DEV, dtype) for _ in range(2))
    v = torch.randn(B, H, E, generator=g).to(DEV, dtype)
    S = torch.randn(B, H, D, E, generator=g).to(DEV)
    if normalize:
        q, k = q.abs() + 0.1, k.abs() + 0.1  # positive features: a positive normalizer
        return q, k, v, (S, torch.rand(B, H, D, generator=g).to(DEV))
    return q, k, v, S


@pytest.mark.parametrize("normalize", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_matches_lesson03_step(dtype, normalize):
    q, k, v, state = _step_inputs(3, 2, 32, 48, dtype, normalize)
    o, new = K.causal_linear_attention_step_triton(q, k, v, state, normalize=normalize)
    as64 = [x.double().cpu() for x in (q, k, v)]
    state64 = tuple(x.double().cpu() for x in state) if normalize else state.double().cpu()
    ro, rnew = causal_linear_attention_step(*as64, state64, normalize=normalize)
    assert o.dtype == dtype
    assert_close("o", ro, o, rel=TOL[dtype])
    assert_close("state", rnew, new, rel=1e-6)
    in_place = tuple(x.clone() for x in state) if normalize else state.clone()
    K.causal_linear_attention_step_triton(q, k, v, in_place, normalize=normalize,
                                          out_state=in_place)  # fmt: skip
    for a, b in zip(in_place if normalize else (in_place,), new if normalize else (new,)):
        assert torch.equal(a, b)


def test_decode_step_defaults_to_the_normalized_step_like_lesson03():
    q, k, v, state = _step_inputs(2, 1, 16, 16, torch.float32, normalize=True)
    o, (S, z) = K.causal_linear_attention_step_triton(q, k, v, state)
    ro, (rS, rz) = causal_linear_attention_step(q, k, v, state)
    assert_close("o", ro, o, rel=1e-5)
    assert_close("z", rz, z, rel=1e-6)
    with pytest.raises(TypeError, match="tuple"):
        K.causal_linear_attention_step_triton(q, k, v, state[0])
    with pytest.raises(TypeError, match="float32"):
        K.causal_linear_attention_step_triton(q, k, v, state[0].double(), normalize=False)


def test_decode_steps_continue_the_chunked_prefill():
    q, k, v, _ = inputs(2, 1, 40, 16, 16, torch.float32, seed=6)
    _, S = K.causal_linear_attention_triton(q[:, :, :37], k[:, :, :37], v[:, :, :37],
                                            normalize=False, output_final_state=True)  # fmt: skip
    outs = []
    for t in range(37, 40):
        o_t, S = K.causal_linear_attention_step_triton(
            q[:, :, t], k[:, :, t], v[:, :, t], S, normalize=False
        )
        outs.append(o_t)
    ro, _ = parallel_reference(q, k, v, None)
    assert_close("o (decode after prefill)", ro[:, :, 37:], torch.stack(outs, 2), rel=1e-5)


def test_normalized_decode_steps_continue_the_normalized_prefill():
    q, k, v, _ = inputs(1, 2, 30, 16, 16, torch.float32, seed=7)
    q, k = q.abs() + 0.1, k.abs() + 0.1
    _, state = K.causal_linear_attention_triton(q[:, :, :27], k[:, :, :27], v[:, :, :27],
                                                output_final_state=True)  # fmt: skip
    outs = []
    for t in range(27, 30):
        o_t, state = K.causal_linear_attention_step_triton(
            q[:, :, t], k[:, :, t], v[:, :, t], state
        )
        outs.append(o_t)
    ro, _ = parallel_reference(q, k, v, None, normalize=True)
    assert_close("o (decode after prefill)", ro[:, :, 27:], torch.stack(outs, 2), rel=1e-5)


def test_kernel_rejects_bad_shapes_and_dtypes():
    q, k, v, _ = inputs(1, 1, 8, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="v"):
        K.causal_linear_attention_triton(q, k, v[:, :, :5], normalize=False)
    with pytest.raises(TypeError, match="float"):
        K.causal_linear_attention_triton(q.double(), k.double(), v.double(), normalize=False)
    with pytest.raises(ValueError, match="16 <= D"):
        K.causal_linear_attention_triton(q[..., :8], k[..., :8], v, normalize=False)


def test_relative_error_helper_is_a_relative_l2_norm():
    a = torch.tensor([3.0, 4.0])
    assert rel_error(a * 1.5, a) == pytest.approx(0.5)
