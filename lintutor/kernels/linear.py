"""Non-causal linear attention in Triton: kernels and launcher (lesson 08, lesson 02's math).

    S = sum_t k_t v_t^T  (D, E),   o_t = S^T q_t,   normalized: o_t / (q_t . sum_s k_s + eps)

Two kernels: `_segment_state_kernel` (from `chunked.py`, via `segment_states`) sums k^T v over
segments of T in parallel and torch adds the segment sums; `_apply_state_kernel` multiplies
every block of queries by S. The normalizer q_t . z is one small torch matmul.

Versions:
  v0  `teaching.linear_attention_simple_triton`: one program per head, two passes over T
      (exercise 08.1). Not timed on a GPU.
  v1  (this file) state kernel + apply kernel; forward only. Tested against lesson 02's
      `linear_attention`; not in the benchmark (the issue times the causal kernels).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor._validate import check_shapes
from lintutor.kernels._common import (
    check_kernel_inputs,
    dot_precision,
    interpreting,
    next_pow2,
    num_sms,
)
from lintutor.kernels.chunked import segment_states, segmenting


@triton.jit
def _apply_state_kernel(
    q_ptr, s_ptr, o_ptr, T, H,
    sq_b, sq_h, sq_t, sq_d,
    so_b, so_h, so_t, so_e,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, BT: tl.constexpr,
    UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """o[block of BT tokens, block of BE] = q[block] @ S[:, block] for one head."""
    i_e = tl.program_id(0).to(tl.int64)
    i_t = tl.program_id(1).to(tl.int64)
    i_bh = tl.program_id(2).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_t = i_t * BT + tl.arange(0, BT)  # (BT,)
    offs_d = tl.arange(0, BD)
    offs_e = i_e * BE + tl.arange(0, BE)
    mask_t, mask_d, mask_e = offs_t < T, offs_d < D, offs_e < E
    q = tl.load(
        q_ptr + b * sq_b + h * sq_h + offs_t[:, None] * sq_t + offs_d[None, :] * sq_d,
        mask=mask_t[:, None] & mask_d[None, :],
        other=0.0,
    )  # (BT, BD)
    S = tl.load(
        s_ptr + i_bh * D * E + offs_d[:, None] * E + offs_e[None, :],
        mask=mask_d[:, None] & mask_e[None, :],
        other=0.0,
    )  # (BD, BE) fp32
    if UPCAST:
        q = q.to(tl.float32)
    o = tl.dot(q, S.to(q.dtype), input_precision=PREC)  # (BT, BE)
    tl.store(
        o_ptr + b * so_b + h * so_h + offs_t[:, None] * so_t + offs_e[None, :] * so_e,
        o.to(o_ptr.dtype.element_ty),
        mask=mask_t[:, None] & mask_e[None, :],
    )


def linear_attention_triton(q, k, v, normalize=True, eps=1e-6):
    """Non-causal linear attention (lesson 02's `linear_attention`) in Triton. O(T*D*E) time."""
    check_kernel_inputs(q, k, v)
    check_shapes(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    B, H, T, D = q.shape
    Tk, E = k.shape[2], v.shape[-1]
    BD, BE, C = next_pow2(D), min(64, next_pow2(E)), 64
    n_e = triton.cdiv(E, BE)
    upcast, prec = interpreting(), dot_precision(q.dtype)
    want = triton.cdiv(2 * num_sms(q.device), B * H * n_e)  # about 2 programs per SM
    NS, seg_len = segmenting(B, H, Tk, n_e, C, q.device, 2, requested=want)
    local = segment_states(k, v, NS, seg_len, C, BE, warps=4, stages=3)  # (B*H, NS, D, E)
    S = local.sum(1).contiguous()  # (B*H, D, E)
    o = torch.empty(B, H, T, E, device=q.device, dtype=v.dtype)
    BT = 64
    _apply_state_kernel[(n_e, triton.cdiv(T, BT), B * H)](
        q, S, o, T, H, *q.stride(), *o.stride(),
        D=D, E=E, BD=BD, BE=BE, BT=BT, UPCAST=upcast, PREC=prec,
    )  # fmt: skip
    if not normalize:
        return o
    z = k.float().sum(2)  # (B, H, D)
    den = (q.float() * z.unsqueeze(2)).sum(-1, keepdim=True)  # (B, H, T, 1)
    return (o.float() / (den + eps)).to(v.dtype)
