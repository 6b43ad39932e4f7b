"""Trial artifacts through Optuna's artifact stores: weights, architecture JSON, anything a trial leaves.

``--artifact-store`` (alias ``--artifact-dir``) takes:

- a directory, as a path or ``file://PATH`` (Optuna's ``FileSystemArtifactStore``; many machines share it
  through a shared filesystem);
- ``s3://BUCKET/PREFIX`` (Optuna's ``Boto3ArtifactStore``): endpoint and credentials come from the standard
  AWS environment variables, so MinIO, Ceph and other S3-compatible stores work through ``AWS_ENDPOINT_URL``;
- ``gs://BUCKET/PREFIX`` (Optuna's ``GCSArtifactStore``, credentials from the environment).

Object stores are wrapped in Optuna's ``Backoff`` (retries with exponential backoff). Every worker that shares a
storage URL and an artifact store sees every trial's files, so a RandGrow child on one machine starts from
weights its parent saved on another, and a dead worker's trial resumes anywhere. Tensors are written with
``torch.save`` and read back with ``torch.load(..., weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import optuna
import torch
from optuna.artifacts import Backoff, FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage

from .errors import NasError, redact
from .storage import for_optuna_tools, set_study_system_attr, study_system_attrs
from .train import Checkpointer, UnreadableCheckpoint

DEFAULT_ARTIFACT_STORE = "optuna-nas-artifacts"
AnyTrial = optuna.Trial | optuna.trial.FrozenTrial
ArtifactStore = Any  # Optuna's ArtifactStore protocol (open_reader, write, remove): filesystem, S3, GCS, Backoff
OBJECT_STORES = ("s3://", "gs://")


def artifact_directory(location: str | Path) -> Path:
    """The local directory of an artifact store given as a path or a ``file://`` URL."""
    text = str(location)
    return Path(text.removeprefix("file://")) if text.startswith("file://") else Path(text)


def _bucket(location: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX`` or ``gs://BUCKET/PREFIX``; the prefix ends in ``/`` or is empty."""
    bucket, _, prefix = location.split("://", 1)[1].partition("/")
    if not bucket:
        raise NasError(f"artifact store {location!r}: name a bucket, e.g. {location.split('://')[0]}://BUCKET/PREFIX")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's directory store, writing each artifact to a temporary file renamed into place: a worker killed
    mid-write never leaves a half-written file under an artifact's id (Optuna's writes in place)."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self._get_filepath(artifact_id)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with partial.open("wb") as out:
                shutil.copyfileobj(content_body, out)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


class PrefixedArtifactStore:
    """Another artifact store's objects under ``prefix`` (one bucket, many projects). Optuna's object stores put
    artifacts at the bucket's top level and have no prefix of their own, hence this small wrapper."""

    def __init__(self, backend: ArtifactStore, prefix: str) -> None:
        self.backend, self.prefix = backend, prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.backend.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.backend.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.backend.remove(self.prefix + artifact_id)


class _Backoff(Backoff):
    """Optuna's Backoff with a ``remove`` that stops once it succeeded. Optuna 5.0's ``remove`` has no exit on
    success: it deletes the object on every retry and sleeps between them (3.1 s per removal with five retries,
    about 80 s with its default ten, measured against an S3 server). The retry schedule is Optuna's own."""

    def remove(self, artifact_id: str) -> None:
        for attempt in range(self._max_retries):
            try:
                self._backend.remove(artifact_id)
                return
            except ArtifactNotFound:
                raise
            except Exception:
                if attempt == self._max_retries - 1:
                    raise
            time.sleep(self._get_sleep_secs(attempt))


def _need(module: str, package: str, location: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise NasError(f"artifact store {location!r} needs the {package} package: pip install {package}")


def _object_store(location: str) -> ArtifactStore:
    bucket, prefix = _bucket(location)
    if location.startswith("s3://"):
        _need("boto3", "boto3", location)
        import boto3
        from optuna.artifacts import Boto3ArtifactStore

        store: ArtifactStore = Boto3ArtifactStore(bucket, boto3.client("s3"))
    else:
        _need("google.cloud.storage", "google-cloud-storage", location)
        from google.cloud import storage as gcs
        from optuna.artifacts import GCSArtifactStore

        store = GCSArtifactStore(bucket, gcs.Client())
    store = PrefixedArtifactStore(store, prefix) if prefix else store
    return _Backoff(store, max_retries=5)  # transient network errors are retried, briefly


def check_artifact_store(location: str | Path) -> None:
    """That the artifact store at ``location`` can be used, without creating anything: an existing writable
    directory, or one that can be made in a writable directory; a bucket that exists and answers. A run checks
    this before it writes to storage."""
    text = str(location)
    if text.startswith(OBJECT_STORES):
        _check_bucket(text)
        return
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


def _check_bucket(location: str) -> None:
    bucket, _ = _bucket(location)
    try:
        if location.startswith("s3://"):
            _need("boto3", "boto3", location)
            import boto3

            boto3.client("s3").head_bucket(Bucket=bucket)
        else:
            _need("google.cloud.storage", "google-cloud-storage", location)
            from google.cloud import storage as gcs

            if not gcs.Client().bucket(bucket).exists():
                raise NasError("no such bucket")
    except Exception as exc:  # the clients' many error types, as one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasError(f"cannot use artifact store {location}: {reason}") from None


def open_artifact_store(location: str | Path) -> ArtifactStore:
    """The artifact store at ``location`` (see the module notes); a directory is created if missing."""
    if str(location).startswith(OBJECT_STORES):
        return _object_store(str(location))
    path = artifact_directory(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot use artifact directory {path}: {exc.strerror}") from None
    return AtomicFileSystemArtifactStore(path)


def dashboard_command(storage: str, location: str | Path) -> str:
    """The command that shows a study of ``storage`` with its artifacts in optuna-dashboard: optuna-dashboard
    itself for a directory, ``optuna-nas dashboard`` (the same server, given the object store) for a bucket."""
    if str(location).startswith(OBJECT_STORES) or storage.startswith("grpc://"):
        return redact(f"optuna-nas dashboard --storage {storage} --artifact-store {location}")
    return redact(f"optuna-dashboard {for_optuna_tools(storage)} --artifact-dir {artifact_directory(location)}")


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
