"""Softmax attention, from one query to many heads (lesson 01).

    scores  = q k^T / sqrt(D)                  (T, S)
    weights = softmax(scores, dim=-1)          each row sums to 1
    out     = weights v                        (T, E)

Eq. (1) of Vaswani et al. 2017, "Attention Is All You Need". With a causal mask, query t only
sees keys s <= t (scores of s > t are set to -inf before the softmax). Cost: O(T^2 D) time and
O(T^2) memory for the weights, which is what lessons 02-03 remove.

Shapes: q (B, H, T, D), k (B, H, S, D), v (B, H, S, E); S = T for self-attention.
"""

from __future__ import annotations

import math

import torch

from lintutor._validate import (
    check_count,
    check_heads,
    check_keys,
    check_positive_real,
    check_tensors,
)


def attention_one_query(q, k, v):
    """Attention output for one query q (D,) over keys k (S, D) and values v (S, E). O(S*D)."""
    check_tensors(q=(q, "D"), k=(k, "S D"), v=(v, "S E"))
    check_keys(k, 1)
    scores = k @ q / math.sqrt(q.shape[-1])  # (S,)
    weights = torch.softmax(scores, dim=-1)  # (S,), sums to 1
    return weights @ v  # (E,)


def causal_mask(T: int, S: int | None = None, device=None, strict: bool = False) -> torch.Tensor:
    """Boolean (T, S) mask, True where query t may see key s (s <= t + S - T).

    The one place the package builds a causal mask. strict=True leaves out the diagonal
    (s < t + S - T), as the segment sums of lesson 04 need.
    """
    T = check_count("T", T)
    S = T if S is None else check_count("S", S)
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T - int(strict))


def attention_weights(q, k, causal: bool = False, temperature: float = 1.0):
    """Softmax weights (B, H, T, S) of q k^T / (sqrt(D) * temperature). O(T*S*D)."""
    check_tensors(q=(q, "B H T D"), k=(k, "B H S D"))
    check_positive_real("temperature", temperature)
    check_keys(k, q.shape[2], causal)
    scores = q @ k.transpose(-1, -2) / (math.sqrt(q.shape[-1]) * temperature)  # (B, H, T, S)
    if causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)  # (T, S)
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def softmax_attention_loops(q, k, v, causal: bool = False):
    """The definition, one query at a time with Python loops. O(B*H*T*S*D), slow on purpose."""
    dims = check_tensors(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    B, H, T, S = dims["B"], dims["H"], dims["T"], dims["S"]
    check_keys(k, T, causal)
    out = q.new_zeros(B, H, T, v.shape[-1])  # (B, H, T, E)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                visible = t + S - T + 1 if causal else S  # keys 0 .. visible-1
                out[b, h, t] = attention_one_query(q[b, h, t], k[b, h, :visible], v[b, h, :visible])
    return out


def softmax_attention(q, k, v, causal: bool = False):
    """Scaled dot-product attention in matrix form, equal to torch's SDPA. O(T*S*(D+E))."""
    check_tensors(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    check_keys(k, q.shape[2], causal)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)  # (T, S)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, S), rows sum to 1
    return weights @ v  # (B, H, T, E)


def split_heads(x, n_heads: int):
    """(B, T, H*D) -> (B, H, T, D): each head gets its own slice of the channels."""
    check_tensors(x=(x, "B T C"))
    B, T, C = x.shape
    n_heads = check_heads(C, n_heads)
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, H, T, D)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, H*D), the inverse of split_heads."""
    check_tensors(x=(x, "B H T D"))
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H*D)


def multihead_attention(x, w_q, w_k, w_v, w_o, n_heads: int, causal: bool = False):
    """Multi-head self-attention of x (B, T, C) with weights (C, C); returns (B, T, C)."""
    check_tensors(x=(x, "B T C"), w_q=(w_q, "C C"), w_k=(w_k, "C C"), w_v=(w_v, "C C"),
                  w_o=(w_o, "C C"))  # fmt: skip
    B, T, C = x.shape
    n_heads = check_heads(C, n_heads)
    D = C // n_heads
    q = (x @ w_q).view(B, T, n_heads, D).transpose(1, 2)  # (B, H, T, D)
    k = (x @ w_k).view(B, T, n_heads, D).transpose(1, 2)  # (B, H, T, D)
    v = (x @ w_v).view(B, T, n_heads, D).transpose(1, 2)  # (B, H, T, D)
    out = softmax_attention(q, k, v, causal=causal)  # (B, H, T, D)
    out = out.transpose(1, 2).reshape(B, T, C)  # (B, T, H*D)
    return out @ w_o  # (B, T, C)
