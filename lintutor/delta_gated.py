"""Gated DeltaNet's rule: the delta rule with lesson 04's forget gate (lesson 09).

    S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   a_t = exp(g_t), g_t <= 0
    o_t = scale * S_t^T q_t

Yang, Kautz & Hatamizadeh, ICLR 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule":
the scalar gate of Mamba-2 (one per head and token) multiplies the old state before the delta
rule corrects it. The forms are `lintutor.delta`'s with g after beta, and each adds lesson 04's
decays: the recurrent form scales S by a_t first; the chunked form multiplies the intra-chunk
scores and A by the decay mask exp(G_t - G_s) (a segment sum, lesson 04), reads the state with
gamma_t = exp(G_t) and decays it to the chunk end. g (B, H, T); fla's
`naive_recurrent_gated_delta_rule` computes the same (in its (B, T, H, D) layout). Left out: a
gate per key channel (Kimi Delta Attention's).
"""

from __future__ import annotations

import torch

from lintutor._validate import check_positive, check_shapes
from lintutor.delta import check_delta_inputs, start_state, ut_transform
from lintutor.gated import segment_sum


def gated_delta_rule_recurrent(
    q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0
):
    """The definition: forget (a_t S), then the delta rule's erase and write. O(T*D*E) time."""
    if g is None:
        raise TypeError("g: the gated forms need log-gates (B, H, T); use delta_rule_* without")
    dtype = check_delta_inputs(q, k, v, beta, g, initial_state)
    S = start_state(q, v, initial_state, dtype)  # (B, H, D, E)
    outs = []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = (x[:, :, t].to(dtype) for x in (q, k, v))  # (B, H, D), (B, H, D), (B, H, E)
        b_t = beta[:, :, t].to(dtype)[..., None, None]  # (B, H, 1, 1)
        S = torch.exp(g[:, :, t].to(dtype))[..., None, None] * S  # the gate: forget first
        v_old = torch.einsum("bhd,bhde->bhe", k_t, S)  # (B, H, E): what S returns for k_t
        S = S + b_t * k_t.unsqueeze(-1) * (v_t - v_old).unsqueeze(-2)  # erase, then write
        outs.append(scale * torch.einsum("bhd,bhde->bhe", q_t, S))  # (B, H, E)
    o = (torch.stack(outs, dim=2) if outs else v.new_zeros(v.shape)).to(v.dtype)  # (B, H, T, E)
    return (o, S) if output_final_state else o


def gated_delta_rule_chunked(
    q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0, chunk_size=64
):
    """The gated rule in chunks of C tokens; any T. O(T*C*(C+D+E) + T*D*E) time.

    Per chunk, G = the cumulative sum of g inside the chunk (it restarts every chunk):
    (w, u) = ut_transform(k, v, beta, g), new = u - w S, o = (q * gamma) S + (q k^T * L) new
    with L = exp(segment sum) the decay mask, S <- gamma_C S + (k * gamma_C / gamma)^T new.
    Every exponent is a sum of log-gates inside one chunk: nothing overflows however long T.
    """
    if g is None:
        raise TypeError("g: the gated forms need log-gates (B, H, T); use delta_rule_* without")
    dtype = check_delta_inputs(q, k, v, beta, g, initial_state)
    check_positive("chunk_size", chunk_size)
    S = start_state(q, v, initial_state, dtype)  # (B, H, D, E)
    T = q.shape[2]
    outs = []
    for start in range(0, T, chunk_size):
        c = slice(start, min(start + chunk_size, T))
        q_c, k_c, v_c = (x[:, :, c].to(dtype) for x in (q, k, v))  # (B, H, C, D|E)
        b_c, g_c = beta[:, :, c].to(dtype), g[:, :, c].to(dtype)  # (B, H, C)
        G = torch.cumsum(g_c, dim=-1)  # (B, H, C): log decay from the chunk start
        gamma = torch.exp(G).unsqueeze(-1)  # (B, H, C, 1)
        to_end = torch.exp(G[..., -1:] - G).unsqueeze(-1)  # (B, H, C, 1): decay from t to the end
        w, u = ut_transform(k_c, v_c, b_c, g_c)  # (B, H, C, D), (B, H, C, E)
        new = u - w @ S  # (B, H, C, E): the values the gated delta rule writes in this chunk
        scores = (q_c @ k_c.transpose(-1, -2)) * torch.exp(segment_sum(g_c))  # (B, H, C, C)
        outs.append(scale * ((gamma * q_c) @ S + scores @ new))  # earlier chunks + this chunk
        S = torch.exp(G[..., -1])[..., None, None] * S + (to_end * k_c).transpose(-1, -2) @ new
    o = (torch.cat(outs, dim=2) if outs else v.new_zeros(v.shape)).to(v.dtype)  # (B, H, T, E)
    return (o, S) if output_final_state else o


def gated_delta_rule_step(q_t, k_t, v_t, beta_t, g_t, state, scale=1.0):
    """One gated decode step: (o_t (B, H, E), new state (B, H, D, E)); g_t (B, H) <= 0."""
    check_shapes(
        q_t=(q_t, "B H D"), k_t=(k_t, "B H D"), v_t=(v_t, "B H E"), beta_t=(beta_t, "B H"),
        g_t=(g_t, "B H"),
    )  # fmt: skip
    args = [x.unsqueeze(2) for x in (q_t, k_t, v_t, beta_t, g_t)]  # T = 1
    o, S = gated_delta_rule_recurrent(*args, state, True, scale)
    return o[:, :, 0], S
