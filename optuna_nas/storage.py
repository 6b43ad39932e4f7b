"""Optuna storages from URLs, study identity.

``--storage`` takes every form the ``optuna`` CLI and optuna-dashboard take, so a study moves between them by
its URL alone:

- an RDB URL: ``sqlite:///file.db`` (one machine), ``postgresql://…``, ``mysql://…`` (many machines);
- a journal file, as a plain path (``optuna.log``; a new file needs a name ending in ``.log``, ``.journal``
  or ``.jsonl``) or as ``journal:PATH``: many machines on a shared filesystem, no database;
- ``redis://HOST:PORT/DB``: Optuna's journal in Redis;
- ``grpc://HOST:PORT``: Optuna's gRPC storage proxy (``optuna-nas storage-proxy``) in front of any of the
  above, for very many workers: they hold one connection to the proxy, not one each to the database.

Every form beats (see ``heartbeat.py``): a trial whose worker died is failed and retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import random
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, GrpcStorageProxy, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend
from optuna.trial import FrozenTrial

from .errors import NasError
from .heartbeat import Heartbeat, HeartbeatGrpcStorageProxy, HeartbeatJournalStorage

DEFAULT_STORAGE = "sqlite:///optuna-nas.db"
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
FORMS = "sqlite:///FILE.db, postgresql://…, mysql://…, a journal file (PATH.log or journal:PATH), " \
    "redis://HOST:PORT or grpc://HOST:PORT"


class MissingStorage(NasError):
    """A storage that does not exist yet, opened only to read: nothing was created."""


def storage_kind(url: str) -> tuple[str, str]:
    """(``rdb`` | ``journal`` | ``redis`` | ``grpc``, what opens it: the URL, or the journal file's path)."""
    if url.startswith("journal:"):
        return "journal", url.removeprefix("journal:").removeprefix("//")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis", url
    if url.startswith("grpc://"):
        return "grpc", url
    if "://" in url:
        return "rdb", url
    if Path(url).is_file() or url.endswith(JOURNAL_SUFFIXES):
        return "journal", url
    raise NasError(f"storage {url!r} is not a URL or a journal file; use {FORMS}")


def for_optuna_tools(url: str) -> str:
    """The form of ``url`` that the ``optuna`` CLI and optuna-dashboard take (a journal file as a plain path)."""
    kind, target = storage_kind(url)
    return target if kind == "journal" else url


def open_storage(url: str, heartbeat: bool | Heartbeat = False, create: bool = True) -> BaseStorage:
    """An Optuna storage for ``url`` (see the module notes); a wrong URL is one clear error, not a traceback.

    ``heartbeat`` (True for the defaults of :class:`Heartbeat`): each running trial beats every interval; a
    trial silent for the grace period (its worker died) is marked failed and queued again with the same
    parameters and attrs (``RetryHeartbeatStaleTrialCallback``), so it resumes from its checkpoint.
    ``create=False`` (reading only: report, export, a dry run) creates nothing: a missing file raises
    :class:`MissingStorage` and a database keeps its tables as they are.
    """
    beat = Heartbeat() if heartbeat is True else heartbeat or None
    kind, target = storage_kind(url)
    if kind == "journal":
        if not target:
            raise NasError("journal storage needs a file: journal:PATH")
        if not create and not Path(target).is_file():
            raise MissingStorage(f"{target} does not exist")
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            backend: Any = JournalFileBackend(target)
        except OSError as exc:
            raise NasError(f"cannot open journal {target}: {exc.strerror}") from None
        return HeartbeatJournalStorage(backend, beat) if beat else JournalStorage(backend)
    if kind == "redis":
        _need("redis", "a redis:// storage")
        try:
            backend = JournalRedisBackend(url)
        except Exception as exc:  # the client's errors, as one line
            raise NasError(f"cannot open storage {url!r}: {_first_line(exc)}") from None
        return HeartbeatJournalStorage(backend, beat) if beat else JournalStorage(backend)
    if kind == "grpc":
        _need("grpc", "a grpc:// storage")
        host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise NasError(f"storage {url!r}: use grpc://HOST:PORT (the port of optuna-nas storage-proxy)")
        with warnings.catch_warnings():  # "experimental" in Optuna, and what very many workers need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if beat:
                return HeartbeatGrpcStorageProxy(host, int(port), beat)
            return GrpcStorageProxy(host=host, port=int(port))
    return _open_rdb(_with_installed_driver(url), beat, create)


def _need(module: str, what: str) -> None:
    packages = {"grpc": ("grpcio", "protobuf"), "redis": ("redis",)}[module]
    modules = {"grpcio": "grpc", "protobuf": "google.protobuf", "redis": "redis"}
    missing = [p for p in packages if importlib.util.find_spec(modules[p].split(".")[0]) is None
               or importlib.util.find_spec(modules[p]) is None]
    if missing:
        raise NasError(f"{what} needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def _first_line(exc: BaseException) -> str:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cause = exc.__cause__
    if isinstance(exc, optuna.exceptions.StorageInternalError) and cause is not None:
        # Optuna's own line says only that a commit failed; what the database said is in its cause
        line += f" ({type(cause).__name__}: {_first_line(cause)})"
    return line


def _open_rdb(url: str, beat: Heartbeat | None, create: bool) -> RDBStorage:
    sqlite_file = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
    if not create and sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).is_file():
        raise MissingStorage(f"{sqlite_file} does not exist")
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and exactly what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            options: dict[str, Any] = {"skip_table_creation": not create}
            if beat:
                options.update({"heartbeat_interval": beat.interval, "grace_period": beat.grace,
                                "heartbeat_stale_trial_callback": beat.retry_callback()})
            if sqlite_file:  # several worker processes share one file: wait for its lock, don't fail
                options["engine_kwargs"] = {"connect_args": {"timeout": 60}}
            storage = _create_rdb_storage(url, options)
    except Exception as exc:  # sqlalchemy and drivers raise many types; the user needs one line
        raise NasError(f"cannot open storage {url!r}: {_first_line(exc)}") from None
    if sqlite_file and sqlite_file != ":memory:" and create:
        _write_ahead_log(storage)
    if sqlite_file:
        _immediate_transactions(storage)
    return storage


def _immediate_transactions(storage: RDBStorage) -> None:
    """Every SQLite transaction takes the write lock when it begins (``BEGIN IMMEDIATE``). Optuna hands a waiting
    trial to one worker with ``SELECT ... FOR UPDATE``, which SQLite ignores, and Python's sqlite3 begins a
    transaction only at its first write: two workers could both read a trial as WAITING and both run it (7 to 50
    of 200 trials in a two-process test). The engine is Optuna's; its connections are made again with the hooks."""
    from sqlalchemy import event

    def autocommit_driver(connection: Any, _: Any) -> None:
        connection.isolation_level = None  # sqlite3 stops beginning transactions on its own

    def begin_immediately(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(storage.engine, "connect", autocommit_driver)
    event.listen(storage.engine, "begin", begin_immediately)
    storage.engine.dispose()  # connections opened while the schema was made lack the hooks


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
