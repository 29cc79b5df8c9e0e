"""Kernel tests run with NaN-filled torch.empty and torch.empty_like (as fla's tests do): an
output element that no program writes stays NaN and fails its comparison loudly."""

import pytest
import torch


@pytest.fixture(autouse=True)
def nan_filled_empty(monkeypatch):
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poisoned(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poisoned(empty_like(*a, **kw)))
    yield
