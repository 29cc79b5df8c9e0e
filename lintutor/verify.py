"""The verify form of the lesson-07 decoder: N new tokens in one pass from a cache (lesson 07).

The N tokens are a chain (a block of draft tokens: parents = (-1, 0, 1, ...)) or a tree (draft
candidates that share prefixes: node i continues parents[i]). Node i sits at position
pos + depth(i) and sees the cache and its own ancestors, never its siblings:

- attention: the ancestor-or-self mask (N, N) on the scores (and, for softmax, all cached keys);
- grouped attention: each node's group follows from its position, so a branch can finish the
  cached group and open a new one: the local term stays inside the node's group, the global
  term gets the complete groups;
- the convs (on V, and before q/k): a window over the node's ancestors and the cached values
  ("per-node ancestor windows"). `conv_windows="flattened"` slides the conv over the nodes in
  their flat order instead: right for a chain, wrong for a tree (a node reads its siblings).

`state_at(i)` builds the cache after node i from the tensors of this one pass, so speculative
decoding continues from the last accepted token without running the model again.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=256)
def tree_layout(parents: tuple):
    """(ancestor-or-self mask (N, N) bool, depth (N,) long, paths): paths[i] lists i's ancestors
    and i, root first. parents[i] < i, -1 for a root (a chain is (-1, 0, 1, ...))."""
    N = len(parents)
    paths = []
    for i, p in enumerate(parents):
        if not -1 <= p < i:
            raise ValueError(f"parents[{i}] = {p}: a parent must come before its child, or be -1")
        paths.append((paths[p] if p >= 0 else ()) + (i,))
    anc = torch.zeros(N, N, dtype=torch.bool)
    for i, path in enumerate(paths):
        anc[i, list(path)] = True
    depth = torch.tensor([len(p) - 1 for p in paths], dtype=torch.long)
    return anc, depth, tuple(paths)


@functools.lru_cache(maxsize=256)
def window_index(parents: tuple, width: int, flattened: bool = False):
    """(N, width) indices into cat(cache of width - 1 entries, the N nodes): the conv window of
    each node, oldest first. flattened=True: the nodes' flat order instead of their ancestors."""
    _, _, paths = tree_layout(parents)
    rows = []
    for i, path in enumerate(paths):
        own = range(i + 1) if flattened else path
        seq = list(range(width - 1)) + [width - 1 + j for j in own]
        rows.append(seq[len(seq) - width :])
    return torch.tensor(rows, dtype=torch.long).view(len(paths), width)


def attention_verify(layer, x, cache, pos, parents, conv_windows="ancestors"):
    """N nodes x (B, N, C) after `pos` tokens, node i at position pos + depth(i), through one
    `AugmentedAttention` layer: (y (B, N, C), state_at) with state_at(i) the cache after node i."""
    if layer.conv == "leaky":
        raise ValueError("a centred (leaky) conv reads future tokens: it cannot decode")
    B, N, C = x.shape
    anc, _, paths = tree_layout(parents)
    anc = anc.to(x.device)  # (N, N): ancestor-or-self
    flat = conv_windows == "flattened"
    xc = x
    if layer.qk_conv:
        xs = torch.cat([cache["x_win"], x], dim=1)  # (B, Kq - 1 + N, C)
        idx = window_index(parents, layer.qk_conv, flat).to(x.device)  # (N, Kq)
        xc = torch.einsum("ck,bnkc->bnc", layer.qk_conv_weight, xs[:, idx])
    q, k, v = layer.project(x, xc)  # (B, H, N, D)
    if layer.attention == "softmax":
        kb, vb, fill = writable_kv(cache, pos, N)
        kb[:, :, pos : pos + N], vb[:, :, pos : pos + N] = k, v
        seen = torch.cat([anc.new_ones(N, pos), anc], dim=1)  # (N, pos + N)
        o = F.scaled_dot_product_attention(q, kb[:, :, : pos + N], vb[:, :, : pos + N],
                                           attn_mask=seen)  # fmt: skip
        kf = None
    elif layer.attention == "linear":
        qf, kf = layer.features(q, k)
        scores = (qf @ kf.transpose(-1, -2)) * anc  # (B, H, N, N): ancestors and self
        num = scores @ v + qf @ cache["S"]
        den = scores.sum(-1) + (qf * cache["z"].unsqueeze(2)).sum(-1)
        o = num / (den.unsqueeze(-1) + layer.eps)
    else:
        qn, kf = layer.features(q, k)
        o = grouped_verify(layer, qn, kf, v, cache, pos, parents)
    if layer.conv == "causal":
        P = layer.conv_weight.shape[1] // 2
        vs = torch.cat([cache["v_win"], v], dim=2)  # (B, H, P + N, E)
        idx = window_index(parents, P + 1, flat).to(x.device)  # (N, P + 1)
        H = layer.n_heads
        taps = layer.conv_weight[:, : P + 1].view(1, H, 1, 1, P + 1)
        o = o + (taps @ vs[:, :, idx]).squeeze(3)  # (B, H, N, E): each node's own window
    y = layer.merge(o)

    def state_at(i):
        path = paths[i]
        n = len(path)
        sel = slice(0, n) if path[-1] == n - 1 else list(path)  # a chain prefix: a slice
        new = {}
        if layer.qk_conv:
            new["x_win"] = torch.cat([cache["x_win"], x[:, sel]], dim=1)[:, n:]
        if layer.conv is not None:
            new["v_win"] = torch.cat([cache["v_win"], v[:, :, sel]], dim=2)[:, :, n:]
        if layer.attention == "softmax":
            if isinstance(sel, slice):  # a chain: the nodes are in place already
                new.update(k=kb, v=vb, fill=fill)
            else:  # a tree branch: copy the path's keys and values behind the past
                new.update(k=torch.cat([kb[:, :, :pos], k[:, :, sel]], dim=2),
                           v=torch.cat([vb[:, :, :pos], v[:, :, sel]], dim=2),
                           fill=[pos + n])  # fmt: skip
        elif layer.attention == "linear":
            k_p, v_p = kf[:, :, sel], v[:, :, sel]  # (B, H, n, D), (B, H, n, E): the path
            new["S"] = cache["S"] + k_p.transpose(-1, -2) @ v_p
            new["z"] = cache["z"] + k_p.sum(2)
        else:
            new.update(grouped_state(layer, kf[:, :, sel], v[:, :, sel], cache, pos))
        return new

    return y, state_at


@functools.lru_cache(maxsize=256)
def group_masks(parents: tuple, offset: int, group_size: int):
    """(same, before, in_first) for nodes whose first position is `offset` into a group:
    same (N, N) ancestor-or-self in the node's own group, before (N, N) ancestors in earlier
    groups, in_first (N, 1) nodes still in the cache's open group."""
    anc, depth, _ = tree_layout(parents)
    gid = (offset + depth) // group_size  # (N,): each node's group, 0 = the cache's open group
    same = anc & (gid.view(-1, 1) == gid.view(1, -1))
    before = anc & (gid.view(1, -1) < gid.view(-1, 1))
    return same, before, (gid == 0).view(-1, 1)


def grouped_verify(layer, qn, kn, v, cache, pos, parents):
    """Grouped attention of tree nodes: local inside each node's own group (the cached part
    of the current group, and ancestors), global over complete groups (cached state, the
    cached group once it is complete, and ancestors in earlier groups)."""
    G = layer.group_size
    same, before, in_first = (m.to(qn.device) for m in group_masks(parents, pos % G, G))
    scores = qn @ kn.transpose(-1, -2)  # (B, H, N, N)
    sb = qn @ cache["kg"].transpose(-1, -2)  # (B, H, N, r): the cached part of the open group
    local = (torch.relu(scores) ** 2 * same) @ v + (torch.relu(sb) ** 2 * in_first) @ cache["vg"]
    glob = qn @ cache["S"] + (scores * before) @ v + (sb * ~in_first) @ cache["vg"]
    return local + layer.global_factor * glob


def grouped_state(layer, k_path, v_path, cache, pos):
    """The grouped cache after a path of n nodes (its k and v, root first) from `pos`: the
    path's tokens in groups that are complete by then go into S, the rest open a group."""
    G, n = layer.group_size, k_path.shape[2]
    g0, gc = pos // G, (pos + n) // G  # the cache's open group, the open group after the path
    m = min(max(gc * G - pos, 0), n)  # the first m path tokens lie in complete groups
    S = cache["S"] + k_path[:, :, :m].transpose(-1, -2) @ v_path[:, :, :m]
    if gc > g0:  # the cached open group is complete now
        S = S + cache["kg"].transpose(-1, -2) @ cache["vg"]
        kg, vg = k_path[:, :, m:], v_path[:, :, m:]
    else:
        kg = torch.cat([cache["kg"], k_path], dim=2)
        vg = torch.cat([cache["vg"], v_path], dim=2)
    return {"S": S, "kg": kg, "vg": vg}


def writable_kv(cache, pos, n):
    """(k, v buffers, fill) ready for entries pos .. pos + n - 1 of a softmax layer's KV cache.

    In place when this cache is the frontier (nothing written past pos) and the buffer has room;
    otherwise a copy of the first pos entries (doubling the room), so every older or longer
    cache that shares the buffer stays valid: caches behave as values, copy-on-write.
    """
    kb, vb, fill = cache["k"], cache["v"], cache["fill"]
    if fill[0] == pos and kb.shape[2] >= pos + n:
        fill[0] = pos + n
        return kb, vb, fill
    size = max(pos + n, 2 * kb.shape[2])
    grown = []
    for buf in (kb, vb):
        g = buf.new_zeros(*buf.shape[:2], size, buf.shape[3])  # (B, H, room, D)
        g[:, :, :pos] = buf[:, :, :pos]
        grown.append(g)
    return grown[0], grown[1], [pos + n]
