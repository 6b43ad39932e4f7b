"""Counting ReLUs: the networks activate each cell output once for the two cells that read it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _ReluCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten.relu.default:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def relu_calls(run: Callable[[], object]) -> int:
    """How many ReLUs ``run()`` computes."""
    with _ReluCounter() as counter:
        run()
    return counter.calls
