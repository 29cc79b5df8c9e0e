"""A small vision model for the MLLA ablation, and its data (lesson 05).

The ablation itself (its rows, the paper's numbers, the runner) is
`lintutor.experiments.mlla_ablation`.

Data: scikit-learn's bundled handwritten digits (1,797 images of 8 x 8, 10 classes; no download),
cut into a 4 x 4 grid of 2 x 2 patches: 16 tokens in raster order.

Model: linear patch embedding (no conv stem: it would leak position through zero padding), two
blocks of width 64, mean pool, linear head. Each block is x + attention(LN x), x + MLP(LN x), and
the attention sub-block is plain non-causal multi-head linear attention (elu+1, normalized),
unless one `Factors` switch changes it, one at a time as in Han et al. 2024, Tables 1 and 2:

    input_gate   v_i <- Delta_i * v_i, Delta_i = softplus(W x_i + b) per channel     (Table 1)
    forget_gate  S_i = a_i S_{i-1} + k_i v_i^T, a_i = exp(-Delta_i^h exp(A_h)): causal,
                 a decay in raster order (lintutor.gated, scalar gate per head)        (Table 1)
    shortcut     o_i <- o_i + D * v_i                                                   (Table 1)
    normalize    False: o_i = q_i (sum_j k_j v_j^T) / n, no denominator                 (Table 1)
    n_heads      1: single head                                                          (Table 1)
    block        "mlla": Mamba's sub-block design, in_proj -> DWConv3x3 -> SiLU -> attention,
                 times SiLU(act_proj x), out_proj (as MLLA's block; its conv sees position)
    ape, lepe, cpe, rope   one positional encoding each (as lintutor.mlla)              (Table 2)

A permutation of the tokens (`perm`) is the same as shuffling the image's patches: everything
that knows position does so through the token index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lintutor.gated import gated_linear_attention_parallel
from lintutor.mlla import _grid, _tokens, mlla_attention, rope_2d

GRID = 4  # 4 x 4 tokens
PATCH = 2  # of 2 x 2 pixels


def digits(test_size: int = 497, seed: int = 0):
    """(x_train, y_train, x_test, y_test): images (n, 1, 8, 8) in [0, 1], labels (n,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    test, train = order[:test_size], order[test_size:]
    return x[train], y[train], x[test], y[test]


def patchify(images: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(b, 1, height, width) -> (b, n, patch * patch) tokens in raster order."""
    b, c, height, width = images.shape
    x = images.reshape(b, c, height // patch, patch, width // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (height // patch) * (width // patch), -1)


@dataclass(frozen=True)
class Factors:
    """The switches of the attention sub-block; the defaults are the plain baseline."""

    input_gate: bool = False
    forget_gate: bool = False
    shortcut: bool = False
    normalize: bool = True
    n_heads: int = 4
    block: str = "linear"  # or "mlla"
    ape: bool = False
    lepe: bool = False
    cpe: bool = False
    rope: bool = False


BASELINE = Factors()


class AblationAttention(nn.Module):
    """The attention sub-block with every switch of `Factors`: tokens (b, n, c) -> (b, n, c)."""

    def __init__(self, dim: int, f: Factors):
        super().__init__()
        self.f, self.dim = f, dim
        if f.block == "mlla":  # Mamba's design: in_proj -> DWConv -> SiLU, gated output
            self.in_proj = nn.Linear(dim, dim)
            self.act_proj = nn.Linear(dim, dim)
            self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        if f.input_gate:
            self.delta_proj = nn.Linear(dim, dim)
        if f.forget_gate:
            self.gate_proj = nn.Linear(dim, f.n_heads)
            self.A_log = nn.Parameter(torch.zeros(f.n_heads))
        if f.shortcut:
            self.D = nn.Parameter(torch.ones(dim))
        if f.lepe:
            self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, (b, n, c), H = self.f, x.shape, self.f.n_heads
        if f.block == "mlla":
            gate = F.silu(self.act_proj(x))
            x = F.silu(_tokens(self.dwc(_grid(self.in_proj(x), GRID, GRID))))
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (b, n, c) each
        q, k = F.elu(q) + 1, F.elu(k) + 1
        v_in = v
        if f.input_gate:
            v = v * F.softplus(self.delta_proj(x))  # Delta_i * v_i

        def heads(t):
            return t.reshape(b, n, H, c // H).transpose(1, 2)  # (b, H, n, c/H)

        q_rope = k_rope = None
        if f.rope:
            q_rope, k_rope = heads(rope_2d(q, GRID, GRID)), heads(rope_2d(k, GRID, GRID))
        q, k, v = heads(q), heads(k), heads(v)
        if f.forget_gate:  # causal recurrence in raster order with a per-head decay
            delta = F.softplus(self.gate_proj(x)).transpose(1, 2)  # (b, H, n)
            g = -delta * torch.exp(self.A_log).view(1, H, 1)  # log a_i = Delta_i A, A < 0
            o = gated_linear_attention_parallel(q, k, v, g, normalize=f.normalize)
        elif f.normalize:
            o = mlla_attention(q, k, v, q_rope, k_rope)
        else:
            kv = ((k if k_rope is None else k_rope).transpose(-1, -2) / n) @ v  # (b, H, D, E)
            o = (q if q_rope is None else q_rope) @ kv
        o = o.transpose(1, 2).reshape(b, n, c)  # (b, n, c)
        if f.shortcut:
            o = o + self.D * v_in
        if f.lepe:
            o = o + _tokens(self.lepe(_grid(v_in, GRID, GRID)))
        if f.block == "mlla":
            o = o * gate
        return self.out_proj(o)


class AblationBlock(nn.Module):
    """[x + CPE(x)]; x + attention(LN x); [x + CPE(x)]; x + MLP(LN x)."""

    def __init__(self, dim: int, f: Factors, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = AblationAttention(dim, f)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )
        self.cpe = f.cpe
        if f.cpe:
            self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x):
        if self.cpe:
            x = x + _tokens(self.cpe1(_grid(x, GRID, GRID)))
        x = x + self.attn(self.norm1(x))
        if self.cpe:
            x = x + _tokens(self.cpe2(_grid(x, GRID, GRID)))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patches -> linear embedding [+ APE] -> blocks -> LN -> mean pool -> classes."""

    def __init__(self, f: Factors = BASELINE, dim: int = 64, depth: int = 2, n_classes: int = 10):
        super().__init__()
        self.f = f
        self.embed = nn.Linear(PATCH * PATCH, dim)
        if f.ape:
            self.ape = nn.Parameter(0.02 * torch.randn(1, GRID * GRID, dim))
        self.blocks = nn.ModuleList(AblationBlock(dim, f) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, images: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (b, n_classes); `perm` (n,) shuffles the patches before anything sees them."""
        x = patchify(images)  # (b, n, 4)
        if perm is not None:
            x = x[:, perm]
        x = self.embed(x)  # (b, n, dim)
        if self.f.ape:
            x = x + self.ape
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


def train_classifier(model, data, epochs=30, lr=3e-3, batch=64, seed=0, weight_decay=0.05,
                     progress=True, desc="training"):  # fmt: skip
    """AdamW with a cosine schedule on (x_train, y_train); returns the final training loss.

    progress: a bar over the steps (`lintutor.progress.bar`; $LINTUTOR_PROGRESS=off hides it),
    with the last loss after each epoch. It changes nothing else: same seed, same model.
    """
    from lintutor.progress import bar as progress_bar

    x_train, y_train = data[0], data[1]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(y_train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss = float("nan")
    bar = progress_bar(total=steps, desc=desc, disable=not progress)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(y_train), generator=g)
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                batch_loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                opt.zero_grad()
                batch_loss.backward()
                opt.step()
                sched.step()
                loss = batch_loss.item()
                bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    finally:
        bar.close()
    return loss


@torch.no_grad()
def accuracy(model, x, y, perm=None, batch=512) -> float:
    """Top-1 accuracy in %, optionally with the patches shuffled by `perm`."""
    model.eval()
    right = 0
    for i in range(0, len(y), batch):
        right += int((model(x[i : i + batch], perm).argmax(-1) == y[i : i + batch]).sum())
    return 100.0 * right / len(y)
