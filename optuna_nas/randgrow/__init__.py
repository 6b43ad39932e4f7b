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
    check_operations,
    grow,
    initial_architecture,
    random_operation,
    sample_increments,
)
from .hull import choose_parent, lower_hull, parent_probabilities
from .network import RandGrowNetwork, inherit_weights
from .sampler import Proposal, RandGrowSampler, get_proposal
from .space import RandGrowSpace, load_randgrow_space

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
    "RandGrowSpace",
    "Skeleton",
    "check_operations",
    "choose_parent",
    "count_parameters",
    "get_proposal",
    "grow",
    "inherit_weights",
    "initial_architecture",
    "load_randgrow_space",
    "lower_hull",
    "parent_probabilities",
    "random_operation",
    "sample_increments",
]
