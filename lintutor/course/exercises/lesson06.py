"""Lesson 06 exercises: ReLU linear attention in the linear form, the released switch between
the linear and the quadratic form, and multi-scale tokens.

06.1 asks for the linear form (form="linear"): after the numbers, the checker's form check
(lintutor.course.forms) grows T and rejects a loop over t and a T x S map of scores, however it
is built (a matmul, broadcasting, numpy). It cannot see the ones column: two separate products
for numerator and denominator give the same numbers and the same memory growth, so they pass as
the linear form; the lesson teaches the ones column in its text and hints, and does not claim
that the check enforces it.

06.2 asks for a form that depends on the case (quadratic at T <= D, linear above), which the
general form check does not do. Its inputs are `_Watched` tensors: every product (matmul, @,
einsum, bmm, ...) computed from them is looked at, and one whose last two dimensions are the
shape of the form not asked for raises `FormError`, which the check reports with the learner's
line (for example "you built a T x T = 9 x 9 map of scores"). Only products are watched: a map
built by broadcasting and a sum, or in numpy, is not seen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lintutor import efficientvit as ref
from lintutor.course.checker import Exercise, between, cases, normal
from lintutor.course.exercises._mistakes import TIGHT

# --- watching which form a function computes --------------------------------------------------


class FormError(Exception):
    """The function computed a product of the form this exercise does not ask for."""


_PRODUCTS = {
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__,
    torch.bmm,
    torch.Tensor.bmm,
    torch.mm,
    torch.Tensor.mm,
    torch.einsum,
    torch.baddbmm,
    torch.Tensor.baddbmm,
    torch.tensordot,
    F.linear,
}


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


class _Watched(torch.Tensor):
    """A tensor whose products are watched: `_forbidden` maps a trailing (rows, cols) shape to
    the sentence that explains why that product is the wrong form; results inherit it."""

    _forbidden: dict = {}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        forbidden = next(
            (t._forbidden for t in _tensors((args, kwargs)) if isinstance(t, _Watched)), {}
        )
        out = super().__torch_function__(func, types, args, kwargs)
        if func in _PRODUCTS and isinstance(out, torch.Tensor) and out.dim() >= 2:
            why = forbidden.get(tuple(out.shape[-2:]))
            if why:
                raise FormError(why)
        for t in _tensors(out):
            if isinstance(t, _Watched):
                t._forbidden = forbidden
        return out


def _watch(x: torch.Tensor, forbidden: dict) -> torch.Tensor:
    w = x.as_subclass(_Watched)
    w._forbidden = forbidden
    return w


def _value_dim(E, allowed, forbidden):
    """The smallest E' >= E for which no allowed product shape is also a forbidden one."""
    while set(allowed(E)) & set(forbidden(E)):
        E += 1
    return E


def _attention_inputs(s, g, q_scale=1.0, k_scale=1.0):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    q = q_scale * normal(g, B, H, T, D)
    k = k_scale * normal(g, B, H, T, D)
    v = normal(g, B, H, T, E)
    return q, k, v


# --- 06.1 ReLU linear attention with the ones column --------------------------------------------


def _linear_inputs(s, g):
    scale = s.get("scale", 2.0)  # normalizers well above 1, except where a case makes them tiny
    q, k, v = _attention_inputs(s, g, scale, scale)
    if s.get("dead_queries"):  # some queries with ReLU(q) = 0: normalizer 0, output 0
        q[..., ::2, :] = -q[..., ::2, :].abs()
    return {"q": q, "k": k, "v": v, "eps": s.get("eps", 1e-15)}


def _la_no_relu(q, k, v, eps=1e-15):
    """ReLU is missing: raw q and k give signed similarities, and the normalizer can be zero or
    negative. EfficientViT's kernel is ReLU(q) . ReLU(k)"""
    v1 = F.pad(v, (0, 1), value=1.0)
    out = q @ (k.transpose(-1, -2) @ v1)
    return out[..., :-1] / (out[..., -1:] + eps)


def _la_relu_on_v(q, k, v, eps=1e-15):
    """ReLU on v too: only q and k go through the kernel; v is averaged as it is (negative
    values included)"""
    return ref.relu_linear_attention(q, k, torch.relu(v), eps)


def _la_relu_k_only(q, k, v, eps=1e-15):
    """ReLU on k but not on q: the query must be mapped by the same kernel, ReLU(q)"""
    v1 = F.pad(v, (0, 1), value=1.0)
    out = q @ (torch.relu(k).transpose(-1, -2) @ v1)
    return out[..., :-1] / (out[..., -1:] + eps)


def _la_first_column(q, k, v, eps=1e-15):
    """the ones column was padded on the left (or you divided by the first column): the
    normalizer is the LAST column of ReLU(Q) (ReLU(K)^T [V, 1]) when the ones come last"""
    v1 = F.pad(v, (1, 0), value=1.0)
    out = torch.relu(q) @ (torch.relu(k).transpose(-1, -2) @ v1)
    return out[..., 1:] / (out[..., -1:] + eps)


def _la_no_normalizer(q, k, v, eps=1e-15):
    """no division: the first E columns are only the numerator; divide them by the last
    column (plus eps)"""
    v1 = F.pad(v, (0, 1), value=1.0)
    return (torch.relu(q) @ (torch.relu(k).transpose(-1, -2) @ v1))[..., :-1]


def _la_no_eps(q, k, v, eps=1e-15):
    """no eps in the denominator: a query with ReLU(q) = 0 gives 0 / 0 = NaN; the released code
    divides by (denominator + eps)"""
    v1 = F.pad(v, (0, 1), value=1.0)
    out = torch.relu(q) @ (torch.relu(k).transpose(-1, -2) @ v1)
    return out[..., :-1] / out[..., -1:]


def _la_fixed_eps(q, k, v, **_):
    """the denominator does not get `+ eps` with the eps you were given: a fixed 1e-6 (lesson
    02's default), or clamp_min(eps), which leaves large denominators as they are"""
    return ref.relu_linear_attention(q, k, v, 1e-6)


def _la_clamped(q, k, v, eps=1e-15):
    """denominator.clamp_min(eps) instead of denominator + eps: they differ when the
    normalizer is small"""
    v1 = F.pad(v, (0, 1), value=1.0)
    out = torch.relu(q) @ (torch.relu(k).transpose(-1, -2) @ v1)
    return out[..., :-1] / out[..., -1:].clamp_min(eps)


def _la_mean(q, k, v, eps=1e-15):
    """the state is averaged over tokens (divided by S): the 1/S cancels in the ratio except
    next to eps, so small normalizers come out wrong; sum, don't average"""
    v1 = F.pad(v, (0, 1), value=1.0)
    out = torch.relu(q) @ (torch.relu(k).transpose(-1, -2) @ v1 / k.shape[2])
    return out[..., :-1] / (out[..., -1:] + eps)


_LA_CACHE: dict = {}


def _la_memoized(q, k, v, eps=1e-15):
    """a result cached from an earlier call with the same shapes: compute it from this call's
    q, k, v every time"""
    key = (tuple(q.shape), tuple(v.shape))
    if key not in _LA_CACHE:
        _LA_CACHE[key] = ref.relu_linear_attention(q, k, v, eps)
    return _LA_CACHE[key]


EX_06_1 = Exercise(
    id="06.1",
    title="ReLU linear attention in the linear form",
    reference=ref.relu_linear_attention,
    make_inputs=_linear_inputs,
    # first, one token with a normalizer ~1e-2: a fixed eps = 1e-6 is off by ~1e-4 there, enough
    # for the check to name it (its numbers are off by ~1e-7 where the normalizer is ~1)
    named_sizes=cases("B H T D E scale", ("one token, small normalizer", 1, 1, 1, 4, 4, 0.1))
    + cases(
        "B H T D E",
        ("T < D, odd", 1, 2, 5, 8, 3),
        ("T = D", 2, 1, 8, 8, 6),
        ("T > D, several heads", 2, 4, 33, 8, 8),
        ("same shapes, new values", 2, 4, 33, 8, 8),
        ("long, D != E", 1, 2, 301, 16, 7),
    )
    + cases("B H T D E eps", ("eps = 1e-3", 1, 2, 9, 4, 5, 1e-3))
    + cases("B H T D E dead_queries", ("queries with ReLU(q) = 0", 1, 2, 10, 4, 3, True))
    + cases("B H T D E scale", ("tiny normalizers (eps matters)", 1, 2, 12, 4, 3, 1e-8)),
    random_sizes=between(B=(1, 3), H=(1, 4), T=(1, 120), D=(1, 16), E=(1, 16)),
    hints=(
        "Apply ReLU to q and k (not v). Then pad v with a column of ones, as the released code "
        "does: [V, 1] has shape (B, H, S, E + 1), and one product gives numerator and "
        "denominator (two separate products pass the check too: the same numbers, the same form).",
        "ReLU(K)^T [V, 1] is a (D, E + 1) matrix: its first E columns are sum_s k_s v_s^T, its "
        "last is sum_s k_s. Multiply ReLU(Q) by it: the last column of the result is the "
        "denominator.",
        "v1 = F.pad(v, (0, 1), value=1.0); out = torch.relu(q) @ (torch.relu(k).transpose(-1, -2) "
        "@ v1); return out[..., :-1] / (out[..., -1:] + eps)",
    ),
    wrong=[
        _la_no_relu,
        _la_relu_on_v,
        _la_relu_k_only,
        _la_first_column,
        _la_no_normalizer,
        _la_no_eps,
        _la_fixed_eps,
        _la_clamped,
        _la_mean,
        _la_memoized,
    ],
    **TIGHT,
    form="linear",  # no loop over t and no T x S map (the ones column is taught, not checked)
    difficulty=1,
    minutes=10,
    objective="Compute ReLU linear attention in the linear form, with no T x T map of scores.",
)


# --- 06.2 the released switch --------------------------------------------------------------------


def _switch_inputs(s, g):
    T, D = s["T"], s["D"]
    linear = T > D

    def allowed(E):
        if linear:
            return [(D, E + 1), (E + 1, D), (T, E + 1), (E + 1, T), (D, E), (E, D), (T, E), (E, T)]
        return [(T, T), (T, E), (E, T)]

    def forbidden(E):
        if linear:
            return [(T, T)]
        return [(D, E + 1), (E + 1, D)] + ([(D, E), (E, D)] if T != D else [])

    s["E"] = _value_dim(s["E"], allowed, forbidden)
    E = s["E"]
    if linear:
        why = (
            f"you built a T x T = {T} x {T} map of scores with T = {T} > D = {D}: the released "
            "code uses the linear form there (the quadratic form costs O(T^2))"
        )
    else:
        why = (
            f"you built a D x E state (the linear form) with T = {T} <= D = {D}: the released "
            "code switches to the quadratic form when the tokens are at most the head dim"
        )
    forbidden_why = dict.fromkeys(forbidden(E), why)
    q, k, v = _attention_inputs(s, g)
    return {
        "q": _watch(q, forbidden_why),
        "k": _watch(k, forbidden_why),
        "v": _watch(v, forbidden_why),
        "eps": 1e-15,
    }


def _sw_always_linear(q, k, v, eps=1e-15):
    """always the linear form: the released code switches to the quadratic form when
    T = height * width <= D"""
    return ref.relu_linear_attention(q, k, v, eps)


def _sw_always_quadratic(q, k, v, eps=1e-15):
    """always the quadratic form: its T x T map is what linear attention avoids at T > D"""
    return ref.relu_linear_attention_quadratic(q, k, v, eps)


def _sw_strict(q, k, v, eps=1e-15):
    """T < D instead of T <= D: at T = D the released code uses the quadratic form (its test is
    height * width > dim for the linear one)"""
    form = ref.relu_linear_attention_quadratic if q.shape[2] < q.shape[3] else None
    return (form or ref.relu_linear_attention)(q, k, v, eps)


def _sw_swapped(q, k, v, eps=1e-15):
    """the branches are swapped: quadratic for many tokens, linear for few"""
    if q.shape[2] > q.shape[3]:
        return ref.relu_linear_attention_quadratic(q, k, v, eps)
    return ref.relu_linear_attention(q, k, v, eps)


def _sw_value_dim(q, k, v, eps=1e-15):
    """T is compared with E (v's head dim); the released code compares it with the q/k head
    dim D"""
    if q.shape[2] > v.shape[3]:
        return ref.relu_linear_attention(q, k, v, eps)
    return ref.relu_linear_attention_quadratic(q, k, v, eps)


def _sw_all_heads(q, k, v, eps=1e-15):
    """T is compared with H * D, all heads' channels; the released `dim` is one head's D"""
    if q.shape[2] > q.shape[1] * q.shape[3]:
        return ref.relu_linear_attention(q, k, v, eps)
    return ref.relu_linear_attention_quadratic(q, k, v, eps)


def _sw_cost_rule(q, k, v, eps=1e-15):
    """a cost rule of your own (T * T <= D * E): sensible, but not the released switch, which
    compares T with D"""
    T, D, E = q.shape[2], q.shape[3], v.shape[3]
    if T * T <= D * E:
        return ref.relu_linear_attention_quadratic(q, k, v, eps)
    return ref.relu_linear_attention(q, k, v, eps)


_SW_FORM: dict = {}


def _sw_decided_once(q, k, v, eps=1e-15):
    """the form was decided on the first call and kept in a global: decide it for each call's
    T and D"""
    _SW_FORM.setdefault("form", q.shape[2] > q.shape[3])
    if _SW_FORM["form"]:
        return ref.relu_linear_attention(q, k, v, eps)
    return ref.relu_linear_attention_quadratic(q, k, v, eps)


EX_06_2 = Exercise(
    id="06.2",
    title="the released switch between the linear and the quadratic form",
    reference=ref.relu_linear_attention_auto,
    make_inputs=_switch_inputs,
    named_sizes=cases(
        "B H T D E",
        ("one token", 1, 1, 1, 8, 3),
        ("T < E < D", 1, 2, 3, 8, 5),
        ("E < T < D", 2, 1, 6, 8, 4),
        ("T = D", 1, 2, 8, 8, 3),
        ("T = D + 1", 1, 2, 9, 8, 3),
        ("D < T <= H * D", 1, 3, 10, 4, 2),
        ("T > D, several heads", 2, 4, 49, 8, 8),
        ("same shapes, new values", 2, 4, 49, 8, 8),
        ("T < D again", 1, 1, 2, 16, 4),
    ),
    random_sizes=between(B=(1, 2), H=(1, 4), T=(1, 80), D=(1, 32), E=(1, 16)),
    hints=(
        "Compare the number of tokens T = q.shape[2] with the head dim D = q.shape[3].",
        "The released forward runs the linear form if height * width > dim, else the quadratic "
        "form. Both forms from this lesson take (q, k, v, eps).",
        "if q.shape[2] > q.shape[3]: return relu_linear_attention(q, k, v, eps)  "
        "else: return relu_linear_attention_quadratic(q, k, v, eps)",
    ),
    wrong=[
        _sw_always_linear,
        _sw_always_quadratic,
        _sw_strict,
        _sw_swapped,
        _sw_value_dim,
        _sw_all_heads,
        _sw_cost_rule,
        _sw_decided_once,
    ],
    **TIGHT,
    difficulty=1,
    minutes=5,
    objective="Choose the form the released LiteMLA uses for a given token count and head dim.",
)


# --- 06.3 multi-scale tokens ---------------------------------------------------------------------


def _ms_inputs(s, g):
    B, heads, dim, height, width = s["B"], s["heads"], s["dim"], s["height"], s["width"]
    scales = s["scales"]
    C = 3 * heads * dim
    return {
        "qkv": normal(g, B, C, height, width),
        "depthwise": [normal(g, C, 1, sc, sc) for sc in scales],
        "pointwise": [normal(g, C, dim, 1, 1) / dim**0.5 for _ in scales],
        "heads": heads,
    }


def _ms_no_identity(qkv, depthwise, pointwise, heads):
    """the 1x1 qkv itself is missing: the multi-scale tokens are [qkv, aggregated scales...]"""
    return ref.multi_scale_qkv(qkv, depthwise, pointwise, heads)[:, qkv.shape[1] :]


def _ms_pointwise_first(qkv, depthwise, pointwise, heads):
    """the grouped 1x1 conv ran before the depthwise conv: the released order is depthwise
    s x s first, then grouped 1x1"""
    C = qkv.shape[1]
    out = [qkv]
    for dw, pw in zip(depthwise, pointwise):
        x = F.conv2d(qkv, pw, groups=3 * heads)
        out.append(F.conv2d(x, dw, padding=dw.shape[-1] // 2, groups=C))
    return torch.cat(out, 1)


def _ms_padding_one(qkv, depthwise, pointwise, heads):
    """padding=1 for every scale: right for 3x3 only; an s x s kernel needs padding s // 2 to
    keep height x width"""
    C = qkv.shape[1]
    out = [qkv]
    for dw, pw in zip(depthwise, pointwise):
        out.append(F.conv2d(F.conv2d(qkv, dw, padding=1, groups=C), pw, groups=3 * heads))
    return torch.cat(out, 1)


def _ms_chained(qkv, depthwise, pointwise, heads):
    """each scale aggregated the previous scale's output: every scale starts from the 1x1 qkv"""
    C = qkv.shape[1]
    out, x = [qkv], qkv
    for dw, pw in zip(depthwise, pointwise):
        x = F.conv2d(F.conv2d(x, dw, padding=dw.shape[-1] // 2, groups=C), pw, groups=3 * heads)
        out.append(x)
    return torch.cat(out, 1)


def _ms_depthwise_only(qkv, depthwise, pointwise, heads):
    """only the depthwise conv: the grouped 1x1 conv after it is missing"""
    C = qkv.shape[1]
    out = [qkv] + [F.conv2d(qkv, dw, padding=dw.shape[-1] // 2, groups=C) for dw in depthwise]
    return torch.cat(out, 1)


def _ms_reversed_order(qkv, depthwise, pointwise, heads):
    """the aggregated scales come before the 1x1 qkv in the concatenation: [qkv, scale 1,
    scale 2, ...] is the released order (the heads of each scale follow each other)"""
    full = ref.multi_scale_qkv(qkv, depthwise, pointwise, heads)
    C = qkv.shape[1]
    return torch.cat([full[:, C:], full[:, :C]], 1)


def _ms_circular(qkv, depthwise, pointwise, heads):
    """circular padding wraps the image around; the released convs pad with zeros"""
    C = qkv.shape[1]
    out = [qkv]
    for dw, pw in zip(depthwise, pointwise):
        p = dw.shape[-1] // 2
        x = F.conv2d(F.pad(qkv, (p, p, p, p), mode="circular"), dw, groups=C)
        out.append(F.conv2d(x, pw, groups=3 * heads))
    return torch.cat(out, 1)


def _ms_flipped(qkv, depthwise, pointwise, heads):
    """the kernel was flipped (a true convolution): torch's conv2d, like the released code,
    correlates without flipping"""
    flipped = [dw.flip(-1, -2) for dw in depthwise]
    return ref.multi_scale_qkv(qkv, flipped, pointwise, heads)


EX_06_3 = Exercise(
    id="06.3",
    title="multi-scale tokens: depthwise s x s, then grouped 1x1, concatenated",
    reference=ref.multi_scale_qkv,
    make_inputs=_ms_inputs,
    named_sizes=cases(
        "B heads dim height width scales",
        ("odd 5 x 7, released scales (5,)", 1, 2, 4, 5, 7, (5,)),
        ("one pixel", 1, 1, 2, 1, 1, (5,)),
        ("the figure's scales (3, 5)", 2, 2, 3, 6, 6, (3, 5)),
        ("same shapes, new values", 2, 2, 3, 6, 6, (3, 5)),
        ("image smaller than the kernel", 1, 3, 2, 2, 3, (5,)),
        ("three scales", 1, 1, 4, 9, 8, (3, 5, 7)),
    ),
    random_sizes=between(
        B=(1, 2),
        heads=(1, 4),
        dim=(1, 8),
        height=(1, 12),
        width=(1, 12),
        scales=[(3,), (5,), (3, 5)],
    ),
    hints=(
        "For each scale: F.conv2d with the depthwise weight (groups = all channels, zero padding "
        "s // 2), then F.conv2d with the pointwise weight.",
        "The pointwise conv is grouped: groups = 3 * heads, so each group mixes the dim channels "
        "of one head's q, k or v. Concatenate [qkv, scale 1, scale 2, ...] on channels.",
        "out = [qkv]; for dw, pw in zip(depthwise, pointwise): x = F.conv2d(qkv, dw, "
        "padding=dw.shape[-1] // 2, groups=qkv.shape[1]); out.append(F.conv2d(x, pw, groups=3 * "
        "heads)); return torch.cat(out, dim=1)",
    ),
    wrong=[
        _ms_no_identity,
        _ms_pointwise_first,
        _ms_padding_one,
        _ms_chained,
        _ms_depthwise_only,
        _ms_reversed_order,
        _ms_circular,
        _ms_flipped,
    ],
    **TIGHT,
    difficulty=2,
    minutes=10,
    objective="Build LiteMLA's multi-scale q, k, v with a depthwise and a grouped 1x1 conv.",
)

EXERCISES = [EX_06_1, EX_06_2, EX_06_3]
