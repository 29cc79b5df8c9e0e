"""One-token decode for a batch of sequences, as a Triton kernel (lesson 08).

    S_t = S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t        (normalize=False; state fp32)

The same math as `lintutor.causal.causal_linear_attention_step(normalize=False)`. Each program
reads a (D, BE) slice of one sequence's state, adds the outer product, writes it back and writes
BE outputs: the state is read and written once, which is the whole memory floor.

Versions (H100 80GB, B = 64, H = 16, D = E = 128, fp32 state; see assets/bench_*.json):
  v1  (this file) one program per (head, 32 columns of E); in-place update allowed.
      0.0504 ms in a CUDA graph: 1.13x the floor (0.0447 ms at the measured 3.0 TB/s),
      0.97x fla's fused_recurrent_simple_gla (0.0522 ms) (assets/bench_h100_v3.json); the
      latest run: 0.0503 ms, 1.13x, 0.96x (assets/bench_h100.json).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor._validate import check_shapes
from lintutor.kernels._interpret import next_pow2


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, s_ptr, o_ptr, snew_ptr,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    """Program (E block i_e, sequence-head i_bh): new S[:, block] and o[block]."""
    i_e = tl.program_id(0).to(tl.int64)
    i_bh = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, BD)  # (BD,)
    offs_e = i_e * BE + tl.arange(0, BE)  # (BE,)
    mask_d, mask_e = offs_d < D, offs_e < E
    mask_de = mask_d[:, None] & mask_e[None, :]
    q = tl.load(q_ptr + i_bh * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
    k = tl.load(k_ptr + i_bh * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
    v = tl.load(v_ptr + i_bh * E + offs_e, mask=mask_e, other=0.0).to(tl.float32)  # (BE,)
    s_offs = i_bh * D * E + offs_d[:, None] * E + offs_e[None, :]  # (BD, BE)
    S = tl.load(s_ptr + s_offs, mask=mask_de, other=0.0)  # (BD, BE) fp32
    S += k[:, None] * v[None, :]
    o = tl.sum(q[:, None] * S, axis=0)  # (BE,)
    tl.store(snew_ptr + s_offs, S, mask=mask_de)
    tl.store(o_ptr + i_bh * E + offs_e, o.to(o_ptr.dtype.element_ty), mask=mask_e)


def causal_linear_attention_step_triton(q_t, k_t, v_t, state, normalize=False, eps=1e-6,
                                        out_state=None):  # fmt: skip
    """One decode step: (o_t (B, H, E), new state S (B, H, D, E) fp32). O(D*E) per sequence.

    state is S (B, H, D, E) fp32. Pass out_state=state to update it in place (what a serving
    loop and a CUDA graph want). normalize=True is not a kernel here: use lesson 03's step.
    """
    if normalize:
        raise NotImplementedError(
            "the decode kernel computes plain (normalize=False) causal linear attention; "
            "lintutor.causal.causal_linear_attention_step does the normalized step"
        )
    check_shapes(
        q_t=(q_t, "B H D"), k_t=(k_t, "B H D"), v_t=(v_t, "B H E"), state=(state, "B H D E")
    )
    if state.dtype != torch.float32:
        raise TypeError(f"state: the decode kernel keeps the state in float32, got {state.dtype}")
    B, H, D = q_t.shape
    E = v_t.shape[-1]
    q_t, k_t, v_t, state = (x.contiguous() for x in (q_t, k_t, v_t, state))
    BE = min(32, next_pow2(E))
    o = torch.empty(B, H, E, device=q_t.device, dtype=v_t.dtype)
    new = torch.empty_like(state) if out_state is None else out_state
    _decode_kernel[(triton.cdiv(E, BE), B * H)](
        q_t, k_t, v_t, state, o, new, D=D, E=E, BD=next_pow2(D), BE=BE, num_warps=4
    )
    return o, new
