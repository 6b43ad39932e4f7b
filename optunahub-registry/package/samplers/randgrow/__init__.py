"""RandGrow (Hu et al., "Macro Neural Architecture Search Revisited") as an OptunaHub sampler.

The sampler, the architecture it proposes, the network that architecture describes and the weight
inheritance from a parent live in the ``optuna-nas`` package (``requirements.txt``); this package exposes
them under OptunaHub's name, ``samplers/randgrow``.
"""

from optuna_nas.randgrow.architecture import Architecture, initial_architecture
from optuna_nas.randgrow.network import RandGrowNetwork, inherit_weights
from optuna_nas.randgrow.sampler import Proposal, RandGrowSampler, get_proposal

__all__ = [
    "Architecture",
    "Proposal",
    "RandGrowNetwork",
    "RandGrowSampler",
    "get_proposal",
    "inherit_weights",
    "initial_architecture",
]
