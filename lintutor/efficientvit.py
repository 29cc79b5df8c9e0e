"""EfficientViT's multi-scale ReLU linear attention (Cai et al., ICCV 2023; lesson 06).

ReLU linear attention, per head, over the n = height * width tokens of a feature map:

    O_i = ReLU(Q_i) (sum_j ReLU(K_j)^T V_j) / (ReLU(Q_i) (sum_j ReLU(K_j)^T) + eps)

Padding V with a ones column ([V, 1], shape (n, E + 1)) turns numerator and denominator into
one product: ReLU(Q) (ReLU(K)^T [V, 1]) has the numerator in its first E columns and the
denominator in the last. Multi-scale tokens: q, k, v are also aggregated by a depthwise s x s
conv followed by a grouped 1x1 conv (one group per head and per q/k/v), and each scale's heads
attend on their own; the outputs are concatenated and projected.

As the released code computes it (mit-han-lab/efficientvit, efficientvit/models/nn/ops.py):
- LiteMLA: eps = 1e-15; qkv is a 1x1 conv without bias or norm; the channels of one head are
  [q (dim) | k (dim) | v (dim)]; the aggregation's grouped 1x1 conv has groups = 3 * heads;
  scales default to (5,) (the paper's figure draws 3x3 and 5x5); proj is a 1x1 conv + BatchNorm;
- the linear form pads V with ones and upcasts float16 to float32 first (bfloat16 is upcast
  only before the division); it is used when height * width > dim, else the quadratic form;
- EfficientViTBlock: x + LiteMLA(x), then x + MBConv(x), MBConv = 1x1 expand (x4, bias,
  Hardswish), depthwise 3x3 (bias, Hardswish), 1x1 project (no bias, BatchNorm).

Layout: images stay (B, channels, height, width); `image_to_heads` turns q, k, v into
(B, H, T, D) tokens once, `heads_to_image` turns the output back. H counts the heads of every
scale: heads * (1 + len(scales)).
Left out: autocast handling on GPU, the released option of norms/activations on qkv, the
backbone's stages and the segmentation head (see `lintutor.segmentation` for the toy model).
Not Microsoft's CVPR 2023 "EfficientViT" (cascaded group attention), a different paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lintutor._validate import check_positive, check_shapes
from lintutor.featuremaps import relu

EPS = 1e-15  # LiteMLA's eps (the forms below spell it out, so their source stands alone)


def relu_linear_attention(q, k, v, eps=1e-15):
    """ReLU(Q) (ReLU(K)^T [V, 1]): numerator and denominator from one matmul.

    q, k (B, H, T, D) / (B, H, S, D) are raw (ReLU is applied here), v (B, H, S, E); float16 is
    computed in float32, bfloat16 divided in float32, as released. O((T + S) * D * E) time,
    O(D * E) memory. Returns (B, H, T, E) in the input dtype.
    """
    check_shapes(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    dtype = q.dtype
    if dtype == torch.float16:  # the released code computes half precision in float32
        q, k, v = q.float(), k.float(), v.float()
    q, k = relu(q), relu(k)
    v1 = F.pad(v, (0, 1), value=1.0)  # (B, H, S, E + 1): V with a ones column
    kv = k.transpose(-1, -2) @ v1  # (B, H, D, E + 1): [sum_s k_s v_s^T | sum_s k_s]
    out = q @ kv  # (B, H, T, E + 1): [numerator | denominator]
    if out.dtype == torch.bfloat16:
        out = out.float()
    return (out[..., :-1] / (out[..., -1:] + eps)).to(dtype)  # (B, H, T, E)


def relu_linear_attention_quadratic(q, k, v, eps=1e-15):
    """The same as a T x S map: (ReLU(Q) ReLU(K)^T / rowsum) V. O(T * S * (D + E)) time and
    O(T * S) memory. Normalized in float32 when the input is half precision, as released."""
    check_shapes(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    scores = relu(q) @ relu(k).transpose(-1, -2)  # (B, H, T, S)
    dtype = scores.dtype
    if dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    weights = scores / (scores.sum(-1, keepdim=True) + eps)  # (B, H, T, S), rows sum to ~1
    return weights.to(dtype) @ v  # (B, H, T, E)


def relu_linear_attention_auto(q, k, v, eps=1e-15):
    """The released switch: the quadratic form when the token count T <= head dim D (its
    T x T map is then no larger than the D x (E + 1) state), the linear form otherwise."""
    check_shapes(q=(q, "B H T D"), k=(k, "B H S D"), v=(v, "B H S E"))
    if q.shape[2] > q.shape[3]:
        return relu_linear_attention(q, k, v, eps)
    return relu_linear_attention_quadratic(q, k, v, eps)


def image_to_heads(qkv, dim: int):
    """(B, H * 3 * dim, height, width) -> q, k, v, each (B, H, T, dim) with T = height * width.

    The released channel order: head h owns channels [h * 3 * dim, (h + 1) * 3 * dim), first
    its q, then its k, then its v.
    """
    check_positive("dim", dim)
    check_shapes(qkv=(qkv, "B C height width"))
    B, C, height, width = qkv.shape
    if C % (3 * dim):
        raise ValueError(f"qkv: {C} channels are not a multiple of 3 * dim = {3 * dim}")
    x = qkv.reshape(B, C // (3 * dim), 3 * dim, height * width)  # (B, H, 3 * dim, T)
    x = x.transpose(-1, -2)  # (B, H, T, 3 * dim)
    return x[..., :dim], x[..., dim : 2 * dim], x[..., 2 * dim :]  # (B, H, T, dim) each


def heads_to_image(o, height: int, width: int):
    """(B, H, T, E) -> (B, H * E, height, width), channel h * E + e, as the released reshape."""
    check_shapes(o=(o, "B H T E"))
    B, H, T, E = o.shape
    if T != height * width:
        raise ValueError(f"o: T = {T} tokens, but height * width = {height} * {width}")
    return o.transpose(-1, -2).reshape(B, H * E, height, width)


def multi_scale_qkv(qkv, depthwise, pointwise, heads: int):
    """[qkv, pw_s(dw_s(qkv)) for each scale s] concatenated on channels.

    qkv (B, C, height, width) with C = heads * 3 * dim; depthwise: one weight (C, 1, s, s) per
    scale (zero padding s // 2, groups = C); pointwise: one weight (C, dim, 1, 1) per scale
    (groups = 3 * heads: each group mixes the dim channels of one head's q, k or v). No bias.
    Returns (B, C * (1 + n_scales), height, width). O(B * C * height * width * (s^2 + dim)).
    """
    check_shapes(qkv=(qkv, "B C height width"))
    C = qkv.shape[1]
    out = [qkv]
    for dw, pw in zip(depthwise, pointwise):
        s = dw.shape[-1]
        x = F.conv2d(qkv, dw, padding=s // 2, groups=C)  # (B, C, height, width): s x s, per channel
        out.append(F.conv2d(x, pw, groups=3 * heads))  # (B, C, height, width): within a group
    return torch.cat(out, dim=1)  # (B, C * (1 + n_scales), height, width)


class LiteMLA(nn.Module):
    """The released LiteMLA: (B, channels, height, width) -> the same shape.

    attention: "relu" (the released ReLU linear attention, with the switch), "softmax"
    (softmax(q k^T / sqrt(dim)) v instead, for comparison) or "none" (each token keeps its own
    v: no global mixing, the same parameters). scales=() turns the multi-scale tokens off.
    """

    def __init__(self, channels: int, dim: int = 8, scales=(5,), attention="relu", eps=EPS):
        super().__init__()
        if attention not in ("relu", "softmax", "none"):
            raise ValueError(f"attention must be 'relu', 'softmax' or 'none', got {attention!r}")
        if channels % dim:
            raise ValueError(f"channels = {channels} is not a multiple of dim = {dim}")
        self.dim, self.heads, self.attention, self.eps = dim, channels // dim, attention, eps
        self.scales = tuple(scales)
        total = 3 * self.heads * dim
        self.qkv = nn.Conv2d(channels, total, 1, bias=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(total, total, s, padding=s // 2, groups=total, bias=False),
                nn.Conv2d(total, total, 1, groups=3 * self.heads, bias=False),
            )
            for s in self.scales
        )
        self.proj = nn.Sequential(
            nn.Conv2d(self.heads * dim * (1 + len(self.scales)), channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def heads_qkv(self, x):
        """q, k, v (B, H, T, dim) of every scale's heads, before the ReLU."""
        qkv = self.qkv(x)  # (B, heads * 3 * dim, height, width)
        qkv = multi_scale_qkv(
            qkv, [a[0].weight for a in self.aggreg], [a[1].weight for a in self.aggreg], self.heads
        )  # (B, heads * 3 * dim * (1 + n_scales), height, width)
        return image_to_heads(qkv, self.dim)  # (B, H, T, dim) each

    def forward(self, x):
        q, k, v = self.heads_qkv(x)
        if self.attention == "relu":
            o = relu_linear_attention_auto(q, k, v, self.eps)  # (B, H, T, dim)
        elif self.attention == "softmax":  # lesson 01's softmax_attention, fused by torch
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = v
        return self.proj(heads_to_image(o, *x.shape[-2:]))  # (B, channels, height, width)


class MBConv(nn.Module):
    """The block's FFN: 1x1 expand + Hardswish, depthwise k x k + Hardswish, 1x1 project + BN.
    depthwise=False drops the depthwise conv (a plain pointwise FFN)."""

    def __init__(self, channels: int, expand_ratio: float = 4, kernel_size=3, depthwise=True):
        super().__init__()
        mid = round(channels * expand_ratio)
        self.inverted_conv = nn.Sequential(nn.Conv2d(channels, mid, 1), nn.Hardswish())
        self.depth_conv = (
            nn.Sequential(
                nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, groups=mid),
                nn.Hardswish(),
            )
            if depthwise
            else nn.Identity()
        )
        self.point_conv = nn.Sequential(
            nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x):
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class EfficientViTBlock(nn.Module):
    """x + LiteMLA(x) for context, then x + MBConv(x) for local detail."""

    def __init__(
        self,
        channels: int,
        dim: int = 8,
        scales=(5,),
        attention="relu",
        expand_ratio: float = 4,
        depthwise=True,
    ):
        super().__init__()
        self.context = LiteMLA(channels, dim, scales, attention)
        self.local = MBConv(channels, expand_ratio, depthwise=depthwise)

    def forward(self, x):
        x = x + self.context(x)
        return x + self.local(x)
