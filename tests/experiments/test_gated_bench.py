"""Lesson 08's gated benchmark and forward sweep, run here on tiny shapes in the CPU interpreter
with a stand-in timer and a stand-in fla (fla's signatures and layout, computed by lesson 04's
forms, its gated backward refused as fla refuses it on Hopper): every code path the GPU run
takes, checks before timing, the JSON, the table, the targets and the figures from it; the
winners of a sweep in the form FORWARD_CONFIGS takes."""

import glob
import json
import os

import pytest
import torch

from lintutor.causal import causal_linear_attention_chunked
from lintutor.experiments import (
    _gpu,
    gated_gpu_check,
    kernel_bench,
    kernel_providers,
    kernel_tune,
    results,
)
from lintutor.gated import gated_linear_attention_chunked, gated_linear_attention_step
from lintutor.kernels import chunked
from lintutor.kernels._common import device

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFUSAL = "Triton >= 3.4.0 and < 3.7.1 on Hopper GPUs produces incorrect results (stand-in)"


class _Refuse(torch.autograd.Function):
    """Identity forward; a backward that raises, as fla's gated chunk_bwd_dqkwg does."""

    @staticmethod
    def forward(ctx, o):
        return o.clone()

    @staticmethod
    def backward(ctx, do):
        raise RuntimeError(REFUSAL)


def fake_fla():
    """fla's (chunk, fused_chunk, fused_recurrent) with fla's signatures, layout (B, T, H, D)."""
    t = lambda x: x.transpose(1, 2)  # noqa: E731

    def forms(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
        q, k, v = (t(x).float() for x in (q, k, v))
        if g is None:
            o = causal_linear_attention_chunked(q, k, v, normalize=False)
        else:
            o = gated_linear_attention_chunked(q, k, v, t(g).float())
        return t(o).to(torch.bfloat16), None

    def chunk(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
        o, s = forms(q, k, v, g, scale)
        return (_Refuse.apply(o) if g is not None else o), s

    def recurrent(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
        o, S = gated_linear_attention_step(q[:, 0].float(), k[:, 0].float(), v[:, 0].float(),
                                           g[:, 0].float(), initial_state)  # fmt: skip
        return o.unsqueeze(1).to(q.dtype), S

    return chunk, forms, recurrent


@pytest.fixture
def tiny(monkeypatch):
    """Tiny shapes on the interpreter's device; bench() and bench_graph() call fn once."""
    calls = []
    for mod in (kernel_providers, kernel_bench, kernel_tune):
        monkeypatch.setattr(mod, "TOKENS", 128, raising=False)
        monkeypatch.setattr(mod, "WIDTH", 32, raising=False)
    monkeypatch.setattr(results, "TOKENS", 128)
    monkeypatch.setattr(results, "WIDTH", 32)
    monkeypatch.setattr(kernel_providers, "DEVICE", device())
    monkeypatch.setattr(kernel_bench, "GATED_T_ORDER", (64, 128))
    monkeypatch.setattr(kernel_bench, "GATED_D", (32, 16))
    monkeypatch.setattr(kernel_bench, "GATED_DECODE", {"B": 2, "H": 2, "D": 16})

    def once(fn, *a, **kw):
        calls.append(fn)
        fn()
        return 1.0

    monkeypatch.setattr(_gpu, "bench", once)
    monkeypatch.setattr(_gpu, "bench_graph", lambda fn, **kw: once(fn) / 2)
    monkeypatch.setattr(_gpu, "roofs", lambda: {"copy_TBps": 1e-3, "bf16_mm_TFLOPs": 1.0})
    monkeypatch.setattr(_gpu, "versions", lambda: {"gpu": "Stand-in GPU", "torch": "x",
                                                   "triton": "y", "fla": "0.6.0"})  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernel_bench, "fla_ops", fake_fla)
    return calls


def test_gated_run_checks_every_provider_before_timing_and_records_refusals(tiny, tmp_path):
    res = kernel_bench.run_gated(out_dir=str(tmp_path), log=lambda *_: None)
    path = tmp_path / "gated_bench_gpu.json"  # the card's last word names the file
    saved = json.loads(path.read_text())
    assert saved["rows"] == res["rows"] and [(r["D"], r["T"]) for r in res["rows"]] == [
        (16, 64), (16, 128), (32, 64), (32, 128)
    ]  # fmt: skip
    for r in res["rows"]:
        for name in ("lintutor_gated", "fla_chunk_gated", "fla_fused_chunk_gated", "lintutor"):
            assert r[f"{name}_fwd_err"] < 2e-2 and r[f"{name}_fwd_ms"] == 1.0, (name, r)
        for name in ("lintutor_gated", "fla_fused_chunk_gated", "lintutor", "fla_chunk"):
            assert r[f"{name}_grad_err"] < 3e-2 and r[f"{name}_fwdbwd_ms"] == 1.0, (name, r)
        assert set(r["lintutor_gated_grad_errs"]) == {"dq", "dk", "dv", "dg"}
        assert r["fla_chunk_gated_fwdbwd_ms"] is None  # refused: its error is recorded
        assert REFUSAL in r["fla_chunk_gated_fwdbwd_error"]
        for name in ("sdpa_flash", "sdpa_cudnn"):  # timed after its check, or its error kept
            assert r.get(f"{name}_fwd_err", 1) < 2e-2 or f"{name}_fwd_error" in r, name
        assert r["ratio_gated_fwd_to_fla"] == pytest.approx(1.0)
    d = res["decode"]
    assert d["lintutor_gated_err"] < 1e-2 and d["fla_recurrent_gated_err"] < 1e-2
    assert d["torch_step_err"] < 1e-4  # the graph-timed PyTorch step computes lesson 04's step
    assert d["lintutor_gated_graph_ms"] == 0.5 and d["ratio_to_fla"] == pytest.approx(1.0)
    lines = results.gated_table(res).splitlines()
    assert len(lines) == 2 + 4 + 1 and lines[-1].startswith("gated decode")
    targets = results.gated_targets(res)
    assert [t[1] for t in targets] == [False, False, None, None]  # 1.0x fla; D=128 absent
    assert "targets" in "\n".join(["targets"] + gated_gpu_check.targets_lines(res))


def test_a_wrong_gated_provider_is_recorded_and_not_timed(tiny):
    fla = fake_fla()
    wrong = (lambda *a, **kw: (fla[1](*a, **kw)[0] * 1.1, None), fla[1], fla[2])
    rows = kernel_bench.bench_gated_shapes(wrong, t_list=(64,), d_list=(16,),
                                           log=lambda *_: None)  # fmt: skip
    r = rows[0]
    assert r["fla_chunk_gated_fwd_err"] > 2e-2 and r["fla_chunk_gated_fwd_ms"] is None
    assert "fla_chunk_gated_fwdbwd_ms" not in r  # a forward that failed gets no backward
    assert r["lintutor_gated_fwd_ms"] == 1.0


def _gated_result():
    row = {"D": 128, "H": 16, "T": 2048, "B": 32, "lintutor_gated_fwd_ms": 0.5,
           "fla_chunk_gated_fwd_ms": 1.0, "fla_fused_chunk_gated_fwd_ms": 2.0,
           "lintutor_fwd_ms": 0.4, "lintutor_gated_fwdbwd_ms": 3.0, "lintutor_fwdbwd_ms": 2.5,
           "fla_chunk_fwdbwd_ms": 4.0, "fla_chunk_gated_fwdbwd_ms": None}  # fmt: skip
    decode = {"B": 64, "H": 16, "D": 128, "state_bytes_rw": 10**9, "gate_bytes": 0,
              "lintutor_gated_graph_ms": 0.6, "fla_recurrent_gated_graph_ms": 0.5,
              "lintutor_graph_ms": 0.55}  # fmt: skip
    return {"roofs": {"copy_TBps": 2.0}, "rows": [row], "decode": decode,
            "versions": {"gpu": "Some GPU"}}  # fmt: skip


def test_gated_floors_count_the_gate_and_ratios_use_the_fastest_fla():
    res = results.summarize_gated(_gated_result())
    r, unit = res["rows"][0], kernel_providers.TOKENS * kernel_providers.WIDTH * 2
    gate = kernel_providers.TOKENS * 16 * 4
    assert r["floor_gated_fwd_ms"] == pytest.approx((4 * unit + gate) / 2e12 * 1e3)
    assert r["floor_gated_fwdbwd_ms"] == pytest.approx((11 * unit + 3 * gate) / 2e12 * 1e3)
    assert r["fla_best_gated_fwd_ms"] == 1.0 and r["ratio_gated_fwd_to_fla"] == 0.5
    assert r["gate_cost_fwd"] == pytest.approx(1.25)
    assert r["ratio_gated_fwdbwd_to_fla_chunk_ungated"] == pytest.approx(0.75)
    assert r["ratio_gated_fwdbwd_to_ungated"] == pytest.approx(1.2)
    assert r["ratio_gated_fwdbwd_to_fla_gated"] is None  # fla's gated backward did not run
    d = res["decode"]
    assert d["floor_ms"] == pytest.approx(0.5) and d["lintutor_gated_graph_floor_ratio"] == 1.2
    ok = {name: met for name, met, _ in results.gated_targets(res)}
    assert list(ok.values())[:2] == [True, False]


def test_a_target_over_every_shape_is_not_met_while_shapes_are_unmeasured():
    """A run cut short by its budget: a target that passes at the measured shapes is 'not
    measured' (None), not 'met'; one that fails somewhere is 'not met' either way. Runs stored
    before `missing` existed carry the list in their `incomplete` note."""
    res = _gated_result()
    res["incomplete"] = "not measured (time budget): [(64, 1024), (128, 512)]"
    targets = results.gated_targets(res)
    assert results.missing_shapes(res) == [(64, 1024), (128, 512)]
    assert [t[1] for t in targets][:3] == [None, False, None]
    assert "1 shapes; 2 not measured" in targets[0][2] and "1 not measured" in targets[2][2]
    res["missing"] = []  # written by run_gated: it wins over the note
    assert results.gated_targets(res)[0][1] is True


def test_gated_figures_draw_without_a_gpu():
    res = _gated_result()
    for what in results.GATED_FIGURES:
        fig = results.gated_figure(res, 128, what)
        assert fig.data and "Some GPU" in fig.layout.title.text and fig.layout.width <= 900
    fig = results.floor_figure(res)
    assert fig.data and "gated decode" in fig.layout.title.text and fig.layout.width <= 900
    with pytest.raises(ValueError, match="what must be one of"):
        results.gated_figure(res, 128, "speed")


def test_forward_sweep_checks_settings_and_prints_winners_to_paste(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(kernel_tune, "CANDIDATES", {32: [(64, 32, 4, 2, False),
                                                         (16, 16, 4, 2, False)],
                                                    16: [(64, 16, 4, 2, False)]})  # fmt: skip
    out = tmp_path / "tune.json"
    res = kernel_tune.tune_forward(budget_s=600, log=lambda *_: None, out_path=str(out),
                                   t_short=(64,), t_long=(128,), d_list=(32, 16))  # fmt: skip
    assert json.loads(out.read_text())["paste"] == res["paste"]
    assert all(r["err"] < 1e-2 and r["ms"] == 1.0 for r in res["rows"])
    assert {r["BE"] for r in res["rows"] if r["D"] == 32 and not r["few"]} == {32, 16}
    assert any(r["few"] and r["segments"] == 1 for r in res["rows"])
    lines = res["paste"].splitlines()[1:]  # Python lines for chunked.FORWARD_CONFIGS
    table = eval("{" + "\n".join(lines) + "}", {"dict": dict})
    assert table and all(len(k) == 4 for k in table)
    for key, cfg in table.items():
        assert set(cfg) == set(chunked.forward_config(16, 16))  # the same fields as the table
        assert key[0] in (16, 32) and isinstance(key[2], bool)


STORED = sorted(glob.glob(os.path.join(ROOT, "assets", "gated_bench_*.json")))


@pytest.mark.parametrize("path", STORED, ids=[os.path.basename(p) for p in STORED])
def test_stored_gated_results_record_the_card_and_checked_providers(path):
    res = json.loads(open(path).read())
    assert res["versions"]["gpu"] and res["versions"]["triton"] and res["roofs"]["copy_TBps"] > 0.5
    for r in res["rows"]:
        for key, ms in r.items():  # every timed provider passed its correctness check first
            measured = "best" not in key and not key.startswith("floor_")  # not derived
            if key.endswith("_fwd_ms") and ms is not None and measured:
                assert r[key.replace("_ms", "_err")] < 2e-2, key
            if key.endswith("_fwdbwd_ms") and ms is not None and measured:
                assert r[key.replace("_fwdbwd_ms", "_grad_err")] < 3e-2, key


def test_gated_gpu_check_without_a_gpu_says_so(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gated_gpu_check.main(["--out", "unused"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_check_runs_the_tests_in_their_own_group_and_stops_them_at_the_budget(
    tmp_path, monkeypatch
):
    slow = tmp_path / "test_slow.py"
    slow.write_text("import time\n\ndef test_slow():\n    time.sleep(60)\n")
    monkeypatch.setattr(gated_gpu_check, "TESTS", [str(slow)])
    out = gated_gpu_check.run_tests(str(tmp_path), budget_s=4, log=lambda *_: None)
    assert out["rc"] == "timeout" and out["seconds"] < 30
    assert (tmp_path / "tests.log").exists()
