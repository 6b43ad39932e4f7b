"""Heartbeats for every storage kind: a running trial says it is alive; a silent one is failed and retried.

Optuna's RDB storage has its own heartbeat table. Its journal storage (a file or Redis) and its gRPC storage
proxy have none, so a trial whose worker died would stay RUNNING forever there. For them a beat is a trial
system attr holding the wall-clock time, and a RUNNING trial whose last beat (or start) is older than the grace
period is stale. Optuna's own heartbeat thread, ``fail_stale_trials`` and retry callback then work unchanged.
Machines sharing such a storage need roughly synchronised clocks (NTP), since the beats are their local times.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.storages import GrpcStorageProxy, JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the heartbeat protocol has no public base class
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState

from .errors import NasError

HEARTBEAT_ATTR = "optuna_nas:heartbeat"
ARTIFACT_ATTR_PREFIX = "artifacts:"  # how Optuna names a trial's artifact entries (optuna.artifacts._upload)


@dataclass(frozen=True)
class Heartbeat:
    """How often a running trial says it is alive, and how long a silent one is given before it is failed
    and queued again. Optuna's defaults are off; ours are 30 s / 90 s (a trial's epoch may hold the GIL for
    seconds, so the grace is three beats)."""

    interval: int = 30
    grace: int = 90
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.interval < 1 or self.grace <= self.interval:
            raise NasError(f"heartbeat: need interval >= 1 s and grace > interval, got {self.interval}/{self.grace}")

    def retry_callback(self) -> Callable[[optuna.Study, FrozenTrial], None]:
        # the retried trial keeps params and attrs and, with the learning curve so far, continues
        # from the run's epoch checkpoint (keyed by its configuration, not by the trial)
        with warnings.catch_warnings():  # "experimental" in Optuna, and exactly what a dead worker's trial needs
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RetryWithoutArtifacts(max_retry=self.max_retry, inherit_intermediate_values=True)


class RetryWithoutArtifacts(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, without the dead trial's artifact entries: Optuna records an
    artifact on the trial before it writes the file, so a worker killed mid-upload leaves entries of files that are
    missing or partial, and a retried trial uploads its own anyway."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        kept = copy.copy(trial)
        kept.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith(ARTIFACT_ATTR_PREFIX)}
        super().__call__(study, kept)


class AttrHeartbeat(BaseHeartbeat):
    """Optuna's heartbeat protocol on any storage, as trial system attrs (see the module notes)."""

    heartbeat: Heartbeat
    _stale_callback: Callable[[optuna.Study, FrozenTrial], None]

    def _start_beating(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat
        self._stale_callback = heartbeat.retry_callback()

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())  # type: ignore[attr-defined]

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):  # type: ignore[attr-defined]
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            # a retried trial inherits the dead trial's last beat: its own start counts too
            last = max(float(trial.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)
            if now - last > self.heartbeat.grace:
                stale.append(trial._trial_id)  # the protocol asks for storage ids; FrozenTrial keeps it private
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat.interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback




class HeartbeatJournalStorage(AttrHeartbeat, JournalStorage):
    """Optuna's journal storage (a file, or Redis) with heartbeats."""

    def __init__(self, backend: BaseJournalBackend, heartbeat: Heartbeat) -> None:
        JournalStorage.__init__(self, backend)
        self._start_beating(heartbeat)


class HeartbeatGrpcStorageProxy(AttrHeartbeat, GrpcStorageProxy):
    """Optuna's gRPC storage proxy client with heartbeats."""

    def __init__(self, host: str, port: int, heartbeat: Heartbeat) -> None:
        GrpcStorageProxy.__init__(self, host=host, port=port)
        self._start_beating(heartbeat)
