"""Triton kernels = lesson 03's references: outputs, final states, gradients, decode, non-causal.

Runs in Triton's CPU interpreter when there is no GPU (small B*H there), and on a GPU as is.
"""

import os

import pytest
import torch

import lintutor.kernels as K
from lintutor.causal import causal_linear_attention_parallel, causal_linear_attention_step
from lintutor.kernels._interpret import device
from lintutor.kernels.checked import KernelCheckError, checked_launch, explain_error
from lintutor.kernels.chunked import chunk_scan
from lintutor.kernels.chunked_bwd import ChunkedLinearAttention, chunk_bwd, dkdv

DEV = device()
TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}  # relative L2 error


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def inputs(B, H, T, D, E, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, T, D, generator=g) / D**0.5 for _ in range(2))
    v = torch.randn(B, H, T, E, generator=g)
    S0 = torch.randn(B, H, D, E, generator=g)
    return [x.to(DEV, dtype) for x in (q, k, v)] + [S0.to(DEV)]


def reference(q, k, v, S0, normalize=False):
    """float64 lesson-03 parallel form on the same (rounded) inputs."""
    return causal_linear_attention_parallel(
        q.double().cpu(), k.double().cpu(), v.double().cpu(), normalize=normalize,
        initial_state=None if S0 is None else S0.double().cpu(), output_final_state=True,
    )  # fmt: skip


@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_chunked_forward_matches_parallel_with_states(T, dtype):
    q, k, v, S0 = inputs(1, 2, T, 32, 16, dtype)
    o, S = K.causal_linear_attention_triton(
        q, k, v, normalize=False, initial_state=S0, output_final_state=True
    )
    ro, rS = reference(q, k, v, S0)
    assert o.dtype == dtype and o.shape == (1, 2, T, 16) and S.dtype == torch.float32
    assert rel(o, ro) < TOL[dtype]
    assert rel(S, rS) < 1e-5


@pytest.mark.parametrize("segments", [2, 3])
@pytest.mark.parametrize("reverse", [False, True])
def test_segmented_scan_matches_one_segment_and_reverse_is_flipped(segments, reverse):
    q, k, v, S0 = inputs(2, 1, 200, 16, 32, torch.float32, seed=1)
    o, S = chunk_scan(q, k, v, S0, reverse=reverse, output_final_state=True, num_segments=segments)
    if reverse:  # a reverse scan is the forward scan of the time-reversed sequence
        ro, rS = reference(q.flip(2), k.flip(2), v.flip(2), S0)
        ro = ro.flip(2)
    else:
        ro, rS = reference(q, k, v, S0)
    assert rel(o, ro) < 1e-5 and rel(S, rS) < 1e-5


def test_chunked_accepts_fla_layout_strides_without_copy():
    q, k, v, _ = inputs(1, 2, 70, 16, 16, torch.float32)
    qt, kt, vt = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert not qt.is_contiguous()
    o = K.causal_linear_attention_triton(qt, kt, vt, normalize=False)
    assert rel(o, reference(q, k, v, None)[0]) < 1e-5


@pytest.fixture(params=["onepass", "dkdv", "scans"])
def backward_version(request, monkeypatch):
    """Every backward version that ships (chunked_bwd.py: v3 one pass, v2 dk/dv, v1 scans)."""
    monkeypatch.setattr(ChunkedLinearAttention, "backward_version", request.param)
    return request.param


@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
def test_chunked_gradients_match_autograd_of_parallel(T, backward_version):
    B, H, D, E = (1, 1, 16, 32) if T == 1000 else (2, 1, 32, 16)
    q, k, v, S0 = inputs(B, H, T, D, E, torch.float32, seed=T)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, S0)]
    o, S = K.causal_linear_attention_triton(
        *leaves[:3], normalize=False, initial_state=leaves[3], output_final_state=True
    )
    g = torch.Generator().manual_seed(7)
    do, dS = torch.randn(o.shape, generator=g).to(DEV), torch.randn(S.shape, generator=g).to(DEV)
    torch.autograd.backward([o, S], [do, dS])
    ref_leaves = [x.detach().double().cpu().requires_grad_() for x in (q, k, v, S0)]
    ro, rS = causal_linear_attention_parallel(
        *ref_leaves[:3], normalize=False, initial_state=ref_leaves[3], output_final_state=True
    )
    torch.autograd.backward([ro, rS], [do.double().cpu(), dS.double().cpu()])
    for name, x, r in zip(("dq", "dk", "dv", "dS0"), leaves, ref_leaves):
        assert rel(x.grad, r.grad) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chunked_gradients_in_half_precision_are_close(dtype, backward_version):
    q, k, v, S0 = inputs(1, 2, 65, 32, 16, dtype, seed=3)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o = K.causal_linear_attention_triton(*leaves, normalize=False, initial_state=S0)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1)).to(DEV, o.dtype)
    o.backward(do)
    ref_leaves = [x.detach().double().cpu().requires_grad_() for x in (q, k, v)]
    ro = causal_linear_attention_parallel(
        *ref_leaves, normalize=False, initial_state=S0.double().cpu()
    )
    ro.backward(do.double().cpu())
    for x, r in zip(leaves, ref_leaves):
        assert x.grad.dtype == dtype and rel(x.grad, r.grad) < TOL[dtype]


@pytest.mark.parametrize("segments", [2, 3])
def test_fused_dkdv_with_segments_matches_the_scans(segments):
    q, k, v, _ = inputs(2, 1, 200, 16, 32, torch.float32, seed=5)
    g = torch.Generator().manual_seed(2)
    do = torch.randn(v.shape, generator=g).to(DEV)
    dS = torch.randn(2, 1, 16, 32, generator=g).to(DEV)
    dk, dv, dS0 = dkdv(q, k, v, do, dS, output_dS0=True, chunk_size=16, num_segments=segments)
    _, rk, rv, rS0 = chunk_bwd(q, k, v, do, None, dS, 16, need_dS0=True, backward="scans")
    assert rel(dk, rk) < 1e-5 and rel(dv, rv) < 1e-5 and rel(dS0, rS0) < 1e-5


def test_gradients_in_fla_layout_strides(backward_version):
    q, k, v, _ = inputs(1, 2, 70, 16, 32, torch.float32, seed=6)
    dense = [x.clone().requires_grad_() for x in (q, k, v)]
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for x in (q, k, v)]
    do = torch.randn(v.shape, generator=torch.Generator().manual_seed(3)).to(DEV)
    for leaves in (dense, strided):
        K.causal_linear_attention_triton(*leaves, normalize=False).backward(do)
    for a, b in zip(strided, dense):
        assert rel(a.grad, b.grad) < 1e-6


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
    assert rel(o, ro) < 1e-5 and rel(S, rS) < 1e-5 and rel(z, rz) < 1e-5
    o.sum().backward()
    ref_leaves = [x.detach().double().cpu().requires_grad_() for x in (q, k, v)]
    causal_linear_attention_parallel(*ref_leaves, normalize=True).sum().backward()
    ref_no_state = [r.grad for r in ref_leaves]
    leaves2 = [x.clone().requires_grad_() for x in (q, k, v)]
    K.causal_linear_attention_triton(*leaves2, normalize=True).sum().backward()
    for x, r in zip(leaves2, ref_no_state):
        assert rel(x.grad, r) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_matches_lesson03_step(dtype):
    B, H, D, E = 3, 2, 32, 48
    g = torch.Generator().manual_seed(5)
    q, k = (torch.randn(B, H, D, generator=g).to(DEV, dtype) for _ in range(2))
    v = torch.randn(B, H, E, generator=g).to(DEV, dtype)
    S = torch.randn(B, H, D, E, generator=g).to(DEV)
    o, S1 = K.causal_linear_attention_step_triton(q, k, v, S)
    ro, rS = causal_linear_attention_step(
        q.double().cpu(), k.double().cpu(), v.double().cpu(), S.double().cpu(), normalize=False
    )
    assert o.dtype == dtype and rel(o, ro) < TOL[dtype] and rel(S1, rS) < 1e-6
    S_inplace = S.clone()
    K.causal_linear_attention_step_triton(q, k, v, S_inplace, out_state=S_inplace)
    assert torch.equal(S_inplace, S1)


def test_decode_steps_continue_the_chunked_prefill():
    q, k, v, _ = inputs(2, 1, 40, 16, 16, torch.float32, seed=6)
    _, S = K.causal_linear_attention_triton(q[:, :, :37], k[:, :, :37], v[:, :, :37],
                                            normalize=False, output_final_state=True)  # fmt: skip
    outs = []
    for t in range(37, 40):
        o_t, S = K.causal_linear_attention_step_triton(q[:, :, t], k[:, :, t], v[:, :, t], S)
        outs.append(o_t)
    ro, _ = reference(q, k, v, None)
    assert rel(torch.stack(outs, 2), ro[:, :, 37:]) < 1e-5


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("T", [1, 65])
def test_noncausal_kernel_matches_lesson02_linear_attention(normalize, T):
    from lintutor.linear import linear_attention

    q, k, v, _ = inputs(2, 1, T, 16, 32, torch.float32, seed=8)
    q, k = q.abs(), k.abs()
    o = K.linear_attention_triton(q, k, v, normalize=normalize)
    ro = linear_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(), normalize=normalize)
    assert rel(o, ro) < 1e-5


def test_noncausal_kernel_with_segments_matches(monkeypatch):
    from lintutor.kernels import linear_attention as la
    from lintutor.linear import linear_attention

    monkeypatch.setattr(la, "_num_sms", lambda device: 8)  # 2 heads -> 8 segments of T=500
    q, k, v, _ = inputs(2, 1, 500, 16, 32, torch.float32, seed=9)
    q, k = q.abs(), k.abs()
    o = K.linear_attention_triton(q, k, v, normalize=False)
    ro = linear_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(), normalize=False)
    assert rel(o, ro) < 1e-5


def test_kernel_rejects_bad_shapes_and_dtypes():
    q, k, v, _ = inputs(1, 1, 8, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="v"):
        K.causal_linear_attention_triton(q, k, v[:, :, :5], normalize=False)
    with pytest.raises(TypeError, match="float"):
        K.causal_linear_attention_triton(q.double(), k.double(), v.double(), normalize=False)
    with pytest.raises(ValueError, match="16 <= D"):
        K.causal_linear_attention_triton(q[..., :8], k[..., :8], v, normalize=False)


# --- the checked launcher ---------------------------------------------------------------------

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _add_ok(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(
        out_ptr + offs,
        tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask),
        mask=mask,
    )


@triton.jit
def _add_unmasked_store(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(
        out_ptr + offs,
        tl.load(x_ptr + offs, mask=mask, other=0.0) + tl.load(y_ptr + offs, mask=mask, other=0.0),
    )


@triton.jit
def _shift_reads_past_the_end(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n  # right for the store, one short for the shifted load of x
    tl.store(
        out_ptr + offs,
        tl.load(x_ptr + offs + 1, mask=mask) + tl.load(y_ptr + offs, mask=mask),
        mask=mask,
    )


def _xy(n=100):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, generator=g).to(DEV), torch.randn(n, generator=g).to(DEV)


def test_checked_launch_passes_a_correct_kernel_and_copies_the_output_back():
    x, y = _xy()
    out = torch.empty_like(x)
    checked_launch(_add_ok, (4,), x, y, out, 100, BLOCK=32, outputs=("out_ptr",))
    assert torch.equal(out, x + y)


def test_checked_launch_names_the_program_and_offsets_of_an_out_of_bounds_write():
    x, y = _xy()
    with pytest.raises(
        KernelCheckError, match=r"write to 'out_ptr'.*program \(3, 0, 0\).*100\.\.127"
    ):
        checked_launch(_add_unmasked_store, (4,), x, y, torch.empty_like(x), 100, BLOCK=32,
                       outputs=("out_ptr",))  # fmt: skip


def test_checked_launch_reports_an_out_of_bounds_read_and_its_program():
    x, y = _xy()
    with pytest.raises(KernelCheckError, match=r"out-of-bounds read.*\[99\].*program \(3, 0, 0\)"):
        checked_launch(_shift_reads_past_the_end, (4,), x, y, torch.empty_like(x), 100, BLOCK=32,
                       outputs=("out_ptr",))  # fmt: skip


def test_checked_launch_reports_unwritten_outputs_when_the_grid_is_too_small():
    x, y = _xy()
    with pytest.raises(KernelCheckError, match=r"4 of 100 elements that no program wrote"):
        checked_launch(
            _add_ok, (3,), x, y, torch.empty_like(x), 100, BLOCK=32, outputs=("out_ptr",)
        )


def test_explain_error_translates_known_cryptic_errors():
    assert "power of two" in explain_error(ValueError("arange's range must be a power of 2"))
    assert "TRITON_INTERPRET" in explain_error(
        RuntimeError("0 active drivers ([]). There should only be one.")
    )
    assert explain_error(RuntimeError("something else")) is None


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter only")
def test_interpreter_translation_says_variable_set_too_late():
    class JITFunction:  # stands in for a kernel compiled before TRITON_INTERPRET was set
        pass

    msg = explain_error(RuntimeError("0 active drivers ([])"), JITFunction())
    assert "after triton was imported" in msg


@pytest.mark.parametrize("D,E", [(64, 128), (128, 64), (128, 128)])
def test_chunked_forward_large_head_dims(D, E):
    q, k, v, S0 = inputs(1, 1, 130, D, E, torch.bfloat16, seed=9)
    o, S = K.causal_linear_attention_triton(
        q, k, v, normalize=False, initial_state=S0, output_final_state=True
    )
    ro, rS = reference(q, k, v, S0)
    assert rel(o, ro) < 2e-2 and rel(S, rS) < 1e-5


def test_gradients_when_only_the_final_state_or_only_the_output_is_used(backward_version):
    q, k, v, S0 = inputs(1, 2, 70, 16, 32, torch.float32, seed=8)
    for use in ("state", "output"):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, S0)]
        o, S = K.causal_linear_attention_triton(
            *leaves[:3], normalize=False, initial_state=leaves[3], output_final_state=True
        )
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
                assert rel(x.grad, r.grad) < 1e-5, (use, name)
