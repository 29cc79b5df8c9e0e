"""The checker's cases catch the classes of wrong answers that used to pass (issue 13), on every
exercise of lessons 01-09 where the class applies:

- final states compared (cases with output_final_state=True, nested (o, (S, z)) results);
- sequences past any plausible fixed size (T >= 300; lesson 08: past a 128-token tile, in the
  interpreter);
- eps varied, with normalizers small enough that a missing or misplaced eps changes the answer;
- every rank an argument is documented to take ("(..., T)", "any shape");
- random sizes with D > 1 that vary (lesson 08: not always 16);
- a second call with the same shapes and other values (memoized or global-state answers);
- float32 inside (cast back to float64) fails on every seed: tolerances are tight where the
  reference is float64 (lesson 08, whose reference is an fp32 kernel: float16 inside fails).

Each new wrong implementation in the lessons' libraries is caught only by its class of cases,
even at the old tolerance (so it passed the checker before the class was added), and the answers
that cannot be named as a known mistake (global state kept between calls, inputs modified in
place inside a state tuple) are rejected too.

Lessons 06, 07 and 09: the reference passes 50 seeds and every named case; float32 inside fails
on every seed (07.4 excepted: its results are integers that float32 logits cannot change, which a
test shows); every known mistake is wrong on some named case, at least 6 of them per exercise
(06.2 excepted: its mistakes are forms with the same numbers, caught by its watched products).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from lintutor.course.exercises import _mistakes, all_exercises, lesson06, run_check

MINE = ["01.1", "01.2", "01.3", "02.1", "02.2", "02.3", "03.1", "03.2", "03.3", "03.4",
        "04.1", "04.2", "04.3", "04.4", "05.1", "05.2", "05.3", "08.1", "08.2", "08.3"]  # fmt: skip
LATER = ["06.1", "06.2", "06.3", "07.1", "07.2", "07.3", "07.4", "09.1", "09.2", "09.3", "09.4"]
MINE += LATER
ALL = all_exercises()
EXERCISES = [ALL[i] for i in MINE]
# 07.4's results are integers (accept lengths, token ids): float32 cannot change them, see
# test_07_4_float32_inside_cannot_change_its_integer_results
FLOAT64 = [ex for ex in EXERCISES if ex.lesson != "08" and ex.id != "07.4"]


def _named(ex):
    """(label, sizes, inputs) of the named cases, as the checker draws them."""
    return [(label, sizes, ex.make_inputs(dict(sizes), _gen(1000 + i)))
            for i, (label, sizes) in enumerate(ex.named_sizes)]  # fmt: skip


_WANT: dict = {}


def _named_with_reference(ex):
    """(label, inputs, reference output) of the named cases, computed once per exercise."""
    if ex.id not in _WANT:
        _WANT[ex.id] = [(label, inputs, ex.reference(**inputs)) for label, _, inputs in _named(ex)]
    return _WANT[ex.id]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _leaves(x):
    if isinstance(x, (tuple, list)):
        return [y for part in x for y in _leaves(part)]
    return [x]


def _close(a, b, rtol, atol):
    a, b = _leaves(a), _leaves(b)
    return len(a) == len(b) and all(
        x.shape == y.shape and torch.allclose(x.double(), y.double(), rtol=rtol, atol=atol)
        for x, y in zip(a, b)
    )


def _params(ex):
    return inspect.signature(ex.reference).parameters


# ---------------------------------------------------------------------------------------------
# the case classes are there


def _lengths(sizes):
    return [sizes[k] for k in ("T", "S") if k in sizes]


@pytest.mark.parametrize("ex", EXERCISES, ids=MINE)
def test_a_case_repeats_shapes_with_other_values(ex):
    named = _named(ex)
    seen = {}
    for label, _, inputs in named:
        key = _mistakes._key(tuple(sorted(inputs.items())))  # shapes and options
        if key in seen:
            first = seen[key]
            differ = [k for k, x in inputs.items() if isinstance(x, torch.Tensor)
                      and not torch.equal(x, first[k])]  # fmt: skip
            assert differ, f"{ex.id}: '{label}' repeats the sizes and the values"
            return
        seen[key] = inputs
    raise AssertionError(f"{ex.id}: no named case repeats an earlier case's sizes")


# 02.1 is elementwise (its T is just a size; one case has 1000 entries); 03.4, 08.3, 07.3 and 09.1
# are one step (07.3's long context is n = 400 tokens already in its state); 06.3 is an image;
# 09.3 is one chunk (64 tokens, the full chunk); 07.4's block of 300 drafts is its k; 06.2 picks a
# form from T and D, and every T past D is the linear form, which 06.1 checks at T = 301
NOT_A_SEQUENCE = ("02.1", "03.4", "08.3", "07.3", "09.1", "06.3", "09.3", "07.4", "06.2")
LONG = [ex for ex in EXERCISES if ex.id not in NOT_A_SEQUENCE]


@pytest.mark.parametrize("ex", LONG, ids=[e.id for e in LONG])
def test_a_sequence_goes_past_any_fixed_size(ex):
    longest = max(max(_lengths(s) or [0]) for _, s in ex.named_sizes)
    if ex.lesson == "08":  # the interpreter is slow: past a 128-token tile, 10 of the 16-token ones
        assert longest > 128, f"{ex.id}: longest T is {longest}"
    else:
        assert longest >= 300, f"{ex.id}: longest sequence is {longest}"


# the exercises whose function takes output_final_state (04.1 and 04.3 ask for (q, k, v, g) only,
# 05.1 for no initial state; the decode steps 03.4 and 08.3 always return their state)
FINAL = [ALL[i] for i in ("03.1", "03.2", "03.3", "04.4")]


@pytest.mark.parametrize("ex", FINAL, ids=[e.id for e in FINAL])
def test_final_states_are_compared(ex):
    kinds, normalized = set(), False
    default = _params(ex)["normalize"].default
    for label, _sizes, inputs in _named(ex):
        normalized |= bool(inputs.get("normalize", default))
        if inputs.get("output_final_state"):
            out = ex.reference(**inputs)
            assert isinstance(out, tuple) and len(out) == 2, label
            kinds.add("tuple" if isinstance(out[1], tuple) else "tensor")
    # S alone, and (S, z) too where the exercise normalizes (the gated chunked form does not)
    want = {"tuple", "tensor"} if normalized else {"tensor"}
    assert kinds == want, f"{ex.id}: final states compared: {kinds}"


# the exercises with a normalizer and its eps (03.4 is checked with normalize=False, as its lesson
# says; the gated forms of lesson 04 have no normalizer)
EPS = [ALL[i] for i in ("02.2", "03.1", "03.2", "03.3")]


@pytest.mark.parametrize("ex", EPS, ids=[e.id for e in EPS])
def test_eps_is_varied_and_matters(ex):
    values, matters = set(), []
    for label, _sizes, inputs in _named(ex):
        values.add(inputs.get("eps", _params(ex)["eps"].default))
        if inputs["normalize"] and inputs.get("eps", 0):
            without = ex.reference(**{**inputs, "eps": 0.0})
            if not _close(ex.reference(**inputs), without, 1e-3, 0):
                matters.append(label)
    for seed in range(20):
        values.add(ex.random_sizes(_gen(seed)).get("eps"))
    assert len(values - {None}) >= 3, f"{ex.id}: eps values {values}"
    assert matters, f"{ex.id}: no case where eps changes the answer by more than 1e-3"


ANY_RANK = {"02.1": "x", "02.3": "x", "04.2": "g"}  # documented as any shape, (..., D), (..., T)


@pytest.mark.parametrize("exercise_id", list(ANY_RANK))
def test_every_documented_rank_is_checked(exercise_id):
    ex, arg = ALL[exercise_id], ANY_RANK[exercise_id]
    ranks = {inputs[arg].dim() for _, _, inputs in _named(ex)}
    assert len(ranks) >= 4, f"{ex.id}: {arg} only has ranks {ranks}"


def _widths(ex):
    keys = [k for k in ("D", "N", "M") if k in ex.named_sizes[0][1]]
    return {k: {ex.random_sizes(_gen(seed))[k] for seed in range(50)} for k in keys}


@pytest.mark.parametrize("ex", EXERCISES, ids=MINE)
def test_random_widths_vary_and_exceed_one(ex):
    for key, seen in _widths(ex).items():
        assert len(seen) >= 3 and max(seen) > 1, f"{ex.id}: random {key} takes only {seen}"
        if ex.lesson == "08":
            assert any(d % 16 for d in seen) and max(seen) > 16, f"{ex.id}: {key} in {seen}"


# ---------------------------------------------------------------------------------------------
# lower precision inside fails on every seed


def _cast(x, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    if isinstance(x, (tuple, list)):
        return type(x)(_cast(y, dtype) for y in x)
    if isinstance(x, dict):
        return {k: _cast(y, dtype) for k, y in x.items()}
    return x


def _float32_inside(ex):
    def fn(**kwargs):
        return _cast(ex.reference(**_cast(kwargs, torch.float32)), torch.float64)

    return fn


@pytest.mark.parametrize("ex", FLOAT64, ids=[e.id for e in FLOAT64])
def test_float32_inside_fails_on_every_seed(ex):
    assert ex.rtol <= 1e-9, f"{ex.id}: rtol {ex.rtol} lets float32 answers through"
    fp32 = _float32_inside(ex)
    for seed in range(50):
        g = _gen(seed)
        inputs = ex.make_inputs(dict(ex.random_sizes(g)), g)
        want, got = ex.reference(**inputs), fp32(**inputs)
        assert not _close(got, want, ex.rtol, ex.atol), f"{ex.id}: float32 passes seed {seed}"
    result = run_check(ex, fp32)
    assert result.status == "fail" and result.layer == "numbers", result.text()


def test_07_4_float32_inside_cannot_change_its_integer_results():
    """07.4 returns integers (how many drafts are accepted, the next token) decided by argmax
    and ==: float32 logits change them only where two logits of one position lie within float32
    rounding (~6e-8 of their size) of each other, and the case logits are normal draws whose top
    two are further apart on every seed. So a float32 answer is right there, and rtol does not
    matter to 07.4."""
    ex = ALL["07.4"]
    fp32 = _float32_inside(ex)
    for seed in range(50):
        g = _gen(seed)
        inputs = ex.make_inputs(dict(ex.random_sizes(g)), g)
        want = ex.reference(**inputs)
        assert all(not x.is_floating_point() for x in _leaves(want)), seed
        top = inputs["logits"].topk(2, dim=-1).values  # (B, k + 1, 2)
        gap = (top[..., 0] - top[..., 1]) / top[..., 0].abs().clamp_min(1.0)
        assert float(gap.min()) > 1e-6, f"seed {seed}: a near tie, float32 could break it"
        assert _close(fp32(**inputs), want, 0.0, 0.0), seed


# lesson 08's reference is an fp32 kernel (checked at rtol 1e-4): float16 inside must fail. The
# float64 forms of lesson 03 stand in for the kernels here (they agree to ~1e-6).
def _stand_in(exercise_id):
    from lintutor import causal

    return {
        "08.1": lambda q, k, v: q @ (k.transpose(-1, -2) @ v),
        "08.2": lambda q, k, v: causal.causal_linear_attention_parallel(q, k, v, normalize=False),
        "08.3": lambda q_t, k_t, v_t, state: causal.causal_linear_attention_step(
            q_t, k_t, v_t, state, normalize=False
        ),
    }[exercise_id]


@pytest.mark.parametrize("exercise_id", ["08.1", "08.2", "08.3"])
def test_float16_inside_fails_on_every_seed_of_lesson_08(exercise_id):
    ex, ref = ALL[exercise_id], _stand_in(exercise_id)
    for seed in range(50):
        g = _gen(seed)
        inputs = ex.make_inputs(dict(ex.random_sizes(g)), g)
        half = {k: x.half().double() for k, x in inputs.items()}
        assert not _close(ref(**half), ref(**inputs), ex.rtol, ex.atol), seed


# ---------------------------------------------------------------------------------------------
# each new known mistake is caught by its class of cases only


CLASSES = {
    "max": ("scores ~",),
    "long": ("333", "320", "300", "150", "long T"),
    "again": ("again",),
    "eps": ("eps",),
    "final": ("final", "eps = 1e-2, final"),
    "rank": ("0-d", "1-d", "2-d", "5-d", "(T,)", "(H, T)", "(B, H, D, T)", "(D,)", "(T, D)",
             "(B, T, D)"),
    "channels": ("past 16", "not powers of two", "D != E", "150"),
}  # fmt: skip
NEW = {
    "01.1": {"_one_no_max_shift": "max", "_one_first_256_keys": "long", "_one_memo": "again"},
    "01.2": {"_full_no_max_shift": "max", "_full_mask_buffer": "long", "_full_memo": "again"},
    "01.3": {"_mha_mask_buffer": "long", "_mha_memo": "again"},
    "02.1": {"_elu_assumes_4d": "rank", "_elu_memo": "again"},
    "02.2": {"_la_no_eps": "eps", "_la_eps_fixed": "eps", "_la_eps_on_keys": "eps",
             "_la_memo": "again"},
    "02.3": {"_rf_assumes_4d": "rank", "_rf_memo": "again"},
    "03.1": {"_rec_no_eps": "eps", "_rec_final_without_z": "final",
             "_rec_final_misses_last_token": "final", "_rec_output_buffer": "long"},
    "03.2": {"_par_no_eps": "eps", "_par_final_z_without_z0": "final", "_par_mask_buffer": "long",
             "_par_memo": "again"},
    "03.3": {"_chunk_no_eps": "eps", "_chunk_final_misses_last_chunk": "final",
             "_chunk_memo": "again"},
    "03.4": {"_step_memo": "again"},
    "04.1": {"_rec_output_buffer": "long", "_rec_memo": "again"},
    "04.2": {"_mask_assumes_3d": "rank", "_mask_buffer": "long", "_mask_memo": "again"},
    "04.3": {"_par_mask_buffer": "long", "_par_memo": "again"},
    "04.4": {"_chk_memo": "again"},
    "05.1": {"_scan_output_buffer": "long", "_scan_memo": "again"},
    "05.2": {"_map_memo": "again"},
    "05.3": {"_attn_mask_buffer": "long", "_attn_memo": "again"},
    "08.1": {"_nc_one_tile": "long", "_nc_16_channels": "channels", "_nc_memo": "again"},
    "08.2": {"_ch_one_tile": "long", "_ch_16_channels": "channels", "_ch_memo": "again"},
    "08.3": {"_step_16_channels": "channels", "_step_memo": "again"},
}  # fmt: skip
NEW_CASES = [(i, name) for i, names in NEW.items() for name in names]


def _caught_by(ex, fn):
    """The labels of the named cases (in order, as the checker runs them) where fn is wrong by
    more than the tolerance the checker had before (rtol 1e-6, atol 1e-8): the cases that catch
    it whatever the tolerance."""
    _mistakes._CACHE.clear()
    rtol, atol = max(ex.rtol, 1e-6), max(ex.atol, 1e-8)
    caught = []
    for label, inputs, want in _named_with_reference(ex):
        try:
            got = fn(**inputs)
        except Exception:  # a fixed-size buffer too small for this T
            caught.append(label)
            continue
        if not _close(got, want, rtol, atol):
            caught.append(label)
    return caught


@pytest.mark.parametrize("exercise_id,name", NEW_CASES, ids=[f"{i}-{n}" for i, n in NEW_CASES])
def test_new_mistake_is_caught_only_by_its_class_of_cases(exercise_id, name):
    ex = ALL[exercise_id]
    fn = next(f for f in ex.wrong if f.__name__ == name)
    markers = CLASSES[NEW[exercise_id][name]]
    caught = _caught_by(ex, fn)
    assert caught, f"{exercise_id}: {name} passes every named case"
    others = [label for label in caught if not any(m in label for m in markers)]
    assert not others, f"{exercise_id}: {name} is caught by {others}, not only by {markers}"


# ---------------------------------------------------------------------------------------------
# answers that no known mistake names: global state between calls, inputs changed in place

_GLOBAL: dict = {}


def _rec_global_state(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                      eps=1e-6):  # fmt: skip
    """keeps (S, z) in a global, reset only when the shapes change"""
    from lintutor.causal import causal_linear_attention_recurrent as ref

    key = ("03.1", q.shape, v.shape, normalize)
    if key not in _GLOBAL:
        _GLOBAL[key] = initial_state
    out = ref(q, k, v, normalize, _GLOBAL[key], True, eps)
    _GLOBAL[key] = out[1]  # the next call continues from here
    return out if output_final_state else out[0]


def _step_global_state(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    """keeps the decode state in a global, initialised from the first call's state"""
    key = ("03.4", q_t.shape, v_t.shape)
    S = _GLOBAL.get(key, state) + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    _GLOBAL[key] = S
    return torch.einsum("bhd,bhde->bhe", q_t, S), S.clone()


def _la_global_key_sum(q, k, v, normalize=True, eps=1e-6):
    """sums the keys once, into a global, the first time these shapes are seen"""
    key = ("02.2", k.shape)
    z = _GLOBAL.setdefault(key, k.sum(2, keepdim=True))
    out = q @ (k.transpose(-1, -2) @ v)
    return out / ((q * z).sum(-1, keepdim=True) + eps) if normalize else out


def _rec_z0_in_place(q, k, v, normalize=True, initial_state=None, output_final_state=False,
                     eps=1e-6):  # fmt: skip
    """adds k_t into the given z_0 in place (z += k_t on initial_state[1])"""
    from lintutor.causal import causal_linear_attention_recurrent as ref

    out = ref(q, k, v, normalize, initial_state, output_final_state, eps)
    if normalize and initial_state is not None:
        initial_state[1].add_(k.sum(2))
    return out


def _step_state_in_place(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    """updates the given state in place (state += k_t v_t^T) and returns it"""
    state.add_(k_t.unsqueeze(-1) * v_t.unsqueeze(-2))
    return torch.einsum("bhd,bhde->bhe", q_t, state), state


def _chk_initial_state_in_place(q, k, v, g, initial_state=None, output_final_state=False,
                                chunk_size=64):  # fmt: skip
    """decays the given initial state in place"""
    from lintutor.gated import gated_linear_attention_chunked as ref

    out = ref(q, k, v, g, False, initial_state, output_final_state, chunk_size=chunk_size)
    if initial_state is not None:
        initial_state.mul_(0.5)
    return out


UNNAMED = [
    ("03.1", _rec_global_state, "numbers"),
    ("03.4", _step_global_state, "numbers"),
    ("02.2", _la_global_key_sum, "numbers"),
    ("03.1", _rec_z0_in_place, "in-place"),
    ("03.4", _step_state_in_place, "in-place"),
    ("04.4", _chk_initial_state_in_place, "in-place"),
]


@pytest.mark.parametrize("exercise_id,fn,layer", UNNAMED,
                         ids=[f"{i}-{f.__name__}" for i, f, _ in UNNAMED])  # fmt: skip
def test_stateful_and_in_place_answers_are_rejected(exercise_id, fn, layer):
    _GLOBAL.clear()
    result = run_check(ALL[exercise_id], fn)
    assert result.status == "fail" and result.layer == layer, result.text()
    if layer == "in-place":
        assert "in place" in result.message, result.message


# ---------------------------------------------------------------------------------------------
# lessons 06, 07 and 09: the reference passes, the library is of real mistakes

LATER_EX = [ALL[i] for i in LATER]


@pytest.mark.parametrize("ex", LATER_EX, ids=LATER)
def test_reference_passes_50_seeds_and_every_named_case(ex):
    result = run_check(ex, ex.reference, seeds=range(50))
    assert result.passed, result.text()
    assert result.details["cases"] == len(ex.named_sizes) + 50


def _wrong_somewhere(ex, fn) -> bool:
    """Whether fn is off by more than the exercise's tolerance (or raises, as padding=1 does on a
    5x5 kernel) on some named case, run in the checker's order (a memoized answer is wrong on
    the repeated shapes)."""
    lesson06._LA_CACHE.clear()
    for _label, inputs, want in _named_with_reference(ex):
        try:
            got = fn(**inputs)
        except Exception:
            return True
        if not _close(got, want, ex.rtol, ex.atol):
            return True
    return False


# 06.2's mistakes choose the wrong form, whose numbers agree with the right one to rounding: its
# watched products catch them (tests/course/test_lesson06_exercises.py)
REAL = [ex for ex in LATER_EX if ex.id != "06.2"]


@pytest.mark.parametrize("ex", REAL, ids=[e.id for e in REAL])
def test_every_known_mistake_is_wrong_on_some_named_case(ex):
    right = [fn.__name__ for fn in ex.wrong if not _wrong_somewhere(ex, fn)]
    assert not right, f"{ex.id}: {right} give the reference's numbers on every named case"
    assert len(ex.wrong) >= 6, f"{ex.id}: {len(ex.wrong)} known mistakes"


def test_06_2_form_mistakes_are_rejected_as_the_wrong_form():
    ex = ALL["06.2"]
    assert len(ex.wrong) >= 6
    for fn in ex.wrong:
        lesson06._SW_FORM.clear()
        result = run_check(ex, fn)
        assert result.status == "fail" and "FormError" in result.message, result.text()
