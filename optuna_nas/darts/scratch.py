"""Scratch feature maps that the β-mixture's autograd functions reuse from one call to the next on CPU, and the
cache-sized blocks they work in.

On CPU a fresh feature map costs more than the pass that fills it: its pages come new from the kernel, each
with a fault and a zeroing, because glibc gives maps of this size back to the system when they are freed (with
its allocation thresholds raised through MALLOC_* variables, those faults disappear). One
factorised search step takes about 80,000 such faults, nearly all in the mixtures' dozen temporaries per
call. Those temporaries never leave the call (outputs and saved tensors are allocated as usual), so they can
come from a small per-thread pool instead. CUDA's caching allocator already does this, so elsewhere a scratch
map is a plain ``torch.empty_like``. (Not an allocator setting for the whole process, such as glibc's
``mallopt``: a library should not change how its host process allocates.)
"""

from __future__ import annotations

import threading
from types import TracebackType

import torch

# maps kept per (size, dtype): one call holds at most a dozen at once
_KEEP = 12


class _Pool(threading.local):
    def __init__(self) -> None:
        self.free: dict[tuple[int, torch.dtype], list[torch.Tensor]] = {}


_POOL = _Pool()


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


class ScratchMaps:
    """``with ScratchMaps(x) as maps: a = maps.new()``: uninitialised maps shaped and laid out like ``x``,
    valid until the block ends. Nothing returned from the block may be one of them (or a view of one)."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like = like
        self.pooled = like.device.type == "cpu" and _dense(like)
        self.key = (like.numel(), like.dtype)
        self.taken: list[torch.Tensor] = []

    def new(self) -> torch.Tensor:
        if not self.pooled:
            return torch.empty_like(self.like)
        free = _POOL.free.get(self.key)
        flat = free.pop() if free else torch.empty(self.key[0], dtype=self.like.dtype)
        self.taken.append(flat)
        return flat.as_strided(self.like.size(), self.like.stride())

    def __enter__(self) -> ScratchMaps:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.taken:
            free = _POOL.free.setdefault(self.key, [])
            free.extend(self.taken[: max(_KEEP - len(free), 0)])
            self.taken = []


# Elements per block (1 MB of float32): a node's mixtures keep about eight maps of a block in use at once, which
# then stay in the CPU's caches between passes, and blocks this large keep the cost of dispatching each pass
# small. At 64x16x32x32, four edges' mixtures forward took 25 ms in whole maps, 13.8 ms in blocks of this size
# (12.7 ms at half of it, 16.9 ms at a quarter).
BLOCK = 262144


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t`` (contiguous or channels-last) as a 1-D view in memory order."""
    return t.view(-1) if t.is_contiguous() else t.permute(0, 2, 3, 1).reshape(-1)


def blocks(x: torch.Tensor, maps: list[torch.Tensor]) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """(what scratch maps for one block should look like, [[x's block, each map's block], ...]): x and ``maps``
    cut into blocks of :data:`BLOCK` elements in memory order. Element-wise work done block by block then reads
    each map from memory once instead of once per pass. Where that cannot be done (not on CPU, or layouts that
    differ or are not dense) there is one block, the tensors themselves."""
    same = all(m.shape == x.shape and m.stride() == x.stride() for m in maps)
    if x.device.type != "cpu" or not same or not _dense(x) or x.numel() <= BLOCK:
        return x, [[x, *maps]]
    flat = [_flat(t) for t in (x, *maps)]
    return flat[0][:BLOCK], [[f[start:start + BLOCK] for f in flat] for start in range(0, x.numel(), BLOCK)]


def like_layout(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` in x's memory layout (a copy only where it differs): a gradient that autograd hands over in another
    layout than its input's."""
    if t.stride() == x.stride() or not _dense(x):
        return t
    return torch.empty_like(x).copy_(t)
