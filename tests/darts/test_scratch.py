"""scratch.py: the mixtures' temporaries come from a per-thread pool on CPU, laid out like their input."""

from __future__ import annotations

import threading

import torch

from optuna_nas.darts.scratch import _KEEP, _POOL, ScratchMaps


def test_maps_are_laid_out_like_the_input_and_reused_after_the_block() -> None:
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    with ScratchMaps(x) as maps:
        first = maps.new()
        second = maps.new()
        assert first.shape == x.shape and first.stride() == x.stride() and first.dtype == x.dtype
        assert first.data_ptr() != second.data_ptr()  # live maps never share memory
        held = {first.data_ptr(), second.data_ptr()}
    with ScratchMaps(x) as maps:
        assert {maps.new().data_ptr(), maps.new().data_ptr()} == held
    # a map of the same size and dtype serves another shape or layout
    with ScratchMaps(torch.randn(6, 20)) as maps:
        assert maps.new().data_ptr() in held


def test_the_pool_keeps_a_bounded_number_of_maps_and_one_per_thread() -> None:
    x = torch.randn(7, 11)
    with ScratchMaps(x) as maps:
        for _ in range(_KEEP + 5):
            maps.new()
    assert len(_POOL.free[(x.numel(), x.dtype)]) == _KEEP
    seen: list[int] = []

    def other_thread() -> None:
        with ScratchMaps(x) as maps:
            seen.append(maps.new().data_ptr())

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    with ScratchMaps(x) as maps:
        mine = maps.new().data_ptr()
    assert seen[0] != mine  # another thread never gets this thread's maps


def test_maps_that_are_not_dense_or_not_on_cpu_are_plain_new_tensors() -> None:
    strided = torch.randn(4, 6)[:, ::2]
    with ScratchMaps(strided) as maps:
        m = maps.new()
        assert m.shape == strided.shape
    assert not maps.taken
