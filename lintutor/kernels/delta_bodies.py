"""The gated delta rule as Triton kernels: the chunked forward and one-token decode (lesson 09).

The same schedule as `lintutor.delta.gated_delta_rule_chunked` (g=None: the delta rule), with
C = 64, in two passes over memory:

    _ut_kernel    one program per (chunk, head), all in parallel: T' = (I + A)^-1 diag(beta),
                  A[t, s] = beta_t (k_t . k_s) exp(G_t - G_s) for s < t, G the in-chunk cumsum
                  of g; written as a (B*H, T, 64) tensor in the input dtype (fla stores its
                  inverse in the input dtype too)
    _scan_kernel  one program per (E block, head) walks the chunks with the state S (D, BE)
                  in registers (fp32):
                      new = T' (v - gamma * (k S))          the values the delta rule writes
                      o   = scale * (gamma * (q S) + (q k^T * L) new)
                      S   = gamma_C S + (k * gamma_C / gamma)^T new
    _decode_kernel one program per (E block, sequence-head): S read once, written once

Why two passes: the solve depends only on k, beta and g, not on S, so it is taken off the scan's
sequential path, where at long T with few heads each program's latency per chunk is the time.
What it costs in memory (bf16, 65,536 tokens x 2048 wide, floor = q, k, v read + o written):
the scan reads q, k, v, T' and writes o; the UT pass reads k and writes T'. T' is 64 numbers per
token and head, the size of k at D = 64 and half of it at D = 128: 7 (D = 64) or 6 (D = 128)
tensor passes where the floor has 4 (fla's chunk_gated_delta_rule writes and reads the gates'
cumsum, its inverse, w, u, the per-chunk states h and v_new over five kernels).

Numerics of the solve, all in fp32: the four 16 x 16 diagonal blocks of (I + A) are inverted by
forward substitution (each row of the inverse from the rows above it), the six blocks below
them by T_ij = -X_ii sum_m A_im T_mj. Every intermediate is a block of the inverse itself or a
product with a block of A, so nothing grows beyond the inverse's own entries. The shorter
product (I - A)(I + A^2)(I + A^4)... (A is nilpotent, 6 factors for C = 64) would need powers
of A whose entries grow like binomial coefficients when keys are alike (all keys equal, beta = 1:
entries of A^32 up to C(62, 31) ~ 5e17), and fp32 cancels them to noise; lesson 09 shows it.
The dots run on the input dtype with fp32 accumulation (tensor cores), as lesson 08's and fla's:
S, R and the written values are rounded to bf16 for the dots, the state itself stays fp32.

Inputs are bf16/fp16/fp32 with any strides ((B, H, T, D) or fla's (B, T, H, D) without a copy);
beta and g (B, H, T) with any strides, read as fp32. In the interpreter tiles are upcast to
fp32 first (bf16 tl.dot is wrong there). Every load and store is masked.

Versions:
  v1  (this file) two-pass forward, C = 64, BE from `scan_config`, decode with BE = 32.
      Not yet timed on a GPU: `python -m lintutor.experiments.delta_bench` measures it against
      fla's chunk_gated_delta_rule and fused_recurrent_gated_delta_rule in one run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor.kernels._common import dot_precision, interpreting, next_pow2, num_sms

CHUNK = 64  # tokens per chunk: 4 blocks of 16 in the solve


@triton.jit
def _inv16(A, offs):
    """(I + A)^-1 of a strictly lower triangular 16 x 16 fp32 tile, by forward substitution.

    Row i of Y = (I + A)^-1 - I is -A[i] - A[i] Y: rows < i are final when row i is computed.
    Each row is read out of the register tile with a masked sum (no dynamic indexing).
    """
    Y = -A
    for i in range(2, 16):
        a = tl.sum(tl.where(offs[:, None] == i, -A, 0.0), 0)  # (16,): row i of -A
        a = a + tl.sum(a[:, None] * Y, 0)  # (16,): row i of Y
        Y = tl.where(offs[:, None] == i, a[None, :], Y)
    return Y + (offs[:, None] == offs[None, :]).to(tl.float32)


@triton.jit
def _ut_kernel(
    k_ptr, b_ptr, g_ptr, t_ptr,
    T, H,
    sk_b, sk_h, sk_t, sk_d,
    sb_b, sb_h, sb_t,
    sg_b, sg_h, sg_t,
    D: tl.constexpr, BD: tl.constexpr, USE_G: tl.constexpr, UPCAST: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """Program (chunk i_c, head i_bh): T' = (I + A)^-1 diag(beta) of one chunk of 64 tokens.

    A[t, s] = beta_t (k_t . k_s) exp(G_t - G_s) for s < t (G the in-chunk cumsum of g). The
    64 x 64 solve runs on 16 x 16 blocks: the four diagonal blocks by forward substitution, the
    six below them by the block formula T_ij = -X_ii sum_{j <= m < i} A_im T_mj, all in fp32.
    t (B*H, T, 64) gets row t of T', every column (zeros above the diagonal).
    """
    i_c = tl.program_id(0).to(tl.int64)
    i_bh = tl.program_id(1).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs = tl.arange(0, 16)  # (16,)
    offs_d = tl.arange(0, BD)  # (BD,)
    mask_d = offs_d < D
    t0 = i_c * 64
    # the chunk's 4 sub-blocks of 16 tokens: rows t0 + 16 j + offs
    r0, r1, r2, r3 = t0 + offs, t0 + 16 + offs, t0 + 32 + offs, t0 + 48 + offs  # (16,) each
    m0, m1, m2, m3 = r0 < T, r1 < T, r2 < T, r3 < T
    k_base = k_ptr + b * sk_b + h * sk_h
    kd = offs_d[None, :] * sk_d
    k0 = tl.load(k_base + r0[:, None] * sk_t + kd, mask=m0[:, None] & mask_d[None, :], other=0.0)
    k1 = tl.load(k_base + r1[:, None] * sk_t + kd, mask=m1[:, None] & mask_d[None, :], other=0.0)
    k2 = tl.load(k_base + r2[:, None] * sk_t + kd, mask=m2[:, None] & mask_d[None, :], other=0.0)
    k3 = tl.load(k_base + r3[:, None] * sk_t + kd, mask=m3[:, None] & mask_d[None, :], other=0.0)
    if UPCAST:
        k0, k1, k2, k3 = k0.to(tl.float32), k1.to(tl.float32), k2.to(tl.float32), k3.to(tl.float32)
    b_base = b_ptr + b * sb_b + h * sb_h
    be0 = tl.load(b_base + r0 * sb_t, mask=m0, other=0.0).to(tl.float32)  # (16,)
    be1 = tl.load(b_base + r1 * sb_t, mask=m1, other=0.0).to(tl.float32)
    be2 = tl.load(b_base + r2 * sb_t, mask=m2, other=0.0).to(tl.float32)
    be3 = tl.load(b_base + r3 * sb_t, mask=m3, other=0.0).to(tl.float32)
    strict = offs[:, None] > offs[None, :]  # (16, 16)
    # A_ij = beta_i (k_i k_j^T), (16, 16) fp32
    A00 = tl.dot(k0, tl.trans(k0), input_precision=PREC) * be0[:, None]
    A11 = tl.dot(k1, tl.trans(k1), input_precision=PREC) * be1[:, None]
    A22 = tl.dot(k2, tl.trans(k2), input_precision=PREC) * be2[:, None]
    A33 = tl.dot(k3, tl.trans(k3), input_precision=PREC) * be3[:, None]
    A10 = tl.dot(k1, tl.trans(k0), input_precision=PREC) * be1[:, None]
    A20 = tl.dot(k2, tl.trans(k0), input_precision=PREC) * be2[:, None]
    A21 = tl.dot(k2, tl.trans(k1), input_precision=PREC) * be2[:, None]
    A30 = tl.dot(k3, tl.trans(k0), input_precision=PREC) * be3[:, None]
    A31 = tl.dot(k3, tl.trans(k1), input_precision=PREC) * be3[:, None]
    A32 = tl.dot(k3, tl.trans(k2), input_precision=PREC) * be3[:, None]
    if USE_G:
        g_base = g_ptr + b * sg_b + h * sg_h
        g0 = tl.load(g_base + r0 * sg_t, mask=m0, other=0.0).to(tl.float32)
        g1 = tl.load(g_base + r1 * sg_t, mask=m1, other=0.0).to(tl.float32)
        g2 = tl.load(g_base + r2 * sg_t, mask=m2, other=0.0).to(tl.float32)
        g3 = tl.load(g_base + r3 * sg_t, mask=m3, other=0.0).to(tl.float32)
        G0 = tl.cumsum(g0, 0)  # (16,): log decay from the chunk start, inclusive
        G1 = tl.cumsum(g1, 0) + tl.sum(g0, 0)
        G2 = tl.cumsum(g2, 0) + tl.sum(g0, 0) + tl.sum(g1, 0)
        G3 = tl.cumsum(g3, 0) + tl.sum(g0, 0) + tl.sum(g1, 0) + tl.sum(g2, 0)
        # exp(G_t - G_s) <= 1 where it is used (s < t); tl.where keeps an overflow above out
        A00 = tl.where(strict, A00 * tl.exp(G0[:, None] - G0[None, :]), 0.0)
        A11 = tl.where(strict, A11 * tl.exp(G1[:, None] - G1[None, :]), 0.0)
        A22 = tl.where(strict, A22 * tl.exp(G2[:, None] - G2[None, :]), 0.0)
        A33 = tl.where(strict, A33 * tl.exp(G3[:, None] - G3[None, :]), 0.0)
        A10 = A10 * tl.exp(G1[:, None] - G0[None, :])
        A20 = A20 * tl.exp(G2[:, None] - G0[None, :])
        A21 = A21 * tl.exp(G2[:, None] - G1[None, :])
        A30 = A30 * tl.exp(G3[:, None] - G0[None, :])
        A31 = A31 * tl.exp(G3[:, None] - G1[None, :])
        A32 = A32 * tl.exp(G3[:, None] - G2[None, :])
    else:
        A00 = tl.where(strict, A00, 0.0)
        A11 = tl.where(strict, A11, 0.0)
        A22 = tl.where(strict, A22, 0.0)
        A33 = tl.where(strict, A33, 0.0)
    # the diagonal blocks of (I + A)^-1, then the blocks below them, fp32 throughout
    X00, X11, X22, X33 = _inv16(A00, offs), _inv16(A11, offs), _inv16(A22, offs), _inv16(A33, offs)
    X10 = -tl.dot(X11, tl.dot(A10, X00, input_precision="ieee"), input_precision="ieee")
    X21 = -tl.dot(X22, tl.dot(A21, X11, input_precision="ieee"), input_precision="ieee")
    X32 = -tl.dot(X33, tl.dot(A32, X22, input_precision="ieee"), input_precision="ieee")
    X20 = -tl.dot(
        X22, tl.dot(A20, X00, input_precision="ieee") + tl.dot(A21, X10, input_precision="ieee"),
        input_precision="ieee",
    )  # fmt: skip
    X31 = -tl.dot(
        X33, tl.dot(A31, X11, input_precision="ieee") + tl.dot(A32, X21, input_precision="ieee"),
        input_precision="ieee",
    )  # fmt: skip
    X30 = -tl.dot(
        X33,
        tl.dot(A30, X00, input_precision="ieee") + tl.dot(A31, X10, input_precision="ieee")
        + tl.dot(A32, X20, input_precision="ieee"),
        input_precision="ieee",
    )  # fmt: skip
    # T' = T diag(beta): column block j scaled by beta_j; rows of t are (64,) wide
    dt = t_ptr.dtype.element_ty
    t_base = t_ptr + i_bh * T * 64
    zero = tl.zeros([16, 16], dtype=dt)
    c0, c1, c2, c3 = offs[None, :], 16 + offs[None, :], 32 + offs[None, :], 48 + offs[None, :]
    p0, p1, p2, p3 = (t_base + r0[:, None] * 64, t_base + r1[:, None] * 64,
                      t_base + r2[:, None] * 64, t_base + r3[:, None] * 64)  # fmt: skip
    w0, w1, w2, w3 = be0[None, :], be1[None, :], be2[None, :], be3[None, :]
    tl.store(p0 + c0, (X00 * w0).to(dt), mask=m0[:, None])  # (16, 16) each
    tl.store(p0 + c1, zero, mask=m0[:, None])
    tl.store(p0 + c2, zero, mask=m0[:, None])
    tl.store(p0 + c3, zero, mask=m0[:, None])
    tl.store(p1 + c0, (X10 * w0).to(dt), mask=m1[:, None])
    tl.store(p1 + c1, (X11 * w1).to(dt), mask=m1[:, None])
    tl.store(p1 + c2, zero, mask=m1[:, None])
    tl.store(p1 + c3, zero, mask=m1[:, None])
    tl.store(p2 + c0, (X20 * w0).to(dt), mask=m2[:, None])
    tl.store(p2 + c1, (X21 * w1).to(dt), mask=m2[:, None])
    tl.store(p2 + c2, (X22 * w2).to(dt), mask=m2[:, None])
    tl.store(p2 + c3, zero, mask=m2[:, None])
    tl.store(p3 + c0, (X30 * w0).to(dt), mask=m3[:, None])
    tl.store(p3 + c1, (X31 * w1).to(dt), mask=m3[:, None])
    tl.store(p3 + c2, (X32 * w2).to(dt), mask=m3[:, None])
    tl.store(p3 + c3, (X33 * w3).to(dt), mask=m3[:, None])


@triton.jit
def _scan_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, t_ptr, o_ptr, s0_ptr, st_ptr,
    T, H, scale,
    sq_b, sq_h, sq_t, sq_d,
    sk_b, sk_h, sk_t, sk_d,
    sv_b, sv_h, sv_t, sv_e,
    sg_b, sg_h, sg_t,
    so_b, so_h, so_t, so_e,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
    USE_G: tl.constexpr, HAS_S0: tl.constexpr, STORE_ST: tl.constexpr,
    UPCAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Program (E block i_e, head i_bh): walk the chunks with S (D, BE) in registers, fp32.

        R   = v - gamma * (k S)             what the memory still has to learn, (C, BE)
        new = T' R                          the values the delta rule writes (UT transform)
        o   = scale * (gamma * (q S) + (q k^T * L) new)
        S   = gamma_C S + (k * gamma_C / gamma)^T new
    gamma_t = exp(G_t), L[t, s] = exp(G_t - G_s) for s <= t: lesson 04's decay, in-chunk.
    """
    i_e = tl.program_id(0).to(tl.int64)
    i_bh = tl.program_id(1).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_c = tl.arange(0, 64)  # (C,)
    offs_d = tl.arange(0, BD)  # (BD,)
    offs_e = i_e * BE + tl.arange(0, BE)  # (BE,)
    mask_d, mask_e = offs_d < D, offs_e < E
    mask_de = mask_d[:, None] & mask_e[None, :]
    s_offs = i_bh * D * E + offs_d[:, None] * E + offs_e[None, :]  # (BD, BE), contiguous (D, E)
    if HAS_S0:
        S = tl.load(s0_ptr + s_offs, mask=mask_de, other=0.0)  # (BD, BE) fp32
    else:
        S = tl.zeros([BD, BE], dtype=tl.float32)
    causal = offs_c[:, None] >= offs_c[None, :]  # (C, C): s <= t
    # pointer tiles of the first chunk, advanced by 64 rows per chunk (64-bit pointer
    # arithmetic, so T * stride may exceed 2^31)
    p_q = q_ptr + b * sq_b + h * sq_h + offs_c[:, None] * sq_t + offs_d[None, :] * sq_d  # (C, BD)
    p_k = k_ptr + b * sk_b + h * sk_h + offs_c[:, None] * sk_t + offs_d[None, :] * sk_d  # (C, BD)
    p_v = v_ptr + b * sv_b + h * sv_h + offs_c[:, None] * sv_t + offs_e[None, :] * sv_e  # (C, BE)
    p_o = o_ptr + b * so_b + h * so_h + offs_c[:, None] * so_t + offs_e[None, :] * so_e  # (C, BE)
    p_t = t_ptr + i_bh * T * 64 + offs_c[:, None] * 64 + offs_c[None, :]  # (C, C)
    p_g = g_ptr + b * sg_b + h * sg_h + offs_c * sg_t  # (C,)
    for c in range(0, tl.cdiv(T, 64)):
        mask_t = c * 64 + offs_c < T  # (C,)
        mask_td = mask_t[:, None] & mask_d[None, :]  # (C, BD)
        mask_te = mask_t[:, None] & mask_e[None, :]  # (C, BE)
        q = tl.load(p_q, mask=mask_td, other=0.0)  # (C, BD)
        k = tl.load(p_k, mask=mask_td, other=0.0)  # (C, BD)
        v = tl.load(p_v, mask=mask_te, other=0.0)  # (C, BE)
        Tc = tl.load(p_t, mask=mask_t[:, None], other=0.0)  # (C, C): T' of this chunk
        if UPCAST:
            q, k, Tc = q.to(tl.float32), k.to(tl.float32), Tc.to(tl.float32)
        dt = k.dtype
        S_in = S.to(dt)  # the state rounded once for this chunk's two dots (fp32 stays in S)
        KS = tl.dot(k, S_in, input_precision=PREC)  # (C, BE): what S returns for each k_t
        scores = tl.dot(q, tl.trans(k), input_precision=PREC)  # (C, C)
        QS = tl.dot(q, S_in, input_precision=PREC)  # (C, BE)
        if USE_G:
            g = tl.load(p_g, mask=mask_t, other=0.0).to(tl.float32)  # (C,)
            G = tl.cumsum(g, 0)  # (C,)
            G_end = tl.sum(g, 0)  # the chunk's total log decay
            gamma = tl.exp(G)  # (C,)
            R = v.to(tl.float32) - gamma[:, None] * KS
            scores = tl.where(causal, scores * tl.exp(G[:, None] - G[None, :]), 0.0)
            k_end = (k.to(tl.float32) * tl.exp(G_end - G)[:, None]).to(dt)  # (C, BD)
            S_dec = tl.exp(G_end) * S
            o = gamma[:, None] * QS
        else:
            R = v.to(tl.float32) - KS
            scores = tl.where(causal, scores, 0.0)
            k_end = k
            S_dec = S
            o = QS
        new = tl.dot(Tc, R.to(dt), input_precision=PREC)  # (C, BE): the written values
        o += tl.dot(scores.to(dt), new.to(dt), input_precision=PREC)  # (C, BE)
        tl.store(p_o, (scale * o).to(o_ptr.dtype.element_ty), mask=mask_te)  # (C, BE)
        S = tl.dot(tl.trans(k_end), new.to(dt), acc=S_dec, input_precision=PREC)  # (BD, BE)
        p_q += 64 * sq_t
        p_k += 64 * sk_t
        p_v += 64 * sv_t
        p_o += 64 * so_t
        p_t += 64 * 64
        p_g += 64 * sg_t
    if STORE_ST:
        tl.store(st_ptr + s_offs, S, mask=mask_de)  # (BD, BE)


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, b_ptr, g_ptr, s_ptr, o_ptr, snew_ptr,
    H, scale,
    sq_b, sq_h, sk_b, sk_h, sv_b, sv_h, sb_b, sb_h, sg_b, sg_h, so_b, so_h,
    D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, USE_G: tl.constexpr,
):  # fmt: skip
    """Program (E block i_e, sequence-head i_bh): S[:, block] read once, updated, written once.

    S <- a S;  u = beta (v - S^T k);  S <- S + k u^T;  o = scale S^T q.
    """
    i_e = tl.program_id(0).to(tl.int64)
    i_bh = tl.program_id(1).to(tl.int64)
    b, h = i_bh // H, i_bh % H
    offs_d = tl.arange(0, BD)  # (BD,)
    offs_e = i_e * BE + tl.arange(0, BE)  # (BE,)
    mask_d, mask_e = offs_d < D, offs_e < E
    mask_de = mask_d[:, None] & mask_e[None, :]
    s_offs = i_bh * D * E + offs_d[:, None] * E + offs_e[None, :]  # (BD, BE)
    S = tl.load(s_ptr + s_offs, mask=mask_de, other=0.0)  # (BD, BE) fp32
    q = tl.load(q_ptr + b * sq_b + h * sq_h + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + b * sk_b + h * sk_h + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + b * sv_b + h * sv_h + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    beta = tl.load(b_ptr + b * sb_b + h * sb_h).to(tl.float32)
    if USE_G:
        S = tl.exp(tl.load(g_ptr + b * sg_b + h * sg_h).to(tl.float32)) * S
    u = beta * (v - tl.sum(k[:, None] * S, 0))  # (BE,)
    S += k[:, None] * u[None, :]
    o = scale * tl.sum(q[:, None] * S, 0)  # (BE,)
    tl.store(snew_ptr + s_offs, S, mask=mask_de)
    tl.store(o_ptr + b * so_b + h * so_h + offs_e, o.to(o_ptr.dtype.element_ty), mask=mask_e)


def scan_config(B, H, D, E, device) -> dict:
    """Launch settings of the scan: {"BE", "warps", "stages"}; the UT pass: {"ut_warps"}.

    BE (columns of E per program): the largest of 64, 32, 16 that still gives one program per
    SM (B * H * E / BE >= SMs): at long T with few heads the heads alone leave SMs idle, and a
    narrower E block is more programs at the price of recomputing q k^T per block. 8 warps when
    a program's state is 128 x 64 or larger (register pressure), else 4. Not tuned on a GPU yet:
    `delta_bench --tune` sweeps these.
    """
    sms = num_sms(device)
    top = min(64, next_pow2(E))
    BE = 16
    for be in (64, 32, 16):
        if be <= top and B * H * triton.cdiv(E, be) >= sms:
            BE = be
            break
    BE = min(BE, top)
    warps = 8 if next_pow2(D) * BE >= 128 * 64 else 4
    return {"BE": BE, "warps": warps, "stages": 2, "ut_warps": 2}


def ut_chunks(k, beta, g=None, ut_warps=2):
    """T' = (I + A)^-1 diag(beta) of every chunk of 64 tokens: (B*H, T, 64) in k's dtype."""
    B, H, T, D = k.shape
    t = torch.empty(B * H, T, CHUNK, device=k.device, dtype=k.dtype)
    gg = beta if g is None else g  # a placeholder pointer when USE_G is off (never read)
    _ut_kernel[(triton.cdiv(T, CHUNK), B * H)](
        k, beta, gg, t, T, H, *k.stride(), *beta.stride(), *gg.stride(),
        D=D, BD=next_pow2(D), USE_G=g is not None, UPCAST=interpreting(),
        PREC=dot_precision(k.dtype), num_warps=ut_warps,
    )  # fmt: skip
    return t


def chunk_forward(q, k, v, beta, g=None, initial_state=None, output_final_state=False,
                  scale=1.0, config=None):  # fmt: skip
    """(o (B, H, T, E) in v's dtype, S (B, H, D, E) fp32 or None): both passes.

    config: {"BE", "warps", "stages", "ut_warps"}, any subset, overrides `scan_config`.
    O(T*C*(C+D+E) + T*D*E) work.
    """
    B, H, T, D = q.shape
    E = v.shape[-1]
    cfg = {**scan_config(B, H, D, E, q.device), **(config or {})}
    t = ut_chunks(k, beta, g, cfg["ut_warps"])
    o = torch.empty(B, H, T, E, device=q.device, dtype=v.dtype)
    s0 = None
    if initial_state is not None:
        s0 = initial_state.to(torch.float32).reshape(B * H, D, E).contiguous()
    st = None
    if output_final_state:
        st = torch.empty(B, H, D, E, device=q.device, dtype=torch.float32)
    gg = beta if g is None else g
    BE = cfg["BE"]
    _scan_kernel[(triton.cdiv(E, BE), B * H)](
        q, k, v, gg, t, o, s0, st, T, H, float(scale),
        *q.stride(), *k.stride(), *v.stride(), *gg.stride(), *o.stride(),
        D=D, E=E, BD=next_pow2(D), BE=BE, USE_G=g is not None, HAS_S0=s0 is not None,
        STORE_ST=output_final_state, UPCAST=interpreting(), PREC=dot_precision(q.dtype),
        num_warps=cfg["warps"], num_stages=cfg["stages"],
    )  # fmt: skip
    return o, st


def decode_step(q_t, k_t, v_t, beta_t, g_t, state, scale=1.0, out_state=None, BE=32, warps=4):
    """One token for every sequence: (o_t (B, H, E), new state (B, H, D, E) fp32).

    out_state=state updates the state in place. q_t, k_t, v_t may have any strides but a unit
    last one (others are copied); state must be contiguous fp32.
    """
    B, H, D = q_t.shape
    E = v_t.shape[-1]
    q_t, k_t, v_t = (x if x.stride(-1) == 1 else x.contiguous() for x in (q_t, k_t, v_t))
    o = torch.empty(B, H, E, device=q_t.device, dtype=v_t.dtype)
    new = torch.empty_like(state) if out_state is None else out_state
    gg = beta_t if g_t is None else g_t
    BE = min(BE, next_pow2(E))
    _decode_kernel[(triton.cdiv(E, BE), B * H)](
        q_t, k_t, v_t, beta_t, gg, state, o, new, H, float(scale),
        q_t.stride(0), q_t.stride(1), k_t.stride(0), k_t.stride(1), v_t.stride(0),
        v_t.stride(1), beta_t.stride(0), beta_t.stride(1), gg.stride(0), gg.stride(1),
        o.stride(0), o.stride(1),
        D=D, E=E, BD=next_pow2(D), BE=BE, USE_G=g_t is not None, num_warps=warps,
    )  # fmt: skip
    return o, new
