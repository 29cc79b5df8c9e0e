"""Lesson 02 exercises: the elu+1 feature map, non-causal linear attention with its normalizer,
and Performer's positive random features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lintutor import featuremaps as fm
from lintutor import linear as ref
from lintutor.course.checker import Exercise, between, cases, normal
from lintutor.course.exercises._mistakes import TIGHT, memo

# --- 02.1 elu + 1 ----------------------------------------------------------------------------


def _elu_inputs(s, g):
    shape = s["shape"] if "shape" in s else (s["B"], s["H"], s["T"], s["D"])
    return {"x": 3 * normal(g, *shape) if shape else 3 * normal(g, 1)[0].clone()}  # () is 0-d


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


def _elu_assumes_4d(x):
    """x is taken to be (B, H, T, D) (B, H, T, D = x.shape): elu+1 is elementwise, for a tensor
    of any shape"""
    B, H, T, D = x.shape
    return F.elu(x.reshape(B * H, T, D)).reshape(B, H, T, D) + 1


def _elu_memo(x):
    """the answer is cached by the shape of x: a second call with the same shape and other
    values returns the first call's result"""
    return memo(fm.elu1, x)


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
        ("odd T again, other values", 1, 2, 7, 4),
    )
    + cases(
        "shape",
        ("a 0-d tensor", ()),
        ("1-d, 1000 entries", (1000,)),
        ("2-d", (3, 5)),
        ("5-d", (2, 1, 3, 2, 4)),
    ),
    random_sizes=between(B=(1, 3), H=(1, 3), T=(1, 40), D=(2, 16)),
    hints=(
        "The feature map must be positive everywhere and smooth; elu almost is.",
        "elu(x) = x for x > 0 and exp(x) - 1 for x <= 0, so elu(x) > -1: add one.",
        "return F.elu(x) + 1",
    ),
    form_sizes={"B": 1, "H": 2, "T": 7, "D": 4},  # the form check grows T of a (B, H, T, D) x
    wrong=[
        _elu_no_plus_one,
        _elu_relu_plus_one,
        _elu_exp,
        _elu_shift_only,
        _elu_softplus,
        _elu_assumes_4d,
        _elu_memo,
    ],
    **TIGHT,
    difficulty=1,
    minutes=3,
    objective="Write the elu+1 feature map, positive everywhere, of linear transformers.",
)


# --- 02.2 non-causal linear attention with the normalizer ------------------------------------


def _la_inputs(s, g):
    B, H, T, S, D, E = s["B"], s["H"], s["T"], s["S"], s["D"], s["E"]
    scale = s.get("scale", 1.0)  # small features: a normalizer comparable with eps
    kw = {
        "q": scale * fm.elu1(normal(g, B, H, T, D)),
        "k": scale * fm.elu1(normal(g, B, H, S, D)),
        "v": normal(g, B, H, S, E),
        "normalize": s["normalize"],
    }
    if "eps" in s:
        kw["eps"] = s["eps"]
    return kw


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


def _la_parts(q, k, v):
    return q @ (k.transpose(-1, -2) @ v), (q * k.sum(2, keepdim=True)).sum(-1, keepdim=True)


def _la_no_eps(q, k, v, normalize=True, **_):
    """eps is left out: divide by q_t . sum_s k_s + eps (it matters when the normalizer is
    small)"""
    out, den = _la_parts(q, k, v)
    return out / den if normalize else out


def _la_eps_fixed(q, k, v, normalize=True, **_):
    """eps is fixed at 1e-6 instead of the eps argument"""
    out, den = _la_parts(q, k, v)
    return out / (den + 1e-6) if normalize else out


def _la_eps_on_keys(q, k, v, normalize=True, eps=1e-6):
    """eps is added to every entry of sum_s k_s, (q_t . (z + eps)); it is added once, to
    q_t . z"""
    out = q @ (k.transpose(-1, -2) @ v)
    if not normalize:
        return out
    return out / (q * (k.sum(2, keepdim=True) + eps)).sum(-1, keepdim=True)


def _la_eps_after(q, k, v, normalize=True, eps=1e-6):
    """eps is added after the division, o / den + eps; it belongs in the denominator,
    o / (den + eps)"""
    out, den = _la_parts(q, k, v)
    return out / den + eps if normalize else out


def _la_memo(q, k, v, normalize=True, eps=1e-6):
    """the answer is cached by the shapes of q, k, v: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.linear_attention, q, k, v, normalize, eps)


EX_02_2 = Exercise(
    id="02.2",
    title="non-causal linear attention with the normalizer",
    form="linear",
    reference=ref.linear_attention,
    make_inputs=_la_inputs,
    named_sizes=cases(
        # first: every eps mistake is visible (and named) where eps is not negligible
        "B H T S D E normalize eps scale",
        ("small normalizer, eps = 1e-2", 1, 2, 4, 6, 3, 2, True, 1e-2, 1e-3),
        ("small normalizer, eps = 1e-5", 2, 1, 5, 3, 4, 3, True, 1e-5, 1e-3),
        ("eps = 0", 1, 1, 6, 5, 2, 3, True, 0.0, 1.0),
    )
    + cases(
        "B H T S D E normalize",
        ("T=1", 1, 1, 1, 1, 3, 3, True),
        ("odd T", 1, 1, 7, 7, 4, 4, True),
        ("D != E, S != T", 2, 3, 5, 9, 6, 2, True),
        ("no normalizer", 2, 2, 6, 6, 3, 5, False),
        ("T = S = 300", 1, 1, 300, 300, 4, 3, True),
        ("odd T again, other values", 1, 1, 7, 7, 4, 4, True),
    ),
    random_sizes=between(
        B=(1, 3),
        H=(1, 3),
        T=(1, 40),
        S=(1, 40),
        D=(2, 12),
        E=(1, 12),
        normalize=bool,
        eps=[1e-6, 1e-3, 0.0],
        scale=[1.0, 1e-2],
    ),  # fmt: skip
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
        _la_no_eps,
        _la_eps_fixed,
        _la_eps_on_keys,
        _la_eps_after,
        _la_memo,
    ],
    **TIGHT,
    difficulty=1,
    minutes=10,
    objective="Compute non-causal linear attention as phi(Q) (phi(K)^T V), with its normalizer.",
)


# --- 02.3 positive random features (FAVOR+) --------------------------------------------------


def _rf_inputs(s, g):
    shape = s["shape"] if "shape" in s else (s["B"], s["H"], s["T"])
    return {
        "x": 0.7 * normal(g, *shape, s["D"]),
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


def _rf_norm_over_all(x, projection):
    """|x|^2 is summed over every dimension of x; it is each token's own squared norm, over the
    last dimension only (keepdim, so it broadcasts over the M features)"""
    D, M = projection.shape
    x = x / D**0.25
    return torch.exp(x @ projection - (x * x).sum() / 2) / math.sqrt(M)


def _rf_assumes_4d(x, projection):
    """x is taken to be (B, H, T, D) (einsum 'bhtd,dm->bhtm'): x has any number of leading
    dimensions, (..., D)"""
    D, M = projection.shape
    x = x / D**0.25
    proj = torch.einsum("bhtd,dm->bhtm", x, projection)
    return torch.exp(proj - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(M)


def _rf_memo(x, projection):
    """the answer is cached by the shapes of x and the projection: a second call with the same
    shapes and other values returns the first call's result"""
    return memo(fm.positive_random_features, x, projection)


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
        ("T = 300", 1, 1, 300, 4, 8),
        ("M < D again, other values", 1, 2, 7, 8, 3),
    )
    + cases(
        "shape D M",
        ("x of one token, (D,)", (), 5, 7),
        ("x (T, D)", (9,), 4, 6),
        ("x (B, T, D)", (2, 5), 3, 4),
    ),
    random_sizes=between(B=(1, 3), H=(1, 3), T=(1, 40), D=(2, 16), M=(1, 32)),
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
        _rf_norm_over_all,
        _rf_assumes_4d,
        _rf_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Build Performer's positive random features, whose dot products estimate "
    "softmax's exp kernel.",
)

EXERCISES = [EX_02_1, EX_02_2, EX_02_3]
