"""Stored benchmark results read back without a GPU: floors, ratios, the table, the figures, and
the stored H100 files themselves (card, versions, every timed provider checked first)."""

import glob
import json
import os

import pytest

from lintutor.experiments import kernel_providers, results
from lintutor.experiments.kernel_providers import T_LIST, TOKENS, WIDTH

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _result():
    row = {"D": 128, "H": 16, "T": 2048, "B": 32, "lintutor_fwd_ms": 0.5, "fla_chunk_fwd_ms": 1.0,
           "fla_fused_chunk_fwd_ms": 2.0, "sdpa_flash_fwd_ms": 4.0, "sdpa_cudnn_fwd_ms": 2.5,
           "lintutor_fwdbwd_ms": 3.0, "fla_chunk_fwdbwd_ms": 4.0,
           "fla_fused_chunk_fwdbwd_ms": 2.0}  # fmt: skip
    decode = {"state_bytes_rw": 10**9, "lintutor_graph_ms": 0.6, "fla_recurrent_graph_ms": 0.5,
              "torch_step_graph_ms": 1.0}  # fmt: skip
    return {"roofs": {"copy_TBps": 2.0}, "rows": [row], "decode": decode}


def test_floors_are_bytes_over_measured_bandwidth():
    r = results.summarize(_result())
    unit = kernel_providers.TOKENS * kernel_providers.WIDTH * 2
    assert r["floor_fwd_ms"] == pytest.approx(4 * unit / 2e12 * 1e3)
    assert r["floor_fwdbwd_ms"] == pytest.approx(11 * unit / 2e12 * 1e3)
    assert r["decode"]["floor_ms"] == pytest.approx(0.5)
    assert r["decode"]["lintutor_graph_floor_ratio"] == pytest.approx(1.2)


def test_ratios_use_the_fastest_fla_and_sdpa_provider():
    row = results.summarize(_result())["rows"][0]
    assert row["fla_best_fwd_ms"] == 1.0 and row["sdpa_best_fwd_ms"] == 2.5
    assert row["ratio_fwd_to_fla"] == pytest.approx(0.5)
    assert row["ratio_fwd_to_sdpa"] == pytest.approx(0.2)
    assert row["ratio_fwdbwd_to_fla_chunk"] == pytest.approx(0.75)
    assert row["fla_best_fwdbwd_ms"] == 2.0 and row["ratio_fwdbwd_to_fla"] == pytest.approx(1.5)


def test_missing_providers_give_no_ratio_and_a_dash_in_the_table():
    res = _result()
    for key in ("fla_chunk_fwd_ms", "fla_fused_chunk_fwd_ms", "fla_chunk_fwdbwd_ms",
                "fla_fused_chunk_fwdbwd_ms"):  # fmt: skip
        res["rows"][0][key] = None
    row = results.summarize(res)["rows"][0]
    assert row["ratio_fwd_to_fla"] is None and "ratio_fwdbwd_to_fla_chunk" not in row
    assert "ratio_fwdbwd_to_fla" not in row
    line = results.table(res).splitlines()[2]
    assert line.split()[:3] == ["128", "2048", "|"] and "-" in line


STORED = sorted(glob.glob(os.path.join(ROOT, "assets", "bench_*.json")))


@pytest.mark.parametrize("path", STORED, ids=[os.path.basename(p) for p in STORED])
def test_stored_results_record_the_card_versions_and_checked_providers(path):
    with open(path) as fh:
        res = json.load(fh)
    v = res["versions"]
    assert v["gpu"] and v["torch"] and v["triton"] and res["date"] and "fla" in v
    assert res["roofs"]["copy_TBps"] > 0.5
    assert {r["T"] for r in res["rows"]} == set(T_LIST)
    for r in res["rows"]:
        assert r["B"] * r["T"] == TOKENS and r["H"] * r["D"] == WIDTH
        for key, ms in r.items():  # every timed provider passed its correctness check first
            if (
                key.endswith("_fwd_ms")
                and ms is not None
                and not key.startswith(("fla_best", "sdpa_best"))
            ):
                assert r[key.replace("_ms", "_err")] < 2e-2, key
    assert res["decode"]["lintutor_err"] < 1e-2


def test_stored_benchmark_reads_back_as_table_and_figures_without_a_gpu():
    res = results.load()  # the run lesson 08 shows
    assert res == results.load(results.BENCH) == results.load(results.asset_path(results.BENCH))
    lines = results.table().splitlines()
    assert len(lines) == 2 + len(res["rows"]) + 1 and lines[-1].startswith("decode")
    for what in results.FIGURES:
        for D in (64, 128):
            fig = results.figure(res, D, what)
            assert fig.data and res["versions"]["gpu"] in fig.layout.title.text
    assert len(results.decode_figure().data) == 2
    with pytest.raises(ValueError, match="what must be one of"):
        results.figure(res, 64, "speed")
    with pytest.raises(FileNotFoundError, match="assets/nothing.json"):
        results.load("nothing.json")
