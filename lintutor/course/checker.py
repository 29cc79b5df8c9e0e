"""The exercise checker: run a learner's function on named and random cases, compare with the
package reference in float64, and explain the first thing that is wrong.

Layers, checked in order; the first failing one is reported:
  1. not attempted      the function raises NotImplementedError
  2. exception          anything else raised (the learner's own line is shown first); "kernel"
                        when a Triton launch read or wrote outside a tensor (checked launcher)
  3. exit               SystemExit, KeyboardInterrupt, os._exit or a crash of the process
  4. timeout            one call ran longer than `Exercise.timeout` seconds (the real time shown)
  5. in-place           an input tensor (also one inside a tuple) was modified
  6. type/shape/dtype   expected vs actual, leaf by leaf for nested results ("state[1]"), with
                        a "did you transpose?" hint; a tensor on another device (meta) is named
  7. NaN/Inf            where the first one is
  8. numbers            max error, worst index, first wrong timestep; known mistakes are named
  9. form               `Exercise.form`: the function computes another form than the one asked
                        (see lintutor.course.forms)

`check` never raises: whatever the learner's code does, it returns a `CheckResult`. The learner's
function runs through lintutor.course.sandbox: in a child process where one can be forked (hard
time limit, crashes contained), in this process otherwise; either way the global state is put
back after every call and its prints are captured and shown once. Comparisons use torch
functions captured when this module was imported, with tensor subclasses' overrides turned off,
so replacing `torch.allclose` (or returning a tensor that overrides it) cannot make a wrong
answer pass.

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
        wrong=[_no_scale, ...],             # at least six, each rejected (a test proves it)
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
- `difficulty` (1 a few lines, 2 a loop or a schedule, 3 a kernel or a subtle schedule),
  `minutes` (expected time) and `objective` (one sentence): optional to the checker, required
  of every course exercise by tests/course/test_exercises.py.
- Optional: `time_dim` (the axis of the first output that is time, for "first wrong
  timestep"), `output_names` (when the function returns a tuple; nested tuples are compared
  leaf by leaf and named "state[0]"), `rtol`/`atol` (defaults 1e-6 / 1e-8 in float64),
  `timeout` (seconds per call), `form` ("recurrent", "parallel", "chunked", "no loop over t" or
  "linear": the form the exercise asks for, checked after the numbers), `form_sizes` (the sizes
  the form check starts from; by default the smallest named case, with T, S and the chunk size
  set by the check), `form_asked` (what a wrong-form message says the exercise asks for, where
  the form's own sentence says less: 07.1's "parallel" also means no loop over groups).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lintutor.course import sandbox

PASS, FAIL, NOT_ATTEMPTED = "pass", "fail", "not attempted"
FORMS = ("recurrent", "parallel", "chunked", "no loop over t", "linear")

# The torch functions the comparisons use, taken now: a learner who replaces torch.allclose (in
# a cell, or inside the function) changes these names in torch, not the ones here.
_allclose, _equal, _isfinite, _isnan = torch.allclose, torch.equal, torch.isfinite, torch.isnan
_abs, _sub, _add, _mul, _gt = torch.abs, torch.sub, torch.add, torch.mul, torch.gt
_argmax, _nonzero, _nan_to_num = torch.argmax, torch.nonzero, torch.nan_to_num
_any, _max = torch.any, torch.max
_detach, _to, _as_subclass = torch.Tensor.detach, torch.Tensor.to, torch.Tensor.as_subclass
_no_subclass = torch._C.DisableTorchFunctionSubclass  # a subclass's overrides are not consulted


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
    form: str | None = None
    form_sizes: dict | None = None
    form_asked: str | None = None

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
        if self.form_asked and not self.form:
            raise ValueError(f"{self.id}: form_asked needs a form to check")
        if self.form not in (None, *FORMS):
            raise ValueError(f"{self.id}: form must be one of {FORMS}, got {self.form!r}")
        if (
            self.form
            and not self.form_sizes
            and not any("T" in sizes or "S" in sizes for _, sizes in self.named_sizes)
        ):
            raise ValueError(f"{self.id}: the form check needs a named case with T (or form_sizes)")

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
    """What `check` found. `status` is "pass", "fail" or "not attempted"; details["meta"] holds
    the exercise's difficulty, minutes and objective, details["printed"] what the learner's
    function printed (shown once, truncated)."""

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

    def _about(self) -> str:
        """The objective line: "Objective met: ..." on a pass, "Objective: ..." otherwise."""
        meta = self.details.get("meta") or {}
        about = []
        if meta.get("difficulty"):
            about.append(f"difficulty {meta['difficulty']}/3")
        if meta.get("minutes"):
            about.append(f"about {meta['minutes']} min")
        objective = meta.get("objective", "")
        if not (objective or about):
            return ""
        head = "Objective met: " if self.passed else "Objective: "
        tail = f" ({', '.join(about)})" if about else ""
        return (head + objective + tail) if objective else tail.strip(" ()")

    def text(self) -> str:
        icon = {PASS: "PASS", FAIL: "FAIL", NOT_ATTEMPTED: "NOT ATTEMPTED"}[self.status]
        lines = [f"[{icon}] {self.exercise}: {self.message}"]
        for extra in (self._about(), self.details.get("printed", "")):
            if extra:
                lines.append(extra)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        color = {PASS: "#1b7f3b", FAIL: "#b3261e", NOT_ATTEMPTED: "#8a6d00"}[self.status]
        bg = {PASS: "#e8f5e9", FAIL: "#fdecea", NOT_ATTEMPTED: "#fff8e1"}[self.status]
        head, _, rest = self.message.partition("\n")
        body = f"<pre style='margin:4px 0 0 0;white-space:pre-wrap'>{html.escape(rest)}</pre>"
        about = self._about()
        about = (
            f"<div style='margin-top:4px;color:#444'>{html.escape(about)}</div>" if about else ""
        )
        printed = self.details.get("printed", "")
        printed = (
            "<pre style='margin:4px 0 0 0;white-space:pre-wrap;color:#555'>"
            f"{html.escape(printed)}</pre>"
            if printed
            else ""
        )
        return (
            f"<div style='border-left:4px solid {color};background:{bg};padding:6px 10px;"
            f"font-family:sans-serif'><b style='color:{color}'>{self.status.upper()}</b> "
            f"<b>{html.escape(self.exercise)}</b>: {html.escape(head)}"
            f"{body if rest else ''}{about}{printed}</div>"
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
# Learner code: exceptions and frames


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(y) for y in x)
    if isinstance(x, dict):
        return {k: _clone(y) for k, y in x.items()}
    return x


def _is_library_frame(filename: str) -> bool:
    return sandbox.library_file(filename)


def format_learner_exception(exc: BaseException) -> str:
    """The learner's own line first, then a traceback without the checker's frames."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not _is_library_frame(f.filename)]
    lines = [f"{type(exc).__name__}: {exc}".rstrip(": ")]
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


def _is_kernel_error(exc: BaseException) -> bool:
    return type(exc).__module__ == "lintutor.kernels.checked"


_EXIT_WHY = {
    "SystemExit": "sys.exit() or exit() ends the program; a checked function must return",
    "KeyboardInterrupt": "an interrupt (the stop button, or `raise KeyboardInterrupt`)",
}


def _call_problem(ex: Exercise, call: sandbox.Call, where: str, label: str) -> CheckResult | None:
    """The verdict for a call that did not return a value, or None if it did."""
    if call.kind == "ok":
        return None
    if call.kind == "not attempted":
        return CheckResult(
            ex.id,
            NOT_ATTEMPTED,
            "not attempted",
            f"not attempted yet: write {ex.name} in the exercise cell and run it again "
            f"(hint: lintutor.hint('{ex.id}'))",
        )
    if call.kind == "timeout":
        return _timeout(ex, where, call.elapsed, stopped=call.error is not None)
    err = call.error
    details = {"exception": type(err).__name__, "case": label}
    if call.kind == "exit":
        why = _EXIT_WHY.get(type(err).__name__, "a BaseException that is not an error")
        msg = (
            f"your function raised {type(err).__name__} on {where} ({why})\n"
            f"{format_learner_exception(err)}"
        )
        return CheckResult(ex.id, FAIL, "exit", msg, details)
    if _is_kernel_error(err):
        msg = (
            f"your kernel failed the memory check on {where}\n{err}\n"
            f"{format_learner_exception(err).split(chr(10), 1)[-1]}"
        )
        return CheckResult(ex.id, FAIL, "kernel", msg, details)
    msg = f"your function raised an exception on {where}\n{format_learner_exception(err)}"
    return CheckResult(ex.id, FAIL, "exception", msg, details)


def _timeout(ex: Exercise, where: str, elapsed: float, stopped: bool) -> CheckResult:
    if stopped:
        head = f"stopped after {elapsed:.1f} s on {where}"
    else:
        head = f"finished only after {elapsed:.1f} s on {where}"
    return CheckResult(
        ex.id,
        FAIL,
        "timeout",
        f"{head} (the limit is {ex.timeout:g} s per call): an endless loop, or a loop over "
        "elements that should be one tensor operation?",
        {"elapsed": elapsed},
    )


# ---------------------------------------------------------------------------------------------
# Comparing outputs


class _Mismatch(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, (tuple, list)):
        return f"{type(x).__name__} of length {len(x)}"
    return type(x).__name__


def _pairs(got, want, name: str, out: list) -> None:
    """(name, got, want) for every leaf of the reference's result, or _Mismatch."""
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            extra = " (did you forget to `return` it?)" if got is None else ""
            raise _Mismatch(
                f"{name}: expected a tuple of {len(want)}, got a {_describe(got)}{extra}"
            )
        for i, (g, w) in enumerate(zip(got, want)):
            _pairs(g, w, f"{name}[{i}]", out)
    elif want is None:
        if got is not None:
            raise _Mismatch(f"{name}: expected None, got a {_describe(got)}")
    else:
        out.append((name, got, want))


def _leaf_pairs(got, want, names: tuple[str, ...]) -> list:
    pairs: list = []
    if isinstance(want, (tuple, list)) and len(names) == len(want) and len(names) > 1:
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            raise _Mismatch(
                f"expected a tuple of {len(want)} ({', '.join(names)}), got a {_describe(got)}"
                + (" (did you forget to `return` it?)" if got is None else "")
            )
        for n, g, w in zip(names, got, want):
            _pairs(g, w, n, pairs)
    else:
        generic = names == ("output",) and isinstance(want, (tuple, list))
        _pairs(got, want, "result" if generic else names[0], pairs)
    return pairs


def _plain(x):
    """x as a plain torch.Tensor (a subclass's overrides are not asked)."""
    if isinstance(x, torch.Tensor) and type(x) is not torch.Tensor:
        with _no_subclass():
            return _as_subclass(x, torch.Tensor)
    return x


def _structure_problem(got, want, name: str) -> tuple[str, str] | None:
    """(kind, message) for a wrong type, device, layout, shape or dtype, with the hints learners
    need most."""
    if not isinstance(got, torch.Tensor):
        extra = " (did you forget to `return` it?)" if got is None else ""
        return "type", f"{name}: expected a {_describe(want)}, got a {_describe(got)}{extra}"
    got = _plain(got)
    if got.device != want.device:
        if got.device.type == "meta":
            return "device", (
                f"{name}: your output is on the meta device: it has a shape "
                f"{tuple(got.shape)} but no values (torch.set_default_device('meta') or "
                "device='meta' somewhere?). Build it from the inputs, e.g. torch.zeros_like(v)."
            )
        return "device", (
            f"{name}: expected a tensor on {want.device}, got one on {got.device} (return "
            "it with .to(q.device))"
        )
    if got.layout != want.layout:
        return "layout", f"{name}: expected a dense tensor, got a {got.layout} one (.to_dense())"
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
    """None if close, else (max error, worst index, first wrong index, bad mask)."""
    g = _to(_detach(_plain(got)), torch.float64)
    w = _to(_detach(want), torch.float64)
    if g.dtype == torch.bool or not g.is_floating_point():
        g = _to(g, torch.float64)
    if _allclose(g, w, rtol=rtol, atol=atol, equal_nan=False):
        return None
    err = _abs(_sub(g, w))
    bad = _gt(err, _add(_mul(_abs(w), rtol), atol)) | _isnan(err)
    if err.dim() == 0:
        return float(err), (), (), bad
    worst = int(_argmax(_nan_to_num(err, nan=float("inf"))))
    worst_idx = _unravel(worst, err.shape)
    first_bad = tuple(int(i) for i in _nonzero(bad)[0]) if bool(_any(bad)) else worst_idx
    return float(_max(_nan_to_num(err, nan=float("inf")))), worst_idx, first_bad, bad


def _unravel(flat: int, shape) -> tuple[int, ...]:
    """The index of element `flat` of a row-major tensor of this shape. Not torch.unravel_index:
    its argument check imports torch.fx's symbolic shapes and sympy, ~0.5 s in every forked
    child that finds a wrong number."""
    index = []
    for n in reversed(tuple(shape)):
        flat, i = divmod(flat, n)
        index.append(i)
    return tuple(reversed(index))


def _scalar_problem(got, want, name: str, rtol: float, atol: float) -> str | None:
    """A Python value in the reference's result (an int, a float, a bool, a string)."""
    if isinstance(got, torch.Tensor) and got.numel() == 1 and isinstance(want, (int, float)):
        got = _plain(got).item()
    if isinstance(want, bool) or not isinstance(want, (int, float)):
        return None if got == want else f"{name}: expected {want!r}, got {got!r}"
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"{name}: expected a number ({want!r}), got a {_describe(got)}"
    if abs(got - want) <= atol + rtol * abs(want):
        return None
    return f"{name}: expected {want!r}, got {got!r}"


def _flat(x) -> list:
    if isinstance(x, (tuple, list)):
        return [y for part in x for y in _flat(part)] + [("len", len(x))]
    return [x]


def _close(a, b, rtol, atol) -> bool:
    a, b = _flat(a), _flat(b)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                return False
            x, y = _plain(x), _plain(y)
            if x.shape != y.shape or x.device != y.device:
                return False
            x, y = _to(_detach(x), torch.float64), _to(_detach(y), torch.float64)
            if not _allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                return False
        elif x != y:
            return False
    return True


def _known_mistake(ex: Exercise, inputs: dict, got, want) -> str | None:
    """The message of a known wrong implementation that reproduces `got` on this case (only one
    whose output differs from the reference here, so it says something)."""
    tol = max(ex.rtol, 1e-5), max(ex.atol, 1e-7)
    for wrong in ex.wrong:
        try:
            with warnings_off():
                out = wrong(**_clone(inputs))
        except Exception:
            continue
        with _no_subclass():
            if _close(got, out, *tol) and not _close(want, out, *tol):
                return mistake(wrong)
    return None


def _modified(original, given, name: str) -> str | None:
    """The name of the first input tensor (also inside tuples) that the call changed."""
    if isinstance(original, torch.Tensor):
        with _no_subclass():
            same = (
                isinstance(given, torch.Tensor)
                and given.shape == original.shape
                and given.dtype == original.dtype
                and _equal(_plain(original), _plain(given))
            )
        return None if same else name
    if isinstance(original, (tuple, list)):
        for i, (o, g) in enumerate(zip(original, given)):
            found = _modified(o, g, f"{name}[{i}]")
            if found:
                return found
    return None


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _compare(ex: Exercise, inputs: dict, got, want, where: str, label: str):
    """The verdict for a wrong result on this case, or None when it matches."""

    def fail(layer, lines, **details):
        found = _known_mistake(ex, inputs, got, want)
        if found:
            lines.append(f"This looks like a known mistake: {found}")
        return CheckResult(
            ex.id, FAIL, layer, "\n".join(lines), {"case": label, "mistake": found, **details}
        )

    with _no_subclass():
        try:
            pairs = _leaf_pairs(got, want, ex.output_names)
        except _Mismatch as m:
            return fail("structure", [f"wrong type on {where}", m.message])
        for i, (name, g, w) in enumerate(pairs):
            if not isinstance(w, torch.Tensor):
                problem = _scalar_problem(g, w, name, ex.rtol, ex.atol)
                if problem:
                    return fail("numbers", [f"wrong numbers on {where}", problem])
                continue
            problem = _structure_problem(g, w, name)
            if problem:
                kind, problem = problem
                return fail("structure", [f"wrong {kind} on {where}", problem])
            g = _plain(g)
            if g.is_floating_point() and not bool(_isfinite(g).all()):
                idx = tuple(int(j) for j in _nonzero(~_isfinite(g))[0])
                kind = "NaN" if bool(_isnan(g).any()) else "Inf"
                return fail(
                    "nan",
                    [
                        f"{name} contains {kind} on {where}, first at index {idx} "
                        "(a division by zero, a log of 0, or exp of a large number?)"
                    ],
                    index=idx,
                )
            diff = _numbers(g, w, ex.rtol, ex.atol)
            if diff:
                max_err, worst, first, bad = diff
                lines = [
                    f"wrong numbers on {where}",
                    f"{name}: max abs error {max_err:.3g} at index {worst} "
                    f"(expected {float(w[worst]):.6g}, got {float(g[worst]):.6g}); "
                    f"{int(bad.sum())} of {bad.numel()} entries are off",
                ]
                if i == 0 and ex.time_dim is not None and g.dim() > 0:
                    t_axis = ex.time_dim % g.dim()
                    t_bad = bad.movedim(t_axis, 0).reshape(bad.shape[t_axis], -1).any(1)
                    t0 = int(_nonzero(t_bad)[0])
                    lines.append(f"first wrong timestep: t = {t0} of {bad.shape[t_axis]}")
                return fail("numbers", lines, max_error=max_err, index=worst)
    return None


# ---------------------------------------------------------------------------------------------
# The check


def run_check(
    ex: Exercise, fn: Callable, seeds=None, *, isolate: bool | None = None
) -> CheckResult:
    """Check `fn` against `ex.reference`; see the module docstring for the layers.

    isolate: run the learner's calls in a forked child process (None, or True where a child
    cannot work, e.g. on a GPU machine: wherever that works, see `sandbox.can_isolate`); False
    runs them in this process.
    """
    if not callable(fn):
        return _with_meta(
            CheckResult(
                ex.id, FAIL, "type", f"expected a function named {ex.name}, got {type(fn).__name__}"
            ),
            ex,
        )
    if isolate is None or (isolate and not sandbox.can_isolate()):  # e.g. a GPU machine
        isolate = sandbox.can_isolate()
    result = None
    if isolate:
        outcome = sandbox.run_in_child(lambda calls: _as_dict(_check(ex, fn, seeds, calls)))
        result = _from_child(ex, outcome)
    if result is None:
        result = _check(ex, fn, seeds, sandbox.Calls())
    return _with_meta(result, ex)


def _check(ex: Exercise, fn: Callable, seeds, calls: sandbox.Calls) -> CheckResult:
    with calls.session():
        result = _run_cases(ex, fn, seeds, calls)
    printed = calls.printed.report()
    if printed:
        result.details["printed"] = printed
    return result


def _run_cases(ex: Exercise, fn: Callable, seeds, calls: sandbox.Calls) -> CheckResult:
    n_cases = 0
    for label, sizes, inputs in ex.all_cases(seeds):
        n_cases += 1
        size_txt = ", ".join(f"{k}={v}" for k, v in sizes.items())
        where = f"case '{label}' ({size_txt})"
        want = ex.reference(**_clone(inputs))
        given = _clone(inputs)
        call = calls.call(fn, given, ex.timeout, where)
        problem = _call_problem(ex, call, where, label)
        if problem is not None:
            return problem
        for key, value in inputs.items():
            changed = _modified(value, given.get(key), key)
            if changed:
                return CheckResult(
                    ex.id,
                    FAIL,
                    "in-place",
                    f"your function modified its input '{changed}' in place on {where}; work on "
                    f"a copy (e.g. {key} = {key}.clone()) or use out-of-place operations",
                    {"case": label},
                )
        wrong = _compare(ex, inputs, call.value, want, where, label)
        if wrong is not None:
            return wrong
    seen = ""
    if ex.form:
        from lintutor.course import forms

        problem, extra = forms.check_form(ex, fn, calls)
        if isinstance(problem, sandbox.Call):
            return _call_problem(ex, problem, extra, "form check")
        if problem:
            return CheckResult(
                ex.id, FAIL, "form", f"right numbers, wrong form: {problem}", {"form": ex.form}
            )
        seen = f"; {extra}, as asked"
    return CheckResult(
        ex.id,
        PASS,
        "pass",
        f"{ex.title}: all {n_cases} cases match the reference (float64, rtol={ex.rtol:g}){seen}.",
        {"cases": n_cases},
    )


def _as_dict(result: CheckResult) -> dict:
    return {
        "exercise": result.exercise,
        "status": result.status,
        "layer": result.layer,
        "message": result.message,
        "details": result.details,
    }


_CRASH_HINT = {
    "SIGSEGV": "a crash in C code: memory read or written outside a tensor (a kernel's pointer "
    "without a mask, or a C extension)",
    "SIGBUS": "a crash in C code: memory read or written outside a tensor",
    "SIGABRT": "an abort in C code: often memory written outside a tensor (a store without a "
    "mask) that broke the allocator, or os.abort()",
    "SIGKILL": "killed from outside (out of memory?)",
}


def _crash_report(output: str) -> str:
    """A dying child's last output with only what helps: messages (free(): invalid pointer,
    Fatal Python error: ...) and the learner's own frames of the Python traceback."""
    keep = []
    for line in output.strip().splitlines():
        text = line.strip()
        if not text or text.startswith(("Extension modules", "Current thread", "Thread 0x")):
            continue
        frame = re.match(r'File "(.+)", line (\d+) in (\S+)', text)
        if frame:
            if not sandbox.library_file(frame.group(1)):
                where = _cell_name(frame.group(1))
                keep.append(f"  your line {frame.group(2)} ({where}, in {frame.group(3)})")
            continue
        keep.append(text)
    return "\n".join(keep[-12:])[-800:]


def _from_child(ex: Exercise, out: sandbox.ChildOutcome) -> CheckResult | None:
    """The verdict from a check run in a child; None when it must run in this process."""
    if out.kind == "result":
        return CheckResult(**out.value)
    if out.kind == "timeout":
        return _timeout(ex, out.where, out.elapsed, stopped=True)
    if out.kind == "died":
        signame = out.status.removeprefix("killed by ")
        why = _CRASH_HINT.get(signame, "os._exit(), or a C library that called exit()")
        where = (
            f"on {out.where}"
            if out.where
            else (f"after your function ran on {out.after}" if out.after else "before it ran")
        )
        lines = [f"your function ended the process {where} ({out.status}): {why}"]
        said = _crash_report(out.output)
        if said:
            lines.append("What the process said as it ended:\n" + said)
        return CheckResult(ex.id, FAIL, "exit", "\n".join(lines), {"status": out.status})
    if out.kind == "error":
        last = out.output.strip().splitlines()[-1] if out.output.strip() else "?"
        return CheckResult(ex.id, FAIL, "internal", f"the checker itself failed: {last}")
    return None  # "stuck" or "unavailable": check in this process


def _with_meta(result: CheckResult, ex: Exercise) -> CheckResult:
    meta = {"difficulty": ex.difficulty, "minutes": ex.minutes, "objective": ex.objective}
    if any(meta.values()):
        result.details["meta"] = meta
    return result


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
