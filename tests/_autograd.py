"""Autograd helpers for the layer tests: the same function and gradients as a plain layer, and what autograd
keeps for backward (the measure behind the memory claims of optuna_nas.layers)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def saved_bytes(run: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``run()`` records a graph."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def assert_same_function(ours: nn.Module, plain: nn.Module, x: torch.Tensor, tol: float = 1e-12,
                         grad_tol: float = 1e-12) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``ours(x)`` equals ``plain(x)``, and so do the gradients of x and of the parameters, in order; returns
    ``ours(x)`` and its gradients."""
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), plain(x2)
    torch.testing.assert_close(y1, y2, rtol=tol, atol=tol)
    grad = torch.randn_like(y1)
    got = torch.autograd.grad(y1, [x1, *ours.parameters()], grad)
    want = torch.autograd.grad(y2, [x2, *plain.parameters()], grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=grad_tol, atol=grad_tol)
    return y1, got
