"""Optuna objectives: a DARTS-family search as one trial, a retraining as one trial.

The ablation knobs are suggested through the trial (one-choice categoricals when fixed), so a grid
sampler can sweep them and ``optuna trials`` shows them as params. Every epoch reports to the trial
(pruners and dashboard learning curves); the derived genotype, parameters and multiply-adds are user
attrs. A rerun of the same configuration resumes from its epoch checkpoint.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import upload_artifact

from .architectures import AnyArchitecture, load_architecture
from .artifacts import ArtifactCheckpointer, open_artifact_store, upload_json
from .darts.model import DiscreteNetwork, network_cifar, network_imagenet
from .darts.modes import ActivationMode
from .darts.search import SearchResult, SearchSettings, run_search
from .darts.supernet import SuperNetConfig
from .data import ImageDataset, load_dataset
from .errors import NasError
from .genotypes import Genotype, load_genotype, network_cost
from .randgrow.architecture import Architecture
from .randgrow.network import RandGrowNetwork
from .search_space import load_search_space
from .storage import DEFAULT_RUN_DIR, run_key
from .train import (
    Checkpointer,
    EpochCallback,
    TrainSettings,
    resolve_device,
    seed_everything,
    train_classifier,
)


def report_to_trial(trial: optuna.Trial, metric: str) -> EpochCallback:
    """Per-epoch ``trial.report`` of ``metric`` and pruning (after the epoch's checkpoint is saved).

    Epochs restored from a checkpoint are reported too (a retried trial shows the whole curve), and the
    last of them is recorded as the user attr ``resumed_from_epoch``.
    """

    def callback(epoch: int, metrics: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # a retried trial inherits the epochs already reported: Optuna warns
            warnings.simplefilter("ignore", UserWarning)
            trial.report(float(metrics[metric]), epoch)
        trial.set_user_attr("epochs_done", epoch)
        if metrics.get("replayed"):
            trial.set_user_attr("resumed_from_epoch", epoch)
        elif trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {metrics[metric]:.4g})")

    return callback


def checkpointer_for(trial: optuna.Trial, name: str, run_dir: Path, artifact_dir: Path | None) -> Checkpointer:
    """Where run ``name`` of a trial's study keeps its epoch checkpoint: the shared artifact store when one is
    given (a retried trial on another machine resumes), else a local file under ``run_dir``."""
    if artifact_dir is not None:
        trial.set_user_attr("checkpoint", name)  # discarded once the trial completes (see studies.py)
        return ArtifactCheckpointer(open_artifact_store(artifact_dir), trial.study, name)
    return Checkpointer(run_dir / trial.study.study_name / f"{name}.pt")


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


def suggest_fixed_int(trial: optuna.Trial, name: str, value: int) -> int:
    """Record a fixed integer knob as a param. An int range (unlike a one-choice categorical) lets one study
    hold runs with different values, e.g. several seeds."""
    return trial.suggest_int(name, value, value)


def check_categoricals(study: optuna.Study, params: dict[str, Any]) -> None:
    """Optuna fixes a categorical's choices per study: say so before a run would fail on it."""
    for trial in study.get_trials(deepcopy=False):
        for name, value in params.items():
            dist = trial.distributions.get(name)
            if isinstance(dist, optuna.distributions.CategoricalDistribution) and tuple(dist.choices) != (value,):
                raise NasError(f"study {study.study_name!r} holds runs with {name} {trial.params[name]!r}; a run with "
                               f"{name} {value!r} needs another study (or a study file that sweeps {name})")


def genotype_cost(genotype: Genotype, data: ImageDataset, channels: int, layers: int,
                  imagenet: bool = False) -> dict[str, int]:
    """Parameters (no auxiliary head) and multiply-adds of the network the genotype retrains as."""
    net = build_network(genotype, data.num_classes, data.in_channels, channels, layers, imagenet, auxiliary=False)
    return network_cost(net, data.input_shape)


def build_network(genotype: Genotype, num_classes: int, in_channels: int, channels: int, layers: int,
                  imagenet: bool, auxiliary: bool) -> DiscreteNetwork:
    factory = network_imagenet if imagenet else network_cifar
    return factory(genotype, channels=channels, num_classes=num_classes, layers=layers,
                   auxiliary=auxiliary, in_channels=in_channels)


@dataclass
class DartsSearchJob:
    """Everything one search trial needs; the defaults are A-DARTS on CIFAR-10 (Section 4)."""

    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = False
    space: str = "a_darts"
    activation_mode: str | None = None  # default: the space file's
    # config_a: the genotype (or its name / JSON file) whose per-edge activations freeze β
    config_a_genotype: str | Genotype | None = None
    partial_channels: int | None = None  # PC-DARTS K; default: the space file's (1 = off)
    recompute_cells: bool = False  # memory saving: recompute each cell in backward
    channels: int = 16
    layers: int = 8
    retrain_channels: int = 36  # cost (params, multiply-adds) is reported for the retraining network
    retrain_layers: int = 20
    settings: SearchSettings = field(default_factory=SearchSettings)
    device: str = "auto"
    run_dir: Path = DEFAULT_RUN_DIR
    artifact_dir: Path | None = None  # set: checkpoints, genotype and cell drawing go to the artifact store
    verbose: bool = True


class DartsSearchObjective:
    """One search as one trial; returns the final search-validation accuracy (%)."""

    def __init__(self, job: DartsSearchJob, data: ImageDataset | None = None) -> None:
        self.job = job
        self.space = load_search_space(job.space)
        self.data = data if data is not None else load_dataset(job.dataset, job.data_root, job.download)
        mode = ActivationMode.parse(job.activation_mode or self.space.activation_mode)
        frozen = None
        if mode.kind == "config_a":
            if not job.config_a_genotype:
                raise NasError("activation mode config_a needs --config-a GENOTYPE (a factorized search's result)")
            source = job.config_a_genotype
            frozen = (source if isinstance(source, Genotype) else load_genotype(source)).edge_activations
        partial = job.partial_channels if job.partial_channels is not None else self.space.partial_channels
        # built (and so validated) before any trial exists: bad input never leaves a failed trial behind
        self.config = SuperNetConfig(self.space, mode, channels=job.channels, layers=job.layers,
                                     num_classes=self.data.num_classes, in_channels=self.data.in_channels,
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
        return run_key(scope, {"space": self.space.name, "dataset": job.dataset, "channels": job.channels,
                               "layers": job.layers, "activation_mode": str(self.config.activation_mode),
                               "partial_channels": self.config.partial_channels, **asdict(job.settings),
                               **({"frozen": {k: list(v) for k, v in frozen.items()}} if frozen else {})})

    def search(self, trial: optuna.Trial, key: str) -> SearchResult:
        """Run (or resume) the search inside ``trial``; the genotype, cost and drawings go on the trial."""
        job = self.job
        device = resolve_device(job.device)
        trial.set_user_attr("run_key", key)
        trial.set_user_attr("dataset", job.dataset)
        trial.set_user_attr("search_space", self.space.name)
        checkpoint = checkpointer_for(trial, f"search-{key}", job.run_dir, job.artifact_dir)
        result = run_search(self.config, self.data, job.settings, device, checkpoint,
                            [report_to_trial(trial, "val_acc")], verbose=job.verbose)
        genotype = result.genotype
        trial.set_user_attr("genotype", genotype.to_dict())
        trial.set_user_attr("search_seconds", round(result.seconds, 2))
        for name, value in search_cost_attrs(result.seconds, device).items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("val_acc_history", [round(h["val_acc"], 3) for h in result.history])
        for name, value in genotype_cost(genotype, self.data, job.retrain_channels, job.retrain_layers).items():
            trial.set_user_attr(name, value)
        upload_genotype(trial, job.artifact_dir, genotype)
        return result


@dataclass
class RetrainJob:
    """Train an architecture from scratch; defaults are A-DARTS's CIFAR-10 retraining (C=36, 20 cells).

    ``architecture`` is a genotype or RandGrow architecture, or what :func:`load_architecture` reads (a
    built-in genotype name or a JSON file). ``channels``, ``layers``, ``imagenet``, ``auxiliary`` and
    ``activation`` shape DARTS networks; a RandGrow architecture carries its own skeleton, whose classifier
    and stem are fitted to the dataset (so a CIFAR-10 model retrains on CIFAR-100, as in the paper's Table 2).
    """

    architecture: str | AnyArchitecture = "DARTS_V2"
    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = False
    channels: int = 36
    layers: int = 20
    imagenet: bool = False  # the mobile-setting network (use with imagefolder:PATH)
    auxiliary: bool = True
    activation: str | None = None  # override every edge's activation (Table 2 "factorized → ReLU")
    seed: int = 0
    settings: TrainSettings = field(default_factory=TrainSettings)
    device: str = "auto"
    run_dir: Path = DEFAULT_RUN_DIR
    artifact_dir: Path | None = None  # set: epoch checkpoints go to the artifact store
    verbose: bool = True


class RetrainObjective:
    """One retraining as one trial; returns the final test error (%)."""

    def __init__(self, job: RetrainJob, data: ImageDataset | None = None) -> None:
        self.job = job
        arch = load_architecture(job.architecture) if isinstance(job.architecture, str) else job.architecture
        self.data = data if data is not None else load_dataset(job.dataset, job.data_root, job.download)
        if isinstance(arch, Architecture):
            if job.activation:
                raise NasError("--activation applies to DARTS genotypes, not to RandGrow architectures")
            skeleton = replace(arch.skeleton, num_classes=self.data.num_classes, in_channels=self.data.in_channels)
            self.architecture: AnyArchitecture = Architecture(skeleton, arch.increments)
        else:
            self.architecture = arch.with_activation(job.activation) if job.activation else arch
        # building the network once validates it before any trial exists, and gives its cost
        self.cost = network_cost(self._network(auxiliary=False), self.data.input_shape)

    def _network(self, auxiliary: bool) -> DiscreteNetwork | RandGrowNetwork:
        job, data = self.job, self.data
        if isinstance(self.architecture, Architecture):
            return RandGrowNetwork(self.architecture)
        return build_network(self.architecture, data.num_classes, data.in_channels, job.channels, job.layers,
                             job.imagenet, auxiliary)

    def categorical_params(self) -> dict[str, Any]:
        return {"activation_override": self.job.activation or "none"}

    def __call__(self, trial: optuna.Trial) -> float:
        trial.suggest_categorical("activation_override", [self.job.activation or "none"])
        return self.train(trial, suggest_fixed_int(trial, "seed", self.job.seed))

    def train(self, trial: optuna.Trial, seed: int) -> float:
        """Train (or resume) the architecture inside ``trial`` with ``seed``; returns the test error (%)."""
        job, data, s = self.job, self.data, self.job.settings
        generator = seed_everything(seed)
        device = resolve_device(job.device)
        net = self._network(job.auxiliary)
        # a RandGrow architecture is a JSON string, as on the search's trials (cheap for Optuna to copy)
        described: dict[str, Any] = ({"architecture": self.architecture.to_json()}
                                     if isinstance(self.architecture, Architecture)
                                     else {"genotype": self.architecture.to_dict()})
        for name, value in {**self.cost, **described, "dataset": job.dataset}.items():
            trial.set_user_attr(name, value)
        key = run_key(trial.study.study_name, {**described, "dataset": job.dataset,
                                               "channels": job.channels, "layers": job.layers,
                                               "imagenet": job.imagenet, "seed": seed, **asdict(s)})
        history = train_classifier(net, data, s, device, generator,
                                   checkpointer_for(trial, f"retrain-{key}", job.run_dir, job.artifact_dir),
                                   [report_to_trial(trial, "test_acc")], "retrain", job.verbose)
        test_error = 100.0 - float(history[-1]["test_acc"])
        trial.set_user_attr("test_error", round(test_error, 3))
        return test_error
