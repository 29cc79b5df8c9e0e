"""Lesson 07's data: the order-2 Markov language obeys its rule with probability p + (1-p)/V and
its floor is the exact entropy; the character corpus comes from this machine's standard library,
split by file with a seed."""

import math

import pytest
import torch

from lintutor import data


def test_markov_language_follows_its_rule():
    x, y, mask = data.markov2_batch(512, 64, vocab_size=16, p=0.9, seed=3)
    assert x.shape == y.shape == mask.shape == (512, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert not mask[:, 0].any() and mask[:, 1:].all()  # position 0 has one token before it
    table = data.markov2_table(16)
    ruled = table[x[:, :-1], x[:, 1:]]  # the rule's choice after (x_{t-1}, x_t)
    hit = (y[:, 1:] == ruled).double().mean()
    assert abs(float(hit) - (0.9 + 0.1 / 16)) < 0.01
    again = data.markov2_batch(512, 64, vocab_size=16, p=0.9, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((x, y, mask), again))


def test_entropy_floor_is_exact_and_the_oracle_measures_it():
    V, p = 16, 0.9
    hit, miss = p + (1 - p) / V, (1 - p) / V
    assert data.markov2_entropy(V, p) == pytest.approx(
        -(hit * math.log(hit) + (V - 1) * miss * math.log(miss)), rel=1e-12
    )
    assert data.markov2_entropy(V, 0.0) == pytest.approx(math.log(V))
    big = data.markov2_batch(2048, 64, V, p, seed=4)
    floor = data.markov2_entropy(V, p)
    assert data.markov2_oracle_loss(*big, V, p) == pytest.approx(floor, abs=0.01)
    # the oracle is the best predictor: any other rule scores worse on the same tokens
    other = data.markov2_batch(2048, 64, V, p, seed=4, table_seed=1)
    assert data.markov2_oracle_loss(*other, V, p) > data.markov2_entropy(V, p) + 1.0


def test_stdlib_corpus_is_seeded_and_split_by_file():
    a = data.stdlib_char_corpus(n_files=6, seed=0, max_chars_per_file=2000)
    b = data.stdlib_char_corpus(n_files=6, seed=0, max_chars_per_file=2000)
    c = data.stdlib_char_corpus(n_files=6, seed=1, max_chars_per_file=2000)
    assert torch.equal(a["train"], b["train"]) and a["val_files"] == b["val_files"]
    assert a["train_files"] + a["val_files"] != c["train_files"] + c["val_files"]
    assert not set(a["train_files"]) & set(a["val_files"])
    assert len(a["vocab"]) == 96 and int(a["train"].max()) < 96 and int(a["train"].min()) >= 0
    text = data.decode_chars(a["train"][:2000])
    assert "\t" not in text and any(w in text for w in ("def ", "import ", '"""'))
    x, y, mask = data.char_batch(a["train"], 4, 32, seed=0)
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1]) and mask.all()
