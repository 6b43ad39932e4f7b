"""Tiny super-networks shared by the DARTS tests."""

from __future__ import annotations

import torch

from optuna_nas.darts.space import A_DARTS_SPACE, ActivationMode
from optuna_nas.darts.supernet import SearchNetwork, SuperNetConfig


def tiny_config(mode: str = "factorized", k: int = 1, **kw: object) -> SuperNetConfig:
    return SuperNetConfig(A_DARTS_SPACE, ActivationMode.parse(mode), channels=kw.pop("channels", 4),  # type: ignore[arg-type]
                          layers=kw.pop("layers", 3), num_classes=4, in_channels=3, partial_channels=k, **kw)  # type: ignore[arg-type]


def tiny_network(mode: str = "factorized", k: int = 1, **kw: object) -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(tiny_config(mode, k, **kw))
