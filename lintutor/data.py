"""Synthetic data, generated here (nothing is downloaded): multi-query associative recall (MQAR)
(lessons 02, 03, 08, 09), procedural scenes for segmentation (lesson 06), an order-2 Markov
language with a known entropy floor and a character corpus from the standard library's own
source files (lesson 07). MQAR is described here; the others where their functions start.

MQAR (Arora et al. 2023, "Zoology", Section 3): a sequence first lists key-value pairs, then asks
for the keys again; after each queried key the model must output that key's value.

    k1 v1 k2 v2 ... kN vN  0 0 ... 0  k3 v3 k1 v1 ...        (0 = padding)
                                        ^  the loss is on the value after each queried key

In teacher forcing, position t predicts token t + 1, so the loss sits on the positions of the
queried keys (target: the value that follows). Keys are distinct within a sequence, values may
repeat. Vocabulary: 0 = padding, keys 1 .. n_keys, values n_keys + 1 .. vocab_size - 1.

Simplified from Zoology: every key is queried once, the queries come in one block at the end of
the sequence (Zoology scatters them with a power-law gap among noise tokens).
"""

from __future__ import annotations

import torch


def mqar_batch(batch_size, seq_len, n_pairs, vocab_size=64, seed=0, n_keys=None):
    """(inputs, targets, loss_mask), each (batch_size, seq_len); O(batch_size * seq_len).

    seq_len >= 4 * n_pairs; n_keys (default half the non-padding vocabulary) >= n_pairs.
    The same seed gives the same batch.
    """
    n_keys = n_keys if n_keys is not None else (vocab_size - 1) // 2
    n_values = vocab_size - 1 - n_keys
    if n_pairs < 1 or n_keys < n_pairs or n_values < 1:
        raise ValueError(
            f"need 1 <= n_pairs <= n_keys and at least one value token; got n_pairs={n_pairs}, "
            f"n_keys={n_keys}, vocab_size={vocab_size}"
        )
    if seq_len < 4 * n_pairs:
        raise ValueError(f"seq_len={seq_len} is too short for {n_pairs} pairs and their queries")
    g = torch.Generator().manual_seed(seed)
    B, N = batch_size, n_pairs
    keys = torch.rand(B, n_keys, generator=g).argsort(dim=1)[:, :N] + 1  # (B, N), distinct
    values = torch.randint(n_keys + 1, vocab_size, (B, N), generator=g)  # (B, N)
    order = torch.rand(B, N, generator=g).argsort(dim=1)  # (B, N): query order
    q_keys, q_values = keys.gather(1, order), values.gather(1, order)  # (B, N) each

    inputs = torch.zeros(B, seq_len, dtype=torch.long)  # (B, T), padding 0
    inputs[:, 0 : 2 * N : 2], inputs[:, 1 : 2 * N : 2] = keys, values  # context pairs
    start = seq_len - 2 * N
    inputs[:, start::2], inputs[:, start + 1 :: 2] = q_keys, q_values  # queries at the end
    targets = torch.zeros_like(inputs)  # (B, T)
    targets[:, :-1] = inputs[:, 1:]  # position t predicts token t + 1
    loss_mask = torch.zeros(B, seq_len, dtype=torch.bool)  # (B, T)
    loss_mask[:, start::2] = True  # at each queried key, predict its value
    return inputs, targets, loss_mask


def mqar_batch_fn(batch_size, seq_len, n_pairs, vocab_size=64, seed=0, n_keys=None):
    """batch_fn(step) for `models.train`: a fresh, reproducible MQAR batch per step."""

    def batch_fn(step):
        return mqar_batch(batch_size, seq_len, n_pairs, vocab_size, seed * 1_000_003 + step, n_keys)

    return batch_fn


# Procedural scenes for dense prediction (lesson 06): occluding squares and discs, drawn back to
# front in the unit square, so one seed gives the same scene at any resolution. Each pixel's
# class needs local detail (which object covers it, sharp edges) and global context (whether
# that object has the largest visible area in the whole image, after occlusion).
SCENE_CLASSES = ("background", "largest visible object", "other objects")


def scene_objects(batch_size, seed=0, min_objects=2, max_objects=4):
    """The objects of a batch of scenes, a dict of (batch_size, max_objects) tensors, back to
    front: present (bool), disc (bool, else an axis-aligned square), cx, cy, size (radius or
    half side, unit coordinates) and color (batch_size, max_objects, 3); background
    (batch_size, 3). Scene b depends only on (seed, b): a larger batch adds scenes after it."""
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    g = torch.Generator().manual_seed(seed)
    B, N = batch_size, max_objects
    u = torch.rand(B, 1 + 7 * N + 3, generator=g)  # (B, P): one row of draws per scene
    count = min_objects + (u[:, :1] * (max_objects - min_objects + 1)).long()  # (B, 1)
    return {
        "present": torch.arange(N).unsqueeze(0) < count,  # (B, N)
        "disc": u[:, 1 : 1 + N] < 0.5,
        "cx": 0.1 + 0.8 * u[:, 1 + N : 1 + 2 * N],
        "cy": 0.1 + 0.8 * u[:, 1 + 2 * N : 1 + 3 * N],
        "size": 0.08 + 0.22 * u[:, 1 + 3 * N : 1 + 4 * N],
        "color": 0.4 + 0.6 * u[:, 1 + 4 * N : 1 + 7 * N].reshape(B, N, 3),
        "background": 0.3 * u[:, 1 + 7 * N :],
    }


def render_scenes(objects, resolution=32):
    """(clean images (B, 3, r, r), owner (B, r, r)): owner = index of the object seen at each
    pixel centre, -1 for background. O(B * max_objects * r^2)."""
    r = resolution
    c = (torch.arange(r, dtype=torch.float32) + 0.5) / r  # pixel centres in (0, 1)
    y, x = c.view(1, r, 1), c.view(1, 1, r)  # rows, columns
    B, N = objects["present"].shape
    owner = torch.full((B, r, r), -1, dtype=torch.long)  # (B, r, r)
    images = objects["background"].view(B, 3, 1, 1).expand(B, 3, r, r).clone()  # (B, 3, r, r)
    for i in range(N):  # back to front: a later object occludes an earlier one
        cx, cy, s = (objects[k][:, i].view(B, 1, 1) for k in ("cx", "cy", "size"))
        disc = (x - cx) ** 2 + (y - cy) ** 2 <= s**2  # (B, r, r)
        square = torch.maximum((x - cx).abs(), (y - cy).abs()) <= s
        inside = torch.where(objects["disc"][:, i].view(B, 1, 1), disc, square)
        inside &= objects["present"][:, i].view(B, 1, 1)
        owner = torch.where(inside, i, owner)
        images = torch.where(inside.unsqueeze(1), objects["color"][:, i].view(B, 3, 1, 1), images)
    return images, owner


def scene_labels(owner, max_objects):
    """Per-pixel classes (B, r, r): 0 background, 1 the object with the largest visible area
    (the first in drawing order on a tie), 2 every other visible object."""
    ids = torch.arange(max_objects).view(1, -1, 1, 1)
    areas = (owner.unsqueeze(1) == ids).sum((2, 3))  # (B, N): visible pixels per object
    largest = areas.argmax(1).view(-1, 1, 1)  # (B, 1, 1)
    return torch.where(owner < 0, 0, torch.where(owner == largest, 1, 2))


def scene_batch(batch_size, resolution=32, seed=0, min_objects=2, max_objects=4, noise=0.05):
    """(images (B, 3, r, r) in [0, 1], labels (B, r, r) long): seeded scenes of 2-4 occluding
    squares and discs with Gaussian pixel noise; classes in SCENE_CLASSES. O(B * r^2)."""
    objects = scene_objects(batch_size, seed, min_objects, max_objects)
    images, owner = render_scenes(objects, resolution)
    g = torch.Generator().manual_seed(seed + 7_919)
    images = (images + noise * torch.randn(images.shape, generator=g)).clamp(0, 1)
    return images, scene_labels(owner, max_objects)


# An order-2 Markov "language" (lesson 07): the next token is a fixed random function f(a, b) of
# the two before it with probability p, else uniform over the vocabulary. Its entropy floor, the
# lowest loss any model can reach, is known exactly, so a training curve can be read against it.


def markov2_table(vocab_size=16, table_seed=0):
    """The language's rule f (vocab_size, vocab_size) long: f[a, b] follows the pair (a, b)."""
    g = torch.Generator().manual_seed(table_seed)
    return torch.randint(0, vocab_size, (vocab_size, vocab_size), generator=g)


def markov2_entropy(vocab_size=16, p=0.9) -> float:
    """The exact entropy floor in nats per predicted token (every token after the first two).

    The rule's token has probability p + (1 - p) / V, each of the other V - 1 tokens (1 - p) / V.
    """
    import math

    hit, miss = p + (1 - p) / vocab_size, (1 - p) / vocab_size
    return -(hit * math.log(hit) + (vocab_size - 1) * miss * math.log(miss)) if p < 1 else 0.0


def markov2_batch(batch_size, seq_len=128, vocab_size=16, p=0.9, seed=0, table_seed=0):
    """(inputs, targets, loss_mask), each (batch_size, seq_len); O(batch_size * seq_len).

    The first two tokens are uniform; loss_mask leaves out position 0, whose target has only one
    token before it, so the mean masked loss of a perfect model is `markov2_entropy` exactly.
    """
    table = markov2_table(vocab_size, table_seed)  # (V, V)
    g = torch.Generator().manual_seed(seed)
    B, T = batch_size, seq_len
    follow = torch.rand(B, T + 1, generator=g) < p  # (B, T + 1): obey the rule here?
    tokens = torch.randint(0, vocab_size, (B, T + 1), generator=g)  # uniform draws
    for t in range(2, T + 1):
        ruled = table[tokens[:, t - 2], tokens[:, t - 1]]  # (B,)
        tokens[:, t] = torch.where(follow[:, t], ruled, tokens[:, t])
    loss_mask = torch.ones(B, T, dtype=torch.bool)
    loss_mask[:, 0] = False
    return tokens[:, :-1], tokens[:, 1:], loss_mask


def markov2_batch_fn(batch_size, seq_len=128, vocab_size=16, p=0.9, seed=0, table_seed=0):
    """batch_fn(step) for `models.train`: a fresh, reproducible Markov batch per step."""

    def batch_fn(step):
        return markov2_batch(batch_size, seq_len, vocab_size, p, seed * 1_000_003 + step,
                             table_seed)  # fmt: skip

    return batch_fn


# A character corpus built at run time from the Python standard library's own source files on
# this machine (lesson 07): nothing is downloaded or copied into the repository. The files differ
# between Python versions, so losses on it differ a little between machines.

CHAR_VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))  # 96 characters; others become "?"


def stdlib_char_corpus(n_files=60, val_fraction=0.1, seed=0, max_chars_per_file=40_000):
    """{"train", "val": 1-D long tensors, "vocab": CHAR_VOCAB, "train_files", "val_files",
    "python"}: top-level stdlib .py files, shuffled with `seed`, split by file.

    Tabs become four spaces, carriage returns go, any other character outside CHAR_VOCAB becomes
    "?". O(total characters).
    """
    import os
    import platform
    import random
    import sysconfig

    import numpy as np

    root = sysconfig.get_paths()["stdlib"]
    names = sorted(f for f in os.listdir(root) if f.endswith(".py"))
    if len(names) < 2:
        raise FileNotFoundError(f"no Python source files found in {root}")
    random.Random(seed).shuffle(names)
    names = names[:n_files]
    n_val = max(1, round(val_fraction * len(names)))
    lut = np.full(256, CHAR_VOCAB.index("?"), dtype=np.int64)  # byte -> index
    for i, ch in enumerate(CHAR_VOCAB):
        lut[ord(ch)] = i

    def encode(files):
        parts = []
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                text = f.read(max_chars_per_file).replace("\t", "    ").replace("\r", "")
            parts.append(text.encode("ascii", errors="replace"))
        return torch.from_numpy(lut[np.frombuffer(b"\n".join(parts), dtype=np.uint8)])

    return {
        "train": encode(names[n_val:]),
        "val": encode(names[:n_val]),
        "vocab": CHAR_VOCAB,
        "train_files": names[n_val:],
        "val_files": names[:n_val],
        "python": platform.python_version(),
    }


def char_batch(data, batch_size, seq_len, seed=0):
    """(inputs, targets, loss_mask), each (batch_size, seq_len), from random windows of the
    1-D token tensor `data`; the loss is on every position."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size, 1), generator=g)  # (B, 1)
    idx = starts + torch.arange(seq_len + 1)  # (B, T + 1)
    window = data[idx]
    return window[:, :-1], window[:, 1:], torch.ones(batch_size, seq_len, dtype=torch.bool)


def char_batch_fn(data, batch_size, seq_len, seed=0):
    """batch_fn(step) for `models.train` over a character corpus."""

    def batch_fn(step):
        return char_batch(data, batch_size, seq_len, seed * 1_000_003 + step)

    return batch_fn


def decode_chars(tokens, vocab=CHAR_VOCAB) -> str:
    """Token indices (any iterable of ints) back to text."""
    return "".join(vocab[int(t)] for t in tokens)


def markov2_oracle_loss(inputs, targets, loss_mask, vocab_size=16, p=0.9, table_seed=0) -> float:
    """The mean loss of the language's own rule on these tokens (nats): the floor measured on
    this sample. It differs from `markov2_entropy` by the sample's noise, so a model that
    scores a little below the floor on a finite test set has not necessarily cheated."""
    import math

    table = markov2_table(vocab_size, table_seed)
    prev = torch.cat([inputs[:, :1], inputs[:, :-1]], dim=1)  # (B, T): the token before
    ruled = table[prev, inputs]  # (B, T): the rule's next token after (prev, input)
    hit, miss = p + (1 - p) / vocab_size, (1 - p) / vocab_size
    nll = torch.where(targets == ruled, -math.log(hit), -math.log(miss))  # (B, T)
    return float(nll[loss_mask].mean())
