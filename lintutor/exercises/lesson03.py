"""Lesson 03 exercises: causal linear attention as a recurrence, as a masked T x T product, in
chunks, and one decode step.

Inputs are feature-mapped already (elu+1 of random normals), in float64. The recurrent, parallel
and chunked cases start from a zero or a random initial state, with or without the normalizer;
the decode step is checked without the normalizer (its state is the tensor S)."""

from __future__ import annotations

import torch

from lintutor import causal as ref
from lintutor.exercises.core import Exercise, Wrong, normal, randint
from lintutor.featuremaps import elu1


def _inputs(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    kw = {
        "q": elu1(normal(g, B, H, T, D)),
        "k": elu1(normal(g, B, H, T, D)),
        "v": normal(g, B, H, T, E),
        "normalize": s["normalize"],
        "initial_state": None,
    }
    if s["state"]:
        S0 = normal(g, B, H, D, E)
        z0 = 2 * torch.rand(B, H, D, generator=g, dtype=torch.float64)
        kw["initial_state"] = (S0, z0) if s["normalize"] else S0
    if "C" in s:
        kw["chunk_size"] = s["C"]
    return kw


def _random_sizes(chunked):
    def sizes(g):
        out = {
            "B": randint(g, 1, 2),
            "H": randint(g, 1, 3),
            "T": randint(g, 1, 40),
            "D": randint(g, 1, 8),
            "E": randint(g, 1, 8),
            "normalize": bool(randint(g, 0, 1)),
            "state": bool(randint(g, 0, 1)),
        }
        if chunked:
            out["C"] = randint(g, 1, 16)
        return out

    return sizes


NAMED = [
    ("T=1", {"B": 1, "H": 1, "T": 1, "D": 3, "E": 3, "normalize": True, "state": False}),
    ("odd T", {"B": 1, "H": 1, "T": 7, "D": 4, "E": 4, "normalize": True, "state": False}),
    ("D != E, B, H > 1",
     {"B": 2, "H": 3, "T": 9, "D": 5, "E": 3, "normalize": True, "state": False}),
    ("initial state", {"B": 2, "H": 2, "T": 8, "D": 3, "E": 4, "normalize": True, "state": True}),
    ("no normalizer, initial state",
     {"B": 1, "H": 2, "T": 10, "D": 4, "E": 2, "normalize": False, "state": True}),
]  # fmt: skip

NAMED_CHUNKED = [
    ("T=1", {**NAMED[0][1], "C": 4}),
    ("T not a multiple of C", {**NAMED[1][1], "C": 3}),
    ("D != E, B, H > 1", {**NAMED[2][1], "C": 4}),
    ("initial state", {**NAMED[3][1], "C": 3}),
    ("no normalizer, C > T", {**NAMED[4][1], "C": 16}),
    ("C = 1", {"B": 1, "H": 1, "T": 6, "D": 2, "E": 3, "normalize": True, "state": True, "C": 1}),
]


def _start(q, v, normalize, initial_state):
    """(S, z) to start from, for the wrong implementations below."""
    B, H, _, D = q.shape
    if initial_state is None:
        return q.new_zeros(B, H, D, v.shape[-1]), q.new_zeros(B, H, D)
    if normalize:
        return initial_state
    return initial_state, q.new_zeros(B, H, D)


# --- 03.1 the recurrent form (the definition) ------------------------------------------------


def _rec(q, k, v, normalize, initial_state, eps, *, read_first=False, keep_initial=True,
         z_running=True, use_norm=True):  # fmt: skip
    S, z = _start(q, v, normalize, initial_state)
    if not keep_initial:
        S, z = torch.zeros_like(S), torch.zeros_like(z)
    outs = []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = q[:, :, t], k[:, :, t], v[:, :, t]
        S_new = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        z_new = z + k_t if z_running else k_t
        o_t = torch.einsum("bhd,bhde->bhe", q_t, S if read_first else S_new)
        if normalize and use_norm:
            o_t = o_t / ((q_t * (z if read_first else z_new)).sum(-1, keepdim=True) + eps)
        S, z = S_new, z_new
        outs.append(o_t)
    return torch.stack(outs, dim=2)


def _rec_no_normalizer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                       eps=1e-6):  # fmt: skip
    return _rec(q, k, v, normalize, initial_state, eps, use_norm=False)


def _rec_read_before_update(q, k, v, normalize=True, initial_state=None,
                            output_final_state=False, eps=1e-6):  # fmt: skip
    return _rec(q, k, v, normalize, initial_state, 1.0, read_first=True)


def _rec_ignores_initial_state(q, k, v, normalize=True, initial_state=None,
                               output_final_state=False, eps=1e-6):  # fmt: skip
    return _rec(q, k, v, normalize, initial_state, eps, keep_initial=False)


def _rec_z_not_accumulated(q, k, v, normalize=True, initial_state=None,
                           output_final_state=False, eps=1e-6):  # fmt: skip
    return _rec(q, k, v, normalize, initial_state, eps, z_running=False)


def _rec_sees_future(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                     eps=1e-6):  # fmt: skip
    S, z = _start(q, v, normalize, initial_state)
    S = S + k.transpose(-1, -2) @ v  # the final state, used by every token
    o = q @ S
    if normalize:
        o = o / ((q * (z + k.sum(2)).unsqueeze(2)).sum(-1, keepdim=True) + eps)
    return o


EX_03_1 = Exercise(
    id="03.1",
    lesson="03",
    title="causal linear attention, recurrent form",
    name="causal_linear_attention_recurrent",
    reference=ref.causal_linear_attention_recurrent,
    make_inputs=_inputs,
    named_sizes=NAMED,
    random_sizes=_random_sizes(False),
    time_dim=-2,
    hints=(
        "Loop over t. Keep a (B, H, D, E) state S (and a (B, H, D) normalizer z); update it with "
        "token t, then read it with q_t.",
        "S starts at zeros (or initial_state: S, or (S, z) when normalize). Each step: "
        "S = S + outer(k_t, v_t); z = z + k_t; o_t = S^T q_t / (q_t . z + eps). Stack the o_t "
        "along dim 2; return (o, final state) when output_final_state.",
        "S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2); "
        "o_t = torch.einsum('bhd,bhde->bhe', q_t, S); z = z + k_t; "
        "o_t = o_t / ((q_t * z).sum(-1, keepdim=True) + eps)",
    ),
    wrong=[
        Wrong(
            _rec_no_normalizer, "the normalizer is missing: divide by q_t . z_t when normalize=True"
        ),
        Wrong(
            _rec_read_before_update,
            "the state is read before token t is added "
            "(exclusive): token t must see itself, o_t uses S_t = S_{t-1} + k_t v_t^T",
        ),
        Wrong(_rec_ignores_initial_state, "initial_state is ignored: start from it, not zeros"),
        Wrong(
            _rec_z_not_accumulated,
            "the normalizer uses only k_t: z_t is the running sum z_{t-1} + k_t",
        ),
        Wrong(_rec_sees_future, "every token reads the final state: it sees the future"),
    ],
)


# --- 03.2 the parallel form (masked T x T) ---------------------------------------------------


def _par(q, k, v, normalize, initial_state, eps, *, diagonal=0, masked=True, use_norm=True,
         keep_initial=True, masked_den=True):  # fmt: skip
    S0, z0 = _start(q, v, normalize, initial_state)
    if not keep_initial:
        S0, z0 = torch.zeros_like(S0), torch.zeros_like(z0)
    T = q.shape[2]
    full = q @ k.transpose(-1, -2)
    mask = torch.ones(T, T, dtype=torch.bool).tril(diagonal)
    scores = full.masked_fill(~mask, 0.0) if masked else full
    o = scores @ v + q @ S0
    if normalize and use_norm:
        den = (scores if masked_den else full).sum(-1) + (q * z0.unsqueeze(2)).sum(-1)
        o = o / (den.unsqueeze(-1) + eps)
    return o


def _par_no_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                 eps=1e-6):  # fmt: skip
    return _par(q, k, v, normalize, initial_state, eps, masked=False)


def _par_strict_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                     eps=1e-6):  # fmt: skip
    return _par(q, k, v, normalize, initial_state, 1.0, diagonal=-1)


def _par_upper_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                    eps=1e-6):  # fmt: skip
    S0, z0 = _start(q, v, normalize, initial_state)
    T = q.shape[2]
    scores = (q @ k.transpose(-1, -2)).masked_fill(~torch.ones(T, T, dtype=torch.bool).triu(), 0)
    o = scores @ v + q @ S0
    if normalize:
        o = o / ((scores.sum(-1) + (q * z0.unsqueeze(2)).sum(-1)).unsqueeze(-1) + eps)
    return o


def _par_no_normalizer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                       eps=1e-6):  # fmt: skip
    return _par(q, k, v, normalize, initial_state, eps, use_norm=False)


def _par_ignores_initial_state(q, k, v, normalize=True, initial_state=None,
                               output_final_state=False, eps=1e-6):  # fmt: skip
    return _par(q, k, v, normalize, initial_state, eps, keep_initial=False)


def _par_unmasked_normalizer(q, k, v, normalize=True, initial_state=None,
                             output_final_state=False, eps=1e-6):  # fmt: skip
    return _par(q, k, v, normalize, initial_state, eps, masked_den=False)


EX_03_2 = Exercise(
    id="03.2",
    lesson="03",
    title="causal linear attention, parallel (masked) form",
    name="causal_linear_attention_parallel",
    reference=ref.causal_linear_attention_parallel,
    make_inputs=_inputs,
    named_sizes=NAMED,
    random_sizes=_random_sizes(False),
    time_dim=-2,
    hints=(
        "Build the (T, T) matrix q k^T, keep only s <= t, multiply by v. An initial state adds "
        "q S_0 to every output.",
        "scores = q @ k^T with entries s > t set to 0 (not -inf: there is no softmax). "
        "The normalizer of row t is the sum of its kept scores plus q_t . z_0. The final "
        "state is S_0 + k^T v (and z_0 + sum_t k_t).",
        "mask = torch.ones(T, T, dtype=torch.bool).tril(); "
        "scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0); o = scores @ v + q @ S0; "
        "den = scores.sum(-1) + (q * z0.unsqueeze(2)).sum(-1)",
    ),
    wrong=[
        Wrong(_par_no_mask, "there is no causal mask: every token sees the future"),
        Wrong(_par_upper_mask, "the mask is flipped (triu): tokens see the future, not the past"),
        Wrong(_par_strict_mask, "the mask hides the diagonal (tril(-1)): token t must see itself"),
        Wrong(
            _par_no_normalizer,
            "the normalizer is missing: divide by the row sums of the "
            "masked scores (plus q_t . z_0)",
        ),
        Wrong(_par_ignores_initial_state, "initial_state is ignored: add q S_0 (and q . z_0)"),
        Wrong(
            _par_unmasked_normalizer,
            "the normalizer sums the unmasked scores: the denominator sees the future",
        ),
    ],
)


# --- 03.3 the chunked form --------------------------------------------------------------------


def _chunk(q, k, v, normalize, initial_state, eps, C, *, carry=True, diagonal=0,
           update_first=False, use_norm=True, masked=True):  # fmt: skip
    S, z = _start(q, v, normalize, initial_state)
    T = q.shape[2]
    outs = []
    for start in range(0, T, C):
        q_c, k_c, v_c = (
            q[:, :, start : start + C],
            k[:, :, start : start + C],
            v[:, :, start : start + C],
        )
        n = q_c.shape[2]
        if not carry:
            S, z = _start(q, v, normalize, initial_state)
        if update_first:
            S, z = S + k_c.transpose(-1, -2) @ v_c, z + k_c.sum(2)
        scores = q_c @ k_c.transpose(-1, -2)
        if masked:
            scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(diagonal), 0.0)
        o_c = scores @ v_c + q_c @ S
        if normalize and use_norm:
            den = scores.sum(-1) + (q_c * z.unsqueeze(2)).sum(-1)
            o_c = o_c / (den.unsqueeze(-1) + eps)
        if not update_first:
            S, z = S + k_c.transpose(-1, -2) @ v_c, z + k_c.sum(2)
        outs.append(o_c)
    return torch.cat(outs, dim=2)


def _chunk_state_not_carried(q, k, v, normalize=True, initial_state=None,
                             output_final_state=False, eps=1e-6, chunk_size=64):  # fmt: skip
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, carry=False)


def _chunk_strict_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                       eps=1e-6, chunk_size=64):  # fmt: skip
    return _chunk(q, k, v, normalize, initial_state, 1.0, chunk_size, diagonal=-1)


def _chunk_state_updated_first(q, k, v, normalize=True, initial_state=None,
                               output_final_state=False, eps=1e-6, chunk_size=64):  # fmt: skip
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, update_first=True)


def _chunk_no_normalizer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                         eps=1e-6, chunk_size=64):  # fmt: skip
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, use_norm=False)


def _chunk_no_intra_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                         eps=1e-6, chunk_size=64):  # fmt: skip
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, masked=False)


def _chunk_drops_last_partial(q, k, v, normalize=True, initial_state=None,
                              output_final_state=False, eps=1e-6, chunk_size=64):  # fmt: skip
    T = q.shape[2] - q.shape[2] % chunk_size
    return _chunk(q[:, :, :T], k[:, :, :T], v[:, :, :T], normalize, initial_state, eps, chunk_size)


EX_03_3 = Exercise(
    id="03.3",
    lesson="03",
    title="causal linear attention, chunked form",
    name="causal_linear_attention_chunked",
    reference=ref.causal_linear_attention_chunked,
    make_inputs=_inputs,
    named_sizes=NAMED_CHUNKED,
    random_sizes=_random_sizes(True),
    time_dim=-2,
    hints=(
        "Two parts per chunk: inside the chunk, the parallel form; from earlier chunks, the "
        "state. Then add this chunk to the state.",
        "For each chunk [start, end): o_c = tril(q_c k_c^T) v_c + q_c S (S holds every earlier "
        "chunk; the mask keeps the diagonal). Normalizer: row sums of the masked scores + "
        "q_c . z. Only after that: S += k_c^T v_c, z += sum k_c. The last chunk may be shorter.",
        "for start in range(0, T, chunk_size): end = min(start + chunk_size, T); ... "
        "mask = torch.ones(n, n, dtype=torch.bool).tril(); "
        "scores = (q_c @ k_c.transpose(-1, -2)).masked_fill(~mask, 0.0); "
        "o_c = scores @ v_c + q_c @ S",
    ),
    wrong=[
        Wrong(
            _chunk_state_not_carried,
            "the state is not carried across chunks: each chunk "
            "starts again from the initial state",
        ),
        Wrong(
            _chunk_strict_mask,
            "the intra-chunk mask hides the diagonal (tril(-1)): an "
            "exclusive off-by-one, token t must see itself",
        ),
        Wrong(
            _chunk_state_updated_first,
            "the state is updated with the chunk before it is "
            "read (inclusive off-by-one): the chunk is counted twice and sees its own future",
        ),
        Wrong(
            _chunk_no_normalizer,
            "the normalizer is missing: divide by the masked row sums plus q_c . z",
        ),
        Wrong(
            _chunk_no_intra_mask,
            "the intra-chunk scores are not masked: tokens see the future inside their chunk",
        ),
        Wrong(
            _chunk_drops_last_partial,
            "the last, shorter chunk is dropped: T need not be a multiple of chunk_size",
        ),
    ],
)


# --- 03.4 one decode step ---------------------------------------------------------------------


def _step_inputs(s, g):
    B, H, D, E = s["B"], s["H"], s["D"], s["E"]
    return {
        "q_t": elu1(normal(g, B, H, D)),
        "k_t": elu1(normal(g, B, H, D)),
        "v_t": normal(g, B, H, E),
        "state": normal(g, B, H, D, E),
        "normalize": False,
    }


def _step_read_old(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, state), S


def _step_state_not_returned(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), state


def _step_from_zero(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    S = k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_outer_transposed(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    S = state + v_t.unsqueeze(-1) * k_t.unsqueeze(-2)  # v_t k_t^T: (B, H, E, D)
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_query_key_swapped(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    S = state + q_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", k_t, S), S


EX_03_4 = Exercise(
    id="03.4",
    lesson="03",
    title="one decode step from a state",
    name="causal_linear_attention_step",
    reference=ref.causal_linear_attention_step,
    make_inputs=_step_inputs,
    named_sizes=[
        ("one head", {"B": 1, "H": 1, "D": 3, "E": 3}),
        ("D != E", {"B": 1, "H": 2, "D": 5, "E": 2}),
        ("B, H > 1", {"B": 3, "H": 4, "D": 4, "E": 6}),
    ],
    random_sizes=lambda g: {
        "B": randint(g, 1, 3),
        "H": randint(g, 1, 4),
        "D": randint(g, 1, 10),
        "E": randint(g, 1, 10),
    },
    output_names=("o_t", "state"),
    hints=(
        "One token of the recurrent form: update the state, then read it.",
        "state is S (B, H, D, E) here (normalize=False). S_new = S + k_t v_t^T (an outer "
        "product per batch and head); o_t = S_new^T q_t. Return (o_t, S_new) without modifying "
        "the input state in place.",
        "S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2); "
        "return torch.einsum('bhd,bhde->bhe', q_t, S), S",
    ),
    wrong=[
        Wrong(
            _step_read_old,
            "the output reads the old state: add k_t v_t^T first, the token sees itself",
        ),
        Wrong(_step_state_not_returned, "the returned state is the old one: return S + k_t v_t^T"),
        Wrong(_step_from_zero, "the incoming state is ignored: the step continues from it"),
        Wrong(
            _step_outer_transposed,
            "the outer product is v_t k_t^T (E, D); the state is k_t v_t^T (D, E)",
        ),
        Wrong(
            _step_query_key_swapped,
            "q_t and k_t are swapped: the key goes into the state, the query reads it",
        ),
    ],
)

EXERCISES = [EX_03_1, EX_03_2, EX_03_3, EX_03_4]
