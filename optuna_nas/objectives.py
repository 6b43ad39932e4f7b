"""Optuna objectives: a DARTS-family search as one trial, a retraining as one trial.

The ablation knobs are suggested through the trial (one-choice categoricals when fixed), so a grid
sampler can sweep them and ``optuna trials`` shows them as params. Every epoch reports to the trial
(pruners and dashboard learning curves); the derived genotype, parameters and multiply-adds are user
attrs. A rerun of the same configuration resumes from its epoch checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from .architectures import AnyArchitecture, load_architecture
from .darts.model import DiscreteNetwork, network_cifar, network_imagenet
from .darts.modes import ActivationMode
from .darts.search import SearchSettings, run_search
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
    """Per-epoch ``trial.report`` of ``metric`` and pruning (after the epoch's checkpoint is saved)."""

    def callback(epoch: int, metrics: dict[str, Any]) -> None:
        trial.report(float(metrics[metric]), epoch)
        trial.set_user_attr("epochs_done", epoch)
        if not metrics.get("replayed") and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {metrics[metric]:.4g})")

    return callback


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
    config_a_genotype: str | None = None  # config_a: the genotype whose per-edge activations freeze β
    partial_channels: int = 1
    recompute_cells: bool = False  # memory saving: recompute each cell in backward
    channels: int = 16
    layers: int = 8
    retrain_channels: int = 36  # cost (params, multiply-adds) is reported for the retraining network
    retrain_layers: int = 20
    settings: SearchSettings = field(default_factory=SearchSettings)
    device: str = "auto"
    run_dir: Path = DEFAULT_RUN_DIR
    verbose: bool = True


class DartsSearchObjective:
    """One search as one trial; returns the final search-validation accuracy (%)."""

    def __init__(self, job: DartsSearchJob) -> None:
        self.job = job
        self.space = load_search_space(job.space)
        self.data = load_dataset(job.dataset, job.data_root, job.download)
        mode = ActivationMode.parse(job.activation_mode or self.space.activation_mode)
        frozen = None
        if mode.kind == "config_a":
            if not job.config_a_genotype:
                raise NasError("activation mode config_a needs --config-a GENOTYPE (a factorized search's result)")
            frozen = load_genotype(job.config_a_genotype).edge_activations
        # built (and so validated) before any trial exists: bad input never leaves a failed trial behind
        self.config = SuperNetConfig(self.space, mode, channels=job.channels, layers=job.layers,
                                     num_classes=self.data.num_classes, in_channels=self.data.in_channels,
                                     partial_channels=job.partial_channels, frozen_activations=frozen,
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
        settings = replace(job.settings, seed=int(seed), unrolled=bool(unrolled))
        config = replace(self.config, activation_mode=ActivationMode.parse(str(mode)), partial_channels=int(k))
        key_params = {"space": self.space.name, "dataset": job.dataset, "channels": job.channels,
                      "layers": job.layers, **trial.params, **asdict(settings)}
        key = run_key(trial.study.study_name, key_params)
        trial.set_user_attr("run_key", key)
        trial.set_user_attr("dataset", job.dataset)
        trial.set_user_attr("search_space", self.space.name)
        checkpoint = Checkpointer(job.run_dir / trial.study.study_name / f"search-{key}.pt")
        result = run_search(config, self.data, settings, resolve_device(job.device), checkpoint,
                            [report_to_trial(trial, "val_acc")], verbose=job.verbose)
        genotype = result.genotype
        trial.set_user_attr("genotype", genotype.to_dict())
        trial.set_user_attr("search_seconds", round(result.seconds, 2))
        trial.set_user_attr("val_acc_history", [round(h["val_acc"], 3) for h in result.history])
        for name, value in genotype_cost(genotype, self.data, job.retrain_channels, job.retrain_layers).items():
            trial.set_user_attr(name, value)
        return float(result.history[-1]["val_acc"])


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
    verbose: bool = True


class RetrainObjective:
    """One retraining as one trial; returns the final test error (%)."""

    def __init__(self, job: RetrainJob) -> None:
        self.job = job
        arch = load_architecture(job.architecture) if isinstance(job.architecture, str) else job.architecture
        self.data = load_dataset(job.dataset, job.data_root, job.download)
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
        job, data, s = self.job, self.data, self.job.settings
        trial.suggest_categorical("activation_override", [job.activation or "none"])
        seed = suggest_fixed_int(trial, "seed", job.seed)
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
                                   Checkpointer(job.run_dir / trial.study.study_name / f"retrain-{key}.pt"),
                                   [report_to_trial(trial, "test_acc")], "retrain", job.verbose)
        test_error = 100.0 - float(history[-1]["test_acc"])
        trial.set_user_attr("test_error", round(test_error, 3))
        return test_error
