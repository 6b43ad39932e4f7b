"""One DARTS-family search as one Optuna trial: A-DARTS, DARTS, PC-DARTS, A-PC-DARTS, Config-A.

The ablation knobs are suggested through the trial (one-choice categoricals when fixed), so a grid sampler
can sweep them and ``optuna trials`` shows them as params. Every epoch reports the search-validation
accuracy (pruners, dashboard learning curves); the derived genotype and the parameters and multiply-adds of
the network it retrains as are user attrs, its JSON and a drawing of its cells are artifacts. A rerun of the
same configuration resumes from its epoch checkpoint.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import upload_artifact

from ..artifacts import open_artifact_store, upload_json
from ..data import ImageDataset
from ..errors import NasError
from ..storage import run_key
from ..train import resolve_device
from ..trials import TrialContext, checkpointer_for, report_to_trial, suggest_fixed_int
from .genotypes import Genotype, load_genotype
from .model import CIFAR_CHANNELS, CIFAR_LAYERS, genotype_cost
from .search import SearchResult, SearchSettings, run_search
from .space import ActivationMode, load_search_space
from .supernet import SEARCH_CHANNELS, SEARCH_LAYERS, SuperNetConfig


@dataclass(frozen=True)
class SearchJob:
    """One search: the study file's ``search:`` section, the flags of ``search darts``. The defaults are
    A-DARTS's CIFAR-10 search (Section 4): the ``a_darts`` space in its own mode (factorized), C=16, 8 cells."""

    space: str = "a_darts"
    activation_mode: ActivationMode | None = None  # default: the space's; text is parsed on construction
    # config_a: the genotype (or a built-in name or JSON file) whose per-edge activations freeze β
    config_a_genotype: str | Genotype | None = None
    partial_channels: int | None = None  # PC-DARTS K; default: the space's (1 = off)
    channels: int = SEARCH_CHANNELS
    layers: int = SEARCH_LAYERS
    recompute_cells: bool = False  # memory saving: recompute each cell in backward
    retrain_channels: int = CIFAR_CHANNELS  # cost (params, multiply-adds) is reported for the retraining network
    retrain_layers: int = CIFAR_LAYERS
    settings: SearchSettings = field(default_factory=SearchSettings)

    def __post_init__(self) -> None:
        if self.activation_mode is not None:
            object.__setattr__(self, "activation_mode", ActivationMode.parse(self.activation_mode))


def search_cost_attrs(seconds: float, device: torch.device) -> dict[str, Any]:
    """Search cost as the papers give it: GPU-hours on a GPU, else CPU-hours (of this process)."""
    unit = "gpu" if device.type == "cuda" else "cpu"
    return {f"search_{unit}_hours": round(seconds / 3600.0, 5), "search_device": str(device)}


def upload_genotype(trial: optuna.Trial, artifact_dir: Path | None, genotype: Genotype) -> None:
    """The genotype JSON and a drawing of its cells as trial artifacts (the dashboard shows both)."""
    if artifact_dir is None:
        return
    from .draw import draw_genotype  # matplotlib loads only when a drawing is made

    store = open_artifact_store(artifact_dir)
    upload_json(trial, store, {"genotype": genotype.to_dict()}, "genotype.json")
    with tempfile.TemporaryDirectory() as tmp:
        image = draw_genotype(genotype, Path(tmp) / "cells.png")
        upload_artifact(artifact_store=store, file_path=str(image), study_or_trial=trial)


class DartsSearchObjective:
    """One search as one trial; returns the final search-validation accuracy (%).

    Everything is built (and so validated) on construction, before any trial exists: bad input never leaves
    a failed trial behind.
    """

    def __init__(self, job: SearchJob, data: ImageDataset, context: TrialContext | None = None) -> None:
        self.job = job
        self.data = data
        self.context = context or TrialContext()
        self.space = load_search_space(job.space)
        mode = job.activation_mode or self.space.activation_mode
        frozen = None
        if mode.freezes_activations:
            source = job.config_a_genotype
            if not source:
                raise NasError("activation mode config_a needs --config-a GENOTYPE (a factorized search's result)")
            frozen = (source if isinstance(source, Genotype) else load_genotype(source)).edge_activations
        partial = job.partial_channels if job.partial_channels is not None else self.space.partial_channels
        self.config = SuperNetConfig(self.space, mode, channels=job.channels, layers=job.layers,
                                     num_classes=data.num_classes, in_channels=data.in_channels,
                                     partial_channels=partial, frozen_activations=frozen,
                                     recompute_cells=job.recompute_cells)

    def categorical_params(self) -> dict[str, Any]:
        """The one-choice categorical params every trial of this objective records."""
        return {"activation_mode": str(self.config.activation_mode), "unrolled": self.job.settings.unrolled}

    def __call__(self, trial: optuna.Trial) -> float:
        job = self.job
        mode = trial.suggest_categorical("activation_mode", [str(self.config.activation_mode)])
        k = suggest_fixed_int(trial, "partial_channels", self.config.partial_channels)
        seed = suggest_fixed_int(trial, "seed", job.settings.seed)
        unrolled = trial.suggest_categorical("unrolled", [job.settings.unrolled])
        self.config = replace(self.config, activation_mode=ActivationMode.parse(str(mode)), partial_channels=int(k))
        self.job = replace(job, settings=replace(job.settings, seed=int(seed), unrolled=bool(unrolled)))
        return self.search(trial, self.run_key(trial.study.study_name)).history[-1]["val_acc"]

    def run_key(self, scope: str) -> str:
        """Names this search's configuration (its checkpoint, and its reuse by other trials)."""
        job = self.job
        frozen = self.config.frozen_activations
        return run_key(scope, {"space": self.space.name, "dataset": self.data.name, "channels": job.channels,
                               "layers": job.layers, "activation_mode": str(self.config.activation_mode),
                               "partial_channels": self.config.partial_channels, **asdict(job.settings),
                               **({"frozen": {k: list(v) for k, v in frozen.items()}} if frozen else {})})

    def search(self, trial: optuna.Trial, key: str) -> SearchResult:
        """Run (or resume) the search inside ``trial``; the genotype, cost and drawings go on the trial."""
        job, context = self.job, self.context
        device = resolve_device(context.device)
        trial.set_user_attr("run_key", key)
        trial.set_user_attr("dataset", self.data.name)
        trial.set_user_attr("search_space", self.space.name)
        checkpoint = checkpointer_for(trial, f"search-{key}", context)
        result = run_search(self.config, self.data, job.settings, device, checkpoint,
                            [report_to_trial(trial, "val_acc")], verbose=context.verbose)
        genotype = result.genotype
        trial.set_user_attr("genotype", genotype.to_dict())
        trial.set_user_attr("search_seconds", round(result.seconds, 2))
        for name, value in search_cost_attrs(result.seconds, device).items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("val_acc_history", [round(h["val_acc"], 3) for h in result.history])
        cost = genotype_cost(genotype, self.data.num_classes, self.data.input_shape, job.retrain_channels,
                             job.retrain_layers)
        for name, value in cost.items():
            trial.set_user_attr(name, value)
        upload_genotype(trial, context.artifact_dir, genotype)
        return result
