"""Lesson 07 exercises: grouped linear attention without a loop over groups, the causal conv
mask, one decode step of the augmented layer, and the speculative accept / rollback rule.

Inputs are float64. Grouped attention gets cosine-normalized q, k (the paper's variant) or
elu+1 features (the linear kernel). Each exercise has two named cases of the same shapes with
other values, so an answer remembered from an earlier call fails.

07.1 asks for a form: all groups at once, no loop over groups. After the numbers, the checker's
form check (lintutor.course.forms) grows T with G = 4 fixed: a loop over groups adds work every
G tokens (a chunked form), a loop over t every token (the recurrent form); either is rejected,
and the message says what 07.1 asks for (its `form_asked` field: no loop over groups).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lintutor import linearized as ref
from lintutor import speculative
from lintutor.course.checker import Exercise, between, cases, normal, uniform
from lintutor.course.exercises._mistakes import TIGHT
from lintutor.featuremaps import elu1

# --- 07.1 grouped linear attention, all groups at once ------------------------------------


def _grouped_inputs(s, g):
    B, H, T, D, E = s["B"], s["H"], s["T"], s["D"], s["E"]
    q, k = normal(g, B, H, T, D), normal(g, B, H, T, D)
    if s["local"] == "relu2":
        q, k = ref.cosine(q), ref.cosine(k)  # the paper's variant
    else:
        q, k = elu1(q), elu1(k)
    alpha = float(2 * uniform(g, 1) - 0.5) if s["alpha"] is None else s["alpha"]
    return {
        "q": q,
        "k": k,
        "v": normal(g, B, H, T, E),
        "group_size": s["G"],
        "local": s["local"],
        "global_factor": alpha,
        "initial_state": normal(g, B, H, D, E) if s["state"] else None,
        "output_final_state": True,
    }


def _groups(x, G):
    """(B, H, n, G, *) zero-padded groups, and n."""
    B, H, T, _ = x.shape
    n = -(-T // G)
    return F.pad(x, (0, 0, 0, n * G - T)).view(B, H, n, G, x.shape[-1]), n


def _grouped(q, k, v, group_size, local, global_factor, initial_state, *, mask_diag=0,
             masked=True, inclusive=False, window=False, kernel=None, alpha_local=False,
             keep_state=True, cut=True, final_all=True):  # fmt: skip
    B, H, T, D = q.shape
    G = group_size
    qg, n = _groups(q, G)
    kg, _ = _groups(k, G)
    vg, _ = _groups(v, G)
    S0 = (
        initial_state
        if (initial_state is not None and keep_state)
        else q.new_zeros(B, H, D, v.shape[-1])
    )
    scores = qg @ kg.transpose(-1, -2)
    if kernel is None:
        kernel = (lambda s: torch.relu(s) ** 2) if local == "relu2" else (lambda s: s)
    a = kernel(scores)
    if masked:
        mask = torch.ones(G, G, dtype=torch.bool).tril(mask_diag)
        a = a.masked_fill(~mask, 0.0)
    kv = kg.transpose(-1, -2) @ vg
    if window:
        prev = torch.cat([torch.zeros_like(kv[:, :, :1]), kv[:, :, :-1]], dim=2)
        before = S0.unsqueeze(2) + prev
    elif inclusive:
        before = S0.unsqueeze(2) + kv.cumsum(2)
    else:
        before = S0.unsqueeze(2) + kv.cumsum(2) - kv
    local_o = a @ vg
    if alpha_local:
        local_o = global_factor * local_o
    o = (local_o + global_factor * (qg @ before)).reshape(B, H, n * G, -1)
    if cut:
        o = o[:, :, :T]
    full_groups = T // G
    S = S0 + (kv.sum(2) if final_all else kv[:, :, :full_groups].sum(2))
    return o, S


def _inclusive_prefix(q, k, v, group_size, local, global_factor, initial_state, **_):
    """the global term includes the token's own group (an inclusive prefix sum): it must hold
    only the complete groups before it (cumsum minus the group itself)"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, inclusive=True)


def _no_causal_mask(q, k, v, group_size, local, global_factor, initial_state, **_):
    """inside a group every token sees the whole group, later tokens too: mask to s <= t"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, masked=False)


def _strict_mask(q, k, v, group_size, local, global_factor, initial_state, **_):
    """the mask leaves out the token itself (s < t): token t sees itself, s <= t"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, mask_diag=-1)


def _relu_not_squared(q, k, v, group_size, local, global_factor, initial_state, **_):
    """local="relu2" is relu(q . k) squared, not relu(q . k)"""
    kernel = torch.relu if local == "relu2" else None
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, kernel=kernel)


def _square_without_relu(q, k, v, group_size, local, global_factor, initial_state, **_):
    """(q . k)^2 without the relu: negative scores must become 0 before squaring"""
    kernel = (lambda s: s**2) if local == "relu2" else None
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, kernel=kernel)


def _previous_group_only(q, k, v, group_size, local, global_factor, initial_state, **_):
    """the global term reads only the previous group; it is the sum of all earlier groups (and
    the initial state)"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, window=True)


def _factor_on_both(q, k, v, group_size, local, global_factor, initial_state, **_):
    """global_factor scales the local term too; it scales only the global term"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, alpha_local=True)


def _ignores_initial_state(q, k, v, group_size, local, global_factor, initial_state, **_):
    """initial_state is ignored: the groups before t = 0 start the global sum"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, keep_state=False)


def _padding_not_cut(q, k, v, group_size, local, global_factor, initial_state, **_):
    """the zero padding of the last, shorter group is still in the output: cut it back to T"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, cut=False)


def _final_state_without_open_group(q, k, v, group_size, local, global_factor, initial_state,
                                    **_):  # fmt: skip
    """the final state leaves out the last, shorter group: it holds every token of the call"""
    return _grouped(q, k, v, group_size, local, global_factor, initial_state, final_all=False)


EX_07_1 = Exercise(
    id="07.1",
    title="grouped linear attention, all groups at once",
    reference=ref.grouped_linear_attention_parallel,
    make_inputs=_grouped_inputs,
    named_sizes=cases(
        "B H T D E G local alpha state",
        ("T=1", 1, 1, 1, 3, 3, 4, "relu2", 1.0, False),
        ("T not a multiple of G", 1, 1, 10, 4, 4, 4, "relu2", 1.0, False),
        ("D != E, B and H > 1", 2, 3, 9, 5, 3, 4, "relu2", 0.5, False),
        ("same shapes, other values", 2, 3, 9, 5, 3, 4, "relu2", 0.5, False),
        ("initial state, linear kernel", 2, 2, 12, 3, 4, 5, "linear", 1.0, True),
        ("G = 1", 1, 2, 6, 2, 3, 1, "relu2", -0.7, True),
        ("G > T", 1, 1, 5, 3, 2, 8, "linear", 0.3, True),
        ("alpha = 0: local only", 1, 2, 11, 4, 4, 4, "relu2", 0.0, False),
        ("long T", 1, 1, 301, 3, 2, 64, "relu2", 0.8, True),
    ),
    random_sizes=between(
        B=(1, 2),
        H=(1, 3),
        T=(1, 40),
        D=(1, 6),
        E=(1, 6),
        G=(1, 12),
        local=["relu2", "linear"],
        alpha=None,
        state=bool,
    ),  # fmt: skip
    hints=(
        "Pad T up to n * G tokens with zeros and view each of q, k, v as (B, H, n, G, *): every "
        "group becomes one small causal attention, all computed by one batched matmul.",
        "local: a = kappa(q_g @ k_g^T) masked to s <= t inside each group, times v_g. global: "
        "kv = k_g^T @ v_g per group (B, H, n, D, E); the state before group g is "
        "S_0 + cumsum(kv) - kv (an exclusive prefix). o = a @ v_g + alpha * (q_g @ S_before); "
        "cut back to T. The final state is S_0 + every group's kv.",
        "kv = kg.transpose(-1, -2) @ vg; S_before = S0.unsqueeze(2) + kv.cumsum(2) - kv; "
        "a = (torch.relu(qg @ kg.transpose(-1, -2)) ** 2).masked_fill(~mask, 0.0); "
        "o = (a @ vg + global_factor * (qg @ S_before)).reshape(B, H, n * G, E)[:, :, :T]",
    ),
    wrong=[
        _inclusive_prefix,
        _no_causal_mask,
        _strict_mask,
        _relu_not_squared,
        _square_without_relu,
        _previous_group_only,
        _factor_on_both,
        _ignores_initial_state,
        _padding_not_cut,
        _final_state_without_open_group,
    ],  # fmt: skip
    time_dim=-2,
    output_names=("o", "final_state"),
    **TIGHT,
    form="parallel",  # no loop over groups (nor over t): the same torch calls whatever T
    # G = 4 while the form check grows T: a loop over groups adds work every 4 tokens
    form_sizes=dict(B=1, H=1, T=8, D=3, E=3, G=4, local="relu2", alpha=1.0, state=True),
    form_asked="the parallel form (every group at once: no loop over groups, nor over t)",
    difficulty=3,
    minutes=30,
    objective="Write grouped linear attention for all groups at once: no loop over groups.",
)


# --- 07.2 the causal conv mask -----------------------------------------------------------


def _conv_inputs(s, g):
    B, H, T, E, K = s["B"], s["H"], s["T"], s["E"], s["K"]
    return {
        "v": normal(g, B, H, T, E),
        "weight": normal(g, H, K),
        "initial_state": normal(g, B, H, K // 2, E) if s["state"] else None,
        "output_final_state": True,
    }


def _conv(v, weight, initial_state, *, taps=None, past_state=True, circular=False,
          one_filter=False, final_from_new=False):  # fmt: skip
    """c_t = sum_j w'[j] x_{t+j-P} over x = [past, v], for tap weights w' = weight * taps."""
    B, H, T, E = v.shape
    K = weight.shape[1]
    P = K // 2
    if one_filter:
        weight = weight[:1].expand(H, K)
    w = weight * (taps if taps is not None else ref.causal_conv_mask(K, v.dtype))
    past = initial_state if (initial_state is not None and past_state) else v.new_zeros(B, H, P, E)
    x = torch.cat([past, v], dim=2)
    if circular:
        x = torch.cat([v[:, :, T - P :] if P <= T else v.new_zeros(B, H, P, E), v], dim=2)
    pad = F.pad(x, (0, 0, 0, P))  # zeros after the end, for the (masked) future taps
    c = v.new_zeros(B, H, T, E)
    for j in range(K):
        c = c + w[:, j].view(1, H, 1, 1) * pad[:, :, j : j + T]
    last = v[:, :, T - P :] if final_from_new else x[:, :, x.shape[2] - P :]
    if final_from_new and P > T:
        last = F.pad(v, (0, 0, P - T, 0))
    return c, last


def _no_mask(v, weight, initial_state=None, **_):
    """the future taps are not masked: position t reads t + 1 .. t + P, the leak"""
    K = weight.shape[1]
    return _conv(v, weight, initial_state, taps=torch.ones(K, dtype=v.dtype))


def _mask_drops_current(v, weight, initial_state=None, **_):
    """the mask also zeroes tap P, the current token: keep the taps j <= P"""
    K = weight.shape[1]
    taps = torch.zeros(K, dtype=v.dtype)
    taps[: K // 2] = 1
    return _conv(v, weight, initial_state, taps=taps)


def _mask_keeps_one_future(v, weight, initial_state=None, **_):
    """the mask keeps tap P + 1, so position t reads t + 1: zero every tap j > P"""
    K = weight.shape[1]
    taps = torch.zeros(K, dtype=v.dtype)
    taps[: K // 2 + 2] = 1
    return _conv(v, weight, initial_state, taps=taps)


def _mask_wrong_half(v, weight, initial_state=None, **_):
    """the mask keeps the future half and zeroes the past: tap j reads v_{t+j-P}, so the past
    is j < P"""
    K = weight.shape[1]
    taps = torch.zeros(K, dtype=v.dtype)
    taps[K // 2 :] = 1
    return _conv(v, weight, initial_state, taps=taps)


def _flipped_taps(v, weight, initial_state=None, **_):
    """the kernel is flipped (a textbook convolution): here tap j reads v_{t+j-P}, so w[P] is
    the current token and w[P - i] the one i steps back"""
    return _conv(v, weight.flip(1), initial_state)


def _ignores_initial_state(v, weight, initial_state=None, **_):
    """initial_state, the P values before t = 0, is ignored (zeros instead)"""
    return _conv(v, weight, initial_state, past_state=False)


def _circular_padding(v, weight, initial_state=None, **_):
    """circular padding: the first tokens read the last ones (wrap-around); before t = 0 come
    the initial_state values, or zeros"""
    return _conv(v, weight, initial_state, circular=True)


def _one_filter_for_all_heads(v, weight, initial_state=None, **_):
    """every head uses head 0's filter: weight[h] is head h's own filter"""
    return _conv(v, weight, initial_state, one_filter=True)


def _final_state_from_new_values(v, weight, initial_state=None, **_):
    """the final state is cut from the new values only; when T < P its oldest entries come from
    initial_state"""
    return _conv(v, weight, initial_state, final_from_new=True)


EX_07_2 = Exercise(
    id="07.2",
    title="the causal conv on V: mask the future taps",
    reference=ref.causal_depthwise_conv,
    make_inputs=_conv_inputs,
    named_sizes=cases(
        "B H T E K state",
        ("T=1", 1, 1, 1, 2, 3, False),
        ("odd T, B and H > 1", 2, 3, 7, 4, 5, False),
        ("same shapes, other values", 2, 3, 7, 4, 5, False),
        ("initial state", 1, 2, 9, 3, 5, True),
        ("K > T, initial state", 1, 2, 3, 2, 9, True),
        ("K = 1", 1, 2, 6, 3, 1, True),
        ("the official kernel, long T", 1, 2, 300, 2, 63, True),
    ),
    random_sizes=between(
        B=(1, 2), H=(1, 3), T=(1, 30), E=(1, 5), K=[1, 3, 5, 7, 9, 11], state=bool
    ),  # fmt: skip
    hints=(
        "Tap j of the centred kernel reads v_{t+j-P} (P = K // 2): the taps j > P read the "
        "future. Zero them, then slide the kernel over [initial_state, v].",
        "w = weight * mask with mask[j] = 1 for j <= P. Concatenate the P past values in front of "
        "v; c_t = sum_{j<=P} w[h, j] * x[t + j] over x = [past, v]. The final state is the last "
        "P entries of x.",
        "x = torch.cat([initial_state, v], dim=2); "
        "F.conv2d(x, w.view(H, 1, K, 1), padding=(P, 0), groups=H)[:, :, P:] gives c; "
        "x[:, :, x.shape[2] - P:] is the final state",
    ),
    wrong=[
        _no_mask,
        _mask_drops_current,
        _mask_keeps_one_future,
        _mask_wrong_half,
        _flipped_taps,
        _ignores_initial_state,
        _circular_padding,
        _one_filter_for_all_heads,
        _final_state_from_new_values,
    ],  # fmt: skip
    time_dim=-2,
    output_names=("c", "final_state"),
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Mask the centred kernel's future taps so that the conv on V is causal.",
)


# --- 07.3 one decode step of the augmented layer ------------------------------------------


def _step_inputs(s, g):
    B, H, D, E, K = s["B"], s["H"], s["D"], s["E"], s["K"]
    n = s["n"]  # tokens already in the state
    return {
        "q_t": elu1(normal(g, B, H, D)),
        "k_t": elu1(normal(g, B, H, D)),
        "v_t": normal(g, B, H, E),
        "S": normal(g, B, H, D, E) * n**0.5,
        "z": uniform(g, B, H, D) * 2 * n,
        "window": normal(g, B, H, K // 2, E),
        "conv_weight": normal(g, H, K),
        "eps": s["eps"],
    }


def _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, *, read_first=False, z_last=False,
          no_norm=False, shift="left", taps="causal", keep_window=False,
          no_conv=False):  # fmt: skip
    S_new = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
    z_new = k_t if z_last else z + k_t
    S_read, z_read = (S, z) if read_first else (S_new, z_new)
    o = torch.einsum("bhd,bhde->bhe", q_t, S_read)
    if not no_norm:
        o = o / ((q_t * z_read).sum(-1, keepdim=True) + eps)
    H, K = conv_weight.shape
    P = K // 2
    if shift == "left":
        x = torch.cat([window, v_t.unsqueeze(2)], dim=2)
        new_window = x[:, :, 1:]
    else:  # the new value put in front (newest first), the oldest kept
        x = torch.cat([v_t.unsqueeze(2), window], dim=2)
        new_window = x[:, :, :P]
    w = conv_weight[:, : P + 1] if taps == "causal" else conv_weight[:, P:]
    c = torch.einsum("hj,bhje->bhe", w, x)
    if keep_window:
        new_window = window
    if no_conv:
        c = torch.zeros_like(c)
    return o + c, S_new, z_new, new_window


def _reads_state_before_update(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6, **_):
    """the state is read before token t is added: o_t reads S_t = S + k_t v_t^T (and z_t)"""
    return _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, read_first=True)


def _normalizer_of_last_token(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6, **_):
    """the normalizer is k_t alone: z_t is the running sum z + k_t"""
    return _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, z_last=True)


def _no_normalizer(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6, **_):
    """the attention part is not divided by q_t . z_t + eps"""
    return _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, no_norm=True)


def _window_newest_first(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6, **_):
    """the new value goes in front of the window: the window is oldest first, v_t comes last
    and the oldest value leaves"""
    return _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, shift="right")


def _future_half_of_kernel(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6, **_):
    """the taps P .. 2P are used: those are the masked future taps; the causal ones are
    w[:, :P + 1] (w[:, P] for v_t)"""
    return _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, taps="future")


def _window_not_shifted(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6, **_):
    """the conv cache is returned unchanged: drop its oldest value and append v_t"""
    return _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, keep_window=True)


def _conv_forgotten(q_t, k_t, v_t, S, z, window, conv_weight, eps=1e-6, **_):
    """the conv term c_t is missing from the output: o_t = attention + c_t"""
    return _step(q_t, k_t, v_t, S, z, window, conv_weight, eps, no_conv=True)


EX_07_3 = Exercise(
    id="07.3",
    title="one decode step: state, normalizer and conv cache",
    reference=ref.augmented_linear_attention_step,
    make_inputs=_step_inputs,
    named_sizes=cases(
        "B H D E K n eps",
        ("first token, K = 1", 1, 1, 3, 3, 1, 0, 1e-6),
        ("D != E, B and H > 1", 2, 3, 5, 3, 5, 4, 1e-6),
        ("same shapes, other values", 2, 3, 5, 3, 5, 4, 1e-6),
        ("large eps", 1, 2, 4, 4, 3, 2, 0.5),
        ("the official kernel, long context", 1, 2, 4, 2, 63, 400, 1e-3),
    ),
    random_sizes=between(
        B=(1, 2), H=(1, 3), D=(1, 6), E=(1, 6), K=[1, 3, 5, 7], n=(0, 50), eps=[1e-6, 1e-3, 0.1]
    ),  # fmt: skip
    hints=(
        "Two caches: the linear-attention state (S, z) of lesson 03 and the conv's window of the "
        "last P values. Update both with token t, then read both.",
        "S_t = S + outer(k_t, v_t), z_t = z + k_t, attention = S_t^T q_t / (q_t . z_t + eps). The "
        "conv: x = [window, v_t] (P + 1 values, oldest first), c_t = sum_j w[h, j] x[j] over the "
        "causal taps j = 0..P; the new window is x without its oldest value.",
        "x = torch.cat([window, v_t.unsqueeze(2)], dim=2); "
        "c_t = torch.einsum('hj,bhje->bhe', conv_weight[:, :P + 1], x); "
        "return o_t + c_t, S, z, x[:, :, 1:]",
    ),
    wrong=[
        _reads_state_before_update,
        _normalizer_of_last_token,
        _no_normalizer,
        _window_newest_first,
        _future_half_of_kernel,
        _window_not_shifted,
        _conv_forgotten,
    ],  # fmt: skip
    output_names=("o_t", "S", "z", "window"),
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Decode one token of linear attention plus the causal conv from its caches.",
)


# --- 07.4 the speculative accept / rollback rule ------------------------------------------


def _accept_inputs(s, g):
    B, k, V = s["B"], s["k"], s["V"]
    logits = normal(g, B, k + 1, V)
    choice = logits.argmax(-1)  # (B, k + 1): the target's greedy tokens
    agree = uniform(g, B, 1) < s["agree"]  # rows that agree everywhere
    per_token = uniform(g, B, k) < s["agree"]
    keep = agree | per_token
    noise = torch.randint(0, V, (B, k), generator=g)
    wrong = torch.where(noise == choice[:, :k], (noise + 1) % V, noise)  # surely different
    draft = torch.where(keep, choice[:, :k], wrong)
    return {"draft": draft, "logits": logits}


def _accept_all_matches(draft, logits):
    """every matching draft is counted, also after a mismatch: only the leading run counts
    (once a draft is wrong, the ones after it were proposed from a wrong prefix)"""
    choice = logits.argmax(-1)
    n = (draft == choice[:, :-1]).sum(1)
    return n, choice.gather(1, n.view(-1, 1)).view(-1)


def _same_position(draft, logits):
    """d_i is compared with the target's choice at its own position; it must equal the choice
    one position earlier (logits[:, i] predicts the token after block[i])"""
    choice = logits.argmax(-1)
    n = (draft == choice[:, 1:]).long().cumprod(1).sum(1)
    return n, choice.gather(1, n.view(-1, 1)).view(-1)


def _next_from_last_position(draft, logits):
    """the next token is always the last position's argmax; it is the argmax at position n,
    right after the last accepted draft"""
    n, _ = speculative.accept_draft(draft, logits)
    return n, logits[:, -1].argmax(-1)


def _next_is_the_rejected_draft(draft, logits):
    """at a mismatch the draft token is emitted; the target's own choice replaces it"""
    n, nxt = speculative.accept_draft(draft, logits)
    k = draft.shape[1]
    rejected = draft.gather(1, n.clamp(max=k - 1).view(-1, 1)).view(-1)
    return n, torch.where(n < k, rejected, nxt)


def _no_bonus_token(draft, logits):
    """when all k drafts are accepted, the next token is the target's prediction after d_k
    (argmax of logits[:, k]), not d_k again"""
    n, nxt = speculative.accept_draft(draft, logits)
    return n, torch.where(n == draft.shape[1], draft[:, -1], nxt)


def _accepts_the_mismatch_too(draft, logits):
    """the first mismatching draft is accepted as well: n stops before it"""
    n, _ = speculative.accept_draft(draft, logits)
    k = draft.shape[1]
    n = (n + 1).clamp(max=k)
    return n, logits.argmax(-1).gather(1, n.view(-1, 1)).view(-1)


def _first_row_for_all(draft, logits):
    """row 0's accept length is used for every row: each sequence of the batch has its own n"""
    n, _ = speculative.accept_draft(draft, logits)
    n = n[:1].expand_as(n)
    return n, logits.argmax(-1).gather(1, n.reshape(-1, 1)).view(-1)


EX_07_4 = Exercise(
    id="07.4",
    title="speculative decoding: accept the leading drafts, then correct",
    reference=speculative.accept_draft,
    make_inputs=_accept_inputs,
    named_sizes=cases(
        "B k V agree",
        ("k = 1", 1, 1, 5, 0.5),
        ("all accepted: the bonus token", 2, 4, 7, 1.0),
        ("none accepted", 2, 3, 6, 0.0),
        ("a batch of mixed rows", 6, 5, 4, 0.6),
        ("same shapes, other values", 6, 5, 4, 0.6),
        ("long block", 3, 300, 3, 0.99),
    ),
    random_sizes=between(B=(1, 6), k=(1, 12), V=(2, 20), agree=[0.3, 0.6, 0.9, 1.0]),
    hints=(
        "logits[:, i] is the target's prediction after block[0..i], so draft d_{i+1} is right "
        "when it equals argmax logits[:, i]. Count the leading run of right drafts.",
        "choice = logits.argmax(-1); match = draft == choice[:, :-1]; n = the length of the "
        "leading run of True (a cumulative product). The next token is choice at position n: "
        "the correction, or the bonus token when n = k.",
        "n = match.long().cumprod(dim=1).sum(dim=1); "
        "next_token = choice.gather(1, n.unsqueeze(1)).squeeze(1)",
    ),
    wrong=[
        _accept_all_matches,
        _same_position,
        _next_from_last_position,
        _next_is_the_rejected_draft,
        _no_bonus_token,
        _accepts_the_mismatch_too,
        _first_row_for_all,
    ],  # fmt: skip
    output_names=("n", "next_token"),
    # no TIGHT: the results are integers (counts and token ids, exact at any rtol below 1 / k);
    # float32 logits would give the same ones (test_exercise_strength.py says why)
    difficulty=1,
    minutes=10,
    objective="Accept the drafts the target agrees with, and pick the token to continue with.",
)

EXERCISES = [EX_07_1, EX_07_2, EX_07_3, EX_07_4]
