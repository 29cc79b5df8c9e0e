"""The lesson-07 decoder: its three forms agree in float64. Step-by-step decoding equals the
parallel forward; a block verify from a cache equals token-by-token decoding, logits and the
state after every position; the causal conv hides the future, the leaky one does not."""

import pytest
import torch

from lintutor import decoder
from lintutor.models import train

KINDS = [(a, c, qk) for a in decoder.ATTENTIONS for c in (None, "causal") for qk in (0, 3)]
KIND_IDS = [f"{a}-{c or 'noconv'}-qk{qk}" for a, c, qk in KINDS]


def _model(attention, conv, qk_conv, seed=0, vocab=11, d_model=16, n_layers=2, group_size=4):
    torch.manual_seed(seed)
    m = decoder.DecoderLM(vocab, d_model, n_layers, 2, max_len=80, attention=attention,
                          conv=conv, conv_size=5, group_size=group_size,
                          qk_conv=qk_conv)  # fmt: skip
    m = m.double()
    for p in m.parameters():  # random, not zero-initialised: every path carries signal
        p.data.normal_(0, 0.3)
    return m.eval()


def _tokens(B, T, vocab=11, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def _close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _same_cache(a, b, pos):
    assert a["pos"] == b["pos"] == pos
    for la, lb in zip(a["layers"], b["layers"]):
        assert la.keys() == lb.keys()
        for key in la:
            if key == "fill":
                continue
            x, y = la[key], lb[key]
            if key in ("k", "v"):  # KV buffers: the first pos entries are the cache
                x, y = x[:, :, :pos], y[:, :, :pos]
            _close(x, y)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_step_by_step_decoding_equals_parallel_forward(kind):
    m = _model(*kind)
    x = _tokens(2, 23)  # crosses 5 groups of 4 and fills the conv windows
    full = m(x)
    cache, outs = m.empty_cache(2), []
    for t in range(x.shape[1]):
        logits, cache = m.step(x[:, t], cache)
        outs.append(logits)
    _close(torch.stack(outs, dim=1), full)
    assert cache["pos"] == 23


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("start,k", [(0, 1), (5, 4), (6, 7), (3, 9)])
def test_block_verify_equals_token_by_token(kind, start, k):
    m = _model(*kind)
    x = _tokens(2, start + k, seed=2)
    cache = m.empty_cache(2)
    for t in range(start):
        _, cache = m.step(x[:, t], cache)
    logits, state_at = m.verify(x[:, start:], cache)
    stepped, c = [], cache
    for j in range(k):
        lj, c = m.step(x[:, start + j], c)
        stepped.append(lj)
        _same_cache(state_at(j), c, start + j + 1)  # the state after every position
    _close(logits, torch.stack(stepped, dim=1))
    _close(logits, m(x)[:, start:])


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_decoding_continues_from_any_verified_position(kind):
    """Roll back: continue from the state after position j, as speculative decoding does."""
    m = _model(*kind, seed=3)
    x = _tokens(1, 14, seed=4)
    _, cache = m.prefill(x[:, :6])
    _, state_at = m.verify(x[:, 6:12], cache)
    other = _tokens(1, 3, seed=5)
    for j in (0, 2, 5):
        c, outs = state_at(j), []
        for t in range(3):
            lt, c = m.step(other[:, t], c)
            outs.append(lt)
        ref = m(torch.cat([x[:, : 7 + j], other], dim=1))[:, -3:]
        _close(torch.stack(outs, dim=1), ref)


def test_caches_are_values():
    """Stepping from an old cache (as a rollback does) leaves newer caches intact."""
    m = _model("softmax", "causal", 0)
    x = _tokens(1, 10, seed=6)
    _, c5 = m.prefill(x[:, :5])
    _, c6 = m.step(x[:, 5], c5)
    _, c7 = m.step(x[:, 6], c6)
    m.step(x[:, 9], c5)  # writes position 5 again, from the older cache
    logits, _ = m.step(x[:, 7], c7)
    _close(logits, m(x[:, :8])[:, -1])


def test_prefill_equals_forward_and_max_len_is_enforced():
    m = _model("grouped", "causal", 3)
    x = _tokens(3, 17, seed=7)
    logits, cache = m.prefill(x)
    _close(logits, m(x))
    assert cache["pos"] == 17
    with pytest.raises(ValueError, match="max_len"):
        m.verify(_tokens(1, 81), m.empty_cache(1))


def _input_jacobian_rows(m, T, t):
    """|d logits_t / d x_s| summed, for every input position s (x: the embedding sum)."""
    tokens = _tokens(1, T, seed=8)
    x = (m.tok_emb(tokens) + m.pos_emb(torch.arange(T))).detach().requires_grad_(True)
    h = x
    for block in m.blocks:
        h = block(h)
    (g,) = torch.autograd.grad(m.head(m.norm(h))[0, t].sum(), x)
    return g[0].abs().sum(-1)  # (T,)


@pytest.mark.parametrize("attention", decoder.ATTENTIONS)
def test_causal_conv_model_has_exactly_zero_gradient_to_future_tokens(attention):
    m = _model(attention, "causal", 3, seed=9)
    g = _input_jacobian_rows(m, 20, t=9)
    assert torch.count_nonzero(g[10:]) == 0 and torch.count_nonzero(g[:10]) == 10
    leaky = _model(attention, "leaky", 0, seed=9)
    assert torch.count_nonzero(_input_jacobian_rows(leaky, 20, t=9)[10:]) > 0


def test_leaky_conv_cannot_decode():
    m = _model("linear", "leaky", 0)
    with pytest.raises(ValueError, match="future"):
        m.step(_tokens(1, 1)[:, 0], m.empty_cache(1))
    with pytest.raises(ValueError, match="future"):
        m.prefill(_tokens(1, 4))


def test_fresh_model_starts_as_local_attention_only():
    """alpha = 0 and the conv's zero init: a new grouped + conv model is its local term alone."""
    torch.manual_seed(0)
    both = decoder.DecoderLM(11, 16, 2, 2, max_len=40, attention="grouped", conv="causal")
    assert all(float(b.mixer.global_factor.detach()) == 0 for b in both.blocks)
    assert all(torch.count_nonzero(b.mixer.conv_weight) == 0 for b in both.blocks)
    local = decoder.DecoderLM(11, 16, 2, 2, max_len=40, attention="grouped", conv=None)
    local.load_state_dict(both.state_dict(), strict=False)
    x = _tokens(2, 30)
    _close(both(x), local(x), tol=1e-6)


def test_models_train_loop_trains_it():
    torch.manual_seed(0)
    m = decoder.DecoderLM(8, 16, 1, 2, max_len=16, attention="grouped", conv="causal",
                          group_size=4)  # fmt: skip
    x = torch.arange(16).remainder(8).repeat(4, 1)  # a cyclic sequence: easy to learn

    def batch_fn(step):
        return x, torch.roll(x, -1, dims=1), torch.ones_like(x, dtype=torch.bool)

    h = train(m, batch_fn, steps=40, lr=1e-2, progress=False)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert any(float(b.mixer.global_factor.detach()) != 0 for b in m.blocks)  # alpha learns
    assert any(torch.count_nonzero(b.mixer.conv_weight) for b in m.blocks)


def test_cache_sizes_state_vs_kv():
    layers = {a: decoder.AugmentedAttention(64, 4, attention=a, conv="causal")
              for a in decoder.ATTENTIONS}  # fmt: skip
    sizes = {a: [decoder.cache_bytes(decoder.synthetic_cache(layer, 1, n)) for n in (100, 1000)]
             for a, layer in layers.items()}  # fmt: skip
    assert sizes["linear"][0] == sizes["linear"][1]  # a state: the same size at any length
    assert sizes["grouped"][1] <= sizes["linear"][1] + 2 * 15 * 64 * 4  # + an open group < G
    kv = sizes["softmax"]
    assert kv[1] - kv[0] == 900 * 2 * 64 * 4  # + k and v (64 floats each) per token
    x = torch.randn(1, 64)
    for layer in layers.values():  # the synthetic cache is a valid cache to step from
        y, _ = layer.step(x, decoder.synthetic_cache(layer, 1, 1000), 1000)
        assert y.shape == (1, 64) and torch.isfinite(y).all()


def test_leak_losses_agree_for_a_causal_model_only():
    x = _tokens(3, 12, seed=10)
    batch = (x, torch.roll(x, -1, dims=1), torch.ones_like(x, dtype=torch.bool))
    causal = decoder.leak_losses(_model("grouped", "causal", 3, seed=11), batch)
    assert abs(causal["teacher_forced"] - causal["prefix_only"]) < 1e-10
    leaky = decoder.leak_losses(_model("grouped", "leaky", 0, seed=11), batch)
    assert abs(leaky["teacher_forced"] - leaky["prefix_only"]) > 1e-3


def test_decode_cost_rows():
    layers = {a: decoder.AugmentedAttention(32, 4, attention=a, conv="causal")
              for a in ("softmax", "linear")}  # fmt: skip
    rows = {a: decoder.decode_cost(layer, [16, 64], repeats=2) for a, layer in layers.items()}
    for a in rows:
        assert [r["length"] for r in rows[a]] == [16, 64]
        assert all(r["seconds_per_token"] > 0 for r in rows[a])
    assert rows["linear"][0]["cache_bytes"] == rows["linear"][1]["cache_bytes"]
    kv = [r["cache_bytes"] for r in rows["softmax"]]
    assert kv[1] - kv[0] == 48 * 2 * 32 * 4
