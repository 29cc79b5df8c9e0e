"""Backward of chunked causal linear attention, as three scans of the forward kernel (lesson 08).

With S_t = S_0 + sum_{s<=t} k_s v_s^T and o_t = S_t^T q_t, and G_s = dS_T + sum_{t>=s} q_t do_t^T
the state gradient walked backwards in time:

    dq_t = S_t do_t   = sum_{s<=t} (do_t . v_s) k_s + S_0 do_t    causal scan of (do, v, k; S_0^T)
    dv_s = G_s^T k_s  = sum_{t>=s} (k_s . q_t) do_t + dS_T^T k_s  reverse scan of (k, q, do; dS_T)
    dk_s = G_s v_s    = sum_{t>=s} (v_s . do_t) q_t + dS_T v_s    reverse scan of (v, do, q; dS_T^T)
    dS_0 = G_1        = the final state of the dv scan

So the backward is the forward kernel three times with the roles of q, k, v permuted; no
forward state is stored between the passes (only q, k, v and S_0).

Versions (H100 80GB HBM3, bf16, 65,536 tokens, H * D = 2048; forward + backward):
  v1  (this file) three scans, each with the segment split of `chunked.py`. It reads nine
      (B, H, T, *) tensors and writes three; a fused dk/dv kernel would read two fewer.
      With forward v3: 1.5-2.4 ms at D=64, 1.6-3.0 ms at D=128, 0.36-0.77x fla's
      chunk_simple_gla (assets/bench_h100.json).
"""

from __future__ import annotations

import torch

from lintutor.kernels.chunked import chunk_scan


class ChunkedLinearAttention(torch.autograd.Function):
    """(q, k, v, S_0, chunk_size) -> (o, S_T) with S_T fp32; gradients for q, k, v and S_0."""

    @staticmethod
    def forward(ctx, q, k, v, initial_state, chunk_size):
        o, S = chunk_scan(q, k, v, initial_state, output_final_state=True, chunk_size=chunk_size)
        ctx.save_for_backward(q, k, v, initial_state)
        ctx.chunk_size = chunk_size
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, S0 = ctx.saved_tensors
        C = ctx.chunk_size
        if do is None:
            do = torch.zeros_like(v)
        do = do.to(v.dtype)
        S0t = None if S0 is None else S0.transpose(-1, -2)  # (B, H, E, D)
        dSt = None if dS is None else dS.transpose(-1, -2)  # (B, H, E, D)
        dq, _ = chunk_scan(do, v, k, S0t, chunk_size=C)  # (B, H, T, D)
        need_s0 = S0 is not None and ctx.needs_input_grad[3]
        dv, dS0 = chunk_scan(k, q, do, dS, reverse=True, output_final_state=need_s0, chunk_size=C)
        dk, _ = chunk_scan(v, do, q, dSt, reverse=True, chunk_size=C)  # (B, H, T, D)
        if need_s0:
            dS0 = dS0.to(S0.dtype)
        return dq, dk, dv, dS0, None
