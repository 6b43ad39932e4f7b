"""Shared fixtures: tiny shapes so the suite stays fast on two cores."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread_determinism() -> None:
    torch.manual_seed(0)
