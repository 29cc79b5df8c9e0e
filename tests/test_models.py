"""The tiny model, its mixers, the MQAR generator and the training loop."""

import functools

import pytest
import torch

from lintutor import causal
from lintutor.data import mqar_batch, mqar_batch_fn
from lintutor.models import LinearAttention, SoftmaxAttention, TinyLM, evaluate, train


def test_mqar_layout_targets_and_mask():
    x, y, m = mqar_batch(8, 30, 5, vocab_size=32, seed=3)
    assert x.shape == y.shape == m.shape == (8, 30) and m.dtype == torch.bool
    n_keys = 31 // 2
    for b in range(8):
        keys, values = x[b, 0:10:2], x[b, 1:10:2]
        assert len(set(keys.tolist())) == 5 and ((keys >= 1) & (keys <= n_keys)).all()
        assert ((values > n_keys) & (values < 32)).all()
        assert (x[b, 10:20] == 0).all()  # padding between context and queries
        assert m[b].sum() == 5
        answer = dict(zip(keys.tolist(), values.tolist()))
        for t in torch.nonzero(m[b]).flatten().tolist():
            assert y[b, t] == answer[x[b, t].item()] == x[b, t + 1]  # the value of the key


def test_mqar_is_seeded():
    a, b, c = (
        mqar_batch(4, 16, 4, seed=1),
        mqar_batch(4, 16, 4, seed=1),
        mqar_batch(4, 16, 4, seed=2),
    )
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    fn = mqar_batch_fn(4, 16, 4, seed=0)
    assert torch.equal(fn(3)[0], fn(3)[0]) and not torch.equal(fn(3)[0], fn(4)[0])


def test_mqar_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="too short"):
        mqar_batch(2, 10, 4)
    with pytest.raises(ValueError, match="n_pairs"):
        mqar_batch(2, 100, 20, vocab_size=16)


@pytest.mark.parametrize("mixer_cls", [SoftmaxAttention, LinearAttention])
@pytest.mark.parametrize("shift_keys", [False, True])
def test_mixers_are_causal(mixer_cls, shift_keys):
    torch.manual_seed(0)
    m = mixer_cls(16, 2, shift_keys=shift_keys).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 5:] += 1.0
    a, b = m(x), m(x2)
    assert a.shape == (2, 9, 16)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("feature_map", ["elu1", "relu", "squared_relu", "taylor2"])
def test_linear_attention_module_forms_agree(feature_map):
    torch.manual_seed(0)
    m = LinearAttention(12, 3, feature_map=feature_map, chunk_size=4).double()
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    chunked = m(x)
    m.attention_fn = causal.causal_linear_attention_recurrent
    torch.testing.assert_close(chunked, m(x), rtol=1e-9, atol=1e-11)


def test_linear_attention_calls_attention_fn():
    calls = []

    def spy(q, k, v, normalize=True):
        calls.append((q.shape, v.shape, normalize))
        return causal.causal_linear_attention_parallel(q, k, v, normalize=normalize)

    m = LinearAttention(8, 2, attention_fn=spy, normalize=False)
    assert m(torch.randn(3, 5, 8)).shape == (3, 5, 8)
    assert calls == [((3, 2, 5, 4), (3, 2, 5, 4), False)]


def test_noncausal_linear_attention_sees_the_whole_sequence():
    torch.manual_seed(0)
    m = LinearAttention(8, 2, causal=False).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(m(x)[:, 0], m(x2)[:, 0])


@pytest.mark.parametrize("mixer", ["softmax", "linear", functools.partial(SoftmaxAttention)])
def test_tinylm_shapes(mixer):
    model = TinyLM(20, d_model=16, n_layers=2, n_heads=2, max_len=12, mixer=mixer)
    assert model(torch.randint(0, 20, (3, 12))).shape == (3, 12, 20)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randint(0, 20, (1, 13)))


def test_tinylm_rejects_unknown_mixer():
    with pytest.raises(ValueError, match="mixer"):
        TinyLM(10, mixer="mamba")


def _fit(mixer, steps=40, seed=0):
    torch.manual_seed(seed)
    model = TinyLM(16, d_model=16, n_layers=1, n_heads=2, max_len=16, mixer=mixer,
                   mixer_kwargs={"shift_keys": True})  # fmt: skip
    eval_fn = lambda m: evaluate(m, mqar_batch(32, 16, 2, 16, seed=99))
    batches = mqar_batch_fn(16, 16, 2, vocab_size=16)
    hist = train(model, batches, steps, lr=1e-2, progress=False, eval_fn=eval_fn, log_every=10)
    return model, hist


def test_train_is_deterministic_and_returns_history():
    _, h1 = _fit("linear")
    _, h2 = _fit("linear")
    assert h1["step"] == [10, 20, 30, 40]
    for key in ["loss", "accuracy", "eval_loss", "eval_accuracy"]:
        assert len(h1[key]) == 4 and h1[key] == h2[key], key


def test_train_lowers_the_loss():
    _, h = _fit("softmax", steps=60)
    assert h["loss"][-1] < 0.8 * h["loss"][0]


def test_evaluate_counts_only_masked_positions():
    model = TinyLM(16, d_model=8, n_layers=1, n_heads=1, max_len=16)
    x, y, m = mqar_batch(4, 16, 2, 16, seed=0)
    logits = model(x)
    y_right = torch.where(m, logits.argmax(-1), y)  # correct wherever the mask is
    assert evaluate(model, (x, y_right, m))["accuracy"] == 1.0
    y_wrong = torch.where(m, (logits.argmax(-1) + 1) % 16, y_right)
    assert evaluate(model, (x, y_wrong, m))["accuracy"] == 0.0
