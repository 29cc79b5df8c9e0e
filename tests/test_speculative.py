"""Speculative decoding (lesson 07): the accept rule, greedy speculative output equal to plain
greedy output token for token (many prompts, lengths, k, drafts and targets), and tree
verification equal to running every root-to-node path separately, with the naive flattened
conv shown wrong."""

import copy

import pytest
import torch

from lintutor import decoder, speculative
from lintutor.verify import tree_layout

V = 9


def _model(attention, conv, qk_conv=0, seed=0, d_model=16, n_layers=2, scale=0.5):
    torch.manual_seed(seed)
    m = decoder.DecoderLM(V, d_model, n_layers, 2, max_len=128, attention=attention, conv=conv,
                          conv_size=5, group_size=4, qk_conv=qk_conv).double()  # fmt: skip
    for p in m.parameters():
        p.data.normal_(0, scale)
    return m.eval()


def _noisy_copy(m, noise, seed):
    """A draft that agrees with the target often, but not always."""
    d = copy.deepcopy(m)
    g = torch.Generator().manual_seed(seed)
    for p in d.parameters():
        p.data += noise * torch.randn(p.shape, generator=g, dtype=p.dtype)
    return d


def test_accept_rule_by_hand():
    logits = torch.full((3, 4, 5), -1.0)
    choice = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])  # target argmax per pos
    logits.scatter_(2, choice.unsqueeze(-1), 1.0)
    draft = torch.tensor([[1, 2, 3],  # all accepted: next is the bonus token after d_3
                          [1, 0, 3],  # d_2 wrong: d_3 matching later does not count
                          [0, 2, 3]])  # fmt: skip
    n, nxt = speculative.accept_draft(draft, logits)
    assert n.tolist() == [3, 1, 0]
    assert nxt.tolist() == [4, 2, 1]  # argmax at position n: bonus, correction, correction
    with pytest.raises(ValueError, match="k \\+ 1"):
        speculative.accept_draft(draft, logits[:, :3])


TARGETS = [("grouped", "causal", 0), ("linear", "causal", 3), ("softmax", "causal", 0),
           ("grouped", None, 3)]  # fmt: skip


@pytest.mark.parametrize("target_kind", TARGETS, ids=["-".join(map(str, t)) for t in TARGETS])
def test_speculative_equals_plain_greedy(target_kind):
    target = _model(*target_kind)
    drafts = {
        "random": _model("linear", "causal", 0, seed=1, d_model=8, n_layers=1),
        "noisy copy": _noisy_copy(target, 0.15, seed=2),
        "exact copy": copy.deepcopy(target),
    }
    g = torch.Generator().manual_seed(3)
    checked, rates, seen = 0, {}, set()
    for name, draft in drafts.items():
        for k in (1, 2, 4, 7):
            for _ in range(3):
                prompt = torch.randint(0, V, (1, int(torch.randint(1, 12, (1,), generator=g))),
                                       generator=g)  # fmt: skip
                n_new = int(torch.randint(1, 33, (1,), generator=g))
                plain, p_stats = speculative.greedy_generate(target, prompt, n_new)
                spec, stats = speculative.speculative_generate(target, draft, prompt, n_new, k)
                assert torch.equal(spec, plain), (name, k, prompt, n_new)
                assert spec.shape == (n_new,) and p_stats["target_calls"] == n_new
                assert stats["target_calls"] == 1 + stats["rounds"]
                if stats["rounds"]:
                    rates.setdefault(name, []).append(stats["acceptance_rate"])
                seen |= {"none" if n == 0 else "all" if n == k else "some"
                         for n in stats["accepted"]}  # fmt: skip
                checked += 1
    assert checked == 36
    mean = {name: sum(r) / len(r) for name, r in rates.items()}
    assert mean["exact copy"] == 1.0 and mean["noisy copy"] < 1.0 and mean["random"] < 1.0
    assert seen == {"none", "some", "all"}  # rejections at the first, a middle and no draft


def test_exact_draft_takes_one_target_call_per_k_plus_one_tokens():
    target = _model("grouped", "causal", 3, seed=4)
    prompt = torch.randint(0, V, (1, 5), generator=torch.Generator().manual_seed(5))
    for k in (1, 3, 4):
        _, stats = speculative.speculative_generate(target, copy.deepcopy(target), prompt, 41, k)
        assert stats["accepted"] == [k] * stats["rounds"]
        assert stats["rounds"] == -(-40 // (k + 1))  # every round emits k + 1 tokens


TREE_KINDS = [(a, c, qk) for a in decoder.ATTENTIONS for c, qk in ((None, 0), ("causal", 0),
                                                                     ("causal", 3))]  # fmt: skip


@pytest.mark.parametrize("kind", TREE_KINDS, ids=["-".join(map(str, t)) for t in TREE_KINDS])
@pytest.mark.parametrize("n_prompt", [1, 6, 7])  # groups of 4: the tree crosses group ends
def test_tree_verification_equals_each_path_separately(kind, n_prompt):
    m = _model(*kind, seed=6)
    g = torch.Generator().manual_seed(n_prompt)
    prompt = torch.randint(0, V, (1, n_prompt), generator=g)
    for tree_seed in range(3):
        parents = speculative.random_tree(11, branching=3, seed=tree_seed)
        nodes = torch.randint(0, V, (1, len(parents)), generator=g)
        _, cache = m.prefill(prompt)
        logits, state_at = m.verify(nodes, cache, parents)
        _, _, paths = tree_layout(parents)
        nxt = torch.randint(0, V, (1,), generator=g)
        for i, path in enumerate(paths):
            seq = torch.cat([prompt, nodes[:, list(path)]], dim=1)
            torch.testing.assert_close(logits[:, i], m(seq)[:, -1], rtol=1e-10, atol=1e-10)
            after, _ = m.step(nxt, state_at(i))  # the state after node i is that path's state
            ref = m(torch.cat([seq, nxt.view(1, 1)], dim=1))[:, -1]
            torch.testing.assert_close(after, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attention", decoder.ATTENTIONS)
def test_naive_flattened_conv_is_wrong_on_a_tree_and_right_on_a_chain(attention):
    m = _model(attention, "causal", 0, seed=7)
    prompt = torch.randint(0, V, (1, 5), generator=torch.Generator().manual_seed(8))
    _, cache = m.prefill(prompt)
    parents = (-1, 0, 0, 1, 2, 2)  # two branches: node 2 is node 1's sibling, not its child
    nodes = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(9))
    good, _ = m.verify(nodes, cache, parents)
    naive, _ = m.verify(nodes, cache, parents, conv_windows="flattened")
    _, _, paths = tree_layout(parents)
    ref = torch.stack([m(torch.cat([prompt, nodes[:, list(p)]], dim=1))[0, -1] for p in paths])
    torch.testing.assert_close(good[0], ref, rtol=1e-10, atol=1e-10)
    wrong = (naive[0] - ref).abs().amax(-1)  # (N,)
    assert wrong[:2].max() < 1e-10  # the root and its first child have no sibling before them
    assert wrong[2:].min() > 1e-4  # every later node read a sibling's value in its window
    chain, _ = m.verify(nodes, cache)
    flat_chain, _ = m.verify(nodes, cache, conv_windows="flattened")
    torch.testing.assert_close(chain, flat_chain, rtol=0, atol=0)


def test_random_tree_is_a_tree():
    parents = speculative.random_tree(20, branching=2, seed=1)
    assert parents[0] == -1 and all(0 <= p < i for i, p in enumerate(parents) if i)
    assert max(parents.count(j) for j in range(20)) <= 2


def test_ngram_draft_counts_and_keeps_speculative_output_exact():
    text = torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2, 4, 0, 0, 1]])
    draft = speculative.NgramDraft(text, V, n=3)
    _, cache = draft.prefill(torch.tensor([[5, 1, 2]]))
    logits, cache = draft.step(torch.tensor([2]), cache)  # context (2, 2): never seen
    assert int(logits.argmax()) == 0 and cache == (2, 2)
    _, cache = draft.prefill(torch.tensor([[1, 2]]))
    assert int(draft._logits(cache).argmax()) == 3  # (1, 2) -> 3 twice, -> 4 once
    target = _model("grouped", "causal", 3, seed=11)
    g = torch.Generator().manual_seed(12)
    corpus = speculative.greedy_generate(target, torch.tensor([[1]]), 60)[0].view(1, -1)
    draft = speculative.NgramDraft(corpus, V, n=3)  # learned from the target's own output
    for _ in range(6):
        prompt = torch.randint(0, V, (1, 4), generator=g)
        plain, _ = speculative.greedy_generate(target, prompt, 30)
        spec, stats = speculative.speculative_generate(target, draft, prompt, 30, k=4)
        assert torch.equal(spec, plain)


def test_sampling_at_temperature_zero_is_greedy_and_seeded_otherwise():
    m = _model("grouped", "causal", 0, seed=13)
    prompt = torch.tensor([[1, 2, 3]])
    greedy, _ = speculative.greedy_generate(m, prompt, 20)
    assert torch.equal(speculative.sample_generate(m, prompt, 20, temperature=0), greedy)
    a = speculative.sample_generate(m, prompt, 20, temperature=1.0, seed=4)
    b = speculative.sample_generate(m, prompt, 20, temperature=1.0, seed=4)
    c = speculative.sample_generate(m, prompt, 20, temperature=1.0, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (20,)
