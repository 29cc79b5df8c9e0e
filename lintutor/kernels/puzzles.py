"""Five small Triton puzzles that lead from vector add to lesson 08's kernels (exercises 08.4-08.8).

Each puzzle adds one idea, in the order the linear-attention kernels need them:

    08.4  outer_product_triton        2-D grid, 2-D offsets and masks      out = x y^T  (k v^T)
    08.5  row_sums_triton             a loop over blocks, fp32 accumulator of fp16 inputs
    08.6  matmul_triton               tl.dot on tiles, a loop over K       C = A B
    08.7  cumsum_triton               a carry across blocks: the scan      out = cumsum(x)
    08.8  causal_chunk_triton         one chunk of the causal form: masked q k^T, state in, out

The launcher of each puzzle is fixed (grid, tile sizes, dtypes); the learner writes the kernel.
Every launch goes through `checked_launch`, so an out-of-bounds read or write, or an output
element no program wrote, is reported even in the CPU interpreter. Sizes are runtime arguments
and only tile sizes are constexpr: a GPU compiles each kernel once (`teaching.reuse`). Each
function takes CPU or GPU tensors of any float dtype (the checker passes float64) and returns
the inputs' device and dtype. `lintutor.kernels.access` draws which elements each program reads
and writes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor.kernels._common import device
from lintutor.kernels.checked import checked_launch
from lintutor.kernels.teaching import reuse


def outer_product_triton(x, y):
    """x (M,), y (N,) -> out (M, N), out[i, j] = x[i] * y[j]; one program per 8 x 8 tile."""

    @triton.jit
    def kernel(x_ptr, y_ptr, out_ptr, M, N, BM: tl.constexpr, BN: tl.constexpr):
        pid_m = tl.program_id(0).to(tl.int64)  # which tile row
        pid_n = tl.program_id(1).to(tl.int64)  # which tile column
        offs_m = pid_m * BM + tl.arange(0, BM)  # (BM,) rows of this tile
        offs_n = pid_n * BN + tl.arange(0, BN)  # (BN,) columns of this tile
        mask_m, mask_n = offs_m < M, offs_n < N
        x = tl.load(x_ptr + offs_m, mask=mask_m, other=0.0)  # (BM,)
        y = tl.load(y_ptr + offs_n, mask=mask_n, other=0.0)  # (BN,)
        out = x[:, None] * y[None, :]  # (BM, BN)
        tl.store(out_ptr + offs_m[:, None] * N + offs_n[None, :], out,
                 mask=mask_m[:, None] & mask_n[None, :])  # fmt: skip

    kernel = reuse(kernel)
    M, N = x.shape[0], y.shape[0]
    dev = device()
    x32, y32 = x.to(dev, torch.float32), y.to(dev, torch.float32)
    out = torch.empty(M, N, device=dev)
    grid = (triton.cdiv(M, 8), triton.cdiv(N, 8))
    checked_launch(kernel, grid, x32, y32, out, M, N, BM=8, BN=8, outputs=("out_ptr",))
    return out.to(x.device, x.dtype)


def row_sums_triton(x):
    """x (R, N) -> (R,) row sums of x in fp16, accumulated in fp32; a program per 4 rows."""

    @triton.jit
    def kernel(x_ptr, out_ptr, R, N, BR: tl.constexpr, BN: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        offs_r = pid * BR + tl.arange(0, BR)  # (BR,) the rows of this program
        mask_r = offs_r < R
        acc = tl.zeros([BR], dtype=tl.float32)  # fp32: fp16 keeps only 11 significant bits
        for start in range(0, N, BN):  # walk the columns in blocks of BN
            offs_n = start + tl.arange(0, BN)  # (BN,)
            x = tl.load(
                x_ptr + offs_r[:, None] * N + offs_n[None, :],
                mask=mask_r[:, None] & (offs_n < N)[None, :],
                other=0.0,
            )  # (BR, BN) fp16
            acc += tl.sum(x.to(tl.float32), axis=1)  # upcast before adding
        tl.store(out_ptr + offs_r, acc, mask=mask_r)

    kernel = reuse(kernel)
    R, N = x.shape
    dev = device()
    x16 = x.to(dev, torch.float16).contiguous()
    out = torch.empty(R, device=dev)
    checked_launch(kernel, (triton.cdiv(R, 4),), x16, out, R, N, BR=4, BN=16,
                   outputs=("out_ptr",))  # fmt: skip
    return out.to(x.device, x.dtype)


def matmul_triton(a, b):
    """a (M, K), b (K, N) in fp16 -> c (M, N) = a @ b, fp32 accumulation; a program per tile."""

    @triton.jit
    def kernel(a_ptr, b_ptr, c_ptr, M, N, K,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):  # fmt: skip
        pid_m = tl.program_id(0).to(tl.int64)
        pid_n = tl.program_id(1).to(tl.int64)
        offs_m = pid_m * BM + tl.arange(0, BM)  # (BM,)
        offs_n = pid_n * BN + tl.arange(0, BN)  # (BN,)
        mask_m, mask_n = offs_m < M, offs_n < N
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        for start in range(0, K, BK):  # walk K in blocks: a row band of a, a column band of b
            offs_k = start + tl.arange(0, BK)  # (BK,)
            mask_k = offs_k < K
            a = tl.load(
                a_ptr + offs_m[:, None] * K + offs_k[None, :],
                mask=mask_m[:, None] & mask_k[None, :],
                other=0.0,
            )  # (BM, BK)
            b = tl.load(
                b_ptr + offs_k[:, None] * N + offs_n[None, :],
                mask=mask_k[:, None] & mask_n[None, :],
                other=0.0,
            )  # (BK, BN)
            acc += tl.dot(a, b)  # (BM, BN): fp16 products, fp32 sums
        tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], acc,
                 mask=mask_m[:, None] & mask_n[None, :])  # fmt: skip

    kernel = reuse(kernel)
    (M, K), N = a.shape, b.shape[1]
    dev = device()
    a16, b16 = a.to(dev, torch.float16).contiguous(), b.to(dev, torch.float16).contiguous()
    c = torch.empty(M, N, device=dev)
    grid = (triton.cdiv(M, 16), triton.cdiv(N, 16))  # tl.dot needs tiles of at least 16
    checked_launch(kernel, grid, a16, b16, c, M, N, K, BM=16, BN=16, BK=16, outputs=("c_ptr",))
    return c.to(a.device, a.dtype)


def cumsum_triton(x):
    """x (R, N) -> out (R, N), out[r, n] = x[r, 0] + ... + x[r, n]; one program per row walks
    its blocks of 8 and carries the running total from block to block."""

    @triton.jit
    def kernel(x_ptr, out_ptr, N, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        carry = tl.zeros([1], dtype=tl.float32)  # (1,) the sum of the blocks before this one
        for start in range(0, N, BLOCK):
            offs = start + tl.arange(0, BLOCK)  # (BLOCK,)
            mask = offs < N
            x = tl.load(x_ptr + row * N + offs, mask=mask, other=0.0)  # (BLOCK,)
            out = tl.cumsum(x, axis=0) + carry  # (BLOCK,) inside the block + blocks before
            tl.store(out_ptr + row * N + offs, out, mask=mask)
            carry += tl.sum(x, axis=0)  # after the output: the block is not counted twice

    kernel = reuse(kernel)
    R, N = x.shape
    dev = device()
    x32 = x.to(dev, torch.float32).contiguous()
    out = torch.empty(R, N, device=dev)
    checked_launch(kernel, (R,), x32, out, N, BLOCK=8, outputs=("out_ptr",))
    return out.to(x.device, x.dtype)


def causal_chunk_triton(q, k, v, state):
    """One chunk of causal linear attention for each of G heads, one program per head:
    q, k (G, L, D), v (G, L, E), state (G, D, E), L <= 16 -> (o (G, L, E), new state (G, D, E))
    with o = (q k^T masked to s <= t) v + q S and new state S + k^T v."""

    @triton.jit
    def kernel(q_ptr, k_ptr, v_ptr, s_ptr, o_ptr, snew_ptr, L, D, E,
               C: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr):  # fmt: skip
        g = tl.program_id(0).to(tl.int64)  # which head
        offs_c, offs_d, offs_e = tl.arange(0, C), tl.arange(0, BD), tl.arange(0, BE)
        mask_c, mask_d, mask_e = offs_c < L, offs_d < D, offs_e < E
        qk_offs = g * L * D + offs_c[:, None] * D + offs_d[None, :]  # (C, BD)
        mask_cd = mask_c[:, None] & mask_d[None, :]
        q = tl.load(q_ptr + qk_offs, mask=mask_cd, other=0.0)  # (C, BD)
        k = tl.load(k_ptr + qk_offs, mask=mask_cd, other=0.0)  # (C, BD)
        v = tl.load(
            v_ptr + g * L * E + offs_c[:, None] * E + offs_e[None, :],
            mask=mask_c[:, None] & mask_e[None, :],
            other=0.0,
        )  # (C, BE)
        s_offs = g * D * E + offs_d[:, None] * E + offs_e[None, :]  # (BD, BE)
        mask_de = mask_d[:, None] & mask_e[None, :]
        S = tl.load(s_ptr + s_offs, mask=mask_de, other=0.0)  # (BD, BE)
        scores = tl.dot(q, tl.trans(k), input_precision="ieee")  # (C, C)
        scores = tl.where(offs_c[:, None] >= offs_c[None, :], scores, 0.0)  # key s <= query t
        o = tl.dot(scores, v, input_precision="ieee")  # (C, BE) inside the chunk
        o += tl.dot(q, S, input_precision="ieee")  # (C, BE) the chunks before
        tl.store(o_ptr + g * L * E + offs_c[:, None] * E + offs_e[None, :], o,
                 mask=mask_c[:, None] & mask_e[None, :])  # fmt: skip
        S += tl.dot(tl.trans(k), v, input_precision="ieee")  # (BD, BE) after the output
        tl.store(snew_ptr + s_offs, S, mask=mask_de)

    kernel = reuse(kernel)
    G, L, D = q.shape
    E = v.shape[-1]
    dev = device()
    q32, k32, v32, s32 = (t.to(dev, torch.float32).contiguous() for t in (q, k, v, state))
    o = torch.empty(G, L, E, device=dev)
    s_new = torch.empty(G, D, E, device=dev)
    BD, BE = max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(E))
    checked_launch(kernel, (G,), q32, k32, v32, s32, o, s_new, L, D, E, C=16, BD=BD, BE=BE,
                   outputs=("o_ptr", "snew_ptr"))  # fmt: skip
    return o.to(q.device, q.dtype), s_new.to(state.device, state.dtype)
