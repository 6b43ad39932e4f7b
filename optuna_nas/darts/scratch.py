"""Scratch feature maps that the β-mixture's autograd functions reuse from one call to the next on CPU.

On CPU a fresh feature map costs more than the pass that fills it: its pages come new from the kernel, each
with a fault and a zeroing, because glibc hands maps of this size back to the system when they are freed. One
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
