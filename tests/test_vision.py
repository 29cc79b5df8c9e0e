"""The ablation model: each switch changes the model, position-free rows ignore patch order, and
training learns the digits."""

import pytest
import torch

from lintutor.vision import (
    ABLATION_ROWS,
    BASELINE,
    PAPER_TOP1,
    TinyViT,
    accuracy,
    digits,
    patchify,
    run_row,
    train_classifier,
)


@pytest.fixture(scope="module")
def data():
    return digits()


def test_digits_are_bundled_and_split(data):
    x_train, y_train, x_test, y_test = data
    assert x_train.shape[1:] == (1, 8, 8) and len(x_train) + len(x_test) == 1797
    assert 0 <= x_train.min() and x_train.max() <= 1
    assert set(y_test.tolist()) == set(range(10))


def test_patchify_is_raster_order():
    img = torch.arange(64.0).view(1, 1, 8, 8)
    p = patchify(img)
    assert p.shape == (1, 16, 4)
    assert p[0, 0].tolist() == [0, 1, 8, 9] and p[0, 1].tolist() == [2, 3, 10, 11]
    assert p[0, 4].tolist() == [16, 17, 24, 25]


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


def test_training_fits_a_small_set(data):
    torch.manual_seed(0)
    model = TinyViT(BASELINE)
    loss = train_classifier(model, (data[0][:128], data[1][:128]), epochs=40)
    assert loss < 2.0  # log(10) = 2.30 at chance
    assert accuracy(model, data[0][:128], data[1][:128]) > 25  # chance is 10 %


def test_run_row_reports_plain_and_shuffled_accuracy(data):
    tiny = (data[0][:64], data[1][:64], data[2][:50], data[3][:50])
    r = run_row(BASELINE, tiny, epochs=1, n_perms=2)
    assert set(r) >= {"test_acc", "shuffled_acc", "train_loss", "params"}
    assert r["shuffled_acc"] == pytest.approx(r["test_acc"])  # no position: order is invisible


def test_accuracy_counts_right_answers():
    class Fixed(torch.nn.Module):
        def forward(self, x, perm=None):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()

    y = torch.tensor([0, 0, 1, 2])
    assert accuracy(Fixed(), torch.zeros(4, 1, 8, 8), y) == 50.0
