"""strided.py: the layout-keeping subsample and the dilated convolution are the functions they replace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optuna_nas.layers.strided import DilatedConv2d, cat_channels, subsample

from _autograd import assert_same_function

LAYOUTS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("stride", "row", "col", "size"), [(2, 0, 0, 8), (2, 1, 1, 8), (2, 1, 0, 7), (3, 2, 1, 9)])
def test_subsample_is_the_strided_slice_with_a_gradient_in_the_input_layout(
        layout: torch.memory_format, stride: int, row: int, col: int, size: int) -> None:
    x = torch.randn(2, 3, size, size + 1, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    expected = x[:, :, row::stride, col::stride]
    out = subsample(x, stride, row, col)
    assert torch.equal(out, expected)
    grad = torch.randn_like(out)
    (ours,) = torch.autograd.grad(out, x, grad)
    (sliced,) = torch.autograd.grad(expected, x, grad)
    assert torch.equal(ours, sliced)
    assert ours.is_contiguous(memory_format=layout)
    assert out.is_contiguous(memory_format=layout)


# (kernel, stride, dilation, padding): DARTS's dil_conv at stride 2 (the rewritten case) and every fallback
CASES = [(3, 2, 2, 2), (5, 2, 2, 4), (3, 1, 2, 2), (5, 1, 2, 4), (3, 2, 1, 1), (3, 2, 2, 1), (3, 2, 2, 0), (1, 2, 2, 0)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("kernel", "stride", "dilation", "padding"), CASES)
@pytest.mark.parametrize("size", [8, 9, 16])
@pytest.mark.parametrize("groups", [1, 4])
def test_dilated_convolution_equals_nn_conv2d(layout: torch.memory_format, kernel: int, stride: int,
                                               dilation: int, padding: int, size: int, groups: int) -> None:
    torch.manual_seed(0)
    plain = nn.Conv2d(4, 4, kernel, stride, padding, dilation=dilation, groups=groups, bias=True).double()
    ours = DilatedConv2d(4, 4, kernel, stride, padding, dilation=dilation, groups=groups, bias=True).double()
    ours.load_state_dict(plain.state_dict())  # the same parameters, by the same names
    x = torch.randn(2, 4, size, size + 2, dtype=torch.float64).contiguous(memory_format=layout)
    assert_same_function(ours, plain, x)


def test_dilated_convolution_keeps_the_channels_last_layout() -> None:
    conv = DilatedConv2d(4, 4, 3, 2, 2, dilation=2, groups=4, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = conv(x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cat_channels_is_torch_cat_with_each_gradient_in_its_inputs_layout(layout: torch.memory_format) -> None:
    parts = [torch.randn(2, c, 5, 6, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
             for c in (3, 1, 4)]
    out = cat_channels(parts)
    assert torch.equal(out, torch.cat(parts, dim=1))
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, parts, grad)
    plain = torch.autograd.grad(torch.cat(parts, dim=1), parts, grad)
    for a, b in zip(ours, plain, strict=True):
        assert torch.equal(a, b)
        assert a.is_contiguous(memory_format=layout)  # a plain cat's channel slices are not, in channels-last
