"""Growth (RandGrow Section 2, "Incremental Model Change"): one step of random increments, and the child.

A growth step draws increments uniformly: their targets, their inputs and each input's operator. The
draws consume a ``numpy`` ``RandomState`` in a fixed order, so a seeded sampler replays the same children.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import NasError
from .architecture import (
    CELL_KINDS,
    INCREMENT_OPERATIONS,
    MAX_CELLS_BACK,
    AnyIncrement,
    Architecture,
    CellIncrement,
    Increment,
    IncrementInput,
    SearchMode,
)

NUM_INPUTS = 3  # x_in1 (the previous layer / the cell's input) and two drawn inputs


def random_operation(rng: np.random.RandomState, operations: Sequence[str] = INCREMENT_OPERATIONS) -> str:
    """One operator drawn uniformly from ``operations`` (one ``randint`` draw, as before it was configurable)."""
    return operations[rng.randint(len(operations))]


def sample_increments(
    architecture: Architecture,
    mode: SearchMode,
    rng: np.random.RandomState,
    operations: Sequence[str] = INCREMENT_OPERATIONS,
) -> list[AnyIncrement]:
    """One growth step's random increments (paper Section 2, "Incremental Model Change").

    ``"macro"``: ``3N + 2`` increments (20 for N=6), each on a uniformly drawn initial cell; ``x_in1`` is the
    target's previous layer, ``x_in2`` and ``x_in3`` are drawn with replacement from all earlier layers.
    ``"cell"``: one increment per cell type, so both modes change the network by the same number of
    increments per step; ``x_in1`` is the cell's input, the others 1 or 2 cells back.
    Each input's operator is drawn uniformly from ``operations`` (default: the paper's five).
    """
    if not operations:
        raise NasError("the increment operation set is empty")
    skeleton = architecture.skeleton
    if mode == "macro":
        increments: list[AnyIncrement] = []
        for _ in range(skeleton.num_cells):
            target = int(rng.randint(1, skeleton.num_layers))
            sources = [target - 1] + [int(rng.randint(0, target)) for _ in range(NUM_INPUTS - 1)]
            inputs = tuple(IncrementInput(s, random_operation(rng, operations)) for s in sources)
            increments.append(Increment(target, inputs))
        return increments
    if mode == "cell":
        return [
            CellIncrement(
                cell_type,
                tuple(
                    IncrementInput(s, random_operation(rng, operations))
                    for s in [1] + [int(rng.randint(1, MAX_CELLS_BACK + 1)) for _ in range(NUM_INPUTS - 1)]
                ),
            )
            for cell_type in CELL_KINDS
        ]
    raise NasError(f'unknown RandGrow search mode {mode!r}; known: "macro", "cell"')


def grow(architecture: Architecture, increments: Iterable[AnyIncrement]) -> Architecture:
    """The child: the parent's skeleton and increments followed by ``increments`` (validated)."""
    return Architecture(architecture.skeleton, architecture.increments + tuple(increments))
