"""The checked launcher (issue 13): writes and reads far outside a tensor are reported (not only
within ~1,024 elements), integer tensors work, non-contiguous tensors keep their own strides,
and a learner's plain `kernel[grid](...)` inside a check goes through it, so a missing store
mask is a verdict instead of a dead process."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

# isort: off
import lintutor.kernels  # noqa: F401  first: sets TRITON_INTERPRET=1 without a GPU, before triton
import triton
import triton.language as tl

# isort: on
from lintutor.kernels import checked
from lintutor.kernels._common import device, interpreting
from lintutor.kernels.checked import KernelCheckError, checked_launch, checking_launches

DEV = device()
FAR = 5000  # elements past the end: beyond any small guard band


@triton.jit
def _store_far(x_ptr, out_ptr, n, FAR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs + FAR * (offs == n - 1), x, mask=mask)  # the last one, far away


@triton.jit
def _load_far(x_ptr, out_ptr, n, FAR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs + FAR * (offs == 5), mask=mask)  # element 5 reads far away
    tl.store(out_ptr + offs, x, mask=mask)


@triton.jit
def _shift_canonical_nan(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs + 1, mask=mask) * 2.0  # the last element reads one past the end
    tl.store(out_ptr + offs, tl.where(x == x, x, float("nan")), mask=mask)  # one NaN, as GPUs


@triton.jit
def _sign_int32(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, (x > 0).to(tl.int32), mask=mask)


@triton.jit
def _copy_2d(x_ptr, out_ptr, R, C, sxr, sxc, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < C
    x = tl.load(x_ptr + row * sxr + cols * sxc, mask=mask)  # the strides it was given
    tl.store(out_ptr + row * C + cols, x, mask=mask)


@triton.jit
def _copy_unmasked(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n, other=0.0))  # no store mask


@pytest.fixture(params=["exact", "guards"])
def strategy(request, monkeypatch):
    """exact: the interpreter checks every access (on CPU); guards: the GPU strategy (guard
    bands, two fill patterns), run here in the interpreter too."""
    if request.param == "guards":
        monkeypatch.setattr(checked, "_GUARDS_IN_INTERPRETER", True)
    elif not interpreting():
        pytest.skip("exact checks need the interpreter")
    return request.param


def _x(n=100, dtype=torch.float32):
    return torch.randn(n, generator=torch.Generator().manual_seed(0)).to(DEV, dtype)


def test_a_write_far_past_the_end_is_caught(strategy):
    x = _x()
    with pytest.raises(
        KernelCheckError, match=rf"write to 'out_ptr'.*program \(3, 0, 0\).*{99 + FAR}"
    ):
        checked_launch(
            _store_far, (4,), x, torch.empty_like(x), 100, FAR=FAR, BLOCK=32, outputs=("out_ptr",)
        )


def test_a_read_far_past_the_end_is_caught(strategy):
    x = _x()
    where = rf"\[{5 + FAR}\]" if strategy == "exact" else r"'out_ptr' at offsets \[5\]"
    with pytest.raises(KernelCheckError, match=rf"read of 'x_ptr'.*{where}.*program \(0, 0, 0\)"):
        checked_launch(
            _load_far, (4,), x, torch.empty_like(x), 100, FAR=FAR, BLOCK=32, outputs=("out_ptr",)
        )


def test_a_read_is_caught_where_arithmetic_makes_every_nan_the_same(strategy):
    """GPU arithmetic returns one canonical NaN whatever NaN went in, so guards of two different
    NaNs give the same output bits and the read went unseen on the H200; the second guard
    pattern is finite. This kernel canonicalizes NaNs itself, so the interpreter shows it too."""
    x = _x()
    where = r"\[100\]" if strategy == "exact" else r"'out_ptr' at offsets \[99\]"
    with pytest.raises(KernelCheckError, match=rf"read of 'x_ptr'.*{where}.*program \(3, 0, 0\)"):
        checked_launch(
            _shift_canonical_nan, (4,), x, torch.empty_like(x), 100, BLOCK=32, outputs=("out_ptr",)
        )


def test_integer_outputs_are_checked_and_copied_back(strategy):
    x = _x()
    out = torch.empty(100, dtype=torch.int32, device=DEV)
    checked_launch(_sign_int32, (4,), x, out, 100, BLOCK=32, outputs=("out_ptr",))
    assert torch.equal(out, (x > 0).to(torch.int32))
    with pytest.raises(KernelCheckError, match=r"4 of 100 elements that no program wrote"):
        checked_launch(_sign_int32, (3,), x, out, 100, BLOCK=32, outputs=("out_ptr",))


@pytest.mark.parametrize("view", ["transposed", "every other column"])
def test_non_contiguous_inputs_keep_their_strides(view, strategy):
    base = torch.arange(6 * 20, dtype=torch.float32).reshape(6, 20).to(DEV)
    x = base.t() if view == "transposed" else base[:, ::2]  # (20, 6) or (6, 10)
    R, C = x.shape
    out = torch.empty(R, C, device=DEV)
    checked_launch(
        _copy_2d, (R,), x, out, R, C, x.stride(0), x.stride(1), BLOCK=32, outputs=("out_ptr",)
    )
    assert torch.equal(out, x)


def test_plain_launches_inside_checking_launches_are_checked(strategy):
    x = _x()
    out = torch.empty_like(x)
    run = type(_copy_unmasked).run
    with checking_launches():
        with pytest.raises(KernelCheckError, match=r"write to 'out_ptr'.*100\.\.127"):
            _copy_unmasked[(4,)](x, out, 100, BLOCK=32)
        _sign_int32[(4,)](x, torch.empty(100, dtype=torch.int32, device=DEV), 100, BLOCK=32)
    assert type(_copy_unmasked).run is run  # the patch is undone


def test_a_kernel_defined_inside_a_launcher_is_built_once_per_check(monkeypatch):
    launched = []
    real = checked._raw_run

    def spy(kernel, grid, args, kwargs):
        launched.append(kernel)
        return real(kernel, grid, args, kwargs)

    monkeypatch.setattr(checked, "_raw_run", spy)

    def launcher(x):
        @triton.jit
        def kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
            offs = tl.arange(0, BLOCK)
            tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)

        out = torch.empty_like(x)
        kernel[(1,)](x, out, x.numel(), BLOCK=128)
        return out

    x = _x()
    with checking_launches():
        outs = [launcher(x) for _ in range(3)]  # three kernel objects, one code
    assert all(torch.equal(o, x) for o in outs)
    # one kernel object for the three calls; each call is one launch in the interpreter, and on
    # a GPU one per guard pattern (the second finds reads of the guards)
    per_call = 1 if interpreting() else 2
    assert len(launched) == 3 * per_call and len({id(k) for k in launched}) == 1


LEARNER_08_1 = """
import torch, triton, triton.language as tl
from lintutor.kernels._common import device

def linear_attention_simple_triton(q, k, v):
    @triton.jit
    def kernel(q_ptr, k_ptr, v_ptr, o_ptr, T, D, E,
               BT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr):
        bh = tl.program_id(0).to(tl.int64)
        offs_t = tl.arange(0, BT)
        offs_d = tl.arange(0, BD)
        offs_e = tl.arange(0, BE)
        S = tl.zeros((BD, BE), dtype=tl.float32)
        for t0 in range(0, T, BT):
            rows = t0 + offs_t
            mk = (rows < T)[:, None] & (offs_d < D)[None, :]
            mv = (rows < T)[:, None] & (offs_e < E)[None, :]
            kk = tl.load(k_ptr + bh * T * D + rows[:, None] * D + offs_d[None, :],
                         mask=mk, other=0.0)
            vv = tl.load(v_ptr + bh * T * E + rows[:, None] * E + offs_e[None, :],
                         mask=mv, other=0.0)
            S += tl.dot(tl.trans(kk), vv)
        for t0 in range(0, T, BT):
            rows = t0 + offs_t
            mq = (rows < T)[:, None] & (offs_d < D)[None, :]
            qq = tl.load(q_ptr + bh * T * D + rows[:, None] * D + offs_d[None, :],
                         mask=mq, other=0.0)
            o = tl.dot(qq, S)
            tl.store(o_ptr + bh * T * E + rows[:, None] * E + offs_e[None, :], o)  # NO MASK

    B, H, T, D = q.shape
    E = v.shape[-1]
    dev = device()
    q32, k32, v32 = (x.to(dev, torch.float32).contiguous() for x in (q, k, v))
    o = torch.empty(B, H, T, E, device=dev, dtype=torch.float32)
    BD, BE = max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(E))
    kernel[(B * H,)](q32, k32, v32, o, T, D, E, BT=16, BD=BD, BE=BE)
    return o.to(q.device, q.dtype)
"""


@pytest.mark.parametrize("isolate", [True, False], ids=["child", "in-process"])
def test_check_08_1_reports_a_missing_store_mask_instead_of_crashing(isolate, tmp_path):
    """Run in a fresh process: before the fix an unmasked store corrupted the heap and the
    process died with `free(): invalid pointer`, which would take pytest down with it."""
    (tmp_path / "learner.py").write_text(LEARNER_08_1)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from learner import linear_attention_simple_triton
        from lintutor.course.exercises import get, run_check
        r = run_check(get("08.1"), linear_attention_simple_triton, isolate={isolate})
        print(r.layer)
        print(r.message)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONFAULTHANDLER="0"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    layer, message = proc.stdout.split("\n", 1)
    assert layer == "kernel", out
    assert "out-of-bounds" in message and "o_ptr" in message and "store" in message, out
    assert "your line" in message, out


def test_guard_bands_keep_the_copies_aligned():
    """A copy sits `guard` elements into its buffer: with guard = numel for a large odd tensor
    (65,537 fp32 elements) its pointer was 4 bytes off a 16-byte boundary, so a GPU compiled
    another specialization (no divisibility by 16) than for the learner's own tensors."""
    for n in (100, checked.GUARD + 1, 3 * checked.GUARD + 7):
        t = torch.zeros(n)
        guard = checked._guard(t)
        assert guard % 64 == 0 and guard >= max(checked.GUARD, n), (n, guard)
        arg = checked._Arg(0, "x", t, guard=guard, device="cpu")
        assert arg.body.data_ptr() % 16 == 0, (n, guard)
