"""Synthetic sequence tasks: multi-query associative recall (MQAR) (lessons 02, 03, 08).

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
