"""pooling.py: max pooling that recomputes its argmax is nn.MaxPool2d, and keeps no indices for backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optuna_nas.layers import MaxPool2d, batch_norm, pool_batch_norm

from _autograd import saved_bytes

LAYOUTS = [torch.contiguous_format, torch.channels_last]
POOLS = [(1, 1, False), (2, 1, False), (2, 0, True), (None, 0, False)]  # (stride, padding, ceil_mode)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("stride", "padding", "ceil_mode"), POOLS)
@pytest.mark.parametrize("channels", [16, 4])  # 4: below FEW_CHANNELS, torch's own path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_pool_gives_torchs_outputs_and_gradients_exactly(layout: torch.memory_format, stride: int | None,
                                                             padding: int, ceil_mode: bool, channels: int,
                                                             dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, channels, 9, 9, dtype=dtype).contiguous(memory_format=layout)
    x[:, :, 2:5, 2:5] = 0.5  # ties: torch's gradient goes to the first maximum of each window
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1 = MaxPool2d(3, stride, padding, ceil_mode=ceil_mode)(x1)
    y2 = nn.MaxPool2d(3, stride, padding, ceil_mode=ceil_mode)(x2)
    assert torch.equal(y1, y2)
    grad = torch.randn_like(y1)
    (g1,), (g2,) = torch.autograd.grad(y1, x1, grad), torch.autograd.grad(y2, x2, grad)
    assert torch.equal(g1, g2)
    assert g1.is_contiguous(memory_format=layout)


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    return saved_bytes(lambda: module(x))


def test_only_the_input_is_kept_for_backward() -> None:
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _saved_bytes(MaxPool2d(3, 1, 1), x) == x.numel() * x.element_size()
    assert _saved_bytes(nn.MaxPool2d(3, 1, 1), x) == 3 * x.numel() * x.element_size()  # x and int64 indices


POOL_LAYERS = {
    "max": lambda s: MaxPool2d(3, s, 1), "torch_max": lambda s: nn.MaxPool2d(3, s, 1),
    "avg": lambda s: nn.AvgPool2d(3, s, 1, count_include_pad=False),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pool_name", sorted(POOL_LAYERS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels", [16, 32])  # fewer channels keep the plain layers (tested below)
def test_pool_batch_norm_is_batch_norm_of_the_pooled_map(layout: torch.memory_format, pool_name: str, stride: int,
                                                         channels: int) -> None:
    torch.manual_seed(0)
    pool = POOL_LAYERS[pool_name](stride)
    x = torch.randn(3, channels, 8, 8, dtype=torch.float64).contiguous(memory_format=layout)
    scale = torch.tensor(0.3, dtype=torch.float64)  # DARTS's softmax(α) weight, as the BatchNorm's scale
    stats = [(torch.zeros(channels, dtype=torch.float64), torch.ones(channels, dtype=torch.float64))
             for _ in range(2)]
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    w1, w2 = scale.clone().requires_grad_(), scale.clone().requires_grad_()
    y1 = pool_batch_norm(x1, pool, *stats[0], w1.expand(channels).contiguous(), True, 0.1, 1e-5)
    y2 = batch_norm(pool(x2), *stats[1], w2.expand(channels).contiguous(), None, True, 0.1, 1e-5)
    assert y1 is not None
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(y1)
    for a, b in zip(torch.autograd.grad(y1, [x1, w1], grad), torch.autograd.grad(y2, [x2, w2], grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    for a, b in zip(stats[0], stats[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_pool_batch_norm_keeps_only_the_pooling_input() -> None:
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.full((16,), 0.5, requires_grad=True)
    kept = saved_bytes(lambda: pool_batch_norm(x, nn.AvgPool2d(3, 1, 1), None, None, weight, True, 0.1, 1e-5))
    assert kept < 1.1 * x.numel() * x.element_size()  # x and the per-channel statistics


def test_pool_batch_norm_leaves_evaluation_and_no_grad_to_the_plain_layers() -> None:
    x = torch.randn(2, 16, 8, 8).requires_grad_()
    pool = nn.AvgPool2d(3, 1, 1)
    assert pool_batch_norm(x, pool, None, None, None, False, 0.1, 1e-5) is None
    few = torch.randn(2, 4, 8, 8).requires_grad_()  # PC-DARTS's C/K channels: indices are cheap to keep
    assert pool_batch_norm(few, pool, None, None, None, True, 0.1, 1e-5) is None
    with torch.no_grad():
        assert pool_batch_norm(x, pool, None, None, None, True, 0.1, 1e-5) is None
