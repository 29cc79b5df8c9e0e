"""Greedy speculative decoding with a draft model, and tree verification (lesson 07).

A cheap draft model proposes k tokens one by one; the target model checks all of them in one
verify pass (`DecoderLM.verify`, a chain of k + 1 tokens from its cache), which gives the
target's own greedy choice after every prefix:

    block    [x, d_1, ..., d_k]          x: the newest token, not yet in the target's cache
    logits   l_0, l_1, ..., l_k          l_i: the target's prediction after block[0..i]
    accept   n = the number of leading i with d_{i+1} = argmax l_i
    emit     d_1 .. d_n, then argmax l_n (the target's correction, or a bonus token if n = k)
    continue from state_at(n), the target's cache after block[0..n] (the last accepted token)

Every emitted token is the target's greedy choice given the tokens before it, so the output is
exactly that of plain greedy decoding with the target; the draft only changes how many target
calls it takes. (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding", the greedy case.) The official Linearized-LLM code verifies Medusa-head candidates
the same way (accept the longest prefix that matches the target's argmax) but keeps a KV cache
and recomputes its linear terms from it; here the cache is the recurrent state itself.

Batch size 1 (each row would accept a different number of tokens), as in the official code.
"""

from __future__ import annotations

import time

import torch

from lintutor._validate import check_shapes


def accept_draft(draft, logits):
    """The greedy accept rule: (n (B,) long, next_token (B,) long). O(B*k*vocab).

    draft (B, k) the proposed tokens; logits (B, k + 1, vocab) of the verify pass over
    [x, d_1, ..., d_k]. n counts the leading drafts equal to the target's argmax before them;
    next_token = argmax logits[:, n]. Continue from the state after block position n.
    """
    check_shapes(draft=(draft, "B K"), logits=(logits, "B K1 V"))
    if logits.shape[1] != draft.shape[1] + 1:
        raise ValueError(
            f"logits: expected k + 1 = {draft.shape[1] + 1} positions, got {logits.shape[1]}"
        )
    choice = logits.argmax(-1)  # (B, k + 1): the target's greedy token after each prefix
    match = (draft == choice[:, :-1]).long()  # (B, k)
    n = match.cumprod(dim=1).sum(dim=1)  # (B,): leading matches only
    next_token = choice.gather(1, n.unsqueeze(1)).squeeze(1)  # (B,)
    return n, next_token


def greedy_generate(model, prompt, n_new):
    """Plain greedy decoding: prompt (1, T0) -> (tokens (n_new,), stats). One target call per
    token after the prefill."""
    logits, cache = model.prefill(prompt)
    token = logits[:, -1].argmax(-1)  # (1,)
    out, calls = [token], 1
    while len(out) < n_new:
        logits, cache = model.step(token, cache)
        token = logits.argmax(-1)
        out.append(token)
        calls += 1
    return torch.cat(out)[:n_new], {"target_calls": calls}


@torch.no_grad()
def sample_generate(model, prompt, n_new, temperature=1.0, seed=0):
    """Sampling from softmax(logits / temperature) (greedy at temperature 0), one step per token:
    prompt (1, T0) -> tokens (n_new,). The same seed gives the same text."""
    g = torch.Generator().manual_seed(seed)
    logits, cache = model.prefill(prompt)
    logits, out = logits[:, -1], []
    for i in range(n_new):
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.double() / temperature, dim=-1).cpu()
            token = torch.multinomial(probs, 1, generator=g).view(1).to(logits.device)
        out.append(token)
        if i < n_new - 1:
            logits, cache = model.step(token, cache)
    return torch.cat(out) if out else prompt.new_zeros(0)


def speculative_generate(target, draft, prompt, n_new, k=4):
    """Greedy speculative decoding: prompt (1, T0) -> (tokens (n_new,), stats).

    stats: target_calls (prefill + one verify per round), draft_calls, rounds, accepted (per
    round), acceptance_rate (accepted / proposed drafts; None when no round ran).
    """
    if prompt.shape[0] != 1:
        raise ValueError(f"prompt: batch size 1 only, got {prompt.shape[0]}")
    logits, cache = target.prefill(prompt)
    _, draft_cache = draft.prefill(prompt)
    pending = logits[:, -1].argmax(-1)  # (1,): emitted, not yet in either cache
    out, unseen = [pending], []  # unseen: emitted tokens the draft has not consumed yet
    stats = {"target_calls": 1, "draft_calls": 1, "rounds": 0, "accepted": []}
    while len(out) < n_new:
        for tok in unseen:  # a fully accepted round left d_k for the draft to consume
            _, draft_cache = draft.step(tok, draft_cache)
            stats["draft_calls"] += 1
        states, proposal, tok = [], [], pending
        for _ in range(k):  # the draft proposes d_1 .. d_k
            dl, draft_cache = draft.step(tok, draft_cache)
            states.append(draft_cache)
            tok = dl.argmax(-1)
            proposal.append(tok)
        stats["draft_calls"] += k
        block = torch.cat([pending] + proposal).unsqueeze(0)  # (1, k + 1)
        logits, state_at = target.verify(block, cache)  # one pass
        stats["target_calls"] += 1
        stats["rounds"] += 1
        n, nxt = accept_draft(block[:, 1:], logits)
        n = int(n)
        stats["accepted"].append(n)
        out.extend(proposal[:n] + [nxt])
        cache = state_at(n)  # the target's cache after the last accepted token
        draft_cache = states[n] if n < k else states[k - 1]  # after d_n (or d_{k-1})
        unseen = [proposal[k - 1]] if n == k else []
        pending = nxt
    proposed = k * stats["rounds"]
    stats["acceptance_rate"] = sum(stats["accepted"]) / proposed if proposed else None
    return torch.cat(out)[:n_new], stats


class NgramDraft:
    """A count-based order-n draft: it proposes the most frequent follower of the last n - 1
    tokens in its training data (ties and unseen contexts: the lowest token id). The same
    prefill / step interface as `DecoderLM`, batch size 1, and almost free per token.
    """

    def __init__(self, sequences, vocab_size, n=3):
        """sequences (B, T) long: the training text. O(B*T)."""
        self.n, self.vocab_size = n, vocab_size
        ctx = sequences.unfold(1, n, 1).reshape(-1, n)  # (windows, n)
        index = torch.zeros(len(ctx), dtype=torch.long)
        for j in range(n - 1):
            index = index * vocab_size + ctx[:, j]
        counts = torch.zeros(vocab_size ** (n - 1), vocab_size)
        counts.index_put_((index, ctx[:, -1]), torch.ones(len(ctx)), accumulate=True)
        self.logits = (counts + 1).log()  # (V^(n-1), V), add-one smoothing

    def _logits(self, context):
        index = 0
        for t in context:
            index = index * self.vocab_size + t
        return self.logits[index].unsqueeze(0)  # (1, V)

    def prefill(self, tokens):
        context = tuple(int(t) for t in tokens[0, -(self.n - 1) :].tolist())
        context = (0,) * (self.n - 1 - len(context)) + context
        return self._logits(context).unsqueeze(1), context

    def step(self, token, cache):
        context = cache[1:] + (int(token),)
        return self._logits(context), context


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def random_tree(n_nodes, branching=2, seed=0):
    """parents of a random tree (node i's parent < i, node 0 the root): each node gets at most
    `branching` children, breadth first, the way draft candidates are laid out."""
    g = torch.Generator().manual_seed(seed)
    parents, children = [-1], [0]
    for i in range(1, n_nodes):
        open_ = [j for j in range(i) if children[j] < branching]
        j = open_[int(torch.randint(0, min(len(open_), 3), (1,), generator=g))]
        parents.append(j)
        children[j] += 1
        children.append(0)
    return tuple(parents)
