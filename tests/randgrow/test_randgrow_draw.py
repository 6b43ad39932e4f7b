"""Drawings of grown RandGrow networks: small, deterministic PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optuna_nas.errors import NasError
from optuna_nas.randgrow import grow, initial_architecture, sample_increments
from optuna_nas.randgrow.draw import draw_randgrow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_small_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and 5_000 < len(data) < 150_000


@pytest.mark.parametrize("mode", ["macro", "cell"])
def test_a_grown_randgrow_architecture_draws(tmp_path: Path, mode: str) -> None:
    arch = initial_architecture(cells_per_block=2, channels=8)
    rng = np.random.RandomState(0)
    for _ in range(2):
        arch = grow(arch, sample_increments(arch, mode, rng))  # type: ignore[arg-type]
    assert _is_small_png(draw_randgrow(arch, tmp_path / "grown.png"))
    assert _is_small_png(draw_randgrow(initial_architecture(1, 8), tmp_path / "initial.png"))


def test_a_long_growth_draws_its_inputs_as_a_matrix_and_stays_small(tmp_path: Path) -> None:
    arch, rng = initial_architecture(), np.random.RandomState(1)
    for _ in range(12):
        arch = grow(arch, sample_increments(arch, "macro", rng))
    path = draw_randgrow(arch, tmp_path / "long.png")
    assert _is_small_png(path) and draw_randgrow(arch, tmp_path / "again.png").read_bytes() == path.read_bytes()


def test_an_unwritable_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="cannot write the drawing to"):
        draw_randgrow(initial_architecture(1, 8), tmp_path / "missing" / "arch.png")
