"""separable.py: a depthwise-pointwise pair as one autograd node is the plain pair, and keeps less for backward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from optuna_nas.layers import SeparableSequential
from optuna_nas.ops import dil_conv_body, sep_conv_body

from _autograd import assert_same_function, saved_bytes

LAYOUTS = [torch.contiguous_format, torch.channels_last]
# (factory, stride): DARTS's SepConv 3x3/5x5 and DilConv 3x3/5x5 at both strides, and odd input sizes
BODIES = {
    "sep3": lambda s: sep_conv_body(4, 3, s, 1, False), "sep5": lambda s: sep_conv_body(4, 5, s, 2, False),
    "dil3": lambda s: dil_conv_body(4, 3, s, 2, 2, False), "dil5": lambda s: dil_conv_body(4, 5, s, 4, 2, False),
}


def _pair(name: str, stride: int, layout: torch.memory_format) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = BODIES[name](stride).double().to(memory_format=layout)
    assert isinstance(ours, SeparableSequential)
    plain = nn.Sequential(*copy.deepcopy(ours))  # the same layers and values, run one by one
    return ours, plain


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("wanted", ["all", "input", "weights"])
def test_fused_pairs_give_the_plain_layers_outputs_and_gradients(layout: torch.memory_format, name: str, stride: int,
                                                                 size: int, wanted: str) -> None:
    ours, plain = _pair(name, stride, layout)
    x = torch.randn(3, 4, size, size, dtype=torch.float64).contiguous(memory_format=layout)
    params1, params2 = list(ours.parameters()), list(plain.parameters())
    for p in params1 + params2:
        p.requires_grad_(wanted != "input")  # "input": the architecture step, where weights are frozen
    x1, x2 = x.clone().requires_grad_(wanted != "weights"), x.clone().requires_grad_(wanted != "weights")
    y1, y2 = ours(x1), plain(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    assert y1.is_contiguous(memory_format=layout)
    targets1 = ([x1] if wanted != "weights" else []) + (params1 if wanted != "input" else [])
    targets2 = ([x2] if wanted != "weights" else []) + (params2 if wanted != "input" else [])
    grad = torch.randn_like(y1)
    for a, b in zip(torch.autograd.grad(y1, targets1, grad), torch.autograd.grad(y2, targets2, grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
        assert a.is_contiguous(memory_format=layout) or a.dim() < 4 or a.shape[1] == 1


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("channels", [4, 36, 32])  # few channels, 36 (not whole vectors), ATen's own path
def test_norm_and_relu_before_a_pair_keep_outputs_gradients_and_running_stats(
        layout: torch.memory_format, affine: bool, momentum: float | None, channels: int) -> None:
    torch.manual_seed(0)
    ours = sep_conv_body(channels, 3, 2, 1, affine).double().to(memory_format=layout)
    for m in ours.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
            if affine:  # not the initial 1 and 0, so that a wrong weight or bias gradient shows
                nn.init.normal_(m.weight)
                nn.init.normal_(m.bias)
    plain = nn.Sequential(*copy.deepcopy(ours))
    for _ in range(2):  # the second step uses the running statistics the first one left
        x = torch.randn(3, channels, 8, 8, dtype=torch.float64).contiguous(memory_format=layout)
        assert_same_function(ours, plain, x, grad_tol=1e-11)
    for a, b in zip(ours.buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)  # running mean, variance, batch count


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    return saved_bytes(lambda: module(x))


def test_the_depthwise_output_is_recomputed_not_kept() -> None:
    ours, plain = _pair("dil3", 1, torch.channels_last)
    x = torch.randn(4, 4, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    feature_map = x.numel() * x.element_size()
    # plain: x, the depthwise output and the BatchNorm input; fused: x and the BatchNorm input
    assert _saved_bytes(plain, x) - _saved_bytes(ours, x) >= feature_map


def test_the_activated_map_between_the_pairs_is_recomputed_not_kept() -> None:
    ours, plain = _pair("sep3", 1, torch.channels_last)
    x = torch.randn(4, 4, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    feature_map = x.numel() * x.element_size()
    # plain keeps for each pair its input and depthwise output, and the ReLU output; fused: x and the
    # two BatchNorm inputs
    assert _saved_bytes(plain, x) - _saved_bytes(ours, x) >= 3 * feature_map


def test_without_a_gradient_the_layers_run_one_by_one() -> None:
    ours, plain = _pair("sep3", 1, torch.channels_last)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), plain.eval()(x), rtol=0, atol=0)
