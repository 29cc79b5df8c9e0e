"""Lesson 05's MLLA ablation on digits: every row of Han et al. 2024 Tables 1-2, several seeds.

    python -m lintutor.experiments.mlla_ablation [--seeds 3] [--epochs 40] [--workers 2]
                                                 [--out PATH]

Trains `lintutor.vision.TinyViT` once per (row, seed), each row a single change to the plain
linear-attention baseline (`ABLATION_ROWS`), and records test accuracy with the patches in place
and shuffled (the permutation test). Writes assets/mlla_ablation.json (CPU only, about 14 min on
2 cores), which lesson 05 plots with error bars beside the paper's numbers (`table()`,
`figure()`). Runs are independent, so `--workers` trains several at once, one CPU thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace

import torch

from lintutor.experiments.results import load
from lintutor.vision import BASELINE, GRID, Factors, TinyViT, accuracy, digits, train_classifier

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "assets",
    "mlla_ablation.json",
)

# One change to the baseline per row, named as in the paper's tables.
ABLATION_ROWS = {
    "baseline (linear attention)": BASELINE,
    "+ input gate": replace(BASELINE, input_gate=True),
    "+ forget gate": replace(BASELINE, forget_gate=True),
    "+ shortcut": replace(BASELINE, shortcut=True),
    "- normalization": replace(BASELINE, normalize=False),
    "single head": replace(BASELINE, n_heads=1),
    "Mamba block design": replace(BASELINE, block="mlla"),
    "+ APE": replace(BASELINE, ape=True),
    "+ LePE": replace(BASELINE, lepe=True),
    "+ CPE": replace(BASELINE, cpe=True),
    "+ RoPE": replace(BASELINE, rope=True),
}

# Han et al. 2024: Table 1 (one change each to a Swin-T-like linear-attention model) and
# Table 2 (positional encodings in place of the forget gate); ImageNet-1K top-1 %.
PAPER_TOP1 = {
    "baseline (linear attention)": 77.6,
    "+ input gate": 77.8,
    "+ forget gate": 78.4,
    "+ shortcut": 77.8,
    "- normalization": 72.4,
    "single head": 73.5,
    "Mamba block design": 80.9,
    "+ APE": 80.0,
    "+ LePE": 81.6,
    "+ CPE": 81.7,
    "+ RoPE": 80.0,
}


def run_row(f: Factors, data, seed=0, epochs=40, n_perms=5, lr=3e-3) -> dict:
    """Train one ablation row; test accuracy plain and with shuffled patches (mean of n_perms)."""
    torch.manual_seed(seed)
    model = TinyViT(f)
    loss = train_classifier(model, data, epochs=epochs, lr=lr, seed=seed)
    x_test, y_test = data[2], data[3]
    g = torch.Generator().manual_seed(1000 + seed)
    shuffled = [
        accuracy(model, x_test, y_test, torch.randperm(GRID * GRID, generator=g))
        for _ in range(n_perms)
    ]
    return {
        "seed": seed,
        "train_loss": loss,
        "test_acc": accuracy(model, x_test, y_test),
        "shuffled_acc": sum(shuffled) / len(shuffled),
        "params": sum(p.numel() for p in model.parameters()),
    }


def _one(args):
    name, seed, epochs = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run_row(ABLATION_ROWS[name], digits(), seed=seed, epochs=epochs)
    result["seconds"] = time.perf_counter() - t0
    return name, result


def _spread(values):
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def run(seeds=3, epochs=40, workers=2, rows=None, log=print) -> dict:
    """Train every row for every seed; returns the JSON-ready summary (`main` writes it)."""
    names = list(rows or ABLATION_ROWS)
    jobs = [(name, seed, epochs) for name in names for seed in range(seeds)]
    t0 = time.perf_counter()
    results: dict[str, list] = {name: [] for name in names}

    def done(name, r):
        results[name].append(r)
        log(f"{name:30s} seed {r['seed']}: {r['test_acc']:.1f}% "
            f"(shuffled {r['shuffled_acc']:.1f}%) in {r['seconds']:.0f} s")  # fmt: skip

    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for name, r in pool.map(_one, jobs):
                done(name, r)
    else:
        for job in jobs:
            done(*_one(job))
    x_train, _, x_test, _ = digits()
    return {
        "what": "MLLA ablation (Han et al. 2024, Tables 1-2) on scikit-learn digits, "
        "each row one change to the linear-attention baseline; accuracy in %",
        "setting": {
            "data": f"sklearn digits 8x8, {len(x_train)} train / {len(x_test)} test, "
            "4x4 grid of 2x2 patches",
            "model": "TinyViT: linear patch embedding, 2 blocks, width 64, 4 heads, MLP ratio 2",
            "epochs": epochs,
            "seeds": list(range(seeds)),
            "optimizer": "AdamW lr 3e-3, weight decay 0.05, one-cycle schedule, batch 64",
            "permutation_test": "mean test accuracy over 5 random patch shuffles",
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "workers": workers,
            "torch": torch.__version__,
        },
        "total_seconds": time.perf_counter() - t0,
        "rows": [
            {
                "name": name,
                "factors": asdict(ABLATION_ROWS[name]),
                "paper_top1": PAPER_TOP1[name],
                "test_acc": _spread([r["test_acc"] for r in results[name]]),
                "shuffled_acc": _spread([r["shuffled_acc"] for r in results[name]]),
                "runs": sorted(results[name], key=lambda r: r["seed"]),
            }
            for name in names
        ],
    }


def table(result: dict | str | None = None) -> str:
    """The stored ablation: mean +- std of each row, patches in place and shuffled, the paper."""
    result = load(result, default="mlla_ablation.json")
    s = result["setting"]
    lines = [f"{s['data']} | {s['model']} | {s['epochs']} epochs, seeds {s['seeds']}",
             f"{'row':30s} {'ours':>14s} {'shuffled':>14s} {'paper':>6s}"]  # fmt: skip
    for r in result["rows"]:
        a, sh = r["test_acc"], r["shuffled_acc"]
        lines.append(f"{r['name']:30s} {a['mean']:6.1f} ± {a['std']:4.1f}  "
                     f"{sh['mean']:6.1f} ± {sh['std']:4.1f}  {r['paper_top1']:6.1f}")  # fmt: skip
    return "\n".join(lines)


def figure(result: dict | str | None = None):
    """Bars with error bars for each row (in place, shuffled) beside the paper's top-1."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = load(result, default="mlla_ablation.json")["rows"]
    names = [r["name"] for r in rows]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("toy: test accuracy (mean ± std over seeds)",
                                        "paper: ImageNet-1K top-1"))  # fmt: skip
    for key, label in (("test_acc", "patches in place"), ("shuffled_acc", "patches shuffled")):
        fig.add_trace(go.Bar(x=names, y=[r[key]["mean"] for r in rows], name=label,
                             error_y=dict(type="data", array=[r[key]["std"] for r in rows])),
                      row=1, col=1)  # fmt: skip
    fig.add_trace(go.Bar(x=names, y=[r["paper_top1"] for r in rows], name="paper (Tables 1-2)",
                         marker_color="gray"), row=1, col=2)  # fmt: skip
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_yaxes(title_text="top-1 (%)", range=[70, 83], row=1, col=2)
    fig.update_xaxes(title_text="ablation row", tickangle=45, row=1, col=1)
    fig.update_xaxes(title_text="ablation row", tickangle=45, row=1, col=2)
    fig.update_layout(barmode="group", width=1000, height=480)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lintutor.experiments.mlla_ablation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    summary = run(args.seeds, args.epochs, args.workers)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out} ({summary['total_seconds']:.0f} s)")
    print(table(summary))


if __name__ == "__main__":
    main()
