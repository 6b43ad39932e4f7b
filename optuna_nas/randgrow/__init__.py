"""RandGrow (Hu et al., 2019): grow cost-efficient networks by random increments from hull parents."""

from ..genotypes import count_parameters
from .architecture import (
    CELL_TYPES,
    INCREMENT_OPERATIONS,
    Architecture,
    CellIncrement,
    Increment,
    IncrementInput,
    Layer,
    Skeleton,
    grow,
    initial_architecture,
    sample_increments,
)
from .hull import choose_parent, lower_hull, parent_probabilities
from .network import RandGrowNetwork, inherit_weights
from .sampler import Proposal, RandGrowSampler, get_proposal

__all__ = [
    "CELL_TYPES",
    "INCREMENT_OPERATIONS",
    "Architecture",
    "CellIncrement",
    "Increment",
    "IncrementInput",
    "Layer",
    "Proposal",
    "RandGrowNetwork",
    "RandGrowSampler",
    "Skeleton",
    "choose_parent",
    "count_parameters",
    "get_proposal",
    "grow",
    "inherit_weights",
    "initial_architecture",
    "lower_hull",
    "parent_probabilities",
    "sample_increments",
]
