"""Feature maps phi for kernelized (linear) attention (lesson 02).

Linear attention replaces softmax's similarity exp(q . k / sqrt(D)) by a kernel that factors,
sim(q, k) = phi(q) . phi(k), so that sum_s sim(q, k_s) v_s = phi(q)^T (sum_s phi(k_s) v_s^T).

    name          phi(x)                                      out dim      from
    elu1          elu(x) + 1                                  D            Katharopoulos 2020
    relu          max(x, 0)                                   D            EfficientViT (Cai 2023)
    squared_relu  max(x, 0)^2                                 D            Primer, You et al. 2024
    taylor2       [1, x / D^(1/4), vec(x x^T) / sqrt(2 D)]    1 + D + D^2  Based (Arora 2024)
    FAVOR+        exp(x' W - |x'|^2 / 2) / sqrt(M)            M            Performer (2021)
                  with x' = x / D^(1/4), W (D, M) random

taylor2 and the random features follow their official code and include the D^(-1/4) scale, so
phi(q) . phi(k) approximates softmax's exp(q . k / sqrt(D)) (Taylor: 1 + u + u^2/2 with
u = q . k / sqrt(D); FAVOR+: an unbiased estimate). elu1, relu and squared_relu are not
approximations of softmax; they are simply positive kernels.

Assumption: x has the head dim last, (..., D). Every map is elementwise over the leading dims.
Left out: Performer's max-subtraction before exp (a per-row constant that cancels in normalized
attention; it only matters for overflow in low precision) and its hyperbolic (2M) variant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def elu1(x):
    """elu(x) + 1 > 0, Eq. (7) of Katharopoulos et al. 2020. Output dim D."""
    return F.elu(x) + 1


def relu(x):
    """max(x, 0) >= 0, as in EfficientViT's LiteMLA. Output dim D (rows can be all zero)."""
    return torch.relu(x)


def squared_relu(x):
    """max(x, 0)^2 >= 0, sharper than relu. Output dim D."""
    return torch.relu(x) ** 2


def taylor2(x):
    """2nd-order Taylor features of exp (Based's TaylorExp). Output dim 1 + D + D^2.

    phi(q) . phi(k) = 1 + u + u^2 / 2 with u = q . k / sqrt(D), always >= 1/2, although single
    features can be negative.
    """
    D = x.shape[-1]
    ones = torch.ones_like(x[..., :1])  # (..., 1)
    x1 = x / D**0.25  # (..., D)
    x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / math.sqrt(2 * D)  # (..., D*D)
    return torch.cat([ones, x1, x2], dim=-1)  # (..., 1 + D + D*D)


def draw_random_projection(D: int, M: int, seed: int = 0, orthogonal: bool = True, dtype=None):
    """Projection W (D, M) for FAVOR+; redraw it by passing another seed. O(M*D^2) with QR.

    Columns are Gaussian, or (orthogonal=True, as in Performer's
    gaussian_orthogonal_random_matrix) orthogonal within blocks of D and rescaled to the norms
    of Gaussian vectors, which lowers the estimator's variance. Unlike Performer's code we fix
    the signs of the QR factor; without that the directions are not uniform and, at small D, the
    estimate of exp(q . k / sqrt(D)) is visibly biased.
    """
    g = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.get_default_dtype()
    if not orthogonal:
        return torch.randn(D, M, generator=g, dtype=torch.float64).to(dtype)
    blocks = []
    for _ in range(math.ceil(M / D)):
        Q, R = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))  # (D, D)
        Q = Q * torch.sign(torch.diagonal(R))  # sign fix: uniformly random rotations
        blocks.append(Q.T)  # rows are orthonormal directions
    W = torch.cat(blocks, dim=0)[:M]  # (M, D)
    norms = torch.randn(M, D, generator=g, dtype=torch.float64).norm(dim=1)  # (M,), chi(D)
    return (norms.unsqueeze(1) * W).T.contiguous().to(dtype)  # (D, M)


def positive_random_features(x, projection):
    """FAVOR+ positive random features, Lemma 1 of Choromanski et al. 2021. Output dim M.

    phi(x) = exp(x' W - |x'|^2 / 2) / sqrt(M) with x' = x / D^(1/4), so that
    E[phi(q) . phi(k)] = exp(q . k / sqrt(D)). projection: (D, M) from draw_random_projection.
    """
    D, M = projection.shape
    if x.shape[-1] != D:
        raise ValueError(
            f"x: last dimension {x.shape[-1]} does not match projection (D, M) = ({D}, {M})"
        )
    x = x / D**0.25  # (..., D)
    proj = x @ projection.to(x.dtype)  # (..., M)
    sq = (x * x).sum(-1, keepdim=True) / 2  # (..., 1)
    return torch.exp(proj - sq) / math.sqrt(M)  # (..., M)


FEATURE_MAPS = {"elu1": elu1, "relu": relu, "squared_relu": squared_relu, "taylor2": taylor2}


def feature_dim(name: str, D: int, M: int | None = None) -> int:
    """Output dimension of a feature map for head dim D (M: number of random features)."""
    dims = {"elu1": D, "relu": D, "squared_relu": D, "taylor2": 1 + D + D * D, "random": M}
    if name not in dims:
        raise ValueError(f"unknown feature map {name!r}; known: {', '.join(dims)}")
    return dims[name]


def get_feature_map(feature_map):
    """A callable phi from a name in FEATURE_MAPS or a callable (returned as is)."""
    if callable(feature_map):
        return feature_map
    if feature_map not in FEATURE_MAPS:
        raise ValueError(
            f"unknown feature map {feature_map!r}; known: {', '.join(FEATURE_MAPS)} "
            "(or pass a callable)"
        )
    return FEATURE_MAPS[feature_map]
