"""The lessons' trainings draw a bar: lesson 05's classifier (vision.train_classifier and the
ablation's run_row), lesson 06's segmenter (segmentation.train_segmenter), models.train; the widget
bar in a notebook kernel, a text bar in a terminal or with $LINTUTOR_PROGRESS=text, none with
progress=False or $LINTUTOR_PROGRESS=off; a bar changes no result; the ablation runners, whose
rows train in parallel workers, draw none per row; no lesson turns a training's bar off."""

import glob
import os
import re
import subprocess
import sys

import nbformat
import pytest
import torch

from lintutor import segmentation as seg
from lintutor import vision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny versions of the lessons' trainings, each with its own desc, so a bar names its training.
TRAININGS = """
import torch
from lintutor import segmentation as seg, vision
from lintutor.experiments import mlla_ablation
from lintutor.models import TinyLM, train
from lintutor.data import mqar_batch_fn

g = torch.Generator().manual_seed(0)
tiny = (torch.rand(32, 1, 8, 8, generator=g), torch.randint(10, (32,), generator=g),
        torch.rand(16, 1, 8, 8, generator=g), torch.randint(10, (16,), generator=g))
torch.manual_seed(0)
vision.train_classifier(vision.TinyViT(), tiny, epochs=2, batch=16, desc="cls-bar")
mlla_ablation.run_row(mlla_ablation.ABLATION_ROWS["+ LePE"], tiny, epochs=1, n_perms=1)
seg.train_segmenter(seg.SceneSegmenter(width=8, depth=1), steps=3, batch=2, resolution=16,
                    desc="seg-bar")
train(TinyLM(16, d_model=8, n_layers=1, n_heads=2, max_len=12), mqar_batch_fn(4, 12, 2, 16), 3,
      desc="lm-bar")
"""
BARS = ("cls-bar: 100%", "+ LePE: 100%", "seg-bar: 100%", "lm-bar: 100%")

QUIET = """
vision.train_classifier(vision.TinyViT(), tiny, epochs=1, batch=16, desc="q1", progress=False)
seg.train_segmenter(seg.SceneSegmenter(width=8, depth=1), steps=2, batch=2, resolution=16,
                    desc="q2", progress=False)
mlla_ablation.run_row(mlla_ablation.ABLATION_ROWS["+ APE"], tiny, epochs=1, n_perms=1,
                      progress=False)
seg.run_row(seg.ABLATION_ROWS["neither"], steps=2, batch=2, width=8, n_test=4, resolution=16)
mlla_ablation._one(("single head", 0, 1))
"""


def _terminal(code, progress):
    env = dict(os.environ, LINTUTOR_PROGRESS=progress, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr + out.stdout


def test_each_training_draws_a_text_bar_in_a_terminal_and_none_when_off():
    shown = _terminal(TRAININGS + QUIET, "auto")
    for b in BARS:
        assert b in shown, f"no bar {b!r} in:\n{shown[-2000:]}"
    for name in ("q1", "q2", "+ APE", "neither", "single head", "training"):
        assert f"{name}:" not in shown, f"{name} drew a bar with progress off:\n{shown[-2000:]}"
    off = _terminal(TRAININGS, "off")
    assert "%|" not in off and not any(b.split(":")[0] + ":" in off for b in BARS), off[-2000:]


def test_each_training_draws_the_widget_bar_in_a_notebook_kernel_or_text_when_told():
    from nbclient import NotebookClient

    text = "import os\nos.environ['LINTUTOR_PROGRESS'] = 'text'\n" + TRAININGS
    cells = [nbformat.v4.new_code_cell(s) for s in (TRAININGS, text)]
    nb = nbformat.v4.new_notebook(cells=cells)
    env = {k: os.environ.get(k) for k in ("LINTUTOR_PROGRESS", "OMP_NUM_THREADS")}
    os.environ.pop("LINTUTOR_PROGRESS", None)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        NotebookClient(nb, timeout=240, kernel_name="python3").execute()
    finally:
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    widget, text = nb.cells[0].outputs, nb.cells[1].outputs
    views = [o for o in widget if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == len(BARS), widget  # one widget per training, no text bar
    assert not any("%|" in o.get("text", "") for o in widget), widget
    printed = "".join(o.get("text", "") for o in text if o.get("name") == "stderr")
    for b in BARS:
        assert b in printed, printed[-2000:]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in text)


def test_a_bar_changes_no_result(monkeypatch):
    monkeypatch.setenv("LINTUTOR_PROGRESS", "text")
    g = torch.Generator().manual_seed(0)
    tiny = (torch.rand(48, 1, 8, 8, generator=g), torch.randint(10, (48,), generator=g))
    losses = {}
    for progress in (True, False):
        torch.manual_seed(0)
        cls = vision.train_classifier(vision.TinyViT(), tiny, epochs=2, batch=16, progress=progress)
        torch.manual_seed(0)
        segm = seg.train_segmenter(seg.SceneSegmenter(width=8, depth=1), steps=4, batch=2,
                                   resolution=16, progress=progress)  # fmt: skip
        losses[progress] = (cls, segm)
    assert losses[True] == losses[False]


LESSONS = ("04", "05", "06", "07", "09")
TRAINING_CALL = re.compile(r"\b(train|train_classifier|train_segmenter|run_row)\(")


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_training_in_the_lesson_turns_its_bar_off(lesson):
    (path,) = glob.glob(os.path.join(ROOT, "notebooks", f"{lesson}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    calls = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if TRAINING_CALL.search(line) and not line.lstrip().startswith(("def ", "#")):
                calls += 1
                assert "progress=False" not in line, f"{lesson} cell {i}: {line.strip()}"
    assert calls, f"lesson {lesson} has no training call (is the pattern stale?)"
