"""Lesson 08 exercises: the three kernels in their simplest version (v0), in Triton.

The learner writes a launcher with its @triton.jit kernel inside; the checker runs it on CPU
tensors (Triton's interpreter, or moved to a GPU by the launcher) in fp32 and compares with
lesson 03's float64 references through `lintutor.kernels.teaching`. Cases are small so that a
check takes a few seconds in the interpreter, but go past one tile: T = 150 (past a 128-token
tile, 10 chunks of 16), D and E from 2 to 40 (not always 16), and one case repeats an earlier
case's sizes with other values (a memoized answer fails).
"""

from __future__ import annotations

import torch

from lintutor.course.checker import Exercise, between, cases, normal
from lintutor.course.exercises._mistakes import memo
from lintutor.kernels import teaching as ref


def _qkv(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    return {"q": normal(g, B, H, T, D), "k": normal(g, B, H, T, D), "v": normal(g, B, H, T, E)}


RANDOM_QKV = between(B=(1, 2), H=(1, 2), T=(1, 80), D=(2, 40), E=(2, 40))
SIZES = cases(
    "B H T D E",
    ("T=1", 1, 1, 1, 16, 16),
    ("T not a multiple of the block", 1, 2, 37, 16, 16),
    ("D != E, not powers of two", 2, 1, 20, 20, 24),
    ("T = 150, past a tile of 128 tokens", 1, 1, 150, 20, 12),
    ("T not a multiple of the block, again with other values", 1, 2, 37, 16, 16),
)


def _half(*xs):
    """The inputs rounded to float16 (what a kernel that loads or multiplies in fp16 sees)."""
    return [x.half().double() for x in xs]


# --- 08.1 non-causal linear attention -----------------------------------------------------------


def _nc_causal(q, k, v):
    """this is the causal result: non-causal attention sums over all keys, so no mask at all"""
    return (q @ k.transpose(-1, -2)).tril() @ v


def _nc_first_block_only(q, k, v):
    """only the first block of keys is in the state: the loop over T stops after one block"""
    S = k[:, :, :16].transpose(-1, -2) @ v[:, :, :16]  # tail blocks of T never summed
    return q @ S


def _nc_normalized(q, k, v):
    """this is normalized; the kernel computes the plain q (k^T v)"""
    from lintutor.linear import linear_attention

    return linear_attention(q, k, v, normalize=True)


def _nc_last_block_only(q, k, v):
    """the state only holds the last block: it is reset (S = ...) inside the loop instead of
    accumulated (S += ...)"""
    start = ((q.shape[2] - 1) // 16) * 16
    S = k[:, :, start:].transpose(-1, -2) @ v[:, :, start:]  # S reset in every block
    return q @ S


def _nc_heads_mixed(q, k, v):
    """all heads share one state: the head offset bh * T * D is missing from a pointer"""
    S = (k.transpose(-1, -2) @ v).sum(1, keepdim=True)  # one state for all heads
    return q @ S


def _nc_one_tile(q, k, v):
    """the kernel reads one tile of 64 tokens and has no loop over T: tokens past the first tile
    are never summed nor written (for start in range(0, T, BT))"""
    S = k[:, :, :64].transpose(-1, -2) @ v[:, :, :64]
    o = q.new_zeros(q.shape[:3] + (v.shape[-1],))
    o[:, :, :64] = q[:, :, :64] @ S
    return o


def _nc_fp16(q, k, v):
    """the tiles are loaded (or multiplied) in float16: load and accumulate in float32"""
    q, k, v = _half(q, k, v)
    return q @ (k.transpose(-1, -2) @ v)


def _nc_16_channels(q, k, v):
    """the tiles hold 16 channels (BD = 16): channels past 16 are dropped; BD must cover D,
    max(16, next_power_of_2(D))"""
    return q[..., :16] @ (k[..., :16].transpose(-1, -2) @ v)


def _nc_memo(q, k, v):
    """the answer is cached by the shapes of q, k, v: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.linear_attention_simple_triton, q, k, v)


EX_08_1 = Exercise(
    id="08.1",
    title="non-causal linear attention kernel",
    reference=ref.linear_attention_simple_triton,
    make_inputs=_qkv,
    named_sizes=SIZES,
    random_sizes=RANDOM_QKV,
    hints=(
        "One program per (batch, head): program_id(0) picks it. Walk T in blocks of BT tokens "
        "twice: first to sum the state, then to apply it.",
        "Pass 1: S += tl.dot(tl.trans(k), v) over masked (BT, BD) and (BT, BE) tiles (other=0.0 "
        "makes the missing rows add nothing). Pass 2: o = tl.dot(q, S), stored with the same "
        "masks. Tiles need power-of-two sizes >= 16: BD = max(16, next_power_of_2(D)).",
        "Offsets of a tile: bh * T * D + offs_t[:, None] * D + offs_d[None, :]; mask "
        "(offs_t < T)[:, None] & (offs_d < D)[None, :]. Launch kernel[(B * H,)](...) on "
        "contiguous fp32 tensors and return o.to(q.device, q.dtype).",
    ),
    wrong=[
        _nc_causal,
        _nc_first_block_only,
        _nc_last_block_only,
        _nc_normalized,
        _nc_heads_mixed,
        _nc_one_tile,
        _nc_fp16,
        _nc_16_channels,
        _nc_memo,
    ],
    time_dim=2,
    rtol=1e-4,
    atol=1e-4,
    timeout=60.0,
    difficulty=2,
    minutes=20,
    objective="Write a Triton kernel: one program per head sums the state, then applies it.",
)


# --- 08.2 causal chunked forward -----------------------------------------------------------------


def _causal(q, k, v, **kw):
    from lintutor.causal import causal_linear_attention_chunked

    return causal_linear_attention_chunked(q, k, v, normalize=False, chunk_size=16, **kw)


def _ch_no_mask(q, k, v):
    """no causal mask inside the chunk: tokens see later tokens of their chunk"""
    outs, S = [], q.new_zeros(q.shape[:2] + (q.shape[-1], v.shape[-1]))
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        outs.append((qc @ kc.transpose(-1, -2)) @ vc + qc @ S)
        S = S + kc.transpose(-1, -2) @ vc
    return torch.cat(outs, 2)


def _ch_strict_mask(q, k, v):
    """the mask drops the diagonal: o_t must include k_t v_t (s <= t, not s < t)"""
    outs, S = [], q.new_zeros(q.shape[:2] + (q.shape[-1], v.shape[-1]))
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        outs.append((qc @ kc.transpose(-1, -2)).tril(-1) @ vc + qc @ S)
        S = S + kc.transpose(-1, -2) @ vc
    return torch.cat(outs, 2)


def _ch_no_state(q, k, v):
    """the state of earlier chunks is missing: add tl.dot(q, S) and accumulate S across chunks"""
    outs = []
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        outs.append((qc @ kc.transpose(-1, -2)).tril() @ vc)
    return torch.cat(outs, 2)


def _ch_state_first(q, k, v):
    """S is updated before the output: each chunk then sees its own later tokens through the
    state"""
    outs, S = [], q.new_zeros(q.shape[:2] + (q.shape[-1], v.shape[-1]))
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        S = S + kc.transpose(-1, -2) @ vc
        outs.append((qc @ kc.transpose(-1, -2)).tril() @ vc + qc @ S)
    return torch.cat(outs, 2)


def _ch_tail_dropped(q, k, v):
    """the last, shorter chunk is never written: the loop must run to T (range(0, T, C)) with
    masks, not stop at T // C * C"""
    o = _causal(q, k, v)
    full = (q.shape[2] // 16) * 16
    o[:, :, full:] = 0.0  # the last, shorter chunk was never stored
    return o


def _ch_one_tile(q, k, v):
    """the kernel handles one tile of 64 tokens and has no loop over T: tokens past the first
    tile are never written (for start in range(0, T, C), carrying S)"""
    o = q.new_zeros(q.shape[:3] + (v.shape[-1],))
    o[:, :, :64] = (q[:, :, :64] @ k[:, :, :64].transpose(-1, -2)).tril() @ v[:, :, :64]
    return o


def _ch_fp16(q, k, v):
    """the tiles are loaded (or multiplied) in float16: load and accumulate in float32"""
    return _causal(*_half(q, k, v))


def _ch_16_channels(q, k, v):
    """the tiles hold 16 channels (BD = 16): channels past 16 are dropped; BD must cover D,
    max(16, next_power_of_2(D))"""
    return _causal(q[..., :16], k[..., :16], v)


def _ch_memo(q, k, v):
    """the answer is cached by the shapes of q, k, v: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.causal_linear_attention_simple_triton, q, k, v)


EX_08_2 = Exercise(
    id="08.2",
    title="causal chunked forward kernel",
    reference=ref.causal_linear_attention_simple_triton,
    make_inputs=_qkv,
    named_sizes=SIZES,
    random_sizes=RANDOM_QKV,
    hints=(
        "Lesson 03's chunked form, one program per (batch, head): inside a chunk of C = 16 "
        "tokens the masked matmul, across chunks a (BD, BE) state S kept in registers.",
        "Per chunk: scores = tl.dot(q, tl.trans(k)); keep scores where offs_c[:, None] >= "
        "offs_c[None, :] (tl.where); o = tl.dot(scores, v) + tl.dot(q, S); store o; only then "
        "S += tl.dot(tl.trans(k), v). Mask rows past T on every load and store.",
        "Start from 08.1's kernel: one loop instead of two, `causal = offs_c[:, None] >= "
        "offs_c[None, :]`, and the state update moved after the store.",
    ),
    wrong=[
        _ch_no_mask,
        _ch_strict_mask,
        _ch_no_state,
        _ch_state_first,
        _ch_tail_dropped,
        _ch_one_tile,
        _ch_fp16,
        _ch_16_channels,
        _ch_memo,
    ],
    time_dim=2,
    rtol=1e-4,
    atol=1e-4,
    timeout=60.0,
    difficulty=3,
    minutes=30,
    objective="Write lesson 03's chunked form as a Triton kernel with the state in registers.",
)


# --- 08.3 one-token decode -----------------------------------------------------------------------


def _step_inputs(s, g):
    B, H, D, E = s["B"], s["H"], s["D"], s["E"]
    return {"q_t": normal(g, B, H, D), "k_t": normal(g, B, H, D), "v_t": normal(g, B, H, E),
            "state": normal(g, B, H, D, E)}  # fmt: skip


def _step_old_state(q_t, k_t, v_t, state):
    """the output reads the state before the update: o_t must include k_t v_t^T"""
    o = torch.einsum("bhd,bhde->bhe", q_t, state)  # output before the update
    return o, state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)


def _step_no_update(q_t, k_t, v_t, state):
    """the new state is the old one: store S after adding k v^T"""
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), state.clone()


def _step_replace(q_t, k_t, v_t, state):
    """the state is replaced by k v^T instead of accumulated (S += ...)"""
    S = k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # S = k v^T instead of S += k v^T
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_q_for_k(q_t, k_t, v_t, state):
    """the state update uses q instead of k"""
    S = state + q_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_k_reads(q_t, k_t, v_t, state):
    """k reads the state instead of q"""
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    o = torch.einsum("bhd,bhde->bhe", k_t, S)  # k instead of q reads S
    return o, S


def _step_fp16(q_t, k_t, v_t, state):
    """the state or the vectors are loaded in float16: load and compute in float32"""
    q_t, k_t, v_t, state = _half(q_t, k_t, v_t, state)
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_16_channels(q_t, k_t, v_t, state):
    """the tiles hold 16 channels (BD = BE = 16): rows and columns of the state past 16 are
    never loaded nor stored; size the tiles with next_power_of_2(D) and next_power_of_2(E)"""
    S = torch.zeros_like(state)
    S[..., :16, :16] = state[..., :16, :16] + k_t[..., :16, None] * v_t[..., None, :16]
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_memo(q_t, k_t, v_t, state):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.decode_step_simple_triton, q_t, k_t, v_t, state)


EX_08_3 = Exercise(
    id="08.3",
    title="one-token decode kernel",
    reference=ref.decode_step_simple_triton,
    make_inputs=_step_inputs,
    named_sizes=cases(
        "B H D E",
        ("one sequence", 1, 1, 16, 16),
        ("batch of sequences, D != E", 3, 2, 16, 32),
        ("sizes not powers of two", 2, 1, 5, 7),
        ("D = 24, E = 20: past 16 channels", 1, 2, 24, 20),
        ("sizes not powers of two, again with other values", 2, 1, 5, 7),
    ),
    random_sizes=between(B=(1, 4), H=(1, 3), D=(2, 20), E=(2, 20)),
    hints=(
        "One program per (sequence, head). Load its (D, E) state, q, k, v; update; write both.",
        "S = tl.load(state tile) + k[:, None] * v[None, :]; o = tl.sum(q[:, None] * S, axis=0); "
        "store the new S and o. No tl.dot needed, so any D and E work with masks.",
        "Offsets: state bh * D * E + offs_d[:, None] * E + offs_e[None, :]; q and k bh * D + "
        "offs_d; v and o bh * E + offs_e. Return (o, new_state), new_state a fresh tensor.",
    ),
    wrong=[
        _step_old_state,
        _step_no_update,
        _step_replace,
        _step_q_for_k,
        _step_k_reads,
        _step_fp16,
        _step_16_channels,
        _step_memo,
    ],
    output_names=("o_t", "state"),
    rtol=1e-4,
    atol=1e-4,
    timeout=60.0,
    difficulty=2,
    minutes=15,
    objective="Write the one-token decode step as a Triton kernel that reads and writes the "
    "state once.",
)

EXERCISES = [EX_08_1, EX_08_2, EX_08_3]


# --- 08.4-08.8 the puzzles: a ladder from vector add to the kernels above ------------------------
#
# The learner writes only the kernel; the launcher (grid, tile sizes, dtypes) is given and runs it
# through checked_launch. Each known mistake below is a real kernel: one "buggy twin" per puzzle
# whose constexpr BUG switches one line to the mistake its docstring names. A mistake that goes
# out of bounds is reported by checked_launch (an exception); the others give wrong numbers.

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from lintutor.kernels import puzzles  # noqa: E402
from lintutor.kernels._common import device  # noqa: E402
from lintutor.kernels.checked import checked_launch  # noqa: E402
from lintutor.kernels.teaching import reuse  # noqa: E402


def _outer_twin(x, y, bug):
    @triton.jit
    def kernel(x_ptr, y_ptr, out_ptr, M, N,
               BM: tl.constexpr, BN: tl.constexpr, BUG: tl.constexpr):  # fmt: skip
        if BUG == "swapped axes":
            pid_m = tl.program_id(1).to(tl.int64)
            pid_n = tl.program_id(0).to(tl.int64)
        else:
            pid_m = tl.program_id(0).to(tl.int64)
            pid_n = tl.program_id(1).to(tl.int64)
        offs_m = pid_m * BM + tl.arange(0, BM)
        if BUG == "one late":
            offs_m = pid_m * BM + tl.arange(0, BM) + 1
        offs_n = pid_n * BN + tl.arange(0, BN)
        mask_m, mask_n = offs_m < M, offs_n < N
        x = tl.load(x_ptr + offs_m, mask=mask_m, other=0.0)
        if BUG == "y at row offsets":
            y = tl.load(y_ptr + offs_m, mask=mask_m & (offs_m < N), other=0.0)
        else:
            y = tl.load(y_ptr + offs_n, mask=mask_n, other=0.0)
        out = x[:, None] * y[None, :]
        stride = M if BUG == "stride M" else N
        ptrs = out_ptr + offs_m[:, None] * stride + offs_n[None, :]
        if BUG == "no store mask":
            tl.store(ptrs, out)
        elif BUG == "row mask only":
            tl.store(ptrs, out, mask=mask_m[:, None])
        else:
            tl.store(ptrs, out, mask=mask_m[:, None] & mask_n[None, :])

    kernel = reuse(kernel)
    M, N = x.shape[0], y.shape[0]
    dev = device()
    out = torch.empty(M, N, device=dev)
    checked_launch(kernel, (triton.cdiv(M, 8), triton.cdiv(N, 8)), x.to(dev, torch.float32),
                   y.to(dev, torch.float32), out, M, N, BM=8, BN=8, BUG=bug,
                   outputs=("out_ptr",))  # fmt: skip
    return out.to(x.device, x.dtype)


def _op_no_store_mask(x, y):
    """the store has no mask: the tiles on the right and bottom edges write past the end of out
    (mask=(offs_m < M)[:, None] & (offs_n < N)[None, :])"""
    return _outer_twin(x, y, "no store mask")


def _op_row_mask_only(x, y):
    """the store masks only the rows: columns past N spill into the next row (and past the end)"""
    return _outer_twin(x, y, "row mask only")


def _op_swapped_axes(x, y):
    """the program-id axes are swapped: program_id(0) counts tiles down the rows (M), axis 1
    across the columns (N), as the grid (cdiv(M, BM), cdiv(N, BN)) says"""
    return _outer_twin(x, y, "swapped axes")


def _op_stride_m(x, y):
    """row i of out starts at i * M: in a row-major (M, N) tensor it starts at i * N"""
    return _outer_twin(x, y, "stride M")


def _op_one_late(x, y):
    """the tile starts one row late (pid_m * BM + 1 + arange): row 0 is never written"""
    return _outer_twin(x, y, "one late")


def _op_y_at_row_offsets(x, y):
    """y is read at the row offsets offs_m: y[j] must be read at the column offsets offs_n"""
    return _outer_twin(x, y, "y at row offsets")


EX_08_4 = Exercise(
    id="08.4",
    title="puzzle 1: outer product in 2-D tiles",
    reference=puzzles.outer_product_triton,
    make_inputs=lambda s, g: {"x": normal(g, s["M"]), "y": normal(g, s["N"])},
    named_sizes=cases(
        "M N",
        ("one element", 1, 1),
        ("not multiples of the 8 x 8 tile", 13, 21),
        ("more tile rows than tile columns", 20, 5),
    ),
    random_sizes=between(M=(1, 24), N=(1, 24)),
    hints=(
        "Program (pid_m, pid_n) owns the 8 x 8 tile of rows pid_m * 8 ... and columns "
        "pid_n * 8 ...: load its 8 values of x and its 8 values of y, store their outer product.",
        "offs_m = pid_m * BM + tl.arange(0, BM), offs_n likewise; x[:, None] * y[None, :] is the "
        "(BM, BN) tile; its pointers are out_ptr + offs_m[:, None] * N + offs_n[None, :].",
        "Mask both loads (offs_m < M, offs_n < N, other=0.0) and the store with "
        "(offs_m < M)[:, None] & (offs_n < N)[None, :].",
    ),
    wrong=[
        _op_no_store_mask,
        _op_row_mask_only,
        _op_swapped_axes,
        _op_stride_m,
        _op_one_late,
        _op_y_at_row_offsets,
    ],  # fmt: skip
    rtol=1e-5,
    atol=1e-6,
    timeout=60.0,
    difficulty=1,
    minutes=10,
    objective="Index a 2-D tile with a 2-D grid, row-major offsets and masks on both axes.",
)


def _rows_twin(x, bug):
    @triton.jit
    def kernel(x_ptr, out_ptr, R, N, BR: tl.constexpr, BN: tl.constexpr, BUG: tl.constexpr):
        if BUG == "program_id(1)":
            pid = tl.program_id(1).to(tl.int64)
        else:
            pid = tl.program_id(0).to(tl.int64)
        offs_r = pid * BR + tl.arange(0, BR)
        mask_r = offs_r < R
        if BUG == "fp16 accumulator":
            acc = tl.zeros([BR], dtype=tl.float16)
        else:
            acc = tl.zeros([BR], dtype=tl.float32)
        stop = N - N % BN if BUG == "tail dropped" else N
        stride = BN if BUG == "row stride BN" else N
        for start in range(0, stop, BN):
            offs_n = start + tl.arange(0, BN)
            mask = mask_r[:, None] & (offs_n < N)[None, :]
            if BUG == "no column mask":
                mask = mask_r[:, None] & (offs_n >= 0)[None, :]
            x = tl.load(x_ptr + offs_r[:, None] * stride + offs_n[None, :], mask=mask, other=0.0)
            if BUG == "fp16 accumulator":
                acc += tl.sum(x, axis=1)
            elif BUG == "fp16 block sums":
                acc += tl.sum(x, axis=1).to(tl.float32)
            elif BUG == "reset":
                acc = tl.sum(x.to(tl.float32), axis=1)
            else:
                acc += tl.sum(x.to(tl.float32), axis=1)
        tl.store(out_ptr + offs_r, acc.to(tl.float32), mask=mask_r)

    kernel = reuse(kernel)
    R, N = x.shape
    dev = device()
    out = torch.empty(R, device=dev)
    checked_launch(kernel, (triton.cdiv(R, 4),), x.to(dev, torch.float16).contiguous(), out, R, N,
                   BR=4, BN=16, BUG=bug, outputs=("out_ptr",))  # fmt: skip
    return out.to(x.device, x.dtype)


def _rs_fp16_accumulator(x):
    """the accumulator is fp16, the input's dtype: every addition rounds to 11 significant bits
    (acc = tl.zeros([BR], dtype=tl.float32))"""
    return _rows_twin(x, "fp16 accumulator")


def _rs_fp16_block_sums(x):
    """each block is summed in fp16 and only then added to the fp32 accumulator: upcast before
    summing, tl.sum(x.to(tl.float32), axis=1)"""
    return _rows_twin(x, "fp16 block sums")


def _rs_no_column_mask(x):
    """the columns are not masked: the last block of a row reads on into the next row (and past
    the end of x)"""
    return _rows_twin(x, "no column mask")


def _rs_tail_dropped(x):
    """the loop stops at N - N % BN: the last, partial block of each row is never added
    (range(0, N, BN) with a mask)"""
    return _rows_twin(x, "tail dropped")


def _rs_reset(x):
    """the accumulator is reset in every block (acc = ...) instead of added to (acc += ...):
    only the last block counts"""
    return _rows_twin(x, "reset")


def _rs_row_stride(x):
    """row r starts at r * BN: in a row-major (R, N) tensor it starts at r * N"""
    return _rows_twin(x, "row stride BN")


def _rs_program_id_1(x):
    """the rows are picked with program_id(1), which is always 0 on this 1-D grid: use axis 0"""
    return _rows_twin(x, "program_id(1)")


EX_08_5 = Exercise(
    id="08.5",
    title="puzzle 2: row sums with an fp32 accumulator",
    reference=puzzles.row_sums_triton,
    make_inputs=lambda s, g: {"x": normal(g, s["R"], s["N"])},
    named_sizes=cases(
        "R N",
        ("one row, one column", 1, 1),
        ("rows and columns not multiples of the blocks", 10, 37),
        ("long rows, where fp16 sums lose digits", 3, 200),
    ),
    random_sizes=between(R=(1, 12), N=(1, 80)),
    hints=(
        "Program pid owns rows pid * 4 ... pid * 4 + 3 and walks their columns in blocks of 16, "
        "adding each block's row sums to a (BR,) accumulator.",
        "acc = tl.zeros([BR], dtype=tl.float32); for start in range(0, N, BN): load the (BR, BN) "
        "block at offs_r[:, None] * N + offs_n[None, :], masked on rows and columns, and add "
        "tl.sum(block.to(tl.float32), axis=1).",
        "Upcast before tl.sum: tl.sum of fp16 values adds them in fp16. Store acc at "
        "out_ptr + offs_r with mask offs_r < R.",
    ),
    wrong=[
        _rs_fp16_accumulator,
        _rs_fp16_block_sums,
        _rs_no_column_mask,
        _rs_tail_dropped,
        _rs_reset,
        _rs_row_stride,
        _rs_program_id_1,
    ],  # fmt: skip
    rtol=1e-5,
    atol=1e-5,
    timeout=60.0,
    difficulty=1,
    minutes=10,
    objective="Walk a long axis in masked blocks and accumulate fp16 values in fp32.",
)


def _mm_twin(a, b, bug):
    @triton.jit
    def kernel(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, BUG: tl.constexpr):  # fmt: skip
        if BUG == "swapped axes":
            pid_m = tl.program_id(1).to(tl.int64)
            pid_n = tl.program_id(0).to(tl.int64)
        else:
            pid_m = tl.program_id(0).to(tl.int64)
            pid_n = tl.program_id(1).to(tl.int64)
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_n = pid_n * BN + tl.arange(0, BN)
        mask_m, mask_n = offs_m < M, offs_n < N
        if BUG == "fp16 accumulator":
            acc = tl.zeros([BM, BN], dtype=tl.float16)
        else:
            acc = tl.zeros([BM, BN], dtype=tl.float32)
        stride_b = K if BUG == "b stride K" else N
        for start in range(0, K, BK):
            offs_k = start + tl.arange(0, BK)
            mask_k = offs_k < K
            if BUG == "K not masked":
                mask_k = offs_k >= 0
            a = tl.load(a_ptr + offs_m[:, None] * K + offs_k[None, :],
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0)  # fmt: skip
            b = tl.load(b_ptr + offs_k[:, None] * stride_b + offs_n[None, :],
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
            if BUG == "fp16 accumulator":
                acc += tl.dot(a, b).to(tl.float16)
            elif BUG == "reset":
                acc = tl.dot(a, b)
            else:
                acc += tl.dot(a, b)
        ptrs = c_ptr + offs_m[:, None] * N + offs_n[None, :]
        if BUG == "no store mask":
            tl.store(ptrs, acc.to(tl.float32))
        else:
            tl.store(ptrs, acc.to(tl.float32), mask=mask_m[:, None] & mask_n[None, :])

    kernel = reuse(kernel)
    (M, K), N = a.shape, b.shape[1]
    dev = device()
    c = torch.empty(M, N, device=dev)
    checked_launch(kernel, (triton.cdiv(M, 16), triton.cdiv(N, 16)),
                   a.to(dev, torch.float16).contiguous(), b.to(dev, torch.float16).contiguous(),
                   c, M, N, K, BM=16, BN=16, BK=16, BUG=bug, outputs=("c_ptr",))  # fmt: skip
    return c.to(a.device, a.dtype)


def _mm_k_not_masked(a, b):
    """the K axis is not masked: the last block of K reads past the end of each row of a and
    column of b (mask offs_k < K on both loads)"""
    return _mm_twin(a, b, "K not masked")


def _mm_fp16_accumulator(a, b):
    """the accumulator is fp16: each block's products are rounded to 11 significant bits before
    they are added (keep acc in fp32; tl.dot of fp16 tiles returns fp32)"""
    return _mm_twin(a, b, "fp16 accumulator")


def _mm_b_stride(a, b):
    """b's rows are K apart: b is (K, N), so row k starts at k * N"""
    return _mm_twin(a, b, "b stride K")


def _mm_swapped_axes(a, b):
    """the program-id axes are swapped: axis 0 counts tiles of rows of c (M), axis 1 tiles of
    columns (N)"""
    return _mm_twin(a, b, "swapped axes")


def _mm_reset(a, b):
    """the accumulator is replaced in every block of K (acc = tl.dot(...)) instead of added to:
    only the last block of K counts"""
    return _mm_twin(a, b, "reset")


def _mm_no_store_mask(a, b):
    """the store has no mask: edge tiles write past the end of c"""
    return _mm_twin(a, b, "no store mask")


EX_08_6 = Exercise(
    id="08.6",
    title="puzzle 3: a tiled matrix product with tl.dot",
    reference=puzzles.matmul_triton,
    make_inputs=lambda s, g: {"a": normal(g, s["M"], s["K"]), "b": normal(g, s["K"], s["N"])},
    named_sizes=cases(
        "M N K",
        ("one element", 1, 1, 1),
        ("not multiples of 16", 20, 29, 37),
        ("one row of tiles, a long K", 5, 33, 50),
    ),
    random_sizes=between(M=(1, 32), N=(1, 32), K=(1, 48)),
    hints=(
        "Program (pid_m, pid_n) owns a 16 x 16 tile of c. It walks K in blocks of 16: a (16, 16) "
        "tile of a from its rows, a (16, 16) tile of b from its columns, one tl.dot each.",
        "acc = tl.zeros([BM, BN], dtype=tl.float32); for start in range(0, K, BK): offs_k = start "
        "+ tl.arange(0, BK); a tile at offs_m[:, None] * K + offs_k[None, :], b tile at "
        "offs_k[:, None] * N + offs_n[None, :]; acc += tl.dot(a, b).",
        "Mask the a tile with (offs_m < M)[:, None] & (offs_k < K)[None, :] and the b tile with "
        "(offs_k < K)[:, None] & (offs_n < N)[None, :], other=0.0: zeros add nothing to the dot.",
    ),
    wrong=[
        _mm_k_not_masked,
        _mm_fp16_accumulator,
        _mm_b_stride,
        _mm_swapped_axes,
        _mm_reset,
        _mm_no_store_mask,
    ],  # fmt: skip
    rtol=1e-5,
    atol=1e-4,
    timeout=60.0,
    difficulty=2,
    minutes=15,
    objective="Multiply matrices tile by tile with tl.dot, masking all three axes.",
)


def _cumsum_twin(x, bug):
    @triton.jit
    def kernel(x_ptr, out_ptr, N, BLOCK: tl.constexpr, BUG: tl.constexpr):
        if BUG == "program_id(1)":
            row = tl.program_id(1).to(tl.int64)
        else:
            row = tl.program_id(0).to(tl.int64)
        stride = BLOCK if BUG == "row stride BLOCK" else N
        carry = tl.zeros([1], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < N
            x = tl.load(x_ptr + row * stride + offs, mask=mask, other=0.0)
            if BUG == "carry first":
                carry += tl.sum(x, axis=0)
            out = tl.cumsum(x, axis=0)
            if BUG == "exclusive":
                out = out - x
            if BUG != "no carry":
                out = out + carry
            if BUG == "no store mask":
                tl.store(out_ptr + row * stride + offs, out)
            else:
                tl.store(out_ptr + row * stride + offs, out, mask=mask)
            if BUG == "carry reset":
                carry = tl.zeros([1], dtype=tl.float32) + tl.sum(x, axis=0)
            elif BUG != "carry first":
                carry += tl.sum(x, axis=0)

    kernel = reuse(kernel)
    R, N = x.shape
    dev = device()
    out = torch.empty(R, N, device=dev)
    checked_launch(kernel, (R,), x.to(dev, torch.float32).contiguous(), out, N, BLOCK=8, BUG=bug,
                   outputs=("out_ptr",))  # fmt: skip
    return out.to(x.device, x.dtype)


def _cs_no_carry(x):
    """each block starts again from 0: the running total of the blocks before it is missing"""
    return _cumsum_twin(x, "no carry")


def _cs_carry_first(x):
    """the carry is updated before the block's output, so each block counts its own sum twice
    (add tl.sum(x) to the carry after the store, as the state update comes after the output)"""
    return _cumsum_twin(x, "carry first")


def _cs_exclusive(x):
    """this is the exclusive sum (x[0] + ... + x[n - 1]): out[n] includes x[n]"""
    return _cumsum_twin(x, "exclusive")


def _cs_carry_reset(x):
    """the carry is set to the last block's sum (carry = ...) instead of added to (carry += ...)"""
    return _cumsum_twin(x, "carry reset")


def _cs_no_store_mask(x):
    """the store has no mask: the last block of a row writes into the next row and past the end"""
    return _cumsum_twin(x, "no store mask")


def _cs_row_stride(x):
    """row r starts at r * BLOCK: in a row-major (R, N) tensor it starts at r * N"""
    return _cumsum_twin(x, "row stride BLOCK")


def _cs_program_id_1(x):
    """the row is picked with program_id(1), always 0 on this 1-D grid: use axis 0"""
    return _cumsum_twin(x, "program_id(1)")


EX_08_7 = Exercise(
    id="08.7",
    title="puzzle 4: a cumulative sum that carries across blocks",
    reference=puzzles.cumsum_triton,
    make_inputs=lambda s, g: {"x": normal(g, s["R"], s["N"])},
    named_sizes=cases(
        "R N",
        ("one element", 1, 1),
        ("N not a multiple of the block", 3, 21),
        ("five blocks", 2, 40),
    ),
    random_sizes=between(R=(1, 4), N=(1, 40)),
    hints=(
        "One program per row walks it in blocks of 8. Inside a block tl.cumsum does the work; "
        "what the block needs from before is one number, the sum of all earlier blocks.",
        "carry = tl.zeros([1], dtype=tl.float32); per block: out = tl.cumsum(x, axis=0) + carry; "
        "store out; then carry += tl.sum(x, axis=0).",
        "Offsets row * N + start + tl.arange(0, BLOCK), masked with offs < N on the load "
        "(other=0.0) and on the store. The carry update comes after the store.",
    ),
    wrong=[
        _cs_no_carry,
        _cs_carry_first,
        _cs_exclusive,
        _cs_carry_reset,
        _cs_no_store_mask,
        _cs_row_stride,
        _cs_program_id_1,
    ],  # fmt: skip
    rtol=1e-5,
    atol=1e-5,
    timeout=60.0,
    difficulty=2,
    minutes=15,
    objective="Carry a running total from block to block: the scan behind the causal kernel.",
)


def _chunk_twin(q, k, v, state, bug):
    @triton.jit
    def kernel(q_ptr, k_ptr, v_ptr, s_ptr, o_ptr, snew_ptr, L, D, E,
               C: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, BUG: tl.constexpr):  # fmt: skip
        g = tl.program_id(0).to(tl.int64)
        if BUG == "no head offset":
            g = g * 0
        offs_c, offs_d, offs_e = tl.arange(0, C), tl.arange(0, BD), tl.arange(0, BE)
        mask_c, mask_d, mask_e = offs_c < L, offs_d < D, offs_e < E
        load_c = offs_c >= 0 if BUG == "rows not masked" else mask_c
        qk_offs = g * L * D + offs_c[:, None] * D + offs_d[None, :]
        q = tl.load(q_ptr + qk_offs, mask=load_c[:, None] & mask_d[None, :], other=0.0)
        k = tl.load(k_ptr + qk_offs, mask=load_c[:, None] & mask_d[None, :], other=0.0)
        v = tl.load(v_ptr + g * L * E + offs_c[:, None] * E + offs_e[None, :],
                    mask=load_c[:, None] & mask_e[None, :], other=0.0)  # fmt: skip
        s_offs = g * D * E + offs_d[:, None] * E + offs_e[None, :]
        mask_de = mask_d[:, None] & mask_e[None, :]
        S = tl.load(s_ptr + s_offs, mask=mask_de, other=0.0)
        kv = tl.dot(tl.trans(k), v, input_precision="ieee")
        scores = tl.dot(q, tl.trans(k), input_precision="ieee")
        if BUG == "strict mask":
            scores = tl.where(offs_c[:, None] > offs_c[None, :], scores, 0.0)
        elif BUG != "no causal mask":
            scores = tl.where(offs_c[:, None] >= offs_c[None, :], scores, 0.0)
        o = tl.dot(scores, v, input_precision="ieee")
        if BUG == "state first":
            o += tl.dot(q, S + kv, input_precision="ieee")
        elif BUG != "no state":
            o += tl.dot(q, S, input_precision="ieee")
        out_g = tl.program_id(0).to(tl.int64)
        tl.store(o_ptr + out_g * L * E + offs_c[:, None] * E + offs_e[None, :], o,
                 mask=mask_c[:, None] & mask_e[None, :])  # fmt: skip
        S_new = kv if BUG == "state replaced" else S + kv
        tl.store(snew_ptr + out_g * D * E + offs_d[:, None] * E + offs_e[None, :], S_new,
                 mask=mask_de)  # fmt: skip

    kernel = reuse(kernel)
    G, L, D = q.shape
    E = v.shape[-1]
    dev = device()
    q32, k32, v32, s32 = (t.to(dev, torch.float32).contiguous() for t in (q, k, v, state))
    o = torch.empty(G, L, E, device=dev)
    s_new = torch.empty(G, D, E, device=dev)
    BD, BE = max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(E))
    checked_launch(kernel, (G,), q32, k32, v32, s32, o, s_new, L, D, E, C=16, BD=BD, BE=BE,
                   BUG=bug, outputs=("o_ptr", "snew_ptr"))  # fmt: skip
    return o.to(q.device, q.dtype), s_new.to(state.device, state.dtype)


def _cc_no_causal_mask(q, k, v, state):
    """no causal mask inside the chunk: token t sees the later tokens of its chunk"""
    return _chunk_twin(q, k, v, state, "no causal mask")


def _cc_strict_mask(q, k, v, state):
    """the mask drops the diagonal (s < t): o_t includes its own token, s <= t"""
    return _chunk_twin(q, k, v, state, "strict mask")


def _cc_no_state(q, k, v, state):
    """the state term q S of the earlier chunks is missing"""
    return _chunk_twin(q, k, v, state, "no state")


def _cc_state_first(q, k, v, state):
    """the output reads the state after this chunk's update: each token then sees the whole
    chunk through S (compute o with the old S, update S after)"""
    return _chunk_twin(q, k, v, state, "state first")


def _cc_state_replaced(q, k, v, state):
    """the new state is k^T v alone: it must be the old state plus k^T v"""
    return _chunk_twin(q, k, v, state, "state replaced")


def _cc_rows_not_masked(q, k, v, state):
    """the rows past L are not masked in the loads: a short chunk reads the next head's tokens
    (and past the end of the tensors) into k^T v"""
    return _chunk_twin(q, k, v, state, "rows not masked")


def _cc_no_head_offset(q, k, v, state):
    """every program reads head 0: the head offset g * L * D (g * D * E for the state) is
    missing from the loads"""
    return _chunk_twin(q, k, v, state, "no head offset")


def _chunk_inputs(s, g):
    G, L, D, E = s["G"], s["L"], s["D"], s["E"]
    return {"q": normal(g, G, L, D), "k": normal(g, G, L, D), "v": normal(g, G, L, E),
            "state": normal(g, G, D, E)}  # fmt: skip


EX_08_8 = Exercise(
    id="08.8",
    title="puzzle 5: one chunk of the causal form",
    reference=puzzles.causal_chunk_triton,
    make_inputs=_chunk_inputs,
    named_sizes=cases(
        "G L D E",
        ("one token", 1, 1, 16, 16),
        ("a full chunk of 16, D != E", 2, 16, 16, 32),
        ("L, D, E not powers of two", 3, 11, 20, 7),
    ),
    random_sizes=between(G=(1, 3), L=(1, 16), D=(2, 24), E=(2, 24)),
    hints=(
        "One program per head g: load its (C, BD) q and k, (C, BE) v and (BD, BE) state, with "
        "rows past L and columns past D, E masked to 0. Then three dots and two stores.",
        "scores = tl.dot(q, tl.trans(k)); keep scores where offs_c[:, None] >= offs_c[None, :] "
        "(tl.where); o = tl.dot(scores, v) + tl.dot(q, S); store o; new S = S + "
        "tl.dot(tl.trans(k), v); store it.",
        "Head g's rows start at g * L * D (q, k), g * L * E (v, o) and g * D * E (the state). "
        'Pass input_precision="ieee" to every tl.dot: on a GPU the fp32 default, tf32, keeps '
        "only 10 mantissa bits.",
    ),
    wrong=[
        _cc_no_causal_mask,
        _cc_strict_mask,
        _cc_no_state,
        _cc_state_first,
        _cc_state_replaced,
        _cc_rows_not_masked,
        _cc_no_head_offset,
    ],  # fmt: skip
    output_names=("o", "state"),
    rtol=1e-4,
    atol=1e-4,
    timeout=60.0,
    difficulty=2,
    minutes=20,
    objective="Compute one chunk of causal linear attention: masked scores, state in, state out.",
)

EXERCISES += [EX_08_4, EX_08_5, EX_08_6, EX_08_7, EX_08_8]
