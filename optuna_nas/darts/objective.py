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

from ..artifacts import ArtifactStore, open_artifact_store, upload_json, upload_or_replace, upload_state
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

SUPERNET_FILE = "supernet.pt"  # the super-network's state dict, α, β and γ included
ARCHITECTURE_WEIGHTS_FILE = "architecture-weights.json"  # softmax(α), softmax(β), γ per edge, every epoch
ARCHITECTURE_FIGURE = "architecture-weights.png"


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
    compile_mixture: bool = False  # torch.compile the β-mixture (factorized modes): faster steps after a compile
    retrain_channels: int = CIFAR_CHANNELS  # cost (params, multiply-adds) is reported for the retraining network
    retrain_layers: int = CIFAR_LAYERS
    settings: SearchSettings = field(default_factory=SearchSettings)

    def __post_init__(self) -> None:
        if self.activation_mode is not None:
            object.__setattr__(self, "activation_mode", ActivationMode.parse(self.activation_mode))


def search_cost_attrs(seconds: float, cpu_seconds: float, device: torch.device) -> dict[str, Any]:
    """Search cost as what it measures: wall-clock hours on ``search_device`` (GPU-hours on one GPU, as the
    papers count them) and this process's CPU time in hours."""
    return {"search_wall_hours": round(seconds / 3600.0, 5), "search_device": str(device),
            "search_process_cpu_hours": round(cpu_seconds / 3600.0, 5)}


def upload_genotype(trial: optuna.Trial, store: ArtifactStore, genotype: Genotype) -> None:
    """The genotype JSON and a drawing of its cells as trial artifacts (the dashboard shows both)."""
    from .draw import draw_genotype  # matplotlib loads only when a drawing is made

    upload_json(trial, store, {"genotype": genotype.to_dict()}, "genotype.json")
    with tempfile.TemporaryDirectory() as tmp:
        image = draw_genotype(genotype, Path(tmp) / "cells.png")
        upload_artifact(artifact_store=store, file_path=str(image), study_or_trial=trial)


class ArchitectureWeightsFigure:
    """An epoch callback: the figure of softmax(α), softmax(β) and γ per edge, and their evolution, redrawn
    after every epoch into one artifact (``architecture-weights.png``) that optuna-dashboard shows."""

    def __init__(self, trial: optuna.Trial, store: ArtifactStore, config: SuperNetConfig) -> None:
        self.trial, self.store = trial, store
        self.candidates = config.candidate_names()
        self.activations = list(config.space.activations) if config.activation_mode.searches_beta else []
        self.epochs: list[dict[str, Any]] = []
        self.artifact_id: str | None = None

    def __call__(self, epoch: int, metrics: dict[str, Any]) -> None:
        weights = metrics.get("architecture_weights")
        if weights is None:  # a checkpoint written before the weights were recorded
            return
        self.epochs.append({"epoch": epoch, **weights})
        if metrics.get("replayed"):
            return  # drawn once the run goes on (or finishes)
        self.draw()

    def draw(self) -> None:
        from .draw import draw_architecture_weights  # matplotlib loads only when a drawing is made

        if not self.epochs:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = draw_architecture_weights(self.epochs, self.candidates, self.activations,
                                             Path(tmp) / ARCHITECTURE_FIGURE,
                                             title=f"trial {self.trial.number}: architecture weights")
            self.artifact_id = upload_or_replace(self.trial, self.store, path, self.artifact_id)


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
                                     recompute_cells=job.recompute_cells, compile_mixture=job.compile_mixture)

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
        """Run (or resume) the search inside ``trial``. The genotype and cost are user attrs; the genotype, its
        cell drawing, the super-network's weights (α, β, γ included), the architecture weights of every epoch
        and their figure are artifacts."""
        job, context = self.job, self.context
        device = resolve_device(context.device)
        store = open_artifact_store(context.artifact_store)
        trial.set_user_attr("run_key", key)
        trial.set_user_attr("dataset", self.data.name)
        trial.set_user_attr("search_space", self.space.name)
        checkpoint = checkpointer_for(trial, f"search-{key}", context)
        figure = ArchitectureWeightsFigure(trial, store, self.config)
        result = run_search(self.config, self.data, job.settings, device, checkpoint,
                            [report_to_trial(trial, "val_acc"), figure], verbose=context.verbose)
        genotype = result.genotype
        trial.set_user_attr("genotype", genotype.to_dict())
        trial.set_user_attr("search_seconds", round(result.seconds, 2))
        for name, value in search_cost_attrs(result.seconds, result.cpu_seconds, device).items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("val_acc_history", [round(h["val_acc"], 3) for h in result.history])
        cost = genotype_cost(genotype, self.data.num_classes, self.data.input_shape, job.retrain_channels,
                             job.retrain_layers)
        for name, value in cost.items():
            trial.set_user_attr(name, value)
        if figure.artifact_id is None:  # every epoch was restored from a checkpoint: draw them now
            figure.draw()
        upload_genotype(trial, store, genotype)
        upload_state(trial, store, result.network.state_dict(), SUPERNET_FILE)
        upload_json(trial, store, {"candidates": figure.candidates, "activations": figure.activations,
                                   "epochs": figure.epochs}, ARCHITECTURE_WEIGHTS_FILE)
        return result
