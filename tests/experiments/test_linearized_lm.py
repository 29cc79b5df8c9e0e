"""Lesson 07's experiment: a tiny run writes the JSON that table() and figure() read back, and
the stored result keeps the invariants the lesson relies on (the floor is the exact entropy, no
loss is below it, the causal model scores the same with and without the future)."""

import json
import os

import pytest

from lintutor import data
from lintutor.experiments import linearized_lm as L
from lintutor.experiments.results import asset_path


@pytest.fixture
def tiny(monkeypatch):
    for cfg, key, value in [(L.MODEL, "d_model", 16), (L.MARKOV, "seq_len", 24),
                            (L.MARKOV, "batch_size", 4), (L.MQAR, "seq_len", 16),
                            (L.MQAR, "batch_size", 4), (L.CHAR, "seq_len", 16),
                            (L.CHAR, "batch_size", 4), (L.CHAR, "n_files", 4)]:  # fmt: skip
        monkeypatch.setitem(cfg, key, value)


def test_run_writes_what_table_and_figure_read(tiny, tmp_path):
    out = str(tmp_path / "ll.json")
    result = L.run(("markov", "leak"), seeds=(0, 1), steps=3, out=out)
    L.run(("placement", "char"), seeds=(0,), steps=2, mqar_steps=2, char_steps=2, out=out)
    stored = json.load(open(out))
    assert set(stored["parts"]) == set(L.PARTS) and stored["seconds"] > 0
    assert set(result["parts"]["markov"]["result"]["variants"]) == set(L.VARIANTS)
    for part in L.PARTS:
        text = L.table(out, part)
        assert len(text.splitlines()) >= 3
    placement = stored["parts"]["placement"]["result"]
    assert (
        placement["markov"]["variants"]["no conv"]
        == (
            stored["parts"]["markov"]["result"]["variants"]["linear"]  # reused, not retrained
        )
    )
    assert set(placement["mqar"]) == {"1 layer", "2 layers"}
    fig = L.figure(out)
    assert len(fig.data) == len(L.VARIANTS) and fig.layout.width <= 900
    assert all(len(c) == 12 for _, c in L.samples(out))  # seq_len 16: 4 + 12 characters
    env = stored["parts"]["markov"]["environment"]
    assert env["torch"] and env["threads"] == 1


def test_help(capsys):
    with pytest.raises(SystemExit):
        L.main(["--help"])
    assert "usage:" in capsys.readouterr().out


STORED = "linearized_lm_cpu.json"


def _stored():
    try:
        return json.load(open(asset_path(STORED)))
    except FileNotFoundError:
        pytest.fail(f"assets/{STORED} is missing: python -m lintutor.experiments.linearized_lm")


def test_stored_result_is_complete_and_above_the_floor():
    r = _stored()
    assert set(r["parts"]) == set(L.PARTS)
    markov = r["parts"]["markov"]["result"]
    cfg = r["parts"]["markov"]["config"]["markov"]
    assert markov["floor"] == pytest.approx(data.markov2_entropy(cfg["vocab_size"], cfg["p"]))
    # 256 x 127 held-out tokens: a loss more than a few standard errors below the floor is a bug
    for name, v in markov["variants"].items():
        assert len(v["runs"]) == len(r["parts"]["markov"]["seeds"]) >= 3, name
        assert min(run["loss"] for run in v["runs"]) > markov["floor"] - 0.03, name


def test_stored_leak_result():
    leak = _stored()["parts"]["leak"]["result"]
    causal = leak["variants"]["causal conv"]
    for run in causal["runs"]:  # the causal model cannot tell the two evaluations apart
        assert run["prefix_only"] == pytest.approx(run["teacher_forced"], abs=1e-4)
    leaky = leak["variants"]["leaky (centred) conv"]
    for run in leaky["runs"]:
        assert run["prefix_only"] > run["teacher_forced"] + 0.1


def test_stored_char_result_says_where_the_text_came_from():
    char = _stored()["parts"]["char"]["result"]
    assert char["python"] and char["train_chars"] > 100_000 and char["val_files"]
    assert set(char["variants"]) == set(L.CHAR_VARIANTS)
    for v in char["variants"].values():
        assert 0 < v["bits_per_char"] < 7 and len(v["samples"]) == 3
    assert os.path.basename(asset_path(STORED)) == STORED
