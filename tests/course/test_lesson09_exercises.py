"""Lesson 09's checks: the cases cover what the lesson promises, every known mistake is rejected
and named, right answers written other ways pass, an answer remembered from one call fails."""

import torch

from lintutor.course.exercises import check, get
from lintutor.course.exercises import lesson09 as l09

IDS = ("09.1", "09.2", "09.3", "09.4")


def _result(ex_id, fn):
    return check(ex_id, fn, show=False)


def test_each_exercise_has_six_known_mistakes_or_more():
    """(tests/course/test_exercises.py runs each reference on 50 seeds and rejects each
    mistake.)"""
    assert all(len(get(ex_id).wrong) >= 6 for ex_id in IDS)


def test_the_cases_cover_what_the_lesson_promises():
    named = {ex_id: dict(get(ex_id).named_sizes) for ex_id in IDS}
    rec, chunked = named["09.2"], named["09.4"]
    for table in (rec, chunked):
        assert any(s["T"] == 1 for s in table.values())
        assert any(s["T"] % 2 for s in table.values() if s["T"] > 1)  # odd T
        assert any(s["T"] >= 300 for s in table.values())  # long T
        assert any(s["D"] != s["E"] for s in table.values())
        assert any(s["B"] > 1 and s["H"] > 1 for s in table.values())
        assert any(s["state"] for s in table.values()) and any(
            not s["state"] for s in table.values()
        )
    assert any(s["T"] % s["C"] and s["T"] > s["C"] for s in chunked.values())
    assert get("09.2").output_names == get("09.4").output_names == ("output", "final state")
    ut = named["09.3"]
    assert any(s["C"] == 1 for s in ut.values()) and any(s["C"] == 64 for s in ut.values())
    assert any(s.get("same_keys") for s in ut.values())
    assert any(s.get("raw_keys") for s in named["09.1"].values())
    for ex_id, table in named.items():  # same shapes twice, other values: no memoized answers
        sizes = [tuple(sorted(s.items())) for s in table.values()]
        assert len(sizes) > len(set(sizes)), ex_id


def test_right_answers_written_other_ways_pass():
    def step_as_transition(q_t, k_t, v_t, beta_t, state, scale=1.0):  # (I - b k k^T) S + b k v^T
        b = beta_t[..., None, None]
        kk = k_t.unsqueeze(-1) * k_t.unsqueeze(-2)
        S = state - b * kk @ state + b * k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        return scale * torch.einsum("bhd,bhde->bhe", q_t, S), S

    def recurrent_from_steps(q, k, v, beta, initial_state=None, output_final_state=False,
                             scale=1.0):  # fmt: skip
        B, H, T, D = q.shape
        S = initial_state if initial_state is not None else q.new_zeros(B, H, D, v.shape[-1])
        outs = []
        for t in range(T):
            o, S = step_as_transition(q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t], S, scale)
            outs.append(o)
        return torch.stack(outs, 2), S

    def ut_by_forward_substitution(k, v, beta):  # row by row, no library solve
        A = ((beta.unsqueeze(-1) * k) @ k.transpose(-1, -2)).tril(-1)
        rhs = beta.unsqueeze(-1) * torch.cat([k, v], -1)
        rows = []
        for t in range(k.shape[-2]):
            prev = torch.stack(rows, -2) if rows else rhs[..., :0, :]
            rows.append(rhs[..., t, :] - (A[..., t, :t].unsqueeze(-2) @ prev).squeeze(-2))
        x = torch.stack(rows, -2)
        return x[..., : k.shape[-1]], x[..., k.shape[-1] :]

    assert _result("09.1", step_as_transition).passed
    assert _result("09.2", recurrent_from_steps).passed
    assert _result("09.3", ut_by_forward_substitution).passed


def test_an_answer_remembered_from_the_first_call_fails():
    memory = {}

    def remembers(k, v, beta):
        key = tuple(k.shape)
        if key not in memory:
            memory[key] = get("09.3").reference(k, v, beta)
        return memory[key]

    assert _result("09.3", remembers).status == "fail"


def test_a_recurrent_answer_to_the_chunked_exercise_is_the_wrong_form_and_vice_versa():
    """Right numbers in the other form fail, and the verdict names the form it saw."""
    from lintutor.delta import delta_rule_chunked
    from lintutor.delta_gated import gated_delta_rule_recurrent

    def recurrent(q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0,
                  chunk_size=64):  # fmt: skip
        return gated_delta_rule_recurrent(q, k, v, beta, g, initial_state, output_final_state,
                                          scale)  # fmt: skip

    def chunked(q, k, v, beta, initial_state=None, output_final_state=False, scale=1.0):
        return delta_rule_chunked(q, k, v, beta, initial_state, output_final_state, scale,
                                  chunk_size=4)  # fmt: skip

    for ex_id, fn, seen in (("09.4", recurrent, "recurrent"), ("09.2", chunked, "chunked")):
        result = _result(ex_id, fn)
        assert result.status == "fail" and "wrong form" in result.message, ex_id
        assert f"{seen} form" in result.message, ex_id  # the form it saw; the asked one differs
    assert l09.EX_09_2.form == "recurrent" and l09.EX_09_4.form == "chunked"
    assert l09.EX_09_4.timeout >= 10


def test_a_chunked_answer_built_on_the_packages_ut_transform_passes():
    """09.4's text allows delta.ut_transform (shown after 09.3) inside the learner's own loop."""
    from lintutor.delta import ut_transform
    from lintutor.gated import segment_sum

    def mine(q, k, v, beta, g, initial_state=None, output_final_state=False, scale=1.0,
             chunk_size=64):  # fmt: skip
        B, H, T, D = q.shape
        S = q.new_zeros(B, H, D, v.shape[-1]) if initial_state is None else initial_state
        outs = []
        for start in range(0, T, chunk_size):
            c = slice(start, start + chunk_size)
            q_c, k_c, v_c, g_c = q[:, :, c], k[:, :, c], v[:, :, c], g[:, :, c]
            G = torch.cumsum(g_c, -1)
            w, u = ut_transform(k_c, v_c, beta[:, :, c], g_c)
            new = u - w @ S
            scores = (q_c @ k_c.transpose(-1, -2)) * torch.exp(segment_sum(g_c))
            outs.append(scale * ((torch.exp(G)[..., None] * q_c) @ S + scores @ new))
            to_end = torch.exp(G[..., -1:] - G)[..., None]
            S = torch.exp(G[..., -1])[..., None, None] * S + (to_end * k_c).transpose(-1, -2) @ new
        return torch.cat(outs, 2), S

    assert _result("09.4", mine).passed
