"""Lesson 08 exercises: the three kernels in their simplest version (v0), in Triton.

The learner writes a launcher with its @triton.jit kernel inside; the checker runs it on CPU
tensors (Triton's interpreter, or moved to a GPU by the launcher) in fp32 and compares with
lesson 03's float64 references through `lintutor.kernels.teaching`. Cases are tiny so that a
check takes a second or two in the interpreter.
"""

from __future__ import annotations

import torch

from lintutor.exercises.core import Exercise, Wrong, normal, randint
from lintutor.kernels import teaching as ref


def _qkv(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    return {"q": normal(g, B, H, T, D), "k": normal(g, B, H, T, D), "v": normal(g, B, H, T, E)}


def _random_qkv(g):
    return {"B": randint(g, 1, 2), "H": randint(g, 1, 2), "T": randint(g, 1, 40),
            "D": 16 * randint(g, 1, 2), "E": 16 * randint(g, 1, 2)}  # fmt: skip


SIZES = [
    ("T=1", {"B": 1, "H": 1, "T": 1, "D": 16, "E": 16}),
    ("T not a multiple of the block", {"B": 1, "H": 2, "T": 37, "D": 16, "E": 16}),
    ("D != E, not powers of two", {"B": 2, "H": 1, "T": 20, "D": 20, "E": 24}),
]


# --- 08.1 non-causal linear attention -----------------------------------------------------------


def _nc_causal(q, k, v):
    return (q @ k.transpose(-1, -2)).tril() @ v


def _nc_first_block_only(q, k, v):
    S = k[:, :, :16].transpose(-1, -2) @ v[:, :, :16]  # tail blocks of T never summed
    return q @ S


def _nc_normalized(q, k, v):
    from lintutor.linear import linear_attention

    return linear_attention(q, k, v, normalize=True)


def _nc_last_block_only(q, k, v):
    start = ((q.shape[2] - 1) // 16) * 16
    S = k[:, :, start:].transpose(-1, -2) @ v[:, :, start:]  # S reset in every block
    return q @ S


def _nc_heads_mixed(q, k, v):
    S = (k.transpose(-1, -2) @ v).sum(1, keepdim=True)  # one state for all heads
    return q @ S


EX_08_1 = Exercise(
    id="08.1",
    lesson="08",
    title="non-causal linear attention kernel",
    name="linear_attention_simple_triton",
    reference=ref.linear_attention_simple_triton,
    make_inputs=_qkv,
    named_sizes=SIZES,
    random_sizes=_random_qkv,
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
        Wrong(
            _nc_causal,
            "this is the causal result: non-causal attention sums over all keys, so no mask at all",
        ),  # fmt: skip
        Wrong(
            _nc_first_block_only,
            "only the first block of keys is in the state: the loop over T stops after one block",
        ),  # fmt: skip
        Wrong(
            _nc_last_block_only,
            "the state only holds the last block: it is reset (S = ...) "
            "inside the loop instead of accumulated (S += ...)",
        ),  # fmt: skip
        Wrong(_nc_normalized, "this is normalized; the kernel computes the plain q (k^T v)"),
        Wrong(
            _nc_heads_mixed,
            "all heads share one state: the head offset bh * T * D is missing from a pointer",
        ),  # fmt: skip
    ],
    time_dim=2,
    rtol=1e-4,
    atol=1e-4,
    timeout=60.0,
)


# --- 08.2 causal chunked forward -----------------------------------------------------------------


def _causal(q, k, v, **kw):
    from lintutor.causal import causal_linear_attention_chunked

    return causal_linear_attention_chunked(q, k, v, normalize=False, chunk_size=16, **kw)


def _ch_no_mask(q, k, v):
    outs, S = [], q.new_zeros(q.shape[:2] + (q.shape[-1], v.shape[-1]))
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        outs.append((qc @ kc.transpose(-1, -2)) @ vc + qc @ S)
        S = S + kc.transpose(-1, -2) @ vc
    return torch.cat(outs, 2)


def _ch_strict_mask(q, k, v):
    outs, S = [], q.new_zeros(q.shape[:2] + (q.shape[-1], v.shape[-1]))
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        outs.append((qc @ kc.transpose(-1, -2)).tril(-1) @ vc + qc @ S)
        S = S + kc.transpose(-1, -2) @ vc
    return torch.cat(outs, 2)


def _ch_no_state(q, k, v):
    outs = []
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        outs.append((qc @ kc.transpose(-1, -2)).tril() @ vc)
    return torch.cat(outs, 2)


def _ch_state_first(q, k, v):
    outs, S = [], q.new_zeros(q.shape[:2] + (q.shape[-1], v.shape[-1]))
    for s in range(0, q.shape[2], 16):
        qc, kc, vc = q[:, :, s : s + 16], k[:, :, s : s + 16], v[:, :, s : s + 16]
        S = S + kc.transpose(-1, -2) @ vc
        outs.append((qc @ kc.transpose(-1, -2)).tril() @ vc + qc @ S)
    return torch.cat(outs, 2)


def _ch_tail_dropped(q, k, v):
    o = _causal(q, k, v)
    full = (q.shape[2] // 16) * 16
    o[:, :, full:] = 0.0  # the last, shorter chunk was never stored
    return o


EX_08_2 = Exercise(
    id="08.2",
    lesson="08",
    title="causal chunked forward kernel",
    name="causal_linear_attention_simple_triton",
    reference=ref.causal_linear_attention_simple_triton,
    make_inputs=_qkv,
    named_sizes=SIZES,
    random_sizes=_random_qkv,
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
        Wrong(
            _ch_no_mask, "no causal mask inside the chunk: tokens see later tokens of their chunk"
        ),  # fmt: skip
        Wrong(
            _ch_strict_mask,
            "the mask drops the diagonal: o_t must include k_t v_t (s <= t, not s < t)",
        ),  # fmt: skip
        Wrong(
            _ch_no_state,
            "the state of earlier chunks is missing: add tl.dot(q, S) and "
            "accumulate S across chunks",
        ),  # fmt: skip
        Wrong(
            _ch_state_first,
            "S is updated before the output: each chunk then sees its own "
            "later tokens through the state",
        ),  # fmt: skip
        Wrong(
            _ch_tail_dropped,
            "the last, shorter chunk is never written: the loop must run "
            "to T (range(0, T, C)) with masks, not stop at T // C * C",
        ),  # fmt: skip
    ],
    time_dim=2,
    rtol=1e-4,
    atol=1e-4,
    timeout=60.0,
)


# --- 08.3 one-token decode -----------------------------------------------------------------------


def _step_inputs(s, g):
    B, H, D, E = s["B"], s["H"], s["D"], s["E"]
    return {"q_t": normal(g, B, H, D), "k_t": normal(g, B, H, D), "v_t": normal(g, B, H, E),
            "state": normal(g, B, H, D, E)}  # fmt: skip


def _step_old_state(q_t, k_t, v_t, state):
    o = torch.einsum("bhd,bhde->bhe", q_t, state)  # output before the update
    return o, state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)


def _step_no_update(q_t, k_t, v_t, state):
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), state.clone()


def _step_replace(q_t, k_t, v_t, state):
    S = k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # S = k v^T instead of S += k v^T
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_q_for_k(q_t, k_t, v_t, state):
    S = state + q_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_k_reads(q_t, k_t, v_t, state):
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    o = torch.einsum("bhd,bhde->bhe", k_t, S)  # k instead of q reads S
    return o, S


EX_08_3 = Exercise(
    id="08.3",
    lesson="08",
    title="one-token decode kernel",
    name="decode_step_simple_triton",
    reference=ref.decode_step_simple_triton,
    make_inputs=_step_inputs,
    named_sizes=[
        ("one sequence", {"B": 1, "H": 1, "D": 16, "E": 16}),
        ("batch of sequences, D != E", {"B": 3, "H": 2, "D": 16, "E": 32}),
        ("sizes not powers of two", {"B": 2, "H": 1, "D": 5, "E": 7}),
    ],
    random_sizes=lambda g: {
        "B": randint(g, 1, 4),
        "H": randint(g, 1, 3),
        "D": randint(g, 2, 20),
        "E": randint(g, 2, 20),
    },  # fmt: skip
    hints=(
        "One program per (sequence, head). Load its (D, E) state, q, k, v; update; write both.",
        "S = tl.load(state tile) + k[:, None] * v[None, :]; o = tl.sum(q[:, None] * S, axis=0); "
        "store the new S and o. No tl.dot needed, so any D and E work with masks.",
        "Offsets: state bh * D * E + offs_d[:, None] * E + offs_e[None, :]; q and k bh * D + "
        "offs_d; v and o bh * E + offs_e. Return (o, new_state), new_state a fresh tensor.",
    ),
    wrong=[
        Wrong(
            _step_old_state,
            "the output reads the state before the update: o_t must include k_t v_t^T",
        ),  # fmt: skip
        Wrong(_step_no_update, "the new state is the old one: store S after adding k v^T"),
        Wrong(_step_replace, "the state is replaced by k v^T instead of accumulated (S += ...)"),
        Wrong(_step_q_for_k, "the state update uses q instead of k"),
        Wrong(_step_k_reads, "k reads the state instead of q"),
    ],
    output_names=("o_t", "state"),
    rtol=1e-4,
    atol=1e-4,
    timeout=60.0,
)

EXERCISES = [EX_08_1, EX_08_2, EX_08_3]
