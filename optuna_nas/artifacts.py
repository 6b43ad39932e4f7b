"""Trial artifacts through Optuna's artifact store: weights, architecture JSON, anything a trial leaves.

Every worker that shares a storage URL and an artifact directory (or bucket) sees every trial's files, so
a RandGrow child on one machine starts from weights its parent saved on another. Tensors are written with
``torch.save`` and read back with ``torch.load(..., weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage

from .errors import NasError

DEFAULT_ARTIFACT_DIR = Path("optuna-nas-artifacts")
AnyTrial = optuna.Trial | optuna.trial.FrozenTrial


def open_artifact_store(path: str | Path) -> FileSystemArtifactStore:
    """A file-system artifact store (a shared directory for many machines); created if missing."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot use artifact directory {path}: {exc.strerror}") from None
    return FileSystemArtifactStore(path)


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


def upload_json(trial: AnyTrial, store: Any, data: Any, filename: str, storage: BaseStorage | None = None) -> str:
    return _upload(trial, store, storage, filename,
                   lambda path: path.write_text(json.dumps(data, indent=2), encoding="utf-8"))


def find_artifact(trial: optuna.trial.FrozenTrial, storage: BaseStorage, filename: str) -> str | None:
    """The id of the last artifact named ``filename`` uploaded for ``trial``, or None."""
    found = [meta.artifact_id for meta in get_all_artifact_meta(trial, storage=storage) if meta.filename == filename]
    return found[-1] if found else None


def download_state(store: Any, artifact_id: str) -> dict[str, torch.Tensor]:
    """A state dict uploaded by :func:`upload_state`, loaded with ``weights_only=True``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.pt"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except ArtifactNotFound:
            raise NasError(f"artifact {artifact_id} is not in the artifact store; do all workers share "
                           "the same --artifact-dir?") from None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for truncated or foreign files
            raise NasError(f"artifact {artifact_id} is not a readable state dict ({type(exc).__name__})") from None
