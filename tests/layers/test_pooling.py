"""pooling.py: max pooling that recomputes its argmax is nn.MaxPool2d, and keeps no indices for backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optuna_nas.layers import MaxPool2d

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
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())


def test_only_the_input_is_kept_for_backward() -> None:
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _saved_bytes(MaxPool2d(3, 1, 1), x) == x.numel() * x.element_size()
    assert _saved_bytes(nn.MaxPool2d(3, 1, 1), x) == 3 * x.numel() * x.element_size()  # x and int64 indices
