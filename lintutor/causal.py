"""Causal linear attention in three schedules of one computation (lesson 03).

    S_t = S_{t-1} + k_t v_t^T          (D, E) matrix state
    z_t = z_{t-1} + k_t                (D,)   normalizer state
    o_t = S_t^T q_t / (z_t . q_t + eps)       (normalize=True)
    o_t = S_t^T q_t                            (normalize=False)

Section 3.4 of Katharopoulos et al. 2020, "Transformers are RNNs". q and k are already
feature-mapped (phi(q), phi(k); see `lintutor.featuremaps`), so the forms only schedule the sums:

- `_recurrent`: the definition, token by token. O(T*D*E) time, O(D*E) memory.
- `_parallel`:  (q k^T masked to s <= t) v, a T x T matrix. O(T^2*(D+E)) time and O(T^2) memory.
- `_chunked`:   chunks of C tokens; inside a chunk the masked matmul, across chunks the state.
                O(T*C*(D+E) + T*D*E) time, O(C^2 + D*E) memory. This is what GPU kernels run.

State convention, the same in every form: with normalize=False the state is the tensor S
(B, H, D, E); with normalize=True it is the tuple (S, z) with z (B, H, D). All forms take
`initial_state` (checked and unpacked by `initial_state_or_zeros`) and return
`(o, final_state)` when `output_final_state=True`.

Input checks (`check_causal_inputs`): shapes, one floating dtype for q, k, v and the state, and,
with normalize=True, no negative normalizer q_t . z_t (raw q, k without a positive feature map
would divide by it silently; lesson 02's `linear_attention` refuses them the same way). T = 0 is
a sequence too: empty outputs and the initial state as the final state.
"""

from __future__ import annotations

import torch

from lintutor._validate import (
    check_dtypes,
    check_nonnegative,
    check_positive,
    check_shapes,
    check_tensors,
)
from lintutor.softmax import causal_mask

NORMALIZER = "the normalizer phi(q_t) . z_t"


def initial_state_or_zeros(q, v, normalize: bool, initial_state, name="initial_state",
                           sources=("q", "v")):  # fmt: skip
    """The state to start from as (S, z): initial_state checked, or zeros when it is None.

    S is (B, H, D, E); z is (B, H, D), or None when normalize=False (the state is S alone).
    A state of the wrong kind or shape is reported with what was expected, under `name` (the
    caller's argument), its sizes taken from q (B, H, T, D) and v (..., E) (named `sources`).
    The state's dtype is not checked here (the kernels keep a float32 state for half-precision
    q); the forms below check it with `check_dtypes`.
    """
    B, H, _, D = q.shape
    E = v.shape[-1]
    if initial_state is None:
        S = q.new_zeros(B, H, D, E)
        z = q.new_zeros(B, H, D) if normalize else None
        return S, z
    sq, sv = sources
    bound = {"B": (B, sq), "H": (H, sq), "D": (D, sq), "E": (E, sv)}
    if normalize:
        if not (isinstance(initial_state, (tuple, list)) and len(initial_state) == 2):
            raise TypeError(
                f"{name}: with normalize=True the state is the tuple (S, z) with "
                f"S (B, H, D, E) = ({B}, {H}, {D}, {E}) and z (B, H, D) = ({B}, {H}, {D}), "
                f"got {_describe(initial_state)}"
            )
        S, z = initial_state
        check_shapes(bound, **{f"{name}[0] (S)": (S, "B H D E"), f"{name}[1] (z)": (z, "B H D")})
        return S, z
    if not isinstance(initial_state, torch.Tensor):
        raise TypeError(
            f"{name}: with normalize=False the state is the tensor S (B, H, D, E) = "
            f"({B}, {H}, {D}, {E}), got {_describe(initial_state)}"
        )
    check_shapes(bound, **{name: (initial_state, "B H D E")})
    return initial_state, None


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of length {len(x)}"
    return type(x).__name__


def check_causal_inputs(q, k, v, normalize, initial_state, name="initial_state"):
    """q, k (B, H, T, D) and v (B, H, T, E) of one floating dtype, and the state to start from
    as (S, z) (zeros when initial_state is None), checked and of the same dtype."""
    check_tensors(q=(q, "B H T D"), k=(k, "B H T D"), v=(v, "B H T E"))
    S, z = initial_state_or_zeros(q, v, normalize, initial_state, name)
    parts = {f"{name}[0] (S)": S, f"{name}[1] (z)": z} if normalize else {name: S}
    check_dtypes(q=q, **parts)
    return S, z


def check_step_inputs(q_t, k_t, v_t, state, normalize):
    """q_t, k_t (B, H, D) and v_t (B, H, E) of one floating dtype, and the state (S, z), checked
    as `check_causal_inputs` checks it but named `state` (zeros when state is None)."""
    check_tensors(q_t=(q_t, "B H D"), k_t=(k_t, "B H D"), v_t=(v_t, "B H E"))
    S, z = initial_state_or_zeros(q_t.unsqueeze(2), v_t, normalize, state, "state", ("q_t", "v_t"))
    check_dtypes(q_t=q_t, **({"state[0] (S)": S, "state[1] (z)": z} if normalize else {"state": S}))
    return S, z


def causal_linear_attention_recurrent(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6
):
    """The definition as an RNN: one state update per token. O(T*D*E) time, O(D*E) memory."""
    S, z = check_causal_inputs(q, k, v, normalize, initial_state)
    outs, dens = [], []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = q[:, :, t], k[:, :, t], v[:, :, t]  # (B, H, D), (B, H, D), (B, H, E)
        S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # (B, H, D, E): S += k_t v_t^T
        o_t = torch.einsum("bhd,bhde->bhe", q_t, S)  # (B, H, E)
        if normalize:
            z = z + k_t  # (B, H, D)
            dens.append((q_t * z).sum(-1, keepdim=True))  # (B, H, 1): q_t . z_t
            o_t = o_t / (dens[-1] + eps)
        outs.append(o_t)
    if dens:
        check_nonnegative(NORMALIZER, torch.cat(dens, -1))
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(v.shape)  # (B, H, T, E)
    if output_final_state:
        return o, ((S, z) if normalize else S)
    return o


def causal_linear_attention_parallel(
    q, k, v, normalize=True, initial_state=None, output_final_state=False, eps=1e-6
):
    """Masked T x T form: o = tril(q k^T) v (+ q S_0). O(T^2*(D+E)) time, O(T^2) memory."""
    S0, z0 = check_causal_inputs(q, k, v, normalize, initial_state)
    T = q.shape[2]
    mask = causal_mask(T, device=q.device)  # (T, T), s <= t
    scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)  # (B, H, T, T)
    o = scores @ v + q @ S0  # (B, H, T, E)
    S = S0 + k.transpose(-1, -2) @ v  # (B, H, D, E)
    z = None
    if normalize:
        den = scores.sum(-1) + (q * z0.unsqueeze(2)).sum(-1)  # (B, H, T)
        check_nonnegative(NORMALIZER, den)
        o = o / (den.unsqueeze(-1) + eps)
        z = z0 + k.sum(2)  # (B, H, D)
    if output_final_state:
        return o, ((S, z) if normalize else S)
    return o


def causal_linear_attention_chunked(
    q,
    k,
    v,
    normalize=True,
    initial_state=None,
    output_final_state=False,
    eps=1e-6,
    chunk_size=64,
):
    """Chunks of C tokens: masked matmul inside, state across. O(T*C*(D+E) + T*D*E) time.

    Any T works; the last chunk is simply shorter. Same arguments as the other forms plus
    chunk_size.
    """
    S, z = check_causal_inputs(q, k, v, normalize, initial_state)
    chunk_size = check_positive("chunk_size", chunk_size)
    T = q.shape[2]
    full_mask = causal_mask(chunk_size, device=q.device)  # (C, C), s <= t
    outs = []
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        q_c, k_c, v_c = q[:, :, start:end], k[:, :, start:end], v[:, :, start:end]  # (B,H,C,*)
        mask = full_mask[: end - start, : end - start]  # (C, C)
        scores = (q_c @ k_c.transpose(-1, -2)).masked_fill(~mask, 0.0)  # (B, H, C, C)
        o_c = scores @ v_c + q_c @ S  # intra-chunk + inter-chunk (state of earlier chunks)
        if normalize:
            den = scores.sum(-1) + (q_c * z.unsqueeze(2)).sum(-1)  # (B, H, C)
            check_nonnegative(NORMALIZER, den)
            o_c = o_c / (den.unsqueeze(-1) + eps)
            z = z + k_c.sum(2)  # (B, H, D)
        S = S + k_c.transpose(-1, -2) @ v_c  # (B, H, D, E)
        outs.append(o_c)
    o = torch.cat(outs, dim=2) if outs else v.new_zeros(v.shape)  # (B, H, T, E)
    if output_final_state:
        return o, ((S, z) if normalize else S)
    return o


def causal_linear_attention_step(q_t, k_t, v_t, state, normalize=True, eps=1e-6):
    """One decode step from `state`: returns (o_t (B, H, E), new state). O(D*E) per token.

    q_t, k_t (B, H, D) and v_t (B, H, E) are the new token; state is S or (S, z) as above.
    """
    S, z = check_step_inputs(q_t, k_t, v_t, state, normalize)
    S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # (B, H, D, E)
    o_t = torch.einsum("bhd,bhde->bhe", q_t, S)  # (B, H, E)
    if normalize:
        z = z + k_t
        den = (q_t * z).sum(-1, keepdim=True)  # (B, H, 1)
        check_nonnegative(NORMALIZER, den)
        o_t = o_t / (den + eps)
        return o_t, (S, z)
    return o_t, S
