"""The stored LM curves: both forms start from the same loss; without a GPU the run says so."""

import glob
import json
import os

import pytest

from lintutor.experiments import lm_curves

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_stored_lm_curves_hold_both_forms_with_matching_first_loss():
    paths = glob.glob(os.path.join(ROOT, "assets", "lm_curves_*.json"))
    assert paths
    with open(paths[0]) as fh:
        runs = json.load(fh)["runs"]
    a, b = runs["torch_chunked"]["loss"], runs["triton"]["loss"]
    assert len(a) == len(b) and a[0] == pytest.approx(b[0], rel=1e-3)


def test_lm_curves_without_gpu_say_so(monkeypatch, capsys):
    import argparse

    import torch

    from lintutor.experiments.kernel_bench import add_arguments, run_from_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = argparse.ArgumentParser()
    add_arguments(p)
    for flags in (["--lm"], ["--lm-drift"]):
        assert run_from_args(p.parse_args(flags)) == 1
        assert "need a CUDA GPU" in capsys.readouterr().err
    assert lm_curves.main(["--drift"]) == 1
    assert "need a CUDA GPU" in capsys.readouterr().err


def test_stored_runs_read_back_as_table_and_figure():
    two, four = lm_curves.table().splitlines(), lm_curves.table(drift=True).splitlines()
    assert len(two) == 1 + 2 and len(four) == 1 + 4
    assert two[1].split()[0] == "torch_chunked" and four[-1].split()[0] == "triton"
    assert len(lm_curves.figure().data) == 2 + 4
