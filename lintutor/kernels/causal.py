"""Causal linear attention in Triton: the public launchers and the autograd Function (lesson 08).

    causal_linear_attention_triton        chunked forward + backward, any T; lesson 03's forms
    causal_linear_attention_step_triton   one-token decode; lesson 03's causal_linear_attention_step

Both take lesson 03's arguments with the same defaults (tests/test_signatures.py lists the few
extras, each with its reason) and the same state convention: S (B, H, D, E) with
normalize=False, the tuple (S, z) with normalize=True; states are fp32. The kernel bodies and
their drivers are in chunked.py (forward scan), chunked_bwd.py (backward) and decode.py.

The backward version is an argument, not global state: `backward="auto"` (default) picks v3
("onepass") when one program per head fills the GPU, v2 ("dkdv") when T must be cut into
segments, v1 ("scans") when D or E > 64; every version ships and is tested (chunked_bwd.py has
their speeds).
"""

from __future__ import annotations

import torch

from lintutor._validate import check_shapes
from lintutor.causal import initial_state_or_zeros
from lintutor.kernels._common import check_cpu_needs_interpreter, check_kernel_inputs
from lintutor.kernels.chunked import chunk_scan
from lintutor.kernels.chunked_bwd import BACKWARD_VERSIONS, chunk_bwd
from lintutor.kernels.decode import decode_step


class ChunkedLinearAttention(torch.autograd.Function):
    """(q, k, v, S_0, chunk_size, want_state, backward) -> (o, S_T or None); gradients for q, k,
    v, S_0.

    S_T (fp32) is computed only when want_state is set: at T = 512 the (B*H, D, E) state is
    67 MB, 6% of the bytes the forward must move. Gradients that are not used arrive as None
    (not materialized as zeros), so an unused S_T costs the backward nothing either. backward
    is the version of `chunked_bwd.chunk_bwd` the backward pass runs.
    """

    @staticmethod
    def forward(ctx, q, k, v, initial_state, chunk_size, want_state=True, backward="auto"):
        o, S = chunk_scan(
            q, k, v, initial_state, output_final_state=want_state, chunk_size=chunk_size
        )
        ctx.save_for_backward(q, k, v, initial_state)
        ctx.chunk_size, ctx.backward = chunk_size, backward
        ctx.set_materialize_grads(False)
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, S0 = ctx.saved_tensors
        if do is None:
            do = torch.zeros_like(v)
        need_s0 = S0 is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dS0 = chunk_bwd(q, k, v, do, S0, dS, ctx.chunk_size, need_s0, ctx.backward)
        if need_s0:
            dS0 = dS0.to(S0.dtype)
        return dq, dk, dv, dS0, None, None, None


def causal_linear_attention_triton(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6,
    chunk_size=None, backward="auto",
):  # fmt: skip
    """Causal linear attention in Triton, differentiable; the signature of lesson 03's forms.

    normalize=False is plain causal linear attention, state S (B, H, D, E) fp32. normalize=True
    divides by z_t . q_t (+ eps): the denominator is the same scan with v = ones, state (S, z).
    O(T*C*(D+E) + T*D*E) time; gradients flow to q, k, v and the initial state. chunk_size
    (16, 32, 64 or 128) changes the speed, not the result; None picks the tuned one (64), where
    lesson 03's forms default to 64. backward: "auto", "onepass" (v3), "dkdv" (v2) or "scans"
    (v1), the same gradients from each.
    """
    check_kernel_inputs(q, k, v)
    if chunk_size is not None and chunk_size not in (16, 32, 64, 128):
        raise ValueError(f"chunk_size must be 16, 32, 64 or 128 in the kernels, got {chunk_size}")
    if backward not in BACKWARD_VERSIONS:
        raise ValueError(f"backward must be one of {BACKWARD_VERSIONS}, got {backward!r}")
    B, H, T, D = q.shape
    S0 = z0 = None
    if initial_state is not None:  # checked as lesson 03 checks it; None stays None (no load)
        S0, z0 = initial_state_or_zeros(q, v, normalize, initial_state)
    want = output_final_state  # the final states are computed only when returned
    o, S = ChunkedLinearAttention.apply(q, k, v, S0, chunk_size, want, backward)  # (B,H,T,E)
    if not normalize:
        return (o, S) if output_final_state else o
    ones = q.new_ones(B, H, T, 16)  # the normalizer as a scan of v = 1 (16: smallest dot tile)
    zs = None if z0 is None else z0.to(torch.float32).unsqueeze(-1).expand(B, H, D, 16)
    den, zT = ChunkedLinearAttention.apply(q, k, ones, zs, chunk_size, want, backward)
    o = (o.float() / (den[..., :1].float() + eps)).to(v.dtype)  # (B, H, T, E)
    if output_final_state:
        return o, (S, zT[..., 0])
    return o


def causal_linear_attention_step_triton(q_t, k_t, v_t, state, normalize=True, eps=1e-6,
                                        out_state=None):  # fmt: skip
    """One decode step: (o_t (B, H, E), new state), as lesson 03's step. O(D*E) per sequence.

    q_t, k_t (B, H, D), v_t (B, H, E). state is S (B, H, D, E) fp32, or (S, z) with z (B, H, D)
    fp32 when normalize=True (None: zeros). Pass out_state=state to update it in place (what a
    serving loop and a CUDA graph want).
    """
    check_shapes(q_t=(q_t, "B H D"), k_t=(k_t, "B H D"), v_t=(v_t, "B H E"))
    check_cpu_needs_interpreter(q_t)
    S, z = initial_state_or_zeros(q_t.unsqueeze(2), v_t.unsqueeze(2), normalize, state)
    for name, x in (("state", S), ("z", z)):
        if x is not None and x.dtype != torch.float32:
            raise TypeError(f"{name}: the decode kernel keeps the state in float32, got {x.dtype}")
    out_S = out_z = None
    if out_state is not None:
        out_S, out_z = out_state if normalize else (out_state, None)
    q_t, k_t, v_t, S = (x.contiguous() for x in (q_t, k_t, v_t, S))
    z = None if z is None else z.contiguous()
    o, S_new, z_new = decode_step(q_t, k_t, v_t, S, z, eps, out_S)
    if not normalize:
        return o, S_new
    if out_z is not None:
        z_new = out_z.copy_(z_new)
    return o, (S_new, z_new)
