"""Storage URLs and run directories.

``--storage`` takes what the ``optuna`` CLI takes (``sqlite:///file.db``, ``postgresql://…``,
``mysql://…``) and, for many machines without a database, ``journal:PATH`` (a journal file on a
shared filesystem).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from .errors import NasError

DEFAULT_STORAGE = "sqlite:///optuna-nas.db"
DEFAULT_RUN_DIR = Path("optuna-nas-runs")


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for ``url``; a wrong URL is one clear error, not a traceback."""
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
        return RDBStorage(url)
    except Exception as exc:  # sqlalchemy and drivers raise many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasError(f"cannot open storage {url!r}: {first}") from None


def load_or_create_study(storage_url: str, study_name: str, directions: list[str],
                         metric_names: list[str], sampler: optuna.samplers.BaseSampler | None = None
                         ) -> optuna.Study:
    storage = open_storage(storage_url)
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


def run_key(study_name: str, params: dict[str, Any]) -> str:
    """A stable name for one configuration of one study: a rerun finds its checkpoint under it."""
    blob = json.dumps({"study": study_name, **params}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
