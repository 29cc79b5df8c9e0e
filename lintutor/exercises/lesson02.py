"""Lesson 02 exercises: the elu+1 feature map, non-causal linear attention with its normalizer,
and Performer's positive random features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lintutor import featuremaps as fm
from lintutor import linear as ref
from lintutor.exercises.core import Exercise, Wrong, normal, randint

# --- 02.1 elu + 1 ----------------------------------------------------------------------------


def _elu_inputs(s, g):
    return {"x": 3 * normal(g, s["B"], s["H"], s["T"], s["D"])}


def _elu_no_plus_one(x):
    return F.elu(x)


def _elu_relu_plus_one(x):
    return torch.relu(x) + 1


def _elu_exp(x):
    return torch.exp(x)


def _elu_shift_only(x):
    return x + 1


def _elu_softplus(x):
    return F.softplus(x)


EX_02_1 = Exercise(
    id="02.1",
    lesson="02",
    title="the elu+1 feature map",
    name="elu1",
    reference=fm.elu1,
    make_inputs=_elu_inputs,
    named_sizes=[
        ("one entry", {"B": 1, "H": 1, "T": 1, "D": 1}),
        ("odd T", {"B": 1, "H": 2, "T": 7, "D": 4}),
        ("B, H > 1", {"B": 2, "H": 3, "T": 5, "D": 6}),
    ],
    random_sizes=lambda g: {
        "B": randint(g, 1, 3),
        "H": randint(g, 1, 3),
        "T": randint(g, 1, 20),
        "D": randint(g, 1, 16),
    },
    hints=(
        "The feature map must be positive everywhere and smooth; elu almost is.",
        "elu(x) = x for x > 0 and exp(x) - 1 for x <= 0, so elu(x) > -1: add one.",
        "return F.elu(x) + 1",
    ),
    wrong=[
        Wrong(_elu_no_plus_one, "this is elu(x) without the +1: negative for x < 0"),
        Wrong(
            _elu_relu_plus_one,
            "this is relu(x) + 1: flat (no gradient) for x < 0; elu bends smoothly",
        ),
        Wrong(_elu_exp, "this is exp(x): positive, but elu+1 grows linearly (x + 1) for x > 0"),
        Wrong(_elu_shift_only, "this is x + 1: negative for x < -1; apply elu first"),
        Wrong(_elu_softplus, "this is softplus(x) = log(1 + e^x), another positive map, not elu+1"),
    ],
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


def _la_no_normalizer(q, k, v, normalize=True, eps=1e-6):
    return q @ (k.transpose(-1, -2) @ v)


def _la_mean_normalizer(q, k, v, normalize=True, eps=1e-6):
    out = q @ (k.transpose(-1, -2) @ v)
    if normalize:
        out = out / ((q * k.mean(2, keepdim=True)).sum(-1, keepdim=True) + eps)
    return out


def _la_softmax(q, k, v, normalize=True, eps=1e-6):
    scores = q @ k.transpose(-1, -2)
    return torch.softmax(scores, dim=-1) @ v if normalize else scores @ v


def _la_phi_again(q, k, v, normalize=True, eps=1e-6):
    return ref.linear_attention(fm.elu1(q), fm.elu1(k), v, normalize, eps)


def _la_normalize_over_queries(q, k, v, normalize=True, eps=1e-6):
    scores = q @ k.transpose(-1, -2)  # (B, H, T, S)
    if normalize:
        scores = scores / (scores.sum(-2, keepdim=True) + eps)
    return scores @ v


def _la_ignores_flag(q, k, v, normalize=True, eps=1e-6):
    return ref.linear_attention(q, k, v, True, eps)


EX_02_2 = Exercise(
    id="02.2",
    lesson="02",
    title="non-causal linear attention with the normalizer",
    name="linear_attention",
    reference=ref.linear_attention,
    make_inputs=_la_inputs,
    named_sizes=[
        ("T=1", {"B": 1, "H": 1, "T": 1, "S": 1, "D": 3, "E": 3, "normalize": True}),
        ("odd T", {"B": 1, "H": 1, "T": 7, "S": 7, "D": 4, "E": 4, "normalize": True}),
        ("D != E, S != T", {"B": 2, "H": 3, "T": 5, "S": 9, "D": 6, "E": 2, "normalize": True}),
        ("no normalizer", {"B": 2, "H": 2, "T": 6, "S": 6, "D": 3, "E": 5, "normalize": False}),
    ],
    random_sizes=lambda g: {
        "B": randint(g, 1, 3),
        "H": randint(g, 1, 3),
        "T": randint(g, 1, 30),
        "S": randint(g, 1, 30),
        "D": randint(g, 1, 12),
        "E": randint(g, 1, 12),
        "normalize": bool(randint(g, 0, 1)),
    },
    time_dim=-2,
    hints=(
        "q and k are already feature-mapped. Multiply in the cheap order: k^T v first.",
        "kv = k^T v has shape (B, H, D, E) and does not depend on the query; the normalizer of "
        "query t is q_t . sum_s k_s. Divide by it (plus eps) only when normalize is True.",
        "kv = k.transpose(-1, -2) @ v; out = q @ kv; "
        "den = (q * k.sum(2).unsqueeze(2)).sum(-1); return out / (den.unsqueeze(-1) + eps)",
    ),
    wrong=[
        Wrong(_la_no_normalizer, "the normalizer is missing: divide by q_t . sum_s k_s"),
        Wrong(_la_mean_normalizer, "the normalizer uses the mean of the keys instead of their sum"),
        Wrong(
            _la_softmax,
            "a softmax is applied to q k^T: linear attention has no softmax, "
            "its weights are q_t . k_s / sum_s q_t . k_s",
        ),
        Wrong(
            _la_phi_again, "the feature map is applied again: q and k are already phi(q), phi(k)"
        ),
        Wrong(
            _la_normalize_over_queries,
            "the weights are normalized over queries (dim -2); "
            "each query's weights over keys must sum to 1",
        ),
        Wrong(_la_ignores_flag, "normalize=False is ignored: the normalizer is always applied"),
    ],
)


# --- 02.3 positive random features (FAVOR+) --------------------------------------------------


def _rf_inputs(s, g):
    return {
        "x": 0.7 * normal(g, s["B"], s["H"], s["T"], s["D"]),
        "projection": normal(g, s["D"], s["M"]),
    }


def _rf_no_scale(x, projection):
    M = projection.shape[1]
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)


def _rf_no_norm_term(x, projection):
    D, M = projection.shape
    x = x / D**0.25
    return torch.exp(x @ projection) / math.sqrt(M)


def _rf_no_1_over_sqrt_m(x, projection):
    D, M = projection.shape
    x = x / D**0.25
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2)


def _rf_full_norm(x, projection):
    D, M = projection.shape
    x = x / D**0.25
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True)) / math.sqrt(M)


def _rf_sqrt_d(x, projection):
    D, M = projection.shape
    x = x / math.sqrt(D)
    return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)


def _rf_trig(x, projection):
    D, M = projection.shape
    x = x / D**0.25
    xw = x @ projection
    h = torch.exp((x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)
    return torch.cat([torch.cos(xw), torch.sin(xw)], dim=-1) * h


EX_02_3 = Exercise(
    id="02.3",
    lesson="02",
    title="positive random features (Performer FAVOR+)",
    name="positive_random_features",
    reference=fm.positive_random_features,
    make_inputs=_rf_inputs,
    named_sizes=[
        ("one token", {"B": 1, "H": 1, "T": 1, "D": 4, "M": 8}),
        ("M < D", {"B": 1, "H": 2, "T": 7, "D": 8, "M": 3}),
        ("B, H > 1", {"B": 2, "H": 3, "T": 5, "D": 6, "M": 16}),
    ],
    random_sizes=lambda g: {
        "B": randint(g, 1, 3),
        "H": randint(g, 1, 3),
        "T": randint(g, 1, 20),
        "D": randint(g, 1, 16),
        "M": randint(g, 1, 32),
    },
    hints=(
        "Scale x by D^(-1/4) first (so phi(q) . phi(k) estimates exp(q . k / sqrt(D))), then "
        "project it with the (D, M) matrix.",
        "phi(x) = exp(x W - |x|^2 / 2) / sqrt(M), with x already scaled; |x|^2 is the squared "
        "norm over the last dimension, kept as (..., 1) so it broadcasts over the M features.",
        "D, M = projection.shape; x = x / D**0.25; "
        "return torch.exp(x @ projection - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)",
    ),
    wrong=[
        Wrong(
            _rf_no_scale,
            "x is not scaled by D^(-1/4): this estimates exp(q . k), not exp(q . k / sqrt(D))",
        ),
        Wrong(
            _rf_no_norm_term,
            "the -|x|^2 / 2 term is missing: without it the estimate of "
            "exp(q . k) is off by exp(|q|^2/2 + |k|^2/2)",
        ),
        Wrong(
            _rf_no_1_over_sqrt_m,
            "the 1/sqrt(M) factor is missing: phi(q) . phi(k) then "
            "sums M estimates instead of averaging them",
        ),
        Wrong(_rf_full_norm, "the norm term is -|x|^2; it is -|x|^2 / 2"),
        Wrong(
            _rf_sqrt_d,
            "x is scaled by 1/sqrt(D); each of q and k gets D^(-1/4), so that "
            "their dot product gets 1/sqrt(D)",
        ),
        Wrong(
            _rf_trig,
            "these are trigonometric random features (sin, cos): FAVOR+ uses "
            "positive exp features, which never give negative attention weights",
        ),
    ],
)

EXERCISES = [EX_02_1, EX_02_2, EX_02_3]
