"""One-token decode for a batch of sequences, as a Triton kernel and its driver (lesson 08).

    S_t = S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t                       (state fp32)
    z_t = z_{t-1} + k_t,         o_t = S_t^T q_t / (z_t . q_t + eps)   (normalize=True)

gated (HAS_G, lesson 04's step): S_t = exp(g_t) S_{t-1} + k_t v_t^T, z_t = exp(g_t) z_{t-1} + k_t.

The same math as `lintutor.causal.causal_linear_attention_step` (and, gated,
`lintutor.gated.gated_linear_attention_step`); its public launchers,
`causal_linear_attention_step_triton` and `gated_linear_attention_step_triton`, are in
`causal.py`. Each program reads a (D, BE) slice of one sequence's state, adds the outer product,
writes it back and writes BE outputs: the state is read and written once, which is the whole
memory floor. With the normalizer each program also reads z and k (D numbers each) and the
first E block writes the new z.

Versions (H100 80GB, B = 64, H = 16, D = E = 128, fp32 state; see assets/bench_*.json):
  v1  (this file) one program per (head, 32 columns of E); in-place update allowed.
      0.0504 ms in a CUDA graph: 1.13x the floor (0.0447 ms at the measured 3.0 TB/s),
      0.97x fla's fused_recurrent_simple_gla (0.0522 ms) (assets/bench_h100_v3.json); the
      latest run: 0.0503 ms, 1.13x, 0.96x (assets/bench_h100.json). Timed without the
      normalizer (normalize=False), as fla computes it.
  v2  (this file) the gate: one more fp32 per (sequence, head) read, the state scaled by
      exp(g_t) in registers before the outer product. Not yet timed on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor.kernels._common import next_pow2


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, s_ptr, o_ptr, snew_ptr, z_ptr, znew_ptr, g_ptr, eps,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_G: tl.constexpr,
):  # fmt: skip
    """Program (E block i_e, sequence-head i_bh): new S[:, block], o[block] (and the new z)."""
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
    if HAS_G:
        a = tl.exp(tl.load(g_ptr + i_bh))  # () the gate of this sequence and head, in (0, 1]
        S = a * S
    S += k[:, None] * v[None, :]
    o = tl.sum(q[:, None] * S, axis=0)  # (BE,)
    if NORMALIZE:
        z = tl.load(z_ptr + i_bh * D + offs_d, mask=mask_d, other=0.0)  # (BD,) fp32
        if HAS_G:
            z = a * z
        z += k
        o = o / (tl.sum(q * z, axis=0) + eps)
        if i_e == 0:
            tl.store(znew_ptr + i_bh * D + offs_d, z, mask=mask_d)  # (BD,)
    tl.store(snew_ptr + s_offs, S, mask=mask_de)
    tl.store(o_ptr + i_bh * E + offs_e, o.to(o_ptr.dtype.element_ty), mask=mask_e)


def decode_step(q_t, k_t, v_t, S, z=None, eps=1e-6, out_S=None, g=None):
    """(o_t (B, H, E) in v_t's dtype, S_new, z_new or None) from contiguous inputs, S and z fp32.

    g: contiguous fp32 log-gates (B, H) or None (no gate).
    z=None: no normalizer. out_S=S updates the state in place; z_new is always a fresh tensor
    (every E block of a head reads z, so writing it in place would race).
    """
    B, H, D = q_t.shape
    E = v_t.shape[-1]
    BE = min(32, next_pow2(E))
    o = torch.empty(B, H, E, device=q_t.device, dtype=v_t.dtype)
    S_new = torch.empty_like(S) if out_S is None else out_S
    z_new = None if z is None else torch.empty_like(z)
    _decode_kernel[(triton.cdiv(E, BE), B * H)](
        q_t, k_t, v_t, S, o, S_new, z, z_new, g, eps,
        D=D, E=E, BD=next_pow2(D), BE=BE, NORMALIZE=z is not None, HAS_G=g is not None,
        num_warps=4,
    )  # fmt: skip
    return o, S_new, z_new
