"""`lintutor bench` without a GPU: it says so; completing a stopped run uses only its own rows."""

import json

import pytest

from lintutor.course.cli import main
from lintutor.experiments import kernel_bench
from lintutor.experiments.kernel_providers import T_LIST, TOKENS

from .test_results import _result


def test_bench_without_gpu_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--quick"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_bench_keeps_every_flag():
    import argparse

    p = argparse.ArgumentParser()
    kernel_bench.add_arguments(p)
    args = p.parse_args(["--quick", "--tune", "--out", "x", "--lm", "--lm-drift", "--finish", "f"])
    assert (args.quick, args.tune, args.out, args.lm, args.lm_drift, args.finish) == (
        True, True, "x", True, True, "f",
    )  # fmt: skip


def test_finish_partial_marks_missing_shapes_and_summarizes_only_its_own_rows(tmp_path):
    res = _result()
    res["rows"][0].update({"D": 64, "H": 32, "T": 512, "B": 128})
    path = tmp_path / "bench_x.json"
    path.write_text(json.dumps(res))
    out = kernel_bench.finish_partial(str(path), "stopped", log=lambda *_: None)
    assert json.loads(path.read_text()) == out
    assert len(out["rows"]) == 2 * len(T_LIST) and out["incomplete"].startswith("1 of 16")
    marked = [r for r in out["rows"] if "not_measured" in r]
    assert len(marked) == 15 and all(r["B"] * r["T"] == TOKENS for r in marked)
    assert not any(k.endswith("_ms") and r[k] for r in marked for k in r)
    assert out["rows"][0]["ratio_fwd_to_fla"] == pytest.approx(0.5)


def test_the_sweeps_stop_at_their_budget_after_one_row_and_name_what_they_skipped(monkeypatch):
    """No new shape once budget_s has passed (but always one measured row); the shapes left are
    named in the last row's 'skipped'. Without a budget every shape is measured."""
    clock = [0.0]
    monkeypatch.setattr("time.perf_counter", lambda: clock[0])
    shapes = [(64, 512), (128, 512), (64, 2048), (128, 2048)]
    rows, seen = [], []
    for shape in kernel_bench._within_budget(shapes, 15.0, rows, log=lambda *_: None):
        seen.append(shape)
        rows.append({"shape": shape})
        clock[0] += 10.0
    assert seen == shapes[:2] and rows[-1]["skipped"] == ["D=64 T=2048", "D=128 T=2048"]
    rows = []
    for shape in kernel_bench._within_budget(shapes, 0.0, rows, log=lambda *_: None):
        rows.append({"shape": shape})
        clock[0] += 10.0
    assert len(rows) == 1 and len(rows[0]["skipped"]) == 3
    assert list(kernel_bench._within_budget(shapes, None, [], log=print)) == shapes
