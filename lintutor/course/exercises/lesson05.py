"""Lesson 05 exercises: Mamba's selective scan, its dictionary to gated linear attention, and
its implicit attention matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lintutor import mamba as ref
from lintutor.course.checker import Exercise, between, cases, normal
from lintutor.course.exercises._mistakes import TIGHT, memo


def _ssm_inputs(s, g, with_x=True, with_D=True):
    b, T, d, N = s["b"], s["T"], s["d"], s["N"]
    n = lambda *shape: normal(g, *shape)  # noqa: E731
    out = {}
    if with_x:
        out["x"] = n(b, T, d)
    out["delta"] = F.softplus(n(b, T, d))
    out["A"] = -torch.exp(n(d, N) / 2)
    out["B"] = n(b, T, N)
    out["C"] = n(b, T, N)
    if with_D:
        out["D"] = n(d)
    out["discretization"] = s["discretization"]
    return out


SSM_SIZES = cases(
    "b T d N discretization",
    ("T=1", 1, 1, 2, 3, "simple"),
    ("odd T, one channel", 1, 7, 1, 4, "simple"),
    ("b > 1, d != N", 2, 6, 3, 5, "simple"),
    ("zero-order hold", 2, 9, 4, 2, "zoh"),
    ("T = 300, zero-order hold", 1, 300, 2, 3, "zoh"),
    ("b > 1, d != N, again with other values", 2, 6, 3, 5, "simple"),
)
SSM_RANDOM = between(b=(1, 3), T=(2, 64), d=(1, 5), N=(2, 6), discretization=["simple", "zoh"])


# --- 05.1 the selective scan ------------------------------------------------------------------


def _scan(x, delta, A, B, C, D, A_bar, B_bar, read_before=False, shortcut=True):
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])  # (b, d, N)
    ys = []
    for t in range(x.shape[1]):
        h_new = A_bar[:, t] * h + B_bar[:, t] * x[:, t].unsqueeze(-1)
        y = ((h if read_before else h_new) * C[:, t].unsqueeze(1)).sum(-1)
        ys.append(y + D * x[:, t] if shortcut else y)
        h = h_new
    return torch.stack(ys, dim=1)


def _scan_euler_A(x, delta, A, B, C, D, discretization="simple"):
    """A was discretized as 1 + Delta A (Euler); Mamba's forget gate is exp(Delta A)"""
    _, B_bar = ref.discretize(delta, A, B, discretization)
    return _scan(x, delta, A, B, C, D, 1 + delta.unsqueeze(-1) * A, B_bar)


def _scan_no_D(x, delta, A, B, C, D, discretization="simple"):
    """the shortcut D * x_t is missing from y_t"""
    return _scan(x, delta, A, B, C, D, *ref.discretize(delta, A, B, discretization), shortcut=False)


def _scan_no_delta_on_B(x, delta, A, B, C, D, discretization="simple"):
    """B was used without Delta: the input gate Delta_t must scale what is written (B~ = Delta B)"""
    A_bar, _ = ref.discretize(delta, A, B, discretization)
    return _scan(x, delta, A, B, C, D, A_bar, B.unsqueeze(2).expand_as(A_bar))


def _scan_read_before(x, delta, A, B, C, D, discretization="simple"):
    """y_t reads the state before this step's update (use h_t)"""
    bars = ref.discretize(delta, A, B, discretization)
    return _scan(x, delta, A, B, C, D, *bars, read_before=True)


def _scan_always_simple(x, delta, A, B, C, D, discretization="simple"):
    """discretization='zoh' was ignored: zero-order hold uses B~ = (exp(Delta A) - 1) / A * B"""
    return _scan(x, delta, A, B, C, D, *ref.discretize(delta, A, B, "simple"))


def _scan_no_delta_on_A(x, delta, A, B, C, D, discretization="simple"):
    """the forget gate is exp(A) without Delta: the step size must scale A too"""
    _, B_bar = ref.discretize(delta, A, B, discretization)
    return _scan(x, delta, A, B, C, D, torch.exp(A).expand_as(B_bar), B_bar)


def _scan_shortcut_in_state(x, delta, A, B, C, D, discretization="simple"):
    """the shortcut D x_t is added to the state h (and so decays and is read by C); it is added
    to the output: y_t = C_t . h_t + D x_t"""
    A_bar, B_bar = ref.discretize(delta, A, B, discretization)
    h, ys = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]), []
    for t in range(x.shape[1]):
        h = A_bar[:, t] * h + B_bar[:, t] * x[:, t].unsqueeze(-1) + (D * x[:, t]).unsqueeze(-1)
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
    return torch.stack(ys, dim=1)


def _scan_output_buffer(x, delta, A, B, C, D, discretization="simple"):
    """the outputs are written into a buffer of 256 steps made once: for T > 256 it is too small;
    stack the y_t (or allocate (b, T, d))"""
    y = ref.selective_scan_recurrent(x, delta, A, B, C, D, discretization)
    buffer = y.new_zeros(y.shape[0], 256, y.shape[2])
    buffer[:, : y.shape[1]] = y  # fails for T > 256
    return buffer[:, : y.shape[1]]


def _scan_memo(x, delta, A, B, C, D, discretization="simple"):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.selective_scan_recurrent, x, delta, A, B, C, D, discretization)


EX_05_1 = Exercise(
    id="05.1",
    title="Mamba's selective scan",
    form="recurrent",
    reference=ref.selective_scan_recurrent,
    make_inputs=_ssm_inputs,
    named_sizes=SSM_SIZES,
    random_sizes=SSM_RANDOM,
    time_dim=1,
    hints=(
        "Discretize first (A~ = exp(Delta A); B~ = Delta B, or zero-order hold), then one loop "
        "over t: h = A~_t * h + B~_t x_t, y_t = C_t . h + D * x_t.",
        "h has shape (b, d, N): one N-vector per channel. A~_t and B~_t are (b, d, N); x_t (b, d) "
        "needs a trailing axis; C_t (b, N) is shared by the channels, so sum h * C_t[:, None, :] "
        "over N. discretize(delta, A, B, discretization) from lintutor.mamba does the first step.",
        "A_bar, B_bar = discretize(delta, A, B, discretization)\n"
        "for t in range(T): h = A_bar[:, t] * h + B_bar[:, t] * x[:, t, :, None]; "
        "ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])",
    ),
    wrong=[
        _scan_euler_A,
        _scan_no_D,
        _scan_no_delta_on_B,
        _scan_read_before,
        _scan_always_simple,
        _scan_no_delta_on_A,
        _scan_shortcut_in_state,
        _scan_output_buffer,
        _scan_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=20,
    objective="Write Mamba's selective scan as a plain loop: discretize, update the state, read "
    "it.",
)


# --- 05.2 the dictionary: selective SSM -> gated linear attention ------------------------------


def _map_inputs(s, g):
    return _ssm_inputs(s, g, with_D=False)


def _map(x, delta, A, B, C, discretization, swap=False, v_gate=True, log=True, with_delta=True,
         zoh=True):  # fmt: skip
    q, k, v, gl = ref.mamba_to_gated_linear_attention(
        x, delta, A, B, C, discretization if zoh else "simple"
    )
    if swap:
        q, k = k, q
    if not v_gate:
        v = x.transpose(1, 2).unsqueeze(-1)
    if not with_delta:
        gl = A.unsqueeze(0).unsqueeze(2).expand_as(gl)
    if not log:
        gl = torch.exp(gl)
    return q, k, v, gl


def _map_swap(x, delta, A, B, C, discretization="simple"):
    """q and k are swapped: C reads the state (query), B writes it (key)"""
    return _map(x, delta, A, B, C, discretization, swap=True)


def _map_no_input_gate(x, delta, A, B, C, discretization="simple"):
    """v = x without Delta: the input gate Delta_t belongs in v"""
    return _map(x, delta, A, B, C, discretization, v_gate=False)


def _map_gate_not_log(x, delta, A, B, C, discretization="simple"):
    """the gate is returned as exp(Delta A); the forms take log-gates g = Delta A"""
    return _map(x, delta, A, B, C, discretization, log=False)


def _map_no_delta_in_gate(x, delta, A, B, C, discretization="simple"):
    """the log-gate is A without Delta_t: the forget gate is exp(Delta_t A), different at every
    step"""
    return _map(x, delta, A, B, C, discretization, with_delta=False)


def _map_no_zoh_factor(x, delta, A, B, C, discretization="simple"):
    """with zero-order hold the key carries (exp(Delta A) - 1) / (Delta A); it is missing"""
    return _map(x, delta, A, B, C, discretization, zoh=False)


def _map_v_without_head_axis(x, delta, A, B, C, discretization="simple"):
    """v is (b, d, T) without its last axis: each of the d heads has one value, E = 1, so v is
    (b, d, T, 1)"""
    q, k, v, g = _map(x, delta, A, B, C, discretization)
    return q, k, v.squeeze(-1), g


def _map_one_head_for_q(x, delta, A, B, C, discretization="simple"):
    """q is (b, 1, T, N), one copy of C: every one of the d heads reads with C, so q is
    (b, d, T, N) (expand it)"""
    q, k, v, g = _map(x, delta, A, B, C, discretization)
    return q[:, :1], k, v, g


def _map_memo(x, delta, A, B, C, discretization="simple"):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.mamba_to_gated_linear_attention, x, delta, A, B, C, discretization)


EX_05_2 = Exercise(
    id="05.2",
    title="the selective SSM as gated linear attention",
    reference=ref.mamba_to_gated_linear_attention,
    make_inputs=_map_inputs,
    named_sizes=SSM_SIZES,
    random_sizes=SSM_RANDOM,
    time_dim=2,
    output_names=("q", "k", "v", "g"),
    hints=(
        "One head per channel d. Read h_t = exp(Delta_t A) h_{t-1} + B_t^T (Delta_t x_t) as "
        "S_t = a_t * S_{t-1} + k_t v_t^T and y_t = C_t h_t as o_t = S_t^T q_t.",
        "q = C and k = B, repeated over the d channels: (b, d, T, N). v = Delta * x with one "
        "value per head: (b, d, T, 1). The log-gate is Delta_t[d] * A[d, n]: (b, d, T, N). With "
        "zero-order hold k also carries the factor (exp(Delta A) - 1) / (Delta A).",
        "q = C[:, None].expand(-1, d, -1, -1); k = B[:, None].expand(-1, d, -1, -1); "
        "g = (delta[..., None] * A).transpose(1, 2); "
        "if discretization == 'zoh': k = k * torch.expm1(g) / g; "
        "v = (delta * x).transpose(1, 2)[..., None]; return q, k, v, g",
    ),
    wrong=[
        _map_swap,
        _map_no_input_gate,
        _map_gate_not_log,
        _map_no_delta_in_gate,
        _map_no_zoh_factor,
        _map_v_without_head_axis,
        _map_one_head_for_q,
        _map_memo,
    ],
    **TIGHT,
    difficulty=2,
    minutes=15,
    objective="Translate Mamba's letters into gated linear attention's q, k, v and log-gates.",
)


# --- 05.3 Mamba's implicit attention matrix ---------------------------------------------------


def _attn_inputs(s, g):
    return _ssm_inputs(s, g, with_x=False, with_D=False)


def _attn(delta, A, B, C, discretization, inclusive=False, transpose=False, causal=True,
          with_delta=True, swap=False):  # fmt: skip
    if swap:
        B, C = C, B
    alpha = ref.mamba_attention_matrix(delta, A, B, C, discretization)
    if not with_delta:
        alpha = alpha / delta.transpose(1, 2).unsqueeze(-2)  # drop Delta_s
    if inclusive:
        alpha = alpha * torch.exp(delta.transpose(1, 2).unsqueeze(-2) * A.mean(-1)[:, None, None])
    if not causal:
        alpha = alpha + alpha.transpose(-1, -2).triu(1)
    return alpha.transpose(-1, -2) if transpose else alpha


def _attn_no_delta(delta, A, B, C, discretization="simple"):
    """the input gate Delta_s is missing from alpha[t, s]"""
    return _attn(delta, A, B, C, "simple", with_delta=False)


def _attn_inclusive(delta, A, B, C, discretization="simple"):
    """the decay includes step s itself; it runs over s+1 ... t"""
    return _attn(delta, A, B, C, discretization, inclusive=True)


def _attn_transposed(delta, A, B, C, discretization="simple"):
    """alpha is transposed: rows are outputs t, columns inputs s"""
    return _attn(delta, A, B, C, discretization, transpose=True)


def _attn_not_causal(delta, A, B, C, discretization="simple"):
    """entries above the diagonal (s > t) must be 0: Mamba is causal"""
    return _attn(delta, A, B, C, discretization, causal=False)


def _attn_swapped(delta, A, B, C, discretization="simple"):
    """B and C are swapped: C_t reads at t, B_s writes at s"""
    return _attn(delta, A, B, C, discretization, swap=True)


def _attn_always_simple(delta, A, B, C, discretization="simple"):
    """discretization='zoh' was ignored: with zero-order hold B~_s = (exp(Delta_s A) - 1) / A
    * B_s replaces Delta_s B_s"""
    return ref.mamba_attention_matrix(delta, A, B, C, "simple")


_CAUSAL_256 = torch.ones(256, 256, dtype=torch.bool).tril()


def _attn_mask_buffer(delta, A, B, C, discretization="simple"):
    """the causal mask is sliced from a 256 x 256 buffer made once: for T > 256 it is too small;
    build it for this T"""
    T = delta.shape[1]
    return ref.mamba_attention_matrix(delta, A, B, C, discretization) * _CAUSAL_256[:T, :T]


def _attn_memo(delta, A, B, C, discretization="simple"):
    """the answer is cached by the shapes of the inputs: a second call with the same shapes and
    other values returns the first call's result"""
    return memo(ref.mamba_attention_matrix, delta, A, B, C, discretization)


EX_05_3 = Exercise(
    id="05.3",
    title="Mamba's implicit attention matrix",
    reference=ref.mamba_attention_matrix,
    make_inputs=_attn_inputs,
    named_sizes=SSM_SIZES,
    random_sizes=SSM_RANDOM,
    time_dim=-2,
    hints=(
        "alpha[d, t, s] is how much x_s[d] contributes to y_t[d]: C_t reads, B~_s wrote, and "
        "every forget gate after s and up to t decayed it in between.",
        "B~ from discretize (b, T, d, N). The decay for channel d, state n is "
        "exp(A[d, n] * (Delta_{s+1} + ... + Delta_t)[d]): a segment sum over time of "
        "Delta[..., d] * A[d, n] (segment_sum from lesson 04, (b, d, N, T, T)). Contract over n.",
        "_, B_bar = discretize(delta, A, B, discretization); "
        "G = segment_sum((delta[..., None] * A).permute(0, 2, 3, 1)); "
        "return torch.einsum('btn,bdnts,bsdn->bdts', C, torch.exp(G), B_bar)",
    ),
    wrong=[
        _attn_no_delta,
        _attn_inclusive,
        _attn_transposed,
        _attn_not_causal,
        _attn_swapped,
        _attn_always_simple,
        _attn_mask_buffer,
        _attn_memo,
    ],
    **TIGHT,
    difficulty=3,
    minutes=20,
    objective="Build Mamba's implicit attention matrix from segment sums of Delta A.",
)

EXERCISES = [EX_05_1, EX_05_2, EX_05_3]
