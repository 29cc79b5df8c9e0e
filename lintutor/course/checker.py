"""The exercise checker: run a learner's function on named and random cases, compare with the
package reference in float64, and explain the first thing that is wrong.

Layers, checked in order; the first failing one is reported:
  1. not attempted      the function raises NotImplementedError
  2. exception          anything else raised (the learner's own line is shown first)
  3. timeout            one call ran longer than `Exercise.timeout` seconds
  4. in-place           an input tensor was modified
  5. type/shape/dtype   expected vs actual, with a "did you transpose?" hint
  6. NaN/Inf            where the first one is
  7. numbers            max error, worst index, first wrong timestep; known mistakes are named

`check` never raises: whatever the learner's code does, it returns a `CheckResult`.

The exercise format. A lesson's exercises are a list `EXERCISES` in
`lintutor/course/exercises/lessonNN.py` (found by its name, nothing to register):

    from lintutor import softmax as ref
    from lintutor.course.checker import Exercise, between, cases, normal

    def _inputs(s, g):                      # sizes + a seeded generator -> keyword arguments
        return {"q": normal(g, s["D"]), "k": normal(g, s["S"], s["D"]),
                "v": normal(g, s["S"], s["E"])}

    def _no_scale(q, k, v, **_):            # a known mistake; its docstring is the message
        "this is what you get without the 1/sqrt(D) scale"
        return torch.softmax(k @ q, dim=-1) @ v

    EX_01_1 = Exercise(
        id="01.1",                          # lesson "01" and the learner's function name
        title="attention for one query",    # (reference.__name__) are derived from it
        reference=ref.attention_one_query,  # the solution; `solution(id)` prints its source
        make_inputs=_inputs,
        named_sizes=cases("S D E", ("one key", 1, 4, 4), ("D != E", 5, 6, 3)),
        random_sizes=between(S=(2, 40), D=(2, 16), E=(1, 16)),
        hints=("a nudge", "the approach", "nearly the code"),
        wrong=[_no_scale, ...],             # at least four, each rejected (a test proves it)
        difficulty=1, minutes=5, objective="Compute softmax attention for a single query.",
    )
    EXERCISES = [EX_01_1]

- `cases(columns, *rows)`: named cases from one table; each row is (label, one value per column),
  awkward on purpose (T=1, odd T, D != E, B and H > 1). Tables of different columns concatenate.
- `between(**ranges)`: random sizes, drawn in keyword order from the case's generator: a pair of
  ints (lo, hi) is an int in [lo, hi], `bool` a coin flip, a list one of its items, anything else
  a constant. `n_random` seeds (default 3) are checked after the named cases.
- `wrong`: plain functions taking the same keyword arguments as the reference (`**_` for the ones
  they ignore); the docstring names the mistake and is shown when a learner's output matches it.
- The reference uses only what its lesson has shown: no private helpers (`import _x`,
  `from m import _y`) in `solution(id)`; a test checks it.
- Optional: `time_dim` (the output axis that is time, for "first wrong timestep"),
  `output_names` (when the function returns a tuple), `rtol`/`atol` (defaults 1e-6 / 1e-8 in
  float64), `timeout` (seconds per call), `difficulty` (1 a few lines, 2 a loop or a schedule,
  3 a kernel or a subtle schedule), `minutes` (expected time), `objective` (one sentence).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PASS, FAIL, NOT_ATTEMPTED = "pass", "fail", "not attempted"


def mistake(fn: Callable) -> str:
    """The message of a known wrong implementation: its docstring on one line."""
    return " ".join((fn.__doc__ or "").split())


@dataclass
class Exercise:
    """One exercise: the reference is the solution; cases are built from sizes.

    make_inputs(sizes, generator) -> dict of keyword arguments (float64 tensors and options)
    named_sizes: [(case name, sizes)] from `cases`; random_sizes(generator) -> sizes, from
    `between`. name and lesson default to reference.__name__ and id[:2]. See the module
    docstring for the rest of the format.
    """

    id: str
    title: str
    reference: Callable
    make_inputs: Callable[[dict, torch.Generator], dict]
    named_sizes: list[tuple[str, dict]]
    random_sizes: Callable[[torch.Generator], dict]
    hints: tuple[str, str, str]
    wrong: list[Callable]
    name: str = ""
    lesson: str = ""
    time_dim: int | None = None
    output_names: tuple[str, ...] = ("output",)
    n_random: int = 3
    rtol: float = 1e-6
    atol: float = 1e-8
    timeout: float = 10.0
    difficulty: int | None = None
    minutes: int | None = None
    objective: str = ""

    def __post_init__(self):
        self.name = self.name or self.reference.__name__
        self.lesson = self.lesson or self.id[:2]
        for fn in self.wrong:
            if not mistake(fn):
                raise ValueError(
                    f"{self.id}: the wrong implementation {fn.__name__} has no docstring; "
                    "its docstring is the message that names the mistake"
                )
        if self.difficulty not in (None, 1, 2, 3):
            raise ValueError(f"{self.id}: difficulty must be 1, 2 or 3, got {self.difficulty!r}")

    def all_cases(self, seeds=None):
        """Yield (case name, sizes, kwargs): the named cases, then one per random seed."""
        for i, (label, sizes) in enumerate(self.named_sizes):
            yield label, sizes, self.make_inputs(dict(sizes), _gen(1000 + i))
        for seed in seeds if seeds is not None else range(self.n_random):
            g = _gen(seed)
            sizes = self.random_sizes(g)
            yield f"random seed {seed}", sizes, self.make_inputs(dict(sizes), g)


def cases(columns: str, *rows) -> list[tuple[str, dict]]:
    """Named cases from one table: cases("B T", ("T=1", 1, 1), ("odd T", 2, 7))."""
    names = columns.split()
    out = []
    for label, *values in rows:
        if len(values) != len(names):
            raise ValueError(
                f"case {label!r}: {len(values)} values for the {len(names)} columns {columns!r}"
            )
        out.append((label, dict(zip(names, values))))
    return out


def between(**ranges) -> Callable[[torch.Generator], dict]:
    """Random sizes from ranges, drawn in keyword order: between(T=(1, 40), causal=bool).

    (lo, hi) of ints: an int in [lo, hi]; bool: True or False; a list: one of its items;
    anything else: that constant.
    """

    def is_range(spec):
        return (
            isinstance(spec, tuple)
            and len(spec) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in spec)
        )

    def draw(g: torch.Generator) -> dict:
        out = {}
        for key, spec in ranges.items():
            if spec is bool:
                out[key] = bool(randint(g, 0, 1))
            elif is_range(spec):
                out[key] = randint(g, *spec)
            elif isinstance(spec, list):
                out[key] = spec[randint(g, 0, len(spec) - 1)]
            else:
                out[key] = spec
        return out

    return draw


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """A random integer in [lo, hi] from the case generator (for random case sizes)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def normal(g: torch.Generator, *shape) -> torch.Tensor:
    """A float64 standard-normal tensor from the case generator."""
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def uniform(g: torch.Generator, *shape) -> torch.Tensor:
    """A float64 tensor uniform in [0, 1) from the case generator."""
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass
class CheckResult:
    """What `check` found. `status` is "pass", "fail" or "not attempted"."""

    exercise: str
    status: str
    layer: str
    message: str
    details: dict = field(default_factory=dict)
    _shown: bool = field(default=False, repr=False)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def __bool__(self) -> bool:
        return self.passed

    def text(self) -> str:
        icon = {PASS: "PASS", FAIL: "FAIL", NOT_ATTEMPTED: "NOT ATTEMPTED"}[self.status]
        return f"[{icon}] {self.exercise}: {self.message}"

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        color = {PASS: "#1b7f3b", FAIL: "#b3261e", NOT_ATTEMPTED: "#8a6d00"}[self.status]
        bg = {PASS: "#e8f5e9", FAIL: "#fdecea", NOT_ATTEMPTED: "#fff8e1"}[self.status]
        head, _, rest = self.message.partition("\n")
        body = f"<pre style='margin:4px 0 0 0;white-space:pre-wrap'>{html.escape(rest)}</pre>"
        return (
            f"<div style='border-left:4px solid {color};background:{bg};padding:6px 10px;"
            f"font-family:sans-serif'><b style='color:{color}'>{self.status.upper()}</b> "
            f"<b>{html.escape(self.exercise)}</b>: {html.escape(head)}"
            f"{body if rest else ''}</div>"
        )

    def _ipython_display_(self):
        if not self._shown:
            _show(self)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and hasattr(ip, "kernel")


def _show(result: CheckResult) -> None:
    result._shown = True
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(result._repr_html_()))
    else:
        print(result.text())


# ---------------------------------------------------------------------------------------------
# Running learner code safely


class _Timeout(BaseException):
    """Raised inside the learner's code when it runs too long (BaseException: not caught by
    a learner's `except Exception`)."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """SIGALRM-based limit where possible (main thread on Unix); otherwise no limit."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(y) for y in x)
    if isinstance(x, dict):
        return {k: _clone(y) for k, y in x.items()}
    return x


def _is_library_frame(filename: str) -> bool:
    f = os.path.abspath(filename)
    return f.startswith(_PACKAGE_DIR + os.sep) or "site-packages" in f or "lib/python" in f


def format_learner_exception(exc: BaseException) -> str:
    """The learner's own line first, then a traceback without the checker's frames."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not _is_library_frame(f.filename)]
    lines = [f"{type(exc).__name__}: {exc}"]
    if mine:
        last = mine[-1]
        code = (last.line or "").strip()
        where = _cell_name(last.filename)
        lines.append(f"  your line {last.lineno} ({where}, in {last.name}):  {code}")
        # frames after the learner's last line (e.g. inside torch) explain what failed there
        tail = frames[frames.index(last) + 1 :]
        shown = mine + tail[-1:]
        lines.append("Traceback (your frames, most recent call last):")
        for f in shown:
            lines.append(f'  File "{_cell_name(f.filename)}", line {f.lineno}, in {f.name}')
            if f.line:
                lines.append(f"    {f.line.strip()}")
    return "\n".join(lines)


def _cell_name(filename: str) -> str:
    if "ipykernel" in filename or filename.startswith("<ipython") or filename.startswith("<cell"):
        return "your cell"
    return os.path.basename(filename)


# ---------------------------------------------------------------------------------------------
# Comparing outputs


def _as_tuple(out, n: int):
    if n == 1:
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(out)
    return (out,)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {str(x.dtype).replace('torch.', '')}"
    return type(x).__name__


def _structure_problem(got, want, name: str) -> tuple[str, str] | None:
    """(kind, message) for a wrong type, shape or dtype, with the hints learners need most."""
    if not isinstance(got, torch.Tensor):
        extra = ""
        if got is None:
            extra = " (did you forget to `return` it?)"
        elif isinstance(got, (tuple, list)):
            extra = f" of length {len(got)}"
        return "type", f"{name}: expected a {_describe(want)}, got {type(got).__name__}{extra}"
    if tuple(got.shape) != tuple(want.shape):
        msg = f"{name}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
        if sorted(got.shape) == sorted(want.shape):
            msg += " (same sizes in another order: did you transpose?)"
        elif got.numel() == want.numel():
            msg += " (same number of elements: a reshape or a head split/merge is off)"
        elif got.dim() != want.dim():
            msg += f" ({got.dim()} dimensions instead of {want.dim()}: a sum or index too many?)"
        return "shape", msg
    if got.dtype != want.dtype:
        return "dtype", (
            f"{name}: expected dtype {str(want.dtype).replace('torch.', '')}, got "
            f"{str(got.dtype).replace('torch.', '')} (create new tensors with dtype=q.dtype, "
            "or use torch.zeros_like / new_zeros)"
        )
    return None


def _numbers(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float):
    """None if close, else (max error, worst index, first wrong index tuple)."""
    g, w = got.detach().to(torch.float64), want.detach().to(torch.float64)
    if torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=False):
        return None
    err = (g - w).abs()
    bad = err > atol + rtol * w.abs()
    worst = int(torch.argmax(torch.nan_to_num(err, nan=float("inf"))))
    worst_idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), err.shape))
    first_bad = tuple(int(i) for i in torch.nonzero(bad)[0]) if bad.any() else worst_idx
    return float(err.max()), worst_idx, first_bad, bad


def _close(a, b, rtol, atol) -> bool:
    a, b = _as_tuple(a, 2), _as_tuple(b, 2)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            return False
        if x.shape != y.shape:
            return False
        x, y = x.detach().double(), y.detach().double()
        if not torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def _known_mistake(ex: Exercise, inputs: dict, got, want) -> str | None:
    """The message of a known wrong implementation that reproduces `got` on this case (only one
    whose output differs from the reference here, so it says something)."""
    tol = max(ex.rtol, 1e-5), max(ex.atol, 1e-7)
    got = tuple(g.double() if isinstance(g, torch.Tensor) else g for g in _as_tuple(got, 2))
    for wrong in ex.wrong:
        try:
            with warnings_off():
                out = wrong(**_clone(inputs))
        except Exception:
            continue
        if _close(got, out, *tol) and not _close(want, out, *tol):
            return mistake(wrong)
    return None


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------
# The check


def run_check(ex: Exercise, fn: Callable, seeds=None) -> CheckResult:
    """Check `fn` against `ex.reference`; see the module docstring for the layers."""
    if not callable(fn):
        return CheckResult(
            ex.id, FAIL, "type", f"expected a function named {ex.name}, got {type(fn).__name__}"
        )
    n_out = len(ex.output_names)
    n_cases = 0
    for label, sizes, inputs in ex.all_cases(seeds):
        n_cases += 1
        size_txt = ", ".join(f"{k}={v}" for k, v in sizes.items())
        where = f"case '{label}' ({size_txt})"
        want = _as_tuple(ex.reference(**_clone(inputs)), n_out)
        given = _clone(inputs)
        try:
            with _time_limit(ex.timeout), warnings_off():
                got = fn(**given)
        except NotImplementedError:
            return CheckResult(
                ex.id,
                NOT_ATTEMPTED,
                "not attempted",
                f"not attempted yet: write {ex.name} in the exercise cell and run it again "
                f"(hint: lintutor.hint('{ex.id}'))",
            )
        except _Timeout:
            return CheckResult(
                ex.id,
                FAIL,
                "timeout",
                f"stopped after {ex.timeout:g} s on {where}: an endless loop, or a loop over "
                "elements that should be one tensor operation?",
            )
        except Exception as exc:  # the learner's bug, reported, never raised
            return CheckResult(
                ex.id,
                FAIL,
                "exception",
                f"your function raised an exception on {where}\n{format_learner_exception(exc)}",
                {"exception": type(exc).__name__, "case": label},
            )
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and not torch.equal(value, given[key]):
                return CheckResult(
                    ex.id,
                    FAIL,
                    "in-place",
                    f"your function modified its input '{key}' in place on {where}; work on a "
                    f"copy (e.g. {key} = {key}.clone()) or use out-of-place operations",
                    {"case": label},
                )
        got_t = _as_tuple(got, n_out)
        if n_out > 1 and len(got_t) != n_out:
            return CheckResult(
                ex.id,
                FAIL,
                "type",
                f"expected a tuple of {n_out} ({', '.join(ex.output_names)}), got "
                f"{len(got_t) if isinstance(got, (tuple, list)) else _describe(got)} on {where}",
            )
        for name, g, w in zip(ex.output_names, got_t, want):
            problem = _structure_problem(g, w, name)
            if problem:
                kind, problem = problem
                mistake = _known_mistake(ex, inputs, got, want)
                msg = f"wrong {kind} on {where}\n{problem}"
                if mistake:
                    msg += f"\nThis looks like a known mistake: {mistake}"
                return CheckResult(ex.id, FAIL, "structure", msg, {"case": label})
            if not torch.isfinite(g).all():
                idx = tuple(int(i) for i in torch.nonzero(~torch.isfinite(g))[0])
                kind = "NaN" if torch.isnan(g).any() else "Inf"
                msg = (
                    f"{name} contains {kind} on {where}, first at index {idx} "
                    "(a division by zero, a log of 0, or exp of a large number?)"
                )
                mistake = _known_mistake(ex, inputs, got, want)
                if mistake:
                    msg += f"\nThis looks like a known mistake: {mistake}"
                return CheckResult(ex.id, FAIL, "nan", msg, {"case": label, "index": idx})
            diff = _numbers(g, w, ex.rtol, ex.atol)
            if diff:
                max_err, worst, first, bad = diff
                lines = [
                    f"wrong numbers on {where}",
                    f"{name}: max abs error {max_err:.3g} at index {worst} "
                    f"(expected {w[worst].item():.6g}, got {g[worst].item():.6g}); "
                    f"{int(bad.sum())} of {bad.numel()} entries are off",
                ]
                if ex.time_dim is not None and g.dim() > 0:
                    t_axis = ex.time_dim % g.dim()
                    t_bad = bad.movedim(t_axis, 0).reshape(bad.shape[t_axis], -1).any(1)
                    t0 = int(torch.nonzero(t_bad)[0])
                    lines.append(f"first wrong timestep: t = {t0} of {bad.shape[t_axis]}")
                mistake = _known_mistake(ex, inputs, got, want)
                if mistake:
                    lines.append(f"This looks like a known mistake: {mistake}")
                return CheckResult(
                    ex.id,
                    FAIL,
                    "numbers",
                    "\n".join(lines),
                    {"case": label, "max_error": max_err, "index": worst, "mistake": mistake},
                )
    return CheckResult(
        ex.id,
        PASS,
        "pass",
        f"{ex.title}: all {n_cases} cases match the reference (float64, rtol={ex.rtol:g}).",
        {"cases": n_cases},
    )


def log_result(result: CheckResult) -> None:
    """Append the result to $LINTUTOR_CHECK_LOG (JSON lines) when the test harness sets it."""
    path = os.environ.get("LINTUTOR_CHECK_LOG")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"exercise": result.exercise, "status": result.status}) + "\n")


def solution_source(ex: Exercise, name: str | None = None) -> str:
    """The reference as a self-contained cell: the imports it needs, then its source under the
    learner's function name."""
    fn = ex.reference
    src = textwrap.dedent(inspect.getsource(fn))
    src = src.replace(f"def {fn.__name__}(", f"def {name or ex.name}(", 1)
    return _imports_for(fn) + "\n\n" + src


def _imports_for(fn) -> str:
    lines = []
    g = fn.__globals__
    for ident in sorted(set(_global_names(fn.__code__))):
        if ident not in g:
            continue
        obj = g[ident]
        if inspect.ismodule(obj):
            mod = obj.__name__
            if mod == ident:
                lines.append(f"import {mod}")
            elif "." in mod and mod.rsplit(".", 1)[1] == ident:
                lines.append(f"from {mod.rsplit('.', 1)[0]} import {ident}")
            else:
                lines.append(f"import {mod} as {ident}")
        else:
            mod = getattr(obj, "__module__", None) or fn.__module__
            if getattr(obj, "__name__", ident) != ident:
                mod = fn.__module__
            lines.append(f"from {mod} import {ident}")
    lines.sort(key=lambda line: (line.startswith("from lintutor"), line.startswith("from"), line))
    return "\n".join(lines)


def _global_names(code):
    yield from code.co_names
    for const in code.co_consts:
        if inspect.iscode(const):
            yield from _global_names(const)


def learner_namespace_prelude() -> dict[str, Any]:
    """Names a learner's exercise cell may use without importing (the CLI executes cells
    outside the notebook)."""
    import math

    import torch.nn.functional as F

    return {"torch": torch, "math": math, "F": F, "sys": sys}
