"""Activation modes of a DARTS-family search (the rows of A-DARTS's Table 2).

- ``fixed:<name>``: one activation everywhere (DARTS is ``fixed:relu``);
- ``factorized``: per edge a β vector over the activation group, mixed by softmax (Eq. 1-2);
- ``non_factorized``: every parameterised operator × every activation is its own super-operator,
  all competing under one α per edge (4 × 9 + 4 = 40 candidates in the paper's space);
- ``config_a``: β frozen one-hot to the per-edge activations of a given genotype; α and ω searched.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NasError
from ..ops import check_activation

KINDS = ("fixed", "factorized", "non_factorized", "config_a")


@dataclass(frozen=True)
class ActivationMode:
    kind: str
    fixed: str | None = None

    @classmethod
    def parse(cls, text: str) -> ActivationMode:
        kind, _, arg = text.strip().partition(":")
        kind = kind.replace("-", "_")
        if kind == "fixed":
            if not arg:
                raise NasError("activation mode 'fixed' needs an activation, e.g. fixed:relu")
            return cls("fixed", check_activation(arg))
        if kind in KINDS and not arg:
            return cls(kind)
        raise NasError(
            f"unknown activation mode {text!r}; use fixed:<activation>, factorized, non_factorized or config_a"
        )

    def __str__(self) -> str:
        return f"fixed:{self.fixed}" if self.kind == "fixed" else self.kind

    @property
    def searches_beta(self) -> bool:
        return self.kind == "factorized"
