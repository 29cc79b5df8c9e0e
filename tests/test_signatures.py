"""All forms of one mechanism share one signature and one set of defaults: each form takes its
reference's parameters in the same order, of the same kind, with the same defaults. The few
differences are listed here, each with its reason; a difference not listed fails, and so does a
listed one that is no longer there."""

import inspect

import pytest

import lintutor.kernels as K
from lintutor import causal, efficientvit, gated, linear, linearized, mamba, mlla, softmax

# mechanism: (the reference, the other forms)
MECHANISMS = {
    "softmax attention": (softmax.softmax_attention_loops, [softmax.softmax_attention]),
    "non-causal linear attention": (
        linear.linear_attention,
        [linear.linear_attention_quadratic, K.linear_attention_triton],
    ),
    "causal linear attention": (
        causal.causal_linear_attention_recurrent,
        [
            causal.causal_linear_attention_parallel,
            causal.causal_linear_attention_chunked,
            K.causal_linear_attention_triton,
        ],
    ),
    "causal decode step": (
        causal.causal_linear_attention_step,
        [K.causal_linear_attention_step_triton],
    ),
    "gated linear attention": (
        gated.gated_linear_attention_recurrent,
        [
            gated.gated_linear_attention_parallel,
            gated.gated_linear_attention_chunked,
            K.gated_linear_attention_triton,
        ],
    ),
    "gated decode step": (
        gated.gated_linear_attention_step,
        [K.gated_linear_attention_step_triton],
    ),
    "selective scan": (mamba.selective_scan_recurrent, [mamba.selective_scan_as_linear_attention]),
    "MLLA attention": (mlla.mlla_attention, [mlla.mlla_attention_quadratic]),
    "grouped linear attention": (
        linearized.grouped_linear_attention_recurrent,
        [linearized.grouped_linear_attention_parallel],
    ),
    "ReLU linear attention (EfficientViT)": (
        efficientvit.relu_linear_attention,
        [
            efficientvit.relu_linear_attention_quadratic,
            efficientvit.relu_linear_attention_auto,
        ],
    ),
}

# (form, parameter): why it may differ from the reference (extra, or another default)
ALLOWED = {
    ("causal_linear_attention_chunked", "chunk_size"): "the chunked form's own schedule knob "
    "(default 64); the result does not depend on it",
    ("causal_linear_attention_triton", "chunk_size"): "default None picks the kernel's tuned "
    "chunk (64); only 16, 32, 64 and 128 fit its tiles",
    ("causal_linear_attention_triton", "backward"): "which backward kernel runs (a speed "
    "choice); every version gives the same gradients",
    ("causal_linear_attention_step_triton", "out_state"): "in-place state update for serving "
    "loops and CUDA graphs; no effect on the numbers",
    ("gated_linear_attention_chunked", "chunk_size"): "the chunked form's own schedule knob",
    ("gated_linear_attention_triton", "chunk_size"): "as causal_linear_attention_triton's: None "
    "picks the kernel's tuned chunk; only 16, 32, 64 and 128 fit its tiles",
    ("gated_linear_attention_triton", "backward"): "which backward kernel runs, as in "
    "causal_linear_attention_triton; every version gives the same gradients",
    ("gated_linear_attention_step_triton", "out_state"): "in-place state update, as in "
    "causal_linear_attention_step_triton; no effect on the numbers",
    ("selective_scan_as_linear_attention", "chunk_size"): "None: the masked form; an int: the "
    "chunked form of the same computation",
}

# between mechanisms: the gated forms are lesson 03's forms plus the log-gates g
GATED_VS_CAUSAL = {
    "g": "the log-gates, the one new input of lesson 04",
    "normalize": "default False: RetNet, GLA and Mamba have no normalizer (the decay keeps the "
    "state bounded); lesson 03's forms normalize by default",
}


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _differences(reference, form):
    """(extra, changed, missing): parameters of `form` that the reference lacks, shared ones
    of another kind or default, and the reference's that `form` lacks (or "(order)")."""
    ref = {p[0]: p for p in _params(reference)}
    got = _params(form)
    shared = [p for p in got if p[0] in ref]
    missing = [name for name in ref if name not in {p[0] for p in shared}]
    if not missing and [p[0] for p in shared] != list(ref):
        missing = ["(order)"]
    extra = [p[0] for p in got if p[0] not in ref]
    changed = [p[0] for p in shared if p != ref[p[0]]]
    return extra, changed, missing


FORMS = [(m, form) for m, (_, forms) in MECHANISMS.items() for form in forms]


@pytest.mark.parametrize("mechanism,form", FORMS, ids=[f.__name__ for _, f in FORMS])
def test_form_has_the_reference_signature_and_defaults(mechanism, form):
    reference = MECHANISMS[mechanism][0]
    extra, changed, missing = _differences(reference, form)
    assert not missing, f"{form.__name__} lacks or reorders {missing} of {reference.__name__}"
    for name in extra + changed:
        assert (form.__name__, name) in ALLOWED, (
            f"{form.__name__}: parameter {name!r} differs from {reference.__name__} "
            f"{inspect.signature(reference)}; make it the same or list it in ALLOWED with why"
        )


def test_every_listed_difference_is_real():
    forms = {f.__name__: (m, f) for m, f in FORMS}
    for (name, param), why in ALLOWED.items():
        assert why.strip(), (name, param)
        mechanism, form = forms[name]
        extra, changed, _ = _differences(MECHANISMS[mechanism][0], form)
        assert param in extra + changed, f"{name}.{param} is listed but not different any more"


@pytest.mark.parametrize(
    "gated_form,causal_form",
    [
        (gated.gated_linear_attention_recurrent, causal.causal_linear_attention_recurrent),
        (gated.gated_linear_attention_parallel, causal.causal_linear_attention_parallel),
        (gated.gated_linear_attention_chunked, causal.causal_linear_attention_chunked),
        (gated.gated_linear_attention_step, causal.causal_linear_attention_step),
    ],
    ids=["recurrent", "parallel", "chunked", "step"],
)
def test_gated_forms_are_the_causal_forms_plus_log_gates(gated_form, causal_form):
    got = {p[0]: p for p in _params(gated_form)}
    ref = {p[0]: p for p in _params(causal_form)}
    renamed = {"g_t": "g"}  # the step takes one step's gate
    differ = {renamed.get(n, n) for n in got if n not in ref or got[n] != ref[n]}
    assert differ == set(GATED_VS_CAUSAL), differ
    order = [n for n in got if n not in ("g", "g_t")]
    assert order == list(ref), f"{gated_form.__name__}: {order} != {list(ref)}"


def test_grouped_step_takes_the_grouped_forms_options_and_defaults():
    """The decode step replaces (q, k, v, initial_state, output_final_state) by one token's
    (q_t, k_t, v_t) and the state it carries; every option keeps the other forms' default."""
    step = _params(linearized.grouped_linear_attention_step)
    full = _params(linearized.grouped_linear_attention_recurrent)
    per_call = {"q", "k", "v", "initial_state", "output_final_state"}
    assert [p[0] for p in step[:4]] == ["q_t", "k_t", "v_t", "state"], step
    assert step[4:] == [p for p in full if p[0] not in per_call], (step, full)
