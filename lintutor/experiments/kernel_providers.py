"""What lesson 08's benchmark times, and what it checks each provider against before timing.

Shapes: bf16 inputs, fp32 state, 65,536 tokens per call (B = 65536 / T), H * D = 2048. fla is
compared as plain causal linear attention: no gate, scale=1 (q is pre-scaled by D^-0.5 for every
provider), layout (B, T, H, D) converted once, outside the timed region. Every provider must
match an fp32 reference (lesson 03's chunked form) within 2e-2 relative error, its gradients
within 3e-2, or it is recorded and not timed.
"""

from __future__ import annotations

TOKENS, WIDTH = 65536, 2048
DEVICE = "cuda"  # where `inputs` puts the benchmark's tensors (the tests use the interpreter's)
T_LIST = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
FWD_TOL, GRAD_TOL = 2e-2, 3e-2


def rel_err(a, b) -> float:
    """|a - b| / |b| in the L2 norm, in fp32."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def fla_ops():
    """fla's (chunk, fused_chunk, fused_recurrent) simple-GLA kernels, or None if not installed."""
    try:
        from fla.ops.simple_gla import (
            chunk_simple_gla,
            fused_chunk_simple_gla,
            fused_recurrent_simple_gla,
        )
    except ImportError:
        return None
    return chunk_simple_gla, fused_chunk_simple_gla, fused_recurrent_simple_gla


def forward_providers(fla):
    """{name: fn(x) -> o (B, H, T, E)}; x holds both layouts of q, k, v (see `inputs`)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lintutor.causal import causal_linear_attention_chunked
    from lintutor.kernels import causal_linear_attention_triton

    def sdpa(backend):
        def fn(x):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(x["q"], x["k"], x["v"], is_causal=True)

        return fn

    p = {
        "lintutor": lambda x: causal_linear_attention_triton(
            x["q"], x["k"], x["v"], normalize=False
        ),
        "torch_chunked": lambda x: causal_linear_attention_chunked(
            x["q"], x["k"], x["v"], normalize=False
        ),
        "sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
    }
    if fla is not None:
        chunk, fused_chunk, _ = fla
        p["fla_chunk"] = lambda x: chunk(x["qf"], x["kf"], x["vf"], scale=1.0)[0].transpose(1, 2)
        p["fla_fused_chunk"] = lambda x: fused_chunk(x["qf"], x["kf"], x["vf"], scale=1.0)[
            0
        ].transpose(1, 2)
    return p


def inputs(B, H, T, D, seed=0, grad=False):
    """{"q", "k", "v"} (B, H, T, D) bf16 on the GPU, q scaled by D^-0.5, and "qf", "kf", "vf" in
    fla's (B, T, H, D) layout."""
    import torch

    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q, k, v = (
        torch.randn(B, H, T, D, device=DEVICE, generator=g, dtype=torch.bfloat16) for _ in range(3)
    )
    q = q * D**-0.5
    x = {"q": q, "k": k, "v": v}
    x.update({n + "f": t.transpose(1, 2).contiguous() for n, t in list(x.items())})  # (B, T, H, D)
    if grad:
        for t in x.values():
            t.requires_grad_(True)
    return x


def reference(x):
    """fp32 plain causal linear attention (lesson 03's chunked form) of the bf16 inputs."""
    from lintutor.causal import causal_linear_attention_chunked

    return causal_linear_attention_chunked(
        x["q"].float(), x["k"].float(), x["v"].float(), normalize=False
    )


def sdpa_reference(x):
    """fp32 causal softmax attention of a slice (one sequence, two heads, 1,024 tokens)."""
    import torch

    from lintutor.softmax import causal_mask

    q, k, v = (x[n][:1, :2, :1024].float() for n in "qkv")
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    s = s.masked_fill(~causal_mask(q.shape[2], device=s.device), float("-inf"))
    return torch.softmax(s, -1) @ v


def grad_fn(name, fwd, x):
    """(fn, do, ins): fn() computes o and all three input gradients for the provider `name`."""
    import torch

    layout = "f" if name.startswith("fla") else ""
    ins = [x["q" + layout], x["k" + layout], x["v" + layout]]
    o = fwd(x)
    do = torch.randn_like(o)

    def fn():
        out = fwd(x)
        return torch.autograd.grad(out, ins, do)

    return fn, do, ins


def grad_check(x, name, do, fn) -> float:
    """Largest relative error of dq, dk, dv against fp32 autograd of the torch chunked form."""
    import torch

    from lintutor.causal import causal_linear_attention_chunked

    grads = fn()
    B = x["q"].shape[0]
    nb = max(1, min(B, 4096 // x["q"].shape[2]))  # a slice of the batch keeps the fp32 ref small
    leaves = [x[n][:nb].detach().float().requires_grad_() for n in "qkv"]
    o = causal_linear_attention_chunked(*leaves, normalize=False)
    ref = torch.autograd.grad(o, leaves, do[:nb].float())  # do is (B, H, T, E) for everyone
    errs = []
    for g, r in zip(grads, ref):
        g = g.transpose(1, 2) if name.startswith("fla") else g
        errs.append(rel_err(g[:nb], r))
    return max(errs)


# The gated benchmark (`lintutor bench --gated`): the same shapes, scalar log-gates g <= 0 per
# head and token as lesson 04's GatedLinearAttention draws them at initialization,
# g = logsigmoid(x + 3) / 16 with x ~ N(0, 1) (a ~ 0.997: a long memory, so the state matters in
# the check). fla takes g in its (B, T, H) layout; ours reads the same tensor as a (B, H, T) view.
GATED_FWD = ("lintutor_gated", "fla_chunk_gated", "fla_fused_chunk_gated")


def gate_inputs(x, seed=0, grad=False):
    """Add "gf" (B, T, H) fp32 log-gates (fla's layout) and "g", its (B, H, T) view, to x."""
    import torch
    import torch.nn.functional as F

    B, H, T, _ = x["q"].shape
    dev = x["q"].device
    gen = torch.Generator(device=dev).manual_seed(seed + 7)
    gf = F.logsigmoid(torch.randn(B, T, H, device=dev, generator=gen) + 3) / 16
    if grad:
        gf.requires_grad_(True)
    x["gf"], x["g"] = gf, gf.transpose(1, 2)  # (B, T, H) and its (B, H, T) view, no copy
    return x


def gated_forward_providers(fla):
    """{name: fn(x) -> o (B, H, T, E)} with the gate; x from `inputs` + `gate_inputs`."""
    from lintutor.kernels import gated_linear_attention_triton

    p = {"lintutor_gated": lambda x: gated_linear_attention_triton(x["q"], x["k"], x["v"], x["g"])}
    if fla is not None:
        chunk, fused_chunk, _ = fla

        def with_gate(op):
            return lambda x: op(x["qf"], x["kf"], x["vf"], g=x["gf"], scale=1.0)[0].transpose(1, 2)

        p["fla_chunk_gated"] = with_gate(chunk)
        p["fla_fused_chunk_gated"] = with_gate(fused_chunk)
    return p


def gated_slice(x, T):
    """How many sequences the fp32 references use: 8,192 tokens' worth (at least one)."""
    return max(1, min(x["q"].shape[0], 8192 // T))


def gated_reference(x, nb):
    """fp32 lesson-04 chunked form on the first nb sequences of the bf16 inputs (B = nb)."""
    from lintutor.gated import gated_linear_attention_chunked

    q, k, v = (x[n][:nb].detach().float() for n in "qkv")
    return gated_linear_attention_chunked(q, k, v, x["g"][:nb].detach().float())


def gated_grad_fn(name, fwd, x):
    """(fn, do): fn() computes o and the gradients of q, k, v and g for the gated provider."""
    import torch

    layout = "f" if name.startswith("fla") else ""
    ins = [x["q" + layout], x["k" + layout], x["v" + layout], x["gf"]]
    do = torch.randn_like(fwd(x))

    def fn():
        return torch.autograd.grad(fwd(x), ins, do)

    return fn, do


def gated_grad_check(x, name, do, fn) -> dict:
    """Relative errors of dq, dk, dv and dg against fp32 autograd of lesson 04's chunked form,
    on a slice of the batch (`gated_slice`)."""
    import torch

    from lintutor.gated import gated_linear_attention_chunked

    grads = fn()
    nb = gated_slice(x, x["q"].shape[2])
    leaves = [x[n][:nb].detach().float().requires_grad_() for n in "qkv"]
    gf = x["gf"][:nb].detach().float().requires_grad_()
    o = gated_linear_attention_chunked(*leaves, gf.transpose(1, 2))
    ref = torch.autograd.grad(o, leaves + [gf], do[:nb].float())
    errs = {}
    for n, got, r in zip(("dq", "dk", "dv", "dg"), grads, ref):
        if name.startswith("fla") and n != "dg":
            got = got.transpose(1, 2)  # fla's (B, T, H, D) -> (B, H, T, D)
        errs[n] = rel_err(got[:nb], r)
    return errs
