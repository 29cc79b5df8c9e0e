"""Non-causal linear attention and the same computation in quadratic form (lesson 02).

With a kernel sim(q, k) = phi(q) . phi(k), attention is kernel smoothing (Eq. 4 of
Katharopoulos et al. 2020), and associativity lets us regroup the product (Eqs. 5-6):

    quadratic:  o_t = sum_s (q_t . k_s) v_s / sum_s (q_t . k_s)     = (Q K^T) V / rowsum
    linear:     o_t = q_t^T (K^T V) / (q_t . sum_s k_s)              = Q (K^T V) / (Q z)

Both equal to float64 precision. The quadratic form costs O(T*S*(D+E)) time and O(T*S) memory;
the linear one O((T+S)*D*E) time and O(D*E) memory. q and k are ALREADY feature-mapped
(phi(q), phi(k), see `lintutor.featuremaps`). normalize=False drops the denominator.

A normalized form needs a positive denominator q_t . sum_s k_s: negative values (for instance
raw q, k without a positive feature map) are reported, not silently divided by.
"""

from __future__ import annotations

import torch

from lintutor._validate import check_keys, check_nonnegative, check_tensors
from lintutor.softmax import causal_mask


def linear_attention(q, k, v, normalize=True, eps=1e-6):
    """phi(Q) (phi(K)^T V) / (phi(Q) . sum_s phi(k_s)). O((T+S)*D*E) time, O(D*E) memory."""
    check_tensors(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    kv = k.transpose(-1, -2) @ v  # (B, H, D, E): sum_s k_s v_s^T
    out = q @ kv  # (B, H, T, E)
    if not normalize:
        return out
    z = k.sum(dim=2)  # (B, H, D): sum_s k_s
    den = (q * z.unsqueeze(2)).sum(-1)  # (B, H, T): q_t . z
    check_nonnegative("the normalizer phi(q) . sum_s phi(k_s)", den)
    return out / (den.unsqueeze(-1) + eps)  # (B, H, T, E)


def linear_attention_quadratic(q, k, v, normalize=True, eps=1e-6):
    """(phi(Q) phi(K)^T) V / rowsum: the T x S matrix first. O(T*S*(D+E)) time, O(T*S) memory."""
    check_tensors(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    scores = q @ k.transpose(-1, -2)  # (B, H, T, S): sim(q_t, k_s)
    out = scores @ v  # (B, H, T, E)
    if not normalize:
        return out
    den = scores.sum(-1)  # (B, H, T)
    check_nonnegative("the normalizer phi(q) . sum_s phi(k_s)", den)
    return out / (den.unsqueeze(-1) + eps)


def linear_attention_weights(q, k, causal=False, eps=1e-6):
    """The attention map of normalized linear attention, (B, H, T, S), rows sum to 1. O(T*S*D).

    Linear attention never builds it; this is for looking at it next to softmax's.
    """
    check_tensors(q=(q, "B H T D"), k=(k, "B H S D"))
    check_keys(k, q.shape[2], causal)
    scores = q @ k.transpose(-1, -2)  # (B, H, T, S)
    if causal:
        mask = causal_mask(q.shape[2], k.shape[2], device=q.device)  # (T, S)
        scores = scores.masked_fill(~mask, 0.0)
    den = scores.sum(-1, keepdim=True)  # (B, H, T, 1)
    check_nonnegative("the normalizer phi(q) . sum_s phi(k_s)", den)
    return scores / (den + eps)


def attention_entropy(weights, eps=1e-12):
    """Entropy in nats of each attention row (B, H, T): low = focused, log(S) = uniform."""
    check_tensors(weights=(weights, "... S"))
    w = weights.clamp_min(0)
    return -(w * torch.log(w + eps)).sum(-1)
