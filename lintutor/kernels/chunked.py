"""Chunked causal linear attention as Triton kernels: the forward scan and its driver (lesson 08).

The public launcher `causal_linear_attention_triton` and its autograd Function are in
`causal.py`; this file holds the kernels and `chunk_scan`, which the backward reuses.

The same schedule as `lintutor.causal.causal_linear_attention_chunked(normalize=False)`:

    o_c = tril(q_c k_c^T) v_c + q_c S        intra-chunk masked matmul + earlier chunks' state
    S  <- S + k_c^T v_c                       (D, E) state, fp32

One kernel, `_chunk_scan_kernel`, walks the chunks of a segment of the sequence and keeps S
in registers. With REVERSE it walks from the end and masks s >= t instead: the backward pass
(`chunked_bwd.py`) uses it for dq (and, in its v1, for dk and dv). Long sequences with few heads
leave most of the GPU idle, so T is cut into NS segments: `_segment_state_kernel` sums k^T v over
each segment, and the scan runs all segments at once, each program first adding up the segment
sums before its own (its starting state). Grid: (E blocks, segments, B*H).

Inputs are bf16/fp16/fp32 with any strides ((B, H, T, D) or fla's (B, T, H, D) without a copy);
accumulation and the state are fp32; the dots run on the input dtype (tensor cores), as fla does.
In the interpreter tiles are upcast to fp32 first (bf16 tl.dot is wrong there).

Versions, each checked against lesson 03's reference before timing (H100 80GB HBM3, bf16,
65,536 tokens per call, H * D = 2048, fla 0.6.0, torch 2.11, triton 3.6; memory floor 0.358 ms):
  v1  C = 64, 64 columns of E per program, T cut into segments until there are 2 programs per
      SM. D=64: 0.39 ms (T=1K), 0.59 ms (T=64K); D=128: 0.71 ms (T=1K), 1.11 ms (T=64K).
  v2  D=128: C = 128, all 128 columns of E in one program, 8 warps, 4 programs per SM (from
      `lintutor bench --tune`): 0.41 ms (T=1K), 0.66 ms (T=64K), but 0.72-0.76 ms at T=2K-4K
      where the segment split kicked in (assets/bench_h100_v2.json).
  v3  segments only below one program per SM: 0.38-0.70 ms at every shape, but D=64 was 1-13%
      slower than fla's fused_chunk at T=512-4K and 1.5x at 16K (assets/bench_h100_v3.json).
  v4  (this file) from a sweep and an Nsight Compute profile: 4 pipeline stages instead of 2
      (one program per SM streams only with more loads in flight: D=64 T=16K 0.49 -> 0.38 ms),
      64 columns of E at D=128 as in v1 (the two programs of a head read q, k once from DRAM and
      once from L2), segments only below 3/4 of a program per SM and rounded down to whole
      waves, the segment sums added inside the scan (no torch prefix sum), the final state
      written only when asked (67 MB at T=512). D=64: 0.360-0.384 ms up to T=16K (0.97-1.00x
      fla's fused_chunk), 0.56 ms at 32K-64K (0.95x, 0.61x); D=128: 0.376-0.402 ms up to 16K,
      0.56 ms at 32K-64K (0.37-0.58x fla's chunk) (assets/bench_h100.json, bench_h100_v4a.json).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor.kernels._common import dot_precision, interpreting, next_pow2, num_sms


@triton.jit
def _chunk_scan_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, s0_ptr, loc_ptr, st_ptr,
    T, seg_len, H, NS,
    sq_b, sq_h, sq_t, sq_d,
    sk_b, sk_h, sk_t, sk_d,
    sv_b, sv_h, sv_t, sv_e,
    so_b, so_h, so_t, so_e,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, C: tl.constexpr,
    REVERSE: tl.constexpr, HAS_S0: tl.constexpr, HAS_LOC: tl.constexpr, STORE_ST: tl.constexpr,
    UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One program: E block i_e of head i_bh, segment i_s.

    s0 and st are fp32 (B*H, D, E); loc (B*H, NS, D, E) holds each segment's sum of k^T v, and
    the program starts from s0 plus the segments before it (after it with REVERSE).
    """
    i_e = tl.program_id(0).to(tl.int64)
    i_s = tl.program_id(1).to(tl.int64)
    i_bh = tl.program_id(2).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_d = tl.arange(0, BD)  # (BD,)
    offs_e = i_e * BE + tl.arange(0, BE)  # (BE,)
    offs_c = tl.arange(0, C)  # (C,)
    mask_d, mask_e = offs_d < D, offs_e < E
    mask_de = mask_d[:, None] & mask_e[None, :]  # (BD, BE)
    s_offs = offs_d[:, None] * E + offs_e[None, :]  # (BD, BE) into a contiguous (D, E)
    if HAS_S0:
        S = tl.load(s0_ptr + i_bh * D * E + s_offs, mask=mask_de, other=0.0)  # (BD, BE) fp32
    else:
        S = tl.zeros([BD, BE], dtype=tl.float32)
    if HAS_LOC:  # the state entering this segment: the segments before it (after, reversed)
        if REVERSE:
            j0, j1 = i_s + 1, NS
        else:
            j0, j1 = 0, i_s
        for j in range(j0, j1):
            S += tl.load(loc_ptr + (i_bh * NS + j) * D * E + s_offs, mask=mask_de, other=0.0)
    if REVERSE:
        causal = offs_c[:, None] <= offs_c[None, :]  # (C, C): key s >= query t
    else:
        causal = offs_c[:, None] >= offs_c[None, :]  # (C, C): key s <= query t
    seg_start = i_s * seg_len
    seg_end = tl.minimum(seg_start + seg_len, T)
    n_chunks = tl.cdiv(seg_end - seg_start, C)
    q_base = q_ptr + b * sq_b + h * sq_h
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    o_base = o_ptr + b * so_b + h * so_h
    for j in range(0, n_chunks):
        if REVERSE:
            c = n_chunks - 1 - j
        else:
            c = j
        offs_t = seg_start + c * C + offs_c  # (C,)
        mask_t = offs_t < seg_end
        mask_td = mask_t[:, None] & mask_d[None, :]  # (C, BD)
        mask_te = mask_t[:, None] & mask_e[None, :]  # (C, BE)
        q = tl.load(
            q_base + offs_t[:, None] * sq_t + offs_d[None, :] * sq_d, mask=mask_td, other=0.0
        )  # (C, BD)
        k = tl.load(
            k_base + offs_t[:, None] * sk_t + offs_d[None, :] * sk_d, mask=mask_td, other=0.0
        )  # (C, BD)
        v = tl.load(
            v_base + offs_t[:, None] * sv_t + offs_e[None, :] * sv_e, mask=mask_te, other=0.0
        )  # (C, BE)
        if UPCAST:
            q, k, v = q.to(tl.float32), k.to(tl.float32), v.to(tl.float32)
        scores = tl.dot(q, tl.trans(k), input_precision=PREC)  # (C, C) fp32
        scores = tl.where(causal, scores, 0.0)
        o = tl.dot(scores.to(v.dtype), v, input_precision=PREC)  # (C, BE) intra-chunk
        o += tl.dot(q, S.to(q.dtype), input_precision=PREC)  # (C, BE) earlier chunks
        tl.store(
            o_base + offs_t[:, None] * so_t + offs_e[None, :] * so_e,
            o.to(o_ptr.dtype.element_ty),
            mask=mask_te,
        )  # (C, BE)
        S = tl.dot(tl.trans(k), v, acc=S, input_precision=PREC)  # (BD, BE) += k_c^T v_c
    if STORE_ST:
        last = 0 if REVERSE else NS - 1
        if i_s == last:
            tl.store(st_ptr + i_bh * D * E + s_offs, S, mask=mask_de)  # (BD, BE)


@triton.jit
def _segment_state_kernel(
    k_ptr, v_ptr, st_ptr,
    T, seg_len, H, NS,
    sk_b, sk_h, sk_t, sk_d,
    sv_b, sv_h, sv_t, sv_e,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, C: tl.constexpr,
    UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """sum_{t in segment} k_t v_t^T for one (E block, segment, head) into st (B*H, NS, D, E)."""
    i_e = tl.program_id(0).to(tl.int64)
    i_s = tl.program_id(1).to(tl.int64)
    i_bh = tl.program_id(2).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_d = tl.arange(0, BD)
    offs_e = i_e * BE + tl.arange(0, BE)
    offs_c = tl.arange(0, C)
    mask_d, mask_e = offs_d < D, offs_e < E
    S = tl.zeros([BD, BE], dtype=tl.float32)
    seg_start = i_s * seg_len
    seg_end = tl.minimum(seg_start + seg_len, T)
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    for start in range(seg_start, seg_end, C):
        offs_t = start + offs_c  # (C,)
        mask_t = offs_t < seg_end
        k = tl.load(
            k_base + offs_t[:, None] * sk_t + offs_d[None, :] * sk_d,
            mask=mask_t[:, None] & mask_d[None, :],
            other=0.0,
        )  # (C, BD)
        v = tl.load(
            v_base + offs_t[:, None] * sv_t + offs_e[None, :] * sv_e,
            mask=mask_t[:, None] & mask_e[None, :],
            other=0.0,
        )  # (C, BE)
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        S = tl.dot(tl.trans(k), v, acc=S, input_precision=PREC)  # (BD, BE)
    s_offs = offs_d[:, None] * E + offs_e[None, :]
    tl.store(st_ptr + (i_bh * NS + i_s) * D * E + s_offs, S, mask=mask_d[:, None] & mask_e[None, :])


# Below this many programs per SM a scan is cut into segments (see `segments_for`).
SEGMENT_BELOW = 0.75


def _config(D: int, E: int) -> tuple[int, int, int, int, int]:
    """(C, BE, num_warps, num_stages, programs per SM) for a scan over (D, E).

    From the sweeps on an H100 (bf16, 65,536 tokens; `lintutor bench --tune`): C = 64, 64
    columns of E per program, 4 warps and 4 pipeline stages (D = 64: 0.360 ms at T = 512,
    0.380 ms at T = 16K where 2 stages gave 0.49 ms). At D = 128 the two programs of a head
    (E blocks) run side by side and read q and k once from memory, the second time from L2:
    0.38 ms at T = 16K against 0.64 ms for one program over all 128 columns. Long T: about
    2 (D = 64) or 1 (D = 128) programs per SM.
    """
    return 64, min(64, next_pow2(E)), 4, 4, 1 if next_pow2(D) >= 128 else 2


def segments_for(programs: int, n_chunks: int, device, programs_per_sm: int) -> int:
    """How many segments to cut T into when `programs` (B*H*E blocks) would each scan all of it.

    One program streams at most ~28 GB/s on an H100, so a grid with fewer programs than about
    3/4 of the SMs leaves bandwidth unused. Segments fix that at the cost of a second read of
    the two tensors whose state they sum (k and v), so they are used only below that.
    """
    sms = num_sms(device)
    if programs >= SEGMENT_BELOW * sms:
        return 1
    # rounded down: one more segment than fits in a wave leaves a tail (measured: 192 programs
    # on 132 SMs took 0.67 ms where 128 took 0.55 ms)
    return max(1, min(n_chunks, programs_per_sm * sms // programs))


def segment_states(k, v, NS, seg_len, C, BE, warps, stages):
    """(B*H, NS, D, E) fp32: sum of k_t v_t^T over each of NS segments of seg_len tokens."""
    B, H, T, D = k.shape
    E = v.shape[-1]
    local = torch.empty(B * H, NS, D, E, device=k.device, dtype=torch.float32)
    _segment_state_kernel[(triton.cdiv(E, BE), NS, B * H)](
        k, v, local, T, seg_len, H, NS, *k.stride(), *v.stride(),
        D=D, E=E, BD=next_pow2(D), BE=BE, C=C, UPCAST=interpreting(),
        PREC=dot_precision(k.dtype), num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return local


def segmenting(B, H, T, n_e, C, device, programs_per_sm, requested=None):
    """(NS, seg_len): NS >= 1 segments of whole chunks covering T; `requested` overrides NS."""
    n_chunks = max(1, triton.cdiv(T, C))
    if requested is None:
        requested = segments_for(B * H * n_e, n_chunks, device, programs_per_sm)
    NS = max(1, min(requested, n_chunks))
    seg_len = triton.cdiv(n_chunks, NS) * C
    return max(1, triton.cdiv(max(T, 1), seg_len)), seg_len


def chunk_scan(q, k, v, initial_state=None, reverse=False, output_final_state=False,
               chunk_size=None, num_segments=None, out=None, config=None,
               programs_per_sm=None):  # fmt: skip
    """o_t = sum_{s<=t} (q_t.k_s) v_s + S0^T q_t (s>=t with reverse) in Triton; layout (B,H,T,*).

    q, k (B, H, T, D) and v (B, H, T, E) may have any strides. Returns (o, S_final or None)
    with o in v's dtype and S (B, H, D, E) fp32. O(T*C*(D+E) + T*D*E) work. config =
    (BE, num_warps, num_stages), num_segments and programs_per_sm (how many segments to cut T
    into) are for tuning; None takes the defaults from `_config`, as does chunk_size=None.
    """
    B, H, T, D = q.shape
    E = v.shape[-1]
    C0, BE, warps, stages, ppsm = _config(D, E)
    C = chunk_size or C0
    BE, warps, stages = config or (BE, warps, stages)
    n_e = triton.cdiv(E, BE)
    NS, seg_len = segmenting(B, H, T, n_e, C, q.device, programs_per_sm or ppsm, num_segments)
    o = out if out is not None else torch.empty(B, H, T, E, device=q.device, dtype=v.dtype)
    s0 = None
    if initial_state is not None:
        s0 = initial_state.to(torch.float32).reshape(B * H, D, E).contiguous()
    local = segment_states(k, v, NS, seg_len, C, BE, warps, stages) if NS > 1 else None
    st = None
    if output_final_state:
        st = torch.empty(B, H, D, E, device=q.device, dtype=torch.float32)
    _chunk_scan_kernel[(n_e, NS, B * H)](
        q, k, v, o, s0, local, st, T, seg_len, H, NS,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        D=D, E=E, BD=next_pow2(D), BE=BE, C=C, REVERSE=reverse, HAS_S0=s0 is not None,
        HAS_LOC=local is not None, STORE_ST=output_final_state, UPCAST=interpreting(),
        PREC=dot_precision(q.dtype), num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return o, st
