"""Cell architectures (genotypes): JSON in and out, the literature's reference genotypes, cost.

A genotype lists, for each cell type, two incoming edges per intermediate node: the operator, the
input node (0 and 1 are the two cell inputs) and, for parameterised operators, the activation at the
edge input (A-DARTS). DARTS genotypes carry no activation: it defaults to ReLU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import NasError
from ..ops import check_activation, operation_spec

# The two cells of a DARTS genotype, by the field names of the literature's Genotype (not RandGrow's layer
# kinds, which are "normal" and "reduction" cells of a grown network).
CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class Edge:
    op: str
    input: int
    activation: str | None = None

    @property
    def parameterized(self) -> bool:
        return operation_spec(self.op).parameterized

    @property
    def effective_activation(self) -> str | None:
        """The activation the discrete network puts in front of the operator (None when it takes none)."""
        return (self.activation or "relu") if self.parameterized else None


@dataclass(frozen=True)
class Genotype:
    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]
    # argmax activation of *every* edge of the search cell, per cell type (set by factorised search);
    # A-DARTS's Config-A freezes β to these.
    edge_activations: dict[str, tuple[str, ...]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for cell in CELL_TYPES:
            edges: tuple[Edge, ...] = getattr(self, cell)
            if not edges or len(edges) % 2:
                raise NasError(f"genotype {cell} cell needs two edges per node, got {len(edges)} edges")
            for k, edge in enumerate(edges):
                operation_spec(edge.op)
                if edge.activation is not None:
                    check_activation(edge.activation)
                node = k // 2 + 2
                if not 0 <= edge.input < node:
                    raise NasError(f"genotype {cell} edge {k} of node {node} reads node {edge.input}")
            for index in getattr(self, f"{cell}_concat"):
                if not 0 <= index < len(edges) // 2 + 2:
                    raise NasError(f"genotype {cell}_concat names node {index}, which does not exist")
        for names in (self.edge_activations or {}).values():
            for name in names:
                check_activation(name)

    def cell(self, reduction: bool) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    def with_activation(self, activation: str) -> Genotype:
        """Every parameterised edge uses ``activation`` (Table 2's "factorized → ReLU / SELU" rows)."""
        check_activation(activation)

        def swap(edges: tuple[Edge, ...]) -> tuple[Edge, ...]:
            return tuple(replace(e, activation=activation if e.parameterized else None) for e in edges)

        return replace(self, normal=swap(self.normal), reduce=swap(self.reduce))

    # ---- JSON
    def to_dict(self) -> dict[str, Any]:
        def edges(cell: tuple[Edge, ...]) -> list[dict[str, Any]]:
            return [{"op": e.op, "input": e.input, "activation": e.effective_activation} for e in cell]

        out: dict[str, Any] = {
            "normal": edges(self.normal),
            "normal_concat": list(self.normal_concat),
            "reduce": edges(self.reduce),
            "reduce_concat": list(self.reduce_concat),
        }
        if self.edge_activations:
            out["edge_activations"] = {k: list(v) for k, v in self.edge_activations.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genotype:
        if not isinstance(data, dict):
            raise NasError("a genotype must be a JSON object with 'normal' and 'reduce' edge lists")
        missing = [k for k in ("normal", "reduce") if k not in data]
        if missing:
            raise NasError(f"genotype is missing {', '.join(missing)}")
        cells = {cell: tuple(_edge(e, cell) for e in data[cell]) for cell in CELL_TYPES}
        concat = {
            cell: tuple(int(i) for i in data.get(f"{cell}_concat", range(2, len(cells[cell]) // 2 + 2)))
            for cell in CELL_TYPES
        }
        edge_acts = data.get("edge_activations")
        return cls(
            normal=cells["normal"],
            normal_concat=concat["normal"],
            reduce=cells["reduce"],
            reduce_concat=concat["reduce"],
            edge_activations={k: tuple(v) for k, v in edge_acts.items()} if edge_acts else None,
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise NasError(f"genotype is not valid JSON: {exc}") from None


def _edge(raw: Any, cell: str) -> Edge:
    """Accepts ``{"op", "input", "activation"}`` objects and DARTS-style ``[op, input(, activation)]``."""
    if isinstance(raw, dict):
        try:
            return Edge(str(raw["op"]), int(raw["input"]), raw.get("activation"))
        except KeyError as exc:
            raise NasError(f"genotype {cell} edge {raw} lacks {exc}") from None
    if isinstance(raw, list | tuple) and len(raw) in (2, 3):
        return Edge(str(raw[0]), int(raw[1]), raw[2] if len(raw) == 3 else None)
    raise NasError(f"genotype {cell} edge {raw!r} is neither an object nor [op, input]")


def _darts(normal: Sequence[tuple[str, int]], reduce: Sequence[tuple[str, int]]) -> Genotype:
    return Genotype(
        normal=tuple(Edge(op, i) for op, i in normal),
        normal_concat=(2, 3, 4, 5),
        reduce=tuple(Edge(op, i) for op, i in reduce),
        reduce_concat=(2, 3, 4, 5),
    )


# The published cells, as in the DARTS and PC-DARTS papers' releases.
BUILTIN_GENOTYPES: dict[str, Genotype] = {
    "DARTS_V1": _darts(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    "DARTS_V2": _darts(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
    "PC_DARTS": _darts(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ),
}
BUILTIN_GENOTYPES["DARTS"] = BUILTIN_GENOTYPES["DARTS_V2"]


def load_genotype(name_or_path: str) -> Genotype:
    """A built-in genotype by name, or a JSON file (a bare genotype or any object with a "genotype" key)."""
    if name_or_path in BUILTIN_GENOTYPES:
        return BUILTIN_GENOTYPES[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise NasError(
            f"no genotype {name_or_path!r}: not a file and not one of {', '.join(sorted(BUILTIN_GENOTYPES))}"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NasError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "genotype" in data:
        data = data["genotype"]
    return Genotype.from_dict(data)
