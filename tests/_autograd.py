"""What autograd keeps for backward: the measure behind the memory claims of optuna_nas.layers."""

from __future__ import annotations

from collections.abc import Callable

import torch


def saved_bytes(run: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``run()`` records a graph."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())
