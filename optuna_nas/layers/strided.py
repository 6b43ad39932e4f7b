"""Strided reads of a feature map that keep its memory layout (slices, channel concatenation), and the dilated
convolution built on them.

Why this exists (measured on CPU, torch 2.x, channels-last, ``benchmarks/bench_darts_search.py``):

* The backward pass of a strided slice (``x[:, :, ::2, ::2]``) allocates its gradient in the default
  (NCHW) layout whatever the input's layout, so every operator upstream of it then runs its backward on a
  mixed layout; a channels-last FactorizedReduce spent 16 ms in backward where its forward takes 1 ms.
  :func:`subsample` is the same slice with a gradient in the input's layout.
* oneDNN computes the backward pass of a depthwise convolution with stride 2 *and* dilation 2 (DARTS's
  ``dil_conv`` on a reduction edge) more than ten times slower than the same convolution written as an
  undilated one on the subsampled input, which is the identical function (see :class:`DilatedConv2d`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels-last for a 4-d tensor stored that way (and not also contiguous), else the default layout."""
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


class _Subsample(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, stride: int, row: int, col: int) -> torch.Tensor:
        layout = layout_of(x)
        ctx.shape, ctx.layout, ctx.index = x.shape, layout, (stride, row, col)
        return x[:, :, row::stride, col::stride].contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        stride, row, col = ctx.index
        grad_input = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        grad_input[:, :, row::stride, col::stride] = grad
        return grad_input, None, None, None


def subsample(x: torch.Tensor, stride: int = 2, row: int = 0, col: int = 0) -> torch.Tensor:
    """``x[:, :, row::stride, col::stride]`` as a new tensor in ``x``'s memory layout, whose gradient is in
    that layout too."""
    return _Subsample.apply(x, stride, row, col)


class _ChannelCat(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [t.shape[1] for t in tensors]
        ctx.layouts = [layout_of(t) for t in tensors]
        return torch.cat(tensors, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(part.contiguous(memory_format=layout)
                     for part, layout in zip(torch.split(grad, ctx.sizes, dim=1), ctx.layouts, strict=True))


def cat_channels(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)`` whose gradient parts come back in their inputs' layouts.

    The backward of a plain cat hands each input a channel slice of the output's gradient; in channels-last
    a channel slice is not contiguous, and each of the (up to eight) operators on that node then copies it
    again or takes a slow path (batch norm's backward: about 2x). Here each part is made contiguous once.
    """
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return torch.cat(list(tensors), dim=1)
    return _ChannelCat.apply(*tensors)


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class DilatedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same function) that computes a convolution whose stride equals its
    dilation as an undilated one on the subsampled input.

    With stride = dilation = s and a padding p divisible by s, output (h, w) reads input
    (s·h + s·i − p, s·w + s·j − p) = s·(h + i − p/s), ...: only every s-th row and column of the input, so
    the convolution is an undilated, stride-1 one with padding p/s over ``subsample(x, s)``. Every product
    and sum is the same; only oneDNN's slow path is avoided. Used on CPU only: GPU libraries have no such
    slow path to avoid.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, d, p = self.stride[0], self.dilation[0], self.padding
        if (x.device.type != "cpu" or s == 1 or self.stride != (s, s) or self.dilation != (d, d) or d != s
                or isinstance(p, str) or p[0] % s or p[1] % s or self.padding_mode != "zeros"):
            return super().forward(x)
        rows, cols = (_out_size(n, k, s, q, d) for n, k, q in zip(x.shape[-2:], self.kernel_size, p, strict=True))
        sub_rows, sub_cols = ((n + s - 1) // s + 2 * q // s - k + 1
                              for n, k, q in zip(x.shape[-2:], self.kernel_size, p, strict=True))
        if (rows, cols) != (sub_rows, sub_cols):  # the two forms differ only in how many border outputs they keep
            return super().forward(x)
        return F.conv2d(subsample(x, s), self.weight, self.bias, 1, (p[0] // s, p[1] // s), 1, self.groups)
