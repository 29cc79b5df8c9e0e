"""Lesson 07's longer trainings: tiny decoder LMs against a known entropy floor, the leak, where
the conv sits, and a character LM on Python's own standard library.

    python -m lintutor.experiments.linearized_lm [--parts markov,leak,placement,char]
                                                 [--seeds 3] [--steps 500] [--quick] [--out PATH]

Trains `lintutor.decoder.DecoderLM` (width 64, 2 layers, 4 heads, learned absolute positions,
groups of 16, a 7-tap centred conv of which 4 taps are causal) with `lintutor.models.train`:

- markov: the order-2 Markov language (`data.markov2_batch`, 16 tokens, p = 0.9, T = 64):
  softmax, linear, linear + conv, grouped, grouped + conv, per seed; held-out loss vs the floor;
- leak: grouped + conv with the centred (leaky) conv and with the causal one: teacher-forced
  loss and prefix-only loss (`decoder.leak_losses`);
- placement: the conv after attention (on V) or before q/k (a 3-tap short conv on the input of
  q and k), on the Markov language (local structure) and on MQAR (`data.mqar_batch`, recall)
  with 1 and with 2 layers (2 seeds);
- char: softmax, linear and grouped + conv on `data.stdlib_char_corpus`, validation loss in bits
  per character, and sampled text.

Writes assets/linearized_lm_cpu.json (one CPU thread; under an hour on an idle 2-core machine),
which lesson 07 reads with `table()` and `figure()`. `--parts` reruns some parts and keeps the
others from the existing file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time

import torch

from lintutor import data
from lintutor.decoder import DecoderLM, leak_losses
from lintutor.experiments.results import load
from lintutor.models import evaluate, train
from lintutor.speculative import sample_generate

NAME = "linearized_lm_cpu.json"
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets", NAME
)
PARTS = ("markov", "leak", "placement", "char")

MODEL = dict(d_model=64, n_layers=2, n_heads=4, group_size=16, conv_size=7)
MARKOV = dict(vocab_size=16, p=0.9, seq_len=64, batch_size=16, lr=5e-3)
MQAR = dict(seq_len=48, n_pairs=4, vocab_size=64, batch_size=32, lr=3e-3)
CHAR = dict(seq_len=128, batch_size=8, lr=3e-3, n_files=60)

VARIANTS = {
    "softmax": dict(attention="softmax", conv=None),
    "linear": dict(attention="linear", conv=None),
    "linear + conv": dict(attention="linear", conv="causal"),
    "grouped": dict(attention="grouped", conv=None),
    "grouped + conv": dict(attention="grouped", conv="causal"),
}
LEAK = {
    "leaky (centred) conv": dict(attention="grouped", conv="leaky"),
    "causal conv": dict(attention="grouped", conv="causal"),
}
PLACEMENT = {
    "no conv": dict(attention="linear", conv=None),
    "conv after attention (on V)": dict(attention="linear", conv="causal"),
    "short conv before q/k": dict(attention="linear", conv=None, qk_conv=3),
}
CHAR_VARIANTS = ("softmax", "linear", "grouped + conv")


def _spread(xs):
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def _model(vocab, max_len, kw, seed):
    torch.manual_seed(seed)
    return DecoderLM(vocab, max_len=max_len, **MODEL, **kw)


def _markov_batch_fn(seed, cfg):
    return data.markov2_batch_fn(cfg["batch_size"], cfg["seq_len"], cfg["vocab_size"], cfg["p"],
                                 seed=seed)  # fmt: skip


def _markov_test(cfg, n=256):
    return data.markov2_batch(n, cfg["seq_len"], cfg["vocab_size"], cfg["p"], seed=10**6)


def _oracle(result, part, n):
    """The rule's own loss on the part's test sequences (rebuilt from the stored config)."""
    cfg = _load(result)["parts"][part]["config"]["markov"]
    return data.markov2_oracle_loss(*_markov_test(cfg, n), cfg["vocab_size"], cfg["p"])


def run_markov(seeds, steps, variants=VARIANTS, cfg=MARKOV):
    test = _markov_test(cfg)
    out = {"floor": data.markov2_entropy(cfg["vocab_size"], cfg["p"]), "variants": {}}
    for name, kw in variants.items():
        rows = []
        for seed in seeds:
            m = _model(cfg["vocab_size"], cfg["seq_len"], kw, seed)
            h = train(m, _markov_batch_fn(seed, cfg), steps, lr=cfg["lr"], seed=seed,
                      progress=False)  # fmt: skip
            rows.append({"seed": seed, "loss": evaluate(m, test)["loss"], "seconds": h["seconds"],
                         "curve": {"step": h["step"], "loss": h["loss"]}})  # fmt: skip
            print(f"markov {name:16s} seed {seed}: {rows[-1]['loss']:.4f}", flush=True)
        out["variants"][name] = {"runs": rows, **_spread([r["loss"] for r in rows])}
    return out


def run_leak(seeds, steps, cfg=MARKOV, n_eval=64):
    test = _markov_test(cfg, n_eval)
    out = {"floor": data.markov2_entropy(cfg["vocab_size"], cfg["p"]), "variants": {}}
    for name, kw in LEAK.items():
        rows = []
        for seed in seeds:
            m = _model(cfg["vocab_size"], cfg["seq_len"], kw, seed)
            train(m, _markov_batch_fn(seed, cfg), steps, lr=cfg["lr"], seed=seed, progress=False)
            rows.append({"seed": seed, **leak_losses(m, test)})
            print(f"leak {name}: {rows[-1]}", flush=True)
        out["variants"][name] = {
            "runs": rows,
            "teacher_forced": _spread([r["teacher_forced"] for r in rows]),
            "prefix_only": _spread([r["prefix_only"] for r in rows]),
        }
    return out


def run_placement(seeds, steps, mqar_steps, markov=None, mqar_seeds=None):
    """The conv after attention (on V) or before q/k: Markov loss (2 layers; the runs that the
    markov part already made are reused) and MQAR recall with 1 and with 2 layers."""
    same = {"no conv": "linear", "conv after attention (on V)": "linear + conv"}
    local = {"floor": data.markov2_entropy(MARKOV["vocab_size"], MARKOV["p"]), "variants": {}}
    for name, kw in PLACEMENT.items():
        if markov is not None and same.get(name) in markov["variants"]:
            local["variants"][name] = markov["variants"][same[name]]
        else:
            local["variants"][name] = run_markov(seeds, steps, {name: kw})["variants"][name]
    if markov is not None and "softmax" in markov["variants"]:
        local["variants"]["softmax (reference)"] = markov["variants"]["softmax"]
    cfg = MQAR
    test = data.mqar_batch(512, cfg["seq_len"], cfg["n_pairs"], cfg["vocab_size"], seed=10**6)
    recall = {}
    variants = PLACEMENT
    for n_layers in (1, 2):
        depth = f"{n_layers} layer" + ("s" if n_layers > 1 else "")
        recall[depth] = {}
        for name, kw in variants.items():
            rows = []
            for seed in mqar_seeds or seeds:
                torch.manual_seed(seed)
                m = DecoderLM(cfg["vocab_size"], max_len=cfg["seq_len"],
                              **{**MODEL, "n_layers": n_layers}, **kw)  # fmt: skip
                batch_fn = data.mqar_batch_fn(cfg["batch_size"], cfg["seq_len"], cfg["n_pairs"],
                                              cfg["vocab_size"], seed=seed)  # fmt: skip
                train(m, batch_fn, mqar_steps, lr=cfg["lr"], seed=seed, progress=False)
                rows.append({"seed": seed, "accuracy": evaluate(m, test)["accuracy"]})
                print(f"mqar {depth} {name}: {rows[-1]}", flush=True)
            recall[depth][name] = {"runs": rows, **_spread([r["accuracy"] for r in rows])}
    return {"markov": local, "mqar": recall}


def run_char(seed, steps, cfg=CHAR, n_samples=3):
    prompt_len = cfg["seq_len"] // 4  # the samples fill one training window: 32 + 96 characters
    n_new = cfg["seq_len"] - prompt_len
    corpus = data.stdlib_char_corpus(n_files=cfg["n_files"], seed=0)
    V = len(corpus["vocab"])
    val = data.char_batch(corpus["val"], 256, cfg["seq_len"], seed=10**6)
    g = torch.Generator().manual_seed(1)
    starts = torch.randint(0, len(corpus["val"]) - prompt_len, (n_samples,), generator=g)
    prompts = [corpus["val"][s : s + prompt_len] for s in starts.tolist()]
    out = {"python": corpus["python"], "train_chars": len(corpus["train"]),
           "val_chars": len(corpus["val"]), "val_files": corpus["val_files"],
           "variants": {}}  # fmt: skip
    for name in CHAR_VARIANTS:
        m = _model(V, cfg["seq_len"], VARIANTS[name], seed)
        batch_fn = data.char_batch_fn(corpus["train"], cfg["batch_size"], cfg["seq_len"], seed)
        h = train(m, batch_fn, steps, lr=cfg["lr"], seed=seed, progress=False)
        loss = evaluate(m, val)["loss"]
        samples = [
            {"prompt": data.decode_chars(p),
             "continuation": data.decode_chars(sample_generate(m, p.view(1, -1), n_new, 0.8, i))}
            for i, p in enumerate(prompts)
        ]  # fmt: skip
        out["variants"][name] = {"loss": loss, "bits_per_char": loss / math.log(2),
                                 "seconds": h["seconds"], "samples": samples}  # fmt: skip
        print(f"char {name}: {loss / math.log(2):.3f} bits/char", flush=True)
    return out


def _environment():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run(parts=PARTS, seeds=(0, 1, 2), steps=400, mqar_steps=800, char_steps=600, out=DEFAULT_OUT,
        threads=1) -> dict:  # fmt: skip
    """Train what `parts` names and write the JSON (keeping other parts of an existing file)."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = json.load(open(out)) if os.path.exists(out) else {}
    result.setdefault("parts", {})
    env = _environment()
    config = {"model": MODEL, "markov": MARKOV, "mqar": MQAR, "char": CHAR, "steps": steps,
              "mqar_steps": mqar_steps, "char_steps": char_steps}  # fmt: skip
    for part in parts:
        t = time.perf_counter()
        if part == "markov":
            value = run_markov(list(seeds), steps)
        elif part == "leak":
            value = run_leak(list(seeds), steps)
        elif part == "placement":
            markov = result["parts"].get("markov", {}).get("result")
            value = run_placement(list(seeds), steps, mqar_steps, markov, list(seeds)[:2])
        elif part == "char":
            value = run_char(seeds[0], char_steps)
        else:
            raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
        env["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        result["parts"][part] = {"result": value, "seconds": time.perf_counter() - t,
                                 "seeds": list(seeds), "config": config,
                                 "environment": env}  # fmt: skip
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    result["seconds"] = sum(p["seconds"] for p in result["parts"].values())
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    return result


def _load(result):
    return load(result, NAME)


def setup(result=None, part="markov") -> str:
    """One line: how the stored part was run (seeds, steps, sizes, machine, how busy it was)."""
    p = _load(result)["parts"][part]
    c, env, model = p["config"], p["environment"], p["config"]["model"]
    seeds = len(p["seeds"]) if part != "char" else 1
    ch, mk, mq = c["char"], c["markov"], c["mqar"]
    if part == "char":
        what = f"{c['char_steps']} steps of {ch['batch_size']} x {ch['seq_len']} characters"
    elif part == "placement":
        what = (f"Markov {c['steps']} steps; MQAR {c['mqar_steps']} steps of "
                f"{mq['batch_size']} x {mq['seq_len']} tokens, 2 seeds")  # fmt: skip
    else:
        what = f"{c['steps']} steps of {mk['batch_size']} x {mk['seq_len']} tokens"
    load = env.get("load_average_at_start")
    busy = f", load average {load[0]:.1f} at the start" if load else ""
    return (f"stored run: {seeds} seed(s), {what}; width {model['d_model']}, "
            f"{model['n_layers']} layers, {model['n_heads']} heads; {env['date'][:10]}, "
            f"{env['cpus']} CPUs, {env['threads']} thread{busy}; "
            f"{p['seconds'] / 60:.0f} min")  # fmt: skip


def table(result=None, part="markov") -> str:
    """One part of the stored results as a text table (markov, leak, placement, char), after
    the line that says how it was run."""
    r = _load(result)["parts"][part]["result"]
    seeds = len(_load(result)["parts"][part]["seeds"])
    if part == "markov":
        lines = [f"{'variant':18s} {'held-out loss':>14s}   (mean +- std over {seeds} seeds)"]
        for name, v in r["variants"].items():
            lines.append(f"{name:18s} {v['mean']:9.3f} +- {v['std']:.3f}   "
                         f"(floor + {v['mean'] - r['floor']:.3f})")  # fmt: skip
        lines.append(f"{'entropy floor':18s} {r['floor']:9.3f}")
        lines.append(
            f"{'the rule itself':18s} {_oracle(result, part, 256):9.3f}   (on these test tokens)"
        )
    elif part == "leak":
        lines = [f"{'model':22s} {'teacher-forced':>15s} {'prefix-only':>13s}   (nats/token)"]
        for name, v in r["variants"].items():
            tf, po = v["teacher_forced"], v["prefix_only"]
            lines.append(f"{name:22s} {tf['mean']:9.3f}+-{tf['std']:.3f} "
                         f"{po['mean']:7.3f}+-{po['std']:.3f}")  # fmt: skip
        lines.append(f"{'entropy floor':22s} {r['floor']:9.3f}")
        lines.append(
            f"{'the rule itself':22s} {_oracle(result, part, 64):9.3f}   (on these test tokens)"
        )
    elif part == "placement":
        mk, mq = r["markov"], r["mqar"]
        depths = list(mq)
        head = "".join(f"{'MQAR recall, ' + d:>22s}" for d in depths)
        lines = [f"{'linear attention +':28s} {'Markov loss':>12s}{head}"]
        for name in mq[depths[0]]:
            a = mk["variants"].get(name)
            cell = f"{a['mean']:6.3f}+-{a['std']:.3f}" if a else f"{'(see markov)':>12s}"
            accs = "".join(
                f"{mq[d][name]['mean']:15.1%}+-{mq[d][name]['std']:5.1%}" for d in depths
            )
            lines.append(f"{name:28s} {cell}{accs}")
        lines.append(f"{'(Markov entropy floor)':28s} {mk['floor']:6.3f}")
    elif part == "char":
        lines = [f"{'variant':18s} {'bits/char':>10s}   (Python {r['python']} stdlib, "
                 f"{r['train_chars']:,} training characters)"]  # fmt: skip
        for name, v in r["variants"].items():
            lines.append(f"{name:18s} {v['bits_per_char']:10.3f}")
    else:
        raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
    return "\n".join([setup(result, part), *lines])


def figure(result=None):
    """The Markov training curves (mean over seeds) against the entropy floor."""
    import plotly.graph_objects as go

    r = _load(result)["parts"]["markov"]["result"]
    fig = go.Figure()
    for name, v in r["variants"].items():
        runs = v["runs"]
        steps = runs[0]["curve"]["step"]
        mean = [
            statistics.fmean(run["curve"]["loss"][i] for run in runs) for i in range(len(steps))
        ]
        fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines", name=name))
    fig.add_hline(y=r["floor"], line_dash="dash", line_color="gray",
                  annotation_text=f"entropy floor {r['floor']:.3f}")  # fmt: skip
    fig.update_layout(title="order-2 Markov language: training loss (mean over seeds)",
                      xaxis_title="step", yaxis_title="loss (nats / token, log scale)",
                      yaxis_type="log", width=680, height=400)  # fmt: skip
    return fig


def variants(part="markov", result=None) -> dict:
    """{variant: {"mean", "std", "runs"}} of the Markov-style parts (markov, leak, char)."""
    return _load(result)["parts"][part]["result"]["variants"]


def recall(result=None) -> dict:
    """{"1 layer" / "2 layers": {placement: {"mean", "std", "runs"}}}: the stored MQAR recall."""
    return _load(result)["parts"]["placement"]["result"]["mqar"]


def samples(result=None, variant="grouped + conv"):
    """The stored char-model samples of one variant: [(prompt, continuation)]."""
    r = _load(result)["parts"]["char"]["result"]["variants"][variant]
    return [(s["prompt"], s["continuation"]) for s in r["samples"]]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lintutor.experiments.linearized_lm",
                                 description=__doc__.split("\n\n")[0])  # fmt: skip
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    ap.add_argument("--steps", type=int, default=400, help="training steps, Markov (default 400)")
    ap.add_argument("--mqar-steps", type=int, default=800, help="training steps, MQAR")
    ap.add_argument("--char-steps", type=int, default=600, help="training steps, char LM")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, 20 steps")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output JSON (default assets/{NAME})")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.quick:
        run(parts, (0, 1), 20, 20, 20, args.out)
    else:
        run(parts, tuple(range(args.seeds)), args.steps, args.mqar_steps, args.char_steps, args.out)


if __name__ == "__main__":
    main()
