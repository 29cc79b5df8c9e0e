"""Helpers that let the same launchers run on a GPU and in Triton's CPU interpreter (lesson 08).

The interpreter runs each program of a kernel with NumPy. It has two traps the kernels avoid:

- `tl.dot` on bf16 tiles gives wrong numbers (NumPy has no bf16 matmul): kernels take a
  constexpr `UPCAST` and cast their tiles to fp32 before every dot when it is set.
- an unmasked load or store outside a tensor reads or writes whatever memory is there, with no
  error: every load and store in these kernels is masked (`lintutor.kernels.checked` finds the
  ones in learners' kernels).

TRITON_INTERPRET=1 must be set before triton is imported; `lintutor.kernels` sets it when no GPU
is present and triton is not yet imported.
"""

from __future__ import annotations

import os
import sys

import torch


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_interpreter_if_no_gpu() -> bool:
    """Set TRITON_INTERPRET=1 when there is no GPU and triton is not imported yet.

    Returns whether the interpreter is in use. If triton was imported earlier without the
    variable on a machine without a GPU, kernels will fail with "0 active drivers"; the error
    translation in `lintutor.kernels.checked` says what to do then.
    """
    if not torch.cuda.is_available() and "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
    return interpreting()


def device() -> str:
    """Where kernel inputs must live: "cuda" on a GPU, "cpu" in the interpreter."""
    return "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"


def dot_precision(dtype: torch.dtype) -> str:
    """`input_precision` for tl.dot: exact fp32 ("ieee") for fp32 inputs, else tf32 (unused)."""
    return "ieee" if dtype == torch.float32 or interpreting() else "tf32"


def next_pow2(n: int) -> int:
    """Smallest power of two >= n, and at least 16 (the smallest tile tl.dot accepts)."""
    p = 16
    while p < n:
        p *= 2
    return p
