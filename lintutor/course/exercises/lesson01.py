"""Lesson 01 exercises: one query, full attention with a causal mask, multi-head attention."""

from __future__ import annotations

import math

import torch

from lintutor import softmax as ref
from lintutor.course.checker import Exercise, between, cases, normal
from lintutor.course.exercises._mistakes import TIGHT, memo

# --- 01.1 attention for one query ------------------------------------------------------------


def _one_inputs(s, g):
    q, k = normal(g, s["D"]), normal(g, s["S"], s["D"])
    if s.get("shared"):  # every key close to q: scores ~ 10^4 / sqrt(D), differences ~ 1
        q, k = 100 * q / q.norm(), 100 * q / q.norm() + 0.01 * k
    return {"q": q, "k": k, "v": normal(g, s["S"], s["E"])}


def _softmax_no_shift(s):
    """exp(s) / sum exp(s) without subtracting the largest score first."""
    e = torch.exp(s)
    return e / e.sum(-1, keepdim=True)


def _one_no_scale(q, k, v):
    """this is what you get without the 1/sqrt(D) scale"""
    return torch.softmax(k @ q, dim=-1) @ v


def _one_scale_by_d(q, k, v):
    """the scores are divided by D; the scale is 1/sqrt(D)"""
    return torch.softmax(k @ q / q.shape[-1], dim=-1) @ v


def _one_no_softmax(q, k, v):
    """the scores are used as weights without a softmax"""
    return (k @ q / math.sqrt(q.shape[-1])) @ v


def _one_sum_normalized(q, k, v):
    """the scores are divided by their sum instead of a softmax"""
    s = k @ q / math.sqrt(q.shape[-1])
    return (s / s.sum()) @ v


def _one_hard(q, k, v):
    """this is hard attention (argmax); softmax gives a weighted average"""
    return v[torch.argmax(k @ q)]


def _one_no_max_shift(q, k, v):
    """the softmax is exp(s) / sum exp(s) without subtracting the largest score first: exp
    overflows to inf (and inf / inf is NaN) once scores pass ~709; torch.softmax, or
    exp(s - s.max()), gives the same weights without overflowing"""
    return _softmax_no_shift(k @ q / math.sqrt(q.shape[-1])) @ v


def _one_first_256_keys(q, k, v):
    """only the first 256 keys are used (a fixed-size buffer): the weights must cover all S keys"""
    return ref.attention_one_query(q, k[:256], v[:256])


def _one_memo(q, k, v):
    """the answer is cached by the shapes of q, k, v: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.attention_one_query, q, k, v)


EX_01_1 = Exercise(
    id="01.1",
    title="attention for one query",
    reference=ref.attention_one_query,
    make_inputs=_one_inputs,
    named_sizes=cases(
        "S D E",
        ("one key", 1, 4, 4),
        ("odd length", 7, 8, 8),
        ("D != E", 5, 6, 3),
        ("S = 333 keys", 333, 8, 4),
        ("odd length again, other values", 7, 8, 8),
    )
    + cases("S D E shared", ("scores ~ 3500 that differ by ~1", 12, 8, 5, True)),
    random_sizes=between(S=(2, 400), D=(2, 16), E=(1, 16)),
    hints=(
        "Scores first: one number per key, how well the key matches q.",
        "scores = k @ q / sqrt(D) has shape (S,); softmax turns them into weights that sum to 1; "
        "the output is the weighted sum of the rows of v.",
        "weights = torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1); return weights @ v",
    ),
    wrong=[
        _one_no_scale,
        _one_scale_by_d,
        _one_no_softmax,
        _one_sum_normalized,
        _one_hard,
        _one_no_max_shift,
        _one_first_256_keys,
        _one_memo,
    ],
    **TIGHT,
    difficulty=1,
    minutes=5,
    objective="Compute scaled dot-product attention for a single query.",
)


# --- 01.2 full attention with an optional causal mask -----------------------------------------


def _full_inputs(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    q, k = normal(g, B, H, T, D), normal(g, B, H, T, D)
    if s.get("shared"):  # every key close to every query: scores ~ 10^4 / sqrt(D)
        u = q[..., :1, :] / q[..., :1, :].norm(dim=-1, keepdim=True)  # (B, H, 1, D)
        q, k = 100 * u + 0.01 * q, 100 * u + 0.01 * k
    return {"q": q, "k": k, "v": normal(g, B, H, T, E), "causal": s["causal"]}


def _scores(q, k):
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


def _full_no_scale(q, k, v, causal=False):
    """this is what you get without the 1/sqrt(D) scale"""
    s = q @ k.transpose(-1, -2)
    if causal:
        s = s.masked_fill(~ref.causal_mask(q.shape[-2]), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _full_wrong_dim(q, k, v, causal=False):
    """the softmax runs over queries (dim=-2); it must run over keys"""
    s = _scores(q, k)
    if causal:
        s = s.masked_fill(~ref.causal_mask(q.shape[-2]), float("-inf"))
    return torch.nan_to_num(torch.softmax(s, dim=-2)) @ v


def _full_future(q, k, v, causal=False):
    """the mask is flipped: each token sees the future and not the past"""
    s = _scores(q, k)
    if causal:
        future = torch.ones(q.shape[-2], q.shape[-2], dtype=torch.bool).triu()
        s = s.masked_fill(~future, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _full_no_diagonal(q, k, v, causal=False):
    """the mask hides the diagonal: a token must see itself (tril, not tril(-1))"""
    s = _scores(q, k)
    if causal:
        s = s.masked_fill(~ref.causal_mask(q.shape[-2]).tril(-1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _full_zero_mask(q, k, v, causal=False):
    """masked scores are set to 0, not -inf: exp(0)=1 still leaks the future"""
    s = _scores(q, k)
    if causal:
        s = s * ref.causal_mask(q.shape[-2])
    return torch.softmax(s, dim=-1) @ v


def _full_ignores_causal(q, k, v, **_):
    """the causal flag is ignored: no mask is applied"""
    return torch.softmax(_scores(q, k), dim=-1) @ v


def _full_no_max_shift(q, k, v, causal=False):
    """the softmax is exp(s) / sum exp(s) without subtracting each row's largest score first:
    exp overflows (inf / inf = NaN) once scores pass ~709; use torch.softmax"""
    s = _scores(q, k)
    if causal:
        s = s.masked_fill(~ref.causal_mask(q.shape[-2]), float("-inf"))
    return _softmax_no_shift(s) @ v


_MASK_256 = torch.ones(256, 256, dtype=torch.bool).tril()


def _full_mask_buffer(q, k, v, causal=False):
    """the causal mask is sliced from a 256 x 256 buffer made once: for T > 256 it is too small;
    build it for this T (torch.ones(T, T, dtype=torch.bool).tril())"""
    s = _scores(q, k)
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(~_MASK_256[:T, :T], float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _full_memo(q, k, v, causal=False):
    """the answer is cached by the shapes of q, k, v: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.softmax_attention, q, k, v, causal)


EX_01_2 = Exercise(
    id="01.2",
    title="softmax attention with a causal mask",
    form="no loop over t",
    reference=ref.softmax_attention,
    make_inputs=_full_inputs,
    named_sizes=cases(
        "B H T D E causal",
        ("T=1", 1, 1, 1, 4, 4, True),
        ("odd T, causal", 1, 1, 7, 8, 8, True),
        ("B, H > 1", 2, 3, 5, 4, 4, False),
        ("D != E, causal", 2, 2, 6, 5, 3, True),
        ("T = 320, causal", 1, 1, 320, 4, 3, True),
        ("odd T, causal, again with other values", 1, 1, 7, 8, 8, True),
    )
    + cases("B H T D E causal shared", ("scores ~ 3500, causal", 1, 2, 9, 8, 4, True, True)),
    random_sizes=between(B=(1, 3), H=(1, 4), T=(2, 80), D=(2, 16), E=(1, 16), causal=bool),
    time_dim=-2,
    hints=(
        "All queries at once: one (T, T) matrix of scores per batch and head.",
        "scores = q @ k.transpose(-1, -2) / sqrt(D); for causal, fill the entries above the "
        "diagonal (key after query) with -inf before the softmax over the last dimension.",
        "mask = torch.ones(T, T, dtype=torch.bool).tril(); "
        "scores = scores.masked_fill(~mask, float('-inf')); "
        "return torch.softmax(scores, dim=-1) @ v",
    ),
    wrong=[
        _full_no_scale,
        _full_wrong_dim,
        _full_future,
        _full_no_diagonal,
        _full_zero_mask,
        _full_ignores_causal,
        _full_no_max_shift,
        _full_mask_buffer,
        _full_memo,
    ],
    **TIGHT,
    difficulty=1,
    minutes=10,
    objective="Compute attention for all queries as one matrix product, with an optional "
    "causal mask.",
)


# --- 01.3 multi-head self-attention ----------------------------------------------------------


def _mha_inputs(s, g):
    C = s["H"] * s["D"]
    w = lambda: normal(g, C, C) / math.sqrt(C)  # noqa: E731
    return {
        "x": normal(g, s["B"], s["T"], C),
        "w_q": w(),
        "w_k": w(),
        "w_v": w(),
        "w_o": w(),
        "n_heads": s["H"],
        "causal": s["causal"],
    }


def _mha_parts(x, w_q, w_k, w_v, n_heads):
    B, T, C = x.shape
    split = lambda y: y.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # noqa: E731
    return split(x @ w_q), split(x @ w_k), split(x @ w_v)


def _mha_no_out_proj(x, w_q, w_k, w_v, n_heads, causal=False, **_):
    """the output projection w_o is missing"""
    q, k, v = _mha_parts(x, w_q, w_k, w_v, n_heads)
    return ref.merge_heads(ref.softmax_attention(q, k, v, causal))


def _mha_split_no_transpose(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    """heads were split with a reshape to (B, H, T, D) without the transpose: tokens and
    channels get mixed"""
    B, T, C = x.shape
    split = lambda y: y.reshape(B, n_heads, T, C // n_heads)  # noqa: E731
    out = ref.softmax_attention(split(x @ w_q), split(x @ w_k), split(x @ w_v), causal)
    return out.reshape(B, T, C) @ w_o


def _mha_merge_no_transpose(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    """heads were merged with a reshape without transposing (B, H, T, D) back to (B, T, H, D)
    first"""
    q, k, v = _mha_parts(x, w_q, w_k, w_v, n_heads)
    out = ref.softmax_attention(q, k, v, causal)
    return out.reshape(x.shape) @ w_o


def _mha_scale_by_c(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    """scores are scaled by 1/sqrt(C) of the whole model; each head uses 1/sqrt(D) of its own
    size"""
    q, k, v = _mha_parts(x, w_q, w_k, w_v, n_heads)
    q = q * math.sqrt(q.shape[-1]) / math.sqrt(x.shape[-1])
    return ref.merge_heads(ref.softmax_attention(q, k, v, causal)) @ w_o


def _mha_one_head(x, w_q, w_k, w_v, w_o, causal=False, **_):
    """this is single-head attention: n_heads is ignored"""
    q, k, v = _mha_parts(x, w_q, w_k, w_v, 1)
    return ref.merge_heads(ref.softmax_attention(q, k, v, causal)) @ w_o


def _mha_mask_buffer(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    """the causal mask is sliced from a 256 x 256 buffer made once: for T > 256 it is too small"""
    q, k, v = _mha_parts(x, w_q, w_k, w_v, n_heads)
    out = _full_mask_buffer(q, k, v, causal)
    return ref.merge_heads(out) @ w_o


def _mha_memo(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.multihead_attention, x, w_q, w_k, w_v, w_o, n_heads, causal)


EX_01_3 = Exercise(
    id="01.3",
    title="multi-head self-attention",
    reference=ref.multihead_attention,
    make_inputs=_mha_inputs,
    named_sizes=cases(
        "B H T D causal",
        ("T=1", 1, 2, 1, 3, True),
        ("one head", 1, 1, 5, 4, False),
        ("odd T, causal", 2, 3, 7, 4, True),
        ("B, H > 1", 3, 4, 6, 2, False),
        ("T = 300, causal", 1, 2, 300, 4, True),
        ("odd T, causal, again with other values", 2, 3, 7, 4, True),
    ),
    random_sizes=between(B=(1, 3), H=(2, 4), T=(2, 60), D=(2, 8), causal=bool),
    time_dim=-2,
    hints=(
        "Project, split into heads, attend per head, merge, project again.",
        "q = x @ w_q has shape (B, T, C); view it as (B, T, H, D) and transpose to (B, H, T, D). "
        "After attention, transpose back before reshaping to (B, T, C), then apply w_o.",
        "q = (x @ w_q).view(B, T, n_heads, D).transpose(1, 2)  # same for k, v; "
        "out = softmax_attention(q, k, v, causal).transpose(1, 2).reshape(B, T, C); "
        "return out @ w_o",
    ),
    wrong=[
        _mha_no_out_proj,
        _mha_split_no_transpose,
        _mha_merge_no_transpose,
        _mha_scale_by_c,
        _mha_one_head,
        _mha_mask_buffer,
        _mha_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Split the channels into heads, attend in each head, merge and project.",
)

EXERCISES = [EX_01_1, EX_01_2, EX_01_3]
