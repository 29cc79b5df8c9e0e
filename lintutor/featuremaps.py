"""Feature maps phi for kernelized (linear) attention (lesson 02).

Linear attention replaces softmax's similarity exp(q . k / sqrt(D)) by a kernel that factors,
sim(q, k) = phi(q) . phi(k), so that sum_s sim(q, k_s) v_s = phi(q)^T (sum_s phi(k_s) v_s^T).

    name          phi(x)                                      out dim      from
    elu1          elu(x) + 1                                  D            Katharopoulos 2020
    relu          max(x, 0)                                   D            EfficientViT (Cai 2023)
    squared_relu  max(x, 0)^2                                 D            Primer's activation
                                                                           (So et al. 2021)
    taylor2       [1, x / D^(1/4), vec(x x^T) / sqrt(2 D)]    1 + D + D^2  Based (Arora 2024)
    FAVOR+        exp(x' W - |x'|^2 / 2) / sqrt(M)            M            Performer (2021)
                  with x' = x / D^(1/4), W (D, M) random

taylor2 and the random features follow their official code and include the D^(-1/4) scale, so
phi(q) . phi(k) approximates softmax's exp(q . k / sqrt(D)) (Taylor: 1 + u + u^2/2 with
u = q . k / sqrt(D); FAVOR+: an unbiased estimate). elu1, relu and squared_relu are not
approximations of softmax; they are simply positive kernels. squared_relu is Primer's
squared-ReLU activation used as a feature map, phi(q) . phi(k) = sum_d relu(q_d)^2 relu(k_d)^2;
it is not paper 1's local kernel (You et al. 2024), which squares the score, relu(q . k)^2, and
does not factor into phi(q) . phi(k) of dimension D.

Assumption: x has the head dim last, (..., D), floating point. Every map is elementwise over the
leading dims. FAVOR+ features are exact by default, so for large inputs they underflow (or
overflow) where the exact value does, which is reported; `stabilize` subtracts Performer's
max-subtraction constant instead (per row for queries, per sequence for keys), a constant that
cancels in normalized attention. Left out: Performer's hyperbolic (2M) variant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lintutor._validate import check_dtypes, check_positive, check_shapes, check_tensors


def elu1(x):
    """elu(x) + 1 > 0, Eq. (7) of Katharopoulos et al. 2020. Output dim D."""
    check_dtypes(x=x)
    return F.elu(x) + 1


def relu(x):
    """max(x, 0) >= 0, as in EfficientViT's LiteMLA. Output dim D (rows can be all zero)."""
    check_dtypes(x=x)
    return torch.relu(x)


def squared_relu(x):
    """max(x, 0)^2 >= 0, sharper than relu (Primer's activation as a feature map). Output dim D."""
    check_dtypes(x=x)
    return torch.relu(x) ** 2


def taylor2(x):
    """2nd-order Taylor features of exp (Based's TaylorExp). Output dim 1 + D + D^2.

    phi(q) . phi(k) = 1 + u + u^2 / 2 with u = q . k / sqrt(D), always >= 1/2, although single
    features can be negative.
    """
    D = check_tensors(x=(x, "... D"))["D"]
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
    D, M = check_positive("D", D), check_positive("M", M)
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


def positive_random_features(x, projection, stabilize=None):
    """FAVOR+ positive random features, Lemma 1 of Choromanski et al. 2021. Output dim M.

    phi(x) = exp(x' W - |x'|^2 / 2) / sqrt(M) with x' = x / D^(1/4), so that
    E[phi(q) . phi(k)] = exp(q . k / sqrt(D)). projection: (D, M) from draw_random_projection,
    converted to x's dtype. stabilize: None (exact; features that underflow or overflow where
    the exact value does are reported), "query" (subtract each row's largest exponent) or "key"
    (the largest over the sequence, dims -2 and -1), as Performer's code does for q and k: the
    constant cancels in normalized attention, not in the unnormalized form.
    """
    dims = check_shapes(x=(x, "... D"), projection=(projection, "D M"))
    D, M = dims["D"], dims["M"]
    check_dtypes(x=x)
    check_dtypes(projection=projection)  # any floating dtype: converted to x's below
    x = x / D**0.25  # (..., D)
    exponent = x @ projection.to(x.dtype) - (x * x).sum(-1, keepdim=True) / 2  # (..., M)
    if stabilize == "query":
        exponent = exponent - exponent.amax(-1, keepdim=True)  # per row: the max feature is 1
    elif stabilize == "key" and x.dim() >= 2:
        exponent = exponent - exponent.amax((-2, -1), keepdim=True)  # one constant per sequence
    elif stabilize is not None:
        raise ValueError(
            f"stabilize must be None, 'query' or 'key' (x of shape (..., T, D)), got {stabilize!r}"
        )
    phi = torch.exp(exponent) / math.sqrt(M)  # (..., M)
    if stabilize is None:
        check_exponent_range(x, phi, exponent)
    return phi


def check_exponent_range(x, phi, exponent) -> None:
    """Report FAVOR+ features that overflow to inf, or whose whole row underflows to 0."""
    if not phi.numel():
        return
    if bool(torch.isinf(phi).any()):
        raise ValueError(
            f"x: the exact random features overflow in {str(x.dtype)[6:]} (an exponent of "
            f"{exponent.max().item():.4g}); pass stabilize='query' (for q) or 'key' (for k), "
            "a constant that cancels in normalized attention, or scale x down"
        )
    if bool((phi.amax(-1) == 0).any()):
        raise ValueError(
            f"x: every random feature of a row underflows to 0 in {str(x.dtype)[6:]} (exponents "
            f"down to {exponent.amax(-1).min().item():.4g}); pass stabilize='query' (for q) or "
            "'key' (for k), a constant that cancels in normalized attention, or scale x down"
        )


FEATURE_MAPS = {"elu1": elu1, "relu": relu, "squared_relu": squared_relu, "taylor2": taylor2}


def feature_dim(name: str, D: int, M: int | None = None) -> int:
    """Output dimension of a feature map for head dim D (M: number of random features)."""
    D = check_positive("D", D)
    if name == "random":
        if M is None:
            raise ValueError(
                "feature_dim('random', D, M): M, the number of random features, is needed"
            )
        M = check_positive("M", M)
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
