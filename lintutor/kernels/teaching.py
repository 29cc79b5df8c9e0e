"""The simplest version (v0) of each kernel, as lesson 08's exercises build them.

One program per (batch, head), the whole (D, E) state in one tile, fp32, no tuning: short
enough to read in one screen, and the reference the exercise checker compares against. The fast
versions are in `linear.py`, `chunked.py` and `decode.py` (launched from `causal.py`); the
puzzles that lead up to these kernels are in `puzzles.py`.

Each kernel is defined inside its launcher, so that the launcher reads as one piece, and passed
through `reuse`: a kernel defined inside a function is a new object on every call, and Triton
keeps its compiled kernels per object (one per set of constexpr values), so without `reuse` every
call would go through Triton's compiler again (at best a hit in its disk cache). Sizes (T, D, E)
are runtime arguments; only the tile sizes are constexpr, so a GPU compiles each kernel once per
tile shape.

Each function takes CPU or GPU tensors of any float dtype (the checker passes float64), runs the
kernel in fp32 where kernels run (GPU, or the interpreter on CPU) and returns q's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lintutor.kernels._common import device

_BUILT: dict = {}


def reuse(kernel):
    """The kernel built the first time the same kernel code was seen in this process.

    Keyed by the code object of the kernel's Python function: the same `def` inside a launcher
    gives the same key on every call; an edited and re-run cell gives a new one.
    """
    fn = getattr(kernel, "fn", kernel)
    key = (fn.__module__, fn.__qualname__, fn.__code__)
    return _BUILT.setdefault(key, kernel)


def linear_attention_simple_triton(q, k, v):
    """Non-causal o = q (k^T v) with one program per head: pass 1 sums S, pass 2 applies it."""

    @triton.jit
    def kernel(q_ptr, k_ptr, v_ptr, o_ptr, T, D, E,
               BT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr):  # fmt: skip
        bh = tl.program_id(0).to(tl.int64)  # which (batch, head)
        offs_d, offs_e = tl.arange(0, BD), tl.arange(0, BE)  # (BD,), (BE,)
        mask_d, mask_e = offs_d < D, offs_e < E
        S = tl.zeros([BD, BE], dtype=tl.float32)  # (BD, BE)
        for start in range(0, T, BT):  # pass 1: S = sum_t k_t v_t^T
            offs_t = start + tl.arange(0, BT)  # (BT,)
            mask_t = offs_t < T
            k = tl.load(
                k_ptr + bh * T * D + offs_t[:, None] * D + offs_d[None, :],
                mask=mask_t[:, None] & mask_d[None, :],
                other=0.0,
            )  # (BT, BD)
            v = tl.load(
                v_ptr + bh * T * E + offs_t[:, None] * E + offs_e[None, :],
                mask=mask_t[:, None] & mask_e[None, :],
                other=0.0,
            )  # (BT, BE)
            S += tl.dot(tl.trans(k), v, input_precision="ieee")  # (BD, BE)
        for start in range(0, T, BT):  # pass 2: o_t = S^T q_t
            offs_t = start + tl.arange(0, BT)
            mask_t = offs_t < T
            q = tl.load(
                q_ptr + bh * T * D + offs_t[:, None] * D + offs_d[None, :],
                mask=mask_t[:, None] & mask_d[None, :],
                other=0.0,
            )  # (BT, BD)
            o = tl.dot(q, S, input_precision="ieee")  # (BT, BE)
            tl.store(o_ptr + bh * T * E + offs_t[:, None] * E + offs_e[None, :], o,
                     mask=mask_t[:, None] & mask_e[None, :])  # fmt: skip

    B, H, T, D = q.shape
    E = v.shape[-1]
    dev = device()
    q32, k32, v32 = (x.to(dev, torch.float32).contiguous() for x in (q, k, v))
    o = torch.empty(B, H, T, E, device=dev, dtype=torch.float32)
    BD, BE = max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(E))
    kernel = reuse(kernel)  # built once, not on every call
    kernel[(B * H,)](q32, k32, v32, o, T, D, E, BT=16, BD=BD, BE=BE)
    return o.to(q.device, q.dtype)


def causal_linear_attention_simple_triton(q, k, v):
    """Causal chunked forward, one program per head, chunks of 16 tokens, S in registers."""

    @triton.jit
    def kernel(q_ptr, k_ptr, v_ptr, o_ptr, T, D, E,
               C: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr):  # fmt: skip
        bh = tl.program_id(0).to(tl.int64)
        offs_c, offs_d, offs_e = tl.arange(0, C), tl.arange(0, BD), tl.arange(0, BE)
        mask_d, mask_e = offs_d < D, offs_e < E
        causal = offs_c[:, None] >= offs_c[None, :]  # (C, C): key s <= query t
        S = tl.zeros([BD, BE], dtype=tl.float32)  # state of the chunks before this one
        for start in range(0, T, C):
            offs_t = start + offs_c  # (C,)
            mask_t = offs_t < T
            q = tl.load(
                q_ptr + bh * T * D + offs_t[:, None] * D + offs_d[None, :],
                mask=mask_t[:, None] & mask_d[None, :],
                other=0.0,
            )  # (C, BD)
            k = tl.load(
                k_ptr + bh * T * D + offs_t[:, None] * D + offs_d[None, :],
                mask=mask_t[:, None] & mask_d[None, :],
                other=0.0,
            )  # (C, BD)
            v = tl.load(
                v_ptr + bh * T * E + offs_t[:, None] * E + offs_e[None, :],
                mask=mask_t[:, None] & mask_e[None, :],
                other=0.0,
            )  # (C, BE)
            scores = tl.dot(q, tl.trans(k), input_precision="ieee")  # (C, C)
            scores = tl.where(causal, scores, 0.0)
            o = tl.dot(scores, v, input_precision="ieee")  # (C, BE): inside the chunk
            o += tl.dot(q, S, input_precision="ieee")  # (C, BE): earlier chunks
            tl.store(o_ptr + bh * T * E + offs_t[:, None] * E + offs_e[None, :], o,
                     mask=mask_t[:, None] & mask_e[None, :])  # fmt: skip
            S += tl.dot(tl.trans(k), v, input_precision="ieee")  # after the output: causal

    B, H, T, D = q.shape
    E = v.shape[-1]
    dev = device()
    q32, k32, v32 = (x.to(dev, torch.float32).contiguous() for x in (q, k, v))
    o = torch.empty(B, H, T, E, device=dev, dtype=torch.float32)
    BD, BE = max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(E))
    kernel = reuse(kernel)  # built once, not on every call
    kernel[(B * H,)](q32, k32, v32, o, T, D, E, C=16, BD=BD, BE=BE)
    return o.to(q.device, q.dtype)


def decode_step_simple_triton(q_t, k_t, v_t, state):
    """One token for every sequence: S += k v^T, o = S^T q. Returns (o_t (B, H, E), new S)."""

    @triton.jit
    def kernel(q_ptr, k_ptr, v_ptr, s_ptr, o_ptr, snew_ptr, D, E,
               BD: tl.constexpr, BE: tl.constexpr):  # fmt: skip
        bh = tl.program_id(0).to(tl.int64)
        offs_d, offs_e = tl.arange(0, BD), tl.arange(0, BE)
        mask_d, mask_e = offs_d < D, offs_e < E
        q = tl.load(q_ptr + bh * D + offs_d, mask=mask_d, other=0.0)  # (BD,)
        k = tl.load(k_ptr + bh * D + offs_d, mask=mask_d, other=0.0)  # (BD,)
        v = tl.load(v_ptr + bh * E + offs_e, mask=mask_e, other=0.0)  # (BE,)
        s_offs = bh * D * E + offs_d[:, None] * E + offs_e[None, :]  # (BD, BE)
        mask_de = mask_d[:, None] & mask_e[None, :]
        S = tl.load(s_ptr + s_offs, mask=mask_de, other=0.0)  # (BD, BE)
        S += k[:, None] * v[None, :]  # update first: o_t sees its own token
        o = tl.sum(q[:, None] * S, axis=0)  # (BE,)
        tl.store(snew_ptr + s_offs, S, mask=mask_de)
        tl.store(o_ptr + bh * E + offs_e, o, mask=mask_e)

    B, H, D = q_t.shape
    E = v_t.shape[-1]
    dev = device()
    q32, k32, v32, s32 = (x.to(dev, torch.float32).contiguous() for x in (q_t, k_t, v_t, state))
    o = torch.empty(B, H, E, device=dev, dtype=torch.float32)
    s_new = torch.empty_like(s32)
    BD, BE = triton.next_power_of_2(D), triton.next_power_of_2(E)
    kernel = reuse(kernel)  # built once, not on every call
    kernel[(B * H,)](q32, k32, v32, s32, o, s_new, D, E, BD=BD, BE=BE)
    return o.to(q_t.device, q_t.dtype), s_new.to(state.device, state.dtype)
