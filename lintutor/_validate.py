"""Input checks shared by every public function: wrong input names the argument, the expected
and the actual shape.

    dims = check_shapes(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"))
    dims["T"]  # the sequence length every argument agreed on

Letters are bound by the first argument that uses them; a later argument that disagrees is
reported with both sizes. An integer in the spec is a fixed size.
"""

from __future__ import annotations

import torch


class ShapeError(ValueError):
    """A tensor argument has the wrong number of dimensions or a size that disagrees."""


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_shapes(**specs) -> dict[str, int]:
    """Check each `name=(tensor, "B H T D")` and return the bound sizes, e.g. {"B": 2, ...}."""
    dims: dict[str, int] = {}
    where: dict[str, str] = {}
    for name, (x, spec) in specs.items():
        if x is None:
            continue
        letters = spec.split()
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{name}: expected a torch.Tensor of shape {spec}, got {type(x).__name__}"
            )
        if x.dim() != len(letters):
            raise ShapeError(
                f"{name}: expected {len(letters)} dimensions ({', '.join(letters)}), "
                f"got {x.dim()} with shape {_fmt(x.shape)}"
            )
        for axis, (letter, size) in enumerate(zip(letters, x.shape)):
            if letter.isdigit():
                if size != int(letter):
                    raise ShapeError(
                        f"{name}: dimension {axis} must be {letter}, got shape {_fmt(x.shape)}"
                    )
            elif letter in dims and dims[letter] != size:
                expected = [dims.get(c, c) if not c.isdigit() else int(c) for c in letters]
                raise ShapeError(
                    f"{name}: expected shape ({', '.join(letters)}) = {_fmt(expected)}, "
                    f"got {_fmt(x.shape)}: {letter} is {dims[letter]} in {where[letter]} "
                    f"but {size} here"
                )
            else:
                dims[letter] = size
                where[letter] = name
    return dims


def check_positive(name: str, value) -> None:
    """Raise ValueError unless `value` is an integer >= 1 (chunk sizes, head counts)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_nonnegative(name: str, x: torch.Tensor) -> None:
    """Raise ValueError if a feature map produced negative values where positivity is needed."""
    if x.numel() and bool((x < 0).any()):
        raise ValueError(
            f"{name} has negative entries (min {x.min().item():.3g}); a normalized linear "
            "attention needs a non-negative feature map (elu+1, relu, ...) or normalize=False"
        )
