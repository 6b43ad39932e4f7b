"""Any architecture retrained from scratch as one Optuna trial; architectures loaded, exported, rebuilt.

An architecture is a DARTS-family genotype or a RandGrow architecture; both are JSON, and a file says which
it is (a RandGrow document has ``"format": "optuna_nas.randgrow"``). A trial of a study says it too:
RandGrow trials carry the sampler's architecture, DARTS searches a ``genotype`` user attr.

The defaults are A-DARTS's CIFAR-10 retraining for genotypes (C=36, 20 cells, 600 epochs), its ImageNet
mobile setting with ``imagenet``, and RandGrow's final training for grown architectures.

What a retraining trial reports, every epoch, is exactly what it returns: the test error as the papers
report it, or, with ``val_portion`` (as every study that samples or prunes sets it), the error on that share
of the training set, held out and never trained on; the test error is then a user attr only. Its trained
weights are an artifact (``weights.pt``) from which :func:`load_trained_network` rebuilds the network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from .artifacts import download_state, find_artifact, open_artifact_store, upload_state
from .cost import network_cost
from .darts.genotypes import Genotype, load_genotype
from .darts.model import CIFAR_CHANNELS, CIFAR_LAYERS, DiscreteNetwork, build_network
from .darts.objective import upload_genotype
from .data import ImageDataset, split_indices
from .distributed import Replicas
from .errors import NasError
from .randgrow.architecture import FORMAT as RANDGROW_FORMAT
from .randgrow.architecture import Architecture
from .randgrow.network import RandGrowNetwork
from .randgrow.objective import FINAL_TRAINING, upload_grown_architecture
from .randgrow.objective import WEIGHTS_FILE as GROWN_WEIGHTS_FILE
from .randgrow.sampler import get_proposal
from .storage import run_key, storage_of, trial_by_number
from .train import (
    Checkpointer,
    EpochCallback,
    TrainSettings,
    evaluate_split,
    resolve_device,
    seed_everything,
    train_classifier,
)
from .trials import TrialContext, checkpointer_for, report_to_trial, suggest_fixed_int

WEIGHTS_FILE = "weights.pt"
# The held-out share a study that samples (TPE, random) or prunes scores its retraining trials on, and the seed
# that draws it: the same images for every trial of a study, so their scores compare.
SELECTION_VAL_PORTION = 0.1
SPLIT_SEED = 0

AnyArchitecture = Genotype | Architecture


def load_architecture(name_or_path: str) -> AnyArchitecture:
    """A built-in genotype name, a genotype JSON file, or a RandGrow architecture JSON file."""
    path = Path(name_or_path)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise NasError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and data.get("format") == RANDGROW_FORMAT:
            return Architecture.from_dict(data)
    return load_genotype(name_or_path)


def best_trial_number(study: optuna.Study) -> int:
    """The trial whose architecture to export by default: the best completed one (for two objectives, the
    lowest validation error, as RandGrow picks the model to train finally)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "duplicate_of" not in t.user_attrs]
    if not complete:
        raise NasError(f"study {study.study_name!r} has no completed trial to export")
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * t.values[0], t.number)).number


def architecture_of_trial(study: optuna.Study, number: int) -> AnyArchitecture:
    """The architecture trial ``number`` of a study found (RandGrow), derived (DARTS search) or trained."""
    trial = _trial(study, number)
    proposal = get_proposal(trial)
    if proposal is not None:
        return proposal.architecture
    if "genotype" in trial.user_attrs:
        return Genotype.from_dict(trial.user_attrs["genotype"])
    if "architecture" in trial.user_attrs:  # a RandGrow model's final training (a JSON string)
        return Architecture.from_json(trial.user_attrs["architecture"])
    raise NasError(f"trial {number} of {study.study_name!r} has no architecture (state {trial.state.name})")


def _trial(study: optuna.Study, number: int) -> FrozenTrial:
    if not 0 <= number < len(study.get_trials(deepcopy=False)):
        raise NasError(f"study {study.study_name!r} has no trial {number} "
                       f"(it has {len(study.get_trials(deepcopy=False))} trials)")
    return trial_by_number(study, number)


def trained_weights(study: optuna.Study, number: int, artifact_store: str) -> dict[str, torch.Tensor]:
    """The trained weights trial ``number`` uploaded (a retraining's, or a RandGrow model's), loaded with
    ``weights_only=True``."""
    trial = _trial(study, number)
    artifact = None
    for filename in (WEIGHTS_FILE, GROWN_WEIGHTS_FILE):
        artifact = artifact or find_artifact(trial, storage_of(study), filename)
    if artifact is None:
        what = "a search: its super-network is the artifact supernet.pt; retrain its genotype" \
            if "genotype" in trial.user_attrs and "network" not in trial.user_attrs else f"state {trial.state.name}"
        raise NasError(f"trial {number} of {study.study_name!r} has no trained weights ({what})")
    return download_state(open_artifact_store(artifact_store), artifact)


def load_trained_network(study: optuna.Study, number: int, artifact_store: str) -> torch.nn.Module:
    """The trained network of trial ``number`` (a retraining trial or a RandGrow growth trial), rebuilt from
    the trial's architecture and shape and loaded with its weights, in eval mode::

        study = optuna.load_study(study_name="retrain", storage="sqlite:///optuna-nas.db")
        net = load_trained_network(study, 0, "optuna-nas-artifacts")
    """
    trial = _trial(study, number)
    weights = trained_weights(study, number, artifact_store)
    architecture = architecture_of_trial(study, number)
    if isinstance(architecture, Architecture):
        net: torch.nn.Module = RandGrowNetwork(architecture)
    else:
        shape = trial.user_attrs["network"]
        net = build_network(architecture, shape["num_classes"], shape["in_channels"], shape["channels"],
                            shape["layers"], shape["imagenet"], shape["auxiliary"])
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise NasError(f"trial {number}'s weights do not fit its architecture ({str(exc).splitlines()[0]})") from None
    return net.eval()


def architecture_to_dict(architecture: AnyArchitecture) -> dict:
    """The JSON object ``optuna-nas retrain`` and :func:`load_architecture` accept back."""
    if isinstance(architecture, Architecture):
        return architecture.to_dict()
    return {"genotype": architecture.to_dict()}


# A-DARTS's ImageNet retraining (the mobile setting of DARTS): 250 epochs, batch 512, SGD 0.25 with 5 warm-up
# epochs, weight decay 3e-5, label smoothing 0.1, auxiliary weight 0.2, no drop path, no cutout.
IMAGENET_TRAINING = TrainSettings(epochs=250, batch_size=512, lr=0.25, weight_decay=3e-5, warmup_epochs=5,
                                  label_smoothing=0.1, auxiliary_weight=0.2, drop_path_prob=0.0, cutout=False)


def paper_training(architecture: AnyArchitecture, imagenet: bool = False) -> TrainSettings:
    """The published training of an architecture: RandGrow's final training for a grown network, A-DARTS's
    CIFAR-10 retraining (``TrainSettings()``) or ImageNet retraining for a genotype."""
    if isinstance(architecture, Architecture):
        return FINAL_TRAINING
    return IMAGENET_TRAINING if imagenet else TrainSettings()


@dataclass(frozen=True)
class RetrainJob:
    """Train an architecture from scratch: the study file's ``retrain:`` section, the flags of ``retrain``.

    ``architecture`` is a genotype or RandGrow architecture, or what :func:`load_architecture` reads (a
    built-in genotype name or a JSON file). ``channels``, ``layers``, ``imagenet``, ``auxiliary`` and
    ``activation`` shape DARTS networks; a RandGrow architecture carries its own skeleton, whose classifier
    and stem are fitted to the dataset (so a CIFAR-10 model retrains on CIFAR-100, as in the paper's Table 2).
    ``val_portion``: score on this share of the training set, held out (None: the test error, as the papers).
    """

    architecture: str | AnyArchitecture = "DARTS_V2"
    channels: int = CIFAR_CHANNELS
    layers: int = CIFAR_LAYERS
    imagenet: bool = False  # the mobile-setting network (use with imagefolder:PATH)
    auxiliary: bool = True
    activation: str | None = None  # override every edge's activation (Table 2 "factorized → ReLU")
    val_portion: float | None = None
    seed: int = 0
    settings: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        if self.val_portion is not None and not 0.0 < self.val_portion < 1.0:
            raise NasError(f"val_portion must be between 0 and 1 (a share of the training set), got "
                           f"{self.val_portion}")

    @property
    def metric(self) -> str:
        """What the trial reports and returns: ``val_error`` on the held-out share, else ``test_error``."""
        return "val_error" if self.val_portion else "test_error"


class RetrainObjective:
    """One retraining as one trial; returns, and reports every epoch, the error :attr:`RetrainJob.metric`
    names (%).

    The architecture and its network are built (and so validated) on construction, before any trial exists.
    """

    def __init__(self, job: RetrainJob, data: ImageDataset, context: TrialContext | None = None,
                 replicas: Replicas | None = None) -> None:
        self.job = job
        self.data = data
        self.context = context or TrialContext()
        self.replicas = replicas  # data-parallel: this process trains a replica (see distributed.py)
        arch = load_architecture(job.architecture) if isinstance(job.architecture, str) else job.architecture
        if isinstance(arch, Architecture):
            if job.activation:
                raise NasError("--activation applies to DARTS genotypes, not to RandGrow architectures")
            skeleton = replace(arch.skeleton, num_classes=data.num_classes, in_channels=data.in_channels)
            self.architecture: AnyArchitecture = Architecture(skeleton, arch.increments)
        else:
            self.architecture = arch.with_activation(job.activation) if job.activation else arch
        self.cost = network_cost(self.network(auxiliary=False), data.input_shape)
        if job.val_portion:  # the held-out images, the same for every trial (checked now: a split may not fit)
            self.split: tuple[list[int], list[int]] | None = split_indices(
                len(data.train), 1.0 - job.val_portion, torch.Generator().manual_seed(SPLIT_SEED), job.val_portion)
        else:
            self.split = None

    def network(self, auxiliary: bool) -> DiscreteNetwork | RandGrowNetwork:
        """A freshly initialised network of the architecture, shaped for the dataset."""
        job, data = self.job, self.data
        if isinstance(self.architecture, Architecture):
            return RandGrowNetwork(self.architecture)
        return build_network(self.architecture, data.num_classes, data.in_channels, job.channels, job.layers,
                             job.imagenet, auxiliary)

    def _described(self) -> dict[str, Any]:
        # a RandGrow architecture is a JSON string, as on the search's trials (cheap for Optuna to copy)
        if isinstance(self.architecture, Architecture):
            return {"architecture": self.architecture.to_json()}
        return {"genotype": self.architecture.to_dict()}

    def run_key(self, scope: str, seed: int | None = None) -> str:
        """Names this retraining's configuration within a study: its checkpoint, and its completed trial."""
        job = self.job
        seed = job.seed if seed is None else seed
        return run_key(scope, {**self._described(), "dataset": self.data.name, "channels": job.channels,
                               "layers": job.layers, "imagenet": job.imagenet, "seed": seed,
                               **({"val_portion": job.val_portion} if job.val_portion else {}),
                               **asdict(job.settings)})

    def categorical_params(self) -> dict[str, Any]:
        return {"activation_override": self.job.activation or "none"}

    def __call__(self, trial: optuna.Trial) -> float:
        trial.suggest_categorical("activation_override", [self.job.activation or "none"])
        return self.train(trial, suggest_fixed_int(trial, "seed", self.job.seed))

    def train(self, trial: optuna.Trial, seed: int) -> float:
        """Train (or resume) the architecture inside ``trial`` with ``seed``; the trained weights, the
        architecture and its drawing become artifacts. Returns the error :attr:`RetrainJob.metric` names."""
        job, data, s, context = self.job, self.data, self.job.settings, self.context
        generator = seed_everything(seed)
        device = resolve_device(context.device)
        net = self.network(job.auxiliary)
        shape = {"channels": job.channels, "layers": job.layers, "imagenet": job.imagenet, "auxiliary": job.auxiliary,
                 "num_classes": data.num_classes, "in_channels": data.in_channels}
        key = self.run_key(trial.study.study_name, seed)
        for name, value in {**self.cost, **self._described(), "dataset": data.name, "run_key": key,
                            "network": shape, "metric": job.metric}.items():
            trial.set_user_attr(name, value)
        metric = job.metric
        if self.replicas is not None:
            trial.set_user_attr("processes", self.replicas.world)
            self.replicas.share({"seed": seed})  # the other processes train their replicas of this run
        history = self._train(net, generator, device, checkpointer_for(trial, f"retrain-{key}", context),
                              [report_to_trial(trial, metric)], context.verbose)
        if self.split is None:
            test = {k: history[-1][k] for k in ("test_acc", "test_error")}
        else:
            test = evaluate_split(net, data, "test", s, device)  # recorded for people, never reported
            trial.set_user_attr("val_error", round(float(history[-1]["val_error"]), 3))
        trial.set_user_attr("test_error", round(float(test["test_error"]), 3))
        trial.set_user_attr("test_acc", round(float(test["test_acc"]), 3))
        store = open_artifact_store(context.artifact_store)
        upload_state(trial, store, net.state_dict(), WEIGHTS_FILE)
        if isinstance(self.architecture, Architecture):
            upload_grown_architecture(trial, store, self.architecture)
        else:
            upload_genotype(trial, store, self.architecture)
        return float(history[-1][metric])

    def _train(self, net: torch.nn.Module, generator: torch.Generator, device: torch.device,
               checkpoint: Checkpointer | None, callbacks: list[EpochCallback], verbose: bool) -> list[dict[str, Any]]:
        held_out = {} if self.split is None else {"train_indices": self.split[0], "eval_split": "train",
                                                   "eval_indices": self.split[1]}
        return train_classifier(net, self.data, self.job.settings, device, generator, checkpoint, callbacks,
                                "retrain", verbose, replicas=self.replicas, **held_out)  # type: ignore[arg-type]

    def follow(self) -> None:
        """A data-parallel process other than the lead: train the replica of every run the lead trains (same
        seed, same network, its share of every batch) until the lead says it is done."""
        assert self.replicas is not None and not self.replicas.lead
        while (order := self.replicas.share(None)) is not None:
            generator = seed_everything(int(order["seed"]))
            self._train(self.network(self.job.auxiliary), generator, resolve_device(self.context.device), None, [],
                        False)
