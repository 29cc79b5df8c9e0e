"""A checked launcher for learners' Triton kernels, and plain-language Triton errors (lesson 08).

`checked_launch(kernel, grid, *args)` launches `kernel[grid](*args)` on copies of the tensor
arguments that sit inside guard-padded buffers:

    [ guard (NaN) | the tensor's elements | guard (NaN) ]

- an out-of-bounds write changes a guard: reported with the tensor, the offsets (relative to
  the tensor's first element) and the program that wrote them;
- an out-of-bounds read loads a NaN guard, which shows up as NaN in an output: reported with
  the output, the NaN offsets and the program (a read whose value the store masks away never
  reaches memory and is harmless, so it is not reported);
- outputs start as NaN too (`outputs=`), so elements that no program wrote are reported.

The program is found without touching Triton's internals: the launch is repeated on fresh
buffers with the grid cut short (only programs 0..n-1 along the slowest axis, then the next),
and a binary search finds the first program whose launch shows the problem. This works in the
interpreter and on a GPU alike. Results are copied back into the caller's tensors.
"""

from __future__ import annotations

import os

import torch

GUARD = 1024


class KernelCheckError(RuntimeError):
    """A learner's kernel read or wrote out of bounds, or left outputs unwritten."""


def explain_error(err: BaseException, kernel=None) -> str | None:
    """What to do about a known cryptic Triton error, or None if it is not one we know."""
    msg = f"{type(err).__name__}: {err}"
    low = msg.lower()
    interp = os.environ.get("TRITON_INTERPRET", "0") == "1"
    compiled = kernel is not None and type(kernel).__name__ == "JITFunction"
    if "active driver" in low or "no driver" in low or "cuda driver" in low:
        if interp and compiled:
            return (
                "TRITON_INTERPRET=1 was set after triton was imported, so this kernel was built "
                "for a GPU that is not there. Restart the kernel (Python process) and set "
                "os.environ['TRITON_INTERPRET'] = '1' before the first `import triton` (importing "
                "lintutor.kernels first does it for you when no GPU is present)."
            )
        return (
            "Triton found no GPU driver: there is no GPU here. Run kernels in the CPU interpreter: "
            "restart, then set os.environ['TRITON_INTERPRET'] = '1' before importing triton, and "
            "pass CPU tensors."
        )
    if "arange" in low and "power of 2" in low:
        return (
            "tl.arange(0, N) needs N to be a power of two (a constexpr). Use "
            "BLOCK = triton.next_power_of_2(n) in the launcher and mask the extra lanes "
            "(offs < n) in every load and store."
        )
    if "pointer argument cannot be accessed" in low or "cpu tensor" in low:
        return (
            "A CPU tensor was passed to a kernel compiled for the GPU: move every tensor to "
            "the GPU (x.cuda()) or run in the interpreter (TRITON_INTERPRET=1 before import)."
        )
    if "constexpr" in low and ("must be" in low or "expected" in low):
        return (
            "A tl.constexpr argument (block sizes, flags) must be passed as a keyword with a "
            "Python int/bool at launch, e.g. kernel[grid](x, y, BLOCK=128)."
        )
    return None


def _sentinel_bits(dtype):
    return torch.full((1,), float("nan"), dtype=dtype).view(_int_view(dtype))[0]


def _int_view(dtype):
    return {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]


def _guarded(x: torch.Tensor, poison: bool):
    """A NaN-guarded contiguous copy of x: (buffer, view of the tensor part)."""
    buf = torch.full((x.numel() + 2 * GUARD,), float("nan"), dtype=x.dtype, device=x.device)
    body = buf[GUARD : GUARD + x.numel()].view(x.shape)
    if not poison:
        body.copy_(x)
    return buf, body


def _launch(kernel, grid, args, kwargs, names, fill):
    """Launch on fresh guarded copies; fill: {name: value} pre-fills outputs (NaN = poison).

    Returns {argument index: (buffer, body)}."""
    bufs, call = {}, []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            buf, body = _guarded(a, poison=names[i] in fill)
            if names[i] in fill:
                body.fill_(fill[names[i]])
            bufs[i] = (buf, body)
            call.append(body)
        else:
            call.append(a)
    kernel[grid](*call, **kwargs)
    return bufs


def _guard_writes(bufs, names) -> dict[str, list[int]]:
    """{tensor name: offsets (relative to its first element) of guard elements that changed}."""
    found = {}
    for i, (buf, body) in bufs.items():
        n = body.numel()
        bits = buf.view(_int_view(buf.dtype)).cpu()
        idx = torch.cat([torch.arange(GUARD), torch.arange(GUARD + n, 2 * GUARD + n)])
        changed = idx[bits[idx] != _sentinel_bits(buf.dtype)] - GUARD
        if len(changed):
            found[names[i]] = changed.tolist()
    return found


def _nan_offsets(bufs, names, tensor) -> list[int]:
    body = bufs[names.index(tensor)][1]
    return torch.nonzero(torch.isnan(body.reshape(-1))).flatten().cpu().tolist()


def _first_program(grid, shows) -> tuple[int, int, int]:
    """Binary search for the first program (z, then y, then x) whose partial grid `shows`."""
    pid = [0, 0, 0]
    for axis in (2, 1, 0):  # programs run in (z, y, x) order; subsets of clean grids are clean
        lo, hi = 0, grid[axis] - 1
        while lo < hi:
            mid = (lo + hi) // 2
            g = [pid[a] + 1 if a > axis else grid[a] for a in range(3)]
            g[axis] = mid + 1
            if shows(tuple(g)):
                hi = mid
            else:
                lo = mid + 1
        pid[axis] = lo
    return pid[0], pid[1], pid[2]


def _grid_tuple(grid, kwargs):
    if callable(grid):
        grid = grid(kwargs)
    grid = tuple(int(g) for g in grid)
    return grid + (1,) * (3 - len(grid))


def checked_launch(kernel, grid, *args, outputs=("out",), **kwargs):
    """Run `kernel[grid](*args, **kwargs)` on guard-padded copies and report what went wrong.

    outputs: names of the kernel's output arguments; every element must be written. Raises
    KernelCheckError naming the tensor, the offsets and the program (x, y, z); translates known
    cryptic errors (see `explain_error`). On success the outputs are copied into `args`.
    """
    names = list(getattr(kernel, "arg_names", []))
    names += [f"arg{i}" for i in range(len(names), len(args))]
    missing = [o for o in outputs if o not in names[: len(args)]]
    if missing:
        raise ValueError(f"outputs {missing} are not arguments of the kernel: {names[: len(args)]}")
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and names[i] not in outputs and torch.isnan(a).any():
            raise ValueError(f"input '{names[i]}' contains NaN: the read check needs finite inputs")
    g = _grid_tuple(grid, kwargs)
    poison = {o: float("nan") for o in outputs}
    marker = {o: 0.0 for o in outputs}
    try:
        bufs = _launch(kernel, g, args, kwargs, names, poison)
    except Exception as err:
        hint = explain_error(err, kernel)
        if hint is not None:
            raise KernelCheckError(
                f"{hint}\n(the original error: {type(err).__name__}: {err})"
            ) from None
        raise
    writes = _guard_writes(bufs, names)
    if writes:
        tensor, offs = next(iter(writes.items()))
        n = bufs[names.index(tensor)][1].numel()
        pid = _first_program(g, lambda gg: tensor in _guard_writes(
            _launch(kernel, gg, args, kwargs, names, poison), names))  # fmt: skip
        raise KernelCheckError(
            f"out-of-bounds write to '{tensor}' (numel {n}) by program {pid}: offsets "
            f"{_span(offs)} relative to its first element. Mask the store (mask=offs < n)."
        )
    for tensor in outputs:
        if not _nan_offsets(bufs, names, tensor):
            continue
        # outputs pre-filled with 0: a NaN now was computed from a NaN guard (an out-of-bounds read)
        read = _nan_offsets(_launch(kernel, g, args, kwargs, names, marker), names, tensor)
        if read:

            def reads(gg, tensor=tensor):
                return bool(
                    _nan_offsets(_launch(kernel, gg, args, kwargs, names, marker), names, tensor)
                )

            pid = _first_program(g, reads)
            raise KernelCheckError(
                f"out-of-bounds read: '{tensor}' got NaN at offsets {_span(read)}, first from "
                f"program {pid}, computed from a value outside an input tensor. Mask the loads "
                "(mask=offs < n, other=0.0)."
            )
        offs = _nan_offsets(bufs, names, tensor)
        n = bufs[names.index(tensor)][1].numel()
        raise KernelCheckError(
            f"'{tensor}' has {len(offs)} of {n} elements that no program wrote (offsets "
            f"{_span(offs)}): the grid is too small, or a store is masked too much."
        )
    for i, (_, body) in bufs.items():
        if names[i] in outputs:
            args[i].copy_(body.view(args[i].shape))


def _span(offs) -> str:
    offs = sorted(offs)
    if len(offs) <= 6:
        return str(offs)
    return f"{offs[0]}..{offs[-1]} ({len(offs)} elements)"
