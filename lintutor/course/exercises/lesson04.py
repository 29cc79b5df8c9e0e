"""Lesson 04 exercises: the gated recurrence, the stable decay mask, the decay-masked form."""

from __future__ import annotations

import torch

from lintutor import gated as ref
from lintutor.course.checker import Exercise, between, cases, normal, uniform
from lintutor.course.exercises._mistakes import TIGHT, memo


def _gated_inputs(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    gate_shape = (B, H, T, D) if s["vector"] else (B, H, T)
    return {
        "q": uniform(g, B, H, T, D),
        "k": uniform(g, B, H, T, D),
        "v": normal(g, B, H, T, E),
        "g": -uniform(g, *gate_shape),  # log-gates <= 0
    }


GATED_SIZES = cases(
    "B H T D E vector",
    ("T=1", 1, 1, 1, 3, 3, False),
    ("odd T, scalar gate", 1, 2, 7, 4, 4, False),
    ("B, H > 1, D != E", 2, 3, 6, 5, 2, False),
    ("vector gate, D != E", 2, 2, 9, 3, 4, True),
    ("T = 300, scalar gate", 1, 1, 300, 3, 2, False),
    ("T = 300, vector gate", 1, 1, 300, 3, 2, True),
    ("odd T, scalar gate, again with other values", 1, 2, 7, 4, 4, False),
)
GATED_RANDOM = between(B=(1, 3), H=(1, 3), T=(2, 64), D=(1, 6), E=(1, 6), vector=bool)


def _gate(g_t, vector):
    """exp of a log-gate slice (B, H[, D]) -> (B, H, D or 1, 1) to scale S."""
    a = torch.exp(g_t)
    return (a if vector else a.unsqueeze(-1)).unsqueeze(-1)


def _loop(q, k, v, g, update, read_before=False):
    vector = g.dim() == 4
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])
    outs = []
    for t in range(q.shape[2]):
        S_prev = S
        S = update(S, _gate(g[:, :, t], vector), k[:, :, t], v[:, :, t])
        outs.append(torch.einsum("bhd,bhde->bhe", q[:, :, t], S_prev if read_before else S))
    return torch.stack(outs, dim=2)


def _kv(k_t, v_t):
    return k_t.unsqueeze(-1) * v_t.unsqueeze(-2)


# --- 04.1 the gated recurrence ----------------------------------------------------------------


def _rec_no_gate(q, k, v, g):
    """the gate is never applied: the state only accumulates (lesson 03)"""
    return _loop(q, k, v, g, lambda S, a, k_t, v_t: S + _kv(k_t, v_t))


def _rec_gate_after_add(q, k, v, g):
    """the gate multiplies S + k_t v_t^T; it decays only the old state:
    S_t = a_t * S_{t-1} + k_t v_t^T"""
    return _loop(q, k, v, g, lambda S, a, k_t, v_t: a * (S + _kv(k_t, v_t)))


def _rec_log_as_gate(q, k, v, g):
    """g holds log-gates: the gate is exp(g), not g itself"""
    return _loop(q, k, v, g, lambda S, a, k_t, v_t: torch.log(a) * S + _kv(k_t, v_t))


def _rec_read_before(q, k, v, g):
    """the output reads the state before this token's update (o_t must use S_t, which includes
    k_t v_t^T)"""
    return _loop(q, k, v, g, lambda S, a, k_t, v_t: a * S + _kv(k_t, v_t), read_before=True)


def _rec_gate_on_values(q, k, v, g):
    """the vector gate scales the value dimension E; it belongs to the key dimension D (the rows
    of S)"""
    vector = g.dim() == 4

    def update(S, a, k_t, v_t):
        a = a.squeeze(-1).unsqueeze(-2) if vector else a  # scales the E columns, not the D rows
        return a * S + _kv(k_t, v_t)

    return _loop(q, k, v, g, update)


def _rec_previous_gate(q, k, v, g):
    """step t decays the state with the gate of step t - 1: S_t = a_t * S_{t-1} + k_t v_t^T
    uses this step's gate"""
    shifted = torch.cat([torch.zeros_like(g[:, :, :1]), g[:, :, :-1]], dim=2)  # a_0 = 1
    return ref.gated_linear_attention_recurrent(q, k, v, shifted)


def _rec_output_buffer(q, k, v, g):
    """the outputs are written into a buffer of 256 tokens made once: for T > 256 it is too small;
    stack the o_t (or allocate (B, H, T, E))"""
    o = ref.gated_linear_attention_recurrent(q, k, v, g)
    buffer = o.new_zeros(*o.shape[:2], 256, o.shape[-1])
    buffer[:, :, : o.shape[2]] = o  # fails for T > 256
    return buffer[:, :, : o.shape[2]]


def _rec_memo(q, k, v, g):
    """the answer is cached by the shapes of q, k, v, g: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.gated_linear_attention_recurrent, q, k, v, g)


EX_04_1 = Exercise(
    id="04.1",
    title="gated causal linear attention, recurrent",
    form="recurrent",
    reference=ref.gated_linear_attention_recurrent,
    make_inputs=_gated_inputs,
    named_sizes=GATED_SIZES,
    random_sizes=GATED_RANDOM,
    time_dim=2,
    hints=(
        "Lesson 03's loop with one change: before adding k_t v_t^T, multiply the state by the "
        "gate a_t = exp(g_t).",
        "S = zeros (B, H, D, E). For each t: a_t = exp(g[:, :, t]); a scalar gate (B, H) needs "
        "two trailing dims to scale S, a vector gate (B, H, D) scales the rows of S (one trailing "
        "dim). Then S = a_t * S + k_t v_t^T and o_t = S^T q_t.",
        "a = torch.exp(g[:, :, t]); a = a[..., None, None] if g.dim() == 3 else a[..., None]; "
        "S = a * S + k[:, :, t, :, None] * v[:, :, t, None, :]; "
        "outs.append(torch.einsum('bhd,bhde->bhe', q[:, :, t], S))",
    ),
    wrong=[
        _rec_no_gate,
        _rec_gate_after_add,
        _rec_log_as_gate,
        _rec_read_before,
        _rec_gate_on_values,
        _rec_previous_gate,
        _rec_output_buffer,
        _rec_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Add a forget gate to lesson 03's recurrence, for scalar and vector gates.",
)


# --- 04.2 the stable decay mask ---------------------------------------------------------------


def _mask_inputs(s, g):
    strength = s.get("strength", 1.0)
    shape = s["shape"] if "shape" in s else (s["B"], s["H"], s["T"])  # g (..., T)
    return {"g": -strength * uniform(g, *shape)}


def _mask_naive(g):
    """the ratio of cumulative products P_t / P_s: P underflows to 0 for long sequences and 0/0
    is NaN; sum the log-gates of each segment instead"""
    return ref.decay_mask_naive(g)


def _causal(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def _mask_inclusive(g):
    """the segment includes a_s; L[t, s] = a_{s+1} ... a_t (1 on the diagonal)"""
    c = torch.cumsum(g, -1)
    G = c.unsqueeze(-1) - c.unsqueeze(-2) + g.unsqueeze(-2)  # also counts g_s
    return torch.exp(G).masked_fill(~_causal(g.shape[-1]), 0.0)


def _mask_transposed(g):
    """the mask is transposed: queries t are rows, keys s columns"""
    return ref.decay_mask(g).transpose(-1, -2)


def _mask_no_causal(g):
    """the entries above the diagonal (keys in the future) must be 0"""
    c = torch.cumsum(g, -1)
    G = (c.unsqueeze(-1) - c.unsqueeze(-2)).clamp(max=0.0)  # no mask: ones above the diagonal
    return torch.exp(G)


def _mask_cumprod_no_ratio(g):
    """this is a_1 ... a_t for every key: the decay must start after the key's own step s"""
    P = torch.cumprod(torch.exp(g), dim=-1)
    return P.unsqueeze(-1).expand(*g.shape, g.shape[-1]).masked_fill(~_causal(g.shape[-1]), 0.0)


def _mask_assumes_3d(g):
    """g is taken to be (B, H, T) (B, H, T = g.shape): the log-gates have any leading dims,
    (..., T)"""
    B, H, T = g.shape
    return ref.decay_mask(g.reshape(B * H, T)).reshape(B, H, T, T)


_CAUSAL_512 = torch.ones(512, 512, dtype=torch.bool).tril()


def _mask_buffer(g):
    """the causal mask is sliced from a 512 x 512 buffer made once: for T > 512 it is too small;
    build it for this T"""
    T = g.shape[-1]
    return torch.exp(ref.segment_sum(g)).masked_fill(~_CAUSAL_512[:T, :T], 0.0)


def _mask_memo(g):
    """the answer is cached by the shape of g: a second call with the same shape and other
    values returns the first call's result"""
    return memo(ref.decay_mask, g)


EX_04_2 = Exercise(
    id="04.2",
    title="the decay mask from a stable segment sum",
    reference=ref.decay_mask,
    make_inputs=_mask_inputs,
    named_sizes=cases(
        "B H T",
        ("T=1", 1, 1, 1),
        ("odd T", 1, 1, 5),
        ("B, H > 1", 2, 3, 8),
        ("odd T again, other values", 1, 1, 5),
    )
    + cases("B H T strength", ("long T, strong gates", 1, 1, 700, 3.0))
    + cases(
        "shape",
        ("g of one sequence, (T,)", (9,)),
        ("g (H, T)", (3, 6)),
        ("g (B, H, D, T)", (2, 2, 3, 5)),
    ),
    random_sizes=between(B=(1, 3), H=(1, 3), T=(2, 40)),
    time_dim=-2,
    hints=(
        "L[t, s] = a_{s+1} ... a_t: the gates strictly after s, up to and including t. Work with "
        "sums of log-gates, and never divide two products.",
        "Repeat g along a new last axis (x[r, s] = g_r), zero every entry with r <= s, cumsum over "
        "r: that gives G[t, s] = g_{s+1} + ... + g_t. exp(G), then zero the entries above the "
        "diagonal (s > t).",
        "x = g.unsqueeze(-1).expand(*g.shape, T).masked_fill(~torch.ones(T, T, dtype=torch.bool)"
        ".tril(-1), 0.0); G = torch.cumsum(x, dim=-2); "
        "return torch.exp(G).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), 0.0)",
    ),
    wrong=[
        _mask_naive,
        _mask_inclusive,
        _mask_transposed,
        _mask_no_causal,
        _mask_cumprod_no_ratio,
        _mask_assumes_3d,
        _mask_buffer,
        _mask_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Build the decay mask from segment sums of log-gates, stable for any length.",
)


# --- 04.3 the decay-masked parallel form ------------------------------------------------------


def _par_causal_only(q, k, v, g):
    """the gates are ignored: this is lesson 03's causal mask"""
    T = q.shape[2]
    return ((q @ k.transpose(-1, -2)) * torch.ones(T, T, dtype=q.dtype).tril()) @ v


def _par_transposed_mask(q, k, v, g):
    """the decay mask is transposed (keys decay by the gates before them, not after)"""
    if g.dim() == 4:
        L = ref.decay_mask(g.transpose(-1, -2)).transpose(-1, -2)
        return torch.einsum("bhtd,bhdst,bhsd->bhts", q, L.transpose(-2, -3), k) @ v
    return ((q @ k.transpose(-1, -2)) * ref.decay_mask(g).transpose(-1, -2)) @ v


def _par_mean_gate(q, k, v, g):
    """a vector gate was averaged into one gate per head; each key channel decays with its own
    gate"""
    g = g if g.dim() == 3 else g.mean(-1)  # one gate per head: the channels' average
    return ((q @ k.transpose(-1, -2)) * ref.decay_mask(g)) @ v


def _par_gate_on_query_only(q, k, v, g):
    """the query was scaled by a_1 ... a_t but the key was not divided by a_1 ... a_s: the decay
    must start after s"""
    c = torch.cumsum(g, dim=2)
    decay = torch.exp(c) if g.dim() == 4 else torch.exp(c).unsqueeze(-1)
    T = q.shape[2]
    return (((q * decay) @ k.transpose(-1, -2)) * torch.ones(T, T, dtype=q.dtype).tril()) @ v


def _par_normalized(q, k, v, g):
    """the output is divided by lesson 03's normalizer; gated linear attention here has none
    (normalize=False)"""
    return ref.gated_linear_attention_parallel(q, k, v, g, normalize=True)


def _par_decay_includes_s(q, k, v, g):
    """the decay includes the key's own gate, L[t, s] = a_s ... a_t: it runs over s+1 ... t (1 on
    the diagonal)"""
    if g.dim() == 4:
        L = ref.decay_mask(g.transpose(-1, -2)) * torch.exp(g.transpose(-1, -2)).unsqueeze(-2)
        return torch.einsum("bhtd,bhdts,bhsd->bhts", q, L, k) @ v
    L = ref.decay_mask(g) * torch.exp(g).unsqueeze(-2)  # an extra a_s in column s
    return ((q @ k.transpose(-1, -2)) * L) @ v


_CAUSAL_256 = torch.ones(256, 256, dtype=torch.bool).tril()


def _par_mask_buffer(q, k, v, g):
    """the mask is sliced from a 256 x 256 causal buffer made once: for T > 256 it is too small;
    build it for this T"""
    T = q.shape[2]
    if g.dim() == 4:
        L = torch.exp(ref.segment_sum(g.transpose(-1, -2))) * _CAUSAL_256[:T, :T]
        return torch.einsum("bhtd,bhdts,bhsd->bhts", q, L, k) @ v
    return ((q @ k.transpose(-1, -2)) * torch.exp(ref.segment_sum(g)) * _CAUSAL_256[:T, :T]) @ v


def _par_memo(q, k, v, g):
    """the answer is cached by the shapes of q, k, v, g: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.gated_linear_attention_parallel, q, k, v, g)


EX_04_3 = Exercise(
    id="04.3",
    title="gated causal linear attention, decay-masked parallel form",
    form="parallel",
    reference=ref.gated_linear_attention_parallel,
    make_inputs=_gated_inputs,
    named_sizes=GATED_SIZES,
    random_sizes=GATED_RANDOM,
    time_dim=2,
    hints=(
        "Lesson 03's masked form (q k^T masked) v, with the 0/1 causal mask replaced by the "
        "decay mask of 04.2.",
        "Scalar gate: scores = (q @ k^T) * decay_mask(g). Vector gate: the mask depends on the "
        "key channel d too, so build L (B, H, D, T, T) from g transposed to (B, H, D, T) and sum "
        "q_t[d] L[d, t, s] k_s[d] over d with an einsum. Then scores @ v.",
        "if g.dim() == 3: scores = (q @ k.transpose(-1, -2)) * decay_mask(g)\n"
        "else: L = decay_mask(g.transpose(-1, -2)); "
        "scores = torch.einsum('bhtd,bhdts,bhsd->bhts', q, L, k)\n"
        "return scores @ v",
    ),
    wrong=[
        _par_causal_only,
        _par_transposed_mask,
        _par_mean_gate,
        _par_gate_on_query_only,
        _par_normalized,
        _par_decay_includes_s,
        _par_mask_buffer,
        _par_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Compute gated linear attention without a loop: the causal mask replaced by the "
    "decay mask.",
)

EXERCISES = [EX_04_1, EX_04_2, EX_04_3]


# --- 04.4 the gated chunked form --------------------------------------------------------------


def _chunked_inputs(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    gate_shape = (B, H, T, D) if s["vector"] else (B, H, T)
    return {
        "q": uniform(g, B, H, T, D),
        "k": uniform(g, B, H, T, D),
        "v": normal(g, B, H, T, E),
        "g": -s["strength"] * uniform(g, *gate_shape),  # log-gates <= 0, mean -strength / 2
        "initial_state": normal(g, B, H, D, E) if s["state"] else None,
        "output_final_state": True,
        "chunk_size": s["C"],
    }


CHUNKED_SIZES = cases(
    "B H T D E C vector state strength",
    ("T=1", 1, 1, 1, 3, 2, 4, False, True, 2.0),
    ("T not a multiple of C", 1, 2, 11, 4, 3, 4, False, True, 2.0),
    ("C = 1", 1, 1, 6, 3, 3, 1, False, True, 2.0),
    ("C > T", 1, 1, 5, 2, 4, 16, False, True, 2.0),
    ("vector gate, B, H > 1, D != E", 2, 3, 10, 5, 2, 4, True, True, 2.0),
    ("no initial state", 1, 1, 9, 3, 2, 4, True, False, 2.0),
    # mean |log gate| 3: the log-gates of the whole sequence sum to about -960, past float64's
    # exp limit (709; float32's is 88, a mean of 1.4 over one 64-token chunk)
    ("long T, strong gates", 1, 2, 320, 4, 3, 64, False, True, 6.0),
    # mean |log gate| 15: even one 64-token chunk sums past 709
    ("gates that close inside a chunk", 1, 1, 80, 3, 2, 64, False, True, 30.0),
    ("T not a multiple of C, again with other values", 1, 2, 11, 4, 3, 4, False, True, 2.0),
)
CHUNKED_RANDOM = between(B=(1, 2), H=(1, 3), T=(1, 48), D=(1, 6), E=(1, 6), C=(1, 16),
                         vector=bool, state=bool, strength=2.0)  # fmt: skip


def _per_key(x, vector):
    """(B, H, C[, D]) decay factors -> (B, H, C, D or 1), to scale q or k."""
    return x if vector else x.unsqueeze(-1)


def _chunks(q, k, v, g, initial_state, C, *, intra="segment sum", read_decay="from start",
            key_decay=True, decay_after_add=False, reset=True, last_state_decay=True,
            keep_initial=True, drop_partial=False):  # fmt: skip
    """The chunked schedule with one switch flipped, for the wrong implementations below."""
    vector = g.dim() == 4
    B, H, T, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1])
    if initial_state is not None and keep_initial:
        S = initial_state
    c_all = torch.cumsum(g, dim=2)  # (B, H, T[, D]), for the cumulative sum that never restarts
    outs = []
    starts = list(range(0, T - T % C if drop_partial else T, C))
    for i, start in enumerate(starts):
        end = min(start + C, T)
        q_c, k_c, v_c, g_c = (x[:, :, start:end] for x in (q, k, v, g))
        if intra == "segment sum":
            scores = ref.decay_masked_scores(q_c, k_c, g_c)
        elif intra == "factorized":
            scores = ref.decay_masked_scores_factorized(q_c, k_c, g_c)
        else:  # lesson 03's 0/1 mask
            scores = (q_c @ k_c.transpose(-1, -2)).tril()
        cum = torch.cumsum(g_c, dim=2) if reset else c_all[:, :, start:end]
        total = cum[:, :, -1:]
        read = {"from start": cum, "none": torch.zeros_like(cum), "to end": total.expand_as(cum)}
        o_c = scores @ v_c + (q_c * _per_key(torch.exp(read[read_decay]), vector)) @ S
        k_dec = k_c * _per_key(torch.exp(total - cum), vector) if key_decay else k_c
        decay_c = _per_key(torch.exp(total.squeeze(2)), vector).unsqueeze(-1)  # (B, H, D|1, 1)
        if decay_after_add:
            S = decay_c * (S + k_c.transpose(-1, -2) @ v_c)
        elif i == len(starts) - 1 and not last_state_decay:
            S = S + k_dec.transpose(-1, -2) @ v_c
        else:
            S = decay_c * S + k_dec.transpose(-1, -2) @ v_c
        outs.append(o_c)
    return torch.cat(outs, dim=2) if outs else v[:, :, :0], S


def _chk_factorized_globally(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """q * exp(c_t) and k * exp(-c_s) with c the cumulative sum of the log-gates over the whole
    sequence: exact on paper, but exp(-c) overflows once the gates sum past about 709 in float64
    (88 in float32); measure every exponent from the chunk start, so it is a sum of at most C
    log-gates, and build the intra-chunk mask from a segment sum"""
    vector = g.dim() == 4
    c = _per_key(torch.cumsum(g, dim=2), vector)  # (B, H, T, D or 1)
    q_f, k_f = q * torch.exp(c), k * torch.exp(-c)  # (B, H, T, D)
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])
    S = S if initial_state is None else initial_state  # S~ = S_0 + sum_s exp(-c_s) k_s v_s^T
    outs = []
    for start in range(0, q.shape[2], chunk_size):
        sl = slice(start, start + chunk_size)
        scores = (q_f[:, :, sl] @ k_f[:, :, sl].transpose(-1, -2)).tril()
        outs.append(scores @ v[:, :, sl] + q_f[:, :, sl] @ S)
        S = S + k_f[:, :, sl].transpose(-1, -2) @ v[:, :, sl]
    return torch.cat(outs, dim=2), torch.exp(c[:, :, -1]).unsqueeze(-1) * S


def _chk_factorized_in_chunk(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the intra-chunk scores use GLA's factorization (q * exp(c)) (k * exp(-c))^T: exp(-c)
    overflows once one chunk's log-gates sum past about 709 in float64 (88 in float32: a mean
    |log gate| of 1.4 over 64 tokens); build the intra-chunk mask from a segment sum"""
    return _chunks(q, k, v, g, initial_state, chunk_size, intra="factorized")


def _chk_intra_causal_mask(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """inside the chunk the scores are masked with lesson 03's 0/1 causal mask: key s must be
    decayed by the gates after it up to t (the decay mask of 04.2)"""
    return _chunks(q, k, v, g, initial_state, chunk_size, intra="causal")


def _chk_no_read_decay(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the state from earlier chunks is read without the decay from the chunk start: token t
    reads (q_t * exp(g_start + ... + g_t)) S"""
    return _chunks(q, k, v, g, initial_state, chunk_size, read_decay="none")


def _chk_read_decay_to_end(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the state is decayed by the whole chunk before the chunk reads it: token t needs only the
    gates from the chunk start up to t, exp(g_start + ... + g_t)"""
    return _chunks(q, k, v, g, initial_state, chunk_size, read_decay="to end")


def _chk_keys_not_decayed(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the chunk's keys enter the state without their decay to the chunk end: add
    (k_s * exp(g_{s+1} + ... + g_end))^T v_s"""
    return _chunks(q, k, v, g, initial_state, chunk_size, key_decay=False)


def _chk_decay_after_add(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the chunk's decay is applied after its keys are added, exp(total) * (S + k^T v), so every
    key is decayed by the whole chunk: decay the old state, then add each key decayed by the
    gates after it"""
    return _chunks(q, k, v, g, initial_state, chunk_size, decay_after_add=True)


def _chk_gates_not_reset(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the cumulative sum of the log-gates runs on across chunk boundaries: restart it in every
    chunk (the carried state already holds the decay of the chunks before)"""
    return _chunks(q, k, v, g, initial_state, chunk_size, reset=False)


def _chk_final_state_undecayed(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the final state misses the decay of the last chunk: after the last chunk too,
    S = exp(total) * S + decayed keys^T v"""
    return _chunks(q, k, v, g, initial_state, chunk_size, last_state_decay=False)


def _chk_ignores_initial_state(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """initial_state is ignored: start from it, not from zeros"""
    return _chunks(q, k, v, g, initial_state, chunk_size, keep_initial=False)


def _chk_drops_last_partial(q, k, v, g, initial_state=None, chunk_size=64, **_):
    """the last, shorter chunk is dropped: T need not be a multiple of chunk_size"""
    return _chunks(q, k, v, g, initial_state, chunk_size, drop_partial=True)


def _chk_memo(q, k, v, g, initial_state=None, output_final_state=False, chunk_size=64):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.gated_linear_attention_chunked, q, k, v, g, False, initial_state,
                output_final_state, 1e-6, chunk_size)  # fmt: skip


EX_04_4 = Exercise(
    id="04.4",
    title="gated causal linear attention, chunked form",
    form="chunked",
    reference=ref.gated_linear_attention_chunked,
    make_inputs=_chunked_inputs,
    named_sizes=CHUNKED_SIZES,
    random_sizes=CHUNKED_RANDOM,
    time_dim=2,
    output_names=("output", "final state"),
    hints=(
        "Lesson 03's chunked loop, with three decays, each measured from inside the chunk: the "
        "decay mask within the chunk, the decay from the chunk start on what earlier chunks left "
        "in the state, and each key's decay to the chunk end before it enters the state.",
        "For each chunk [start, end): c = cumsum of g over the chunk only, total = c at its last "
        "token. o_c = (decay-masked scores of the chunk, as in 04.3) @ v_c + (q_c * exp(c)) @ S. "
        "Then S = exp(total) * S + (k_c * exp(total - c))^T v_c. A scalar gate needs a trailing "
        "axis to scale the D channels; the last chunk may be shorter.",
        "c = torch.cumsum(g_c, dim=2); total = c[:, :, -1:]; "
        "per_key = (lambda x: x) if vector else (lambda x: x.unsqueeze(-1)); "
        "o_c = scores @ v_c + (q_c * per_key(torch.exp(c))) @ S; "
        "k_dec = k_c * per_key(torch.exp(total - c)); "
        "S = per_key(torch.exp(total.squeeze(2))).unsqueeze(-1) * S "
        "+ k_dec.transpose(-1, -2) @ v_c",
    ),
    wrong=[
        _chk_factorized_globally,
        _chk_factorized_in_chunk,
        _chk_intra_causal_mask,
        _chk_no_read_decay,
        _chk_read_decay_to_end,
        _chk_keys_not_decayed,
        _chk_decay_after_add,
        _chk_gates_not_reset,
        _chk_final_state_undecayed,
        _chk_ignores_initial_state,
        _chk_drops_last_partial,
        _chk_memo,
    ],
    **TIGHT,
    difficulty=3,
    minutes=30,
    objective="Write the chunked form with gates: decay-masked chunks and a decayed state between "
    "them.",
)

EXERCISES.append(EX_04_4)
