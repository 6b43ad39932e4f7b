"""Depthwise-then-pointwise convolution pairs (DARTS's SepConv and DilConv) as one autograd node on CPU.

Why it exists (torch 2.15 CPU, channels-last, measured in ``benchmarks/bench_darts_search.py``):

* Memory. Autograd keeps each depthwise output alive for the pointwise weight gradient: one feature map per
  pair, six per DARTS edge, about 1.5 GB of the 5.3 GB a DARTS search step at batch 64 keeps for backward.
  Here only the pair's input is kept (the edge's σ(x), which the other operators keep anyway) and the
  depthwise output is recomputed in backward: one depthwise forward, the cheapest convolution there is.
* Time. oneDNN's input gradient of a dilated (or 5x5) depthwise convolution is 5-10x slower than the same
  numbers computed as a forward convolution of the gradient with the flipped kernel, which is what the
  input gradient of a stride-1 convolution is. A stride-2, dilation-2 one is computed on the subsampled
  input, as :class:`~optuna_nas.layers.strided.DilatedConv2d` explains.

* Memory, again. In SepConv the second pair follows BatchNorm and ReLU; autograd would keep the
  BatchNorm input and the ReLU output. :class:`SeparableSequential` runs BatchNorm, ReLU and the pair as
  one node that keeps the BatchNorm input and statistics only, and recomputes the normalised and
  activated map (two elementwise passes) in backward: about 0.5 GB less at batch 64.

Same function and gradients; only the order of floating-point additions differs. Elsewhere (no gradient,
autocast, other devices, layers that do not fit the pattern) the layers run one by one as usual.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .batchnorm import BatchNorm2d, normalise, train_backward, train_forward
from .strided import layout_of

_conv_backward = torch.ops.aten.convolution_backward


def _is_depthwise(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and m.bias is None
            and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and len(set(m.stride)) == len(set(m.dilation)) == len(set(m.padding)) == 1)


def _is_pointwise(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
            and m.groups == 1 and m.bias is None)


class _Depthwise:
    """One depthwise convolution in its cheapest exact form: stride-2 dilation-2 ones on the subsampled input."""

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int) -> None:
        k = weight.shape[-1]
        self.subsampled = (stride == dilation == 2 and padding % 2 == 0 and padding // 2 * 2 == k - 1
                           and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0)
        if self.subsampled:  # output (h, w) reads input (2h + 2i - p, ...): a stride-1 undilated conv of x[::2, ::2]
            x = x[:, :, ::2, ::2].contiguous(memory_format=layout_of(x))
            stride, padding, dilation = 1, padding // 2, 1
        self.x, self.weight, self.stride, self.padding, self.dilation = x, weight, stride, padding, dilation

    def forward(self) -> torch.Tensor:
        return F.conv2d(self.x, self.weight, None, self.stride, self.padding, self.dilation, self.weight.shape[0])

    def input_grad(self, grad: torch.Tensor, full_shape: torch.Size) -> torch.Tensor:
        k = self.weight.shape[-1]
        transposed_padding = self.dilation * (k - 1) - self.padding
        if self.stride == 1 and transposed_padding >= 0:
            # the input gradient of a stride-1 convolution is the convolution of the gradient with the flipped kernel
            g = F.conv2d(grad, self.weight.flip(2, 3), None, 1, transposed_padding, self.dilation, self.weight.shape[0])
        else:
            g = self._backward(grad, (True, False))[0]
        if not self.subsampled:
            return g
        full = torch.empty(full_shape, dtype=g.dtype, device=g.device, memory_format=layout_of(g)).zero_()
        full[:, :, ::2, ::2] = g
        return full

    def weight_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return self._backward(grad, (False, True))[1]

    def _backward(self, grad: torch.Tensor, mask: tuple[bool, bool]) -> tuple[Any, ...]:
        return _conv_backward(grad, self.x, self.weight, None, [self.stride] * 2, [self.padding] * 2,
                              [self.dilation] * 2, False, [0, 0], self.weight.shape[0], [*mask, False])


def _pair_backward(grad: torch.Tensor, dw: _Depthwise, pointwise: torch.Tensor, input_shape: torch.Size,
                   need_input: bool, need_depthwise: bool, need_pointwise: bool) -> tuple[torch.Tensor | None, ...]:
    """(input, depthwise, pointwise) gradients of ``pointwise(dw(input))``, the depthwise output recomputed."""
    hidden = dw.forward()  # recomputed: cheaper than keeping it
    grad_hidden, grad_pointwise, _ = _conv_backward(grad, hidden, pointwise, None, [1, 1], [0, 0], [1, 1], False,
                                                    [0, 0], 1, [need_input or need_depthwise, need_pointwise, False])
    grad_input = dw.input_grad(grad_hidden, input_shape) if need_input else None
    grad_depthwise = dw.weight_grad(grad_hidden) if need_depthwise else None
    return grad_input, grad_depthwise, grad_pointwise


class _DepthwisePointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, depthwise: torch.Tensor, pointwise: torch.Tensor, stride: int,
                padding: int, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, depthwise, pointwise)
        ctx.conv = (stride, padding, dilation)
        return F.conv2d(_Depthwise(x, depthwise, stride, padding, dilation).forward(), pointwise)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, depthwise, pointwise = ctx.saved_tensors
        need_x, need_depthwise, need_pointwise = ctx.needs_input_grad[:3]
        grads = _pair_backward(grad, _Depthwise(x, depthwise, *ctx.conv), pointwise, x.shape,
                               need_x, need_depthwise, need_pointwise)
        return *grads, None, None, None


class _NormReluDepthwisePointwise(torch.autograd.Function):
    """``pointwise(depthwise(relu(batch_norm(x))))`` in training mode, keeping x and the batch statistics."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, norm_weight: torch.Tensor | None, norm_bias: torch.Tensor | None,
                depthwise: torch.Tensor, pointwise: torch.Tensor, norm: tuple[Any, ...],
                conv: tuple[int, int, int]) -> torch.Tensor:
        running_mean, running_var, momentum, eps = norm
        normalised, mean, invstd = train_forward(x, norm_weight, norm_bias, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(x, norm_weight, norm_bias, depthwise, pointwise, mean, invstd)
        ctx.eps, ctx.conv = eps, conv
        hidden = _Depthwise(torch.relu(normalised), depthwise, *conv).forward()
        return F.conv2d(hidden, pointwise)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, norm_weight, norm_bias, depthwise, pointwise, mean, invstd = ctx.saved_tensors
        need_x, need_nw, need_nb, need_depthwise, need_pointwise = ctx.needs_input_grad[:5]
        # recomputed: two elementwise passes, cheaper than keeping the map
        activated = torch.relu_(normalise(x, norm_weight, norm_bias, mean, invstd))
        need_norm = need_x or need_nw or need_nb
        grad_activated, grad_depthwise, grad_pointwise = _pair_backward(
            grad, _Depthwise(activated, depthwise, *ctx.conv), pointwise, activated.shape, need_norm, need_depthwise,
            need_pointwise)
        grads: tuple[torch.Tensor | None, ...] = (None, None, None)
        if grad_activated is not None:
            # ReLU's own backward (0 where the output is 0), one pass where masked_fill_ takes three times as long
            grad_normalised = torch.ops.aten.threshold_backward(grad_activated, activated, 0)
            grads = train_backward(grad_normalised.contiguous(memory_format=layout_of(x)), x, norm_weight, mean,
                                   invstd, ctx.eps, (need_x, need_nw, need_nb))
        return *grads, grad_depthwise, grad_pointwise, None, None


def _fusable_norm(m: nn.Module) -> bool:
    return (isinstance(m, BatchNorm2d) and m.training and m.track_running_stats and m.running_mean is not None
            and m.running_var is not None)


def depthwise_pointwise(x: torch.Tensor, depthwise: nn.Conv2d, pointwise: nn.Conv2d) -> torch.Tensor:
    """``pointwise(depthwise(x))`` as one autograd node (see the module docstring)."""
    return _DepthwisePointwise.apply(x, depthwise.weight, pointwise.weight, depthwise.stride[0],
                                     depthwise.padding[0], depthwise.dilation[0])


def norm_relu_depthwise_pointwise(x: torch.Tensor, norm: BatchNorm2d, relu: nn.ReLU, depthwise: nn.Conv2d,
                                  pointwise: nn.Conv2d) -> torch.Tensor:
    """``pointwise(depthwise(relu(norm(x))))`` for a training-mode ``norm`` as one autograd node."""
    momentum = norm.count_batch()
    return _NormReluDepthwisePointwise.apply(
        x, norm.weight, norm.bias, depthwise.weight, pointwise.weight,
        (norm.running_mean, norm.running_var, momentum, norm.eps),
        (depthwise.stride[0], depthwise.padding[0], depthwise.dilation[0]))


class SeparableSequential(nn.Sequential):
    """``nn.Sequential`` (same modules, same names, same function) that runs each depthwise convolution
    followed by a pointwise one as :func:`depthwise_pointwise`, and a training BatchNorm and ReLU before such
    a pair as :func:`norm_relu_depthwise_pointwise`, when a gradient is being recorded on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fuse = torch.is_grad_enabled() and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
        layers = list(self)
        i = 0
        while i < len(layers):
            if (fuse and i + 3 < len(layers) and _fusable_norm(layers[i]) and isinstance(layers[i + 1], nn.ReLU)
                    and _is_depthwise(layers[i + 2]) and _is_pointwise(layers[i + 3])):
                x = norm_relu_depthwise_pointwise(x, *layers[i:i + 4])
                i += 4
            elif fuse and i + 1 < len(layers) and _is_depthwise(layers[i]) and _is_pointwise(layers[i + 1]):
                x = depthwise_pointwise(x, layers[i], layers[i + 1])
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x
