"""Epoch checkpoints and state dicts in Optuna's artifact store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from optuna_nas.artifacts import (
    ArtifactCheckpointer,
    current_checkpoint,
    discard_checkpoint,
    download_state,
    open_artifact_store,
)
from optuna_nas.errors import NasError


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def test_a_checkpoint_is_replaced_found_by_another_trial_and_discarded(tmp_path: Path) -> None:
    store = open_artifact_store(tmp_path / "store")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    first = ArtifactCheckpointer(store, study, "run-a")
    assert first.load() is None
    for epoch in (1, 2):
        first.save({"epoch": epoch, "w": torch.full((2,), float(epoch))})
    assert len(_files(tmp_path / "store")) == 1  # the previous epoch's artifact is gone
    # a retried trial (another process) finds the run's checkpoint by its key
    again = ArtifactCheckpointer(store, optuna.load_study(study_name=study.study_name, storage=study._storage), "run-a")
    state = again.load()
    assert state is not None and state["epoch"] == 2 and torch.equal(state["w"], torch.full((2,), 2.0))
    assert ArtifactCheckpointer(store, study, "run-b").load() is None
    discard_checkpoint(store, study, "run-a")
    assert current_checkpoint(study, "run-a") is None and not _files(tmp_path / "store")
    assert ArtifactCheckpointer(store, study, "run-a").load() is None


def test_missing_and_corrupt_artifacts_are_one_clear_error(tmp_path: Path) -> None:
    store = open_artifact_store(tmp_path / "store")
    study = optuna.create_study()
    checkpoint = ArtifactCheckpointer(store, study, "run")
    checkpoint.save({"epoch": 1})
    artifact_id = current_checkpoint(study, "run")
    assert artifact_id is not None
    (tmp_path / "store" / artifact_id).write_bytes(b"not a checkpoint")
    with pytest.raises(NasError, match="unreadable"):
        ArtifactCheckpointer(store, study, "run").load()
    (tmp_path / "store" / artifact_id).unlink()
    with pytest.raises(NasError, match="share one artifact store"):
        ArtifactCheckpointer(store, study, "run").load()
    with pytest.raises(NasError, match="not in the artifact store"):
        download_state(store, "no-such-artifact")


def test_an_unreadable_checkpoint_is_kept_aside_and_forgotten(tmp_path: Path) -> None:
    store = open_artifact_store(tmp_path / "store")
    study = optuna.create_study()
    ArtifactCheckpointer(store, study, "run").save({"epoch": 1})
    artifact_id = current_checkpoint(study, "run")
    (tmp_path / "store" / artifact_id).write_bytes(b"truncated")  # type: ignore[operator]
    checkpoint = ArtifactCheckpointer(store, study, "run")
    assert checkpoint.set_aside() == f"artifact corrupt-{artifact_id}"
    assert (tmp_path / "store" / f"corrupt-{artifact_id}").read_bytes() == b"truncated"
    assert not (tmp_path / "store" / str(artifact_id)).exists()
    assert current_checkpoint(study, "run") is None and checkpoint.load() is None


def test_object_store_removal_happens_once_and_retries_only_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna 5.0's Backoff.remove deletes again and sleeps after a success; ours stops at the first success."""
    from optuna_nas.artifacts import _Backoff

    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0

        def remove(self, artifact_id: str) -> None:
            self.calls += 1
            if self.calls <= self.failures:
                raise ConnectionError("a transient network error")

    sleeps: list[float] = []
    monkeypatch.setattr("optuna_nas.artifacts.time.sleep", sleeps.append)
    steady, flaky = Flaky(0), Flaky(2)
    _Backoff(steady, max_retries=5).remove("a")  # type: ignore[arg-type]
    _Backoff(flaky, max_retries=5).remove("b")  # type: ignore[arg-type]
    assert (steady.calls, flaky.calls) == (1, 3) and len(sleeps) == 2
    with pytest.raises(ConnectionError):
        _Backoff(Flaky(9), max_retries=3).remove("c")  # type: ignore[arg-type]
