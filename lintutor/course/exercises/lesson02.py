"""Lesson 02 exercises: the elu+1 feature map, non-causal linear attention with its normalizer,
and Performer's positive random features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lintutor import featuremaps as fm
from lintutor import linear as ref
from lintutor.course.checker import Exercise, between, cases, normal

# --- 02.1 elu + 1 ----------------------------------------------------------------------------


def _elu_inputs(s, g):
    return {"x": 3 * normal(g, s["B"], s["H"], s["T"], s["D"])}


def _elu_no_plus_one(x):
    """this is elu(x) without the +1: negative for x < 0"""
    return F.elu(x)


def _elu_relu_plus_one(x):
    """this is relu(x) + 1: flat (no gradient) for x < 0; elu bends smoothly"""
    return torch.relu(x) + 1


def _elu_exp(x):
    """this is exp(x): positive, but elu+1 grows linearly (x + 1) for x > 0"""
    return torch.exp(x)


def _elu_shift_only(x):
    """this is x + 1: negative for x < -1; apply elu first"""
    return x + 1


def _elu_softplus(x):
    """this is softplus(x) = log(1 + e^x), another positive map, not elu+1"""
    return F.softplus(x)


EX_02_1 = Exercise(
    id="02.1",
    title="the elu+1 feature map",
    form="no loop over t",
    reference=fm.elu1,
    make_inputs=_elu_inputs,
    named_sizes=cases(
        "B H T D",
        ("one entry", 1, 1, 1, 1),
        ("odd T", 1, 2, 7, 4),
        ("B, H > 1", 2, 3, 5, 6),
    ),
    random_sizes=between(B=(1, 3), H=(1, 3), T=(1, 20), D=(1, 16)),
    hints=(
        "The feature map must be positive everywhere and smooth; elu almost is.",
        "elu(x) = x for x > 0 and exp(x) - 1 for x <= 0, so elu(x) > -1: add one.",
        "return F.elu(x) + 1",
    ),
    wrong=[_elu_no_plus_one, _elu_relu_plus_one, _elu_exp, _elu_shift_only, _elu_softplus],
    difficulty=1,
    minutes=3,
    objective="Write the elu+1 feature map, positive everywhere, of linear transformers.",
)


# --- 02.2 non-causal linear attention with the normalizer ------------------------------------


def _la_inputs(s, g):
    B, H, T, S, D, E = s["B"], s["H"], s["T"], s["S"], s["D"], s["E"]
    return {
        "q": fm.elu1(normal(g, B, H, T, D)),
        "k": fm.elu1(normal(g, B, H, S, D)),
        "v": normal(g, B, H, S, E),
        "normalize": s["normalize"],
    }


def _la_no_normalizer(q, k, v, **_):
    """the normalizer is missing: divide by q_t . sum_s k_s"""
    return q @ (k.transpose(-1, -2) @ v)


def _la_mean_normalizer(q, k, v, normalize=True, eps=1e-6):
    """the normalizer uses the mean of the keys instead of their sum"""
    out = q @ (k.transpose(-1, -2) @ v)
    if normalize:
        out = out / ((q * k.mean(2, keepdim=True)).sum(-1, keepdim=True) + eps)
    return out


def _la_softmax(q, k, v, normalize=True, **_):
    """a softmax is applied to q k^T: linear attention has no softmax, its weights are
    q_t . k_s / sum_s q_t . k_s"""
    scores = q @ k.transpose(-1, -2)
    return torch.softmax(scores, dim=-1) @ v if normalize else scores @ v


def _la_phi_again(q, k, v, normalize=True, eps=1e-6):
    """the feature map is applied again: q and k are already phi(q), phi(k)"""
    return ref.linear_attention(fm.elu1(q), fm.elu1(k), v, normalize, eps)


def _la_normalize_over_queries(q, k, v, normalize=True, eps=1e-6):
    """the weights are normalized over queries (dim -2); each query's weights over keys must
    sum to 1"""
    scores = q @ k.transpose(-1, -2)  # (B, H, T, S)
    if normalize:
        scores = scores / (scores.sum(-2, keepdim=True) + eps)
    return scores @ v


def _la_ignores_flag(q, k, v, eps=1e-6, **_):
    """normalize=False is ignored: the normalizer is always applied"""
    return ref.linear_attention(q, k, v, True, eps)


EX_02_2 = Exercise(
    id="02.2",
    title="non-causal linear attention with the normalizer",
    form="linear",
    reference=ref.linear_attention,
    make_inputs=_la_inputs,
    named_sizes=cases(
        "B H T S D E normalize",
        ("T=1", 1, 1, 1, 1, 3, 3, True),
        ("odd T", 1, 1, 7, 7, 4, 4, True),
        ("D != E, S != T", 2, 3, 5, 9, 6, 2, True),
        ("no normalizer", 2, 2, 6, 6, 3, 5, False),
    ),
    random_sizes=between(
        B=(1, 3), H=(1, 3), T=(1, 30), S=(1, 30), D=(1, 12), E=(1, 12), normalize=bool
    ),
    time_dim=-2,
    hints=(
        "q and k are already feature-mapped. Multiply in the cheap order: k^T v first.",
        "kv = k^T v has shape (B, H, D, E) and does not depend on the query; the normalizer of "
        "query t is q_t . sum_s k_s. Divide by it (plus eps) only when normalize is True.",
        "kv = k.transpose(-1, -2) @ v; out = q @ kv; "
        "den = (q * k.sum(2).unsqueeze(2)).sum(-1); return out / (den.unsqueeze(-1) + eps)",
    ),
    wrong=[
        _la_no_normalizer,
        _la_mean_normalizer,
        _la_softmax,
        _la_phi_again,
        _la_normalize_over_queries,
        _la_ignores_flag,
    ],
    difficulty=1,
    minutes=10,
    objective="Compute non-causal linear attention as phi(Q) (phi(K)^T V), with its normalizer.",
)


# --- 02.3 positive random features (FAVOR+) --------------------------------------------------


def _rf_inputs(s, g):
    return {
        "x": 0.7 * normal(g, s["B"], s["H"], s["T"], s["D"]),
        "projection": normal(g, s["D"], s["M"]),
    }


def _rf_no_scale(x, projection):
    """x is not scaled by D^(-1/4): this estimates exp(q . k), not exp(q . k / sqrt(D))"""
    M = projection.shape[1]
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)


def _rf_no_norm_term(x, projection):
    """the -|x|^2 / 2 term is missing: without it the estimate of exp(q . k) is off by
    exp(|q|^2/2 + |k|^2/2)"""
    D, M = projection.shape
    x = x / D**0.25
    return torch.exp(x @ projection) / math.sqrt(M)


def _rf_no_1_over_sqrt_m(x, projection):
    """the 1/sqrt(M) factor is missing: phi(q) . phi(k) then sums M estimates instead of
    averaging them"""
    D, M = projection.shape
    x = x / D**0.25
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2)


def _rf_full_norm(x, projection):
    """the norm term is -|x|^2; it is -|x|^2 / 2"""
    D, M = projection.shape
    x = x / D**0.25
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True)) / math.sqrt(M)


def _rf_sqrt_d(x, projection):
    """x is scaled by 1/sqrt(D); each of q and k gets D^(-1/4), so that their dot product gets
    1/sqrt(D)"""
    D, M = projection.shape
    x = x / math.sqrt(D)
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)


def _rf_trig(x, projection):
    """these are trigonometric random features (sin, cos): FAVOR+ uses positive exp features,
    which never give negative attention weights"""
    D, M = projection.shape
    x = x / D**0.25
    xw = x @ projection
    h = torch.exp((x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)
    return torch.cat([torch.cos(xw), torch.sin(xw)], dim=-1) * h


EX_02_3 = Exercise(
    id="02.3",
    title="positive random features (Performer FAVOR+)",
    reference=fm.positive_random_features,
    make_inputs=_rf_inputs,
    named_sizes=cases(
        "B H T D M",
        ("one token", 1, 1, 1, 4, 8),
        ("M < D", 1, 2, 7, 8, 3),
        ("B, H > 1", 2, 3, 5, 6, 16),
    ),
    random_sizes=between(B=(1, 3), H=(1, 3), T=(1, 20), D=(1, 16), M=(1, 32)),
    hints=(
        "Scale x by D^(-1/4) first (so phi(q) . phi(k) estimates exp(q . k / sqrt(D))), then "
        "project it with the (D, M) matrix.",
        "phi(x) = exp(x W - |x|^2 / 2) / sqrt(M), with x already scaled; |x|^2 is the squared "
        "norm over the last dimension, kept as (..., 1) so it broadcasts over the M features.",
        "D, M = projection.shape; x = x / D**0.25; "
        "return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)",
    ),
    wrong=[
        _rf_no_scale,
        _rf_no_norm_term,
        _rf_no_1_over_sqrt_m,
        _rf_full_norm,
        _rf_sqrt_d,
        _rf_trig,
    ],
    difficulty=2,
    minutes=15,
    objective="Build Performer's positive random features, whose dot products estimate "
    "softmax's exp kernel.",
)

EXERCISES = [EX_02_1, EX_02_2, EX_02_3]
