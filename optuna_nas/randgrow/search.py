"""A whole RandGrow search: one study, any number of workers, resumable.

Each worker builds its own :class:`RandGrowSampler` and :class:`RandGrowObjective` against the shared
storage and artifact store; the sampler reads the hull from storage at every ask, so workers need no
other coordination. ``n_trials`` counts *completed* trials of the study: rerunning the same command
after an interruption finishes the planned search instead of starting another.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from ..errors import NasError, TrainingDiverged
from ..storage import load_or_create_study, study_token
from ..workers import limit_threads, run_workers, split_evenly
from .architecture import INCREMENT_OPERATIONS, Architecture, SearchMode, check_operations
from .hull import lower_hull
from .objective import RandGrowJob, RandGrowObjective, skeleton_for
from .sampler import RandGrowSampler

STUDY_ATTR = "randgrow"
# identity keys added after studies were first stored: a study stored without one was grown with this value
_IDENTITY_DEFAULTS: dict[str, Any] = {"operations": list(INCREMENT_OPERATIONS)}


@dataclass
class RandGrowSearch:
    """One RandGrow study: where it lives, what it grows, and how many models it trains."""

    storage: str
    study_name: str = "randgrow"
    mode: SearchMode = "macro"
    cells_per_block: int = 6
    channels: int = 32
    n_trials: int = 100
    seed: int = 0
    job: RandGrowJob = field(default_factory=RandGrowJob)
    operations: tuple[str, ...] = INCREMENT_OPERATIONS  # what increment inputs draw from (a RandGrowSpace's)

    def __post_init__(self) -> None:
        self.operations = check_operations(self.operations)

    def identity(self) -> dict[str, Any]:
        """What a study is tied to: growing it on with other settings would mix incomparable models."""
        return {"mode": self.mode, "cells_per_block": self.cells_per_block, "channels": self.channels,
                "dataset": self.job.dataset, "cost": self.job.cost, "val_portion": self.job.val_portion,
                "seed": self.seed, "operations": list(self.operations)}  # a list: stored attrs are JSON

    def open(self, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        return load_or_create_study(self.storage, self.study_name, ["minimize", "minimize"],
                                    ["val_error", self.job.cost], sampler, heartbeat=True)


def grow_worker(search: RandGrowSearch, n_trials: int, n_workers: int) -> int:
    """Run up to ``n_trials`` growth trials in this process; returns how many it finished."""
    limit_threads(n_workers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = RandGrowObjective(search.job)
    initial = Architecture(skeleton_for(objective.data, search.cells_per_block, search.channels))
    sampler = RandGrowSampler(initial, search.mode, seed=search.seed, verbose=search.job.verbose,
                              operations=search.operations)
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


def run_randgrow(search: RandGrowSearch, n_workers: int = 1) -> optuna.Study:
    """Grow the study until it has ``search.n_trials`` completed trials, with ``n_workers`` processes."""
    if n_workers < 1:
        raise NasError(f"--n-workers must be at least 1, got {n_workers}")
    # dataset, cost, split and skeleton are checked before anything is stored
    skeleton_for(RandGrowObjective(search.job).data, search.cells_per_block, search.channels)
    study = search.open()
    _check_identity(study, search)
    study_token(study)  # fixed here, before workers race to create it
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = search.n_trials - done
    if remaining <= 0:
        if search.job.verbose:
            print(f"[randgrow] study {search.study_name!r} already has {done} completed trials", file=sys.stderr)
        return study
    if search.job.verbose:
        print(f"[randgrow] {search.mode} search: {done} models done, {remaining} to train with {n_workers} "
              f"worker(s)", file=sys.stderr)
    shares = split_evenly(remaining, n_workers)
    run_workers(grow_worker, [(search, share, len(shares)) for share in shares], n_workers)
    return search.open()


def hull_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials on the lower convex hull of (cost, validation error), cheapest first."""
    complete = RandGrowSampler.parent_candidates(study)
    return [complete[i] for i in lower_hull([(t.values[1], t.values[0]) for t in complete])]
