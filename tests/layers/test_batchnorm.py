"""batchnorm.py: the channels-last paths (few channels, channel counts that do not fill whole vectors) are torch's
batch norm: outputs, gradients, running stats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optuna_nas.layers.batchnorm import FEW_CHANNELS, BatchNorm2d, _lanes_per_channel, batch_norm

# few channels; then 20 and 36 float64 channels (not a whole number of 8-double vectors), viewed 2 pixels per row
SHAPES = [(4, 4, 8, 8), (3, 8, 5, 7), (2, 2, 16, 16), (5, 12, 3, 3), (4, 20, 4, 4), (2, 36, 3, 6)]


def _input(shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x = 3.0 * torch.randn(shape, dtype=dtype) + 5.0  # a mean far from zero: cancellation would show
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_training_batch_norm_equals_torch_in_outputs_gradients_and_running_stats(shape: tuple[int, ...],
                                                                               affine: bool) -> None:
    torch.manual_seed(0)
    x = _input(shape)
    assert _lanes_per_channel(x)  # the path under test is really taken
    c = shape[1]
    weight = (torch.rand(c, dtype=torch.float64) + 0.5).requires_grad_() if affine else None
    bias = torch.randn(c, dtype=torch.float64).requires_grad_() if affine else None
    stats = [torch.randn(c, dtype=torch.float64), torch.rand(c, dtype=torch.float64) + 0.5]
    theirs_stats = [s.clone() for s in stats]
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = batch_norm(x1, *stats, weight, bias, True, 0.1, 1e-5)
    theirs = F.batch_norm(x2, *theirs_stats, weight, bias, True, 0.1, 1e-5)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(stats, theirs_stats, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ours)
    inputs = [t for t in (x1, weight, bias) if t is not None]
    ours_grads = torch.autograd.grad(ours, inputs, grad)
    theirs_grads = torch.autograd.grad(theirs, [x2, *inputs[1:]], grad)
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert ours_grads[0].is_contiguous(memory_format=torch.channels_last)


def test_float32_agrees_with_torch_to_rounding() -> None:
    torch.manual_seed(1)
    x = _input((8, 4, 16, 16), torch.float32).requires_grad_()
    weight = torch.rand(4).requires_grad_()
    ours = batch_norm(x, None, None, weight, None, True)
    theirs = F.batch_norm(x, None, None, weight, None, True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, [x, weight], grad), torch.autograd.grad(theirs, [x, weight], grad),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_module_counts_batches_and_follows_momentum_like_nn_batchnorm(momentum: float | None) -> None:
    torch.manual_seed(2)
    ours, theirs = BatchNorm2d(4, momentum=momentum).double(), nn.BatchNorm2d(4, momentum=momentum).double()
    theirs.load_state_dict(ours.state_dict())
    for _ in range(3):
        x = _input((4, 4, 6, 6))
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    ours.eval(), theirs.eval()
    x = _input((2, 4, 6, 6))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_a_constant_channel_normalises_to_the_bias_like_torch() -> None:
    x = _input((4, 20, 4, 4))
    x[:, 3] = 2.5
    bias = torch.randn(20, dtype=torch.float64)
    ours, theirs = batch_norm(x, None, None, None, bias, True), F.batch_norm(x, None, None, None, bias, True)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_ragged_channels_in_float32_agree_with_torch_to_rounding() -> None:
    torch.manual_seed(3)
    x = _input((8, 36, 8, 8), torch.float32).requires_grad_()
    assert _lanes_per_channel(x) == 4  # 4 x 36 floats: nine 64-byte vectors
    weight, bias = torch.rand(36).requires_grad_(), torch.randn(36).requires_grad_()
    ours = batch_norm(x, None, None, weight, bias, True)
    theirs = F.batch_norm(x, None, None, weight, bias, True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, [x, weight, bias], grad),
                    torch.autograd.grad(theirs, [x, weight, bias], grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_other_inputs_take_torchs_own_path() -> None:
    def last(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last)

    assert not _lanes_per_channel(torch.randn(2, 4, 8, 8))  # NCHW
    assert not _lanes_per_channel(last(2, FEW_CHANNELS, 8, 8))
    assert not _lanes_per_channel(last(2, 48, 8, 8))  # 3 whole vectors
    assert not _lanes_per_channel(last(1, 36, 3, 5))  # 15 pixels, k=4
    assert not _lanes_per_channel(last(2, 4, 1, 1))
    assert not _lanes_per_channel(last(2, 4, 8, 8, dtype=torch.bfloat16))
