"""A small EfficientViT segmenter for the procedural scenes, with the ablation's switches
(lesson 06).

Data: `lintutor.data.scene_batch`, 2-4 occluding squares and discs; per-pixel classes
background / the object with the largest visible area / other objects. A pixel's class needs
local detail (whose pixel is it) and global context (is that object the largest one).

Model (images (B, 3, r, r) -> logits (B, 3, r, r)):
    stem   3x3 conv, stride 2, BatchNorm, Hardswish     (B, width, r/2, r/2): the token grid
    blocks EfficientViT blocks (LiteMLA + MBConv), as `lintutor.efficientvit`
    head   bilinear x2 upsampling + a 3x3 conv of the input image, Hardswish, 1x1 conv to classes

The released segmentation model fuses several backbone stages in its head; ours keeps one stage
and one full-resolution conv for sharp edges. Switches (`Switches`), the poster's 2x2 ablation:

    multi_scale       False: no aggregated tokens (scales=()), only the 1x1 qkv
    global_attention  False: each token keeps its own v (LiteMLA's attention replaced by the
                      identity; the parameters stay the same)
    softmax           True: softmax(q k^T / sqrt(dim)) attention instead of ReLU linear attention
    depthwise_ffn     False: MBConv without its depthwise conv

Scores: mIoU over the three classes, intersections and unions summed over the whole test set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lintutor.data import SCENE_CLASSES, scene_batch
from lintutor.efficientvit import EPS, EfficientViTBlock
from lintutor.featuremaps import relu
from lintutor.linear import attention_entropy, linear_attention_weights
from lintutor.softmax import attention_weights

TEST_SEED = 999_999_937  # the test scenes; training scenes use seed * 1_000_003 + step
N_MASKS = 4  # predicted masks stored for the first test scenes (seed 0 of each row)


@dataclass(frozen=True)
class Switches:
    """What the model's blocks contain; the defaults are EfficientViT's."""

    multi_scale: bool = True
    global_attention: bool = True
    softmax: bool = False
    depthwise_ffn: bool = True


# The poster's 2x2 ablation (multi-scale tokens x global attention), and softmax as a reference.
ABLATION_ROWS = {
    "neither": Switches(multi_scale=False, global_attention=False),
    "multi-scale only": Switches(multi_scale=True, global_attention=False),
    "global attention only": Switches(multi_scale=False, global_attention=True),
    "both (EfficientViT)": Switches(),
}
SOFTMAX_ROW = {"both, softmax attention": Switches(softmax=True)}

# Cai et al., ICCV 2023 poster: Cityscapes mIoU of the four combinations at equal model size.
POSTER_MIOU = {
    "neither": 68.1,
    "multi-scale only": 72.3,
    "global attention only": 72.2,
    "both (EfficientViT)": 74.5,
}


class SceneSegmenter(nn.Module):
    """Stem -> EfficientViT blocks on the r/2 x r/2 grid -> upsample + image detail -> classes."""

    def __init__(self, switches=Switches(), width=32, dim=8, depth=2, scales=(5,), n_classes=3):
        super().__init__()
        self.switches = switches
        attention = (
            "none" if not switches.global_attention else ("softmax" if switches.softmax else "relu")
        )
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.Hardswish(),
        )
        self.blocks = nn.ModuleList(
            EfficientViTBlock(
                width,
                dim,
                scales if switches.multi_scale else (),
                attention,
                depthwise=switches.depthwise_ffn,
            )
            for _ in range(depth)
        )
        self.detail = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        )
        self.classify = nn.Conv2d(width, n_classes, 1)

    def features(self, images):
        """(B, width, r/2, r/2): the token grid after the blocks."""
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, images):
        x = F.interpolate(self.features(images), size=images.shape[-2:], mode="bilinear")
        return self.classify(F.hardswish(x + self.detail(images)))  # (B, n_classes, r, r)


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def train_segmenter(
    model, steps=600, batch=32, lr=4e-3, seed=0, resolution=32, weight_decay=0.01, log_every=0,
    progress=True, desc="training",
):  # fmt: skip
    """AdamW + one-cycle on fresh scenes every step; returns the list of training losses.

    The model is moved to channels-last memory (on CPU its depthwise convs train ~3x faster).
    progress: a bar over the steps (`lintutor.progress.bar`; $LINTUTOR_PROGRESS=off hides it)
    with the mean loss of the last steps; it changes nothing else (same seed, same losses).
    """
    from lintutor.progress import bar as progress_bar

    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    every = max(1, steps // 20)
    bar = progress_bar(range(steps), desc=desc, disable=not progress)
    for step in bar:
        images, labels = scene_batch(batch, resolution, seed=seed * 1_000_003 + step)
        images = images.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % every == 0:
            bar.set_postfix(loss=f"{sum(losses[-every:]) / every:.3f}")
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}: loss {sum(losses[-log_every:]) / log_every:.3f}")
    return losses


def test_scenes(n=256, resolution=32):
    """The fixed test set: (images, labels), never seen in training."""
    return scene_batch(n, resolution, seed=TEST_SEED)


@torch.no_grad()
def predict(model, images, batch=128):
    """Predicted classes (B, r, r)."""
    model.eval()
    return torch.cat([model(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)])


def confusion(pred, labels, n_classes=3):
    """(n_classes, n_classes) counts, rows = true class, columns = predicted."""
    idx = labels.flatten() * n_classes + pred.flatten()
    return torch.bincount(idx, minlength=n_classes * n_classes).view(n_classes, n_classes)


def iou_per_class(pred, labels, n_classes=3):
    """IoU of each class in %: TP / (TP + FP + FN) over all pixels of the set."""
    cm = confusion(pred, labels, n_classes).double()
    tp = cm.diag()
    return (100 * tp / (cm.sum(0) + cm.sum(1) - tp).clamp_min(1)).tolist()


def miou(pred, labels, n_classes=3) -> float:
    """Mean IoU over the classes, in %."""
    ious = iou_per_class(pred, labels, n_classes)
    return sum(ious) / len(ious)


@torch.no_grad()
def attention_maps(model, images, block=-1):
    """Attention weights (B, H, T, T) of one block's LiteMLA, H = every scale's heads: ReLU
    linear attention's (never built by the model itself; a row sums to 1, or to 0 where ReLU(q)
    is all zero) or softmax's."""
    model.eval()
    x = model.stem(images)
    for b in model.blocks[: len(model.blocks) + block if block < 0 else block]:
        x = b(x)
    mla = model.blocks[block].context
    q, k, _ = mla.heads_qkv(x)  # (B, H, T, dim) each
    if mla.attention == "softmax":
        return attention_weights(q, k)
    if mla.attention == "none":
        return torch.eye(q.shape[2]).expand(*q.shape[:2], -1, -1)
    return linear_attention_weights(relu(q), relu(k), eps=EPS)


def object_token(labels, stride=2):
    """(row, col) of the token under the centre of the largest visible object (class 1) of one
    label map (r, r), on the grid of r / stride tokens."""
    rows, cols = torch.nonzero(labels == 1, as_tuple=True)
    return int(rows.float().mean()) // stride, int(cols.float().mean()) // stride


@torch.no_grad()
def attention_summary(model, images, labels, example=True, block=-1):
    """How one block attends on test images: the mean entropy (nats) of its rows over images,
    heads and queries (rows that are all zero, ReLU(q) = 0, left out), log(T) for comparison
    (a uniform row), and, if `example`, the maps (H, grid, grid) of image 0's query token at
    the centre of its largest visible object, with their entropies."""
    maps = attention_maps(model, images, block)  # (B, H, T, T)
    rows = maps.sum(-1) > 0.5  # (B, H, T)
    ent = attention_entropy(maps)  # (B, H, T)
    grid = int(round(maps.shape[-1] ** 0.5))
    out = {
        "mean_entropy": float(ent[rows].mean()),
        "uniform_entropy": float(torch.log(torch.tensor(float(maps.shape[-1])))),
        "dead_query_fraction": float(1 - rows.float().mean()),
    }
    if example:
        r, c = object_token(labels[0], images.shape[-1] // grid)
        q = r * grid + c
        out["example"] = {
            "image": 0,
            "query": [r, c],
            "entropy": [round(float(e), 4) for e in ent[0, :, q]],
            "maps": maps[0, :, q].reshape(-1, grid, grid).double().round(decimals=5).tolist(),
        }
    return out


def run_row(switches, seed=0, steps=600, batch=32, lr=4e-3, width=32, n_test=256, resolution=32,
            progress=False):  # fmt: skip
    """Train one ablation row from seed `seed`; test mIoU and per-class IoU on the test set, and
    for rows with attention its `attention_summary` on 32 test scenes; for seed 0 also the
    attention example and the predicted masks of the first N_MASKS test scenes.
    progress: the training's bar (off by default: the ablation runs rows in parallel workers,
    whose bars would overwrite each other, and logs one line per finished row instead)."""
    torch.manual_seed(seed)
    model = SceneSegmenter(switches, width=width)
    t0 = time.perf_counter()
    losses = train_segmenter(model, steps, batch, lr, seed, resolution, progress=progress)
    seconds = time.perf_counter() - t0
    images, labels = test_scenes(n_test, resolution)
    pred = predict(model, images)
    ious = iou_per_class(pred, labels)
    attention = None
    if switches.global_attention:
        attention = attention_summary(model, images[:32], labels[:32], example=seed == 0)
    masks = None
    if seed == 0:  # predicted classes of the first test scenes, one string of digits per row
        masks = [["".join(map(str, row)) for row in m.tolist()] for m in pred[:N_MASKS]]
    return {
        "seed": seed,
        "miou": sum(ious) / len(ious),
        "iou": dict(zip(SCENE_CLASSES, ious)),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "params": parameter_count(model),
        "train_seconds": seconds,
        "attention": attention,
        "masks": masks,
    }


def decode_masks(masks):
    """Stored masks (lists of digit strings) back to a (n, r, r) tensor of classes."""
    return torch.tensor([[[int(c) for c in row] for row in m] for m in masks])
