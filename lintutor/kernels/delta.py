"""The delta rule and the gated delta rule in Triton: public launchers and autograd (lesson 09).

    delta_rule_triton / gated_delta_rule_triton             chunked forward (kernels), any T;
                                                            the forms of `lintutor.delta`
    delta_rule_step_triton / gated_delta_rule_step_triton   one-token decode

The signatures and defaults are those of the forms in `lintutor.delta` and `lintutor.delta_gated`
(beta, then g for the gated ones; scale=1.0; chunk_size=64, the one size the kernels are written
for), and so is the state: S (B, H, D, E), here always fp32. The kernel bodies and their
drivers are in delta_bodies.py.

Gradients: the forward runs the kernels; the backward recomputes the PyTorch chunked form
(`lintutor.delta`) under autograd and differentiates it, so training with these launchers is
as exact as the PyTorch form and no faster than it backward. A backward kernel is not written.
"""

from __future__ import annotations

import torch

from lintutor._validate import check_shapes
from lintutor.delta import delta_rule_chunked
from lintutor.delta_gated import gated_delta_rule_chunked
from lintutor.kernels._common import check_cpu_needs_interpreter, check_kernel_inputs
from lintutor.kernels.delta_bodies import CHUNK, chunk_forward, decode_step


def _check(q, k, v, beta, g, initial_state, chunk_size):
    check_kernel_inputs(q, k, v)
    check_shapes(q=(q, "B H T D"), v=(v, "B H T E"), beta=(beta, "B H T"))
    named = {"beta": beta}
    if g is not None:
        check_shapes(q=(q, "B H T D"), g=(g, "B H T"))
        named["g"] = g
    if initial_state is not None:
        check_shapes(q=(q, "B H T D"), v=(v, "B H T E"), initial_state=(initial_state, "B H D E"))
        named["initial_state"] = initial_state
    for name, x in named.items():
        if not x.is_floating_point() or x.device != q.device:
            raise TypeError(
                f"{name}: expected a floating-point tensor on {q.device}, got {x.dtype} on "
                f"{x.device}"
            )
    if chunk_size != CHUNK:
        raise ValueError(f"chunk_size: the delta-rule kernels are written for 64, got {chunk_size}")


class ChunkedDeltaRule(torch.autograd.Function):
    """(q, k, v, beta, g or None, S_0 or None, want_state, scale, config) -> (o, S_T or None).

    Forward: the Triton kernels. Backward: autograd of the PyTorch chunked form, recomputed.
    """

    @staticmethod
    def forward(ctx, q, k, v, beta, g, initial_state, want_state, scale, config):
        o, S = chunk_forward(q, k, v, beta, g, initial_state, want_state, scale, config)
        ctx.save_for_backward(q, k, v, beta, g, initial_state)
        ctx.scale = scale
        ctx.set_materialize_grads(False)
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, beta, g, S0 = ctx.saved_tensors
        inputs = [x.detach().requires_grad_(need) if x is not None else None
                  for x, need in zip((q, k, v, beta, g, S0), ctx.needs_input_grad)]  # fmt: skip
        with torch.enable_grad():
            qq, kk, vv, bb, gg, ss = inputs
            if gg is None:
                o, S = delta_rule_chunked(qq, kk, vv, bb, ss, True, ctx.scale)
            else:
                o, S = gated_delta_rule_chunked(qq, kk, vv, bb, gg, ss, True, ctx.scale)
            outs, grads = [], []
            for out, grad in ((o, do), (S, dS)):
                if grad is not None:
                    outs.append(out)
                    grads.append(grad.to(out.dtype))
            wanted = [x for x in inputs if x is not None and x.requires_grad]
            found = torch.autograd.grad(outs, wanted, grads, allow_unused=True) if outs else []
        found = iter(found)
        result = []
        for x in inputs:
            if x is not None and x.requires_grad:
                d = next(found)
                result.append(None if d is None else d.to(x.dtype))
            else:
                result.append(None)
        return (*result, None, None, None)


def gated_delta_rule_triton(
    q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0, chunk_size=64
):
    """The gated delta rule, chunked, in Triton; differentiable. O(T*C*(C+D+E) + T*D*E).

    q, k (B, H, T, D), v (B, H, T, E) in fp32/fp16/bf16 with any strides (fla's (B, T, H, D)
    transposed is a view, no copy); beta, g (B, H, T), g <= 0 (not checked here: the check
    would stop the GPU to read g). o in v's dtype; the final state (B, H, D, E) in fp32.
    """
    if g is None:
        raise TypeError("g: the gated forms need log-gates (B, H, T); use delta_rule_triton")
    _check(q, k, v, beta, g, initial_state, chunk_size)
    o, S = ChunkedDeltaRule.apply(q, k, v, beta, g, initial_state, output_final_state, scale, None)
    return (o, S) if output_final_state else o


def delta_rule_triton(
    q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0, chunk_size=64
):
    """The delta rule (no gate), chunked, in Triton; differentiable; see gated_delta_rule_triton."""
    _check(q, k, v, beta, None, initial_state, chunk_size)
    o, S = ChunkedDeltaRule.apply(
        q, k, v, beta, None, initial_state, output_final_state, scale, None
    )
    return (o, S) if output_final_state else o


def _check_step(q_t, k_t, v_t, beta_t, g_t, state, out_state):
    check_shapes(
        q_t=(q_t, "B H D"), k_t=(k_t, "B H D"), v_t=(v_t, "B H E"), beta_t=(beta_t, "B H"),
        state=(state, "B H D E"),
    )  # fmt: skip
    if g_t is not None:
        check_shapes(q_t=(q_t, "B H D"), g_t=(g_t, "B H"))
    for name, x in (("k_t", k_t), ("v_t", v_t)):
        if x.dtype != q_t.dtype or x.device != q_t.device:
            raise TypeError(
                f"{name}: expected {q_t.dtype} on {q_t.device} like q_t, got {x.dtype} on "
                f"{x.device}"
            )
    if state.dtype != torch.float32 or not state.is_contiguous():
        raise TypeError(
            f"state: the decode kernel keeps a contiguous float32 state, got {state.dtype}"
            f"{'' if state.is_contiguous() else ' (not contiguous)'}"
        )
    if out_state is not None and (out_state.shape != state.shape or not out_state.is_contiguous()
                                  or out_state.dtype != torch.float32):  # fmt: skip
        raise TypeError("out_state: expected a contiguous float32 tensor shaped like state")
    check_cpu_needs_interpreter(q_t)


def gated_delta_rule_step_triton(q_t, k_t, v_t, beta_t, g_t, state, scale=1.0, out_state=None):
    """One gated decode step in Triton: (o_t (B, H, E), new state (B, H, D, E) fp32).

    Reads and writes the fp32 state once: the whole memory floor. out_state=state updates it in
    place (a serving loop, a CUDA graph).
    """
    if g_t is None:
        raise TypeError("g_t: the gated step needs log-gates (B, H); use delta_rule_step_triton")
    _check_step(q_t, k_t, v_t, beta_t, g_t, state, out_state)
    return decode_step(q_t, k_t, v_t, beta_t, g_t, state, scale, out_state)


def delta_rule_step_triton(q_t, k_t, v_t, beta_t, state, scale=1.0, out_state=None):
    """One decode step of the delta rule in Triton: (o_t (B, H, E), new state fp32)."""
    _check_step(q_t, k_t, v_t, beta_t, None, state, out_state)
    return decode_step(q_t, k_t, v_t, beta_t, None, state, scale, out_state)
