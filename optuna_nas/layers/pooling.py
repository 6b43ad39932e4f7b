"""Max pooling that keeps no indices for backward on CPU, and pooling followed by batch norm that keeps
only the pooling input.

Why it exists: autograd keeps a max pool's input *and* its argmax indices as int64, twice the bytes of the
float output, so each DARTS ``max_pool_3x3`` edge holds two feature maps' worth of indices until
backward: about 0.5 GB of the memory a DARTS search step at batch 64 keeps. Here only the input is kept
(the cell's node state, which its other edges keep anyway) and the indices are recomputed in backward by
the same kernel, so the gradient is bit-for-bit torch's. Recomputation costs one pooling pass, about 2%
of a DARTS step; maps with few channels (PC-DARTS's C/K, a quarter of the size) keep their indices, as
there the pass would cost PC-DARTS about 5% of its step for little memory.

During search DARTS normalises each pooling candidate's output (a non-affine BatchNorm), and autograd
keeps that output as the BatchNorm's input: two more maps per edge (about 0.5 GB at batch 64).
:func:`pool_batch_norm` keeps the pooling input only and pools again in backward, which the max pool
above does anyway to find its argmax; an average pool costs one more pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .batchnorm import FEW_CHANNELS, train_backward, train_forward


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
        return _RecomputedMaxPool.apply(x, *_max_pool_args(self))


class _PoolBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, pool: nn.MaxPool2d | nn.AvgPool2d,
                norm: tuple[Any, ...]) -> torch.Tensor:
        running_mean, running_var, momentum, eps = norm
        pooled = pool(x)
        out, mean, invstd = train_forward(pooled, weight, None, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.pool, ctx.eps = pool, eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        pool = ctx.pool
        need_x, need_weight = ctx.needs_input_grad[:2]
        if isinstance(pool, nn.MaxPool2d):
            args = _max_pool_args(pool)
            pooled, indices = torch.ops.aten.max_pool2d_with_indices(x, *args)
        else:
            pooled = pool(x)
        grad_pooled, grad_weight, _ = train_backward(grad, pooled, weight, mean, invstd, ctx.eps,
                                                     (need_x, need_weight, False))
        grad_x = None
        if need_x:
            if isinstance(pool, nn.MaxPool2d):
                grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad_pooled, x, *args, indices)
            else:
                grad_x = torch.ops.aten.avg_pool2d_backward(
                    grad_pooled, x, _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding), pool.ceil_mode,
                    pool.count_include_pad, pool.divisor_override)
        return grad_x, grad_weight, None, None


def _max_pool_args(pool: nn.MaxPool2d) -> tuple[Any, ...]:
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return _pair(pool.kernel_size), _pair(stride), _pair(pool.padding), _pair(pool.dilation), pool.ceil_mode


def pool_batch_norm(x: torch.Tensor, pool: nn.Module, running_mean: torch.Tensor | None,
                    running_var: torch.Tensor | None, weight: torch.Tensor | None, training: bool, momentum: float,
                    eps: float) -> torch.Tensor | None:
    """``batch_norm(pool(x), ...)`` as one node keeping only ``x`` (see the module docstring), or None where
    that does not apply (no gradient, evaluation, not CPU, few channels, a pooling layer of another kind)."""
    pools = (nn.MaxPool2d, nn.AvgPool2d)
    if (not training or not torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 4
            or x.shape[1] < FEW_CHANNELS  # as in MaxPool2d: little memory to save, a pass to spend
            or type(pool) not in (*pools, MaxPool2d) or getattr(pool, "return_indices", False)
            or not (x.requires_grad or (weight is not None and weight.requires_grad))):
        return None
    return _PoolBatchNorm.apply(x, weight, pool, (running_mean, running_var, momentum, eps))
