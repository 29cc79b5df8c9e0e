"""The gated launchers = lesson 04's references: outputs and final states at awkward lengths in
every dtype, strong gates, the overflow cases of lesson 04, fla's layouts as strided views, the
segment split, the normalized form, decode with a gate. Gradients: test_gated_bwd.py.

Runs in Triton's CPU interpreter when there is no GPU (small B*H there), and on a GPU as is.
"""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import lintutor.kernels as K
from lintutor.gated import (
    decay_masked_scores_factorized,
    gated_linear_attention_parallel,
    gated_linear_attention_step,
)
from lintutor.kernels._common import device
from lintutor.kernels.chunked import chunk_scan

from reference import assert_close, gen, kernel_inputs

DEV = device()
TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}  # relative L2 error
# The fp32 state of a gated scan from 16-bit inputs: on a GPU the decayed values v_s exp(b_C - b_s)
# go into the tensor-core dot k^T v in the inputs' dtype, one rounding per chunk, measured on an
# H200 at 1.5e-4-1.9e-4 (fp16) and 2.6e-4-1.6e-3 (bf16), not growing from T = 64 to 1000. The
# interpreter upcasts 16-bit dots to fp32: there the state agrees to 1e-5.
S_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 8e-3}


def gates(B, H, T, strength="mild", seed=11):
    """Log-gates (B, H, T) fp32 on DEV. mild: a ~ 0.99 (long memory); strong: mean |g| ~ 1.6
    (a ~ 0.2) with g = -20 at one token (a ~ 2e-9: the state is all but wiped there)."""
    x = torch.randn(B, H, T, generator=gen(seed))
    if strength == "mild":
        return (F.logsigmoid(x + 3) / 4).to(DEV)
    g = 2 * F.logsigmoid(x)
    g[..., T // 3] = -20.0
    return g.to(DEV)


def reference(q, k, v, g, S0=None, normalize=False):
    """float64 lesson-04 parallel form on the same (rounded) inputs, on the CPU: (o, state)."""
    as64 = [x.detach().double().cpu() for x in (q, k, v, g)]
    if isinstance(S0, tuple):
        S0 = tuple(x.double().cpu() for x in S0)
    elif S0 is not None:
        S0 = S0.double().cpu()
    return gated_linear_attention_parallel(*as64, normalize=normalize, initial_state=S0,
                                           output_final_state=True)  # fmt: skip


def test_strong_gates_are_strong():
    g = gates(1, 2, 65, "strong")
    assert g.abs().mean() > 1.4 and g.min() == -20.0 and g.max() <= 0


@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gated_forward_matches_lesson04_with_states(T, dtype):
    q, k, v, S0 = kernel_inputs(1, 2, T, 32, 16, dtype, DEV)
    g = gates(1, 2, T)
    o, S = K.gated_linear_attention_triton(q, k, v, g, initial_state=S0, output_final_state=True)
    ro, rS = reference(q, k, v, g, S0)
    assert o.dtype == dtype and o.shape == (1, 2, T, 16) and S.dtype == torch.float32
    assert_close("o", ro, o, rel=TOL[dtype])
    assert_close("S", rS, S, rel=S_TOL[dtype])


@pytest.mark.parametrize("T", [65, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_forward_with_strong_gates(T, dtype):
    q, k, v, S0 = kernel_inputs(1, 2, T, 16, 32, dtype, DEV, seed=1)
    g = gates(1, 2, T, "strong")
    o, S = K.gated_linear_attention_triton(q, k, v, g, initial_state=S0, output_final_state=True)
    ro, rS = reference(q, k, v, g, S0)
    assert_close("o", ro, o, rel=TOL[dtype])
    assert_close("S", rS, S, rel=S_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_kernel_stays_finite_where_the_factorized_chunk_overflows(dtype):
    """Lesson 04's case: constant gates whose sum over a 64-token chunk passes log(dtype max)
    overflow GLA's factorized q exp(c), k exp(-c); the kernel's in-chunk differences do not."""
    C = 64
    limit = math.log(torch.finfo(dtype).max) / C  # 0.173 (fp16), 1.386 (fp32) per token
    q, k, v, S0 = kernel_inputs(1, 1, 3 * C, 16, 16, dtype, DEV, seed=2)
    g = torch.full((1, 1, 3 * C), -1.05 * limit, device=DEV)
    factorized = decay_masked_scores_factorized(
        q[:, :, :C].float().cpu(), k[:, :, :C].float().cpu(), g[:, :, :C].cpu()
    )
    if dtype == torch.float16:  # lesson 04 computes the factorization in the inputs' dtype
        factorized = decay_masked_scores_factorized(q[:, :, :C].cpu(), k[:, :, :C].cpu(),
                                                    g[:, :, :C].half().cpu())  # fmt: skip
    assert not torch.isfinite(factorized).all()
    o, S = K.gated_linear_attention_triton(q, k, v, g, initial_state=S0, output_final_state=True,
                                           chunk_size=C)  # fmt: skip
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    ro, rS = reference(q, k, v, g, S0)
    assert_close("o", ro, o, rel=TOL[dtype])
    assert_close("S", rS, S, rel=S_TOL[dtype])


def test_long_sequence_whose_total_decay_underflows():
    """T = 1000 at g = -0.5: the cumulative log-gate reaches -500 (exp underflows in fp32, its
    inverse overflows); the kernel only ever exponentiates sums inside one chunk."""
    q, k, v, S0 = kernel_inputs(1, 1, 1000, 16, 16, torch.float32, DEV, seed=3)
    g = torch.full((1, 1, 1000), -0.5, device=DEV)
    assert not torch.isfinite(torch.exp(-g.cumsum(-1))).all()
    o, S = K.gated_linear_attention_triton(q, k, v, g, initial_state=S0, output_final_state=True)
    ro, rS = reference(q, k, v, g, S0)
    assert_close("o", ro, o, rel=1e-5)
    assert_close("S", rS, S, rel=1e-5)


def test_gated_accepts_fla_layouts_as_strided_views():
    """q, k, v as (B, T, H, D) tensors and g as a (B, T, H) tensor, transposed, not copied."""
    q, k, v, S0 = kernel_inputs(2, 3, 70, 16, 32, torch.float32, DEV, seed=4)
    g = gates(2, 3, 70)
    qt, kt, vt = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    gt = g.transpose(1, 2).contiguous().transpose(1, 2)  # (B, T, H) storage seen as (B, H, T)
    assert not qt.is_contiguous() and not gt.is_contiguous()
    o, S = K.gated_linear_attention_triton(qt, kt, vt, gt, initial_state=S0,
                                           output_final_state=True)  # fmt: skip
    ro, rS = reference(q, k, v, g, S0)
    assert_close("o", ro, o, rel=1e-5)
    assert_close("S", rS, S, rel=1e-5)


@pytest.mark.parametrize("D,E", [(64, 128), (128, 64), (128, 128)])
def test_gated_forward_large_head_dims(D, E):
    q, k, v, S0 = kernel_inputs(1, 1, 130, D, E, torch.bfloat16, DEV, seed=9)
    g = gates(1, 1, 130, "strong")
    o, S = K.gated_linear_attention_triton(q, k, v, g, initial_state=S0, output_final_state=True)
    ro, rS = reference(q, k, v, g, S0)
    assert_close("o", ro, o, rel=2e-2)
    assert_close("S", rS, S, rel=S_TOL[torch.bfloat16])


def test_zero_gates_give_the_ungated_kernel():
    """g = 0 (a = 1) through the gated code equals the ungated launcher (HAS_G off)."""
    q, k, v, S0 = kernel_inputs(1, 2, 100, 16, 32, torch.float32, DEV, seed=5)
    g = torch.zeros(1, 2, 100, device=DEV)
    got = K.gated_linear_attention_triton(q, k, v, g, initial_state=S0, output_final_state=True)
    want = K.causal_linear_attention_triton(q, k, v, normalize=False, initial_state=S0,
                                            output_final_state=True)  # fmt: skip
    assert_close("(o, S) with g = 0", want, got, rel=1e-6)


@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("segments", [2, 3])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gated_segments_change_nothing(reverse, segments, split):
    """Segments (and sub-segments in the pre-pass) carry each one's total decay: the same o and
    S as one segment; a reverse scan is the forward scan of the time-reversed sequence with the
    gates shifted by one, its final state decayed by the first gate too."""
    q, k, v, S0 = kernel_inputs(2, 1, 200, 16, 32, torch.float32, DEV, seed=6)
    g = gates(2, 1, 200, "strong")
    o, S = chunk_scan(q, k, v, S0, reverse=reverse, output_final_state=True, chunk_size=16,
                      num_segments=segments, split=split, g=g)  # fmt: skip
    if reverse:
        gr = torch.cat([torch.zeros_like(g[..., :1]), g.flip(-1)[..., :-1]], -1)
        ro, rS = reference(q.flip(2), k.flip(2), v.flip(2), gr, S0)
        ro, rS = ro.flip(2), rS * g[..., :1, None].double().cpu().exp()
    else:
        ro, rS = reference(q, k, v, g, S0)
    assert_close("o", ro, o, rel=1e-5)
    assert_close("S", rS, S, rel=1e-5)


def test_normalized_gated_kernel_matches_lesson04_with_state_tuple():
    q, k, v, S0 = kernel_inputs(1, 2, 70, 16, 16, torch.float32, DEV, seed=7)
    q, k = q.abs() + 0.1, k.abs() + 0.1  # positive features, as a feature map gives
    z0 = torch.rand(1, 2, 16, generator=gen(2)).to(DEV)
    g = gates(1, 2, 70)
    o, (S, z) = K.gated_linear_attention_triton(q, k, v, g, normalize=True, initial_state=(S0, z0),
                                                output_final_state=True)  # fmt: skip
    ro, (rS, rz) = reference(q, k, v, g, (S0, z0), normalize=True)
    assert_close("o", ro, o, rel=1e-5)
    assert_close("S", rS, S, rel=1e-5)
    assert_close("z", rz, z, rel=1e-5)


def _step_inputs(B, H, D, E, dtype, normalize, seed=5):
    g = gen(seed)
    q, k = (torch.randn(B, H, D, generator=g).to(DEV, dtype) for _ in range(2))
    v = torch.randn(B, H, E, generator=g).to(DEV, dtype)
    S = torch.randn(B, H, D, E, generator=g).to(DEV)
    g_t = F.logsigmoid(torch.randn(B, H, generator=g)).to(DEV)
    if normalize:
        q, k = q.abs() + 0.1, k.abs() + 0.1  # positive features: a positive normalizer
        return q, k, v, g_t, (S, torch.rand(B, H, D, generator=g).to(DEV))
    return q, k, v, g_t, S


@pytest.mark.parametrize("normalize", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_decode_step_matches_lesson04_step(dtype, normalize):
    q, k, v, g_t, state = _step_inputs(3, 2, 32, 48, dtype, normalize)
    o, new = K.gated_linear_attention_step_triton(q, k, v, g_t, state, normalize=normalize)
    as64 = [x.double().cpu() for x in (q, k, v, g_t)]
    state64 = tuple(x.double().cpu() for x in state) if normalize else state.double().cpu()
    ro, rnew = gated_linear_attention_step(*as64, state64, normalize=normalize)
    assert o.dtype == dtype
    assert_close("o", ro, o, rel=TOL[dtype])
    assert_close("state", rnew, new, rel=1e-6)
    in_place = tuple(x.clone() for x in state) if normalize else state.clone()
    K.gated_linear_attention_step_triton(q, k, v, g_t, in_place, normalize=normalize,
                                         out_state=in_place)  # fmt: skip
    for a, b in zip(in_place if normalize else (in_place,), new if normalize else (new,)):
        assert torch.equal(a, b)


def test_gated_decode_steps_continue_the_gated_prefill():
    q, k, v, _ = kernel_inputs(2, 1, 40, 16, 16, torch.float32, DEV, seed=6)
    g = gates(2, 1, 40, "strong")
    _, S = K.gated_linear_attention_triton(q[:, :, :37], k[:, :, :37], v[:, :, :37],
                                           g[:, :, :37], output_final_state=True)  # fmt: skip
    outs = []
    for t in range(37, 40):
        o_t, S = K.gated_linear_attention_step_triton(q[:, :, t], k[:, :, t], v[:, :, t],
                                                      g[:, :, t], S)  # fmt: skip
        outs.append(o_t)
    ro, _ = reference(q, k, v, g)
    assert_close("o (decode after prefill)", ro[:, :, 37:], torch.stack(outs, 2), rel=1e-5)


def test_gated_launchers_reject_a_vector_gate_and_bad_gates():
    q, k, v, S0 = kernel_inputs(1, 1, 8, 16, 16, torch.float32, DEV)
    with pytest.raises(ValueError, match="scalar gate"):
        K.gated_linear_attention_triton(q, k, v, torch.zeros(1, 1, 8, 16, device=DEV))
    with pytest.raises(ValueError, match="g"):
        K.gated_linear_attention_triton(q, k, v, torch.zeros(1, 1, 5, device=DEV))
    with pytest.raises(TypeError, match="float"):
        K.gated_linear_attention_triton(q, k, v, torch.zeros(1, 1, 8, device=DEV, dtype=torch.long))
    with pytest.raises(ValueError, match="g_t"):
        K.gated_linear_attention_step_triton(q[:, :, 0], k[:, :, 0], v[:, :, 0],
                                             torch.zeros(1, 1, 16, device=DEV), S0)  # fmt: skip


HOPPER = textwrap.dedent(
    """
    import inspect, os
    os.environ.pop("TRITON_INTERPRET", None)
    import triton  # imported first: lintutor.kernels then leaves the interpreter off
    import torch
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    def compile_instead_of_launch(self, *args, grid, warmup, **kwargs):
        # specialize the arguments as the JIT does (ints equal to 1 and 16-divisible ones,
        # aligned pointers), then compile for sm_90 instead of launching
        opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        signature, constexprs, attrs = {}, {}, {}
        for i, p in enumerate(self.params):
            a = bound.arguments[p.name]
            if p.is_constexpr:
                signature[p.name], constexprs[(i,)] = "constexpr", a
                continue
            ty, key = native_specialize_impl(BaseBackend, a, False, True, True)
            signature[p.name] = ty
            if ty == "constexpr":
                constexprs[(i,)] = a
            elif key == "D":
                attrs[(i,)] = [["tt.divisibility", 16]]
        triton.compile(ASTSource(self, signature, constexprs, attrs),
                       target=GPUTarget("cuda", 90, 32), options=opts)
        print("compiled", self.__name__)

    JITFunction.run = compile_instead_of_launch
    from lintutor.kernels.chunked import chunk_scan
    from lintutor.kernels.chunked_bwd import bwd_onepass, dkdv
    from lintutor.kernels.decode import decode_step

    q, k, v, do = (torch.randn(2, 2, 256, 64, dtype=torch.bfloat16) for _ in range(4))
    g, S0 = torch.zeros(2, 2, 256), torch.zeros(2, 2, 64, 64)
    chunk_scan(q, k, v, S0, output_final_state=True, num_segments=2, g=g, split=2)
    chunk_scan(q, k, v, S0, reverse=True, num_segments=2, g=g, dot_with=q)
    bwd_onepass(q, k, v, do, S0, S0, output_dS0=True, g=g)
    dkdv(q, k, v, do, S0, output_dS0=True, num_segments=2, g=g)
    qt, kt, vt = (torch.randn(4, 2, 64, dtype=torch.bfloat16) for _ in range(3))
    decode_step(qt, kt, vt, torch.zeros(4, 2, 64, 64), torch.zeros(4, 2, 64), 1e-6, None,
                g=torch.zeros(4, 2))
    """
)


def test_gated_kernels_compile_for_a_hopper_gpu(tmp_path):
    """The interpreter accepts kernels a GPU compiler rejects: compile the gated forward (with
    segments and their pre-pass), the reverse scan with row dots, both fused backward kernels
    and the gated decode for sm_90 (H100, H200), specialized as a launch would, without one."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a fresh cache: really compile
    run = subprocess.run([sys.executable, "-c", HOPPER], capture_output=True, text=True, env=env,
                         timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("compiled") == 8, run.stdout
