"""Search spaces: which operators and activations a DARTS-family cell may use, read from YAML files.

A space file names its operator group and activation group (any registered names, any subset) and
the cell shape. Its size is computed from that definition, not quoted::

    name: a_darts
    operators: [none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, ...]
    activations: [relu, relu6, leaky_relu, prelu, rrelu, elu, celu, selu, swish]
    activation_mode: factorized
    cell: {steps: 4, inputs_per_node: 2}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import NasError
from .ops import DARTS_OPERATORS, PAPER_ACTIVATIONS, check_activation, operation_spec

SPACE_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
_KEYS = {"name", "description", "operators", "activations", "activation_mode", "cell"}
_CELL_KEYS = {"steps", "inputs_per_node"}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    operators: tuple[str, ...] = DARTS_OPERATORS
    activations: tuple[str, ...] = ("relu",)
    activation_mode: str = "fixed:relu"
    steps: int = 4
    inputs_per_node: int = 2

    def __post_init__(self) -> None:
        for op in self.operators:
            operation_spec(op)
        for act in self.activations:
            check_activation(act)
        if not any(op != "none" for op in self.operators):
            raise NasError(f"search space {self.name!r} has no operator other than 'none'")
        if not self.activations:
            raise NasError(f"search space {self.name!r} lists no activation")
        if self.steps < 1:
            raise NasError(f"search space {self.name!r}: cell steps must be >= 1, got {self.steps}")
        if not 1 <= self.inputs_per_node <= 2:
            raise NasError(f"search space {self.name!r}: inputs_per_node must be 1 or 2")

    @property
    def parameterized_operators(self) -> tuple[str, ...]:
        return tuple(op for op in self.operators if operation_spec(op).parameterized)

    def choices_per_edge(self) -> int:
        """Distinct (operator, activation) choices of a kept edge: 'none' is never kept."""
        return sum(
            len(self.activations) if operation_spec(op).parameterized else 1
            for op in self.operators
            if op != "none"
        )

    def cell_count(self) -> int:
        """Cells of one type: each node keeps ``inputs_per_node`` distinct inputs, each with one choice."""
        k = self.inputs_per_node
        return math.prod(math.comb(2 + i, k) * self.choices_per_edge() ** k for i in range(self.steps))

    def architecture_count(self) -> int:
        """Architectures of the space: a normal cell and a reduction cell chosen independently."""
        return self.cell_count() ** 2


def load_search_space(path_or_name: str) -> SearchSpace:
    """Read a space from a YAML file, or a shipped one by name (``darts``, ``a_darts``)."""
    path = Path(path_or_name)
    if not path.is_file() and (SPACE_DIR / f"{path_or_name}.yaml").is_file():
        path = SPACE_DIR / f"{path_or_name}.yaml"
    if not path.is_file():
        raise NasError(f"search space file not found: {path_or_name}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise NasError(f"{path}: malformed YAML{where}") from None
    return _space_from_dict(data, str(path))


def _space_from_dict(data: Any, source: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise NasError(f"{source}: a search space must be a mapping")
    unknown = set(data) - _KEYS
    if unknown:
        raise NasError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    cell = data.get("cell") or {}
    if not isinstance(cell, dict) or set(cell) - _CELL_KEYS:
        raise NasError(f"{source}: 'cell' takes only {', '.join(sorted(_CELL_KEYS))}")
    for key in ("operators", "activations"):
        if key in data and not (isinstance(data[key], list) and all(isinstance(v, str) for v in data[key])):
            raise NasError(f"{source}: '{key}' must be a list of names")
    try:
        return SearchSpace(
            name=str(data.get("name", Path(source).stem)),
            operators=tuple(data.get("operators", DARTS_OPERATORS)),
            activations=tuple(data.get("activations", ("relu",))),
            activation_mode=str(data.get("activation_mode", "fixed:relu")),
            steps=_int(cell.get("steps", 4), "cell.steps", source),
            inputs_per_node=_int(cell.get("inputs_per_node", 2), "cell.inputs_per_node", source),
        )
    except NasError as exc:
        raise NasError(f"{source}: {exc}") from None


def _int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NasError(f"{source}: '{key}' must be an integer, got {value!r}")
    return value


DARTS_SPACE = SearchSpace(name="darts")
A_DARTS_SPACE = SearchSpace(name="a_darts", activations=PAPER_ACTIVATIONS, activation_mode="factorized")
