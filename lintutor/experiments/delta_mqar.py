"""Lesson 09's recall experiment: MQAR at equal state size, the number of pairs swept past D.

    python -m lintutor.experiments.delta_mqar [--seeds 3] [--steps 500] [--workers 1]
                                              [--out PATH]

One-layer `TinyLM`s (width 32, 4 heads, so D = E = 8 per head and a state of 4 x 8 x 8 = 256
numbers per layer for every linear mixer) trained on multi-query associative recall with 4 to
32 key-value pairs. The linear mixers are one module, `lintutor.delta.DeltaNetAttention`, that
differ only in the write: additive (linear attention), gated additive (lesson 04's scalar
gate), the delta rule and the gated delta rule. Softmax attention (a KV cache that grows with
T) is the ceiling. Every mixer computes its keys from the previous token (shift_keys), so one
layer can recall. An extra row (16 and 32 pairs) starts the delta rule at fla's beta = 0.5
instead of 0.05.

Writes assets/delta_mqar_cpu.json (CPU, one thread per run; saved after every run, so a stopped
run keeps what it finished), which lesson 09 plots with the spread over seeds (`table()`,
`figure()`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from lintutor.data import mqar_batch, mqar_batch_fn
from lintutor.experiments.results import load
from lintutor.models import TinyLM, evaluate, train

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "assets",
    "delta_mqar_cpu.json",
)
D_MODEL, N_HEADS, VOCAB, BATCH, LR, CHUNK = 32, 4, 65, 64, 3e-3, 32
PAIRS = (4, 8, 16, 32)

# label: (make_mixer name, mixer kwargs)
MODELS = {
    "softmax": ("softmax", {"shift_keys": True}),
    "linear": ("delta", {"rule": "linear"}),
    "gated linear": ("delta", {"rule": "gated_linear"}),
    "DeltaNet": ("delta", {"rule": "delta", "beta_init": 0.05}),
    "Gated DeltaNet": ("delta", {"rule": "gated_delta", "beta_init": 0.05}),
    "DeltaNet (beta starts at 0.5)": ("delta", {"rule": "delta", "beta_init": 0.5}),
}
ABLATION_PAIRS = (16, 32)  # the beta = 0.5 row only where the sequences are long


def seq_len(pairs: int) -> int:
    """The pairs, their queries and 8 padding tokens."""
    return 4 * pairs + 8


def make_model(name: str, pairs: int) -> TinyLM:
    mixer, kwargs = MODELS[name]
    if mixer == "delta":
        kwargs = {**kwargs, "shift_keys": True, "chunk_size": CHUNK}
    return TinyLM(VOCAB, d_model=D_MODEL, n_layers=1, n_heads=N_HEADS, max_len=seq_len(pairs),
                  mixer=mixer, mixer_kwargs=kwargs)  # fmt: skip


def state_numbers(name: str, pairs: int) -> int:
    """Numbers a layer keeps while decoding: H * D * E, or the KV cache 2 * T * d_model."""
    head = D_MODEL // N_HEADS
    return 2 * seq_len(pairs) * D_MODEL if name == "softmax" else N_HEADS * head * head


def run_one(name: str, pairs: int, seed: int = 0, steps: int = 500) -> dict:
    """Train one model on one number of pairs; held-out recall accuracy (512 sequences)."""
    torch.manual_seed(seed)
    T = seq_len(pairs)
    model = make_model(name, pairs)
    t0 = time.perf_counter()
    history = train(model, mqar_batch_fn(BATCH, T, pairs, VOCAB, seed=seed), steps, lr=LR,
                    progress=False, seed=seed)  # fmt: skip
    test = mqar_batch(512, T, pairs, VOCAB, seed=10**6 + pairs)
    return {
        "model": name,
        "pairs": pairs,
        "seed": seed,
        "accuracy": evaluate(model, test)["accuracy"],
        "train_accuracy": history["accuracy"],
        "train_steps": history["step"],
        "seconds": time.perf_counter() - t0,
    }


def _one(job):
    torch.set_num_threads(1)
    return run_one(*job)


def _spread(values):
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarize(runs, seeds, steps, t0=None) -> dict:
    """The JSON-ready result from the finished runs."""
    rows = []
    for name in MODELS:
        for pairs in PAIRS:
            accs = [r["accuracy"] for r in runs if r["model"] == name and r["pairs"] == pairs]
            if accs:
                rows.append({"model": name, "pairs": pairs, "state_numbers":
                             state_numbers(name, pairs), "accuracy": _spread(accs),
                             "n_seeds": len(accs)})  # fmt: skip
    return {
        "what": "MQAR held-out recall accuracy at equal state size (lesson 09)",
        "setting": {
            "model": f"TinyLM, 1 layer, width {D_MODEL}, {N_HEADS} heads (D = E = "
            f"{D_MODEL // N_HEADS}), keys from the previous token; linear mixers: "
            "DeltaNetAttention (SiLU + L2-normalized q, k, per-head RMS norm)",
            "task": f"mqar_batch, vocab {VOCAB} (32 keys, 32 values), T = 4 * pairs + 8, "
            "512 held-out sequences",
            "training": f"{steps} steps of {BATCH} sequences, AdamW lr {LR}, warm-up + cosine",
            "pairs": list(PAIRS),
            "seeds": list(range(seeds)),
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "total_seconds": None if t0 is None else time.perf_counter() - t0,
        "rows": rows,
        "runs": runs,
    }


def run(seeds=3, steps=500, workers=1, models=None, out=None, log=print) -> dict:
    """Train every (model, pairs, seed); save `out` after each run; returns the summary."""
    names = list(models or MODELS)
    jobs = [(n, p, s, steps) for s in range(seeds) for p in PAIRS for n in names
            if "0.5" not in n or p in ABLATION_PAIRS]  # fmt: skip
    runs, t0 = [], time.perf_counter()

    def done(r):
        runs.append(r)
        log(f"{r['model']:30s} pairs {r['pairs']:2d} seed {r['seed']}: {r['accuracy']:.3f} "
            f"({r['seconds']:.0f} s)")  # fmt: skip
        if out:
            _write(summarize(runs, seeds, steps, t0), out)

    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for r in pool.map(_one, jobs):
                done(r)
    else:
        for job in jobs:
            done(_one(job))
    return summarize(runs, seeds, steps, t0)


def _write(result, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)


def table(result: dict | str | None = None) -> str:
    """Mean accuracy (min-max over seeds) per model and number of pairs."""
    result = load(result, default="delta_mqar_cpu.json")
    pairs = result["setting"]["pairs"]
    cells = {(r["model"], r["pairs"]): r for r in result["rows"]}
    lines = [f"{'model':30s}" + "".join(f"{f'{p} pairs':>20s}" for p in pairs)]
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        row = f"{name:30s}"
        for p in pairs:
            r = cells.get((name, p))
            a = r["accuracy"] if r else None
            row += f"{a['mean']:8.3f} ({a['min']:.2f}-{a['max']:.2f})" if a else f"{'-':>20s}"
        lines.append(row)
    return "\n".join(lines)


def figure(result: dict | str | None = None):
    """Recall accuracy against the number of pairs, mean with min-max bars over seeds."""
    import plotly.graph_objects as go

    result = load(result, default="delta_mqar_cpu.json")
    fig = go.Figure()
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["model"] == name]
        mean = [r["accuracy"]["mean"] for r in rows]
        fig.add_trace(go.Scatter(
            x=[r["pairs"] for r in rows], y=mean, mode="lines+markers", name=name,
            error_y=dict(type="data", symmetric=False,
                         array=[r["accuracy"]["max"] - m for r, m in zip(rows, mean)],
                         arrayminus=[m - r["accuracy"]["min"] for r, m in zip(rows, mean)]),
        ))  # fmt: skip
    head = D_MODEL // N_HEADS
    fig.add_vline(x=head, line_dash="dot", annotation_text=f"D = {head}")
    fig.add_vline(x=N_HEADS * head, line_dash="dot", annotation_text=f"H * D = {N_HEADS * head}")
    fig.update_xaxes(title="key-value pairs in the sequence", type="log", tickvals=PAIRS)
    fig.update_yaxes(title="held-out recall accuracy", range=[0, 1.05])
    fig.update_layout(title="MQAR at equal state size (min-max over seeds)", width=720, height=420)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lintutor.experiments.delta_mqar", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=None, help="a subset of MODELS")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    summary = run(args.seeds, args.steps, args.workers, args.models, args.out)
    _write(summary, args.out)
    print(f"wrote {args.out} ({summary['total_seconds']:.0f} s)")
    print(table(summary))


if __name__ == "__main__":
    main()
