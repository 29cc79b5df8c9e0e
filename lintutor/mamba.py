"""Mamba's selective SSM, and the same computation as gated linear attention (lesson 05).

Glossary (Mamba's letters, Gu & Dao 2023, eqs. 2 and 4 and Algorithm 2):
    x      (b, T, d)  input, d channels            Delta (b, T, d)  step size, softplus(...) > 0
    A      (d, N)     diagonal state matrix, < 0   B, C  (b, T, N)  input / output projections,
    D      (d,)       skip ("shortcut")                             shared by all d channels
    h      (b, d, N)  hidden state: one N-vector per channel

    A~_t = exp(Delta_t A)                                     (zero-order hold, paper and code)
    B~_t = (Delta_t A)^-1 (exp(Delta_t A) - 1) Delta_t B_t    (zero-order hold: Mamba eq. 4)
    B~_t = Delta_t B_t                                        ("simple": the official scan)
    h_t  = A~_t * h_{t-1} + B~_t x_t,     y_t = C_t . h_t + D * x_t

The paper writes zero-order hold for both A and B; the official `selective_scan_ref`
(state-spaces/mamba, mamba_ssm/ops/selective_scan_interface.py) computes
`deltaB_u = delta * B * u`, the Euler step. They agree to first order in Delta A. Both are here.

As linear attention (Han et al. 2024, §4 and Fig. 1): each channel d is a head with
q_t = C_t, k_s = B_s (N = key dim), v_s = Delta_s x_s (E = 1, the input gate), vector log-gate
g_t = Delta_t[d] A[d] (the forget gate), no normalizer, and D x added as a shortcut. Every
channel shares q and k: one "head" of attention in the paper's sense (one (B, C) pair).
Layout: Mamba's (b, T, d) here, converted to the course's (B, H, T, D) once, in
`mamba_to_gated_linear_attention`. Left out: the hardware-aware parallel scan and complex A.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lintutor._validate import (
    check_dtypes,
    check_module_input,
    check_positive,
    check_shapes,
)
from lintutor.gated import (
    gated_linear_attention_chunked,
    gated_linear_attention_parallel,
    segment_sum,
)

DISCRETIZATIONS = ("simple", "zoh")


def check_ssm_inputs(x=None, delta=None, A=None, B=None, C=None, D=None, initial_state=None,
                     discretization="simple"):  # fmt: skip
    """The selective scan's inputs in Mamba's letters (None: not given): shapes, one floating
    dtype, Delta >= 0 (a softplus) and A <= 0 (-exp(A_log)), and a known discretization."""
    check_shapes(
        x=(x, "b T d"), delta=(delta, "b T d"), A=(A, "d N"), B=(B, "b T N"), C=(C, "b T N"),
        D=(D, "d"), initial_state=(initial_state, "b d N"),
    )  # fmt: skip
    check_dtypes(x=x, delta=delta, A=A, B=B, C=C, D=D, initial_state=initial_state)
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
    if A is not None and A.numel() and bool((A > 0).any()):
        raise ValueError(
            f"A: Mamba's state matrix is <= 0 (A = -exp(A_log)), got a maximum of "
            f"{A.max().item():.3g}: exp(Delta A) > 1 would grow the state at every step"
        )
    if delta is not None and delta.numel() and bool((delta < 0).any()):
        raise ValueError(
            f"delta: step sizes are >= 0 (Delta = softplus(...)), got a minimum of "
            f"{delta.min().item():.3g}"
        )


def discretize(delta, A, B, discretization="simple"):
    """(A~, B~), each (b, T, d, N), from Delta (b, T, d), A (d, N), B (b, T, N). O(T*d*N)."""
    check_ssm_inputs(delta=delta, A=A, B=B, discretization=discretization)
    dA = delta.unsqueeze(-1) * A  # (b, T, d, N): Delta_t A
    A_bar = torch.exp(dA)
    if discretization == "simple":
        B_bar = delta.unsqueeze(-1) * B.unsqueeze(2)  # (b, T, d, N): Delta_t B_t
    else:  # (dA)^-1 (exp(dA) - 1) Delta B; where A = 0 its limit, Delta B
        B_bar = torch.where(A == 0, delta.unsqueeze(-1), torch.expm1(dA) / A) * B.unsqueeze(2)
    return A_bar, B_bar


def selective_scan_recurrent(
    x, delta, A, B, C, D=None, discretization="simple", initial_state=None,
    output_final_state=False,
):  # fmt: skip
    """Mamba's selective scan as a plain loop over t: returns y (b, T, d). O(T*d*N) time.

    With output_final_state=True returns (y, h_T) with h (b, d, N).
    """
    check_ssm_inputs(x, delta, A, B, C, D, initial_state, discretization)
    A_bar, B_bar = discretize(delta, A, B, discretization)  # (b, T, d, N) each
    b, T, d = x.shape
    h = x.new_zeros(b, d, A.shape[1]) if initial_state is None else initial_state  # (b, d, N)
    ys = []
    for t in range(T):
        h = A_bar[:, t] * h + B_bar[:, t] * x[:, t].unsqueeze(-1)  # (b, d, N)
        y_t = (h * C[:, t].unsqueeze(1)).sum(-1)  # (b, d): C_t . h_t per channel
        if D is not None:
            y_t = y_t + D * x[:, t]
        ys.append(y_t)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(x.shape)  # (b, T, d)
    return (y, h) if output_final_state else y


def mamba_to_gated_linear_attention(x, delta, A, B, C, discretization="simple"):
    """The dictionary: q, k (b, d, T, N), v (b, d, T, 1), log-gates g (b, d, T, N).

    One head per channel d: q = C, k = B (ZOH: B times (exp(Delta A) - 1) / (Delta A)),
    v = Delta * x (the input gate), g = Delta * A (the forget gate exp(g) = exp(Delta A)).
    """
    check_ssm_inputs(x, delta, A, B, C, discretization=discretization)
    d = x.shape[2]
    q = C.unsqueeze(1).expand(-1, d, -1, -1)  # (b, d, T, N): every channel reads with C
    k = B.unsqueeze(1).expand(-1, d, -1, -1)  # (b, d, T, N): every channel writes with B
    g = (delta.unsqueeze(-1) * A).transpose(1, 2)  # (b, d, T, N): log of exp(Delta A)
    if discretization == "zoh":  # ZOH's B~ / (Delta B) = (exp(g) - 1) / g, 1 where g = 0
        k = k * torch.where(g == 0, 1.0, torch.expm1(g) / g)
    v = (delta * x).transpose(1, 2).unsqueeze(-1)  # (b, d, T, 1): input gate Delta times x
    return q, k, v, g


def selective_scan_as_linear_attention(
    x, delta, A, B, C, D=None, discretization="simple", initial_state=None,
    output_final_state=False, chunk_size=None,
):  # fmt: skip
    """The selective scan computed as gated linear attention (no normalizer) + shortcut D x.

    Masked-attention form by default (O(T^2*d*N)); chunk_size=C runs the chunked form instead.
    Same arguments and outputs as `selective_scan_recurrent`.
    """
    check_ssm_inputs(x, delta, A, B, C, D, initial_state, discretization)
    chunk_size = None if chunk_size is None else check_positive("chunk_size", chunk_size)
    q, k, v, g = mamba_to_gated_linear_attention(x, delta, A, B, C, discretization)
    S0 = None if initial_state is None else initial_state.unsqueeze(-1)  # (b, d, N, 1)
    kwargs = dict(normalize=False, initial_state=S0, output_final_state=True)
    if chunk_size is None:
        o, S = gated_linear_attention_parallel(q, k, v, g, **kwargs)  # (b, d, T, 1)
    else:
        o, S = gated_linear_attention_chunked(q, k, v, g, chunk_size=chunk_size, **kwargs)
    y = o.squeeze(-1).transpose(1, 2)  # (b, T, d)
    if D is not None:
        y = y + D * x  # the shortcut
    return (y, S.squeeze(-1)) if output_final_state else y


def mamba_attention_matrix(delta, A, B, C, discretization="simple"):
    """Mamba's implicit attention, alpha (b, d, T, T): y = alpha @ x + D x per channel.

    alpha[d, t, s] = sum_n C_t[n] B~_s[d, n] exp(A[d, n] (Delta_{s+1} + ... + Delta_t)[d]),
    zero for s > t (Ali et al. 2024, "The Hidden Attention of Mamba Models").
    """
    check_ssm_inputs(delta=delta, A=A, B=B, C=C, discretization=discretization)
    _, B_bar = discretize(delta, A, B, discretization)  # (b, T, d, N)
    G = segment_sum((delta.unsqueeze(-1) * A).permute(0, 2, 3, 1))  # (b, d, N, T, T)
    alpha = torch.einsum("btn,bdnts,bsdn->bdts", C, torch.exp(G), B_bar)  # (b, d, T, T)
    return alpha


class MambaMixer(nn.Module):
    """A Mamba-1 layer as in mamba-minimal: in_proj -> causal conv1d -> SiLU -> selective SSM,
    gated by SiLU(z), out_proj. Maps (b, T, d_model) -> (b, T, d_model).

    Initialised as the official code does: A = -[1 .. N] per channel (S4D-real), Delta's bias so
    that softplus(bias) is log-uniform in [1e-3, 1e-1], D = 1. `ssm_inputs(x)` returns the
    (x, Delta, A, B, C, D) its SSM sees, for `mamba_attention_matrix`.
    """

    def __init__(self, d_model: int, n_heads: int = 1, d_state: int = 16, expand: int = 2,
                 d_conv: int = 4):  # fmt: skip
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("d_state", d_state),
                            ("expand", expand), ("d_conv", d_conv)):  # fmt: skip
            check_positive(name, value)
        d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # (d, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def ssm_inputs(self, x: torch.Tensor):
        """(u, Delta, A, B, C, D, z) for x (b, T, d_model); u, Delta, z (b, T, d_inner)."""
        check_module_input(self, x, self.in_proj.in_features, "b T C")
        T = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (b, T, d_inner) each
        u = self.conv1d(u.transpose(1, 2))[..., :T].transpose(1, 2)  # causal: drop the tail
        u = F.silu(u)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (b, T, d_inner), the input gate
        A = -torch.exp(self.A_log)  # (d_inner, N), negative: exp(Delta A) in (0, 1)
        return u, delta, A, B, C, self.D, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if check_module_input(self, x, self.in_proj.in_features, "b T C")["T"] == 0:
            return x.new_zeros(x.shape)  # no tokens (the conv cannot run on an empty sequence)
        u, delta, A, B, C, D, z = self.ssm_inputs(x)
        y = selective_scan_as_linear_attention(u, delta, A, B, C, D, chunk_size=64)
        return self.out_proj(y * F.silu(z))  # (b, T, d_model)
