"""Grid points and their trials: which trial runs which point, and what state each point is in.

A point is a configuration, a seed and the swept values. A trial's params name its point (an enqueued trial
that has not started yet holds them as fixed params). The rules:

* a point with a COMPLETE (or PRUNED) trial is done and never runs again;
* two workers that raced for one point: the later trial gives way as PRUNED with the user attr
  ``duplicate_of`` and does not count;
* a point that failed ``MAX_FAILURES`` times (e.g. a diverging configuration) is given up, not looped on.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .spec import StudySpec

MAX_FAILURES = 3
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
PointKey = tuple[tuple[str, Any], ...]


def point_key(params: dict[str, Any]) -> PointKey:
    return tuple(sorted(params.items()))


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters; an enqueued trial that has not started yet holds them as fixed params."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def suggest_point(spec: StudySpec, trial: optuna.Trial) -> dict[str, Any]:
    """The point a trial runs: its configuration, seed and swept values, suggested through the trial (fixed
    for an enqueued grid point, sampled by TPE or random search otherwise)."""
    params: dict[str, Any] = {"configuration": trial.suggest_categorical(
        "configuration", [c.name for c in spec.configurations])}
    if spec.sampler == "grid":  # an int range: a later file may add seeds to the same study
        params["seed"] = trial.suggest_int("seed", min(spec.seeds), max(spec.seeds))
    else:
        params["seed"] = trial.suggest_categorical("seed", spec.seeds)
    for path, values in spec.sweep.items():
        if isinstance(values, list):
            params[path] = trial.suggest_categorical(path, values)
        elif isinstance(values["low"], int) and isinstance(values["high"], int) and not values.get("log"):
            params[path] = trial.suggest_int(path, values["low"], values["high"], step=values.get("step", 1))
        else:
            params[path] = trial.suggest_float(path, values["low"], values["high"], log=values.get("log", False),
                                               step=values.get("step"))
    return params


def give_way_if_taken(trial: optuna.Trial, params: dict[str, Any]) -> None:
    """Two workers that raced for one grid point: the later trial gives way (raises ``TrialPruned``)."""
    for other in trial.study.get_trials(deepcopy=False):
        if other.number == trial.number or "duplicate_of" in other.user_attrs or trial_params(other) != params:
            continue
        taken = other.state in DONE_STATES or (
            other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number)
        if taken:
            trial.set_user_attr("duplicate_of", other.number)
            raise optuna.TrialPruned(f"grid point already taken by trial {other.number}")


def grid_state(spec: StudySpec, trials: list[FrozenTrial]) -> dict[PointKey, list[FrozenTrial]]:
    """Every point of the grid with the trials that ran (or run) it."""
    by_point: dict[PointKey, list[FrozenTrial]] = {point_key(p): [] for p in spec.grid()}
    for t in trials:
        params = trial_params(t)
        key = point_key(params) if params else None
        if key in by_point:
            by_point[key].append(t)
    return by_point


def point_status(trials: list[FrozenTrial]) -> str:
    """complete, pruned, running, waiting, failed (given up after MAX_FAILURES), or pending."""
    states = [t.state for t in trials if "duplicate_of" not in t.user_attrs]
    for state, name in ((TrialState.COMPLETE, "complete"), (TrialState.PRUNED, "pruned"),
                        (TrialState.RUNNING, "running"), (TrialState.WAITING, "waiting")):
        if state in states:
            return name
    return "failed" if states.count(TrialState.FAIL) >= MAX_FAILURES else "pending"
