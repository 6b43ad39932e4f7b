"""shuffled_cat: PC-DARTS's concatenation and channel shuffle in one copy, against the definition."""

from __future__ import annotations

import pytest
import torch

from optuna_nas.layers.shuffle import shuffled_cat

from _autograd import saved_bytes

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def pc_darts_shuffle(head: torch.Tensor, rest: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS's own definition: cat, then view (B, K, C/K, H, W), transpose, view back."""
    x = torch.cat([head, rest], dim=1)
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("head_channels", "groups"), [(2, 2), (3, 4), (1, 3), (4, 1)])
def test_the_same_values_and_gradients_as_pc_darts_definition(layout: torch.memory_format, head_channels: int,
                                                               groups: int) -> None:
    x = torch.randn(2, head_channels * groups, 5, 6, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_()
    # the edge's input split as MixedEdge splits it: the operators see the head, the rest bypasses them
    head, rest = torch.split(x, [head_channels, x.shape[1] - head_channels], dim=1)
    head = head * 2.0  # an operator's output: a tensor of its own
    out = shuffled_cat(head, rest, groups)
    expected = pc_darts_shuffle(head, rest, groups)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=layout)
    grad = torch.randn_like(out)
    (ours,) = torch.autograd.grad(out, x, grad, retain_graph=True)  # the head's product is shared
    (theirs,) = torch.autograd.grad(expected, x, grad)
    assert torch.equal(ours, theirs)


def test_output_channel_j_times_k_plus_g_is_input_channel_g_times_c_over_k_plus_j() -> None:
    head = torch.arange(2.0).view(1, 2, 1, 1)  # channels 0, 1
    rest = torch.arange(2.0, 8.0).view(1, 6, 1, 1)  # channels 2..7
    assert shuffled_cat(head, rest, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_it_keeps_no_tensor_for_backward() -> None:
    head = torch.randn(2, 2, 4, 4, requires_grad=True)
    rest = torch.randn(2, 6, 4, 4, requires_grad=True)
    assert saved_bytes(lambda: shuffled_cat(head, rest, 4)) == 0


def test_channel_counts_that_do_not_make_the_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="do not make 4 groups of 2"):
        shuffled_cat(torch.zeros(1, 2, 3, 3), torch.zeros(1, 5, 3, 3), 4)
