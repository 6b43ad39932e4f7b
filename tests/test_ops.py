from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from optuna_nas.darts.space import SearchSpace
from optuna_nas.errors import NasError
from optuna_nas.ops import (
    DARTS_OPERATORS,
    PAPER_ACTIVATIONS,
    ActivatedOperation,
    FactorizedReduce,
    LearnableSwish,
    build_operation,
    create_activation,
    generic_convolution,
    operation_names,
    operation_spec,
    register_activation,
)


def test_darts_operators_and_paper_activations_are_registered() -> None:
    assert [operation_spec(n).parameterized for n in DARTS_OPERATORS] == [False] * 4 + [True] * 4
    x = torch.randn(2, 4, 8, 8)
    for name in PAPER_ACTIVATIONS:
        act = create_activation(name)
        assert act(x).shape == x.shape


@pytest.mark.parametrize("name", ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
                                  "max_pool_3x3", "avg_pool_3x3", "skip_connect", "none"])
@pytest.mark.parametrize("stride", [1, 2])
def test_operators_keep_channels_and_apply_stride(name: str, stride: int) -> None:
    op = build_operation(name, 4, stride, affine=True, activation="selu")
    assert op(torch.randn(2, 4, 8, 8)).shape == (2, 4, 8 // stride, 8 // stride)


def test_parameterised_operator_takes_its_activation_at_the_input_and_relu_inside() -> None:
    """The documented choice: σ at the edge input; ReLU between the stacked separable convolutions."""
    op = build_operation("sep_conv_3x3", 4, 1, affine=True, activation="selu")
    assert isinstance(op, ActivatedOperation) and isinstance(op.activation, nn.SELU)
    inner = [m for m in op.body.modules() if not isinstance(m, nn.Sequential)]
    assert [type(m) for m in inner if not isinstance(m, nn.Conv2d | nn.BatchNorm2d)] == [nn.ReLU]
    x = torch.randn(2, 4, 8, 8)
    op.eval()
    assert torch.equal(op(x), op.body(torch.selu(x)))


def test_swish_has_a_learnable_coefficient() -> None:
    swish = LearnableSwish()
    x = torch.randn(5)
    assert torch.allclose(swish(x), x * torch.sigmoid(x))
    swish(x).sum().backward()
    assert swish.b.grad is not None and swish.b.grad.abs() > 0


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(NasError, match="unknown operator 'conv_4x4'"):
        operation_spec("conv_4x4")
    with pytest.raises(NasError, match="unknown activation 'gelu2'"):
        create_activation("gelu2")


def test_users_register_activations_without_editing_the_library() -> None:
    register_activation("test_gelu", nn.GELU, overwrite=True)
    space = SearchSpace("mine", activations=("relu", "test_gelu"), activation_mode="factorized")
    assert space.choices_per_edge() == 3 + 4 * 2
    with pytest.raises(NasError, match="already registered"):
        register_activation("test_gelu", nn.GELU)


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_is_two_offset_strided_1x1_convolutions(size: int) -> None:
    op = FactorizedReduce(4, 6, affine=True).eval()
    x = torch.randn(2, 4, size, size)
    relu = torch.relu(x)
    shifted = nn.functional.pad(relu[:, :, 1:, 1:], (0, size % 2, 0, size % 2))
    reference = torch.cat([nn.functional.conv2d(relu, op.conv_1.weight, stride=2),
                           nn.functional.conv2d(shifted, op.conv_2.weight, stride=2)], dim=1)
    torch.testing.assert_close(op(x), op.bn(reference))


def test_factorized_reduce_backward_survives_channels_last_on_one_thread() -> None:
    """torch's strided 1x1 convolution corrupts the heap here; FactorizedReduce must not use it."""
    script = (
        "import torch; torch.set_num_threads(1)\n"
        "from optuna_nas.ops import FactorizedReduce\n"
        "op = FactorizedReduce(4, 4, True).to(memory_format=torch.channels_last)\n"
        "for _ in range(40):\n"
        "    x = torch.randn(32, 4, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()\n"
        "    op(x).square().mean().backward()\n"
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 0


@pytest.mark.parametrize("family", ["sep_conv", "dil_conv", "conv"])
@pytest.mark.parametrize("k", [1, 3, 5, 7, 9, 11])
def test_generic_convolutions_keep_the_spatial_size(family: str, k: int) -> None:
    name = f"{family}_{k}x{k}"
    assert operation_spec(name).parameterized
    for stride, size in ((1, 8), (2, 8), (2, 7)):
        op = build_operation(name, 4, stride, affine=True, activation="selu")
        assert isinstance(op, ActivatedOperation) and isinstance(op.activation, nn.SELU)
        assert op(torch.randn(2, 4, size, size)).shape == (2, 4, -(-size // stride), -(-size // stride))
    assert name in operation_names()  # registered on first use


@pytest.mark.parametrize("name", ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"])
def test_generic_formulas_reproduce_the_darts_convolutions(name: str) -> None:
    factory = generic_convolution(name)
    assert factory is not None
    generic, darts = factory(4, 2, False), operation_spec(name).factory(4, 2, False)
    assert repr(generic) == repr(darts)  # same layers, kernels, paddings, dilations and strides


def test_plain_conv_body_is_a_relu_free_convolution_and_batchnorm() -> None:
    body = operation_spec("conv_5x5").factory(4, 1, True)
    assert len(body) == 2 and isinstance(body[0], nn.Conv2d) and isinstance(body[1], nn.BatchNorm2d)
    assert (body[0].kernel_size, body[0].padding, body[0].groups) == ((5, 5), (2, 2), 1)
    assert sum(p.numel() for p in body.parameters()) == 4 * 4 * 25 + 2 * 4


@pytest.mark.parametrize("name", ["conv_4x4", "conv_13x13", "sep_conv_3x5", "dil_conv_03x03", "depth_conv_3x3"])
def test_generic_names_outside_the_rule_are_unknown(name: str) -> None:
    with pytest.raises(NasError, match=f"unknown operator '{name}'.*odd K in 1..11"):
        operation_spec(name)
