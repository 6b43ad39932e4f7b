"""The β-weighted activation mixture of Eq. 2 in few element-wise passes.

Computed one activation at a time, Σ_k w_k·f_k(x) over the paper's nine activations takes about 26
passes over the edge's tensor. All of them are x for x > 0 (up to a scale, or a clip for ReLU6) and one
of three shapes for x <= 0: a multiple of x, a multiple of expm1(x/α), or Swish. So the mixture is

    P·relu(x) + N·min(x, 0) + Σ_α E_α·expm1(min(x, 0)/α) + w_relu6·clamp(x, 0, 6) + w_swish·x·σ(b·x)

with P, N, E_α scalar sums of the weights: the same function in about ten passes. Activations outside
this family (a user's own) keep the one-at-a-time path.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from timm.layers.activations import PReLU as TimmPReLU
from torch import nn

from ..ops import LearnableSwish

# SELU(x) = λ·(x if x > 0 else α·expm1(x))
_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717
# exact types: a subclass may compute something else (timm's PReLU only adds an unused `inplace` flag)
_FUSABLE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, TimmPReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, LearnableSwish)


def fusable(acts: Sequence[nn.Module]) -> bool:
    """True when every activation has a closed form above (one-parameter PReLU included)."""
    return all(type(a) in _FUSABLE and not (isinstance(a, nn.PReLU) and a.weight.numel() != 1) for a in acts)


# One term beyond P, N and E_α: ("relu6", w), ("swish", w, b) or ("rrelu", w, lower, upper) in activation order
Extra = tuple[Any, ...]


def mixture_terms(weights: torch.Tensor, acts: Sequence[nn.Module]) -> tuple[Any, ...]:
    """The scalars of the closed form above: (P, N, ((α, E_α), ...), extras). Scalar work only, so the
    element-wise part (:func:`mixture_from_terms`) sees tensors and plain numbers, never modules."""
    pos_coef = weights.new_zeros(())
    neg_coef = weights.new_zeros(())
    expm1_coef: dict[float, torch.Tensor] = {}
    extras: list[Extra] = []
    for w, act in zip(weights, acts, strict=True):
        if isinstance(act, nn.ReLU6):
            extras.append(("relu6", w))
        elif isinstance(act, LearnableSwish):
            extras.append(("swish", w, act.b))
        elif isinstance(act, nn.SELU):
            pos_coef = pos_coef + w * _SELU_LAMBDA
            expm1_coef[1.0] = expm1_coef.get(1.0, 0.0) + w * (_SELU_LAMBDA * _SELU_ALPHA)
        else:
            pos_coef = pos_coef + w
            if isinstance(act, nn.LeakyReLU):
                neg_coef = neg_coef + w * act.negative_slope
            elif isinstance(act, nn.PReLU):
                neg_coef = neg_coef + w * act.weight[0]
            elif isinstance(act, nn.RReLU):
                if act.training:  # a random slope per element, as nn.RReLU draws in training
                    extras.append(("rrelu", w, float(act.lower), float(act.upper)))
                else:
                    neg_coef = neg_coef + w * ((act.lower + act.upper) / 2)
            elif isinstance(act, nn.ELU):  # α·expm1(x): the α=1 term, scaled by α
                expm1_coef[1.0] = expm1_coef.get(1.0, 0.0) + w * act.alpha
            elif isinstance(act, nn.CELU):
                alpha = float(act.alpha)
                expm1_coef[alpha] = expm1_coef.get(alpha, 0.0) + w * alpha
    return pos_coef, neg_coef, tuple(expm1_coef.items()), tuple(extras)


def mixture_from_terms(x: torch.Tensor, pos_coef: torch.Tensor, neg_coef: torch.Tensor,
                       expm1_terms: tuple[tuple[float, torch.Tensor], ...], extras: tuple[Extra, ...]) -> torch.Tensor:
    """The element-wise passes of the closed form (what ``torch.compile`` fuses, see :func:`compiled_mixture`)."""
    pos = torch.relu(x)
    neg = x - pos
    out = pos * pos_coef + neg * neg_coef
    for alpha, coef in expm1_terms:
        out = out + coef * torch.expm1(neg / alpha if alpha != 1.0 else neg)
    for extra in extras:
        kind, w = extra[0], extra[1]
        if kind == "relu6":
            out = out + w * x.clamp(0.0, 6.0)
        elif kind == "swish":
            out = out + w * x * torch.sigmoid(extra[2] * x)
        else:
            slope = torch.empty_like(x).uniform_(extra[2], extra[3])
            out = out + w * neg * slope
    return out


def fused_mixture(x: torch.Tensor, weights: torch.Tensor, acts: Sequence[nn.Module]) -> torch.Tensor:
    """Σ_k weights[k]·acts[k](x) for activations accepted by :func:`fusable`."""
    return mixture_from_terms(x, *mixture_terms(weights, acts))


@functools.cache
def _compiled_from_terms() -> Any:
    # dynamic shapes: one compilation serves every cell's feature-map size
    return torch.compile(mixture_from_terms, dynamic=True)


def compiled_mixture(x: torch.Tensor, weights: torch.Tensor, acts: Sequence[nn.Module]) -> torch.Tensor:
    """:func:`fused_mixture` with its element-wise passes compiled into one loop forward and one backward by
    ``torch.compile`` (measured on CPU at 64x16x32x32: 6.2 ms against 15.9 ms forward+backward). The same
    function; the random RReLU slopes come from the compiler's generator instead of torch's. The first call
    compiles (seconds), so this is an option for long searches, not the default."""
    return _compiled_from_terms()(x, *mixture_terms(weights, acts))
