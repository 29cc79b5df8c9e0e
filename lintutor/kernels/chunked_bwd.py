"""Backward of chunked causal linear attention (lesson 08).

With S_t = S_0 + sum_{s<=t} k_s v_s^T and o_t = S_t^T q_t, and G_s = dS_T + sum_{t>=s} q_t do_t^T
the state gradient walked backwards in time:

    dq_t = S_t do_t   = sum_{s<=t} (do_t . v_s) k_s + S_0 do_t    causal scan of (do, v, k; S_0^T)
    dv_s = G_s^T k_s  = sum_{t>=s} (k_s . q_t) do_t + dS_T^T k_s  reverse scan of (k, q, do; dS_T)
    dk_s = G_s v_s    = sum_{t>=s} (v_s . do_t) q_t + dS_T v_s    reverse scan of (v, do, q; dS_T^T)
    dS_0 = G_1        = the final state of the dv scan

dq is the forward kernel with the roles of q, k, v permuted. dk and dv share G, so one reverse
kernel computes both per chunk c (rows s, columns t, s <= t kept):

    dv_c = tril^T(k_c q_c^T) do_c + k_c G        dk_c = tril^T(v_c do_c^T) q_c + v_c G^T
    G   <- G + q_c^T do_c

No forward state is stored between the passes (only q, k, v and S_0). That per-chunk block is
one jitted helper, `_dkdv_chunk`, which both fused kernels call: `_dkdv_kernel` (v2) for each
chunk of its segment, `_bwd_kernel` (v3) in its second walk. This file holds the kernels and
their drivers; the autograd Function that calls `chunk_bwd` with an explicit `backward=`
version is in `causal.py`. It builds on `chunked.py` (the scans and segment sums), never the
other way round.

With a scalar gate (log-gates g_t <= 0, B_t = g_1 + ... + g_t, lesson 04) every pair (s <= t)
is weighted by exp(B_t - B_s), S_0 reaches token t as exp(B_t) S_0 and S_T = exp(B_T) S_0 +
sum_s exp(B_T - B_s) k_s v_s^T. The three scans keep their shape and decay as the forward does
(chunked.py), and G obeys G_s = q_s do_s^T + exp(g_{s+1}) G_{s+1}, G_T = q_T do_T^T + dS_T:

    dq_t = S_t do_t = sum_{s<=t} exp(B_t - B_s) (do_t . v_s) k_s + exp(B_t) S_0 do_t
    dv_s = G_s^T k_s,  dk_s = G_s v_s,  G_s = sum_{t>=s} exp(B_t - B_s) q_t do_t^T
                                              + exp(B_T - B_s) dS_T
    dS_0 = sum_t exp(B_t) q_t do_t^T + exp(B_T) dS_T      (the dv scan's final state)

The gate's gradient. Take the B_t as the variables. B_t enters with + every term in which t is
the query (o_t's pairs and its S_0 term): their derivative sums to q_t . dq_t; with - every term
in which t is the key (the pairs (t', t), t' >= t, and S_T's k_t v_t^T): -k_t . dk_t (the pair
(t, t) has exponent 0 and appears in both, cancelling); and B_T also scales all of S_T:
+<dS_T, S_T>. With B_t = sum_{r<=t} g_r:

    dB_t = q_t . dq_t - k_t . dk_t + [t = T] <dS_T, S_T>,     dg_r = sum_{t>=r} dB_t

a reverse cumulative sum. The kernels compute the row dots where dq and dk are made (the scan's
`dot_with`, the fused kernels' HAS_G stores), in fp32; `chunk_bwd` adds the final-state term
(S_T saved by the forward) and the reverse cumsum over the (B, H, T) dots in PyTorch.

Versions (H100 80GB HBM3, bf16, 65,536 tokens, H * D = 2048; forward + backward through
autograd, forward v4 of `chunked.py` unless said otherwise):
  v1  `backward="scans"`: three scans of the forward kernel (dq; dv; dk). Reads nine
      (B, H, T, *) tensors and writes three. With forward v3: 1.5-2.4 ms at D=64, 1.6-3.0 ms at
      D=128, 0.36-0.77x fla's chunk_simple_gla but 1.2-1.3x its fused_chunk at D=64
      (assets/bench_h100_v3.json). The default above D, E = 64: the cards disagree there (H200,
      T=512: v1 1.74 ms, v2 1.90 ms; H100, before forward v4's last retune: v1 1.97 ms, v2
      1.71 ms), and a per-card choice is not made yet.
  v2  `backward="dkdv"`: the dq scan + one fused dk/dv kernel (`_dkdv_kernel`): reads seven
      tensors and writes three, and takes segments like the forward. D=64 T=512: 1.33 ms.
  v3  `backward="onepass"`: `_bwd_kernel`, one program per head, dq walking forwards then
      dk/dv walking back, so the chunks read last by the first walk are still in L2 for the
      second: 0.60 ms alone on an H200 at D=64 T=512, below the 0.63 ms that its ten tensor
      reads and writes take from DRAM. Needs 3 stages (2 stages: 0.71 ms). The default at
      D, E <= 64 when one program per head fills the GPU, else v2.
  With "auto" (v3/v2 at D=64, v1 at D=128): D=64 1.21-1.31 ms up to T=16K (0.95-0.96x fla's
  fused_chunk, 0.42-0.43x its chunk), 1.87 ms at 32K-64K; D=128 1.49-1.60 ms up to 16K,
  2.22 ms at 32K (0.33-0.52x fla's chunk) (assets/bench_h100.json).
  Gated (HAS_G, this file): every version takes g and returns dg; the fused kernels read q once
  more in the dq walk (v3) and the dq scan reads q (v1, v2) for the row dots. Not yet timed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor.kernels._common import dot_precision, interpreting, next_pow2
from lintutor.kernels.chunked import (
    _chunk_gates,
    chunk_scan,
    segment_states,
    segmenting,
    segments_for,
)


@triton.jit
def _dkdv_chunk(
    q_base, k_base, v_base, do_base, dk_base, dv_base, g_base, kdk_base, G,
    offs_t, t_end, offs_c, offs_d, offs_e, mask_d, mask_e, keep,
    sq_t, sq_d, sk_t, sk_d, sv_t, sv_e, so_t, so_e, sg_t,
    C: tl.constexpr, HAS_G: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """dk and dv of one chunk of tokens offs_t (< t_end) from G, stored; returns G updated.

    Rows s, columns t, `keep` = s <= t; G (BD, BE) fp32 is the state gradient of the chunks
    after this one. dk is stored with k's strides, dv with do's (so_*). Ungated G <- G +
    q_c^T do_c; gated (chunked.py's reverse scan) the pairs carry exp(b_t - b_s), the rows read
    G with exp(b_C - b_s), q_t enters G with exp(b_t), G <- exp(b_C) G + ..., and the row dots
    k_s . dk_s go to kdk (one fp32 per token).
    """
    mask_t = offs_t < t_end
    mask_td = mask_t[:, None] & mask_d[None, :]  # (C, BD)
    mask_te = mask_t[:, None] & mask_e[None, :]  # (C, BE)
    q = tl.load(q_base + offs_t[:, None] * sq_t + offs_d[None, :] * sq_d, mask=mask_td,
                other=0.0)  # (C, BD)  # fmt: skip
    kd = offs_t[:, None] * sk_t + offs_d[None, :] * sk_d
    k = tl.load(k_base + kd, mask=mask_td, other=0.0)  # (C, BD)
    v = tl.load(v_base + offs_t[:, None] * sv_t + offs_e[None, :] * sv_e, mask=mask_te,
                other=0.0)  # (C, BE)  # fmt: skip
    oe = offs_t[:, None] * so_t + offs_e[None, :] * so_e
    do = tl.load(do_base + oe, mask=mask_te, other=0.0)  # (C, BE)
    if UPCAST:
        q, k, v, do = q.to(tl.float32), k.to(tl.float32), v.to(tl.float32), do.to(tl.float32)
    Gc = G.to(q.dtype)
    if HAS_G:
        bg, b_last = _chunk_gates(g_base, offs_t, mask_t, sg_t, offs_c, C)
        decay = tl.exp(tl.where(keep, bg[None, :] - bg[:, None], float("-inf")))  # (C, C)
        f_row = tl.exp(b_last - bg)  # (C,) row s reads G decayed from the chunk's end
        a = tl.dot(k, tl.trans(q), input_precision=PREC) * decay  # (C, C) k_s.q_t
        dv = tl.dot(a.to(q.dtype), do, input_precision=PREC)  # (C, BE)
        dv += f_row[:, None] * tl.dot(k, Gc, input_precision=PREC)
        bm = tl.dot(v, tl.trans(do), input_precision=PREC) * decay  # (C, C) v_s.do_t
        dk = tl.dot(bm.to(q.dtype), q, input_precision=PREC)  # (C, BD)
        dk += f_row[:, None] * tl.dot(v, tl.trans(Gc), input_precision=PREC)
        tl.store(kdk_base + offs_t, tl.sum(k.to(tl.float32) * dk, 1), mask=mask_t)  # (C,)
    else:
        a = tl.where(keep, tl.dot(k, tl.trans(q), input_precision=PREC), 0.0)  # (C, C) k_s.q_t
        dv = tl.dot(a.to(q.dtype), do, input_precision=PREC)  # (C, BE)
        dv = tl.dot(k, Gc, acc=dv, input_precision=PREC)
        bm = tl.where(keep, tl.dot(v, tl.trans(do), input_precision=PREC), 0.0)  # v_s.do_t
        dk = tl.dot(bm.to(q.dtype), q, input_precision=PREC)  # (C, BD)
        dk = tl.dot(v, tl.trans(Gc), acc=dk, input_precision=PREC)
    tl.store(dv_base + oe, dv.to(dv_base.dtype.element_ty), mask=mask_te)  # (C, BE)
    tl.store(dk_base + kd, dk.to(dk_base.dtype.element_ty), mask=mask_td)  # (C, BD)
    if HAS_G:
        do_in = (do.to(tl.float32) * tl.exp(bg)[:, None]).to(do.dtype)  # (C, BE) exp(b_t) do_t
        return tl.dot(tl.trans(q), do_in, acc=G * tl.exp(b_last), input_precision=PREC)
    return tl.dot(tl.trans(q), do, acc=G, input_precision=PREC)  # (BD, BE) += q_c^T do_c


@triton.jit
def _dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, dk_ptr, dv_ptr, g_ptr, kdk_ptr, g0_ptr, loc_ptr, gam_ptr,
    gout_ptr,
    T, seg_len, H, NS,
    sq_b, sq_h, sq_t, sq_d,
    sk_b, sk_h, sk_t, sk_d,
    sv_b, sv_h, sv_t, sv_e,
    so_b, so_h, so_t, so_e,
    sg_b, sg_h, sg_t,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, C: tl.constexpr,
    HAS_G: tl.constexpr, HAS_G0: tl.constexpr, HAS_LOC: tl.constexpr, STORE_G: tl.constexpr,
    UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One program: segment i_s of head i_bh, walked from its last chunk to its first.

    do and dv share one set of strides (so_*), dk has k's. g0 (dS_T) and gout (dS_0) are fp32
    (B*H, D, E); loc (B*H, NS, D, E) holds each segment's (decayed) sum of q^T do and gam
    (B*H, NS) its total log-gate; kdk (B*H, T) fp32 gets k_s . dk_s (gated).
    """
    i_s = tl.program_id(0).to(tl.int64)
    i_bh = tl.program_id(1).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_d = tl.arange(0, BD)
    offs_e = tl.arange(0, BE)
    offs_c = tl.arange(0, C)
    mask_d, mask_e = offs_d < D, offs_e < E
    mask_de = mask_d[:, None] & mask_e[None, :]
    g_offs = offs_d[:, None] * E + offs_e[None, :]  # (BD, BE) into a contiguous (D, E)
    if HAS_G0:
        G = tl.load(g0_ptr + i_bh * D * E + g_offs, mask=mask_de, other=0.0)  # (BD, BE) fp32
    else:
        G = tl.zeros([BD, BE], dtype=tl.float32)
    if HAS_LOC:  # the segments after this one, from the last
        for jj in range(0, NS - 1 - i_s):
            j = NS - 1 - jj
            if HAS_G:
                G = G * tl.exp(tl.load(gam_ptr + i_bh * NS + j))
            G += tl.load(loc_ptr + (i_bh * NS + j) * D * E + g_offs, mask=mask_de, other=0.0)
    keep = offs_c[:, None] <= offs_c[None, :]  # (C, C): row s, column t, s <= t
    seg_start = i_s * seg_len
    seg_end = tl.minimum(seg_start + seg_len, T)
    n_chunks = tl.cdiv(seg_end - seg_start, C)
    q_base = q_ptr + b * sq_b + h * sq_h
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    do_base = do_ptr + b * so_b + h * so_h
    dk_base = dk_ptr + b * sk_b + h * sk_h
    dv_base = dv_ptr + b * so_b + h * so_h
    g_base = g_ptr + b * sg_b + h * sg_h
    kdk_base = kdk_ptr + i_bh * T
    for j in range(0, n_chunks):
        offs_t = seg_start + (n_chunks - 1 - j) * C + offs_c  # (C,)
        G = _dkdv_chunk(
            q_base, k_base, v_base, do_base, dk_base, dv_base, g_base, kdk_base, G,
            offs_t, seg_end, offs_c, offs_d, offs_e, mask_d, mask_e, keep,
            sq_t, sq_d, sk_t, sk_d, sv_t, sv_e, so_t, so_e, sg_t, C, HAS_G, UPCAST, PREC,
        )  # fmt: skip
    if STORE_G:
        if i_s == 0:
            tl.store(gout_ptr + i_bh * D * E + g_offs, G, mask=mask_de)


@triton.jit
def _bwd_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, dq_ptr, dk_ptr, dv_ptr, g_ptr, qdq_ptr, kdk_ptr, s0_ptr,
    g0_ptr, gout_ptr,
    T, H,
    sq_b, sq_h, sq_t, sq_d,
    sk_b, sk_h, sk_t, sk_d,
    sv_b, sv_h, sv_t, sv_e,
    so_b, so_h, so_t, so_e,
    sg_b, sg_h, sg_t,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, C: tl.constexpr,
    HAS_G: tl.constexpr, HAS_S0: tl.constexpr, HAS_G0: tl.constexpr, STORE_G: tl.constexpr,
    UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One program per head: dq walking forwards, then dk and dv walking back (v3).

    The backward pass reads k, v and do twice; the second walk starts where the first ended,
    so the most recent chunks are still in L2. dq has q's strides, dk k's, dv do's. Gated, the
    first walk also reads q for the row dots q_t . dq_t (qdq, (B*H, T) fp32) and the second
    stores k_s . dk_s (kdk).
    """
    i_bh = tl.program_id(0).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_d = tl.arange(0, BD)
    offs_e = tl.arange(0, BE)
    offs_c = tl.arange(0, C)
    mask_d, mask_e = offs_d < D, offs_e < E
    mask_de = mask_d[:, None] & mask_e[None, :]
    s_offs = offs_d[:, None] * E + offs_e[None, :]  # (BD, BE) into a contiguous (D, E)
    q_base = q_ptr + b * sq_b + h * sq_h
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    do_base = do_ptr + b * so_b + h * so_h
    g_base = g_ptr + b * sg_b + h * sg_h
    n_chunks = tl.cdiv(T, C)
    # walk 1: dq_t = S_t do_t, S_t = S_0 + sum_{s<=t} k_s v_s^T (gated: decayed as the forward)
    if HAS_S0:
        S = tl.load(s0_ptr + i_bh * D * E + s_offs, mask=mask_de, other=0.0)  # (BD, BE) fp32
    else:
        S = tl.zeros([BD, BE], dtype=tl.float32)
    causal = offs_c[:, None] >= offs_c[None, :]  # (C, C): row t, column s, s <= t
    for c in range(0, n_chunks):
        offs_t = c * C + offs_c
        mask_t = offs_t < T
        mask_td = mask_t[:, None] & mask_d[None, :]
        mask_te = mask_t[:, None] & mask_e[None, :]
        kd = offs_t[:, None] * sk_t + offs_d[None, :] * sk_d
        k = tl.load(k_base + kd, mask=mask_td, other=0.0)  # (C, BD)
        v = tl.load(v_base + offs_t[:, None] * sv_t + offs_e[None, :] * sv_e, mask=mask_te,
                    other=0.0)  # (C, BE)  # fmt: skip
        oe = offs_t[:, None] * so_t + offs_e[None, :] * so_e
        do = tl.load(do_base + oe, mask=mask_te, other=0.0)  # (C, BE)
        if UPCAST:
            k, v, do = k.to(tl.float32), v.to(tl.float32), do.to(tl.float32)
        qd = offs_t[:, None] * sq_t + offs_d[None, :] * sq_d
        if HAS_G:
            bg, b_last = _chunk_gates(g_base, offs_t, mask_t, sg_t, offs_c, C)
            decay = tl.exp(tl.where(causal, bg[:, None] - bg[None, :], float("-inf")))
            a = tl.dot(do, tl.trans(v), input_precision=PREC) * decay  # (C, C) do_t.v_s
            dq = tl.dot(a.to(k.dtype), k, input_precision=PREC)  # (C, BD)
            dq += tl.exp(bg)[:, None] * tl.dot(do, tl.trans(S.to(k.dtype)), input_precision=PREC)
            q = tl.load(q_base + qd, mask=mask_td, other=0.0).to(tl.float32)  # (C, BD)
            tl.store(qdq_ptr + i_bh * T + offs_t, tl.sum(q * dq, 1), mask=mask_t)  # (C,)
            v_in = (v.to(tl.float32) * tl.exp(b_last - bg)[:, None]).to(v.dtype)  # (C, BE)
            S = tl.dot(tl.trans(k), v_in, acc=S * tl.exp(b_last), input_precision=PREC)
        else:
            a = tl.where(causal, tl.dot(do, tl.trans(v), input_precision=PREC), 0.0)  # do_t.v_s
            dq = tl.dot(a.to(k.dtype), k, input_precision=PREC)  # (C, BD)
            dq = tl.dot(do, tl.trans(S.to(k.dtype)), acc=dq, input_precision=PREC)
            S = tl.dot(tl.trans(k), v, acc=S, input_precision=PREC)
        tl.store(dq_ptr + b * sq_b + h * sq_h + qd, dq.to(dq_ptr.dtype.element_ty), mask=mask_td)
    # walk 2: dv_s = G_s^T k_s, dk_s = G_s v_s, G_s = dS_T + sum_{t>=s} q_t do_t^T (decayed)
    if HAS_G0:
        G = tl.load(g0_ptr + i_bh * D * E + s_offs, mask=mask_de, other=0.0)
    else:
        G = tl.zeros([BD, BE], dtype=tl.float32)
    keep = offs_c[:, None] <= offs_c[None, :]  # (C, C): row s, column t, s <= t
    dk_base = dk_ptr + b * sk_b + h * sk_h
    dv_base = dv_ptr + b * so_b + h * so_h
    kdk_base = kdk_ptr + i_bh * T
    for j in range(0, n_chunks):
        offs_t = (n_chunks - 1 - j) * C + offs_c  # (C,)
        G = _dkdv_chunk(
            q_base, k_base, v_base, do_base, dk_base, dv_base, g_base, kdk_base, G,
            offs_t, T, offs_c, offs_d, offs_e, mask_d, mask_e, keep,
            sq_t, sq_d, sk_t, sk_d, sv_t, sv_e, so_t, so_e, sg_t, C, HAS_G, UPCAST, PREC,
        )  # fmt: skip
    if STORE_G:
        tl.store(gout_ptr + i_bh * D * E + s_offs, G, mask=mask_de)


def _bwd_config(D: int, E: int, kernel: str) -> tuple[int, int, int, int]:
    """(C, num_warps, num_stages, programs per SM) for `_bwd_kernel` or `_dkdv_kernel`.

    From the sweep on an H200 (bf16, 65,536 tokens, `lintutor bench --tune`): at D = E = 64 the
    one-pass kernel wants 3 stages (0.60 ms at T = 512 where 2 stages gave 0.71 ms).
    """
    if max(next_pow2(D), next_pow2(E)) >= 128:
        return 64, 8, 2, 2
    return (64, 4, 3, 1) if kernel == "onepass" else (64, 4, 2, 2)


def _gate_args(g, dummy):
    """(pointer argument, strides) for an optional (B, H, T) log-gate; without one, `dummy`
    stands in (the kernels compute its base pointer but never load it)."""
    return (g, g.stride()) if g is not None else (dummy, (0, 0, 0))


def dkdv(q, k, v, do, dS=None, output_dS0=False, chunk_size=None, num_segments=None,
         config=None, g=None):  # fmt: skip
    """(dk, dv, dS_0 or None) in one reverse pass; dS (B, H, D, E) is the final state's grad.

    With log-gates g (B, H, T) a fourth result: k_s . dk_s (B, H, T) fp32. Needs D, E <= 128
    (the whole (D, E) state in one program). config = (C, warps, stages, programs per SM) for
    tuning.
    """
    B, H, T, D = q.shape
    E = v.shape[-1]
    C, warps, stages, ppsm = config or _bwd_config(D, E, "dkdv")
    C = chunk_size or C
    BD, BE = next_pow2(D), next_pow2(E)
    NS, seg_len = segmenting(B, H, T, 1, C, q.device, ppsm, num_segments)
    k, dk = _dense_like(k)  # the kernel writes dk with k's strides, dv with do's
    do, dv = _dense_like(do)
    g0 = None if dS is None else dS.to(torch.float32).reshape(B * H, D, E).contiguous()
    local = gam = None
    if NS > 1:  # every segment but the first is read by the one before it
        states = segment_states(q, do, NS, seg_len, C, min(BE, 64), 4, 2, g=g, reverse=True,
                                first=1)  # fmt: skip
        local, gam = states if g is not None else (states, None)
    gout = torch.empty(B, H, D, E, device=q.device, dtype=torch.float32) if output_dS0 else None
    kdk = torch.empty(B, H, T, device=q.device, dtype=torch.float32) if g is not None else None
    g_arg, sg = _gate_args(g, q)
    _dkdv_kernel[(NS, B * H)](
        q, k, v, do, dk, dv, g_arg, kdk if g is not None else q, g0, local, gam, gout,
        T, seg_len, H, NS,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *sg,
        D=D, E=E, BD=BD, BE=BE, C=C, HAS_G=g is not None, HAS_G0=g0 is not None,
        HAS_LOC=local is not None, STORE_G=output_dS0, UPCAST=interpreting(),
        PREC=dot_precision(q.dtype), num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if g is None:
        return dk, dv, gout
    return dk, dv, gout, kdk


def _dense_like(x):
    """(x, an empty tensor with x's strides); x is copied to dense first if it is not dense."""
    out = torch.empty_like(x)
    if out.stride() != x.stride():
        x = x.contiguous()
        out = torch.empty_like(x)
    return (x, out)


def bwd_onepass(q, k, v, do, S0=None, dS=None, output_dS0=False, chunk_size=None,
                config=None, g=None):  # fmt: skip
    """(dq, dk, dv, dS_0 or None) from `_bwd_kernel`: one program per head, no segments.

    With log-gates g (B, H, T) a fifth result: q_t . dq_t - k_t . dk_t (B, H, T) fp32.
    """
    B, H, T, D = q.shape
    E = v.shape[-1]
    C, warps, stages, _ = config or _bwd_config(D, E, "onepass")
    C = chunk_size or C
    q, dq = _dense_like(q)
    k, dk = _dense_like(k)
    do, dv = _dense_like(do)
    s0 = None if S0 is None else S0.to(torch.float32).reshape(B * H, D, E).contiguous()
    g0 = None if dS is None else dS.to(torch.float32).reshape(B * H, D, E).contiguous()
    gout = torch.empty(B, H, D, E, device=q.device, dtype=torch.float32) if output_dS0 else None
    qdq = kdk = None
    if g is not None:
        qdq, kdk = (torch.empty(B, H, T, device=q.device, dtype=torch.float32) for _ in "qk")
    g_arg, sg = _gate_args(g, q)
    qdq_arg, kdk_arg = (qdq, kdk) if g is not None else (q, q)
    _bwd_kernel[(B * H,)](
        q, k, v, do, dq, dk, dv, g_arg, qdq_arg, kdk_arg, s0, g0, gout, T, H,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *sg,
        D=D, E=E, BD=next_pow2(D), BE=next_pow2(E), C=C, HAS_G=g is not None,
        HAS_S0=s0 is not None, HAS_G0=g0 is not None, STORE_G=output_dS0,
        UPCAST=interpreting(), PREC=dot_precision(q.dtype), num_warps=warps,
        num_stages=stages,
    )  # fmt: skip
    if g is None:
        return dq, dk, dv, gout
    return dq, dk, dv, gout, qdq - kdk


BACKWARD_VERSIONS = ("auto", "onepass", "dkdv", "scans")


def pick_backward(B, H, T, D, E, chunk_size, device, backward="auto") -> str:
    """The version "auto" runs: v3 ("onepass") when one program per head fills the GPU, v2
    ("dkdv") when T must be cut into segments, v1 ("scans") when D or E > 64 (where the cards
    disagree on the fastest, see the module's versions); v2 and v3 need D, E <= 128."""
    if backward == "auto":
        C0, _, _, ppsm = _bwd_config(D, E, "dkdv")
        ns = segments_for(B * H, max(1, triton.cdiv(T, chunk_size or C0)), device, ppsm)
        return "scans" if max(D, E) > 64 else "onepass" if ns == 1 else "dkdv"
    if max(D, E) > 128:  # the fused kernels hold the whole (D, E) state in one program
        return "scans"
    return backward


def gate_gradient(dB, dS=None, ST=None):
    """dg (B, H, T) fp32 from the row dots dB_t = q_t . dq_t - k_t . dk_t: the final state's
    <dS_T, S_T> added at t = T, then the reverse cumulative sum dg_r = sum_{t>=r} dB_t."""
    if dS is not None:
        dB = dB.clone()
        dB[..., -1] += (dS.float() * ST.float()).sum((-2, -1))  # (B, H)
    return dB.flip(-1).cumsum(-1).flip(-1)  # (B, H, T)


def chunk_bwd(q, k, v, do, S0=None, dS=None, chunk_size=None, need_dS0=False, backward="auto",
              g=None, ST=None):  # fmt: skip
    """(dq, dk, dv, dS_0 or None), the same numbers from every version; with log-gates g
    (B, H, T) a fifth result, dg (B, H, T) fp32 (ST: the forward's final state, needed when dS
    is given).

    backward: "scans" (v1), "dkdv" (v2), "onepass" (v3) or "auto" (`pick_backward`).
    """
    if backward not in BACKWARD_VERSIONS:
        raise ValueError(f"backward must be one of {BACKWARD_VERSIONS}, got {backward!r}")
    B, H, T, D = q.shape
    E = v.shape[-1]
    C = chunk_size
    do = do.to(v.dtype)
    backward = pick_backward(B, H, T, D, E, C, q.device, backward)
    gated = g is not None
    if backward == "onepass":
        out = bwd_onepass(q, k, v, do, S0, dS, output_dS0=need_dS0, chunk_size=C, g=g)
        return out if not gated else (*out[:4], gate_gradient(out[4], dS, ST))
    S0t = None if S0 is None else S0.transpose(-1, -2)  # (B, H, E, D)
    dq, _, *qdq = chunk_scan(do, v, k, S0t, chunk_size=C, g=g, dot_with=q if gated else None)
    if backward == "dkdv":
        dk, dv, dS0, *kdk = dkdv(q, k, v, do, dS, output_dS0=need_dS0, chunk_size=C, g=g)
    else:
        dSt = None if dS is None else dS.transpose(-1, -2)  # (B, H, E, D)
        dv, dS0 = chunk_scan(k, q, do, dS, reverse=True, output_final_state=need_dS0,
                             chunk_size=C, g=g)  # fmt: skip
        dk, _, *kdk = chunk_scan(v, do, q, dSt, reverse=True, chunk_size=C, g=g,
                                 dot_with=k if gated else None)  # (B, H, T, D)  # fmt: skip
    if not gated:
        return dq, dk, dv, dS0
    return dq, dk, dv, dS0, gate_gradient(qdq[0] - kdk[0], dS, ST)
