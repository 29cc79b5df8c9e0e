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
