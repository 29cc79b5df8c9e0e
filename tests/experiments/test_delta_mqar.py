"""Lesson 09's MQAR experiment: the job list, a tiny run end to end, and the stored run that the
lesson plots (complete: every model and number of pairs it promises, with every seed)."""

import json

from lintutor.experiments import delta_mqar as m
from lintutor.experiments.results import asset_path

ABLATION = "DeltaNet (beta starts at 0.5)"


def test_a_tiny_run_trains_each_job_once_and_the_beta_row_only_where_it_is_promised(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(m, "PAIRS", (4, 16))
    monkeypatch.setattr(m, "ABLATION_PAIRS", (16,))
    out = tmp_path / "mqar.json"
    result = m.run(seeds=2, steps=2, models=["linear", ABLATION], out=str(out), log=lambda *_: None)
    jobs = sorted((r["model"], r["pairs"], r["seed"]) for r in result["runs"])
    assert jobs == sorted(
        [("linear", p, s) for p in (4, 16) for s in (0, 1)] + [(ABLATION, 16, s) for s in (0, 1)]
    )
    assert all(r["n_seeds"] == 2 for r in result["rows"])
    assert all(0.0 <= r["accuracy"]["min"] <= r["accuracy"]["max"] <= 1.0 for r in result["rows"])
    assert json.loads(out.read_text())["rows"] == result["rows"]  # saved after every run
    text = m.table(result)
    (ablation_line,) = [line for line in text.splitlines() if line.startswith(ABLATION)]
    assert ablation_line[30:50].strip() == "-"  # no 4-pair run of the beta = 0.5 row
    assert {t.name for t in m.figure(result).data} == {"linear", ABLATION}


def test_state_sizes_are_equal_for_every_linear_mixer_and_softmax_grows_with_t():
    sizes = {name: m.state_numbers(name, 32) for name in m.MODELS}
    assert {sizes[n] for n in m.MODELS if n != "softmax"} == {
        m.N_HEADS * (m.D_MODEL // m.N_HEADS) ** 2
    }
    assert m.state_numbers("softmax", 32) > m.state_numbers("softmax", 4) > sizes["linear"]


def test_the_stored_run_is_complete_and_its_summary_matches_its_runs():
    with open(asset_path("delta_mqar_cpu.json")) as fh:
        stored = json.load(fh)
    seeds = stored["setting"]["seeds"]
    pairs = stored["setting"]["pairs"]
    promised = {(n, p) for n in m.MODELS for p in pairs if n != ABLATION or p in m.ABLATION_PAIRS}
    rows = {(r["model"], r["pairs"]): r for r in stored["rows"]}
    assert set(rows) == promised
    for key, row in rows.items():
        accs = [r["accuracy"] for r in stored["runs"] if (r["model"], r["pairs"]) == key]
        assert row["n_seeds"] == len(accs) == len(seeds), key
        assert abs(row["accuracy"]["mean"] - sum(accs) / len(accs)) < 1e-12, key
    assert m.table(stored).count("\n") == len(m.MODELS)  # a header and one line per model
