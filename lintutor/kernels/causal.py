"""Causal linear attention in Triton: the public launchers and the autograd Function (lesson 08).

    causal_linear_attention_triton        chunked forward + backward, any T; lesson 03's forms
    causal_linear_attention_step_triton   one-token decode; lesson 03's causal_linear_attention_step
    gated_linear_attention_triton         the same kernels with a scalar gate; lesson 04's forms
    gated_linear_attention_step_triton    gated one-token decode; lesson 04's step

Each takes its lesson's arguments with the same defaults (tests/test_signatures.py lists the few
extras, each with its reason) and the same state convention: S (B, H, D, E) with
normalize=False, the tuple (S, z) with normalize=True; states are fp32. The kernel bodies and
their drivers are in chunked.py (forward scan), chunked_bwd.py (backward) and decode.py. The
ungated launchers are the gated ones with no gate: one set of kernels, with a constexpr HAS_G.

The gate is lesson 04's scalar log-gate g <= 0, one per head and token, (B, H, T), any strides
(fla's (B, T, H) as `g.transpose(1, 2)`, no copy); the vector gate (B, H, T, D) runs only in
`lintutor.gated`'s PyTorch forms. Gradients reach q, k, v, g and the initial state.

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
    """(q, k, v, S_0, chunk_size, want_state, backward, g) -> (o, S_T or None); gradients for
    q, k, v, S_0 and the log-gates g (None: the ungated kernels).

    S_T (fp32) is computed only when want_state is set: at T = 512 the (B*H, D, E) state is
    67 MB, 6% of the bytes the forward must move. Gradients that are not used arrive as None
    (not materialized as zeros), so an unused S_T costs the backward nothing either. backward
    is the version of `chunked_bwd.chunk_bwd` the backward pass runs. Gated, S_T is saved for
    the gate's gradient (its <dS_T, S_T> term).
    """

    @staticmethod
    def forward(ctx, q, k, v, initial_state, chunk_size, want_state=True, backward="auto",
                g=None):  # fmt: skip
        o, S = chunk_scan(
            q, k, v, initial_state, output_final_state=want_state, chunk_size=chunk_size, g=g
        )
        ctx.save_for_backward(q, k, v, initial_state, g, S if g is not None else None)
        ctx.chunk_size, ctx.backward = chunk_size, backward
        ctx.set_materialize_grads(False)
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, S0, g, ST = ctx.saved_tensors
        if do is None:
            do = torch.zeros_like(v)
        need_s0 = S0 is not None and ctx.needs_input_grad[3]
        grads = chunk_bwd(q, k, v, do, S0, dS, ctx.chunk_size, need_s0, ctx.backward, g=g, ST=ST)
        dq, dk, dv, dS0 = grads[:4]
        if need_s0:
            dS0 = dS0.to(S0.dtype)
        dg = grads[4].to(g.dtype) if g is not None and ctx.needs_input_grad[7] else None
        return dq, dk, dv, dS0, None, None, None, dg


def _chunked_triton(q, k, v, g, normalize, initial_state, output_final_state, eps, chunk_size,
                    backward):  # fmt: skip
    """Both chunked launchers: g (B, H, T) log-gates or None."""
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
    o, S = ChunkedLinearAttention.apply(q, k, v, S0, chunk_size, want, backward, g)  # (B,H,T,E)
    if not normalize:
        return (o, S) if output_final_state else o
    ones = q.new_ones(B, H, T, 16)  # the normalizer as a scan of v = 1 (16: smallest dot tile)
    zs = None if z0 is None else z0.to(torch.float32).unsqueeze(-1).expand(B, H, D, 16)
    den, zT = ChunkedLinearAttention.apply(q, k, ones, zs, chunk_size, want, backward, g)
    o = (o.float() / (den[..., :1].float() + eps)).to(v.dtype)  # (B, H, T, E)
    if output_final_state:
        return o, (S, zT[..., 0])
    return o


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
    return _chunked_triton(q, k, v, None, normalize, initial_state, output_final_state, eps,
                           chunk_size, backward)  # fmt: skip


def _scalar_gate(q, g, name="g", spec="B H T"):
    """g: the scalar gate the kernels take, (B, H, T) beside q (B, H, T, D) (for one decode
    step (B, H) beside q_t (B, H, D)), floating point, on q's device, any float dtype (read as
    fp32). Its sign is not checked: that would wait for the GPU on every call."""
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of log-gates, got {type(g).__name__}")
    if g.dim() == len(spec.split()) + 1:
        raise ValueError(
            f"{name}: the kernels take the scalar gate ({', '.join(spec.split())}), got "
            f"{tuple(g.shape)} (a vector gate); lintutor.gated's forms compute the vector gate"
        )
    q_name = "q" if len(spec.split()) == 3 else "q_t"
    check_shapes(**{q_name: (q, spec + " D"), name: (g, spec)})
    if not g.is_floating_point() or g.device != q.device:
        raise TypeError(
            f"{name}: expected float log-gates on {q.device}, got {g.dtype} on {g.device}"
        )


def gated_linear_attention_triton(
    q, k, v, g, normalize=False, initial_state=None, output_final_state=False, eps=1e-6,
    chunk_size=None, backward="auto",
):  # fmt: skip
    """Gated causal linear attention in Triton, differentiable; the signature of lesson 04's
    forms, S_t = exp(g_t) S_{t-1} + k_t v_t^T with scalar log-gates g (B, H, T), g <= 0.

    The chunked kernel of `causal_linear_attention_triton` with the gate folded in (chunked.py:
    in-chunk log-space decays, each exponent <= 0). Gradients flow to q, k, v, g and the initial
    state. O(T*C*(D+E) + T*D*E) time. chunk_size and backward as in
    `causal_linear_attention_triton`; normalize defaults to False as in lesson 04.
    """
    _scalar_gate(q, g)
    return _chunked_triton(q, k, v, g, normalize, initial_state, output_final_state, eps,
                           chunk_size, backward)  # fmt: skip


def _step_triton(q_t, k_t, v_t, g_t, state, normalize, eps, out_state):
    """Both decode launchers: g_t (B, H) log-gates or None."""
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
    if g_t is not None:
        g_t = g_t.to(torch.float32).contiguous()  # (B, H)
    o, S_new, z_new = decode_step(q_t, k_t, v_t, S, z, eps, out_S, g=g_t)
    if not normalize:
        return o, S_new
    if out_z is not None:
        z_new = out_z.copy_(z_new)
    return o, (S_new, z_new)


def causal_linear_attention_step_triton(q_t, k_t, v_t, state, normalize=True, eps=1e-6,
                                        out_state=None):  # fmt: skip
    """One decode step: (o_t (B, H, E), new state), as lesson 03's step. O(D*E) per sequence.

    q_t, k_t (B, H, D), v_t (B, H, E). state is S (B, H, D, E) fp32, or (S, z) with z (B, H, D)
    fp32 when normalize=True (None: zeros). Pass out_state=state to update it in place (what a
    serving loop and a CUDA graph want).
    """
    return _step_triton(q_t, k_t, v_t, None, state, normalize, eps, out_state)


def gated_linear_attention_step_triton(q_t, k_t, v_t, g_t, state, normalize=False, eps=1e-6,
                                       out_state=None):  # fmt: skip
    """One gated decode step, S <- exp(g_t) S + k_t v_t^T: (o_t (B, H, E), new state), as
    lesson 04's step. g_t (B, H) scalar log-gates; the rest as
    `causal_linear_attention_step_triton` (normalize=False by default, as in lesson 04).
    """
    _scalar_gate(q_t, g_t, "g_t", "B H")
    return _step_triton(q_t, k_t, v_t, g_t, state, normalize, eps, out_state)
