"""The original DARTS / PC-DARTS code, loaded from a folder a user passes, for side-by-side timing and fidelity tests.

The original files (``operations``, ``genotypes``, ``model_search``, ``architect``, ``model``, ``utils``) import one
another by flat names, so a DARTS folder and a PC-DARTS folder would collide in ``sys.modules``.
:func:`load_reference` imports one folder's modules with that folder first on ``sys.path``, then takes their flat
names out of ``sys.modules`` again and restores whatever held those names before: the returned modules keep
working (each holds its own references to its siblings), and another folder can be loaded next in the same
process. No bytecode is written into the folder. Nothing from the original code is part of this project.

:func:`detect_kind` tells the two apart without importing anything (so without torch): PC-DARTS's
``model_search`` defines the partial-channel ``channel_shuffle``; DARTS's does not.

What is built, as the original training scripts do (those scripts are not in the folder; their settings are
restated here):

* :class:`OriginalSearch`: the search ``Network(C, num_classes, layers, criterion)`` and one first-order search
  iteration: the architecture step on a validation batch through ``Architect.step(..., unrolled=False)`` (Adam,
  betas (0.5, 0.999), weight decay 1e-3, lr 3e-4 for DARTS and 6e-4 for PC-DARTS), then the weight step
  (zero_grad, forward, cross-entropy, backward, gradient norm clipped to 5, SGD with momentum 0.9, weight decay
  3e-4, lr 0.025 for DARTS and 0.1 for PC-DARTS);
* :class:`OriginalRetrain`: ``NetworkCIFAR`` with the folder's ``DARTS_V2`` genotype, ``drop_path_prob`` set as
  an attribute of the model, and one forward+backward of cross-entropy plus 0.4 times the auxiliary head's.

The original code knows only the default (NCHW) memory layout, so inputs should be contiguous.
"""

from __future__ import annotations

import ast
import importlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported where it is used, so detect_kind stays cheap
    import torch
    from torch import nn

Kind = Literal["darts", "pc_darts"]
MODULES = ("operations", "genotypes", "model_search", "architect", "model", "utils")


@dataclass(frozen=True)
class SearchHyperparameters:
    """The original train_search.py defaults used by one search iteration."""

    lr: float
    arch_lr: float
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0


SEARCH_HYPERPARAMETERS: dict[Kind, SearchHyperparameters] = {
    "darts": SearchHyperparameters(lr=0.025, arch_lr=3e-4),
    "pc_darts": SearchHyperparameters(lr=0.1, arch_lr=6e-4),
}
AUXILIARY_WEIGHT = 0.4  # train.py's --auxiliary_weight


@dataclass(frozen=True)
class OriginalCode:
    """One folder's modules, already imported and detached from ``sys.modules``."""

    directory: Path
    kind: Kind
    modules: Mapping[str, ModuleType]

    @property
    def model_search(self) -> ModuleType:
        return self.modules["model_search"]

    @property
    def architect(self) -> ModuleType:
        return self.modules["architect"]

    @property
    def model(self) -> ModuleType:
        return self.modules["model"]

    @property
    def genotypes(self) -> ModuleType:
        return self.modules["genotypes"]


def _check_folder(directory: Path) -> None:
    missing = [m for m in MODULES if not (directory / f"{m}.py").is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a copy of the original DARTS / PC-DARTS code: "
                                f"{', '.join(f'{m}.py' for m in missing)} missing")


def detect_kind(directory: str | Path) -> Kind:
    """``pc_darts`` when the folder's ``model_search.py`` defines ``channel_shuffle`` (partial channels), else
    ``darts``; read with ``ast``, nothing is imported."""
    directory = Path(directory)
    _check_folder(directory)
    tree = ast.parse((directory / "model_search.py").read_text(), filename=str(directory / "model_search.py"))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    return "pc_darts" if "channel_shuffle" in defined else "darts"


def load_reference(directory: str | Path) -> OriginalCode:
    """Import the original code in ``directory`` in isolation (see the module docstring)."""
    directory = Path(directory).resolve()
    kind = detect_kind(directory)
    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    entry = str(directory)
    sys.path.insert(0, entry)
    write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave the user's folder as it is
    try:
        modules = {name: importlib.import_module(name) for name in MODULES}
    finally:
        sys.dont_write_bytecode = write_bytecode
        sys.path.remove(entry)
        for name in MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    for name, module in modules.items():  # a same-named module elsewhere on sys.path would shadow the folder's
        if Path(module.__file__ or "").resolve().parent != directory:
            raise ImportError(f"{name!r} was imported from {module.__file__}, not from {directory}")
    return OriginalCode(directory, kind, modules)


class OriginalSearch:
    """The original search network, its ``Architect`` and weight optimiser, and one first-order iteration."""

    def __init__(self, code: OriginalCode, channels: int = 16, num_classes: int = 10, layers: int = 8) -> None:
        import torch

        self.code = code
        self.hyper = SEARCH_HYPERPARAMETERS[code.kind]
        self.criterion = torch.nn.CrossEntropyLoss()
        self.net: nn.Module = code.model_search.Network(channels, num_classes, layers, self.criterion)
        h = self.hyper
        self.optimizer = torch.optim.SGD(self.net.parameters(), h.lr, momentum=h.momentum,
                                         weight_decay=h.weight_decay)
        args = SimpleNamespace(momentum=h.momentum, weight_decay=h.weight_decay, arch_learning_rate=h.arch_lr,
                               arch_weight_decay=h.arch_weight_decay)
        self.architect = code.architect.Architect(self.net, args)

    def arch_step(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                  y_val: torch.Tensor) -> None:
        """``Architect.step`` first order: Adam on the architecture parameters from the validation loss."""
        self.architect.step(x_train, y_train, x_val, y_val, self.hyper.lr, self.optimizer, unrolled=False)

    def weight_step(self, x_train: torch.Tensor, y_train: torch.Tensor) -> None:
        import torch

        self.optimizer.zero_grad()
        loss = self.criterion(self.net(x_train), y_train)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.hyper.grad_clip)
        self.optimizer.step()

    def step(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
             y_val: torch.Tensor) -> tuple[float, float]:
        """One search iteration in the original order (architecture step, then weight step): (weight s, arch s)."""
        t0 = time.perf_counter()
        self.arch_step(x_train, y_train, x_val, y_val)
        t1 = time.perf_counter()
        self.weight_step(x_train, y_train)
        return time.perf_counter() - t1, t1 - t0


class OriginalRetrain:
    """The original ``NetworkCIFAR`` of a genotype from the folder's ``genotypes`` (DARTS_V2 by default)."""

    def __init__(self, code: OriginalCode, channels: int = 36, num_classes: int = 10, layers: int = 20,
                 auxiliary: bool = True, drop_path_prob: float = 0.2, genotype: str = "DARTS_V2") -> None:
        import torch

        self.code = code
        self.auxiliary = auxiliary
        self.criterion = torch.nn.CrossEntropyLoss()
        self.net: nn.Module = code.model.NetworkCIFAR(channels, num_classes, layers, auxiliary,
                                                      getattr(code.genotypes, genotype))
        self.net.drop_path_prob = drop_path_prob  # train.py sets it on the model each epoch

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """zero_grad, forward, CE (+ 0.4 CE of the auxiliary logits in training mode), backward; the loss."""
        self.net.zero_grad()
        logits, logits_aux = self.net(x)
        loss = self.criterion(logits, y)
        if self.auxiliary and logits_aux is not None:
            loss = loss + AUXILIARY_WEIGHT * self.criterion(logits_aux, y)
        loss.backward()
        return loss.detach()
