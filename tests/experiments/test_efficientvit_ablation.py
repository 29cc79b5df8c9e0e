"""The EfficientViT ablation experiment: a tiny run writes JSON in the stored file's format, and
table() / figure() read both back."""

import json
import os
import subprocess
import sys

import pytest

from lintutor.experiments import efficientvit_ablation as exp
from lintutor.experiments.results import load

STORED = exp.DEFAULT_OUT


def _structure(x):
    """The JSON's shape: keys and value types; a list becomes the distinct shapes of its items
    (so 3 seeds and 2 seeds, or 8 heads and 2, have the same shape)."""
    if isinstance(x, dict):
        return {k: _structure(v) for k, v in x.items()}
    if isinstance(x, list):
        out = []
        for item in map(_structure, x):
            if item not in out:
                out.append(item)
        return out
    if isinstance(x, bool) or x is None:
        return type(x).__name__
    if isinstance(x, (int, float)):
        return "number"
    return type(x).__name__


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "ablation.json"
    rows = ["neither", "both (EfficientViT)", "both, softmax attention"]
    result = exp.run(seeds=2, out=str(out), rows=rows, log=lambda s: None, steps=2, batch=4,
                     width=8, n_test=4)  # fmt: skip
    return out, result


def test_tiny_run_writes_what_it_returns(tiny):
    out, result = tiny
    with open(out) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    assert result["seeds"] == [0, 1] and result["config"]["steps"] == 2
    for row in result["rows"]:
        values = [r["miou"] for r in row["runs"]]
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        assert row["miou"]["mean"] == pytest.approx(sum(values) / 2)
        assert row["miou"]["min"] == min(values) and 0 <= row["miou"]["max"] <= 100
    poster = {r["name"]: r["poster_miou"] for r in result["rows"]}
    assert poster == {"neither": 68.1, "both (EfficientViT)": 74.5, "both, softmax attention": None}


def test_stored_json_has_the_format_the_experiment_writes(tiny):
    _, result = tiny
    assert os.path.exists(STORED), "assets/efficientvit_ablation_cpu.json is missing"
    stored = exp.stored()
    assert stored == load(STORED)
    assert _structure(stored) == _structure(json.loads(json.dumps(result)))
    names = [r["name"] for r in stored["rows"]]
    assert names[:4] == list(exp.ABLATION_ROWS) and len(stored["seeds"]) >= 3
    for row in stored["rows"]:
        assert len(row["runs"]) == len(stored["seeds"])


def test_table_and_figure_read_back(tiny):
    out, result = tiny
    for path in (str(out), STORED, None, result):
        text = exp.table(path)
        rows = exp.stored(path)["rows"]
        assert len(text.splitlines()) == 1 + len(rows)
        for row in rows:
            assert f"{row['miou']['mean']:6.1f}" in text and row["name"] in text
        fig = exp.figure(path)
        assert len(fig.data) == 3 and fig.layout.width <= 800  # fits a Colab output


def test_help_runs():
    done = subprocess.run(
        [sys.executable, "-m", "lintutor.experiments.efficientvit_ablation", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--seeds" in done.stdout and "--softmax" in done.stdout
