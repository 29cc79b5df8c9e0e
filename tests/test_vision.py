"""The ablation's model and data: digits are bundled and split, patches are in raster order,
training learns the digits, accuracy counts right answers. (The ablation rows:
tests/experiments/test_mlla_ablation.py.)"""

import pytest
import torch

from lintutor.vision import BASELINE, TinyViT, accuracy, digits, patchify, train_classifier


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


def test_training_fits_a_small_set(data):
    torch.manual_seed(0)
    model = TinyViT(BASELINE)
    loss = train_classifier(model, (data[0][:128], data[1][:128]), epochs=40)
    assert loss < 2.0  # log(10) = 2.30 at chance
    assert accuracy(model, data[0][:128], data[1][:128]) > 25  # chance is 10 %


def test_accuracy_counts_right_answers():
    class Fixed(torch.nn.Module):
        def forward(self, x, perm=None):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()

    y = torch.tensor([0, 0, 1, 2])
    assert accuracy(Fixed(), torch.zeros(4, 1, 8, 8), y) == 50.0
