"""Lesson 03 exercises: causal linear attention as a recurrence, as a masked T x T product, in
chunks, and one decode step.

Inputs are feature-mapped already (elu+1 of random normals), in float64. The recurrent, parallel
and chunked cases start from a zero or a random initial state, with or without the normalizer,
and some return the final state, which is compared too (S, or the tuple (S, z)). The first cases
have small features and a large eps, so that a missing or misplaced eps is visible; one case has
T = 333, past any fixed-size buffer; one repeats an earlier case's sizes with other values. The
decode step is checked without the normalizer (its state is the tensor S)."""

from __future__ import annotations

import torch

from lintutor import causal as ref
from lintutor.course.checker import Exercise, between, cases, normal, uniform
from lintutor.course.exercises._mistakes import TIGHT, memo
from lintutor.featuremaps import elu1


def _inputs(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    scale = s.get("scale", 1.0)  # small features: a normalizer comparable with eps
    kw = {
        "q": scale * elu1(normal(g, B, H, T, D)),
        "k": scale * elu1(normal(g, B, H, T, D)),
        "v": normal(g, B, H, T, E),
        "normalize": s["normalize"],
        "initial_state": None,
    }
    if s["state"]:
        S0 = normal(g, B, H, D, E)
        z0 = 2 * uniform(g, B, H, D)
        kw["initial_state"] = (S0, z0) if s["normalize"] else S0
    if s.get("final"):
        kw["output_final_state"] = True
    if "eps" in s:
        kw["eps"] = s["eps"]
    if "C" in s:
        kw["chunk_size"] = s["C"]
    return kw


SIZES = "B H T D E normalize state"
EPS_FIRST = cases(  # q . z is ~1e-3 (with z_0) or ~1e-5 (without): eps is not negligible
    SIZES + " final eps scale",
    ("small normalizer, eps = 1e-2, final state", 1, 2, 6, 3, 2, True, True, True, 1e-2, 1e-3),
    ("small normalizer, eps = 1e-5", 1, 1, 5, 4, 3, True, False, False, 1e-5, 1e-3),
)
FINAL_AND_LONG = cases(
    SIZES + " final",
    ("final state (S, z)", 2, 1, 9, 3, 4, True, True, True),
    ("final state S, no normalizer", 1, 2, 8, 4, 3, False, True, True),
    ("final state from zeros, T=1", 1, 1, 1, 2, 2, True, False, True),
    ("T = 333, final state", 1, 1, 333, 4, 3, True, True, True),
    ("initial state again, other values", 2, 2, 8, 3, 4, True, True, False),
)
NAMED = (
    EPS_FIRST
    + cases(
        SIZES,
        ("T=1", 1, 1, 1, 3, 3, True, False),
        ("odd T", 1, 1, 7, 4, 4, True, False),
        ("D != E, B, H > 1", 2, 3, 9, 5, 3, True, False),
        ("initial state", 2, 2, 8, 3, 4, True, True),
        ("no normalizer, initial state", 1, 2, 10, 4, 2, False, True),
    )
    + FINAL_AND_LONG
)
NAMED_CHUNKED = (
    [(label, {**sizes, "C": 4}) for label, sizes in EPS_FIRST]
    + cases(
        SIZES + " C",
        ("T=1", 1, 1, 1, 3, 3, True, False, 4),
        ("T not a multiple of C", 1, 1, 7, 4, 4, True, False, 3),
        ("D != E, B, H > 1", 2, 3, 9, 5, 3, True, False, 4),
        ("initial state", 2, 2, 8, 3, 4, True, True, 3),
        ("no normalizer, C > T", 1, 2, 10, 4, 2, False, True, 16),
        ("C = 1", 1, 1, 6, 2, 3, True, True, 1),
    )
    + [(label, {**sizes, "C": 5 if sizes["T"] > 16 else 3}) for label, sizes in FINAL_AND_LONG]
)
RANDOM = dict(B=(1, 2), H=(1, 3), T=(1, 64), D=(1, 8), E=(1, 8), normalize=bool, state=bool,
              final=bool, eps=[1e-6, 1e-3, 0.0], scale=[1.0, 1e-2])  # fmt: skip


def _start(q, v, normalize, initial_state, keep_z0=True):
    """(S, z) to start from, for the wrong implementations below."""
    B, H, _, D = q.shape
    if initial_state is None:
        return q.new_zeros(B, H, D, v.shape[-1]), q.new_zeros(B, H, D)
    if normalize:
        S0, z0 = initial_state
        return S0, z0 if keep_z0 else torch.zeros_like(z0)
    return initial_state, q.new_zeros(B, H, D)


def _result(o, S, z, normalize, output_final_state, with_z=True):
    """What the forms return: o, or (o, final state) with the state (S, z) or S."""
    if not output_final_state:
        return o
    return o, ((S, z) if normalize and with_z else S)


# --- 03.1 the recurrent form (the definition) ------------------------------------------------


def _rec(q, k, v, normalize, initial_state, eps, final=False, *, read_first=False,
         keep_initial=True, z_running=True, use_norm=True, keep_z0=True, eps_on_z=False,
         with_z=True, drop_last_in_state=False):  # fmt: skip
    S, z = _start(q, v, normalize, initial_state, keep_z0)
    if not keep_initial:
        S, z = torch.zeros_like(S), torch.zeros_like(z)
    outs = []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = q[:, :, t], k[:, :, t], v[:, :, t]
        S_new = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        z_new = z + k_t if z_running else k_t
        o_t = torch.einsum("bhd,bhde->bhe", q_t, S if read_first else S_new)
        if normalize and use_norm:
            z_read = z if read_first else z_new
            den = (q_t * (z_read + eps)).sum(-1, keepdim=True) if eps_on_z else (
                (q_t * z_read).sum(-1, keepdim=True) + eps)  # fmt: skip
            o_t = o_t / den
        if not (drop_last_in_state and t == q.shape[2] - 1):
            S, z = S_new, z_new
        outs.append(o_t)
    return _result(torch.stack(outs, dim=2), S, z, normalize, final, with_z)


def _rec_no_normalizer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                       eps=1e-6):  # fmt: skip
    """the normalizer is missing: divide by q_t . z_t when normalize=True"""
    return _rec(q, k, v, normalize, initial_state, eps, output_final_state, use_norm=False)


def _rec_read_before_update(q, k, v, normalize=True, initial_state=None,
                            output_final_state=False, **_):  # fmt: skip
    """the state is read before token t is added (exclusive): token t must see itself, o_t uses
    S_t = S_{t-1} + k_t v_t^T"""
    return _rec(q, k, v, normalize, initial_state, 1.0, output_final_state, read_first=True)


def _rec_ignores_initial_state(q, k, v, normalize=True, initial_state=None,
                               output_final_state=False, eps=1e-6):  # fmt: skip
    """initial_state is ignored: start from it, not zeros"""
    return _rec(q, k, v, normalize, initial_state, eps, output_final_state, keep_initial=False)


def _rec_z_not_accumulated(q, k, v, normalize=True, initial_state=None,
                           output_final_state=False, eps=1e-6):  # fmt: skip
    """the normalizer uses only k_t: z_t is the running sum z_{t-1} + k_t"""
    return _rec(q, k, v, normalize, initial_state, eps, output_final_state, z_running=False)


def _rec_sees_future(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                     eps=1e-6):  # fmt: skip
    """every token reads the final state: it sees the future"""
    S, z = _start(q, v, normalize, initial_state)
    S, z = S + k.transpose(-1, -2) @ v, z + k.sum(2)  # the final state, used by every token
    o = q @ S
    if normalize:
        o = o / ((q * z.unsqueeze(2)).sum(-1, keepdim=True) + eps)
    return _result(o, S, z, normalize, output_final_state)


def _rec_no_eps(q, k, v, normalize=True, initial_state=None, output_final_state=False, **_):
    """eps is left out: divide by q_t . z_t + eps (it matters when the normalizer is small)"""
    return _rec(q, k, v, normalize, initial_state, 0.0, output_final_state)


def _rec_eps_on_z(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                  eps=1e-6):  # fmt: skip
    """eps is added to every entry of z_t, q_t . (z_t + eps); it is added once, to q_t . z_t"""
    return _rec(q, k, v, normalize, initial_state, eps, output_final_state, eps_on_z=True)


def _rec_ignores_z0(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                    eps=1e-6):  # fmt: skip
    """the initial state's normalizer z_0 is ignored (S_0 is used, z starts at zeros): with
    normalize=True the state is (S, z) and z starts at z_0"""
    return _rec(q, k, v, normalize, initial_state, eps, output_final_state, keep_z0=False)


def _rec_final_without_z(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                         eps=1e-6):  # fmt: skip
    """the final state is S alone: with normalize=True it is the tuple (S, z)"""
    return _rec(q, k, v, normalize, initial_state, eps, output_final_state, with_z=False)


def _rec_final_misses_last_token(q, k, v, normalize=True, initial_state=None,
                                 output_final_state=False, eps=1e-6):  # fmt: skip
    """the final state misses the last token (S_{T-1}); return the state after the loop, S_T"""
    return _rec(q, k, v, normalize, initial_state, eps, output_final_state,
                drop_last_in_state=True)  # fmt: skip


def _rec_output_buffer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                       eps=1e-6):  # fmt: skip
    """the outputs are written into a buffer of 256 tokens made once: for T > 256 it is too small;
    stack the o_t (or allocate (B, H, T, E))"""
    o = _rec(q, k, v, normalize, initial_state, eps, output_final_state)
    o_t = o[0] if output_final_state else o
    buffer = o_t.new_zeros(*o_t.shape[:2], 256, o_t.shape[-1])
    buffer[:, :, : o_t.shape[2]] = o_t  # fails for T > 256
    return (
        (buffer[:, :, : o_t.shape[2]], o[1]) if output_final_state else buffer[:, :, : o_t.shape[2]]
    )


EX_03_1 = Exercise(
    id="03.1",
    title="causal linear attention, recurrent form",
    form="recurrent",
    reference=ref.causal_linear_attention_recurrent,
    make_inputs=_inputs,
    named_sizes=NAMED,
    random_sizes=between(**RANDOM),
    time_dim=-2,
    output_names=("output", "final state"),
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
        _rec_no_eps,
        _rec_eps_on_z,
        _rec_ignores_z0,
        _rec_final_without_z,
        _rec_final_misses_last_token,
        _rec_output_buffer,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Write causal linear attention as an RNN with a matrix state, from any initial "
    "state.",
)


# --- 03.2 the parallel form (masked T x T) ---------------------------------------------------


def _par(q, k, v, normalize, initial_state, eps, final=False, *, diagonal=0, masked=True,
         use_norm=True, keep_initial=True, masked_den=True, keep_z0=True, mask=None,
         final_z0=True):  # fmt: skip
    S0, z0 = _start(q, v, normalize, initial_state, keep_z0)
    if not keep_initial:
        S0, z0 = torch.zeros_like(S0), torch.zeros_like(z0)
    T = q.shape[2]
    full = q @ k.transpose(-1, -2)
    mask = torch.ones(T, T, dtype=torch.bool).tril(diagonal) if mask is None else mask
    scores = full.masked_fill(~mask, 0.0) if masked else full
    o = scores @ v + q @ S0
    if normalize and use_norm:
        den = (scores if masked_den else full).sum(-1) + (q * z0.unsqueeze(2)).sum(-1)
        o = o / (den.unsqueeze(-1) + eps)
    S, z = S0 + k.transpose(-1, -2) @ v, (z0 if final_z0 else 0) + k.sum(2)
    return _result(o, S, z, normalize, final)


def _par_no_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                 eps=1e-6):  # fmt: skip
    """there is no causal mask: every token sees the future"""
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, masked=False)


def _par_upper_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                    eps=1e-6):  # fmt: skip
    """the mask is flipped (triu): tokens see the future, not the past"""
    T = q.shape[2]
    mask = torch.ones(T, T, dtype=torch.bool).triu()
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, mask=mask)


def _par_strict_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                     **_):  # fmt: skip
    """the mask hides the diagonal (tril(-1)): token t must see itself"""
    return _par(q, k, v, normalize, initial_state, 1.0, output_final_state, diagonal=-1)


def _par_no_normalizer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                       eps=1e-6):  # fmt: skip
    """the normalizer is missing: divide by the row sums of the masked scores (plus q_t . z_0)"""
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, use_norm=False)


def _par_ignores_initial_state(q, k, v, normalize=True, initial_state=None,
                               output_final_state=False, eps=1e-6):  # fmt: skip
    """initial_state is ignored: add q S_0 (and q . z_0)"""
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, keep_initial=False)


def _par_unmasked_normalizer(q, k, v, normalize=True, initial_state=None,
                             output_final_state=False, eps=1e-6):  # fmt: skip
    """the normalizer sums the unmasked scores: the denominator sees the future"""
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, masked_den=False)


def _par_no_eps(q, k, v, normalize=True, initial_state=None, output_final_state=False, **_):
    """eps is left out: divide by the row sums (plus q_t . z_0) + eps (it matters when the
    normalizer is small)"""
    return _par(q, k, v, normalize, initial_state, 0.0, output_final_state)


def _par_ignores_z0(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                    eps=1e-6):  # fmt: skip
    """the initial state's normalizer z_0 is ignored: the denominator is the masked row sum plus
    q_t . z_0"""
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, keep_z0=False)


def _par_final_z_without_z0(q, k, v, normalize=True, initial_state=None,
                            output_final_state=False, eps=1e-6):  # fmt: skip
    """the final normalizer is sum_t k_t without z_0: the final state is (S_0 + k^T v,
    z_0 + sum_t k_t)"""
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, final_z0=False)


_MASK_256 = torch.ones(256, 256, dtype=torch.bool).tril()


def _par_mask_buffer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                     eps=1e-6):  # fmt: skip
    """the causal mask is sliced from a 256 x 256 buffer made once: for T > 256 it is too small;
    build it for this T"""
    T = q.shape[2]
    mask = _MASK_256[:T, :T]
    return _par(q, k, v, normalize, initial_state, eps, output_final_state, mask=mask)


def _par_memo(q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.causal_linear_attention_parallel, q, k, v, normalize, initial_state,
                output_final_state, eps)  # fmt: skip


EX_03_2 = Exercise(
    id="03.2",
    title="causal linear attention, parallel (masked) form",
    form="parallel",
    reference=ref.causal_linear_attention_parallel,
    make_inputs=_inputs,
    named_sizes=NAMED,
    random_sizes=between(**RANDOM),
    time_dim=-2,
    output_names=("output", "final state"),
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
        _par_no_eps,
        _par_ignores_z0,
        _par_final_z_without_z0,
        _par_mask_buffer,
        _par_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Compute the same outputs and final state with one masked T x T product.",
)


# --- 03.3 the chunked form --------------------------------------------------------------------


def _chunk(q, k, v, normalize, initial_state, eps, C, final=False, *, carry=True, diagonal=0,
           update_first=False, use_norm=True, masked=True, keep_z0=True,
           drop_last_in_state=False):  # fmt: skip
    S, z = _start(q, v, normalize, initial_state, keep_z0)
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
        last = start + C >= T
        if not update_first and not (drop_last_in_state and last):
            S, z = S + k_c.transpose(-1, -2) @ v_c, z + k_c.sum(2)
        outs.append(o_c)
    return _result(torch.cat(outs, dim=2), S, z, normalize, final)


def _chunk_state_not_carried(q, k, v, normalize=True, initial_state=None,
                             output_final_state=False, eps=1e-6, chunk_size=64):  # fmt: skip
    """the state is not carried across chunks: each chunk starts again from the initial state"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, output_final_state,
                  carry=False)  # fmt: skip


def _chunk_strict_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                       chunk_size=64, **_):  # fmt: skip
    """the intra-chunk mask hides the diagonal (tril(-1)): an exclusive off-by-one, token t must
    see itself"""
    return _chunk(q, k, v, normalize, initial_state, 1.0, chunk_size, output_final_state,
                  diagonal=-1)  # fmt: skip


def _chunk_state_updated_first(q, k, v, normalize=True, initial_state=None,
                               output_final_state=False, eps=1e-6, chunk_size=64):  # fmt: skip
    """the state is updated with the chunk before it is read (inclusive off-by-one): the chunk is
    counted twice and sees its own future"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, output_final_state,
                  update_first=True)  # fmt: skip


def _chunk_no_normalizer(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                         eps=1e-6, chunk_size=64):  # fmt: skip
    """the normalizer is missing: divide by the masked row sums plus q_c . z"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, output_final_state,
                  use_norm=False)  # fmt: skip


def _chunk_no_intra_mask(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                         eps=1e-6, chunk_size=64):  # fmt: skip
    """the intra-chunk scores are not masked: tokens see the future inside their chunk"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, output_final_state,
                  masked=False)  # fmt: skip


def _chunk_drops_last_partial(q, k, v, normalize=True, initial_state=None,
                              output_final_state=False, eps=1e-6, chunk_size=64):  # fmt: skip
    """the last, shorter chunk is dropped: T need not be a multiple of chunk_size"""
    T = q.shape[2] - q.shape[2] % chunk_size
    return _chunk(q[:, :, :T], k[:, :, :T], v[:, :, :T], normalize, initial_state, eps,
                  chunk_size, output_final_state)  # fmt: skip


def _chunk_no_eps(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                  chunk_size=64, **_):  # fmt: skip
    """eps is left out: divide by the masked row sums plus q_c . z, plus eps (it matters when the
    normalizer is small)"""
    return _chunk(q, k, v, normalize, initial_state, 0.0, chunk_size, output_final_state)


def _chunk_ignores_z0(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                      eps=1e-6, chunk_size=64):  # fmt: skip
    """the initial state's normalizer z_0 is ignored: z starts at z_0, not at zeros"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, output_final_state,
                  keep_z0=False)  # fmt: skip


def _chunk_final_misses_last_chunk(q, k, v, normalize=True, initial_state=None,
                                   output_final_state=False, eps=1e-6, chunk_size=64):  # fmt: skip
    """the final state misses the last chunk: add k_c^T v_c (and sum k_c) after the last chunk
    too"""
    return _chunk(q, k, v, normalize, initial_state, eps, chunk_size, output_final_state,
                  drop_last_in_state=True)  # fmt: skip


def _chunk_memo(q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6,
                chunk_size=64):  # fmt: skip
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.causal_linear_attention_chunked, q, k, v, normalize, initial_state,
                output_final_state, eps, chunk_size)  # fmt: skip


EX_03_3 = Exercise(
    id="03.3",
    title="causal linear attention, chunked form",
    form="chunked",
    reference=ref.causal_linear_attention_chunked,
    make_inputs=_inputs,
    named_sizes=NAMED_CHUNKED,
    random_sizes=between(**RANDOM, C=(1, 16)),
    time_dim=-2,
    output_names=("output", "final state"),
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
        _chunk_no_eps,
        _chunk_ignores_z0,
        _chunk_final_misses_last_chunk,
        _chunk_memo,
    ],
    **TIGHT,
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


def _step_sums_over_e(q_t, k_t, v_t, state, **_):
    """the read sums over the value dimension E (S q_t, (B, H, D)); o_t = S^T q_t sums over the
    key dimension D and has E entries"""
    S = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    return (S * q_t.unsqueeze(-1)).sum(-1), S


def _step_memo(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.causal_linear_attention_step, q_t, k_t, v_t, state, normalize, eps)


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
        ("D != E again, other values", 1, 2, 5, 2),
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
        _step_sums_over_e,
        _step_memo,
    ],
    **TIGHT,
    difficulty=1,
    minutes=5,
    objective="Generate one token from the state: update it with k_t v_t^T, then read it with q_t.",
)

EXERCISES = [EX_03_1, EX_03_2, EX_03_3, EX_03_4]
