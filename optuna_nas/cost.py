"""What a network costs: trainable parameters and multiply-adds, the cost every trial records.

Both engines and every stage count the same way, so a RandGrow child and a DARTS genotype retrained at
C=36 are comparable: parameters without the auxiliary head (DARTS's convention), multiply-adds of one
image at batch 1 in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def network_cost(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``params`` (no auxiliary head) and ``flops`` (multiply-adds of one image)."""
    return {"params": count_parameters(model), "flops": count_multiply_adds(model, input_shape)}


def count_parameters(model: nn.Module, exclude: Iterable[str] = ("auxiliary",)) -> int:
    """Trainable parameters, leaving out names containing any of ``exclude`` (DARTS's convention)."""
    skip = tuple(exclude)
    return sum(p.numel() for name, p in model.named_parameters() if not any(s in name for s in skip))


def count_multiply_adds(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass at batch 1 in eval mode (torch's FLOP counter counts 2 per MAC)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
