"""The RandGrow growth trial: train the child :class:`RandGrowSampler` proposed, report (error, cost).

One trial = one model of the paper's search (Section 2). The child is built from the architecture JSON on
the trial, starts from its parent's weights (downloaded from Optuna's artifact store, so parents and
children may live on different machines) and is trained with the one training loop of the project. Its
weights and architecture are uploaded before the trial completes, so any worker that sees the trial as a
possible parent can also fetch its weights.

Choices the paper leaves open:

* Validation split: ``val_portion`` (default 0.1, i.e. 5,000 of CIFAR-10's 50,000 images as in Zoph et al.,
  2018) of the training set, drawn once from the study's ``seed``, so every trial of a study is scored on
  the same images. Models train on the rest.
* "The initial model is trained from scratch as if it is a final model": it gets the final training's
  schedule (one cosine cycle over ``initial.epochs``, 600 by default) on the search-training split, so it
  has a validation error to be compared with. Path dropout does nothing to it (it has no increments).
* Weight decay 3e-4 and momentum 0.9 (the paper names neither; DARTS's values); no path dropout during
  search (the paper applies it in final training only).
* Multi-objective trials cannot ``trial.report`` in Optuna, so each epoch's validation error is written to
  the user attr ``val_error_history`` and drawn as the artifact ``learning-curve.png`` instead (the
  dashboard shows both while the trial runs).
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import optuna
import torch
from optuna.artifacts import upload_artifact

from ..artifacts import (
    DEFAULT_ARTIFACT_STORE,
    ArtifactCheckpointer,
    ArtifactStore,
    discard_checkpoint,
    download_state,
    find_artifact,
    open_artifact_store,
    upload_json,
    upload_or_replace,
    upload_state,
)
from ..cost import network_cost
from ..data import ImageDataset, split_indices
from ..errors import NasError, TrainingDiverged
from ..plotting import draw_curve
from ..storage import run_key, storage_of, study_token, trial_by_number
from ..train import TrainSettings, resolve_device, seed_everything, train_classifier
from ..trials import TrialContext, say_why_it_failed
from .architecture import Architecture, Skeleton
from .network import RandGrowNetwork, inherit_weights
from .sampler import get_proposal

WEIGHTS_FILE = "randgrow-weights.pt"
ARCHITECTURE_FILE = "architecture.json"
NETWORK_FIGURE = "network.png"
CURVE_FIGURE = "learning-curve.png"
Cost = Literal["params", "flops"]
COSTS: tuple[str, ...] = ("params", "flops")

# "batch size of 32 using SGDR that starts at 0.025 and ends at 0 in 80 epochs for two cycles"
SEARCH_TRAINING = TrainSettings(epochs=160, cycles=2, batch_size=32, lr=0.025, lr_min=0.0, weight_decay=3e-4,
                                drop_path_prob=0.0, auxiliary_weight=0.0)
# "cosine learning rate that shrinks from 0.025 to 0 in 600 epochs", path dropout on (rate: our choice)
FINAL_TRAINING = replace(SEARCH_TRAINING, epochs=600, cycles=1, drop_path_prob=0.2)
INITIAL_TRAINING = replace(FINAL_TRAINING, drop_path_prob=0.0)


def skeleton_for(data: ImageDataset, cells_per_block: int, channels: int) -> Skeleton:
    """The paper's initial network shaped for ``data`` (its channels and classes)."""
    return Skeleton(cells_per_block, channels, data.in_channels, data.num_classes)


@dataclass(frozen=True)
class RandGrowJob:
    """What every growth trial of a study shares; the defaults are the paper's CIFAR-10 search."""

    cost: Cost = "params"
    val_portion: float = 0.1
    search: TrainSettings = SEARCH_TRAINING
    initial: TrainSettings = INITIAL_TRAINING
    function_preserving: bool = False  # new increments start as no-ops (zeroed last BatchNorm)
    seed: int = 0  # fixes the train/validation split of the whole study

    def __post_init__(self) -> None:
        if self.cost not in COSTS:
            raise NasError(f"unknown cost {self.cost!r}; known: {', '.join(COSTS)}")
        if not 0.0 < self.val_portion < 1.0:
            raise NasError(f"the validation share must be between 0 and 1, got {self.val_portion}")


class RandGrowObjective:
    """Train the proposed child; returns ``(validation error %, cost)`` for the two study directions.

    Growth needs an artifact store (children load their parents' weights): ``context.artifact_store``.
    """

    def __init__(self, job: RandGrowJob, data: ImageDataset, context: TrialContext | None = None) -> None:
        self.job = job
        self.data = data
        self.context = context or TrialContext()
        generator = torch.Generator().manual_seed(job.seed)
        self.train_idx, self.val_idx = split_indices(len(self.data.train), 1.0 - job.val_portion, generator,
                                                     job.val_portion)
        self.store = open_artifact_store(self.context.artifact_store or DEFAULT_ARTIFACT_STORE)

    def _parent_state(self, study: optuna.Study, parent: int) -> dict[str, torch.Tensor]:
        artifact = find_artifact(trial_by_number(study, parent), storage_of(study), WEIGHTS_FILE)
        if artifact is None:
            raise NasError(f"parent trial {parent} has no {WEIGHTS_FILE} artifact to grow from")
        return download_state(self.store, artifact)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        try:
            return self._grow(trial)
        except TrainingDiverged as exc:  # a diverged child is a failed trial, not the end of the search
            say_why_it_failed(trial, exc, "randgrow")
            raise

    def _grow(self, trial: optuna.Trial) -> tuple[float, float]:
        job, data = self.job, self.data
        proposal = get_proposal(trial)
        if proposal is None:
            raise NasError("this trial has no RandGrow architecture; run the study with RandGrowSampler")
        skeleton = proposal.architecture.skeleton
        if (skeleton.num_classes, skeleton.in_channels) != (data.num_classes, data.in_channels):
            raise NasError(f"the architecture is for {skeleton.num_classes} classes of {skeleton.in_channels}-channel"
                           f" images, the dataset has {data.num_classes} of {data.in_channels}")
        settings = job.initial if proposal.parent is None else job.search
        key = run_key(trial.study.study_name, {"architecture": proposal.architecture_json,
                                               "parent": proposal.parent, "job_seed": job.seed,
                                               "study": study_token(trial.study),
                                               "function_preserving": job.function_preserving,
                                               "dataset": data.name, **asdict(settings)})
        trial.set_user_attr("run_key", key)
        trial.set_user_attr("worker", f"{platform.node()}:{os.getpid()}")
        generator = seed_everything(int(key[:8], 16))
        device = resolve_device(self.context.device)

        net = RandGrowNetwork(proposal.architecture)
        if proposal.parent is not None:
            inherit_weights(net, self._parent_state(trial.study, proposal.parent), job.function_preserving)
        costs = network_cost(net, data.input_shape)
        for name, value in costs.items():
            trial.set_user_attr(name, value)
        history = train_classifier(net, data, settings, device, generator,
                                   ArtifactCheckpointer(self.store, trial.study, f"grow-{key}"),
                                   [LearningCurve(trial, self.store)], f"randgrow trial {trial.number}",
                                   self.context.verbose,
                                   train_indices=self.train_idx, eval_split="train", eval_indices=self.val_idx)

        val_error = float(history[-1]["val_error"])
        upload_state(trial, self.store, net.state_dict(), WEIGHTS_FILE)
        upload_grown_architecture(trial, self.store, proposal.architecture)
        discard_checkpoint(self.store, trial.study, f"grow-{key}")  # the weights are uploaded: done with it
        trial.set_user_attr("val_error", round(val_error, 3))
        return val_error, float(costs[job.cost])


def upload_grown_architecture(trial: optuna.Trial, store: ArtifactStore, architecture: Architecture) -> None:
    """The architecture as readable JSON and a drawing of the grown network, as trial artifacts, and a one-line
    summary as the user attr ``architecture_summary``."""
    from .draw import draw_randgrow  # matplotlib loads only when a drawing is made

    trial.set_user_attr("architecture_summary", architecture.summary())
    upload_json(trial, store, architecture.to_dict(), ARCHITECTURE_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        image = draw_randgrow(architecture, Path(tmp) / NETWORK_FIGURE)
        upload_artifact(artifact_store=store, file_path=str(image), study_or_trial=trial)


class LearningCurve:
    """An epoch callback for growth trials, which have two objectives and so cannot ``trial.report``: the
    validation error per epoch as the user attr ``val_error_history`` and as a figure (``learning-curve.png``,
    redrawn every epoch into one artifact) that optuna-dashboard shows."""

    def __init__(self, trial: optuna.Trial, store: ArtifactStore) -> None:
        self.trial, self.store = trial, store
        self.errors: list[float] = []
        self.artifact_id: str | None = None

    def __call__(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.errors.append(round(float(metrics["val_error"]), 3))
        self.trial.set_user_attr("val_error_history", list(self.errors))
        self.trial.set_user_attr("epochs_done", epoch)
        with tempfile.TemporaryDirectory() as tmp:
            path = draw_curve({"validation error %": self.errors}, Path(tmp) / CURVE_FIGURE,
                              ylabel="validation error %", title=f"trial {self.trial.number}")
            self.artifact_id = upload_or_replace(self.trial, self.store, path, self.artifact_id)
