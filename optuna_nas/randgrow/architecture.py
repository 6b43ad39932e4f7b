"""A RandGrow architecture: a fixed residual skeleton plus an ordered list of random increments.

The description is plain, frozen data, so that it can be stored with an Optuna trial, compared, and
rebuilt into exactly the same module (:class:`~optuna_nas.randgrow.network.RandGrowNetwork`) anywhere.

Skeleton (the paper's "Initial Network", after Zoph et al., 2018): a stem (3x3 conv to ``F`` channels and
BatchNorm), then 3 blocks of ``N`` normal cells with a reduction cell between blocks, ``3N + 2`` cells in
all. Channels double and the resolution halves at each reduction cell. A normal cell is the residual unit
``x + h(x)`` with ``h = sep_conv_3x3`` (ReLU first, as the registry's ``build_operation`` adds it).

Reduction-cell residual (the paper is silent): ``x`` is first mapped to ``2C`` channels by a 1x1
ReLU-conv-BN (the cell-input preprocessing of NASNet / DARTS), then ``h`` is the stride-2
``sep_conv_3x3`` and the shortcut is the registry's stride-2 ``skip_connect`` (a FactorizedReduce).
So both branches are the search space's own operators, as in a DARTS reduction cell.

Layers are the stem output (layer 0) and the cell outputs (layer ``i`` is the output of cell ``i - 1``).
Each has a resolution *level* (number of reductions before it) and a channel count.

An increment (paper Fig. 1) adds ``x_c = BN(conv1x1(concat(op_k(x_in_k))))`` to a target layer
``x_out``. In **macro** search it is :class:`Increment`: an absolute target layer and absolute input
layers. In **cell** search it is :class:`CellIncrement`: a cell type and inputs given as "cells back"
(1 = the cell's own input, i.e. the previous cell's output; 2 = the output of the cell before that). A
cell increment is stored once, as sampled, and *replicated* into every cell of its type by
:meth:`Architecture.expand`; that expansion is derived, never stored, so the JSON stays small and the
cell structure is explicit. Since the initial cell has one layer (its output), "nodes within the same
cell or the outputs of the previous two cells" reduces to cells back 1 or 2; for the first cell,
cells back 2 falls on the stem (DARTS also feeds the stem to the first cell twice).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import NasError
from ..ops import operation_names, operation_spec

FORMAT = "optuna_nas.randgrow"
VERSION = 1
INCREMENT_OPERATIONS = ("sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect")
"""The paper's five input operators of an increment (the default operation set; ``skip_connect`` is the
registry's identity, the paper's "identity"). A search may use any other set of buildable operators."""
# The kinds of cell a cell-search increment is replicated into (the layer kinds of a grown network, not a
# DARTS genotype's "normal" / "reduce" cells).
CELL_KINDS = ("normal", "reduction")
MAX_CELLS_BACK = 2

SearchMode = Literal["macro", "cell"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def increment_operators() -> tuple[str, ...]:
    """The registered operators an increment input may use, the paper's five first: all but ``none``."""
    others = (name for name in operation_names() if name not in INCREMENT_OPERATIONS and name != "none")
    return INCREMENT_OPERATIONS + tuple(others)


def _resolvable(op: Any) -> bool:
    """Whether the registry builds ``op``, including names it registers on demand (``sep_conv_7x7``)."""
    if not isinstance(op, str):
        return False
    with contextlib.suppress(NasError):
        return operation_spec(op) is not None
    return False


def check_operation(op: Any) -> str:
    """``op`` if the network can build it as an increment input, else a :class:`NasError`.

    The network builds inputs with the registry's ``build_operation``, so any operator the registry resolves
    is accepted (user-registered ones too), except ``none``: an input that is always zero adds nothing.
    """
    if op == "none":
        raise NasError("'none' (the zero operator) cannot be an increment input: it would always add zeros")
    if _resolvable(op):
        return op
    known = ", ".join(increment_operators())
    raise NasError(f"unknown increment operator {op!r}; known: {known} (and any other operator of optuna_nas.ops)")


def check_operations(operations: Iterable[str]) -> tuple[str, ...]:
    """A non-empty operation set with no repeats (order matters: seeded draws index into it)."""
    if isinstance(operations, str):
        raise NasError(f"operations must be a list of operator names, got the string {operations!r}")
    ops = tuple(check_operation(op) for op in operations)
    if not ops:
        raise NasError("the increment operation set is empty")
    repeated = sorted({op for op in ops if ops.count(op) > 1})
    if repeated:
        raise NasError(f"operation(s) listed twice: {', '.join(repeated)}")
    return ops


@dataclass(frozen=True)
class Layer:
    """One layer of the initial network: the stem or a cell output."""

    index: int
    kind: str  # "stem", "normal" or "reduction"
    level: int  # reductions before this layer: resolution is input size / 2**level
    channels: int


@dataclass(frozen=True)
class Skeleton:
    """The initial network: ``3 * cells_per_block + 2`` residual cells of ``channels`` initial channels."""

    cells_per_block: int = 6
    channels: int = 32
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("cells_per_block", "channels", "in_channels", "num_classes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise NasError(f"skeleton {name} must be a positive integer, got {value!r}")
        if self.channels % 2:  # a stride-2 skip_connect (FactorizedReduce) splits channels in two halves
            raise NasError(f"skeleton channels must be even, got {self.channels}")

    @property
    def num_cells(self) -> int:
        return 3 * self.cells_per_block + 2

    @property
    def num_layers(self) -> int:
        """The stem plus every cell."""
        return self.num_cells + 1

    def layer(self, index: int) -> Layer:
        if not 0 <= index < self.num_layers:
            raise NasError(f"layer {index} is out of range 0..{self.num_layers - 1}")
        if index == 0:
            return Layer(0, "stem", 0, self.channels)
        cell, n = index - 1, self.cells_per_block
        level = int(cell >= n) + int(cell >= 2 * n + 1)
        kind = "reduction" if cell in (n, 2 * n + 1) else "normal"
        return Layer(index, kind, level, self.channels << level)

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self.layer(i) for i in range(self.num_layers))

    def cell_layers(self, cell_type: str) -> tuple[int, ...]:
        """Indices of the layers output by cells of ``cell_type``, in network order."""
        return tuple(i for i in range(1, self.num_layers) if self.layer(i).kind == cell_type)

    def to_dict(self) -> dict[str, int]:
        return {
            "cells_per_block": self.cells_per_block,
            "channels": self.channels,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
        }


@dataclass(frozen=True)
class IncrementInput:
    """One input of an increment: a source (absolute layer, or cells back in cell search) and its op."""

    source: int
    op: str

    def __post_init__(self) -> None:
        if not _is_int(self.source):
            raise NasError(f"input source must be an integer, got {self.source!r}")
        check_operation(self.op)


@dataclass(frozen=True)
class Increment:
    """A macro-search increment: added to layer ``target``; ``inputs[k].source`` are absolute layers."""

    target: int
    inputs: tuple[IncrementInput, ...]

    mode: ClassVar[str] = "macro"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "target": self.target, "inputs": [[i.source, i.op] for i in self.inputs]}


@dataclass(frozen=True)
class CellIncrement:
    """A cell-search increment, replicated into every ``cell_type`` cell; sources are cells back (1, 2)."""

    cell_type: str
    inputs: tuple[IncrementInput, ...]

    mode: ClassVar[str] = "cell"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "cell_type": self.cell_type,
            "inputs": [[i.source, i.op] for i in self.inputs],
        }


AnyIncrement = Increment | CellIncrement


def _check_increment(skeleton: Skeleton, increment: AnyIncrement) -> None:
    if not increment.inputs:
        raise NasError("an increment needs at least one input")
    if isinstance(increment, Increment):
        last = skeleton.num_cells
        if not _is_int(increment.target) or not 1 <= increment.target <= last:
            raise NasError(
                f"target layer {increment.target!r} is out of range 1..{last} (layer 0 is the stem)"
            )
        for item in increment.inputs:
            if not 0 <= item.source < increment.target:
                raise NasError(
                    f"input layer {item.source} is not earlier than target layer {increment.target}"
                    f" (inputs must be in 0..{increment.target - 1})"
                )
    elif isinstance(increment, CellIncrement):
        if increment.cell_type not in CELL_KINDS:
            raise NasError(f"unknown cell type {increment.cell_type!r}; known: {', '.join(CELL_KINDS)}")
        for item in increment.inputs:
            if not 1 <= item.source <= MAX_CELLS_BACK:
                raise NasError(f"cell input {item.source} is not 1 or 2 cells back")
    else:
        raise NasError(f"not an increment: {increment!r}")


def _increment_from_dict(data: Any) -> AnyIncrement:
    if not isinstance(data, Mapping):
        raise NasError(f"expected an object, got {data!r}")
    raw_inputs = data.get("inputs")
    if not isinstance(raw_inputs, list) or not all(isinstance(i, list) and len(i) == 2 for i in raw_inputs):
        raise NasError('"inputs" must be a list of [source, op] pairs')
    inputs = tuple(IncrementInput(source, op) for source, op in raw_inputs)
    mode = data.get("mode")
    if mode == "macro":
        if "target" not in data:
            raise NasError('a macro increment needs a "target" layer')
        return Increment(data["target"], inputs)
    if mode == "cell":
        return CellIncrement(data.get("cell_type"), inputs)
    raise NasError(f'unknown increment mode {mode!r}; known: "macro", "cell"')


@dataclass(frozen=True)
class Architecture:
    """An initial skeleton grown by ``increments`` (in growth order: a child extends its parent's tuple)."""

    skeleton: Skeleton
    increments: tuple[AnyIncrement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "increments", tuple(self.increments))
        for k, increment in enumerate(self.increments):
            try:
                _check_increment(self.skeleton, increment)
            except NasError as error:
                raise NasError(f"increment {k}: {error}") from None

    def expand(self, increment: AnyIncrement) -> tuple[Increment, ...]:
        """The absolute increments one stored increment stands for (one per cell for a cell increment)."""
        if isinstance(increment, Increment):
            return (increment,)
        return tuple(
            Increment(layer, tuple(IncrementInput(max(layer - i.source, 0), i.op) for i in increment.inputs))
            for layer in self.skeleton.cell_layers(increment.cell_type)
        )

    def expanded(self) -> tuple[tuple[Increment, ...], ...]:
        """:meth:`expand` of every stored increment, in order."""
        return tuple(self.expand(increment) for increment in self.increments)

    def summary(self) -> str:
        """One readable line: mode, skeleton, increments and their operators (``architecture_summary``)."""
        modes = "+".join(sorted({increment.mode for increment in self.increments})) or "initial"
        counts: dict[str, int] = {}
        for increment in self.increments:
            for item in increment.inputs:
                counts[item.op] = counts.get(item.op, 0) + 1
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        expanded = sum(len(group) for group in self.expanded())
        return (f"{modes}: N={self.skeleton.cells_per_block}, F={self.skeleton.channels}, "
                f"{len(self.increments)} increments ({expanded} in the network)" + (f": {ops} inputs" if ops else ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "skeleton": self.skeleton.to_dict(),
            "increments": [increment.to_dict() for increment in self.increments],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        if not isinstance(data, Mapping):
            raise NasError(f"a RandGrow architecture must be a JSON object, got {type(data).__name__}")
        if data.get("format", FORMAT) != FORMAT:
            raise NasError(f"not a RandGrow architecture: format {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("version") != VERSION:
            raise NasError(
                f"unsupported RandGrow architecture version {data.get('version')!r} (expected {VERSION})"
            )
        skeleton = data.get("skeleton")
        if not isinstance(skeleton, Mapping):
            raise NasError('a RandGrow architecture needs a "skeleton" object')
        fields = set(Skeleton().to_dict())
        if set(skeleton) != fields:
            expected, got = ", ".join(sorted(fields)), ", ".join(sorted(map(str, skeleton)))
            raise NasError(f"skeleton fields must be exactly {expected}; got {got}")
        raw_increments = data.get("increments", [])
        if not isinstance(raw_increments, list):
            raise NasError('"increments" must be a list')
        increments = []
        for k, raw in enumerate(raw_increments):
            try:
                increments.append(_increment_from_dict(raw))
            except NasError as error:
                raise NasError(f"increment {k}: {error}") from None
        return cls(Skeleton(**skeleton), tuple(increments))

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise NasError(f"invalid RandGrow architecture JSON: {error}") from None
        return cls.from_dict(data)


def initial_architecture(
    cells_per_block: int = 6, channels: int = 32, in_channels: int = 3, num_classes: int = 10
) -> Architecture:
    """The paper's initial network (N=6, F=32 for CIFAR-10) with no increments."""
    return Architecture(Skeleton(cells_per_block, channels, in_channels, num_classes))
