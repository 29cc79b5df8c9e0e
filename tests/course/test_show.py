"""`show(fn)` prints the package's version of an exercise after its check ("compare with yours")."""

import lintutor
from lintutor import causal


def test_show_prints_the_source_with_where_it_lives(capsys):
    lintutor.show(causal.causal_linear_attention_step)
    out = capsys.readouterr().out
    assert out.startswith(
        "The package's version, lintutor.causal.causal_linear_attention_step (compare with yours):"
    )
    assert "def causal_linear_attention_step(q_t, k_t, v_t, state" in out


def test_show_takes_a_title(capsys):
    lintutor.show(causal.causal_linear_attention_step, title="Ours:")
    assert capsys.readouterr().out.startswith("Ours:\n\ndef causal_linear_attention_step(")
