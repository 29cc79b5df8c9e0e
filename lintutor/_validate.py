"""Input checks shared by every public function: wrong input names the argument, the expected
and the actual shape (or dtype).

    dims = check_tensors(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"))
    dims["T"]  # the sequence length every argument agreed on

Letters are bound by the first argument that uses them; a later argument that disagrees is
reported with both sizes. An integer in the spec is a fixed size. `check_shapes` checks shapes
only; `check_tensors` also wants floating-point tensors of one dtype on one device, so that a
float32 q with float64 k, v, or an integer tensor, is reported by name instead of failing deep
inside torch.
"""

from __future__ import annotations

import numbers
import operator

import torch


class ShapeError(ValueError):
    """A tensor argument has the wrong number of dimensions or a size that disagrees."""


class DtypeError(TypeError):
    """A tensor argument is not floating point, or its dtype or device differs from the others'."""


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _dtype(x: torch.Tensor) -> str:
    return str(x.dtype).replace("torch.", "")


def check_shapes(_bound: dict | None = None, **specs) -> dict[str, int]:
    """Check each `name=(tensor, "B H T D")` and return the bound sizes, e.g. {"B": 2, ...}.

    A spec that starts with "..." ("... D") takes any number of leading dims.

    _bound: sizes already known, {letter: (size, "where it comes from")}, e.g. a state checked
    against the q and v it goes with.
    """
    dims: dict[str, int] = {k: size for k, (size, _) in (_bound or {}).items()}
    where: dict[str, str] = {k: src for k, (_, src) in (_bound or {}).items()}
    for name, (x, spec) in specs.items():
        if x is None:
            continue
        letters = spec.split()
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{name}: expected a torch.Tensor of shape ({', '.join(letters)}), "
                f"got {type(x).__name__}"
            )
        leading = letters[0] == "..."  # any number of leading dims, then the named ones
        if leading:
            letters = letters[1:]
            if x.dim() < len(letters):
                raise ShapeError(
                    f"{name}: expected at least {len(letters)} dimensions (..., "
                    f"{', '.join(letters)}), got {x.dim()} with shape {_fmt(x.shape)}"
                )
        elif x.dim() != len(letters):
            raise ShapeError(
                f"{name}: expected {len(letters)} dimensions ({', '.join(letters)}), "
                f"got {x.dim()} with shape {_fmt(x.shape)}"
            )
        shape = x.shape[x.dim() - len(letters) :]
        for axis, (letter, size) in enumerate(zip(letters, shape), start=x.dim() - len(letters)):
            if letter.isdigit():
                if size != int(letter):
                    raise ShapeError(
                        f"{name}: dimension {axis} must be {letter}, got shape {_fmt(x.shape)}"
                    )
            elif letter in dims and dims[letter] != size:
                expected = [dims.get(c, c) if not c.isdigit() else int(c) for c in letters]
                dots = "..., " if leading else ""
                raise ShapeError(
                    f"{name}: expected shape ({dots}{', '.join(letters)}) = "
                    f"{_fmt((['...'] if leading else []) + expected)}, "
                    f"got {_fmt(x.shape)}: {letter} is {dims[letter]} in {where[letter]} "
                    f"but {size} here"
                )
            else:
                dims[letter] = size
                where[letter] = name
    return dims


def check_dtypes(**tensors) -> None:
    """Every tensor given (None skipped) is floating point, and all share one dtype and device.

    The first tensor sets the dtype; a later one that differs is named with both dtypes.
    """
    first = None
    for name, x in tensors.items():
        if x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise DtypeError(
                f"{name}: expected a floating-point tensor, got dtype {_dtype(x)} "
                "(convert it with .double() or .float())"
            )
        if first is None:
            first = name, x
            continue
        ref_name, ref = first
        if x.dtype != ref.dtype:
            raise DtypeError(
                f"{name}: dtype {_dtype(x)}, but {ref_name} is {_dtype(ref)}: every tensor "
                f"argument must have the same dtype (.to({ref_name.split()[0]}.dtype))"
            )
        if x.device != ref.device:
            raise DtypeError(
                f"{name}: on device {x.device}, but {ref_name} is on {ref.device}: every tensor "
                "argument must be on the same device"
            )


def check_tensors(_bound: dict | None = None, **specs) -> dict[str, int]:
    """`check_shapes`, then `check_dtypes` on the same tensors; returns the bound sizes."""
    dims = check_shapes(_bound, **specs)
    check_dtypes(**{name: x for name, (x, _) in specs.items()})
    return dims


def check_positive(name: str, value) -> int:
    """An integer >= 1 (chunk sizes, head counts), returned as a Python int; ValueError if not.

    Any integer type is accepted (numpy's np.int64 too); bool, float and str are not.
    """
    return check_count(name, value, minimum=1)


def check_count(name: str, value, minimum: int = 0) -> int:
    """An integer >= minimum (lengths: T = 0 is a sequence too), returned as a Python int."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(n)


def check_positive_real(name: str, value) -> float:
    """A real number > 0 (a temperature, a scale), returned as a float; ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def check_nonnegative(name: str, x: torch.Tensor) -> None:
    """Raise ValueError if a feature map produced negative values where positivity is needed."""
    if x.numel() and bool((x < 0).any()):
        raise ValueError(
            f"{name} has negative entries (min {x.min().item():.3g}); a normalized linear "
            "attention needs a non-negative feature map (elu+1, relu, ...) or normalize=False"
        )


def check_log_gates(name: str, g: torch.Tensor) -> None:
    """Raise ValueError if a log-gate g = log a is positive (a gate a must be in (0, 1])."""
    if g.numel() and bool((g > 0).any()):
        raise ValueError(
            f"{name}: log-gates must be <= 0 (a gate a = exp({name}) is in (0, 1]), got a maximum "
            f"of {g.max().item():.3g}; pass log a, e.g. F.logsigmoid(...), not a itself"
        )


def check_keys(k: torch.Tensor, T: int, causal: bool = False) -> None:
    """Softmax attention needs keys: S = 0 keys for T > 0 queries, or causal=True with S < T (the
    first queries would see no key), is refused instead of giving 0 / 0."""
    S = k.shape[-2]
    if S == 0 and T > 0:
        raise ValueError(
            f"k: shape {_fmt(k.shape)} holds S = 0 keys: attention over no keys is undefined "
            "(0 / 0)"
        )
    if causal and S < T:
        raise ValueError(
            f"causal=True with S = {S} keys for T = {T} queries: the queries are the last T of "
            "the S positions, so S must be >= T (the first queries would see no key)"
        )


def check_heads(C: int, n_heads, name: str = "x: channel size") -> int:
    """n_heads as an int >= 1 that divides the C channels (of x, or a module's width)."""
    n_heads = check_positive("n_heads", n_heads)
    if C % n_heads:
        raise ValueError(f"{name} {C} is not divisible by n_heads={n_heads}")
    return n_heads


def check_module_input(module, x, width: int, spec: str = "B T C") -> dict[str, int]:
    """x for a module's forward: a tensor of `spec` with C = width, in the dtype and on the device
    of the module's weights (a float64 x for a float32 model is named, not a raw matmul error)."""
    if isinstance(x, torch.Tensor) and x.dim() == len(spec.split()) and x.shape[-1] != width:
        raise ShapeError(
            f"x: expected shape ({', '.join(spec.split())}) with C = {width} (the module's "
            f"width), got {_fmt(x.shape)}"
        )
    dims = check_shapes(x=(x, spec))
    weight = next(module.parameters(), None)
    if not x.is_floating_point():
        raise DtypeError(f"x: expected a floating-point tensor, got dtype {_dtype(x)}")
    if weight is not None and (x.dtype != weight.dtype or x.device != weight.device):
        raise DtypeError(
            f"x: dtype {_dtype(x)} on {x.device}, but the module's weights are {_dtype(weight)} on "
            f"{weight.device} (convert one: x.to(weight.dtype) or module.to(x.dtype))"
        )
    return dims
