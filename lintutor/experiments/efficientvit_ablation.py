"""The poster's 2x2 ablation of EfficientViT (multi-scale tokens x global attention) on the
procedural scenes, several seeds; softmax attention as an optional, slower reference row.

    python -m lintutor.experiments.efficientvit_ablation [--seeds 3] [--steps 600] [--softmax]

Trains `lintutor.segmentation.SceneSegmenter` once per (row, seed) on fresh scenes, scores mIoU
on a fixed test set, and writes assets/efficientvit_ablation_cpu.json (environment, seeds,
per-seed mIoU, mean, spread, config, time). `table()` and `figure()` read it back; lesson 06
plots it beside the poster's Cityscapes numbers. Runs are independent, one CPU thread each;
`--workers` trains several at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import torch

from lintutor.experiments.results import load
from lintutor.segmentation import ABLATION_ROWS, POSTER_MIOU, SOFTMAX_ROW, run_row

NAME = "efficientvit_ablation_cpu.json"
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets", NAME
)
CONFIG = {"steps": 600, "batch": 32, "lr": 4e-3, "width": 32, "n_test": 256, "resolution": 32}
ROWS = {**ABLATION_ROWS, **SOFTMAX_ROW}


def _one(job):
    name, seed, config = job
    torch.set_num_threads(1)
    return name, run_row(ROWS[name], seed=seed, **config)


def _spread(values):
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def run(seeds=3, softmax=False, workers=1, out=DEFAULT_OUT, rows=None, log=print, **config):
    """Train every row for every seed, write the JSON to `out` (None: don't) and return it.

    config overrides CONFIG (steps, batch, lr, width, n_test, resolution).
    """
    config = {**CONFIG, **config}
    names = list(rows) if rows else list(ABLATION_ROWS) + (list(SOFTMAX_ROW) if softmax else [])
    jobs = [(name, seed, config) for name in names for seed in range(seeds)]
    results: dict[str, list] = {name: [] for name in names}
    load_at_start = list(os.getloadavg())
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for name, r in pool.map(_one, jobs) if pool else map(_one, jobs):
            results[name].append(r)
            log(f"{name:26s} seed {r['seed']}: mIoU {r['miou']:5.1f}  ({r['train_seconds']:.0f} s)")
    finally:
        if pool:
            pool.shutdown()
    summary = {
        "what": "EfficientViT ablation (Cai et al., ICCV 2023 poster: multi-scale tokens x "
        "global attention) on procedural scenes; test mIoU in % over background / largest "
        "visible object / other objects",
        "config": {
            **config,
            "data": "lintutor.data.scene_batch: 2-4 occluding squares and discs, fresh scenes "
            "every step, a fixed test set",
            "model": "SceneSegmenter: stride-2 conv stem, 2 EfficientViT blocks (LiteMLA dim 8, "
            "scales (5,), MBConv x4), bilinear head + a 3x3 conv of the image",
            "optimizer": "AdamW, weight decay 0.01, one-cycle schedule",
        },
        "seeds": list(range(seeds)),
        "environment": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads_per_run": 1,
            "workers": workers,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_at_start": load_at_start,
            "note": "wall-clock times; the 2 cores may be shared with other jobs",
        },
        "total_seconds": time.perf_counter() - t0,
        "rows": [
            {
                "name": name,
                "switches": asdict(ROWS[name]),
                "poster_miou": POSTER_MIOU.get(name),
                "miou": _spread([r["miou"] for r in results[name]]),
                "runs": sorted(results[name], key=lambda r: r["seed"]),
            }
            for name in names
        ],
    }
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def stored(result: dict | str | None = None) -> dict:
    """The stored result (assets/efficientvit_ablation_cpu.json), or `result` (a dict or path)."""
    return load(result, default=NAME)


def table(result: dict | str | None = None) -> str:
    """The stored rows as text: per-seed mIoU, mean +- std, the poster's number."""
    result = stored(result)
    lines = [f"{'row':26s} {'per-seed mIoU':>24s} {'mean':>6s} {'std':>5s} {'poster':>7s}"]
    for row in result["rows"]:
        runs = " ".join(f"{r['miou']:5.1f}" for r in row["runs"])
        poster = "" if row["poster_miou"] is None else f"{row['poster_miou']:.1f}"
        m = row["miou"]
        lines.append(f"{row['name']:26s} {runs:>24s} {m['mean']:6.1f} {m['std']:5.1f} {poster:>7s}")
    return "\n".join(lines)


def figure(result: dict | str | None = None):
    """Mean test mIoU (error bars: std over seeds, dots: each seed) beside the poster's."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = stored(result)["rows"]
    names = [r["name"] for r in rows]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("toy scenes: test mIoU (mean ± std over seeds)", "poster: Cityscapes mIoU"),
    )
    fig.add_trace(
        go.Bar(
            x=names,
            y=[r["miou"]["mean"] for r in rows],
            error_y=dict(type="data", array=[r["miou"]["std"] for r in rows]),
            name="toy (mean)",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=[r["name"] for r in rows for _ in r["runs"]],
            y=[run["miou"] for r in rows for run in r["runs"]],
            mode="markers",
            marker=dict(color="black", size=6),
            name="toy (each seed)",
        ),
        row=1,
        col=1,
    )
    poster = [r for r in rows if r["poster_miou"] is not None]
    fig.add_trace(
        go.Bar(
            x=[r["name"] for r in poster],
            y=[r["poster_miou"] for r in poster],
            marker_color="gray",
            name="poster",
        ),
        row=1,
        col=2,
    )
    low = min(r["miou"]["min"] for r in rows)
    fig.update_yaxes(title_text="mIoU (%)", range=[max(0, low - 10), 100], row=1, col=1)
    fig.update_yaxes(title_text="mIoU (%)", range=[60, 80], row=1, col=2)
    fig.update_xaxes(title_text="ablation row", tickangle=30)
    fig.update_layout(width=800, height=440)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lintutor.experiments.efficientvit_ablation",
        description="EfficientViT's 2x2 ablation (multi-scale x global attention) on the scenes; "
        "writes assets/efficientvit_ablation_cpu.json.",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=CONFIG["steps"])
    parser.add_argument("--softmax", action="store_true", help="add the softmax row (slower)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    summary = run(args.seeds, args.softmax, args.workers, args.out, steps=args.steps)
    print(f"wrote {args.out} ({summary['total_seconds']:.0f} s)")
    print(table(summary))


if __name__ == "__main__":
    sys.exit(main())
