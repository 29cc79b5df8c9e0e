"""Chunked causal linear attention as Triton kernels: the forward scan and its driver (lesson 08).

The public launchers (`causal_linear_attention_triton`, `gated_linear_attention_triton`) and
their autograd Function are in `causal.py`; this file holds the kernels and `chunk_scan`, which
the backward reuses.

The same schedule as `lintutor.causal.causal_linear_attention_chunked(normalize=False)`:

    o_c = tril(q_c k_c^T) v_c + q_c S        intra-chunk masked matmul + earlier chunks' state
    S  <- S + k_c^T v_c                       (D, E) state, fp32

With a scalar gate (lesson 04: log-gates g <= 0, one per head and token; HAS_G) the same scan
decays. b_t = g_1 + ... + g_t is the cumulative log-gate *inside the chunk* (t = 1 .. C) and
b_C its last value; every exponent below is a difference of two of them that is <= 0, so
nothing overflows however strong the gates or long T (the factorized exp(b_t) * exp(-b_s) of
lesson 04 overflows once a chunk's log-gates sum past -88 in fp32):

    o_t = sum_{s<=t} exp(b_t - b_s) (q_t . k_s) v_s  +  exp(b_t) S^T q_t
    S  <- exp(b_C) S + sum_s exp(b_C - b_s) k_s v_s^T

exp(b_t - b_s) is masked (s > t gets -inf) *before* the exp: above the diagonal the difference
is positive and can be huge. g = None (HAS_G off) is the ungated kernel: the same code.

One kernel, `_chunk_scan_kernel`, walks the chunks of a segment of the sequence and keeps S in
registers. With REVERSE it walks from the end and keeps s >= t instead (the backward pass,
`chunked_bwd.py`, uses it for dq, dk and dv); gated, the roles of the two factors swap: a row
reads the state with exp(b_C - b_t) and a key enters it with exp(b_s). Long sequences with few
heads leave most of the GPU idle, so T is cut into NS segments: `_segment_state_kernel` sums the
decayed k^T v over sub-segments of each segment but the last (first, reversed) and their total
log-decay, and the scan runs all segments at once, each program first folding in the sums before
its own, S <- exp(total_j) S + sum_j. Grid: (E blocks, segments, B*H).

Inputs are bf16/fp16/fp32 with any strides ((B, H, T, D) or fla's (B, T, H, D) without a copy;
g (B, H, T) or a view of fla's (B, T, H)); accumulation, the gates' exponents and the state are
fp32; the dots run on the input dtype (tensor cores), as fla does. In the interpreter tiles are
upcast to fp32 first (bf16 tl.dot is wrong there).

Versions, each checked against lesson 03's reference before timing (H100 80GB HBM3, bf16,
65,536 tokens per call, H * D = 2048, fla 0.6.0, torch 2.11, triton 3.6; memory floor 0.358 ms):
  v1  C = 64, 64 columns of E per program, T cut into segments until there are 2 programs per
      SM. D=64: 0.39 ms (T=1K), 0.59 ms (T=64K); D=128: 0.71 ms (T=1K), 1.11 ms (T=64K).
  v2  D=128: C = 128, all 128 columns of E in one program, 8 warps, 4 programs per SM (from
      `lintutor bench --tune`): 0.41 ms (T=1K), 0.66 ms (T=64K), but 0.72-0.76 ms at T=2K-4K
      where the segment split kicked in (assets/bench_h100_v2.json).
  v3  segments only below one program per SM: 0.38-0.70 ms at every shape, but D=64 was 1-13%
      slower than fla's fused_chunk at T=512-4K and 1.5x at 16K (assets/bench_h100_v3.json).
  v4  from a sweep and an Nsight Compute profile: 4 pipeline stages instead of 2 (one program
      per SM streams only with more loads in flight: D=64 T=16K 0.49 -> 0.38 ms), 64 columns of
      E at D=128 as in v1 (the two programs of a head read q, k once from DRAM and once from
      L2), segments only below 3/4 of a program per SM and rounded down to whole waves, the
      segment sums added inside the scan (no torch prefix sum), the final state written only
      when asked (67 MB at T=512). D=64: 0.360-0.384 ms up to T=16K (0.97-1.00x fla's
      fused_chunk), 0.56 ms at 32K-64K (0.95x, 0.61x); D=128: 0.376-0.402 ms up to 16K,
      0.56 ms at 32K-64K (0.37-0.58x fla's chunk) (assets/bench_h100.json, bench_h100_v4a.json).
      On an H200 (one run, floor 0.257 ms): D=128 0.34-0.39 ms up to 16K (1.3-1.5x the floor),
      0.48 ms at 32K-64K (1.9x).
  v5  (this file) the scalar gate (HAS_G); the segment pre-pass sums only the segments whose
      sums are read (not the last one: at NS = 2 it reads half of k and v, not all) and can
      split each segment into `split` sub-segments so the pre-pass fills the GPU; the launch
      settings are one table, FORWARD_CONFIGS, keyed by head dims, gate and regime, which the
      sweep (`python -m lintutor.experiments.kernel_tune`) prints in the same form. The table
      holds the winners of one short H200 sweep (assets/tune_forward_h200.json, 60 s) where it
      measured enough, v4's settings elsewhere (see FORWARD_CONFIGS). H200, the same run:
      plain D=128 0.375 ms at T=1024 (1.49x the floor), gated 0.542 ms (0.67x fla's fastest
      gated forward); the other shapes were not measured (assets/gated_bench_h200.json).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor.kernels._common import dot_precision, interpreting, next_pow2, num_sms


@triton.jit
def _chunk_gates(g_base, offs_t, mask_t, sg_t, offs_c, C: tl.constexpr):
    """(b, b_C) of one chunk: the in-chunk cumulative log-gate (C,) fp32 and its last value.

    Tokens past the end load g = 0, so b_C is b at the chunk's last real token; b_C is read off
    the cumulative sum itself (not summed again), so b_C - b_s <= 0 holds exactly for g <= 0.
    """
    gc = tl.load(g_base + offs_t * sg_t, mask=mask_t, other=0.0).to(tl.float32)  # (C,)
    b = tl.cumsum(gc, 0)  # (C,) b_t = g_1 + ... + g_t inside the chunk
    b_last = tl.sum(tl.where(offs_c == C - 1, b, 0.0), 0)  # () b_C
    return b, b_last


@triton.jit
def _chunk_scan_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, g_ptr, s0_ptr, loc_ptr, gam_ptr, st_ptr, w_ptr, wd_ptr,
    T, seg_len, H, NSUB, M,
    sq_b, sq_h, sq_t, sq_d,
    sk_b, sk_h, sk_t, sk_d,
    sv_b, sv_h, sv_t, sv_e,
    so_b, so_h, so_t, so_e,
    sg_b, sg_h, sg_t,
    sw_b, sw_h, sw_t, sw_e,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, C: tl.constexpr,
    REVERSE: tl.constexpr, HAS_G: tl.constexpr, HAS_S0: tl.constexpr, HAS_LOC: tl.constexpr,
    STORE_ST: tl.constexpr, HAS_W: tl.constexpr, QK_EVICT: tl.constexpr,
    UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One program: E block i_e of head i_bh, segment i_s.

    s0 and st are fp32 (B*H, D, E); loc (B*H, NSUB, D, E) holds the (decayed) k^T v of each
    sub-segment, M sub-segments to a segment, and gam (B*H, NSUB) their total log-gates; the
    program starts from s0 folded with the sub-segments before its segment (after it with
    REVERSE). HAS_W: also store the row dots o_t . w_t of this E block into wd (n_e, B*H, T)
    fp32 (the backward's q . dq and k . dk, for the gate's gradient).
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
    if HAS_LOC:  # the state entering this segment: the sub-segments before it (after, reversed)
        if REVERSE:
            n_before = NSUB - (i_s + 1) * M
        else:
            n_before = i_s * M
        for jj in range(0, n_before):
            if REVERSE:
                j = NSUB - 1 - jj
            else:
                j = jj
            if HAS_G:
                S = S * tl.exp(tl.load(gam_ptr + i_bh * NSUB + j))  # decayed across sub j
            S += tl.load(loc_ptr + (i_bh * NSUB + j) * D * E + s_offs, mask=mask_de, other=0.0)
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
    g_base = g_ptr + b * sg_b + h * sg_h
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
            q_base + offs_t[:, None] * sq_t + offs_d[None, :] * sq_d,
            mask=mask_td,
            other=0.0,
            eviction_policy=QK_EVICT,
        )  # (C, BD)
        k = tl.load(
            k_base + offs_t[:, None] * sk_t + offs_d[None, :] * sk_d,
            mask=mask_td,
            other=0.0,
            eviction_policy=QK_EVICT,
        )  # (C, BD)
        v = tl.load(
            v_base + offs_t[:, None] * sv_t + offs_e[None, :] * sv_e, mask=mask_te, other=0.0
        )  # (C, BE)
        if UPCAST:
            q, k, v = q.to(tl.float32), k.to(tl.float32), v.to(tl.float32)
        scores = tl.dot(q, tl.trans(k), input_precision=PREC)  # (C, C) fp32
        if HAS_G:
            bg, b_last = _chunk_gates(g_base, offs_t, mask_t, sg_t, offs_c, C)
            if REVERSE:  # row t, key s >= t: exp(b_s - b_t); rows read S with exp(b_C - b_t)
                gap = bg[None, :] - bg[:, None]
                f_row = tl.exp(b_last - bg)  # (C,)
                f_key = tl.exp(bg)  # (C,)
            else:  # row t, key s <= t: exp(b_t - b_s); rows read S with exp(b_t)
                gap = bg[:, None] - bg[None, :]
                f_row = tl.exp(bg)
                f_key = tl.exp(b_last - bg)
            scores = scores * tl.exp(tl.where(causal, gap, float("-inf")))  # masked, then exp
            o = tl.dot(scores.to(v.dtype), v, input_precision=PREC)  # (C, BE) intra-chunk
            o += f_row[:, None] * tl.dot(q, S.to(q.dtype), input_precision=PREC)  # earlier
            v_in = (v.to(tl.float32) * f_key[:, None]).to(v.dtype)  # (C, BE) k_s's decay on v_s
            S = tl.dot(tl.trans(k), v_in, acc=S * tl.exp(b_last), input_precision=PREC)
        else:
            scores = tl.where(causal, scores, 0.0)
            o = tl.dot(scores.to(v.dtype), v, input_precision=PREC)  # (C, BE) intra-chunk
            o += tl.dot(q, S.to(q.dtype), input_precision=PREC)  # (C, BE) earlier chunks
            S = tl.dot(tl.trans(k), v, acc=S, input_precision=PREC)  # (BD, BE) += k_c^T v_c
        tl.store(
            o_base + offs_t[:, None] * so_t + offs_e[None, :] * so_e,
            o.to(o_ptr.dtype.element_ty),
            mask=mask_te,
        )  # (C, BE)
        if HAS_W:
            w = tl.load(
                w_ptr + b * sw_b + h * sw_h + offs_t[:, None] * sw_t + offs_e[None, :] * sw_e,
                mask=mask_te,
                other=0.0,
            ).to(tl.float32)  # (C, BE)
            wd_row = wd_ptr + (i_e * tl.num_programs(2) + i_bh) * T  # (n_e, B*H, T) fp32
            tl.store(wd_row + offs_t, tl.sum(o * w, 1), mask=mask_t)  # (C,)
    if STORE_ST:
        if REVERSE:
            last = 0
        else:
            last = tl.num_programs(1) - 1
        if i_s == last:
            tl.store(st_ptr + i_bh * D * E + s_offs, S, mask=mask_de)  # (BD, BE)


@triton.jit
def _segment_state_kernel(
    k_ptr, v_ptr, g_ptr, st_ptr, gam_ptr,
    T, seg_len, H, NSUB, first,
    sk_b, sk_h, sk_t, sk_d,
    sv_b, sv_h, sv_t, sv_e,
    sg_b, sg_h, sg_t,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, C: tl.constexpr,
    REVERSE: tl.constexpr, HAS_G: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """sum_{t in segment j} k_t v_t^T for one (E block, segment j = first + program, head) into
    st (B*H, NSUB, D, E); gated, each k_t decayed to the segment's end (to its start with
    REVERSE) and the segment's total log-gate stored in gam (B*H, NSUB)."""
    i_e = tl.program_id(0).to(tl.int64)
    i_s = first + tl.program_id(1).to(tl.int64)
    i_bh = tl.program_id(2).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_d = tl.arange(0, BD)
    offs_e = i_e * BE + tl.arange(0, BE)
    offs_c = tl.arange(0, C)
    mask_d, mask_e = offs_d < D, offs_e < E
    S = tl.zeros([BD, BE], dtype=tl.float32)
    total = tl.zeros([1], dtype=tl.float32)  # (1,) the segment's sum of log-gates
    seg_start = i_s * seg_len
    seg_end = tl.minimum(seg_start + seg_len, T)
    n_chunks = tl.cdiv(seg_end - seg_start, C)
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    g_base = g_ptr + b * sg_b + h * sg_h
    for j in range(0, n_chunks):
        if REVERSE:
            c = n_chunks - 1 - j
        else:
            c = j
        offs_t = seg_start + c * C + offs_c  # (C,)
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
        if HAS_G:  # the same update as the scan's, walked in the scan's direction
            bg, b_last = _chunk_gates(g_base, offs_t, mask_t, sg_t, offs_c, C)
            if REVERSE:
                f_key = tl.exp(bg)
            else:
                f_key = tl.exp(b_last - bg)
            v = (v.to(tl.float32) * f_key[:, None]).to(v.dtype)  # (C, BE)
            S = S * tl.exp(b_last)
            total += b_last
        S = tl.dot(tl.trans(k), v, acc=S, input_precision=PREC)  # (BD, BE)
    s_offs = offs_d[:, None] * E + offs_e[None, :]
    tl.store(st_ptr + (i_bh * NSUB + i_s) * D * E + s_offs, S,
             mask=mask_d[:, None] & mask_e[None, :])  # fmt: skip
    if HAS_G:
        if i_e == 0:
            tl.store(gam_ptr + i_bh * NSUB + i_s + tl.arange(0, 1), total)  # (1,)


# Below this many programs per SM a scan is cut into segments (see `segments_for`).
SEGMENT_BELOW = 0.75

# The forward's launch settings. Key: (next_pow2(D), next_pow2(E), gated, few), where `few`
# says the grid of 64-column programs, B * H * ceil(E / 64), is below SEGMENT_BELOW of the SMs
# (long T with few sequences). C: chunk; BE: columns of E per program; warps, stages; ppsm:
# programs per SM that the segment split aims for (`few` only); split: sub-segments per segment
# in the pre-pass; evict: keep q, k in L2 for the other E blocks of the head ("evict_last").
# `python -m lintutor.experiments.kernel_tune` prints its winners in this form, to paste here.
# From the H200 sweep in assets/tune_forward_h200.json (60 s, cut short by its budget): the
# short-T winners of D = 128 (plain and gated) and D = 64 (gated), each the best geometric mean
# over T = 512, 4K, 16K; the long-T winners where the sweep measured every length they imply.
# The gated D = 128 long-T entry keeps v4's rule: its sweep reached T = 65,536 with 1-2 segments
# only, so its "winner" (never cut, 1.32 ms at T = 32K against 0.91 ms with 2 segments) is an
# artifact of the cut. D = 64 plain short T keeps v4's settings (not swept).
FORWARD_CONFIGS = {
    (64, 64, False, False): dict(C=64, BE=64, warps=4, stages=4, ppsm=2, split=1, evict=False),
    (64, 64, False, True): dict(C=64, BE=64, warps=4, stages=4, ppsm=1, split=4, evict=False),
    (128, 128, False, False): dict(C=64, BE=64, warps=4, stages=4, ppsm=1, split=1, evict=True),
    (128, 128, False, True): dict(C=64, BE=64, warps=4, stages=4, ppsm=1, split=2, evict=False),
    (64, 64, True, False): dict(C=64, BE=64, warps=4, stages=3, ppsm=2, split=1, evict=False),
    (64, 64, True, True): dict(C=64, BE=64, warps=4, stages=4, ppsm=2, split=2, evict=False),
    (128, 128, True, False): dict(C=64, BE=64, warps=4, stages=2, ppsm=1, split=1, evict=False),
    (128, 128, True, True): dict(C=64, BE=64, warps=4, stages=4, ppsm=1, split=1, evict=False),
}


def forward_config(D: int, E: int, gated: bool = False, few: bool = False) -> dict:
    """The launch settings of a forward scan over (D, E): FORWARD_CONFIGS, else v4's rule.

    v4's rule, from the H100 sweeps (bf16, 65,536 tokens): C = 64, 64 columns of E per program,
    4 warps and 4 pipeline stages (D = 64: 0.360 ms at T = 512, 0.380 ms at T = 16K where 2
    stages gave 0.49 ms); at D = 128 the two programs of a head run side by side and read q, k
    once from memory, the second time from L2 (0.38 ms at T = 16K against 0.64 ms for one
    program over all 128 columns); about 2 (D = 64) or 1 (D = 128) programs per SM at long T.
    """
    key = (next_pow2(D), next_pow2(E), bool(gated), bool(few))
    if key in FORWARD_CONFIGS:
        return dict(FORWARD_CONFIGS[key])
    ppsm = 1 if next_pow2(D) >= 128 else 2
    return dict(C=64, BE=min(64, next_pow2(E)), warps=4, stages=4, ppsm=ppsm, split=1,
                evict=False)  # fmt: skip


def _config(D: int, E: int) -> tuple[int, int, int, int, int]:
    """(C, BE, num_warps, num_stages, programs per SM) of the plain forward (`forward_config`)."""
    c = forward_config(D, E)
    return c["C"], c["BE"], c["warps"], c["stages"], c["ppsm"]


def few_programs(B: int, H: int, E: int, device) -> bool:
    """True when B * H * ceil(E / 64) programs are below SEGMENT_BELOW of the SMs."""
    return B * H * triton.cdiv(E, 64) < SEGMENT_BELOW * num_sms(device)


def segments_for(programs: int, n_chunks: int, device, programs_per_sm: int) -> int:
    """How many segments to cut T into when `programs` (B*H*E blocks) would each scan all of it.

    One program streams at most ~28 GB/s on an H100, so a grid with fewer programs than about
    3/4 of the SMs leaves bandwidth unused. Segments fix that at the cost of a second read of
    the two tensors whose state they sum (k and v, all segments but one), so they are used only
    below that.
    """
    sms = num_sms(device)
    if programs >= SEGMENT_BELOW * sms:
        return 1
    # rounded down: one more segment than fits in a wave leaves a tail (measured: 192 programs
    # on 132 SMs took 0.67 ms where 128 took 0.55 ms)
    return max(1, min(n_chunks, programs_per_sm * sms // programs))


def segment_states(k, v, NS, seg_len, C, BE, warps, stages, g=None, reverse=False, first=0,
                   count=None):  # fmt: skip
    """(B*H, NS, D, E) fp32: sum of k_t v_t^T over each of NS segments of seg_len tokens.

    Only segments first .. first + count - 1 are computed (default all; the others stay
    unwritten). With log-gates g (B, H, T): each k_t decayed to its segment's end (to its start
    with reverse), and a second result, (B*H, NS) fp32, the segments' total log-gates.
    """
    B, H, T, D = k.shape
    E = v.shape[-1]
    count = NS - first if count is None else count
    local = torch.empty(B * H, NS, D, E, device=k.device, dtype=torch.float32)
    gam = torch.empty(B * H, NS, device=k.device, dtype=torch.float32) if g is not None else None
    if count > 0:
        _segment_state_kernel[(triton.cdiv(E, BE), count, B * H)](
            k, v, g if g is not None else k, local, gam, T, seg_len, H, NS, first,
            *k.stride(), *v.stride(), *(g.stride() if g is not None else (0, 0, 0)),
            D=D, E=E, BD=next_pow2(D), BE=BE, C=C, REVERSE=reverse, HAS_G=g is not None,
            UPCAST=interpreting(), PREC=dot_precision(k.dtype), num_warps=warps,
            num_stages=stages,
        )  # fmt: skip
    return local if g is None else (local, gam)


def segmenting(B, H, T, n_e, C, device, programs_per_sm, requested=None):
    """(NS, seg_len): NS >= 1 segments of whole chunks covering T; `requested` overrides NS."""
    n_chunks = max(1, triton.cdiv(T, C))
    if requested is None:
        requested = segments_for(B * H * n_e, n_chunks, device, programs_per_sm)
    NS = max(1, min(requested, n_chunks))
    seg_len = triton.cdiv(n_chunks, NS) * C
    return max(1, triton.cdiv(max(T, 1), seg_len)), seg_len


def split_segments(T, NS, seg_len, C, split):
    """(NS, seg_len, M, sub_len): each segment cut into M <= split sub-segments of whole chunks,
    seg_len = M * sub_len (rounded up so that segment boundaries fall on sub-segment ones)."""
    seg_chunks = seg_len // C
    M = max(1, min(split, seg_chunks))
    sub_len = triton.cdiv(seg_chunks, M) * C
    seg_len = M * sub_len
    return max(1, triton.cdiv(max(T, 1), seg_len)), seg_len, M, sub_len


def chunk_scan(q, k, v, initial_state=None, reverse=False, output_final_state=False,
               chunk_size=None, num_segments=None, out=None, config=None,
               programs_per_sm=None, g=None, dot_with=None, split=None):  # fmt: skip
    """o_t = sum_{s<=t} (q_t.k_s) v_s + S0^T q_t (s>=t with reverse) in Triton; layout (B,H,T,*).

    q, k (B, H, T, D) and v (B, H, T, E) may have any strides; g (B, H, T) log-gates (any
    strides) decay the scan as in the module docstring. Returns (o, S_final or None) with o in
    v's dtype and S (B, H, D, E) fp32; with dot_with (B, H, T, E) a third result, (B, H, T)
    fp32, the row dots o_t . dot_with_t. O(T*C*(D+E) + T*D*E) work. config = (BE, num_warps,
    num_stages) or a dict like FORWARD_CONFIGS' values, num_segments, programs_per_sm and split
    are for tuning; None takes `forward_config`'s, as does chunk_size=None.
    """
    B, H, T, D = q.shape
    E = v.shape[-1]
    few = few_programs(B, H, E, q.device)
    cfg = forward_config(D, E, g is not None, few)
    if isinstance(config, dict):
        cfg.update(config)
    elif config is not None:
        cfg["BE"], cfg["warps"], cfg["stages"] = config
    C = chunk_size or cfg["C"]
    BE = cfg["BE"]
    n_e = triton.cdiv(E, BE)
    ppsm = programs_per_sm or cfg["ppsm"]
    NS, seg_len = segmenting(B, H, T, n_e, C, q.device, ppsm, num_segments)
    NS, seg_len, M, sub_len = split_segments(T, NS, seg_len, C, split or cfg["split"])
    NSUB = max(1, triton.cdiv(max(T, 1), sub_len))
    o = out if out is not None else torch.empty(B, H, T, E, device=q.device, dtype=v.dtype)
    s0 = None
    if initial_state is not None:
        s0 = initial_state.to(torch.float32).reshape(B * H, D, E).contiguous()
    local = gam = None
    if NS > 1:  # sums of the sub-segments some other segment starts after (before, reversed)
        first, count = (M, NSUB - M) if reverse else (0, (NS - 1) * M)
        states = segment_states(k, v, NSUB, sub_len, C, BE, cfg["warps"], cfg["stages"], g=g,
                                reverse=reverse, first=first, count=count)  # fmt: skip
        local, gam = states if g is not None else (states, None)
    st = None
    if output_final_state:
        st = torch.empty(B, H, D, E, device=q.device, dtype=torch.float32)
    wd = None
    if dot_with is not None:
        wd = torch.empty(n_e, B * H, T, device=q.device, dtype=torch.float32)
    g_arg, w_arg = (g if g is not None else q), (dot_with if dot_with is not None else v)
    _chunk_scan_kernel[(n_e, NS, B * H)](
        q, k, v, o, g_arg, s0, local, gam, st, w_arg, wd, T, seg_len, H, NSUB, M,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        *(g.stride() if g is not None else (0, 0, 0)), *w_arg.stride(),
        D=D, E=E, BD=next_pow2(D), BE=BE, C=C, REVERSE=reverse, HAS_G=g is not None,
        HAS_S0=s0 is not None, HAS_LOC=local is not None, STORE_ST=output_final_state,
        HAS_W=wd is not None, QK_EVICT="evict_last" if cfg["evict"] and n_e > 1 else "",
        UPCAST=interpreting(), PREC=dot_precision(q.dtype), num_warps=cfg["warps"],
        num_stages=cfg["stages"],
    )  # fmt: skip
    if dot_with is None:
        return o, st
    return o, st, wd.sum(0).view(B, H, T)
