"""EfficientViT's ReLU linear attention: the linear form equals the quadratic form, the released
switch, channel layout and multi-scale aggregation, and LiteMLA / MBConv / block shapes and
gradients. The oracle `_released_relu_linear_att` transcribes LiteMLA.relu_linear_att of
mit-han-lab/efficientvit (efficientvit/models/nn/ops.py) in its own (B, heads, dim, n) layout."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from lintutor import efficientvit as ev
from lintutor.efficientvit import (
    EPS,
    EfficientViTBlock,
    LiteMLA,
    MBConv,
    heads_to_image,
    image_to_heads,
    multi_scale_qkv,
    relu_linear_attention,
    relu_linear_attention_auto,
    relu_linear_attention_quadratic,
)
from lintutor.softmax import softmax_attention

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}

# (B, H, T, S, D, E): odd lengths, one token, T <= D and T > D, cross-attention S != T
SHAPES = {
    "one token": (1, 1, 1, 1, 4, 4),
    "odd T, T < D": (1, 2, 7, 7, 8, 5),
    "T = D": (2, 3, 8, 8, 8, 8),
    "T > D, odd": (2, 4, 63, 63, 8, 3),
    "S != T": (1, 2, 5, 11, 6, 7),
    "long": (1, 2, 300, 300, 16, 16),
}


def _qkv(B, H, T, S, D, E, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=dtype)
    k = torch.randn(B, H, S, D, generator=g, dtype=dtype)
    v = torch.randn(B, H, S, E, generator=g, dtype=dtype)
    return q, k, v


def _released_relu_linear_att(qkv, dim, eps=1e-15):
    """LiteMLA.relu_linear_att, line by line (float32/float64 path)."""
    B, _, H, W = qkv.shape
    qkv = torch.reshape(qkv, (B, -1, 3 * dim, H * W))
    q, k, v = qkv[:, :, 0:dim], qkv[:, :, dim : 2 * dim], qkv[:, :, 2 * dim :]
    q, k = F.relu(q), F.relu(k)
    trans_k = k.transpose(-1, -2)
    v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1)
    vk = torch.matmul(v, trans_k)
    out = torch.matmul(vk, q)
    out = out[:, :, :-1] / (out[:, :, -1:] + eps)
    return torch.reshape(out, (B, -1, H, W))


def _released_relu_quadratic_att(qkv, dim, eps=1e-15):
    """LiteMLA.relu_quadratic_att, line by line."""
    B, _, H, W = qkv.shape
    qkv = torch.reshape(qkv, (B, -1, 3 * dim, H * W))
    q, k, v = qkv[:, :, 0:dim], qkv[:, :, dim : 2 * dim], qkv[:, :, 2 * dim :]
    q, k = F.relu(q), F.relu(k)
    att_map = torch.matmul(k.transpose(-1, -2), q)
    att_map = att_map / (torch.sum(att_map, dim=2, keepdim=True) + eps)
    out = torch.matmul(v, att_map)
    return torch.reshape(out, (B, -1, H, W))


def test_eps_is_the_released_value_and_the_forms_share_one_signature():
    assert EPS == 1e-15
    assert LiteMLA(16).eps == 1e-15
    forms = [relu_linear_attention, relu_linear_attention_quadratic, relu_linear_attention_auto]
    signatures = {str(inspect.signature(f)) for f in forms}
    assert signatures == {"(q, k, v, eps=1e-15)"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_linear_matches_quadratic(shape, dtype):
    q, k, v = _qkv(*shape, dtype)
    lin = relu_linear_attention(q, k, v)
    quad = relu_linear_attention_quadratic(q, k, v)
    assert lin.shape == (*shape[:3], shape[5]) and lin.dtype == dtype
    torch.testing.assert_close(lin, quad, **TOL[dtype])


def test_ones_column_holds_numerator_and_denominator():
    q, k, v = _qkv(2, 3, 9, 9, 4, 5, torch.float64)
    qr, kr = q.relu(), k.relu()
    num = qr @ (kr.transpose(-1, -2) @ v)  # (B, H, T, E)
    den = qr @ kr.sum(2, keepdim=True).transpose(-1, -2)  # (B, H, T, 1)
    torch.testing.assert_close(
        relu_linear_attention(q, k, v), num / (den + EPS), rtol=1e-13, atol=0
    )


def test_relu_is_applied_to_q_and_k_only():
    q, k, v = _qkv(1, 2, 6, 6, 4, 3, torch.float64)
    v = -v.abs()  # all-negative values must pass through unchanged (no ReLU on v)
    out = relu_linear_attention(q, k, v)
    assert (out <= 0).all() and (out < 0).any()
    torch.testing.assert_close(out, relu_linear_attention(q.relu(), k.relu(), v), rtol=0, atol=0)


@pytest.mark.parametrize("form", [relu_linear_attention, relu_linear_attention_quadratic])
def test_zero_normalizer_gives_zero_not_nan(form):
    q, k, v = _qkv(1, 1, 5, 5, 4, 3, torch.float64)
    out = form(-q.abs(), k, v)  # ReLU(q) = 0: numerator and denominator are 0
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("form", [relu_linear_attention, relu_linear_attention_quadratic])
def test_eps_matters_for_tiny_normalizers(form):
    q, k, v = _qkv(1, 2, 6, 6, 4, 3, torch.float64)
    q, k = q * 1e-8, k * 1e-8  # normalizers ~1e-16, below eps
    qr, kr = q.relu(), k.relu()
    num = qr @ (kr.transpose(-1, -2) @ v)
    den = qr @ kr.sum(2, keepdim=True).transpose(-1, -2)
    torch.testing.assert_close(form(q, k, v), num / (den + EPS), rtol=1e-10, atol=0)
    assert not torch.allclose(form(q, k, v), num / den, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_returns_its_dtype_close_to_fp32(dtype):
    q, k, v = _qkv(1, 2, 40, 40, 8, 8, torch.float32)
    want = relu_linear_attention(q, k, v)
    for form in (relu_linear_attention, relu_linear_attention_quadratic):
        got = form(q.to(dtype), k.to(dtype), v.to(dtype))
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.02)


def test_fp16_linear_form_is_computed_in_fp32():
    q, k, v = _qkv(1, 1, 2000, 2000, 8, 4, torch.float32)
    h = [x.half() for x in (q, k, v)]
    want = relu_linear_attention(*(x.float() for x in h)).half()  # fp32 math on fp16 inputs
    assert torch.equal(relu_linear_attention(*h), want)


@pytest.mark.parametrize(
    "T, D, form",
    [(1, 8, "quadratic"), (7, 8, "quadratic"), (8, 8, "quadratic"), (9, 8, "linear")],
    ids=["T=1", "T<D", "T=D", "T=D+1"],
)
def test_auto_switches_to_quadratic_when_tokens_at_most_head_dim(T, D, form, monkeypatch):
    seen = []
    lin, quad = ev.relu_linear_attention, ev.relu_linear_attention_quadratic
    monkeypatch.setattr(ev, "relu_linear_attention", lambda *a: seen.append("linear") or lin(*a))
    monkeypatch.setattr(
        ev, "relu_linear_attention_quadratic", lambda *a: seen.append("quadratic") or quad(*a)
    )
    q, k, v = _qkv(1, 2, T, T, D, 3, torch.float64)
    out = relu_linear_attention_auto(q, k, v)
    assert seen == [form]
    torch.testing.assert_close(out, lin(q, k, v), rtol=1e-12, atol=1e-12)


def test_image_to_heads_uses_the_released_channel_order():
    B, heads, dim, height, width = 2, 3, 4, 3, 5
    qkv = torch.arange(B * heads * 3 * dim * height * width, dtype=torch.float64)
    qkv = qkv.view(B, heads * 3 * dim, height, width)
    q, k, v = image_to_heads(qkv, dim)
    assert q.shape == k.shape == v.shape == (B, heads, height * width, dim)
    for h in range(heads):
        for j, t in enumerate((q, k, v)):
            chans = qkv[:, h * 3 * dim + j * dim : h * 3 * dim + (j + 1) * dim]  # (B, dim, hgt, w)
            assert torch.equal(t[:, h], chans.flatten(2).transpose(1, 2))
    assert torch.equal(
        heads_to_image(v, height, width)[:, dim : 2 * dim], qkv[:, 3 * dim + 2 * dim :][:, :dim]
    )


def test_image_to_heads_rejects_bad_channels():
    with pytest.raises(ValueError, match="multiple of 3"):
        image_to_heads(torch.randn(1, 10, 2, 2), 4)
    with pytest.raises(ValueError, match="height"):
        heads_to_image(torch.randn(1, 2, 6, 4), 2, 2)


@pytest.mark.parametrize("height, width", [(1, 1), (5, 7), (8, 8)], ids=["1x1", "5x7", "8x8"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_attention_on_images_matches_the_released_code(height, width, dtype):
    g = torch.Generator().manual_seed(1)
    heads, dim = 3, 4
    qkv = torch.randn(2, heads * 3 * dim, height, width, generator=g, dtype=dtype)
    q, k, v = image_to_heads(qkv, dim)
    lin = heads_to_image(relu_linear_attention(q, k, v), height, width)
    quad = heads_to_image(relu_linear_attention_quadratic(q, k, v), height, width)
    torch.testing.assert_close(lin, _released_relu_linear_att(qkv, dim), **TOL[dtype])
    torch.testing.assert_close(quad, _released_relu_quadratic_att(qkv, dim), **TOL[dtype])


def _aggregate_by_loops(qkv, depthwise, pointwise, heads):
    """Per channel s x s correlation with zero padding, then each group's dim x dim mix."""
    B, C, height, width = qkv.shape
    dim = C // (3 * heads)
    out = [qkv]
    for dw, pw in zip(depthwise, pointwise):
        s = dw.shape[-1]
        p = F.pad(qkv, (s // 2,) * 4)
        x = torch.zeros_like(qkv)
        for i in range(s):
            for j in range(s):
                x += dw[:, 0, i, j].view(1, C, 1, 1) * p[:, :, i : i + height, j : j + width]
        y = torch.zeros_like(qkv)
        for grp in range(3 * heads):
            sl = slice(grp * dim, (grp + 1) * dim)
            y[:, sl] = torch.einsum("oc,bchw->bohw", pw[sl, :, 0, 0], x[:, sl])
        out.append(y)
    return torch.cat(out, 1)


@pytest.mark.parametrize("scales", [(), (5,), (3, 5)], ids=["none", "5", "3,5"])
@pytest.mark.parametrize("height, width", [(1, 1), (4, 7), (9, 9)], ids=["1x1", "4x7", "9x9"])
def test_multi_scale_qkv_matches_loops(scales, height, width):
    g = torch.Generator().manual_seed(2)
    heads, dim = 2, 3
    C = 3 * heads * dim
    qkv = torch.randn(2, C, height, width, generator=g, dtype=torch.float64)
    dws = [torch.randn(C, 1, s, s, generator=g, dtype=torch.float64) for s in scales]
    pws = [torch.randn(C, dim, 1, 1, generator=g, dtype=torch.float64) for _ in scales]
    got = multi_scale_qkv(qkv, dws, pws, heads)
    assert got.shape == (2, C * (1 + len(scales)), height, width)
    torch.testing.assert_close(
        got, _aggregate_by_loops(qkv, dws, pws, heads), rtol=1e-12, atol=1e-12
    )


def test_aggregation_mixes_within_one_heads_q_k_or_v_only():
    torch.manual_seed(0)
    mla = LiteMLA(16, dim=4, scales=(5,)).double()
    qkv = torch.randn(1, 3 * 16, 6, 6, dtype=torch.float64, requires_grad=True)
    a = mla.aggreg[0]
    out = multi_scale_qkv(qkv, [a[0].weight], [a[1].weight], mla.heads)[:, 48:]  # aggregated
    out[:, 4:8].sum().backward()  # head 0's k channels
    touched = qkv.grad.abs().sum((0, 2, 3)) > 0  # (48,)
    assert touched[4:8].all() and not touched[:4].any() and not touched[8:].any()


@pytest.mark.parametrize(
    "channels, dim, scales, height, width",
    [(16, 4, (5,), 7, 5), (16, 8, (3, 5), 2, 2), (24, 8, (), 9, 9), (16, 16, (5,), 1, 1)],
    ids=["odd 7x5", "scales 3,5 on 2x2", "no scales", "one token"],
)
def test_lite_mla_shapes_and_heads(channels, dim, scales, height, width):
    torch.manual_seed(0)
    mla = LiteMLA(channels, dim, scales)
    x = torch.randn(3, channels, height, width)
    assert mla(x).shape == x.shape
    q, k, v = mla.heads_qkv(x)
    assert q.shape == (3, channels // dim * (1 + len(scales)), height * width, dim)
    assert mla.aggreg[0][1].groups == 3 * (channels // dim) if scales else not mla.aggreg


def test_lite_mla_forward_is_the_released_forward():
    torch.manual_seed(0)
    for height, width in [(6, 5), (2, 2)]:  # 30 tokens > dim: linear; 4 <= dim: quadratic
        mla = LiteMLA(16, dim=8, scales=(3, 5)).double().eval()
        x = torch.randn(2, 16, height, width, dtype=torch.float64)
        qkv = mla.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in mla.aggreg], dim=1)
        att = _released_relu_linear_att if height * width > 8 else _released_relu_quadratic_att
        torch.testing.assert_close(mla(x), mla.proj(att(qkv, 8)), rtol=1e-12, atol=1e-12)


def test_lite_mla_gradients_reach_every_parameter():
    torch.manual_seed(0)
    mla = LiteMLA(16, dim=4, scales=(3, 5)).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    mla(x).square().sum().backward()
    for name, p in mla.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("form", [relu_linear_attention, relu_linear_attention_quadratic])
def test_gradcheck(form):
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 5, 5, 3, 2, torch.float64, seed=3))
    assert torch.autograd.gradcheck(form, (q, k, v))


def test_linear_and_quadratic_gradients_agree():
    q, k, v = _qkv(2, 3, 33, 33, 8, 5, torch.float64)
    grads = []
    for form in (relu_linear_attention, relu_linear_attention_quadratic):
        xs = [t.clone().requires_grad_() for t in (q, k, v)]
        (form(*xs) * torch.linspace(-1, 1, 5, dtype=torch.float64)).sum().backward()
        grads.append([t.grad for t in xs])
    for a, b, name in zip(*grads, "qkv"):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_softmax_and_no_attention_switches():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    soft = LiteMLA(16, dim=8, attention="softmax").double().eval()
    q, k, v = soft.heads_qkv(x)
    torch.testing.assert_close(soft(x), soft.proj(heads_to_image(softmax_attention(q, k, v), 4, 5)))
    none = LiteMLA(16, dim=8, attention="none").double().eval()
    q, k, v = none.heads_qkv(x)
    torch.testing.assert_close(none(x), none.proj(heads_to_image(v, 4, 5)))
    n_relu = sum(p.numel() for p in LiteMLA(16, dim=8).parameters())
    assert sum(p.numel() for p in none.parameters()) == n_relu
    with pytest.raises(ValueError, match="attention"):
        LiteMLA(16, attention="cosine")


def test_mbconv_is_expand_depthwise_project():
    torch.manual_seed(0)
    mb = MBConv(8)
    assert mb.inverted_conv[0].out_channels == 32 and mb.inverted_conv[0].bias is not None
    dw = mb.depth_conv[0]
    assert dw.groups == 32 and dw.kernel_size == (3, 3) and dw.bias is not None
    assert mb.point_conv[0].bias is None and isinstance(mb.point_conv[1], torch.nn.BatchNorm2d)
    x = torch.randn(2, 8, 5, 3)
    assert mb(x).shape == x.shape
    flat = MBConv(8, depthwise=False)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in flat.modules())


def test_block_is_two_residuals():
    torch.manual_seed(0)
    block = EfficientViTBlock(16, dim=4, scales=(5,)).double().eval()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64, requires_grad=True)
    y = x + block.context(x)
    torch.testing.assert_close(block(x), y + block.local(y))
    block(x).sum().backward()
    assert torch.isfinite(x.grad).all()
