"""A tiny Triton kernel (vector add) that `lintutor doctor` runs to see whether Triton works here.

Run as `python -m lintutor.course._triton_canary`; set TRITON_INTERPRET=1 first to use the CPU
interpreter. Prints "ok <max error>" on success.
"""

import argparse

import torch
import triton
import triton.language as tl


@triton.jit
def _add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)  # (BLOCK,)
    y = tl.load(y_ptr + offs, mask=mask)  # (BLOCK,)
    tl.store(out_ptr + offs, x + y, mask=mask)


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1000, device=device)
    y = torch.randn(1000, device=device)
    out = torch.empty_like(x)
    _add_kernel[(triton.cdiv(1000, 256),)](x, y, out, 1000, BLOCK=256)
    print(f"ok {(out - (x + y)).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
