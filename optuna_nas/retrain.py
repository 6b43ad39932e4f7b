"""Any architecture retrained from scratch as one Optuna trial; architectures loaded, exported, rebuilt.

An architecture is a DARTS-family genotype or a RandGrow architecture; both are JSON, and a file says which
it is (a RandGrow document has ``"format": "optuna_nas.randgrow"``). A trial of a study says it too:
RandGrow trials carry the sampler's architecture, DARTS searches a ``genotype`` user attr.

The defaults are A-DARTS's CIFAR-10 retraining for genotypes (C=36, 20 cells, 600 epochs), its ImageNet
mobile setting with ``imagenet``, and RandGrow's final training for grown architectures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from .cost import network_cost
from .darts.genotypes import Genotype, load_genotype
from .darts.model import CIFAR_CHANNELS, CIFAR_LAYERS, DiscreteNetwork, build_network
from .data import ImageDataset
from .errors import NasError
from .randgrow.architecture import FORMAT as RANDGROW_FORMAT
from .randgrow.architecture import Architecture
from .randgrow.network import RandGrowNetwork
from .randgrow.objective import FINAL_TRAINING
from .randgrow.sampler import get_proposal
from .storage import load_study_by_name, run_key
from .train import TrainSettings, resolve_device, seed_everything, train_classifier
from .trials import TrialContext, checkpointer_for, report_to_trial, suggest_fixed_int

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


def architecture_of_trial(storage_url: str, study_name: str, number: int) -> AnyArchitecture:
    """The architecture trial ``number`` of a study found (RandGrow), derived (DARTS search) or trained."""
    study = load_study_by_name(storage_url, study_name)
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        raise NasError(f"study {study_name!r} has no trial {number} (it has {len(trials)} trials)")
    trial = match[0]
    proposal = get_proposal(trial)
    if proposal is not None:
        return proposal.architecture
    if "genotype" in trial.user_attrs:
        return Genotype.from_dict(trial.user_attrs["genotype"])
    if "architecture" in trial.user_attrs:  # a RandGrow model's final training (a JSON string)
        return Architecture.from_json(trial.user_attrs["architecture"])
    raise NasError(f"trial {number} of {study_name!r} has no architecture (state {trial.state.name})")


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
    """

    architecture: str | AnyArchitecture = "DARTS_V2"
    channels: int = CIFAR_CHANNELS
    layers: int = CIFAR_LAYERS
    imagenet: bool = False  # the mobile-setting network (use with imagefolder:PATH)
    auxiliary: bool = True
    activation: str | None = None  # override every edge's activation (Table 2 "factorized → ReLU")
    seed: int = 0
    settings: TrainSettings = field(default_factory=TrainSettings)


class RetrainObjective:
    """One retraining as one trial; returns the final test error (%).

    The architecture and its network are built (and so validated) on construction, before any trial exists.
    """

    def __init__(self, job: RetrainJob, data: ImageDataset, context: TrialContext | None = None) -> None:
        self.job = job
        self.data = data
        self.context = context or TrialContext()
        arch = load_architecture(job.architecture) if isinstance(job.architecture, str) else job.architecture
        if isinstance(arch, Architecture):
            if job.activation:
                raise NasError("--activation applies to DARTS genotypes, not to RandGrow architectures")
            skeleton = replace(arch.skeleton, num_classes=data.num_classes, in_channels=data.in_channels)
            self.architecture: AnyArchitecture = Architecture(skeleton, arch.increments)
        else:
            self.architecture = arch.with_activation(job.activation) if job.activation else arch
        self.cost = network_cost(self.network(auxiliary=False), data.input_shape)

    def network(self, auxiliary: bool) -> DiscreteNetwork | RandGrowNetwork:
        """A freshly initialised network of the architecture, shaped for the dataset."""
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
        job, data, s, context = self.job, self.data, self.job.settings, self.context
        generator = seed_everything(seed)
        device = resolve_device(context.device)
        net = self.network(job.auxiliary)
        # a RandGrow architecture is a JSON string, as on the search's trials (cheap for Optuna to copy)
        described: dict[str, Any] = ({"architecture": self.architecture.to_json()}
                                     if isinstance(self.architecture, Architecture)
                                     else {"genotype": self.architecture.to_dict()})
        for name, value in {**self.cost, **described, "dataset": data.name}.items():
            trial.set_user_attr(name, value)
        key = run_key(trial.study.study_name, {**described, "dataset": data.name,
                                               "channels": job.channels, "layers": job.layers,
                                               "imagenet": job.imagenet, "seed": seed, **asdict(s)})
        history = train_classifier(net, data, s, device, generator,
                                   checkpointer_for(trial, f"retrain-{key}", context),
                                   [report_to_trial(trial, "test_acc")], "retrain", context.verbose)
        test_error = 100.0 - float(history[-1]["test_acc"])
        trial.set_user_attr("test_error", round(test_error, 3))
        return test_error
