"""Storage URLs and run directories.

``--storage`` takes what the ``optuna`` CLI takes (``sqlite:///file.db``, ``postgresql://…``,
``mysql://…``) and, for many machines without a database, ``journal:PATH`` (a journal file on a
shared filesystem).
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from .errors import NasError

DEFAULT_STORAGE = "sqlite:///optuna-nas.db"
DEFAULT_RUN_DIR = Path("optuna-nas-runs")


HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90


def open_storage(url: str, heartbeat: bool = False) -> BaseStorage:
    """An Optuna storage for ``url``; a wrong URL is one clear error, not a traceback.

    ``heartbeat`` (databases only; Optuna's journal storage has none): each running trial beats every
    30 s; a trial silent for 90 s (its worker died) is marked failed and queued again with the same
    parameters and system attrs (``RetryHeartbeatStaleTrialCallback``), so it resumes from its checkpoint.
    """
    if url.startswith("journal:"):
        path = url.removeprefix("journal:").removeprefix("//")
        if not path:
            raise NasError("journal storage needs a file: journal:PATH")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise NasError(f"storage {url!r} is not a URL; use sqlite:///FILE.db, postgresql://…, mysql://… "
                       "or journal:PATH")
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and exactly what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            options: dict[str, Any] = {}
            if heartbeat:
                options = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS,
                           "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=3)}
            return RDBStorage(url, **options)
    except Exception as exc:  # sqlalchemy and drivers raise many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasError(f"cannot open storage {url!r}: {first}") from None


def load_or_create_study(storage_url: str, study_name: str, directions: list[str],
                         metric_names: list[str], sampler: optuna.samplers.BaseSampler | None = None,
                         heartbeat: bool = False) -> optuna.Study:
    storage = open_storage(storage_url, heartbeat)
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                    sampler=sampler, load_if_exists=True)
    except ValueError as exc:  # e.g. an existing study with other directions
        raise NasError(f"study {study_name!r}: {exc}") from None
    if list(study.metric_names or []) != metric_names:
        with warnings.catch_warnings():  # metric names are "experimental" in Optuna, and we rely on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names)
    return study


STUDY_TOKEN_ATTR = "optuna_nas:token"


def study_token(study: optuna.Study) -> str:
    """A random id fixed when first asked for: it tells apart two studies of the same name (in two
    storages, or deleted and created again), so their checkpoints never mix."""
    storage, study_id = study._storage, study._study_id
    token = storage.get_study_system_attrs(study_id).get(STUDY_TOKEN_ATTR)
    if token is None:
        token = uuid.uuid4().hex
        storage.set_study_system_attr(study_id, STUDY_TOKEN_ATTR, token)
    return str(token)


def run_key(study_name: str, params: dict[str, Any]) -> str:
    """A stable name for one configuration of one study: a rerun finds its checkpoint under it."""
    blob = json.dumps({"study": study_name, **params}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
