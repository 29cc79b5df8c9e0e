"""Gated causal linear attention: a state that can forget (lesson 04).

    S_t = a_t * S_{t-1} + k_t v_t^T        (D, E) matrix state, a_t in (0, 1]
    z_t = a_t * z_{t-1} + k_t              (D,)   normalizer state (normalize=True only)
    o_t = S_t^T q_t  [/ (z_t . q_t + eps)]

Every form takes the gate as log-gates `g = log a` (<= 0), in one of two shapes:

- scalar gate, g (B, H, T): one number per head and step. A constant g is RetNet's fixed decay
  (Sun et al. 2023, sec. 2.2: gamma = 1 - 2^(-5 - h)); a g computed from x_t is Mamba-2's / simple
  GLA's data-dependent gate (Dao & Gu 2024, sec. 3).
- vector gate, g (B, H, T, D): one number per key channel, `a_t * S` scales row d of S by
  a_t[d] (GLA, Yang et al. 2024, sec. 4; Mamba-1's selective SSM is this with D = state size N).

Unrolled, o_t = sum_{s<=t} (q_t * exp(G[t, s]))^T k_s v_s with G[t, s] = g_{s+1} + ... + g_t,
the "segment sum". exp(G) is the decay mask: the causal mask of lesson 03 (all ones below the
diagonal) is the special case g = 0. `segment_sum` builds G without subtracting cumulative sums,
so it neither underflows nor cancels; `decay_mask_naive` (cumulative products, then a ratio) shows
what goes wrong without it, and `decay_masked_scores_factorized` (GLA's q * exp(c), k * exp(-c))
how a factorized chunk overflows once its log-gates sum past log(dtype max).

- `_recurrent`: the definition. O(T*D*E) time, O(D*E) memory.
- `_parallel`:  the decay-masked T x T form. O(T^2*(D+E)) time (vector gate: O(T^2*D*E) memory
                for the (T, T, D) mask, fine for a lesson, not for a kernel).
- `_chunked`:   decay mask inside chunks of C tokens, the decayed state across chunks.

Defaults differ from lesson 03 in one place on purpose: normalize=False, because the gated models
(RetNet, GLA, Mamba) have no normalizer; the decay keeps the state bounded instead. State
convention as in `lintutor.causal`: S (B, H, D, E), or (S, z) with normalize=True. Inputs are
checked as lesson 03's are (shapes, one floating dtype, no negative normalizer), and log-gates
must be <= 0: a positive g would be a gate a > 1 that grows the state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lintutor._validate import (
    ShapeError,
    check_count,
    check_dtypes,
    check_log_gates,
    check_module_input,
    check_nonnegative,
    check_positive,
    check_shapes,
    check_tensors,
)
from lintutor.causal import NORMALIZER, check_causal_inputs, check_step_inputs
from lintutor.softmax import causal_mask


def check_gated_inputs(q, k, v, g) -> bool:
    """Check q, k, v and a scalar (B, H, T) or vector (B, H, T, D) log-gate; True if vector.

    One floating dtype for all four, and log-gates <= 0 (gates a = exp(g) in (0, 1]).
    """
    check_tensors(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"))
    return check_log_gate_shape(q, g)


def check_log_gate_shape(q, g, name="g", spec="B H T") -> bool:
    """g (B, H, T) or (B, H, T, D) beside q (B, H, T, D), q's dtype, <= 0; True if a vector
    gate. For one decode step: name="g_t", spec="B H" beside q_t (B, H, D)."""
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of log-gates, got {type(g).__name__}")
    n = len(spec.split())
    if g.dim() not in (n, n + 1):
        raise ShapeError(
            f"{name}: expected a scalar gate ({', '.join(spec.split())}) or a vector gate "
            f"({', '.join(spec.split())}, D), got {g.dim()} dimensions with shape {tuple(g.shape)}"
        )
    vector = g.dim() == n + 1
    q_spec = spec + " D"
    check_shapes(**{"q" if n == 3 else "q_t": (q, q_spec), name: (g, q_spec if vector else spec)})
    check_dtypes(**{"q" if n == 3 else "q_t": q, name: g})
    check_log_gates(name, g)
    return vector


def segment_sum(g: torch.Tensor) -> torch.Tensor:
    """G[..., t, s] = g[..., s+1] + ... + g[..., t] for s <= t, -inf above the diagonal.

    (..., T) -> (..., T, T). Sums only the entries inside each segment (no cumsum differences),
    as in Mamba-2's ssd_minimal `segsum`. O(T^2) time and memory.
    """
    T = check_tensors(g=(g, "... T"))["T"]
    x = g.unsqueeze(-1).expand(*g.shape, T)  # (..., T, T): x[..., r, s] = g_r
    x = x.masked_fill(~causal_mask(T, device=g.device, strict=True), 0.0)  # g_r only for r > s
    G = torch.cumsum(x, dim=-2)  # (..., T, T): G[t, s] = sum_{s < r <= t} g_r
    return G.masked_fill(~causal_mask(T, device=g.device), float("-inf"))  # -inf for s > t


def decay_mask_naive(g: torch.Tensor) -> torch.Tensor:
    """The decay mask as a ratio of cumulative products, P_t / P_s with P_t = a_1 ... a_t.

    (..., T) -> (..., T, T). Exact on paper, broken in floating point: P_t underflows to 0 for
    long T and the ratio becomes 0/0 = NaN. Shown in lesson 04; use `segment_sum` instead.
    """
    check_tensors(g=(g, "... T"))
    check_log_gates("g", g)
    P = torch.cumprod(torch.exp(g), dim=-1)  # (..., T): P_t = prod_{r<=t} a_r
    ratio = P.unsqueeze(-1) / P.unsqueeze(-2)  # (..., T, T): P_t / P_s
    return ratio.masked_fill(~causal_mask(g.shape[-1], device=g.device), 0.0)


def decay_mask(g: torch.Tensor) -> torch.Tensor:
    """The decay mask L[..., t, s] = a_{s+1} ... a_t (1 on the diagonal, 0 above), stably.

    (..., T) log-gates -> (..., T, T): exp of the segment sum, each segment summed on its own
    (exp(-inf) = 0 above the diagonal). With g = 0 it is lesson 03's causal mask. O(T^2) time
    and memory.
    """
    check_tensors(g=(g, "... T"))
    check_log_gates("g", g)
    return torch.exp(segment_sum(g))  # (..., T, T)


def fixed_decay_log_gates(n_heads: int, T: int, batch: int = 1, dtype=torch.float32):
    """RetNet's fixed decay as scalar log-gates (B, H, T): gamma_h = 1 - 2^(-5 - h)."""
    n_heads, T = check_positive("n_heads", n_heads), check_count("T", T)
    batch = check_positive("batch", batch)
    gamma = 1 - 2.0 ** (-5 - torch.arange(n_heads, dtype=torch.float64))  # (H,)
    return gamma.log().to(dtype).view(1, n_heads, 1).expand(batch, n_heads, T).contiguous()


def gated_linear_attention_recurrent(
    q, k, v, g, normalize=False, initial_state=None, output_final_state=False, eps=1e-6
):
    """The definition: S_t = a_t * S_{t-1} + k_t v_t^T, one step per token. O(T*D*E) time."""
    vector = check_gated_inputs(q, k, v, g)
    S, z = check_causal_inputs(q, k, v, normalize, initial_state)
    outs, dens = [], []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = q[:, :, t], k[:, :, t], v[:, :, t]  # (B, H, D), (B, H, D), (B, H, E)
        a_t = torch.exp(g[:, :, t])  # (B, H, D) vector gate or (B, H) scalar gate
        a_t = a_t if vector else a_t.unsqueeze(-1)  # (B, H, D or 1)
        S = a_t.unsqueeze(-1) * S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # (B, H, D, E)
        o_t = torch.einsum("bhd,bhde->bhe", q_t, S)  # (B, H, E)
        if normalize:
            z = a_t * z + k_t  # (B, H, D)
            dens.append((q_t * z).sum(-1, keepdim=True))  # (B, H, 1): q_t . z_t
            o_t = o_t / (dens[-1] + eps)
        outs.append(o_t)
    if dens:
        check_nonnegative(NORMALIZER, torch.cat(dens, -1))
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(v.shape)  # (B, H, T, E)
    if output_final_state:
        return o, ((S, z) if normalize else S)
    return o


def decay_masked_scores(q, k, g):
    """Scores q_t . (exp(G[t, s]) * k_s) (B, H, T, T), zero above the diagonal: lesson 03's
    masked q k^T with the decay mask, for a scalar (B, H, T) or vector (B, H, T, D) log-gate.

    Every exponent is a segment sum (<= 0). O(T^2*D) time; a vector gate builds a (D, T, T)
    mask per head.
    """
    check_tensors(q=(q, "B H T D"), k=(k, "B H T D"))
    if check_log_gate_shape(q, g):  # the mask differs per key channel
        G = segment_sum(g.transpose(-1, -2))  # (B, H, D, T, T)
        return torch.einsum("bhtd,bhdts,bhsd->bhts", q, torch.exp(G), k)
    return (q @ k.transpose(-1, -2)) * torch.exp(segment_sum(g))  # (B, H, T, T)


def decay_masked_scores_factorized(q, k, g):
    """The same scores through GLA's factorization, (q * exp(c)) (k * exp(-c))^T with c the
    cumulative sum of g over these T tokens: one plain matmul, but exp(-c) overflows once the
    log-gates sum past log(dtype max) (float32: 88.7, float16: 11.1). Shown in lesson 04.
    """
    check_tensors(q=(q, "B H T D"), k=(k, "B H T D"))
    check_log_gate_shape(q, g)
    c = torch.cumsum(g, dim=2)  # (B, H, T[, D]): log(a_1 ... a_t)
    c = c if g.dim() == 4 else c.unsqueeze(-1)  # (B, H, T, D or 1)
    scores = (q * torch.exp(c)) @ (k * torch.exp(-c)).transpose(-1, -2)  # (B, H, T, T)
    return scores.masked_fill(~causal_mask(q.shape[2], device=q.device), 0.0)


def gated_linear_attention_parallel(
    q, k, v, g, normalize=False, initial_state=None, output_final_state=False, eps=1e-6
):
    """Decay-masked form: o = (q k^T * exp(segsum(g))) v (+ initial state). O(T^2*(D+E))."""
    vector = check_gated_inputs(q, k, v, g)
    S0, z0 = check_causal_inputs(q, k, v, normalize, initial_state)
    if q.shape[2] == 0:  # no tokens: nothing decays, the state stays S_0 (a sum over no gates)
        o = v.new_zeros(v.shape)  # (B, H, 0, E)
        return (o, ((S0, z0) if normalize else S0)) if output_final_state else o
    if vector:  # the mask differs per key channel: (B, H, D, T, T)
        L = torch.exp(segment_sum(g.transpose(-1, -2)))  # L[d, t, s] = a_{s+1}[d] ... a_t[d]
        scores = torch.einsum("bhtd,bhdts,bhsd->bhts", q, L, k)  # (B, H, T, T)
    else:
        L = torch.exp(segment_sum(g))  # (B, H, T, T), the decay mask; 0 above the diagonal
        scores = (q @ k.transpose(-1, -2)) * L  # (B, H, T, T)
    cum = torch.cumsum(g, dim=2)  # (B, H, T[, D]): log(a_1 ... a_t), the decay of S_0 at t
    total = cum[:, :, -1:]  # (B, H, 1[, D]): log(a_1 ... a_T)
    decay_q = torch.exp(cum) if vector else torch.exp(cum).unsqueeze(-1)  # (B, H, T, D or 1)
    o = scores @ v + (q * decay_q) @ S0  # (B, H, T, E)
    # the state after T steps: every k_s decayed by the gates after s
    after = torch.exp(total - cum)  # (B, H, T[, D]): a_{s+1} ... a_T, <= 1
    k_dec = k * (after if vector else after.unsqueeze(-1))  # (B, H, T, D)
    decay_T = torch.exp(total.squeeze(2))  # (B, H[, D])
    decay_T = decay_T if vector else decay_T.unsqueeze(-1)  # (B, H, D or 1)
    S = decay_T.unsqueeze(-1) * S0 + k_dec.transpose(-1, -2) @ v  # (B, H, D, E)
    z = None
    if normalize:
        den = scores.sum(-1) + ((q * decay_q) * z0.unsqueeze(2)).sum(-1)  # (B, H, T)
        check_nonnegative(NORMALIZER, den)
        o = o / (den.unsqueeze(-1) + eps)
        z = decay_T * z0 + k_dec.sum(2)  # (B, H, D)
    if output_final_state:
        return o, ((S, z) if normalize else S)
    return o


def gated_linear_attention_chunked(
    q, k, v, g, normalize=False, initial_state=None, output_final_state=False, eps=1e-6,
    chunk_size=64,
):  # fmt: skip
    """Decay mask inside chunks of C tokens, decayed state across. O(T*C*(D+E) + T*D*E) time.

    Every exponent is a sum of log-gates inside one chunk, so nothing underflows however long T.
    """
    vector = check_gated_inputs(q, k, v, g)
    chunk_size = check_positive("chunk_size", chunk_size)
    S, z = check_causal_inputs(q, k, v, normalize, initial_state)
    outs = []
    for start in range(0, q.shape[2], chunk_size):
        end = min(start + chunk_size, q.shape[2])
        q_c, k_c, v_c = q[:, :, start:end], k[:, :, start:end], v[:, :, start:end]  # (B,H,C,*)
        g_c = g[:, :, start:end]  # (B, H, C[, D])
        scores = decay_masked_scores(q_c, k_c, g_c)  # (B, H, C, C) intra-chunk
        cum = torch.cumsum(g_c, dim=2)  # (B, H, C[, D]): decay from the chunk start
        total = cum[:, :, -1:]  # (B, H, 1[, D])
        decay_q = torch.exp(cum) if vector else torch.exp(cum).unsqueeze(-1)  # (B, H, C, D|1)
        o_c = scores @ v_c + (q_c * decay_q) @ S  # intra + inter (decayed earlier state)
        after = torch.exp(total - cum)  # (B, H, C[, D])
        k_dec = k_c * (after if vector else after.unsqueeze(-1))  # (B, H, C, D)
        decay_c = torch.exp(total.squeeze(2))  # (B, H[, D])
        decay_c = decay_c if vector else decay_c.unsqueeze(-1)  # (B, H, D or 1)
        if normalize:
            den = scores.sum(-1) + ((q_c * decay_q) * z.unsqueeze(2)).sum(-1)  # (B, H, C)
            check_nonnegative(NORMALIZER, den)
            o_c = o_c / (den.unsqueeze(-1) + eps)
            z = decay_c * z + k_dec.sum(2)  # (B, H, D)
        S = decay_c.unsqueeze(-1) * S + k_dec.transpose(-1, -2) @ v_c  # (B, H, D, E)
        outs.append(o_c)
    o = torch.cat(outs, dim=2) if outs else v.new_zeros(v.shape)  # (B, H, T, E)
    if output_final_state:
        return o, ((S, z) if normalize else S)
    return o


def gated_linear_attention_step(q_t, k_t, v_t, g_t, state, normalize=False, eps=1e-6):
    """One decode step: returns (o_t (B, H, E), new state). g_t is (B, H) or (B, H, D)."""
    check_step_inputs(q_t, k_t, v_t, state, normalize)
    check_log_gate_shape(q_t, g_t, "g_t", "B H")
    o, state = gated_linear_attention_recurrent(
        q_t.unsqueeze(2), k_t.unsqueeze(2), v_t.unsqueeze(2), g_t.unsqueeze(2),
        normalize=normalize, initial_state=state, output_final_state=True, eps=eps,
    )  # fmt: skip
    return o[:, :, 0], state


class GatedLinearAttention(nn.Module):
    """Causal multi-head linear attention with a forget gate: a mixer (B, T, C) -> (B, T, C).

    gate: "none" (a = 1: lesson 03's state, unnormalized), "fixed" (RetNet decay per head),
    "scalar" (data-dependent, one gate per head and step) or "vector" (one per key channel).
    q, k go through elu+1; no normalizer, as in GLA/RetNet, but a per-head RMS norm on the
    output instead, for every gate, so the gate is the only difference. Runs the chunked form.
    """

    GATES = ("none", "fixed", "scalar", "vector")

    def __init__(self, d_model: int, n_heads: int, gate: str = "scalar", chunk_size: int = 64):
        super().__init__()
        if gate not in self.GATES:
            raise ValueError(f"gate must be one of {self.GATES}, got {gate!r}")
        d_model, n_heads = check_positive("d_model", d_model), check_positive("n_heads", n_heads)
        chunk_size = check_positive("chunk_size", chunk_size)
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.gate, self.n_heads, self.chunk_size = gate, n_heads, chunk_size
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.norm = nn.RMSNorm(self.head_dim)
        if gate in ("scalar", "vector"):
            width = n_heads if gate == "scalar" else d_model
            self.gate_proj = nn.Linear(d_model, width)
        # a_t = sigmoid(W x + b + 3)^(1/16) starts near 0.997 (slow forgetting). The 3 is a
        # constant, not a bias, so a model's weight init (TinyLM zeros every bias) cannot reset it.
        self.gate_offset = 3.0

    def log_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Log-gates for x (B, T, C): (B, H, T) for fixed/scalar, (B, H, T, D) for vector."""
        B, T, _ = x.shape
        if self.gate == "none":
            return x.new_zeros(B, self.n_heads, T)
        if self.gate == "fixed":
            return fixed_decay_log_gates(self.n_heads, T, B, x.dtype).to(x.device)
        # GLA's gate: log a = logsigmoid(W x + b + 3) / 16, a in (0, 1), gradients well behaved
        g = nn.functional.logsigmoid(self.gate_proj(x) + self.gate_offset) / 16  # (B, T, H|C)
        if self.gate == "scalar":
            return g.transpose(1, 2)  # (B, H, T)
        return g.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_module_input(self, x, self.qkv.in_features)
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = nn.functional.elu(q) + 1, nn.functional.elu(k) + 1  # (B, H, T, D)
        q = q / math.sqrt(self.head_dim)
        o = gated_linear_attention_chunked(q, k, v, self.log_gates(x), chunk_size=self.chunk_size)
        o = self.norm(o)  # (B, H, T, D)
        return self.out(o.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


def selective_copying_batch(batch, n_tokens=8, T=64, vocab=16, generator=None, span=None):
    """Selective copying (Gu & Dao 2023, Mamba, sec. 3.1): remember the n data tokens scattered
    among noise, then write them in order.

    Token 0 is noise, 1 the "go" marker, 2 .. vocab-1 data. The sequence is T noise-or-data
    tokens, the marker, then the n data tokens in order; the model predicts the next token and
    the loss counts only the n answers. Returns (inputs, targets, loss_mask), each (B, T + n).
    span: the data lie among the first `span` of the T positions (default all T); span=n_tokens
    puts them first, then T - n noise tokens: copying across a gap of at least T - n + 1.
    """
    batch, n_tokens, T = (
        check_positive(n, x) for n, x in (("batch", batch), ("n_tokens", n_tokens), ("T", T))
    )
    if check_count("vocab", vocab) < 3:
        raise ValueError(
            f"vocab must be >= 3 (0 noise, 1 the marker, data 2 .. vocab-1), got {vocab}"
        )
    span = T if span is None else span
    if not n_tokens <= span <= T:
        raise ValueError(f"span must be between n_tokens={n_tokens} and T={T}, got {span}")
    data = torch.randint(2, vocab, (batch, n_tokens), generator=generator)  # (B, n)
    pos = torch.rand(batch, span, generator=generator).argsort(-1)[:, :n_tokens].sort(-1).values
    seq = torch.zeros(batch, T, dtype=torch.long)  # noise everywhere
    seq.scatter_(1, pos, data)
    marker = torch.ones(batch, 1, dtype=torch.long)
    full = torch.cat([seq, marker, data], dim=1)  # (B, T + 1 + n)
    inputs, targets = full[:, :-1], full[:, 1:]  # next-token prediction
    loss_mask = torch.zeros_like(targets, dtype=torch.bool)
    loss_mask[:, T:] = True  # the n answer positions (after the marker)
    return inputs, targets, loss_mask
