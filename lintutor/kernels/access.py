"""Which elements each program of a Triton kernel reads and writes, and a figure of it (lesson 08).

    first_launch(fn, *args, **kwargs)    the first kernel launch fn makes (kernel, grid, args),
                                         caught before it runs
    record(kernel, grid, *args, **kw)    run that launch once, recording every load and store
    draw(fn, program=None, **inputs)     both, then `figure`: one heatmap per tensor argument

`record` runs the kernel's Python function in Triton's CPU interpreter, on CPU copies of its
tensors placed inside NaN guard bands (as `checked_launch` does), even on a machine with a GPU:
a store or load just outside a tensor lands in its guard band and is drawn in red, and one
further away is counted (`Accesses.outside`) and not carried out, so no launch touches memory
that is not its tensors'. It wraps the interpreter's masked load and store, which are Triton
internals (`triton.runtime.interpreter`); the lesson's test checks them against the installed
Triton, and `draw` says so instead of failing if a Triton version changes them. Only lanes whose
mask is true count as accesses, as on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

GUARD = 256  # elements of guard band on each side of every tensor


class _Launched(BaseException):
    """Raised from inside a launch to stop it once it is captured (BaseException: passes a
    learner's `except Exception` and checked_launch's error translation)."""


@dataclass
class Accesses:
    """What one launch touched. reads/writes: {tensor name: {program: sorted element offsets}};
    offsets are relative to the tensor's first element (negative or >= numel: out of bounds)."""

    grid: tuple[int, int, int]
    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    reads: dict[str, dict[tuple[int, int, int], np.ndarray]] = field(default_factory=dict)
    writes: dict[str, dict[tuple[int, int, int], np.ndarray]] = field(default_factory=dict)
    outside: int = 0  # accesses beyond every guard band (not attributed to a tensor)

    @property
    def programs(self) -> list[tuple[int, int, int]]:
        """Every program of the grid, in the order the interpreter runs them."""
        nx, ny, nz = self.grid
        return [(x, y, z) for x in range(nx) for y in range(ny) for z in range(nz)]

    def touched(self, name: str, program, kind: str) -> np.ndarray:
        """Offsets of `name` that `program` read ("read") or wrote ("write")."""
        table = self.reads if kind == "read" else self.writes
        return table.get(name, {}).get(tuple(program), np.zeros(0, dtype=np.int64))

    def out_of_bounds(self) -> dict[str, list[int]]:
        """{tensor: offsets outside it that some program read or wrote}."""
        out = {}
        for table in (self.reads, self.writes):
            for name, per_program in table.items():
                n = math.prod(self.shapes[name])
                offs = {int(o) for a in per_program.values() for o in a if o < 0 or o >= n}
                if offs:
                    out[name] = sorted(set(out.get(name, [])) | offs)
        return out


def _grid3(grid, kwargs) -> tuple[int, int, int]:
    if callable(grid):
        grid = grid(kwargs)
    grid = tuple(int(g) for g in grid)
    return grid + (1,) * (3 - len(grid))


def first_launch(fn, *args, **kwargs):
    """(kernel, grid, args, kwargs) of the first Triton launch `fn(*args, **kwargs)` makes; the
    launch itself does not run. Tensor arguments are CPU copies."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    from lintutor.kernels import checked

    captured = {}
    originals = {cls: cls.run for cls in (JITFunction, InterpretedFunction)}
    # checked_launch may keep the real launch functions of its own (taken before anything could
    # patch them): those are caught too
    registry = getattr(checked, "_RUN", None)
    saved = dict(registry) if isinstance(registry, dict) else None

    def capture(self, *a, grid, warmup, **kw):
        if warmup:
            return originals[type(self)](self, *a, grid=grid, warmup=warmup, **kw)
        captured["launch"] = (
            self,
            grid,
            [x.detach().cpu().clone() if isinstance(x, torch.Tensor) else x for x in a],
            dict(kw),
        )
        raise _Launched

    for cls in originals:
        cls.run = capture
    if saved is not None:
        registry.update({cls: capture for cls in saved})
    try:
        fn(*args, **kwargs)
    except _Launched:
        pass
    finally:
        for cls, run in originals.items():
            cls.run = run
        if saved is not None:
            registry.update(saved)
    if "launch" not in captured:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} launched no Triton kernel")
    return captured["launch"]


def record(kernel, grid, *args, **kwargs) -> Accesses:
    """Run `kernel[grid](*args, **kwargs)` once in the interpreter and record its accesses."""
    from triton.runtime import interpreter
    from triton.runtime.jit import JITFunction

    from lintutor.kernels._common import interpreting

    fn = getattr(kernel, "fn", kernel)
    names = list(getattr(kernel, "arg_names", None) or fn.__code__.co_varnames)
    g = _grid3(grid, kwargs)
    call, spans, shapes, tensors = [], [], {}, []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            x = a.detach().cpu()
            buf = torch.full((x.numel() + 2 * GUARD,), float("nan"), dtype=x.dtype)
            body = buf[GUARD : GUARD + x.numel()].view(x.shape)
            body.copy_(x)
            name = names[i]
            shapes[name] = tuple(x.shape)
            start = buf.data_ptr()
            spans.append((start, start + buf.numel() * buf.element_size(), body.data_ptr(),
                          buf.element_size(), name))  # fmt: skip
            tensors.append(buf)  # keep the buffers alive during the launch
            call.append(body)
        else:
            call.append(a)
    acc = Accesses(grid=g, names=[s[4] for s in spans], shapes=shapes)
    builder = interpreter.interpreter_builder
    load, store = builder.create_masked_load, builder.create_masked_store

    def note(table, ptrs, mask):
        """Record the masked-on lanes of one load or store; returns the mask with the lanes that
        fall outside every buffer turned off, so that such an access never touches memory."""
        addrs = np.asarray(ptrs.data, dtype=np.uint64)
        keep = np.broadcast_to(np.asarray(mask.data, dtype=bool), addrs.shape)
        safe = np.zeros(addrs.shape, dtype=bool)
        for lo, hi, *_ in spans:
            safe |= (addrs >= lo) & (addrs < hi)
        on = addrs[keep]
        if on.size:
            program = tuple(int(i) for i in builder.grid_idx)
            for lo, hi, body, size, name in spans:
                inside = (on >= lo) & (on < hi)
                if inside.any():
                    offs = (on[inside].astype(np.int64) - body) // size
                    per = table.setdefault(name, {})
                    per[program] = np.union1d(per.get(program, np.zeros(0, np.int64)), offs)
            acc.outside += int((~safe[keep]).sum())
        return type(mask)(keep & safe, mask.dtype)

    def recording_load(ptrs, mask, *rest, **kw):
        return load(ptrs, note(acc.reads, ptrs, mask), *rest, **kw)

    def recording_store(ptrs, value, mask, *rest, **kw):
        return store(ptrs, value, note(acc.writes, ptrs, mask), *rest, **kw)

    before = {n: builder.__dict__[n] for n in ("create_masked_load", "create_masked_store")
              if n in builder.__dict__}  # fmt: skip
    builder.create_masked_load, builder.create_masked_store = recording_load, recording_store
    jit_call = JITFunction.__call__

    def interpreted_call(self, *a, **k):
        """A @jit helper called inside the recorded kernel, run by the interpreter; the
        language patches it needs are put back after it (the interpreter's own device-function
        call leaves them in place, which would break every later compile on a GPU)."""
        scope = interpreter._patch_lang(self.fn)
        try:
            return interpreter.InterpretedFunction(self.fn).rewrite()(*a, **k)
        finally:
            scope.restore()

    if not interpreting():  # a GPU session: triton.language's own @jit helpers (tl.zeros,
        # tl.sum, tl.cdiv...) and the learner's are compiled functions that refuse to run
        # outside a kernel; while recording, run them in the interpreter as TRITON_INTERPRET does
        JITFunction.__call__ = interpreted_call
    try:
        interpreter.InterpretedFunction(fn)[g](*call, **kwargs)
    finally:
        JITFunction.__call__ = jit_call
        for n in ("create_masked_load", "create_masked_store"):
            if n in before:
                setattr(builder, n, before[n])
            else:
                delattr(builder, n)
    return acc


def _used(grid) -> int:
    """How many grid axes are in use (at least 1)."""
    return max([i + 1 for i, n in enumerate(grid) if n > 1] or [1])


def _label(program, grid) -> str:
    """A program's id as the lesson writes it: 3 for a 1-D grid, (1, 2) for a 2-D one."""
    used = _used(grid)
    return str(program[0]) if used == 1 else "(" + ", ".join(map(str, program[:used])) + ")"


def _grid2d(shape) -> tuple[int, int]:
    """A tensor drawn as rows x columns: (n,) in rows of 32 (one row if shorter), (r, c) as is,
    (g, r, c) with the heads stacked."""
    if len(shape) == 1:
        return (-(-shape[0] // 32), 32) if shape[0] > 32 else (1, max(shape[0], 1))
    return math.prod(shape[:-1]), shape[-1]


# cell states and their colours (cells that are not elements of the tensor are left empty)
_STATES = [("not touched", "#ffffff"), ("touched by other programs", "#d9d9d9"),
           ("read by this program", "#4c78a8"), ("written by this program", "#f58518"),
           ("read and written", "#8e5ea2"), ("outside the tensor", "#d62728")]  # fmt: skip


def _states(acc: Accesses, name: str, program) -> tuple[np.ndarray, int]:
    """(rows, cols) state codes of tensor `name` for `program`, NaN where a cell is not an
    element; rows above and below the tensor appear only when something was accessed there.
    Returns (codes, number of rows drawn above the tensor)."""
    rows, cols = _grid2d(acc.shapes[name])
    n = math.prod(acc.shapes[name])
    everyone = [o for table in (acc.reads, acc.writes) for a in table.get(name, {}).values()
                for o in a]  # fmt: skip
    lo = min([0] + [o for o in everyone if o < 0])
    hi = max([rows * cols] + [o + 1 for o in everyone if o >= n])
    top = -((-lo) // cols) if lo < 0 else 0  # guard rows drawn above the tensor
    total = top + -(-hi // cols)
    codes = np.full((total, cols), np.nan)
    inside = np.arange(n) + top * cols
    codes.flat[inside] = 0

    def put(offs, code, keep=None):
        for o in offs:
            r, c = divmod(int(o) + top * cols, cols)
            if 0 <= r < total:
                old = codes[r, c]
                codes[r, c] = code if keep is None else keep(old, code)

    put(everyone, 1)
    put(acc.touched(name, program, "read"), 2)
    put(acc.touched(name, program, "write"), 3, keep=lambda old, new: 4 if old == 2 else new)
    put([o for o in everyone if o < 0 or o >= n], 5)
    return codes, top


def figure(acc: Accesses, program=None, title: str | None = None):
    """One heatmap per tensor: what `program` (default: the last one) reads and writes, what
    the other programs touch, and any access outside a tensor; a slider steps through the
    programs."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    programs = acc.programs
    program = tuple(program) if program is not None else programs[-1]
    program = program + (0,) * (3 - len(program))
    n = len(acc.names)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    titles = [f"{name.removesuffix('_ptr')} {acc.shapes[name]}" for name in acc.names]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles,
                        horizontal_spacing=0.06, vertical_spacing=0.14)  # fmt: skip
    k = len(_STATES)
    scale = []
    for i, (_, colour) in enumerate(_STATES):
        scale += [[i / k, colour], [(i + 1) / k, colour]]

    tallest = 1
    for i, name in enumerate(acc.names):
        codes, top = _states(acc, name, program)
        tallest = max(tallest, codes.shape[0])
        flat = len(acc.shapes[name]) == 1  # 1-D: rows labelled by their first offset
        step = codes.shape[1] if flat else 1
        labels = [str((r - top) * step) for r in range(codes.shape[0])]
        where = "offset %{y} + %{x}" if flat else "row %{y}, column %{x}"
        fig.add_trace(
            go.Heatmap(z=codes + 0.5, zmin=0, zmax=k, colorscale=scale, showscale=False,
                       y=labels, xgap=1, ygap=1, hovertemplate=where + "<extra></extra>"),
            row=i // ncols + 1, col=i % ncols + 1,
        )  # fmt: skip
    for i, name in enumerate(acc.names):
        fig.update_yaxes(autorange="reversed", row=i // ncols + 1, col=i % ncols + 1,
                         title_text=None if i % ncols else
                         "offset" if len(acc.shapes[name]) == 1 else "row")  # fmt: skip
    for label, colour in _STATES:
        fig.add_scatter(x=[None], y=[None], mode="markers", name=label,
                        marker=dict(symbol="square", size=12, color=colour,
                                    line=dict(width=1, color="#888")))  # fmt: skip
    frames, steps = [], []
    for p in programs:
        zs = [_states(acc, name, p)[0] + 0.5 for name in acc.names]
        label = _label(p, acc.grid)
        frames.append(go.Frame(data=[go.Heatmap(z=z) for z in zs], name=label,
                               traces=list(range(n))))  # fmt: skip
        go_to = dict(mode="immediate", frame=dict(duration=0))
        steps.append(dict(method="animate", label=label, args=[[label], go_to]))
    fig.frames = frames
    plot_h = nrows * (50 + 14 * min(tallest, 32))
    fig.update_layout(
        title=dict(text=title or f"What program {_label(program, acc.grid)} reads and writes "
                   f"(grid {acc.grid[: _used(acc.grid)]})", x=0.01, xanchor="left"),
        height=max(330, plot_h + 170), width=800, margin=dict(t=80, b=110, l=60, r=10),
        legend=dict(x=1.01, y=1, yanchor="top", font=dict(size=11)),
        sliders=[dict(active=programs.index(program), steps=steps, x=0, y=0, yanchor="top",
                      pad=dict(t=45), currentvalue=dict(prefix="program "), len=0.75)],
    )  # fmt: skip
    return fig


def draw(fn, program=None, title=None, **inputs):
    """Figure of the first kernel launch `fn(**inputs)` makes, or None with the reason printed
    (an exercise not attempted yet, a kernel that raised, a Triton whose interpreter changed)."""
    try:
        kernel, grid, args, kwargs = first_launch(fn, **inputs)
        acc = record(kernel, grid, *args, **kwargs)
    except NotImplementedError:
        print(f"{getattr(fn, '__name__', 'the function')} is not written yet: nothing to draw")
        return None
    except Exception as err:  # never break the lesson over a drawing
        print(f"could not draw the accesses: {type(err).__name__}: {err}")
        return None
    bad = acc.out_of_bounds()
    if bad:
        print("accesses outside a tensor (red):",
              "; ".join(f"{n}: offsets {o[0]}..{o[-1]}" for n, o in bad.items()))  # fmt: skip
    if acc.outside:
        print(f"{acc.outside} accesses fell further outside every tensor: not drawn, not done")
    return figure(acc, program, title)
