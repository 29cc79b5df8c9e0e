"""Lesson 05's MLLA ablation on digits: every row of Han et al. 2024 Tables 1-2, several seeds.

    python -m lintutor.experiments.mlla_ablation [--seeds 3] [--epochs 40] [--workers 2]
                                                 [--out PATH]

Trains `lintutor.vision.TinyViT` once per (row, seed), each row a single change to the plain
linear-attention baseline (`ABLATION_ROWS`), and records test accuracy with the patches in place
and shuffled (the permutation test). Writes assets/mlla_ablation.json (CPU only; the file records
how long the run took and on what), which lesson 05 reads back: `table()`, `changes()` (each row
as a change from its baseline, toy and paper) and `figure()` (those changes as bars). Runs are
independent, so `--workers` trains several at once, one CPU thread each.
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


def run_row(f: Factors, data, seed=0, epochs=40, n_perms=5, lr=3e-3, progress=True) -> dict:
    """Train one ablation row; test accuracy plain and with shuffled patches (mean of n_perms).

    progress: the training's bar, named after the row (`run` turns it off in its workers)."""
    torch.manual_seed(seed)
    model = TinyViT(f)
    desc = next((name for name, row in ABLATION_ROWS.items() if row == f), "training")
    loss = train_classifier(model, data, epochs=epochs, lr=lr, seed=seed, progress=progress,
                            desc=desc)  # fmt: skip
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
    # no bar per row: rows train in parallel workers (bars would overwrite each other); `run`
    # logs a line per finished row
    result = run_row(ABLATION_ROWS[name], digits(), seed=seed, epochs=epochs, progress=False)
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


def changes(result: dict | str | None = None) -> list[dict]:
    """Every row as a change from its own baseline, in points: the toy's and the paper's.

    For the toy, per accuracy ("test_acc", "shuffled_acc"): the change of the mean over seeds,
    its standard error sqrt(s^2/n + s_base^2/n_base) and Welch's two-sided p (scipy, which
    scikit-learn installs); "paper": the row's top-1 minus the paper's baseline.
    """
    from scipy import stats

    rows = load(result, default="mlla_ablation.json")["rows"]
    base = next(r for r in rows if r["name"].startswith("baseline"))

    def var(xs):
        return statistics.variance(xs) if len(xs) > 1 else 0.0

    out = []
    for r in rows:
        entry = {"name": r["name"], "paper": r["paper_top1"] - base["paper_top1"]}
        for key in ("test_acc", "shuffled_acc"):
            a, b = [x[key] for x in r["runs"]], [x[key] for x in base["runs"]]
            se = (var(a) / len(a) + var(b) / len(b)) ** 0.5
            p = 1.0
            if r is not base and se > 0:
                p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
            change = statistics.fmean(a) - statistics.fmean(b)
            entry[key] = {"change": change, "se": se, "p": p}
        out.append(entry)
    return out


def figure(result: dict | str | None = None):
    """Each row as a change from its own baseline, one panel each: the toy with the patches in
    place and shuffled (mean over seeds, error bars one standard error), and the paper."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = changes(result)
    names = [r["name"] for r in rows]
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("toy, patches in place", "toy, patches shuffled",
                                        "paper (ImageNet-1K top-1)"))  # fmt: skip
    for col, key in ((1, "test_acc"), (2, "shuffled_acc")):
        fig.add_trace(go.Bar(y=names, x=[r[key]["change"] for r in rows], orientation="h",
                             error_x=dict(type="data", array=[r[key]["se"] for r in rows]),
                             showlegend=False), row=1, col=col)  # fmt: skip
    fig.add_trace(go.Bar(y=names, x=[r["paper"] for r in rows], orientation="h",
                         marker_color="gray", showlegend=False), row=1, col=3)  # fmt: skip
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="change (points)", zeroline=True, row=1, col=col)
    fig.update_yaxes(autorange="reversed")  # the baseline on top, rows in table order
    fig.update_layout(title="each row minus its own baseline (toy: ± 1 standard error over seeds)",
                      width=800, height=440, margin=dict(l=190, r=30, t=90))  # fmt: skip
    fig.update_annotations(font_size=13)  # the panel titles, so that three fit in 800 px
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
