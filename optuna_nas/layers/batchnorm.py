"""Training-mode batch normalisation of channels-last CPU tensors with few channels.

Why it exists: ATen's channels-last batch-norm kernels vectorise across channels, so with the 4 or 8
channels a PC-DARTS operator sees (C/K) they run several times slower than on the same number of elements
with many channels (64x4x32x32, torch 2.15 CPU: 1.07 ms forward and 0.86 ms backward, against 0.16 ms and
0.13 ms here). Here the (N·H·W, C) matrix a channels-last tensor already is gets viewed as (N·H·W / k, k·C)
with k·C >= 64 lanes, reduced over rows, and the k partial sums of a channel added. Same function: the
two-pass mean and (biased) variance of ATen, its running-statistics update (unbiased variance), and the
batch-norm gradient; only the order of floating-point additions differs. Everything else (eval mode, many
channels, other layouts, devices or dtypes) goes to ``torch.nn.functional.batch_norm``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FEW_CHANNELS = 16  # below this many channels the path here is faster (benchmarks/bench_darts_search.py)
_LANES = 64


def _eligible(x: torch.Tensor) -> bool:
    # channels-last and not also contiguous: more than one channel and more than one pixel
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.shape[1] < FEW_CHANNELS and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous())


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` as a (rows, k·C) matrix (a view) and k: k rows of the (N·H·W, C) matrix per row."""
    channels = x.shape[1]
    pixels = x.numel() // channels
    k = 1
    while k * channels < _LANES and pixels % (2 * k) == 0:
        k *= 2
    return x.permute(0, 2, 3, 1).reshape(pixels // k, k * channels), k


def _channel_sum(rows: torch.Tensor, k: int) -> torch.Tensor:
    return rows.sum(0).view(k, -1).sum(0)


def _few_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, mean, biased variance, 1/std) of a few-channel channels-last ``x``."""
    rows, k = _rows(x)
    count = rows.shape[0] * k
    mean = _channel_sum(rows, k) / count
    centred = rows - mean.repeat(k)
    var = _channel_sum(centred * centred, k) / count
    invstd = torch.rsqrt(var + eps)
    scale = invstd if weight is None else invstd * weight
    out = centred * scale.repeat(k)
    if bias is not None:
        out += bias.repeat(k)
    n, c, h, w = x.shape
    return out.view(n, h, w, c).permute(0, 3, 1, 2), mean, var, invstd


def _few_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor,
                  invstd: torch.Tensor, mask: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
    rows, k = _rows(x)
    grad_rows = grad.permute(0, 2, 3, 1).reshape(rows.shape)  # a copy only if grad is not channels-last
    count = rows.shape[0] * k
    grad_sum = _channel_sum(grad_rows, k)
    # Σ g·x̂ from the centred input, as ATen does (no cancellation when |mean| >> std)
    grad_dot = _channel_sum(grad_rows * (rows - mean.repeat(k)), k) * invstd
    grad_x = None
    if mask[0]:
        a = invstd if weight is None else invstd * weight
        b = -a * invstd * grad_dot / count
        c = -a * grad_sum / count - b * mean
        out = torch.addcmul(torch.addcmul(c.repeat(k), grad_rows, a.repeat(k)), rows, b.repeat(k))
        n, ch, h, w = x.shape
        grad_x = out.view(n, h, w, ch).permute(0, 3, 1, 2)
    return grad_x, grad_dot if mask[1] else None, grad_sum if mask[2] else None


class _FewChannelBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, mean, var, invstd = _few_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        return *_few_backward(grad, x, weight, mean, invstd, tuple(ctx.needs_input_grad[:3])), None


def _update_running_stats(running_mean: torch.Tensor | None, running_var: torch.Tensor | None, mean: torch.Tensor,
                          var: torch.Tensor, count: int, momentum: float) -> None:
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var * (count / (count - 1)), alpha=momentum)


def train_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                  running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode batch norm without autograd: (output, mean, 1/std); running statistics updated.
    For layers that fuse a batch norm into their own backward (see separable.py)."""
    if not _eligible(x):
        return torch.ops.aten.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
    out, mean, var, invstd = _few_forward(x, weight, bias, eps)
    _update_running_stats(running_mean, running_var, mean, var, x.numel() // x.shape[1], momentum)
    return out, mean, invstd


def train_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor,
                   invstd: torch.Tensor, eps: float, mask: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
    """Gradients (input, weight, bias) of :func:`train_forward` where ``mask`` asks for them."""
    if _eligible(x):
        return _few_backward(grad, x, weight, mean, invstd, mask)
    return tuple(g if m else None for g, m in zip(
        torch.ops.aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True, eps, list(mask)),
        mask, strict=True))


def normalise(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, mean: torch.Tensor,
              invstd: torch.Tensor) -> torch.Tensor:
    """The output of :func:`train_forward` again, from its statistics (for recomputation in backward)."""
    shape = (1, -1, 1, 1)
    scale = invstd if weight is None else invstd * weight
    out = (x - mean.view(shape)) * scale.view(shape)
    return out if bias is None else out + bias.view(shape)


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """``torch.nn.functional.batch_norm``, computed as the module docstring says where that is faster."""
    if not (training and _eligible(x)):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    out, mean, var = _FewChannelBatchNorm.apply(x, weight, bias, eps)
    _update_running_stats(running_mean, running_var, mean, var, x.numel() // x.shape[1], momentum)
    return out


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and function) using :func:`batch_norm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _eligible(x)):
            return super().forward(x)
        factor = self.count_batch()
        return batch_norm(x, self.running_mean if self.track_running_stats else None,
                          self.running_var if self.track_running_stats else None, self.weight, self.bias, True,
                          factor, self.eps)

    def count_batch(self) -> float:
        """Counts one training batch as ``nn.BatchNorm2d`` does; returns the running statistics' momentum."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average, as nn.BatchNorm2d computes it
                factor = 1.0 / float(self.num_batches_tracked)
        return factor
