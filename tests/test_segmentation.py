"""The procedural scenes (labels are the largest VISIBLE object, after occlusion) and the small
EfficientViT segmenter: shapes at any resolution, the switches, gradients, mIoU, attention maps."""

import math

import pytest
import torch
import torch.nn.functional as F

from lintutor.data import SCENE_CLASSES, render_scenes, scene_batch, scene_labels, scene_objects
from lintutor.segmentation import (
    ABLATION_ROWS,
    POSTER_MIOU,
    SOFTMAX_ROW,
    SceneSegmenter,
    Switches,
    attention_maps,
    attention_summary,
    iou_per_class,
    miou,
    object_token,
    parameter_count,
    predict,
    train_segmenter,
)


def _owner_by_pixel(objects, b, r):
    """Which object each pixel centre shows, one pixel at a time (back to front)."""
    owner = [[-1] * r for _ in range(r)]
    N = objects["present"].shape[1]
    for i in range(N):
        if not objects["present"][b, i]:
            continue
        cx, cy, s = (float(objects[k][b, i]) for k in ("cx", "cy", "size"))
        for row in range(r):
            for col in range(r):
                x, y = (col + 0.5) / r, (row + 0.5) / r
                if objects["disc"][b, i]:
                    inside = (x - cx) ** 2 + (y - cy) ** 2 <= s * s
                else:
                    inside = max(abs(x - cx), abs(y - cy)) <= s
                if inside:
                    owner[row][col] = i
    return owner


@pytest.mark.parametrize("r", [16, 17], ids=["16x16", "odd 17x17"])
def test_labels_are_the_largest_visible_object(r):
    objects = scene_objects(12, seed=3)
    _, labels = scene_batch(12, r, seed=3)
    for b in range(12):
        owner = _owner_by_pixel(objects, b, r)
        flat = [o for row in owner for o in row]
        areas = {i: flat.count(i) for i in set(flat) if i >= 0}
        largest = max(areas, key=lambda i: (areas[i], -i))  # the first on a tie
        want = [[0 if o < 0 else (1 if o == largest else 2) for o in row] for row in owner]
        assert labels[b].tolist() == want, f"scene {b}"


def test_occlusion_decides_which_object_is_largest():
    """Some scenes have a drawn object that is the largest but is mostly hidden: the label goes
    to the object with the largest visible area, not the largest drawn one."""
    objects = scene_objects(400, seed=0)
    _, owner = render_scenes(objects, 32)
    labels = scene_labels(owner, 4)
    full = []
    for i in range(4):  # each object drawn alone: its full area
        alone = {k: v.clone() for k, v in objects.items()}
        alone["present"] = torch.zeros_like(objects["present"])
        alone["present"][:, i] = objects["present"][:, i]
        full.append((render_scenes(alone, 32)[1] == i).sum((1, 2)))
    full = torch.stack(full, 1)  # (400, 4)
    visible = (owner.unsqueeze(1) == torch.arange(4).view(1, 4, 1, 1)).sum((2, 3))
    differ = full.argmax(1) != visible.argmax(1)
    assert differ.sum() >= 5  # occlusion changes the answer in a few percent of the scenes
    for b in torch.nonzero(differ).flatten()[:5].tolist():
        largest = int(visible[b].argmax())
        assert ((labels[b] == 1) == (owner[b] == largest)).all()
        assert not (labels[b] == 1)[owner[b] == int(full[b].argmax())].any()


def test_scenes_are_seeded_bounded_and_any_resolution():
    a, la = scene_batch(8, 24, seed=5)
    b, lb = scene_batch(8, 24, seed=5)
    c, _ = scene_batch(8, 24, seed=6)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert a.shape == (8, 3, 24, 24) and la.shape == (8, 24, 24) and la.dtype == torch.long
    assert 0 <= a.min() and a.max() <= 1
    assert set(la.unique().tolist()) == {0, 1, 2} and len(SCENE_CLASSES) == 3
    for r in (9, 31, 64):
        img, lab = scene_batch(2, r, seed=5)
        assert img.shape == (2, 3, r, r) and lab.shape == (2, r, r)
    # the same objects at two resolutions: the class fractions agree to the pixel grid
    _, l32 = scene_batch(64, 32, seed=1)
    _, l128 = scene_batch(64, 128, seed=1)
    f32 = torch.stack([(l32 == c).float().mean() for c in range(3)])
    f128 = torch.stack([(l128 == c).float().mean() for c in range(3)])
    assert (f32 - f128).abs().max() < 0.02


def test_a_scene_does_not_depend_on_the_batch_size():
    small, small_labels = scene_batch(5, 24, seed=9)
    large, large_labels = scene_batch(40, 24, seed=9)
    assert torch.equal(small, large[:5]) and torch.equal(small_labels, large_labels[:5])


def test_every_scene_has_one_largest_object_and_two_to_four_objects():
    objects = scene_objects(200, seed=2)
    count = objects["present"].sum(1)
    assert count.min() == 2 and count.max() == 4
    _, owner = render_scenes(objects, 32)
    labels = scene_labels(owner, 4)
    for b in range(200):
        owners_of_largest = owner[b][labels[b] == 1].unique()
        assert len(owners_of_largest) == 1


def test_bad_object_counts_are_reported():
    with pytest.raises(ValueError, match="min_objects"):
        scene_objects(2, min_objects=3, max_objects=2)


@pytest.mark.parametrize("name", list(ABLATION_ROWS) + list(SOFTMAX_ROW))
def test_model_shapes_and_gradients(name):
    switches = {**ABLATION_ROWS, **SOFTMAX_ROW}[name]
    torch.manual_seed(0)
    model = SceneSegmenter(switches, width=16)
    for r in (32, 22):
        images, labels = scene_batch(2, r, seed=0)
        logits = model(images)
        assert logits.shape == (2, 3, r, r)
    F.cross_entropy(logits, labels).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_switches_change_the_blocks():
    full = SceneSegmenter(Switches(), width=16)
    no_ms = SceneSegmenter(Switches(multi_scale=False), width=16)
    no_att = SceneSegmenter(Switches(global_attention=False), width=16)
    soft = SceneSegmenter(Switches(softmax=True), width=16)
    no_dw = SceneSegmenter(Switches(depthwise_ffn=False), width=16)
    assert [b.context.scales for b in full.blocks] == [(5,), (5,)]
    assert all(b.context.scales == () for b in no_ms.blocks)
    assert parameter_count(no_ms) < parameter_count(full)
    assert parameter_count(no_att) == parameter_count(full) == parameter_count(soft)
    kinds = [b.context.attention for b in no_att.blocks + soft.blocks]
    assert kinds == ["none", "none", "softmax", "softmax"]
    assert parameter_count(no_dw) < parameter_count(full)
    assert set(POSTER_MIOU) == set(ABLATION_ROWS)


def test_global_attention_mixes_distant_tokens_and_its_absence_does_not():
    torch.manual_seed(0)
    images, _ = scene_batch(1, 32, seed=0)
    for switches, far_effect in [
        (Switches(multi_scale=False), True),
        (Switches(global_attention=False, multi_scale=False), False),
    ]:
        model = SceneSegmenter(switches, width=16, depth=1).eval()
        x = model.stem(images).detach().requires_grad_()
        model.blocks[0].context(x)[0, :, 0, 0].sum().backward()  # the top-left token
        assert (x.grad[0, :, 8:, 8:].abs().sum() > 0) == far_effect


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    model = SceneSegmenter(Switches(), width=16)
    losses = train_segmenter(model, steps=40, batch=8, lr=5e-3)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_miou_by_hand():
    labels = torch.tensor([[0, 0, 1, 2]])
    pred = torch.tensor([[0, 1, 1, 2]])
    # background: TP 1, FN 1 -> 1/2; class 1: TP 1, FP 1 -> 1/2; class 2: 1/1
    assert iou_per_class(pred, labels) == pytest.approx([50.0, 50.0, 100.0])
    assert miou(pred, labels) == pytest.approx(200 / 3)
    assert miou(labels, labels) == 100.0


def test_predict_and_attention_maps():
    torch.manual_seed(0)
    images, _ = scene_batch(3, 32, seed=1)
    for switches in (Switches(), Switches(softmax=True)):
        model = SceneSegmenter(switches, width=16)
        pred = predict(model, images, batch=2)
        assert pred.shape == (3, 32, 32) and pred.dtype == torch.long
        maps = attention_maps(model, images)
        heads = 16 // 8 * 2
        assert maps.shape == (3, heads, 256, 256)
        rows = maps.sum(-1)  # 1, or 0 for a ReLU query that is all zero (its output is 0)
        assert ((rows - 1).abs() < 1e-5).logical_or(rows == 0).all() and (rows > 0.5).any()
        assert (maps >= 0).all()
    first = attention_maps(model, images, block=0)
    assert first.shape == maps.shape and not torch.allclose(first, maps)


def test_object_token_is_the_centre_of_the_largest_object():
    labels = torch.zeros(32, 32, dtype=torch.long)
    labels[4:9, 20:31] = 1  # rows 4..8, columns 20..30: centre (6, 25) -> token (3, 12)
    labels[20:30, 0:5] = 2
    assert object_token(labels) == (3, 12)


def test_attention_summary_entropies():
    torch.manual_seed(0)
    images, labels = scene_batch(4, 32, seed=2)
    for switches in (Switches(), Switches(softmax=True)):
        model = SceneSegmenter(switches, width=16)
        s = attention_summary(model, images, labels)
        assert 0 < s["mean_entropy"] <= s["uniform_entropy"] + 1e-5
        assert s["uniform_entropy"] == pytest.approx(math.log(256))
        ex = s["example"]
        assert len(ex["maps"]) == 4 and len(ex["maps"][0]) == 16 and len(ex["maps"][0][0]) == 16
        for m, e in zip(ex["maps"], ex["entropy"]):
            w = torch.tensor(m).flatten()
            assert w.sum() == pytest.approx(1, abs=1e-3) or w.sum() == 0
            assert e == pytest.approx(float(-(w * torch.log(w + 1e-12)).sum()), abs=0.01)
    # softmax at initialization is almost uniform; the summary says so
    assert s["mean_entropy"] > 0.99 * s["uniform_entropy"]
    assert "example" not in attention_summary(model, images, labels, example=False)
