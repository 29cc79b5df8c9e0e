"""Lesson 08 exercises: the three kernels in their simplest version (v0), in Triton.

The learner writes a launcher with its @triton.jit kernel inside; the checker runs it on CPU
tensors (Triton's interpreter, or moved to a GPU by the launcher) in fp32 and compares with
lesson 03's float64 references through `lintutor.kernels.teaching`. Cases are tiny so that a
check takes a second or two in the interpreter.
"""

from __future__ import annotations

import torch

from lintutor.course.checker import Exercise, between, cases, normal
from lintutor.kernels import teaching as ref


def _qkv(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    return {"q": normal(g, B, H, T, D), "k": normal(g, B, H, T, D), "v": normal(g, B, H, T, E)}


RANDOM_QKV = between(B=(1, 2), H=(1, 2), T=(1, 40), D=[16, 32], E=[16, 32])
SIZES = cases(
    "B H T D E",
    ("T=1", 1, 1, 1, 16, 16),
    ("T not a multiple of the block", 1, 2, 37, 16, 16),
    ("D != E, not powers of two", 2, 1, 20, 20, 24),
)


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
    wrong=[_nc_causal, _nc_first_block_only, _nc_last_block_only, _nc_normalized, _nc_heads_mixed],
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
    wrong=[_ch_no_mask, _ch_strict_mask, _ch_no_state, _ch_state_first, _ch_tail_dropped],
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
    ),
    random_sizes=between(B=(1, 4), H=(1, 3), D=(2, 20), E=(2, 20)),
    hints=(
        "One program per (sequence, head). Load its (D, E) state, q, k, v; update; write both.",
        "S = tl.load(state tile) + k[:, None] * v[None, :]; o = tl.sum(q[:, None] * S, axis=0); "
        "store the new S and o. No tl.dot needed, so any D and E work with masks.",
        "Offsets: state bh * D * E + offs_d[:, None] * E + offs_e[None, :]; q and k bh * D + "
        "offs_d; v and o bh * E + offs_e. Return (o, new_state), new_state a fresh tensor.",
    ),
    wrong=[_step_old_state, _step_no_update, _step_replace, _step_q_for_k, _step_k_reads],
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
