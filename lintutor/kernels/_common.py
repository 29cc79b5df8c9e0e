"""What every kernel file shares (lesson 08): the interpreter switch, the device, the SM count,
tile sizes and the input checks of the public launchers.

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

from lintutor._validate import check_shapes


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


def wrap_index_patch(patch_lang_tensor):
    """`patch_lang_tensor` (the interpreter's `_patch_lang_tensor(tensor, scope)`) with a
    `__index__` that reads the one element of a scalar's array.

    Triton <= 3.6's interpreter holds a scalar kernel argument as a 1-element array and indexes
    it with `int(self.handle.data)`, which NumPy >= 2.4 refuses ("only 0-dimensional arrays can
    be converted to Python scalars"): with that pair (torch 2.11 pins triton 3.6) every kernel
    with a loop `range(0, T, C)` over a runtime T failed in the interpreter. Later Triton
    squeezes the array itself; this does the same for any version."""

    def patched(tensor, *rest):
        patch_lang_tensor(tensor, *rest)
        index = lambda self: int(self.handle.data.reshape(-1)[0])  # noqa: E731
        if rest and hasattr(rest[0], "set_attr"):
            rest[0].set_attr(tensor, "__index__", index)  # restored with the launch's patches
        else:
            tensor.__index__ = index

    patched.lintutor_index_fix = True
    return patched


def fix_interpreter_index() -> None:
    """Install `wrap_index_patch` into triton's interpreter (once; no-op without triton)."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    current = getattr(interpreter, "_patch_lang_tensor", None)
    if current is not None and not getattr(current, "lintutor_index_fix", False):
        interpreter._patch_lang_tensor = wrap_index_patch(current)


def device() -> str:
    """Where kernel inputs must live: "cuda" on a GPU, "cpu" in the interpreter."""
    return "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"


def num_sms(device) -> int:
    """Streaming multiprocessors of a CUDA device (1 for the interpreter's CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def dot_precision(dtype: torch.dtype) -> str:
    """`input_precision` for tl.dot: exact fp32 ("ieee") for fp32 inputs, else tf32 (unused)."""
    return "ieee" if dtype == torch.float32 or interpreting() else "tf32"


def next_pow2(n: int) -> int:
    """Smallest power of two >= n, and at least 16 (the smallest tile tl.dot accepts)."""
    p = 16
    while p < n:
        p *= 2
    return p


def check_kernel_inputs(q, k, v):
    """q, k (B, H, T, D), v (B, H, T, E) of one float dtype on one device, 16 <= D, E <= 256
    (tl.dot tiles), CPU tensors only in the interpreter."""
    check_shapes(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"))
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype or x.device != q.device:
            raise TypeError(
                f"{name}: expected {q.dtype} on {q.device} like q, got {x.dtype} on {x.device}"
            )
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"q: the kernels take float32, float16 or bfloat16, got {q.dtype}")
    D, E = q.shape[-1], v.shape[-1]
    if not (16 <= D <= 256 and 16 <= E <= 256):
        raise ValueError(f"the kernels need 16 <= D, E <= 256 (tl.dot tiles), got D={D}, E={E}")
    check_cpu_needs_interpreter(q)


def check_cpu_needs_interpreter(x):
    """CPU tensors run only in the interpreter: say how to get it, or to move to a GPU."""
    if x.device.type == "cpu" and not interpreting():
        raise RuntimeError(
            "CPU tensors need Triton's interpreter: set os.environ['TRITON_INTERPRET'] = '1' "
            "before anything imports triton (restart the kernel), or move the tensors to a GPU"
        )
