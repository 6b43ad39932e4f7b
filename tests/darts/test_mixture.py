"""mixture.py: the hand-written backward of the fused β-mixture is the derivative of its forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optuna_nas.darts.mixture import fused_mixture
from optuna_nas.ops import create_activation

NAMES = ["relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "celu", "selu", "swish"]


def _activations(train: bool) -> list[nn.Module]:
    acts = [create_activation(n).double().train(train) for n in NAMES]
    with torch.no_grad():
        acts[3].weight.fill_(0.3)  # PReLU slope
        acts[8].b.fill_(1.7)  # Swish coefficient
    acts.append(nn.CELU(alpha=0.5).double())  # a second expm1 scale
    return acts


@pytest.mark.parametrize("train", [False, True])  # training: RReLU draws random slopes (the same in backward)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gradients_of_input_weights_prelu_and_swish_pass_gradcheck(train: bool, layout: torch.memory_format) -> None:
    acts = _activations(train)
    # values away from the kinks at 0 and 6, where finite differences would straddle them
    magnitude = torch.empty(2, 3, 4, 4, dtype=torch.float64).uniform_(0.05, 0.95) + torch.randint(0, 8, (2, 3, 4, 4))
    x = magnitude * (torch.randint(0, 2, (2, 3, 4, 4)) * 2 - 1)
    x = x.contiguous(memory_format=layout).requires_grad_()
    weights = torch.softmax(torch.randn(len(acts), dtype=torch.float64), 0).requires_grad_()
    prelu, swish_b = acts[3].weight, acts[8].b

    def mixture(x: torch.Tensor, weights: torch.Tensor, prelu: torch.Tensor, swish_b: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)  # the same RReLU slopes at every evaluation
        return fused_mixture(x, weights, acts)

    assert torch.autograd.gradcheck(mixture, (x, weights, prelu, swish_b))


def test_values_and_gradients_equal_the_activation_by_activation_sum_in_float64() -> None:
    acts = _activations(train=False)
    x = (3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weights = torch.softmax(torch.randn(len(acts), dtype=torch.float64), 0).requires_grad_()
    params = [x, weights, acts[3].weight, acts[8].b]
    fused = fused_mixture(x, weights, acts)
    plain = sum(w * a(x) for w, a in zip(weights, acts, strict=True))
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(fused)
    for a, b in zip(torch.autograd.grad(fused, params, grad), torch.autograd.grad(plain, params, grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("train", [False, True])
def test_only_the_input_and_rrelus_slopes_are_kept_for_backward(train: bool) -> None:
    acts = _activations(train)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    weights = torch.softmax(torch.randn(len(acts)), 0).requires_grad_()
    kept: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        fused_mixture(x, weights, acts)
    maps = [t for t in kept if t.dim() == x.dim()]  # not the weights and scalars
    assert maps[0] is x
    assert len(maps) == (2 if train else 1)  # RReLU's slopes in training
    if train:
        rrelu = acts[4]
        assert rrelu.lower <= maps[1].min() and maps[1].max() <= rrelu.upper
