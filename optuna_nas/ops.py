"""Primitive operations and activations, found by name in two registries shared by every engine.

The regular operators are those of DARTS (Liu et al., 2019): none, max/avg pooling, skip_connect,
separable and dilated convolutions. A-DARTS splits them into *parameterised* operators, which take the
edge's activation σ at their input (Eq. 1), and *non-parameterised* ones, which take the edge input
unchanged.

Design choice (the A-DARTS paper is silent here): an operator body never contains its leading
activation. The edge computes σ(x) once and feeds it to every parameterised body, which is exactly
``o(σ(x))`` of Eq. 1 and lets a search share one σ(x) (or one β-mixture) among the four convolutions.
The activation *between* the two stacked separable convolutions stays ReLU, in search and in
retraining alike, because Eq. 1 places σ only on the edge input; this keeps search and retrain the
same function and keeps A-DARTS's search overhead small.

Convolutions of any odd kernel size 1..11 exist on demand by name, so a search-space file can use them
without registering anything: ``sep_conv_KxK``, ``dil_conv_KxK`` (dilation 2) and ``conv_KxK`` (a plain
convolution then BatchNorm). All keep the spatial size at stride 1 and halve it at stride 2; like the
DARTS convolutions they are parameterised (their activation comes from the edge). The four DARTS
convolutions keep their own registrations, which the generic formulas reproduce exactly.

Users add an operator or an activation without editing the library::

    from optuna_nas.ops import register_activation
    register_activation("gelu", lambda: torch.nn.GELU())
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from timm.layers import get_act_layer
from torch import nn

from .errors import NasError
from .layers import BatchNorm2d, DilatedConv2d, MaxPool2d, SeparableSequential, cat_channels, subsample

BodyFactory = Callable[[int, int, bool], nn.Module]
ActivationFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class OperationSpec:
    """How to build one operator: ``factory(channels, stride, affine)`` returns its body."""

    name: str
    factory: BodyFactory
    parameterized: bool


_OPERATIONS: dict[str, OperationSpec] = {}
_ACTIVATIONS: dict[str, ActivationFactory] = {}


def register_operation(name: str, factory: BodyFactory, parameterized: bool, overwrite: bool = False) -> None:
    """Make an operator available by name. Parameterised bodies receive the edge activation's output."""
    if name in _OPERATIONS and not overwrite:
        raise NasError(f"operator {name!r} is already registered (pass overwrite=True to replace it)")
    _OPERATIONS[name] = OperationSpec(name, factory, parameterized)


def register_activation(name: str, factory: ActivationFactory, overwrite: bool = False) -> None:
    """Make an activation available by name; ``factory()`` returns a fresh module (it may hold parameters)."""
    if name in _ACTIVATIONS and not overwrite:
        raise NasError(f"activation {name!r} is already registered (pass overwrite=True to replace it)")
    _ACTIVATIONS[name] = factory


def operation_spec(name: str) -> OperationSpec:
    """The operator ``name``; a generic convolution name (``sep_conv_7x7``, ...) is registered on first use."""
    spec = _OPERATIONS.get(name)
    if spec is not None:
        return spec
    factory = generic_convolution(name)
    if factory is None:
        raise NasError(
            f"unknown operator {name!r}; known: {', '.join(sorted(_OPERATIONS))}, and "
            f"{'/'.join(GENERIC_CONVOLUTIONS)}_KxK for odd K in {GENERIC_KERNELS[0]}..{GENERIC_KERNELS[-1]}"
        )
    register_operation(name, factory, parameterized=True)
    return _OPERATIONS[name]


def check_activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise NasError(f"unknown activation {name!r}; known: {', '.join(sorted(_ACTIVATIONS))}")
    return name


def create_activation(name: str) -> nn.Module:
    return _ACTIVATIONS[check_activation(name)]()


# Activations that are a fixed function of their input (no parameters, no randomness): edges reading the same
# node with equal ones (same type and settings) share one activated map, where the original code's separate
# ReLUs compute the same numbers again. PReLU and Swish learn per edge; RReLU draws per call.
_SHAREABLE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.GELU, nn.Tanh,
                          nn.Sigmoid, nn.Hardswish, nn.Mish)


def activation_share_key(acts: Sequence[nn.Module]) -> str | None:
    """Equal for activations that compute the same maps from the same input; None where one of them learns,
    draws at random or works in place (its map is then its own)."""
    if not acts or any(type(a) not in _SHAREABLE_ACTIVATIONS or getattr(a, "inplace", False) for a in acts):
        return None
    return "|".join(repr(a) for a in acts)


def operation_names() -> list[str]:
    return list(_OPERATIONS)


def activation_names() -> list[str]:
    return list(_ACTIVATIONS)


def build_operation(name: str, channels: int, stride: int, affine: bool, activation: str | None) -> nn.Module:
    """A stand-alone operator for a discrete network: ``body(σ(x))`` or ``body(x)``."""
    spec = operation_spec(name)
    body = spec.factory(channels, stride, affine)
    if not spec.parameterized:
        return body
    return ActivatedOperation(create_activation(activation or "relu"), body)


class ActivatedOperation(nn.Module):
    """``body(activation(x))``: one edge of a discrete cell with its own activation."""

    def __init__(self, activation: nn.Module, body: nn.Module) -> None:
        super().__init__()
        self.activation = activation
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.activation(x))


# ---------------------------------------------------------------- building blocks (DARTS operations.py)


class Zero(nn.Module):
    """The ``none`` operator: zeros at the output resolution."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU, convolution, BatchNorm: the 1x1 cell-input preprocessing of DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            BatchNorm2d(c_out, affine=affine),
        )

    def after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution and BatchNorm of an input ReLU'd already: a network whose cell outputs are read by
        two cells (as s1, then as s0) ReLUs each once for both."""
        return self[2](self[1](x))


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset 1x1 stride-2 convolutions (strided skip_connect).

    Each 1x1 stride-2 convolution is computed as a subsample then a 1x1 stride-1 convolution: the same
    function and parameters, and it avoids a torch 2.x CPU crash (heap corruption in the backward pass of a
    strided 1x1 convolution on channels-last input with one intra-op thread; tested in test_ops). The
    subsample keeps the input's memory layout in backward (see ``strided.py``).
    """

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        if c_out % 2:
            raise NasError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=1, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=1, padding=0, bias=False)
        self.bn = BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(self.relu(x))

    def after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """The two convolutions and the BatchNorm of an input ReLU'd already (as ``ReLUConvBN.after_relu``)."""
        if x.shape[-1] % 2 or x.shape[-2] % 2:  # odd sizes: pad so the shifted half has the same shape
            shifted = subsample(nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)))
        else:
            shifted = subsample(x, 2, 1, 1)  # x[:, :, 1:, 1:][:, :, ::2, ::2]
        return self.bn(cat_channels([self.conv_1(subsample(x)), self.conv_2(shifted)]))


def dil_conv_body(c: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool) -> nn.Sequential:
    """Dilated depthwise conv, pointwise conv, BatchNorm (DARTS DilConv without its leading ReLU)."""
    return SeparableSequential(
        DilatedConv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        BatchNorm2d(c, affine=affine),
    )


def sep_conv_body(c: int, kernel: int, stride: int, padding: int, affine: bool) -> nn.Sequential:
    """Two stacked depthwise-separable convolutions (DARTS SepConv without its leading ReLU).

    The activation between the two stacked convolutions is ReLU (see the module docstring).
    """
    return SeparableSequential(
        nn.Conv2d(c, c, kernel, stride, padding, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        BatchNorm2d(c, affine=affine),
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, kernel, 1, padding, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        BatchNorm2d(c, affine=affine),
    )


def conv_body(c: int, kernel: int, stride: int, padding: int, affine: bool) -> nn.Sequential:
    """A plain (dense) convolution then BatchNorm, without a leading activation (``conv_KxK``)."""
    return nn.Sequential(
        nn.Conv2d(c, c, kernel, stride, padding, bias=False),
        BatchNorm2d(c, affine=affine),
    )


# Generic convolutions: family name -> body of kernel size k. Padding keeps the spatial size at stride 1
# (and gives ceil(n/2) at stride 2): k//2 for the undilated ones, k-1 for dilation 2 (effective kernel
# 2k-1). These formulas give the DARTS paddings (sep 3x3: 1, 5x5: 2; dil 3x3: 2, 5x5: 4).
GENERIC_CONVOLUTIONS = ("sep_conv", "dil_conv", "conv")
GENERIC_KERNELS = (1, 3, 5, 7, 9, 11)
_GENERIC_NAME = re.compile(r"(sep_conv|dil_conv|conv)_([1-9][0-9]*)x([1-9][0-9]*)")


def generic_convolution(name: str) -> BodyFactory | None:
    """The body factory of ``sep_conv_KxK`` / ``dil_conv_KxK`` / ``conv_KxK`` (K odd, 1..11), else None."""
    match = _GENERIC_NAME.fullmatch(name)
    if match is None or match[2] != match[3] or int(match[2]) not in GENERIC_KERNELS:
        return None
    family, k = match[1], int(match[2])
    if family == "sep_conv":
        return lambda c, s, a: sep_conv_body(c, k, s, k // 2, a)
    if family == "dil_conv":
        return lambda c, s, a: dil_conv_body(c, k, s, k - 1, 2, a)
    return lambda c, s, a: conv_body(c, k, s, k // 2, a)


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


def _max_pool(c: int, stride: int, affine: bool) -> nn.Module:
    return MaxPool2d(3, stride=stride, padding=1)


def _avg_pool(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


register_operation("none", lambda c, s, a: Zero(s), parameterized=False)
register_operation("max_pool_3x3", _max_pool, parameterized=False)
register_operation("avg_pool_3x3", _avg_pool, parameterized=False)
register_operation("skip_connect", _skip, parameterized=False)
register_operation("sep_conv_3x3", lambda c, s, a: sep_conv_body(c, 3, s, 1, a), parameterized=True)
register_operation("sep_conv_5x5", lambda c, s, a: sep_conv_body(c, 5, s, 2, a), parameterized=True)
register_operation("dil_conv_3x3", lambda c, s, a: dil_conv_body(c, 3, s, 2, 2, a), parameterized=True)
register_operation("dil_conv_5x5", lambda c, s, a: dil_conv_body(c, 5, s, 4, 2, a), parameterized=True)


# ---------------------------------------------------------------- activations (the A-DARTS group)


class LearnableSwish(nn.Module):
    """Swish ``x * sigmoid(b * x)`` with a learned scalar ``b`` (Ramachandran et al., 2018), b starts at 1."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.b * x)


def _timm_activation(name: str) -> ActivationFactory:
    layer = get_act_layer(name)
    return lambda: layer()


for _name in ("relu", "relu6", "leaky_relu", "prelu", "elu", "celu", "selu"):
    register_activation(_name, _timm_activation(_name))
register_activation("rrelu", nn.RReLU)  # timm's factory has no RReLU
register_activation("swish", LearnableSwish)  # timm's swish is SiLU, whose b is fixed at 1

PAPER_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "celu", "selu", "swish")
DARTS_OPERATORS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
