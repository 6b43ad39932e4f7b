"""RandGrow search spaces: the initial skeleton, the search mode and the increment operation set, from YAML.

A space file (shipped ones, ``randgrow_macro`` and ``randgrow_cell``, are package data found by name)::

    name: randgrow_macro
    mode: macro            # or cell
    cells_per_block: 6     # N: normal cells per block (3N + 2 cells in all)
    channels: 32           # F: initial channels, even (a stride-2 skip_connect splits them in halves)
    operations: [sep_conv_3x3, sep_conv_5x5, max_pool_3x3, avg_pool_3x3, skip_connect]

Every key is optional: ``name`` defaults to the file's stem, the others to the paper's values. Any error
is one :class:`NasError` line naming the file, the key and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NasError
from ..resources import read_yaml
from .architecture import INCREMENT_OPERATIONS, SearchMode, check_operations

MODES = ("macro", "cell")
_KEYS = ("name", "description", "mode", "cells_per_block", "channels", "operations")


@dataclass(frozen=True)
class RandGrowSpace:
    """What a RandGrow search grows: its skeleton (N, F), its mode and its increment operators."""

    name: str
    mode: SearchMode = "macro"
    cells_per_block: int = 6
    channels: int = 32
    operations: tuple[str, ...] = INCREMENT_OPERATIONS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise NasError(f"'name' must be a non-empty string, got {self.name!r}")
        if self.mode not in MODES:
            raise NasError(f"'mode' must be one of {', '.join(MODES)}, got {self.mode!r}")
        for key in ("cells_per_block", "channels"):
            if not _is_int(getattr(self, key)):
                raise NasError(f"'{key}' must be an integer, got {getattr(self, key)!r}")
        if self.cells_per_block < 1:
            raise NasError(f"'cells_per_block' (N) must be at least 1, got {self.cells_per_block}")
        if self.channels < 1 or self.channels % 2:
            raise NasError(f"'channels' (F) must be a positive even number, got {self.channels}")
        try:
            object.__setattr__(self, "operations", check_operations(self.operations))
        except NasError as exc:
            raise NasError(f"'operations': {exc}") from None

    @property
    def increments_per_step(self) -> int:
        """Increments one growth step adds: ``3N + 2`` in macro search, one per cell type in cell search."""
        return 3 * self.cells_per_block + 2 if self.mode == "macro" else 2


def _is_randgrow_space(name: str) -> bool:
    return name.startswith("randgrow")


def load_randgrow_space(path_or_name: str | Path) -> RandGrowSpace:
    """Read a RandGrow space from a YAML file, or a shipped one by name (``randgrow_macro``, ``randgrow_cell``)."""
    document = read_yaml("spaces", path_or_name, "RandGrow space", keep=_is_randgrow_space)
    return _space_from_dict(document.data, document.source, document.stem)


def _space_from_dict(data: Any, path: str, stem: str) -> RandGrowSpace:
    if not isinstance(data, dict):
        raise NasError(f"{path}: a RandGrow space must be a mapping of {', '.join(_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise NasError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_KEYS)}")
    if "description" in data and not isinstance(data["description"], str):
        raise NasError(f"{path}: 'description' must be a string, got {data['description']!r}")
    operations = data.get("operations", list(INCREMENT_OPERATIONS))
    if not isinstance(operations, list) or not all(isinstance(op, str) for op in operations):
        raise NasError(f"{path}: 'operations' must be a list of operator names, got {operations!r}")
    try:
        return RandGrowSpace(
            name=data.get("name", stem),
            mode=data.get("mode", "macro"),
            cells_per_block=data.get("cells_per_block", 6),
            channels=data.get("channels", 32),
            operations=tuple(operations),
        )
    except NasError as exc:
        raise NasError(f"{path}: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
