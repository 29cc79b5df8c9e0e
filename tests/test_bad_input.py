"""Bad input to the package gets a clear error, or a correct result: one table of every public
function of the mechanism modules (softmax, featuremaps, linear, causal, gated, mamba, mlla) and
of what can be wrong with its input.

For each function the table lists its tensor arguments with the shapes its docstring documents
("B H T D"; "..." for any leading dims). From that the cases are generated:

    rank       each tensor argument with one dimension more (and one fewer): an error that names
               the argument and its actual shape; an argument of any rank ("... D") gives the
               result of its slices instead
    mismatch   each size that two arguments share, made one larger in one of them: an error that
               names the argument, says "expected" and gives the wrong size
    state      a state of the wrong shape or kind: an error that names the state argument
    chunk      chunk sizes 0, -1, 2.5, True and "4": an error that names chunk_size; np.int64(3)
               gives the result of 3
    empty      T = 0 (every sequence axis empty): empty outputs and, where a final state is
               returned, the initial state; or a clear error where an empty sequence has no
               meaning (attention over no keys)
    dtype      each tensor argument in float32 while the others are float64: an error naming it
               and both dtypes (or, where the docstring says it is converted, the same result)
    integer    each tensor argument as int64: an error naming it and its dtype

Then the modules (n_heads=0, a wrong input width, dtype), the scalar arguments
(fixed_decay_log_gates(2, -1), feature_dim("random", D), ...) and the value checks (negative
normalizers, positive log-gates, FAVOR+ on large inputs) are tested one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lintutor import causal, featuremaps, gated, linear, mamba, mlla, softmax

SIZES = dict(B=2, H=3, T=5, S=6, D=4, E=3, C=6, n=6, b=2, d=3, N=4, M=7)

# How each tensor is drawn: the values a valid call needs (positive features, log-gates <= 0, ...)
KINDS = {
    "n": lambda g, s: torch.randn(*s, generator=g, dtype=torch.float64),
    "p": lambda g, s: F.elu(torch.randn(*s, generator=g, dtype=torch.float64)) + 1,
    "u": lambda g, s: torch.rand(*s, generator=g, dtype=torch.float64),
    "g": lambda g, s: -torch.rand(*s, generator=g, dtype=torch.float64),
    "dt": lambda g, s: F.softplus(torch.randn(*s, generator=g, dtype=torch.float64)),
    "A": lambda g, s: -torch.exp(torch.randn(*s, generator=g, dtype=torch.float64) / 2),
    "w": lambda g, s: torch.randn(*s, generator=g, dtype=torch.float64) / 3,
}


@dataclass
class Fn:
    """One public function: its tensor arguments (name: (spec, kind)) in call order, the other
    keyword arguments, and which of the case groups apply."""

    fn: object
    tensors: dict
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    sizes: dict = field(default_factory=dict)
    time: tuple = ("T",)  # letters that are sequence lengths (set to 0 by the "empty" case)
    empty: str = "result"  # or "error"
    state: str | None = None  # keyword of the state: (S, z) or S, given in `state_parts`
    state_parts: tuple = ()  # ((spec, kind), ...): one part = a tensor state, two = a tuple
    final: bool = False  # takes output_final_state
    chunk: str | None = None  # keyword of the chunk size
    converted: tuple = ()  # tensor arguments the function converts to the others' dtype

    @property
    def id(self):
        return self.label or self.fn.__name__

    def sizes_(self, **changes):
        out = dict(SIZES)
        out.update(self.sizes)
        out.update(changes)
        return out

    def shape(self, spec, sizes):
        return tuple(sizes[c] if not c.isdigit() else int(c) for c in spec.split() if c != "...")

    def inputs(self, seed=0, **changes):
        """A valid call's keyword arguments (tensors first, then the state, then options)."""
        sizes = self.sizes_(**changes)
        g = torch.Generator().manual_seed(seed)
        out = {}
        for name, (spec, kind) in self.tensors.items():
            out[name] = KINDS[kind](g, self.shape(spec, sizes))
        if self.state:
            parts = [KINDS[kind](g, self.shape(spec, sizes)) for spec, kind in self.state_parts]
            out[self.state] = parts[0] if len(parts) == 1 else tuple(parts)
        out.update(self.kwargs)
        return out

    def parts(self):
        """Every tensor argument by the name an error should use: q, ..., state[0], state[1]."""
        names = {name: spec for name, (spec, _) in self.tensors.items()}
        if self.state:
            if len(self.state_parts) == 1:
                names[self.state] = self.state_parts[0][0]
            else:
                for i, (spec, _) in enumerate(self.state_parts):
                    names[f"{self.state}[{i}]"] = spec
        return names


def get(kw, name):
    if name.endswith("]"):
        base, i = name[:-1].split("[")
        return kw[base][int(i)]
    return kw[name]


def put(kw, name, value):
    kw = dict(kw)
    if name.endswith("]"):
        base, i = name[:-1].split("[")
        parts = list(kw[base])
        parts[int(i)] = value
        kw[base] = tuple(parts)
    else:
        kw[name] = value
    return kw


P, G = "p", "g"
QKV = {"q": ("B H T D", P), "k": ("B H T D", P), "v": ("B H T E", "n")}
QKV_S = {"q": ("B H T D", P), "k": ("B H S D", P), "v": ("B H S E", "n")}
NORM_STATE = (("B H D E", "n"), ("B H D", "u"))
PLAIN_STATE = (("B H D E", "n"),)
STEP = {"q_t": ("B H D", P), "k_t": ("B H D", P), "v_t": ("B H E", "n")}
SSM = {"x": ("b T d", "n"), "delta": ("b T d", "dt"), "A": ("d N", "A"), "B": ("b T N", "n"),
       "C": ("b T N", "n")}  # fmt: skip
MLLA = {"q": ("B H n D", P), "k": ("B H n D", P), "v": ("B H n E", "n"),
        "q_rope": ("B H n D", "n"), "k_rope": ("B H n D", "n")}  # fmt: skip


def _forms(module, names, tensors, gate=None, **extra):
    out = []
    for name in names:
        fn = getattr(module, name)
        chunk = "chunk_size" if name.endswith("_chunked") else None
        kw = {"chunk_size": 2} if chunk else {}
        for normalize, parts in ((True, NORM_STATE), (False, PLAIN_STATE)):
            t = dict(tensors)
            if gate:
                t["g"] = gate
            out.append(Fn(fn, t, {"normalize": normalize, **kw}, state="initial_state",
                          state_parts=parts, final=True, chunk=chunk,
                          label=f"{name}[normalize={normalize}]", **extra))  # fmt: skip
    return out


CAUSAL = ["causal_linear_attention_recurrent", "causal_linear_attention_parallel",
          "causal_linear_attention_chunked"]  # fmt: skip
GATED = ["gated_linear_attention_recurrent", "gated_linear_attention_parallel",
         "gated_linear_attention_chunked"]  # fmt: skip

# fmt: off
TABLE = [
    # softmax (lesson 01)
    Fn(softmax.attention_one_query, {"q": ("D", "n"), "k": ("S D", "n"), "v": ("S E", "n")},
       time=("S",), empty="error"),  # fmt: skip
    Fn(softmax.attention_weights, {"q": ("B H T D", "n"), "k": ("B H S D", "n")},
       time=("T", "S")),  # fmt: skip
    Fn(softmax.attention_weights, {"q": ("B H T D", "n"), "k": ("B H S D", "n")},
       {"causal": True}, time=("T", "S"), label="attention_weights[causal]"),  # fmt: skip
    Fn(softmax.softmax_attention_loops, QKV_S, time=("T", "S")),
    Fn(softmax.softmax_attention, QKV_S, time=("T", "S")),
    Fn(softmax.softmax_attention, QKV_S, {"causal": True}, time=("T", "S"),
       label="softmax_attention[causal]"),  # fmt: skip
    Fn(softmax.split_heads, {"x": ("B T C", "n")}, {"n_heads": 2}),
    Fn(softmax.merge_heads, {"x": ("B H T D", "n")}),
    Fn(softmax.multihead_attention,
       {"x": ("B T C", "n"), "w_q": ("C C", "w"), "w_k": ("C C", "w"), "w_v": ("C C", "w"),
        "w_o": ("C C", "w")}, {"n_heads": 2, "causal": True}),  # fmt: skip
    # feature maps (lesson 02)
    Fn(featuremaps.elu1, {"x": ("... B H T D", "n")}),
    Fn(featuremaps.relu, {"x": ("... B H T D", "n")}),
    Fn(featuremaps.squared_relu, {"x": ("... B H T D", "n")}),
    Fn(featuremaps.taylor2, {"x": ("... B H T D", "n")}),
    Fn(featuremaps.positive_random_features,
       {"x": ("... B H T D", "n"), "projection": ("D M", "w")}, converted=("x", "projection")),
    # linear (lesson 02)
    Fn(linear.linear_attention, QKV_S, time=("T", "S")),
    Fn(linear.linear_attention, QKV_S, {"normalize": False}, time=("T", "S"),
       label="linear_attention[normalize=False]"),  # fmt: skip
    Fn(linear.linear_attention_quadratic, QKV_S, time=("T", "S")),
    Fn(linear.linear_attention_weights, {"q": ("B H T D", P), "k": ("B H S D", P)},
       time=("T", "S")),  # fmt: skip
    Fn(linear.linear_attention_weights, {"q": ("B H T D", P), "k": ("B H S D", P)},
       {"causal": True}, time=("T", "S"), label="linear_attention_weights[causal]"),  # fmt: skip
    Fn(linear.attention_entropy, {"weights": ("... B H T S", "u")}),
    # causal (lesson 03)
    *_forms(causal, CAUSAL, QKV),
    Fn(causal.causal_linear_attention_step, STEP, {"normalize": True}, time=(),
       state="state", state_parts=NORM_STATE, label="causal_linear_attention_step[normalize=True]"),
    Fn(causal.causal_linear_attention_step, STEP, {"normalize": False}, time=(),
       state="state", state_parts=PLAIN_STATE,
       label="causal_linear_attention_step[normalize=False]"),  # fmt: skip
    Fn(causal.check_causal_inputs, QKV, {"normalize": True}, state="initial_state",
       state_parts=NORM_STATE),  # fmt: skip
    Fn(causal.check_causal_inputs, QKV, {"normalize": False}, state="initial_state",
       state_parts=PLAIN_STATE, label="check_causal_inputs[normalize=False]"),  # fmt: skip
    Fn(causal.check_step_inputs, STEP, {"normalize": True}, time=(), state="state",
       state_parts=NORM_STATE),  # fmt: skip
    # gated (lesson 04)
    Fn(gated.check_gated_inputs, {**QKV, "g": ("B H T", G)}),
    Fn(gated.segment_sum, {"g": ("... B H T", G)}),
    Fn(gated.decay_mask_naive, {"g": ("... B H T", G)}),
    Fn(gated.decay_mask, {"g": ("... B H T", G)}),
    *_forms(gated, GATED, QKV, gate=("B H T", G)),
    *[Fn(f.fn, f.tensors, f.kwargs, label=f.label.replace("[", "[vector, "), state=f.state,
         state_parts=f.state_parts, final=True, chunk=f.chunk)
      for f in _forms(gated, GATED, QKV, gate=("B H T D", G))],  # fmt: skip
    Fn(gated.decay_masked_scores,
       {"q": ("B H T D", "u"), "k": ("B H T D", "u"), "g": ("B H T", G)}),
    Fn(gated.decay_masked_scores_factorized,
       {"q": ("B H T D", "u"), "k": ("B H T D", "u"), "g": ("B H T D", G)}),  # fmt: skip
    Fn(gated.gated_linear_attention_step, {**STEP, "g_t": ("B H", G)}, {"normalize": False},
       time=(), state="state", state_parts=PLAIN_STATE),  # fmt: skip
    Fn(gated.gated_linear_attention_step, {**STEP, "g_t": ("B H D", G)}, {"normalize": True},
       time=(), state="state", state_parts=NORM_STATE,
       label="gated_linear_attention_step[vector, normalize=True]"),  # fmt: skip
    # mamba (lesson 05)
    Fn(mamba.discretize, {k: SSM[k] for k in ("delta", "A", "B")}, {"discretization": "zoh"}),
    Fn(mamba.selective_scan_recurrent, {**SSM, "D": ("d", "n")}, {"discretization": "zoh"},
       state="initial_state", state_parts=(("b d N", "n"),), final=True),  # fmt: skip
    Fn(mamba.mamba_to_gated_linear_attention, SSM, {"discretization": "zoh"}),
    Fn(mamba.selective_scan_as_linear_attention, {**SSM, "D": ("d", "n")},
       {"discretization": "zoh"}, state="initial_state", state_parts=(("b d N", "n"),),
       final=True),  # fmt: skip
    Fn(mamba.selective_scan_as_linear_attention, {**SSM, "D": ("d", "n")},
       {"discretization": "simple", "chunk_size": 2}, state="initial_state",
       state_parts=(("b d N", "n"),), final=True, chunk="chunk_size",
       label="selective_scan_as_linear_attention[chunked]"),  # fmt: skip
    Fn(mamba.mamba_attention_matrix, {k: SSM[k] for k in ("delta", "A", "B", "C")}),
    # mlla (lesson 05)
    Fn(mlla.rope_2d, {"x": ("b n C", "n")}, {"height": 2, "width": 3}, sizes={"C": 8}, time=()),
    Fn(mlla.mlla_attention, MLLA, time=("n",)),
    Fn(mlla.mlla_attention_quadratic, MLLA, time=("n",)),
]
# fmt: on


def _call(f: Fn, kw):
    kw = dict(kw)
    if f.final:
        kw["output_final_state"] = True
    return f.fn(**kw)


def _leaves(x):
    if isinstance(x, (tuple, list)):
        return [y for part in x for y in _leaves(part)]
    return [x]


def _raises(f: Fn, kw, *needles, exc=(ValueError, TypeError)):
    """The call raises a ValueError or TypeError (not a raw torch RuntimeError or IndexError)
    whose message contains every needle."""
    with pytest.raises(exc) as info:
        _call(f, kw)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{f.id}: {needle!r} not in the error: {msg}"
    return msg


def _fmt(shape):
    """A shape as errors write it: (2, 3) (a 1-d shape as (3) or (3,))."""
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _has_shape(msg, shape):
    return _fmt(shape) in msg or str(tuple(shape)) in msg


# ---------------------------------------------------------------------------------------------
# the generated cases


def _cases():
    out = []
    for f in TABLE:
        parts = f.parts()
        for name, spec in parts.items():
            out.append((f, "rank+", name))
            if "..." not in spec and len(spec.split()) > 1:
                out.append((f, "rank-", name))
            for letter in spec.split():
                shared = [n for n, s in parts.items() if n != name and letter in s.split()]
                if letter != "..." and shared:
                    out.append((f, "mismatch", f"{name}.{letter}"))
            out.append((f, "integer", name))
            if len(parts) > 1:
                out.append((f, "dtype", name))
        if f.state:
            out.append((f, "state shape", f.state))
            if len(f.state_parts) == 2:
                out.append((f, "state kind", f.state))
        if f.chunk:
            for bad in ("0", "-1", "2.5", "True", "'4'"):
                out.append((f, "chunk", bad))
            out.append((f, "chunk", "np.int64(3)"))
        if f.time:
            out.append((f, "empty", ",".join(f.time)))
    return out


CASES = _cases()


@pytest.mark.parametrize("f,kind,target", CASES,
                         ids=[f"{f.id}-{kind}-{t}" for f, kind, t in CASES])  # fmt: skip
def test_bad_input(f, kind, target):
    kw = f.inputs()
    if kind in ("rank+", "rank-"):
        x = get(kw, target)
        bad = x.unsqueeze(0) if kind == "rank+" else x[0]
        if "..." in f.parts()[target]:  # any leading dims: the result of each slice
            got, want = _call(f, put(kw, target, bad)), _call(f, kw)
            for a, b in zip(_leaves(got), _leaves(want)):
                torch.testing.assert_close(a, b.unsqueeze(0), rtol=1e-12, atol=1e-14)
            return
        msg = _raises(f, put(kw, target, bad), target)
        assert _has_shape(msg, bad.shape), msg
        assert "dimensions" in msg or "expected shape" in msg, msg
    elif kind == "mismatch":
        name, letter = target.split(".")
        spec = f.parts()[name].split()
        x = get(kw, name)
        axis = [c for c in spec if c != "..."].index(letter)
        grown = list(x.shape)
        grown[axis] += 1
        bad = torch.cat([x, x.narrow(axis, 0, 1)], dim=axis)  # same kind of values, one more
        msg = _raises(f, put(kw, name, bad), name, "expected")
        assert str(grown[axis]) in msg, msg
    elif kind == "integer":
        x = get(kw, target)
        _raises(f, put(kw, target, x.round().to(torch.int64)), target.split("[")[0], "int64")
    elif kind == "dtype":
        x = get(kw, target)
        bad = put(kw, target, x.float())
        if target in f.converted:  # documented: converted to the others' dtype
            for a, b in zip(_leaves(_call(f, bad)), _leaves(_call(f, kw))):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, check_dtype=False)
            return
        _raises(f, bad, target.split("[")[0], "float32", "float64")
    elif kind == "state shape":
        state = kw[f.state]
        if isinstance(state, tuple):
            S, z = state
            bad = torch.cat([S, S[..., :1]], dim=-1)  # E + 1
            _raises(f, put(kw, f"{f.state}[0]", bad), f.state, _fmt(bad.shape), "expected")
            badz = z[..., :-1]  # D - 1
            _raises(f, put(kw, f"{f.state}[1]", badz), f.state, _fmt(badz.shape), "expected")
        else:
            bad = torch.cat([state, state[..., :1]], dim=-1)
            _raises(f, put(kw, f.state, bad), f.state, _fmt(bad.shape), "expected")
    elif kind == "state kind":
        _raises(f, put(kw, f.state, kw[f.state][0]), f.state, "tuple")
    elif kind == "chunk":
        value = eval(target, {"np": np})
        if isinstance(value, np.integer):
            for a, b in zip(_leaves(_call(f, {**kw, f.chunk: value})),
                            _leaves(_call(f, {**kw, f.chunk: 3}))):  # fmt: skip
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            return
        _raises(f, {**kw, f.chunk: value}, f.chunk, repr(value))
    elif kind == "empty":
        empty = f.inputs(**{t: 0 for t in f.time})
        if f.empty == "error":
            _raises(f, empty, "0")
            return
        one = f.inputs(**{t: 1 for t in f.time})
        got, ref = _call(f, empty), _call(f, one)
        for a, b in zip(_leaves(got), _leaves(ref)):
            if not isinstance(b, torch.Tensor):
                assert a == b
                continue
            assert a.dim() == b.dim() and a.dtype == b.dtype, (a.shape, b.shape)
            for na, nb in zip(a.shape, b.shape):
                assert na == nb or na == 0, f"{f.id}: T = 0 gives {tuple(a.shape)}"
            assert torch.isfinite(a).all()
        if f.final:  # nothing happened: the final state is the initial one
            o, final = got
            for a, b in zip(_leaves(final), _leaves(empty[f.state])):
                assert torch.equal(a, b), f"{f.id}: the final state after T = 0"
    else:
        raise AssertionError(kind)


def test_the_table_covers_every_public_function():
    """A public function added to a mechanism module must get a row here (or be listed as
    tested below)."""
    tested = {f.fn for f in TABLE}
    below = {softmax.causal_mask, featuremaps.draw_random_projection, featuremaps.feature_dim,
             featuremaps.check_exponent_range, gated.check_log_gate_shape,
             causal.initial_state_or_zeros,  # q, v are its caller's to check; its state checks are
             # the ones check_causal_inputs makes (its row)
             mamba.check_ssm_inputs, mlla.check_mlla_inputs, mlla.check_grid_input,
             featuremaps.get_feature_map, gated.fixed_decay_log_gates,
             gated.selective_copying_batch,
             mlla.rope_2d_angles, gated.GatedLinearAttention, mamba.MambaMixer,
             mlla.MLLALinearAttention, mlla.MLLABlock}  # fmt: skip
    missing = []
    for module in (softmax, featuremaps, linear, causal, gated, mamba, mlla):
        for name, obj in vars(module).items():
            if name.startswith("_") or not callable(obj) or isinstance(obj, type(torch)):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if obj not in tested | below:
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"no bad-input cases for {missing}"


def test_count_the_cases():
    kinds = {}
    for _, kind, _ in CASES:
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{len(CASES)} generated bad-input cases over {len(TABLE)} rows: {kinds}")
    assert len(CASES) > 500


# ---------------------------------------------------------------------------------------------
# one by one: values, scalars, modules


SCALARS = [
    ("fixed_decay T=-1", lambda: gated.fixed_decay_log_gates(2, -1), ("T", "-1")),
    ("fixed_decay n_heads=0", lambda: gated.fixed_decay_log_gates(0, 5), ("n_heads", "0")),
    ("fixed_decay batch=0", lambda: gated.fixed_decay_log_gates(2, 5, batch=0), ("batch", "0")),
    ("feature_dim random without M", lambda: featuremaps.feature_dim("random", 4), ("M",)),
    ("feature_dim D=0", lambda: featuremaps.feature_dim("elu1", 0), ("D", "0")),
    ("projection D=0", lambda: featuremaps.draw_random_projection(0, 4), ("D", "0")),
    ("projection M=-2", lambda: featuremaps.draw_random_projection(4, -2), ("M", "-2")),
    ("causal_mask T=-1", lambda: softmax.causal_mask(-1), ("T", "-1")),
    ("split_heads n_heads=0",
     lambda: softmax.split_heads(torch.zeros(1, 2, 6, dtype=torch.float64), 0), ("n_heads", "0")),
    ("multihead n_heads=0",
     lambda: softmax.multihead_attention(torch.zeros(1, 2, 6), *[torch.zeros(6, 6)] * 4, 0),
     ("n_heads", "0")),
    ("temperature=0",
     lambda: softmax.attention_weights(torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 2, 3),
                                       temperature=0.0), ("temperature", "0")),
    ("causal with S < T",
     lambda: softmax.attention_weights(torch.zeros(1, 1, 4, 3), torch.zeros(1, 1, 2, 3),
                                       causal=True), ("causal", "S")),
    ("causal softmax with S < T",
     lambda: softmax.softmax_attention(torch.zeros(1, 1, 4, 3), torch.zeros(1, 1, 2, 3),
                                       torch.zeros(1, 1, 2, 3), causal=True), ("causal", "S")),
    ("rope channels=6", lambda: mlla.rope_2d_angles(2, 3, 6), ("channels", "6")),
    ("rope height=0", lambda: mlla.rope_2d_angles(0, 3, 8), ("height", "0")),
    ("rope n != height * width", lambda: mlla.rope_2d(torch.zeros(1, 5, 8), 2, 3), ("x", "6")),
    ("selective copying vocab=2", lambda: gated.selective_copying_batch(2, vocab=2),
     ("vocab", "2")),
    ("selective copying batch=0", lambda: gated.selective_copying_batch(0), ("batch", "0")),
    ("unknown discretization",
     lambda: mamba.discretize(torch.ones(1, 2, 3), -torch.ones(3, 4), torch.ones(1, 2, 4), "euler"),
     ("discretization", "euler")),
]  # fmt: skip


@pytest.mark.parametrize("call,needles", [c[1:] for c in SCALARS], ids=[c[0] for c in SCALARS])
def test_scalar_arguments_are_checked(call, needles):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_np_integers_are_accepted_as_sizes():
    a = gated.fixed_decay_log_gates(np.int64(2), np.int64(5), batch=np.int32(1))
    assert torch.equal(a, gated.fixed_decay_log_gates(2, 5, 1))
    assert softmax.causal_mask(np.int64(3)).shape == (3, 3)
    assert featuremaps.feature_dim("random", 4, np.int64(9)) == 9
    x = torch.randn(1, 2, 6, dtype=torch.float64)
    assert torch.equal(softmax.split_heads(x, np.int64(2)), softmax.split_heads(x, 2))


def test_positive_log_gates_are_refused_in_every_gated_form():
    q, k, v = (torch.rand(1, 2, 5, 3, dtype=torch.float64) for _ in range(3))
    g = -torch.rand(1, 2, 5, dtype=torch.float64)
    g[0, 1, 3] = 0.25
    for fn in (gated.gated_linear_attention_recurrent, gated.gated_linear_attention_parallel,
               gated.gated_linear_attention_chunked, gated.decay_masked_scores,
               gated.decay_masked_scores_factorized):  # fmt: skip
        args = (q, k, g) if "scores" in fn.__name__ else (q, k, v, g)
        with pytest.raises(ValueError, match=r"g: log-gates must be <= 0.*0\.25"):
            fn(*args)
    for fn in (gated.decay_mask, gated.decay_mask_naive):
        with pytest.raises(ValueError, match="log-gates must be <= 0"):
            fn(g)
    with pytest.raises(ValueError, match="g_t: log-gates"):
        gated.gated_linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 3],
                                          torch.zeros(1, 2, 3, 3, dtype=torch.float64))  # fmt: skip


def test_mamba_refuses_positive_A_and_negative_delta():
    x, delta, B, C = (torch.randn(1, 4, 2, dtype=torch.float64) for _ in range(4))
    delta = F.softplus(delta)
    B, C = torch.randn(1, 4, 3, dtype=torch.float64), torch.randn(1, 4, 3, dtype=torch.float64)
    A = -torch.rand(2, 3, dtype=torch.float64)
    for fn in (mamba.selective_scan_recurrent, mamba.selective_scan_as_linear_attention):
        with pytest.raises(ValueError, match="A: "):
            fn(x, delta, -A, B, C)
        with pytest.raises(ValueError, match="delta: "):
            fn(x, -delta, A, B, C)
    with pytest.raises(ValueError, match="A: "):
        mamba.discretize(delta, -A, B)


def test_zero_order_hold_at_A_or_delta_zero_is_the_limit_not_nan():
    """(exp(Delta A) - 1) / A -> Delta as A -> 0; (exp(g) - 1) / g -> 1 as g -> 0."""
    x, delta = torch.randn(1, 4, 2, dtype=torch.float64), torch.rand(1, 4, 2, dtype=torch.float64)
    delta[0, 1, 0] = 0.0
    B, C = torch.randn(1, 4, 3, dtype=torch.float64), torch.randn(1, 4, 3, dtype=torch.float64)
    A = -torch.rand(2, 3, dtype=torch.float64)
    A[1, 2] = 0.0
    _, B_bar = mamba.discretize(delta, A, B, "zoh")
    torch.testing.assert_close(B_bar[..., 1, 2], delta[..., 1] * B[..., 2])
    y = mamba.selective_scan_recurrent(x, delta, A, B, C, None, "zoh")
    for chunk_size in (None, 2):
        y2 = mamba.selective_scan_as_linear_attention(x, delta, A, B, C, None, "zoh",
                                                      chunk_size=chunk_size)  # fmt: skip
        assert torch.isfinite(y2).all()
        torch.testing.assert_close(y2, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CAUSAL + ["causal_linear_attention_step"])
def test_causal_forms_refuse_negative_normalizers(name):
    fn = getattr(causal, name)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 6, 3, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(1, 2, 6, 4, generator=g, dtype=torch.float64)
    if name.endswith("_step"):
        state = (
            torch.zeros(1, 2, 3, 4, dtype=torch.float64),
            torch.zeros(1, 2, 3, dtype=torch.float64),
        )
        args = (q[:, :, 0], -q[:, :, 0], v[:, :, 0], state)  # q_t . z_t = -|q_t|^2
    else:
        args = (q, k, v)
    with pytest.raises(ValueError, match="normalizer.*negative"):
        fn(*args)
    if name.endswith("_step"):
        args = (*args[:3], state[0])
    fn(*args, normalize=False)  # without the normalizer raw q, k are fine


@pytest.mark.parametrize("name", GATED)
def test_gated_forms_refuse_negative_normalizers(name):
    fn = getattr(gated, name)
    q, k = (
        torch.randn(1, 1, 6, 3, dtype=torch.float64),
        torch.randn(1, 1, 6, 3, dtype=torch.float64),
    )
    q[0, 0, 0] = -k[0, 0, 0].sign()  # the first token's normalizer q_0 . k_0 < 0
    v, g = torch.randn(1, 1, 6, 2, dtype=torch.float64), -torch.rand(1, 1, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="normalizer.*negative"):
        fn(q, k, v, g, normalize=True)


def test_favor_features_of_large_inputs():
    """Inputs of magnitude ~100: the exact features underflow to 0 in float64 (the exponent
    x'W - |x'|^2/2 is about -20000), which is reported; stabilize='query' / 'key' subtracts a
    constant per row / per sequence that cancels in normalized attention, so the features are not
    all zero and give the attention that small inputs scaled the same way give."""
    D, M = 16, 64
    W = featuremaps.draw_random_projection(D, M, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    q = 100 * torch.randn(1, 1, 5, D, generator=g, dtype=torch.float64)
    k = 100 * torch.randn(1, 1, 7, D, generator=g, dtype=torch.float64)
    v = torch.randn(1, 1, 7, 3, generator=g, dtype=torch.float64)
    with pytest.raises(ValueError, match="underflow.*stabilize"):
        featuremaps.positive_random_features(q, W)
    pq = featuremaps.positive_random_features(q, W, stabilize="query")
    pk = featuremaps.positive_random_features(k, W, stabilize="key")
    assert (pq.amax(-1) > 0).all() and pk.amax() > 0
    assert torch.isfinite(pq).all() and torch.isfinite(pk).all()
    # normalized attention is unchanged by the constants: compare with moderate inputs
    q1, k1 = q / 40, k / 40
    phi = featuremaps.positive_random_features
    exact = linear.linear_attention(phi(q1, W), phi(k1, W), v, eps=0.0)
    stable = linear.linear_attention(phi(q1, W, "query"), phi(k1, W, "key"), v, eps=0.0)
    torch.testing.assert_close(stable, exact, rtol=1e-6, atol=1e-9)
    # float32 overflow (x'W large, |x'|^2 moderate) is reported, not returned as inf
    x = torch.ones(1, D)  # x' = x / 2, |x'|^2 / 2 = 2
    Wp = torch.full((D, M), 20.0)  # x'W = 160 > log(float32 max) = 88.7
    with pytest.raises(ValueError, match="overflow.*stabilize"):
        featuremaps.positive_random_features(x, Wp)
    with pytest.raises(ValueError, match="stabilize"):
        featuremaps.positive_random_features(q, W, stabilize="row")


class _Mod:
    def __init__(self, make, x_shape, label):
        self.make, self.x_shape, self.label = make, x_shape, label


MODULES = [
    _Mod(
        lambda n_heads=2, d=8: gated.GatedLinearAttention(d, n_heads),
        (2, 5, 8),
        "GatedLinearAttention",
    ),
    _Mod(lambda n_heads=1, d=8: mamba.MambaMixer(d, n_heads, d_state=4), (2, 5, 8), "MambaMixer"),
    _Mod(
        lambda n_heads=2, d=8: mlla.MLLALinearAttention(d, 2, 3, n_heads),
        (2, 6, 8),
        "MLLALinearAttention",
    ),
    _Mod(lambda n_heads=2, d=8: mlla.MLLABlock(d, 2, 3, n_heads), (2, 6, 8), "MLLABlock"),
]


@pytest.mark.parametrize("m", MODULES, ids=[m.label for m in MODULES])
def test_modules_check_their_input(m):
    with pytest.raises(ValueError, match="n_heads"):
        m.make(n_heads=0)
    if m.label != "MambaMixer":
        with pytest.raises(ValueError, match="n_heads"):
            m.make(n_heads=3)  # 8 channels do not split into 3 heads
    layer = m.make()
    x = torch.randn(*m.x_shape)
    assert layer(x).shape == x.shape
    for bad, needles in ((x[0], ("x", "dimensions")),
                         (torch.randn(*m.x_shape[:2], 6), ("x", "8", "6")),
                         (x.double(), ("x", "float64", "float32")),
                         (x.long(), ("x", "int64"))):  # fmt: skip
        with pytest.raises((ValueError, TypeError)) as info:
            layer(bad)
        for needle in needles:
            assert needle in str(info.value), str(info.value)
    if m.label in ("GatedLinearAttention", "MambaMixer"):  # sequences: T = 0 is empty
        assert layer(x[:, :0]).shape == (m.x_shape[0], 0, m.x_shape[2])
    else:  # images: the grid fixes the token count
        with pytest.raises(ValueError, match="x"):
            layer(x[:, :0])
