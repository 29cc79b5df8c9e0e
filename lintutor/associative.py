"""The state as an associative memory: how many key-value pairs fit, and how they interfere
(lesson 09).

Write N pairs (k_i, v_i) into a (D, E) matrix memory S, then read every key back with S^T k_i:

    additive   S = sum_i k_i v_i^T  (lessons 03-04), so S^T k_j = v_j + sum_{i != j} (k_i . k_j) v_i
    delta      S_i = S_{i-1} + beta k_i (v_i - S_{i-1}^T k_i)^T, one pass (or more) over the pairs
    best       S = K^+ V, least squares: the best any linear read-out S^T k can do

With orthonormal keys the additive read-out is exact, and at most D keys are orthonormal. Unit
random keys overlap by about 1/sqrt(D) each, so the crosstalk sum grows with N; correlated keys
overlap more. The delta rule subtracts what the memory already returns before it writes, so a
shared direction of the keys is written once, not N times. Errors are relative mean squared
errors, sum_j ||S^T k_j - v_j||^2 / sum_j ||v_j||^2, averaged over random draws.
"""

from __future__ import annotations

import torch

from lintutor.delta import delta_rule_recurrent

KEY_KINDS = ("orthogonal", "random", "correlated")


def make_keys(n, d, kind="random", correlation=0.5, batch=1, generator=None, dtype=torch.float64):
    """`batch` sets of n unit keys of dimension d, (batch, n, d): orthogonal (n <= d), random or
    correlated.

    correlated: k_i = sqrt(c) u + sqrt(1 - c) z_i, normalized, with one shared random unit vector u
    per set and independent z_i: two keys of a set have a cosine of about c.
    """
    if kind not in KEY_KINDS:
        raise ValueError(f"kind must be one of {KEY_KINDS}, got {kind!r}")
    normalize = torch.nn.functional.normalize
    if kind == "orthogonal":
        if n > d:
            raise ValueError(f"at most d = {d} keys can be orthogonal, asked for n = {n}")
        Q, _ = torch.linalg.qr(torch.randn(batch, d, d, generator=generator, dtype=dtype))
        return Q.transpose(-1, -2)[:, :n].contiguous()  # (batch, n, d), orthonormal rows
    z = normalize(torch.randn(batch, n, d, generator=generator, dtype=dtype), dim=-1)
    if kind == "random":
        return z
    u = normalize(torch.randn(batch, 1, d, generator=generator, dtype=dtype), dim=-1)
    return normalize(correlation**0.5 * u + (1 - correlation) ** 0.5 * z, dim=-1)


def additive_memory(keys, values):
    """S = K^T V = sum_i k_i v_i^T: (..., D, E) from keys (..., N, D), values (..., N, E)."""
    return keys.transpose(-1, -2) @ values


def delta_memory(keys, values, beta=1.0, sweeps=1):
    """The delta rule written over the pairs in order, `sweeps` times, from S = 0: (..., D, E).

    keys (batch, N, D), values (batch, N, E); runs the package's `delta_rule_recurrent` (the keys
    are also its queries; only the final state is kept). O(sweeps * N * D * E) per set.
    """
    k, v = keys.unsqueeze(1), values.unsqueeze(1)  # (batch, 1, N, D|E): one head
    b = torch.full(k.shape[:3], float(beta), dtype=keys.dtype)  # (batch, 1, N)
    S = None
    for _ in range(sweeps):
        _, S = delta_rule_recurrent(k, k, v, b, initial_state=S, output_final_state=True)
    return S[:, 0]  # (batch, D, E)


def least_squares_memory(keys, values):
    """S = K^+ V, (..., D, E): the smallest total read-out error of any linear memory."""
    return torch.linalg.pinv(keys) @ values


def retrieval_error(S, keys, values):
    """Relative squared read-out error sum ||S^T k_i - v_i||^2 / sum ||v_i||^2, one per set."""
    return ((keys @ S - values) ** 2).sum((-1, -2)) / (values**2).sum((-1, -2))


MEMORIES = {
    "additive": additive_memory,
    "delta": delta_memory,
    "least squares": least_squares_memory,
}


def capacity_curves(d=32, pairs=(4, 8, 16, 24, 32, 48, 64, 96, 128), e=None, trials=20,
                    correlation=0.5, seed=0):  # fmt: skip
    """Retrieval error against the number of pairs, D fixed: {kind: {memory: [mean error per n]}}.

    Orthogonal keys exist only up to n = d: their curves stop there (NaN beyond). Values are
    standard normal of dimension e (default d); `trials` random sets per point, their mean
    error. O(trials * sum(pairs) * d * e).
    """
    e = e or d
    g = torch.Generator().manual_seed(seed)
    out = {"d": d, "e": e, "pairs": list(pairs), "trials": trials, "correlation": correlation}
    for kind in KEY_KINDS:
        curves = {name: [] for name in MEMORIES}
        for n in pairs:
            if kind == "orthogonal" and n > d:
                for name in MEMORIES:
                    curves[name].append(float("nan"))
                continue
            keys = make_keys(n, d, kind, correlation, batch=trials, generator=g)  # (trials, n, d)
            values = torch.randn(trials, n, e, generator=g, dtype=keys.dtype)
            for name, memory in MEMORIES.items():
                err = retrieval_error(memory(keys, values), keys, values)  # (trials,)
                curves[name].append(float(err.mean()))
        out[kind] = curves
    return out
