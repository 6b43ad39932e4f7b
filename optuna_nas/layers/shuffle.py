"""PC-DARTS's ``channel_shuffle(cat([op_out, bypass]), K)`` written in one pass, its backward in one.

PC-DARTS computes the candidates on the first C/K channels of an edge's input, concatenates the other
channels back unchanged and shuffles the C channels with K groups, so that output channel j·K + g is input
channel g·(C/K) + j. Written as cat, reshape, transpose and reshape, that is three full copies in
channels-last memory (the transposed reshape cannot be a view there; the result is copied back to
channels-last), and as many in backward. Here the output is allocated once and filled by two strided
copies, in either memory layout: channel j·K + g of a (B, C, H, W) tensor is element [:, j, g] of its
(B, C/K, K, H, W) view, and splitting one dimension is a view in any memory layout. A search cell calls it
once per node on the sums over the node's edges (the shuffle is linear; see ``darts.supernet``).
"""

from __future__ import annotations

from typing import Any

import torch


def _groups_view(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) as (B, C/groups, groups, H, W): element [:, j, g] is channel j·groups + g."""
    b, c, h, w = t.shape
    return t.view(b, c // groups, groups, h, w)


def _layout(*parts: torch.Tensor) -> torch.memory_format:
    """channels-last where a part stores its channels innermost (the rest is often a channel slice of the
    edge's input, which no ``is_contiguous`` test accepts; a single channel says nothing)."""
    innermost = any(t.shape[1] > 1 and t.shape[2] * t.shape[3] > 1 and t.stride(1) == 1 for t in parts)
    return torch.channels_last if innermost else torch.contiguous_format


class _ShuffledCat(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, head: torch.Tensor, rest: torch.Tensor, groups: int) -> torch.Tensor:
        b, c_head, h, w = head.shape
        layout = _layout(head, rest)
        out = torch.empty((b, c_head * groups, h, w), dtype=head.dtype, device=head.device, memory_format=layout)
        parts = _groups_view(out, groups)
        parts[:, :, 0].copy_(head)
        # rest's channel g·(C/K) + j (g < K-1) goes to output channel j·K + g + 1
        parts[:, :, 1:].copy_(rest.unflatten(1, (groups - 1, c_head)).transpose(1, 2))
        ctx.shapes = (head.shape, rest.shape, groups, layout)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        head_shape, rest_shape, groups, layout = ctx.shapes
        parts = _groups_view(grad, groups)
        grad_head = grad_rest = None
        if ctx.needs_input_grad[0]:
            grad_head = torch.empty(head_shape, dtype=grad.dtype, device=grad.device, memory_format=layout)
            grad_head.copy_(parts[:, :, 0])
        if ctx.needs_input_grad[1]:
            grad_rest = torch.empty(rest_shape, dtype=grad.dtype, device=grad.device, memory_format=layout)
            grad_rest.unflatten(1, (groups - 1, head_shape[1])).copy_(parts[:, :, 1:].transpose(1, 2))
        return grad_head, grad_rest, None


def shuffled_cat(head: torch.Tensor, rest: torch.Tensor, groups: int) -> torch.Tensor:
    """``channel_shuffle(torch.cat([head, rest], 1), groups)`` as PC-DARTS defines it, where ``head`` has
    C/groups channels and ``rest`` the other C - C/groups; the result is in the parts' memory layout."""
    c_head, c_rest = head.shape[1], rest.shape[1]
    if c_rest != c_head * (groups - 1):
        raise ValueError(f"shuffled_cat: {c_head} + {c_rest} channels do not make {groups} groups of {c_head}")
    return _ShuffledCat.apply(head, rest, groups)
