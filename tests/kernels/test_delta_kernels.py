"""The delta-rule kernels = lesson 09's float64 recurrent definition: outputs and final states on
awkward lengths, D != E, fp32 and bf16, fla's layout; the decode step after a prefill equals the
full forward; gradients through the autograd wrapper; every access in bounds.

Runs in Triton's CPU interpreter when there is no GPU (small B*H there), and on a GPU as is.
"""

import pytest
import torch
import torch.nn.functional as F

from lintutor.delta import delta_rule_recurrent, delta_rule_step
from lintutor.delta_gated import gated_delta_rule_chunked, gated_delta_rule_recurrent
from lintutor.kernels._common import device, next_pow2
from lintutor.kernels.checked import checked_launch
from lintutor.kernels.delta import (
    delta_rule_step_triton,
    delta_rule_triton,
    gated_delta_rule_step_triton,
    gated_delta_rule_triton,
)
from lintutor.kernels.delta_bodies import _decode_kernel, _scan_kernel, _ut_kernel, ut_chunks

from reference import assert_close, gen

DEV = device()
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}  # relative L2 error of o and S


def delta_inputs(B, H, T, D, E, dtype, seed=0, gate_scale=1.0):
    """q (scaled by D^-0.5 through `scale`), unit keys, v, beta in (0, 2), g <= 0, S0 (fp32)."""
    g = gen(seed)
    q = torch.randn(B, H, T, D, generator=g)
    k = F.normalize(torch.randn(B, H, T, D, generator=g), dim=-1)
    v = torch.randn(B, H, T, E, generator=g)
    beta = 2 * torch.rand(B, H, T, generator=g)
    log_a = -gate_scale * torch.rand(B, H, T, generator=g)
    S0 = torch.randn(B, H, D, E, generator=g)
    qkv = [x.to(DEV, dtype) for x in (q, k, v)]
    return qkv + [x.to(DEV) for x in (beta, log_a, S0)]


def reference(q, k, v, beta, g, S0, scale):
    """float64 recurrent definition on the same (rounded) inputs: (o, final state)."""
    args = [x.double().cpu() for x in (q, k, v, beta)]
    S0 = None if S0 is None else S0.double().cpu()
    if g is None:
        return delta_rule_recurrent(*args, S0, True, scale=scale)
    return gated_delta_rule_recurrent(*args, g.double().cpu(), S0, True, scale=scale)


@pytest.mark.parametrize("T", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_forward_matches_the_recurrent_definition_fp32(T, gated):
    B, H, D, E = (1, 1, 16, 32) if T == 300 else (2, 1, 32, 16)  # D != E both ways
    q, k, v, beta, g, S0 = delta_inputs(B, H, T, D, E, torch.float32, seed=T)
    scale = D**-0.5
    if gated:
        o, S = gated_delta_rule_triton(q, k, v, beta, g, S0, True, scale=scale)
    else:
        o, S = delta_rule_triton(q, k, v, beta, S0, True, scale=scale)
    assert o.shape == (B, H, T, E) and o.dtype == torch.float32 and S.dtype == torch.float32
    ro, rS = reference(q, k, v, beta, g if gated else None, S0, scale)
    assert_close("o", ro, o, rel=TOL[torch.float32])
    assert_close("S", rS, S, rel=TOL[torch.float32])


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_forward_with_b_and_h_above_one_odd_t_and_an_initial_state(gated):
    B, H, T, D, E = 2, 3, 37, 16, 24  # odd T, one partial chunk, D != E
    q, k, v, beta, g, S0 = delta_inputs(B, H, T, D, E, torch.float32, seed=11)
    if gated:
        o, S = gated_delta_rule_triton(q, k, v, beta, g, S0, True, scale=0.3)
    else:
        o, S = delta_rule_triton(q, k, v, beta, S0, True, scale=0.3)
    ro, rS = reference(q, k, v, beta, g if gated else None, S0, 0.3)
    assert_close("o", ro, o, rel=TOL[torch.float32])
    assert_close("S", rS, S, rel=TOL[torch.float32])


@pytest.mark.parametrize("T", [65, 300])
def test_forward_in_bf16_is_close_and_keeps_an_fp32_state(T):
    q, k, v, beta, g, S0 = delta_inputs(1, 1, T, 32, 32, torch.bfloat16, seed=1, gate_scale=0.1)
    o, S = gated_delta_rule_triton(q, k, v, beta, g, S0, True, scale=32**-0.5)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    ro, rS = reference(q, k, v, beta, g, S0, 32**-0.5)
    assert_close("o", ro, o, rel=TOL[torch.bfloat16])
    assert_close("S", rS, S, rel=TOL[torch.bfloat16])


def test_forward_takes_flas_layout_strides_and_no_initial_state():
    """(B, T, H, D) storage seen as (B, H, T, D): the kernels read the strides, no copy."""
    q, k, v, beta, g, _ = delta_inputs(2, 2, 70, 16, 16, torch.float32, seed=2)
    fla = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v, beta, g)]
    assert not fla[0].is_contiguous() and not fla[3].is_contiguous()
    o = gated_delta_rule_triton(*fla, scale=0.25)
    assert_close("o", reference(q, k, v, beta, g, None, 0.25)[0], o, rel=TOL[torch.float32])


def test_forward_with_e_larger_than_a_block_and_several_e_blocks():
    q, k, v, beta, g, S0 = delta_inputs(1, 1, 100, 16, 80, torch.float32, seed=4)  # E = 80
    o, S = gated_delta_rule_triton(q, k, v, beta, g, S0, True)
    ro, rS = reference(q, k, v, beta, g, S0, 1.0)
    assert_close("o", ro, o, rel=TOL[torch.float32])
    assert_close("S", rS, S, rel=TOL[torch.float32])


def test_ut_pass_writes_the_inverse_times_diag_beta_and_zeros_above():
    _, k, _, beta, g, _ = delta_inputs(1, 1, 70, 16, 16, torch.float32, seed=5)
    t = ut_chunks(k, beta, g)  # (B*H, T, 64)
    for start in (0, 64):
        n = min(64, 70 - start)
        kc, bc, gc = (x[:, :, start : start + n].double().cpu() for x in (k, beta, g))
        G = torch.cumsum(gc, -1)[0, 0]  # (n,)
        A = (bc[0, 0, :, None] * (kc[0, 0] @ kc[0, 0].T) * torch.exp(G[:, None] - G)).tril(-1)
        want = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + A) * bc[0, 0]  # T diag(b)
        got = t[0, start : start + n].double().cpu()  # (n, 64)
        assert_close("T'", want, got[:, :n], rel=1e-5)
        assert (got[:, n:] == 0).all()


@pytest.mark.parametrize(
    "gated,dtype",
    [(True, torch.float32), (False, torch.bfloat16)],
    ids=["gated-fp32", "delta-bf16"],
)
def test_decode_after_a_prefill_equals_the_full_forward(gated, dtype):
    B, H, T, D, E = 2, 1, 66, 16, 48
    q, k, v, beta, g, S0 = delta_inputs(B, H, T, D, E, dtype, seed=6, gate_scale=0.1)
    gate = g if gated else None
    pre = [x[:, :, : T - 1] for x in (q, k, v, beta)]
    last = [x[:, :, T - 1] for x in (q, k, v, beta)]
    if gated:
        full, S_full = gated_delta_rule_triton(q, k, v, beta, g, S0, True, scale=0.5)
        _, S = gated_delta_rule_triton(*pre, g[:, :, : T - 1], S0, True, scale=0.5)
        o_t, S_t = gated_delta_rule_step_triton(*last, g[:, :, T - 1], S, scale=0.5)
    else:
        full, S_full = delta_rule_triton(q, k, v, beta, S0, True, scale=0.5)
        _, S = delta_rule_triton(*pre, S0, True, scale=0.5)
        o_t, S_t = delta_rule_step_triton(*last, S, scale=0.5)
    tol = TOL[dtype]
    assert_close("o_t", full[:, :, T - 1], o_t, rel=tol)
    assert_close("S", S_full, S_t, rel=tol)
    ro, rS = reference(q, k, v, beta, gate, S0, 0.5)
    assert_close("o_t vs float64", ro[:, :, T - 1], o_t, rel=tol)
    assert_close("S vs float64", rS, S_t, rel=tol)


def test_decode_in_place_and_from_flas_layout_matches_the_package_step():
    B, H, D, E = 3, 2, 16, 32
    q, k, v, beta, _, S0 = delta_inputs(B, 1, H, D, E, torch.float32, seed=7)
    # fla's one-token layout (B, 1, H, D) seen as (B, H, D): batch stride H * D
    q_t, k_t, v_t, b_t = (x[:, 0] for x in (q, k, v, beta))  # (B, H, D|E), (B, H)
    S = torch.randn(B, H, D, E, generator=gen(8)).to(DEV)
    want_o, want_S = delta_rule_step(*(x.double().cpu() for x in (q_t, k_t, v_t, b_t)),
                                     S.double().cpu())  # fmt: skip
    o_t, S_new = delta_rule_step_triton(q_t, k_t, v_t, b_t, S, out_state=S)
    assert S_new.data_ptr() == S.data_ptr()
    assert_close("o_t", want_o, o_t, rel=TOL[torch.float32])
    assert_close("S", want_S, S, rel=TOL[torch.float32])


def test_gradients_flow_through_the_kernel_forward():
    q, k, v, beta, g, S0 = delta_inputs(1, 2, 70, 16, 16, torch.float32, seed=9)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, beta, g, S0)]
    o, S = gated_delta_rule_triton(*leaves, output_final_state=True, scale=0.3)
    do, dS = torch.randn(o.shape, generator=gen(1)), torch.randn(S.shape, generator=gen(2))
    torch.autograd.backward([o, S], [do.to(DEV), dS.to(DEV)])
    ref = [x.detach().double().cpu().requires_grad_() for x in (q, k, v, beta, g, S0)]
    ro, rS = gated_delta_rule_chunked(*ref, output_final_state=True, scale=0.3)
    torch.autograd.backward([ro, rS], [do.double(), dS.double()])
    for name, x, r in zip(("dq", "dk", "dv", "dbeta", "dg", "dS0"), leaves, ref):
        assert_close(name, r.grad, x.grad, rel=1e-4)


def test_an_empty_sequence_returns_no_outputs_and_the_initial_state():
    q, k, v, beta, g, S0 = delta_inputs(1, 2, 0, 16, 16, torch.float32)
    o, S = gated_delta_rule_triton(q, k, v, beta, g, S0, True)
    assert o.shape == (1, 2, 0, 16)
    assert_close("S", S0, S)


def test_inputs_are_checked_with_names():
    q, k, v, beta, g, S0 = delta_inputs(1, 1, 5, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="chunk_size"):
        delta_rule_triton(q, k, v, beta, chunk_size=32)
    with pytest.raises(Exception, match="beta"):
        delta_rule_triton(q, k, v, beta[:, :, :4])
    with pytest.raises(TypeError, match="g: the gated forms"):
        gated_delta_rule_triton(q, k, v, beta, None)
    with pytest.raises(TypeError, match="state: the decode kernel keeps"):
        delta_rule_step_triton(q[:, :, 0], k[:, :, 0], v[:, :, 0], beta[:, :, 0], S0.double())


def test_every_kernel_stays_in_bounds_under_the_checked_launcher():
    """Guard-padded buffers: an out-of-bounds read or write, or an unwritten output, fails."""
    B, H, T, D, E = 1, 2, 70, 16, 32  # T not a multiple of 64
    q, k, v, beta, g, S0 = (x.contiguous() for x in delta_inputs(B, H, T, D, E, torch.float32))
    t = torch.zeros(B * H, T, 64, device=DEV)
    checked_launch(_ut_kernel, (2, B * H), k, beta, g, t, T, H, *k.stride(), *beta.stride(),
                   *g.stride(), outputs=("t_ptr",), D=D, BD=16, USE_G=True, UPCAST=True,
                   PREC="ieee")  # fmt: skip
    assert_close("T' under the checked launcher", ut_chunks(k, beta, g), t)
    o = torch.zeros(B, H, T, E, device=DEV)
    st = torch.zeros(B, H, D, E, device=DEV)
    s0 = S0.reshape(B * H, D, E).contiguous()
    checked_launch(_scan_kernel, (2, B * H), q, k, v, g, t, o, s0, st, T, H, 1.0, *q.stride(),
                   *k.stride(), *v.stride(), *g.stride(), *o.stride(), outputs=("o_ptr", "st_ptr"),
                   D=D, E=E, BD=16, BE=16, USE_G=True, HAS_S0=True, STORE_ST=True, UPCAST=True,
                   PREC="ieee")  # fmt: skip
    ro, rS = reference(q, k, v, beta, g, S0, 1.0)
    assert_close("o", ro, o, rel=TOL[torch.float32])
    assert_close("S", rS, st, rel=TOL[torch.float32])
    q_t, k_t, v_t, b_t, g_t = (x[:, :, 0].contiguous() for x in (q, k, v, beta, g))
    o_t, S1 = torch.zeros(B, H, E, device=DEV), torch.zeros_like(S0)
    checked_launch(_decode_kernel, (2, B * H), q_t, k_t, v_t, b_t, g_t, S0.contiguous(), o_t, S1,
                   H, 1.0, *q_t.stride()[:2], *k_t.stride()[:2], *v_t.stride()[:2],
                   *b_t.stride(), *g_t.stride(), *o_t.stride()[:2], outputs=("o_ptr", "snew_ptr"),
                   D=D, E=E, BD=next_pow2(D), BE=16, USE_G=True)  # fmt: skip
    assert_close("S after one step", gated_delta_rule_step_triton(q_t, k_t, v_t, b_t, g_t, S0)[1],
                 S1, rel=1e-6)  # fmt: skip


def test_launchers_share_the_pytorch_forms_signatures():
    """Each kernel launcher takes its PyTorch form's parameters, in order, with its defaults; the
    decode steps add only out_state (update the state in place), as lesson 08's step does."""
    import inspect

    from lintutor.delta import delta_rule_chunked
    from lintutor.delta_gated import gated_delta_rule_step

    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(delta_rule_triton) == params(delta_rule_chunked)
    assert params(gated_delta_rule_triton) == params(gated_delta_rule_chunked)
    assert params(delta_rule_step_triton) == params(delta_rule_step) + [("out_state", None)]
    assert params(gated_delta_rule_step_triton) == params(gated_delta_rule_step) + [
        ("out_state", None)
    ]
