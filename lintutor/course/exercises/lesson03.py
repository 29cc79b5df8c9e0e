"""Lesson 03 exercises: causal linear attention as a recurrence, as a masked T x T product, in
chunks, and one decode step.

Inputs are feature-mapped already (elu+1 of random normals), in float64. The recurrent, parallel
and chunked cases start from a zero or a random initial state, with or without the normalizer;
the decode step is checked without the normalizer (its state is the tensor S)."""

from __future__ import annotations

import torch

from lintutor import causal as ref
from lintutor.course.checker import Exercise, between, cases, normal, uniform
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
        z0 = 2 * uniform(g, B, H, D)
        kw["initial_state"] = (S0, z0) if s["normalize"] else S0
    if "C" in s:
        kw["chunk_size"] = s["C"]
    return kw


SIZES = "B H T D E normalize state"
NAMED = cases(
    SIZES,
    ("T=1", 1, 1, 1, 3, 3, True, False),
    ("odd T", 1, 1, 7, 4, 4, True, False),
    ("D != E, B, H > 1", 2, 3, 9, 5, 3, True, False),
    ("initial state", 2, 2, 8, 3, 4, True, True),
    ("no normalizer, initial state", 1, 2, 10, 4, 2, False, True),
)
NAMED_CHUNKED = cases(
    SIZES + " C",
    ("T=1", 1, 1, 1, 3, 3, True, False, 4),
    ("T not a multiple of C", 1, 1, 7, 4, 4, True, False, 3),
    ("D != E, B, H > 1", 2, 3, 9, 5, 3, True, False, 4),
    ("initial state", 2, 2, 8, 3, 4, True, True, 3),
    ("no normalizer, C > T", 1, 2, 10, 4, 2, False, True, 16),
    ("C = 1", 1, 1, 6, 2, 3, True, True, 1),
)
RANDOM = dict(B=(1, 2), H=(1, 3), T=(1, 40), D=(1, 8), E=(1, 8), normalize=bool, state=bool)


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


def _rec_no_normalizer(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """the normalizer is missing: divide by q_t . z_t when normalize=True"""
    return _rec(q, k, v, normalize, initial_state, eps, use_norm=False)


def _rec_read_before_update(q, k, v, normalize=True, initial_state=None, **_):
    """the state is read before token t is added (exclusive): token t must see itself, o_t uses
    S_t = S_{t-1} + k_t v_t^T"""
    return _rec(q, k, v, normalize, initial_state, 1.0, read_first=True)


def _rec_ignores_initial_state(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """initial_state is ignored: start from it, not zeros"""
    return _rec(q, k, v, normalize, initial_state, eps, keep_initial=False)


def _rec_z_not_accumulated(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """the normalizer uses only k_t: z_t is the running sum z_{t-1} + k_t"""
    return _rec(q, k, v, normalize, initial_state, eps, z_running=False)


def _rec_sees_future(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """every token reads the final state: it sees the future"""
    S, z = _start(q, v, normalize, initial_state)
    S = S + k.transpose(-1, -2) @ v  # the final state, used by every token
    o = q @ S
    if normalize:
        o = o / ((q * (z + k.sum(2)).unsqueeze(2)).sum(-1, keepdim=True) + eps)
    return o


EX_03_1 = Exercise(
    id="03.1",
    title="causal linear attention, recurrent form",
    form="recurrent",
    reference=ref.causal_linear_attention_recurrent,
    make_inputs=_inputs,
    named_sizes=NAMED,
    random_sizes=between(**RANDOM),
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
        _rec_no_normalizer,
        _rec_read_before_update,
        _rec_ignores_initial_state,
        _rec_z_not_accumulated,
        _rec_sees_future,
    ],
    difficulty=2,
    minutes=15,
    objective="Write causal linear attention as an RNN with a matrix state, from any initial "
    "state.",
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


def _par_no_mask(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """there is no causal mask: every token sees the future"""
    return _par(q, k, v, normalize, initial_state, eps, masked=False)


def _par_upper_mask(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """the mask is flipped (triu): tokens see the future, not the past"""
    S0, z0 = _start(q, v, normalize, initial_state)
    T = q.shape[2]
    scores = (q @ k.transpose(-1, -2)).masked_fill(~torch.ones(T, T, dtype=torch.bool).triu(), 0)
    o = scores @ v + q @ S0
    if normalize:
        o = o / ((scores.sum(-1) + (q * z0.unsqueeze(2)).sum(-1)).unsqueeze(-1) + eps)
    return o


def _par_strict_mask(q, k, v, normalize=True, initial_state=None, **_):
    """the mask hides the diagonal (tril(-1)): token t must see itself"""
    return _par(q, k, v, normalize, initial_state, 1.0, diagonal=-1)


def _par_no_normalizer(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """the normalizer is missing: divide by the row sums of the masked scores (plus q_t . z_0)"""
    return _par(q, k, v, normalize, initial_state, eps, use_norm=False)


def _par_ignores_initial_state(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """initial_state is ignored: add q S_0 (and q . z_0)"""
    return _par(q, k, v, normalize, initial_state, eps, keep_initial=False)


def _par_unmasked_normalizer(q, k, v, normalize=True, initial_state=None, eps=1e-6, **_):
    """the normalizer sums the unmasked scores: the denominator sees the future"""
    return _par(q, k, v, normalize, initial_state, eps, masked_den=False)


EX_03_2 = Exercise(
    id="03.2",
    title="causal linear attention, parallel (masked) form",
    form="parallel",
    reference=ref.causal_linear_attention_parallel,
    make_inputs=_inputs,
    named_sizes=NAMED,
    random_sizes=between(**RANDOM),
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
        _par_no_mask,
        _par_upper_mask,
        _par_strict_mask,
        _par_no_normalizer,
        _par_ignores_initial_state,
        _par_unmasked_normalizer,
    ],
    difficulty=2,
    minutes=15,
    objective="Compute the same outputs and final state with one masked T x T product.",
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


def _chunk_state_not_carried(q, k, v, normalize=True, initial_state=None, eps=1e-6,
                             chunk_size=64, **_):  # fmt: skip
    """the state is not carried across chunks: each chunk starts again from the initial state"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, carry=False)


def _chunk_strict_mask(q, k, v, normalize=True, initial_state=None, chunk_size=64, **_):
    """the intra-chunk mask hides the diagonal (tril(-1)): an exclusive off-by-one, token t must
    see itself"""
    return _chunk(q, k, v, normalize, initial_state, 1.0, chunk_size, diagonal=-1)


def _chunk_state_updated_first(q, k, v, normalize=True, initial_state=None, eps=1e-6,
                               chunk_size=64, **_):  # fmt: skip
    """the state is updated with the chunk before it is read (inclusive off-by-one): the chunk is
    counted twice and sees its own future"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, update_first=True)


def _chunk_no_normalizer(q, k, v, normalize=True, initial_state=None, eps=1e-6, chunk_size=64,
                         **_):  # fmt: skip
    """the normalizer is missing: divide by the masked row sums plus q_c . z"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, use_norm=False)


def _chunk_no_intra_mask(q, k, v, normalize=True, initial_state=None, eps=1e-6, chunk_size=64,
                         **_):  # fmt: skip
    """the intra-chunk scores are not masked: tokens see the future inside their chunk"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, masked=False)


def _chunk_drops_last_partial(q, k, v, normalize=True, initial_state=None, eps=1e-6,
                              chunk_size=64, **_):  # fmt: skip
    """the last, shorter chunk is dropped: T need not be a multiple of chunk_size"""
    T = q.shape[2] - q.shape[2] % chunk_size
    return _chunk(q[:, :, :T], k[:, :, :T], v[:, :, :T], normalize, initial_state, eps, chunk_size)


EX_03_3 = Exercise(
    id="03.3",
    title="causal linear attention, chunked form",
    form="chunked",
    reference=ref.causal_linear_attention_chunked,
    make_inputs=_inputs,
    named_sizes=NAMED_CHUNKED,
    random_sizes=between(**RANDOM, C=(1, 16)),
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
        _chunk_state_not_carried,
        _chunk_strict_mask,
        _chunk_state_updated_first,
        _chunk_no_normalizer,
        _chunk_no_intra_mask,
        _chunk_drops_last_partial,
    ],
    difficulty=3,
    minutes=25,
    objective="Combine the two: the masked product inside chunks of C tokens, the state across "
    "them.",
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


def _step_read_old(q_t, k_t, v_t, state, **_):
    """the output reads the old state: add k_t v_t^T first, the token sees itself"""
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, state), S


def _step_state_not_returned(q_t, k_t, v_t, state, **_):
    """the returned state is the old one: return S + k_t v_t^T"""
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), state


def _step_from_zero(q_t, k_t, v_t, **_):
    """the incoming state is ignored: the step continues from it"""
    S = k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_outer_transposed(q_t, k_t, v_t, state, **_):
    """the outer product is v_t k_t^T (E, D); the state is k_t v_t^T (D, E)"""
    S = state + v_t.unsqueeze(-1) * k_t.unsqueeze(-2)  # v_t k_t^T: (B, H, E, D)
    return torch.einsum("bhd,bhde->bhe", q_t, S), S


def _step_query_key_swapped(q_t, k_t, v_t, state, **_):
    """q_t and k_t are swapped: the key goes into the state, the query reads it"""
    S = state + q_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return torch.einsum("bhd,bhde->bhe", k_t, S), S


EX_03_4 = Exercise(
    id="03.4",
    title="one decode step from a state",
    reference=ref.causal_linear_attention_step,
    make_inputs=_step_inputs,
    named_sizes=cases(
        "B H D E",
        ("one head", 1, 1, 3, 3),
        ("D != E", 1, 2, 5, 2),
        ("B, H > 1", 3, 4, 4, 6),
    ),
    random_sizes=between(B=(1, 3), H=(1, 4), D=(1, 10), E=(1, 10)),
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
        _step_read_old,
        _step_state_not_returned,
        _step_from_zero,
        _step_outer_transposed,
        _step_query_key_swapped,
    ],
    difficulty=1,
    minutes=5,
    objective="Generate one token from the state: update it with k_t v_t^T, then read it with q_t.",
)

EXERCISES = [EX_03_1, EX_03_2, EX_03_3, EX_03_4]
