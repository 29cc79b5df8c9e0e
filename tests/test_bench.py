"""The benchmark's CPU-side logic: floors, ratios, the table, the stored GPU results."""

import glob
import json
import os

import pytest

from lintutor import bench
from lintutor.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _result():
    row = {"D": 128, "H": 16, "T": 2048, "B": 32, "lintutor_fwd_ms": 0.5, "fla_chunk_fwd_ms": 1.0,
           "fla_fused_chunk_fwd_ms": 2.0, "sdpa_flash_fwd_ms": 4.0, "sdpa_cudnn_fwd_ms": 2.5,
           "lintutor_fwdbwd_ms": 3.0, "fla_chunk_fwdbwd_ms": 4.0,
           "fla_fused_chunk_fwdbwd_ms": 2.0}  # fmt: skip
    decode = {"state_bytes_rw": 10**9, "lintutor_graph_ms": 0.6, "fla_recurrent_graph_ms": 0.5,
              "torch_step_graph_ms": 1.0}  # fmt: skip
    return {"roofs": {"copy_TBps": 2.0}, "rows": [row], "decode": decode}


def test_floors_are_bytes_over_measured_bandwidth():
    r = bench.summarize(_result())
    unit = bench.TOKENS * bench.WIDTH * 2
    assert r["floor_fwd_ms"] == pytest.approx(4 * unit / 2e12 * 1e3)
    assert r["floor_fwdbwd_ms"] == pytest.approx(11 * unit / 2e12 * 1e3)
    assert r["decode"]["floor_ms"] == pytest.approx(0.5)
    assert r["decode"]["lintutor_graph_floor_ratio"] == pytest.approx(1.2)


def test_ratios_use_the_fastest_fla_and_sdpa_provider():
    row = bench.summarize(_result())["rows"][0]
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
    row = bench.summarize(res)["rows"][0]
    assert row["ratio_fwd_to_fla"] is None and "ratio_fwdbwd_to_fla_chunk" not in row
    assert "ratio_fwdbwd_to_fla" not in row
    line = bench.table(res).splitlines()[2]
    assert line.split()[:3] == ["128", "2048", "|"] and "-" in line


def test_bench_without_gpu_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--quick"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err


STORED = sorted(glob.glob(os.path.join(ROOT, "assets", "bench_*.json")))


@pytest.mark.parametrize("path", STORED, ids=[os.path.basename(p) for p in STORED])
def test_stored_results_record_the_card_versions_and_checked_providers(path):
    with open(path) as fh:
        res = json.load(fh)
    v = res["versions"]
    assert v["gpu"] and v["torch"] and v["triton"] and res["date"] and "fla" in v
    assert res["roofs"]["copy_TBps"] > 0.5
    assert {r["T"] for r in res["rows"]} == set(bench.T_LIST)
    for r in res["rows"]:
        assert r["B"] * r["T"] == bench.TOKENS and r["H"] * r["D"] == bench.WIDTH
        for key, ms in r.items():  # every timed provider passed its correctness check first
            if (
                key.endswith("_fwd_ms")
                and ms is not None
                and not key.startswith(("fla_best", "sdpa_best"))
            ):
                assert r[key.replace("_ms", "_err")] < 2e-2, key
    assert res["decode"]["lintutor_err"] < 1e-2


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

    from lintutor.bench import add_arguments, run_from_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = argparse.ArgumentParser()
    add_arguments(p)
    for flags in (["--lm"], ["--lm-drift"]):
        assert run_from_args(p.parse_args(flags)) == 1
        assert "need a CUDA GPU" in capsys.readouterr().err


def test_finish_partial_marks_missing_shapes_and_summarizes_only_its_own_rows(tmp_path):
    res = _result()
    res["rows"][0].update({"D": 64, "H": 32, "T": 512, "B": 128})
    path = tmp_path / "bench_x.json"
    path.write_text(json.dumps(res))
    out = bench.finish_partial(str(path), "stopped", log=lambda *_: None)
    assert json.loads(path.read_text()) == out
    assert len(out["rows"]) == 2 * len(bench.T_LIST) and out["incomplete"].startswith("1 of 16")
    marked = [r for r in out["rows"] if "not_measured" in r]
    assert len(marked) == 15 and all(r["B"] * r["T"] == bench.TOKENS for r in marked)
    assert not any(k.endswith("_ms") and r[k] for r in marked for k in r)
    assert out["rows"][0]["ratio_fwd_to_fla"] == pytest.approx(0.5)
