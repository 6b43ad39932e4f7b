"""Max pooling that keeps no indices for backward on CPU.

Why it exists: autograd keeps a max pool's input *and* its argmax indices as int64, twice the bytes of the
float output, so each DARTS ``max_pool_3x3`` edge holds two feature maps' worth of indices until
backward: about 0.5 GB of the memory a DARTS search step at batch 64 keeps. Here only the input is kept
(the cell's node state, which its other edges keep anyway) and the indices are recomputed in backward by
the same kernel, so the gradient is bit-for-bit torch's. Recomputation costs one pooling pass, about 2%
of a DARTS step; maps with few channels (PC-DARTS's C/K, a quarter of the size) keep their indices, as
there the pass would cost PC-DARTS about 5% of its step for little memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .batchnorm import FEW_CHANNELS


class _RecomputedMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                dilation: list[int], ceil_mode: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.pool = (kernel, stride, padding, dilation, ceil_mode)
        return torch.ops.aten.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        _, indices = torch.ops.aten.max_pool2d_with_indices(x, *ctx.pool)
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *ctx.pool, indices), *(None,) * 5


def _pair(value: Any) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (same function and gradient) that recomputes its argmax in backward on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.return_indices or not torch.is_grad_enabled() or not x.requires_grad or x.device.type != "cpu"
                or x.dim() != 4 or x.shape[1] < FEW_CHANNELS):
            return super().forward(x)
        stride = self.stride if self.stride is not None else self.kernel_size
        return _RecomputedMaxPool.apply(x, _pair(self.kernel_size), _pair(stride), _pair(self.padding),
                                        _pair(self.dilation), self.ceil_mode)
