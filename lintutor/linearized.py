"""Linearized LLMs, the math (lesson 07): grouped linear attention and the local conv on V.

You et al., ICML 2024, "When Linear Attention Meets Autoregressive Decoding: Towards More
Effective and Efficient Linearized Large Language Models" (official code: GATECH-EIC/Linearized-LLM,
`experiments/llama_attn_replace.py`, `linear_forward_noflashattn`).

Grouped linear attention, groups of G tokens, g(t) = t // G the group of token t:

    local_t  = sum_{s in group g(t), s <= t} kappa(q_t . k_s) v_s       kappa(u) = u or relu(u)^2
    global_t = S_{g(t)}^T q_t,   S_g = S_0 + sum_{s < g*G} k_s v_s^T     (earlier, complete groups)
    o_t = local_t + alpha * global_t                                   (normalize=False)
    o_t = (local_t + alpha global_t) / (sum_s kappa(q_t . k_s) + alpha q_t . z_{g(t)} + eps)

With kappa(u) = u and alpha = 1 this is lesson 03's chunked form with C = G, so it equals full
causal linear attention exactly. The paper's code swaps in a sharper local kernel: q and k are
cosine-normalized (after RoPE), kappa = relu(u)^2, G = 64, alpha is a learnable scalar that starts
at 0, and there is no normalizer: `local="relu2", normalize=False` here. Like causal.py, these
forms take q, k as the caller prepared them (`cosine(q)` for the paper's variant).

The local conv on V: one temporal filter per head, a centred kernel of K = 2P + 1 taps as in the
official `Conv2d(H, H, (K, 1), padding=(P, 0), groups=H)` (K = 63 there):

    centred: c_t = sum_{j=0}^{K-1} w[j] v_{t+j-P}      reads P future tokens: a leak in a decoder
    causal:  w[j] = 0 for j > P (the mask)  =>  c_t = sum_{i=0}^{P} w[P-i] v_{t-i}

and c is added to the attention output before the output projection. Left out: RoPE and the
LLaMA model around it (`lintutor.decoder` has our small decoder), the official code's optional
extra normalizations (NORM_LOCAL, NORM_GLOBAL) and its local factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lintutor._validate import check_positive, check_shapes
from lintutor.causal import initial_state_or_zeros
from lintutor.softmax import causal_mask

LOCAL_KERNELS = ("linear", "relu2")


def cosine(x):
    """x / |x| over the head dim, as the official code normalizes q and k (a zero row stays 0)."""
    return F.normalize(x, dim=-1)


def local_kernel(scores, local: str):
    """kappa(q . k): the scores as they are ("linear") or relu(scores)^2 ("relu2")."""
    if local == "linear":
        return scores
    if local == "relu2":
        return torch.relu(scores) ** 2
    raise ValueError(f"local must be one of {LOCAL_KERNELS}, got {local!r}")


def grouped_linear_attention_recurrent(
    q,
    k,
    v,
    group_size=64,
    local="relu2",
    global_factor=1.0,
    normalize=False,
    initial_state=None,
    output_final_state=False,
    eps=1e-6,
):
    """The definition, token by token: the group so far plus the state of complete groups.

    A call starts a new group at t = 0; initial_state (S, or (S, z) with normalize) holds the
    groups before it, and the final state holds every token of the call. O(T*G*(D+E) + T*D*E).
    """
    check_shapes(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"))
    check_positive("group_size", group_size)
    S, z = initial_state_or_zeros(q, v, normalize, initial_state)
    T, outs = q.shape[2], []
    for t in range(T):
        start = t - t % group_size  # first token of t's group
        q_t = q[:, :, t]  # (B, H, D)
        k_g, v_g = k[:, :, start : t + 1], v[:, :, start : t + 1]  # (B, H, r, D), (B, H, r, E)
        a = local_kernel(torch.einsum("bhd,bhrd->bhr", q_t, k_g), local)  # (B, H, r)
        o_t = torch.einsum("bhr,bhre->bhe", a, v_g)  # local term
        o_t = o_t + global_factor * torch.einsum("bhd,bhde->bhe", q_t, S)  # global term
        if normalize:
            den = a.sum(-1) + global_factor * (q_t * z).sum(-1)  # (B, H)
            o_t = o_t / (den.unsqueeze(-1) + eps)
        outs.append(o_t)
        if t % group_size == group_size - 1 or t == T - 1:  # the group is complete (or the end)
            S = S + k_g.transpose(-1, -2) @ v_g  # (B, H, D, E)
            z = z + k_g.sum(2) if normalize else None
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(v.shape)  # (B, H, T, E)
    if not output_final_state:
        return o
    return o, ((S, z) if normalize else S)


def grouped_linear_attention_parallel(
    q,
    k,
    v,
    group_size=64,
    local="relu2",
    global_factor=1.0,
    normalize=False,
    initial_state=None,
    output_final_state=False,
    eps=1e-6,
):
    """All groups at once (no loop over groups): masked G x G products inside each group, an
    exclusive prefix sum of k^T v over groups. O(T*G*(D+E) + T*D*E) time, O(T*G + n*D*E) memory.
    Same arguments and state convention as the recurrent form."""
    check_shapes(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"))
    check_positive("group_size", group_size)
    S0, z0 = initial_state_or_zeros(q, v, normalize, initial_state)
    B, H, T, D = q.shape
    E, G = v.shape[-1], group_size
    n = -(-T // G)  # number of groups, the last one may be short
    pad = lambda x: F.pad(x, (0, 0, 0, n * G - T)).view(B, H, n, G, x.shape[-1])
    qg, kg, vg = pad(q), pad(k), pad(v)  # (B, H, n, G, D/E); padded k, v are 0 and add nothing
    mask = causal_mask(G, device=q.device)  # (G, G), s <= t
    a = local_kernel(qg @ kg.transpose(-1, -2), local).masked_fill(~mask, 0.0)  # (B, H, n, G, G)
    kv = kg.transpose(-1, -2) @ vg  # (B, H, n, D, E): each group's sum of k v^T
    S_before = S0.unsqueeze(2) + kv.cumsum(2) - kv  # (B, H, n, D, E): groups before each group
    o = a @ vg + global_factor * (qg @ S_before)  # (B, H, n, G, E)
    z = None
    if normalize:
        ks = kg.sum(3)  # (B, H, n, D)
        z_before = z0.unsqueeze(2) + ks.cumsum(2) - ks  # (B, H, n, D)
        den = a.sum(-1) + global_factor * (qg @ z_before.unsqueeze(-1)).squeeze(-1)  # (B,H,n,G)
        o = o / (den.unsqueeze(-1) + eps)
        z = z0 + k.sum(2)
    o = o.reshape(B, H, n * G, E)[:, :, :T]  # (B, H, T, E)
    if not output_final_state:
        return o
    S = S0 + kv.sum(2)  # (B, H, D, E)
    return o, ((S, z) if normalize else S)


def grouped_linear_attention_step(
    q_t, k_t, v_t, state, group_size=64, local="relu2", global_factor=1.0, normalize=False,
    eps=1e-6,
):  # fmt: skip
    """One decode step: returns (o_t (B, H, E), new state). O(G*(D+E) + D*E) per token.

    state = (S, z, k_group, v_group): the complete groups' S (B, H, D, E) and z (B, H, D) (None
    without normalizer) and the r < G tokens of the current group, (B, H, r, D) and (B, H, r, E).
    """
    check_shapes(q_t=(q_t, "B H D"), k_t=(k_t, "B H D"), v_t=(v_t, "B H E"))
    S, z, k_g, v_g = state
    k_g = torch.cat([k_g, k_t.unsqueeze(2)], dim=2)  # (B, H, r + 1, D)
    v_g = torch.cat([v_g, v_t.unsqueeze(2)], dim=2)  # (B, H, r + 1, E)
    q_row = q_t.unsqueeze(2)  # (B, H, 1, D)
    a = local_kernel(q_row @ k_g.transpose(-1, -2), local)  # (B, H, 1, r + 1)
    o_t = (a @ v_g + global_factor * (q_row @ S)).squeeze(2)  # (B, H, E): local + global
    if normalize:
        den = a.sum((-1, -2)) + global_factor * (q_t * z).sum(-1)  # (B, H)
        o_t = o_t / (den.unsqueeze(-1) + eps)
    if k_g.shape[2] == group_size:  # the group is complete: fold it into the state
        S = S + k_g.transpose(-1, -2) @ v_g
        z = z + k_g.sum(2) if normalize else None
        k_g, v_g = k_g[:, :, :0], v_g[:, :, :0]
    return o_t, (S, z, k_g, v_g)


# --- the local conv on V ----------------------------------------------------------------------


def causal_conv_mask(kernel_size: int, dtype=None, device=None):
    """(K,) ones on the taps j <= K // 2 (the current token and the past), zeros on the future."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1 (a centred kernel), got {kernel_size}")
    mask = torch.zeros(kernel_size, dtype=dtype, device=device)
    mask[: kernel_size // 2 + 1] = 1.0
    return mask


def centered_depthwise_conv(v, weight):
    """The encoder-style (leaky) conv: c_t = sum_j w[h, j] v_{t+j-P}, zero padding, P = K // 2.

    v (B, H, T, E), weight (H, K): one filter per head, shared by the E channels. O(T*K*E).
    """
    check_shapes(v=(v, "B H T E"), weight=(weight, "H K"))
    H, K = weight.shape
    if K % 2 == 0:
        raise ValueError(f"weight: the kernel size K must be odd (a centred kernel), got {K}")
    w = weight.view(H, 1, K, 1)  # a Conv2d kernel (K, 1) per head, as the official code
    return F.conv2d(v, w, padding=(K // 2, 0), groups=H)  # (B, H, T, E)


def causal_depthwise_conv(v, weight, initial_state=None, output_final_state=False):
    """The decoder's conv: the centred kernel with its future taps masked. O(T*K*E).

    c_t = sum_{i=0}^{P} w[h, P - i] v_{t-i}. initial_state (B, H, P, E): the P values before
    t = 0 (zeros if None); the final state is the last P values, the decode cache.
    """
    check_shapes(v=(v, "B H T E"), weight=(weight, "H K"))
    B, H, T, E = v.shape
    K = weight.shape[1]
    P = K // 2
    w = weight * causal_conv_mask(K, weight.dtype, weight.device)  # (H, K), in the graph
    if initial_state is None:
        initial_state = v.new_zeros(B, H, P, E)
    check_shapes(v=(v, "B H T E"), initial_state=(initial_state, f"B H {P} E"))
    x = torch.cat([initial_state, v], dim=2)  # (B, H, P + T, E): the past, then the new tokens
    c = F.conv2d(x, w.view(H, 1, K, 1), padding=(P, 0), groups=H)[:, :, P:]  # (B, H, T, E)
    if not output_final_state:
        return c
    return c, x[:, :, x.shape[2] - P :]  # (B, H, P, E)


def conv_toeplitz(weight, T: int, causal=True):
    """The conv as a (H, T, T) banded Toeplitz matrix M, c = M @ v: M[t, s] = w[s - t + P] for
    |s - t| <= P; with causal=True, lower-triangular (s <= t). O(H*T^2) memory: for tests."""
    H, K = weight.shape
    P = K // 2
    t = torch.arange(T, device=weight.device)
    offset = t.view(1, T) - t.view(T, 1) + P  # (T, T): tap index s - t + P
    inside = (offset >= 0) & (offset < K) & ((offset <= P) if causal else True)
    taps = weight[:, offset.clamp(0, K - 1)]  # (H, T, T)
    return taps * inside


def conv_step(v_t, weight, window):
    """One causal conv step: (c_t (B, H, E), new window). window (B, H, P, E) holds the last P
    values, oldest first. O(P*E) per token."""
    H, K = weight.shape
    P = K // 2
    x = torch.cat([window, v_t.unsqueeze(2)], dim=2)  # (B, H, P + 1, E): v_{t-P} ... v_t
    c_t = (weight[:, : P + 1].view(1, H, 1, P + 1) @ x).squeeze(2)  # taps j = 0..P: v_{t+j-P}
    return c_t, x[:, :, 1:]


def augmented_linear_attention_step(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6):
    """One decode step of linear attention plus the causal conv on V. O(D*E + P*E) per token.

    q_t, k_t (B, H, D) feature-mapped, v_t (B, H, E); the state S (B, H, D, E), z (B, H, D) and
    the conv cache window (B, H, P, E), the last P values, oldest first; conv_weight (H, 2P + 1).
        S_t = S + k_t v_t^T,  z_t = z + k_t,  o_t = S_t^T q_t / (q_t . z_t + eps) + c_t
    Returns (o_t (B, H, E), S_t, z_t, the new window).
    """
    S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # (B, H, D, E)
    z = z + k_t  # (B, H, D)
    o_t = torch.einsum("bhd,bhde->bhe", q_t, S) / ((q_t * z).sum(-1, keepdim=True) + eps)
    P = conv_weight.shape[1] // 2
    x = torch.cat([window, v_t.unsqueeze(2)], dim=2)  # (B, H, P + 1, E): v_{t-P} ... v_t
    c_t = torch.einsum("hj,bhje->bhe", conv_weight[:, : P + 1], x)  # the causal taps only
    return o_t + c_t, S, z, x[:, :, 1:]
