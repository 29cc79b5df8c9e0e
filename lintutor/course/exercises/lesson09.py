"""Lesson 09 exercises: one delta-rule step, the recurrent delta rule, the UT transform of a
chunk, the gated delta rule in chunks."""

from __future__ import annotations

import torch

from lintutor import delta as ref
from lintutor import delta_gated as ref_gated
from lintutor.course.checker import Exercise, between, cases, normal, uniform
from lintutor.course.exercises._mistakes import TIGHT
from lintutor.gated import segment_sum


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def _keys(g, shape, raw):
    """Unit keys, as the mixer's L2 norm makes them; raw=True: keys of any length."""
    k = normal(g, *shape)
    return 1.5 * k if raw else _unit(k)


def _beta(g, shape, s):
    b = s.get("beta")
    return (
        torch.full(shape, float(b), dtype=torch.float64)
        if b is not None
        else 2 * uniform(g, *shape)
    )  # in (0, 2): I - beta k k^T stays a contraction


def _outer(k_t, x):
    return k_t.unsqueeze(-1) * x.unsqueeze(-2)  # (B, H, D, E)


def _read(x_t, S):
    return torch.einsum("bhd,bhde->bhe", x_t, S)  # S^T x_t, (B, H, E)


# --- 09.1 one delta-rule step -----------------------------------------------------------------


def _step_inputs(s, g):
    B, H, D, E = s["B"], s["H"], s["D"], s["E"]
    return {
        "q_t": normal(g, B, H, D),
        "k_t": _keys(g, (B, H, D), s.get("raw_keys", False)),
        "v_t": normal(g, B, H, E),
        "beta_t": _beta(g, (B, H), s),
        "state": normal(g, B, H, D, E) * s.get("state_scale", 1.0),
        "scale": s.get("scale", 1.0),
    }


STEP_SIZES = cases(
    "B H D E",
    ("one head, D = E", 1, 1, 4, 4),
    ("B, H > 1, D != E", 2, 3, 5, 2),
    ("same shapes, other values", 2, 3, 5, 2),
) + cases(
    "B H D E scale beta",
    ("scale 0.5, beta = 1", 2, 2, 3, 4, 0.5, 1.0),
    ("beta = 0 changes nothing", 1, 2, 4, 3, 1.0, 0.0),
    ("beta = 1.9", 1, 1, 6, 6, 1.0, 1.9),
) + cases(
    "B H D E raw_keys state_scale",
    ("keys not of unit length", 2, 1, 4, 5, True, 1.0),
    ("empty memory", 1, 2, 3, 3, False, 0.0),
)  # fmt: skip
STEP_RANDOM = between(B=(1, 3), H=(1, 3), D=(1, 8), E=(1, 8), scale=1.0)


def _step(q_t, k_t, v_t, beta_t, state, scale, update, read_old=False):
    b = beta_t[..., None, None]
    new = update(state, k_t, v_t, b, q_t)
    return scale * _read(q_t, state if read_old else new), new


def _st_additive(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """nothing is erased: this is linear attention's write S + beta k v^T; the delta rule
    writes the error, S + beta k (v - S^T k)^T"""
    return _step(q_t, k_t, v_t, beta_t, state, scale, lambda S, k, v, b, q: S + b * _outer(k, v))


def _st_no_beta(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """beta is left out: the correction is scaled by beta_t, S + beta_t k (v - S^T k)^T"""
    return _step(q_t, k_t, v_t, beta_t, state, scale,
                 lambda S, k, v, b, q: S + _outer(k, v - _read(k, S)))  # fmt: skip


def _st_read_before(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """the output reads the state before the update; o_t = S_t^T q_t with the new state"""
    update = lambda S, k, v, b, q: S + b * _outer(k, v - _read(k, S))  # noqa: E731
    return _step(q_t, k_t, v_t, beta_t, state, scale, update, read_old=True)


def _st_sign(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """the error has the wrong sign: a gradient step subtracts the gradient k (S^T k - v)^T, so
    S + beta k (v - S^T k)^T"""
    return _step(q_t, k_t, v_t, beta_t, state, scale,
                 lambda S, k, v, b, q: S + b * _outer(k, _read(k, S) - v))  # fmt: skip


def _st_query_erase(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """the memory is asked with the query; the erase reads what S stores under the key, S^T k_t"""
    return _step(q_t, k_t, v_t, beta_t, state, scale,
                 lambda S, k, v, b, q: S + b * _outer(k, v - _read(q, S)))  # fmt: skip


def _st_no_scale(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """scale is ignored: o_t = scale * S_t^T q_t"""
    return _step(q_t, k_t, v_t, beta_t, state, 1.0,
                 lambda S, k, v, b, q: S + b * _outer(k, v - _read(k, S)))  # fmt: skip


def _st_beta_on_erase_only(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """beta scales the erase but not the write: (I - beta k k^T) S + beta k v^T has beta on
    both"""
    return _step(q_t, k_t, v_t, beta_t, state, scale,
                 lambda S, k, v, b, q: S - b * _outer(k, _read(k, S)) + _outer(k, v))  # fmt: skip


def _st_normalizes_keys(q_t, k_t, v_t, beta_t, state, scale=1.0):
    """the key is normalized inside the step: the step takes k_t as given (the mixer normalizes
    keys before the rule sees them)"""
    return _step(q_t, _unit(k_t), v_t, beta_t, state, scale,
                 lambda S, k, v, b, q: S + b * _outer(k, v - _read(k, S)))  # fmt: skip


EX_09_1 = Exercise(
    id="09.1",
    title="one step of the delta rule",
    reference=ref.delta_rule_step,
    make_inputs=_step_inputs,
    named_sizes=STEP_SIZES,
    random_sizes=STEP_RANDOM,
    output_names=("o_t", "new state"),
    hints=(
        "First ask the memory what it stores under the key, then write only the difference, "
        "scaled by beta; read the output from the new state.",
        "v_old = S^T k_t (contract D: einsum 'bhd,bhde->bhe'), S_new = S + beta_t k_t (v_t - "
        "v_old)^T as an outer product (B, H, D, E), o_t = scale * S_new^T q_t.",
        "v_old = torch.einsum('bhd,bhde->bhe', k_t, state); S = state + beta_t[..., None, None] "
        "* k_t[..., :, None] * (v_t - v_old)[..., None, :]; "
        "o_t = scale * torch.einsum('bhd,bhde->bhe', q_t, S); return o_t, S",
    ),
    wrong=[
        _st_additive,
        _st_no_beta,
        _st_read_before,
        _st_sign,
        _st_query_erase,
        _st_no_scale,
        _st_beta_on_erase_only,
        _st_normalizes_keys,
    ],  # fmt: skip
    **TIGHT,
    difficulty=1,
    minutes=10,
    objective="Write the delta rule's error-correcting update of a matrix memory and read from it.",
)


# --- 09.2 the recurrent delta rule ------------------------------------------------------------


def _seq_inputs(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    out = {
        "q": normal(g, B, H, T, D),
        "k": _keys(g, (B, H, T, D), s.get("raw_keys", False)),
        "v": normal(g, B, H, T, E),
        "beta": _beta(g, (B, H, T), s),
    }
    if s.get("gated"):
        out["g"] = -s.get("strength", 1.0) * uniform(g, B, H, T)  # log-gates <= 0
    out["initial_state"] = normal(g, B, H, D, E) if s["state"] else None
    out["output_final_state"] = True
    out["scale"] = s.get("scale", 1.0)
    if "C" in s:
        out["chunk_size"] = s["C"]
    return out


REC_SIZES = cases(
    "B H T D E state",
    ("T = 1", 1, 1, 1, 3, 3, False),
    ("odd T, D = E", 1, 2, 7, 4, 4, True),
    ("B, H > 1, D != E", 2, 3, 6, 5, 2, True),
    ("same shapes, other values", 2, 3, 6, 5, 2, True),
    ("no initial state", 2, 1, 9, 3, 4, False),
    ("long T", 1, 1, 300, 8, 8, True),
) + cases(
    "B H T D E state scale raw_keys",
    ("scale 0.3, keys not of unit length", 1, 2, 5, 3, 6, True, 0.3, True),
)  # fmt: skip
REC_RANDOM = between(B=(1, 3), H=(1, 3), T=(1, 40), D=(1, 6), E=(1, 6), state=bool)


def _rec(q, k, v, beta, initial_state, scale, *, additive=False, use_beta=True, read_old=False,
         keep_initial=True, write_then_erase=False, last_state=True, right=False,
         normalize=False):  # fmt: skip
    """The recurrence with one switch flipped, for the wrong implementations below."""
    B, H, T, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1])
    if initial_state is not None and keep_initial:
        S = initial_state
    k = _unit(k) if normalize else k
    outs = []
    for t in range(T):
        q_t, k_t, v_t = q[:, :, t], k[:, :, t], v[:, :, t]
        b = beta[:, :, t][..., None, None] if use_beta else 1.0
        S_old = S
        if additive:
            S = S + b * _outer(k_t, v_t)
        elif write_then_erase:
            S = S + b * _outer(k_t, v_t)
            S = S - b * _outer(k_t, _read(k_t, S))
        elif right:  # S (I - beta k k^T): the paper's (E, D) layout used on our (D, E) state
            eye = torch.eye(D, dtype=q.dtype)
            P = eye - b * k_t.unsqueeze(-1) * k_t.unsqueeze(-2)  # (B, H, D, D)
            S = S @ P + b * _outer(k_t, v_t)
        else:
            S = S + b * _outer(k_t, v_t - _read(k_t, S))
        if t == T - 1 and not last_state:
            S_final = S_old
        outs.append(scale * _read(q_t, S_old if read_old else S))
    o = torch.stack(outs, dim=2)
    return o, (S if last_state else S_final)


def _rc_additive(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
    """nothing is erased: S_t = S_{t-1} + beta k v^T is linear attention's write; the delta rule
    writes beta k (v - S_{t-1}^T k)^T"""
    return _rec(q, k, v, beta, initial_state, scale, additive=True)


def _rc_no_beta(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
    """beta is left out: each correction is scaled by beta_t"""
    return _rec(q, k, v, beta, initial_state, scale, use_beta=False)


def _rc_read_before(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
    """the output at t reads S_{t-1}; o_t = S_t^T q_t includes token t's own write"""
    return _rec(q, k, v, beta, initial_state, scale, read_old=True)


def _rc_ignores_initial_state(q, k, v, beta, initial_state=None, output_final_state=False,
                              scale=1.0):  # fmt: skip
    """initial_state is ignored: start from it, not from zeros"""
    return _rec(q, k, v, beta, initial_state, scale, keep_initial=False)


def _rc_write_then_erase(q, k, v, beta, initial_state=None, output_final_state=False,
                         scale=1.0):  # fmt: skip
    """the erase comes after the write, so it erases part of the new value too: compute
    v_old = S_{t-1}^T k_t before writing"""
    return _rec(q, k, v, beta, initial_state, scale, write_then_erase=True)


def _rc_final_state_early(q, k, v, beta, initial_state=None, output_final_state=False,
                          scale=1.0):  # fmt: skip
    """the final state is the one before the last token's update: return S_T"""
    return _rec(q, k, v, beta, initial_state, scale, last_state=False)


def _rc_right_multiply(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
    """S (I - beta k k^T) is the papers' form for a state of shape (E, D); with ours, (D, E),
    the transition multiplies from the left: (I - beta k k^T) S"""
    return _rec(q, k, v, beta, initial_state, scale, right=True)


def _rc_no_scale(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
    """scale is ignored: o_t = scale * S_t^T q_t"""
    return _rec(q, k, v, beta, initial_state, 1.0)


def _rc_normalizes_keys(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
    """the keys are normalized inside: the rule takes k as given (the mixer normalizes them)"""
    return _rec(q, k, v, beta, initial_state, scale, normalize=True)


EX_09_2 = Exercise(
    id="09.2",
    title="the delta rule, recurrent",
    form="recurrent",
    reference=ref.delta_rule_recurrent,
    make_inputs=_seq_inputs,
    named_sizes=REC_SIZES,
    random_sizes=REC_RANDOM,
    time_dim=2,
    output_names=("output", "final state"),
    hints=(
        "Your step from 09.1 in a loop over t, starting from initial_state (or zeros), returning "
        "(o, S_T) when output_final_state is True.",
        "S = initial_state or zeros (B, H, D, E); for each t: v_old = S^T k_t, S = S + beta_t "
        "k_t (v_t - v_old)^T, o_t = scale * S^T q_t; stack the o_t along dim 2.",
        "S = q.new_zeros(B, H, D, E) if initial_state is None else initial_state; for t in "
        "range(T): k_t = k[:, :, t]; v_old = torch.einsum('bhd,bhde->bhe', k_t, S); S = S + "
        "beta[:, :, t, None, None] * k_t[..., None] * (v[:, :, t] - v_old)[..., None, :]; ...",
    ),
    wrong=[
        _rc_additive,
        _rc_no_beta,
        _rc_read_before,
        _rc_ignores_initial_state,
        _rc_write_then_erase,
        _rc_final_state_early,
        _rc_right_multiply,
        _rc_no_scale,
        _rc_normalizes_keys,
    ],  # fmt: skip
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Run the delta rule over a sequence from an initial state and return the final one.",
)


# --- 09.3 the UT transform of a chunk ----------------------------------------------------------


def _ut_inputs(s, g):
    B, H, C, D, E = s["B"], s["H"], s["C"], s["D"], s["E"]
    k = _keys(g, (B, H, C, D), False)
    if s.get("same_keys"):
        k = k[:, :, :1].expand(B, H, C, D).contiguous()  # one key, C times
    return {"k": k, "v": normal(g, B, H, C, E), "beta": _beta(g, (B, H, C), s)}


UT_SIZES = cases(
    "B H C D E",
    ("C = 1", 1, 1, 1, 3, 3),
    ("odd C, D = E", 1, 1, 7, 4, 4),
    ("B, H > 1, D != E", 2, 3, 6, 5, 2),
    ("same shapes, other values", 2, 3, 6, 5, 2),
    ("a full chunk of 64", 1, 2, 64, 8, 8),
) + cases(
    "B H C D E same_keys beta",
    ("one key 64 times, beta = 1.9", 1, 1, 64, 4, 3, True, 1.9),
)  # fmt: skip
UT_RANDOM = between(B=(1, 2), H=(1, 3), C=(1, 40), D=(1, 8), E=(1, 8))


def _ut(k, v, beta, *, A_fn=None, inverse=None, rhs_beta=True):
    """w, u from a given A and inverse, for the wrong implementations below."""
    C = k.shape[-2]
    eye = torch.eye(C, dtype=k.dtype)
    A = A_fn(k, beta) if A_fn else ((beta.unsqueeze(-1) * k) @ k.transpose(-1, -2)).tril(-1)
    T = inverse(A) if inverse else torch.linalg.inv(eye + A)
    if rhs_beta:
        T = T * beta.unsqueeze(-2)  # T diag(beta)
    return T @ k, T @ v


def _kk(k):
    return k @ k.transpose(-1, -2)


def _ut_with_diagonal(k, v, beta):
    """the diagonal of beta K K^T is kept: A is strictly lower triangular, token t is corrected
    by the tokens before it, not by itself"""
    return _ut(k, v, beta, A_fn=lambda k, b: (b.unsqueeze(-1) * _kk(k)).tril())


def _ut_no_beta_in_A(k, v, beta):
    """A has no beta: A[t, s] = beta_t (k_t . k_s), the strength of token t's correction"""
    return _ut(k, v, beta, A_fn=lambda k, b: _kk(k).tril(-1))


def _ut_beta_on_columns(k, v, beta):
    """beta scales the columns of K K^T (beta_s); it belongs to the rows (beta_t): A = diag(beta)
    K K^T, strictly lower"""
    return _ut(k, v, beta, A_fn=lambda k, b: (_kk(k) * b.unsqueeze(-2)).tril(-1))


def _ut_minus(k, v, beta):
    """(I - A)^-1: the system is (I + A) w = diag(beta) k, because each correction subtracts
    what earlier tokens already wrote"""
    C = k.shape[-2]
    return _ut(k, v, beta, inverse=lambda A: torch.linalg.inv(torch.eye(C, dtype=A.dtype) - A))


def _ut_upper(k, v, beta):
    """A is upper triangular: token t is corrected by the tokens before it (s < t), the strictly
    lower part"""
    return _ut(k, v, beta, A_fn=lambda k, b: (b.unsqueeze(-1) * _kk(k)).triu(1))


def _ut_no_right_beta(k, v, beta):
    """diag(beta) on the right is missing: T = (I + A)^-1 diag(beta), so w = T k and u = T v
    carry beta_s"""
    return _ut(k, v, beta, rhs_beta=False)


def _ut_series(k, v, beta):
    """I - A + A^2 is only the start of the series (I + A)^-1 = sum (-A)^j: solve the
    triangular system instead"""
    C = k.shape[-2]
    eye = torch.eye(C, dtype=k.dtype)
    return _ut(k, v, beta, inverse=lambda A: eye - A + A @ A)


def _ut_powers(k, v, beta):
    """the product (I - A)(I + A^2)(I + A^4)... is exact on paper, but its powers of A grow like
    binomial coefficients when the keys are alike and floating point cancels them to noise:
    solve the triangular system instead"""
    return _ut(k, v, beta, inverse=ref.inverse_by_powers)


EX_09_3 = Exercise(
    id="09.3",
    title="the UT transform of one chunk",
    reference=ref.ut_transform,
    make_inputs=_ut_inputs,
    named_sizes=UT_SIZES,
    random_sizes=UT_RANDOM,
    output_names=("w", "u"),
    hints=(
        "Within a chunk, token t's written value is corrected by the tokens before it: that is a "
        "unit lower triangular system (I + A) x = beta * (the right-hand side).",
        "A = strictly lower part of (beta_t k_t . k_s), i.e. (beta[..., None] * k) @ k^T then "
        ".tril(-1); T = (I + A)^-1 diag(beta); w = T k, u = T v. Solve, do not expand a series.",
        "A = ((beta[..., None] * k) @ k.transpose(-1, -2)).tril(-1); I = torch.eye(C); "
        "w = torch.linalg.solve_triangular(I + A, beta[..., None] * k, upper=False, "
        "unitriangular=True); the same with v for u",
    ),
    wrong=[
        _ut_with_diagonal,
        _ut_no_beta_in_A,
        _ut_beta_on_columns,
        _ut_minus,
        _ut_upper,
        _ut_no_right_beta,
        _ut_series,
        _ut_powers,
    ],  # fmt: skip
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Turn a chunk of delta-rule writes into one unit lower triangular solve.",
)


# --- 09.4 the gated delta rule, chunked --------------------------------------------------------


def _gated_inputs(s, g):
    return _seq_inputs({**s, "gated": True}, g)


GATED_SIZES = cases(
    "B H T D E C state",
    ("T = 1", 1, 1, 1, 3, 3, 4, False),
    ("odd T, one chunk", 1, 2, 7, 4, 4, 8, True),
    ("T not a multiple of C, D != E", 2, 3, 13, 5, 2, 4, True),
    ("same shapes, other values", 2, 3, 13, 5, 2, 4, True),
    ("no initial state", 2, 1, 10, 3, 4, 3, False),
    ("long T, C = 64", 1, 1, 300, 8, 8, 64, True),
) + cases(
    "B H T D E C state strength scale",
    ("strong gates, scale 0.5", 1, 2, 40, 4, 3, 16, True, 6.0, 0.5),
)  # fmt: skip
GATED_RANDOM = between(B=(1, 2), H=(1, 3), T=(1, 48), D=(1, 6), E=(1, 6), C=(1, 16),
                       state=bool)  # fmt: skip


def _gch(q, k, v, beta, g, initial_state, scale, C, *, ut_gate=True, intra_decay=True,
         read_decay=True, key_decay=True, state_decay=True, reset=True, w_gamma=True,
         keep_initial=True, drop_partial=False, erase=True):  # fmt: skip
    """The gated chunked schedule with one switch flipped, for the wrong implementations."""
    B, H, T, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1])
    if initial_state is not None and keep_initial:
        S = initial_state
    G_all = torch.cumsum(g, dim=-1)
    outs = []
    for start in range(0, T - T % C if drop_partial else T, C):
        c = slice(start, min(start + C, T))
        q_c, k_c, v_c, b_c, g_c = q[:, :, c], k[:, :, c], v[:, :, c], beta[:, :, c], g[:, :, c]
        G = torch.cumsum(g_c, dim=-1) if reset else G_all[:, :, c]
        gamma = torch.exp(G).unsqueeze(-1)  # (B, H, C, 1)
        w, u = ref.ut_transform(k_c, v_c, b_c, g_c if ut_gate else None)
        if not w_gamma:
            w = w / gamma
        new = u - w @ S if erase else u
        L = torch.exp(segment_sum(g_c)) if intra_decay else torch.ones_like(G[..., None]).tril()
        scores = (q_c @ k_c.transpose(-1, -2)) * L
        read = gamma if read_decay else 1.0
        outs.append(scale * ((read * q_c) @ S + scores @ new))
        to_end = torch.exp(G[..., -1:] - G).unsqueeze(-1) if key_decay else 1.0
        decay = torch.exp(G[..., -1])[..., None, None] if state_decay else 1.0
        S = decay * S + (to_end * k_c).transpose(-1, -2) @ new
    return torch.cat(outs, dim=2) if outs else v[:, :, :0], S


def _gc_ungated_ut(q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0,
                   chunk_size=64):  # fmt: skip
    """the UT transform of the chunk ignores the gates: A[t, s] = beta_t (k_t . k_s) carries the
    decay exp(G_t - G_s) too (ut_transform(k, v, beta, g))"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, ut_gate=False)


def _gc_intra_undecayed(q, k, v, beta, g, initial_state=None, output_final_state=False,
                        scale=1.0, chunk_size=64):  # fmt: skip
    """the intra-chunk scores use the 0/1 causal mask: multiply q k^T by the decay mask
    exp(segment_sum(g)) of lesson 04"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, intra_decay=False)


def _gc_no_read_decay(q, k, v, beta, g, initial_state=None, output_final_state=False,
                      scale=1.0, chunk_size=64):  # fmt: skip
    """the carried state is read without the decay from the chunk start: (gamma_t q_t)^T S"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, read_decay=False)


def _gc_keys_undecayed(q, k, v, beta, g, initial_state=None, output_final_state=False,
                       scale=1.0, chunk_size=64):  # fmt: skip
    """the chunk's writes enter the state without their decay to the chunk end:
    (k_s * gamma_C / gamma_s)^T new"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, key_decay=False)


def _gc_state_undecayed(q, k, v, beta, g, initial_state=None, output_final_state=False,
                        scale=1.0, chunk_size=64):  # fmt: skip
    """the carried state is not decayed across the chunk: S <- gamma_C S + ..."""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, state_decay=False)


def _gc_not_reset(q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0,
                  chunk_size=64):  # fmt: skip
    """the cumulative sum of the log-gates runs on across chunks: restart it in every chunk (the
    carried state already holds the earlier decay)"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, reset=False)


def _gc_w_without_gamma(q, k, v, beta, g, initial_state=None, output_final_state=False,
                        scale=1.0, chunk_size=64):  # fmt: skip
    """w misses the decay of the carried state: the erase reads the decayed state gamma_t S, so
    w = T (gamma * k)"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, w_gamma=False)


def _gc_no_erase(q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0,
                 chunk_size=64):  # fmt: skip
    """the chunk writes u, not u - w S: the carried state must be erased where the chunk's keys
    point too"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, erase=False)


def _gc_ignores_initial_state(q, k, v, beta, g, initial_state=None, output_final_state=False,
                              scale=1.0, chunk_size=64):  # fmt: skip
    """initial_state is ignored: start from it, not from zeros"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, keep_initial=False)


def _gc_drops_partial(q, k, v, beta, g, initial_state=None, output_final_state=False,
                      scale=1.0, chunk_size=64):  # fmt: skip
    """the last, shorter chunk is dropped: T need not be a multiple of chunk_size"""
    return _gch(q, k, v, beta, g, initial_state, scale, chunk_size, drop_partial=True)


EX_09_4 = Exercise(
    id="09.4",
    title="the gated delta rule, chunked",
    form="chunked",
    reference=ref_gated.gated_delta_rule_chunked,
    make_inputs=_gated_inputs,
    named_sizes=GATED_SIZES,
    random_sizes=GATED_RANDOM,
    time_dim=2,
    output_names=("output", "final state"),
    timeout=20.0,
    hints=(
        "Lesson 04's gated chunked loop with the delta rule's write: per chunk, the UT transform "
        "(with the gates) gives w, u; the chunk writes new = u - w S; everything decays as in "
        "lesson 04, measured from the chunk start.",
        "G = cumsum(g_c) (restart per chunk), gamma = exp(G); (w, u) = ut_transform(k_c, v_c, "
        "beta_c, g_c); new = u - w @ S; o_c = scale * ((gamma * q_c) @ S + (q_c k_c^T * "
        "exp(segment_sum(g_c))) @ new); S = exp(G_last) S + (k_c * exp(G_last - G))^T new.",
        "gamma = torch.exp(G)[..., None]; to_end = torch.exp(G[..., -1:] - G)[..., None]; "
        "scores = (q_c @ k_c.transpose(-1, -2)) * torch.exp(segment_sum(g_c)); "
        "S = torch.exp(G[..., -1])[..., None, None] * S + (to_end * k_c).transpose(-1, -2) @ new",
    ),
    wrong=[
        _gc_ungated_ut,
        _gc_intra_undecayed,
        _gc_no_read_decay,
        _gc_keys_undecayed,
        _gc_state_undecayed,
        _gc_not_reset,
        _gc_w_without_gamma,
        _gc_no_erase,
        _gc_ignores_initial_state,
        _gc_drops_partial,
    ],  # fmt: skip
    **TIGHT,
    difficulty=3,
    minutes=35,
    objective="Write the gated delta rule in chunks: a gated UT transform and a decayed state.",
)

EXERCISES = [EX_09_1, EX_09_2, EX_09_3, EX_09_4]
