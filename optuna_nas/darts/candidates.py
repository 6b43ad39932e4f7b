"""The candidates of a mixed edge: what competes under α, and what the edge computes.

The α row of an edge holds the plain operators, then one *family* slot for a space's grouped operators.
Non-factorised mode (A-DARTS's 40 super-operators) expands each parameterised operator, and a
parameterised family, once per activation. What an edge computes replaces the family slot by every grouped
operator, each remembering its α column and its choice in each group.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops import operation_spec
from .space import ActivationMode, SearchSpace


@dataclass(frozen=True)
class Candidate:
    """One competitor on an edge: an operator and which edge activation feeds it (None: the raw input).

    ``choices``: a grouped operator's choice index in each operator group (empty for a plain operator).
    ``family``: this is the α slot of the grouped family (``op`` is then the template), not an operator.
    """

    op: str
    activation_index: int | None
    choices: tuple[int, ...] = ()
    family: bool = False

    @property
    def is_none(self) -> bool:
        return self.op == "none"


def _slots(op: str, parameterized: bool, family: bool, space: SearchSpace, mode: ActivationMode) -> list[Candidate]:
    if not parameterized:
        return [Candidate(op, None, family=family)]
    if mode.expands_activations:
        return [Candidate(op, k, family=family) for k in range(len(space.activations))]
    return [Candidate(op, 0, family=family)]


def alpha_candidates(space: SearchSpace, mode: ActivationMode) -> list[Candidate]:
    """The α row of an edge: the plain operators, then the grouped family's slot (spaces with groups)."""
    out: list[Candidate] = []
    for op in space.operators:
        out.extend(_slots(op, operation_spec(op).parameterized, False, space, mode))
    if space.operator_groups:
        out.extend(_slots(space.operator_template or "", space.grouped_parameterized, True, space, mode))
    return out


def edge_candidates(space: SearchSpace, mode: ActivationMode) -> tuple[list[Candidate], list[int]]:
    """What an edge computes: each α slot's operator, a family slot replaced by every grouped operator; and
    the α column of each. Without groups this is :func:`alpha_candidates` and 0, 1, 2, ..."""
    out: list[Candidate] = []
    slots: list[int] = []
    grouped = space.grouped_operator_choices()
    for slot, cand in enumerate(alpha_candidates(space, mode)):
        members = [Candidate(op, cand.activation_index, idx) for op, idx in grouped] if cand.family else [cand]
        out.extend(members)
        slots.extend([slot] * len(members))
    return out, slots


def candidate_names(space: SearchSpace, mode: ActivationMode) -> list[str]:
    """The α row's names: ``op@activation`` for the expanded candidates of non-factorised mode."""
    acts = space.activations
    return [f"{c.op}@{acts[c.activation_index]}" if mode.expands_activations and c.activation_index is not None
            else c.op for c in alpha_candidates(space, mode)]
