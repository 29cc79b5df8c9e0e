"""The checked launcher names the program and offsets of out-of-bounds writes and reads and of
unwritten outputs; known cryptic Triton errors get a plain explanation."""

import os

import pytest
import torch

# isort: off
import lintutor.kernels  # noqa: F401  first: sets TRITON_INTERPRET=1 without a GPU, before triton
import triton
import triton.language as tl

# isort: on
from lintutor.kernels._common import device, interpreting
from lintutor.kernels.checked import KernelCheckError, checked_launch, explain_error

DEV = device()


@triton.jit
def _add_ok(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(
        out_ptr + offs,
        tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask),
        mask=mask,
    )


@triton.jit
def _add_unmasked_store(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(
        out_ptr + offs,
        tl.load(x_ptr + offs, mask=mask, other=0.0) + tl.load(y_ptr + offs, mask=mask, other=0.0),
    )


@triton.jit
def _shift_reads_past_the_end(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n  # right for the store, one short for the shifted load of x
    tl.store(
        out_ptr + offs,
        tl.load(x_ptr + offs + 1, mask=mask) + tl.load(y_ptr + offs, mask=mask),
        mask=mask,
    )


def _xy(n=100):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, generator=g).to(DEV), torch.randn(n, generator=g).to(DEV)


def test_checked_launch_passes_a_correct_kernel_and_copies_the_output_back():
    x, y = _xy()
    out = torch.empty_like(x)
    checked_launch(_add_ok, (4,), x, y, out, 100, BLOCK=32, outputs=("out_ptr",))
    assert torch.equal(out, x + y)


def test_checked_launch_names_the_program_and_offsets_of_an_out_of_bounds_write():
    x, y = _xy()
    with pytest.raises(
        KernelCheckError, match=r"write to 'out_ptr'.*program \(3, 0, 0\).*100\.\.127"
    ):
        checked_launch(_add_unmasked_store, (4,), x, y, torch.empty_like(x), 100, BLOCK=32,
                       outputs=("out_ptr",))  # fmt: skip


def test_checked_launch_reports_an_out_of_bounds_read_and_its_program():
    x, y = _xy()
    # the interpreter checks the load itself (x at offset 100); on a GPU the launcher sees that
    # out[99] depends on memory outside x
    where = r"\[100\]" if interpreting() else r"'out_ptr' at offsets \[99\]"
    with pytest.raises(
        KernelCheckError, match=rf"out-of-bounds read of 'x_ptr'.*{where}.*program \(3, 0, 0\)"
    ):
        checked_launch(_shift_reads_past_the_end, (4,), x, y, torch.empty_like(x), 100, BLOCK=32,
                       outputs=("out_ptr",))  # fmt: skip


def test_checked_launch_reports_unwritten_outputs_when_the_grid_is_too_small():
    x, y = _xy()
    with pytest.raises(KernelCheckError, match=r"4 of 100 elements that no program wrote"):
        checked_launch(
            _add_ok, (3,), x, y, torch.empty_like(x), 100, BLOCK=32, outputs=("out_ptr",)
        )


def test_explain_error_translates_known_cryptic_errors():
    assert "power of two" in explain_error(ValueError("arange's range must be a power of 2"))
    assert "TRITON_INTERPRET" in explain_error(
        RuntimeError("0 active drivers ([]). There should only be one.")
    )
    assert explain_error(RuntimeError("something else")) is None


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter only")
def test_interpreter_translation_says_variable_set_too_late():
    class JITFunction:  # stands in for a kernel compiled before TRITON_INTERPRET was set
        pass

    msg = explain_error(RuntimeError("0 active drivers ([])"), JITFunction())
    assert "after triton was imported" in msg
