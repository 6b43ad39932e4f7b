"""Training-mode batch normalisation of channels-last CPU tensors, where ATen's own kernels are slow.

Why it exists: ATen's channels-last batch-norm kernels vectorise across channels, and run several times
slower than on the same number of elements otherwise in two cases (torch 2.15 CPU, AVX-512, float32):

* few channels, the 4 or 8 a PC-DARTS operator sees (C/K): at 64x4x32x32, 1.15 ms forward and 0.94 ms
  backward, against 0.11 ms and 0.11 ms here;
* a channel count that does not fill whole 64-byte vectors, as DARTS's C=36 retraining network has
  (36, 72, 108 channels): at 32x36x32x32, 0.63 ms forward and 1.55 ms backward, against 0.23 ms and
  0.56 ms here (at 32 channels ATen takes 0.23 ms and 0.29 ms).

Here the (N·H·W, C) matrix a channels-last tensor already is gets viewed as (N·H·W / k, k·C), with k·C a
whole number of vectors (and at least 64 lanes for few channels), and ATen's own kernels run on that view,
now vectorised: per-lane statistics (combined exactly into each channel's), then its evaluation-mode
normalisation with those statistics; in backward, with the true channel mean, Σg and Σg·(x - mean) per
lane in one pass. Same function: the mean and biased variance of a batch, its running-statistics update
(unbiased variance), the batch-norm gradient; only the order of floating-point additions differs. Everything
else (evaluation mode, 64-byte channel counts, other layouts, devices or dtypes, pixel counts the view cannot
split) goes to ``torch.nn.functional.batch_norm``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FEW_CHANNELS = 16  # below this many channels every count takes the path here
_MIN_FEW_LANES = 64
_VECTOR_BYTES = 64  # AVX-512, the widest vector ATen's CPU kernels use; a multiple of every narrower one


def _lanes_per_channel(x: torch.Tensor) -> int:
    """k for the (rows, k·C) view of ``x``: 0 where torch's own path serves (see the module docstring)."""
    if not (x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            # channels-last and not also contiguous: more than one channel and more than one pixel
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()):
        return 0
    channels = x.shape[1]
    pixels = x.numel() // channels
    per_vector = _VECTOR_BYTES // x.element_size()
    if channels >= FEW_CHANNELS and channels % per_vector == 0:
        return 0
    wanted = per_vector // math.gcd(channels, per_vector)
    while channels < FEW_CHANNELS and wanted * channels < _MIN_FEW_LANES:
        wanted *= 2
    k = 1
    while k < wanted and pixels % (2 * k) == 0:  # k divides the pixel count (a power of two)
        k *= 2
    return k if channels < FEW_CHANNELS or k == wanted else 0


def _rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` as a (rows, k·C) matrix (a view): k rows of the (N·H·W, C) matrix per row."""
    return x.permute(0, 2, 3, 1).reshape(x.numel() // (k * x.shape[1]), k * x.shape[1])


def _tile(per_channel: torch.Tensor, k: int) -> torch.Tensor:
    """A per-channel vector for the k·C lanes of a row (``torch.cat``: a quarter of ``repeat``'s overhead)."""
    return torch.cat([per_channel] * k)


def _as_image(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n, c, h, w = like.shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _forward(x: torch.Tensor, k: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, mean, biased variance, 1/std) of ``x`` on its (rows, k·C) view, k from :func:`_lanes_per_channel`."""
    rows = _rows(x, k)
    lanes = rows.view(*rows.shape, 1, 1)
    lane_mean, lane_var = torch.ops.aten.batch_norm_update_stats(lanes, None, None, 0.0)  # biased variance
    lane_mean, lane_var = lane_mean.view(k, -1), lane_var.view(k, -1)
    mean = lane_mean.mean(0)
    # the variance of k equal-sized parts: the mean of their variances plus the variance of their means
    var = lane_var.mean(0) + (lane_mean - mean).pow(2).mean(0)
    weight_k, bias_k = (None if t is None else _tile(t, k) for t in (weight, bias))
    out = torch.ops.aten.native_batch_norm(lanes, weight_k, bias_k, _tile(mean, k), _tile(var, k), False, 0.0, eps)[0]
    return _as_image(out.view(rows.shape), x), mean, var, torch.rsqrt(var + eps)


def _backward(grad: torch.Tensor, x: torch.Tensor, k: int, weight: torch.Tensor | None, mean: torch.Tensor,
              invstd: torch.Tensor, mask: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
    rows = _rows(x, k)
    grad_rows = grad.permute(0, 2, 3, 1).reshape(rows.shape)  # a copy only if grad is not channels-last
    count = rows.shape[0] * k
    # per lane Σg and Σg·(x - mean) (from the centred input, as ATen does: no cancellation when |mean| >> std)
    _, lane_dot, lane_sum = torch.ops.aten.native_batch_norm_backward(
        grad_rows.view(*rows.shape, 1, 1), rows.view(*rows.shape, 1, 1), None, None, None, _tile(mean, k),
        rows.new_ones(rows.shape[1]), True, 0.0, [False, True, True])
    grad_sum = lane_sum.view(k, -1).sum(0)
    grad_dot = lane_dot.view(k, -1).sum(0) * invstd
    grad_x = None
    if mask[0]:
        a = invstd if weight is None else invstd * weight
        b = -a * invstd * grad_dot / count
        c = -a * grad_sum / count - b * mean
        grad_x = _as_image(torch.addcmul(_tile(c, k), grad_rows, _tile(a, k)).addcmul_(rows, _tile(b, k)), x)
    return grad_x, grad_dot if mask[1] else None, grad_sum if mask[2] else None


class _ChannelsLastBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, mean, var, invstd = _forward(x, k, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.k = k
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = _backward(grad, x, ctx.k, weight, mean, invstd,
                                                   (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:4]))
        return grad_x, None, grad_weight, grad_bias, None


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
    k = _lanes_per_channel(x)
    if not k:
        return torch.ops.aten.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
    out, mean, var, invstd = _forward(x, k, weight, bias, eps)
    _update_running_stats(running_mean, running_var, mean, var, x.numel() // x.shape[1], momentum)
    return out, mean, invstd


def train_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor,
                   invstd: torch.Tensor, eps: float, mask: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
    """Gradients (input, weight, bias) of :func:`train_forward` where ``mask`` asks for them."""
    k = _lanes_per_channel(x)
    if k:
        return _backward(grad, x, k, weight, mean, invstd, mask)
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
    k = _lanes_per_channel(x) if training else 0
    if not k:
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return _train_on_lanes(x, k, running_mean, running_var, weight, bias, momentum, eps)


def _train_on_lanes(x: torch.Tensor, k: int, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                    weight: torch.Tensor | None, bias: torch.Tensor | None, momentum: float,
                    eps: float) -> torch.Tensor:
    out, mean, var = _ChannelsLastBatchNorm.apply(x, k, weight, bias, eps)
    _update_running_stats(running_mean, running_var, mean, var, x.numel() // x.shape[1], momentum)
    return out


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and function) using :func:`batch_norm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = _lanes_per_channel(x) if self.training else 0
        if not k:
            return super().forward(x)
        factor = self.count_batch()
        return _train_on_lanes(x, k, self.running_mean if self.track_running_stats else None,
                               self.running_var if self.track_running_stats else None, self.weight, self.bias,
                               factor, self.eps)

    def count_batch(self) -> float:
        """Counts one training batch as ``nn.BatchNorm2d`` does; returns the running statistics' momentum."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average, as nn.BatchNorm2d computes it
                factor = 1.0 / float(self.num_batches_tracked)
        return factor
