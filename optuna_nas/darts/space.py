"""A DARTS-family search space (which operators and activations a cell may use) and its activation mode.

**Activation modes** (the rows of A-DARTS's Table 2), parsed once from text into :class:`ActivationMode`:

- ``fixed:<name>``: one activation everywhere (DARTS is ``fixed:relu``);
- ``factorized``: per edge a β vector over the activation group, mixed by softmax (Eq. 1-2);
- ``non_factorized``: every parameterised operator × every activation is its own super-operator,
  all competing under one α per edge (4 × 9 + 4 = 40 candidates in the paper's space);
- ``config_a``: β frozen one-hot to the per-edge activations of a given genotype; α and ω searched.

**Space files** name the operator group and the activation group (any registered names, any subset), the
default activation mode and the cell shape. A space's size is computed from that definition, not quoted::

    name: a_darts
    operators: [none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, ...]
    activations: [relu, relu6, leaky_relu, prelu, rrelu, elu, celu, selu, swish]
    activation_mode: factorized
    cell: {steps: 4, inputs_per_node: 2}

A space grows by *operator groups* (the factorisation of A-DARTS applied to the operators themselves,
the paper's future work): every combination of one choice per group, put into ``operator_template``, is
one operator, searched with one logit vector per group instead of one α per combination::

    operators: [none, max_pool_3x3, avg_pool_3x3, skip_connect]   # plain operators
    operator_groups:                                               # ordered: the first varies slowest
      conv: [sep_conv, dil_conv, conv]
      kernel: [3x3, 5x5, 7x7]
    operator_template: "{conv}_{kernel}"                          # sep_conv_3x3, sep_conv_5x5, ...
    partial_channels: 4                                            # optional: the PC-DARTS K searched with

Choices made here (the paper does not define operator groups):

- the grouped operators form one *family*: all parameterised (convolutions) or all non-parameterised,
  never mixed, so the family takes the edge activation as a whole, like one of A-DARTS's operators;
- a grouped operator may not also be a plain operator, and every group must appear in the template
  (otherwise two combinations would make the same name);
- without ``operators`` the plain operators are DARTS's eight, with or without groups.

Shipped spaces (``darts``, ``a_darts``, ``pc_darts``, ``a_darts_groups``) are package data, found by name.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import NasError
from ..ops import DARTS_OPERATORS, PAPER_ACTIVATIONS, check_activation, operation_spec
from ..resources import read_yaml


class ModeKind(str, Enum):
    """How a search treats the activation group; the value is the word used in files and on the CLI."""

    FIXED = "fixed"
    FACTORIZED = "factorized"
    NON_FACTORIZED = "non_factorized"
    CONFIG_A = "config_a"


@dataclass(frozen=True)
class ActivationMode:
    """A parsed activation mode; ``str()`` gives back the text it was parsed from (``fixed:selu``)."""

    kind: ModeKind
    fixed: str | None = None  # the activation of a fixed mode

    @classmethod
    def parse(cls, text: str | ActivationMode) -> ActivationMode:
        if isinstance(text, ActivationMode):
            return text
        word, _, arg = str(text).strip().partition(":")
        word = word.replace("-", "_")
        if word == ModeKind.FIXED.value:
            if not arg:
                raise NasError("activation mode 'fixed' needs an activation, e.g. fixed:relu")
            return cls(ModeKind.FIXED, check_activation(arg))
        if word in {k.value for k in ModeKind} and not arg:
            return cls(ModeKind(word))
        raise NasError(
            f"unknown activation mode {text!r}; use fixed:<activation>, factorized, non_factorized or config_a"
        )

    def __str__(self) -> str:
        return f"fixed:{self.fixed}" if self.kind is ModeKind.FIXED else self.kind.value

    @property
    def searches_beta(self) -> bool:
        """β is learned: one mixture of the activation group per edge."""
        return self.kind is ModeKind.FACTORIZED

    @property
    def expands_activations(self) -> bool:
        """Every parameterised operator competes once per activation under one α (non-factorised)."""
        return self.kind is ModeKind.NON_FACTORIZED

    @property
    def freezes_activations(self) -> bool:
        """β is frozen to a genotype's per-edge activations (Config-A)."""
        return self.kind is ModeKind.CONFIG_A

    @property
    def uses_activation_group(self) -> bool:
        """The edge computes the whole activation group (factorised or non-factorised)."""
        return self.searches_beta or self.expands_activations


RELU = ActivationMode(ModeKind.FIXED, "relu")
_KEYS = {"name", "description", "operators", "operator_groups", "operator_template", "activations",
         "activation_mode", "partial_channels", "cell"}
_CELL_KEYS = {"steps", "inputs_per_node"}
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a group's logits are the attribute group_logits_<cell>_<name>

OperatorGroups = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    operators: tuple[str, ...] = DARTS_OPERATORS
    activations: tuple[str, ...] = ("relu",)
    activation_mode: ActivationMode = RELU  # text is parsed on construction
    steps: int = 4
    inputs_per_node: int = 2
    # ordered (group name, choices) pairs; a mapping is accepted and stored as such pairs
    operator_groups: OperatorGroups = ()
    operator_template: str | None = None
    partial_channels: int = 1  # the PC-DARTS K this space is searched with unless a run says otherwise

    def __post_init__(self) -> None:
        object.__setattr__(self, "activation_mode", ActivationMode.parse(self.activation_mode))
        if isinstance(self.operator_groups, Mapping):
            groups = self.operator_groups.items()
            object.__setattr__(self, "operator_groups", tuple((str(g), tuple(c)) for g, c in groups))
        for op in self.operators:
            operation_spec(op)
        for act in self.activations:
            check_activation(act)
        self._check_groups()
        if not any(op != "none" for op in self.all_operators):
            raise NasError(f"search space {self.name!r} has no operator other than 'none'")
        if not self.activations:
            raise NasError(f"search space {self.name!r} lists no activation")
        if self.steps < 1:
            raise NasError(f"search space {self.name!r}: cell steps must be >= 1, got {self.steps}")
        if not 1 <= self.inputs_per_node <= 2:
            raise NasError(f"search space {self.name!r}: inputs_per_node must be 1 or 2")
        if isinstance(self.partial_channels, bool) or not isinstance(self.partial_channels, int) \
                or self.partial_channels < 1:
            raise NasError(f"search space {self.name!r}: 'partial_channels' must be an integer >= 1, "
                           f"got {self.partial_channels!r}")

    def _check_groups(self) -> None:
        where = f"search space {self.name!r}"
        template, groups = self.operator_template, self.operator_groups
        if template is None:
            if groups:
                raise NasError(f"{where}: 'operator_groups' needs an 'operator_template' (e.g. "
                               f"{'_'.join('{' + g + '}' for g, _ in groups)!r}) to name the grouped operators")
            return
        if not groups:
            raise NasError(f"{where}: 'operator_template' {template!r} needs 'operator_groups' to fill it")
        if len({g for g, _ in groups}) != len(groups):
            raise NasError(f"{where}: 'operator_groups' names a group twice: {[g for g, _ in groups]}")
        for group, choices in groups:
            if not _GROUP_NAME.fullmatch(group):
                raise NasError(f"{where}: 'operator_groups' name {group!r} must be a letter or '_', then letters, "
                               "digits or '_'")
            if not choices:
                raise NasError(f"{where}: 'operator_groups' group {group!r} is empty")
            if len(set(choices)) != len(choices):
                raise NasError(f"{where}: 'operator_groups' group {group!r} repeats a choice: {list(choices)}")
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise NasError(f"{where}: 'operator_template' {template!r} is not a format string ({exc})") from None
        names = [g for g, _ in groups]
        for field, spec, conv in fields:
            if field not in names:
                raise NasError(f"{where}: 'operator_template' {template!r} names group {field!r}, which "
                               f"'operator_groups' does not define (groups: {', '.join(names)})")
            if spec or conv:
                raise NasError(f"{where}: 'operator_template' {template!r}: write plain {{{field}}} fields, "
                               "without a conversion or format spec")
        unused = [g for g in names if g not in {f for f, _, _ in fields}]
        if unused:
            raise NasError(f"{where}: 'operator_template' {template!r} does not use group(s) {', '.join(unused)}, "
                           "so their choices would make the same operator twice")
        kinds: set[bool] = set()
        for op in self.grouped_operators:
            try:
                kinds.add(operation_spec(op).parameterized)
            except NasError as exc:
                raise NasError(f"{where}: 'operator_template' makes {exc}") from None
            if op == "none" or op in self.operators:
                raise NasError(f"{where}: 'operator_template' makes {op!r}, which "
                               f"{'is never grouped' if op == 'none' else 'is also in operators'}; "
                               "list each operator once")
        if len(kinds) > 1:
            raise NasError(f"{where}: 'operator_template' makes parameterised and non-parameterised operators; "
                           "a group family must be all convolutions or all without parameters")

    # ---- operators
    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """The operator groups as an ordered mapping (empty without groups)."""
        return dict(self.operator_groups)

    def grouped_operator_choices(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every grouped operator with its choice index in each group, the first group varying slowest."""
        if self.operator_template is None:
            return []
        out = []
        for idx in itertools.product(*(range(len(c)) for _, c in self.operator_groups)):
            values = {g: choices[i] for (g, choices), i in zip(self.operator_groups, idx, strict=True)}
            out.append((self.operator_template.format(**values), tuple(idx)))
        return out

    @property
    def grouped_operators(self) -> tuple[str, ...]:
        return tuple(op for op, _ in self.grouped_operator_choices())

    @property
    def all_operators(self) -> tuple[str, ...]:
        """Every operator an edge may take: the plain ones, then the grouped ones."""
        return self.operators + self.grouped_operators

    @property
    def grouped_parameterized(self) -> bool:
        """Whether the grouped family takes the edge activation (False also without groups)."""
        ops = self.grouped_operators
        return bool(ops) and operation_spec(ops[0]).parameterized

    @property
    def parameterized_operators(self) -> tuple[str, ...]:
        return tuple(op for op in self.all_operators if operation_spec(op).parameterized)

    # ---- size
    def choices_per_edge(self) -> int:
        """Distinct (operator, activation) choices of a kept edge: 'none' is never kept. A grouped operator
        counts like a plain one."""
        return sum(
            len(self.activations) if operation_spec(op).parameterized else 1
            for op in self.all_operators
            if op != "none"
        )

    def architecture_parameters_per_edge(self, factorized: bool = True,
                                         activation_mode: ActivationMode | str | None = None) -> int:
        """Architecture parameters of one edge, in ``activation_mode`` (default: the space's own).

        ``factorized=True``: what the super-network learns: α over the plain operators plus one slot for the
        grouped family, one logit per choice of each group (Σ|g|), and β over the activations in
        ``factorized`` mode. ``factorized=False``: the flat count, one α per (operator, activation)
        combination, as non-factorised search would need (Π|g| grouped operators, each times the activations
        where parameterised). PC-DARTS's edge-normalisation γ (one per edge, set by the run) is not counted.
        """
        mode = ActivationMode.parse(activation_mode or self.activation_mode)
        n_act = len(self.activations) if mode.uses_activation_group else 1
        if not factorized:
            return sum(n_act if operation_spec(op).parameterized else 1 for op in self.all_operators)
        per_act = n_act if mode.expands_activations else 1  # non-factorised: one α per activation
        alpha = sum(per_act if operation_spec(op).parameterized else 1 for op in self.operators)
        if self.operator_groups:
            alpha += per_act if self.grouped_parameterized else 1
        beta = len(self.activations) if mode.searches_beta else 0
        return alpha + beta + sum(len(c) for _, c in self.operator_groups)

    def cell_count(self) -> int:
        """Cells of one type: each node keeps ``inputs_per_node`` distinct inputs, each with one choice."""
        k = self.inputs_per_node
        return math.prod(math.comb(2 + i, k) * self.choices_per_edge() ** k for i in range(self.steps))

    def architecture_count(self) -> int:
        """Architectures of the space: a normal cell and a reduction cell chosen independently."""
        return self.cell_count() ** 2


def _is_darts_space(name: str) -> bool:
    return not name.startswith("randgrow")


def load_search_space(path_or_name: str | Path) -> SearchSpace:
    """Read a space from a YAML file, or a shipped one by name (``darts``, ``a_darts``, ``pc_darts``,
    ``a_darts_groups``)."""
    document = read_yaml("spaces", path_or_name, "search space", keep=_is_darts_space)
    return space_from_dict(document.data, document.source, document.stem)


def space_from_dict(data: Any, source: str, default_name: str = "space") -> SearchSpace:
    if not isinstance(data, dict):
        raise NasError(f"{source}: a search space must be a mapping")
    unknown = set(data) - _KEYS
    if unknown:
        raise NasError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    cell = data.get("cell") or {}
    if not isinstance(cell, dict) or set(cell) - _CELL_KEYS:
        raise NasError(f"{source}: 'cell' takes only {', '.join(sorted(_CELL_KEYS))}")
    for key in ("operators", "activations"):
        if key in data and not _names(data[key]):
            raise NasError(f"{source}: '{key}' must be a list of names")
    groups = data.get("operator_groups")
    if "operator_groups" in data:
        if not isinstance(groups, dict) or not groups:
            raise NasError(f"{source}: 'operator_groups' must be a mapping of group name to a list of choices")
        for group, choices in groups.items():
            if not isinstance(group, str) or not _names(choices):
                raise NasError(f"{source}: 'operator_groups' group {group!r} must be a list of string choices, "
                               f"got {choices!r}")
    template = data.get("operator_template")
    if "operator_template" in data and not isinstance(template, str):
        raise NasError(f"{source}: 'operator_template' must be a string such as \"{{conv}}_{{kernel}}\"")
    try:
        return SearchSpace(
            name=str(data.get("name", default_name)),
            operators=tuple(data.get("operators", DARTS_OPERATORS)),
            activations=tuple(data.get("activations", ("relu",))),
            activation_mode=ActivationMode.parse(str(data.get("activation_mode", "fixed:relu"))),
            steps=_int(cell.get("steps", 4), "cell.steps", source),
            inputs_per_node=_int(cell.get("inputs_per_node", 2), "cell.inputs_per_node", source),
            operator_groups=tuple((g, tuple(c)) for g, c in (groups or {}).items()),
            operator_template=template,
            partial_channels=_int(data.get("partial_channels", 1), "partial_channels", source),
        )
    except NasError as exc:
        raise NasError(f"{source}: {exc}") from None


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NasError(f"{source}: '{key}' must be an integer, got {value!r}")
    return value


DARTS_SPACE = SearchSpace(name="darts")
A_DARTS_SPACE = SearchSpace(name="a_darts", activations=PAPER_ACTIVATIONS, activation_mode="factorized")
