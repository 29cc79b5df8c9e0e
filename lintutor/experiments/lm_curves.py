"""Lesson 08's training runs: TinyLM trained with lesson 03's PyTorch forms and with the kernel.

    python -m lintutor.experiments.lm_curves           (or `lintutor bench --lm`)
    python -m lintutor.experiments.lm_curves --drift   (or `lintutor bench --lm-drift`)

The first trains lesson 03's TinyLM on MQAR twice, with the torch chunked form and with the
Triton kernel: same seed, same batches, head dim 64 (d_model 128, 2 heads), elu+1 features,
normalized; it writes assets/lm_curves_<card>.json. The second trains four forms that compute
one function (chunked C=64 and C=32, parallel, kernel) and writes assets/lm_drift_<card>.json:
how far training alone spreads them. Needs a CUDA GPU; `table()` and `figure()` read the stored
runs without one.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from lintutor.experiments import _gpu
from lintutor.experiments.results import load

LM_CONFIG = {"vocab_size": 64, "d_model": 128, "n_layers": 2, "n_heads": 2, "max_len": 256,
             "batch_size": 64, "seq_len": 256, "n_pairs": 16, "steps": 600, "lr": 3e-3}  # fmt: skip
CURVES, DRIFT = "lm_curves_h100.json", "lm_drift_h100.json"  # the runs lesson 08 shows


def run(device="cuda", out_dir="assets", config=None, log=print, drift=False) -> dict:
    """Train the forms (two, or four with drift=True); write their histories and return them."""
    import torch

    from lintutor.causal import causal_linear_attention_chunked, causal_linear_attention_parallel
    from lintutor.data import mqar_batch_fn
    from lintutor.kernels import causal_linear_attention_triton
    from lintutor.models import TinyLM, train

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("the LM curves need a CUDA GPU; lesson 08 plots the stored ones")
    c = dict(LM_CONFIG, **(config or {}))
    runs = {}
    forms = {"torch_chunked": None, "triton": functools.partial(causal_linear_attention_triton)}
    if drift:
        forms = {
            "torch_chunked_C64": None,
            "torch_chunked_C32": functools.partial(causal_linear_attention_chunked, chunk_size=32),
            "torch_parallel": causal_linear_attention_parallel,
            "triton": causal_linear_attention_triton,
        }
    for name, fn in forms.items():
        torch.manual_seed(0)
        kwargs = {"attention_fn": fn} if fn is not None else {}
        model = TinyLM(c["vocab_size"], c["d_model"], c["n_layers"], c["n_heads"], c["max_len"],
                       mixer="linear", mixer_kwargs=kwargs)  # fmt: skip
        batch_fn = mqar_batch_fn(
            c["batch_size"], c["seq_len"], c["n_pairs"], c["vocab_size"], seed=0
        )
        hist = train(model, batch_fn, c["steps"], lr=c["lr"], device=device, progress=False, seed=0)
        runs[name] = hist
        last = f"loss {hist['loss'][-1]:.4f} acc {hist['accuracy'][-1]:.3f}"
        log(f"{name}: final {last} in {hist['seconds']:.1f} s")
    result = {"date": _gpu.now(), "versions": _gpu.versions(), "config": c, "runs": runs}
    if device != "cpu":
        tag = _gpu.device_tag(result["versions"].get("gpu"), other="gpu")
        os.makedirs(out_dir, exist_ok=True)
        stem = "lm_drift" if drift else "lm_curves"
        with open(os.path.join(out_dir, f"{stem}_{tag}.json"), "w") as fh:
            json.dump(result, fh, indent=1)
    return result


def table(result: dict | str | None = None, drift: bool = False) -> str:
    """Final training loss and accuracy of each form in a stored run."""
    result = load(result, default=DRIFT if drift else CURVES)
    lines = [f"{'form':20s} {'final loss':>10s} {'accuracy':>9s}   ({result['versions']['gpu']})"]
    for name, h in result["runs"].items():
        lines.append(f"{name:20s} {h['loss'][-1]:10.4f} {h['accuracy'][-1]:9.3f}")
    return "\n".join(lines)


def figure(curves: dict | str | None = None, drift: dict | str | None = None):
    """Training loss of the two forms (left) and of the four equivalent forms (right)."""
    from plotly.subplots import make_subplots

    curves, drift = load(curves, default=CURVES), load(drift, default=DRIFT)
    titles = ("two forms (lm_curves)", "four equivalent forms (second run)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    for name, label in (("torch_chunked", "PyTorch chunked form"), ("triton", "Triton kernel")):
        h = curves["runs"][name]
        fig.add_scatter(x=h["step"], y=h["loss"], mode="lines", name=label, row=1, col=1)
    for name, h in drift["runs"].items():
        fig.add_scatter(x=h["step"], y=h["loss"], mode="lines", name=name, row=1, col=2,
                        line=dict(dash="solid" if name == "triton" else "dot"))  # fmt: skip
    for col in (1, 2):
        fig.update_xaxes(title_text="training step", row=1, col=col)
        fig.update_yaxes(title_text="training loss (MQAR, answers only)" if col == 1 else None,
                         row=1, col=col)  # fmt: skip
    fig.update_layout(
        title=f"TinyLM on {curves['versions']['gpu']}: the same training, several attention forms",
        height=420, width=800, margin=dict(t=90),
    )  # fmt: skip
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lintutor.experiments.lm_curves", description=__doc__.split("\n")[0]
    )
    p.add_argument("--drift", action="store_true", help="train four equal forms instead of two")
    p.add_argument("--out", default="assets", help="folder for the JSON result")
    args = p.parse_args(argv)
    try:
        run(out_dir=args.out, drift=args.drift)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
