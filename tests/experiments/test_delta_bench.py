"""Lesson 09's GPU benchmark, run here on tiny shapes in the CPU interpreter with a stand-in
timer and a stand-in fla (computing the same thing in fla's layout and argument order): every
code path the GPU run takes, checks before timing, the JSON and the table and figure from it."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lintutor.delta_gated import gated_delta_rule_chunked, gated_delta_rule_step
from lintutor.experiments import _gpu, delta_bench
from lintutor.kernels._common import device


def fake_fla():
    """fla's two functions with fla's signatures, computed by the package (layout (B, T, H, D))."""

    def chunk(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
        t = lambda x: x.transpose(1, 2)  # noqa: E731
        o = gated_delta_rule_chunked(t(q), t(k), t(v), t(beta), t(g), scale=scale)
        return o.transpose(1, 2), None

    def recurrent(q, k, v, g=None, beta=None, scale=None, initial_state=None,
                  output_final_state=False):  # fmt: skip
        o, S = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], g[:, 0],
                                     initial_state, scale)  # fmt: skip
        return o.unsqueeze(1), S

    return chunk, recurrent


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(delta_bench, "DEVICE", device())
    monkeypatch.setattr(delta_bench, "TOKENS", 128)
    monkeypatch.setattr(delta_bench, "WIDTH", 32)
    calls = []

    def once(fn, *a, **kw):
        calls.append(fn)
        fn()
        return 1.0

    monkeypatch.setattr(_gpu, "bench", once)
    monkeypatch.setattr(_gpu, "bench_graph", once)
    return calls


def test_every_provider_is_checked_then_timed_and_fla_gets_its_argument_order(tiny):
    fla = fake_fla()
    checks = delta_bench.small_checks(fla, log=lambda *_: None, B=1, T=70, H=1, d_list=(16,))
    assert set(checks) >= {"D16_lintutor_rel", "D16_fla_chunk_rel", "D16_torch_chunked_rel"}
    assert all(v < 1e-2 for v in checks.values()), checks
    row = delta_bench.bench_shape(fla, 16, 64, bw=1e12, log=lambda *_: None)  # B = 2, H = 2
    for name in ("lintutor", "fla_chunk", "torch_chunked"):
        assert row[f"{name}_rel"] < delta_bench.TOL and row[f"{name}_fwd_ms"] == 1.0, row
    assert row["ratio_lintutor_to_fla"] == 1.0 and row["B"] == 2 and row["H"] == 2


def test_a_provider_that_is_wrong_is_recorded_and_not_timed(tiny):
    chunk, recurrent = fake_fla()

    def swapped(q, k, v, g, beta, scale=None, **kw):  # beta and g exchanged
        return chunk(q, k, v, beta.clamp(max=0) - 0.5, g.exp(), scale)

    row = delta_bench.bench_shape((swapped, recurrent), 16, 64, bw=1e12, log=lambda *_: None)
    assert "not timed" in row["fla_chunk_error"] and "fla_chunk_fwd_ms" not in row
    assert "lintutor_fwd_ms" in row


def test_decode_is_checked_timed_in_graphs_and_swept(tiny):
    out = delta_bench.bench_decode(fake_fla(), bw=1e12, log=lambda *_: None, B=2, H=1, D=16)
    assert out["lintutor_rel"] < 1e-2 and out["fla_recurrent_rel"] < 1e-2
    assert len(out["sweep"]) == 9 and out["lintutor_best"]["graph_ms"] == 1.0
    assert out["floor_ms"] == pytest.approx(2 * 2 * 16 * 16 * 4 / 1e12 * 1e3)


def test_table_and_figure_read_a_result(tiny):
    fla = fake_fla()
    result = {"versions": {"gpu": "NVIDIA H200", "torch": "x", "triton": "y", "fla": "z"},
              "roofs": {"copy_TBps": 4.0},
              "rows": [delta_bench.bench_shape(fla, 16, 64, bw=4e12, log=lambda *_: None)],
              "decode": delta_bench.bench_decode(fla, 4e12, log=lambda *_: None, sweep=False,
                                                 B=2, H=1, D=16)}  # fmt: skip
    text = delta_bench.table(result)
    assert "NVIDIA H200" in text and "decode B=2" in text
    fig = delta_bench.figure(result)
    assert {t.name for t in fig.data} >= {"lintutor", "fla chunk_gated_delta_rule"}


def test_run_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        delta_bench.run(quick=True)


def test_stored_runs_take_the_full_sweep_else_the_quick_run_and_never_a_tune(tmp_path):
    for name in ("delta_bench_h200_quick.json", "delta_bench_h100_quick.json",
                 "delta_bench_h100.json", "delta_bench_h200_tune.json", "delta_mqar_cpu.json",
                 "delta_bench_.json"):  # fmt: skip
        (tmp_path / name).write_text("{}")
    runs = delta_bench.stored_runs(str(tmp_path))
    assert runs == {"h100": str(tmp_path / "delta_bench_h100.json"),
                    "h200": str(tmp_path / "delta_bench_h200_quick.json")}  # fmt: skip
    assert delta_bench.stored_runs(str(tmp_path / "missing")) == {}


class _NoHostRead(TorchDispatchMode):
    """Fails on what a CUDA graph cannot capture: reading a tensor's value back to the host."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            raise AssertionError(f"reads a value back to the host: {func}")
        return func(*args, **(kwargs or {}))


def test_the_pytorch_step_timed_in_a_graph_reads_nothing_back(tiny, monkeypatch):
    """On the H200 lesson 09's live benchmark died capturing the PyTorch step: its input check
    (g <= 0) reads a value back, which a capturing stream refuses. The graph times the step's
    math, checked against the step first."""
    graphed = []
    monkeypatch.setattr(_gpu, "bench_graph", lambda fn, *a, **k: graphed.append(fn) or 1.0)
    out = delta_bench.bench_decode(None, bw=1e12, log=lambda *_: None, B=2, H=1, D=16, sweep=False)
    assert out["torch_step_rel"] < 1e-6 and len(graphed) == 2  # lintutor's kernel, then PyTorch
    with _NoHostRead():
        graphed[1]()
    q, k, v = (torch.randn(2, 1, 16) for _ in range(3))
    beta, g, S = torch.rand(2, 1), -torch.rand(2, 1), torch.randn(2, 1, 16, 16)
    with pytest.raises(AssertionError, match="host"), _NoHostRead():
        gated_delta_rule_step(q, k, v, beta, g, S, 0.25)  # the checked step could not be graphed


def test_a_time_budget_stops_before_a_new_shape_and_lists_the_rest(tmp_path, monkeypatch):
    """run(budget_s=...) measures the shapes in the order (T, then both head dims), starts no
    shape once the budget is spent, names the shapes left in 'incomplete', and the stored file
    holds exactly the rows measured."""
    import json

    clock = [0.0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(delta_bench, "fla_ops", lambda: None)
    monkeypatch.setattr(_gpu, "versions", lambda: {"gpu": "Test Card"})
    monkeypatch.setattr(_gpu, "roofs", lambda: {"copy_TBps": 1.0})
    monkeypatch.setattr(delta_bench, "small_checks", lambda fla, log, d_list: {"d": list(d_list)})
    monkeypatch.setattr(delta_bench, "bench_decode", lambda fla, bw, log, sweep: {"sweep": sweep})
    monkeypatch.setattr(delta_bench, "table", lambda result: "")
    measured = []

    def shape(fla, D, T, bw, log):
        measured.append((D, T))
        clock[0] += 10.0  # each shape takes 10 "seconds"
        return {"D": D, "T": T}

    monkeypatch.setattr(delta_bench, "bench_shape", shape)
    monkeypatch.setattr("time.perf_counter", lambda: clock[0])
    result = delta_bench.run(out_dir=str(tmp_path), log=lambda *a: None, budget_s=25.0)
    assert measured == [(64, 512), (128, 512), (64, 2048)]  # 0, 10, 20 s < 25 s; 30 s is over
    left = [(D, T) for T in delta_bench.T_LIST for D in (64, 128)][3:]
    assert result["incomplete"] == f"not measured (time budget): {left}"
    stored = json.loads((tmp_path / "delta_bench_card.json").read_text())
    assert [(r["D"], r["T"]) for r in stored["rows"]] == measured
    assert stored["decode"] == {"sweep": True} and stored["checks"] == {"d": [64, 128]}
    monkeypatch.setattr(delta_bench, "bench_shape", shape)
    measured.clear()
    full = delta_bench.run(out_dir=str(tmp_path), log=lambda *a: None)
    assert "incomplete" not in full and len(measured) == 2 * len(delta_bench.T_LIST)
