"""Shared fixtures: tiny shapes and one intra-op thread so the suite stays fast on two cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

pytest_plugins = ("services",)  # tests/services.py: PostgreSQL, Chromium and dashboard fixtures


@pytest.fixture(autouse=True)
def _seed_and_single_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP spinning makes
    each convolution far slower; the previous setting is restored afterwards."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
