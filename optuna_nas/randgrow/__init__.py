"""RandGrow (Hu et al., 2019): grow cost-efficient networks by random increments from hull parents.

``architecture`` (the JSON data model), ``growth`` (one step of random increments), ``hull`` (the parent
choice), ``sampler`` (both as a multi-objective Optuna sampler), ``network`` (the module of an
architecture), ``objective`` (one growth trial), ``space`` (space files), ``runner`` (a whole search with
many workers), ``draw`` (a picture of a grown network).
"""

from .architecture import (
    CELL_KINDS,
    INCREMENT_OPERATIONS,
    Architecture,
    CellIncrement,
    Increment,
    IncrementInput,
    Layer,
    Skeleton,
    check_operations,
    initial_architecture,
)
from .growth import grow, random_operation, sample_increments
from .hull import choose_parent, lower_hull, parent_probabilities
from .network import RandGrowNetwork, inherit_weights
from .sampler import Proposal, RandGrowSampler, get_proposal
from .space import RandGrowSpace, load_randgrow_space

__all__ = [
    "CELL_KINDS",
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
