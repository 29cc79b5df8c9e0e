"""A small decoder LM for lesson 07: pluggable attention, three ways to run it.

    x = tok_emb(tokens) + pos_emb(positions); per block x += mixer(norm(x)); x += mlp(norm(x))

The mixer (`AugmentedAttention`) is softmax, linear (elu+1, normalized, lesson 03) or grouped
(the paper's variant: cosine q, k, relu^2 inside groups, alpha * the state of earlier groups,
alpha starting at 0; `lintutor.linearized`), each optionally plus a conv on V (causal, or the
leaky centred one) and a short causal conv on the input of q and k (H3/Mamba style).

- `forward(tokens)`: the parallel form for training (TinyLM's, so `models.train` trains it).
- `step(token, cache)`: one token, from a cache of O(1) size per layer for the linear kinds:
  (S, z) for linear, (S, the current group's k, v) for grouped, the last P values for the conv,
  the last K-1 inputs for the q/k conv; a KV cache for softmax.
- `verify(tokens, cache, parents)`: N new tokens in one pass from a cache, as a chain (a block of
  draft tokens) or as a tree (node i's parent is parents[i], -1 for the root); returns logits and
  `state_at(i)`, the cache after node i, built from this pass without running the model again.

Every conv window in `verify` is the node's own ancestors ("per-node ancestor windows");
`conv_windows="flattened"` runs the conv over the nodes in their flat order instead, which is
right for a chain and wrong for a tree (siblings leak into each other).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lintutor.causal import causal_linear_attention_chunked, causal_linear_attention_step
from lintutor.featuremaps import elu1
from lintutor.linearized import (
    causal_depthwise_conv,
    centered_depthwise_conv,
    conv_step,
    cosine,
    grouped_linear_attention_parallel,
    grouped_linear_attention_step,
)
from lintutor.measure import time_call
from lintutor.models import TinyLM
from lintutor.verify import attention_verify, tree_layout, writable_kv

ATTENTIONS = ("softmax", "linear", "grouped")
CONVS = (None, "causal", "leaky")


class AugmentedAttention(nn.Module):
    """Softmax / linear / grouped attention, + optional conv on V, + optional q/k short conv.

    conv_size = 2P + 1 taps, zero-initialised (the official code zero-initialises it too);
    the causal conv uses P + 1 of them (the current token and P past ones).
    """

    def __init__(self, d_model, n_heads, attention="grouped", conv="causal", conv_size=7,
                 group_size=16, qk_conv=0, eps=1e-6):  # fmt: skip
        super().__init__()
        if attention not in ATTENTIONS or conv not in CONVS:
            raise ValueError(f"attention in {ATTENTIONS}, conv in {CONVS}; got {attention!r}, "
                             f"{conv!r}")  # fmt: skip
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.attention, self.conv, self.eps = n_heads, attention, conv, eps
        self.group_size, self.qk_conv = group_size, qk_conv
        self.qk = nn.Linear(d_model, 2 * d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        if conv is not None:
            self.conv_weight = nn.Parameter(torch.zeros(n_heads, conv_size))  # (H, K)
        if attention == "grouped":
            self.global_factor = nn.Parameter(torch.zeros(()))  # alpha, starts at 0
        if qk_conv:
            w = torch.zeros(d_model, qk_conv)
            w[:, -1] = 1.0  # starts as the identity: the current token only
            self.qk_conv_weight = nn.Parameter(w)  # (C, Kq), oldest tap first

    # --- pieces shared by the three forms
    def _heads(self, y):  # (B, T, C) -> (B, H, T, D)
        B, T, C = y.shape
        return y.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)

    def merge(self, o):  # (B, H, T, D) -> (B, T, C)
        B, H, T, D = o.shape
        return self.out(o.transpose(1, 2).reshape(B, T, H * D))

    def project(self, x, xc):  # q, k from the (short-convolved) xc, v from x
        q, k = self.qk(xc).chunk(2, dim=-1)
        return self._heads(q), self._heads(k), self._heads(self.v(x))

    def features(self, q, k):
        if self.attention == "linear":
            return elu1(q), elu1(k)
        if self.attention == "grouped":
            return cosine(q), cosine(k)
        return q, k

    # --- the parallel form (training)
    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        xc = x
        if self.qk_conv:
            xp = F.pad(x.transpose(1, 2), (self.qk_conv - 1, 0))  # (B, C, Kq - 1 + T), causal
            xc = F.conv1d(xp, self.qk_conv_weight.unsqueeze(1), groups=C).transpose(1, 2)
        q, k, v = self.project(x, xc)  # (B, H, T, D) each
        if self.attention == "softmax":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.attention == "linear":
            o = causal_linear_attention_chunked(*self.features(q, k), v, eps=self.eps)
        else:
            qn, kn = self.features(q, k)
            o = grouped_linear_attention_parallel(qn, kn, v, self.group_size, "relu2",
                                                  self.global_factor)  # fmt: skip
        if self.conv == "causal":
            o = o + causal_depthwise_conv(v, self.conv_weight)
        elif self.conv == "leaky":
            o = o + centered_depthwise_conv(v, self.conv_weight)
        return self.merge(o)  # (B, T, C)

    # --- decoding
    def empty_cache(self, batch_size, capacity=64):
        """The cache before any token: zeros, or empty for the growing parts."""
        p = self.qk.weight
        B, H, C = batch_size, self.n_heads, p.shape[1]
        D = C // H
        new = lambda *s: p.new_zeros(*s)
        cache = {}
        if self.attention == "softmax":
            cache.update(k=new(B, H, capacity, D), v=new(B, H, capacity, D), fill=[0])
        elif self.attention == "linear":
            cache.update(S=new(B, H, D, D), z=new(B, H, D))
        else:
            cache.update(S=new(B, H, D, D), kg=new(B, H, 0, D), vg=new(B, H, 0, D))
        if self.conv is not None:
            cache["v_win"] = new(B, H, self.conv_weight.shape[1] // 2, D)
        if self.qk_conv:
            cache["x_win"] = new(B, self.qk_conv - 1, C)
        return cache

    def step(self, x_t, cache, pos):
        """One token x_t (B, C) after `pos` tokens: (y_t (B, C), new cache). O(1) for linear
        and grouped; O(pos) for softmax (it reads the whole KV cache)."""
        if self.conv == "leaky":
            raise ValueError("a centred (leaky) conv reads future tokens: it cannot decode")
        new = dict(cache)
        xc = x_t
        if self.qk_conv:
            xs = torch.cat([cache["x_win"], x_t.unsqueeze(1)], dim=1)  # (B, Kq, C)
            xc = torch.einsum("ck,bkc->bc", self.qk_conv_weight, xs)
            new["x_win"] = xs[:, 1:]
        q, k, v = (y[:, :, 0] for y in self.project(x_t.unsqueeze(1), xc.unsqueeze(1)))  # (B,H,D)
        if self.attention == "softmax":
            kb, vb, fill = writable_kv(cache, pos, 1)
            kb[:, :, pos], vb[:, :, pos] = k, v  # (B, H, D) into the buffer, in place
            new.update(k=kb, v=vb, fill=fill)
            o = F.scaled_dot_product_attention(
                q.unsqueeze(2), kb[:, :, : pos + 1], vb[:, :, : pos + 1]
            )[:, :, 0]
        elif self.attention == "linear":
            qf, kf = self.features(q, k)
            o, (S, z) = causal_linear_attention_step(qf, kf, v, (cache["S"], cache["z"]),
                                                     eps=self.eps)  # fmt: skip
            new.update(S=S, z=z)
        else:
            qn, kn = self.features(q, k)
            state = (cache["S"], None, cache["kg"], cache["vg"])
            o, (S, _, kg, vg) = grouped_linear_attention_step(
                qn, kn, v, state, self.group_size, "relu2", self.global_factor
            )
            new.update(S=S, kg=kg, vg=vg)
        if self.conv == "causal":
            c, new["v_win"] = conv_step(v, self.conv_weight, cache["v_win"])
            o = o + c
        return self.out(o.reshape(o.shape[0], -1)), new

    def verify(self, x, cache, pos, parents, conv_windows="ancestors"):
        """N nodes x (B, N, C) after `pos` tokens, node i at position pos + depth(i): returns
        (y (B, N, C), state_at) with state_at(i) the cache after node i (`lintutor.verify`)."""
        return attention_verify(self, x, cache, pos, parents, conv_windows)


class DecoderLM(TinyLM):
    """TinyLM with `AugmentedAttention` mixers, plus the decoding forms step, verify, prefill.

    A cache is {"pos": tokens consumed, "layers": one dict per block}; step and verify return
    new caches and never change one (KV buffers are shared and copied on write). They run
    without gradients.
    """

    def __init__(self, vocab_size, d_model=64, n_layers=2, n_heads=4, max_len=256,
                 attention="grouped", conv="causal", conv_size=7, group_size=16,
                 qk_conv=0):  # fmt: skip
        kw = dict(attention=attention, conv=conv, conv_size=conv_size, group_size=group_size,
                  qk_conv=qk_conv)  # fmt: skip
        super().__init__(vocab_size, d_model, n_layers, n_heads, max_len, AugmentedAttention, kw)
        self.config = dict(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers,
                           n_heads=n_heads, max_len=max_len, **kw)  # fmt: skip

    def empty_cache(self, batch_size=1):
        return {"pos": 0, "layers": [b.mixer.empty_cache(batch_size) for b in self.blocks]}

    def _room_for(self, length):
        if length > self.max_len:
            raise ValueError(f"position {length - 1} is past max_len={self.max_len}")

    @torch.no_grad()
    def step(self, token, cache):
        """token (B,) long -> (logits (B, vocab), cache after it). One token per call."""
        pos = cache["pos"]
        self._room_for(pos + 1)
        x = self.tok_emb(token) + self.pos_emb.weight[pos]  # (B, C)
        layers = []
        for block, layer_cache in zip(self.blocks, cache["layers"]):
            y, layer_cache = block.mixer.step(block.norm1(x), layer_cache, pos)
            x = x + y
            x = x + block.mlp(block.norm2(x))  # (B, C)
            layers.append(layer_cache)
        return self.head(self.norm(x)), {"pos": pos + 1, "layers": layers}

    @torch.no_grad()
    def verify(self, tokens, cache, parents=None, conv_windows="ancestors"):
        """tokens (B, N) as a chain (parents=None) or a tree -> (logits (B, N, vocab),
        state_at(i) -> the cache after node i). One pass for all N tokens."""
        B, N = tokens.shape
        parents = tuple(range(-1, N - 1)) if parents is None else tuple(int(p) for p in parents)
        if len(parents) != N:
            raise ValueError(f"parents: expected {N} entries (one per token), got {len(parents)}")
        _, depth, paths = tree_layout(parents)
        pos = cache["pos"]
        self._room_for(pos + int(depth.max()) + 1)
        x = self.tok_emb(tokens) + self.pos_emb(pos + depth.to(tokens.device))  # (B, N, C)
        fns = []
        for block, layer_cache in zip(self.blocks, cache["layers"]):
            y, fn = block.mixer.verify(block.norm1(x), layer_cache, pos, parents, conv_windows)
            x = x + y
            x = x + block.mlp(block.norm2(x))
            fns.append(fn)

        def state_at(i):
            return {"pos": pos + len(paths[i]), "layers": [fn(i) for fn in fns]}

        return self.head(self.norm(x)), state_at

    def prefill(self, tokens):
        """tokens (B, T) -> (logits (B, T, vocab), the cache after them): verify from empty."""
        logits, state_at = self.verify(tokens, self.empty_cache(tokens.shape[0]))
        return logits, state_at(tokens.shape[1] - 1)


def synthetic_cache(layer: AugmentedAttention, batch_size, length, seed=0):
    """A layer cache with random contents and the sizes it has after `length` tokens (the KV
    buffers hold exactly length + 1 entries): for timing one step at long contexts."""
    g = torch.Generator().manual_seed(seed)
    cache = layer.empty_cache(batch_size, capacity=length + 1)
    if "fill" in cache:
        cache["fill"] = [length]
    for key, t in list(cache.items()):
        if not torch.is_tensor(t):
            continue
        shape = list(t.shape)
        if key in ("kg", "vg"):
            shape[2] = length % layer.group_size
        cache[key] = torch.randn(shape, generator=g, dtype=t.dtype).to(t.device) / 4
    if "z" in cache:
        cache["z"] = cache["z"].abs() * length  # a normalizer is a sum of positive features
    return cache


def cache_bytes(cache) -> int:
    """Bytes held by the tensors of a layer cache (or a model cache)."""
    if isinstance(cache, dict) and "layers" in cache:
        return sum(cache_bytes(c) for c in cache["layers"])
    return sum(t.numel() * t.element_size() for t in cache.values() if torch.is_tensor(t))


@torch.no_grad()
def leak_losses(model, batch):
    """{"teacher_forced", "prefix_only"} masked mean losses on batch (inputs, targets, mask).

    teacher_forced: one parallel forward over the whole sequence (as in training). prefix_only:
    position t's prediction from a forward over tokens 0..t alone, so nothing after t exists.
    The two agree for a causal model; a model that reads the future does well only on the first.
    """
    inputs, targets, mask = batch
    was_training = model.training
    model.eval()
    T = inputs.shape[1]
    full = model(inputs)  # (B, T, vocab)
    last = torch.stack([model(inputs[:, : t + 1])[:, -1] for t in range(T)], dim=1)
    model.train(was_training)
    loss = lambda logits: F.cross_entropy(logits[mask], targets[mask]).item()
    return {"teacher_forced": loss(full), "prefix_only": loss(last)}


def decode_cost(layer: AugmentedAttention, lengths, batch_size=1, repeats=20):
    """[{"length", "seconds_per_token", "cache_bytes"}]: one decode step of `layer` after
    `length` tokens (the fastest of `repeats`), from a synthetic cache of that length."""
    C = layer.qk.weight.shape[1]
    x = torch.randn(batch_size, C, dtype=layer.qk.weight.dtype, device=layer.qk.weight.device)
    rows = []
    for n in lengths:
        cache = synthetic_cache(layer, batch_size, n)

        with torch.no_grad():
            seconds = time_call(_frontier_step, layer, x, cache, n, repeats=repeats, warmup=2,
                                stat="min")  # fmt: skip
        rows.append({"length": n, "seconds_per_token": seconds, "cache_bytes": cache_bytes(cache)})
    return rows


def _frontier_step(layer, x, cache, n):
    if "fill" in cache:
        cache["fill"][0] = n  # the frontier again: the step writes in place, as a server does
    return layer.step(x, cache, n)
