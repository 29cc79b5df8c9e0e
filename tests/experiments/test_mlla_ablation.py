"""The MLLA ablation: each row is one change to the baseline with a paper number, only the rows
with position see the patch order, a row reports plain and shuffled accuracy, and the stored
run reads back without training."""

import pytest
import torch

from lintutor.experiments.mlla_ablation import ABLATION_ROWS, PAPER_TOP1, figure, run_row, table
from lintutor.vision import BASELINE, TinyViT, digits


@pytest.fixture(scope="module")
def data():
    return digits()


def test_every_row_is_one_change_and_has_a_paper_number():
    assert set(ABLATION_ROWS) == set(PAPER_TOP1)
    for name, f in ABLATION_ROWS.items():
        changed = [k for k in vars(BASELINE) if getattr(f, k) != getattr(BASELINE, k)]
        assert len(changed) == (0 if name.startswith("baseline") else 1), (name, changed)


POSITIONAL = {"+ forget gate", "Mamba block design", "+ APE", "+ LePE", "+ CPE", "+ RoPE"}


@pytest.mark.parametrize("name", list(ABLATION_ROWS))
def test_only_positional_rows_see_patch_order(name):
    torch.manual_seed(0)
    model = TinyViT(ABLATION_ROWS[name]).eval()
    if name == "+ APE":  # APE starts tiny; make it visible
        model.ape.data.normal_()
    x = torch.rand(4, 1, 8, 8)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    same = torch.allclose(model(x), model(x, perm), atol=1e-5)
    assert same != (name in POSITIONAL), name


def test_run_row_reports_plain_and_shuffled_accuracy(data):
    tiny = (data[0][:64], data[1][:64], data[2][:50], data[3][:50])
    r = run_row(BASELINE, tiny, epochs=1, n_perms=2)
    assert set(r) >= {"test_acc", "shuffled_acc", "train_loss", "params"}
    assert r["shuffled_acc"] == pytest.approx(r["test_acc"])  # no position: order is invisible


def test_stored_ablation_reads_back_with_every_row():
    lines = table().splitlines()
    assert len(lines) == 2 + len(ABLATION_ROWS)
    assert [line[:30].strip() for line in lines[2:]] == list(ABLATION_ROWS)
    assert len(figure().data) == 3


def _fake(rows):
    """A stored-run dict with the given {name: (paper top-1, [test accuracy per seed])}."""
    return {"rows": [{"name": name, "paper_top1": paper,
                      "runs": [{"test_acc": a, "shuffled_acc": a} for a in accs]}
                     for name, (paper, accs) in rows.items()]}  # fmt: skip


def test_changes_are_each_row_minus_its_own_baseline():
    from lintutor.experiments.mlla_ablation import changes

    rows = changes(_fake({"baseline (linear attention)": (77.6, [70.0, 71.0, 72.0]),
                          "clear": (80.0, [90.0, 91.0, 92.5]),
                          "noise": (77.8, [69.0, 73.0, 71.5])}))  # fmt: skip
    base, clear, noise = rows
    assert base["test_acc"]["change"] == 0 and base["paper"] == 0 and base["test_acc"]["p"] == 1
    assert clear["test_acc"]["change"] == pytest.approx(91.1666667 - 71.0)
    assert clear["paper"] == pytest.approx(2.4) and noise["paper"] == pytest.approx(0.2)
    assert clear["test_acc"]["p"] < 0.001 < 0.5 < noise["test_acc"]["p"]
    want_se = ((1.0 + 19 / 12) / 3) ** 0.5  # sample variances: baseline 1, row 19/12
    assert clear["test_acc"]["se"] == pytest.approx(want_se)
    stored = changes()  # the committed run reads back with every row
    assert [r["name"] for r in stored] == list(ABLATION_ROWS)
