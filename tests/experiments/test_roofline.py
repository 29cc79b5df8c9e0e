"""Lesson 08's roofline counts bytes and flops from the shapes and the run's own roofs; the live
benchmark says when it cannot run; the live-beside-stored figure draws without a GPU."""

import copy

import pytest

from lintutor.experiments import kernel_bench, results
from lintutor.experiments.kernel_providers import TOKENS, WIDTH

from .test_results import _result


def test_roofline_counts_the_bytes_and_flops_of_the_forward():
    res = _result()
    res["roofs"]["bf16_mm_TFLOPs"] = 500.0
    r = results.roofline(res, D=64, C=64)
    unit = TOKENS * WIDTH * 2  # one bf16 (B, T, H * D) tensor
    assert r["bytes"] == 4 * unit and r["H"] == 32
    assert r["flops"] == TOKENS * 32 * (2 * 64 * (64 + 64) + 4 * 64 * 64)
    assert r["intensity"] == pytest.approx(64.0)  # D = E = C = 64: 64 flop per byte
    assert r["ridge"] == pytest.approx(500 / 2.0)
    assert r["memory_ms"] == pytest.approx(results.summarize(res)["floor_fwd_ms"])
    assert r["kernel_flops"] == r["flops"]  # one program per head at E = 64
    r128 = results.roofline(res, D=128, C=64)
    assert r128["kernel_flops"] == r128["flops"] + TOKENS * 16 * 2 * 64 * 128  # q k^T twice
    # fla chunk: k, v read twice (6 tensors) and one bf16 (D, E) state per chunk written + read
    assert r["fla_chunk_bytes"] == 6 * unit + 2 * (TOKENS // 64) * 32 * 64 * 64 * 2
    assert r["fla_chunk_floor_ms"] > r["memory_ms"]


def test_stored_run_sits_below_the_ridge_and_figures_draw():
    stored = results.summarize(results.load())
    for D in (64, 128):
        assert results.roofline(stored, D)["intensity"] < results.roofline(stored, D)["ridge"]
    fig = results.roofline_figure(stored)
    assert fig.layout.width <= 900 and len(fig.data) >= 3
    alone = results.compare_figure(None, stored)
    assert alone.data and "stored" in alone.layout.title.text
    live = copy.deepcopy(stored)
    live["versions"]["gpu"] = "Some GPU"
    live["rows"] = [r for r in live["rows"] if r["T"] in kernel_bench.LIVE_T]
    both = results.compare_figure(live, stored)
    assert len(both.data) > len(alone.data) and "live: Some GPU" in both.layout.title.text
    assert both.layout.width <= 900


def test_live_benchmark_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        kernel_bench.live("unused")


def test_bench_shapes_times_forwards_only_and_stops_at_its_time_budget(monkeypatch):
    """The shape loop without a GPU: providers, inputs and the timer replaced by stand-ins."""
    import time

    import torch

    calls = []
    monkeypatch.setattr(kernel_bench, "inputs", lambda B, H, T, D, seed=0, grad=False: {"T": T})
    monkeypatch.setattr(kernel_bench, "reference", lambda x: torch.ones(3))
    monkeypatch.setattr(kernel_bench, "rel_err", lambda a, b: 1e-3)
    monkeypatch.setattr(kernel_bench, "forward_providers", lambda fla: {"lintutor": lambda x: 0})
    monkeypatch.setattr(kernel_bench, "grad_fn", lambda *a: calls.append("grad"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    def bench(fn, **_):
        time.sleep(0.2)
        calls.append("bench")
        return 1.0

    monkeypatch.setattr(kernel_bench._gpu, "bench", bench)
    rows = kernel_bench.bench_shapes(None, t_list=(1024, 16384), log=lambda *_: None,
                                     fwdbwd=False, budget_s=0.1)  # fmt: skip
    assert [(r["D"], r["T"]) for r in rows] == [(64, 1024)]  # 0.2 s in: over the budget
    assert rows[-1]["skipped"] == ["D=64 T=16384", "D=128 T=1024", "D=128 T=16384"]
    assert "grad" not in calls and rows[0]["lintutor_fwd_ms"] == 1.0
    assert all(r["B"] * r["T"] == TOKENS and r["H"] * r["D"] == WIDTH for r in rows)
    rows = kernel_bench.bench_shapes(None, t_list=(1024, 16384), log=lambda *_: None,
                                     fwdbwd=False, budget_s=None)  # fmt: skip
    assert len(rows) == 4 and "skipped" not in rows[-1]
