"""The full MLLA ablation on digits: every row of Han et al. 2024 Tables 1-2, several seeds.

    python -m lintutor.ablation [--seeds 3] [--epochs 40] [--workers 2] [--out PATH]

Trains `lintutor.vision.TinyViT` once per (row, seed), each row a single change to the plain
linear-attention baseline (`lintutor.vision.ABLATION_ROWS`), and records test accuracy with the
patches in place and shuffled (the permutation test). Writes assets/mlla_ablation.json, which
lesson 05 plots with error bars beside the paper's numbers. Runs are independent, so `--workers`
trains several at once, one CPU thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import torch

from lintutor.vision import ABLATION_ROWS, PAPER_TOP1, digits, run_row

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "mlla_ablation.json"
)


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


def run_ablation(seeds=3, epochs=40, workers=2, rows=None, log=print) -> dict:
    """Train every row for every seed; returns the JSON-ready summary."""
    names = list(rows or ABLATION_ROWS)
    jobs = [(name, seed, epochs) for name in names for seed in range(seeds)]
    t0 = time.perf_counter()
    results: dict[str, list] = {name: [] for name in names}
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for name, r in pool.map(_one, jobs):
                results[name].append(r)
                log(f"{name:30s} seed {r['seed']}: {r['test_acc']:.1f}% "
                    f"(shuffled {r['shuffled_acc']:.1f}%) in {r['seconds']:.0f} s")  # fmt: skip
    else:
        for job in jobs:
            name, r = _one(job)
            results[name].append(r)
            log(f"{name:30s} seed {r['seed']}: {r['test_acc']:.1f}% "
                f"(shuffled {r['shuffled_acc']:.1f}%) in {r['seconds']:.0f} s")  # fmt: skip
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    summary = run_ablation(args.seeds, args.epochs, args.workers)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out} ({summary['total_seconds']:.0f} s)")
    for row in summary["rows"]:
        a, s = row["test_acc"], row["shuffled_acc"]
        print(f"{row['name']:30s} {a['mean']:5.1f} +- {a['std']:4.1f}   shuffled "
              f"{s['mean']:5.1f} +- {s['std']:4.1f}   paper {row['paper_top1']}")  # fmt: skip


if __name__ == "__main__":
    main()
