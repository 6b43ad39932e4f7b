"""What every engine's Optuna trial shares: where it runs, per-epoch reports, checkpoints, fixed params.

A trial's *job* (a search, a retraining, a growth step) says what it computes; its :class:`TrialContext`
says where it runs and where its files go, which never changes the result (and so never enters a run key).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .artifacts import ArtifactCheckpointer, open_artifact_store
from .errors import NasError
from .train import Checkpointer, EpochCallback

DEFAULT_RUN_DIR = Path("optuna-nas-runs")


@dataclass(frozen=True)
class TrialContext:
    """Where a trial runs and keeps its files.

    ``artifact_dir`` set: epoch checkpoints, weights, genotypes and drawings go to Optuna's artifact store
    there (share it between machines); otherwise epoch checkpoints are local files under ``run_dir``.
    """

    device: str = "auto"
    run_dir: Path = DEFAULT_RUN_DIR
    artifact_dir: Path | None = None
    verbose: bool = True


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


def checkpointer_for(trial: optuna.Trial, name: str, context: TrialContext) -> Checkpointer:
    """Where run ``name`` of a trial's study keeps its epoch checkpoint: the shared artifact store when there
    is one (a retried trial on another machine resumes), else a local file under ``context.run_dir``."""
    if context.artifact_dir is not None:
        trial.set_user_attr("checkpoint", name)  # discarded once the trial completes (see study/runner.py)
        return ArtifactCheckpointer(open_artifact_store(context.artifact_dir), trial.study, name)
    return Checkpointer(context.run_dir / trial.study.study_name / f"{name}.pt")


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


def run_one_trial(study: optuna.Study, objective: Any) -> optuna.trial.FrozenTrial:
    """Run one trial of ``objective`` (which has ``categorical_params``); a failure inside it is re-raised
    (the trial is stored as FAIL, never COMPLETE)."""
    check_categoricals(study, objective.categorical_params())
    study.optimize(objective, n_trials=1, catch=())
    trial = study.trials[-1]
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise NasError(f"trial {trial.number} ended {trial.state.name}")
    return trial
