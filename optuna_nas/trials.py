"""What every engine's Optuna trial shares: where it runs, per-epoch reports, checkpoints, fixed params.

A trial's *job* (a search, a retraining, a growth step) says what it computes; its :class:`TrialContext`
says where it runs and where its files go, which never changes the result (and so never enters a run key).
A run key names a configuration within a study: its epoch checkpoint, and the completed trial that holds it.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .artifacts import DEFAULT_ARTIFACT_STORE, ArtifactCheckpointer, discard_checkpoint, open_artifact_store
from .errors import NasError
from .train import Checkpointer, EpochCallback


@dataclass(frozen=True)
class TrialContext:
    """Where a trial runs and keeps its files: epoch checkpoints, final weights, architectures and drawings all
    go to the artifact store at ``artifact_store`` (share it between machines, so a retried trial resumes
    anywhere and every trained model is kept)."""

    device: str = "auto"
    artifact_store: str = DEFAULT_ARTIFACT_STORE
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
    """Run ``name``'s epoch checkpoint in the artifact store: a retried trial on any machine resumes from it.
    The run's name is recorded on the trial, so the checkpoint is discarded once the trial completes."""
    trial.set_user_attr("checkpoint", name)
    return ArtifactCheckpointer(open_artifact_store(context.artifact_store), trial.study, name)


def discard_finished_checkpoint(store: Any, study: optuna.Study, trial: FrozenTrial) -> None:
    """A completed trial never resumes: its run's epoch checkpoint is deleted (its weights are kept)."""
    if trial.state == TrialState.COMPLETE and trial.user_attrs.get("checkpoint"):
        discard_checkpoint(store, study, trial.user_attrs["checkpoint"])


def completed_run(study: optuna.Study, key: str) -> FrozenTrial | None:
    """The completed trial of ``study`` that ran the configuration ``key`` (its ``run_key``), if any."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("run_key") == key:
            return trial
    return None


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


class RunInProgress(NasError):
    """The same run is being trained by another process right now."""


def run_one_trial(study: optuna.Study, objective: Any, key: str, context: TrialContext,
                  force: bool = False) -> tuple[FrozenTrial, bool]:
    """Run one trial of ``objective`` (which has ``categorical_params``) for the configuration ``key``; returns
    the trial and whether it ran now. A completed trial of the same configuration is returned instead of
    training again unless ``force``. A failure inside the trial is re-raised (the trial is stored as FAIL,
    never COMPLETE).

    Two processes started at once on the same configuration: the trial created first trains, the other stops
    with :class:`RunInProgress` (its trial is PRUNED with ``duplicate_of``). A trial whose process died stops
    counting once its heartbeat is stale; it is retried with its checkpoint (the study must beat)."""
    check_categoricals(study, objective.categorical_params())
    fail_stale(study)
    done = None if force else completed_run(study, key)
    if done is not None:
        return done, False
    _refuse_if_running(study, key)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not any(t.user_attrs.get("run_key") == key for t in waiting):
        # the key is on the trial from its creation, so a copy started at the same time sees it
        study.enqueue_trial({}, user_attrs={"run_key": key})

    def claimed(trial: optuna.Trial) -> Any:
        trial.set_user_attr("run_key", key)
        trial.set_user_attr("worker", f"{platform.node()}:{os.getpid()}")
        for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if other.number < trial.number and other.user_attrs.get("run_key") == key:
                trial.set_user_attr("duplicate_of", other.number)
                raise optuna.TrialPruned(f"trial {other.number} runs this already")
        return objective(trial)

    study.optimize(claimed, n_trials=1, catch=())
    trial = study.get_trials(deepcopy=False)[-1]
    if trial.state == TrialState.PRUNED and "duplicate_of" in trial.user_attrs:
        _refuse_if_running(study, key)
        raise RunInProgress(f"trial {trial.user_attrs['duplicate_of']} of {study.study_name!r} runs this already")
    if trial.state != TrialState.COMPLETE:
        raise NasError(f"trial {trial.number} ended {trial.state.name}")
    discard_finished_checkpoint(open_artifact_store(context.artifact_store), study, trial)
    return trial, True


def _refuse_if_running(study: optuna.Study, key: str) -> None:
    for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if other.user_attrs.get("run_key") == key:
            started = other.datetime_start.strftime("%H:%M:%S") if other.datetime_start else "?"
            raise RunInProgress(f"trial {other.number} of {study.study_name!r} is running this already (worker "
                                f"{other.user_attrs.get('worker', '?')}, since {started}); if that process died, "
                                "rerun after its heartbeat's grace period")


def fail_stale(study: optuna.Study) -> None:
    """Optuna's ``fail_stale_trials`` (experimental, and exactly what a worker needs), without the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def say_why_it_failed(trial: optuna.Trial, exc: BaseException, what: str) -> None:
    """One line for a trial whose failure a study goes on after (a diverged model): Optuna's own report is a
    traceback, which the command line does not show. The reason is kept as the user attr ``fail_reason``."""
    trial.set_user_attr("fail_reason", str(exc))
    print(f"[{what}] trial {trial.number} failed: {exc}", file=sys.stderr)
