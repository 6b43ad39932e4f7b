"""Trial artifacts through Optuna's artifact store: weights, architecture JSON, anything a trial leaves.

Every worker that shares a storage URL and an artifact directory (or bucket) sees every trial's files, so
a RandGrow child on one machine starts from weights its parent saved on another. Tensors are written with
``torch.save`` and read back with ``torch.load(..., weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage

from .errors import NasError, redact
from .storage import set_study_system_attr, study_system_attrs
from .train import Checkpointer, UnreadableCheckpoint

DEFAULT_ARTIFACT_STORE = "optuna-nas-artifacts"
AnyTrial = optuna.Trial | optuna.trial.FrozenTrial
ArtifactStore = Any  # Optuna's ArtifactStore protocol (open_reader, write, remove): filesystem, S3, GCS, Backoff


def artifact_directory(location: str | Path) -> Path:
    """The local directory of an artifact store given as a path or a ``file://`` URL."""
    text = str(location)
    return Path(text.removeprefix("file://")) if text.startswith("file://") else Path(text)


def check_artifact_store(location: str | Path) -> None:
    """That the artifact store at ``location`` can be used, without creating anything: an existing writable
    directory, or one that can be made in a writable directory. A run checks this before it writes to storage."""
    path = artifact_directory(location).absolute()
    if path.exists():
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            raise NasError(f"cannot use artifact directory {path}: "
                           f"{'not a directory' if not path.is_dir() else 'not writable'}")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise NasError(f"cannot use artifact directory {path}: {parent} is not a writable directory")


def open_artifact_store(location: str | Path) -> FileSystemArtifactStore:
    """The artifact store at ``location``: a directory (a path or ``file://PATH``, shared by many machines
    through a shared filesystem), created if missing."""
    path = artifact_directory(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot use artifact directory {path}: {exc.strerror}") from None
    return FileSystemArtifactStore(path)


def dashboard_command(storage: str, location: str | Path) -> str:
    """The optuna-dashboard command that shows a study of ``storage`` with its artifacts."""
    return redact(f"optuna-dashboard {storage} --artifact-dir {artifact_directory(location)}")


def _upload(trial: AnyTrial, store: Any, storage: BaseStorage | None, filename: str, write: Any) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        write(path)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, storage=storage)


def upload_state(trial: AnyTrial, store: Any, state: dict[str, torch.Tensor], filename: str,
                 storage: BaseStorage | None = None) -> str:
    """Upload a state dict (tensors on CPU) as ``filename``; returns the artifact id."""
    cpu = {key: value.detach().cpu() for key, value in state.items()}
    return _upload(trial, store, storage, filename, lambda path: torch.save(cpu, path))


def upload_or_replace(trial: AnyTrial, store: ArtifactStore, path: Path, artifact_id: str | None) -> str:
    """Upload the file at ``path``, or, given the ``artifact_id`` of an earlier upload, overwrite that artifact's
    content: the trial keeps one artifact that changes (a figure redrawn every epoch) instead of one per
    version. Returns the artifact id."""
    if artifact_id is None:
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    with path.open("rb") as content:
        store.write(artifact_id, content)
    return artifact_id


def upload_json(trial: AnyTrial, store: Any, data: Any, filename: str, storage: BaseStorage | None = None) -> str:
    return _upload(trial, store, storage, filename,
                   lambda path: path.write_text(json.dumps(data, indent=2), encoding="utf-8"))


def find_artifact(trial: optuna.trial.FrozenTrial, storage: BaseStorage, filename: str) -> str | None:
    """The id of the last artifact named ``filename`` uploaded for ``trial``, or None."""
    found = [meta.artifact_id for meta in get_all_artifact_meta(trial, storage=storage) if meta.filename == filename]
    return found[-1] if found else None


def download_state(store: Any, artifact_id: str) -> dict[str, torch.Tensor]:
    """A state dict uploaded by :func:`upload_state`, loaded with ``weights_only=True``."""
    return _read_state(store, artifact_id, f"artifact {artifact_id} is not in the artifact store; do all workers "
                       "share the same --artifact-dir?", f"artifact {artifact_id} is not a readable state dict")


def _read_state(store: Any, artifact_id: str, missing: str, unreadable: str) -> dict[str, Any]:
    """Tensors and plain data from an artifact (``weights_only=True``); ``missing`` / ``unreadable`` say why not."""
    try:
        with store.open_reader(artifact_id) as reader:
            buffer = io.BytesIO(reader.read())
    except ArtifactNotFound:
        raise NasError(missing) from None
    try:
        return torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise NasError(f"{unreadable} ({type(exc).__name__})") from None


def _remove_quietly(store: Any, artifact_id: str) -> None:
    with contextlib.suppress(Exception):  # already gone (another worker cleaned up): nothing to delete
        store.remove(artifact_id)


CHECKPOINT_ATTR = "optuna_nas:checkpoint:"
CORRUPT_ATTR = "optuna_nas:corrupt:"


class ArtifactCheckpointer(Checkpointer):
    """Epoch checkpoints of one run in the artifact store, so a trial retried on another machine resumes.

    The run's latest checkpoint is named by a study system attr keyed by the run (its configuration), not
    by the trial: a retried trial (a new trial with the same parameters) finds it. Each save writes a new
    artifact, then points the attr at it, then removes the previous one, so a worker killed mid-write
    leaves the last good checkpoint in place. One run is written by one trial at a time, so the attr is read
    once per run and then remembered (reading a study's system attrs costs more as the study grows).
    :func:`discard_checkpoint` removes a finished run's checkpoint.
    """

    _UNREAD = object()

    def __init__(self, store: Any, study: optuna.Study, key: str) -> None:
        self.store = store
        self.study = study
        self.key = key
        self._known: Any = self._UNREAD

    @property
    def location(self) -> str:
        return f"the artifact store (run {self.key})"

    def _current(self) -> str | None:
        if self._known is self._UNREAD:
            self._known = current_checkpoint(self.study, self.key)
        return self._known

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        previous = self._current()
        artifact_id = f"checkpoint-{self.key}-{uuid.uuid4().hex[:12]}"
        self.store.write(artifact_id, buffer)
        set_study_system_attr(self.study, CHECKPOINT_ATTR + self.key, artifact_id)
        self._known = artifact_id
        if previous:
            _remove_quietly(self.store, previous)

    def load(self) -> dict[str, Any] | None:
        artifact_id = self._current()
        if artifact_id is None:
            return None
        try:
            with self.store.open_reader(artifact_id) as reader:
                data = reader.read()
        except ArtifactNotFound:
            raise UnreadableCheckpoint(f"gone ({artifact_id} is missing: do all workers share one artifact "
                                       "store?)") from None
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for truncated or foreign files
            raise UnreadableCheckpoint(f"unreadable ({type(exc).__name__})") from None

    def set_aside(self) -> str | None:
        """Copy the unreadable checkpoint to ``corrupt-<its id>`` (named in the study system attr
        ``optuna_nas:corrupt:<run>`` for inspection) and point the run at no checkpoint."""
        artifact_id = self._current()
        if artifact_id is None:
            return None
        kept: str | None = f"corrupt-{artifact_id}"
        try:
            with self.store.open_reader(artifact_id) as reader:
                self.store.write(kept, reader)
        except ArtifactNotFound:
            kept = None
        set_study_system_attr(self.study, CHECKPOINT_ATTR + self.key, "")
        if kept:
            set_study_system_attr(self.study, CORRUPT_ATTR + self.key, kept)
        self._known = None
        _remove_quietly(self.store, artifact_id)
        return f"artifact {kept}" if kept else None


def current_checkpoint(study: optuna.Study, key: str) -> str | None:
    """The artifact id of run ``key``'s latest checkpoint, or None."""
    value = study_system_attrs(study).get(CHECKPOINT_ATTR + key)
    return str(value) if value else None


def discard_checkpoint(store: Any, study: optuna.Study, key: str) -> None:
    """Forget and delete a finished run's checkpoint (a completed trial never resumes), so the artifact store
    holds checkpoints of unfinished runs only."""
    artifact_id = current_checkpoint(study, key)
    if artifact_id is None:
        return
    set_study_system_attr(study, CHECKPOINT_ATTR + key, "")
    _remove_quietly(store, artifact_id)
