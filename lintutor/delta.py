"""The delta rule: a memory that corrects what it stores (lesson 09). DeltaNet and Gated DeltaNet.

    v_old = S_{t-1}^T k_t                          what the memory returns for k_t now
    S_t   = S_{t-1} + beta_t k_t (v_t - v_old)^T    the erase-then-write form of
    S_t   = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t   = scale * S_t^T q_t                       state S (D, E) per head, as in lessons 03-04

One step of gradient descent on ||S^T k_t - v_t||^2 / 2 with learning rate beta_t (the Widrow-Hoff
rule; Schlag, Irie & Schmidhuber 2021, "Linear Transformers Are Secretly Fast Weight Programmers",
where the papers write it for a state of shape (E, D)): it erases what the memory says about
k_t, then writes v_t. With unit keys and beta in
[0, 2], I - beta k k^T has norm <= 1, so nothing the state holds can grow. Gated DeltaNet (Yang,
Kautz & Hatamizadeh, ICLR 2025) multiplies the old state by a gate a_t = exp(g_t) first:
S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, g (B, H, T) log-gates <= 0 as in
lesson 04 (one gate per head and token).

Forms, one signature (the gated ones, in `lintutor.delta_gated`, take g after beta):
- `_recurrent`: the definition, token by token. O(T*D*E) time, O(D*E) memory.
- `_chunked`:   chunks of C tokens (Yang et al., NeurIPS 2024, "Parallelizing Linear Transformers
                with the Delta Rule over Sequence Length"). The transitions I - beta k k^T
                do not commute, so lesson 03's masked matmul does not apply; `ut_transform` turns a
                chunk into one unit lower triangular solve, then matmuls. O(T*C*(C+D+E) + T*D*E).
- `_step`:      one decode step from a state.
`inverse_by_powers` is the short way to invert a chunk's I + A that floating point punishes
(lesson 09 shows it); `DeltaNetAttention` is the mixer built from the forms.

Conventions (fla's `naive_recurrent_gated_delta_rule`, in our layout): q, k (B, H, T, D), v
(B, H, T, E), beta (B, H, T), state (B, H, D, E). The forms do not normalize k: the mixer does
(L2 norm, as DeltaNet and Gated DeltaNet do); `scale` multiplies the read-out (fla's default is
D^-0.5, ours is 1). Arithmetic runs in float32 for float32/bf16/fp16 inputs and in float64 for
float64; o comes back in v's dtype, the state in the compute dtype. Left out: fla's short
convolutions and output gates, and the vector (per key channel) gates of Kimi Delta Attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lintutor._validate import check_positive, check_shapes
from lintutor.gated import segment_sum


def check_delta_inputs(q, k, v, beta, g=None, initial_state=None):
    """Check every form's inputs (shapes, float dtypes, one device, g <= 0) by name; returns the
    compute dtype: float64 if any input is float64, else float32."""
    check_shapes(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"), beta=(beta, "B H T"))
    named = {"q": q, "k": k, "v": v, "beta": beta}
    if g is not None:
        check_shapes(q=(q, "B H T D"), g=(g, "B H T"))
        named["g"] = g
    if initial_state is not None:
        check_shapes(q=(q, "B H T D"), v=(v, "B H T E"), initial_state=(initial_state, "B H D E"))
        named["initial_state"] = initial_state
    for name, x in named.items():
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name}: expected a tensor on {q.device} like q, got {x.device}")
    if g is not None and g.numel() and bool((g > 0).any()):
        raise ValueError(
            f"g: log-gates must be <= 0 (a gate a = exp(g) in (0, 1]), got max {g.max().item():.3g}"
        )
    return torch.float64 if torch.float64 in {x.dtype for x in named.values()} else torch.float32


def start_state(q, v, initial_state, dtype):
    """The state to start from, (B, H, D, E) in `dtype`: initial_state, or zeros when None."""
    B, H, _, D = q.shape
    if initial_state is None:
        return torch.zeros(B, H, D, v.shape[-1], dtype=dtype, device=q.device)
    return initial_state.to(dtype)


def delta_rule_recurrent(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
    """The definition: S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T. O(T*D*E) time."""
    dtype = check_delta_inputs(q, k, v, beta, None, initial_state)
    S = start_state(q, v, initial_state, dtype)  # (B, H, D, E)
    outs = []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = (x[:, :, t].to(dtype) for x in (q, k, v))  # (B, H, D), (B, H, D), (B, H, E)
        b_t = beta[:, :, t].to(dtype)[..., None, None]  # (B, H, 1, 1)
        v_old = torch.einsum("bhd,bhde->bhe", k_t, S)  # (B, H, E): what S returns for k_t
        S = S + b_t * k_t.unsqueeze(-1) * (v_t - v_old).unsqueeze(-2)  # erase, then write
        outs.append(scale * torch.einsum("bhd,bhde->bhe", q_t, S))  # (B, H, E)
    o = (torch.stack(outs, dim=2) if outs else v.new_zeros(v.shape)).to(v.dtype)  # (B, H, T, E)
    return (o, S) if output_final_state else o


def ut_transform(k, v, beta, g=None):
    """(w, u) of one chunk: w = T (gamma * k), u = T v, T = (I + A)^-1 diag(beta). O(C^2 (C+D+E)).

    k (B, H, C, D), v (B, H, C, E), beta (B, H, C), g (B, H, C) or None. A is strictly lower
    triangular, A[t, s] = beta_t (k_t . k_s) gamma_t / gamma_s (s < t), gamma_t = exp(g_1 + ...
    + g_t) the decay from the chunk start. Then for a state S entering the chunk, the values the
    delta rule actually writes are u - w S: the WY representation of the chunk's product of
    transitions, built with one unit lower triangular solve (the "UT transform"), in float32 at
    least. fla's chunk kernels compute the same (fla/ops/delta_rule/README.md derives it).
    """
    dtype = torch.promote_types(k.dtype, torch.float32)
    k, v, beta = k.to(dtype), v.to(dtype), beta.to(dtype)
    C = k.shape[-2]
    A = (beta.unsqueeze(-1) * k) @ k.transpose(-1, -2)  # (B, H, C, C): beta_t k_t . k_s
    gamma = torch.ones_like(beta)  # (B, H, C)
    if g is not None:
        A = A * torch.exp(segment_sum(g.to(dtype)))  # decay from s to t; exp(-inf) = 0 above
        gamma = torch.exp(torch.cumsum(g.to(dtype), dim=-1))
    A = A.tril(-1)  # strictly lower: token t is corrected by the tokens before it
    eye = torch.eye(C, dtype=dtype, device=k.device)
    # T w = beta * gamma * k and T u = beta * v in one solve (no need to form T itself)
    rhs = beta.unsqueeze(-1) * torch.cat([gamma.unsqueeze(-1) * k, v], dim=-1)  # (B, H, C, D+E)
    wu = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)
    return wu.split([k.shape[-1], v.shape[-1]], dim=-1)  # (B, H, C, D), (B, H, C, E)


def delta_rule_chunked(
    q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0, chunk_size=64
):
    """Chunks of C tokens through the UT transform; any T. O(T*C*(C+D+E) + T*D*E) time.

    Per chunk: (w, u) from `ut_transform`, new = u - w S (the values the rule writes, given
    the state S of the earlier chunks), o = q S + tril(q k^T) new, S <- S + k^T new.
    """
    dtype = check_delta_inputs(q, k, v, beta, None, initial_state)
    check_positive("chunk_size", chunk_size)
    S = start_state(q, v, initial_state, dtype)  # (B, H, D, E)
    T = q.shape[2]
    outs = []
    for start in range(0, T, chunk_size):
        c = slice(start, min(start + chunk_size, T))
        q_c, k_c, v_c = (x[:, :, c].to(dtype) for x in (q, k, v))  # (B, H, C, D|E)
        w, u = ut_transform(k_c, v_c, beta[:, :, c].to(dtype))  # (B, H, C, D), (B, H, C, E)
        new = u - w @ S  # (B, H, C, E): the values the delta rule writes in this chunk
        scores = (q_c @ k_c.transpose(-1, -2)).tril()  # (B, H, C, C), s <= t
        outs.append(scale * (q_c @ S + scores @ new))  # earlier chunks + this chunk
        S = S + k_c.transpose(-1, -2) @ new  # (B, H, D, E)
    o = (torch.cat(outs, dim=2) if outs else v.new_zeros(v.shape)).to(v.dtype)  # (B, H, T, E)
    return (o, S) if output_final_state else o


def delta_rule_step(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """One decode step: (o_t (B, H, E), new state (B, H, D, E)). O(D*E) per sequence.

    q_t, k_t (B, H, D), v_t (B, H, E), beta_t (B, H); state (B, H, D, E) or None (zeros).
    """
    check_shapes(q_t=(q_t, "B H D"), k_t=(k_t, "B H D"), v_t=(v_t, "B H E"), beta_t=(beta_t, "B H"))
    dtype = check_delta_inputs(*(x.unsqueeze(2) for x in (q_t, k_t, v_t, beta_t)), None, state)
    S = start_state(q_t.unsqueeze(2), v_t.unsqueeze(2), state, dtype)  # (B, H, D, E)
    out_dtype = v_t.dtype
    q_t, k_t, v_t, b_t = (x.to(dtype) for x in (q_t, k_t, v_t, beta_t))
    v_old = torch.einsum("bhd,bhde->bhe", k_t, S)  # (B, H, E): what S returns for k_t
    S = S + b_t[..., None, None] * k_t.unsqueeze(-1) * (v_t - v_old).unsqueeze(-2)
    o_t = scale * torch.einsum("bhd,bhde->bhe", q_t, S)  # (B, H, E)
    return o_t.to(out_dtype), S


def inverse_by_powers(A):
    """(I + A)^-1 of a strictly lower triangular (..., C, C) A as (I - A)(I + A^2)(I + A^4)...

    Exact on paper (A^C = 0, so log2(C) factors suffice) and all matmuls, but the powers of A
    grow like binomial coefficients when the keys are alike, and floating point cancels them to
    noise. Shown in lesson 09 beside the triangular solve `ut_transform` uses.
    """
    C = A.shape[-1]
    eye = torch.eye(C, dtype=A.dtype, device=A.device)
    inv, power = eye - A, A @ A  # (I - A), A^2
    n = 2
    while n < C:
        inv = inv @ (eye + power)  # times (I + A^n)
        power = power @ power
        n *= 2
    return inv


class DeltaNetAttention(nn.Module):
    """Causal multi-head attention with a matrix memory: a mixer (B, T, C) -> (B, T, C).

    rule: "delta" (DeltaNet), "gated_delta" (Gated DeltaNet), or the additive controls of
    lesson 09, "linear" (S_t = S_{t-1} + k_t v_t^T) and "gated_linear" (S_t = a_t S_{t-1} +
    k_t v_t^T, lesson 04's scalar gate). Everything but the write is shared: SiLU then L2 norm on
    q and k (DeltaNet's choice), scale D^-0.5, beta_t = sigmoid(w_beta . x_t) per head, the gate
    of lesson 04 (log a = logsigmoid(w . x + b) / 16, one per head), a per-head RMS norm on the
    output. shift_keys=True computes k_t from x_{t-1}, as lesson 03's mixers do, so
    one layer can solve recall. Simplified from fla's layers: no short convolutions, no output
    gate, Gated DeltaNet's gate is lesson 04's and not Mamba-2's. Runs the chunked forms.
    """

    RULES = ("linear", "gated_linear", "delta", "gated_delta")

    def __init__(self, d_model, n_heads, rule="delta", shift_keys=False, chunk_size=64,
                 beta_init=0.5, gate_init=0.997):  # fmt: skip
        super().__init__()
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, got {rule!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        for name, value in (("beta_init", beta_init), ("gate_init", gate_init)):
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        self.rule, self.n_heads, self.chunk_size = rule, n_heads, chunk_size
        self.shift_keys = shift_keys
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.norm = nn.RMSNorm(self.head_dim)
        # fixed offsets (not parameters, so a model's weight init cannot reset them): with zero
        # projections beta_t = beta_init and a_t = gate_init
        self.beta_offset = math.log(beta_init / (1 - beta_init))
        self.gate_offset = math.log(gate_init**16 / (1 - gate_init**16))
        if rule in ("delta", "gated_delta"):
            self.beta_proj = nn.Linear(d_model, n_heads)
        if rule in ("gated_linear", "gated_delta"):
            self.gate_proj = nn.Linear(d_model, n_heads)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, T, C)
        if self.shift_keys:
            k = nn.functional.pad(k, (0, 0, 1, 0))[:, :T]  # k_t = W_k x_{t-1}, k_0 = 0
        split = lambda y: y.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)  # each (B, H, T, D)
        q = nn.functional.normalize(nn.functional.silu(q), dim=-1)  # unit queries
        k = nn.functional.normalize(nn.functional.silu(k), dim=-1)  # unit keys: contraction
        scale = 1 / math.sqrt(self.head_dim)
        g = None
        if self.rule in ("gated_linear", "gated_delta"):
            g = nn.functional.logsigmoid(self.gate_proj(x) + self.gate_offset) / 16  # (B, T, H)
            g = g.transpose(1, 2)  # (B, H, T)
        if self.rule in ("delta", "gated_delta"):
            beta = torch.sigmoid(self.beta_proj(x) + self.beta_offset).transpose(1, 2)  # (B, H, T)
        else:  # the additive write is the delta rule's write without the erase
            beta = None
        o = self._mix(q, k, v, beta, g, scale)  # (B, H, T, D)
        o = self.norm(o)
        return self.out(o.transpose(1, 2).reshape(B, T, C))  # (B, T, C)

    def _mix(self, q, k, v, beta, g, scale):
        from lintutor.delta_gated import gated_delta_rule_chunked  # imports this module
        from lintutor.gated import gated_linear_attention_chunked

        C = self.chunk_size
        if self.rule == "delta":
            return delta_rule_chunked(q, k, v, beta, scale=scale, chunk_size=C)
        if self.rule == "gated_delta":
            return gated_delta_rule_chunked(q, k, v, beta, g, scale=scale, chunk_size=C)
        if g is None:
            g = q.new_zeros(q.shape[:3])  # a = 1: lesson 03's additive state
        return scale * gated_linear_attention_chunked(q, k, v, g, chunk_size=C)
