"""What the tests share: seeded inputs in the course's shapes, lesson 03's float64 reference for
the kernels, and one comparison that names what it compares.

    gen(seed)                               a seeded torch.Generator
    qkv(B, H, T, D, E, S=None, kind="normal", scaled=False, dtype=float64, g=None, seed=0)
                                            q (B, H, T, D), k (B, H, S, D), v (B, H, S, E)
    state(B, H, D, E, normalize, z_scale=1.0, dtype=float64, g=None, seed=1)
                                            S (B, H, D, E), or (S, z) with normalize=True
    kernel_inputs(B, H, T, D, E, dtype, device, seed=0)
                                            [q, k, v, S0] as the kernel tests use them
    parallel_reference(q, k, v, S0, normalize=False)
                                            lesson 03's parallel form in float64: (o, state)
    rel_error(got, ref)                     |got - ref| / |ref| (L2, float64, on the CPU)
    assert_close(name, ref, got, rtol=None, atol=None, rel=None)

`assert_close` compares tensors, or tuples and lists of them, elementwise with rtol/atol
(torch.testing's defaults when None) or, with `rel=`, by relative L2 error below `rel`; a
failure names the output ("o", "dq", "state[1]", ...).
"""

from __future__ import annotations

import torch

from lintutor.causal import causal_linear_attention_parallel
from lintutor.featuremaps import elu1

KINDS = ("normal", "elu1", "uniform")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def qkv(B, H, T, D, E, S=None, kind="normal", scaled=False, dtype=torch.float64, g=None, seed=0):
    """q, k, v drawn in that order from g (or a generator seeded with `seed`).

    kind: "normal" (randn), "elu1" (elu1 of randn for q and k: positive features) or "uniform"
    (rand for q and k); v is always randn. scaled=True divides q and k by sqrt(D).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    g = gen(seed) if g is None else g
    S = T if S is None else S
    draw = torch.rand if kind == "uniform" else torch.randn
    q = draw(B, H, T, D, generator=g, dtype=dtype)
    k = draw(B, H, S, D, generator=g, dtype=dtype)
    v = torch.randn(B, H, S, E, generator=g, dtype=dtype)
    if kind == "elu1":
        q, k = elu1(q), elu1(k)
    if scaled:
        q, k = q / D**0.5, k / D**0.5
    return q, k, v


def state(B, H, D, E, normalize, z_scale=1.0, dtype=torch.float64, g=None, seed=1):
    """An initial state: S = randn (B, H, D, E), with normalize=True also z = z_scale * rand."""
    g = gen(seed) if g is None else g
    S = torch.randn(B, H, D, E, generator=g, dtype=dtype)
    if not normalize:
        return S
    return S, torch.rand(B, H, D, generator=g, dtype=dtype) * z_scale


def kernel_inputs(B, H, T, D, E, dtype, device, seed=0):
    """[q, k, v] (scaled normals drawn in float32, then cast to dtype) and S0 (float32), all on
    device."""
    g = gen(seed)
    q, k, v = qkv(B, H, T, D, E, scaled=True, dtype=torch.float32, g=g)
    S0 = state(B, H, D, E, normalize=False, dtype=torch.float32, g=g)
    return [x.to(device, dtype) for x in (q, k, v)] + [S0.to(device)]


def parallel_reference(q, k, v, S0, normalize=False):
    """float64 lesson-03 parallel form on the same (rounded) inputs: (o, final state)."""
    return causal_linear_attention_parallel(
        q.double().cpu(), k.double().cpu(), v.double().cpu(), normalize=normalize,
        initial_state=None if S0 is None else S0.double().cpu(), output_final_state=True,
    )  # fmt: skip


def rel_error(got, ref) -> float:
    """Relative L2 error of got against ref, in float64 on the CPU."""
    a, b = got.detach().double().cpu(), ref.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_close(name, ref, got, rtol=None, atol=None, rel=None):
    """Assert that `got` equals `ref` (tensors, or tuples/lists of them), naming what differs."""
    if isinstance(ref, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(ref), (
            f"{name}: expected {len(ref)} parts, got {type(got).__name__}"
        )
        for i, (r, x) in enumerate(zip(ref, got)):
            assert_close(f"{name}[{i}]", r, x, rtol=rtol, atol=atol, rel=rel)
        return
    assert isinstance(got, torch.Tensor), f"{name}: expected a tensor, got {type(got).__name__}"
    if rel is not None:
        assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
        err = rel_error(got, ref)
        assert err < rel, f"{name}: relative error {err:.3g} >= {rel:g}"
        return
    torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
