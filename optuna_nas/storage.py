"""Optuna storages from URLs, heartbeats for every storage kind, study identity.

``--storage`` takes what the ``optuna`` CLI takes (``sqlite:///file.db``, ``postgresql://…``,
``mysql://…``) and, for many machines without a database, ``journal:PATH`` (a journal file on a
shared filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the heartbeat protocol has no public base class
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .errors import NasError

DEFAULT_STORAGE = "sqlite:///optuna-nas.db"


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
            return RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry, inherit_intermediate_values=True)


HEARTBEAT_ATTR = "optuna_nas:heartbeat"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat protocol of its RDB storage.

    Optuna's journal storage has no heartbeat, so a trial whose worker died would stay RUNNING forever.
    Here a beat is a trial system attr holding the wall-clock time; a RUNNING trial whose last beat (or
    start) is older than the grace period is stale. Optuna's own heartbeat thread, ``fail_stale_trials``
    and retry callback then work unchanged. Machines sharing a journal file need roughly synchronised
    clocks (NTP), since the beats are their local times.
    """

    def __init__(self, backend: JournalFileBackend, heartbeat: Heartbeat) -> None:
        super().__init__(backend)
        self.heartbeat = heartbeat
        self._stale_callback = heartbeat.retry_callback()

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
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


class MissingStorage(NasError):
    """A storage that does not exist yet, opened only to read: nothing was created."""


def open_storage(url: str, heartbeat: bool | Heartbeat = False, create: bool = True) -> BaseStorage:
    """An Optuna storage for ``url``; a wrong URL is one clear error, not a traceback.

    ``heartbeat`` (True for the defaults of :class:`Heartbeat`): each running trial beats every interval; a
    trial silent for the grace period (its worker died) is marked failed and queued again with the same
    parameters and attrs (``RetryHeartbeatStaleTrialCallback``), so it resumes from its checkpoint.
    ``create=False`` (reading only: report, export, a dry run) creates nothing: a missing file raises
    :class:`MissingStorage` and a database keeps its tables as they are.
    """
    beat = Heartbeat() if heartbeat is True else heartbeat or None
    if url.startswith("journal:"):
        path = url.removeprefix("journal:").removeprefix("//")
        if not path:
            raise NasError("journal storage needs a file: journal:PATH")
        if not create and not Path(path).is_file():
            raise MissingStorage(f"{path} does not exist")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(path)
        except OSError as exc:
            raise NasError(f"cannot open journal {path}: {exc.strerror}") from None
        return HeartbeatJournalStorage(backend, beat) if beat else JournalStorage(backend)
    if "://" not in url:
        raise NasError(f"storage {url!r} is not a URL; use sqlite:///FILE.db, postgresql://…, mysql://… "
                       "or journal:PATH")
    url = _with_installed_driver(url)
    sqlite_file = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
    if not create and sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).is_file():
        raise MissingStorage(f"{sqlite_file} does not exist")
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and exactly what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            options: dict[str, Any] = {"skip_table_creation": not create}
            if beat:
                options = {"heartbeat_interval": beat.interval, "grace_period": beat.grace,
                           "heartbeat_stale_trial_callback": beat.retry_callback()}
            if url.startswith("sqlite"):  # several worker processes share one file: wait for its lock, don't fail
                options["engine_kwargs"] = {"connect_args": {"timeout": 60}}
            storage = _create_rdb_storage(url, options)
    except Exception as exc:  # sqlalchemy and drivers raise many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasError(f"cannot open storage {url!r}: {first}") from None
    if sqlite_file and sqlite_file != ":memory:" and create:
        _write_ahead_log(storage)
    return storage


# What two processes creating one new database at once run into: both create Optuna's tables, and the later one
# fails on what the earlier one just wrote. Retrying finds the schema in place.
_SCHEMA_RACE = ("alembic_version", "already exists", "database is locked", "UNIQUE constraint failed",
                "duplicate key value")


def _create_rdb_storage(url: str, options: dict[str, Any], attempts: int = 6) -> RDBStorage:
    for attempt in range(attempts):
        try:
            return RDBStorage(url, **options)
        except Exception as exc:
            if attempt == attempts - 1 or not any(sign in str(exc) for sign in _SCHEMA_RACE):
                raise
            time.sleep(0.1 * (attempt + 1) + random.random() * 0.2)  # apart, so the retries do not collide again
    raise AssertionError("unreachable")


def _write_ahead_log(storage: RDBStorage) -> None:
    """SQLite in write-ahead-log mode: readers (dashboards, polling workers) no longer block the writer. The mode is
    stored in the file, so this runs once per process at most; a filesystem without it keeps the default."""
    with contextlib.suppress(Exception):
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def _with_installed_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; use psycopg2 when only it is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def load_or_create_study(storage_url: str, study_name: str, directions: list[str],
                         metric_names: list[str], sampler: optuna.samplers.BaseSampler | None = None,
                         heartbeat: bool | Heartbeat = False) -> optuna.Study:
    storage = open_storage(storage_url, heartbeat)
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                    sampler=sampler, load_if_exists=True)
    except ValueError as exc:  # e.g. an existing study with other directions
        raise NasError(f"study {study_name!r}: {exc}") from None
    stored = list(study.metric_names or [])
    if stored and stored != metric_names:
        raise NasError(f"study {study_name!r} holds trials that report {', '.join(stored)}; this run reports "
                       f"{', '.join(metric_names)}: use another --study-name")
    if not stored:
        with warnings.catch_warnings():  # metric names are "experimental" in Optuna, and we rely on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names)
    return study


def load_study_by_name(storage_url: str, study_name: str) -> optuna.Study:
    """An existing study, opened without creating anything: a missing file, database schema or study is one
    clear error."""
    missing = f"no study {study_name!r} in {storage_url}"
    try:
        storage = open_storage(storage_url, create=False)
    except MissingStorage as exc:
        raise NasError(f"{missing} ({exc})") from None
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise NasError(missing) from None
    except Exception as exc:  # a database without Optuna's tables: the driver's error, as one line
        if isinstance(exc, NasError):
            raise
        raise NasError(f"{missing} ({type(exc).__name__})") from None


# Study system attrs hold what users should not edit (a study's token, the pointer to a run's latest checkpoint),
# and a trial's artifacts are listed through the storage. A Study exposes neither its storage nor its id publicly
# (``study._storage``, ``study._study_id``); these helpers are the one place outside samplers that reaches them.


def storage_of(study: optuna.Study) -> BaseStorage:
    return study._storage


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    return dict(study._storage.get_study_system_attrs(study._study_id))


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """One trial, read by its number without loading the study's other trials."""
    storage = study._storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))


STUDY_TOKEN_ATTR = "optuna_nas:token"


def study_token(study: optuna.Study) -> str:
    """A random id fixed when first asked for: it tells apart two studies of the same name (in two
    storages, or deleted and created again), so their checkpoints never mix."""
    token = study_system_attrs(study).get(STUDY_TOKEN_ATTR)
    if token is None:
        token = uuid.uuid4().hex
        set_study_system_attr(study, STUDY_TOKEN_ATTR, token)
    return str(token)


def run_key(study_name: str, params: dict[str, Any]) -> str:
    """A stable name for one configuration of one study: a rerun finds its checkpoint under it."""
    blob = json.dumps({"study": study_name, **params}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
