"""A whole RandGrow search: one study, any number of workers, resumable.

Each worker builds its own :class:`RandGrowSampler` and :class:`RandGrowObjective` against the shared
storage and artifact store; the sampler reads the hull from storage at every ask, so workers need no
other coordination. ``n_trials`` counts *completed* trials of the study: rerunning the same command
after an interruption finishes the planned search instead of starting another.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from ..artifacts import check_artifact_store
from ..data import DataSource
from ..errors import NasError, TrainingDiverged
from ..heartbeat import Heartbeat
from ..storage import load_or_create_study, study_token
from ..trials import TrialContext, fail_stale
from ..workers import limit_threads, pin_device, run_workers, split_evenly
from .architecture import INCREMENT_OPERATIONS, Architecture, SearchMode
from .hull import lower_hull
from .objective import INITIAL_TRAINING, SEARCH_TRAINING, Cost, RandGrowJob, RandGrowObjective, skeleton_for
from .sampler import RandGrowSampler
from .space import RandGrowSpace, load_randgrow_space

STUDY_ATTR = "randgrow"
# identity keys added after studies were first stored: a study stored without one was grown with this value
_IDENTITY_DEFAULTS: dict[str, Any] = {"operations": list(INCREMENT_OPERATIONS)}


@dataclass(frozen=True)
class GrowthSettings:
    """A RandGrow search as users set it: the study file's ``randgrow:`` section and the flags of
    ``search randgrow``. The defaults are the paper's CIFAR-10 search; ``mode``, ``cells_per_block`` (N) and
    ``channels`` (F) left None take the space file's."""

    space: str = "randgrow_macro"
    mode: SearchMode | None = None
    cells_per_block: int | None = None
    channels: int | None = None
    n_models: int = 100  # completed models the search study should have (the paper does not say)
    cost: Cost = "params"
    val_portion: float = 0.1
    seed: int = 0
    epochs: int = SEARCH_TRAINING.epochs  # each child
    cycles: int = SEARCH_TRAINING.cycles  # SGDR cycles within ``epochs``
    initial_epochs: int = INITIAL_TRAINING.epochs  # the initial model, trained as a final model
    batch_size: int = SEARCH_TRAINING.batch_size
    lr: float = SEARCH_TRAINING.lr
    function_preserving: bool = False
    cutout: bool = SEARCH_TRAINING.cutout
    amp: str | bool = SEARCH_TRAINING.amp

    def __post_init__(self) -> None:
        for key in ("n_models", "epochs", "cycles", "initial_epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise NasError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("cells_per_block", "channels"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise NasError(f"{key} must be positive, got {getattr(self, key)}")
        if self.channels is not None and self.channels % 2:
            raise NasError(f"channels must be even (reduction cells halve it), got {self.channels}")

    def resolved_space(self) -> RandGrowSpace:
        """The space file with this search's mode, N and F where they are set."""
        space = load_randgrow_space(self.space)
        overrides = {"mode": self.mode, "cells_per_block": self.cells_per_block, "channels": self.channels}
        return replace(space, **{k: v for k, v in overrides.items() if v is not None})

    def job(self) -> RandGrowJob:
        """The growth trials' settings: the paper's schedules with this search's epochs, batch and rate."""
        common = {"batch_size": self.batch_size, "lr": self.lr, "cutout": self.cutout, "amp": self.amp}
        return RandGrowJob(cost=self.cost, val_portion=self.val_portion,
                           search=replace(SEARCH_TRAINING, epochs=self.epochs, cycles=self.cycles, **common),
                           initial=replace(INITIAL_TRAINING, epochs=self.initial_epochs, **common),
                           function_preserving=self.function_preserving, seed=self.seed)


@dataclass
class RandGrowSearch:
    """One RandGrow study: where it lives, what it grows, and how many models it trains."""

    storage: str
    study_name: str = "randgrow"
    space: RandGrowSpace = field(default_factory=lambda: RandGrowSpace("randgrow_macro"))
    n_trials: int = 100
    job: RandGrowJob = field(default_factory=RandGrowJob)
    data: DataSource = field(default_factory=DataSource)
    context: TrialContext = field(default_factory=TrialContext)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)

    @classmethod
    def from_settings(cls, storage: str, study_name: str, settings: GrowthSettings, data: DataSource,
                      context: TrialContext, heartbeat: Heartbeat | None = None) -> RandGrowSearch:
        return cls(storage, study_name, settings.resolved_space(), settings.n_models, settings.job(), data, context,
                   heartbeat or Heartbeat())

    def identity(self) -> dict[str, Any]:
        """What a study is tied to: growing it on with other settings would mix incomparable models."""
        space = self.space
        return {"mode": space.mode, "cells_per_block": space.cells_per_block, "channels": space.channels,
                "dataset": self.data.spec, "cost": self.job.cost, "val_portion": self.job.val_portion,
                "seed": self.job.seed, "operations": list(space.operations)}  # a list: stored attrs are JSON

    def open(self, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        return load_or_create_study(self.storage, self.study_name, ["minimize", "minimize"],
                                    ["val_error", self.job.cost], sampler, heartbeat=self.heartbeat)


def grow_worker(search: RandGrowSearch, n_trials: int, n_workers: int) -> int:
    """Run up to ``n_trials`` growth trials in this process; returns how many it finished."""
    limit_threads(n_workers)
    pin_device(search.context.device)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happens
    objective = RandGrowObjective(search.job, search.data.load(), search.context)
    space = search.space
    initial = Architecture(skeleton_for(objective.data, space.cells_per_block, space.channels))
    sampler = RandGrowSampler(initial, space.mode, seed=search.job.seed, verbose=search.context.verbose,
                              operations=space.operations)
    study = search.open(sampler)
    before = len(study.get_trials(deepcopy=False))
    # a diverged child is a failed trial, not the end of the search
    study.optimize(objective, n_trials=n_trials, catch=(TrainingDiverged,),
                   callbacks=[MaxTrialsCallback(search.n_trials, states=(TrialState.COMPLETE,))])
    return len(study.get_trials(deepcopy=False)) - before


def _check_identity(study: optuna.Study, search: RandGrowSearch) -> None:
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        study.set_user_attr(STUDY_ATTR, search.identity())
        return
    stored = {**_IDENTITY_DEFAULTS, **stored}
    changed = {k: (stored.get(k), v) for k, v in search.identity().items() if stored.get(k) != v}
    if changed:
        what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise NasError(f"study {search.study_name!r} was started with other settings ({what}); "
                       "use the same settings to resume it, or a new --study-name")


def run_randgrow(search: RandGrowSearch, n_workers: int = 1, wait_for_others: bool = True,
                 devices: list[str] | None = None) -> optuna.Study:
    """Grow the study until it has ``search.n_trials`` completed trials, with ``n_workers`` processes (or one per
    entry of ``devices``, each pinned to it); then, with ``wait_for_others``, see the trials still running
    elsewhere finish or time out (:func:`settle`)."""
    devices = devices or [search.context.device] * n_workers
    n_workers = len(devices)
    if n_workers < 1:
        raise NasError(f"--n-workers must be at least 1, got {n_workers}")
    # dataset, skeleton and artifact store are checked before anything is stored
    skeleton_for(search.data.load(), search.space.cells_per_block, search.space.channels)
    check_artifact_store(search.context.artifact_store)
    study = search.open()
    _check_identity(study, search)
    study_token(study)  # fixed here, before workers race to create it
    fail_stale(study)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = search.n_trials - done
    verbose = search.context.verbose
    if remaining <= 0:
        if verbose:
            print(f"[randgrow] study {search.study_name!r} already has {done} completed trials", file=sys.stderr)
        if wait_for_others:
            settle(study, search.heartbeat, verbose)
        return study
    if verbose:
        print(f"[randgrow] {search.space.mode} search: {done} models done, {remaining} to train with {n_workers} "
              f"worker(s)", file=sys.stderr)
    shares = split_evenly(remaining, n_workers)
    jobs = [(replace(search, context=replace(search.context, device=device)), share, len(shares))
            for share, device in zip(shares, devices, strict=False)]
    run_workers(grow_worker, jobs, n_workers)
    study = search.open()
    if wait_for_others:
        settle(study, search.heartbeat, verbose)
    return study


def settle(study: optuna.Study, heartbeat: Heartbeat, verbose: bool) -> None:
    """Leave no trial RUNNING that no worker owns: trials still running when this command's workers are done
    either finish, beat on (another machine's worker), or go stale within the grace period and are failed
    (and queued again, to resume from their checkpoints)."""
    deadline = time.monotonic() + heartbeat.grace + heartbeat.interval
    announced = False
    while True:
        fail_stale(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or time.monotonic() > deadline:
            return
        if verbose and not announced:
            print(f"[randgrow] {len(running)} trial(s) running elsewhere: waiting up to {heartbeat.grace} s for them "
                  "to finish, or to be failed if their worker died", file=sys.stderr)
            announced = True
        time.sleep(min(heartbeat.interval, 1.0))


def hull_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials on the lower convex hull of (cost, validation error), cheapest first."""
    complete = RandGrowSampler.parent_candidates(study)
    return [complete[i] for i in lower_hull([(t.values[1], t.values[0]) for t in complete])]
