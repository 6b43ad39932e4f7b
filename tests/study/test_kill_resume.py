"""Workers killed with SIGKILL mid-trial, on SQLite, a journal file and PostgreSQL: the others take the dead
worker's trial over (heartbeat -> FAIL -> retried), it resumes from its epoch checkpoint in the artifact store,
and every grid point ends with exactly one completed trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optuna_nas.storage import open_storage

from _studies import TINY_RETRAIN, write_study

ROWS = [{"name": "darts_v2", "retrain": {"architecture": "DARTS_V2"}},
        {"name": "darts_v1", "retrain": {"architecture": "DARTS_V1"}}]
EPOCHS = 12


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="killed", storage=open_storage(storage)).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def kill_one_worker_and_finish(storage: str, tmp_path: Path, n_workers: int = 2) -> list[optuna.trial.FrozenTrial]:
    path = write_study(tmp_path, "killed", configurations=ROWS, seeds=[0, 1],
                       retrain={**TINY_RETRAIN, "epochs": EPOCHS})
    command = [sys.executable, "-m", "optuna_nas.cli", "run", path, "--storage", storage, "--artifact-dir",
               str(tmp_path / "artifacts"), "--quiet", "--heartbeat-interval", "1", "--grace-period", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(n_workers)]
    victim = workers[0]
    deadline = time.time() + 240
    try:
        while True:  # kill the first worker once its trial has a checkpoint of two epochs
            assert time.time() < deadline and victim.poll() is None, "the worker finished before it could be killed"
            running = [t for t in _trials(storage) if t.state == TrialState.RUNNING
                       and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                       and t.user_attrs.get("epochs_done", 0) >= 2]
            if running:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                break
            time.sleep(0.1)
        for worker in workers[1:]:
            out, _ = worker.communicate(timeout=max(1.0, deadline - time.time()))
            assert worker.returncode == 0, out
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return _trials(storage)


def check_one_completed_per_point_and_resumed(trials: list[optuna.trial.FrozenTrial]) -> None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    per_point = Counter((t.params["configuration"], t.params["seed"]) for t in complete)
    assert per_point == {(row["name"], seed): 1 for row in ROWS for seed in (0, 1)}
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(killed) == 1
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retried) == 1 and retried[0].params == killed[0].params
    # resumed from the checkpoint the dead worker left (>= 2 epochs), not started over
    assert retried[0].user_attrs["resumed_from_epoch"] >= 2
    assert sorted(retried[0].intermediate_values) == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_sqlite(tmp_path: Path) -> None:
    check_one_completed_per_point_and_resumed(kill_one_worker_and_finish(f"sqlite:///{tmp_path / 'db.sqlite'}",
                                                                         tmp_path))


@pytest.mark.slow
def test_journal_file(tmp_path: Path) -> None:
    check_one_completed_per_point_and_resumed(kill_one_worker_and_finish(f"journal:{tmp_path / 'journal.log'}",
                                                                         tmp_path))


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_with_three_workers(postgres_url: str, tmp_path: Path) -> None:
    check_one_completed_per_point_and_resumed(kill_one_worker_and_finish(postgres_url, tmp_path, n_workers=3))
