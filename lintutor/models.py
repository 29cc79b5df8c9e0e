"""A tiny language model with pluggable attention, and its training loop (lessons 02-08).

    x = tok_emb(tokens) + pos_emb(positions)         (B, T, C)
    for each block:  x = x + mixer(norm(x));  x = x + mlp(norm(x))     (pre-norm, as GPT-2)
    logits = head(norm(x))                           (B, T, vocab)

The mixer is softmax attention, linear attention with a feature map (any of causal.py's forms,
or a kernel with the same signature via `attention_fn`), or any module built by a callable
`mixer(d_model, n_heads)`. nanoGPT-like and deliberately small: learned absolute positions, no
dropout, no weight tying. `train` fits a model on batches from `batch_fn(step)` with a loss
only where `loss_mask` is True (e.g. the answers of a recall task) and returns a history.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lintutor.causal import causal_linear_attention_chunked
from lintutor.featuremaps import get_feature_map
from lintutor.linear import linear_attention


class SoftmaxAttention(nn.Module):
    """Multi-head softmax self-attention (lesson 01) through torch's SDPA. O(T^2) per layer.

    shift_keys=True computes k_t from x_{t-1} (a one-token causal shift, the smallest "short
    conv" of H3/Based): a key then carries the token before it, so one layer can do recall.
    """

    def __init__(self, d_model, n_heads, causal=True, shift_keys=False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.causal, self.shift_keys = n_heads, causal, shift_keys
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def project(self, x):
        """q, k, v, each (B, H, T, D), from x (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, T, C)
        if self.shift_keys:
            k = F.pad(k, (0, 0, 1, 0))[:, :T]  # (B, T, C): k_t = W_k x_{t-1}, k_0 = 0
        split = lambda y: y.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        return split(q), split(k), split(v)  # each (B, H, T, D)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.project(x)  # each (B, H, T, D)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, T, D)
        return self.out(o.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class LinearAttention(SoftmaxAttention):
    """Multi-head linear attention: phi(q), phi(k), then a causal form. O(T*D*E) per layer.

    attention_fn(q, k, v, normalize=...) replaces the default chunked form: any callable with
    causal.py's signature (a Triton kernel, the recurrent form, ...). With causal=False the
    non-causal `linear_attention` runs.
    """

    def __init__(self, d_model, n_heads, feature_map="elu1", causal=True, chunk_size=64,
                 normalize=True, attention_fn=None, shift_keys=False):  # fmt: skip
        super().__init__(d_model, n_heads, causal, shift_keys)
        self.phi = get_feature_map(feature_map)
        self.feature_map, self.normalize = feature_map, normalize
        if attention_fn is None:
            if causal:
                attention_fn = functools.partial(
                    causal_linear_attention_chunked, chunk_size=chunk_size
                )
            else:
                attention_fn = linear_attention
        self.attention_fn = attention_fn

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.project(x)  # each (B, H, T, D)
        q, k = self.phi(q), self.phi(k)  # (B, H, T, D') with D' the feature dim
        o = self.attention_fn(q, k, v, normalize=self.normalize)  # (B, H, T, D)
        return self.out(o.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + mixer(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d_model, mixer: nn.Module):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mixer = mixer
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))  # (B, T, C)
        return x + self.mlp(self.norm2(x))  # (B, T, C)


def make_mixer(mixer, d_model, n_heads, **mixer_kwargs) -> nn.Module:
    """The sequence mixer of one block: "softmax", "linear", "delta" or a callable(d, heads).

    "delta" is lesson 09's `DeltaNetAttention` (mixer_kwargs rule="delta", "gated_delta", ...).
    """
    if mixer == "softmax":
        return SoftmaxAttention(d_model, n_heads, **mixer_kwargs)
    if mixer == "linear":
        return LinearAttention(d_model, n_heads, **mixer_kwargs)
    if mixer == "delta":
        from lintutor.delta import DeltaNetAttention

        return DeltaNetAttention(d_model, n_heads, **mixer_kwargs)
    if callable(mixer):
        return mixer(d_model, n_heads, **mixer_kwargs)
    raise ValueError(f"mixer must be 'softmax', 'linear', 'delta' or a callable, got {mixer!r}")


class TinyLM(nn.Module):
    """Token + position embeddings, n_layers pre-norm blocks, logits (B, T, vocab_size).

    mixer_kwargs go to the mixer, e.g. {"feature_map": "taylor2"} for mixer="linear".
    """

    def __init__(self, vocab_size, d_model=64, n_layers=2, n_heads=4, max_len=256,
                 mixer="softmax", mixer_kwargs=None):  # fmt: skip
        super().__init__()
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        kwargs = mixer_kwargs or {}
        self.blocks = nn.ModuleList(
            Block(d_model, make_mixer(mixer, d_model, n_heads, **kwargs)) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(_init_weights)

    def forward(self, tokens):
        B, T = tokens.shape
        if T > self.max_len:
            raise ValueError(f"tokens: sequence length {T} exceeds max_len={self.max_len}")
        pos = torch.arange(T, device=tokens.device)  # (T,)
        x = self.tok_emb(tokens) + self.pos_emb(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.head(self.norm(x))  # (B, T, vocab_size)


def _init_weights(m):
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def masked_loss_and_accuracy(logits, targets, loss_mask):
    """Cross-entropy and accuracy over the positions where loss_mask is True."""
    logits, targets = logits[loss_mask], targets[loss_mask]  # (N, vocab), (N,)
    loss = F.cross_entropy(logits, targets)
    accuracy = (logits.argmax(-1) == targets).float().mean()
    return loss, accuracy


@torch.no_grad()
def evaluate(model, batch) -> dict:
    """{"loss", "accuracy"} of `model` on one batch (inputs, targets, loss_mask), masked."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs, targets, mask = (t.to(device) for t in batch)
    loss, acc = masked_loss_and_accuracy(model(inputs), targets, mask)
    model.train(was_training)
    return {"loss": loss.item(), "accuracy": acc.item()}


def train(model, batch_fn, steps, lr=3e-3, device="cpu", progress=True, eval_fn=None,
          log_every=None, weight_decay=0.1, warmup=0.1, seed=0, desc="training"):  # fmt: skip
    """AdamW with linear warm-up and cosine decay; returns the history.

    batch_fn(step) -> (inputs (B, T) long, targets (B, T) long, loss_mask (B, T) bool).
    Every log_every steps (default steps // 20) the mean training loss and accuracy since the
    last log are recorded, and eval_fn(model) -> dict adds keys "eval_<name>".
    History: {"step": [...], "loss": [...], "accuracy": [...], "eval_*": [...], "seconds": s}.
    Deterministic on CPU for a fixed seed and a deterministic batch_fn.
    """
    import time

    from lintutor.progress import bar as progress_bar

    torch.manual_seed(seed)
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98),
    )  # fmt: skip
    warm = max(1, int(warmup * steps))
    schedule = lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    log_every = log_every or max(1, steps // 20)
    history = {"step": [], "loss": [], "accuracy": []}
    sum_loss = sum_acc = 0.0
    count = 0
    t0 = time.perf_counter()
    bar = progress_bar(range(steps), desc=desc, disable=not progress)
    for step in bar:
        inputs, targets, mask = (t.to(device) for t in batch_fn(step))
        loss, acc = masked_loss_and_accuracy(model(inputs), targets, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        sum_loss, sum_acc, count = sum_loss + loss.item(), sum_acc + acc.item(), count + 1
        if (step + 1) % log_every == 0 or step == steps - 1:
            history["step"].append(step + 1)
            history["loss"].append(sum_loss / count)
            history["accuracy"].append(sum_acc / count)
            sum_loss = sum_acc = 0.0
            count = 0
            if eval_fn is not None:
                for key, value in eval_fn(model).items():
                    history.setdefault(f"eval_{key}", []).append(value)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", acc=f"{history['accuracy'][-1]:.2f}")
    history["seconds"] = time.perf_counter() - t0
    model.eval()
    return history
