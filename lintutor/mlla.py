"""The MLLA block as the released code builds it (Han et al., NeurIPS 2024; lesson 05).

Mamba-Like Linear Attention (LeapLabTHU/MLLA, models/mlla.py, classes RoPE, LinearAttention,
MLLABlock). Non-causal, on a height x width grid of n = height * width tokens, per head:

    phi(x) = elu(x) + 1                                   q = phi(W_q x), k = phi(W_k x), v = x
    o_i    = RoPE(q_i) (sum_j RoPE(k_j)^T v_j) / n  /  (q_i . mean_j k_j + 1e-6)  +  LePE(v)_i

What the released code does that a reader might not expect (read from models/mlla.py):
- no V projection: v is the sub-block's input after in_proj -> DWConv3x3 -> SiLU;
- 2-D RoPE (`rope_2d`) rotates all channels before the head split, and only in the numerator:
  the denominator uses the unrotated q, k, so numerator weights can be negative;
- LePE is a depthwise 3x3 conv on v added to the output; CPE is a depthwise 3x3 conv residual
  before the attention sub-block and another after it;
- the block: x + CPE(x); x + out_proj(attn(SiLU(DWConv(in_proj(LN x)))) * SiLU(act_proj(LN x)));
  x + CPE(x); x + MLP(LN x) with MLP ratio 4. Mamba's design minus the SSM, plus an MLP.

Shapes: tokens (b, n, c) in raster order with n = height * width; heads (b, H, n, c / H).
Left out: drop path, the stem and patch merging of the full network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lintutor._validate import (
    check_count,
    check_heads,
    check_module_input,
    check_positive,
    check_tensors,
)


def rope_2d_angles(height: int, width: int, channels: int, base: float = 10000.0):
    """Rotation angles (height, width, channels / 2) of the official 2-D RoPE.

    The first channels / 4 complex pairs rotate with the row index, the rest with the column
    index, at frequencies base^(-j / k_max), k_max = channels / 4.
    """
    height, width = check_positive("height", height), check_positive("width", width)
    if check_positive("channels", channels) % 4:
        raise ValueError(f"channels must be a multiple of 4 for 2-D RoPE, got {channels}")
    k_max = channels // 4
    theta = 1.0 / (base ** (torch.arange(k_max, dtype=torch.float64) / k_max))  # (k_max,)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cat([rows.unsqueeze(-1) * theta, cols.unsqueeze(-1) * theta], dim=-1)


def rope_2d(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rotate channel pairs (x[2j], x[2j+1]) of tokens x (b, n, c) by their grid angles."""
    check_tensors(x=(x, "b n c"))
    if x.shape[1] != check_count("height", height) * check_count("width", width):
        raise ValueError(
            f"x: shape {tuple(x.shape)} has n = {x.shape[1]} tokens, but the grid has "
            f"height * width = {height} * {width} = {height * width}"
        )
    angles = rope_2d_angles(height, width, x.shape[-1]).reshape(height * width, -1)  # (n, c/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    re, im = x[..., 0::2], x[..., 1::2]  # (b, n, c/2) each
    out = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)  # (b, n, c/2, 2)
    return out.flatten(-2)  # (b, n, c)


def mlla_attention(q, k, v, q_rope=None, k_rope=None, eps=1e-6):
    """MLLA's linear attention: RoPE'd numerator, plain denominator. O(n*D*E) per head.

    q, k (B, H, n, D) are feature-mapped; q_rope, k_rope their rotated copies (None: no RoPE).
    """
    check_mlla_inputs(q, k, v, q_rope, k_rope)
    n = q.shape[2]
    q_rope = q if q_rope is None else q_rope
    k_rope = k if k_rope is None else k_rope
    z = 1.0 / (q @ k.mean(dim=2, keepdim=True).transpose(-1, -2) + eps)  # (B, H, n, 1)
    kv = (k_rope.transpose(-1, -2) / n) @ v  # (B, H, D, E): mean_j k_j v_j^T
    return (q_rope @ kv) * z  # (B, H, n, E)


def mlla_attention_quadratic(q, k, v, q_rope=None, k_rope=None, eps=1e-6):
    """The same as an n x n weight matrix (weights need not be >= 0 with RoPE). O(n^2*(D+E))."""
    check_mlla_inputs(q, k, v, q_rope, k_rope)
    n = q.shape[2]
    q_rope = q if q_rope is None else q_rope
    k_rope = k if k_rope is None else k_rope
    num = q_rope @ k_rope.transpose(-1, -2) / n  # (B, H, n, n)
    den = (q @ k.transpose(-1, -2)).mean(-1, keepdim=True) + eps  # (B, H, n, 1)
    return (num / den) @ v


def check_mlla_inputs(q, k, v, q_rope=None, k_rope=None) -> None:
    """q, k (B, H, n, D), v (B, H, n, E) and the rotated q_rope, k_rope (B, H, n, D) or None, of
    one floating dtype."""
    check_tensors(
        q=(q, "B H n D"), k=(k, "B H n D"), v=(v, "B H n E"), q_rope=(q_rope, "B H n D"),
        k_rope=(k_rope, "B H n D"),
    )  # fmt: skip


def _grid(x, height, width):
    """(b, n, c) tokens -> (b, c, height, width) image for a conv."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


def _tokens(x):
    """(b, c, height, width) -> (b, n, c)."""
    return x.flatten(2).transpose(1, 2)


def check_grid_input(module, x, dim: int, height: int, width: int) -> None:
    """Tokens x (b, n, dim) of a height x width grid, in the module's dtype."""
    check_module_input(module, x, dim, "b n C")
    if x.shape[1] != height * width:
        raise ValueError(
            f"x: shape {tuple(x.shape)} has n = {x.shape[1]} tokens, but the module's grid has "
            f"height * width = {height} * {width} = {height * width}"
        )


class MLLALinearAttention(nn.Module):
    """The released `LinearAttention`: q, k projections, no v projection, ELU+1, RoPE, LePE."""

    def __init__(self, dim: int, height: int, width: int, n_heads: int, rope=True, lepe=True):
        super().__init__()
        check_heads(check_positive("dim", dim), n_heads, "dim")
        if rope:
            rope_2d_angles(height, width, dim)  # checks the grid and dim % 4
        self.height, self.width, self.n_heads = height, width, n_heads
        self.qk = nn.Linear(dim, 2 * dim)
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if lepe else None
        self.rope = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_grid_input(self, x, self.qk.in_features, self.height, self.width)
        b, n, c = x.shape
        H = self.n_heads
        q, k = (F.elu(self.qk(x)) + 1).chunk(2, dim=-1)  # (b, n, c) each, > 0

        def heads(t):
            return t.reshape(b, n, H, c // H).transpose(1, 2)  # (b, H, n, c/H)

        q_rope = k_rope = None
        if self.rope:  # RoPE over all c channels, before the head split
            q_rope = heads(rope_2d(q, self.height, self.width))
            k_rope = heads(rope_2d(k, self.height, self.width))
        o = mlla_attention(heads(q), heads(k), heads(x), q_rope, k_rope)  # (b, H, n, c/H)
        o = o.transpose(1, 2).reshape(b, n, c)  # (b, n, c)
        if self.lepe is not None:
            o = o + _tokens(self.lepe(_grid(x, self.height, self.width)))
        return o


class MLLABlock(nn.Module):
    """The released `MLLABlock` (tokens (b, n, c) -> (b, n, c)); drop path left out."""

    def __init__(self, dim: int, height: int, width: int, n_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        check_heads(check_positive("dim", dim), n_heads, "dim")
        self.height, self.width = height, width
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, dim)
        self.act_proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.attn = MLLALinearAttention(dim, height, width, n_heads)
        self.out_proj = nn.Linear(dim, dim)
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_grid_input(self, x, self.in_proj.in_features, self.height, self.width)
        hw = self.height, self.width
        x = x + _tokens(self.cpe1(_grid(x, *hw)))  # CPE before the attention sub-block
        shortcut = x
        x = self.norm1(x)
        gate = F.silu(self.act_proj(x))  # (b, n, c): Mamba's SiLU(z) branch
        x = F.silu(_tokens(self.dwc(_grid(self.in_proj(x), *hw))))  # Mamba's conv, 2-D here
        x = self.attn(x)  # in place of the selective SSM
        x = shortcut + self.out_proj(x * gate)
        x = x + _tokens(self.cpe2(_grid(x, *hw)))  # CPE after it
        return x + self.mlp(self.norm2(x))
